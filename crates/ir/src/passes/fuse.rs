use crate::{
    Activation, AutoPad, BinaryOp, Dim, Graph, Node, Op, PoolAttrs, PoolKind, Result, Tensor,
    UnaryOp, ValueId,
};
use std::sync::Arc;

/// The single node reading `v`, when `v` is not also a graph output.
pub(super) fn sole_consumer(g: &Graph, consumers: &[Vec<usize>], v: ValueId) -> Option<usize> {
    match consumers[v].as_slice() {
        [c] if !g.outputs.contains(&v) => Some(*c),
        _ => None,
    }
}

/// The operand of a binary node other than `y`, when `y` is exactly one of
/// its two operands.
pub(super) fn other_operand(node: &Node, y: ValueId) -> Option<ValueId> {
    match node.inputs[..] {
        [Some(l), Some(r)] if l == y && r != y => Some(r),
        [Some(l), Some(r)] if r == y && l != y => Some(l),
        _ => None,
    }
}

/// `BatchNormalization(Conv(x, w, b))` with constant parameters becomes
/// `Conv(x, w', b')`: the normalization is folded into the weights at load.
pub fn fold_batch_norm_into_conv(g: &mut Graph) -> Result<()> {
    let consumers = g.consumers();
    let mut remove = vec![false; g.nodes.len()];
    for c in 0..g.nodes.len() {
        if !matches!(g.nodes[c].op, Op::Conv(_)) {
            continue;
        }
        let y = g.nodes[c].outputs[0];
        let Some(b) = sole_consumer(g, &consumers, y) else {
            continue;
        };
        let Op::BatchNorm { epsilon } = g.nodes[b].op else {
            continue;
        };
        if g.nodes[b].outputs.len() != 1 || g.nodes[b].inputs[0] != Some(y) {
            continue;
        }
        let params: Option<Vec<Arc<Tensor>>> = g.nodes[b].inputs[1..5]
            .iter()
            .map(|&i| g.constant(i).cloned())
            .collect();
        let (Some(params), Some(w)) = (params, g.constant(g.nodes[c].inputs[1]).cloned()) else {
            continue;
        };
        let bias = g
            .constant(g.nodes[c].inputs.get(2).copied().flatten())
            .cloned();
        if g.nodes[c].inputs.get(2).copied().flatten().is_some() && bias.is_none() {
            continue;
        }
        let (w2, b2) = fold(&w, bias.as_deref(), &params, epsilon)?;
        let name = g.nodes[c].name.clone();
        let wid = g.add_constant(format!("{name}.folded_weight"), w2);
        let bid = g.add_constant(format!("{name}.folded_bias"), b2);
        let out = g.nodes[b].outputs[0];
        let conv = &mut g.nodes[c];
        conv.inputs = vec![conv.inputs[0], Some(wid), Some(bid)];
        conv.outputs = vec![out];
        remove[b] = true;
    }
    g.remove_nodes(&remove);
    Ok(())
}

/// Computes folded weights and bias in f32 (then back to the weight's dtype).
fn fold(
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &[Arc<Tensor>],
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let oc = w.shape()[0];
    let [scale, beta, mean, var] = [0, 1, 2, 3].map(|i| p[i].to_f64_vec());
    if [&scale, &beta, &mean, &var].iter().any(|v| v.len() != oc) {
        return crate::invalid!("BatchNormalization parameters do not have {oc} channels");
    }
    let per = w.numel() / oc.max(1);
    let mut wv = w.to_f64_vec();
    let bv = bias
        .map(|b| b.to_f64_vec())
        .unwrap_or_else(|| vec![0.0; oc]);
    let mut nb = vec![0.0; oc];
    for o in 0..oc {
        let s = scale[o] / (var[o] + eps as f64).sqrt();
        for v in &mut wv[o * per..(o + 1) * per] {
            *v *= s;
        }
        nb[o] = (bv[o] - mean[o]) * s + beta[o];
    }
    Ok((
        cast_like(w.dtype(), w.shape().to_vec(), &wv)?,
        cast_like(w.dtype(), vec![oc], &nb)?,
    ))
}

fn cast_like(dtype: crate::DType, shape: Vec<usize>, v: &[f64]) -> Result<Tensor> {
    match dtype {
        crate::DType::F16 => {
            Tensor::from_vec(shape, v.iter().map(|&x| crate::f16::from_f64(x)).collect())
        }
        _ => Tensor::from_vec(shape, v.iter().map(|&x| x as f32).collect()),
    }
}

