//! The micro-kernel in plain Rust, for CPUs without a vector path here.

use super::{store_tile, TileOps, MR, NR};

/// See [`super::TileFn`].
pub(super) unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    ops: &TileOps,
) {
    let a = std::slice::from_raw_parts(a, kc * MR);
    let b = std::slice::from_raw_parts(b, kc * NR);
    let mut acc = [0.0f32; MR * NR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (r, &av) in ap.iter().enumerate() {
            for (o, &bv) in acc[r * NR..][..NR].iter_mut().zip(bp) {
                *o = madd(av, bv, *o);
            }
        }
    }
    store_tile(&acc, c, ldc, rows, cols, ops);
}

/// `a·b + c`, fused where the target has a fused multiply-add instruction.
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(any(target_arch = "aarch64", target_feature = "fma")) {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}
