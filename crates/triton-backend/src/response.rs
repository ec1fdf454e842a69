//! Writing responses: output tensors and the final send, with or without an error.

use crate::batch::triton_dtype;
use crate::error::{c_string, tri, BackendError, Result};
use crate::{ffi, log};
use metal_mps::DType;

/// A new response for `request`.
pub fn create(
    request: *mut ffi::TRITONBACKEND_Request,
) -> Result<*mut ffi::TRITONBACKEND_Response> {
    let mut response = std::ptr::null_mut();
    tri!(
        "creating a response",
        ffi::TRITONBACKEND_ResponseNew(&mut response, request)
    )?;
    Ok(response)
}

/// Adds output `name` holding `bytes` (row-major, `shape`, `dtype`) to `response`.
///
/// # Safety
/// `response` is a live response not yet sent.
pub unsafe fn add_output(
    response: *mut ffi::TRITONBACKEND_Response,
    name: &str,
    dtype: DType,
    shape: &[usize],
    bytes: &[u8],
) -> Result<()> {
    let cname = c_string(name);
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let mut output = std::ptr::null_mut();
    tri!(
        format!("creating output '{name}'"),
        ffi::TRITONBACKEND_ResponseOutput(
            response,
            &mut output,
            cname.as_ptr(),
            triton_dtype(dtype),
            dims.as_ptr(),
            dims.len() as u32
        )
    )?;
    let (mut buffer, mut memory_type, mut memory_type_id) =
        (std::ptr::null_mut(), ffi::TRITONSERVER_MEMORY_CPU, 0i64);
    tri!(
        format!("allocating output '{name}'"),
        ffi::TRITONBACKEND_OutputBuffer(
            output,
            &mut buffer,
            bytes.len() as u64,
            &mut memory_type,
            &mut memory_type_id
        )
    )?;
    if memory_type == ffi::TRITONSERVER_MEMORY_GPU {
        return Err(BackendError::unsupported(format!(
            "output '{name}' was given CUDA memory, which the metal_mps backend cannot write; request it in system memory"
        )));
    }
    if !bytes.is_empty() {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len());
    }
    Ok(())
}

/// Sends `response` as final, carrying `error` if any. Triton takes the
/// response; the error object stays ours and is freed here. Failures are logged.
///
/// # Safety
/// `response` is a live response not yet sent.
pub unsafe fn send(response: *mut ffi::TRITONBACKEND_Response, error: Option<&BackendError>) {
    let err = error.map_or(std::ptr::null_mut(), |e| e.clone().into_raw());
    let sent = tri!(
        "sending a response",
        ffi::TRITONBACKEND_ResponseSend(response, ffi::TRITONSERVER_RESPONSE_COMPLETE_FINAL, err)
    );
    if !err.is_null() {
        ffi::TRITONSERVER_ErrorDelete(err);
    }
    if let Err(e) = sent {
        log::error(&e.message);
    }
}
