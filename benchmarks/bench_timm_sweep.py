"""Coverage of the timm zoo: one model per architecture family, slimmed at ratio 0.5 and verified.

A family is a timm model module (timm.list_modules(): resnet, nfnet, mlp_mixer, ...). Its model
is the variant with the fewest parameters, at most --max-params (60M), leaving out timm's own
test_* configurations (unit-test sizes, not architectures anyone ships); random weights
(pretrained=False), BN affine parameters randomized and statistics calibrated on random data
(tests/zoo_util.realistic: torchvision-style init leaves deep nets with ~0 outputs, and a
relative-error check on those has no teeth), its default input size, batch 1.

Per family, in a process of its own (a hang or a crash costs that family only, --timeout):
- hwprune.slim(model, x, ratio=0.5), which verifies mask equivalence before it returns; where
  that run fails or keeps more than 60% of the parameters, again with prune_hidden=True (checked by
  output fidelity). Recorded: ok or the error's type and message, the parameter ratio kept, the
  verification, the frozen reasons (channels per reason), seconds; and an independent check that
  the slim model runs on a fresh input and gives the original's output shapes (`wrong` if not).
- Torch-Pruning 1.6 MagnitudePruner (L2, pruning_ratio 0.5, the classifier left whole) on the
  same model: the parameter ratio kept and whether its model still runs with the same output
  shapes, or its error. hwprune's row is printed before Torch-Pruning runs, so a process that
  dies in Torch-Pruning (killed for memory, as on MaxViT) or runs out of time there (FocalNet's
  dependency graph) keeps hwprune's result and records Torch-Pruning's crash or timeout.

The result file is rewritten atomically after every family, so a run resumes where it stopped
(families already in it are skipped unless --fresh).

    nice -n 15 python benchmarks/bench_timm_sweep.py                      # every family
    python benchmarks/bench_timm_sweep.py --families nfnet,mlp_mixer --out /tmp/t.json
    python benchmarks/bench_timm_sweep.py --limit 10 --jobs 2 --no-tp
    python benchmarks/bench_timm_sweep.py --families maxxvit --memory-gb 12  # Torch-Pruning: MemoryError
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]  # this checkout's hwprune
RESULT = ROOT / "benchmarks" / "results" / "timm_sweep.json"
CUT_GOAL = 0.4  # a family "cuts" when at least 40% of its parameters go
BOUNDARY = ("model input", "model output")


# ---- one family, in its own process ---------------------------------------------------------

def family_models(family: str) -> list[str]:
    import timm
    from timm.models import _registry
    names = [n for n in timm.list_models() if _registry._model_to_module.get(n) == family]
    return [n for n in names if not n.startswith("test_")]


def param_count(name: str) -> int | None:
    """Parameters of a timm model built on the meta device (no memory, no init); None where its
    constructor cannot run there."""
    import timm
    import torch
    try:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False)
        return sum(p.numel() for p in m.parameters())
    except Exception:  # noqa: BLE001 - a constructor that computes on its tensors
        return None


def smallest(family: str, max_params: int) -> tuple[str | None, dict]:
    counts = {n: param_count(n) for n in family_models(family)}
    fits = sorted((c, n) for n, c in counts.items() if c is not None and c <= max_params)
    return (fits[0][1] if fits else None), counts


def frozen_reasons(report: dict) -> dict:
    """{reason: channels frozen for it}, model input and output aside, most channels first."""
    counts = Counter()
    for g in report["groups"]:
        if g["frozen"] and g["frozen"] not in BOUNDARY:
            counts[g["frozen"]] += g["width_before"]
    return dict(counts.most_common())


def shapes(out) -> list:
    import torch
    return [list(t.shape) for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def run_slim(model, x, fresh, before_shapes, **kw) -> dict:
    import torch

    import hwprune
    t0 = time.perf_counter()
    try:
        slim, report = hwprune.slim(model, x, ratio=0.5, **kw)
    except Exception as e:  # noqa: BLE001 - every error is the finding
        return {"status": "error", "error": f"{type(e).__name__}: {str(e)[:1200]}",
                "where": traceback.format_exc().splitlines()[-3:-1], "seconds": round(time.perf_counter() - t0, 1)}
    seconds = round(time.perf_counter() - t0, 1)
    p = report["params"]
    row = {"status": "ok", "seconds": seconds, "params_before": p["before"], "params_after": p["after"],
           "kept": round(p["after"] / p["before"], 4), "verify": {k: report["verify"].get(k) for k in
                                                                  ("mode", "passed", "max_rel_err", "min_cosine", "batches")},
           "groups": len(report["groups"]), "frozen_reasons": frozen_reasons(report)}
    try:
        with torch.inference_mode():
            after = shapes(slim(*fresh))
        row["wrong"] = after != before_shapes or not report["verify"]["passed"]
        row["why_wrong"] = None if not row["wrong"] else f"output shapes {after} against {before_shapes}"
    except Exception as e:  # noqa: BLE001
        row["wrong"], row["why_wrong"] = True, f"the slim model fails on a fresh input: {type(e).__name__}: {e}"[:600]
    return row


def run_torch_pruning(model, x, fresh, before_shapes) -> dict:
    import torch
    import torch_pruning as tp
    t0 = time.perf_counter()
    try:
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        ignored = [m for m in ([head] if isinstance(head, torch.nn.Module) else []) if any(True for _ in m.parameters())]
        before = sum(p.numel() for p in model.parameters())
        pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=0.5, ignored_layers=ignored)
        pruner.step()
        after = sum(p.numel() for p in model.parameters())
        row = {"status": "ok", "kept": round(after / before, 4)}
        with torch.inference_mode():
            got = shapes(model(*fresh))
        if got != before_shapes:
            row.update(status="broken", error=f"output shapes {got} against {before_shapes}")
    except Exception as e:  # noqa: BLE001
        row = {"status": "error", "error": f"{type(e).__name__}: {str(e)[:600]}"}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def one_family(family: str, max_params: int, with_tp: bool, emit=lambda row: None) -> dict:
    """The family's row; emit(row) is called with hwprune's part before Torch-Pruning runs."""
    import copy

    import timm
    import torch
    from zoo_util import realistic
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    name, counts = smallest(family, max_params)
    row = {"family": family, "model": name, "variants": len(counts),
           "uncounted": sorted(n for n, c in counts.items() if c is None)}
    if name is None:
        small = min((c for c in counts.values() if c), default=None)
        row.update(status="skipped", error=f"no variant of at most {max_params / 1e6:g}M parameters"
                   + (f" (the smallest has {small / 1e6:.1f}M)" if small else " (none could be counted)"))
        return row
    torch.manual_seed(0)
    try:
        model = timm.create_model(name, pretrained=False).eval()
        size = model.pretrained_cfg.get("input_size", (3, 224, 224))
        x = (torch.randn(1, *size, generator=torch.Generator().manual_seed(0)),)
        fresh = (torch.randn(1, *size, generator=torch.Generator().manual_seed(1)),)
        realistic(model, x)
        with torch.inference_mode():
            before = shapes(model(*x))
    except Exception as e:  # noqa: BLE001
        row.update(status="error", error=f"building or running the original failed: {type(e).__name__}: {str(e)[:600]}")
        return row
    row.update(input_size=list(size), params=sum(p.numel() for p in model.parameters()),
               plain=run_slim(model, x, fresh, before))
    if row["plain"]["status"] != "ok" or row["plain"]["kept"] > 1 - CUT_GOAL:
        row["hidden"] = run_slim(model, x, fresh, before, prune_hidden=True)
    row["status"] = row["plain"]["status"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    if with_tp:
        emit(row)
        row["torch_pruning"] = run_torch_pruning(copy.deepcopy(model), x, fresh, before)
    return row


# ---- the sweep ------------------------------------------------------------------------------

def best(row: dict) -> dict | None:
    """The run that counts for the family: the plain one, or prune_hidden's where it verified and cut more."""
    runs = [r for r in (row.get("plain"), row.get("hidden")) if r and r["status"] == "ok" and not r["wrong"]]
    return min(runs, key=lambda r: r["kept"]) if runs else None


