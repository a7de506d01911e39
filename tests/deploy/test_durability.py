"""Killing hwprune at any point of writing a bundle leaves the previous complete set of outputs
or the complete new one, never a mix (hwprune.deploy.outputs: a journal and settle()).

Oracles:
- every step: each rename and journal write of a commit is a point where a kill can land. The
  directory tree as it stands at each of them is copied; settle() on the copy must leave exactly
  the old set or the new set, with none of hwprune's working files.
- SIGKILL: a real process (tests/bundle_writer.py) writes a real bundle (model, ONNX, JSON and
  HTML reports of a tiny slim model) over and over and is killed at a seeded random moment.
  Every file it left under an output's name is whole (one of the two versions), and after
  settle() the folder holds exactly one of the two sets.
The report is compared without its one timing field, onnx.seconds (wall time of the export and
of the onnxruntime check, which differs between any two runs); everything else byte for byte.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hwprune.deploy import outputs
from hwprune.deploy.outputs import StagedOutputs, settle

TESTS = Path(__file__).resolve().parents[1]  # the helpers (bundle_writer.py) sit in tests/


# ---------------------------------------------------------------- a kill at every step

def _outputs(root: Path) -> dict:
    return {"a": root / "a.txt", "b": root / "b.txt", "c": root / "sub" / "c.txt", "f": root / "f"}


def _read(root: Path) -> dict:
    """What each output holds: a file's text, a folder's {name: text}; absent outputs are left out."""
    state = {}
    for kind, path in _outputs(root).items():
        if path.is_dir():
            state[kind] = {p.name: p.read_text() for p in sorted(path.iterdir())}
        elif path.exists():
            state[kind] = path.read_text()
    return state


def _working_files(root: Path) -> list:
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.name.startswith((".hwprune-", outputs._ASIDE))]


def _write_new(stage: StagedOutputs) -> dict:
    for kind in ("a", "b", "c"):
        stage.path(kind).write_text(f"new {kind}")
    stage.path("f").mkdir()
    (stage.path("f") / "config.json").write_text("new config")
    (stage.path("f") / "weights.bin").write_text("new weights")
    return {"a": "new a", "b": "new b", "c": "new c", "f": {"config.json": "new config", "weights.bin": "new weights"}}


def _write_old(root: Path, kinds) -> None:
    (root / "sub").mkdir()
    paths = _outputs(root)
    for kind in kinds:
        if kind == "f":
            paths["f"].mkdir()
            (paths["f"] / "config.json").write_text("old config")
            (paths["f"] / "old-only.bin").write_text("old weights")
        else:
            paths[kind].write_text(f"old {kind}")


class _Interrupted(BaseException):
    """Stands for Ctrl-C in a live process (the commit then rolls back)."""


@pytest.mark.parametrize("existing, interrupt_at", [
    pytest.param(("a", "b", "c", "f"), None, id="replace-all"),
    pytest.param((), None, id="all-new"),
    pytest.param(("a", "f"), None, id="some-replaced"),
    pytest.param(("a", "b", "c", "f"), 3, id="replace-all-interrupted-at-move-3"),
    pytest.param(("b", "f"), 6, id="some-replaced-interrupted-at-move-6"),
])
def test_a_kill_at_every_step_of_a_commit_settles_to_one_whole_set(tmp_path, monkeypatch, existing, interrupt_at):
    root, copies = tmp_path / "out", tmp_path / "copies"
    root.mkdir()
    _write_old(root, existing)
    old = _read(root)
    points = []

    def copy_tree():  # what a kill at this moment would leave on disk
        shutil.copytree(root, copies / str(len(points)), symlinks=True)
        points.append(len(points))

    moves = []

    def move(src, dst):
        copy_tree()
        moves.append(dst)
        if len(moves) == interrupt_at:
            raise _Interrupted
        os.replace(src, dst)

    real_write = outputs._write_durably

    def write_durably(path, text):
        copy_tree()
        real_write(path, text)

    monkeypatch.setattr(outputs, "_move", move)
    monkeypatch.setattr(outputs, "_write_durably", write_durably)
    with StagedOutputs(_outputs(root), force=True, folders=("f",)) as stage:
        new = _write_new(stage)
        copy_tree()  # staged, before the commit
        try:
            stage.commit()
        except _Interrupted:
            pass
    copy_tree()  # after the run
    assert _read(root) == (old if interrupt_at else new) and not _working_files(root)
    assert len(points) > 8
    for i in points:
        copy = copies / str(i)
        settle(copy)
        settle(copy / "sub")
        state = _read(copy)
        assert state in (old, new), f"a kill at step {i} leaves {state}"
        assert not _working_files(copy), f"a kill at step {i} leaves {_working_files(copy)}"


def test_settle_leaves_a_live_writer_alone(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    with StagedOutputs({"a": tmp_path / "a.txt"}, force=True) as stage:
        stage.path("a").write_text("new")
        assert settle(tmp_path) == []  # its lock is held: nothing is touched
        assert stage.path("a").read_text() == "new"
        stage.commit()
    assert (tmp_path / "a.txt").read_text() == "new" and not _working_files(tmp_path)


# ---------------------------------------------------------------- SIGKILL of a real writer

BUNDLE = ("tiny.pt", "tiny.onnx", "tiny.report.json", "tiny.report.html")


def _content(path: Path):
    """A file's bytes; the report parsed, without its timing field."""
    if path.name.endswith(".json"):
        report = json.loads(path.read_text())
        report.get("onnx", {}).pop("seconds", None)
        return report
    return path.read_bytes()


