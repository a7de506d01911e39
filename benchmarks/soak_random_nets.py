"""The soak: hwprune.slim on 10,000 random networks (tests/random_nets.py), recorded.

Each network must slim to a verified model of the same output shape, or raise
NothingToPruneError (tests/models/test_random_nets.py: slim_and_check). Unlike the test, a failure does
not stop the run: every failing spec is recorded with its error, so one run finds them all (the
test then replays one as a regression row). Writes benchmarks/results/soak_random_nets.json:
examples run, wall and CPU time, failures, and the count of each outcome and frozen reason.

    nice -n 15 python benchmarks/soak_random_nets.py                  # 10,000 networks, seed 0
    python benchmarks/soak_random_nets.py --examples 300 --out /tmp/soak.json   # a short look
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "models")]  # this checkout's hwprune and tests
RESULT = ROOT / "benchmarks" / "results" / "soak_random_nets.json"

import record
import test_random_nets as prop
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from random_nets import net_specs
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)


def soak(examples: int, hypothesis_seed: int, max_steps: int, progress=None) -> dict:
    failures, ops, seen = [], Counter(), [0]

    @seed(hypothesis_seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(net_specs(max_steps))
    def run(spec):
        seen[0] += 1
        ops.update({s.op for s in spec.steps})
        try:
            prop.slim_and_check(spec)
        except Exception as e:  # noqa: BLE001  (every failure is recorded; the run goes on)
            prop.EVENTS[f"failure: {type(e).__name__}"] += 1
            failures.append({"spec": repr(spec), "error": f"{type(e).__name__}: {str(e).splitlines()[0][:400]}",
                             "where": traceback.format_exc().splitlines()[-3:-1]})
        if progress is not None:
            progress(seen[0])

    prop.EVENTS.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"examples": seen[0], "failures": len(failures), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "cpu_s_per_example": round(cpu / max(seen[0], 1), 3),
            "events": dict(prop.EVENTS.most_common()), "examples_with_op": dict(ops.most_common()),
            "failed": failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0, help="hypothesis' seed: the same seed draws the same networks")
    ap.add_argument("--max-steps", type=int, default=12, help="the most steps a drawn network has")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    started = record.capture(threads=torch.get_num_threads(), batch=2, statistic="counts over one run",
                             packages=("hypothesis",),
                             settings={"examples": args.examples, "seed": args.seed, "max_steps": args.max_steps,
                                       "phases": "generate only (no shrinking: failures are recorded, not minimized)"})
    with Progress(TextColumn("soak"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("soak", total=args.examples)
        result = soak(args.examples, args.seed, args.max_steps, lambda n: bar.update(task, completed=n))
    record.write(args.out, started, result)
    print(f"{result['examples']} networks, {result['failures']} failures, {result['wall_s']} s "
          f"({result['cpu_s_per_example']} s of CPU each): {args.out}")
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
