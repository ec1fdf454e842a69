//! MaxPool, AveragePool (1-D, 2-D and 3-D) and the global pools.

use super::matmul::{as_f32, f32_output};
use crate::kernels::spread::Spread;
use crate::Out;
use metal_mps_ir::{
    dispatch_dtype, invalid, unsupported, DType, Element, PoolAttrs, PoolKind, Result, Tensor,
};
use rayon::prelude::*;

/// Per spatial axis: input, output, kernel, stride, dilation, begin pad, end pad.
#[derive(Clone, Copy)]
struct Axis {
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    begin: usize,
    end: usize,
}

pub fn pool(p: &PoolAttrs, x: &Tensor, out: &mut Out) -> Result<Tensor> {
    let spatial = x.rank().saturating_sub(2);
    if !(1..=3).contains(&spatial) {
        return unsupported!("pooling over {spatial} spatial dims (1 to 3 supported)");
    }
    if p.window.kernel.len() != spatial {
        return invalid!(
            "kernel_shape has {} dims for {spatial} spatial dims",
            p.window.kernel.len()
        );
    }
    let mut axes = [Axis {
        input: 1,
        output: 1,
        kernel: 1,
        stride: 1,
        dilation: 1,
        begin: 0,
        end: 0,
    }; 3];
    for s in 0..spatial {
        let input = x.shape()[2 + s];
        let kernel = p.window.kernel[s];
        let (output, begin, end) = p.window.output_dim(s, input, kernel)?;
        axes[3 - spatial + s] = Axis {
            input,
            output,
            kernel,
            stride: p.window.strides.get(s).copied().unwrap_or(1),
            dilation: p.window.dilations.get(s).copied().unwrap_or(1),
            begin,
            end,
        };
    }
    let mut shape = x.shape()[..2].to_vec();
    shape.extend(axes[3 - spatial..].iter().map(|a| a.output));
    let planes = x.shape()[0] * x.shape()[1];
    let run = |xv: &[f32], y: &mut [f32]| pool_planes(p, &axes, planes, xv, y);
    match x.dtype() {
        DType::F32 | DType::F16 => {
            let xv = as_f32(x)?;
            f32_output(out, x.dtype(), shape, |y| run(&xv, y))
        }
        dt if p.kind == PoolKind::Max && dt != DType::Bool => {
            // Integer max pooling: exact through f32 for 8- and 16-bit types.
            if matches!(dt, DType::I32 | DType::I64) {
                return unsupported!("MaxPool on {dt} tensors");
            }
            let xv: Vec<f32> = x.to_f64_vec().iter().map(|&v| v as f32).collect();
            let mut yv =
                metal_mps_ir::limits::try_vec::<f32>(metal_mps_ir::checked_numel(&shape)?)?;
            run(&xv, &mut yv)?;
            let mut y = out.tensor(0, dt, shape)?;
            dispatch_dtype!(dt, T => {
                y.as_slice_mut::<T>()?.iter_mut().zip(&yv).for_each(|(o, &v)| *o = T::from_f64(v as f64));
            });
            Ok(y)
        }
        dt => unsupported!("{:?} pooling on {dt} tensors", p.kind),
    }
}

fn pool_planes(
    p: &PoolAttrs,
    ax: &[Axis; 3],
    planes: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let in_plane = ax[0].input * ax[1].input * ax[2].input;
    let out_plane = ax[0].output * ax[1].output * ax[2].output;
    if out_plane == 0 {
        return Ok(());
    }
    let windows: [Vec<Window>; 3] = [windows(&ax[0])?, windows(&ax[1])?, windows(&ax[2])?];
    let work = |(i, dst): (usize, &mut [f32])| {
        pool_plane(p, ax, &windows, &x[i * in_plane..][..in_plane], dst)
    };
    if planes * out_plane > 1 << 14 {
        y.par_chunks_mut(out_plane)
            .enumerate()
            .take(planes)
            .spread()
            .for_each(work);
    } else {
        y.chunks_mut(out_plane)
            .enumerate()
            .take(planes)
            .for_each(work);
    }
    Ok(())
}

