//! Cast between every pair of supported dtypes.

use super::unary::map;
use crate::Out;
use metal_mps_ir::{
    dispatch_dtype, f16, f8e8m0_from_f32, small_float_from_f64, DType, E8M0Round, Element, Result,
    Tensor,
};

/// Float to integer truncates toward zero (saturating at the type's bounds);
/// anything to BOOL is "not zero".
pub fn cast(x: &Tensor, to: DType, out: &mut Out) -> Result<Tensor> {
    if x.dtype() == DType::String || to == DType::String {
        return super::strings::cast(x, to);
    }
    let mut y = out.tensor(0, to, x.shape().to_vec())?;
    if x.dtype() == to {
        y.as_bytes_mut().copy_from_slice(x.as_bytes());
        return Ok(y);
    }
    dispatch_dtype!(x.dtype(), S => {
        let src = x.as_slice::<S>()?;
        dispatch_dtype!(to, D => {
            map(src, y.as_slice_mut::<D>()?, convert::<S, D>);
        });
    });
    Ok(y)
}

/// Cast with ONNX's `saturate` (opset 19+: when false, values out of a FLOAT8
/// type's range become infinity or NaN instead of the largest finite value)
/// and `round_mode` (opset 25+, for FLOAT8E8M0). `cast` is
/// `cast_with(x, to, true, E8M0Round::Up, out)`.
pub fn cast_with(
    x: &Tensor,
    to: DType,
    saturate: bool,
    round: E8M0Round,
    out: &mut Out,
) -> Result<Tensor> {
    if x.dtype() == DType::String || to == DType::String {
        return super::strings::cast(x, to);
    }
    let special = match to {
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => !saturate,
        DType::F8E8M0 => !saturate || round != E8M0Round::Up,
        _ => false,
    };
    if !special || x.dtype() == to {
        return cast(x, to, out);
    }
    let mut y = out.tensor(0, to, x.shape().to_vec())?;
    dispatch_dtype!(x.dtype(), S => {
        let src = x.as_slice::<S>()?;
        let dst = y.as_bytes_mut();
        if to == DType::F8E8M0 {
            map(src, dst, |v: S| f8e8m0_from_f32(v.to_f64() as f32, saturate, round));
        } else {
            map(src, dst, |v: S| small_float_from_f64(to, v.to_f64(), saturate));
        }
    });
    Ok(y)
}

fn convert<S: Element, D: Element>(v: S) -> D {
    match D::DTYPE {
        DType::Bool => D::from_f64(if v.to_f64() != 0.0 { 1.0 } else { 0.0 }),
        DType::F16 => D::from_f64(f16::from_f64(v.to_f64()).to_f64()),
        // Integer to integer wraps like a C cast, exactly for 64-bit values.
        d if d.is_int() && (S::DTYPE.is_int() || S::DTYPE == DType::Bool) => {
            D::from_i64(v.to_i64())
        }
        _ => D::from_f64(v.to_f64()),
    }
}
