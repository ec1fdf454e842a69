//! Elementwise and feature-wise ml operators: Binarizer, Scaler, Normalizer,
//! Imputer, OneHotEncoder, ArrayFeatureExtractor and FeatureVectorizer.

use super::{check_numeric, positions, rows_features, values};
use crate::support::{arg, from_f64s, from_i64s, known, like};
use crate::BuildCx;
use metal_mps_ir::infer::Known;
use metal_mps_ir::{DType, Dim, DynOp, Error, Fact, Op, Operator, Out, Result, Tensor};
use std::any::Any;
use std::collections::HashMap;

#[derive(Debug)]
enum Kind {
    Binarizer {
        threshold: f64,
    },
    Scaler {
        scale: Vec<f64>,
        offset: Vec<f64>,
    },
    Normalizer {
        norm: Norm,
    },
    Imputer {
        values: Vec<f64>,
        replaced: f64,
    },
    OneHot {
        cats: Categories,
        n: usize,
        zeros: bool,
    },
    ArrayFeatureExtractor,
    FeatureVectorizer {
        dims: Vec<usize>,
    },
}

/// OneHotEncoder's categories to their columns.
#[derive(Debug)]
enum Categories {
    Ints(HashMap<i64, usize>),
    Strings(HashMap<Vec<u8>, usize>),
}

#[derive(Clone, Copy, Debug)]
enum Norm {
    Max,
    L1,
    L2,
}

#[derive(Debug)]
struct Simple {
    name: &'static str,
    kind: Kind,
}

fn simple(name: &'static str, kind: Kind) -> Result<Op> {
    Ok(Op::Dyn(DynOp::new(Simple { name, kind })))
}

pub fn build_binarizer(cx: &BuildCx) -> Result<Op> {
    simple(
        "Binarizer",
        Kind::Binarizer {
            threshold: cx.attrs.float("threshold", 0.0)? as f64,
        },
    )
}

pub fn build_scaler(cx: &BuildCx) -> Result<Op> {
    let f = |n: &str| -> Result<Vec<f64>> {
        Ok(cx
            .attrs
            .floats(n)?
            .unwrap_or_default()
            .into_iter()
            .map(f64::from)
            .collect())
    };
    simple(
        "Scaler",
        Kind::Scaler {
            scale: f("scale")?,
            offset: f("offset")?,
        },
    )
}

pub fn build_normalizer(cx: &BuildCx) -> Result<Op> {
    let norm = match cx.attrs.str_or("norm", "MAX")?.as_str() {
        "MAX" => Norm::Max,
        "L1" => Norm::L1,
        "L2" => Norm::L2,
        o => return metal_mps_ir::invalid!("Normalizer: unknown norm '{o}'"),
    };
    simple("Normalizer", Kind::Normalizer { norm })
}

pub fn build_imputer(cx: &BuildCx) -> Result<Op> {
    let a = cx.attrs;
    let (values, replaced) = if let Some(f) = a.floats("imputed_value_floats")? {
        (
            f.into_iter().map(f64::from).collect(),
            a.float("replaced_value_float", 0.0)? as f64,
        )
    } else if let Some(i) = a.ints("imputed_value_int64s")? {
        (
            i.into_iter().map(|v| v as f64).collect(),
            a.int("replaced_value_int64", 0)? as f64,
        )
    } else {
        return metal_mps_ir::invalid!(
            "Imputer: imputed_value_floats or imputed_value_int64s is required"
        );
    };
    simple("Imputer", Kind::Imputer { values, replaced })
}

pub fn build_one_hot(cx: &BuildCx) -> Result<Op> {
    let op = "OneHotEncoder";
    let (cats, n) = match (
        cx.attrs.ints("cats_int64s")?,
        cx.attrs.byte_strings("cats_strings")?,
    ) {
        (Some(list), None) => (Categories::Ints(positions(&list)), list.len()),
        (None, Some(list)) => (Categories::Strings(positions(&list)), list.len()),
        _ => {
            return metal_mps_ir::invalid!(
                "{op}: exactly one of cats_int64s and cats_strings is required"
            )
        }
    };
    simple(
        op,
        Kind::OneHot {
            cats,
            n,
            zeros: cx.attrs.flag("zeros", true)?,
        },
    )
}

pub fn build_array_feature_extractor(_cx: &BuildCx) -> Result<Op> {
    simple("ArrayFeatureExtractor", Kind::ArrayFeatureExtractor)
}

pub fn build_feature_vectorizer(cx: &BuildCx) -> Result<Op> {
    let dims = cx.attrs.sizes("inputdimensions")?.unwrap_or_default();
    simple("FeatureVectorizer", Kind::FeatureVectorizer { dims })
}

