//! The pixel-major product, for outputs of few pixels: `Yᵀ = Xᵀ·Wᵀ`, with
//! the output pixels (of every image) as the row panels of `A`, im2col of the
//! input packed per call, and the output channels as column tiles of `B`,
//! the weights packed once ([`PackedRhs`]). A 7×7 output then fills nine
//! panels of six pixels (54 rows for 49) where column tiles of sixteen
//! pixels would compute 64 columns for 49.

use super::{with_local, Product, SharedOut, TapOffsets, PADDING};
use crate::kernels::packed::{self, Epilogue, Finish, PackedLhs, PackedRhs, MR, NR};
use crate::kernels::spread::Spread;
use rayon::prelude::*;
use std::cell::RefCell;

/// Whether weights go to the pixel-major product: output planes of fewer
/// than `4·NR` pixels (when known before running), enough output channels
/// per group for every thread to take column tiles, and no fused pool.
pub(super) fn pixel_major_fits(pixels: Option<usize>, mg: usize, pool: bool) -> bool {
    pixels.is_some_and(|p| (1..4 * NR).contains(&p)) && mg >= 4 * NR && !pool
}

/// Floats between rows of the product `Yᵀ`: the channels and one more
/// cache line, so that a column's rows do not all fall in one cache set (as
/// rows a multiple of 4 KiB apart would).
fn product_stride(mg: usize) -> usize {
    mg.next_multiple_of(NR) + NR
}

/// A thread's memory for the pixel-major product, kept from call to call.
#[derive(Default)]
struct Scratch {
    /// im2col of the input, pixels in row panels.
    lhs: PackedLhs,
    /// The product `Yᵀ`: one row per output pixel, one column per channel.
    product: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

impl Product<'_> {
    /// See the module documentation; `columns` holds each group's packed
    /// weights. Tasks take runs of column tiles (output channels), multiply,
    /// then store their channels with the bias, residual and activation.
    pub(super) fn pixel_major(&self, columns: &[PackedRhs], dst: SharedOut) {
        let g = self.g;
        let (mg, ohw) = (self.mg(), g.oh * g.ow);
        let ldc = product_stride(mg);
        let (rows, window, plane) = (g.n * ohw, g.kh * g.kw, g.h * g.w);
        let mut taps = TapOffsets::default();
        taps.fill(g, 0, ohw);
        with_local(&SCRATCH, |scratch| {
            let Scratch { lhs, product } = scratch;
            if product.len() < rows * ldc {
                product.resize(rows * ldc, 0.0);
            }
            let out_t = SharedOut(product.as_mut_ptr());
            for (gi, rhs) in columns.iter().enumerate() {
                lhs.fill_with(rows, self.k, |i, panel| {
                    // Per row of the panel: its image's input and, per tap,
                    // where the row's pixel reads (PADDING past the last row).
                    let mut inputs: [&[f32]; MR] = [&[]; MR];
                    let mut offsets = vec![PADDING; window * MR];
                    for (r, input) in inputs.iter_mut().enumerate() {
                        let row = i * MR + r;
                        if row < rows && plane > 0 {
                            *input = self.input(row / ohw, gi);
                            for t in 0..window {
                                offsets[t * MR + r] = taps.offset(t, row % ohw);
                            }
                        }
                    }
                    for (c, panel) in panel.chunks_exact_mut(window * MR).enumerate() {
                        for (dst, offs) in panel.chunks_exact_mut(MR).zip(offsets.chunks_exact(MR))
                        {
                            for ((d, &off), x) in dst.iter_mut().zip(offs).zip(inputs) {
                                *d = match off {
                                    PADDING => 0.0,
                                    off => x[c * plane + off as usize],
                                };
                            }
                        }
                    }
                });
                let lhs = &*lhs;
                let tiles = rhs.tile_count();
                let tasks = (4 * rayon::current_num_threads()).min(tiles);
                (0..tasks).into_par_iter().spread().for_each(|task| {
                    let tiles = task * tiles / tasks..(task + 1) * tiles / tasks;
                    let channels = tiles.start * NR..(tiles.end * NR).min(mg);
                    // SAFETY: the panels hold `rows` rows of `self.k` taps;
                    // this task alone writes (then reads) these columns of
                    // the product, `ldc` floats per row.
                    unsafe {
                        packed::multiply(
                            lhs,
                            0..rows.div_ceil(MR),
                            &rhs.tiles(tiles),
                            None,
                            out_t.at(0),
                            ldc,
                            &Epilogue::NONE,
                        );
                        self.store_columns(gi, channels, out_t, dst);
                    }
                });
            }
        });
    }

    /// Stores channels `channels` of group `gi` from the product `Yᵀ` (rows
    /// [`product_stride`] apart) into the output planes, adding the bias and residual
    /// and applying the activation.
    ///
    /// # Safety
    /// The product's columns `channels` are complete and read by this call
    /// alone; no one else writes those output channels meanwhile.
    unsafe fn store_columns(
        &self,
        gi: usize,
        channels: std::ops::Range<usize>,
        product: SharedOut,
        dst: SharedOut,
    ) {
        let (g, mg) = (self.g, self.mg());
        let (ohw, ldc) = (g.oh * g.ow, product_stride(mg));
        let finish = Finish::new(self.activation);
        for ch in channels {
            let bias = self.channel_bias(gi, ch);
            for n in 0..g.n {
                let at = (n * g.m + gi * mg + ch) * ohw;
                let out = std::slice::from_raw_parts_mut(dst.at(at), ohw);
                for (p, o) in out.iter_mut().enumerate() {
                    *o = *product.at((n * ohw + p) * ldc + ch) + bias;
                }
                if let Some(res) = self.residual {
                    out.iter_mut().zip(&res[at..]).for_each(|(o, &r)| *o += r);
                }
                finish.apply(out);
            }
        }
    }
}
