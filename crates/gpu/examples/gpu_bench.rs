//! Benchmark of the GPU engine: kernels (matmul, convolution) and models.
//!
//! `gpu_bench [MODELS_DIR]` prints the adapter, checks the cooperative-matrix
//! kernels against the plain ones, times matrix products and convolutions
//! (median of repeated batches of launches, wall clock after a GPU sync), then
//! each model in `MODELS_DIR` (simple_cnn, resnet_block, resnet50) end to end
//! through `GpuRunner::run` (host tensors in and out) in FP32 and FP16
//! precision, checked against the CPU engine at batch 1.

use metal_mps_cpu::CpuPlan;
use metal_mps_gpu::ops::conv::ConvGeometry;
use metal_mps_gpu::ops::matmul::{Gemm, Tiles};
use metal_mps_gpu::ops::{self, Binding};
use metal_mps_gpu::pipeline_cache::Scalar;
use metal_mps_gpu::{transfer, GpuContext, GpuOptions, GpuRunner, Precision};
use metal_mps_ir::{f16, Graph};
use std::time::Instant;

// The engine tests' helpers: random data, model inputs, optimization, comparison.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{model_input, optimize, rand, rel_diff};

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    (q(0.5), q(0.1), q(0.9))
}

fn upload(ctx: &GpuContext, data: &[f32], half: bool) -> (metal_mps_gpu::pool::PooledBuffer, u64) {
    let bytes: Vec<u8> = if half {
        let h: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
        bytemuck::cast_slice(&h).to_vec()
    } else {
        bytemuck::cast_slice(data).to_vec()
    };
    (transfer::upload(ctx, &bytes).unwrap(), bytes.len() as u64)
}

fn download(ctx: &GpuContext, b: &wgpu::Buffer, n: usize, half: bool) -> Vec<f32> {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    let d = transfer::record_download(ctx, &mut enc, b, n * if half { 2 } else { 4 }).unwrap();
    let idx = ctx.queue.submit([enc.finish()]);
    let bytes = d.read(ctx, &idx).unwrap();
    if half {
        bytemuck::cast_slice::<u8, f16>(&bytes)
            .iter()
            .map(|x| x.to_f32())
            .collect()
    } else {
        bytemuck::cast_slice::<u8, f32>(&bytes).to_vec()
    }
}

/// Times `reps` launches of the calls of one op in one submission, `rounds`
/// times; seconds per launch.
fn time_call(
    ctx: &GpuContext,
    calls: Vec<ops::Call>,
    reps: usize,
    rounds: usize,
) -> (f64, f64, f64) {
    let (_p, prepared) = ops::prepare(ctx, &calls).unwrap();
    let mut times = Vec::new();
    for r in 0..rounds + 1 {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..reps {
                for p in &prepared {
                    pass.set_pipeline(&p.pipeline.pipeline);
                    pass.set_bind_group(0, &p.bind_group, &[]);
                    pass.dispatch_workgroups(p.groups[0], p.groups[1], p.groups[2]);
                }
            }
        }
        let t = Instant::now();
        let idx = ctx.queue.submit([enc.finish()]);
        ctx.wait_for(idx).unwrap();
        if r > 0 {
            times.push(t.elapsed().as_secs_f64() / reps as f64);
        }
    }
    median(times)
}

