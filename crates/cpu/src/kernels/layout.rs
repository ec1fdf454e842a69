//! Ops that move data without arithmetic.

use crate::kernels::spread::Spread;
use crate::Out;
use metal_mps_ir::{
    coalesce, infer, invalid, normalize_axis, step_index, strides, DType, Element, Error, Op,
    Result, Tensor,
};
use rayon::prelude::*;

/// The output shape of an op whose output holds its input's bytes unchanged
/// under another shape (Reshape, Flatten, Squeeze, Unsqueeze); `None` for
/// every other op. The executor moves such an input into the output when no
/// later node reads it; otherwise [`view`] copies.
pub fn view_shape(op: &Op, inputs: &[Option<&Tensor>]) -> Option<Result<Vec<usize>>> {
    let x = || super::arg(inputs, 0);
    Some(match op {
        Op::Reshape { allowzero } => {
            x().and_then(|x| reshape_shape(x, super::arg(inputs, 1)?, *allowzero))
        }
        Op::Flatten { axis } => x().and_then(|x| flatten_shape(x.shape(), *axis)),
        Op::Squeeze { axes } => {
            x().and_then(|x| squeeze_shape(x.shape(), super::ints_arg(axes, inputs)?))
        }
        Op::Unsqueeze { axes } => x().and_then(|x| {
            let axes = super::ints_arg(axes, inputs)?
                .ok_or_else(|| Error::Invalid("Unsqueeze needs axes".into()))?;
            unsqueeze_shape(x.shape(), &axes)
        }),
        _ => return None,
    })
}

/// A copy of the input under the shape of [`view_shape`].
pub fn view(op: &Op, inputs: &[Option<&Tensor>], out: &mut Out) -> Result<Tensor> {
    let shape = view_shape(op, inputs).expect("called for view ops only")?;
    out.copy_of(0, super::arg(inputs, 0)?, shape)
}

fn reshape_shape(x: &Tensor, shape: &Tensor, allowzero: bool) -> Result<Vec<usize>> {
    let target = shape.to_i64_vec()?;
    let mut dims = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &d) in target.iter().enumerate() {
        dims.push(match d {
            0 if !allowzero => *x.shape().get(i).ok_or_else(|| {
                Error::Invalid(format!(
                    "Reshape: 0 at position {i} copies a dimension the input (rank {}) lacks",
                    x.rank()
                ))
            })?,
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                1
            }
            d if d < 0 => return invalid!("Reshape target {target:?} is invalid"),
            d => d as usize,
        });
    }
    if let Some(i) = infer_at {
        let known: usize = dims.iter().product();
        if known == 0 || !x.numel().is_multiple_of(known) {
            return invalid!("cannot reshape {:?} into {target:?}", x.shape());
        }
        dims[i] = x.numel() / known;
    }
    if metal_mps_ir::checked_numel(&dims)? != x.numel() {
        return invalid!("cannot reshape {:?} into {target:?}", x.shape());
    }
    Ok(dims)
}

fn flatten_shape(x: &[usize], axis: i64) -> Result<Vec<usize>> {
    let r = x.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return invalid!("Flatten axis {axis} is out of range for rank {r}");
    }
    let (outer, inner) = x.split_at(a as usize);
    Ok(vec![outer.iter().product(), inner.iter().product()])
}

