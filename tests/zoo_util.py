"""Helpers for whole-model tests: models with healthy activations, so the oracle means something.

torchvision's default init leaves BN at gamma=1, beta=0, mean=0, var=1, and deep mobile nets
then output ~1e-10: any cut would pass a relative-error check. We randomize BN affine
parameters and set running statistics from data, as a trained model would have them.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def realistic(model: nn.Module, example: tuple, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    with torch.no_grad():
        for m in bns:
            if m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):  # 1e-6 at init mutes whole residual branches
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.dim() >= 2 and not p.any():  # ViT's head starts at zero: the output would be 0
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        if bns:  # only the BN layers train: heads that exist only in training (inception's aux) stay off
            model.eval()
            for m in bns:
                m.train()
            for _ in range(2):  # batch 4: train-mode BN needs more than one value per channel
                model(*[torch.randn((4,) + tuple(t.shape[1:])) if t.is_floating_point() else t for t in example])
    model.eval()
    for m in bns:
        m.momentum = 0.1
    return model
