//! Depthwise convolutions (one input channel per group, `M = mult·C` output
//! channels), 1-D and 2-D: each output channel reads a single input plane, so
//! a matrix product would get one-row matrices. Here each image's input plane
//! is copied once, zero-padded and split into its stride phases (for stride
//! `s`, the columns `p, p+s, p+2s...` of the padded input become phase `p`, and
//! the same for rows), so that every kernel tap of every output pixel reads
//! contiguous memory at a fixed offset: output pixel `(oy, ox)` of the plane
//! laid out with the phase row length `Q` is element `oy·Q + ox` of a flat
//! run, and tap `t` adds `w[t]·src[oy·Q + ox + offset[t]]`. The run is computed
//! in chunks of `CH` outputs held in registers over all taps (loops the
//! compiler vectorizes; compiled for AVX-512 and AVX2/FMA when this CPU has
//! them), the `Q - ow` columns past each row's end are computed and dropped,
//! and the bias, residual and activation are applied as the rows are stored
//! (short rows: once they are all stored, over the whole plane), with the
//! packed product's epilogue semantics ([`Finish`]). Planes of the
//! same input channel share the padded copy; rayon spreads the input planes.
//! The padding is the same for every plane of a geometry: a thread writes its
//! zeros once, then copies each plane's elements over the rest.

use super::pool2x2::pool_pairs;
use super::{copy_phase, with_local, Geometry, Product};
use crate::kernels::packed::{clamp, Finish};
use crate::kernels::spread::Spread;
use crate::kernels::vector::{widest, Loop};
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    /// A plane's padded phases, its flat output run (see the module doc), and
    /// the geometry whose padding the phases hold.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Option<Padding>)> = RefCell::default();
}

/// What decides which elements of the phase planes are padding: planes of one
/// geometry share their zeros, written once ([`Layout::fill`] writes the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Padding {
    input: [usize; 2],
    pad: [usize; 2],
    stride: [usize; 2],
    rows: usize,
    cols: usize,
    row_phases: Vec<usize>,
    col_phases: Vec<usize>,
}

/// Where the taps of a depthwise convolution read, for one geometry.
pub(super) struct Layout {
    /// Rows and columns of each phase plane.
    rows: usize,
    cols: usize,
    /// The row and column phases that some tap reads, in order.
    row_phases: Vec<usize>,
    col_phases: Vec<usize>,
    /// Offset of tap `ky·kW + kx` from its output pixel in the phase planes.
    offsets: Vec<usize>,
    /// Elements of the flat output run: `(oh - 1)·cols + ow`.
    flat: usize,
    /// The largest offset.
    reach: usize,
}

/// Outputs a chunk holds in registers, by vector width: eight independent
/// accumulators keep both FMA pipes busy. The flat run is computed in whole
/// chunks of [`CH_AVX512`] (a multiple of the others): a partial last chunk
/// costs no more than a short one, whose taps wait on each other.
const CH_AVX512: usize = 128;
const CH_AVX2: usize = 64;

impl Layout {
    /// The layout of `g`, or `None` when the padded phases would be much
    /// larger than the input and output planes together (a window with huge
    /// pads or dilation: the matrix product handles those).
    pub(super) fn new(g: &Geometry) -> Option<Layout> {
        if g.oh == 0 || g.ow == 0 || g.kh == 0 || g.kw == 0 {
            return None;
        }
        let [sh, sw] = g.stride;
        let [dh, dw] = g.dilation;
        let rows = g.oh.checked_add((g.kh - 1).checked_mul(dh)? / sh)?;
        let cols = g.ow.checked_add((g.kw - 1).checked_mul(dw)? / sw)?;
        let phases = |k: usize, d: usize, s: usize| {
            let mut p: Vec<usize> = (0..k.min(s)).map(|t| t * d % s).collect();
            // `t·d mod s` repeats with period at most `s`: later taps add nothing new.
            p.sort_unstable();
            p.dedup();
            p
        };
        let (row_phases, col_phases) = (phases(g.kh, dh, sh), phases(g.kw, dw, sw));
        let planes = row_phases.len() * col_phases.len();
        let size = planes.checked_mul(rows)?.checked_mul(cols)?;
        let budget = (g.h * g.w).checked_add(g.oh * g.ow)?.checked_mul(4)?;
        if size > budget.max(1 << 16) {
            return None;
        }
        let mut offsets = Vec::with_capacity(g.kh * g.kw);
        for ky in 0..g.kh {
            let (ry, qy) = ((ky * dh) % sh, (ky * dh) / sh);
            let pr = row_phases.iter().position(|&p| p == ry)?;
            for kx in 0..g.kw {
                let (rx, qx) = ((kx * dw) % sw, (kx * dw) / sw);
                let pc = col_phases.iter().position(|&p| p == rx)?;
                let plane = pr * col_phases.len() + pc;
                offsets.push((plane * rows + qy) * cols + qx);
            }
        }
        let reach = offsets.iter().copied().max().unwrap_or(0);
        Some(Layout {
            reach,
            rows,
            cols,
            row_phases,
            col_phases,
            offsets,
            flat: (g.oh - 1) * cols + g.ow,
        })
    }

