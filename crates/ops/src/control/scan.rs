//! Scan: runs a body once per slice of its scan inputs, threading state
//! values and stacking per-iteration scan outputs (opset 8's batched form and
//! opset 9's axes and directions).

use super::body::{infer_body, merge_shapes, run_body, stack, take_slice, InFact};
use crate::support::{axis as norm_axis, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    fixed_shape, DType, Dim, DynOp, Error, Fact, Graph, Op, Operator, Out, Result, Shape, Tensor,
};
use std::any::Any;
use std::sync::Arc;

#[derive(Debug)]
pub struct Scan {
    body: Arc<Graph>,
    /// Opset 8: a leading batch axis and an optional `sequence_lens` input.
    batched: bool,
    /// State values and scan inputs among the node's ONNX inputs.
    states: usize,
    scan_inputs: usize,
    scan_outputs: usize,
    in_axes: Vec<i64>,
    in_reverse: Vec<bool>,
    out_axes: Vec<i64>,
    out_reverse: Vec<bool>,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let body = cx
        .attrs
        .graph("body")?
        .ok_or_else(|| Error::InvalidModel("Scan has no 'body' attribute".into()))?;
    let batched = cx.opset < 9;
    let m = usize::try_from(cx.attrs.int("num_scan_inputs", -1)?)
        .map_err(|_| Error::InvalidModel("Scan needs a non-negative 'num_scan_inputs'".into()))?;
    let onnx_ins = cx.num_inputs - usize::from(batched);
    if m == 0 || m > onnx_ins {
        return metal_mps_ir::invalid!("Scan: num_scan_inputs {m} does not fit {onnx_ins} inputs");
    }
    let n = onnx_ins - m;
    if body.inputs.len() < n + m || body.outputs.len() < n {
        return metal_mps_ir::invalid!(
            "Scan: the body's {} inputs and {} outputs do not fit {n} states and {m} scan inputs",
            body.inputs.len(),
            body.outputs.len()
        );
    }
    let k = body.outputs.len() - n;
    let flags = |name: &str, len: usize| -> Result<Vec<bool>> {
        match cx.attrs.ints(name)? {
            None => Ok(vec![false; len]),
            Some(v) if v.len() == len => Ok(v.iter().map(|&d| d != 0).collect()),
            Some(v) => metal_mps_ir::invalid!("Scan: '{name}' has {} entries, not {len}", v.len()),
        }
    };
    let axes = |name: &str, len: usize| -> Result<Vec<i64>> {
        match cx.attrs.ints(name)? {
            None => Ok(vec![0; len]),
            Some(v) if v.len() == len => Ok(v),
            Some(v) => metal_mps_ir::invalid!("Scan: '{name}' has {} entries, not {len}", v.len()),
        }
    };
    let (in_axes, in_reverse, out_axes, out_reverse) = if batched {
        (
            vec![0; m],
            flags("directions", m)?,
            vec![0; k],
            vec![false; k],
        )
    } else {
        (
            axes("scan_input_axes", m)?,
            flags("scan_input_directions", m)?,
            axes("scan_output_axes", k)?,
            flags("scan_output_directions", k)?,
        )
    };
    Ok(Op::Dyn(DynOp::new(Scan {
        body,
        batched,
        states: n,
        scan_inputs: m,
        scan_outputs: k,
        in_axes,
        in_reverse,
        out_axes,
        out_reverse,
    })))
}

impl Scan {
    /// Index of the first state among the node's inputs.
    fn first(&self) -> usize {
        usize::from(self.batched)
    }

    /// One unbatched scan: final states and scan outputs.
    fn run(&self, states: Vec<Tensor>, xs: &[&Tensor], outer: &[&Tensor]) -> Result<Vec<Tensor>> {
        let mut axes = Vec::with_capacity(xs.len());
        let mut len = None;
        for (j, x) in xs.iter().enumerate() {
            let a = norm_axis("Scan", self.in_axes[j], x.rank())?;
            let l = x.shape()[a];
            if *len.get_or_insert(l) != l {
                return metal_mps_ir::invalid!(
                    "Scan: scan inputs have different lengths ({} and {l})",
                    len.unwrap_or(0)
                );
            }
            axes.push(a);
        }
        let len = len.unwrap_or(0);
        let mut states = states;
        let mut parts: Vec<Vec<Tensor>> = vec![Vec::with_capacity(len); self.scan_outputs];
        for t in 0..len {
            let slices = xs
                .iter()
                .enumerate()
                .map(|(j, x)| {
                    let idx = if self.in_reverse[j] { len - 1 - t } else { t };
                    take_slice(x, axes[j], idx)
                })
                .collect::<Result<Vec<_>>>()?;
            let mut args: Vec<&Tensor> = states.iter().collect();
            args.extend(slices.iter());
            args.extend(outer.iter().copied());
            let mut outs = run_body(&self.body, &args)?.into_iter();
            for s in states.iter_mut() {
                *s = outs.next().ok_or_else(|| {
                    Error::Invalid("Scan: the body returned too few outputs".into())
                })?;
            }
            for p in parts.iter_mut() {
                p.push(outs.next().ok_or_else(|| {
                    Error::Invalid("Scan: the body returned too few outputs".into())
                })?);
            }
        }
        let mut results = states;
        for (k, mut p) in parts.into_iter().enumerate() {
            if self.out_reverse[k] {
                p.reverse();
            }
            let t = match p.first() {
                Some(first) => {
                    let slice = first.shape().to_vec();
                    let a = norm_axis("Scan", self.out_axes[k], slice.len() + 1)?;
                    stack(&p, a, first.dtype(), &slice)?
                }
                None => self.empty_output(&results, xs, outer, k)?,
            };
            results.push(t);
        }
        Ok(results)
    }

