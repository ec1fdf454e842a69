use crate::BuildCx;
use metal_mps_ir::{AutoPad, ConvAttrs, Error, LrnAttrs, Op, PoolAttrs, PoolKind, Result, Window};

fn window(ctx: &BuildCx, kernel: Vec<usize>) -> Result<Window> {
    let a = &ctx.attrs;
    let auto_pad = match a.string("auto_pad")?.as_deref().unwrap_or("NOTSET") {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => return Err(Error::InvalidModel(format!("unknown auto_pad '{other}'"))),
    };
    let spatial = kernel.len();
    let fill = |v: Option<Vec<usize>>, n: usize| v.unwrap_or_else(|| vec![1; n]);
    let pads = a.sizes("pads")?.unwrap_or_default();
    if !pads.is_empty() && spatial > 0 && pads.len() != 2 * spatial {
        return Err(Error::InvalidModel(format!(
            "pads has {} values for {spatial} spatial dims",
            pads.len()
        )));
    }
    Ok(Window {
        strides: fill(a.sizes("strides")?, spatial),
        dilations: fill(a.sizes("dilations")?, spatial),
        pads,
        auto_pad,
        ceil_mode: a.int("ceil_mode", 0)? != 0,
        kernel,
    })
}

pub fn conv(ctx: &BuildCx) -> Result<Op> {
    let kernel = ctx.attrs.sizes("kernel_shape")?.unwrap_or_default();
    Ok(Op::Conv(ConvAttrs {
        window: window(ctx, kernel)?,
        group: ctx.attrs.int("group", 1)?.max(1) as usize,
        activation: Default::default(),
        max_pool_2x2: false,
    }))
}

pub fn pool(ctx: &BuildCx) -> Result<Op> {
    let kernel = ctx
        .attrs
        .sizes("kernel_shape")?
        .ok_or_else(|| Error::InvalidModel("pooling needs the 'kernel_shape' attribute".into()))?;
    let kind = if ctx.op_type == "MaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Average
    };
    if kind == PoolKind::Max && (ctx.num_outputs > 1 || ctx.attrs.int("storage_order", 0)? != 0) {
        // The Indices output (and its storage order): the spatial family's MaxPool.
        return crate::spatial::pool::build(ctx);
    }
    Ok(Op::Pool(PoolAttrs {
        kind,
        window: window(ctx, kernel)?,
        count_include_pad: ctx.attrs.int("count_include_pad", 0)? != 0,
    }))
}

/// Softmax before opset 13 normalizes over the input seen as 2-D; from 13 over one axis.
pub fn softmax(ctx: &BuildCx) -> Result<Op> {
    let legacy = ctx.opset < 13;
    let axis = ctx.attrs.int("axis", if legacy { 1 } else { -1 })?;
    Ok(Op::Softmax { axis, legacy })
}

pub fn lrn(ctx: &BuildCx) -> Result<Op> {
    let a = &ctx.attrs;
    let size = a
        .opt_int("size")?
        .ok_or_else(|| Error::InvalidModel("LRN needs the 'size' attribute".into()))?;
    if size <= 0 {
        return Err(Error::InvalidModel(format!(
            "LRN size must be positive, got {size}"
        )));
    }
    Ok(Op::Lrn(LrnAttrs {
        alpha: a.float("alpha", 1e-4)?,
        beta: a.float("beta", 0.75)?,
        bias: a.float("bias", 1.0)?,
        size: size as usize,
    }))
}
