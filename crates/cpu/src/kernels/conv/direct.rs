//! The direct path: no im2col, the product reads its taps from a zero-padded
//! copy of the input (split into phase planes when strided); a fused 2×2 max
//! pool is applied as each block of output rows is stored.

use super::pool2x2::{pool_bias_clamp, pool_pairs};
use super::{
    gather_phase, with_local, ChannelSplits, Geometry, Product, SharedOut, PADDED, SCRATCH,
};
use crate::kernels::packed::{self, Columns, Epilogue, NR};
use crate::kernels::spread::Spread;
use rayon::prelude::*;

/// Whether the direct path applies ([`Product::direct`]): padded rows whose
/// extra positions (computed, then dropped) are at most a quarter of them,
/// and either stride 1 with a window of several taps (im2col reads pointwise
/// convolutions straight from the input) or a strided convolution with few
/// output channels per group, whose im2col panels would serve few products
/// each (the ResNet stem). With many output channels, the packed panels'
/// contiguous taps make up for gathering them.
pub(super) fn direct_fits(g: &Geometry, group: usize) -> bool {
    let Some(layout) = PhasePlanes::new(g) else {
        return false;
    };
    // The padded copy must fit the tensor cap (a huge stride makes huge phase counts).
    let fits_memory = layout
        .floats(g.n * group, g.c / group)
        .and_then(|f| f.checked_mul(4))
        .is_some_and(|b| b <= metal_mps_ir::limits::max_tensor_bytes());
    let wp = layout.wp;
    let taps_fit = match g.stride {
        [1, 1] => g.kh * g.kw > 1,
        _ => g.m / group <= STRIDED_MAX_CHANNELS,
    };
    fits_memory && taps_fit && 3 * wp <= 4 * g.ow
}

/// Output channels per group up to which a strided convolution takes the
/// direct path (see [`direct_fits`]).
const STRIDED_MAX_CHANNELS: usize = 64;

/// The zero-padded input as the direct path lays it out. With stride `s`,
/// each channel's padded plane is split into `s×s` phase planes, phase
/// `(ry, rx)` holding padded positions `(s·i + ry, s·j + rx)`: tap `(y, x)`
/// of output pixel `(oy, ox)` is then element `(oy + y / s, ox + x / s)` of
/// phase `(y % s, x % s)`, so the taps of consecutive output pixels are
/// consecutive floats, as with stride 1 (one phase).
struct PhasePlanes {
    /// Rows and columns of a phase plane.
    hp: usize,
    wp: usize,
    /// Phase planes per input channel.
    phases: usize,
}

impl PhasePlanes {
    /// `None` when the layout's sizes overflow.
    fn new(g: &Geometry) -> Option<PhasePlanes> {
        let reach = |k: usize, d: usize, s: usize| (k - 1).checked_mul(d).map(|r| r / s);
        Some(PhasePlanes {
            hp: g.oh.checked_add(reach(g.kh, g.dilation[0], g.stride[0])?)?,
            wp: g.ow.checked_add(reach(g.kw, g.dilation[1], g.stride[1])?)?,
            phases: g.stride[0].checked_mul(g.stride[1])?,
        })
    }

    /// Floats of the padded copy of `images` images of `channels` channels
    /// (with the last tile's slack), `None` on overflow.
    fn floats(&self, images: usize, channels: usize) -> Option<usize> {
        images
            .checked_mul(channels)?
            .checked_mul(self.phases)?
            .checked_mul(self.hp.checked_mul(self.wp)?)?
            .checked_add(NR + self.wp)
    }

    /// Floats of one phase plane.
    fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Offset of tap `(c, i, j)` from its output position.
    fn tap(&self, g: &Geometry, c: usize, i: usize, j: usize) -> usize {
        let ([sy, sx], (y, x)) = (g.stride, (i * g.dilation[0], j * g.dilation[1]));
        let phase = c * sy * sx + y % sy * sx + x % sx;
        phase * self.plane() + y / sy * self.wp + x / sx
    }

    /// Writes phase `(ry, rx)` of input plane `src` (`h×w`) into `dst`.
    fn fill(&self, g: &Geometry, src: &[f32], (ry, rx): (usize, usize), dst: &mut [f32]) {
        let ([sy, sx], [py, px]) = (g.stride, g.pad);
        for (i, row) in dst.chunks_exact_mut(self.wp).enumerate() {
            match (sy * i + ry).checked_sub(py).filter(|&iy| iy < g.h) {
                Some(iy) => gather_phase(px, sx, rx, &src[iy * g.w..][..g.w], row),
                None => row.fill(0.0),
            }
        }
    }
}