/// The value of `v` for feature `j` of an attribute given once or per feature.
fn per_feature(op: &str, v: &[f64], j: usize, default: f64) -> Result<f64> {
    match v.len() {
        0 => Ok(default),
        1 => Ok(v[0]),
        _ => v
            .get(j)
            .copied()
            .ok_or_else(|| Error::Invalid(format!("{op}: {} values for feature {j}", v.len()))),
    }
}

impl Operator for Simple {
    fn name(&self) -> &str {
        self.name
    }

    fn infer(&self, ins: &[Option<Known>], _n_out: usize) -> Result<Vec<Fact>> {
        let x = known(ins, 0)?;
        let op = self.name;
        Ok(vec![match &self.kind {
            Kind::Binarizer { .. } | Kind::Imputer { .. } => {
                check_numeric(op, x.dtype)?;
                like(x, x.dtype)
            }
            Kind::Scaler { .. } | Kind::Normalizer { .. } => {
                check_numeric(op, x.dtype)?;
                like(x, DType::F32)
            }
            Kind::OneHot { n, cats, .. } => {
                match cats {
                    Categories::Ints(_) => check_numeric(op, x.dtype)?,
                    Categories::Strings(_) if x.dtype != DType::String => {
                        return metal_mps_ir::invalid!(
                            "{op}: the categories are strings but the input is {}",
                            x.dtype
                        )
                    }
                    Categories::Strings(_) => {}
                }
                let mut s = x.shape.map(<[Dim]>::to_vec);
                if let Some(s) = s.as_mut() {
                    s.push(Dim::Fixed(*n));
                }
                (DType::F32, s)
            }
            Kind::ArrayFeatureExtractor => {
                let y = known(ins, 1)?;
                let shape = match (x.shape, y.shape) {
                    (Some(xs), Some(ys)) if !xs.is_empty() => {
                        let mut s = xs[..xs.len() - 1].to_vec();
                        let k = metal_mps_ir::fixed_shape(ys)
                            .map(|d| d.iter().product::<usize>())
                            .map_or(Dim::Unknown, Dim::Fixed);
                        if s.is_empty() {
                            s.push(Dim::Fixed(1));
                        }
                        s.push(k);
                        Some(s)
                    }
                    _ => None,
                };
                (x.dtype, shape)
            }
            Kind::FeatureVectorizer { dims } => {
                let n = match x.shape {
                    Some([n, _]) => n.clone(),
                    Some([_]) => Dim::Fixed(1),
                    _ => Dim::Unknown,
                };
                let total = if dims.is_empty() {
                    Dim::Unknown
                } else {
                    Dim::Fixed(dims.iter().sum())
                };
                (DType::F32, Some(vec![n, total]))
            }
        }])
    }

