//! The training optimizers of `ai.onnx.preview.training`: Adagrad, Adam and
//! Momentum (standard or Nesterov). Inputs: the learning rate R and the step
//! count T (scalars), then n tensors X, n gradients G and the n (or 2n for
//! Adam) state tensors; outputs: the n new X and the new states.

use crate::support::{arg, check_float, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{dispatch_dtype, Dim, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Clone, Copy, Debug)]
enum Rule {
    Adagrad {
        decay: f64,
        epsilon: f64,
        norm: f64,
    },
    Adam {
        alpha: f64,
        beta: f64,
        epsilon: f64,
        norm: f64,
        norm_post: f64,
    },
    Momentum {
        alpha: f64,
        beta: f64,
        norm: f64,
        nesterov: bool,
    },
}

impl Rule {
    /// State tensors per optimized tensor.
    fn states(self) -> usize {
        match self {
            Rule::Adam { .. } => 2,
            _ => 1,
        }
    }
}

#[derive(Debug)]
struct Optimizer {
    name: String,
    rule: Rule,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let f = |n: &str, d: f32| a.float(n, d).map(f64::from);
    let req = |n: &str| -> Result<f64> {
        a.opt_float(n)?.map(f64::from).ok_or_else(|| {
            metal_mps_ir::Error::InvalidModel(format!(
                "{}: attribute '{n}' is required",
                cx.op_type
            ))
        })
    };
    let rule = match cx.op_type {
        "Adagrad" => Rule::Adagrad {
            decay: f("decay_factor", 0.0)?,
            epsilon: f("epsilon", 1e-6)?,
            norm: f("norm_coefficient", 0.0)?,
        },
        "Adam" => Rule::Adam {
            alpha: f("alpha", 0.9)?,
            beta: f("beta", 0.999)?,
            epsilon: f("epsilon", 1e-6)?,
            norm: f("norm_coefficient", 0.0)?,
            norm_post: f("norm_coefficient_post", 0.0)?,
        },
        "Momentum" => Rule::Momentum {
            alpha: req("alpha")?,
            beta: req("beta")?,
            norm: req("norm_coefficient")?,
            nesterov: match a.string("mode")?.as_deref() {
                Some("standard") => false,
                Some("nesterov") => true,
                other => {
                    return metal_mps_ir::invalid!(
                        "Momentum: mode {other:?} (standard or nesterov)"
                    )
                }
            },
        },
        other => return metal_mps_ir::unsupported!("optimizer '{other}'"),
    };
    Ok(Op::Dyn(DynOp::new(Optimizer {
        name: cx.op_type.to_string(),
        rule,
    })))
}

impl Optimizer {
    /// The number of optimized tensors, from the input count.
    fn count(&self, n_in: usize, n_out: usize) -> Result<usize> {
        let per = 2 + self.rule.states();
        let n = n_in.saturating_sub(2) / per;
        if n_in < 2 || n * per + 2 != n_in || n_out != n * (1 + self.rule.states()) {
            return metal_mps_ir::invalid!(
                "{}: {n_in} inputs and {n_out} outputs do not describe whole tensor groups",
                self.name
            );
        }
        Ok(n)
    }
}

impl Operator for Optimizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let n = self.count(ins.len(), n_out)?;
        let mut facts = vec![];
        for s in 0..=self.rule.states() {
            for i in 0..n {
                // X for s == 0, else the state input of group s.
                let k = known(ins, 2 + if s == 0 { i } else { (1 + s) * n + i })?;
                check_float(&self.name, k.dtype)?;
                facts.push((k.dtype, k.shape.map(<[Dim]>::to_vec)));
            }
        }
        Ok(facts)
    }

    fn eval(&self, ins: &[Option<&Tensor>], n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let n = self.count(ins.len(), n_out)?;
        let r = arg(ins, 0)?.scalar_f64()?;
        let t = arg(ins, 1)?.to_i64_vec()?;
        let [t] = t[..] else {
            return metal_mps_ir::invalid!("{}: T must be a scalar", self.name);
        };
        let ns = self.rule.states();
        let mut xs_new = vec![];
        let mut states_new: Vec<Vec<Tensor>> = vec![vec![]; ns];
        for i in 0..n {
            let x = arg(ins, 2 + i)?;
            let g = arg(ins, 2 + n + i)?;
            check_float(&self.name, x.dtype())?;
            let st: Vec<&Tensor> = (0..ns)
                .map(|s| arg(ins, 2 + (2 + s) * n + i))
                .collect::<Result<_>>()?;
            for other in std::iter::once(g).chain(st.iter().copied()) {
                if other.shape() != x.shape() || other.dtype() != x.dtype() {
                    return metal_mps_ir::invalid!(
                        "{}: tensor {i}: {} {:?} does not match X {} {:?}",
                        self.name,
                        other.dtype(),
                        other.shape(),
                        x.dtype(),
                        x.shape()
                    );
                }
            }
            let xv = x.to_f64_vec();
            let gv = g.to_f64_vec();
            let sv: Vec<Vec<f64>> = st.iter().map(|s| s.to_f64_vec()).collect();
            let len = xv.len();
            let mut nx = vec![0.0; len];
            let mut ns_vals = vec![vec![0.0; len]; ns];
            for e in 0..len {
                match self.rule {
                    Rule::Adagrad {
                        decay,
                        epsilon,
                        norm,
                    } => {
                        let rr = r / (1.0 + t as f64 * decay);
                        let gr = norm * xv[e] + gv[e];
                        let h = sv[0][e] + gr * gr;
                        nx[e] = xv[e] - rr * gr / (h.sqrt() + epsilon);
                        ns_vals[0][e] = h;
                    }
                    Rule::Adam {
                        alpha,
                        beta,
                        epsilon,
                        norm,
                        norm_post,
                    } => {
                        let gr = norm * xv[e] + gv[e];
                        let v = alpha * sv[0][e] + (1.0 - alpha) * gr;
                        let h = beta * sv[1][e] + (1.0 - beta) * gr * gr;
                        let ra = if t > 0 {
                            let tf = t as f64;
                            r * (1.0 - beta.powf(tf)).sqrt() / (1.0 - alpha.powf(tf))
                        } else {
                            r
                        };
                        let xn = xv[e] - ra * (v / (h.sqrt() + epsilon));
                        nx[e] = (1.0 - norm_post) * xn;
                        ns_vals[0][e] = v;
                        ns_vals[1][e] = h;
                    }
                    Rule::Momentum {
                        alpha,
                        beta,
                        norm,
                        nesterov,
                    } => {
                        let gr = norm * xv[e] + gv[e];
                        let b = if t > 0 { beta } else { 1.0 };
                        let v = alpha * sv[0][e] + b * gr;
                        nx[e] = if nesterov {
                            xv[e] - r * (gr + alpha * v)
                        } else {
                            xv[e] - r * v
                        };
                        ns_vals[0][e] = v;
                    }
                }
            }
            let make = |vals: &[f64]| -> Result<Tensor> {
                dispatch_dtype!(x.dtype(), T => Tensor::from_vec(
                    x.shape().to_vec(),
                    vals.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>(),
                ))
            };
            xs_new.push(make(&nx)?);
            for (s, vals) in ns_vals.iter().enumerate() {
                states_new[s].push(make(vals)?);
            }
        }
        Ok(xs_new
            .into_iter()
            .chain(states_new.into_iter().flatten())
            .collect())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
