//! Reading request bodies under a size limit, a time limit and the byte
//! budget.
//!
//! A body is collected into one buffer sized by its Content-Length (bounded
//! by the limit), so a large body costs its size once, not once per chunk and
//! again when the chunks are joined. A Content-Length over the limit, or over
//! what the byte budget has free, is refused before a byte of the body is
//! stored; a chunked body as soon as it passes either. The rest of a refused
//! body is read and dropped (up to twice the limit, within the body timeout)
//! so the client sees the answer; past that the connection is closed, so a
//! client announcing 10 GB holds nothing for longer than the body timeout. A
//! body that does not arrive within the body timeout is refused with 408.

use crate::budget::{BudgetShare, ByteBudget};
use crate::error::{Code, ServerError, ServerResult};
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap};
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// What bounds one body.
#[derive(Clone)]
pub struct BodyLimits {
    /// Largest body, in bytes (`--http-max-input-size`).
    pub max_bytes: usize,
    /// Longest time from the handler's start to the body's last byte.
    pub timeout: Duration,
    pub budget: ByteBudget,
}

/// The whole body and its share of the budget (hold it while the body, or
/// what is decoded from it, is in memory). `what` names the request in
/// errors.
pub async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limits: &BodyLimits,
    what: &str,
) -> ServerResult<(Bytes, BudgetShare)> {
    let deadline = Instant::now() + limits.timeout;
    let result = read_within(headers, &mut body, limits, what, deadline).await;
    if result.is_err() {
        discard(&mut body, limits.max_bytes.saturating_mul(2), deadline).await;
    }
    result
}

async fn read_within(
    headers: &HeaderMap,
    body: &mut Body,
    limits: &BodyLimits,
    what: &str,
    deadline: Instant,
) -> ServerResult<(Bytes, BudgetShare)> {
    let declared = header_u64(headers, header::CONTENT_LENGTH.as_str())?;
    if let Some(n) = declared.filter(|&n| n > limits.max_bytes as u64) {
        return Err(too_large(what, n, limits.max_bytes));
    }
    let mut share = match declared {
        Some(n) => limits.budget.take(n as usize)?,
        None => limits.budget.empty(),
    };
    let read = collect(body, declared, limits, &mut share, what);
    match tokio::time::timeout_at(deadline, read).await {
        Ok(r) => r.map(|bytes| (bytes, share)),
        Err(_) => Err(ServerError::new(
            Code::RequestTimeout,
            format!(
                "the {what} request body did not arrive within {} s (--http-body-timeout-secs)",
                limits.timeout.as_secs_f64()
            ),
        )),
    }
}

/// Reads and drops what is left of a refused body, up to `cap` bytes and the
/// deadline, so that a client still sending sees the error instead of a
/// broken connection. Past either bound the connection is closed unread.
async fn discard(body: &mut Body, cap: usize, deadline: Instant) {
    let mut seen = 0usize;
    let drain = async {
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > cap {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, drain).await;
}

async fn collect(
    body: &mut Body,
    declared: Option<u64>,
    limits: &BodyLimits,
    share: &mut BudgetShare,
    what: &str,
) -> ServerResult<Bytes> {
    let mut all: Vec<u8> = Vec::new();
    if let Some(n) = declared {
        all.try_reserve(n as usize).map_err(|_| {
            ServerError::new(
                Code::ResourceExhausted,
                format!("no memory for the {what} request body of {n} bytes"),
            )
        })?;
    }
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            ServerError::invalid_arg(format!("failed to read the {what} request body: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let seen = all.len().saturating_add(data.len());
        if seen > limits.max_bytes {
            return Err(too_large(what, seen as u64, limits.max_bytes));
        }
        if declared.is_none() {
            limits.budget.grow(share, data.len())?;
        }
        if all.is_empty() && declared.is_none() && body.is_end_stream() {
            // One chunk and nothing more: keep it as it is.
            return Ok(data);
        }
        all.try_reserve(data.len()).map_err(|_| {
            ServerError::new(
                Code::ResourceExhausted,
                format!("no memory for the {what} request body of {seen} bytes"),
            )
        })?;
        all.extend_from_slice(&data);
    }
    Ok(Bytes::from(all))
}

/// A header holding a non-negative integer (`Content-Length`, the binary
/// extension's header length); absent is `None`, anything else is a 400.
pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> ServerResult<Option<u64>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ServerError::invalid_arg(format!("header '{name}' must be a non-negative integer"))
            }),
    }
}

fn too_large(what: &str, seen: u64, limit: usize) -> ServerError {
    ServerError::invalid_arg(format!(
        "the {what} request body size of {seen} bytes exceeds the maximum allowed input size \
         of {limit} bytes. Use --http-max-input-size to increase the limit."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, budget: usize) -> BodyLimits {
        BodyLimits {
            max_bytes: max,
            timeout: Duration::from_secs(5),
            budget: ByteBudget::new(budget),
        }
    }

    fn with_length(n: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, n.into());
        h
    }

    #[tokio::test]
    async fn limit_and_budget_are_enforced() {
        let l = limits(5, 1 << 20);
        let none = HeaderMap::new();
        let (b, _) = read_body(&none, Body::from("hello"), &l, "x")
            .await
            .unwrap();
        assert_eq!(b, "hello");
        let e = read_body(&none, Body::from("hello!"), &l, "x")
            .await
            .err()
            .unwrap();
        assert_eq!(e.http_status(), 400);
        // A declared length over the limit is refused without reading.
        let e = read_body(&with_length(10 << 30), Body::from("h"), &l, "x")
            .await
            .err()
            .unwrap();
        assert!(e.message.contains("10737418240"), "{}", e.message);
        let small = limits(1 << 20, 2048);
        let (_, held) = read_body(
            &with_length(2000),
            Body::from(vec![b'a'; 2000]),
            &small,
            "x",
        )
        .await
        .unwrap();
        let e = read_body(&with_length(10), Body::from("0123456789"), &small, "x")
            .await
            .err()
            .unwrap();
        assert_eq!(e.http_status(), 429);
        drop(held);
        assert!(read_body(&none, Body::from("0123456789"), &small, "x")
            .await
            .is_ok());
    }

    /// A chunked body whose next chunk never comes.
    struct Endless;
    impl HttpBody for Endless {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out() {
        let mut l = limits(1 << 20, 1 << 20);
        l.timeout = Duration::from_millis(50);
        let e = read_body(&HeaderMap::new(), Body::new(Endless), &l, "x")
            .await
            .err()
            .unwrap();
        assert_eq!(e.http_status(), 408);
    }
}