fn matmul_bench(ctx: &GpuContext) {
    let mut configs: Vec<(&str, Scalar, Tiles)> = vec![
        ("f32 64x64", Scalar::F32, Tiles::plain(4, 4)),
        ("f32 128x128", Scalar::F32, Tiles::plain(8, 8)),
        ("f16 128x128", Scalar::F16, Tiles::plain(8, 8)),
    ];
    if let Some(c) = ctx.caps.coop {
        configs.push(("f16 coop", Scalar::F16, Tiles::coop(c.size)));
    }
    let dummy = upload(ctx, &[0.0; 4], false);
    // Correctness at 512 x 384 x 320 against an f64 reference.
    let (m, n, k) = (512, 384, 320);
    let a = rand(m * k, 1);
    let b = rand(k * n, 2);
    let mut want = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p] as f64;
            for j in 0..n {
                want[i * n + j] += av * b[p * n + j] as f64;
            }
        }
    }
    let norm = want.iter().map(|v| v * v).sum::<f64>().sqrt();
    for (name, dt, tiles) in &configs {
        let half = *dt == Scalar::F16;
        let (ba, sa) = upload(ctx, &a, half);
        let (bb, sb) = upload(ctx, &b, half);
        let y = ctx
            .pool
            .acquire(
                metal_mps_gpu::pool::BufferClass::Storage,
                (m * n * 4) as u64,
            )
            .unwrap();
        let g = Gemm::row_major(m, n, k);
        let calls = ops::matmul::matmul(
            ctx,
            *dt,
            &g,
            *tiles,
            Binding::whole(&ba, sa),
            Binding::whole(&bb, sb),
            Binding::whole(&y, (m * n * if half { 2 } else { 4 }) as u64),
            None,
            &Binding::whole(&dummy.0, 16),
        )
        .unwrap();
        ops::run_now(ctx, &calls).unwrap();
        let got = download(ctx, &y, m * n, half);
        let err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f64 - w).powi(2))
            .sum::<f64>()
            .sqrt()
            / norm;
        println!(
            "check matmul {name:12} {m}x{n}x{k}: relative error {err:.2e} {}",
            if err < 1e-2 { "ok" } else { "WRONG" }
        );
    }
    println!("\n| matmul | size | ms (median, p10-p90) | TFLOP/s |\n|---|---|---|---|");
    let sizes: Vec<usize> = std::env::var("BENCH_MATMUL_SIZES")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![1024, 2048, 4096]);
    for &s in &sizes {
        let a = rand(s * s, 3);
        for (name, dt, tiles) in &configs {
            let half = *dt == Scalar::F16;
            let (ba, sa) = upload(ctx, &a, half);
            let (bb, sb) = upload(ctx, &a, half);
            let y = ctx
                .pool
                .acquire(
                    metal_mps_gpu::pool::BufferClass::Storage,
                    (s * s * 4) as u64,
                )
                .unwrap();
            let g = Gemm::row_major(s, s, s);
            let call = ops::matmul::matmul(
                ctx,
                *dt,
                &g,
                *tiles,
                Binding::whole(&ba, sa),
                Binding::whole(&bb, sb),
                Binding::whole(&y, (s * s * 4) as u64),
                None,
                &Binding::whole(&dummy.0, 16),
            )
            .unwrap();
            let reps = if s >= 4096 { 5 } else { 20 };
            let (t, lo, hi) = time_call(ctx, call, reps, 5);
            let tf = 2.0 * (s as f64).powi(3) / t / 1e12;
            println!(
                "| {name} | {s}^3 | {:.3} ({:.3}-{:.3}) | {tf:.1} |",
                t * 1e3,
                lo * 1e3,
                hi * 1e3
            );
        }
    }
}

fn conv_bench(ctx: &GpuContext) {
    println!(
        "\n| conv (ResNet-50 layers) | batch | kernel | ms | TFLOP/s |\n|---|---|---|---|---|"
    );
    let dummy = upload(ctx, &[0.0; 4], false);
    let layers = [
        (64usize, 56usize, 64usize, 3usize, 1usize),
        (64, 56, 256, 1, 1),
        (256, 14, 256, 3, 1),
        (1024, 14, 256, 1, 1),
        (256, 14, 1024, 1, 1),
        (512, 7, 2048, 1, 1),
    ];
    for batch in [1usize, 32] {
        for &(ic, hw, oc, k, s) in &layers {
            let g = ConvGeometry {
                batch,
                ic,
                ih: hw,
                iw: hw,
                oc,
                oh: hw / s,
                ow: hw / s,
                group: 1,
                kernel: [k, k],
                stride: [s, s],
                dilation: [1, 1],
                pad: [k / 2, k / 2],
                tap_major: false,
                ic_pad: 0,
            };
            let flops = 2.0 * (batch * oc * g.oh * g.ow * ic * k * k) as f64;
            let mut configs: Vec<(&str, Scalar, Tiles)> = vec![
                ("f32 64", Scalar::F32, Tiles::plain(4, 4)),
                ("f32 64 k4", Scalar::F32, Tiles::plain(4, 4).split(4)),
                ("f32 64 k16", Scalar::F32, Tiles::plain(4, 4).split(16)),
                ("f32 128", Scalar::F32, Tiles::plain(8, 8)),
                ("f16 64", Scalar::F16, Tiles::plain(4, 4)),
                ("f16 64 k16", Scalar::F16, Tiles::plain(4, 4).split(16)),
            ];
            if let Some(c) = ctx.caps.coop {
                configs.push(("f16 coop", Scalar::F16, Tiles::coop(c.size)));
                configs.push(("f16 coop k4", Scalar::F16, Tiles::coop(c.size).split(4)));
                configs.push((
                    "f16 coop 64x128",
                    Scalar::F16,
                    Tiles::coop(c.size).fragments(4, 8),
                ));
            }
            // Where tap-major weights serve, both orders (the timing ignores their values).
            let layouts = if g.tap_major_pays() {
                &[false, true][..]
            } else {
                &[false]
            };
            let runs: Vec<_> = layouts
                .iter()
                .flat_map(|&tm| configs.iter().map(move |&c| (tm, c)))
                .collect();
            for (tm, (name, dt, tiles)) in runs {
                let g = ConvGeometry {
                    tap_major: tm,
                    ..g.clone()
                };
                let half = dt == Scalar::F16;
                let (bx, sx) = upload(ctx, &rand(batch * ic * hw * hw, 5), half);
                let (bw, sw) = upload(ctx, &rand(oc * ic * k * k, 6), half);
                let ysize = (batch * oc * g.oh * g.ow * 4) as u64;
                let y = ctx
                    .pool
                    .acquire(metal_mps_gpu::pool::BufferClass::Storage, ysize)
                    .unwrap();
                let pbytes = tiles.partial_bytes(batch * oc * g.oh * g.ow);
                let part = ctx
                    .pool
                    .acquire(metal_mps_gpu::pool::BufferClass::Storage, pbytes.max(16))
                    .unwrap();
                let call = ops::conv::conv(
                    ctx,
                    dt,
                    &g,
                    tiles,
                    Binding::whole(&bx, sx),
                    Binding::whole(&bw, sw),
                    None,
                    None,
                    None,
                    Binding::whole(&y, ysize),
                    [(pbytes > 0).then(|| Binding::whole(&part, pbytes)), None],
                    &Binding::whole(&dummy.0, 16),
                )
                .unwrap();
                let (t, _, _) = time_call(ctx, call, 10, 5);
                println!(
                    "| {ic}->{oc} {hw}x{hw} | {batch} | {k}x{k} {name}{} | {:.3} | {:.1} |",
                    if tm { " tap" } else { "" },
                    t * 1e3,
                    flops / t / 1e12
                );
            }
        }
    }
}

