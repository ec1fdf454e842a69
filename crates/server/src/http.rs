//! KServe-v2 HTTP/REST with Triton's extensions (model repository,
//! configuration, statistics, binary tensor data), on axum.
//!
//! Errors are `{"error": "..."}` with Triton's status codes (see
//! [`ServerError::http_status`]); readiness answers 200 or 400 with an empty
//! body, as Triton does.

use crate::body::read_body;
use crate::error::{ServerError, ServerResult};
use crate::http_infer::infer;
use crate::manager::IndexEntry;
use crate::stats_report::model_stats_json;
use crate::AppState;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// The HTTP routes of the inference server.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(model_config_v),
        )
        .route("/v2/models/{model}/stats", get(model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(model_stats_v),
        )
        .route("/v2/models/{model}/infer", post(infer_latest))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read with our own limit, so an oversized one gets a JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A [`ServerError`] as Triton's HTTP endpoint answers it.
impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        tracing::debug!(status = status.as_u16(), error = %self.message, "HTTP request failed");
        (status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Parses a version path segment (Triton: an int64; empty means latest).
pub fn parse_version(v: Option<&str>) -> ServerResult<Option<u64>> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s.parse::<u64>().map(Some).map_err(|e| {
            ServerError::invalid_arg(format!(
                "failed to get model version from specified version string '{s}' (details: {e})"
            ))
        }),
    }
}

/// A version segment of a URL path: Triton's routes match only digits there,
/// so anything else is an unknown route (404), not a bad argument.
fn path_version(v: Option<&str>) -> ServerResult<Option<u64>> {
    parse_version(v).map_err(|e| ServerError::not_found(format!("Not Found: {}", e.message)))
}

async fn not_found() -> ServerError {
    ServerError::not_found("Not Found")
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": "Method Not Allowed" })),
    )
        .into_response()
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(s): State<Arc<AppState>>) -> StatusCode {
    if s.manager.server_ready() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": crate::SERVER_NAME,
        "version": crate::SERVER_VERSION,
        "extensions": crate::EXTENSIONS,
    }))
}

/// Model metadata: name, ready versions, platform, inputs and outputs with
/// KServe datatypes and -1 for variable dimensions.
pub fn metadata_json(s: &AppState, model: &str, version: Option<u64>) -> ServerResult<Value> {
    let served = s.manager.get(model, version)?;
    let cfg = &served.config;
    let tensors = |list: &[crate::serving_config::TensorSpec]| -> Vec<Value> {
        list.iter()
            .map(|t| json!({"name": t.name, "datatype": t.dtype.kserve_name(), "shape": t.full_shape(cfg.batching())}))
            .collect()
    };
    let versions: Vec<String> = s
        .manager
        .ready_versions(model)
        .iter()
        .map(u64::to_string)
        .collect();
    Ok(json!({
        "name": model,
        "versions": versions,
        "platform": cfg.platform,
        "inputs": tensors(&cfg.inputs),
        "outputs": tensors(&cfg.outputs),
    }))
}

async fn model_metadata(
    State(s): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> ServerResult<Json<Value>> {
    metadata_json(&s, &model, None).map(Json)
}

async fn model_metadata_v(
    State(s): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> ServerResult<Json<Value>> {
    metadata_json(&s, &model, path_version(Some(&version))?).map(Json)
}

fn ready_response(s: &AppState, model: &str, version: Option<&str>) -> Response {
    match path_version(version).and_then(|v| s.manager.get(model, v)) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e)
            if e.code == crate::error::Code::NotFound
                && version.is_some_and(|v| v.parse::<u64>().is_err()) =>
        {
            e.into_response()
        }
        Err(_) => ServerError::invalid_arg("Model version not ready").into_response(),
    }
}

async fn model_ready(State(s): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    ready_response(&s, &model, None)
}

async fn model_ready_v(
    State(s): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready_response(&s, &model, Some(&version))
}

