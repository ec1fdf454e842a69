//! `inference.GRPCInferenceService`, wire-compatible with Triton's
//! grpc_service.proto, on tonic.
//!
//! Inputs may come as typed `contents` or as `raw_input_contents` (one
//! buffer per input); outputs always go back as `raw_output_contents`, as
//! Triton sends them.

use crate::error::ServerError;
use crate::http::{load_config_param, parse_version};
use crate::pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use crate::pb::{
    self, infer_parameter::ParameterChoice,
    model_repository_parameter::ParameterChoice as RepoParam,
};
use crate::request::{InferRequest, InputData, RawInput};
use crate::stats_report::model_stats_proto;
use crate::AppState;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The gRPC service, with `max_input_size` as the largest message accepted.
pub fn service(state: Arc<AppState>) -> GrpcInferenceServiceServer<Grpc> {
    let limit = state.max_input_size;
    GrpcInferenceServiceServer::new(Grpc { state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
}

pub struct Grpc {
    state: Arc<AppState>,
}

type Answer<T> = Result<Response<T>, Status>;

fn version(v: &str) -> Result<Option<u64>, Status> {
    parse_version(Some(v)).map_err(Status::from)
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Answer<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Answer<pb::ServerReadyResponse> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.manager.server_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Answer<pb::ModelReadyResponse> {
        let r = req.into_inner();
        let v = version(&r.version)?;
        let ready = self.state.manager.get(&r.name, v).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Answer<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: crate::SERVER_NAME.into(),
            version: crate::SERVER_VERSION.into(),
            extensions: crate::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Answer<pb::ModelMetadataResponse> {
        let r = req.into_inner();
        let served = self.state.manager.get(&r.name, version(&r.version)?)?;
        let cfg = &served.config;
        let tensors = |list: &[crate::serving_config::TensorSpec]| {
            list.iter()
                .map(|t| pb::model_metadata_response::TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.dtype.kserve_name().into(),
                    shape: t.full_shape(cfg.batching()),
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: r.name.clone(),
            versions: self
                .state
                .manager
                .ready_versions(&r.name)
                .iter()
                .map(u64::to_string)
                .collect(),
            platform: cfg.platform.clone(),
            inputs: tensors(&cfg.inputs),
            outputs: tensors(&cfg.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Answer<pb::ModelInferResponse> {
        let r = req.into_inner();
        let served = self
            .state
            .manager
            .get(&r.model_name, version(&r.model_version)?)?;
        let _share = self
            .state
            .body_limits
            .budget
            .take(prost::Message::encoded_len(&r))?;
        let request = infer_request(r)?;
        let response = served.infer(request).await?;
        let mut outputs = Vec::with_capacity(response.outputs.len());
        let mut raw = Vec::with_capacity(response.outputs.len());
        for o in response.outputs {
            outputs.push(pb::model_infer_response::InferOutputTensor {
                name: o.name,
                datatype: o.tensor.dtype().kserve_name().into(),
                shape: o.tensor.shape().iter().map(|&d| d as i64).collect(),
                parameters: Default::default(),
                contents: None,
            });
            let bytes = metal_mps::wire::tensor_bytes(&o.tensor).map_err(ServerError::from)?;
            raw.push(Bytes::copy_from_slice(&bytes));
        }
        Ok(Response::new(pb::ModelInferResponse {
            model_name: response.model_name,
            model_version: response.model_version,
            id: response.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents: raw,
        }))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Answer<pb::ModelConfigResponse> {
        let r = req.into_inner();
        let served = self.state.manager.get(&r.name, version(&r.version)?)?;
        let config =
            crate::pbtxt::json_to_proto(&served.config_json).map_err(ServerError::internal)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Answer<pb::ModelStatisticsResponse> {
        let r = req.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let served = self.state.manager.served(name, version(&r.version)?)?;
        Ok(Response::new(pb::ModelStatisticsResponse {
            model_stats: served
                .iter()
                .map(|(n, v)| model_stats_proto(n, v))
                .collect(),
        }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Answer<pb::RepositoryIndexResponse> {
        let r = req.into_inner();
        if !r.repository_name.is_empty() {
            return Err(ServerError::unsupported(
                "'repository_name' specification is not supported",
            )
            .into());
        }
        let models = self
            .state
            .manager
            .index(r.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state,
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Answer<pb::RepositoryModelLoadResponse> {
        let r = req.into_inner();
        if !r.repository_name.is_empty() {
            return Err(ServerError::unsupported(
                "'repository_name' specification is not supported",
            )
            .into());
        }
        self.state.manager.check_explicit()?;
        let mut config = None;
        for (key, p) in &r.parameters {
            match (key.as_str(), &p.parameter_choice) {
                ("config", Some(RepoParam::StringParam(s))) => {
                    config = load_config_param(Some(&serde_json::Value::String(s.clone())))?;
                }
                ("config", _) => return Err(ServerError::invalid_arg("the 'config' parameter must be a string").into()),
                (k, _) if k.starts_with("file:") => {
                    return Err(ServerError::unsupported(format!(
                        "load parameter '{k}': model files in load requests are not supported; put them in the repository"
                    ))
                    .into())
                }
                _ => {}
            }
        }
        self.state.manager.load(&r.model_name, config).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Answer<pb::RepositoryModelUnloadResponse> {
        let r = req.into_inner();
        if !r.repository_name.is_empty() {
            return Err(ServerError::unsupported(
                "'repository_name' specification is not supported",
            )
            .into());
        }
        self.state.manager.check_explicit()?;
        self.state.manager.unload(&r.model_name).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

/// The protocol-neutral form of a gRPC inference request.
fn infer_request(r: pb::ModelInferRequest) -> Result<InferRequest, ServerError> {
    let raw = !r.raw_input_contents.is_empty();
    if raw && r.raw_input_contents.len() != r.inputs.len() {
        return Err(ServerError::invalid_arg(format!(
            "expected {} raw_input_contents (one per input) but got {}",
            r.inputs.len(),
            r.raw_input_contents.len()
        )));
    }
    let mut raw_contents = r.raw_input_contents.into_iter();
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for i in r.inputs {
        if i.parameters.keys().any(|k| k.starts_with("shared_memory")) {
            return Err(ServerError::unsupported(format!(
                "input '{}': shared memory is not supported by metal-mps serve",
                i.name
            )));
        }
        let data = match (raw_contents.next(), i.contents) {
            (Some(_), Some(_)) => {
                return Err(ServerError::invalid_arg(format!(
                    "input '{}': contents and raw_input_contents cannot both be given",
                    i.name
                )))
            }
            (Some(bytes), None) => InputData::Raw(bytes),
            (None, Some(c)) => InputData::Typed(c),
            (None, None) => {
                return Err(ServerError::invalid_arg(format!(
                    "input '{}' has no contents",
                    i.name
                )));
            }
        };
        inputs.push(RawInput {
            name: i.name,
            datatype: i.datatype,
            shape: i.shape,
            data,
        });
    }
    let timeout = match r
        .parameters
        .get("timeout")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => None,
        Some(ParameterChoice::Int64Param(us)) if *us >= 0 => {
            Some(Duration::from_micros(*us as u64))
        }
        Some(ParameterChoice::Uint64Param(us)) => Some(Duration::from_micros(*us)),
        Some(_) => {
            return Err(ServerError::invalid_arg(
                "parameter 'timeout' must be a non-negative integer",
            ))
        }
    };
    Ok(InferRequest {
        id: r.id,
        inputs,
        outputs: r.outputs.into_iter().map(|o| o.name).collect(),
        timeout,
    })
}
