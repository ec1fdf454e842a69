//! SequenceInsert: a copy of the sequence with a tensor inserted at a position
//! (at the end when none is given).

use super::{check_elements, data_operator, datum, known_kind, position, sequence, tensor_opt};
use crate::control::merge_shapes;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Datum, Dim, DynOp, Fact, Kind, Op, Result};

#[derive(Debug)]
pub struct SequenceInsert;

pub fn build(_: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(SequenceInsert)))
}

const NAME: &str = "SequenceInsert";

impl SequenceInsert {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        let seq = known_kind(ins, 0, &Kind::Sequence, NAME)?;
        let t = known_kind(ins, 1, &Kind::Tensor, NAME)?;
        if seq.dtype != t.dtype {
            return metal_mps_ir::invalid!(
                "{NAME}: a {} tensor cannot join a sequence of {}",
                t.dtype,
                seq.dtype
            );
        }
        if let Some(p) = ins.get(2).and_then(Option::as_ref) {
            known_kind(ins, 2, &Kind::Tensor, NAME)?;
            crate::support::check_dtype(NAME, p.dtype, &[DType::I32, DType::I64])?;
        }
        let shape = merge_shapes(
            &seq.shape.map(<[Dim]>::to_vec),
            &t.shape.map(<[Dim]>::to_vec),
        );
        Ok(vec![(Kind::Sequence, (seq.dtype, shape))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let seq = sequence(inputs, 0, NAME)?;
        let t = datum(inputs, 1, NAME)?.tensor()?;
        check_elements(NAME, seq, t)?;
        let at = match tensor_opt(inputs, 2, NAME)? {
            Some(p) => position(p, seq.len(), true, NAME)?,
            None => seq.len(),
        };
        let mut out = seq.to_vec();
        out.insert(at, t.clone());
        Ok(vec![Datum::Sequence(out)])
    }
}

data_operator!(SequenceInsert, "SequenceInsert", makes_data: false);
