"""Budget kinds: one row each in BUDGET_KINDS, the only place a kind is described.

    Budget("speedup", 2.0)      predicted latency <= predicted latency of the original / 2
    Budget("latency_ms", 5.0)   predicted latency <= 5 ms
    Budget("flops", 0.5)        conv and linear MACs <= half of the original's
    Budget("params", 0.5)       conv and linear weights <= half of the original's

A row says what a valid value is, how the value becomes the figure the cut model must reach
in its pricing's unit (ms, MACs, parameters), how kernels are priced for it, and the
command-line flag (`--` and the name with dashes) with its help. hwprune.slim(budget=...),
the CLI's flags, the landing, block removal and iterative slim's rounds all read the row, so
a new kind is its pricing function (hwprune.plan.pricing) plus one row here, registered with
`register_budget_kind`. The ratio (SlimConfig.ratio) is not a budget kind: it plans uniform
widths and prices nothing.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError

# The budget `--target T` and SlimPass plan without one: a third less latency is a cut most
# networks take with little accuracy to recover by fine-tuning.
DEFAULT_SPEEDUP = 1.5

# the kind a latency figure in ms is stated in, where a relative latency budget (a speedup) is
# restated for a model other than the original (blocks removed, a later round)
LATENCY_MS = "latency_ms"


@dataclass(frozen=True)
class BudgetKind:
    """One kind of budget.

    name: hwprune.slim's keyword, the report's "budget" key; the CLI flag is --name-with-dashes.
    valid(value) -> bool, and `need`, what to give instead ("a positive number of ms").
    figure(value, full) -> the figure the cut model must reach, in the pricing's unit, where
    `full` is the original's figure in that unit (a speedup S: full / S).
    pricing(priced, latency model, progress) -> hwprune.plan.pricing.Pricing of the model,
    where `priced` is a hwprune.plan.pricing.PricedModel (its .traced graph, and .onnx, exported
    on first use: a model past 2 GB has none); the latency model is None unless `latency`.
    latency: priced by the target's latency model (a target is needed, "cpu" by default, and
    the landing measures where the target runs here); else counted, and planned once.
    relative: the value is stated against the original's own figure (a speedup, a fraction of
    its MACs): a step toward it is value ** t, and needs no figure of the original.
    """
    name: str
    metavar: str
    help: str
    need: str
    valid: Callable
    figure: Callable
    pricing: Callable
    latency: bool = False
    relative: bool = True

    @property
    def flag(self) -> str:
        return flag_of(self.name)


def flag_of(name: str) -> str:
    """The command-line flag of a budget kind (or of a kind a report names)."""
    return "--" + name.replace("_", "-")


BUDGET_KINDS: dict = {}


def register_budget_kind(kind: BudgetKind) -> BudgetKind:
    """Add a kind to BUDGET_KINDS (its flag, keyword and report key); a second row of a name is refused."""
    if kind.name in ("ratio", "widths", "budget"):  # slim's other keywords of the same place
        raise ValueError(f"{kind.name!r} is a keyword of hwprune.slim: name the budget kind otherwise")
    if kind.name in BUDGET_KINDS:
        raise ValueError(f"two budget kinds named {kind.name}")
    BUDGET_KINDS[kind.name] = kind
    return kind


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in BUDGET_KINDS:
            raise InputError(f"budget {self.kind!r} is unknown: choose one of {', '.join(BUDGET_KINDS)}")
        row, v = BUDGET_KINDS[self.kind], self.value
        if not isinstance(v, (int, float)) or not math.isfinite(v) or not row.valid(v):
            raise InputError(f"{row.flag} {v!r} is out of range: give {row.need}")

    @property
    def row(self) -> BudgetKind:
        return BUDGET_KINDS[self.kind]

    @property
    def latency(self) -> bool:
        return self.row.latency

    def flag(self) -> str:
        return f"{self.row.flag} {self.value:g}"

    def figure(self, full: float) -> float:
        """The figure the cut model must reach, where the original's is `full`."""
        return self.row.figure(self.value, full)

    def pricing(self, priced, lm=None, progress=None):
        """The kind's Pricing of `priced` (a hwprune.plan.pricing.PricedModel)."""
        return self.row.pricing(priced, lm, progress)

    def partial(self, full: float | None, t: float) -> Budget:
        """The budget a fraction t of the way from the original (figure `full`), geometrically."""
        if self.row.relative:
            return Budget(self.kind, self.value ** t)
        return Budget(self.kind, full * (self.value / full) ** t)

    def restated(self, figure: float, full: float) -> Budget:
        """The budget that asks a model whose figure is `full` for `figure`: an absolute kind as
        it is, a relative latency kind in ms, a relative count as the fraction of `full`."""
        if not self.row.relative:
            return Budget(self.kind, figure)
        if self.row.latency:
            return Budget(LATENCY_MS, figure)
        return Budget(self.kind, min(1.0, figure / full))


