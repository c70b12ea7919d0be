//! The back office's router over TLS on 127.0.0.1 (issue 11, item 3):
//! a device pinning the root's CA reaches it and gets the root it pinned;
//! a device pinning another CA, or speaking plain HTTP, does not; with
//! mutual TLS an operator call without a role certificate is refused at
//! the handshake and mints nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use tally_api::{ApiConfig, BackgroundServer, HttpBackend};
use tally_core::{SecretKey, Suite};
use tally_dcp::{Backoffice, NodeKeys};
use tally_store::Store;
use tally_tls::{
    ClientAuth, Role, Validity, ca_certificate, cert_from_pem, certs_from_pem, client_agent,
    issue_role_cert, issue_server_cert, key_from_pem, server_config,
};
use tally_wallet::agent::Backend;

const TOKEN: &str = "test-operator-token";

struct Node {
    bo: Arc<Backoffice>,
    server: BackgroundServer,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Node {
    /// The node's own root (NodeKeys::development, what Backoffice::open
    /// uses) signs the CA; `mutual` asks every client for a role.
    fn start(mutual: bool) -> Node {
        Self::start_as(mutual, Role::Central)
    }

    /// With mutual TLS, the server presents a role certificate of `role`.
    fn start_as(mutual: bool, role: Role) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::sqlite(&dir.path().join("node.db")).expect("sqlite");
        let bo = Arc::new(Backoffice::open(store).expect("back office"));
        let root = NodeKeys::development().root;
        assert_eq!(root.public_key(), bo.root_key());
        let ca_pem = ca_certificate(&*root, Validity::days(1)).expect("CA");
        let (cert, key) = if mutual {
            issue_role_cert(&*root, &ca_pem, role, &[], Validity::days(1))
        } else {
            issue_server_cert(&*root, &ca_pem, &[], Validity::days(1))
        }
        .expect("server certificate");
        let auth = if mutual {
            ClientAuth::Required(cert_from_pem(&ca_pem).unwrap())
        } else {
            ClientAuth::None
        };
        let tls = server_config(
            certs_from_pem(&cert).unwrap(),
            key_from_pem(&key).unwrap(),
            auth,
        )
        .expect("TLS configuration");
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = BackgroundServer::start_tls(bo.clone(), addr, ApiConfig::new(TOKEN), tls)
            .expect("server");
        Node {
            bo,
            server,
            ca_pem,
            _dir: dir,
        }
    }
}

#[test]
fn a_device_pinning_the_root_ca_gets_the_root_it_pinned() {
    let node = Node::start(false);
    let base = node.server.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let mut device = HttpBackend::pinned(base.clone(), &node.ca_pem).expect("agent");
    let (root, _, _) = device.trust().expect("trust over TLS");
    assert_eq!(root, node.bo.root_key());
    // The pinned CA's key is that root.
    let ca = cert_from_pem(&node.ca_pem).unwrap();
    let ca_key = tally_tls::der::Certificate::parse(&ca)
        .unwrap()
        .ed25519_key()
        .unwrap();
    assert_eq!(ca_key.as_slice(), root.key_bytes());
    // A POST goes through too, and bad input still gets its typed error.
    let e = device.device(b"not a request").unwrap_err();
    assert!((400..500).contains(&e.status) && e.code != 0, "{e:?}");
}

#[test]
fn a_device_pinning_another_ca_or_speaking_plain_http_is_not_served() {
    let node = Node::start(false);
    let base = node.server.base_url();
    let other_root = SecretKey::from_seed(Suite::Ed25519, &[0x6f; 32]).unwrap();
    let other_ca = ca_certificate(&other_root, Validity::days(1)).unwrap();
    let mut misled = HttpBackend::pinned(base.clone(), &other_ca).expect("agent");
    let e = misled.trust().unwrap_err();
    assert_eq!(e.status, 0, "{e:?}");
    let plain = base.replacen("https://", "http://", 1);
    let e = HttpBackend::new(plain).trust().unwrap_err();
    assert_eq!(e.status, 0, "{e:?}");
}

