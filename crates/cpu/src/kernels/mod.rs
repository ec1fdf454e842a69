//! One module per op family. Every kernel writes all of its outputs' elements.

mod binary;
mod cast;
pub use cast::cast_with;
mod conv;
mod layout;
mod linear;
pub(crate) use layout::view_shape;
pub(crate) use linear::{gemm_packed, matmul_packed, PackedLinear};
mod matmul;
mod norm;
mod packed;
mod pool;
mod reduce;
mod spread;
pub(crate) use spread::on_caller;
pub use spread::Spread;
mod strings;
mod unary;
mod vector;

pub(crate) use conv::{conv_packed, ConvWeights};

use crate::Out;
use metal_mps_ir::{Error, Op, Result, Tensor};

/// Input `i`, which the op requires.
pub(crate) fn arg<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::Invalid(format!("required input {i} is missing")))
}

/// Optional input `i`.
pub(crate) fn opt<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Runs `op` on concrete inputs; `num_outputs` is the node's output count.
pub fn eval_op(
    op: &Op,
    inputs: &[Option<&Tensor>],
    num_outputs: usize,
    out: &mut Out,
) -> Result<Vec<Tensor>> {
    if strings::involved(op, inputs) {
        return strings::eval(op, inputs, num_outputs, out);
    }
    if let Op::Dyn(op) = op {
        return op.eval(inputs, num_outputs, out);
    }
    let x = arg(inputs, 0)?;
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    match op {
        Op::Binary(b) => one(binary::binary(*b, x, arg(inputs, 1)?, out)),
        Op::Sum => one(binary::sum(inputs, out)),
        Op::Unary(u) => one(unary::unary(*u, x, out)),
        Op::Clip => one(unary::clip(x, opt(inputs, 1), opt(inputs, 2), out)),
        Op::Cast { to } => one(cast::cast(x, *to, out)),
        Op::Identity => {
            let mut outs = vec![out.copy_of(0, x, x.shape().to_vec())?];
            if num_outputs > 1 {
                // Dropout's mask at inference: every element kept.
                let mut mask = out.tensor(1, metal_mps_ir::DType::Bool, x.shape().to_vec())?;
                mask.as_bytes_mut().fill(1);
                outs.push(mask);
            }
            Ok(outs)
        }
        Op::Conv(c) => {
            let (w, bias, residual) = (arg(inputs, 1)?, opt(inputs, 2), opt(inputs, 3));
            one(conv::conv(c, x, w, bias, residual, out))
        }
        Op::Pool(p) => one(pool::pool(p, x, out)),
        Op::GlobalPool(kind) => one(pool::global_pool(*kind, x, out)),
        Op::BatchNorm { epsilon } => one(norm::batch_norm(x, &inputs[1..], *epsilon, out)),
        Op::Softmax { axis, legacy } => one(norm::softmax(x, *axis, *legacy, out)),
        Op::Lrn(a) => one(norm::lrn(x, a, out)),
        Op::MatMul { activation } => one(matmul::matmul(
            x,
            arg(inputs, 1)?,
            opt(inputs, 2),
            *activation,
            out,
        )),
        Op::Gemm(g) => one(matmul::gemm(g, x, arg(inputs, 1)?, opt(inputs, 2), out)),
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let axes = ints_arg(axes, inputs)?.unwrap_or_default();
            one(reduce::reduce(
                *op,
                x,
                &axes,
                *keepdims,
                *noop_with_empty_axes,
                out,
            ))
        }
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            one(layout::view(op, inputs, out))
        }
        Op::Transpose { perm } => one(layout::transpose(x, perm, out)),
        Op::Concat { axis } => one(layout::concat(inputs, *axis, out)),
        Op::Split {
            axis,
            sizes,
            num_outputs,
        } => layout::split(x, *axis, ints_arg(sizes, inputs)?, *num_outputs, out),
        Op::Shape { start, end } => one(layout::shape(x, *start, *end, out)),
        Op::Gather { axis } => one(layout::gather(x, arg(inputs, 1)?, *axis, out)),
        Op::Pad { pads, value } => one(layout::pad(x, pads.as_deref(), *value, inputs, out)),
        Op::Dyn(_) => unreachable!("handled above"),
    }
}

/// Integers an op takes as an attribute (older opsets) or as input 1 (newer):
/// Reduce and Squeeze/Unsqueeze axes, Split sizes.
fn ints_arg(attr: &Option<Vec<i64>>, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<i64>>> {
    match (attr, opt(inputs, 1)) {
        (Some(a), _) => Ok(Some(a.clone())),
        (None, Some(t)) => Ok(Some(t.to_i64_vec()?)),
        (None, None) => Ok(None),
    }
}

/// Runs `f` with this thread's scratch memory `key`, kept from call to call
/// so that kernels neither allocate nor zero their working buffers each time
/// (a fresh one when `f` is re-entered on the same thread).
fn with_local<T: Default, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut value) => f(&mut value),
        Err(_) => f(&mut T::default()),
    })
}

/// An output buffer shared by parallel tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks only write disjoint elements (see the kernels that share one).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A pointer into the buffer; the caller guarantees that the elements it
    /// writes through it are touched by no other task.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}
