//! Tensor data in KServe-v2 JSON (`"data": [...]`), read and written
//! without building a JSON tree.
//!
//! Reading: the request parser keeps each input's `data` as raw JSON text
//! (a slice of the body); [`tensor_from_json`] then parses that text straight
//! into the storage of a tensor of the declared datatype and shape, checking
//! every value's type and range and the element count as it goes. A request
//! costs its body plus its tensors, not a `serde_json::Value` per number.
//!
//! Writing: [`JsonData`] serializes a tensor's elements straight into the
//! response buffer.

use crate::error::{ServerError, ServerResult};
use crate::request::element_count;
use metal_mps::{bf16, f16, BoolByte, DType, Element, Tensor};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::fmt;

/// Builds a tensor of `dtype` and `shape` from `text`, the JSON of a flat or
/// nested array holding exactly the tensor's element count. `name` names the
/// input in errors.
pub fn tensor_from_json(
    name: &str,
    dtype: DType,
    shape: Vec<usize>,
    text: &[u8],
) -> ServerResult<Tensor> {
    match dtype {
        DType::F32 => parse::<f32>(name, shape, text),
        DType::F16 => parse::<f16>(name, shape, text),
        DType::BF16 => parse::<bf16>(name, shape, text),
        DType::F64 => parse::<f64>(name, shape, text),
        DType::I8 => parse::<i8>(name, shape, text),
        DType::I16 => parse::<i16>(name, shape, text),
        DType::I32 => parse::<i32>(name, shape, text),
        DType::I64 => parse::<i64>(name, shape, text),
        DType::U8 => parse::<u8>(name, shape, text),
        DType::U16 => parse::<u16>(name, shape, text),
        DType::U32 => parse::<u32>(name, shape, text),
        DType::U64 => parse::<u64>(name, shape, text),
        DType::Bool => parse::<BoolByte>(name, shape, text),
        DType::String => parse_strings(name, shape, text),
        d => Err(ServerError::invalid_arg(format!(
            "input '{name}': {d} tensors have no KServe-v2 data type"
        ))),
    }
}

fn parse<T: JsonElement>(name: &str, shape: Vec<usize>, text: &[u8]) -> ServerResult<Tensor> {
    let numel = element_count(name, &shape)?;
    let count_error = |got: &str| {
        ServerError::invalid_arg(format!(
            "unexpected number of elements for input '{name}': shape {shape:?} needs {numel}, \
             'data' holds {got}"
        ))
    };
    // Every element takes at least one character: a shape that needs more
    // than the text has is wrong before any memory is spent on it.
    if numel > text.len() {
        return Err(count_error("fewer"));
    }
    let mut tensor = Tensor::zeros(T::DTYPE, shape.clone())?;
    let slots = tensor.as_slice_mut::<T>()?;
    let mut filled = 0usize;
    let mut de = serde_json::Deserializer::from_slice(text);
    let seed = Elements {
        slots,
        filled: &mut filled,
    };
    let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
    match parsed {
        Err(e) if e.to_string().starts_with(TOO_MANY) => Err(count_error("more")),
        Err(e) => Err(ServerError::invalid_arg(format!(
            "input '{name}': {e} (expected {} values)",
            T::DTYPE.kserve_name()
        ))),
        Ok(()) if filled != numel => Err(count_error(&filled.to_string())),
        Ok(()) => Ok(tensor),
    }
}

/// BYTES elements as JSON strings (UTF-8 text; KServe-v2 JSON has no other
/// spelling of bytes). Strings are few and short next to numbers, so this
/// goes through a JSON tree.
fn parse_strings(name: &str, shape: Vec<usize>, text: &[u8]) -> ServerResult<Tensor> {
    let numel = element_count(name, &shape)?;
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
        ServerError::invalid_arg(format!("input '{name}': {e} (expected BYTES values)"))
    })?;
    let mut flat = Vec::new();
    flatten(&value, &mut flat);
    if flat.len() != numel {
        return Err(ServerError::invalid_arg(format!(
            "unexpected number of elements for input '{name}': shape {shape:?} needs {numel}, \
             'data' holds {}",
            flat.len()
        )));
    }
    let strings = flat
        .iter()
        .map(|v| {
            v.as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| {
                ServerError::invalid_arg(format!(
                    "input '{name}': {v} is not a valid value (expected BYTES values)"
                ))
            })
        })
        .collect::<ServerResult<Vec<_>>>()?;
    Ok(Tensor::from_strings(shape, strings)?)
}

