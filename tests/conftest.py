"""What a test may read of the host: the CPU lattice only when it says so.

The `cpu` target's lattice follows the host's ISA (% 8 on AVX2, % 16 on AVX-512), so a test
that plans on it without saying which passes on one machine and fails on another. Reading it
fails here unless the test pins the ISA with the `cpu_isa` fixture (the test then runs under
both lattices, whatever the host) or is marked `host_isa` (it measures this host, and its
expectation holds on either lattice)."""
import pytest

from hwprune.hardware import processor

# the flags of the two x86 lattices hwprune knows (hwprune.hardware.targets.CPU_RULES)
ISAS = {
    "avx2": frozenset({"sse4_1", "avx", "avx2", "fma"}),
    "avx512": frozenset({"sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"}),
}


class HostISARead(AssertionError):
    """A test resolved a lattice from the host's ISA without pinning it or saying so."""


@pytest.fixture(autouse=True)
def _host_isa_only_when_said(request, monkeypatch):
    if request.node.get_closest_marker("host_isa") or "cpu_isa" in request.fixturenames:
        return

    def refuse():
        raise HostISARead(
            f"{request.node.nodeid} resolved a lattice from this host's ISA without saying so: its result "
            "would differ between AVX2 and AVX-512 machines. Name a target with a fixed lattice, take the "
            "`cpu_isa` fixture (runs under both), or mark it `host_isa` if it measures this host")
    monkeypatch.setattr(processor, "lattice_isa", refuse)


@pytest.fixture(params=sorted(ISAS))
def cpu_isa(request, monkeypatch):
    """Pins the ISA the `cpu` lattice is resolved with: each test runs once per lattice."""
    monkeypatch.setattr(processor, "lattice_isa", lambda: ISAS[request.param])
    return request.param


@pytest.fixture
def land_short(monkeypatch):
    """land_short(importances): the landing of plans made with those importances ends short of its
    goal (the kept try landed 1.5x slower than asked), as Fisher's did on YOLOv8n for the Orin Nano."""
    import hwprune.api
    real = hwprune.api.plan_cut

    def patch(which):
        def short(analysis, scores, config, **kw):
            plan = real(analysis, scores, config, **kw)
            record = dict(plan.sections)["plan"]
            if config.importance in which:
                kept = record["attempts"][record["kept_try"]]
                kept["landed_ms"], record["met"] = 1.5 * kept["goal_ms"], False
            return plan
        monkeypatch.setattr(hwprune.api, "plan_cut", short)
    return patch
