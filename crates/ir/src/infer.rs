//! Dtype and shape inference.
//!
//! Every value gets a dtype; shapes are inferred where the op allows it from
//! what is known before running (symbolic dims propagate, constants are read).
//! A shape that can't be known stays `None`: the engines compute exact shapes at
//! run time, so inference is for validation, planning and `info`.

use crate::{
    broadcast_dims, normalize_axis, BinaryOp, DType, Dim, Error, Fact, Graph, Kind, Node, Op,
    Result, Shape, Tensor,
};

/// What inference knows of one input.
pub struct Known<'a> {
    /// Of the tensor, or of the tensors inside a sequence or optional.
    pub dtype: DType,
    pub shape: Option<&'a [Dim]>,
    pub constant: Option<&'a Tensor>,
    pub kind: &'a Kind,
}

/// Infers every node's outputs in order; errors name the node.
pub fn infer_graph(g: &mut Graph) -> Result<()> {
    for n in 0..g.nodes.len() {
        let node = &g.nodes[n];
        let mut known = Vec::with_capacity(node.inputs.len());
        for (i, input) in node.inputs.iter().enumerate() {
            known.push(match input {
                None => None,
                Some(v) => {
                    let value = &g.values[*v];
                    let dtype = value.dtype.ok_or_else(|| {
                        node.error(Error::InvalidModel(format!(
                            "input {i} ('{}') has no known type",
                            value.name
                        )))
                    })?;
                    Some(Known {
                        dtype,
                        shape: value.shape.as_deref(),
                        constant: value.constant.as_deref(),
                        kind: &value.kind,
                    })
                }
            });
        }
        let outs = infer_node_data(node, &known).map_err(|e| node.error(e))?;
        let outputs = node.outputs.clone();
        for (v, (kind, (dtype, shape))) in outputs.into_iter().zip(outs) {
            let value = &mut g.values[v];
            value.dtype = Some(dtype);
            value.kind = kind;
            // Keep a declared shape when inference learned less.
            if shape.is_some() || value.shape.is_none() {
                value.shape = shape;
            }
        }
    }
    Ok(())
}

fn input<'a, 'b>(ins: &'b [Option<Known<'a>>], i: usize) -> Result<&'b Known<'a>> {
    ins.get(i)
        .and_then(|k| k.as_ref())
        .ok_or_else(|| Error::InvalidModel(format!("required input {i} is missing")))
}

fn float_only(dtype: DType, what: &str) -> Result<()> {
    if !dtype.is_float() {
        return crate::unsupported!("{what} on {dtype} tensors (only FLOAT and FLOAT16)");
    }
    Ok(())
}

fn same_dtype(a: DType, b: DType) -> Result<()> {
    if a != b {
        return crate::invalid!("input dtypes differ: {a} and {b}");
    }
    Ok(())
}

/// Output kinds, dtypes and shapes of one node. Only `Identity` among the
/// built-in ops passes a sequence or optional through; operator modules say
/// what they take in [`crate::Operator::infer_data`].
pub fn infer_node_data(node: &Node, ins: &[Option<Known>]) -> Result<Vec<(Kind, Fact)>> {
    let n_out = node.outputs.len();
    if let Op::Dyn(op) = &node.op {
        let outs = op.infer_data(ins, n_out)?;
        check_output_count(op.name(), outs.len(), n_out)?;
        crate::strings::check_node(&node.op, ins, outs.iter().map(|(_, (d, _))| *d))?;
        return Ok(outs);
    }
    if let (Op::Identity, Some(Some(x))) = (&node.op, ins.first()) {
        if !x.kind.is_tensor() && n_out == 1 {
            return Ok(vec![(
                x.kind.clone(),
                (x.dtype, x.shape.map(<[Dim]>::to_vec)),
            )]);
        }
    }
    for (i, k) in ins.iter().enumerate() {
        if let Some(k) = k.as_ref().filter(|k| !k.kind.is_tensor()) {
            return Err(crate::tensors_only(&node.op.name(), i, k.kind));
        }
    }
    let facts = infer_node(node, ins)?;
    Ok(facts.into_iter().map(|f| (Kind::Tensor, f)).collect())
}

/// Output dtypes and shapes of one node.
pub fn infer_node(node: &Node, ins: &[Option<Known>]) -> Result<Vec<Fact>> {
    let outs = infer_op(node, ins)?;
    crate::strings::check_node(&node.op, ins, outs.iter().map(|(d, _)| *d))?;
    Ok(outs)
}

