"""hwprune.finetune: train the slim model back towards the original by distillation.

    model, record = hwprune.finetune(slim_model, original, "images/", example_inputs=x,
                                     config=RecoverConfig(steps=500, lr=1e-3))

The same call runs under `torchrun --nproc_per_node N` (DistributedDataParallel; each
process takes an equal share of every global batch, so the weights equal a single process's
up to float rounding). Only rank 0 writes checkpoints.
"""
from __future__ import annotations

import copy
import inspect
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..graph.trace import is_exported_graph
from ..sparse.keep import ZerosKept
from . import checkpoint as ckpt
from .config import RecoverConfig
from .data import ItemData, LoaderData, load_data
from .distributed import World, all_mean, barrier, pick_device, process_group
from .losses import FeatureMatch, distill_loss, logits_of, output_rules
from .stream import make_stream

PARTS = ("total", "distill", "task", "features", "penalty")


@dataclass
class RecoverRecord:
    """What a recovery run did. losses: the total loss of each step, averaged over the global
    batch; eval_before / eval_after: each part of the loss on the first eval_items items,
    unaugmented, before the first step and after the last."""
    steps: int
    start_step: int
    world_size: int
    device: str
    amp: str | None
    data: str
    items: int | None
    config: dict
    outputs: list = field(default_factory=list)  # [(output name, loss)]: how each output was compared
    eval_before: dict = field(default_factory=dict)
    eval_after: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)
    recalibrated: int = 0  # items over which the norms' running statistics were re-estimated
    zeros_kept: dict = field(default_factory=dict)  # sparsify's zeroed layers whose zeros stay zero
    seconds: float = 0.0
    checkpoint: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def finetune(student: nn.Module, teacher: nn.Module, data, *, config: RecoverConfig | None = None,
             example_inputs=None, kept: dict | None = None, tokenizer=None, progress=None,
             checkpoint_dir=None, resume: bool = False, penalty=None):
    """Distill `teacher` (the original model) into a copy of `student` (the slim model);
    returns (trained copy, RecoverRecord). Neither input module is changed.

    data: a spec for hwprune.recover.load_data (a folder of images, a tensor file, a text file
        of lines with `tokenizer`, "package.module:factory"; these need example_inputs), an
        ItemData, or a DataLoader (with example_inputs, which give the number of inputs).
    kept: the slim report's "kept" ({param fqn: {dim: [kept indices]}}), for config.features.
    progress: progress(stage, done, total) as hwprune.slim takes it; where it takes a `loss`
        keyword, each step also passes the step's loss.
    checkpoint_dir: write a checkpoint every config.checkpoint_every steps and at the end;
        resume=True continues from the last one there (from the start where there is none)
        and ends with the same weights as a run that was never interrupted.
    penalty: penalty(model) -> scalar tensor, added to the loss of every step (for example a
        group-lasso term on the student)."""
    config = config or RecoverConfig()
    device = pick_device(config.device)
    devices = [device] if device.type == "cuda" else []
    with process_group(device) as world, torch.random.fork_rng(devices=devices):  # the caller's RNG is left as it was
        return _run(student, teacher, data, config, device, world, example_inputs, kept, tokenizer, progress,
                    checkpoint_dir, resume, penalty)


def _as_data(data, example_inputs, tokenizer, model):
    if isinstance(data, (ItemData, LoaderData)):
        return data
    if example_inputs is None:
        raise InputError(f"finetune was given data {data!r} without example_inputs: give the model's example "
                         "inputs, which set the image size, the text length and the number of inputs")
    example_inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if isinstance(data, (str, Path)):
        return load_data(data, example_inputs, tokenizer=tokenizer, model=model)
    if hasattr(data, "__iter__"):
        return LoaderData(data, f"the {type(data).__name__} given", len(example_inputs))
    raise InputError(f"finetune data {type(data).__name__}: give a path, a factory spec, an ItemData or a DataLoader")


