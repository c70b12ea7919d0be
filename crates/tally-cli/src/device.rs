//! `tally device …`: a device whose SE state is a file.
//!
//! Files of a device `NAME`: `NAME` (the SE's non-volatile memory: journal
//! slots, sealed with XChaCha20-Poly1305), `NAME.key` (the device key that
//! seals it — on a real SE it never leaves the chip; copying both files is
//! how the cloned-SE attack is simulated), and `NAME.json` (the terminal's
//! settings: node URL, SE id). The request counter lives in the SE.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tally_core::codec::Cbor;
use tally_core::crypto::Entropy;
use tally_core::policy::device_class;
use tally_core::{Amount, Hash32, PublicKey, Receipt, Request, SecretKey, Suite};
use tally_se::file::FileStorage;
use tally_se::{Applet, Sealing};
use tally_wallet::SeLink;
use tally_wallet::agent::{Agent, Finished};

use crate::CliError;

/// SE storage size: two journal slots of 512 KiB.
pub const SE_STORAGE_BYTES: usize = 1024 * 1024;

/// Randomness from the operating system.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // /dev/urandom does not fail on Linux once the system is up; if it
        // ever did, refusing to run beats using weak randomness.
        let r = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf));
        if let Err(e) = r {
            eprintln!("tally: no system randomness: {e}");
            std::process::exit(1);
        }
    }
}

pub type FileApplet = Applet<FileStorage, OsEntropy>;

/// How a device pays (`tally device init --route`, `tally device route`):
/// the device's own policy, chosen by whoever runs it (a metering
/// operator, a cardholder). Every route pays with the same SE command and
/// authorisation (PAY of the payee's signed request, within the SE's
/// limits); they differ in when the payment reaches the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Route {
    /// Settled later: by the payer's next sync while unacknowledged, or
    /// when its payee redeems or pays on what it received.
    #[default]
    Offline,
    /// Settled at once through the DCP (the spent registry records it
    /// before the command returns); refuses to pay when the DCP cannot be
    /// reached.
    Online,
    /// Online when the DCP answers, offline otherwise.
    Auto,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Offline => "offline",
            Route::Online => "online",
            Route::Auto => "auto",
        }
    }
    fn parse(s: &str) -> Option<Route> {
        match s {
            "offline" => Some(Route::Offline),
            "online" => Some(Route::Online),
            "auto" => Some(Route::Auto),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub node: String,
    pub se_id: Hash32,
    /// The root's CA certificate (PEM) the device pins for `https://`
    /// nodes (`tally tls init`); None for plain HTTP.
    pub ca: Option<String>,
    /// How the device pays.
    pub route: Route,
}

impl DeviceConfig {
    /// The device's client of its DCP: HTTPS pinned to the CA, or HTTP.
    pub fn backend(&self) -> Result<tally_api::HttpBackend, CliError> {
        backend(&self.node, self.ca.as_deref())
    }
}

fn backend(node: &str, ca: Option<&str>) -> Result<tally_api::HttpBackend, CliError> {
    match ca {
        Some(pem) => tally_api::HttpBackend::pinned(node, pem)
            .map_err(|e| CliError::usage(format!("CA certificate: {e}"))),
        None if node.starts_with("https://") => Err(CliError::usage(
            "an https:// node needs the CA certificate to pin (--ca FILE at `device init`)",
        )),
        None => Ok(tally_api::HttpBackend::new(node)),
    }
}

fn side(path: &Path, ext: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(ext);
    PathBuf::from(p)
}

impl DeviceConfig {
    pub fn load(state: &Path) -> Result<DeviceConfig, CliError> {
        let p = side(state, ".json");
        let text = std::fs::read_to_string(&p).map_err(|e| {
            CliError::usage(format!(
                "cannot read {}: {e} (run `tally device init` first)",
                p.display()
            ))
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?;
        let node = v["node"].as_str().unwrap_or_default().to_string();
        let se_id = parse_hash(v["se_id"].as_str().unwrap_or_default())?;
        let ca = v["ca"].as_str().map(str::to_string);
        // Devices set up before routes existed pay offline.
        let route = match v["route"].as_str() {
            None => Route::Offline,
            Some(r) => Route::parse(r)
                .ok_or_else(|| CliError::usage(format!("{}: unknown route {r:?}", p.display())))?,
        };
        Ok(DeviceConfig {
            node,
            se_id,
            ca,
            route,
        })
    }
    pub fn save(&self, state: &Path) -> Result<(), CliError> {
        let v = serde_json::json!({
            "node": self.node,
            "se_id": self.se_id.to_string(),
            "ca": self.ca,
            "route": self.route.name(),
        });
        write_atomic(
            &side(state, ".json"),
            serde_json::to_string_pretty(&v)
                .unwrap_or_default()
                .as_bytes(),
        )
    }
}

pub fn parse_hash(s: &str) -> Result<Hash32, CliError> {
    let b = hex::decode(s).map_err(|_| CliError::usage(format!("not a 64-digit hex id: {s:?}")))?;
    Ok(Hash32(b.try_into().map_err(|_| {
        CliError::usage(format!("not a 64-digit hex id: {s:?}"))
    })?))
}

/// Write-then-rename, so a crash never leaves half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let tmp = side(path, ".tmp");
    std::fs::write(&tmp, bytes).map_err(|e| CliError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CliError::io(path, e))
}

pub fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::io(path, e))
}

