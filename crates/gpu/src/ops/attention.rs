//! Launcher of fused attention (`attention.wgsl`): scores, scale, mask,
//! softmax and the value product in one kernel.

use super::{u32_of, Binding, Call, Params, MAX_GROUPS};
use crate::pipeline_cache::{Const, Kernel, PipelineKey, Scalar, Variant};
use crate::GpuContext;
use metal_mps_ir::{Error, Result};

/// Largest query/key size and value size per head the kernel takes.
pub const MAX_HEAD_SIZE: usize = 128;
/// Query rows per workgroup (`ROWS` of the kernel), and keys per tile (`TILE`).
const ROWS: usize = 32;
const TILE: usize = 32;
/// The kernel's instances by the vec4s of a head they hold (`MAX_D4`): the
/// smallest that fits is taken, so that registers are not wasted.
pub const HEAD_CLASSES: [u32; 2] = [16, 32];

/// Workgroup memory of the kernel instance for heads of `vec4s`: a tile of
/// keys and one of values, each `TILE × vec4s` vec4s of f32.
pub const fn workgroup_bytes(vec4s: u32) -> u32 {
    2 * TILE as u32 * vec4s * 16
}

/// How the mask's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskKind {
    /// Added to the scores.
    F32,
    F16,
    /// An i32 0 or 1 (a boolean on the device): 0 masks the key.
    Bool,
}

/// The mask of an attention, broadcast to (batch, heads, query, key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionMask {
    pub kind: MaskKind,
    /// Element strides along (batch, head, query, key); 0 where broadcast.
    pub strides: [usize; 4],
    /// Keys the mask covers: later keys are masked.
    pub len: usize,
}

/// One fused attention over `batch × heads` (query) heads: sizes, and each
/// operand's element strides along (batch, head, row, column), where the
/// rows of K and V are keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    pub batch: usize,
    pub heads: usize,
    /// Query heads per key/value head.
    pub group: usize,
    pub sq: usize,
    pub skv: usize,
    /// Query and key size per head.
    pub d: usize,
    /// Value (and output) size per head.
    pub dv: usize,
    pub scale: f32,
    pub q: [usize; 4],
    pub k: [usize; 4],
    pub v: [usize; 4],
    pub out: [usize; 4],
    pub mask: Option<AttentionMask>,
    /// Key `j` is masked for query row `i` when `j > i`.
    pub causal: bool,
    /// Rows whose keys are all masked give zeros (else NaN, as softmax does).
    pub empty_zero: bool,
    /// Rows whose scores hold a NaN give zeros (else NaN).
    pub nan_zero: bool,
}

impl Attention {
    /// Whether the kernel takes these sizes on this adapter.
    pub fn fits(&self, ctx: &GpuContext) -> bool {
        (1..=MAX_HEAD_SIZE).contains(&self.d)
            && (1..=MAX_HEAD_SIZE).contains(&self.dv)
            && self.sq > 0
            && self.skv > 0
            && self.group > 0
            && self.heads.is_multiple_of(self.group)
            && ctx.caps.workgroup_storage >= workgroup_bytes(self.head_class())
            && self.grid().is_ok()
            && self.check_indexing().is_ok()
    }

    /// The kernel instance's `MAX_D4`.
    fn head_class(&self) -> u32 {
        let vec4s = self.d.max(self.dv).div_ceil(4) as u32;
        HEAD_CLASSES
            .into_iter()
            .find(|&n| vec4s <= n)
            .unwrap_or(HEAD_CLASSES[1])
    }

    fn grid(&self) -> Result<[u32; 3]> {
        let x = self.sq.div_ceil(ROWS);
        let y = self.batch * self.heads;
        if x > MAX_GROUPS as usize || y > MAX_GROUPS as usize || y == 0 {
            return Err(Error::TooLarge(format!(
                "attention over {} query rows and {y} heads does not fit one dispatch",
                self.sq
            )));
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Every element index of every operand fits the kernel's u32 arithmetic.
    fn check_indexing(&self) -> Result<()> {
        let kv_heads = self.heads / self.group.max(1);
        let last = |s: &[usize; 4], extents: [usize; 4]| -> usize {
            s.iter()
                .zip(extents)
                .map(|(&st, n)| st * n.saturating_sub(1))
                .sum()
        };
        let (b, h) = (self.batch, self.heads);
        let ends = [
            last(&self.q, [b, h, self.sq, self.d]),
            last(&self.k, [b, kv_heads, self.skv, self.d]),
            last(&self.v, [b, kv_heads, self.skv, self.dv]),
            last(&self.out, [b, h, self.sq, self.dv]),
            self.mask
                .as_ref()
                .map_or(0, |m| last(&m.strides, [b, h, self.sq, m.len])),
            // The loops' bounds.
            TILE * (self.d.max(self.dv) + 4) + self.skv + ROWS,
        ];
        for e in ends {
            u32_of(e, "attention operand index")?;
        }
        Ok(())
    }
}

fn words(s: &[usize; 4]) -> Result<Vec<u32>> {
    s.iter().map(|&x| u32_of(x, "attention stride")).collect()
}

/// The fused attention `out = softmax(scale · Q·Kᵀ + mask) · V`; without a
/// mask, `dummy` is bound in its place.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    ctx: &GpuContext,
    dtype: Scalar,
    a: &Attention,
    q: Binding,
    k: Binding,
    v: Binding,
    mask: Option<Binding>,
    out: Binding,
    dummy: &Binding,
) -> Result<Call> {
    a.check_indexing()?;
    let (kind, mask_strides, mask_len) = match &a.mask {
        None => (0, [0; 4], a.skv),
        Some(m) => {
            let kind = match m.kind {
                MaskKind::F32 => 1,
                MaskKind::F16 => 2,
                MaskKind::Bool => 3,
            };
            (kind, m.strides, m.len.min(a.skv))
        }
    };
    let params = Params::default()
        .u32(u32_of(a.sq, "query rows")?)
        .u32(u32_of(a.skv, "keys")?)
        .u32(a.d as u32)
        .u32(a.dv as u32)
        .u32(u32_of(a.heads, "heads")?)
        .u32(u32_of(a.group, "heads per key/value head")?)
        .u32(mask_len as u32)
        .f32(a.scale)
        .words(&words(&a.q)?, 1, 0)
        .words(&words(&a.k)?, 1, 0)
        .words(&words(&a.v)?, 1, 0)
        .words(&words(&a.out)?, 1, 0)
        .words(&words(&mask_strides)?, 1, 0)
        .finish();
    let variant = Variant {
        head_vec4s: Some(a.head_class()),
        ..Variant::of(dtype)
    };
    let key = PipelineKey::new(Kernel::Attention, variant, "main")
        .with("MASK_KIND", Const::U32(kind))
        .with("CAUSAL", Const::Bool(a.causal))
        .with("EMPTY_ZERO", Const::Bool(a.empty_zero))
        .with("NAN_ZERO", Const::Bool(a.nan_zero))
        .with("D4", Const::U32(a.d.div_ceil(4) as u32))
        .with("DV4", Const::U32(a.dv.div_ceil(4) as u32));
    Ok(Call {
        pipeline: ctx.pipelines.get(&key)?,
        params,
        bindings: vec![q, k, v, mask.unwrap_or_else(|| dummy.clone()), out],
        groups: a.grid()?,
    })
}
