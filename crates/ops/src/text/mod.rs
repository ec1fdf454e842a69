//! Operators on STRING tensors: StringConcat and StringNormalizer.

mod concat;
mod normalizer;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("StringConcat", 20, concat::build),
    onnx("StringNormalizer", 10, normalizer::build),
];
