//! Transformer operators: Attention, RotaryEmbedding and the other attention variants, and the normalizations (Layer, RMS, Group, Instance, Lp, MeanVariance).

mod common;
mod flex;
mod norm;
mod recurrent;
mod rotary;
mod sdpa;
#[cfg(test)]
mod tests;

use crate::{onnx, OpDef};

/// FlexAttention lives in the preview domain.
const PREVIEW: &str = "ai.onnx.preview";

pub(crate) const OPS: &[OpDef] = &[
    onnx("Attention", 23, sdpa::build),
    onnx("LayerNormalization", 17, norm::build_layer_norm),
    onnx("RMSNormalization", 23, norm::build_layer_norm),
    onnx("GroupNormalization", 18, norm::build_group_norm),
    onnx("InstanceNormalization", 1, norm::build_group_norm),
    onnx("LpNormalization", 1, norm::build_lp_norm),
    onnx("MeanVarianceNormalization", 9, norm::build_mvn),
    onnx("RotaryEmbedding", 23, rotary::build_rotary),
    onnx("SwiGLU", 28, rotary::build_swiglu),
    onnx("CausalConvWithState", 27, recurrent::build_causal_conv),
    onnx("LinearAttention", 27, recurrent::build_linear_attention),
    OpDef {
        domain: PREVIEW,
        name: "FlexAttention",
        since: 1,
        build: flex::build,
    },
];
