//! `tally node`: every back-office role in one process.

use std::net::SocketAddr;
use std::sync::Arc;

use tally_dcp::Backoffice;
use tally_store::Store;

use crate::CliError;

pub struct NodeOptions {
    pub database_url: String,
    pub listen: SocketAddr,
    pub operator_token: String,
    pub body_limit_bytes: usize,
}

/// Reads `KEY = value` lines (a minimal TOML subset: strings and numbers;
/// `#` comments) — the node's configuration file. Environment variables
/// `TALLY_<KEY>` override it; command-line flags override both.
pub fn read_config(path: &std::path::Path) -> Result<Vec<(String, String)>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(CliError::usage(format!(
                "{}:{}: expected KEY = value",
                path.display(),
                n + 1
            )));
        };
        out.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
    }
    Ok(out)
}

pub fn open_backoffice(database_url: &str) -> Result<Arc<Backoffice>, CliError> {
    let store = Store::open(database_url)
        .map_err(|e| CliError::failed(format!("cannot open database {database_url}: {e}")))?;
    Ok(Arc::new(Backoffice::open(store).map_err(|e| {
        CliError::failed(format!("cannot start the back office: {e}"))
    })?))
}

pub fn run(opts: NodeOptions) -> Result<(), CliError> {
    let bo = open_backoffice(&opts.database_url)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::failed(e.to_string()))?;
        tracing::info!(%addr, backend = bo.store().backend(), "tally node started");
        // Tests and scripts read this line to find the port.
        println!("tally node listening on http://{addr}");
        let cfg = tally_api::ApiConfig {
            operator_token: opts.operator_token,
            body_limit_bytes: opts.body_limit_bytes,
        };
        tally_api::serve(bo, listener, cfg, shutdown())
            .await
            .map_err(|e| CliError::failed(format!("server failed: {e}")))?;
        tracing::info!("tally node stopped");
        Ok(())
    })
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
