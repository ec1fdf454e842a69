//! The kernel behind slicing, expanding, tiling, padding and the depth/space
//! rearrangements: every output element reads one input element whose flat
//! offset is a sum of per-axis offsets (or is zero, outside the input).

use metal_mps_ir::{
    checked_numel, dispatch_dtype, invalid, strides, Element, Error, Out, Result, Tensor,
};

/// One axis of a remapping: for each index along the (virtual) output axis,
/// the flat input offset it contributes, or `None` where the output is zero.
pub(crate) type AxisMap = Vec<Option<usize>>;

/// The map of an axis read in order from `start` with `step` (in elements of
/// the axis, whose flat stride is `stride`), `count` times.
pub(crate) fn stepped(start: usize, step: i64, count: usize, stride: usize) -> Result<AxisMap> {
    axis_map(count, |i| {
        let idx = start as i64 + i as i64 * step;
        Some(idx as usize * stride)
    })
}

/// A map of `n` entries `f(0..n)`, failing rather than aborting when `n` is huge.
pub(crate) fn axis_map(n: usize, f: impl Fn(usize) -> Option<usize>) -> Result<AxisMap> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        bytes: n.saturating_mul(std::mem::size_of::<Option<usize>>()),
    })?;
    v.extend((0..n).map(f));
    Ok(v)
}

/// Output element at multi-index `i` (row-major over the maps' lengths) is
/// `x[sum_d maps[d][i_d]]`, or zero where a map gives `None`. The result has
/// `shape`, whose element count must equal the product of the maps' lengths.
/// The maps are built (by `maps`) only when the output is not empty.
pub(crate) fn remap(
    op: &str,
    x: &Tensor,
    shape: Vec<usize>,
    out: &mut Out,
    maps: impl FnOnce() -> Result<Vec<AxisMap>>,
) -> Result<Tensor> {
    if checked_numel(&shape)? == 0 {
        return out.tensor(0, x.dtype(), shape);
    }
    let maps = &maps()?;
    let lens: Vec<usize> = maps.iter().map(Vec::len).collect();
    let n = checked_numel(&lens)?;
    if checked_numel(&shape)? != n {
        return invalid!("{op}: output shape {shape:?} does not hold {n} elements");
    }
    // Every offset that can be read must lie inside the input.
    if n > 0 && maps.iter().all(|m| m.iter().any(Option::is_some)) {
        let mut max = 0usize;
        for m in maps {
            let top = m.iter().flatten().copied().max().unwrap_or(0);
            max = max
                .checked_add(top)
                .ok_or_else(|| Error::Invalid(format!("{op}: offset overflow")))?;
        }
        if max >= x.numel() {
            return invalid!(
                "{op}: reads offset {max} of an input of shape {:?}",
                x.shape()
            );
        }
    }
    let mut y = out.tensor(0, x.dtype(), shape)?;
    dispatch_dtype!(x.dtype(), T => {
        remap_typed(x.as_slice::<T>()?, maps, y.as_slice_mut::<T>()?);
    });
    Ok(y)
}

fn remap_typed<T: Element>(xs: &[T], maps: &[AxisMap], ys: &mut [T]) {
    if ys.is_empty() {
        return;
    }
    let Some((inner, outer)) = maps.split_last() else {
        ys[0] = xs[0];
        return;
    };
    let row = inner.len();
    let first = inner.first().copied().flatten();
    let contiguous = match first {
        Some(f) => inner.iter().enumerate().all(|(i, v)| *v == Some(f + i)),
        None => false,
    };
    let mut idx = vec![0usize; outer.len()];
    for chunk in ys.chunks_mut(row) {
        let base: Option<usize> = idx.iter().zip(outer).map(|(&i, m)| m[i]).sum();
        match (base, first) {
            (None, _) => chunk.fill(T::zero()),
            (Some(b), Some(f)) if contiguous => {
                chunk.copy_from_slice(&xs[b + f..b + f + row]);
            }
            (Some(b), _) => {
                for (o, m) in chunk.iter_mut().zip(inner) {
                    *o = match m {
                        Some(off) => xs[b + off],
                        None => T::zero(),
                    };
                }
            }
        }
        for d in (0..outer.len()).rev() {
            idx[d] += 1;
            if idx[d] < outer[d].len() {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// `x` seen with shape `view` (same element count), its axes permuted by
/// `perm`, stored with `shape`: the reshape-transpose-reshape of
/// DepthToSpace and SpaceToDepth.
pub(crate) fn permute_view(
    op: &str,
    x: &Tensor,
    view: &[usize],
    perm: &[usize],
    shape: Vec<usize>,
    out: &mut Out,
) -> Result<Tensor> {
    if checked_numel(view)? != x.numel() {
        return invalid!("{op}: cannot view {:?} as {view:?}", x.shape());
    }
    let st = strides(view);
    remap(op, x, shape, out, || {
        perm.iter()
            .map(|&p| axis_map(view[p], |i| Some(i * st[p])))
            .collect()
    })
}
