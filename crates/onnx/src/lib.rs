//! The ONNX importer: `model.onnx` bytes → [`metal_mps_ir::Graph`].
//!
//! Parsing uses prost over code generated from `onnx.proto` (checked in under
//! `proto/`, so no `protoc` is needed). Each ONNX op family has a small builder
//! module under `ops/` that turns a node's attributes, under the model's opset,
//! into one IR [`metal_mps_ir::Op`].

mod attrs;
mod graph;
mod ops;
pub mod proto;
mod tensor;

pub use graph::{load_model, parse_model, ImportedModel};
pub use tensor::{dtype_from_onnx, parse_tensor_proto, tensor_from_proto};

/// Opsets of the default domain this importer understands (6 for the
/// pytorch-converted suite; its legacy attributes are read where our ops use them).
pub const MIN_OPSET: i64 = 6;
pub const MAX_OPSET: i64 = 28;
