//! The GPU plan of a graph whose input shapes are fixed.
//!
//! Built once per set of input shapes ([`specialize_prefix`] then [`GpuPlan::build`]):
//! 1. every node is lowered to GPU ops (fusing epilogues and elementwise
//!    chains) or kept for the CPU engine;
//! 2. explicit transfer steps are placed where a value crosses engines;
//! 3. every device intermediate gets a slot of the static memory plan: values
//!    whose lifetimes do not overlap share a buffer; reshapes alias their input.

mod attention;

use crate::autotune;
use crate::context::GpuContext;
use crate::lower::GpuOp;
use crate::ops::conv::{tap_major_weights, ConvGeometry};
use crate::ops::copy::{mover, GatherShape, Region};
use crate::ops::elementwise::{int_step_supported, Arith, Step as EwStep, MAX_OPERANDS, MAX_STEPS};
use crate::ops::matmul::{choose_tiles, Gemm, Product, MAX_BATCH_DIMS};
use crate::ops::pool::PoolGeometry;
use crate::ops::select::broadcast_strides;
use crate::options::{GpuOptions, Precision};
use crate::pipeline_cache::Scalar;
use metal_mps_ir::{
    broadcast_shapes, fixed_shape, from_fixed, infer, normalize_axis, passes, Activation, BinaryOp,
    DType, Error, Graph, Normalization, Op, PoolKind, ReduceOp, Result, Tensor, UnaryOp, ValueId,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Most indices of a Gather with constant indices that runs on the GPU (a copy
/// dispatch each); more go to the CPU.
const MAX_GATHER_COPIES: usize = 16;

/// And, Or, Xor and Not: chains of the integer kernel on booleans (i32 0 or 1
/// on the device).
fn is_logic(node: &metal_mps_ir::Node) -> bool {
    matches!(node.op, Op::Dyn(_)) && matches!(node.onnx_op.as_str(), "And" | "Or" | "Xor" | "Not")
}

/// One step of an inference, in order.
#[derive(Clone, Debug)]
pub enum Step {
    /// Kernels recorded into the current command encoder.
    Gpu(Box<GpuOp>),
    /// Device to host: the value is read back before the next CPU step.
    Download(ValueId),
    /// A node the CPU engine runs on host tensors.
    Cpu(usize),
    /// Host to device (after earlier recorded work is submitted).
    Upload(ValueId),
}

/// Where a value lives on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevHome {
    /// The execution instance's buffer of graph input `i`.
    Input(usize),
    /// A weight buffer uploaded once.
    Const,
    /// A slot of the static memory plan.
    Slot(usize),
}

/// Where a graph output is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutSrc {
    Device(ValueId),
    Host(ValueId),
}

/// Fixes the input shapes of `graph`, infers every shape and folds what became
/// constant (shape computations). When a shape depends on data, the index of
/// the first node whose outputs' shapes (or whose parts, for Split) are only
/// known once it has run comes back with the reason; the nodes before it have
/// fixed shapes.
pub fn specialize_prefix(
    graph: &Graph,
    input_shapes: &[Vec<usize>],
) -> Result<(Graph, Option<(usize, String)>)> {
    let mut g = graph.clone();
    if input_shapes.len() != g.inputs.len() {
        return Err(Error::InvalidInput(format!(
            "{} inputs given, the model has {}",
            input_shapes.len(),
            g.inputs.len()
        )));
    }
    for (&v, s) in g.inputs.clone().iter().zip(input_shapes) {
        g.values[v].shape = Some(from_fixed(s));
    }
    loop {
        let before = g.nodes.len();
        infer::infer_graph(&mut g)?;
        passes::fold_constants(&mut g, &metal_mps_cpu::CpuEvaluator)?;
        if g.nodes.len() == before {
            break;
        }
    }
    infer::infer_graph(&mut g)?;
    passes::remove_dead_nodes(&mut g);
    for (n, node) in g.nodes.iter().enumerate() {
        // Split sizes given as a computed tensor: the parts' shapes depend on data.
        if let (Op::Split { sizes: None, .. }, Some(Some(s))) = (&node.op, node.inputs.get(1)) {
            if g.values[*s].constant.is_none() {
                return Ok((
                    g,
                    Some((n, "the split sizes are computed at run time".into())),
                ));
            }
        }
        for &o in &node.outputs {
            let v = &g.values[o];
            if v.shape.as_deref().and_then(fixed_shape).is_none() {
                let why = format!("the shape of '{}' depends on data", v.name);
                return Ok((g, Some((n, why))));
            }
        }
    }
    Ok((g, None))
}

/// A specialized graph compiled for the GPU.
pub struct GpuPlan {
    pub graph: Graph,
    /// Per value: its fixed shape (`None` for values never computed).
    pub shapes: Vec<Option<Vec<usize>>>,
    /// Per value: its dtype on the device (`None`: host only).
    pub dev_dtype: Vec<Option<DType>>,
    /// Per value: the value whose buffer holds it (itself unless an alias).
    pub root: Vec<ValueId>,
    /// Per root on the device: where it lives.
    pub home: Vec<Option<DevHome>>,
    pub slot_bytes: Vec<u64>,
    pub steps: Vec<Step>,
    /// Per graph input: whether it is uploaded.
    pub inputs_on_device: Vec<bool>,
    /// Per graph input: the value its upload buffer holds: the input itself, or
    /// (FP16 precision) its FP32 form, converted on the device by a Cast step.
    pub input_dev_value: Vec<ValueId>,
    pub outputs: Vec<OutSrc>,
    /// Engine of each node of the specialized graph, by node name.
    pub node_engine: HashMap<String, &'static str>,
    /// Indices the host checks when it uploads them (Gather reads them on the device).
    pub index_checks: Vec<IndexCheck>,
}

/// Every element of `value` (an integer tensor the host uploads) must lie in
/// `-bound..bound`, the range of the axis that `node` gathers from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexCheck {
    pub value: ValueId,
    pub bound: usize,
    pub node: String,
}

impl IndexCheck {
    /// The error of the first index of `t` out of range, as the CPU engine words it.
    pub fn check(&self, t: &Tensor) -> Result<()> {
        let bound = self.bound as i64;
        let bad = match t.dtype() {
            DType::I64 => t
                .as_slice::<i64>()?
                .iter()
                .find(|&&i| i < -bound || i >= bound)
                .copied(),
            DType::I32 => t
                .as_slice::<i32>()?
                .iter()
                .map(|&i| i64::from(i))
                .find(|&i| i < -bound || i >= bound),
            other => return Err(Error::Invalid(format!("Gather indices of type {other}"))),
        };
        match bad {
            None => Ok(()),
            Some(i) => Err(Error::Invalid(format!(
                "node '{}': Gather index {i} is out of range for dimension {bound}",
                self.node
            ))),
        }
    }
}

impl GpuPlan {
    /// Bytes of value `v` on the device.
    pub fn dev_bytes(&self, v: ValueId) -> u64 {
        value_bytes(self.shapes[v].as_deref(), self.dev_dtype[v])
    }

    pub fn build(graph: Graph, ctx: &GpuContext, opts: &GpuOptions) -> Result<GpuPlan> {
        let mut b = Builder::new(graph, ctx, opts);
        for n in 0..b.g.nodes.len() {
            if let Some(ops) = b.deferred.remove(&n) {
                b.emit(ops);
            } else if !b.absorbed[n] {
                b.place(n)?;
            }
        }
        if let Err(e) = ctx.tuner.save() {
            if ctx.pool.config().verbose {
                eprintln!("[metal_mps gpu] autotune choices not written: {e}");
            }
        }
        b.finish()
    }
}

/// Bytes of a value of `shape` (none: never computed, 0) stored as `dtype` on the device.
fn value_bytes(shape: Option<&[usize]>, dtype: Option<DType>) -> u64 {
    let n: usize = shape.map_or(0, |s| s.iter().product());
    (n * dtype.map_or(0, DType::size)) as u64
}

struct Builder<'a> {
    g: Graph,
    ctx: &'a GpuContext,
    opts: &'a GpuOptions,
    shapes: Vec<Option<Vec<usize>>>,
    dev: Vec<Option<DType>>,
    consumers: Vec<Vec<usize>>,
    is_output: Vec<bool>,
    input_index: HashMap<ValueId, usize>,
    absorbed: Vec<bool>,
    steps: Vec<Step>,
    dev_avail: Vec<bool>,
    host_avail: Vec<bool>,
    root: Vec<ValueId>,
    inputs_on_device: Vec<bool>,
    input_dev_value: Vec<ValueId>,
    node_engine: HashMap<String, &'static str>,
    /// Fused groups waiting for their last node's position (all their operands
    /// are computed by then): last node -> ops.
    deferred: HashMap<usize, Vec<GpuOp>>,
    index_checks: Vec<IndexCheck>,
    /// Whether tiles are timed ([`crate::autotune`]), and the buffers timings run on.
    tune: bool,
    scratch: autotune::Scratch,
}

enum Lowered {
    /// GPU ops and the further nodes they absorbed.
    Gpu(Vec<GpuOp>, Vec<usize>),
    /// The output is the input reinterpreted.
    Alias,
    Cpu,
}

