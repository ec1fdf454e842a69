//! `POST /v2/models/{m}[/versions/{v}]/infer`: the KServe-v2 JSON request
//! and response, with Triton's binary tensor data extension.
//!
//! Binary extension: the `Inference-Header-Content-Length: N` header says the
//! first N body bytes are the JSON header; the rest holds, in input order,
//! the raw data of every input whose parameters carry `binary_data_size`.
//! Outputs asked for with `binary_data: true` (or all outputs, by default,
//! when the request sets `binary_data_output: true`) come back the same way:
//! `binary_data_size` in the output's parameters and the bytes after the
//! JSON header, whose length the response's header gives.

use crate::body::{header_u64, read_body};
use crate::error::{ServerError, ServerResult};
use crate::json_tensor::{json_size_bound, JsonData};
use crate::request::{InferRequest, InferResponse, InputData, RawInput};
use crate::AppState;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Header naming the length of the JSON part of a binary request/response.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct HttpRequest<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow)]
    inputs: Vec<HttpInput<'a>>,
    #[serde(default)]
    outputs: Vec<HttpOutput>,
}

#[derive(Deserialize)]
struct HttpInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    /// Kept as text: parsed into the tensor once datatype and shape are checked.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HttpOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// What the response needs to know of the request.
struct ResponseShape {
    /// Per requested output, in request order: whether it goes back binary.
    output_binary: Vec<bool>,
    /// The request's `binary_data_output` (default for unnamed outputs).
    binary_default: bool,
}

/// Handles one inference request end to end.
pub async fn infer(
    s: Arc<AppState>,
    model: String,
    version: Option<u64>,
    req: Request<Body>,
) -> ServerResult<Response> {
    // The version is taken when the request arrives: an unload that starts
    // while the body is still coming waits for this request to finish.
    let served = s.manager.get(&model, version);
    let (parts, body) = req.into_parts();
    let (body, _share) = read_body(&parts.headers, body, &s.body_limits, "inference").await?;
    let served = served?;
    let header_len = header_u64(&parts.headers, HEADER_LENGTH)?;
    let (request, shape) = parse_request(&body, header_len, &model)?;
    // The inputs keep their slices of the body; the rest of it goes now.
    drop(body);
    let response = served.infer(request).await?;
    build_response(response, &shape)
}

/// Parses the JSON header and splits the binary part among the inputs.
fn parse_request(
    body: &Bytes,
    header_len: Option<u64>,
    model: &str,
) -> ServerResult<(InferRequest, ResponseShape)> {
    let (json_part, mut binary) = match header_len {
        None => (body.clone(), Bytes::new()),
        Some(n) if n <= body.len() as u64 => (body.slice(..n as usize), body.slice(n as usize..)),
        Some(n) => {
            return Err(ServerError::invalid_arg(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )))
        }
    };
    let parsed: HttpRequest = serde_json::from_slice(&json_part).map_err(|e| {
        ServerError::invalid_arg(format!("failed to parse the request JSON buffer: {e}"))
    })?;

    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in parsed.inputs {
        reject_shared_memory(&input.parameters, "input", &input.name)?;
        let data = match input.parameters.get("binary_data_size") {
            Some(size) => {
                let size = size.as_u64().ok_or_else(|| {
                    ServerError::invalid_arg(format!(
                        "input '{}': 'binary_data_size' must be a non-negative integer",
                        input.name
                    ))
                })?;
                if header_len.is_none() {
                    return Err(ServerError::invalid_arg(
                        "must specify valid 'Infer-Header-Content-Length' in request header and 'binary_data_size' \
                         when passing inputs in binary data format",
                    ));
                }
                if size > binary.len() as u64 {
                    return Err(ServerError::invalid_arg(format!(
                        "unexpected end of binary data for input '{}': it declares {size} bytes, {} remain",
                        input.name,
                        binary.len()
                    )));
                }
                InputData::Raw(binary.split_to(size as usize))
            }
            None => match input.data {
                Some(d) => InputData::Json(json_part.slice_ref(d.get().as_bytes())),
                None => {
                    return Err(ServerError::invalid_arg(format!(
                        "input '{}' has neither 'data' nor a 'binary_data_size' parameter",
                        input.name
                    )))
                }
            },
        };
        inputs.push(RawInput {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            data,
        });
    }
    if !binary.is_empty() {
        return Err(ServerError::invalid_arg(format!(
            "unexpected additional input data for model '{model}'"
        )));
    }

    let binary_default = bool_param(&parsed.parameters, "binary_data_output")?.unwrap_or(false);
    let timeout = match parsed.parameters.get("timeout") {
        None => None,
        Some(v) => Some(Duration::from_micros(v.as_u64().ok_or_else(|| {
            ServerError::invalid_arg(
                "parameter 'timeout' must be a non-negative integer (microseconds)",
            )
        })?)),
    };
    let mut output_binary = Vec::with_capacity(parsed.outputs.len());
    for o in &parsed.outputs {
        reject_shared_memory(&o.parameters, "output", &o.name)?;
        if o.parameters.contains_key("classification") {
            return Err(ServerError::unsupported(format!(
                "output '{}': the classification extension is not supported",
                o.name
            )));
        }
        output_binary.push(bool_param(&o.parameters, "binary_data")?.unwrap_or(binary_default));
    }
    let id = match parsed.id {
        None => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    let request = InferRequest {
        id,
        inputs,
        outputs: parsed.outputs.into_iter().map(|o| o.name).collect(),
        timeout,
    };
    Ok((
        request,
        ResponseShape {
            output_binary,
            binary_default,
        },
    ))
}

