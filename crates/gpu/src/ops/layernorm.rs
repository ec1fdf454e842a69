//! Launcher of LayerNormalization and RMSNormalization over contiguous rows
//! (`layernorm.wgsl`).

use super::{grid_groups, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::Result;

/// Normalizes `rows` rows of `cols` elements: `y = (x - mean) / sqrt(var + eps)
/// * scale (+ bias)` (`mean = 0` when `rms`); `scale` and `bias` hold `cols` elements.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    ctx: &GpuContext,
    dtype: Scalar,
    rows: usize,
    cols: usize,
    eps: f32,
    rms: bool,
    x: Binding,
    scale: Binding,
    bias: Option<Binding>,
    y: Binding,
    dummy: &Binding,
) -> Result<Call> {
    let params = Params::default()
        .u32(u32_of(rows, "rows")?)
        .u32(u32_of(cols, "row length")?)
        .f32(eps)
        .u32(0)
        .finish();
    let key = PipelineKey::new(Kernel::LayerNorm, Variant::of(dtype), "main")
        .with("RMS", Const::Bool(rms))
        .with("HAS_BIAS", Const::Bool(bias.is_some()));
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![x, scale, bias.unwrap_or_else(|| dummy.clone()), y],
        groups: grid_groups(rows as u64)?,
    })
}