fn scalar_of(d: DType) -> Option<Scalar> {
    match d {
        DType::F32 => Some(Scalar::F32),
        DType::F16 => Some(Scalar::F16),
        DType::I32 => Some(Scalar::I32),
        DType::I64 => Some(Scalar::I64),
        _ => None,
    }
}

fn unary_of(a: Activation) -> Option<UnaryOp> {
    match a {
        Activation::None => None,
        Activation::Unary(u) => Some(u),
    }
}

impl<'a> Builder<'a> {
    fn new(g: Graph, ctx: &'a GpuContext, opts: &'a GpuOptions) -> Self {
        let nv = g.values.len();
        let half = opts.precision == Precision::F16 && ctx.caps.f16;
        let shapes: Vec<Option<Vec<usize>>> = g
            .values
            .iter()
            .map(|v| v.shape.as_deref().and_then(fixed_shape))
            .collect();
        let dev = g
            .values
            .iter()
            .map(|v| match v.dtype? {
                DType::F32 if half => Some(DType::F16),
                DType::F32 | DType::I32 | DType::I64 => v.dtype,
                // An i32 0 or 1: kernels have no byte-sized elements.
                DType::Bool => Some(DType::I32),
                DType::F16 if ctx.caps.f16 => Some(DType::F16),
                _ => None,
            })
            .collect();
        let mut is_output = vec![false; nv];
        for &o in &g.outputs {
            is_output[o] = true;
        }
        let input_index = g.inputs.iter().enumerate().map(|(i, &v)| (v, i)).collect();
        let mut host_avail = vec![false; nv];
        for (v, value) in g.values.iter().enumerate() {
            if value.constant.is_some() {
                host_avail[v] = true;
            }
        }
        for &i in &g.inputs {
            host_avail[i] = true;
        }
        Builder {
            consumers: g.consumers(),
            absorbed: vec![false; g.nodes.len()],
            inputs_on_device: vec![false; g.inputs.len()],
            input_dev_value: g.inputs.clone(),
            root: (0..nv).collect(),
            dev_avail: vec![false; nv],
            host_avail,
            shapes,
            dev,
            is_output,
            input_index,
            steps: Vec::new(),
            node_engine: HashMap::new(),
            deferred: HashMap::new(),
            index_checks: Vec::new(),
            tune: autotune::enabled(ctx, opts.autotune),
            scratch: autotune::Scratch::default(),
            g,
            ctx,
            opts,
        }
    }

    fn shape(&self, v: ValueId) -> &[usize] {
        self.shapes[v].as_deref().unwrap_or(&[])
    }

    fn numel(&self, v: ValueId) -> usize {
        self.shape(v).iter().product()
    }

    fn is_const(&self, v: ValueId) -> bool {
        self.g.values[v].constant.is_some()
    }

    fn constant(&self, v: Option<ValueId>) -> Option<Arc<Tensor>> {
        self.g.constant(v).cloned()
    }

    /// Whether `v` can live on the device: a device dtype, a known shape, within
    /// the binding limit and 32-bit indexing.
    fn can_dev(&self, v: ValueId) -> bool {
        let Some(d) = self.dev[v] else { return false };
        let Some(s) = &self.shapes[v] else {
            return false;
        };
        let n: usize = s.iter().product();
        n < (1 << 31) && ((n * d.size()) as u64) <= self.ctx.caps.max_binding
    }

    /// The float kernel type of `v`, if it is a float on the device.
    fn float(&self, v: ValueId) -> Option<Scalar> {
        match self.dev[v]? {
            DType::F32 => Some(Scalar::F32),
            DType::F16 => Some(Scalar::F16),
            _ => None,
        }
    }

    /// Whether `v` is FP32 held as FP16 on the device (FP16 precision), which
    /// kernels convert at the graph's edges. (Booleans, i32 on the device, are
    /// converted by the transfers.)
    fn halved(&self, v: ValueId) -> bool {
        self.g.values[v].dtype == Some(DType::F32) && self.dev[v] == Some(DType::F16)
    }

    /// The single node reading `v`, when `v` is not a graph output.
    fn sole_consumer(&self, v: ValueId) -> Option<usize> {
        match self.consumers[v].as_slice() {
            [c] if !self.is_output[v] && !self.absorbed[*c] => Some(*c),
            _ => None,
        }
    }

    fn place(&mut self, n: usize) -> Result<()> {
        let lowered = self.lower(n)?;
        let name = self.g.nodes[n].name.clone();
        match lowered {
            Lowered::Gpu(ops, absorbed) => {
                for &a in &absorbed {
                    self.absorbed[a] = true;
                    self.node_engine.insert(self.g.nodes[a].name.clone(), "gpu");
                }
                self.node_engine.insert(name, "gpu");
                match absorbed.iter().max() {
                    Some(&last) => {
                        self.deferred.insert(last, ops);
                    }
                    None => self.emit(ops),
                }
            }
            Lowered::Alias => {
                let x = self.g.nodes[n].inputs[0].expect("alias ops have an input");
                let out = self.g.nodes[n].outputs[0];
                self.ensure_device(x);
                self.root[out] = self.root[x];
                self.dev_avail[out] = true;
                self.node_engine.insert(name, "gpu");
            }
            Lowered::Cpu => {
                let node = &self.g.nodes[n];
                let (inputs, outputs) = (node.inputs.clone(), node.outputs.clone());
                for u in inputs.into_iter().flatten() {
                    self.ensure_host(u);
                }
                self.steps.push(Step::Cpu(n));
                for o in outputs {
                    self.host_avail[o] = true;
                }
                self.node_engine.insert(name, "cpu");
            }
        }
        Ok(())
    }

    /// Appends the steps of GPU ops (uploads of what they read first).
    fn emit(&mut self, ops: Vec<GpuOp>) {
        for op in ops {
            for u in op.inputs() {
                self.ensure_device(u);
            }
            let out = op.output();
            for t in op.temporaries() {
                self.dev_avail[t] = true;
            }
            self.steps.push(Step::Gpu(Box::new(op)));
            self.dev_avail[out] = true;
        }
    }

    fn ensure_device(&mut self, u: ValueId) {
        if self.dev_avail[u] {
            return;
        }
        if let Some(&i) = self.input_index.get(&u) {
            self.inputs_on_device[i] = true;
            let host = self.g.values[u].dtype;
            if self.halved(u) {
                // FP16 precision: upload the FP32 input as is, convert on the device.
                let raw = self.add_value(format!("{}.host", self.g.values[u].name), host, u);
                self.input_dev_value[i] = raw;
                self.dev_avail[raw] = true;
                self.push_cast(raw, u);
            }
        } else if !self.is_const(u) {
            self.steps.push(Step::Upload(u));
        }
        self.dev_avail[u] = true;
    }

    fn ensure_host(&mut self, u: ValueId) {
        if !self.host_avail[u] {
            self.steps.push(Step::Download(u));
            self.host_avail[u] = true;
        }
    }

