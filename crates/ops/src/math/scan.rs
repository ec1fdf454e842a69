//! Operators along one axis: CumSum and CumProd (exclusive, reverse, the axis
//! as an input), LogSoftmax and Hardmax (before opset 13 the input is seen as
//! 2-D split at `axis`; from 13 on they work along `axis` alone).

use crate::support::{arg, axis, check_dtype, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    dispatch_dtype, DType, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor,
};
use std::any::Any;

/// `(outer, n, inner)` of a shape split at `axis` (`flatten`: the axis and
/// every later one form `n`).
fn split(shape: &[usize], ax: usize, flatten: bool) -> (usize, usize, usize) {
    let outer = shape[..ax].iter().product();
    if flatten {
        (outer, shape[ax..].iter().product(), 1)
    } else {
        (outer, shape[ax], shape[ax + 1..].iter().product())
    }
}

#[derive(Debug)]
struct Cumulative {
    name: String,
    prod: bool,
    exclusive: bool,
    reverse: bool,
}

pub fn build_cum(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Cumulative {
        name: cx.op_type.to_string(),
        prod: cx.op_type == "CumProd",
        exclusive: cx.attrs.flag("exclusive", false)?,
        reverse: cx.attrs.flag("reverse", false)?,
    })))
}

const CUM_TYPES: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::F64,
    DType::BF16,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
];

fn cum<T: Element>(c: &Cumulative, x: &Tensor, ax: usize, out: &mut Out) -> Result<Tensor> {
    let (outer, n, inner) = split(x.shape(), ax, false);
    let xs = x.as_slice::<T>()?;
    let mut y = out.tensor(0, x.dtype(), x.shape().to_vec())?;
    let ys = y.as_slice_mut::<T>()?;
    let float = x.dtype().is_float();
    for o in 0..outer {
        for i in 0..inner {
            let (mut accf, mut acci) = if c.prod { (1.0f64, 1i64) } else { (0.0, 0) };
            for s in 0..n {
                let k = if c.reverse { n - 1 - s } else { s };
                let at = (o * n + k) * inner + i;
                let v = xs[at];
                if c.exclusive {
                    ys[at] = if float {
                        T::from_f64(accf)
                    } else {
                        T::from_i64(acci)
                    };
                }
                if float {
                    let v = v.to_f64();
                    accf = if c.prod { accf * v } else { accf + v };
                } else {
                    let v = v.to_i64();
                    acci = if c.prod {
                        acci.wrapping_mul(v)
                    } else {
                        acci.wrapping_add(v)
                    };
                }
                if !c.exclusive {
                    ys[at] = if float {
                        T::from_f64(accf)
                    } else {
                        T::from_i64(acci)
                    };
                }
            }
        }
    }
    Ok(y)
}

impl Operator for Cumulative {
    fn name(&self) -> &str {
        &self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check_dtype(&self.name, x.dtype, CUM_TYPES)?;
        Ok(vec![like(x, x.dtype)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        check_dtype(&self.name, x.dtype(), CUM_TYPES)?;
        let a = arg(ins, 1)?.to_i64_vec()?;
        let [a] = a[..] else {
            return metal_mps_ir::invalid!("{}: axis must hold one value", self.name);
        };
        if x.rank() == 0 {
            return metal_mps_ir::invalid!("{}: input must have rank >= 1", self.name);
        }
        let ax = axis(&self.name, a, x.rank())?;
        let y = dispatch_dtype!(x.dtype(), T => cum::<T>(self, x, ax, out)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct AxisOp {
    name: String,
    hard: bool,
    axis: i64,
    flatten: bool,
}

pub fn build_axis_op(cx: &BuildCx) -> Result<Op> {
    let flatten = cx.opset < 13;
    Ok(Op::Dyn(DynOp::new(AxisOp {
        name: cx.op_type.to_string(),
        hard: cx.op_type == "Hardmax",
        axis: cx.attrs.int("axis", if flatten { 1 } else { -1 })?,
        flatten,
    })))
}

fn axis_op<T: Element>(a: &AxisOp, x: &Tensor, ax: usize, out: &mut Out) -> Result<Tensor> {
    let (outer, n, inner) = split(x.shape(), ax, a.flatten);
    let xs = x.as_slice::<T>()?;
    let mut y = out.tensor(0, x.dtype(), x.shape().to_vec())?;
    let ys = y.as_slice_mut::<T>()?;
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            // The first maximum.
            let mut best = 0usize;
            let mut m = f64::NEG_INFINITY;
            for k in 0..n {
                let v = xs[at(k)].to_f64();
                if v > m || (k == 0) {
                    m = v;
                    best = k;
                }
            }
            if a.hard {
                for k in 0..n {
                    ys[at(k)] = T::from_f64(if k == best { 1.0 } else { 0.0 });
                }
            } else {
                let shift = if m.is_finite() { m } else { 0.0 };
                let sum: f64 = (0..n).map(|k| (xs[at(k)].to_f64() - shift).exp()).sum();
                let l = sum.ln();
                for k in 0..n {
                    ys[at(k)] = T::from_f64(xs[at(k)].to_f64() - shift - l);
                }
            }
        }
    }
    Ok(y)
}

impl AxisOp {
    fn check(&self, d: DType) -> Result<()> {
        if d.is_float() {
            return Ok(());
        }
        metal_mps_ir::unsupported!("{} on {d} tensors (floating-point types only)", self.name)
    }
}

impl Operator for AxisOp {
    fn name(&self) -> &str {
        &self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        self.check(x.dtype)?;
        Ok(vec![like(x, x.dtype)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        self.check(x.dtype())?;
        if x.rank() == 0 {
            return metal_mps_ir::invalid!("{}: input must have rank >= 1", self.name);
        }
        let ax = axis(&self.name, self.axis, x.rank())?;
        let y = dispatch_dtype!(x.dtype(), T => axis_op::<T>(self, x, ax, out)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
