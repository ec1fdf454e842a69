//! Helpers the family shares: float dtype dispatch, f64 reads and writes, the
//! rounding of an intermediate result to a tensor type (so that a lower
//! precision's steps are reproduced), and fixed shapes in inference.

use metal_mps_ir::infer::Known;
use metal_mps_ir::{bf16, f16, DType, Dim, Element, Out, Result, Tensor};

/// Runs `body` with `T` the Rust type of a float dtype, else fails naming `op`.
macro_rules! dispatch_float {
    ($op:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            metal_mps_ir::DType::F32 => {
                type $T = f32;
                $body
            }
            metal_mps_ir::DType::F64 => {
                type $T = f64;
                $body
            }
            metal_mps_ir::DType::F16 => {
                type $T = metal_mps_ir::f16;
                $body
            }
            metal_mps_ir::DType::BF16 => {
                type $T = metal_mps_ir::bf16;
                $body
            }
            other => {
                return metal_mps_ir::unsupported!(
                    "{} on {} tensors (floating-point types only)",
                    $op,
                    other
                )
            }
        }
    };
}
pub(crate) use dispatch_float;

/// A float tensor's elements as f64, failing for other dtypes.
pub fn floats(op: &str, t: &Tensor) -> Result<Vec<f64>> {
    crate::support::check_float(op, t.dtype())?;
    Ok(t.to_f64_vec())
}

/// Output `i` of `dtype` and `shape` holding `values` (rounded to the dtype).
pub fn write(
    out: &mut Out,
    i: usize,
    dtype: DType,
    shape: Vec<usize>,
    values: &[f64],
) -> Result<Tensor> {
    let mut y = out.tensor(i, dtype, shape)?;
    metal_mps_ir::dispatch_dtype!(dtype, T => {
        let ys = y.as_slice_mut::<T>()?;
        if ys.len() != values.len() {
            return metal_mps_ir::invalid!(
                "internal: {} values for an output of {} elements",
                values.len(),
                ys.len()
            );
        }
        ys.iter_mut().zip(values).for_each(|(o, &v)| *o = T::from_f64(v));
    });
    Ok(y)
}

fn round_f64(v: f64) -> f64 {
    v
}
fn round_f32(v: f64) -> f64 {
    v as f32 as f64
}
fn round_f16(v: f64) -> f64 {
    f16::from_f64(v).to_f64()
}
fn round_bf16(v: f64) -> f64 {
    bf16::from_f64(v).to_f64()
}

/// The rounding of an f64 to the nearest value of a float dtype (identity for
/// F64 and non-float types).
pub fn rounder(dtype: DType) -> fn(f64) -> f64 {
    match dtype {
        DType::F32 => round_f32,
        DType::F16 => round_f16,
        DType::BF16 => round_bf16,
        _ => round_f64,
    }
}

/// The rank of a known input, when known.
pub fn rank(k: &Known) -> Option<usize> {
    k.shape.map(<[Dim]>::len)
}

/// A dim of a known input (`Dim::Unknown` when the shape is unknown).
pub fn dim(k: &Known, i: usize) -> Dim {
    k.shape
        .and_then(|s| s.get(i).cloned())
        .unwrap_or(Dim::Unknown)
}

/// Dims multiplied: fixed when both are fixed, else unknown.
pub fn dim_mul(a: &Dim, b: &Dim) -> Dim {
    match (a.fixed(), b.fixed()) {
        (Some(x), Some(y)) => Dim::Fixed(x * y),
        _ => Dim::Unknown,
    }
}

/// Dims divided exactly: fixed when both are fixed and `b` divides `a`.
pub fn dim_div(a: &Dim, b: usize) -> Dim {
    match a.fixed() {
        Some(x) if b > 0 && x.is_multiple_of(b) => Dim::Fixed(x / b),
        _ => Dim::Unknown,
    }
}

/// Dims added: fixed when both are fixed.
pub fn dim_add(a: &Dim, b: &Dim) -> Dim {
    match (a.fixed(), b.fixed()) {
        (Some(x), Some(y)) => Dim::Fixed(x + y),
        _ => Dim::Unknown,
    }
}

/// A positive count from an attribute, naming the op and attribute.
pub fn positive(op: &str, name: &str, v: i64) -> Result<usize> {
    if v <= 0 {
        return metal_mps_ir::invalid!("{op}: {name} must be positive, got {v}");
    }
    usize::try_from(v).map_err(|_| metal_mps_ir::Error::Invalid(format!("{op}: {name} {v}")))
}

/// The dot product of two equal-length rows, in four independent partial sums
/// (so that the compiler can vectorize it).
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The sum of `f` over a row, in four independent partial sums.
#[inline]
pub fn sum_by<T: Copy>(xs: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = xs.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..4 {
            acc[k] += f(c[k]);
        }
    }
    let tail: f64 = rest.iter().map(|&x| f(x)).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}