    fn lower(&mut self, n: usize) -> Result<Lowered> {
        let node = self.g.nodes[n].clone();
        // Every value the node reads (data inputs) and writes must fit the device.
        let data_inputs: Vec<ValueId> = match &node.op {
            Op::Reshape { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Reduce { .. }
            | Op::Split { .. } => node.inputs[0].into_iter().collect(),
            Op::Clip => node.inputs[0].into_iter().collect(),
            _ => node.inputs.iter().flatten().copied().collect(),
        };
        if data_inputs.is_empty()
            || !data_inputs
                .iter()
                .chain(&node.outputs)
                .all(|&v| self.can_dev(v))
        {
            return Ok(Lowered::Cpu);
        }
        let x = data_inputs[0];
        let out = node.outputs[0];
        let one = |op: GpuOp| Ok(Lowered::Gpu(vec![op], vec![]));
        match &node.op {
            Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity => {
                // A view of a value only the host computed stays there: on the
                // device it would cost an upload, and a read-back for CPU readers.
                // (Constants are uploaded once; their views stay device aliases.)
                let host_only = self.host_avail[x] && !self.dev_avail[x] && !self.is_const(x);
                if node.outputs.len() == 1 && self.dev[x] == self.dev[out] && !host_only {
                    return Ok(Lowered::Alias);
                }
                Ok(Lowered::Cpu)
            }
            Op::Binary(_) | Op::Unary(_) | Op::Clip | Op::Sum | Op::BatchNorm { .. } => {
                self.lower_chain(n)
            }
            Op::Conv(c) => self.lower_conv(n, c.clone()),
            Op::MatMul { .. } => match self.lower_attention_chain(n) {
                Some(fused) => Ok(fused),
                None => self.lower_gemm(n),
            },
            Op::Gemm(_) => self.lower_gemm(n),
            Op::Pool(p) => {
                let Some(dtype) = self.float(x) else {
                    return Ok(Lowered::Cpu);
                };
                if node.outputs.len() != 1 || !(3..=4).contains(&self.shape(x).len()) {
                    return Ok(Lowered::Cpu);
                }
                let xs = self.shape(x).to_vec();
                let os = self.shape(out).to_vec();
                let spatial = xs.len() - 2;
                let mut axes = [(1usize, 1usize, 1usize, 1usize, 1usize, 0usize, 0usize); 2];
                for s in 0..spatial {
                    let k = *p.window.kernel.get(s).ok_or_else(|| {
                        node.error(Error::Invalid("kernel_shape is too short".into()))
                    })?;
                    let (o, begin, end) = p
                        .window
                        .output_dim(s, xs[2 + s], k)
                        .map_err(|e| node.error(e))?;
                    let a = &mut axes[2 - spatial + s];
                    *a = (
                        xs[2 + s],
                        o,
                        k,
                        p.window.strides.get(s).copied().unwrap_or(1),
                        p.window.dilations.get(s).copied().unwrap_or(1),
                        begin,
                        end,
                    );
                }
                let geometry = PoolGeometry {
                    planes: xs[0] * xs[1],
                    ih: axes[0].0,
                    iw: axes[1].0,
                    oh: axes[0].1,
                    ow: axes[1].1,
                    kernel: [axes[0].2, axes[1].2],
                    stride: [axes[0].3, axes[1].3],
                    dilation: [axes[0].4, axes[1].4],
                    pad_begin: [axes[0].5, axes[1].5],
                    pad_end: [axes[0].6, axes[1].6],
                    max: p.kind == PoolKind::Max,
                    count_include_pad: p.count_include_pad,
                };
                if geometry.planes * geometry.oh * geometry.ow != os.iter().product::<usize>() {
                    return Ok(Lowered::Cpu);
                }
                one(GpuOp::Pool {
                    x,
                    out,
                    geometry,
                    dtype,
                })
            }
            Op::GlobalPool(kind) => {
                let Some(dtype) = self.float(x) else {
                    return Ok(Lowered::Cpu);
                };
                let shape = self.shape(x).to_vec();
                if shape.len() < 3 {
                    return Ok(Lowered::Cpu);
                }
                let op = if *kind == PoolKind::Max {
                    ReduceOp::Max
                } else {
                    ReduceOp::Mean
                };
                one(GpuOp::Reduce {
                    x,
                    out,
                    op,
                    axes: (2..shape.len()).collect(),
                    shape,
                    dtype,
                })
            }
            Op::Softmax { axis, legacy } => {
                let Some(dtype) = self.float(x) else {
                    return Ok(Lowered::Cpu);
                };
                let s = self.shape(x).to_vec();
                if s.is_empty() {
                    return Ok(Lowered::Cpu);
                }
                let ax = normalize_axis(*axis, s.len()).map_err(|e| node.error(e))?;
                let outer: usize = s[..ax].iter().product();
                let (len, inner) = if *legacy {
                    (s[ax..].iter().product(), 1)
                } else {
                    (s[ax], s[ax + 1..].iter().product())
                };
                one(GpuOp::Softmax {
                    x,
                    out,
                    outer,
                    len,
                    inner,
                    dtype,
                })
            }
            Op::Reduce {
                op,
                axes,
                noop_with_empty_axes,
                ..
            } => {
                let Some(dtype) = self.float(x) else {
                    return Ok(Lowered::Cpu);
                };
                let axes = match (axes, node.inputs.get(1).copied().flatten()) {
                    (Some(a), _) => a.clone(),
                    (None, Some(v)) => match self.constant(Some(v)) {
                        Some(t) => t.to_i64_vec().map_err(|e| node.error(e))?,
                        None => return Ok(Lowered::Cpu),
                    },
                    (None, None) => vec![],
                };
                let shape = self.shape(x).to_vec();
                if axes.is_empty() && *noop_with_empty_axes {
                    return Ok(if self.dev[x] == self.dev[out] {
                        Lowered::Alias
                    } else {
                        Lowered::Cpu
                    });
                }
                let axes: Vec<usize> = if axes.is_empty() {
                    (0..shape.len()).collect()
                } else {
                    axes.iter()
                        .map(|&a| normalize_axis(a, shape.len()))
                        .collect::<Result<_>>()
                        .map_err(|e| node.error(e))?
                };
                one(GpuOp::Reduce {
                    x,
                    out,
                    op: *op,
                    shape,
                    axes,
                    dtype,
                })
            }
            Op::Transpose { perm } => {
                let shape = self.shape(x).to_vec();
                let perm = infer::resolve_perm(perm, shape.len()).map_err(|e| node.error(e))?;
                self.copy_op(x, vec![(x, Region::transpose(&shape, &perm))], out)
            }
            Op::Concat { axis } => {
                let whole = self.shape(out).to_vec();
                let ax = normalize_axis(*axis, whole.len()).map_err(|e| node.error(e))?;
                let mut start = 0;
                let mut pieces = Vec::new();
                for &v in &data_inputs {
                    let s = self.shape(v).to_vec();
                    pieces.push((v, Region::into_slice(&s, &whole, ax, start)));
                    start += s[ax];
                }
                self.copy_op(x, pieces, out)
            }
            Op::Split { axis, .. } => {
                let whole = self.shape(x).to_vec();
                let ax = normalize_axis(*axis, whole.len()).map_err(|e| node.error(e))?;
                let Some(bytes) = self.dev[x].map(DType::size) else {
                    return Ok(Lowered::Cpu);
                };
                if mover(self.ctx, bytes).is_none() {
                    return Ok(Lowered::Cpu);
                }
                let mut start = 0;
                let mut ops = Vec::new();
                for &o in &node.outputs {
                    let part = self.shape(o).to_vec();
                    ops.push(GpuOp::Copy {
                        out: o,
                        pieces: vec![(x, Region::from_slice(&whole, &part, ax, start))],
                        elem_bytes: bytes,
                    });
                    start += part[ax];
                }
                Ok(Lowered::Gpu(ops, vec![]))
            }
            Op::Cast { .. } => {
                let (Some(from), Some(to)) = (self.dev[x], self.dev[out]) else {
                    return Ok(Lowered::Cpu);
                };
                let is_bool = |v: ValueId| self.g.values[v].dtype == Some(DType::Bool);
                // A boolean is an i32 0 or 1 on the device: from one, any cast
                // is a conversion of the i32; to one, a test against zero.
                let to_bool = is_bool(out) && !is_bool(x);
                if from == to && !to_bool {
                    return Ok(Lowered::Alias);
                }
                let needs64 = from == DType::I64 || to == DType::I64;
                match (scalar_of(from), scalar_of(to)) {
                    (Some(f), Some(t)) if !needs64 || self.ctx.caps.int64 => one(GpuOp::Cast {
                        x,
                        out,
                        from: f,
                        to: t,
                        to_bool,
                        n: self.numel(x),
                    }),
                    _ => Ok(Lowered::Cpu),
                }
            }
            Op::Dyn(d) if node.outputs.len() == 1 => {
                if let Some(norm) = d.normalization() {
                    return self.lower_norm(&node, norm);
                }
                if let Some(spec) = d.attention() {
                    return Ok(self.lower_attention_op(n, spec).unwrap_or(Lowered::Cpu));
                }
                match node.onnx_op.as_str() {
                    "Where" => self.lower_where(&node),
                    "Expand" => self.lower_expand(&node),
                    _ if is_logic(&node) => self.lower_chain(n),
                    _ => self.lower_view(&node, d),
                }
            }
            Op::Gather { axis } => self.lower_gather(n, *axis),
            Op::Pad { pads, value } => self.lower_pad(&node, pads.as_deref(), *value),
            _ => Ok(Lowered::Cpu),
        }
    }

    /// An operator whose output is a strided view of its first input (Slice
    /// with constant bounds and positive steps): one copy.
    fn lower_view(
        &mut self,
        node: &metal_mps_ir::Node,
        d: &metal_mps_ir::DynOp,
    ) -> Result<Lowered> {
        let x = node.inputs[0].expect("lower checked the data inputs");
        let mut constants = vec![None];
        for &v in &node.inputs[1..] {
            match v {
                None => constants.push(None),
                Some(v) => match self.g.constant(Some(v)) {
                    Some(t) => constants.push(Some(t.as_ref())),
                    None => return Ok(Lowered::Cpu),
                },
            }
        }
        let out = node.outputs[0];
        let Some(view) = d.strided_view(self.shape(x), &constants) else {
            if let Some(picks) = d.axis_picks(self.shape(x), &constants) {
                return self.lower_axis_picks(node, picks);
            }
            return match d.picked_rows(self.shape(x), &constants) {
                Some(picked) => self.lower_picked_rows(node, picked),
                None => Ok(Lowered::Cpu),
            };
        };
        let Some(src_strides) = view
            .strides
            .iter()
            .map(|&s| usize::try_from(s).ok())
            .collect::<Option<Vec<usize>>>()
        else {
            return Ok(Lowered::Cpu);
        };
        if view.shape != self.shape(out) || self.dev[out] != self.dev[x] {
            return Ok(Lowered::Cpu);
        }
        let region = Region {
            dst_strides: metal_mps_ir::strides(&view.shape),
            shape: view.shape,
            src_offset: view.offset,
            src_strides,
            dst_offset: 0,
        };
        self.copy_op(x, vec![(x, region)], out)
    }

    /// Constant-mode Pad of 4-byte elements whose pads and fill are constants.
    fn lower_pad(
        &self,
        node: &metal_mps_ir::Node,
        attr_pads: Option<&[i64]>,
        attr_value: f32,
    ) -> Result<Lowered> {
        let x = node.inputs[0].expect("lower checked the data inputs");
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        let constant = |i: usize| input(i).map(|v| self.g.constant(Some(v)));
        let rank = self.shape(x).len();
        let pads = match attr_pads {
            Some(p) => p.to_vec(),
            None => {
                let Some(Some(p)) = constant(1) else {
                    return Ok(Lowered::Cpu);
                };
                let Ok(p) = p.to_i64_vec() else {
                    return Ok(Lowered::Cpu);
                };
                match constant(3) {
                    None => p,
                    Some(Some(axes)) => match axes
                        .to_i64_vec()
                        .and_then(|a| infer::expand_pads(&p, &a, rank))
                    {
                        Ok(p) => p,
                        Err(_) => return Ok(Lowered::Cpu),
                    },
                    Some(None) => return Ok(Lowered::Cpu),
                }
            }
        };
        let out = node.outputs[0];
        // The fill as the CPU's `layout::pad` takes it: input 2 (opset 11+), else the attribute.
        let bits = match (attr_pads, input(2), self.dev[x]) {
            (None, Some(v), dev) => match (self.g.constant(Some(v)), dev) {
                (Some(t), Some(DType::F32)) if t.dtype() == DType::F32 => t
                    .as_slice::<f32>()
                    .ok()
                    .and_then(|v| v.first())
                    .map(|v| v.to_bits()),
                (Some(t), Some(DType::I32)) if t.dtype() == DType::I32 => t
                    .as_slice::<i32>()
                    .ok()
                    .and_then(|v| v.first())
                    .map(|&v| v as u32),
                _ => None,
            },
            (_, _, Some(DType::F32)) => Some(attr_value.to_bits()),
            (_, _, Some(DType::I32)) => Some(attr_value as i32 as u32),
            _ => None,
        };
        let Some(bits) = bits else {
            return Ok(Lowered::Cpu);
        };
        if pads.len() != 2 * rank || self.dev[out] != self.dev[x] {
            return Ok(Lowered::Cpu);
        }
        Ok(Lowered::Gpu(
            vec![GpuOp::Pad {
                x,
                out,
                in_shape: self.shape(x).to_vec(),
                out_shape: self.shape(out).to_vec(),
                begin: pads[..rank].to_vec(),
                value: bits,
            }],
            vec![],
        ))
    }

    /// Gather. With a few constant indices (at most [`MAX_GATHER_COPIES`]): one
    /// copy per index, each moving a slice of the data into its place. Else
    /// the gather kernel reads the indices on the device: constant ones are
    /// checked here, and ones the host has (a graph input, a CPU node's
    /// output: an embedding's token ids) by the engine when it uploads them.
    fn lower_gather(&mut self, n: usize, axis: i64) -> Result<Lowered> {
        let node = &self.g.nodes[n];
        let (Some(x), Some(idx)) = (node.inputs[0], node.inputs.get(1).copied().flatten()) else {
            return Ok(Lowered::Cpu);
        };
        let out = node.outputs[0];
        let xs = self.shape(x).to_vec();
        let ax = normalize_axis(axis, xs.len()).map_err(|e| node.error(e))?;
        let (outer, dim): (usize, usize) = (xs[..ax].iter().product(), xs[ax]);
        let inner: usize = xs[ax + 1..].iter().product();
        let count = self.numel(idx);
        if self.dev[out] != self.dev[x] || outer * count * inner != self.numel(out) {
            return Ok(Lowered::Cpu);
        }
        let constant = self.g.constant(Some(idx)).map(|t| t.to_i64_vec());
        let in_range = |k: i64| {
            let k = if k < 0 { k + dim as i64 } else { k };
            usize::try_from(k).ok().filter(|&k| k < dim)
        };
        let check = match constant {
            Some(Ok(indices)) if !indices.is_empty() && indices.len() <= MAX_GATHER_COPIES => {
                let mut pieces = Vec::with_capacity(count);
                for (j, &k) in indices.iter().enumerate() {
                    // Out of range is the CPU's error to report.
                    let Some(k) = in_range(k) else {
                        return Ok(Lowered::Cpu);
                    };
                    pieces.push((
                        x,
                        Region {
                            shape: vec![outer, inner],
                            src_offset: k * inner,
                            src_strides: vec![dim * inner, 1],
                            dst_offset: j * inner,
                            dst_strides: vec![count * inner, 1],
                        },
                    ));
                }
                return self.copy_op(x, pieces, out);
            }
            Some(Ok(indices)) if indices.iter().all(|&k| in_range(k).is_some()) => None,
            Some(_) => return Ok(Lowered::Cpu),
            None if self.host_avail[idx] => Some(IndexCheck {
                value: idx,
                bound: dim,
                node: node.name.clone(),
            }),
            // Indices computed on the device: nothing checks them there.
            None => return Ok(Lowered::Cpu),
        };
        let index64 = match self.dev[idx] {
            Some(DType::I64) => true,
            Some(DType::I32) => false,
            _ => return Ok(Lowered::Cpu),
        };
        let Some(elem_bytes) = self.dev[x].map(DType::size) else {
            return Ok(Lowered::Cpu);
        };
        if count == 0 || dim == 0 || mover(self.ctx, elem_bytes).is_none() {
            return Ok(Lowered::Cpu);
        }
        self.index_checks.extend(check);
        Ok(Lowered::Gpu(
            vec![GpuOp::Gather {
                x,
                indices: idx,
                out,
                shape: GatherShape {
                    outer,
                    axis_dim: dim,
                    inner,
                    count,
                },
                elem_bytes,
                index64,
            }],
            vec![],
        ))
    }

    /// Rows of input 0 picked by constant indices (GatherND): the gather
    /// kernel over input 0 seen as one axis of rows, the row numbers a constant.
    fn lower_picked_rows(
        &mut self,
        node: &metal_mps_ir::Node,
        picked: metal_mps_ir::PickedRows,
    ) -> Result<Lowered> {
        let (x, out) = (
            node.inputs[0].expect("lower checked the data inputs"),
            node.outputs[0],
        );
        let (row, count) = (picked.row, picked.rows.len());
        let Some(elem_bytes) = self.dev[x].map(DType::size) else {
            return Ok(Lowered::Cpu);
        };
        if row == 0
            || count == 0
            || !self.numel(x).is_multiple_of(row)
            || count * row != self.numel(out)
            || self.dev[out] != self.dev[x]
            || mover(self.ctx, elem_bytes).is_none()
        {
            return Ok(Lowered::Cpu);
        }
        let Some(rows) = picked
            .rows
            .iter()
            .map(|&r| i32::try_from(r).ok())
            .collect::<Option<Vec<i32>>>()
        else {
            return Ok(Lowered::Cpu);
        };
        let indices = self.add_index_table(node, "rows", rows)?;
        Ok(Lowered::Gpu(
            vec![GpuOp::Gather {
                x,
                indices,
                out,
                shape: GatherShape {
                    outer: 1,
                    axis_dim: self.numel(x) / row,
                    inner: row,
                    count,
                },
                elem_bytes,
                index64: false,
            }],
            vec![],
        ))
    }

    /// A gather separable by axis (nearest-neighbour Resize): the pick kernel,
    /// each axis's input indices in one constant table.
    fn lower_axis_picks(
        &mut self,
        node: &metal_mps_ir::Node,
        picks: Vec<Vec<usize>>,
    ) -> Result<Lowered> {
        let (x, out) = (
            node.inputs[0].expect("lower checked the data inputs"),
            node.outputs[0],
        );
        let in_shape = self.shape(x).to_vec();
        let out_shape: Vec<usize> = picks.iter().map(Vec::len).collect();
        let Some(elem_bytes) = self.dev[x].map(DType::size) else {
            return Ok(Lowered::Cpu);
        };
        if out_shape != self.shape(out)
            || picks.len() != in_shape.len()
            || self.dev[out] != self.dev[x]
            || mover(self.ctx, elem_bytes).is_none()
            || out_shape.len() > crate::ops::copy::MAX_RANK
            || self.numel(out) == 0
        {
            return Ok(Lowered::Cpu);
        }
        let mut offsets = Vec::with_capacity(picks.len());
        let mut table: Vec<i32> = Vec::new();
        for (axis, p) in picks.iter().enumerate() {
            offsets.push(table.len());
            for &i in p {
                match i32::try_from(i) {
                    Ok(i) if (i as usize) < in_shape[axis] => table.push(i),
                    _ => return Ok(Lowered::Cpu),
                }
            }
        }
        let table = self.add_index_table(node, "picks", table)?;
        Ok(Lowered::Gpu(
            vec![GpuOp::Pick {
                x,
                table,
                out,
                in_shape,
                out_shape,
                offsets,
                elem_bytes,
            }],
            vec![],
        ))
    }

    /// Where(cond, a, b): the condition a boolean, `a`, `b` and the output of
    /// one device dtype, all broadcast to the output.
    fn lower_where(&self, node: &metal_mps_ir::Node) -> Result<Lowered> {
        let (&[Some(cond), Some(a), Some(b)], &[out]) = (&node.inputs[..], &node.outputs[..])
        else {
            return Ok(Lowered::Cpu);
        };
        let out_shape = self.shape(out).to_vec();
        let Some(elem_bytes) = self.dev[out].map(DType::size) else {
            return Ok(Lowered::Cpu);
        };
        if self.g.values[cond].dtype != Some(DType::Bool)
            || self.dev[a] != self.dev[out]
            || self.dev[b] != self.dev[out]
            || out_shape.len() > crate::ops::select::MAX_RANK
            || mover(self.ctx, elem_bytes).is_none()
            || [cond, a, b]
                .iter()
                .any(|&v| broadcast_strides(self.shape(v), &out_shape).is_none())
        {
            return Ok(Lowered::Cpu);
        }
        Ok(Lowered::Gpu(
            vec![GpuOp::Where {
                cond,
                a,
                b,
                out,
                shapes: [cond, a, b].map(|v| self.shape(v).to_vec()),
                out_shape,
                elem_bytes,
            }],
            vec![],
        ))
    }

    /// Expand: a copy that reads the repeated dims with stride 0.
    fn lower_expand(&self, node: &metal_mps_ir::Node) -> Result<Lowered> {
        let (Some(x), &[out]) = (node.inputs[0], &node.outputs[..]) else {
            return Ok(Lowered::Cpu);
        };
        let out_shape = self.shape(out).to_vec();
        let Some(src_strides) = broadcast_strides(self.shape(x), &out_shape) else {
            return Ok(Lowered::Cpu);
        };
        let region = Region {
            src_offset: 0,
            src_strides,
            dst_offset: 0,
            dst_strides: metal_mps_ir::strides(&out_shape),
            shape: out_shape,
        };
        self.copy_op(x, vec![(x, region)], out)
    }

    /// LayerNormalization/RMSNormalization whose scale and bias hold one value
    /// per element of a normalized row (the trailing axes), as exporters write them.
    fn lower_norm(&self, node: &metal_mps_ir::Node, norm: Normalization) -> Result<Lowered> {
        let x = node.inputs[0].expect("lower checked the data inputs");
        let (Some(scale), bias) = (
            node.inputs.get(1).copied().flatten(),
            node.inputs.get(2).copied().flatten().filter(|_| !norm.rms),
        ) else {
            return Ok(Lowered::Cpu);
        };
        let Some(dtype) = self.float(x) else {
            return Ok(Lowered::Cpu);
        };
        let shape = self.shape(x);
        let ax = normalize_axis(norm.axis, shape.len()).map_err(|e| node.error(e))?;
        let cols: usize = shape[ax..].iter().product();
        // Right-aligned against x: 1 before the axis, x's size from it on.
        let fits = |p: ValueId| {
            let ps = self.shape(p);
            self.dev[p] == self.dev[x]
                && ps.len() <= shape.len()
                && ps.iter().enumerate().all(|(i, &d)| {
                    let xi = shape.len() - ps.len() + i;
                    d == if xi < ax { 1 } else { shape[xi] }
                })
        };
        if !fits(scale) || bias.is_some_and(|b| !fits(b)) {
            return Ok(Lowered::Cpu);
        }
        Ok(Lowered::Gpu(
            vec![GpuOp::LayerNorm {
                x,
                scale,
                bias,
                out: node.outputs[0],
                rows: self.numel(x) / cols.max(1),
                cols,
                eps: norm.epsilon as f32,
                rms: norm.rms,
                dtype,
            }],
            vec![],
        ))
    }

    fn copy_op(&self, x: ValueId, pieces: Vec<(ValueId, Region)>, out: ValueId) -> Result<Lowered> {
        let Some(bytes) = self.dev[x].map(DType::size) else {
            return Ok(Lowered::Cpu);
        };
        if mover(self.ctx, bytes).is_none()
            || pieces.iter().any(|(v, _)| self.dev[*v] != self.dev[x])
        {
            return Ok(Lowered::Cpu);
        }
        Ok(Lowered::Gpu(
            vec![GpuOp::Copy {
                out,
                pieces,
                elem_bytes: bytes,
            }],
            vec![],
        ))
    }

    /// The node as the start of an elementwise chain: operands and steps.
    fn chain_form(
        &mut self,
        n: usize,
        chained: Option<ValueId>,
    ) -> Option<(Vec<ValueId>, Vec<EwStep>)> {
        let node = self.g.nodes[n].clone();
        let out_shape = self.shape(node.outputs[0]).to_vec();
        let arith = |b: BinaryOp| match b {
            BinaryOp::Add => Arith::Add,
            BinaryOp::Sub => Arith::Sub,
            BinaryOp::Mul => Arith::Mul,
            BinaryOp::Div => Arith::Div,
            BinaryOp::Pow => Arith::Pow,
        };
        // `operands` lists the values other than the chained one; step operand
        // indices are filled in by the caller (1-based placeholders here).
        match &node.op {
            Op::Unary(u) => Some((vec![node.inputs[0]?], vec![EwStep::Unary(*u)])),
            Op::Clip => {
                self.float(node.inputs[0]?)?;
                let (min, max) = metal_mps_ir::passes::clip_bounds(&self.g, &node)?;
                Some((
                    vec![node.inputs[0]?],
                    vec![EwStep::Unary(UnaryOp::Clamp { min, max })],
                ))
            }
            Op::Binary(b) => self.binary_form(
                node.inputs[0]?,
                node.inputs[1]?,
                arith(*b),
                chained,
                &out_shape,
            ),
            // On 0/1: And is the minimum, Or the maximum, Xor |a - b|, Not |x - 1|.
            Op::Dyn(_) if is_logic(&node) => {
                let x = node.inputs[0]?;
                let (op, second) = match node.onnx_op.as_str() {
                    "And" => (Arith::Min, node.inputs.get(1).copied()??),
                    "Or" => (Arith::Max, node.inputs.get(1).copied()??),
                    "Xor" => (Arith::Sub, node.inputs.get(1).copied()??),
                    _ => {
                        let t = Tensor::from_bytes(DType::Bool, vec![], &[1]).ok()?;
                        (
                            Arith::Sub,
                            self.add_const(format!("{}.true", node.name), t, x),
                        )
                    }
                };
                let (operands, mut steps) = self.binary_form(x, second, op, chained, &out_shape)?;
                if op == Arith::Sub {
                    steps.push(EwStep::Unary(UnaryOp::Abs));
                }
                Some((operands, steps))
            }
            Op::Sum => {
                let mut ins: Vec<ValueId> = node.inputs.iter().flatten().copied().collect();
                let first = match chained {
                    Some(v) => ins.iter().position(|&i| i == v)?,
                    None => ins
                        .iter()
                        .position(|&i| self.shape(i) == out_shape.as_slice())
                        .unwrap_or(0),
                };
                let f = ins.remove(first);
                if chained.is_some() && ins.contains(&f) {
                    return None;
                }
                let steps = (1..=ins.len())
                    .map(|k| EwStep::Binary {
                        op: Arith::Add,
                        operand: k,
                        swap: false,
                    })
                    .collect();
                ins.insert(0, f);
                Some((ins, steps))
            }
            Op::BatchNorm { epsilon } => {
                let x = node.inputs[0]?;
                self.float(x)?;
                let params: Option<Vec<Arc<Tensor>>> = node.inputs[1..5]
                    .iter()
                    .map(|&i| self.constant(i))
                    .collect();
                let params = params?;
                let xs = self.shape(x).to_vec();
                if xs.len() < 2 {
                    return None;
                }
                let c = xs[1];
                let [scale, bias, mean, var] = [0, 1, 2, 3].map(|i| params[i].to_f64_vec());
                if [&scale, &bias, &mean, &var].iter().any(|v| v.len() != c) {
                    return None;
                }
                let mul: Vec<f64> = (0..c)
                    .map(|i| scale[i] / (var[i] + f64::from(*epsilon)).sqrt())
                    .collect();
                let add: Vec<f64> = (0..c).map(|i| bias[i] - mean[i] * mul[i]).collect();
                let mut shape = vec![c];
                shape.extend(std::iter::repeat_n(1, xs.len() - 2));
                let dtype = self.g.values[x].dtype?;
                let make = |v: &[f64]| -> Option<Tensor> {
                    match dtype {
                        DType::F16 => Tensor::from_vec(
                            shape.clone(),
                            v.iter().map(|&x| metal_mps_ir::f16::from_f64(x)).collect(),
                        )
                        .ok(),
                        _ => Tensor::from_vec(shape.clone(), v.iter().map(|&x| x as f32).collect())
                            .ok(),
                    }
                };
                let (tm, ta) = (make(&mul)?, make(&add)?);
                let name = node.name.clone();
                let vm = self.add_const(format!("{name}.gpu_scale"), tm, x);
                let va = self.add_const(format!("{name}.gpu_shift"), ta, x);
                Some((
                    vec![x, vm, va],
                    vec![
                        EwStep::Binary {
                            op: Arith::Mul,
                            operand: 1,
                            swap: false,
                        },
                        EwStep::Binary {
                            op: Arith::Add,
                            operand: 2,
                            swap: false,
                        },
                    ],
                ))
            }
            _ => None,
        }
    }

    /// Adds a constant made at plan time, with `like`'s device dtype.
    fn add_const(&mut self, name: String, t: Tensor, like: ValueId) -> ValueId {
        let shape = t.shape().to_vec();
        let v = self.g.add_constant(name, t);
        self.shapes.push(Some(shape));
        self.dev.push(self.dev[like]);
        self.root.push(v);
        self.dev_avail.push(false);
        self.host_avail.push(true);
        self.is_output.push(false);
        self.consumers.push(Vec::new());
        v
    }

    /// Adds a constant table of indices for `node`'s kernel (`<node>.<what>`),
    /// an i32 vector on the device too.
    fn add_index_table(
        &mut self,
        node: &metal_mps_ir::Node,
        what: &str,
        indices: Vec<i32>,
    ) -> Result<ValueId> {
        let t = Tensor::from_vec(vec![indices.len()], indices).map_err(|e| node.error(e))?;
        let v = self.add_const(format!("{}.{what}", node.name), t, node.outputs[0]);
        self.dev[v] = Some(DType::I32);
        Ok(v)
    }

    /// Adds a value made at plan time, shaped like `like`, stored as `dtype` on the device.
    fn add_value(&mut self, name: String, dtype: Option<DType>, like: ValueId) -> ValueId {
        let v = self.g.add_value(name);
        self.g.values[v].dtype = dtype;
        self.g.values[v].shape = self.g.values[like].shape.clone();
        self.shapes.push(self.shapes[like].clone());
        self.dev.push(dtype);
        self.root.push(v);
        self.dev_avail.push(false);
        self.host_avail.push(false);
        self.is_output.push(false);
        self.consumers.push(Vec::new());
        v
    }

    /// Appends a device conversion `out = cast(x)` between their device dtypes.
    fn push_cast(&mut self, x: ValueId, out: ValueId) {
        let (from, to) = (
            self.dev[x].and_then(scalar_of),
            self.dev[out].and_then(scalar_of),
        );
        let (Some(from), Some(to)) = (from, to) else {
            unreachable!("casts are made between device dtypes")
        };
        self.steps.push(Step::Gpu(Box::new(GpuOp::Cast {
            x,
            out,
            from,
            to,
            to_bool: false,
            n: self.numel(x),
        })));
        self.dev_avail[out] = true;
    }

    /// Whether a chain over values of device dtype `d` can run `steps`.
    fn chain_supported(&self, d: DType, steps: &[EwStep]) -> bool {
        match d {
            DType::F32 | DType::F16 => true,
            DType::I32 => steps.iter().all(int_step_supported),
            DType::I64 => self.ctx.caps.int64 && steps.iter().all(int_step_supported),
            _ => false,
        }
    }

    /// The chain form of `a op c`: the operand that starts the chain (the
    /// chained value, else one of the output's shape) first.
    fn binary_form(
        &self,
        a: ValueId,
        c: ValueId,
        op: Arith,
        chained: Option<ValueId>,
        out_shape: &[usize],
    ) -> Option<(Vec<ValueId>, Vec<EwStep>)> {
        let swap = match chained {
            Some(v) => v == c && v != a,
            None => self.shape(a) != out_shape && self.shape(c) == out_shape,
        };
        if chained.is_some_and(|v| a == v && c == v) {
            return None;
        }
        let operands = if swap { vec![c, a] } else { vec![a, c] };
        Some((
            operands,
            vec![EwStep::Binary {
                op,
                operand: 1,
                swap,
            }],
        ))
    }

    fn lower_chain(&mut self, n: usize) -> Result<Lowered> {
        let out0 = self.g.nodes[n].outputs[0];
        let Some(d) = self.dev[out0] else {
            return Ok(Lowered::Cpu);
        };
        let Some((mut operands, mut steps)) = self.chain_form(n, None) else {
            return self.lower_batchnorm(n);
        };
        let chain_shape = self.shape(out0).to_vec();
        // Host dtypes too: booleans and i32 share the device's i32.
        let host = self.g.values[out0].dtype;
        if operands.iter().any(|&v| {
            self.dev[v] != Some(d)
                || self.g.values[v].dtype != host
                || broadcast_shapes(self.shape(v), &chain_shape).as_deref()
                    != Some(&chain_shape[..])
        }) || !self.chain_supported(d, &steps)
        {
            return Ok(Lowered::Cpu);
        }
        let mut out = out0;
        let mut absorbed = Vec::new();
        // Extend through single consumers of the same shape and dtype.
        while let Some(j) = self.sole_consumer(out) {
            let jo = self.g.nodes[j].outputs[0];
            if self.g.nodes[j].outputs.len() != 1
                || self.shape(jo) != chain_shape.as_slice()
                || self.dev[jo] != Some(d)
                || self.g.values[jo].dtype != host
                || !self.can_dev(jo)
            {
                break;
            }
            if !matches!(
                self.g.nodes[j].op,
                Op::Binary(_) | Op::Unary(_) | Op::Clip | Op::Sum | Op::BatchNorm { .. }
            ) && !is_logic(&self.g.nodes[j])
            {
                break;
            }
            let Some((others, more)) = self.chain_form(j, Some(out)) else {
                break;
            };
            // `others[0]` is the chained value; the rest become operands.
            let mut map = vec![0usize];
            let mut new_operands = operands.clone();
            for &v in &others[1..] {
                if self.dev[v] != Some(d) || self.g.values[v].dtype != host || !self.can_dev(v) {
                    map.clear();
                    break;
                }
                let idx = match new_operands.iter().position(|&o| o == v) {
                    Some(i) if i > 0 => i,
                    _ => {
                        new_operands.push(v);
                        new_operands.len() - 1
                    }
                };
                map.push(idx);
            }
            if map.is_empty()
                || new_operands.len() > MAX_OPERANDS
                || steps.len() + more.len() > MAX_STEPS
                || !self.chain_supported(d, &more)
            {
                break;
            }
            for s in more {
                steps.push(match s {
                    EwStep::Binary { op, operand, swap } => EwStep::Binary {
                        op,
                        operand: map[operand],
                        swap,
                    },
                    u => u,
                });
            }
            operands = new_operands;
            absorbed.push(j);
            out = jo;
        }
        if operands.len() > MAX_OPERANDS || steps.len() > MAX_STEPS {
            return Ok(Lowered::Cpu);
        }
        let Some(dtype) = scalar_of(d) else {
            return Ok(Lowered::Cpu);
        };
        let operands = operands
            .into_iter()
            .map(|v| (v, self.shape(v).to_vec()))
            .collect();
        Ok(Lowered::Gpu(
            vec![GpuOp::Chain {
                out,
                out_shape: chain_shape,
                operands,
                steps,
                dtype,
            }],
            absorbed,
        ))
    }

    /// BatchNormalization whose parameters are computed at run time.
    fn lower_batchnorm(&self, n: usize) -> Result<Lowered> {
        let node = &self.g.nodes[n];
        let Op::BatchNorm { epsilon } = node.op else {
            return Ok(Lowered::Cpu);
        };
        let ins: Option<Vec<ValueId>> = node.inputs.iter().take(5).copied().collect();
        let Some(ins) = ins.filter(|i| i.len() == 5) else {
            return Ok(Lowered::Cpu);
        };
        let (x, out) = (ins[0], node.outputs[0]);
        let Some(dtype) = self.float(x) else {
            return Ok(Lowered::Cpu);
        };
        let xs = self.shape(x);
        if xs.len() < 2
            || ins[1..]
                .iter()
                .any(|&p| self.dev[p] != self.dev[x] || self.numel(p) != xs[1])
        {
            return Ok(Lowered::Cpu);
        }
        let op = GpuOp::BatchNorm {
            x,
            params: [ins[1], ins[2], ins[3], ins[4]],
            out,
            n: self.numel(x),
            channels: xs[1],
            inner: xs[2..].iter().product(),
            eps: epsilon,
            dtype,
        };
        Ok(Lowered::Gpu(vec![op], vec![]))
    }

    /// After a product: a same-shape residual Add (or, when `c_ok`, a bias Add
    /// broadcast along rows), then an activation, when they are the only readers.
    /// Returns (residual, bias with its n-stride, activation, final output, absorbed).
    #[allow(clippy::type_complexity)]
    fn epilogue(
        &self,
        out: ValueId,
        act: Option<UnaryOp>,
        c_ok: Option<usize>,
    ) -> (
        Option<ValueId>,
        Option<ValueId>,
        Option<UnaryOp>,
        ValueId,
        Vec<usize>,
    ) {
        let mut absorbed = Vec::new();
        let (mut res, mut bias, mut act, mut y) = (None, None, act, out);
        if act.is_none() {
            if let Some(j) = self.sole_consumer(y) {
                let node = &self.g.nodes[j];
                if node.op == Op::Binary(BinaryOp::Add) && node.inputs.len() == 2 {
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    let other = if a == Some(y) { b } else { a };
                    if let Some(o) =
                        other.filter(|&o| o != y && self.dev[o] == self.dev[y] && self.can_dev(o))
                    {
                        let jo = node.outputs[0];
                        if self.shape(o) == self.shape(y) && self.shape(jo) == self.shape(y) {
                            res = Some(o);
                        } else if let Some(nn) = c_ok {
                            let s = self.shape(o);
                            if s.last() == Some(&nn)
                                && s.iter().rev().skip(1).all(|&d| d == 1)
                                && self.shape(jo) == self.shape(y)
                            {
                                bias = Some(o);
                            }
                        }
                        if res.is_some() || bias.is_some() {
                            absorbed.push(j);
                            y = jo;
                        }
                    }
                }
            }
            if let Some(k) = self.sole_consumer(y) {
                if let Op::Unary(u) = self.g.nodes[k].op {
                    if self.float(y).is_some() {
                        act = Some(u);
                        absorbed.push(k);
                        y = self.g.nodes[k].outputs[0];
                    }
                }
            }
        }
        (res, bias, act, y, absorbed)
    }

    fn lower_conv(&mut self, n: usize, c: metal_mps_ir::ConvAttrs) -> Result<Lowered> {
        let node = self.g.nodes[n].clone();
        let (Some(x), Some(w)) = (node.inputs[0], node.inputs.get(1).copied().flatten()) else {
            return Ok(Lowered::Cpu);
        };
        if node.inputs.get(3).copied().flatten().is_some() || c.max_pool_2x2 {
            // A fused residual or pool (CPU-only rewrites): the GPU kernels do neither.
            return Ok(Lowered::Cpu);
        }
        let Some(dtype) = self.float(x) else {
            return Ok(Lowered::Cpu);
        };
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        if !(3..=4).contains(&xs.len()) || ws.len() != xs.len() || self.dev[w] != self.dev[x] {
            return Ok(Lowered::Cpu);
        }
        let spatial = xs.len() - 2;
        let mut geo = ConvGeometry {
            batch: xs[0],
            ic: xs[1],
            ih: 1,
            iw: 1,
            oc: ws[0],
            oh: 1,
            ow: 1,
            group: c.group,
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0, 0],
            tap_major: false,
            ic_pad: 0,
        };
        for s in 0..spatial {
            let slot = 2 - spatial + s;
            let k = ws[2 + s];
            let (o, begin, _) = c
                .window
                .output_dim(s, xs[2 + s], k)
                .map_err(|e| node.error(e))?;
            if slot == 0 {
                (geo.ih, geo.oh) = (xs[2 + s], o);
            } else {
                (geo.iw, geo.ow) = (xs[2 + s], o);
            }
            geo.kernel[slot] = k;
            geo.stride[slot] = c.window.strides.get(s).copied().unwrap_or(1);
            geo.dilation[slot] = c.window.dilations.get(s).copied().unwrap_or(1);
            geo.pad[slot] = begin;
        }
        if c.group == 0
            || !geo.ic.is_multiple_of(c.group)
            || !geo.oc.is_multiple_of(c.group)
            || ws[1] * c.group != geo.ic
        {
            return Ok(Lowered::Cpu);
        }
        let out0 = node.outputs[0];
        if geo.batch * geo.oc * geo.oh * geo.ow != self.numel(out0) {
            return Ok(Lowered::Cpu);
        }
        let bias = node.inputs.get(2).copied().flatten();
        if bias.is_some_and(|b| self.dev[b] != self.dev[x]) {
            return Ok(Lowered::Cpu);
        }
        // Timing may choose cooperative-matrix tiles on an NHWC copy of the
        // input, which need the weights tap-major (with padded channels, for
        // few); the other candidates are timed on the order they will read
        // (`ConvGeometry::fit_to`).
        let nhwc = self.tune
            && crate::ops::conv::nhwc_offered(self.ctx, dtype, self.opts.cooperative_matrix);
        let reordered = self.tap_major(w, &geo, nhwc);
        if let Some((_, ic_pad)) = reordered {
            (geo.tap_major, geo.ic_pad) = (true, ic_pad);
        }
        let (residual, _, act, out, absorbed) = self.epilogue(out0, unary_of(c.activation), None);
        let (m, nn, _) = geo.gemm_dims();
        let tiles = choose_tiles(
            self.ctx,
            Product::Conv,
            dtype,
            m,
            nn,
            c.group,
            self.opts.cooperative_matrix,
        );
        let op = GpuOp::Conv {
            x,
            w,
            bias,
            residual,
            act,
            out,
            geometry: geo,
            dtype,
            tiles,
            partial: None,
            nhwc: None,
        };
        let mut op = self.tuned(op);
        if let GpuOp::Conv {
            w, geometry, tiles, ..
        } = &mut op
        {
            geometry.fit_to(self.ctx, *tiles);
            if let (true, Some((t, _))) = (geometry.tap_major, reordered) {
                *w = self.install_tap_major(n, *w, t);
            }
        }
        Ok(Lowered::Gpu(vec![op], absorbed))
    }

