//! Instance state and the `TRITONBACKEND_ModelInstanceInitialize` / `Finalize` entry points.
//!
//! Each instance owns its compiled model (its engine and memory pool), so
//! instances never share mutable state and `ModelInstanceExecute` takes no lock.
//! `KIND_CPU` runs on the CPU engine; `KIND_MODEL` on the GPU engine when an
//! adapter exists (unless the model's `engine` parameter says otherwise), else
//! the CPU engine.

use crate::error::{owned_str, tri, BackendError, Result};
use crate::model::ModelState;
use crate::panic::boundary;
use crate::{ffi, log, memory};
use metal_mps::Model;
use metal_mps_ir::Storage;
use metal_mps_model_config::InstanceKind;
use std::sync::Arc;

/// One instance: its own compiled model and reusable input staging buffers.
pub struct InstanceState {
    pub name: String,
    pub model_state: Arc<ModelState>,
    pub model: Model,
    /// One buffer per model input, reused by every execute call to gather the batch.
    pub staging: Vec<Storage>,
    /// The memory usage last reported to Triton, in bytes.
    pub reported_bytes: u64,
}

impl InstanceState {
    /// The instance state Triton holds for `instance`, for exclusive use.
    ///
    /// # Safety
    /// `instance` is live, its state was set by ModelInstanceInitialize, and
    /// the caller is the only user of it for the returned lifetime (Triton never
    /// runs two execute calls of one instance at once).
    pub unsafe fn of<'a>(
        instance: *mut ffi::TRITONBACKEND_ModelInstance,
    ) -> Result<&'a mut InstanceState> {
        let mut state = std::ptr::null_mut();
        tri!(
            "reading the instance state",
            ffi::TRITONBACKEND_ModelInstanceState(instance, &mut state)
        )?;
        (state as *mut InstanceState)
            .as_mut()
            .ok_or_else(|| BackendError::internal("the metal_mps instance state is missing"))
    }
}

fn kind_of(kind: ffi::TRITONSERVER_InstanceGroupKind) -> InstanceKind {
    match kind {
        ffi::TRITONSERVER_INSTANCEGROUPKIND_CPU => InstanceKind::Cpu,
        ffi::TRITONSERVER_INSTANCEGROUPKIND_GPU => InstanceKind::Gpu,
        ffi::TRITONSERVER_INSTANCEGROUPKIND_MODEL => InstanceKind::Model,
        _ => InstanceKind::Auto,
    }
}

fn initialize(instance: *mut ffi::TRITONBACKEND_ModelInstance) -> Result<InstanceState> {
    let (mut name, mut raw_kind, mut model) = (std::ptr::null(), 0, std::ptr::null_mut());
    tri!(
        "reading the instance name",
        ffi::TRITONBACKEND_ModelInstanceName(instance, &mut name)
    )?;
    tri!(
        "reading the instance kind",
        ffi::TRITONBACKEND_ModelInstanceKind(instance, &mut raw_kind)
    )?;
    tri!(
        "reading the instance's model",
        ffi::TRITONBACKEND_ModelInstanceModel(instance, &mut model)
    )?;
    // SAFETY: Triton returned a valid string living as long as the instance.
    let name = unsafe { owned_str(name) };
    // SAFETY: the model is live and initialized before its instances.
    let model_state = unsafe { ModelState::of(model) }?;
    let kind = kind_of(raw_kind);
    let device = model_state
        .device_for(kind)
        .map_err(|e| e.context(format!("instance '{name}'")))?;
    let compiled = model_state.model_for(device)?;
    let actual = compiled.device();
    log::info(&format!(
        "instance '{name}' of model '{}' ({kind:?}): {actual} engine{}",
        model_state.name,
        if actual != device {
            format!(" (asked for {device}; the engine fell back)")
        } else {
            String::new()
        }
    ));
    let staging = model_state
        .inputs
        .iter()
        .map(|_| Storage::default())
        .collect();
    let mut state = InstanceState {
        name,
        model_state,
        model: compiled,
        staging,
        reported_bytes: 0,
    };
    memory::report(instance, &mut state);
    Ok(state)
}

/// Creates the instance's engine and stores its state.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
) -> *mut ffi::TRITONSERVER_Error {
    boundary("TRITONBACKEND_ModelInstanceInitialize", || {
        let raw = Box::into_raw(Box::new(initialize(instance)?));
        let stored = tri!(
            "storing the instance state",
            ffi::TRITONBACKEND_ModelInstanceSetState(instance, raw.cast())
        );
        if stored.is_err() {
            // SAFETY: Triton did not keep the pointer; we still own it.
            drop(unsafe { Box::from_raw(raw) });
        }
        stored
    })
}

/// Frees the instance: its engine, memory pool and staging buffers.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
) -> *mut ffi::TRITONSERVER_Error {
    boundary("TRITONBACKEND_ModelInstanceFinalize", || {
        let mut state = std::ptr::null_mut();
        tri!(
            "reading the instance state",
            ffi::TRITONBACKEND_ModelInstanceState(instance, &mut state)
        )?;
        if !state.is_null() {
            tri!(
                "clearing the instance state",
                ffi::TRITONBACKEND_ModelInstanceSetState(instance, std::ptr::null_mut())
            )?;
            // SAFETY: the pointer came from Box::into_raw in ModelInstanceInitialize and is freed once, here.
            drop(unsafe { Box::from_raw(state.cast::<InstanceState>()) });
        }
        Ok(())
    })
}