fn minted(agent: &ureq::Agent, base: &str) -> i64 {
    let mut r = agent
        .get(format!("{base}/ledger/invariant"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .call()
        .expect("invariant");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["minted"].as_i64().expect("minted")
}

fn mint(agent: &ureq::Agent, base: &str, key: &str) -> Result<u16, ureq::Error> {
    agent
        .post(format!("{base}/v1/cb/mint"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .send(format!(r#"{{"idempotency_key":"{key}","amount":500}}"#))
        .map(|r| r.status().as_u16())
}

#[test]
fn with_mutual_tls_a_call_without_a_role_certificate_is_refused_and_mints_nothing() {
    let node = Node::start(true);
    let base = node.server.base_url();
    let root = NodeKeys::development().root;
    let (cert, key) =
        issue_role_cert(&*root, &node.ca_pem, Role::Operator, &[], Validity::days(1)).unwrap();
    let operator = client_agent(&node.ca_pem, Some((&cert, &key))).unwrap();
    let before = minted(&operator, &base);

    let anonymous = client_agent(&node.ca_pem, None).unwrap();
    assert!(mint(&anonymous, &base, "no-cert").is_err());
    // The device-facing server certificate has no role: not a party.
    let (api_cert, api_key) =
        issue_server_cert(&*root, &node.ca_pem, &[], Validity::days(1)).unwrap();
    let api = client_agent(&node.ca_pem, Some((&api_cert, &api_key))).unwrap();
    assert!(mint(&api, &base, "api-cert").is_err());
    assert_eq!(minted(&operator, &base), before, "a refused call minted");

    assert_eq!(mint(&operator, &base, "with-cert").unwrap(), 200);
    assert_eq!(minted(&operator, &base), before + 500);
}

/// A party's client checks the server's role: the central bank's clients
/// (a DCP, the MDS, `tally cb`) talk only to a server presenting the
/// central role, not to another party whose certificate the same CA
/// issued (a misdirected URL, a DNS answer pointing at another DCP).
#[test]
fn a_party_talks_only_to_a_server_of_the_role_it_expects() {
    let root = NodeKeys::development().root;
    for (server_role, expected, served) in [
        (Role::Central, Role::Central, true),
        (Role::Dcp(2), Role::Central, false),
        (Role::Mds, Role::Central, false),
        (Role::Central, Role::Mds, false),
    ] {
        let node = Node::start_as(true, server_role);
        let base = node.server.base_url();
        let (cert, key) =
            issue_role_cert(&*root, &node.ca_pem, Role::Operator, &[], Validity::days(1)).unwrap();
        let agent = tally_tls::party_agent(&node.ca_pem, (&cert, &key), expected).unwrap();
        let r = agent
            .get(format!("{base}/ledger/invariant"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .call();
        match r {
            Ok(r) if served => assert_eq!(r.status(), 200, "{server_role} as {expected}"),
            Err(_) if !served => {}
            other => panic!("server {server_role}, expected {expected}: {other:?}"),
        }
        // The role check adds to the CA's: a server under another CA is
        // refused whatever its role.
        if served {
            let other_root = SecretKey::from_seed(Suite::Ed25519, &[0x5e; 32]).unwrap();
            let other_ca = ca_certificate(&other_root, Validity::days(1)).unwrap();
            let (c2, k2) = issue_role_cert(
                &other_root,
                &other_ca,
                Role::Operator,
                &[],
                Validity::days(1),
            )
            .unwrap();
            let misled = tally_tls::party_agent(&other_ca, (&c2, &k2), expected).unwrap();
            assert!(
                misled
                    .get(format!("{base}/ledger/invariant"))
                    .call()
                    .is_err()
            );
        }
    }
}
