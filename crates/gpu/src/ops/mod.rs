//! Kernel launchers: one function per kernel turning shapes and buffers into a
//! [`Call`] (pipeline, uniform parameters, storage bindings, grid).
//!
//! Calls are turned into bind groups once ([`prepare`]) and recorded many
//! times ([`record`]): a model's dispatches are built when its shapes are known
//! and replayed by every inference.

pub mod attention;
pub mod batchnorm;
pub mod cast;
pub mod conv;
pub mod copy;
pub mod elementwise;
pub mod layernorm;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod select;
pub mod softmax;

use crate::pipeline_cache::{Pipeline, Scalar};
use crate::pool::{BufferClass, PooledBuffer};
use crate::GpuContext;
use metal_mps_ir::{DType, Error, Result, UnaryOp};
use std::sync::Arc;

/// Invocations per workgroup of the one-dimensional kernels.
pub const WORKGROUP: u32 = 256;
/// Most workgroups along one grid dimension (WebGPU's default limit).
pub const MAX_GROUPS: u32 = 65535;

/// A range of a buffer bound to a kernel.
#[derive(Clone, Debug)]
pub struct Binding {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    /// Bytes; rounded up to 4 when bound.
    pub size: u64,
}

impl Binding {
    pub fn whole(buffer: &wgpu::Buffer, size: u64) -> Binding {
        Binding {
            buffer: buffer.clone(),
            offset: 0,
            size,
        }
    }
}

/// One dispatch, before its bind group exists.
pub struct Call {
    pub pipeline: Arc<Pipeline>,
    /// Contents of the uniform at binding 0 (empty: the kernel has none).
    pub params: Vec<u8>,
    /// Storage buffers at bindings 1, 2, ...
    pub bindings: Vec<Binding>,
    pub groups: [u32; 3],
}

/// A dispatch ready to record.
pub struct Prepared {
    pub pipeline: Arc<Pipeline>,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
}

/// The grid for `n` invocations of [`WORKGROUP`]: x up to [`MAX_GROUPS`], then y
/// (kernels rebuild the index with `linear_index`).
pub fn grid(n: u64) -> Result<[u32; 3]> {
    grid_groups(n.div_ceil(u64::from(WORKGROUP)))
}

/// The grid for `groups` workgroups laid out along x then y.
pub fn grid_groups(groups: u64) -> Result<[u32; 3]> {
    let groups = groups.max(1);
    let x = groups.min(u64::from(MAX_GROUPS));
    let y = groups.div_ceil(x);
    if y > u64::from(MAX_GROUPS) {
        return Err(Error::TooLarge(format!(
            "{groups} workgroups do not fit one dispatch"
        )));
    }
    Ok([x as u32, y as u32, 1])
}

/// Packs a uniform parameter block: scalars, then arrays of `vec4<u32>`.
#[derive(Default)]
pub struct Params(Vec<u8>);

impl Params {
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn f32(mut self, v: f32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// `values` padded with `fill` to `4 * vec4s` words (an `array<vec4<u32>, vec4s>`).
    pub fn words(mut self, values: &[u32], vec4s: usize, fill: u32) -> Self {
        debug_assert!(
            self.0.len().is_multiple_of(16),
            "arrays start 16-byte aligned"
        );
        debug_assert!(values.len() <= vec4s * 4);
        for i in 0..vec4s * 4 {
            self = self.u32(values.get(i).copied().unwrap_or(fill));
        }
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        while !self.0.len().is_multiple_of(16) {
            self.0.push(0);
        }
        self.0
    }
}

/// A value that must fit the kernels' 32-bit indices.
pub fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::TooLarge(format!(
            "{what} = {v} passes the GPU kernels' 32-bit indexing"
        ))
    })
}

/// The WGSL storage type of a float dtype.
pub fn float_scalar(dtype: DType) -> Result<Scalar> {
    match dtype {
        DType::F32 => Ok(Scalar::F32),
        DType::F16 => Ok(Scalar::F16),
        other => Err(Error::Unsupported(format!("{other} in a float kernel"))),
    }
}

