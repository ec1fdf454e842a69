//! The device: adapter choice, the features detected on it, and the objects
//! every model on that adapter shares (queue, buffer pool, pipeline cache).
//!
//! wgpu picks the native API of the platform: Metal on macOS, Vulkan on Linux,
//! DX12 on Windows. One [`GpuContext`] exists per chosen adapter in a process
//! ([`GpuContext::shared`]); every model loaded on that adapter uses it.

use crate::autotune::Tuner;
use crate::disk_cache::DiskCache;
use crate::pipeline_cache::PipelineCache;
use crate::pool::{BufferPool, PoolConfig};
use metal_mps_ir::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Environment variable choosing the adapter: a case-insensitive substring of
/// its name, driver or backend (`"llvmpipe"`, `"nvidia"`, `"vulkan"`, ...).
pub const ADAPTER_ENV: &str = "METAL_MPS_ADAPTER";

/// The backends metal_mps asks wgpu for: the native API of each platform.
const BACKENDS: wgpu::Backends = wgpu::Backends::METAL
    .union(wgpu::Backends::VULKAN)
    .union(wgpu::Backends::DX12);

/// Cooperative-matrix (tensor core / simdgroup matrix) shape usable by the
/// matmul and convolution kernels: square `size`×`size`×`size`, f16 inputs and
/// f32 accumulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopShape {
    /// 8 (Metal) or 16 (Vulkan on NVIDIA, AMD).
    pub size: u32,
    /// The kernels may read f16 operands eight at a time (16-byte loads)
    /// where their layout allows: on unless the self-test of that path fails
    /// or `METAL_MPS_GPU_WIDE=off`.
    pub wide: bool,
}

/// What the adapter offers, detected at run time.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// `f16` in shaders and storage (FP16 models and the FP16 precision mode).
    pub f16: bool,
    /// `i64` in shaders: INT64 tensors run on the GPU only when set.
    pub int64: bool,
    /// The cooperative-matrix shape the kernels use, when the adapter offers one.
    pub coop: Option<CoopShape>,
    /// GPU timestamps (benchmarks).
    pub timestamps: bool,
    /// Largest storage-buffer binding in bytes (lavapipe: 128 MiB).
    pub max_binding: u64,
    /// Largest buffer in bytes.
    pub max_buffer: u64,
    /// Bytes of workgroup memory per workgroup.
    pub workgroup_storage: u32,
    /// Storage buffers one kernel may bind.
    pub max_storage_buffers: u32,
    /// Required alignment of uniform-buffer binding offsets.
    pub uniform_align: u32,
    /// Convolution weights are reordered tap-major where that serves
    /// ([`crate::ops::conv::ConvGeometry::tap_major_pays`]): on software
    /// adapters (lavapipe), whose time goes to the gather's per-element
    /// arithmetic that the order saves; not on GPUs, where ONNX's order reads
    /// the input with better locality (an H100: ResNet-18/50 at batch 32 were
    /// 1-9 % faster without it).
    pub tap_major_weights: bool,
}

/// A description of one adapter, for `info` and error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterDescription {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

impl std::fmt::Display for AdapterDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

