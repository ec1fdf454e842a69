//! WGSL sources and the compiled-pipeline cache.
//!
//! A kernel's source is a short generated header (`enable` directives, the
//! storage type aliases `T`/`U`, the cooperative-matrix fragment size and
//! depth of a k-tile in fragments) followed
//! by `.wgsl` files included at compile time. Everything else that varies
//! (tile sizes, fused activation, kernel geometry) is a WGSL `override`
//! constant. Pipelines are compiled once and cached by [`PipelineKey`].

use crate::context::COOP_K_FRAGMENTS;
use crate::disk_cache::DiskCache;
use metal_mps_ir::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const COMMON: &str = include_str!("kernels/common.wgsl");
const ELEMENTWISE: &str = include_str!("kernels/elementwise.wgsl");
const ELEMENTWISE_INT: &str = include_str!("kernels/elementwise_int.wgsl");
const GEMM_TILED: &str = include_str!("kernels/gemm_tiled.wgsl");
const GEMM_COOP: &str = include_str!("kernels/gemm_coop.wgsl");
const MATMUL_IO: &str = include_str!("kernels/matmul_io.wgsl");
const CONV_IO: &str = include_str!("kernels/conv_io.wgsl");
const POOL: &str = include_str!("kernels/pool.wgsl");
const SOFTMAX: &str = include_str!("kernels/softmax.wgsl");
const REDUCE: &str = include_str!("kernels/reduce.wgsl");
const COPY: &str = include_str!("kernels/copy.wgsl");
const CAST: &str = include_str!("kernels/cast.wgsl");
const BATCHNORM: &str = include_str!("kernels/batchnorm.wgsl");
const DEPTHWISE: &str = include_str!("kernels/depthwise.wgsl");
const LAYERNORM: &str = include_str!("kernels/layernorm.wgsl");
const PAD: &str = include_str!("kernels/pad.wgsl");
const GATHER: &str = include_str!("kernels/gather.wgsl");
const WHERE: &str = include_str!("kernels/where.wgsl");
const PICK: &str = include_str!("kernels/pick.wgsl");
const SPLIT_SUM: &str = include_str!("kernels/split_sum.wgsl");
const TO_NHWC: &str = include_str!("kernels/to_nhwc.wgsl");
const ATTENTION: &str = include_str!("kernels/attention.wgsl");

/// Every kernel program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Fused chain of float elementwise ops (`elementwise.wgsl`).
    Elementwise,
    /// Fused chain of integer elementwise ops (`elementwise_int.wgsl`).
    ElementwiseInt,
    /// MatMul/Gemm on plain workgroup-memory tiles.
    Matmul,
    /// MatMul/Gemm on cooperative matrices.
    MatmulCoop,
    /// Convolution as implicit GEMM on plain tiles.
    Conv,
    /// Convolution as implicit GEMM on cooperative matrices.
    ConvCoop,
    /// The second pass of a split-K product: sums and epilogue.
    SplitSum,
    /// Convolution whose output channels each read one input channel.
    Depthwise,
    Pool,
    Softmax,
    Reduce,
    /// Strided copies: transpose, concat, split, slices.
    Copy,
    /// Constant-mode Pad of 4-byte elements.
    Pad,
    /// Gather with indices computed at run time.
    Gather,
    /// Where: a boolean chooses between two tensors.
    Where,
    /// A gather separable by axis (nearest-neighbour Resize).
    Pick,
    /// Element type conversion.
    Cast,
    /// BatchNormalization with runtime parameters.
    BatchNorm,
    /// LayerNormalization and RMSNormalization over contiguous rows.
    LayerNorm,
    /// An f16 NCHW tensor copied to NHWC (the input of NHWC convolution tiles).
    ToNhwc,
    /// Scores, mask, softmax and the value product in one kernel.
    Attention,
}