/// How long a command waits for an SE another command is using.
const SE_BUSY_WAIT: Duration = Duration::from_secs(60);

/// Opens the SE's state file for this command alone: one command at a
/// time, as a card is in one reader (two commands committing over each
/// other could spend one token twice or lose a credit). A command that
/// finds it in use waits for it, then gives up with nothing done.
fn open_storage(state: &Path) -> Result<FileStorage, CliError> {
    let deadline = Instant::now() + SE_BUSY_WAIT;
    let mut told = false;
    loop {
        match FileStorage::open(state) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                if !told {
                    eprintln!(
                        "waiting for {}: another command is using this secure element",
                        state.display()
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(CliError::failed(format!(
                    "{} is still in use by another command after {} s; nothing was done",
                    state.display(),
                    SE_BUSY_WAIT.as_secs()
                )));
            }
            Err(e) => return Err(CliError::io(state, e)),
        }
    }
}

pub fn open_se(state: &Path) -> Result<FileApplet, CliError> {
    let storage = open_storage(state)?;
    let key = read_file(&side(state, ".key"))?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| CliError::usage("device key file must hold 32 bytes"))?;
    Applet::boot(storage, Sealing::Aead(key), OsEntropy)
        .map_err(|e| CliError::failed(format!("secure element refused to boot: {e}")))
}

/// Makes a blank SE: the state file first (created only if absent, and
/// locked), then its key, so a second `init` of the same name can never
/// replace the key of an SE being made.
pub fn create_se(state: &Path) -> Result<FileApplet, CliError> {
    let exists = || {
        CliError::usage(format!(
            "{} exists; refusing to overwrite a secure element",
            state.display()
        ))
    };
    let storage = match FileStorage::create(state, SE_STORAGE_BYTES) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A blank file and no key is what an `init` killed between its
            // two steps leaves (nothing was ever written to it): take it.
            let s = open_storage(state)?;
            let blank = read_file(state)?.iter().all(|&b| b == 0);
            if !blank || side(state, ".key").exists() {
                return Err(exists());
            }
            s
        }
        Err(e) => return Err(CliError::io(state, e)),
    };
    let mut key = [0u8; 32];
    OsEntropy.fill(&mut key);
    write_atomic(&side(state, ".key"), &key)?;
    Applet::boot(storage, Sealing::Aead(key), OsEntropy)
        .map_err(|e| CliError::failed(e.to_string()))
}

pub fn class_code(s: &str) -> Result<u8, CliError> {
    Ok(match s {
        "card" => device_class::CARD,
        "phone" => device_class::PHONE,
        "iot" => device_class::IOT,
        _ => {
            return Err(CliError::usage(format!(
                "unknown device class {s:?} (card, phone, iot)"
            )));
        }
    })
}

fn se_err(e: tally_wallet::WalletError) -> CliError {
    CliError::failed(se_text(&e))
}

