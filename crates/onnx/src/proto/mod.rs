//! Prost messages for ONNX's protobuf schema (`onnx.proto`, IR version 11).
#![allow(clippy::all, missing_docs)]
include!("onnx.rs");
