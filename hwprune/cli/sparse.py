"""hwprune sparsify: argument parsing and printing; the work is hwprune.sparsify.

    hwprune sparsify SPEC (--sparsity S [--pattern unstructured|block:16|block:32|block:64|2:4]
                           [--scope global|layer]
                          | --speedup X [--target T] [--block 16|32|64])
                     [--layers GLOB] [-o OUT.pt] [--report OUT.json]
                     [--onnx OUT.onnx [--onnx-custom-op]] [--pt2 OUT.pt2] [--force]
"""
from __future__ import annotations

from pathlib import Path

from ..deploy.outputs import StagedOutputs
from ..errors import InputError
from .common import add_model_arguments

PATTERN_HELP = "unstructured (default), block:16, block:32, block:64 or 2:4"


def add_sparse_command(sub) -> None:
    p = sub.add_parser(
        "sparsify", help="zero weights (unstructured, block, 2:4), verify, and write the sparse model",
        description="Zero the smallest weights of linear and 1x1 conv layers by a pattern; block patterns swap the "
                    "layers for hwprune::bsr_linear (native CPU / Triton GPU kernels). Nothing is written until the "
                    "sparse model is proven equal to the original with the masked weights zeroed.")
    add_model_arguments(p)
    p.add_argument("--sparsity", type=float, metavar="S", help="one pattern for every layer: the fraction of the "
                   "weights to zero, in (0, 1); 2:4 is 0.5 by construction")
    p.add_argument("--pattern", metavar="PATTERN", help=f"with --sparsity: {PATTERN_HELP}")
    p.add_argument("--scope", choices=("global", "layer"),
                   help="with --sparsity: rank weights across all selected layers (global, default) or within each "
                        "layer")
    p.add_argument("--speedup", type=float, metavar="X",
                   help="instead of --sparsity: choose each layer's form (narrower dense, BSR at a sparsity, 2:4) "
                        "keeping the most weight energy within its dense latency / X")
    p.add_argument("--target", metavar="T", help="with --speedup: whose latency prices the forms (default cpu: "
                   "measured here; a GPU target: measured where its GPU is attached, else analytic)")
    p.add_argument("--block", type=int, metavar="B", help="with --speedup: the BSR candidates' block, 16, 32 "
                   "(default) or 64")
    p.add_argument("--layers", default="*", metavar="GLOB",
                   help="module names to sparsify: globs, comma-separated, such as "
                        "'*.intermediate.dense,*.layer.?.output.dense' (default: all)")
    p.add_argument("-o", "--output", type=Path, metavar="OUT.pt",
                   help="sparse model file (default <name>.sparse.pt in the current directory)")
    p.add_argument("--report", type=Path, metavar="OUT.json", help="write the JSON report")
    p.add_argument("--onnx", type=Path, metavar="OUT.onnx",
                   help="also export ONNX: dense weights with zeros, checked in onnxruntime")
    p.add_argument("--onnx-custom-op", action="store_true",
                   help="with --onnx: block-sparse layers as hwprune.BSRLinear nodes (needs a runtime with that "
                        "custom op; onnxruntime has none)")
    p.add_argument("--pt2", type=Path, metavar="OUT.pt2",
                   help="also write a torch.export program (the op stays one node), reloaded and checked")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(command=cmd_sparsify)


def cmd_sparsify(args) -> int:
    import hwprune

    from ..deploy.bundle import save_module, write_json, write_pt2
    from ..load import spec_name
    from ..sparse.sparsify import config_of
    from .common import console, load_model, model_inputs

    how = {"sparsity": args.sparsity, "pattern": args.pattern, "scope": args.scope, "layers": args.layers,
           "speedup": args.speedup, "target": args.target, "block": args.block}
    config_of(**how)  # fail before loading
    if args.onnx_custom_op and args.onnx is None:
        raise InputError("--onnx-custom-op needs --onnx OUT.onnx: name the ONNX file to write")
    outputs = {"model": args.output or Path(f"{spec_name(args.spec)}.sparse.pt"), "report": args.report,
               "onnx": args.onnx, "pt2": args.pt2}
    stage = StagedOutputs(outputs, force=args.force, inputs=model_inputs(args))
    loaded = load_model(args)
    model, report = hwprune.sparsify(loaded.module, loaded.example_inputs, **how)
    report["source"] = {"spec": loaded.spec, "inputs_from": loaded.inputs_from}
    with stage:
        save_module(model, stage.path("model"), loaded.example_inputs)
        if "onnx" in stage.outputs:
            from ..sparse import export
            write = export.export_onnx_custom_op if args.onnx_custom_op else export.export_onnx_dense
            report["onnx"] = write(model, loaded.example_inputs, stage.path("onnx"))
            if any(r["pattern"] == "2:4" for r in report["layers"]) and not args.onnx_custom_op:
                report["tensorrt"] = _trtexec(stage, args.onnx)
        if "pt2" in stage.outputs:
            report["pt2"] = write_pt2(model, loaded.example_inputs, stage.path("pt2"))
        report["outputs"] = {k: str(v) for k, v in stage.outputs.items()}
        if "report" in stage.outputs:
            write_json(stage.path("report"), report)
        stage.commit(required=list(stage.outputs))
    console = console()
    console.print(_summary(loaded.spec, report), markup=False)
    console.print(LAYER_TABLES[report["config"]["mode"]](report), markup=False)
    if "tensorrt" in report:  # one line, never wrapped: it is meant to be copied
        console.print("TensorRT runs 2:4 weights sparse (sm80+) when built with its sparse-weights flag:", markup=False)
        console.print(report["tensorrt"]["command"], markup=False, soft_wrap=True)
    return 0


