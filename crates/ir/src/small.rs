//! The 8-, 4- and 2-bit element types: FLOAT8 (E4M3FN, E4M3FNUZ, E5M2,
//! E5M2FNUZ, E8M0), FLOAT4E2M1, INT4, UINT4, INT2 and UINT2, each stored as one
//! byte per element.
//!
//! Conversions follow ONNX ("Float stored in 8 bits", "4 bit integer types",
//! `onnx.numpy_helper` and the reference `Cast`): floats round to nearest even;
//! out-of-range values saturate to the largest finite value when `saturate`
//! is set and otherwise become infinity (E5M2) or NaN (the FN/FNUZ types);
//! FLOAT4E2M1 always saturates. Floats to the small integer types truncate
//! toward zero and wrap like a C cast (NaN and infinity give 0).

use crate::dtype::{DType, Element};
use std::cmp::Ordering;

#[derive(Clone, Copy, PartialEq)]
enum Special {
    /// Exponent all ones is infinity (mantissa 0) or NaN (E5M2).
    Ieee,
    /// Only S.1111.111 is NaN; no infinity (E4M3FN).
    Fn,
    /// Only 0x80 is NaN; no infinity and no negative zero.
    Fnuz,
    /// No NaN, no infinity (FLOAT4E2M1).
    None,
}

#[derive(Clone, Copy)]
struct Format {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    special: Special,
}

impl Format {
    fn of(dtype: DType) -> Option<Format> {
        let (exp_bits, man_bits, bias, special) = match dtype {
            DType::F8E4M3FN => (4, 3, 7, Special::Fn),
            DType::F8E4M3FNUZ => (4, 3, 8, Special::Fnuz),
            DType::F8E5M2 => (5, 2, 15, Special::Ieee),
            DType::F8E5M2FNUZ => (5, 2, 16, Special::Fnuz),
            DType::F4E2M1 => (2, 1, 1, Special::None),
            _ => return None,
        };
        Some(Format {
            exp_bits,
            man_bits,
            bias,
            special,
        })
    }

