//! What operator modules share: reading inputs in `infer` and `eval`,
//! broadcasting, and dtype checks with messages that name the op.

use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    broadcast_shapes, checked_numel, strides, DType, Dim, Element, Error, Fact, Result, Shape,
    Tensor,
};

/// Input `i` for inference, which the op requires.
pub fn known<'a, 'b>(ins: &'b [Option<Known<'a>>], i: usize) -> Result<&'b Known<'a>> {
    ins.get(i)
        .and_then(|k| k.as_ref())
        .ok_or_else(|| Error::InvalidModel(format!("required input {i} is missing")))
}

/// Optional input `i` for inference.
pub fn known_opt<'a, 'b>(ins: &'b [Option<Known<'a>>], i: usize) -> Option<&'b Known<'a>> {
    ins.get(i).and_then(|k| k.as_ref())
}

/// Input `i` at run time, which the op requires.
pub fn arg<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::Invalid(format!("required input {i} is missing")))
}

/// Optional input `i` at run time.
pub fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// The fact of an output shaped like input `k`.
pub fn like(k: &Known, dtype: DType) -> Fact {
    (dtype, k.shape.map(<[Dim]>::to_vec))
}

/// A shape of `rank` unknown dims (`None` when the rank is unknown too).
pub fn unknown_dims(rank: Option<usize>) -> Option<Shape> {
    rank.map(|r| vec![Dim::Unknown; r])
}

/// The values of a constant input, as i64 (axes, shapes, sizes).
pub fn const_ints(k: Option<&Known>) -> Option<Vec<i64>> {
    k?.constant?.to_i64_vec().ok()
}

/// Fails unless `dtype` is one of `allowed`, naming the op.
pub fn check_dtype(op: &str, dtype: DType, allowed: &[DType]) -> Result<()> {
    if allowed.contains(&dtype) {
        return Ok(());
    }
    metal_mps_ir::unsupported!("{op} on {dtype} tensors")
}

/// Fails unless `dtype` is a floating-point type.
pub fn check_float(op: &str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        return Ok(());
    }
    metal_mps_ir::unsupported!("{op} on {dtype} tensors (floating-point types only)")
}

/// Fails unless both dtypes are equal.
pub fn check_same(op: &str, a: DType, b: DType) -> Result<()> {
    if a == b {
        return Ok(());
    }
    metal_mps_ir::invalid!("{op}: input dtypes differ: {a} and {b}")
}

/// Resolves a possibly negative axis, with a message naming the op.
pub fn axis(op: &str, axis: i64, rank: usize) -> Result<usize> {
    metal_mps_ir::normalize_axis(axis, rank).map_err(|e| Error::Invalid(format!("{op}: {e}")))
}

/// The broadcast shape of several tensors.
pub fn broadcast_all(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let mut out: Vec<usize> = vec![];
    for s in shapes {
        out = broadcast_shapes(&out, s).ok_or_else(|| {
            Error::Invalid(format!("shapes {out:?} and {s:?} cannot be broadcast"))
        })?;
    }
    Ok(out)
}

/// For an input of `shape` broadcast to `out`: the input offset of every
/// output element, in row-major output order.
pub fn broadcast_offsets(shape: &[usize], out: &[usize]) -> Result<Vec<usize>> {
    let n = checked_numel(out)?;
    if shape == out {
        return Ok((0..n).collect());
    }
    let rank = out.len();
    let in_strides = strides(shape);
    // Stride of each output axis in the input (0 where broadcast).
    let mut st = vec![0usize; rank];
    for (k, (&d, &s)) in shape.iter().zip(&in_strides).enumerate() {
        let axis = rank - shape.len() + k;
        if d != 1 {
            st[axis] = s;
        }
    }
    let mut offsets = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    let mut off = 0usize;
    for _ in 0..n {
        offsets.push(off);
        metal_mps_ir::step_index(&mut idx, &mut off, out, &st);
    }
    Ok(offsets)
}

/// `f` over two broadcast tensors of element types `A` and `B`, into a new
/// tensor of `U` (output 0 of `out`).
pub fn map2<A: Element, B: Element, U: Element>(
    a: &Tensor,
    b: &Tensor,
    out: &mut metal_mps_ir::Out,
    f: impl Fn(A, B) -> U,
) -> Result<Tensor> {
    let shape = broadcast_all(&[a.shape(), b.shape()])?;
    let (xa, xb) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let mut y = out.tensor(0, U::DTYPE, shape.clone())?;
    let ys = y.as_slice_mut::<U>()?;
    if a.shape() == b.shape() {
        ys.iter_mut()
            .zip(xa.iter().zip(xb))
            .for_each(|(o, (&p, &q))| *o = f(p, q));
    } else {
        let (oa, ob) = (
            broadcast_offsets(a.shape(), &shape)?,
            broadcast_offsets(b.shape(), &shape)?,
        );
        for (o, (&i, &j)) in ys.iter_mut().zip(oa.iter().zip(&ob)) {
            *o = f(xa[i], xb[j]);
        }
    }
    Ok(y)
}

/// `f` over every element of `x`, into a new tensor of `U` (output 0 of `out`).
pub fn map1<T: Element, U: Element>(
    x: &Tensor,
    out: &mut metal_mps_ir::Out,
    f: impl Fn(T) -> U,
) -> Result<Tensor> {
    let mut y = out.tensor(0, U::DTYPE, x.shape().to_vec())?;
    y.as_slice_mut::<U>()?
        .iter_mut()
        .zip(x.as_slice::<T>()?)
        .for_each(|(o, &v)| *o = f(v));
    Ok(y)
}

/// A tensor of `dtype` whose elements are `f64` values converted.
pub fn from_f64s(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Result<Tensor> {
    metal_mps_ir::dispatch_dtype!(dtype, T => {
        Tensor::from_vec(shape, values.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>())
    })
}

/// A tensor of `dtype` whose elements are `i64` values converted (wrapping).
pub fn from_i64s(dtype: DType, shape: Vec<usize>, values: &[i64]) -> Result<Tensor> {
    metal_mps_ir::dispatch_dtype!(dtype, T => {
        Tensor::from_vec(shape, values.iter().map(|&v| T::from_i64(v)).collect::<Vec<T>>())
    })
}

/// The elements of `t` gathered at `offsets` (any dtype), as a new tensor.
pub fn gather_elements(t: &Tensor, offsets: &[usize], shape: Vec<usize>) -> Result<Tensor> {
    let size = t.dtype().size();
    let src = t.as_bytes();
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(offsets.len() * size)
        .map_err(|_| Error::OutOfMemory {
            bytes: offsets.len() * size,
        })?;
    for &o in offsets {
        bytes.extend_from_slice(&src[o * size..(o + 1) * size]);
    }
    Tensor::from_bytes(t.dtype(), shape, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_numpy_broadcasting() {
        // [2,1] against [2,3]: rows repeat their one element.
        assert_eq!(
            broadcast_offsets(&[2, 1], &[2, 3]).unwrap(),
            vec![0, 0, 0, 1, 1, 1]
        );
        // [3] against [2,3]: the row repeats.
        assert_eq!(
            broadcast_offsets(&[3], &[2, 3]).unwrap(),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(broadcast_offsets(&[], &[2]).unwrap(), vec![0, 0]);
        assert!(broadcast_all(&[&[2, 3], &[4]]).is_err());
    }
}
