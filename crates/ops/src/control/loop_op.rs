//! Loop: runs a body while a trip count and a condition allow, threading
//! loop-carried values (tensors, sequences or optionals) and stacking
//! per-iteration scan outputs.

use super::body::{
    graph_makes_data, infer_body, infer_body_data, merge_shapes, run_body_data, stack, truth, Arg,
    InFact,
};
use crate::support::known_opt;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    fixed_shape, BoolByte, DType, Datum, Dim, DynOp, Error, Fact, Graph, Kind, Op, Operator, Out,
    Result, Shape, Tensor,
};
use std::any::Any;
use std::sync::Arc;

#[derive(Debug)]
pub struct Loop {
    body: Arc<Graph>,
    /// Loop-carried values (the node's ONNX inputs after M and cond).
    carried: usize,
    /// Per-iteration outputs stacked along a new first axis.
    scans: usize,
    /// Whether the body may build a sequence or optional.
    makes_data: bool,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let body = cx
        .attrs
        .graph("body")?
        .ok_or_else(|| Error::InvalidModel("Loop has no 'body' attribute".into()))?;
    if cx.num_inputs < 2 {
        return metal_mps_ir::invalid!("Loop needs the inputs M and cond (either may be empty)");
    }
    let carried = cx.num_inputs - 2;
    if body.inputs.len() < 2 + carried {
        return metal_mps_ir::invalid!(
            "Loop: the body takes {} inputs, fewer than 2 + {carried} loop-carried values",
            body.inputs.len()
        );
    }
    if body.outputs.len() < 1 + carried || cx.num_outputs > body.outputs.len() - 1 {
        return metal_mps_ir::invalid!(
            "Loop: the body has {} outputs for {carried} loop-carried values and {} node outputs",
            body.outputs.len(),
            cx.num_outputs
        );
    }
    let scans = body.outputs.len() - 1 - carried;
    let makes_data = graph_makes_data(&body);
    Ok(Op::Dyn(DynOp::new(Loop {
        body,
        carried,
        scans,
        makes_data,
    })))
}

fn no_fact<'a>() -> InFact<'a> {
    InFact::unknown()
}

impl Loop {
    /// The trip count when inference can tell it: a constant M, no condition
    /// (or a constant true one) and a body that passes its condition through.
    fn known_trips(&self, inputs: &[Option<Known>]) -> Option<usize> {
        let m = known_opt(inputs, 0)?.constant?.to_i64_vec().ok()?;
        let cond_ok = match known_opt(inputs, 1) {
            None => true,
            Some(k) => k.constant.and_then(|c| truth(c, "").ok()) == Some(true),
        };
        // The body's condition output, traced back through Identity nodes.
        let mut out0 = *self.body.outputs.first()?;
        let producers = self.body.producers();
        while let Some(node) = producers[out0].map(|n| &self.body.nodes[n]) {
            match (&node.op, node.inputs.first()) {
                (Op::Identity, Some(Some(src))) if node.outputs.len() == 1 => out0 = *src,
                _ => break,
            }
        }
        let passes = out0 == *self.body.inputs.get(1)?
            || self.body.values[out0]
                .constant
                .as_ref()
                .and_then(|c| truth(c, "").ok())
                == Some(true);
        if cond_ok && passes && m.len() == 1 {
            return Some(m[0].max(0) as usize);
        }
        None
    }
}

impl Operator for Loop {
    fn name(&self) -> &str {
        "Loop"
    }

    fn infer(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        Ok(self
            .infer_data(inputs, n_out)?
            .into_iter()
            .map(|(_, f)| f)
            .collect())
    }

