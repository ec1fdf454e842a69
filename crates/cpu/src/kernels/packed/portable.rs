//! The micro-kernel in plain Rust, for CPUs without a vector path here.

use super::{store_tile, Dest, Kernel, TileOps, MR, NR};

pub(super) const KERNEL: Kernel = Kernel {
    name: "portable",
    tile,
    pair: None,
    quad: None,
};

/// See [`super::TileFn`].
pub(super) unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offsets: *const usize,
    dest: &Dest,
    ops: &TileOps,
) {
    let a = std::slice::from_raw_parts(a, kc * MR);
    let mut acc = [0.0f32; MR * NR];
    for (p, ap) in a.chunks_exact(MR).enumerate() {
        let off = if offsets.is_null() {
            p * NR
        } else {
            *offsets.add(p)
        };
        let bp = std::slice::from_raw_parts(b.add(off), NR);
        for (r, &av) in ap.iter().enumerate() {
            for (o, &bv) in acc[r * NR..][..NR].iter_mut().zip(bp) {
                *o = madd(av, bv, *o);
            }
        }
    }
    store_tile(&acc, dest, ops);
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
