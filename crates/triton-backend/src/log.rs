//! Messages into Triton's log (`TRITONSERVER_LogMessage`), tagged `metal_mps`.

use crate::error::c_string;
use crate::ffi;

/// Writes `msg` to Triton's log at `level`. Logging never fails the caller.
pub fn log(level: ffi::TRITONSERVER_LogLevel, msg: &str) {
    let text = c_string(msg);
    // SAFETY: both strings are valid NUL-terminated C strings; the returned error (if any) is ours to free.
    unsafe {
        let err = ffi::TRITONSERVER_LogMessage(level, c"metal_mps".as_ptr(), 0, text.as_ptr());
        if !err.is_null() {
            ffi::TRITONSERVER_ErrorDelete(err);
        }
    }
}

pub fn info(msg: &str) {
    log(ffi::TRITONSERVER_LOG_INFO, msg);
}

pub fn warn(msg: &str) {
    log(ffi::TRITONSERVER_LOG_WARN, msg);
}

pub fn error(msg: &str) {
    log(ffi::TRITONSERVER_LOG_ERROR, msg);
}

/// Logs at VERBOSE level when Triton runs with `--log-verbose`; `msg` is built only then.
pub fn verbose(msg: impl FnOnce() -> String) {
    // SAFETY: a plain query of Triton's log settings.
    if unsafe { ffi::TRITONSERVER_LogIsEnabled(ffi::TRITONSERVER_LOG_VERBOSE) } {
        log(ffi::TRITONSERVER_LOG_VERBOSE, &msg());
    }
}
