//! Convolution as im2col + GEMM (the `gemm` crate), 1-D and 2-D, with the
//! bias and the fused activation applied while the output block is in cache.

use super::matmul::{as_f32, f32_output, sgemm_into};
use crate::Out;
use metal_mps_ir::{invalid, unsupported, Activation, ConvAttrs, Result, Tensor};
use rayon::prelude::*;

/// 2-D geometry after 1-D inputs are seen as height 1.
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [usize; 2],
}

pub fn conv(
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    if x.dtype() != w.dtype() {
        return invalid!("Conv input is {} but weight is {}", x.dtype(), w.dtype());
    }
    let g = geometry(a, x, w)?;
    let group = a.group;
    let (cg, mg) = (g.c / group, g.m / group);
    let k = cg * g.kh * g.kw;
    let ohw = g.oh * g.ow;
    let xs = as_f32(x)?;
    let ws = as_f32(w)?;
    let bs = bias.map(as_f32).transpose()?;
    if let Some(b) = &bs {
        if b.len() != g.m {
            return invalid!(
                "Conv bias has {} values for {} output channels",
                b.len(),
                g.m
            );
        }
    }
    // The input is the im2col matrix only when the output grid is the input grid
    // (no padding at either end: end pads add output positions too).
    let pointwise = g.kh == 1
        && g.kw == 1
        && g.stride == [1, 1]
        && g.pad == [0, 0]
        && g.oh == g.h
        && g.ow == g.w;
    let mut shape = vec![g.n, g.m];
    if x.rank() == 4 {
        shape.push(g.oh);
    }
    shape.push(g.ow);
    // Output columns (pixels) are processed in tiles whose im2col block stays in cache.
    let tile = (COL_TILE_FLOATS / k.max(1)).max(64).min(ohw.max(1));
    let tiles = ohw.div_ceil(tile);
    let tasks = g.n * group * tiles;
    // Too few (image, group, tile) tasks to busy every thread: split the output
    // channels too, so each GEMM stays single-threaded and packs only its rows.
    let threads = rayon::current_num_threads();
    let mblocks = if tasks >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(tasks).min(mg.div_ceil(16)).max(1)
    };
    let mb = mg.div_ceil(mblocks);
    f32_output(out, x.dtype(), shape, |y| {
        if mg * ohw == 0 {
            return Ok(());
        }
        let dst = SharedOut(y.as_mut_ptr());
        let task = |t: usize, col: &mut Vec<f32>| {
            let (job, ti) = (t / tiles, t % tiles);
            let (n, gi) = (job / group, job % group);
            let (t0, tw) = (ti * tile, tile.min(ohw - ti * tile));
            let src = &xs[(n * g.c + gi * cg) * g.h * g.w..][..cg * g.h * g.w];
            let (rhs, rhs_rs): (&[f32], usize) = if pointwise {
                (&src[t0..], g.h * g.w)
            } else {
                col.resize(k * tw, 0.0);
                im2col(src, cg, &g, t0, tw, col);
                (col, tw)
            };
            let rows = |mi: usize| {
                let (r0, r1) = (mi * mb, ((mi + 1) * mb).min(mg));
                let offset = (n * g.m + gi * mg + r0) * ohw + t0;
                let weights = &ws[(gi * mg + r0) * k..][..(r1 - r0) * k];
                // SAFETY: this block writes rows [r0, r1) of group gi of image n,
                // columns [t0, t0+tw) only: blocks write disjoint elements of `y`,
                // which outlives them (they finish before f32_output returns).
                unsafe {
                    sgemm_into(
                        r1 - r0,
                        tw,
                        k,
                        weights,
                        k,
                        rhs,
                        rhs_rs,
                        dst.at(offset),
                        ohw,
                        false,
                    )
                };
                for r in r0..r1 {
                    // SAFETY: as above, one row of this block.
                    let row = unsafe { dst.row(offset + (r - r0) * ohw, tw) };
                    finish(
                        row,
                        bs.as_deref().map(|b| &b[gi * mg + r..][..1]),
                        tw,
                        a.activation,
                    );
                }
            };
            if mblocks > 1 {
                (0..mblocks).into_par_iter().for_each(rows);
            } else {
                rows(0);
            }
        };
        if tasks > 1 {
            (0..tasks)
                .into_par_iter()
                .for_each_init(Vec::new, |col, t| task(t, col));
        } else {
            task(0, &mut Vec::new());
        }
        Ok(())
    })
}

