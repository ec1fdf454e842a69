//! Runs a planned graph on the CPU.

use crate::kernels::{
    conv_packed, gemm_packed, matmul_packed, on_caller, view_shape, ConvWeights, PackedLinear,
};
use crate::{eval_op, Out};
use metal_mps_ir::plan::{Home, Plan};
use metal_mps_ir::{passes, DType, Datum, Dim, Error, Graph, Node, Op, Result, Storage, Tensor};
use rayon::Yield;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A graph compiled for the CPU: residual additions and 2×2 max pools fused
/// into the convolutions that feed them, its plan, the convolution weights
/// packed once, and a pool of slot buffers, so that repeated runs reuse their
/// intermediate memory. Shareable across threads: concurrent runs each take
/// their own set of slots.
pub struct CpuPlan {
    graph: Graph,
    plan: Plan,
    /// Per node: the packed weights of a Conv, MatMul or Gemm whose weights are constant.
    packed: Vec<Option<Packed>>,
    /// Per node: whether it reads or writes a sequence or optional (run through
    /// [`metal_mps_ir::Operator::eval_data`]).
    on_data: Vec<bool>,
    slot_sets: Mutex<Vec<Vec<Storage>>>,
    /// Bytes of the constants the graph reads: with the inputs', the measure
    /// of a run that [`INLINE_BYTES`] compares.
    constant_bytes: usize,
    /// This plan's own thread pool ([`CpuPlan::with_threads`]); else rayon's
    /// process-wide one.
    pool: Option<rayon::ThreadPool>,
}

/// A run whose inputs and constants together take at most this many bytes
/// runs on the calling thread: its kernels are too small to spread over the
/// cores, and handing it to the thread pool (waking a worker, then waking the
/// caller when it is done) would cost more than the run itself (a one-Add
/// model: ~60 µs through the pool on a virtual machine, ~2 µs inline).
const INLINE_BYTES: usize = 64 * 1024;

impl CpuPlan {
    pub fn new(mut graph: Graph) -> CpuPlan {
        passes::fuse_residual_add(&mut graph);
        passes::fuse_max_pool(&mut graph);
        passes::fuse_matmul_bias(&mut graph);
        let plan = Plan::new(&graph);
        let packed = graph
            .nodes
            .iter()
            .map(|node| {
                let w = node.inputs.get(1).copied().flatten()?;
                let w = graph.values[w].constant.as_deref()?;
                if w.dtype() != DType::F32 {
                    return None;
                }
                // Weights that do not pack are left to the kernel, which reports why.
                match &node.op {
                    Op::Conv(attrs) => ConvWeights::new(w, attrs, output_pixels(&graph, node))
                        .ok()
                        .map(Packed::Conv),
                    Op::MatMul { .. } => PackedLinear::matmul(w).ok().map(Packed::Linear),
                    Op::Gemm(attrs) => PackedLinear::gemm(attrs, w).ok().map(Packed::Linear),
                    _ => None,
                }
            })
            .collect();
        let constant_bytes = graph
            .values
            .iter()
            .filter_map(|v| v.constant.as_ref())
            .map(|t| t.as_bytes().len())
            .sum();
        let on_data = graph
            .nodes
            .iter()
            .map(|n| {
                let non_tensor = |v: &usize| !graph.values[*v].kind.is_tensor();
                n.inputs.iter().flatten().any(non_tensor) || n.outputs.iter().any(non_tensor)
            })
            .collect();
        CpuPlan {
            graph,
            plan,
            packed,
            on_data,
            slot_sets: Mutex::new(Vec::new()),
            constant_bytes,
            pool: None,
        }
    }

