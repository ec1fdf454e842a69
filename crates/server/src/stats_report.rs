//! Statistics of served versions in the two shapes clients read: Triton's
//! JSON (HTTP) and the `ModelStatistics` message (gRPC).

use crate::pb;
use crate::served::ServedVersion;
use crate::stats::StatDuration;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

fn duration_json((count, ns): (u64, u64)) -> Value {
    json!({ "count": count, "ns": ns })
}

fn duration_pb((count, ns): (u64, u64)) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration { count, ns })
}

/// The eight durations of `inference_stats`, in Triton's order.
fn inference_durations(v: &ServedVersion) -> [(&'static str, (u64, u64)); 8] {
    let s = &v.stats;
    let zero = StatDuration::default();
    [
        ("success", s.success.get()),
        ("fail", s.fail.get()),
        ("queue", s.queue.get()),
        ("compute_input", s.compute_input.get()),
        ("compute_infer", s.compute_infer.get()),
        ("compute_output", s.compute_output.get()),
        ("cache_hit", zero.get()),
        ("cache_miss", zero.get()),
    ]
}

/// One entry of `model_stats` as Triton's HTTP endpoint writes it.
pub fn model_stats_json(name: &str, v: &ServedVersion) -> Value {
    let s = &v.stats;
    let inference: serde_json::Map<String, Value> = inference_durations(v)
        .into_iter()
        .map(|(k, d)| (k.to_string(), duration_json(d)))
        .collect();
    let batches: Vec<Value> = s
        .batch_stats()
        .into_iter()
        .map(|(size, [i, c, o])| {
            json!({
                "batch_size": size,
                "compute_input": duration_json(i),
                "compute_infer": duration_json(c),
                "compute_output": duration_json(o),
            })
        })
        .collect();
    let memory: Vec<Value> = v
        .memory()
        .into_iter()
        .enumerate()
        .map(|(i, (kind, m))| json!({ "type": kind, "id": i, "byte_size": m.bytes_in_use }))
        .collect();
    json!({
        "name": name,
        "version": v.version.to_string(),
        "last_inference": s.last_inference_ms.load(Relaxed),
        "inference_count": s.inference_count.load(Relaxed),
        "execution_count": s.execution_count.load(Relaxed),
        "inference_stats": inference,
        "response_stats": {},
        "batch_stats": batches,
        "memory_usage": memory,
    })
}

/// One `ModelStatistics` message.
pub fn model_stats_proto(name: &str, v: &ServedVersion) -> pb::ModelStatistics {
    let s = &v.stats;
    let [success, fail, queue, compute_input, compute_infer, compute_output, cache_hit, cache_miss] =
        inference_durations(v).map(|(_, d)| duration_pb(d));
    pb::ModelStatistics {
        name: name.to_string(),
        version: v.version.to_string(),
        last_inference: s.last_inference_ms.load(Relaxed),
        inference_count: s.inference_count.load(Relaxed),
        execution_count: s.execution_count.load(Relaxed),
        inference_stats: Some(pb::InferStatistics {
            success,
            fail,
            queue,
            compute_input,
            compute_infer,
            compute_output,
            cache_hit,
            cache_miss,
        }),
        batch_stats: s
            .batch_stats()
            .into_iter()
            .map(|(batch_size, [i, c, o])| pb::InferBatchStatistics {
                batch_size,
                compute_input: duration_pb(i),
                compute_infer: duration_pb(c),
                compute_output: duration_pb(o),
            })
            .collect(),
        memory_usage: v
            .memory()
            .into_iter()
            .enumerate()
            .map(|(i, (kind, m))| pb::MemoryUsage {
                r#type: kind.to_string(),
                id: i as i64,
                byte_size: m.bytes_in_use,
            })
            .collect(),
        response_stats: Default::default(),
    }
}