impl Product<'_> {
    /// No im2col: the input is copied once with its zero padding into
    /// [`PhasePlanes`] of `hp×wp`, where output pixel `(oy, ox)` is computed
    /// at position `q = oy·wp + ox` and each tap of `NR` consecutive positions
    /// is `NR` consecutive floats at `q` plus the tap's offset.
    /// Where output rows fill whole tiles, each tile goes straight to the
    /// output; otherwise tiles run along whole padded rows, so the `wp − ow`
    /// positions past each row's end are computed too, into a block of
    /// scratch memory, and [`Product::store_block`] drops them.
    pub(super) fn direct(&self, dst: SharedOut) {
        let g = self.g;
        let cg = g.c / self.group;
        let layout = PhasePlanes::new(g).expect("checked by direct_fits");
        let (phases, wp, plane) = (layout.phases, layout.wp, layout.plane());
        let images = g.n * self.group;
        with_local(&PADDED, |padded| {
            // The last tile reads up to NR − 1 positions past the last row,
            // plus the taps' horizontal reach (less than wp).
            let len = images * cg * phases * plane + NR + wp;
            if padded.len() < len {
                padded.resize(len, 0.0);
            }
            let (planes, slack) = padded[..len].split_at_mut(images * cg * phases * plane);
            slack.fill(0.0);
            // Every element is written: the buffer holds an earlier call's data.
            planes
                .par_chunks_exact_mut(plane)
                .enumerate()
                .spread()
                .for_each(|(p, dst)| {
                    let (ic, phase) = (p / phases, p % phases);
                    let (image, c) = (ic / cg, ic % cg);
                    let src = &self.input(image / self.group, image % self.group)[c * g.h * g.w..];
                    let phase = (phase / g.stride[1], phase % g.stride[1]);
                    layout.fill(g, &src[..g.h * g.w], phase, dst);
                });
            self.direct_product(&padded[..len], &layout, dst);
        });
    }

    /// The products of [`Product::direct`] on the zero-padded input: jobs are
    /// runs of output rows of one image (and splits of the channels when
    /// they are few); each computes into a block of scratch memory, then
    /// stores the block's rows.
    fn direct_product(&self, padded: &[f32], layout: &PhasePlanes, dst: SharedOut) {
        let g = self.g;
        let (cg, mg) = (g.c / self.group, self.mg());
        let (wp, plane) = (layout.wp, layout.plane());
        let offsets: Vec<usize> = (0..cg)
            .flat_map(|c| {
                (0..g.kh).flat_map(move |i| (0..g.kw).map(move |j| layout.tap(g, c, i, j)))
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
        let splits = ChannelSplits::new(jobs, panels);
        (0..jobs * splits.count)
            .into_par_iter()
            .spread()
            .for_each(|t| {
                let (j, si) = (t / splits.count, t % splits.count);
                let (image, run) = (j / runs, j % runs);
                let oy = run * rows..((run + 1) * rows).min(oh);
                let panels = splits.range(si);
                let (n, gi) = (image / self.group, image % self.group);
                let base = padded[image * cg * layout.phases * plane..].as_ptr();
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
                    // SAFETY: the tiles' taps lie in `padded`; the block holds
                    // rows `..channels.end` of `ldc` columns, this task's alone.
                    unsafe {
                        packed::multiply(
                            &self.rows[gi],
                            panels,
                            &tiles,
                            Some(&offsets),
                            block.as_mut_ptr(),
                            ldc,
                            &Epilogue::NONE,
                        )
                    };
                    self.store_block(image, channels, oy, &block[..], wp, dst);
                });
            });
    }

    /// Stores output rows `oy` of channels `channels` of image·group `image`
    /// from a [`Product::direct`] block (rows `wp` wide, channel `ch` at
    /// `ch·ldc`), adding the bias and residual and applying the activation;
    /// with a fused pool, each pair of rows, once finished, is max-pooled
    /// into one row of the pooled planes.
    fn store_block(
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
        let finish = packed::Finish::new(self.activation);
        // Without a residual, max(a + bias, b + bias) = max(a, b) + bias.
        let pool_first = match self.pool && self.residual.is_none() {
            true => finish.clamp_only(),
            false => None,
        };
        let pair_len = if self.pool && pool_first.is_none() {
            2 * g.ow
        } else {
            0
        };
        let mut pair = vec![0f32; pair_len];
        for ch in channels {
            let plane = self.output_plane(image, ch);
            let src = |r: usize| &block[ch * ldc + r * wp..];
            if !self.pool {
                for (r, y) in oy.clone().enumerate() {
                    let at = plane + y * g.ow;
                    // SAFETY: this task alone writes these channels of these rows.
                    let out = unsafe { std::slice::from_raw_parts_mut(dst.at(at), g.ow) };
                    self.finish_row(image, ch, at, src(r), &finish, out);
                }
                continue;
            }
            for r in (0..oy.len()).step_by(2) {
                let y = oy.start + r;
                let at = plane / (g.oh * g.ow) * ph * pw + y / 2 * pw;
                // SAFETY: this task alone writes these channels of these rows.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.at(at), pw) };
                if let Some(bounds) = pool_first {
                    // A clamp is monotonic and the bias the same for all four:
                    // pool the raw sums, then finish a quarter of the values.
                    let (top, bottom) = (&src(r)[..g.ow], &src(r + 1)[..g.ow]);
                    pool_bias_clamp(
                        top,
                        bottom,
                        self.channel_bias(image % self.group, ch),
                        bounds,
                        out,
                    );
                    continue;
                }
                let (top, bottom) = pair.split_at_mut(g.ow);
                self.finish_row(image, ch, plane + y * g.ow, src(r), &finish, top);
                self.finish_row(
                    image,
                    ch,
                    plane + (y + 1) * g.ow,
                    src(r + 1),
                    &finish,
                    bottom,
                );
                pool_pairs(top, bottom, out);
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
    fn finish_row(
        &self,
        image: usize,
        ch: usize,
        at: usize,
        src: &[f32],
        finish: &packed::Finish,
        out: &mut [f32],
    ) {
        let bias = self.channel_bias(image % self.group, ch);
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
        finish.apply(out);
    }
}

/// Floats of a [`Product::direct`] job's block of output (128 KiB, within
/// the L2 cache with the weights and inputs it reads).
const DIRECT_BLOCK_FLOATS: usize = 32 * 1024;
/// Padded positions per [`Product::direct`] job, at least: 32 column tiles.
const DIRECT_MIN_POSITIONS: usize = 32 * NR;
