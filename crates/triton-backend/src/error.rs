//! Errors crossing the C boundary in both directions.
//!
//! Inside the backend every fallible step returns [`BackendError`]: a Triton
//! error code and a message. At an exported function it becomes a
//! `TRITONSERVER_Error*` ([`BackendError::into_raw`]); an error Triton returns
//! to us is read and freed by [`check`].

use crate::ffi;
use metal_mps_model_config::ConfigError;
use std::ffi::{CStr, CString};

/// A failure with the Triton error code it is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError {
    pub code: ffi::TRITONSERVER_Error_Code,
    pub message: String,
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

impl BackendError {
    pub fn new(code: ffi::TRITONSERVER_Error_Code, message: impl Into<String>) -> BackendError {
        BackendError {
            code,
            message: message.into(),
        }
    }

    /// A caller's mistake: a bad request or configuration (HTTP 400).
    pub fn invalid_arg(message: impl Into<String>) -> BackendError {
        BackendError::new(ffi::TRITONSERVER_ERROR_INVALID_ARG, message)
    }

    /// Something this backend or the engine got wrong (HTTP 500).
    pub fn internal(message: impl Into<String>) -> BackendError {
        BackendError::new(ffi::TRITONSERVER_ERROR_INTERNAL, message)
    }

    pub fn unsupported(message: impl Into<String>) -> BackendError {
        BackendError::new(ffi::TRITONSERVER_ERROR_UNSUPPORTED, message)
    }

    /// The same error with `context` in front of its message.
    pub fn context(self, context: impl std::fmt::Display) -> BackendError {
        BackendError {
            code: self.code,
            message: format!("{context}: {}", self.message),
        }
    }

    /// A new `TRITONSERVER_Error` owned by the caller (Triton, when returned
    /// from an exported function).
    pub fn into_raw(self) -> *mut ffi::TRITONSERVER_Error {
        let msg = c_string(&self.message);
        // SAFETY: `msg` is a valid NUL-terminated string; Triton copies it.
        unsafe { ffi::TRITONSERVER_ErrorNew(self.code, msg.as_ptr()) }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<metal_mps::Error> for BackendError {
    fn from(e: metal_mps::Error) -> BackendError {
        BackendError::new(engine_error_code(&e), e.to_string())
    }
}

impl From<ConfigError> for BackendError {
    fn from(e: ConfigError) -> BackendError {
        BackendError::invalid_arg(e.to_string())
    }
}

/// The Triton code of an engine error: caller mistakes are INVALID_ARG,
/// unsupported features UNSUPPORTED, everything else INTERNAL.
fn engine_error_code(e: &metal_mps::Error) -> ffi::TRITONSERVER_Error_Code {
    use metal_mps::Error as E;
    match e {
        E::InvalidInput(_) | E::InvalidModel(_) => ffi::TRITONSERVER_ERROR_INVALID_ARG,
        E::Unsupported(_) => ffi::TRITONSERVER_ERROR_UNSUPPORTED,
        E::Node { cause, .. } => engine_error_code(cause),
        _ => ffi::TRITONSERVER_ERROR_INTERNAL,
    }
}

/// `s` as a C string; interior NULs (never expected) become spaces.
pub fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).expect("no interior NUL remains")
}

/// Reads and frees an error returned by a Triton function; `Ok` for null.
///
/// # Safety
/// `err` is null or a live `TRITONSERVER_Error` owned by the caller.
pub unsafe fn check(err: *mut ffi::TRITONSERVER_Error) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    let code = ffi::TRITONSERVER_ErrorCode(err);
    let msg = ffi::TRITONSERVER_ErrorMessage(err);
    let message = if msg.is_null() {
        String::new()
    } else {
        CStr::from_ptr(msg).to_string_lossy().into_owned()
    };
    ffi::TRITONSERVER_ErrorDelete(err);
    Err(BackendError { code, message })
}

/// Calls a Triton function and turns its error into a [`BackendError`] naming `what`.
macro_rules! tri {
    ($what:expr, $call:expr) => {
        // SAFETY: the caller upholds the contract of the Triton function in `$call`.
        unsafe { $crate::error::check($call) }.map_err(|e| e.context($what))
    };
}
pub(crate) use tri;

/// A string owned by Triton, copied; empty for null.
///
/// # Safety
/// `p` is null or a valid NUL-terminated string.
pub unsafe fn owned_str(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_triton_codes() {
        let bad = metal_mps::Error::InvalidInput("input 'x' has shape [2]".into());
        assert_eq!(
            BackendError::from(bad).code,
            ffi::TRITONSERVER_ERROR_INVALID_ARG
        );
        let unsup = metal_mps::Error::Unsupported("op 'Foo'".into());
        assert_eq!(
            BackendError::from(unsup).code,
            ffi::TRITONSERVER_ERROR_UNSUPPORTED
        );
        let nested = metal_mps::Error::Node {
            node: "n".into(),
            op: "Foo".into(),
            opset: 13,
            cause: Box::new(metal_mps::Error::Unsupported("x".into())),
        };
        let e = BackendError::from(nested);
        assert_eq!(e.code, ffi::TRITONSERVER_ERROR_UNSUPPORTED);
        assert!(e.message.contains("node 'n' (Foo"), "{e}");
        let dev = metal_mps::Error::Device("lost".into());
        assert_eq!(
            BackendError::from(dev).code,
            ffi::TRITONSERVER_ERROR_INTERNAL
        );
    }

    #[test]
    fn config_errors_are_invalid_arg_and_keep_the_field() {
        let e = BackendError::from(ConfigError::new("input[0].dims", "bad"));
        assert_eq!(e.code, ffi::TRITONSERVER_ERROR_INVALID_ARG);
        assert!(e.message.contains("input[0].dims"));
        assert_eq!(
            e.context("model 'm'").message,
            "model 'm': model configuration field 'input[0].dims': bad"
        );
    }

    #[test]
    fn c_strings_never_fail() {
        assert_eq!(c_string("a\0b").to_str().unwrap(), "a b");
    }
}
