//! The panic boundary: nothing unwinds into Triton.
//!
//! Every exported `TRITONBACKEND_*` function runs its body through
//! [`boundary`], and the engine's work inside `ModelInstanceExecute` through
//! [`guard`], so a panic becomes an INTERNAL error carrying the panic message
//! and the server keeps serving. (An unwind across `extern "C"` would abort
//! the whole server.) Requires `panic = "unwind"`, the workspace's setting.

use crate::error::{BackendError, Result};
use crate::ffi;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic becomes `Err(INTERNAL "<what> panicked: <message>")`.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(BackendError::internal(format!(
            "metal_mps backend: {what} panicked: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// [`guard`] for an exported function: null on success, else a new
/// `TRITONSERVER_Error` that Triton takes ownership of.
pub fn boundary(what: &str, f: impl FnOnce() -> Result<()>) -> *mut ffi::TRITONSERVER_Error {
    match guard(what, f) {
        Ok(()) => std::ptr::null_mut(),
        Err(e) => e.into_raw(),
    }
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal_errors_with_their_message() {
        let e = guard::<()>("execute", || panic!("index {} out of range", 7)).unwrap_err();
        assert_eq!(e.code, ffi::TRITONSERVER_ERROR_INTERNAL);
        assert_eq!(
            e.message,
            "metal_mps backend: execute panicked: index 7 out of range"
        );
        let e = guard::<()>("load", || std::panic::panic_any(42u8)).unwrap_err();
        assert!(e.message.ends_with("a panic without a message"), "{e}");
    }

    #[test]
    fn results_pass_through() {
        assert_eq!(guard("x", || Ok(5)).unwrap(), 5);
        let e = guard::<()>("x", || Err(BackendError::invalid_arg("bad"))).unwrap_err();
        assert_eq!(e, BackendError::invalid_arg("bad"));
    }
}