fn check_output_count(op: &str, got: usize, n_out: usize) -> Result<()> {
    if got != n_out {
        return crate::invalid!("the node has {n_out} outputs, {op} gives {got}");
    }
    Ok(())
}

fn infer_op(node: &Node, ins: &[Option<Known>]) -> Result<Vec<Fact>> {
    let n_out = node.outputs.len();
    if let Op::Dyn(op) = &node.op {
        let outs = op.infer(ins, n_out)?;
        check_output_count(op.name(), outs.len(), n_out)?;
        return Ok(outs);
    }
    let x = input(ins, 0)?;
    Ok(match &node.op {
        Op::Binary(op) => {
            let b = input(ins, 1)?;
            // Pow's exponent may have its own numeric type.
            if *op != BinaryOp::Pow {
                same_dtype(x.dtype, b.dtype)?;
            }
            if x.dtype == DType::Bool || b.dtype == DType::Bool {
                return crate::unsupported!("{op:?} on BOOL tensors");
            }
            vec![(x.dtype, broadcast_known(&[x, b])?)]
        }
        Op::Unary(u) => {
            if !(x.dtype.is_float() || u.supports_integers() && x.dtype != DType::Bool) {
                return crate::unsupported!("{} on {} tensors", node.op.name(), x.dtype);
            }
            vec![(x.dtype, x.shape.map(<[Dim]>::to_vec))]
        }
        Op::Clip => {
            if x.dtype == DType::Bool {
                return crate::unsupported!("Clip on BOOL tensors");
            }
            for k in ins.iter().skip(1).flatten() {
                same_dtype(x.dtype, k.dtype)?;
            }
            vec![(x.dtype, x.shape.map(<[Dim]>::to_vec))]
        }
        Op::Sum => {
            let all: Vec<&Known> = ins.iter().flatten().collect();
            for k in &all {
                same_dtype(x.dtype, k.dtype)?;
            }
            float_only(x.dtype, "Sum")?;
            vec![(x.dtype, broadcast_known(&all)?)]
        }
        Op::Identity | Op::Cast { .. } => {
            let dt = if let Op::Cast { to } = node.op {
                to
            } else {
                x.dtype
            };
            let mut outs = vec![(dt, x.shape.map(<[Dim]>::to_vec))];
            // Dropout's optional mask output.
            for _ in 1..n_out {
                outs.push((DType::Bool, x.shape.map(<[Dim]>::to_vec)));
            }
            outs
        }
        Op::BatchNorm { .. } | Op::Lrn(_) => {
            float_only(x.dtype, &node.op.name())?;
            vec![(x.dtype, x.shape.map(<[Dim]>::to_vec))]
        }
        Op::Softmax { .. } => {
            float_only(x.dtype, "Softmax")?;
            vec![(x.dtype, x.shape.map(<[Dim]>::to_vec))]
        }
        Op::Conv(c) => {
            float_only(x.dtype, "Conv")?;
            let w = input(ins, 1)?;
            same_dtype(x.dtype, w.dtype)?;
            let shape = match (x.shape, w.shape) {
                (Some(xs), Some(ws)) if xs.len() >= 3 && ws.len() == xs.len() => {
                    let mut out = vec![xs[0].clone(), ws[0].clone()];
                    for (a, (d, k)) in xs[2..].iter().zip(&ws[2..]).enumerate() {
                        out.push(match (d, k) {
                            (Dim::Fixed(d), Dim::Fixed(k)) => {
                                Dim::Fixed(c.window.output_dim(a, *d, *k)?.0)
                            }
                            _ => Dim::Unknown,
                        });
                    }
                    if c.max_pool_2x2 {
                        if out.len() != 4 {
                            return crate::invalid!("a fused 2×2 max pool needs a 2-D convolution");
                        }
                        for d in &mut out[2..] {
                            if let Dim::Fixed(n) = d {
                                *n /= 2;
                            } else {
                                *d = Dim::Unknown;
                            }
                        }
                    }
                    Some(out)
                }
                (Some(xs), Some(ws)) => {
                    return crate::invalid!(
                        "input rank {} and weight rank {} do not make a convolution",
                        xs.len(),
                        ws.len()
                    )
                }
                _ => None,
            };
            vec![(x.dtype, shape)]
        }
        Op::Pool(p) => {
            if p.kind == crate::PoolKind::Average {
                float_only(x.dtype, "AveragePool")?;
            }
            let shape = x.shape.map(|xs| -> Result<Shape> {
                if xs.len() < 3 {
                    return crate::invalid!(
                        "pooling needs an input of rank 3 or more, got {}",
                        xs.len()
                    );
                }
                let mut out = xs[..2].to_vec();
                for (a, d) in xs[2..].iter().enumerate() {
                    let k = *p.window.kernel.get(a).ok_or_else(|| {
                        Error::Invalid(format!(
                            "kernel_shape has {} dims, input has {} spatial",
                            p.window.kernel.len(),
                            xs.len() - 2
                        ))
                    })?;
                    out.push(match d {
                        Dim::Fixed(d) => Dim::Fixed(p.window.output_dim(a, *d, k)?.0),
                        _ => Dim::Unknown,
                    });
                }
                Ok(out)
            });
            let shape = shape.transpose()?;
            let mut outs = vec![(x.dtype, shape.clone())];
            if n_out > 1 {
                outs.push((DType::I64, shape));
            }
            outs
        }
        Op::GlobalPool(_) => {
            float_only(x.dtype, "global pooling")?;
            let shape = x.shape.map(|xs| {
                xs.iter()
                    .enumerate()
                    .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Fixed(1) })
                    .collect()
            });
            vec![(x.dtype, shape)]
        }
        Op::MatMul { .. } => {
            let b = input(ins, 1)?;
            same_dtype(x.dtype, b.dtype)?;
            if x.dtype == DType::Bool {
                return crate::unsupported!("MatMul on BOOL tensors");
            }
            vec![(x.dtype, matmul_shape(x.shape, b.shape)?)]
        }
        Op::Gemm(g) => {
            float_only(x.dtype, "Gemm")?;
            let b = input(ins, 1)?;
            same_dtype(x.dtype, b.dtype)?;
            let shape = match (x.shape, b.shape) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                    let m = if g.trans_a { &a[1] } else { &a[0] };
                    let n = if g.trans_b { &b[0] } else { &b[1] };
                    Some(vec![m.clone(), n.clone()])
                }
                (Some(_), Some(_)) => return crate::invalid!("Gemm inputs must be 2-D"),
                _ => None,
            };
            vec![(x.dtype, shape)]
        }
        Op::Reshape { allowzero } => {
            let s = input(ins, 1)?;
            let shape = match s.constant {
                Some(t) => reshape_dims(x.shape, &t.to_i64_vec()?, *allowzero)?,
                None => s
                    .shape
                    .and_then(|ss| ss.first())
                    .and_then(Dim::fixed)
                    .map(crate::unknown_shape)
                    .transpose()?,
            };
            vec![(x.dtype, shape)]
        }
        Op::Transpose { perm } => {
            let shape = x.shape.map(|xs| -> Result<Shape> {
                let perm = resolve_perm(perm, xs.len())?;
                Ok(perm.iter().map(|&p| xs[p].clone()).collect())
            });
            vec![(x.dtype, shape.transpose()?)]
        }
        Op::Concat { axis } => {
            let all: Vec<&Known> = ins.iter().flatten().collect();
            for k in &all {
                same_dtype(x.dtype, k.dtype)?;
            }
            let shape = if all.iter().all(|k| k.shape.is_some()) {
                let first = all[0].shape.unwrap_or(&[]);
                let ax = normalize_axis(*axis, first.len())?;
                let mut out = first.to_vec();
                let mut total = Some(0usize);
                for k in &all {
                    let s = k.shape.unwrap_or(&[]);
                    if s.len() != first.len() {
                        return crate::invalid!(
                            "Concat inputs have ranks {} and {}",
                            first.len(),
                            s.len()
                        );
                    }
                    total = match (total, &s[ax]) {
                        (Some(t), Dim::Fixed(d)) => Some(t + d),
                        _ => None,
                    };
                }
                out[ax] = total.map(Dim::Fixed).unwrap_or(Dim::Unknown);
                Some(out)
            } else {
                None
            };
            vec![(x.dtype, shape)]
        }
        Op::Split {
            axis,
            sizes,
            num_outputs,
        } => {
            let split_input = ins.get(1).and_then(|k| k.as_ref());
            let runtime_sizes = split_input
                .and_then(|k| k.constant)
                .map(|t| t.to_i64_vec())
                .transpose()?;
            // Sizes given at run time are unknown here: no shapes rather than equal parts.
            if sizes.is_none() && split_input.is_some() && runtime_sizes.is_none() {
                return Ok(vec![(x.dtype, None); n_out]);
            }
            let sizes = sizes.clone().or(runtime_sizes);
            let shapes: Vec<Option<Shape>> = match x.shape {
                Some(xs) => {
                    let ax = normalize_axis(*axis, xs.len())?;
                    match (&xs[ax], sizes) {
                        (_, Some(sz)) => sz
                            .iter()
                            .map(|&s| {
                                let mut o = xs.to_vec();
                                o[ax] = Dim::Fixed(s as usize);
                                Some(o)
                            })
                            .collect(),
                        (Dim::Fixed(d), None) => split_even(*d, *num_outputs)
                            .into_iter()
                            .map(|s| {
                                let mut o = xs.to_vec();
                                o[ax] = Dim::Fixed(s);
                                Some(o)
                            })
                            .collect(),
                        _ => vec![None; n_out],
                    }
                }
                None => vec![None; n_out],
            };
            if shapes.len() != n_out {
                return crate::invalid!(
                    "split gives {} parts but the node has {n_out} outputs",
                    shapes.len()
                );
            }
            shapes.into_iter().map(|s| (x.dtype, s)).collect()
        }
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            if x.dtype == DType::Bool && matches!(op, crate::ReduceOp::Sum | crate::ReduceOp::Mean)
            {
                return crate::unsupported!("{op:?} reduction on BOOL tensors");
            }
            let runtime_axes = ins.get(1).and_then(|k| k.as_ref());
            let axes = match (axes, runtime_axes) {
                (Some(a), _) => Some(a.clone()),
                (None, Some(k)) => k.constant.map(|t| t.to_i64_vec()).transpose()?,
                (None, None) => Some(vec![]),
            };
            let shape = match (x.shape, axes) {
                (Some(xs), Some(axes)) => {
                    Some(reduce_dims(xs, &axes, *keepdims, *noop_with_empty_axes)?)
                }
                _ => None,
            };
            vec![(x.dtype, shape)]
        }
        Op::Flatten { axis } => {
            let shape = x.shape.map(|xs| -> Result<Shape> {
                let r = xs.len() as i64;
                let ax = if *axis < 0 { axis + r } else { *axis };
                if ax < 0 || ax > r {
                    return crate::invalid!("Flatten axis {axis} out of range for rank {r}");
                }
                let ax = ax as usize;
                Ok(vec![product(&xs[..ax]), product(&xs[ax..])])
            });
            vec![(x.dtype, shape.transpose()?)]
        }
        Op::Squeeze { axes } => {
            let axes = axes.clone().or(ins
                .get(1)
                .and_then(|k| k.as_ref())
                .and_then(|k| k.constant)
                .map(|t| t.to_i64_vec())
                .transpose()?);
            let has_axes_input = ins.get(1).map(|k| k.is_some()).unwrap_or(false);
            let shape = match (x.shape, axes) {
                (Some(xs), Some(axes)) => {
                    let axes = axes
                        .iter()
                        .map(|&a| normalize_axis(a, xs.len()))
                        .collect::<Result<Vec<_>>>()?;
                    for &a in &axes {
                        if let Dim::Fixed(d) = xs[a] {
                            if d != 1 {
                                return crate::invalid!("cannot squeeze axis {a} of size {d}");
                            }
                        }
                    }
                    Some(
                        xs.iter()
                            .enumerate()
                            .filter(|(i, _)| !axes.contains(i))
                            .map(|(_, d)| d.clone())
                            .collect(),
                    )
                }
                (Some(xs), None) if !has_axes_input => {
                    if xs.iter().all(|d| d.fixed().is_some()) {
                        Some(
                            xs.iter()
                                .filter(|d| **d != Dim::Fixed(1))
                                .cloned()
                                .collect(),
                        )
                    } else {
                        None
                    }
                }
                _ => None,
            };
            vec![(x.dtype, shape)]
        }
        Op::Unsqueeze { axes } => {
            let axes = axes.clone().or(ins
                .get(1)
                .and_then(|k| k.as_ref())
                .and_then(|k| k.constant)
                .map(|t| t.to_i64_vec())
                .transpose()?);
            let shape = match (x.shape, axes) {
                (Some(xs), Some(axes)) => Some(unsqueeze_dims(xs, &axes)?),
                _ => None,
            };
            vec![(x.dtype, shape)]
        }
        Op::Shape { start, end } => {
            let shape = x.shape.map(|xs| {
                let (s, e) = shape_range(xs.len(), *start, *end);
                vec![Dim::Fixed(e - s)]
            });
            vec![(DType::I64, shape)]
        }
        Op::Gather { axis } => {
            let idx = input(ins, 1)?;
            if !matches!(idx.dtype, DType::I32 | DType::I64) {
                return crate::invalid!("Gather indices must be INT32 or INT64, got {}", idx.dtype);
            }
            let shape = match (x.shape, idx.shape) {
                (Some(xs), Some(is)) => {
                    let ax = normalize_axis(*axis, xs.len())?;
                    let mut out = xs[..ax].to_vec();
                    out.extend_from_slice(is);
                    out.extend_from_slice(&xs[ax + 1..]);
                    Some(out)
                }
                _ => None,
            };
            vec![(x.dtype, shape)]
        }
        Op::Pad { .. } => {
            let shape = match (x.shape, node_pads(node, ins)?) {
                (Some(xs), Some(pads)) if pads.len() == 2 * xs.len() => Some(
                    xs.iter()
                        .enumerate()
                        .map(|(i, d)| match d {
                            Dim::Fixed(d) => {
                                let v = *d as i64 + pads[i] + pads[i + xs.len()];
                                if v < 0 {
                                    Dim::Unknown
                                } else {
                                    Dim::Fixed(v as usize)
                                }
                            }
                            _ => Dim::Unknown,
                        })
                        .collect(),
                ),
                _ => None,
            };
            vec![(x.dtype, shape)]
        }
        Op::Dyn(_) => unreachable!("handled above"),
    })
}

