"""The report's JSON: how its values are written (numpy arrays and paths included)."""
from __future__ import annotations

import json
from pathlib import Path


def json_text(data) -> str:
    return json.dumps(data, indent=2, default=json_value) + "\n"


def write_json(path: Path, data) -> None:
    Path(path).write_text(json_text(data), encoding="utf-8")


def json_value(value):
    """Tensors, numpy scalars and paths that reports may carry."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report value of type {type(value).__name__} is not JSON serializable")
