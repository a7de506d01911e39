"""python -m benchmarks run [NAMES] [--quick] [--list] [--out DIR]
python -m benchmarks readme [--check]
python -m benchmarks stale

run: the comparison studies (benchmarks/studies.py), one process each, one after another.
readme: the results of benchmarks/README.md and README.md, generated from the JSON in benchmarks/results.
stale: which results were made with code that has changed since (exit 1 if any).
The micro-benchmarks are pytest's: pytest benchmarks/ --benchmark-only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the comparison studies (all, or those named)")
    run.add_argument("names", nargs="*", metavar="NAME", help="studies to run (--list names them)")
    run.add_argument("--quick", action="store_true",
                     help="smoke runs (about 10 minutes on 2 cores for the whole set), into a temporary folder")
    run.add_argument("--list", action="store_true", help="list the studies and what each runs, then stop")
    run.add_argument("--out", type=Path, help="output folder (default: benchmarks/results; with --quick a "
                                              "fresh temporary folder)")
    readme = sub.add_parser("readme", help="write the results blocks of benchmarks/README.md and README.md from benchmarks/results")
    readme.add_argument("--check", action="store_true", help="write nothing; exit 1 if either README differs")
    sub.add_parser("stale", help="say which results in benchmarks/results were made with code that has changed since "
                                 "(exit 1 if any)")
    args = ap.parse_args(argv)
    from hwprune.errors import HwpruneError
    try:
        if args.command == "stale":
            from . import staleness
            return staleness.main()
        if args.command == "readme":
            from . import readme as generator
            return generator.main(check=args.check)
        from . import suite
        if args.list:
            from rich.console import Console
            Console().print(suite.list_table(args.quick))
            return 0
        return suite.run(args.names, quick=args.quick, out=args.out)
    except HwpruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
