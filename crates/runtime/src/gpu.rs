//! The GPU engine (`metal-mps-gpu`) behind [`crate::Model`]: option mapping,
//! preparation and memory statistics. Wiring into `model.rs`:
//! `Engine::Gpu(GpuRunner)` built by [`prepare`], run with
//! `runner.run(&ordered)`, nodes from `runner.node_engines()`, the compiled
//! graph from `runner.graph()`, statistics from [`memory_stats`].

use crate::options::{MemoryStats, Options, Precision};
use metal_mps_gpu::{GpuOptions, GpuRunner};
use metal_mps_ir::{Graph, Result};

/// The GPU engine's options for the model's [`Options`]: adapter, precision,
/// and the pool settings given through the API (over `MPS_*` variables).
pub(crate) fn gpu_options(o: &Options) -> GpuOptions {
    let custom = o.pool.max_pool_bytes.is_some() || o.pool.max_buffer_age.is_some();
    let pool = custom.then(|| {
        let mut p = metal_mps_gpu::PoolConfig::from_env();
        if let Some(b) = o.pool.max_pool_bytes {
            p.max_pool_bytes = b;
        }
        if let Some(a) = o.pool.max_buffer_age {
            p.max_age = a;
        }
        p
    });
    let precision = match o.precision {
        Precision::F32 => metal_mps_gpu::Precision::Native,
        Precision::F16 => metal_mps_gpu::Precision::F16,
    };
    GpuOptions {
        adapter: o.adapter.clone(),
        precision,
        pool,
        autotune: o.autotune,
        ..GpuOptions::default()
    }
}

/// Compiles the optimized graph for the GPU (kernels, weights on the device).
pub(crate) fn prepare(graph: &Graph, o: &Options) -> Result<GpuRunner> {
    GpuRunner::new(graph, &gpu_options(o))
}

/// Whether a hardware GPU adapter exists. Software adapters (lavapipe,
/// WARP) are slower than the CPU engine, so the automatic choice skips them
/// unless `METAL_MPS_ALLOW_SOFTWARE_GPU=1`; `Device::Gpu` still runs on them.
pub(crate) fn available() -> bool {
    let software_ok = std::env::var("METAL_MPS_ALLOW_SOFTWARE_GPU").is_ok_and(|v| v == "1");
    metal_mps_gpu::list_adapters()
        .iter()
        .any(|a| software_ok || a.device_type != "Cpu")
}

pub(crate) fn memory_stats(r: &GpuRunner) -> MemoryStats {
    let s = r.pool_stats();
    MemoryStats {
        bytes_weights: r.weight_bytes(),
        bytes_in_use: s.bytes_in_use,
        bytes_pooled: s.bytes_pooled,
        allocations: s.allocations,
        hits: s.hits,
        misses: s.misses,
        evictions: s.evictions,
    }
}
