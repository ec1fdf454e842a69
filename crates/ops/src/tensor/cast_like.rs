//! CastLike: Cast to the dtype of a second input (the built-in Cast kernel).

use crate::support::{arg, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{unsupported, DType, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct CastLike {
    saturate: bool,
    round_mode: String,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(CastLike {
        saturate: cx.attrs.flag("saturate", true)?,
        round_mode: cx.attrs.str_or("round_mode", "up")?,
    })))
}

impl CastLike {
    /// `saturate` only concerns the float8 types and `round_mode` only
    /// FLOAT8E8M0; the conversion computed here knows neither setting.
    fn check(&self, to: DType) -> Result<()> {
        let name = to.onnx_name();
        if !self.saturate && name.starts_with("FLOAT8") {
            return unsupported!("CastLike to {name} with saturate=0");
        }
        if self.round_mode != "up" && name == "FLOAT8E8M0" {
            return unsupported!("CastLike to {name} with round_mode '{}'", self.round_mode);
        }
        Ok(())
    }
}

impl Operator for CastLike {
    fn name(&self) -> &str {
        "CastLike"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let to = known(ins, 1)?.dtype;
        self.check(to)?;
        Ok(vec![like(x, to)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let to = arg(inputs, 1)?.dtype();
        self.check(to)?;
        metal_mps_cpu::eval_op(&Op::Cast { to }, &[Some(x)], 1, out)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
