"""Reading a torch.export .pt2 file without running code that the file carries.

torch.export.load trusts its file (its own docstring: it "uses pickle under the hood ... Never
load data from an untrusted source"). In torch 2.14 its reader can run code from the file in
four places:
- weights and constants stored as pickles (`use_pickle` in the archive's config), and the older
  formats' artifacts (after a weights-only attempt fails), go through torch.load(weights_only=False);
- opaque constants go through pickle.loads;
- symbolic shape expressions go through sympy.sympify, which evaluates its string with eval;
- an archive with AOTInductor models loads their compiled shared libraries.

read_pt2 without trust guards each one where it happens: torch's own switch
TORCH_FORCE_WEIGHTS_ONLY_LOAD makes every torch.load weights-only, pickle.load and pickle.loads
refuse, sympy.sympify accepts only arithmetic over symbol names and sympy's functions, and an
archive holding compiled code is refused before it is read. The guards are process-wide for the
read's duration (torch reads on the calling thread). A file that needs any of them fails with
ModelLoadError naming the file and --trust-pickle. A .pt2 that torch.export.save wrote from an
ordinary model needs none of them.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .errors import ModelLoadError

_FORCE, _FORCE_NOT = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_COMPILED = re.compile(r"(^|/)data/aotinductor/")  # under the archive's own top folder
# sympify(text) is eval(text) after a parse: text made only of these tokens, with every name a
# known function or a symbol name, has no way to reach an attribute, a builtin or an import
_TOKEN = re.compile(r"\s+|\d+(?:\.\d+)?(?:e[+-]?\d+)?|[A-Za-z_]\w*|\*\*|//|[-+*/%(),<>=!&|~^]")
_SYMBOL = re.compile(r"[a-z]+\d+")  # s0, u12, zuf3: the shape environment's symbol names
# how torch writes a symbol with its assumptions: Symbol('s77', positive=True, integer=True)
_SYMBOL_CALL = re.compile(r"Symbol\('([a-z]+\d+)'((?:\s*,\s*[a-z_]+\s*=\s*(?:True|False))*)\s*\)")
_SYMPY_NAMES = frozenset({"Max", "Min", "Abs", "Mod", "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
                          "And", "Or", "Not", "Integer", "Rational", "Float", "oo", "zoo", "nan", "true", "false",
                          "True", "False", "Piecewise", "sqrt", "exp", "log", "pi", "E", "I"})


class _CodeRefused(Exception):
    """A part of the file that only code could read; not a RuntimeError, which torch's reader swallows."""


def read_pt2(path: Path, *, trust_pickle: bool = False):
    """The ExportedProgram in `path`; without trust_pickle, without running code from the file."""
    import torch

    if not trust_pickle:
        _refuse_compiled(path)
    try:
        with path.open("rb") as f, (nullcontext() if trust_pickle else _no_code()):
            return torch.export.load(f)  # a file object: torch.export.load wants a .pt2 suffix otherwise
    except _CodeRefused as e:
        raise _needs_trust(path, str(e)) from None
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise
        raise _needs_trust(path, "pickled weights or constants") from None


def _needs_trust(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(
        f"{path}: holds {what}, and reading that can run any code the file contains, so hwprune does not load "
        "it by default: if you trust the file, pass --trust-pickle; otherwise export the model again with "
        "torch.export.save from plain tensors and static shapes")


def _refuse_compiled(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            compiled = [n for n in zf.namelist() if _COMPILED.search(n)]
    except (zipfile.BadZipFile, OSError):
        return  # torch's reader says what is wrong with it
    if compiled:
        raise _needs_trust(path, f"AOTInductor compiled code ({compiled[0]})")


@contextmanager
def _no_code():
    import sympy

    env = {k: os.environ.get(k) for k in (_FORCE, _FORCE_NOT)}
    saved = pickle.load, pickle.loads, sympy.sympify
    os.environ[_FORCE] = "1"
    os.environ.pop(_FORCE_NOT, None)  # torch refuses both at once
    pickle.load = pickle.loads = _refuse_pickle
    sympy.sympify = _plain_sympify(saved[2])
    try:
        yield
    finally:
        pickle.load, pickle.loads, sympy.sympify = saved
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _refuse_pickle(*args, **kwargs):
    raise _CodeRefused("a pickled object")


def _plain_sympify(sympify):
    def plain(expr, *args, **kwargs):
        if isinstance(expr, str) and not is_plain_expression(expr, kwargs.get("locals") or {}):
            raise _CodeRefused(f"a symbolic shape {expr[:60]!r} that is not plain arithmetic over symbols")
        return sympify(expr, *args, **kwargs)
    return plain


def is_plain_expression(text: str, names=()) -> bool:
    """Whether `text` is arithmetic over numbers, symbol names, `names` and sympy's functions."""
    text, pos = _SYMBOL_CALL.sub(r"\1", text), 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            return False
        word = m.group()
        if word[0].isalpha() or word[0] == "_":
            if not (word in names or word in _SYMPY_NAMES or _SYMBOL.fullmatch(word)):
                return False
        pos = m.end()
    return True
