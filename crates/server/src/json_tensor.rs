//! Tensor data as JSON numbers and booleans (KServe-v2's `data` field).

use crate::error::{ServerError, ServerResult};
use metal_mps::{bf16, f16, BoolByte, DType, Tensor};
use serde_json::Value;

/// Builds a tensor of `dtype` and `shape` from JSON `data`: a flat or nested
/// (row-major) array holding exactly the tensor's element count. `name`
/// names the input in errors.
pub fn tensor_from_json(
    name: &str,
    dtype: DType,
    shape: Vec<usize>,
    data: &Value,
) -> ServerResult<Tensor> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let numel: usize = shape.iter().product();
    if flat.len() != numel {
        return Err(ServerError::invalid_arg(format!(
            "unexpected number of elements for input '{name}': shape {shape:?} needs {numel}, \
             'data' holds {}",
            flat.len()
        )));
    }
    let bad = |v: &Value| {
        ServerError::invalid_arg(format!(
            "input '{name}': {v} is not a valid {} value",
            dtype.kserve_name()
        ))
    };
    let int = |v: &Value, lo: i64, hi: i64| -> ServerResult<i64> {
        v.as_i64()
            .filter(|x| (lo..=hi).contains(x))
            .ok_or_else(|| bad(v))
    };
    let t = match dtype {
        DType::F32 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| bad(v)))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::F16 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| v.as_f64().map(f16::from_f64).ok_or_else(|| bad(v)))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::I8 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| int(v, i8::MIN.into(), i8::MAX.into()).map(|x| x as i8))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::I16 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| int(v, i16::MIN.into(), i16::MAX.into()).map(|x| x as i16))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::I32 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| int(v, i32::MIN.into(), i32::MAX.into()).map(|x| x as i32))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::I64 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| int(v, i64::MIN, i64::MAX))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::U8 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| int(v, 0, u8::MAX.into()).map(|x| x as u8))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::U16 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| int(v, 0, u16::MAX.into()).map(|x| x as u16))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::U32 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| int(v, 0, u32::MAX.into()).map(|x| x as u32))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::U64 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| v.as_u64().ok_or_else(|| bad(v)))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::F64 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| v.as_f64().ok_or_else(|| bad(v)))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::BF16 => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| v.as_f64().map(bf16::from_f64).ok_or_else(|| bad(v)))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::Bool => Tensor::from_vec(
            shape,
            flat.iter()
                .map(|v| v.as_bool().map(|b| BoolByte(b as u8)).ok_or_else(|| bad(v)))
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        DType::String => Tensor::from_strings(
            shape,
            flat.iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| s.as_bytes().to_vec())
                        .ok_or_else(|| bad(v))
                })
                .collect::<ServerResult<Vec<_>>>()?,
        ),
        d => {
            return Err(ServerError::invalid_arg(format!(
                "input '{name}': {d} tensors have no KServe-v2 data type"
            )))
        }
    };
    Ok(t?)
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// The elements of `t` as a flat JSON array (booleans for BOOL, integers for
/// integer types, numbers for floats, strings for BYTES (bytes that are not
/// UTF-8 replaced by U+FFFD); a non-finite float becomes null, which JSON
/// cannot otherwise carry).
pub fn tensor_to_json(t: &Tensor) -> Value {
    let values = t.to_f64_vec();
    let items: Vec<Value> = match t.dtype() {
        DType::String => t
            .as_strings()
            .unwrap_or_default()
            .iter()
            .map(|s| Value::from(String::from_utf8_lossy(s)))
            .collect(),
        DType::Bool => values.iter().map(|&v| Value::Bool(v != 0.0)).collect(),
        DType::I64 => t
            .as_bytes()
            .chunks_exact(8)
            .map(|c| Value::from(i64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect(),
        DType::U64 => t
            .as_bytes()
            .chunks_exact(8)
            .map(|c| Value::from(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect(),
        DType::I8
        | DType::I16
        | DType::I32
        | DType::U8
        | DType::U16
        | DType::U32
        | DType::I4
        | DType::U4
        | DType::I2
        | DType::U2 => values.iter().map(|&v| Value::from(v as i64)).collect(),
        DType::F32
        | DType::F16
        | DType::F64
        | DType::BF16
        | DType::F8E4M3FN
        | DType::F8E4M3FNUZ
        | DType::F8E5M2
        | DType::F8E5M2FNUZ
        | DType::F8E8M0
        | DType::F4E2M1 => values
            .iter()
            .map(|&v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
            .collect(),
    };
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let a = tensor_from_json("x", DType::F32, vec![2, 2], &json!([[1, 2], [3, 4.5]])).unwrap();
        let b = tensor_from_json("x", DType::F32, vec![2, 2], &json!([1, 2, 3, 4.5])).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_eq!(tensor_to_json(&a), json!([1.0, 2.0, 3.0, 4.5]));
    }

    #[test]
    fn wrong_count_and_types_are_refused() {
        assert!(tensor_from_json("x", DType::F32, vec![3], &json!([1, 2])).is_err());
        assert!(tensor_from_json("x", DType::I8, vec![1], &json!([300])).is_err());
        assert!(tensor_from_json("x", DType::I32, vec![1], &json!([1.5])).is_err());
        assert!(tensor_from_json("x", DType::Bool, vec![1], &json!([1])).is_err());
    }

    #[test]
    fn bytes_are_strings() {
        let t = tensor_from_json("x", DType::String, vec![2], &json!(["a", "é"])).unwrap();
        assert_eq!(
            t.as_strings().unwrap(),
            [b"a".to_vec(), "é".as_bytes().to_vec()]
        );
        assert_eq!(tensor_to_json(&t), json!(["a", "é"]));
        assert!(tensor_from_json("x", DType::String, vec![1], &json!([1])).is_err());
    }

    #[test]
    fn int64_and_bool_round_trip() {
        let t = tensor_from_json("x", DType::I64, vec![2], &json!([i64::MAX, -3])).unwrap();
        assert_eq!(tensor_to_json(&t), json!([i64::MAX, -3]));
        let b = tensor_from_json("x", DType::Bool, vec![2], &json!([true, false])).unwrap();
        assert_eq!(tensor_to_json(&b), json!([true, false]));
    }
}
