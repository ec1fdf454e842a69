//! Running and typing subgraphs (If branches, Loop and Scan bodies).
//!
//! A body's inputs are its own formal inputs followed by the outer-scope values
//! it reads; the control op passes both. Bodies run with a small interpreter
//! over their nodes in order ([`metal_mps_cpu::eval_node`] for each, which
//! recurses into nested control ops and names the inner node in errors).

use metal_mps_ir::infer::{infer_graph, Known};
use metal_mps_ir::{DType, Dim, Error, Fact, Graph, Result, Shape, Tensor};
use std::borrow::Cow;
use std::sync::Arc;

/// Constants larger than this are not copied into a body for its inference
/// (shapes are what inference needs; large weights add nothing).
const MAX_CONST_FOR_INFER: usize = 1 << 16;

/// What is known of one body input before running.
pub(crate) struct InFact<'a> {
    pub dtype: Option<DType>,
    pub shape: Option<Shape>,
    pub constant: Option<&'a Tensor>,
}

impl<'a> InFact<'a> {
    pub fn of(k: &Known<'a>) -> InFact<'a> {
        InFact {
            dtype: Some(k.dtype),
            shape: k.shape.map(<[Dim]>::to_vec),
            constant: k.constant,
        }
    }

    pub fn typed(dtype: DType, shape: Option<Shape>) -> InFact<'a> {
        InFact {
            dtype: Some(dtype),
            shape,
            constant: None,
        }
    }

    pub fn tensor(t: &'a Tensor) -> InFact<'a> {
        InFact {
            dtype: Some(t.dtype()),
            shape: Some(metal_mps_ir::from_fixed(t.shape())),
            constant: None,
        }
    }
}

/// Infers `body` with its inputs described by `ins` (a `None` dtype keeps the
/// body's declared type) and returns its outputs' facts.
pub(crate) fn infer_body(body: &Graph, ins: &[InFact]) -> Result<Vec<Fact>> {
    if ins.len() != body.inputs.len() {
        return metal_mps_ir::invalid!(
            "the body takes {} inputs but {} are given",
            body.inputs.len(),
            ins.len()
        );
    }
    let mut g = body.clone();
    for (&v, f) in g.inputs.clone().iter().zip(ins) {
        let value = &mut g.values[v];
        if let Some(c) = f.constant.filter(|c| c.numel() <= MAX_CONST_FOR_INFER) {
            g.set_constant(v, Arc::new(c.clone()));
            continue;
        }
        match f.dtype {
            Some(d) => {
                if let Some(declared) = value.dtype {
                    if declared != d {
                        return metal_mps_ir::invalid!(
                            "body input '{}' is declared {declared} but receives {d}",
                            value.name
                        );
                    }
                }
                value.dtype = Some(d);
                if f.shape.is_some() {
                    value.shape = f.shape.clone();
                }
            }
            None => {
                if value.dtype.is_none() {
                    return metal_mps_ir::invalid!("body input '{}' has no known type", value.name);
                }
            }
        }
    }
    infer_graph(&mut g)?;
    g.outputs
        .iter()
        .map(|&o| {
            let v = &g.values[o];
            let dtype = v.dtype.ok_or_else(|| {
                Error::Invalid(format!("body output '{}' has no known type", v.name))
            })?;
            Ok((dtype, v.shape.clone()))
        })
        .collect()
}

/// The more general of two shapes: dims kept where equal, else unknown.
pub(crate) fn merge_shapes(a: &Option<Shape>, b: &Option<Shape>) -> Option<Shape> {
    match (a, b) {
        (Some(a), Some(b)) if a.len() == b.len() => Some(
            a.iter()
                .zip(b)
                .map(|(x, y)| if x == y { x.clone() } else { Dim::Unknown })
                .collect(),
        ),
        _ => None,
    }
}

/// Runs `body` on `inputs` (formal inputs, then captured outer values).
pub(crate) fn run_body(body: &Graph, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    if inputs.len() != body.inputs.len() {
        return metal_mps_ir::invalid!(
            "the body takes {} inputs but {} are given",
            body.inputs.len(),
            inputs.len()
        );
    }
    let n = body.values.len();
    let mut env: Vec<Option<Cow<Tensor>>> = vec![None; n];
    for (v, value) in body.values.iter().enumerate() {
        if let Some(c) = &value.constant {
            env[v] = Some(Cow::Borrowed(&**c));
        }
    }
    for (&v, &t) in body.inputs.iter().zip(inputs) {
        env[v] = Some(Cow::Borrowed(t));
    }
    // The last node reading each value (outputs are kept to the end).
    let mut last_use = vec![None; n];
    for (k, node) in body.nodes.iter().enumerate() {
        for &i in node.inputs.iter().flatten() {
            last_use[i] = Some(k);
        }
    }
    for &o in &body.outputs {
        last_use[o] = None;
    }
    for (k, node) in body.nodes.iter().enumerate() {
        let mut args = Vec::with_capacity(node.inputs.len());
        for (i, input) in node.inputs.iter().enumerate() {
            args.push(match input {
                None => None,
                Some(v) => Some(env[*v].as_deref().ok_or_else(|| {
                    node.error(Error::Invalid(format!(
                        "input {i} ('{}') has no value",
                        body.values[*v].name
                    )))
                })?),
            });
        }
        let outs = metal_mps_cpu::eval_node(node, &args)?;
        drop(args);
        if outs.len() < node.outputs.len() {
            return Err(node.error(Error::Invalid(format!(
                "produced {} outputs, {} expected",
                outs.len(),
                node.outputs.len()
            ))));
        }
        for (&v, t) in node.outputs.iter().zip(outs) {
            env[v] = Some(Cow::Owned(t));
        }
        for &i in node.inputs.iter().flatten() {
            if last_use[i] == Some(k) && body.values[i].constant.is_none() {
                env[i] = None;
            }
        }
    }
    let mut results = Vec::with_capacity(body.outputs.len());
    for (j, &o) in body.outputs.iter().enumerate() {
        let again = body.outputs[j + 1..].contains(&o);
        let t = if again {
            env[o].as_deref().cloned()
        } else {
            env[o].take().map(Cow::into_owned)
        };
        results.push(t.ok_or_else(|| {
            Error::Invalid(format!(
                "body output '{}' has no value",
                body.values[o].name
            ))
        })?);
    }
    Ok(results)
}

/// A scalar boolean (a condition).
pub(crate) fn truth(t: &Tensor, what: &str) -> Result<bool> {
    if t.numel() != 1 {
        return metal_mps_ir::invalid!("{what} must hold one element, not shape {:?}", t.shape());
    }
    Ok(t.scalar_f64()? != 0.0)
}

/// Byte geometry of `shape` around `axis`: (outer count, axis length, inner bytes).
pub(crate) fn split_at_axis(shape: &[usize], axis: usize, elem: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner * elem)
}