    /// Runs the kernels of this plan on a pool of its own with `threads`
    /// threads (at least 1) instead of the process-wide one.
    pub fn with_threads(mut self, threads: usize) -> Result<CpuPlan> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("metal-mps-cpu-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {threads} CPU threads: {e}")))?;
        self.pool = Some(pool);
        Ok(self)
    }

    /// Bytes of the packed weights.
    pub fn packed_bytes(&self) -> usize {
        self.packed
            .iter()
            .flatten()
            .map(|p| match p {
                Packed::Conv(w) => w.bytes(),
                Packed::Linear(w) => w.bytes(),
            })
            .sum()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Bytes held by pooled slot buffers (for memory statistics).
    pub fn pooled_bytes(&self) -> usize {
        let sets = self.slot_sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.iter().flatten().map(Storage::capacity_bytes).sum()
    }

    /// Runs with `inputs` in the order of the graph's inputs (already
    /// validated); returns the graph's outputs in order.
    pub fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let fed: Vec<Fed> = inputs.iter().map(|&t| Fed::Tensor(t)).collect();
        self.run_fed(&fed)?
            .into_iter()
            .zip(&self.graph.outputs)
            .map(|(d, &o)| {
                d.into_tensor().map_err(|_| {
                    Error::InvalidInput(format!(
                        "output '{}' is a {}, not a tensor",
                        self.graph.values[o].name, self.graph.values[o].kind
                    ))
                })
            })
            .collect()
    }

    /// [`CpuPlan::run`] for graphs whose inputs or outputs may be sequences or
    /// optionals.
    pub fn run_data(&self, inputs: &[&Datum]) -> Result<Vec<Datum>> {
        let fed: Vec<Fed> = inputs
            .iter()
            .map(|&d| match d {
                Datum::Tensor(t) => Fed::Tensor(t),
                d => Fed::Data(d),
            })
            .collect();
        self.run_fed(&fed)
    }

    fn run_fed(&self, inputs: &[Fed]) -> Result<Vec<Datum>> {
        let g = &self.graph;
        if inputs.len() != g.inputs.len() {
            return Err(Error::InvalidInput(format!(
                "expected {} inputs, got {}",
                g.inputs.len(),
                inputs.len()
            )));
        }
        let mut slots = self.take_slots();
        let mut owned: Vec<Option<Tensor>> = vec![None; g.values.len()];
        let mut fed: Vec<Option<&Tensor>> = vec![None; g.values.len()];
        let mut data: Vec<Option<Cow<Datum>>> = vec![None; g.values.len()];
        for (&v, f) in g.inputs.iter().zip(inputs) {
            match f {
                Fed::Tensor(t) => fed[v] = Some(t),
                Fed::Data(d) => data[v] = Some(Cow::Borrowed(d)),
            }
        }
        let input_bytes: usize = inputs.iter().map(Fed::bytes).sum();
        let result = if self.constant_bytes.saturating_add(input_bytes) <= INLINE_BYTES {
            on_caller(|| self.execute(&mut slots, &mut owned, &fed, &mut data))
        } else {
            self.run_on_pool(&mut slots, &mut owned, &fed, &mut data)
        };
        self.return_slots(slots);
        result?;
        g.outputs
            .iter()
            .map(|&o| {
                if let Some(d) = data[o].as_ref() {
                    return Ok(d.clone().into_owned());
                }
                match self.plan.home[o] {
                    Home::Input => Ok(fed[o].expect("inputs are fed").clone()),
                    Home::Constant => {
                        Ok((**g.values[o].constant.as_ref().expect("constant")).clone())
                    }
                    _ => owned[o].take().ok_or_else(|| {
                        Error::Invalid(format!("output '{}' was not computed", g.values[o].name))
                    }),
                }
                .map(Datum::Tensor)
            })
            .collect()
    }

    /// [`CpuPlan::execute`] on a worker of the thread pool: each kernel's
    /// parallel work then starts from inside the pool instead of waking it
    /// from outside. The other workers poll for that work while the plan runs
    /// instead of sleeping between kernels: waking a sleeping worker takes
    /// 50–300 µs on a virtual machine, a large share of a small kernel.
    fn run_on_pool(
        &self,
        slots: &mut [Storage],
        owned: &mut [Option<Tensor>],
        fed: &[Option<&Tensor>],
        data: &mut [Option<Cow<Datum>>],
    ) -> Result<()> {
        if let Some(pool) = &self.pool {
            if pool.current_thread_index().is_none() {
                return pool.install(|| self.run_on_pool(slots, owned, fed, data));
            }
        }
        let done = AtomicBool::new(false);
        rayon::scope(|scope| {
            let (owner, done) = (rayon::current_thread_index(), &done);
            for _ in 1..rayon::current_num_threads() {
                scope.spawn(move |_| poll_for_work(owner, done));
            }
            let result = self.execute(slots, owned, fed, data);
            done.store(true, Ordering::Release);
            result
        })
    }

    fn execute(
        &self,
        slots: &mut [Storage],
        owned: &mut [Option<Tensor>],
        fed: &[Option<&Tensor>],
        data: &mut [Option<Cow<Datum>>],
    ) -> Result<()> {
        metal_mps_ir::limits::within_run_time(|| self.execute_nodes(slots, owned, fed, data))
    }

    fn execute_nodes(
        &self,
        slots: &mut [Storage],
        owned: &mut [Option<Tensor>],
        fed: &[Option<&Tensor>],
        data: &mut [Option<Cow<Datum>>],
    ) -> Result<()> {
        let g = &self.graph;
        for (step, &n) in self.plan.order.iter().enumerate() {
            let node = &g.nodes[n];
            metal_mps_ir::limits::check_run_time()?;
            let started = crate::profile::enabled().then(Instant::now);
            if self.on_data[n] {
                self.execute_on_data(node, owned, fed, data)?;
                continue;
            }
            if self.view_in_place(step, node, slots, owned, fed)? {
                if let Some(started) = started {
                    crate::profile::record(&profile_key(node, ""), started.elapsed());
                }
                continue;
            }
            let storages = node
                .outputs
                .iter()
                .map(|&o| match self.plan.home[o] {
                    Home::Slot(s) => std::mem::take(&mut slots[s]),
                    _ => Storage::default(),
                })
                .collect();
            let outs = {
                let inputs = self.node_inputs(node, fed, owned)?;
                let mut out = Out::reusing(storages);
                let (x, third) = (
                    crate::kernels::arg(&inputs, 0),
                    crate::kernels::opt(&inputs, 2),
                );
                match (&node.op, &self.packed[n]) {
                    (Op::Conv(attrs), Some(Packed::Conv(w))) => conv_packed(
                        attrs,
                        x?,
                        w,
                        third,
                        crate::kernels::opt(&inputs, 3),
                        &mut out,
                    )
                    .map(|t| vec![t]),
                    (Op::MatMul { activation }, Some(Packed::Linear(w)))
                        if x.as_ref().is_ok_and(|x| x.dtype() == DType::F32) =>
                    {
                        matmul_packed(x?, w, third, *activation, &mut out).map(|t| vec![t])
                    }
                    (Op::Gemm(attrs), Some(Packed::Linear(w)))
                        if x.as_ref().is_ok_and(|x| x.dtype() == DType::F32) =>
                    {
                        gemm_packed(attrs, x?, w, third, &mut out).map(|t| vec![t])
                    }
                    (op, _) => eval_op(op, &inputs, node.outputs.len(), &mut out),
                }
                .map_err(|e| node.error(e))?
            };
            if let Some(started) = started {
                let packed = match &self.packed[n] {
                    Some(Packed::Conv(w)) => w.kind(),
                    Some(Packed::Linear(_)) => " (packed)",
                    None => "",
                };
                crate::profile::record(&profile_key(node, packed), started.elapsed());
            }
            for (&o, t) in node.outputs.iter().zip(outs) {
                owned[o] = Some(t);
            }
            for &v in &self.plan.release_after[step] {
                if let (Home::Slot(s), Some(t)) = (self.plan.home[v], owned[v].take()) {
                    slots[s] = t.into_storage();
                }
            }
        }
        Ok(())
    }

    /// The tensors `node` reads: fed inputs, tensors of this run, constants.
    fn node_inputs<'a>(
        &'a self,
        node: &Node,
        fed: &[Option<&'a Tensor>],
        owned: &'a [Option<Tensor>],
    ) -> Result<Vec<Option<&'a Tensor>>> {
        let g = &self.graph;
        node.inputs
            .iter()
            .map(|i| match i {
                None => Ok(None),
                Some(v) => fed[*v]
                    .or(owned[*v].as_ref())
                    .or(g.values[*v].constant.as_deref())
                    .map(Some)
                    .ok_or_else(|| {
                        node.error(Error::Invalid(format!(
                            "input '{}' is read before it is computed",
                            g.values[*v].name
                        )))
                    }),
            })
            .collect()
    }

    /// A Reshape, Flatten, Squeeze or Unsqueeze whose input is a tensor of
    /// this run that no later node reads takes that tensor as its output
    /// under the new shape: no copy. Its output's slot memory, unused this
    /// run, takes the input's place in the pool. `false` when the node is
    /// something else or its input is still needed.
    fn view_in_place(
        &self,
        step: usize,
        node: &Node,
        slots: &mut [Storage],
        owned: &mut [Option<Tensor>],
        fed: &[Option<&Tensor>],
    ) -> Result<bool> {
        let (Some(Some(x)), &[y]) = (node.inputs.first(), &node.outputs[..]) else {
            return Ok(false);
        };
        let (Home::Slot(from), Home::Slot(to)) = (self.plan.home[*x], self.plan.home[y]) else {
            return Ok(false);
        };
        if owned[*x].is_none() || !self.plan.release_after[step].contains(x) {
            return Ok(false);
        }
        let inputs = self.node_inputs(node, fed, owned)?;
        let Some(shape) = view_shape(&node.op, &inputs) else {
            return Ok(false);
        };
        let shape = shape.map_err(|e| node.error(e))?;
        let t = owned[*x].take().expect("checked above");
        owned[y] = Some(t.reshaped(shape).map_err(|e| node.error(e))?);
        slots[from] = std::mem::take(&mut slots[to]);
        Ok(true)
    }

    /// Runs a node that reads or writes sequences or optionals: its tensor
    /// inputs are copied into [`Datum`]s, its tensor outputs join the others.
    fn execute_on_data(
        &self,
        node: &Node,
        owned: &mut [Option<Tensor>],
        fed: &[Option<&Tensor>],
        data: &mut [Option<Cow<Datum>>],
    ) -> Result<()> {
        let g = &self.graph;
        let inputs = node
            .inputs
            .iter()
            .map(|i| match i {
                None => Ok(None),
                Some(v) => match data[*v].as_deref() {
                    Some(d) => Ok(Some(Cow::Borrowed(d))),
                    None => fed[*v]
                        .or(owned[*v].as_ref())
                        .or(g.values[*v].constant.as_deref())
                        .map(|t| Some(Cow::Owned(Datum::Tensor(t.clone()))))
                        .ok_or_else(|| {
                            node.error(Error::Invalid(format!(
                                "input '{}' is read before it is computed",
                                g.values[*v].name
                            )))
                        }),
                },
            })
            .collect::<Result<Vec<Option<Cow<Datum>>>>>()?;
        let refs: Vec<Option<&Datum>> = inputs.iter().map(|d| d.as_deref()).collect();
        let outs = crate::eval_node_data(node, &refs)?;
        drop(inputs);
        for (&o, d) in node.outputs.iter().zip(outs) {
            match d {
                Datum::Tensor(t) => owned[o] = Some(t),
                d => data[o] = Some(Cow::Owned(d)),
            }
        }
        Ok(())
    }

    fn take_slots(&self) -> Vec<Storage> {
        let mut sets = self.slot_sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.pop()
            .unwrap_or_else(|| vec![Storage::default(); self.plan.num_slots])
    }

    fn return_slots(&self, slots: Vec<Storage>) {
        self.slot_sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slots);
    }
}

