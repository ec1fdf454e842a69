//! `metal-mps serve`: a standalone inference server speaking Triton's
//! protocols (KServe v2 HTTP/REST and gRPC, with Triton's extensions) over a
//! Triton model repository, for machines Triton does not run on.
//!
//! The CLI embeds [`ServeArgs`] as its `serve` subcommand and calls
//! [`serve`], which blocks until SIGINT/SIGTERM and a graceful shutdown.
//!
//! Map of the crate, in the order a request meets it:
//!
//! | module | job |
//! |---|---|
//! | [`args`] | command-line options |
//! | `server` | listeners, start-up loading, polling, shutdown |
//! | `http_serve`, `http`, `http_infer` | HTTP connections and their time limits; routes; the infer body (JSON + binary extension) |
//! | `linger` | closing connections without losing the last response to a reset |
//! | `grpc`, `grpc_limits` | `inference.GRPCInferenceService`; its connection and message time limits |
//! | `metrics` | Prometheus `/metrics` |
//! | `manager` | which models/versions are loaded; load, unload, poll |
//! | `loader`, `config`, `pbtxt`, `repository` | reading a model from the repository |
//! | `served`, `request` | one loaded version; checking and decoding a request |
//! | `batcher`, `instance`, `batching` | queue, dynamic batcher, instance threads |
//! | `stats`, `stats_report` | statistics and their JSON/gRPC shapes |
//! | `typed_tensor`, `json_tensor`, `body`, `budget` | tensor data in gRPC lists and JSON; bounded bodies; the bytes-in-flight budget |
//!
//! # What a model's config.pbtxt may say
//!
//! The fields of `proto/model_config.proto`, with Triton's meaning: `name`,
//! `platform` (`onnxruntime_onnx` or empty), `backend` (`metal_mps`,
//! `onnxruntime` or empty), `version_policy` (latest / all / specific),
//! `max_batch_size`, `input`/`output` (`name`, `data_type`, `dims`; inputs
//! also `format`), `instance_group` (`name`, `kind`, `count`),
//! `dynamic_batching` (`preferred_batch_size`, `max_queue_delay_microseconds`,
//! `preserve_ordering`, `default_queue_policy`), `default_model_filename`
//! and `parameters` (the engine settings of `metal-mps-model-config`:
//! `engine`, `precision`, `max_pool_size`, `max_buffer_age`, `verbose`).
//! Any other field (`sequence_batching`, `ensemble_scheduling`, `reshape`,
//! `optimization`, ...) is refused at load with its name and line. A model
//! without config.pbtxt is auto-completed from its ONNX signature.
//!
//! # Protocol coverage
//!
//! Health, server and model metadata, inference (JSON, binary tensor data,
//! gRPC typed and raw contents), model configuration, statistics, model
//! repository (index, load with a JSON `config`, unload). Not implemented:
//! streaming inference, shared memory, classification, request/response
//! compression, trace and log settings, sequence batching and ensembles.

pub mod args;
mod batcher;
mod batching;
mod body;
mod budget;
mod codec;
mod config;
mod error;
mod grpc;
mod grpc_limits;
mod http;
mod http_infer;
mod http_serve;
mod instance;
mod json_tensor;
mod linger;
mod loader;
mod manager;
mod metrics;
mod pb;
mod pbtxt;
mod repository;
mod request;
mod served;
mod server;
mod serving_config;
mod stats;
mod stats_report;
mod typed_tensor;

pub use args::ServeArgs;
pub use manager::ControlMode;

/// The server name reported by server metadata.
pub const SERVER_NAME: &str = "metal-mps";
/// The server version reported by server metadata.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The protocol extensions this server implements (server metadata).
pub const EXTENSIONS: [&str; 6] = [
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "schedule_policy",
    "statistics",
    "parameters",
];

/// What every endpoint shares.
pub(crate) struct AppState {
    pub manager: manager::ModelManager,
    /// Largest request body / gRPC message.
    pub max_input_size: usize,
    /// Size, time and budget limits of HTTP bodies (the budget is shared
    /// with gRPC).
    pub body_limits: body::BodyLimits,
}

/// Runs the server until SIGINT or SIGTERM, then stops accepting requests,
/// lets in-flight ones finish (up to `--exit-timeout-secs`), unloads every
/// model and returns. Builds its own multi-threaded tokio runtime and
/// installs a `tracing` subscriber unless one is already set.
///
/// Fails when the repository is missing or a port cannot be bound.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_verbose);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("metal-mps-serve")
        .build()?;
    runtime.block_on(server::run(args))
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The embedding CLI may have installed a subscriber already: keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(verbose > 0)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
