use crate::{Graph, Node, Op, Result, Tensor};
use std::sync::Arc;

/// Results larger than this are not folded: a model's size should not grow by
/// materializing big computed constants.
pub const FOLD_BUDGET_BYTES: usize = 64 << 20;

/// Evaluates one node on concrete inputs (implemented by the CPU engine).
pub trait Evaluator {
    fn eval(&self, node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>>;
}

/// Replaces every node whose inputs are all constant by its constant outputs,
/// and `Shape` of a value whose shape is fully known by a constant.
pub fn fold_constants(g: &mut Graph, eval: &dyn Evaluator) -> Result<()> {
    let mut kept = Vec::with_capacity(g.nodes.len());
    for node in std::mem::take(&mut g.nodes) {
        if let Some(outs) = try_fold(g, &node, eval)? {
            for (&v, t) in node.outputs.iter().zip(outs) {
                g.set_constant(v, Arc::new(t));
            }
        } else {
            kept.push(node);
        }
    }
    g.nodes = kept;
    Ok(())
}

fn try_fold(g: &Graph, node: &Node, eval: &dyn Evaluator) -> Result<Option<Vec<Tensor>>> {
    if let Op::Shape { start, end } = node.op {
        let x = &g.values[node.inputs[0].expect("Shape has an input")];
        if let Some(shape) = x.shape.as_deref().and_then(crate::fixed_shape) {
            let (s, e) = crate::infer::shape_range(shape.len(), start, end);
            let dims: Vec<i64> = shape[s..e].iter().map(|&d| d as i64).collect();
            return Ok(Some(vec![Tensor::from_vec(vec![dims.len()], dims)?]));
        }
    }
    // Sequences and optionals are not constants: they stay to run.
    let non_tensor = |v: &usize| !g.values[*v].kind.is_tensor();
    if node.outputs.iter().any(non_tensor) || node.inputs.iter().flatten().any(non_tensor) {
        return Ok(None);
    }
    if let Op::Dyn(op) = &node.op {
        if !op.deterministic() {
            return Ok(None);
        }
    }
    let inputs: Option<Vec<Option<&Tensor>>> = node
        .inputs
        .iter()
        .map(|i| match i {
            None => Some(None),
            Some(v) => g.values[*v].constant.as_deref().map(Some),
        })
        .collect();
    let Some(inputs) = inputs else {
        return Ok(None);
    };
    if node.inputs.iter().all(Option::is_none) {
        return Ok(None);
    }
    let outs = eval.eval(node, &inputs).map_err(|e| node.error(e))?;
    if outs.iter().map(|t| t.as_bytes().len()).sum::<usize>() > FOLD_BUDGET_BYTES {
        return Ok(None);
    }
    Ok(Some(outs))
}
