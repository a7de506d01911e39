"""benchmarks/bench_accuracy.py's merge of parts: a part's row that only adds contenders (as
--add-default writes) goes into the row it adds to; full rows are kept in order, and a full row
run again replaces the earlier one (none of the earlier row's contenders stay)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_accuracy as bench  # noqa: E402

DIGITS_15 = {"model": "digits", "requested": 1.5, "original": {"test_accuracy": 0.95}, "uniform": {"a": 1}}
MINILM_2 = {"model": "minilm", "requested": 2.0, "original": {"embedding_cosine": 1.0}, "uniform": {"a": 2}}
ADDED = {"model": "minilm", "requested": 2.0, "hwprune_default": {"a": 3}}
MINILM_RERUN = {"model": "minilm", "requested": 2.0, "original": {"embedding_cosine": 1.0}, "uniform": {"a": 4}}


@pytest.mark.parametrize("rows, expect", [
    ([DIGITS_15, MINILM_2], [DIGITS_15, MINILM_2]),
    ([DIGITS_15, MINILM_2, ADDED], [DIGITS_15, MINILM_2 | {"hwprune_default": {"a": 3}}]),
    ([MINILM_2, DIGITS_15, ADDED], [MINILM_2 | {"hwprune_default": {"a": 3}}, DIGITS_15]),
    ([DIGITS_15, MINILM_2 | {"hwprune_default": {"a": 3}}, MINILM_RERUN], [DIGITS_15, MINILM_RERUN]),
], ids=["full-rows", "added-last", "added-to-an-earlier-row", "a-row-run-again-replaces-it"])
def test_merged_rows(rows, expect):
    assert bench.merged_rows(rows) == expect
    assert "hwprune_default" not in MINILM_2  # the parts' rows are not changed


def test_an_addition_without_its_row_is_refused():
    with pytest.raises(SystemExit, match="minilm row at 2.0x"):
        bench.merged_rows([DIGITS_15, ADDED])
