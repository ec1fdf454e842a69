//! Reporting an instance's memory to Triton (`TRITONBACKEND_ModelInstanceReportMemoryUsage`).
//!
//! An instance holds its engine's memory (weights, tensors in use and the pool
//! of reusable buffers) and its input staging buffers. Engine memory is reported
//! as GPU memory for the GPU engine and CPU memory for the CPU engine; staging
//! is always CPU memory. Triton shows the figures in the model's statistics
//! (`memory_usage`). Reports are sent at initialization and whenever the total
//! changes after an execute call.

use crate::error::{tri, Result};
use crate::instance::InstanceState;
use crate::{ffi, log};
use metal_mps::Device;

/// Bytes held by the instance, by memory type: `(cpu, gpu)`.
pub fn usage(state: &InstanceState) -> (u64, u64) {
    let stats = state.model.memory_stats();
    let engine = stats.bytes_weights + stats.bytes_in_use + stats.bytes_pooled;
    let staging: u64 = state
        .staging
        .iter()
        .map(|s| s.capacity_bytes() as u64)
        .sum();
    match state.model.device() {
        Device::Gpu => (staging, engine),
        Device::Cpu => (staging + engine, 0),
    }
}

/// Reports the instance's memory when it changed since the last report. Failures are logged only.
pub fn report(instance: *mut ffi::TRITONBACKEND_ModelInstance, state: &mut InstanceState) {
    let (cpu, gpu) = usage(state);
    if cpu + gpu == state.reported_bytes {
        return;
    }
    match send(instance, cpu, gpu) {
        Ok(()) => state.reported_bytes = cpu + gpu,
        Err(e) => log::warn(&format!("instance '{}': {e}", state.name)),
    }
}

fn send(instance: *mut ffi::TRITONBACKEND_ModelInstance, cpu: u64, gpu: u64) -> Result<()> {
    let entries = [
        (ffi::TRITONSERVER_MEMORY_CPU, cpu),
        (ffi::TRITONSERVER_MEMORY_GPU, gpu),
    ];
    let mut attrs: Vec<*mut ffi::TRITONSERVER_BufferAttributes> = Vec::with_capacity(entries.len());
    let result = (|| {
        for (memory_type, bytes) in entries.into_iter().filter(|e| e.1 > 0) {
            let mut a = std::ptr::null_mut();
            tri!(
                "creating buffer attributes",
                ffi::TRITONSERVER_BufferAttributesNew(&mut a)
            )?;
            attrs.push(a);
            tri!(
                "setting the memory type",
                ffi::TRITONSERVER_BufferAttributesSetMemoryType(a, memory_type)
            )?;
            tri!(
                "setting the memory type id",
                ffi::TRITONSERVER_BufferAttributesSetMemoryTypeId(a, 0)
            )?;
            tri!(
                "setting the byte size",
                ffi::TRITONSERVER_BufferAttributesSetByteSize(a, bytes as usize)
            )?;
        }
        tri!(
            "reporting memory usage",
            ffi::TRITONBACKEND_ModelInstanceReportMemoryUsage(
                instance,
                attrs.as_mut_ptr(),
                attrs.len() as u32
            )
        )
    })();
    for a in attrs {
        // SAFETY: each was created above and is freed once; Triton copied what it needs.
        let _ = tri!(
            "freeing buffer attributes",
            ffi::TRITONSERVER_BufferAttributesDelete(a)
        );
    }
    result
}
