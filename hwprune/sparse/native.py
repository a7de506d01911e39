"""The native CPU kernel: build it with CMake against the installed torch, load it, or say why not.

Why build at run time rather than in `pip install`: pip builds a package in an isolated
environment that has no torch, and naming torch in build-requires would download a second
torch that need not match the one installed. So the library is built against the torch that
imports here, by `python -m hwprune.sparse build` (the README's set-up line runs it) or on the
first CPU call of the op, into a cache folder keyed by torch version, C++ ABI and a hash of
the sources (about 5-10 s). The build runs in a temporary folder and the finished library is
renamed into place, so a reader never loads a half-written file, and two processes building
at once are both safe (the last rename wins, with identical content).

Without cmake or a compiler the op falls back to the PyTorch reference with a one-line
warning; HWPRUNE_REQUIRE_NATIVE=1 makes that an error instead (.ci/run sets it, so the tests
there prove the built kernel ran).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import HwpruneError

LIBRARY = "libhwprune_native.so"
ROOT = Path(__file__).resolve().parents[2]  # the source tree: CMakeLists.txt and kernels/
SOURCES = ("CMakeLists.txt", "kernels/bsr_linear_cpu.cpp")


class NativeBuildError(HwpruneError):
    """The native kernel could not be built or loaded (no cmake, no compiler, a compile error)."""


@dataclass(frozen=True)
class NativeStatus:
    loaded: bool
    path: str | None
    why_not: str | None = None


_status: NativeStatus | None = None


def cache_dir() -> Path:
    base = os.environ.get("HWPRUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hwprune")
    return Path(base) / "native"


def library_path() -> Path:
    """Where the library for this torch, these sources and this processor's ISA lives."""
    from ..hardware.processor import this_processor
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((ROOT / name).read_bytes())
    # built with -march=native: a library built on another processor may use instructions this one lacks
    digest.update(" ".join(sorted(this_processor().isa)).encode())
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return cache_dir() / f"torch{torch.__version__}-abi{abi}-{digest.hexdigest()[:12]}" / LIBRARY


def build(*, quiet: bool = True) -> Path:
    """Configure and build with CMake in a temporary folder; rename the library into place."""
    missing = [name for name in SOURCES if not (ROOT / name).is_file()]
    if missing:
        raise NativeBuildError(f"the kernel sources {', '.join(missing)} are not under {ROOT}: install hwprune "
                               "from its source tree (pip install -e .) to build the native kernel")
    cmake = _tool("cmake")
    if cmake is None:
        raise NativeBuildError("cmake is not on PATH: install it (pip install cmake, or the system package), then "
                               "run python -m hwprune.sparse build")
    target = library_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    includes, libraries = _torch_paths()
    ninja = _tool("ninja")
    generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build.") as tmp:
        configure = [cmake, "-S", str(ROOT), "-B", tmp, *generator, "-DCMAKE_BUILD_TYPE=Release",
                     f"-DTORCH_INCLUDE_DIRS={';'.join(includes)}", f"-DTORCH_LIBRARY_DIRS={';'.join(libraries)}",
                     f"-DTORCH_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
        for step in (configure, [cmake, "--build", tmp, "--parallel"]):
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
                raise NativeBuildError(f"building the native kernel failed at `{' '.join(step[:3])}`: "
                                       + " | ".join(tail))
        built = Path(tmp) / LIBRARY
        staged = target.with_name(f".{LIBRARY}.{os.getpid()}")
        shutil.copy2(built, staged)
        os.replace(staged, target)  # atomic: a reader sees the old file or the whole new one
    return target


def _tool(name: str) -> str | None:
    """A build tool from this Python's environment (pip's cmake and ninja wheels), else PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which(name)


def _torch_paths() -> tuple:
    """torch.utils.cpp_extension's include and library folders; its import logs a warning about
    CUDA_HOME on a machine without the CUDA toolkit, which concerns CUDA builds only."""
    import logging
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
        return cpp_extension.include_paths(), cpp_extension.library_paths()
    finally:
        logger.setLevel(level)


def load(*, build_if_missing: bool = True) -> NativeStatus:
    """Load the native library once per process (building it first if allowed); never raises
    unless HWPRUNE_REQUIRE_NATIVE=1."""
    global _status
    if _status is not None:
        return _status
    try:
        path = library_path()
        if not path.is_file():
            if not build_if_missing:
                raise NativeBuildError(f"{path} is not built: run python -m hwprune.sparse build")
            path = build()
        torch.ops.load_library(str(path))
        _status = NativeStatus(True, str(path))
    except (NativeBuildError, OSError, RuntimeError) as e:
        if os.environ.get("HWPRUNE_REQUIRE_NATIVE") == "1":
            raise NativeBuildError(f"HWPRUNE_REQUIRE_NATIVE=1 but the native kernel is unavailable: {e}") from e
        _status = NativeStatus(False, None, " ".join(str(e).split()))
        warnings.warn(f"hwprune: the native BSR kernel is unavailable ({_status.why_not}); "
                      "hwprune::bsr_linear uses the PyTorch reference on the CPU", RuntimeWarning, stacklevel=2)
    return _status


def status() -> NativeStatus:
    """What load() found, loading on first call."""
    return load()
