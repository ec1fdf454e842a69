//! Operators on STRING tensors: StringConcat, StringNormalizer, StringSplit and RegexFullMatch.

mod concat;
mod normalizer;
mod regex_match;
mod split;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("StringConcat", 20, concat::build),
    onnx("StringNormalizer", 10, normalizer::build),
    onnx("StringSplit", 20, split::build),
    onnx("RegexFullMatch", 20, regex_match::build),
];
