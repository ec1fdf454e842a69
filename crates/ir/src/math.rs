//! Scalar functions shared by the engines' kernels and the IR's reference
//! formulas ([`crate::UnaryOp::apply_f32`]).

/// `erf(x)` in single precision, within 4.5e-7 of the exact value: an odd
/// rational approximation on `[-3.9, 3.9]` (beyond it erf is ±1 in f32),
/// branch-free so that loops over it vectorize. NaN stays NaN.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    const P: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const Q: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x2 = x * x;
    // Not `mul_add`: without FMA in the target it calls a slow library fma.
    let p = P[1..].iter().fold(P[0], |acc, &c| acc * x2 + c);
    let q = Q[1..].iter().fold(Q[0], |acc, &c| acc * x2 + c);
    let erf = x * p / q;
    // From 3.9 on, erf rounds to ±1 in f32 (and the polynomials may overflow).
    if x.abs() >= 3.9 {
        1f32.copysign(x)
    } else {
        erf
    }
}

/// `e^x` in single precision, within 2 ulp of the exact value: `x = n·ln 2 +
/// r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r` (Cephes'
/// `expf`), then `2^n` put into the exponent bits in two halves (so that
/// results near the overflow and underflow bounds, subnormals included, come
/// out right). Branch-free, so that loops over it vectorize. NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // 1.5·2^23: adding it rounds to an integer, kept in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    // Past these bounds e^x is infinite or zero in f32; NaN passes the clamp.
    let x = x.clamp(-104.0, 89.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = P[1..].iter().fold(P[0], |acc, &c| acc * r + c);
    let er = p * r * r + r + 1.0;
    let e = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let half = e >> 1;
    let scale = |k: i32| f32::from_bits(((k + 127) << 23) as u32);
    er * scale(half) * scale(e - half)
}

/// GELU, `x·Φ(x) = x/2·(1 + erf(x/√2))`, in single precision through
/// [`erf_f32`] (branch-free, so loops over it vectorize).
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU in double precision (libm's erf).
pub fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulp() {
        let ulp = |want: f64| {
            let w = want as f32;
            (f32::from_bits(w.to_bits() + 1) - w).max(f32::MIN_POSITIVE * f32::EPSILON) as f64
        };
        let mut worst = 0.0f64;
        for i in -1_100_000..=950_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            if want as f32 == f32::INFINITY {
                assert_eq!(exp_f32(x), f32::INFINITY, "e^{x}");
                continue;
            }
            worst = worst.max((exp_f32(x) as f64 - want).abs() / ulp(want));
        }
        assert!(worst <= 2.0, "largest error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-104.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn erf_f32_is_within_its_bound() {
        let worst = (-600_000..=600_000)
            .map(|i| i as f32 * 1e-5)
            .map(|x| (erf_f32(x) as f64 - libm::erf(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "largest error {worst}");
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(0.0), 0.0);
    }

    #[test]
    fn gelu_matches_the_f64_formula() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.005;
            let want = gelu_f64(x as f64);
            assert!(
                (gelu_f32(x) as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{x}"
            );
        }
        // Known value: GELU(1) = Φ(1) = 0.841344746...
        assert!((gelu_f64(1.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
    }
}
