"""Random small networks as data, for the property test and the soak benchmark.

A network is a `NetSpec`: a straight-line program of `Step`s over a growing list of values
(value 0 is the image input), each step an op of the table `OPS` with the indices of the values
it reads and its arguments; a head classifies from every value that no step reads, so no
step is dead code. `build(spec)` turns a spec into an `nn.Module` and its input;
`net_specs()` draws specs with hypothesis. A spec prints as plain data, so a failing one pastes
into the regression table of tests/models/test_random_nets.py as it is.

Values have a layout, and each op says which layouts it reads:
  img  (N, C, H, W)   convolution nets
  nhwc (N, H, W, C)   channels last, as ConvNeXt's LayerNorm and pointwise linears run
  tok  (N, T, D)      tokens: linears, LayerNorm, attention; `hw` remembers the image they came from
  vec  (N, F)         flattened features
The channel axis (the one hwprune cuts) is C, D or F. Sizes are read from the tensor (`x.shape`,
-1) as careful code does, except in the `literal` variants, which write a channel count into
forward the way hasty code does: hwprune must then freeze that group (verification finds the
line), never return a wrong model.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

WIDTHS = (2, 3, 4, 6, 8, 12, 16)  # channel counts a layer may produce
MAX_FLAT = 1024  # the widest flatten a vec may have (its linear stays small)
CHANNEL_AXIS = {"img": 1, "nhwc": -1, "tok": -1, "vec": -1}


class Val(NamedTuple):
    layout: str
    shape: tuple  # without the batch dim
    hw: tuple | None = None  # (H, W) of the image a token sequence was flattened from

    @property
    def width(self) -> int:
        return self.shape[0] if self.layout == "img" else self.shape[-1]

    def with_width(self, w: int) -> Val:
        s = (w, *self.shape[1:]) if self.layout == "img" else (*self.shape[:-1], w)
        return self._replace(shape=s)


@dataclass(frozen=True)
class Step:
    op: str
    srcs: tuple
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NetSpec:
    size: int  # the input is (2, 3, size, size)
    steps: tuple
    ratio: float = 0.5
    prune_hidden: bool = False

    @property
    def writes_sizes(self) -> bool:
        """Some step writes a channel count into forward (a `literal` variant): only then may
        verification find a size that does not follow a cut. The token grid that to_image and
        tok_to_nhwc write, (h, w) in every variant, counts where a token_mix makes the token axis
        a group that can be cut: a view that splits a cut axis by written sizes is the case the
        trace cannot tell from a head split, and verification's refreeze is what catches it."""
        if any(s.args.get("literal") or s.args.get("style") == "literal" for s in self.steps):
            return True
        mixed = set()  # values downstream of a token_mix (value 0 is the input, step i makes i + 1)
        for i, s in enumerate(self.steps, 1):
            if s.op == "token_mix" or mixed.intersection(s.srcs):
                mixed.add(i)
            if s.op in ("to_image", "tok_to_nhwc") and mixed.intersection(s.srcs):
                return True
        return False


# ---- modules the steps build ---------------------------------------------------------------------

class Add(nn.Module):
    def forward(self, a, b):
        return a + b


class Cat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, a, b):
        return torch.cat([a, b], self.axis)


class Chunk(nn.Module):
    def __init__(self, axis: int, part: int):
        super().__init__()
        self.axis, self.part = axis, part

    def forward(self, x):
        return x.chunk(2, self.axis)[self.part]


class Permute(nn.Module):
    def __init__(self, dims: tuple):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class Reshape(nn.Module):
    """x.reshape(n, *shape), where shape may hold -1 (read from the tensor) or a literal size."""

    def __init__(self, shape: tuple):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class ToTokens(nn.Module):
    """(N, C, H, W) -> (N, H*W, C), in one of the ways vision transformers write it."""
    STYLES: ClassVar[dict] = {
        "flatten": lambda m, x: x.flatten(2).transpose(1, 2),
        "view": lambda m, x: x.view(x.shape[0], x.shape[1], -1).transpose(1, 2),
        "literal": lambda m, x: x.reshape(x.shape[0], m.channels, -1).permute(0, 2, 1),
    }

    def __init__(self, style: str, channels: int):
        super().__init__()
        self.style, self.channels = style, channels

    def forward(self, x):
        return self.STYLES[self.style](self, x)


