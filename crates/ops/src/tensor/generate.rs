//! Operators that make a tensor from shapes and scalars: Range,
//! ConstantOfShape, EyeLike and Size.

use crate::support::{arg, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    bf16, checked_numel, dispatch_dtype, f16, invalid, unsupported, DType, Dim, DynOp, Element,
    Error, Fact, Op, Operator, Out, Result, Tensor,
};
use std::any::Any;
use std::sync::Arc;

// ---------------------------------------------------------------- Range

#[derive(Debug)]
struct Range {
    /// Opset 27+: the type FLOAT16/BFLOAT16 ranges are computed in
    /// (FLOAT or DOUBLE); before, in the input type.
    stash: Option<DType>,
}

pub fn build_range(cx: &BuildCx) -> Result<Op> {
    let stash = if cx.opset >= 27 {
        match cx.attrs.int("stash_type", 1)? {
            1 => Some(DType::F32),
            11 => Some(DType::F64),
            s => return unsupported!("Range stash_type {s} (FLOAT or DOUBLE only)"),
        }
    } else {
        None
    };
    Ok(Op::Dyn(DynOp::new(Range { stash })))
}

const RANGE_TYPES: [DType; 7] = [
    DType::F32,
    DType::F64,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::F16,
    DType::BF16,
];

