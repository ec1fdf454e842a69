//! One-input elementwise operators: math functions and activations (same
//! dtype out), the predicates IsNaN/IsInf (BOOL out), Not and BitwiseNot.

use crate::support::{arg, known, like, map1};
use crate::BuildCx;
use metal_mps_cpu::Spread;
use metal_mps_ir::infer::Known;
use metal_mps_ir::math::{erf_f32, gelu_f32};
use metal_mps_ir::{
    bf16, f16, BoolByte, DType, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor,
};
use rayon::prelude::*;
use std::any::Any;

/// A scalar function computed in f64 for every float type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MathFn {
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    Reciprocal,
    Floor,
    Ceil,
    /// Halves to even.
    Round,
    Sign,
    Softplus,
    Softsign,
    Elu {
        alpha: f64,
    },
    Selu {
        alpha: f64,
        gamma: f64,
    },
    Celu {
        alpha: f64,
    },
    ThresholdedRelu {
        alpha: f64,
    },
    Shrink {
        bias: f64,
        lambd: f64,
    },
    Mish,
    Gelu {
        tanh: bool,
    },
    Swish {
        alpha: f64,
    },
}

impl MathFn {
    pub fn apply(self, x: f64) -> f64 {
        use MathFn::*;
        match self {
            Sin => x.sin(),
            Cos => x.cos(),
            Tan => x.tan(),
            Asin => x.asin(),
            Acos => x.acos(),
            Atan => x.atan(),
            Sinh => x.sinh(),
            Cosh => x.cosh(),
            Asinh => x.asinh(),
            Acosh => x.acosh(),
            Atanh => x.atanh(),
            Erf => libm::erf(x),
            Reciprocal => 1.0 / x,
            Floor => x.floor(),
            Ceil => x.ceil(),
            Round => x.round_ties_even(),
            Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    x
                }
            }
            Softplus => softplus(x),
            Softsign => x / (1.0 + x.abs()),
            Elu { alpha } => {
                if x < 0.0 {
                    alpha * x.exp_m1()
                } else {
                    x
                }
            }
            Selu { alpha, gamma } => {
                if x <= 0.0 {
                    gamma * alpha * x.exp_m1()
                } else {
                    gamma * x
                }
            }
            Celu { alpha } => x.max(0.0) + (alpha * (x / alpha).exp_m1()).min(0.0),
            ThresholdedRelu { alpha } => {
                if x > alpha {
                    x
                } else {
                    0.0
                }
            }
            Shrink { bias, lambd } => {
                if x < -lambd {
                    x + bias
                } else if x > lambd {
                    x - bias
                } else {
                    0.0
                }
            }
            Mish => x * softplus(x).tanh(),
            Gelu { tanh: false } => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
            Gelu { tanh: true } => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
            }
            Swish { alpha } => x / (1.0 + (-alpha * x).exp()),
        }
    }

    /// Functions ONNX also defines on integer tensors (computed exactly).
    fn on_integers(self) -> bool {
        matches!(self, MathFn::Sign | MathFn::Shrink { .. })
    }
}

fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Math(MathFn),
    IsNaN,
    IsInf { positive: bool, negative: bool },
    Not,
    BitwiseNot,
}

#[derive(Debug)]
struct Unary {
    name: String,
    kind: Kind,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let f = |n: &str, d: f32| a.float(n, d).map(f64::from);
    let kind = Kind::Math(match cx.op_type {
        "Sin" => MathFn::Sin,
        "Cos" => MathFn::Cos,
        "Tan" => MathFn::Tan,
        "Asin" => MathFn::Asin,
        "Acos" => MathFn::Acos,
        "Atan" => MathFn::Atan,
        "Sinh" => MathFn::Sinh,
        "Cosh" => MathFn::Cosh,
        "Asinh" => MathFn::Asinh,
        "Acosh" => MathFn::Acosh,
        "Atanh" => MathFn::Atanh,
        "Erf" => MathFn::Erf,
        "Reciprocal" => MathFn::Reciprocal,
        "Floor" => MathFn::Floor,
        "Ceil" => MathFn::Ceil,
        "Round" => MathFn::Round,
        "Sign" => MathFn::Sign,
        "Softplus" => MathFn::Softplus,
        "Softsign" => MathFn::Softsign,
        "Elu" => MathFn::Elu {
            alpha: f("alpha", 1.0)?,
        },
        "Selu" => MathFn::Selu {
            alpha: f("alpha", 1.673_263_2)?,
            gamma: f("gamma", 1.050_701)?,
        },
        "Celu" => MathFn::Celu {
            alpha: f("alpha", 1.0)?,
        },
        "ThresholdedRelu" => MathFn::ThresholdedRelu {
            alpha: f("alpha", 1.0)?,
        },
        "Shrink" => MathFn::Shrink {
            bias: f("bias", 0.0)?,
            lambd: f("lambd", 0.5)?,
        },
        "Mish" => MathFn::Mish,
        "Gelu" => MathFn::Gelu {
            tanh: match a.str_or("approximate", "none")?.as_str() {
                "none" => false,
                "tanh" => true,
                other => {
                    return metal_mps_ir::invalid!("Gelu approximate '{other}' (none or tanh)")
                }
            },
        },
        "Swish" => MathFn::Swish {
            alpha: f("alpha", 1.0)?,
        },
        "IsNaN" => return Ok(dyn_op(cx, Kind::IsNaN)),
        "IsInf" => {
            return Ok(dyn_op(
                cx,
                Kind::IsInf {
                    positive: a.flag("detect_positive", true)?,
                    negative: a.flag("detect_negative", true)?,
                },
            ))
        }
        "Not" => return Ok(dyn_op(cx, Kind::Not)),
        "BitwiseNot" => return Ok(dyn_op(cx, Kind::BitwiseNot)),
        other => return metal_mps_ir::unsupported!("elementwise operator '{other}'"),
    });
    Ok(dyn_op(cx, kind))
}

