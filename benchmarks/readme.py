"""benchmarks/README.md's results tables, generated from the JSON in benchmarks/results.

Each table sits between two marker comments,

    <!-- BEGIN GENERATED name: python -m benchmarks readme -->
    ...
    <!-- END GENERATED name -->

and is written by the function registered under that name from its result file alone: no
figure between the markers is typed by hand. tests/test_benchmarks_readme.py fails when the
committed README differs from what this writes, so a result and the README's table cannot
drift apart. Text outside the markers is left as it is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import record

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
RESULTS = HERE / "results"
BLOCK = re.compile(r"(<!-- BEGIN GENERATED (?P<name>[\w-]+): python -m benchmarks readme -->\n)"
                   r"(?P<body>.*?)"
                   r"(<!-- END GENERATED (?P=name) -->)", re.S)


@dataclass(frozen=True)
class Table:
    name: str
    result: str | None  # file in benchmarks/results (None: rendered from the suite's own registry)
    render: Callable[[object], list[str]]  # the file's results -> markdown lines


TABLES: dict[str, Table] = {}


def table(name: str, result: str | None):
    def add(fn):
        if name in TABLES:
            raise ValueError(f"two README tables named {name!r}: {TABLES[name].render.__name__} and {fn.__name__}")
        TABLES[name] = Table(name, result, fn)
        return fn
    return add


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(*cells) -> list[str]:
    return [row(*cells), "|" + "|".join(["---"] * len(cells)) + "|"]


def x(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}x"


def pct(v: float) -> str:
    return f"{v:+.1%}"


def asked(v: float) -> str:
    return f"{v:g}x"


# ---------------------------------------------------------------- the tables

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
    return out


TOOLS = ("hwprune", "tp_uniform", "tp_global")


def kept(r: dict) -> str:
    """Importance kept by the three tools: 3 decimals, 5 where hwprune and the closer Torch-Pruning
    mode both keep more than 0.99 (their difference is then in the fourth decimal)."""
    values = [r[t]["retained_importance"] for t in TOOLS]
    digits = 5 if values[0] > 0.99 and max(values[1:]) > 0.99 else 3
    return " / ".join(f"{v:.{digits}f}" for v in values)


def fidelity(r: dict, zeroed: bool) -> str:
    if r["weights"] != "pretrained":
        return "(random weights)"
    h, u, g = (r[t] for t in TOOLS)
    alone = r["hwprune"].get("without_compensation") if zeroed else None
    if "embedding_cosine" in h:
        text = f"cosine {h['embedding_cosine']:.3f} ; {u['embedding_cosine']:.3f} ; {g['embedding_cosine']:.3f}"
        return text + (f" (zeroed: {alone['embedding_cosine']:.3f})" if alone else "")
    text = (f"top-1 {h['top1_agreement']:.3f} ; {u['top1_agreement']:.3f} ; {g['top1_agreement']:.3f}, "
            f"logit cosine {h['logit_cosine']:.3f} ; {u['logit_cosine']:.3f} ; {g['logit_cosine']:.3f}")
    return text + (f" (zeroed: {alone['top1_agreement']:.3f}, {alone['logit_cosine']:.3f})" if alone else "")


def tp_latency(r: dict) -> str:
    """Torch-Pruning's latency over hwprune's; bold where its bisection did not come within 2%."""
    cells = []
    for t in TOOLS[1:]:
        v = f"{r[t]['latency_vs_hwprune']:.3f}"
        cells.append(v if r[t].get("equal_latency", True) else f"**{v}**")
    return ", ".join(cells)


IMPORTANCE = {"l2": "L2", "fisher": "Fisher", "fisher, compensated": "Fisher, compensated"}


def vs_torch_pruning_rows(results, with_importance: bool) -> list[str]:
    cols = ["model (weights)", *(["importance"] if with_importance else []), "asked", "hwprune measured",
            "importance kept: hwprune / TP uniform / TP global", "speedup per MAC cut: hwprune / uniform / global",
            "fidelity: hwprune ; uniform ; global", "TP latency vs hwprune (uniform, global)"]
    out = header(*cols)
    for r in results["rows"]:
        importance = [IMPORTANCE.get(r["importance"], r["importance"])] if with_importance else []
        out.append(row(f"{r['model']} ({r['weights']})", *importance, asked(r["requested"]),
                       x(r["hwprune"]["measured_speedup"]), kept(r),
                       " / ".join(f"{r[t]['efficiency']:.2f}" for t in TOOLS), fidelity(r, with_importance),
                       tp_latency(r)))
    return out


@table("vs_torch_pruning_auto", "vs_torch_pruning_auto.json")
def vs_torch_pruning_auto(results) -> list[str]:
    return vs_torch_pruning_rows(results, with_importance=True)


@table("vs_torch_pruning_l2", "vs_torch_pruning.json")
def vs_torch_pruning_l2(results) -> list[str]:
    return vs_torch_pruning_rows(results, with_importance=False)


ACCURACY_CONTENDERS = (("hwprune_data", "hwprune data"), ("hwprune_balanced", "hwprune balanced"),
                      ("hwprune_params", "hwprune params"), ("uniform", "uniform"), ("tp_uniform", "TP uniform"),
                      ("tp_global", "TP global"))
ACCURACY_FIGURES = {"digits": ("test_accuracy", "test accuracy (noisy held-out)"),
                    "lite0": ("logit_cosine", "logit cosine"), "minilm": ("embedding_cosine", "embedding cosine")}


def _after(e: dict, figure: str) -> str:
    """Mean after recovery (± sd over seeds where there were several) and the measured speedup;
    a dagger where the contender did not come within 2% of hwprune balanced's latency."""
    a = e["after_recovery"]
    sd = f" ± {a[figure + '_sd']:.3f}" if f"{figure}_sd" in a else ""
    return f"{a[figure]:.3f}{sd} ({x(e['measured_speedup'])}{'' if e['equal_latency'] else ' †'})"


