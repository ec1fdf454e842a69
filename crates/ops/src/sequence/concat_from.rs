//! ConcatFromSequence: the tensors of a sequence joined along an axis, or
//! stacked along a new one (`new_axis`).

use super::{data_operator, known_kind, sequence};
use crate::support::axis;
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{Datum, Dim, DynOp, Error, Fact, Kind, Op, Result, Tensor};

#[derive(Debug)]
pub struct ConcatFromSequence {
    axis: i64,
    new_axis: bool,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let axis = cx
        .attrs
        .opt_int("axis")?
        .ok_or_else(|| Error::InvalidModel("ConcatFromSequence needs an 'axis'".into()))?;
    Ok(Op::Dyn(DynOp::new(ConcatFromSequence {
        axis,
        new_axis: cx.attrs.flag("new_axis", false)?,
    })))
}

const NAME: &str = "ConcatFromSequence";

impl ConcatFromSequence {
    /// The axis of the output the tensors are joined along.
    fn out_axis(&self, rank: usize) -> Result<usize> {
        axis(NAME, self.axis, rank + self.new_axis as usize)
    }

    fn infer_kinds(&self, ins: &[Option<Known>], _: usize) -> Result<Vec<(Kind, Fact)>> {
        let seq = known_kind(ins, 0, &Kind::Sequence, NAME)?;
        let shape = match seq.shape {
            Some(s) => {
                let a = self.out_axis(s.len())?;
                let mut out = s.to_vec();
                if self.new_axis {
                    out.insert(a, Dim::Unknown);
                } else {
                    out[a] = Dim::Unknown;
                }
                Some(out)
            }
            None => None,
        };
        Ok(vec![(Kind::Tensor, (seq.dtype, shape))])
    }

    fn run(&self, inputs: &[Option<&Datum>], _: usize) -> Result<Vec<Datum>> {
        let seq = sequence(inputs, 0, NAME)?;
        let first = seq
            .first()
            .ok_or_else(|| Error::Invalid(format!("{NAME}: the sequence is empty")))?;
        let a = self.out_axis(first.rank())?;
        // Each tensor as the output sees it: with the new axis of length 1.
        let parts: Vec<Vec<usize>> = seq
            .iter()
            .map(|t| {
                let mut s = t.shape().to_vec();
                if self.new_axis {
                    s.insert(a, 1);
                }
                s
            })
            .collect();
        let mut shape = parts[0].clone();
        shape[a] = 0;
        for (k, (t, s)) in seq.iter().zip(&parts).enumerate() {
            let same_rest = s.len() == shape.len()
                && s.iter()
                    .zip(&shape)
                    .enumerate()
                    .all(|(i, (x, y))| i == a || x == y);
            if t.dtype() != first.dtype() || !same_rest {
                return metal_mps_ir::invalid!(
                    "{NAME}: tensor {k} is {} {:?}, which does not join {} {:?} along axis {a}",
                    t.dtype(),
                    t.shape(),
                    first.dtype(),
                    first.shape()
                );
            }
            shape[a] += s[a];
        }
        let outer: usize = shape[..a].iter().product();
        let inner = shape[a + 1..].iter().product::<usize>() * first.dtype().size();
        let mut bytes = Vec::with_capacity(outer * shape[a] * inner);
        for o in 0..outer {
            for (t, s) in seq.iter().zip(&parts) {
                let run = s[a] * inner;
                bytes.extend_from_slice(&t.as_bytes()[o * run..(o + 1) * run]);
            }
        }
        Ok(vec![Datum::Tensor(Tensor::from_bytes(
            first.dtype(),
            shape,
            &bytes,
        )?)])
    }
}

data_operator!(ConcatFromSequence, "ConcatFromSequence", makes_data: false);
