//! Element types a tensor can hold.

use half::{bf16, f16};
use std::fmt;

/// The element types metal_mps computes with.
///
/// Every numeric type of ONNX that has a native Rust representation. The GPU
/// engine computes in F32 and F16 (and the integer types it lists); values of
/// other types stay on the CPU engine. STRING tensors hold byte strings
/// (usually UTF-8) outside the byte storage ([`crate::Tensor::as_strings`]);
/// they have no numeric element type and live on the CPU engine only.
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
    F64,
    BF16,
    U16,
    U32,
    U64,
    /// FLOAT8E4M3FN: 4 exponent bits (bias 7), 3 mantissa bits, NaN but no infinity.
    F8E4M3FN,
    /// FLOAT8E4M3FNUZ: bias 8, one NaN (0x80), no infinity, no negative zero.
    F8E4M3FNUZ,
    /// FLOAT8E5M2: 5 exponent bits (bias 15), 2 mantissa bits, NaN and infinity.
    F8E5M2,
    /// FLOAT8E5M2FNUZ: bias 16, one NaN (0x80), no infinity, no negative zero.
    F8E5M2FNUZ,
    /// FLOAT8E8M0: an unsigned power of two 2^(e-127); 0xFF is NaN.
    F8E8M0,
    /// FLOAT4E2M1: 2 exponent bits (bias 1), 1 mantissa bit, no NaN or infinity.
    F4E2M1,
    /// INT4, one element per byte in memory (packed two per byte in TensorProto).
    I4,
    /// UINT4, one element per byte in memory.
    U4,
    /// INT2, one element per byte in memory (packed four per byte in TensorProto).
    I2,
    /// UINT2, one element per byte in memory.
    U2,
    /// STRING: byte strings, kept beside the (empty) byte storage.
    String,
}

impl DType {
    pub const ALL: [DType; 24] = [
        DType::F32,
        DType::F16,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::Bool,
        DType::F64,
        DType::BF16,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::F8E8M0,
        DType::F4E2M1,
        DType::I4,
        DType::U4,
        DType::I2,
        DType::U2,
        DType::String,
    ];

    /// Bytes per element in the byte storage (0 for STRING, whose elements
    /// live beside it).
    pub fn size(self) -> usize {
        match self {
            DType::String => 0,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I64 | DType::U64 | DType::F64 => 8,
            DType::I8 | DType::U8 | DType::Bool => 1,
            // One byte per element in memory, sub-byte types included.
            DType::F8E4M3FN
            | DType::F8E4M3FNUZ
            | DType::F8E5M2
            | DType::F8E5M2FNUZ
            | DType::F8E8M0
            | DType::F4E2M1
            | DType::I4
            | DType::U4
            | DType::I2
            | DType::U2 => 1,
        }
    }

    /// Bits per element in a `TensorProto`'s data when fewer than 8: TensorProto
    /// packs INT4/UINT4/FLOAT4E2M1 two per byte and INT2/UINT2 four per byte,
    /// low bits first.
    pub fn packed_bits(self) -> Option<usize> {
        match self {
            DType::I4 | DType::U4 | DType::F4E2M1 => Some(4),
            DType::I2 | DType::U2 => Some(2),
            _ => None,
        }
    }

    /// The 8- and 4-bit float types (FLOAT8*, FLOAT4E2M1): stored values with no
    /// native arithmetic; kernels convert them (through f64) where ONNX allows them.
    pub fn is_small_float(self) -> bool {
        matches!(
            self,
            DType::F8E4M3FN
                | DType::F8E4M3FNUZ
                | DType::F8E5M2
                | DType::F8E5M2FNUZ
                | DType::F8E8M0
                | DType::F4E2M1
        )
    }

    /// The 4- and 2-bit integer types (INT4, UINT4, INT2, UINT2).
    pub fn is_small_int(self) -> bool {
        matches!(self, DType::I4 | DType::U4 | DType::I2 | DType::U2)
    }

    /// Types the Triton and KServe-v2 protocols have a name for (the 8-, 4- and
    /// 2-bit types have none).
    pub fn has_protocol_type(self) -> bool {
        !self.is_small_float() && !self.is_small_int()
    }

