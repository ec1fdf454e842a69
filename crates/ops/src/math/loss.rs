//! SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss: scores or log
//! probabilities `[N, C, d1, ...]`, integer labels `[N, d1, ...]`, optional
//! class weights `[C]`; reduction none, sum or mean (mean divides by the sum
//! of the weights of the labels not ignored); SoftmaxCrossEntropyLoss's
//! optional second output is the log-softmax of the scores.

use crate::support::{arg, check_float, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    dispatch_dtype, DType, Dim, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor,
};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

#[derive(Debug)]
struct Loss {
    name: String,
    softmax: bool,
    reduction: Reduction,
    ignore_index: Option<i64>,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let reduction = match cx.attrs.str_or("reduction", "mean")?.as_str() {
        "none" => Reduction::None,
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        other => {
            return metal_mps_ir::invalid!(
                "{}: reduction '{other}' (none, sum or mean)",
                cx.op_type
            )
        }
    };
    Ok(Op::Dyn(DynOp::new(Loss {
        name: cx.op_type.to_string(),
        softmax: cx.op_type == "SoftmaxCrossEntropyLoss",
        reduction,
        ignore_index: cx.attrs.opt_int("ignore_index")?,
    })))
}

impl Loss {
    fn check(&self, x: DType, labels: DType, w: Option<DType>) -> Result<()> {
        check_float(&self.name, x)?;
        if !matches!(labels, DType::I32 | DType::I64) {
            return metal_mps_ir::unsupported!(
                "{}: labels of {labels} (INT32 or INT64)",
                self.name
            );
        }
        if let Some(w) = w {
            if w != x {
                return metal_mps_ir::invalid!("{}: weights are {w}, scores {x}", self.name);
            }
        }
        Ok(())
    }
}

impl Operator for Loss {
    fn name(&self) -> &str {
        &self.name
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let t = known(ins, 1)?;
        self.check(x.dtype, t.dtype, known_opt(ins, 2).map(|k| k.dtype))?;
        let loss_shape = match self.reduction {
            Reduction::None => match (t.shape, x.shape) {
                (Some(s), _) => Some(s.to_vec()),
                (None, Some(s)) if s.len() >= 2 => {
                    let mut v = vec![s[0].clone()];
                    v.extend_from_slice(&s[2..]);
                    Some(v)
                }
                _ => None,
            },
            _ => Some(Vec::<Dim>::new()),
        };
        let mut facts = vec![(x.dtype, loss_shape)];
        if n_out > 1 {
            facts.push((x.dtype, x.shape.map(<[Dim]>::to_vec)));
        }
        Ok(facts)
    }

    fn eval(&self, ins: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let t = arg(ins, 1)?;
        let w = opt(ins, 2);
        self.check(x.dtype(), t.dtype(), w.map(|w| w.dtype()))?;
        dispatch_dtype!(x.dtype(), T => self.run::<T>(x, t, w, n_out, out))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Loss {
    fn run<T: Element>(
        &self,
        x: &Tensor,
        t: &Tensor,
        w: Option<&Tensor>,
        n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let s = x.shape();
        if s.len() < 2 {
            return metal_mps_ir::invalid!("{}: input must have rank >= 2, got {s:?}", self.name);
        }
        let (n, c) = (s[0], s[1]);
        let d: usize = s[2..].iter().product();
        let mut want = vec![n];
        want.extend_from_slice(&s[2..]);
        if t.shape() != want.as_slice() {
            return metal_mps_ir::invalid!(
                "{}: labels of shape {:?}, expected {want:?}",
                self.name,
                t.shape()
            );
        }
        let weights = match w {
            Some(w) => {
                if w.shape() != [c] {
                    return metal_mps_ir::invalid!(
                        "{}: weights of shape {:?}, expected [{c}]",
                        self.name,
                        w.shape()
                    );
                }
                Some(w.to_f64_vec())
            }
            None => None,
        };
        let xs: Vec<f64> = x.as_slice::<T>()?.iter().map(|v| v.to_f64()).collect();
        // Log probabilities, [N, C, D].
        let logp = if self.softmax {
            let mut lp = xs.clone();
            for i in 0..n {
                for k in 0..d {
                    let at = |j: usize| (i * c + j) * d + k;
                    let m = (0..c).map(|j| xs[at(j)]).fold(f64::NEG_INFINITY, f64::max);
                    let m = if m.is_finite() { m } else { 0.0 };
                    let l = (0..c).map(|j| (xs[at(j)] - m).exp()).sum::<f64>().ln();
                    for j in 0..c {
                        lp[at(j)] = xs[at(j)] - m - l;
                    }
                }
            }
            lp
        } else {
            xs
        };
        let labels = t.to_i64_vec()?;
        let mut loss = vec![0.0f64; n * d];
        let mut wsum = 0.0f64;
        for i in 0..n {
            for k in 0..d {
                let label = labels[i * d + k];
                if Some(label) == self.ignore_index {
                    continue;
                }
                if label < 0 || label as usize >= c {
                    return metal_mps_ir::invalid!(
                        "{}: label {label} out of range for {c} classes",
                        self.name
                    );
                }
                let j = label as usize;
                let wt = weights.as_ref().map_or(1.0, |w| w[j]);
                loss[i * d + k] = -logp[(i * c + j) * d + k] * wt;
                wsum += wt;
            }
        }
        let first = match self.reduction {
            Reduction::None => {
                let mut y = out.tensor(0, x.dtype(), want)?;
                y.as_slice_mut::<T>()?
                    .iter_mut()
                    .zip(&loss)
                    .for_each(|(o, &v)| *o = T::from_f64(v));
                y
            }
            r => {
                let total: f64 = loss.iter().sum();
                let v = if r == Reduction::Sum {
                    total
                } else {
                    total / wsum
                };
                let mut y = out.tensor(0, x.dtype(), vec![])?;
                y.as_slice_mut::<T>()?[0] = T::from_f64(v);
                y
            }
        };
        let mut outs = vec![first];
        if n_out > 1 {
            let mut y = out.tensor(1, x.dtype(), s.to_vec())?;
            y.as_slice_mut::<T>()?
                .iter_mut()
                .zip(&logp)
                .for_each(|(o, &v)| *o = T::from_f64(v));
            outs.push(y);
        }
        Ok(outs)
    }
}
