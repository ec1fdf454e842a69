//! Control flow and recurrent networks: If, Loop and Scan over subgraphs, LSTM, GRU and RNN.

mod body;
mod if_op;
mod loop_op;
mod scan;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("If", 1, if_op::build),
    onnx("Loop", 1, loop_op::build),
    onnx("Scan", 8, scan::build),
];