fn load(path: &std::path::Path) -> Option<Graph> {
    if !path.exists() {
        println!("{} missing: skipped", path.display());
        return None;
    }
    let mut g = metal_mps_onnx::load_model(path).ok()?.graph;
    optimize(&mut g);
    Some(g)
}

fn model_bench(dir: &std::path::Path) {
    println!("\n| model | batch | precision | ms (median, p10-p90) | launches | rel. diff vs CPU | load s |\n|---|---|---|---|---|---|---|");
    for (name, batches) in [
        ("simple_cnn", vec![1usize, 32]),
        ("resnet_block", vec![1, 32]),
        ("resnet50", vec![1, 32]),
    ] {
        let Some(g) = load(&dir.join(format!("{name}.onnx"))) else {
            continue;
        };
        let cpu = CpuPlan::new(g.clone());
        for precision in [Precision::Native, Precision::F16] {
            let t0 = Instant::now();
            let runner = match GpuRunner::new(
                &g,
                &GpuOptions {
                    precision,
                    ..Default::default()
                },
            ) {
                Ok(r) => r,
                Err(e) => {
                    println!("| {name} | - | {precision:?} | failed: {e} |");
                    continue;
                }
            };
            let load_s = t0.elapsed().as_secs_f64();
            for &batch in &batches {
                let x = model_input(&g, batch, 9);
                let got = match runner.run(&[&x]) {
                    Ok(o) => o,
                    Err(e) => {
                        println!("| {name} | {batch} | {precision:?} | failed: {e} |");
                        continue;
                    }
                };
                let diff = if batch == 1 {
                    let want = cpu.run(&[&x]).unwrap();
                    format!("{:.1e}", rel_diff(&got[0], &want[0]))
                } else {
                    "-".into()
                };
                for _ in 0..5 {
                    runner.run(&[&x]).unwrap();
                }
                let mut times = Vec::new();
                for _ in 0..30 {
                    let t = Instant::now();
                    runner.run(&[&x]).unwrap();
                    times.push(t.elapsed().as_secs_f64());
                }
                let (t, lo, hi) = median(times);
                let launches = runner.plan_stats().map(|s| s.0).unwrap_or(0);
                println!("| {name} | {batch} | {precision:?} | {:.3} ({:.3}-{:.3}) | {launches} | {diff} | {load_s:.2} |", t * 1e3, lo * 1e3, hi * 1e3);
            }
        }
    }
}

fn main() {
    let ctx = GpuContext::shared(None).expect("a GPU adapter");
    println!("adapter: {}\ncaps: {:?}", ctx.adapter, ctx.caps);
    let args: Vec<String> = std::env::args().collect();
    let only = |what: &str| {
        std::env::var("BENCH_ONLY")
            .map(|v| v.split(',').any(|x| x == what))
            .unwrap_or(true)
    };
    if only("matmul") {
        matmul_bench(&ctx);
    }
    if only("conv") {
        conv_bench(&ctx);
    }
    if only("models") {
        if let Some(dir) = args.get(1) {
            model_bench(std::path::Path::new(dir));
        }
    }
}
