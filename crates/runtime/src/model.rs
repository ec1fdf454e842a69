//! [`Model`]: import, optimize, plan, and the engine that runs it.

use crate::options::{Device, MemoryStats, Options};
use crate::validate::{order_inputs, TensorInfo};
use metal_mps_cpu::{CpuEvaluator, CpuPlan};
use metal_mps_ir::{infer, passes, Error, Graph, Result, Tensor};
use std::path::Path;

/// A loaded, compiled model. `Send + Sync`: run it from many threads.
pub struct Model {
    engine: Engine,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    opset: i64,
    options: Options,
}

enum Engine {
    Cpu(CpuPlan),
}

/// One node of the compiled graph and the engine that runs it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub op: String,
    pub engine: Device,
}

pub(crate) fn gpu_available() -> bool {
    false
}

impl Model {
    /// Loads `path` (external data files beside it), optimizes and compiles it.
    pub fn load(path: impl AsRef<Path>, options: &Options) -> Result<Model> {
        let imported = metal_mps_onnx::load_model(path)?;
        Model::from_graph(imported.graph, imported.opset, options)
    }

    /// Loads a model from bytes; `base_dir` is where external data is looked up.
    pub fn from_bytes(bytes: &[u8], base_dir: Option<&Path>, options: &Options) -> Result<Model> {
        let imported = metal_mps_onnx::parse_model(bytes, base_dir)?;
        Model::from_graph(imported.graph, imported.opset, options)
    }

    fn from_graph(mut graph: Graph, opset: i64, options: &Options) -> Result<Model> {
        let info = |ids: &[usize], g: &Graph| -> Result<Vec<TensorInfo>> {
            ids.iter()
                .map(|&v| {
                    let value = &g.values[v];
                    Ok(TensorInfo {
                        name: value.name.clone(),
                        dtype: value.dtype.ok_or_else(|| Error::InvalidModel(format!("value '{}' has no type", value.name)))?,
                        shape: value.shape.clone().unwrap_or_default(),
                    })
                })
                .collect()
        };
        let inputs = info(&graph.inputs, &graph)?;
        for i in &graph.inputs {
            if graph.values[*i].shape.is_none() {
                return Err(Error::InvalidModel(format!("input '{}' has no declared shape", graph.values[*i].name)));
            }
        }
        if options.optimize {
            passes::optimize(&mut graph, &CpuEvaluator)?;
            infer::infer_graph(&mut graph)?;
        }
        let outputs = info(&graph.outputs, &graph)?;
        let engine = match options.device {
            Device::Cpu => Engine::Cpu(CpuPlan::new(graph)),
            Device::Gpu => {
                return Err(Error::Device("no GPU adapter is available; use the cpu device".into()));
            }
        };
        tracing::debug!(opset, "model compiled");
        Ok(Model { engine, inputs, outputs, opset, options: options.clone() })
    }

    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// The engine actually running the model.
    pub fn device(&self) -> Device {
        match self.engine {
            Engine::Cpu(_) => Device::Cpu,
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The default-domain opset the model declared.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// The compiled (optimized) graph.
    pub fn graph(&self) -> &Graph {
        match &self.engine {
            Engine::Cpu(p) => p.graph(),
        }
    }

    /// Each node of the compiled graph with the engine that runs it.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        match &self.engine {
            Engine::Cpu(p) => p
                .graph()
                .nodes
                .iter()
                .map(|n| NodeInfo { name: n.name.clone(), op: n.op.name(), engine: Device::Cpu })
                .collect(),
        }
    }

    /// Runs the model. Inputs are named; outputs come in the order of
    /// [`Model::outputs`]. Inputs are validated (names, dtypes, ranks, fixed
    /// and symbolic dims) before anything runs: a mismatch is
    /// [`Error::InvalidInput`].
    pub fn run(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
        let ordered = order_inputs(&self.inputs, inputs)?;
        // A bug in a kernel must not take the caller (a server) down: a panic
        // becomes an error for this request alone.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &self.engine {
            Engine::Cpu(p) => p.run(&ordered),
        }))
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Invalid(format!("internal error while running the model: {msg}")))
        })
    }

    pub fn memory_stats(&self) -> MemoryStats {
        match &self.engine {
            Engine::Cpu(p) => {
                let weights: usize = p.graph().values.iter().filter_map(|v| v.constant.as_ref()).map(|t| t.as_bytes().len()).sum();
                MemoryStats { bytes_weights: weights as u64, bytes_pooled: p.pooled_bytes() as u64, ..Default::default() }
            }
        }
    }
}
