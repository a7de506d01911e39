"""README blocks about speed: the suite's studies, landing a speedup, predicting latency, the
pass's own wall time, the sparse kernels, prune-then-quantize, scale and the exporters.

Each block is drawn from its result file alone (benchmarks/readme.py adds how the file was
made); the goals a block judges against are the constants beside it, as the issues state them.
"""
from __future__ import annotations

from .readme import asked, header, pct, row, table, verdict, x


@table("studies", None)
def studies(_) -> list[str]:
    """The suite's studies and their smoke runs, from benchmarks/studies.py."""
    from .studies import STUDIES, quick_set
    out = header("study", "script", "full run", "`--quick` arguments", "`--quick` on an idle 2-core machine")
    for st in STUDIES.values():
        full = f"~{st.full_minutes:g} min" if st.full_minutes else "not timed"
        shown = " ".join(a for a in st.quick or () if "{out}" not in a and a != "--out")
        quick = "—" if st.quick is None else f"`{shown}`" if shown else "the full run"
        minutes = "—" if st.quick is None else (
            f"~{st.quick_minutes:g} min ({'measured' if st.quick_measured else 'estimated'})"
            + ("" if st.in_quick_set else ", only when named"))
        out.append(row(st.name, f"[{st.script}]({st.script})", full, quick, minutes))
    total = sum(st.quick_minutes for st in quick_set())
    outside = [st.name for st in STUDIES.values() if st.quick is not None and not st.in_quick_set]
    return out + ["", f"`python -m benchmarks run --quick` runs the quick set: about {total:.0f} minutes on an idle "
                      f"2-core machine. Outside it, run only when named: {', '.join(outside) or 'none'}."]


LANDING_GOAL = (-0.07, 0.25)  # measured speedup within -7% / +25% of the request


def landing(results) -> tuple[int, int, list[float]]:
    """(rows within the goal, rows, their deviations)."""
    rows = results["rows"]
    devs = [r["deviation"] for r in rows if "measured_speedup" in r]
    inside = sum(LANDING_GOAL[0] <= d <= LANDING_GOAL[1] for d in devs)
    return inside, len(rows), devs


@table("speedup_accuracy", "speedup_accuracy.json")
def speedup_accuracy(results) -> list[str]:
    out = header("model", "asked", "measured", "deviation", "predicted from the table", "MAC reduction",
                 "ms, original -> slim", "landing tries", "plan time")
    for r in results["rows"]:
        if "measured_speedup" not in r:
            out.append(row(r["model"], asked(r["requested"]), "unreachable", "", "", "", "", "", ""))
            continue
        ms = r["measured_ms"]
        out.append(row(r["model"], asked(r["requested"]), x(r["measured_speedup"]), pct(r["deviation"]),
                       x(r["predicted_speedup"]), x(r["mac_reduction"]),
                       f"{ms['before']['median_ms']:.1f} -> {ms['after']['median_ms']:.1f}", len(r["attempts"]),
                       f"{r['plan_seconds']:.0f} s"))
    inside, n, devs = landing(results)
    spread = f"; deviations from {pct(min(devs))} to {pct(max(devs))}" if devs else ""
    return out + ["", f"Within the goal ({LANDING_GOAL[0]:.0%} / +{LANDING_GOAL[1]:.0%} of the request): "
                      f"{inside} of {n} rows, {verdict(inside == n)}{spread}."]


LATENCY_GOAL = {"median_abs_error": 0.10, "p90_abs_error": 0.20}


@table("latency_prediction", "latency_prediction.json")
def latency_prediction(results) -> list[str]:
    configs = results["summary"]["points"] // results["summary"]["models"] - 1
    out = header("model", f"prediction error at full width, then the {configs} random configurations")
    by_model: dict[str, list] = {}
    for r in results["rows"]:
        by_model.setdefault(r["model"], []).append(r["error"])
    out += [row(name, ", ".join(pct(e) for e in errors)) for name, errors in by_model.items()]
    s = results["summary"]
    met = all(s[k] <= goal for k, goal in LATENCY_GOAL.items())
    return out + ["", f"Over the {s['points']} points: **median absolute error {s['median_abs_error']:.1%}, 90th "
                      f"percentile {s['p90_abs_error']:.1%}, max {s['max_abs_error']:.1%}** (goal: median ≤ "
                      f"{LATENCY_GOAL['median_abs_error']:.0%}, p90 ≤ {LATENCY_GOAL['p90_abs_error']:.0%}: "
                      f"{verdict(met)}); uncalibrated (scale 1): {s['uncalibrated_median_abs_error']:.1%} and "
                      f"{s['uncalibrated_p90_abs_error']:.1%}."]


