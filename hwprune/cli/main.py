"""The hwprune command: argument parsing and printing only; the work is in the API.

    hwprune analyze SPEC [--explain] [--json FILE]
    hwprune slim SPEC [--ratio R | --speedup S | --latency-ms L | --flops F | --params P]
                 [--target T [--precision fp16|int8] [--lut LUT.json]] [--importance CRITERION]
                 [--min-width N] [--landing-slack F] [--objective balanced|params|share]
                 [-o OUT.pt] [--report OUT.json]
                 [--onnx OUT.onnx] [--html OUT.html]
                 [--pt2 OUT.pt2] [--example-inputs FILE.pt | --input-shape 1,3,224,224]
                 [--compensate] [--calibration FILE.pt] [--trust-pickle] [--strict] [--force]
    hwprune apply REPORT.json SPEC -o OUT.pt [--calibration FILE.pt]
    hwprune finetune SLIM.pt --teacher ORIG.pt|SPEC --data DATA -o OUT.pt   (hwprune.cli.recover; and
                 slim --recover DATA --rounds K)

Every HwpruneError becomes one line on stderr and exit code 2, as do usage errors. Any other
exception is a bug in hwprune and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..config import SlimConfig
from ..deploy.bundle import Bundle, bundle_paths, is_hf_model, save_module, write_json
from ..errors import BudgetWarning, HwpruneError, InputError, LatticeWarning
from ..importance.auto import resolve as resolve_importance
from ..importance.scorer import check_calibration
from ..io import atomic_write, check_output
from ..load import LoadedModel, calibration_items, format_shapes, read_calibration, spec_name, spec_path
from ..plan.kinds import DEFAULT_SPEEDUP
from .common import (add_calibration_argument, add_model_arguments, console as _console, count as _num,
                     load_model as _load, model_inputs as _inputs_of, ort_settings, progress_display as _progress,
                     read_report, summary_table as _summary_table)
from .hardware import add_hardware_commands, add_target_arguments, check_target, slim_latency
from .options import add_budget_arguments, add_importance_argument, slim_budget
from .recover import (add_recover_commands, add_slim_recover_arguments, check_slim_recover, recover_progress,
                      recover_row, slim_function)
from .sparse import add_sparse_command

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """An argparse error, reported like an HwpruneError: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.command(args)
    except (HwpruneError, _UsageError) as e:
        print(f"hwprune: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("hwprune: interrupted (outputs are written whole or not at all)", file=sys.stderr)
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hwprune", description="Hardware-aware structured pruning for PyTorch.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    analyze = sub.add_parser("analyze", help="show the coupled channel groups; why any are frozen")
    add_model_arguments(analyze)
    analyze.add_argument("--explain", action="store_true", help="one line per group, with reasons")
    analyze.add_argument("--json", type=Path, metavar="FILE", help="write the analysis as JSON")
    analyze.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    analyze.set_defaults(command=_cmd_analyze)

    slim = sub.add_parser(
        "slim", help="cut channels, verify, and write the slim model",
        description="Cut channels, verify, and write the slim model. With --target, also write the deployment "
                    "bundle next to -o OUT.pt: OUT.onnx (checked in onnxruntime), OUT.report.json, OUT.report.html "
                    "(plots), OUT.engine where TensorRT and a GPU are here (else the trtexec command for the device); "
                    f"without a budget flag, --target plans --speedup {DEFAULT_SPEEDUP:g}. Nothing is written until "
                    "every output is verified; then all are moved into place at once.")
    add_model_arguments(slim)
    add_budget_arguments(slim)
    slim.add_argument("--min-width", type=int, metavar="N",
                      help="narrowest width a planned group may get (default: one lattice step)")
    slim.add_argument("--landing-slack", type=float, default=0.10, metavar="F",
                      help="a latency budget is measured and planned again until it lands between 1%% slower "
                           "than asked and this fraction faster (default 0.10, in at most 4 tries); smaller lands "
                           "nearer the request at the cost of more tries")
    from ..plan.budget import OBJECTIVES
    slim.add_argument("--objective", choices=tuple(OBJECTIVES), default="balanced",
                      help="what a budgeted plan maximizes over magnitude importances (default balanced: the sum "
                           "over groups of log(importance kept), so no layer is gutted for owning few parameters; "
                           "params: importance-weighted parameters kept, which cuts cheap early layers first; "
                           "share: the logs weighed by each group's share of the model's cost, a uniform cut "
                           "where importance is flat)")
    slim.add_argument("--allow-block-removal", action="store_true",
                      help="with a budget, remove whole residual blocks where that keeps more importance "
                           "than cutting width (verified: equal to the original with the block's branch zeroed)")
    add_importance_argument(slim)
    add_calibration_argument(slim, "for the --importance criteria that measure on inputs and for --compensate")
    slim.add_argument("-o", "--output", type=Path, metavar="OUT.pt",
                      help="slim model file (default <name>.slim.pt in the current directory)")
    slim.add_argument("--report", type=Path, metavar="OUT.json",
                      help="write the JSON report (with --target: default OUT.report.json)")
    slim.add_argument("--onnx", type=Path, metavar="OUT.onnx",
                      help="also export ONNX, checked in onnxruntime against PyTorch (with --target: default OUT.onnx)")
    slim.add_argument("--html", type=Path, metavar="OUT.html",
                      help="write the report as one HTML file with plots (with --target: default OUT.report.html)")
    slim.add_argument("--pt2", type=Path, metavar="OUT.pt2",
                      help="also write a torch.export ExportedProgram, reloaded and checked against PyTorch")
    slim.add_argument("--precision", choices=("fp16", "int8"),
                      help="TensorRT precision for a GPU --target: int8 plans on its int8 lattice (%% 32) and builds "
                           "an int8 engine (default: the target's, fp16)")
    slim.add_argument("--strict", action="store_true", help="fail if any channel group is frozen")
    slim.add_argument("--prune-hidden", action="store_true",
                      help="also cut the hidden size (embeddings, residual stream, the norms over it); not "
                           "mask-equivalent, so it is verified by output fidelity and the report says so")
    slim.add_argument("--compensate", action="store_true",
                      help="where a linear or unpadded conv reads a removed channel, fold the channel's mean "
                           "(on --calibration, default the example inputs) into its bias instead of dropping it: "
                           "closer output, same speed")
    slim.add_argument("--in-place", choices=tuple(IN_PLACE), default="auto",
                      help="cut the loaded model itself, a tensor at a time, instead of a copy: the peak memory is "
                           "the model and one tensor more, not two models; verified against reference outputs taken "
                           "before the cut, without the repair that freezes a failing group and cuts again (auto, the "
                           "default: only where a copy of the weights would take more than half of the available "
                           "memory, and never with --target, --html or --recover, which need the original)")
    slim.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_target_arguments(slim)
    add_slim_recover_arguments(slim)
    slim.set_defaults(command=_cmd_slim)

    apply = sub.add_parser("apply", help="re-apply a report's kept channels to another checkpoint")
    apply.add_argument("report", type=Path, metavar="REPORT.json", help="report written by slim")
    add_model_arguments(apply)
    apply.add_argument("-o", "--output", type=Path, metavar="OUT.pt", required=True,
                       help="slim model file")
    add_calibration_argument(apply, "where the report's run compensated: this checkpoint's means")
    apply.add_argument("--force", action="store_true", help="overwrite an existing output file")
    apply.set_defaults(command=_cmd_apply)

    add_hardware_commands(sub)
    add_recover_commands(sub)
    add_sparse_command(sub)
    return parser


def _calibration(args, raw, loaded: LoadedModel):
    """The --calibration inputs (`raw`, as read_calibration read them), checked against the
    example inputs; None without the flag."""
    if args.calibration is None:
        return None
    from ..importance.fisher import calibration_batches
    items = calibration_items(raw, args.calibration, loaded.example_inputs)
    try:
        return calibration_batches(loaded.example_inputs, items)
    except InputError as e:
        raise InputError(f"--calibration {args.calibration}: {e}") from e


# ---------------------------------------------------------------- commands

def _cmd_analyze(args) -> int:
    import hwprune

    if args.json:
        check_output(args.json, force=args.force, inputs=[spec_path(args.spec)])
    loaded = _load(args)
    analysis = hwprune.analyze(loaded.module, loaded.example_inputs)
    data = analysis.to_json()
    if args.json:
        atomic_write(args.json, lambda tmp: _write_json(tmp, data), force=args.force)
    console = _console()
    console.print(_analysis_table(loaded, data))
    if args.explain:  # one line per group, never wrapped: it is meant to be grepped
        console.print(analysis.explain(), markup=False, soft_wrap=True)
    return 0


def _cmd_slim(args) -> int:
    import hwprune

    from ..deploy.bundle import write_bundle
    from ..plan.land import check_slack
    from ..report import Report

    # the options and the outputs are checked before loading, which can take a while: the options
    # by the API's own checks (SlimConfig, budget_of, check_calibration), asked early
    SlimConfig(ratio=0.5 if args.ratio is None else args.ratio, importance=args.importance, strict=args.strict)
    _resolve_precision(args)
    budget = slim_budget(args)
    if args.target is None and budget is not None and budget.latency:
        args.target = "cpu"  # as slim prices a latency budget; the CLI also measures there
    if args.min_width is not None and args.min_width < 1:
        raise InputError(f"--min-width {args.min_width}: give 1 or more channels")
    check_slack(args.landing_slack, "--landing-slack")
    if args.calibration is not None:  # the criterion auto reads is known up to the model's size: fisher for a budget
        chosen, why = resolve_importance(args.importance, planned=budget is not None, calibration_given=True,
                                         objective=args.objective)
        check_calibration(chosen, args.compensate, why)
    check_target(args)
    check_slim_recover(args)
    in_place = _in_place(args)
    _slim_outputs(args, hf=False).stage(force=args.force, inputs=_inputs_of(args))
    raw = read_calibration(args.calibration) if args.calibration is not None else None
    loaded = _load(args)
    calibration = _calibration(args, raw, loaded)
    outputs = _slim_outputs(args, hf=is_hf_model(loaded.module))
    _check_onnx_output(outputs, loaded.module, args)
    stage = outputs.stage(force=args.force, inputs=_inputs_of(args))
    with recover_progress() if args.recover else _progress() as progress, warnings.catch_warnings():
        warnings.simplefilter("ignore", LatticeWarning)  # said once, below the summary, from the report
        warnings.simplefilter("ignore", BudgetWarning)  # likewise
        model, report = slim_function(args, loaded)(loaded.module, loaded.example_inputs, ratio=args.ratio,
                                     importance=args.importance, strict=args.strict,
                                     progress=progress, budget=budget, target=args.target,
                                     lut=args.lut, threads=args.threads, min_width=args.min_width,
                                     allow_block_removal=args.allow_block_removal, prune_hidden=args.prune_hidden,
                                     compensate=args.compensate, calibration=calibration,
                                     objective=args.objective, landing_slack=args.landing_slack,
                                     **({} if args.recover else {"in_place": in_place}))
        if not hwprune.recover.is_main_process():  # under torchrun, rank 0 writes
            return 0
        source = _source_record(loaded)
        if calibration is not None:
            source["calibration"] = {"file": str(args.calibration), "inputs": len(calibration)}
        report = Report.of(report).with_section("source", source)
        latency = slim_latency(args, loaded, model, progress)
        if latency is not None:
            report = report.with_section("latency_ms", latency).with_sections(
                _latency_detail(args, loaded, model, progress))
        elif outputs.html is not None:  # the widths plot needs no latency model
            from ..deploy.layers import widths_for
            report = report.with_sections(widths_for(loaded.module, model, loaded.example_inputs))
        report = write_bundle(model, report, loaded.example_inputs, stage, target=_target(args),
                              precision=args.precision or "fp16", progress=progress)
    console = _console()
    console.print(_slim_table(loaded, report, outputs))
    frozen = _frozen_table(report["groups"])
    if frozen is not None:
        console.print(frozen)
    lattice = report.get("lattice") or {}
    if lattice.get("off_lattice"):
        console.print(f"note: --ratio {args.ratio:g} left {len(lattice['off_lattice'])} group(s) off the lattice of "
                      f"% {lattice['multiple']} (groups {', '.join(map(str, lattice['off_lattice']))}): such widths "
                      "can run slower than the original. Add --target to snap them to its lattice",
                      markup=False, highlight=False)
    plan = report.get("plan") or {}
    if plan.get("met") is False:
        from ..plan.land import kept_landing
        kept = kept_landing(plan)
        console.print(f"note: the slim model lands at {kept['landed_ms']:.3f} ms, short of the "
                      f"{kept['goal_ms']:.3f} ms asked ({plan['tries_ended']}); it is written, verified. Ask for "
                      "less, or give another --importance", markup=False, highlight=False)
    trt = report.get("tensorrt")
    if trt is not None and trt["engine"] is None:
        console.print(f"TensorRT: {trt['why_not_built']}. On the device, build and time the engine with:",
                      markup=False)
        console.print(trt["trtexec"]["command"], markup=False, soft_wrap=True)
    return 0


IN_PLACE = {"auto": None, "on": True, "off": False}


def _check_onnx_output(outputs: Bundle, module, args) -> None:
    """Before the cut, not after it: an ONNX output onnxruntime cannot check (bfloat16 weights)."""
    from ..export.onnx import uncheckable
    why = uncheckable(module) if outputs.onnx is not None else None
    if why is not None:
        given = "--onnx" if args.onnx is not None else "--target's deployment bundle"
        raise InputError(f"{given} asks for {outputs.onnx}, but {why}, so it cannot be checked: give the model in "
                         "float32 or float16, or "
                         f"ask for no ONNX ({'drop --onnx' if args.onnx is not None else 'drop --target'}; the "
                         ".pt and the report need none)")


def _in_place(args) -> bool | None:
    """slim's in_place for --in-place: off where a later step reads the original model."""
    needs = [flag for flag, given in (("--target", args.target), ("--html", args.html), ("--recover", args.recover))
             if given is not None]
    if needs and args.in_place == "on":
        raise InputError(f"--in-place on with {' and '.join(needs)}: they read the original model after the cut, "
                         "which an in-place cut leaves no copy of. Drop them, or --in-place off")
    return False if needs else IN_PLACE[args.in_place]


def _resolve_precision(args) -> None:
    """--precision int8 picks the target's int8 variant (its lattice is % 32)."""
    if args.precision is None:
        return
    if args.target is None:
        raise InputError(f"--precision {args.precision} needs --target: name a GPU target (`hwprune targets`)")
    from ..hardware import TARGETS, get_target
    target = get_target(args.target)
    if target.gpu is None:
        raise InputError(f"--precision {args.precision}: target {target.name} runs {target.precision} on "
                         f"{target.runtime}, not TensorRT: drop --precision, or choose a GPU target")
    base = target.name.removesuffix("-int8")
    want = base if args.precision == "fp16" else f"{base}-int8"
    if not any(t.name == want for t in TARGETS):
        raise InputError(f"--precision {args.precision}: target {target.name} has no {args.precision} variant")
    args.target = want


def _target(args):
    from ..hardware import get_target
    return None if args.target is None else get_target(args.target)


def _latency_detail(args, loaded, model, progress) -> dict:
    """report["layers"] and report["staircases"] for the HTML report's plots."""
    from ..deploy.layers import detail_for
    return detail_for(_target(args), loaded.module, model, loaded.example_inputs, lut=args.lut,
                      settings=ort_settings(args), progress=progress)


def _cmd_apply(args) -> int:
    import hwprune

    report = read_report(args.report)
    if args.calibration is not None and not report.get("config", {}).get("compensate"):
        raise InputError(f"--calibration {args.calibration}: {args.report} was made without --compensate, so "
                         "apply measures nothing on inputs: drop --calibration")
    check_output(args.output, force=args.force, inputs=[spec_path(args.spec), args.report, args.calibration])
    raw = read_calibration(args.calibration) if args.calibration is not None else None
    shape = report.get("source", {}).get("input_shape")
    loaded = _load(args, default_shape=shape,
                   default_from=f"the input shape recorded in {args.report}")
    calibration = _calibration(args, raw, loaded)
    before = _count_params(loaded.module)
    model = hwprune.apply(report, loaded.module, loaded.example_inputs, calibration=calibration)
    after = _count_params(model)
    atomic_write(args.output, lambda tmp: _save_module(model, tmp, loaded.example_inputs), force=args.force)
    _console().print(f"wrote {args.output}: params {_num(before)} → {_num(after)} "
                     f"({_change(before, after)})", highlight=False)
    return 0


# ---------------------------------------------------------------- loading and writing

def _slim_outputs(args, *, hf: bool) -> Bundle:
    """Every output path: -o, --report, --onnx, --html, --pt2, and with --target the deployment
    files named after -o (OUT.onnx, OUT.report.json, OUT.report.html, OUT.engine where TensorRT
    builds here); a Hugging Face model also gets OUT/ (save_pretrained)."""
    suffix = ".pt2" if str(args.spec).endswith(".pt2") else ".pt"  # a graph in, a graph out
    model = args.output or Path(f"{spec_name(args.spec)}.slim{suffix}")
    named = bundle_paths(model)
    target = _target(args)
    deploy = target is not None
    engine = None
    if target is not None and target.gpu is not None:
        from ..hardware import tensorrt
        engine = named["engine"] if tensorrt.available() else None
    return Bundle(model=model, report=args.report or (named["report"] if deploy else None),
                  onnx=args.onnx or (named["onnx"] if deploy or engine else None),
                  html=args.html or (named["html"] if deploy else None), pt2=args.pt2,
                  hf=named["hf"] if hf else None, engine=engine)


def _source_record(loaded: LoadedModel) -> dict:
    return {"spec": loaded.spec, "family": loaded.family,
            "input_shape": format_shapes(tuple(t.shape) for t in loaded.example_inputs),
            "inputs_from": loaded.inputs_from}


_save_module = save_module  # the names older callers use
_write_json = write_json


# ---------------------------------------------------------------- printing

def _slim_table(loaded: LoadedModel, report: dict, outputs: Bundle):
    table = _summary_table(f"hwprune slim {loaded.spec}")
    params, macs, verify = report["params"], report["macs"], report["verify"]
    groups = report["groups"]
    table.add_row("input", f"{report['source']['input_shape']} ({loaded.inputs_from})")
    table.add_row("trace", str(report["trace"]))
    table.add_row("params", _before_after(params["before"], params["after"]))
    table.add_row("MACs", _before_after(macs["before"], macs["after"]))
    table.add_row("verify", f"{verify.get('mode', 'mask equivalence')}: max abs err {verify['max_abs_err']:.2e}, "
                            f"max rel err {verify['max_rel_err']:.2e}")
    table.add_row("groups", _group_counts(groups))
    if "onnx" in report:
        onnx = report["onnx"]
        table.add_row("onnx", f"opset {onnx['opset']}, onnxruntime vs PyTorch max abs err "
                              f"{onnx['max_abs_err']:.2e}, max rel err {onnx['max_rel_err']:.2e}")
    for key, label in (("pt2", "pt2"), ("hf", "save_pretrained")):
        if key in report:
            table.add_row(label, f"reloaded and checked: max rel err {report[key]['max_rel_err']:.2e}")
    if "plan" in report:
        table.add_row("plan", _plan_row(report["plan"]))
    cfg = report.get("config", {})
    table.add_row("importance", cfg.get("importance_auto") or f"{cfg.get('importance')} (--importance)")
    if report.get("depth"):
        removed = [b["path"] for b in report["depth"]["removed"]]
        table.add_row("blocks removed", (", ".join(removed) + " (verified: equal to zeroing their branches)")
                      if removed else f"none of {len(report['depth']['candidates'])} (width kept more importance)")
    if "recover" in report:
        table.add_row("recovery", recover_row(report["recover"]))
    if "latency_ms" in report:
        lat = report["latency_ms"]
        table.add_row("predicted", _predicted_row(lat))
        table.add_row("measured", _measured_row(lat, report.get("tensorrt")))
        table.add_row("speedup", _speedup_row(lat))
    table.add_row("wrote", ", ".join(report.get("outputs", {}).values()) or str(outputs.model))
    return table


def _plan_row(plan: dict) -> str:
    from ..plan.budget import budget_line
    text = f"{budget_line(plan)} ({plan['model']})"
    if plan.get("requested") is not None:
        text += (f": asked {plan['requested']:.3f} ms, planned {plan['predicted_after']:.3f} ms "
                 f"(from {plan['predicted_before']:.3f})")
    if plan.get("measured"):
        m = plan["measured"]
        text += (f"; landed at {m['after_ms']:.3f} ms measured ({m['speedup']:.2f}x, "
                 f"{len(plan['attempts'])} tr{'y' if len(plan['attempts']) == 1 else 'ies'})")
    if plan.get("met") is False:
        text += "; short of the goal"
    cut = sum(1 for g in plan["groups"] if g["width_after"] < g["width_before"])
    text += f"; {cut} of {len(plan['groups'])} groups narrower"
    return text


def _predicted_row(lat: dict) -> str:
    return (f"{lat['target']}: {lat['predicted_before']:.3f} → {lat['predicted_after']:.3f} ms "
            f"({lat['how']['latency_model']})")


def _measured_row(lat: dict, trt: dict | None) -> str:
    if lat["measured_before"] is not None:
        return (f"{lat['measured_before']:.3f} → {lat['measured_after']:.3f} ms (median, interleaved, "
                f"{lat['how'].get('runtime', '')})")
    if trt is not None and trt.get("engine"):
        e = trt["engine"]
        where = "" if e.get("on_target") else f", on {e['device']}, not on {lat['target']}"
        return f"TensorRT engine {e['timing']['median_ms']:.3f} ms (median{where})"
    return f"none: {lat['target']} is not attached here, so the figures are predicted only"


def _speedup_row(lat: dict) -> str:
    s = lat["speedup"]
    text = f"{s['predicted']:.2f}x predicted"
    return text + (f", {s['measured']:.2f}x measured" if s.get("measured") is not None else "")


def _analysis_table(loaded: LoadedModel, data: dict):
    table = _summary_table(f"hwprune analyze {loaded.spec}")
    table.add_row("input", f"{format_shapes(tuple(t.shape) for t in loaded.example_inputs)} "
                           f"({loaded.inputs_from})")
    table.add_row("trace", str(data["trace"]))
    table.add_row("params", _num(data["params"]))
    table.add_row("MACs", _num(data["macs"]))
    groups = data["groups"]
    frozen = sum(1 for g in groups if g["frozen"])
    table.add_row("groups", f"{len(groups)} ({len(groups) - frozen} prunable, {frozen} frozen)")
    return table


def _frozen_table(groups: list, limit: int = 20):
    from rich.table import Table

    frozen = [g for g in groups if g["frozen"]]
    if not frozen:
        return None
    table = Table(title=f"frozen groups ({len(frozen)})", title_justify="left")
    for column in ("group", "width", "reason"):
        table.add_column(column, overflow="fold")
    for group in frozen[:limit]:
        table.add_row(str(group["id"]), str(group["width_before"]), str(group["frozen"]))
    if len(frozen) > limit:
        table.add_row("…", "", f"{len(frozen) - limit} more in the --report JSON")
    return table


def _group_counts(groups: list) -> str:
    frozen = sum(1 for g in groups if g["frozen"])
    cut = sum(1 for g in groups if g["width_after"] < g["width_before"])
    return f"{len(groups)} ({cut} cut, {frozen} frozen)"


def _before_after(before, after) -> str:
    return f"{_num(before)} → {_num(after)} ({_change(before, after)})"


def _change(before, after) -> str:
    return f"{(after - before) / before:+.1%}" if before else "n/a"


def _count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    sys.exit(main())
