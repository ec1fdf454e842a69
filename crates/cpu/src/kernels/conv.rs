//! Convolution as a packed matrix product, 1-D and 2-D: the weights are packed
//! once ([`ConvWeights`]), im2col writes the input taps straight into the
//! product's column panels, and the bias, an optional residual and the fused
//! activation are applied as each output tile is stored.

use super::matmul::{as_f32, f32_output};
use super::packed::{self, Columns, Epilogue, PackedLhs, NR};
use super::pool::max_nan;
use crate::Out;
use metal_mps_ir::{invalid, unsupported, Activation, ConvAttrs, Result, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;
use std::thread::LocalKey;

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
    /// Packs `w` (`[M, C/group, kH, kW]` or `[M, C/group, kW]`) for the
    /// convolution `a`.
    pub fn new(w: &Tensor, a: &ConvAttrs) -> Result<ConvWeights> {
        let group = a.group;
        let shape = w.shape().to_vec();
        if shape.len() < 3 || group == 0 || !shape[0].is_multiple_of(group) {
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
    conv_packed(a, x, &ConvWeights::new(w, a)?, bias, residual, out)
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
    let pooled = match (a.max_pool_2x2, x.rank()) {
        (false, _) => None,
        (true, 4) => Some(vec![g.n, g.m, g.oh / 2, g.ow / 2]),
        (true, _) => return unsupported!("a 2×2 max pool fused into a 1-D Conv"),
    };
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
    if g.h * g.w >= PADDING as usize {
        return unsupported!("Conv input planes of {}×{} elements", g.h, g.w);
    }
    let conv = Product {
        g: &g,
        group,
        k,
        x: &xs,
        weights: w,
        bias: bs.as_deref(),
        residual: rs.as_deref(),
        activation: a.activation,
        pool: pooled.is_some(),
    };
    let out_shape = pooled.unwrap_or_else(|| shape.clone());
    f32_output(out, x.dtype(), out_shape, |y| {
        if y.is_empty() || mg * ohw == 0 {
            return Ok(());
        }
        let dst = SharedOut(y.as_mut_ptr());
        if direct_fits(&g) {
            conv.direct(dst);
        } else if conv.pool {
            // Strided or pointwise convolutions with a fused pool: the
            // whole output first, then the pool.
            let mut full = vec![0f32; shape.iter().product()];
            conv.packed(SharedOut(full.as_mut_ptr()));
            let (pw, ph) = (g.ow / 2, g.oh / 2);
            for (plane, out) in full.chunks_exact(ohw).zip(y.chunks_exact_mut(ph * pw)) {
                for (py, out) in out.chunks_exact_mut(pw).enumerate() {
                    let rows = &plane[2 * py * g.ow..][..2 * g.ow];
                    pool_pairs(&rows[..g.ow], &rows[g.ow..], out);
                }
            }
        } else {
            conv.packed(dst);
        }
        Ok(())
    })
}

/// Whether the stride-1 path that reads `B` straight from the zero-padded
/// input applies ([`Product::direct`]): a window of several taps, and padded
/// rows whose extra positions (computed, then dropped) are at most a quarter
/// of them.
fn direct_fits(g: &Geometry) -> bool {
    let wp = g.ow + (g.kw - 1) * g.dilation[1];
    g.stride == [1, 1] && g.kh * g.kw > 1 && 3 * wp <= 4 * g.ow
}

/// One convolution as products of packed weights and column tiles.
struct Product<'a> {
    g: &'a Geometry,
    group: usize,
    /// Taps per output channel: `C/group · kH · kW`.
    k: usize,
    x: &'a [f32],
    weights: &'a ConvWeights,
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    activation: Activation,
    /// A fused 2×2, stride-2 max pool (see [`ConvAttrs::max_pool_2x2`]): only
    /// [`Product::direct`] applies it.
    pool: bool,
}

impl Product<'_> {
    fn mg(&self) -> usize {
        self.g.m / self.group
    }

    fn panels(&self) -> usize {
        self.mg().div_ceil(packed::MR)
    }

    /// Input channels of image `n`, group `gi`.
    fn input(&self, n: usize, gi: usize) -> &[f32] {
        let (g, cg) = (self.g, self.g.c / self.group);
        &self.x[(n * g.c + gi * cg) * g.h * g.w..][..cg * g.h * g.w]
    }

    /// Output rows `panels` of image `n`, group `gi`, for the column tiles.
    ///
    /// Calls that run at the same time must write disjoint rows or tiles.
    fn multiply(
        &self,
        n: usize,
        gi: usize,
        panels: std::ops::Range<usize>,
        tiles: &[Columns],
        offsets: Option<&[usize]>,
        dst: SharedOut,
    ) {
        let (mg, ohw) = (self.mg(), self.g.oh * self.g.ow);
        let plane = (n * self.g.m + gi * mg) * ohw;
        let ep = Epilogue {
            bias: self.bias.map(|b| &b[gi * mg..][..mg]),
            residual: self.residual.map(|r| r[plane..].as_ptr()),
            activation: self.activation,
        };
        // SAFETY: the tiles lie in output plane `plane` (rows of `mg`
        // channels, `ohw` apart) and their `B` reads in the caller's
        // buffers; concurrent calls write disjoint elements of the output,
        // which outlives them; the residual has the output's shape.
        unsafe {
            packed::multiply(
                &self.weights.groups[gi],
                panels,
                tiles,
                offsets,
                dst.at(plane),
                ohw,
                &ep,
            )
        };
    }

    /// im2col into packed panels, then the product; see [`Jobs`]. A
    /// pointwise convolution (1×1, stride 1, no padding) reads its full tiles
    /// straight from the input, whose planes are the taps; only a partial
    /// last tile is packed.
    fn packed(&self, dst: SharedOut) {
        let (g, k) = (self.g, self.k);
        let ohw = g.oh * g.ow;
        let jobs = Jobs::new(g.n * self.group, ohw, k, self.panels());
        let pointwise = g.kh == 1
            && g.kw == 1
            && g.stride == [1, 1]
            && g.pad == [0, 0]
            && g.oh == g.h
            && g.ow == g.w;
        // The taps of a pointwise convolution are its input planes.
        let planes: Vec<usize> = match pointwise {
            true => (0..k).map(|c| c * g.h * g.w).collect(),
            false => Vec::new(),
        };
        // Job j: image n, group gi, output pixels [t0, t0 + tw); its column
        // tiles read from the input (pointwise) and from `panels`.
        let job = |j: usize| {
            let (image, ci) = (j / jobs.chunks, j % jobs.chunks);
            let (t0, tw) = (ci * jobs.chunk, jobs.chunk.min(ohw - ci * jobs.chunk));
            let direct = if pointwise { tw / NR } else { 0 };
            (image / self.group, image % self.group, t0, tw, direct)
        };
        let tiles = |j: usize, panels: &[f32]| -> [Vec<Columns>; 2] {
            let (n, gi, t0, tw, direct) = job(j);
            let input = self.input(n, gi);
            let from_input = (0..direct)
                .map(|jp| Columns {
                    c: t0 + jp * NR,
                    len: NR,
                    b: input[t0 + jp * NR..].as_ptr(),
                })
                .collect();
            let packed = (direct..tw.div_ceil(NR))
                .map(|jp| Columns {
                    c: t0 + jp * NR,
                    len: NR.min(tw - jp * NR),
                    b: panels[(jp - direct) * k * NR..].as_ptr(),
                })
                .collect();
            [from_input, packed]
        };
        let run =
            |j: usize, rows: std::ops::Range<usize>, [from_input, packed]: &[Vec<Columns>; 2]| {
                let (n, gi, ..) = job(j);
                if !from_input.is_empty() {
                    self.multiply(n, gi, rows.clone(), from_input, Some(&planes), dst);
                }
                if !packed.is_empty() {
                    self.multiply(n, gi, rows, packed, None, dst);
                }
            };
        let prepare = |j: usize, buf: &mut Buffers| {
            let (.., t0, tw, direct) = job(j);
            buf.panels.resize((tw.div_ceil(NR) - direct) * k * NR, 0.0);
            if !buf.panels.is_empty() {
                buf.taps.fill(g, t0, tw);
            }
        };
        if jobs.splits == 1 {
            (0..jobs.count()).into_par_iter().for_each(|j| {
                with_local(&SCRATCH, |buf| {
                    let (n, gi, .., direct) = job(j);
                    prepare(j, buf);
                    for (q, panel) in buf.panels.chunks_exact_mut(k * NR).enumerate() {
                        buf.taps.pack_panel(self.input(n, gi), g, direct + q, panel);
                    }
                    run(j, 0..jobs.panels, &tiles(j, &buf.panels));
                })
            });
            return;
        }
        // Few jobs: each is packed once, in parallel, then its output
        // channels are split across the threads.
        with_local(&SCRATCH, |buf| {
            for j in 0..jobs.count() {
                let (n, gi, .., direct) = job(j);
                prepare(j, buf);
                let taps = &buf.taps;
                buf.panels
                    .par_chunks_exact_mut(k * NR)
                    .enumerate()
                    .for_each(|(q, panel)| {
                        taps.pack_panel(self.input(n, gi), g, direct + q, panel)
                    });
                let tiles = tiles(j, &buf.panels);
                (0..jobs.splits).into_par_iter().for_each(|si| {
                    let p0 = si * jobs.per_split;
                    run(j, p0..(p0 + jobs.per_split).min(jobs.panels), &tiles);
                });
            }
        })
    }

    /// Stride 1, no im2col: the input is copied once with its zero padding
    /// into planes of `hp×wp`, where output pixel `(oy, ox)` is computed at
    /// position `q = oy·wp + ox` and tap `(c, i, j)` of `NR` consecutive
    /// positions is `NR` consecutive floats, at `q + c·hp·wp + i·wp + j`.
    /// Where output rows fill whole tiles, each tile goes straight to the
    /// output; otherwise tiles run along whole padded rows, so the `wp − ow`
    /// positions past each row's end are computed too, into a block of
    /// scratch memory, and [`Product::store_rows`] drops them.
    fn direct(&self, dst: SharedOut) {
        let g = self.g;
        let cg = g.c / self.group;
        let (hp, wp) = (
            g.oh + (g.kh - 1) * g.dilation[0],
            g.ow + (g.kw - 1) * g.dilation[1],
        );
        let plane = hp * wp;
        let images = g.n * self.group;
        with_local(&PADDED, |padded| {
            // The last tile reads up to NR − 1 positions past the last row,
            // plus the taps' horizontal reach (less than wp).
            let len = images * cg * plane + NR + wp;
            if padded.len() < len {
                padded.resize(len, 0.0);
            }
            let (planes, slack) = padded[..len].split_at_mut(images * cg * plane);
            slack.fill(0.0);
            // Every element is written: the buffer holds an earlier call's data.
            planes
                .par_chunks_exact_mut(plane)
                .enumerate()
                .for_each(|(ic, dst)| {
                    let (image, c) = (ic / cg, ic % cg);
                    let src = &self.input(image / self.group, image % self.group)[c * g.h * g.w..];
                    for (r, row) in dst.chunks_exact_mut(wp).enumerate() {
                        let Some(iy) = (r as isize - g.pad[0] as isize)
                            .try_into()
                            .ok()
                            .filter(|&iy: &usize| iy < g.h)
                        else {
                            row.fill(0.0);
                            continue;
                        };
                        let from = g.pad[1].min(wp);
                        let n = g.w.min(wp - from);
                        row[..from].fill(0.0);
                        row[from..from + n].copy_from_slice(&src[iy * g.w..][..n]);
                        row[from + n..].fill(0.0);
                    }
                });
            self.direct_product(&padded[..len], plane, wp, dst);
        });
    }

    /// The products of [`Product::direct`] on the zero-padded input: jobs are
    /// runs of output rows of one image (and splits of the channels when
    /// they are few); each computes into a block of scratch memory, then
    /// stores the block's rows.
    fn direct_product(&self, padded: &[f32], plane: usize, wp: usize, dst: SharedOut) {
        let g = self.g;
        let (cg, mg) = (g.c / self.group, self.mg());
        let offsets: Vec<usize> = (0..cg)
            .flat_map(|c| {
                (0..g.kh).flat_map(move |i| {
                    (0..g.kw).map(move |j| c * plane + i * g.dilation[0] * wp + j * g.dilation[1])
                })
            })
            .collect();
        let images = g.n * self.group;
        // Rows a fused pool reads: pairs (its last row is dropped when odd).
        let (oh, step) = match self.pool {
            true => (g.oh / 2 * 2, 2),
            false => (g.oh, 1),
        };
        // Rows per job: a block of output of about DIRECT_BLOCK_FLOATS, at
        // least DIRECT_MIN_POSITIONS positions (the weights read for one
        // tile serve the job's other tiles from the cache), and as many runs
        // as the threads can share evenly; too few jobs split their output
        // channels instead.
        let positions = (DIRECT_BLOCK_FLOATS / mg.max(1)).max(DIRECT_MIN_POSITIONS);
        let mut runs = oh.div_ceil((positions / wp).max(1));
        if images == 1 && runs > 1 {
            runs = runs.next_multiple_of(rayon::current_num_threads());
        }
        let rows = oh.div_ceil(runs.max(1)).next_multiple_of(step).max(step);
        let runs = oh.div_ceil(rows);
        let jobs = images * runs;
        let panels = self.panels();
        let (splits, per_split) = channel_splits(jobs, panels);
        (0..jobs * splits).into_par_iter().for_each(|t| {
            let (j, si) = (t / splits, t % splits);
            let (image, run) = (j / runs, j % runs);
            let oy = run * rows..((run + 1) * rows).min(oh);
            let panels = si * per_split..((si + 1) * per_split).min(panels);
            let (n, gi) = (image / self.group, image % self.group);
            let base = padded[image * cg * plane..].as_ptr();
            if g.ow.is_multiple_of(NR) && !self.pool {
                // Rows fill their tiles: each tile goes straight to the output.
                let tiles: Vec<Columns> = oy
                    .flat_map(|y| {
                        (0..g.ow).step_by(NR).map(move |x| Columns {
                            c: y * g.ow + x,
                            len: NR,
                            // SAFETY: inside `padded`.
                            b: unsafe { base.add(y * wp + x) },
                        })
                    })
                    .collect();
                self.multiply(n, gi, panels, &tiles, Some(&offsets), dst);
                return;
            }
            let ldc = oy.len() * wp;
            let tiles: Vec<Columns> = (0..ldc)
                .step_by(NR)
                .map(|q| Columns {
                    c: q,
                    len: NR.min(ldc - q),
                    // SAFETY: inside `padded` (see its slack).
                    b: unsafe { base.add(oy.start * wp + q) },
                })
                .collect();
            let channels = panels.start * packed::MR..(panels.end * packed::MR).min(mg);
            with_local(&SCRATCH, |buf| {
                let block = &mut buf.block;
                if block.len() < channels.end * ldc {
                    block.resize(channels.end * ldc, 0.0);
                }
                let raw = Epilogue {
                    bias: None,
                    residual: None,
                    activation: Activation::None,
                };
                // SAFETY: the tiles' taps lie in `padded`; the block holds
                // rows `..channels.end` of `ldc` columns, this task's alone.
                unsafe {
                    packed::multiply(
                        &self.weights.groups[gi],
                        panels,
                        &tiles,
                        Some(&offsets),
                        block.as_mut_ptr(),
                        ldc,
                        &raw,
                    )
                };
                if self.pool {
                    self.pool_rows(image, channels, oy, &block[..], wp, dst);
                } else {
                    self.store_rows(image, channels, oy, &block[..], wp, dst);
                }
            });
        });
    }

    /// Stores output rows `oy` of channels `channels` of image·group `image`
    /// from a [`Product::direct`] block (rows `wp` wide, channel `ch` at
    /// `ch·ldc`), adding the bias and residual and applying the activation.
    fn store_rows(
        &self,
        image: usize,
        channels: std::ops::Range<usize>,
        oy: std::ops::Range<usize>,
        block: &[f32],
        wp: usize,
        dst: SharedOut,
    ) {
        let ldc = oy.len() * wp;
        for ch in channels {
            let plane = self.output_plane(image, ch);
            for (r, y) in oy.clone().enumerate() {
                let at = plane + y * self.g.ow;
                // SAFETY: this task alone writes these channels of these rows.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.at(at), self.g.ow) };
                self.finish_row(image, ch, at, &block[ch * ldc + r * wp..], out);
            }
        }
    }

    /// As [`Product::store_rows`] for a fused pool: each pair of rows, once
    /// finished, is max-pooled into one output row (of the pooled planes).
    fn pool_rows(
        &self,
        image: usize,
        channels: std::ops::Range<usize>,
        oy: std::ops::Range<usize>,
        block: &[f32],
        wp: usize,
        dst: SharedOut,
    ) {
        let g = self.g;
        let (ldc, pw, ph) = (oy.len() * wp, g.ow / 2, g.oh / 2);
        let mut rows = vec![0f32; 2 * g.ow];
        for ch in channels {
            let plane = self.output_plane(image, ch);
            for r in (0..oy.len()).step_by(2) {
                let y = oy.start + r;
                let (top, bottom) = rows.split_at_mut(g.ow);
                for (k, row) in [top, bottom].into_iter().enumerate() {
                    let at = plane + (y + k) * g.ow;
                    self.finish_row(image, ch, at, &block[ch * ldc + (r + k) * wp..], row);
                }
                let at = plane / (g.oh * g.ow) * ph * pw + y / 2 * pw;
                // SAFETY: this task alone writes these channels of these rows.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.at(at), pw) };
                pool_pairs(&rows[..g.ow], &rows[g.ow..], out);
            }
        }
    }

    /// Offset of output channel `ch` of image·group `image` in the unpooled output.
    fn output_plane(&self, image: usize, ch: usize) -> usize {
        let (g, mg) = (self.g, self.mg());
        let (n, gi) = (image / self.group, image % self.group);
        (n * g.m + gi * mg + ch) * g.oh * g.ow
    }

    /// `out = activation(src + bias + residual)` for one output row of
    /// channel `ch` at offset `at` of the unpooled output.
    fn finish_row(&self, image: usize, ch: usize, at: usize, src: &[f32], out: &mut [f32]) {
        let bias = self
            .bias
            .map_or(0.0, |b| b[image % self.group * self.mg() + ch]);
        let src = &src[..out.len()];
        match self.residual {
            Some(res) => {
                for ((o, &s), &r) in out.iter_mut().zip(src).zip(&res[at..]) {
                    *o = s + bias + r;
                }
            }
            None => {
                for (o, &s) in out.iter_mut().zip(src) {
                    *o = s + bias;
                }
            }
        }
        packed::Finish::new(self.activation).apply(out);
    }
}