    /// Scan output `k` of zero iterations, typed and shaped by inference.
    fn empty_output(
        &self,
        states: &[Tensor],
        xs: &[&Tensor],
        outer: &[&Tensor],
        k: usize,
    ) -> Result<Tensor> {
        let mut ins: Vec<InFact> = states.iter().map(InFact::tensor).collect();
        for (j, x) in xs.iter().enumerate() {
            let a = norm_axis("Scan", self.in_axes[j], x.rank())?;
            let mut s = metal_mps_ir::from_fixed(x.shape());
            s.remove(a);
            ins.push(InFact::typed(x.dtype(), Some(s)));
        }
        ins.extend(outer.iter().map(|t| InFact::tensor(t)));
        let facts = infer_body(&self.body, &ins)?;
        let (dtype, shape) = facts
            .get(self.states + k)
            .cloned()
            .ok_or_else(|| Error::Invalid("Scan: the body has too few outputs".into()))?;
        let mut dims: Vec<usize> = shape
            .map(|s| {
                fixed_shape(&s)
                    .unwrap_or_else(|| s.iter().map(|d| d.fixed().unwrap_or(0)).collect())
            })
            .unwrap_or_default();
        let a = norm_axis("Scan", self.out_axes[k], dims.len() + 1)?;
        dims.insert(a, 0);
        Tensor::zeros(dtype, dims)
    }
}

fn drop_axis(s: &Option<Shape>, axis: i64, extra: usize) -> Result<(Option<Shape>, Dim)> {
    match s {
        None => Ok((None, Dim::Unknown)),
        Some(s) => {
            let s = &s[extra.min(s.len())..];
            let a = norm_axis("Scan", axis, s.len())?;
            let mut v = s.to_vec();
            let d = v.remove(a);
            Ok((Some(v), d))
        }
    }
}

impl Operator for Scan {
    fn name(&self) -> &str {
        "Scan"
    }

    fn infer(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let (n, m, b) = (self.states, self.scan_inputs, self.first());
        let missing = |i: usize| Error::Invalid(format!("Scan: input {i} is missing"));
        let mut state_in: Vec<(DType, Option<Shape>)> = Vec::with_capacity(n);
        let mut batch = Dim::Unknown;
        for i in 0..n {
            let k = known_opt(inputs, b + i).ok_or_else(|| missing(b + i))?;
            let mut s = k.shape.map(<[Dim]>::to_vec);
            if self.batched {
                if let Some(v) = s.as_mut() {
                    if v.is_empty() {
                        return metal_mps_ir::invalid!("Scan: state {i} has no batch axis");
                    }
                    batch = v.remove(0);
                }
            }
            state_in.push((k.dtype, s));
        }
        let mut ins: Vec<InFact> = state_in
            .iter()
            .map(|(d, s)| InFact::typed(*d, s.clone()))
            .collect();
        let mut len = Dim::Unknown;
        for j in 0..m {
            let k = known_opt(inputs, b + n + j).ok_or_else(|| missing(b + n + j))?;
            let shape = k.shape.map(<[Dim]>::to_vec);
            if self.batched {
                if let Some(s) = &shape {
                    if let Some(d) = s.first() {
                        batch = d.clone();
                    }
                }
            }
            let (s, l) = drop_axis(&shape, self.in_axes[j], usize::from(self.batched))?;
            if j == 0 {
                len = l;
            }
            ins.push(InFact::typed(k.dtype, s));
        }
        ins.extend(inputs.iter().skip(b + n + m).map(|k| match k {
            Some(k) => InFact::of(k),
            None => InFact::unknown(),
        }));
        let facts =
            infer_body(&self.body, &ins).map_err(|e| Error::Invalid(format!("Scan body: {e}")))?;
        let mut out = Vec::with_capacity(facts.len());
        for (i, (d, s)) in state_in.iter().enumerate() {
            let (fd, fs) = &facts[i];
            if fd != d {
                return metal_mps_ir::invalid!(
                    "Scan: state {i} enters as {d} but the body returns {fd}"
                );
            }
            let s = merge_shapes(s, fs);
            out.push((
                *d,
                if self.batched {
                    s.map(|s| std::iter::once(batch.clone()).chain(s).collect())
                } else {
                    s
                },
            ));
        }
        for (k, (d, s)) in facts.into_iter().skip(n).enumerate() {
            let s = match s {
                None => None,
                Some(mut s) => {
                    let a = norm_axis("Scan", self.out_axes[k], s.len() + 1)?;
                    s.insert(a, len.clone());
                    if self.batched {
                        s.insert(0, batch.clone());
                    }
                    Some(s)
                }
            };
            out.push((d, s));
        }
        out.truncate(n_out);
        Ok(out)
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        n_out: usize,
        _out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let (n, m, b) = (self.states, self.scan_inputs, self.first());
        let get = |i: usize| {
            opt(inputs, i).ok_or_else(|| Error::Invalid(format!("Scan: input {i} is missing")))
        };
        let states: Vec<&Tensor> = (b..b + n).map(get).collect::<Result<_>>()?;
        let xs: Vec<&Tensor> = (b + n..b + n + m).map(get).collect::<Result<_>>()?;
        let outer: Vec<&Tensor> = (b + n + m..inputs.len()).map(get).collect::<Result<_>>()?;
        let mut results = if !self.batched {
            self.run(states.into_iter().cloned().collect(), &xs, &outer)?
        } else {
            self.run_batched(&states, &xs, &outer, opt(inputs, 0))?
        };
        results.truncate(n_out);
        Ok(results)
    }

