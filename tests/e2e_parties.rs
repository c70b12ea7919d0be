//! The back office as separate processes over mutual TLS (issue 11), with
//! the real binaries: `tally central`, two `tally dcp` processes, each on
//! its own database, devices of both DCPs driven by `tally device`.
//!
//! - Devices of DCP 1 and DCP 2 pay each other offline, renew and unload
//!   at their own DCP, pay across DCPs online; a cloned SE is caught; the
//!   central invariant holds and each DCP's book equals its settlement
//!   account (`tally operator reconcile`).
//! - A connection without a valid client certificate, a role that is not
//!   a DCP, and a DCP acting on another DCP's SE or spending in another's
//!   name are refused and change nothing.
//! - The link between DCP 1 and the central bank goes through a
//!   fault-injecting TCP proxy on loopback that refuses connections, cuts
//!   them after the request reached the central bank (the reply is lost)
//!   and delays them: every operation completes exactly once when the
//!   device retries after the link returns.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tally_core::codec::Cbor;
use tally_core::{Amount, Hash32, Issue, Output, SecretKey, Suite};
use tally_dcp::CentralRequest;
use tally_dcp::central::CentralCall;

const T1: &str = "dcp1-operator-token";
const T2: &str = "dcp2-operator-token";

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A running party process; killed on drop.
struct Proc {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

/// Starts `tally ARGS` and waits for its `listening on https://ADDR` line.
fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut child = std::process::Command::new(tally())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start tally");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((_, url)) = line.split_once(" listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx.recv_timeout(NODE_START_TIMEOUT).unwrap_or_else(|_| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("{name} did not start:\n{text}")
    });
    Proc { child, url, log }
}

/// Faults of the proxy between DCP 1 and the central bank.
const PASS: u8 = 0;
/// Connections are accepted and closed at once (the request never leaves).
const DOWN: u8 = 1;
/// The request reaches the central bank; everything after the client's
/// second flight (its handshake's end and the request) is not returned,
/// and the connection is cut: the reply is lost.
const CUT_REPLY: u8 = 2;
/// Every connection waits before it is forwarded.
const DELAY: u8 = 3;

