//! MaxPool, AveragePool (1-D, 2-D and 3-D) and the global pools.

use super::matmul::{as_f32, f32_output};
use crate::Out;
use metal_mps_ir::{dispatch_dtype, invalid, unsupported, DType, Element, PoolAttrs, PoolKind, Result, Tensor};
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
        return invalid!("kernel_shape has {} dims for {spatial} spatial dims", p.window.kernel.len());
    }
    let mut axes = [Axis { input: 1, output: 1, kernel: 1, stride: 1, dilation: 1, begin: 0, end: 0 }; 3];
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
            f32_output(out, x.dtype(), shape, |y| {
                run(&xv, y);
                Ok(())
            })
        }
        dt if p.kind == PoolKind::Max && dt != DType::Bool => {
            // Integer max pooling: exact through f32 for 8- and 16-bit types.
            if matches!(dt, DType::I32 | DType::I64) {
                return unsupported!("MaxPool on {dt} tensors");
            }
            let xv: Vec<f32> = x.to_f64_vec().iter().map(|&v| v as f32).collect();
            let mut yv = vec![0f32; shape.iter().product()];
            run(&xv, &mut yv);
            let mut y = out.tensor(0, dt, shape)?;
            dispatch_dtype!(dt, T => {
                y.as_slice_mut::<T>()?.iter_mut().zip(&yv).for_each(|(o, &v)| *o = T::from_f64(v as f64));
            });
            Ok(y)
        }
        dt => unsupported!("{:?} pooling on {dt} tensors", p.kind),
    }
}

fn pool_planes(p: &PoolAttrs, ax: &[Axis; 3], planes: usize, x: &[f32], y: &mut [f32]) {
    let in_plane = ax[0].input * ax[1].input * ax[2].input;
    let out_plane = ax[0].output * ax[1].output * ax[2].output;
    if out_plane == 0 {
        return;
    }
    let work = |(i, dst): (usize, &mut [f32])| pool_plane(p, ax, &x[i * in_plane..][..in_plane], dst);
    if planes * out_plane > 1 << 14 {
        y.par_chunks_mut(out_plane).enumerate().take(planes).for_each(work);
    } else {
        y.chunks_mut(out_plane).enumerate().take(planes).for_each(work);
    }
}

/// Taps of one axis for output `o`: the valid input range and how many taps
/// fall inside the padded extent (for count_include_pad).
fn taps(a: &Axis, o: usize) -> (isize, usize) {
    let start = (o * a.stride) as isize - a.begin as isize;
    let padded_end = (a.input + a.end) as isize;
    let mut in_padded = 0;
    for k in 0..a.kernel {
        if start + (k * a.dilation) as isize <= padded_end - 1 {
            in_padded += 1;
        }
    }
    (start, in_padded)
}

fn pool_plane(p: &PoolAttrs, ax: &[Axis; 3], x: &[f32], y: &mut [f32]) {
    let max = p.kind == PoolKind::Max;
    let mut o = 0;
    for oz in 0..ax[0].output {
        let (sz, pz) = taps(&ax[0], oz);
        for oy in 0..ax[1].output {
            let (sy, py) = taps(&ax[1], oy);
            for ox in 0..ax[2].output {
                let (sx, px) = taps(&ax[2], ox);
                let (mut acc, mut count) = (if max { f32::NEG_INFINITY } else { 0.0 }, 0usize);
                for kz in 0..ax[0].kernel {
                    let iz = sz + (kz * ax[0].dilation) as isize;
                    if iz < 0 || iz >= ax[0].input as isize {
                        continue;
                    }
                    for ky in 0..ax[1].kernel {
                        let iy = sy + (ky * ax[1].dilation) as isize;
                        if iy < 0 || iy >= ax[1].input as isize {
                            continue;
                        }
                        let row = &x[(iz as usize * ax[1].input + iy as usize) * ax[2].input..][..ax[2].input];
                        for kx in 0..ax[2].kernel {
                            let ix = sx + (kx * ax[2].dilation) as isize;
                            if ix < 0 || ix >= ax[2].input as isize {
                                continue;
                            }
                            let v = row[ix as usize];
                            if max {
                                if v > acc || v.is_nan() {
                                    acc = v;
                                }
                            } else {
                                acc += v;
                            }
                            count += 1;
                        }
                    }
                }
                y[o] = if max {
                    acc
                } else {
                    let div = if p.count_include_pad { pz * py * px } else { count };
                    acc / div.max(1) as f32
                };
                o += 1;
            }
        }
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
                PoolKind::Max => plane.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            };
        }
        Ok(())
    })
}
