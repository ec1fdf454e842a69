//! Autotune on a real adapter: a convolution and a matrix product are timed
//! on each candidate while the plan is built, the choices are written to the
//! cache folder, a second load times nothing, and the outputs match a direct
//! computation. A test binary of its own: it sets `METAL_MPS_CACHE_DIR` for
//! the process.

mod common;

use common::{gpu, optimize, rand};
use metal_mps_gpu::disk_cache::CACHE_DIR_ENV;
use metal_mps_gpu::ops::matmul::Tiles;
use metal_mps_gpu::{GpuOptions, GpuRunner};
use metal_mps_ir::*;

const IC: usize = 16;
const OC: usize = 128;
const SIDE: usize = 16;
const BATCH: usize = 2;
const M: usize = 192;
// Long enough that the product's 3x3 grid of 64x64 tiles has split-K candidates.
const K: usize = 2048;
const N: usize = 160;

fn value(g: &mut Graph, name: &str, shape: &[usize]) -> ValueId {
    let v = g.add_value(name);
    g.values[v].dtype = Some(DType::F32);
    g.values[v].shape = Some(shape.iter().map(|&d| Dim::Fixed(d)).collect());
    v
}

fn node(g: &mut Graph, op: Op, inputs: &[ValueId]) -> ValueId {
    let name = format!("n{}_{}", g.nodes.len(), op.name());
    let out = g.add_value(format!("{name}.out"));
    g.nodes.push(Node {
        name,
        onnx_op: op.name(),
        op,
        opset: 17,
        inputs: inputs.iter().map(|&v| Some(v)).collect(),
        outputs: vec![out],
    });
    out
}

/// A 3x3 convolution (padding 1) of `x` (`batch` images) and a product of `a` with constant weights.
fn graph(w: &[f32], wm: &[f32], batch: usize) -> Graph {
    let mut g = Graph::default();
    let x = value(&mut g, "x", &[batch, IC, SIDE, SIDE]);
    let a = value(&mut g, "a", &[M, K]);
    g.inputs = vec![x, a];
    let w = g.add_constant(
        "w",
        Tensor::from_vec(vec![OC, IC, 3, 3], w.to_vec()).unwrap(),
    );
    let wm = g.add_constant("wm", Tensor::from_vec(vec![K, N], wm.to_vec()).unwrap());
    let conv = node(
        &mut g,
        Op::Conv(ConvAttrs {
            window: Window {
                kernel: vec![],
                strides: vec![1, 1],
                dilations: vec![],
                pads: vec![1, 1, 1, 1],
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
            },
            group: 1,
            activation: Activation::None,
            max_pool_2x2: false,
        }),
        &[x, w],
    );
    let product = node(
        &mut g,
        Op::MatMul {
            activation: Activation::None,
        },
        &[a, wm],
    );
    g.outputs = vec![conv, product];
    optimize(&mut g);
    g
}

fn conv_direct(x: &[f32], w: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; BATCH * OC * SIDE * SIDE];
    for n in 0..BATCH {
        for o in 0..OC {
            for r in 0..SIDE {
                for c in 0..SIDE {
                    let mut s = 0f64;
                    for i in 0..IC {
                        for (kr, kc) in (0..9).map(|t| (t / 3, t % 3)) {
                            let (ir, ic) = ((r + kr).wrapping_sub(1), (c + kc).wrapping_sub(1));
                            if ir < SIDE && ic < SIDE {
                                let xv = x[((n * IC + i) * SIDE + ir) * SIDE + ic];
                                s += f64::from(xv * w[((o * IC + i) * 3 + kr) * 3 + kc]);
                            }
                        }
                    }
                    y[((n * OC + o) * SIDE + r) * SIDE + c] = s as f32;
                }
            }
        }
    }
    y
}

fn matmul_direct(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; M * N];
    for i in 0..M {
        for j in 0..N {
            y[i * N + j] = (0..K)
                .map(|p| f64::from(a[i * K + p] * b[p * N + j]))
                .sum::<f64>() as f32;
        }
    }
    y
}

/// The workgroups of a profile row's grid, `gpu <kernel> [XxYxZ]`.
fn workgroups(row: &str) -> usize {
    let grid = row.rsplit('[').next().unwrap().trim_end_matches(']');
    grid.split('x')
        .map(|d| d.parse::<usize>().unwrap())
        .product()
}

