//! What the spatial operators share: element conversion through f64, and
//! the padding arithmetic of windowed operators.

use metal_mps_ir::{DType, Element, Error, Out, Result, Tensor};

/// The elements of `t` as f64 (any numeric dtype).
pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    metal_mps_ir::dispatch_dtype!(t.dtype(), T => {
        Ok(t.as_slice::<T>()?.iter().map(|v| v.to_f64()).collect())
    })
}

/// Output `i` of `dtype` from f64 values: integer types round half to even and
/// saturate, floats convert.
pub fn store(
    out: &mut Out,
    i: usize,
    dtype: DType,
    shape: Vec<usize>,
    v: &[f64],
) -> Result<Tensor> {
    let mut y = out.tensor(i, dtype, shape)?;
    let int = dtype.is_int();
    metal_mps_ir::dispatch_dtype!(dtype, T => {
        let ys = y.as_slice_mut::<T>()?;
        if ys.len() != v.len() {
            return metal_mps_ir::invalid!("internal: {} values for {} elements", v.len(), ys.len());
        }
        for (o, &x) in ys.iter_mut().zip(v) {
            *o = T::from_f64(if int { x.round_ties_even() } else { x });
        }
    });
    Ok(y)
}

/// An i64 tensor as output `i`.
pub fn store_i64(out: &mut Out, i: usize, shape: Vec<usize>, v: &[i64]) -> Result<Tensor> {
    let mut y = out.tensor(i, DType::I64, shape)?;
    let ys = y.as_slice_mut::<i64>()?;
    if ys.len() != v.len() {
        return metal_mps_ir::invalid!("internal: {} values for {} elements", v.len(), ys.len());
    }
    ys.copy_from_slice(v);
    Ok(y)
}

/// A zero-filled f64 buffer of `n` elements, failing instead of aborting on huge sizes.
pub fn zeros(n: usize) -> Result<Vec<f64>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory { bytes: n * 8 })?;
    v.resize(n, 0.0);
    Ok(v)
}

/// `auto_pad` of the windowed operators.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

pub fn auto_pad(op: &str, s: Option<String>) -> Result<AutoPad> {
    Ok(match s.as_deref().unwrap_or("NOTSET") {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return metal_mps_ir::invalid!("{op}: unknown auto_pad '{other}'"),
    })
}

/// A list attribute of `n` values, or `default` repeated.
pub fn per_axis(
    op: &str,
    name: &str,
    v: Option<Vec<i64>>,
    n: usize,
    default: i64,
) -> Result<Vec<i64>> {
    match v {
        None => Ok(vec![default; n]),
        Some(v) if v.len() == n => Ok(v),
        Some(v) => {
            metal_mps_ir::invalid!("{op}: '{name}' has {} values for {n} spatial axes", v.len())
        }
    }
}

/// Pads (begins then ends) of a pooling window over `input` for each axis,
/// with output sizes, as ONNX's MaxPool/AveragePool/LpPool compute them.
#[allow(clippy::too_many_arguments)]
pub fn pool_geometry(
    op: &str,
    input: &[usize],
    kernel: &[i64],
    strides: &[i64],
    dilations: &[i64],
    pads: &[i64],
    auto: AutoPad,
    ceil_mode: bool,
) -> Result<(Vec<usize>, Vec<i64>)> {
    let n = kernel.len();
    let mut out = Vec::with_capacity(n);
    let mut p = vec![0i64; 2 * n];
    for a in 0..n {
        let (k, s, d) = (kernel[a], strides[a], dilations[a]);
        if k < 1 || s < 1 || d < 1 {
            return metal_mps_ir::invalid!("{op}: kernel, strides and dilations must be positive");
        }
        let x = input[a] as i64;
        let ek = (k - 1) * d + 1;
        let o = match auto {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = (x + s - 1) / s;
                let total = ((o - 1) * s + ek - x).max(0);
                let small = total / 2;
                let (b, e) = if auto == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                p[a] = b;
                p[a + n] = e;
                o
            }
            AutoPad::Valid => {
                if x < ek {
                    0
                } else {
                    (x - ek) / s + 1
                }
            }
            AutoPad::NotSet => {
                p[a] = pads[a];
                p[a + n] = pads[a + n];
                let span = x + pads[a] + pads[a + n] - ek;
                if span < 0 {
                    return metal_mps_ir::invalid!(
                        "{op}: the window is larger than the padded input"
                    );
                }
                if ceil_mode {
                    let mut o = (span + s - 1) / s + 1;
                    // The last window must start inside the input or the begin padding.
                    if (o - 1) * s >= x + pads[a] {
                        o -= 1;
                    }
                    o
                } else {
                    span / s + 1
                }
            }
        };
        out.push(o.max(0) as usize);
    }
    Ok((out, p))
}
