//! Packed single-precision matrix products `C = A·B` for convolutions, with the
//! weights (`A`) packed once and the epilogue (accumulate, bias, residual,
//! activation) applied while each output tile is in registers.
//!
//! `A` is `M×K` (output channels × taps), packed into panels of [`MR`] rows.
//! `B` is `K×N` (taps × output pixels), read in tiles of [`NR`] columns: tap
//! `p` of a tile is the `NR` floats at `tile.b + offsets[p]`. Packed panels
//! (im2col writes them) have `offsets[p] = p·NR`; a stride-1 convolution can
//! instead point straight into its zero-padded input, where the offsets are
//! those of the kernel taps. One micro-kernel call computes an `MR×NR` tile
//! over a block of `K`.

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
pub(crate) use aarch64::clamp4;

use crate::kernels::spread::Spread;
use metal_mps_ir::{Activation, UnaryOp};
use rayon::prelude::*;

/// Rows of an `A` panel (output channels per tile).
pub const MR: usize = 6;
/// Columns of a `B` panel (output pixels per tile).
pub const NR: usize = 16;
/// Taps per block, at most: one `B` panel block (`KC·NR` floats) stays in L1.
pub const KC: usize = 256;
/// Bytes of `B` taps per block of column tiles (256 KiB): the block stays in
/// the L2 cache while the row panels pass over it, each panel sweeping every
/// tile of the block (so that it writes its rows of `C` in order, streams the
/// prefetcher follows, and reads its `A` panel from L1).
const NC_BYTES: usize = 256 << 10;

/// An `M×K` matrix in panels of [`MR`] rows: panel `i` holds rows
/// `i·MR..i·MR+MR` (zero past `M`), element `(row r, tap p)` at `p·MR + r`.
#[derive(Debug, Default)]
pub struct PackedLhs {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedLhs {
    /// Packs the row-major `m×k` matrix `a`.
    pub fn pack(a: &[f32], m: usize, k: usize) -> PackedLhs {
        assert!(a.len() >= m * k, "matrix smaller than {m}×{k}");
        let panels = m.div_ceil(MR);
        let mut data = vec![0.0; panels * MR * k];
        for (i, panel) in data.chunks_mut((MR * k).max(1)).enumerate().take(panels) {
            for r in 0..MR.min(m - i * MR) {
                let row = &a[(i * MR + r) * k..][..k];
                for (p, &v) in row.iter().enumerate() {
                    panel[p * MR + r] = v;
                }
            }
        }
        PackedLhs { m, k, data }
    }

    /// Repacks this matrix as `m×k`, reusing its memory: `fill(i, panel)`
    /// writes every element of panel `i` (`MR·k` floats, element `(row r, tap
    /// p)` at `p·MR + r`, rows past `m` zero). Panels are filled in parallel.
    pub fn fill_with(&mut self, m: usize, k: usize, fill: impl Fn(usize, &mut [f32]) + Sync) {
        let panels = m.div_ceil(MR);
        self.data.resize(panels * MR * k, 0.0);
        (self.m, self.k) = (m, k);
        self.data
            .par_chunks_exact_mut((MR * k).max(1))
            .enumerate()
            .spread()
            .for_each(|(i, panel)| fill(i, panel));
    }

