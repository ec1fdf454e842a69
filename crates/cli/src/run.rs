//! `metal-mps run`: one inference on inputs from files.

use crate::io::{file_stem, read_tensor, write_npy};
use crate::EngineArgs;
use anyhow::{anyhow, Context, Result};
use metal_mps::{Model, Tensor};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// An input as NAME=FILE (FILE: .npy or TensorProto .pb); repeat for each input.
    #[arg(long = "input", value_name = "NAME=FILE")]
    inputs: Vec<String>,
    /// Write each output as DIR/<output name>.npy.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let model = Model::load(&args.model, &args.engine.options())
        .with_context(|| format!("loading {}", args.model.display()))?;
    // `run` exchanges tensors (.npy / TensorProto); `metal-mps test` runs
    // models with sequence or optional inputs and outputs from .pb files.
    model.require_tensor_io().context(
        "`metal-mps run` reads and writes tensors only; give such a model's inputs as \
         SequenceProto / OptionalProto .pb files in an ONNX test case directory \
         (test_data_set_N/input_K.pb) and use `metal-mps test`",
    )?;
    let mut named = Vec::new();
    for spec in &args.inputs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--input '{spec}' must be NAME=FILE"))?;
        named.push((name.to_string(), read_tensor(file.as_ref())?));
    }
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let start = std::time::Instant::now();
    let outputs = model.run(&refs)?;
    let elapsed = start.elapsed();
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (info, t) in model.outputs().iter().zip(&outputs) {
        let v = t.to_f64_vec();
        let (min, max) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!(
            "{}: {} {:?} min {min:.6} max {max:.6} mean {mean:.6}",
            info.name,
            t.dtype(),
            t.shape()
        );
        if let Some(dir) = &args.output_dir {
            write_npy(&dir.join(format!("{}.npy", file_stem(&info.name))), t)?;
        }
    }
    eprintln!(
        "ran on {} in {:.3} ms",
        model.device(),
        elapsed.as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}
