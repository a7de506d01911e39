"""One row per channel rule and per module cutter: a tiny model that reaches the rule through
torch.export, cut at 0.5 and checked by the mask-equivalence oracle (inside hwprune.slim).

A row says which aten op must appear and what must come of it: `prunable` (some group is cut),
or `frozen:<words>` (a group is frozen with that reason). A registered rule or cutter
without a row fails test_every_rule_has_a_row / test_every_cutter_has_a_row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwprune
from hwprune.graph.rules import RULES, load_all
from hwprune.surgery import CUTTERS, cutter_for
from shared_models import SilentLiteral

aten = torch.ops.aten


class Lambda(nn.Module):
    """conv -> f(x) -> conv, so that f sits between two prunable layers."""

    def __init__(self, f: Callable, c_in=4, c=8, c_out=None, after: nn.Module | None = None):
        super().__init__()
        self.f = f
        self.a = nn.Conv2d(c_in, c, 3, padding=1)
        self.b = after if after is not None else nn.Conv2d(c, c_out or c, 1)

    def forward(self, x):
        return self.b(self.f(self.a(x)))


class MLP(nn.Module):
    def __init__(self, f: Callable, d=8, h=16):
        super().__init__()
        self.f, self.a, self.b = f, nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return self.b(self.f(self.a(x)))


class Attention(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        return self.o(F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x)))


class MatmulScores(nn.Module):
    def __init__(self, d=8, h=12):
        super().__init__()
        self.a, self.b, self.o = nn.Linear(d, h), nn.Linear(d, h), nn.Linear(5, d)

    def forward(self, x):  # contract the hidden dim of a and b: zeroed channels add nothing
        return self.o(torch.matmul(self.a(x), self.b(x).transpose(-1, -2)))


class Addmm(nn.Module):
    def __init__(self):
        super().__init__()
        self.w, self.bias = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = torch.addmm(self.w.bias, x, self.w.weight.t())
        return self.bias(h)


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.e, self.o = nn.Embedding(20, 12), nn.Linear(12, 3)

    def forward(self, ids):
        return self.o(self.e(ids))


class Convolution(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.ops.aten.convolution(x, self.a.weight, self.a.bias, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
        return self.b(y)


class NativeBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        bn = self.bn
        y = torch.ops.aten._native_batch_norm_legit_no_training(
            self.a(x), bn.weight, bn.bias, bn.running_mean, bn.running_var, 0.1, 1e-5)[0]
        return self.b(y)


def shuffle_by_views(x, groups: int = 2):
    """torchvision's channel_shuffle: the group count is fixed, the group size computed."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class Split(nn.Module):
    """YOLOv8 C2f: chunk the channels, run one half, concat everything."""

    def __init__(self):
        super().__init__()
        self.cv1, self.m, self.cv2 = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(12, 4, 1)

    def forward(self, x):
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat([a, b, self.m(b)], 1))


class SplitSizes(Split):
    def forward(self, x):
        a, b = torch.split(self.cv1(x), [4, 4], 1)
        return self.cv2(torch.cat([a, b, self.m(b)], 1))


class Unbind(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):  # (B, 2, 4): unbind the token dim, add the two tokens
        p, q = self.a(x).unbind(1)
        return self.b(p + q)


class Select(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):  # ViT-style: read the first token
        return self.b(self.a(x)[:, 0])


