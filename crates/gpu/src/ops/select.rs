//! Launcher of Where (`where.wgsl`): an element of one of two tensors, chosen
//! by a boolean, all three broadcast to the output.

use super::{grid, u32_of, Binding, Call, Params};
use crate::ops::copy::mover_for;
use crate::pipeline_cache::{Kernel, PipelineKey, Variant};
use crate::GpuContext;
use metal_mps_ir::{Error, Result};

/// Most dims of a Where output.
pub const MAX_RANK: usize = 8;

/// Strides of a contiguous `shape` read as `out` (broadcast: 0 along the dims
/// it repeats), or `None` when it does not broadcast to `out`.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Option<Vec<usize>> {
    let pad = out.len().checked_sub(shape.len())?;
    let full: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(shape.iter().copied())
        .collect();
    let own = metal_mps_ir::strides(&full);
    (0..out.len())
        .map(|d| match full[d] {
            n if n == out[d] => Some(own[d]),
            1 => Some(0),
            _ => None,
        })
        .collect()
}

/// Records `y = where(cond, a, b)` over `out` for elements of `elem_bytes`
/// bytes; `shapes` are those of `cond`, `a` and `b`.
pub fn where_select(
    ctx: &GpuContext,
    elem_bytes: usize,
    out: &[usize],
    shapes: [&[usize]; 3],
    [cond, a, b]: [Binding; 3],
    y: Binding,
) -> Result<Call> {
    let t = mover_for(ctx, elem_bytes, "Where")?;
    if out.len() > MAX_RANK {
        return Err(Error::Unsupported(format!(
            "a Where of rank {} on the GPU",
            out.len()
        )));
    }
    let n: usize = out.iter().product();
    let w = |v: &[usize]| -> Result<Vec<u32>> { v.iter().map(|&x| u32_of(x, "Where")).collect() };
    let mut params = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(out.len() as u32)
        .u32(0)
        .u32(0)
        .words(&w(out)?, 2, 1);
    for s in shapes {
        let strides = broadcast_strides(s, out).ok_or_else(|| {
            Error::Invalid(format!("Where operand {s:?} does not broadcast to {out:?}"))
        })?;
        params = params.words(&w(&strides)?, 2, 0);
    }
    let key = PipelineKey::new(Kernel::Where, Variant::of(t), "main");
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params: params.finish(),
        bindings: vec![cond, a, b, y],
        groups: grid(n as u64)?,
    })
}
