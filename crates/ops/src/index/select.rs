//! Operators whose output size depends on the data: NonZero, Compress and Unique.

use super::util::{split_at_axis, total_cmp};
use crate::support::{arg, axis, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, BoolByte, DType, Dim, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor,
};
use std::any::Any;
use std::cmp::Ordering;

/// `NonZero(X)`: the coordinates of the non-zero elements, `[rank, count]` INT64.
#[derive(Debug)]
struct NonZero;

pub fn build_nonzero(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(NonZero)))
}

fn nonzero_flags<T: Element>(x: &Tensor) -> Result<Vec<bool>> {
    Ok(x.as_slice::<T>()?.iter().map(|&v| v != T::zero()).collect())
}

impl Operator for NonZero {
    fn name(&self) -> &str {
        "NonZero"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        // A scalar is treated as a one-element vector.
        let shape = x
            .shape
            .map(|s| vec![Dim::Fixed(s.len().max(1)), Dim::Unknown]);
        Ok(vec![(DType::I64, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let flags = metal_mps_ir::dispatch_dtype!(x.dtype(), T => nonzero_flags::<T>(x)?);
        let shape: Vec<usize> = if x.rank() == 0 {
            vec![1]
        } else {
            x.shape().to_vec()
        };
        let rank = shape.len();
        let count = flags.iter().filter(|&&f| f).count();
        let mut y = out.tensor(0, DType::I64, vec![rank, count])?;
        let ys = y.as_slice_mut::<i64>()?;
        let mut pos = vec![0usize; rank];
        let mut c = 0;
        for &f in &flags {
            if f {
                for (d, &p) in pos.iter().enumerate() {
                    ys[d * count + c] = p as i64;
                }
                c += 1;
            }
            for d in (0..rank).rev() {
                pos[d] += 1;
                if pos[d] < shape[d] {
                    break;
                }
                pos[d] = 0;
            }
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `Compress(input, condition)`: the slices along `axis` (or the elements of
/// the flattened input) whose condition is true.
#[derive(Debug)]
struct Compress {
    axis: Option<i64>,
}

pub fn build_compress(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Compress {
        axis: cx.attrs.opt_int("axis")?,
    })))
}

impl Operator for Compress {
    fn name(&self) -> &str {
        "Compress"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let (x, c) = (known(ins, 0)?, known(ins, 1)?);
        if c.dtype != DType::Bool {
            return metal_mps_ir::invalid!("Compress: the condition is {}, not BOOL", c.dtype);
        }
        let shape = match self.axis {
            None => Some(vec![Dim::Unknown]),
            Some(a) => match x.shape {
                Some(s) => {
                    let ax = axis("Compress", a, s.len())?;
                    let mut s = s.to_vec();
                    s[ax] = Dim::Unknown;
                    Some(s)
                }
                None => None,
            },
        };
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let (x, c) = (arg(ins, 0)?, arg(ins, 1)?);
        if c.dtype() != DType::Bool || c.rank() != 1 {
            return metal_mps_ir::invalid!(
                "Compress: the condition must be a 1-D BOOL tensor, not {} of shape {:?}",
                c.dtype(),
                c.shape()
            );
        }
        let cond = c.as_slice::<BoolByte>()?;
        let (shape, ax) = match self.axis {
            None => (vec![x.numel()], 0),
            Some(a) => (x.shape().to_vec(), axis("Compress", a, x.rank())?),
        };
        let (outer, n, inner) = split_at_axis(&shape, ax);
        if cond.len() > n && cond[n..].iter().any(|b| b.0 != 0) {
            return metal_mps_ir::invalid!(
                "Compress: the condition has {} entries, selecting beyond the {n} slices of the axis",
                cond.len()
            );
        }
        let keep: Vec<usize> = (0..n.min(cond.len())).filter(|&i| cond[i].0 != 0).collect();
        let mut oshape = shape.clone();
        oshape[ax] = keep.len();
        let size = x.dtype().size();
        let mut y = out.tensor(0, x.dtype(), oshape)?;
        let (src, dst) = (x.as_bytes(), y.as_bytes_mut());
        let row = inner * size;
        let mut w = 0;
        for o in 0..outer {
            for &k in &keep {
                let s = (o * n + k) * row;
                dst[w..w + row].copy_from_slice(&src[s..s + row]);
                w += row;
            }
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `Unique(X)`: the distinct elements (or slices along `axis`), sorted or in
/// order of first occurrence, with their first indices, the inverse indices
/// and the counts.
#[derive(Debug)]
struct Unique {
    sorted: bool,
    axis: Option<i64>,
}

pub fn build_unique(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Unique {
        sorted: cx.attrs.flag("sorted", true)?,
        axis: cx.attrs.opt_int("axis")?,
    })))
}

/// One group of equal slices: its first occurrence, its count, and the slices.
struct Groups {
    /// Output order: the first-occurrence index of each unique slice.
    firsts: Vec<usize>,
    counts: Vec<usize>,
    /// For every input slice, the output position of its group.
    inverse: Vec<usize>,
}

fn group<T: Element>(
    x: &Tensor,
    outer: usize,
    n: usize,
    inner: usize,
    sorted: bool,
) -> Result<Groups> {
    let xs = x.as_slice::<T>()?;
    // Slice `k` of the axis: elements (o, k, i) for every o and i.
    let cmp = |a: usize, b: usize| -> Ordering {
        for o in 0..outer {
            let (ra, rb) = ((o * n + a) * inner, (o * n + b) * inner);
            for i in 0..inner {
                match total_cmp(&xs[ra + i], &xs[rb + i]) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
        }
        Ordering::Equal
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp(a, b)); // stable: equal slices keep index order
                                       // Groups in sorted order.
    let mut firsts = Vec::new();
    let mut counts = Vec::new();
    let mut group_of = vec![0usize; n];
    for (j, &k) in order.iter().enumerate() {
        if j == 0 || cmp(order[j - 1], k) != Ordering::Equal {
            firsts.push(k);
            counts.push(0);
        }
        let g = firsts.len() - 1;
        counts[g] += 1;
        group_of[k] = g;
    }
    let mut rank: Vec<usize> = (0..firsts.len()).collect();
    if !sorted {
        rank.sort_by_key(|&g| firsts[g]);
    }
    // rank[p] = group shown at output position p; invert it.
    let mut pos_of = vec![0usize; firsts.len()];
    for (p, &g) in rank.iter().enumerate() {
        pos_of[g] = p;
    }
    Ok(Groups {
        firsts: rank.iter().map(|&g| firsts[g]).collect(),
        counts: rank.iter().map(|&g| counts[g]).collect(),
        inverse: group_of.iter().map(|&g| pos_of[g]).collect(),
    })
}

fn i64_tensor(out: &mut Out, i: usize, v: &[usize]) -> Result<Tensor> {
    let mut t = out.tensor(i, DType::I64, vec![v.len()])?;
    t.as_slice_mut::<i64>()?
        .iter_mut()
        .zip(v)
        .for_each(|(o, &x)| *o = x as i64);
    Ok(t)
}

impl Operator for Unique {
    fn name(&self) -> &str {
        "Unique"
    }

    fn infer(&self, ins: &[Option<Known>], n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let (y, inv) = match (self.axis, x.shape) {
            (None, s) => {
                let n = s
                    .and_then(metal_mps_ir::fixed_shape)
                    .map(|s| checked_numel(&s))
                    .transpose()?
                    .map_or(Dim::Unknown, Dim::Fixed);
                (Some(vec![Dim::Unknown]), Some(vec![n]))
            }
            (Some(a), Some(s)) => {
                let ax = axis("Unique", a, s.len())?;
                let mut y = s.to_vec();
                y[ax] = Dim::Unknown;
                (Some(y), Some(vec![s[ax].clone()]))
            }
            (Some(_), None) => (None, Some(vec![Dim::Unknown])),
        };
        let u = Some(vec![Dim::Unknown]);
        let facts = vec![
            (x.dtype, y),
            (DType::I64, u.clone()),
            (DType::I64, inv),
            (DType::I64, u),
        ];
        Ok(facts.into_iter().take(n_out).collect())
    }

    fn eval(&self, ins: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let (shape, ax) = match self.axis {
            None => (vec![x.numel()], 0),
            Some(a) => (x.shape().to_vec(), axis("Unique", a, x.rank())?),
        };
        let (outer, n, inner) = split_at_axis(&shape, ax);
        let g = metal_mps_ir::dispatch_dtype!(x.dtype(), T => group::<T>(x, outer, n, inner, self.sorted)?);
        let mut oshape = shape.clone();
        oshape[ax] = g.firsts.len();
        let size = x.dtype().size();
        let mut y = out.tensor(0, x.dtype(), oshape)?;
        let (src, dst) = (x.as_bytes(), y.as_bytes_mut());
        let row = inner * size;
        let mut w = 0;
        for o in 0..outer {
            for &k in &g.firsts {
                let s = (o * n + k) * row;
                dst[w..w + row].copy_from_slice(&src[s..s + row]);
                w += row;
            }
        }
        let mut outs = vec![y];
        if n_out > 1 {
            outs.push(i64_tensor(out, 1, &g.firsts)?);
        }
        if n_out > 2 {
            outs.push(i64_tensor(out, 2, &g.inverse)?);
        }
        if n_out > 3 {
            outs.push(i64_tensor(out, 3, &g.counts)?);
        }
        Ok(outs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
