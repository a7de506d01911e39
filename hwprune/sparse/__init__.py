"""Weight sparsity: masks (unstructured, block, 2:4), the hwprune::bsr_linear op and its
kernels (native CPU, Triton GPU, PyTorch reference), and the sparsify pass.

    model, report = hwprune.sparsify(model, example_inputs, sparsity=0.9, pattern="block:32")
    model, report = hwprune.sparsify(model, example_inputs, speedup=2, target="cpu")  # forms per layer
    python -m hwprune.sparse build     # build the native CPU kernel now (else on first use)
"""
from . import ops  # registers hwprune::bsr_linear
from .bsr import BSRConv1x1, BSRLinear
from .choose import LayerChoice, plan_layers
from .keep import ZerosKept
from .masks import Pattern, compute_masks
from .per_layer import ChooseConfig
from .proof import prove
from .sparsify import SparsifyConfig, sparsify

__all__ = ["sparsify", "prove", "SparsifyConfig", "Pattern", "compute_masks", "BSRLinear", "BSRConv1x1", "ops",
           "plan_layers", "LayerChoice", "ChooseConfig", "ZerosKept"]
