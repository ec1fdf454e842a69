//! Broadcasting before opset 7: with `broadcast=1` and an `axis`, the second
//! input's dimensions line up with the first's starting at `axis` (numpy aligns
//! trailing dimensions instead); PRelu's 1-D slope applies per channel (axis 1).
//! The operator is wrapped: the second input is reshaped to the first's rank
//! with trailing ones, then the wrapped operator runs as in later opsets.

use crate::support::{arg, known};
use crate::BuildCx;
use metal_mps_ir::infer::{infer_node, Known};
use metal_mps_ir::{Dim, DynOp, Fact, Node, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct AxisBroadcast {
    /// The wrapped operator as a node reading inputs 0 and 1.
    inner: Node,
    axis: i64,
    /// PRelu: only a 1-D slope of more than one value aligns at `axis`.
    slope: bool,
}

/// `op` as built for `cx`, wrapped when `cx` asks for axis-aligned broadcasting.
pub fn wrap(cx: &BuildCx, op: Op) -> Result<Op> {
    let slope = cx.op_type == "PRelu";
    if cx.opset >= 7 || !(slope || cx.attrs.int("broadcast", 0)? == 1 && cx.attrs.has("axis")) {
        return Ok(op);
    }
    let axis = if slope { 1 } else { cx.attrs.int("axis", 0)? };
    let inner = Node {
        name: cx.op_type.to_string(),
        op,
        onnx_op: cx.op_type.to_string(),
        opset: cx.opset,
        inputs: vec![Some(0), Some(1)],
        outputs: vec![2],
    };
    Ok(Op::Dyn(DynOp::new(AxisBroadcast { inner, axis, slope })))
}

impl AxisBroadcast {
    /// The second input's shape lined up with a first input of rank `rank`.
    fn aligned<D: Clone>(&self, rank: usize, b: &[D], one: D) -> Result<Option<Vec<D>>> {
        if self.slope && (b.len() != 1 || rank < 2) {
            return Ok(None);
        }
        let axis = if self.axis < 0 {
            self.axis + rank as i64
        } else {
            self.axis
        };
        let trailing = usize::try_from(axis)
            .ok()
            .and_then(|a| rank.checked_sub(a)?.checked_sub(b.len()));
        let Some(trailing) = trailing else {
            return metal_mps_ir::invalid!(
                "{}: a rank-{} second input does not fit at axis {} of a rank-{rank} first input",
                self.inner.onnx_op,
                b.len(),
                self.axis
            );
        };
        let mut shape = b.to_vec();
        shape.extend(std::iter::repeat_n(one, trailing));
        Ok(Some(shape))
    }
}

impl Operator for AxisBroadcast {
    /// The wrapped node's operator type (`Add`, `PRelu`, ...), not the node's name.
    #[allow(clippy::misnamed_getters)]
    fn name(&self) -> &str {
        &self.inner.onnx_op
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (a, b) = (known(ins, 0)?, known(ins, 1)?);
        let (Some(sa), Some(sb)) = (a.shape, b.shape) else {
            return infer_node(&self.inner, ins);
        };
        let Some(shape) = self.aligned(sa.len(), sb, Dim::Fixed(1))? else {
            return infer_node(&self.inner, ins);
        };
        let constant = b
            .constant
            .map(|t| reshape(t, sa.len(), self))
            .transpose()?
            .flatten();
        let b = Known {
            dtype: b.dtype,
            shape: Some(&shape),
            constant: constant.as_ref(),
            kind: b.kind,
        };
        let a = Known {
            dtype: a.dtype,
            shape: a.shape,
            constant: a.constant,
            kind: a.kind,
        };
        infer_node(&self.inner, &[Some(a), Some(b)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let (a, b) = (arg(ins, 0)?, arg(ins, 1)?);
        match reshape(b, a.rank(), self)? {
            Some(b) => metal_mps_cpu::eval_node(&self.inner, &[Some(a), Some(&b)]),
            None => metal_mps_cpu::eval_node(&self.inner, ins),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `b` reshaped to line up with a first input of rank `rank` (`None`: as it is).
fn reshape(b: &Tensor, rank: usize, op: &AxisBroadcast) -> Result<Option<Tensor>> {
    match op.aligned(rank, b.shape(), 1)? {
        Some(shape) => Ok(Some(b.clone().reshaped(shape)?)),
        None => Ok(None),
    }
}
