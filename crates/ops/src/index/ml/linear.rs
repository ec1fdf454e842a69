//! LinearRegressor and LinearClassifier (onnxruntime's binary conventions).

use super::{check_numeric, required, rows_features, values, write_scores, Labels, PostTransform};
use crate::support::{arg, from_f64s, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct Linear {
    name: &'static str,
    coefficients: Vec<f64>,
    intercepts: Vec<f64>,
    targets: usize,
    post: PostTransform,
    /// Classifier labels (`None` for the regressor).
    labels: Option<Labels>,
}

fn floats(cx: &BuildCx, n: &str) -> Result<Vec<f64>> {
    Ok(cx
        .attrs
        .floats(n)?
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect())
}

pub fn build_regressor(cx: &BuildCx) -> Result<Op> {
    let op = "LinearRegressor";
    let targets = cx.attrs.int("targets", 1)?;
    if targets < 1 {
        return metal_mps_ir::invalid!("{op}: targets = {targets}");
    }
    let intercepts = floats(cx, "intercepts")?;
    if !intercepts.is_empty() && intercepts.len() != targets as usize {
        return metal_mps_ir::invalid!(
            "{op}: {} intercepts for {targets} targets",
            intercepts.len()
        );
    }
    Ok(Op::Dyn(DynOp::new(Linear {
        name: op,
        coefficients: required(op, "coefficients", cx.attrs.floats("coefficients")?)?
            .into_iter()
            .map(f64::from)
            .collect(),
        intercepts,
        targets: targets as usize,
        post: PostTransform::parse(op, &cx.attrs.str_or("post_transform", "NONE")?)?,
        labels: None,
    })))
}

pub fn build_classifier(cx: &BuildCx) -> Result<Op> {
    let op = "LinearClassifier";
    let labels = Labels::read(op, cx.attrs, "classlabels_ints", "classlabels_strings")?
        .unwrap_or(Labels::Ints(Vec::new()));
    let intercepts = floats(cx, "intercepts")?;
    let coefficients: Vec<f64> = required(op, "coefficients", cx.attrs.floats("coefficients")?)?
        .into_iter()
        .map(f64::from)
        .collect();
    let targets = if intercepts.is_empty() {
        labels.len()
    } else {
        intercepts.len()
    };
    if targets == 0 {
        return metal_mps_ir::invalid!("{op}: neither intercepts nor class labels");
    }
    if targets > 1 && labels.len() < targets {
        return metal_mps_ir::invalid!("{op}: {} class labels for {targets} classes", labels.len());
    }
    Ok(Op::Dyn(DynOp::new(Linear {
        name: op,
        coefficients,
        intercepts,
        targets,
        post: PostTransform::parse(op, &cx.attrs.str_or("post_transform", "NONE")?)?,
        labels: Some(labels),
    })))
}

impl Linear {
    /// The score columns: a binary classifier with one score and two labels gives two.
    fn out_classes(&self) -> usize {
        match &self.labels {
            Some(l) if self.targets == 1 && l.len() == 2 => 2,
            _ => self.targets,
        }
    }
}

impl Operator for Linear {
    fn name(&self) -> &str {
        self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check_numeric(self.name, x.dtype)?;
        let n = x.shape.map(|s| match s {
            [_] => Dim::Fixed(1),
            [n, _] => n.clone(),
            _ => Dim::Unknown,
        });
        let z = (
            DType::F32,
            n.clone().map(|n| vec![n, Dim::Fixed(self.out_classes())]),
        );
        Ok(match &self.labels {
            Some(l) => vec![(l.dtype(), n.map(|n| vec![n])), z],
            None => vec![z],
        })
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        check_numeric(self.name, x.dtype())?;
        let (n, f) = rows_features(self.name, x.shape())?;
        let t = self.targets;
        if self.coefficients.len() != t * f {
            return metal_mps_ir::invalid!(
                "{}: {} coefficients for {t} targets of {f} features",
                self.name,
                self.coefficients.len()
            );
        }
        let xs = values(x);
        let oc = self.out_classes();
        let ids = self.labels.as_ref().map(Labels::ids);
        let total = n.checked_mul(oc).ok_or_else(|| {
            metal_mps_ir::Error::TooLarge(format!("{}: {n} rows of {oc} scores", self.name))
        })?;
        metal_mps_ir::limits::check_tensor_bytes(total.saturating_mul(8))?;
        let mut labels = Vec::with_capacity(n);
        let mut z = Vec::with_capacity(total);
        for r in 0..n {
            let row = &xs[r * f..(r + 1) * f];
            let s: Vec<f64> = (0..t)
                .map(|k| {
                    let dot: f64 = row
                        .iter()
                        .zip(&self.coefficients[k * f..(k + 1) * f])
                        .map(|(a, b)| a * b)
                        .sum();
                    dot + self.intercepts.get(k).copied().unwrap_or(0.0)
                })
                .collect();
            let add = match &ids {
                Some(l) => {
                    if t == 1 {
                        let (pos, neg) = if l.len() == 2 { (l[1], l[0]) } else { (1, 0) };
                        labels.push(if s[0] > 0.0 { pos } else { neg });
                    } else {
                        let mut best = 0;
                        for k in 1..t {
                            if s[k] > s[best] {
                                best = k;
                            }
                        }
                        labels.push(l[best]);
                    }
                    if oc == 2 && t == 1 {
                        1
                    } else {
                        -1
                    }
                }
                None => -1,
            };
            let mut w = write_scores(s, self.post, add);
            w.resize(oc, 0.0);
            z.extend(w);
        }
        let z = from_f64s(DType::F32, vec![n, oc], &z)?;
        Ok(match &self.labels {
            Some(l) => vec![l.output(labels)?, z],
            None => vec![z],
        })
    }

    fn takes_strings(&self) -> bool {
        matches!(self.labels, Some(Labels::Strings(_)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
