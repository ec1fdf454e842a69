//! The server's error: a Triton error code and a message a client can act on.
//!
//! Each code maps to the HTTP status and gRPC code Triton answers with, so
//! clients written against Triton see the same failures here.

use std::fmt;

/// Triton's `TRITONSERVER_Error_Code`, as far as this server produces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The request is wrong (bad JSON, wrong dtype or shape): HTTP 400, gRPC
    /// INVALID_ARGUMENT.
    InvalidArg,
    /// An unknown model, or a version the model does not have: HTTP 404, gRPC
    /// NOT_FOUND (as Triton answers).
    NotFound,
    /// Try again later (queue full, queue timeout, model loading or failed,
    /// server shutting down): HTTP 503, gRPC UNAVAILABLE.
    Unavailable,
    /// A feature this server does not implement: HTTP 501, gRPC UNIMPLEMENTED.
    Unsupported,
    /// A failure inside the server or the engine: HTTP 500, gRPC INTERNAL.
    Internal,
    /// The server's budget of request bytes in flight is spent: HTTP 429,
    /// gRPC RESOURCE_EXHAUSTED. Try again when requests in flight finish.
    ResourceExhausted,
    /// The client did not send its request body in time: HTTP 408, gRPC
    /// DEADLINE_EXCEEDED.
    RequestTimeout,
}

/// An error answered to a client, or reported for a model that failed to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    pub code: Code,
    pub message: String,
}

pub type ServerResult<T> = Result<T, ServerError>;

impl ServerError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ServerError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArg, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(Code::Unsupported, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// The HTTP status Triton's HTTP endpoint uses for this code.
    pub fn http_status(&self) -> u16 {
        match self.code {
            Code::InvalidArg => 400,
            Code::NotFound => 404,
            Code::Unavailable => 503,
            Code::Unsupported => 501,
            Code::Internal => 500,
            Code::ResourceExhausted => 429,
            Code::RequestTimeout => 408,
        }
    }

    /// The gRPC status Triton's gRPC endpoint uses for this code.
    pub fn grpc_code(&self) -> tonic::Code {
        match self.code {
            Code::InvalidArg => tonic::Code::InvalidArgument,
            Code::NotFound => tonic::Code::NotFound,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::Unsupported => tonic::Code::Unimplemented,
            Code::Internal => tonic::Code::Internal,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::RequestTimeout => tonic::Code::DeadlineExceeded,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

impl From<ServerError> for tonic::Status {
    fn from(e: ServerError) -> Self {
        tracing::debug!(code = ?e.grpc_code(), error = %e.message, "gRPC request failed");
        tonic::Status::new(e.grpc_code(), e.message)
    }
}

/// Engine errors met while serving a request: the caller's mistakes are
/// INVALID_ARG, everything else INTERNAL.
impl From<metal_mps::Error> for ServerError {
    fn from(e: metal_mps::Error) -> Self {
        match e {
            metal_mps::Error::InvalidInput(_) => ServerError::invalid_arg(e.to_string()),
            other => ServerError::internal(other.to_string()),
        }
    }
}