    /// Elements of the phase planes.
    fn size(&self) -> usize {
        self.row_phases.len() * self.col_phases.len() * self.rows * self.cols
    }

    fn padding(&self, g: &Geometry) -> Padding {
        Padding {
            input: [g.h, g.w],
            pad: [g.pad[0], g.pad[1]],
            stride: g.stride,
            rows: self.rows,
            cols: self.cols,
            row_phases: self.row_phases.clone(),
            col_phases: self.col_phases.clone(),
        }
    }

    /// Copies input plane `x` (`h×w`) into `dst` as padded phase planes,
    /// whose padding already holds zeros.
    #[inline(always)]
    fn fill(&self, g: &Geometry, x: &[f32], dst: &mut [f32]) {
        let [sh, sw] = g.stride;
        let pt = g.pad[0];
        let (plane, cols) = (self.rows * self.cols, self.cols);
        let both_columns = sw == 2 && self.col_phases == [0, 1];
        for (pr, &ry) in self.row_phases.iter().enumerate() {
            let first_plane = pr * self.col_phases.len();
            for r in 0..self.rows {
                let at = |pc: usize| (first_plane + pc) * plane + r * cols;
                // Padded row `r·sh + ry` is input row `r·sh + ry - pt`.
                let src = (r * sh + ry)
                    .checked_sub(pt)
                    .filter(|&iy| iy < g.h)
                    .map(|iy| &x[iy * g.w..][..g.w]);
                match src {
                    None => {}
                    Some(src) if both_columns => {
                        let (a, b) = dst.split_at_mut(at(1));
                        split_pairs(g.pad[1], src, &mut a[at(0)..][..cols], &mut b[..cols]);
                    }
                    Some(src) => {
                        for (pc, &rx) in self.col_phases.iter().enumerate() {
                            let row = &mut dst[at(pc)..][..cols];
                            copy_phase(g.pad[1], sw, rx, src, row);
                        }
                    }
                }
            }
        }
    }
}

/// Both column phases of stride 2 at once (one pass over `src`, pairs
/// deinterleaved): as [`copy_phase`] for phases 0 and 1.
#[inline(always)]
fn split_pairs(pl: usize, src: &[f32], phase0: &mut [f32], phase1: &mut [f32]) {
    // Input column `ix` is padded column `ix + pl`: phase `(ix + pl) % 2`,
    // position `(ix + pl) / 2`. Even input columns go to one phase, odd
    // ones to the other.
    let (even, odd) = if pl.is_multiple_of(2) {
        (phase0, phase1)
    } else {
        (phase1, phase0)
    };
    let cols = even.len();
    let (e0, o0) = (pl / 2, pl.div_ceil(2));
    let evens = src.len().div_ceil(2).min(cols.saturating_sub(e0));
    let odds = (src.len() / 2).min(cols.saturating_sub(o0));
    let pairs = evens.min(odds);
    let (ev, od) = (&mut even[e0.min(cols)..], &mut odd[o0.min(cols)..]);
    for ((pair, e), o) in src
        .chunks_exact(2)
        .zip(&mut ev[..pairs])
        .zip(&mut od[..pairs])
    {
        *e = pair[0];
        *o = pair[1];
    }
    for k in pairs..evens {
        ev[k] = src[2 * k];
    }
    for k in pairs..odds {
        od[k] = src[2 * k + 1];
    }
}