/// `out[i] = max(top[2i], top[2i+1], bottom[2i], bottom[2i+1])`, NaN when any is.
fn pool_pairs(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
    for (o, (t, b)) in out.iter_mut().zip(pairs) {
        *o = max_nan(max_nan(t[0], t[1]), max_nan(b[0], b[1]));
    }
}

/// Floats of a [`Product::direct`] job's block of output (128 KiB, within
/// the L2 cache with the weights and inputs it reads).
const DIRECT_BLOCK_FLOATS: usize = 32 * 1024;
/// Padded positions per [`Product::direct`] job, at least: 32 column tiles.
const DIRECT_MIN_POSITIONS: usize = 32 * NR;

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
        let widest = (BLOCK_FLOATS / taps.clamp(1, packed::KC) / NR * NR).clamp(4 * NR, MAX_CHUNK);
        let mut chunks = pixels.div_ceil(widest).max(1);
        if images == 1 && chunks > 1 {
            chunks = chunks.next_multiple_of(threads);
        }
        let chunk = pixels.div_ceil(chunks).div_ceil(NR).max(1) * NR;
        let chunks = pixels.div_ceil(chunk).max(1);
        let (splits, per_split) = channel_splits(images * chunks, panels);
        Jobs {
            images,
            chunk,
            chunks,
            panels,
            splits,
            per_split,
        }
    }

    fn count(&self) -> usize {
        self.images * self.chunks
    }
}

