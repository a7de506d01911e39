"""The hardware commands of the hwprune CLI (argument parsing and printing only):

    hwprune targets [--json]
    hwprune profile SPEC --target cpu [--out LUT.json] [--plot DIR] [--grid N] [--threads N]
    hwprune bench SPEC [SLIM.pt] --target cpu [--threads N] [--json FILE]
    hwprune bench SPEC [SLIM.pt] --target T --trtexec-times TIMES.json [SLIM_TIMES.json] [--report R.json]

and the --target/--lut/--threads options of `hwprune slim`. main.py calls add_hardware_commands
and, for slim, add_target_arguments and slim_latency."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..load import FACTORY_RUNS_CODE
from .common import add_model_arguments, console, load_model, ort_settings, progress_display


def add_hardware_commands(sub) -> None:
    targets = sub.add_parser("targets", help="list the built-in hardware targets and their lattices")
    targets.add_argument("--json", action="store_true", help="print the table as JSON")
    targets.set_defaults(command=_cmd_targets)

    profile = sub.add_parser("profile", help="measure a model's kernels into a latency table (LUT)")
    add_model_arguments(profile)
    _add_target(profile, required=True)
    profile.add_argument("--out", type=Path, metavar="LUT.json",
                         help="the table to write or extend (default: this machine's cache, "
                              "$XDG_CACHE_HOME/hwprune)")
    profile.add_argument("--plot", type=Path, metavar="DIR",
                         help="also write DIR/<name>.staircase.png: the latency staircase of the most "
                              "expensive layer against C_out and C_in")
    profile.add_argument("--grid", type=int, default=8, metavar="N",
                         help="lattice widths per channel sweep (default 8)")
    profile.set_defaults(command=_cmd_profile)

    bench = sub.add_parser("bench", help="measure a model, or a model and its slim version, in one run")
    add_model_arguments(bench)
    bench.add_argument("slim", nargs="?", metavar="SLIM.pt",
                       help="a slim model written by hwprune slim, or any SPEC as for slim. " + FACTORY_RUNS_CODE)
    _add_target(bench, required=False)
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the measurements as JSON")
    bench.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    bench.add_argument("--trtexec-times", type=Path, nargs="+", metavar="TIMES.json",
                       help="measured on the device instead of here: the files that slim's trtexec command "
                            "(--exportTimes) wrote there, one per model given, in the same order; the models "
                            "are then only named, not loaded")
    bench.add_argument("--report", type=Path, metavar="REPORT.json",
                       help="with --trtexec-times: the slim run's report, whose predicted latency is set "
                            "beside the device's")
    bench.set_defaults(command=_cmd_bench)


def _add_target(parser, required: bool) -> None:
    parser.add_argument("--target", required=required, default=None if required else "cpu", metavar="T",
                        help="hardware target (`hwprune targets` lists them)" + ("" if required else "; default cpu"))
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="onnxruntime intra-op threads for measuring (default 1)")
    # hardware.latency.GPU_RUNTIMES, not imported at start-up
    parser.add_argument("--runtime", choices=("tensorrt", "torch"), default=None,
                        help="for a GPU target: measure with this runtime (default TensorRT where installed, "
                             "else torch CUDA with CUDA graphs)")


def add_target_arguments(slim) -> None:
    slim.add_argument("--target", metavar="T", help="also predict (and, on cpu, measure) latency before and "
                      "after on this target (`hwprune targets`)")
    slim.add_argument("--lut", metavar="LUT.json", help="latency table from `hwprune profile` (default for cpu: "
                      "this machine's cache, measured as needed)")
    slim.add_argument("--threads", type=int, default=1, metavar="N",
                      help="onnxruntime intra-op threads for --target cpu (default 1)")


def slim_latency(args, loaded, slim_model, progress) -> dict | None:
    """report['latency_ms'] for `slim --target`, or None without --target."""
    if args.target is None:
        return None
    from ..hardware import get_target
    from ..hardware.compare import latency_compare
    return latency_compare(loaded.module, slim_model, loaded.example_inputs, get_target(args.target),
                           lut=args.lut, settings=ort_settings(args), progress=progress)


def check_target(args) -> None:
    """Fail on a bad --target or --lut before any work."""
    if args.target is None:
        if args.lut:
            raise InputError("--lut needs --target: name the target the table was measured for")
        return
    from ..hardware import get_target
    from ..hardware.latency import local_runtime, open_table
    target = get_target(args.target)
    if args.lut:
        open_table(target, local_runtime(target, ort_settings(args)), args.lut)


def _cmd_targets(args) -> int:
    from ..hardware import TARGETS

    rows = [t.to_json() for t in TARGETS]
    screen = console()
    if args.json:
        screen.print(json.dumps(rows, indent=2), markup=False, soft_wrap=True)
        return 0
    from rich.table import Table
    table = Table(title="hwprune targets", title_justify="left")
    # names are typed back as --target: never fold them
    for column in ("target", "alias", "runtime", "precision", "lattice"):
        table.add_column(column, no_wrap=True)
    reasons: dict[str, list[str]] = {}  # each lattice reason and latency model once, below the table
    for t, row in zip(TARGETS, rows):
        rule = max(t.lattice.rules, key=lambda r: r.multiple)
        reasons.setdefault(f"% {rule.multiple}: {rule.reason}", []).append(t.name)
        reasons.setdefault(f"latency model: {t.latency_model}", []).append(t.name)
        table.add_row(t.name, ", ".join(t.aliases), t.runtime.split(" (")[0], t.precision,
                      f"% {row['lattice']}")
    screen.print(table)
    for reason, names in reasons.items():
        screen.print(f"- {reason} [{', '.join(names)}]", markup=False)
    return 0


def _cmd_profile(args) -> int:
    from ..export.onnx import onnx_graph
    from ..hardware import get_target
    from ..hardware.latency import MeasuredLatency, local_runtime, open_table
    from ..hardware.lut import LatencyTableError
    from ..hardware.profile import profile
    from ..load import spec_name

    target = get_target(args.target)
    if args.grid < 2:
        raise InputError(f"--grid {args.grid}: give 2 or more widths per sweep")
    runtime = local_runtime(target, ort_settings(args), args.runtime)
    if runtime is None:
        raise LatencyTableError(
            f"profile --target {target.name} measures {target.runtime} on the device itself, and neither TensorRT "
            f"nor torch CUDA can reach that device here: run this command there and pass its --out file to "
            f"`hwprune slim --target {target.name} --lut FILE` on any host; without a table, slim uses the "
            "analytic model")
    if args.out is not None:  # the table is replaced by rename at the end: refuse a link before measuring
        from ..io import check_not_input
        from ..load import spec_path
        check_not_input(args.out, [spec_path(args.spec), args.example_inputs])
    loaded = load_model(args)
    table = open_table(target, runtime, str(args.out) if args.out else None, create=True)
    name = spec_name(args.spec)
    with progress_display() as progress:
        result = profile(onnx_graph(loaded.module, loaded.example_inputs), name, target,
                         MeasuredLatency(table, runtime), grid=args.grid, plot_dir=args.plot,
                         progress=progress)
    screen = console()
    cal = table.calibration()
    screen.print(f"profiled {loaded.spec} on {target.name}: {result.kernels} kernels and widths "
                  f"({result.measured} measured, {result.reused} already in the table)\n"
                  f"end to end: measured {result.measured_ms:.3f} ms, sum of kernels {result.kernels_ms:.3f} ms, "
                  f"predicted {result.predicted_ms:.3f} ms (scale {cal.scale:.3f}, offset {cal.offset_ms:.3f} ms "
                  f"from {cal.points} model(s))\nwrote {result.table_path}"
                  + "".join(f"\nwrote {p}" for p in result.plots), highlight=False)
    return 0


def _cmd_bench(args) -> int:
    if args.trtexec_times or args.report:
        return _bench_device_times(args)
    import torch

    from ..deploy.bundle import write_json
    from ..hardware import get_target
    from ..hardware.compare import onnx_graphs
    from ..hardware.latency import local_runtime
    from ..io import atomic_write, check_output
    from ..load import format_shapes, load_spec, spec_path

    target = get_target(args.target)
    runtime = local_runtime(target, ort_settings(args), args.runtime)
    if runtime is None:
        raise InputError(f"bench measures on this machine; target {target.name} is not attached here: use "
                         "--target cpu, or run bench on the device")
    if args.json:
        check_output(args.json, force=args.force, inputs=[spec_path(args.spec), args.slim and spec_path(args.slim)])
    loaded = load_model(args)
    models, names = [loaded.module], [loaded.spec]
    if args.slim:
        shape = format_shapes(tuple(t.shape) for t in loaded.example_inputs)
        slim = load_spec(args.slim, trust_pickle=args.trust_pickle, default_input_shape=shape,
                         default_from=f"the inputs of {args.spec}")
        models.append(slim.module)
        names.append(args.slim)
    with torch.inference_mode():
        graphs = onnx_graphs(models, loaded.example_inputs)
    timings = runtime.models(graphs)
    result = {"target": target.name, "how": runtime.how() | {"order": "interleaved" if len(models) > 1 else "single"},
              "models": [{"spec": n, **t.to_json()} for n, t in zip(names, timings)]}
    if len(timings) == 2:
        result["speedup"] = round(timings[0].median_ms / timings[1].median_ms, 4)
    if args.json:
        atomic_write(args.json, lambda tmp: write_json(tmp, result), force=args.force)
    console().print(_bench_table(result))
    return 0


def _bench_device_times(args) -> int:
    """bench from times measured on the device: nothing is loaded or run here."""
    from ..deploy.bundle import write_json
    from ..hardware import get_target
    from ..hardware.trtexec_times import bench_result, predicted_from_report
    from ..io import atomic_write, check_output

    if not args.trtexec_times:
        raise InputError(f"--report {args.report}: it is compared with device times: give --trtexec-times too")
    names = [args.spec] + ([args.slim] if args.slim else [])
    if len(args.trtexec_times) != len(names):
        raise InputError(f"--trtexec-times: {len(args.trtexec_times)} file(s) for {len(names)} model(s) "
                         f"({', '.join(names)}): give one times file per model, in the same order")
    target = get_target(args.target)
    if target.local:
        raise InputError(f"--trtexec-times with --target {target.name}: trtexec times are a GPU target's; give "
                         "the target the engines ran on (`hwprune targets`), or bench cpu without them")
    if args.json:
        check_output(args.json, force=args.force, inputs=[*args.trtexec_times, *([args.report] if args.report else [])])
    predicted = predicted_from_report(args.report) if args.report else None
    result = bench_result(target.name, list(args.trtexec_times), predicted, names)
    if args.json:
        atomic_write(args.json, lambda tmp: write_json(tmp, result), force=args.force)
    console().print(_bench_table(result))
    return 0


def _bench_table(result: dict):
    from rich.table import Table
    how = result["how"]
    threads = f", {how['intra_op_threads']} thread(s)" if "intra_op_threads" in how else ""
    table = Table(title=f"hwprune bench on {result['target']} ({how['runtime']}{threads})", title_justify="left")
    for column in ("model", "median ms", "min ms", "max ms", "runs"):
        table.add_column(column, overflow="fold")
    for m in result["models"]:
        table.add_row(m["spec"], f"{m['median_ms']:.3f}", f"{m['min_ms']:.3f}", f"{m['max_ms']:.3f}", str(m["repeats"]))
    if "speedup" in result:
        order = "interleaved in one run" if result["how"].get("order") == "interleaved" else result["how"]["order"]
        table.caption = f"speedup {result['speedup']:.3f}x (median before / median after, {order})"
        if "predicted_speedup" in result:
            table.caption += f"; predicted {result['predicted_speedup']:.3f}x"
    return table