/// Activation code of `common.wgsl` and its two parameters.
pub fn act_code(u: Option<UnaryOp>) -> (u32, f32, f32) {
    match u {
        None => (0, 0.0, 0.0),
        Some(UnaryOp::Relu) => (1, 0.0, 0.0),
        Some(UnaryOp::Sigmoid) => (2, 0.0, 0.0),
        Some(UnaryOp::Tanh) => (3, 0.0, 0.0),
        Some(UnaryOp::Sqrt) => (4, 0.0, 0.0),
        Some(UnaryOp::Exp) => (5, 0.0, 0.0),
        Some(UnaryOp::Log) => (6, 0.0, 0.0),
        Some(UnaryOp::Neg) => (7, 0.0, 0.0),
        Some(UnaryOp::Abs) => (8, 0.0, 0.0),
        Some(UnaryOp::LeakyRelu { alpha }) => (9, alpha, 0.0),
        Some(UnaryOp::HardSigmoid { alpha, beta }) => (10, alpha, beta),
        Some(UnaryOp::HardSwish) => (11, 0.0, 0.0),
        Some(UnaryOp::Gelu) => (15, 0.0, 0.0),
        // The pass that makes it keeps `value` finite.
        Some(UnaryOp::NanTo { value }) => (16, value, 0.0),
        // Pipeline constants must be finite: an open side is its own code.
        Some(UnaryOp::Clamp { min, max }) => match (min.is_finite(), max.is_finite()) {
            (true, true) => (12, min, max),
            (true, false) => (13, min, 0.0),
            (false, true) => (14, 0.0, max),
            (false, false) => (0, 0.0, 0.0),
        },
    }
}

/// Builds the bind groups of `calls`, their parameters packed in one uniform
/// buffer (returned: it must live as long as the bind groups are used).
pub fn prepare(ctx: &GpuContext, calls: &[Call]) -> Result<(Option<PooledBuffer>, Vec<Prepared>)> {
    let align = u64::from(ctx.caps.uniform_align.max(16));
    let mut offsets = Vec::with_capacity(calls.len());
    let mut total = 0u64;
    for c in calls {
        offsets.push(total);
        if !c.params.is_empty() {
            total = (total + c.params.len() as u64).div_ceil(align) * align;
        }
    }
    let arena = if total > 0 {
        Some(ctx.pool.acquire(BufferClass::Uniform, total)?)
    } else {
        None
    };
    if let Some(a) = &arena {
        let mut bytes = vec![0u8; total as usize];
        for (c, &off) in calls.iter().zip(&offsets) {
            bytes[off as usize..off as usize + c.params.len()].copy_from_slice(&c.params);
        }
        ctx.queue.write_buffer(a, 0, &bytes);
    }
    let mut out = Vec::with_capacity(calls.len());
    for (c, &off) in calls.iter().zip(&offsets) {
        let mut entries = Vec::with_capacity(c.bindings.len() + 1);
        let mut next = 0u32;
        if !c.params.is_empty() {
            let a = arena.as_ref().expect("an arena exists when parameters do");
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: a,
                    offset: off,
                    size: wgpu::BufferSize::new(c.params.len() as u64),
                }),
            });
            next = 1;
        }
        for (i, b) in c.bindings.iter().enumerate() {
            let size = b.size.max(4).div_ceil(4) * 4;
            if size > ctx.caps.max_binding {
                return Err(Error::TooLarge(format!(
                    "a {size} byte tensor passes this adapter's {} byte storage binding limit",
                    ctx.caps.max_binding
                )));
            }
            entries.push(wgpu::BindGroupEntry {
                binding: next + i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buffer,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(size),
                }),
            });
        }
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&c.pipeline.label),
            layout: &c.pipeline.layout,
            entries: &entries,
        });
        out.push(Prepared {
            pipeline: c.pipeline.clone(),
            bind_group,
            groups: c.groups,
        });
    }
    Ok((arena, out))
}

/// Records prepared dispatches into one compute pass.
pub fn record(encoder: &mut wgpu::CommandEncoder, prepared: &[Prepared]) {
    if prepared.is_empty() {
        return;
    }
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("metal_mps"),
        timestamp_writes: None,
    });
    for p in prepared {
        pass.set_pipeline(&p.pipeline.pipeline);
        pass.set_bind_group(0, &p.bind_group, &[]);
        pass.dispatch_workgroups(p.groups[0], p.groups[1], p.groups[2]);
    }
}

/// Runs `calls` in one submission and waits for them (tests, benchmarks, one-off work).
pub fn run_now(ctx: &GpuContext, calls: &[Call]) -> Result<()> {
    let (_params, prepared) = prepare(ctx, calls)?;
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("metal_mps run_now"),
        });
    record(&mut encoder, &prepared);
    let index = ctx.queue.submit([encoder.finish()]);
    ctx.wait_for(index)?;
    ctx.check_device()
}
