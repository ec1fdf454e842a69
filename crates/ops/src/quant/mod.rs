//! Quantization: QuantizeLinear/DequantizeLinear, DynamicQuantizeLinear, QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger, and casts between every dtype.

mod bitcast;
pub mod cast;
mod integer;
mod linear;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("QuantizeLinear", 10, linear::quantize),
    onnx("DequantizeLinear", 10, linear::dequantize),
    onnx("DynamicQuantizeLinear", 11, linear::dynamic_quantize),
    onnx("BitCast", 26, bitcast::build),
    onnx("MatMulInteger", 10, integer::matmul_integer),
    onnx("QLinearMatMul", 10, integer::qlinear_matmul),
    onnx("ConvInteger", 10, integer::conv_integer),
    onnx("QLinearConv", 10, integer::qlinear_conv),
];