/// The depthwise convolution of `conv` with weights `w` (`[M, kH·kW]` as in
/// the model) into `y` (the output, pooled when `conv.pool`).
pub(super) fn depthwise(conv: &Product, layout: &Layout, w: &[f32], y: &mut [f32]) {
    let g = conv.g;
    if conv.pool {
        let ohw = g.oh * g.ow;
        let mut full = vec![0f32; g.n * g.m * ohw];
        depthwise(
            &Product {
                pool: false,
                ..*conv
            },
            layout,
            w,
            &mut full,
        );
        let (pw, ph) = (g.ow / 2, g.oh / 2);
        for (plane, out) in full.chunks_exact(ohw).zip(y.chunks_exact_mut(ph * pw)) {
            for (py, out) in out.chunks_exact_mut(pw.max(1)).enumerate() {
                let rows = &plane[2 * py * g.ow..][..2 * g.ow];
                pool_pairs(&rows[..g.ow], &rows[g.ow..], out);
            }
        }
        return;
    }
    let mult = g.m / g.c;
    let (khw, ohw) = (g.kh * g.kw, g.oh * g.ow);
    let channel = channel_fn();
    let finish = Finish::new(conv.activation);
    let padding = layout.padding(g);
    // Channels below `lanes` go 16 at a time to the lanes kernel.
    #[cfg(target_arch = "x86_64")]
    let lanes = {
        use super::depthwise_lanes::{channels, fits, LANES};
        use super::SharedOut;
        // Fewer tasks than twice the threads would leave threads idle that
        // the planes keep busy.
        let tasks = g.n * (g.c / LANES);
        let lanes =
            match fits(g, conv.residual.is_some()) && tasks >= 2 * rayon::current_num_threads() {
                true => g.c / LANES * LANES,
                false => 0,
            };
        let (groups, out) = (lanes / LANES, SharedOut(y.as_mut_ptr()));
        (0..g.n * groups).into_par_iter().spread().for_each(|task| {
            let (n, c0) = (task / groups, task % groups * LANES);
            // SAFETY: `fits` held; each task writes its own 16 planes of `y`.
            unsafe { channels(g, conv.x, w, conv.bias, &finish, n, c0, out.at(0)) }
        });
        lanes
    };
    #[cfg(not(target_arch = "x86_64"))]
    let lanes = 0;
    if lanes == g.c {
        return;
    }
    y.par_chunks_mut(mult * ohw)
        .enumerate()
        .spread()
        .filter(|(plane, _)| plane % g.c >= lanes)
        .for_each(|(plane, out)| {
            let (n, c) = (plane / g.c, plane % g.c);
            let x = &conv.x[plane * g.h * g.w..][..g.h * g.w];
            with_local(&SCRATCH, |(src, flat, padded)| {
                // Room for the last chunk's reads and writes past the run.
                let run = layout.flat.next_multiple_of(CH_AVX512);
                let size = layout.size().max(run + layout.reach);
                if padded.as_ref() != Some(&padding) || src.len() < size {
                    src.clear();
                    src.resize(size, 0.0);
                    *padded = Some(padding.clone());
                }
                flat.resize(run, 0.0);
                widest(Fill {
                    layout,
                    g,
                    x,
                    dst: src,
                });
                for (j, out) in out.chunks_exact_mut(ohw).enumerate() {
                    let m = c * mult + j;
                    let job = Channel {
                        src,
                        offsets: &layout.offsets,
                        w: &w[m * khw..][..khw],
                        flat,
                        cols: layout.cols,
                        out,
                        ow: g.ow,
                        bias: conv.bias.map_or(0.0, |b| b[m]),
                        residual: conv.residual.map(|r| &r[(n * g.m + m) * ohw..][..ohw]),
                        finish: &finish,
                    };
                    // SAFETY: `src` holds every tap of every chunk of `flat`
                    // (both sized above), `flat` a whole number of chunks.
                    unsafe { channel(job) };
                }
            })
        });
}

/// [`Layout::fill`], compiled for the widest vectors (its rows are short
/// copies and, with stride 2, deinterleaving).
struct Fill<'a> {
    layout: &'a Layout,
    g: &'a Geometry,
    x: &'a [f32],
    dst: &'a mut [f32],
}

impl Loop for Fill<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        self.layout.fill(self.g, self.x, self.dst)
    }
}

