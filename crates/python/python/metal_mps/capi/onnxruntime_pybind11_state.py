"""onnxruntime's module path for its exception classes, so ``except
ort.capi.onnxruntime_pybind11_state.InvalidArgument`` works unchanged."""

from .._native import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    NotImplemented,
)

__all__ = ["Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented"]
