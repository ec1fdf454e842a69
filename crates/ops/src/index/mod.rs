//! Indexing and selection: gathers and scatters, NonZero, Compress, Unique, TopK, ArgMax/ArgMin, NonMaxSuppression; and the ai.onnx.ml operators.

mod gather;
mod nms;
mod scatter;
mod select;
mod topk;
mod util;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("GatherElements", 11, gather::build_gather_elements),
    onnx("GatherND", 11, gather::build_gather_nd),
    onnx("Scatter", 9, scatter::build_scatter_elements),
    onnx("ScatterElements", 11, scatter::build_scatter_elements),
    onnx("ScatterND", 11, scatter::build_scatter_nd),
    onnx("TensorScatter", 24, scatter::build_tensor_scatter),
    onnx("NonZero", 9, select::build_nonzero),
    onnx("Compress", 9, select::build_compress),
    onnx("Unique", 11, select::build_unique),
    onnx("TopK", 1, topk::build_topk),
    onnx("ArgMax", 1, topk::build_arg),
    onnx("ArgMin", 1, topk::build_arg),
    onnx("NonMaxSuppression", 10, nms::build_nms),
];
