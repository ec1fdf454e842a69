//! Elementwise binary ops with ONNX (numpy) multidirectional broadcasting.

use crate::kernels::spread::Spread;
use crate::Out;
use metal_mps_ir::{bf16, broadcast_shapes, f16, BinaryOp, DType, Element, Error, Result, Tensor};
use rayon::prelude::*;

/// Arithmetic of one dtype. Integer ops wrap on overflow and give 0 on
/// division by zero (ONNX leaves both undefined; we never crash on them).
pub trait Arith: Element {
    fn apply(op: BinaryOp, a: Self, b: Self) -> Self;
}

impl Arith for f32 {
    fn apply(op: BinaryOp, a: f32, b: f32) -> f32 {
        match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
        }
    }
}

impl Arith for f16 {
    fn apply(op: BinaryOp, a: f16, b: f16) -> f16 {
        f16::from_f32(f32::apply(op, a.to_f32(), b.to_f32()))
    }
}

impl Arith for bf16 {
    fn apply(op: BinaryOp, a: bf16, b: bf16) -> bf16 {
        bf16::from_f32(f32::apply(op, a.to_f32(), b.to_f32()))
    }
}

impl Arith for f64 {
    fn apply(op: BinaryOp, a: f64, b: f64) -> f64 {
        match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
        }
    }
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn apply(op: BinaryOp, a: $t, b: $t) -> $t {
                match op {
                    BinaryOp::Add => a.wrapping_add(b),
                    BinaryOp::Sub => a.wrapping_sub(b),
                    BinaryOp::Mul => a.wrapping_mul(b),
                    BinaryOp::Div => a.checked_div(b).unwrap_or(0),
                    BinaryOp::Pow => (a as f64).powf(b as f64) as $t,
                }
            }
        }
    )*};
}
int_arith!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Below this many output elements, work stays on the calling thread.
const PAR_MIN: usize = 1 << 15;

pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, out: &mut Out) -> Result<Tensor> {
    if op == BinaryOp::Pow && a.dtype() != b.dtype() {
        // The exponent is converted to the base's type (the output's type).
        let b = super::cast::cast(b, a.dtype(), &mut Out::fresh())?;
        return binary(op, a, &b, out);
    }
    if a.dtype() != b.dtype() {
        return metal_mps_ir::invalid!(
            "{op:?} inputs have different dtypes: {} and {}",
            a.dtype(),
            b.dtype()
        );
    }
    let shape = broadcast_shapes(a.shape(), b.shape()).ok_or_else(|| {
        Error::Invalid(format!(
            "{op:?}: shapes {:?} and {:?} cannot be broadcast",
            a.shape(),
            b.shape()
        ))
    })?;
    let mut y = out.tensor(0, a.dtype(), shape)?;
    match a.dtype() {
        DType::F32 => apply::<f32>(op, a, b, &mut y)?,
        DType::F16 => apply::<f16>(op, a, b, &mut y)?,
        DType::I8 => apply::<i8>(op, a, b, &mut y)?,
        DType::I16 => apply::<i16>(op, a, b, &mut y)?,
        DType::I32 => apply::<i32>(op, a, b, &mut y)?,
        DType::I64 => apply::<i64>(op, a, b, &mut y)?,
        DType::U8 => apply::<u8>(op, a, b, &mut y)?,
        DType::U16 => apply::<u16>(op, a, b, &mut y)?,
        DType::U32 => apply::<u32>(op, a, b, &mut y)?,
        DType::U64 => apply::<u64>(op, a, b, &mut y)?,
        DType::F64 => apply::<f64>(op, a, b, &mut y)?,
        DType::BF16 => apply::<bf16>(op, a, b, &mut y)?,
        d => return metal_mps_ir::unsupported!("{op:?} on {d} tensors"),
    }
    Ok(y)
}

/// Sum of one or more tensors, broadcast together.
pub fn sum(inputs: &[Option<&Tensor>], out: &mut Out) -> Result<Tensor> {
    let all: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let mut acc = out.copy_of(0, all[0], all[0].shape().to_vec())?;
    for t in &all[1..] {
        acc = binary(BinaryOp::Add, &acc, t, &mut Out::fresh())?;
    }
    Ok(acc)
}