    /// Panel `i` from tap `k0`.
    fn panel(&self, i: usize, k0: usize) -> &[f32] {
        &self.data[i * MR * self.k + k0 * MR..]
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// A `K×N` matrix in the layout of packed `B` panels: panel `j` holds
/// columns `j·NR..j·NR+NR` (zero past `N`), element `(tap p, column c)` at
/// `p·NR + c`.
#[derive(Debug)]
pub struct PackedRhs {
    n: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedRhs {
    /// Packs the row-major `k×n` matrix `b`.
    pub fn pack(b: &[f32], k: usize, n: usize) -> PackedRhs {
        assert!(b.len() >= k * n, "matrix smaller than {k}×{n}");
        let mut data = vec![0.0; n.div_ceil(NR) * NR * k];
        for (j, panel) in data.chunks_mut((NR * k).max(1)).enumerate() {
            let cols = NR.min(n - j * NR);
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                dst[..cols].copy_from_slice(&b[p * n + j * NR..][..cols]);
            }
        }
        PackedRhs { n, k, data }
    }

    /// Packs the transpose of the row-major `n×k` matrix `a`: row `c` of `a`
    /// becomes column `c`.
    pub fn pack_transposed(a: &[f32], n: usize, k: usize) -> PackedRhs {
        assert!(a.len() >= n * k, "matrix smaller than {n}×{k}");
        let mut data = vec![0.0; n.div_ceil(NR) * NR * k];
        for (j, panel) in data.chunks_mut((NR * k).max(1)).enumerate() {
            for c in 0..NR.min(n - j * NR) {
                let row = &a[(j * NR + c) * k..][..k];
                for (p, &v) in row.iter().enumerate() {
                    panel[p * NR + c] = v;
                }
            }
        }
        PackedRhs { n, k, data }
    }

    /// Column tiles `tiles` (of [`NR`] columns; the last may be partial),
    /// stored at their column offsets in `C`.
    pub fn tiles(&self, tiles: std::ops::Range<usize>) -> Vec<Columns> {
        tiles
            .map(|j| Columns {
                c: j * NR,
                len: NR.min(self.n - j * NR),
                b: self.data[j * NR * self.k..].as_ptr(),
            })
            .collect()
    }

    /// Column tiles in all.
    pub fn tile_count(&self) -> usize {
        self.n.div_ceil(NR)
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// What happens to a tile of `C` after its product over one block of taps.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    /// Bias per row of `C` (per output channel).
    pub bias: Option<&'a [f32]>,
    /// Added before the activation; indexed like `C` (same offset and row stride).
    pub residual: Option<*const f32>,
    pub activation: Activation,
}

impl Epilogue<'_> {
    /// The raw product: no bias, residual or activation.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        residual: None,
        activation: Activation::None,
    };
}

/// The parts of an epilogue that one tile applies, resolved for the tile's rows.
#[derive(Clone, Copy)]
pub(crate) struct TileOps {
    /// Add the product to what `C` holds (every block of taps after the first).
    pub accumulate: bool,
    /// The last block of taps: bias, residual and clamp follow.
    pub last: bool,
    /// `MR` biases (zeros where there is no bias).
    pub bias: [f32; MR],
    pub residual: *const f32,
    /// Clamp bounds: Relu and Clip-like activations fold into them.
    pub lo: f32,
    pub hi: f32,
}

/// Where a tile of `C` goes: `rows × cols` elements from `c`, rows `ldc` apart.
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    pub c: *mut f32,
    pub ldc: usize,
    pub rows: usize,
    pub cols: usize,
}

/// The micro-kernel: `C[0..rows, 0..cols] (+)= A-panel · B-tile` over `kc`
/// taps, then the epilogue. Tap `p` of the `B` tile is the `NR` floats at
/// `b + offsets[p]`, or at `b + p·NR` (a packed panel) when `offsets` is null.
///
/// # Safety
/// `a` holds `kc·MR` floats, `offsets` is null or holds `kc` offsets, and
/// each tap of `b` is readable for `NR` floats; `dest` (and `ops.residual` when not null, at
/// the same offsets) are valid for `rows` rows of `cols` elements, and
/// nothing else touches those elements of `C` during the call.
type TileFn = unsafe fn(usize, *const f32, *const f32, *const usize, &Dest, &TileOps);

/// [`TileFn`] on two column tiles at once (the same `A` panel, rows and
/// offsets; each tile its own `b`, destination and epilogue): each broadcast
/// of `A` feeds twice the multiply-adds.
///
/// # Safety
/// As [`TileFn`], for each tile.
type PairFn =
    unsafe fn(usize, *const f32, [*const f32; 2], *const usize, [&Dest; 2], [&TileOps; 2]);

/// [`PairFn`] on two row panels at once (the first of [`MR`] rows; `A`
/// panels `a[0]` and `a[1]`): destinations and epilogues in the order
/// (panel 0, tile 0), (panel 0, tile 1), (panel 1, tile 0), (panel 1, tile 1).
/// Each load of `B` feeds twice the multiply-adds of a pair.
///
/// # Safety
/// As [`TileFn`], for each panel and tile.
type QuadFn =
    unsafe fn(usize, [*const f32; 2], [*const f32; 2], *const usize, [&Dest; 4], [&TileOps; 4]);

/// The micro-kernels of one instruction set.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    #[cfg_attr(not(test), allow(dead_code))]
    pub name: &'static str,
    pub tile: TileFn,
    /// Where the registers hold two tiles' accumulators.
    pub pair: Option<PairFn>,
    /// Where they hold two row panels' by two tiles'.
    pub quad: Option<QuadFn>,
}

/// The fastest micro-kernels this CPU runs (see [`isa_cap`]).
fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = x86::kernel() {
        return k;
    }
    #[cfg(target_arch = "aarch64")]
    if let (true, Some(k)) = (isa_cap() != Some("portable"), aarch64::kernel()) {
        return k;
    }
    portable::KERNEL
}

/// The widest instruction set the kernels may use, from `METAL_MPS_CPU_ISA`
/// (`avx512`, `avx2`, `neon` or `portable`, read once; unset: whatever the
/// CPU has). For comparing the vector paths on one machine.
pub(crate) fn isa_cap() -> Option<&'static str> {
    static CAP: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CAP.get_or_init(|| {
        std::env::var("METAL_MPS_CPU_ISA")
            .ok()
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
    })
    .as_deref()
}