    /// Constant convolution weights `w` in tap-major order, and the zero
    /// channels appended to them: where the adapter gains by that order
    /// (`Capabilities::tap_major_weights`) and it serves (a window of several
    /// taps over enough channels), unpadded; else where tiles on an NHWC input
    /// may run (`nhwc`, a window of several taps, and
    /// [`ConvGeometry::nhwc_fits`] once padded to a multiple of 8 channels).
    /// The plan takes them ([`Self::install_tap_major`]) only if the chosen
    /// tiles keep them ([`ConvGeometry::fit_to`]).
    fn tap_major(&self, w: ValueId, geo: &ConvGeometry, nhwc: bool) -> Option<(Tensor, usize)> {
        let pays = self.ctx.caps.tap_major_weights && geo.tap_major_pays();
        let padded = ConvGeometry {
            tap_major: true,
            ic_pad: geo.nhwc_pad(),
            ..geo.clone()
        };
        let for_nhwc = nhwc && geo.kernel != [1, 1] && padded.nhwc_fits();
        if !(pays || for_nhwc) || self.input_index.contains_key(&w) {
            return None;
        }
        let ic_pad = if pays { 0 } else { padded.ic_pad };
        let t = self.constant(Some(w))?;
        Some((tap_major_weights(&t, ic_pad).ok()?, ic_pad))
    }

