//! The error type shared by every stage of the pipeline.

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file could not be parsed or is inconsistent.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The model uses something metal_mps does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A node failed to import, infer or run; wraps the cause with the node's identity.
    #[error("node '{node}' ({op}, opset {opset}): {cause}")]
    Node {
        node: String,
        op: String,
        opset: i64,
        cause: Box<Error>,
    },
    /// An input given at run time does not match what the model declares.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A value is inconsistent (shape mismatch, bad attribute, wrong dtype).
    #[error("{0}")]
    Invalid(String),
    /// A declared or computed tensor is too large to represent.
    #[error("tensor too large: {0}")]
    TooLarge(String),
    /// An allocation failed.
    #[error("out of memory allocating {bytes} bytes")]
    OutOfMemory { bytes: usize },
    /// A run passed its time limit ([`crate::limits::max_run_time`]).
    #[error("timed out: {0}")]
    TimedOut(String),
    /// A device (GPU) failed.
    #[error("device error: {0}")]
    Device(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for `Err(Error::Invalid(format!(...)))`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { Err($crate::Error::Invalid(format!($($arg)*))) };
}

/// Shorthand for `Err(Error::Unsupported(format!(...)))`.
#[macro_export]
macro_rules! unsupported {
    ($($arg:tt)*) => { Err($crate::Error::Unsupported(format!($($arg)*))) };
}
