//! Sequence and optional values in files: `SequenceProto` and `OptionalProto`
//! of ONNX's `onnx-data.proto` (what `onnx.numpy_helper.from_list` /
//! `from_optional` write, and the backend test data uses). Only the fields of
//! tensors, sequences and optionals are decoded; maps and sparse tensors are
//! refused by their element type.

use crate::proto::TensorProto;
use crate::tensor::tensor_from_proto;
use metal_mps_ir::{Datum, Error, Kind, Result};
use prost::Message;

/// `SequenceProto`/`OptionalProto.DataType`.
const TENSOR: i32 = 1;
const SEQUENCE: i32 = 3;
const OPTIONAL: i32 = 5;

#[derive(Clone, PartialEq, prost::Message)]
struct SequenceProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, optional, tag = "2")]
    elem_type: Option<i32>,
    #[prost(message, repeated, tag = "3")]
    tensor_values: Vec<TensorProto>,
    #[prost(message, repeated, tag = "5")]
    sequence_values: Vec<SequenceProto>,
    #[prost(message, repeated, tag = "7")]
    optional_values: Vec<OptionalProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OptionalProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, optional, tag = "2")]
    elem_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    tensor_value: Option<TensorProto>,
    #[prost(message, optional, boxed, tag = "5")]
    sequence_value: Option<Box<SequenceProto>>,
    #[prost(message, optional, boxed, tag = "7")]
    optional_value: Option<Box<OptionalProto>>,
}

/// Decodes a serialized value of `kind`: a `TensorProto`, a `SequenceProto`
/// of tensors, or an `OptionalProto` of either.
pub fn parse_value_proto(bytes: &[u8], kind: &Kind) -> Result<Datum> {
    match kind {
        Kind::Tensor => Ok(Datum::Tensor(crate::parse_tensor_proto(bytes)?)),
        Kind::Sequence => {
            let s = SequenceProto::decode(bytes)
                .map_err(|e| Error::InvalidInput(format!("not a SequenceProto: {e}")))?;
            sequence(&s)
        }
        Kind::Optional(_) => {
            let o = OptionalProto::decode(bytes)
                .map_err(|e| Error::InvalidInput(format!("not an OptionalProto: {e}")))?;
            optional(&o)
        }
    }
}

fn sequence(s: &SequenceProto) -> Result<Datum> {
    let elem = s.elem_type.unwrap_or(TENSOR);
    if elem != TENSOR || !s.sequence_values.is_empty() || !s.optional_values.is_empty() {
        return Err(Error::Unsupported(format!(
            "sequence '{}' of element type {elem} (only sequences of tensors)",
            s.name.as_deref().unwrap_or("")
        )));
    }
    let tensors = s
        .tensor_values
        .iter()
        .map(|t| tensor_from_proto(t, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(Datum::Sequence(tensors))
}

fn optional(o: &OptionalProto) -> Result<Datum> {
    let inner = match (o.elem_type.unwrap_or(0), &o.tensor_value, &o.sequence_value) {
        (TENSOR, Some(t), _) => Some(Datum::Tensor(tensor_from_proto(t, None)?)),
        (SEQUENCE, _, Some(s)) => Some(sequence(s)?),
        (OPTIONAL, _, _) => {
            return Err(Error::Unsupported(
                "an optional of an optional is not an ONNX value".into(),
            ))
        }
        // UNDEFINED, or a type without its value: an empty optional.
        (0, _, _) | (TENSOR, None, _) | (SEQUENCE, _, None) => None,
        (other, _, _) => {
            return Err(Error::Unsupported(format!(
                "optional '{}' of element type {other} (only tensors and sequences)",
                o.name.as_deref().unwrap_or("")
            )))
        }
    };
    Ok(Datum::Optional(inner.map(Box::new)))
}
