//! Fused attention in the plan: the Attention operator, and the chain that
//! exporters write for it, `MatMul(q, kᵀ)`, scalings, an added mask,
//! `Softmax` over the keys (then, from PyTorch's exporter, `Where(IsNaN(p),
//! 0, p)`, which the graph holds as `NanTo`) and `MatMul(p, v)`, each step
//! read only by the next.

use super::{Builder, Lowered};
use crate::lower::GpuOp;
use crate::ops::attention::{Attention, AttentionMask, MaskKind};
use crate::ops::select::broadcast_strides;
use crate::pipeline_cache::Scalar;
use metal_mps_ir::{normalize_axis, AttentionSpec, BinaryOp, DType, Op, UnaryOp, ValueId};

/// Scores (batch × heads × queries × keys, as stored) above which the chain is
/// fused even where its products run on cooperative matrices: there the
/// unfused chain is faster (an H100, BERT-base at batch 8: 5.6-5.9 ms against
/// 6.0-6.4 at sequence 128, 18.7 against 21.7 ms at 512), but its scores take
/// memory that grows with the square of the sequence (and past the binding
/// limit the unfused products go to the CPU).
const FUSE_SCORES_ABOVE: usize = 256 << 20;

/// The chain matched from its first MatMul.
struct Chain {
    q: ValueId,
    kt: ValueId,
    v: ValueId,
    mask: Option<ValueId>,
    out: ValueId,
    scale: f64,
    /// A `NanTo(0)` follows the softmax: rows all masked, or with a NaN, give zeros.
    nan_zero: bool,
    /// The nodes after the first MatMul, the last MatMul last.
    absorbed: Vec<usize>,
}

/// Element strides of an operand with batch dims `own` (then two matrix dims
/// of `inner` elements) along the batch dims `batch` (at most two), padded to
/// (batch, head).
fn batch_strides(own: &[usize], batch: &[usize], inner: usize) -> Option<[usize; 2]> {
    let s = broadcast_strides(own, batch)?;
    let mut out = [0; 2];
    for (o, st) in out[2 - s.len()..].iter_mut().zip(s) {
        *o = st * inner;
    }
    Some(out)
}

/// The value of a constant scalar (one element) of a float type.
fn scalar(b: &Builder, v: ValueId) -> Option<f64> {
    let t = b.constant(Some(v))?;
    (t.dtype().is_float() && t.numel() == 1).then(|| t.to_f64_vec()[0])
}

/// How the kernel reads a mask held as `graph` in the graph and as `device`
/// on the device.
fn mask_kind(graph: Option<DType>, device: Option<DType>) -> Option<MaskKind> {
    match (graph?, device?) {
        (DType::Bool, DType::I32) => Some(MaskKind::Bool),
        (DType::F32, DType::F32) => Some(MaskKind::F32),
        (_, DType::F16) => Some(MaskKind::F16),
        _ => None,
    }
}

