"""slim's budget and --importance flags, built from the registries when the parser is built
(hwprune.plan.kinds.BUDGET_KINDS: a flag per budget kind; hwprune.importance.CRITERIA: the
--importance choices and their help), and read back as the API's arguments. The checks are
the API's own (Budget, budget_of), asked here before the model loads."""
from __future__ import annotations

import argparse

from ..errors import InputError
from ..importance import CRITERIA, Needs
from ..importance.auto import AUTO
from ..plan.kinds import BUDGET_KINDS, DEFAULT_SPEEDUP, Budget, budget_of


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """--ratio, and one flag per registered budget kind, at most one of them."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--ratio", type=float, help="fraction of each prunable group's channels to remove, in [0, 1)")
    for kind in BUDGET_KINDS.values():
        group.add_argument(kind.flag, dest=kind.name, type=float, metavar=kind.metavar, help=kind.help)


def budget_flags() -> str:
    """The budget flags as a user types them: "--ratio R, --speedup S, ... or --params P"."""
    flags = ["--ratio R", *(f"{k.flag} {k.metavar}" for k in BUDGET_KINDS.values())]
    return f"{', '.join(flags[:-1])} or {flags[-1]}"


def slim_budget(args) -> Budget | None:
    """hwprune.slim's budget= for the flags given: the kind's flag, or --target alone, which plans
    --speedup DEFAULT_SPEEDUP on it; None for --ratio. Checked as the API checks it (budget_of)."""
    given = {k: getattr(args, k, None) for k in BUDGET_KINDS}
    given = {k: v for k, v in given.items() if v is not None}
    if not given and args.ratio is None:
        if args.target is None:
            raise InputError(f"slim needs a budget: give {budget_flags()}, or --target T alone (which plans "
                             f"--speedup {DEFAULT_SPEEDUP:g} on T)")
        given = {"speedup": DEFAULT_SPEEDUP}
    return budget_of({"ratio": args.ratio, **given}, args.allow_block_removal)


def add_importance_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--importance", choices=(AUTO, *CRITERIA), default=AUTO, help=importance_help())


def importance_help() -> str:
    """Each registered criterion with its summary, and what it reads beyond the weights."""
    rows = "; ".join(f"{c.name}: {c.summary}" + ("" if c.needs is Needs.WEIGHTS else " (on --calibration, default "
                     "the example inputs" + (", label-free loss" if c.needs is Needs.LOSS else "") + ")")
                     for c in CRITERIA.values())
    return (f"how channels are ranked (default {AUTO}: with a budget, fisher on --calibration or the example "
            f"inputs, whose figures compare groups with each other; l2 for --ratio and past 1B parameters; "
            f"the report's config.importance_auto says which and why). {rows}")
