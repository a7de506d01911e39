"""Scale: hwprune's pass on Llama-shaped decoders up to Llama-3-8B in bf16, with peak memory
measured from outside the process.

Each configuration runs in a process of its own: it builds a transformers LlamaForCausalLM from a
LlamaConfig with random weights (nothing downloads), then runs the pass on token ids (1, --tokens):
hwprune.slim(model, ids, ratio=R) or slim(model, ids, params=P), which traces, scores, plans, cuts
and verifies mask equivalence before it returns; or Torch-Pruning's MetaPruner build + step at the
same ratio (heads and MLP neurons, as hwprune cuts them without --prune-hidden). The parent reads the
child's peak resident set size from the kernel when it reaps it (os.wait4's ru_maxrss), and samples
/proc/PID/status VmRSS every 0.1 s for the time line; the child reports its wall times (the pass
alone, and the build), when each stage began with its own RSS then, and what it kept. slim's
in_place is left to choose (None) unless a configuration's name says in_place.

    nice -n 15 python benchmarks/bench_scale.py                       # the default configurations
    nice -n 15 python benchmarks/bench_scale.py --configs 1.5b_fp32_ratio --out /tmp/s.json
    python benchmarks/bench_scale.py --configs tiny_fp32_ratio --out /tmp/s.json    # a smoke run

An 8B run needs about 18 GB: it is refused (recorded as skipped) when /proc/meminfo's MemAvailable
says less than --min-free-8b (20.5 GB, read as meminfo's kB / 1e6, with this process's own 0.5 GB
already taken), so that it cannot push a shared machine into its OOM killer. A configuration known
to fail (its `blocked` says why) is not run unless --run-blocked. --params is priced from the traced
graph, as --ratio needs it anyway: before, it priced an in-memory ONNX export, which protobuf cannot
hold past 2 GB of weights (1.5b_bf16_params_in_place failed so, after peaking at 4.8x its weights).
Writes benchmarks/results/scale.json.

--baseline COMMIT times a configuration (--baseline-configs, default 1.5b_fp32_ratio) against
hwprune's code at another commit, for issue 17's "no slower than today": the script checks the
commit out into a temporary git worktree (removed at the end; or give the path of a checkout),
whose hwprune/ each baseline child imports in place of this checkout's. The two run in
alternating pairs (--pairs, baseline first), each in a process of its own with the same script,
model and call, so a machine whose speed drifts moves both alike; the result is the ratio of the
medians (MEASURING.md), under results["baseline"]. The baseline's commit is recorded as
"baseline_commit", not "commit": it is the reference, not the code the result measures.

    python benchmarks/bench_scale.py --baseline 6ae323c    # the defaults, then 1.5B fp32 against 6ae323c
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
RESULT = ROOT / "benchmarks" / "results" / "scale.json"
GOAL_MEMORY = 1.25  # peak RSS over the weights' bytes (issue 17)
GOAL_SECONDS = 300


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int = 128256


# Llama-3-8B's and Llama-3.2-1B's shapes (the 1B untied: 1.50B parameters); tiny: a smoke run
SHAPES = {"8b": Shape(4096, 32, 32, 8, 14336), "1.5b": Shape(2048, 16, 32, 8, 8192),
          "3b": Shape(3072, 28, 24, 8, 8192), "tiny": Shape(256, 2, 8, 2, 704, 4096)}


@dataclass(frozen=True)
class Config:
    shape: str
    dtype: str
    tool: str  # hwprune | torch_pruning
    ratio: float | None = None
    params: float | None = None
    in_place: bool | None = None  # slim's in_place: None lets it choose by the memory available
    blocked: str | None = None  # why it is not run (without --run-blocked): a known failure that would OOM


CONFIGS = {
    "8b_bf16_ratio": Config("8b", "bfloat16", "hwprune", ratio=0.3),
    "8b_bf16_params": Config("8b", "bfloat16", "hwprune", params=0.7),
    "1.5b_fp32_ratio": Config("1.5b", "float32", "hwprune", ratio=0.3),
    "1.5b_fp32_torch_pruning": Config("1.5b", "float32", "torch_pruning", ratio=0.3),
    "1.5b_fp32_params": Config("1.5b", "float32", "hwprune", params=0.7),
    "1.5b_fp32_ratio_in_place": Config("1.5b", "float32", "hwprune", ratio=0.3, in_place=True),
    "1.5b_bf16_ratio_in_place": Config("1.5b", "bfloat16", "hwprune", ratio=0.3, in_place=True),
    "1.5b_bf16_params_in_place": Config("1.5b", "bfloat16", "hwprune", params=0.7, in_place=True),
    "3b_bf16_ratio": Config("3b", "bfloat16", "hwprune", ratio=0.3),
    "3b_bf16_params": Config("3b", "bfloat16", "hwprune", params=0.7),
    "tiny_fp32_ratio": Config("tiny", "float32", "hwprune", ratio=0.3),
    "tiny_fp32_params": Config("tiny", "float32", "hwprune", params=0.7),
    "tiny_fp32_torch_pruning": Config("tiny", "float32", "torch_pruning", ratio=0.3),
}
DEFAULT = ("tiny_fp32_params", "1.5b_fp32_ratio", "1.5b_fp32_ratio_in_place", "1.5b_fp32_torch_pruning",
           "1.5b_bf16_params_in_place", "3b_bf16_ratio", "8b_bf16_ratio", "8b_bf16_params")


# ---------------------------------------------------------------- the child: one configuration

def llama(shape: Shape, dtype):
    """A LlamaForCausalLM of this shape with random weights, built on the meta device and then
    filled tensor by tensor, so that no float32 copy of a bf16 model is ever made."""
    import torch
    import transformers
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(
        hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, intermediate_size=shape.intermediate, vocab_size=shape.vocab,
        max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=False, use_cache=False,
        torch_dtype=dtype)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    model = model.to(dtype).to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # uniform draws of the std of HF's init (0.02; 0.1 about one for the RMSNorm gains): normal_
            # on bf16 is several times slower, and the pass reads only the magnitudes
            spread = 0.1 if name.endswith("norm.weight") else 0.02
            p.uniform_(-spread * 3**0.5, spread * 3**0.5, generator=g)
            if name.endswith("norm.weight"):
                p.add_(1.0)
    model.model.rotary_emb = LlamaRotaryEmbedding(config)  # its inv_freq buffer, computed (to_empty left it empty)
    return model.eval()


def llama_1_5b_bf16():
    """The 1.5b shape in bf16 with its token ids, as a factory spec for the CLI:
    PYTHONPATH=benchmarks hwprune slim bench_scale:llama_1_5b_bf16 --params 0.7 --in-place on -o OUT.pt"""
    import torch
    ids = torch.randint(1, SHAPES["1.5b"].vocab, (1, 16), generator=torch.Generator().manual_seed(1))
    return llama(SHAPES["1.5b"], torch.bfloat16), (ids,)


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())


def run_hwprune(model, ids, config: Config) -> dict:
    import hwprune
    budget = {"ratio": config.ratio} if config.ratio is not None else {"params": config.params}
    stages = {}
    t0 = time.perf_counter()

    def progress(stage, done, total):  # when each stage began, and the RSS then (the child's own view)
        if stage not in stages:
            stages[stage] = (round(time.perf_counter() - t0, 2), _own_rss())
    placed = {} if config.in_place is None else {"in_place": config.in_place}  # a baseline may predate in_place
    slim, report = hwprune.slim(model, ids, **budget, **placed, progress=progress)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "verify": report["verify"], "params_after": sum(p.numel() for p in slim.parameters()),
            "memory": report.get("memory"), "stages": stages, "model": slim,
            "code": str(Path(hwprune.__file__).resolve().parent.parent)}  # the checkout whose hwprune ran


def _own_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_torch_pruning(model, ids, config: Config) -> dict:
    """MetaPruner at the ratio, on heads and MLP neurons (the hidden size and lm_head kept, as
    hwprune keeps them without --prune-hidden), GQA heads as Torch-Pruning's LLM example gives them."""
    import torch_pruning as tp
    num_heads, ignored = {}, [model.lm_head, model.model.embed_tokens]
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            num_heads[m.q_proj] = model.config.num_attention_heads
            num_heads[m.k_proj] = num_heads[m.v_proj] = model.config.num_key_value_heads
            ignored.append(m.o_proj)  # its output is the hidden size
        elif name.endswith("mlp"):
            ignored.append(m.down_proj)
    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, ids, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=config.ratio, ignored_layers=ignored, num_heads=num_heads,
                                  prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=config.ratio,
                                  output_transform=lambda out: out.logits)
    pruner.step()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "verify": None, "params_after": sum(p.numel() for p in model.parameters()),
            "model": model}


