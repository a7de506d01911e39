"""The benchmarks' bisection of a knob (a ratio, a requested speedup) to a target's measured
latency (benchmarks/bench_vs_torch_pruning.py: at_latency), on a fake runtime whose latency is
a function of the knob: where it lands, how many cuts it makes, and what it keeps on a miss."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_vs_torch_pruning as bench  # noqa: E402

TARGET_MS = 10.0


class FakeRuntime:
    """models([target, graph]) -> two timings; a graph is the knob it was cut at. noise: the
    ratios each pair of this knob reads in turn (then repeats the last)."""

    def __init__(self, ms_of, noise=()):
        self.ms_of, self.noise, self.pairs = ms_of, list(noise), 0

    def models(self, graphs):
        _, knob = graphs
        wobble = self.noise[min(self.pairs, len(self.noise) - 1)] if self.noise else 1.0
        self.pairs += 1
        return (SimpleNamespace(median_ms=TARGET_MS), SimpleNamespace(median_ms=self.ms_of(knob) * wobble))


def _bisect(monkeypatch, ms_of, lo, hi, noise=(), **kwargs):
    monkeypatch.setattr(bench, "onnx_graph", lambda model, x: model)  # the "graph" is the knob
    cuts = []

    def cut(knob):
        cuts.append(knob)
        return knob, {}
    best = bench.at_latency(cut, None, FakeRuntime(ms_of, noise), "target", lo, hi, **kwargs)
    return best, cuts


@pytest.mark.parametrize("proportional, most_cuts", [(True, 3), (False, 9)])
def test_a_requested_speedup_lands_within_two_percent(monkeypatch, proportional, most_cuts):
    # latency 1/speedup: the target's 10 ms is asked 1.63x; the first probe at 1.5x is 8.7% slow
    best, cuts = _bisect(monkeypatch, lambda s: 16.3 / s, 1.0, 4.5, first=1.5, proportional=proportional)
    assert best["equal_latency"] and abs(best["latency_vs_hwprune"] - 1) <= 0.02
    assert len(cuts) <= most_cuts
    if proportional:  # one step from the near miss, not to the bracket's middle (3.0x)
        assert cuts[1] == pytest.approx(1.5 * 16.3 / 1.5 / TARGET_MS)


def test_a_ratio_is_bisected(monkeypatch):
    best, cuts = _bisect(monkeypatch, lambda r: 20.0 * (1 - r), 0.0, 0.9)
    assert best["equal_latency"] and best["knob"] == pytest.approx(0.5, abs=0.02)


def test_a_near_pair_stands_on_the_median_of_its_confirmations(monkeypatch):
    # the first pair reads 1.01, the two more 0.93 and 0.94: the median (0.94) is a miss, and the
    # next probe steps from it (a single pair within 2% would have stopped at 1.5)
    best, cuts = _bisect(monkeypatch, lambda s: 10.0, 1.0, 4.5, noise=(1.01, 0.93, 0.94, 1.0), first=1.5,
                         proportional=True)
    assert cuts[:2] == [1.5, pytest.approx(1.5 * 0.94)]
    assert best["knob"] == pytest.approx(1.41) and best["latency_ratios"] == [1.0, 1.0, 1.0]


def test_a_jump_in_latency_keeps_the_closest_and_says_it_missed(monkeypatch):
    # no knob gives within 2%: 10.6 ms below 1.5x, 9.4 ms from it up
    best, _ = _bisect(monkeypatch, lambda s: 10.6 if s < 1.5 else 9.4, 1.0, 4.5, first=1.2, proportional=True)
    assert not best["equal_latency"]
    assert abs(best["latency_vs_hwprune"] - 1) == pytest.approx(0.06)
