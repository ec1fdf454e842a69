//! STRING values on the CPU engine (see `metal_mps_ir::strings`): the element
//! movers run on order-preserving integer ids, and Cast converts between
//! STRING and numbers.

use super::eval_op;
use crate::Out;
use metal_mps_ir::{bf16, dispatch_dtype, f16, strings, DType, Element, Op, Result, Tensor};

/// Whether `op` on `inputs` involves STRING values and must go through [`eval`].
pub fn involved(op: &Op, inputs: &[Option<&Tensor>]) -> bool {
    matches!(op, Op::Cast { to: DType::String })
        || inputs.iter().flatten().any(|t| t.dtype() == DType::String)
}

/// Runs a node that takes or makes STRING values.
pub fn eval(
    op: &Op,
    inputs: &[Option<&Tensor>],
    num_outputs: usize,
    out: &mut Out,
) -> Result<Vec<Tensor>> {
    match op {
        Op::Dyn(d) if d.takes_strings() => d.eval(inputs, num_outputs, out),
        Op::Cast { to } => Ok(vec![cast(super::arg(inputs, 0)?, *to)?]),
        _ if strings::moves_strings(&op.name()) => eval_on_ids(op, inputs, num_outputs, out),
        _ => metal_mps_ir::unsupported!("{} on STRING tensors", op.name()),
    }
}

/// Runs an element mover with every STRING input replaced by UINT64 ids: the
/// ranks of its strings among all the distinct strings of the inputs, so that
/// equal strings get equal ids and ids sort like the strings' bytes (Equal and
/// Unique compare them). UINT64 outputs are ids, mapped back to strings.
fn eval_on_ids(
    op: &Op,
    inputs: &[Option<&Tensor>],
    num_outputs: usize,
    out: &mut Out,
) -> Result<Vec<Tensor>> {
    let mut table: Vec<&[u8]> = Vec::new();
    for t in inputs.iter().flatten() {
        if t.dtype() == DType::String {
            table.extend(t.as_strings()?.iter().map(Vec::as_slice));
        } else if t.dtype() == DType::U64 {
            // Ids and real UINT64 values could not be told apart in the outputs.
            return metal_mps_ir::unsupported!("{} mixing STRING and UINT64 inputs", op.name());
        }
    }
    table.sort_unstable();
    table.dedup();
    let ids = inputs
        .iter()
        .map(|t| match t {
            Some(t) if t.dtype() == DType::String => {
                let ids: Vec<u64> = t
                    .as_strings()?
                    .iter()
                    .map(|s| table.binary_search(&s.as_slice()).unwrap_or_default() as u64)
                    .collect();
                Tensor::from_vec(t.shape().to_vec(), ids).map(Some)
            }
            _ => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    let proxied: Vec<Option<&Tensor>> = inputs
        .iter()
        .zip(&ids)
        .map(|(t, id)| id.as_ref().or(*t))
        .collect();
    let outs = eval_op(op, &proxied, num_outputs, out)?;
    outs.into_iter()
        .map(|t| {
            if t.dtype() != DType::U64 {
                return Ok(t);
            }
            let strings = t
                .as_slice::<u64>()?
                .iter()
                .map(|&id| {
                    table.get(id as usize).map(|s| s.to_vec()).ok_or_else(|| {
                        metal_mps_ir::Error::Invalid(format!(
                            "{} produced a string id ({id}) beyond its inputs' strings",
                            op.name()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::from_strings(t.shape().to_vec(), strings)
        })
        .collect()
}

/// Cast to, from or between STRING (ONNX Cast, opset 9+): numbers are written
/// in their shortest round-trip decimal form (NaN, INF and -INF for the
/// non-finite floats, 1 and 0 for BOOL); strings are parsed as decimal or
/// scientific numbers ("NaN", "INF", "+INF", "-INF" in any case).
pub fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    match (x.dtype(), to) {
        (DType::String, DType::String) => Ok(x.clone()),
        (DType::String, _) => from_strings(x.as_strings()?, to, shape),
        (from, _) if from.is_small_float() || from.is_small_int() => {
            Tensor::from_strings(shape, x.to_f64_vec().into_iter().map(float_text).collect())
        }
        (from, _) => dispatch_dtype!(from, S => {
            let text: Vec<Vec<u8>> = x.as_slice::<S>()?.iter().map(|&v| number_text(v)).collect();
            Tensor::from_strings(shape, text)
        }),
    }
}

fn number_text<T: Element>(v: T) -> Vec<u8> {
    let any: &dyn std::any::Any = &v;
    if let Some(v) = any.downcast_ref::<f32>() {
        float_text_of(*v as f64, v.to_string())
    } else if let Some(v) = any.downcast_ref::<f16>() {
        float_text_of(v.to_f64(), v.to_f32().to_string())
    } else if let Some(v) = any.downcast_ref::<bf16>() {
        float_text_of(v.to_f64(), v.to_f32().to_string())
    } else if let Some(v) = any.downcast_ref::<f64>() {
        float_text(*v)
    } else if let Some(v) = any.downcast_ref::<u64>() {
        v.to_string().into_bytes()
    } else {
        v.to_i64().to_string().into_bytes()
    }
}

fn float_text(v: f64) -> Vec<u8> {
    float_text_of(v, v.to_string())
}

fn float_text_of(v: f64, finite: String) -> Vec<u8> {
    match v {
        v if v.is_nan() => b"NaN".to_vec(),
        f64::INFINITY => b"INF".to_vec(),
        f64::NEG_INFINITY => b"-INF".to_vec(),
        _ => finite.into_bytes(),
    }
}

fn from_strings(text: &[Vec<u8>], to: DType, shape: Vec<usize>) -> Result<Tensor> {
    if to.is_small_float() || to.is_small_int() {
        let f = text
            .iter()
            .map(|s| parse_f64(s))
            .collect::<Result<Vec<_>>>()?;
        let via = Tensor::from_vec(shape, f)?;
        return super::cast::cast(&via, to, &mut Out::fresh());
    }
    dispatch_dtype!(to, D => {
        let v = text
            .iter()
            .map(|s| parse_as::<D>(s))
            .collect::<Result<Vec<D>>>()?;
        Tensor::from_vec(shape, v)
    })
}

fn parse_as<D: Element>(s: &[u8]) -> Result<D> {
    if D::DTYPE.is_int() || D::DTYPE == DType::Bool {
        let t = std::str::from_utf8(s).unwrap_or_default().trim();
        if let Ok(i) = t.parse::<i128>() {
            return Ok(if D::DTYPE == DType::Bool {
                D::from_f64((i != 0) as u8 as f64)
            } else {
                // The low 64 bits: exact for every INT64 and UINT64 value.
                D::from_i64(i as i64)
            });
        }
    }
    Ok(D::from_f64(parse_f64(s)?))
}

fn parse_f64(s: &[u8]) -> Result<f64> {
    let t = std::str::from_utf8(s).unwrap_or_default().trim();
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let negative = t.starts_with('-');
    let special = match unsigned.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "inf" | "infinity" => Some(f64::INFINITY),
        _ => None,
    };
    if let Some(v) = special {
        return Ok(if negative { -v } else { v });
    }
    t.parse::<f64>().map_err(|_| {
        metal_mps_ir::Error::InvalidInput(format!(
            "Cast: '{}' is not a number",
            String::from_utf8_lossy(s)
        ))
    })
}
