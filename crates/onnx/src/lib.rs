//! The ONNX importer: `model.onnx` bytes → [`metal_mps_ir::Graph`].
//!
//! Parsing uses prost over code generated from `onnx.proto` (checked in under
//! `proto/`, so no `protoc` is needed). Each node's attributes are decoded and
//! handed, with the opset of its domain, to its builder in the operator table
//! of `metal-mps-ops`.

mod attrs;
mod data;
mod graph;
mod metadata;
pub mod proto;
mod tensor;

pub use data::parse_value_proto;
pub use graph::{load_model, parse_model, ImportedModel};
pub use metadata::ModelMetadata;
pub use tensor::{dtype_from_onnx, pack, parse_tensor_proto, tensor_from_proto, unpack};

/// Opsets of the default domain this importer understands (legacy attributes
/// are read where the builders use them; a node whose operator has no row at
/// the model's opset is refused naming the first opset that has one).
pub const MIN_OPSET: i64 = 1;
pub const MAX_OPSET: i64 = 28;
