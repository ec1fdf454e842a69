//! Thousands of inferences allocate nothing new after the first few. A test
//! binary of its own: the buffer pool is per device and process, so no other
//! test may share it while it counts.

mod common;

use common::{gpu, optimize, rand};
use metal_mps_gpu::{GpuOptions, GpuRunner};
use metal_mps_ir::*;

#[test]
fn memory_stays_flat_over_thousands_of_inferences() {
    if !gpu() {
        return;
    }
    let mut g = Graph::default();
    let x = g.add_value("x");
    g.values[x].dtype = Some(DType::F32);
    g.values[x].shape = Some(from_fixed(&[1, 2, 8, 8]));
    g.inputs.push(x);
    let w = g.add_constant(
        "w",
        Tensor::from_vec(vec![4, 2, 3, 3], rand(72, 11)).unwrap(),
    );
    let (conv, pooled) = (g.add_value("conv"), g.add_value("pooled"));
    let window = Window {
        kernel: vec![],
        strides: vec![1, 1],
        dilations: vec![],
        pads: vec![1, 1, 1, 1],
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    let op = Op::Conv(ConvAttrs {
        window,
        group: 1,
        activation: Activation::Unary(UnaryOp::Relu),
        max_pool_2x2: false,
    });
    g.nodes.push(Node {
        name: "conv".into(),
        onnx_op: "Conv".into(),
        op,
        opset: 17,
        inputs: vec![Some(x), Some(w)],
        outputs: vec![conv],
    });
    let op = Op::GlobalPool(PoolKind::Average);
    g.nodes.push(Node {
        name: "pool".into(),
        onnx_op: "GlobalAveragePool".into(),
        op,
        opset: 17,
        inputs: vec![Some(conv)],
        outputs: vec![pooled],
    });
    g.outputs.push(pooled);
    optimize(&mut g);
    let runner = GpuRunner::new(&g, &GpuOptions::default()).unwrap();
    let xt = Tensor::from_vec(vec![1, 2, 8, 8], rand(128, 12)).unwrap();
    for _ in 0..20 {
        runner.run(&[&xt]).unwrap();
    }
    let before = runner.pool_stats();
    for _ in 0..3000 {
        runner.run(&[&xt]).unwrap();
    }
    // Submitted and dropped without waiting: the instance still comes back.
    for _ in 0..100 {
        drop(runner.submit(&[&xt]).unwrap());
    }
    let after = runner.pool_stats();
    assert_eq!(
        after.allocations, before.allocations,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.bytes_in_use, before.bytes_in_use);
    assert_eq!(after.bytes_pooled, before.bytes_pooled);
    assert!(
        after.hits >= before.hits + 3100,
        "every inference reuses its staging buffer"
    );
}
