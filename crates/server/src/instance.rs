//! Execution instances: one OS thread per instance, each owning an engine
//! model, taking batches from the version's [`Scheduler`] until it closes.
//!
//! Inference never runs on the async runtime: handlers only queue jobs and
//! await their answers.

use crate::batcher::{Job, JobOutput, Scheduler, Timings};
use crate::batching::{concat_batch, split_batch};
use crate::error::{ServerError, ServerResult};
use crate::stats::VersionStats;
use metal_mps::Tensor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Memory an instance's engine holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstanceMemory {
    pub bytes_in_use: u64,
    pub bytes_pooled: u64,
}

/// What an instance executes: a loaded model (or a stand-in in tests).
pub trait Runner: Send + Sync + 'static {
    /// Runs the model; outputs in the model's own output order.
    fn run(&self, inputs: &[(&str, &Tensor)]) -> metal_mps::Result<Vec<Tensor>>;
    fn memory(&self) -> InstanceMemory;
    /// "CPU" or "GPU", for statistics.
    fn kind(&self) -> &'static str;
}

impl Runner for metal_mps::Model {
    fn run(&self, inputs: &[(&str, &Tensor)]) -> metal_mps::Result<Vec<Tensor>> {
        metal_mps::Model::run(self, inputs)
    }
    fn memory(&self) -> InstanceMemory {
        let m = self.memory_stats();
        InstanceMemory {
            bytes_in_use: m.bytes_in_use,
            bytes_pooled: m.bytes_pooled,
        }
    }
    fn kind(&self) -> &'static str {
        match self.device() {
            metal_mps::Device::Cpu => "CPU",
            metal_mps::Device::Gpu => "GPU",
        }
    }
}

/// What every instance of a version shares: input names (config order), and
/// for each config output the index of that output among the engine's.
pub struct InstanceContext {
    pub model_name: String,
    pub input_names: Vec<String>,
    pub output_names: Vec<String>,
    pub output_index: Vec<usize>,
    pub stats: Arc<VersionStats>,
}

/// Starts an instance thread named after the model.
pub fn spawn_instance(
    index: usize,
    runner: Arc<dyn Runner>,
    scheduler: Arc<Scheduler>,
    ctx: Arc<InstanceContext>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{}#{index}", ctx.model_name))
        .spawn(move || {
            while let Some(jobs) = scheduler.next_batch() {
                execute(&*runner, &ctx, jobs);
            }
        })
}

