"""Targets as data and lattice rounding (property-based)."""
import pytest
from hypothesis import given, strategies as st

from hwprune.errors import InputError
from hwprune.hardware import TARGETS, Lattice, LatticeRule, get_target
from hwprune.hardware.lattice import resolve
from hwprune.hardware.targets import CPU_RULES

multiples = st.lists(st.sampled_from([1, 2, 4, 8, 16, 32]), min_size=0, max_size=3)
widths = st.integers(min_value=1, max_value=4096)


def _lattice(ms):
    return Lattice(tuple(LatticeRule(m, "test") for m in ms))


@given(multiples, widths)
def test_round_down_is_the_widest_lattice_width_not_above(ms, w):
    lat = _lattice(ms)
    m, r = lat.multiple, lat.round_down(w)
    assert r <= w and lat.round_down(r) == r
    if w >= m:
        assert r % m == 0 and w - r < m
    else:
        assert r == w  # below the first multiple a width cannot be aligned


@given(multiples, widths, widths)
def test_round_up_is_the_narrowest_lattice_width_not_below_within_limit(ms, w, limit):
    lat = _lattice(ms)
    m, r = lat.multiple, lat.round_up(w)
    assert r >= w and r % m == 0 and r - w < m
    assert lat.round_up(w, limit) == min(r, limit)


@given(multiples, widths, widths)
def test_rounding_is_monotone(ms, a, b):
    lat = _lattice(ms)
    lo, hi = sorted((a, b))
    assert lat.round_down(lo) <= lat.round_down(hi)
    assert lat.round_up(lo) <= lat.round_up(hi)


@given(multiples, widths)
def test_candidates_are_on_the_lattice_and_include_the_width(ms, w):
    lat = _lattice(ms)
    c = lat.candidates(w)
    assert c == sorted(set(c)) and c[-1] == w
    assert all(x % lat.multiple == 0 for x in c[:-1]) and all(1 <= x <= w for x in c)


def test_lattice_multiple_is_the_lcm_of_its_rules():
    assert _lattice([8, 32]).multiple == 32 and _lattice([4, 6]).multiple == 12 and _lattice([]).multiple == 1


@pytest.mark.parametrize("isa, multiple", [
    (frozenset(), 4), ({"avx2"}, 8), ({"avx2", "avx512f"}, 16), ({"asimd"}, 4)])
def test_cpu_lattice_follows_the_isa(isa, multiple):
    assert resolve(CPU_RULES, frozenset(isa)).multiple == multiple


TARGET_CASES = {  # name: (precision, lattice multiple, or {pinned ISA: multiple} where it follows the host)
    "cpu": ("fp32", {"avx2": 8, "avx512": 16}), "cuda": ("fp16", 8), "cuda-int8": ("int8", 32),
    "jetson-orin-nano": ("fp16", 8), "jetson-orin-nano-int8": ("int8", 32),
    "jetson-orin-nano-super": ("fp16", 8), "jetson-orin-nano-super-int8": ("int8", 32),
    "jetson-orin-nx": ("fp16", 8), "jetson-orin-nx-int8": ("int8", 32),
    "jetson-agx-orin": ("fp16", 8), "jetson-agx-orin-int8": ("int8", 32),
}


def test_every_target_has_a_row():
    assert sorted(t.name for t in TARGETS) == sorted(TARGET_CASES)


@pytest.mark.parametrize("name", sorted(TARGET_CASES))
def test_target_row(name, cpu_isa):
    precision, multiple = TARGET_CASES[name]
    t = get_target(name)
    assert t.precision == precision and t.to_json()["name"] == name
    assert all(r.reason for r in t.rules)
    assert t.lattice.multiple == (multiple[cpu_isa] if isinstance(multiple, dict) else multiple)
    if t.gpu is not None:
        from hwprune.hardware.analytic import GPU_SPECS
        assert t.gpu in GPU_SPECS


def test_jetson_alias_is_the_orin_nano():
    assert get_target("jetson").name == "jetson-orin-nano"
    assert get_target("jetson-int8").name == "jetson-orin-nano-int8"


def test_unknown_target_names_what_was_given_and_suggests():
    with pytest.raises(InputError, match="'jetson-orin-nan'.*did you mean 'jetson-orin-nano'"):
        get_target("jetson-orin-nan")


def test_reading_the_host_lattice_unpinned_fails_the_test():
    from conftest import HostISARead
    with pytest.raises(HostISARead, match="without saying so"):
        get_target("cpu").lattice


@pytest.mark.host_isa
def test_a_test_marked_host_isa_reads_this_host():
    from hwprune.hardware.processor import this_processor
    assert get_target("cpu").lattice == resolve(CPU_RULES, this_processor().isa)


def test_fixed_lattices_need_no_isa():
    assert get_target("jetson").lattice.multiple == 8  # no rule of a GPU target asks the host