impl Kernel {
    pub const ALL: [Kernel; 21] = [
        Kernel::Elementwise,
        Kernel::ElementwiseInt,
        Kernel::Matmul,
        Kernel::MatmulCoop,
        Kernel::Conv,
        Kernel::ConvCoop,
        Kernel::SplitSum,
        Kernel::Depthwise,
        Kernel::Pool,
        Kernel::Softmax,
        Kernel::Reduce,
        Kernel::Copy,
        Kernel::Pad,
        Kernel::Gather,
        Kernel::Where,
        Kernel::Pick,
        Kernel::Cast,
        Kernel::BatchNorm,
        Kernel::LayerNorm,
        Kernel::ToNhwc,
        Kernel::Attention,
    ];

    /// The files, in order, after the header.
    pub fn parts(self) -> &'static [&'static str] {
        match self {
            Kernel::Elementwise => &[COMMON, ELEMENTWISE],
            Kernel::ElementwiseInt => &[COMMON, ELEMENTWISE_INT],
            Kernel::Matmul => &[COMMON, MATMUL_IO, GEMM_TILED],
            Kernel::MatmulCoop => &[COMMON, MATMUL_IO, GEMM_COOP],
            Kernel::Conv => &[COMMON, CONV_IO, GEMM_TILED],
            Kernel::ConvCoop => &[COMMON, CONV_IO, GEMM_COOP],
            Kernel::SplitSum => &[COMMON, SPLIT_SUM],
            Kernel::Depthwise => &[COMMON, DEPTHWISE],
            Kernel::Pool => &[COMMON, POOL],
            Kernel::Softmax => &[COMMON, SOFTMAX],
            Kernel::Reduce => &[COMMON, REDUCE],
            Kernel::Copy => &[COMMON, COPY],
            Kernel::Pad => &[COMMON, PAD],
            Kernel::Gather => &[COMMON, GATHER],
            Kernel::Where => &[COMMON, WHERE],
            Kernel::Pick => &[COMMON, PICK],
            Kernel::Cast => &[COMMON, CAST],
            Kernel::BatchNorm => &[COMMON, BATCHNORM],
            Kernel::LayerNorm => &[COMMON, LAYERNORM],
            Kernel::ToNhwc => &[COMMON, TO_NHWC],
            Kernel::Attention => &[COMMON, ATTENTION],
        }
    }

    /// Every instance of this kernel the engine may compile (the naga test
    /// translates each one to MSL and SPIR-V).
    pub fn variants(self) -> Vec<Variant> {
        use Scalar::*;
        let floats = vec![Variant::of(F32), Variant::of(F16)];
        match self {
            Kernel::ElementwiseInt => vec![Variant::of(I32), Variant::of(I64)],
            Kernel::MatmulCoop | Kernel::ConvCoop => [8, 16]
                .into_iter()
                .map(|ct| Variant {
                    t: F16,
                    u: None,
                    coop: Some(ct),
                    head_vec4s: None,
                })
                .collect(),
            Kernel::Copy | Kernel::Gather | Kernel::Where | Kernel::Pick => {
                vec![Variant::of(U32), Variant::of(F16), Variant::of(U32x2)]
            }
            Kernel::Pad => vec![Variant::of(U32)],
            Kernel::ToNhwc => vec![Variant::of(F16)],
            Kernel::Attention => [F32, F16]
                .into_iter()
                .flat_map(|t| {
                    crate::ops::attention::HEAD_CLASSES.map(|n| Variant {
                        head_vec4s: Some(n),
                        ..Variant::of(t)
                    })
                })
                .collect(),
            Kernel::Cast => {
                let types = [F32, F16, I32, I64];
                let mut v = Vec::new();
                for t in types {
                    for u in types {
                        // I32 to I32: to a boolean (TO_BOOL).
                        if t != u || u == I32 {
                            v.push(Variant {
                                t,
                                u: Some(u),
                                coop: None,
                                head_vec4s: None,
                            });
                        }
                    }
                }
                v
            }
            _ => floats,
        }
    }

    pub fn uses_coop(self) -> bool {
        matches!(self, Kernel::MatmulCoop | Kernel::ConvCoop)
    }
}

/// WGSL storage types a kernel is instantiated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    F32,
    F16,
    I32,
    U32,
    I64,
    /// 8-byte elements moved as two words (copies of any 8-byte dtype).
    U32x2,
}