class Creation(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(self.a(x) + torch.ones(8, 1, 1))


class Metadata(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        torch.ops.aten._assert_tensor_metadata(y, dtype=torch.float32)
        return self.b(y)


class ConvLayerNorm(nn.Module):
    """LayerNorm over a spatial dim: the channels stay prunable and the cutter keeps its shape."""

    def __init__(self):
        super().__init__()
        self.a, self.ln, self.b = nn.Conv1d(3, 8, 1), nn.LayerNorm(10), nn.Conv1d(8, 4, 1)

    def forward(self, x):
        return self.b(self.ln(self.a(x)))


class Heads(nn.Module):
    """Multi-head attention as transformers write it: view into (heads, head_dim), sdpa, merge.
    kv_heads < heads: grouped-query attention (sdpa's enable_gqa); bias: a per-head additive
    mask (T5's relative positions) from a (positions, heads) table looked up by index."""

    def __init__(self, d=32, heads=4, kv_heads=4, bias=False):
        super().__init__()
        self.num_heads, self.num_key_value_heads, self.head_dim = heads, kv_heads, d // heads
        self.q, self.o = nn.Linear(d, d), nn.Linear(d, d)
        self.k, self.v = nn.Linear(d, kv_heads * self.head_dim), nn.Linear(d, kv_heads * self.head_dim)
        self.table = nn.Parameter(torch.randn(9, heads)) if bias else None
        self.register_buffer("rel", (torch.arange(5)[:, None] - torch.arange(5)[None, :] + 4).reshape(-1))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, -1, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        mask = self.table[self.rel].view(n, n, -1).permute(2, 0, 1).unsqueeze(0) if self.table is not None else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.num_key_value_heads != self.num_heads)
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.mha, self.b = nn.Linear(16, 32), nn.MultiheadAttention(32, 4, batch_first=True), nn.Linear(32, 4)

    def forward(self, x):
        h = self.a(x)
        return self.b(self.mha(h, h, h, need_weights=False)[0])


class GPT2MLP(nn.Module):
    """transformers' Conv1D: a linear layer with its weight stored (in, out)."""

    def __init__(self):
        super().__init__()
        from transformers.pytorch_utils import Conv1D
        self.fc, self.proj = Conv1D(24, 8), Conv1D(8, 24)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class TimmNormMLP(nn.Module):
    """timm's own norms (not nn.LayerNorm subclasses) between two linears."""

    def __init__(self, kind: str):
        super().__init__()
        import timm.layers.norm as norms
        self.a, self.norm, self.b = nn.Linear(8, 16), getattr(norms, kind)(16), nn.Linear(16, 4)

    def forward(self, x):
        return self.b(self.norm(self.a(x)))


class EinsumHeads(nn.Module):
    """torchvision MaxViT's attention: heads through einsum."""

    def __init__(self, d=32, h=4):
        super().__init__()
        self.n_heads, self.head_dim = h, d // h
        self.qkv, self.merge = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, g, p, _ = x.shape
        q, k, v = (t.reshape(b, g, p, self.n_heads, self.head_dim).permute(0, 1, 3, 2, 4)
                   for t in torch.chunk(self.qkv(x), 3, dim=-1))
        a = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k * 0.3).softmax(-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", a, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(b, g, p, -1))


class RMSNormMLP(nn.Module):
    """Llama's RMSNorm, a module whose only size is its weight, between two linears."""

    def __init__(self):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRMSNorm
        self.a, self.norm, self.b = nn.Linear(8, 16), LlamaRMSNorm(16), nn.Linear(16, 4)

    def forward(self, x):
        return self.b(self.norm(self.a(x)))


class WindowAttention(nn.Module):
    """torchvision's Swin attention, whose forward computes the head size from the input width."""

    def __init__(self):
        super().__init__()
        from torchvision.models.swin_transformer import ShiftedWindowAttention
        self.pre, self.att, self.post = nn.Linear(32, 32), ShiftedWindowAttention(32, [4, 4], [2, 2], 4), nn.Linear(32, 4)

    def forward(self, x):
        return self.post(self.att(self.pre(x)))


class TimmAttentions(nn.Module):
    """timm's DaViT window and channel attentions (and V2's) and VOLO's self-attention, whose
    forwards compute the head size from the input width and reshape their output back to it."""

    def __init__(self, fused: bool = False):
        super().__init__()
        from timm.models.davit import ChannelAttention, ChannelAttentionV2, WindowAttention
        from timm.models.volo import Attention
        self.pre, self.post = nn.Linear(32, 32), nn.Linear(32, 4)
        self.window, self.volo = WindowAttention(32, (2, 2), 4), Attention(32, 4)
        self.window.fused_attn = self.volo.fused_attn = fused
        self.channel, self.channel_v2 = ChannelAttention(32, 4), ChannelAttentionV2(32, 4)

    def forward(self, x):
        x = self.pre(x)
        tokens = x + self.window(x) + self.channel(x) + self.channel_v2(x)
        return self.post(tokens + self.volo(x.unflatten(1, (2, 2))).flatten(1, 2))


class CrossCovarianceAttentions(nn.Module):
    """XCiT's and EdgeNeXt's attentions across each head's channels (with a per-head temperature)
    and CaiT's class attention: each reshapes its output to the input's width."""

    def __init__(self, fused: bool = False):
        super().__init__()
        from timm.models.cait import ClassAttn
        from timm.models.edgenext import CrossCovarianceAttn
        from timm.models.xcit import XCA
        self.pre, self.post = nn.Linear(32, 32), nn.Linear(32, 4)
        self.xca, self.edge, self.cls = XCA(32, 4), CrossCovarianceAttn(32, 4), ClassAttn(32, 4)
        self.cls.fused_attn = fused  # XCiT's fused path is experimental in timm (off): its trace shows no heads
        with torch.no_grad():  # distinct temperatures, so that a head's cut takes its own
            self.xca.temperature.copy_(torch.linspace(0.5, 2, 4).view(4, 1, 1))
            self.edge.temperature.copy_(torch.linspace(2, 0.5, 4).view(4, 1, 1))

    def forward(self, x):
        x = self.pre(x)
        y = x + self.xca(x) + self.edge(x)
        return self.post(y + self.cls(y))


class GcvitAttentions(nn.Module):
    """GCViT's window attention, with a global query (repeated over the windows) and without: both
    reshape their output to the input's width and keep a relative-position bias table."""

    def __init__(self):
        super().__init__()
        from timm.models.gcvit import WindowAttentionGlobal
        self.pre, self.query, self.post = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 4)
        self.glob = WindowAttentionGlobal(32, 4, (2, 2), use_global=True)
        self.local = WindowAttentionGlobal(32, 4, (2, 2), use_global=False)

    def forward(self, x):
        x = self.pre(x)
        return self.post(x + self.glob(x, self.query(x[:1])) + self.local(x))


def _relpos_vit(rel_pos_type: str, shared: bool) -> nn.Module:
    """timm's relative-position ViT, one block of 4 heads of 8: its attention reshapes its output to
    the input's width; the position MLP (shared by the blocks, or the block's own) and the bias
    table keep the head count."""
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos
    return VisionTransformerRelPos(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4, mlp_ratio=2,
                                   num_classes=4, rel_pos_type=rel_pos_type, shared_rel_pos=shared)


class UltralyticsAttention(nn.Module):
    """YOLO11's PSA block on the model input: the block's width stays whole, so only whole heads can
    go, and Ultralytics' Attention views its output back to the input's width."""

    def __init__(self):
        super().__init__()
        env = dict(os.environ)  # importing ultralytics sets OMP_NUM_THREADS and more for later subprocesses
        from ultralytics.nn.modules.block import PSABlock
        os.environ.clear()
        os.environ.update(env)
        self.block, self.post = PSABlock(64, attn_ratio=0.5, num_heads=4), nn.Conv2d(64, 8, 1)

    def forward(self, x):
        return self.post(self.block(x))


class Bmm(nn.Module):
    """Scores of two projections by bmm / mm / baddbmm: the contracted hidden dim couples them."""

    def __init__(self, how="bmm"):
        super().__init__()
        self.how = how
        self.a, self.b, self.o = nn.Linear(8, 12), nn.Linear(8, 12), nn.Linear(5, 3)
        self.bias = nn.Parameter(torch.randn(5, 5))

    def forward(self, x):  # x (2, 5, 8), or (5, 8) for mm
        p, q = self.a(x), self.b(x)
        if self.how == "mm":
            return self.o(torch.mm(p, q.t()))
        if self.how == "baddbmm":
            return self.o(torch.baddbmm(self.bias, p, q.transpose(1, 2)))
        return self.o(torch.bmm(p, q.transpose(1, 2)))


class PReLUKernel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.p, self.b = nn.Conv2d(4, 8, 1), nn.PReLU(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):  # the kernel reads the slopes as (C, 1, 1) against (N, C, H, W)
        return self.b(aten._prelu_kernel(self.a(x), self.p.weight.view(-1, 1, 1)))


class Gather(nn.Module):
    """A gather of channels by index: the rule cannot follow index values, so it freezes."""

    def __init__(self, how):
        super().__init__()
        self.how, self.a, self.b = how, nn.Conv2d(4, 8, 1), nn.Conv2d(4, 2, 1)
        self.register_buffer("idx", torch.tensor([0, 2, 4, 6]))

    def forward(self, x):
        y = self.a(x)
        if self.how == "gather":
            z = torch.gather(y, 1, self.idx.view(1, 4, 1, 1).expand(y.shape[0], 4, y.shape[2], y.shape[3]))
        elif self.how == "index_select":
            z = torch.index_select(y, 1, self.idx)
        else:
            z = torch.take_along_dim(y, self.idx.view(1, 4, 1, 1), dim=1)
        return self.b(z)


