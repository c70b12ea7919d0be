//! Issue 10, the way a user meets it with the real binaries: a command
//! whose reply is lost on the way back (a proxy between device and node
//! forwards the request, lets the node execute it, and drops the answer)
//! is simply run again. The wallet kept the signed request before sending
//! it, so the retry finishes that operation instead of starting another:
//! the account is debited once and the SE holds what it should.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{CliDevice, Db, Node, operator, temp_dir};

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

/// What the proxy does to the next device requests: let `pass` answers
/// through, then drop `drop` answers (the node executed those requests),
/// then let everything through.
#[derive(Default)]
struct Plan {
    pass: usize,
    drop: usize,
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
                    let device = req.starts_with(b"POST /v1/devices/request ");
                    let upstream = TcpStream::connect(&addr).unwrap();
                    (&upstream).write_all(&req).unwrap();
                    let Some(answer) = read_message(&mut BufReader::new(upstream)) else {
                        return;
                    };
                    let lose = device && {
                        let mut p = plan.lock().unwrap();
                        if p.pass > 0 {
                            p.pass -= 1;
                            false
                        } else if p.drop > 0 {
                            p.drop -= 1;
                            true
                        } else {
                            false
                        }
                    };
                    if lose {
                        // Executed by the node; the answer never arrives.
                        let _ = to_client.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if to_client.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
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
    *plan.lock().unwrap() = Plan { pass: 0, drop: 1 };
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
    *plan.lock().unwrap() = Plan { pass: 1, drop: 1 };
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
