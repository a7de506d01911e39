"""Channel lattices: the widths a target runs at full speed, each rule with its reason.

A width on the lattice is a multiple of every applicable rule's multiple (their lcm).
Widths below the smallest multiple cannot be aligned and stay as they are: a group of 3
channels keeps 3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LatticeRule:
    multiple: int
    reason: str
    requires: str | None = None  # an ISA flag (/proc/cpuinfo) the rule needs, e.g. "avx512f"


@dataclass(frozen=True)
class Lattice:
    rules: tuple[LatticeRule, ...]

    @property
    def multiple(self) -> int:
        return math.lcm(*(r.multiple for r in self.rules)) if self.rules else 1

    def round_down(self, width: int) -> int:
        """The widest lattice width <= width (width itself below the first multiple)."""
        m = self.multiple
        return width if width < m else (width // m) * m

    def round_up(self, width: int, limit: int | None = None) -> int:
        """The narrowest lattice width >= width, but never more than `limit` (the group's width)."""
        m = self.multiple
        up = -(-width // m) * m
        return up if limit is None else min(up, limit)

    def candidates(self, width: int, lowest: float = 0.25) -> list[int]:
        """Lattice widths from `lowest` * width up to width, and width itself (the original
        width is always a candidate, aligned or not), ascending."""
        m = self.multiple
        lo = max(m, self.round_up(max(1, int(width * lowest))))
        return sorted({*range(lo, width + 1, m), width})

    def describe(self) -> str:
        return "; ".join(f"% {r.multiple}: {r.reason}" for r in self.rules) or "any width"


def resolve(rules: tuple[LatticeRule, ...], isa: frozenset[str]) -> Lattice:
    """The rules that apply on a processor with these ISA flags."""
    return Lattice(tuple(r for r in rules if r.requires is None or r.requires in isa))


# A MAC or parameter budget names no hardware, so without a target it plans on one lattice
# whatever the host: 8 channels is what fp16 tensor cores (TensorRT, cuDNN) and onnxruntime's
# AVX2 NCHWc path want. The host's own CPU lattice (16 on AVX-512) would give another plan,
# or none, on another machine for the same command.
PORTABLE = Lattice((LatticeRule(8, "no target given: the portable lattice (fp16 tensor cores and onnxruntime's "
                                   "AVX2 NCHWc path want 8 channels), the same on every host; give a target to "
                                   "align for it"),))


def lattice_for(target) -> tuple:
    """(lattice, where it comes from, for the report): the target's (a hwprune.hardware.Target,
    resolved on this host where its rules need an ISA flag), or without one PORTABLE."""
    if target is None:
        return PORTABLE, "portable (no target given)"
    if any(r.requires for r in target.rules):
        isa = sorted(r.requires for r in target.lattice.rules if r.requires)
        return target.lattice, f"target {target.name} on this host ({', '.join(isa) or 'no vector ISA flag'})"
    return target.lattice, f"target {target.name}"
