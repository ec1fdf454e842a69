//! Cast between every pair of supported dtypes.

use super::unary::map;
use crate::Out;
use metal_mps_ir::{dispatch_dtype, f16, DType, Element, Result, Tensor};

/// Float to integer truncates toward zero (saturating at the type's bounds);
/// anything to BOOL is "not zero".
pub fn cast(x: &Tensor, to: DType, out: &mut Out) -> Result<Tensor> {
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
