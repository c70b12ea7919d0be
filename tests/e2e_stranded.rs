//! Issue 10, the way a user meets it with the real binaries: a command
//! whose reply is lost on the way back (a proxy between device and node
//! forwards the request, lets the node execute it, and drops the answer)
//! is simply run again. The wallet kept the signed request before sending
//! it, so the retry finishes that operation instead of starting another:
//! the account is debited once and the SE holds what it should. Then
//! every device operation (load, unload, renew, sync, online payment,
//! balance) under every fault (request dropped, reply dropped, request
//! duplicated, request delayed) on its first and second request. The
//! matrix found a real bug: a retried `unload` that finished the
//! interrupted unload then asked the node for the balance; when that
//! failed (rate limit), the user's next retry unloaded a second time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{CliDevice, Db, Node, operator, pay_via_files, temp_dir};

/// One HTTP/1.1 message (head and Content-Length body) from `r`.
fn read_message(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        head.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    head.extend_from_slice(&body);
    Some(head)
}

/// A fault on one device request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The request never reaches the node.
    DropRequest,
    /// The node executes it; its answer never arrives.
    DropReply,
    /// The node gets it twice; the device sees the second answer.
    Duplicate,
    /// It arrives late.
    Delay,
}

/// What the proxy does to the next device requests: let `pass` through,
/// then apply `fault` to `count` of them, then let everything through.
#[derive(Default)]
struct Plan {
    pass: usize,
    fault: Option<Fault>,
    count: usize,
}

impl Plan {
    fn lose(pass: usize, count: usize) -> Plan {
        Plan {
            pass,
            fault: Some(Fault::DropReply),
            count,
        }
    }
    /// The fault for the next device request, if any.
    fn next(&mut self) -> Option<Fault> {
        if self.pass > 0 {
            self.pass -= 1;
            return None;
        }
        if self.count > 0 {
            self.count -= 1;
            return self.fault;
        }
        None
    }
}

fn forward(addr: &str, req: &[u8]) -> Option<Vec<u8>> {
    let upstream = TcpStream::connect(addr).ok()?;
    (&upstream).write_all(req).ok()?;
    read_message(&mut BufReader::new(upstream))
}

