"""timm's own norm layers: subclasses of nn.Module, not of nn.LayerNorm, that keep
`normalized_shape` as nn.LayerNorm does; registered by qualified name once timm is imported.
They normalize over the channels, so they are cut only under --prune-hidden. And MetaFormer's
`Scale` (a per-channel factor, `x * scale.view(shape)`), which keeps its width in `shape`, and
the relative-position MLP and bias table, which keep their head count."""
from __future__ import annotations

from .cutters import layer_norm
from .registry import register_cutter

TIMM_NORMS = tuple(f"timm.layers.norm.{c}" for c in (
    "RmsNorm", "RmsNorm2d", "RmsNormFp32", "RmsNorm2dFp32",
    "SimpleNorm", "SimpleNorm2d", "SimpleNormFp32", "SimpleNorm2dFp32"))

register_cutter(*TIMM_NORMS)(layer_norm)


@register_cutter("timm.models.metaformer.Scale")
def timm_scale(m, c) -> None:
    m.shape = (m.scale.shape[0], *m.shape[1:])


@register_cutter("timm.layers.pos_embed_rel.RelPosMlp")
def timm_rel_pos_mlp(m, c) -> None:
    """A relative-position MLP makes one bias per head (its output width) and views it with its
    own head count: the count follows that width. It is often shared by every block, and called
    by its owner's get_bias rather than as a module, so it runs wherever its MLP was cut."""
    m.num_heads = m.mlp.fc2.weight.shape[0]
    m.bias_shape = (*m.bias_shape[:-1], m.num_heads)


timm_rel_pos_mlp.after_children = True
timm_rel_pos_mlp.data_buffers = ("rel_coords_log", "relative_position_index")  # coordinates, not channels


@register_cutter("timm.layers.pos_embed_rel.RelPosBias")
def timm_rel_pos_bias(m, c) -> None:
    """A relative-position bias table (positions, heads): the head count follows its columns."""
    m.bias_shape = (*m.bias_shape[:-1], m.relative_position_bias_table.shape[1])