class StdConv(nn.Conv2d):
    """timm's ScaledStdConv2d (NFNet, BiT): each output channel's weights standardized over their
    fan-in, F.batch_norm(w.reshape(1, O, -1), training=True).reshape_as(w). Its output channels
    cut exactly; its input channels are the statistics' positions, so they stay (or are cut under
    prune_hidden, checked by fidelity)."""

    def __init__(self, c_in=8, c_out=2):
        super().__init__(c_in, c_out, 3, padding=1)
        self.gain = nn.Parameter(torch.rand(c_out, 1, 1, 1) + 0.5)

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         weight=self.gain.view(-1), training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def plus(make: Callable) -> Callable:
    """conv -> y + make() -> conv: a tensor made in forward, added along the channels, fixes their count."""
    return lambda: Lambda(lambda y: y + make().view(-1, 1, 1))


def _after(_, y):
    """y, once the size or check before it has been evaluated (it touches no element)."""
    return y


@dataclass(frozen=True)
class Case:
    rule: str
    op: object
    build: Callable
    shape: tuple = (2, 4, 8, 8)
    expect: str = "prunable"
    ints: int = 0  # >0: integer inputs below this bound

    def inputs(self):
        if self.ints:
            return (torch.randint(0, self.ints, self.shape),)
        return (torch.randn(self.shape),)


FIXED = "frozen:fixed in forward"

