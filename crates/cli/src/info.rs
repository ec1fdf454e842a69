//! `metal-mps info`: what a model declares and how it was compiled.

use crate::EngineArgs;
use anyhow::{Context, Result};
use metal_mps::Model;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    /// List every node with the engine that runs it.
    #[arg(long)]
    nodes: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let model = Model::load(&args.model, &args.engine.options())
        .with_context(|| format!("loading {}", args.model.display()))?;
    println!("model: {}", args.model.display());
    println!("opset: {}", model.opset());
    println!(
        "device: {} (precision {:?})",
        model.device(),
        model.options().precision
    );
    println!("inputs:");
    for i in model.inputs() {
        println!("  {}", i.describe());
    }
    println!("outputs:");
    for o in model.outputs() {
        println!("  {}", o.describe());
    }
    let g = model.graph();
    println!("ops after optimization ({} nodes):", g.nodes.len());
    for (op, n) in g.op_counts() {
        println!("  {op:<28} {n}");
    }
    let nodes = model.nodes();
    let count = |e: Option<metal_mps::Device>| nodes.iter().filter(|n| n.engine == e).count();
    let folded = count(None);
    println!(
        "engines: {} nodes on gpu, {} on cpu{}",
        count(Some(metal_mps::Device::Gpu)),
        count(Some(metal_mps::Device::Cpu)),
        if folded > 0 {
            format!(", {folded} folded while planning (shape arithmetic)")
        } else {
            String::new()
        }
    );
    let stats = model.memory_stats();
    println!(
        "weights: {:.2} MiB",
        stats.bytes_weights as f64 / (1 << 20) as f64
    );
    if args.nodes {
        println!("nodes:");
        for n in nodes {
            let engine = n.engine.map_or("folded".to_string(), |e| e.to_string());
            println!("  [{engine}] {} ({})", n.name, n.op);
        }
    }
    Ok(ExitCode::SUCCESS)
}
