//! The server-wide budget of request bytes in flight (`--max-inflight-bytes`).
//!
//! Every HTTP body and gRPC inference message takes its size from the budget
//! before it is decoded and gives it back when its answer is built. A request
//! that does not fit while others hold the budget is refused at once with
//! HTTP 429 / gRPC RESOURCE_EXHAUSTED instead of waiting: the client retries,
//! and the server's memory stays bounded by a small multiple of the budget.

use crate::error::{Code, ServerError, ServerResult};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget granularity: permits are KiB, so a budget of terabytes fits the
/// semaphore's `u32` requests.
const UNIT: usize = 1024;

/// Bytes of requests in flight, shared by every endpoint.
#[derive(Clone)]
pub struct ByteBudget {
    permits: Arc<Semaphore>,
    total_bytes: usize,
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped.
pub struct BudgetShare {
    permit: Option<OwnedSemaphorePermit>,
}

impl ByteBudget {
    pub fn new(total_bytes: usize) -> Self {
        let units = total_bytes.div_ceil(UNIT).min(Semaphore::MAX_PERMITS);
        ByteBudget {
            permits: Arc::new(Semaphore::new(units)),
            total_bytes,
        }
    }

    /// An empty share, to [`ByteBudget::grow`] as a body arrives.
    pub fn empty(&self) -> BudgetShare {
        BudgetShare { permit: None }
    }

    /// Takes `bytes` (rounded up to KiB), or answers RESOURCE_EXHAUSTED when
    /// they are not free now.
    pub fn take(&self, bytes: usize) -> ServerResult<BudgetShare> {
        let mut share = self.empty();
        self.grow(&mut share, bytes)?;
        Ok(share)
    }

    /// Adds `bytes` more to `share`, or answers RESOURCE_EXHAUSTED.
    pub fn grow(&self, share: &mut BudgetShare, bytes: usize) -> ServerResult<()> {
        let units = bytes.div_ceil(UNIT);
        if units == 0 {
            return Ok(());
        }
        let taken = u32::try_from(units)
            .ok()
            .and_then(|n| self.permits.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                ServerError::new(
                    Code::ResourceExhausted,
                    format!(
                        "the server is at its limit of {} bytes of requests in flight \
                         (--max-inflight-bytes); retry when requests in flight finish",
                        self.total_bytes
                    ),
                )
            })?;
        match &mut share.permit {
            Some(p) => p.merge(taken),
            None => share.permit = Some(taken),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_refused_when_spent_and_returned_when_dropped() {
        let b = ByteBudget::new(4096);
        let a = b.take(3000).unwrap();
        let e = b.take(2000).err().unwrap();
        assert_eq!(e.http_status(), 429);
        let mut grown = b.take(1).unwrap();
        assert!(b.grow(&mut grown, 1).is_err());
        drop(a);
        b.grow(&mut grown, 2048).unwrap();
        assert!(b.take(usize::MAX).is_err());
    }
}
