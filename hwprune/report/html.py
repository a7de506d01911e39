"""The human report: one self-contained HTML file made from the JSON report alone.

Plots are matplotlib PNGs inlined as base64 `data:` URIs, so the file opens anywhere, offline,
and can be mailed or attached to a CI run:
- per-layer widths (C_out) before and after;
- per-layer predicted latency before and after;
- the predicted latency staircases of the most expensive layers, with the chosen widths marked;
- predicted against measured latency, where the target could be measured here.
A section the page has no place for (one a caller added: Report.with_section) is shown as its
JSON under its name, so that what the JSON says the page says too.
"""
from __future__ import annotations

import base64
import html
import io

WIDTH_IN = 11.0


def render(report: dict) -> str:
    """The HTML page for `report` (what `hwprune slim` writes as OUT.report.json)."""
    src = report.get("source", {})
    title = f"hwprune slim {src.get('spec', '')}".strip()
    parts = [f"<h1>{_e(title)}</h1>", _summary(report), _tensorrt(report), _frozen(report)]
    figures = [("Per-layer widths", _plot_widths), ("Per-layer predicted latency", _plot_layer_latency),
               ("Latency staircases of the most expensive layers", _plot_staircases),
               ("Predicted against measured latency", _plot_measured)]
    for heading, plot in figures:
        png, caption = plot(report)
        if png is None:
            if caption:
                parts.append(f"<h2>{_e(heading)}</h2><p class=note>{_e(caption)}</p>")
            continue
        parts.append(f"<h2>{_e(heading)}</h2><figure><img alt=\"{_e(heading)}\" "
                     f"src=\"data:image/png;base64,{png}\"><figcaption>{_e(caption)}</figcaption></figure>")
    parts.append(_how(report))
    parts += [_other(name, data) for name, data in report.items() if name not in SHOWN]
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


# the sections hwprune writes: the page shows them above, or, as "kept" and "declared_rules", leaves
# them to the JSON
SHOWN = frozenset({"hwprune_version", "trace", "trace_note", "config", "params", "macs", "verify", "compensated",
                   "groups", "kept", "declared_rules", "lattice", "plan", "depth", "source", "latency_ms", "layers",
                   "staircases", "onnx", "pt2", "hf", "tensorrt", "outputs", "recover"})


def _other(name: str, data) -> str:
    from .json_io import json_text
    return f"<h2>{_e(name)}</h2><pre>{_e(json_text(data).rstrip())}</pre>"