/// An SE's refusal as its user reads it: what the code means (the code
/// registry's words, docs/CODES.md), the code, and what to do where there
/// is something to do. The SE itself answers only the code.
fn se_text(e: &tally_wallet::WalletError) -> String {
    match e {
        tally_wallet::WalletError::Refused { code } => {
            let meaning = tally_codes::lookup(*code).map_or("unknown code", |c| c.meaning);
            let hint = match *code {
                tally_codes::SE_LIMIT_OPEN_REQUESTS => {
                    "; `tally device sync` closes the requests nobody paid"
                }
                tally_codes::SE_CARDHOLDER_VERIFICATION_REQUIRED => "; give the PIN with --pin",
                // Each load takes a fresh offline key; a renewal gathers
                // the tokens under one and frees the others.
                tally_codes::SE_LIMIT_KEYS => "; `tally device renew` frees keys",
                tally_codes::SE_BAD_REQUEST_PARAMS => {
                    "; an amount of 0, more than the SE holds, or an empty account name?"
                }
                _ => "",
            };
            format!("the secure element refused: {meaning} (code {code}){hint}")
        }
        other => other.to_string(),
    }
}

/// An online command's failure, an SE refusal named as [`se_text`] does.
fn agent_text(e: &tally_wallet::agent::AgentError) -> String {
    match e {
        tally_wallet::agent::AgentError::Se(w) => se_text(w),
        other => other.to_string(),
    }
}

/// The request in flight, kept in `NAME.pending` (written and synced
/// before the request is sent, removed once its answer is in the SE).
pub struct PendingFile(PathBuf);

impl PendingFile {
    pub fn of(state: &Path) -> PendingFile {
        PendingFile(side(state, ".pending"))
    }
}

impl tally_wallet::agent::PendingStore for PendingFile {
    fn get(&mut self) -> Option<Vec<u8>> {
        std::fs::read(&self.0).ok()
    }
    fn put(&mut self, request: Option<&[u8]>) -> Result<(), tally_wallet::agent::BackendError> {
        let fail = |e: std::io::Error| tally_wallet::agent::BackendError {
            status: 0,
            code: tally_codes::NO_CODE,
            message: format!(
                "cannot record the pending request in {}: {e}",
                self.0.display()
            ),
        };
        match request {
            Some(bytes) => {
                use std::io::Write;
                let tmp = side(&self.0, ".tmp");
                let mut f = std::fs::File::create(&tmp).map_err(fail)?;
                f.write_all(bytes).map_err(fail)?;
                f.sync_all().map_err(fail)?;
                std::fs::rename(&tmp, &self.0).map_err(fail)?;
                if let Some(dir) = self.0.parent().filter(|d| !d.as_os_str().is_empty())
                    && let Ok(d) = std::fs::File::open(dir)
                {
                    let _ = d.sync_all();
                }
                Ok(())
            }
            None => match std::fs::remove_file(&self.0) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e)),
                _ => Ok(()),
            },
        }
    }
    /// `NAME.unsettled`: one transfer id (hex) per line.
    fn given_up(&mut self) -> Vec<Hash32> {
        std::fs::read_to_string(side(&self.0, ".unsettled"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| parse_hash(l.trim()).ok())
            .collect()
    }
    fn give_up(&mut self, transfer_id: Hash32) -> Result<(), tally_wallet::agent::BackendError> {
        let mut ids = self.given_up();
        if !ids.contains(&transfer_id) {
            ids.push(transfer_id);
        }
        let text: String = ids.iter().map(|h| format!("{h}\n")).collect();
        write_atomic(&side(&self.0, ".unsettled"), text.as_bytes()).map_err(|e| {
            tally_wallet::agent::BackendError {
                status: 0,
                code: tally_codes::NO_CODE,
                message: e.message,
            }
        })
    }
}

