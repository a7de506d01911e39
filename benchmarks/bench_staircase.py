"""The latency staircase of resnet18's most expensive layer on this CPU, as the user draws it:

    hwprune profile torchvision:resnet18 --target cpu --plot DIR --grid 4

(onnxruntime, 1 intra-op thread, each kernel in its own session; hwprune/hardware/profile.py
plot_staircase). The PNG is copied to --out atomically.

    python benchmarks/bench_staircase.py [--out benchmarks/results/resnet18.staircase.png]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from hwprune.cli.main import main as hwprune_main
from hwprune.io import atomic_write

RESULT = Path(__file__).parent / "results" / "resnet18.staircase.png"
ARGS = ("profile", "torchvision:resnet18", "--target", "cpu", "--grid", "4")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rc = hwprune_main([*ARGS, "--plot", tmp])
        drawn = sorted(Path(tmp).glob("*.staircase.png"))
        if rc or not drawn:
            print(f"hwprune profile exited {rc} and drew {len(drawn)} staircase", file=sys.stderr)
            return rc or 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, lambda t: shutil.copyfile(drawn[0], t), force=True)
    print(f"{args.out}: the staircase of hwprune {' '.join(ARGS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