def child(name: str, tokens: int, code: str | None = None) -> None:
    if code:  # a baseline: its hwprune is imported in place of this checkout's
        sys.path.insert(0, code)
    import torch
    config = CONFIGS[name]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = llama(SHAPES[config.shape], getattr(torch, config.dtype))
    build = time.perf_counter() - t0
    ids = torch.randint(1, SHAPES[config.shape].vocab, (1, tokens), generator=torch.Generator().manual_seed(1))
    wbytes, before = weight_bytes(model), sum(p.numel() for p in model.parameters())
    print(json.dumps({"phase": "built", "t": time.time()}), flush=True)
    run = run_hwprune if config.tool == "hwprune" else run_torch_pruning
    out = run(model, ids, config)
    out.pop("model")
    print(json.dumps({"phase": "done", "build_s": round(build, 2), "weights_bytes": wbytes, "params_before": before,
                      **out}, default=str), flush=True)


# ---------------------------------------------------------------- the parent: measure from outside

def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _sample(pid: int, samples: list, stop: threading.Event) -> None:
    """VmRSS of the child every 0.1 s: (seconds since start, bytes)."""
    t0 = time.time()
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append((round(time.time() - t0, 1), int(line.split()[1]) * 1024))
        except OSError:
            return
        stop.wait(0.1)


