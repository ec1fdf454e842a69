//! The reductions without a fast path (ReduceL1, ReduceL2, ReduceLogSum,
//! ReduceLogSumExp, ReduceProd, ReduceSumSquare), and ReduceSum/Mean/Max/Min
//! on the dtypes and cases the built-in kernel does not cover.
//!
//! Axes are an attribute before opset 18 (13 for ReduceSum) and an optional
//! input from then on. A reduction over an empty set gives the operation's
//! identity (0 for sums, 1 for products, -inf for LogSum/LogSumExp and Max,
//! +inf for Min, the dtype's extremes for integers).

use crate::support::{arg, check_dtype, known, known_opt, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, dispatch_dtype, DType, Dim, DynOp, Element, Fact, Op, Operator, Out, Result,
    Tensor,
};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

#[derive(Debug)]
pub struct Reduce {
    name: String,
    kind: Kind,
    /// `Some` when axes come from the attribute (before opset 18, or 13 for ReduceSum).
    attr_axes: Option<Vec<i64>>,
    axes_as_input: bool,
    keepdims: bool,
    noop_with_empty_axes: bool,
    opset: i64,
}

pub fn kind_of(op_type: &str) -> Result<Kind> {
    Ok(match op_type {
        "ReduceSum" => Kind::Sum,
        "ReduceMean" => Kind::Mean,
        "ReduceMax" => Kind::Max,
        "ReduceMin" => Kind::Min,
        "ReduceProd" => Kind::Prod,
        "ReduceL1" => Kind::L1,
        "ReduceL2" => Kind::L2,
        "ReduceLogSum" => Kind::LogSum,
        "ReduceLogSumExp" => Kind::LogSumExp,
        "ReduceSumSquare" => Kind::SumSquare,
        other => return metal_mps_ir::unsupported!("reduction '{other}'"),
    })
}

pub fn build(cx: &BuildCx) -> Result<Op> {
    let kind = kind_of(cx.op_type)?;
    let axes_as_input = if kind == Kind::Sum {
        cx.opset >= 13
    } else {
        cx.opset >= 18
    };
    let attr_axes = if axes_as_input {
        None
    } else {
        cx.attrs.ints("axes")?
    };
    Ok(Op::Dyn(DynOp::new(Reduce {
        name: cx.op_type.to_string(),
        kind,
        attr_axes,
        axes_as_input,
        keepdims: cx.attrs.int("keepdims", 1)? != 0,
        noop_with_empty_axes: axes_as_input && cx.attrs.int("noop_with_empty_axes", 0)? != 0,
        opset: cx.opset,
    })))
}

const INTS: &[DType] = &[
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
];

impl Reduce {
    fn check(&self, d: DType) -> Result<()> {
        if d.is_float() || INTS.contains(&d) {
            return Ok(());
        }
        if d == DType::Bool && matches!(self.kind, Kind::Max | Kind::Min) && self.opset >= 20 {
            return Ok(());
        }
        check_dtype(&self.name, d, &[])
    }

    /// The reduced axes (all when empty and not a no-op), or `None` for the identity.
    fn reduced(&self, axes: Option<Vec<i64>>, rank: usize) -> Result<Option<Vec<bool>>> {
        let axes = axes.unwrap_or_default();
        if axes.is_empty() {
            if self.noop_with_empty_axes {
                return Ok(None);
            }
            return Ok(Some(vec![true; rank]));
        }
        let mut r = vec![false; rank];
        for &a in &axes {
            r[crate::support::axis(&self.name, a, rank)?] = true;
        }
        Ok(Some(r))
    }

    fn out_dims<D: Clone>(&self, shape: &[D], reduced: &[bool], one: D) -> Vec<D> {
        shape
            .iter()
            .zip(reduced)
            .filter_map(|(d, &r)| match (r, self.keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(one.clone()),
                (true, false) => None,
            })
            .collect()
    }
}

