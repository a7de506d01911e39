"""hwprune's own import graph: no cycles, and no private name taken from another module; and
the code that uses hwprune from outside (tests, benchmarks, examples) takes public names only.

The graph is read with `ast` from every hwprune/**/*.py. Every `import` and `from ... import`
statement counts, at module level and inside functions alike (a function-level import only
hides a cycle until that function runs). An edge goes to the module named: `from .a import b`
is an edge to `a`, or to `a.b` where b is a submodule; importing `a.b` is not also counted as
an edge to the package `a` (every submodule imports its parents, which would make every
package `__init__` that re-exports a submodule a cycle). Imports made with
`importlib.import_module` (the rule families' plug-in loading) are not statements and are not
counted.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hwprune"


class Import(NamedTuple):
    source: str  # the importing module
    target: str  # the module imported from
    names: tuple  # the names taken (`from target import names`); () for `import target`
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str, path: Path, modules: dict) -> list:
    """Every import statement of the module that names a hwprune module, resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [Import(module, a.name, (), node.lineno) for a in node.names if a.name in modules]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = tuple(a.name for a in node.names)
            subs = [n for n in names if f"{target}.{n}" in modules]
            out += [Import(module, f"{target}.{n}", (), node.lineno) for n in subs]
            rest = tuple(n for n in names if n not in subs)
            if rest and target in modules:
                out.append(Import(module, target, rest, node.lineno))
    return out


def import_graph() -> tuple:
    """({module: set of modules it imports}, [Import]) over hwprune."""
    modules = _modules()
    imports = [i for m, p in modules.items() for i in _imports(m, p, modules)]
    edges = {m: set() for m in modules}
    for i in imports:
        if i.target != i.source:
            edges[i.source].add(i.target)
    return edges, imports


def cycles(edges: dict) -> list:
    """The strongly connected components with more than one module (Tarjan, iterative), each
    with one cycle through it spelled out."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(_one_cycle(sorted(comp), edges))
    return found


def _one_cycle(component: list, edges: dict) -> list:
    """A shortest cycle through the component's first module (breadth-first within it)."""
    start, inside = component[0], set(component)
    parent, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & inside):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def test_no_import_cycle():
    edges, _ = import_graph()
    found = cycles(edges)
    assert not found, "import cycles in hwprune:\n" + "\n".join(" -> ".join(c) for c in found)


def private_attributes(module: str, path: Path, modules: dict) -> list:
    """(line, module, name) for each `m._name` where m is another hwprune module imported here."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names if a.asname and a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            aliases |= {a.asname or a.name: f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
    return [(node.lineno, aliases[node.value.id], node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
            and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != module]


def test_no_private_name_is_imported_from_another_module():
    _, imports = import_graph()
    bad = [f"{_path(i.source)}:{i.line}: {i.source} imports {n} from {i.target}"
           for i in imports if i.target != i.source for n in i.names if n.startswith("_")]
    modules = _modules()
    bad += [f"{_path(m)}:{line}: {m} reads {name} of {target}"
            for m, p in modules.items() for line, target, name in private_attributes(m, p, modules)]
    assert not bad, "private names imported across hwprune modules (make them public):\n" + "\n".join(bad)


def _path(module: str) -> str:
    return str(_modules()[module].relative_to(ROOT))


# Code outside the package uses hwprune as a user does, by its public names: a test or a
# benchmark that reaches into a private function pins it, so that moving it breaks them.
CALLERS = ("tests", "benchmarks", "examples")
# (file, module, name) of a private name a caller still takes: the reason it is not yet public
PRIVATE_ALLOWED = {
    ("tests/sparse/test_sparse_choose.py", "hwprune.sparse.choose", "_energy_kept"):
        "hwprune/sparse/ is reworked on another branch: make it public there",
    # the kill and rollback tests break the bundle's commit between its single steps
    ("tests/bundle_writer.py", "hwprune.deploy.outputs", "_move"): "fault injection inside the commit",
    ("tests/deploy/test_durability.py", "hwprune.deploy.outputs", "_ASIDE"): "fault injection inside the commit",
    ("tests/deploy/test_durability.py", "hwprune.deploy.outputs", "_write_durably"): "fault injection inside the commit",
}


def dotted(node) -> str | None:
    """'a.b.c' for the expression a.b.c, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def private_uses(module: str, path: Path, modules: dict) -> set:
    """(line, module, name) for each private name the file takes from a hwprune module:
    `from hwprune.m import _x`, `m._x` where m is a hwprune module imported here, and `hwprune.m._x`."""
    found = {(i.line, i.target, n) for i in _imports(module, path, modules) if i.target != module
             for n in i.names if n.startswith("_")}
    found |= set(private_attributes(module, path, modules))
    found |= {(node.lineno, dotted(node.value), node.attr) for node in ast.walk(ast.parse(path.read_text(), str(path)))
              if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
              and dotted(node.value) in modules and dotted(node.value) != module}
    return found


