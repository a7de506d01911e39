"""Targets are data: one row per (device, precision), found by name or alias.

    name, runtime, device, precision, lattice rules (each with its reason), latency model,
    and for GPUs the spec the analytic model uses when the device is not attached.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import InputError
from .lattice import Lattice, LatticeRule, resolve
from . import processor

CPU_RULES = (
    LatticeRule(4, "128-bit vectors (SSE/NEON) hold 4 fp32 channels"),
    LatticeRule(8, "onnxruntime's NCHWc conv path wants C % 8 on AVX2; 127 channels run ~25% slower "
                   "than 128", requires="avx2"),
    LatticeRule(16, "onnxruntime's NCHWc block is 16 channels on AVX-512", requires="avx512f"),
)
FP16_RULES = (LatticeRule(8, "TensorRT/cuDNN pad fp16 channels to 8 for tensor cores: widths inside "
                             "a bucket of 8 are free"),)
INT8_RULES = (LatticeRule(32, "TensorRT pads int8 channels to 32"),)

LUT_HERE = "measured LUT (hwprune profile on this machine)"
LUT_OR_ANALYTIC = "LUT measured on the device (--lut), else analytic"


@dataclass(frozen=True)
class Target:
    name: str
    runtime: str
    device: str
    precision: str
    rules: tuple[LatticeRule, ...]
    latency_model: str
    gpu: str | None = None  # GPU_SPECS key for the analytic model
    aliases: tuple[str, ...] = ()
    local: bool = False  # measured on the machine hwprune runs on (so slim can measure it)

    @property
    def lattice(self) -> Lattice:
        if not any(r.requires for r in self.rules):  # a GPU's lattice does not depend on this host
            return Lattice(self.rules)
        return resolve(self.rules, processor.lattice_isa())

    def to_json(self) -> dict:
        lattice = self.lattice
        return {"name": self.name, "aliases": list(self.aliases), "runtime": self.runtime,
                "device": self.device, "precision": self.precision, "lattice": lattice.multiple,
                "lattice_rules": [{"multiple": r.multiple, "reason": r.reason} for r in lattice.rules],
                "latency_model": self.latency_model, "gpu_spec": self.gpu}


def _jetson(name, device, gpu, aliases=()):
    trt = "TensorRT"
    return (Target(name, trt, device, "fp16", FP16_RULES, LUT_OR_ANALYTIC, gpu, aliases),
            Target(f"{name}-int8", trt, device, "int8", INT8_RULES, LUT_OR_ANALYTIC, gpu,
                   tuple(f"{a}-int8" for a in aliases)))


TARGETS: tuple[Target, ...] = (
    Target("cpu", "onnxruntime (CPUExecutionProvider, ORT_ENABLE_ALL)", "this machine's CPU", "fp32",
           CPU_RULES, LUT_HERE, local=True),
    Target("cuda", "TensorRT where installed, else torch CUDA (CUDA graphs)", "the attached NVIDIA GPU", "fp16",
           FP16_RULES,
           "LUT measured on the GPU, else analytic (H100 SXM spec)", "h100-sxm"),
    Target("cuda-int8", "TensorRT", "the attached NVIDIA GPU", "int8", INT8_RULES,
           "LUT measured on the GPU, else analytic (H100 SXM spec)", "h100-sxm"),
    *_jetson("jetson-orin-nano", "Jetson Orin Nano 8GB", "orin-nano-8gb", ("jetson",)),
    *_jetson("jetson-orin-nano-super", "Jetson Orin Nano 8GB Super", "orin-nano-super"),
    *_jetson("jetson-orin-nx", "Jetson Orin NX 16GB", "orin-nx-16gb"),
    *_jetson("jetson-agx-orin", "Jetson AGX Orin 64GB", "agx-orin-64gb"),
)


def get_target(name: str) -> Target:
    for t in TARGETS:
        if name == t.name or name in t.aliases:
            return t
    names = [n for t in TARGETS for n in (t.name, *t.aliases)]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InputError(f"target {name!r} is unknown: {hint}choose one of {', '.join(names)} "
                     "(`hwprune targets` lists them)")
