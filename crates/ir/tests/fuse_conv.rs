//! The CPU plan's Conv fusions: `passes::fuse_residual_add` (which Conv →
//! Add (→ Relu) chains become one Conv with a residual input) and
//! `passes::fuse_max_pool` (which Conv → MaxPool pairs become one pooling
//! Conv), and what must stay as it is.

use metal_mps_ir::passes::{fuse_max_pool, fuse_residual_add};
use metal_mps_ir::{
    Activation, AutoPad, BinaryOp, ConvAttrs, DType, Dim, Graph, Node, Op, PoolAttrs, PoolKind,
    UnaryOp, ValueId, Window,
};

fn node(g: &mut Graph, op: Op, inputs: &[ValueId], name: &str) -> ValueId {
    let y = g.add_value(name);
    g.values[y].dtype = Some(DType::F32);
    g.values[y].shape = Some(shape(&["batch", "4", "5", "5"]));
    g.nodes.push(Node {
        name: format!("{name}_node"),
        onnx_op: op.name(),
        op,
        opset: 17,
        inputs: inputs.iter().map(|&v| Some(v)).collect(),
        outputs: vec![y],
    });
    y
}

fn shape(dims: &[&str]) -> Vec<Dim> {
    dims.iter()
        .map(|d| d.parse().map_or(Dim::Sym(d.to_string()), Dim::Fixed))
        .collect()
}

fn conv() -> Op {
    Op::Conv(ConvAttrs {
        window: Window {
            kernel: vec![],
            strides: vec![],
            dilations: vec![],
            pads: vec![],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        },
        group: 1,
        activation: Activation::None,
        max_pool_2x2: false,
    })
}

/// A graph with input `x` (`[batch, 4, 5, 5]` FLOAT) and a weight value `w`.
fn graph_with_input() -> (Graph, ValueId, ValueId) {
    let mut g = Graph::default();
    let x = g.add_value("x");
    g.values[x].dtype = Some(DType::F32);
    g.values[x].shape = Some(shape(&["batch", "4", "5", "5"]));
    g.inputs.push(x);
    let w = g.add_value("w");
    (g, x, w)
}

/// x → Conv → Add(·, x) → [Relu] → output; returns the graph.
fn block(with_relu: bool) -> Graph {
    let (mut g, x, w) = graph_with_input();
    let y = node(&mut g, conv(), &[x, w], "y");
    let mut out = node(&mut g, Op::Binary(BinaryOp::Add), &[x, y], "sum");
    if with_relu {
        out = node(&mut g, Op::Unary(UnaryOp::Relu), &[out], "out");
    }
    g.outputs.push(out);
    g
}

#[test]
fn conv_add_relu_becomes_one_conv_with_a_residual() {
    let mut g = block(true);
    let (x, out) = (g.inputs[0], g.outputs[0]);
    fuse_residual_add(&mut g);
    assert_eq!(g.nodes.len(), 1, "{:?}", g.nodes);
    let conv = &g.nodes[0];
    assert_eq!(conv.inputs.len(), 4);
    assert_eq!(conv.inputs[2], None, "no bias");
    assert_eq!(conv.inputs[3], Some(x), "the Add's other operand");
    assert_eq!(conv.outputs, vec![out]);
    let Op::Conv(attrs) = &conv.op else {
        panic!("{:?}", conv.op)
    };
    assert_eq!(attrs.activation, Activation::Unary(UnaryOp::Relu));
}

#[test]
fn conv_add_without_relu_keeps_no_activation() {
    let mut g = block(false);
    fuse_residual_add(&mut g);
    assert_eq!(g.nodes.len(), 1);
    let Op::Conv(attrs) = &g.nodes[0].op else {
        panic!()
    };
    assert_eq!(attrs.activation, Activation::None);
    assert_eq!(g.nodes[0].outputs, g.outputs);
}

#[test]
fn broadcast_residual_is_not_fused() {
    let mut g = block(true);
    let x = g.inputs[0];
    g.values[x].shape = Some(shape(&["batch", "4", "1", "1"]));
    fuse_residual_add(&mut g);
    assert_eq!(g.nodes.len(), 3, "an Add that broadcasts stays");
}