fn apply<T: Arith>(op: BinaryOp, a: &Tensor, b: &Tensor, y: &mut Tensor) -> Result<()> {
    // One instance per op, so that the element loops carry no dispatch.
    match op {
        BinaryOp::Add => apply_fn(a, b, y, |x: T, z| T::apply(BinaryOp::Add, x, z)),
        BinaryOp::Sub => apply_fn(a, b, y, |x: T, z| T::apply(BinaryOp::Sub, x, z)),
        BinaryOp::Mul => apply_fn(a, b, y, |x: T, z| T::apply(BinaryOp::Mul, x, z)),
        BinaryOp::Div => apply_fn(a, b, y, |x: T, z| T::apply(BinaryOp::Div, x, z)),
        BinaryOp::Pow => apply_fn(a, b, y, |x: T, z| T::apply(BinaryOp::Pow, x, z)),
    }
}

fn apply_fn<T: Element>(
    a: &Tensor,
    b: &Tensor,
    y: &mut Tensor,
    f: impl Fn(T, T) -> T + Sync,
) -> Result<()> {
    let shape = y.shape().to_vec();
    let (av, bv) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
    let yv = y.as_slice_mut::<T>()?;
    if a.shape() == b.shape() {
        for_chunks(yv, |start, chunk| {
            let (ac, bc) = (&av[start..][..chunk.len()], &bv[start..][..chunk.len()]);
            for ((o, &x), &z) in chunk.iter_mut().zip(ac).zip(bc) {
                *o = f(x, z);
            }
        });
    } else if bv.len() == 1 {
        let s = bv[0];
        broadcast_rows(&shape, a.shape(), b.shape(), yv, |ai, _, o| {
            *o = f(av[ai], s)
        });
    } else if av.len() == 1 {
        let s = av[0];
        broadcast_rows(&shape, a.shape(), b.shape(), yv, |_, bi, o| {
            *o = f(s, bv[bi])
        });
    } else {
        broadcast_rows(&shape, a.shape(), b.shape(), yv, |ai, bi, o| {
            *o = f(av[ai], bv[bi])
        });
    }
    Ok(())
}

fn for_chunks<T: Send>(y: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    if y.len() < PAR_MIN {
        f(0, y);
    } else {
        y.par_chunks_mut(PAR_MIN)
            .enumerate()
            .spread()
            .for_each(|(c, chunk)| f(c * PAR_MIN, chunk));
    }
}

/// Strides of `shape` seen from an output of rank `rank`: 0 on broadcast dims.
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let own = metal_mps_ir::strides(shape);
    (0..rank)
        .map(|i| {
            let k = (i + shape.len()).checked_sub(rank);
            match k {
                Some(k) if shape[k] != 1 => own[k],
                _ => 0,
            }
        })
        .collect()
}

/// Calls `f(index into a, index into b, output element)` for every output
/// element, walking rows of the last dimension.
fn broadcast_rows<T: Send>(
    out_shape: &[usize],
    a_shape: &[usize],
    b_shape: &[usize],
    y: &mut [T],
    f: impl Fn(usize, usize, &mut T) + Sync,
) {
    if y.is_empty() {
        return;
    }
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let rank = out_shape.len();
    let inner = out_shape.last().copied().unwrap_or(1).max(1);
    let (ia, ib) = (
        sa.last().copied().unwrap_or(0),
        sb.last().copied().unwrap_or(0),
    );
    let row = |r: usize, chunk: &mut [T]| {
        // Offsets of row `r` in a and b, from its multi-index over the outer dims.
        let (mut oa, mut ob, mut rem) = (0, 0, r);
        for d in (0..rank.saturating_sub(1)).rev() {
            let i = rem % out_shape[d];
            rem /= out_shape[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        for (j, o) in chunk.iter_mut().enumerate() {
            f(oa + j * ia, ob + j * ib, o);
        }
    };
    if y.len() < PAR_MIN {
        y.chunks_mut(inner).enumerate().for_each(|(r, c)| row(r, c));
    } else {
        y.par_chunks_mut(inner)
            .enumerate()
            .spread()
            .for_each(|(r, c)| row(r, c));
    }
}