/// One output channel of a plane: its sums over the taps, then the rows
/// stored with the epilogue.
struct Channel<'a> {
    /// The padded phase planes.
    src: &'a [f32],
    offsets: &'a [usize],
    /// The channel's weight per tap.
    w: &'a [f32],
    /// The flat run of sums (a whole number of [`CH_AVX512`] chunks): element
    /// `f` is the sum over taps `t` of `w[t]·src[f + offsets[t]]`.
    flat: &'a mut [f32],
    /// Row length of the flat run.
    cols: usize,
    /// The output plane, rows of `ow` elements.
    out: &'a mut [f32],
    ow: usize,
    bias: f32,
    /// The residual plane, indexed as `out`.
    residual: Option<&'a [f32]>,
    finish: &'a Finish,
}

/// Computes a [`Channel`].
///
/// # Safety
/// `src` has at least `flat.len() + offsets[t]` elements for every tap `t`
/// (the chunks read it without bounds checks in release builds).
type ChannelFn = unsafe fn(Channel);

/// The fastest [`ChannelFn`] this CPU runs, within `METAL_MPS_CPU_ISA`.
fn channel_fn() -> ChannelFn {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::vector::{avx2_allowed, avx512_allowed};
        if avx512_allowed() {
            return channel_avx512;
        }
        if avx2_allowed() {
            return channel_avx2;
        }
    }
    channel_portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn channel_avx512(job: Channel) {
    channel::<CH_AVX512, true>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn channel_avx2(job: Channel) {
    channel::<CH_AVX2, true>(job)
}

unsafe fn channel_portable(job: Channel) {
    channel::<CH_AVX2, { cfg!(any(target_arch = "aarch64", target_feature = "fma")) }>(job)
}

/// [`ChannelFn`] with the sums in chunks of `CH` outputs; `FMA`: fused
/// multiply-adds (only where the function is compiled with them).
#[inline(always)]
unsafe fn channel<const CH: usize, const FMA: bool>(job: Channel) {
    let Channel {
        src,
        offsets,
        w,
        flat,
        cols,
        out,
        ow,
        bias,
        residual,
        finish,
    } = job;
    debug_assert!(flat.len().is_multiple_of(CH));
    for (i, chunk) in flat.chunks_exact_mut(CH).enumerate() {
        let f = i * CH;
        let mut acc = [0f32; CH];
        for (&o, &wt) in offsets.iter().zip(w) {
            debug_assert!(f + o + CH <= src.len());
            let s = src.as_ptr().add(f + o);
            for (j, a) in acc.iter_mut().enumerate() {
                let v = *s.add(j);
                *a = if FMA { wt.mul_add(v, *a) } else { wt * v + *a };
            }
        }
        chunk.copy_from_slice(&acc);
    }
    // The packed product's epilogue, `activation(sum + bias + residual)`,
    // with a clamp (Relu, Clip) in the same pass and other activations
    // through [`Finish`]. Long rows are finished as they are stored; short
    // ones are stored first, then finished in one pass over the contiguous
    // plane, which vectorizes where a row would not.
    let (lo, hi) = finish
        .clamp_only()
        .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let add = |d: &mut [f32], sums: &[f32], r: Option<&[f32]>| match r {
        Some(r) => {
            for ((d, &s), &r) in d.iter_mut().zip(sums).zip(r) {
                *d = clamp(s + bias + r, lo, hi);
            }
        }
        None => {
            for (d, &s) in d.iter_mut().zip(sums) {
                *d = clamp(s + bias, lo, hi);
            }
        }
    };
    if ow >= SHORT_ROW {
        for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
            add(
                row,
                &flat[oy * cols..][..ow],
                residual.map(|r| &r[oy * ow..][..ow]),
            );
        }
    } else {
        for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
            row.copy_from_slice(&flat[oy * cols..][..ow]);
        }
        match residual {
            Some(r) => {
                for (d, &r) in out.iter_mut().zip(r) {
                    *d = clamp(*d + bias + r, lo, hi);
                }
            }
            None => out.iter_mut().for_each(|d| *d = clamp(*d + bias, lo, hi)),
        }
    }
    if finish.clamp_only().is_none() {
        finish.apply(out);
    }
}

/// Rows shorter than this are finished in one pass over the whole plane
/// (see [`channel`]).
const SHORT_ROW: usize = 32;

/// Whether a convolution with weight shape `w` and `group` groups is depthwise (one input channel per group, several groups).
pub(super) fn is_depthwise(w: &[usize], group: usize) -> bool {
    w.len() >= 3 && w.len() <= 4 && w[1] == 1 && group > 1 && w[0].is_multiple_of(group)
}
