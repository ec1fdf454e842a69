//! RotaryEmbedding (opset 23) and SwiGLU (opset 28).

use super::common::{floats, positive, rounder, write};
use crate::support::{arg, check_float, check_same, known, like, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

const ROPE: &str = "RotaryEmbedding";

#[derive(Debug)]
struct Rotary {
    interleaved: bool,
    rotary_dim: usize,
    num_heads: Option<usize>,
}

pub fn build_rotary(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let rotary_dim = a.int("rotary_embedding_dim", 0)?;
    if rotary_dim < 0 {
        return metal_mps_ir::invalid!("{ROPE}: rotary_embedding_dim {rotary_dim} is negative");
    }
    Ok(Op::Dyn(DynOp::new(Rotary {
        interleaved: a.flag("interleaved", false)?,
        rotary_dim: rotary_dim as usize,
        num_heads: a
            .opt_int("num_heads")?
            .map(|v| positive(ROPE, "num_heads", v))
            .transpose()?,
    })))
}

impl Operator for Rotary {
    fn name(&self) -> &str {
        ROPE
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check_float(ROPE, x.dtype)?;
        Ok(vec![like(x, x.dtype)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (x, cos, sin) = (arg(ins, 0)?, arg(ins, 1)?, arg(ins, 2)?);
        let pos = opt(ins, 3);
        check_same(ROPE, x.dtype(), cos.dtype())?;
        check_same(ROPE, x.dtype(), sin.dtype())?;
        let shape = x.shape().to_vec();
        // (batch, seq, heads, head size) and the strides of those axes in X.
        let (b, s, h, d, st) = match shape.len() {
            4 => {
                let (b, h, s, d) = (shape[0], shape[1], shape[2], shape[3]);
                (b, s, h, d, [h * s * d, d, s * d])
            }
            3 => {
                let h = self.num_heads.ok_or_else(|| {
                    metal_mps_ir::Error::Invalid(format!("{ROPE}: 3-D input needs num_heads"))
                })?;
                let (b, s, hidden) = (shape[0], shape[1], shape[2]);
                if !hidden.is_multiple_of(h) {
                    return metal_mps_ir::invalid!(
                        "{ROPE}: hidden size {hidden} is not a multiple of {h} heads"
                    );
                }
                let d = hidden / h;
                (b, s, h, d, [s * hidden, hidden, d])
            }
            r => return metal_mps_ir::invalid!("{ROPE}: input must be 3-D or 4-D, got rank {r}"),
        };
        let rot = if self.rotary_dim == 0 {
            d
        } else {
            self.rotary_dim
        };
        if rot > d || !rot.is_multiple_of(2) {
            return metal_mps_ir::invalid!(
                "{ROPE}: rotary_embedding_dim {rot} must be even and at most the head size {d}"
            );
        }
        let half = rot / 2;
        let (cs, ss) = (floats(ROPE, cos)?, floats(ROPE, sin)?);
        if cos.shape() != sin.shape() {
            return metal_mps_ir::invalid!(
                "{ROPE}: cos_cache {:?} and sin_cache {:?} differ",
                cos.shape(),
                sin.shape()
            );
        }
        let cshape = cos.shape();
        if cshape.last() != Some(&half) {
            return metal_mps_ir::invalid!(
                "{ROPE}: the caches' last dim must be rotary_embedding_dim / 2 = {half}, got {cshape:?}"
            );
        }
        // The cache row of each (batch, position).
        let rows: Vec<usize> = match pos {
            Some(p) => {
                let ids = p.to_i64_vec()?;
                if p.shape() != [b, s] {
                    return metal_mps_ir::invalid!(
                        "{ROPE}: position_ids {:?} is not (batch, sequence) = ({b}, {s})",
                        p.shape()
                    );
                }
                if cshape.len() != 2 {
                    return metal_mps_ir::invalid!(
                        "{ROPE}: with position_ids the caches must be 2-D, got {cshape:?}"
                    );
                }
                ids.iter()
                    .map(|&i| {
                        usize::try_from(i)
                            .ok()
                            .filter(|&i| i < cshape[0])
                            .ok_or_else(|| {
                                metal_mps_ir::Error::Invalid(format!(
                                "{ROPE}: position id {i} is out of range for {} cached positions",
                                cshape[0]
                            ))
                            })
                    })
                    .collect::<Result<_>>()?
            }
            None => {
                if cshape.len() != 3 || cshape[0] != b || cshape[1] != s {
                    return metal_mps_ir::invalid!(
                        "{ROPE}: without position_ids the caches must be (batch, sequence, dim / 2) = ({b}, {s}, {half}), got {cshape:?}"
                    );
                }
                (0..b * s).collect()
            }
        };
        let xs = floats(ROPE, x)?;
        let r = rounder(x.dtype());
        let mut y = xs.clone();
        for bb in 0..b {
            for t in 0..s {
                let crow = rows[bb * s + t] * half;
                let (c, sn) = (&cs[crow..crow + half], &ss[crow..crow + half]);
                for hh in 0..h {
                    let base = bb * st[0] + t * st[1] + hh * st[2];
                    for k in 0..half {
                        let (i1, i2) = if self.interleaved {
                            (base + 2 * k, base + 2 * k + 1)
                        } else {
                            (base + k, base + half + k)
                        };
                        let (x1, x2) = (xs[i1], xs[i2]);
                        y[i1] = r(r(c[k] * x1) - r(sn[k] * x2));
                        y[i2] = r(r(sn[k] * x1) + r(c[k] * x2));
                    }
                }
            }
        }
        Ok(vec![write(out, 0, x.dtype(), shape, &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct SwiGlu {
    alpha: f64,
}

pub fn build_swiglu(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(SwiGlu {
        alpha: cx.attrs.float("alpha", 1.0)? as f64,
    })))
}

impl Operator for SwiGlu {
    fn name(&self) -> &str {
        "SwiGLU"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (a, b) = (known(ins, 0)?, known(ins, 1)?);
        check_float("SwiGLU", a.dtype)?;
        check_same("SwiGLU", a.dtype, b.dtype)?;
        Ok(vec![like(a, a.dtype)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (a, b) = (arg(ins, 0)?, arg(ins, 1)?);
        check_same("SwiGLU", a.dtype(), b.dtype())?;
        if a.shape() != b.shape() {
            return metal_mps_ir::invalid!(
                "SwiGLU: A {:?} and B {:?} must have the same shape",
                a.shape(),
                b.shape()
            );
        }
        let r = rounder(a.dtype());
        let (xa, xb) = (floats("SwiGLU", a)?, floats("SwiGLU", b)?);
        let y: Vec<f64> = xa
            .iter()
            .zip(&xb)
            .map(|(&p, &q)| {
                let sig = r(1.0 / (1.0 + (-self.alpha * p).exp()));
                r(r(p * sig) * q)
            })
            .collect();
        Ok(vec![write(out, 0, a.dtype(), a.shape().to_vec(), &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