fn squeeze_shape(x: &[usize], axes: Option<Vec<i64>>) -> Result<Vec<usize>> {
    Ok(match axes {
        None => x.iter().copied().filter(|&d| d != 1).collect(),
        Some(axes) => {
            let axes = axes
                .iter()
                .map(|&a| normalize_axis(a, x.len()))
                .collect::<Result<Vec<_>>>()?;
            for &a in &axes {
                if x[a] != 1 {
                    return invalid!("Squeeze: axis {a} has size {}, not 1", x[a]);
                }
            }
            x.iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
    })
}

fn unsqueeze_shape(x: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let rank = x.len() + axes.len();
    let axes = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>>>()?;
    let mut src = x.iter();
    let mut shape = Vec::with_capacity(rank);
    for i in 0..rank {
        if axes.contains(&i) {
            shape.push(1);
        } else {
            shape.push(
                *src.next()
                    .ok_or_else(|| Error::Invalid(format!("Unsqueeze axes {axes:?} repeat")))?,
            );
        }
    }
    Ok(shape)
}

pub fn transpose(x: &Tensor, perm: &[usize], out: &mut Out) -> Result<Tensor> {
    let perm = infer::resolve_perm(perm, x.rank())?;
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let mut y = out.tensor(0, x.dtype(), shape)?;
    let in_strides = strides(x.shape());
    // Each output axis: its size and its stride in the input.
    let dims: Vec<(usize, usize)> = perm
        .iter()
        .map(|&p| (x.shape()[p], in_strides[p]))
        .collect();
    let size = x.dtype().size();
    copy_strided(x.as_bytes(), y.as_bytes_mut(), &dims, size);
    Ok(y)
}

/// Writes `dst` in row-major order of the sizes of `dims` (`(size, source
/// stride)` per axis), reading element `idx` of `src` at
/// `sum(idx[d] * stride[d])` (strides in elements of `size` bytes). Rows of
/// the innermost axis are copied whole when they are contiguous in `src`;
/// large copies are split among the threads by rows.
fn copy_strided(src: &[u8], dst: &mut [u8], dims: &[(usize, usize)], size: usize) {
    let (shape, strides): (Vec<usize>, Vec<usize>) = coalesce(dims).into_iter().unzip();
    let n: usize = shape.iter().product();
    if n == 0 || size == 0 {
        return;
    }
    let Some((&inner, outer)) = shape.split_last() else {
        dst[..size].copy_from_slice(&src[..size]);
        return;
    };
    let inner_stride = strides[outer.len()];
    let row_bytes = inner * size;
    let copy_rows = |first_row: usize, rows: &mut [u8]| {
        let mut idx = vec![0usize; outer.len()];
        let (mut rem, mut off) = (first_row, 0usize);
        for d in (0..outer.len()).rev() {
            idx[d] = rem % outer[d];
            rem /= outer[d];
            off += idx[d] * strides[d];
        }
        for row in rows.chunks_exact_mut(row_bytes) {
            match (inner_stride, size) {
                (1, _) => row.copy_from_slice(&src[off * size..][..row_bytes]),
                (_, 4) => strided_row::<4>(src, row, off, inner_stride),
                (_, 8) => strided_row::<8>(src, row, off, inner_stride),
                (_, 2) => strided_row::<2>(src, row, off, inner_stride),
                (_, 1) => strided_row::<1>(src, row, off, inner_stride),
                _ => {
                    for (j, el) in row.chunks_exact_mut(size).enumerate() {
                        el.copy_from_slice(&src[(off + j * inner_stride) * size..][..size]);
                    }
                }
            }
            step_index(&mut idx, &mut off, outer, &strides[..outer.len()]);
        }
    };
    let rows = n / inner;
    // Blocks of about 64 KiB, so that small copies stay on this thread.
    let rows_per_task = (64 * 1024 / row_bytes.max(1)).clamp(1, rows);
    if rows_per_task >= rows {
        copy_rows(0, &mut dst[..n * size]);
    } else {
        dst[..n * size]
            .par_chunks_mut(rows_per_task * row_bytes)
            .enumerate()
            .spread()
            .for_each(|(i, chunk)| copy_rows(i * rows_per_task, chunk));
    }
}

/// Elements `off + j·stride` of `src` (each `S` bytes) into `row`.
#[inline(always)]
fn strided_row<const S: usize>(src: &[u8], row: &mut [u8], off: usize, stride: usize) {
    for (j, el) in row.chunks_exact_mut(S).enumerate() {
        let at = (off + j * stride) * S;
        el.copy_from_slice(&src[at..at + S]);
    }
}

pub fn concat(inputs: &[Option<&Tensor>], axis: i64, out: &mut Out) -> Result<Tensor> {
    let all: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let first = all[0];
    let ax = normalize_axis(axis, first.rank())?;
    let mut shape = first.shape().to_vec();
    shape[ax] = 0;
    for t in &all {
        if t.rank() != first.rank() || t.dtype() != first.dtype() {
            return invalid!(
                "Concat inputs differ in rank or dtype: {:?} {} and {:?} {}",
                first.shape(),
                first.dtype(),
                t.shape(),
                t.dtype()
            );
        }
        for d in 0..t.rank() {
            if d != ax && t.shape()[d] != first.shape()[d] {
                return invalid!(
                    "Concat inputs {:?} and {:?} differ outside axis {ax}",
                    first.shape(),
                    t.shape()
                );
            }
        }
        shape[ax] += t.shape()[ax];
    }
    let outer: usize = shape[..ax].iter().product();
    let mut y = out.tensor(0, first.dtype(), shape)?;
    let yb = y.as_bytes_mut();
    let mut pos = 0;
    let row: usize = yb.len() / outer.max(1);
    for o in 0..outer {
        for t in &all {
            let chunk = t.as_bytes().len() / outer.max(1);
            yb[o * row + pos..o * row + pos + chunk]
                .copy_from_slice(&t.as_bytes()[o * chunk..(o + 1) * chunk]);
            pos += chunk;
        }
        pos = 0;
    }
    Ok(y)
}

pub fn split(
    x: &Tensor,
    axis: i64,
    sizes: Option<Vec<i64>>,
    parts: usize,
    out: &mut Out,
) -> Result<Vec<Tensor>> {
    let ax = normalize_axis(axis, x.rank())?;
    let dim = x.shape()[ax];
    let sizes: Vec<usize> = match sizes {
        Some(s) => {
            if s.iter().any(|&v| v < 0) || s.iter().sum::<i64>() != dim as i64 {
                return invalid!("Split sizes {s:?} do not add up to dimension {dim}");
            }
            s.iter().map(|&v| v as usize).collect()
        }
        None => infer::split_even(dim, parts),
    };
    let outer: usize = x.shape()[..ax].iter().product();
    let inner: usize = x.shape()[ax + 1..].iter().product::<usize>() * x.dtype().size();
    let xb = x.as_bytes();
    let mut outs = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for (i, &s) in sizes.iter().enumerate() {
        let mut shape = x.shape().to_vec();
        shape[ax] = s;
        let mut y = out.tensor(i, x.dtype(), shape)?;
        let yb = y.as_bytes_mut();
        for o in 0..outer {
            let src = (o * dim + start) * inner;
            yb[o * s * inner..(o + 1) * s * inner].copy_from_slice(&xb[src..src + s * inner]);
        }
        start += s;
        outs.push(y);
    }
    Ok(outs)
}

pub fn shape(x: &Tensor, start: i64, end: Option<i64>, out: &mut Out) -> Result<Tensor> {
    let (s, e) = infer::shape_range(x.rank(), start, end);
    let dims: Vec<i64> = x.shape()[s..e].iter().map(|&d| d as i64).collect();
    let mut y = out.tensor(0, DType::I64, vec![dims.len()])?;
    y.as_slice_mut::<i64>()?.copy_from_slice(&dims);
    Ok(y)
}

pub fn gather(x: &Tensor, indices: &Tensor, axis: i64, out: &mut Out) -> Result<Tensor> {
    let ax = normalize_axis(axis, x.rank())?;
    let dim = x.shape()[ax] as i64;
    let idx = indices.to_i64_vec()?;
    let mut shape = x.shape()[..ax].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&x.shape()[ax + 1..]);
    let outer: usize = x.shape()[..ax].iter().product();
    let inner: usize = x.shape()[ax + 1..].iter().product::<usize>() * x.dtype().size();
    let mut y = out.tensor(0, x.dtype(), shape)?;
    let (xb, yb) = (x.as_bytes(), y.as_bytes_mut());
    for o in 0..outer {
        for (j, &i) in idx.iter().enumerate() {
            if i < -dim || i >= dim {
                return invalid!("Gather index {i} is out of range for dimension {dim}");
            }
            let i = if i < 0 { i + dim } else { i } as usize;
            let src = (o * dim as usize + i) * inner;
            let dst = (o * idx.len() + j) * inner;
            yb[dst..dst + inner].copy_from_slice(&xb[src..src + inner]);
        }
    }
    Ok(y)
}