impl Scalar {
    pub fn wgsl(self) -> &'static str {
        match self {
            Scalar::F32 => "f32",
            Scalar::F16 => "f16",
            Scalar::I32 => "i32",
            Scalar::U32 => "u32",
            Scalar::I64 => "i64",
            Scalar::U32x2 => "vec2<u32>",
        }
    }
}

/// Which instance of a kernel's source: storage types and fragment size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The alias `T`.
    pub t: Scalar,
    /// The alias `U` (the output type of casts).
    pub u: Option<Scalar>,
    /// Cooperative-matrix fragment size `CT` (8 or 16).
    pub coop: Option<u32>,
    /// The constant `MAX_D4`: vec4s of a head that a kernel's registers hold
    /// (attention).
    pub head_vec4s: Option<u32>,
}

impl Variant {
    pub fn of(t: Scalar) -> Variant {
        Variant {
            t,
            u: None,
            coop: None,
            head_vec4s: None,
        }
    }
}

/// The complete WGSL source of a kernel instance.
pub fn source(kernel: Kernel, v: Variant) -> String {
    let mut s = String::new();
    if v.t == Scalar::F16 || v.u == Some(Scalar::F16) || v.coop.is_some() {
        s.push_str("enable f16;\n");
    }
    if let Some(ct) = v.coop {
        s.push_str("enable wgpu_cooperative_matrix;\n");
        s.push_str(&format!(
            "const CT: u32 = {ct}u;\nconst CT_K: u32 = {COOP_K_FRAGMENTS}u;\nalias CM_A = coop_mat{ct}x{ct}<f16, A>;\nalias CM_B = coop_mat{ct}x{ct}<f16, B>;\nalias CM_C = coop_mat{ct}x{ct}<f32, C>;\n"
        ));
    }
    if let Some(n) = v.head_vec4s {
        s.push_str(&format!("const MAX_D4: u32 = {n}u;\n"));
    }
    s.push_str(&format!("alias T = {};\n", v.t.wgsl()));
    if let Some(u) = v.u {
        s.push_str(&format!("alias U = {};\n", u.wgsl()));
        // Saturation bounds of float -> integer casts (Rust's `as` semantics).
        let (is_int, max, limit) = match u {
            Scalar::I32 => (true, "2147483647i", "2147483648.0"),
            Scalar::I64 => (true, "9223372036854775807li", "9223372036854775808.0"),
            _ => (false, "U(0)", "0.0"),
        };
        let t_float = matches!(v.t, Scalar::F32 | Scalar::F16);
        s.push_str(&format!(
            "const U_IS_INT: bool = {is_int};\nconst T_IS_FLOAT: bool = {t_float};\nconst U_MAX: U = {max};\nconst U_LIMIT: f32 = {limit};\n"
        ));
    }
    for part in kernel.parts() {
        s.push_str(part);
        s.push('\n');
    }
    s
}

/// The value of one `override` constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Const {
    U32(u32),
    F32(f32),
    Bool(bool),
}

impl Const {
    fn as_f64(self) -> f64 {
        match self {
            Const::U32(v) => f64::from(v),
            Const::F32(v) => f64::from(v),
            Const::Bool(v) => f64::from(u8::from(v)),
        }
    }

    /// Bit-exact key (f32 by bits, so NaN-free equality holds).
    fn key(self) -> u64 {
        match self {
            Const::U32(v) => u64::from(v),
            Const::F32(v) => (1 << 40) | u64::from(v.to_bits()),
            Const::Bool(v) => (2 << 40) | u64::from(v),
        }
    }
}

/// Identifies one compiled pipeline: source, entry point, override constants.
#[derive(Clone, Debug)]
pub struct PipelineKey {
    pub kernel: Kernel,
    pub variant: Variant,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, Const)>,
}

impl PipelineKey {
    pub fn new(kernel: Kernel, variant: Variant, entry: &'static str) -> Self {
        PipelineKey {
            kernel,
            variant,
            entry,
            constants: Vec::new(),
        }
    }

    /// Adds an override constant (builder style).
    pub fn with(mut self, name: &'static str, value: Const) -> Self {
        self.constants.push((name, value));
        self
    }