    /// Convolution `n` reads `t`, its weights `w` in tap-major order: in place
    /// when `n` is their only reader, else a copy.
    fn install_tap_major(&mut self, n: usize, w: ValueId, t: Tensor) -> ValueId {
        if self.sole_consumer(w) == Some(n) {
            self.shapes[w] = Some(t.shape().to_vec());
            self.g.set_constant(w, Arc::new(t));
            w
        } else {
            let name = format!("{}.tap_major", self.g.nodes[n].name);
            self.add_const(name, t, w)
        }
    }

    fn lower_gemm(&mut self, n: usize) -> Result<Lowered> {
        let node = self.g.nodes[n].clone();
        let (Some(a), Some(b)) = (node.inputs[0], node.inputs.get(1).copied().flatten()) else {
            return Ok(Lowered::Cpu);
        };
        let Some(dtype) = self.float(a) else {
            return Ok(Lowered::Cpu);
        };
        if self.dev[b] != self.dev[a] {
            return Ok(Lowered::Cpu);
        }
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        let out0 = node.outputs[0];
        let mut g = Gemm {
            m: 0,
            n: 0,
            k: 0,
            batch: vec![],
            a_stride: [0, 0],
            b_stride: [0, 0],
            a_batch_stride: vec![],
            b_batch_stride: vec![],
            alpha: 1.0,
            beta: 1.0,
            c: None,
            residual: None,
            activation: None,
        };
        let mut c_input = None;
        let act;
        match &node.op {
            Op::Gemm(attrs) => {
                if sa.len() != 2 || sb.len() != 2 {
                    return Ok(Lowered::Cpu);
                }
                let (m, k) = if attrs.trans_a {
                    (sa[1], sa[0])
                } else {
                    (sa[0], sa[1])
                };
                let nn = if attrs.trans_b { sb[0] } else { sb[1] };
                g.m = m;
                g.n = nn;
                g.k = k;
                g.a_stride = if attrs.trans_a { [1, m] } else { [k, 1] };
                g.b_stride = if attrs.trans_b { [1, k] } else { [nn, 1] };
                g.alpha = attrs.alpha;
                g.beta = attrs.beta;
                act = unary_of(attrs.activation);
                if let Some(cv) = node
                    .inputs
                    .get(2)
                    .copied()
                    .flatten()
                    .filter(|_| attrs.beta != 0.0)
                {
                    if self.dev[cv] != self.dev[a] {
                        return Ok(Lowered::Cpu);
                    }
                    let cs = self.shape(cv).to_vec();
                    let strides = match cs.as_slice() {
                        [] => [0, 0],
                        [x] if *x == 1 => [0, 0],
                        [x] if *x == nn => [0, 1],
                        [r, q] => [if *r == 1 { 0 } else { *q }, if *q == 1 { 0 } else { 1 }],
                        _ => return Ok(Lowered::Cpu),
                    };
                    c_input = Some((cv, strides));
                }
            }
            Op::MatMul { activation } => {
                act = unary_of(*activation);
                if sa.is_empty() || sb.is_empty() {
                    return Ok(Lowered::Cpu);
                }
                let a2 = if sa.len() == 1 {
                    vec![1, sa[0]]
                } else {
                    sa.clone()
                };
                let b2 = if sb.len() == 1 {
                    vec![sb[0], 1]
                } else {
                    sb.clone()
                };
                let (ra, rb) = (a2.len(), b2.len());
                g.m = a2[ra - 2];
                g.k = a2[ra - 1];
                g.n = b2[rb - 1];
                if b2[rb - 2] != g.k {
                    return Ok(Lowered::Cpu);
                }
                let (ab, bb) = (&a2[..ra - 2], &b2[..rb - 2]);
                let Some(batch) = broadcast_shapes(ab, bb) else {
                    return Ok(Lowered::Cpu);
                };
                let bstrides = |own: &[usize], inner: usize| -> Vec<usize> {
                    let st = metal_mps_ir::strides(own);
                    (0..batch.len())
                        .map(|d| match (d + own.len()).checked_sub(batch.len()) {
                            Some(i) if own[i] != 1 => st[i] * inner,
                            _ => 0,
                        })
                        .collect()
                };
                g.a_batch_stride = bstrides(ab, g.m * g.k);
                g.b_batch_stride = bstrides(bb, g.k * g.n);
                g.a_stride = [g.k, 1];
                g.b_stride = [g.n, 1];
                g.batch = batch;
            }
            _ => return Ok(Lowered::Cpu),
        }
        let c_ok = if c_input.is_none() { Some(g.n) } else { None };
        let (residual, bias, act, out, absorbed) = self.epilogue(out0, act, c_ok);
        g.activation = act;
        if let Some(bv) = bias {
            c_input = Some((bv, [0, 1]));
            g.beta = 1.0;
        }
        // A batch over A alone (B shared, A contiguous) is one taller product.
        let a_contiguous = {
            let mut expect = g.m * g.k;
            let mut ok = true;
            for d in (0..g.batch.len()).rev() {
                ok &= g.a_batch_stride[d] == expect;
                expect *= g.batch[d];
            }
            ok
        };
        if !g.batch.is_empty()
            && g.b_batch_stride.iter().all(|&s| s == 0)
            && a_contiguous
            && c_input.is_none_or(|c| c.1[0] == 0)
        {
            g.m *= g.batch.iter().product::<usize>();
            g.batch.clear();
            g.a_batch_stride.clear();
            g.b_batch_stride.clear();
        }
        // Coalesce leading batch dims beyond what the kernel takes.
        if g.batch.len() > MAX_BATCH_DIMS
            || g.batch.iter().product::<usize>() > crate::ops::MAX_GROUPS as usize
        {
            return Ok(Lowered::Cpu);
        }
        let batch = g.batch.iter().product::<usize>().max(1);
        if batch * g.m * g.n != self.numel(out0) {
            return Ok(Lowered::Cpu);
        }
        let tiles = choose_tiles(
            self.ctx,
            Product::MatMul,
            dtype,
            g.m,
            g.n,
            batch,
            self.opts.cooperative_matrix,
        );
        let op = GpuOp::Gemm {
            a,
            b,
            c: c_input,
            residual,
            out,
            gemm: g,
            dtype,
            tiles,
            partial: None,
        };
        Ok(Lowered::Gpu(vec![self.tuned(op)], absorbed))
    }

