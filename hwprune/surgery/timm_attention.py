"""timm's attentions that size their heads from the input width, after a head cut.

DaViT's window and channel attentions, VOLO's self-attention, XCiT's and EdgeNeXt's cross-covariance
attentions and CaiT's class attention reshape their projections into
`(num_heads, C // num_heads)` and their output back to `C`, where C is the input's width; the
relative-position ViT's and GCViT's attentions reshape only their output to it. Once some heads
are cut, the heads' width is smaller than the input's and forward breaks, so verification froze
every head. Their cutters turn them into these subclasses, whose forward takes the heads' width
from the projection weights instead; the math is timm's (timm/models/davit.py, volo.py,
vision_transformer_relpos.py, gcvit.py, xcit.py, edgenext.py and cait.py, Apache-2.0), with that
one width changed. Imported
only once timm is (surgery.cutter_for). A class that this timm version lacks gets no cutter (its
heads stay frozen, as before), rather than breaking every slim of a session that imported timm.
"""
from __future__ import annotations

import importlib

import torch.nn.functional as F
from torch import nn

from .registry import ModuleCut, register_cutter


class _Absent(nn.Module):
    """Stands for a timm class this timm version does not have."""


def _timm(module: str, name: str) -> type:
    try:
        return getattr(importlib.import_module(f"timm.models.{module}"), name)
    except (ImportError, AttributeError):
        return type(f"Absent{module.title()}{name}", (_Absent,), {})


ClassAttn = _timm("cait", "ClassAttn")
ChannelAttention, ChannelAttentionV2, WindowAttention = (
    _timm("davit", n) for n in ("ChannelAttention", "ChannelAttentionV2", "WindowAttention"))
CrossCovarianceAttn = _timm("edgenext", "CrossCovarianceAttn")
WindowAttentionGlobal = _timm("gcvit", "WindowAttentionGlobal")
RelPosAttention = _timm("vision_transformer_relpos", "RelPosAttention")
VoloAttention = _timm("volo", "Attention")
XCA = _timm("xcit", "XCA")


def _heads(qkv, x, heads: int):
    """q, k, v as (B, heads, N, head_dim) of x (B, *tokens, C), N the tokens' count, with the heads'
    width read from the qkv weight."""
    inner = qkv.weight.shape[0] // 3
    return qkv(x).reshape(x.shape[0], -1, 3, heads, inner // heads).permute(2, 0, 3, 1, 4).unbind(0)


def _merge(x, proj, tokens):
    """(B, heads, N, head_dim) back to (B, *tokens, heads * head_dim), then the output projection."""
    B, H, N, D = x.shape
    return proj(x.transpose(1, 2).reshape(B, *tokens, H * D))


class PrunedWindowAttention(WindowAttention):
    def forward(self, x):
        tokens = x.shape[1:-1]
        q, k, v = _heads(self.qkv, x, self.num_heads)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = self.softmax((q * self.scale) @ k.transpose(-2, -1)) @ v
        return _merge(x, self.proj, tokens)


class PrunedVoloAttention(VoloAttention):
    def forward(self, x):
        tokens = x.shape[1:-1]
        q, k, v = _heads(self.qkv, x, self.num_heads)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            x = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)) @ v
        return self.proj_drop(_merge(x, self.proj, tokens))