fn flatten<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Start of the error raised when `data` holds more values than the shape.
const TOO_MANY: &str = "more values than the shape holds";

/// Fills `slots` from a (nested) JSON array, counting into `filled`.
struct Elements<'a, T> {
    slots: &'a mut [T],
    filled: &'a mut usize,
}

impl<T: JsonElement> Elements<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, what: impl fmt::Display) -> Result<(), E> {
        let v = v.ok_or_else(|| E::custom(format_args!("{what} is not a valid value")))?;
        let slot = self
            .slots
            .get_mut(*self.filled)
            .ok_or_else(|| E::custom(TOO_MANY))?;
        *slot = v;
        *self.filled += 1;
        Ok(())
    }
}

impl<'de, T: JsonElement> DeserializeSeed<'de> for Elements<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: JsonElement> Visitor<'de> for Elements<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of {} values", T::DTYPE.kserve_name())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Elements {
                slots: &mut *self.slots,
                filled: &mut *self.filled,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_json_i64(v), v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_json_u64(v), v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_json_f64(v), v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_json_bool(v), v)
    }
}

/// How a JSON number or boolean becomes an element: integers must be
/// integral and in range; floats take any number; BOOL only booleans.
trait JsonElement: Element {
    fn from_json_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_json_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_json_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_json_bool(_: bool) -> Option<Self> {
        None
    }
}

macro_rules! json_int {
    ($($t:ty),*) => {$(
        impl JsonElement for $t {
            fn from_json_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_json_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        }
    )*};
}
json_int!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! json_float {
    ($($t:ty),*) => {$(
        impl JsonElement for $t {
            fn from_json_i64(v: i64) -> Option<Self> {
                Some(<$t as Element>::from_f64(v as f64))
            }
            fn from_json_u64(v: u64) -> Option<Self> {
                Some(<$t as Element>::from_f64(v as f64))
            }
            fn from_json_f64(v: f64) -> Option<Self> {
                Some(<$t as Element>::from_f64(v))
            }
        }
    )*};
}
json_float!(f32, f64, f16, bf16);

impl JsonElement for BoolByte {
    fn from_json_bool(v: bool) -> Option<Self> {
        Some(BoolByte(v as u8))
    }
}

/// A tensor's elements as a flat JSON array (booleans for BOOL, integers for
/// integer types, numbers for floats, strings for BYTES (bytes that are not
/// UTF-8 replaced by U+FFFD); a non-finite float becomes null, which JSON
/// cannot otherwise carry).
pub struct JsonData<'a>(pub &'a Tensor);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        match t.dtype() {
            DType::String => s.collect_seq(
                t.as_strings()
                    .map_err(serde::ser::Error::custom)?
                    .iter()
                    .map(|b| String::from_utf8_lossy(b)),
            ),
            DType::Bool => seq(s, t, |b: BoolByte| b.0 != 0),
            DType::I8 => seq(s, t, |v: i8| v),
            DType::I16 => seq(s, t, |v: i16| v),
            DType::I32 => seq(s, t, |v: i32| v),
            DType::I64 => seq(s, t, |v: i64| v),
            DType::U8 => seq(s, t, |v: u8| v),
            DType::U16 => seq(s, t, |v: u16| v),
            DType::U32 => seq(s, t, |v: u32| v),
            DType::U64 => seq(s, t, |v: u64| v),
            DType::F32 => seq(s, t, |v: f32| f64::from(v)),
            DType::F64 => seq(s, t, |v: f64| v),
            DType::F16 => seq(s, t, |v: f16| v.to_f64()),
            DType::BF16 => seq(s, t, |v: bf16| v.to_f64()),
            DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
                s.collect_seq(t.to_f64_vec().into_iter().map(|v| v as i64))
            }
            _ => s.collect_seq(t.to_f64_vec()),
        }
    }
}

