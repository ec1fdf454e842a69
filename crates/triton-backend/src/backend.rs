//! Backend-wide state and the `TRITONBACKEND_Initialize` / `Finalize` /
//! `GetBackendAttribute` entry points.

use crate::error::{owned_str, tri, BackendError, Result};
use crate::panic::boundary;
use crate::{ffi, log, message};
use std::sync::OnceLock;

/// Triton's own default for `default-max-batch-size` when the command line does not set it.
const DEFAULT_MAX_BATCH_SIZE: i64 = 4;

/// Environment variable that enables the `fault_injection` model parameter (tests only).
pub const FAULT_INJECTION_ENV: &str = "METAL_MPS_FAULT_INJECTION";

/// State shared by every model of the backend, owned by Triton's backend object.
#[derive(Debug)]
pub struct BackendState {
    /// `max_batch_size` given to auto-completed models that can batch
    /// (`--backend-config=default-max-batch-size=N`, or any backend's setting of it).
    pub default_max_batch_size: i64,
    /// Whether models may inject panics (`METAL_MPS_FAULT_INJECTION=1` in the server's environment).
    pub fault_injection: bool,
    gpu: OnceLock<bool>,
}

impl BackendState {
    /// State from the backend configuration JSON `{"cmdline": {"<setting>": "<value>"}}`.
    pub fn from_backend_config(json: &str) -> Result<BackendState> {
        let config: serde_json::Value = if json.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(json).map_err(|e| {
                BackendError::invalid_arg(format!("backend configuration is not JSON: {e}"))
            })?
        };
        let default_max_batch_size = match &config["cmdline"]["default-max-batch-size"] {
            serde_json::Value::Null => DEFAULT_MAX_BATCH_SIZE,
            v => {
                let text = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                text.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    BackendError::invalid_arg(format!(
                        "--backend-config=default-max-batch-size={text}: expected a whole number of 0 or more"
                    ))
                })?
            }
        };
        let fault_injection = std::env::var(FAULT_INJECTION_ENV).is_ok_and(|v| v == "1");
        Ok(BackendState {
            default_max_batch_size,
            fault_injection,
            gpu: OnceLock::new(),
        })
    }

    /// Whether a GPU adapter exists; asked once, on first use.
    pub fn gpu_available(&self) -> bool {
        *self.gpu.get_or_init(metal_mps::gpu_available)
    }

    /// The state Triton holds for `backend`.
    ///
    /// # Safety
    /// `backend` is live and `TRITONBACKEND_Initialize` set its state; the
    /// state outlives every model, so the reference is valid while they live.
    pub unsafe fn of<'a>(backend: *mut ffi::TRITONBACKEND_Backend) -> Result<&'a BackendState> {
        let mut state = std::ptr::null_mut();
        tri!(
            "reading the backend state",
            ffi::TRITONBACKEND_BackendState(backend, &mut state)
        )?;
        (state as *const BackendState)
            .as_ref()
            .ok_or_else(|| BackendError::internal("the metal_mps backend state is missing"))
    }
}

