//! Trilu (the upper or lower triangle of the last two axes) and OneHot.

use crate::support::{arg, axis, known, known_opt, like, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    checked_numel, dispatch_dtype, invalid, DType, Dim, DynOp, Error, Fact, Op, Operator, Out,
    Result, Tensor,
};
use std::any::Any;

#[derive(Debug)]
struct Trilu {
    upper: bool,
}

pub fn build_trilu(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Trilu {
        upper: cx.attrs.flag("upper", true)?,
    })))
}

fn scalar_k(t: &Tensor) -> Result<i64> {
    match t.to_i64_vec()?[..] {
        [k] => Ok(k),
        _ => invalid!("Trilu: k must be a scalar, got shape {:?}", t.shape()),
    }
}

impl Operator for Trilu {
    fn name(&self) -> &str {
        "Trilu"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if let Some(s) = x.shape {
            if s.len() < 2 {
                return invalid!("Trilu: the input must have rank 2 or more, got {}", s.len());
            }
        }
        if let Some(k) = known_opt(ins, 1) {
            if k.dtype != DType::I64 {
                return invalid!("Trilu: k must be INT64, got {}", k.dtype);
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
        let k = opt(inputs, 1).map(scalar_k).transpose()?.unwrap_or(0);
        let r = x.rank();
        if r < 2 {
            return invalid!(
                "Trilu: the input must have rank 2 or more, got {:?}",
                x.shape()
            );
        }
        let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
        let mut y = out.copy_of(0, x, x.shape().to_vec())?;
        let size = x.dtype().size();
        let bytes = y.as_bytes_mut();
        if rows * cols > 0 {
            for m in bytes.chunks_exact_mut(rows * cols * size) {
                for i in 0..rows {
                    for j in 0..cols {
                        // Kept: j - i >= k (upper) or j - i <= k (lower).
                        let d = j as i64 - i as i64;
                        let keep = if self.upper { d >= k } else { d <= k };
                        if !keep {
                            let o = (i * cols + j) * size;
                            m[o..o + size].fill(0);
                        }
                    }
                }
            }
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Indices in [-depth, 0) count from the end at every opset: OneHot-11
/// defines it, and onnxruntime and the ONNX reference do it for OneHot-9 too.
/// Non-integer indices and depth are truncated to integers.
#[derive(Debug)]
struct OneHot {
    axis: i64,
}

pub fn build_one_hot(cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(OneHot {
        axis: cx.attrs.int("axis", -1)?,
    })))
}

fn depth_of(t: &Tensor) -> Result<usize> {
    if t.numel() != 1 {
        return invalid!(
            "OneHot: depth must hold one element, got shape {:?}",
            t.shape()
        );
    }
    let d = if t.dtype().is_int() {
        t.to_i64_vec()?[0]
    } else {
        let v = t.scalar_f64()?;
        if !v.is_finite() {
            return invalid!("OneHot: depth {v} is not finite");
        }
        v as i64
    };
    usize::try_from(d).map_err(|_| Error::Invalid(format!("OneHot: negative depth {d}")))
}

fn check_numeric(what: &str, d: DType) -> Result<()> {
    if d == DType::Bool {
        return invalid!("OneHot: {what} of type {d}");
    }
    Ok(())
}

impl Operator for OneHot {
    fn name(&self) -> &str {
        "OneHot"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let idx = known(ins, 0)?;
        let depth = known(ins, 1)?;
        let values = known(ins, 2)?;
        check_numeric("indices", idx.dtype)?;
        check_numeric("depth", depth.dtype)?;
        let d = match depth.constant {
            Some(t) => Dim::Fixed(depth_of(t)?),
            None => Dim::Unknown,
        };
        let shape = match idx.shape {
            Some(s) => {
                let ax = axis("OneHot", self.axis, s.len() + 1)?;
                let mut out = s.to_vec();
                out.insert(ax, d);
                Some(out)
            }
            None => None,
        };
        Ok(vec![(values.dtype, shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let idx = arg(inputs, 0)?;
        let depth = depth_of(arg(inputs, 1)?)?;
        let values = arg(inputs, 2)?;
        check_numeric("indices", idx.dtype())?;
        if values.numel() != 2 {
            return invalid!(
                "OneHot: values must hold [off, on], got shape {:?}",
                values.shape()
            );
        }
        let ax = axis("OneHot", self.axis, idx.rank() + 1)?;
        let mut shape = idx.shape().to_vec();
        shape.insert(ax, depth);
        checked_numel(&shape)?;
        let inner: usize = idx.shape()[ax..].iter().product();
        let ids: Vec<i64> = if idx.dtype().is_int() {
            idx.to_i64_vec()?
        } else {
            idx.to_f64_vec().iter().map(|&v| v as i64).collect()
        };
        let d = depth as i64;
        let mut y = out.tensor(0, values.dtype(), shape)?;
        dispatch_dtype!(values.dtype(), T => {
            let v = values.as_slice::<T>()?;
            let (off, on) = (v[0], v[1]);
            let ys = y.as_slice_mut::<T>()?;
            ys.fill(off);
            for (p, &i) in ids.iter().enumerate() {
                let i = if i < 0 { i + d } else { i };
                if (0..d).contains(&i) {
                    let (o, n) = (p / inner.max(1), p % inner.max(1));
                    ys[(o * depth + i as usize) * inner + n] = on;
                }
            }
        });
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
