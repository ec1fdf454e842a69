//! A loaded, serving model version: its config, queue, instance threads and
//! statistics, and the one entry point requests go through.

use crate::batcher::{Job, Scheduler};
use crate::error::{ServerError, ServerResult};
use crate::instance::{spawn_instance, InstanceContext, InstanceMemory, Runner};
use crate::request::{decode_inputs, select_outputs, InferRequest, InferResponse, OutputTensor};
use crate::serving_config::ServingConfig;
use crate::stats::{FailureReason, VersionStats};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// One model version ready to serve.
pub struct ServedVersion {
    pub version: u64,
    pub config: Arc<ServingConfig>,
    /// The full config in Triton's JSON form, for the config endpoints.
    pub config_json: Arc<Value>,
    pub stats: Arc<VersionStats>,
    /// How long loading took.
    pub load_duration: Duration,
    scheduler: Arc<Scheduler>,
    runners: Vec<Arc<dyn Runner>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ServedVersion {
    /// Starts one thread per runner. `output_index[i]` is the position of
    /// config output `i` among the engine's outputs.
    pub fn start(
        version: u64,
        config: ServingConfig,
        config_json: Value,
        runners: Vec<Arc<dyn Runner>>,
        output_index: Vec<usize>,
        load_duration: Duration,
    ) -> std::io::Result<ServedVersion> {
        let stats = Arc::new(VersionStats::default());
        let scheduler = Arc::new(Scheduler::new(config.policy.clone()));
        let ctx = Arc::new(InstanceContext {
            model_name: config.name.clone(),
            input_names: config.inputs.iter().map(|i| i.name.clone()).collect(),
            output_names: config.outputs.iter().map(|o| o.name.clone()).collect(),
            output_index,
            stats: stats.clone(),
        });
        let mut threads = Vec::with_capacity(runners.len());
        for (i, r) in runners.iter().enumerate() {
            match spawn_instance(i, r.clone(), scheduler.clone(), ctx.clone()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    scheduler.close();
                    threads
                        .into_iter()
                        .for_each(|t: JoinHandle<()>| drop(t.join()));
                    return Err(e);
                }
            }
        }
        Ok(ServedVersion {
            version,
            config: Arc::new(config),
            config_json: Arc::new(config_json),
            stats,
            load_duration,
            scheduler,
            runners,
            threads: Mutex::new(threads),
        })
    }

    /// Runs one request: checks it, queues it, waits for its batch, and
    /// records the statistics whatever the outcome.
    pub async fn infer(&self, req: InferRequest) -> ServerResult<InferResponse> {
        let start = Instant::now();
        let id = req.id.clone();
        match self.run(req, start).await {
            Ok((outputs, batch, timings)) => {
                self.stats.record_success(start.elapsed(), batch, &timings);
                tracing::trace!(model = %self.config.name, version = self.version, id = %id, batch,
                    us = start.elapsed().as_micros() as u64, "inference done");
                Ok(InferResponse {
                    model_name: self.config.name.clone(),
                    model_version: self.version.to_string(),
                    id,
                    outputs,
                })
            }
            Err((reason, e)) => {
                self.stats.record_failure(start.elapsed(), reason);
                tracing::debug!(model = %self.config.name, version = self.version, id = %id,
                    reason = reason.label(), error = %e, "inference failed");
                Err(e)
            }
        }
    }

    async fn run(
        &self,
        req: InferRequest,
        start: Instant,
    ) -> Result<(Vec<OutputTensor>, usize, crate::batcher::Timings), (FailureReason, ServerError)>
    {
        let cfg = &self.config;
        let other = |e| (FailureReason::Other, e);
        let wanted = select_outputs(cfg, &req.outputs).map_err(other)?;
        let decoded = decode_inputs(cfg, req.inputs).map_err(other)?;
        let (tx, rx) = oneshot::channel();
        let job = Job {
            inputs: decoded.tensors,
            batch: decoded.batch,
            enqueued: start,
            deadline: cfg.queue_timeout.effective(req.timeout).map(|d| start + d),
            reply: tx,
        };
        self.scheduler
            .submit(job)
            .map_err(|(e, _job)| (FailureReason::Rejected, e))?;
        let out = rx
            .await
            .map_err(|_| {
                (
                    FailureReason::Backend,
                    ServerError::internal("the model instance stopped before answering"),
                )
            })?
            .map_err(|e| {
                let reason = if e.message == "Request timeout expired" {
                    FailureReason::Rejected
                } else {
                    FailureReason::Backend
                };
                (reason, e)
            })?;
        let mut all: Vec<Option<_>> = out.outputs.into_iter().map(Some).collect();
        let outputs = wanted
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                // A name requested twice gets a copy; its last request takes it.
                let tensor = if wanted[k + 1..].contains(&i) {
                    all[i].clone()
                } else {
                    all[i].take()
                };
                OutputTensor {
                    name: cfg.outputs[i].name.clone(),
                    tensor: tensor.expect("each output is taken at its last request only"),
                }
            })
            .collect();
        Ok((outputs, decoded.batch, out.timings))
    }

    /// Requests queued and not yet executing.
    pub fn pending(&self) -> usize {
        self.scheduler.pending()
    }

    /// Memory held by each instance, with its kind ("CPU"/"GPU").
    pub fn memory(&self) -> Vec<(&'static str, InstanceMemory)> {
        self.runners
            .iter()
            .map(|r| (r.kind(), r.memory()))
            .collect()
    }

    /// Refuses new requests, lets every queued one finish, and joins the
    /// instance threads. Blocks: call from a blocking context.
    pub fn drain(&self) {
        self.scheduler.close();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!(model = %self.config.name, version = self.version, "an instance thread panicked");
            }
        }
    }
}

impl Drop for ServedVersion {
    fn drop(&mut self) {
        // Threads hold only the scheduler, not the version: close it so they
        // end even when nobody drained.
        self.scheduler.close();
    }
}
