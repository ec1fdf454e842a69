//! GELU as exporters write it, one node again.

use super::fuse::{other_operand, sole_consumer};
use crate::{BinaryOp, DType, Graph, Op, UnaryOp, ValueId};

/// `x · 0.5 · (1 + Erf(x / √2))`, the five nodes PyTorch and TensorFlow
/// export for the exact GELU (`Div` by √2 or `Mul` by 1/√2, `Erf`, `Add` 1,
/// then `Mul` by `x` and by 0.5 in any order), becomes one
/// `Unary(Gelu)` on FLOAT tensors, which [`super::fuse_activations`] can then
/// fold into the MatMul that feeds it. Each intermediate value must be read
/// only by the next node of the chain.
pub fn fuse_gelu(g: &mut Graph) {
    let consumers = g.consumers();
    let producers = g.producers();
    let mut remove = vec![false; g.nodes.len()];
    for e in 0..g.nodes.len() {
        if g.nodes[e].onnx_op != "Erf" || !matches!(g.nodes[e].op, Op::Dyn(_)) {
            continue;
        }
        let Some(chain) = match_gelu(g, &consumers, &producers, e) else {
            continue;
        };
        if chain.nodes.iter().any(|&n| remove[n]) {
            continue;
        }
        let (last, rest) = chain.nodes.split_last().expect("five nodes");
        let y = g.nodes[*last].outputs[0];
        // Rank-0 constants cannot broadcast the chain to a new shape; others
        // may, unless inference shows the shape unchanged.
        let scalars = chain
            .nodes
            .iter()
            .flat_map(|&n| g.nodes[n].inputs.iter().flatten())
            .filter_map(|&v| g.constant(Some(v)))
            .all(|t| t.shape().is_empty());
        let same_shape =
            g.values[y].shape.is_some() && g.values[y].shape == g.values[chain.x].shape;
        if !scalars && !same_shape {
            continue;
        }
        rest.iter().for_each(|&n| remove[n] = true);
        let node = &mut g.nodes[*last];
        node.op = Op::Unary(UnaryOp::Gelu);
        node.inputs = vec![Some(chain.x)];
    }
    g.remove_nodes(&remove);
}

struct Chain {
    x: ValueId,
    /// The five nodes, the one whose output is the GELU's last.
    nodes: [usize; 5],
}

fn match_gelu(
    g: &Graph,
    consumers: &[Vec<usize>],
    producers: &[Option<usize>],
    e: usize,
) -> Option<Chain> {
    let scaled = g.nodes[e].inputs.first().copied().flatten()?;
    let d = producers[scaled]?;
    let x = match g.nodes[d].op {
        Op::Binary(BinaryOp::Div) => with_constant(g, d, std::f64::consts::SQRT_2)?,
        Op::Binary(BinaryOp::Mul) => {
            let [a, b] = operands(g, d)?;
            [(a, b), (b, a)]
                .into_iter()
                .find_map(|(x, c)| near(g, c, std::f64::consts::FRAC_1_SQRT_2).then_some(x))?
        }
        _ => return None,
    };
    if g.values[x].dtype != Some(DType::F32) || sole_consumer(g, consumers, scaled)? != e {
        return None;
    }
    let erf = g.nodes[e].outputs[0];
    let a = sole_consumer(g, consumers, erf)?;
    if g.nodes[a].op != Op::Binary(BinaryOp::Add)
        || other_operand(&g.nodes[a], erf).is_none_or(|c| !near(g, c, 1.0))
    {
        return None;
    }
    let plus_one = g.nodes[a].outputs[0];
    let m = sole_consumer(g, consumers, plus_one)?;
    if g.nodes[m].op != Op::Binary(BinaryOp::Mul) {
        return None;
    }
    let t = other_operand(&g.nodes[m], plus_one)?;
    if t == x {
        // (x · (1 + erf)) · 0.5
        let product = g.nodes[m].outputs[0];
        let h = sole_consumer(g, consumers, product)?;
        let half = g.nodes[h].op == Op::Binary(BinaryOp::Mul)
            && other_operand(&g.nodes[h], product).is_some_and(|c| near(g, c, 0.5));
        return half.then_some(Chain {
            x,
            nodes: [d, e, a, m, h],
        });
    }
    if near(g, t, 0.5) {
        // (0.5 · (1 + erf)) · x, as the dynamo exporter writes it
        let product = g.nodes[m].outputs[0];
        let h = sole_consumer(g, consumers, product)?;
        let times_x = g.nodes[h].op == Op::Binary(BinaryOp::Mul)
            && other_operand(&g.nodes[h], product) == Some(x);
        return times_x.then_some(Chain {
            x,
            nodes: [d, e, a, m, h],
        });
    }
    // (x · 0.5) · (1 + erf)
    let h = producers[t]?;
    let half = g.nodes[h].op == Op::Binary(BinaryOp::Mul)
        && other_operand(&g.nodes[h], x).is_some_and(|c| near(g, c, 0.5))
        && sole_consumer(g, consumers, t) == Some(m);
    half.then_some(Chain {
        x,
        nodes: [d, e, a, h, m],
    })
}

fn operands(g: &Graph, n: usize) -> Option<[ValueId; 2]> {
    match g.nodes[n].inputs[..] {
        [Some(a), Some(b)] => Some([a, b]),
        _ => None,
    }
}

/// `x` of `x / c` where `c` is the constant `value`.
fn with_constant(g: &Graph, n: usize, value: f64) -> Option<ValueId> {
    let [x, c] = operands(g, n)?;
    near(g, c, value).then_some(x)
}

/// Whether `v` is a one-element constant equal to `value` in f32.
fn near(g: &Graph, v: ValueId, value: f64) -> bool {
    g.constant(Some(v))
        .filter(|t| t.dtype().is_float())
        .and_then(|t| t.scalar_f64().ok())
        .is_some_and(|c| (c - value).abs() <= 1e-6 * value.abs())
}
