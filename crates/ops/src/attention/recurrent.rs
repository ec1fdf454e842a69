//! The stateful sequence operators of opset 27: CausalConvWithState (a causal
//! depthwise 1-D convolution carrying its last k-1 inputs) and LinearAttention
//! (the linear, gated, delta and gated-delta recurrences over a (d_k, d_v) state).

use super::common::{dim, floats, positive, write};
use crate::support::{arg, check_float, check_same, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

const CONV: &str = "CausalConvWithState";

#[derive(Debug)]
struct CausalConv {
    silu: bool,
}

pub fn build_causal_conv(cx: &BuildCx) -> Result<Op> {
    let act = cx.attrs.str_or("activation", "none")?;
    let silu = match act.as_str() {
        "none" => false,
        "silu" | "swish" => true,
        other => {
            return metal_mps_ir::invalid!(
                "{CONV}: activation '{other}' is not one of 'none', 'silu', 'swish'"
            )
        }
    };
    Ok(Op::Dyn(DynOp::new(CausalConv { silu })))
}

impl Operator for CausalConv {
    fn name(&self) -> &str {
        CONV
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let (x, w) = (known(ins, 0)?, known(ins, 1)?);
        check_float(CONV, x.dtype)?;
        let y = (x.dtype, x.shape.map(<[Dim]>::to_vec));
        let mut facts = vec![y];
        if n_out > 1 {
            let k = dim(w, 2).fixed();
            let state = x.shape.map(|s| {
                vec![
                    s.first().cloned().unwrap_or(Dim::Unknown),
                    s.get(1).cloned().unwrap_or(Dim::Unknown),
                    k.map_or(Dim::Unknown, |k| Dim::Fixed(k.saturating_sub(1))),
                ]
            });
            facts.push((x.dtype, state));
        }
        Ok(facts)
    }

    fn eval(&self, ins: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (x, w) = (arg(ins, 0)?, arg(ins, 1)?);
        let (bias, past) = (opt(ins, 2), opt(ins, 3));
        check_same(CONV, x.dtype(), w.dtype())?;
        let (xsh, wsh) = (x.shape(), w.shape());
        if xsh.len() != 3 || wsh.len() != 3 {
            return metal_mps_ir::invalid!("{CONV}: input {xsh:?} and weight {wsh:?} must be 3-D");
        }
        let (b, c, l) = (xsh[0], xsh[1], xsh[2]);
        let k = wsh[2];
        if wsh[0] != c || wsh[1] != 1 || k == 0 {
            return metal_mps_ir::invalid!("{CONV}: weight {wsh:?} is not ({c}, 1, k) with k >= 1");
        }
        let xs = floats(CONV, x)?;
        let ws = floats(CONV, w)?;
        let bs = match bias {
            Some(t) => {
                let v = floats(CONV, t)?;
                if v.len() != c {
                    return metal_mps_ir::invalid!(
                        "{CONV}: bias has {} values for {c} channels",
                        v.len()
                    );
                }
                v
            }
            None => vec![0.0; c],
        };
        let ps = match past {
            Some(t) => {
                if t.shape() != [b, c, k - 1] {
                    return metal_mps_ir::invalid!(
                        "{CONV}: past_state {:?} is not ({b}, {c}, {})",
                        t.shape(),
                        k - 1
                    );
                }
                floats(CONV, t)?
            }
            None => vec![0.0; b * c * (k - 1)],
        };
        let r = super::common::rounder(x.dtype());
        let lp = l + k - 1;
        let mut y = vec![0.0; b * c * l];
        let mut state = vec![0.0; b * c * (k - 1)];
        let mut padded = vec![0.0; lp];
        for bb in 0..b {
            for ch in 0..c {
                let row = bb * c + ch;
                padded[..k - 1].copy_from_slice(&ps[row * (k - 1)..(row + 1) * (k - 1)]);
                padded[k - 1..].copy_from_slice(&xs[row * l..(row + 1) * l]);
                let wr = &ws[ch * k..(ch + 1) * k];
                for t in 0..l {
                    let acc: f64 = padded[t..t + k].iter().zip(wr).map(|(a, b)| a * b).sum();
                    let mut v = r(acc + bs[ch]);
                    if self.silu {
                        v = v / (1.0 + (-v).exp());
                    }
                    y[row * l + t] = v;
                }
                state[row * (k - 1)..(row + 1) * (k - 1)].copy_from_slice(&padded[l..]);
            }
        }
        let mut outs = vec![write(out, 0, x.dtype(), vec![b, c, l], &y)?];
        if n_out > 1 {
            outs.push(write(out, 1, x.dtype(), vec![b, c, k - 1], &state)?);
        }
        Ok(outs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

const LIN: &str = "LinearAttention";

#[derive(Debug)]
struct LinearAttention {
    q_heads: usize,
    kv_heads: usize,
    scale: f64,
    gating: bool,
    delta: bool,
}

pub fn build_linear_attention(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let need = |name: &str| -> Result<usize> {
        let v = a.opt_int(name)?.ok_or_else(|| {
            metal_mps_ir::Error::InvalidModel(format!("{LIN}: the {name} attribute is required"))
        })?;
        positive(LIN, name, v)
    };
    let (q_heads, kv_heads) = (need("q_num_heads")?, need("kv_num_heads")?);
    if !q_heads.is_multiple_of(kv_heads) {
        return metal_mps_ir::invalid!(
            "{LIN}: q_num_heads {q_heads} is not a multiple of kv_num_heads {kv_heads}"
        );
    }
    let rule = a.str_or("update_rule", "gated_delta")?;
    let (gating, delta) = match rule.as_str() {
        "linear" => (false, false),
        "gated" => (true, false),
        "delta" => (false, true),
        "gated_delta" => (true, true),
        other => return metal_mps_ir::invalid!("{LIN}: unknown update_rule '{other}'"),
    };
    Ok(Op::Dyn(DynOp::new(LinearAttention {
        q_heads,
        kv_heads,
        scale: a.float("scale", 0.0)? as f64,
        gating,
        delta,
    })))
}

impl Operator for LinearAttention {
    fn name(&self) -> &str {
        LIN
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let (q, k, v) = (known(ins, 0)?, known(ins, 1)?, known(ins, 2)?);
        check_float(LIN, q.dtype)?;
        let dk = super::common::dim_div(&dim(q, 2), self.q_heads);
        let dv = super::common::dim_div(&dim(v, 2), self.kv_heads);
        let _ = k;
        let y = q.shape.map(|_| {
            vec![
                dim(q, 0),
                dim(q, 1),
                super::common::dim_mul(&Dim::Fixed(self.q_heads), &dv),
            ]
        });
        let mut facts = vec![(q.dtype, y)];
        if n_out > 1 {
            let sdt = known_opt(ins, 3).map_or(q.dtype, |p| p.dtype);
            facts.push((
                sdt,
                Some(vec![dim(q, 0), Dim::Fixed(self.kv_heads), dk, dv]),
            ));
        }
        Ok(facts)
    }

    fn eval(&self, ins: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (q, k, v) = (arg(ins, 0)?, arg(ins, 1)?, arg(ins, 2)?);
        let (past, decay, beta) = (opt(ins, 3), opt(ins, 4), opt(ins, 5));
        if self.gating != decay.is_some() {
            return metal_mps_ir::invalid!(
                "{LIN}: the decay input is {} for this update_rule",
                if self.gating {
                    "required"
                } else {
                    "not allowed"
                }
            );
        }
        if self.delta != beta.is_some() {
            return metal_mps_ir::invalid!(
                "{LIN}: the beta input is {} for this update_rule",
                if self.delta {
                    "required"
                } else {
                    "not allowed"
                }
            );
        }
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        if qs.len() != 3 || ks.len() != 3 || vs.len() != 3 {
            return metal_mps_ir::invalid!("{LIN}: query, key and value must be 3-D (B, T, H*D)");
        }
        let (b, t) = (qs[0], qs[1]);
        let (hq, hk) = (self.q_heads, self.kv_heads);
        if !qs[2].is_multiple_of(hq) || !vs[2].is_multiple_of(hk) {
            return metal_mps_ir::invalid!("{LIN}: hidden sizes do not split into heads");
        }
        let (dk, dv) = (qs[2] / hq, vs[2] / hk);
        if ks != [b, t, hk * dk] || vs[0] != b || vs[1] != t {
            return metal_mps_ir::invalid!(
                "{LIN}: query {qs:?}, key {ks:?} and value {vs:?} do not agree"
            );
        }
        let (xq, xk, xv) = (floats(LIN, q)?, floats(LIN, k)?, floats(LIN, v)?);
        let r32 = super::common::rounder(DType::F32);
        let (xq, xk, xv): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            xq.iter().map(|&x| r32(x)).collect(),
            xk.iter().map(|&x| r32(x)).collect(),
            xv.iter().map(|&x| r32(x)).collect(),
        );
        // decay: per head (last dim hk) or per key dim (hk * dk).
        let dec = match decay {
            Some(d) => {
                let ds = d.shape();
                if ds.len() != 3 || ds[0] != b || ds[1] != t || (ds[2] != hk && ds[2] != hk * dk) {
                    return metal_mps_ir::invalid!(
                        "{LIN}: decay {ds:?} is not ({b}, {t}, {hk}) or ({b}, {t}, {})",
                        hk * dk
                    );
                }
                Some((floats(LIN, d)?, ds[2] == hk))
            }
            None => None,
        };
        let bet = match beta {
            Some(bt) => {
                let bs = bt.shape();
                if bs.len() != 3 || bs[0] != b || bs[1] != t || (bs[2] != hk && bs[2] != 1) {
                    return metal_mps_ir::invalid!(
                        "{LIN}: beta {bs:?} is not ({b}, {t}, {hk}) or ({b}, {t}, 1)"
                    );
                }
                Some((floats(LIN, bt)?, bs[2]))
            }
            None => None,
        };
        let state_dtype = past.map_or(q.dtype(), |p| p.dtype());
        let mut state = match past {
            Some(p) => {
                if p.shape() != [b, hk, dk, dv] {
                    return metal_mps_ir::invalid!(
                        "{LIN}: past_state {:?} is not ({b}, {hk}, {dk}, {dv})",
                        p.shape()
                    );
                }
                floats(LIN, p)?
            }
            None => vec![0.0; b * hk * dk * dv],
        };
        let scale = if self.scale == 0.0 {
            1.0 / (dk as f64).sqrt()
        } else {
            self.scale
        };
        let group = hq / hk;
        let mut y = vec![0.0; b * t * hq * dv];
        let mut vt = vec![0.0; dv];
        for bb in 0..b {
            for i in 0..t {
                for h in 0..hk {
                    let st = &mut state[(bb * hk + h) * dk * dv..][..dk * dv];
                    if let Some((dvals, per_head)) = &dec {
                        for d in 0..dk {
                            let g = if *per_head {
                                dvals[(bb * t + i) * hk + h]
                            } else {
                                dvals[(bb * t + i) * hk * dk + h * dk + d]
                            };
                            let f = r32(r32(g).exp());
                            st[d * dv..(d + 1) * dv].iter_mut().for_each(|s| *s *= f);
                        }
                    }
                    let krow = &xk[(bb * t + i) * hk * dk + h * dk..][..dk];
                    let vrow = &xv[(bb * t + i) * hk * dv + h * dv..][..dv];
                    vt.copy_from_slice(vrow);
                    if let Some((bvals, last)) = &bet {
                        let bv = r32(bvals[(bb * t + i) * last + if *last == 1 { 0 } else { h }]);
                        for m in 0..dv {
                            let retrieved: f64 = (0..dk).map(|d| st[d * dv + m] * krow[d]).sum();
                            vt[m] = bv * (vrow[m] - retrieved);
                        }
                    }
                    for d in 0..dk {
                        for m in 0..dv {
                            st[d * dv + m] += krow[d] * vt[m];
                        }
                    }
                    for g in 0..group {
                        let qh = h * group + g;
                        let qrow = &xq[(bb * t + i) * hq * dk + qh * dk..][..dk];
                        let yrow = &mut y[(bb * t + i) * hq * dv + qh * dv..][..dv];
                        for (m, o) in yrow.iter_mut().enumerate() {
                            let acc: f64 = (0..dk).map(|d| qrow[d] * st[d * dv + m]).sum();
                            *o = scale * acc;
                        }
                    }
                }
            }
        }
        let mut outs = vec![write(out, 0, q.dtype(), vec![b, t, hq * dv], &y)?];
        if n_out > 1 {
            outs.push(write(out, 1, state_dtype, vec![b, hk, dk, dv], &state)?);
        }
        Ok(outs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
