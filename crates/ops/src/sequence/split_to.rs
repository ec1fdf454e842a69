//! SplitToSequence: a tensor cut along an axis into a sequence: into pieces of
//! one (the axis dropped unless `keepdims`), of a scalar size (the last one
//! smaller), or of the sizes a 1-D `split` lists.

use super::{data_operator, datum, known_kind, tensor_opt};
use crate::support::axis;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{Datum, Dim, DynOp, Fact, Kind, Op, Result, Tensor};

#[derive(Debug)]
pub struct SplitToSequence {
    axis: i64,
    keepdims: bool,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(SplitToSequence {
        axis: cx.attrs.int("axis", 0)?,
        keepdims: cx.attrs.flag("keepdims", true)?,
    })))
}

const NAME: &str = "SplitToSequence";

impl SplitToSequence {
    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        let x = known_kind(ins, 0, &Kind::Tensor, NAME)?;
        let split = ins.get(1).and_then(Option::as_ref);
        if split.is_some() {
            known_kind(ins, 1, &Kind::Tensor, NAME)?;
        }
        let shape = match x.shape {
            Some(xs) => {
                let a = axis(NAME, self.axis, xs.len())?;
                let mut s = xs.to_vec();
                match (split, self.keepdims) {
                    (Some(_), _) => s[a] = Dim::Unknown,
                    (None, true) => s[a] = Dim::Fixed(1),
                    (None, false) => {
                        s.remove(a);
                    }
                }
                Some(s)
            }
            None => None,
        };
        Ok(vec![(Kind::Sequence, (x.dtype, shape))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let x = datum(inputs, 0, NAME)?.tensor()?;
        let a = axis(NAME, self.axis, x.rank())?;
        let dim = x.shape()[a];
        let sizes: Vec<usize> = match tensor_opt(inputs, 1, NAME)? {
            None => vec![1; dim],
            Some(s) if s.rank() == 0 => {
                let n = s.to_i64_vec()?[0];
                if n <= 0 {
                    return metal_mps_ir::invalid!("{NAME}: split size {n} must be positive");
                }
                let n = n as usize;
                (0..dim.div_ceil(n)).map(|i| n.min(dim - i * n)).collect()
            }
            Some(s) => {
                let v = s.to_i64_vec()?;
                if v.iter().any(|&n| n < 0) || v.iter().sum::<i64>() != dim as i64 {
                    return metal_mps_ir::invalid!(
                        "{NAME}: split sizes {v:?} do not add up to the axis length {dim}"
                    );
                }
                v.into_iter().map(|n| n as usize).collect()
            }
        };
        let drop_axis = !self.keepdims && inputs.get(1).copied().flatten().is_none();
        let mut seq = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for n in sizes {
            let mut part = slice_axis(x, a, start, n)?;
            if drop_axis {
                let mut shape = part.shape().to_vec();
                shape.remove(a);
                part = part.reshaped(shape)?;
            }
            seq.push(part);
            start += n;
        }
        Ok(vec![Datum::Sequence(seq)])
    }
}

/// Elements `start..start + len` of `t` along `axis`.
fn slice_axis(t: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let shape = t.shape();
    let outer: usize = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product::<usize>() * t.dtype().size();
    let src = t.as_bytes();
    let mut bytes = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let from = (o * shape[axis] + start) * inner;
        bytes.extend_from_slice(&src[from..from + len * inner]);
    }
    let mut out = shape.to_vec();
    out[axis] = len;
    Tensor::from_bytes(t.dtype(), out, &bytes)
}

data_operator!(SplitToSequence, "SplitToSequence", makes_data: true);