/// Runs one batch and answers each of its jobs.
fn execute(runner: &dyn Runner, ctx: &InstanceContext, jobs: Vec<Job>) {
    let dispatched = Instant::now();
    let rows: Vec<usize> = jobs.iter().map(|j| j.batch).collect();
    let total: usize = rows.iter().sum();
    let (replies, inputs): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .map(|j| ((j.reply, dispatched - j.enqueued), j.inputs))
        .unzip();

    let result = catch_unwind(AssertUnwindSafe(|| run_batch(runner, ctx, inputs, &rows)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(ServerError::internal(format!(
                "the engine panicked: {what}"
            )))
        });

    match result {
        Ok((per_job, mut timings)) => {
            ctx.stats.record_execution(total, &timings);
            for ((reply, queued), outputs) in replies.into_iter().zip(per_job) {
                timings.queue = queued;
                let _ = reply.send(Ok(JobOutput { outputs, timings }));
            }
        }
        Err(e) => {
            tracing::warn!(model = %ctx.model_name, error = %e, "execution failed");
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Merges the jobs' inputs, runs the model, splits the outputs per job
/// (config output order).
fn run_batch(
    runner: &dyn Runner,
    ctx: &InstanceContext,
    mut inputs: Vec<Vec<Tensor>>,
    rows: &[usize],
) -> ServerResult<(Vec<Vec<Tensor>>, Timings)> {
    let t0 = Instant::now();
    let merged: Vec<Tensor> = if inputs.len() == 1 {
        inputs.pop().expect("one job")
    } else {
        (0..ctx.input_names.len())
            .map(|i| concat_batch(&inputs.iter().map(|job| &job[i]).collect::<Vec<_>>()))
            .collect::<ServerResult<_>>()?
    };
    let named: Vec<(&str, &Tensor)> = ctx
        .input_names
        .iter()
        .map(String::as_str)
        .zip(merged.iter())
        .collect();
    let t1 = Instant::now();
    let mut outputs: Vec<Option<Tensor>> = runner.run(&named)?.into_iter().map(Some).collect();
    let t2 = Instant::now();
    let mut ordered = Vec::with_capacity(ctx.output_index.len());
    for (&i, name) in ctx.output_index.iter().zip(&ctx.output_names) {
        let t = outputs.get_mut(i).and_then(Option::take).ok_or_else(|| {
            ServerError::internal(format!("the engine returned no output '{name}'"))
        })?;
        ordered.push(t);
    }
    let per_job = if rows.len() == 1 {
        vec![ordered]
    } else {
        let mut per_job: Vec<Vec<Tensor>> = vec![Vec::with_capacity(ordered.len()); rows.len()];
        for (t, name) in ordered.iter().zip(&ctx.output_names) {
            for (job, piece) in per_job.iter_mut().zip(split_batch(t, rows, name)?) {
                job.push(piece);
            }
        }
        per_job
    };
    let t3 = Instant::now();
    let timings = Timings {
        queue: Default::default(),
        compute_input: t1 - t0,
        compute_infer: t2 - t1,
        compute_output: t3 - t2,
    };
    Ok((per_job, timings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::{BatchPolicy, DynamicBatching};
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// Doubles its one input; output "y".
    struct Doubler;
    impl Runner for Doubler {
        fn run(&self, inputs: &[(&str, &Tensor)]) -> metal_mps::Result<Vec<Tensor>> {
            let x = inputs[0].1;
            let v: Vec<f32> = x.to_f64_vec().iter().map(|v| (v * 2.0) as f32).collect();
            Ok(vec![Tensor::from_vec(x.shape().to_vec(), v)?])
        }
        fn memory(&self) -> InstanceMemory {
            InstanceMemory::default()
        }
        fn kind(&self) -> &'static str {
            "CPU"
        }
    }

    #[test]
    fn batched_jobs_get_their_own_rows_back() {
        let sched = Arc::new(Scheduler::new(BatchPolicy {
            max_batch_size: 8,
            dynamic: Some(DynamicBatching {
                preferred: vec![],
                max_delay: Duration::ZERO,
            }),
            max_queue_size: 8,
            delay_on_timeout: false,
        }));
        let stats = Arc::new(VersionStats::default());
        let ctx = Arc::new(InstanceContext {
            model_name: "m".into(),
            input_names: vec!["x".into()],
            output_names: vec!["y".into()],
            output_index: vec![0],
            stats: stats.clone(),
        });
        let mut rxs = Vec::new();
        for i in 0..3 {
            let (tx, rx) = oneshot::channel();
            let x = Tensor::from_vec(vec![1, 2], vec![i as f32, 10.0]).unwrap();
            sched
                .submit(Job {
                    inputs: vec![x],
                    batch: 1,
                    enqueued: Instant::now(),
                    deadline: None,
                    reply: tx,
                })
                .unwrap();
            rxs.push(rx);
        }
        sched.close();
        let h = spawn_instance(0, Arc::new(Doubler), sched, ctx).unwrap();
        h.join().unwrap();
        for (i, mut rx) in rxs.into_iter().enumerate() {
            let out = rx.try_recv().unwrap().unwrap();
            assert_eq!(out.outputs[0].to_f64_vec(), vec![2.0 * i as f64, 20.0]);
        }
        assert_eq!(
            stats
                .execution_count
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