    fn sign_bit(self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    fn emask(self) -> u32 {
        (1 << self.exp_bits) - 1
    }

    fn mmask(self) -> u32 {
        (1 << self.man_bits) - 1
    }

    fn decode(self, bits: u8) -> f64 {
        let sign = bits & self.sign_bit() != 0;
        let e = (bits as u32 >> self.man_bits) & self.emask();
        let m = bits as u32 & self.mmask();
        match self.special {
            Special::Fnuz if bits == 0x80 => return f64::NAN,
            Special::Ieee if e == self.emask() => {
                let v = if m == 0 { f64::INFINITY } else { f64::NAN };
                return if sign { -v } else { v };
            }
            Special::Fn if e == self.emask() && m == self.mmask() => {
                return if sign { -f64::NAN } else { f64::NAN }
            }
            _ => {}
        }
        let v = if e == 0 {
            m as f64 * pow2(1 - self.bias - self.man_bits as i32)
        } else {
            (1.0 + m as f64 * pow2(-(self.man_bits as i32))) * pow2(e as i32 - self.bias)
        };
        if sign {
            -v
        } else {
            v
        }
    }

    /// The largest finite value.
    fn max(self) -> f64 {
        let (e, m) = match self.special {
            Special::Ieee => (self.emask() - 1, self.mmask()),
            Special::Fn => (self.emask(), self.mmask() - 1),
            Special::Fnuz | Special::None => (self.emask(), self.mmask()),
        };
        self.decode(((e << self.man_bits) | m) as u8)
    }

    fn nan(self, negative: bool) -> u8 {
        let s = if negative { self.sign_bit() } else { 0 };
        match self.special {
            Special::Ieee => s | (self.emask() << self.man_bits) as u8 | (1 << (self.man_bits - 1)),
            Special::Fn => s | ((self.emask() << self.man_bits) | self.mmask()) as u8,
            Special::Fnuz => 0x80,
            // As ml_dtypes (the ONNX reference) converts NaN to FLOAT4E2M1.
            Special::None => {
                if negative {
                    0
                } else {
                    self.sign_bit()
                }
            }
        }
    }

    fn encode(self, v: f64, saturate: bool) -> u8 {
        if v.is_nan() {
            return self.nan(v.is_sign_negative());
        }
        let negative = v.is_sign_negative();
        let s = if negative { self.sign_bit() } else { 0 };
        let max = self.max();
        let a = v.abs();
        let min_normal = pow2(1 - self.bias);
        let quantum = if a < min_normal {
            pow2(1 - self.bias - self.man_bits as i32)
        } else {
            pow2(exponent_of(a) - self.man_bits as i32)
        };
        let q = if a.is_infinite() {
            a
        } else {
            (a / quantum).round_ties_even() * quantum
        };
        if q > max {
            return if saturate || self.special == Special::None {
                s | self.encode_magnitude(max)
            } else if self.special == Special::Ieee {
                s | (self.emask() << self.man_bits) as u8
            } else {
                self.nan(negative)
            };
        }
        if q == 0.0 {
            return if self.special == Special::Fnuz { 0 } else { s };
        }
        s | self.encode_magnitude(q)
    }

    /// Bits of a positive value that is exactly representable.
    fn encode_magnitude(self, q: f64) -> u8 {
        let min_normal = pow2(1 - self.bias);
        if q < min_normal {
            let m = q / pow2(1 - self.bias - self.man_bits as i32);
            return m as u8;
        }
        let e = exponent_of(q);
        let m = ((q / pow2(e) - 1.0) * pow2(self.man_bits as i32)) as u32;
        (((e + self.bias) as u32) << self.man_bits | m) as u8
    }
}

fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

/// floor(log2(a)) of a positive finite f64 (subnormal f64 values are far below
/// every small type's range and never reach here).
fn exponent_of(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// Bits of `v` in the 8- or 4-bit float `dtype` (E8M0 excluded: see
/// [`f8e8m0_from_f32`]); `saturate` as ONNX's Cast attribute (FLOAT4E2M1
/// always saturates). Other dtypes give 0.
pub fn small_float_from_f64(dtype: DType, v: f64, saturate: bool) -> u8 {
    match (dtype, Format::of(dtype)) {
        (_, Some(f)) => f.encode(v, saturate),
        (DType::F8E8M0, None) => f8e8m0_from_f32(v as f32, saturate, E8M0Round::Up),
        _ => 0,
    }
}

/// The rounding of a conversion to FLOAT8E8M0 (Cast's `round_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E8M0Round {
    Up,
    Down,
    Nearest,
}

/// FLOAT8E8M0 bits of `x`, as `onnx.numpy_helper.to_float8e8m0`: the sign is
/// ignored, NaN and infinity give 0xFF, the exponent rounds per `mode`, and
/// `saturate` keeps a rounding from reaching 0xFF.
pub fn f8e8m0_from_f32(x: f32, saturate: bool, mode: E8M0Round) -> u8 {
    let bits = x.to_bits();
    let exponent = (bits >> 23) & 0xff;
    if exponent == 0xff {
        return 0xff;
    }
    let round_up = match mode {
        E8M0Round::Down => false,
        E8M0Round::Up => bits & 0x7f_ffff != 0,
        E8M0Round::Nearest => {
            let g = bits & 0x40_0000 != 0;
            let r = bits & 0x20_0000 != 0;
            let s = bits & 0x1f_ffff != 0;
            let lsb = exponent > 0;
            g && (r || s || lsb)
        }
    };
    let inc = round_up && !(saturate && exponent == 0xfe);
    (exponent + inc as u32) as u8
}

macro_rules! small_float {
    ($name:ident, $d:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(transparent)]
        pub struct $name(pub u8);

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.to_f64() == other.to_f64()
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                self.to_f64().partial_cmp(&other.to_f64())
            }
        }

        impl Element for $name {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                decode_small_float($d, self.0)
            }
            /// Saturating, as Cast's default `saturate=1`.
            fn from_f64(v: f64) -> Self {
                $name(small_float_from_f64($d, v, true))
            }
            fn zero() -> Self {
                Self::from_f64(0.0)
            }
            fn one() -> Self {
                Self::from_f64(1.0)
            }
        }
    };
}

