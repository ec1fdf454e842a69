use crate::BuildCx;
use metal_mps_ir::{GemmAttrs, Op, Result};

pub fn gemm(ctx: &BuildCx) -> Result<Op> {
    let a = &ctx.attrs;
    Ok(Op::Gemm(GemmAttrs {
        alpha: a.float("alpha", 1.0)?,
        beta: a.float("beta", 1.0)?,
        trans_a: a.int("transA", 0)? != 0,
        trans_b: a.int("transB", 0)? != 0,
        activation: Default::default(),
    }))
}