fn describe(info: &wgpu::AdapterInfo) -> AdapterDescription {
    AdapterDescription {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// One device and everything shared by the models running on it.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterDescription,
    pub caps: Capabilities,
    /// Pooled device and staging buffers.
    pub pool: BufferPool,
    /// Compiled kernels.
    pub pipelines: PipelineCache,
    /// Tile choices timed on this adapter.
    pub tuner: Tuner,
    /// The first error the device reported outside an error scope; runs fail with it.
    device_error: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter)
            .field("caps", &self.caps)
            .finish()
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = BACKENDS;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds on the native backends.
pub fn list_adapters() -> Vec<AdapterDescription> {
    pollster::block_on(instance().enumerate_adapters(BACKENDS))
        .iter()
        .map(|a| describe(&a.get_info()))
        .collect()
}

/// Whether any GPU adapter (a software one such as lavapipe included) exists.
pub fn adapter_available() -> bool {
    !list_adapters().is_empty()
}

/// The adapter the selector (or [`ADAPTER_ENV`]) would choose, without creating a device.
pub fn adapter_info(selector: Option<&str>) -> Result<AdapterDescription> {
    let (adapter, _) = choose_adapter(selector)?;
    Ok(describe(&adapter.get_info()))
}

fn selector_or_env(selector: Option<&str>) -> Option<String> {
    selector
        .map(str::to_string)
        .or_else(|| std::env::var(ADAPTER_ENV).ok())
        .filter(|s| !s.trim().is_empty())
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Picks the best adapter matching the selector: discrete before integrated
/// before software. Returns it with the selector used.
fn choose_adapter(selector: Option<&str>) -> Result<(wgpu::Adapter, Option<String>)> {
    let wanted = selector_or_env(selector);
    let adapters = pollster::block_on(instance().enumerate_adapters(BACKENDS));
    if adapters.is_empty() {
        return Err(Error::Device(
            "no GPU adapter found (tried Metal, Vulkan and DX12). Install a GPU driver; on Linux \
             without a GPU, the Mesa lavapipe driver (`apt-get install mesa-vulkan-drivers \
             libvulkan1`) provides a software Vulkan adapter. Or run with --device cpu."
                .into(),
        ));
    }
    let matches = |a: &wgpu::Adapter| match &wanted {
        None => true,
        Some(w) => {
            let d = describe(&a.get_info());
            let w = w.to_lowercase();
            [&d.name, &d.backend, &d.driver]
                .iter()
                .any(|s| s.to_lowercase().contains(&w))
        }
    };
    let best = adapters
        .iter()
        .filter(|a| matches(a))
        .min_by_key(|a| {
            let i = a.get_info();
            (type_rank(i.device_type), i.name.clone())
        })
        .cloned();
    match best {
        Some(a) => Ok((a, wanted)),
        None => {
            let names: Vec<String> = adapters
                .iter()
                .map(|a| describe(&a.get_info()).to_string())
                .collect();
            Err(Error::Device(format!(
                "no GPU adapter matches '{}' (from the adapter option or {ADAPTER_ENV}); available: {}",
                wanted.unwrap_or_default(),
                names.join("; ")
            )))
        }
    }
}

/// Fragments along K in one k-tile of the cooperative-matrix kernel (the
/// constant `CT_K` of `gemm_coop.wgsl`'s header).
pub const COOP_K_FRAGMENTS: u32 = 4;

/// Workgroup memory of the cooperative-matrix kernel (`gemm_coop.wgsl`) on
/// `ct`×`ct` fragments: its f16 tiles of A (`8ct × (bk + 8)`) and B (`bk ×
/// (8ct + 8)` row-major or `8ct × (bk + 8)` column-major, room for either),
/// `bk` = [`COOP_K_FRAGMENTS`]·`ct`, and its f32 scratch of eight fragments.
pub const fn coop_workgroup_bytes(ct: u32) -> u32 {
    let bk = COOP_K_FRAGMENTS * ct;
    let a = 8 * ct * (bk + 8);
    let (b_rows, b_cols) = (bk * (8 * ct + 8), 8 * ct * (bk + 8));
    let b = if b_rows > b_cols { b_rows } else { b_cols };
    2 * (a + b) + 4 * 8 * ct * ct
}

/// The cooperative-matrix shape to use: square, f16 inputs with f32 accumulation,
/// the largest offered among 16 and 8 whose kernel fits `workgroup_storage`
/// bytes of workgroup memory.
fn detect_coop(adapter: &wgpu::Adapter, workgroup_storage: u32) -> Option<CoopShape> {
    if !adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16)
    {
        return None;
    }
    let props = adapter.cooperative_matrix_properties();
    [16u32, 8]
        .into_iter()
        .find(|&s| {
            coop_workgroup_bytes(s) <= workgroup_storage
                && props.iter().any(|p| {
                    p.m_size == s
                        && p.n_size == s
                        && p.k_size == s
                        && p.ab_type == wgpu::CooperativeScalarType::F16
                        && p.cr_type == wgpu::CooperativeScalarType::F32
                })
        })
        .map(|size| CoopShape {
            size,
            wide: crate::ops::matmul::wide_allowed(),
        })
}

impl GpuContext {
    /// Creates a device on the adapter chosen by `selector`, or by
    /// [`ADAPTER_ENV`] when `selector` is `None`, or the best one.
    pub fn new(selector: Option<&str>) -> Result<GpuContext> {
        let (adapter, _) = choose_adapter(selector)?;
        let info = adapter.get_info();
        let offered = adapter.features();
        let limits = adapter.limits();
        let coop = detect_coop(&adapter, limits.max_compute_workgroup_storage_size);
        let mut features = wgpu::Features::empty();
        for f in [
            wgpu::Features::SHADER_F16,
            wgpu::Features::SHADER_INT64,
            wgpu::Features::TIMESTAMP_QUERY,
            wgpu::Features::PIPELINE_CACHE,
        ] {
            if offered.contains(f) {
                features |= f;
            }
        }
        let mut experimental = wgpu::ExperimentalFeatures::disabled();
        if coop.is_some() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: the cooperative-matrix kernels are validated by naga and
            // checked against the plain kernels by the device tests; wgpu asks
            // for this token because the feature is still experimental.
            experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("metal_mps"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Device(format!("cannot open {}: {e}", describe(&info))))?;
        let device_error = Arc::new(Mutex::new(None::<String>));
        let sink = device_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let caps = Capabilities {
            f16: features.contains(wgpu::Features::SHADER_F16),
            int64: features.contains(wgpu::Features::SHADER_INT64),
            coop,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            max_buffer: limits.max_buffer_size,
            workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_storage_buffers: limits.max_storage_buffers_per_shader_stage,
            uniform_align: limits.min_uniform_buffer_offset_alignment,
            tap_major_weights: info.device_type == wgpu::DeviceType::Cpu,
        };
        let pool = BufferPool::new(device.clone(), PoolConfig::from_env());
        if pool.config().verbose {
            eprintln!("[metal_mps gpu] adapter {} caps {caps:?}", describe(&info));
        }
        let mut ctx = GpuContext {
            pipelines: PipelineCache::new(device.clone(), DiskCache::open(&device, &info)),
            tuner: Tuner::for_adapter(&info),
            device,
            queue,
            adapter: describe(&info),
            caps,
            pool,
            device_error,
        };
        if ctx.pool.config().verbose {
            match ctx.pipelines.disk_path() {
                Some(p) => eprintln!("[metal_mps gpu] pipeline cache: {}", p.display()),
                None => eprintln!("[metal_mps gpu] no pipeline cache on disk for this adapter"),
            }
        }
        if let Some(c) = ctx.caps.coop {
            let ok = ctx.coop_self_test(c.size, false);
            if !matches!(ok, Ok(true)) {
                eprintln!(
                    "[metal_mps gpu] cooperative matrices disabled: the self-test failed ({ok:?})"
                );
                ctx.caps.coop = None;
            } else if c.wide {
                let ok = ctx.coop_self_test(c.size, true);
                if !matches!(ok, Ok(true)) {
                    eprintln!(
                        "[metal_mps gpu] wide loads of cooperative matrices disabled: the self-test failed ({ok:?})"
                    );
                    ctx.caps.coop = Some(CoopShape { wide: false, ..c });
                }
            }
        }
        Ok(ctx)
    }

    /// Runs a small product on `size` cooperative matrices and compares it
    /// with the exact result: `Ok(true)` when they agree. `wide`: sizes that
    /// take the wide loads (multiples of 8), else sizes that cannot.
    fn coop_self_test(&self, size: u32, wide: bool) -> Result<bool> {
        use crate::ops::{
            self,
            matmul::{Gemm, Tiles},
            Binding,
        };
        let s = size as usize;
        let (m, n, k) = if wide {
            (8 * s + 8, 8 * s + 24, 4 * s + 8)
        } else {
            (8 * s + 3, 8 * s + 5, 4 * s + 1)
        };
        // Small integers: exact in f16 and in f32 sums.
        let a: Vec<half::f16> = (0..m * k)
            .map(|i| half::f16::from_f32(((i * 7) % 5) as f32 - 2.0))
            .collect();
        let b: Vec<half::f16> = (0..k * n)
            .map(|i| half::f16::from_f32(((i * 3) % 7) as f32 - 3.0))
            .collect();
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    want[i * n + j] += a[i * k + p].to_f32() * b[p * n + j].to_f32();
                }
            }
        }
        let ba = crate::transfer::upload(self, bytemuck::cast_slice(&a))?;
        let bb = crate::transfer::upload(self, bytemuck::cast_slice(&b))?;
        let y = self
            .pool
            .acquire(crate::pool::BufferClass::Storage, (m * n * 2) as u64)?;
        let dummy = self.pool.acquire(crate::pool::BufferClass::Storage, 16)?;
        let g = Gemm::row_major(m, n, k);
        let calls = ops::matmul::matmul(
            self,
            crate::pipeline_cache::Scalar::F16,
            &g,
            Tiles::coop(size),
            Binding::whole(&ba, (m * k * 2) as u64),
            Binding::whole(&bb, (k * n * 2) as u64),
            Binding::whole(&y, (m * n * 2) as u64),
            None,
            &Binding::whole(&dummy, 16),
        )?;
        ops::run_now(self, &calls)?;
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("coop self-test"),
            });
        let d = crate::transfer::record_download(self, &mut enc, &y, m * n * 2)?;
        let index = self.queue.submit([enc.finish()]);
        let bytes = d.read(self, &index)?;
        let got: &[half::f16] = bytemuck::cast_slice(&bytes);
        Ok(got
            .iter()
            .zip(&want)
            .all(|(g, w)| (g.to_f32() - w).abs() <= 1e-3 * w.abs().max(1.0)))
    }

    /// The process-wide context of the adapter `selector` (or [`ADAPTER_ENV`])
    /// chooses, created on first use.
    pub fn shared(selector: Option<&str>) -> Result<Arc<GpuContext>> {
        static CONTEXTS: OnceLock<Mutex<HashMap<Option<String>, Arc<GpuContext>>>> =
            OnceLock::new();
        let key = selector_or_env(selector);
        let map = CONTEXTS.get_or_init(Default::default);
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let ctx = Arc::new(GpuContext::new(key.as_deref())?);
        map.insert(key, ctx.clone());
        Ok(ctx)
    }

    /// Fails with the error the device reported asynchronously, if any.
    pub fn check_device(&self) -> Result<()> {
        match self
            .device_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(e) => Err(Error::Device(format!("the GPU reported: {e}"))),
            None => Ok(()),
        }
    }

    /// Blocks until all submitted work finished.
    pub fn wait_idle(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))
    }

    /// Blocks until the given submission finished.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))
    }
}