class PrunedRelPosAttention(RelPosAttention):
    def forward(self, x, shared_rel_pos=None):
        tokens = x.shape[1:-1]
        q, k, v = _heads(self.qkv, x, self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            bias = self.rel_pos.get_bias() if self.rel_pos is not None else shared_rel_pos
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if self.rel_pos is not None:
                attn = self.rel_pos(attn, shared_rel_pos=shared_rel_pos)
            elif shared_rel_pos is not None:
                attn = attn + shared_rel_pos
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        return self.proj_drop(_merge(x, self.proj, tokens))


class PrunedWindowAttentionGlobal(WindowAttentionGlobal):
    def forward(self, x, q_global=None):
        B, N, _ = x.shape
        h, d = self.num_heads, self.head_dim
        if self.use_global and q_global is not None:
            k, v = self.qkv(x).reshape(B, N, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            q = q_global.repeat_interleave(B // q_global.shape[0], dim=0).reshape(B, N, h, d).permute(0, 2, 1, 3)
        else:
            q, k, v = self.qkv(x).reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.attn_drop(self.rel_pos((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        return self.proj_drop(_merge(attn @ v, self.proj, (N,)))


class PrunedXCA(XCA):
    """XCiT's and EdgeNeXt's attention across each head's channels. XCiT's fused path (experimental
    in timm, off by default) computes the same function; this forward always takes the unfused one."""

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = (t.transpose(-2, -1) for t in _heads(self.qkv, x, self.num_heads))  # (B, heads, d, N)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * self.temperature
        return self.proj_drop(_merge((self.attn_drop(attn.softmax(dim=-1)) @ v).transpose(-2, -1), self.proj, (N,)))


class PrunedCrossCovarianceAttn(CrossCovarianceAttn):
    forward = PrunedXCA.forward


class PrunedClassAttn(ClassAttn):
    """CaiT's (and XCiT's) class attention: the class token's query against every token."""

    def forward(self, x):
        B, N, _ = x.shape
        h = self.num_heads
        d = self.q.weight.shape[0] // h
        q = self.q(x[:, 0]).reshape(B, 1, h, d).transpose(1, 2)
        k, v = (proj(x).reshape(B, N, h, d).transpose(1, 2) for proj in (self.k, self.v))
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            x = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)) @ v
        return self.proj_drop(_merge(x, self.proj, (1,)))


class PrunedChannelAttention(ChannelAttention):
    def forward(self, x):
        q, k, v = _heads(self.qkv, x, self.num_heads)
        attn = ((k * self.scale).transpose(-1, -2) @ v).softmax(dim=-1)
        return _merge((attn @ q.transpose(-1, -2)).transpose(-1, -2), self.proj, x.shape[1:-1])


class PrunedChannelAttentionV2(ChannelAttentionV2):
    def forward(self, x):
        q, k, v = _heads(self.qkv, x, self.groups)
        q = q * (x.shape[1] ** -0.5 if self.dynamic_scale else self.head_dim ** -0.5)
        attn = (q.transpose(-1, -2) @ k).softmax(dim=-1)
        return _merge((attn @ v.transpose(-1, -2)).transpose(-1, -2), self.proj, x.shape[1:-1])


_PRUNED = {WindowAttention: PrunedWindowAttention, ChannelAttention: PrunedChannelAttention,
           ChannelAttentionV2: PrunedChannelAttentionV2, VoloAttention: PrunedVoloAttention,
           RelPosAttention: PrunedRelPosAttention, WindowAttentionGlobal: PrunedWindowAttentionGlobal,
           XCA: PrunedXCA, CrossCovarianceAttn: PrunedCrossCovarianceAttn, ClassAttn: PrunedClassAttn}


_PRUNED = {base: pruned for base, pruned in _PRUNED.items() if not issubclass(base, _Absent)}


@register_cutter(*_PRUNED)
def timm_attention(m, c: ModuleCut) -> None:
    """Heads go whole: the head count follows the qkv weight (the head size stays), and the module
    becomes the subclass whose forward does not assume the heads' width is the input's."""
    count = "groups" if isinstance(m, ChannelAttentionV2) else "num_heads"
    inner = m.q.weight.shape[0] if isinstance(m, ClassAttn) else \
        m.qkv.weight.shape[0] // (2 if getattr(m, "use_global", False) else 3)
    head_dim = c.heads.head_dim if c.heads is not None else inner // getattr(m, count)
    setattr(m, count, inner // head_dim)
    if type(m) in _PRUNED:
        m.__class__ = _PRUNED[type(m)]