#[test]
fn conv_output_read_elsewhere_is_not_fused() {
    let mut g = block(true);
    let y = g.nodes[0].outputs[0];
    g.outputs.push(y);
    fuse_residual_add(&mut g);
    assert_eq!(g.nodes.len(), 3, "the Conv output is also a graph output");
}

#[test]
fn conv_with_an_activation_is_not_fused() {
    let mut g = block(true);
    if let Op::Conv(attrs) = &mut g.nodes[0].op {
        attrs.activation = Activation::Unary(UnaryOp::Sigmoid);
    }
    fuse_residual_add(&mut g);
    assert_eq!(g.nodes.len(), 3, "the activation must come before the Add");
}

#[test]
fn residual_computed_after_the_conv_moves_the_fused_conv_after_it() {
    // x → Conv a ─┐
    // x → Conv b ─┴→ Add → Relu: Conv a is fused with b's output as residual,
    // so the fused node must come after Conv b.
    let (mut g, x, w) = graph_with_input();
    let ya = node(&mut g, conv(), &[x, w], "ya");
    let yb = node(&mut g, conv(), &[x, w], "yb");
    let sum = node(&mut g, Op::Binary(BinaryOp::Add), &[ya, yb], "sum");
    let out = node(&mut g, Op::Unary(UnaryOp::Relu), &[sum], "out");
    g.outputs.push(out);
    fuse_residual_add(&mut g);
    assert_eq!(g.nodes.len(), 2, "{:?}", g.nodes);
    assert_eq!(g.nodes[0].outputs, vec![yb], "Conv b first");
    assert_eq!(g.nodes[1].inputs[3], Some(yb), "then Conv a reading it");
    assert_eq!(g.nodes[1].outputs, vec![out]);
}

fn max_pool(kernel: usize, stride: usize, pads: usize, ceil_mode: bool) -> Op {
    Op::Pool(PoolAttrs {
        kind: PoolKind::Max,
        window: Window {
            kernel: vec![kernel; 2],
            strides: vec![stride; 2],
            dilations: vec![],
            pads: vec![pads; 4],
            auto_pad: AutoPad::NotSet,
            ceil_mode,
        },
        count_include_pad: false,
    })
}

/// x → Conv → `pool` → output.
fn conv_pool(pool: Op) -> Graph {
    let (mut g, x, w) = graph_with_input();
    let y = node(&mut g, conv(), &[x, w], "y");
    let out = node(&mut g, pool, &[y], "pooled");
    g.outputs.push(out);
    g
}

#[test]
fn conv_then_2x2_max_pool_becomes_one_pooling_conv() {
    let mut g = conv_pool(max_pool(2, 2, 0, false));
    let out = g.outputs[0];
    fuse_max_pool(&mut g);
    assert_eq!(g.nodes.len(), 1, "{:?}", g.nodes);
    assert_eq!(g.nodes[0].outputs, vec![out]);
    let Op::Conv(attrs) = &g.nodes[0].op else {
        panic!("{:?}", g.nodes[0].op)
    };
    assert!(attrs.max_pool_2x2);
}

#[test]
fn other_pools_are_not_fused() {
    let average = Op::Pool(PoolAttrs {
        kind: PoolKind::Average,
        ..match max_pool(2, 2, 0, false) {
            Op::Pool(p) => p,
            _ => unreachable!(),
        }
    });
    for pool in [
        max_pool(3, 2, 1, false),
        max_pool(2, 1, 0, false),
        max_pool(2, 2, 1, false),
        max_pool(2, 2, 0, true),
        average,
    ] {
        let mut g = conv_pool(pool.clone());
        fuse_max_pool(&mut g);
        assert_eq!(g.nodes.len(), 2, "{pool:?} stays");
    }
}

#[test]
fn conv_output_read_elsewhere_is_not_pooled() {
    let mut g = conv_pool(max_pool(2, 2, 0, false));
    let y = g.nodes[0].outputs[0];
    g.outputs.push(y);
    fuse_max_pool(&mut g);
    assert_eq!(
        g.nodes.len(),
        2,
        "the unpooled output is also a graph output"
    );
}
