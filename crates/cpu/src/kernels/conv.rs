//! Convolution as a packed matrix product, 1-D and 2-D: the weights are packed
//! once ([`ConvWeights`]), im2col writes the input taps straight into the
//! product's column panels, and the bias, an optional residual and the fused
//! activation are applied as each output tile is stored.

use super::matmul::{as_f32, f32_output};
use super::packed::{self, Epilogue, PackedLhs, KC, NR};
use crate::Out;
use metal_mps_ir::{invalid, unsupported, ConvAttrs, Result, Tensor};
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

/// A convolution's weights packed for the matrix product, one matrix per group.
#[derive(Debug)]
pub struct ConvWeights {
    shape: Vec<usize>,
    groups: Vec<PackedLhs>,
}

impl ConvWeights {
    /// Packs `w` (`[M, C/group, kH, kW]` or `[M, C/group, kW]`) for `group` groups.
    pub fn new(w: &Tensor, group: usize) -> Result<ConvWeights> {
        let shape = w.shape().to_vec();
        if shape.len() < 3 || group == 0 || shape[0] % group != 0 {
            return invalid!("Conv weight {shape:?} does not split into {group} groups");
        }
        let ws = as_f32(w)?;
        let mg = shape[0] / group;
        let k: usize = shape[1..].iter().product();
        let groups = (0..group)
            .map(|gi| PackedLhs::pack(&ws[gi * mg * k..][..mg * k], mg, k))
            .collect();
        Ok(ConvWeights { shape, groups })
    }

    /// Bytes of the packed panels.
    pub fn bytes(&self) -> usize {
        self.groups.iter().map(PackedLhs::bytes).sum()
    }
}

/// Conv with weights packed for this call (the evaluator's path).
pub fn conv(
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    if x.dtype() != w.dtype() {
        return invalid!("Conv input is {} but weight is {}", x.dtype(), w.dtype());
    }
    conv_packed(a, x, &ConvWeights::new(w, a.group)?, bias, residual, out)
}

/// Conv with packed weights; `residual`, when given, has the output's shape
/// and is added before the activation.
pub fn conv_packed(
    a: &ConvAttrs,
    x: &Tensor,
    w: &ConvWeights,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &mut Out,
) -> Result<Tensor> {
    let g = geometry(a, x, &w.shape)?;
    let group = a.group;
    let (cg, mg) = (g.c / group, g.m / group);
    let k = cg * g.kh * g.kw;
    let ohw = g.oh * g.ow;
    let xs = as_f32(x)?;
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
    let mut shape = vec![g.n, g.m];
    if x.rank() == 4 {
        shape.push(g.oh);
    }
    shape.push(g.ow);
    let rs = match residual {
        Some(r) if r.shape() != shape => {
            return invalid!(
                "Conv residual {:?} differs from the output {:?}",
                r.shape(),
                shape
            )
        }
        Some(r) => Some(as_f32(r)?),
        None => None,
    };
    let jobs = Jobs::new(g.n * group, ohw, k, mg.div_ceil(packed::MR));
    f32_output(out, x.dtype(), shape, |y| {
        if mg * ohw == 0 {
            return Ok(());
        }
        let dst = SharedOut(y.as_mut_ptr());
        // Job j: image n, group gi, output pixels [t0, t0 + tw).
        let job = |j: usize| {
            let (image, ci) = (j / jobs.chunks, j % jobs.chunks);
            let (n, gi) = (image / group, image % group);
            let (t0, tw) = (ci * jobs.chunk, jobs.chunk.min(ohw - ci * jobs.chunk));
            let src = &xs[(n * g.c + gi * cg) * g.h * g.w..][..cg * g.h * g.w];
            (n, gi, t0, tw, src)
        };
        let multiply = |j: usize, panels: std::ops::Range<usize>, b: &[f32]| {
            let (n, gi, t0, tw, _) = job(j);
            let offset = (n * g.m + gi * mg) * ohw + t0;
            let ep = Epilogue {
                bias: bs.as_deref().map(|b| &b[gi * mg..][..mg]),
                residual: rs.as_deref().map(|r| r[offset..].as_ptr()),
                activation: a.activation,
            };
            // SAFETY: a call writes rows `panels` of group gi of image n,
            // columns [t0, t0+tw): calls write disjoint elements of `y`, which
            // outlives them (they finish before f32_output returns); the
            // residual has the output's shape, so it is readable at the same offsets.
            unsafe { packed::multiply(&w.groups[gi], panels, tw, b, dst.at(offset), ohw, &ep) };
        };
        if jobs.splits == 1 {
            (0..jobs.count())
                .into_par_iter()
                .for_each_init(Buffers::default, |buf, j| {
                    let (_, _, t0, tw, src) = job(j);
                    buf.panels.resize(packed::rhs_len(k, tw), 0.0);
                    for (kb, block) in buf.panels.chunks_mut(KC * tw.div_ceil(NR) * NR).enumerate()
                    {
                        pack_taps(src, &g, t0, tw, kb * KC, &mut buf.row, block);
                    }
                    multiply(j, 0..jobs.panels, &buf.panels);
                });
            return Ok(());
        }
        // Few jobs: each is packed once, in parallel, then its output
        // channels are split across the threads.
        let mut panels = Vec::new();
        for j in 0..jobs.count() {
            let (_, _, t0, tw, src) = job(j);
            panels.resize(packed::rhs_len(k, tw), 0.0);
            panels
                .par_chunks_mut(KC * tw.div_ceil(NR) * NR)
                .enumerate()
                .for_each_init(Vec::new, |row, (kb, block)| {
                    pack_taps(src, &g, t0, tw, kb * KC, row, block)
                });
            (0..jobs.splits).into_par_iter().for_each(|si| {
                let p0 = si * jobs.per_split;
                multiply(j, p0..(p0 + jobs.per_split).min(jobs.panels), &panels);
            });
        }
        Ok(())
    })
}

