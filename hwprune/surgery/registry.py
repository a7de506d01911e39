"""The cutter registry, keyed by module type, and what a cutter is told of its module's cut.
Cutters (cutters.py, attention.py, ...) register here; hwprune.surgery finds them."""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry

CUTTERS = Registry("cutter")
register_cutter = CUTTERS.register  # @register_cutter(ModuleType): one cutter per module type
# A cutter whose function has `after_children = True` also runs where only tensors of the module's
# children were cut (a module that keeps its children's widths, such as a bias MLP's head count,
# and is never called itself, so its input shape says nothing). One with `data_buffers = (names,)`
# names the module's buffers that are data, not channels: the analysis freezes them.


@dataclass(frozen=True)
class ModuleCut:
    """What a cutter knows of its module after the cut: the input shape of its first call,
    before and after (None when the module is never called in the traced graph)."""
    path: str
    old_in_shape: tuple | None
    new_in_shape: tuple | None
    heads: object = None  # graph.heads.HeadCut where heads were split in this module's forward
