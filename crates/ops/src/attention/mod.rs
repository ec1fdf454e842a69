//! Transformer operators: Attention, RotaryEmbedding and the other attention variants, and the normalizations (Layer, RMS, Group, Instance, Lp, MeanVariance).

mod attention;
mod common;
mod norm;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("Attention", 23, attention::build),
    onnx("LayerNormalization", 17, norm::build_layer_norm),
    onnx("RMSNormalization", 23, norm::build_layer_norm),
    onnx("GroupNormalization", 18, norm::build_group_norm),
    onnx("InstanceNormalization", 1, norm::build_group_norm),
    onnx("LpNormalization", 1, norm::build_lp_norm),
    onnx("MeanVarianceNormalization", 9, norm::build_mvn),
];
