//! Launcher of MaxPool and AveragePool over 1-D and 2-D windows (`pool.wgsl`).

use super::{grid, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::Result;

/// Geometry of a pool over `planes` (N x C) planes of `ih x iw` (1-D: height 1).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolGeometry {
    pub planes: usize,
    pub ih: usize,
    pub iw: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad_begin: [usize; 2],
    pub pad_end: [usize; 2],
    pub max: bool,
    pub count_include_pad: bool,
}

pub fn pool(
    ctx: &GpuContext,
    dtype: Scalar,
    g: &PoolGeometry,
    x: Binding,
    y: Binding,
) -> Result<Call> {
    let n = g.planes * g.oh * g.ow;
    let params = Params::default()
        .u32(u32_of(n, "elements")?)
        .u32(u32_of(g.ih, "height")?)
        .u32(u32_of(g.iw, "width")?)
        .u32(u32_of(g.oh, "height")?)
        .u32(u32_of(g.ow, "width")?)
        .u32(u32_of(g.pad_begin[0], "pad")?)
        .u32(u32_of(g.pad_begin[1], "pad")?)
        .u32(u32_of(g.pad_end[0], "pad")?)
        .u32(u32_of(g.pad_end[1], "pad")?)
        .finish();
    let key = PipelineKey::new(Kernel::Pool, Variant::of(dtype), "main")
        .with("KH", Const::U32(u32_of(g.kernel[0], "kernel")?))
        .with("KW", Const::U32(u32_of(g.kernel[1], "kernel")?))
        .with("SH", Const::U32(u32_of(g.stride[0], "stride")?))
        .with("SW", Const::U32(u32_of(g.stride[1], "stride")?))
        .with("DH", Const::U32(u32_of(g.dilation[0], "dilation")?))
        .with("DW", Const::U32(u32_of(g.dilation[1], "dilation")?))
        .with("IS_MAX", Const::Bool(g.max))
        .with("INCLUDE_PAD", Const::Bool(g.count_include_pad));
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![x, y],
        groups: grid(n as u64)?,
    })
}
