"""All of one run's outputs, or none of them.

Each output is written under its final name into a staging folder that is created in the
output's own directory (same filesystem, so moving it into place is an atomic rename), and
checked there. Only when every output is written and checked does `commit` move them into
place. A file that --force replaces is first moved aside into the staging folder, so that a
failure half-way through the moves (a full disk, Ctrl-C) puts every old file back. However
the run ends, the staging folders are removed.

    with StagedOutputs({"model": Path("a.pt"), "onnx": Path("a.onnx")}, force=False) as stage:
        torch.save(model, stage.path("model"))
        ...
        stage.commit()
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..io import OutputError, fsync_dir, check_output

STAGING_PREFIX = ".hwprune-staging-"
_move = os.replace  # atomic within one filesystem; a name of its own so tests can interrupt it
_ASIDE = ".replaced."  # an existing output moved aside while the new one takes its name


class StagedOutputs:
    """Outputs by kind ({"model": Path, "onnx": Path, ...}); `folders` names the kinds that
    are folders (save_pretrained's). Every output is checked before any work: an existing one
    needs force, an input is never an output."""

    def __init__(self, outputs: dict, *, force: bool = False, inputs=(), folders=()):
        self.outputs = {kind: Path(p) for kind, p in outputs.items() if p is not None}
        self.force = force
        self._staging: dict[Path, Path] = {}  # output directory -> its staging folder
        paths = list(self.outputs.values())
        if len({p.resolve() for p in paths}) != len(paths):
            raise OutputError(f"outputs {', '.join(map(str, paths))} name the same file twice: give -o, "
                              "--report, --onnx, --html and --pt2 different paths")
        for kind, path in self.outputs.items():
            if kind in folders:
                _check_folder(path, force, inputs)
            else:
                check_output(path, force=force, inputs=inputs)

    def __enter__(self) -> "StagedOutputs":
        for path in self.outputs.values():
            parent = path.absolute().parent
            if parent in self._staging:
                continue
            try:
                self._staging[parent] = _staging_folder(parent)
            except OSError as e:
                self.cleanup()
                raise OutputError(f"{path}: cannot write in {path.parent} ({e.strerror or e}): make the "
                                  "directory writable or choose another output path with -o") from e
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def path(self, kind: str) -> Path:
        """Where to write the output `kind`: its final name, inside the staging folder."""
        final = self.outputs[kind]
        return self._staging[final.absolute().parent] / final.name

    def final(self, kind: str) -> Path:
        return self.outputs[kind]

    def commit(self, required=()) -> list[Path]:
        """Move every staged entry into place; on any failure, put everything back as it was.
        `required`: kinds that must have been written (a bug otherwise)."""
        missing = [k for k in required if not self.path(k).exists()]
        if missing:
            raise OutputError(f"outputs {', '.join(missing)} were not written; nothing was moved into place")
        moves = [(entry, parent / entry.name) for parent, staging in self._staging.items()
                 for entry in sorted(staging.iterdir()) if not entry.name.startswith(_ASIDE)]
        for _, dest in moves:  # an output that appeared while we worked
            if (dest.exists() or dest.is_symlink()) and not self.force:
                raise OutputError(f"{dest}: appeared while hwprune was working: pass --force to overwrite it, or "
                                  "choose another path; nothing was written")
        # each move is recorded before it is made, so that an interrupt between any two
        # statements still finds what to undo: an entry gone from staging was moved in, an
        # old version in staging was moved aside
        done: list[tuple[Path, Path, Path | None]] = []  # (staged entry, dest, where dest's old version goes)
        try:
            for entry, dest in moves:
                existed = dest.exists() or dest.is_symlink()
                aside = entry.parent / f"{_ASIDE}{dest.name}" if existed else None
                done.append((entry, dest, aside))
                if aside is not None:
                    _move(dest, aside)
                _move(entry, dest)
        except BaseException as e:
            _roll_back(done)
            if isinstance(e, OSError):
                raise OutputError(f"{dest}: moving the outputs into place failed ({e.strerror or e}); every "
                                  "output was left as it was before the run") from e
            raise
        for parent in self._staging:
            fsync_dir(parent)
        return [dest for _, dest in moves]

    def cleanup(self) -> None:
        for staging in self._staging.values():
            shutil.rmtree(staging, ignore_errors=True)
        self._staging.clear()


def _staging_folder(parent: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))


def _roll_back(done: list) -> None:
    for entry, dest, aside in reversed(done):
        if not entry.exists() and (dest.exists() or dest.is_symlink()):  # the new one was moved in
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest, ignore_errors=True)
            else:
                dest.unlink()
        if aside is not None and (aside.exists() or aside.is_symlink()):
            _move(aside, dest)


def _check_folder(path: Path, force: bool, inputs) -> None:
    """A save_pretrained folder: like check_output, for a directory."""
    for source in inputs:
        if source is not None and Path(source).exists() and path.exists() and os.path.samefile(path, source):
            raise OutputError(f"{path}: is the input model, and hwprune never modifies its input: choose another "
                              "output path with -o")
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists: pass --force to overwrite it, or choose another path")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"{path}: directory {path.parent} does not exist: create it first")
