//! Process-wide caps on memory sized by model data.
//!
//! A model declares its sizes (initializer dims, shape inputs, attributes) and a
//! hostile or broken one can declare sizes far beyond the machine. Two caps turn
//! such a model into an [`Error::TooLarge`] instead of an aborted process:
//!
//! - one tensor: every [`crate::Storage`] allocation is checked against
//!   [`max_tensor_bytes`] (default: half the machine's physical memory;
//!   `METAL_MPS_MAX_TENSOR_BYTES`, or `--max-tensor-bytes` on the CLI);
//! - one model's plan: the weights plus the static memory plan's slots, checked
//!   at load against [`max_plan_bytes`] (default: the machine's physical memory;
//!   `METAL_MPS_MAX_PLAN_BYTES`, or `--max-plan-bytes`).
//!
//! The caps are process-wide because allocations happen deep inside kernels
//! that run for every model alike; [`set_max_tensor_bytes`] and
//! [`set_max_plan_bytes`] change them (a server sets them once at start).
//!
//! Time is bounded too: one run of a model may take at most [`max_run_time`]
//! (default 10 minutes; `METAL_MPS_MAX_RUN_SECS`, or `--max-run-secs`; 0 is no
//! limit). Engines run each model run inside [`within_run_time`], and
//! [`check_run_time`] is called between nodes and between iterations of Loop,
//! Scan and SequenceMap, so a model that loops (nearly) forever ends in
//! [`Error::TimedOut`]. One kernel is not interrupted: its size is bounded by
//! the tensor cap.

use crate::{Error, Result};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `0` means "not set yet: use the environment, then the default".
static MAX_TENSOR: AtomicUsize = AtomicUsize::new(0);
static MAX_PLAN: AtomicUsize = AtomicUsize::new(0);

pub const TENSOR_ENV: &str = "METAL_MPS_MAX_TENSOR_BYTES";
pub const PLAN_ENV: &str = "METAL_MPS_MAX_PLAN_BYTES";

/// The machine's physical memory in bytes (4 GiB when it cannot be read).
pub fn physical_memory() -> usize {
    static MEM: OnceLock<usize> = OnceLock::new();
    *MEM.get_or_init(|| {
        // SAFETY: sysconf only reads system constants.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            (pages as usize).saturating_mul(page as usize)
        } else {
            4 << 30
        }
    })
}

fn resolve(cell: &AtomicUsize, env: &str, default: fn() -> usize) -> usize {
    match cell.load(Ordering::Relaxed) {
        0 => {
            let v = std::env::var(env)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .filter(|&v| v > 0)
                .unwrap_or_else(default);
            cell.store(v, Ordering::Relaxed);
            v
        }
        v => v,
    }
}

/// The largest tensor, in bytes, that may be allocated.
pub fn max_tensor_bytes() -> usize {
    resolve(&MAX_TENSOR, TENSOR_ENV, || physical_memory() / 2)
}

/// The largest plan (weights plus static intermediates), in bytes, a model may have.
pub fn max_plan_bytes() -> usize {
    resolve(&MAX_PLAN, PLAN_ENV, physical_memory)
}

/// Sets the tensor cap (`0` restores the environment's or the default).
pub fn set_max_tensor_bytes(bytes: usize) {
    MAX_TENSOR.store(bytes, Ordering::Relaxed);
}

/// Sets the plan cap (`0` restores the environment's or the default).
pub fn set_max_plan_bytes(bytes: usize) {
    MAX_PLAN.store(bytes, Ordering::Relaxed);
}

/// Refuses a tensor of `bytes` beyond the cap.
pub fn check_tensor_bytes(bytes: usize) -> Result<()> {
    let max = max_tensor_bytes();
    if bytes > max {
        return Err(Error::TooLarge(format!(
            "a tensor of {bytes} bytes exceeds the limit of {max} bytes per tensor \
             (set {TENSOR_ENV} or --max-tensor-bytes to change it)"
        )));
    }
    Ok(())
}

