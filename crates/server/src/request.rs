//! An inference request and response independent of the protocol that
//! carried them, and the checks of a request against a model's config.
//!
//! HTTP and gRPC both parse into [`InferRequest`]; [`decode_inputs`] checks
//! names, datatypes and shapes against the config (with Triton's wording)
//! and builds the engine tensors, in config input order.

use crate::error::{ServerError, ServerResult};
use crate::json_tensor::tensor_from_json;
use crate::pb::InferTensorContents;
use crate::serving_config::{ServingConfig, TensorSpec};
use crate::typed_tensor::tensor_from_contents;
use bytes::Bytes;
use metal_mps::{DType, Tensor};
use std::time::Duration;

/// Where an input's elements are.
#[derive(Debug)]
pub enum InputData {
    /// Little-endian row-major bytes (HTTP binary extension, gRPC
    /// `raw_input_contents`).
    Raw(Bytes),
    /// The JSON text of `data` (a flat or nested array): a slice of the
    /// request body, parsed once the datatype and shape are checked.
    Json(Bytes),
    /// gRPC typed contents.
    Typed(InferTensorContents),
}

/// An input as the client sent it, not yet checked.
#[derive(Debug)]
pub struct RawInput {
    pub name: String,
    /// KServe-v2 datatype name (`FP32`, `INT64`, ...).
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: InputData,
}

/// One inference request.
#[derive(Debug, Default)]
pub struct InferRequest {
    pub id: String,
    pub inputs: Vec<RawInput>,
    /// Outputs to return, by name; empty: all of the model's outputs.
    pub outputs: Vec<String>,
    /// The request's `timeout` parameter (queue timeout).
    pub timeout: Option<Duration>,
}

/// An output of a finished request.
#[derive(Debug)]
pub struct OutputTensor {
    pub name: String,
    pub tensor: Tensor,
}

/// The answer to an [`InferRequest`].
#[derive(Debug)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: String,
    pub outputs: Vec<OutputTensor>,
}

/// Inputs checked against the config, ready to queue.
#[derive(Debug)]
pub struct DecodedInputs {
    /// In config input order.
    pub tensors: Vec<Tensor>,
    /// The batch size (first dimension) when the model batches, else 1.
    pub batch: usize,
}

/// Checks `inputs` against `cfg` and builds their tensors.
pub fn decode_inputs(cfg: &ServingConfig, inputs: Vec<RawInput>) -> ServerResult<DecodedInputs> {
    let model = &cfg.name;
    let mut slots: Vec<Option<Tensor>> = vec![None; cfg.inputs.len()];
    if inputs.len() != cfg.inputs.len() {
        let expected: Vec<&str> = cfg.inputs.iter().map(|i| i.name.as_str()).collect();
        let got: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(ServerError::invalid_arg(format!(
            "expected {} inputs but got {} inputs for model '{model}'. Expected {expected:?}, got {got:?}",
            cfg.inputs.len(),
            inputs.len()
        )));
    }
    let mut batch = None;
    for input in inputs {
        let Some(idx) = cfg.inputs.iter().position(|s| s.name == input.name) else {
            return Err(ServerError::invalid_arg(format!(
                "unexpected inference input '{}' for model '{model}'",
                input.name
            )));
        };
        if slots[idx].is_some() {
            return Err(ServerError::invalid_arg(format!(
                "input '{}' appears more than once in the request",
                input.name
            )));
        }
        let spec = &cfg.inputs[idx];
        let shape = check_shape(cfg, spec, &input.shape)?;
        if cfg.batching() {
            let b = shape[0];
            if *batch.get_or_insert(b) != b {
                return Err(ServerError::invalid_arg(format!(
                    "inputs of model '{model}' disagree on the batch size: input '{}' has {b}, \
                     an earlier input {}",
                    input.name,
                    batch.unwrap_or(0)
                )));
            }
        }
        slots[idx] = Some(decode_data(
            model,
            spec,
            &input.datatype,
            shape,
            &input.data,
        )?);
    }
    Ok(DecodedInputs {
        tensors: slots
            .into_iter()
            .map(|t| t.expect("every input was set"))
            .collect(),
        batch: batch.unwrap_or(1),
    })
}

/// Checks the datatype and builds the tensor from whichever data it came in.
fn decode_data(
    model: &str,
    spec: &TensorSpec,
    datatype: &str,
    shape: Vec<usize>,
    data: &InputData,
) -> ServerResult<Tensor> {
    let expected = spec.dtype.kserve_name();
    if datatype != expected {
        return Err(ServerError::invalid_arg(format!(
            "inference input '{}' data-type is '{datatype}', but model '{model}' expects '{expected}'",
            spec.name
        )));
    }
    let dtype: DType = spec.dtype;
    match data {
        InputData::Raw(bytes) if dtype == DType::String => {
            metal_mps::wire::tensor_from_bytes(dtype, shape, bytes).map_err(|e| {
                ServerError::invalid_arg(format!(
                    "input '{}' of model '{model}' is not valid serialized BYTES data: {e}",
                    spec.name
                ))
            })
        }
        InputData::Raw(bytes) => {
            let need = byte_size(&spec.name, dtype, &shape)?;
            if bytes.len() != need {
                return Err(ServerError::invalid_arg(format!(
                    "unexpected size for input '{}', expecting {need} bytes for model '{model}' \
                     (shape {shape:?} of {datatype}), got {} bytes",
                    spec.name,
                    bytes.len()
                )));
            }
            Ok(Tensor::from_bytes(dtype, shape, bytes)?)
        }
        InputData::Json(v) => tensor_from_json(&spec.name, dtype, shape, v),
        InputData::Typed(c) => tensor_from_contents(&spec.name, dtype, shape, c),
    }
}

