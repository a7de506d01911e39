"""One error hierarchy. Every message names what the user gave, what is wrong, and what to do."""
from __future__ import annotations


class HwpruneError(Exception):
    """Base of every error hwprune raises on purpose. The CLI maps it to exit code 2."""


class ModelLoadError(HwpruneError):
    """A model spec could not be turned into a module (missing file, not a model, refused pickle)."""


class InputError(HwpruneError):
    """Example inputs or an option value do not fit the model (wrong shape, ratio out of range)."""


class TraceError(HwpruneError):
    """Neither torch.export nor torch.fx.symbolic_trace could trace the model."""


class FrozenGroupError(HwpruneError):
    """--strict was given and at least one channel group is frozen."""


class NothingToPruneError(HwpruneError):
    """Every channel group is frozen, so no cut is possible."""


class VerificationError(HwpruneError):
    """The slim model does not equal the masked original; nothing is written."""


class BudgetError(HwpruneError):
    """A budget (--speedup, --latency-ms, --flops, --params) cannot be met even with every
    group at its minimum width; the message gives the best reachable figure."""


class BudgetWarning(UserWarning):
    """A budget's kept plan lands short of its goal: every re-plan asked for more than width can
    give, or the tries ran out. The slim model is kept (and verified); the report's plan.met is
    False and says where it landed."""


class LatticeWarning(UserWarning):
    """A width is off the lattice its hardware runs fast (a --ratio without a target)."""
