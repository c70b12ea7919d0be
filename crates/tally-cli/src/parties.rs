//! The back office as separate processes (issue 11): `tally central` (the
//! central bank: ledger of the DCPs' settlement accounts, settlement,
//! directory, the MDS), `tally dcp` (one DCP: its devices and customers,
//! reaching the central bank over mutual TLS), and `tally keys public`
//! (a role's public key, for the central bank's DCP list).
//!
//! Every link is TLS under the root's CA (`tally tls init`): DCPs and
//! operators reach the central bank with their role certificates (mutual
//! TLS); devices reach their DCP with the CA pinned (server
//! authentication; the SE authenticates every request itself).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tally_core::PublicKey;
use tally_core::codec::Cbor;
use tally_dcp::{Backoffice, CentralKeys, KeyDir, OsEntropy};
use tally_store::Store;
use tally_tls::{ClientAuth, TlsDir};

use crate::CliError;

fn open_store(url: &str) -> Result<Store, CliError> {
    Store::open(url).map_err(|e| CliError::failed(format!("cannot open database {url}: {e}")))
}

fn keydir(path: &Path) -> Result<KeyDir, CliError> {
    KeyDir::open_or_create(path)
        .map_err(|e| CliError::failed(format!("key directory {}: {e}", path.display())))
}

fn tls_dir(path: &Path) -> Result<TlsDir, CliError> {
    TlsDir::open(path).map_err(|e| {
        CliError::usage(format!(
            "TLS directory {}: {e} (run `tally tls init` first)",
            path.display()
        ))
    })
}

/// The server side of `stem`'s certificate in `dir`.
fn server_tls(
    dir: &TlsDir,
    stem: &str,
    auth: ClientAuth,
) -> Result<Arc<tally_tls::rustls::ServerConfig>, CliError> {
    let (cert, key) = dir
        .pair(stem)
        .map_err(|e| CliError::usage(format!("{stem} certificate: {e}")))?;
    let chain = tally_tls::certs_from_pem(&cert).map_err(|e| CliError::usage(e.to_string()))?;
    let key = tally_tls::key_from_pem(&key).map_err(|e| CliError::usage(e.to_string()))?;
    tally_tls::server_config(chain, key, auth)
        .map_err(|e| CliError::usage(format!("TLS configuration: {e}")))
}

fn ca_der(dir: &TlsDir) -> Result<tally_tls::rustls::pki_types::CertificateDer<'static>, CliError> {
    let pem = dir
        .ca_pem()
        .map_err(|e| CliError::usage(format!("CA certificate: {e}")))?;
    tally_tls::cert_from_pem(&pem).map_err(|e| CliError::usage(e.to_string()))
}

/// A role's public key as `tally central --dcp ID=FILE` reads it.
pub fn public_key(keys: &Path, role: &str, out: &Path) -> Result<String, CliError> {
    let kd = keydir(keys)?;
    let signer = kd
        .signer(role, &mut OsEntropy)
        .map_err(|e| CliError::failed(format!("{role} key: {e}")))?;
    let key = signer.public_key();
    crate::device::write_atomic(out, &key.to_cbor())?;
    Ok(format!(
        "{role} public key {} written to {}",
        key.id(),
        out.display()
    ))
}

/// Parses `ID=FILE` (a DCP's id and its public key file).
pub fn parse_dcp(s: &str) -> Result<(u32, PathBuf), String> {
    let (id, file) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected ID=PUBLIC_KEY_FILE"))?;
    let id: u32 = id.parse().map_err(|_| format!("`{id}`: not a DCP id"))?;
    Ok((id, PathBuf::from(file)))
}

pub struct CentralOptions {
    pub database_url: String,
    pub mds_database_url: Option<String>,
    pub keys: PathBuf,
    pub tls: PathBuf,
    pub listen: SocketAddr,
    pub dcps: Vec<(u32, PathBuf)>,
    pub manufacturers: Vec<PathBuf>,
    pub root_out: Option<PathBuf>,
    /// The MDS runs as its own process (`tally mds`) and pulls the outbox.
    pub external_mds: bool,
    /// The supervisors' key set (joint.cbor); None: the development key.
    pub escrow_key: Option<PathBuf>,
}

