//! ScatterElements (and the deprecated Scatter), ScatterND (with reductions)
//! and TensorScatter (opset 24's KV-cache update).

use super::gather::nd_plan;
use super::util::{axis_offsets, check_index_dtype, indices, Reduction};
use crate::support::{arg, axis, check_same, known, like, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// ScatterElements / Scatter along `axis`.
    Elements {
        axis: i64,
    },
    Nd,
}

#[derive(Debug)]
struct Scatter {
    name: &'static str,
    kind: Kind,
    reduction: Reduction,
}

fn reduction(cx: &BuildCx, name: &str) -> Result<Reduction> {
    let r = Reduction::parse(name, &cx.attrs.str_or("reduction", "none")?)?;
    let since = match r {
        Reduction::None => 0,
        Reduction::Add | Reduction::Mul => 16,
        Reduction::Max | Reduction::Min => 18,
    };
    if cx.opset < since {
        return metal_mps_ir::invalid!("{name}: reduction {r:?} needs opset {since}");
    }
    Ok(r)
}

pub fn build_scatter_elements(cx: &BuildCx) -> Result<Op> {
    let name = if cx.op_type == "Scatter" {
        "Scatter"
    } else {
        "ScatterElements"
    };
    Ok(Op::Dyn(DynOp::new(Scatter {
        name,
        kind: Kind::Elements {
            axis: cx.attrs.int("axis", 0)?,
        },
        reduction: reduction(cx, name)?,
    })))
}

pub fn build_scatter_nd(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Scatter {
        name: "ScatterND",
        kind: Kind::Nd,
        reduction: reduction(cx, "ScatterND")?,
    })))
}

fn run<T: Element>(
    y: &mut Tensor,
    upd: &Tensor,
    offsets: &[usize],
    slice: usize,
    r: Reduction,
) -> Result<()> {
    let ys = y.as_slice_mut::<T>()?;
    let us = upd.as_slice::<T>()?;
    for (t, &o) in offsets.iter().enumerate() {
        for k in 0..slice {
            r.apply(&mut ys[o + k], us[t * slice + k]);
        }
    }
    Ok(())
}

impl Operator for Scatter {
    fn name(&self) -> &str {
        self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (d, i, u) = (known(ins, 0)?, known(ins, 1)?, known(ins, 2)?);
        check_index_dtype(self.name, i.dtype)?;
        check_same(self.name, d.dtype, u.dtype)?;
        Ok(vec![like(d, d.dtype)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (d, i, u) = (arg(ins, 0)?, arg(ins, 1)?, arg(ins, 2)?);
        check_same(self.name, d.dtype(), u.dtype())?;
        let idx = indices(self.name, i)?;
        let (offsets, slice) = match self.kind {
            Kind::Elements { axis: a } => {
                if i.shape() != u.shape() {
                    return metal_mps_ir::invalid!(
                        "{}: indices {:?} and updates {:?} differ in shape",
                        self.name,
                        i.shape(),
                        u.shape()
                    );
                }
                let ax = axis(self.name, a, d.rank())?;
                (axis_offsets(self.name, d.shape(), i.shape(), ax, &idx)?, 1)
            }
            Kind::Nd => {
                let p = nd_plan(self.name, d.shape(), i.shape(), &idx, 0)?;
                if p.out_shape != u.shape() {
                    return metal_mps_ir::invalid!(
                        "ScatterND: updates of shape {:?}, expected {:?}",
                        u.shape(),
                        p.out_shape
                    );
                }
                (p.offsets, p.slice)
            }
        };
        let mut y = out.copy_of(0, d, d.shape().to_vec())?;
        metal_mps_ir::dispatch_dtype!(d.dtype(), T => run::<T>(&mut y, u, &offsets, slice, self.reduction)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `TensorScatter(past_cache, update, write_indices?)`: `update` written into
/// the cache along `axis`, from each batch entry's write index.
#[derive(Debug)]
struct TensorScatter {
    axis: i64,
    circular: bool,
}

pub fn build_tensor_scatter(cx: &BuildCx) -> Result<Op> {
    let circular = match cx.attrs.str_or("mode", "linear")?.as_str() {
        "linear" => false,
        "circular" => true,
        m => return metal_mps_ir::invalid!("TensorScatter: unknown mode '{m}'"),
    };
    Ok(Op::Dyn(DynOp::new(TensorScatter {
        axis: cx.attrs.int("axis", -2)?,
        circular,
    })))
}

impl Operator for TensorScatter {
    fn name(&self) -> &str {
        "TensorScatter"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (c, u) = (known(ins, 0)?, known(ins, 1)?);
        check_same("TensorScatter", c.dtype, u.dtype)?;
        if let Some(w) = crate::support::known_opt(ins, 2) {
            if w.dtype != DType::I64 {
                return metal_mps_ir::invalid!("TensorScatter: write_indices must be INT64");
            }
        }
        Ok(vec![like(c, c.dtype)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (c, u) = (arg(ins, 0)?, arg(ins, 1)?);
        check_same("TensorScatter", c.dtype(), u.dtype())?;
        let rank = c.rank();
        let ax = axis("TensorScatter", self.axis, rank)?;
        if ax == 0 {
            return metal_mps_ir::invalid!("TensorScatter: axis must not be the batch axis");
        }
        let (cs, us) = (c.shape(), u.shape());
        let ok =
            us.len() == rank && (0..rank).all(|d| d == ax || cs[d] == us[d]) && us[ax] <= cs[ax];
        if !ok {
            return metal_mps_ir::invalid!(
                "TensorScatter: update of shape {us:?} does not fit a cache of shape {cs:?} on axis {ax}"
            );
        }
        let batch = cs[0];
        let write: Vec<i64> = match opt(ins, 2) {
            Some(w) => {
                if w.dtype() != DType::I64 || w.shape() != [batch] {
                    return metal_mps_ir::invalid!(
                        "TensorScatter: write_indices must be INT64 of shape [{batch}]"
                    );
                }
                w.to_i64_vec()?
            }
            None => vec![0; batch],
        };
        let max_seq = cs[ax];
        let seq = us[ax];
        let inner: usize = cs[ax + 1..].iter().product::<usize>() * c.dtype().size();
        let outer: usize = cs[..ax].iter().product();
        let per_batch = outer.checked_div(batch).unwrap_or(0);
        let mut y = out.copy_of(0, c, cs.to_vec())?;
        let dst = y.as_bytes_mut();
        let src = u.as_bytes();
        for o in 0..outer {
            let b = o / per_batch.max(1);
            let w = write[b];
            for s in 0..seq {
                let mut pos = w + s as i64;
                if self.circular {
                    pos = pos.rem_euclid(max_seq as i64);
                }
                if pos < 0 || pos >= max_seq as i64 {
                    return metal_mps_ir::invalid!(
                        "TensorScatter: write index {w} + {s} is out of range for a sequence of {max_seq}"
                    );
                }
                let d0 = (o * max_seq + pos as usize) * inner;
                let s0 = (o * seq + s) * inner;
                dst[d0..d0 + inner].copy_from_slice(&src[s0..s0 + inner]);
            }
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
