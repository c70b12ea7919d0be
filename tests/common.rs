//! Harness of the end-to-end tests: the real `tally` binary as child
//! processes (a node guard that SIGKILLs its process on drop, CLI runs
//! with a deadline), one fresh PostgreSQL schema per test, in-memory
//! devices driven over HTTP, and a seeded RNG.
//!
//! Every wait here is bounded in count and in time, and every child
//! process is owned by a guard, so a failed test leaves nothing running.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tally_api::{HttpBackend, OperatorClient};
use tally_core::codec::Cbor;
use tally_core::dcp::{DeviceRequest, DeviceResponse, Registration};
use tally_core::{Hash32, Policy, PublicKey, RevocationList, SecretKey, Suite};
use tally_se::{RequestParams, SeError};
use tally_wallet::agent::{Agent, Backend, BackendError, SealedKind, manufacture};
use tally_wallet::testkit::{TestCard, blank_card};
use tally_wallet::{ApduLink, SeLink};

/// Operator token of every test node.
pub const TOKEN: &str = "e2e-operator-token";
/// Longest a single CLI invocation may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a node may take to print its listening line.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts to start a node on a given port (it may still be held for a
/// moment by the process just killed).
pub const NODE_START_ATTEMPTS_MAX: u32 = 50;
/// Lines of a node's log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// The cardholder PIN of every test card and phone (`device init --pin`).
pub const PIN: &str = "2468";
/// Files beside a test's devices: the SE manufacturer's key pair (`tally
/// manufacturer keygen --out DIR/maker`, trusted by every node started in
/// DIR) and the root public key the node writes at start (`--root-out`).
pub const MAKER: &str = "maker";
pub const ROOT_FILE: &str = "root.pub";

pub fn tally() -> &'static str {
    env!("CARGO_BIN_EXE_tally")
}

/// A `tally` command with no `TALLY_*` settings inherited from the
/// environment (flags only), so the tests are hermetic.
fn tally_command() -> Command {
    let mut c = Command::new(tally());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("TALLY_") && !k.starts_with("TALLY_TEST_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// A unique suffix for names inside one machine (process id + clock).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn temp_dir(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tally-e2e-{test}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

// ---- CLI runs ---------------------------------------------------------

/// One finished CLI invocation.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    /// Exit code; -1 when the process died of a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0; returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(
            self.code,
            0,
            "`tally {}` failed with exit {}\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Asserts the exit code; returns stderr.
    #[track_caller]
    pub fn fails_with(self, code: i32) -> String {
        assert_eq!(
            self.code,
            code,
            "`tally {}`: expected exit {code}, got {}\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self.stderr
    }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `tally ARGS…` to completion (killed after [`CLI_TIMEOUT`]).
pub fn run(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut child = tally_command()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", tally()));
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => panic!("waiting for `tally {}`: {e}", args.join(" ")),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`tally {}` did not finish within {CLI_TIMEOUT:?}",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(1));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        args,
    }
}

/// `tally operator --node URL --token T ARGS…`, asserted to succeed.
pub fn operator(url: &str, args: &[&str]) -> String {
    let mut a = vec!["operator", "--node", url, "--token", TOKEN];
    a.extend_from_slice(args);
    run(&a).ok()
}

// ---- nodes ------------------------------------------------------------

/// A running `tally node`; SIGKILLed on drop (its log tail is printed
/// when the test is failing).
pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub database_url: String,
    pub log: PathBuf,
    /// Processes started so far (1 + restarts).
    pub starts: u32,
    /// Extra `tally node` arguments (kept for restarts).
    pub extra: Vec<String>,
    /// The test's directory (manufacturer key, root file, logs).
    pub dir: PathBuf,
}

const LISTENING: &str = "tally node listening on http://";

fn spawn_node(
    database_url: &str,
    listen: &str,
    log: &Path,
    extra: &[String],
) -> Result<(Child, SocketAddr), String> {
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = tally_command()
        .args([
            "node",
            "--database-url",
            database_url,
            "--listen",
            listen,
            "--operator-token",
            TOKEN,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", tally()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel::<String>();
    // Reads the listening line, then drains stdout until the process ends.
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix(LISTENING) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let deadline = Instant::now() + NODE_START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(addr) => {
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|e| format!("bad listening line {addr:?}: {e}"))?;
                return Ok((child, addr));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed without the line: the process is ending.
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "tally node exited with {status} before listening; log:\n{}",
                tail(log, LOG_TAIL_LINES)
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "tally node did not listen within {NODE_START_TIMEOUT:?}; log:\n{}",
                tail(log, LOG_TAIL_LINES)
            ));
        }
    }
}

