use crate::BuildCx;
use metal_mps_ir::{Error, Op, Result};

pub fn reshape(ctx: &BuildCx) -> Result<Op> {
    if ctx.opset < 5 {
        return Err(Error::Unsupported(
            "Reshape with a 'shape' attribute (opset < 5)".into(),
        ));
    }
    Ok(Op::Reshape {
        allowzero: ctx.attrs.int("allowzero", 0)? != 0,
    })
}

pub fn transpose(ctx: &BuildCx) -> Result<Op> {
    let perm = ctx.attrs.sizes("perm")?.unwrap_or_default();
    Ok(Op::Transpose { perm })
}

pub fn concat(ctx: &BuildCx) -> Result<Op> {
    let axis = ctx
        .attrs
        .opt_int("axis")?
        .ok_or_else(|| Error::InvalidModel("Concat needs the 'axis' attribute".into()))?;
    Ok(Op::Concat { axis })
}

/// Split: sizes as an attribute before opset 13, as an input from 13, and
/// `num_outputs` from 18.
pub fn split(ctx: &BuildCx) -> Result<Op> {
    let axis = ctx.attrs.int("axis", 0)?;
    let sizes = if ctx.opset < 13 {
        ctx.attrs.ints("split")?.filter(|s| !s.is_empty())
    } else {
        None
    };
    let num_outputs = match ctx.attrs.opt_int("num_outputs")? {
        Some(n) if n <= 0 => {
            return Err(Error::InvalidModel(format!(
                "num_outputs must be positive, got {n}"
            )))
        }
        Some(n) => {
            if n as usize != ctx.num_outputs {
                return Err(Error::InvalidModel(format!(
                    "num_outputs is {n} but the node has {} outputs",
                    ctx.num_outputs
                )));
            }
            n as usize
        }
        None => ctx.num_outputs,
    };
    Ok(Op::Split {
        axis,
        sizes,
        num_outputs,
    })
}

pub fn flatten(ctx: &BuildCx) -> Result<Op> {
    Ok(Op::Flatten {
        axis: ctx.attrs.int("axis", 1)?,
    })
}

/// Squeeze/Unsqueeze take axes as an attribute before opset 13, as an input from 13.
pub fn squeeze(ctx: &BuildCx) -> Result<Op> {
    let axes = if ctx.opset < 13 {
        ctx.attrs.ints("axes")?
    } else {
        None
    };
    Ok(Op::Squeeze { axes })
}

pub fn unsqueeze(ctx: &BuildCx) -> Result<Op> {
    let axes =
        if ctx.opset < 13 {
            Some(ctx.attrs.ints("axes")?.ok_or_else(|| {
                Error::InvalidModel("Unsqueeze needs the 'axes' attribute".into())
            })?)
        } else {
            if ctx.num_inputs < 2 {
                return Err(Error::InvalidModel(
                    "Unsqueeze needs the 'axes' input (opset 13+)".into(),
                ));
            }
            None
        };
    Ok(Op::Unsqueeze { axes })
}

pub fn shape(ctx: &BuildCx) -> Result<Op> {
    Ok(Op::Shape {
        start: ctx.attrs.int("start", 0)?,
        end: ctx.attrs.opt_int("end")?,
    })
}

pub fn gather(ctx: &BuildCx) -> Result<Op> {
    Ok(Op::Gather {
        axis: ctx.attrs.int("axis", 0)?,
    })
}
