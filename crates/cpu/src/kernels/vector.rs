//! Element loops compiled for the widest vector instructions this CPU has.
//!
//! The workspace builds for the baseline of its target (SSE2 on x86-64), so a
//! plain loop over a branch-free function such as [`exp_f32`] vectorizes only
//! four lanes wide there. [`widest`] calls a function inside one compiled
//! with AVX-512 or AVX2/FMA (chosen at run time, capped by
//! `METAL_MPS_CPU_ISA`): an `#[inline(always)]` function item is inlined into
//! it, with every `#[inline(always)]` function it calls, and vectorized for
//! those instructions.

use metal_mps_ir::math::exp_f32;

/// A loop to compile for the widest vectors: `run` must be
/// `#[inline(always)]`, so that it is compiled into [`widest`]'s wrappers (a
/// closure or function item may be left out of line, at the baseline).
pub(crate) trait Loop {
    type Output;
    fn run(self) -> Self::Output;
}

/// `job.run()`, compiled for the widest vector instruction set this CPU runs.
#[inline(always)]
pub(crate) fn widest<L: Loop>(job: L) -> L::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_allowed() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { avx512(job) };
        }
        if avx2_allowed() {
            // SAFETY: as above.
            return unsafe { avx2(job) };
        }
    }
    job.run()
}

/// Whether code compiled for AVX-512 with FMA may run: this CPU has both and
/// `METAL_MPS_CPU_ISA` does not cap the kernels below them.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_allowed() -> bool {
    super::packed::isa_cap().is_none_or(|c| c == "avx512") && has_avx512()
}

/// Whether code compiled for AVX2 with FMA may run: this CPU has both and
/// `METAL_MPS_CPU_ISA` does not cap the kernels below them.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_allowed() -> bool {
    super::packed::isa_cap().is_none_or(|c| c == "avx512" || c == "avx2") && has_avx2()
}

/// Whether this CPU has AVX-512 and FMA, whatever the cap.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")
}

/// Whether this CPU has AVX2 and FMA, whatever the cap.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512<L: Loop>(job: L) -> L::Output {
    job.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<L: Loop>(job: L) -> L::Output {
    job.run()
}

/// `y[i] = f(x[i])`, `f` a small closure (inlined into the loop).
pub(crate) struct Map<'a, F>(pub F, pub &'a [f32], pub &'a mut [f32]);

impl<F: Fn(f32) -> f32> Loop for Map<'_, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Map(f, x, y) = self;
        y.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v));
    }
}

/// `v = f(v)` on each element, as [`Map`].
pub(crate) struct Update<'a, F>(pub F, pub &'a mut [f32]);

impl<F: Fn(f32) -> f32> Loop for Update<'_, F> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Update(f, values) = self;
        values.iter_mut().for_each(|v| *v = f(*v));
    }
}

/// Lanes of the running maxima and sums: wide enough for an AVX-512 register
/// (the compiler keeps each lane in its own element of one).
const LANES: usize = 16;

/// Softmax of one contiguous row (`.0`) into `.1`: `e^(x − max) / Σ e^(x −
/// max)`. A NaN anywhere makes the whole row NaN, as in the unfused formula.
pub(crate) struct SoftmaxRow<'a>(pub &'a [f32], pub &'a mut [f32]);

impl Loop for SoftmaxRow<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let SoftmaxRow(src, dst) = self;
        softmax_row(src, dst)
    }
}

#[inline(always)]
fn softmax_row(src: &[f32], dst: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = src.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = tail
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let mut sums = [0.0f32; LANES];
    let mut dst_chunks = dst.chunks_exact_mut(LANES);
    for (d, s) in (&mut dst_chunks).zip(src.chunks_exact(LANES)) {
        for ((d, &v), sum) in d.iter_mut().zip(s).zip(&mut sums) {
            *d = exp_f32(v - max);
            *sum += *d;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for (d, &v) in dst_chunks.into_remainder().iter_mut().zip(tail) {
        *d = exp_f32(v - max);
        sum += *d;
    }
    // NaN in the input went around the maximum; it reaches the sum here.
    let scale = 1.0 / sum;
    dst.iter_mut().for_each(|d| *d *= scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the formula in f64, over lengths that cross the lane count,
    /// large magnitudes (where a missing maximum would overflow) and NaN.
    #[test]
    fn softmax_row_matches_f64() {
        for len in [1, 2, 15, 16, 17, 33, 128, 1000] {
            let src: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * if len > 100 { 3.0 } else { 0.1 })
                .collect();
            let mut dst = vec![0.0; len];
            widest(SoftmaxRow(&src, &mut dst));
            let max = src.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let sum: f64 = src.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (&got, &v) in dst.iter().zip(&src) {
                let want = (v as f64 - max).exp() / sum;
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * want + 1e-30,
                    "{len}: {got} vs {want}"
                );
            }
        }
        let mut dst = [0.0; 20];
        let mut src = [1.0f32; 20];
        src[17] = f32::NAN;
        widest(SoftmaxRow(&src, &mut dst));
        assert!(dst.iter().all(|v| v.is_nan()));
    }
}
