//! The node's signing keys in an HSM: a SoftHSM2 token initialised in a
//! temporary directory (SOFTHSM2_CONF), Ed25519 keys generated in it by
//! `tally keys pkcs11-generate`, the real `tally node` started on them
//! (`--pkcs11-module`), and devices through load, offline payment,
//! renewal, sync and unload. Every object the node signed with a
//! long-lived key is checked under the token's public keys: the policy,
//! the DCP certificate and the sealing key under the root, the settlement
//! key's certificate under the root (and the key is the token's), the
//! revocation list under the root, and every Issue under the DCP key.
//! No private key is in a file or the database. Needs softhsm2 (Debian
//! package `softhsm2`): without it the test fails when `CI` is set and
//! skips loudly otherwise.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{CliDevice, Db, Node, ROOT_FILE, operator, pay_via_files, run, temp_dir};
use tally_api::TrustBundle;
use tally_core::cert::SettlementKey;
use tally_core::codec::Cbor;
use tally_core::crypto::verify;
use tally_core::{Package, PublicKey, Record};

const TOKEN_LABEL: &str = "tally-e2e";
const USER_PIN: &str = "918273";

fn softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The module and `softhsm2-util`, or `None` (and a loud skip) when
/// softhsm2 is not installed; a failure under CI.
fn softhsm() -> Option<PathBuf> {
    let util = Command::new("softhsm2-util").arg("--version").output();
    match (softhsm_module(), util) {
        (Some(m), Ok(o)) if o.status.success() => Some(m),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but SoftHSM2 is missing (install the Debian package softhsm2; .ci/run does)"
            );
            eprintln!(
                "\n*** SKIPPED e2e_hsm: SoftHSM2 is not installed (apt-get install softhsm2) ***\n"
            );
            None
        }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// GET `path` from the node, body as text (HTTP/1.1, connection close).
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("response");
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every Issue in a package's ancestry is signed by `dcp`.
fn assert_issues_signed_by(pkg: &Path, dcp: &PublicKey) -> usize {
    let pkg = Package::from_cbor(&std::fs::read(pkg).expect("package")).expect("decodes");
    let mut n = 0;
    for r in &pkg.ancestry {
        if let Record::Issue(i) = r {
            assert_eq!(i.issuer, dcp.id(), "issued under the token's DCP key");
            verify(dcp, &i.id().0, &i.signature).expect("Issue signature under the token's key");
            n += 1;
        }
    }
    n
}

