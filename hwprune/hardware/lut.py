"""Latency tables: measured kernel times of one runtime on one processor, as a JSON file.

A table is valid only for what it was measured with, so that is its identity, checked on
every load: target, runtime and its version, processor (name and the ISA flags kernels
dispatch on) and threads. Entries are keyed by block key (hwprune.hardware.blocks): a kernel
with its shapes. Sweep entries also carry the block's `sweep` key (the same kernel with its
channel counts left out) and its (C_in, C_out), so that widths that were not measured can be
interpolated from the sweeps. `calibration` holds whole-model points (sum of kernels against
measured end to end) from which the per-target overhead is fitted.

    {"format": "hwprune-latency-table", "version": 1, "identity": {...}, "how": {...},
     "overhead_ms": 0.012, "calibration": [{"model", "kernels_ms", "measured_ms"}],
     "entries": {key: {"ops", "desc", "ms", "min_ms", "max_ms", "repeats", "sweep", "channels"}}}
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HwpruneError
from ..io import atomic_write

FORMAT = "hwprune-latency-table"
VERSION = 1


class LatencyTableError(HwpruneError):
    """A latency table file is missing, damaged, or was measured somewhere else."""


@dataclass(frozen=True)
class Calibration:
    """end to end = scale * (sum of kernel times) + offset_ms."""
    scale: float
    offset_ms: float
    points: int

    def apply(self, kernels_ms: float) -> float:
        return self.scale * kernels_ms + self.offset_ms

    def to_json(self) -> dict:
        return {"scale": round(self.scale, 4), "offset_ms": round(self.offset_ms, 4), "points": self.points}


def fit_calibration(points: list[tuple[float, float]], overhead_ms: float) -> Calibration:
    """measured = scale * kernels + overhead: the offset is the runtime's per-run overhead
    (measured, not fitted) and the scale is fitted by least squares through it, one number
    that few whole models pin down well. No points: scale 1."""
    if not points:
        return Calibration(1.0, overhead_ms, 0)
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points]) - overhead_ms
    return Calibration(float((x * y).sum() / (x * x).sum()), overhead_ms, len(points))


@dataclass
class LatencyTable:
    identity: dict
    how: dict = field(default_factory=dict)
    overhead_ms: float = 0.0
    entries: dict = field(default_factory=dict)
    calibration_points: list = field(default_factory=list)
    path: Path | None = None
    dirty: bool = False

    # ------------------------------------------------------------ entries

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, record: dict) -> None:
        self.entries[key] = record
        self.dirty = True

    def as_sweep_point(self, key: str, sweep_key: str, chans) -> bool:
        """Mark an entry measured on its own (a layer at full width) as a point of its kernel's
        sweep too, so that interpolation finds its corner. False where there is no entry."""
        entry = self.entries.get(key)
        if entry is None:
            return False
        if entry.get("sweep") != sweep_key or entry.get("channels") != list(chans):
            entry |= {"sweep": sweep_key, "channels": list(chans)}
            self.dirty = True
        return True

    def add_calibration(self, model: str, kernels_ms: float, measured_ms: float) -> None:
        self.calibration_points = [p for p in self.calibration_points if p["model"] != model]
        self.calibration_points.append({"model": model, "kernels_ms": round(kernels_ms, 4),
                                        "measured_ms": round(measured_ms, 4)})
        self.dirty = True

    def calibration(self) -> Calibration:
        points = [(p["kernels_ms"], p["measured_ms"]) for p in self.calibration_points]
        return fit_calibration(points, self.overhead_ms)

    def sweep(self, sweep_key: str) -> list[tuple[int, int, float]]:
        """(C_in, C_out, ms) of every measured width of one kernel."""
        return [(e["channels"][0], e["channels"][1], e["ms"]) for e in self.entries.values()
                if e.get("sweep") == sweep_key and e.get("channels")]

    # ------------------------------------------------------------ files

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "identity": self.identity, "how": self.how,
                "overhead_ms": self.overhead_ms, "calibration": self.calibration_points,
                "entries": self.entries}

    def save(self, path: Path | str | None = None) -> Path:
        """Write atomically (a reader, or an interrupted profile, never sees half a table)."""
        path = Path(path or self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), force=True)
        self.path, self.dirty = path, False
        return path

    @classmethod
    def load(cls, path: Path | str, expect: dict | None = None) -> "LatencyTable":
        """Read a table; with `expect`, refuse one measured with another identity."""
        path = Path(path)
        if not path.is_file():
            raise LatencyTableError(f"{path}: no such latency table: give a file written by "
                                    "`hwprune profile ... --out FILE`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LatencyTableError(f"{path}: is not a readable latency table ({e}): delete it, or measure "
                                    "it again with `hwprune profile`") from e
        problem = _malformed(data)
        if problem:
            raise LatencyTableError(f"{path}: is not a hwprune latency table ({problem}): give a file written "
                                    "by `hwprune profile`, or delete it to measure again")
        if expect is not None:
            check_identity(data["identity"], expect, path)
        return cls(data["identity"], data.get("how", {}), float(data.get("overhead_ms", 0.0)),
                   data["entries"], list(data.get("calibration", [])), path)


def _malformed(data) -> str | None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"'format' is not {FORMAT!r}"
    if data.get("version") != VERSION:
        return f"version {data.get('version')!r}, this hwprune reads version {VERSION}"
    if not isinstance(data.get("identity"), dict) or not isinstance(data.get("entries"), dict):
        return "'identity' or 'entries' is missing"
    for key, e in data["entries"].items():
        ms = e.get("ms") if isinstance(e, dict) else None
        if not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
            return f"entry {key} has no valid 'ms'"
    for p in data.get("calibration", []):
        if not isinstance(p, dict) or not all(isinstance(p.get(k), (int, float)) for k in ("kernels_ms", "measured_ms")):
            return "a calibration point lacks kernels_ms or measured_ms"
    return None


IDENTITY_FIELDS = ("target", "runtime", "processor", "isa", "threads")


def check_identity(found: dict, expected: dict, path: Path) -> None:
    """A table measured on another processor, runtime version, thread count or target is
    never used silently: name the first field that differs."""
    for name in IDENTITY_FIELDS:
        if name in expected and found.get(name) != expected[name]:
            raise LatencyTableError(
                f"{path}: was measured with {name} {found.get(name)!r}, but this run uses {expected[name]!r}: "
                f"its times do not hold here. Measure a table for this setting with `hwprune profile SPEC "
                f"--target {expected.get('target', 'T')} --out FILE`")


def default_path(identity: dict) -> Path:
    """The per-machine cache: one file per identity, under $XDG_CACHE_HOME/hwprune."""
    import hashlib
    root = Path(os.environ.get("HWPRUNE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hwprune")
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return root / f"lut-{identity.get('target', 'target')}-{digest}.json"