/// Runs `f` with an agent on the device, after finishing whatever an
/// interrupted command left (the pending request, unacknowledged
/// redemptions); what was finished is reported before `f`'s own output.
pub fn with_agent(
    state: &Path,
    f: impl FnOnce(&mut Agent<'_>, &[Finished]) -> Result<String, tally_wallet::agent::AgentError>,
) -> Result<String, CliError> {
    let cfg = DeviceConfig::load(state)?;
    let mut se = open_se(state)?;
    let mut backend = cfg.backend()?;
    let mut pending = PendingFile::of(state);
    let mut agent = Agent {
        se: &mut se,
        backend: &mut backend,
        se_id: cfg.se_id,
        pending: Some(&mut pending),
    };
    let finished = agent.resume().map_err(|e| {
        CliError::failed(format!(
            "an earlier operation is still pending and could not be finished: {} (run the command again)",
            agent_text(&e)
        ))
    })?;
    let mut out = String::new();
    for x in &finished {
        out.push_str(&format!("finished the interrupted {x} first\n"));
    }
    let r = f(&mut agent, &finished).map_err(|e| {
        // A request the wallet keeps (no answer, or "later") is not lost:
        // say so, whatever the back office said of this one attempt.
        let kept = tally_wallet::agent::PendingStore::get(&mut PendingFile::of(state)).is_some();
        let note = if kept {
            "; the request is kept and the next online command sends it again (`tally device status` shows it)"
        } else {
            ""
        };
        CliError::failed(format!("{}{note}", agent_text(&e)))
    })?;
    out.push_str(&r);
    Ok(out)
}

/// `tally device status`: the SE's state and what is pending.
pub fn status(state: &Path) -> Result<String, CliError> {
    let se = open_se(state)?;
    let s = se.status().map_err(|e| se_err(e.into()))?;
    let mut out = format!(
        "balance {} in {} tokens; epoch {}; unacknowledged payments {}; open requests {}\n",
        s.balance, s.tokens, s.epoch, s.unacked, s.open_requests
    );
    use tally_wallet::agent::PendingStore;
    match PendingFile::of(state).get() {
        Some(bytes) => {
            let what = tally_core::dcp::DeviceRequest::from_cbor(&bytes)
                .map(|r| Finished::Request(r.op).to_string())
                .unwrap_or_else(|_| "an unreadable request".into());
            out.push_str(&format!(
                "pending: {what} (request sent, answer not applied): the next online command resends it and applies the answer\n"
            ));
        }
        None => out.push_str("pending: nothing\n"),
    }
    let given_up = PendingFile::of(state).given_up();
    for o in se.outgoing() {
        if o.redemption && !o.acked && given_up.contains(&o.transfer_id) {
            out.push_str(&format!(
                "redemption of {} (transfer {}) refused for good by the back office: left for an operator\n",
                o.amount, o.transfer_id
            ));
        } else if o.redemption && !o.acked {
            out.push_str(&format!(
                "unsettled redemption of {} (transfer {}): the next online command redeems it\n",
                o.amount, o.transfer_id
            ));
        } else if !o.acked {
            out.push_str(&format!(
                "unacknowledged payment of {} (transfer {}): uploaded at the next sync\n",
                o.amount, o.transfer_id
            ));
        }
    }
    Ok(out.trim_end().to_string())
}

/// `tally manufacturer keygen --out OUT`: OUT.key (the secret seed, mode
/// 0600) and OUT.pub (the public key for `tally node --manufacturer`).
pub fn manufacturer_keygen(out: &Path) -> Result<String, CliError> {
    let key_path = side(out, ".key");
    let pub_path = side(out, ".pub");
    if key_path.exists() {
        return Err(CliError::usage(format!(
            "{} exists; refusing to overwrite a manufacturer key",
            key_path.display()
        )));
    }
    let mut seed = [0u8; 32];
    OsEntropy.fill(&mut seed);
    let key = SecretKey::from_seed(Suite::Ed25519, &seed)
        .ok_or_else(|| CliError::failed("could not derive a key"))?;
    write_secret(&key_path, &seed)?;
    write_atomic(&pub_path, &key.public().to_cbor())?;
    Ok(format!(
        "manufacturer key {} written to {} (public: {})",
        key.public().id(),
        key_path.display(),
        pub_path.display()
    ))
}

/// A secret file, readable by its owner only.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::io(path, e))?;
    f.write_all(bytes).map_err(|e| CliError::io(path, e))
}

