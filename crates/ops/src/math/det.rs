//! Det: the determinant of each square matrix `[..., M, M]` (LU with partial
//! pivoting in f64).

use crate::support::{arg, check_float, known};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{dispatch_dtype, Dim, DynOp, Element, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;

#[derive(Debug)]
struct Det;

pub fn build(_cx: &BuildCx) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Det)))
}

/// The determinant of the row-major `m`x`m` matrix `a` (overwritten).
pub fn determinant(a: &mut [f64], m: usize) -> f64 {
    let mut det = 1.0;
    for c in 0..m {
        let p = (c..m)
            .max_by(|&i, &j| a[i * m + c].abs().total_cmp(&a[j * m + c].abs()))
            .unwrap_or(c);
        if a[p * m + c] == 0.0 {
            return 0.0;
        }
        if p != c {
            for k in 0..m {
                a.swap(p * m + k, c * m + k);
            }
            det = -det;
        }
        let piv = a[c * m + c];
        det *= piv;
        for r in c + 1..m {
            let f = a[r * m + c] / piv;
            if f != 0.0 {
                for k in c..m {
                    a[r * m + k] -= f * a[c * m + k];
                }
            }
        }
    }
    det
}

fn det<T: Element>(x: &Tensor, out: &mut Out) -> Result<Tensor> {
    let s = x.shape();
    let r = s.len();
    let m = s[r - 1];
    let batch: usize = s[..r - 2].iter().product();
    let xs = x.as_slice::<T>()?;
    let mut y = out.tensor(0, x.dtype(), s[..r - 2].to_vec())?;
    let ys = y.as_slice_mut::<T>()?;
    let mut a = vec![0.0f64; m * m];
    for (b, o) in ys.iter_mut().enumerate().take(batch) {
        for (d, v) in a.iter_mut().zip(&xs[b * m * m..(b + 1) * m * m]) {
            *d = v.to_f64();
        }
        *o = T::from_f64(determinant(&mut a, m));
    }
    Ok(y)
}

impl Operator for Det {
    fn name(&self) -> &str {
        "Det"
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        check_float("Det", x.dtype)?;
        let shape = match x.shape {
            Some(s) if s.len() >= 2 => Some(s[..s.len() - 2].to_vec()),
            Some(s) => return metal_mps_ir::invalid!("Det: input of rank {} (>= 2)", s.len()),
            None => None::<Vec<Dim>>,
        };
        Ok(vec![(x.dtype, shape)])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        check_float("Det", x.dtype())?;
        let s = x.shape();
        if s.len() < 2 || s[s.len() - 1] != s[s.len() - 2] {
            return metal_mps_ir::invalid!("Det: input of shape {s:?} is not [..., M, M]");
        }
        let y = dispatch_dtype!(x.dtype(), T => det::<T>(x, out)?);
        Ok(vec![y])
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn determinant_by_hand() {
        // det [[0, 2], [3, 4]] = -6 (needs a row swap).
        assert_eq!(super::determinant(&mut [0.0, 2.0, 3.0, 4.0], 2), -6.0);
        let mut a = [2.0, 0.0, 1.0, 1.0, 3.0, 2.0, 1.0, 1.0, 2.0];
        assert!((super::determinant(&mut a, 3) - 6.0).abs() < 1e-12);
    }
}
