"""Exports of a (slim) model, each checked against PyTorch eager before it is written."""
from .onnx import export_onnx, named_outputs

__all__ = ["export_onnx", "named_outputs"]
