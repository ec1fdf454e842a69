//! Kernel timing while profiling is on: every dispatch of a run is recorded
//! as `gpu <kernel> [grid]` with a GPU time, and nothing while it is off.
//! A test binary of its own: profiling is on for the whole process.

mod common;

use common::rand;
use metal_mps_gpu::{GpuContext, GpuOptions, GpuRunner};
use metal_mps_ir::*;

/// `relu(x · w)` then a softmax over its rows: two kernels, whatever the fusion.
fn graph() -> Graph {
    let mut g = Graph::default();
    let x = g.add_value("x");
    g.values[x].dtype = Some(DType::F32);
    g.values[x].shape = Some(vec![Dim::Fixed(64), Dim::Fixed(32)]);
    g.inputs.push(x);
    let w = g.add_constant(
        "w",
        Tensor::from_vec(vec![32, 48], rand(32 * 48, 3)).unwrap(),
    );
    let nodes = [
        (
            Op::MatMul {
                activation: Activation::None,
            },
            vec![x, w],
        ),
        (Op::Unary(UnaryOp::Relu), vec![]),
        (
            Op::Softmax {
                axis: -1,
                legacy: false,
            },
            vec![],
        ),
    ];
    let mut last = x;
    for (i, (op, ins)) in nodes.into_iter().enumerate() {
        let ins = if ins.is_empty() { vec![last] } else { ins };
        let out = g.add_value(format!("y{i}"));
        g.nodes.push(Node {
            name: format!("n{i}"),
            onnx_op: op.name(),
            op,
            opset: 17,
            inputs: ins.into_iter().map(Some).collect(),
            outputs: vec![out],
        });
        last = out;
    }
    g.outputs = vec![last];
    g
}

fn gpu_rows() -> Vec<(String, std::time::Duration, u64)> {
    metal_mps_cpu::profile::report()
        .into_iter()
        .filter(|r| r.0.starts_with("gpu "))
        .collect()
}

#[test]
fn kernels_are_timed_only_while_profiling() {
    if !common::gpu() {
        return;
    }
    let mut g = graph();
    common::optimize(&mut g);
    let runner = GpuRunner::new(&g, &GpuOptions::default()).unwrap();
    let x = Tensor::from_vec(vec![64, 32], rand(64 * 32, 5)).unwrap();
    let want = runner.run(&[&x]).unwrap();

    metal_mps_cpu::profile::set_enabled(true);
    let runs = 3;
    for _ in 0..runs {
        let got = runner.run(&[&x]).unwrap();
        assert_eq!(
            got[0].as_slice::<f32>().unwrap(),
            want[0].as_slice::<f32>().unwrap(),
            "profiling changed the result"
        );
    }
    let rows = gpu_rows();
    metal_mps_cpu::profile::set_enabled(false);
    if !GpuContext::new(None).unwrap().caps.timestamps {
        assert!(rows.is_empty(), "timed without timestamps: {rows:?}");
        return;
    }
    assert!(
        rows.iter().any(|r| r.0.contains("Matmul")),
        "no product kernel among {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.0.contains("Softmax")),
        "no softmax kernel among {rows:?}"
    );
    for (name, took, calls) in &rows {
        assert_eq!(calls % runs, 0, "{name}: {calls} calls over {runs} runs");
        assert!(!took.is_zero(), "{name} took no time");
        assert!(name.ends_with(']'), "{name} names no grid");
    }

    // Off: nothing more is recorded.
    runner.run(&[&x]).unwrap();
    assert!(gpu_rows().is_empty(), "recorded while off");
}
