//! Model state and the `TRITONBACKEND_ModelInitialize` / `ModelFinalize` entry points.
//!
//! Loading a model: read Triton's configuration, read the engine settings from
//! its parameters, load and compile `<model>/<version>/<default_model_filename>`
//! once, auto-complete the configuration from the model's signature (when Triton
//! allows it), then validate it. The compiled model is kept as a spare for the
//! first instance that runs on the same device, so the common one-instance
//! model loads once.

use crate::backend::BackendState;
use crate::error::{owned_str, tri, BackendError, Result};
use crate::message::OwnedMessage;
use crate::panic::boundary;
use crate::{ffi, log};
use metal_mps::{Device, Model, TensorInfo};
use metal_mps_model_config::{
    auto_complete, display_dims, unknown_parameters, validate, EngineSettings, InstanceKind,
    ModelConfig,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Model parameter that injects a panic, honoured only with `METAL_MPS_FAULT_INJECTION=1`.
const FAULT_INJECTION_PARAMETER: &str = "fault_injection";

/// Where a test asked for a panic (parameter `fault_injection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultInjection {
    None,
    PanicInModelInitialize,
    PanicInExecute,
}

/// Everything instances share: the configuration, the model's signature and
/// the engine settings. Shared with instances through an `Arc`.
pub struct ModelState {
    pub name: String,
    pub config: ModelConfig,
    pub settings: EngineSettings,
    pub path: PathBuf,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub fault: FaultInjection,
    /// Whether a GPU adapter exists (asked once per backend).
    pub gpu_available: bool,
    /// The model compiled during ModelInitialize and the device it was compiled
    /// for, until an instance for that device takes it.
    spare: Mutex<Option<(Device, Model)>>,
}

impl ModelState {
    /// The compiled model for an instance on `device`: the spare when it matches, else a new load.
    pub fn model_for(&self, device: Device) -> Result<Model> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_if(|(d, _)| *d == device);
        match spare {
            Some((_, m)) => Ok(m),
            None => load(&self.path, &self.settings, device),
        }
    }

    /// The device an instance of `kind` runs on.
    pub fn device_for(&self, kind: InstanceKind) -> Result<Device> {
        device_for(kind, &self.settings, self.gpu_available)
    }

    /// The state Triton holds for `model`, shared.
    ///
    /// # Safety
    /// `model` is live and `TRITONBACKEND_ModelInitialize` set its state.
    pub unsafe fn of(model: *mut ffi::TRITONBACKEND_Model) -> Result<Arc<ModelState>> {
        let mut state = std::ptr::null_mut();
        tri!(
            "reading the model state",
            ffi::TRITONBACKEND_ModelState(model, &mut state)
        )?;
        if state.is_null() {
            return Err(BackendError::internal(
                "the metal_mps model state is missing",
            ));
        }
        let raw = state as *const ModelState;
        // The pointer came from Arc::into_raw; take one more reference for the caller.
        Arc::increment_strong_count(raw);
        Ok(Arc::from_raw(raw))
    }
}

/// The device an instance of `kind` runs on: `KIND_CPU` on the CPU; `KIND_MODEL`
/// (and `KIND_AUTO`) as the `engine` parameter says, by default the GPU when an
/// adapter exists; `KIND_GPU` on the GPU (only a CUDA build of Triton passes it on).
fn device_for(
    kind: InstanceKind,
    settings: &EngineSettings,
    gpu_available: bool,
) -> Result<Device> {
    match kind {
        InstanceKind::Cpu => Ok(Device::Cpu),
        InstanceKind::Gpu if !gpu_available => Err(BackendError::unsupported(
            "KIND_GPU instance but this machine has no GPU adapter; use KIND_MODEL (GPU when present, else CPU)",
        )),
        InstanceKind::Gpu => Ok(Device::Gpu),
        InstanceKind::Model | InstanceKind::Auto => Ok(settings.engine.resolve(gpu_available)?),
    }
}

/// Loads and compiles the model file for `device`.
fn load(path: &Path, settings: &EngineSettings, device: Device) -> Result<Model> {
    Model::load(path, &settings.options(device))
        .and_then(|m| m.require_tensor_io().map(|()| m))
        .map_err(|e| BackendError::from(e).context(format!("failed to load '{}'", path.display())))
}