fn read_key(path: &Path) -> Result<PublicKey, CliError> {
    PublicKey::from_cbor(&crate::device::read_file(path)?)
        .map_err(|e| CliError::usage(format!("{}: not a public key: {e}", path.display())))
}

/// `tally central`: serves the central bank over mutual TLS until
/// stopped. Prints `tally central listening on https://ADDR`.
pub fn run_central(o: CentralOptions) -> Result<(), CliError> {
    let kd = keydir(&o.keys)?;
    let key_err = |e: tally_dcp::KeyError| CliError::failed(format!("central bank keys: {e}"));
    let keys = CentralKeys {
        root: kd
            .signer(tally_dcp::keys::ROOT, &mut OsEntropy)
            .map_err(key_err)?,
        settlement: kd
            .signer(tally_dcp::keys::SETTLEMENT, &mut OsEntropy)
            .map_err(key_err)?,
        opening: kd.opening_key(&mut OsEntropy).map_err(key_err)?,
    };
    let mut dcps = Vec::with_capacity(o.dcps.len());
    for (id, file) in &o.dcps {
        dcps.push((*id, read_key(file)?));
    }
    if dcps.is_empty() {
        return Err(CliError::usage("no DCP: pass --dcp ID=PUBLIC_KEY_FILE"));
    }
    let store = open_store(&o.database_url)?;
    let mds = if o.external_mds {
        None
    } else {
        Some(open_store(
            o.mds_database_url.as_deref().unwrap_or(&o.database_url),
        )?)
    };
    let supervisors = o
        .escrow_key
        .as_deref()
        .map(crate::node::read_supervisors)
        .transpose()?;
    let joint = match &supervisors {
        Some(params) => params.joint_key().clone(),
        None => {
            tracing::warn!(
                "no --escrow-key: certificates carry escrows to the DEVELOPMENT key, whose secret is public"
            );
            tally_dcp::development_escrow_key()
        }
    };
    let bank = Arc::new(
        Backoffice::open_central_with_mds(store, mds, keys, joint, supervisors, &dcps)
            .map_err(|e| CliError::failed(format!("cannot start the central bank: {e}")))?,
    );
    if !o.external_mds {
        // The MDS in this process pulls the outbox off the request path.
        let b = bank.clone();
        std::thread::Builder::new()
            .name("mds-feed".into())
            .spawn(move || {
                loop {
                    b.pump_mds();
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            })
            .map_err(|e| CliError::failed(e.to_string()))?;
    }
    for path in &o.manufacturers {
        bank.trust_manufacturer(read_key(path)?)
            .map_err(|e| CliError::failed(format!("cannot trust manufacturer: {e}")))?;
    }
    if let Some(out) = &o.root_out {
        crate::device::write_atomic(out, &bank.root_key().to_cbor())?;
    }
    // Revoked role certificate keys: refused at the handshake and per
    // request. Other central processes on this database revoke too, so
    // the set is refreshed from it every second.
    let revoked = tally_tls::RevokedKeys::new();
    revoked.extend(
        bank.revoked_role_keys()
            .map_err(|e| CliError::failed(format!("cannot read role revocations: {e}")))?,
    );
    {
        let b = bank.clone();
        let r = revoked.clone();
        std::thread::Builder::new()
            .name("role-revocations".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    match b.revoked_role_keys() {
                        Ok(pins) => r.extend(pins),
                        Err(e) => tracing::warn!("cannot refresh role revocations: {e}"),
                    }
                }
            })
            .map_err(|e| CliError::failed(e.to_string()))?;
    }
    let dir = tls_dir(&o.tls)?;
    let tls = server_tls(
        &dir,
        "central",
        ClientAuth::RequiredNotRevoked(ca_der(&dir)?, revoked.clone()),
    )?;
    serve(o.listen, "central", move |listener, stop| {
        Box::pin(tally_tls::serve_tls(
            listener,
            tally_api::central_router(bank.clone(), revoked.clone()),
            tls,
            stop,
        ))
    })
}

