//! Operators on text: StringConcat, StringNormalizer, StringSplit, RegexFullMatch and
//! TfIdfVectorizer (over strings or integer tokens).

mod concat;
mod normalizer;
mod regex_match;
mod split;
mod tfidf;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("StringConcat", 20, concat::build),
    onnx("StringNormalizer", 10, normalizer::build),
    onnx("StringSplit", 20, split::build),
    onnx("RegexFullMatch", 20, regex_match::build),
    onnx("TfIdfVectorizer", 9, tfidf::build),
];