@table("accuracy", "accuracy.json")
def accuracy(results) -> list[str]:
    out = header("row, figure after recovery", "asked", *(label for _, label in ACCURACY_CONTENDERS),
                 "original", "original, same recovery", "seeds")
    for r in results["rows"]:
        figure, label = ACCURACY_FIGURES[r["model"]]
        means = [r[k]["after_recovery"][figure] for k, _ in ACCURACY_CONTENDERS]
        cells = [f"**{_after(r[k], figure)}**" if r[k]["after_recovery"][figure] == max(means) else _after(r[k], figure)
                 for k, _ in ACCURACY_CONTENDERS]
        again = r.get("original_recovered")
        seeds = len(again["seeds"]) if again else 1
        method = "" if "recovery_lr" in r else " (earlier method)"
        out.append(row(f"{r['model']}, {label}{method}", asked(r["requested"]), *cells,
                       f"{r['original'][figure]:.3f}", f"{again[figure]:.3f}" if again else "—", seeds))
    return out


@table("pass_speed", "pass_speed.json")
def pass_speed(results) -> list[str]:
    out = header("model", "hwprune", "Torch-Pruning", "hwprune / TP", "params after: hwprune / TP")

    def spread(t: dict) -> str:
        return f"{t['median_s']:.2f} ({t['min_s']:.2f}–{t['max_s']:.2f})"
    for name, m in results["models"].items():
        h, tp = m["hwprune"], m["torch_pruning"]
        out.append(row(name, spread(h), spread(tp), f"{m['ratio_hwprune_over_tp']:.1f}x",
                       f"{h['params_after'] / 1e6:.3g}M / {tp['params_after'] / 1e6:.3g}M"))
    return out


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
    return out