/// The input positions one output reads along one axis, and how many of its
/// taps fall inside the padded extent (the divisor of count_include_pad).
struct Window {
    taps: Vec<usize>,
    in_padded: usize,
}

/// Counted, not walked: a window may be far larger than the input (huge
/// pads let a declared kernel of 2⁴⁰ taps read a few elements).
fn windows(a: &Axis) -> Result<Vec<Window>> {
    // Taps k in 0..kernel at position start + k·dilation; how many lie below `limit`
    // and at or after 0, in i128 so that no declared size overflows.
    let (kernel, d) = (a.kernel as i128, a.dilation.max(1) as i128);
    let below = |start: i128, limit: i128| ((limit - start + d - 1).div_euclid(d)).clamp(0, kernel);
    let span = |o: usize| {
        let start = (o as i128) * (a.stride as i128) - a.begin as i128;
        let first = (-start + d - 1).div_euclid(d).clamp(0, kernel);
        (start, first, below(start, a.input as i128).max(first))
    };
    // Every window's taps are listed: their count, summed, is bounded like a tensor.
    let taps: i128 = (0..a.output)
        .map(|o| {
            let (_, f, e) = span(o);
            e - f
        })
        .sum();
    metal_mps_ir::limits::check_tensor_bytes(
        usize::try_from(taps)
            .unwrap_or(usize::MAX)
            .saturating_mul(std::mem::size_of::<usize>()),
    )?;
    Ok((0..a.output)
        .map(|o| {
            let (start, first, end) = span(o);
            Window {
                taps: (first..end).map(|k| (start + k * d) as usize).collect(),
                in_padded: below(start, (a.input + a.end) as i128) as usize,
            }
        })
        .collect())
}

/// One `[z, y, x]` plane, row by row: the window's input rows are first
/// folded into one row (contiguous, so vectorized), then each output reads its
/// horizontal taps from that row. Max pooling propagates NaN.
fn pool_plane(p: &PoolAttrs, ax: &[Axis; 3], win: &[Vec<Window>; 3], x: &[f32], y: &mut [f32]) {
    let max = p.kind == PoolKind::Max;
    let (h, w, ow) = (ax[1].input, ax[2].input, ax[2].output);
    let a = &ax[2];
    let mut folded = vec![0f32; w];
    let mut phases = Vec::new();
    let (lo, hi) = interior(a, &win[2]);
    let mut rows = y.chunks_mut(ow.max(1));
    for wz in &win[0] {
        for wy in &win[1] {
            let out = rows.next().expect("one row per output row");
            let mut taps = wz
                .taps
                .iter()
                .flat_map(|&iz| wy.taps.iter().map(move |&iy| &x[(iz * h + iy) * w..][..w]));
            let Some(first) = taps.next() else {
                // Every tap of the window is padding.
                out.fill(if max { f32::NEG_INFINITY } else { 0.0 });
                continue;
            };
            folded.copy_from_slice(first);
            for row in taps {
                if max {
                    folded
                        .iter_mut()
                        .zip(row)
                        .for_each(|(f, &v)| *f = max_nan(*f, v));
                } else {
                    folded.iter_mut().zip(row).for_each(|(f, &v)| *f += v);
                }
            }
            let init = if max { f32::NEG_INFINITY } else { 0.0 };
            out.fill(init);
            // Interior outputs (every horizontal tap inside the row) take one
            // strided pass per tap; the few at the edges walk their tap lists.
            if max && a.kernel == 2 && a.stride == 2 && a.dilation == 1 && hi > lo {
                // The common 2×2/2 window: pairs, which vectorize.
                let pairs = folded[lo * 2 - a.begin..].chunks_exact(2);
                for (o, pair) in out[lo..hi].iter_mut().zip(pairs) {
                    *o = max_nan(pair[0], pair[1]);
                }
            } else {
                horizontal(a, max, (lo, hi), &folded, &mut phases, out);
            }
            let edges = (0..lo).chain(hi..ow);
            for (o, wx) in edges.map(|ox| (ox, &win[2][ox])) {
                for &ix in &wx.taps {
                    let v = folded[ix];
                    out[o] = if max { max_nan(out[o], v) } else { out[o] + v };
                }
            }
            if !max {
                for (o, wx) in out.iter_mut().zip(&win[2]) {
                    let div = if p.count_include_pad {
                        wz.in_padded * wy.in_padded * wx.in_padded
                    } else {
                        wz.taps.len() * wy.taps.len() * wx.taps.len()
                    };
                    *o /= div.max(1) as f32;
                }
            }
        }
    }
}

