//! ReduceSum, ReduceMean, ReduceMax, ReduceMin over any set of axes.

use crate::Out;
use metal_mps_ir::{dispatch_dtype, normalize_axis, Element, ReduceOp, Result, Tensor};

pub fn reduce(
    op: ReduceOp,
    x: &Tensor,
    axes: &[i64],
    keepdims: bool,
    noop_empty: bool,
    out: &mut Out,
) -> Result<Tensor> {
    if axes.is_empty() && noop_empty {
        return out.copy_of(0, x, x.shape().to_vec());
    }
    let rank = x.rank();
    let mut reduced = vec![axes.is_empty(); rank];
    for &a in axes {
        reduced[normalize_axis(a, rank)?] = true;
    }
    let kept: Vec<usize> = (0..rank)
        .map(|d| if reduced[d] { 1 } else { x.shape()[d] })
        .collect();
    let out_shape: Vec<usize> = if keepdims {
        kept.clone()
    } else {
        (0..rank)
            .filter(|&d| !reduced[d])
            .map(|d| x.shape()[d])
            .collect()
    };
    let count: usize = (0..rank)
        .filter(|&d| reduced[d])
        .map(|d| x.shape()[d])
        .product();
    // Output strides seen from the input: 0 along reduced axes.
    let ks = metal_mps_ir::strides(&kept);
    let os: Vec<usize> = (0..rank)
        .map(|d| if reduced[d] { 0 } else { ks[d] })
        .collect();
    let n_out: usize = kept.iter().product();
    let mut acc: Vec<f64> = vec![
        match op {
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
            _ => 0.0,
        };
        n_out
    ];
    let xv = x.to_f64_vec();
    let mut idx = vec![0usize; rank];
    let mut o = 0usize;
    for &v in &xv {
        let a = &mut acc[o];
        match op {
            ReduceOp::Sum | ReduceOp::Mean => *a += v,
            ReduceOp::Max => *a = if v > *a || v.is_nan() { v } else { *a },
            ReduceOp::Min => *a = if v < *a || v.is_nan() { v } else { *a },
        }
        metal_mps_ir::step_index(&mut idx, &mut o, x.shape(), &os);
    }
    if op == ReduceOp::Mean {
        acc.iter_mut().for_each(|a| *a /= count.max(1) as f64);
    }
    if count == 0 && x.dtype() == metal_mps_ir::DType::Bool {
        // Empty boolean reductions: any() is false, all() is true.
        acc.fill(if op == ReduceOp::Min { 1.0 } else { 0.0 });
    }
    let mut y = out.tensor(0, x.dtype(), out_shape)?;
    dispatch_dtype!(x.dtype(), T => {
        y.as_slice_mut::<T>()?.iter_mut().zip(&acc).for_each(|(o, &v)| *o = T::from_f64(v));
    });
    Ok(y)
}
