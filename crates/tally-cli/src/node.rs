//! `tally node`: every back-office role in one process.

use std::net::SocketAddr;
use std::sync::Arc;

use tally_core::codec::Cbor;
use tally_dcp::{Backoffice, KeyDir, NodeKeys, OsEntropy, Stores};
use tally_store::Store;

use crate::CliError;

/// Where each role keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrls {
    pub central: String,
    pub dcp: String,
    pub mds: String,
}

impl StoreUrls {
    /// Empty `dcp`/`mds` take the defaults: an SQLite central file F puts
    /// the DCP in `F.dcp` (its own file: the DCP's database never holds
    /// offline history); PostgreSQL shares one database (separate tables).
    pub fn new(central: &str, dcp: &str, mds: &str) -> StoreUrls {
        let pg = central.starts_with("postgres://") || central.starts_with("postgresql://");
        let dcp = if !dcp.is_empty() {
            dcp.to_string()
        } else if pg {
            central.to_string()
        } else {
            // The DCP file beside the central one, without its options.
            let path = central.trim_start_matches("sqlite:");
            format!("{}.dcp", path.split('?').next().unwrap_or(path))
        };
        StoreUrls {
            central: central.to_string(),
            dcp,
            mds: if mds.is_empty() {
                central.to_string()
            } else {
                mds.to_string()
            },
        }
    }
}

/// Where the node's long-lived keys are (docs/decisions, key custody).
#[derive(Clone)]
pub struct KeyOptions {
    /// The key directory: every key as a file (development), or only the
    /// opening key when the signing keys are in a token.
    pub dir: std::path::PathBuf,
    /// The signing keys (root, settlement, DCP) in a PKCS#11 token.
    pub pkcs11: Option<(crate::pkcs11::TokenOptions, crate::pkcs11::Labels)>,
}

impl KeyOptions {
    /// The default key directory: beside an SQLite central file F,
    /// `F.keys`; PostgreSQL has no file to put it beside.
    pub fn default_dir(central: &str) -> Option<std::path::PathBuf> {
        if central.starts_with("postgres://") || central.starts_with("postgresql://") {
            return None;
        }
        let path = central.trim_start_matches("sqlite:");
        Some(format!("{}.keys", path.split('?').next().unwrap_or(path)).into())
    }
}

pub struct NodeOptions {
    pub stores: StoreUrls,
    pub keys: KeyOptions,
    /// Public key files of the SE manufacturers the policy trusts.
    pub manufacturers: Vec<std::path::PathBuf>,
    /// Where to write the root public key (the SEs' trust anchor).
    pub root_out: Option<std::path::PathBuf>,
    /// joint.cbor of the supervisors; None: the development key.
    pub escrow_key: Option<std::path::PathBuf>,
    pub listen: SocketAddr,
    pub operator_token: String,
    pub body_limit_bytes: usize,
    /// Confidential amounts (the policy is re-signed once with the audit
    /// key; a node started without it afterwards stays confidential).
    pub confidential: bool,
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

/// The supervisors' key set file (joint.cbor).
pub fn read_supervisors(path: &std::path::Path) -> Result<tally_supervisor::JointParams, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::io(path, e))?;
    tally_supervisor::JointParams::from_cbor(&bytes).map_err(|e| {
        CliError::failed(format!(
            "{}: not a supervisors' key set: {e}",
            path.display()
        ))
    })
}

/// The node's keys: seeds an older node left in its databases are moved
/// into the key directory first (once; the tables go when the back office
/// opens), then each key comes from its file (created on first start) or
/// from the token.
fn node_keys(stores: &Stores, keys: &KeyOptions) -> Result<NodeKeys, CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError::failed(format!("keys: {e}"));
    let dir = KeyDir::open_or_create(&keys.dir).map_err(|e| failed(&e))?;
    let legacy = tally_dcp::legacy_seeds(&stores.central, &stores.dcp)
        .map_err(|e| CliError::failed(format!("cannot read the databases: {e}")))?;
    if !legacy.is_empty() {
        if keys.pkcs11.is_some() {
            return Err(CliError::failed(
                "the database holds key seeds of an older node: start once without --pkcs11-module \
                 (with --keys DIR) to move them into key files, then import those keys into the token \
                 or start with fresh ones",
            ));
        }
        dir.import_legacy(&legacy).map_err(|e| failed(&e))?;
        tracing::warn!(
            dir = %keys.dir.display(),
            "moved the key seeds of an older node out of the database into key files"
        );
    }
    match &keys.pkcs11 {
        None => dir.node_keys(&mut OsEntropy).map_err(|e| failed(&e)),
        Some((token, labels)) => {
            let [root, settlement, dcp] = crate::pkcs11::open_node_keys(token, labels)?;
            Ok(NodeKeys {
                root,
                settlement,
                dcp,
                opening: dir.opening_key(&mut OsEntropy).map_err(|e| failed(&e))?,
            })
        }
    }
}

