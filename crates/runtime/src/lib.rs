//! metal_mps: load an ONNX model once, run it many times, on the CPU or the GPU.
//!
//! ```no_run
//! use metal_mps::{Model, Options, Tensor};
//! let model = Model::load("model.onnx", &Options::default())?;
//! let x = Tensor::from_vec(vec![1, 3, 224, 224], vec![0.5f32; 3 * 224 * 224])?;
//! let outputs = model.run(&[("input", &x)])?;
//! println!("{:?}", outputs[0].shape());
//! # Ok::<(), metal_mps::Error>(())
//! ```
//!
//! A [`Model`] is `Send + Sync`: share it (in an `Arc`) between threads and
//! call [`Model::run`] concurrently.

mod gpu;
mod model;
mod options;
mod validate;

pub use metal_mps_cpu::profile;
/// Process-wide caps on one tensor's bytes and on one model's plan.
pub use metal_mps_ir::limits;
/// Tensors as the serving protocols carry them (BYTES serialized as Triton does).
pub use metal_mps_ir::wire;
pub use metal_mps_ir::{
    bf16, f16, BoolByte, DType, Datum, Dim, Element, Error, Kind, Result, SharedBytes, Tensor,
};
pub use metal_mps_onnx::ModelMetadata;
pub use model::{Model, NodeInfo, PendingRun};
pub use options::{Device, MemoryStats, Options, PoolConfig, Precision};
pub use validate::TensorInfo;

/// Whether a hardware GPU adapter exists: what `KIND_MODEL` and `engine=auto`
/// use to choose the GPU engine. Software adapters such as lavapipe count only
/// with `METAL_MPS_ALLOW_SOFTWARE_GPU=1`; [`Device::Gpu`] runs on them anyway.
pub fn gpu_available() -> bool {
    model::gpu_available()
}