class ToImage(nn.Module):
    """(N, H*W, C) -> (N, C, H, W); the channel count from the tensor, or a literal."""

    def __init__(self, hw: tuple, channels: int | None):
        super().__init__()
        self.hw, self.channels = hw, channels

    def forward(self, x):
        return x.transpose(1, 2).reshape(x.shape[0], self.channels or -1, *self.hw)


class ChannelShuffle(nn.Module):
    """ShuffleNet's shuffle written by hand: view(n, g, c/g, h, w), swap the two, merge back."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SelfOrCross(nn.Module):
    """Runs nn.MultiheadAttention on one token sequence, or queries from one and keys from another."""

    def __init__(self, attn: nn.MultiheadAttention, need_weights: bool):
        super().__init__()
        self.attn, self.need_weights = attn, need_weights

    def forward(self, x, memory=None):
        memory = x if memory is None else memory
        return self.attn(x, memory, memory, need_weights=self.need_weights)[0]


class Attention(nn.Module):
    """Multi-head attention written by hand: q/k/v projections (separate or one packed qkv),
    a view to (N, T, heads, head_dim), the product (softmax(q k^T / sqrt(d)) v by hand, or
    scaled_dot_product_attention), the heads merged back and an output projection. hwprune cuts
    whole heads and sets num_heads after the cut (hwprune.surgery.attention.head_attributes)."""

    def __init__(self, d_in: int, d_mem: int, heads: int, head_dim: int, d_out: int, packed: bool,
                 product: str, merge: str):
        super().__init__()
        self.num_heads, self.head_dim, self.product, self.merge = heads, head_dim, product, merge
        inner = heads * head_dim
        if packed:
            self.qkv = nn.Linear(d_in, 3 * inner)
        else:
            self.q, self.k, self.v = nn.Linear(d_in, inner), nn.Linear(d_mem, inner), nn.Linear(d_mem, inner)
        self.proj = nn.Linear(inner, d_out)

    def split(self, t):  # (N, T, heads*d) -> (N, heads, T, d)
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, memory=None):
        if hasattr(self, "qkv"):  # timm's packed projection: (N, T, 3, heads, d) -> 3 x (N, heads, T, d)
            n, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            memory = x if memory is None else memory
            q, k, v = self.split(self.q(x)), self.split(self.k(memory)), self.split(self.v(memory))
        if self.product == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1) @ v
        o = o.transpose(1, 2)
        o = o.reshape(o.shape[0], o.shape[1], -1) if self.merge == "infer" else o.flatten(2)
        return self.proj(o)


class TokenMix(nn.Module):
    """MLP-Mixer's token mixing: a hidden layer across tokens, applied per channel."""

    def __init__(self, tokens: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(tokens, hidden), nn.Linear(hidden, tokens)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x.transpose(1, 2)))).transpose(1, 2)


class Head(nn.Module):
    """Classify into 5 from every value no step reads (the leaves), each reduced to (N, width):
    the sum of a linear of each, so that no step is dead code."""
    REDUCE: ClassVar[dict] = {"img": lambda x: x.mean((2, 3)), "nhwc": lambda x: x.mean((1, 2)),
                              "tok": lambda x: x.mean(1), "vec": lambda x: x}

    def __init__(self, leaves: list):
        super().__init__()
        self.leaves = [(i, v.layout) for i, v in leaves]
        self.fcs = nn.ModuleList(nn.Linear(v.width, 5) for _, v in leaves)

    def forward(self, vals: list):
        return sum(fc(self.REDUCE[layout](vals[i])) for (i, layout), fc in zip(self.leaves, self.fcs))


class RandomNet(nn.Module):
    """Runs the program: vals[0] is the input, and step i appends steps[i](*vals[srcs[i]])."""

    def __init__(self, modules: list, srcs: list, head: Head):
        super().__init__()
        self.steps, self.srcs, self.head = nn.ModuleList(modules), srcs, head

    def forward(self, x):
        vals = [x]
        for m, srcs in zip(self.steps, self.srcs):
            vals.append(m(*[vals[i] for i in srcs]))
        return self.head(vals)


