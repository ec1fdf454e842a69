//! Time per operator, summed over the runs of every [`crate::CpuPlan`] in the
//! process while profiling is on (`metal-mps bench --profile`); the GPU engine
//! adds the time of each kernel it runs. Off, it costs one relaxed atomic load
//! per node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static ON: AtomicBool = AtomicBool::new(false);
static PER_NODE: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Option<HashMap<String, (Duration, u64)>>> = Mutex::new(None);

/// Starts (or stops) recording, and forgets what was recorded.
pub fn set_enabled(on: bool) {
    *TOTALS.lock().unwrap_or_else(|e| e.into_inner()) = None;
    ON.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Whether the CPU engine records each node on its own (under its ONNX
/// name) rather than each operator type.
pub fn set_per_node(on: bool) {
    PER_NODE.store(on, Ordering::Relaxed);
}

pub fn per_node() -> bool {
    PER_NODE.load(Ordering::Relaxed)
}

/// Adds one execution of an operator named `op` that took `took`.
pub fn record(op: &str, took: Duration) {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let entry = totals
        .get_or_insert_with(HashMap::new)
        .entry(op.to_string())
        .or_default();
    entry.0 += took;
    entry.1 += 1;
}

/// What was recorded: per operator, the total time and the number of
/// executions, longest total first.
pub fn report() -> Vec<(String, Duration, u64)> {
    let totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = totals
        .iter()
        .flatten()
        .map(|(op, &(took, count))| (op.clone(), took, count))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}