/// `NR` columns of `B` and where they go in `C`.
#[derive(Clone, Copy)]
pub struct Columns {
    /// Offset of the first column in `C` (row 0).
    pub c: usize,
    /// Columns stored (at most [`NR`]); the others are computed, never stored.
    pub len: usize,
    /// The columns' first tap (see [`multiply`]).
    pub b: *const f32,
}

// SAFETY: `b` is only read, from a buffer that outlives every product using it.
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

/// `C = epilogue(A · B)` for row panels `panels` and the column tiles `tiles`.
/// Tap `p` of a tile is at `tile.b + offsets[p]`, or at `tile.b + p·NR` (a
/// packed panel of `K·NR` floats) when `offsets` is `None`. `c` points at
/// element (row 0, column 0) of `C`, rows `ldc` apart.
///
/// # Safety
/// `offsets`, when given, has `K` entries; every tap of every tile is
/// readable for `NR` floats; `c` is valid for rows `panels.start·MR..min(panels.end·MR, M)`
/// and every tile's columns at row stride `ldc`, and no one else accesses
/// those elements during the call; `ep.residual`, when set, is valid for
/// reads at the same offsets.
pub unsafe fn multiply(
    a: &PackedLhs,
    panels: std::ops::Range<usize>,
    tiles: &[Columns],
    offsets: Option<&[usize]>,
    c: *mut f32,
    ldc: usize,
    ep: &Epilogue,
) {
    multiply_with(kernel(), a, panels, tiles, offsets, c, ldc, ep)
}

/// [`multiply`] with the given micro-kernels.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_with(
    kernel: Kernel,
    a: &PackedLhs,
    panels: std::ops::Range<usize>,
    tiles: &[Columns],
    offsets: Option<&[usize]>,
    c: *mut f32,
    ldc: usize,
    ep: &Epilogue,
) {
    assert!(offsets.is_none_or(|o| o.len() >= a.k), "B offsets too few");
    let (lo, hi, rest) = clamp_bounds(ep.activation);
    // Blocks of equal size: fewer passes over C than KC-sized blocks and a short last one.
    let block = a.k.div_ceil(a.k.div_ceil(KC).max(1)).max(1);
    let mut k0 = 0;
    loop {
        let kc = block.min(a.k - k0);
        let last = k0 + kc == a.k;
        // What each row panel's tiles apply, set once per block of taps.
        let ops: Vec<TileOps> = panels
            .clone()
            .map(|i| {
                let rows = MR.min(a.m - i * MR);
                let mut bias = [0.0; MR];
                if let (true, Some(bv)) = (last, ep.bias) {
                    bias[..rows].copy_from_slice(&bv[i * MR..][..rows]);
                }
                TileOps {
                    accumulate: k0 > 0,
                    last,
                    bias,
                    residual: std::ptr::null(),
                    lo,
                    hi,
                }
            })
            .collect();
        let block_offsets = offsets.map_or(std::ptr::null(), |o| o[k0..].as_ptr());
        // Per panel and tile: its block of taps (a packed panel's starts k0
        // taps in), destination and epilogue.
        let at = |i: usize, t: &Columns| {
            let b = if offsets.is_some() {
                t.b
            } else {
                t.b.add(k0 * NR)
            };
            let offset = i * MR * ldc + t.c;
            let residual = match (last, ep.residual) {
                (true, Some(r)) => r.add(offset),
                _ => std::ptr::null(),
            };
            let dest = Dest {
                c: c.add(offset),
                ldc,
                rows: MR.min(a.m - i * MR),
                cols: t.len,
            };
            let ops = &ops[i - panels.start];
            (b, dest, TileOps { residual, ..*ops })
        };
        // Panels `i` and, when `two`, `i + 1` times the tiles `pair`.
        let call = |i: usize, two: bool, pair: &[Columns]| {
            match (pair, kernel.quad) {
                ([t0, t1], Some(quad)) if two => {
                    let ap = a.panel(i, k0).as_ptr();
                    let ap1 = a.panel(i + 1, k0).as_ptr();
                    let (b0, d00, o00) = at(i, t0);
                    let (b1, d01, o01) = at(i, t1);
                    let ((_, d10, o10), (_, d11, o11)) = (at(i + 1, t0), at(i + 1, t1));
                    quad(
                        kc,
                        [ap, ap1],
                        [b0, b1],
                        block_offsets,
                        [&d00, &d01, &d10, &d11],
                        [&o00, &o01, &o10, &o11],
                    );
                }
                _ => {
                    for i in i..i + 1 + two as usize {
                        let ap = a.panel(i, k0).as_ptr();
                        match (pair, kernel.pair) {
                            ([t0, t1], Some(both)) => {
                                let ((b0, d0, o0), (b1, d1, o1)) = (at(i, t0), at(i, t1));
                                both(kc, ap, [b0, b1], block_offsets, [&d0, &d1], [&o0, &o1]);
                            }
                            _ => {
                                for t in pair {
                                    let (b, dest, ops) = at(i, t);
                                    (kernel.tile)(kc, ap, b, block_offsets, &dest, &ops);
                                }
                            }
                        }
                    }
                }
            }
            if let (true, Some(act)) = (last, rest) {
                for i in i..i + 1 + two as usize {
                    for t in pair {
                        let cp = c.add(i * MR * ldc + t.c);
                        for r in 0..MR.min(a.m - i * MR) {
                            let row = std::slice::from_raw_parts_mut(cp.add(r * ldc), t.len);
                            row.iter_mut().for_each(|v| *v = act.apply(*v));
                        }
                    }
                }
            }
        };
        let per_call = if kernel.pair.is_some() { 2 } else { 1 };
        // Tiles per block: an even count, so that the pairs stay pairs.
        let per_block = (NC_BYTES / (kc * NR * 4)).max(2) & !1;
        for block in tiles.chunks(per_block) {
            let mut i = panels.start;
            while i < panels.end {
                let two = kernel.quad.is_some() && i + 1 < panels.end;
                for pair in block.chunks(per_call) {
                    call(i, two, pair);
                }
                i += 1 + two as usize;
            }
        }
        k0 += kc;
        if k0 >= a.k {
            break;
        }
    }
}