/// How a convolution's output is divided among the threads: per image and
/// group, chunks of output pixels, and when those are too few, splits of the
/// output channels (panels of [`packed::MR`] rows).
struct Jobs {
    images: usize,
    chunk: usize,
    chunks: usize,
    panels: usize,
    splits: usize,
    per_split: usize,
}

impl Jobs {
    fn new(images: usize, pixels: usize, taps: usize, panels: usize) -> Jobs {
        let threads = rayon::current_num_threads();
        let widest = (PACKED_FLOATS / taps.max(1) / NR * NR).clamp(4 * NR, MAX_CHUNK);
        let mut chunks = pixels.div_ceil(widest).max(1);
        if images == 1 && chunks > 1 {
            chunks = chunks.next_multiple_of(threads);
        }
        let chunk = pixels.div_ceil(chunks).div_ceil(NR).max(1) * NR;
        let chunks = pixels.div_ceil(chunk).max(1);
        let jobs = images * chunks;
        let splits = if jobs >= 2 * threads {
            1
        } else {
            (4 * threads).div_ceil(jobs).min(panels).max(1)
        };
        let per_split = panels.div_ceil(splits).max(1);
        Jobs {
            images,
            chunk,
            chunks,
            panels,
            splits: panels.div_ceil(per_split).max(1),
            per_split,
        }
    }

    fn count(&self) -> usize {
        self.images * self.chunks
    }
}

/// Floats of one chunk's packed taps (1 MiB).
const PACKED_FLOATS: usize = 256 * 1024;
/// At most this many output pixels per chunk, so that large images still
/// split into several tasks.
const MAX_CHUNK: usize = 1024;

/// A task's scratch memory, reused across the tasks one thread runs.
#[derive(Default)]
struct Buffers {
    /// The product's `B` operand: the chunk's taps in column panels.
    panels: Vec<f32>,
    /// One im2col row before it is cut into panels.
    row: Vec<f32>,
}

/// The output buffer shared by conv tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks only write disjoint elements (see `conv_packed`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A pointer into the buffer; the caller guarantees that the elements it
    /// writes through it are touched by no other task.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

fn geometry(a: &ConvAttrs, x: &Tensor, wsh: &[usize]) -> Result<Geometry> {
    let spatial = x.rank().saturating_sub(2);
    if !(1..=2).contains(&spatial) || wsh.len() != x.rank() {
        return unsupported!(
            "Conv with input rank {} and weight rank {} (1-D and 2-D convolutions only)",
            x.rank(),
            wsh.len()
        );
    }
    let xs = x.shape();
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

/// Writes the block of taps from `k0` of the im2col matrix of output pixels
/// `[t0, t0 + width)` into `block` as the product's `B` panels (see
/// [`packed::multiply`]): tap `(c, i, j)`, pixel `p = oy·OW + ox` is
/// `x[c, oy·sh − ph + i·dh, ox·sw − pw + j·dw]`, 0 in the padding.
fn pack_taps(
    x: &[f32],
    g: &Geometry,
    t0: usize,
    width: usize,
    k0: usize,
    row: &mut Vec<f32>,
    block: &mut [f32],
) {
    let kc = block.len() / (width.div_ceil(NR) * NR);
    row.resize(width.div_ceil(NR) * NR, 0.0);
    let pointwise = g.kh == 1
        && g.kw == 1
        && g.stride == [1, 1]
        && g.pad == [0, 0]
        && g.oh == g.h
        && g.ow == g.w;
    let taps = g.kh * g.kw;
    for p in 0..kc {
        let (c, ij) = ((k0 + p) / taps, (k0 + p) % taps);
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        if pointwise {
            row[..width].copy_from_slice(&plane[t0..][..width]);
        } else {
            im2col_row(plane, g, ij / g.kw, ij % g.kw, t0, &mut row[..width]);
        }
        for (jp, src) in row.chunks_exact(NR).enumerate() {
            block[jp * kc * NR + p * NR..][..NR].copy_from_slice(src);
        }
    }
}

/// One im2col row: tap `(i, j)` of one input plane for output pixels
/// `[t0, t0 + dst.len())`.
fn im2col_row(plane: &[f32], g: &Geometry, i: usize, j: usize, t0: usize, row: &mut [f32]) {
    let width = row.len();
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
