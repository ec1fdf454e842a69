//! Builders of the ops the engines run through their own fast paths: each
//! returns a variant of [`metal_mps_ir::Op`] that the CPU kernels, the fusion
//! passes and the GPU lowering know by name.

mod elementwise;
mod linalg;
mod nn;
mod reduce;
mod shape;

use crate::{onnx, OpDef};
use metal_mps_ir::{Op, PoolKind};

pub(crate) const OPS: &[OpDef] = &[
    onnx("Add", 1, elementwise::binary),
    onnx("Sub", 1, elementwise::binary),
    onnx("Mul", 1, elementwise::binary),
    onnx("Div", 1, elementwise::binary),
    onnx("Pow", 1, elementwise::binary),
    onnx("Relu", 1, elementwise::unary),
    onnx("Sigmoid", 1, elementwise::unary),
    onnx("Tanh", 1, elementwise::unary),
    onnx("Sqrt", 1, elementwise::unary),
    onnx("Exp", 1, elementwise::unary),
    onnx("Log", 1, elementwise::unary),
    onnx("Neg", 1, elementwise::unary),
    onnx("Abs", 1, elementwise::unary),
    onnx("LeakyRelu", 1, elementwise::unary),
    onnx("HardSigmoid", 1, elementwise::unary),
    onnx("HardSwish", 14, elementwise::unary),
    onnx("Clip", 1, elementwise::clip),
    onnx("Sum", 1, |_| Ok(Op::Sum)),
    onnx("Identity", 1, |_| Ok(Op::Identity)),
    onnx("Cast", 1, elementwise::cast),
    onnx("Conv", 1, nn::conv),
    onnx("MaxPool", 1, nn::pool),
    onnx("AveragePool", 1, nn::pool),
    onnx("GlobalAveragePool", 1, |_| {
        Ok(Op::GlobalPool(PoolKind::Average))
    }),
    onnx("GlobalMaxPool", 1, |_| Ok(Op::GlobalPool(PoolKind::Max))),
    onnx("Softmax", 1, nn::softmax),
    onnx("LRN", 1, nn::lrn),
    onnx("MatMul", 1, |_| {
        Ok(Op::MatMul {
            activation: Default::default(),
        })
    }),
    onnx("Gemm", 1, linalg::gemm),
    onnx("ReduceMean", 1, reduce::reduce),
    onnx("ReduceSum", 1, reduce::reduce),
    onnx("ReduceMax", 1, reduce::reduce),
    onnx("ReduceMin", 1, reduce::reduce),
    onnx("Reshape", 1, shape::reshape),
    onnx("Transpose", 1, shape::transpose),
    onnx("Concat", 1, shape::concat),
    onnx("Split", 1, shape::split),
    onnx("Flatten", 1, shape::flatten),
    onnx("Squeeze", 1, shape::squeeze),
    onnx("Unsqueeze", 1, shape::unsqueeze),
    onnx("Shape", 1, shape::shape),
    onnx("Gather", 1, shape::gather),
];
