//! Cast with a non-default `saturate` (opset 19+, FLOAT8 targets) or
//! `round_mode` (opset 25+, FLOAT8E8M0 targets). The default conversion is the
//! built-in `Op::Cast`; this operator runs the same kernel with the settings.

use crate::support::{arg, known, like};
use metal_mps_ir::infer::Known;
use metal_mps_ir::{invalid, DType, DynOp, E8M0Round, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

/// Cast's `round_mode` attribute.
pub fn round_mode(name: &str, mode: &str) -> Result<E8M0Round> {
    match mode {
        "up" => Ok(E8M0Round::Up),
        "down" => Ok(E8M0Round::Down),
        "nearest" => Ok(E8M0Round::Nearest),
        m => invalid!("{name}: round_mode '{m}' is not one of up, down, nearest"),
    }
}

/// The op of `Cast(to, saturate, round_mode)`: the built-in `Op::Cast` when
/// the settings change nothing for `to`.
pub fn cast_op(to: DType, saturate: bool, round: E8M0Round) -> Op {
    let default = match to {
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => saturate,
        DType::F8E8M0 => saturate && round == E8M0Round::Up,
        _ => true,
    };
    if default {
        Op::Cast { to }
    } else {
        Op::Dyn(DynOp::new(CastWith {
            to,
            saturate,
            round,
        }))
    }
}

#[derive(Debug)]
struct CastWith {
    to: DType,
    saturate: bool,
    round: E8M0Round,
}

impl Operator for CastWith {
    fn name(&self) -> &str {
        "Cast"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        Ok(vec![like(known(ins, 0)?, self.to)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        Ok(vec![metal_mps_cpu::cast_with(
            x,
            self.to,
            self.saturate,
            self.round,
            out,
        )?])
    }

    /// The Cast kernel converts to and from STRING.
    fn takes_strings(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