def budget_keywords() -> tuple:
    """hwprune.slim's budget keywords: each registered kind, the ratio, and budget= (a Budget)."""
    return (*BUDGET_KINDS, "ratio", "budget")


def budget_of(given: dict, allow_block_removal: bool = False) -> Budget | None:
    """The run's budget from hwprune.slim's keywords: `given` maps "ratio", "widths", "budget"
    (a Budget) and each kind's name to its value, None where not given. At most one may be
    given; None where the run plans by ratio or widths. allow_block_removal needs a budget."""
    given = {k: v for k, v in given.items() if v is not None}
    if len(given) > 1:
        raise InputError(f"slim was given {' and '.join(given)}: give exactly one budget "
                         f"({', '.join(('ratio', *BUDGET_KINDS))}) or explicit widths")
    name, value = next(iter(given.items()), (None, None))
    budget = None
    if name == "budget":
        if not isinstance(value, Budget):
            raise InputError(f"budget={value!r} is not a Budget: give for example "
                             f"Budget({next(iter(BUDGET_KINDS))!r}, 2.0), or a keyword ({', '.join(BUDGET_KINDS)})")
        budget = value
    elif name in BUDGET_KINDS:
        budget = Budget(name, float(value))
    if allow_block_removal and budget is None:
        raise InputError("allow_block_removal (--allow-block-removal) needs a budget to weigh blocks against width: "
                         f"give {_or(list(BUDGET_KINDS))} ({_or([k.flag for k in BUDGET_KINDS.values()])})")
    return budget


def _or(names: list) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# ---------------------------------------------------------------- the built-in kinds

def _at_least_one(v) -> bool:
    return v >= 1.0


def _positive(v) -> bool:
    return v > 0


def _fraction(v) -> bool:
    return 0 < v <= 1


def _faster(value, full):  # a speedup S of the original: its latency over S
    return full / value


def _as_given(value, full):
    return value


def _of_original(value, full):  # a fraction of the original's count
    return value * full


# pricing imports onnx: loaded when a budget is priced, not with `import hwprune`

def _latency(priced, lm, progress=None):
    from .pricing import latency_pricing
    return latency_pricing(lm, priced.onnx, progress)


def _macs(priced, lm=None, progress=None):
    from .pricing import mac_count, size_pricing
    return size_pricing(priced, mac_count, "MACs")


def _params(priced, lm=None, progress=None):
    from .pricing import param_count, size_pricing
    return size_pricing(priced, param_count, "parameters")


BUILT_IN_KINDS = (
    BudgetKind("speedup", "S", "predicted latency on --target (default cpu) at most the original's / S; "
               f"with --target and no budget flag, {DEFAULT_SPEEDUP:g}", "1 or more (2 = twice as fast)",
               _at_least_one, _faster, _latency, latency=True),
    BudgetKind(LATENCY_MS, "L", "predicted latency on --target (default cpu) at most L ms", "a positive number of ms",
               _positive, _as_given, _latency, latency=True, relative=False),
    BudgetKind("flops", "F", "keep at most this fraction of the MACs", "a fraction in (0, 1] of the MACs to keep",
               _fraction, _of_original, _macs),
    BudgetKind("params", "P", "keep at most this fraction of the conv and linear parameters",
               "a fraction in (0, 1] of the parameters to keep", _fraction, _of_original, _params),
)
for kind in BUILT_IN_KINDS:
    register_budget_kind(kind)