/// `(DIR/maker.key, DIR/maker.pub)`, made with `tally manufacturer
/// keygen` if they do not exist yet.
pub fn maker_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, public) = (
        dir.join(format!("{MAKER}.key")),
        dir.join(format!("{MAKER}.pub")),
    );
    if !key.exists() {
        let out = run(&[
            "manufacturer",
            "keygen",
            "--out",
            &dir.join(MAKER).display().to_string(),
        ])
        .ok();
        assert!(out.starts_with("manufacturer key "), "{out}");
    }
    (key, public)
}

/// `tally operator enrol ACCOUNT`: a fresh one-time enrolment code.
pub fn enrolment_code(url: &str, account: &str) -> String {
    let out = operator(url, &["enrol", account]);
    let prefix = format!("enrolment code for {account}: ");
    out.trim()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("no code in {out:?}"))
        .to_string()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Node {
    /// Starts a node on 127.0.0.1, port chosen by the system; its log
    /// goes to `dir/<name>.log`.
    pub fn start(database_url: &str, dir: &Path, name: &str) -> Node {
        Node::start_with(database_url, dir, name, &[])
    }

    /// [`Node::start`] with extra `tally node` arguments. Every node
    /// trusts the manufacturer of `dir` (its key pair is made on first
    /// use) and writes its root public key to `dir/root.pub`. Unless
    /// `extra` names one, the nodes of `dir` share the key directory
    /// `dir/node.keys` (made on first start), as nodes on one database must.
    pub fn start_with(database_url: &str, dir: &Path, name: &str, extra: &[&str]) -> Node {
        let log = dir.join(format!("{name}.log"));
        let (maker_pub, root) = (maker_files(dir).1, dir.join(ROOT_FILE));
        let mut extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        if !extra.iter().any(|a| a == "--keys") {
            extra.extend([
                "--keys".to_string(),
                dir.join("node.keys").display().to_string(),
            ]);
        }
        extra.extend([
            "--manufacturer".to_string(),
            maker_pub.display().to_string(),
            "--root-out".to_string(),
            root.display().to_string(),
        ]);
        let (child, addr) = spawn_node(database_url, "127.0.0.1:0", &log, &extra)
            .unwrap_or_else(|e| panic!("node {name}: {e}"));
        Node {
            child: Some(child),
            addr,
            database_url: database_url.to_string(),
            log,
            starts: 1,
            extra,
            dir: dir.to_path_buf(),
        }
    }

    /// What enrolling an in-memory device at this node takes.
    pub fn enroller(&self) -> Enroller {
        Enroller::new(&self.dir, &self.url())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn operator(&self) -> OperatorClient {
        OperatorClient::new(self.url(), TOKEN)
    }

    pub fn http(&self) -> HttpBackend {
        HttpBackend::new(self.url())
    }

    /// kill -9, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same address (after [`Node::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        let mut last = String::new();
        for _ in 0..NODE_START_ATTEMPTS_MAX {
            match spawn_node(&self.database_url, &listen, &self.log, &self.extra) {
                Ok((child, addr)) => {
                    assert_eq!(addr, self.addr, "restarted node moved");
                    self.child = Some(child);
                    self.starts += 1;
                    return;
                }
                Err(e) => {
                    last = e;
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        panic!("node could not be restarted on {listen}: {last}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- last lines of {} ---\n{}\n---",
                self.log.display(),
                tail(&self.log, LOG_TAIL_LINES)
            );
        }
    }
}

// ---- databases --------------------------------------------------------

/// A fresh PostgreSQL schema; dropped when the test passes (kept, and
/// named on stderr, when it fails).
pub struct PgSchema {
    base: String,
    pub name: String,
}

impl PgSchema {
    /// `None` (with the loud skip message) when TALLY_TEST_DATABASE_URL
    /// is unset; panics when it is set but PostgreSQL is unreachable.
    pub fn create(test: &str) -> Option<PgSchema> {
        let base = tally_store::test_database_url(test)?;
        let name = unique("e2e").to_lowercase();
        let admin = tally_store::Store::postgres(&base, None).unwrap_or_else(|e| {
            panic!("TALLY_TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}")
        });
        admin
            .transact(|tx| tx.execute(&format!("CREATE SCHEMA {name}"), &[]))
            .unwrap_or_else(|e| panic!("cannot create schema {name}: {e}"));
        Some(PgSchema { base, name })
    }

    /// The URL that selects this schema (libpq `options`, which the
    /// `postgres` crate's URL parser passes to the server).
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }
}

impl PgSchema {
    /// Tables in this schema (proves the node really used it).
    pub fn tables(&self) -> i64 {
        let admin = tally_store::Store::postgres(&self.base, None)
            .unwrap_or_else(|e| panic!("PostgreSQL unreachable: {e}"));
        admin
            .transact(|tx| {
                tx.query_one(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM information_schema.tables WHERE table_schema = $1",
                    &[self.name.as_str().into()],
                )?
                .map(|r| r.int(0))
                .transpose()
            })
            .unwrap_or_else(|e| panic!("counting tables of {}: {e}", self.name))
            .unwrap_or(0)
    }
}

/// Asserts the node's tables went into the test's own schema.
pub fn assert_schema_used(db: &Db) {
    if let Db::Postgres(s) = db {
        assert!(s.tables() > 0, "schema {} is empty", s.name);
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("PostgreSQL schema {} kept for inspection", self.name);
            return;
        }
        if let Ok(admin) = tally_store::Store::postgres(&self.base, None) {
            let _ = admin.transact(|tx| {
                tx.execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name), &[])
            });
        }
    }
}

