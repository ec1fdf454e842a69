//! QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked scales)
//! and DynamicQuantizeLinear.

use crate::support::{arg, known, known_opt, like, opt};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{
    bf16, dispatch_dtype, f16, invalid, small_float_from_f64, unsupported, DType, DynOp, Element,
    Fact, Op, Operator, Out, Result, Tensor, I2, I4, U2, U4,
};
use std::any::Any;

/// The integer range of a quantized integer type.
pub(crate) fn int_range(d: DType) -> Option<(i64, i64)> {
    Some(match d {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::U4 => (U4::MIN, U4::MAX),
        DType::I4 => (I4::MIN, I4::MAX),
        DType::U2 => (U2::MIN, U2::MAX),
        DType::I2 => (I2::MIN, I2::MAX),
        _ => return None,
    })
}

/// `v` rounded to the float type `d` (arithmetic "in" that type).
pub(crate) fn round_to(d: DType, v: f64) -> f64 {
    match d {
        DType::F32 => v as f32 as f64,
        DType::F16 => f16::from_f64(v).to_f64(),
        DType::BF16 => bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

/// numpy's result type of arithmetic between two float types.
pub(crate) fn promote(a: DType, b: DType) -> DType {
    if a == b {
        a
    } else if a == DType::F64 || b == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Which scale (and zero point) each element of x uses.
#[derive(Clone, Copy, Debug)]
struct Layout {
    dim: usize,
    inner: usize,
    mode: Mode,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Tensor,
    Axis,
    Block { size: usize, blocks: usize },
}

impl Layout {
    fn new(op: &str, x: &[usize], scale: &[usize], axis: i64, block: i64) -> Result<Layout> {
        let numel: usize = scale.iter().product();
        if block < 0 {
            return invalid!("{op}: block_size {block} is negative");
        }
        if numel == 1 && (block == 0 || scale.len() <= 1) {
            return Ok(Layout {
                dim: 1,
                inner: 1,
                mode: Mode::Tensor,
            });
        }
        let r = x.len() as i64;
        if axis < -r || axis >= r {
            return invalid!("{op}: axis {axis} is out of range for input rank {r}");
        }
        let a = if axis < 0 { axis + r } else { axis } as usize;
        let dim = x[a];
        let inner: usize = x[a + 1..].iter().product();
        if block == 0 {
            if scale.len() != 1 || scale[0] != dim {
                return invalid!(
                    "{op}: scale shape {scale:?} is neither a scalar nor a vector of x's \
                     dimension {a} (x shape {x:?})"
                );
            }
            return Ok(Layout {
                dim,
                inner,
                mode: Mode::Axis,
            });
        }
        let size = block as usize;
        let ok = scale.len() == x.len()
            && (0..x.len()).all(|i| i == a || scale[i] == x[i])
            && scale[a] == dim.div_ceil(size);
        if !ok {
            return invalid!(
                "{op}: scale shape {scale:?} does not block x shape {x:?} along axis {a} with \
                 block_size {size}"
            );
        }
        Ok(Layout {
            dim,
            inner,
            mode: Mode::Block {
                size,
                blocks: scale[a],
            },
        })
    }

    fn index(&self, i: usize) -> usize {
        match self.mode {
            Mode::Tensor => 0,
            Mode::Axis => (i / self.inner) % self.dim,
            Mode::Block { size, blocks } => {
                let n = i % self.inner;
                let a = (i / self.inner) % self.dim;
                let o = i / (self.inner * self.dim);
                (o * blocks + a / size) * self.inner + n
            }
        }
    }
}

fn check_zero_point(op: &str, scale: &[usize], zp: Option<&[usize]>) -> Result<()> {
    match zp {
        Some(z) if z.iter().product::<usize>() != scale.iter().product::<usize>() => {
            invalid!("{op}: zero point shape {z:?} does not match scale shape {scale:?}")
        }
        _ => Ok(()),
    }
}

fn static_dims(k: &Known) -> Option<Vec<usize>> {
    metal_mps_ir::fixed_shape(k.shape?)
}

#[derive(Debug)]
struct Quantize {
    axis: i64,
    saturate: bool,
    block: i64,
    output_dtype: Option<DType>,
    precision: Option<DType>,
}

pub fn quantize(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let code = |name: &str| -> Result<Option<DType>> {
        match a.int(name, 0)? {
            0 => Ok(None),
            c => DType::from_onnx_code(c).map(Some),
        }
    };
    Ok(Op::Dyn(DynOp::new(Quantize {
        axis: a.int("axis", 1)?,
        saturate: a.flag("saturate", true)?,
        block: a.int("block_size", 0)?,
        output_dtype: code("output_dtype")?,
        precision: code("precision")?,
    })))
}

impl Quantize {
    fn out_dtype(&self, zp: Option<DType>) -> Result<DType> {
        let d = match (zp, self.output_dtype) {
            (Some(z), Some(o)) if z != o => {
                return invalid!(
                    "QuantizeLinear: output_dtype {o} differs from the zero point's type {z}"
                )
            }
            (Some(z), _) => z,
            (None, Some(o)) => o,
            (None, None) => DType::U8,
        };
        let ok = (int_range(d).is_some() && d != DType::I32)
            || matches!(
                d,
                DType::F8E4M3FN
                    | DType::F8E4M3FNUZ
                    | DType::F8E5M2
                    | DType::F8E5M2FNUZ
                    | DType::F4E2M1
            );
        if !ok {
            return unsupported!("QuantizeLinear to {d}");
        }
        Ok(d)
    }
}

fn check_input(op: &str, d: DType, allowed_int32: bool) -> Result<()> {
    if d.is_float() || (allowed_int32 && d == DType::I32) {
        Ok(())
    } else {
        unsupported!("{op} of {d} input")
    }
}

impl Operator for Quantize {
    fn name(&self) -> &str {
        "QuantizeLinear"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let s = known(ins, 1)?;
        check_input("QuantizeLinear", x.dtype, true)?;
        check_input("QuantizeLinear scale", s.dtype, false)?;
        let zp = known_opt(ins, 2);
        let d = self.out_dtype(zp.map(|z| z.dtype))?;
        if let (Some(xs), Some(ss)) = (static_dims(x), static_dims(s)) {
            Layout::new("QuantizeLinear", &xs, &ss, self.axis, self.block)?;
            check_zero_point("QuantizeLinear", &ss, zp.and_then(static_dims).as_deref())?;
        }
        Ok(vec![like(x, d)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let op = "QuantizeLinear";
        let x = arg(inputs, 0)?;
        let s = arg(inputs, 1)?;
        let zp = opt(inputs, 2);
        check_input(op, x.dtype(), true)?;
        check_input(op, s.dtype(), false)?;
        let to = self.out_dtype(zp.map(Tensor::dtype))?;
        let layout = Layout::new(op, x.shape(), s.shape(), self.axis, self.block)?;
        check_zero_point(op, s.shape(), zp.map(Tensor::shape))?;
        let cd = match self.precision {
            Some(p) if p.is_float() => p,
            Some(p) => return unsupported!("{op}: precision {p}"),
            None if x.dtype().is_float() => promote(x.dtype(), s.dtype()),
            None => s.dtype(),
        };
        let xs = x.to_f64_vec();
        let ss = s.to_f64_vec();
        let zs = zp.map(Tensor::to_f64_vec);
        let zpv = |j: usize| zs.as_ref().map_or(0.0, |z| z[j]);
        let mut y = out.tensor(0, to, x.shape().to_vec())?;
        let scaled = |i: usize| -> (f64, usize) {
            let j = layout.index(i);
            let v = round_to(cd, round_to(cd, xs[i]) / round_to(cd, ss[j]));
            (v, j)
        };
        if let Some((lo, hi)) = int_range(to) {
            dispatch_dtype!(to, T => {
                let ys = y.as_slice_mut::<T>()?;
                for (i, o) in ys.iter_mut().enumerate() {
                    let (v, j) = scaled(i);
                    let q = (v.round_ties_even() as i64).saturating_add(zpv(j) as i64);
                    *o = T::from_i64(q.clamp(lo, hi));
                }
            });
        } else {
            let ys = y.as_bytes_mut();
            for (i, o) in ys.iter_mut().enumerate() {
                let (v, j) = scaled(i);
                *o = if to == DType::F4E2M1 {
                    small_float_from_f64(to, round_to(cd, v + zpv(j)), true)
                } else {
                    // FLOAT8 zero points are zero (the reference ignores them).
                    small_float_from_f64(to, v, self.saturate)
                };
            }
        }
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct Dequantize {
    axis: i64,
    block: i64,
    output_dtype: Option<DType>,
}

pub fn dequantize(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    Ok(Op::Dyn(DynOp::new(Dequantize {
        axis: a.int("axis", 1)?,
        block: a.int("block_size", 0)?,
        output_dtype: match a.int("output_dtype", 0)? {
            0 => None,
            c => Some(DType::from_onnx_code(c)?),
        },
    })))
}

impl Dequantize {
    fn check(&self, x: DType, s: DType, zp: Option<DType>) -> Result<DType> {
        let op = "DequantizeLinear";
        if int_range(x).is_none() && !x.is_small_float() || x == DType::F8E8M0 {
            return unsupported!("{op} of {x} input");
        }
        check_input(op, s, false)?;
        if let Some(z) = zp {
            if z != x {
                return invalid!("{op}: zero point type {z} differs from x's type {x}");
            }
        }
        let y = self.output_dtype.unwrap_or(s);
        if !y.is_float() {
            return unsupported!("{op} to {y}");
        }
        Ok(y)
    }
}

impl Operator for Dequantize {
    fn name(&self) -> &str {
        "DequantizeLinear"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let s = known(ins, 1)?;
        let zp = known_opt(ins, 2);
        let y = self.check(x.dtype, s.dtype, zp.map(|z| z.dtype))?;
        if let (Some(xs), Some(ss)) = (static_dims(x), static_dims(s)) {
            Layout::new("DequantizeLinear", &xs, &ss, self.axis, self.block)?;
            check_zero_point("DequantizeLinear", &ss, zp.and_then(static_dims).as_deref())?;
        }
        Ok(vec![like(x, y)])
    }

    fn eval(
        &self,
        inputs: &[Option<&Tensor>],
        _n_out: usize,
        out: &mut Out,
    ) -> Result<Vec<Tensor>> {
        let op = "DequantizeLinear";
        let x = arg(inputs, 0)?;
        let s = arg(inputs, 1)?;
        let zp = opt(inputs, 2);
        let to = self.check(x.dtype(), s.dtype(), zp.map(Tensor::dtype))?;
        let layout = Layout::new(op, x.shape(), s.shape(), self.axis, self.block)?;
        check_zero_point(op, s.shape(), zp.map(Tensor::shape))?;
        // As the reference: (float32(x) - zero point) * scale, in float32 (or
        // the wider scale type); FLOAT8/FLOAT4 zero points are not subtracted.
        let zp = zp.filter(|_| !x.dtype().is_small_float());
        let cd = promote(DType::F32, s.dtype());
        let xs = x.to_f64_vec();
        let ss = s.to_f64_vec();
        let zs = zp.map(Tensor::to_f64_vec);
        let vals: Vec<f64> = (0..xs.len())
            .map(|i| {
                let j = layout.index(i);
                let z = zs.as_ref().map_or(0.0, |z| z[j] as f32 as f64);
                let dx = round_to(DType::F32, xs[i] as f32 as f64 - z);
                round_to(cd, dx * ss[j])
            })
            .collect();
        let mut y = out.tensor(0, to, x.shape().to_vec())?;
        dispatch_dtype!(to, T => {
            for (o, &v) in y.as_slice_mut::<T>()?.iter_mut().zip(&vals) {
                *o = T::from_f64(v);
            }
        });
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[derive(Debug)]
struct DynamicQuantize;

pub fn dynamic_quantize(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(DynamicQuantize)))
}

impl Operator for DynamicQuantize {
    fn name(&self) -> &str {
        "DynamicQuantizeLinear"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        if x.dtype != DType::F32 {
            return unsupported!("DynamicQuantizeLinear of {} input", x.dtype);
        }
        Ok(vec![
            like(x, DType::U8),
            (DType::F32, Some(vec![])),
            (DType::U8, Some(vec![])),
        ])
    }

    fn eval(&self, inputs: &[Option<&Tensor>], n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(inputs, 0)?;
        let xs = x.as_slice::<f32>().map_err(|_| {
            metal_mps_ir::Error::Unsupported(format!(
                "DynamicQuantizeLinear of {} input",
                x.dtype()
            ))
        })?;
        // As the reference, in float32: the range always includes 0.
        let max = xs.iter().fold(0f32, |m, &v| m.max(v));
        let min = xs.iter().fold(0f32, |m, &v| m.min(v));
        let scale = (if max == min { 1.0 } else { max - min }) / 255.0;
        let zp = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
        let mut y = out.tensor(0, DType::U8, x.shape().to_vec())?;
        for (o, &v) in y.as_slice_mut::<u8>()?.iter_mut().zip(xs) {
            *o = ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8;
        }
        let mut outs = vec![y, Tensor::scalar(scale), Tensor::scalar(zp as u8)];
        outs.truncate(n_out.max(1));
        Ok(outs)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_quantize_with_a_partial_last_block() {
        // Blocks of 2 along axis 1: [2, 4] / 2 and [9] / 3.
        let x = Tensor::from_vec(vec![1, 3], vec![2.0f32, 4.0, 9.0]).unwrap();
        let s = Tensor::from_vec(vec![1, 2], vec![2.0f32, 3.0]).unwrap();
        let op = Quantize {
            axis: 1,
            saturate: true,
            block: 2,
            output_dtype: None,
            precision: None,
        };
        let y = op
            .eval(&[Some(&x), Some(&s)], 1, &mut Out::fresh())
            .unwrap();
        assert_eq!(y[0].dtype(), DType::U8);
        assert_eq!(y[0].to_vec::<u8>().unwrap(), vec![1, 2, 3]);
    }
}