/// Refuses a model whose weights plus static intermediates take `bytes` beyond the cap.
pub fn check_plan_bytes(bytes: usize) -> Result<()> {
    let max = max_plan_bytes();
    if bytes > max {
        return Err(Error::TooLarge(format!(
            "the model needs {bytes} bytes of weights and intermediates, beyond the limit of \
             {max} bytes per model (set {PLAN_ENV} or --max-plan-bytes to change it)"
        )));
    }
    Ok(())
}

pub const RUN_ENV: &str = "METAL_MPS_MAX_RUN_SECS";
const DEFAULT_RUN_SECS: u64 = 600;
/// `u64::MAX` means "not set yet"; `0` means no limit.
static MAX_RUN_SECS: AtomicU64 = AtomicU64::new(u64::MAX);

thread_local! {
    /// When the run on this thread must end (`None`: no limit, or no run).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The longest one run may take; `None` is no limit.
pub fn max_run_time() -> Option<Duration> {
    let secs = match MAX_RUN_SECS.load(Ordering::Relaxed) {
        u64::MAX => {
            let v = std::env::var(RUN_ENV)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(DEFAULT_RUN_SECS);
            MAX_RUN_SECS.store(v, Ordering::Relaxed);
            v
        }
        v => v,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Sets the longest run in seconds (`0`: no limit).
pub fn set_max_run_secs(secs: u64) {
    MAX_RUN_SECS.store(secs.min(u64::MAX - 1), Ordering::Relaxed);
}

/// Runs `f` as one model run on this thread: [`check_run_time`] inside it
/// fails once [`max_run_time`] has passed (or an enclosing run's earlier
/// deadline).
pub fn within_run_time<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.set(self.0);
        }
    }
    let outer = DEADLINE.get();
    let mine = max_run_time().and_then(|d| Instant::now().checked_add(d));
    DEADLINE.set(match (outer, mine) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    });
    let _restore = Restore(outer);
    f()
}

/// Fails with [`Error::TimedOut`] once the run on this thread is past its deadline.
pub fn check_run_time() -> Result<()> {
    match DEADLINE.get() {
        Some(d) if Instant::now() > d => Err(Error::TimedOut(format!(
            "the run took longer than the limit of {} s per run (set {RUN_ENV} or \
             --max-run-secs to change it; 0 is no limit)",
            max_run_time().map_or(0, |t| t.as_secs())
        ))),
        _ => Ok(()),
    }
}

/// A vector of `len` default values whose size comes from model data:
/// refused beyond the tensor cap, and an allocation failure is an error, not an abort.
pub fn try_vec<T: Clone + Default>(len: usize) -> Result<Vec<T>> {
    let bytes = len
        .checked_mul(std::mem::size_of::<T>())
        .ok_or_else(|| Error::TooLarge(format!("{len} elements")))?;
    check_tensor_bytes(bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory { bytes })?;
    v.resize(len, T::default());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_memory_is_read() {
        assert!(physical_memory() >= 64 << 20);
    }

    #[test]
    fn runs_end_at_their_deadline_and_nest() {
        set_max_run_secs(3600);
        assert!(check_run_time().is_ok(), "no run, no deadline");
        within_run_time(|| {
            assert!(check_run_time().is_ok());
            let outer = DEADLINE.get();
            // An inner run keeps the earlier (outer) deadline, and restores it after.
            within_run_time(|| assert_eq!(DEADLINE.get(), outer));
            assert_eq!(DEADLINE.get(), outer);
            DEADLINE.set(Some(Instant::now() - Duration::from_millis(1)));
            let err = check_run_time().unwrap_err();
            assert!(matches!(err, Error::TimedOut(_)) && err.to_string().contains(RUN_ENV));
        });
        assert!(DEADLINE.get().is_none());
        set_max_run_secs(0);
        assert_eq!(max_run_time(), None);
    }

    #[test]
    fn tensor_cap_refuses_beyond_it() {
        let max = max_tensor_bytes();
        assert!(check_tensor_bytes(max).is_ok());
        let err = check_tensor_bytes(max + 1).unwrap_err().to_string();
        assert!(err.contains(TENSOR_ENV), "{err}");
    }
}
