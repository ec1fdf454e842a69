//! The GPU engine of metal_mps, on wgpu: Metal on macOS, Vulkan on Linux, DX12
//! on Windows.
//!
//! - [`context`]: adapter choice ([`context::ADAPTER_ENV`]) and detected features;
//! - [`pool`]: the memory manager (pooled buffers in power-of-two buckets);
//! - [`pipeline_cache`]: WGSL kernels (`src/kernels/*.wgsl`) compiled once, cached
//!   by source, entry point and override constants;
//! - [`ops`]: one launcher per kernel;
//! - [`autotune`]: the tiles of each product and convolution, chosen by timing
//!   the candidates on the adapter and kept on disk;
//! - [`GpuRunner`]: a model prepared for the GPU; nodes the GPU does not run go to
//!   the CPU engine through explicit transfers; a model whose shapes depend on data
//!   is cut at the node that decides them (`split`), which runs on the CPU, and
//!   continues on the GPU with the shapes it produced.

pub mod autotune;
pub mod context;
pub mod disk_cache;
mod engine;
mod lower;
pub mod ops;
pub mod options;
pub mod pipeline_cache;
mod plan;
pub mod pool;
mod split;
mod timing;
pub mod transfer;

pub use context::{
    adapter_available, adapter_info, list_adapters, AdapterDescription, Capabilities, GpuContext,
};
pub use engine::{GpuRunner, Pending};
pub use options::{GpuOptions, Precision};
pub use pool::{PoolConfig, PoolStats};

/// The engine [`GpuRunner::node_engines`] names for a node computed while
/// planning (folded into a constant), which neither engine runs.
pub const FOLDED: &str = "folded";
