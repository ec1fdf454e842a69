//! [`Model`]: import, optimize, plan, and the engine that runs it.

use crate::options::{Device, MemoryStats, Options};
use crate::validate::{order_inputs, TensorInfo};
use metal_mps_cpu::{CpuEvaluator, CpuPlan};
use metal_mps_ir::{infer, passes, Datum, Error, Graph, Kind, Result, Tensor};
use metal_mps_onnx::{ImportedModel, ModelMetadata};
use std::path::Path;

/// A loaded, compiled model. `Send + Sync`: run it from many threads.
pub struct Model {
    engine: Engine,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    opset: i64,
    metadata: ModelMetadata,
    options: Options,
    /// Whether every input and output is a tensor (else [`Model::run_data`] runs it).
    tensor_io: bool,
}

enum Engine {
    Cpu(Box<CpuPlan>),
    Gpu(Box<metal_mps_gpu::GpuRunner>),
}

/// One node of the compiled graph and the engine that runs it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub op: String,
    /// `None`: computed while planning for the current input shapes (the
    /// GPU engine folds shape arithmetic into constants), so no engine runs it.
    pub engine: Option<Device>,
}

pub(crate) fn gpu_available() -> bool {
    crate::gpu::available()
}

/// An inference in flight: [`PendingRun::wait`] gives its outputs.
pub struct PendingRun {
    inner: Pending,
}

enum Pending {
    /// The GPU engine's submission: uploads and dispatches are queued.
    Gpu(metal_mps_gpu::Pending),
    /// The CPU engine computes while submitting; the result is ready.
    Ready(Result<Vec<Tensor>>),
}

impl PendingRun {
    /// Blocks until the outputs are ready (in the order of [`Model::outputs`]).
    pub fn wait(self) -> Result<Vec<Tensor>> {
        match self.inner {
            Pending::Gpu(p) => p.wait(),
            Pending::Ready(r) => r,
        }
    }
}

impl Model {
    /// Loads `path` (external data files beside it), optimizes and compiles it.
    pub fn load(path: impl AsRef<Path>, options: &Options) -> Result<Model> {
        let imported = metal_mps_onnx::load_model(path)?;
        catch_panic("loading", || Model::from_imported(imported, options))
    }

    /// Loads a model from bytes; `base_dir` is where external data is looked up.
    pub fn from_bytes(bytes: &[u8], base_dir: Option<&Path>, options: &Options) -> Result<Model> {
        let imported = metal_mps_onnx::parse_model(bytes, base_dir)?;
        catch_panic("loading", || Model::from_imported(imported, options))
    }

    fn from_imported(imported: ImportedModel, options: &Options) -> Result<Model> {
        let ImportedModel {
            mut graph,
            opset,
            metadata,
        } = imported;
        let info = |ids: &[usize], g: &Graph| -> Result<Vec<TensorInfo>> {
            ids.iter()
                .map(|&v| {
                    let value = &g.values[v];
                    Ok(TensorInfo {
                        name: value.name.clone(),
                        dtype: value.dtype.ok_or_else(|| {
                            Error::InvalidModel(format!("value '{}' has no type", value.name))
                        })?,
                        shape: value.shape.clone().unwrap_or_default(),
                    })
                })
                .collect()
        };
        let inputs = info(&graph.inputs, &graph)?;
        for i in &graph.inputs {
            if graph.values[*i].shape.is_none() && graph.values[*i].kind.is_tensor() {
                return Err(Error::InvalidModel(format!(
                    "input '{}' has no declared shape",
                    graph.values[*i].name
                )));
            }
        }
        if options.optimize {
            passes::optimize(&mut graph, &CpuEvaluator)?;
            infer::infer_graph(&mut graph)?;
        }
        let outputs = info(&graph.outputs, &graph)?;
        check_plan_size(&graph)?;
        // Sequences and optionals live on the CPU: a graph that has them at
        // its top level runs on the CPU engine whatever the device.
        let data = graph.values.iter().any(|v| !v.kind.is_tensor());
        let cpu_plan = |graph| -> Result<Engine> {
            let plan = CpuPlan::new(graph);
            Ok(Engine::Cpu(Box::new(match options.threads {
                Some(n) => plan.with_threads(n)?,
                None => plan,
            })))
        };
        let engine = match options.device {
            Device::Gpu if !data => Engine::Gpu(Box::new(crate::gpu::prepare(&graph, options)?)),
            Device::Gpu => {
                tracing::info!(
                    "the graph has sequence or optional values: it runs on the CPU engine"
                );
                cpu_plan(graph)?
            }
            Device::Cpu => cpu_plan(graph)?,
        };
        tracing::debug!(opset, "model compiled");
        let mut model = Model {
            engine,
            inputs,
            outputs,
            opset,
            metadata,
            options: options.clone(),
            tensor_io: true,
        };
        model.tensor_io = model.require_tensor_io().is_ok();
        Ok(model)
    }

    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// The kind of each input (tensor, sequence, optional), in the order of [`Model::inputs`].
    pub fn input_kinds(&self) -> Vec<Kind> {
        let g = self.graph();
        g.inputs.iter().map(|&v| g.values[v].kind.clone()).collect()
    }

