"""One result schema for every benchmark, and one account of how a result was made.

A result file is

    {"schema": 1, "how": {...}, "results": ...}

where `how` says what made it: the hwprune commit and whether tracked files differed from it
(`dirty`), the command line, the versions of python, torch, onnxruntime, torch_pruning and
hwprune (and any others the study names), the processor (hwprune's own account: name and the
ISA flags that change kernels) and GPU, the threads, batch and statistic, and whatever else the
study fixed (`settings`). `results` is the study's own figures.

Capture `how` once, when the run starts: a study that rewrites a tracked result file after
every row would otherwise call its own later rows dirty.

    how = record.capture(threads=1, batch=1, statistic="median of ...", settings=runtime.how())
    record.write(path, how, {"rows": rows})
    loaded = record.load(path)   # also reads the layouts written before schema 1
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA = 1
ROOT = Path(__file__).resolve().parent.parent
# distributions every result names; a study adds its own (torchvision, triton, transformers)
PACKAGES = ("torch", "onnxruntime", "torch-pruning", "hwprune")


@dataclass(frozen=True)
class How:
    command: str
    commit: str | None  # None outside a git checkout
    dirty: bool | None  # tracked files differ from the commit
    versions: dict
    processor: dict
    gpu: str | None
    threads: int | None
    batch: int | str | None
    statistic: str
    settings: dict = field(default_factory=dict)
    started: str = ""  # UTC, ISO 8601

    def to_json(self) -> dict:
        return asdict(self)


class Loaded(NamedTuple):
    schema: int  # 0: a file written before schema 1 (its `how` is whatever it recorded)
    how: dict
    results: Any


def capture(*, threads: int | None, batch: int | str | None, statistic: str, settings: dict | None = None,
            packages: tuple[str, ...] = ()) -> How:
    """How the run that calls this is made, now (call it before the first result is written)."""
    from hwprune.hardware.processor import this_processor
    commit, dirty = git_state()
    return How(command=command_line(), commit=commit, dirty=dirty, versions=versions(packages),
               processor=this_processor().to_json() | {"cores": os.cpu_count(), "os": platform.platform()}, gpu=_gpu_name(),
               threads=threads, batch=batch, statistic=statistic, settings=dict(settings or {}),
               started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def git(*args: str, root: Path = ROOT) -> str | None:
    """git's output in `root`, stripped; None where git is absent or the command fails."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty): dirty counts tracked files only, since a run's own new result files are
    untracked until they are committed."""
    commit = git("rev-parse", "HEAD", root=root)
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no", root=root)
    return commit, None if status is None else bool(status)


def command_line() -> str:
    """The exact command, as typed: `python -m benchmarks run x` stays that, not a path to __main__."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def versions(packages: tuple[str, ...] = ()) -> dict:
    """{"python": ..., distribution: version or None where it is not installed}. Versions come
    from the installed metadata: torch_pruning.__version__ says 1.6.0 in its 1.6.1 release."""
    out = {"python": platform.python_version()}
    for name in dict.fromkeys((*PACKAGES, *packages)):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _gpu_name() -> str | None:
    torch = sys.modules.get("torch")  # a study that never imported torch has no GPU to name
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name()


def document(how: How, results) -> dict:
    return {"schema": SCHEMA, "how": how.to_json(), "results": results}


def write(path: Path | str, how: How, results) -> Path:
    """Write the result file atomically (a reader never sees half of it), replacing it."""
    from hwprune.io import atomic_write
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document(how, results), indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text), force=True)
    return path


LEGACY_HOW = ("how", "machine", "versions", "settings", "environment", "commit", "command")


def load(path: Path | str) -> Loaded:
    """A result file of any layout: schema 1, or the earlier ones (their results are the whole
    file, so `results["rows"]` reads the same either way)."""
    from hwprune.errors import InputError
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read a benchmark result ({e}): run the study that writes it "
                         "(python -m benchmarks run --list names them)") from e
    if isinstance(data, dict) and "schema" in data:
        if data["schema"] != SCHEMA:
            raise InputError(f"{path}: result schema {data['schema']!r}, this checkout reads schema {SCHEMA}: "
                             "update the checkout or re-run the study")
        return Loaded(SCHEMA, data["how"], data["results"])
    return Loaded(0, {k: data[k] for k in LEGACY_HOW if isinstance(data, dict) and k in data}, data)
