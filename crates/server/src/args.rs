//! Command-line options of `metal-mps serve`, named after tritonserver's.

use crate::manager::ControlMode;
use clap::{ArgAction, Args};
use std::path::PathBuf;

/// Serve a Triton model repository over Triton's HTTP/REST and gRPC
/// protocols (KServe v2 with Triton's extensions).
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// The model repository: <repo>/<model>/config.pbtxt and <repo>/<model>/<version>/model.onnx.
    #[arg(long, visible_alias = "model-store", value_name = "DIR")]
    pub model_repository: PathBuf,

    /// Serve HTTP/REST.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub allow_http: bool,
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub http_address: String,
    /// 0 picks a free port (logged at start).
    #[arg(long, default_value_t = 8000, value_name = "PORT")]
    pub http_port: u16,

    /// Serve gRPC.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub allow_grpc: bool,
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub grpc_address: String,
    #[arg(long, default_value_t = 8001, value_name = "PORT")]
    pub grpc_port: u16,

    /// Serve Prometheus metrics at /metrics.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub allow_metrics: bool,
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub metrics_address: String,
    #[arg(long, default_value_t = 8002, value_name = "PORT")]
    pub metrics_port: u16,

    /// none: load every model at start. explicit: load only --load-model at
    /// start, then on load/unload requests. poll: load every model and
    /// follow the repository's changes every --repository-poll-secs.
    #[arg(long, value_enum, default_value = "none", value_name = "MODE")]
    pub model_control_mode: ControlMode,
    /// Model to load at start in explicit mode (repeatable; "*" = all).
    #[arg(long = "load-model", value_name = "NAME")]
    pub load_model: Vec<String>,
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub repository_poll_secs: u64,

    /// Seconds to let in-flight requests finish on SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub exit_timeout_secs: u64,
    /// Ready only when every model that should be loaded is ready.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub strict_readiness: bool,

    /// Largest HTTP request body and gRPC message, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    pub http_max_input_size: usize,
    /// Budget of request bytes in flight, server-wide (HTTP bodies and gRPC
    /// inference messages): a request that does not fit while others hold it
    /// is answered 429 / RESOURCE_EXHAUSTED. At least --http-max-input-size.
    #[arg(long, default_value_t = 1024 * 1024 * 1024, value_name = "BYTES")]
    pub max_inflight_bytes: usize,
    /// Seconds a client has to send a request's headers (also how long an
    /// idle keep-alive HTTP connection stays open). A gRPC connection must
    /// send its first bytes within it, and HTTP/2 pings at this interval close
    /// gRPC connections whose peer stops answering.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub http_header_timeout_secs: u64,
    /// Seconds a client has to send a request's body once its handler runs;
    /// a slower body is answered 408 and its connection closed. A gRPC
    /// request message that is not whole within it ends the call with
    /// DEADLINE_EXCEEDED.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub http_body_timeout_secs: u64,
    /// Most HTTP connections open at once; more wait to be accepted.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub http_max_connections: usize,
    /// Queue bound per model version when its config sets no max_queue_size;
    /// a full queue answers 503 / UNAVAILABLE.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_queue_size: usize,
    /// max_batch_size auto-complete gives models that can batch.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub default_max_batch_size: i64,

    /// Log verbosity: 0 info, 1 debug, 2 and up trace (RUST_LOG overrides).
    #[arg(long, default_value_t = 0, value_name = "LEVEL")]
    pub log_verbose: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn tritonserver_style_flags_parse() {
        let cli = Cli::parse_from([
            "x",
            "--model-repository=/r",
            "--http-port=9000",
            "--allow-grpc=false",
            "--model-control-mode=explicit",
            "--load-model=a",
            "--load-model=b",
            "--log-verbose=1",
        ]);
        let a = cli.serve;
        assert_eq!(a.model_repository, PathBuf::from("/r"));
        assert_eq!(
            (a.http_port, a.grpc_port, a.allow_grpc),
            (9000, 8001, false)
        );
        assert_eq!(a.model_control_mode, ControlMode::Explicit);
        assert_eq!(a.load_model, vec!["a", "b"]);
        assert_eq!(a.http_address, "127.0.0.1");
    }
}
