//! [`GpuRunner`]: a model prepared for the GPU, run synchronously ([`GpuRunner::run`])
//! or asynchronously ([`GpuRunner::submit`] then [`Pending::wait`]).
//!
//! A runner holds the optimized graph, its weights on the device (uploaded once)
//! and one compiled [`GpuPlan`] per set of input shapes (a dynamic batch gets
//! one per batch size, least recently used dropped first). Each plan keeps
//! execution instances (slot buffers, input buffers, bind groups); an inference
//! borrows a free instance, so several run at once from several threads while
//! one's uploads overlap another's compute.

use crate::context::GpuContext;
use crate::ops::{self, Binding, Prepared};
use crate::options::GpuOptions;
use crate::plan::{specialize_prefix, DevHome, GpuPlan, OutSrc, Step};
use crate::pool::{BufferClass, PoolStats, PooledBuffer};
use crate::split::Split;
use crate::timing::KernelTimer;
use crate::transfer::{self, Download};
use crate::FOLDED;
use metal_mps_ir::{f16, fixed_shape, DType, Dim, Error, Graph, Result, Tensor, ValueId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A weight on the device.
struct Weight {
    /// Keeps the host tensor alive, so that its address stays a valid key.
    _host: Arc<Tensor>,
    buffer: wgpu::Buffer,
    bytes: u64,
}

/// The buffers and bind groups of one inference in flight.
struct Instance {
    slots: Vec<PooledBuffer>,
    inputs: Vec<Option<PooledBuffer>>,
    /// Per step of the plan (empty for non-GPU steps).
    prepared: Vec<Vec<Prepared>>,
    _params: Option<PooledBuffer>,
}

struct GpuSpec {
    plan: GpuPlan,
    /// Per value: its weight buffer, for constants on the device.
    weights: HashMap<ValueId, Arc<Weight>>,
    free: Mutex<Vec<Instance>>,
}

enum Spec {
    Gpu(Box<GpuSpec>),
    /// Shapes depend on data from a node on: cut there (see [`Split`]).
    Split(Box<Split>),
}

/// Compiled plans by input shapes, least recently used first.
type Specs = Vec<(Vec<Vec<usize>>, Arc<Spec>)>;

/// A model on the GPU engine. `Send + Sync`.
pub struct GpuRunner {
    ctx: Arc<GpuContext>,
    graph: Graph,
    opts: GpuOptions,
    specs: Mutex<Specs>,
    weights: Mutex<HashMap<(usize, DType), Arc<Weight>>>,
    dummy: wgpu::Buffer,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes of `t` as the device stores them (`dev` differs only for FP16 precision).
fn device_bytes(t: &Tensor, dev: DType) -> Result<std::borrow::Cow<'_, [u8]>> {
    if t.dtype() == dev {
        return Ok(std::borrow::Cow::Borrowed(t.as_bytes()));
    }
    match (t.dtype(), dev) {
        (DType::F32, DType::F16) => {
            let v: Vec<f16> = t
                .as_slice::<f32>()?
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect();
            Ok(std::borrow::Cow::Owned(bytemuck::cast_slice(&v).to_vec()))
        }
        // A boolean is an i32 0 or 1 on the device.
        (DType::Bool, DType::I32) => {
            let v: Vec<i32> = t.as_bytes().iter().map(|&b| i32::from(b != 0)).collect();
            Ok(std::borrow::Cow::Owned(bytemuck::cast_slice(&v).to_vec()))
        }
        (h, d) => Err(Error::Device(format!(
            "no conversion from {h} on the host to {d} on the device"
        ))),
    }
}

/// A host tensor of `dtype` and `shape` from device bytes of `dev`.
fn host_tensor(bytes: &[u8], dtype: DType, dev: DType, shape: Vec<usize>) -> Result<Tensor> {
    if dtype == dev {
        return Tensor::from_bytes(dtype, shape, bytes);
    }
    match (dev, dtype) {
        (DType::F16, DType::F32) => {
            let h: &[f16] = bytemuck::cast_slice(bytes);
            Tensor::from_vec(shape, h.iter().map(|x| x.to_f32()).collect())
        }
        (DType::I32, DType::Bool) => {
            let b: Vec<u8> = bytes
                .chunks_exact(4)
                .map(|x| u8::from(x != [0; 4]))
                .collect();
            Tensor::from_bytes(DType::Bool, shape, &b)
        }
        (d, h) => Err(Error::Device(format!(
            "no conversion from {d} on the device to {h} on the host"
        ))),
    }
}

impl GpuRunner {
    /// Prepares `graph` (optimized, shapes inferred) for the GPU. When every
    /// input shape is fixed, kernels are compiled and weights uploaded now;
    /// otherwise at the first run of each input shape.
    pub fn new(graph: &Graph, opts: &GpuOptions) -> Result<GpuRunner> {
        let ctx = GpuContext::shared(opts.adapter.as_deref())?;
        if let Some(p) = &opts.pool {
            ctx.pool.set_config(p.clone());
        }
        let dummy = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("metal_mps unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let runner = GpuRunner {
            ctx,
            graph: graph.clone(),
            opts: opts.clone(),
            specs: Mutex::new(Vec::new()),
            weights: Mutex::new(HashMap::new()),
            dummy,
        };
        let fixed: Option<Vec<Vec<usize>>> = graph
            .inputs
            .iter()
            .map(|&v| graph.values[v].shape.as_deref().and_then(fixed_shape))
            .collect();
        if let Some(shapes) = fixed {
            if let Spec::Gpu(g) = &*runner.spec(&shapes)? {
                let inst = runner.instance(g)?;
                lock(&g.free).push(inst);
            }
        }
        if runner.ctx.pool.config().verbose {
            runner.report_cpu_nodes();
        }
        Ok(runner)
    }

    /// `MPS_VERBOSE=1`: names every node the plan leaves to the CPU engine (for
    /// the declared input shapes, symbolic dims taken as 1).
    fn report_cpu_nodes(&self) {
        let engines = self.node_engines();
        let on_cpu: Vec<&(String, &str)> = engines.iter().filter(|(_, e)| *e == "cpu").collect();
        eprintln!(
            "[metal_mps gpu] {} of {} nodes run on the GPU, {} on the CPU",
            engines.len() - on_cpu.len(),
            engines.len(),
            on_cpu.len()
        );
        for (node, (name, _)) in self.graph.nodes.iter().zip(&engines) {
            if on_cpu.iter().any(|(n, _)| n == name) {
                eprintln!(
                    "[metal_mps gpu] CPU fallback: node '{name}' ({})",
                    node.op.name()
                );
            }
        }
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The graph this runner executes (as given to [`GpuRunner::new`]).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The adapter the model runs on.
    pub fn adapter(&self) -> &crate::AdapterDescription {
        &self.ctx.adapter
    }

    /// Runs one inference: inputs in `graph.inputs` order, outputs in `graph.outputs` order.
    pub fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.submit(inputs)?.wait()
    }

    /// Starts one inference and returns without waiting for the GPU. The inputs
    /// are copied before this returns.
    pub fn submit(&self, inputs: &[&Tensor]) -> Result<Pending> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(Error::InvalidInput(format!(
                "{} inputs given, the model has {}",
                inputs.len(),
                self.graph.inputs.len()
            )));
        }
        for (t, &v) in inputs.iter().zip(&self.graph.inputs) {
            let value = &self.graph.values[v];
            if value.dtype.is_some_and(|d| d != t.dtype()) {
                return Err(Error::InvalidInput(format!(
                    "input '{}' must be {}, got {}",
                    value.name,
                    value.dtype.unwrap_or(t.dtype()),
                    t.dtype()
                )));
            }
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let spec = self.spec(&shapes)?;
        let g = match &*spec {
            Spec::Gpu(g) => g,
            Spec::Split(split) => {
                let outs = split.run(inputs)?;
                return Ok(Pending {
                    ready: outs.into_iter().map(Some).collect(),
                    inflight: None,
                });
            }
        };
        let inst = match lock(&g.free).pop() {
            Some(i) => i,
            None => self.instance(g)?,
        };
        match self.start(g, &inst, inputs) {
            Ok((index, downloads, ready)) => Ok(Pending {
                ready,
                inflight: Some(Inflight {
                    ctx: self.ctx.clone(),
                    spec: spec.clone(),
                    instance: Some(inst),
                    index,
                    downloads,
                }),
            }),
            Err(e) => {
                // The instance may hold partial work: let it finish before reuse.
                let _ = self.ctx.wait_idle();
                lock(&g.free).push(inst);
                Err(e)
            }
        }
    }

    /// Each node of the graph and the engine that runs it (`"gpu"` or `"cpu"`;
    /// `"folded"`: computed while planning, such as the shape arithmetic of
    /// exported models), for the most recent input shapes, or for symbolic dims
    /// set to 1 before any run.
    pub fn node_engines(&self) -> Vec<(String, &'static str)> {
        let spec = lock(&self.specs).last().map(|s| s.1.clone());
        let spec = match spec {
            Some(s) => Some(s),
            None => {
                let shapes: Vec<Vec<usize>> = self
                    .graph
                    .inputs
                    .iter()
                    .map(|&v| {
                        self.graph.values[v]
                            .shape
                            .as_deref()
                            .unwrap_or(&[])
                            .iter()
                            .map(|d| match d {
                                Dim::Fixed(n) => *n,
                                _ => 1,
                            })
                            .collect()
                    })
                    .collect();
                self.spec(&shapes).ok()
            }
        };
        let split = match spec.as_deref() {
            Some(Spec::Split(s)) => s.node_engines().into_iter().collect(),
            _ => HashMap::new(),
        };
        self.graph
            .nodes
            .iter()
            .map(|n| {
                let engine = match spec.as_deref() {
                    Some(Spec::Gpu(g)) => g.plan.node_engine.get(&n.name).copied(),
                    Some(Spec::Split(_)) => split.get(&n.name).copied(),
                    None => Some("cpu"),
                };
                let engine = engine.unwrap_or(FOLDED);
                (n.name.clone(), engine)
            })
            .collect()
    }

    /// For the most recent input shapes: (kernel launches per inference, CPU
    /// nodes, transfers between engines, bytes of the static memory plan).
    pub fn plan_stats(&self) -> Option<(usize, usize, usize, u64)> {
        let spec = lock(&self.specs).last().map(|s| s.1.clone())?;
        let Spec::Gpu(g) = &*spec else { return None };
        let launches = lock(&g.free)
            .first()
            .map(|i| i.prepared.iter().map(Vec::len).sum())
            .unwrap_or(0);
        let cpu = g
            .plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Cpu(_)))
            .count();
        let transfers = g
            .plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Upload(_) | Step::Download(_)))
            .count();
        Some((launches, cpu, transfers, g.plan.slot_bytes.iter().sum()))
    }

    /// Statistics of the device's buffer pool (shared by the models on it).
    pub fn pool_stats(&self) -> PoolStats {
        self.ctx.pool.stats()
    }

    /// Bytes of weights uploaded to the device.
    pub fn weight_bytes(&self) -> u64 {
        lock(&self.weights).values().map(|w| w.bytes).sum()
    }

    /// The compiled plan for these input shapes, built on first use.
    fn spec(&self, shapes: &[Vec<usize>]) -> Result<Arc<Spec>> {
        {
            let mut specs = lock(&self.specs);
            if let Some(i) = specs.iter().position(|(s, _)| s.as_slice() == shapes) {
                let e = specs.remove(i);
                let spec = e.1.clone();
                specs.push(e);
                return Ok(spec);
            }
        }
        let spec = Arc::new(match specialize_prefix(&self.graph, shapes)? {
            (g, None) => {
                let plan = GpuPlan::build(g, &self.ctx, &self.opts)?;
                let weights = self.upload_weights(&plan)?;
                Spec::Gpu(Box::new(GpuSpec {
                    plan,
                    weights,
                    free: Mutex::new(Vec::new()),
                }))
            }
            (g, Some((at, why))) => {
                if self.ctx.pool.config().verbose {
                    eprintln!(
                        "[metal_mps gpu] input shapes {shapes:?}: node '{}' runs on the CPU and the \
                         plan continues from the shapes it produces: {why}",
                        g.nodes[at].name
                    );
                }
                Spec::Split(Box::new(Split::new(g, at, &self.opts)?))
            }
        });
        let mut specs = lock(&self.specs);
        if let Some(i) = specs.iter().position(|(s, _)| s.as_slice() == shapes) {
            return Ok(specs[i].1.clone());
        }
        specs.push((shapes.to_vec(), spec.clone()));
        while specs.len() > self.opts.max_specializations.max(1) {
            specs.remove(0);
        }
        Ok(spec)
    }

    fn upload_weights(&self, plan: &GpuPlan) -> Result<HashMap<ValueId, Arc<Weight>>> {
        let mut out = HashMap::new();
        let mut cache = lock(&self.weights);
        for (v, home) in plan.home.iter().enumerate() {
            if *home != Some(DevHome::Const) {
                continue;
            }
            let (Some(t), Some(dev)) = (plan.graph.values[v].constant.clone(), plan.dev_dtype[v])
            else {
                return Err(Error::Device(format!(
                    "constant '{}' has no device form",
                    plan.graph.values[v].name
                )));
            };
            let key = (Arc::as_ptr(&t) as usize, dev);
            let w = match cache.get(&key) {
                Some(w) => w.clone(),
                None => {
                    let bytes = device_bytes(&t, dev)?;
                    let size = transfer::aligned(bytes.len() as u64);
                    let buffer = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&plan.graph.values[v].name),
                        size,
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST
                            | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    });
                    transfer::write(&self.ctx, &buffer, &bytes);
                    let w = Arc::new(Weight {
                        _host: t.clone(),
                        buffer,
                        bytes: size,
                    });
                    cache.insert(key, w.clone());
                    w
                }
            };
            out.insert(v, w);
        }
        Ok(out)
    }

    /// The buffer holding value `v` in `inst`.
    fn buffer<'a>(g: &'a GpuSpec, inst: &'a Instance, v: ValueId) -> Result<&'a wgpu::Buffer> {
        let r = g.plan.root[v];
        match g.plan.home[r] {
            Some(DevHome::Slot(s)) => Ok(&inst.slots[s]),
            Some(DevHome::Input(i)) => inst.inputs[i]
                .as_deref()
                .ok_or_else(|| Error::Device("input not on the device".into())),
            Some(DevHome::Const) => g
                .weights
                .get(&r)
                .map(|w| &w.buffer)
                .ok_or_else(|| Error::Device("weight not uploaded".into())),
            None => Err(Error::Device(format!(
                "value '{}' has no device buffer",
                g.plan.graph.values[v].name
            ))),
        }
    }

    /// Allocates an instance's buffers and builds its bind groups.
    fn instance(&self, g: &GpuSpec) -> Result<Instance> {
        let plan = &g.plan;
        let slots = plan
            .slot_bytes
            .iter()
            .map(|&b| self.ctx.pool.acquire(BufferClass::Storage, b.max(4)))
            .collect::<Result<Vec<_>>>()?;
        let inputs = plan
            .input_dev_value
            .iter()
            .zip(&plan.inputs_on_device)
            .map(|(&v, &on)| {
                on.then(|| {
                    self.ctx
                        .pool
                        .acquire(BufferClass::Storage, transfer::aligned(plan.dev_bytes(v)))
                })
                .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let mut inst = Instance {
            slots,
            inputs,
            prepared: Vec::new(),
            _params: None,
        };
        let dummy = Binding::whole(&self.dummy, 16);
        let mut calls = Vec::new();
        let mut counts = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            let before = calls.len();
            if let Step::Gpu(op) = step {
                if plan.dev_bytes(op.output()) > 0 {
                    let bind = |v: ValueId| -> Binding {
                        let buf =
                            Self::buffer(g, &inst, v).expect("every device value has a buffer");
                        Binding {
                            buffer: buf.clone(),
                            offset: 0,
                            size: plan.dev_bytes(v),
                        }
                    };
                    calls.extend(op.calls(&self.ctx, &bind, &dummy)?);
                }
            }
            counts.push(calls.len() - before);
        }
        let (params, mut prepared) = ops::prepare(&self.ctx, &calls)?;
        // The calls compiled what this plan needs: keep it for the next process.
        if let Err(e) = self.ctx.pipelines.persist() {
            if self.ctx.pool.config().verbose {
                eprintln!("[metal_mps gpu] pipeline cache not written: {e}");
            }
        }
        let mut per_step = Vec::with_capacity(counts.len());
        for c in counts.into_iter().rev() {
            per_step.push(prepared.split_off(prepared.len() - c));
        }
        per_step.reverse();
        inst.prepared = per_step;
        inst._params = params;
        Ok(inst)
    }

    /// Uploads, records and submits one inference; returns the last submission,
    /// the downloads of device outputs and the outputs already on the host.
    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        g: &GpuSpec,
        inst: &Instance,
        inputs: &[&Tensor],
    ) -> Result<(
        wgpu::SubmissionIndex,
        Vec<(usize, Download, DType, DType, Vec<usize>)>,
        Vec<Option<Tensor>>,
    )> {
        let plan = &g.plan;
        let ctx = &self.ctx;
        for (i, (&v, &on)) in plan
            .input_dev_value
            .iter()
            .zip(&plan.inputs_on_device)
            .enumerate()
        {
            if on {
                check_indices(plan, plan.graph.inputs[i], inputs[i])?;
                let dev = plan.dev_dtype[v]
                    .ok_or_else(|| Error::Device("input has no device dtype".into()))?;
                transfer::write(
                    ctx,
                    Self::buffer(g, inst, v)?,
                    &device_bytes(inputs[i], dev)?,
                );
            }
        }
        let input_pos: HashMap<ValueId, usize> = plan
            .graph
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i))
            .collect();
        let mut host: HashMap<ValueId, Tensor> = HashMap::new();
        let new_encoder = || {
            ctx.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("metal_mps inference"),
                })
        };
        let mut enc = new_encoder();
        let mut timer = KernelTimer::start(ctx, &inst.prepared);
        let mut recorded = false;
        let mut pending: Vec<(ValueId, Download)> = Vec::new();
        let mut s = 0;
        while s < plan.steps.len() {
            match &plan.steps[s] {
                Step::Gpu(_) => {
                    // Consecutive GPU steps share one compute pass.
                    let mut e = s;
                    while e < plan.steps.len() && matches!(plan.steps[e], Step::Gpu(_)) {
                        e += 1;
                    }
                    let batch: Vec<&Prepared> = inst.prepared[s..e].iter().flatten().collect();
                    if let Some(timer) = timer.as_mut() {
                        // One pass per dispatch, each with its own timestamps.
                        for p in batch {
                            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                                label: Some("metal_mps"),
                                timestamp_writes: timer.next(p),
                            });
                            dispatch(&mut pass, p);
                            recorded = true;
                        }
                    } else if !batch.is_empty() {
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some("metal_mps"),
                            timestamp_writes: None,
                        });
                        for p in batch {
                            dispatch(&mut pass, p);
                        }
                        recorded = true;
                    }
                    s = e;
                    continue;
                }
                Step::Download(v) => {
                    let d = transfer::record_download(
                        ctx,
                        &mut enc,
                        Self::buffer(g, inst, *v)?,
                        plan.dev_bytes(*v) as usize,
                    )?;
                    pending.push((*v, d));
                    recorded = true;
                }
                Step::Cpu(n) => {
                    if !pending.is_empty() {
                        let index = ctx
                            .queue
                            .submit([std::mem::replace(&mut enc, new_encoder()).finish()]);
                        recorded = false;
                        for (v, d) in pending.drain(..) {
                            let bytes = d.read(ctx, &index)?;
                            let value = &plan.graph.values[v];
                            let dtype = value
                                .dtype
                                .ok_or_else(|| Error::Device("untyped value".into()))?;
                            let dev = plan.dev_dtype[v].unwrap_or(dtype);
                            host.insert(
                                v,
                                host_tensor(
                                    &bytes,
                                    dtype,
                                    dev,
                                    plan.shapes[v].clone().unwrap_or_default(),
                                )?,
                            );
                        }
                    }
                    let node = &plan.graph.nodes[*n];
                    let outs = {
                        let args: Vec<Option<&Tensor>> = node
                            .inputs
                            .iter()
                            .map(|i| {
                                i.and_then(|v| match input_pos.get(&v) {
                                    Some(&k) => Some(inputs[k]),
                                    None => plan.graph.values[v]
                                        .constant
                                        .as_deref()
                                        .or_else(|| host.get(&v)),
                                })
                            })
                            .collect();
                        metal_mps_cpu::eval_node(node, &args)?
                    };
                    for (&o, t) in node.outputs.iter().zip(outs) {
                        host.insert(o, t);
                    }
                }
                Step::Upload(v) => {
                    if recorded {
                        ctx.queue
                            .submit([std::mem::replace(&mut enc, new_encoder()).finish()]);
                        recorded = false;
                    }
                    let t = host.get(v).ok_or_else(|| {
                        Error::Device("uploading a value the CPU did not compute".into())
                    })?;
                    check_indices(plan, *v, t)?;
                    let dev = plan.dev_dtype[*v].unwrap_or(t.dtype());
                    transfer::write(ctx, Self::buffer(g, inst, *v)?, &device_bytes(t, dev)?);
                }
            }
            s += 1;
        }
        let mut downloads = Vec::new();
        let mut ready = Vec::with_capacity(plan.outputs.len());
        for (k, o) in plan.outputs.iter().enumerate() {
            match *o {
                OutSrc::Device(v) => {
                    let d = transfer::record_download(
                        ctx,
                        &mut enc,
                        Self::buffer(g, inst, v)?,
                        plan.dev_bytes(v) as usize,
                    )?;
                    let dtype = plan.graph.values[v]
                        .dtype
                        .ok_or_else(|| Error::Device("untyped output".into()))?;
                    downloads.push((
                        k,
                        d,
                        dtype,
                        plan.dev_dtype[v].unwrap_or(dtype),
                        plan.shapes[v].clone().unwrap_or_default(),
                    ));
                    ready.push(None);
                }
                OutSrc::Host(v) => {
                    let t = match input_pos.get(&v) {
                        Some(&i) => inputs[i].clone(),
                        None => match &plan.graph.values[v].constant {
                            Some(c) => (**c).clone(),
                            None => host.get(&v).cloned().ok_or_else(|| {
                                Error::Device("an output was not computed".into())
                            })?,
                        },
                    };
                    ready.push(Some(t));
                }
            }
        }
        let stamps = timer.map(|t| t.finish(ctx, &mut enc)).transpose()?;
        let index = ctx.queue.submit([enc.finish()]);
        if let Some(stamps) = stamps {
            stamps.record(ctx, &index)?;
        }
        Ok((index, downloads, ready))
    }
}

