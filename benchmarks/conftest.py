"""The micro-benchmarks' results in the suite's schema: `--results FILE` writes
{"schema": 1, "how": ..., "results": {"benchmarks": [...]}} through record.py, beside whatever
pytest-benchmark itself saves (--benchmark-json, --benchmark-autosave keep its own layout, which
--benchmark-compare reads)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import record

HOW = pytest.StashKey()


def pytest_addoption(parser):
    parser.addoption("--results", type=Path, help="write the micro-benchmarks' figures to this JSON (suite schema)")


def pytest_sessionstart(session):
    # captured before anything runs: the commit and settings the figures were made with
    session.config.stash[HOW] = record.capture(
        threads=torch.get_num_threads(), batch="per benchmark (its parameters)",
        statistic="pytest-benchmark's rounds: min, median, max per benchmark (seconds)",
        packages=("pytest-benchmark", "torchvision"))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    path = session.config.getoption("--results")
    bench = getattr(session.config, "_benchmarksession", None)  # pytest-benchmark's session (no public accessor)
    if path is None or bench is None:
        return
    rows = [b.as_dict(include_data=False) for b in bench.benchmarks if b]
    record.write(path, session.config.stash[HOW], {"benchmarks": rows})

