//! Serving an axum router on a listener with time and connection limits.
//!
//! `axum::serve` sets none, so a client could hold a connection forever by
//! sending its headers one byte a second, or by idling. Here each connection
//! is served by hyper with:
//! - a header timeout (`--http-header-timeout-secs`): the whole request head
//!   must arrive within it, counted from the first poll of an idle
//!   connection, so it also closes keep-alive connections idle that long;
//! - a cap on open connections (`--http-max-connections`): at the cap, new
//!   connections wait in the kernel's backlog until one closes;
//! - HTTP/2 keep-alive pings, so dead peers are noticed;
//! - a lingering close ([`crate::linger`]), so a response is not lost to a
//!   reset when the peer writes as the connection ends.
//!
//! The body timeout is enforced where bodies are read ([`crate::body`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::linger::LingeringClose;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection limits of one HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `stop` resolves, then lets open
/// requests finish and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(TokioIo::new(LingeringClose::new(tcp)), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
}
