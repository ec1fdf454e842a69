//! GPU time per kernel while profiling is on (`metal-mps bench --profile`):
//! each dispatch gets its own compute pass with timestamps at its start and
//! end, read back when the inference is submitted, and added to the process's
//! profile (`metal_mps_cpu::profile`) as `gpu <pipeline> <grid>`. Needs the
//! adapter's `TIMESTAMP_QUERY`; without it nothing is recorded. Profiling
//! makes every inference wait for its timestamps, so it is for finding where
//! time goes, not for latency.

use std::time::Duration;

use crate::context::GpuContext;
use crate::ops::Prepared;
use crate::transfer::{self, Download};
use metal_mps_ir::Result;

/// wgpu's limit on the queries of one set; dispatches past half of it run untimed.
const MAX_QUERIES: u32 = 4096;

/// The timestamps of one inference.
pub struct KernelTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    /// The profile key of each timed dispatch, in query-pair order.
    names: Vec<String>,
}

impl KernelTimer {
    /// A timer for the dispatches of one inference (`prepared`, per step),
    /// when profiling is on and the adapter can write timestamps.
    pub fn start(ctx: &GpuContext, prepared: &[Vec<Prepared>]) -> Option<KernelTimer> {
        if !metal_mps_cpu::profile::enabled() || !ctx.caps.timestamps {
            return None;
        }
        let dispatches = prepared.iter().map(Vec::len).sum::<usize>();
        if dispatches == 0 {
            return None;
        }
        let count = (2 * dispatches as u32).min(MAX_QUERIES);
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("metal_mps kernel timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolved = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("metal_mps resolved timestamps"),
            size: u64::from(count) * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(KernelTimer {
            queries,
            resolved,
            names: Vec::new(),
        })
    }

    /// The timestamp writes of the pass that will run `p`, or `None` once the
    /// query set is full.
    pub fn next(&mut self, p: &Prepared) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let first = 2 * self.names.len() as u32;
        if first + 2 > self.queries.count() {
            return None;
        }
        let [x, y, z] = p.groups;
        self.names
            .push(format!("gpu {} [{x}x{y}x{z}]", p.pipeline.label));
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(first),
            end_of_pass_write_index: Some(first + 1),
        })
    }

    /// Records the resolution of the timestamps and their copy for reading.
    pub fn finish(
        self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<Timestamps> {
        let used = 2 * self.names.len() as u32;
        if used > 0 {
            encoder.resolve_query_set(&self.queries, 0..used, &self.resolved, 0);
        }
        let download = transfer::record_download(ctx, encoder, &self.resolved, used as usize * 8)?;
        Ok(Timestamps {
            names: self.names,
            download,
        })
    }
}

/// Timestamps recorded for reading.
pub struct Timestamps {
    names: Vec<String>,
    download: Download,
}

impl Timestamps {
    /// Waits for `submission` and adds each kernel's time to the profile.
    pub fn record(self, ctx: &GpuContext, submission: &wgpu::SubmissionIndex) -> Result<()> {
        let bytes = self.download.read(ctx, submission)?;
        let ns_per_tick = f64::from(ctx.queue.get_timestamp_period());
        for (name, pair) in self.names.iter().zip(bytes.chunks_exact(16)) {
            let tick = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            let ticks = tick(&pair[8..]).saturating_sub(tick(&pair[..8]));
            let took = Duration::from_nanos((ticks as f64 * ns_per_tick) as u64);
            metal_mps_cpu::profile::record(name, took);
        }
        Ok(())
    }
}
