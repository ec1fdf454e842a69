//! The x86-64 micro-kernels: a tile of up to 6×16 in AVX2/FMA registers (two
//! 8-wide per row) or AVX-512 registers (one 16-wide per row, with the taps
//! split between two sets of accumulators so that twice as many FMAs are in
//! flight; and a pair of tiles, 6×32, where each broadcast of `A` feeds two
//! multiply-adds). Each is compiled for every row count, so that the last
//! panel of a matrix whose rows are not a multiple of [`MR`] (and a matrix of
//! one or two rows, as a MatMul of batch 1 has) does not pay for six.

use super::{store_tile, Dest, Kernel, TileOps, MR, NR};
use crate::kernels::vector::{avx2_allowed, avx512_allowed};
use std::arch::x86_64::*;

const AVX512: Kernel = Kernel {
    name: "avx512",
    tile: tile_avx512,
    pair: Some(pair_avx512),
    quad: Some(quad_avx512),
};

/// A 6×32 pair takes 24 accumulators: more than AVX2's 16 registers.
const AVX2: Kernel = Kernel {
    name: "avx2",
    tile: tile_avx2,
    pair: None,
    quad: None,
};

/// The widest kernels this CPU runs, unless `METAL_MPS_CPU_ISA` caps them
/// (`avx2`: no AVX-512; `portable`: neither).
pub(super) fn kernel() -> Option<Kernel> {
    if avx512_allowed() {
        return Some(AVX512);
    }
    if avx2_allowed() {
        return Some(AVX2);
    }
    None
}

/// Every kernel this CPU runs, whatever the cap (for tests).
#[cfg(test)]
pub(super) fn every_kernel() -> Vec<Kernel> {
    use crate::kernels::vector::{has_avx2, has_avx512};
    let mut all = Vec::new();
    if has_avx512() {
        all.push(AVX512);
    }
    if has_avx2() {
        all.push(AVX2);
    }
    all
}

/// See [`super::TileFn`].
unsafe fn tile_avx2(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offsets: *const usize,
    dest: &Dest,
    ops: &TileOps,
) {
    match dest.rows {
        1 => avx2::<1>(kc, a, b, offsets, dest, ops),
        2 => avx2::<2>(kc, a, b, offsets, dest, ops),
        3 => avx2::<3>(kc, a, b, offsets, dest, ops),
        4 => avx2::<4>(kc, a, b, offsets, dest, ops),
        5 => avx2::<5>(kc, a, b, offsets, dest, ops),
        _ => avx2::<MR>(kc, a, b, offsets, dest, ops),
    }
}

/// See [`super::TileFn`].
unsafe fn tile_avx512(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offsets: *const usize,
    dest: &Dest,
    ops: &TileOps,
) {
    match dest.rows {
        1 => avx512::<1>(kc, a, b, offsets, dest, ops),
        2 => avx512::<2>(kc, a, b, offsets, dest, ops),
        3 => avx512::<3>(kc, a, b, offsets, dest, ops),
        4 => avx512::<4>(kc, a, b, offsets, dest, ops),
        5 => avx512::<5>(kc, a, b, offsets, dest, ops),
        _ => avx512::<MR>(kc, a, b, offsets, dest, ops),
    }
}

/// See [`super::PairFn`].
unsafe fn pair_avx512(
    kc: usize,
    a: *const f32,
    b: [*const f32; 2],
    offsets: *const usize,
    dest: [&Dest; 2],
    ops: [&TileOps; 2],
) {
    match dest[0].rows {
        1 => avx512_tiles::<1, 2>(kc, a, b, offsets, dest, ops),
        2 => avx512_tiles::<2, 2>(kc, a, b, offsets, dest, ops),
        3 => avx512_tiles::<3, 2>(kc, a, b, offsets, dest, ops),
        4 => avx512_tiles::<4, 2>(kc, a, b, offsets, dest, ops),
        5 => avx512_tiles::<5, 2>(kc, a, b, offsets, dest, ops),
        _ => avx512_tiles::<MR, 2>(kc, a, b, offsets, dest, ops),
    }
}

/// See [`super::QuadFn`]: the first panel has [`MR`] rows, the second any.
unsafe fn quad_avx512(
    kc: usize,
    a: [*const f32; 2],
    b: [*const f32; 2],
    offsets: *const usize,
    dest: [&Dest; 4],
    ops: [&TileOps; 4],
) {
    match dest[2].rows {
        1 => avx512_quad::<1>(kc, a, b, offsets, dest, ops),
        2 => avx512_quad::<2>(kc, a, b, offsets, dest, ops),
        3 => avx512_quad::<3>(kc, a, b, offsets, dest, ops),
        4 => avx512_quad::<4>(kc, a, b, offsets, dest, ops),
        5 => avx512_quad::<5>(kc, a, b, offsets, dest, ops),
        _ => avx512_quad::<MR>(kc, a, b, offsets, dest, ops),
    }
}

/// Tap `p` of the `B` tile.
#[inline(always)]
unsafe fn tap(b: *const f32, offsets: *const usize, p: usize) -> *const f32 {
    if offsets.is_null() {
        b.add(p * NR)
    } else {
        b.add(*offsets.add(p))
    }
}

/// The first `R` rows of the tile (`R` ≤ `dest.rows`; rows past `R` are
/// neither computed nor stored, so `R` must equal `dest.rows`).
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offsets: *const usize,
    dest: &Dest,
    ops: &TileOps,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for p in 0..kc {
        let bp = tap(b, offsets, p);
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for (r, acc) in acc.iter_mut().enumerate() {
            let ar = _mm256_broadcast_ss(&*a.add(p * MR + r));
            acc[0] = _mm256_fmadd_ps(ar, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(ar, b1, acc[1]);
        }
    }
    let Dest { c, ldc, cols, .. } = *dest;
    if cols < NR {
        let mut tile = [0.0f32; MR * NR];
        for (r, v) in acc.iter().enumerate() {
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR), v[0]);
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * NR + 8), v[1]);
        }
        store_tile(&tile, dest, ops);
        return;
    }
    let (lo, hi) = (_mm256_set1_ps(ops.lo), _mm256_set1_ps(ops.hi));
    for (r, v) in acc.iter().enumerate() {
        let row = c.add(r * ldc);
        for (h, &v) in v.iter().enumerate() {
            let at = row.add(8 * h);
            let mut v = v;
            if ops.accumulate {
                v = _mm256_add_ps(v, _mm256_loadu_ps(at));
            }
            if ops.last {
                v = _mm256_add_ps(v, _mm256_set1_ps(ops.bias[r]));
                if !ops.residual.is_null() {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(ops.residual.add(r * ldc + 8 * h)));
                }
                // The value as the second operand: NaN passes through.
                v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
            }
            _mm256_storeu_ps(at, v);
        }
    }
}

/// As [`avx2`], one 16-wide register per row; even and odd taps go to two
/// sets of accumulators, added at the end.
#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offsets: *const usize,
    dest: &Dest,
    ops: &TileOps,
) {
    let mut even = [_mm512_setzero_ps(); R];
    let mut odd = [_mm512_setzero_ps(); R];
    let mut p = 0;
    while p + 1 < kc {
        let (b0, b1) = (
            _mm512_loadu_ps(tap(b, offsets, p)),
            _mm512_loadu_ps(tap(b, offsets, p + 1)),
        );
        for r in 0..R {
            let a0 = _mm512_set1_ps(*a.add(p * MR + r));
            let a1 = _mm512_set1_ps(*a.add((p + 1) * MR + r));
            even[r] = _mm512_fmadd_ps(a0, b0, even[r]);
            odd[r] = _mm512_fmadd_ps(a1, b1, odd[r]);
        }
        p += 2;
    }
    if p < kc {
        let b0 = _mm512_loadu_ps(tap(b, offsets, p));
        for (r, even) in even.iter_mut().enumerate() {
            *even = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(p * MR + r)), b0, *even);
        }
    }
    let mut acc = [_mm512_setzero_ps(); R];
    for r in 0..R {
        acc[r] = _mm512_add_ps(even[r], odd[r]);
    }
    store_avx512(&acc, dest, ops);
}

/// `T` tiles of `R` rows (`R` = the rows of every destination), one 16-wide
/// accumulator per row and tile.
// Indexed loops: the iterator form of the inner loop measured 11 % slower.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512_tiles<const R: usize, const T: usize>(
    kc: usize,
    a: *const f32,
    b: [*const f32; T],
    offsets: *const usize,
    dest: [&Dest; T],
    ops: [&TileOps; T],
) {
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    for p in 0..kc {
        let bv: [__m512; T] = std::array::from_fn(|t| _mm512_loadu_ps(tap(b[t], offsets, p)));
        for r in 0..R {
            let ar = _mm512_set1_ps(*a.add(p * MR + r));
            for t in 0..T {
                acc[t][r] = _mm512_fmadd_ps(ar, bv[t], acc[t][r]);
            }
        }
    }
    for t in 0..T {
        store_avx512(&acc[t], dest[t], ops[t]);
    }
}

/// Two row panels (the first of [`MR`] rows, the second of `R`) by two column
/// tiles: 24 accumulators at most, each load of `B` feeding up to twelve
/// multiply-adds and each broadcast of `A` two.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512_quad<const R: usize>(
    kc: usize,
    a: [*const f32; 2],
    b: [*const f32; 2],
    offsets: *const usize,
    dest: [&Dest; 4],
    ops: [&TileOps; 4],
) {
    let mut top = [[_mm512_setzero_ps(); MR]; 2];
    let mut bottom = [[_mm512_setzero_ps(); R]; 2];
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(tap(b[0], offsets, p));
        let b1 = _mm512_loadu_ps(tap(b[1], offsets, p));
        // The same tap of the next pair of tiles, which the next call reads
        // when the tiles are columns of one matrix (a pointwise convolution's
        // input planes): one stream per tap, more than the hardware prefetcher
        // follows. A hint only (and `wrapping_add`): it may point past `B`.
        _mm_prefetch::<_MM_HINT_T0>(tap(b[0], offsets, p).wrapping_add(2 * NR) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(tap(b[1], offsets, p).wrapping_add(2 * NR) as *const i8);
        for r in 0..MR {
            let ar = _mm512_set1_ps(*a[0].add(p * MR + r));
            top[0][r] = _mm512_fmadd_ps(ar, b0, top[0][r]);
            top[1][r] = _mm512_fmadd_ps(ar, b1, top[1][r]);
        }
        for r in 0..R {
            let ar = _mm512_set1_ps(*a[1].add(p * MR + r));
            bottom[0][r] = _mm512_fmadd_ps(ar, b0, bottom[0][r]);
            bottom[1][r] = _mm512_fmadd_ps(ar, b1, bottom[1][r]);
        }
    }
    store_avx512(&top[0], dest[0], ops[0]);
    store_avx512(&top[1], dest[1], ops[1]);
    store_avx512(&bottom[0], dest[2], ops[2]);
    store_avx512(&bottom[1], dest[3], ops[3]);
}

/// The epilogue on `R` rows of 16 accumulators, then the store.
#[target_feature(enable = "avx512f")]
unsafe fn store_avx512<const R: usize>(acc: &[__m512; R], dest: &Dest, ops: &TileOps) {
    let Dest { c, ldc, cols, .. } = *dest;
    if cols < NR {
        let mut tile = [0.0f32; MR * NR];
        for (r, &v) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), v);
        }
        store_tile(&tile, dest, ops);
        return;
    }
    let (lo, hi) = (_mm512_set1_ps(ops.lo), _mm512_set1_ps(ops.hi));
    for (r, &v) in acc.iter().enumerate() {
        let at = c.add(r * ldc);
        let mut v = v;
        if ops.accumulate {
            v = _mm512_add_ps(v, _mm512_loadu_ps(at));
        }
        if ops.last {
            v = _mm512_add_ps(v, _mm512_set1_ps(ops.bias[r]));
            if !ops.residual.is_null() {
                v = _mm512_add_ps(v, _mm512_loadu_ps(ops.residual.add(r * ldc)));
            }
            // The value as the second operand: NaN passes through.
            v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
        }
        _mm512_storeu_ps(at, v);
    }
}
