//! Running and typing subgraphs (If branches, Loop and Scan bodies).
//!
//! A body's inputs are its own formal inputs followed by the outer-scope values
//! it reads; the control op passes both. Bodies run with a small interpreter
//! over their nodes in order ([`metal_mps_cpu::eval_node`] for each, which
//! recurses into nested control ops and names the inner node in errors).

use metal_mps_ir::infer::{infer_graph, Known};
use metal_mps_ir::{DType, Datum, Dim, Error, Fact, Graph, Kind, Node, Op, Result, Shape, Tensor};
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
    /// `None`: as the body declares (a tensor when it does not say).
    pub kind: Option<Kind>,
}

impl<'a> InFact<'a> {
    pub fn of(k: &Known<'a>) -> InFact<'a> {
        InFact {
            dtype: Some(k.dtype),
            shape: k.shape.map(<[Dim]>::to_vec),
            constant: k.constant,
            kind: Some(k.kind.clone()),
        }
    }

    /// Nothing known: the body's declared type.
    pub fn unknown() -> InFact<'a> {
        InFact {
            dtype: None,
            shape: None,
            constant: None,
            kind: None,
        }
    }

    pub fn typed(dtype: DType, shape: Option<Shape>) -> InFact<'a> {
        InFact {
            dtype: Some(dtype),
            shape,
            constant: None,
            kind: Some(Kind::Tensor),
        }
    }

    pub fn tensor(t: &'a Tensor) -> InFact<'a> {
        InFact {
            dtype: Some(t.dtype()),
            shape: Some(metal_mps_ir::from_fixed(t.shape())),
            constant: None,
            kind: Some(Kind::Tensor),
        }
    }
}

/// Infers `body` with its inputs described by `ins` (a `None` dtype keeps the
/// body's declared type) and returns its outputs' facts.
pub(crate) fn infer_body(body: &Graph, ins: &[InFact]) -> Result<Vec<Fact>> {
    Ok(infer_body_data(body, ins)?
        .into_iter()
        .map(|(_, f)| f)
        .collect())
}

/// [`infer_body`] with the outputs' kinds.
pub(crate) fn infer_body_data(body: &Graph, ins: &[InFact]) -> Result<Vec<(Kind, Fact)>> {
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
        if let Some(k) = &f.kind {
            value.kind = k.clone();
        }
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
            Ok((v.kind.clone(), (dtype, v.shape.clone())))
        })
        .collect()
}

/// Whether running `g` may make a sequence or optional out of tensors (see
/// [`metal_mps_ir::Operator::makes_data`]).
pub(crate) fn graph_makes_data(g: &Graph) -> bool {
    g.values.iter().any(|v| !v.kind.is_tensor())
        || g.nodes
            .iter()
            .any(|n| matches!(&n.op, Op::Dyn(op) if op.makes_data()))
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

/// Runs `body` on tensor `inputs` (formal inputs, then captured outer values)
/// whose outputs are tensors.
pub(crate) fn run_body(body: &Graph, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let args: Vec<Arg> = inputs.iter().map(|&t| Arg::Tensor(t)).collect();
    run_body_data(body, &args)?
        .into_iter()
        .map(Datum::into_tensor)
        .collect()
}

/// One body input, borrowed from the caller: a tensor, or a value of any kind.
#[derive(Clone, Copy)]
pub(crate) enum Arg<'a> {
    Tensor(&'a Tensor),
    Data(&'a Datum),
}

/// A value in the body interpreter's environment.
enum Held<'a> {
    Arg(Arg<'a>),
    Owned(Datum),
}

impl Held<'_> {
    fn tensor(&self) -> Option<&Tensor> {
        match self {
            Held::Arg(Arg::Tensor(t)) => Some(t),
            Held::Arg(Arg::Data(Datum::Tensor(t))) => Some(t),
            Held::Owned(Datum::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// As a [`Datum`]: borrowed where it is one, a copy of a borrowed tensor.
    fn datum(&self) -> Cow<'_, Datum> {
        match self {
            Held::Arg(Arg::Tensor(t)) => Cow::Owned(Datum::Tensor((*t).clone())),
            Held::Arg(Arg::Data(d)) => Cow::Borrowed(d),
            Held::Owned(d) => Cow::Borrowed(d),
        }
    }

    fn into_datum(self) -> Datum {
        match self {
            Held::Owned(d) => d,
            other => other.datum().into_owned(),
        }
    }
}

/// Whether a node runs through [`metal_mps_ir::Operator::eval_data`]: it reads
/// a sequence or optional, or its operator may make one.
fn on_data(node: &Node, args: &[Option<&Held>]) -> bool {
    args.iter().flatten().any(|h| h.tensor().is_none())
        || matches!(&node.op, Op::Dyn(op) if op.makes_data())
}

/// Runs `body` on values of any kind (formal inputs, then captured outer values).
pub(crate) fn run_body_data(body: &Graph, inputs: &[Arg]) -> Result<Vec<Datum>> {
    if inputs.len() != body.inputs.len() {
        return metal_mps_ir::invalid!(
            "the body takes {} inputs but {} are given",
            body.inputs.len(),
            inputs.len()
        );
    }
    let n = body.values.len();
    let mut env: Vec<Option<Held>> = (0..n).map(|_| None).collect();
    for (v, value) in body.values.iter().enumerate() {
        if let Some(c) = &value.constant {
            env[v] = Some(Held::Arg(Arg::Tensor(c)));
        }
    }
    for (&v, &a) in body.inputs.iter().zip(inputs) {
        env[v] = Some(Held::Arg(a));
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
    // Once per body run (an empty body still counts) and once per node.
    metal_mps_ir::limits::check_run_time()?;
    for (k, node) in body.nodes.iter().enumerate() {
        metal_mps_ir::limits::check_run_time()?;
        let mut args = Vec::with_capacity(node.inputs.len());
        for (i, input) in node.inputs.iter().enumerate() {
            args.push(match input {
                None => None,
                Some(v) => Some(env[*v].as_ref().ok_or_else(|| {
                    node.error(Error::Invalid(format!(
                        "input {i} ('{}') has no value",
                        body.values[*v].name
                    )))
                })?),
            });
        }
        let outs: Vec<Datum> = if on_data(node, &args) {
            let data: Vec<Option<Cow<Datum>>> = args.iter().map(|h| h.map(|h| h.datum())).collect();
            let refs: Vec<Option<&Datum>> = data.iter().map(|d| d.as_deref()).collect();
            metal_mps_cpu::eval_node_data(node, &refs)?
        } else {
            let tensors: Vec<Option<&Tensor>> =
                args.iter().map(|h| h.and_then(Held::tensor)).collect();
            metal_mps_cpu::eval_node(node, &tensors)?
                .into_iter()
                .map(Datum::Tensor)
                .collect()
        };
        drop(args);
        if outs.len() < node.outputs.len() {
            return Err(node.error(Error::Invalid(format!(
                "produced {} outputs, {} expected",
                outs.len(),
                node.outputs.len()
            ))));
        }
        for (&v, d) in node.outputs.iter().zip(outs) {
            env[v] = Some(Held::Owned(d));
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
        let d = if again {
            env[o].as_ref().map(|h| h.datum().into_owned())
        } else {
            env[o].take().map(Held::into_datum)
        };
        results.push(d.ok_or_else(|| {
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
