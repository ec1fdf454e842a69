//! Elementwise unary ops (activations) and Clip.

use crate::kernels::spread::Spread;
use crate::Out;
use metal_mps_ir::{bf16, f16, DType, Element, Result, Tensor, UnaryOp};
use rayon::prelude::*;

const PAR_MIN: usize = 1 << 15;

/// Applies `f` to every element, in parallel for large tensors.
pub(crate) fn map<T: Element, U: Element>(x: &[T], y: &mut [U], f: impl Fn(T) -> U + Sync) {
    map_chunks(x, y, |x, y| {
        y.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v))
    });
}

/// `f` on matching chunks of `x` and `y`, in parallel for large tensors.
fn map_chunks<T: Element, U: Element>(x: &[T], y: &mut [U], f: impl Fn(&[T], &mut [U]) + Sync) {
    if y.len() < PAR_MIN {
        f(x, y);
    } else {
        y.par_chunks_mut(PAR_MIN)
            .zip(x.par_chunks(PAR_MIN))
            .spread()
            .for_each(|(y, x)| f(x, y));
    }
}

pub fn unary(op: UnaryOp, x: &Tensor, out: &mut Out) -> Result<Tensor> {
    let mut y = out.tensor(0, x.dtype(), x.shape().to_vec())?;
    match x.dtype() {
        DType::F32 => map_f32(op, x.as_slice::<f32>()?, y.as_slice_mut::<f32>()?),
        DType::F16 => map(x.as_slice::<f16>()?, y.as_slice_mut::<f16>()?, |v| {
            f16::from_f32(op.apply_f32(v.to_f32()))
        }),
        DType::I8 => int_unary::<i8>(op, x, &mut y)?,
        DType::I16 => int_unary::<i16>(op, x, &mut y)?,
        DType::I32 => int_unary::<i32>(op, x, &mut y)?,
        DType::I64 => int_unary::<i64>(op, x, &mut y)?,
        DType::U8 => int_unary::<u8>(op, x, &mut y)?,
        DType::U16 => int_unary::<u16>(op, x, &mut y)?,
        DType::U32 => int_unary::<u32>(op, x, &mut y)?,
        DType::U64 => int_unary::<u64>(op, x, &mut y)?,
        DType::F64 => map(x.as_slice::<f64>()?, y.as_slice_mut::<f64>()?, |v| {
            op.apply_f64(v)
        }),
        DType::BF16 => map(x.as_slice::<bf16>()?, y.as_slice_mut::<bf16>()?, |v| {
            bf16::from_f32(op.apply_f32(v.to_f32()))
        }),
        d => return metal_mps_ir::unsupported!("{op:?} on {d} tensors"),
    }
    Ok(y)
}

/// [`map`] with each chunk's loop compiled for the widest vector instructions
/// (for the transcendental functions, whose loops are long).
fn map_widest(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32 + Sync + Copy) {
    map_chunks(x, y, |x, y| {
        super::vector::widest(super::vector::Map(f, x, y))
    });
}

/// f32 with the op chosen once, outside the element loop.
fn map_f32(op: UnaryOp, x: &[f32], y: &mut [f32]) {
    use metal_mps_ir::math::exp_f32;
    match op {
        UnaryOp::Relu => map(x, y, |v: f32| v.max(0.0)),
        UnaryOp::Neg => map(x, y, |v: f32| -v),
        UnaryOp::Abs => map(x, y, f32::abs),
        UnaryOp::Sqrt => map(x, y, f32::sqrt),
        UnaryOp::Exp => map_widest(x, y, exp_f32),
        UnaryOp::Sigmoid => map_widest(x, y, |v| 1.0 / (1.0 + exp_f32(-v))),
        UnaryOp::Gelu => map_widest(x, y, metal_mps_ir::math::gelu_f32),
        UnaryOp::Clamp { min, max } => {
            // `max` wins over `min`, as in `UnaryOp::apply_f32`.
            let lo = min.min(max);
            map(x, y, move |v: f32| super::packed::clamp(v, lo, max))
        }
        other => map(x, y, move |v| other.apply_f32(v)),
    }
}

fn int_unary<T: Element>(op: UnaryOp, x: &Tensor, y: &mut Tensor) -> Result<()> {
    let zero = T::zero();
    let f: Box<dyn Fn(T) -> T + Sync> = match op {
        UnaryOp::Relu => Box::new(move |v: T| if v < zero { zero } else { v }),
        UnaryOp::Neg => Box::new(|v: T| T::from_f64(-v.to_f64())),
        UnaryOp::Abs => Box::new(|v: T| T::from_f64(v.to_f64().abs())),
        UnaryOp::Clamp { .. } => Box::new(move |v: T| T::from_f64(op.apply_f64(v.to_f64()))),
        other => return metal_mps_ir::unsupported!("{other:?} on integer tensors"),
    };
    map(x.as_slice::<T>()?, y.as_slice_mut::<T>()?, f);
    Ok(())
}

/// Clip with optional runtime bounds (opset 11+).
pub fn clip(
    x: &Tensor,
    min: Option<&Tensor>,
    max: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    let mut y = out.tensor(0, x.dtype(), x.shape().to_vec())?;
    metal_mps_ir::dispatch_dtype!(x.dtype(), T => {
        let bound = |t: Option<&Tensor>| -> Result<Option<T>> {
            t.map(|t| t.as_slice::<T>()?.first().copied().ok_or_else(|| metal_mps_ir::Error::Invalid("empty Clip bound".into()))).transpose()
        };
        let (lo, hi) = (bound(min)?, bound(max)?);
        map(x.as_slice::<T>()?, y.as_slice_mut::<T>()?, |v: T| {
            let v = match lo { Some(l) if v < l => l, _ => v };
            match hi { Some(h) if v > h => h, _ => v }
        });
    });
    Ok(y)
}