def _caller_uses() -> dict:
    """{(file, module, name): [lines]} over every caller file."""
    modules, uses = _modules(), {}
    for path in (p for d in CALLERS for p in sorted((ROOT / d).rglob("*.py"))):
        rel = path.relative_to(ROOT)
        for line, target, name in private_uses(".".join(rel.with_suffix("").parts), path, modules):
            uses.setdefault((str(rel), target, name), []).append(line)
    return uses


def test_tests_and_benchmarks_take_no_private_name_from_hwprune():
    bad = [f"{f}:{min(lines)}: takes {name} from {target}" for (f, target, name), lines in sorted(_caller_uses().items())
           if (f, target, name) not in PRIVATE_ALLOWED]
    assert not bad, "private names of hwprune used outside it (make them public, or list them with the reason " \
                    "in PRIVATE_ALLOWED):\n" + "\n".join(bad)


def test_every_allowed_private_use_still_occurs():
    stale = sorted(set(PRIVATE_ALLOWED) - set(_caller_uses()))
    assert not stale, f"PRIVATE_ALLOWED lists uses that are gone (drop them): {stale}"


# ---- the checks themselves can fail: a table of small packages with a known answer -----------

GRAPHS = [
    ({"a": {"b"}, "b": set()}, []),
    ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b", "c"}, "b": set(), "c": {"d"}, "d": {"c"}}, [["c", "d", "c"]]),
]


@pytest.mark.parametrize("edges,expected", GRAPHS)
def test_cycle_finder(edges, expected):
    assert cycles(edges) == expected


def test_resolution_of_relative_and_submodule_imports(tmp_path):
    src = "from . import sub\nfrom .sub import _hidden, shown\nfrom .. import top\n\ndef f():\n    import pkg.a\n"
    modules = {"pkg": None, "pkg.a": None, "pkg.a.sub": None}
    path = tmp_path / "a" / "__init__.py"
    path.parent.mkdir()
    path.write_text(src)
    got = _imports("pkg.a", path, modules)
    assert got == [Import("pkg.a", "pkg.a.sub", (), 1), Import("pkg.a", "pkg.a.sub", ("_hidden", "shown"), 2),
                   Import("pkg.a", "pkg", ("top",), 3), Import("pkg.a", "pkg.a", (), 6)]


def test_private_attribute_of_an_imported_module_is_found(tmp_path):
    path = tmp_path / "b.py"
    path.write_text("from . import a\nimport pkg.a as m\n\ndef f():\n    return a._hidden, m._other, a.shown\n")
    got = private_attributes("pkg.b", path, {"pkg": None, "pkg.a": None, "pkg.b": None})
    assert sorted(got) == [(5, "pkg.a", "_hidden"), (5, "pkg.a", "_other")]


def test_import_hwprune_in_a_fresh_interpreter():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", "import hwprune, hwprune.cli"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr


PRIVATE_USES = [  # (a caller's source, the private uses found)
    ("from pkg.mod import _secant, land\n", {(1, "pkg.mod", "_secant")}),
    ("import pkg.mod as m\nm._rescored = 1\n", {(2, "pkg.mod", "_rescored")}),
    ("import pkg.mod\nx = pkg.mod._tick, pkg.mod.slim\n", {(2, "pkg.mod", "_tick")}),
    ("from pkg import mod\ny = mod.slim.__doc__, mod._hidden\n", {(2, "pkg.mod", "_hidden")}),
    ("from pkg import mod\ny = mod.slim.__doc__\n", set()),
]


@pytest.mark.parametrize("source,expected", PRIVATE_USES)
def test_private_uses_of_a_caller_are_found(source, expected, tmp_path):
    path = tmp_path / "t.py"
    path.write_text(source)
    assert private_uses("tests.t", path, {"pkg": None, "pkg.mod": None}) == expected
