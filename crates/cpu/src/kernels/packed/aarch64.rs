//! The NEON micro-kernel: a 6×16 tile in twenty-four 4-wide registers.

use super::{store_tile, Dest, Kernel, TileOps, MR, NR};
use std::arch::aarch64::*;

/// The NEON kernel when this CPU has NEON (every AArch64 CPU does; the check
/// mirrors the x86 one). Its 6×16 tile takes 24 of the 32 registers: no pairs.
pub(super) fn kernel() -> Option<Kernel> {
    std::arch::is_aarch64_feature_detected!("neon").then_some(Kernel {
        name: "neon",
        tile,
        pair: None,
        quad: None,
    })
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
    tile_neon(kc, a, b, offsets, dest, ops)
}

/// `v` within `[lo, hi]` lane by lane, as [`super::clamp`]: a lane below `lo`
/// becomes `lo`, one above `hi` becomes `hi`, and every other lane (NaN,
/// which compares false, and -0.0 against a bound of 0) passes unchanged.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) fn clamp4(v: float32x4_t, lo: float32x4_t, hi: float32x4_t) -> float32x4_t {
    let v = vbslq_f32(vcltq_f32(v, lo), lo, v);
    vbslq_f32(vcgtq_f32(v, hi), hi, v)
}

#[target_feature(enable = "neon")]
unsafe fn tile_neon(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offsets: *const usize,
    dest: &Dest,
    ops: &TileOps,
) {
    // acc[r][q]: row r, columns 4q..4q+4.
    let mut acc = [[vdupq_n_f32(0.0); NR / 4]; MR];
    let packed = offsets.is_null();
    for p in 0..kc {
        let bp = if packed {
            b.add(p * NR)
        } else {
            b.add(*offsets.add(p))
        };
        let bv = [
            vld1q_f32(bp),
            vld1q_f32(bp.add(4)),
            vld1q_f32(bp.add(8)),
            vld1q_f32(bp.add(12)),
        ];
        // Rows 0-3 in one register and rows 4-5 in a pair, so that the last
        // tap reads nothing past the panel's `kc·MR` floats.
        let ap = a.add(p * MR);
        let a03 = vld1q_f32(ap);
        let a45 = vld1_f32(ap.add(4));
        for (q, &bq) in bv.iter().enumerate() {
            acc[0][q] = vfmaq_laneq_f32::<0>(acc[0][q], bq, a03);
            acc[1][q] = vfmaq_laneq_f32::<1>(acc[1][q], bq, a03);
            acc[2][q] = vfmaq_laneq_f32::<2>(acc[2][q], bq, a03);
            acc[3][q] = vfmaq_laneq_f32::<3>(acc[3][q], bq, a03);
            acc[4][q] = vfmaq_lane_f32::<0>(acc[4][q], bq, a45);
            acc[5][q] = vfmaq_lane_f32::<1>(acc[5][q], bq, a45);
        }
    }
    let Dest { c, ldc, rows, cols } = *dest;
    if cols < NR {
        let mut tile = [0.0f32; MR * NR];
        for (r, row) in acc.iter().enumerate() {
            for (q, v) in row.iter().enumerate() {
                vst1q_f32(tile.as_mut_ptr().add(r * NR + 4 * q), *v);
            }
        }
        store_tile(&tile, dest, ops);
        return;
    }
    let (lo, hi) = (vdupq_n_f32(ops.lo), vdupq_n_f32(ops.hi));
    // Over the array itself (not indexed by a run-time row), so that the
    // accumulators stay in registers.
    for (r, row_acc) in acc.iter().enumerate().take(rows) {
        let row = c.add(r * ldc);
        let bias = vdupq_n_f32(ops.bias[r]);
        for (q, &v) in row_acc.iter().enumerate() {
            let at = row.add(4 * q);
            let mut v = v;
            // The same order of additions as `store_tile`.
            if ops.accumulate {
                v = vaddq_f32(v, vld1q_f32(at));
            }
            if ops.last {
                v = vaddq_f32(v, bias);
                if !ops.residual.is_null() {
                    v = vaddq_f32(v, vld1q_f32(ops.residual.add(r * ldc + 4 * q)));
                }
                v = clamp4(v, lo, hi);
            }
            vst1q_f32(at, v);
        }
    }
}
