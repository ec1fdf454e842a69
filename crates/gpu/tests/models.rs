//! CPU <-> GPU differential tests on the test models (Simple CNN, ResNet block,
//! ResNet-50 with random weights), FP32, FP16 models and FP16 precision mode.

mod common;

use common::{gpu, load, model_input, rel_diff, to_f16};
use metal_mps_cpu::CpuPlan;
use metal_mps_gpu::{GpuOptions, GpuRunner, Precision};
use metal_mps_ir::Graph;

/// Runs `g` on both engines and checks the outputs agree within `tol`.
fn compare(name: &str, g: &Graph, batch: usize, opts: &GpuOptions, tol: f64) {
    let x = model_input(g, batch, 7);
    let want = CpuPlan::new(g.clone()).run(&[&x]).expect("the CPU runs");
    let runner = GpuRunner::new(g, opts).expect("the GPU prepares");
    let got = runner.run(&[&x]).expect("the GPU runs");
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.dtype(), b.dtype(), "{name}: output {k} dtype");
        let d = rel_diff(a, b);
        eprintln!(
            "{name} b{batch} {:?}: output {k} relative difference {d:.2e}",
            opts.precision
        );
        assert!(
            d <= tol,
            "{name}: output {k} differs by {d:e} (tolerance {tol:e})"
        );
    }
    let engines = runner.node_engines();
    let cpu: Vec<&String> = engines
        .iter()
        .filter(|e| e.1 == "cpu")
        .map(|e| &e.0)
        .collect();
    assert!(cpu.is_empty(), "{name}: nodes on the CPU: {cpu:?}");
}

fn each_precision(name: &str, g: &Graph, batch: usize) {
    compare(name, g, batch, &GpuOptions::default(), 1e-3);
    let half = GpuOptions {
        precision: Precision::F16,
        ..Default::default()
    };
    compare(name, g, batch, &half, 3e-2);
    let g16 = to_f16(g);
    compare(
        &format!("{name} (fp16 model)"),
        &g16,
        batch,
        &GpuOptions::default(),
        3e-2,
    );
}

#[test]
fn simple_cnn_matches_cpu() {
    if !gpu() {
        return;
    }
    let Some(g) = load("simple_cnn") else { return };
    each_precision("simple_cnn", &g, 2);
}

#[test]
fn resnet_block_matches_cpu() {
    if !gpu() {
        return;
    }
    let Some(g) = load("resnet_block") else {
        return;
    };
    each_precision("resnet_block", &g, 1);
}

#[test]
fn resnet50_matches_cpu() {
    if !gpu() {
        return;
    }
    let Some(g) = load("resnet50") else { return };
    each_precision("resnet50", &g, 1);
}
