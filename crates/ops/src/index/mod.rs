//! Indexing and selection: gathers and scatters, NonZero, Compress, Unique, TopK, ArgMax/ArgMin, NonMaxSuppression; and the ai.onnx.ml operators.

mod gather;
mod scatter;
mod util;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("GatherElements", 11, gather::build_gather_elements),
    onnx("GatherND", 11, gather::build_gather_nd),
    onnx("Scatter", 9, scatter::build_scatter_elements),
    onnx("ScatterElements", 11, scatter::build_scatter_elements),
    onnx("ScatterND", 11, scatter::build_scatter_nd),
    onnx("TensorScatter", 24, scatter::build_tensor_scatter),
];