/// A proxy to `node` that follows `plan` for device requests.
fn lossy_proxy(node: String, plan: Arc<Mutex<Plan>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let node = node.clone();
            let plan = plan.clone();
            std::thread::spawn(move || {
                let mut from_client = BufReader::new(client.try_clone().unwrap());
                let mut to_client = client;
                let addr = node.trim_start_matches("http://").to_string();
                while let Some(req) = read_message(&mut from_client) {
                    // Device requests and registrations (`init`).
                    let device = req.starts_with(b"POST /v1/devices/request ")
                        || req.starts_with(b"POST /v1/devices/register ");
                    let fault = if device {
                        plan.lock().unwrap().next()
                    } else {
                        None
                    };
                    let answer = match fault {
                        Some(Fault::DropRequest) => None,
                        Some(Fault::DropReply) => {
                            let _ = forward(&addr, &req);
                            None
                        }
                        Some(Fault::Duplicate) => {
                            let _ = forward(&addr, &req);
                            forward(&addr, &req)
                        }
                        Some(Fault::Delay) => {
                            std::thread::sleep(std::time::Duration::from_millis(300));
                            forward(&addr, &req)
                        }
                        None => forward(&addr, &req),
                    };
                    let Some(answer) = answer else {
                        let _ = to_client.shutdown(std::net::Shutdown::Both);
                        return;
                    };
                    if to_client.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Runs the command again until it succeeds, as a user would (the node
/// rate-limits an SE to 4 requests a second after a burst of 64, which
/// this test's pace exceeds: 429 means "later").
fn again_until_ok(d: &CliDevice, args: &[&str]) {
    for _ in 0..100 {
        let r = d.run(args);
        if r.code == 0 {
            return;
        }
        assert!(
            r.stderr.contains("(429"),
            "`{}`: {}",
            args.join(" "),
            r.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    panic!("`{}` never succeeded", args.join(" "));
}

/// Points the device's terminal settings at `url`.
fn use_node(d: &CliDevice, url: &str) {
    let p = d.file(".json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["node"] = serde_json::Value::String(url.to_string());
    std::fs::write(&p, v.to_string()).unwrap();
}

fn story(db: Db, dir: &Path, test: &str) {
    let node = Node::start(&db.url(), dir, test);
    let url = node.url();
    operator(&url, &["mint", "1000000", "--idempotency-key", "m"]);
    operator(
        &url,
        &["deposit", "alice", "10000", "--idempotency-key", "d"],
    );
    let alice = CliDevice::init(dir, "alice", &url, "phone", "alice");
    alice.ok(&["load", "3000"]);
    let plan = Arc::new(Mutex::new(Plan::default()));
    let proxy = lossy_proxy(url.clone(), plan.clone());
    use_node(&alice, &proxy);

    // `load 1000` whose answer is lost, then `load 1000` again.
    *plan.lock().unwrap() = Plan::lose(0, 1);
    alice.run(&["load", "1000"]).fails_with(1);
    let status = alice.ok(&["status"]);
    assert!(status.contains("pending: load of 1000"), "{status}");
    let again = alice.ok(&["load", "1000"]);
    assert!(
        again.contains("finished the interrupted load of 1000 first"),
        "{again}"
    );
    assert_eq!(alice.balance().balance, 4_000);
    assert_eq!(
        node.operator().balance("alice").unwrap(),
        6_000,
        "debited once"
    );
    assert!(alice.ok(&["status"]).contains("pending: nothing"));

    // `unload 1000`: the redemption order arrives, the SE pays it, the
    // Redeem's answer is lost; then `unload 1000` again.
    let before = node.operator().balance("alice").unwrap();
    *plan.lock().unwrap() = Plan::lose(1, 1);
    alice.run(&["unload", "1000"]).fails_with(1);
    let status = alice.ok(&["status"]);
    assert!(status.contains("unsettled redemption of 1000"), "{status}");
    let again = alice.ok(&["unload", "1000"]);
    assert!(
        again.contains("finished the interrupted unload of 1000 first"),
        "{again}"
    );
    assert_eq!(alice.balance().balance, 3_000, "one unload of 1000");
    assert_eq!(node.operator().balance("alice").unwrap(), before + 1_000);
    let inv = operator(&url, &["invariant"]);
    assert!(inv.starts_with("holds"), "{inv}");

    // A load the SE can no longer take when its answer arrives: `load
    // 15000` on a meter (IoT: holds 20 000) whose answer is lost, then an
    // offline payment of 10 000 to it, then `load 15000` again. The SE
    // refuses the token and cancels it; the account gets the 15 000 back.
    operator(
        &url,
        &["deposit", "meter", "30000", "--idempotency-key", "d-meter"],
    );
    operator(
        &url,
        &["deposit", "pump", "30000", "--idempotency-key", "d-pump"],
    );
    let meter = CliDevice::init(dir, "meter", &url, "iot", "meter");
    let pump = CliDevice::init(dir, "pump", &url, "iot", "pump");
    pump.ok(&["load", "10000"]);
    use_node(&meter, &proxy);
    *plan.lock().unwrap() = Plan::lose(0, 1);
    meter.run(&["load", "15000"]).fails_with(1);
    assert_eq!(node.operator().balance("meter").unwrap(), 15_000, "debited");
    pay_via_files(dir, "fill-meter", &pump, &meter, 10_000);
    let again = meter.ok(&["load", "15000"]);
    assert!(
        again.contains("cancelled: 15000 back to the account"),
        "{again}"
    );
    assert!(again.contains("nothing loaded"), "{again}");
    assert_eq!(meter.balance().balance, 10_000);
    assert_eq!(
        node.operator().balance("meter").unwrap(),
        30_000,
        "credited back once"
    );
    assert!(meter.ok(&["status"]).contains("pending: nothing"));
    let inv = operator(&url, &["invariant"]);
    assert!(inv.starts_with("holds"), "{inv}");

    // Every device operation under every fault, on its first and second
    // request: the command is run once through the faulty proxy and, if it
    // failed, once more; then every balance is exactly what one execution
    // gives.
    operator(
        &url,
        &["deposit", "bob", "10000", "--idempotency-key", "d-bob"],
    );
    let bob = CliDevice::init(dir, "bob", &url, "phone", "bob");
    use_node(&bob, &proxy);
    let (mut se, mut acct, mut bob_acct) = (
        alice.balance().balance,
        node.operator().balance("alice").unwrap(),
        node.operator().balance("bob").unwrap(),
    );
    let faults = [
        Fault::DropRequest,
        Fault::DropReply,
        Fault::Duplicate,
        Fault::Delay,
    ];
    let mut failed_first = 0;
    for fault in faults {
        for pass in 0..2 {
            for op in ["load", "unload", "renew", "sync", "pay-online", "account"] {
                let args: Vec<String> = match op {
                    "load" => vec!["load".into(), "300".into()],
                    "unload" => vec!["unload".into(), "200".into()],
                    "pay-online" => {
                        vec![
                            "pay-online".into(),
                            "--to".into(),
                            "bob".into(),
                            "100".into(),
                        ]
                    }
                    other => vec![other.into()],
                };
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                *plan.lock().unwrap() = Plan {
                    pass,
                    fault: Some(fault),
                    count: 1,
                };
                if alice.run(&args).code != 0 {
                    failed_first += 1;
                    *plan.lock().unwrap() = Plan::default();
                    again_until_ok(&alice, &args);
                }
                match op {
                    "load" => (se, acct) = (se + 300, acct - 300),
                    "unload" => (se, acct) = (se - 200, acct + 200),
                    "pay-online" => (acct, bob_acct) = (acct - 100, bob_acct + 100),
                    _ => {}
                }
                let what = format!("{op} with {fault:?} on request {}", pass + 1);
                assert_eq!(alice.balance().balance, se, "SE after {what}");
                assert_eq!(
                    node.operator().balance("alice").unwrap(),
                    acct,
                    "alice after {what}"
                );
                assert_eq!(
                    node.operator().balance("bob").unwrap(),
                    bob_acct,
                    "bob after {what}"
                );
                assert!(alice.ok(&["status"]).contains("pending: nothing"), "{what}");
            }
        }
    }
    assert!(
        failed_first >= 8,
        "the faults bit: {failed_first} first runs failed"
    );
    let inv = operator(&url, &["invariant"]);
    assert!(inv.starts_with("holds"), "{inv}");

    // `init` whose registration is executed and its answer lost: the SE
    // and its settings are kept (the one-time code is now bound to it),
    // and the same `init` run again finishes it instead of leaving a
    // registered SE no command can use.
    operator(
        &url,
        &["deposit", "erin", "1000", "--idempotency-key", "d-erin"],
    );
    let erin = CliDevice {
        pin: Some(common::PIN.to_string()),
        ..CliDevice::at(dir, "erin")
    };
    let code = common::enrolment_code(&url, "erin");
    let init = common::init_args(dir, &proxy, "phone", "erin", &code);
    let init: Vec<&str> = init.iter().map(String::as_str).collect();
    *plan.lock().unwrap() = Plan::lose(0, 1);
    let err = erin.run(&init).fails_with(1);
    assert!(
        err.contains("run the same `tally device init` again"),
        "{err}"
    );
    assert!(erin.state.exists() && erin.file(".json").exists(), "kept");
    *plan.lock().unwrap() = Plan::default();
    let out = erin.ok(&init);
    assert!(out.contains("finished the interrupted init"), "{out}");
    assert!(out.contains("registered for account erin"), "{out}");
    // Run once more on a finished device: the same, nothing new made.
    assert!(erin.ok(&init).contains("registered for account erin"));
    erin.ok(&["load", "400"]);
    assert_eq!(erin.balance().balance, 400);
    assert_eq!(node.operator().balance("erin").unwrap(), 600);
    let inv = operator(&url, &["invariant"]);
    assert!(inv.starts_with("holds"), "{inv}");
    drop(node);
}

#[test]
fn lost_replies_sqlite() {
    let dir = temp_dir("stranded_sqlite");
    story(Db::sqlite(dir.path()), dir.path(), "stranded_sqlite");
}

#[test]
fn lost_replies_postgres() {
    if let Some(db) = Db::postgres("e2e_stranded::lost_replies_postgres") {
        let dir = temp_dir("stranded_postgres");
        story(db, dir.path(), "stranded_postgres");
    }
}