/// `Add(Conv(x, w), c)` where `c` is a constant per-channel vector becomes
/// `Conv(x, w, c)`: the bias is added by the convolution kernel.
pub fn fuse_bias_add(g: &mut Graph) -> Result<()> {
    let consumers = g.consumers();
    let mut remove = vec![false; g.nodes.len()];
    for c in 0..g.nodes.len() {
        let Op::Conv(_) = &g.nodes[c].op else {
            continue;
        };
        if g.nodes[c].inputs.get(2).copied().flatten().is_some() {
            continue;
        }
        let Some(w) = g.constant(g.nodes[c].inputs[1]) else {
            continue;
        };
        let (oc, rank) = (w.shape()[0], w.rank());
        let y = g.nodes[c].outputs[0];
        let Some(a) = sole_consumer(g, &consumers, y) else {
            continue;
        };
        if g.nodes[a].op != Op::Binary(BinaryOp::Add) {
            continue;
        }
        let other = if g.nodes[a].inputs[0] == Some(y) {
            g.nodes[a].inputs[1]
        } else {
            g.nodes[a].inputs[0]
        };
        let Some(bias) = g.constant(other) else {
            continue;
        };
        // Per-channel: [C, 1, .., 1] or [1, C, 1, .., 1] with the conv's rank at most.
        let dims = bias.shape();
        let spatial_ones = |s: &[usize]| s.iter().all(|&d| d == 1);
        let per_channel = (dims.len() == rank - 1 && dims[0] == oc && spatial_ones(&dims[1..]))
            || (dims.len() == rank && dims[0] == 1 && dims[1] == oc && spatial_ones(&dims[2..]));
        if !per_channel || bias.dtype() != w.dtype() {
            continue;
        }
        let flat = (**bias).clone().reshaped(vec![oc])?;
        let bid = g.add_constant(format!("{}.bias", g.nodes[c].name), flat);
        let out = g.nodes[a].outputs[0];
        let conv = &mut g.nodes[c];
        conv.inputs.resize(2, None);
        conv.inputs.push(Some(bid));
        conv.outputs = vec![out];
        remove[a] = true;
    }
    g.remove_nodes(&remove);
    Ok(())
}

/// An activation reading only a Conv, Gemm or MatMul output is applied by that
/// producer's kernel instead of a separate pass over memory.
pub fn fuse_activations(g: &mut Graph) {
    let consumers = g.consumers();
    let mut remove = vec![false; g.nodes.len()];
    for p in 0..g.nodes.len() {
        let y = g.nodes[p].outputs[0];
        if !g.values[y].dtype.is_some_and(|d| d.is_float()) {
            continue;
        }
        let free = match &g.nodes[p].op {
            Op::Conv(c) => c.activation == Activation::None,
            Op::Gemm(a) => a.activation == Activation::None,
            Op::MatMul { activation } => *activation == Activation::None,
            _ => false,
        };
        if !free {
            continue;
        }
        let Some(a) = sole_consumer(g, &consumers, y) else {
            continue;
        };
        let Op::Unary(u) = g.nodes[a].op else {
            continue;
        };
        let act = Activation::Unary(u);
        let out = g.nodes[a].outputs[0];
        match &mut g.nodes[p].op {
            Op::Conv(c) => c.activation = act,
            Op::Gemm(a) => a.activation = act,
            Op::MatMul { activation } => *activation = act,
            _ => unreachable!("checked above"),
        }
        g.nodes[p].outputs[0] = out;
        remove[a] = true;
    }
    g.remove_nodes(&remove);
}

/// `Add(Conv(x, w, b), r)`, optionally followed by `Relu`, becomes one Conv
/// with `r` as its residual input (input 3), added before the activation: the
/// output of a residual block is written once instead of three times.
///
/// Only for engines whose Conv kernel reads a residual (the CPU's); the
/// default pipeline does not run it. `r` must have exactly the Conv output's
/// shape (no broadcasting).
pub fn fuse_residual_add(g: &mut Graph) {
    let consumers = g.consumers();
    let mut remove = vec![false; g.nodes.len()];
    for c in 0..g.nodes.len() {
        let node = &g.nodes[c];
        let Op::Conv(attrs) = &node.op else {
            continue;
        };
        if attrs.activation != Activation::None || node.inputs.len() > 3 {
            continue;
        }
        let y = node.outputs[0];
        let Some(a) = sole_consumer(g, &consumers, y) else {
            continue;
        };
        if remove[a] || g.nodes[a].op != Op::Binary(BinaryOp::Add) {
            continue;
        }
        let Some(residual) = other_operand(&g.nodes[a], y) else {
            continue;
        };
        let (ys, rs) = (&g.values[y], &g.values[residual]);
        let same_shape = ys.shape.is_some() && ys.shape == rs.shape && ys.dtype == rs.dtype;
        if !same_shape || ys.shape.iter().flatten().any(|d| *d == Dim::Unknown) {
            continue;
        }
        let mut out = g.nodes[a].outputs[0];
        remove[a] = true;
        let mut activation = Activation::None;
        if let Some(r) = sole_consumer(g, &consumers, out) {
            if g.nodes[r].op == Op::Unary(UnaryOp::Relu) {
                activation = Activation::Unary(UnaryOp::Relu);
                out = g.nodes[r].outputs[0];
                remove[r] = true;
            }
        }
        // The fused Conv takes the Add's place: the residual may be computed
        // after the Conv, never after the Add.
        let mut conv = g.nodes[c].clone();
        conv.inputs.resize(3, None);
        conv.inputs.push(Some(residual));
        conv.outputs = vec![out];
        if let Op::Conv(attrs) = &mut conv.op {
            attrs.activation = activation;
        }
        g.nodes[a] = conv;
        remove[a] = false;
        remove[c] = true;
    }
    g.remove_nodes(&remove);
}

