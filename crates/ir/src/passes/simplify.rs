//! Rewrites that make a node simpler without changing what it computes.

use crate::{DType, Graph, Node, Op, UnaryOp, ValueId};

/// Rewires readers of an `Identity` (Dropout in inference too) to its input.
pub fn remove_identities(g: &mut Graph) {
    let mut alias: Vec<ValueId> = (0..g.values.len()).collect();
    g.nodes.retain(|n| {
        if n.op == Op::Identity && n.outputs.len() == 1 && !g.outputs.contains(&n.outputs[0]) {
            if let Some(src) = n.inputs[0] {
                alias[n.outputs[0]] = alias[src];
                return false;
            }
        }
        true
    });
    for n in &mut g.nodes {
        for i in n.inputs.iter_mut().flatten() {
            *i = alias[*i];
        }
    }
}

/// `Clip(x, min, max)` (opset 11+) whose bounds are absent or constant
/// scalars becomes `Unary(Clamp)`, the form the Conv, Gemm and MatMul kernels
/// apply in their epilogue (MobileNet's ReLU6). Only for FLOAT, FLOAT16 and
/// BFLOAT16, whose bounds an f32 holds exactly.
pub fn constant_clip_bounds(g: &mut Graph) {
    for n in 0..g.nodes.len() {
        let node = &g.nodes[n];
        if node.op != Op::Clip {
            continue;
        }
        let Some(x) = node.inputs.first().copied().flatten() else {
            continue;
        };
        if !matches!(
            g.values[x].dtype,
            Some(DType::F32 | DType::F16 | DType::BF16)
        ) {
            continue;
        }
        let Some((min, max)) = clip_bounds(g, node) else {
            continue;
        };
        let node = &mut g.nodes[n];
        node.op = Op::Unary(UnaryOp::Clamp { min, max });
        node.inputs.truncate(1);
    }
}

/// The bounds of a Clip node (opset 11+) as f32 when each is absent (then
/// ∓∞) or a one-element constant.
pub fn clip_bounds(g: &Graph, node: &Node) -> Option<(f32, f32)> {
    let bound = |i: usize, default: f32| match node.inputs.get(i).copied().flatten() {
        None => Some(default),
        Some(v) => g
            .constant(Some(v))
            .and_then(|t| t.scalar_f64().ok())
            .map(|b| b as f32),
    };
    Some((bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?))
}

/// `Where(IsNaN(x), c, x)` with a finite one-element constant `c` becomes
/// `Unary(NanTo { value: c })` on FLOAT, FLOAT16 and BFLOAT16 tensors: the
/// guard PyTorch exports after a masked softmax, one elementwise step instead of
/// a boolean tensor and a select (the `IsNaN` goes with its last reader).
pub fn replace_nan_guards(g: &mut Graph) {
    let producer = g.producers();
    for n in 0..g.nodes.len() {
        let node = &g.nodes[n];
        if node.onnx_op != "Where" || !matches!(node.op, Op::Dyn(_)) || node.outputs.len() != 1 {
            continue;
        }
        let [Some(cond), Some(c), Some(x)] = node.inputs[..] else {
            continue;
        };
        let guards_x = producer[cond].is_some_and(|p| {
            let p = &g.nodes[p];
            p.onnx_op == "IsNaN" && matches!(p.op, Op::Dyn(_)) && p.inputs[..] == [Some(x)]
        });
        let value = g
            .constant(Some(c))
            .filter(|t| Some(t.dtype()) == g.values[x].dtype)
            .and_then(|t| t.scalar_f64().ok())
            .map(|v| v as f32)
            .filter(|v| v.is_finite());
        let y = node.outputs[0];
        let same_shape = g.values[y].shape.is_some() && g.values[y].shape == g.values[x].shape;
        let float = matches!(
            g.values[x].dtype,
            Some(DType::F32 | DType::F16 | DType::BF16)
        );
        if let (true, Some(value), true, true) = (guards_x, value, same_shape, float) {
            let node = &mut g.nodes[n];
            node.op = Op::Unary(UnaryOp::NanTo { value });
            node.inputs = vec![Some(x)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;
    use std::sync::Arc;

    fn clip_graph(dtype: DType, max: Option<Tensor>) -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x");
        g.values[x].dtype = Some(dtype);
        let lo = g.add_constant("lo", Tensor::scalar(0f32));
        let hi = max.map(|t| g.add_constant("hi", t));
        let y = g.add_value("y");
        g.inputs.push(x);
        g.outputs.push(y);
        g.nodes.push(Node {
            name: "clip".into(),
            op: Op::Clip,
            onnx_op: "Clip".into(),
            opset: 13,
            inputs: vec![Some(x), Some(lo), hi],
            outputs: vec![y],
        });
        g
    }

    #[test]
    fn constant_scalar_bounds_become_a_clamp() {
        let mut g = clip_graph(DType::F32, Some(Tensor::scalar(6f32)));
        constant_clip_bounds(&mut g);
        assert_eq!(
            g.nodes[0].op,
            Op::Unary(UnaryOp::Clamp { min: 0.0, max: 6.0 })
        );
        assert_eq!(g.nodes[0].inputs.len(), 1);

        let mut g = clip_graph(DType::F32, None);
        constant_clip_bounds(&mut g);
        let inf = f32::INFINITY;
        assert_eq!(
            g.nodes[0].op,
            Op::Unary(UnaryOp::Clamp { min: 0.0, max: inf })
        );
    }

    #[test]
    fn other_clips_stay() {
        for g in [
            clip_graph(DType::F64, Some(Tensor::scalar(6f32))),
            clip_graph(DType::I64, Some(Tensor::scalar(6f32))),
            clip_graph(
                DType::F32,
                Some(Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap()),
            ),
        ] {
            let mut g = g;
            constant_clip_bounds(&mut g);
            assert_eq!(g.nodes[0].op, Op::Clip);
        }
        let mut g = clip_graph(DType::F32, Some(Tensor::scalar(6f32)));
        let hi = g.nodes[0].inputs[2].unwrap();
        g.values[hi].constant = None::<Arc<Tensor>>;
        constant_clip_bounds(&mut g);
        assert_eq!(g.nodes[0].op, Op::Clip);
    }
}
