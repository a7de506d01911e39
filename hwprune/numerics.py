"""The one error metric the project uses: relative error is max|a-b| / max(max|b|, 1e-6)."""
from __future__ import annotations

import torch


def max_errors(actual, expected) -> tuple:
    """(max absolute error, max relative error) of one output against its reference."""
    a = torch.as_tensor(actual).detach().double()
    b = torch.as_tensor(expected).detach().double()
    if a.numel() == 0:
        return 0.0, 0.0
    abs_err = float((a - b).abs().max())
    return abs_err, abs_err / max(float(b.abs().max()), 1e-6)
