//! StringConcat (opset 20): elementwise concatenation with broadcasting.

use crate::support::{arg, broadcast_all, broadcast_offsets, known};
use crate::BuildCx;
use metal_mps_ir::infer::{broadcast_known, Known};
use metal_mps_ir::{DType, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct StringConcat;

pub fn build(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(StringConcat)))
}

impl Operator for StringConcat {
    fn name(&self) -> &str {
        "StringConcat"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (a, b) = (known(ins, 0)?, known(ins, 1)?);
        for k in [a, b] {
            if k.dtype != DType::String {
                return metal_mps_ir::invalid!("StringConcat takes STRING inputs, not {}", k.dtype);
            }
        }
        Ok(vec![(DType::String, broadcast_known(&[a, b])?)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let (a, b) = (arg(ins, 0)?, arg(ins, 1)?);
        let shape = broadcast_all(&[a.shape(), b.shape()])?;
        let (sa, sb) = (a.as_strings()?, b.as_strings()?);
        let oa = broadcast_offsets(a.shape(), &shape)?;
        let ob = broadcast_offsets(b.shape(), &shape)?;
        let y = oa
            .iter()
            .zip(&ob)
            .map(|(&i, &j)| [sa[i].as_slice(), sb[j].as_slice()].concat())
            .collect();
        Ok(vec![Tensor::from_strings(shape, y)?])
    }

    fn takes_strings(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