/// The database of one test: an SQLite file in the test's directory, or
/// a PostgreSQL schema.
pub enum Db {
    Sqlite(PathBuf),
    Postgres(PgSchema),
}

impl Db {
    pub fn sqlite(dir: &Path) -> Db {
        Db::Sqlite(dir.join("node.sqlite"))
    }

    pub fn postgres(test: &str) -> Option<Db> {
        PgSchema::create(test).map(Db::Postgres)
    }

    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(p) => p.display().to_string(),
            Db::Postgres(s) => s.url(),
        }
    }
}

// ---- CLI devices ------------------------------------------------------

/// What `tally device balance` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeBalance {
    pub balance: u64,
    pub tokens: u64,
    pub unacked: u64,
}

/// A `tally device` whose SE is the file `dir/<name>.se`.
#[derive(Debug, Clone)]
pub struct CliDevice {
    pub name: String,
    pub state: PathBuf,
    /// The cardholder's PIN, typed for every payment (`pay`, `pay-online`)
    /// the way a cardholder at a terminal that asks would: see
    /// [`CliDevice::run`]. `None`: no PIN set (IoT), or a test that types
    /// it itself.
    pub pin: Option<String>,
}

impl CliDevice {
    pub fn at(dir: &Path, name: &str) -> CliDevice {
        CliDevice {
            name: name.to_string(),
            state: dir.join(format!("{name}.se")),
            pin: None,
        }
    }

    /// `tally device init` with a fresh one-time code (`tally operator
    /// enrol`), the root file the node wrote and the manufacturer key of
    /// `dir`: manufactured, enrolled and synced. Cards and phones get
    /// [`PIN`] (the node's policy asks for it above the no-PIN limits).
    pub fn init(dir: &Path, name: &str, node: &str, class: &str, account: &str) -> CliDevice {
        let mut d = CliDevice::at(dir, name);
        let code = enrolment_code(node, account);
        let args = init_args(dir, node, class, account, &code);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = d.run(&args).ok();
        assert!(out.contains("registered for account"), "{out}");
        d.pin = (class != "iot").then(|| PIN.to_string());
        d
    }

    /// `tally device --state STATE ARGS…`; `pay` and `pay-online` get
    /// `--pin` with the device's [`CliDevice::pin`] unless ARGS has one.
    pub fn run(&self, args: &[&str]) -> Run {
        let state = self.state.display().to_string();
        let mut a = vec!["device", "--state", state.as_str()];
        a.extend_from_slice(args);
        if let Some(pin) = &self.pin {
            let pays = matches!(args.first(), Some(&"pay" | &"pay-online"));
            if pays && !args.contains(&"--pin") {
                a.extend(["--pin", pin.as_str()]);
            }
        }
        run(&a)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok()
    }

    pub fn file(&self, suffix: &str) -> PathBuf {
        let mut s = self.state.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    }

