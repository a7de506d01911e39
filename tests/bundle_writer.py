"""The process that test_durability kills: it writes the slim bundle of a tiny model (OUT.pt,
OUT.onnx, OUT.report.json, OUT.report.html) through the real writer, hwprune.deploy.write_bundle.

    python bundle_writer.py SETS.pt DEST     write once into DEST.warm, print "ready", then
                                             write set B, A, B, ... over DEST
                                             (with force) until killed; each rename into place
                                             is slowed by 20 ms, so that kills land in the
                                             commit as well as in the writing

SETS.pt (slim_sets, saved by the test) holds A and B: the tiny convnet slimmed at ratios 0.25
and 0.5, each with its report and example inputs.
"""
import os
import sys
import time
import warnings
from pathlib import Path

import torch

import hwprune
from hwprune.deploy import outputs
from hwprune.deploy.bundle import Bundle, bundle_paths, write_bundle

from models_for_cli import tiny_convnet

RATIOS = {"A": 0.25, "B": 0.5}


def slim_sets() -> dict:
    found = {}
    for name, ratio in RATIOS.items():
        model, inputs = tiny_convnet()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", hwprune.errors.LatticeWarning)  # widths off a lattice are fine here
            slim, report = hwprune.slim(model, inputs, ratio=ratio)
        found[name] = (slim, dict(report) | {"source": {"spec": f"tiny at ratio {ratio}"}}, inputs)
    return found


def write(dest: Path, model, report, inputs) -> None:
    named = bundle_paths(dest / "tiny.pt")
    bundle = Bundle(model=dest / "tiny.pt", report=named["report"], onnx=named["onnx"], html=named["html"])
    write_bundle(model, report, inputs, bundle.stage(force=True))


def _slow_move(src, dst):
    time.sleep(0.02)
    os.replace(src, dst)
    time.sleep(0.02)


def main(sets_file: Path, dest: Path) -> None:
    sets = torch.load(sets_file, weights_only=False)  # written by the test that runs this
    warm = dest.with_name(dest.name + ".warm")  # the exporters' first-use imports, before any kill
    warm.mkdir(exist_ok=True)
    write(warm, *sets["A"])
    outputs._move = _slow_move
    print("ready", flush=True)
    while True:
        for name in ("B", "A"):
            write(dest, *sets[name])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
