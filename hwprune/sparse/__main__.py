"""python -m hwprune.sparse build [--force] | status

build: unless it is already built for this torch and these sources (or --force), compile the
native CPU kernel of hwprune::bsr_linear against the installed torch (CMake, about 5-50 s), load it, check it against the PyTorch reference, and print where it is. Without
cmake or a C++ compiler it prints why, says that the reference will run instead, and exits 0,
so that a set-up line that runs it still succeeds; HWPRUNE_REQUIRE_NATIVE=1 makes that exit 1.
status: say which kernel the op uses on this machine, building nothing.
"""
from __future__ import annotations

import os
import sys

import torch


def _self_check() -> float:
    from .bsr import to_bsr
    from .ops import reference

    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 96, generator=g) * (torch.rand(2, 3, generator=g) < 0.5).repeat_interleave(32, 0) \
        .repeat_interleave(32, 1)
    crow, col, values = to_bsr(w, 32)
    x = torch.randn(17, 96, generator=g)
    got = torch.ops.hwprune_native.bsr_linear(x, crow, col, values, None, 64)
    return float((got - reference(x, crow, col, values, None, 64)).abs().max())


def main(argv: list[str]) -> int:
    from . import native

    if argv not in (["build"], ["build", "--force"], ["status"]):
        print("usage: python -m hwprune.sparse build [--force] | status", file=sys.stderr)
        return 2
    if argv == ["status"]:
        path = native.library_path()
        print(f"native kernel: {'built at ' + str(path) if path.is_file() else 'not built'}")
        return 0
    try:
        path = native.library_path()
        if argv == ["build", "--force"] or not path.is_file():
            path = native.build()
        torch.ops.load_library(str(path))
    except native.NativeBuildError as e:
        print(f"hwprune: native kernel not built ({' '.join(str(e).split())}); hwprune::bsr_linear will use the "
              "PyTorch reference on the CPU", file=sys.stderr)
        return 1 if os.environ.get("HWPRUNE_REQUIRE_NATIVE") == "1" else 0
    print(f"hwprune: native kernel ready: {path} (max abs error vs the reference {_self_check():.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
