//! Launcher of element type conversions (`cast.wgsl`).

use super::{grid, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::Result;

/// `y = U(x)` over `n` elements.
pub fn cast(
    ctx: &GpuContext,
    from: Scalar,
    to: Scalar,
    n: usize,
    x: Binding,
    y: Binding,
) -> Result<Call> {
    let params = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(0)
        .u32(0)
        .u32(0)
        .finish();
    let key = PipelineKey::new(
        Kernel::Cast,
        Variant {
            t: from,
            u: Some(to),
            coop: None,
        },
        "main",
    );
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![x, y],
        groups: grid(n as u64)?,
    })
}