fn parse_fault(config: &ModelConfig, backend: &BackendState) -> Result<FaultInjection> {
    let Some(value) = config.parameter(FAULT_INJECTION_PARAMETER) else {
        return Ok(FaultInjection::None);
    };
    if !backend.fault_injection {
        return Err(BackendError::invalid_arg(format!(
            "parameter '{FAULT_INJECTION_PARAMETER}' is for tests and needs {}=1 in the server's environment",
            crate::backend::FAULT_INJECTION_ENV
        )));
    }
    match value {
        "panic_in_model_initialize" => Ok(FaultInjection::PanicInModelInitialize),
        "panic_in_execute" => Ok(FaultInjection::PanicInExecute),
        other => Err(BackendError::invalid_arg(format!(
            "parameter '{FAULT_INJECTION_PARAMETER}' is '{other}'; use 'panic_in_model_initialize' or 'panic_in_execute'"
        ))),
    }
}

/// Reads the configuration Triton currently holds for `model`.
fn read_config(model: *mut ffi::TRITONBACKEND_Model) -> Result<ModelConfig> {
    let mut raw = std::ptr::null_mut();
    tri!(
        "reading the model configuration",
        ffi::TRITONBACKEND_ModelConfig(model, 1, &mut raw)
    )?;
    // SAFETY: TRITONBACKEND_ModelConfig gives the caller ownership of the message.
    let owned = unsafe { OwnedMessage::take(raw) };
    Ok(ModelConfig::from_json(&owned.json()?)?)
}

fn initialize(model: *mut ffi::TRITONBACKEND_Model) -> Result<ModelState> {
    let (mut name, mut version) = (std::ptr::null(), 0u64);
    tri!(
        "reading the model name",
        ffi::TRITONBACKEND_ModelName(model, &mut name)
    )?;
    tri!(
        "reading the model version",
        ffi::TRITONBACKEND_ModelVersion(model, &mut version)
    )?;
    // SAFETY: Triton returned a valid string living as long as the model.
    let name = unsafe { owned_str(name) };
    let (mut artifact, mut location) = (0, std::ptr::null());
    tri!(
        "reading the model repository",
        ffi::TRITONBACKEND_ModelRepository(model, &mut artifact, &mut location)
    )?;
    if artifact != ffi::TRITONBACKEND_ARTIFACT_FILESYSTEM {
        return Err(BackendError::unsupported(
            "model artifacts must be files on a local file system",
        ));
    }
    // SAFETY: as above.
    let model_dir = PathBuf::from(unsafe { owned_str(location) });
    let mut backend = std::ptr::null_mut();
    tri!(
        "reading the model's backend",
        ffi::TRITONBACKEND_ModelBackend(model, &mut backend)
    )?;
    // SAFETY: the backend and its state outlive the model.
    let backend = unsafe { BackendState::of(backend) }?;

    let mut config = read_config(model)?;
    let settings = EngineSettings::from_config(&config)?;
    let fault = parse_fault(&config, backend)?;
    if fault == FaultInjection::PanicInModelInitialize {
        panic!("fault injection: panic in TRITONBACKEND_ModelInitialize of '{name}'");
    }
    for key in unknown_parameters(&config) {
        if key != FAULT_INJECTION_PARAMETER {
            log::warn(&format!(
                "model '{name}': parameter '{key}' is not used by the metal_mps backend"
            ));
        }
    }
    let path = config
        .resolve_model_file(&model_dir, version)
        .map_err(|e| BackendError::new(ffi::TRITONSERVER_ERROR_NOT_FOUND, e.to_string()))?;

    // Compile once, for the device of the first instance group.
    let gpu_available = backend.gpu_available();
    let first_kind = config
        .instance_group
        .first()
        .map(|g| g.kind)
        .unwrap_or_default();
    let first_device = device_for(first_kind, &settings, gpu_available)?;
    let started = std::time::Instant::now();
    let compiled = load(&path, &settings, first_device)?;
    let inputs = compiled.inputs().to_vec();
    let outputs = compiled.outputs().to_vec();

    let mut auto = false;
    tri!(
        "asking whether to auto-complete",
        ffi::TRITONBACKEND_ModelAutoCompleteConfig(model, &mut auto)
    )?;
    if auto {
        let changes = auto_complete(
            &mut config,
            &inputs,
            &outputs,
            backend.default_max_batch_size,
        )?;
        if !changes.is_empty() {
            for change in &changes {
                log::info(&format!("model '{name}': auto-complete: {change}"));
            }
            let message = OwnedMessage::from_json(&config.to_json())?;
            tri!(
                "setting the auto-completed configuration",
                ffi::TRITONBACKEND_ModelSetConfig(model, 1, message.as_ptr())
            )?;
            // Triton may add fields of its own: read back the configuration it now holds.
            config = read_config(model)?;
        }
    }
    validate(&config, &inputs, &outputs)?;
    log::info(&format!(
        "model '{name}' version {version}: loaded '{}' in {:.1} ms; inputs {}; outputs {}; max_batch_size {}",
        path.display(),
        started.elapsed().as_secs_f64() * 1e3,
        describe(&inputs),
        describe(&outputs),
        config.max_batch_size
    ));
    Ok(ModelState {
        name,
        config,
        settings,
        path,
        inputs,
        outputs,
        fault,
        gpu_available,
        spare: Mutex::new(Some((first_device, compiled))),
    })
}