    pub fn balance(&self) -> SeBalance {
        let out = self.ok(&["balance"]);
        // "balance 5000 in 1 tokens; epoch 1; counter 0; unacknowledged 0; …"
        let w: Vec<&str> = out.split_whitespace().collect();
        let num = |after: &str| -> u64 {
            let i = w
                .iter()
                .position(|x| *x == after)
                .unwrap_or_else(|| panic!("no {after:?} in {out:?}"));
            w[i + 1]
                .trim_end_matches(';')
                .parse()
                .unwrap_or_else(|e| panic!("{out:?}: {e}"))
        };
        SeBalance {
            balance: num("balance"),
            tokens: w
                .iter()
                .position(|x| *x == "in")
                .and_then(|i| w[i + 1].parse().ok())
                .unwrap_or_else(|| panic!("no token count in {out:?}")),
            unacked: num("unacknowledged"),
        }
    }

    /// Copies the SE's three files to `to` (the cloned-SE attack).
    pub fn clone_to(&self, dir: &Path, name: &str) -> CliDevice {
        let to = CliDevice {
            pin: self.pin.clone(),
            ..CliDevice::at(dir, name)
        };
        for suffix in ["", ".key", ".json"] {
            std::fs::copy(self.file(suffix), to.file(suffix))
                .unwrap_or_else(|e| panic!("copying {}{suffix}: {e}", self.state.display()));
        }
        to
    }
}

/// `tally device init`'s arguments for an SE of `dir` (the root file the
/// node wrote, the manufacturer key of `dir`); cards and phones get
/// [`PIN`].
pub fn init_args(dir: &Path, node: &str, class: &str, account: &str, code: &str) -> Vec<String> {
    init_args_with(dir, node, class, account, code, &maker_files(dir).0)
}

/// [`init_args`] with another manufacturer's key file.
pub fn init_args_with(
    dir: &Path,
    node: &str,
    class: &str,
    account: &str,
    code: &str,
    maker_key: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "init",
        "--node",
        node,
        "--class",
        class,
        "--account",
        account,
        "--code",
        code,
        "--root",
        &dir.join(ROOT_FILE).display().to_string(),
        "--maker-key",
        &maker_key.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    if class != "iot" {
        args.extend(["--pin".to_string(), PIN.to_string()]);
    }
    args
}

/// An offline payment through files: request, pay, receive, ack.
/// Returns the (request, package) paths.
pub fn pay_via_files(
    dir: &Path,
    tag: &str,
    payer: &CliDevice,
    payee: &CliDevice,
    amount: u64,
) -> (PathBuf, PathBuf) {
    let req = dir.join(format!("{tag}.request"));
    let pkg = dir.join(format!("{tag}.package"));
    let rcpt = dir.join(format!("{tag}.receipt"));
    let s = |p: &Path| p.display().to_string();
    payee.ok(&[
        "request",
        "--amount",
        &amount.to_string(),
        "--out",
        &s(&req),
    ]);
    let out = payer.ok(&["pay", "--request", &s(&req), "--out", &s(&pkg)]);
    assert!(out.starts_with(&format!("paid {amount}:")), "{out}");
    let out = payee.ok(&["receive", "--package", &s(&pkg), "--out", &s(&rcpt)]);
    assert!(out.starts_with(&format!("received {amount};")), "{out}");
    payer.ok(&["ack", "--receipt", &s(&rcpt)]);
    (req, pkg)
}

// ---- in-memory devices over HTTP --------------------------------------

/// What enrolling an in-memory device takes: the root public key file the
/// node wrote (the SE's trust anchor, never taken from the network), the
/// manufacturer's key that certifies the SE's attestation key, and the
/// node's operator API for one-time codes.
pub struct Enroller {
    pub url: String,
    pub root: PublicKey,
    pub maker_key: SecretKey,
}

impl Enroller {
    /// From the files of `dir` (see [`Node::start_with`]).
    pub fn new(dir: &Path, url: &str) -> Enroller {
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let root = PublicKey::from_cbor(&read(&dir.join(ROOT_FILE)))
            .unwrap_or_else(|e| panic!("root file: {e}"));
        let seed: [u8; 32] = read(&maker_files(dir).0)
            .try_into()
            .unwrap_or_else(|_| panic!("manufacturer key file must hold 32 bytes"));
        let maker_key = SecretKey::from_seed(Suite::Ed25519, &seed).expect("a manufacturer key");
        Enroller {
            url: url.to_string(),
            root,
            maker_key,
        }
    }