/// `tally device init`'s arguments.
#[derive(clap::Args)]
pub struct InitOptions {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub node: String,
    #[arg(long, default_value = "phone")]
    pub class: String,
    #[arg(long)]
    pub account: String,
    /// The one-time enrolment code (`tally operator enrol ACCOUNT`).
    #[arg(long)]
    pub code: String,
    /// The root public key file (`tally node --root-out`): the SE's
    /// trust anchor, never taken from the network.
    #[arg(long)]
    pub root: PathBuf,
    /// The manufacturer's secret key file (`tally manufacturer keygen`).
    #[arg(long)]
    pub maker_key: PathBuf,
    #[arg(long, default_value = "tally-soft-se")]
    pub maker: String,
    /// Set the cardholder's PIN (4–12 characters).
    #[arg(long)]
    pub pin: Option<String>,
    /// The root's CA certificate (`tally tls init`'s ca.pem) to pin for an
    /// `https://` node; kept with the device's settings.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// How the device pays: offline (settled later), online (settled at
    /// once through the DCP) or auto (online when the DCP answers);
    /// `tally device route` changes it.
    #[arg(long, value_enum, default_value_t = Route::Offline)]
    pub route: Route,
}

pub fn init(state: &Path, o: &InitOptions) -> Result<String, CliError> {
    let class = class_code(&o.class)?;
    let root = PublicKey::from_cbor(&read_file(&o.root)?)
        .map_err(|e| CliError::usage(format!("{}: not a root key: {e}", o.root.display())))?;
    let seed: [u8; 32] = read_file(&o.maker_key)?
        .try_into()
        .map_err(|_| CliError::usage("manufacturer key file must hold 32 bytes"))?;
    let maker_key = SecretKey::from_seed(Suite::Ed25519, &seed)
        .ok_or_else(|| CliError::usage("not a manufacturer key"))?;
    let ca = match &o.ca {
        Some(p) => Some(
            String::from_utf8(read_file(p)?)
                .map_err(|_| CliError::usage(format!("{}: not a PEM file", p.display())))?,
        ),
        None => None,
    };
    let mut backend = backend(&o.node, ca.as_deref())?;
    if state.exists() && side(state, ".json").exists() {
        return resume_init(state, o, &maker_key, &mut backend);
    }
    let mut se = create_se(state)?;
    let mut cfg = DeviceConfig {
        node: o.node.clone(),
        se_id: Hash32([0; 32]),
        ca,
        route: o.route,
    };
    // Err((message, whether the DCP may have registered the SE)).
    let onboarded = (|| -> Result<Hash32, (String, bool)> {
        let cert = tally_wallet::agent::manufacture(&mut se, class, root, &maker_key, &o.maker)
            .map_err(|e| (e.to_string(), false))?;
        if let Some(pin) = &o.pin {
            SeLink::change_pin(&mut se, None, pin.as_bytes())
                .map_err(|e| (e.to_string(), false))?;
        }
        // The settings go down before the SE is registered (its id is its
        // attestation key's): an `init` stopped once the DCP may have
        // registered it leaves a device that `init` run again finishes,
        // not one no command can use while its enrolment code is spent.
        cfg.se_id = cert.attestation_key.id();
        cfg.save(state)
            .map_err(|e| (e.message().to_string(), false))?;
        Agent::onboard(&mut se, &mut backend, cert, &o.account, &o.code)
            .map(|a| a.se_id)
            .map_err(|e| {
                let refused = match &e {
                    tally_wallet::agent::AgentError::Backend(b) => b.is_final(),
                    _ => false,
                };
                (e.to_string(), !refused)
            })
    })();
    match onboarded {
        Ok(se_id) if se_id == cfg.se_id => {}
        Ok(_) => {
            return Err(CliError::failed(
                "the DCP registered the SE under another id than its attestation key's",
            ));
        }
        Err((e, true)) => {
            return Err(CliError::failed(format!(
                "onboarding did not finish: {e}; the DCP may have registered the SE, so it is kept: run the same `tally device init` again to finish"
            )));
        }
        Err((e, false)) => {
            // Nothing was registered under a usable device: remove the
            // half-made SE so `init` can simply be run again.
            drop(se);
            let _ = std::fs::remove_file(side(state, ".json"));
            let _ = std::fs::remove_file(state);
            let _ = std::fs::remove_file(side(state, ".key"));
            return Err(CliError::failed(format!(
                "onboarding failed, nothing kept: {e}"
            )));
        }
    }
    Ok(format!(
        "device {} registered for account {}; SE id {}",
        state.display(),
        o.account,
        cfg.se_id
    ))
}

