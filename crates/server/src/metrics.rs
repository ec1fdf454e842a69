//! Prometheus metrics at `/metrics` on their own port, with Triton's metric
//! names and labels (`model`, `version`), plus the engines' memory pools.
//!
//! Rendered on each scrape from the same counters the statistics extension
//! reports, so the two always agree.

use crate::served::ServedVersion;
use crate::stats::FailureReason;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The metrics endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    let served = s.manager.served(None, None).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&served),
    )
}

/// One per-version metric.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&ServedVersion) -> u64,
}

/// Per-version metrics, Triton's first.
const FAMILIES: [Family; 11] = [
    Family {
        name: "nv_inference_request_success",
        kind: "counter",
        help: "Number of successful inference requests, all batch sizes",
        value: |v| v.stats.success.get().0,
    },
    Family {
        name: "nv_inference_count",
        kind: "counter",
        help: "Number of inferences performed (does not include cached requests)",
        value: |v| v.stats.inference_count.load(Relaxed),
    },
    Family {
        name: "nv_inference_exec_count",
        kind: "counter",
        help: "Number of model executions performed (does not include cached requests)",
        value: |v| v.stats.execution_count.load(Relaxed),
    },
    Family {
        name: "nv_inference_request_duration_us",
        kind: "counter",
        help: "Cumulative inference request duration in microseconds (includes cached requests)",
        value: |v| (v.stats.success.get().1 + v.stats.fail.get().1) / 1000,
    },
    Family {
        name: "nv_inference_queue_duration_us",
        kind: "counter",
        help: "Cumulative inference queuing duration in microseconds (includes cached requests)",
        value: |v| v.stats.queue.get().1 / 1000,
    },
    Family {
        name: "nv_inference_compute_input_duration_us",
        kind: "counter",
        help: "Cumulative compute input duration in microseconds (does not include cached requests)",
        value: |v| v.stats.compute_input.get().1 / 1000,
    },
    Family {
        name: "nv_inference_compute_infer_duration_us",
        kind: "counter",
        help: "Cumulative compute inference duration in microseconds (does not include cached requests)",
        value: |v| v.stats.compute_infer.get().1 / 1000,
    },
    Family {
        name: "nv_inference_compute_output_duration_us",
        kind: "counter",
        help: "Cumulative inference compute output duration in microseconds (does not include cached requests)",
        value: |v| v.stats.compute_output.get().1 / 1000,
    },
    Family {
        name: "nv_inference_pending_request_count",
        kind: "gauge",
        help: "Instantaneous number of pending requests awaiting execution per-model.",
        value: |v| v.pending() as u64,
    },
    Family {
        name: "metal_mps_memory_in_use_bytes",
        kind: "gauge",
        help: "Bytes the model's engine instances hold in live tensors",
        value: |v| v.memory().iter().map(|(_, m)| m.bytes_in_use).sum(),
    },
    Family {
        name: "metal_mps_memory_pooled_bytes",
        kind: "gauge",
        help: "Bytes the model's engine instances keep pooled for reuse",
        value: |v| v.memory().iter().map(|(_, m)| m.bytes_pooled).sum(),
    },
];

/// The Prometheus text exposition of every served version.
pub fn render(served: &[(String, Arc<ServedVersion>)]) -> String {
    let mut out = String::new();
    let labels = |name: &str, v: &ServedVersion| {
        format!("model=\"{}\",version=\"{}\"", escape(name), v.version)
    };
    for Family {
        name: metric,
        kind,
        help,
        value,
    } in FAMILIES
    {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for (name, v) in served {
            let _ = writeln!(out, "{metric}{{{}}} {}", labels(name, v), value(v));
        }
        if metric == "nv_inference_request_success" {
            let f = "nv_inference_request_failure";
            let _ = writeln!(out, "# HELP {f} Number of failed inference requests, all batch sizes\n# TYPE {f} counter");
            for (name, v) in served {
                for r in FailureReason::ALL {
                    let _ = writeln!(
                        out,
                        "{f}{{{},reason=\"{}\"}} {}",
                        labels(name, v),
                        r.label(),
                        v.stats.failures(r)
                    );
                }
            }
        }
    }
    let load = "nv_model_load_duration_secs";
    let _ = writeln!(
        out,
        "# HELP {load} Model load time in seconds\n# TYPE {load} gauge"
    );
    for (name, v) in served {
        let _ = writeln!(
            out,
            "{load}{{{}}} {}",
            labels(name, v),
            v.load_duration.as_secs_f64()
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
