//! Helpers shared by the engine tests.
#![allow(dead_code)]

use metal_mps_ir::{f16, infer, passes, DType, Graph, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

/// Whether a GPU adapter exists; without one the tests are skipped unless
/// `METAL_MPS_REQUIRE_GPU=1` makes that a failure.
pub fn gpu() -> bool {
    if metal_mps_gpu::adapter_available() {
        return true;
    }
    assert!(
        std::env::var("METAL_MPS_REQUIRE_GPU").is_err(),
        "no GPU adapter, and METAL_MPS_REQUIRE_GPU is set"
    );
    eprintln!("no GPU adapter: skipped");
    false
}

/// Deterministic values in [-1, 1).
pub fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A random input for `g`'s first input: fixed dims as declared, a dynamic first
/// dim set to `batch`, other dynamic dims 1; FP16 when the input is FP16.
pub fn model_input(g: &Graph, batch: usize, seed: u64) -> Tensor {
    let v = &g.values[g.inputs[0]];
    let shape: Vec<usize> = v
        .shape
        .as_ref()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| d.fixed().unwrap_or(if i == 0 { batch } else { 1 }))
        .collect();
    let data = rand(shape.iter().product(), seed);
    match v.dtype {
        Some(DType::F16) => {
            Tensor::from_vec(shape, data.iter().map(|&x| f16::from_f32(x)).collect()).unwrap()
        }
        _ => Tensor::from_vec(shape, data).unwrap(),
    }
}

/// Where the test models are (`METAL_MPS_MODELS`, else `build/models` of the workspace).
pub fn model_dir() -> PathBuf {
    std::env::var_os("METAL_MPS_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/models"))
}

/// The model, imported and optimized as the runtime does; `None` (skipped) when absent.
pub fn load(name: &str) -> Option<Graph> {
    let path = model_dir().join(format!("{name}.onnx"));
    if !path.exists() {
        assert!(
            std::env::var("METAL_MPS_REQUIRE_MODELS").is_err(),
            "{} is missing: run `python models/create_test_model.py build/models`",
            path.display()
        );
        eprintln!(
            "{} is missing: skipped (python models/create_test_model.py build/models)",
            path.display()
        );
        return None;
    }
    let mut g = metal_mps_onnx::load_model(&path)
        .expect("the model imports")
        .graph;
    optimize(&mut g);
    Some(g)
}

pub fn optimize(g: &mut Graph) {
    infer::infer_graph(g).expect("shapes infer");
    passes::optimize(g, &metal_mps_cpu::CpuEvaluator).expect("the graph optimizes");
    infer::infer_graph(g).expect("shapes infer");
}

/// The same graph in FP16: float constants, inputs and values converted.
pub fn to_f16(g: &Graph) -> Graph {
    let mut h = g.clone();
    for v in &mut h.values {
        if v.dtype == Some(DType::F32) {
            v.dtype = Some(DType::F16);
        }
        if let Some(c) = &v.constant {
            if c.dtype() == DType::F32 {
                let data: Vec<f16> = c
                    .as_slice::<f32>()
                    .unwrap()
                    .iter()
                    .map(|&x| f16::from_f32(x))
                    .collect();
                v.constant = Some(Arc::new(
                    Tensor::from_vec(c.shape().to_vec(), data).unwrap(),
                ));
            }
        }
    }
    h
}

/// Largest absolute difference, relative to the largest reference magnitude.
pub fn rel_diff(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
    g.iter()
        .zip(&w)
        .map(|(a, b)| {
            if a.is_nan() || b.is_nan() {
                f64::INFINITY
            } else {
                (a - b).abs()
            }
        })
        .fold(0f64, f64::max)
        / scale
}