/// Checks the API version, reads the backend configuration and stores the backend state.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Initialize(
    backend: *mut ffi::TRITONBACKEND_Backend,
) -> *mut ffi::TRITONSERVER_Error {
    boundary("TRITONBACKEND_Initialize", || {
        let (mut major, mut minor) = (0u32, 0u32);
        tri!(
            "reading the Triton backend API version",
            ffi::TRITONBACKEND_ApiVersion(&mut major, &mut minor)
        )?;
        if major != ffi::TRITONBACKEND_API_VERSION_MAJOR
            || minor < ffi::TRITONBACKEND_API_VERSION_MINOR
        {
            return Err(BackendError::unsupported(format!(
                "the metal_mps backend needs Triton backend API {}.{} or a later 1.x (Triton 2.51 / r24.10 or newer); \
                 this server offers {major}.{minor}",
                ffi::TRITONBACKEND_API_VERSION_MAJOR,
                ffi::TRITONBACKEND_API_VERSION_MINOR
            )));
        }
        let mut name = std::ptr::null();
        tri!(
            "reading the backend name",
            ffi::TRITONBACKEND_BackendName(backend, &mut name)
        )?;
        let mut config = std::ptr::null_mut();
        // The message stays owned by Triton.
        tri!(
            "reading the backend configuration",
            ffi::TRITONBACKEND_BackendConfig(backend, &mut config)
        )?;
        // SAFETY: Triton returned a live message.
        let json = unsafe { message::to_json(config) }?;
        let state = BackendState::from_backend_config(&json)?;
        log::info(&format!(
            "metal_mps backend '{}' initialized: backend API {major}.{minor}, default-max-batch-size {}{}",
            // SAFETY: Triton returned a valid string that lives as long as the backend.
            unsafe { owned_str(name) },
            state.default_max_batch_size,
            if state.fault_injection { ", fault injection enabled" } else { "" }
        ));
        let raw = Box::into_raw(Box::new(state));
        let stored = tri!(
            "storing the backend state",
            ffi::TRITONBACKEND_BackendSetState(backend, raw.cast())
        );
        if stored.is_err() {
            // SAFETY: Triton did not take the pointer; we still own it.
            drop(unsafe { Box::from_raw(raw) });
        }
        stored
    })
}

/// Frees the backend state. Triton calls it after every model is finalized.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Finalize(
    backend: *mut ffi::TRITONBACKEND_Backend,
) -> *mut ffi::TRITONSERVER_Error {
    boundary("TRITONBACKEND_Finalize", || {
        let mut state = std::ptr::null_mut();
        tri!(
            "reading the backend state",
            ffi::TRITONBACKEND_BackendState(backend, &mut state)
        )?;
        if !state.is_null() {
            // SAFETY: the pointer came from Box::into_raw in Initialize and is freed once, here.
            drop(unsafe { Box::from_raw(state.cast::<BackendState>()) });
            tri!(
                "clearing the backend state",
                ffi::TRITONBACKEND_BackendSetState(backend, std::ptr::null_mut())
            )?;
        }
        Ok(())
    })
}

/// Tells Triton that instances of a model may be initialized in parallel
/// (instance initialization shares nothing but the model state, which is thread-safe).
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_GetBackendAttribute(
    _backend: *mut ffi::TRITONBACKEND_Backend,
    attributes: *mut ffi::TRITONBACKEND_BackendAttribute,
) -> *mut ffi::TRITONSERVER_Error {
    boundary("TRITONBACKEND_GetBackendAttribute", || {
        tri!(
            "enabling parallel instance loading",
            ffi::TRITONBACKEND_BackendAttributeSetParallelModelInstanceLoading(attributes, true)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_max_batch_size_from_cmdline() {
        let s =
            BackendState::from_backend_config(r#"{"cmdline": {"default-max-batch-size": "16"}}"#)
                .unwrap();
        assert_eq!(s.default_max_batch_size, 16);
        let s = BackendState::from_backend_config(r#"{"cmdline": {"default-max-batch-size": 2}}"#)
            .unwrap();
        assert_eq!(s.default_max_batch_size, 2);
        assert_eq!(
            BackendState::from_backend_config("")
                .unwrap()
                .default_max_batch_size,
            4
        );
        assert_eq!(
            BackendState::from_backend_config(r#"{"cmdline": {}}"#)
                .unwrap()
                .default_max_batch_size,
            4
        );
    }

    #[test]
    fn bad_cmdline_value_is_refused_with_the_setting() {
        let e =
            BackendState::from_backend_config(r#"{"cmdline": {"default-max-batch-size": "many"}}"#)
                .unwrap_err();
        assert!(e.message.contains("default-max-batch-size=many"), "{e}");
    }
}
