//! SequenceConstruct: a sequence of its input tensors, in order.

use super::{data_operator, datum};
use crate::control::merge_shapes;
use crate::support::known;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{Datum, Dim, DynOp, Fact, Kind, Op, Result};

#[derive(Debug)]
pub struct SequenceConstruct;

pub fn build(cx: &BuildCx) -> Result<Op> {
    if cx.num_inputs == 0 {
        return metal_mps_ir::invalid!("SequenceConstruct needs at least one input");
    }
    Ok(Op::Dyn(DynOp::new(SequenceConstruct)))
}

impl SequenceConstruct {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        let first = known(ins, 0)?;
        let mut shape = first.shape.map(<[Dim]>::to_vec);
        for i in 0..ins.len() {
            let k = known(ins, i)?;
            if !k.kind.is_tensor() {
                return metal_mps_ir::invalid!("SequenceConstruct: input {i} is a {}", k.kind);
            }
            if k.dtype != first.dtype {
                return metal_mps_ir::invalid!(
                    "SequenceConstruct: inputs are {} and {}",
                    first.dtype,
                    k.dtype
                );
            }
            shape = merge_shapes(&shape, &k.shape.map(<[Dim]>::to_vec));
        }
        Ok(vec![(Kind::Sequence, (first.dtype, shape))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let mut seq = Vec::with_capacity(inputs.len());
        for i in 0..inputs.len() {
            let t = datum(inputs, i, "SequenceConstruct")?.tensor()?;
            if let Some(first) = seq.first().map(|f: &metal_mps_ir::Tensor| f.dtype()) {
                if t.dtype() != first {
                    return metal_mps_ir::invalid!(
                        "SequenceConstruct: inputs are {first} and {}",
                        t.dtype()
                    );
                }
            }
            seq.push(t.clone());
        }
        Ok(vec![Datum::Sequence(seq)])
    }
}

data_operator!(SequenceConstruct, "SequenceConstruct", makes_data: true);
