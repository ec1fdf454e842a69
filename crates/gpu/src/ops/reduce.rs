//! Launcher of ReduceSum/Mean/Max/Min over any axes (`reduce.wgsl`).

use super::{grid, grid_groups, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::{coalesce, Error, ReduceOp, Result};

/// Most dims after coalescing, for kept and reduced dims each.
pub const MAX_RANK: usize = 8;

/// Reduces `shape` over `axes` (normalized, any order); the output is the kept
/// dims in order, contiguous.
pub fn reduce(
    ctx: &GpuContext,
    dtype: Scalar,
    op: ReduceOp,
    shape: &[usize],
    axes: &[usize],
    x: Binding,
    y: Binding,
) -> Result<Call> {
    let strides = metal_mps_ir::strides(shape);
    let kept: Vec<(usize, usize)> = (0..shape.len())
        .filter(|d| !axes.contains(d))
        .map(|d| (shape[d], strides[d]))
        .collect();
    let red: Vec<(usize, usize)> = (0..shape.len())
        .filter(|d| axes.contains(d))
        .map(|d| (shape[d], strides[d]))
        .collect();
    let n_out: usize = kept.iter().map(|d| d.0).product();
    let count: usize = red.iter().map(|d| d.0).product();
    let (kept, red) = (coalesce(&kept), coalesce(&red));
    if kept.len() > MAX_RANK || red.len() > MAX_RANK {
        return Err(Error::Unsupported(format!(
            "a reduction of a rank {} tensor on the GPU",
            shape.len()
        )));
    }
    let col = |v: &[(usize, usize)], f: fn(&(usize, usize)) -> usize| -> Result<Vec<u32>> {
        v.iter().map(|d| u32_of(f(d), "reduction dim")).collect()
    };
    let params = Params::default()
        .u32(u32_of(n_out, "outputs")?)
        .u32(u32_of(count, "reduced elements")?)
        .u32(kept.len() as u32)
        .u32(red.len() as u32)
        .words(&col(&kept, |d| d.0)?, 2, 1)
        .words(&col(&kept, |d| d.1)?, 2, 0)
        .words(&col(&red, |d| d.0)?, 2, 1)
        .words(&col(&red, |d| d.1)?, 2, 0)
        .finish();
    let code = match op {
        ReduceOp::Sum => 0,
        ReduceOp::Mean => 1,
        ReduceOp::Max => 2,
        ReduceOp::Min => 3,
    };
    let per_wg = count >= 128 && n_out < (1 << 16);
    let (entry, groups) = if per_wg {
        ("per_wg", grid_groups(n_out as u64)?)
    } else {
        ("per_thread", grid(n_out as u64)?)
    };
    let key =
        PipelineKey::new(Kernel::Reduce, Variant::of(dtype), entry).with("OP", Const::U32(code));
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![x, y],
        groups,
    })
}
