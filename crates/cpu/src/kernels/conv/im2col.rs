//! The im2col path: the input taps of a chunk of output pixels gathered into
//! the product's column panels (pointwise convolutions read their full tiles
//! straight from the input).

use super::{with_local, Buffers, ChannelSplits, Geometry, Product, SharedOut, SCRATCH};
use crate::kernels::packed::{self, Columns, NR};
use crate::kernels::spread::Spread;
use rayon::prelude::*;

impl Product<'_> {
    /// im2col into packed panels, then the product; see [`Jobs`]. A
    /// pointwise convolution (1×1, stride 1, no padding) reads its full tiles
    /// straight from the input, whose planes are the taps; only a partial
    /// last tile is packed.
    pub(super) fn packed(&self, dst: SharedOut) {
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
        if jobs.splits.count == 1 {
            (0..jobs.count()).into_par_iter().spread().for_each(|j| {
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
        // Few jobs: a batch of jobs is packed (all panels in parallel), then
        // every job's output channels are split among tasks, all the batch's
        // tasks in one parallel loop. A batch holds as many jobs as
        // BATCH_FLOATS of panels allow (all of them, but for wide layers).
        let job_floats = jobs.chunk.div_ceil(NR) * k * NR;
        let per_batch = (BATCH_FLOATS / job_floats.max(1)).max(1);
        with_local(&BATCH, |bufs| {
            for first in (0..jobs.count()).step_by(per_batch) {
                let batch = first..(first + per_batch).min(jobs.count());
                if bufs.len() < batch.len() {
                    bufs.resize_with(batch.len(), Buffers::default);
                }
                let bufs = &mut bufs[..batch.len()];
                bufs.par_iter_mut()
                    .zip(batch.clone())
                    .spread()
                    .for_each(|(buf, j)| {
                        let (n, gi, .., direct) = job(j);
                        prepare(j, buf);
                        let taps = &buf.taps;
                        buf.panels
                            .par_chunks_exact_mut(k * NR)
                            .enumerate()
                            .spread()
                            .for_each(|(q, panel)| {
                                taps.pack_panel(self.input(n, gi), g, direct + q, panel)
                            });
                    });
                let tiles: Vec<_> = batch
                    .clone()
                    .zip(bufs.iter())
                    .map(|(j, buf)| tiles(j, &buf.panels))
                    .collect();
                let splits = ChannelSplits::new(batch.len(), jobs.panels);
                (0..batch.len() * splits.count)
                    .into_par_iter()
                    .spread()
                    .for_each(|t| {
                        let (b, si) = (t / splits.count, t % splits.count);
                        run(batch.start + b, splits.range(si), &tiles[b]);
                    });
            }
        })
    }
}

/// How a convolution's output is divided among the threads: per image and
/// group, chunks of output pixels, and when those are too few, splits of the
/// output channels (panels of [`packed::MR`] rows).
struct Jobs {
    images: usize,
    chunk: usize,
    chunks: usize,
    panels: usize,
    splits: ChannelSplits,
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
        Jobs {
            images,
            chunk,
            chunks,
            panels,
            splits: ChannelSplits::new(images * chunks, panels),
        }
    }

    fn count(&self) -> usize {
        self.images * self.chunks
    }
}

/// Floats of packed taps that the few-jobs path of [`Product::packed`] packs
/// before multiplying (16 MiB): a batch of jobs, all of them but for layers
/// with wide windows over many channels.
const BATCH_FLOATS: usize = 4 << 20;

thread_local! {
    /// A batch's jobs' scratch memory in [`Product::packed`].
    static BATCH: std::cell::RefCell<Vec<Buffers>> = std::cell::RefCell::default();
}

/// Floats of one block of a chunk's packed taps (256 KiB, within the L2 cache).
const BLOCK_FLOATS: usize = 64 * 1024;
/// At most this many output pixels per chunk, so that large images still
/// split into several tasks.
const MAX_CHUNK: usize = 1024;

/// Marks a padding position in [`TapOffsets`].
pub(super) const PADDING: u32 = u32::MAX;

/// For a chunk of output pixels and each tap `(i, j)` of the kernel window:
/// the offset in an input plane that each pixel reads through the tap, or
/// [`PADDING`]. The same for every channel, so im2col becomes a gather.
#[derive(Default)]
pub(super) struct TapOffsets {
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
    pub(super) fn fill(&mut self, g: &Geometry, t0: usize, width: usize) {
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

    /// Where tap `t` of the chunk's pixel `p` reads in an input plane, or [`PADDING`].
    pub(super) fn offset(&self, t: usize, p: usize) -> u32 {
        self.offsets[t * self.padded + p]
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
