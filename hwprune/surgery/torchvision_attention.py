"""torchvision's window attentions after a head cut.

torchvision's Swin computes the head size as `C // num_heads` from the input width and MaxViT
reshapes the heads' output back to the input width, so neither runs once some heads are cut
(the heads' width is then smaller than the input's). Their cutters turn them into these
subclasses, whose forward takes the heads' width from the qkv weight instead; the math is
torchvision's (swin_transformer.shifted_window_attention, maxvit.RelativePositionalMultiHeadAttention
.forward, BSD-3-Clause), with that one width changed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

from .registry import ModuleCut, register_cutter


def _window_attention(input, qkv_weight, proj_weight, relative_position_bias, window_size, num_heads, shift_size,
                      attention_dropout=0.0, dropout=0.0, qkv_bias=None, proj_bias=None, logit_scale=None,
                      training=True):
    """torchvision's shifted_window_attention with the heads' width read from qkv_weight."""
    B, H, W, C = input.shape
    inner, out_width = qkv_weight.shape[0] // 3, proj_weight.shape[0]
    pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape
    shift_size = [0 if window_size[i] >= (pad_H, pad_W)[i] else shift_size[i] for i in range(2)]
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    num_windows = (pad_H // window_size[0]) * (pad_W // window_size[1])
    x = x.view(B, pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, window_size[0] * window_size[1], C)
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        qkv_bias[inner: 2 * inner].zero_()
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, inner // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * (inner // num_heads) ** -0.5).matmul(k.transpose(-2, -1))
    attn = attn + relative_position_bias
    if sum(shift_size) > 0:
        attn_mask = x.new_zeros((pad_H, pad_W))
        h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
        w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                attn_mask[h[0]: h[1], w[0]: w[1]] = count
                count += 1
        attn_mask = attn_mask.view(pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1])
        attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(num_windows, window_size[0] * window_size[1])
        attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
        attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, x.size(1), x.size(1))
        attn = attn + attn_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, x.size(1), x.size(1))
    attn = F.dropout(F.softmax(attn, dim=-1), p=attention_dropout, training=training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), inner)
    x = F.dropout(F.linear(x, proj_weight, proj_bias), p=dropout, training=training)
    x = x.view(B, pad_H // window_size[0], pad_W // window_size[1], window_size[0], window_size[1], out_width)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, out_width)
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


class PrunedShiftedWindowAttention(ShiftedWindowAttention):
    def forward(self, x):
        return _window_attention(x, self.qkv.weight, self.proj.weight, self.get_relative_position_bias(),
                                 self.window_size, self.num_heads, self.shift_size, self.attention_dropout,
                                 self.dropout, self.qkv.bias, self.proj.bias, training=self.training)


class PrunedShiftedWindowAttentionV2(ShiftedWindowAttentionV2):
    def forward(self, x):
        return _window_attention(x, self.qkv.weight, self.proj.weight, self.get_relative_position_bias(),
                                 self.window_size, self.num_heads, self.shift_size, self.attention_dropout,
                                 self.dropout, self.qkv.bias, self.proj.bias, self.logit_scale, self.training)


class PrunedRelativePositionalMultiHeadAttention(RelativePositionalMultiHeadAttention):
    def forward(self, x):
        B, G, P, _ = x.shape
        H, DH = self.n_heads, self.head_dim
        q, k, v = torch.chunk(self.to_qkv(x), 3, dim=-1)
        q, k, v = (t.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4) for t in (q, k, v))
        k = k * self.scale_factor
        dot_prod = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k)
        dot_prod = F.softmax(dot_prod + self.get_relative_positional_bias(), dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot_prod, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(B, G, P, H * DH))


_PRUNED = {ShiftedWindowAttention: PrunedShiftedWindowAttention,
           ShiftedWindowAttentionV2: PrunedShiftedWindowAttentionV2,
           RelativePositionalMultiHeadAttention: PrunedRelativePositionalMultiHeadAttention}


@register_cutter(ShiftedWindowAttention, RelativePositionalMultiHeadAttention)
def window_attention(m, c: ModuleCut) -> None:
    """Heads go whole: the head count follows the qkv weight, and the module becomes the
    subclass whose forward does not assume the heads' width is the input's."""
    qkv = m.qkv if hasattr(m, "qkv") else m.to_qkv
    old = m.num_heads if hasattr(m, "num_heads") else m.n_heads
    head_dim = c.heads.head_dim if c.heads is not None else getattr(m, "head_dim", None) or qkv.in_features // old
    heads = qkv.weight.shape[0] // 3 // head_dim
    if hasattr(m, "num_heads"):
        m.num_heads = heads
    else:
        m.n_heads = heads
    if type(m) in _PRUNED:
        m.__class__ = _PRUNED[type(m)]