/// Pads known before running (attribute, or constant input with optional axes),
/// expanded to `2 * rank`.
fn node_pads(node: &Node, ins: &[Option<Known>]) -> Result<Option<Vec<i64>>> {
    let Op::Pad { pads, .. } = &node.op else {
        return Ok(None);
    };
    if let Some(p) = pads {
        return Ok(Some(p.clone()));
    }
    let Some(p) = ins.get(1).and_then(|k| k.as_ref()).and_then(|k| k.constant) else {
        return Ok(None);
    };
    let p = p.to_i64_vec()?;
    match ins.get(3).and_then(|k| k.as_ref()) {
        None => Ok(Some(p)),
        Some(axes) => {
            let (Some(a), Some(rank)) = (
                axes.constant,
                ins[0].as_ref().and_then(|k| k.shape).map(|s| s.len()),
            ) else {
                return Ok(None);
            };
            Ok(Some(expand_pads(&p, &a.to_i64_vec()?, rank)?))
        }
    }
}

/// Expands pads given for some axes into pads for all `rank` axes.
pub fn expand_pads(pads: &[i64], axes: &[i64], rank: usize) -> Result<Vec<i64>> {
    if pads.len() != 2 * axes.len() {
        return crate::invalid!("{} pads for {} axes", pads.len(), axes.len());
    }
    let mut full = vec![0; 2 * rank];
    for (i, &a) in axes.iter().enumerate() {
        let a = normalize_axis(a, rank)?;
        full[a] = pads[i];
        full[a + rank] = pads[i + axes.len()];
    }
    Ok(full)
}

