"""Configuration of one run of the pass: frozen dataclasses, validated on construction."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError
from .importance import CRITERIA
from .importance.auto import AUTO


@dataclass(frozen=True)
class SlimConfig:
    """What to cut and how to check it.

    ratio: fraction of every prunable group's channels to remove, in [0, 1).
    importance: how channels are ranked (see hwprune.importance); "auto" (default) chooses from
    what the run does (hwprune.importance.auto): fisher on the example inputs for a budget, l2
    for a ratio.
    strict: any frozen group becomes an error instead of a note in the report.
    rtol: the mask-equivalence tolerance on max relative error.
    prune_hidden: also cut the hidden size (embeddings, the residual stream and the norms over
    it); not mask-equivalent, so the slim model is checked by output fidelity instead.
    compensate: read each removed channel as its calibration mean where a linear or unpadded
    conv consumes it, folded into that layer's bias (hwprune.compensate).
    objective: what a budgeted plan maximizes over magnitude criteria (hwprune.plan.budget.OBJECTIVES):
    "balanced", the sum over groups of log(importance kept), or "params", importance-weighted
    parameters kept (the objective before balanced, which guts cheap early layers), or "share", the
    logs weighed by each group's share of the model's cost.
    in_place: cut the model given instead of a copy, a tensor at a time, verified against reference
    outputs taken before the cut (no repair by freezing and cutting again); None: in place only
    where a copy of the weights would not fit in memory (hwprune.memory).
    """

    ratio: float = 0.5
    importance: str = "auto"
    strict: bool = False
    seed: int = 0
    rtol: float = 1e-4
    verify_batches: int = 2
    custom_rules: tuple = field(default=())
    prune_hidden: bool = False
    compensate: bool = False
    objective: str = "balanced"
    in_place: bool | None = None

    def __post_init__(self):
        if not isinstance(self.ratio, (int, float)) or not 0.0 <= float(self.ratio) < 1.0:
            raise InputError(
                f"ratio {self.ratio!r} is outside [0, 1): give the fraction of channels to remove, "
                "for example --ratio 0.5")
        if self.in_place not in (None, True, False):
            raise InputError(f"in_place {self.in_place!r}: give True (cut the model given), False (cut a copy) "
                             "or None (in place only where a copy would not fit in memory)")
        from .plan.budget import OBJECTIVES
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective {self.objective!r} is unknown: choose one of {', '.join(OBJECTIVES)}")
        if self.importance != AUTO and self.importance not in CRITERIA:  # the registry as it is now
            raise InputError(
                f"importance {self.importance!r} is unknown: choose one of {AUTO}, {', '.join(CRITERIA)}")