def summary(rows: dict) -> dict:
    # a family whose own status is timeout ran out of time before hwprune's row was printed: hwprune's
    # failure, counted as one (a timeout in Torch-Pruning after it is Torch-Pruning's: child, _row)
    done = [r for r in rows.values() if r.get("status") != "skipped"]
    timeouts = sorted(r["family"] for r in rows.values() if r.get("status") == "timeout")
    ok = [r for r in done if best(r) is not None and best(r)["kept"] < 1]
    cut = [r for r in ok if best(r)["kept"] <= 1 - CUT_GOAL]
    wrong = [r["family"] for r in done for k in ("plain", "hidden") if r.get(k, {}).get("wrong")]
    tp = [r["torch_pruning"] for r in done if "torch_pruning" in r]
    tp_ok = [t for t in tp if t["status"] == "ok"]
    reasons = Counter()
    for r in done:
        run = r.get("plain") or {}
        for why in run.get("frozen_reasons", {}):
            reasons[why.split(" at ")[0][:80]] += 1
    return {"families": len(rows), "skipped": len(rows) - len(done), "swept": len(done),
            "timeouts": timeouts,
            "slim_and_verify": len(ok), "cut_40": len(cut),
            "slim_and_verify_pct": round(100 * len(ok) / max(len(done), 1), 1),
            "cut_40_pct": round(100 * len(cut) / max(len(done), 1), 1),
            "used_prune_hidden": sum(1 for r in cut if best(r) is r.get("hidden")),
            "errors": sorted(r["family"] for r in done if best(r) is None), "wrong": sorted(set(wrong)),
            "torch_pruning": {"ran": len(tp), "ok": len(tp_ok), "broken": sum(t["status"] == "broken" for t in tp),
                              "errors": sum(t["status"] not in ("ok", "broken") for t in tp),  # crash, timeout too
                              "cut_40": sum(t["kept"] <= 1 - CUT_GOAL for t in tp_ok)},
            "families_freezing_for": dict(reasons.most_common(25))}


