//! CPU <-> GPU differential tests on the test models (Simple CNN, ResNet block,
//! ResNet-50 with random weights), FP32, FP16 models and FP16 precision mode.

mod common;

use common::{gpu, load, model_input, optimize, rel_diff, to_f16};
use metal_mps_cpu::CpuPlan;
use metal_mps_gpu::{GpuOptions, GpuRunner, Precision};
use metal_mps_ir::{Graph, Tensor};
use std::collections::HashMap;

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

/// The transformers PyTorch exported (tests/models/exported: BERT and GPT-2,
/// shrunken) keep their layers on the GPU: the products, softmax, its NaN
/// guard, GELU and LayerNormalization; the shape arithmetic and the mask, made
/// from the inputs, stay on the CPU. Their results match the CPU engine.
#[test]
fn exported_transformer_layers_run_on_the_gpu() {
    if !gpu() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/models/exported");
    for name in ["bert.ts", "gpt2.ts"] {
        let mut g = metal_mps_onnx::load_model(dir.join(format!("{name}.onnx")))
            .expect("the model imports")
            .graph;
        optimize(&mut g);
        let (batch, seq) = (2, 5);
        let feeds: Vec<Tensor> = g
            .inputs
            .iter()
            .map(|&v| {
                let ids = g.values[v].name == "input_ids";
                let data: Vec<i64> = (0..batch * seq)
                    .map(|i| if ids { (i * 37 % 100) as i64 } else { 1 })
                    .collect();
                Tensor::from_vec(vec![batch, seq], data).unwrap()
            })
            .collect();
        let feeds: Vec<&Tensor> = feeds.iter().collect();
        let runner = GpuRunner::new(&g, &GpuOptions::default()).expect("the GPU prepares");
        let got = runner.run(&feeds).expect("the GPU runs");
        let want = CpuPlan::new(g.clone()).run(&feeds).expect("the CPU runs");
        let d = rel_diff(&got[0], &want[0]);
        assert!(d <= 1e-3, "{name}: differs from the CPU by {d:e}");
        let engines: HashMap<String, &str> = runner.node_engines().into_iter().collect();
        let layer_ops = [
            "MatMul",
            "Gemm",
            "Softmax",
            "NanTo",
            "Gelu",
            "LayerNormalization",
        ];
        let mut seen = 0;
        for n in &g.nodes {
            let op = n.op.name();
            if layer_ops.iter().any(|l| op.starts_with(l)) {
                assert_eq!(
                    engines.get(&n.name),
                    Some(&"gpu"),
                    "{name}: {} ({op})",
                    n.name
                );
                seen += 1;
            }
        }
        assert!(seen > 10, "{name}: only {seen} layer nodes");
        // The token embedding: a Gather of the constant table at the input ids.
        let embedding = g
            .nodes
            .iter()
            .find(|n| n.op.name() == "Gather" && g.values[n.inputs[0].unwrap()].constant.is_some())
            .expect("an embedding Gather");
        assert_eq!(
            engines.get(&embedding.name),
            Some(&"gpu"),
            "{name}: {}",
            embedding.name
        );
        // Nothing is read back mid-plan: the CPU nodes read only inputs,
        // constants and values the CPU made (or planning folded).
        let producer: HashMap<usize, &String> = g
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(move |&o| (o, &n.name)))
            .collect();
        for n in g
            .nodes
            .iter()
            .filter(|n| engines.get(&n.name) == Some(&"cpu"))
        {
            for &v in n.inputs.iter().flatten() {
                if let Some(p) = producer.get(&v) {
                    assert_ne!(
                        engines.get(*p),
                        Some(&"gpu"),
                        "{name}: {} reads {p} from the GPU",
                        n.name
                    );
                }
            }
        }
    }
}