    /// Floating-point types with native arithmetic (FLOAT, FLOAT16, DOUBLE,
    /// BFLOAT16); the 8- and 4-bit floats are [`DType::is_small_float`].
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::F64 | DType::BF16)
    }

    /// Signed and unsigned integer types of 8 bits and more (BOOL and the 4- and
    /// 2-bit types, [`DType::is_small_int`], excluded).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I8
                | DType::I16
                | DType::I32
                | DType::I64
                | DType::U8
                | DType::U16
                | DType::U32
                | DType::U64
        )
    }

    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64)
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
            DType::F64 => "DOUBLE",
            DType::BF16 => "BFLOAT16",
            DType::U16 => "UINT16",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::F8E4M3FN => "FLOAT8E4M3FN",
            DType::F8E4M3FNUZ => "FLOAT8E4M3FNUZ",
            DType::F8E5M2 => "FLOAT8E5M2",
            DType::F8E5M2FNUZ => "FLOAT8E5M2FNUZ",
            DType::F8E8M0 => "FLOAT8E8M0",
            DType::F4E2M1 => "FLOAT4E2M1",
            DType::I4 => "INT4",
            DType::U4 => "UINT4",
            DType::I2 => "INT2",
            DType::U2 => "UINT2",
            DType::String => "STRING",
        }
    }

    /// The code of ONNX's `TensorProto.DataType` enum.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::U16 => 4,
            DType::I16 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
            DType::U32 => 12,
            DType::U64 => 13,
            DType::BF16 => 16,
            DType::F8E4M3FN => 17,
            DType::F8E4M3FNUZ => 18,
            DType::F8E5M2 => 19,
            DType::F8E5M2FNUZ => 20,
            DType::U4 => 21,
            DType::I4 => 22,
            DType::F4E2M1 => 23,
            DType::F8E8M0 => 24,
            DType::U2 => 25,
            DType::I2 => 26,
            DType::String => 8,
        }
    }

    /// The dtype of an ONNX `TensorProto.DataType` code; the error names the
    /// type when it is one metal_mps does not compute with.
    pub fn from_onnx_code(code: i64) -> crate::Result<DType> {
        if let Some(d) = DType::ALL
            .into_iter()
            .find(|d| d.onnx_code() as i64 == code)
        {
            return Ok(d);
        }
        const OTHERS: [(i64, &str); 2] = [(14, "COMPLEX64"), (15, "COMPLEX128")];
        match OTHERS.iter().find(|(c, _)| *c == code) {
            Some((_, name)) => crate::unsupported!(
                "{name} tensors (supported: {})",
                DType::ALL.map(DType::onnx_name).join(", ")
            ),
            None => Err(crate::Error::InvalidModel(format!(
                "unknown ONNX data type {code}"
            ))),
        }
    }

    /// The name Triton's model configuration uses (`TYPE_FP32`, ...). Types
    /// Triton lacks ([`DType::has_protocol_type`] false) get `TYPE_` and their
    /// ONNX name, which no Triton name lookup accepts.
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
            DType::F64 => "TYPE_FP64",
            DType::BF16 => "TYPE_BF16",
            DType::U16 => "TYPE_UINT16",
            DType::U32 => "TYPE_UINT32",
            DType::U64 => "TYPE_UINT64",
            DType::F8E4M3FN => "TYPE_FLOAT8E4M3FN",
            DType::F8E4M3FNUZ => "TYPE_FLOAT8E4M3FNUZ",
            DType::F8E5M2 => "TYPE_FLOAT8E5M2",
            DType::F8E5M2FNUZ => "TYPE_FLOAT8E5M2FNUZ",
            DType::F8E8M0 => "TYPE_FLOAT8E8M0",
            DType::F4E2M1 => "TYPE_FLOAT4E2M1",
            DType::I4 => "TYPE_INT4",
            DType::U4 => "TYPE_UINT4",
            DType::I2 => "TYPE_INT2",
            DType::U2 => "TYPE_UINT2",
            DType::String => "TYPE_STRING",
        }
    }

    /// The name the KServe-v2 protocol uses (`FP32`, `INT64`, `BOOL`, `BYTES`, ...).
    pub fn kserve_name(self) -> &'static str {
        match self {
            DType::String => "BYTES",
            d => &d.triton_name()[5..],
        }
    }

    pub fn from_triton_name(name: &str) -> Option<DType> {
        DType::ALL
            .into_iter()
            .find(|d| d.has_protocol_type() && d.triton_name() == name)
    }

    pub fn from_kserve_name(name: &str) -> Option<DType> {
        DType::ALL
            .into_iter()
            .find(|d| d.has_protocol_type() && d.kserve_name() == name)
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
    /// Exact for integer types (f64 loses 64-bit values); floats truncate toward zero.
    fn to_i64(self) -> i64 {
        self.to_f64() as i64
    }
    /// Exact for integer types (wrapping like a C cast); floats from the i64 value.
    fn from_i64(v: i64) -> Self {
        Self::from_f64(v as f64)
    }
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
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
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
int_element!(u16, DType::U16);
int_element!(u32, DType::U32);
int_element!(u64, DType::U64);

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn zero() -> Self {
        0.0
    }
    fn one() -> Self {
        1.0
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn zero() -> Self {
        bf16::ZERO
    }
    fn one() -> Self {
        bf16::ONE
    }
}

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
///
/// STRING has no such type: callers handle it before dispatching (the engines
/// route STRING values to string-aware code, `metal_mps_cpu::eval_op`); it panics.
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
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::BF16 => {
                type $T = $crate::bf16;
                $body
            }
            $crate::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::U64 => {
                type $T = u64;
                $body
            }
            $crate::DType::F8E4M3FN => {
                type $T = $crate::F8E4M3FN;
                $body
            }
            $crate::DType::F8E4M3FNUZ => {
                type $T = $crate::F8E4M3FNUZ;
                $body
            }
            $crate::DType::F8E5M2 => {
                type $T = $crate::F8E5M2;
                $body
            }
            $crate::DType::F8E5M2FNUZ => {
                type $T = $crate::F8E5M2FNUZ;
                $body
            }
            $crate::DType::F8E8M0 => {
                type $T = $crate::F8E8M0;
                $body
            }
            $crate::DType::F4E2M1 => {
                type $T = $crate::F4E2M1;
                $body
            }
            $crate::DType::I4 => {
                type $T = $crate::I4;
                $body
            }
            $crate::DType::U4 => {
                type $T = $crate::U4;
                $body
            }
            $crate::DType::I2 => {
                type $T = $crate::I2;
                $body
            }
            $crate::DType::U2 => {
                type $T = $crate::U2;
                $body
            }
            $crate::DType::String => {
                panic!("STRING tensors have no numeric element type (string-aware code handles them first)")
            }
        }
    };
}