class _Trainer:
    """One run's state: models on the device, the loss, the optimizer, the schedule."""

    def __init__(self, student, teacher, config: RecoverConfig, device, world: World, kept, penalty):
        self.config, self.device, self.world, self.penalty = config, device, world, penalty
        self.student, self.teacher = student, teacher
        self.amp = _amp_dtype(config.amp, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        if config.features and kept is None:
            raise InputError("features: feature distillation needs the slim report's 'kept' channels: pass "
                             "kept=report['kept'] (on the command line, --features REPORT.json)")
        self.features = FeatureMatch(student, teacher, kept) if config.features and config.feature_weight > 0 \
            else None
        self.rules, self.classes, self.source = None, None, ""
        self.zeros = ZerosKept.of(student)  # a sparsified model's zeros stay zero (hwprune.sparse.keep)
        self.model = student if world.size == 1 else nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else nullcontext()

    def losses(self, batch, grad: bool = True) -> dict:
        inputs = tuple(t.to(self.device, non_blocking=True) for t in batch.inputs)
        with self.autocast():
            with torch.no_grad():
                t_out = self.teacher(*inputs)
            with nullcontext() if grad else torch.no_grad():
                s_out = (self.model if grad else self.student)(*inputs)
        if self.rules is None:
            self.rules = output_rules(t_out, self.config.output_loss)
        parts = {"distill": distill_loss(s_out, t_out, self.rules, self.config.temperature)}
        c = self.config
        total = parts["distill"]
        if batch.labels is not None:  # a DataLoader's labels are seen only as they come
            _check_labels((int(batch.labels.min()), int(batch.labels.max())), self.classes, self.source)
            logits = logits_of(s_out, self.rules).float()
            parts["task"] = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                        batch.labels.to(self.device).reshape(-1))
            total = c.alpha * total + (1 - c.alpha) * parts["task"]
        if self.features is not None:
            parts["features"] = self.features.loss()
            total = total + c.feature_weight * parts["features"]
        if self.penalty is not None:
            parts["penalty"] = self.penalty(self.student)
            total = total + parts["penalty"]
        parts["total"] = total
        return parts

    def evaluate(self, stream, items: int) -> dict:
        sums, n = torch.zeros(len(PARTS), dtype=torch.float64), 0
        for batch in stream.eval_batches(items):
            parts = self.losses(batch, grad=False)
            k = int(batch.inputs[0].shape[0])
            sums += k * torch.tensor([float(_value(parts.get(p, 0.0))) for p in PARTS], dtype=torch.float64)
            n += k
        return {p: float(f"{float(v / n):.6g}") for p, v in zip(PARTS, sums)} if n else {}

    def step_losses(self, parts: dict) -> dict:
        """The parts averaged over processes: the loss of the whole global batch."""
        local = torch.tensor([float(_value(parts.get(p, 0.0))) for p in PARTS], dtype=torch.float64)
        return dict(zip(PARTS, all_mean(local, self.world).tolist()))


