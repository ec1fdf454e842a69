//! Which operators STRING values may flow through.
//!
//! STRING tensors hold byte strings beside an empty byte storage, so numeric
//! kernels cannot read them. Three kinds of operators take them:
//! - operators that only move, select or compare whole elements ([`moves_strings`]):
//!   the CPU engine runs them on stand-in integer ids whose order is the strings'
//!   byte order, and maps the ids they output back to strings;
//! - `Cast`, which converts between STRING and the numeric types;
//! - operators whose own `eval` reads and writes strings ([`crate::Operator::takes_strings`]).
//!
//! Every other operator is refused at inference, when the model loads.

use crate::infer::Known;
use crate::{DType, Op, Result};

/// ONNX operators whose STRING outputs are elements of their STRING inputs
/// (or whose outputs describe them, like Shape, Equal and Unique's indices),
/// so that they compute the same on order-preserving ids.
const MOVERS: &[&str] = &[
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "Expand",
    "Tile",
    "Where",
    "Equal",
    "Compress",
    "Unique",
    "Shape",
    "Size",
    "ScatterElements",
    "ScatterND",
    "Scatter",
    "DepthToSpace",
    "SpaceToDepth",
    "ReverseSequence",
];

/// Whether the operator named `op_type` only moves, selects or compares whole
/// STRING elements.
pub fn moves_strings(op_type: &str) -> bool {
    MOVERS.contains(&op_type)
}

/// Whether `op` reads or writes STRING values in its own code (Cast and the
/// operators that say so); movers are not included.
pub fn handles_strings(op: &Op) -> bool {
    match op {
        Op::Cast { .. } => true,
        Op::Dyn(d) => d.takes_strings(),
        _ => false,
    }
}

/// Refuses a node that would take or make STRING values but cannot compute
/// with them.
pub fn check_node(
    op: &Op,
    ins: &[Option<Known>],
    mut out_dtypes: impl Iterator<Item = DType>,
) -> Result<()> {
    let strings = ins.iter().flatten().any(|k| k.dtype == DType::String)
        || out_dtypes.any(|d| d == DType::String);
    let name = op.name();
    if strings && !handles_strings(op) && !moves_strings(&name) {
        return crate::unsupported!("{name} on STRING tensors");
    }
    Ok(())
}