/// `Add(MatMul(x, w), b)`, where `w` is a constant FLOAT matrix `[K, N]` and
/// `b` a constant of `N` values along the last axis (`[N]`, `[1, N]`, ...),
/// becomes `MatMul(x, w, b)`: the bias is added as the product is stored.
/// Then an activation reading that output alone is fused too.
///
/// Only for engines whose MatMul kernel reads a bias (the CPU's); the default
/// pipeline does not run it.
pub fn fuse_matmul_bias(g: &mut Graph) {
    let consumers = g.consumers();
    let mut remove = vec![false; g.nodes.len()];
    for m in 0..g.nodes.len() {
        let node = &g.nodes[m];
        let (
            Op::MatMul {
                activation: Activation::None,
            },
            [Some(_), w],
        ) = (&node.op, &node.inputs[..])
        else {
            continue;
        };
        let Some(w) = g.constant(*w) else {
            continue;
        };
        if w.rank() != 2 || w.dtype() != crate::DType::F32 {
            continue;
        }
        let (n, y) = (w.shape()[1], node.outputs[0]);
        let Some(a) = sole_consumer(g, &consumers, y) else {
            continue;
        };
        if remove[a] || g.nodes[a].op != Op::Binary(BinaryOp::Add) {
            continue;
        }
        let Some(other) = other_operand(&g.nodes[a], y) else {
            continue;
        };
        let Some(bias) = g.constant(Some(other)) else {
            continue;
        };
        let dims = bias.shape();
        let y_rank = g.values[y].shape.as_ref().map_or(1, Vec::len);
        let along_last = dims.last() == Some(&n) && dims[..dims.len() - 1].iter().all(|&d| d == 1);
        if !along_last || dims.len() > y_rank || bias.dtype() != crate::DType::F32 {
            continue;
        }
        let Ok(flat) = (**bias).clone().reshaped(vec![n]) else {
            continue;
        };
        let bid = g.add_constant(format!("{}.bias", g.nodes[m].name), flat);
        let out = g.nodes[a].outputs[0];
        let matmul = &mut g.nodes[m];
        matmul.inputs.push(Some(bid));
        matmul.outputs = vec![out];
        remove[a] = true;
    }
    g.remove_nodes(&remove);
    fuse_activations(g);
}

/// Folds a 2×2, stride-2 MaxPool (no padding, rounding down) into the 2-D
/// Conv that feeds it alone (the Simple CNN's Conv → Relu → MaxPool): the
/// kernel pools each block of output rows while it is in the cache, and the
/// unpooled output is never written.
///
/// Only for engines whose Conv kernel pools (the CPU's); the default
/// pipeline does not run it. Run after [`fuse_residual_add`].
pub fn fuse_max_pool(g: &mut Graph) {
    let consumers = g.consumers();
    let mut remove = vec![false; g.nodes.len()];
    for c in 0..g.nodes.len() {
        let Op::Conv(attrs) = &g.nodes[c].op else {
            continue;
        };
        let y = g.nodes[c].outputs[0];
        if attrs.max_pool_2x2 || g.values[y].shape.as_ref().is_none_or(|s| s.len() != 4) {
            continue;
        }
        let Some(p) = sole_consumer(g, &consumers, y) else {
            continue;
        };
        let pool = &g.nodes[p];
        match &pool.op {
            Op::Pool(pa) if !remove[p] && pool.outputs.len() == 1 && is_max_pool_2x2(pa) => {}
            _ => continue,
        }
        let out = pool.outputs[0];
        let conv = &mut g.nodes[c];
        if let Op::Conv(attrs) = &mut conv.op {
            attrs.max_pool_2x2 = true;
        }
        conv.outputs = vec![out];
        remove[p] = true;
    }
    g.remove_nodes(&remove);
}

fn is_max_pool_2x2(p: &PoolAttrs) -> bool {
    let w = &p.window;
    p.kind == PoolKind::Max
        && w.kernel == [2, 2]
        && w.strides == [2, 2]
        && w.dilations.iter().all(|&d| d == 1)
        && w.pads.iter().all(|&p| p == 0)
        && matches!(w.auto_pad, AutoPad::NotSet | AutoPad::Valid)
        && !w.ceil_mode
}
