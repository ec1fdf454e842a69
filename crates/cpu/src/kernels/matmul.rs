//! MatMul (batched, broadcast, 1-D promotion) and Gemm, on the `gemm` crate.
//! Half-precision operands are widened to f32 for the product.

use super::binary::broadcast_strides;
use crate::kernels::spread::Spread;
use crate::Out;
use metal_mps_ir::{
    bf16, broadcast_shapes, f16, invalid, Activation, DType, Element, GemmAttrs, Result, Tensor,
};
use rayon::prelude::*;
use std::borrow::Cow;

/// The tensor's values as f32 (borrowed when already f32; the 16-bit float
/// types widen exactly).
pub(crate) fn as_f32(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    match t.dtype() {
        DType::F32 => Ok(Cow::Borrowed(t.as_slice::<f32>()?)),
        DType::F16 => Ok(Cow::Owned(
            t.as_slice::<f16>()?.iter().map(|v| v.to_f32()).collect(),
        )),
        DType::BF16 => Ok(Cow::Owned(
            t.as_slice::<bf16>()?.iter().map(|v| v.to_f32()).collect(),
        )),
        other => invalid!("expected a FLOAT, FLOAT16 or BFLOAT16 tensor, got {other}"),
    }
}

/// Builds an output of `dtype` (f32, f16 or bf16) by letting `fill` write
/// every element as f32: straight into the output buffer for f32, through a
/// temporary for the 16-bit types.
pub(crate) fn f32_output(
    out: &mut Out,
    dtype: DType,
    shape: Vec<usize>,
    fill: impl FnOnce(&mut [f32]) -> Result<()>,
) -> Result<Tensor> {
    let mut y = out.tensor(0, dtype, shape)?;
    match dtype {
        DType::F32 => fill(y.as_slice_mut::<f32>()?)?,
        DType::BF16 => {
            let mut tmp = vec![0f32; y.numel()];
            fill(&mut tmp)?;
            y.as_slice_mut::<bf16>()?
                .iter_mut()
                .zip(&tmp)
                .for_each(|(o, &x)| *o = bf16::from_f32(x));
        }
        _ => {
            let mut tmp = vec![0f32; y.numel()];
            fill(&mut tmp)?;
            y.as_slice_mut::<f16>()?
                .iter_mut()
                .zip(&tmp)
                .for_each(|(o, &x)| *o = f16::from_f32(x));
        }
    }
    Ok(y)
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]`, row-major with the given row strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    dst: &mut [f32],
    parallel: bool,
) {
    strided_gemm(
        m,
        n,
        k,
        lhs,
        (lhs_rs as isize, 1),
        rhs,
        (rhs_rs as isize, 1),
        dst,
        0.0,
        1.0,
        parallel,
    );
}

/// `dst = keep·dst + scale·lhs·rhs` where lhs/rhs have (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn strided_gemm(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    (lrs, lcs): (isize, isize),
    rhs: &[f32],
    (rrs, rcs): (isize, isize),
    dst: &mut [f32],
    keep: f32,
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= m * n, "gemm destination too small");
    let reach = |rs: isize, cs: isize, r: usize, c: usize| {
        (r.saturating_sub(1)) * rs as usize + (c.saturating_sub(1)) * cs as usize
    };
    assert!(
        k == 0 || (lhs.len() > reach(lrs, lcs, m, k) && rhs.len() > reach(rrs, rcs, k, n)),
        "gemm operand too small"
    );
    let par = if parallel && m * n * k > 1 << 15 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index the strides can reach; the
    // slices do not alias (dst is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            keep != 0.0,
            lhs.as_ptr(),
            lcs,
            lrs,
            rhs.as_ptr(),
            rcs,
            rrs,
            keep,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// `MatMul(a, b)`, plus `bias` (`[N]`) on every row, then the activation.
pub fn matmul(
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
    out: &mut Out,
) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        return invalid!("MatMul inputs are {} and {}", a.dtype(), b.dtype());
    }
    if a.rank() == 0 || b.rank() == 0 {
        return invalid!("MatMul inputs must have rank 1 or more");
    }
    let ash: Vec<usize> = if a.rank() == 1 {
        vec![1, a.shape()[0]]
    } else {
        a.shape().to_vec()
    };
    let bsh: Vec<usize> = if b.rank() == 1 {
        vec![b.shape()[0], 1]
    } else {
        b.shape().to_vec()
    };
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return invalid!(
            "MatMul inner dimensions differ: {:?} × {:?}",
            a.shape(),
            b.shape()
        );
    }
    let (abatch, bbatch) = (&ash[..ash.len() - 2], &bsh[..bsh.len() - 2]);
    let batch = broadcast_shapes(abatch, bbatch).ok_or_else(|| {
        metal_mps_ir::Error::Invalid(format!(
            "MatMul batch dims {abatch:?} and {bbatch:?} cannot be broadcast"
        ))
    })?;
    let nb: usize = batch.iter().product();
    let mut shape = batch.clone();
    if a.rank() > 1 {
        shape.push(m);
    }
    if b.rank() > 1 {
        shape.push(n);
    }
    let (sa, sb) = (
        broadcast_strides(abatch, &batch),
        broadcast_strides(bbatch, &batch),
    );
    let offsets = |i: usize| {
        let (mut rem, mut oa, mut ob) = (i, 0, 0);
        for d in (0..batch.len()).rev() {
            let v = rem % batch[d];
            rem /= batch[d];
            oa += v * sa[d];
            ob += v * sb[d];
        }
        (oa * m * k, ob * k * n)
    };
    let bias = match bias {
        Some(t) if t.dtype() != DType::F32 || a.dtype() != DType::F32 || t.numel() != n => {
            return invalid!(
                "MatMul bias must be a FLOAT vector of {n} values for FLOAT inputs, got {} {:?}",
                t.dtype(),
                t.shape()
            )
        }
        Some(t) => Some(t.as_slice::<f32>()?),
        None => None,
    };
    if !a.dtype().is_float() || a.dtype() == DType::F64 {
        return exact_matmul(a, b, m, k, n, nb, &offsets, shape, act, out);
    }
    let (av, bv) = (as_f32(a)?, as_f32(b)?);
    f32_output(out, a.dtype(), shape, |y| {
        if nb > 1 && sb.iter().all(|&s| s == 0) && sa == metal_mps_ir::strides(&batch) {
            // A's batches are contiguous and B is shared: one tall product.
            sgemm(nb * m, n, k, &av, k, &bv, n, y, true);
        } else {
            // The batches in parallel; each product also splits its own work
            // when there are fewer batches than threads (attention heads at
            // batch 1 on many cores).
            let inner = nb < rayon::current_num_threads();
            y.par_chunks_mut((m * n).max(1))
                .enumerate()
                .spread()
                .for_each(|(i, dst)| {
                    let (oa, ob) = offsets(i);
                    sgemm(m, n, k, &av[oa..], k, &bv[ob..], n, dst, inner);
                });
        }
        if let Some(bias) = bias {
            for row in y.chunks_mut(n.max(1)) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        finish(y, None, n.max(1), act);
        Ok(())
    })
}

/// Integer products accumulated exactly in i64 (wrapping), DOUBLE in f64.
#[allow(clippy::too_many_arguments)]
fn exact_matmul(
    a: &Tensor,
    b: &Tensor,
    m: usize,
    k: usize,
    n: usize,
    nb: usize,
    offsets: &dyn Fn(usize) -> (usize, usize),
    shape: Vec<usize>,
    act: Activation,
    out: &mut Out,
) -> Result<Tensor> {
    if a.dtype() == DType::F64 {
        let mut y = out.tensor(0, DType::F64, shape)?;
        let (av, bv) = (a.as_slice::<f64>()?, b.as_slice::<f64>()?);
        let yv = y.as_slice_mut::<f64>()?;
        for bi in 0..nb {
            let (oa, ob) = offsets(bi);
            for i in 0..m {
                for j in 0..n {
                    let acc: f64 = (0..k)
                        .map(|p| av[oa + i * k + p] * bv[ob + p * n + j])
                        .sum();
                    yv[bi * m * n + i * n + j] = act.apply_f64(acc);
                }
            }
        }
        return Ok(y);
    }
    let mut y = out.tensor(0, a.dtype(), shape)?;
    metal_mps_ir::dispatch_dtype!(a.dtype(), T => {
        let (av, bv) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
        let yv = y.as_slice_mut::<T>()?;
        for bi in 0..nb {
            let (oa, ob) = offsets(bi);
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0i64;
                    for p in 0..k {
                        acc = acc.wrapping_add((av[oa + i * k + p].to_f64() as i64).wrapping_mul(bv[ob + p * n + j].to_f64() as i64));
                    }
                    yv[bi * m * n + i * n + j] = T::from_f64(acc as f64);
                }
            }
        }
    });
    Ok(y)
}

/// `Y = alpha · A' · B' + beta · C`, C broadcast to `[M, N]`.
pub fn gemm(
    g: &GemmAttrs,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    if a.rank() != 2 || b.rank() != 2 {
        return invalid!(
            "Gemm inputs must be 2-D, got {:?} and {:?}",
            a.shape(),
            b.shape()
        );
    }
    let (m, k) = if g.trans_a {
        (a.shape()[1], a.shape()[0])
    } else {
        (a.shape()[0], a.shape()[1])
    };
    let (k2, n) = if g.trans_b {
        (b.shape()[1], b.shape()[0])
    } else {
        (b.shape()[0], b.shape()[1])
    };
    if k != k2 {
        return invalid!("Gemm inner dimensions differ: A' is {m}×{k}, B' is {k2}×{n}");
    }
    let (av, bv) = (as_f32(a)?, as_f32(b)?);
    let c = c.filter(|_| g.beta != 0.0);
    if let Some(c) = c {
        if broadcast_shapes(c.shape(), &[m, n]).is_none_or(|s| s[..] != [m, n]) {
            return invalid!(
                "Gemm C of shape {:?} does not broadcast to [{m}, {n}]",
                c.shape()
            );
        }
    }
    f32_output(out, a.dtype(), vec![m, n], |y| {
        let mut keep = 0.0;
        if let Some(c) = c {
            let cv = as_f32(c)?;
            let st = broadcast_strides(c.shape(), &[m, n]);
            for i in 0..m {
                for j in 0..n {
                    y[i * n + j] = g.beta * cv[i * st[0] + j * st[1]];
                }
            }
            keep = 1.0;
        }
        let lhs_strides = if g.trans_a {
            (1, m as isize)
        } else {
            (k as isize, 1)
        };
        let rhs_strides = if g.trans_b {
            (1, k as isize)
        } else {
            (n as isize, 1)
        };
        strided_gemm(
            m,
            n,
            k,
            &av,
            lhs_strides,
            &bv,
            rhs_strides,
            y,
            keep,
            g.alpha,
            true,
        );
        finish(y, None, n.max(1), g.activation);
        Ok(())
    })
}

/// Adds the per-row bias and applies the activation to a `[rows, len]` block.
fn finish(block: &mut [f32], bias: Option<&[f32]>, len: usize, act: Activation) {
    if bias.is_none() && act == Activation::None {
        return;
    }
    for (r, row) in block.chunks_mut(len).enumerate() {
        let b = bias.map_or(0.0, |b| b[r]);
        match act {
            Activation::None => row.iter_mut().for_each(|v| *v += b),
            Activation::Unary(metal_mps_ir::UnaryOp::Relu) => {
                row.iter_mut().for_each(|v| *v = (*v + b).max(0.0))
            }
            a => row.iter_mut().for_each(|v| *v = a.apply(*v + b)),
        }
    }
}