    /// `op` with the tiles timed fastest on this adapter, when tuning is on.
    fn tuned(&mut self, mut op: GpuOp) -> GpuOp {
        if self.tune {
            let (shapes, dev) = (&self.shapes, &self.dev);
            let bytes = |v: ValueId| value_bytes(shapes[v].as_deref(), dev[v]);
            let allow_coop = self.opts.cooperative_matrix;
            // A timing that cannot run (memory) leaves the heuristic's tiles.
            if let Err(e) = autotune::tune(self.ctx, &mut op, allow_coop, &bytes, &mut self.scratch)
            {
                if self.ctx.pool.config().verbose {
                    eprintln!("[metal_mps gpu] autotune skipped a layer: {e}");
                }
            }
        }
        self.add_temporaries(&mut op);
        op
    }

    /// Gives a product whose tiles need temporaries ([`GpuOp::partial_bytes`],
    /// [`GpuOp::nhwc_bytes`]) values of its own for it (their lifetime is the
    /// op's own step).
    fn add_temporaries(&mut self, op: &mut GpuOp) {
        let sizes = [op.partial_bytes(), op.nhwc_bytes()];
        let out = op.output();
        let mut make = |suffix: &str, bytes: u64| {
            let n = bytes.div_ceil(4) as usize;
            let name = format!("{}.{suffix}", self.g.values[out].name);
            let v = self.add_value(name, Some(DType::F32), out);
            self.g.values[v].shape = Some(vec![metal_mps_ir::Dim::Fixed(n)]);
            self.shapes[v] = Some(vec![n]);
            v
        };
        if let (GpuOp::Conv { partial, .. } | GpuOp::Gemm { partial, .. }, b @ 1..) =
            (&mut *op, sizes[0])
        {
            *partial = Some(make("splits", b));
        }
        if let (GpuOp::Conv { nhwc, .. }, b @ 1..) = (&mut *op, sizes[1]) {
            *nhwc = Some(make("nhwc", b));
        }
    }

