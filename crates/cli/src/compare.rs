//! Comparing outputs with expected values, as ONNX's backend tests do.

use metal_mps::{DType, Tensor};

/// The largest errors found, and whether every element was within tolerance.
#[derive(Debug, Default)]
pub struct Comparison {
    pub ok: bool,
    pub max_abs: f64,
    pub max_rel: f64,
    pub message: Option<String>,
}

/// `|actual − expected| ≤ atol + rtol·|expected|` elementwise (numpy's
/// `assert_allclose`); NaN equals NaN; STRING elements must be equal; dtypes
/// and shapes must match.
pub fn compare(actual: &Tensor, expected: &Tensor, rtol: f64, atol: f64) -> Comparison {
    if actual.dtype() != expected.dtype() {
        return fail(format!(
            "dtype {} but expected {}",
            actual.dtype(),
            expected.dtype()
        ));
    }
    if actual.shape() != expected.shape() {
        return fail(format!(
            "shape {:?} but expected {:?}",
            actual.shape(),
            expected.shape()
        ));
    }
    if let (Ok(a), Ok(e)) = (actual.as_strings(), expected.as_strings()) {
        return match a.iter().zip(e).position(|(x, y)| x != y) {
            None => Comparison {
                ok: true,
                ..Default::default()
            },
            Some(i) => fail(format!(
                "element {i} is {:?} but expected {:?}",
                String::from_utf8_lossy(&a[i]),
                String::from_utf8_lossy(&e[i])
            )),
        };
    }
    let (a, e) = (actual.to_f64_vec(), expected.to_f64_vec());
    let mut c = Comparison {
        ok: true,
        ..Default::default()
    };
    for (&x, &y) in a.iter().zip(&e) {
        if x.is_nan() && y.is_nan() || x == y {
            continue;
        }
        let abs = (x - y).abs();
        let rel = if y != 0.0 {
            abs / y.abs()
        } else {
            f64::INFINITY
        };
        if abs.is_nan() || abs > atol + rtol * y.abs() {
            c.ok = false;
        }
        c.max_abs = c
            .max_abs
            .max(if abs.is_nan() { f64::INFINITY } else { abs });
        c.max_rel = c
            .max_rel
            .max(if rel.is_nan() { f64::INFINITY } else { rel });
    }
    c
}

fn fail(message: String) -> Comparison {
    Comparison {
        ok: false,
        message: Some(message),
        ..Default::default()
    }
}

/// Tolerances for a dtype: FP16 results get at least 1e-2 relative and 1e-3 absolute.
pub fn tolerances(dtype: DType, rtol: f64, atol: f64) -> (f64, f64) {
    match dtype {
        DType::F16 => (rtol.max(1e-2), atol.max(1e-3)),
        _ => (rtol, atol),
    }
}