def measure(name: str, tokens: int, timeout: float, code: Path | None = None) -> dict:
    """Run one configuration in a child; its peak RSS from the kernel (wait4) and sampled.
    code: a checkout whose hwprune the child imports instead of this one's (a baseline)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--tokens", str(tokens),
           *(["--code", str(code)] if code else [])]
    load_before = [round(v, 2) for v in os.getloadavg()]  # the machine is shared: a busy one slows the run
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        samples, stop = [], threading.Event()
        sampler = threading.Thread(target=_sample, args=(proc.pid, samples, stop), daemon=True)
        sampler.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.daemon = True
        timer.start()
        # reaped here, not by Popen: wait4 gives the kernel's account of the child's peak RSS
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        timer.cancel()
        stop.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    lines = [json.loads(s) for s in out.splitlines() if s.startswith("{")]
    done = next((d for d in lines if d.get("phase") == "done"), None)
    row = {"config": asdict(CONFIGS[name]) | {"shape": asdict(SHAPES[CONFIGS[name].shape]),
                                               "shape_name": CONFIGS[name].shape},
           "peak_rss_bytes": usage.ru_maxrss * 1024, "sampled_peak_rss_bytes": max((b for _, b in samples), default=0),
           "exit_status": proc.returncode, "load_average_before": load_before,
           "load_average_after": [round(v, 2) for v in os.getloadavg()]}
    if done is None:
        row |= {"status": "failed", "error": err.strip().splitlines()[-1][:400] if err.strip() else "no output"}
        return row
    row |= {k: done.get(k) for k in ("build_s", "weights_bytes", "params_before", "params_after", "verify", "memory",
                                           "stages", "code")}
    row |= {"status": "ok", "seconds": round(done["seconds"], 2),
            "peak_over_weights": round(row["peak_rss_bytes"] / done["weights_bytes"], 3),
            "params_kept": round(done["params_after"] / done["params_before"], 4),
            "verified": bool(done["verify"] and done["verify"].get("passed")),
            "timeline": _thin(samples)}
    return row


def baseline_commit(code: Path) -> dict:
    """The commit of a baseline checkout, and whether its tracked files differ from it."""
    def git(*a):
        return subprocess.run(["git", "-C", str(code), *a], capture_output=True, text=True, check=True).stdout.strip()
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"baseline_commit": git("rev-parse", "HEAD"), "baseline_dirty": bool(changes)}


def against_baseline(name: str, code: Path, pairs: int, tokens: int, timeout: float) -> dict:
    """`pairs` alternating runs of configuration `name`, the baseline's code first, then this
    checkout's: each side's pass seconds, their medians and the ratio (this over the baseline)."""
    import statistics
    seconds = {"baseline": [], "this": []}
    failed = None
    for i in range(pairs):
        for side, where in (("baseline", code), ("this", None)):
            r = measure(name, tokens, timeout, where)
            print(f"  pair {i + 1}/{pairs} {side}: {r['status']} {r.get('seconds')}", flush=True)
            ran = r.get("code")
            if r["status"] != "ok" or not r["verified"]:
                failed = f"{side}: {r.get('error') or 'not verified'}"
            elif ran != str((code if where else ROOT).resolve()):
                failed = f"{side}: the child imported hwprune from {ran}, not {code if where else ROOT}"
            if failed:
                break
            seconds[side].append(r["seconds"])
        if failed:
            break
    out = {"path": str(code), **baseline_commit(code), "pairs": pairs, "seconds": seconds}
    if failed:
        return out | {"status": "failed", "error": failed}
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return out | {"status": "ok", "median_s": med, "ratio": round(med["this"] / med["baseline"], 4)}


def _thin(samples: list, n: int = 60) -> list:
    step = max(1, len(samples) // n)
    return samples[::step]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(DEFAULT), help=f"of {', '.join(CONFIGS)}")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--min-free-8b", type=float, default=20.5,
                   help="GB MemAvailable (meminfo kB / 1e6) an 8B run needs when it starts; this process holds 0.5 more")
    p.add_argument("--out", type=Path, default=RESULT)
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of --out that this run does not redo (each row names its commit and time)")
    p.add_argument("--run-blocked", action="store_true", help="also run the configurations known to fail")
    p.add_argument("--baseline", help="a commit (or the path of a checkout) of hwprune to time against (the module "
                   "docstring); its configurations run in alternating pairs after the others")
    p.add_argument("--baseline-configs", default="1.5b_fp32_ratio", help="the configurations timed against it")
    p.add_argument("--pairs", type=int, default=3, help="alternating baseline/this runs per baseline configuration")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--code", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.tokens, args.code)
        return 0
    if args.pairs < 1:
        p.error(f"--pairs {args.pairs}: give 1 or more")
    names = [n for n in args.configs.split(",") if n]
    against = [n for n in args.baseline_configs.split(",") if n] if args.baseline is not None else []
    unknown = [n for n in names + against if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    with checkout(args.baseline, p.error) as base:
        return run(args, names, against, base)


@contextmanager
def checkout(baseline: str | None, error):
    """The baseline's checkout: the path given, or the commit given checked out into a
    temporary git worktree, removed afterwards. error(message) where it is neither."""
    if baseline is None or Path(baseline).is_dir():
        if baseline is not None and not (Path(baseline) / "hwprune" / "__init__.py").is_file():
            error(f"--baseline {baseline}: no hwprune/__init__.py there; give a commit of this repository, or a "
                  "checkout of hwprune")
        yield None if baseline is None else Path(baseline)
        return
    known = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{baseline}^{{commit}}"],
                           capture_output=True, text=True)
    if known.returncode != 0:
        error(f"--baseline {baseline}: neither a folder nor a commit of {ROOT}; give a commit (git log) or a checkout")
    with tempfile.TemporaryDirectory(prefix="hwprune-baseline-") as tmp:
        where = Path(tmp) / "hwprune"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(where),
                        known.stdout.strip()], check=True)
        try:
            yield where
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False)


def run(args, names: list, against: list, base: Path | None) -> int:
    """Measure the configurations `names`, then time `against` against the baseline `base`."""
    import record
    how = record.capture(threads=None, batch=f"token ids (1, {args.tokens})", packages=("transformers",),
                         statistic="one run per configuration, each in its own process; peak RSS from os.wait4's "
                                   "ru_maxrss (the kernel's high-water mark of the child), VmRSS sampled every 0.1 s",
                         settings={"goal_peak_over_weights": GOAL_MEMORY, "goal_seconds": GOAL_SECONDS,
                                   "torch_threads": "torch's default (the machine's cores)"})
    kept = record.load(args.out).results if args.merge and args.out.is_file() else {}
    rows, baseline = dict(kept.get("rows", {})), dict(kept.get("baseline", {}))
    for name in names:
        free = mem_available()
        if CONFIGS[name].blocked and not args.run_blocked:
            rows[name] = {"config": asdict(CONFIGS[name]), "status": "not run", "why": CONFIGS[name].blocked}
        elif CONFIGS[name].shape == "8b" and free < args.min_free_8b * 1e6 * 1024:  # as /proc/meminfo's kB read
            rows[name] = {"config": asdict(CONFIGS[name]), "status": "skipped",
                          "why": f"MemAvailable {free / 1024e6:.1f} GB (meminfo's kB / 1e6) < {args.min_free_8b} GB"}
        else:
            rows[name] = measure(name, args.tokens, args.timeout) | {"mem_available_before_bytes": free}
        rows[name] |= {"commit": how.commit, "dirty": how.dirty, "started": how.started}
        r = rows[name]
        print(name, r["status"], {k: r.get(k) for k in ("seconds", "peak_over_weights", "params_kept", "verified")},
              flush=True)
        record.write(args.out, how, {"rows": rows, **({"baseline": baseline} if baseline else {})})
    for name in against:
        print(f"{name} against {args.baseline}", flush=True)
        baseline[name] = against_baseline(name, base, args.pairs, args.tokens, args.timeout) | {
            "commit": how.commit, "dirty": how.dirty, "started": how.started}
        b = baseline[name]
        print(name, b["status"], b.get("median_s"), b.get("ratio"), flush=True)
        record.write(args.out, how, {"rows": rows, "baseline": baseline})
    return 0


if __name__ == "__main__":
    sys.exit(main())
