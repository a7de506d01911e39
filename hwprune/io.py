"""Atomic output files: a reader never sees a half-written model, report or ONNX file.

The writer fills a temporary file in the destination's directory (same filesystem, so the
final os.replace is atomic), the data is fsynced, then the temporary file takes the
destination's name. Callers write only after the pass has verified its result.

Every output is checked before any work (check_output, check_output_folder): it is refused if
it is a symbolic link (a rename onto a link replaces the link, not the file it names, and a
link is how an output can be steered onto a file the user did not mean), if it is one of the
run's inputs (a hard link, or a path through a linked folder, counts), or if it lies inside a
folder that the run reads (an image folder of recovery data, say). Neither --force nor anything
else lifts these refusals.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import HwpruneError


class OutputError(HwpruneError):
    """An output cannot be written: it exists (without --force), is an input, or is unwritable."""


def check_output(path: Path | str, *, force: bool = False, inputs=()) -> Path:
    """Fail early, before any work, if `path` cannot or must not be written.

    inputs: files the run reads; an output may never replace one of them, even with force.
    """
    path = Path(path)
    check_not_input(path, inputs)
    if path.is_dir():
        raise OutputError(
            f"{path}: is a directory: give a file name, such as {path / 'model.slim.pt'}")
    if path.exists() and not force:
        raise _exists(path)
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {parent} does not exist: create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: directory {parent} is not writable: choose another output path")
    return path


def check_not_input(path: Path, inputs=()) -> None:
    """Refuse an output that is a symbolic link, is one of `inputs`, or lies inside an input folder."""
    path = Path(path)
    if path.is_symlink():
        target = os.readlink(path)
        raise OutputError(
            f"{path}: is a symbolic link (to {target}), and hwprune does not write through links: an output is "
            f"renamed into place, which would replace the link and leave {target} as it was. Give the real "
            "path, or remove the link first")
    out = path.resolve()  # through any linked folders on the way
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        if _same_file(path, source) or out == source.resolve():
            raise OutputError(
                f"{path}: is the input {source} (the same file), and hwprune never modifies its inputs: "
                "choose another output path with -o")
        if source.is_dir() and out.is_relative_to(source.resolve()):
            raise OutputError(
                f"{path}: lies inside {source}, a folder this run reads, and hwprune never writes into its "
                f"inputs: choose an output path outside {source}")
        if source.exists() and source.resolve().is_relative_to(out):  # replacing a folder would remove it
            raise OutputError(
                f"{path}: holds the input {source}, and hwprune never modifies its inputs: choose an output "
                f"path that does not contain {source}")


def _exists(path: Path) -> OutputError:
    return OutputError(
        f"{path}: already exists: pass --force to overwrite it, or choose another path")


def atomic_write(path: Path | str, writer: Callable[[Path], object], *, force: bool = False):
    """Call writer(tmp_path) to fill a temporary file, then move it to `path` atomically.

    Returns what the writer returned. Refuses to replace an existing file unless force=True.
    On any failure the temporary file is removed and `path` is left as it was.
    """
    path = check_output(path, force=force)
    tmp = _temp_beside(path)
    try:
        result = writer(tmp)
        fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files 0600; give the usual mode
        if path.exists() and not force:  # appeared while we were writing
            raise _exists(path)
        os.replace(tmp, path)
    except OSError as e:  # disk full, quota, permissions changed under us
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: writing failed ({e.strerror or e}): free some space or "
                          "choose another output path") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return result


def _temp_beside(path: Path) -> Path:
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                    suffix=f".tmp{path.suffix}")
    except OSError as e:
        raise OutputError(f"{path}: cannot create a file in {path.parent} ({e.strerror}): "
                          "choose another output path") from e
    os.close(fd)
    return Path(name)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def fsync_file(path: Path) -> None:
    """Flush a file's data (or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make the rename durable; some filesystems cannot fsync a directory, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