/// Constant padding; negative pads crop.
pub fn pad(
    x: &Tensor,
    attr_pads: Option<&[i64]>,
    attr_value: f32,
    inputs: &[Option<&Tensor>],
    out: &mut Out,
) -> Result<Tensor> {
    let rank = x.rank();
    let pads = match attr_pads {
        Some(p) => p.to_vec(),
        None => {
            let p = super::arg(inputs, 1)?.to_i64_vec()?;
            match super::opt(inputs, 3) {
                Some(axes) => infer::expand_pads(&p, &axes.to_i64_vec()?, rank)?,
                None => p,
            }
        }
    };
    if pads.len() != 2 * rank {
        return invalid!("Pad has {} pads for rank {rank}", pads.len());
    }
    let mut shape = Vec::with_capacity(rank);
    for d in 0..rank {
        let v = x.shape()[d] as i64 + pads[d] + pads[d + rank];
        if v < 0 {
            return invalid!("Pad makes dimension {d} negative");
        }
        shape.push(v as usize);
    }
    let mut y = out.tensor(0, x.dtype(), shape.clone())?;
    metal_mps_ir::dispatch_dtype!(x.dtype(), T => {
        let value: T = match super::opt(inputs, 2) {
            Some(v) if attr_pads.is_none() => *v.as_slice::<T>()?.first().ok_or_else(|| Error::Invalid("empty Pad constant_value".into()))?,
            _ => T::from_f64(attr_value as f64),
        };
        pad_typed(x.as_slice::<T>()?, x.shape(), y.as_slice_mut::<T>()?, &shape, &pads, value);
    });
    Ok(y)
}

fn pad_typed<T: Element>(x: &[T], xs: &[usize], y: &mut [T], ys: &[usize], pads: &[i64], value: T) {
    let rank = xs.len();
    let xst = strides(xs);
    let mut idx = vec![0usize; rank];
    for o in y.iter_mut() {
        let mut src = 0usize;
        let mut inside = true;
        for d in 0..rank {
            let i = idx[d] as i64 - pads[d];
            if i < 0 || i >= xs[d] as i64 {
                inside = false;
                break;
            }
            src += i as usize * xst[d];
        }
        *o = if inside { x[src] } else { value };
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < ys[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}
