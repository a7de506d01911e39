"""Configuration of one recovery run: a frozen dataclass, validated on construction."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import InputError

OPTIMIZERS = ("adamw", "sgd")
AMP = ("auto", "off", "bf16", "fp16")
OUTPUT_LOSSES = ("auto", "kl", "mse", "cosine")


@dataclass(frozen=True)
class RecoverConfig:
    """How the slim model is trained back towards the original.

    steps: optimizer steps; or epochs (passes over the data, rounded up to whole steps)
        where steps is None. Exactly one of them is given (default: 200 steps).
    batch_size: the GLOBAL batch: under torchrun each of N processes takes batch_size / N
        items of it, so the run is the same for any N (it must divide batch_size).
    lr, weight_decay, optimizer: AdamW or SGD (momentum 0.9); the learning rate follows a
        cosine from lr to 0 over the steps, after `warmup` linear steps. Weight decay applies
        to weights of 2 or more dimensions, not to biases and norm scales.
    temperature, alpha: the loss is alpha * distillation + (1 - alpha) * task loss where the
        data has labels (cross-entropy on the logits), else the distillation alone.
    output_loss: how outputs are compared with the teacher's ("auto": see
        hwprune.recover.losses.output_rule).
    features, feature_weight: also match the student's conv and linear outputs with the
        teacher's at the channels the slim report kept (hwprune.recover.losses.FeatureMatch).
    dropout: False runs the student in eval mode throughout: BatchNorm keeps the teacher's
        running statistics (the slim model's are exactly the original's at the kept
        channels; a small recovery batch would give noisier ones, and per-process batch
        statistics would make a torchrun run differ from a single process) and dropout is
        off. True puts dropout in train mode (norms stay frozen); its random masks then
        differ between process counts, so runs are no longer equal across N.
    seed: data order, augmentation and initial RNG state; the same seed gives the same weights.
    amp: "auto" is bf16 autocast on a CUDA device that supports it, else fp16 with loss
        scaling, and off on the CPU; "off", "bf16", "fp16" force it.
    checkpoint_every: steps between checkpoints when a checkpoint directory is given.
    device: "auto" (cuda:LOCAL_RANK under torchrun with CUDA, cuda where there is one, else
        cpu), or a torch device string.
    eval_items: items (in order, without augmentation) on which the loss is measured before
        and after, for the record.
    recalibrate: items (in order, without augmentation) over which BatchNorm's running
        statistics are estimated afresh before the first step (0: keep the original's). A cut
        changes what every later norm sees (a layer that lost inputs sums fewer of them), so
        the original's statistics no longer centre it; re-estimating them costs forward passes
        only, and every process uses the same items, so runs stay equal across process counts.
        Use it where the recovery data is like the data the original was trained on: the
        statistics then come from the inputs the model will see, and distillation matches the
        original's function on them; on other data they would pull the student away from the
        function it is distilled towards. Not done on a resumed run (the checkpoint holds the statistics) nor on a .pt2 graph
        (it cannot switch to training mode).
    num_workers: DataLoader worker processes that prepare batches (images decode in them).
    """

    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    warmup: int = 0
    temperature: float = 1.0
    alpha: float = 1.0
    output_loss: str = "auto"
    features: bool = False
    feature_weight: float = 1.0
    dropout: bool = False
    seed: int = 0
    amp: str = "auto"
    checkpoint_every: int = 50
    device: str = "auto"
    eval_items: int = 256
    recalibrate: int = 0
    num_workers: int = 0

    def __post_init__(self):
        if self.steps is not None and self.epochs is not None:
            raise InputError(f"recovery was given steps {self.steps} and epochs {self.epochs}: give one of them")
        if self.steps is None and self.epochs is None:
            object.__setattr__(self, "steps", 200)
        _check(self.steps is None or (isinstance(self.steps, int) and self.steps >= 1), "steps", self.steps,
               "a whole number of optimizer steps, 1 or more")
        _check(self.epochs is None or _positive(self.epochs), "epochs", self.epochs, "a positive number of passes")
        _check(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", self.batch_size,
               "1 or more items per global batch")
        _check(_positive(self.lr), "lr", self.lr, "a positive learning rate, such as 1e-3")
        _check(_finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay, "0 or more")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        _check(isinstance(self.warmup, int) and self.warmup >= 0, "warmup", self.warmup, "0 or more steps")
        _check(_positive(self.temperature), "temperature", self.temperature, "a positive number, such as 4")
        _check(_finite(self.alpha) and 0 <= self.alpha <= 1, "alpha", self.alpha,
               "a weight in [0, 1] of distillation against the task loss")
        _check(self.output_loss in OUTPUT_LOSSES, "output_loss", self.output_loss,
               f"one of {', '.join(OUTPUT_LOSSES)}")
        _check(_finite(self.feature_weight) and self.feature_weight >= 0, "feature_weight", self.feature_weight,
               "0 or more")
        _check(self.amp in AMP, "amp", self.amp, f"one of {', '.join(AMP)}")
        _check(isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 1, "checkpoint_every",
               self.checkpoint_every, "1 or more steps")
        _check(isinstance(self.eval_items, int) and self.eval_items >= 0, "eval_items", self.eval_items, "0 or more")
        _check(isinstance(self.recalibrate, int) and self.recalibrate >= 0, "recalibrate", self.recalibrate,
               "0 or more items")
        _check(isinstance(self.num_workers, int) and self.num_workers >= 0, "num_workers", self.num_workers,
               "0 or more")

    def total_steps(self, items: int) -> int:
        """Optimizer steps of the run over `items` data items."""
        return self.steps if self.steps is not None else max(1, math.ceil(self.epochs * items / self.batch_size))

    def to_json(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> dict:
        """What a checkpoint must agree with to be resumed: everything that changes the
        weights (not how often checkpoints are written, nor the device or workers)."""
        return {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "device", "num_workers")}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v) -> bool:
    return _finite(v) and v > 0


def _check(ok: bool, name: str, value, need: str) -> None:
    if not ok:
        raise InputError(f"recovery {name} {value!r} is out of range: give {need}")
