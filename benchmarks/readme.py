"""The README's results, generated from the JSON in benchmarks/results.

Each result-backed block of benchmarks/README.md and of the top-level README.md sits between two
marker comments,

    <!-- BEGIN GENERATED name: python -m benchmarks readme -->
    ...
    <!-- END GENERATED name -->

and is written by the function registered under that name from its result files alone: no
figure between the markers is typed by hand, and the prose outside them states no result
(tests/test_benchmarks_readme.py checks both). Every block drawn from one result file ends with
how that file was made (`provenance`). The table functions live in tables_speed.py,
tables_quality.py and tables_summary.py, each beside the goals it judges against.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import record
from .staleness import commits_of, named

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
ROOT_README = HERE.parent / "README.md"
READMES = (README, ROOT_README)
RESULTS = HERE / "results"
BLOCK = re.compile(r"(<!-- BEGIN GENERATED (?P<name>[\w-]+): python -m benchmarks readme -->\n)"
                   r"(?P<body>.*?)"
                   r"(<!-- END GENERATED (?P=name) -->)", re.DOTALL)


@dataclass(frozen=True)
class Table:
    name: str
    # the file in benchmarks/results it is drawn from; a tuple: several, the function gets
    # {file: results} and states each one's provenance itself; None: the suite's own registry
    result: str | tuple[str, ...] | None
    render: Callable[[object], list[str]]  # the file's results -> markdown lines


TABLES: dict[str, Table] = {}


def table(name: str, result: str | tuple[str, ...] | None):
    def add(fn):
        if name in TABLES:
            raise ValueError(f"two README tables named {name!r}: {TABLES[name].render.__name__} and {fn.__name__}")
        TABLES[name] = Table(name, result, fn)
        return fn
    return add


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(*cells) -> list[str]:
    return [row(*cells), "|" + "|".join(["---"] * len(cells)) + "|"]


def x(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}x"


def pct(v: float) -> str:
    return f"{v:+.1%}"


def asked(v: float) -> str:
    return f"{v:g}x"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else "**met**" if ok else "**not met**"


# ---------------------------------------------------------------- how each file was made

def study_for(result: str) -> str | None:
    """The study (benchmarks/studies.py) whose full run writes `result`."""
    from .studies import STUDIES
    return next((s.name for s in STUDIES.values() if f"{{out}}/{result}" in s.args), None)


def widest_simd(isa) -> str | None:
    flags = set(isa or ())
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None


def refresh(result: str) -> str:
    name = study_for(result)
    return f"`python -m benchmarks run {name}`" if name else "its script (no study in benchmarks/studies.py writes it)"


def provenance(loaded: record.Loaded, result: str) -> str:
    """One line: commit, date, processor, versions, threads and the exact command of `loaded`."""
    h = loaded.how
    if loaded.schema == 0:
        known = legacy_facts(h)
        return (f"*How it was made:* [{result}](results/{result}) predates recorded provenance (no commit, "
                f"date and command captured as the suite now does); {refresh(result)} refreshes it."
                + (f" It records: {known}." if known else ""))
    commit = (h.get("commit") or "")[:7] or "no git checkout"
    dirty = ", uncommitted changes" if h.get("dirty") else ""
    parts = mixed_commits(loaded)
    if parts:
        commit += f" (the last run or merge; with its parts and rows, {parts} commits)"
    cpu = h.get("processor") or {}
    name = cpu.get("name") or "processor not named"
    simd = widest_simd(cpu.get("isa"))
    machine = name + (f" ({simd})" if simd else "") + (f", {cpu['cores']} cores" if cpu.get("cores") else "")
    processors = processors_of(loaded)
    if len(processors) > 1:
        machine += f" (its parts and rows ran on {len(processors)} processors: {', '.join(processors)})"
    versions = ", ".join(f"{k} {v}" for k, v in (h.get("versions") or {}).items() if v and k != "hwprune")
    threads = f"{h['threads']} thread{'s' if h['threads'] != 1 else ''}" if h.get("threads") else "threads: the library defaults"
    gpu = f", GPU {h['gpu']}" if h.get("gpu") else ""
    return (f"*How it was made:* [{result}](results/{result}), commit {commit}{dirty}, "
            f"{h.get('started') or 'date not recorded'}; {machine}{gpu}; {versions}; {threads}; "
            f"`{h.get('command', 'command not recorded')}`.")


def mixed_commits(loaded: record.Loaded) -> int:
    """How many commits a merged result's rows or parts were made at, where more than one (else 0):
    its own `how` is then only the last part's."""
    n = len(commits_of({"how": loaded.how, "results": loaded.results}))
    return n if n > 1 else 0


