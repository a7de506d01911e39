"""Cutters for Hugging Face's own layer types; registered once transformers is imported."""
from __future__ import annotations

from transformers.pytorch_utils import Conv1D

from .registry import ModuleCut, register_cutter


@register_cutter(Conv1D)
def conv1d_transposed_linear(m: Conv1D, c: ModuleCut) -> None:
    """GPT-2's Conv1D is a linear layer with its weight stored (in, out)."""
    m.nx, m.nf = m.weight.shape


# Norms over the hidden size that keep no size attribute (only their weight), by qualified name
# so that their modules need not be imported; cut under --prune-hidden.
WEIGHT_ONLY_NORMS = tuple(f"transformers.models.{m}.modeling_{m}.{c}" for m, c in (
    ("llama", "LlamaRMSNorm"), ("mistral", "MistralRMSNorm"), ("qwen2", "Qwen2RMSNorm"), ("t5", "T5LayerNorm"),
    ("gemma", "GemmaRMSNorm"), ("phi3", "Phi3RMSNorm")))


@register_cutter(*WEIGHT_ONLY_NORMS)
def weight_only_norm(m, c: ModuleCut) -> None:
    """Its weight is its only size, already cut."""
