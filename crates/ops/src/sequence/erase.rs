//! SequenceErase: a copy of the sequence without the tensor at a position
//! (the last one when none is given).

use super::{data_operator, elements, known_kind, position, sequence, tensor_opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{Datum, DynOp, Fact, Kind, Op, Result};

#[derive(Debug)]
pub struct SequenceErase;

pub fn build(_: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(SequenceErase)))
}

const NAME: &str = "SequenceErase";

impl SequenceErase {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        let seq = known_kind(ins, 0, &Kind::Sequence, NAME)?;
        if ins.get(1).is_some_and(Option::is_some) {
            known_kind(ins, 1, &Kind::Tensor, NAME)?;
        }
        Ok(vec![(Kind::Sequence, elements(seq))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let seq = sequence(inputs, 0, NAME)?;
        if seq.is_empty() {
            return metal_mps_ir::invalid!("{NAME}: the sequence is empty");
        }
        let at = match tensor_opt(inputs, 1, NAME)? {
            Some(p) => position(p, seq.len(), false, NAME)?,
            None => seq.len() - 1,
        };
        let mut out = seq.to_vec();
        out.remove(at);
        Ok(vec![Datum::Sequence(out)])
    }
}

data_operator!(SequenceErase, "SequenceErase", makes_data: false);
