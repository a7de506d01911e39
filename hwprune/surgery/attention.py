"""Cutters for attention modules: after whole heads are cut, the head counts and inner widths
a module keeps as attributes follow the new tensors.

A module that splits heads in its forward gets `head_attributes` unless a cutter is registered
for its type: every attribute below that holds the old value is set to the new one. The names
are those that torch, Hugging Face and timm attention modules keep (HF's own prune_heads
updates the same ones). A size that forward reads from elsewhere, or writes as a literal,
does not follow; verification then finds the line and freezes those heads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import ModuleCut, register_cutter

HEAD_COUNT = ("num_heads", "num_attention_heads", "n_head", "n_heads", "heads")
KV_HEAD_COUNT = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "num_heads_kv")
INNER_WIDTH = ("all_head_size", "inner_dim", "split_size", "attn_dim", "dim", "embed_dim", "inner_size")


def head_attributes(m, c: ModuleCut) -> None:
    h = c.heads
    (q0, q1), (k0, k1), d = h.heads, h.kv_heads, h.head_dim
    updates = {}
    for name in HEAD_COUNT:
        if getattr(m, name, None) == q0:
            updates[name] = q1
    for name in KV_HEAD_COUNT:
        if getattr(m, name, None) == k0:
            updates[name] = k1
    for name in INNER_WIDTH:
        if getattr(m, name, None) == q0 * d:
            updates[name] = q1 * d
    for name, value in updates.items():
        setattr(m, name, value)


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention with some heads cut. torch's functional forward assumes that the
    heads' total width equals embed_dim (the input width); here the heads' width is num_heads *
    head_dim and embed_dim stays the width of the input and of out_proj's output. Same math,
    same arguments; bias_k/bias_v and add_zero_attn are not supported."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if self.bias_k is not None or self.add_zero_attn:
            raise NotImplementedError("a pruned nn.MultiheadAttention with bias_k/bias_v or add_zero_attn")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if self.batch_first and batched:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        (L, B, _), S = query.shape, key.shape[0]
        h, d = self.num_heads, self.head_dim
        q, k, v = (F.linear(x, w, b).reshape(n, B, h, d).permute(1, 2, 0, 3)
                   for x, w, b, n in zip((query, key, value), self._weights(), self._biases(), (L, S, S)))
        mask = self._mask(key_padding_mask, attn_mask, B, L, S, q.dtype)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) * d ** -0.5
            weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            out = F.dropout(weights, p) @ v
            weights = weights.mean(1) if average_attn_weights else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=is_causal and mask is None)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(L, B, h * d))
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out, weights = out.squeeze(1), (weights.squeeze(0) if weights is not None else None)
        return out, weights

    def _weights(self):
        if self._qkv_same_embed_dim:
            return self.in_proj_weight.chunk(3)
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def _biases(self):
        return self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)

    def _mask(self, key_padding_mask, attn_mask, B, L, S, dtype):
        """One additive (B or 1, heads or 1, L, S) mask; in nn.MultiheadAttention True means 'masked'."""
        def additive(m):
            return torch.zeros_like(m, dtype=dtype).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m.to(dtype)
        mask = None
        if attn_mask is not None:
            m = additive(attn_mask)
            mask = m.view(B, self.num_heads, L, S) if m.dim() == 3 else m.view(1, 1, L, S)
        if key_padding_mask is not None:
            kp = additive(key_padding_mask).view(B, 1, 1, S)
            mask = kp if mask is None else mask + kp
        return mask


@register_cutter(nn.MultiheadAttention)
def multihead_attention(m: nn.MultiheadAttention, c: ModuleCut) -> None:
    """Heads go whole (the head size stays); where the heads' width is no longer embed_dim the
    module becomes a PrunedMultiheadAttention, whose forward does not assume they are equal."""
    w = m.in_proj_weight if m._qkv_same_embed_dim else m.q_proj_weight
    inner = w.shape[0] // 3 if m._qkv_same_embed_dim else w.shape[0]
    m.num_heads = inner // m.head_dim
    m.embed_dim = m.out_proj.weight.shape[0]
    if m._qkv_same_embed_dim:
        m.kdim = m.vdim = w.shape[1]
    if inner != m.embed_dim or w.shape[1] != m.embed_dim:
        m.__class__ = PrunedMultiheadAttention
