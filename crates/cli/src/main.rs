//! `metal-mps`: test, run, benchmark and inspect ONNX models.

mod bench;
mod compare;
mod info;
mod io;
mod malloc;
mod run;
mod test;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "metal-mps",
    version,
    about = "Serve and run ONNX models on Apple-silicon GPUs (and anywhere wgpu or a CPU runs)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Largest tensor, in bytes, a model may allocate; beyond it loading or running fails
    /// cleanly [default: half the machine's memory, or $METAL_MPS_MAX_TENSOR_BYTES].
    #[arg(long, global = true, value_name = "BYTES")]
    max_tensor_bytes: Option<usize>,
    /// Largest plan (weights plus statically sized intermediates), in bytes, of one model
    /// [default: the machine's memory, or $METAL_MPS_MAX_PLAN_BYTES].
    #[arg(long, global = true, value_name = "BYTES")]
    max_plan_bytes: Option<usize>,
    /// Longest time, in seconds, one run of a model may take; 0 is no limit
    /// [default: 600, or $METAL_MPS_MAX_RUN_SECS].
    #[arg(long, global = true, value_name = "SECS")]
    max_run_secs: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Run ONNX backend-test cases (model.onnx + test_data_set_N/) and compare with their expected outputs.
    Test(test::Args),
    /// Run a model on inputs from .npy or TensorProto .pb files and save its outputs.
    Run(run::Args),
    /// Time a model on random non-zero inputs: median and p90 latency after warm-up, throughput.
    Bench(bench::Args),
    /// Show a model's inputs, outputs, op counts and the engine running each node.
    Info(info::Args),
    /// Serve a Triton model repository over KServe-v2 HTTP/REST and gRPC (Triton's protocol).
    Serve(metal_mps_server::ServeArgs),
}

fn main() -> ExitCode {
    malloc::keep_freed_memory();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        end_quietly_on_a_closed_pipe();
        // `serve` installs its own subscriber, honoring --log-verbose.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .init();
    }
    if let Some(b) = cli.max_tensor_bytes {
        metal_mps::limits::set_max_tensor_bytes(b);
    }
    if let Some(b) = cli.max_plan_bytes {
        metal_mps::limits::set_max_plan_bytes(b);
    }
    if let Some(s) = cli.max_run_secs {
        metal_mps::limits::set_max_run_secs(s);
    }
    let result = match cli.command {
        Command::Test(a) => test::main(a),
        Command::Run(a) => run::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Info(a) => info::main(a),
        Command::Serve(a) => metal_mps_server::serve(a).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Makes a command whose output is piped into a reader that stops early
/// (`metal-mps bench ... | head`) end as other Unix tools do, instead of
/// panicking in `println!`. Not for `serve`, whose sockets must keep getting
/// `EPIPE` errors rather than the signal.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default action of a signal the Rust runtime ignores.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Engine options shared by the commands.
#[derive(clap::Args, Clone)]
pub struct EngineArgs {
    /// Engine: cpu, or gpu (wgpu: Metal on macOS, Vulkan on Linux).
    #[arg(long, default_value = "cpu")]
    pub device: metal_mps::Device,
    /// Arithmetic precision for FP32 models: fp32, or fp16 (GPU only).
    #[arg(long, default_value = "fp32")]
    pub precision: metal_mps::Precision,
    /// Skip the optimizer (constant folding, fusion).
    #[arg(long)]
    pub no_optimize: bool,
    /// Threads of the CPU engine (a pool for this model) [default: as many
    /// as the process may use, or $RAYON_NUM_THREADS].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// GPU: time each convolution's and matrix product's candidate tiles
    /// while planning and keep the fastest: on, or off [default: on for
    /// GPUs, off for software adapters, or $METAL_MPS_GPU_AUTOTUNE].
    #[arg(long, value_parser = parse_on_off)]
    pub autotune: Option<bool>,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}': use on or off")),
    }
}

impl EngineArgs {
    pub fn options(&self) -> metal_mps::Options {
        metal_mps::Options {
            device: self.device,
            precision: self.precision,
            optimize: !self.no_optimize,
            threads: self.threads.map(usize::from),
            autotune: self.autotune,
            ..Default::default()
        }
    }
}
