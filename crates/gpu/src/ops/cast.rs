//! Launcher of element type conversions (`cast.wgsl`).

use super::{grid, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::Result;

/// `y = U(x)` over `n` elements; with `to_bool`, `y = U(x != 0)` (a boolean
/// is an i32 0 or 1 on the device).
pub fn cast(
    ctx: &GpuContext,
    from: Scalar,
    to: Scalar,
    to_bool: bool,
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
            head_vec4s: None,
        },
        "main",
    )
    .with("TO_BOOL", Const::Bool(to_bool));
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![x, y],
        groups: grid(n as u64)?,
    })
}
