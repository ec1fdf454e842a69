//! The CPU engine: native kernels for every IR op and the plan executor.
//!
//! [`eval_node`] runs one node on concrete tensors (it is also the evaluator
//! of constant folding and the CPU fallback of the GPU engine). [`CpuPlan`]
//! runs a whole graph following its [`metal_mps_ir::plan::Plan`], taking every
//! intermediate's buffer from the plan's slots.

mod exec;
mod kernels;

pub use exec::CpuPlan;
pub use kernels::{cast_with, eval_op};
pub use metal_mps_ir::Out;

use metal_mps_ir::{passes::Evaluator, Node, Result, Tensor};

/// Runs one node on concrete inputs, with fresh output buffers.
/// Errors carry the node's name, op type and opset.
pub fn eval_node(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let mut out = Out::fresh();
    eval_op(&node.op, inputs, node.outputs.len(), &mut out).map_err(|e| node.error(e))
}

/// The CPU engine as the constant folder's evaluator.
pub struct CpuEvaluator;

impl Evaluator for CpuEvaluator {
    fn eval(&self, node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mut out = Out::fresh();
        eval_op(&node.op, inputs, node.outputs.len(), &mut out)
    }
}
