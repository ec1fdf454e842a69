//! TopK and ArgMax/ArgMin.

use super::util::{split_at_axis, total_cmp};
use crate::support::{arg, axis, const_ints, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::cmp::Ordering;

/// `TopK(X, K)`: the `k` largest (or smallest) values along `axis` and their
/// indices; ties go to the lower index.
#[derive(Debug)]
struct TopK {
    axis: i64,
    largest: bool,
    /// Opset 1: `k` is an attribute; later it is input 1.
    k_attr: Option<i64>,
}

pub fn build_topk(cx: &BuildCx) -> Result<Op> {
    let k_attr = if cx.opset < 10 {
        Some(cx.attrs.opt_int("k")?.ok_or_else(|| {
            metal_mps_ir::Error::InvalidModel(
                "TopK: attribute 'k' is required before opset 10".into(),
            )
        })?)
    } else {
        None
    };
    Ok(Op::Dyn(DynOp::new(TopK {
        axis: cx.attrs.int("axis", -1)?,
        largest: cx.attrs.flag("largest", true)?,
        k_attr,
    })))
}

fn topk<T: Element>(
    x: &Tensor,
    ax: usize,
    k: usize,
    largest: bool,
    out: &mut Out,
) -> Result<(Tensor, Tensor)> {
    let (outer, n, inner) = split_at_axis(x.shape(), ax);
    let mut shape = x.shape().to_vec();
    shape[ax] = k;
    let xs = x.as_slice::<T>()?;
    let mut v = out.tensor(0, T::DTYPE, shape.clone())?;
    let mut ix = out.tensor(1, DType::I64, shape)?;
    let (vs, is) = (v.as_slice_mut::<T>()?, ix.as_slice_mut::<i64>()?);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| xs[(o * n + j) * inner + i];
            order.clear();
            order.extend(0..n);
            let cmp = |a: &usize, b: &usize| {
                let c = total_cmp(&at(*a), &at(*b));
                let c = if largest { c.reverse() } else { c };
                c.then(a.cmp(b))
            };
            if k < n {
                order.select_nth_unstable_by(k, cmp);
                order.truncate(k);
            }
            order.sort_unstable_by(cmp);
            for (r, &j) in order.iter().take(k).enumerate() {
                let dst = (o * k + r) * inner + i;
                vs[dst] = at(j);
                is[dst] = j as i64;
            }
        }
    }
    Ok((v, ix))
}

impl TopK {
    fn k_input(&self, t: &Tensor) -> Result<i64> {
        if t.dtype() != DType::I64 || t.numel() != 1 {
            return metal_mps_ir::invalid!(
                "TopK: K must be a one-element INT64 tensor, not {} of shape {:?}",
                t.dtype(),
                t.shape()
            );
        }
        Ok(t.to_i64_vec()?[0])
    }
}

impl Operator for TopK {
    fn name(&self) -> &str {
        "TopK"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if x.dtype == DType::Bool {
            return metal_mps_ir::unsupported!("TopK on BOOL tensors");
        }
        let k = match self.k_attr {
            Some(k) => Some(k),
            None => const_ints(known_opt(ins, 1)).and_then(|v| v.first().copied()),
        };
        let shape = match x.shape {
            Some(s) => {
                let ax = axis("TopK", self.axis, s.len())?;
                let mut s = s.to_vec();
                s[ax] = match k {
                    Some(k) if k >= 0 => Dim::Fixed(k as usize),
                    Some(k) => return metal_mps_ir::invalid!("TopK: negative k {k}"),
                    None => Dim::Unknown,
                };
                Some(s)
            }
            None => None,
        };
        Ok(vec![(x.dtype, shape.clone()), (DType::I64, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let ax = axis("TopK", self.axis, x.rank())?;
        let k = match self.k_attr {
            Some(k) => k,
            None => self.k_input(opt(ins, 1).ok_or_else(|| {
                metal_mps_ir::Error::Invalid("TopK: input K is missing".into())
            })?)?,
        };
        let n = x.shape()[ax];
        if k < 0 || k as u64 > n as u64 {
            return metal_mps_ir::invalid!("TopK: k = {k} for an axis of {n}");
        }
        if x.dtype() == DType::Bool {
            return metal_mps_ir::unsupported!("TopK on BOOL tensors");
        }
        let (v, i) = metal_mps_ir::dispatch_dtype!(x.dtype(), T => topk::<T>(x, ax, k as usize, self.largest, out)?);
        Ok(vec![v, i])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `ArgMax` / `ArgMin` along `axis`, INT64 out.
#[derive(Debug)]
struct ArgExt {
    max: bool,
    axis: i64,
    keepdims: bool,
    last: bool,
}

pub fn build_arg(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(ArgExt {
        max: cx.op_type == "ArgMax",
        axis: cx.attrs.int("axis", 0)?,
        keepdims: cx.attrs.flag("keepdims", true)?,
        last: cx.opset >= 12 && cx.attrs.flag("select_last_index", false)?,
    })))
}

fn arg_ext<T: Element>(x: &Tensor, ax: usize, max: bool, last: bool, ys: &mut [i64]) -> Result<()> {
    let (outer, n, inner) = split_at_axis(x.shape(), ax);
    if n == 0 {
        return metal_mps_ir::invalid!("ArgMax/ArgMin over an empty axis");
    }
    let xs = x.as_slice::<T>()?;
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| xs[(o * n + j) * inner + i];
            let mut best = 0usize;
            for j in 1..n {
                let c = total_cmp(&at(j), &at(best));
                let better = if max {
                    c == Ordering::Greater
                } else {
                    c == Ordering::Less
                };
                if better || (last && c == Ordering::Equal) {
                    best = j;
                }
            }
            ys[o * inner + i] = best as i64;
        }
    }
    Ok(())
}

impl ArgExt {
    fn name_str(&self) -> &'static str {
        if self.max {
            "ArgMax"
        } else {
            "ArgMin"
        }
    }
}

impl Operator for ArgExt {
    fn name(&self) -> &str {
        self.name_str()
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if x.dtype == DType::Bool {
            return metal_mps_ir::unsupported!("{} on BOOL tensors", self.name_str());
        }
        let shape = match x.shape {
            Some(s) => {
                let ax = axis(self.name_str(), self.axis, s.len())?;
                let mut s = s.to_vec();
                if self.keepdims {
                    s[ax] = Dim::Fixed(1);
                } else {
                    s.remove(ax);
                }
                Some(s)
            }
            None => None,
        };
        Ok(vec![(DType::I64, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let ax = axis(self.name_str(), self.axis, x.rank())?;
        let mut shape = x.shape().to_vec();
        if self.keepdims {
            shape[ax] = 1;
        } else {
            shape.remove(ax);
        }
        if x.dtype() == DType::Bool {
            return metal_mps_ir::unsupported!("{} on BOOL tensors", self.name_str());
        }
        let mut y = out.tensor(0, DType::I64, shape)?;
        let ys = y.as_slice_mut::<i64>()?;
        metal_mps_ir::dispatch_dtype!(x.dtype(), T => arg_ext::<T>(x, ax, self.max, self.last, ys)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
