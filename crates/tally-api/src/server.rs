//! Serving: on a caller's runtime ([`serve`]), on a runtime of its own
//! until Ctrl-C ([`run`], for `tally node`), or on a background thread
//! ([`BackgroundServer`], for tests and `tally demo`). Over TLS:
//! [`serve_tls`] and [`BackgroundServer::start_tls`] (tally-tls; mutual
//! TLS or server authentication as the configuration says).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tally_dcp::Backoffice;
use tokio::sync::oneshot;

use crate::{ApiConfig, router};

/// Worker threads of the runtimes this crate builds (the handlers only
/// parse and wait; the work is on the blocking pool).
pub const WORKER_THREADS: usize = 2;
/// Blocking threads, i.e. store transactions in flight at once.
pub const BLOCKING_THREADS_MAX: usize = 32;

/// Serves the API on `listener` until `shutdown` completes, then lets
/// the requests in flight finish (graceful shutdown).
pub async fn serve(
    bo: Arc<Backoffice>,
    listener: tokio::net::TcpListener,
    cfg: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(bo, cfg))
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`] over TLS (`tally_tls::server_config`): the same router; with
/// mutual TLS each request carries the peer's `tally_tls::PeerRole`.
pub async fn serve_tls(
    bo: Arc<Backoffice>,
    listener: tokio::net::TcpListener,
    cfg: ApiConfig,
    tls: Arc<tally_tls::rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    tally_tls::serve_tls(listener, router(bo, cfg), tls, shutdown).await
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .enable_all()
        .build()
}

/// Blocks serving `listener` on a runtime of its own until Ctrl-C.
pub fn run(bo: Arc<Backoffice>, listener: std::net::TcpListener, cfg: ApiConfig) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        serve(bo, listener, cfg, async {
            // An error here means no signal handler could be installed:
            // then the process is stopped by other means.
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    })
}

/// The API on a background thread; stops (gracefully) on [`stop`] or drop.
///
/// [`stop`]: BackgroundServer::stop
pub struct BackgroundServer {
    pub addr: SocketAddr,
    /// Serving over TLS ([`BackgroundServer::start_tls`]).
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl BackgroundServer {
    /// Binds `addr` (use port 0 for any free port) and serves on it.
    pub fn start(bo: Arc<Backoffice>, addr: SocketAddr, cfg: ApiConfig) -> io::Result<Self> {
        Self::start_with(bo, addr, cfg, None)
    }

    /// [`BackgroundServer::start`] over TLS with `tls`
    /// (`tally_tls::server_config`); [`BackgroundServer::base_url`] is then
    /// `https://127.0.0.1:PORT`.
    pub fn start_tls(
        bo: Arc<Backoffice>,
        addr: SocketAddr,
        cfg: ApiConfig,
        tls: Arc<tally_tls::rustls::ServerConfig>,
    ) -> io::Result<Self> {
        Self::start_with(bo, addr, cfg, Some(tls))
    }

    fn start_with(
        bo: Arc<Backoffice>,
        addr: SocketAddr,
        cfg: ApiConfig,
        tls: Option<Arc<tally_tls::rustls::ServerConfig>>,
    ) -> io::Result<Self> {
        let tls_on = tls.is_some();
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = runtime()?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tally-api".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let stopped = async {
                        let _ = rx.await;
                    };
                    match tls {
                        None => serve(bo, listener, cfg, stopped).await,
                        Some(tls) => serve_tls(bo, listener, cfg, tls, stopped).await,
                    }
                })
            })?;
        Ok(BackgroundServer {
            addr,
            tls: tls_on,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://ADDR` (`https://ADDR` over TLS), the base of
    /// [`crate::HttpBackend`] and [`crate::OperatorClient`].
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, waits for requests in flight, joins the thread.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
