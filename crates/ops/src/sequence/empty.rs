//! SequenceEmpty: a sequence with no tensors, of the dtype its attribute names.

use super::data_operator;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Datum, DynOp, Fact, Kind, Op, Result};

#[derive(Debug)]
pub struct SequenceEmpty {
    dtype: DType,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let dtype = DType::from_onnx_code(cx.attrs.int("dtype", 1)?)?;
    Ok(Op::Dyn(DynOp::new(SequenceEmpty { dtype })))
}

impl SequenceEmpty {
    fn infer_kinds(&self, _: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        Ok(vec![(Kind::Sequence, (self.dtype, None))])
    }

    fn run(&self, _: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        Ok(vec![Datum::Sequence(Vec::new())])
    }
}

data_operator!(SequenceEmpty, "SequenceEmpty", makes_data: true);