/// Constant weights packed for their node's kernel.
enum Packed {
    Conv(ConvWeights),
    Linear(PackedLinear),
}

/// A graph input as given to [`CpuPlan::run_fed`].
enum Fed<'a> {
    Tensor(&'a Tensor),
    Data(&'a Datum),
}

impl Fed<'_> {
    fn bytes(&self) -> usize {
        match self {
            Fed::Tensor(t) => t.as_bytes().len(),
            Fed::Data(d) => d.bytes(),
        }
    }
}

/// What a node's time is recorded under: its operator and how its weights
/// are packed (`packed`), after its name when profiling per node.
fn profile_key(node: &Node, packed: &str) -> String {
    match crate::profile::per_node() {
        true => format!("{} {}{packed}", node.name, node.op.name()),
        false => format!("{}{packed}", node.op.name()),
    }
}

/// Pixels per output plane of a Conv node, when its spatial dims are known
/// before running.
fn output_pixels(graph: &Graph, node: &Node) -> Option<usize> {
    let shape = graph.values[*node.outputs.first()?].shape.as_ref()?;
    shape.get(2..)?.iter().map(Dim::fixed).product()
}

/// Runs the pool's pending work on this worker until `done`, or until none
/// has come for [`POLL_IDLE`]. Never on `owner`, the worker running the plan
/// (which would then wait on itself).
fn poll_for_work(owner: Option<usize>, done: &AtomicBool) {
    if rayon::current_thread_index() == owner {
        return;
    }
    let (mut idle_since, mut idle_polls) = (Instant::now(), 0u32);
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(Yield::Executed) {
            (idle_since, idle_polls) = (Instant::now(), 0);
            continue;
        }
        // The clock is read every few polls only: reading it costs more than a poll.
        idle_polls += 1;
        if idle_polls.is_multiple_of(64) && idle_since.elapsed() > POLL_IDLE {
            return;
        }
        std::hint::spin_loop();
    }
}

/// How long a worker polls without finding work before it goes back to
/// rayon's own idling (longer than any gap between two kernels' parallel parts).
const POLL_IDLE: Duration = Duration::from_millis(1);