# issue 18: the pass without verification no slower than Torch-Pruning's build + step; the
# whole verified slim at most twice it
PASS_GOALS = {"ratio_unverified_over_tp": 1.0, "ratio_hwprune_over_tp": 2.0}
STAGES = ("check_s", "trace_s", "group_s", "slim_setup_s", "score_and_plan_s", "cut_s", "verify_s")


def spread(t: dict | None) -> str:
    return "not measured" if not t else f"{t['median_s']:.2f} ({t['min_s']:.2f}–{t['max_s']:.2f})"


def pass_ratio(m: dict, key: str) -> str:
    v = m.get(key)
    return "not measured" if v is None else f"{v:.2f}x, {verdict(v <= PASS_GOALS[key])}"


def pass_goals(results) -> dict[str, bool | None]:
    """Each goal: met on every model, not met on one, None where a model did not measure it."""
    out = {}
    for key, goal in PASS_GOALS.items():
        values = [m.get(key) for m in results["models"].values()]
        out[key] = None if None in values else all(v <= goal for v in values)
    return out


@table("pass_speed", "pass_speed.json")
def pass_speed(results) -> list[str]:
    out = header("model", "Torch-Pruning build + step", "hwprune without verification",
                 f"its ratio to TP (goal ≤ {PASS_GOALS['ratio_unverified_over_tp']:g}x)", "hwprune, the whole verified slim",
                 f"its ratio to TP (goal ≤ {PASS_GOALS['ratio_hwprune_over_tp']:g}x)", "params after: hwprune / TP")
    for name, m in results["models"].items():
        h, tp = m["hwprune"], m["torch_pruning"]
        out.append(row(name, spread(tp), spread(h.get("unverified")), pass_ratio(m, "ratio_unverified_over_tp"),
                       spread(h), pass_ratio(m, "ratio_hwprune_over_tp"),
                       f"{h['params_after'] / 1e6:.3g}M / {tp['params_after'] / 1e6:.3g}M"))
    goals = pass_goals(results)
    n = len(results["models"])
    return out + ["", f"Over the {n} model{'s' if n != 1 else ''}: the pass without verification no slower than "
                      f"Torch-Pruning, {verdict(goals['ratio_unverified_over_tp'])}; the whole verified slim at most "
                      f"{PASS_GOALS['ratio_hwprune_over_tp']:g}x it, {verdict(goals['ratio_hwprune_over_tp'])}."]


@table("pass_speed_stages", "pass_speed.json")
def pass_speed_stages(results) -> list[str]:
    out = header("model", *(s.removesuffix("_s").replace("_", " ") for s in STAGES), "sum")
    for name, m in results["models"].items():
        stages = m["hwprune"].get("stages_median_s")
        if not stages:
            out.append(row(name, *["not measured"] * (len(STAGES) + 1)))
            continue
        total = sum(stages.get(s, 0.0) for s in STAGES)
        out.append(row(name, *(f"{stages[s]:.2f} ({stages[s] / total:.0%})" if s in stages else "not measured"
                               for s in STAGES), f"{total:.2f}"))
    return out


SPARSE_GOALS = {"speedup_at_90": 5.0, "break_even_at": 0.6}  # 5x dense at 90%; no slower than dense from 60%
SPARSE_CONTENDERS = {"hwprune_native_bsr": "hwprune native BSR", "torch_bsr": "torch BSR (`bsr @ x.T`)",
                     "torch_csr": "torch CSR (`csr @ x.T`)"}


def sparse_native(results, level: float) -> list[tuple[str, float]]:
    return [(f"{r['model']} {r['in']}x{r['out']}, {r['batch'] * r['tokens']} tokens",
             r["speedup_vs_dense"]["hwprune_native_bsr"]) for r in results["rows"] if abs(r["sparsity"] - level) < 1e-9]


