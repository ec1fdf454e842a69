//! Element types a tensor can hold.

use half::f16;
use std::fmt;

/// The element types metal_mps computes with.
///
/// FP64 and STRING are deliberately absent: Metal has no FP64, and strings are
/// not numeric tensors. Models using them are refused when they load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    I8,
    I16,
    I32,
    I64,
    U8,
    Bool,
}

impl DType {
    pub const ALL: [DType; 8] = [
        DType::F32,
        DType::F16,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::Bool,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::I16 => 2,
            DType::I64 => 8,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16)
    }

    /// The name ONNX's `TensorProto.DataType` uses (`FLOAT`, `INT64`, ...).
    pub fn onnx_name(self) -> &'static str {
        match self {
            DType::F32 => "FLOAT",
            DType::F16 => "FLOAT16",
            DType::I8 => "INT8",
            DType::I16 => "INT16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::U8 => "UINT8",
            DType::Bool => "BOOL",
        }
    }

    /// The name Triton's model configuration uses (`TYPE_FP32`, ...).
    pub fn triton_name(self) -> &'static str {
        match self {
            DType::F32 => "TYPE_FP32",
            DType::F16 => "TYPE_FP16",
            DType::I8 => "TYPE_INT8",
            DType::I16 => "TYPE_INT16",
            DType::I32 => "TYPE_INT32",
            DType::I64 => "TYPE_INT64",
            DType::U8 => "TYPE_UINT8",
            DType::Bool => "TYPE_BOOL",
        }
    }

    /// The name the KServe-v2 protocol uses (`FP32`, `INT64`, `BOOL`, ...).
    pub fn kserve_name(self) -> &'static str {
        &self.triton_name()[5..]
    }

    pub fn from_triton_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.triton_name() == name)
    }

    pub fn from_kserve_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.kserve_name() == name)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.onnx_name())
    }
}

/// A Rust type that is the storage of one [`DType`].
///
/// `bool` tensors are stored as one byte per element (0 or 1) and viewed as `u8`
/// through [`BoolByte`].
pub trait Element: bytemuck::Pod + Copy + Send + Sync + PartialOrd + fmt::Debug + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn zero() -> Self;
    fn one() -> Self;
}

/// Storage of one boolean element: 0 is false, anything else true.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, bytemuck::Pod, bytemuck::Zeroable,
)]
#[repr(transparent)]
pub struct BoolByte(pub u8);

macro_rules! int_element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn zero() -> Self {
                0
            }
            fn one() -> Self {
                1
            }
        }
    };
}
int_element!(i8, DType::I8);
int_element!(i16, DType::I16);
int_element!(i32, DType::I32);
int_element!(i64, DType::I64);
int_element!(u8, DType::U8);

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn zero() -> Self {
        0.0
    }
    fn one() -> Self {
        1.0
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn zero() -> Self {
        f16::ZERO
    }
    fn one() -> Self {
        f16::ONE
    }
}

impl Element for BoolByte {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        (self.0 != 0) as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        BoolByte((v != 0.0) as u8)
    }
    fn zero() -> Self {
        BoolByte(0)
    }
    fn one() -> Self {
        BoolByte(1)
    }
}

/// Calls `$body` with the type alias `$T` bound to the Rust type of `$dtype`.
#[macro_export]
macro_rules! dispatch_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F16 => {
                type $T = $crate::f16;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::Bool => {
                type $T = $crate::BoolByte;
                $body
            }
        }
    };
}
