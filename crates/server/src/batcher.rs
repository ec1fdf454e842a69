//! The request queue of one model version and its dynamic batcher.
//!
//! Every request becomes a [`Job`] pushed onto a bounded queue shared by the
//! version's instance threads. An idle instance calls
//! [`Scheduler::next_batch`], which blocks until it can hand out a batch:
//!
//! * without dynamic batching, one job;
//! * with dynamic batching, the run of shape-compatible jobs at the head of
//!   the queue whose batch sizes add up to at most `max_batch_size`, sent as
//!   soon as it is full, reaches a preferred size, cannot grow (the next job
//!   does not fit or has other shapes), or its oldest job has waited
//!   `max_queue_delay`.
//!
//! Jobs whose queue deadline passes are answered UNAVAILABLE ("Request
//! timeout expired") unless the policy says to delay them. A full queue
//! refuses new jobs with UNAVAILABLE ("Exceeds maximum queue size"): the
//! back-pressure clients see as HTTP 503 / gRPC UNAVAILABLE.

use crate::error::{ServerError, ServerResult};
use metal_mps::Tensor;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How a version's queue forms batches.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPolicy {
    /// Largest batch the model accepts; 0 when the model has no batch
    /// dimension (every job then runs alone).
    pub max_batch_size: usize,
    /// `Some` when the config has `dynamic_batching`.
    pub dynamic: Option<DynamicBatching>,
    /// Most jobs waiting at once; further ones are refused.
    pub max_queue_size: usize,
    /// Whether a job past its deadline stays queued (Triton's DELAY) instead
    /// of being answered UNAVAILABLE (REJECT).
    pub delay_on_timeout: bool,
}

/// `dynamic_batching { preferred_batch_size, max_queue_delay_microseconds }`.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamicBatching {
    /// Sorted, each in `1..=max_batch_size`.
    pub preferred: Vec<usize>,
    pub max_delay: Duration,
}

/// What an instance sends back for one job: the job's slice of every output
/// (in config output order) and where its time went.
#[derive(Debug)]
pub struct JobOutput {
    pub outputs: Vec<Tensor>,
    pub timings: Timings,
}

/// Durations of one job's trip through the queue and the engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub queue: Duration,
    pub compute_input: Duration,
    pub compute_infer: Duration,
    pub compute_output: Duration,
}

pub type JobResult = ServerResult<JobOutput>;

/// One request waiting for an instance.
#[derive(Debug)]
pub struct Job {
    /// In config input order, already checked against the config.
    pub inputs: Vec<Tensor>,
    /// Rows this job contributes to a batch (its first dimension), 1 when
    /// the model does not batch.
    pub batch: usize,
    pub enqueued: Instant,
    /// When the job's queue timeout expires.
    pub deadline: Option<Instant>,
    pub reply: oneshot::Sender<JobResult>,
}

impl Job {
    /// Whether two jobs can share one execution: same shapes apart from the
    /// first (batch) dimension.
    fn compatible(&self, other: &Job) -> bool {
        self.inputs.len() == other.inputs.len()
            && self
                .inputs
                .iter()
                .zip(&other.inputs)
                .all(|(a, b)| a.dtype() == b.dtype() && a.shape().get(1..) == b.shape().get(1..))
    }
}

struct State {
    queue: VecDeque<Job>,
    closed: bool,
}

/// The queue of one model version, shared by the request handlers (which
/// [`submit`](Scheduler::submit)) and the instance threads (which take
/// [`next_batch`](Scheduler::next_batch)).
pub struct Scheduler {
    policy: BatchPolicy,
    state: Mutex<State>,
    wake: Condvar,
}

