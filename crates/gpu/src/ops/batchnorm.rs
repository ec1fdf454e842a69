//! Launcher of BatchNormalization with run-time parameters (`batchnorm.wgsl`).

use super::{grid, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::Result;

/// `y = (x - mean) / sqrt(var + eps) * scale + bias` per channel of an
/// `[N, C, inner..]` tensor; `params` are scale, bias, mean, var.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm(
    ctx: &GpuContext,
    dtype: Scalar,
    n: usize,
    channels: usize,
    inner: usize,
    eps: f32,
    x: Binding,
    params: [Binding; 4],
    y: Binding,
) -> Result<Call> {
    let p = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(u32_of(channels.max(1), "channels")?)
        .u32(u32_of(inner.max(1), "inner")?)
        .f32(eps)
        .finish();
    let key = PipelineKey::new(Kernel::BatchNorm, Variant::of(dtype), "main");
    let [s, b, m, v] = params;
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params: p,
        bindings: vec![x, s, b, m, v, y],
        groups: grid(n as u64)?,
    })
}