/// A party's agent to the central bank at `base` (a DCP, the MDS): the
/// server must be `central` under the pinned CA, and its key must not be
/// in the root-signed role revocation list (decision 0014, session 10),
/// which a thread of this process keeps current from the central bank —
/// while none is current, every call but the list's own is refused, so a
/// stolen central bank key revoked since cannot answer for longer than a
/// list is believed. The root's key is the CA's, pinned at installation.
fn central_agent(
    ca: &str,
    client: (&str, &str),
    base: &str,
) -> Result<(ureq::Agent, tally_tls::ServerRevocations), CliError> {
    central_agent_relaying(ca, client, base, None)
}

/// [`central_agent`], and every list believed is also handed to `relay`
/// (the MDS serves it to its own clients).
fn central_agent_relaying(
    ca: &str,
    client: (&str, &str),
    base: &str,
    relay: Option<tally_api::RoleRevocationRelay>,
) -> Result<(ureq::Agent, tally_tls::ServerRevocations), CliError> {
    let CheckedCentral {
        root,
        list_agent,
        calls,
        revocations,
    } = checked_central(ca, client)?;
    let (url, into) = (tally_api::role_revocations_url(base), revocations.clone());
    std::thread::Builder::new()
        .name("role-revocations".into())
        .spawn(move || {
            let mut held = None;
            loop {
                match tally_api::refresh_role_revocations_at(&list_agent, &url, &root, held, &into)
                {
                    Ok(list) => {
                        held = Some(list.serial);
                        if let Some(relay) = &relay {
                            relay.set(&list);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "role revocations: will retry"),
                }
                std::thread::sleep(if held.is_some() {
                    tally_api::ROLE_REVOCATIONS_POLL
                } else {
                    tally_api::ROLE_REVOCATIONS_RETRY
                });
            }
        })
        .map_err(|e| CliError::failed(e.to_string()))?;
    Ok((calls, revocations))
}

/// Agents to the central bank that refuse a revoked central bank key:
/// `list_agent` fetches the root-signed role revocations (refusing only
/// keys already believed revoked), `calls` also refuses every call while
/// no list is current.
struct CheckedCentral {
    root: tally_core::PublicKey,
    list_agent: ureq::Agent,
    calls: ureq::Agent,
    revocations: tally_tls::ServerRevocations,
}

fn checked_central(ca: &str, client: (&str, &str)) -> Result<CheckedCentral, CliError> {
    let (root, agent) = checked_agents(ca, client)?;
    let revocations = tally_tls::ServerRevocations::new();
    Ok(CheckedCentral {
        root,
        list_agent: agent(tally_tls::Role::Central, false, &revocations)?,
        calls: agent(tally_tls::Role::Central, true, &revocations)?,
        revocations,
    })
}

/// The root's key (the CA's, pinned at installation) and a maker of
/// agents to a server of a role, checked against a revocation set: with
/// `current`, also refused while no believed list is current.
#[allow(clippy::type_complexity)]
fn checked_agents<'a>(
    ca: &'a str,
    client: (&'a str, &'a str),
) -> Result<
    (
        tally_core::PublicKey,
        impl Fn(tally_tls::Role, bool, &tally_tls::ServerRevocations) -> Result<ureq::Agent, CliError>
        + 'a,
    ),
    CliError,
> {
    let root = tally_tls::ca_key(ca)
        .map_err(|e| CliError::usage(format!("CA certificate: {e}")))
        .and_then(|k| {
            tally_core::PublicKey::new(tally_core::Suite::Ed25519, &k)
                .map_err(|e| CliError::usage(format!("CA key: {e}")))
        })?;
    let agent = move |server, current, revocations: &tally_tls::ServerRevocations| {
        tally_tls::party_agent_with(
            ca,
            client,
            server,
            Some(tally_tls::ServerCheck {
                revocations: revocations.clone(),
                current,
            }),
        )
        .map_err(|e| CliError::usage(format!("TLS client: {e}")))
    };
    Ok((root, agent))
}

