//! Start-up, the three listeners, repository polling, and graceful shutdown.

use crate::args::ServeArgs;
use crate::body::BodyLimits;
use crate::budget::ByteBudget;
use crate::config::ConfigDefaults;
use crate::grpc_limits::{BodyDeadlineLayer, FirstBytesDeadline};
use crate::http_serve::{self, ConnectionLimits};
use crate::linger::{self, LingeringClose};
use crate::manager::{ControlMode, ModelManager};
use crate::repository::Repository;
use crate::{grpc, http, metrics, AppState};
use anyhow::{bail, Context};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs the server until a shutdown signal; see [`crate::serve`].
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    if !args.model_repository.is_dir() {
        bail!(
            "--model-repository {} is not a directory",
            args.model_repository.display()
        );
    }
    let manager = ModelManager::new(
        Repository::new(&args.model_repository),
        args.model_control_mode,
        ConfigDefaults {
            max_queue_size: args.max_queue_size.max(1),
            default_max_batch_size: args.default_max_batch_size,
        },
        args.strict_readiness,
    );
    if args.max_inflight_bytes < args.http_max_input_size {
        bail!(
            "--max-inflight-bytes ({}) must be at least --http-max-input-size ({}): \
             a request of the largest size would never fit",
            args.max_inflight_bytes,
            args.http_max_input_size
        );
    }
    let budget = ByteBudget::new(args.max_inflight_bytes);
    let state = Arc::new(AppState {
        manager,
        max_input_size: args.http_max_input_size,
        body_limits: BodyLimits {
            max_bytes: args.http_max_input_size,
            timeout: Duration::from_secs(args.http_body_timeout_secs.max(1)),
            budget,
        },
    });
    let connections = ConnectionLimits {
        header_timeout: Duration::from_secs(args.http_header_timeout_secs.max(1)),
        max_connections: args.http_max_connections.max(1),
    };
    let (stop_tx, stop_rx) = watch::channel(false);

    // Endpoints first, so liveness answers while models load.
    let mut servers: Vec<JoinHandle<()>> = Vec::new();
    if args.allow_grpc {
        let listener = bind(&args.grpc_address, args.grpc_port, "gRPC").await?;
        tracing::info!("Started GRPCInferenceService at {}", listener.local_addr()?);
        let svc = grpc::service(state.clone());
        let body_timeout = state.body_limits.timeout;
        let stop = stopped(stop_rx.clone());
        servers.push(tokio::spawn(async move {
            // No Nagle delay on small responses.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let first_bytes = connections.header_timeout;
            let incoming = tokio_stream::StreamExt::map(incoming, move |io| {
                io.map(|io| LingeringClose::new(FirstBytesDeadline::new(io, first_bytes)))
            });
            if let Err(e) = tonic::transport::Server::builder()
                // Notice dead peers; HTTP/2 idle streams cost no body buffers.
                .http2_keepalive_interval(Some(connections.header_timeout))
                .http2_keepalive_timeout(Some(connections.header_timeout))
                .layer(BodyDeadlineLayer {
                    timeout: body_timeout,
                })
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop)
                .await
            {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
    }
    if args.allow_http {
        let listener = bind(&args.http_address, args.http_port, "HTTP").await?;
        tracing::info!("Started HTTPService at {}", listener.local_addr()?);
        servers.push(spawn_axum(
            listener,
            http::router(state.clone()),
            connections,
            stopped(stop_rx.clone()),
        ));
    }
    if args.allow_metrics {
        let listener = bind(&args.metrics_address, args.metrics_port, "metrics").await?;
        tracing::info!("Started Metrics Service at {}", listener.local_addr()?);
        servers.push(spawn_axum(
            listener,
            metrics::router(state.clone()),
            connections,
            stopped(stop_rx.clone()),
        ));
    }

    match args.model_control_mode {
        ControlMode::None | ControlMode::Poll => state.manager.sync(None).await,
        ControlMode::Explicit if args.load_model.iter().any(|m| m == "*") => {
            state.manager.sync(None).await
        }
        ControlMode::Explicit => state.manager.sync(Some(&args.load_model)).await,
    }
    for row in state.manager.index(false) {
        tracing::info!(model = %row.name, version = %row.version, state = %row.state, reason = %row.reason, "model status");
    }

    let poller = (args.model_control_mode == ControlMode::Poll).then(|| {
        let state = state.clone();
        let every = Duration::from_secs(args.repository_poll_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                state.manager.sync(None).await;
            }
        })
    });

    shutdown.await;
    tracing::info!(
        "shutting down: finishing in-flight requests (up to {} s)",
        args.exit_timeout_secs
    );
    if let Some(p) = poller {
        p.abort();
    }
    state.manager.begin_shutdown();
    let _ = stop_tx.send(true);
    let deadline = Duration::from_secs(args.exit_timeout_secs);
    let graceful = async {
        for s in servers {
            let _ = s.await;
        }
        state.manager.unload_all().await;
        linger::settled().await;
    };
    if tokio::time::timeout(deadline, graceful).await.is_err() {
        tracing::warn!("exit timeout reached with requests still in flight");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn bind(address: &str, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let addr: SocketAddr = format!("{address}:{port}")
        .parse()
        .or_else(|_| format!("[{address}]:{port}").parse())
        .with_context(|| format!("invalid {what} address '{address}'"))?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

fn spawn_axum(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(http_serve::serve(listener, router, limits, stop))
}

/// Resolves once the shutdown flag is raised.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Listens for SIGINT and SIGTERM from the call on (a signal that comes
/// while models load at start is kept, not fatal); the future resolves when
/// one has come.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &'static str| {
            let s = signal(kind);
            if let Err(e) = &s {
                tracing::error!(error = %e, "cannot listen for {name}");
            }
            s.ok()
        };
        let mut int = listen(SignalKind::interrupt(), "SIGINT");
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                _ = received(int.as_mut()) => tracing::info!("SIGINT received"),
                _ = received(term.as_mut()) => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received");
    }
}

/// Resolves when `s` delivers a signal; never without a listener.
#[cfg(unix)]
async fn received(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
