//! SequenceLength: the number of tensors in a sequence, as an INT64 scalar.

use super::{data_operator, known_kind, sequence};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Datum, DynOp, Fact, Kind, Op, Result, Tensor};

#[derive(Debug)]
pub struct SequenceLength;

pub fn build(_: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(SequenceLength)))
}

const NAME: &str = "SequenceLength";

impl SequenceLength {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        known_kind(ins, 0, &Kind::Sequence, NAME)?;
        Ok(vec![(Kind::Tensor, (DType::I64, Some(vec![])))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let n = sequence(inputs, 0, NAME)?.len() as i64;
        Ok(vec![Datum::Tensor(Tensor::scalar(n))])
    }
}

data_operator!(SequenceLength, "SequenceLength", makes_data: false);