pub struct DcpOptions {
    pub id: u32,
    pub database_url: String,
    pub keys: PathBuf,
    pub tls: PathBuf,
    pub central: String,
    pub listen: SocketAddr,
    pub operator_token: Option<String>,
    /// Seconds before the DCP finishes a debit its device did not retry.
    pub in_flight_after_s: i64,
    /// Seconds before the DCP reclaims a load whose Issue its device did
    /// not collect.
    pub reclaim_after_s: i64,
}

/// `tally dcp`: serves one DCP's device API over TLS (server
/// authentication) until stopped, reaching the central bank at
/// `--central` with its role certificate `dcp-ID`. Prints `tally dcp ID
/// listening on https://ADDR`.
pub fn run_dcp(o: DcpOptions) -> Result<(), CliError> {
    let kd = keydir(&o.keys)?;
    let signer = kd
        .signer(tally_dcp::keys::DCP, &mut OsEntropy)
        .map_err(|e| CliError::failed(format!("DCP key: {e}")))?;
    let dir = tls_dir(&o.tls)?;
    let stem = format!("dcp-{}", o.id);
    let (cert, key) = dir
        .pair(&stem)
        .map_err(|e| CliError::usage(format!("{stem} certificate: {e}")))?;
    let ca = dir
        .ca_pem()
        .map_err(|e| CliError::usage(format!("CA certificate: {e}")))?;
    let (agent, _) = central_agent(&ca, (&cert, &key), &o.central)?;
    let central = Arc::new(tally_api::CentralClient::new(&o.central, agent));
    // The central bank may start after us: retry for a while.
    let mut tries = 0;
    let bo = loop {
        let store = open_store(&o.database_url)?;
        match Backoffice::open_dcp(store, o.id, signer.clone(), central.clone()) {
            Ok(bo) => break Arc::new(bo),
            Err(e) if e.is_unanswered() && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(CliError::failed(format!("cannot start DCP {}: {e}", o.id))),
        }
    };
    let tls = server_tls(&dir, "api", ClientAuth::None)?;
    let cfg = tally_api::ApiConfig {
        operator_token: o.operator_token.unwrap_or_default(),
        body_limit_bytes: tally_api::BODY_LIMIT_BYTES_DEFAULT,
        device_rate: tally_api::DeviceRate::default(),
    };
    let id = o.id;
    let inbox = bo.clone();
    let after = o.in_flight_after_s.max(0);
    let reclaim_after = o.reclaim_after_s.max(0);
    std::thread::Builder::new()
        .name("dcp-inbox".into())
        .spawn(move || book_inbox_periodically(inbox, after, reclaim_after))
        .map_err(|e| CliError::failed(e.to_string()))?;
    serve(o.listen, &format!("dcp {id}"), move |listener, stop| {
        Box::pin(tally_tls::serve_tls(
            listener,
            tally_api::router(bo.clone(), cfg.clone()),
            tls,
            stop,
        ))
    })
}

/// Seconds a debit stays in flight (its device may still retry it) before
/// `tally node` finishes it itself (`tally dcp --in-flight-after-s`).
pub(crate) const IN_FLIGHT_RESOLVE_AFTER_S: i64 = 30;

/// Seconds a load the DCP finished itself waits for its device to collect
/// the Issue before the DCP reclaims it (`tally dcp --reclaim-after-s`): 7
/// days.
pub(crate) const RECLAIM_AFTER_S: i64 = 7 * 24 * 3600;

