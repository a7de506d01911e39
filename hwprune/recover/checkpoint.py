"""Checkpoints of a recovery run: weights, optimizer, schedule, loss scaler, RNG states and
the data position (the step: batches are a function of it), written atomically to
DIR/last.pt by rank 0, read back with torch.load(weights_only=True) (no code runs)."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from ..errors import InputError
from ..io import atomic_write

FORMAT = "hwprune.recover/1"
NAME = "last.pt"


def shapes_of(model: torch.nn.Module) -> dict:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_python_state(state["python"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(s):
    return (s[0], tuple(s[1]), s[2])


def prepare(directory: Path) -> None:
    """Create the checkpoint folder, and fail now (not after hours of training) if it cannot be written."""
    from ..io import check_output
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{directory}: cannot create the checkpoint folder ({e.strerror}): give another "
                         "--checkpoint-dir") from e
    check_output(Path(directory) / NAME, force=True)


def save(directory: Path, state: dict) -> Path:
    path = Path(directory) / NAME
    atomic_write(path, lambda tmp: torch.save(state, tmp), force=True)
    return path


def load(directory: Path, *, fingerprint: dict, shapes: dict, source: str) -> dict | None:
    """The last checkpoint in `directory`, checked to belong to this run; None if there is none."""
    path = Path(directory) / NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read means the same to the user
        raise InputError(f"{path}: cannot be read as a recovery checkpoint ({type(e).__name__}): delete it to "
                         "start over, or give another --checkpoint-dir") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: is not a hwprune recovery checkpoint: give another --checkpoint-dir")
    differ = sorted(k for k in set(fingerprint) | set(state["config"])
                    if fingerprint.get(k) != state["config"].get(k))
    if differ:
        raise InputError(f"{path}: was written by a run with other settings ({', '.join(differ)}): resume with "
                         "the same settings, or give another --checkpoint-dir")
    if state["shapes"] != shapes:
        raise InputError(f"{path}: holds weights of another model (other parameter shapes): resume the same slim "
                         "model, or give another --checkpoint-dir")
    if state["source"] != source:
        raise InputError(f"{path}: was trained on {state['source']}, not {source}: resume with the same data, or "
                         "give another --checkpoint-dir")
    return state