@table("latency_prediction", "latency_prediction.json")
def latency_prediction(results) -> list[str]:
    configs = results["summary"]["points"] // results["summary"]["models"] - 1
    out = header("model", f"prediction error at full width, then the {configs} random configurations")
    by_model: dict[str, list] = {}
    for r in results["rows"]:
        by_model.setdefault(r["model"], []).append(r["error"])
    out += [row(name, ", ".join(pct(e) for e in errors)) for name, errors in by_model.items()]
    s = results["summary"]
    return out + ["", f"Over the {s['points']} points: **median absolute error {s['median_abs_error']:.1%}, 90th "
                      f"percentile {s['p90_abs_error']:.1%}, max {s['max_abs_error']:.1%}** (goal: {s['goal'].replace('<=', '≤')}); "
                      f"uncalibrated (scale 1): {s['uncalibrated_median_abs_error']:.1%} and "
                      f"{s['uncalibrated_p90_abs_error']:.1%}."]


SPARSE_CONTENDERS = {"hwprune_native_bsr": "hwprune native BSR", "torch_bsr": "torch BSR (`bsr @ x.T`)",
                     "torch_csr": "torch CSR (`csr @ x.T`)"}


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
    return out


@table("sparse_minilm", "sparse_minilm.json")
def sparse_minilm(results) -> list[str]:
    out = header("block sparsity of the FFN", "eager speedup", ".pt2 speedup", "cosine mean (min), before recovery",
                 "cosine mean (min), after recovery")
    rows = []
    for r in results["rows"]:
        after = r.get("recovered")
        after = f"{after['cosine_mean']:.3f} ({after['cosine_min']:.3f}), {after['steps']} steps" if after else "—"
        rows.append(row(f"{r['sparsity']:.0%}", x(r["speedup_eager"]), x(r["speedup_pt2"]),
                        f"{r['cosine_mean']:.3f} ({r['cosine_min']:.3f})", after))
    return out + rows


def near_one(v: float) -> str:
    """3 decimals, 4 where 3 would round a figure below 1 up to 1.000."""
    return f"{v:.4f}" if v < 1 and round(v, 3) == 1 else f"{v:.3f}"


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
    return out


EXPORTER = {"torchscript": "TorchScript", "dynamo": "dynamo",
            "auto": "auto (TorchScript, dynamo where it failed; computed, not run)"}


@table("onnx_zoo_survey", "onnx_zoo_survey.json")
def onnx_zoo_survey(results) -> list[str]:
    out = header("exporter", "exported and checked", "failed", "median s per model", "total s")
    for key, label in EXPORTER.items():
        s = results["summary"][key]
        failed = f"{s['failed']} ({', '.join(s['failed_models'])})" if s["failed"] else "0"
        out.append(row(label, s["ok"], failed, f"{s['per_model_s']['median']:.2f}", f"{s['total_s_all']:.1f}"))
    return out


# ---------------------------------------------------------------- the README

def render(name: str, results_dir: Path = RESULTS) -> str:
    t = TABLES[name]
    results = None if t.result is None else record.load(results_dir / t.result).results
    return "\n".join(t.render(results)) + "\n"


def generate(text: str, results_dir: Path = RESULTS) -> str:
    """`text` with every generated block rewritten from its result file."""
    from hwprune.errors import InputError

    def fill(m: re.Match) -> str:
        if m["name"] not in TABLES:
            raise InputError(f"benchmarks/README.md has a generated block {m['name']!r} that no table renders: "
                             f"the tables are {', '.join(TABLES)} (benchmarks/readme.py)")
        return m.group(1) + render(m["name"], results_dir) + m.group(4)
    return BLOCK.sub(fill, text)


def blocks(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def main(check: bool = False, path: Path = README) -> int:
    from hwprune.io import atomic_write
    text = path.read_text()
    new = generate(text)
    if check:
        if new != text:
            print(f"{path} differs from its results: run python -m benchmarks readme")
            return 1
        return 0
    if new != text:
        atomic_write(path, lambda tmp: tmp.write_text(new), force=True)
    print(f"{path}: {len(blocks(new))} generated tables ({', '.join(blocks(new))}){'' if new != text else ', unchanged'}")
    return 0
