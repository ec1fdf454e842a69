//! The `ai.onnx.ml` operators that scikit-learn converters emit. Scores follow
//! onnxruntime's conventions (post transforms, the binary classifier cases).

pub mod encode;
pub mod linear;
pub mod simple;
pub mod tree;

use crate::Attributes;
use metal_mps_ir::{DType, Error, Result, Tensor};

/// A classifier's class labels: integers or strings (a model gives one or the other).
#[derive(Clone, Debug)]
pub enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
}

impl Labels {
    /// The labels of attribute `ints` or `strings`; `None` when neither is given.
    pub fn read(op: &str, attrs: &Attributes, ints: &str, strings: &str) -> Result<Option<Labels>> {
        match (attrs.ints(ints)?, attrs.byte_strings(strings)?) {
            (Some(_), Some(_)) => {
                metal_mps_ir::invalid!("{op}: both '{ints}' and '{strings}' are given")
            }
            (Some(i), None) => Ok(Some(Labels::Ints(i))),
            (None, Some(s)) => Ok(Some(Labels::Strings(s))),
            (None, None) => Ok(None),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Labels::Ints(_) => DType::I64,
            Labels::Strings(_) => DType::String,
        }
    }

    /// The integers the scoring code picks labels from: the labels
    /// themselves, or for strings their positions (as onnxruntime does).
    pub fn ids(&self) -> Vec<i64> {
        match self {
            Labels::Ints(v) => v.clone(),
            Labels::Strings(v) => (0..v.len() as i64).collect(),
        }
    }

    /// The label output, `[picks.len()]`, from ids that [`Labels::ids`] gave
    /// (or 0 and 1, the binary fallback, written as text for strings).
    pub fn output(&self, picks: Vec<i64>) -> Result<Tensor> {
        let n = picks.len();
        match self {
            Labels::Ints(_) => Tensor::from_vec(vec![n], picks),
            Labels::Strings(v) => {
                let s = picks
                    .into_iter()
                    .map(|i| match usize::try_from(i).ok().and_then(|i| v.get(i)) {
                        Some(s) => s.clone(),
                        None => i.to_string().into_bytes(),
                    })
                    .collect();
                Tensor::from_strings(vec![n], s)
            }
        }
    }
}

/// Each distinct element of `list` to its first position (onnxruntime keeps
/// the first of repeated keys and categories).
pub fn positions<T: Clone + Eq + std::hash::Hash>(
    list: &[T],
) -> std::collections::HashMap<T, usize> {
    let mut m = std::collections::HashMap::new();
    for (i, c) in list.iter().enumerate() {
        m.entry(c.clone()).or_insert(i);
    }
    m
}

/// The rows and features of an ml input: `[N, F]`, or `[F]` as one row.
pub fn rows_features(op: &str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape {
        [f] => Ok((1, *f)),
        [n, f] => Ok((*n, *f)),
        s => metal_mps_ir::invalid!("{op}: input of shape {s:?} (expected [N, F] or [F])"),
    }
}

/// Fails unless the input is one of the numeric types the ml operators take.
pub fn check_numeric(op: &str, d: DType) -> Result<()> {
    match d {
        DType::F32 | DType::F64 | DType::I32 | DType::I64 => Ok(()),
        d => metal_mps_ir::unsupported!("{op} on {d} tensors (FLOAT, DOUBLE, INT32, INT64)"),
    }
}

/// A list of floats given as `name` (floats) or `name_as_tensor` (a tensor).
pub fn floats_or_tensor(attrs: &Attributes, name: &str) -> Result<Option<Vec<f64>>> {
    if let Some(t) = attrs.tensor(&format!("{name}_as_tensor"))? {
        return Ok(Some(t.to_f64_vec()));
    }
    Ok(attrs
        .floats(name)?
        .map(|v| v.into_iter().map(f64::from).collect()))
}

/// A tensor attribute's values as f64.
pub fn tensor_f64(attrs: &Attributes, name: &str) -> Result<Option<Vec<f64>>> {
    Ok(attrs.tensor(name)?.map(|t| t.to_f64_vec()))
}

pub fn required<T>(op: &str, name: &str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| Error::InvalidModel(format!("{op}: attribute '{name}' is required")))
}

/// onnxruntime's post transforms of the scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    pub fn parse(op: &str, s: &str) -> Result<PostTransform> {
        Ok(match s {
            "NONE" => PostTransform::None,
            "SOFTMAX" => PostTransform::Softmax,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            o => return metal_mps_ir::invalid!("{op}: unknown post_transform '{o}'"),
        })
    }

    /// The integer encoding of TreeEnsemble (opset 5).
    pub fn from_int(op: &str, i: i64) -> Result<PostTransform> {
        Ok(match i {
            0 => PostTransform::None,
            1 => PostTransform::Softmax,
            2 => PostTransform::Logistic,
            3 => PostTransform::SoftmaxZero,
            4 => PostTransform::Probit,
            o => return metal_mps_ir::invalid!("{op}: unknown post_transform {o}"),
        })
    }
}

pub fn logistic(v: f64) -> f64 {
    let e = 1.0 / (1.0 + (-v.abs()).exp());
    if v < 0.0 {
        1.0 - e
    } else {
        e
    }
}

/// onnxruntime's approximation of the inverse error function (the one its
/// PROBIT transform uses), in single precision as there.
#[allow(clippy::approx_constant)] // onnxruntime's own constant
fn erf_inv(x: f32) -> f32 {
    let sgn = if x < 0.0 { -1.0 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (3.14159f32 * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147f32 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sgn * v3.sqrt()
}

#[allow(clippy::approx_constant, clippy::excessive_precision)] // onnxruntime's own constant
pub fn probit(v: f64) -> f64 {
    (1.41421356f32 * erf_inv(2.0 * v as f32 - 1.0)) as f64
}

pub fn softmax(s: &mut [f64]) {
    let m = s.iter().copied().fold(f64::MIN, f64::max);
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    s.iter_mut().for_each(|v| *v /= sum);
}

fn softmax_zero(s: &mut [f64]) {
    let m = s.iter().copied().fold(f64::MIN, f64::max);
    let e = (-m).exp();
    let mut sum = 0.0;
    for v in s.iter_mut() {
        if v.abs() > 1e-7 {
            *v = (*v - m).exp();
            sum += *v;
        } else {
            *v *= e;
        }
    }
    s.iter_mut().for_each(|v| *v /= sum);
}

/// onnxruntime's `write_scores`: the transformed scores of one row. A single
/// score becomes two when `add_second_class` is 0..=3 (the binary cases).
pub fn write_scores(mut s: Vec<f64>, pt: PostTransform, add_second_class: i32) -> Vec<f64> {
    if s.len() >= 2 {
        match pt {
            PostTransform::Probit => s.iter_mut().for_each(|v| *v = probit(*v)),
            PostTransform::Logistic => s.iter_mut().for_each(|v| *v = logistic(*v)),
            PostTransform::Softmax => softmax(&mut s),
            PostTransform::SoftmaxZero => softmax_zero(&mut s),
            PostTransform::None => {}
        }
        return s;
    }
    if s.len() == 1 {
        let v = s[0];
        if pt == PostTransform::Probit {
            return vec![probit(v)];
        }
        return match add_second_class {
            0..=3 if pt == PostTransform::Logistic => vec![logistic(-v), logistic(v)],
            0 | 1 => vec![1.0 - v, v],
            2 | 3 => vec![-v, v],
            _ => vec![v],
        };
    }
    s
}

/// The input's values as f64, row-major.
pub fn values(x: &Tensor) -> Vec<f64> {
    x.to_f64_vec()
}
