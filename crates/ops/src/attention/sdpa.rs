//! Attention (opsets 23, 24 and 25): scaled dot-product attention over 3-D
//! (heads packed in the hidden dim) or 4-D (batch, heads, sequence, head size)
//! inputs, grouped KV heads, boolean or additive masks, offset-aware causal
//! masking, sliding windows, softcap, an internal KV cache (past/present) or an
//! external one (`nonpad_kv_seqlen`), and the `qk_matmul_output` debug output.
//!
//! Every step is computed in f64 and rounded to the type the ONNX reference
//! computes it in (the inputs' type, or `softmax_precision` for the softmax), so
//! that lower precisions reproduce the reference's results.

use super::common::{dim, dim_add, dim_div, dim_mul, dot, floats, positive, rank, rounder, write};
use crate::support::{arg, check_float, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_cpu::Spread;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, AttentionSpec, BoolByte, DType, Dim, DynOp, Fact, Op, Operator, Out, Result,
    Tensor,
};
use rayon::prelude::*;
use std::any::Any;

const OP: &str = "Attention";

#[derive(Debug)]
struct Attention {
    opset: i64,
    is_causal: bool,
    q_heads: Option<usize>,
    kv_heads: Option<usize>,
    scale: Option<f64>,
    softcap: f64,
    softmax_precision: Option<DType>,
    mode: i64,
    left: i64,
    right: i64,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let heads = |name: &str| -> Result<Option<usize>> {
        a.opt_int(name)?.map(|v| positive(OP, name, v)).transpose()
    };
    let softmax_precision = match a.opt_int("softmax_precision")? {
        None => None,
        Some(code) => {
            let d = DType::from_onnx_code(code)?;
            if !d.is_float() {
                return metal_mps_ir::invalid!(
                    "{OP}: softmax_precision {code} is not a float type"
                );
            }
            Some(d)
        }
    };
    let mode = a.int("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&mode) {
        return metal_mps_ir::invalid!("{OP}: qk_matmul_output_mode {mode} is not 0, 1, 2 or 3");
    }
    let (left, right) = if cx.opset >= 25 {
        (
            a.int("left_window_size", -1)?,
            a.int("right_window_size", -1)?,
        )
    } else {
        (-1, -1)
    };
    if left < -1 || right < -1 {
        return metal_mps_ir::invalid!(
            "{OP}: window sizes must be -1 or non-negative, got {left} and {right}"
        );
    }
    Ok(Op::Dyn(DynOp::new(Attention {
        opset: cx.opset,
        is_causal: a.flag("is_causal", false)?,
        q_heads: heads("q_num_heads")?,
        kv_heads: heads("kv_num_heads")?,
        scale: a.opt_float("scale")?.map(f64::from),
        softcap: a.float("softcap", 0.0)? as f64,
        softmax_precision,
        mode,
        left,
        right,
    })))
}

/// The sizes of one call.
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    skv: usize,
    past: usize,
    d: usize,
    dv: usize,
    rank3: bool,
}

impl Attention {
    fn heads_for(&self, rank: usize) -> Result<(Option<usize>, Option<usize>)> {
        match rank {
            3 => match (self.q_heads, self.kv_heads) {
                (Some(q), Some(k)) => Ok((Some(q), Some(k))),
                _ => metal_mps_ir::invalid!(
                    "{OP}: 3-D inputs need the q_num_heads and kv_num_heads attributes"
                ),
            },
            4 => {
                if self.opset >= 25 && (self.q_heads.is_some() || self.kv_heads.is_some()) {
                    return metal_mps_ir::invalid!(
                        "{OP}: q_num_heads and kv_num_heads must not be set for 4-D inputs"
                    );
                }
                Ok((None, None))
            }
            r => metal_mps_ir::invalid!("{OP}: Q, K and V must be 3-D or 4-D, got rank {r}"),
        }
    }

