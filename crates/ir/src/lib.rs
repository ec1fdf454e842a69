//! The graph IR of metal_mps.
//!
//! The pipeline: the ONNX importer builds a [`Graph`]; [`infer::infer_graph`]
//! gives every value a dtype and (possibly symbolic) shape; [`passes`] fold
//! constants, fuse and remove dead nodes; [`plan::Plan`] orders the nodes and
//! assigns every intermediate value a reusable buffer slot by lifetime. The
//! engines (`metal-mps-cpu`, `metal-mps-gpu`) execute a plan.

mod dtype;
mod error;
mod graph;
pub mod infer;
mod kind;
pub mod limits;
pub mod math;
mod operator;
mod ops;
mod out;
pub mod passes;
mod paths;
pub mod plan;
mod shape;
mod small;
pub mod strings;
mod tensor;
pub mod units;
pub mod wire;

pub use dtype::{BoolByte, DType, Element};
pub use error::{Error, Result};
pub use graph::{Graph, Node, Value, ValueId};
pub use half::{bf16, f16};
pub use kind::{tensors_only, Datum, Kind, ValueType};
pub use operator::{AttentionSpec, DynOp, Fact, Normalization, Operator, PickedRows, StridedView};
pub use ops::*;
pub use out::Out;
pub use paths::resolve_within;
pub use shape::*;
pub use small::{
    f8e8m0_from_f32, small_float_from_f64, E8M0Round, F4E2M1, F8E4M3FN, F8E4M3FNUZ, F8E5M2,
    F8E5M2FNUZ, F8E8M0, I2, I4, U2, U4,
};
pub use tensor::{checked_bytes, checked_numel, SharedBytes, Storage, Tensor};
