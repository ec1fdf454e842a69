//! Time limits of gRPC connections, the counterparts of HTTP's header and
//! body timeouts:
//! - a connection must start (send its first bytes, the HTTP/2 preface)
//!   within `--http-header-timeout-secs`, else it is closed
//!   ([`FirstBytesDeadline`]); once started, HTTP/2 keep-alive pings close it
//!   when the peer stops answering;
//! - a request's message must arrive whole within `--http-body-timeout-secs`
//!   of its headers, else the call ends with DEADLINE_EXCEEDED
//!   ([`BodyDeadlineLayer`]). Inference itself, which starts once the message
//!   is in, is not limited here.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tonic::body::Body;
use tonic::transport::server::Connected;
use tonic::Status;

/// Wraps each call's request body in a [`BodyDeadline`].
#[derive(Clone, Copy)]
pub struct BodyDeadlineLayer {
    pub timeout: Duration,
}

impl<S> tower_layer::Layer<S> for BodyDeadlineLayer {
    type Service = WithBodyDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithBodyDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub struct WithBodyDeadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tower_service::Service<axum::http::Request<Body>> for WithBodyDeadline<S>
where
    S: tower_service::Service<axum::http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<Body>) -> Self::Future {
        let timeout = self.timeout;
        self.inner
            .call(req.map(|body| Body::new(BodyDeadline::new(body, timeout))))
    }
}

/// A request body that fails with DEADLINE_EXCEEDED unless it ends within
/// `timeout` of its creation.
pub struct BodyDeadline {
    body: Body,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl BodyDeadline {
    pub fn new(body: Body, timeout: Duration) -> BodyDeadline {
        BodyDeadline {
            body,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl HttpBody for BodyDeadline {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the request message did not arrive within {} s (--http-body-timeout-secs)",
                self.timeout.as_secs_f64()
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose reads fail with `TimedOut` unless its first bytes
/// arrive within the deadline; later reads are not limited.
pub struct FirstBytesDeadline<T> {
    io: T,
    /// `None` once the first bytes have arrived.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<T> FirstBytesDeadline<T> {
    pub fn new(io: T, timeout: Duration) -> FirstBytesDeadline<T> {
        FirstBytesDeadline {
            io,
            sleep: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstBytesDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.sleep = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection sent nothing within --http-header-timeout-secs",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstBytesDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T: Connected> Connected for FirstBytesDeadline<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
