//! Quantization: QuantizeLinear/DequantizeLinear, DynamicQuantizeLinear, QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger, and casts between every dtype.

use crate::OpDef;

pub(crate) const OPS: &[OpDef] = &[];