    fn finish(mut self) -> Result<GpuPlan> {
        let mut outputs = Vec::new();
        for &o in &self.g.outputs.clone() {
            if self.host_avail[o] {
                outputs.push(OutSrc::Host(o));
            } else if self.dev_avail[o] {
                let host = self.g.values[o].dtype;
                if self.halved(o) {
                    // FP16 precision: convert on the device, download FP32.
                    let raw = self.add_value(format!("{}.host", self.g.values[o].name), host, o);
                    self.push_cast(o, raw);
                    outputs.push(OutSrc::Device(raw));
                } else {
                    outputs.push(OutSrc::Device(o));
                }
            } else {
                return Err(Error::InvalidModel(format!(
                    "output '{}' is never computed",
                    self.g.values[o].name
                )));
            }
        }
        // Device homes of roots.
        let nv = self.g.values.len();
        let uploaded: HashMap<ValueId, usize> = self
            .input_dev_value
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i))
            .collect();
        let mut home: Vec<Option<DevHome>> = vec![None; nv];
        for (v, h) in home.iter_mut().enumerate() {
            if self.root[v] != v || !self.dev_avail[v] {
                continue;
            }
            *h = if let Some(&i) = uploaded.get(&v) {
                Some(DevHome::Input(i))
            } else if self.is_const(v) {
                Some(DevHome::Const)
            } else {
                None // a slot, assigned below
            };
        }
        // Lifetimes of slot roots, in steps.
        let end = self.steps.len();
        let mut def: Vec<Option<usize>> = vec![None; nv];
        let mut last: Vec<usize> = vec![0; nv];
        for (s, step) in self.steps.iter().enumerate() {
            match step {
                Step::Gpu(op) => {
                    for u in op.inputs() {
                        let r = self.root[u];
                        last[r] = last[r].max(s);
                    }
                    for v in std::iter::once(op.output()).chain(op.temporaries()) {
                        let r = self.root[v];
                        def[r].get_or_insert(s);
                        last[r] = last[r].max(s);
                    }
                }
                Step::Upload(v) => {
                    let r = self.root[*v];
                    def[r].get_or_insert(s);
                    last[r] = last[r].max(s);
                }
                Step::Download(v) => {
                    let r = self.root[*v];
                    last[r] = last[r].max(s);
                }
                Step::Cpu(_) => {}
            }
        }
        for o in &outputs {
            if let OutSrc::Device(v) = o {
                last[self.root[*v]] = end;
            }
        }
        let bytes = |v: ValueId, this: &Builder| -> u64 {
            crate::transfer::aligned(value_bytes(this.shapes[v].as_deref(), this.dev[v]))
        };
        let mut by_step: Vec<Vec<ValueId>> = vec![Vec::new(); end + 1];
        for v in 0..nv {
            if let Some(d) = def[v] {
                if home[v].is_none() && self.root[v] == v {
                    by_step[d].push(v);
                }
            }
        }
        let mut slot_bytes: Vec<u64> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut release: Vec<Vec<usize>> = vec![Vec::new(); end + 1];
        for (s, defined) in by_step.iter().enumerate() {
            for &v in defined {
                let need = bytes(v, &self);
                // Best fit among free slots, else grow the largest, else a new slot.
                let pick = free
                    .iter()
                    .enumerate()
                    .filter(|(_, &sl)| slot_bytes[sl] >= need)
                    .min_by_key(|(_, &sl)| slot_bytes[sl])
                    .map(|(i, _)| i)
                    .or_else(|| {
                        free.iter()
                            .enumerate()
                            .max_by_key(|(_, &sl)| slot_bytes[sl])
                            .map(|(i, _)| i)
                    });
                let slot = match pick {
                    Some(i) => free.swap_remove(i),
                    None => {
                        slot_bytes.push(0);
                        slot_bytes.len() - 1
                    }
                };
                slot_bytes[slot] = slot_bytes[slot].max(need);
                home[v] = Some(DevHome::Slot(slot));
                release[last[v].min(end)].push(slot);
            }
            free.append(&mut release[s]);
        }
        Ok(GpuPlan {
            graph: self.g,
            shapes: self.shapes,
            dev_dtype: self.dev,
            root: self.root,
            home,
            slot_bytes,
            steps: self.steps,
            inputs_on_device: self.inputs_on_device,
            input_dev_value: self.input_dev_value,
            outputs,
            node_engine: self.node_engine,
            index_checks: self.index_checks,
        })
    }
}