fn decode_small_float(dtype: DType, bits: u8) -> f64 {
    match Format::of(dtype) {
        Some(f) => f.decode(bits),
        // FLOAT8E8M0.
        None if bits == 0xff => f64::NAN,
        None => pow2(bits as i32 - 127),
    }
}

small_float!(
    F8E4M3FN,
    DType::F8E4M3FN,
    "One FLOAT8E4M3FN element (its bits)."
);
small_float!(
    F8E4M3FNUZ,
    DType::F8E4M3FNUZ,
    "One FLOAT8E4M3FNUZ element (its bits)."
);
small_float!(F8E5M2, DType::F8E5M2, "One FLOAT8E5M2 element (its bits).");
small_float!(
    F8E5M2FNUZ,
    DType::F8E5M2FNUZ,
    "One FLOAT8E5M2FNUZ element (its bits)."
);
small_float!(F8E8M0, DType::F8E8M0, "One FLOAT8E8M0 element (its bits).");
small_float!(
    F4E2M1,
    DType::F4E2M1,
    "One FLOAT4E2M1 element (its 4 bits in the low half of the byte)."
);

macro_rules! small_int {
    ($name:ident, $t:ty, $d:expr, $bits:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(
            Clone,
            Copy,
            Debug,
            Default,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            bytemuck::Pod,
            bytemuck::Zeroable,
        )]
        #[repr(transparent)]
        pub struct $name(pub $t);

        impl $name {
            pub const MIN: i64 = if <$t>::MIN == 0 {
                0
            } else {
                -(1 << ($bits - 1))
            };
            pub const MAX: i64 = if <$t>::MIN == 0 {
                (1 << $bits) - 1
            } else {
                (1 << ($bits - 1)) - 1
            };
        }

        impl Element for $name {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                self.0 as f64
            }
            /// Truncates toward zero and wraps (NaN and infinity give 0).
            fn from_f64(v: f64) -> Self {
                Self::from_i64(if v.is_finite() { v as i64 } else { 0 })
            }
            fn to_i64(self) -> i64 {
                self.0 as i64
            }
            /// Keeps the low bits, like a C cast.
            fn from_i64(v: i64) -> Self {
                let shift = 64 - $bits;
                if <$t>::MIN == 0 {
                    $name(((v as u64) << shift >> shift) as $t)
                } else {
                    $name((v << shift >> shift) as $t)
                }
            }
            fn zero() -> Self {
                $name(0)
            }
            fn one() -> Self {
                $name(1)
            }
        }
    };
}

small_int!(
    I4,
    i8,
    DType::I4,
    4,
    "One INT4 element, sign-extended to a byte."
);
small_int!(U4, u8, DType::U4, 4, "One UINT4 element.");
small_int!(
    I2,
    i8,
    DType::I2,
    2,
    "One INT2 element, sign-extended to a byte."
);
small_int!(U2, u8, DType::U2, 2, "One UINT2 element.");

#[cfg(test)]
mod tests {
    use super::*;

    // Expected bits from ml_dtypes (the ONNX reference's Cast) for
    // [0.3, 0.5, 1.5, 2.5, -2.5, 3.49, 7.6, 8, 9.7, -9, -8.5, 15.5, 16, 17, 100,
    //  -100, nan, inf, -inf, 300, 1e6] without saturation.
    const X: [f64; 21] = [
        0.3,
        0.5,
        1.5,
        2.5,
        -2.5,
        3.49,
        7.6,
        8.0,
        9.7,
        -9.0,
        -8.5,
        15.5,
        16.0,
        17.0,
        100.0,
        -100.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        300.0,
        1e6,
    ];

    fn bits(d: DType) -> Vec<u8> {
        X.iter()
            .map(|&v| small_float_from_f64(d, v as f32 as f64, false))
            .collect()
    }