/// The broadcast of the inputs' shapes; `None` when a rank is unknown.
pub fn broadcast_known(all: &[&Known]) -> Result<Option<Shape>> {
    let mut acc: Option<Shape> = Some(vec![]);
    for k in all {
        acc = match (acc, k.shape) {
            (Some(a), Some(b)) => Some(broadcast_dims(&a, b).ok_or_else(|| {
                Error::Invalid(format!(
                    "shapes {} and {} cannot be broadcast",
                    crate::display_shape(Some(&a)),
                    crate::display_shape(Some(b))
                ))
            })?),
            _ => None,
        };
    }
    Ok(acc)
}

fn product(dims: &[Dim]) -> Dim {
    let mut p = 1usize;
    for d in dims {
        match d {
            Dim::Fixed(n) => p *= n,
            _ => return Dim::Unknown,
        }
    }
    Dim::Fixed(p)
}

/// Sizes of `parts` near-equal chunks of `total` (the last smaller), as Split-18 defines.
pub fn split_even(total: usize, parts: usize) -> Vec<usize> {
    if parts == 0 {
        return vec![];
    }
    let chunk = total.div_ceil(parts);
    (0..parts)
        .map(|i| chunk.min(total.saturating_sub(i * chunk)))
        .collect()
}

/// The `[start, end)` range of Shape-15's slice.
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let clamp = |v: i64| -> usize {
        let v = if v < 0 { v + rank as i64 } else { v };
        v.clamp(0, rank as i64) as usize
    };
    let s = clamp(start);
    let e = end.map(clamp).unwrap_or(rank);
    (s, e.max(s))
}

