//! The CPU engine: native kernels for every IR op and the plan executor.
//!
//! [`eval_node`] runs one node on concrete tensors (it is also the evaluator
//! of constant folding and the CPU fallback of the GPU engine). [`CpuPlan`]
//! runs a whole graph following its [`metal_mps_ir::plan::Plan`], taking every
//! intermediate's buffer from the plan's slots.

mod exec;
mod kernels;
pub mod profile;

pub use exec::CpuPlan;
pub use kernels::{cast_with, eval_op, Spread};
pub use metal_mps_ir::Out;

use metal_mps_ir::{passes::Evaluator, tensors_only, Datum, Node, Op, Result, Tensor};

/// Runs one node on concrete inputs, with fresh output buffers.
/// Errors carry the node's name, op type and opset.
pub fn eval_node(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let mut out = Out::fresh();
    eval_op(&node.op, inputs, node.outputs.len(), &mut out).map_err(|e| node.error(e))
}

/// [`eval_node`] on values of any kind (sequences, optionals): operator
/// modules get them through [`metal_mps_ir::Operator::eval_data`], `Identity`
/// passes them through, every other built-in op takes tensors only.
pub fn eval_node_data(node: &Node, inputs: &[Option<&Datum>]) -> Result<Vec<Datum>> {
    let mut out = Out::fresh();
    let n_out = node.outputs.len();
    let outs = match (&node.op, inputs) {
        (Op::Dyn(op), _) => op.eval_data(inputs, n_out, &mut out),
        (Op::Identity, [Some(d)]) if n_out == 1 => Ok(vec![(*d).clone()]),
        (op, _) => inputs
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                None => Ok(None),
                Some(Datum::Tensor(t)) => Ok(Some(t)),
                Some(d) => Err(tensors_only(&op.name(), i, &d.kind())),
            })
            .collect::<Result<Vec<_>>>()
            .and_then(|ts| eval_op(op, &ts, n_out, &mut out))
            .map(|ts| ts.into_iter().map(Datum::Tensor).collect()),
    };
    outs.map_err(|e| node.error(e))
}

/// The CPU engine as the constant folder's evaluator.
pub struct CpuEvaluator;

impl Evaluator for CpuEvaluator {
    fn eval(&self, node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mut out = Out::fresh();
        eval_op(&node.op, inputs, node.outputs.len(), &mut out)
    }
}