/// Splits of `panels` row panels, and panels per split, so that `jobs` jobs
/// times the splits keep every thread busy (one split when the jobs do).
fn channel_splits(jobs: usize, panels: usize) -> (usize, usize) {
    let threads = rayon::current_num_threads();
    let splits = if jobs >= 2 * threads {
        1
    } else {
        (4 * threads).div_ceil(jobs.max(1)).min(panels).max(1)
    };
    let per_split = panels.div_ceil(splits).max(1);
    (panels.div_ceil(per_split).max(1), per_split)
}

/// Floats of one block of a chunk's packed taps (256 KiB, within the L2 cache).
const BLOCK_FLOATS: usize = 64 * 1024;
/// At most this many output pixels per chunk, so that large images still
/// split into several tasks.
const MAX_CHUNK: usize = 1024;

thread_local! {
    /// The zero-padded input of [`Product::direct`].
    static PADDED: RefCell<Vec<f32>> = RefCell::default();
    static SCRATCH: RefCell<Buffers> = RefCell::default();
}

/// Runs `f` with this thread's scratch memory `key`, kept from call to call
/// so that convolutions neither allocate nor zero their working buffers each
/// time (a fresh one when `f` is re-entered on the same thread).
fn with_local<T: Default, R>(key: &'static LocalKey<RefCell<T>>, f: impl FnOnce(&mut T) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut value) => f(&mut value),
        Err(_) => f(&mut T::default()),
    })
}