/// Checks a request shape against the config (with the batch dimension in
/// front when the model batches) and returns it as sizes.
fn check_shape(cfg: &ServingConfig, spec: &TensorSpec, shape: &[i64]) -> ServerResult<Vec<usize>> {
    let model = &cfg.name;
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        return Err(ServerError::invalid_arg(format!(
            "invalid shape for input '{}': {shape:?} has the negative dimension {d}",
            spec.name
        )));
    }
    let expected = spec.full_shape(cfg.batching());
    let matches = shape.len() == expected.len()
        && shape
            .iter()
            .zip(&expected)
            .skip(cfg.batching() as usize)
            .all(|(&s, &e)| e < 0 || s == e);
    if !matches {
        return Err(ServerError::invalid_arg(format!(
            "unexpected shape for input '{}' for model '{model}'. Expected {expected:?}, got {shape:?}",
            spec.name
        )));
    }
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    byte_size(&spec.name, spec.dtype, &dims)?;
    if cfg.batching() {
        let b = shape[0] as usize;
        if b == 0 || b > cfg.max_batch_size {
            return Err(ServerError::invalid_arg(format!(
                "inference request batch-size must be <= {} for '{model}' (and at least 1), got {b}",
                cfg.max_batch_size
            )));
        }
    }
    Ok(dims)
}

/// The element count of input `name`'s `shape`, or INVALID_ARG when it
/// overflows.
pub fn element_count(name: &str, shape: &[usize]) -> ServerResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| too_large(name, shape))
}

/// The bytes of input `name` as a `dtype` tensor of `shape`, or INVALID_ARG
/// when they overflow (or pass `isize::MAX`, the most one allocation holds).
fn byte_size(name: &str, dtype: DType, shape: &[usize]) -> ServerResult<usize> {
    element_count(name, shape)?
        .checked_mul(dtype.size())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| too_large(name, shape))
}

fn too_large(name: &str, shape: &[usize]) -> ServerError {
    ServerError::invalid_arg(format!(
        "input '{name}': shape {shape:?} has more elements than any request can carry"
    ))
}

/// Indices into the config outputs of the requested names (all outputs
/// when none are named).
pub fn select_outputs(cfg: &ServingConfig, names: &[String]) -> ServerResult<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..cfg.outputs.len()).collect());
    }
    names
        .iter()
        .map(|n| {
            cfg.outputs
                .iter()
                .position(|o| &o.name == n)
                .ok_or_else(|| {
                    ServerError::invalid_arg(format!(
                        "unexpected inference output '{n}' for model '{}'",
                        cfg.name
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::BatchPolicy;
    use crate::serving_config::QueueTimeout;

    fn cfg() -> ServingConfig {
        ServingConfig {
            name: "tiny".into(),
            platform: String::new(),
            max_batch_size: 4,
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DType::F32,
                dims: vec![-1, 2],
            }],
            outputs: vec![TensorSpec {
                name: "y".into(),
                dtype: DType::F32,
                dims: vec![2],
            }],
            policy: BatchPolicy {
                max_batch_size: 4,
                dynamic: None,
                max_queue_size: 4,
                delay_on_timeout: false,
            },
            queue_timeout: QueueTimeout::default(),
        }
    }

    fn input(dt: &str, shape: Vec<i64>, bytes: usize) -> RawInput {
        RawInput {
            name: "x".into(),
            datatype: dt.into(),
            shape,
            data: InputData::Raw(Bytes::from(vec![0u8; bytes])),
        }
    }

    #[test]
    fn good_request_decodes_with_its_batch() {
        let d = decode_inputs(&cfg(), vec![input("FP32", vec![3, 5, 2], 120)]).unwrap();
        assert_eq!(d.batch, 3);
        assert_eq!(d.tensors[0].shape(), &[3, 5, 2]);
    }

    #[test]
    fn mistakes_are_invalid_args() {
        let c = cfg();
        let msg = |r: ServerResult<DecodedInputs>| r.unwrap_err().message;
        assert!(
            msg(decode_inputs(&c, vec![input("FP64", vec![1, 1, 2], 16)])).contains("data-type")
        );
        assert!(
            msg(decode_inputs(&c, vec![input("FP32", vec![1, 1, 3], 12)]))
                .contains("unexpected shape")
        );
        assert!(
            msg(decode_inputs(&c, vec![input("FP32", vec![5, 1, 2], 40)])).contains("batch-size")
        );
        assert!(
            msg(decode_inputs(&c, vec![input("FP32", vec![1, 1, 2], 7)]))
                .contains("unexpected size")
        );
        assert!(msg(decode_inputs(&c, vec![])).contains("expected 1 inputs"));
        // 4 x 2^62 x 2 wraps to 0 in usize: refused as too large, not passed as empty.
        let huge = decode_inputs(&c, vec![input("FP32", vec![4, 1 << 62, 2], 0)]).unwrap_err();
        assert_eq!(huge.http_status(), 400, "{}", huge.message);
        assert!(huge.message.contains("more elements"), "{}", huge.message);
        assert!(select_outputs(&c, &["z".into()]).is_err());
    }
}
