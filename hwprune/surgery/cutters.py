"""Built-in cutters: after slicing, each sets its module's size attributes from the new tensors."""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from .registry import ModuleCut, register_cutter


@register_cutter(_ConvNd)
def conv(m: _ConvNd, c: ModuleCut) -> None:
    old_cpg = m.in_channels // m.groups
    new_in = c.new_in_shape[1] if c.new_in_shape else None
    if m.transposed:
        m.in_channels = m.weight.shape[0]
        if old_cpg == 1 and m.groups > 1:  # depthwise: whole groups went
            m.groups = m.in_channels
        m.out_channels = m.weight.shape[1] * m.groups
        return
    m.in_channels = new_in if new_in is not None else m.weight.shape[1] * m.groups
    m.groups = m.in_channels // m.weight.shape[1]
    m.out_channels = m.weight.shape[0]


@register_cutter(nn.Linear)
def linear(m: nn.Linear, c: ModuleCut) -> None:
    m.out_features, m.in_features = m.weight.shape


@register_cutter(_NormBase)
def batch_norm(m: _NormBase, c: ModuleCut) -> None:
    """Batch and instance norm: statistics are per channel."""
    if m.weight is not None:
        m.num_features = m.weight.shape[0]
    elif m.running_mean is not None:
        m.num_features = m.running_mean.shape[0]
    elif c.new_in_shape:
        m.num_features = c.new_in_shape[1]


@register_cutter(nn.GroupNorm)
def group_norm(m: nn.GroupNorm, c: ModuleCut) -> None:
    per = m.num_channels // m.num_groups  # whole groups are cut, so the group size stays
    m.num_channels = m.weight.shape[0] if m.weight is not None else c.new_in_shape[1]
    # one group stays one (its channels are cut one by one, under prune_hidden)
    m.num_groups = 1 if m.num_groups == 1 else m.num_channels // per


@register_cutter(nn.LayerNorm, nn.RMSNorm)
def layer_norm(m, c: ModuleCut) -> None:
    k = len(m.normalized_shape)
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)
    elif c.new_in_shape:
        m.normalized_shape = tuple(c.new_in_shape[-k:])


@register_cutter(nn.PReLU)
def prelu(m: nn.PReLU, c: ModuleCut) -> None:
    m.num_parameters = m.weight.numel()


@register_cutter(nn.Embedding)
def embedding(m: nn.Embedding, c: ModuleCut) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape
