//! The AVX2/FMA micro-kernel: a 6×16 tile in twelve 8-wide registers.

use super::{store_tile, Dest, TileFn, TileOps, MR, NR};
use std::arch::x86_64::*;

/// The AVX2/FMA kernel when this CPU has both.
pub(super) fn tile_fn() -> Option<TileFn> {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some(tile)
    } else {
        None
    }
}

/// See [`super::TileFn`].
unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offsets: *const usize,
    dest: &Dest,
    ops: &TileOps,
) {
    tile_avx2(kc, a, b, offsets, dest, ops)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offsets: *const usize,
    dest: &Dest,
    ops: &TileOps,
) {
    let mut acc = [_mm256_setzero_ps(); 2 * MR];
    let packed = offsets.is_null();
    for p in 0..kc {
        let bp = if packed {
            b.add(p * NR)
        } else {
            b.add(*offsets.add(p))
        };
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        for r in 0..MR {
            let ar = _mm256_broadcast_ss(&*a.add(p * MR + r));
            acc[2 * r] = _mm256_fmadd_ps(ar, b0, acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_ps(ar, b1, acc[2 * r + 1]);
        }
    }
    let Dest { c, ldc, rows, cols } = *dest;
    if cols < NR {
        let mut tile = [0.0f32; MR * NR];
        for (r, v) in acc.iter().enumerate() {
            _mm256_storeu_ps(tile.as_mut_ptr().add(r * 8), *v);
        }
        store_tile(&tile, dest, ops);
        return;
    }
    let (lo, hi) = (_mm256_set1_ps(ops.lo), _mm256_set1_ps(ops.hi));
    for r in 0..rows {
        let row = c.add(r * ldc);
        let mut v = [acc[2 * r], acc[2 * r + 1]];
        for (h, v) in v.iter_mut().enumerate() {
            let at = row.add(8 * h);
            if ops.accumulate {
                *v = _mm256_add_ps(*v, _mm256_loadu_ps(at));
            }
            if ops.last {
                *v = _mm256_add_ps(*v, _mm256_set1_ps(ops.bias[r]));
                if !ops.residual.is_null() {
                    let res = ops.residual.add(r * ldc + 8 * h);
                    *v = _mm256_add_ps(*v, _mm256_loadu_ps(res));
                }
                // The value as the second operand: NaN passes through.
                *v = _mm256_min_ps(hi, _mm256_max_ps(lo, *v));
            }
            _mm256_storeu_ps(at, *v);
        }
    }
}