    fn eval(&self, ins: &[Option<&Tensor>], _n_out: usize, _out: &mut Out) -> Result<Vec<Tensor>> {
        let x = arg(ins, 0)?;
        let op = self.name;
        if !matches!(
            self.kind,
            Kind::ArrayFeatureExtractor
                | Kind::FeatureVectorizer { .. }
                | Kind::OneHot {
                    cats: Categories::Strings(_),
                    ..
                }
        ) {
            check_numeric(op, x.dtype())?;
        }
        let shape = x.shape().to_vec();
        let last = shape.last().copied().unwrap_or(1).max(1);
        let y = match &self.kind {
            Kind::Binarizer { threshold } => {
                let v: Vec<f64> = values(x)
                    .into_iter()
                    .map(|v| if v > *threshold { 1.0 } else { 0.0 })
                    .collect();
                from_f64s(x.dtype(), shape, &v)?
            }
            Kind::Scaler { scale, offset } => {
                let mut v = values(x);
                for (i, e) in v.iter_mut().enumerate() {
                    let j = i % last;
                    *e = (*e - per_feature(op, offset, j, 0.0)?) * per_feature(op, scale, j, 1.0)?;
                }
                from_f64s(DType::F32, shape, &v)?
            }
            Kind::Normalizer { norm } => {
                let (n, f) = rows_features(op, &shape)?;
                let mut v = values(x);
                for r in 0..n {
                    let row = &mut v[r * f..(r + 1) * f];
                    match norm {
                        Norm::Max => {
                            let m = row.iter().copied().fold(f64::MIN, f64::max);
                            if m != 0.0 {
                                row.iter_mut().for_each(|e| *e /= m);
                            }
                        }
                        Norm::L1 => {
                            let s: f64 = row.iter().map(|e| e.abs()).sum();
                            if s != 0.0 {
                                row.iter_mut().for_each(|e| *e /= s);
                            }
                        }
                        Norm::L2 => {
                            let s: f64 = row.iter().map(|e| e * e).sum::<f64>().sqrt();
                            if s != 0.0 {
                                row.iter_mut().for_each(|e| *e /= s);
                            }
                        }
                    }
                }
                from_f64s(DType::F32, shape, &v)?
            }
            Kind::Imputer {
                values: imp,
                replaced,
            } => {
                let mut v = values(x);
                let nan = replaced.is_nan();
                for (i, e) in v.iter_mut().enumerate() {
                    if (nan && e.is_nan()) || *e == *replaced {
                        *e = per_feature(op, imp, i % last, *e)?;
                    }
                }
                if x.dtype() == DType::I64 {
                    let ints: Vec<i64> = v.iter().map(|&e| e as i64).collect();
                    // Exact for values that were not replaced.
                    let orig = x.to_i64_vec()?;
                    let merged: Vec<i64> = orig
                        .iter()
                        .zip(&ints)
                        .map(|(&o, &n)| if o as f64 == *replaced { n } else { o })
                        .collect();
                    from_i64s(DType::I64, shape, &merged)?
                } else {
                    from_f64s(x.dtype(), shape, &v)?
                }
            }
            Kind::OneHot { cats, n, zeros } => {
                let hits: Vec<Option<usize>> = match cats {
                    Categories::Ints(m) => values(x)
                        .iter()
                        .map(|&e| m.get(&(e as i64)).copied())
                        .collect(),
                    Categories::Strings(m) => {
                        x.as_strings()?.iter().map(|e| m.get(e).copied()).collect()
                    }
                };
                let mut oshape = shape.clone();
                oshape.push(*n);
                let total = metal_mps_ir::checked_numel(&oshape)?;
                let mut y = metal_mps_ir::limits::try_vec::<f64>(total)?;
                for (i, hit) in hits.into_iter().enumerate() {
                    match hit {
                        Some(c) => y[i * n + c] = 1.0,
                        None if !*zeros => {
                            return metal_mps_ir::invalid!(
                                "OneHotEncoder: element {i} is not a category (zeros=0)"
                            )
                        }
                        None => {}
                    }
                }
                from_f64s(DType::F32, oshape, &y)?
            }
            Kind::ArrayFeatureExtractor => {
                let idx = arg(ins, 1)?;
                if idx.dtype() != DType::I64 {
                    return metal_mps_ir::invalid!("ArrayFeatureExtractor: indices must be INT64");
                }
                let idx = idx.to_i64_vec()?;
                let f = shape.last().copied().unwrap_or(1);
                let rows = if shape.is_empty() {
                    1
                } else {
                    x.numel() / f.max(1)
                };
                let mut cols = Vec::with_capacity(idx.len());
                for &i in &idx {
                    if i < 0 || i as u64 >= f as u64 {
                        return metal_mps_ir::invalid!(
                            "ArrayFeatureExtractor: index {i} is out of range for {f} features"
                        );
                    }
                    cols.push(i as usize);
                }
                let mut offsets = Vec::with_capacity(rows * cols.len());
                for r in 0..rows {
                    offsets.extend(cols.iter().map(|&c| r * f + c));
                }
                let mut oshape = if shape.len() <= 1 {
                    vec![1]
                } else {
                    shape[..shape.len() - 1].to_vec()
                };
                oshape.push(cols.len());
                crate::support::gather_elements(x, &offsets, oshape)?
            }
            Kind::FeatureVectorizer { dims } => {
                let inputs: Vec<&Tensor> = ins.iter().flatten().copied().collect();
                if !dims.is_empty() && dims.len() != inputs.len() {
                    return metal_mps_ir::invalid!(
                        "FeatureVectorizer: {} inputs but {} input dimensions",
                        inputs.len(),
                        dims.len()
                    );
                }
                let mut parts = Vec::new();
                let mut n_rows: Option<usize> = None;
                for t in &inputs {
                    check_numeric(op, t.dtype())?;
                    let (n, f) = match t.shape() {
                        [] => (1, 1),
                        [f] => (1, *f),
                        s => (s[0], s[1..].iter().product()),
                    };
                    if n_rows.is_some_and(|m| m != n) {
                        return metal_mps_ir::invalid!("FeatureVectorizer: inputs differ in rows");
                    }
                    n_rows = Some(n);
                    parts.push((values(t), f));
                }
                let n = n_rows.unwrap_or(1);
                let widths: Vec<usize> = if dims.is_empty() {
                    parts.iter().map(|p| p.1).collect()
                } else {
                    dims.clone()
                };
                let total: usize = widths.iter().sum();
                let mut y = vec![0.0f64; n * total];
                for r in 0..n {
                    let mut at = r * total;
                    for ((v, f), &w) in parts.iter().zip(&widths) {
                        for k in 0..w {
                            y[at + k] = if k < *f { v[r * f + k] } else { 0.0 };
                        }
                        at += w;
                    }
                }
                from_f64s(DType::F32, vec![n, total], &y)?
            }
        };
        Ok(vec![y])
    }

    fn takes_strings(&self) -> bool {
        matches!(
            self.kind,
            Kind::OneHot {
                cats: Categories::Strings(_),
                ..
            }
        )
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