    fn dims(
        &self,
        q: &[usize],
        k: &[usize],
        v: &[usize],
        past: Option<(&[usize], &[usize])>,
    ) -> Result<Dims> {
        if q.len() != k.len() || q.len() != v.len() {
            return metal_mps_ir::invalid!(
                "{OP}: Q, K and V have ranks {}, {} and {}",
                q.len(),
                k.len(),
                v.len()
            );
        }
        let (qh, kh) = self.heads_for(q.len())?;
        let split = |hidden: usize, heads: usize, what: &str| -> Result<usize> {
            if !hidden.is_multiple_of(heads) {
                return metal_mps_ir::invalid!(
                    "{OP}: {what} hidden size {hidden} is not a multiple of {heads} heads"
                );
            }
            Ok(hidden / heads)
        };
        let dims = match (qh, kh) {
            (Some(hq), Some(hkv)) => Dims {
                b: q[0],
                hq,
                hkv,
                sq: q[1],
                skv: k[1],
                past: 0,
                d: split(q[2], hq, "Q")?,
                dv: split(v[2], hkv, "V")?,
                rank3: true,
            },
            _ => Dims {
                b: q[0],
                hq: q[1],
                hkv: k[1],
                sq: q[2],
                skv: k[2],
                past: 0,
                d: q[3],
                dv: v[3],
                rank3: false,
            },
        };
        let kd = if dims.rank3 {
            split(k[2], dims.hkv, "K")?
        } else {
            k[3]
        };
        let (kb, vb) = (k[0], v[0]);
        let (vh, vs) = if dims.rank3 {
            (dims.hkv, v[1])
        } else {
            (v[1], v[2])
        };
        if kd != dims.d || kb != dims.b || vb != dims.b || vh != dims.hkv || vs != dims.skv {
            return metal_mps_ir::invalid!("{OP}: Q {q:?}, K {k:?} and V {v:?} do not agree");
        }
        if dims.hkv == 0 || !dims.hq.is_multiple_of(dims.hkv) {
            return metal_mps_ir::invalid!(
                "{OP}: {} query heads are not a multiple of {} key/value heads",
                dims.hq,
                dims.hkv
            );
        }
        let mut dims = dims;
        if let Some((pk, pv)) = past {
            if pk.len() != 4
                || pv.len() != 4
                || pk[0] != dims.b
                || pk[1] != dims.hkv
                || pk[3] != dims.d
                || pv[0] != dims.b
                || pv[1] != dims.hkv
                || pv[2] != pk[2]
                || pv[3] != dims.dv
            {
                return metal_mps_ir::invalid!(
                    "{OP}: past_key {pk:?} and past_value {pv:?} do not match K and V"
                );
            }
            dims.past = pk[2];
        }
        Ok(dims)
    }
}

/// Copies K or V (3-D or 4-D) after a past cache into a 4-D (b, h, past + s, d) buffer.
fn concat_cache(x: &[f64], past: Option<&[f64]>, dm: &Dims, s: usize, d: usize) -> Vec<f64> {
    let h = dm.hkv;
    let tot = dm.past + s;
    let mut outv = vec![0.0; dm.b * h * tot * d];
    for b in 0..dm.b {
        for hh in 0..h {
            let base = (b * h + hh) * tot * d;
            if let Some(p) = past {
                let pb = (b * h + hh) * dm.past * d;
                outv[base..base + dm.past * d].copy_from_slice(&p[pb..pb + dm.past * d]);
            }
            for j in 0..s {
                let src = if dm.rank3 {
                    (b * s + j) * h * d + hh * d
                } else {
                    ((b * h + hh) * s + j) * d
                };
                let dst = base + (dm.past + j) * d;
                outv[dst..dst + d].copy_from_slice(&x[src..src + d]);
            }
        }
    }
    outv
}

/// The attention mask broadcast to (b, hq, sq, kv), padded on the key axis.
struct Mask {
    values: Vec<f64>,
    /// Strides of the (b, h, q, kv) axes (0 where broadcast).
    strides: [usize; 4],
    /// The mask's own key length: keys past it are masked.
    len: usize,
}