/// The element count of `start..limit` by `delta`.
fn range_len(dtype: DType, start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<usize> {
    for (name, t) in [("start", start), ("limit", limit), ("delta", delta)] {
        if t.numel() != 1 {
            return invalid!("Range: {name} must be a scalar, got shape {:?}", t.shape());
        }
    }
    let n: i128 = if dtype.is_int() {
        let (s, l, d) = (
            start.to_i64_vec()?[0] as i128,
            limit.to_i64_vec()?[0] as i128,
            delta.to_i64_vec()?[0] as i128,
        );
        if d == 0 {
            return invalid!("Range: delta is 0");
        }
        // ceil((l - s) / d)
        let (num, den) = if d < 0 { (s - l, -d) } else { (l - s, d) };
        if num <= 0 {
            0
        } else {
            (num + den - 1) / den
        }
    } else {
        let (s, l, d) = (
            start.scalar_f64()?,
            limit.scalar_f64()?,
            delta.scalar_f64()?,
        );
        if d == 0.0 {
            return invalid!("Range: delta is 0");
        }
        let n = ((l - s) / d).ceil();
        if !n.is_finite() {
            return invalid!("Range: start {s}, limit {l} and delta {d} give no finite length");
        }
        n.max(0.0) as i128
    };
    let n = usize::try_from(n).map_err(|_| Error::TooLarge(format!("Range of {n} elements")))?;
    metal_mps_ir::checked_bytes(dtype, &[n])?;
    Ok(n)
}

/// `start + i * step` in `C`, stored as `T`; `step` is taken as numpy's
/// arange does, `(start + delta) - start` in `C`.
fn fill_range<T: Element>(ys: &mut [T], start: f64, delta: f64, compute: DType) {
    match compute {
        DType::F32 => {
            let s = start as f32;
            let step = (s + delta as f32) - s;
            for (i, y) in ys.iter_mut().enumerate() {
                *y = T::from_f64((s + i as f32 * step) as f64);
            }
        }
        _ => {
            let step = (start + delta) - start;
            for (i, y) in ys.iter_mut().enumerate() {
                *y = T::from_f64(start + i as f64 * step);
            }
        }
    }
}

impl Operator for Range {
    fn name(&self) -> &str {
        "Range"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let s = known(ins, 0)?;
        if !RANGE_TYPES.contains(&s.dtype) {
            return unsupported!("Range on {} tensors", s.dtype);
        }
        if (s.dtype == DType::F16 || s.dtype == DType::BF16) && self.stash.is_none() {
            return unsupported!("Range on {} tensors before opset 27", s.dtype);
        }
        let mut consts = Vec::with_capacity(3);
        for i in 0..3 {
            let k = known(ins, i)?;
            if k.dtype != s.dtype {
                return invalid!("Range: input dtypes differ: {} and {}", s.dtype, k.dtype);
            }
            consts.push(k.constant);
        }
        let dim = match consts[..] {
            [Some(a), Some(b), Some(c)] => Dim::Fixed(range_len(s.dtype, a, b, c)?),
            _ => Dim::Unknown,
        };
        Ok(vec![(s.dtype, Some(vec![dim]))])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let (s, l, d) = (arg(inputs, 0)?, arg(inputs, 1)?, arg(inputs, 2)?);
        let dtype = s.dtype();
        if l.dtype() != dtype || d.dtype() != dtype {
            return invalid!("Range: input dtypes differ");
        }
        let n = range_len(dtype, s, l, d)?;
        let mut y = out.tensor(0, dtype, vec![n])?;
        match dtype {
            DType::I16 | DType::I32 | DType::I64 => {
                let (s, d) = (s.to_i64_vec()?[0], d.to_i64_vec()?[0]);
                dispatch_dtype!(dtype, T => {
                    // Every value lies between start and limit: no overflow.
                    for (i, v) in y.as_slice_mut::<T>()?.iter_mut().enumerate() {
                        *v = T::from_i64(s + i as i64 * d);
                    }
                });
            }
            DType::F16 | DType::BF16 => {
                let compute = self.stash.unwrap_or(DType::F32);
                // The start is first cast to the compute type, the rest read as f64.
                let (s, d) = (s.scalar_f64()?, d.scalar_f64()?);
                if dtype == DType::F16 {
                    fill_range(y.as_slice_mut::<f16>()?, s, d, compute);
                } else {
                    fill_range(y.as_slice_mut::<bf16>()?, s, d, compute);
                }
            }
            DType::F32 => fill_range(
                y.as_slice_mut::<f32>()?,
                s.scalar_f64()?,
                d.scalar_f64()?,
                DType::F64,
            ),
            DType::F64 => fill_range(
                y.as_slice_mut::<f64>()?,
                s.scalar_f64()?,
                d.scalar_f64()?,
                DType::F64,
            ),
            other => return unsupported!("Range on {other} tensors"),
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- ConstantOfShape

#[derive(Debug)]
struct ConstantOfShape {
    /// One element.
    value: Arc<Tensor>,
}

pub fn build_constant_of_shape(cx: &BuildCx) -> Result<Op> {
    let value = match cx.attrs.tensor("value")? {
        Some(t) => {
            if t.numel() != 1 {
                return invalid!(
                    "ConstantOfShape: 'value' must hold one element, got shape {:?}",
                    t.shape()
                );
            }
            t
        }
        None => Arc::new(Tensor::scalar(0f32)),
    };
    Ok(Op::Dyn(DynOp::new(ConstantOfShape { value })))
}

fn dims_of(op: &str, v: &[i64]) -> Result<Vec<usize>> {
    v.iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| Error::Invalid(format!("{op}: negative dimension {d}")))
        })
        .collect()
}

impl Operator for ConstantOfShape {
    fn name(&self) -> &str {
        "ConstantOfShape"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let s = known(ins, 0)?;
        if s.dtype != DType::I64 {
            return invalid!(
                "ConstantOfShape: the shape input must be INT64, got {}",
                s.dtype
            );
        }
        let shape = match s.constant {
            Some(t) => Some(
                dims_of("ConstantOfShape", &t.to_i64_vec()?)?
                    .into_iter()
                    .map(Dim::Fixed)
                    .collect(),
            ),
            None => match s.shape {
                Some([Dim::Fixed(n)]) => Some(metal_mps_ir::unknown_shape(*n)?),
                _ => None,
            },
        };
        Ok(vec![(self.value.dtype(), shape)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let s = arg(inputs, 0)?;
        if s.rank() > 1 {
            return invalid!(
                "ConstantOfShape: the shape input must be 1-D, got {:?}",
                s.shape()
            );
        }
        let shape = dims_of("ConstantOfShape", &s.to_i64_vec()?)?;
        checked_numel(&shape)?;
        let mut y = out.tensor(0, self.value.dtype(), shape)?;
        let v = self.value.as_bytes();
        for c in y.as_bytes_mut().chunks_exact_mut(v.len()) {
            c.copy_from_slice(v);
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- EyeLike

#[derive(Debug)]
struct EyeLike {
    dtype: Option<DType>,
    k: i64,
}

pub fn build_eye_like(cx: &BuildCx) -> Result<Op> {
    let dtype = cx
        .attrs
        .opt_int("dtype")?
        .map(DType::from_onnx_code)
        .transpose()?;
    Ok(Op::Dyn(DynOp::new(EyeLike {
        dtype,
        k: cx.attrs.int("k", 0)?,
    })))
}

impl Operator for EyeLike {
    fn name(&self) -> &str {
        "EyeLike"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if let Some(s) = x.shape {
            if s.len() != 2 {
                return invalid!("EyeLike: the input must be 2-D, got rank {}", s.len());
            }
        }
        Ok(vec![like(x, self.dtype.unwrap_or(x.dtype))])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let [rows, cols] = x.shape() else {
            return invalid!("EyeLike: the input must be 2-D, got shape {:?}", x.shape());
        };
        let (rows, cols) = (*rows, *cols);
        let dtype = self.dtype.unwrap_or(x.dtype());
        let mut y = out.tensor(0, dtype, vec![rows, cols])?;
        dispatch_dtype!(dtype, T => {
            let ys = y.as_slice_mut::<T>()?;
            ys.fill(T::zero());
            for r in 0..rows {
                let c = (r as i64).saturating_add(self.k);
                if c >= 0 && (c as usize) < cols {
                    ys[r * cols + c as usize] = T::one();
                }
            }
        });
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

// ---------------------------------------------------------------- Size

#[derive(Debug)]
struct Size;

pub fn build_size(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Size)))
}

impl Operator for Size {
    fn name(&self) -> &str {
        "Size"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        known(ins, 0)?;
        Ok(vec![(DType::I64, Some(vec![]))])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let mut y = out.tensor(0, DType::I64, vec![])?;
        y.as_slice_mut::<i64>()?[0] = x.numel() as i64;
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