/// A TCP proxy on loopback in front of `to`.
struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(PASS));
        let m = mode.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let m = m.clone();
                thread::spawn(move || relay(client, to, m));
            }
        });
        Proxy { addr, mode }
    }
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Relays one connection; the mode is read at every chunk, so a pooled
/// connection opened while the link was good suffers the fault too.
fn relay(client: TcpStream, to: SocketAddr, mode: Arc<AtomicU8>) {
    if mode.load(Ordering::SeqCst) == DOWN {
        return; // dropped: closed without a byte
    }
    let Ok(server) = TcpStream::connect(to) else {
        return;
    };
    let (mut c_read, mut c_write) = (client.try_clone().unwrap(), client);
    let (mut s_read, mut s_write) = (server.try_clone().unwrap(), server);
    // Client → server, counting the client's writes (flights).
    let flights = Arc::new(AtomicU8::new(0));
    let (f, m) = (flights.clone(), mode.clone());
    let cut = c_write.try_clone().unwrap();
    let up = thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    match m.load(Ordering::SeqCst) {
                        DOWN => {
                            // The request is lost with the connection.
                            let _ = cut.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                        DELAY => thread::sleep(Duration::from_millis(300)),
                        _ => {}
                    }
                    let _ = f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| {
                        Some(x.saturating_add(1))
                    });
                    if s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s_write.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // After the client's second flight (handshake end + the
                // request, or a request on a pooled connection), the
                // central bank's answer is lost.
                if mode.load(Ordering::SeqCst) == CUT_REPLY && flights.load(Ordering::SeqCst) >= 2 {
                    thread::sleep(Duration::from_millis(500));
                    break;
                }
                if c_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = c_write.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

struct Scheme {
    dir: PathBuf,
    tls: PathBuf,
    central: Proc,
    /// The central bank's command line (for a restart).
    central_args: Vec<String>,
    dcp1: Proc,
    dcp2: Proc,
    mds: Proc,
    mds_db: PathBuf,
    proxy: Proxy,
}

impl Scheme {
    /// Keys, TLS material, the central bank, DCP 1 (behind the proxy) and
    /// DCP 2, each on `dbs` (central, dcp 1, dcp 2).
    fn start(dir: &Path, dbs: [String; 3]) -> Scheme {
        let p = |n: &str| dir.join(n);
        for (keys, out) in [("dcp1.keys", "dcp1.pub"), ("dcp2.keys", "dcp2.pub")] {
            let out = run(&[
                "keys",
                "public",
                "--keys",
                &s(&p(keys)),
                "--role",
                "dcp",
                "--out",
                &s(&p(out)),
            ])
            .ok();
            assert!(out.starts_with("dcp public key"), "{out}");
        }
        run(&[
            "tls",
            "init",
            "--dir",
            &s(&p("tls")),
            "--keys",
            &s(&p("cb.keys")),
            "--dcp",
            "1",
            "--dcp",
            "2",
        ])
        .ok();
        let (_, maker_pub) = maker_files(dir);
        let central_args: Vec<String> = [
            "central",
            "--database-url",
            &dbs[0],
            "--keys",
            &s(&p("cb.keys")),
            "--tls",
            &s(&p("tls")),
            "--listen",
            "127.0.0.1:0",
            "--dcp",
            &format!("1={}", s(&p("dcp1.pub"))),
            "--dcp",
            &format!("2={}", s(&p("dcp2.pub"))),
            "--manufacturer",
            &s(&maker_pub),
            "--root-out",
            &s(&p(ROOT_FILE)),
            "--external-mds",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let central = spawn(
            dir,
            "central",
            &central_args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        // The MDS as its own process on its own database, pulling the
        // outbox with its role certificate.
        let mds_db = p("mds.sqlite");
        let mds = spawn(
            dir,
            "mds",
            &[
                "mds",
                "--database-url",
                &s(&mds_db),
                "--central",
                &central.url,
                "--tls",
                &s(&p("tls")),
                "--listen",
                "127.0.0.1:0",
            ],
        );
        let central_addr: SocketAddr = central.url.trim_start_matches("https://").parse().unwrap();
        let proxy = Proxy::start(central_addr);
        let dcp = |id: &str, db: &str, keys: &str, token: &str, central: &str| {
            spawn(
                dir,
                &format!("dcp{id}"),
                &[
                    "dcp",
                    "--id",
                    id,
                    "--database-url",
                    db,
                    "--keys",
                    &s(&p(keys)),
                    "--tls",
                    &s(&p("tls")),
                    "--central",
                    central,
                    "--listen",
                    "127.0.0.1:0",
                    "--operator-token",
                    token,
                ],
            )
        };
        // DCP 1 reaches the central bank through the proxy (the server
        // certificate names 127.0.0.1, which the proxy address is too).
        let dcp1 = dcp(
            "1",
            &dbs[1],
            "dcp1.keys",
            T1,
            &format!("https://{}", proxy.addr),
        );
        let dcp2 = dcp("2", &dbs[2], "dcp2.keys", T2, &central.url);
        Scheme {
            dir: dir.to_path_buf(),
            tls: p("tls"),
            central,
            central_args,
            dcp1,
            dcp2,
            mds,
            mds_db,
            proxy,
        }
    }

    /// Stops the central bank and starts it again on the same address and
    /// database (with whatever TLS pair its directory now holds).
    fn restart_central(&mut self) {
        let addr = self.central.url.trim_start_matches("https://").to_string();
        let mut args: Vec<&str> = self.central_args.iter().map(String::as_str).collect();
        let at = args
            .iter()
            .position(|a| *a == "--listen")
            .expect("--listen")
            + 1;
        args[at] = &addr;
        let _ = self.central.child.kill();
        let _ = self.central.child.wait();
        let restarted = spawn(&self.dir, "central-restarted", &args);
        assert_eq!(restarted.url, self.central.url);
        self.central = restarted;
    }

    fn ca(&self) -> String {
        s(&self.tls.join("ca.pem"))
    }

    fn cb(&self, args: &[&str]) -> serde_json::Value {
        self.cb_at(&self.central.url, args)
    }

    /// `tally cb` against `url` (the central bank, or the MDS).
    fn cb_at(&self, url: &str, args: &[&str]) -> serde_json::Value {
        let tls = s(&self.tls);
        let mut a = vec!["cb", "--central", url, "--tls", &tls];
        a.extend_from_slice(args);
        serde_json::from_str(run(&a).ok().trim()).expect("JSON")
    }

    fn operator(&self, dcp: &Proc, token: &str, args: &[&str]) -> String {
        let ca = self.ca();
        let mut a = vec![
            "operator", "--node", &dcp.url, "--token", token, "--ca", &ca,
        ];
        a.extend_from_slice(args);
        run(&a).ok()
    }

    fn device(&self, dcp: &Proc, token: &str, name: &str, class: &str, account: &str) -> CliDevice {
        let out = self.operator(dcp, token, &["enrol", account]);
        let code = out.trim().rsplit(' ').next().unwrap().to_string();
        let (maker_key, _) = maker_files(&self.dir);
        let mut d = CliDevice::at(&self.dir, name);
        let out = d
            .run(&[
                "init",
                "--node",
                &dcp.url,
                "--ca",
                &self.ca(),
                "--class",
                class,
                "--account",
                account,
                "--code",
                &code,
                "--root",
                &s(&self.dir.join(ROOT_FILE)),
                "--maker-key",
                &s(&maker_key),
                "--pin",
                PIN,
            ])
            .ok();
        assert!(out.contains("registered for account"), "{out}");
        d.pin = Some(PIN.to_string());
        d
    }

    fn settlement_account(&self, dcp: u32) -> i64 {
        self.cb(&["dcp", &dcp.to_string()])["balance"]
            .as_i64()
            .unwrap()
    }

    fn assert_reconciled(&self) {
        for (dcp, token) in [(&self.dcp1, T1), (&self.dcp2, T2)] {
            let out = self.operator(dcp, token, &["reconcile"]);
            assert!(out.trim().ends_with(": matches"), "{out}");
        }
        let inv = self.cb(&["invariant"]);
        assert_eq!(inv["holds"], true, "{inv}");
    }

    fn balance(&self, dcp: &Proc, token: &str, account: &str) -> i64 {
        let out = self.operator(dcp, token, &["balance", account]);
        out.trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{out}"))
    }
}

fn two_dcps(dbs: [String; 3], test: &str) {
    let tmp = temp_dir(test);
    let sc = Scheme::start(tmp.path(), dbs);
    sc.cb(&["mint", "--dcp", "1", "100000", "--idempotency-key", "m1"]);
    sc.cb(&["mint", "--dcp", "2", "100000", "--idempotency-key", "m2"]);
    // The same key again mints nothing.
    sc.cb(&["mint", "--dcp", "1", "100000", "--idempotency-key", "m1"]);
    assert_eq!(sc.settlement_account(1), 100_000);
    sc.operator(
        &sc.dcp1,
        T1,
        &["deposit", "alice", "20000", "--idempotency-key", "a"],
    );
    sc.operator(
        &sc.dcp1,
        T1,
        &["deposit", "carol", "5000", "--idempotency-key", "c"],
    );
    sc.operator(
        &sc.dcp2,
        T2,
        &["deposit", "bob", "20000", "--idempotency-key", "b"],
    );
    sc.assert_reconciled();

    let alice = sc.device(&sc.dcp1, T1, "alice", "card", "alice");
    let carol = sc.device(&sc.dcp1, T1, "carol", "phone", "carol");
    let bob = sc.device(&sc.dcp2, T2, "bob", "phone", "bob");
    assert_eq!(alice.ok(&["load", "8000"]).trim(), "loaded 8000");
    assert_eq!(sc.settlement_account(1), 92_000);

    // Offline across DCPs, both ways.
    pay_via_files(&sc.dir, "p1", &alice, &bob, 3_000);
    pay_via_files(&sc.dir, "p2", &bob, &carol, 1_000);
    // Bob renews and unloads at DCP 2; carol renews at DCP 1.
    bob.ok(&["renew"]);
    bob.ok(&["unload", "500"]);
    carol.ok(&["renew"]);
    assert_eq!(sc.balance(&sc.dcp2, T2, "bob"), 20_500);
    assert_eq!(sc.settlement_account(2), 100_500);
    // Online across DCPs: through the central ledger into bob's account.
    alice.ok(&["pay-online", "--to", "bob@2", "2000"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sc.balance(&sc.dcp2, T2, "bob") != 22_500 {
        assert!(
            Instant::now() < deadline,
            "the interbank credit never arrived"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sc.balance(&sc.dcp1, T1, "alice"), 10_000);
    assert_eq!(sc.settlement_account(1), 90_000);
    assert_eq!(sc.settlement_account(2), 102_500);
    sc.assert_reconciled();

    // A cloned card pays a customer of each DCP: the second renewal
    // finds the double spend; both payees keep their money.
    let clone = alice.clone_to(&sc.dir, "alice-clone");
    pay_via_files(&sc.dir, "p3", &alice, &carol, 4_000);
    pay_via_files(&sc.dir, "p4", &clone, &bob, 4_000);
    carol.ok(&["renew"]);
    bob.ok(&["renew"]);
    assert_eq!(sc.cb(&["double-spends"])["count"], 1);
    // The loss is the doubly spent token: alice's 5 000 (both payments
    // spent it whole, each with change).
    let inv = sc.cb(&["invariant"]);
    assert_eq!(inv["loss"], -5_000, "{inv}");
    sc.assert_reconciled();

    // The MDS, its own process, pulled the settled records from the
    // outbox and raised the double-spend alert.
    let deadline = Instant::now() + Duration::from_secs(20);
    let alerts = loop {
        let a = sc.cb_at(&sc.mds.url, &["alerts"]);
        if a.as_array()
            .is_some_and(|l| l.iter().any(|x| x["kind"] == "double_spend"))
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no double-spend alert at the MDS: {a}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert!(alerts.to_string().contains("critical"), "{alerts}");
    let ind = sc.cb_at(&sc.mds.url, &["indicators"]);
    assert!(ind["payments"].as_u64().unwrap_or(0) >= 4, "{ind}");
    // Its database names no SE and no account (decision 0007).
    let bytes = std::fs::read(&sc.mds_db).expect("the MDS database");
    for dev in [&alice, &bob, &carol] {
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dev.file(".json")).unwrap()).unwrap();
        let se_id = tally_api::parse_hash(cfg["se_id"].as_str().unwrap()).unwrap();
        assert!(
            !bytes.windows(32).any(|w| w == se_id.0),
            "an SE id in the MDS database"
        );
        assert!(
            !bytes
                .windows(dev.name.len())
                .any(|w| w == dev.name.as_bytes()),
            "an account name in the MDS database"
        );
    }
    // Only an operator reads the MDS; a DCP's certificate is refused.
    let tls = tally_tls::TlsDir::open(&sc.tls).unwrap();
    let (c, k) = tls.pair("dcp-1").unwrap();
    let dcp1 = tally_tls::client_agent(&tls.ca_pem().unwrap(), Some((&c, &k))).unwrap();
    let r = dcp1
        .get(format!("{}/mds/alerts", sc.mds.url))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The MDS's key revoked (THREATS T75): `tally cb --mds` checks the
    // MDS's key against the central bank's root-signed list and refuses
    // to read alerts from it at once — a stolen MDS key cannot hide an
    // alert. (Named by `--central`, the MDS is checked against the list
    // it relays: a revoked MDS cannot fetch a newer one, so that refusal
    // comes only once its last list is no longer current, ≤ 300 s.)
    let tls = s(&sc.tls);
    let cb_mds = |args: &[&str]| {
        let mut a = vec![
            "cb",
            "--central",
            &sc.central.url,
            "--mds",
            &sc.mds.url,
            "--tls",
            &tls,
        ];
        a.extend_from_slice(args);
        run(&a)
    };
    let before = cb_mds(&["alerts"]).ok();
    assert!(before.contains("double_spend"), "{before}");
    let mds_pem = s(&sc.tls.join("mds.pem"));
    let v = sc.cb(&["revoke-cert", &mds_pem]);
    assert_eq!(v["role"], "mds", "{v}");
    let refused = cb_mds(&["alerts"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("the server's key is revoked"),
        "{}",
        refused.stderr
    );
    // The central bank's own calls are unaffected.
    assert_eq!(sc.cb(&["invariant"])["holds"], true);
}

#[test]
fn two_dcps_over_mutual_tls_sqlite() {
    let tmp = temp_dir("parties-dbs");
    let dbs = ["central", "dcp1", "dcp2"].map(|n| s(&tmp.path().join(format!("{n}.sqlite"))));
    two_dcps(dbs, "parties-sqlite");
}

#[test]
fn two_dcps_over_mutual_tls_postgres() {
    let (Some(a), Some(b), Some(c)) = (
        Db::postgres("parties-central"),
        Db::postgres("parties-dcp1"),
        Db::postgres("parties-dcp2"),
    ) else {
        return;
    };
    two_dcps([a.url(), b.url(), c.url()], "parties-postgres");
}

/// A CBOR call to the central bank's DCP interface with `agent`.
fn rpc(agent: &ureq::Agent, central: &str, call: &CentralCall) -> Result<(u16, Vec<u8>), String> {
    let r = agent
        .post(format!("{central}/central/v1/rpc"))
        .header("content-type", "application/cbor")
        .send(&call.to_cbor()[..])
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.into_body().read_to_vec().map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn code_of(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).expect("error envelope");
    v["error"]["code"].as_u64().expect("code")
}

#[test]
fn the_central_bank_refuses_strangers_and_dcps_acting_for_another() {
    let tmp = temp_dir("parties-refusals");
    let dir = tmp.path();
    let dbs = ["central", "dcp1", "dcp2"].map(|n| s(&dir.join(format!("{n}.sqlite"))));
    let sc = Scheme::start(dir, dbs);
    sc.cb(&["mint", "--dcp", "1", "50000", "--idempotency-key", "m1"]);
    sc.cb(&["mint", "--dcp", "2", "50000", "--idempotency-key", "m2"]);
    sc.operator(
        &sc.dcp1,
        T1,
        &["deposit", "alice", "20000", "--idempotency-key", "a"],
    );
    let alice = sc.device(&sc.dcp1, T1, "alice", "card", "alice");
    alice.ok(&["load", "5000"]);
    let before = (
        sc.settlement_account(1),
        sc.settlement_account(2),
        sc.cb(&["invariant"]),
    );

    let tls = tally_tls::TlsDir::open(&sc.tls).unwrap();
    let ca = tls.ca_pem().unwrap();
    let with = |stem: Option<&str>| {
        let pair = stem.map(|st| tls.pair(st).unwrap());
        tally_tls::client_agent(&ca, pair.as_ref().map(|(c, k)| (c.as_str(), k.as_str()))).unwrap()
    };
    let central = &sc.central.url;
    // No client certificate: the handshake fails, no handler runs.
    let e = rpc(&with(None), central, &CentralCall::Trust).unwrap_err();
    assert!(!e.is_empty());
    // A certificate of another CA: refused the same way.
    let other = tmp.path().join("other-tls");
    run(&[
        "tls",
        "init",
        "--dir",
        &s(&other),
        "--keys",
        &s(&dir.join("other.keys")),
        "--dcp",
        "1",
    ])
    .ok();
    let other = tally_tls::TlsDir::open(&other).unwrap();
    let (c, k) = other.pair("dcp-1").unwrap();
    let foreign = tally_tls::client_agent(&ca, Some((&c, &k))).unwrap();
    assert!(rpc(&foreign, central, &CentralCall::Trust).is_err());
    // An operator's certificate is no DCP.
    let (status, body) = rpc(&with(Some("operator")), central, &CentralCall::Inbox).unwrap();
    assert_eq!(
        (status, code_of(&body)),
        (403, u64::from(tally_codes::CENTRAL_UNKNOWN_DCP))
    );
    // DCP 2 asking for the escrow digest of DCP 1's SE: unknown to it.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(alice.file(".json")).unwrap()).unwrap();
    let se_id: Hash32 = tally_api::parse_hash(cfg["se_id"].as_str().unwrap()).unwrap();
    let dcp2 = with(Some("dcp-2"));
    let (status, body) = rpc(&dcp2, central, &CentralCall::IdDigest(se_id)).unwrap();
    assert_eq!(
        (status, code_of(&body)),
        (404, u64::from(tally_codes::DCP_UNKNOWN_DEVICE))
    );
    // DCP 2 loading an Issue in DCP 1's name (or any key not its own)
    // against its settlement account: refused.
    let key = SecretKey::from_seed(Suite::Ed25519, &[9; 32]).unwrap();
    let issue = Issue::try_sign(
        &key,
        1,
        100,
        vec![Output {
            value: Amount(1_000),
            owner: key.public(),
        }],
    )
    .unwrap();
    let call = CentralCall::Call {
        op: Hash32([1; 32]),
        reply_key: Hash32([2; 32]),
        request: CentralRequest::Load { issue, class: 1 },
    };
    let (status, body) = rpc(&dcp2, central, &call).unwrap();
    assert_eq!(
        (status, code_of(&body)),
        (422, u64::from(tally_codes::CENTRAL_FOREIGN_ISSUE))
    );
    // A malformed body: refused, typed.
    let r = dcp2
        .post(format!("{central}/central/v1/rpc"))
        .send(&[0xff, 0x00][..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // The operator calls need the operator's certificate.
    let r = dcp2
        .get(format!("{central}/central/v1/admin/dcps/1"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Nothing changed.
    assert_eq!(
        (
            sc.settlement_account(1),
            sc.settlement_account(2),
            sc.cb(&["invariant"])
        ),
        before
    );
    sc.assert_reconciled();

    // The operator revokes DCP 2's role certificate (`tally cb
    // revoke-cert`): DCP 2's key is refused from then on, on the
    // connection it already has (401, code 1304) and at the handshake of
    // a new one; DCP 1 is still served.
    let v = sc.cb(&["revoke-cert", &s(&tls.cert_path("dcp-2"))]);
    assert_eq!(
        (v["role"].as_str(), v["new"].as_bool()),
        (Some("dcp-2"), Some(true))
    );
    // An error is the pooled connection closed: a new handshake, refused.
    if let Ok((status, body)) = rpc(&dcp2, central, &CentralCall::Trust) {
        assert_eq!(
            (status, code_of(&body)),
            (401, u64::from(tally_codes::CENTRAL_ROLE_REVOKED))
        );
    }
    assert!(rpc(&with(Some("dcp-2")), central, &CentralCall::Trust).is_err());
    let (status, _) = rpc(&with(Some("dcp-1")), central, &CentralCall::Trust).unwrap();
    assert_eq!(status, 200);
    // The DCP 2 process is cut off too: its own calls to the central bank
    // (here its reconciliation) get no answer it may act on (503, code
    // 1303: a revoked key's refusal says nothing about earlier calls).
    let ca = sc.ca();
    let out = run(&[
        "operator",
        "--node",
        &sc.dcp2.url,
        "--token",
        T2,
        "--ca",
        &ca,
        "reconcile",
    ])
    .fails_with(1);
    assert!(
        out.contains("code 1303") && out.contains("revoked"),
        "{out}"
    );
    assert_eq!(sc.cb(&["invariant"])["holds"], true);
}

#[test]
fn operations_complete_once_across_a_faulty_link_to_the_central_bank() {
    let tmp = temp_dir("parties-faults");
    let dir = tmp.path();
    let dbs = ["central", "dcp1", "dcp2"].map(|n| s(&dir.join(format!("{n}.sqlite"))));
    let sc = Scheme::start(dir, dbs);
    sc.cb(&["mint", "--dcp", "1", "100000", "--idempotency-key", "m1"]);
    sc.cb(&["mint", "--dcp", "2", "100000", "--idempotency-key", "m2"]);
    sc.operator(
        &sc.dcp1,
        T1,
        &["deposit", "alice", "30000", "--idempotency-key", "a"],
    );
    sc.operator(
        &sc.dcp2,
        T2,
        &["deposit", "bob", "1000", "--idempotency-key", "b"],
    );
    let alice = sc.device(&sc.dcp1, T1, "alice", "card", "alice");
    let bob = sc.device(&sc.dcp2, T2, "bob", "phone", "bob");

    // Each fault on a load, an interbank payment, a renewal and an unload
    // at DCP 1; the command fails while the link is bad, and succeeds
    // when it is run again after the link returns.
    let mut loaded = 0;
    let mut paid = 0;
    for (i, fault) in [DOWN, CUT_REPLY, DELAY].into_iter().enumerate() {
        sc.proxy.set(fault);
        let load = alice.run(&["load", "2000"]);
        let pay = alice.run(&["pay-online", "--to", "bob@2", "300"]);
        sc.proxy.set(PASS);
        if fault == DELAY {
            assert_eq!(load.code, 0, "{}", load.stderr);
            assert_eq!(pay.code, 0, "{}", pay.stderr);
        } else {
            assert_ne!(
                load.code, 0,
                "the load cannot finish without the central bank"
            );
            // The retry finishes the pending load first, then pays.
            let out = alice.ok(&["pay-online", "--to", "bob@2", "300"]);
            assert!(out.contains("2000"), "the pending load was finished: {out}");
        }
        loaded += 2_000;
        paid += 300;
        assert_eq!(alice.balance().balance, loaded, "round {i}");
        assert_eq!(
            sc.balance(&sc.dcp1, T1, "alice"),
            30_000 - loaded as i64 - paid,
            "round {i}"
        );
    }
    // Renewal and unload of what alice holds, through a cut reply.
    sc.proxy.set(CUT_REPLY);
    assert_ne!(alice.run(&["unload", "1000"]).code, 0);
    sc.proxy.set(PASS);
    alice.ok(&["balance"]);
    alice.ok(&["renew"]);
    assert_eq!(alice.balance().balance, loaded - 1_000);
    assert_eq!(
        sc.balance(&sc.dcp1, T1, "alice"),
        30_000 - loaded as i64 - paid + 1_000
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while sc.balance(&sc.dcp2, T2, "bob") != 1_000 + paid {
        assert!(
            Instant::now() < deadline,
            "bob got {}",
            sc.balance(&sc.dcp2, T2, "bob")
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sc.settlement_account(1),
        100_000 - loaded as i64 + 1_000 - paid
    );
    let _ = bob;
    sc.assert_reconciled();
}

/// The central bank's own server key revoked (THREATS T74): `tally cb
/// revoke-cert central.pem` records it; the DCP processes learn it from
/// the root-signed role revocation list within their next refresh and
/// refuse that key from then on: a device's load through DCP 2, which
/// needs the central bank, fails, says why, and moves nothing (the load
/// stays pending at the device, to finish once the central bank serves
/// under a new key).
#[test]
fn the_dcps_refuse_a_revoked_central_bank_key() {
    let tmp = temp_dir("parties-revoked-central");
    let dbs = ["central", "dcp1", "dcp2"].map(|n| s(&tmp.path().join(format!("{n}.sqlite"))));
    let mut sc = Scheme::start(tmp.path(), dbs);
    sc.cb(&["mint", "--dcp", "2", "10000", "--idempotency-key", "m2"]);
    sc.operator(
        &sc.dcp2,
        T2,
        &["deposit", "bob", "5000", "--idempotency-key", "b"],
    );
    let bob = sc.device(&sc.dcp2, T2, "bob", "phone", "bob");
    assert_eq!(bob.ok(&["load", "1000"]).trim(), "loaded 1000");
    assert_eq!(sc.settlement_account(2), 9_000);

    let central_pem = s(&sc.tls.join("central.pem"));
    let v = sc.cb(&["revoke-cert", &central_pem]);
    assert_eq!(v["role"], "central", "{v}");
    // Within a refresh (every second) DCP 2 refuses the key: its device's
    // next load cannot reach the central bank, and nothing moves.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ones = 0;
    loop {
        let r = bob.run(&["load", "1"]);
        if r.code != 0 {
            break;
        }
        ones += 1;
        assert!(
            Instant::now() < deadline,
            "DCP 2 still calls the revoked central bank key"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let before = (bob.balance().balance, sc.balance(&sc.dcp2, T2, "bob"));
    let err = bob.run(&["load", "100"]);
    assert_ne!(err.code, 0, "{}", err.stdout);
    assert!(
        err.stderr.contains("the server's key is revoked"),
        "{}",
        err.stderr
    );
    // The operator's own tool refuses the revoked key too: `tally cb`
    // fetches the root-signed list first (a stolen key cannot take a
    // mint or a revocation).
    let tls = s(&sc.tls);
    let cb = run(&[
        "cb",
        "--central",
        &sc.central.url,
        "--tls",
        &tls,
        "invariant",
    ]);
    assert_ne!(cb.code, 0, "{}", cb.stdout);
    assert!(
        cb.stderr.contains("the server's key is revoked"),
        "{}",
        cb.stderr
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (bob.balance().balance, sc.balance(&sc.dcp2, T2, "bob")),
        before
    );

    // Recovery: a fresh key for the central bank under the same root,
    // and the central bank restarted with it on the same address and
    // database. The DCPs and the operator take the new key (the root's
    // list revokes only the old one); nothing was lost meanwhile.
    let old_pem = std::fs::read_to_string(&central_pem).unwrap();
    let keys = s(&sc.dir.join("cb.keys"));
    let out = run(&[
        "tls", "issue", "--dir", &tls, "--keys", &keys, "--role", "central",
    ])
    .ok();
    assert!(out.contains("central.pem and central.key issued"), "{out}");
    let new_pem = std::fs::read_to_string(&central_pem).unwrap();
    assert_ne!(new_pem, old_pem, "a new certificate");
    sc.restart_central();
    let v = sc.cb(&["invariant"]);
    assert_eq!(v["holds"], true, "{v}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = bob.run(&["load", "100"]);
        if r.code == 0 {
            // (The refused loads left a certification to finish first.)
            assert!(r.stdout.trim().ends_with("loaded 100"), "{}", r.stdout);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "DCP 2 does not take the central bank's new key: {}",
            r.stderr
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Value moved only between bob's account and his device (a load
    // refused while the key was revoked may be finished by the wallet's
    // resume now, never twice), and every DCP's settlement account still
    // matches its customers.
    let after = (bob.balance().balance, sc.balance(&sc.dcp2, T2, "bob"));
    assert!(after.0 >= before.0 + 100, "{after:?} after {before:?}");
    assert_eq!(after.0 + after.1 as u64, before.0 + before.1 as u64);
    assert!(sc.settlement_account(2) <= 9_000 - ones - 100);
    sc.assert_reconciled();
}
