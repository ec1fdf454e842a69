//! Explicit transfers between host memory and the device.
//!
//! Uploads go through the queue's staging (`write_buffer`); downloads copy into
//! a pooled mappable buffer in the same command encoder as the work that
//! produced the data, then map it once the submission finished.

use crate::pool::{BufferClass, PooledBuffer};
use crate::GpuContext;
use metal_mps_ir::{Error, Result};

/// Sizes of copies and writes must be multiples of this.
pub const ALIGN: u64 = wgpu::COPY_BUFFER_ALIGNMENT;

/// `n` rounded up to [`ALIGN`], at least [`ALIGN`].
pub fn aligned(n: u64) -> u64 {
    n.max(1).div_ceil(ALIGN) * ALIGN
}

/// Writes `bytes` at the start of `buffer` (padded to [`ALIGN`]).
pub fn write(ctx: &GpuContext, buffer: &wgpu::Buffer, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if (bytes.len() as u64).is_multiple_of(ALIGN) {
        ctx.queue.write_buffer(buffer, 0, bytes);
    } else {
        let mut padded = bytes.to_vec();
        padded.resize(aligned(bytes.len() as u64) as usize, 0);
        ctx.queue.write_buffer(buffer, 0, &padded);
    }
}

/// A pooled storage buffer holding `bytes`.
pub fn upload(ctx: &GpuContext, bytes: &[u8]) -> Result<PooledBuffer> {
    let b = ctx
        .pool
        .acquire(BufferClass::Storage, aligned(bytes.len() as u64))?;
    write(ctx, &b, bytes);
    Ok(b)
}

/// A download recorded in a command encoder, read after its submission.
pub struct Download {
    staging: PooledBuffer,
    len: usize,
}

/// Records the copy of the first `len` bytes of `src` into a staging buffer.
/// `src` must hold at least `len` rounded up to [`ALIGN`] bytes.
pub fn record_download(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    len: usize,
) -> Result<Download> {
    let size = aligned(len as u64);
    let staging = ctx.pool.acquire(BufferClass::Readback, size)?;
    if len > 0 {
        encoder.copy_buffer_to_buffer(src, 0, &staging, 0, size);
    }
    Ok(Download { staging, len })
}

impl Download {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waits for `submission` and copies the bytes into `dst` (`len` bytes).
    pub fn read_into(
        self,
        ctx: &GpuContext,
        submission: &wgpu::SubmissionIndex,
        dst: &mut [u8],
    ) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        if dst.len() != self.len {
            return Err(Error::Device(format!(
                "download of {} bytes into {} bytes",
                self.len,
                dst.len()
            )));
        }
        let size = aligned(self.len as u64);
        let slice = self.staging.slice(..size);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        ctx.wait_for(submission.clone())?;
        let mapped = match rx.try_recv() {
            Ok(r) => r,
            // The callback runs inside a poll; another thread's poll may hold it.
            Err(_) => {
                ctx.wait_idle()?;
                rx.recv()
                    .map_err(|_| Error::Device("the download was dropped".into()))?
            }
        };
        mapped.map_err(|e| Error::Device(format!("mapping a download failed: {e}")))?;
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Device(format!("reading a download failed: {e}")))?;
            dst.copy_from_slice(&view[..self.len]);
        }
        self.staging.unmap();
        ctx.check_device()
    }

    /// [`Download::read_into`] a new vector.
    pub fn read(self, ctx: &GpuContext, submission: &wgpu::SubmissionIndex) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.len];
        self.read_into(ctx, submission, &mut v)?;
        Ok(v)
    }
}