#[test]
fn node_signs_with_keys_in_softhsm2() {
    let Some(module) = softhsm() else { return };
    let dir = temp_dir("hsm");
    let d = dir.path();

    // A token of our own: SoftHSM2 keeps it under the directory its
    // configuration names; every process of this test reads that file.
    let tokens = d.join("tokens");
    std::fs::create_dir_all(&tokens).expect("token dir");
    let conf = d.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            s(&tokens)
        ),
    )
    .expect("softhsm2.conf");
    // SAFETY: set before this test (the only one in this binary) starts
    // any thread or child process; children inherit it.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--pin",
            USER_PIN,
            "--so-pin",
            "24681357",
        ])
        .output()
        .expect("softhsm2-util");
    assert!(
        init.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let pin = d.join("token.pin");
    std::fs::write(&pin, format!("{USER_PIN}\n")).expect("pin file");
    let module = s(&module);

    // Keys generated inside the token; only public keys come out.
    let out = run(&[
        "keys",
        "pkcs11-generate",
        "--module",
        &module,
        "--token",
        TOKEN_LABEL,
        "--pin-file",
        &s(&pin),
        "--out",
        &s(d),
    ])
    .ok();
    assert_eq!(out.lines().count(), 3, "{out}");
    let public = |label: &str| {
        PublicKey::from_cbor(&std::fs::read(d.join(format!("{label}.pub"))).expect("pub file"))
            .expect("a public key")
    };
    let (root, settlement, dcp) = (
        public("tally-root"),
        public("tally-settlement"),
        public("tally-dcp"),
    );
    // Generating a label twice is refused.
    run(&[
        "keys",
        "pkcs11-generate",
        "--module",
        &module,
        "--token",
        TOKEN_LABEL,
        "--pin-file",
        &s(&pin),
        "--label",
        "tally-root",
    ])
    .fails_with(2);

    let hsm_args = [
        "--pkcs11-module",
        module.as_str(),
        "--pkcs11-token",
        TOKEN_LABEL,
        "--pkcs11-pin-file",
        &s(&pin),
    ];
    // A wrong PIN: the node does not start.
    let bad_pin = d.join("bad.pin");
    std::fs::write(&bad_pin, "000000\n").expect("pin file");
    let refused = run(&[
        "node",
        "--database-url",
        &s(&d.join("other.sqlite")),
        "--listen",
        "127.0.0.1:0",
        "--operator-token",
        "t",
        "--pkcs11-module",
        &module,
        "--pkcs11-token",
        TOKEN_LABEL,
        "--pkcs11-pin-file",
        &s(&bad_pin),
    ]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("C_Login"), "{}", refused.stderr);

    let db = Db::sqlite(d);
    let mut node = Node::start_with(&db.url(), d, "node", &hsm_args);
    let url = node.url();
    // The SEs' trust anchor is the token's root.
    let anchor = PublicKey::from_cbor(&std::fs::read(d.join(ROOT_FILE)).expect("root file"))
        .expect("root key");
    assert_eq!(anchor, root);
    // No signing key in a file: the key directory holds the opening key only.
    let mut files: Vec<String> = std::fs::read_dir(d.join("node.keys"))
        .expect("key dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["opening.key"]);

    operator(&url, &["mint", "100000", "--idempotency-key", "m"]);
    operator(
        &url,
        &["deposit", "alice", "20000", "--idempotency-key", "a"],
    );
    operator(&url, &["deposit", "bob", "5000", "--idempotency-key", "b"]);
    let alice = CliDevice::init(d, "alice", &url, "phone", "alice");
    let bob = CliDevice::init(d, "bob", &url, "card", "bob");
    assert_eq!(alice.ok(&["load", "6000"]).trim(), "loaded 6000");
    let (_, p1) = pay_via_files(d, "p1", &alice, &bob, 2_500);
    assert_eq!(assert_issues_signed_by(&p1, &dcp), 1);
    // Renewal settles the payment (a settlement result signed by the
    // token's settlement key, checked by the DCP) and issues a fresh token.
    assert_eq!(bob.ok(&["renew"]).trim(), "renewed 2500");

    // The node restarts on the same token and database.
    node.restart();
    alice.ok(&["sync"]);
    let (_, p2) = pay_via_files(d, "p2", &bob, &alice, 1_000);
    assert_eq!(assert_issues_signed_by(&p2, &dcp), 1, "bob's renewed token");
    assert_eq!(alice.ok(&["renew"]).trim(), "renewed 4500");
    alice.ok(&["unload", "500"]);
    assert_eq!(alice.ok(&["account"]).trim(), "account balance 14500");
    let inv = node.operator().invariant().expect("invariant");
    assert_eq!(inv.minted, 100_000, "{inv}");

    // What the node publishes verifies under the token's keys.
    let bundle =
        TrustBundle::from_cbor(&node.operator().trust_bundle().expect("trust")).expect("bundle");
    assert_eq!(bundle.root, root);
    verify(
        &root,
        &bundle.policy.signed_message().0,
        &bundle.policy.signature,
    )
    .expect("policy signed by the token's root");
    let cert = bundle.policy.dcps.first().expect("the DCP's certificate");
    assert_eq!(cert.key, dcp);
    verify(&root, &cert.signed_message().0, &cert.signature).expect("DCP certificate");
    bundle.sealing_key.verify(&root).expect("sealing key");
    verify(
        &root,
        &bundle.revocations.signed_message().0,
        &bundle.revocations.signature,
    )
    .expect("revocation list");
    let json: serde_json::Value =
        serde_json::from_str(&http_get(node.addr, "/v1/trust.json")).expect("trust.json");
    let sk = SettlementKey::from_cbor(&unhex(
        json["settlement_key"]["cbor"]
            .as_str()
            .expect("settlement key"),
    ))
    .expect("settlement key");
    assert_eq!(sk.key, settlement);
    sk.verify(&root)
        .expect("settlement key certified by the token's root");
    assert_ne!(settlement, root);
    drop(node);

    // The database holds no key seed.
    let central = tally_store::Store::open(&db.url()).expect("db");
    let seeds = tally_dcp::legacy_seeds(
        &central,
        &tally_store::Store::open(&format!("{}.dcp", db.url())).expect("dcp db"),
    )
    .expect("read");
    assert!(seeds.is_empty());
}