/// An epilogue's activation on values already stored, as the micro-kernels
/// apply it (its clamp lets NaN through).
pub struct Finish {
    lo: f32,
    hi: f32,
    rest: Option<Activation>,
}

impl Finish {
    pub fn new(act: Activation) -> Finish {
        let (lo, hi, rest) = clamp_bounds(act);
        Finish { lo, hi, rest }
    }

    /// The clamp bounds when the activation is only a clamp (or none):
    /// monotonic, so that it commutes with taking a maximum.
    #[inline]
    pub fn clamp_only(&self) -> Option<(f32, f32)> {
        self.rest.is_none().then_some((self.lo, self.hi))
    }

    #[inline]
    pub fn apply(&self, values: &mut [f32]) {
        let (lo, hi) = (self.lo, self.hi);
        if lo > f32::NEG_INFINITY || hi < f32::INFINITY {
            values.iter_mut().for_each(|v| *v = clamp(*v, lo, hi));
        }
        match self.rest {
            None => {}
            // On its own, so that the loop vectorizes (for the widest vectors).
            Some(Activation::Unary(UnaryOp::Gelu)) => {
                super::vector::widest(super::vector::Update(metal_mps_ir::math::gelu_f32, values))
            }
            Some(act) => values.iter_mut().for_each(|v| *v = act.apply(*v)),
        }
    }
}

/// `v` within `[lo, hi]`; NaN passes through, as the unfused ops would pass it.
#[inline(always)]
pub(crate) fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// Clamp bounds that implement `act`, and the activation left to apply after
/// the clamp (for those that are not a clamp).
fn clamp_bounds(act: Activation) -> (f32, f32, Option<Activation>) {
    match act {
        Activation::None => (f32::NEG_INFINITY, f32::INFINITY, None),
        Activation::Unary(UnaryOp::Relu) => (0.0, f32::INFINITY, None),
        // `max` wins when the bounds cross, as in `UnaryOp::apply_f32`.
        Activation::Unary(UnaryOp::Clamp { min, max }) => (min.min(max), max, None),
        other => (f32::NEG_INFINITY, f32::INFINITY, Some(other)),
    }
}

/// The epilogue on a product tile held in `acc` (row-major `MR×NR`), for the
/// tiles the vector paths do not store themselves.
///
/// # Safety
/// As [`TileFn`].
pub(crate) unsafe fn store_tile(acc: &[f32; MR * NR], dest: &Dest, ops: &TileOps) {
    let Dest { c, ldc, rows, cols } = *dest;
    for r in 0..rows {
        let dst = std::slice::from_raw_parts_mut(c.add(r * ldc), cols);
        let src = &acc[r * NR..][..cols];
        for (j, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
            let mut v = s;
            if ops.accumulate {
                v += *d;
            }
            if ops.last {
                v += ops.bias[r];
                if !ops.residual.is_null() {
                    v += *ops.residual.add(r * ldc + j);
                }
                v = clamp(v, ops.lo, ops.hi);
            }
            *d = v;
        }
    }
}

#[cfg(test)]
mod tests;