def child(family: str, args) -> dict:
    """one_family in a process of its own; a timeout or a crash is that family's result."""
    cmd = [sys.executable, __file__, "--one", family, "--max-params", str(args.max_params)] + (["--no-tp"] if args.no_tp else [])
    t0 = time.perf_counter()
    cap = int(args.memory_gb * 2**30)

    def limit():  # in the child: past the cap an allocation raises MemoryError, where the OOM killer would end it
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False,
                              env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
                              preexec_fn=limit if cap else None)
    except subprocess.TimeoutExpired as e:  # hwprune's row, where printed before the time ran out, stands
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return _row(family, out, t0, "timeout", f"no result within {args.timeout} s")
    rc = done.returncode
    if rc == 0:
        return _row(family, done.stdout, t0)
    return _row(family, done.stdout, t0, "crash",
                f"killed by signal {-rc}" if rc < 0 else f"exit {rc}: {done.stderr.strip()[-600:]}")


def _row(family: str, stdout: str, t0: float, status: str | None = None, error: str = "") -> dict:
    """The last row the child printed. Where it stopped early (status: crash or timeout), a row it
    printed is hwprune's part, printed before Torch-Pruning ran, and Torch-Pruning gets the status;
    where it printed none, the family does."""
    last = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    seconds = round(time.perf_counter() - t0, 1)
    if not last:
        return {"family": family, "status": status or "crash", "error": error or "exited without a row",
                "seconds": seconds}
    row = json.loads(last[-1])
    if status is not None:
        row["torch_pruning"] = {"status": status, "error": error, "seconds": round(seconds - row["seconds"], 1)}
    return row


def families(args) -> list[str]:
    import timm
    chosen = args.families.split(",") if args.families else timm.list_modules()
    unknown = sorted(set(chosen) - set(timm.list_modules()))
    if unknown:
        raise SystemExit(f"--families: no timm module named {', '.join(unknown)}; "
                         "python -c 'import timm; print(timm.list_modules())' lists them")
    if args.order == "random":  # a run cut short is then a random sample of the families, not the a-to-c ones
        import random
        chosen = sorted(chosen)
        random.Random(0).shuffle(chosen)
    return chosen[: args.limit] if args.limit else chosen


def load_rows(path: Path, fresh: bool) -> tuple[dict, list]:
    import record
    if fresh or not path.exists():
        return {}, []
    loaded = record.load(path)
    return dict(loaded.results.get("rows", {})), list(loaded.results.get("runs", []))


def line(row: dict) -> str:
    b = best(row)
    if b is None:
        return f"{row['family']:<28} {row.get('model') or '-':<32} {row['status']}: {(row.get('error') or row.get('plain', {}).get('error') or '')[:120]}"
    tp = row.get("torch_pruning", {})
    tp_txt = f"TP {tp['kept']:.2f}" if tp.get("status") == "ok" else f"TP {tp.get('status', '-')}"
    how = " (prune_hidden)" if b is row.get("hidden") else ""
    return f"{row['family']:<28} {row['model']:<32} kept {b['kept']:.2f}{how}, {row.get('seconds', 0):.0f} s, {tp_txt}"