RULE_CASES = [
    Case("conv", aten.conv2d.default, lambda: Lambda(nn.Identity())),
    Case("conv", aten.conv1d.default, lambda: nn.Sequential(nn.Conv1d(4, 8, 3), nn.ReLU(), nn.Conv1d(8, 2, 1)), (2, 4, 9)),
    Case("conv", aten.conv3d.default, lambda: nn.Sequential(nn.Conv3d(4, 8, 3), nn.Conv3d(8, 2, 1)), (1, 4, 5, 5, 5)),
    Case("conv", aten.conv2d.default, lambda: Lambda(nn.Conv2d(8, 8, 3, padding=1, groups=2))),
    Case("conv", aten.conv2d.default, lambda: Lambda(nn.Conv2d(8, 8, 3, padding=1, groups=8))),
    Case("conv", aten.conv2d.default, lambda: Lambda(nn.Conv2d(8, 16, 3, padding=1, groups=8), c_out=4,
                                                       after=nn.Conv2d(16, 4, 1))),
    Case("conv_transpose", aten.conv_transpose2d.input, lambda: Lambda(nn.ConvTranspose2d(8, 8, 2, stride=2))),
    Case("conv_transpose", aten.conv_transpose2d.input,
         lambda: Lambda(nn.ConvTranspose2d(8, 8, 2, stride=2, groups=2))),
    Case("conv_transpose", aten.conv_transpose2d.input,
         lambda: Lambda(nn.ConvTranspose2d(8, 8, 2, stride=2, groups=8))),
    Case("conv_transpose", aten.conv_transpose1d.default,
         lambda: nn.Sequential(nn.Conv1d(4, 8, 1), nn.ConvTranspose1d(8, 6, 2), nn.Conv1d(6, 2, 1)), (2, 4, 9)),
    Case("convolution", aten.convolution.default, Convolution, (1, 3, 8, 8)),
    Case("linear", aten.linear.default, lambda: MLP(nn.ReLU()), (2, 3, 8)),
    Case("matmul", aten.matmul.default, MatmulScores, (2, 5, 8)),
    Case("addmm", aten.addmm.default, Addmm, (3, 8)),
    Case("einsum", aten.einsum.default, EinsumHeads, (1, 2, 5, 32)),
    Case("einsum", aten.einsum.default, lambda: MLP(lambda y: torch.einsum("bnh,bmh->bnm", y, y) @ y), (2, 3, 8)),
    Case("embedding", aten.embedding.default, Embed, (2, 7), ints=20),
    Case("sdpa", aten.scaled_dot_product_attention.default, Attention, (2, 5, 16)),
    Case("sdpa", aten.scaled_dot_product_attention.default, Heads, (1, 5, 32)),
    Case("sdpa", aten.scaled_dot_product_attention.default, lambda: Heads(kv_heads=2), (1, 5, 32)),
    Case("sdpa", aten.scaled_dot_product_attention.default, lambda: Heads(bias=True), (1, 5, 32)),
    Case("sdpa", aten.scaled_dot_product_attention.default, MHA, (1, 5, 16)),
    Case("batch_norm", aten.batch_norm.default, lambda: Lambda(nn.BatchNorm2d(8))),
    Case("batch_norm", aten.instance_norm.default, lambda: Lambda(nn.InstanceNorm2d(8, affine=True))),
    Case("batch_norm_no_training", aten._native_batch_norm_legit_no_training.default, NativeBN, (1, 3, 4, 4)),
    Case("group_norm", aten.group_norm.default, lambda: Lambda(nn.GroupNorm(4, 8))),
    Case("group_norm", aten.group_norm.default, lambda: Lambda(nn.GroupNorm(1, 8)), expect="frozen:one group"),
    Case("layer_norm", aten.layer_norm.default, lambda: MLP(nn.LayerNorm(16)), (2, 3, 8), "frozen:normalizes"),
    Case("layer_norm", aten.rms_norm.default, lambda: MLP(nn.RMSNorm(16)), (2, 3, 8), "frozen:normalizes"),
    Case("layer_norm", aten.layer_norm.default, ConvLayerNorm, (2, 3, 10)),
    Case("elementwise", aten.relu.default, lambda: Lambda(nn.ReLU())),
    Case("elementwise", aten.hardswish.default, lambda: Lambda(nn.Hardswish())),
    Case("elementwise", aten.add.Tensor, lambda: Lambda(lambda y: y + y.sigmoid())),
    Case("elementwise", aten.mul.Tensor, lambda: Lambda(lambda y: y * y.mean((2, 3), keepdim=True).sigmoid())),
    Case("elementwise", aten.div.Tensor, lambda: Lambda(lambda y: y / (y.abs() + 1))),
    Case("elementwise", aten.sub.Tensor, lambda: Lambda(lambda y: y - y.amax((2, 3), keepdim=True))),
    Case("prelu", aten.prelu.default, lambda: Lambda(nn.PReLU(8))),
    Case("prelu", aten.prelu.default, lambda: Lambda(nn.PReLU(1))),
    Case("softmax", aten.softmax.int, lambda: Lambda(lambda y: y.softmax(1)), expect="frozen:softmax"),
    Case("softmax", aten.softmax.int, lambda: Lambda(lambda y: y.softmax(-1))),
    Case("reshape", aten.flatten.using_ints,
         lambda: nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 36, 3))),
    Case("reshape", aten.view.default, lambda: MLP(lambda y: y.view(y.shape[0], -1, y.shape[-1])), (2, 3, 8)),
    Case("reshape", aten.view.default, lambda: MLP(lambda y: y.view(y.shape[0], -1, 16)), (2, 3, 8),
         "frozen:does not follow"),
    Case("reshape", aten.unflatten.int, lambda: MLP(lambda y: y.unflatten(-1, (4, 4)).flatten(-2)),
         (2, 3, 8), "frozen:merges"),
    Case("reshape", aten.view.default, lambda: Lambda(shuffle_by_views), expect="prunable"),
    Case("reshape", aten.view.default, lambda: Lambda(lambda y: y.view(y.shape[0], -1, 4, 8, 8).transpose(1, 2)
                                                       .reshape(y.shape[0], 8, 8, 8)), expect="frozen:does not follow"),
    Case("permute", aten.permute.default, lambda: Lambda(lambda y: y.permute(0, 2, 3, 1).permute(0, 3, 1, 2))),
    Case("transpose", aten.transpose.int, lambda: MLP(lambda y: y.transpose(1, 2).transpose(1, 2)), (2, 3, 8)),
    Case("transpose", aten.t.default, lambda: Addmm(), (3, 8)),
    Case("expand", aten.expand.default, lambda: Lambda(lambda y: y + y[:, :, :1, :1].expand(-1, -1, 8, 8))),
    Case("cat", aten.cat.default, lambda: Lambda(lambda y: torch.cat([y, y.relu()], 1), c_out=4,
                                                   after=nn.Conv2d(16, 4, 1))),
    Case("cat", aten.cat.default, lambda: Lambda(lambda y: torch.cat([y, y], 2)[:, :, ::2])),
    Case("split", aten.chunk.default, Split, (1, 3, 4, 4)),
    Case("split_with_sizes", aten.split_with_sizes.default, SplitSizes, (1, 3, 4, 4)),
    Case("split", aten.split.Tensor, lambda: Lambda(lambda y: torch.cat(y.split(3, 1)[::-1], 1)), (1, 4, 4, 4),
         "frozen:unequal pieces"),
    Case("unbind", aten.unbind.int, Unbind, (3, 2, 4)),
    Case("getitem", __import__("operator").getitem, Split, (1, 3, 4, 4)),
    Case("slice_", aten.slice.Tensor, lambda: Lambda(lambda y: y[:, :, 1:-1]), expect="prunable"),
    Case("slice_", aten.slice.Tensor, lambda: Lambda(lambda y: y[:, :4], c_out=2, after=nn.Conv2d(4, 2, 1)),
         expect="frozen:bounds fixed"),
    Case("select", aten.select.int, Select, (2, 3, 4)),
    Case("roll", aten.roll.default, lambda: Lambda(lambda y: torch.roll(y, 1, 1)), expect="frozen:wraps"),
    Case("roll", aten.roll.default, lambda: Lambda(lambda y: torch.roll(y, (1, 2), (2, 3)))),
    Case("flip", aten.flip.default, lambda: Lambda(lambda y: torch.flip(y, [1]))),
    Case("pad", aten.pad.default, lambda: Lambda(lambda y: F.pad(y, (1, 1, 1, 1)))),
    Case("pad", aten.pad.default, lambda: Lambda(lambda y: F.pad(y, (0, 0, 0, 0, 2, 2)), after=nn.Conv2d(12, 4, 1))),
    Case("channel_shuffle", aten.channel_shuffle.default, lambda: Lambda(nn.ChannelShuffle(2))),
    Case("pixel_shuffle", aten.pixel_shuffle.default, lambda: Lambda(nn.PixelShuffle(2), c=16, after=nn.Conv2d(4, 2, 1))),
    Case("pixel_shuffle", aten.pixel_unshuffle.default, lambda: Lambda(nn.PixelUnshuffle(2), after=nn.Conv2d(32, 2, 1))),
    Case("index", aten.index.Tensor, lambda: Lambda(lambda y: y[:, torch.tensor([0, 2, 4, 6])], c_out=2,
                                                     after=nn.Conv2d(4, 2, 1)), expect="frozen:gathers"),
    Case("index", aten.index.Tensor, lambda: Heads(bias=True), (1, 5, 32)),
    Case("reshape", aten.view.default, Heads, (1, 5, 32)),
    Case("unfold", aten.im2col.default, lambda: Lambda(lambda y: F.unfold(y, 3, padding=1).transpose(1, 2),
                                                     after=nn.Linear(72, 4))),
    Case("unfold", aten.col2im.default, lambda: Lambda(lambda y: F.fold(F.unfold(y, 3, padding=1), (8, 8), 3, padding=1))),
    Case("spatial", aten.max_pool2d.default, lambda: Lambda(nn.MaxPool2d(2))),
    Case("spatial", aten.avg_pool2d.default, lambda: Lambda(nn.AvgPool2d(2))),
    Case("spatial", aten.adaptive_avg_pool2d.default, lambda: Lambda(nn.AdaptiveAvgPool2d(3))),
    Case("spatial", aten.upsample_bilinear2d.vec, lambda: Lambda(lambda y: F.interpolate(y, scale_factor=2, mode="bilinear"))),
    Case("spatial", aten.upsample_nearest2d.vec, lambda: Lambda(nn.Upsample(scale_factor=2))),
    Case("sum_", aten.sum.dim_IntList, lambda: Lambda(lambda y: y.sum(1, keepdim=True) * y)),
    Case("expand", aten.expand.default, lambda: Lambda(lambda y: y.sum(1, keepdim=True).expand(-1, 8, -1, -1) * y),
         expect="frozen:broadcasts to a size"),
    Case("repeat", aten.repeat.default, lambda: Lambda(lambda y: y.repeat(1, 2, 1, 1), c_out=16,
                                                      after=nn.Conv2d(16, 4, 1))),  # tiles the channels
    Case("repeat", aten.repeat.default, lambda: Lambda(lambda y: y + y[:1].repeat(2, 1, 1, 1))),  # tiles the batch
    Case("repeat", aten.repeat.default, lambda: Lambda(lambda y: y.unsqueeze(0).repeat(3, 1, 1, 1, 1).sum(0))),
    Case("repeat_interleave", aten.repeat_interleave.self_int,
         lambda: Lambda(lambda y: y.repeat_interleave(2, dim=1), c_out=16, after=nn.Conv2d(16, 4, 1))),  # channels
    Case("repeat_interleave", aten.repeat_interleave.self_int,
         lambda: Lambda(lambda y: y + y[:1].repeat_interleave(2, dim=0))),  # the batch, as GCViT's global query
    Case("repeat_interleave", aten.repeat_interleave.self_int,
         lambda: Lambda(lambda y: y.sum(1, keepdim=True).repeat_interleave(8, dim=1) * y),
         expect="frozen:broadcasts to a size"),  # a broadcast
    Case("vector_norm", aten.linalg_vector_norm.default, lambda: Lambda(lambda y: y / (1 + torch.linalg.vector_norm(y, dim=1, keepdim=True)))),
    Case("mean", aten.mean.dim, lambda: Lambda(lambda y: y - y.mean(1, keepdim=True)), expect="frozen:mean"),
    Case("mean", aten.mean.dim, lambda: Lambda(lambda y: y * y.mean((2, 3), keepdim=True))),
    Case("max_dim", aten.max.dim, lambda: Lambda(lambda y: y * y.max(1, keepdim=True)[0]), expect="frozen:picks"),
    Case("metadata", aten._assert_tensor_metadata.default, Metadata, (1, 3, 4, 4)),
    Case("creation", aten.ones.default, Creation, (1, 3, 4, 4), "frozen:fixed in forward"),
    Case("metadata", aten.numel.default, lambda: Lambda(lambda y: _after(aten.numel.default(y), y))),
    Case("metadata", aten.dim.default, lambda: Lambda(lambda y: _after(aten.dim.default(y), y))),
    Case("conv", aten.conv1d.padding, lambda: nn.Sequential(nn.Conv1d(4, 8, 3, padding="same"), nn.Conv1d(8, 2, 1)), (2, 4, 9)),
    Case("conv", aten.conv2d.padding, lambda: Lambda(nn.Conv2d(8, 8, 3, padding="same"))),
    Case("conv", aten.conv3d.padding, lambda: nn.Sequential(nn.Conv3d(4, 8, 3, padding="same"), nn.Conv3d(8, 2, 1)),
         (1, 4, 4, 4, 4)),
    Case("conv_transpose", aten.conv_transpose3d.input,
         lambda: nn.Sequential(nn.Conv3d(4, 8, 1), nn.ConvTranspose3d(8, 6, 2), nn.Conv3d(6, 2, 1)), (1, 4, 3, 3, 3)),
    Case("matmul", aten.bmm.default, Bmm, (2, 5, 8)),
    Case("matmul", aten.mm.default, lambda: Bmm("mm"), (5, 8)),
    Case("addmm", aten.baddbmm.default, lambda: Bmm("baddbmm"), (2, 5, 8)),
    Case("prelu", aten._prelu_kernel.default, PReLUKernel),
    Case("softmax", aten._softmax.default, lambda: Lambda(lambda y: aten._softmax(y, 1, False)), expect="frozen:softmax"),
    Case("softmax", aten.log_softmax.int, lambda: Lambda(lambda y: F.log_softmax(y, -1))),
    Case("softmax", aten._log_softmax.default, lambda: Lambda(lambda y: aten._log_softmax(y, 1, False)), expect="frozen:softmax"),
    Case("sum_", aten.sum.default, lambda: Lambda(lambda y: y / (1 + y.abs().sum()))),
    Case("sum_", aten.nansum.default, lambda: Lambda(lambda y: y / (1 + torch.nansum(y.abs())))),
    Case("mean", aten.mean.default, lambda: Lambda(lambda y: y - y.mean()), expect="frozen:mean"),
    Case("mean", aten.var.correction,
         lambda: Lambda(lambda y: y / (1 + aten.var.correction(y, [2, 3], correction=1, keepdim=True)))),
    Case("mean", aten.var.dim, lambda: Lambda(lambda y: y / (1 + aten.var.dim(y, [1], True, True))), expect="frozen:var"),
    Case("mean", aten.std.dim, lambda: Lambda(lambda y: y / (1 + aten.std.dim(y, [2, 3], True, True)))),
    Case("mean", aten.std.correction,
         lambda: Lambda(lambda y: y / (1 + aten.std.correction(y, [1], correction=1, keepdim=True))), expect="frozen:std"),
    Case("mean", aten.amax.default, lambda: Lambda(lambda y: y - y.amax(1, keepdim=True)), expect="frozen:amax"),
    Case("mean", aten.amin.default, lambda: Lambda(lambda y: y - y.amin((2, 3), keepdim=True))),
    Case("mean", aten.logsumexp.default, lambda: Lambda(lambda y: y - torch.logsumexp(y, 1, keepdim=True)),
         expect="frozen:logsumexp"),
    Case("mean", aten.var_mean.correction,
         lambda: Lambda(lambda y: y - aten.var_mean.correction(y, [2, 3], correction=1, keepdim=True)[1])),
    Case("max_dim", aten.min.dim, lambda: Lambda(lambda y: y * y.min(3, keepdim=True)[0])),
    Case("max_dim", aten.argmax.default, lambda: Lambda(lambda y: y * y.argmax(1, keepdim=True)), expect="frozen:picks"),
    Case("max_dim", aten.argmin.default, lambda: Lambda(lambda y: y * y.argmin(3, keepdim=True))),
    Case("index", aten.gather.default, lambda: Gather("gather"), expect="frozen:gathers"),
    Case("index", aten.index_select.default, lambda: Gather("index_select"), expect="frozen:gathers"),
    Case("index", aten.take_along_dim.default, lambda: Gather("take_along_dim"), expect="frozen:gathers"),
    Case("creation", aten.arange.default, plus(lambda: torch.arange(8.0)), expect=FIXED),
    Case("creation", aten.arange.start, plus(lambda: torch.arange(1.0, 9.0)), expect=FIXED),
    Case("creation", aten.arange.start_step, plus(lambda: torch.arange(0.0, 16.0, 2.0)), expect=FIXED),
    Case("creation", aten.zeros.default, plus(lambda: torch.zeros(8)), expect=FIXED),
    Case("creation", aten.full.default, plus(lambda: torch.full((8,), 0.5)), expect=FIXED),
    Case("creation", aten.empty.memory_format, plus(lambda: torch.empty(8).copy_(torch.ones(8))), expect=FIXED),
    Case("creation", aten.scalar_tensor.default, plus(lambda: aten.scalar_tensor(0.5).expand(8)), expect=FIXED),
    Case("creation", aten.rand.default, plus(lambda: torch.rand(8) * 0), expect=FIXED),
    Case("creation", aten.randn.default, plus(lambda: torch.randn(8) * 0), expect=FIXED),
    Case("reshape", aten.reshape.default, lambda: MLP(lambda y: y.reshape(y.shape[0], -1, y.shape[-1])), (2, 3, 8)),
    Case("reshape", aten._unsafe_view.default,
         lambda: MLP(lambda y: aten._unsafe_view(y, [y.shape[0], -1, y.shape[-1]])), (2, 3, 8)),
    Case("reshape", aten.squeeze.dim, lambda: MLP(lambda y: y.unsqueeze(1).squeeze(1)), (2, 3, 8)),
    Case("reshape", aten.squeeze.dims, lambda: MLP(lambda y: y[:, None, :, None].squeeze((1, 3))), (2, 3, 8)),
    Case("reshape", aten.squeeze.default, lambda: MLP(lambda y: y[:, None].squeeze()), (2, 3, 8)),
    Case("reshape", aten.unsqueeze.default, lambda: Lambda(lambda y: y.unsqueeze(2).flatten(1, 2))),
    Case("reshape", aten.view_as.default, lambda: MLP(lambda y: y.view(-1, 16).relu().view_as(y)), (2, 3, 8)),
    Case("reshape", aten.reshape_as.default, lambda: MLP(lambda y: y.reshape(-1, 16).relu().reshape_as(y)), (2, 3, 8)),
    Case("reshape", aten.reshape_as.default, lambda: Lambda(StdConv(8, 8)), expect="prunable"),
    Case("reshape", aten.reshape_as.default, lambda: Lambda(nn.Identity(), after=StdConv()),
         expect="frozen:statistics over this dim"),
    Case("transpose", aten.swapaxes.default, lambda: MLP(lambda y: y.swapaxes(1, 2).swapaxes(1, 2)), (2, 3, 8)),
    Case("transpose", aten.movedim.int, lambda: Lambda(lambda y: y.movedim(1, 3).movedim(3, 1))),
    Case("expand", aten.expand_as.default, lambda: Lambda(lambda y: y + y[:, :, :1, :1].expand_as(y))),
    Case("batch_norm", aten.batch_norm.default, lambda: Lambda(lambda y: F.batch_norm(y, None, None, training=True))),
    Case("cat", aten.concat.default, lambda: Lambda(lambda y: torch.concat([y, y.relu()], 1), after=nn.Conv2d(16, 4, 1))),
    Case("split", aten.tensor_split.sections,
         lambda: Lambda(lambda y: sum(torch.tensor_split(y, 2, 1)), after=nn.Conv2d(4, 2, 1))),
    Case("pad", aten.constant_pad_nd.default, lambda: Lambda(lambda y: aten.constant_pad_nd(y, [1, 1, 1, 1]))),
    Case("channel_shuffle", aten.native_channel_shuffle.default, lambda: Lambda(lambda y: aten.native_channel_shuffle(y, 2))),
]


