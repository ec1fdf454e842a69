//! The C allocator's settings for a process that runs models.
//!
//! glibc's `malloc` gives memory back to the kernel as it is freed: blocks
//! above the mmap threshold (128 KiB at first) are unmapped, the main heap is
//! trimmed, and a thread's arena drops a whole sub-heap once only free space
//! is left in it. A model whose output is a few megabytes (a feature map, a
//! decoded request) then gets fresh pages on every run, and the kernel's page
//! faults on them can cost more than the model: 3.4 ms against 0.8 ms for one
//! 5 MB depthwise convolution. Keeping freed memory makes the next run and
//! the next request reuse the same pages, as onnxruntime's arena does.

/// Makes freed memory stay in the process for reuse (blocks of up to 32 MiB,
/// up to 32 MiB of free space per heap kept, 256 MiB of free space at the
/// main heap's top), unless the user set glibc's `MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_TRIM_THRESHOLD_` or `MALLOC_TOP_PAD_`. Call it before starting
/// threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    let settings = [
        // glibc's largest mmap threshold on 64-bit targets.
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 256 << 20),
        // What a thread's arena keeps free rather than unmap a sub-heap.
        ("MALLOC_TOP_PAD_", libc::M_TOP_PAD, 32 << 20),
    ];
    for (variable, parameter, value) in settings {
        if std::env::var_os(variable).is_none() {
            // SAFETY: `mallopt` only changes the allocator's parameters.
            unsafe { libc::mallopt(parameter, value) };
        }
    }
}

/// Other allocators keep or cache freed blocks on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

/// Page faults the process has taken so far (those served without I/O),
/// where the OS counts them.
pub fn page_faults() -> Option<i64> {
    #[cfg(unix)]
    {
        // SAFETY: an all-zero rusage is valid, and getrusage fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            return Some(usage.ru_minflt as i64);
        }
    }
    None
}
