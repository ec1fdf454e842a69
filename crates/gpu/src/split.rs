//! Models whose shapes depend on data (NonZero, Unique, NonMaxSuppression, a
//! TopK with a computed k, Split sizes computed at run time): the GPU runs the
//! nodes before the first such node, the CPU runs that node, and a second
//! runner continues with the shapes it produced, specialized per shape found
//! (and split again at the next such node).

use crate::engine::GpuRunner;
use crate::options::GpuOptions;
use metal_mps_ir::{Graph, Node, Result, Tensor, ValueId};
use std::collections::{BTreeSet, HashMap};

/// A specialized graph cut at a node whose outputs' shapes depend on data.
pub(crate) struct Split {
    /// The nodes before the cut (absent when nothing before it is needed later).
    head: Option<(GpuRunner, Vec<ValueId>)>,
    cut: Node,
    /// The nodes after the cut, and the values it reads from before the cut.
    tail: Option<(GpuRunner, Vec<ValueId>)>,
    graph: Graph,
}

impl Split {
    /// Cuts `graph` (specialized for the current input shapes) at node `at`.
    pub fn new(graph: Graph, at: usize, opts: &GpuOptions) -> Result<Split> {
        let (before, after) = graph.nodes.split_at(at);
        let (cut, after) = (after[0].clone(), &after[1..]);
        let is_const = |v: &ValueId| graph.values[*v].constant.is_some();
        // Values read by the cut, the tail or as graph outputs.
        let mut read_later: BTreeSet<ValueId> = graph.outputs.iter().copied().collect();
        for n in std::iter::once(&cut).chain(after) {
            read_later.extend(n.inputs.iter().flatten());
        }
        let head_outputs: Vec<ValueId> = before
            .iter()
            .flat_map(|n| &n.outputs)
            .filter(|v| read_later.contains(v))
            .copied()
            .collect();
        let produced_after: BTreeSet<ValueId> = after
            .iter()
            .flat_map(|n| n.outputs.iter().copied())
            .collect();
        let mut tail_reads: BTreeSet<ValueId> = graph
            .outputs
            .iter()
            .filter(|v| produced_after.contains(v))
            .copied()
            .collect();
        for n in after {
            tail_reads.extend(n.inputs.iter().flatten());
        }
        let tail_inputs: Vec<ValueId> = tail_reads
            .into_iter()
            .filter(|v| !produced_after.contains(v) && !is_const(v))
            .collect();
        let tail_outputs: Vec<ValueId> = dedup(
            graph
                .outputs
                .iter()
                .filter(|v| produced_after.contains(v))
                .copied(),
        );
        let sub = |nodes: &[Node], inputs: Vec<ValueId>, outputs: Vec<ValueId>| {
            let mut g = graph.clone();
            g.nodes = nodes.to_vec();
            g.inputs = inputs;
            g.outputs = outputs;
            g
        };
        let head = if head_outputs.is_empty() {
            None
        } else {
            let g = sub(
                before,
                graph.inputs.clone(),
                dedup(head_outputs.into_iter()),
            );
            let outputs = g.outputs.clone();
            Some((GpuRunner::new(&g, opts)?, outputs))
        };
        let tail = if tail_outputs.is_empty() {
            None
        } else {
            let g = sub(after, tail_inputs.clone(), tail_outputs);
            Some((GpuRunner::new(&g, opts)?, tail_inputs))
        };
        Ok(Split {
            head,
            cut,
            tail,
            graph,
        })
    }

    /// Runs the three parts in turn; outputs in `graph.outputs` order.
    pub fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let g = &self.graph;
        let mut env: HashMap<ValueId, Tensor> = HashMap::new();
        let fed: HashMap<ValueId, &Tensor> = g
            .inputs
            .iter()
            .copied()
            .zip(inputs.iter().copied())
            .collect();
        if let Some((runner, outputs)) = &self.head {
            for (&v, t) in outputs.iter().zip(runner.run(inputs)?) {
                env.insert(v, t);
            }
        }
        let lookup = |env: &HashMap<ValueId, Tensor>, v: ValueId| -> Result<Tensor> {
            env.get(&v)
                .or_else(|| fed.get(&v).copied())
                .or_else(|| g.values[v].constant.as_deref())
                .cloned()
                .ok_or_else(|| {
                    metal_mps_ir::Error::Invalid(format!(
                        "'{}' is read before it is computed",
                        g.values[v].name
                    ))
                })
        };
        let cut_inputs = self
            .cut
            .inputs
            .iter()
            .map(|i| i.map(|v| lookup(&env, v)).transpose())
            .collect::<Result<Vec<Option<Tensor>>>>()?;
        let refs: Vec<Option<&Tensor>> = cut_inputs.iter().map(Option::as_ref).collect();
        let outs = metal_mps_cpu::eval_node(&self.cut, &refs)?;
        for (&v, t) in self.cut.outputs.iter().zip(outs) {
            env.insert(v, t);
        }
        if let Some((runner, tail_inputs)) = &self.tail {
            let given = tail_inputs
                .iter()
                .map(|&v| lookup(&env, v))
                .collect::<Result<Vec<Tensor>>>()?;
            let refs: Vec<&Tensor> = given.iter().collect();
            for (&v, t) in runner.graph().outputs.iter().zip(runner.run(&refs)?) {
                env.insert(v, t);
            }
        }
        g.outputs.iter().map(|&v| lookup(&env, v)).collect()
    }

    /// Each node and the engine that ran it most recently.
    pub fn node_engines(&self) -> Vec<(String, &'static str)> {
        let mut engines: HashMap<String, &'static str> = HashMap::new();
        for (r, _) in self.head.iter().chain(&self.tail) {
            engines.extend(r.node_engines());
        }
        engines.insert(self.cut.name.clone(), "cpu");
        self.graph
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    engines.get(&n.name).copied().unwrap_or(crate::FOLDED),
                )
            })
            .collect()
    }
}

fn dedup(values: impl Iterator<Item = ValueId>) -> Vec<ValueId> {
    let mut seen = BTreeSet::new();
    values.filter(|v| seen.insert(*v)).collect()
}