def _case_id(c: Case) -> str:
    return f"{c.rule}-{getattr(c.op, '__name__', str(c.op))}-{RULE_CASES.index(c)}"


def _check(model: nn.Module, inputs: tuple, expect: str):
    a = hwprune.analyze(model, inputs)
    groups = a.to_json()["groups"]
    if a.prunable:
        slim, report = hwprune.slim(model, inputs, ratio=0.5)
        assert report["verify"]["passed"] and report["verify"]["max_rel_err"] <= 1e-4
        groups = report["groups"]
        if expect == "prunable":
            assert any(g["width_after"] < g["width_before"] for g in groups), "a prunable group was left whole"
            assert report["params"]["after"] < report["params"]["before"]
    else:
        assert expect != "prunable", a.explain()
    if expect.startswith("frozen:"):
        words = expect.split(":", 1)[1]
        assert any(g["frozen"] and words in g["frozen"] for g in groups), groups


@pytest.mark.parametrize("case", RULE_CASES, ids=_case_id)
def test_rule(case: Case):
    torch.manual_seed(0)
    model = case.build().eval()
    inputs = case.inputs()
    a = hwprune.analyze(model, inputs)
    targets = {n.target for n in a.graph.traced.graph.nodes if n.op == "call_function"}
    assert case.op in targets, f"{case.op} not in the traced graph: {sorted(map(str, targets))}"
    assert RULES[case.op].__name__ == case.rule
    _check(model, inputs, case.expect)


