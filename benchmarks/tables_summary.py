"""The results table of the top-level README.md: one line per question, each drawn from the
result files of benchmarks/README.md's sections and judged by the same goals."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import tables_quality as quality
from . import tables_speed as speed
from .readme import header, mixed_commits, pct, row, table, verdict, x

LINK = "benchmarks/README.md#"


@dataclass(frozen=True)
class Line:
    question: str
    result: str
    figure: Callable[[object], str]  # the file's results -> the figure, in words
    anchor: str  # the section of benchmarks/README.md with the full figures


def _accuracy(r) -> str:
    floors = quality.accuracy_floors(r)
    met = sum("**met**" in f for f in floors)
    verdicts = [line[0].split(". ", 1)[0].removeprefix("- ") for line in (quality.accuracy_best(r),
                                                                          quality.accuracy_default(r))]
    return f"{met} of {len(floors)} floors met; " + "; ".join(verdicts)


def _landing(r) -> str:
    inside, n, devs = speed.landing(r)
    return f"{inside} of {n} within {speed.LANDING_GOAL[0]:.0%} / +{speed.LANDING_GOAL[1]:.0%}: {pct(min(devs))} to {pct(max(devs))}"


def _tp(r) -> str:
    c = quality.tp_counts(r)
    return (f"importance kept: more than both Torch-Pruning modes in {c['more_kept']} of {c['rows']} rows; "
            f"fidelity without fine-tuning: ahead of both in {c['ahead']} of {c['pretrained']} pretrained rows")


def _prediction(r) -> str:
    s = r["summary"]
    met = all(s[k] <= g for k, g in speed.LATENCY_GOAL.items())
    return f"median absolute error {s['median_abs_error']:.1%}, 90th percentile {s['p90_abs_error']:.1%}: {verdict(met)}"


def _sparse(r) -> str:
    s = r["summary"]
    return (f"{x(s['median_over_dense']['hwprune_native_bsr']['0.90'])} (median of the rows; worst "
            f"{x(s['native_over_dense_worst']['0.90'])}; goal {speed.SPARSE_GOALS['speedup_at_90']:g}x)")


def _pipeline(r) -> str:
    cells = []
    for m in r["rows"]:
        st = {s["stage"]: s for s in m["stages"]}
        cells.append(f"{speed.PIPELINE_MODEL.get(m['model'], m['model'])} slim {x(st['slim']['speedup'])}, "
                     f"slim + INT8 {x(st['slim + INT8']['speedup'])}")
    return "; ".join(cells)


def _pass(r) -> str:
    goals = speed.pass_goals(r)
    ratios = [m["ratio_hwprune_over_tp"] for m in r["models"].values()]
    return (f"verified slim {min(ratios):.1f}x to {max(ratios):.1f}x Torch-Pruning's time (goal ≤ "
            f"{speed.PASS_GOALS['ratio_hwprune_over_tp']:g}x): {verdict(goals['ratio_hwprune_over_tp'])}; "
            f"without verification (goal ≤ 1x): {verdict(goals['ratio_unverified_over_tp'])}")


def _scale(r) -> str:
    return " ".join(speed.scale_reading(k, m, short=True).removeprefix("- ").split(" By stage")[0]
                    for k, m in r["rows"].items() if k.startswith("8b"))


def _timm(r) -> str:
    s = quality.timm_summary(r)
    return (f"{s['cut_40']} of {s['swept']} families swept cut at least 40% (goal {quality.TIMM_CUT_GOAL:.0%}: "
            f"{verdict(s['cut_40_pct'] / 100 >= quality.TIMM_CUT_GOAL)}); {len(s['wrong'])} wrong models")


LINES = (
    Line("Accuracy after recovery at equal measured latency", "accuracy.json", _accuracy,
         "accuracy-after-recovery-at-equal-latency-benchmarksbench_accuracypy"),
    Line("Does `--speedup` land where asked? (torchvision, measured)", "speedup_accuracy.json", _landing,
         "does-the-speedup-land-where-asked"),
    Line("Against Torch-Pruning at equal measured latency, each model's importance", "vs_torch_pruning_auto.json",
         _tp, "against-torch-pruning-at-equal-measured-latency"),
    Line("The same, data-free (L2 on every model)", "vs_torch_pruning.json", _tp,
         "data-free-l2-on-every-model-minilm-and-lite0-included"),
    Line("Latency predicted against measured", "latency_prediction.json", _prediction,
         "predicted-against-measured-latency-onnxruntime-cpu"),
    Line("Native block-sparse kernel against dense at 90% block sparsity", "sparse_cpu.json", _sparse,
         "block-sparse-against-dense-on-this-cpu"),
    Line("Prune, then quantize (`examples/pipeline.py`)", "pipeline.json", _pipeline,
         "prune-then-quantize-the-pipeline-example"),
    Line("Wall time of the pass against Torch-Pruning", "pass_speed.json", _pass,
         "wall-time-of-the-pass-against-torch-pruning"),
    Line("Llama-3-8B-shaped decoder, bf16 (peak RSS from outside)", "scale.json", _scale,
         "scale-llama-shaped-decoders-to-8b-benchmarksbench_scalepy"),
    Line("timm, one model per family, `--ratio 0.5`", "timm_sweep.json", _timm,
         "timm-and-ultralytics-benchmarksbench_timm_sweeppy-benchmarksbench_ultralyticspy"),
)


def measured(loaded) -> str:
    if loaded.schema == 0:
        return "before recorded provenance"
    h = loaded.how
    others = max(mixed_commits(loaded) - 1, 0)  # mixed_commits is 0 for a result made at one commit
    more = f" and {others} other commit{'s' if others > 1 else ''}" if others else ""
    return f"{(h.get('commit') or '?')[:7]}{' (uncommitted changes)' if h.get('dirty') else ''}{more}, " \
           f"{(h.get('started') or 'date not recorded')[:10]}"


@table("summary", tuple(dict.fromkeys(line.result for line in LINES)))
def summary(files: dict) -> list[str]:
    out = header("question", "figure", "measured at", "full figures")
    for line in LINES:
        link = f"[{line.result.removesuffix('.json')}]({LINK}{line.anchor})"
        loaded = files.get(line.result)  # None: no result committed (benchmarks/README.md says which study)
        out.append(row(line.question, "not measured on the current code", "—", link) if loaded is None else
                   row(line.question, line.figure(loaded.results), measured(loaded), link))
    return out