impl Mask {
    fn new(t: &Tensor, dm: &Dims) -> Result<Mask> {
        let shape = t.shape();
        if shape.is_empty() || shape.len() > 4 {
            return metal_mps_ir::invalid!("{OP}: attn_mask must have rank 1 to 4, got {shape:?}");
        }
        let values: Vec<f64> = if t.dtype() == DType::Bool {
            t.as_slice::<BoolByte>()?
                .iter()
                .map(|b| if b.0 != 0 { 0.0 } else { f64::NEG_INFINITY })
                .collect()
        } else {
            t.to_f64_vec()
        };
        let total = dm.past + dm.skv;
        let target = [dm.b, dm.hq, dm.sq, total];
        let mut full = [1usize; 4];
        full[4 - shape.len()..].copy_from_slice(shape);
        let len = full[3];
        if len > total {
            return metal_mps_ir::invalid!(
                "{OP}: attn_mask {shape:?} has more keys than the {total} of K"
            );
        }
        let mut strides = [0usize; 4];
        let mut acc = 1usize;
        for a in (0..4).rev() {
            if a < 3 && full[a] != 1 && full[a] != target[a] {
                return metal_mps_ir::invalid!(
                    "{OP}: attn_mask {shape:?} does not broadcast to {target:?}"
                );
            }
            strides[a] = if full[a] == 1 && a < 3 { 0 } else { acc };
            acc *= full[a];
        }
        Ok(Mask {
            values,
            strides,
            len,
        })
    }

    #[inline]
    fn at(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
        if j >= self.len {
            return f64::NEG_INFINITY;
        }
        let s = &self.strides;
        self.values[b * s[0] + h * s[1] + i * s[2] + j * s[3]]
    }
}

impl Operator for Attention {
    fn name(&self) -> &str {
        OP
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let (q, k, v) = (known(ins, 0)?, known(ins, 1)?, known(ins, 2)?);
        for t in [q, k, v] {
            check_float(OP, t.dtype)?;
        }
        let past = known_opt(ins, 4);
        let r = rank(q);
        let (qh, kh) = match r {
            Some(r) => self.heads_for(r)?,
            None => (None, None),
        };
        let (b, hq, sq, hkv, skv, d, dv) = match (r, qh, kh) {
            (Some(3), Some(hq), Some(hkv)) => (
                dim(q, 0),
                Dim::Fixed(hq),
                dim(q, 1),
                Dim::Fixed(hkv),
                dim(k, 1),
                dim_div(&dim(q, 2), hq),
                dim_div(&dim(v, 2), hkv),
            ),
            _ => (
                dim(q, 0),
                dim(q, 1),
                dim(q, 2),
                dim(k, 1),
                dim(k, 2),
                dim(q, 3),
                dim(v, 3),
            ),
        };
        let total = match past {
            Some(p) => dim_add(&dim(p, 2), &skv),
            None => skv,
        };
        let y = match r {
            None => None,
            Some(3) => Some(vec![b.clone(), sq.clone(), dim_mul(&hq, &dv)]),
            Some(_) => Some(vec![b.clone(), hq.clone(), sq.clone(), dv.clone()]),
        };
        let mut facts = vec![(q.dtype, y)];
        if n_out > 1 {
            facts.push((
                k.dtype,
                Some(vec![b.clone(), hkv.clone(), total.clone(), d]),
            ));
        }
        if n_out > 2 {
            facts.push((v.dtype, Some(vec![b.clone(), hkv, total.clone(), dv])));
        }
        if n_out > 3 {
            facts.push((q.dtype, Some(vec![b, hq, sq, total])));
        }
        Ok(facts)
    }