/// Floats of one im2col tile (512 KiB): within the L2 cache, and wide enough that
/// the GEMM packs each weight panel for many columns.
const COL_TILE_FLOATS: usize = 128 * 1024;

/// The output buffer shared by conv tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks only write disjoint elements (see `conv`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A pointer into the buffer; the caller guarantees that the elements it
    /// writes through it are touched by no other task.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }

    /// `width` elements from `offset`, under the same guarantee.
    unsafe fn row<'a>(self, offset: usize, width: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(offset), width)
    }
}

fn geometry(a: &ConvAttrs, x: &Tensor, w: &Tensor) -> Result<Geometry> {
    let spatial = x.rank().saturating_sub(2);
    if !(1..=2).contains(&spatial) || w.rank() != x.rank() {
        return unsupported!(
            "Conv with input rank {} and weight rank {} (1-D and 2-D convolutions only)",
            x.rank(),
            w.rank()
        );
    }
    let (xs, wsh) = (x.shape(), w.shape());
    let group = a.group;
    if xs[1] != wsh[1] * group || wsh[0] % group != 0 {
        return invalid!(
            "Conv: input has {} channels, weight {:?} with group {group}",
            xs[1],
            wsh
        );
    }
    if !a.window.kernel.is_empty() && a.window.kernel[..] != wsh[2..] {
        return invalid!(
            "Conv kernel_shape {:?} differs from the weight's {:?}",
            a.window.kernel,
            &wsh[2..]
        );
    }
    let mut dims = Vec::new();
    for s in 0..spatial {
        let (o, b, _) = a.window.output_dim(s, xs[2 + s], wsh[2 + s])?;
        dims.push((
            o,
            b,
            a.window.strides.get(s).copied().unwrap_or(1),
            a.window.dilations.get(s).copied().unwrap_or(1),
        ));
    }
    if spatial == 1 {
        dims.insert(0, (1, 0, 1, 1));
    }
    let h = if spatial == 2 { xs[2] } else { 1 };
    let kh = if spatial == 2 { wsh[2] } else { 1 };
    Ok(Geometry {
        n: xs[0],
        c: xs[1],
        h,
        w: *xs.last().expect("rank checked"),
        m: wsh[0],
        kh,
        kw: *wsh.last().expect("rank checked"),
        oh: dims[0].0,
        ow: dims[1].0,
        stride: [dims[0].2, dims[1].2],
        dilation: [dims[0].3, dims[1].3],
        pad: [dims[0].1, dims[1].1],
    })
}

/// `col[(c, i, j), p − t0] = x[c, oy·sh − ph + i·dh, ox·sw − pw + j·dw]` for
/// output pixels `p = oy·OW + ox` in `[t0, t0 + width)`; 0 in the padding.
fn im2col(x: &[f32], channels: usize, g: &Geometry, t0: usize, width: usize, col: &mut [f32]) {
    let rows = col.chunks_mut(width);
    let taps =
        (0..channels).flat_map(|c| (0..g.kh).flat_map(move |i| (0..g.kw).map(move |j| (c, i, j))));
    for (row, (c, i, j)) in rows.zip(taps) {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        let x0 = (j * g.dilation[1]) as isize - g.pad[1] as isize;
        let mut p = t0;
        while p < t0 + width {
            let (oy, ox0) = (p / g.ow, p % g.ow);
            let n = (g.ow - ox0).min(t0 + width - p);
            let dst = &mut row[p - t0..][..n];
            p += n;
            let iy = (oy * g.stride[0] + i * g.dilation[0]) as isize - g.pad[0] as isize;
            if iy < 0 || iy >= g.h as isize {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * g.w..][..g.w];
            let first = x0 + (ox0 * g.stride[1]) as isize;
            if g.stride[1] == 1 {
                // Zeros left and right of the input row, a copy in between.
                let lo = (-first).clamp(0, n as isize) as usize;
                let hi = (g.w as isize - first).clamp(lo as isize, n as isize) as usize;
                dst[..lo].fill(0.0);
                if hi > lo {
                    dst[lo..hi].copy_from_slice(&src[(first + lo as isize) as usize..][..hi - lo]);
                }
                dst[hi..].fill(0.0);
                continue;
            }
            for (k, d) in dst.iter_mut().enumerate() {
                let ix = first + (k * g.stride[1]) as isize;
                *d = if ix >= 0 && (ix as usize) < g.w {
                    src[ix as usize]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Adds the per-row bias and applies the activation to a `[rows, len]` block.
pub(crate) fn finish(block: &mut [f32], bias: Option<&[f32]>, len: usize, act: Activation) {
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
