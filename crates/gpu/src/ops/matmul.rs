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

impl Gemm {
    /// Elements of the output, `[batch.., M, N]`.
    pub fn output_len(&self) -> usize {
        self.batch.iter().product::<usize>() * self.m * self.n
    }

    /// `y[m×n] = A[m×k] · B[k×n]`, both row-major and unbatched: no C, residual or activation.
    pub fn row_major(m: usize, n: usize, k: usize) -> Gemm {
        Gemm {
            m,
            n,
            k,
            batch: vec![],
            a_stride: [k, 1],
            b_stride: [n, 1],
            a_batch_stride: vec![],
            b_batch_stride: vec![],
            alpha: 1.0,
            beta: 0.0,
            c: None,
            residual: None,
            activation: None,
        }
    }
}

/// Tile shape chosen for a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiles {
    /// Plain workgroup tiles of 16 TM x 16 TN; with `splits` > 1 the K axis is
    /// shared among that many workgroups per tile (split-K), whose partial
    /// sums a second pass adds (`split_sum`).
    Plain { tm: u32, tn: u32, splits: u32 },
    /// Cooperative-matrix tiles of `rows` x `cols` fragments of CT x CT (8 or
    /// 4 each), K split like the plain ones. With `nhwc` (convolutions only)
    /// the input is first copied in NHWC order, whence the gather reads eight
    /// channels at a time ([`crate::ops::conv::ConvGeometry::nhwc_fits`]).
    Coop {
        ct: u32,
        rows: u32,
        cols: u32,
        splits: u32,
        nhwc: bool,
    },
}

impl Tiles {
    /// Plain tiles of 16 TM x 16 TN, K not split.
    pub const fn plain(tm: u32, tn: u32) -> Tiles {
        Tiles::Plain { tm, tn, splits: 1 }
    }

    /// Cooperative-matrix tiles of 8 x 8 fragments of size `ct`, K not split.
    pub const fn coop(ct: u32) -> Tiles {
        Tiles::Coop {
            ct,
            rows: 8,
            cols: 8,
            splits: 1,
            nhwc: false,
        }
    }

    /// These cooperative-matrix tiles with `rows` x `cols` fragments (8 or 4
    /// each; plain tiles are left as they are).
    pub const fn fragments(mut self, rows: u32, cols: u32) -> Tiles {
        if let Tiles::Coop {
            rows: r, cols: c, ..
        } = &mut self
        {
            (*r, *c) = (rows, cols);
        }
        self
    }

    /// These cooperative-matrix tiles reading an NHWC copy of a
    /// convolution's input (plain tiles are left as they are).
    pub const fn nhwc(mut self) -> Tiles {
        if let Tiles::Coop { nhwc, .. } = &mut self {
            *nhwc = true;
        }
        self
    }

    /// Whether these tiles read an NHWC copy of the input.
    pub fn reads_nhwc(self) -> bool {
        matches!(self, Tiles::Coop { nhwc: true, .. })
    }

    /// These tiles with K split in `splits` runs.
    pub const fn split(mut self, splits: u32) -> Tiles {
        let (Tiles::Plain { splits: s, .. } | Tiles::Coop { splits: s, .. }) = &mut self;
        *s = splits;
        self
    }

    /// Rows and columns of the output one workgroup computes.
    pub fn block(self) -> (usize, usize) {
        match self {
            Tiles::Plain { tm, tn, .. } => (16 * tm as usize, 16 * tn as usize),
            Tiles::Coop { ct, rows, cols, .. } => ((rows * ct) as usize, (cols * ct) as usize),
        }
    }

    /// Workgroups sharing the K axis of one tile (1: no split-K).
    pub fn splits(self) -> u32 {
        match self {
            Tiles::Plain { splits, .. } | Tiles::Coop { splits, .. } => splits.max(1),
        }
    }

    /// Bytes of the f32 partial sums a product of `out_len` outputs needs on
    /// these tiles (0 without split-K).
    pub fn partial_bytes(self, out_len: usize) -> u64 {
        match self.splits() {
            1 => 0,
            // Whole 16-byte vectors: the cooperative-matrix kernel binds them so.
            s => (u64::from(s) * out_len as u64 * 4).next_multiple_of(16),
        }
    }
}

/// Which kernel family asks for tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    MatMul,
    Conv,
}

/// `METAL_MPS_GPU_TILES` = `64`, `128`, `coop` or `auto` (the default): forces
/// the tiles of every product, for tuning (`coop` only where the adapter and
/// dtype allow it).
pub const TILES_ENV: &str = "METAL_MPS_GPU_TILES";

/// [`TILES_ENV`] when it forces the tiles (`64`, `128` or `coop`).
fn forced_tiles() -> Option<String> {
    std::env::var(TILES_ENV)
        .ok()
        .filter(|v| matches!(v.as_str(), "64" | "128" | "coop"))
}

