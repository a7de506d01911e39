"""python -m benchmarks stale: which results in benchmarks/results were made with code that has
changed since.

A result is current when every commit it names (its own, its merged parts', its rows') has the
same product code as the checkout (hwprune/, the native kernel and its build, and the script that
made it) and none was measured on uncommitted changes. A commit that git does not know (a result
made on another clone, or a rebased branch) cannot be shown to be current, so it counts as stale.
Changes elsewhere (READMEs, tests, the tables' wording) leave a result current.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .record import ROOT, git

CODE = ("hwprune", "kernels", "CMakeLists.txt")  # what a result measures, besides its own script
_SHA = re.compile(r"^[0-9a-f]{7,40}\b")
_SCRIPT = re.compile(r"((?:[\w.-]+/)*[\w.]+\.py)\b")


@dataclass(frozen=True)
class Staleness:
    name: str  # the result file
    commits: tuple[str, ...]  # every commit it names, short
    dirty: bool  # some part was measured on uncommitted changes
    unknown: tuple[str, ...]  # commits git does not know here
    changed: tuple[str, ...]  # code files that differ between a commit it names and the checkout

    @property
    def current(self) -> bool:
        return not (self.dirty or self.unknown or self.changed or not self.commits)

    def why(self) -> str:
        if self.current:
            return "current"
        reasons = ["names no commit"] if not self.commits else []
        if self.dirty:
            reasons.append("measured on uncommitted changes")
        if self.unknown:
            reasons.append(f"{_n(self.unknown, 'commit')} unknown here: {', '.join(self.unknown)}")
        if self.changed:
            more = len(self.changed) - 3
            shown = ", ".join(self.changed[:3]) + (f" and {more} more" if more > 0 else "")
            reasons.append(f"{len(self.changed)} code {_n(self.changed, 'file')} changed since: {shown}")
        return "; ".join(reasons)


def _n(items, word: str) -> str:
    return word + ("s" if len(items) > 1 else "")


def named(obj, key: str) -> list:
    """Every value under `key` anywhere in a JSON document."""
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == key] + [x for k, v in obj.items() if k != key for x in named(v, key)]
    if isinstance(obj, list):
        return [x for v in obj for x in named(v, key)]
    return []


def commits_of(document: dict) -> tuple[str, ...]:
    """The commits a result names: its own and those of the parts or rows merged into it. A value
    may carry words after the hash ("9126048 (main, ...)")."""
    found = {m.group(0) for v in named(document, "commit") if isinstance(v, str) and (m := _SHA.match(v))}
    # one commit named both in full and short is one commit
    return tuple(sorted(c for c in found if not any(o != c and o.startswith(c) for o in found)))


def scripts_of(document: dict, root: Path = ROOT) -> tuple[str, ...]:
    """The benchmark scripts named in its commands that exist under benchmarks/ (as paths from the root):
    a path as written (benchmarks/gpu/driver.py), or else a bare name found in benchmarks/."""
    found = set()
    for written in {m for c in named(document, "command") if isinstance(c, str) for m in _SCRIPT.findall(c)}:
        for candidate in (Path(written), Path("benchmarks") / Path(written).name):
            if candidate.parts[:1] == ("benchmarks",) and (root / candidate).is_file():
                found.add(candidate.as_posix())
                break
    return tuple(sorted(found))


def staleness(path: Path, root: Path = ROOT) -> Staleness:
    document = json.loads(Path(path).read_text())
    commits = commits_of(document)
    paths = (*CODE, *scripts_of(document, root))
    unknown, changed = [], set()
    for commit in commits:
        if git("cat-file", "-e", f"{commit}^{{commit}}", root=root) is None:
            unknown.append(commit[:7])
            continue
        diff = git("diff", "--name-only", commit, "--", *paths, root=root)  # against the working tree
        changed.update(line for line in (diff or "").splitlines() if line)
    dirty = any(v is True for v in named(document, "dirty"))
    return Staleness(Path(path).name, tuple(c[:7] for c in commits), dirty, tuple(unknown), tuple(sorted(changed)))


def main(results: Path = ROOT / "benchmarks" / "results", root: Path = ROOT) -> int:
    """Print one line per result; 1 if any is stale."""
    found = [staleness(p, root) for p in sorted(Path(results).glob("*.json"))]
    width = max((len(s.name) for s in found), default=0)
    for s in found:
        print(f"{s.name:<{width}}  {'current' if s.current else 'STALE  '}  {', '.join(s.commits) or '—'}"
              + ("" if s.current else f"  ({s.why()})"))
    stale = sum(not s.current for s in found)
    print(f"{len(found) - stale} of {len(found)} results current; code: {', '.join(CODE)} and each result's script")
    return 1 if stale else 0