    /// A one-time enrolment code for `account` (over the operator API,
    /// retried on transport failures and 5xx answers: an unused code
    /// from a lost answer is harmless).
    pub fn code(&self, account: &str) -> Result<String, String> {
        let op = OperatorClient::new(&self.url, TOKEN);
        retry(&RetryStats::default(), || op.enrolment_code(account))
            .map_err(|e| format!("enrolment code for {account}: {e}"))
    }
}

pub type MemLink = ApduLink<TestCard>;

/// A device whose SE lives in the test process (the node is the only
/// process that gets killed). The request counter lives in the SE.
pub struct MemDevice {
    pub link: MemLink,
    pub se_id: Hash32,
    pub account: String,
}

impl MemDevice {
    /// Manufactures a blank in-memory SE (root and maker certificate from
    /// `enroller`) and enrols it for `account` with a fresh one-time code.
    pub fn onboard(
        backend: &mut dyn Backend,
        enroller: &Enroller,
        label: &str,
        class: u8,
        account: &str,
    ) -> Result<MemDevice, String> {
        let mut link = ApduLink::select(blank_card(unique(label).as_bytes()), 4096)
            .map_err(|e| format!("select: {e}"))?;
        let cert = manufacture(&mut link, class, enroller.root, &enroller.maker_key, "e2e")
            .map_err(|e| format!("manufacturing {label}: {e}"))?;
        let code = enroller.code(account)?;
        let a = Agent::onboard(&mut link, backend, cert, account, &code)
            .map_err(|e| format!("onboarding {label}: {e}"))?;
        let se_id = a.se_id;
        Ok(MemDevice {
            link,
            se_id,
            account: account.to_string(),
        })
    }