# ---- the op table: how each op is drawn and built ---------------------------------------------------
# draw(draw, vals, src) -> (srcs, args), or None where the op does not fit vals[src];
# build(ins: list of Val, **args) -> (module, Val of its output).

def _partner(draw, vals: list, src: int, ok: Callable) -> int | None:
    """Another value for a binary op: one for which ok(value) holds, or None."""
    found = [j for j, v in enumerate(vals) if j != src and ok(v)]
    return draw(st.sampled_from(found)) if found else None


def _width(draw, like: int) -> int:
    """A layer's output width: as often its input's (so that residual adds find partners) as any other."""
    return draw(st.sampled_from([like, like, *WIDTHS]))


def _unary(args_of: Callable) -> Callable:
    def drawn(draw, vals, src):
        args = args_of(draw, vals[src])
        return None if args is None else ((src,), args)
    return drawn


def _divisors(n: int, of=(1, 2, 3, 4)) -> list:
    return [d for d in of if n % d == 0]


def build_conv(ins, out, k, groups):
    (x,) = ins
    return nn.Conv2d(x.width, out, k, padding=k // 2, groups=groups), x.with_width(out)


def draw_conv(draw, x):
    out = _width(draw, x.width)
    return {"out": out, "k": draw(st.sampled_from([1, 3])),
            "groups": draw(st.sampled_from([g for g in (1, 2, 4) if x.width % g == 0 and out % g == 0]))}


def build_dwconv(ins, mult):
    (x,) = ins
    return nn.Conv2d(x.width, x.width * mult, 3, padding=1, groups=x.width), x.with_width(x.width * mult)


NORMS = {"img": nn.BatchNorm2d, "vec": nn.BatchNorm1d}


def build_bn(ins):
    (x,) = ins
    return NORMS[x.layout](x.width), x


def build_gn(ins, groups):
    (x,) = ins
    return nn.GroupNorm(groups, x.width), x


def build_ln(ins):
    (x,) = ins
    return nn.LayerNorm(x.width), x


ACTS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "hardswish": nn.Hardswish}


def build_act(ins, fn):
    return ACTS[fn](), ins[0]


