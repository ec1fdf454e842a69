//! Settings of a model on the GPU engine.

use crate::pool::PoolConfig;

/// Arithmetic precision of FP32 models on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Every value keeps its dtype (FP16 models compute in FP16 storage).
    #[default]
    Native,
    /// FP32 values are stored and multiplied in FP16 (with f32 accumulation),
    /// converted at the model's inputs and outputs. Needs SHADER_F16; without
    /// it the model runs in FP32.
    F16,
}

/// Options of [`crate::GpuRunner::new`].
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter's name, driver or backend;
    /// `None`: the `METAL_MPS_ADAPTER` environment variable, else the best adapter.
    pub adapter: Option<String>,
    pub precision: Precision,
    /// Replaces the shared buffer pool's settings (else `MPS_*` variables, then defaults).
    pub pool: Option<PoolConfig>,
    /// Use cooperative matrices (tensor cores) where the adapter offers them.
    pub cooperative_matrix: bool,
    /// Most input-shape specializations kept compiled at once (dynamic batch).
    pub max_specializations: usize,
    /// Time the tile candidates of each product and convolution while
    /// planning ([`crate::autotune`]); `None`: the adapter's default (on for
    /// GPUs, off for software adapters, or `METAL_MPS_GPU_AUTOTUNE`).
    pub autotune: Option<bool>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            adapter: None,
            precision: Precision::Native,
            pool: None,
            cooperative_matrix: true,
            max_specializations: 8,
            autotune: None,
        }
    }
}