/// `init` again on an SE whose settings are written: the earlier `init`
/// stopped after them (killed, or the registration's answer lost), or
/// finished. The DCP's registration is idempotent for the same SE and
/// code and the SE's enrolment signature is deterministic, so both are
/// simply made again, then the sync. Nothing new is manufactured.
fn resume_init(
    state: &Path,
    o: &InitOptions,
    maker_key: &SecretKey,
    backend: &mut tally_api::HttpBackend,
) -> Result<String, CliError> {
    let cfg = DeviceConfig::load(state)?;
    let mut se = open_se(state)?;
    let attestation = se
        .attestation_public()
        .map_err(|e| CliError::failed(format!("the SE is not personalised: {e}")))?;
    if attestation.id() != cfg.se_id {
        return Err(CliError::usage(format!(
            "{} holds the settings of another SE; refusing to touch it",
            side(state, ".json").display()
        )));
    }
    let class = se
        .status()
        .map_err(|e| CliError::failed(format!("the SE is not personalised: {e}")))?
        .device_class;
    let cert = tally_core::dcp::MakerCertificate::sign(maker_key, attestation, class, &o.maker);
    let se_id = Agent::onboard(&mut se, backend, cert, &o.account, &o.code)
        .map(|a| a.se_id)
        .map_err(|e| {
            CliError::failed(format!(
                "finishing the interrupted init: {e} (run the same command again)"
            ))
        })?;
    Ok(format!(
        "finished the interrupted init of {}\ndevice {} registered for account {}; SE id {}",
        state.display(),
        state.display(),
        o.account,
        se_id
    ))
}

/// Sets the first PIN (`old` = None) or changes it.
pub fn set_pin(state: &Path, old: Option<&str>, new: &str) -> Result<String, CliError> {
    let mut se = open_se(state)?;
    SeLink::change_pin(&mut se, old.map(str::as_bytes), new.as_bytes()).map_err(se_err)?;
    Ok("PIN set".into())
}

pub fn request(state: &Path, amount: u64, out: &Path) -> Result<String, CliError> {
    let mut se = open_se(state)?;
    let r = se
        .create_request(Amount(amount))
        .map_err(|e| se_err(e.into()))?;
    write_atomic(out, &r.to_cbor())?;
    Ok(format!("request for {amount} written to {}", out.display()))
}

/// `tally device route MODE`: how the device pays from now on.
pub fn set_route(state: &Path, route: Route) -> Result<String, CliError> {
    let mut cfg = DeviceConfig::load(state)?;
    cfg.route = route;
    cfg.save(state)?;
    Ok(format!("route {}", route.name()))
}