@table("sparse", "sparse_cpu.json")
def sparse(results) -> list[str]:
    s = results["summary"]
    levels = list(s["median_over_dense"]["hwprune_native_bsr"])
    out = header("block sparsity", *(f"{float(level):.0%}" for level in levels))
    for key, label in SPARSE_CONTENDERS.items():
        cells = []
        for level in levels:
            cell = x(s["median_over_dense"][key][level])
            if key == "hwprune_native_bsr":  # the worst row beside the median; 90% is the goal's level
                cell = f"{cell} ({x(s['native_over_dense_worst'][level])})"
                cell = f"**{cell}**" if level == "0.90" else cell
            cells.append(cell)
        out.append(row(label, *cells))
    return out + ["", *sparse_verdicts(results, levels)]


def sparse_verdicts(results, levels: list[str]) -> list[str]:
    goal = SPARSE_GOALS["speedup_at_90"]
    at90 = sparse_native(results, 0.9)
    slow = [f"{name} {x(v)}" for name, v in at90 if v < goal]
    med = results["summary"]["median_over_dense"]["hwprune_native_bsr"]["0.90"]
    out = [f"- At least {goal:g}x dense at 90%: by the median of the rows {verdict(med >= goal)}; in "
           f"{len(at90) - len(slow)} of {len(at90)} rows" + (f" (not: {'; '.join(slow)})." if slow else ".")]
    for level in (float(v) for v in levels if float(v) <= SPARSE_GOALS["break_even_at"]):
        rows = sparse_native(results, level)
        even = sum(v >= 1 for _, v in rows)
        out.append(f"- No slower than dense at {level:.0%}: in {even} of {len(rows)} rows, "
                   f"{verdict(even == len(rows))} (worst {x(min(v for _, v in rows))}).")
    return out


def near_one(v: float) -> str:
    """3 decimals, 4 where 3 would round a figure below 1 up to 1.000."""
    return f"{v:.4f}" if v < 1 and round(v, 3) == 1 else f"{v:.3f}"


# the runs were on a shared machine: two stages whose median speedups differ by less than this are
# read as level (interleaved medians held to about this much between repeated runs)
PIPELINE_LEVEL = 0.10
PIPELINE_MODEL = {"resnet50": "resnet50", "minilm": "MiniLM"}
QUANTIZER = {"static": "quantize_static", "dynamic": "quantize_dynamic"}


@table("pipeline", "pipeline.json")
def pipeline(results) -> list[str]:
    out = header("model", "stage", "ms", "speedup", "ONNX MB", "agreement with the original")
    for r in results["rows"]:
        agreement = "logits cosine" if r["quantization"] == "static" else "embedding cosine"
        labels = {"slim": f"slim (`SlimPass(target=\"{r['target']}\", speedup={r['slim']['asked_speedup']:g})`)",
                  "slim + INT8": f"slim + INT8 (`{QUANTIZER[r['quantization']]}`)"}
        for s in r["stages"]:
            agree = "—" if s["stage"] == "original" else f"{agreement} {near_one(s['agreement_with_original']['cosine'])}"
            out.append(row(PIPELINE_MODEL.get(r["model"], r["model"]), labels.get(s["stage"], s["stage"]),
                           f"{s['median_ms']:.1f} ({s['min_ms']:.1f}–{s['max_ms']:.1f})", x(s["speedup"]),
                           f"{s['file_mb']:.1f}", agree))
    return out + ["", *(pipeline_reading(r) for r in results["rows"])]


def pipeline_reading(r: dict) -> str:
    """Where the slim model landed against the request and the plan, and whether INT8 added to it."""
    st = {s["stage"]: s for s in r["stages"]}
    slim, both = st["slim"], st["slim + INT8"]
    before, after = r["slim"]["predicted_ms"]
    gain = both["speedup"] / slim["speedup"] - 1
    int8 = ("INT8 adds to the cut" if gain > PIPELINE_LEVEL else "level with the slim model: INT8 adds nothing "
            "measurable" if gain >= -PIPELINE_LEVEL else "slower than the slim model alone")
    return (f"- {PIPELINE_MODEL.get(r['model'], r['model'])}: asked {asked(r['slim']['asked_speedup'])}, the slim "
            f"model measured {x(slim['speedup'])} (the plan predicted {before:.1f} -> {after:.1f} ms; measured "
            f"{st['original']['median_ms']:.1f} -> {slim['median_ms']:.1f}); slim + INT8 {x(both['speedup'])}, "
            f"{int8} (level: within {PIPELINE_LEVEL:.0%}).")


