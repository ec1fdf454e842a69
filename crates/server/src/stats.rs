//! Per-version inference statistics, as Triton's statistics extension
//! reports them, and the source of the Prometheus metrics.
//!
//! Counters are atomics updated by the request handlers (per request) and
//! the instance threads (per execution); a snapshot is read without
//! stopping either.

use crate::batcher::Timings;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count of events and their cumulative duration.
#[derive(Default, Debug)]
pub struct StatDuration {
    count: AtomicU64,
    ns: AtomicU64,
}

impl StatDuration {
    pub fn add(&self, d: Duration) {
        self.count.fetch_add(1, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Relaxed), self.ns.load(Relaxed))
    }
}

/// Why a request failed, the `reason` label of `nv_inference_request_failure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Refused by the scheduler: queue full or queue timeout.
    Rejected,
    /// The engine failed while running the model.
    Backend,
    /// Anything else (the request did not match the model).
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 3] = [Self::Rejected, Self::Backend, Self::Other];
    pub fn label(self) -> &'static str {
        match self {
            Self::Rejected => "REJECTED",
            Self::Backend => "BACKEND",
            Self::Other => "OTHER",
        }
    }
}

/// The statistics of one batch size.
#[derive(Default, Debug)]
pub struct BatchStat {
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
}

/// Statistics of one loaded model version.
#[derive(Default, Debug)]
pub struct VersionStats {
    pub success: StatDuration,
    pub fail: StatDuration,
    pub queue: StatDuration,
    pub compute_input: StatDuration,
    pub compute_infer: StatDuration,
    pub compute_output: StatDuration,
    /// Inferences (batch elements) of successful requests.
    pub inference_count: AtomicU64,
    /// Model executions.
    pub execution_count: AtomicU64,
    /// Milliseconds since the Unix epoch of the last inference.
    pub last_inference_ms: AtomicU64,
    failures: [AtomicU64; 3],
    batches: Mutex<BTreeMap<u64, BatchStat>>,
}

impl VersionStats {
    /// A request that finished well after `total` (arrival to response).
    pub fn record_success(&self, total: Duration, batch: usize, t: &Timings) {
        self.success.add(total);
        self.queue.add(t.queue);
        self.compute_input.add(t.compute_input);
        self.compute_infer.add(t.compute_infer);
        self.compute_output.add(t.compute_output);
        self.inference_count.fetch_add(batch as u64, Relaxed);
        self.touch();
    }

    /// A request that failed after `total`.
    pub fn record_failure(&self, total: Duration, reason: FailureReason) {
        self.fail.add(total);
        self.failures[reason as usize].fetch_add(1, Relaxed);
        self.touch();
    }

    /// One model execution over a batch of `batch_size` elements.
    pub fn record_execution(&self, batch_size: usize, t: &Timings) {
        self.execution_count.fetch_add(1, Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let b = batches.entry(batch_size as u64).or_default();
        b.compute_input.add(t.compute_input);
        b.compute_infer.add(t.compute_infer);
        b.compute_output.add(t.compute_output);
    }

    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.failures[reason as usize].load(Relaxed)
    }

    /// `(batch_size, [compute_input, compute_infer, compute_output])` per
    /// batch size seen, each as `(count, ns)`.
    pub fn batch_stats(&self) -> Vec<(u64, [(u64, u64); 3])> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches
            .iter()
            .map(|(&size, b)| {
                (
                    size,
                    [
                        b.compute_input.get(),
                        b.compute_infer.get(),
                        b.compute_output.get(),
                    ],
                )
            })
            .collect()
    }

    fn touch(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_inference_ms.store(ms, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_add_up() {
        let s = VersionStats::default();
        let t = Timings {
            queue: Duration::from_micros(5),
            ..Timings::default()
        };
        s.record_success(Duration::from_micros(10), 3, &t);
        s.record_execution(3, &t);
        s.record_failure(Duration::from_micros(1), FailureReason::Rejected);
        assert_eq!(s.success.get(), (1, 10_000));
        assert_eq!(s.queue.get(), (1, 5_000));
        assert_eq!(s.inference_count.load(Relaxed), 3);
        assert_eq!(s.failures(FailureReason::Rejected), 1);
        assert_eq!(s.batch_stats()[0].0, 3);
        assert!(s.last_inference_ms.load(Relaxed) > 0);
    }
}
