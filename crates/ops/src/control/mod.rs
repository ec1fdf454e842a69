//! Control flow and recurrent networks: If, Loop and Scan over subgraphs, LSTM, GRU and RNN.

use crate::OpDef;

pub(crate) const OPS: &[OpDef] = &[];