/// The interior outputs `[lo, hi)` of one row: one pass per tap. With a
/// stride `s > 1` the folded row is first split into its `s` phases
/// (elements `r, r + s, r + 2s, …`), so that each tap's pass reads
/// consecutive elements, which vectorizes.
fn horizontal(
    a: &Axis,
    max: bool,
    (lo, hi): (usize, usize),
    folded: &[f32],
    phases: &mut Vec<f32>,
    out: &mut [f32],
) {
    if hi <= lo {
        return;
    }
    let s = a.stride;
    let len = folded.len().div_ceil(s);
    let row = if s == 1 {
        folded
    } else {
        phases.resize(s * len, 0.0);
        for (r, phase) in phases.chunks_exact_mut(len).enumerate() {
            for (p, &v) in phase.iter_mut().zip(folded[r..].iter().step_by(s)) {
                *p = v;
            }
        }
        &phases[..]
    };
    for kx in 0..a.kernel {
        // Interior outputs read inside the row: `first` is a valid index.
        let first = lo * s + kx * a.dilation - a.begin;
        let src = &row[first % s * len + first / s..][..hi - lo];
        let dst = out[lo..hi].iter_mut().zip(src);
        if max {
            dst.for_each(|(o, &v)| *o = max_nan(*o, v));
        } else {
            dst.for_each(|(o, &v)| *o += v);
        }
    }
}

/// The outputs `[lo, hi)` whose every horizontal tap lies inside the row.
fn interior(a: &Axis, win: &[Window]) -> (usize, usize) {
    if a.stride > a.input {
        // Each output reads taps of its own: the edge walk serves them all
        // (and no phase split of `stride` rows is made).
        return (a.output, a.output);
    }
    let full = |ox: &usize| ox * a.stride >= a.begin && win[*ox].taps.len() == a.kernel;
    let lo = (0..a.output).find(full).unwrap_or(a.output);
    let hi = (lo..a.output).find(|ox| !full(ox)).unwrap_or(a.output);
    (lo, hi)
}

/// The larger of two values, NaN when either is NaN (as ONNX's max).
#[inline(always)]
pub(crate) fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || a >= b {
        a
    } else {
        b
    }
}

pub fn global_pool(kind: PoolKind, x: &Tensor, out: &mut Out) -> Result<Tensor> {
    if x.rank() < 3 {
        return invalid!("global pooling needs rank 3 or more, got {:?}", x.shape());
    }
    let planes = x.shape()[0] * x.shape()[1];
    let size: usize = x.shape()[2..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[2..].iter_mut().for_each(|d| *d = 1);
    let xv = as_f32(x)?;
    f32_output(out, x.dtype(), shape, |y| {
        for (i, o) in y.iter_mut().enumerate().take(planes) {
            let plane = &xv[i * size..][..size];
            *o = match kind {
                PoolKind::Average => plane.iter().sum::<f32>() / size as f32,
                PoolKind::Max => plane.iter().copied().fold(f32::NEG_INFINITY, max_nan),
            };
        }
        Ok(())
    })
}