def processors_of(loaded: record.Loaded) -> list[str]:
    """The processors a result's own run and its merged parts or runs name, in order of first mention."""
    found = named({"how": loaded.how, "results": loaded.results}, "processor")
    names = [p.get("name") if isinstance(p, dict) else p for p in found]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


def legacy_facts(h: dict) -> str:
    """What a file written before schema 1 did record of its machine and versions."""
    machine = h.get("machine") or {}
    inner = h.get("how") or {}
    cpu = machine.get("cpu") or machine.get("processor") or inner.get("processor")
    versions = {k: v for k, v in (h.get("versions") or {}).items() if k != "hwprune_git_rev"}
    versions |= {k: machine[k] for k in ("torch", "onnxruntime") if k in machine}
    facts = [f"{cpu}" + (f", {machine['cores']} cores" if machine.get("cores") else "")] if cpu else []
    facts += [", ".join(f"{k} {v}" for k, v in versions.items())] if versions else []
    facts += [inner["runtime"]] if inner.get("runtime") and not {"runtime", "onnxruntime"} & versions.keys() else []
    rev = h.get("commit") or (h.get("versions") or {}).get("hwprune_git_rev")
    facts += [f"commit {rev[:7]}" + (" with uncommitted changes" if "dirty" in rev else "")] if rev else []
    facts += [f"`{h['command']}`"] if h.get("command") else []
    return "; ".join(facts)


# ---------------------------------------------------------------- the READMEs

def load(result: str, results_dir: Path = RESULTS) -> record.Loaded:
    return record.load(results_dir / result)


def render(name: str, results_dir: Path = RESULTS) -> str:
    t = TABLES[name]
    if t.result is None:
        return "\n".join(t.render(None)) + "\n"
    if isinstance(t.result, tuple):
        return "\n".join(t.render({f: load(f, results_dir) for f in t.result if (results_dir / f).is_file()})) + "\n"
    if not (results_dir / t.result).is_file():  # a study whose result is not committed (yet, or any more)
        return (f"*Not measured on the current code:* no `results/{t.result}` is committed; "
                f"`python -m benchmarks run {study_for(t.result)}` makes it.\n")
    loaded = load(t.result, results_dir)
    return "\n".join([*t.render(loaded.results), "", provenance(loaded, t.result)]) + "\n"


def generate(text: str, results_dir: Path = RESULTS, where: str = "benchmarks/README.md") -> str:
    """`text` with every generated block rewritten from its result files."""
    from hwprune.errors import InputError

    def fill(m: re.Match) -> str:
        if m["name"] not in TABLES:
            raise InputError(f"{where} has a generated block {m['name']!r} that no table renders: "
                             f"the tables are {', '.join(TABLES)} (benchmarks/readme.py)")
        return m.group(1) + render(m["name"], results_dir) + m.group(4)
    return BLOCK.sub(fill, text)


def blocks(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def main(check: bool = False, paths: tuple[Path, ...] = READMES) -> int:
    """Rewrite (or, with check, compare) every README's generated blocks; 1 when one differs."""
    from hwprune.io import atomic_write
    differ = 0
    for path in paths:
        text = path.read_text()
        new = generate(text, where=path.name if path == ROOT_README else "benchmarks/README.md")
        if check:
            if new != text:
                print(f"{path} differs from its results: run python -m benchmarks readme")
                differ = 1
            continue
        if new != text:
            atomic_write(path, lambda tmp, new=new: tmp.write_text(new), force=True)
        print(f"{path}: {len(blocks(new))} generated blocks ({', '.join(blocks(new))}){'' if new != text else ', unchanged'}")
    return differ


# the table modules register themselves on import (they import the helpers above)
from . import tables_quality, tables_speed, tables_summary  # noqa: F401