    /// The kind of each output, in the order of [`Model::outputs`].
    pub fn output_kinds(&self) -> Vec<Kind> {
        let g = self.graph();
        g.outputs
            .iter()
            .map(|&v| g.values[v].kind.clone())
            .collect()
    }

    /// Fails, naming the value, when an input or output is a sequence or an
    /// optional rather than a tensor (for callers that exchange tensors only,
    /// such as the servers: KServe has no such types).
    pub fn require_tensor_io(&self) -> Result<()> {
        let g = self.graph();
        for (what, ids) in [("input", &g.inputs), ("output", &g.outputs)] {
            for &v in ids.iter() {
                let value = &g.values[v];
                if !value.kind.is_tensor() {
                    return Err(Error::Unsupported(format!(
                        "model {what} '{}' is a {}; only tensor inputs and outputs can be \
                         served (sequences and optionals may be used inside the graph)",
                        value.name,
                        value.describe()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The engine actually running the model.
    pub fn device(&self) -> Device {
        match self.engine {
            Engine::Cpu(_) => Device::Cpu,
            Engine::Gpu(_) => Device::Gpu,
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The default-domain opset the model declared.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// What the model file says about itself (producer, names, version, custom properties).
    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// The compiled (optimized) graph.
    pub fn graph(&self) -> &Graph {
        match &self.engine {
            Engine::Cpu(p) => p.graph(),
            Engine::Gpu(r) => r.graph(),
        }
    }

    /// Each node of the compiled graph with the engine that runs it.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        match &self.engine {
            Engine::Cpu(p) => p
                .graph()
                .nodes
                .iter()
                .map(|n| NodeInfo {
                    name: n.name.clone(),
                    op: n.op.name(),
                    engine: Some(Device::Cpu),
                })
                .collect(),
            Engine::Gpu(r) => r
                .graph()
                .nodes
                .iter()
                .zip(r.node_engines())
                .map(|(n, (_, engine))| NodeInfo {
                    name: n.name.clone(),
                    op: n.op.name(),
                    engine: match engine {
                        "gpu" => Some(Device::Gpu),
                        metal_mps_gpu::FOLDED => None,
                        _ => Some(Device::Cpu),
                    },
                })
                .collect(),
        }
    }

    /// Runs the model. Inputs are named; outputs come in the order of
    /// [`Model::outputs`]. Inputs are validated (names, dtypes, ranks, fixed
    /// and symbolic dims) before anything runs: a mismatch is
    /// [`Error::InvalidInput`].
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
        if !self.tensor_io {
            self.require_tensor_io()
                .map_err(|e| Error::InvalidInput(format!("{e}; use Model::run_data")))?;
        }
        let ordered = order_inputs(&self.inputs, inputs)?;
        // A bug in a kernel must not take the caller (a server) down: a panic
        // becomes an error for this request alone.
        guarded(|| match &self.engine {
            Engine::Cpu(p) => p.run(&ordered),
            Engine::Gpu(r) => r.run(&ordered),
        })
    }

    /// [`Model::run`] for models whose inputs or outputs may be sequences or
    /// optionals: one value per input, in the order of [`Model::inputs`].
    /// Tensors are validated as [`Model::run`] does; other values must be of
    /// the declared kind and element dtype.
    pub fn run_data(&self, inputs: &[Datum]) -> Result<Vec<Datum>> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::InvalidInput(format!(
                "{} inputs given, the model has {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        let kinds = self.input_kinds();
        let mut tensors: Vec<(&str, &Tensor)> = Vec::new();
        for ((info, kind), d) in self.inputs.iter().zip(&kinds).zip(inputs) {
            if !d.fits(kind) {
                return Err(Error::InvalidInput(format!(
                    "input '{}' must be a {kind}, got a {}",
                    info.name,
                    d.describe()
                )));
            }
            match d {
                Datum::Tensor(t) => tensors.push((&info.name, t)),
                d => check_elements(&info.name, info.dtype, d)?,
            }
        }
        let declared: Vec<_> = self
            .inputs
            .iter()
            .zip(&kinds)
            .filter(|(_, k)| k.is_tensor())
            .map(|(i, _)| i.clone())
            .collect();
        order_inputs(&declared, &tensors)?;
        let refs: Vec<&Datum> = inputs.iter().collect();
        guarded(|| match &self.engine {
            Engine::Cpu(p) => p.run_data(&refs),
            Engine::Gpu(r) => {
                let ts = inputs
                    .iter()
                    .map(Datum::tensor)
                    .collect::<Result<Vec<&Tensor>>>()?;
                Ok(r.run(&ts)?.into_iter().map(Datum::Tensor).collect())
            }
        })
    }

    /// [`Model::run`] with one tensor per input, in the order of [`Model::inputs`].
    pub fn run_in_order(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::InvalidInput(format!(
                "{} inputs given, the model has {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        let named: Vec<(&str, &Tensor)> = self
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .zip(inputs)
            .collect();
        self.run(&named)
    }

    /// Starts an inference and returns at once on the GPU engine (inputs are
    /// uploaded and the work queued), so the caller can prepare the next
    /// request while this one computes; several may be in flight from several
    /// threads. On the CPU engine the work is done before this returns.
    pub fn submit(&self, inputs: &[(&str, &Tensor)]) -> Result<PendingRun> {
        let ordered = order_inputs(&self.inputs, inputs)?;
        let inner = match &self.engine {
            Engine::Cpu(p) => Pending::Ready(guarded(|| p.run(&ordered))),
            Engine::Gpu(r) => Pending::Gpu(guarded(|| r.submit(&ordered))?),
        };
        Ok(PendingRun { inner })
    }

    pub fn memory_stats(&self) -> MemoryStats {
        match &self.engine {
            Engine::Gpu(r) => crate::gpu::memory_stats(r),
            Engine::Cpu(p) => {
                let weights: usize = p
                    .graph()
                    .values
                    .iter()
                    .filter_map(|v| v.constant.as_ref())
                    .map(|t| t.as_bytes().len())
                    .sum::<usize>()
                    + p.packed_bytes();
                MemoryStats {
                    bytes_weights: weights as u64,
                    bytes_pooled: p.pooled_bytes() as u64,
                    ..Default::default()
                }
            }
        }
    }
}

/// Refuses a model whose weights plus statically sized intermediates exceed
/// [`metal_mps_ir::limits::max_plan_bytes`], before any intermediate is allocated.
fn check_plan_size(graph: &Graph) -> Result<()> {
    let weights = graph
        .values
        .iter()
        .filter_map(|v| v.constant.as_ref())
        .fold(0usize, |sum, t| sum.saturating_add(t.as_bytes().len()));
    let plan = metal_mps_ir::plan::Plan::new(graph);
    metal_mps_ir::limits::check_plan_bytes(weights.saturating_add(plan.static_bytes()))
}

/// Fails unless every tensor inside a sequence or optional input is `dtype`.
fn check_elements(name: &str, dtype: metal_mps_ir::DType, d: &Datum) -> Result<()> {
    let tensors: Vec<&Tensor> = match d {
        Datum::Tensor(t) => vec![t],
        Datum::Sequence(s) => s.iter().collect(),
        Datum::Optional(None) => vec![],
        Datum::Optional(Some(v)) => return check_elements(name, dtype, v),
    };
    match tensors.iter().find(|t| t.dtype() != dtype) {
        Some(t) => Err(Error::InvalidInput(format!(
            "input '{name}' holds {dtype} tensors, got a {} one",
            t.dtype()
        ))),
        None => Ok(()),
    }
}

/// Runs `f` as one run under the time limit ([`metal_mps_ir::limits::within_run_time`]),
/// turning a panic into an error: a bug in a kernel must not take the caller
/// (a server) down, only fail this request.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    // CPU plans on a pool worker set their own deadline.
    catch_panic("running", || metal_mps_ir::limits::within_run_time(f))
}

/// Runs `f`, turning a panic into an error that says what was being done
/// (loading also runs operator code: constant folding).
fn catch_panic<T>(doing: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Invalid(format!(
            "internal error while {doing} the model: {msg}"
        )))
    })
}
