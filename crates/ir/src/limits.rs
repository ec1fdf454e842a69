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

use crate::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

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
    fn tensor_cap_refuses_beyond_it() {
        let max = max_tensor_bytes();
        assert!(check_tensor_bytes(max).is_ok());
        let err = check_tensor_bytes(max + 1).unwrap_err().to_string();
        assert!(err.contains(TENSOR_ENV), "{err}");
    }
}