/// `tally device pay`: the SE pays the request (the same command and the
/// same SE authorisation on every route). On the online route (or auto,
/// when the DCP answers) the payment is then settled at once: the SE's
/// payment log is uploaded through the DCP and the central bank registers
/// the spend before the command returns. The online route refuses to pay
/// — nothing changes — when the DCP cannot be reached; a settlement that
/// fails after the SE paid is reported, and the payment settles later as
/// an offline payment does (the package is written either way: it is the
/// payee's).
pub fn pay(
    state: &Path,
    request: &Path,
    out: &Path,
    pin: Option<&str>,
) -> Result<String, CliError> {
    let req = Request::from_cbor(&read_file(request)?)
        .map_err(|e| CliError::failed(format!("{}: {e}", request.display())))?;
    let cfg = DeviceConfig::load(state)?;
    let online = match cfg.route {
        Route::Offline => false,
        Route::Online | Route::Auto => {
            let reachable = tally_wallet::agent::Backend::trust(&mut cfg.backend()?).is_ok();
            if !reachable && cfg.route == Route::Online {
                return Err(CliError::failed(format!(
                    "route online: the DCP at {} cannot be reached; nothing was paid (`tally device route auto` pays offline when it cannot)",
                    cfg.node
                )));
            }
            reachable
        }
    };
    let mut se = open_se(state)?;
    if let Some(pin) = pin {
        SeLink::verify_pin(&mut se, pin.as_bytes()).map_err(se_err)?;
    }
    // A phone's or IoT device's SE under a confidential policy hands this
    // process (the device's application processor) the range proof to
    // make and checks it before it signs; a card's SE proves itself
    // (decision 0032).
    let (pkg, prover) =
        tally_wallet::pay_proving_here(&mut se, &req, &mut OsEntropy).map_err(se_err)?;
    write_atomic(out, &pkg).map_err(|e| {
        CliError::failed(format!(
            "the secure element paid {}, but the package could not be written: {}; run the same `pay` with a writable --out: the SE gives the same package again, nothing is paid twice",
            req.amount,
            e.message()
        ))
    })?;
    drop(se);
    let mut paid = format!(
        "paid {}: package of {} bytes written to {}",
        req.amount,
        pkg.len(),
        out.display()
    );
    if prover == tally_wallet::Prover::ApplicationProcessor {
        paid.push_str(" (range proof made on this device's processor, checked by its SE)");
    }
    // A stream request: the payment was its OPEN.
    if let (Some(ask), Ok(p)) = (req.stream, tally_core::Package::from_cbor(&pkg)) {
        let id = tally_core::stream::stream_id(&p.transfer.id(), 0);
        paid.push_str(&format!(
            "; stream {id} opened: {} ticks at {}",
            ask.ticks_max, ask.price
        ));
    }
    if !online {
        return Ok(paid);
    }
    let settled = with_agent(state, |a, _| {
        a.sync().map(|r| {
            format!(
                "settled at the ledger online (uploaded {} packages, double spends found {})",
                r.uploaded, r.double_spends
            )
        })
    });
    Ok(match settled {
        Ok(s) => format!("{paid}; {}", s.lines().last().unwrap_or_default()),
        Err(e) => format!(
            "{paid}; not settled online yet ({}): it settles later, as an offline payment does",
            e.message()
        ),
    })
}

pub fn receive(state: &Path, package: &Path, out: &Path) -> Result<String, CliError> {
    let bytes = read_file(package)?;
    let mut se = open_se(state)?;
    // What the SE credited (in confidential mode the package shows only
    // a commitment; the SE opened its own output).
    let before = SeLink::status(&mut se).map_err(se_err)?.balance;
    let r = SeLink::receive(&mut se, &bytes).map_err(se_err)?;
    let after = SeLink::status(&mut se).map_err(se_err)?.balance;
    let amount = after.0.saturating_sub(before.0);
    // A stream OPEN credits nothing yet: the stream is what was received.
    let id = tally_core::stream::stream_id(&r.transfer_id, 0);
    let stream = se
        .streams()
        .1
        .iter()
        .find(|s| s.id == id)
        .map(|s| (s.ticks_max, s.price));
    let what = match stream {
        Some((ticks, price)) => format!("stream {id} opened: {ticks} ticks at {price}"),
        // A package received before: the SE answers the same receipt and
        // credits nothing again (a payment is never of 0).
        None if amount == 0 => String::from("already received (nothing credited again)"),
        None => format!("received {amount}"),
    };
    write_atomic(out, &r.to_cbor()).map_err(|e| {
        CliError::failed(format!(
            "the secure element took it ({what}), but the receipt could not be written: {}; run the same `receive` with a writable --out: the SE gives the same receipt, nothing is credited twice",
            e.message()
        ))
    })?;
    Ok(format!("{what}; receipt written to {}", out.display()))
}

/// `tally device stream request`: the payee's signed stream request.
pub fn stream_request(
    state: &Path,
    price: u64,
    ticks: u32,
    out: &Path,
) -> Result<String, CliError> {
    let mut se = open_se(state)?;
    let ask = tally_core::stream::StreamAsk {
        price: Amount(price),
        ticks_max: ticks,
    };
    let r = se
        .create_stream_request(ask)
        .map_err(|e| se_err(e.into()))?;
    write_atomic(out, &r.to_cbor())?;
    Ok(format!(
        "stream request for {ticks} ticks at {price} ({} locked) written to {}",
        r.amount,
        out.display()
    ))
}

/// `tally device stream release`: the payer's SE records tick K, then
/// hands out its element.
pub fn stream_release(state: &Path, id: &str, tick: u32, out: &Path) -> Result<String, CliError> {
    let id = parse_hash(id)?;
    let mut se = open_se(state)?;
    let e = se.release_tick(&id, tick).map_err(|e| se_err(e.into()))?;
    write_atomic(out, &e.to_cbor())?;
    Ok(format!(
        "tick {tick} released; element written to {}",
        out.display()
    ))
}