    fn infer_data(&self, inputs: &[Option<Known>], n_out: usize) -> Result<Vec<(Kind, Fact)>> {
        let n = self.carried;
        let mut carried: Vec<(DType, Option<Shape>)> = Vec::with_capacity(n);
        let mut kinds: Vec<Kind> = Vec::with_capacity(n);
        for i in 0..n {
            let k = known_opt(inputs, 2 + i).ok_or_else(|| {
                Error::Invalid(format!("Loop: loop-carried input {} is missing", 2 + i))
            })?;
            carried.push((k.dtype, k.shape.map(<[Dim]>::to_vec)));
            kinds.push(k.kind.clone());
        }
        let mut facts = Vec::new();
        // Carried shapes that change across iterations are generalized until stable.
        for round in 0..4 {
            let mut ins = vec![
                InFact::typed(DType::I64, Some(vec![])),
                InFact::typed(DType::Bool, Some(vec![])),
            ];
            ins.extend(carried.iter().zip(&kinds).map(|((d, s), k)| InFact {
                kind: Some(k.clone()),
                ..InFact::typed(*d, s.clone())
            }));
            ins.extend(
                inputs
                    .iter()
                    .skip(2 + n)
                    .map(|k| k.as_ref().map(InFact::of).unwrap_or_else(no_fact)),
            );
            facts = infer_body_data(&self.body, &ins)
                .map_err(|e| Error::Invalid(format!("Loop body: {e}")))?;
            let mut stable = true;
            for (i, c) in carried.iter_mut().enumerate() {
                let (_, (d, s)) = &facts[1 + i];
                if *d != c.0 {
                    return metal_mps_ir::invalid!(
                        "Loop: loop-carried value {i} enters as {} but the body returns {d}",
                        c.0
                    );
                }
                let merged = if round == 3 {
                    None
                } else {
                    merge_shapes(&c.1, s)
                };
                if merged != c.1 {
                    stable = false;
                    c.1 = merged;
                }
            }
            if stable {
                break;
            }
        }
        let trips = self
            .known_trips(inputs)
            .map(Dim::Fixed)
            .unwrap_or(Dim::Unknown);
        // A carried value's kind is what the body returns (an empty optional
        // may come back as the sequence it was standing for).
        let mut out: Vec<(Kind, Fact)> = carried
            .into_iter()
            .zip(&facts[1..])
            .map(|(c, (k, _))| (k.clone(), c))
            .collect();
        for (k, (d, s)) in facts.into_iter().skip(1 + n).take(self.scans) {
            if !k.is_tensor() {
                return metal_mps_ir::invalid!("Loop: a scan output must be a tensor, not a {k}");
            }
            out.push((
                k,
                (
                    d,
                    s.map(|s| std::iter::once(trips.clone()).chain(s).collect()),
                ),
            ));
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
        let args: Vec<Option<Arg>> = inputs.iter().map(|t| t.map(Arg::Tensor)).collect();
        self.run(&args, n_out)?
            .into_iter()
            .map(Datum::into_tensor)
            .collect()
    }

    fn eval_data(
        &self,
        inputs: &[Option<&Datum>],
        n_out: usize,
        _out: &mut Out,
    ) -> Result<Vec<Datum>> {
        let args: Vec<Option<Arg>> = inputs.iter().map(|d| d.map(Arg::Data)).collect();
        self.run(&args, n_out)
    }

    fn makes_data(&self) -> bool {
        self.makes_data
    }

    fn subgraphs(&self) -> Vec<&Graph> {
        vec![&self.body]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A tensor argument (M, cond), or an error naming it.
fn tensor_arg<'a>(inputs: &[Option<Arg<'a>>], i: usize, what: &str) -> Result<Option<&'a Tensor>> {
    match inputs.get(i).copied().flatten() {
        None => Ok(None),
        Some(Arg::Tensor(t)) | Some(Arg::Data(Datum::Tensor(t))) => Ok(Some(t)),
        Some(Arg::Data(d)) => {
            metal_mps_ir::invalid!("Loop: {what} must be a tensor, not a {}", d.kind())
        }
    }
}

