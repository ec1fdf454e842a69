//! The `metal_mps._native` extension module: onnxruntime's Python API over
//! the metal_mps runtime (`crates/runtime`). The Python package
//! (`python/metal_mps`) re-exports it and adds `metal_mps.backend`.

mod convert;
mod errors;
mod options;
mod session;

use pyo3::prelude::*;

/// The execution providers available here, preferred first
/// (`MetalMpsExecutionProvider` when a hardware GPU adapter exists).
#[pyfunction]
fn get_available_providers() -> Vec<&'static str> {
    options::available_providers()
}

/// Every provider metal_mps knows, available here or not.
#[pyfunction]
fn get_all_providers() -> Vec<&'static str> {
    vec![options::GPU_PROVIDER, options::CPU_PROVIDER]
}

/// `"GPU"` when a hardware GPU adapter exists, else `"CPU"` (onnxruntime's `get_device`).
#[pyfunction]
fn get_device() -> &'static str {
    if metal_mps::gpu_available() {
        "GPU"
    } else {
        "CPU"
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<session::InferenceSession>()?;
    m.add_class::<session::NodeArg>()?;
    m.add_class::<session::ModelMetadata>()?;
    m.add_class::<options::SessionOptions>()?;
    m.add_class::<options::RunOptions>()?;
    m.add_class::<options::GraphOptimizationLevel>()?;
    m.add_class::<options::ExecutionMode>()?;
    m.add_function(wrap_pyfunction!(get_available_providers, m)?)?;
    m.add_function(wrap_pyfunction!(get_all_providers, m)?)?;
    m.add_function(wrap_pyfunction!(get_device, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    Ok(())
}