def _set(folder: Path) -> dict:
    return {name: _content(folder / name) for name in BUNDLE if (folder / name).exists()}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The two sets written in this process into the folder the killed process writes to: A,
    and B over it; and the file the killed process reads them from."""
    from bundle_writer import slim_sets, write

    root = tmp_path_factory.mktemp("kill")
    dest = root / "out"
    dest.mkdir()
    sets = slim_sets()
    torch.save(sets, root / "sets.pt")
    for name in ("A", "B"):
        write(dest, *sets[name])
        shutil.copytree(dest, root / name)
    return {"dest": dest, "sets_file": root / "sets.pt", "A": root / "A", "B": root / "B"}


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_at_a_random_moment_leaves_the_old_or_the_new_bundle(written, seed):
    dest = written["dest"]
    shutil.rmtree(dest)
    shutil.copytree(written["A"], dest)  # the previous complete set
    sets = {name: _set(written[name]) for name in ("A", "B")}
    assert sets["A"].keys() == sets["B"].keys() == set(BUNDLE) and sets["A"] != sets["B"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    log = dest.with_name(f"writer-{seed}.log")
    with log.open("w") as stderr:  # a file, not a pipe that could fill and stall the writer
        writer = subprocess.Popen([sys.executable, str(TESTS / "bundle_writer.py"), str(written["sets_file"]),
                                   str(dest)], stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
    try:
        ready = writer.stdout.readline()
        assert ready.strip() == "ready", log.read_text()
        time.sleep(random.Random(seed).uniform(0.0, 3.0))  # a write takes about one second here
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL, log.read_text()
    for name in BUNDLE:  # before settling: each file under its name is whole, whichever version
        if (dest / name).exists():
            assert _content(dest / name) in (sets["A"][name], sets["B"][name]), name
    settle(dest)
    found = _set(dest)
    assert found in (sets["A"], sets["B"]), sorted(n for n in BUNDLE if found.get(n) != sets["A"].get(n))
    assert not _working_files(dest)


def _leftover(root: Path, name: str, lock: bool, age_s: float = 0.0) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "a.txt").write_text("staged")
    if lock:
        (folder / ".hwprune-lock").write_text("")
    if age_s:
        then = time.time() - age_s
        os.utime(folder, (then, then))
    return folder


@pytest.mark.parametrize("name, lock, age_s, removed", [
    pytest.param(".hwprune-staging-dead", True, 0, True, id="staging-of-a-dead-run"),
    pytest.param(".hwprune-staging-foreign", False, 0, False, id="staging-without-a-lock-is-not-ours"),
    pytest.param(".hwprune-new-dead", True, 120, True, id="setup-abandoned-a-while-ago"),
    pytest.param(".hwprune-new-fresh", True, 0, False, id="setup-maybe-still-in-progress"),
])
def test_settle_removes_only_leftovers_of_dead_runs(tmp_path, name, lock, age_s, removed):
    (tmp_path / "a.txt").write_text("old")
    folder = _leftover(tmp_path, name, lock, age_s)
    settle(tmp_path)
    assert folder.exists() != removed
    assert (tmp_path / "a.txt").read_text() == "old"  # no journal: nothing was committed
