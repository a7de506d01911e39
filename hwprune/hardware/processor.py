"""What the machine is: the processor name and the ISA flags that change which kernels run.

A CPU latency table is only valid on the processor (ISA) and runtime version it was measured
with, so both are part of every table's identity."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

# the flags onnxruntime's MLAS dispatches on (x86) or that change vector width (arm)
KERNEL_FLAGS = ("sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
                "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")


@dataclass(frozen=True)
class Processor:
    name: str
    isa: frozenset[str]

    def to_json(self) -> dict:
        return {"name": self.name, "isa": sorted(self.isa)}


@functools.cache
def this_processor() -> Processor:
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model", "hardware") and name in ("", platform.machine()):
                name = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    return Processor(name, frozenset(flags & set(KERNEL_FLAGS)))


def lattice_isa() -> frozenset[str]:
    """The ISA flags a target's lattice is resolved with: the host's (tests pin them here)."""
    return this_processor().isa


def onnxruntime_version() -> str:
    import onnxruntime
    return onnxruntime.__version__
