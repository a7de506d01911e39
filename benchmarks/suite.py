"""Run the comparison studies one after another, each in its own process, and say which failed.

Each study's output goes to the terminal and to `<out>/logs/<name>.log`; the run's account
(which studies ran, passed, failed or were skipped and why, and their times) is written through
record.py to `<out>/logs/suite.json`. A full run writes where benchmarks/README.md reads
(benchmarks/results); a quick run writes to a fresh temporary folder, so a smoke run never
replaces a committed result.
"""
from __future__ import annotations

import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import record
from .studies import STUDIES, Study, quick_set

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # passed | failed | skipped
    seconds: float
    cpu_seconds: float  # user + system time of the study's process: what an idle machine would need
    command: str
    why: str = ""  # the reason a study was skipped, or the last line it printed before failing


def select(names: list[str], quick: bool) -> list[Study]:
    """The studies named (all of them, or the quick set with --quick, when none is named)."""
    from hwprune.errors import InputError
    if not names:
        return quick_set() if quick else list(STUDIES.values())
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise InputError(f"no study named {', '.join(unknown)}: choose among {', '.join(STUDIES)} "
                         "(python -m benchmarks run --list)")
    chosen = [STUDIES[n] for n in names]
    missing = [s.name for s in chosen if quick and s.quick is None]
    if missing:
        raise InputError(f"{', '.join(missing)}: no --quick variant (benchmarks/studies.py says why): run it "
                         "without --quick, or leave it out")
    return chosen


def argv_of(s: Study, quick: bool, out: Path) -> list[str]:
    args = s.quick if quick else s.args
    # relative to the repository root, where the study runs: the command its result records is portable
    return [sys.executable, f"{HERE.name}/{s.script}", *(a.replace("{out}", str(out)) for a in args)]


def missing(needs: tuple[str, ...]) -> list[str]:
    out = []
    for need in needs:
        if need == "cuda":
            import torch
            if not torch.cuda.is_available():
                out.append("a CUDA GPU")
        elif importlib.util.find_spec(need) is None:
            out.append(need)
    return out


def run_one(s: Study, quick: bool, out: Path, console) -> Outcome:
    argv = argv_of(s, quick, out)
    command = " ".join(["python", *argv[1:]])
    lacking = missing(s.needed(quick))
    if lacking:
        extra = "" if lacking == ["a CUDA GPU"] else ' (pip install -e ".[dev,bench]")'
        return Outcome(s.name, "skipped", 0.0, 0.0, command, f"needs {', '.join(lacking)}{extra}")
    log = out / "logs" / f"{s.name}.log"
    last = ""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    with open(log, "w", buffering=1) as f, subprocess.Popen(argv, cwd=HERE.parent, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True, bufsize=1,
                                               env=os.environ | {"PYTHONUNBUFFERED": "1"}) as proc:
        for line in proc.stdout:
            f.write(line)
            sys.stdout.write(f"  {s.name} | {line}")  # as printed: no wrapping, no markup
            sys.stdout.flush()
            last = line.strip() or last
    seconds, cpu = round(time.perf_counter() - t0, 1), round(_children_cpu() - cpu0, 1)
    if proc.returncode == 0:
        return Outcome(s.name, "passed", seconds, cpu, command)
    return Outcome(s.name, "failed", seconds, cpu, command, f"exit {proc.returncode}: {last[-200:]} (log: {log})")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(names: list[str], *, quick: bool = False, out: Path | None = None) -> int:
    """Run the chosen studies; returns the exit status (1 when any failed)."""
    from rich.console import Console
    console = Console()
    chosen = select(names, quick)
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="hwprune-bench-quick-")) if quick else RESULTS
    (out / "logs").mkdir(parents=True, exist_ok=True)
    how = record.capture(threads=None, batch=None, statistic="each study records its own",
                         settings={"quick": quick, "out": str(out), "studies": [s.name for s in chosen]})
    outcomes = []
    for i, s in enumerate(chosen, 1):
        console.rule(f"[{i}/{len(chosen)}] {s.name}: {s.about}")
        outcomes.append(run_one(s, quick, out, console))
        o = outcomes[-1]
        console.print(f"[{i}/{len(chosen)}] {s.name}: {o.status} ({o.seconds:.0f} s){' - ' + o.why if o.why else ''}",
                      highlight=False)
        record.write(out / "logs" / "suite.json", how, {"studies": [asdict(x) for x in outcomes]})
    console.print(summary_table(outcomes))
    console.print(f"results in {out}; logs and suite.json in {out / 'logs'}", highlight=False)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def summary_table(outcomes: list[Outcome]):
    from rich.table import Table
    table = Table(title="benchmark studies")
    for column in ("study", "status", "seconds", "CPU seconds", "why"):
        table.add_column(column)
    colour = {"passed": "green", "failed": "red", "skipped": "yellow"}
    for o in outcomes:
        table.add_row(o.name, f"[{colour[o.status]}]{o.status}[/]", f"{o.seconds:.0f}", f"{o.cpu_seconds:.0f}", o.why)
    return table


def list_table(quick: bool):
    from rich.table import Table
    table = Table(title="benchmark studies (python -m benchmarks run [NAMES] [--quick])")
    for column in ("study", "script", "what", "needs", "full run", "--quick"):
        table.add_column(column, overflow="fold")
    for s in STUDIES.values():
        full = f"~{s.full_minutes:g} min" if s.full_minutes else "not timed"
        smoke = "-" if s.quick is None else " ".join(s.quick) + (
            f" (~{s.quick_minutes:g} min, {'measured' if s.quick_measured else 'estimated'})" if s.quick_minutes else "")
        table.add_row(s.name, s.script, s.about, needs_text(s.needed(quick)), full, smoke)
    table.caption = (f"run --quick (the studies in the quick set): ~{sum(s.quick_minutes for s in quick_set()):.0f} "
                     "min on an idle 2-core machine; a study outside it runs its smoke run when named")
    return table


def needs_text(needs: tuple[str, ...]) -> str:
    from .studies import BENCH_EXTRA
    if not needs:
        return "-"
    rest = [n for n in needs if n not in BENCH_EXTRA]
    return ", ".join((["the bench extra"] if set(BENCH_EXTRA) <= set(needs) else []) + rest)
