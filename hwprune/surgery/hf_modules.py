"""Cutters for Hugging Face's own layer types; registered once transformers is imported."""
from __future__ import annotations

from transformers.pytorch_utils import Conv1D

from . import ModuleCut, register_cutter


@register_cutter(Conv1D)
def conv1d_transposed_linear(m: Conv1D, c: ModuleCut) -> None:
    """GPT-2's Conv1D is a linear layer with its weight stored (in, out)."""
    m.nx, m.nf = m.weight.shape