    /// Runs `f` with an agent on this device over `backend`.
    pub fn with<R>(&mut self, backend: &mut dyn Backend, f: impl FnOnce(&mut Agent<'_>) -> R) -> R {
        let mut a = Agent {
            se: &mut self.link,
            backend,
            se_id: self.se_id,
            pending: None,
        };
        f(&mut a)
    }

    /// A device request built and signed inside the SE (BUILD REQUEST,
    /// with the SE's next counter): what `Agent` sends.
    pub fn request(&mut self, params: RequestParams) -> DeviceRequest {
        self.link
            .build_request(&params)
            .unwrap_or_else(|e| panic!("SE refused to build the request: {e}"))
    }

    /// [`MemDevice::request`] for a request that needs a fresh certified
    /// key of the SE's (load, redeem): if the SE has none left, one is
    /// generated and certified first.
    pub fn request_with_key(
        &mut self,
        backend: &mut dyn Backend,
        params: RequestParams,
    ) -> DeviceRequest {
        match self.link.build_request(&params) {
            Err(e) if e.is(&SeError::NoCertifiedKey) => {
                self.certify(backend, 1);
                self.request(params)
            }
            other => other.unwrap_or_else(|e| panic!("SE refused to build the request: {e}")),
        }
    }

    /// Builds, sends and decodes the response.
    pub fn call(&mut self, backend: &mut dyn Backend, params: RequestParams) -> DeviceResponse {
        let body = self.request(params).to_cbor();
        let bytes = backend
            .device(&body)
            .unwrap_or_else(|e| panic!("device request refused: {e}"));
        DeviceResponse::from_cbor(&bytes).unwrap_or_else(|e| panic!("bad response: {e}"))
    }

    /// `n` fresh offline keys, generated in the SE, certified by the DCP
    /// and installed.
    pub fn certify(&mut self, backend: &mut dyn Backend, n: u8) {
        let DeviceResponse::Certificates(certs) = self.call(backend, RequestParams::Certify { n })
        else {
            panic!("certify: unexpected response");
        };
        for c in &certs {
            self.link
                .install_certificate(c)
                .expect("certificate installs");
        }
    }

    pub fn balance(&mut self) -> u64 {
        self.link.status().expect("SE status").balance.0
    }
}

// ---- retries at the HTTP layer ----------------------------------------

/// Counters of [`Retrying`].
#[derive(Debug, Default)]
pub struct RetryStats {
    /// Requests that needed at least one retry.
    pub retried_requests: AtomicU64,
    /// Failed attempts in total (each followed by a retry).
    pub failed_attempts: AtomicU64,
}

/// Attempts of one request before giving up.
pub const RETRY_ATTEMPTS_MAX: u32 = 2_000;
/// Time one request may spend retrying.
pub const RETRY_TIME_MAX: Duration = Duration::from_secs(30);
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A transport failure (no answer) or a server failure: worth the same
/// request again. Everything else is a verdict.
pub fn retryable(e: &BackendError) -> bool {
    // 429: the node's per-SE rate limit; nothing was done, retry later.
    e.status == 0 || e.status == 429 || e.status >= 500
}

/// The back office over HTTP, retrying every call with the identical
/// body on transport failures and 5xx answers (bounded).
pub struct Retrying {
    pub http: HttpBackend,
    pub stats: Arc<RetryStats>,
}

impl Retrying {
    pub fn new(base: &str, stats: Arc<RetryStats>) -> Retrying {
        Retrying {
            http: HttpBackend::new(base),
            stats,
        }
    }
}

/// Calls `f` until it succeeds or fails with a verdict (bounded).
pub fn retry<T>(
    stats: &RetryStats,
    mut f: impl FnMut() -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    let deadline = Instant::now() + RETRY_TIME_MAX;
    let mut failed = 0u32;
    loop {
        match f() {
            Err(e) if retryable(&e) => {
                failed += 1;
                stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                if failed == 1 {
                    stats.retried_requests.fetch_add(1, Ordering::Relaxed);
                }
                if failed >= RETRY_ATTEMPTS_MAX || Instant::now() > deadline {
                    return Err(BackendError {
                        message: format!("gave up after {failed} attempts: {}", e.message),
                        ..e
                    });
                }
                thread::sleep(RETRY_PAUSE);
            }
            other => return other,
        }
    }
}

impl Backend for Retrying {
    fn trust(&mut self) -> Result<(PublicKey, Policy, RevocationList), BackendError> {
        let http = &mut self.http;
        retry(&self.stats, || http.trust())
    }
    fn register(&mut self, reg: &Registration) -> Result<Hash32, BackendError> {
        let http = &mut self.http;
        retry(&self.stats, || http.register(reg))
    }
    fn seal(
        &mut self,
        root: &PublicKey,
        kind: SealedKind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let http = &mut self.http;
        retry(&self.stats, || http.seal(root, kind, plaintext))
    }
    fn device(&mut self, request: &[u8]) -> Result<Vec<u8>, BackendError> {
        let http = &mut self.http;
        retry(&self.stats, || http.device(request))
    }
}

// ---- randomness -------------------------------------------------------

/// SplitMix64: small, seeded, good enough to pick operations and delays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The seed of a run: TALLY_E2E_SEED, or `default`; printed so a failing
/// run can be replayed.
pub fn seed(test: &str, default: u64) -> u64 {
    let s = std::env::var("TALLY_E2E_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    eprintln!("{test}: seed {s} (set TALLY_E2E_SEED to replay)");
    s
}

// ---- a node killed at random ----------------------------------------------

/// Owns the node while it kills and restarts it; stops (and, through
/// the node's guard, kills it) on drop.
pub struct Killer {
    stop: Arc<AtomicBool>,
    pub kills: Arc<AtomicU64>,
    handle: Option<JoinHandle<Node>>,
}

impl Killer {
    /// Kills `node` after a pause drawn from `pause_ms` (seeded), restarts
    /// it (sometimes after a while down), again and again, until stopped or
    /// `run_time_max` has passed.
    pub fn start(
        mut node: Node,
        seed: u64,
        pause_ms: (u64, u64),
        run_time_max: Duration,
    ) -> Killer {
        let stop = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicU64::new(0));
        let (s, k) = (stop.clone(), kills.clone());
        let handle = thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let deadline = Instant::now() + run_time_max;
            'run: for _ in 0..1_000 {
                let until =
                    Instant::now() + Duration::from_millis(rng.range(pause_ms.0, pause_ms.1));
                while Instant::now() < until {
                    if s.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break 'run;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                node.kill();
                k.fetch_add(1, Ordering::SeqCst);
                // Sometimes stay down a while: clients meet a closed port.
                if rng.range(0, 2) == 0 {
                    thread::sleep(Duration::from_millis(rng.range(0, 100)));
                }
                node.restart();
            }
            node
        });
        Killer {
            stop,
            kills,
            handle: Some(handle),
        }
    }

    /// Stops killing; the node is left running.
    pub fn finish(mut self) -> Node {
        self.stop.store(true, Ordering::SeqCst);
        let h = self.handle.take().expect("killer runs");
        h.join()
            .unwrap_or_else(|_| panic!("the killer thread panicked"))
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
