//! `SessionOptions`, `RunOptions` and the execution providers: how a session
//! chooses and configures its engine.

use crate::errors::InvalidArgument;
use metal_mps::{Device, Options, PoolConfig, Precision};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use std::collections::HashMap;
use std::time::Duration;

/// The provider that runs the GPU engine (Metal, Vulkan or DX12 through wgpu).
pub const GPU_PROVIDER: &str = "MetalMpsExecutionProvider";
/// The provider that runs the CPU engine.
pub const CPU_PROVIDER: &str = "CPUExecutionProvider";

/// onnxruntime's graph optimization levels: `ORT_DISABLE_ALL` turns the
/// optimizer (constant folding, fusion) off; every other level runs it.
#[pyclass(module = "metal_mps", eq, eq_int, from_py_object)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphOptimizationLevel {
    #[pyo3(name = "ORT_DISABLE_ALL")]
    DisableAll = 0,
    #[pyo3(name = "ORT_ENABLE_BASIC")]
    EnableBasic = 1,
    #[pyo3(name = "ORT_ENABLE_EXTENDED")]
    EnableExtended = 2,
    #[pyo3(name = "ORT_ENABLE_ALL")]
    EnableAll = 99,
}

/// onnxruntime's execution modes. The engines run the nodes of one inference
/// in order, spreading each kernel over the cores; both modes do that.
#[pyclass(module = "metal_mps", eq, eq_int, from_py_object)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionMode {
    #[pyo3(name = "ORT_SEQUENTIAL")]
    Sequential = 0,
    #[pyo3(name = "ORT_PARALLEL")]
    Parallel = 1,
}

/// How an `InferenceSession` loads and runs its model (onnxruntime's
/// `SessionOptions`, plus the metal_mps engine settings).
///
/// - `device`: `"auto"` (the GPU engine when a hardware adapter exists, else
///   the CPU engine), `"cpu"` or `"gpu"`; used when `providers` is not given.
/// - `precision`: `"fp32"` or `"fp16"` (FP32 models computed in FP16 on GPUs
///   that support it).
/// - `max_pool_size` (bytes) and `max_buffer_age` (seconds): the GPU buffer
///   pool's limits (default: `MPS_MAX_POOL_SIZE`, `MPS_MAX_BUFFER_AGE`).
/// - `adapter`: part of the GPU adapter's name (default: `METAL_MPS_ADAPTER`).
/// - `intra_op_num_threads`: threads of this session's own CPU pool (0: the
///   process-wide pool, as many threads as the process may use, or
///   `RAYON_NUM_THREADS`).
/// - `graph_optimization_level`: `ORT_DISABLE_ALL` turns the optimizer off.
/// - `inter_op_num_threads`, `execution_mode`, `log_severity_level`,
///   `enable_cpu_mem_arena`, `enable_mem_pattern`, `enable_profiling` and
///   session config entries are kept for onnxruntime scripts and change
///   nothing: nodes run in order, memory is planned and pooled always.
#[pyclass(module = "metal_mps", from_py_object)]
#[derive(Clone, Debug)]
pub struct SessionOptions {
    #[pyo3(get, set)]
    pub device: String,
    #[pyo3(get, set)]
    pub precision: String,
    #[pyo3(get, set)]
    pub max_pool_size: Option<u64>,
    #[pyo3(get, set)]
    pub max_buffer_age: Option<f64>,
    #[pyo3(get, set)]
    pub adapter: Option<String>,
    #[pyo3(get, set)]
    pub intra_op_num_threads: i32,
    #[pyo3(get, set)]
    pub inter_op_num_threads: i32,
    #[pyo3(get, set)]
    pub graph_optimization_level: GraphOptimizationLevel,
    #[pyo3(get, set)]
    pub execution_mode: ExecutionMode,
    #[pyo3(get, set)]
    pub log_severity_level: i32,
    #[pyo3(get, set)]
    pub log_verbosity_level: i32,
    #[pyo3(get, set)]
    pub enable_cpu_mem_arena: bool,
    #[pyo3(get, set)]
    pub enable_mem_pattern: bool,
    #[pyo3(get, set)]
    pub enable_profiling: bool,
    config: HashMap<String, String>,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            device: "auto".into(),
            precision: "fp32".into(),
            max_pool_size: None,
            max_buffer_age: None,
            adapter: None,
            intra_op_num_threads: 0,
            inter_op_num_threads: 0,
            graph_optimization_level: GraphOptimizationLevel::EnableAll,
            execution_mode: ExecutionMode::Sequential,
            log_severity_level: 2,
            log_verbosity_level: 0,
            enable_cpu_mem_arena: true,
            enable_mem_pattern: true,
            enable_profiling: false,
            config: HashMap::new(),
        }
    }
}