def build_pool(ins, kind):
    (x,) = ins
    c, h, w = x.shape
    return {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[kind](2), x._replace(shape=(c, h // 2, w // 2))


def build_linear(ins, out):
    (x,) = ins
    return nn.Linear(x.width, out), x.with_width(out)


def _same_but_width(a: Val, b: Val) -> bool:
    return a.layout == b.layout and a.with_width(0).shape == b.with_width(0).shape


def draw_add(draw, vals, src):
    j = _partner(draw, vals, src, lambda v: v.layout == vals[src].layout and v.shape == vals[src].shape)
    return None if j is None else ((src, j), {})


def build_add(ins):
    return Add(), ins[0]


def draw_cat(draw, vals, src):
    j = _partner(draw, vals, src, lambda v: _same_but_width(v, vals[src]))
    return None if j is None else ((src, j), {})


def build_cat(ins):
    a, b = ins
    return Cat(CHANNEL_AXIS[a.layout]), a.with_width(a.width + b.width)


def build_chunk(ins, part):
    (x,) = ins
    return Chunk(CHANNEL_AXIS[x.layout], part), x.with_width(x.width // 2)


def draw_shuffle(draw, x):
    fits = [g for g in (2, 3, 4) if x.width % g == 0 and x.width > g]
    return {"groups": draw(st.sampled_from(fits))} if fits else None


def build_shuffle(ins, groups):
    return ChannelShuffle(groups), ins[0]


def build_to_tokens(ins, style):
    (x,) = ins
    c, h, w = x.shape
    return ToTokens(style, c), Val("tok", (h * w, c), (h, w))


def build_to_image(ins, literal):
    (x,) = ins
    (h, w), c = x.hw, x.width
    return ToImage((h, w), c if literal else None), Val("img", (c, h, w), (h, w))


def build_to_nhwc(ins):
    c, h, w = ins[0].shape
    return Permute((0, 2, 3, 1)), Val("nhwc", (h, w, c))


def build_nhwc_to_img(ins):
    h, w, c = ins[0].shape
    return Permute((0, 3, 1, 2)), Val("img", (c, h, w))


def build_nhwc_to_tok(ins, literal):
    h, w, c = ins[0].shape
    return Reshape((-1, c) if literal else (h * w, -1)), Val("tok", (h * w, c), (h, w))


def build_tok_to_nhwc(ins, literal):
    (x,) = ins
    (h, w), c = x.hw, x.width
    return Reshape((h, w, c) if literal else (h, w, -1)), Val("nhwc", (h, w, c))


def build_flatten(ins, style):
    (x,) = ins
    n = 1
    for s in x.shape:
        n *= s
    return (nn.Flatten() if style == "flatten" else Reshape((-1,))), Val("vec", (n,))


def draw_mha(draw, vals, src):
    x = vals[src]
    heads = draw(st.sampled_from(_divisors(x.width)))
    j = _partner(draw, vals, src, lambda v: v.layout == "tok") if draw(st.booleans()) else None
    return (src,) if j is None else (src, j), {"heads": heads, "need_weights": draw(st.booleans())}


def build_mha(ins, heads, need_weights):
    x, mem = ins[0], ins[-1]
    attn = nn.MultiheadAttention(x.width, heads, batch_first=True, kdim=mem.width, vdim=mem.width)
    return SelfOrCross(attn, need_weights), x


def draw_attention(draw, vals, src):
    x = vals[src]
    packed = draw(st.booleans())
    j = None if packed or not draw(st.booleans()) else _partner(draw, vals, src, lambda v: v.layout == "tok")
    args = {"heads": draw(st.integers(1, 4)), "head_dim": draw(st.sampled_from([2, 4])),
            "out": _width(draw, x.width), "packed": packed, "product": draw(st.sampled_from(["sdpa", "matmul"])),
            "merge": draw(st.sampled_from(["infer", "flatten"]))}
    return (src,) if j is None else (src, j), args


def build_attention(ins, heads, head_dim, out, packed, product, merge):
    x, mem = ins[0], ins[-1]
    return Attention(x.width, mem.width, heads, head_dim, out, packed, product, merge), x.with_width(out)


def build_token_mix(ins, hidden):
    (x,) = ins
    return TokenMix(x.shape[0], hidden), x


class OpGen(NamedTuple):
    layouts: tuple
    draw: Callable
    build: Callable
    weight: int = 1  # how often it is drawn against the others that fit (attention is rare otherwise)


ALL = tuple(CHANNEL_AXIS)
OPS = {
    "conv": OpGen(("img",), _unary(draw_conv), build_conv, 2),
    "dwconv": OpGen(("img",), _unary(lambda d, x: {"mult": d(st.sampled_from([1, 2]))}), build_dwconv),
    "bn": OpGen(("img", "vec"), _unary(lambda d, x: {}), build_bn),
    "gn": OpGen(("img",), _unary(lambda d, x: {"groups": d(st.sampled_from(_divisors(x.width)))}), build_gn),
    "ln": OpGen(("tok", "nhwc", "vec"), _unary(lambda d, x: {}), build_ln, 2),
    "act": OpGen(ALL, _unary(lambda d, x: {"fn": d(st.sampled_from(sorted(ACTS)))}), build_act),
    "pool": OpGen(("img",), _unary(lambda d, x: {"kind": d(st.sampled_from(["max", "avg"]))} if x.shape[1] >= 4
                                    else None), build_pool),
    "linear": OpGen(("tok", "nhwc", "vec"), _unary(lambda d, x: {"out": _width(d, x.width)}), build_linear, 2),
    "add": OpGen(ALL, draw_add, build_add, 3),
    "cat": OpGen(ALL, draw_cat, build_cat, 2),
    "chunk": OpGen(ALL, _unary(lambda d, x: {"part": d(st.integers(0, 1))} if x.width % 2 == 0 else None),
                   build_chunk),
    "shuffle": OpGen(("img",), _unary(draw_shuffle), build_shuffle),
    "to_tokens": OpGen(("img",), _unary(lambda d, x: {"style": d(st.sampled_from(sorted(ToTokens.STYLES)))}),
                       build_to_tokens, 3),
    "to_image": OpGen(("tok",), _unary(lambda d, x: {"literal": d(st.booleans())} if x.hw else None),
                      build_to_image),
    "to_nhwc": OpGen(("img",), _unary(lambda d, x: {}), build_to_nhwc),
    "nhwc_to_img": OpGen(("nhwc",), _unary(lambda d, x: {}), build_nhwc_to_img),
    "nhwc_to_tok": OpGen(("nhwc",), _unary(lambda d, x: {"literal": d(st.booleans())}), build_nhwc_to_tok),
    "tok_to_nhwc": OpGen(("tok",), _unary(lambda d, x: {"literal": d(st.booleans())} if x.hw else None),
                         build_tok_to_nhwc),
    "flatten": OpGen(("img", "nhwc", "tok"), _unary(
        lambda d, x: {"style": d(st.sampled_from(["flatten", "reshape"]))}
        if _numel(x) <= MAX_FLAT else None), build_flatten),
    "mha": OpGen(("tok",), draw_mha, build_mha, 3),
    "attention": OpGen(("tok",), draw_attention, build_attention, 4),
    "token_mix": OpGen(("tok",), _unary(lambda d, x: {"hidden": d(st.sampled_from(WIDTHS))}), build_token_mix),
}


def _numel(x: Val) -> int:
    n = 1
    for s in x.shape:
        n *= s
    return n


# ---- specs to modules, and the strategy ----------------------------------------------------------

def _input_val(size: int) -> Val:
    return Val("img", (3, size, size), (size, size))


def _apply(vals: list, step: Step):
    try:
        return OPS[step.op].build([vals[i] for i in step.srcs], **step.args)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise ValueError(f"{step} does not fit the values {[vals[i] for i in step.srcs if i < len(vals)]}: {e}") from e


def build(spec: NetSpec, seed: int = 0) -> tuple:
    """(RandomNet, example inputs) of a spec; weights from torch's default init under `seed`."""
    torch.manual_seed(seed)
    vals, modules = [_input_val(spec.size)], []
    for step in spec.steps:
        m, v = _apply(vals, step)
        modules.append(m)
        vals.append(v)
    read = {i for s in spec.steps for i in s.srcs}
    leaves = [(i, v) for i, v in enumerate(vals) if i not in read and (i > 0 or len(vals) == 1)]
    net = RandomNet(modules, [s.srcs for s in spec.steps], Head(leaves))
    return net, (torch.randn(2, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(seed)),)


@st.composite
def net_specs(draw, max_steps: int = 12):
    """A NetSpec of a conv stem and up to max_steps - 1 drawn steps (a step that does not fit where
    it lands is skipped). Without a stem most programs only moved the input's 3 channels around,
    which has nothing to prune. Sources lean to the newest value, so programs grow deep as well as wide."""
    size = draw(st.sampled_from([8, 16]))
    vals, steps = [_input_val(size)], []
    stem = Step("conv", *OPS["conv"].draw(draw, vals, 0))
    vals.append(_apply(vals, stem)[1])
    steps.append(stem)
    for _ in range(draw(st.integers(1, max_steps - 1))):
        src = len(vals) - 1 if draw(st.booleans()) else draw(st.integers(0, len(vals) - 1))
        name = draw(st.sampled_from([n for n, o in OPS.items() if vals[src].layout in o.layouts
                                     for _ in range(o.weight)]))
        got = OPS[name].draw(draw, vals, src)
        if got is None:
            continue
        step = Step(name, *got)
        vals.append(_apply(vals, step)[1])
        steps.append(step)
    return NetSpec(size, tuple(steps), draw(st.sampled_from([0.25, 0.5, 0.75])),
                   draw(st.sampled_from([False, False, False, True])))