pub fn open_backoffice(
    urls: &StoreUrls,
    escrow_key: Option<&std::path::Path>,
    keys: &KeyOptions,
) -> Result<Arc<Backoffice>, CliError> {
    open_backoffice_trusting(urls, escrow_key, keys, &[])
}

/// [`open_backoffice`] whose central bank also trusts the DCPs `more`.
pub fn open_backoffice_trusting(
    urls: &StoreUrls,
    escrow_key: Option<&std::path::Path>,
    keys: &KeyOptions,
    more: &[(u32, tally_core::PublicKey)],
) -> Result<Arc<Backoffice>, CliError> {
    let open = |url: &str| {
        Store::open(url).map_err(|e| CliError::failed(format!("cannot open database {url}: {e}")))
    };
    let supervisors = escrow_key.map(read_supervisors).transpose()?;
    let key = match &supervisors {
        Some(params) => params.joint_key().clone(),
        None => {
            tracing::warn!(
                "no --escrow-key: certificates carry escrows to the DEVELOPMENT key, whose secret is public; \
                 run `tally supervisor keygen` and pass its joint.cbor in production"
            );
            tally_dcp::development_escrow_key()
        }
    };
    let stores = Stores {
        central: open(&urls.central)?,
        dcp: open(&urls.dcp)?,
        mds: open(&urls.mds)?,
    };
    let node_keys = node_keys(&stores, keys)?;
    let bo = Backoffice::open_node_trusting(stores, key, supervisors, node_keys, more);
    Ok(Arc::new(bo.map_err(|e| {
        CliError::failed(format!("cannot start the back office: {e}"))
    })?))
}

pub fn run(opts: NodeOptions) -> Result<(), CliError> {
    let bo = open_backoffice(&opts.stores, opts.escrow_key.as_deref(), &opts.keys)?;
    for path in &opts.manufacturers {
        let key = tally_core::PublicKey::from_cbor(&crate::device::read_file(path)?)
            .map_err(|e| CliError::usage(format!("{}: not a public key: {e}", path.display())))?;
        bo.trust_manufacturer(key)
            .map_err(|e| CliError::failed(format!("cannot trust manufacturer: {e}")))?;
    }
    if opts.confidential {
        bo.use_confidential_amounts()
            .map_err(|e| CliError::failed(format!("cannot switch to confidential amounts: {e}")))?;
    }
    if let Some(out) = &opts.root_out {
        crate::device::write_atomic(out, &bo.root_key().to_cbor())?;
    }
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
        tokio::spawn(audit_periodically(bo.clone()));
        // The MDS pulls settled records from the outbox off the request
        // path (issue 11).
        let feed = bo.clone();
        std::thread::Builder::new()
            .name("mds-feed".into())
            .spawn(move || {
                loop {
                    feed.pump_mds();
                    // A debit whose device never retried (after a crash of
                    // this node, say) is finished here.
                    if let Err(e) =
                        feed.resolve_in_flight(crate::parties::IN_FLIGHT_RESOLVE_AFTER_S)
                    {
                        tracing::warn!(error = %e, "debits in flight not resolved; will retry");
                    }
                    crate::parties::reclaim(&feed, crate::parties::RECLAIM_AFTER_S);
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            })
            .map_err(|e| CliError::failed(format!("cannot start the MDS feed: {e}")))?;
        // Tests and scripts read this line to find the port.
        println!("tally node listening on http://{addr}");
        let cfg = tally_api::ApiConfig {
            operator_token: opts.operator_token,
            body_limit_bytes: opts.body_limit_bytes,
            device_rate: tally_api::DeviceRate::default(),
        };
        tally_api::serve(bo, listener, cfg, shutdown())
            .await
            .map_err(|e| CliError::failed(format!("server failed: {e}")))?;
        tracing::info!("tally node stopped");
        Ok(())
    })
}

/// How often the node re-sums the whole ledger (the periodic audit of
/// the running totals that every transaction asserts in O(1)).
const LEDGER_AUDIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

async fn audit_periodically(bo: Arc<Backoffice>) {
    let mut tick = tokio::time::interval(LEDGER_AUDIT_INTERVAL);
    loop {
        tick.tick().await;
        let b = bo.clone();
        match tokio::task::spawn_blocking(move || b.invariant()).await {
            Ok(Ok(inv)) if inv.holds() => {
                tracing::debug!(journal = inv.journal_entries, "ledger audit passed")
            }
            Ok(Ok(inv)) => tracing::error!(
                ?inv,
                "LEDGER AUDIT FAILED: balances or running totals do not add up"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "ledger audit could not run"),
            Err(e) => tracing::warn!(error = %e, "ledger audit task failed"),
        }
    }
}

pub(crate) async fn shutdown() {
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