    fn hash_key(&self) -> (Kernel, Variant, &'static str, Vec<(&'static str, u64)>) {
        let mut c: Vec<(&'static str, u64)> =
            self.constants.iter().map(|(n, v)| (*n, v.key())).collect();
        c.sort();
        (self.kernel, self.variant, self.entry, c)
    }
}

/// A compiled pipeline and its bind-group layout.
#[derive(Debug)]
pub struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub label: String,
}

type CacheKey = (Kernel, Variant, &'static str, Vec<(&'static str, u64)>);

/// Compiled pipelines and shader modules of one device.
pub struct PipelineCache {
    device: wgpu::Device,
    disk: Option<DiskCache>,
    modules: Mutex<HashMap<(Kernel, Variant), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<CacheKey, Arc<Pipeline>>>,
    checks: bool,
}

/// Environment variable: `1` compiles kernels with wgpu's bounds checks and
/// loop guards (slower; for debugging kernels).
pub const BOUNDS_CHECKS_ENV: &str = "METAL_MPS_GPU_BOUNDS_CHECKS";

impl PipelineCache {
    /// Pipelines compiled on `device`, through `disk` when given.
    pub fn new(device: wgpu::Device, disk: Option<DiskCache>) -> Self {
        let checks = std::env::var(BOUNDS_CHECKS_ENV).is_ok_and(|v| v == "1");
        PipelineCache {
            device,
            disk,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            checks,
        }
    }

    /// Writes the pipelines compiled so far to the disk cache, if there is one
    /// and it changed.
    pub fn persist(&self) -> std::io::Result<()> {
        self.disk.as_ref().map_or(Ok(()), DiskCache::save)
    }

    /// The file of the disk cache, when there is one.
    pub fn disk_path(&self) -> Option<&std::path::Path> {
        self.disk.as_ref().map(DiskCache::path)
    }

    /// Number of compiled pipelines.
    pub fn len(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pipeline of `key`, compiled on first use.
    pub fn get(&self, key: &PipelineKey) -> Result<Arc<Pipeline>> {
        let hk = key.hash_key();
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hk)
        {
            return Ok(p.clone());
        }
        let p = Arc::new(self.compile(key)?);
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hk, p.clone());
        Ok(p)
    }

    fn module(&self, kernel: Kernel, variant: Variant) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(&(kernel, variant)) {
            return Ok(m.clone());
        }
        let src = source(kernel, variant);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(&format!("{kernel:?}")),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        let module = if self.checks {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel guards its indices against the sizes it is
            // given (the kernel tests check them against CPU references), so
            // wgpu's per-access bounds checks and loop guards are redundant.
            unsafe {
                self.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device(format!(
                "kernel {kernel:?} ({variant:?}) does not compile: {e}"
            )));
        }
        modules.insert((kernel, variant), module.clone());
        Ok(module)
    }

    fn compile(&self, key: &PipelineKey) -> Result<Pipeline> {
        let module = self.module(key.kernel, key.variant)?;
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|(n, v)| (*n, v.as_f64()))
            .collect();
        let mut label = format!("{:?}/{}/{:?}", key.kernel, key.entry, key.variant.t);
        // Tile sizes tell the instances of one product kernel apart in profiles.
        for (name, value) in constants.iter().filter(|(n, v)| {
            matches!(*n, "TM" | "TN" | "A_WIDE" | "B_WIDE")
                || (matches!(*n, "CM_ROWS" | "CM_COLS") && *v != 8.0)
                || (*n == "SPLITS" && *v > 1.0)
                || (*n == "NHWC" && *v > 0.0)
        }) {
            label.push_str(&format!(" {name}={value}"));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: self.disk.as_ref().map(|d| &d.cache),
            });
        if let Some(d) = &self.disk {
            d.touch();
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device(format!(
                "pipeline {label} with {:?} failed: {e}",
                key.constants
            )));
        }
        let layout = pipeline.get_bind_group_layout(0);
        Ok(Pipeline {
            pipeline,
            layout,
            label,
        })
    }
}