_CSS = ("body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;"
        "vertical-align:top}th{background:#f3f3f3}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;"
        "white-space:pre-wrap}img{max-width:100%}.note{color:#555}figcaption{color:#555;font-size:13px}")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _table(rows, header=None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _num(n) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _before_after(d: dict) -> str:
    b, a = d["before"], d["after"]
    return f"{_num(b)} → {_num(a)} ({(a - b) / b:+.1%})" if b else f"{_num(b)} → {_num(a)}"


def _summary(report: dict) -> str:
    rows = []
    src = report.get("source", {})
    if src:
        rows.append(("input", f"{src.get('input_shape')} ({src.get('inputs_from')})"))
    rows += [("params", _before_after(report["params"])), ("MACs", _before_after(report["macs"])),
             ("verification", f"mask equivalence: max abs err {report['verify']['max_abs_err']:.2e}, "
                              f"max rel err {report['verify']['max_rel_err']:.2e}")]
    if "onnx" in report:
        o = report["onnx"]
        rows.append(("ONNX", f"opset {o['opset']}: onnxruntime against PyTorch max rel err {o['max_rel_err']:.2e}"))
    lat = report.get("latency_ms")
    if lat:
        rows.append((f"predicted latency ({lat['target']})",
                     f"{lat['predicted_before']:.4g} → {lat['predicted_after']:.4g} ms "
                     f"({lat['speedup']['predicted']:.2f}x), {lat['how']['latency_model']}"))
        if lat.get("measured_before") is not None:
            rows.append(("measured latency", f"{lat['measured_before']:.4g} → {lat['measured_after']:.4g} ms "
                                             f"({lat['speedup']['measured']:.2f}x), median, interleaved"))
        else:
            rows.append(("measured latency", f"none: {lat['target']} is not attached here (predicted only)"))
    plan = report.get("plan")
    if plan:
        from ..plan.budget import budget_line
        rows.append(("budget", budget_line(plan)))
    groups = report["groups"]
    cut = sum(1 for g in groups if g["width_after"] < g["width_before"])
    frozen = sum(1 for g in groups if g["frozen"])
    rows.append(("channel groups", f"{len(groups)}: {cut} cut, {frozen} frozen"))
    outputs = report.get("outputs")
    if outputs:
        rows.append(("files", ", ".join(str(p) for p in outputs.values())))
    return "<h2>Summary</h2>" + _table(rows)


def _tensorrt(report: dict) -> str:
    trt = report.get("tensorrt")
    if not trt:
        return ""
    parts = ["<h2>TensorRT</h2>"]
    if trt.get("engine"):
        e = trt["engine"]
        parts.append(f"<p>Engine {_e(e['engine'])} built with TensorRT {_e(e['tensorrt'])} on {_e(e['device'])} "
                     f"({_e(e['precision'])}): median {e['timing']['median_ms']:.4g} ms ({_e(e['how'])}).</p>")
    else:
        parts.append(f"<p class=note>{_e(trt['why_not_built'])}. Build and time the engine on the device with:</p>")
    parts.append(f"<pre>{_e(trt['trtexec']['command'])}</pre>")
    parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in trt["trtexec"]["notes"]) + "</ul>")
    return "\n".join(parts)


def _frozen(report: dict) -> str:
    frozen = [g for g in report["groups"] if g["frozen"]]
    if not frozen:
        return "<h2>Frozen groups</h2><p>none</p>"
    rows = [(g["id"], g["width_before"], ", ".join(g["members"][:3]) + (" …" if len(g["members"]) > 3 else ""),
             g["frozen"]) for g in frozen]
    return f"<h2>Frozen groups ({len(frozen)})</h2>" + _table(rows, ("group", "width", "members", "reason"))


def _how(report: dict) -> str:
    lat = report.get("latency_ms")
    if not lat:
        return ""
    rows = [(k, v) for k, v in lat["how"].items()]
    return "<h2>How latency was predicted and measured</h2>" + _table(rows)


# ---------------------------------------------------------------- plots

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _short(name: str) -> str:
    """An ONNX node name as a module path: '/layer2/layer2.0/downsample/downsample.0/Conv' ->
    'layer2.0/downsample.0' (a scope that the next one repeats is dropped, and the op)."""
    parts = [p for p in name.split("/") if p][:-1] or [name]
    kept = [p for p, nxt in zip(parts, parts[1:] + [""]) if not nxt.startswith(p)]
    return "/".join(kept[-4:])


def _layer_axes(plt, layers: list, height: float = 4.2):
    fig, ax = plt.subplots(figsize=(WIDTH_IN, height))
    x = list(range(len(layers)))
    if len(layers) <= 60:
        ax.set_xticks(x, [_short(r["name"]) for r in layers], rotation=90, fontsize=7)
    else:
        ax.set_xlabel("layer (graph order)")
    ax.grid(axis="y", alpha=0.3)
    return fig, ax, x


def _plot_widths(report: dict):
    layers = report.get("layers")
    if not layers:
        return None, "no per-layer figures: run slim with --target"
    plt = _pyplot()
    fig, ax, x = _layer_axes(plt, layers)
    before = [r["c_out"][0] for r in layers]
    after = [r["c_out"][1] or 0 for r in layers]
    ax.bar(x, before, color="#cfcfcf", label="before")
    ax.bar(x, after, width=0.5, color="tab:blue", label="after")
    ax.set_ylabel("output channels (C_out)")
    ax.legend()
    fig.tight_layout()
    cut = sum(1 for b, a in zip(before, after) if a < b)
    return _png(fig), f"{len(layers)} convolution and linear layers, {cut} narrower; grey before, blue after"