@dataclass(frozen=True)
class CallCase:
    """An op that torch.export does not emit for a model with static shapes (it reads sizes, or
    builds a tensor from a Python list): its rule is checked on one hand-made call instead. The
    Coupling must cover every dim of every tensor the call touches (as grouping requires), and
    `expect` says how: "free" (touched, never linked or frozen) or "frozen:<words>"."""
    rule: str
    op: object
    args: tuple
    expect: str
    value: Callable | None = None  # the call's result where op(*args) cannot compute it


CALL_CASES = [
    CallCase("metadata", aten.sym_size.int, (torch.randn(2, 3), 1), "free"),
    CallCase("metadata", aten.size.default, (torch.randn(2, 3),), "free"),
    CallCase("metadata", aten.sym_numel.default, (torch.randn(2, 3),), "free"),
    CallCase("metadata", aten.sym_stride.int, (torch.randn(2, 3), 0), "free"),
    CallCase("metadata", aten._assert_scalar.default, (True, "a check on sizes"), "free"),
    CallCase("metadata", aten.sym_constrain_range_for_size.default, (3,), "free"),
    CallCase("creation", aten.tensor.default, ([0.5, 1.0, 2.0],), FIXED, lambda data: torch.tensor(data)),
]


def _one_call(case: CallCase):
    """An fx graph of placeholders and one call of the op, with the values export would record."""
    g = torch.fx.Graph()
    args = tuple(_placeholder(g, f"t{i}", a) if isinstance(a, torch.Tensor) else a for i, a in enumerate(case.args))
    node = g.call_function(case.op, args)
    node.meta["val"] = case.value(*case.args) if case.value else case.op(*case.args)
    return node