/// Slice `index` of `t` along `axis` (the axis removed).
pub(crate) fn take_slice(t: &Tensor, axis: usize, index: usize) -> Result<Tensor> {
    let (outer, len, inner) = split_at_axis(t.shape(), axis, t.dtype().size());
    let src = t.as_bytes();
    let mut bytes = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        let start = (o * len + index) * inner;
        bytes.extend_from_slice(&src[start..start + inner]);
    }
    let mut shape = t.shape().to_vec();
    shape.remove(axis);
    Tensor::from_bytes(t.dtype(), shape, &bytes)
}

/// Stacks equally shaped `parts` along a new `axis` (parts in order).
pub(crate) fn stack(
    parts: &[Tensor],
    axis: usize,
    dtype: DType,
    slice: &[usize],
) -> Result<Tensor> {
    let mut shape = slice.to_vec();
    if axis > shape.len() {
        return metal_mps_ir::invalid!("stacking axis {axis} is out of range");
    }
    shape.insert(axis, parts.len());
    let mut out = Tensor::zeros(dtype, shape.clone())?;
    let (outer, len, inner) = split_at_axis(&shape, axis, dtype.size());
    let dst = out.as_bytes_mut();
    for (k, p) in parts.iter().enumerate() {
        if p.shape() != slice || p.dtype() != dtype {
            return metal_mps_ir::invalid!(
                "iteration {k} produced a {} {:?} output where the others are {dtype} {slice:?}",
                p.dtype(),
                p.shape()
            );
        }
        let src = p.as_bytes();
        for o in 0..outer {
            let d = (o * len + k) * inner;
            dst[d..d + inner].copy_from_slice(&src[o * inner..(o + 1) * inner]);
        }
    }
    Ok(out)
}