impl Loop {
    /// Runs the loop on its inputs (M, cond, the loop-carried values, then the captured ones).
    fn run(&self, inputs: &[Option<Arg>], n_out: usize) -> Result<Vec<Datum>> {
        let n = self.carried;
        let max_trips = match tensor_arg(inputs, 0, "M")? {
            None => None,
            Some(m) => {
                let v = m.to_i64_vec()?;
                if v.len() != 1 {
                    return metal_mps_ir::invalid!(
                        "Loop: M must hold one element, not shape {:?}",
                        m.shape()
                    );
                }
                Some(v[0])
            }
        };
        let mut cond = match tensor_arg(inputs, 1, "cond")? {
            None => true,
            Some(c) => truth(c, "Loop's cond")?,
        };
        let mut state: Vec<Datum> = (0..n)
            .map(|i| match inputs.get(2 + i).copied().flatten() {
                Some(Arg::Tensor(t)) => Ok(Datum::Tensor(t.clone())),
                Some(Arg::Data(d)) => Ok(d.clone()),
                None => metal_mps_ir::invalid!("Loop: loop-carried input {} is missing", 2 + i),
            })
            .collect::<Result<_>>()?;
        let outer = inputs
            .iter()
            .skip(2 + n)
            .map(|a| a.ok_or_else(|| Error::Invalid("Loop: a captured value is missing".into())))
            .collect::<Result<Vec<_>>>()?;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); self.scans];
        // What the scan outputs hold so far (each iteration's tensor and its
        // bookkeeping): bounded by the cap on one tensor, so a runaway trip
        // count ends in an error, not in exhausting memory.
        let mut scan_bytes = 0usize;
        let mut i: i64 = 0;
        while cond && max_trips.is_none_or(|m| i < m) {
            let iter = Tensor::scalar(i);
            let c = Tensor::scalar(BoolByte(1));
            let mut args: Vec<Arg> = vec![Arg::Tensor(&iter), Arg::Tensor(&c)];
            args.extend(state.iter().map(Arg::Data));
            args.extend(outer.iter().copied());
            let mut outs = run_body_data(&self.body, &args)?.into_iter();
            let c = outs
                .next()
                .ok_or_else(|| Error::Invalid("Loop: the body returned nothing".into()))?;
            cond = truth(c.tensor()?, "the Loop body's condition")?;
            let mut next = Vec::with_capacity(n);
            for (k, s) in state.iter().enumerate() {
                let t = outs.next().ok_or_else(|| {
                    Error::Invalid("Loop: the body returned too few outputs".into())
                })?;
                if let (Datum::Tensor(t), Datum::Tensor(s)) = (&t, s) {
                    if t.dtype() != s.dtype() {
                        return metal_mps_ir::invalid!(
                            "Loop: loop-carried value {k} changed dtype from {} to {}",
                            s.dtype(),
                            t.dtype()
                        );
                    }
                }
                next.push(t);
            }
            state = next;
            for acc in scans.iter_mut() {
                let t = outs.next().ok_or_else(|| {
                    Error::Invalid("Loop: the body returned too few outputs".into())
                })?;
                let t = t.into_tensor().map_err(|e| {
                    Error::Invalid(format!("Loop: a scan output must be a tensor: {e}"))
                })?;
                scan_bytes = scan_bytes
                    .saturating_add(t.as_bytes().len())
                    .saturating_add(std::mem::size_of::<Tensor>());
                metal_mps_ir::limits::check_tensor_bytes(scan_bytes).map_err(|e| {
                    Error::TooLarge(format!(
                        "Loop: the scan outputs after {} iterations: {e}",
                        i + 1
                    ))
                })?;
                acc.push(t);
            }
            i += 1;
        }
        let mut results = state;
        for (k, acc) in scans.into_iter().enumerate() {
            if results.len() >= n_out {
                break;
            }
            let t = match acc.first() {
                Some(first) => {
                    let slice = first.shape().to_vec();
                    stack(&acc, 0, first.dtype(), &slice)?
                }
                None => self.empty_scan(inputs, k)?,
            };
            results.push(Datum::Tensor(t));
        }
        Ok(results)
    }

    /// Scan output `k` after zero iterations: empty, typed and shaped (past
    /// its first axis) as the body's inference says for these inputs.
    fn empty_scan(&self, inputs: &[Option<Arg>], k: usize) -> Result<Tensor> {
        let n = self.carried;
        let mut ins = vec![
            InFact::typed(DType::I64, Some(vec![])),
            InFact::typed(DType::Bool, Some(vec![])),
        ];
        for i in 0..n + (inputs.len().saturating_sub(2 + n)) {
            ins.push(match inputs.get(2 + i).copied().flatten() {
                Some(Arg::Tensor(t)) | Some(Arg::Data(Datum::Tensor(t))) => InFact::tensor(t),
                Some(Arg::Data(d)) => InFact {
                    kind: Some(d.kind()),
                    ..no_fact()
                },
                None => no_fact(),
            });
        }
        let facts =
            infer_body(&self.body, &ins).map_err(|e| Error::Invalid(format!("Loop body: {e}")))?;
        let (dtype, shape) = facts
            .get(1 + n + k)
            .cloned()
            .ok_or_else(|| Error::Invalid("Loop: the body has too few outputs".into()))?;
        let mut dims = vec![0];
        if let Some(s) = shape {
            dims.extend(
                fixed_shape(&s)
                    .unwrap_or_else(|| s.iter().map(|d| d.fixed().unwrap_or(0)).collect()),
            );
        }
        Tensor::zeros(dtype, dims)
    }
}
