//! `metal-mps bench`: latency and throughput on random non-zero inputs.

use crate::EngineArgs;
use anyhow::{bail, Context, Result};
use metal_mps::{bf16, f16, BoolByte, DType, Dim, Model, Tensor};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// Size of a dynamic first (batch) dimension.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Size of a named dynamic dimension, e.g. `--dim seq=128` (repeatable);
    /// other dynamic dimensions past the first are 1.
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    dims: Vec<(String, usize)>,
    /// Timed runs.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Untimed runs first, at least one: the first run, which compiles the
    /// plan for the input shapes, is reported on its own.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// After the timed runs, print the time spent in each operator type
    /// during them: nodes of the CPU engine's plan, and kernels of the GPU
    /// engine where the adapter writes timestamps (`gpu <kernel> [grid]`;
    /// each kernel then runs in its own pass and every run waits for them).
    #[arg(long)]
    profile: bool,
    /// As `--profile`, with a row per node of the CPU engine's plan (its
    /// ONNX name, then its operator) instead of per operator type.
    #[arg(long)]
    profile_nodes: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn main(args: Args) -> Result<ExitCode> {
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let loading = Instant::now();
    let model = Model::load(&args.model, &args.engine.options())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let load_ms = loading.elapsed().as_secs_f64() * 1e3;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let named = |name: &str| args.dims.iter().find(|(n, _)| n == name).map(|d| d.1);
    let inputs: Vec<Tensor> = model
        .inputs()
        .iter()
        .map(|i| {
            let shape: Vec<usize> = i
                .shape
                .iter()
                .enumerate()
                .map(|(d, dim)| match dim {
                    Dim::Fixed(n) => *n,
                    Dim::Sym(name) => named(name).unwrap_or(if d == 0 { args.batch } else { 1 }),
                    _ if d == 0 => args.batch,
                    _ => 1,
                })
                .collect();
            random_tensor(i.dtype, shape, &mut rng)
        })
        .collect::<Result<_>>()?;
    // The first run compiles the plan for these shapes where the model's
    // are not fixed (kernels, weights, GPU autotune): timed on its own.
    let first = Instant::now();
    model.run_in_order(&inputs)?;
    let first_ms = first.elapsed().as_secs_f64() * 1e3;
    for _ in 1..args.warmup {
        model.run_in_order(&inputs)?;
    }
    let profile = args.profile || args.profile_nodes;
    metal_mps::profile::set_per_node(args.profile_nodes);
    metal_mps::profile::set_enabled(profile);
    let mut times = Vec::with_capacity(args.iterations);
    let faults_before = crate::malloc::page_faults();
    for _ in 0..args.iterations {
        let t = Instant::now();
        let out = model.run_in_order(&inputs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    let faults = crate::malloc::page_faults()
        .zip(faults_before)
        .map(|(after, before)| (after - before) as f64 / args.iterations as f64);
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let (median, p90) = (pct(0.5), pct(0.9));
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let throughput = args.batch as f64 / (median / 1e3);
    if args.json {
        let j = serde_json::json!({
            "model": args.model.display().to_string(),
            "device": model.device().to_string(),
            "batch": args.batch,
            "load_ms": load_ms,
            "first_run_ms": first_ms,
            "iterations": args.iterations,
            "median_ms": median,
            "p90_ms": p90,
            "mean_ms": mean,
            "min_ms": times[0],
            "throughput_per_s": throughput,
            "page_faults_per_run": faults,
        });
        println!("{j}");
    } else {
        println!(
            "{} on {} (batch {}, loaded in {load_ms:.1} ms, first run {first_ms:.1} ms): median {median:.3} ms, p90 {p90:.3} ms, min {:.3} ms, {throughput:.1} inferences/s over {} runs{}",
            args.model.display(),
            model.device(),
            args.batch,
            times[0],
            args.iterations,
            faults.map_or(String::new(), |f| format!(", {f:.0} page faults per run"))
        );
    }
    if profile {
        print_profile(times.iter().sum::<f64>(), args.iterations);
    }
    Ok(ExitCode::SUCCESS)
}

/// The operators' share of `total_ms`, the sum of the timed runs.
fn print_profile(total_ms: f64, runs: usize) {
    let rows = metal_mps::profile::report();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(24);
    println!(
        "{:<width$} {:>10} {:>8} {:>7}",
        "operator", "ms/run", "calls", "share"
    );
    for (op, took, calls) in rows {
        let ms = took.as_secs_f64() * 1e3;
        println!(
            "{op:<width$} {:>10.3} {:>8} {:>6.1}%",
            ms / runs as f64,
            calls / runs as u64,
            100.0 * ms / total_ms
        );
    }
}

fn parse_dim(s: &str) -> std::result::Result<(String, usize), String> {
    let (name, size) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=SIZE, got '{s}'"))?;
    let size = size
        .parse()
        .map_err(|e| format!("size of '{name}' is not a count: {e}"))?;
    Ok((name.to_string(), size))
}

/// Uniform values away from zero: floats in ±[0.1, 1], integers in 1..=9, random booleans.
fn random_tensor(dtype: DType, shape: Vec<usize>, rng: &mut impl Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut float = || {
        let v: f32 = rng.random_range(0.1..1.0);
        if rng.random_bool(0.5) {
            v
        } else {
            -v
        }
    };
    Ok(match dtype {
        DType::F32 => Tensor::from_vec(shape, (0..n).map(|_| float()).collect())?,
        DType::F16 => Tensor::from_vec(shape, (0..n).map(|_| f16::from_f32(float())).collect())?,
        DType::BF16 => Tensor::from_vec(shape, (0..n).map(|_| bf16::from_f32(float())).collect())?,
        DType::F64 => Tensor::from_vec(shape, (0..n).map(|_| float() as f64).collect())?,
        DType::Bool => Tensor::from_vec(
            shape,
            (0..n)
                .map(|_| BoolByte(rng.random_bool(0.5) as u8))
                .collect(),
        )?,
        // 8-, 4- and 2-bit types: zero bytes (a valid value of each).
        other if !other.has_protocol_type() => Tensor::zeros(other, shape)?,
        other => {
            let v: Vec<i64> = (0..n).map(|_| rng.random_range(1..10)).collect();
            metal_mps::Tensor::from_vec(shape.clone(), v).and_then(|t| cast_int(t, other))?
        }
    })
}

fn cast_int(t: Tensor, to: DType) -> metal_mps::Result<Tensor> {
    let v = t.to_i64_vec()?;
    let shape = t.shape().to_vec();
    match to {
        DType::I8 => Tensor::from_vec(shape, v.iter().map(|&x| x as i8).collect()),
        DType::I16 => Tensor::from_vec(shape, v.iter().map(|&x| x as i16).collect()),
        DType::I32 => Tensor::from_vec(shape, v.iter().map(|&x| x as i32).collect()),
        DType::U8 => Tensor::from_vec(shape, v.iter().map(|&x| x as u8).collect()),
        DType::U16 => Tensor::from_vec(shape, v.iter().map(|&x| x as u16).collect()),
        DType::U32 => Tensor::from_vec(shape, v.iter().map(|&x| x as u32).collect()),
        DType::U64 => Tensor::from_vec(shape, v.iter().map(|&x| x as u64).collect()),
        _ => Ok(t),
    }
}
