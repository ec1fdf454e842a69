//! Control flow and recurrent networks: If, Loop and Scan over subgraphs, LSTM, GRU and RNN.

mod body;
mod if_op;
mod loop_op;
mod rnn;
mod scan;

use crate::{onnx, OpDef};

pub(crate) const OPS: &[OpDef] = &[
    onnx("If", 1, if_op::build),
    onnx("Loop", 1, loop_op::build),
    onnx("Scan", 8, scan::build),
    onnx("RNN", 1, rnn::build_rnn),
    onnx("GRU", 1, rnn::build_gru),
    onnx("LSTM", 1, rnn::build_lstm),
];
