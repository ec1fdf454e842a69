//! Lingering close of server connections.
//!
//! When the server ends a connection (a graceful shutdown's last response, an
//! HTTP/1 `Connection: close`), the peer may still be sending: an HTTP/2 PING
//! or WINDOW_UPDATE prompted by the response it is reading. A socket closed
//! with such bytes unread sends a TCP reset instead of an orderly end, and a
//! client may lose to the reset what it has received but not yet processed
//! (gRPC's C core drops the bytes of a read pass that ends in an error): the
//! very response a graceful shutdown waited for. [`LingeringClose`] therefore
//! shuts the write side (the peer sees the end of the stream after the
//! response), then reads and discards until the peer closes too or [`LINGER`]
//! has passed, and only then lets the socket close: in `poll_shutdown`, and,
//! for a connection dropped without one, in a task that [`settled`] waits for.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

/// The longest a closed connection waits for its peer to close as well.
pub const LINGER: Duration = Duration::from_secs(1);

/// Connections dropped unclosed whose lingering task has not ended.
static DROPPED_LINGERING: AtomicUsize = AtomicUsize::new(0);

/// What a lingering connection wraps (a TCP stream, possibly wrapped).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// An I/O stream that closes lingering; see the module docs.
pub struct LingeringClose<T: Stream> {
    /// `None` only once `drop` has handed the stream to a lingering task.
    io: Option<T>,
    /// Set once the write side is shut: the end of the lingering.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The lingering is over: the socket may close.
    closed: bool,
}

impl<T: Stream> LingeringClose<T> {
    pub fn new(io: T) -> LingeringClose<T> {
        LingeringClose {
            io: Some(io),
            deadline: None,
            closed: false,
        }
    }

    fn io(&mut self) -> Pin<&mut T> {
        Pin::new(self.io.as_mut().expect("the stream is taken only by drop"))
    }
}

/// Waits until the connections dropped without a close have lingered (at
/// most about [`LINGER`]): call before the process exits.
pub async fn settled() {
    let wait = async {
        while DROPPED_LINGERING.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(LINGER * 2, wait).await;
}

impl<T: Stream> Drop for LingeringClose<T> {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let (Some(io), Ok(runtime)) = (self.io.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        DROPPED_LINGERING.fetch_add(1, Ordering::SeqCst);
        runtime.spawn(async move {
            let _ = LingeringClose::new(io).shutdown().await;
            DROPPED_LINGERING.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

impl<T: Stream> AsyncRead for LingeringClose<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<T: Stream> AsyncWrite for LingeringClose<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    /// Shuts the write side, then drains the read side until end of stream,
    /// an error or [`LINGER`]; always ends `Ok` once the write side is shut.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.deadline.is_none() {
            ready!(self.io().poll_shutdown(cx))?;
            self.deadline = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 1024];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match self.io().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => break,
                Poll::Pending => {
                    let deadline = self.deadline.as_mut().expect("set above");
                    ready!(deadline.as_mut().poll(cx));
                    break;
                }
            }
        }
        self.closed = true;
        Poll::Ready(Ok(()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }
}

impl<T: Stream + Connected> Connected for LingeringClose<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io
            .as_ref()
            .expect("the stream is taken only by drop")
            .connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (LingeringClose<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap());
        let (peer, accepted) = tokio::join!(peer, listener.accept());
        (LingeringClose::new(accepted.unwrap().0), peer.unwrap())
    }

    /// Bytes the peer sent as the server closed are read before the socket
    /// may close, so closing it sends no reset; the peer gets the response.
    #[tokio::test]
    async fn late_bytes_from_the_peer_are_drained_before_the_close() {
        let (mut conn, mut peer) = pair().await;
        conn.write_all(b"response").await.unwrap();
        peer.write_all(b"late").await.unwrap();
        peer.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        conn.shutdown().await.unwrap();
        assert!(
            started.elapsed() < LINGER,
            "the peer's end of stream ends the wait"
        );
        // Nothing is left unread: a close now is a FIN, not a reset.
        let mut rest = [0u8; 16];
        let io = conn.io.as_ref().unwrap();
        assert_eq!(io.try_read(&mut rest).unwrap(), 0);
        let mut response = Vec::new();
        peer.read_to_end(&mut response).await.unwrap();
        assert_eq!(response, b"response");
    }

    /// A connection dropped without a close (an error, a forced end) lingers
    /// in a task: the peer reads the response and then the end of the
    /// stream, not a reset.
    #[tokio::test]
    async fn a_connection_dropped_unclosed_ends_without_a_reset() {
        let (mut conn, mut peer) = pair().await;
        conn.write_all(b"response").await.unwrap();
        peer.write_all(b"late").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(conn);
        let mut response = Vec::new();
        peer.read_to_end(&mut response).await.unwrap();
        assert_eq!(response, b"response");
        drop(peer);
        settled().await;
    }

    /// A peer that never closes holds the connection for [`LINGER`] at most.
    #[tokio::test]
    async fn a_peer_that_stays_open_is_waited_for_at_most_the_linger() {
        let (mut conn, mut peer) = pair().await;
        peer.write_all(b"late").await.unwrap();
        let started = std::time::Instant::now();
        conn.shutdown().await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= LINGER && waited < LINGER * 3, "waited {waited:?}");
        let mut end = Vec::new();
        peer.read_to_end(&mut end).await.unwrap();
        assert!(end.is_empty());
    }
}