fn seq<S: Serializer, T: Element, V: Serialize>(
    s: S,
    t: &Tensor,
    map: impl Fn(T) -> V,
) -> Result<S::Ok, S::Error> {
    let values = t.as_slice::<T>().map_err(serde::ser::Error::custom)?;
    let mut out = s.serialize_seq(Some(values.len()))?;
    for &v in values {
        out.serialize_element(&map(v))?;
    }
    out.end()
}

/// An upper bound of the JSON bytes of `t`'s elements, to size a response
/// buffer once (pages never written cost no memory).
pub fn json_size_bound(t: &Tensor) -> usize {
    if let Ok(strings) = t.as_strings() {
        // Quotes and a comma per string; an escaped byte (`\u0001`) takes 6.
        return strings.iter().fold(2usize, |n, s| {
            n.saturating_add(s.len().saturating_mul(6))
                .saturating_add(3)
        });
    }
    // "-1.7976931348623157e308," is 24 bytes; every other element is shorter.
    t.numel().saturating_mul(25).saturating_add(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(t: &Tensor) -> String {
        serde_json::to_string(&JsonData(t)).unwrap()
    }

    #[test]
    fn nested_and_flat_data_decode_alike() {
        let a = tensor_from_json("x", DType::F32, vec![2, 2], b"[[1, 2], [3, 4.5]]").unwrap();
        let b = tensor_from_json("x", DType::F32, vec![2, 2], b"[1, 2, 3, 4.5]").unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_eq!(json(&a), "[1.0,2.0,3.0,4.5]");
    }

    #[test]
    fn wrong_count_and_types_are_refused() {
        let err = |dt, shape: Vec<usize>, text: &str| {
            tensor_from_json("x", dt, shape, text.as_bytes())
                .unwrap_err()
                .message
        };
        assert!(err(DType::F32, vec![3], "[1, 2]").contains("needs 3"));
        assert!(err(DType::F32, vec![2], "[1, 2, 3]").contains("holds more"));
        assert!(err(DType::F32, vec![1 << 40], "[1, 2]").contains("needs"));
        assert!(err(DType::I8, vec![1], "[300]").contains("300"));
        assert!(err(DType::I32, vec![1], "[1.5]").contains("1.5"));
        assert!(err(DType::Bool, vec![1], "[1]").contains("valid"));
        assert!(err(DType::F32, vec![1], "[\"a\"]").contains("FP32"));
        assert!(err(DType::F32, vec![1], "[null]").contains("FP32"));
        assert!(err(DType::F32, vec![1], "[1] x").contains("trailing"));
        assert!(err(DType::F32, vec![usize::MAX, 2], "[1]").contains("more elements"));
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(err(DType::F32, vec![1], &deep).contains("recursion"));
    }

    #[test]
    fn bytes_are_strings() {
        let text = r#"[["a", "é"], ["\u0001", ""]]"#;
        let t = tensor_from_json("x", DType::String, vec![2, 2], text.as_bytes()).unwrap();
        assert_eq!(
            t.as_strings().unwrap(),
            [b"a".to_vec(), "é".as_bytes().to_vec(), vec![1], vec![]]
        );
        assert_eq!(json(&t), r#"["a","é","\u0001",""]"#);
        assert!(json_size_bound(&t) >= json(&t).len());
        assert!(tensor_from_json("x", DType::String, vec![1], b"[1]").is_err());
        assert!(tensor_from_json("x", DType::String, vec![2], b"[\"a\"]").is_err());
    }

    #[test]
    fn int64_and_bool_round_trip() {
        let t = tensor_from_json(
            "x",
            DType::I64,
            vec![2],
            format!("[{}, -3]", i64::MAX).as_bytes(),
        )
        .unwrap();
        assert_eq!(json(&t), format!("[{},-3]", i64::MAX));
        let b = tensor_from_json("x", DType::Bool, vec![2], b"[true, false]").unwrap();
        assert_eq!(json(&b), "[true,false]");
        let f = Tensor::from_vec(vec![2], vec![f32::NAN, 1.0]).unwrap();
        assert_eq!(json(&f), "[null,1.0]");
        assert!(json_size_bound(&f) >= json(&f).len());
    }
}
