//! JSON in and out of `TRITONSERVER_Message` objects.

use crate::error::{c_string, tri, Result};
use crate::ffi;

/// The JSON text of a message. The message stays owned by the caller.
///
/// # Safety
/// `message` is a live `TRITONSERVER_Message`.
pub unsafe fn to_json(message: *mut ffi::TRITONSERVER_Message) -> Result<String> {
    let mut base: *const std::os::raw::c_char = std::ptr::null();
    let mut size = 0usize;
    tri!(
        "reading a Triton message as JSON",
        ffi::TRITONSERVER_MessageSerializeToJson(message, &mut base, &mut size)
    )?;
    if base.is_null() || size == 0 {
        return Ok(String::new());
    }
    let bytes = std::slice::from_raw_parts(base.cast::<u8>(), size);
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// A message this backend created; deleted when dropped.
pub struct OwnedMessage(*mut ffi::TRITONSERVER_Message);

impl OwnedMessage {
    /// A new message holding `json`.
    pub fn from_json(json: &str) -> Result<OwnedMessage> {
        let text = c_string(json);
        let mut message = std::ptr::null_mut();
        tri!(
            "creating a Triton message",
            ffi::TRITONSERVER_MessageNewFromSerializedJson(&mut message, text.as_ptr(), json.len())
        )?;
        Ok(OwnedMessage(message))
    }

    /// Takes ownership of a message Triton handed over.
    ///
    /// # Safety
    /// `message` is a live message that the caller owns and does not use again.
    pub unsafe fn take(message: *mut ffi::TRITONSERVER_Message) -> OwnedMessage {
        OwnedMessage(message)
    }

    pub fn as_ptr(&self) -> *mut ffi::TRITONSERVER_Message {
        self.0
    }

    pub fn json(&self) -> Result<String> {
        // SAFETY: self.0 is live until drop.
        unsafe { to_json(self.0) }
    }
}

impl Drop for OwnedMessage {
    fn drop(&mut self) {
        // SAFETY: we own the message and drop it once.
        let err = unsafe { ffi::TRITONSERVER_MessageDelete(self.0) };
        if !err.is_null() {
            // SAFETY: the error was returned to us.
            unsafe { ffi::TRITONSERVER_ErrorDelete(err) };
        }
    }
}
