"""The deployment path of `hwprune slim --target T`: the bundle of outputs written all or nothing
(bundle, outputs), per-layer latency figures (layers) and the
TensorRT engine or trtexec command (tensorrt); the report it writes, JSON and HTML, is hwprune.report."""
from .bundle import Bundle, write_bundle
from .outputs import StagedOutputs

__all__ = ["Bundle", "StagedOutputs", "write_bundle"]
