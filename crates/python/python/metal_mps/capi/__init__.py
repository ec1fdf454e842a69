"""The exception classes where onnxruntime keeps them (``onnxruntime.capi``)."""

from .._native import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    MetalMpsError,
    NoSuchFile,
    NotImplemented,
)
from . import onnxruntime_pybind11_state

__all__ = [
    "Fail",
    "InvalidArgument",
    "InvalidGraph",
    "InvalidProtobuf",
    "MetalMpsError",
    "NoSuchFile",
    "NotImplemented",
    "onnxruntime_pybind11_state",
]
