"""The score stage of one run: a criterion bound to its seed, calibration inputs, loss and
compensation, applied to an analysis (and, in the landing's rescoring rounds, to the same
analysis with channels removed)."""
from __future__ import annotations

from dataclasses import dataclass

from ..compensate import compensation_of
from ..errors import InputError
from ..graph.masked import tensors_of
from . import CRITERIA, Scores, data_criteria, score


@dataclass(frozen=True)
class Scorer:
    """score(...) for every call of one run. calibration: the input tuples the criteria that
    measure on inputs read, and compensation's means are taken on (None: the criterion reads
    the weights alone); compensate: score removal to the channel's mean where a layer folds it
    (hwprune.compensate) instead of removal to zero."""
    importance: str = "l2"
    seed: int = 0
    calibration: list | None = None
    compensate: bool = False
    loss_fn: object = None
    progress: object = None

    def bind(self, analysis):
        """The analysis measuring on this run's calibration inputs (hwprune.analysis.Analysis.with_calibration)."""
        return analysis.with_calibration(self.calibration)

    def __call__(self, analysis, removed=None) -> Scores:
        """The score stage: one array of channel scores per group of the analysis; with
        `removed` (a bool per channel label), measured on the model with those channels cut.
        Give an analysis from `bind`, so that what compensation measures on it is kept."""
        analysis = self.bind(analysis)
        return score(analysis.graph, tensors_of(analysis.model), self.importance, self.seed, analysis.model,
                     self.calibration, self.progress, removed,
                     compensation_of(analysis) if self.compensate else None, loss_fn=self.loss_fn)


def scorer_for(analysis, config, calibration=None, loss_fn=None, progress=None) -> Scorer:
    """The scorer hwprune.slim uses for a SlimConfig: the calibration inputs checked against
    the analysis's example inputs (default: the example inputs alone), kept only where the
    criterion or compensation reads them."""
    if calibration is not None:
        check_calibration(config.importance, config.compensate)
    from .fisher import calibration_batches
    calib = calibration_batches(analysis.example_inputs, calibration, labels=loss_fn is not None) \
        if reads_calibration(config.importance, config.compensate) else None
    return Scorer(config.importance, config.seed, calib, config.compensate, loss_fn, progress)


def reads_calibration(importance: str, compensate: bool) -> bool:
    """Whether a run reads calibration inputs: its criterion measures on them, or it compensates."""
    return CRITERIA[importance].reads_inputs or compensate


def check_calibration(importance: str, compensate: bool, auto_why: str | None = None) -> None:
    """Calibration inputs given to a run that reads none: InputError (the CLI asks before loading).
    auto_why: why importance 'auto' chose this criterion, where it did."""
    if not reads_calibration(importance, compensate):
        chosen = f"importance {importance!r}" if auto_why is None else (
            f"importance 'auto' chose {importance!r} for this run ({auto_why}), and it")
        raise InputError(f"calibration inputs were given (--calibration), but {chosen} reads "
                         f"only the weights and compensate is off: use an importance that measures on inputs "
                         f"({', '.join(data_criteria())}) or compensate=True (--compensate), or leave "
                         "calibration out")
