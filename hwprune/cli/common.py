"""What the CLI's commands share (main.py, hardware.py, recover.py, sparse.py): loading the
model a command names, its --rule declarations, onnxruntime settings, and the console and
progress display."""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError
from ..load import FACTORY_RUNS_CODE, LoadedModel, load_spec, spec_path


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """SPEC and the options that say how to load it and its example inputs."""
    parser.add_argument("spec", metavar="SPEC",
                        help="model.pt, model.pt2, torchvision:NAME, timm:NAME, hf:TYPE or pkg.module:factory. "
                             + FACTORY_RUNS_CODE)
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--example-inputs", type=Path, metavar="FILE.pt",
                        help="a tuple of tensors saved with torch.save")
    inputs.add_argument("--input-shape", metavar="1,3,224,224",
                        help="random example input of this shape (';' between several inputs)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load a torch.save pickle, which can run code: trusted files only")
    parser.add_argument("--rule", action="append", default=[], metavar="OP=FAMILY",
                        help="give your op ('ns::op') or autograd Function (its qualified name) a built-in "
                             "rule, e.g. --rule MemoryEfficientSwish=elementwise; repeatable")


def add_calibration_argument(parser: argparse.ArgumentParser, use: str) -> None:
    parser.add_argument("--calibration", type=Path, metavar="FILE.pt",
                        help=f"inputs {use} (default: the example inputs): a list of input tuples shaped like "
                             "the example inputs, or one batch of N of them, saved with torch.save")


def declare_rules(specs: list) -> None:
    """--rule OP=FAMILY, each given the built-in rule of FAMILY (hwprune.declare_rule)."""
    import hwprune
    for spec in specs:
        name, sep, family = spec.partition("=")
        if not sep or not name or not family:
            raise InputError(f"--rule {spec!r} is not OP=FAMILY: write for example --rule mylib::swish=elementwise")
        try:
            hwprune.declare_rule(name, like=family)
        except (ValueError, AttributeError, RuntimeError) as e:
            raise InputError(f"--rule {spec!r}: {e}") from e


def load_model(args, default_shape: str | None = None, default_from: str = "") -> LoadedModel:
    """The model and example inputs that a command's SPEC and input options name."""
    declare_rules(getattr(args, "rule", []))
    with cwd_on_path():
        return load_spec(args.spec, trust_pickle=args.trust_pickle, input_shape=args.input_shape,
                         example_inputs=args.example_inputs, default_input_shape=default_shape,
                         default_from=default_from)


@contextmanager
def cwd_on_path():
    """Factory specs and pickled classes import from the current directory, as `python -m` does."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def ort_settings(args):
    """onnxruntime settings from --threads."""
    from ..hardware.measure import OrtSettings
    if args.threads < 1:
        raise InputError(f"--threads {args.threads}: give 1 or more")
    return OrtSettings(threads=args.threads)


def console(stderr: bool = False):
    """A rich console on stdout (stderr: for progress and warnings)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


@contextmanager
def progress_display():
    """A rich progress display on a terminal; None (no display) when stderr is a file or pipe."""
    screen = console(stderr=True)
    if not screen.is_terminal:
        yield None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                               TextColumn, TimeElapsedColumn)

    tasks: dict[str, int] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description:<10}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=screen,
                  transient=True) as display:
        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:  # stages run in order: a new one means the others are done
                for task in tasks.values():
                    display.update(task, completed=display.tasks[task].total)
                tasks[stage] = display.add_task(stage, total=total)
            display.update(tasks[stage], completed=done, total=total)

        yield progress


def read_report(path: Path) -> dict:
    """A slim report (JSON) with its kept channels, for `apply` and `finetune --features`."""
    from ..deploy.outputs import settle
    settle(path.absolute().parent)  # a bundle that a killed run was moving into place becomes whole first
    if not path.is_file():
        raise InputError(f"{path}: no such report file: give the --report JSON written by "
                         "hwprune slim")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: is not valid JSON ({e}): give the --report file written by "
                         "hwprune slim") from e
    if not isinstance(report, dict) or "kept" not in report:
        raise InputError(f"{path}: has no 'kept' channels: give the --report file written by "
                         "hwprune slim")
    return report


def model_inputs(args) -> list:
    """The input files a command reads: no output may overwrite them."""
    return [spec_path(args.spec), args.example_inputs, getattr(args, "lut", None), getattr(args, "calibration", None)]


def summary_table(title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    return table


def count(n) -> str:
    """A count as people read it: 11.69M, 1.81G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