/// Whether [`TILES_ENV`] forces the tiles of every product (no autotune then).
pub(crate) fn tiles_forced() -> bool {
    forced_tiles().is_some()
}

/// Workgroups that keep a large GPU busy (two per multiprocessor of an H100).
pub(crate) const FULL_GRID: usize = 264;

/// The smallest output side for which a matrix product takes cooperative
/// matrices (a 64-row product in 128-row tiles still beats the plain f16 tiles).
const COOP_MIN: usize = 64;

/// The tiles for an `m x n` output over `batch` products.
///
/// Measured on an H100 (docs/PERFORMANCE-gpu.md): 128 x 128 plain tiles pay
/// only when both sides are large and the grid has a couple of waves; below
/// that 64 x 64 tiles win (a 64-row layer in 128-row tiles idles half of every
/// workgroup). Cooperative-matrix tiles (f16) win for matrix products even on
/// a small grid (H200, BERT-base at batch 1: 6 workgroups of 128 x 128 beat 24
/// plain f16 ones); for convolutions the gather of the input tile dominates and
/// the plain f16 tiles are as fast, so convolutions use them only when forced.
pub fn choose_tiles(
    ctx: &GpuContext,
    kind: Product,
    dtype: Scalar,
    m: usize,
    n: usize,
    batch: usize,
    allow_coop: bool,
) -> Tiles {
    let coop = match (ctx.caps.coop, dtype, allow_coop) {
        (Some(c), Scalar::F16, true) => Some(Tiles::coop(c.size)),
        _ => None,
    };
    let (small, large) = (Tiles::plain(4, 4), Tiles::plain(8, 8));
    match forced_tiles().as_deref() {
        Some("64") => return small,
        Some("128") => return large,
        Some("coop") => return coop.unwrap_or(small),
        _ => {}
    }
    let big = m.div_ceil(128) * n.div_ceil(128) * batch;
    if let Some(c) = coop {
        if kind == Product::MatMul && m >= COOP_MIN && n >= COOP_MIN {
            return c;
        }
    }
    if m >= 256 && n >= 256 && big >= FULL_GRID {
        large
    } else {
        small
    }
}

/// `METAL_MPS_GPU_WIDE=off` keeps the cooperative-matrix kernels on
/// one-element loads (for comparing the two).
pub const WIDE_ENV: &str = "METAL_MPS_GPU_WIDE";

/// Whether [`WIDE_ENV`] allows wide loads (the adapter's self-test decides
/// too: [`crate::context::CoopShape::wide`]).
pub(crate) fn wide_allowed() -> bool {
    std::env::var(WIDE_ENV).map_or(true, |v| v != "off")
}

/// The eight-f16 view of an operand that `gemm_coop.wgsl` reads 16 bytes at a
/// time, when its binding starts 16-byte aligned and holds a whole vector.
pub(crate) fn wide_view(b: &Binding) -> Option<Binding> {
    let size = b.size / 16 * 16;
    (b.offset.is_multiple_of(16) && size > 0).then(|| Binding {
        buffer: b.buffer.clone(),
        offset: b.offset,
        size,
    })
}

/// Whether a product on `tiles` may take wide loads on this adapter (the
/// operands' layouts decide the rest).
pub(crate) fn wide_loads(ctx: &GpuContext, tiles: Tiles) -> bool {
    matches!(tiles, Tiles::Coop { .. }) && ctx.caps.coop.is_some_and(|c| c.wide)
}

/// Whether the cooperative-matrix kernel writes `y` eight f16 at a time
/// (`OUT_WIDE` of `gemm_coop.wgsl`): no split-K, wide loads allowed on this
/// adapter, `rows_aligned` (the launcher's layout: every output index from a
/// multiple of 8 along n starts eight contiguous elements of one row, at a
/// multiple of 8), and `y` and the residual at 16-byte offsets.
pub(crate) fn wide_out(
    ctx: &GpuContext,
    tiles: Tiles,
    rows_aligned: bool,
    y: &Binding,
    residual: Option<&Binding>,
) -> bool {
    wide_loads(ctx, tiles)
        && tiles.splits() == 1
        && rows_aligned
        && wide_view(y).is_some()
        && residual.is_none_or(|r| wide_view(r).is_some())
}

