//! FlexAttention (domain `ai.onnx.preview`, opset 1): attention over 4-D
//! inputs with grouped KV heads, whose scores and probabilities may be
//! rewritten by the `score_mod` and `prob_mod` subgraphs. The softmax and the
//! final product are computed in `softmax_precision` (float32 for 16-bit
//! inputs by default).

use super::common::{dot, floats, rounder, write};
use crate::support::{arg, check_float, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Fact, Graph, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::sync::Arc;

const OP: &str = "FlexAttention";

#[derive(Debug)]
struct Flex {
    scale: Option<f32>,
    softmax_precision: Option<DType>,
    score_mod: Option<Arc<Graph>>,
    prob_mod: Option<Arc<Graph>>,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let softmax_precision = a
        .opt_int("softmax_precision")?
        .map(DType::from_onnx_code)
        .transpose()?;
    if let Some(d) = softmax_precision {
        check_float(OP, d)?;
    }
    Ok(Op::Dyn(DynOp::new(Flex {
        scale: a.opt_float("scale")?,
        softmax_precision,
        score_mod: a.graph("score_mod")?,
        prob_mod: a.graph("prob_mod")?,
    })))
}

/// Runs a one-input, one-output subgraph node by node on the CPU kernels.
/// `captured` are the outer-scope values the subgraphs read (the node's inputs
/// after Q, K and V), which follow the subgraph's own input.
fn run_mod(g: &Graph, input: Tensor, captured: &[Option<&Tensor>], what: &str) -> Result<Tensor> {
    if g.inputs.len() != 1 + captured.len() || g.outputs.len() != 1 {
        return metal_mps_ir::invalid!(
            "{OP}: {what} must have one input (and {} captured values) and one output, has {} and {}",
            captured.len(),
            g.inputs.len(),
            g.outputs.len()
        );
    }
    let shape = input.shape().to_vec();
    let mut vals: Vec<Option<Tensor>> = vec![None; g.values.len()];
    vals[g.inputs[0]] = Some(input);
    let mut fed: Vec<Option<&Tensor>> = vec![None; g.values.len()];
    for (&v, &t) in g.inputs[1..].iter().zip(captured) {
        fed[v] = t;
    }
    for node in &g.nodes {
        let outs = {
            let ins: Vec<Option<&Tensor>> = node
                .inputs
                .iter()
                .map(|i| {
                    i.and_then(|v| {
                        vals[v]
                            .as_ref()
                            .or(fed[v])
                            .or_else(|| g.values[v].constant.as_deref())
                    })
                })
                .collect();
            metal_mps_cpu::eval_op(&node.op, &ins, node.outputs.len(), &mut Out::fresh())
                .map_err(|e| node.error(e))?
        };
        for (&v, t) in node.outputs.iter().zip(outs) {
            vals[v] = Some(t);
        }
    }
    let o = g.outputs[0];
    let y = match vals[o].take() {
        Some(t) => t,
        None => match &g.values[o].constant {
            Some(c) => c.as_ref().clone(),
            None => return metal_mps_ir::invalid!("{OP}: {what} did not compute its output"),
        },
    };
    if y.shape() != shape.as_slice() {
        return metal_mps_ir::invalid!(
            "{OP}: {what} changed the shape {shape:?} to {:?}",
            y.shape()
        );
    }
    Ok(y)
}

impl Operator for Flex {
    fn name(&self) -> &str {
        OP
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (q, v) = (known(ins, 0)?, known(ins, 2)?);
        check_float(OP, q.dtype)?;
        let shape = match (q.shape, v.shape) {
            (Some(qs), Some(vs)) if qs.len() == 4 && vs.len() == 4 => Some(vec![
                qs[0].clone(),
                qs[1].clone(),
                qs[2].clone(),
                vs[3].clone(),
            ]),
            (Some(qs), _) if qs.len() != 4 => {
                return metal_mps_ir::invalid!("{OP}: Q must be 4-D, got rank {}", qs.len())
            }
            _ => Some(vec![Dim::Unknown; 4]),
        };
        Ok(vec![(v.dtype, shape)])
    }

    fn subgraphs(&self) -> Vec<&Graph> {
        self.score_mod
            .iter()
            .chain(self.prob_mod.iter())
            .map(|g| g.as_ref())
            .collect()
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (q, k, v) = (arg(ins, 0)?, arg(ins, 1)?, arg(ins, 2)?);
        let captured = ins.get(3..).unwrap_or(&[]);
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
            return metal_mps_ir::invalid!("{OP}: Q {qs:?}, K {ks:?} and V {vs:?} must be 4-D");
        }
        let (b, hq, l, e) = (qs[0], qs[1], qs[2], qs[3]);
        let (hkv, s, dv) = (ks[1], ks[2], vs[3]);
        if ks[0] != b || vs[0] != b || ks[3] != e || vs[1] != hkv || vs[2] != s {
            return metal_mps_ir::invalid!("{OP}: Q {qs:?}, K {ks:?} and V {vs:?} do not agree");
        }
        if hkv == 0 || !hq.is_multiple_of(hkv) {
            return metal_mps_ir::invalid!(
                "{OP}: {hq} query heads are not a multiple of {hkv} key/value heads"
            );
        }
        let t1 = q.dtype();
        let r1 = rounder(t1);
        let cdt = self.softmax_precision.unwrap_or(if t1 == DType::F64 {
            DType::F64
        } else {
            DType::F32
        });
        let rc = rounder(cdt);
        let scale = self.scale.unwrap_or(1.0 / (e as f32).sqrt());
        let ss = r1(scale.sqrt() as f64);
        let (xq, xk, xv) = (floats(OP, q)?, floats(OP, k)?, floats(OP, v)?);
        let xq: Vec<f64> = xq.iter().map(|&x| r1(x * ss)).collect();
        let xk: Vec<f64> = xk.iter().map(|&x| r1(x * ss)).collect();
        let group = hq / hkv;
        let mut scores = vec![0.0; b * hq * l * s];
        for bb in 0..b {
            for h in 0..hq {
                let kh = h / group;
                for i in 0..l {
                    let qrow = &xq[((bb * hq + h) * l + i) * e..][..e];
                    for j in 0..s {
                        let krow = &xk[((bb * hkv + kh) * s + j) * e..][..e];
                        scores[((bb * hq + h) * l + i) * s + j] = rc(r1(dot(qrow, krow)));
                    }
                }
            }
        }
        let shape = vec![b, hq, l, s];
        if let Some(g) = &self.score_mod {
            let t = write(&mut Out::fresh(), 0, cdt, shape.clone(), &scores)?;
            scores = run_mod(g, t, captured, "score_mod")?.to_f64_vec();
        }
        if s > 0 {
            for row in scores.chunks_mut(s) {
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for x in row.iter_mut() {
                    *x = rc((*x - max).exp());
                    sum += *x;
                }
                let sum = rc(sum);
                row.iter_mut().for_each(|x| *x = rc(*x / sum));
            }
        }
        if let Some(g) = &self.prob_mod {
            let t = write(&mut Out::fresh(), 0, cdt, shape, &scores)?;
            scores = run_mod(g, t, captured, "prob_mod")?.to_f64_vec();
        }
        let xv: Vec<f64> = xv.iter().map(|&x| rc(x)).collect();
        let mut y = vec![0.0; b * hq * l * dv];
        for bb in 0..b {
            for h in 0..hq {
                let kh = h / group;
                for i in 0..l {
                    let p = &scores[((bb * hq + h) * l + i) * s..][..s];
                    let yrow = &mut y[((bb * hq + h) * l + i) * dv..][..dv];
                    for (j, &pj) in p.iter().enumerate() {
                        let vrow = &xv[((bb * hkv + kh) * s + j) * dv..][..dv];
                        for (o, &vv) in yrow.iter_mut().zip(vrow) {
                            *o += pj * vv;
                        }
                    }
                    yrow.iter_mut().for_each(|o| *o = rc(*o));
                }
            }
        }
        Ok(vec![write(out, 0, v.dtype(), vec![b, hq, l, dv], &y)?])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
