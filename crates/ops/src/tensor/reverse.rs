//! ReverseSequence: reverses the first `sequence_lens[b]` steps of every batch entry.

use crate::support::{arg, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{invalid, DType, DynOp, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct ReverseSequence {
    batch_axis: usize,
    time_axis: usize,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let b = cx.attrs.int("batch_axis", 1)?;
    let t = cx.attrs.int("time_axis", 0)?;
    if !matches!((b, t), (0, 1) | (1, 0)) {
        return invalid!(
            "ReverseSequence: batch_axis {b} and time_axis {t} must be 0 and 1 in some order"
        );
    }
    Ok(Op::Dyn(DynOp::new(ReverseSequence {
        batch_axis: b as usize,
        time_axis: t as usize,
    })))
}

impl Operator for ReverseSequence {
    fn name(&self) -> &str {
        "ReverseSequence"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let l = known(ins, 1)?;
        if l.dtype != DType::I64 {
            return invalid!(
                "ReverseSequence: sequence_lens must be INT64, got {}",
                l.dtype
            );
        }
        if let Some(s) = x.shape {
            if s.len() < 2 {
                return invalid!("ReverseSequence: the input must have rank 2 or more");
            }
        }
        Ok(vec![like(x, x.dtype)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let lens = arg(inputs, 1)?.to_i64_vec()?;
        if x.rank() < 2 {
            return invalid!(
                "ReverseSequence: the input must have rank 2 or more, got {:?}",
                x.shape()
            );
        }
        let (nb, nt) = (x.shape()[self.batch_axis], x.shape()[self.time_axis]);
        if lens.len() != nb {
            return invalid!(
                "ReverseSequence: {} sequence_lens for a batch of {nb}",
                lens.len()
            );
        }
        let inner = x.shape()[2..].iter().product::<usize>() * x.dtype().size();
        let d1 = x.shape()[1];
        let at = |b: usize, t: usize| {
            let (i0, i1) = if self.batch_axis == 0 { (b, t) } else { (t, b) };
            (i0 * d1 + i1) * inner
        };
        let mut y = out.copy_of(0, x, x.shape().to_vec())?;
        let (xb, yb) = (x.as_bytes(), y.as_bytes_mut());
        for (b, &l) in lens.iter().enumerate() {
            if l < 0 || l as usize > nt {
                return invalid!("ReverseSequence: sequence length {l} is outside [0, {nt}]");
            }
            let l = l as usize;
            for t in 0..l {
                let (dst, src) = (at(b, t), at(b, l - 1 - t));
                yb[dst..dst + inner].copy_from_slice(&xb[src..src + inner]);
            }
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