def _placeholder(g, name: str, value: torch.Tensor):
    p = g.placeholder(name)
    p.meta["val"] = value
    return p


@pytest.mark.parametrize("case", CALL_CASES, ids=lambda c: f"{c.rule}-{c.op}")
def test_rule_on_a_call(case: CallCase):
    from hwprune.graph.rules import OpCall
    node = _one_call(case)
    shapes = {n.name: tuple(n.meta["val"].shape) for n in [*node.all_input_nodes, node]
              if isinstance(n.meta["val"], torch.Tensor)}
    tid = lambda a: a.name if isinstance(a, torch.fx.Node) and a.name in shapes else None  # noqa: E731
    load_all()
    assert RULES[case.op].__name__ == case.rule
    c = RULES[case.op](OpCall(node, shapes.__getitem__, tid, "test"))
    touched = {(t, d) for t, shape in shapes.items() for d in range(len(shape))}
    frozen = {f.slot for f in c.freezes}
    covered = {l.a for l in c.links} | {l.b for l in c.links} | frozen | set(c.free)
    assert touched <= covered, f"dims the rule leaves out: {sorted(touched - covered)}"
    if case.expect == "free":
        assert not c.links and not c.freezes and set(c.free) == touched, c
    else:
        words = case.expect.split(":", 1)[1]
        out = {(node.name, d) for d in range(len(shapes[node.name]))}
        assert out <= frozen and all(words in f.reason for f in c.freezes), c


def explicit_overloads() -> dict:
    """{op overload: rule name} for every overload that a @rule decorator in graph/rules lists by
    name, or through a module-level tuple of them (conv's CONVS). Overloads that a rule generates
    from a list of op names (elementwise, spatial: every overload of ~100 ops) are not included;
    test_every_rule_has_a_row holds those families to a row each."""
    import ast
    import importlib
    from pathlib import Path
    import hwprune.graph.rules as rules
    found = {}
    for path in sorted(Path(rules.__file__).parent.glob("*.py")):
        module = importlib.import_module(f"{rules.__name__}.{path.stem}") if path.stem != "__init__" else rules
        for fn in ast.walk(ast.parse(path.read_text())):
            for deco in getattr(fn, "decorator_list", []):
                if not (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "rule"):
                    continue
                for arg in deco.args:
                    if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Call):
                        continue  # generated from names
                    value = eval(ast.unparse(arg.value if isinstance(arg, ast.Starred) else arg), vars(module))
                    for op in (value if isinstance(arg, ast.Starred) else [value]):
                        found[op] = fn.name
    return found


def test_every_rule_has_a_row():
    names = {fn.__name__ for fn in load_all().values()}
    missing = names - {c.rule for c in RULE_CASES}
    assert not missing, f"rules without a RULE_CASES row: {sorted(missing)}"


def test_every_listed_overload_has_a_row():
    listed = explicit_overloads()
    assert len(listed) > 100 and aten.squeeze.dim in listed and aten.gather.default in listed
    rows = {c.op for c in [*RULE_CASES, *CALL_CASES]}
    missing = sorted(f"{op} ({name})" for op, name in listed.items() if op not in rows)
    assert not missing, f"overloads that a rule lists without a RULE_CASES or CALL_CASES row: {missing}"


def test_duplicate_rule_is_rejected():
    from hwprune.graph.rules import rule
    with pytest.raises(ValueError, match="two rules"):
        rule(aten.conv2d.default)(lambda op: None)


def _timm_scale(dim: int) -> nn.Module:
    from timm.models.metaformer import Scale  # MetaFormer's per-channel factor: its width is in .shape
    return Scale(dim, init_value=0.5)


CUTTER_CASES = [
    ("conv", lambda: Lambda(nn.Conv2d(8, 8, 3, padding=1, groups=8)), (1, 4, 6, 6)),
    ("conv", lambda: Lambda(nn.ConvTranspose2d(8, 8, 2, groups=8)), (1, 4, 6, 6)),
    ("linear", lambda: MLP(nn.GELU()), (2, 8)),
    ("batch_norm", lambda: Lambda(nn.BatchNorm2d(8)), (2, 4, 6, 6)),
    ("group_norm", lambda: Lambda(nn.GroupNorm(4, 8)), (2, 4, 6, 6)),
    ("group_norm", lambda: Lambda(nn.GroupNorm(1, 8)), (2, 4, 6, 6)),  # one group: under prune_hidden
    ("layer_norm", ConvLayerNorm, (2, 3, 10)),
    ("prelu", lambda: Lambda(nn.PReLU(8)), (2, 4, 6, 6)),
    ("embedding", Embed, (2, 7)),
    ("conv1d_transposed_linear", GPT2MLP, (2, 3, 8)),
    ("multihead_attention", MHA, (1, 5, 16)),
    ("weight_only_norm", RMSNormMLP, (2, 8)),
    ("layer_norm", lambda: TimmNormMLP("SimpleNorm"), (2, 8)),
    ("layer_norm", lambda: TimmNormMLP("RmsNorm"), (2, 8)),
    ("window_attention", WindowAttention, (1, 8, 8, 32)),
    ("timm_attention", TimmAttentions, (2, 4, 32)),
    ("timm_attention", lambda: TimmAttentions(fused=True), (2, 4, 32)),
    ("timm_scale", lambda: Lambda(_timm_scale(8)), (2, 4, 6, 6)),
    ("ultralytics_attention", UltralyticsAttention, (1, 64, 6, 6)),
    ("timm_attention", lambda: _relpos_vit("mlp", shared=True), (1, 3, 32, 32)),
    ("timm_rel_pos_mlp", lambda: _relpos_vit("mlp", shared=True), (1, 3, 32, 32)),
    ("timm_rel_pos_mlp", lambda: _relpos_vit("mlp", shared=False), (1, 3, 32, 32)),
    ("timm_rel_pos_bias", lambda: _relpos_vit("bias", shared=False), (1, 3, 32, 32)),
    ("timm_attention", GcvitAttentions, (2, 4, 32)),
    ("timm_attention", CrossCovarianceAttentions, (2, 5, 32)),
    ("timm_attention", lambda: CrossCovarianceAttentions(fused=True), (2, 5, 32)),
    ("timm_rel_pos_bias", GcvitAttentions, (2, 4, 32)),
]


