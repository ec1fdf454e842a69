//! Convolutions of three or more spatial axes (video, volumes): per image and
//! group, the input taps gathered into a `taps × pixels` matrix (im2col of any
//! rank), then one product with the group's `channels × taps` weights.

use super::super::matmul::{as_f32, f32_output, sgemm};
use crate::Out;
use metal_mps_ir::{checked_numel, invalid, unsupported, ConvAttrs, Result, Tensor};

/// One spatial axis: input size, kernel size, output size, stride, dilation, begin pad.
struct Axis {
    input: usize,
    kernel: usize,
    output: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
}

impl Axis {
    /// The input coordinate that output `o` reads at kernel tap `k`, if inside.
    fn source(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.stride + k * self.dilation)
            .checked_sub(self.pad)
            .filter(|&i| i < self.input)
    }
}

/// `y = conv(x, w) + bias (+ residual)`, then the activation; `x` is
/// `[N, C, D1, D2, ...]`, `w` is `[M, C/group, K1, K2, ...]`.
pub(super) fn conv_nd(
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    let (xs, ws) = (x.shape(), w.shape());
    if a.max_pool_2x2 {
        return unsupported!("a 2×2 max pool fused into a Conv of rank {}", xs.len());
    }
    if ws.len() != xs.len() {
        return invalid!("Conv: input {xs:?} and weight {ws:?} differ in rank");
    }
    super::check_shapes(a, xs, ws)?;
    let group = a.group;
    let axes = (0..xs.len() - 2)
        .map(|s| {
            let (output, pad, _) = a.window.output_dim(s, xs[2 + s], ws[2 + s])?;
            Ok(Axis {
                input: xs[2 + s],
                kernel: ws[2 + s],
                output,
                stride: a.window.strides.get(s).copied().unwrap_or(1),
                dilation: a.window.dilations.get(s).copied().unwrap_or(1),
                pad,
            })
        })
        .collect::<Result<Vec<Axis>>>()?;
    let (n, m) = (xs[0], ws[0]);
    let (cg, mg) = (ws[1], m / group);
    let window: usize = axes.iter().map(|ax| ax.kernel).product();
    let in_plane: usize = axes.iter().map(|ax| ax.input).product();
    let pixels = checked_numel(&axes.iter().map(|ax| ax.output).collect::<Vec<_>>())?;
    let taps = cg * window;
    let mut shape = vec![n, m];
    shape.extend(axes.iter().map(|ax| ax.output));
    let (xv, wv) = (as_f32(x)?, as_f32(w)?);
    let bias = bias.map(as_f32).transpose()?;
    if bias.as_ref().is_some_and(|b| b.len() != m) {
        return invalid!(
            "Conv bias has {} values for {m} output channels",
            bias.map_or(0, |b| b.len())
        );
    }
    let residual = match residual {
        Some(r) if r.shape() != shape => {
            return invalid!(
                "Conv residual {:?} differs from the output {shape:?}",
                r.shape()
            )
        }
        r => r.map(as_f32).transpose()?,
    };
    let mut cols: Vec<f32> = Vec::new();
    cols.try_reserve_exact(checked_numel(&[taps, pixels])?)
        .map_err(|_| {
            metal_mps_ir::Error::Unsupported(format!("Conv im2col of {taps}×{pixels} values"))
        })?;
    cols.resize(taps * pixels, 0.0);
    f32_output(out, x.dtype(), shape.clone(), |y| {
        for image in 0..n {
            for gi in 0..group {
                let input = &xv[(image * xs[1] + gi * cg) * in_plane..][..cg * in_plane];
                im2col(&axes, input, in_plane, &mut cols);
                let dst = &mut y[(image * m + gi * mg) * pixels..][..mg * pixels];
                let weights = &wv[gi * mg * taps..][..mg * taps];
                sgemm(mg, pixels, taps, weights, taps, &cols, pixels, dst, true);
            }
        }
        for (plane, ys) in y.chunks_exact_mut(pixels.max(1)).enumerate() {
            let b = bias.as_ref().map_or(0.0, |b| b[plane % m]);
            let r = residual.as_ref().map(|r| &r[plane * pixels..][..pixels]);
            for (i, v) in ys.iter_mut().enumerate() {
                *v = a.activation.apply(*v + b + r.map_or(0.0, |r| r[i]));
            }
        }
        Ok(())
    })
}

/// Fills `cols` (`channels · window` rows of `pixels`) with the input taps of
/// every output pixel; taps in the padding are 0.
fn im2col(axes: &[Axis], input: &[f32], in_plane: usize, cols: &mut [f32]) {
    let pixels: usize = axes.iter().map(|ax| ax.output).product();
    let window: usize = axes.iter().map(|ax| ax.kernel).product();
    let mut tap = vec![0usize; axes.len()];
    let mut at = vec![0usize; axes.len()];
    for (row, dst) in cols.chunks_exact_mut(pixels.max(1)).enumerate() {
        let plane = &input[(row / window) * in_plane..][..in_plane];
        unravel(row % window, axes.iter().map(|ax| ax.kernel), &mut tap);
        at.fill(0);
        for v in dst.iter_mut() {
            let mut offset = Some(0usize);
            for ((ax, &k), &o) in axes.iter().zip(&tap).zip(&at) {
                offset = offset
                    .zip(ax.source(o, k))
                    .map(|(off, i)| off * ax.input + i);
            }
            *v = offset.map_or(0.0, |off| plane[off]);
            next(&mut at, axes.iter().map(|ax| ax.output));
        }
    }
}

/// Row-major coordinates of flat index `i` in `dims`.
fn unravel(mut i: usize, dims: impl DoubleEndedIterator<Item = usize>, coords: &mut [usize]) {
    for (c, d) in coords.iter_mut().rev().zip(dims.rev()) {
        *c = i % d;
        i /= d;
    }
}

/// Advances row-major coordinates `at` by one within `dims`.
fn next(at: &mut [usize], dims: impl DoubleEndedIterator<Item = usize>) {
    for (c, d) in at.iter_mut().rev().zip(dims.rev()) {
        *c += 1;
        if *c < d {
            return;
        }
        *c = 0;
    }
}