async fn model_config(
    State(s): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> ServerResult<Json<Value>> {
    Ok(Json((*s.manager.get(&model, None)?.config_json).clone()))
}

async fn model_config_v(
    State(s): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> ServerResult<Json<Value>> {
    Ok(Json(
        (*s.manager
            .get(&model, path_version(Some(&version))?)?
            .config_json)
            .clone(),
    ))
}

fn stats_response(
    s: &AppState,
    model: Option<&str>,
    version: Option<&str>,
) -> ServerResult<Json<Value>> {
    let served = s.manager.served(model, path_version(version)?)?;
    let stats: Vec<Value> = served
        .iter()
        .map(|(name, v)| model_stats_json(name, v))
        .collect();
    Ok(Json(json!({ "model_stats": stats })))
}

async fn all_stats(State(s): State<Arc<AppState>>) -> ServerResult<Json<Value>> {
    stats_response(&s, None, None)
}

async fn model_stats(
    State(s): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> ServerResult<Json<Value>> {
    stats_response(&s, Some(&model), None)
}

async fn model_stats_v(
    State(s): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> ServerResult<Json<Value>> {
    stats_response(&s, Some(&model), Some(&version))
}

async fn infer_latest(
    State(s): State<Arc<AppState>>,
    Path(model): Path<String>,
    req: Request<Body>,
) -> Response {
    infer(s, model, None, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn infer_version(
    State(s): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
    req: Request<Body>,
) -> Response {
    match path_version(Some(&version)) {
        Ok(v) => infer(s, model, v, req)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

/// Reads a small JSON control body (`{}` when empty).
async fn control_body(s: &AppState, req: Request<Body>, what: &str) -> ServerResult<Value> {
    let (parts, body) = req.into_parts();
    let (bytes, _share) = read_body(&parts.headers, body, &s.body_limits, what).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ServerError::invalid_arg(format!("failed to parse the {what} request JSON: {e}"))
    })?;
    if !v.is_object() {
        return Err(ServerError::invalid_arg(format!(
            "the {what} request body must be a JSON object"
        )));
    }
    Ok(v)
}

fn index_row(e: &IndexEntry) -> Value {
    let mut row = json!({ "name": e.name });
    if !e.version.is_empty() {
        row["version"] = json!(e.version);
    }
    if !e.state.is_empty() {
        row["state"] = json!(e.state);
    }
    if !e.reason.is_empty() {
        row["reason"] = json!(e.reason);
    }
    row
}

async fn repository_index(
    State(s): State<Arc<AppState>>,
    req: Request<Body>,
) -> ServerResult<Json<Value>> {
    let body = control_body(&s, req, "repository index").await?;
    let ready = match body.get("ready") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ServerError::invalid_arg(
                "Invalid value for 'ready': expected a boolean",
            ))
        }
    };
    Ok(Json(Value::Array(
        s.manager.index(ready).iter().map(index_row).collect(),
    )))
}

/// The `config` parameter of a load request: a JSON string (as Triton's
/// clients send it) or an object.
pub fn load_config_param(v: Option<&Value>) -> ServerResult<Option<Value>> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|e| {
            ServerError::invalid_arg(format!(
                "failed to parse the 'config' parameter as JSON: {e}"
            ))
        }),
        Some(o @ Value::Object(_)) => Ok(Some(o.clone())),
        Some(_) => Err(ServerError::invalid_arg(
            "the 'config' parameter must be a JSON string",
        )),
    }
}

async fn repository_load(
    State(s): State<Arc<AppState>>,
    Path(model): Path<String>,
    req: Request<Body>,
) -> ServerResult<Json<Value>> {
    s.manager.check_explicit()?;
    let body = control_body(&s, req, "load model").await?;
    let params = body.get("parameters").and_then(Value::as_object);
    if let Some(file) = params.and_then(|p| p.keys().find(|k| k.starts_with("file:"))) {
        return Err(ServerError::unsupported(format!(
            "load parameter '{file}': model files in load requests are not supported; put them in the repository"
        )));
    }
    let config = load_config_param(params.and_then(|p| p.get("config")))?;
    s.manager.load(&model, config).await?;
    Ok(Json(json!({})))
}

async fn repository_unload(
    State(s): State<Arc<AppState>>,
    Path(model): Path<String>,
    req: Request<Body>,
) -> ServerResult<Json<Value>> {
    s.manager.check_explicit()?;
    control_body(&s, req, "unload model").await?;
    s.manager.unload(&model).await?;
    Ok(Json(json!({})))
}

/// `Content-Type: application/json`, for hand-built JSON bodies.
pub fn json_content_type() -> (header::HeaderName, &'static str) {
    (header::CONTENT_TYPE, "application/json")
}