/// `tally device stream accept`: the payee's SE takes tick K's element.
pub fn stream_accept(
    state: &Path,
    id: &str,
    tick: u32,
    element: &Path,
) -> Result<String, CliError> {
    let id = parse_hash(id)?;
    let e = Hash32::from_cbor(&read_file(element)?)
        .map_err(|e| CliError::failed(format!("{}: {e}", element.display())))?;
    let mut se = open_se(state)?;
    let v = se.accept_tick(&id, tick, e).map_err(|e| se_err(e.into()))?;
    Ok(format!("tick {tick} taken; streamed {v}"))
}

/// `tally device stream close`: whichever side this device is on.
pub fn stream_close(state: &Path, id: &str) -> Result<String, CliError> {
    let id = parse_hash(id)?;
    let mut se = open_se(state)?;
    let (out, inn) = se.streams();
    let paying = out
        .iter()
        .find(|s| s.id == id)
        .map(|s| (s.price, s.ticks_max));
    let paid = inn.iter().any(|s| s.id == id);
    if let Some((price, ticks_max)) = paying {
        let released = se.close_stream_out(&id).map_err(|e| se_err(e.into()))?;
        let refund = price.0 * u64::from(ticks_max - released);
        return Ok(if refund == 0 {
            format!("stream closed after {released} ticks released; every tick released, no refund")
        } else {
            format!("stream closed after {released} ticks released; refund {refund} (a token)")
        });
    }
    if paid {
        let c = se.close_stream_in(&id).map_err(|e| se_err(e.into()))?;
        return Ok(if c.ticks == 0 {
            String::from("stream closed after 0 ticks taken; nothing to claim")
        } else {
            format!(
                "stream closed after {} ticks taken; claim {} (a token)",
                c.ticks, c.value
            )
        });
    }
    Err(se_err(tally_se::SeError::UnknownStream.into()))
}

/// `tally device stream list`.
pub fn stream_list(state: &Path) -> Result<String, CliError> {
    let se = open_se(state)?;
    let (out, inn) = se.streams();
    let mut text = String::from(
        "side    stream                                                            ticks      price  closed\n",
    );
    for s in out {
        text.push_str(&format!(
            "paying  {} {:>5}/{:<5} {:>5}  {}\n",
            s.id, s.released, s.ticks_max, s.price, s.closed
        ));
    }
    for s in inn {
        text.push_str(&format!(
            "paid    {} {:>5}/{:<5} {:>5}  {}\n",
            s.id, s.ticks, s.ticks_max, s.price, s.closed
        ));
    }
    Ok(text)
}

pub fn ack(state: &Path, receipt: &Path) -> Result<String, CliError> {
    let r = Receipt::from_cbor(&read_file(receipt)?)
        .map_err(|e| CliError::failed(format!("{}: {e}", receipt.display())))?;
    let mut se = open_se(state)?;
    SeLink::ack(&mut se, &r).map_err(se_err)?;
    Ok(format!("payment {} acknowledged", r.transfer_id))
}

pub fn balance(state: &Path) -> Result<String, CliError> {
    let se = open_se(state)?;
    let s = se.status().map_err(|e| se_err(e.into()))?;
    Ok(format!(
        "balance {} in {} tokens; epoch {}; counter {}; unacknowledged {}; spent since sync {}",
        s.balance, s.tokens, s.epoch, s.counter, s.unacked, s.spent_since_sync
    ))
}

pub fn history(state: &Path) -> Result<String, CliError> {
    let se = open_se(state)?;
    let mut out = String::from(
        "transfer                                                          amount  acked  kind\n",
    );
    for o in se.outgoing() {
        out.push_str(&format!(
            "{} {:>7}  {:<5}  {}\n",
            o.transfer_id,
            o.amount,
            o.acked,
            if o.redemption {
                "redemption"
            } else {
                "payment"
            }
        ));
    }
    for t in se.tokens() {
        out.push_str(&format!(
            "token {}:{} value {} ancestry {}\n",
            t.outpoint.record, t.outpoint.index, t.value, t.lineage_len
        ));
    }
    Ok(out)
}
