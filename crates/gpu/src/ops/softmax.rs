//! Launcher of Softmax along one axis (`softmax.wgsl`).

use super::{grid, grid_groups, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::Result;

/// Softmax over rows of `len` elements: `outer x len x inner` elements, the
/// axis in the middle. Contiguous rows get a workgroup each, strided rows an
/// invocation each.
pub fn softmax(
    ctx: &GpuContext,
    dtype: Scalar,
    outer: usize,
    len: usize,
    inner: usize,
    x: Binding,
    y: Binding,
) -> Result<Call> {
    let rows = outer * inner;
    let params = Params::default()
        .u32(u32_of(rows, "rows")?)
        .u32(u32_of(len, "row length")?)
        .u32(u32_of(inner.max(1), "inner")?)
        .u32(0)
        .finish();
    let (entry, groups) = if inner == 1 {
        ("row_wg", grid_groups(rows as u64)?)
    } else {
        ("row_thread", grid(rows as u64)?)
    };
    let key = PipelineKey::new(Kernel::Softmax, Variant::of(dtype), entry);
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![x, y],
        groups,
    })
}