fn dispatch(pass: &mut wgpu::ComputePass<'_>, p: &Prepared) {
    pass.set_pipeline(&p.pipeline.pipeline);
    pass.set_bind_group(0, &p.bind_group, &[]);
    pass.dispatch_workgroups(p.groups[0], p.groups[1], p.groups[2]);
}

struct Inflight {
    ctx: Arc<GpuContext>,
    spec: Arc<Spec>,
    instance: Option<Instance>,
    index: wgpu::SubmissionIndex,
    downloads: Vec<(usize, Download, DType, DType, Vec<usize>)>,
}

impl Inflight {
    fn give_back(&mut self) {
        if let (Some(inst), Spec::Gpu(g)) = (self.instance.take(), &*self.spec) {
            lock(&g.free).push(inst);
        }
    }
}

/// An inference submitted to the GPU. [`Pending::wait`] returns its outputs;
/// dropping it waits for the GPU and discards them.
pub struct Pending {
    ready: Vec<Option<Tensor>>,
    inflight: Option<Inflight>,
}

impl Pending {
    /// Waits for the GPU and returns the outputs in `graph.outputs` order.
    pub fn wait(mut self) -> Result<Vec<Tensor>> {
        let mut ready = std::mem::take(&mut self.ready);
        if let Some(mut f) = self.inflight.take() {
            let result = (|| -> Result<()> {
                for (k, d, dtype, dev, shape) in std::mem::take(&mut f.downloads) {
                    let t = if dtype == dev {
                        let mut t = Tensor::zeros(dtype, shape)?;
                        d.read_into(&f.ctx, &f.index, t.as_bytes_mut())?;
                        t
                    } else {
                        host_tensor(&d.read(&f.ctx, &f.index)?, dtype, dev, shape)?
                    };
                    ready[k] = Some(t);
                }
                f.ctx.wait_for(f.index.clone())
            })();
            f.give_back();
            result?;
        }
        ready
            .into_iter()
            .map(|t| t.ok_or_else(|| Error::Device("an output is missing".into())))
            .collect()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut f) = self.inflight.take() {
            let _ = f.ctx.wait_for(f.index.clone());
            f.give_back();
        }
    }
}

/// The checks of the indices in `t`, value `v`, that a Gather reads on the device.
fn check_indices(plan: &GpuPlan, v: ValueId, t: &Tensor) -> Result<()> {
    plan.index_checks
        .iter()
        .filter(|c| c.value == v)
        .try_for_each(|c| c.check(t))
}
