//! Launcher of MatMul and Gemm (`matmul_io.wgsl` on `gemm_tiled.wgsl` or
//! `gemm_coop.wgsl`).

use super::{act_code, u32_of, Binding, Call, Params};
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::{Error, Result, UnaryOp};

/// Most broadcast batch dims of a MatMul.
pub const MAX_BATCH_DIMS: usize = 4;

/// A batched product `y[b] = act(alpha A[b] B[b] + beta C + R[b])`, `y` contiguous `[batch.., M, N]`.
#[derive(Clone, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Batch dims of the output, outermost first.
    pub batch: Vec<usize>,
    /// Element strides of A along m and k.
    pub a_stride: [usize; 2],
    /// Element strides of B along k and n.
    pub b_stride: [usize; 2],
    /// Element strides of A and B per batch dim (0 where broadcast).
    pub a_batch_stride: Vec<usize>,
    pub b_batch_stride: Vec<usize>,
    pub alpha: f32,
    pub beta: f32,
    /// C and its strides along m and n (0 where broadcast).
    pub c: Option<(Binding, [usize; 2])>,
    /// A residual of y's shape added before the activation.
    pub residual: Option<Binding>,
    pub activation: Option<UnaryOp>,
}

/// Tile shape chosen for a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiles {
    /// Plain workgroup tiles of 16 TM x 16 TN.
    Plain { tm: u32, tn: u32 },
    /// Cooperative-matrix tiles of 8 CT x 8 CT.
    Coop { ct: u32 },
}

impl Tiles {
    pub fn block(self) -> (usize, usize) {
        match self {
            Tiles::Plain { tm, tn } => (16 * tm as usize, 16 * tn as usize),
            Tiles::Coop { ct } => (8 * ct as usize, 8 * ct as usize),
        }
    }
}

/// The tiles for an `m x n` output over `batch` products: cooperative matrices
/// for f16 where offered; else 128 x 128 tiles when they make enough
/// workgroups to fill a large GPU, 64 x 64 otherwise.
pub fn choose_tiles(ctx: &GpuContext, dtype: Scalar, m: usize, n: usize, batch: usize, allow_coop: bool) -> Tiles {
    if let (Some(c), Scalar::F16, true) = (ctx.caps.coop, dtype, allow_coop) {
        return Tiles::Coop { ct: c.size };
    }
    let big = m.div_ceil(128) * n.div_ceil(128) * batch;
    if big >= 256 {
        Tiles::Plain { tm: 8, tn: 8 }
    } else {
        Tiles::Plain { tm: 4, tn: 4 }
    }
}

/// Pipeline constants shared by MatMul and Conv: tiles and load patterns.
pub(crate) fn tile_key(kernel_plain: Kernel, kernel_coop: Kernel, dtype: Scalar, tiles: Tiles, a_kfast: bool, b_nfast: bool) -> PipelineKey {
    let key = match tiles {
        Tiles::Plain { tm, tn } => PipelineKey::new(kernel_plain, Variant::of(dtype), "main")
            .with("TM", Const::U32(tm))
            .with("TN", Const::U32(tn)),
        Tiles::Coop { ct } => PipelineKey::new(kernel_coop, Variant { t: Scalar::F16, u: None, coop: Some(ct) }, "main"),
    };
    key.with("A_KFAST", Const::Bool(a_kfast)).with("B_NFAST", Const::Bool(b_nfast))
}

pub(crate) fn with_activation(key: PipelineKey, activation: Option<UnaryOp>) -> PipelineKey {
    let (code, a, b) = act_code(activation);
    key.with("ACT", Const::U32(code)).with("ACT_A", Const::F32(a)).with("ACT_B", Const::F32(b))
}

/// Records `g` on buffers `a`, `b`, `y` with the given tiles.
pub fn matmul(ctx: &GpuContext, dtype: Scalar, g: &Gemm, tiles: Tiles, a: Binding, b: Binding, y: Binding, dummy: &Binding) -> Result<Call> {
    if g.batch.len() > MAX_BATCH_DIMS {
        return Err(Error::Unsupported(format!("MatMul with {} batch dims on the GPU", g.batch.len())));
    }
    let batch: usize = g.batch.iter().product();
    if batch > super::MAX_GROUPS as usize {
        return Err(Error::Unsupported(format!("MatMul over {batch} batches on the GPU")));
    }
    let pad = MAX_BATCH_DIMS - g.batch.len();
    let padded = |v: &[usize], fill: usize| -> Result<Vec<u32>> {
        std::iter::repeat_n(fill, pad).chain(v.iter().copied()).map(|x| u32_of(x, "batch stride")).collect()
    };
    let (c_sm, c_sn) = g.c.as_ref().map(|(_, s)| (s[0], s[1])).unwrap_or((0, 0));
    let params = Params::default()
        .u32(u32_of(g.m, "M")?)
        .u32(u32_of(g.n, "N")?)
        .u32(u32_of(g.k, "K")?)
        .u32(0)
        .u32(u32_of(g.a_stride[0], "stride")?)
        .u32(u32_of(g.a_stride[1], "stride")?)
        .u32(u32_of(g.b_stride[0], "stride")?)
        .u32(u32_of(g.b_stride[1], "stride")?)
        .u32(u32_of(c_sm, "stride")?)
        .u32(u32_of(c_sn, "stride")?)
        .f32(g.alpha)
        .f32(g.beta)
        .words(&padded(&g.batch, 1)?, 1, 1)
        .words(&padded(&g.a_batch_stride, 0)?, 1, 0)
        .words(&padded(&g.b_batch_stride, 0)?, 1, 0)
        .finish();
    // A is loaded along k when k is its contiguous axis, B along n likewise.
    let a_kfast = g.a_stride[1] == 1 || g.a_stride[0] != 1;
    let b_nfast = g.b_stride[1] == 1 || g.b_stride[0] != 1;
    let key = tile_key(Kernel::Matmul, Kernel::MatmulCoop, dtype, tiles, a_kfast, b_nfast)
        .with("HAS_C", Const::Bool(g.c.is_some()))
        .with("HAS_RES", Const::Bool(g.residual.is_some()));
    let key = with_activation(key, g.activation);
    let (bm, bn) = tiles.block();
    let groups = [
        u32_of(g.n.div_ceil(bn).max(1), "column tiles")?,
        u32_of(g.m.div_ceil(bm).max(1), "row tiles")?,
        batch.max(1) as u32,
    ];
    if groups[0] > super::MAX_GROUPS || groups[1] > super::MAX_GROUPS {
        return Err(Error::Unsupported(format!("a {}x{} product has too many tiles for one dispatch", g.m, g.n)));
    }
    let c = g.c.as_ref().map(|(b, _)| b.clone()).unwrap_or_else(|| dummy.clone());
    let r = g.residual.clone().unwrap_or_else(|| dummy.clone());
    Ok(Call { pipeline: ctx.pipelines.get(&key)?, params, bindings: vec![a, b, c, r, y], groups })
}