impl Scheduler {
    pub fn new(policy: BatchPolicy) -> Self {
        Scheduler {
            policy,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue itself consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job. Refused (UNAVAILABLE, with the job handed back so the
    /// caller can answer it) when the queue is full or closed for unload.
    pub fn submit(&self, job: Job) -> Result<(), (ServerError, Job)> {
        let mut state = self.lock();
        if state.closed {
            return Err((ServerError::unavailable("model is being unloaded"), job));
        }
        if state.queue.len() >= self.policy.max_queue_size {
            return Err((ServerError::unavailable("Exceeds maximum queue size"), job));
        }
        state.queue.push_back(job);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Jobs waiting for an instance.
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    /// Refuses new jobs; instances drain what is queued, then
    /// [`next_batch`](Scheduler::next_batch) returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Blocks until a batch is due and returns its jobs (in queue order), or
    /// `None` once the queue is closed and empty.
    pub fn next_batch(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            if !self.policy.delay_on_timeout {
                reject_expired(&mut state.queue, now);
            }
            if state.queue.is_empty() {
                if state.closed {
                    return None;
                }
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let Some(dynamic) = &self.policy.dynamic else {
                let job = state.queue.pop_front().expect("queue is not empty");
                return Some(vec![job]);
            };
            let run = compatible_run(&state.queue);
            let sizes: Vec<usize> = state.queue.iter().take(run).map(|j| j.batch).collect();
            let oldest = state.queue[0].enqueued;
            let due = oldest + dynamic.max_delay;
            let can_grow = run == state.queue.len() && !state.closed;
            if let Some(take) = plan_batch(
                &sizes,
                self.policy.max_batch_size,
                &dynamic.preferred,
                can_grow,
                now >= due,
            ) {
                let jobs: Vec<Job> = state.queue.drain(..take).collect();
                if !state.queue.is_empty() {
                    // Another idle instance may start on the rest.
                    self.wake.notify_one();
                }
                return Some(jobs);
            }
            let mut until = due;
            if !self.policy.delay_on_timeout {
                if let Some(d) = state.queue.iter().filter_map(|j| j.deadline).min() {
                    until = until.min(d);
                }
            }
            let wait = until
                .saturating_duration_since(now)
                .max(Duration::from_micros(50));
            state = self
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Answers and removes the jobs whose deadline has passed.
fn reject_expired(queue: &mut VecDeque<Job>, now: Instant) {
    if !queue.iter().any(|j| j.deadline.is_some_and(|d| d <= now)) {
        return;
    }
    let mut kept = VecDeque::with_capacity(queue.len());
    for job in queue.drain(..) {
        if job.deadline.is_some_and(|d| d <= now) {
            // The receiver may be gone (client disconnected): nothing to do.
            let _ = job
                .reply
                .send(Err(ServerError::unavailable("Request timeout expired")));
        } else {
            kept.push_back(job);
        }
    }
    *queue = kept;
}

/// Length of the run of jobs at the head that can share an execution.
fn compatible_run(queue: &VecDeque<Job>) -> usize {
    let Some(head) = queue.front() else { return 0 };
    queue.iter().take_while(|j| head.compatible(j)).count()
}

/// Decides how many jobs of a compatible run (batch sizes `sizes`, head
/// first) to execute now, or `None` to keep waiting for more.
///
/// `can_grow`: more jobs could still join the run (it reaches the end of the
/// queue). `expired`: the oldest job has waited the maximum queue delay.
pub fn plan_batch(
    sizes: &[usize],
    max_batch: usize,
    preferred: &[usize],
    can_grow: bool,
    expired: bool,
) -> Option<usize> {
    if sizes.is_empty() {
        return None;
    }
    // Jobs that fit together, always at least the head (its size was checked
    // against max_batch when it was accepted).
    let mut total = 0;
    let mut fit = 0;
    for &s in sizes {
        if fit > 0 && total + s > max_batch {
            break;
        }
        total += s;
        fit += 1;
    }
    if total >= max_batch || fit < sizes.len() || !can_grow {
        return Some(fit);
    }
    let mut prefix = 0;
    let mut best = None;
    for (k, &s) in sizes[..fit].iter().enumerate() {
        prefix += s;
        if preferred.contains(&prefix) {
            best = Some(k + 1);
        }
    }
    if best.is_some() {
        return best;
    }
    expired.then_some(fit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn job(batch: usize, rest: usize) -> (Job, oneshot::Receiver<JobResult>) {
        let (tx, rx) = oneshot::channel();
        let t = Tensor::from_vec(vec![batch, rest], vec![0f32; batch * rest]).unwrap();
        (
            Job {
                inputs: vec![t],
                batch,
                enqueued: Instant::now(),
                deadline: None,
                reply: tx,
            },
            rx,
        )
    }

    fn policy(dynamic: Option<DynamicBatching>, max_queue: usize) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: 8,
            dynamic,
            max_queue_size: max_queue,
            delay_on_timeout: false,
        }
    }

    #[test]
    fn plan_waits_then_sends_on_delay() {
        assert_eq!(plan_batch(&[1, 1], 8, &[], true, false), None);
        assert_eq!(plan_batch(&[1, 1], 8, &[], true, true), Some(2));
    }

    #[test]
    fn plan_sends_full_and_unfittable_batches_at_once() {
        assert_eq!(plan_batch(&[4, 4], 8, &[], true, false), Some(2));
        assert_eq!(plan_batch(&[4, 3, 2], 8, &[], true, false), Some(2));
        assert_eq!(plan_batch(&[2, 2], 8, &[], false, false), Some(2));
    }

    #[test]
    fn plan_prefers_largest_preferred_prefix() {
        assert_eq!(plan_batch(&[1, 1, 1], 8, &[2, 4], true, false), Some(2));
        assert_eq!(plan_batch(&[1, 1, 1, 1], 8, &[2, 4], true, false), Some(4));
        assert_eq!(plan_batch(&[3], 8, &[2, 4], true, false), None);
    }

    #[test]
    fn full_queue_refuses() {
        let s = Scheduler::new(policy(None, 1));
        let (a, _ra) = job(1, 2);
        let (b, _rb) = job(1, 2);
        s.submit(a).unwrap();
        let (err, _) = s.submit(b).unwrap_err();
        assert_eq!(err.code, crate::error::Code::Unavailable);
    }

    #[test]
    fn dynamic_batcher_merges_compatible_head_run() {
        let s = Scheduler::new(policy(
            Some(DynamicBatching {
                preferred: vec![],
                max_delay: Duration::ZERO,
            }),
            16,
        ));
        let mut rxs = Vec::new();
        for (b, r) in [(1, 4), (2, 4), (1, 5), (1, 4)] {
            let (j, rx) = job(b, r);
            s.submit(j).unwrap();
            rxs.push(rx);
        }
        assert_eq!(s.next_batch().unwrap().len(), 2);
        assert_eq!(s.next_batch().unwrap().len(), 1);
        assert_eq!(s.next_batch().unwrap().len(), 1);
        s.close();
        assert!(s.next_batch().is_none());
    }

    #[test]
    fn delay_lets_a_batch_fill() {
        let s = Arc::new(Scheduler::new(policy(
            Some(DynamicBatching {
                preferred: vec![],
                max_delay: Duration::from_millis(300),
            }),
            16,
        )));
        let (a, _ra) = job(1, 4);
        s.submit(a).unwrap();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.next_batch().unwrap().len());
        std::thread::sleep(Duration::from_millis(50));
        let (b, _rb) = job(1, 4);
        s.submit(b).unwrap();
        assert_eq!(t.join().unwrap(), 2);
    }

    #[test]
    fn expired_jobs_are_answered_unavailable() {
        let s = Scheduler::new(policy(None, 4));
        let (mut a, mut ra) = job(1, 1);
        a.deadline = Some(Instant::now());
        s.submit(a).unwrap();
        s.close();
        assert!(s.next_batch().is_none());
        let err = ra.try_recv().unwrap().unwrap_err();
        assert_eq!(err.message, "Request timeout expired");
    }
}
