//! Control flow and recurrent networks: If, Loop and Scan over subgraphs, LSTM, GRU and RNN.

mod body;
mod if_op;
mod loop_op;
mod rnn;
mod scan;

pub(crate) use body::{infer_body_data, merge_shapes, run_body_data, Arg, InFact};

use crate::{onnx, OpDef};
use metal_mps_ir::{Result, Tensor};

pub(crate) const OPS: &[OpDef] = &[
    onnx("If", 1, if_op::build),
    onnx("Loop", 1, loop_op::build),
    onnx("Scan", 8, scan::build),
    onnx("RNN", 1, rnn::build_rnn),
    onnx("GRU", 1, rnn::build_gru),
    onnx("LSTM", 1, rnn::build_lstm),
];

/// The `sequence_lens` input of Scan-8 and the recurrent ops: one length per
/// batch entry, each in `0..=max` (`max` for every entry when absent).
fn sequence_lens(op: &str, lens: Option<&Tensor>, batch: usize, max: usize) -> Result<Vec<usize>> {
    let Some(l) = lens else {
        return Ok(vec![max; batch]);
    };
    let v = l.to_i64_vec()?;
    if v.len() != batch {
        return metal_mps_ir::invalid!(
            "{op}: sequence_lens has {} entries for batch {batch}",
            v.len()
        );
    }
    v.into_iter()
        .map(|s| match usize::try_from(s) {
            Ok(s) if s <= max => Ok(s),
            _ => metal_mps_ir::invalid!("{op}: sequence length {s} is outside 0..={max}"),
        })
        .collect()
}