fn describe(infos: &[TensorInfo]) -> String {
    infos
        .iter()
        .map(|t| {
            format!(
                "{} {} {}",
                t.name,
                t.dtype.triton_name(),
                display_dims(&t.shape)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads, auto-completes and validates the model and stores its state.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInitialize(
    model: *mut ffi::TRITONBACKEND_Model,
) -> *mut ffi::TRITONSERVER_Error {
    boundary("TRITONBACKEND_ModelInitialize", || {
        let state = Arc::new(initialize(model)?);
        let raw = Arc::into_raw(state);
        let stored = tri!(
            "storing the model state",
            ffi::TRITONBACKEND_ModelSetState(model, raw as *mut _)
        );
        if stored.is_err() {
            // SAFETY: Triton did not keep the pointer; release our reference.
            drop(unsafe { Arc::from_raw(raw) });
        }
        stored
    })
}

/// Drops Triton's reference to the model state. Instances hold their own
/// references and are finalized before this is called, so this frees the model.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelFinalize(
    model: *mut ffi::TRITONBACKEND_Model,
) -> *mut ffi::TRITONSERVER_Error {
    boundary("TRITONBACKEND_ModelFinalize", || {
        let mut state = std::ptr::null_mut();
        tri!(
            "reading the model state",
            ffi::TRITONBACKEND_ModelState(model, &mut state)
        )?;
        if !state.is_null() {
            tri!(
                "clearing the model state",
                ffi::TRITONBACKEND_ModelSetState(model, std::ptr::null_mut())
            )?;
            // SAFETY: the pointer came from Arc::into_raw in ModelInitialize and is released once, here.
            drop(unsafe { Arc::from_raw(state as *const ModelState) });
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use metal_mps_model_config::Parameter;

    fn backend(fault_injection: bool) -> BackendState {
        let mut b = BackendState::from_backend_config("").unwrap();
        b.fault_injection = fault_injection;
        b
    }

    fn with_fault(value: &str) -> ModelConfig {
        let mut c = ModelConfig::default();
        c.parameters.insert(
            FAULT_INJECTION_PARAMETER.into(),
            Parameter {
                string_value: value.into(),
            },
        );
        c
    }

    #[test]
    fn fault_injection_needs_the_environment_switch() {
        assert_eq!(
            parse_fault(&ModelConfig::default(), &backend(false)).unwrap(),
            FaultInjection::None
        );
        let e = parse_fault(&with_fault("panic_in_execute"), &backend(false)).unwrap_err();
        assert!(e.message.contains("METAL_MPS_FAULT_INJECTION=1"), "{e}");
        assert_eq!(
            parse_fault(&with_fault("panic_in_execute"), &backend(true)).unwrap(),
            FaultInjection::PanicInExecute
        );
        assert!(parse_fault(&with_fault("boom"), &backend(true)).is_err());
    }
}