/// A thread's scratch memory for convolutions (see [`with_local`]).
#[derive(Default)]
struct Buffers {
    /// A [`Product::direct`] job's block of output.
    block: Vec<f32>,
    /// The product's `B` operand: the chunk's taps in column panels.
    panels: Vec<f32>,
    /// The chunk's input offsets per kernel tap.
    taps: TapOffsets,
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
    if xs[1] != wsh[1] * group || !wsh[0].is_multiple_of(group) {
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

/// Marks a padding position in [`TapOffsets`].
const PADDING: u32 = u32::MAX;

/// For a chunk of output pixels and each tap `(i, j)` of the kernel window:
/// the offset in an input plane that each pixel reads through the tap, or
/// [`PADDING`]. The same for every channel, so im2col becomes a gather.
#[derive(Default)]
struct TapOffsets {
    /// Tap `t`, pixel `p` (from the chunk's first) at `t·padded + p`;
    /// positions past the chunk are padding.
    offsets: Vec<u32>,
    /// Tap `t`, panel `j` at `t·panels + j`: the first offset when the panel's
    /// [`NR`] offsets are consecutive (a plain copy), else [`PADDING`].
    runs: Vec<u32>,
    /// Pixels per tap, whole panels.
    padded: usize,
}

impl TapOffsets {
    /// The offsets of output pixels `[t0, t0 + width)`.
    fn fill(&mut self, g: &Geometry, t0: usize, width: usize) {
        let padded = width.div_ceil(NR) * NR;
        self.padded = padded;
        self.offsets.clear();
        self.offsets.resize(g.kh * g.kw * padded, PADDING);
        for (t, offs) in self.offsets.chunks_exact_mut(padded.max(1)).enumerate() {
            let dy = (t / g.kw * g.dilation[0]) as isize - g.pad[0] as isize;
            let dx = (t % g.kw * g.dilation[1]) as isize - g.pad[1] as isize;
            // One output row at a time: the input row is fixed along it.
            let mut p = 0;
            while p < width {
                let (oy, ox0) = ((t0 + p) / g.ow, (t0 + p) % g.ow);
                let n = (g.ow - ox0).min(width - p);
                let segment = &mut offs[p..p + n];
                p += n;
                let iy = (oy * g.stride[0]) as isize + dy;
                if !(0..g.h as isize).contains(&iy) {
                    continue;
                }
                let row = iy as usize * g.w;
                for (e, o) in segment.iter_mut().enumerate() {
                    let ix = ((ox0 + e) * g.stride[1]) as isize + dx;
                    if (0..g.w as isize).contains(&ix) {
                        *o = (row + ix as usize) as u32;
                    }
                }
            }
        }
        self.runs.clear();
        self.runs.extend(self.offsets.chunks_exact(NR).map(|idx| {
            let first = idx[0];
            let run = first != PADDING && idx.iter().zip(first..).all(|(&i, want)| i == want);
            if run {
                first
            } else {
                PADDING
            }
        }));
    }

    /// Packs panel `jp` (`NR` output pixels, all taps) of the chunk's im2col
    /// matrix from `x` (the group's input planes): tap `(c, i, j)` of pixel
    /// `p` is plane `c` at offset `(i, j), p`, 0 in the padding; tap `k` of
    /// the panel is at `k·NR`.
    fn pack_panel(&self, x: &[f32], g: &Geometry, jp: usize, panel: &mut [f32]) {
        let window = g.kh * g.kw;
        let panels = self.padded / NR;
        let plane_len = g.h * g.w;
        if plane_len == 0 {
            // Empty input planes: every tap is padding.
            panel.fill(0.0);
            return;
        }
        let mut dst = panel.chunks_exact_mut(NR);
        for plane in x.chunks_exact(plane_len) {
            for (t, dst) in (0..window).zip(&mut dst) {
                let dst: &mut [f32; NR] = dst.try_into().expect("NR floats");
                match self.runs[t * panels + jp] {
                    PADDING => {
                        let idx = &self.offsets[t * self.padded + jp * NR..][..NR];
                        for (d, &i) in dst.iter_mut().zip(idx) {
                            *d = plane.get(i as usize).copied().unwrap_or(0.0);
                        }
                    }
                    first => *dst = plane[first as usize..][..NR].try_into().expect("NR floats"),
                }
            }
        }
    }
}