fn assert_close(got: &Tensor, want: &[f32], what: &str) {
    let got = got.to_f64_vec();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let w = f64::from(*w);
        assert!(
            (g - w).abs() <= 1e-3 * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn tiles_are_timed_once_written_and_reused() {
    if !gpu() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("metal_mps_autotune_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var(CACHE_DIR_ENV, &dir);

    let (w, wm) = (rand(OC * IC * 9, 1), rand(K * N, 2));
    let g = graph(&w, &wm, BATCH);
    let on = GpuOptions {
        autotune: Some(true),
        ..GpuOptions::default()
    };
    let runner = GpuRunner::new(&g, &on).expect("the model loads");
    let tuner = &runner.context().tuner;
    // Both layers have two candidates (64x64 and 128x128 tiles) at least.
    assert_eq!(tuner.measured(), 2, "layers timed");

    let path = tuner.path().expect("a cache folder is set").to_path_buf();
    assert!(
        path.starts_with(&dir),
        "{} outside {}",
        path.display(),
        dir.display()
    );
    let text = std::fs::read_to_string(&path).expect("the choices are written");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "one choice per layer:\n{text}");
    for l in &lines {
        let (key, tiles) = l.split_once('\t').expect("key, tab, tiles");
        assert_eq!(
            tuner.choice(key).map(|_| ()),
            Some(()),
            "{key} is in the tuner"
        );
        assert!(
            [
                "plain4x4",
                "plain4x4k4",
                "plain4x4k16",
                "plain8x8",
                "coop8",
                "coop16"
            ]
            .contains(&tiles),
            "{tiles}"
        );
    }

    let (x, a) = (rand(BATCH * IC * SIDE * SIDE, 3), rand(M * K, 4));
    let xt = Tensor::from_vec(vec![BATCH, IC, SIDE, SIDE], x.clone()).unwrap();
    let at = Tensor::from_vec(vec![M, K], a.clone()).unwrap();
    let out = runner.run(&[&xt, &at]).expect("the model runs");
    assert_close(&out[0], &conv_direct(&x, &w), "conv");
    assert_close(&out[1], &matmul_direct(&a, &wm), "matmul");

    // The same layers again: the choices are found, nothing is timed.
    let again = GpuRunner::new(&g, &on).expect("the model loads again");
    assert_eq!(again.context().tuner.measured(), 2);
    let out = again.run(&[&xt, &at]).expect("the model runs");
    assert_close(&out[1], &matmul_direct(&a, &wm), "matmul, second load");

    // A recorded choice is the one that runs: the convolution's grid on
    // 128x128 tiles has a quarter of the workgroups of 64x64 ones.
    let conv_key = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("conv ")
                .map(|_| l.split('\t').next().unwrap())
        })
        .expect("the convolution's choice")
        .to_string();
    let mut grids = Vec::new();
    for (batch, tiles) in [(BATCH + 2, (4, 4)), (BATCH + 3, (8, 8))] {
        let key = conv_key.replace(&format!(" b{BATCH} "), &format!(" b{batch} "));
        let (tm, tn) = tiles;
        tuner.record(&key, Tiles::plain(tm, tn));
        let pinned = GpuRunner::new(&graph(&w, &wm, batch), &on).expect("loads");
        let x = Tensor::from_vec(
            vec![batch, IC, SIDE, SIDE],
            rand(batch * IC * SIDE * SIDE, 6),
        )
        .unwrap();
        metal_mps_cpu::profile::set_enabled(true);
        pinned.run(&[&x, &at]).expect("runs");
        let rows = metal_mps_cpu::profile::report();
        metal_mps_cpu::profile::set_enabled(false);
        if !runner.context().caps.timestamps {
            break;
        }
        let conv = rows
            .iter()
            .find(|r| r.0.starts_with("gpu Conv"))
            .expect("the convolution is timed");
        grids.push(workgroups(&conv.0) as f64 / batch as f64);
    }
    assert_eq!(tuner.measured(), 2, "recorded choices are not timed");
    if let [small, large] = grids[..] {
        assert_eq!(
            small / large,
            4.0,
            "workgroups per image, 64x64 vs 128x128 tiles"
        );
    }

    // A split-K choice runs as the product and a second pass adding its 16
    // partial sums, with the same result.
    let gemm_key = lines
        .iter()
        .find(|l| l.starts_with("gemm "))
        .and_then(|l| l.split('\t').next())
        .expect("the product's choice");
    assert!(
        gemm_key.ends_with(" [plain4x4 plain4x4k16 plain4x4k4 plain8x8]"),
        "{gemm_key}"
    );
    let split = Tiles::plain(4, 4).split(16);
    tuner.record(gemm_key, split);
    let split_runner = GpuRunner::new(&g, &on).expect("loads on split-K tiles");
    metal_mps_cpu::profile::set_enabled(true);
    let out = split_runner
        .run(&[&xt, &at])
        .expect("runs on split-K tiles");
    let rows = metal_mps_cpu::profile::report();
    metal_mps_cpu::profile::set_enabled(false);
    assert_close(&out[1], &matmul_direct(&a, &wm), "matmul on split-K tiles");
    assert_close(&out[0], &conv_direct(&x, &w), "conv beside it");
    if runner.context().caps.timestamps {
        let product = rows
            .iter()
            .find(|r| r.0.starts_with("gpu Matmul"))
            .expect("the product is timed");
        assert!(product.0.contains("SPLITS=16"), "{}", product.0);
        assert_eq!(workgroups(&product.0), 3 * 3 * 16, "{}", product.0);
        assert!(
            rows.iter().any(|r| r.0.starts_with("gpu SplitSum")),
            "the second pass runs: {rows:?}"
        );
    }

    // Off: a new shape of convolution is not timed.
    let off = GpuOptions {
        autotune: Some(false),
        ..GpuOptions::default()
    };
    GpuRunner::new(&graph(&w, &wm, BATCH + 1), &off).expect("loads without tuning");
    assert_eq!(runner.context().tuner.measured(), 2);
    // On: it is.
    GpuRunner::new(&graph(&w, &wm, BATCH + 1), &on).expect("loads with tuning");
    assert_eq!(runner.context().tuner.measured(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
