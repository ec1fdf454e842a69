//! Elementwise operators without a fast path of their own: math functions and
//! activations, predicates, comparisons, logic, bit operations, Mod, the
//! variadic Min/Max/Mean, PRelu and Where; the axis-aligned broadcasting of
//! opsets before 7 ([`legacy`]).

mod binary;
pub(crate) mod legacy;
mod unary;
mod variadic;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("Sin", 7, unary::build),
    onnx("Cos", 7, unary::build),
    onnx("Tan", 7, unary::build),
    onnx("Asin", 7, unary::build),
    onnx("Acos", 7, unary::build),
    onnx("Atan", 7, unary::build),
    onnx("Sinh", 9, unary::build),
    onnx("Cosh", 9, unary::build),
    onnx("Asinh", 9, unary::build),
    onnx("Acosh", 9, unary::build),
    onnx("Atanh", 9, unary::build),
    onnx("Erf", 9, unary::build),
    onnx("Reciprocal", 1, unary::build),
    onnx("Floor", 1, unary::build),
    onnx("Ceil", 1, unary::build),
    onnx("Round", 11, unary::build),
    onnx("Sign", 9, unary::build),
    onnx("Softplus", 1, unary::build),
    onnx("Softsign", 1, unary::build),
    onnx("Elu", 1, unary::build),
    onnx("Selu", 1, unary::build),
    onnx("Celu", 12, unary::build),
    onnx("ThresholdedRelu", 10, unary::build),
    onnx("Shrink", 9, unary::build),
    onnx("Mish", 18, unary::build),
    onnx("Gelu", 20, unary::build),
    onnx("Swish", 24, unary::build),
    onnx("IsNaN", 9, unary::build),
    onnx("IsInf", 10, unary::build),
    onnx("Not", 1, unary::build),
    onnx("BitwiseNot", 18, unary::build),
    onnx("Equal", 1, binary::build),
    onnx("Less", 1, binary::build),
    onnx("Greater", 1, binary::build),
    onnx("LessOrEqual", 12, binary::build),
    onnx("GreaterOrEqual", 12, binary::build),
    onnx("And", 1, binary::build),
    onnx("Or", 1, binary::build),
    onnx("Xor", 1, binary::build),
    onnx("BitwiseAnd", 18, binary::build),
    onnx("BitwiseOr", 18, binary::build),
    onnx("BitwiseXor", 18, binary::build),
    onnx("BitShift", 11, binary::build),
    onnx("Mod", 10, binary::build),
    onnx("PRelu", 1, binary::build),
    onnx("Min", 1, variadic::build),
    onnx("Max", 1, variadic::build),
    onnx("Mean", 1, variadic::build),
    onnx("Where", 9, variadic::build_where),
];