#[pymethods]
impl SessionOptions {
    #[new]
    fn py_new() -> SessionOptions {
        SessionOptions::default()
    }

    /// Stores a session configuration entry (kept for onnxruntime scripts).
    fn add_session_config_entry(&mut self, key: String, value: String) {
        self.config.insert(key, value);
    }

    /// The value stored by `add_session_config_entry`.
    fn get_session_config_entry(&self, key: &str) -> PyResult<String> {
        self.config.get(key).cloned().ok_or_else(|| {
            InvalidArgument::new_err(format!("session config entry '{key}' is not set"))
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "SessionOptions(device={:?}, precision={:?}, intra_op_num_threads={}, graph_optimization_level={:?})",
            self.device, self.precision, self.intra_op_num_threads, self.graph_optimization_level
        )
    }
}

impl SessionOptions {
    /// The runtime options for a model run by `device`.
    pub fn to_options(&self, device: Device) -> PyResult<Options> {
        let precision: Precision = self
            .precision
            .parse()
            .map_err(|e: String| PyValueError::new_err(format!("SessionOptions.precision: {e}")))?;
        let threads = match usize::try_from(self.intra_op_num_threads) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "SessionOptions.intra_op_num_threads must be >= 0, got {}",
                    self.intra_op_num_threads
                )))
            }
        };
        if let Some(age) = self.max_buffer_age {
            if !(age.is_finite() && age >= 0.0) {
                return Err(PyValueError::new_err(format!(
                    "SessionOptions.max_buffer_age must be a non-negative number of seconds, got {age}"
                )));
            }
        }
        Ok(Options {
            device,
            precision,
            optimize: self.graph_optimization_level != GraphOptimizationLevel::DisableAll,
            pool: PoolConfig {
                max_pool_bytes: self.max_pool_size,
                max_buffer_age: self.max_buffer_age.map(Duration::from_secs_f64),
            },
            adapter: self.adapter.clone(),
            threads,
            ..Options::default()
        })
    }

    /// The engine `device` names when no provider is given.
    fn default_device(&self) -> PyResult<Device> {
        match self.device.to_ascii_lowercase().as_str() {
            "auto" => Ok(if metal_mps::gpu_available() {
                Device::Gpu
            } else {
                Device::Cpu
            }),
            other => other.parse().map_err(|e: String| {
                PyValueError::new_err(format!("SessionOptions.device: {e} (or auto)"))
            }),
        }
    }
}

/// Kept for onnxruntime scripts: a run's log settings and tag change nothing.
#[pyclass(module = "metal_mps", from_py_object)]
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    #[pyo3(get, set)]
    pub log_severity_level: i32,
    #[pyo3(get, set)]
    pub log_verbosity_level: i32,
    #[pyo3(get, set)]
    pub logid: String,
    #[pyo3(get, set)]
    pub run_tag: String,
}

#[pymethods]
impl RunOptions {
    #[new]
    fn py_new() -> RunOptions {
        RunOptions {
            log_severity_level: 2,
            ..RunOptions::default()
        }
    }
}

/// The providers this machine offers, preferred first.
pub fn available_providers() -> Vec<&'static str> {
    if metal_mps::gpu_available() {
        vec![GPU_PROVIDER, CPU_PROVIDER]
    } else {
        vec![CPU_PROVIDER]
    }
}

/// The providers a session on `device` reports: the GPU plan runs the nodes
/// the GPU engine lacks on the CPU.
pub fn providers_of(device: Device) -> Vec<&'static str> {
    match device {
        Device::Gpu => vec![GPU_PROVIDER, CPU_PROVIDER],
        Device::Cpu => vec![CPU_PROVIDER],
    }
}

/// The engine for `providers` (names, or `(name, options)` pairs; the first
/// one decides), else for `options.device`.
pub fn choose_device(
    providers: Option<&Bound<'_, PyAny>>,
    options: &SessionOptions,
) -> PyResult<Device> {
    let Some(providers) = providers.filter(|p| !p.is_none()) else {
        return options.default_device();
    };
    let mut first = None;
    for item in providers.try_iter()? {
        let item = item?;
        let name_obj = match item.cast::<PyTuple>() {
            Ok(pair) => pair.get_item(0)?,
            Err(_) => item,
        };
        let name: String = name_obj.cast::<PyString>()?.extract()?;
        let device = match name.as_str() {
            GPU_PROVIDER => Device::Gpu,
            CPU_PROVIDER => Device::Cpu,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown execution provider '{other}' (metal_mps has {GPU_PROVIDER} and {CPU_PROVIDER})"
                )))
            }
        };
        first.get_or_insert(device);
    }
    match first {
        Some(d) => Ok(d),
        None => options.default_device(),
    }
}
