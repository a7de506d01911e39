"""timm's own norm layers: subclasses of nn.Module, not of nn.LayerNorm, that keep
`normalized_shape` as nn.LayerNorm does; registered by qualified name once timm is imported.
They normalize over the channels, so they are cut only under --prune-hidden. And MetaFormer's
`Scale` (a per-channel factor, `x * scale.view(shape)`), which keeps its width in `shape`."""
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
