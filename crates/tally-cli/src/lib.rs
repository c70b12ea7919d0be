//! `tally`: one binary for every role. `tally demo` and `tally bench` are
//! development tools (feature `dev-tools`, fixed-seed test kits): a
//! production build has neither.
//!
//! Exit codes: 0 success; 1 the operation failed (the message says why);
//! 2 usage error; 3 `package verify` found the package invalid (the
//! message names the numbered rule).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "dev-tools")]
mod bench;
#[cfg(feature = "dev-tools")]
mod demo;
mod device;
mod node;
mod package;
mod parties;
pub mod pkcs11;
mod supervisor;
mod tls;
pub mod worker;

/// A failure with its exit code.
#[derive(Debug)]
pub struct CliError {
    exit: u8,
    message: String,
}

impl CliError {
    /// What went wrong, as printed.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn usage(m: impl Into<String>) -> Self {
        CliError {
            exit: 2,
            message: m.into(),
        }
    }
    pub fn failed(m: impl Into<String>) -> Self {
        CliError {
            exit: 1,
            message: m.into(),
        }
    }
    pub fn rule(_code: u16, m: impl Into<String>) -> Self {
        CliError {
            exit: 3,
            message: m.into(),
        }
    }
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError {
                exit: 0,
                message: String::new(),
            };
        }
        CliError {
            exit: 1,
            message: format!("{}: {e}", path.display()),
        }
    }
}

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Tally: offline central bank digital currency"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tell the whole story in one command (a node on a temporary SQLite file).
    #[cfg(feature = "dev-tools")]
    Demo {
        #[command(subcommand)]
        story: Option<Story>,
    },
    /// Run every back-office role in one process.
    Node {
        /// `postgres://…` or an SQLite file path (default ./tally-node.sqlite).
        #[arg(long)]
        database_url: Option<String>,
        /// Address to listen on (default 127.0.0.1:8080; port 0 picks one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Bearer token for operator and central-bank endpoints.
        #[arg(long)]
        operator_token: Option<String>,
        /// The DCP's own database (default: for an SQLite central store
        /// FILE, FILE.dcp beside it; for PostgreSQL, the same database).
        /// It never holds offline history.
        #[arg(long)]
        dcp_database_url: Option<String>,
        /// The MDS database (default: the central database).
        #[arg(long)]
        mds_database_url: Option<String>,
        /// The supervisors' key set (joint.cbor from `tally supervisor
        /// keygen`); escrows in certificates are encrypted to it. Without
        /// it the node uses a development key whose secret is public.
        #[arg(long)]
        escrow_key: Option<PathBuf>,
        /// An SE manufacturer's public key file (`tally manufacturer keygen`)
        /// whose attestation certificates enrolment accepts; repeatable.
        #[arg(long = "manufacturer")]
        manufacturers: Vec<PathBuf>,
        /// Write the root public key here at start: the trust anchor SEs
        /// are personalised with (`tally device init --root`).
        #[arg(long)]
        root_out: Option<PathBuf>,
        /// The key directory (created, mode 0700, on first start): the
        /// node's keys as files of mode 0600 (root.key, settlement.key,
        /// dcp.key, opening.key). Default for an SQLite database FILE:
        /// FILE.keys; required with PostgreSQL. With --pkcs11-module it
        /// holds only the opening key.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so): the root,
        /// settlement and DCP signing keys are then Ed25519 keys in its token.
        #[arg(long)]
        pkcs11_module: Option<PathBuf>,
        /// The token's label (with --pkcs11-module).
        #[arg(long)]
        pkcs11_token: Option<String>,
        /// File holding the token's user PIN; without it the PIN is read
        /// from the environment variable TALLY_PKCS11_PIN.
        #[arg(long)]
        pkcs11_pin_file: Option<PathBuf>,
        /// Labels of the root, settlement and DCP keys in the token
        /// (default tally-root, tally-settlement, tally-dcp).
        #[arg(long)]
        pkcs11_root_label: Option<String>,
        #[arg(long)]
        pkcs11_settlement_label: Option<String>,
        #[arg(long)]
        pkcs11_dcp_label: Option<String>,
        /// Amounts on the wire: `transparent` (the default) or
        /// `confidential` (Pedersen commitments and range proofs; the
        /// policy then carries settlement's audit key, decision 0019).
        /// Switching to confidential is one way: the signed policy keeps it.
        #[arg(long)]
        amount_mode: Option<String>,
        /// Configuration file (KEY = value lines: database_url, dcp_database_url, mds_database_url, escrow_key, listen, operator_token, body_limit_bytes, manufacturers (comma-separated files), root_out, keys, pkcs11_module, pkcs11_token, pkcs11_pin_file, pkcs11_root_label, pkcs11_settlement_label, pkcs11_dcp_label, amount_mode).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The central bank alone (issue 11): the DCPs' settlement accounts,
    /// settlement, the directory and the MDS, served over mutual TLS to
    /// DCPs and operators with role certificates (`tally tls init`).
    Central {
        /// `postgres://…` or an SQLite file path.
        #[arg(long)]
        database_url: String,
        /// The MDS database (default: the central database).
        #[arg(long)]
        mds_database_url: Option<String>,
        /// The central bank's key directory (root, settlement, opening keys).
        #[arg(long)]
        keys: PathBuf,
        /// The TLS directory of `tally tls init` (ca.pem, central.pem/key).
        #[arg(long)]
        tls: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// A DCP the central bank trusts: ID=PUBLIC_KEY_FILE (`tally keys
        /// public --role dcp`); repeatable.
        #[arg(long = "dcp", value_parser = parties::parse_dcp)]
        dcps: Vec<(u32, PathBuf)>,
        /// An SE manufacturer's public key file; repeatable.
        #[arg(long = "manufacturer")]
        manufacturers: Vec<PathBuf>,
        /// Write the root public key here at start (`tally device init --root`).
        #[arg(long)]
        root_out: Option<PathBuf>,
        /// The MDS runs as its own process (`tally mds`), which pulls the
        /// outbox; without it the MDS runs in this process.
        #[arg(long)]
        external_mds: bool,
        /// The supervisors' key set (joint.cbor of `tally supervisor
        /// keygen`); without it, the development key whose secret is public.
        #[arg(long)]
        escrow_key: Option<PathBuf>,
    },
    /// The MDS alone (issue 11): pulls settled records from the central
    /// bank's outbox (mutual TLS, `mds` role) into its own database and
    /// serves operators its alerts and indicators (mutual TLS).
    Mds {
        /// `postgres://…` or an SQLite file path: the MDS's own database.
        #[arg(long)]
        database_url: String,
        /// The central bank (`https://HOST:PORT`).
        #[arg(long)]
        central: String,
        /// The TLS directory (ca.pem, mds.pem/key).
        #[arg(long)]
        tls: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8446")]
        listen: SocketAddr,
    },
    /// One DCP alone (issue 11): its devices and customers' accounts,
    /// reaching the central bank over mutual TLS as `dcp-ID`; devices reach
    /// it over TLS with the root's CA pinned.
    Dcp {
        /// The DCP's id in the central bank's trust list.
        #[arg(long)]
        id: u32,
        /// `postgres://…` or an SQLite file path: this DCP's own database.
        #[arg(long)]
        database_url: String,
        /// The DCP's key directory (dcp.key).
        #[arg(long)]
        keys: PathBuf,
        /// The TLS directory (ca.pem, dcp-ID.pem/key, api.pem/key).
        #[arg(long)]
        tls: PathBuf,
        /// The central bank (`https://HOST:PORT`).
        #[arg(long)]
        central: String,
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: SocketAddr,
        /// Bearer token of the DCP's operator endpoints (deposits, enrolment codes).
        #[arg(long)]
        operator_token: Option<String>,
        /// Seconds a debit (load, interbank payment) may stay in flight,
        /// waiting for its device's retry, before the DCP sends its central
        /// call again itself.
        #[arg(long, default_value_t = 30)]
        in_flight_after_s: i64,
        /// Seconds a load the DCP finished itself waits for its device to
        /// collect the Issue before the DCP cancels it and returns the
        /// amount to the account (default: 7 days).
        #[arg(long, default_value_t = crate::parties::RECLAIM_AFTER_S)]
        reclaim_after_s: i64,
    },
    /// The central bank's operator calls (mutual TLS with the operator's
    /// role certificate of `tally tls init`).
    Cb {
        /// The central bank (`https://HOST:PORT`).
        #[arg(long)]
        central: String,
        /// The MDS, for `alerts` and `indicators`: its key is checked
        /// against the central bank's role revocation list. Without it,
        /// `--central` names the MDS and the list it relays is used.
        #[arg(long)]
        mds: Option<String>,
        /// The TLS directory (ca.pem, operator.pem/key).
        #[arg(long)]
        tls: PathBuf,
        #[command(subcommand)]
        cmd: CbCmd,
    },
    /// Back-office keys: a role's public key; keys in a PKCS#11 token (HSM).
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// An SE manufacturer: its key pair (certifies SE attestation keys at manufacture).
    Manufacturer {
        #[command(subcommand)]
        cmd: ManufacturerCmd,
    },
    /// A device whose secure element is a file.
    Device {
        /// The SE state file (NAME; NAME.key and NAME.json sit beside it).
        #[arg(long, global = true, default_value = "device.se")]
        state: PathBuf,
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// Inspect or verify an offline payment package.
    Package {
        #[command(subcommand)]
        cmd: PackageCmd,
    },
    /// Central-bank and DCP operator calls against a node.
    Operator {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        node: String,
        #[arg(long, env = "TALLY_OPERATOR_TOKEN")]
        token: String,
        /// The root's CA certificate to pin for an `https://` node.
        #[arg(long)]
        ca: Option<PathBuf>,
        #[command(subcommand)]
        cmd: OperatorCmd,
    },
    /// Back-office throughput (settlement, ledger); prints a markdown table.
    #[cfg(feature = "dev-tools")]
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// Escrow supervisors: k-of-n key setup, opening requests, decryption shares, audit log.
    Supervisor(supervisor::SupervisorCmd),
    /// A settlement worker process: settles the central bank's settlement
    /// queue (several processes may share one PostgreSQL database).
    SettleWorker(worker::WorkerArgs),
    /// TLS certificates of the authenticated links (CA from the root key).
    #[command(subcommand)]
    Tls(tls::TlsCmd),
}

#[cfg(feature = "dev-tools")]
#[derive(Subcommand, Clone, Copy)]
enum Story {
    /// Offline payments only, no server.
    Offline,
}

#[derive(Subcommand)]
enum CbCmd {
    /// Mint AMOUNT into DCP `--dcp`'s settlement account (booked as the
    /// DCP's own money).
    Mint {
        #[arg(long)]
        dcp: u32,
        amount: u64,
        #[arg(long)]
        idempotency_key: String,
    },
    /// Trust an SE manufacturer's public key file for enrolment.
    Manufacturer { file: PathBuf },
    /// Revoke a party's role certificate (a PEM file, e.g. `dcp-2.pem`):
    /// the central bank refuses its key from now on — new connections at
    /// the handshake, open ones at their next request. Permanent; issue
    /// the party a new key with `tally tls init`.
    RevokeCert { file: PathBuf },
    /// A DCP's settlement account.
    Dcp { id: u32 },
    /// The ledger invariant.
    Invariant,
    /// Double spends found so far.
    DoubleSpends,
    /// Advance the epoch.
    AdvanceEpoch,
    /// The MDS's alerts (`--central` names the MDS: `tally mds`'s URL).
    Alerts,
    /// The MDS's indicators (`--central` names the MDS).
    Indicators,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Write a role's public key (CBOR) from a key directory, creating
    /// the key if the directory has none (for `tally central --dcp`).
    Public {
        #[arg(long)]
        keys: PathBuf,
        /// root, settlement or dcp.
        #[arg(long)]
        role: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate Ed25519 key pairs in a PKCS#11 token (private keys
    /// sensitive, never extractable) for `tally node --pkcs11-module`.
    /// Prints each label and the hex of its public key's CBOR.
    Pkcs11Generate {
        #[arg(long)]
        module: PathBuf,
        #[arg(long)]
        token: String,
        /// File holding the user PIN (else TALLY_PKCS11_PIN).
        #[arg(long)]
        pin_file: Option<PathBuf>,
        /// Key label; repeatable (default: tally-root, tally-settlement, tally-dcp).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Also write LABEL.pub (public key CBOR, as `--root` files) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ManufacturerCmd {
    /// Writes OUT.key (secret, mode 0600) and OUT.pub (for `tally node --manufacturer`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Manufacture a new SE (personalised with the root from a file, its
    /// attestation key certified with the manufacturer's key) and enrol
    /// it for an account with the account's one-time code.
    Init(device::InitOptions),
    /// Set the first PIN, or change it with --old.
    Pin {
        new: String,
        #[arg(long)]
        old: Option<String>,
    },
    /// Pay another account online (debits the account; needs the PIN).
    PayOnline {
        #[arg(long)]
        to: String,
        amount: u64,
        #[arg(long)]
        pin: Option<String>,
    },
    /// Register (again) — same as the registration inside init; idempotent.
    Register,
    /// Load value from the account into the SE.
    Load { amount: u64 },
    /// Payee: write a payment request.
    Request {
        #[arg(long)]
        amount: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// How the device pays from now on: offline (settled later), online
    /// (settled at once through the DCP; refuses to pay without it) or
    /// auto (online when the DCP answers).
    Route {
        #[arg(value_enum)]
        route: device::Route,
    },
    /// Payer: pay a request, write the package (and, on the online route,
    /// settle it at once).
    Pay {
        #[arg(long)]
        request: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Cardholder verification, needed above the policy's no-PIN limits.
        #[arg(long)]
        pin: Option<String>,
    },
    /// Payee: verify and store a package, write the receipt.
    Receive {
        #[arg(long)]
        package: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Payer: accept the payee's receipt.
    Ack {
        #[arg(long)]
        receipt: PathBuf,
    },
    /// Upload the payment log, fetch policy, revocations and new keys.
    Sync,
    /// Exchange every token for one fresh token of the same value.
    Renew,
    /// Move value from the SE back to the account.
    Unload { amount: u64 },
    /// Balance held in the SE.
    Balance,
    /// The SE's state and any operation an interruption left pending.
    Status,
    /// Account balance at the DCP.
    Account,
    /// Payment log (payments not yet acknowledged, and redemptions until
    /// the next sync: an acknowledged payment leaves the SE's log) and
    /// tokens.
    History,
    /// Payment streams (decision 0020): the payee writes a stream request,
    /// the payer pays it with `pay` (the OPEN locks ticks × price for the
    /// payee), the payee `receive`s and the payer `ack`s as for any
    /// payment; then one element per tick, one hash on each SE; either
    /// side closes offline and its share becomes a token.
    Stream {
        #[command(subcommand)]
        cmd: StreamCmd,
    },
}

#[derive(Subcommand)]
enum StreamCmd {
    /// Payee: write a stream request for TICKS ticks at PRICE each.
    Request {
        #[arg(long)]
        price: u64,
        #[arg(long)]
        ticks: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Payer: release tick K of stream ID (recorded in the SE before the
    /// element leaves it); write the element.
    Release {
        #[arg(long)]
        id: String,
        #[arg(long)]
        tick: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Payee: take the element of tick K of stream ID (one hash against the
    /// element held; a replayed, skipped or forged one is refused).
    Accept {
        #[arg(long)]
        id: String,
        #[arg(long)]
        tick: u32,
        #[arg(long)]
        element: PathBuf,
    },
    /// Either side: close stream ID; the claim (payee) or refund (payer)
    /// becomes a token in the same SE command.
    Close {
        #[arg(long)]
        id: String,
    },
    /// The streams this device pays and is paid by.
    List,
}

#[derive(Subcommand)]
enum PackageCmd {
    /// Human-readable decode.
    Inspect { file: PathBuf },
    /// Full offline verification; exit 0 only when valid.
    Verify {
        file: PathBuf,
        /// Trust bundle (GET /v1/trust).
        #[arg(long)]
        trust: PathBuf,
        /// The payee's request (checks payee, amount and nonce).
        #[arg(long)]
        request: Option<PathBuf>,
        #[arg(long)]
        epoch: Option<u32>,
        #[arg(long, default_value_t = 32)]
        budget: usize,
    },
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// DCP: its book of customers' accounts against its settlement
    /// account at the central bank ("matches" when nothing is in flight).
    Reconcile,
    /// DCP: a customer's account balance.
    Balance {
        account: String,
    },
    Mint {
        amount: u64,
        #[arg(long)]
        idempotency_key: String,
    },
    Deposit {
        account: String,
        amount: u64,
        #[arg(long)]
        idempotency_key: String,
    },
    /// DCP: a one-time enrolment code for an account (deliver it out of band).
    Enrol {
        account: String,
    },
    Invariant,
    AdvanceEpoch,
    /// Save the trust bundle (root key, policy, revocation list) to a file.
    Trust {
        out: PathBuf,
    },
    /// MDS alerts (id, kind, severity, state, offender pseudonym, evidence).
    Alerts {
        #[arg(long)]
        json: bool,
    },
    /// Move an alert along its lifecycle (escrow_opened, device_revoked, closed).
    Alert {
        id: i64,
        #[arg(long)]
        to: String,
        #[arg(long)]
        note: String,
    },
    /// The escrow ciphertext (hex) in the settled certificate of a pseudonym (key id hex).
    Escrow {
        key_id: String,
        /// Also write it to this file (for `tally supervisor request-opening --escrow-file`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Containment: revoke the SE an opening named (identity digest from
    /// `tally supervisor combine`) and list its pseudonyms.
    Revoke {
        #[arg(long)]
        id_digest: String,
        /// Pseudonym key ids (hex) to put on the revocation list.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        #[arg(long)]
        reason: String,
        /// Alert to move to device_revoked.
        #[arg(long)]
        alert: Option<i64>,
        /// The supervisors' audit log holding the opening (required by a
        /// node started with --escrow-key).
        #[arg(long, requires = "request")]
        audit_log: Option<PathBuf>,
        /// The opening request's id in that log.
        #[arg(long, requires = "audit_log")]
        request: Option<String>,
    },
    /// Econometric indicators (GET /mds/indicators).
    Indicators,
}

/// The `tally` command line: parses the arguments, runs the command and
/// maps its result to the documented exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => {
            if !out.is_empty() {
                let _ = writeln!(std::io::stdout(), "{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if e.exit != 0 {
                let _ = writeln!(std::io::stderr(), "tally: {}", e.message);
            }
            ExitCode::from(e.exit)
        }
    }
}

fn setting(flag: Option<String>, key: &str, file: &[(String, String)], default: &str) -> String {
    flag.or_else(|| std::env::var(format!("TALLY_{}", key.to_uppercase())).ok())
        .or_else(|| file.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        .unwrap_or_else(|| default.to_string())
}

fn run(cli: Cli) -> Result<String, CliError> {
    match cli.command {
        #[cfg(feature = "dev-tools")]
        Command::Demo { story } => match story {
            Some(Story::Offline) => demo::offline()
                .map(|_| String::new())
                .map_err(|e| CliError::failed(e.to_string())),
            None => demo::full().map(|_| String::new()),
        },
        Command::Node {
            database_url,
            dcp_database_url,
            mds_database_url,
            escrow_key,
            listen,
            operator_token,
            manufacturers,
            root_out,
            keys,
            pkcs11_module,
            pkcs11_token,
            pkcs11_pin_file,
            pkcs11_root_label,
            pkcs11_settlement_label,
            pkcs11_dcp_label,
            amount_mode,
            config,
        } => {
            init_logs();
            let file = match &config {
                Some(p) => node::read_config(p)?,
                None => Vec::new(),
            };
            let listen = setting(
                listen.map(|a| a.to_string()),
                "listen",
                &file,
                "127.0.0.1:8080",
            );
            let token = setting(operator_token, "operator_token", &file, "");
            if token.is_empty() {
                return Err(CliError::usage(
                    "an operator token is required (--operator-token, TALLY_OPERATOR_TOKEN or the config file)",
                ));
            }
            let database_url = setting(database_url, "database_url", &file, "tally-node.sqlite");
            let dcp_database_url = setting(dcp_database_url, "dcp_database_url", &file, "");
            let mds_database_url = setting(mds_database_url, "mds_database_url", &file, "");
            let escrow_key = setting(
                escrow_key.map(|p| p.display().to_string()),
                "escrow_key",
                &file,
                "",
            );
            let mut manufacturers = manufacturers;
            let listed = setting(None, "manufacturers", &file, "");
            manufacturers.extend(
                listed
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
            );
            let root_out = setting(
                root_out.map(|p| p.display().to_string()),
                "root_out",
                &file,
                "",
            );
            let path_setting = |flag: Option<PathBuf>, key: &str| {
                setting(flag.map(|p| p.display().to_string()), key, &file, "")
            };
            let keys_dir = path_setting(keys, "keys");
            let keys_dir = if keys_dir.is_empty() {
                node::KeyOptions::default_dir(&database_url).ok_or_else(|| {
                    CliError::usage("--keys DIR is required with a PostgreSQL database")
                })?
            } else {
                PathBuf::from(keys_dir)
            };
            let module = path_setting(pkcs11_module, "pkcs11_module");
            let pkcs11 = if module.is_empty() {
                None
            } else {
                let token = setting(pkcs11_token, "pkcs11_token", &file, "");
                if token.is_empty() {
                    return Err(CliError::usage(
                        "--pkcs11-module needs --pkcs11-token LABEL",
                    ));
                }
                let pin_file = path_setting(pkcs11_pin_file, "pkcs11_pin_file");
                Some((
                    pkcs11::TokenOptions {
                        module: PathBuf::from(module),
                        token,
                        pin_file: (!pin_file.is_empty()).then(|| PathBuf::from(pin_file)),
                    },
                    pkcs11::Labels {
                        root: setting(
                            pkcs11_root_label,
                            "pkcs11_root_label",
                            &file,
                            pkcs11::ROOT_LABEL,
                        ),
                        settlement: setting(
                            pkcs11_settlement_label,
                            "pkcs11_settlement_label",
                            &file,
                            pkcs11::SETTLEMENT_LABEL,
                        ),
                        dcp: setting(
                            pkcs11_dcp_label,
                            "pkcs11_dcp_label",
                            &file,
                            pkcs11::DCP_LABEL,
                        ),
                    },
                ))
            };
            let confidential =
                match setting(amount_mode, "amount_mode", &file, "transparent").as_str() {
                    "transparent" => false,
                    "confidential" => true,
                    other => {
                        return Err(CliError::usage(format!(
                            "--amount-mode {other:?}: expected transparent or confidential"
                        )));
                    }
                };
            node::run(node::NodeOptions {
                confidential,
                keys: node::KeyOptions {
                    dir: keys_dir,
                    pkcs11,
                },
                manufacturers,
                root_out: (!root_out.is_empty()).then(|| PathBuf::from(root_out)),
                stores: node::StoreUrls::new(&database_url, &dcp_database_url, &mds_database_url),
                escrow_key: (!escrow_key.is_empty()).then(|| PathBuf::from(escrow_key)),
                listen: listen
                    .parse()
                    .map_err(|_| CliError::usage(format!("not an address: {listen}")))?,
                operator_token: token,
                body_limit_bytes: setting(None, "body_limit_bytes", &file, "1048576")
                    .parse()
                    .map_err(|_| CliError::usage("body_limit_bytes must be a number"))?,
            })
            .map(|_| String::new())
        }
        Command::Device { state, cmd } => run_device(&state, cmd),
        Command::Central {
            database_url,
            mds_database_url,
            keys,
            tls,
            listen,
            dcps,
            manufacturers,
            root_out,
            external_mds,
            escrow_key,
        } => parties::run_central(parties::CentralOptions {
            database_url,
            mds_database_url,
            keys,
            tls,
            listen,
            dcps,
            manufacturers,
            root_out,
            external_mds,
            escrow_key,
        })
        .map(|_| String::new()),
        Command::Mds {
            database_url,
            central,
            tls,
            listen,
        } => parties::run_mds(parties::MdsOptions {
            database_url,
            central,
            tls,
            listen,
        })
        .map(|_| String::new()),
        Command::Dcp {
            id,
            database_url,
            keys,
            tls,
            central,
            listen,
            operator_token,
            in_flight_after_s,
            reclaim_after_s,
        } => parties::run_dcp(parties::DcpOptions {
            id,
            database_url,
            keys,
            tls,
            central,
            listen,
            operator_token,
            in_flight_after_s,
            reclaim_after_s,
        })
        .map(|_| String::new()),
        Command::Cb {
            central,
            mds,
            tls,
            cmd,
        } => {
            // Alerts and indicators are the MDS's (at `--mds`, or
            // `--central` names it).
            let server = match cmd {
                CbCmd::Alerts | CbCmd::Indicators => tally_tls::Role::Mds,
                _ => tally_tls::Role::Central,
            };
            let cb = parties::Cb::new(&central, &tls, server, mds.as_deref())?;
            let v = match cmd {
                CbCmd::Mint {
                    dcp,
                    amount,
                    idempotency_key,
                } => cb.post(
                    "/central/v1/admin/mint",
                    serde_json::json!({ "dcp": dcp, "amount": amount, "idempotency_key": idempotency_key }),
                )?,
                CbCmd::Manufacturer { file } => cb.manufacturer(&file)?,
                CbCmd::RevokeCert { file } => cb.revoke_cert(&file)?,
                CbCmd::Dcp { id } => cb.get(&format!("/central/v1/admin/dcps/{id}"))?,
                CbCmd::Invariant => cb.get("/ledger/invariant")?,
                CbCmd::DoubleSpends => cb.get("/central/v1/admin/double-spends")?,
                CbCmd::AdvanceEpoch => cb.post("/central/v1/admin/epoch/advance", serde_json::json!({}))?,
                CbCmd::Alerts => cb.get("/mds/alerts")?,
                CbCmd::Indicators => cb.get("/mds/indicators")?,
            };
            Ok(v.to_string())
        }
        Command::Keys {
            cmd: KeysCmd::Public { keys, role, out },
        } => parties::public_key(&keys, &role, &out),
        Command::Keys {
            cmd:
                KeysCmd::Pkcs11Generate {
                    module,
                    token,
                    pin_file,
                    labels,
                    out,
                },
        } => {
            let labels = if labels.is_empty() {
                [
                    pkcs11::ROOT_LABEL,
                    pkcs11::SETTLEMENT_LABEL,
                    pkcs11::DCP_LABEL,
                ]
                .map(String::from)
                .to_vec()
            } else {
                labels
            };
            pkcs11::generate(
                &pkcs11::TokenOptions {
                    module,
                    token,
                    pin_file,
                },
                &labels,
                out.as_deref(),
            )
        }
        Command::Manufacturer {
            cmd: ManufacturerCmd::Keygen { out },
        } => device::manufacturer_keygen(&out),
        #[cfg(feature = "dev-tools")]
        Command::Bench { cmd } => bench::run(cmd),
        Command::Supervisor(cmd) => supervisor::run(cmd),
        Command::SettleWorker(args) => worker::run(args),
        Command::Tls(cmd) => tls::run(cmd),
        Command::Package { cmd } => match cmd {
            PackageCmd::Inspect { file } => package::inspect(&file),
            PackageCmd::Verify {
                file,
                trust,
                request,
                epoch,
                budget,
            } => package::verify(&file, &trust, request.as_deref(), epoch, budget),
        },
        Command::Operator {
            node,
            token,
            ca,
            cmd,
        } => {
            let op = match ca {
                Some(path) => {
                    let pem = String::from_utf8(device::read_file(&path)?).map_err(|_| {
                        CliError::usage(format!("{}: not a PEM file", path.display()))
                    })?;
                    let agent = tally_tls::client_agent(&pem, None)
                        .map_err(|e| CliError::usage(format!("CA certificate: {e}")))?;
                    tally_api::OperatorClient::with_agent(&node, &token, agent)
                }
                None => tally_api::OperatorClient::new(&node, &token),
            };
            let fail = |e: tally_wallet::agent::BackendError| CliError::failed(e.to_string());
            match cmd {
                OperatorCmd::Mint {
                    amount,
                    idempotency_key,
                } => {
                    op.mint(&idempotency_key, amount).map_err(fail)?;
                    Ok(format!("minted {amount}"))
                }
                OperatorCmd::Deposit {
                    account,
                    amount,
                    idempotency_key,
                } => {
                    let b = op
                        .deposit(&account, &idempotency_key, amount)
                        .map_err(fail)?;
                    Ok(format!("{account}: balance {b}"))
                }
                OperatorCmd::Enrol { account } => {
                    let code = op.enrolment_code(&account).map_err(fail)?;
                    Ok(format!("enrolment code for {account}: {code}"))
                }
                OperatorCmd::Invariant => Ok(op.invariant().map_err(fail)?.to_string()),
                OperatorCmd::Balance { account } => {
                    let b = op.balance(&account).map_err(fail)?;
                    Ok(format!("{account}: balance {b}"))
                }
                OperatorCmd::Reconcile => {
                    let r = op.reconcile().map_err(fail)?;
                    Ok(format!(
                        "DCP {}: book {} (in flight {}), settlement account {}: {}",
                        r.dcp,
                        r.book_sum,
                        r.in_flight,
                        r.settlement_account,
                        if r.matches {
                            "matches"
                        } else {
                            "DOES NOT MATCH"
                        }
                    ))
                }
                OperatorCmd::AdvanceEpoch => {
                    Ok(format!("epoch {}", op.advance_epoch().map_err(fail)?))
                }
                OperatorCmd::Trust { out } => {
                    let bytes = op.trust_bundle().map_err(fail)?;
                    device::write_atomic(&out, &bytes)?;
                    Ok(format!("trust bundle written to {}", out.display()))
                }
                OperatorCmd::Alerts { json } => {
                    let alerts = op.alerts().map_err(fail)?;
                    if json {
                        return serde_json::to_string_pretty(&alerts)
                            .map_err(|e| CliError::failed(e.to_string()));
                    }
                    Ok(alerts
                        .iter()
                        .map(|a| {
                            // The alert's number is an amount, a refusal's
                            // code or a count, by kind (tally-mds `Alert`).
                            let number = match a.kind.as_str() {
                                "counterfeit_refused" => "refusal code",
                                "structuring" | "fan_out" | "fan_in" | "velocity" => "count",
                                _ => "amount",
                            };
                            format!(
                                "alert {} {} {} {} epoch {} offender {} {number} {} records {}",
                                a.id,
                                a.kind,
                                a.severity,
                                a.state,
                                a.epoch,
                                a.offender.as_deref().unwrap_or("-"),
                                a.amount,
                                a.records.len()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"))
                }
                OperatorCmd::Alert { id, to, note } => {
                    let a = op.alert_transition(id, &to, &note).map_err(fail)?;
                    Ok(format!("alert {} is now {}", a.id, a.state))
                }
                OperatorCmd::Escrow { key_id, out } => {
                    let e = op.escrow(&key_id).map_err(fail)?;
                    if let Some(out) = out {
                        device::write_atomic(&out, e.escrow.as_bytes())?;
                    }
                    Ok(e.escrow)
                }
                OperatorCmd::Revoke {
                    id_digest,
                    keys,
                    reason,
                    alert,
                    audit_log,
                    request,
                } => {
                    let audit_log = audit_log
                        .map(|p| device::read_file(&p).map(hex::encode))
                        .transpose()?;
                    let v = op
                        .revoke(&tally_api::RevokeRequest {
                            id_digest,
                            key_ids: keys,
                            reason,
                            alert,
                            audit_log,
                            request,
                        })
                        .map_err(fail)?;
                    Ok(format!(
                        "revoked SE {}; revocation list {} lists {} keys",
                        v.se_id, v.revocation_serial, v.revoked_keys
                    ))
                }
                OperatorCmd::Indicators => {
                    let v = op.indicators().map_err(fail)?;
                    serde_json::to_string_pretty(&v).map_err(|e| CliError::failed(e.to_string()))
                }
            }
        }
    }
}

fn run_device(state: &Path, cmd: DeviceCmd) -> Result<String, CliError> {
    use tally_core::dcp::DeviceOp;
    use tally_wallet::agent::Finished;
    match cmd {
        DeviceCmd::Init(o) => device::init(state, &o),
        DeviceCmd::Pin { new, old } => device::set_pin(state, old.as_deref(), &new),
        DeviceCmd::PayOnline { to, amount, pin } => device::with_agent(state, |a, done| {
            if done.iter().any(|f| matches!(f, Finished::Request(DeviceOp::PayOnline { to_account, amount: x }) if *to_account == to && *x == amount)) {
                return Ok(format!("paid {amount} to {to} online"));
            }
            let b = a.pay_online(&to, amount, pin.as_deref())?;
            Ok(format!("paid {amount} to {to} online; account balance {b}"))
        }),
        DeviceCmd::Register => device::with_agent(state, |a, _| {
            a.sync().map(|_| "registered and synced".into())
        }),
        DeviceCmd::Load { amount } => device::with_agent(state, |a, done| {
            // The same command run again after an interruption: the
            // pending load was this one, finished above.
            if done.iter().any(|f| matches!(f, Finished::Request(DeviceOp::Load { amount: x, .. }) if *x == amount)) {
                return Ok(format!("loaded {amount}"));
            }
            // It was this load, and the SE could not take its token: it
            // was cancelled back to the account (reported above).
            if done
                .iter()
                .any(|f| matches!(f, Finished::Cancelled { amount: x } if *x == amount))
            {
                return Ok(format!(
                    "nothing loaded: the SE cannot hold {amount} more now"
                ));
            }
            a.load(amount).map(|_| format!("loaded {amount}"))
        }),
        DeviceCmd::Request { amount, out } => device::request(state, amount, &out),
        DeviceCmd::Route { route } => device::set_route(state, route),
        DeviceCmd::Pay { request, out, pin } => device::pay(state, &request, &out, pin.as_deref()),
        DeviceCmd::Receive { package, out } => device::receive(state, &package, &out),
        DeviceCmd::Ack { receipt } => device::ack(state, &receipt),
        DeviceCmd::Sync => device::with_agent(state, |a, done| {
            // The same command run again: the interrupted sync was this
            // one, and it is done (another now would be a second sync).
            if done
                .iter()
                .any(|f| matches!(f, Finished::Request(DeviceOp::Sync { .. })))
            {
                return Ok("synced".into());
            }
            a.sync().map(|r| {
                format!(
                    "synced to epoch {}: uploaded {} packages, reported {} open requests, recovered {}, double spends found {}",
                    r.epoch, r.uploaded, r.closed_requests, r.recovered, r.double_spends
                )
            })
        }),
        DeviceCmd::Renew => {
            device::with_agent(state, |a, _| a.renew().map(|v| format!("renewed {v}")))
        }
        DeviceCmd::Unload { amount } => device::with_agent(state, |a, done| {
            // The same command run again: the interrupted unload was this
            // one, and it is done. (Nothing more is asked of the node: a
            // failure now would make the user run it a third time.)
            if done.iter().any(|f| {
                matches!(f, Finished::Request(DeviceOp::RedemptionRequest { amount: x, unload: true }) if *x == amount)
                    || matches!(f, Finished::Redemption { amount: x, unload: true } if x.0 == amount)
            }) {
                return Ok(format!("unloaded {amount}"));
            }
            let b = a.unload(amount)?;
            Ok(format!("unloaded {amount}; account balance {b}"))
        }),
        DeviceCmd::Balance => device::balance(state),
        DeviceCmd::Status => device::status(state),
        DeviceCmd::Account => device::with_agent(state, |a, _| {
            a.account_balance().map(|b| format!("account balance {b}"))
        }),
        DeviceCmd::History => device::history(state),
        DeviceCmd::Stream { cmd } => match cmd {
            StreamCmd::Request { price, ticks, out } => {
                device::stream_request(state, price, ticks, &out)
            }
            StreamCmd::Release { id, tick, out } => device::stream_release(state, &id, tick, &out),
            StreamCmd::Accept { id, tick, element } => {
                device::stream_accept(state, &id, tick, &element)
            }
            StreamCmd::Close { id } => device::stream_close(state, &id),
            StreamCmd::List => device::stream_list(state),
        },
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .json()
        .try_init();
}
