//! CastLike: Cast to the dtype of a second input, with Cast's `saturate` and
//! `round_mode` (the built-in Cast kernel).

use crate::support::{arg, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DynOp, E8M0Round, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct CastLike {
    saturate: bool,
    round: E8M0Round,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(CastLike {
        saturate: cx.attrs.flag("saturate", true)?,
        round: crate::quant::cast::round_mode("CastLike", &cx.attrs.str_or("round_mode", "up")?)?,
    })))
}

impl Operator for CastLike {
    fn name(&self) -> &str {
        "CastLike"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        Ok(vec![like(x, known(ins, 1)?.dtype)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let to = arg(inputs, 1)?.dtype();
        metal_mps_cpu::cast_with(x, to, self.saturate, self.round, out).map(|y| vec![y])
    }

    /// The Cast kernel converts to and from STRING.
    fn takes_strings(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
