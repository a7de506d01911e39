"""Progress: every stage takes `progress(stage, done, total)` (or None) and calls it as it goes;
the CLI draws it with rich."""
from __future__ import annotations


def tick(progress, stage: str, done: int, total: int) -> None:
    """Say that `done` of `total` steps of `stage` are done, where a callback was given."""
    if progress is not None:
        progress(stage, done, total)