    fn eval(&self, ins: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (q, k, v) = (arg(ins, 0)?, arg(ins, 1)?, arg(ins, 2)?);
        let mask = opt(ins, 3);
        let (past_k, past_v) = (opt(ins, 4), opt(ins, 5));
        let nonpad = if self.opset >= 24 { opt(ins, 6) } else { None };
        if past_k.is_some() != past_v.is_some() {
            return metal_mps_ir::invalid!("{OP}: past_key and past_value must be given together");
        }
        if nonpad.is_some() && past_k.is_some() {
            return metal_mps_ir::invalid!(
                "{OP}: nonpad_kv_seqlen cannot be combined with past_key"
            );
        }
        let past_shapes = past_k.zip(past_v).map(|(a, b)| (a.shape(), b.shape()));
        let dm = self.dims(q.shape(), k.shape(), v.shape(), past_shapes)?;
        let total = dm.past + dm.skv;
        checked_numel(&[dm.b, dm.hq, dm.sq, total])?;
        let t1 = q.dtype();
        let r1 = rounder(t1);
        let rs = rounder(self.softmax_precision.unwrap_or(t1));
        let seq_sum = self.softmax_precision.unwrap_or(t1) == DType::BF16;

        let (qs, ks, vs) = (floats(OP, q)?, floats(OP, k)?, floats(OP, v)?);
        let pk = past_k.map(|t| floats(OP, t)).transpose()?;
        let pv = past_v.map(|t| floats(OP, t)).transpose()?;
        let present_k = concat_cache(&ks, pk.as_deref(), &dm, dm.skv, dm.d);
        let present_v = concat_cache(&vs, pv.as_deref(), &dm, dm.skv, dm.dv);

        // sqrt(scale) applied to Q and K, in the inputs' type.
        let scale = self.scale.unwrap_or(1.0 / (dm.d as f64).sqrt());
        let ss = r1(scale.sqrt());
        let (b, hq, hkv, sq, d, dv) = (dm.b, dm.hq, dm.hkv, dm.sq, dm.d, dm.dv);
        let mut q4 = vec![0.0; b * hq * sq * d];
        for bb in 0..b {
            for h in 0..hq {
                for i in 0..sq {
                    let src = if dm.rank3 {
                        (bb * sq + i) * hq * d + h * d
                    } else {
                        ((bb * hq + h) * sq + i) * d
                    };
                    let dst = ((bb * hq + h) * sq + i) * d;
                    for e in 0..d {
                        q4[dst + e] = r1(qs[src + e] * ss);
                    }
                }
            }
        }
        let k4: Vec<f64> = present_k.iter().map(|&x| r1(x * ss)).collect();

        let mask = mask.map(|m| Mask::new(m, &dm)).transpose()?;
        let nonpad: Option<Vec<i64>> = match nonpad {
            Some(t) => {
                let v = t.to_i64_vec()?;
                if v.len() != b {
                    return metal_mps_ir::invalid!(
                        "{OP}: nonpad_kv_seqlen has {} values for a batch of {b}",
                        v.len()
                    );
                }
                Some(v)
            }
            None => None,
        };
        // The count of valid keys before the query block, per batch.
        let offset = |bb: usize| -> i64 {
            match &nonpad {
                Some(n) => n[bb] - sq as i64,
                None => dm.past as i64,
            }
        };
        let want_qk = n_out > 3;
        let group = hq / hkv;
        let (softcap, mode) = (self.softcap, self.mode);
        let (is_causal, left, right) = (self.is_causal, self.left, self.right);

        let results: Vec<(Vec<f64>, Vec<f64>)> = (0..b * hq)
            .into_par_iter()
            .spread()
            .map(|task| {
                let (bb, h) = (task / hq, task % hq);
                let kh = h / group;
                let kbase = (bb * hkv + kh) * total;
                let off = offset(bb);
                let mut y = vec![0.0; sq * dv];
                let mut qk = if want_qk {
                    vec![0.0; sq * total]
                } else {
                    Vec::new()
                };
                let mut s = vec![0.0; total];
                let mut bias = vec![0.0; total];
                for i in 0..sq {
                    let qrow = &q4[((bb * hq + h) * sq + i) * d..][..d];
                    let p = i as i64 + off;
                    for j in 0..total {
                        let krow = &k4[(kbase + j) * d..][..d];
                        let mut x = r1(dot(qrow, krow));
                        if want_qk && mode == 0 {
                            qk[i * total + j] = x;
                        }
                        if softcap > 0.0 {
                            x = r1(r1(r1(x / softcap).tanh()) * softcap);
                        }
                        if want_qk && mode == 1 {
                            qk[i * total + j] = x;
                        }
                        s[j] = x;
                        let jj = j as i64;
                        let mut bv = mask.as_ref().map_or(0.0, |m| m.at(bb, h, i, j));
                        if is_causal && jj > p {
                            bv = f64::NEG_INFINITY;
                        }
                        if (left >= 0 && p - jj > left) || (right >= 0 && jj - p > right) {
                            bv = f64::NEG_INFINITY;
                        }
                        if let Some(n) = &nonpad {
                            if jj >= n[bb] {
                                bv = f64::NEG_INFINITY;
                            }
                        }
                        bias[j] = r1(bv);
                    }
                    let all_masked = bias.iter().all(|&x| x == f64::NEG_INFINITY);
                    for j in 0..total {
                        s[j] = r1(s[j] + bias[j]);
                        if want_qk && mode == 2 {
                            qk[i * total + j] = s[j];
                        }
                    }
                    // Softmax in the softmax precision.
                    let max = s.iter().map(|&x| rs(x)).fold(f64::NEG_INFINITY, f64::max);
                    if all_masked || max == f64::NEG_INFINITY {
                        s.iter_mut().for_each(|x| *x = 0.0);
                    } else {
                        let mut sum = 0.0;
                        for x in s.iter_mut() {
                            *x = rs(rs(rs(*x) - max).exp());
                            // numpy sums bfloat16 sequentially in bfloat16.
                            sum = if seq_sum { rs(sum + *x) } else { sum + *x };
                        }
                        let sum = rs(sum);
                        for x in s.iter_mut() {
                            *x = r1(rs(*x / sum));
                        }
                    }
                    if want_qk && mode == 3 {
                        qk[i * total..(i + 1) * total].copy_from_slice(&s);
                    }
                    let yrow = &mut y[i * dv..(i + 1) * dv];
                    let vbase = (bb * hkv + kh) * total;
                    for (j, &pj) in s.iter().enumerate() {
                        if pj != 0.0 {
                            let vrow = &present_v[(vbase + j) * dv..][..dv];
                            for (o, &vv) in yrow.iter_mut().zip(vrow) {
                                *o += pj * vv;
                            }
                        }
                    }
                    yrow.iter_mut().for_each(|o| *o = r1(*o));
                }
                (y, qk)
            })
            .collect();

        let mut y = vec![0.0; b * hq * sq * dv];
        for (task, (yt, _)) in results.iter().enumerate() {
            let (bb, h) = (task / hq, task % hq);
            for i in 0..sq {
                let dst = if dm.rank3 {
                    (bb * sq + i) * hq * dv + h * dv
                } else {
                    ((bb * hq + h) * sq + i) * dv
                };
                y[dst..dst + dv].copy_from_slice(&yt[i * dv..(i + 1) * dv]);
            }
        }
        let y_shape = if dm.rank3 {
            vec![b, sq, hq * dv]
        } else {
            vec![b, hq, sq, dv]
        };
        let mut outs = vec![write(out, 0, t1, y_shape, &y)?];
        if n_out > 1 {
            outs.push(write(
                out,
                1,
                k.dtype(),
                vec![b, hkv, total, d],
                &present_k,
            )?);
        }
        if n_out > 2 {
            outs.push(write(
                out,
                2,
                v.dtype(),
                vec![b, hkv, total, dv],
                &present_v,
            )?);
        }
        if n_out > 3 {
            let qk: Vec<f64> = results.into_iter().flat_map(|(_, qk)| qk).collect();
            outs.push(write(out, 3, t1, vec![b, hq, sq, total], &qk)?);
        }
        Ok(outs)
    }

    fn attention(&self) -> Option<AttentionSpec> {
        let f32_softmax = self
            .softmax_precision
            .is_none_or(|d| matches!(d, DType::F32 | DType::F64));
        let plain = self.softcap == 0.0 && self.left < 0 && self.right < 0 && f32_softmax;
        plain.then_some(AttentionSpec {
            causal: self.is_causal,
            heads: self.q_heads.zip(self.kv_heads),
            scale: self.scale,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