impl Operator for Reduce {
    fn name(&self) -> &str {
        &self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        self.check(x.dtype)?;
        let axes = if self.axes_as_input {
            match known_opt(ins, 1) {
                None => Some(None),
                Some(k) => k.constant.map(|c| c.to_i64_vec()).transpose()?.map(Some),
            }
        } else {
            Some(self.attr_axes.clone())
        };
        let shape = match (x.shape, axes) {
            (Some(s), Some(axes)) => match self.reduced(axes, s.len())? {
                None => Some(s.to_vec()),
                Some(r) => Some(self.out_dims(s, &r, Dim::Fixed(1))),
            },
            (Some(s), None) if self.keepdims => Some(vec![Dim::Unknown; s.len()]),
            _ => None,
        };
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        self.check(x.dtype())?;
        let axes = if self.axes_as_input {
            opt(ins, 1).map(|t| t.to_i64_vec()).transpose()?
        } else {
            self.attr_axes.clone()
        };
        let Some(reduced) = self.reduced(axes, x.rank())? else {
            return Ok(vec![out.copy_of(0, x, x.shape().to_vec())?]);
        };
        let y = dispatch_dtype!(x.dtype(), T => reduce::<T>(self, x, &reduced, out)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The output offset of every input element (row-major input order).
fn group_offsets(shape: &[usize], reduced: &[bool]) -> Result<(Vec<usize>, usize, usize)> {
    let rank = shape.len();
    let kept: Vec<usize> = (0..rank)
        .map(|d| if reduced[d] { 1 } else { shape[d] })
        .collect();
    let ks = metal_mps_ir::strides(&kept);
    let os: Vec<usize> = (0..rank)
        .map(|d| if reduced[d] { 0 } else { ks[d] })
        .collect();
    let n_in = checked_numel(shape)?;
    let n_out = checked_numel(&kept)?;
    let count: usize = (0..rank)
        .filter(|&d| reduced[d])
        .map(|d| shape[d])
        .product();
    let mut offs = Vec::with_capacity(n_in);
    let mut idx = vec![0usize; rank];
    let mut o = 0usize;
    for _ in 0..n_in {
        offs.push(o);
        metal_mps_ir::step_index(&mut idx, &mut o, shape, &os);
    }
    Ok((offs, n_out, count))
}

fn reduce<T: Element>(r: &Reduce, x: &Tensor, reduced: &[bool], out: &mut Out) -> Result<Tensor> {
    let (offs, n_out, count) = group_offsets(x.shape(), reduced)?;
    let xs = x.as_slice::<T>()?;
    let out_shape = r.out_dims(x.shape(), reduced, 1usize);
    let mut y = out.tensor(0, x.dtype(), out_shape)?;
    let ys = y.as_slice_mut::<T>()?;
    let is_int = !x.dtype().is_float();
    let exact_int = is_int
        && matches!(
            r.kind,
            Kind::Sum
                | Kind::Mean
                | Kind::Max
                | Kind::Min
                | Kind::Prod
                | Kind::L1
                | Kind::SumSquare
        );
    if exact_int {
        let unsigned = matches!(
            x.dtype(),
            DType::U8 | DType::U16 | DType::U32 | DType::U64 | DType::Bool
        );
        let (lo, hi) = int_range(x.dtype());
        let init = match r.kind {
            Kind::Prod => 1i64,
            Kind::Max => lo,
            Kind::Min => hi,
            _ => 0,
        };
        let mut acc = vec![init; n_out];
        for (&v, &o) in xs.iter().zip(&offs) {
            let v = v.to_i64();
            let a = &mut acc[o];
            *a = match r.kind {
                Kind::Sum | Kind::Mean => a.wrapping_add(v),
                Kind::Prod => a.wrapping_mul(v),
                Kind::L1 if unsigned => a.wrapping_add(v),
                Kind::L1 => a.wrapping_add(v.wrapping_abs()),
                Kind::SumSquare => a.wrapping_add(v.wrapping_mul(v)),
                Kind::Max => {
                    if gt(v, *a, unsigned) {
                        v
                    } else {
                        *a
                    }
                }
                _ => {
                    if gt(*a, v, unsigned) {
                        v
                    } else {
                        *a
                    }
                }
            };
        }
        if r.kind == Kind::Mean {
            let c = count.max(1) as i64;
            acc.iter_mut().for_each(|a| *a /= c);
        }
        ys.iter_mut()
            .zip(&acc)
            .for_each(|(o, &v)| *o = T::from_i64(v));
        return Ok(y);
    }
    let init = match r.kind {
        Kind::Prod => 1.0,
        Kind::Max | Kind::LogSumExp => f64::NEG_INFINITY,
        Kind::Min => f64::INFINITY,
        _ => 0.0,
    };
    let mut acc = vec![init; n_out];
    // LogSumExp subtracts each group's maximum first.
    let mut shift = vec![0.0f64; n_out];
    if r.kind == Kind::LogSumExp {
        let mut m = vec![f64::NEG_INFINITY; n_out];
        for (&v, &o) in xs.iter().zip(&offs) {
            let v = v.to_f64();
            if v > m[o] {
                m[o] = v;
            }
        }
        for (s, &m) in shift.iter_mut().zip(&m) {
            *s = if m.is_finite() { m } else { 0.0 };
        }
        acc.fill(0.0);
    }
    for (&v, &o) in xs.iter().zip(&offs) {
        let v = v.to_f64();
        let a = &mut acc[o];
        match r.kind {
            Kind::Sum | Kind::Mean | Kind::LogSum => *a += v,
            Kind::Prod => *a *= v,
            Kind::L1 => *a += v.abs(),
            Kind::L2 | Kind::SumSquare => *a += v * v,
            Kind::LogSumExp => *a += (v - shift[o]).exp(),
            Kind::Max => {
                if v > *a || v.is_nan() {
                    *a = v
                }
            }
            Kind::Min => {
                if v < *a || v.is_nan() {
                    *a = v
                }
            }
        }
    }
    for (a, &s) in acc.iter_mut().zip(&shift) {
        *a = match r.kind {
            Kind::Mean => *a / count as f64,
            Kind::L2 => a.sqrt(),
            Kind::LogSum => a.ln(),
            Kind::LogSumExp => a.ln() + s,
            _ => *a,
        };
    }
    ys.iter_mut()
        .zip(&acc)
        .for_each(|(o, &v)| *o = T::from_f64(v));
    Ok(y)
}

fn gt(a: i64, b: i64, unsigned: bool) -> bool {
    if unsigned {
        (a as u64) > (b as u64)
    } else {
        a > b
    }
}

/// The smallest and largest values of an integer dtype, as their i64 bit patterns.
fn int_range(d: DType) -> (i64, i64) {
    match d {
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::I16 => (i16::MIN as i64, i16::MAX as i64),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::I64 => (i64::MIN, i64::MAX),
        DType::U8 => (0, u8::MAX as i64),
        DType::U16 => (0, u16::MAX as i64),
        DType::U32 => (0, u32::MAX as i64),
        DType::U64 => (0, -1),
        _ => (0, 1),
    }
}
