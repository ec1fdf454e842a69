//! BatchNormalization and Dropout: the inference forms are the engines' built-in
//! ops (`Op::BatchNorm`, `Op::Identity`); the training forms are operators here.

mod batch_norm;
mod dropout;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("BatchNormalization", 1, batch_norm::build),
    onnx("Dropout", 1, dropout::build),
];
