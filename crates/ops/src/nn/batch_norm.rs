//! BatchNormalization: with running statistics (inference, the built-in
//! `Op::BatchNorm`), or in training mode, normalizing with the batch's own
//! statistics and updating the running ones.

use crate::support::{arg, check_float, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

pub fn build(cx: &BuildCx) -> Result<Op> {
    if cx.attrs.int("spatial", 1)? != 1 {
        return metal_mps_ir::unsupported!("BatchNormalization with spatial=0 (opset < 9)");
    }
    let epsilon = cx.attrs.float("epsilon", 1e-5)?;
    // Before opset 14 the extra outputs ask for training; from 14 the attribute does.
    let training = if cx.opset >= 14 {
        cx.attrs.flag("training_mode", false)?
    } else {
        cx.num_outputs > 1 && cx.attrs.int("is_test", 0)? == 0
    };
    if !training {
        return Ok(Op::BatchNorm { epsilon });
    }
    Ok(Op::Dyn(DynOp::new(BatchNormTraining {
        epsilon: epsilon as f64,
        momentum: cx.attrs.float("momentum", 0.9)? as f64,
    })))
}

/// Outputs: Y, running mean, running variance, then (before opset 14) the
/// batch's mean and variance.
#[derive(Debug)]
struct BatchNormTraining {
    epsilon: f64,
    momentum: f64,
}

impl Operator for BatchNormTraining {
    fn name(&self) -> &str {
        "BatchNormalization"
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check_float("BatchNormalization", x.dtype)?;
        let channels = x
            .shape
            .and_then(|s| s.get(1).cloned())
            .unwrap_or(Dim::Unknown);
        let mut out = vec![like(x, x.dtype)];
        for _ in 1..n_out {
            out.push((x.dtype, Some(vec![channels.clone()])));
        }
        Ok(out)
    }

    fn eval(&self, ins: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        check_float("BatchNormalization", x.dtype())?;
        let shape = x.shape().to_vec();
        if shape.len() < 2 {
            return metal_mps_ir::invalid!(
                "BatchNormalization: input of rank {} (needs N, C, ...)",
                shape.len()
            );
        }
        let (n, c) = (shape[0], shape[1]);
        let inner: usize = shape[2..].iter().product();
        let per_channel = |i: usize| -> Result<Vec<f64>> {
            let t = arg(ins, i)?;
            if t.numel() != c {
                return metal_mps_ir::invalid!(
                    "BatchNormalization: input {i} has {} elements for {c} channels",
                    t.numel()
                );
            }
            Ok(t.to_f64_vec())
        };
        let (scale, bias, mean, var) = (
            per_channel(1)?,
            per_channel(2)?,
            per_channel(3)?,
            per_channel(4)?,
        );
        let xs = x.to_f64_vec();
        let count = (n * inner) as f64;
        let mut batch_mean = vec![0.0; c];
        let mut batch_var = vec![0.0; c];
        for ch in 0..c {
            let values = (0..n).flat_map(|b| {
                let start = (b * c + ch) * inner;
                xs[start..start + inner].iter().copied()
            });
            let m = values.clone().sum::<f64>() / count;
            batch_mean[ch] = m;
            batch_var[ch] = values.map(|v| (v - m) * (v - m)).sum::<f64>() / count;
        }
        let mut y = vec![0.0; xs.len()];
        for (i, (o, &v)) in y.iter_mut().zip(&xs).enumerate() {
            let ch = (i / inner) % c;
            *o =
                scale[ch] * (v - batch_mean[ch]) / (batch_var[ch] + self.epsilon).sqrt() + bias[ch];
        }
        let running = |old: &[f64], new: &[f64]| -> Vec<f64> {
            old.iter()
                .zip(new)
                .map(|(o, b)| o * self.momentum + b * (1.0 - self.momentum))
                .collect()
        };
        let dtype: DType = x.dtype();
        let results = [
            (shape, y),
            (vec![c], running(&mean, &batch_mean)),
            (vec![c], running(&var, &batch_var)),
            (vec![c], batch_mean),
            (vec![c], batch_var),
        ];
        results
            .into_iter()
            .take(n_out)
            .enumerate()
            .map(|(i, (s, v))| {
                let t = crate::support::from_f64s(dtype, s.clone(), &v)?;
                out.copy_of(i, &t, s)
            })
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