/// The bindings after the output `y`: for the cooperative-matrix kernels,
/// the wide views of A and B (6 and 7), or the dummy where an operand takes
/// scalar loads; then the split-K partial sums (6 for the plain tiles, 8 for
/// cooperative matrices), or `y` again without split-K (written there only
/// with `OUT_WIDE`); then for cooperative matrices the residual's wide view
/// (9), or the dummy.
pub(crate) fn tail_bindings(
    tiles: Tiles,
    [a, b, residual]: [Option<Binding>; 3],
    y: &Binding,
    partial: Option<&Binding>,
    dummy: &Binding,
) -> Result<Vec<Binding>> {
    let part = match (tiles.splits(), partial) {
        (1, _) => y.clone(),
        (_, Some(p)) => p.clone(),
        (_, None) => {
            return Err(Error::Invalid(
                "a split-K product without a buffer for its partial sums".into(),
            ))
        }
    };
    Ok(match tiles {
        Tiles::Plain { .. } => vec![part],
        Tiles::Coop { .. } => vec![
            a.unwrap_or_else(|| dummy.clone()),
            b.unwrap_or_else(|| dummy.clone()),
            part,
            residual.unwrap_or_else(|| dummy.clone()),
        ],
    })
}

/// How a split-K product's second pass finishes the output (`split_sum.wgsl`):
/// `y = act(alpha * sum + beta * C + R)` over an output of `len` elements laid
/// out `[.., rows, inner]`, C read at `row * c_stride[0] + col * c_stride[1]`.
pub(crate) struct SplitEpilogue {
    pub len: usize,
    pub inner: usize,
    pub rows: usize,
    pub alpha: f32,
    pub beta: f32,
    pub c: Option<(Binding, [usize; 2])>,
    pub residual: Option<Binding>,
    pub activation: Option<UnaryOp>,
}

/// The second pass of a product on split-K `tiles`: adds the partial sums and
/// applies the epilogue.
pub(crate) fn split_sum(
    ctx: &GpuContext,
    dtype: Scalar,
    tiles: Tiles,
    e: SplitEpilogue,
    partial: Binding,
    y: Binding,
    dummy: &Binding,
) -> Result<Call> {
    let c_stride = e.c.as_ref().map_or([0, 0], |c| c.1);
    let params = Params::default()
        .u32(u32_of(e.len, "outputs")?)
        .u32(tiles.splits())
        .u32(u32_of(e.inner.max(1), "columns")?)
        .u32(u32_of(e.rows.max(1), "rows")?)
        .u32(u32_of(c_stride[0], "stride")?)
        .u32(u32_of(c_stride[1], "stride")?)
        .f32(e.alpha)
        .f32(e.beta)
        .finish();
    let key = PipelineKey::new(Kernel::SplitSum, Variant::of(dtype), "main")
        .with("HAS_C", Const::Bool(e.c.is_some()))
        .with("HAS_RES", Const::Bool(e.residual.is_some()));
    let key = with_activation(key, e.activation);
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![
            partial,
            e.c.map_or_else(|| dummy.clone(), |c| c.0),
            e.residual.unwrap_or_else(|| dummy.clone()),
            y,
        ],
        groups: super::grid(e.len as u64)?,
    })
}

/// Pipeline constants shared by MatMul and Conv: tiles, load patterns, and
/// (cooperative matrices only) which operands take wide loads.
pub(crate) fn tile_key(
    kernel_plain: Kernel,
    kernel_coop: Kernel,
    dtype: Scalar,
    tiles: Tiles,
    a_kfast: bool,
    b_nfast: bool,
    wide: [bool; 3],
) -> PipelineKey {
    let key = match tiles {
        Tiles::Plain { tm, tn, .. } => PipelineKey::new(kernel_plain, Variant::of(dtype), "main")
            .with("TM", Const::U32(tm))
            .with("TN", Const::U32(tn)),
        Tiles::Coop { ct, .. } => PipelineKey::new(
            kernel_coop,
            Variant {
                t: Scalar::F16,
                u: None,
                coop: Some(ct),
                head_vec4s: None,
            },
            "main",
        ),
    };
    let key = key
        .with("SPLITS", Const::U32(tiles.splits()))
        .with("A_KFAST", Const::Bool(a_kfast))
        .with("B_NFAST", Const::Bool(b_nfast));
    match tiles {
        Tiles::Plain { .. } => key,
        Tiles::Coop {
            nhwc, rows, cols, ..
        } => key
            .with("CM_ROWS", Const::U32(rows))
            .with("CM_COLS", Const::U32(cols))
            .with("A_WIDE", Const::Bool(wide[0]))
            .with("B_WIDE", Const::Bool(wide[1]))
            .with("B_COLMAJOR", Const::Bool(nhwc))
            .with("OUT_WIDE", Const::Bool(wide[2])),
    }
}

pub(crate) fn with_activation(key: PipelineKey, activation: Option<UnaryOp>) -> PipelineKey {
    let (code, a, b) = act_code(activation);
    key.with("ACT", Const::U32(code))
        .with("ACT_A", Const::F32(a))
        .with("ACT_B", Const::F32(b))
}

