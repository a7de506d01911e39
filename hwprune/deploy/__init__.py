"""The deployment path of `hwprune slim --target T`: the bundle of outputs written all or nothing
(bundle, outputs), per-layer latency figures (layers), the HTML report (report_html) and the
TensorRT engine or trtexec command (tensorrt)."""
from .bundle import Bundle, write_bundle
from .outputs import StagedOutputs

__all__ = ["Bundle", "StagedOutputs", "write_bundle"]