@pytest.mark.parametrize("name,build,shape", CUTTER_CASES, ids=[c[0] + str(i) for i, c in enumerate(CUTTER_CASES)])
def test_cutter(name, build, shape):
    torch.manual_seed(0)
    model = build().eval()
    inputs = (torch.randint(0, 20, shape),) if name == "embedding" else (torch.randn(shape),)
    # a norm over the hidden size is cut only under prune_hidden
    one_group = any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in model.modules())
    slim, report = hwprune.slim(model, inputs, ratio=0.5,
                                prune_hidden=name == "weight_only_norm" or isinstance(model, TimmNormMLP) or one_group)
    cut_modules = [m for m in slim.modules() if cutter_for(m) is not None and cutter_for(m).__name__ == name]
    assert cut_modules
    if one_group:  # the norm's channels were cut, not left whole
        assert all(m.num_channels < 8 for m in cut_modules)
    for m in cut_modules:  # the module's size attributes agree with its tensors
        assert _attrs_match(m), f"{type(m).__name__} attributes disagree with its weights: {m}"


def _attrs_match(m: nn.Module) -> bool:
    if isinstance(m, nn.modules.conv._ConvNd):
        w = m.weight.shape
        return (w[0] == m.out_channels and w[1] * m.groups == m.in_channels) if not m.transposed else (
            w[0] == m.in_channels and w[1] * m.groups == m.out_channels)
    if isinstance(m, nn.Linear):
        return tuple(m.weight.shape) == (m.out_features, m.in_features)
    if isinstance(m, nn.GroupNorm):
        return m.weight.shape[0] == m.num_channels and m.num_channels % m.num_groups == 0
    if isinstance(m, nn.modules.batchnorm._NormBase):
        return m.weight.shape[0] == m.num_features
    if isinstance(m, nn.LayerNorm) or type(m).__module__ == "timm.layers.norm":
        return tuple(m.weight.shape) == tuple(m.normalized_shape)
    if isinstance(m, nn.PReLU):
        return m.weight.numel() == m.num_parameters
    if isinstance(m, nn.Embedding):
        return tuple(m.weight.shape) == (m.num_embeddings, m.embedding_dim)
    if isinstance(m, nn.MultiheadAttention):  # whole heads went; the heads' width is in_proj's rows
        return m.in_proj_weight.shape[0] == 3 * m.num_heads * m.head_dim and m.num_heads < 4
    if type(m).__name__ == "PrunedShiftedWindowAttention":  # 2 of 4 heads went, with their bias
        return m.num_heads == 2 == m.relative_position_bias_table.shape[1] and m.qkv.out_features == 3 * 2 * 8
    if type(m).__name__.startswith("Pruned") and type(m).__module__.endswith("timm_attention"):  # DaViT's, VOLO's
        heads = getattr(m, "groups", getattr(m, "num_heads", None))
        inner = m.q.out_features if hasattr(m, "q") else \
            m.qkv.out_features // (2 if getattr(m, "use_global", False) else 3)  # GCViT's global: k and v
        temperature = getattr(m, "temperature", torch.ones(heads, 1, 1))  # XCiT's, EdgeNeXt's: one per head
        return heads < 4 and heads * 8 == inner and temperature.shape[0] == heads
    if type(m).__name__ == "RelPosMlp":  # its head count follows its MLP; the coordinates stayed whole
        return m.num_heads == m.mlp.fc2.out_features == m.bias_shape[-1] < 4 and m.mlp.fc1.in_features == 2
    if type(m).__name__ == "RelPosBias":
        return m.bias_shape[-1] == m.relative_position_bias_table.shape[1] < 4
    if type(m).__name__ == "PrunedAttention":  # Ultralytics': 2 of 4 heads went
        return m.num_heads == 2 and m.qkv.conv.out_channels == 2 * (2 * m.key_dim + m.head_dim) == 2 * 32
    if type(m).__name__ == "LlamaRMSNorm":
        return tuple(m.weight.shape) == (8,)
    if type(m).__name__ == "Scale":
        return m.shape[0] == m.scale.shape[0] < 8
    if type(m).__name__ == "Conv1D":
        return tuple(m.weight.shape) == (m.nx, m.nf)
    return False


def test_a_timm_without_one_attention_class_keeps_the_other_cutters():
    """A timm release that drops or renames a class: its heads stay frozen, every other cutter loads."""
    import subprocess
    import sys
    code = ("import sys, timm; sys.modules['timm.models.xcit'] = None\n"
            "from hwprune.surgery import CUTTERS, cutter_for\n"
            "import torch; cutter_for(torch.nn.Linear(1, 1))\n"
            "print(sorted(k.__name__ for k, f in CUTTERS.items() if f.__name__ == 'timm_attention'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'XCA'" not in out and "'WindowAttention'" in out and "'ClassAttn'" in out, out


def test_every_cutter_has_a_row():
    cutter_for(nn.Linear(1, 1))  # loads the built-in cutters
    missing = {fn.__name__ for fn in CUTTERS.values()} - {c[0] for c in CUTTER_CASES}
    assert not missing, f"cutters without a CUTTER_CASES row: {sorted(missing)}"


def test_a_silently_wrong_cut_is_found_by_bisection_and_frozen():
    x = (torch.randn(1, 3, 4, 4),)
    slim, report = hwprune.slim(SilentLiteral().eval(), x, ratio=0.5)
    assert report["verify"]["passed"]
    assert any(g["frozen"] and "bisection" in g["frozen"] for g in report["groups"]), report["groups"]


def test_widths_keep_the_most_important_channels_of_each_listed_group():
    model = Lambda(nn.ReLU()).eval()
    x = (torch.randn(1, 4, 6, 6),)
    a = hwprune.analyze(model, x)
    g = a.prunable[0]
    slim, report = hwprune.slim(model, x, widths={g.id: 3})
    assert [r["width_after"] for r in report["groups"] if r["id"] == g.id] == [3]
    norms = model.a.weight.detach().pow(2).sum((1, 2, 3)) + model.b.weight.detach().pow(2).sum((0, 2, 3)) \
        + model.a.bias.detach().pow(2)
    assert sorted(report["kept"]["a.weight"]["0"]) == sorted(norms.argsort(descending=True)[:3].tolist())
    with pytest.raises(hwprune.InputError, match="cannot keep 0"):
        hwprune.slim(model, x, widths={g.id: 0})
