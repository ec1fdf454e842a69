//! BatchNormalization (inference), Softmax (also DOUBLE) and LRN.

use super::matmul::{as_f32, f32_output};
use crate::kernels::spread::Spread;
use crate::Out;
use metal_mps_ir::{invalid, normalize_axis, DType, LrnAttrs, Result, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// `y = scale · (x − mean) / sqrt(var + ε) + bias`, per channel (axis 1).
pub fn batch_norm(
    x: &Tensor,
    params: &[Option<&Tensor>],
    eps: f32,
    out: &mut Out,
) -> Result<Tensor> {
    let p: Vec<_> = (0..4)
        .map(|i| super::arg(params, i).and_then(as_f32))
        .collect::<Result<_>>()?;
    let c = if x.rank() >= 2 { x.shape()[1] } else { 1 };
    if p.iter().any(|v| v.len() != c) {
        return invalid!("BatchNormalization parameters must have {c} values (the channel count)");
    }
    let inner: usize = x.shape().iter().skip(2).product();
    let (a, b): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|i| {
            let s = p[0][i] / (p[3][i] + eps).sqrt();
            (s, p[1][i] - p[2][i] * s)
        })
        .unzip();
    let xv = as_f32(x)?;
    f32_output(out, x.dtype(), x.shape().to_vec(), |y| {
        for (r, (dst, src)) in y
            .chunks_mut(inner.max(1))
            .zip(xv.chunks(inner.max(1)))
            .enumerate()
        {
            let ch = r % c;
            dst.iter_mut()
                .zip(src)
                .for_each(|(o, &v)| *o = v * a[ch] + b[ch]);
        }
        Ok(())
    })
}

/// Softmax along `axis`; `legacy` (opset < 13) normalizes over all dims from `axis` on.
pub fn softmax(x: &Tensor, axis: i64, legacy: bool, out: &mut Out) -> Result<Tensor> {
    let ax = normalize_axis(axis, x.rank())?;
    let shape = x.shape();
    let (outer, len, inner) = if legacy {
        (
            shape[..ax].iter().product(),
            shape[ax..].iter().product(),
            1,
        )
    } else {
        (
            shape[..ax].iter().product::<usize>(),
            shape[ax],
            shape[ax + 1..].iter().product::<usize>(),
        )
    };
    let block = (len * inner).max(1);
    if x.dtype() == DType::F64 {
        let mut y = out.tensor(0, DType::F64, shape.to_vec())?;
        let xv = x.as_slice::<f64>()?;
        let rows = y.as_slice_mut::<f64>()?.chunks_mut(block).enumerate();
        rows.take(outer)
            .for_each(|(o, dst)| softmax_block(&xv[o * block..][..block], dst, len, inner));
        return Ok(y);
    }
    let xv = as_f32(x)?;
    f32_output(out, x.dtype(), shape.to_vec(), |y| {
        let work = |(o, dst): (usize, &mut [f32])| {
            let src = &xv[o * block..][..block];
            if inner == 1 {
                super::vector::widest(super::vector::SoftmaxRow(src, dst))
            } else {
                softmax_block(src, dst, len, inner)
            }
        };
        if outer * block > 1 << 15 {
            y.par_chunks_mut(block)
                .enumerate()
                .take(outer)
                .spread()
                .for_each(work);
        } else {
            y.chunks_mut(block).enumerate().take(outer).for_each(work);
        }
        Ok(())
    })
}

/// Softmax of one `len × inner` block along `len`.
fn softmax_block<T: Float>(src: &[T], dst: &mut [T], len: usize, inner: usize) {
    for i in 0..inner {
        let at = |j: usize| j * inner + i;
        let max = (0..len).map(|j| src[at(j)]).fold(T::neg_infinity(), T::max);
        let mut sum = T::zero();
        for j in 0..len {
            let e = (src[at(j)] - max).exp();
            dst[at(j)] = e;
            sum = sum + e;
        }
        for j in 0..len {
            dst[at(j)] = dst[at(j)] / sum;
        }
    }
}

/// Local response normalization across channels.
pub fn lrn(x: &Tensor, a: &LrnAttrs, out: &mut Out) -> Result<Tensor> {
    if x.rank() < 3 {
        return invalid!("LRN needs rank 3 or more, got {:?}", x.shape());
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let inner: usize = x.shape()[2..].iter().product();
    let before = (a.size - 1) / 2;
    let after = a.size - 1 - before;
    let xv = as_f32(x)?;
    f32_output(out, x.dtype(), x.shape().to_vec(), |y| {
        for b in 0..n {
            for ch in 0..c {
                let lo = ch.saturating_sub(before);
                let hi = (ch + after).min(c - 1);
                for i in 0..inner {
                    let sq: f32 = (lo..=hi).map(|k| xv[(b * c + k) * inner + i].powi(2)).sum();
                    let idx = (b * c + ch) * inner + i;
                    y[idx] = xv[idx] / (a.bias + a.alpha / a.size as f32 * sq).powf(a.beta);
                }
            }
        }
        Ok(())
    })
}
