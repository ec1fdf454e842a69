//! Min, Max and Mean over any number of broadcast inputs, and Where.

use crate::support::{arg, broadcast_all, broadcast_offsets, check_same, known};
use crate::BuildCx;
use metal_mps_ir::infer::{broadcast_known, Known};
use metal_mps_ir::{BoolByte, DType, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Min,
    Max,
    Mean,
}

#[derive(Debug)]
struct Variadic {
    kind: Kind,
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let kind = match cx.op_type {
        "Min" => Kind::Min,
        "Max" => Kind::Max,
        _ => Kind::Mean,
    };
    Ok(Op::Dyn(DynOp::new(Variadic { kind })))
}

fn fold<T: Element>(kind: Kind, all: &[&Tensor], out: &mut Out) -> Result<Tensor> {
    let shapes: Vec<&[usize]> = all.iter().map(|t| t.shape()).collect();
    let shape = broadcast_all(&shapes)?;
    let mut y = out.tensor(0, T::DTYPE, shape.clone())?;
    let ys = y.as_slice_mut::<T>()?;
    for (k, t) in all.iter().enumerate() {
        let xs = t.as_slice::<T>()?;
        let offs = broadcast_offsets(t.shape(), &shape)?;
        for (o, &i) in ys.iter_mut().zip(&offs) {
            let v = xs[i];
            *o = if k == 0 {
                v
            } else {
                match kind {
                    // NaN wins, as in numpy's minimum/maximum.
                    Kind::Min if v < *o || v.to_f64().is_nan() => v,
                    Kind::Max if v > *o || v.to_f64().is_nan() => v,
                    Kind::Mean => T::from_f64(o.to_f64() + v.to_f64()),
                    _ => *o,
                }
            };
        }
    }
    if kind == Kind::Mean {
        let n = all.len() as f64;
        ys.iter_mut().for_each(|o| *o = T::from_f64(o.to_f64() / n));
    }
    Ok(y)
}

impl Operator for Variadic {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Min => "Min",
            Kind::Max => "Max",
            Kind::Mean => "Mean",
        }
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let all: Vec<&Known> = ins.iter().flatten().collect();
        let first = known(ins, 0)?;
        for k in &all {
            check_same(self.name(), first.dtype, k.dtype)?;
        }
        if first.dtype == DType::Bool || (self.kind == Kind::Mean && !first.dtype.is_float()) {
            return metal_mps_ir::unsupported!("{} on {} tensors", self.name(), first.dtype);
        }
        Ok(vec![(first.dtype, broadcast_known(&all)?)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let all: Vec<&Tensor> = ins.iter().flatten().copied().collect();
        let first = arg(ins, 0)?;
        for t in &all {
            check_same(self.name(), first.dtype(), t.dtype())?;
        }
        let y = metal_mps_ir::dispatch_dtype!(first.dtype(), T => fold::<T>(self.kind, &all, out)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `Where(condition, x, y)`: x where the condition holds, else y, broadcast.
#[derive(Debug)]
struct Where;

pub fn build_where(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Where)))
}

impl Operator for Where {
    fn name(&self) -> &str {
        "Where"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (c, x, y) = (known(ins, 0)?, known(ins, 1)?, known(ins, 2)?);
        if c.dtype != DType::Bool {
            return metal_mps_ir::invalid!("Where: the condition is {}, not BOOL", c.dtype);
        }
        check_same("Where", x.dtype, y.dtype)?;
        Ok(vec![(x.dtype, broadcast_known(&[c, x, y])?)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (c, x, y) = (arg(ins, 0)?, arg(ins, 1)?, arg(ins, 2)?);
        check_same("Where", x.dtype(), y.dtype())?;
        let shape = broadcast_all(&[c.shape(), x.shape(), y.shape()])?;
        let (oc, ox, oy) = (
            broadcast_offsets(c.shape(), &shape)?,
            broadcast_offsets(x.shape(), &shape)?,
            broadcast_offsets(y.shape(), &shape)?,
        );
        let cond = c.as_slice::<BoolByte>()?;
        let size = x.dtype().size();
        let mut r = out.tensor(0, x.dtype(), shape)?;
        let (xb, yb) = (x.as_bytes(), y.as_bytes());
        let rb = r.as_bytes_mut();
        for (k, dst) in rb.chunks_exact_mut(size).enumerate() {
            let src = if cond[oc[k]].0 != 0 {
                &xb[ox[k] * size..][..size]
            } else {
                &yb[oy[k] * size..][..size]
            };
            dst.copy_from_slice(src);
        }
        Ok(vec![r])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
