//! Timestamps and statistics reports for Triton's `/v2/models/<m>/stats`.

use crate::error::tri;
use crate::{ffi, log};

/// Now, in nanoseconds of `CLOCK_MONOTONIC` (the clock of C++'s `steady_clock`, which Triton uses).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The four timestamps Triton's statistics take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    pub exec_start: u64,
    pub compute_start: u64,
    pub compute_end: u64,
    pub exec_end: u64,
}

/// Reports one request's statistics (before it is released). Failures are logged only.
pub fn report_request(
    instance: *mut ffi::TRITONBACKEND_ModelInstance,
    request: *mut ffi::TRITONBACKEND_Request,
    success: bool,
    t: Times,
) {
    if let Err(e) = tri!(
        "reporting request statistics",
        ffi::TRITONBACKEND_ModelInstanceReportStatistics(
            instance,
            request,
            success,
            t.exec_start,
            t.compute_start,
            t.compute_end,
            t.exec_end
        )
    ) {
        log::warn(&e.message);
    }
}

/// Reports one execution of `batch_size` items. Failures are logged only.
pub fn report_batch(instance: *mut ffi::TRITONBACKEND_ModelInstance, batch_size: u64, t: Times) {
    if let Err(e) = tri!(
        "reporting batch statistics",
        ffi::TRITONBACKEND_ModelInstanceReportBatchStatistics(
            instance,
            batch_size,
            t.exec_start,
            t.compute_start,
            t.compute_end,
            t.exec_end
        )
    ) {
        log::warn(&e.message);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic_clock_advances() {
        let a = super::now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::now_ns();
        assert!(b >= a + 2_000_000, "{a} {b}");
    }
}