    #[test]
    fn float8_and_float4_match_ml_dtypes() {
        assert_eq!(
            bits(DType::F8E4M3FN),
            [
                42, 48, 60, 66, 194, 70, 79, 80, 82, 209, 208, 88, 88, 88, 108, 236, 127, 127, 255,
                121, 127
            ]
        );
        assert_eq!(
            bits(DType::F8E4M3FNUZ),
            [
                50, 56, 68, 74, 202, 78, 87, 88, 90, 217, 216, 96, 96, 96, 116, 244, 128, 128, 128,
                128, 128
            ]
        );
        assert_eq!(
            bits(DType::F8E5M2),
            [
                53, 56, 62, 65, 193, 67, 72, 72, 73, 200, 200, 76, 76, 76, 86, 214, 126, 124, 252,
                93, 124
            ]
        );
        assert_eq!(
            bits(DType::F8E5M2FNUZ),
            [
                57, 60, 66, 69, 197, 71, 76, 76, 77, 204, 204, 80, 80, 80, 90, 218, 128, 128, 128,
                97, 128
            ]
        );
        assert_eq!(
            bits(DType::F4E2M1),
            [1, 1, 3, 4, 12, 5, 7, 7, 7, 15, 15, 7, 7, 7, 7, 15, 8, 7, 15, 7, 7]
        );
    }

    #[test]
    fn decode_and_limits() {
        assert_eq!(F8E4M3FN(0x7e).to_f64(), 448.0);
        assert!(F8E4M3FN(0x7f).to_f64().is_nan());
        assert_eq!(F8E4M3FNUZ(0x7f).to_f64(), 240.0);
        assert_eq!(F8E5M2(0x7b).to_f64(), 57344.0);
        assert_eq!(F8E5M2(0x7c).to_f64(), f64::INFINITY);
        assert_eq!(F8E5M2FNUZ(0x7f).to_f64(), 57344.0);
        assert_eq!(F4E2M1(0x7).to_f64(), 6.0);
        assert_eq!(F4E2M1(0x1).to_f64(), 0.5);
        assert_eq!(F8E8M0(127).to_f64(), 1.0);
        // Saturation clamps to the largest finite value.
        assert_eq!(F8E4M3FN::from_f64(1e6).0, 0x7e);
        assert_eq!(F8E5M2::from_f64(f64::NEG_INFINITY).0, 0xfb);
        // FNUZ has no negative zero.
        assert_eq!(F8E4M3FNUZ::from_f64(-1e-9).0, 0);
        for b in 0..=255u8 {
            let v = F8E4M3FN(b).to_f64();
            if !v.is_nan() {
                assert_eq!(F8E4M3FN::from_f64(v).0, b);
            }
        }
    }

    #[test]
    fn e8m0_rounding() {
        // onnx.numpy_helper.to_float8e8m0: 3.0 -> 2^2 (up), 2^1 (down), 2^2 (nearest).
        assert_eq!(f8e8m0_from_f32(3.0, true, E8M0Round::Up), 129);
        assert_eq!(f8e8m0_from_f32(3.0, true, E8M0Round::Down), 128);
        assert_eq!(f8e8m0_from_f32(3.0, true, E8M0Round::Nearest), 129);
        assert_eq!(f8e8m0_from_f32(f32::INFINITY, true, E8M0Round::Up), 255);
        assert_eq!(f8e8m0_from_f32(f32::MAX, true, E8M0Round::Up), 254);
        assert_eq!(f8e8m0_from_f32(f32::MAX, false, E8M0Round::Up), 255);
    }

    #[test]
    fn small_ints_wrap() {
        assert_eq!(I4::from_f64(-9.0).0, 7);
        assert_eq!(I4::from_f64(8.0).0, -8);
        assert_eq!(U4::from_i64(17).0, 1);
        assert_eq!(I2::from_i64(2).0, -2);
        assert_eq!(U2::from_f64(-1.0).0, 3);
        assert_eq!(I4::from_f64(f64::NAN).0, 0);
        assert_eq!((I4::MIN, I4::MAX, U2::MIN, U2::MAX), (-8, 7, 0, 3));
    }
}
