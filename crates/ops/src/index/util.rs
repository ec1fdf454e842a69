//! What the indexing operators share: reading index tensors, wrapping negative
//! indices, element offsets along an axis and scatter reductions.

use metal_mps_ir::{strides, DType, Element, Result, Tensor};
use std::cmp::Ordering;

/// The values of an index tensor (INT32 or INT64).
pub fn indices(op: &str, t: &Tensor) -> Result<Vec<i64>> {
    match t.dtype() {
        DType::I32 | DType::I64 => t.to_i64_vec(),
        d => metal_mps_ir::invalid!("{op}: indices must be INT32 or INT64, not {d}"),
    }
}

/// Fails unless an index input is INT32 or INT64 (inference).
pub fn check_index_dtype(op: &str, d: DType) -> Result<()> {
    if matches!(d, DType::I32 | DType::I64) {
        return Ok(());
    }
    metal_mps_ir::invalid!("{op}: indices must be INT32 or INT64, not {d}")
}

/// `i` wrapped into `[0, size)` (negative counts from the end), or an error.
pub fn wrap(op: &str, i: i64, size: usize) -> Result<usize> {
    let s = size as i64;
    let j = if i < 0 { i + s } else { i };
    if j < 0 || j >= s {
        return metal_mps_ir::invalid!("{op}: index {i} is out of range for a dimension of {size}");
    }
    Ok(j as usize)
}

/// For a tensor of `idx_shape` whose values index `data_shape` along `axis`
/// (GatherElements, ScatterElements): the data offset of every element.
pub fn axis_offsets(
    op: &str,
    data_shape: &[usize],
    idx_shape: &[usize],
    axis: usize,
    idx: &[i64],
) -> Result<Vec<usize>> {
    if data_shape.len() != idx_shape.len() {
        return metal_mps_ir::invalid!(
            "{op}: indices of rank {} for data of rank {}",
            idx_shape.len(),
            data_shape.len()
        );
    }
    for (d, (&a, &b)) in data_shape.iter().zip(idx_shape).enumerate() {
        if d != axis && b > a {
            return metal_mps_ir::invalid!(
                "{op}: indices of shape {idx_shape:?} exceed data of shape {data_shape:?} on axis {d}"
            );
        }
    }
    let st = strides(data_shape);
    let rank = idx_shape.len();
    let mut pos = vec![0usize; rank];
    let mut offs = Vec::with_capacity(idx.len());
    for &v in idx {
        let mut o = 0usize;
        for d in 0..rank {
            let c = if d == axis {
                wrap(op, v, data_shape[axis])?
            } else {
                pos[d]
            };
            o += c * st[d];
        }
        offs.push(o);
        for d in (0..rank).rev() {
            pos[d] += 1;
            if pos[d] < idx_shape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    Ok(offs)
}

/// How a scatter combines an update with the value already there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    /// The `reduction` attribute; `max`/`min` from opset 18, `add`/`mul` from 16.
    pub fn parse(op: &str, s: &str) -> Result<Reduction> {
        Ok(match s {
            "none" => Reduction::None,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            other => return metal_mps_ir::invalid!("{op}: unknown reduction '{other}'"),
        })
    }

    pub fn apply<T: Element>(self, dst: &mut T, src: T) {
        let float = T::DTYPE.is_float();
        *dst = match self {
            Reduction::None => src,
            Reduction::Add if float => T::from_f64(dst.to_f64() + src.to_f64()),
            Reduction::Add => T::from_i64(dst.to_i64().wrapping_add(src.to_i64())),
            Reduction::Mul if float => T::from_f64(dst.to_f64() * src.to_f64()),
            Reduction::Mul => T::from_i64(dst.to_i64().wrapping_mul(src.to_i64())),
            Reduction::Max if src > *dst => src,
            Reduction::Min if src < *dst => src,
            _ => *dst,
        };
    }
}

/// A total order for sorting (NaN after every number, NaNs equal).
pub fn total_cmp<T: Element>(a: &T, b: &T) -> Ordering {
    match a.partial_cmp(b) {
        Some(o) => o,
        None => {
            let (an, bn) = (a.partial_cmp(a).is_none(), b.partial_cmp(b).is_none());
            an.cmp(&bn)
        }
    }
}

/// `(outer, size, inner)` of a shape split at `axis`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}
