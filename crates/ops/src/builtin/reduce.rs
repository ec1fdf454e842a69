use crate::BuildCx;
use metal_mps_ir::{Op, ReduceOp, Result};

/// ReduceSum takes axes as an input from opset 13, the others from opset 18.
pub fn reduce(ctx: &BuildCx) -> Result<Op> {
    let op = match ctx.op_type {
        "ReduceMean" => ReduceOp::Mean,
        "ReduceSum" => ReduceOp::Sum,
        "ReduceMax" => ReduceOp::Max,
        _ => ReduceOp::Min,
    };
    let axes_as_input = if op == ReduceOp::Sum {
        ctx.opset >= 13
    } else {
        ctx.opset >= 18
    };
    let axes = if axes_as_input {
        None
    } else {
        ctx.attrs.ints("axes")?
    };
    Ok(Op::Reduce {
        op,
        axes,
        keepdims: ctx.attrs.int("keepdims", 1)? != 0,
        noop_with_empty_axes: ctx.attrs.int("noop_with_empty_axes", 0)? != 0,
    })
}
