//! How a model is loaded: engine, precision, memory pool.

use std::str::FromStr;
use std::time::Duration;

/// Which engine runs the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    /// The wgpu engine (Metal on macOS, Vulkan on Linux, DX12 on Windows).
    Gpu,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            other => Err(format!("unknown device '{other}' (expected cpu or gpu)")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        })
    }
}

/// Arithmetic precision of FP32 models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    /// FP32 models computed in FP16 where the engine supports it (GPU with SHADER_F16).
    F16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::F32),
            "fp16" | "f16" => Ok(Precision::F16),
            other => Err(format!(
                "unknown precision '{other}' (expected fp32 or fp16)"
            )),
        }
    }
}

/// Buffer-pool settings of the GPU memory manager. `None` fields fall back to
/// the environment (`MPS_MAX_POOL_SIZE` bytes, `MPS_MAX_BUFFER_AGE` seconds),
/// then to the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolConfig {
    pub max_pool_bytes: Option<u64>,
    pub max_buffer_age: Option<Duration>,
}

/// Options of [`crate::Model::load`].
#[derive(Clone, Debug)]
pub struct Options {
    pub device: Device,
    pub precision: Precision,
    /// Run the optimizer (constant folding, fusion); off only to debug it.
    pub optimize: bool,
    pub pool: PoolConfig,
    /// Substring of the GPU adapter's name to choose (else `METAL_MPS_ADAPTER`, else the default).
    pub adapter: Option<String>,
    /// Threads of this model's own CPU thread pool (for servers that run
    /// several models or instances side by side). `None`: the process-wide
    /// pool, as many threads as the process may use (its affinity mask and
    /// cgroup CPU quota), or `RAYON_NUM_THREADS`.
    pub threads: Option<usize>,
    /// GPU engine: time the candidate tile shapes of each convolution and
    /// matrix product while planning, keeping the fastest (choices cached on
    /// disk). `None`: on for GPUs, off for software adapters, or
    /// `METAL_MPS_GPU_AUTOTUNE`.
    pub autotune: Option<bool>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            device: Device::Cpu,
            precision: Precision::F32,
            optimize: true,
            pool: PoolConfig::default(),
            adapter: None,
            threads: None,
            autotune: None,
        }
    }
}

/// Memory held by a model's engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of weights and constants.
    pub bytes_weights: u64,
    /// Bytes of buffers in use by running inferences.
    pub bytes_in_use: u64,
    /// Bytes of buffers kept for reuse.
    pub bytes_pooled: u64,
    pub allocations: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}