/// Records `g` on buffers `a`, `b`, `y` with the given tiles: one call, or
/// two on split-K tiles, whose partial sums go to `partial`
/// ([`Tiles::partial_bytes`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ctx: &GpuContext,
    dtype: Scalar,
    g: &Gemm,
    tiles: Tiles,
    a: Binding,
    b: Binding,
    y: Binding,
    partial: Option<Binding>,
    dummy: &Binding,
) -> Result<Vec<Call>> {
    if g.batch.len() > MAX_BATCH_DIMS {
        return Err(Error::Unsupported(format!(
            "MatMul with {} batch dims on the GPU",
            g.batch.len()
        )));
    }
    if tiles.reads_nhwc() {
        return Err(Error::Invalid(
            "NHWC tiles are for convolutions, not MatMul".into(),
        ));
    }
    let batch: usize = g.batch.iter().product();
    if batch > super::MAX_GROUPS as usize {
        return Err(Error::Unsupported(format!(
            "MatMul over {batch} batches on the GPU"
        )));
    }
    let pad = MAX_BATCH_DIMS - g.batch.len();
    let padded = |v: &[usize], fill: usize| -> Result<Vec<u32>> {
        std::iter::repeat_n(fill, pad)
            .chain(v.iter().copied())
            .map(|x| u32_of(x, "batch stride"))
            .collect()
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
    let (a8, b8) = match wide_loads(ctx, tiles) {
        true => wide_operands(g, &a, &b, b_nfast),
        false => (None, None),
    };
    // Rows of N outputs: eight from a multiple of 8 are contiguous in one row.
    let out_wide = wide_out(ctx, tiles, g.n.is_multiple_of(8), &y, g.residual.as_ref());
    let key = tile_key(
        Kernel::Matmul,
        Kernel::MatmulCoop,
        dtype,
        tiles,
        a_kfast,
        b_nfast,
        [a8.is_some(), b8.is_some(), out_wide],
    )
    .with("HAS_C", Const::Bool(g.c.is_some()))
    .with("HAS_RES", Const::Bool(g.residual.is_some()));
    let key = with_activation(key, g.activation);
    let (bm, bn) = tiles.block();
    let groups = [
        u32_of(g.n.div_ceil(bn).max(1), "column tiles")?,
        u32_of(g.m.div_ceil(bm).max(1), "row tiles")?,
        u32_of(batch.max(1) * tiles.splits() as usize, "batches")?,
    ];
    if groups.iter().any(|&v| v > super::MAX_GROUPS) {
        return Err(Error::Unsupported(format!(
            "a {}x{} product has too many tiles for one dispatch",
            g.m, g.n
        )));
    }
    let c =
        g.c.as_ref()
            .map(|(b, _)| b.clone())
            .unwrap_or_else(|| dummy.clone());
    let r = g.residual.clone().unwrap_or_else(|| dummy.clone());
    let mut bindings = vec![a, b, c, r, y.clone()];
    let r8 = g.residual.as_ref().and_then(wide_view);
    bindings.extend(tail_bindings(
        tiles,
        [a8, b8, r8],
        &y,
        partial.as_ref(),
        dummy,
    )?);
    let mut calls = vec![Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings,
        groups,
    }];
    if let Some(partial) = partial.filter(|_| tiles.splits() > 1) {
        let e = SplitEpilogue {
            len: g.output_len(),
            inner: g.n,
            rows: g.m,
            alpha: g.alpha,
            beta: g.beta,
            c: g.c.clone(),
            residual: g.residual.clone(),
            activation: g.activation,
        };
        calls.push(split_sum(ctx, dtype, tiles, e, partial, y, dummy)?);
    }
    Ok(calls)
}

/// The wide views of A and B for `matmul_io.wgsl`'s `a_wide` and `b_wide`:
/// an operand qualifies when its unit-stride axis is the one the kernel
/// loads along (k for A; n or k for B) and every other offset, the length of
/// that axis included, is a multiple of 8 elements.
fn wide_operands(
    g: &Gemm,
    a: &Binding,
    b: &Binding,
    b_nfast: bool,
) -> (Option<Binding>, Option<Binding>) {
    let eights = |v: &[usize]| v.iter().all(|x| x.is_multiple_of(8));
    let a_ok = g.a_stride[1] == 1 && eights(&[g.a_stride[0], g.k]) && eights(&g.a_batch_stride);
    let b_ok = if b_nfast {
        g.b_stride[1] == 1 && eights(&[g.b_stride[0], g.n])
    } else {
        g.b_stride[0] == 1 && eights(&[g.b_stride[1], g.k])
    } && eights(&g.b_batch_stride);
    (
        a_ok.then(|| wide_view(a)).flatten(),
        b_ok.then(|| wide_view(b)).flatten(),
    )
}