pub fn resolve_perm(perm: &[usize], rank: usize) -> Result<Vec<usize>> {
    if perm.is_empty() {
        return Ok((0..rank).rev().collect());
    }
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return crate::invalid!("perm {perm:?} is not a permutation of {rank} axes");
    }
    Ok(perm.to_vec())
}

fn matmul_shape(a: Option<&[Dim]>, b: Option<&[Dim]>) -> Result<Option<Shape>> {
    let (Some(a), Some(b)) = (a, b) else {
        return Ok(None);
    };
    if a.is_empty() || b.is_empty() {
        return crate::invalid!("MatMul inputs must have rank 1 or more");
    }
    let a2: Shape = if a.len() == 1 {
        vec![Dim::Fixed(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2: Shape = if b.len() == 1 {
        vec![b[0].clone(), Dim::Fixed(1)]
    } else {
        b.to_vec()
    };
    let (ka, kb) = (&a2[a2.len() - 1], &b2[b2.len() - 2]);
    if let (Dim::Fixed(x), Dim::Fixed(y)) = (ka, kb) {
        if x != y {
            return crate::invalid!("MatMul inner dimensions differ: {x} and {y}");
        }
    }
    let batch = broadcast_dims(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
        .ok_or_else(|| Error::Invalid("MatMul batch dimensions cannot be broadcast".into()))?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Ok(Some(out))
}

/// Reshape's target with 0 and -1 resolved where the input is known enough.
fn reshape_dims(input: Option<&[Dim]>, target: &[i64], allowzero: bool) -> Result<Option<Shape>> {
    if target.iter().filter(|&&d| d == -1).count() > 1 {
        return crate::invalid!("Reshape target {target:?} has more than one -1");
    }
    let mut out = Vec::with_capacity(target.len());
    for (i, &d) in target.iter().enumerate() {
        out.push(match d {
            0 if !allowzero => match input.and_then(|s| s.get(i)) {
                Some(d) => d.clone(),
                None => Dim::Unknown,
            },
            -1 => Dim::Unknown,
            d if d < 0 => return crate::invalid!("Reshape target {target:?} has a negative size"),
            d => Dim::Fixed(d as usize),
        });
    }
    if let Some(pos) = target.iter().position(|&d| d == -1) {
        let total = input
            .and_then(crate::fixed_shape)
            .map(|s| s.iter().product::<usize>());
        let known: Option<usize> = out
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != pos)
            .map(|(_, d)| d.fixed())
            .product();
        if let (Some(t), Some(k)) = (total, known) {
            if k == 0 || t % k != 0 {
                return crate::invalid!("cannot reshape {t} elements into {target:?}");
            }
            out[pos] = Dim::Fixed(t / k);
        }
    }
    Ok(Some(out))
}

fn reduce_dims(xs: &[Dim], axes: &[i64], keepdims: bool, noop: bool) -> Result<Shape> {
    if axes.is_empty() && noop {
        return Ok(xs.to_vec());
    }
    let axes: Vec<usize> = if axes.is_empty() {
        (0..xs.len()).collect()
    } else {
        axes.iter()
            .map(|&a| normalize_axis(a, xs.len()))
            .collect::<Result<_>>()?
    };
    Ok(xs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keepdims) {
            (true, true) => Some(Dim::Fixed(1)),
            (true, false) => None,
            (false, _) => Some(d.clone()),
        })
        .collect())
}

fn unsqueeze_dims(xs: &[Dim], axes: &[i64]) -> Result<Shape> {
    let rank = xs.len() + axes.len();
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(rank);
    let mut it = xs.iter();
    for i in 0..rank {
        if axes.contains(&i) {
            out.push(Dim::Fixed(1));
        } else {
            out.push(
                it.next()
                    .cloned()
                    .ok_or_else(|| Error::Invalid(format!("Unsqueeze axes {axes:?} repeat")))?,
            );
        }
    }
    Ok(out)
}
