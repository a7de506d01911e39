"""The hardware commands of the hwprune CLI (argument parsing and printing only):

    hwprune targets [--json]
    hwprune profile SPEC --target cpu [--out LUT.json] [--plot DIR] [--grid N]
    hwprune bench SPEC [SLIM.pt] --target cpu [--threads N]

and the --target/--lut options of `hwprune slim`. cli.py calls add_hardware_commands."""
from __future__ import annotations

import json
from pathlib import Path


def add_hardware_commands(sub, add_model_arguments) -> None:
    targets = sub.add_parser("targets", help="list the built-in hardware targets and their lattices")
    targets.add_argument("--json", action="store_true", help="print the table as JSON")
    targets.set_defaults(command=_cmd_targets)


def _cmd_targets(args) -> int:
    from .cli import _console
    from .hardware import TARGETS

    rows = [t.to_json() for t in TARGETS]
    console = _console()
    if args.json:
        console.print(json.dumps(rows, indent=2), markup=False, soft_wrap=True)
        return 0
    from rich.table import Table
    table = Table(title="hwprune targets", title_justify="left")
    # names are typed back as --target: never fold them
    for column in ("target", "alias", "runtime", "precision", "lattice"):
        table.add_column(column, no_wrap=True)
    reasons: dict[str, list[str]] = {}  # each lattice reason and latency model once, below the table
    for t, row in zip(TARGETS, rows):
        rule = max(t.lattice.rules, key=lambda r: r.multiple)
        reasons.setdefault(f"% {rule.multiple}: {rule.reason}", []).append(t.name)
        reasons.setdefault(f"latency model: {t.latency_model}", []).append(t.name)
        table.add_row(t.name, ", ".join(t.aliases), t.runtime.split(" (")[0], t.precision,
                      f"% {row['lattice']}")
    console.print(table)
    for reason, names in reasons.items():
        console.print(f"- {reason} [{', '.join(names)}]", markup=False)
    return 0
