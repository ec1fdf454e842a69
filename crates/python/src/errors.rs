//! Exceptions: classes that mirror onnxruntime's, raised with the engine's message.
//!
//! onnxruntime raises `Fail`, `InvalidArgument`, `NoSuchFile`, `NotImplemented`,
//! `InvalidProtobuf`, `InvalidGraph` and `RuntimeException` from
//! `onnxruntime.capi.onnxruntime_pybind11_state`; metal_mps raises classes of
//! the same names (from `metal_mps` and `metal_mps.capi`), all subclasses of
//! `MetalMpsError`, so an `except` written for either catches the right case.

use metal_mps::Error;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

pyo3::create_exception!(
    metal_mps,
    MetalMpsError,
    PyException,
    "Base class of every error metal_mps raises."
);
pyo3::create_exception!(
    metal_mps,
    Fail,
    MetalMpsError,
    "The engine failed (a value it cannot compute, a device error, memory)."
);
pyo3::create_exception!(
    metal_mps,
    InvalidArgument,
    MetalMpsError,
    "The caller's input does not match the model (name, dtype, shape) or an argument is invalid."
);
pyo3::create_exception!(
    metal_mps,
    NoSuchFile,
    MetalMpsError,
    "The model file (or its external data) does not exist."
);
pyo3::create_exception!(
    metal_mps,
    NotImplemented,
    MetalMpsError,
    "The model uses an operator, attribute or dtype metal_mps does not implement."
);
pyo3::create_exception!(
    metal_mps,
    InvalidProtobuf,
    MetalMpsError,
    "The bytes are not a serialized ONNX ModelProto."
);
pyo3::create_exception!(
    metal_mps,
    InvalidGraph,
    MetalMpsError,
    "The model is inconsistent (a value without a type, an output nothing produces...)."
);

/// The exception for an engine error: the class from its kind (a node's error
/// by its cause), the message the engine wrote (node, op, opset, shapes).
pub fn to_py(err: Error) -> PyErr {
    let message = err.to_string();
    match class_of(&err) {
        Class::InvalidArgument => InvalidArgument::new_err(message),
        Class::NotImplemented => NotImplemented::new_err(message),
        Class::NoSuchFile => NoSuchFile::new_err(message),
        Class::InvalidProtobuf => InvalidProtobuf::new_err(message),
        Class::InvalidGraph => InvalidGraph::new_err(message),
        Class::Fail => Fail::new_err(message),
    }
}

enum Class {
    InvalidArgument,
    NotImplemented,
    NoSuchFile,
    InvalidProtobuf,
    InvalidGraph,
    Fail,
}

fn class_of(err: &Error) -> Class {
    match err {
        Error::Node { cause, .. } => class_of(cause),
        Error::InvalidInput(_) => Class::InvalidArgument,
        Error::Unsupported(_) => Class::NotImplemented,
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Class::NoSuchFile
        }
        // The importer's words for bytes that are not a ModelProto (crates/onnx/src/graph.rs).
        Error::InvalidModel(m) if m.contains("protobuf decoding failed") => Class::InvalidProtobuf,
        Error::InvalidModel(_) => Class::InvalidGraph,
        Error::Invalid(_)
        | Error::TooLarge(_)
        | Error::OutOfMemory { .. }
        | Error::TimedOut(_)
        | Error::Device(_)
        | Error::Io { .. } => Class::Fail,
    }
}

/// Adds the exception classes to `module`.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("MetalMpsError", py.get_type::<MetalMpsError>())?;
    module.add("Fail", py.get_type::<Fail>())?;
    module.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    module.add("NoSuchFile", py.get_type::<NoSuchFile>())?;
    module.add("NotImplemented", py.get_type::<NotImplemented>())?;
    module.add("InvalidProtobuf", py.get_type::<InvalidProtobuf>())?;
    module.add("InvalidGraph", py.get_type::<InvalidGraph>())?;
    Ok(())
}
