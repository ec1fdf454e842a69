//! SequenceAt: the tensor at a position of a sequence.

use super::{data_operator, datum, elements, known_kind, position, sequence};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{Datum, DynOp, Fact, Kind, Op, Result};

#[derive(Debug)]
pub struct SequenceAt;

pub fn build(_: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(SequenceAt)))
}

const NAME: &str = "SequenceAt";

impl SequenceAt {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        let seq = known_kind(ins, 0, &Kind::Sequence, NAME)?;
        known_kind(ins, 1, &Kind::Tensor, NAME)?;
        Ok(vec![(Kind::Tensor, elements(seq))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let seq = sequence(inputs, 0, NAME)?;
        let at = position(datum(inputs, 1, NAME)?.tensor()?, seq.len(), false, NAME)?;
        Ok(vec![Datum::Tensor(seq[at].clone())])
    }
}

data_operator!(SequenceAt, "SequenceAt", makes_data: false);
