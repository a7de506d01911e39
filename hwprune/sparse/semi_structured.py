"""2:4 weights on the GPU: torch's semi-structured sparse tensors (CUTLASS / cuSPARSELt
kernels on sm80+), for the nn.Linear layers that sparsify(pattern="2:4") zeroed."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .masks import two_four_mask


def is_two_four(weight: torch.Tensor) -> bool:
    """At most 2 nonzeros in every 4 consecutive inputs of every output."""
    return weight.shape[1] % 4 == 0 and bool(weight.detach().reshape(weight.shape[0], -1, 4).ne(0).sum(-1).le(2).all())


def to_semi_structured(model: nn.Module) -> nn.Module:
    """Swap the weight of every 2:4-sparse CUDA fp16/bf16 nn.Linear for a
    SparseSemiStructuredTensor, in place; returns the model. Needs an sm80+ GPU."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        raise InputError("2:4 semi-structured kernels need a CUDA GPU of compute capability 8.0 or newer; "
                         "the dense model with zeros runs everywhere else")
    from torch.sparse import to_sparse_semi_structured

    swapped = 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if type(module) is nn.Linear and w.is_cuda and w.dtype in (torch.float16, torch.bfloat16) and is_two_four(w):
            dense = w.detach() * two_four_mask(w)  # the same zeros, stored in the 2:4 layout
            module.weight = nn.Parameter(to_sparse_semi_structured(dense), requires_grad=False)
            swapped += 1
    if not swapped:
        raise InputError("no CUDA fp16/bf16 nn.Linear with a 2:4 weight: run sparsify(pattern='2:4') and move the "
                         "model to the GPU in half precision first")
    return model
