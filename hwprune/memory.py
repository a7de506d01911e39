"""Whether slim cuts the model it is given in place.

A cut made as a copy holds the original and the slim model at once: for a model whose
weights take most of the machine (an 8B decoder in bf16 is 16 GB), that is more than there
is. In place, each tensor is replaced by its slice and freed before the next is made, and the
oracle's reference outputs are computed before the first one is (hwprune.verify.repair
.cut_verified_in_place), so the peak is the model and one tensor more. The price: the model
given is the one cut, and a cut that fails the oracle cannot be redone with its groups frozen.

in_place=None (the default) chooses: in place when a copy of the weights would take more than
half of the memory the system has available now (Linux's MemAvailable), else a copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .errors import InputError
from .graph.masked import tensors_of

COPY_SHARE = 0.5  # a copy may take at most this share of the available memory


@dataclass(frozen=True)
class MemoryChoice:
    in_place: bool
    why: str
    weights_bytes: int
    available_bytes: int | None

    def to_json(self) -> dict:
        return {"in_place": self.in_place, "why": self.why, "weights_bytes": self.weights_bytes,
                "available_bytes": self.available_bytes}


def weights_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers, a tensor held under several names once."""
    unique = {id(t): t for t in tensors_of(model).values()}
    return sum(t.numel() * t.element_size() for t in unique.values())


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (what can be allocated without swapping), or None off Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def choose_in_place(in_place, model: nn.Module) -> MemoryChoice:
    """The run's choice for slim(in_place=...): True, False, or None to decide by memory."""
    if in_place not in (None, True, False):
        raise InputError(f"in_place={in_place!r}: give True (cut the model given, in place), False (cut a "
                         "copy) or None (in place only where a copy would not fit in memory)")
    size, free = weights_bytes(model), available_bytes()
    if in_place is not None:
        return MemoryChoice(in_place, "asked", size, None)
    if free is None:
        return MemoryChoice(False, "the available memory is unknown here: a copy", size, free)
    if size > COPY_SHARE * free:
        return MemoryChoice(True, f"a copy of the weights ({size / 2**30:.2f} GiB) would take more than "
                                  f"{COPY_SHARE:.0%} of the available memory ({free / 2**30:.2f} GiB)", size, free)
    # the common case says no figure of the machine's state: the same command gives the same report
    return MemoryChoice(False, f"a copy of the weights ({size / 2**30:.2f} GiB) fits in {COPY_SHARE:.0%} of the "
                               "available memory", size, None)
