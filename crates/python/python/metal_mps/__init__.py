"""metal_mps: run ONNX models on GPUs (Metal, Vulkan, DX12 through wgpu) and CPUs
with onnxruntime's Python API.

    import metal_mps as ort
    sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    outputs = sess.run(None, {sess.get_inputs()[0].name: x})

``metal_mps.backend`` implements ``onnx.backend.base.Backend``.
"""

from ._native import (
    ExecutionMode,
    Fail,
    GraphOptimizationLevel,
    InferenceSession,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    MetalMpsError,
    ModelMetadata,
    NodeArg,
    NoSuchFile,
    NotImplemented,
    RunOptions,
    SessionOptions,
    __version__,
    get_all_providers,
    get_available_providers,
    get_device,
)
from . import capi

__all__ = [
    "ExecutionMode",
    "Fail",
    "GraphOptimizationLevel",
    "InferenceSession",
    "InvalidArgument",
    "InvalidGraph",
    "InvalidProtobuf",
    "MetalMpsError",
    "ModelMetadata",
    "NodeArg",
    "NoSuchFile",
    "NotImplemented",
    "RunOptions",
    "SessionOptions",
    "__version__",
    "capi",
    "get_all_providers",
    "get_available_providers",
    "get_device",
]