def _trtexec(stage, onnx: Path) -> dict:
    """The trtexec command that builds the 2:4 ONNX file with TensorRT's sparse-weights flag."""
    from ..deploy.tensorrt import onnx_inputs, trtexec_record
    return trtexec_record(onnx, onnx.with_suffix(".engine"), "fp16", onnx_inputs(stage.path("onnx")),
                          "the device's default clocks", sparse_weights=True)


def _summary(spec: str, report: dict):
    from .common import count, summary_table

    table = summary_table(f"hwprune sparsify {spec}")
    c, w, v = report["config"], report["weights"], report["verify"]
    if c["mode"] == "per-layer":
        p = report["predicted"]
        table.add_row("forms", f"chosen per layer for {c['speedup']:g}x on {c['target']}, block {c['block']}, layers "
                               f"{c['layers']!r}; latency {c['latency_model']}")
        table.add_row("predicted", f"{p['chosen_ms']:.3f} ms against {p['dense_ms']:.3f} ms dense over these layers "
                                   f"({p['speedup']:.2f}x)")
    else:
        table.add_row("pattern", f"{c['pattern']}, scope {c['scope']}, layers {c['layers']!r}")
    zeroed = "removed or zeroed" if c["mode"] == "per-layer" else "zeroed"
    table.add_row("weights", f"{count(w['zeroed'])} of {count(w['in_layers'])} {zeroed} ({w['sparsity']:.1%}) in "
                             f"{len(report['layers'])} layers; {len(report['skipped'])} skipped")
    if "width_cut" in report:
        table.add_row("width cut", f"hwprune's pass, {report['width_cut']['verify']['mode']}: max rel err "
                                   f"{report['width_cut']['verify']['max_rel_err']:.2e}")
    table.add_row("verify", f"{v['mode']}: max abs err {v['max_abs_err']:.2e}, max rel err {v['max_rel_err']:.2e}")
    if "onnx" in report:
        table.add_row("onnx", report["onnx"]["form"])
    if "pt2" in report:
        table.add_row("pt2", f"reloaded and checked: max rel err {report['pt2']['max_rel_err']:.2e}")
    table.add_row("wrote", ", ".join(report["outputs"].values()))
    return table


def _layer_table(report: dict, limit: int = 40):
    from rich.table import Table

    table = Table(title="layers", title_justify="left")
    for column in ("layer", "shape", "pattern", "sparsity", "kernel"):
        table.add_column(column, overflow="fold")
    for row in report["layers"][:limit]:
        table.add_row(row["layer"], "x".join(map(str, row["shape"])), row["pattern"], f"{row['sparsity']:.1%}",
                      row["kernel"])
    for row in report["skipped"][:max(0, limit - len(report["layers"]))]:
        table.add_row(row["layer"], "", "skipped", "", row["why"])
    hidden = len(report["layers"]) + len(report["skipped"]) - limit
    if hidden > 0:
        table.add_row("…", "", "", "", f"{hidden} more in the --report JSON")
    return table


def _choice_table(report: dict, limit: int = 40):
    """Per-layer mode: each layer's chosen form, its latency against the dense layer's and the
    budget, the weight energy it keeps, and why (every candidate is in the --report JSON)."""
    from rich.table import Table

    table = Table(title="layers (form chosen per layer)", title_justify="left")
    for column in ("layer", "shape", "chosen", "ms / dense / budget", "energy kept", "kernel", "why"):
        table.add_column(column, overflow="fold")
    for row in report["layers"][:limit]:
        shape = "x".join(map(str, row["shape"]))
        if row["shape_after"] != row["shape"]:
            shape += " -> " + "x".join(map(str, row["shape_after"]))
        chosen = row["pattern"] + ("" if row["chosen"] in ("dense", "2:4") else f" keep {row['keep']:.0%}")
        table.add_row(row["layer"], shape, chosen,
                      f"{row['latency_ms']:.3f} / {row['dense_ms']:.3f} / {row['budget_ms']:.3f}",
                      f"{row['energy_kept']:.1%}", row["kernel"], row["why"])
    for row in report["skipped"][:max(0, limit - len(report["layers"]))]:
        table.add_row(row["layer"], "", "skipped", "", "", "", row["why"])
    hidden = len(report["layers"]) + len(report["skipped"]) - limit
    if hidden > 0:
        table.add_row("…", "", "", "", "", "", f"{hidden} more in the --report JSON")
    return table


LAYER_TABLES = {"one pattern": _layer_table, "per-layer": _choice_table}  # report["config"]["mode"] -> table