/// Interbank credits and mints reach the DCP's book within a second,
/// debits left in flight by a device that never came back are finished
/// (`Backoffice::resolve_in_flight`), and loads whose Issue was not
/// collected are reclaimed (`Backoffice::reclaim_uncollected`).
pub(crate) fn book_inbox_periodically(
    bo: Arc<Backoffice>,
    in_flight_after_s: i64,
    reclaim_after_s: i64,
) {
    loop {
        if let Err(e) = bo.book_inbox() {
            tracing::warn!(error = %e, "inbox not booked; will retry");
        }
        match bo.resolve_in_flight(in_flight_after_s) {
            Ok(r) if r.settled + r.returned > 0 => {
                tracing::info!(
                    settled = r.settled,
                    returned = r.returned,
                    pending = r.pending,
                    "debits in flight finished"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "debits in flight not resolved; will retry"),
        }
        reclaim(&bo, reclaim_after_s);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// One round of [`Backoffice::reclaim_uncollected`], logged.
pub(crate) fn reclaim(bo: &Backoffice, after_s: i64) {
    match bo.reclaim_uncollected(after_s) {
        Ok(r) if r.reclaimed > 0 => {
            tracing::info!(
                reclaimed = r.reclaimed,
                pending = r.pending,
                "uncollected loads returned to their accounts"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "uncollected loads not reclaimed; will retry"),
    }
}

type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

fn serve(
    listen: SocketAddr,
    what: &str,
    f: impl FnOnce(
        tokio::net::TcpListener,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> Serving,
) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| CliError::failed(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::failed(e.to_string()))?;
        // Tests and scripts read this line to find the port.
        println!("tally {what} listening on https://{addr}");
        f(listener, Box::pin(crate::node::shutdown()))
            .await
            .map_err(|e| CliError::failed(format!("server failed: {e}")))?;
        tracing::info!("tally {what} stopped");
        Ok(())
    })
}

/// `tally cb`: the central bank's operator calls over mutual TLS with the
/// operator's role certificate (`operator.pem` of `tally tls init`).
pub struct Cb {
    base: String,
    agent: ureq::Agent,
    /// Who answers: "central bank" or "MDS" (for messages).
    server: &'static str,
}

impl Cb {
    /// `server`: the role the server must present (the central bank, or
    /// the MDS for alerts and indicators, at `mds` or else at `central`).
    /// Either way the server's key is checked against the root-signed role
    /// revocation list first (THREATS T74, T75): the central bank's own —
    /// fetched from the central bank, also for an MDS at `mds` — or, for
    /// an MDS named by `central`, the one that MDS relays (which a revoked
    /// MDS can keep showing until it is no longer current, at most
    /// `ROLE_REVOCATIONS_MAX_AGE_S`).
    pub fn new(
        central: &str,
        tls: &Path,
        server: tally_tls::Role,
        mds: Option<&str>,
    ) -> Result<Cb, CliError> {
        let dir = tls_dir(tls)?;
        let (cert, key) = dir
            .pair("operator")
            .map_err(|e| CliError::usage(format!("operator certificate: {e}")))?;
        let ca = dir
            .ca_pem()
            .map_err(|e| CliError::usage(format!("CA certificate: {e}")))?;
        let central = central.trim_end_matches('/');
        let (root, agent) = checked_agents(&ca, (&cert, &key))?;
        let revocations = tally_tls::ServerRevocations::new();
        let (base, list_role, list_url, who) = match (server, mds) {
            (tally_tls::Role::Mds, Some(mds)) => (
                mds.trim_end_matches('/'),
                tally_tls::Role::Central,
                tally_api::role_revocations_url(central),
                "central bank",
            ),
            (tally_tls::Role::Mds, None) => (
                central,
                tally_tls::Role::Mds,
                tally_api::mds_role_revocations_url(central),
                "MDS",
            ),
            _ => (
                central,
                tally_tls::Role::Central,
                tally_api::role_revocations_url(central),
                "central bank",
            ),
        };
        let list_agent = agent(list_role, false, &revocations)?;
        tally_api::refresh_role_revocations_at(&list_agent, &list_url, &root, None, &revocations)
            .map_err(|e| CliError::failed(format!("{who} refused: {e}")))?;
        Ok(Cb {
            base: base.to_string(),
            agent: agent(server, true, &revocations)?,
            server: if server == tally_tls::Role::Mds {
                "MDS"
            } else {
                "central bank"
            },
        })
    }

    fn answer(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<serde_json::Value, CliError> {
        let body = tally_client::http::exchange(r)
            .map_err(|e| CliError::failed(format!("{} refused: {e}", self.server)))?;
        serde_json::from_slice(&body)
            .map_err(|e| CliError::failed(format!("malformed answer: {e}")))
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, CliError> {
        self.answer(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .send(&serde_json::to_vec(&body).unwrap_or_default()[..]),
        )
    }

    pub fn get(&self, path: &str) -> Result<serde_json::Value, CliError> {
        self.answer(self.agent.get(format!("{}{path}", self.base)).call())
    }

    /// `manufacturer FILE`: the hex of the key file's CBOR.
    pub fn manufacturer(&self, file: &Path) -> Result<serde_json::Value, CliError> {
        let key = read_key(file)?;
        self.post(
            "/central/v1/admin/manufacturers",
            serde_json::json!({ "key": hex::encode(key.to_cbor()) }),
        )
    }

    /// `revoke-cert FILE`: the role certificate (PEM) whose key the
    /// central bank must refuse from now on.
    pub fn revoke_cert(&self, file: &Path) -> Result<serde_json::Value, CliError> {
        let pem = String::from_utf8(crate::device::read_file(file)?)
            .map_err(|_| CliError::usage(format!("{}: not a PEM file", file.display())))?;
        self.post(
            "/central/v1/admin/certificates/revoke",
            serde_json::json!({ "certificate": pem }),
        )
    }
}

pub struct MdsOptions {
    pub database_url: String,
    pub central: String,
    pub tls: PathBuf,
    pub listen: SocketAddr,
}

/// `tally mds`: the MDS as its own process on its own database. It pulls
/// settled records from the central bank's outbox with the `mds` role
/// certificate and serves operators (mutual TLS) its alerts and
/// indicators. Prints `tally mds listening on https://ADDR`.
pub fn run_mds(o: MdsOptions) -> Result<(), CliError> {
    let dir = tls_dir(&o.tls)?;
    let (cert, key) = dir
        .pair("mds")
        .map_err(|e| CliError::usage(format!("mds certificate: {e}")))?;
    let ca = dir
        .ca_pem()
        .map_err(|e| CliError::usage(format!("CA certificate: {e}")))?;
    let relay = tally_api::RoleRevocationRelay::new();
    let (agent, revocations) =
        central_agent_relaying(&ca, (&cert, &key), &o.central, Some(relay.clone()))?;
    let outbox = Arc::new(tally_api::OutboxClient::new(&o.central, agent));
    // The issuers and limits come from the central bank's signed policy.
    let mut tries = 0;
    let trust = loop {
        match outbox.trust() {
            Ok(t) => break t,
            Err(e) if e.is_unanswered() && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(CliError::failed(format!(
                    "cannot reach the central bank: {e}"
                )));
            }
        }
    };
    let issuers: Vec<tally_core::Hash32> = trust.policy.dcps.iter().map(|c| c.key.id()).collect();
    let payment_max = trust
        .policy
        .tiers
        .iter()
        .filter(|t| t.device_class != tally_core::policy::device_class::DCP)
        .map(|t| t.payment_max.0)
        .max()
        .unwrap_or(0);
    let mds = Arc::new(
        tally_mds::Mds::open(
            open_store(&o.database_url)?,
            tally_mds::MdsConfig::new(issuers.clone(), issuers, payment_max),
        )
        .map_err(|e| CliError::failed(format!("cannot open the MDS: {e}")))?,
    );
    let (m, feed) = (mds.clone(), outbox.clone());
    std::thread::Builder::new()
        .name("mds-feed".into())
        .spawn(move || {
            loop {
                match tally_central::monitoring::pump(&*feed, &m) {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "MDS feed: will retry"),
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
        .map_err(|e| CliError::failed(e.to_string()))?;
    // The role keys the central bank revoked (the root-signed list the
    // central agent is checked against): refused to the MDS's own clients
    // too.
    let revoked = revocations.revoked().clone();
    let tls = server_tls(
        &dir,
        "mds",
        ClientAuth::RequiredNotRevoked(ca_der(&dir)?, revoked.clone()),
    )?;
    serve(o.listen, "mds", move |listener, stop| {
        Box::pin(tally_tls::serve_tls(
            listener,
            tally_api::mds_router(mds.clone(), revoked.clone(), relay.clone()),
            tls,
            stop,
        ))
    })
}
