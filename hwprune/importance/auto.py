"""The default importance, "auto": the criterion a run reads, chosen from what the run does.

- A budget (speedup, latency, flops, params) is planned by comparing groups with each other:
  a head against a feed-forward neuron, a stem filter against a stage-4 filter. Weight
  magnitudes are in one unit only within a group, so the planner has to assume how much a
  group's channels are worth against another's (hwprune.plan.budget.OBJECTIVES), and no such
  rule read off the weights knows that a transformer's heads matter less than its neurons.
  Fisher (hwprune.importance.fisher) measures what it costs the output to remove each channel,
  in one unit for every group, and it needs no data set: it measures on the example inputs the
  model was traced with (or on the calibration inputs, where given).
- With a loss_fn the user says what the model is for: taylor differentiates it.
- A ratio (or given widths) cuts every group alike: only the order within a group is read,
  and the weights give it without running the model (calibration inputs given for
  compensation do not change that: compensating changes biases, not which channels go).
- Past FISHER_MAX_PARAMS parameters, l2 reads the weights alone (fisher runs a forward and
  backward pass per random projection of the output).

Measured before any recovery, at the same requested CPU speedup (docs/benchmark-notes.md,
"The default importance"): fisher on the example inputs kept an embedding cosine of 0.834
on all-MiniLM-L6-v2 at 1.5x, where l2 kept 0.630 under the balanced objective and 0.716 under
params. After the same recovery at equal measured latency (benchmarks/bench_accuracy.py): 0.858
against 0.668 and 0.743.
"""
from __future__ import annotations

AUTO = "auto"
FISHER_MAX_PARAMS = 1_000_000_000


def resolve(importance: str, *, planned: bool, loss_given: bool = False, params: int = 0,
            calibration_given: bool = False, objective: str = "balanced") -> tuple[str, str | None]:
    """(the criterion to read, why auto chose it); a criterion given by name is kept, with no why.
    planned: the run plans a budget; params: the model's parameter count; calibration_given:
    only says which inputs fisher measures on; objective: the budget's objective over magnitudes
    (one other than the default is asked for by name, and fisher's figures are summed as they
    are whatever the objective, so it gets magnitudes)."""
    if importance != AUTO:
        return importance, None
    if loss_given:
        return "taylor", "taylor: a loss_fn was given, and taylor differentiates it"
    if not planned:
        return "l2", ("l2: a ratio or given widths cut every group alike, so only the order of channels within "
                      "a group is read, and the weights give it")
    if objective != "balanced":
        return "l2", (f"l2: the objective {objective!r} was asked for, and it weighs magnitude criteria (fisher's "
                      "figures are summed as they are)")
    if params > FISHER_MAX_PARAMS:
        return "l2", (f"l2: the model has {params / 1e9:.2f}B parameters, past the {FISHER_MAX_PARAMS / 1e9:g}B "
                      "up to which auto measures fisher (a forward and backward pass per output projection); "
                      "give importance='fisher' (--importance fisher) to measure it anyway")
    on = "the calibration inputs" if calibration_given else "the example inputs"
    return "fisher", (f"fisher on {on}: a budget's plan compares groups with each other, and fisher's figures "
                      "(the output's change when a channel goes) are in one unit for every group")