impl Builder<'_> {
    /// MatMul `n` and the nodes after it, when they are the attention chain.
    fn attention_chain(&self, n: usize) -> Option<Chain> {
        let first = &self.g.nodes[n];
        let (q, kt) = (first.inputs[0]?, first.inputs.get(1).copied().flatten()?);
        let mut s = first.outputs[0];
        let mut scale = 1.0;
        let mut mask = None;
        let mut absorbed = Vec::new();
        let softmax = loop {
            let c = self.sole_consumer(s)?;
            let node = &self.g.nodes[c];
            let other = |node: &metal_mps_ir::Node| {
                let [a, b] = [
                    node.inputs.first()?.as_ref()?,
                    node.inputs.get(1)?.as_ref()?,
                ];
                Some(if *a == s { *b } else { *a })
            };
            match &node.op {
                Op::Binary(op @ (BinaryOp::Mul | BinaryOp::Div)) if mask.is_none() => {
                    let k = scalar(self, other(node)?)?;
                    scale = match op {
                        BinaryOp::Mul => scale * k,
                        // s / k: s must be the dividend.
                        _ if node.inputs[0] == Some(s) => scale / k,
                        _ => return None,
                    };
                }
                // Not the scores added to themselves: the mask must be computed apart.
                Op::Binary(BinaryOp::Add) if mask.is_none() => {
                    mask = Some(other(node)?).filter(|&m| m != s);
                    mask?;
                }
                Op::Softmax { axis, .. } => {
                    let rank = self.shape(s).len();
                    if normalize_axis(*axis, rank).ok()? != rank - 1 {
                        return None;
                    }
                    absorbed.push(c);
                    break node.outputs[0];
                }
                _ => return None,
            }
            absorbed.push(c);
            s = node.outputs[0];
        };
        let mut p = softmax;
        let mut nan_zero = false;
        // Where(IsNaN(p), 0, p), which exporters write after the softmax.
        if let Some(c) = self.sole_consumer(p) {
            if self.g.nodes[c].op == Op::Unary(UnaryOp::NanTo { value: 0.0 }) {
                absorbed.push(c);
                p = self.g.nodes[c].outputs[0];
                nan_zero = true;
            }
        }
        // The probabilities as the left operand of a plain MatMul.
        let last = self.sole_consumer(p)?;
        let node = &self.g.nodes[last];
        let plain = Op::MatMul {
            activation: metal_mps_ir::Activation::None,
        };
        if node.op != plain || node.inputs[0] != Some(p) {
            return None;
        }
        absorbed.push(last);
        Some(Chain {
            q,
            kt,
            v: node.inputs.get(1).copied().flatten()?,
            mask,
            out: node.outputs[0],
            scale,
            nan_zero,
            absorbed,
        })
    }

    /// MatMul `n` as the start of the attention chain, on the fused kernel
    /// (`None`: not that chain, not one the kernel takes, or one whose
    /// products run faster unfused on cooperative matrices).
    pub(super) fn lower_attention_chain(&mut self, n: usize) -> Option<Lowered> {
        let c = self.attention_chain(n)?;
        let dtype = self.float(c.q)?;
        let same = |v: ValueId| self.dev[v] == self.dev[c.q] && self.can_dev(v);
        if ![c.kt, c.v, c.out].into_iter().all(same) {
            return None;
        }
        let (sq_shape, kt_shape, v_shape, o_shape) = (
            self.shape(c.q),
            self.shape(c.kt),
            self.shape(c.v),
            self.shape(c.out),
        );
        let rank = o_shape.len();
        if rank < 2 || [sq_shape, kt_shape, v_shape].iter().any(|s| s.len() < 2) {
            return None;
        }
        let mat = |s: &[usize]| (s[s.len() - 2], s[s.len() - 1]);
        let ((sq, d), (d2, skv), (skv2, dv)) = (mat(sq_shape), mat(kt_shape), mat(v_shape));
        if d != d2 || skv != skv2 || mat(o_shape) != (sq, dv) {
            return None;
        }
        let batch = &o_shape[..rank - 2];
        let own = |s: &[usize]| s[..s.len() - 2].to_vec();
        let q_b = batch_strides(&own(sq_shape), batch, sq * d)?;
        let k_b = batch_strides(&own(kt_shape), batch, d * skv)?;
        let v_b = batch_strides(&own(v_shape), batch, skv * dv)?;
        let o_b = batch_strides(batch, batch, sq * dv)?;
        let mask = match c.mask {
            None => None,
            Some(m) => {
                let kind = mask_kind(self.g.values[m].dtype, self.dev[m])?;
                if !self.can_dev(m) || kind == MaskKind::Bool {
                    return None;
                }
                let scores: Vec<usize> = batch.iter().copied().chain([sq, skv]).collect();
                let st = broadcast_strides(self.shape(m), &scores)?;
                let mut strides = [0; 4];
                strides[4 - st.len()..].copy_from_slice(&st);
                Some(AttentionMask {
                    kind,
                    strides,
                    len: skv,
                })
            }
        };
        // One batch dim takes the heads' place, as the strides do.
        let (b, h) = match *batch {
            [] => (1, 1),
            [h] => (1, h),
            [b, h] => (b, h),
            _ => return None,
        };
        let attention = Attention {
            batch: b,
            heads: h,
            group: 1,
            sq,
            skv,
            d,
            dv,
            scale: c.scale as f32,
            q: [q_b[0], q_b[1], d, 1],
            // K as (key, column) of its transpose.
            k: [k_b[0], k_b[1], 1, skv],
            v: [v_b[0], v_b[1], dv, 1],
            out: [o_b[0], o_b[1], dv, 1],
            mask,
            causal: false,
            empty_zero: c.nan_zero,
            nan_zero: c.nan_zero,
        };
        let coop =
            dtype == Scalar::F16 && self.ctx.caps.coop.is_some() && self.opts.cooperative_matrix;
        let scores = b * h * sq * skv * self.dev[c.q].map_or(4, DType::size);
        let small = scores <= FUSE_SCORES_ABOVE.min(self.ctx.caps.max_binding as usize);
        if (coop && small) || !attention.fits(self.ctx) {
            return None;
        }
        let op = GpuOp::Attention {
            q: c.q,
            k: c.kt,
            v: c.v,
            mask: c.mask,
            out: c.out,
            attention,
            dtype,
        };
        Some(Lowered::Gpu(vec![op], c.absorbed))
    }

    /// The Attention operator `n` on the fused kernel, when it writes only its
    /// first output, has no KV cache and its options are the kernel's
    /// (`spec`); `None` leaves it to the CPU.
    pub(super) fn lower_attention_op(&mut self, n: usize, spec: AttentionSpec) -> Option<Lowered> {
        let node = &self.g.nodes[n];
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        if node.outputs.len() != 1 || (4..node.inputs.len()).any(|i| input(i).is_some()) {
            return None;
        }
        let (q, k, v, out) = (input(0)?, input(1)?, input(2)?, node.outputs[0]);
        let dtype = self.float(q)?;
        if ![k, v, out].into_iter().all(|x| self.dev[x] == self.dev[q]) {
            return None;
        }
        let (qs, ks, vs) = (self.shape(q), self.shape(k), self.shape(v));
        // Sizes and (batch, head, row, column) strides of each operand.
        let (b, hq, hkv, sq, skv, d, dv, st_q, st_k, st_v, st_o) = match (qs, ks, vs) {
            ([b, sq, qw], [_, skv, _], [_, _, vw]) => {
                let (hq, hkv) = spec.heads?;
                let (d, dv) = (qw / hq, vw / hkv);
                let st = |s: usize, h: usize, w: usize| [s * h * w, w, h * w, 1];
                (
                    *b,
                    hq,
                    hkv,
                    *sq,
                    *skv,
                    d,
                    dv,
                    st(*sq, hq, d),
                    st(*skv, hkv, d),
                    st(*skv, hkv, dv),
                    st(*sq, hq, dv),
                )
            }
            ([b, hq, sq, d], [_, hkv, skv, _], [_, _, _, dv]) => {
                let st = |h: usize, s: usize, w: usize| [h * s * w, s * w, w, 1];
                (
                    *b,
                    *hq,
                    *hkv,
                    *sq,
                    *skv,
                    *d,
                    *dv,
                    st(*hq, *sq, *d),
                    st(*hkv, *skv, *d),
                    st(*hkv, *skv, *dv),
                    st(*hq, *sq, *dv),
                )
            }
            _ => return None,
        };
        // Shapes that do not agree stay with the CPU, which reports them.
        let agree = |s: &[usize], want: [usize; 4]| {
            let full = if s.len() == 3 {
                [s[0], s[1], s[2], 0]
            } else {
                [s[0], s[1], s[2], s[3]]
            };
            let want = if s.len() == 3 {
                [want[0], want[2], want[1] * want[3], 0]
            } else {
                want
            };
            full == want
        };
        if hkv == 0
            || !hq.is_multiple_of(hkv)
            || !agree(qs, [b, hq, sq, d])
            || !agree(ks, [b, hkv, skv, d])
            || !agree(vs, [b, hkv, skv, dv])
            || !agree(self.shape(out), [b, hq, sq, dv])
        {
            return None;
        }
        let mask = match input(3) {
            None => None,
            Some(m) => {
                let kind = mask_kind(self.g.values[m].dtype, self.dev[m])?;
                let shape = self.shape(m);
                if shape.is_empty() || shape.len() > 4 || !self.can_dev(m) {
                    return None;
                }
                let mut full = [1; 4];
                full[4 - shape.len()..].copy_from_slice(shape);
                let target = [b, hq, sq, skv];
                if full[3] > skv || (0..3).any(|a| full[a] != 1 && full[a] != target[a]) {
                    return None;
                }
                let own = metal_mps_ir::strides(&full);
                let mut strides = [0; 4];
                for a in 0..4 {
                    strides[a] = if a < 3 && full[a] == 1 { 0 } else { own[a] };
                }
                Some(AttentionMask {
                    kind,
                    strides,
                    len: full[3],
                })
            }
        };
        let attention = Attention {
            batch: b,
            heads: hq,
            group: hq / hkv,
            sq,
            skv,
            d,
            dv,
            scale: spec.scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32,
            q: st_q,
            k: st_k,
            v: st_v,
            out: st_o,
            mask,
            causal: spec.causal,
            empty_zero: true,
            nan_zero: false,
        };
        if !attention.fits(self.ctx) {
            return None;
        }
        let op = GpuOp::Attention {
            q,
            k,
            v,
            mask: input(3),
            out,
            attention,
            dtype,
        };
        Some(Lowered::Gpu(vec![op], Vec::new()))
    }
}