def _value(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _amp_dtype(choice: str, device: torch.device):
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "bf16" or (choice == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _optimizer(model: nn.Module, config: RecoverConfig):
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=config.lr)


def _schedule(optimizer, warmup: int, total: int):
    """Linear warmup, then a cosine from lr to 0 at the last step."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _eval(module: nn.Module) -> None:
    """Eval mode; a graph from a .pt2 keeps the mode it was exported in (it cannot switch)."""
    if not is_exported_graph(module):
        module.eval()


def _set_modes(student: nn.Module, dropout: bool) -> None:
    """Eval mode (frozen norms, no dropout); with dropout=True, dropout layers train."""
    _eval(student)
    if dropout:
        for m in student.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.train()


def _run(student, teacher, data, config, device, world, example_inputs, kept, tokenizer, progress,
         checkpoint_dir, resume, penalty):
    started = time.perf_counter()
    data = _as_data(data, example_inputs, tokenizer, teacher)
    stream = make_stream(data, config.batch_size, config.seed, world)
    total = _total_steps(config, stream, data)
    home, was_training, student_home = _device_of(teacher), teacher.training, _device_of(student)
    student = copy.deepcopy(student).to(device)
    _set_modes(student, config.dropout)
    _eval(teacher.to(device))
    trainer = None
    try:
        trainer = _Trainer(student, teacher, config, device, world, kept, penalty)
        trainer.source = data.source
        first = next(iter(stream.eval_batches(1)), None) if not isinstance(data, ItemData) else \
            stream.local_batch(0)
        _check_batch(trainer, first, data)
        record = RecoverRecord(total, 0, world.size, str(device), None if trainer.amp is None else str(trainer.amp),
                               data.source, stream.items, config.to_json())
        record.outputs = [list(r) for r in trainer.rules]
        record.zeros_kept = trainer.zeros.to_json() if trainer.zeros.masks else {}
        _train(trainer, stream, data, record, progress, checkpoint_dir, resume)
        record.eval_after = trainer.evaluate(stream, config.eval_items)
    finally:
        if trainer is not None and trainer.features is not None:
            trainer.features.remove()  # the hooks on the user's teacher go, whatever happened
        teacher.to(home)
        if not is_exported_graph(teacher):
            teacher.train(was_training)
    record.seconds = round(time.perf_counter() - started, 3)
    return student.to(student_home), record


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _total_steps(config: RecoverConfig, stream, data) -> int:
    if config.steps is not None:
        return config.steps
    if stream.items is None:
        raise InputError(f"{data.source}: the DataLoader has no length, so epochs cannot be counted: give steps")
    if isinstance(data, LoaderData):
        return max(1, math.ceil(config.epochs * stream.items))
    return config.total_steps(stream.items)


def _check_batch(trainer: _Trainer, batch, data) -> None:
    """One batch through teacher and student: a wrong shape fails here, naming the data."""
    if batch is None:
        raise InputError(f"{data.source}: holds no items")
    shapes = ";".join(",".join(map(str, t.shape)) for t in batch.inputs)
    try:
        with torch.no_grad():
            t_out = trainer.teacher(*(t.to(trainer.device) for t in batch.inputs))
            trainer.student(*(t.to(trainer.device) for t in batch.inputs))
    except Exception as e:  # the model's own error, whatever its type, is what the user needs
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        fix = "give data shaped like the example inputs"
        if is_exported_graph(trainer.student):
            fix += (f"; a graph exported with torch.export takes only the batch it was exported with: give a batch "
                    f"size of that times {trainer.world.size} process(es)")
        raise InputError(f"{data.source}: the model rejects a batch of shape {shapes} ({type(e).__name__}: "
                         f"{first}): {fix}") from e
    trainer.rules = output_rules(t_out, trainer.config.output_loss)
    logits = logits_of(t_out, trainer.rules)
    trainer.classes = None if logits is None else int(logits.shape[-1])
    labels = data.label_range() if isinstance(data, ItemData) else None
    if labels is None and batch.labels is not None:
        labels = (int(batch.labels.min()), int(batch.labels.max()))
    if labels is not None:
        _check_labels(labels, trainer.classes, data.source)


def _check_labels(labels: tuple, classes: int | None, source: str) -> None:
    if classes is None:
        raise InputError(f"{source}: has labels, but the teacher's output has no logits to compare them with: "
                         "give data without labels")
    if labels[0] < 0 or labels[1] >= classes:
        raise InputError(f"{source}: labels run from {labels[0]} to {labels[1]}, out of range of the teacher's "
                         f"{classes} output classes: give class indices in 0..{classes - 1}")


def recalibrate_norms(student: nn.Module, batches, device, dropout: bool = False) -> int:
    """Estimate the running statistics of `student`'s batch norms afresh from `batches`
    (their cumulative average, momentum None), without gradients and without changing a
    weight; the modes are then set back as recovery runs (see RecoverConfig.dropout). Returns
    the items seen (0 where the student has no batch norm tracking statistics, or is a .pt2
    graph, which cannot switch to training mode)."""
    norms = [m for m in student.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or is_exported_graph(student):
        return 0
    momenta = [m.momentum for m in norms]
    kept = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    seen = 0
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for batch in batches:
                student(*(t.to(device) for t in batch.inputs))
                seen += int(batch.inputs[0].shape[0])
    finally:
        for m, momentum, state in zip(norms, momenta, kept):
            m.momentum = momentum
            if seen == 0:  # no item came (or the forward failed): the statistics stay the original's
                m.load_state_dict(state)
        _set_modes(student, dropout)
    return seen


def _takes_loss(progress) -> bool:
    try:
        return "loss" in inspect.signature(progress).parameters
    except (TypeError, ValueError):
        return False


def _train(trainer: _Trainer, stream, data, record: RecoverRecord, progress, checkpoint_dir, resume) -> None:
    c, world = trainer.config, trainer.world
    optimizer = _optimizer(trainer.student, c)
    schedule = _schedule(optimizer, c.warmup, record.steps)
    torch.manual_seed(c.seed)
    fingerprint, shapes = c.fingerprint() | {"steps_total": record.steps}, ckpt.shapes_of(trainer.student)
    if checkpoint_dir is not None and world.main:
        ckpt.prepare(checkpoint_dir)
    state = ckpt.load(checkpoint_dir, fingerprint=fingerprint, shapes=shapes, source=data.source) \
        if checkpoint_dir is not None and resume else None
    if state is not None:
        trainer.student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        if trainer.scaler is not None and state["scaler"]:
            trainer.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        record.start_step, record.eval_before, record.losses = state["step"], state["eval_before"], state["losses"]
    else:
        record.eval_before = trainer.evaluate(stream, c.eval_items)
        if c.recalibrate:
            record.recalibrated = recalibrate_norms(trainer.student, stream.whole_batches(c.recalibrate),
                                                    trainer.device, c.dropout)
    loss_kw = progress is not None and _takes_loss(progress)

    def save(step: int) -> None:
        if checkpoint_dir is not None and world.main:
            record.checkpoint = str(ckpt.save(checkpoint_dir, {
                "format": ckpt.FORMAT, "step": step, "model": trainer.student.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
                "rng": ckpt.rng_state(), "config": fingerprint, "shapes": shapes, "source": data.source,
                "eval_before": record.eval_before, "losses": record.losses}))
        barrier(world)

    if progress is not None:
        progress("recover", record.start_step, record.steps)
    for step, batch in stream.batches(record.start_step, record.steps, c.num_workers):
        parts = trainer.losses(batch)
        loss = parts["total"]
        if trainer.scaler is not None:
            trainer.scaler.scale(loss).backward()
            trainer.scaler.step(optimizer)
            trainer.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        trainer.zeros.apply()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        record.losses.append(float(f"{trainer.step_losses(parts)['total']:.6g}"))
        if (step + 1) % c.checkpoint_every == 0 or step + 1 == record.steps:
            save(step + 1)
        if progress is not None:
            kw = {"loss": record.losses[-1]} if loss_kw else {}
            progress("recover", step + 1, record.steps, **kw)