    fn subgraphs(&self) -> Vec<&Graph> {
        vec![&self.body]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Scan {
    /// Opset 8: every batch entry scanned on its own (up to its sequence
    /// length; scan outputs past it are zero), results stacked on axis 0.
    fn run_batched(
        &self,
        states: &[&Tensor],
        xs: &[&Tensor],
        outer: &[&Tensor],
        lens: Option<&Tensor>,
    ) -> Result<Vec<Tensor>> {
        let Some(first) = xs.first() else {
            return metal_mps_ir::invalid!("Scan needs a scan input");
        };
        if first.rank() < 2 {
            return metal_mps_ir::invalid!(
                "Scan (opset 8): scan inputs need [batch, sequence, ...], not {:?}",
                first.shape()
            );
        }
        let (batch, max_len) = (first.shape()[0], first.shape()[1]);
        for t in states.iter().chain(xs) {
            if t.shape().first() != Some(&batch) {
                return metal_mps_ir::invalid!(
                    "Scan: inputs disagree on the batch size {batch} ({:?})",
                    t.shape()
                );
            }
        }
        let lens = super::sequence_lens("Scan", lens, batch, max_len)?;
        let mut per_batch: Vec<Vec<Tensor>> = Vec::with_capacity(batch);
        for (bi, &len) in lens.iter().enumerate() {
            let st = states
                .iter()
                .map(|s| take_slice(s, 0, bi))
                .collect::<Result<Vec<_>>>()?;
            let mut x = Vec::with_capacity(xs.len());
            for t in xs {
                let s = take_slice(t, 0, bi)?;
                x.push(if len < max_len {
                    truncate0(&s, len)?
                } else {
                    s
                });
            }
            let xr: Vec<&Tensor> = x.iter().collect();
            let mut outs = self.run(st, &xr, outer)?;
            for o in outs.iter_mut().skip(self.states) {
                if len < max_len {
                    *o = pad0(o, max_len)?;
                }
            }
            per_batch.push(outs);
        }
        let count = self.states + self.scan_outputs;
        let mut results = Vec::with_capacity(count);
        for k in 0..count {
            let parts: Vec<Tensor> = per_batch
                .iter_mut()
                .map(|o| std::mem::replace(&mut o[k], Tensor::scalar(0f32)))
                .collect();
            let Some(p0) = parts.first() else {
                return metal_mps_ir::invalid!("Scan (opset 8) with batch size 0");
            };
            let slice = p0.shape().to_vec();
            results.push(stack(&parts, 0, p0.dtype(), &slice)?);
        }
        Ok(results)
    }
}

/// The first `len` entries of axis 0.
fn truncate0(t: &Tensor, len: usize) -> Result<Tensor> {
    let row = t.as_bytes().len() / t.shape()[0].max(1);
    let mut shape = t.shape().to_vec();
    shape[0] = len;
    Tensor::from_bytes(t.dtype(), shape, &t.as_bytes()[..row * len])
}

/// `t` zero-padded along axis 0 to `len` entries.
fn pad0(t: &Tensor, len: usize) -> Result<Tensor> {
    let mut shape = t.shape().to_vec();
    if shape.is_empty() {
        return metal_mps_ir::invalid!("Scan: a scan output has no sequence axis");
    }
    shape[0] = len;
    let mut out = Tensor::zeros(t.dtype(), shape)?;
    let n = t.as_bytes().len();
    out.as_bytes_mut()[..n].copy_from_slice(t.as_bytes());
    Ok(out)
}
