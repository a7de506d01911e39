"""All of one run's outputs, or none of them, even if the process is killed (SIGKILL) at any moment.

POSIX renames one name atomically, never several, so a set of files (OUT.pt, OUT.onnx,
OUT.report.json, ...) is made all-or-nothing with a journal, as databases do:

1. Each output is written under its final name into a staging folder created in the output's
   own directory (same filesystem, so moving it into place is a rename), and checked there.
   The writer holds an exclusive flock on the folder's lock file for the folder's whole life;
   the kernel drops the lock when the process dies, however it dies, so a staging folder whose
   lock can be taken belongs to nobody alive.
2. Commit point: a journal listing every move (staged entry, destination, where the
   destination's old version goes) is written beside the staged files, fsynced, and renamed to
   its name in state "commit". Before that rename nothing outside the staging folders changed,
   and the old set is whole; after it, the new set is decided.
3. The moves: each old version is moved aside into the staging folder, then the staged entry
   takes the destination's name. Each step is one rename, and each is redone or undone from
   what is on disk alone (a staged entry that is gone was moved in; an aside that exists holds
   the old version), so replaying the journal after a kill at any point gives the same result.
4. State "done", then the staging folders go. A failure during the moves in a live process
   (a full disk, Ctrl-C) flips the journal to "abort" and puts every old version back.

A run killed before its commit point leaves the old set plus a staging folder; one killed
after it leaves a journal that says how to finish. `settle(directory)` finishes or undoes such
writes (state "commit": roll forward; "abort": roll back; no journal: delete the staging folder)
and skips folders whose writer is alive. hwprune settles a directory before it writes there and
before it reads a model file or report from it, so hwprune never sees a partial set; another
program reading the files between a kill and the next hwprune command can, for the moves' few
milliseconds' worth of window, see some new and some old files (each file itself whole).

    with StagedOutputs({"model": Path("a.pt"), "onnx": Path("a.onnx")}, force=False) as stage:
        torch.save(model, stage.path("model"))
        ...
        stage.commit()
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..io import OutputError, check_not_input, check_output, fsync_dir, fsync_file

STAGING_PREFIX = ".hwprune-staging-"
_NEW_PREFIX = ".hwprune-new-"  # a staging folder before its lock is held: settle never looks at these
_CONTROL = ".hwprune-"  # the lock, the journal and the pointer to it: not outputs
_LOCK, _JOURNAL, _POINTER = ".hwprune-lock", ".hwprune-journal.json", ".hwprune-journal-at"
_move = os.replace  # atomic within one filesystem; a name of its own so tests can interrupt it
_ASIDE = ".replaced."  # an existing output moved aside while the new one takes its name


class StagedOutputs:
    """Outputs by kind ({"model": Path, "onnx": Path, ...}); `folders` names the kinds that
    are folders (save_pretrained's). Every output is checked before any work: an existing one
    needs force, an input is never an output, a symbolic link is never written through."""

    def __init__(self, outputs: dict, *, force: bool = False, inputs=(), folders=()):
        self.outputs = {kind: Path(p) for kind, p in outputs.items() if p is not None}
        self.force = force
        self._staging: dict[Path, Path] = {}  # output directory -> its staging folder
        self._locks: list[int] = []
        self._pending = False  # a journal in "commit" or "abort" that settle must finish
        paths = list(self.outputs.values())
        if len({p.resolve() for p in paths}) != len(paths):
            raise OutputError(f"outputs {', '.join(map(str, paths))} name the same file twice: give -o, "
                              "--report, --onnx, --html and --pt2 different paths")
        for parent in dict.fromkeys(p.absolute().parent for p in paths):
            settle(parent)  # an earlier run killed while writing here: its set first becomes whole
        for kind, path in self.outputs.items():
            if path.name.startswith((_CONTROL, _ASIDE)):
                raise OutputError(f"{path}: names starting with {_CONTROL} or {_ASIDE} are hwprune's own "
                                  "working files: choose another output name")
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
                self._staging[parent] = _staging_folder(parent, self._locks)
            except OSError as e:
                self.cleanup()
                raise OutputError(f"{path}: cannot write in {path.parent} ({e.strerror or e}): make the "
                                  "directory writable or choose another output path with -o") from e
        primary = self._primary()
        for staging in self._staging.values():  # settle, coming from any of the folders, finds the journal
            if staging != primary:
                _write_durably(staging / _POINTER, os.path.relpath(primary, staging))
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
        moves = [(entry, parent / entry.name, staging / f"{_ASIDE}{entry.name}")
                 for parent, staging in self._staging.items()
                 for entry in sorted(staging.iterdir()) if not entry.name.startswith((_CONTROL, _ASIDE))]
        for _, dest, _ in moves:  # an output that appeared while we worked
            if os.path.lexists(dest) and not self.force:
                raise OutputError(f"{dest}: appeared while hwprune was working: pass --force to overwrite it, or "
                                  "choose another path; nothing was written")
        for entry, _, _ in moves:  # on disk before the journal can send them into place
            _fsync_tree(entry)
        primary = self._primary()
        journal = _Journal(primary, moves, list(self._staging.values()))
        journal.write("commit")  # the commit point
        self._pending = True
        try:
            journal.forward()
        except BaseException as e:
            journal.write("abort")
            journal.backward()
            journal.finish()
            self._pending = False
            if isinstance(e, OSError):
                raise OutputError(f"{e.filename or primary.parent}: moving the outputs into place failed "
                                  f"({e.strerror or e}); every output was left as it was before the run") from e
            raise
        for parent in self._staging:
            fsync_dir(parent)
        journal.finish()
        self._pending = False
        return [dest for _, dest, _ in moves]

    def cleanup(self) -> None:
        """Remove the staging folders, unless a journal there still has moves to finish or undo
        (a failure while undoing): then settle finishes them, here or in the next run."""
        if not self._pending:
            for staging in self._staging.values():
                try:
                    _remove_folder(staging)
                except OSError:  # what is left is settled by the next run that writes or reads here
                    pass
        self._staging.clear()
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()

    def _primary(self) -> Path:
        """The staging folder that holds the journal: the first output's (the model's)."""
        first = next(iter(self.outputs.values()))
        return self._staging[first.absolute().parent]


def settle(directory: Path | str) -> list[Path]:
    """Finish or undo what hwprune runs killed while writing into `directory` left there; returns
    the staging folders settled. Folders whose writer is alive are left alone."""
    directory = Path(directory)
    settled = []
    try:
        folders = sorted(directory.glob(STAGING_PREFIX + "*"))
    except OSError:
        return settled
    for folder in _abandoned_setups(directory) + folders:
        try:
            if folder.name.startswith(_NEW_PREFIX):
                _remove_folder(folder)
            elif _settle_folder(folder):
                settled.append(folder)
        except OSError as e:
            raise OutputError(f"{folder}: an earlier hwprune run was killed while writing here, and finishing its "
                              f"write failed ({e.strerror or e}): make {directory} writable, or remove {folder} "
                              "once you have checked the files beside it") from e
    return settled


def _settle_folder(folder: Path) -> bool:
    if not (folder / _LOCK).exists():  # not one of ours (or an older hwprune's): leave it alone
        return False
    locks: list[int] = []
    try:
        if not _try_lock(folder, locks):
            return False  # its writer is alive
        journal = _Journal.find(folder)
        if journal is None:  # killed before the commit point: the old set is whole
            _remove_folder(folder)
            return True
        if not all(f == folder or not (f / _LOCK).exists() or _try_lock(f, locks) for f in journal.folders):
            return False  # another process is settling, or the writer still holds a folder
        if journal.state == "commit":
            journal.forward()
        elif journal.state == "abort":
            journal.backward()
        journal.finish()
        return True
    finally:
        for fd in locks:
            os.close(fd)


def _staging_folder(parent: Path, locks: list) -> Path:
    """A new staging folder in `parent`, its lock held (appended to `locks`) before it takes a
    name that settle looks at, so that settle never mistakes a folder being set up for a dead one."""
    new = Path(tempfile.mkdtemp(prefix=_NEW_PREFIX, dir=parent))
    try:
        if not _try_lock(new, locks, create=True):
            raise OSError(f"cannot lock {new}")
        final = parent / (STAGING_PREFIX + new.name[len(_NEW_PREFIX):])
        os.rename(new, final)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return final


def _try_lock(folder: Path, locks: list, create: bool = False) -> bool:
    """Take the folder's lock without waiting; False when another open file holds it."""
    fd = os.open(folder / _LOCK, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    locks.append(fd)
    return True


def _write_durably(path: Path, text: str) -> None:
    """`text` under `path`, appearing whole (renamed from a fsynced temporary file) and durably."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class _Journal:
    """The moves of one commit and its state, stored in the primary staging folder with paths
    relative to it (so a directory tree moved as a whole still settles)."""

    def __init__(self, home: Path, moves: list, folders: list, state: str = "commit"):
        self.home, self.moves, self.folders, self.state = home, moves, folders, state

    @classmethod
    def find(cls, folder: Path) -> "_Journal | None":
        home = folder
        if (folder / _POINTER).exists():
            home = (folder / (folder / _POINTER).read_text(encoding="utf-8")).resolve()
        try:
            data = json.loads((home / _JOURNAL).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        at = lambda p: Path(os.path.normpath(home / p))  # noqa: E731
        return cls(home, [tuple(at(p) for p in move) for move in data["moves"]],
                   [at(f) for f in data["folders"]], data["state"])

    def write(self, state: str) -> None:
        self.state = state
        rel = lambda p: os.path.relpath(p, self.home)  # noqa: E731
        _write_durably(self.home / _JOURNAL, json.dumps({
            "state": state, "moves": [[rel(p) for p in move] for move in self.moves],
            "folders": [rel(f) for f in self.folders]}))

    def forward(self) -> None:
        """Every staged entry into place, its destination's old version aside."""
        for entry, dest, aside in self.moves:
            if not os.path.lexists(entry):
                continue  # moved in already
            if os.path.lexists(dest):
                if os.path.lexists(aside):
                    _remove(dest)  # not ours: the old version was moved aside before
                else:
                    _move(dest, aside)
            _move(entry, dest)

    def backward(self) -> None:
        """Every moved-in entry back to staging, then every old version back to its name."""
        for entry, dest, aside in reversed(self.moves):
            if not os.path.lexists(entry) and os.path.lexists(dest):
                _move(dest, entry)
            if os.path.lexists(aside):
                _move(aside, dest)

    def finish(self) -> None:
        """Remove the staging folders (asides and all), the journal's own folder last: until it
        is gone, state "done" says that only removal is left."""
        if self.state != "done":
            self.write("done")
        for folder in self.folders:
            if folder != self.home:
                _remove_folder(folder)
        (self.home / _JOURNAL).unlink()
        _remove_folder(self.home)


def _remove_folder(folder: Path) -> None:
    """Remove a staging folder, its lock last: a folder that still has its lock is still settle's
    to look at, and one without it is never touched again."""
    if not folder.exists():
        return
    for entry in folder.iterdir():
        if entry.name != _LOCK:
            _remove(entry)
    (folder / _LOCK).unlink(missing_ok=True)
    folder.rmdir()


def _abandoned_setups(directory: Path, age_s: float = 60.0) -> list:
    """Staging folders whose writer died while setting them up (before they took their name)."""
    import time
    found = []
    for folder in directory.glob(_NEW_PREFIX + "*"):
        locks: list[int] = []
        try:
            if time.time() - folder.stat().st_mtime > age_s and _try_lock(folder, locks):
                found.append(folder)
        except OSError:  # no lock file yet, or gone meanwhile: not abandoned
            continue
        finally:
            for fd in locks:
                os.close(fd)
    return found


def _fsync_tree(path: Path) -> None:
    """fsync a file, or a folder's files and the folder (a kill needs none of this; a power cut
    after the commit point would otherwise find the journal but not the data it moves)."""
    for p in [path] if not path.is_dir() else [*sorted(path.rglob("*")), path]:
        fsync_file(p)


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _check_folder(path: Path, force: bool, inputs) -> None:
    """A save_pretrained folder: like check_output, for a directory."""
    check_not_input(path, inputs)
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists: pass --force to overwrite it, or choose another path")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"{path}: directory {path.parent} does not exist: create it first")
