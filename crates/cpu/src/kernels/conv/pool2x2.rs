//! The 2×2, stride-2 max pool fused into a convolution, over pairs of its
//! output rows.

use crate::kernels::packed::clamp;
use crate::kernels::pool::max_nan;

/// `out[i] = max(top[2i], top[2i+1], bottom[2i], bottom[2i+1])`, NaN when any is.
pub(super) fn pool_pairs(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
    for (o, (t, b)) in out.iter_mut().zip(pairs) {
        *o = max_nan(max_nan(t[0], t[1]), max_nan(b[0], b[1]));
    }
}

/// `out[i] = clamp(max(top[2i], top[2i+1], bottom[2i], bottom[2i+1]) + bias, lo, hi)`:
/// the pool of raw sums, finished after (the clamp lets NaN through).
pub(super) fn pool_bias_clamp(
    top: &[f32],
    bottom: &[f32],
    bias: f32,
    (lo, hi): (f32, f32),
    out: &mut [f32],
) {
    let n = out.len().min(top.len() / 2).min(bottom.len() / 2);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && crate::kernels::packed::isa_cap() != Some("portable") {
        // SAFETY: the CPU has AVX2.
        done = unsafe {
            x86::pool_bias_clamp(
                &top[..2 * n],
                &bottom[..2 * n],
                bias,
                (lo, hi),
                &mut out[..n],
            )
        };
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon")
        && crate::kernels::packed::isa_cap() != Some("portable")
    {
        // SAFETY: the CPU has NEON.
        done = unsafe {
            aarch64::pool_bias_clamp(
                &top[..2 * n],
                &bottom[..2 * n],
                bias,
                (lo, hi),
                &mut out[..n],
            )
        };
    }
    pool_pairs(
        &top[2 * done..2 * n],
        &bottom[2 * done..2 * n],
        &mut out[done..n],
    );
    for v in &mut out[done..n] {
        *v = clamp(*v + bias, lo, hi);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::pool_bias_clamp`] on whole blocks of 8 outputs; returns how
    /// many outputs it wrote (`top` and `bottom` hold `2·out.len()` floats).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pool_bias_clamp(
        top: &[f32],
        bottom: &[f32],
        bias: f32,
        (lo, hi): (f32, f32),
        out: &mut [f32],
    ) -> usize {
        // The larger of two lanes, NaN when either is (max_ps returns its
        // second operand when either is NaN; a NaN first one is put back).
        let max_nan = |a: __m256, b: __m256| {
            _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a))
        };
        let (vbias, vlo, vhi) = (_mm256_set1_ps(bias), _mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let blocks = out.len() / 8;
        for i in 0..blocks {
            let (t, b) = (top.as_ptr().add(16 * i), bottom.as_ptr().add(16 * i));
            let v0 = max_nan(_mm256_loadu_ps(t), _mm256_loadu_ps(b));
            let v1 = max_nan(_mm256_loadu_ps(t.add(8)), _mm256_loadu_ps(b.add(8)));
            // Even and odd columns, per 128-bit lane: outputs 0 1 4 5 | 2 3 6 7.
            let even = _mm256_shuffle_ps::<0x88>(v0, v1);
            let odd = _mm256_shuffle_ps::<0xDD>(v0, v1);
            let m = _mm256_castps_pd(max_nan(even, odd));
            let m = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(m));
            // The value as the second operand: NaN passes through the clamp.
            let v = _mm256_min_ps(vhi, _mm256_max_ps(vlo, _mm256_add_ps(m, vbias)));
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), v);
        }
        8 * blocks
    }
}

#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use crate::kernels::packed::clamp4;
    use std::arch::aarch64::*;

    /// [`super::pool_bias_clamp`] on whole blocks of 4 outputs; returns how
    /// many outputs it wrote (`top` and `bottom` hold `2·out.len()` floats).
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn pool_bias_clamp(
        top: &[f32],
        bottom: &[f32],
        bias: f32,
        (lo, hi): (f32, f32),
        out: &mut [f32],
    ) -> usize {
        let (vbias, vlo, vhi) = (vdupq_n_f32(bias), vdupq_n_f32(lo), vdupq_n_f32(hi));
        let blocks = out.len() / 4;
        for i in 0..blocks {
            let (t, b) = (top.as_ptr().add(8 * i), bottom.as_ptr().add(8 * i));
            // FMAX and the pairwise FMAXP give NaN when either operand is NaN.
            let v0 = vmaxq_f32(vld1q_f32(t), vld1q_f32(b));
            let v1 = vmaxq_f32(vld1q_f32(t.add(4)), vld1q_f32(b.add(4)));
            let m = vpmaxq_f32(v0, v1);
            let v = clamp4(vaddq_f32(m, vbias), vlo, vhi);
            vst1q_f32(out.as_mut_ptr().add(4 * i), v);
        }
        4 * blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool and finish written out plainly, one output at a time.
    fn reference(top: &[f32], bottom: &[f32], bias: f32, (lo, hi): (f32, f32)) -> Vec<f32> {
        (0..top.len() / 2)
            .map(|i| {
                let window = [top[2 * i], top[2 * i + 1], bottom[2 * i], bottom[2 * i + 1]];
                if window.iter().any(|v| v.is_nan()) {
                    return f32::NAN;
                }
                let v = window.into_iter().fold(f32::NEG_INFINITY, f32::max) + bias;
                if v < lo {
                    lo
                } else if v > hi {
                    hi
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn vector_and_scalar_pools_match_the_reference() {
        // Lengths around the vector blocks (8 outputs with AVX2, 4 with NEON); NaN and
        // infinities among the values.
        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0];
        for len in [0, 1, 7, 8, 9, 16, 23, 40] {
            let value = |i: usize, salt: usize| match (i * 7 + salt) % 23 {
                s @ 0..=3 if len > 8 => special[s],
                s => (s as f32 - 11.0) * 0.37 + (i % 5) as f32,
            };
            let top: Vec<f32> = (0..2 * len).map(|i| value(i, 1)).collect();
            let bottom: Vec<f32> = (0..2 * len).map(|i| value(i, 5)).collect();
            for bounds in [
                (f32::NEG_INFINITY, f32::INFINITY),
                (0.0, f32::INFINITY),
                (-1.0, 2.5),
            ] {
                let mut out = vec![0.0; len];
                pool_bias_clamp(&top, &bottom, 0.25, bounds, &mut out);
                let want = reference(&top, &bottom, 0.25, bounds);
                for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        g == w || (g.is_nan() && w.is_nan()),
                        "len {len}, bounds {bounds:?}, output {i}: {g} != {w}"
                    );
                }
            }
        }
    }
}