# bench_scale.py's settings name the same goals; these are the ones the README judges by
SCALE_GOALS = {"seconds": 300, "peak_over_weights": 1.25}  # the 8B bf16 pass, verified


@table("scale", "scale.json")
def scale(results) -> list[str]:
    out = header("configuration", "tool", "weights", "pass time", "peak RSS / weights", "in place", "verified",
                 "params kept")
    for name, r in results["rows"].items():
        tool = "hwprune" if r["config"]["tool"] == "hwprune" else "Torch-Pruning"
        if r["status"] != "ok":
            why = r.get("why") or r.get("error") or ""
            out.append(row(name, tool, "—", r["status"], "—", "—", "—", why[:80].replace("|", "/")))
            continue
        memory = r.get("memory") or {}
        placed = "—" if not memory else "yes" if memory.get("in_place") else "no"
        out.append(row(name, tool, f"{r['weights_bytes'] / 2**30:.2f} GiB", f"{r['seconds']:.0f} s",
                       x(r["peak_over_weights"]), placed, "yes" if r["verified"] else "no", f"{r['params_kept']:.3f}"))
    eight = {k: r for k, r in results["rows"].items() if k.startswith("8b")}
    against = [baseline_reading(k, b) for k, b in results.get("baseline", {}).items()]
    return out + ["", *(scale_reading(k, r) for k, r in eight.items()), *against]


def baseline_reading(name: str, b: dict) -> str:
    """A configuration timed in alternating pairs against hwprune at another commit: no slower
    than it is the goal (issue 17: the 1.5B fp32 pass no slower than when the issue was filed)."""
    head = f"- {name} against hwprune at {b['baseline_commit'][:7]}"
    if b["status"] != "ok":
        return f"{head}: {verdict(False)}, {b['status']}: {b.get('error', '')}."
    this, base = b["median_s"]["this"], b["median_s"]["baseline"]
    return (f"{head}, {b['pairs']} alternating pairs, each run in a process of its own: median {this:.1f} s against "
            f"{base:.1f} s, {x(b['ratio'])} its time (goal: no slower, ≤ 1.00x): {verdict(b['ratio'] <= 1.0)}.")


def scale_reading(name: str, r: dict, short: bool = False) -> str:
    cfg = r["config"]
    budget = f"`--ratio {cfg['ratio']:g}`" if cfg.get("ratio") else f"`--params {cfg.get('params')}`"
    if r["status"] != "ok":
        why = "" if short else f": {r.get('why') or r.get('error') or ''}"
        return f"- {name} ({budget}): {verdict(False)}, {r['status']}{why}."
    met = r["verified"] and r["seconds"] <= SCALE_GOALS["seconds"] and \
        r["peak_over_weights"] <= SCALE_GOALS["peak_over_weights"]
    starts = sorted(r.get("stages", {}).items(), key=lambda kv: kv[1][0])
    ends = [t for _, (t, _) in starts[1:]] + [r["seconds"]]
    stages = ", ".join(f"{k} {end - t:.0f} s" for (k, (t, _)), end in zip(starts, ends))
    why = (r.get("memory") or {}).get("why")
    return (f"- {name} ({budget}): {'verified' if r['verified'] else 'not verified'} in {r['seconds']:.0f} s "
            f"(goal ≤ {SCALE_GOALS['seconds']} s), peak {x(r['peak_over_weights'])} its weights (goal ≤ "
            f"{SCALE_GOALS['peak_over_weights']:g}x): {verdict(met)}." + (f" By stage: {stages}." if stages else "")
            + (f" In place because {why}." if why and r["memory"].get("in_place") else ""))


EXPORTER = {"torchscript": "TorchScript", "dynamo": "dynamo",
            "auto": "auto (TorchScript, dynamo where it failed; computed, not run)"}


@table("onnx_zoo_survey", "onnx_zoo_survey.json")
def onnx_zoo_survey(results) -> list[str]:
    out = header("exporter", "exported and checked", "failed", "median s per model", "total s")
    for key, label in EXPORTER.items():
        s = results["summary"][key]
        failed = f"{s['failed']} ({', '.join(s['failed_models'])})" if s["failed"] else "0"
        out.append(row(label, s["ok"], failed, f"{s['per_model_s']['median']:.2f}", f"{s['total_s_all']:.1f}"))
    return out + ["", f"The file holds {len(results['models'])} models; a model missing from it was not surveyed "
                      "in that run."]