fn dyn_op(cx: &BuildCx, kind: Kind) -> Op {
    Op::Dyn(DynOp::new(Unary {
        name: cx.op_type.to_string(),
        kind,
    }))
}

impl Unary {
    fn out_dtype(&self, x: DType) -> Result<DType> {
        let ok = match self.kind {
            Kind::Math(f) => x.is_float() || (f.on_integers() && x.is_int()),
            Kind::IsNaN | Kind::IsInf { .. } => x.is_float(),
            Kind::Not => x == DType::Bool,
            Kind::BitwiseNot => x.is_int(),
        };
        if !ok {
            return metal_mps_ir::unsupported!("{} on {x} tensors", self.name);
        }
        Ok(match self.kind {
            Kind::IsNaN | Kind::IsInf { .. } => DType::Bool,
            _ => x,
        })
    }
}

fn math<T: Element>(f: MathFn, x: &Tensor, out: &mut Out) -> Result<Tensor> {
    map1(x, out, |v: T| T::from_f64(f.apply(v.to_f64())))
}

/// [`math`] on FLOAT tensors: in parallel blocks, and Erf and the Erf GELU
/// in single precision ([`metal_mps_ir::math::erf_f32`]) instead of through f64.
fn math_f32(f: MathFn, x: &Tensor, out: &mut Out) -> Result<Tensor> {
    const BLOCK: usize = 16 * 1024;
    let xs = x.as_slice::<f32>()?;
    let mut y = out.tensor(0, DType::F32, x.shape().to_vec())?;
    let apply = |(ys, xs): (&mut [f32], &[f32])| {
        let pairs = ys.iter_mut().zip(xs);
        match f {
            MathFn::Erf => pairs.for_each(|(y, &x)| *y = erf_f32(x)),
            MathFn::Gelu { tanh: false } => pairs.for_each(|(y, &x)| *y = gelu_f32(x)),
            f => pairs.for_each(|(y, &x)| *y = f.apply(x as f64) as f32),
        }
    };
    let ys = y.as_slice_mut::<f32>()?;
    if xs.len() <= BLOCK {
        apply((ys, xs));
    } else {
        ys.par_chunks_mut(BLOCK)
            .zip(xs.par_chunks(BLOCK))
            .spread()
            .for_each(apply);
    }
    Ok(y)
}

fn math_int<T: Element>(f: MathFn, x: &Tensor, out: &mut Out) -> Result<Tensor> {
    map1(
        x,
        out,
        |v: T| T::from_i64(f.apply(v.to_i64() as f64) as i64),
    )
}

fn predicate<T: Element>(x: &Tensor, out: &mut Out, p: impl Fn(f64) -> bool) -> Result<Tensor> {
    map1(x, out, |v: T| BoolByte(p(v.to_f64()) as u8))
}

fn bitwise_not<T: Element>(x: &Tensor, out: &mut Out) -> Result<Tensor> {
    map1(x, out, |v: T| T::from_i64(!v.to_i64()))
}

impl Operator for Unary {
    fn name(&self) -> &str {
        &self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        Ok(vec![like(x, self.out_dtype(x.dtype)?)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        self.out_dtype(x.dtype())?;
        let y = match self.kind {
            Kind::Math(f) => match x.dtype() {
                DType::F32 => math_f32(f, x, out)?,
                DType::F64 => math::<f64>(f, x, out)?,
                DType::F16 => math::<f16>(f, x, out)?,
                DType::BF16 => math::<bf16>(f, x, out)?,
                d => metal_mps_ir::dispatch_dtype!(d, T => math_int::<T>(f, x, out)?),
            },
            Kind::IsNaN => metal_mps_ir::dispatch_dtype!(x.dtype(), T => {
                predicate::<T>(x, out, f64::is_nan)?
            }),
            Kind::IsInf { positive, negative } => {
                metal_mps_ir::dispatch_dtype!(x.dtype(), T => predicate::<T>(x, out, |v| {
                    (positive && v == f64::INFINITY) || (negative && v == f64::NEG_INFINITY)
                })?)
            }
            Kind::Not => map1(x, out, |v: BoolByte| BoolByte((v.0 == 0) as u8))?,
            Kind::BitwiseNot => {
                metal_mps_ir::dispatch_dtype!(x.dtype(), T => bitwise_not::<T>(x, out)?)
            }
        };
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::MathFn;

    #[test]
    fn functions_match_their_definitions() {
        assert!((MathFn::Erf.apply(0.5) - 0.520_499_877_813_046_5).abs() < 1e-12);
        assert_eq!(MathFn::Round.apply(2.5), 2.0);
        assert_eq!(MathFn::Round.apply(-1.5), -2.0);
        assert!((MathFn::Softplus.apply(100.0) - 100.0).abs() < 1e-12);
        assert!((MathFn::Softplus.apply(0.0) - 2f64.ln()).abs() < 1e-12);
        let gelu = MathFn::Gelu { tanh: false }.apply(1.0);
        assert!((gelu - 0.841_344_746_068_542_9).abs() < 1e-12);
    }
}
