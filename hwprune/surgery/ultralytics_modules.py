"""Ultralytics' attention (YOLO11's C2PSA and PSA blocks) after a head cut.

`ultralytics.nn.modules.block.Attention` views its attention output and its values back to
`(B, C, H, W)` with C the input's width, so a head cut that leaves the block's input whole broke
forward and verification froze the heads. Its cutter turns it into this subclass, whose forward
takes the values' width from the positional conv (`pe`, depthwise over the values) and each head's
width from the qkv conv; it computes what Ultralytics' forward does, with those widths read from
the weights. The softmax scale stays the original key size's, as mask equivalence needs. Imported only once
ultralytics is (surgery.cutter_for).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .registry import ModuleCut, register_cutter

try:
    from ultralytics.nn.modules.block import Attention
    FOUND = True
except ImportError:  # an Ultralytics without it: no cutter, its heads stay frozen as before
    Attention, FOUND = type("AbsentUltralyticsAttention", (nn.Module,), {}), False


class PrunedAttention(Attention):
    def forward(self, x):
        B, _, H, W = x.shape
        width = self.pe.conv.weight.shape[0]  # the values' width: pe is depthwise over them
        q, k, v = self.qkv(x).view(B, self.num_heads, -1, H * W).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        if self.format == "coreml" and hasattr(F, "scaled_dot_product_attention"):
            x = F.scaled_dot_product_attention(q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1))
            x = x.transpose(-2, -1).reshape(B, width, H, W)
        else:
            attn = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)
            x = (v @ attn.transpose(-2, -1)).view(B, width, H, W)
        return self.proj(x + self.pe(v.reshape(B, width, H, W)))


def ultralytics_attention(m, c: ModuleCut) -> None:
    """Heads go whole; the head count, the value and key sizes follow the convs' weights."""
    if c.heads is not None:
        m.num_heads = c.heads.heads[1]
    m.head_dim = m.pe.conv.weight.shape[0] // m.num_heads
    m.key_dim = (m.qkv.conv.weight.shape[0] // m.num_heads - m.head_dim) // 2
    m.__class__ = PrunedAttention


if FOUND:
    register_cutter(Attention)(ultralytics_attention)
