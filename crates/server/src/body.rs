//! Reading request bodies under a size limit without cutting the client off.
//!
//! A body over the limit is still read to its end (and dropped) before the
//! error is answered: a client that is still sending would otherwise see a
//! broken connection instead of the 400 that explains it.

use axum::body::{Body, Bytes, HttpBody};
use std::pin::Pin;

/// The whole body, or `Err(bytes_seen)` when it holds more than `limit`
/// bytes (or fails midway).
pub async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, usize> {
    let mut parts: Vec<Bytes> = Vec::new();
    let mut seen = 0usize;
    let mut over = false;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else { return Err(seen) };
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > limit {
                over = true;
                parts.clear();
            } else if !over {
                parts.push(data);
            }
        }
    }
    if over {
        return Err(seen);
    }
    Ok(match parts.len() {
        0 => Bytes::new(),
        1 => parts.pop().expect("one part"),
        _ => {
            let mut all = Vec::with_capacity(seen);
            parts.iter().for_each(|p| all.extend_from_slice(p));
            all.into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limit_is_enforced_after_reading_everything() {
        assert_eq!(read_limited(Body::from("hello"), 5).await.unwrap(), "hello");
        assert_eq!(read_limited(Body::from("hello!"), 5).await.unwrap_err(), 6);
    }
}
