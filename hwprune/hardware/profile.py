"""`hwprune profile`: measure a model's kernels, their channel staircases, and its end-to-end
time, into a latency table that `slim --lut` uses on any host.

For every kernel of the model (hwprune.hardware.blocks) at the shapes it has, and for every
prunable kernel (dense or depthwise conv, linear) a sweep over C_out at full C_in and over
C_in at full C_out, at up to `grid` widths of the target's lattice (the full width always).
The whole model is timed too: a calibration point for the end-to-end overhead.

Resumable: entries already in the table are not measured again, and the table is saved
(atomically) every few seconds, so an interrupted profile loses at most those seconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .blocks import Block, channels, with_channels
from .latency import MeasuredLatency, sweep_key

SAVE_EVERY_S = 5.0


@dataclass
class ProfileResult:
    table_path: Path
    kernels: int
    measured: int
    reused: int
    kernels_ms: float
    measured_ms: float
    predicted_ms: float
    plots: list = field(default_factory=list)


def sweep_widths(width: int, lattice, grid: int) -> list[int]:
    """Up to `grid` lattice widths from a quarter of `width` up to it, evenly spread; the full
    width always included."""
    cands = lattice.candidates(width)
    if len(cands) <= grid:
        return cands
    step = (len(cands) - 1) / (grid - 1)
    return sorted({cands[round(i * step)] for i in range(grid)})


def sweeps(block: Block, lattice, grid: int) -> list[tuple[int, int]]:
    ch = channels(block)
    if ch is None:
        return []
    if ch.coupled:
        return [(w, w) for w in sweep_widths(ch.c_out, lattice, grid)]
    outs = [(ch.c_in, w) for w in sweep_widths(ch.c_out, lattice, grid)]
    ins = [(w, ch.c_out) for w in sweep_widths(ch.c_in, lattice, grid)]
    return sorted(set(outs + ins))


def profile(graph, name: str, target, model: MeasuredLatency, *, grid: int = 8, plot_dir: Path | None = None,
            progress=None) -> ProfileResult:
    """Fill `model.table` for the ONNX `graph`; save it; return what was done."""
    table = model.table
    blocks = model.blocks(graph)
    todo: list[tuple[Block, str | None, tuple | None]] = []
    seen = set()
    for b in blocks:
        # the sweeps first: the layer at full width is one of their points (their corner)
        for job in [(with_channels(b, ci, co), sweep_key(b), (ci, co)) for ci, co in sweeps(b, target.lattice, grid)] \
                + [(b, None, None)]:
            if job[0].key not in seen:
                seen.add(job[0].key)
                todo.append(job)
    measured = reused = 0
    last_save = time.monotonic()
    for i, (block, sweep, chans) in enumerate(todo):
        _tick(progress, "measure kernels", i, len(todo))
        if table.get(block.key) is not None:
            if sweep is not None:
                table.as_sweep_point(block.key, sweep, chans)
            reused += 1
            continue
        model.measure_block(block, sweep, chans)
        measured += 1
        if time.monotonic() - last_save > SAVE_EVERY_S:
            table.save()
            last_save = time.monotonic()
    _tick(progress, "measure kernels", len(todo), len(todo))
    _tick(progress, "end to end", 0, 1)
    prediction = model.predict(blocks)
    (e2e,) = model.runtime.models([graph])
    table.add_calibration(name, prediction.kernels_ms, e2e.median_ms)
    table.save()
    _tick(progress, "end to end", 1, 1)
    plots = []
    if plot_dir is not None:
        plots.append(plot_staircase(blocks, model, target, plot_dir, name, progress))
        table.save()
    return ProfileResult(table.path, len(todo), measured, reused, prediction.kernels_ms, e2e.median_ms,
                         table.calibration().apply(prediction.kernels_ms), plots)


def _tick(progress, stage, done, total):
    if progress is not None:
        progress(stage, done, total)


def staircase_layer(blocks, model: MeasuredLatency) -> Block | None:
    """The most expensive dense conv or linear, preferring those with 16 or more channels in
    and out (a first conv's 3 input channels make a poor staircase)."""
    dense = [b for b in blocks if (ch := channels(b)) and not ch.coupled and min(ch.c_in, ch.c_out) >= 2]
    return max(dense, key=lambda b: (min(channels(b).c_in, channels(b).c_out) >= 16, model.kernel_ms(b)[0]),
               default=None)


def plot_staircase(blocks, model: MeasuredLatency, target, plot_dir: Path, name: str, progress=None,
                   points: int = 48) -> Path:
    """A PNG of one layer's latency against every C_out (at full C_in) and every C_in (at
    full C_out) in the top `points` widths, lattice widths marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..errors import HwpruneError
    from ..io import atomic_write

    layer = staircase_layer(blocks, model)
    if layer is None:
        raise HwpruneError(f"{name} has no dense conv or linear with 2 or more channels in and out to plot")
    ch = channels(layer)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    lattice = target.lattice
    series = []
    for ax, (label, full) in zip(axes, (("C_out", ch.c_out), ("C_in", ch.c_in))):
        widths = list(range(max(1, full - points + 1), full + 1))
        ms = []
        for i, w in enumerate(widths):
            _tick(progress, f"staircase {label}", i, len(widths))
            variant = with_channels(layer, ch.c_in, w) if label == "C_out" else with_channels(layer, w, ch.c_out)
            entry = model.table.get(variant.key) or model.measure_block(
                variant, sweep_key(layer), (ch.c_in, w) if label == "C_out" else (w, ch.c_out))
            ms.append(entry["ms"])
        on = [(w, m) for w, m in zip(widths, ms) if w % lattice.multiple == 0]
        ax.plot(widths, ms, drawstyle="steps-post", color="tab:blue", label="measured median")
        if on:
            ax.scatter(*zip(*on), color="tab:red", zorder=3, s=14, label=f"lattice (% {lattice.multiple})")
        ax.set_xlabel(f"{label} ({'C_in' if label == 'C_out' else 'C_out'} = "
                      f"{ch.c_in if label == 'C_out' else ch.c_out})")
        ax.grid(alpha=0.3)
        series.append((label, widths, ms))
    axes[0].set_ylabel("latency per run (ms)")
    axes[0].legend()
    how = model.table.identity
    fig.suptitle(f"{name}: {layer.describe()}\n{how.get('runtime')}, {how.get('threads')} thread(s), "
                 f"{how.get('processor')}", fontsize=9)
    fig.tight_layout()
    plot_dir.mkdir(parents=True, exist_ok=True)
    path = plot_dir / f"{name.replace(':', '_').replace('/', '_')}.staircase.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), force=True)
    plt.close(fig)
    return path
