//! One builder per ONNX op family: attributes and opset → one IR [`Op`].

mod elementwise;
mod linalg;
mod nn;
mod reduce;
mod shape;

use crate::attrs::Attrs;
use metal_mps_ir::{Op, Result};

/// What a builder sees of a node.
pub struct NodeCtx<'a> {
    pub op_type: &'a str,
    pub attrs: Attrs<'a>,
    pub opset: i64,
    pub num_inputs: usize,
    pub num_outputs: usize,
}

/// The op types this importer knows (besides `Constant`, which becomes a value).
pub const SUPPORTED: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Conv",
    "Div",
    "Dropout",
    "Exp",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LRN",
    "LeakyRelu",
    "Log",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Pad",
    "Pow",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// Builds the IR op, or `None` for an op type this importer does not know.
pub fn build(ctx: &NodeCtx) -> Option<Result<Op>> {
    Some(match ctx.op_type {
        "Add" | "Sub" | "Mul" | "Div" | "Pow" => elementwise::binary(ctx),
        "Relu" | "Sigmoid" | "Tanh" | "Sqrt" | "Exp" | "Log" | "Neg" | "Abs" | "LeakyRelu"
        | "HardSigmoid" | "HardSwish" => elementwise::unary(ctx),
        "Clip" => elementwise::clip(ctx),
        "Sum" => Ok(Op::Sum),
        "Identity" => Ok(Op::Identity),
        "Dropout" => elementwise::dropout(ctx),
        "Cast" => elementwise::cast(ctx),
        "Conv" => nn::conv(ctx),
        "MaxPool" | "AveragePool" => nn::pool(ctx),
        "GlobalAveragePool" => Ok(Op::GlobalPool(metal_mps_ir::PoolKind::Average)),
        "GlobalMaxPool" => Ok(Op::GlobalPool(metal_mps_ir::PoolKind::Max)),
        "BatchNormalization" => nn::batch_norm(ctx),
        "Softmax" => nn::softmax(ctx),
        "LRN" => nn::lrn(ctx),
        "MatMul" => Ok(Op::MatMul {
            activation: Default::default(),
        }),
        "Gemm" => linalg::gemm(ctx),
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => reduce::reduce(ctx),
        "Reshape" => shape::reshape(ctx),
        "Transpose" => shape::transpose(ctx),
        "Concat" => shape::concat(ctx),
        "Split" => shape::split(ctx),
        "Flatten" => shape::flatten(ctx),
        "Squeeze" => shape::squeeze(ctx),
        "Unsqueeze" => shape::unsqueeze(ctx),
        "Shape" => shape::shape(ctx),
        "Gather" => shape::gather(ctx),
        "Pad" => shape::pad(ctx),
        _ => return None,
    })
}
