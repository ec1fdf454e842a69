use crate::BuildCx;
use metal_mps_ir::{BinaryOp, Error, Op, Result, UnaryOp};

pub fn binary(ctx: &BuildCx) -> Result<Op> {
    let op = Op::Binary(match ctx.op_type {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        "Div" => BinaryOp::Div,
        _ => BinaryOp::Pow,
    });
    crate::elementwise::legacy::wrap(ctx, op)
}

pub fn unary(ctx: &BuildCx) -> Result<Op> {
    let a = &ctx.attrs;
    Ok(Op::Unary(match ctx.op_type {
        "Relu" => UnaryOp::Relu,
        "Sigmoid" => UnaryOp::Sigmoid,
        "Tanh" => UnaryOp::Tanh,
        "Sqrt" => UnaryOp::Sqrt,
        "Exp" => UnaryOp::Exp,
        "Log" => UnaryOp::Log,
        "Neg" => UnaryOp::Neg,
        "Abs" => UnaryOp::Abs,
        "LeakyRelu" => UnaryOp::LeakyRelu {
            alpha: a.float("alpha", 0.01)?,
        },
        "HardSigmoid" => UnaryOp::HardSigmoid {
            alpha: a.float("alpha", 0.2)?,
            beta: a.float("beta", 0.5)?,
        },
        _ => UnaryOp::HardSwish,
    }))
}

/// Clip: bounds are attributes before opset 11, optional inputs from 11 on.
pub fn clip(ctx: &BuildCx) -> Result<Op> {
    if ctx.opset < 11 {
        let min = ctx.attrs.float("min", f32::MIN)?;
        let max = ctx.attrs.float("max", f32::MAX)?;
        return Ok(Op::Unary(UnaryOp::Clamp { min, max }));
    }
    Ok(Op::Clip)
}

pub fn cast(ctx: &BuildCx) -> Result<Op> {
    let to = ctx
        .attrs
        .opt_int("to")?
        .ok_or_else(|| Error::InvalidModel("Cast needs the 'to' attribute".into()))?;
    let to = metal_mps_ir::DType::from_onnx_code(to)?;
    // `saturate` from opset 19, `round_mode` from opset 25 (FLOAT8 targets only).
    let saturate = ctx.attrs.flag("saturate", true)?;
    let round = crate::quant::cast::round_mode("Cast", &ctx.attrs.str_or("round_mode", "up")?)?;
    Ok(crate::quant::cast::cast_op(to, saturate, round))
}