def _plot_layer_latency(report: dict):
    layers = report.get("layers")
    if not layers or layers[0]["ms"][0] is None:
        return None, "no latency figures: run slim with --target" if layers else ""
    plt = _pyplot()
    fig, ax, x = _layer_axes(plt, layers)
    before = [r["ms"][0] for r in layers]
    after = [r["ms"][1] or 0 for r in layers]
    ax.bar(x, before, color="#cfcfcf", label=f"before ({sum(before):.3g} ms)")
    ax.bar(x, after, width=0.5, color="tab:orange", label=f"after ({sum(after):.3g} ms)")
    ax.set_ylabel("predicted ms")
    ax.legend()
    fig.tight_layout()
    lat = report.get("latency_ms", {})
    model = lat.get("how", {}).get("latency_model", "")
    return _png(fig), (f"each layer's kernel as the latency model prices it ({model}); the end-to-end prediction "
                       "adds the other kernels and the runtime's overhead")


def _plot_staircases(report: dict):
    stairs = report.get("staircases")
    if not stairs:
        return None, ""
    plt = _pyplot()
    fig, axes = plt.subplots(len(stairs), 2, figsize=(WIDTH_IN, 3.0 * len(stairs)), squeeze=False)
    for row, s in zip(axes, stairs):
        for ax, key, dim, other in ((row[0], "sweep_c_out", "c_out", "at_c_in"), (row[1], "sweep_c_in", "c_in",
                                                                                    "at_c_out")):
            sweep = s[key]
            ax.plot(sweep["widths"], sweep["ms"], drawstyle="steps-post", color="tab:blue")
            before, after = s[dim]
            ms_at = dict(zip(sweep["widths"], sweep["ms"]))
            ax.axvline(before, color="grey", linestyle="--", linewidth=1, label=f"original {before}")
            ax.axvline(after, color="tab:red", linewidth=1.2, label=f"chosen {after}")
            if after in ms_at:
                ax.scatter([after], [ms_at[after]], color="tab:red", zorder=3, s=20)
            label, held = ("C_out", "C_in") if dim == "c_out" else ("C_in", "C_out")
            ax.set_xlabel(f"{label} ({held} = {sweep[other]})")
            ax.set_ylabel("predicted ms")
            ax.set_title(f"{_short(s['name'])}: {s['kernel']}", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    lattice = stairs[0]["lattice"]
    return _png(fig), (f"predicted time of each layer against its output (left) and input (right) channels, "
                       f"{stairs[0]['widths']} (lattice: multiples of {lattice}); red: the width chosen, grey: "
                       "the original")


def _plot_measured(report: dict):
    lat = report.get("latency_ms")
    if not lat:
        return None, ""
    engine = (report.get("tensorrt") or {}).get("engine")
    if lat.get("measured_before") is None and not engine:
        return None, (f"predicted only: {lat['target']} is not attached to this machine, so nothing was measured. "
                      "Run the trtexec command above on the device and compare its GPU compute time with the "
                      f"prediction ({lat['predicted_after']:.4g} ms).")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels, predicted, measured = [], [], []
    if lat.get("measured_before") is not None:
        labels += ["before", "after"]
        predicted += [lat["predicted_before"], lat["predicted_after"]]
        measured += [lat["measured_before"], lat["measured_after"]]
    elif engine:
        labels.append("after (TensorRT engine)")
        predicted.append(lat["predicted_after"])
        measured.append(engine["timing"]["median_ms"])
    x = list(range(len(labels)))
    ax.bar([i - 0.2 for i in x], predicted, width=0.4, color="tab:blue", label="predicted")
    ax.bar([i + 0.2 for i in x], measured, width=0.4, color="tab:green", label="measured (median)")
    for i, (p, m) in enumerate(zip(predicted, measured)):
        ax.annotate(f"{(p - m) / m:+.0%}", (i, max(p, m)), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, labels)
    ax.set_ylabel("ms per run")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig), "end to end; the percentage is the prediction's error against the measurement"
