//! What the server needs of a model's configuration once it is loaded: the
//! tensors requests are checked against, and the batching and queue policy.

use crate::batcher::BatchPolicy;
use metal_mps::DType;
use std::time::Duration;

/// An input or output as configured (`dims` without the batch dimension when
/// the model batches; -1 is any size).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<i64>,
}

impl TensorSpec {
    /// The shape Triton reports in metadata: with a leading -1 for the batch
    /// dimension when the model batches.
    pub fn full_shape(&self, batching: bool) -> Vec<i64> {
        let mut shape = Vec::with_capacity(self.dims.len() + 1);
        if batching {
            shape.push(-1);
        }
        shape.extend_from_slice(&self.dims);
        shape
    }
}

/// The queue timeout rules of `dynamic_batching.default_queue_policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueTimeout {
    /// `default_timeout_microseconds`; `None` when 0.
    pub default: Option<Duration>,
    /// `allow_timeout_override`: a request's `timeout` parameter may shorten
    /// the default.
    pub allow_override: bool,
}

impl QueueTimeout {
    /// The queue timeout of a request that asked for `requested` (its
    /// `timeout` parameter, if any). A request may always set one when the
    /// model has no default; it may only shorten a default it is allowed to
    /// override.
    pub fn effective(&self, requested: Option<Duration>) -> Option<Duration> {
        match (self.default, requested) {
            (None, r) => r,
            (Some(d), Some(r)) if self.allow_override => Some(r.min(d)),
            (Some(d), _) => Some(d),
        }
    }
}

/// A model version's configuration as the server applies it.
#[derive(Clone, Debug)]
pub struct ServingConfig {
    pub name: String,
    /// `platform` to report in metadata.
    pub platform: String,
    /// 0: the model has no batch dimension.
    pub max_batch_size: usize,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub policy: BatchPolicy,
    pub queue_timeout: QueueTimeout,
}

impl ServingConfig {
    pub fn batching(&self) -> bool {
        self.max_batch_size > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_override_rules() {
        let ms = Duration::from_millis;
        let none = QueueTimeout::default();
        assert_eq!(none.effective(Some(ms(5))), Some(ms(5)));
        let strict = QueueTimeout {
            default: Some(ms(10)),
            allow_override: false,
        };
        assert_eq!(strict.effective(Some(ms(5))), Some(ms(10)));
        let loose = QueueTimeout {
            default: Some(ms(10)),
            allow_override: true,
        };
        assert_eq!(loose.effective(Some(ms(50))), Some(ms(10)));
        assert_eq!(loose.effective(Some(ms(5))), Some(ms(5)));
        assert_eq!(loose.effective(None), Some(ms(10)));
    }
}