#[derive(Serialize)]
struct HttpResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    outputs: Vec<HttpOutputTensor<'a>>,
}

#[derive(Serialize)]
struct HttpOutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// The JSON header, then the bytes of the binary outputs.
fn build_response(response: InferResponse, shape: &ResponseShape) -> ServerResult<Response> {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut tail = Vec::new();
    let mut json_bound = 1024usize;
    for (i, out) in response.outputs.iter().enumerate() {
        let binary = shape
            .output_binary
            .get(i)
            .copied()
            .unwrap_or(shape.binary_default);
        let bytes = metal_mps::wire::tensor_bytes(&out.tensor)?;
        let size = bytes.len();
        if binary {
            tail.push(bytes);
        } else {
            json_bound = json_bound.saturating_add(json_size_bound(&out.tensor));
        }
        outputs.push(HttpOutputTensor {
            name: &out.name,
            datatype: out.tensor.dtype().kserve_name(),
            shape: out.tensor.shape(),
            parameters: binary.then_some(BinarySize {
                binary_data_size: size,
            }),
            data: (!binary).then_some(JsonData(&out.tensor)),
        });
    }
    let head = HttpResponse {
        model_name: &response.model_name,
        model_version: &response.model_version,
        id: &response.id,
        outputs,
    };
    let tail_len: usize = tail.iter().map(|t| t.len()).sum();
    // One buffer sized for the whole answer: untouched pages of the bound cost nothing.
    let mut body = Vec::new();
    body.try_reserve(json_bound.saturating_add(tail_len))
        .map_err(|_| ServerError::internal("no memory for the response"))?;
    serde_json::to_writer(&mut body, &head).map_err(|e| ServerError::internal(e.to_string()))?;
    if tail.is_empty() {
        return Ok((StatusCode::OK, [crate::http::json_content_type()], body).into_response());
    }
    let head_len = body.len();
    tail.iter().for_each(|t| body.extend_from_slice(t));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                head_len.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

fn bool_param(params: &Map<String, Value>, key: &str) -> ServerResult<Option<bool>> {
    match params.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ServerError::invalid_arg(format!(
            "parameter '{key}' must be a boolean"
        ))),
    }
}

fn reject_shared_memory(params: &Map<String, Value>, what: &str, name: &str) -> ServerResult<()> {
    if params.keys().any(|k| k.starts_with("shared_memory")) {
        return Err(ServerError::unsupported(format!(
            "{what} '{name}': shared memory is not supported by metal-mps serve"
        )));
    }
    Ok(())
}