def sweep(args) -> None:
    import record
    from rich.console import Console
    console = Console(highlight=False)
    how = record.capture(threads=1, batch=1, statistic="one run per family", packages=("timm",), settings={
        "ratio": 0.5, "importance": "l2", "max_params": args.max_params, "timeout_s": args.timeout,
        "jobs": args.jobs, "torch_pruning": not args.no_tp, "order": args.order, "memory_gb": args.memory_gb,
        "model": "per timm module, the variant with the fewest parameters (meta-device count), test_* left out"})
    rows, runs = load_rows(args.out, args.fresh)
    runs.append(how.to_json())
    todo = [f for f in families(args) if f not in rows]
    console.print(f"{len(todo)} families to run, {len(rows)} already in {args.out}")

    def write():
        record.write(args.out, how, {"rows": dict(sorted(rows.items())), "summary": summary(rows), "runs": runs})

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each family is written as soon as it is done
        running = [pool.submit(child, f, args) for f in todo]
        for i, done in enumerate(as_completed(running), 1):
            row = done.result()
            row["commit"] = how.commit
            rows[row["family"]] = row
            write()
            console.print(f"[{i}/{len(todo)}] {line(row)}")
    s = summary(rows)
    console.print(f"{s['swept']} families swept ({s['skipped']} skipped): {s['slim_and_verify_pct']}% slim and verify, "
                  f"{s['cut_40_pct']}% cut at least 40%, wrong: {s['wrong'] or 'none'}; {args.out}")


def table(rows: dict) -> str:
    """The result as the markdown table of benchmarks/README.md (python benchmarks/bench_timm_sweep.py --table)."""
    out = ["| family | model | params | hwprune kept | how | frozen most for | Torch-Pruning kept |",
           "|---|---|---|---|---|---|---|"]
    for fam, r in sorted(rows.items()):
        if r.get("status") == "skipped":
            continue
        b, plain = best(r), r.get("plain") or {}
        if b is None:
            err = (plain.get("error") or r.get("error") or "").replace("|", "/")
            kept, how = "fails", err[:110]
        else:
            kept = f"{b['kept']:.2f}"
            how = "prune_hidden (fidelity)" if b is r.get("hidden") else "mask equivalence"
        why = next(iter(plain.get("frozen_reasons", {})), "").replace("|", "/")[:90]
        tp = r.get("torch_pruning") or {}
        tp_txt = f"{tp['kept']:.2f}" if tp.get("status") == "ok" else (tp.get("status") or "-") + (
            f": {tp.get('error', '')[:60]}" if tp.get("error") else "")
        params = f"{r['params'] / 1e6:.1f}M" if r.get("params") else "-"
        out.append(f"| {fam} | {r.get('model') or '-'} | {params} | {kept} | {how} | {why} | {tp_txt.replace('|', '/')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", help="comma-separated timm modules (default: all of timm.list_modules())")
    ap.add_argument("--limit", type=int, help="only the first N families (in --order)")
    ap.add_argument("--order", choices=("random", "name"), default="random",
                    help="the order families run in: shuffled with seed 0 (default), or by name")
    ap.add_argument("--max-params", type=int, default=60_000_000)
    ap.add_argument("--jobs", type=int, default=1, help="families run at once, one process each, one thread each")
    ap.add_argument("--timeout", type=int, default=900, help="seconds a family may take")
    ap.add_argument("--memory-gb", type=float, default=0,
                    help="cap each family's address space, GiB (Torch-Pruning on MaxViT grew past 23 GB); 0: none")
    ap.add_argument("--no-tp", action="store_true", help="leave Torch-Pruning out")
    ap.add_argument("--fresh", action="store_true", help="run every family again instead of resuming")
    ap.add_argument("--out", type=Path, default=RESULT)
    ap.add_argument("--table", action="store_true", help="print --out's figures and table (markdown), run nothing")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the child: one family, its row as JSON on stdout
    args = ap.parse_args()
    if args.table:
        import record
        rows = record.load(args.out).results["rows"]
        print(json.dumps(summary(rows), indent=1))
        print(table(rows))
        return
    if args.one:
        print(json.dumps(one_family(args.one, args.max_params, not args.no_tp,
                                    emit=lambda row: print(json.dumps(row), flush=True))))
        return
    sweep(args)


if __name__ == "__main__":
    main()
