//! The authenticated links over real TCP on 127.0.0.1: mutual TLS between
//! parties (the handler sees the peer's role; no certificate, another
//! CA's certificate, a certificate without a role, an expired one are
//! refused at the handshake and change nothing), server-authenticated TLS
//! to devices (the pinned CA decides), and the CA's key being the root's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use axum::routing::{get, post};
use axum::{Extension, Router};
use rustls::ServerConfig;
use tally_core::{PublicKey, SecretKey, Signature, Signer, Suite};
use tally_tls::issue::API_STEM;
use tally_tls::{
    ClientAuth, PeerRole, Role, TlsDir, TlsError, Validity, ca_certificate, cert_from_pem,
    certs_from_pem, client_agent, issue_role_cert, issue_server_cert, key_from_pem, serve_tls,
    server_config,
};
use tokio::sync::oneshot;

fn root(label: u8) -> SecretKey {
    SecretKey::from_seed(Suite::Ed25519, &[label; 32]).expect("any 32 bytes are an Ed25519 seed")
}

/// A CA under `root` and the server's role certificate.
struct Pki {
    root: SecretKey,
    ca_pem: String,
}

impl Pki {
    fn new(label: u8) -> Pki {
        let root = root(label);
        let ca_pem = ca_certificate(&root, Validity::days(30)).unwrap();
        Pki { root, ca_pem }
    }

    fn role(&self, role: Role) -> (String, String) {
        issue_role_cert(&self.root, &self.ca_pem, role, &[], Validity::days(30)).unwrap()
    }

    fn server(&self, role: Role, auth: ClientAuth) -> Arc<ServerConfig> {
        let (cert, key) = self.role(role);
        server_config(
            certs_from_pem(&cert).unwrap(),
            key_from_pem(&key).unwrap(),
            auth,
        )
        .unwrap()
    }

    fn mutual(&self) -> ClientAuth {
        ClientAuth::Required(cert_from_pem(&self.ca_pem).unwrap())
    }
}

/// A router on a background runtime: `GET /whoami` answers the peer's
/// role (or `none`), `POST /count` counts its calls.
struct Server {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    fn start(config: Arc<ServerConfig>) -> Server {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let router = Router::new()
            .route(
                "/whoami",
                get(|peer: Option<PeerRole>| async move {
                    match peer {
                        Some(PeerRole(role)) => role.to_string(),
                        None => "none".to_owned(),
                    }
                }),
            )
            // A handler for parties only, and the extension read directly.
            .route(
                "/party",
                get(
                    |PeerRole(role): PeerRole, Extension(seen): Extension<PeerRole>| async move {
                        assert_eq!(seen, PeerRole(role));
                        role.uri()
                    },
                ),
            )
            .route(
                "/count",
                post(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { "counted" }
                }),
            );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve_tls(listener, router, config, async {
                    let _ = rx.await;
                })
                .await
            })
        });
        Server {
            addr,
            calls,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    fn whoami(&self, agent: &ureq::Agent) -> Result<String, ureq::Error> {
        let mut resp = agent.get(self.url("localhost", "/whoami")).call()?;
        assert_eq!(resp.status(), 200);
        resp.body_mut().read_to_string()
    }

    fn party(&self, agent: &ureq::Agent) -> (u16, String) {
        let mut resp = agent.get(self.url("localhost", "/party")).call().unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    fn count(&self, agent: &ureq::Agent) -> Result<u16, ureq::Error> {
        agent
            .post(self.url("127.0.0.1", "/count"))
            .send_empty()
            .map(|r| r.status().as_u16())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

fn agent(pki: &Pki, client: Option<&(String, String)>) -> ureq::Agent {
    client_agent(&pki.ca_pem, client.map(|(c, k)| (c.as_str(), k.as_str()))).unwrap()
}

#[test]
fn mutual_tls_hands_the_handler_the_peers_role() {
    let pki = Pki::new(1);
    let server = Server::start(pki.server(Role::Central, pki.mutual()));
    for role in [Role::Dcp(1), Role::Dcp(2), Role::Mds, Role::Operator] {
        let a = agent(&pki, Some(&pki.role(role)));
        assert_eq!(server.whoami(&a).unwrap(), role.to_string());
    }
    let dcp = agent(&pki, Some(&pki.role(Role::Dcp(1))));
    assert_eq!(server.party(&dcp), (200, "urn:tally:role:dcp:1".to_owned()));
    assert_eq!(server.count(&dcp).unwrap(), 200);
    assert_eq!(server.calls(), 1);
}

#[test]
fn a_client_without_a_certificate_is_refused_and_changes_nothing() {
    let pki = Pki::new(2);
    let server = Server::start(pki.server(Role::Central, pki.mutual()));
    let anonymous = agent(&pki, None);
    assert!(server.count(&anonymous).is_err());
    assert!(server.whoami(&anonymous).is_err());
    assert_eq!(server.calls(), 0);
    // The server still serves the parties.
    let mds = agent(&pki, Some(&pki.role(Role::Mds)));
    assert_eq!(server.count(&mds).unwrap(), 200);
    assert_eq!(server.calls(), 1);
}

#[test]
fn a_certificate_from_another_ca_is_refused_and_changes_nothing() {
    let pki = Pki::new(3);
    let other = Pki::new(4);
    let server = Server::start(pki.server(Role::Central, pki.mutual()));
    // The impostor trusts the real CA (it knows the server), but its own
    // certificate is from another CA with the same subject names.
    let impostor = client_agent(
        &pki.ca_pem,
        Some((&other.role(Role::Dcp(1)).0, &other.role(Role::Dcp(1)).1)),
    );
    // Cert and key above are from two different issues: refused locally.
    assert!(matches!(impostor, Err(TlsError::Config(_))));
    let (cert, key) = other.role(Role::Dcp(1));
    let impostor = client_agent(&pki.ca_pem, Some((&cert, &key))).unwrap();
    assert!(server.count(&impostor).is_err());
    assert_eq!(server.calls(), 0);
}

#[test]
fn an_expired_role_certificate_is_refused() {
    let root = root(5);
    let now = SystemTime::now();
    let since_last_week = Validity {
        not_before: now - Duration::from_secs(7 * 86_400),
        not_after: now + Duration::from_secs(86_400),
    };
    let pki = Pki {
        ca_pem: ca_certificate(&root, since_last_week).unwrap(),
        root,
    };
    let server = Server::start(pki.server(Role::Central, pki.mutual()));
    let past = Validity {
        not_before: now - Duration::from_secs(3 * 86_400),
        not_after: now - Duration::from_secs(86_400),
    };
    let (cert, key) = issue_role_cert(&pki.root, &pki.ca_pem, Role::Dcp(1), &[], past).unwrap();
    let expired = client_agent(&pki.ca_pem, Some((&cert, &key))).unwrap();
    assert!(server.count(&expired).is_err());
    assert_eq!(server.calls(), 0);
    // The control: a current certificate of the same CA is served.
    let current = agent(&pki, Some(&pki.role(Role::Dcp(1))));
    assert_eq!(server.count(&current).unwrap(), 200);
    assert_eq!(server.calls(), 1);
}

/// A CA made with rcgen's own key (not through the Signer) to craft the
/// certificates `issue_role_cert` never makes: client certificates with
/// no role, a malformed role, two roles.
mod crafted {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };

    pub struct Ca {
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        pub fn new() -> Ca {
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            let pem = params.self_signed(&key).unwrap().pem();
            Ca {
                pem,
                issuer: Issuer::new(params, key),
            }
        }

        /// A client-and-server certificate for localhost with these URIs.
        pub fn leaf(&self, uris: &[&str]) -> (String, String) {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            let mut params = CertificateParams::new(hosts).unwrap();
            for u in uris {
                params
                    .subject_alt_names
                    .push(SanType::URI((*u).try_into().unwrap()));
            }
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }
}

#[test]
fn a_client_certificate_without_exactly_one_valid_role_is_refused() {
    let ca = crafted::Ca::new();
    let (cert, key) = ca.leaf(&["urn:tally:role:central"]);
    let config = server_config(
        certs_from_pem(&cert).unwrap(),
        key_from_pem(&key).unwrap(),
        ClientAuth::Required(cert_from_pem(&ca.pem).unwrap()),
    )
    .unwrap();
    let server = Server::start(config);
    let client = |uris: &[&str]| {
        let (c, k) = ca.leaf(uris);
        client_agent(&ca.pem, Some((&c, &k))).unwrap()
    };
    // The control: the same CA, the same key usages, one role — served.
    let control = client(&["urn:tally:role:dcp:9"]);
    assert_eq!(server.whoami(&control).unwrap(), "dcp-9");
    assert_eq!(server.count(&control).unwrap(), 200);
    let before = server.calls();
    assert_eq!(before, 1);
    for uris in [
        &[][..],
        &["https://example.org/dcp/1"][..],
        &["urn:tally:role:dcp:01"][..],
        &["urn:tally:role:root"][..],
        &["urn:tally:role:dcp:1", "urn:tally:role:dcp:2"][..],
    ] {
        assert!(server.count(&client(uris)).is_err(), "{uris:?} was served");
    }
    assert_eq!(server.calls(), before);
}

#[test]
fn the_device_api_certificate_is_not_a_party() {
    let pki = Pki::new(6);
    let server = Server::start(pki.server(Role::Central, pki.mutual()));
    let (cert, key) = issue_server_cert(&pki.root, &pki.ca_pem, &[], Validity::days(1)).unwrap();
    let api = client_agent(&pki.ca_pem, Some((&cert, &key))).unwrap();
    assert!(server.count(&api).is_err());
    assert_eq!(server.calls(), 0);
}

#[test]
fn a_device_pinning_the_ca_reaches_the_server_and_one_pinning_another_refuses_it() {
    let pki = Pki::new(7);
    let (cert, key) = issue_server_cert(&pki.root, &pki.ca_pem, &[], Validity::days(1)).unwrap();
    let config = server_config(
        certs_from_pem(&cert).unwrap(),
        key_from_pem(&key).unwrap(),
        ClientAuth::None,
    )
    .unwrap();
    let server = Server::start(config);
    let device = agent(&pki, None);
    assert_eq!(server.whoami(&device).unwrap(), "none");
    // A handler for parties refuses a device's connection.
    assert_eq!(server.party(&device).0, 401);
    assert_eq!(server.count(&device).unwrap(), 200);
    assert_eq!(server.calls(), 1);

    let other = Pki::new(8);
    let misled = agent(&other, None);
    assert!(server.whoami(&misled).is_err());
    assert!(server.count(&misled).is_err());
    assert_eq!(server.calls(), 1);
    // The pinned agent never speaks plain HTTP.
    assert!(
        device
            .get(format!("http://127.0.0.1:{}/whoami", server.addr.port()))
            .call()
            .is_err()
    );
}

#[test]
fn the_ca_key_is_the_root_key() {
    let pki = Pki::new(9);
    let ca = cert_from_pem(&pki.ca_pem).unwrap();
    let key = tally_tls::der::Certificate::parse(&ca)
        .unwrap()
        .ed25519_key()
        .unwrap();
    assert_eq!(key.as_slice(), pki.root.public().key_bytes());
    // The same, seen by webpki: the trust anchor's SubjectPublicKeyInfo is
    // the RFC 8410 encoding of the root's key.
    let anchor = webpki_spki(&ca);
    let mut expected = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    expected.extend_from_slice(pki.root.public().key_bytes());
    assert_eq!(anchor, expected[2..], "SPKI content");
    // And a leaf under it verifies, so the root key signed it.
    let (leaf, _) = pki.role(Role::Dcp(3));
    let leaf = cert_from_pem(&leaf).unwrap();
    assert_eq!(tally_tls::role_of(&leaf), Ok(Some(Role::Dcp(3))));
}

fn webpki_spki(ca: &rustls_pki_types::CertificateDer<'_>) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone().into_owned()).unwrap();
    roots.roots[0].subject_public_key_info.as_ref().to_vec()
}

/// A signer that fails, and one that signs with another key than it
/// claims: neither yields a CA or a role certificate.
struct Failing;
impl Signer for Failing {
    type Error = &'static str;
    fn public_key(&self) -> PublicKey {
        root(10).public()
    }
    fn try_sign(&self, _: &[u8]) -> Result<Signature, &'static str> {
        Err("token removed")
    }
}

struct Lying;
impl Signer for Lying {
    type Error = core::convert::Infallible;
    fn public_key(&self) -> PublicKey {
        root(11).public()
    }
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, Self::Error> {
        Ok(root(12).sign(msg))
    }
}

#[test]
fn a_failing_or_lying_signer_issues_nothing() {
    assert_eq!(
        ca_certificate(&Failing, Validity::days(1)),
        Err(TlsError::Signer("token removed".into()))
    );
    assert!(matches!(
        ca_certificate(&Lying, Validity::days(1)),
        Err(TlsError::Signer(_))
    ));
    // A CA of one root cannot issue with another root's signer.
    let pki = Pki::new(13);
    assert_eq!(
        issue_role_cert(&root(14), &pki.ca_pem, Role::Mds, &[], Validity::days(1)),
        Err(TlsError::CaKeyMismatch)
    );
    // A host that is no DNS name or IP address is refused.
    for host in ["bad host", "", "a..b", "-x.example"] {
        assert!(
            matches!(
                issue_role_cert(
                    &pki.root,
                    &pki.ca_pem,
                    Role::Central,
                    &[host.to_owned()],
                    Validity::days(1)
                ),
                Err(TlsError::Issue(_))
            ),
            "{host:?}"
        );
    }
    let named = ["node-1.example.org".to_owned(), "10.1.2.3".to_owned()];
    issue_role_cert(
        &pki.root,
        &pki.ca_pem,
        Role::Central,
        &named,
        Validity::days(1),
    )
    .unwrap();
    let p256 = SecretKey::from_seed(Suite::EcdsaP256Sha256, &[1; 32]).unwrap();
    assert!(matches!(
        ca_certificate(&p256, Validity::days(1)),
        Err(TlsError::UnsupportedKey(_))
    ));
}

#[test]
fn the_tls_dir_keeps_keys_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = TlsDir::open_or_create(&tmp.path().join("tls")).unwrap();
    let pki = Pki::new(15);
    dir.write_ca(&pki.ca_pem).unwrap();
    let (cert, key) = pki.role(Role::Dcp(1));
    dir.write_pair(&Role::Dcp(1).to_string(), &cert, &key)
        .unwrap();
    assert!(dir.path().join("dcp-1.pem").exists());
    let key_path = dir.path().join("dcp-1.key");
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(dir.pair("dcp-1").unwrap(), (cert, key));
    assert_eq!(dir.ca_pem().unwrap(), pki.ca_pem);
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        dir.pair("dcp-1"),
        Err(TlsError::Exposed { mode: 0o644, .. })
    ));
    assert!(dir.pair(API_STEM).is_err());
}

/// A key pin is RFC 7469's: SHA-256 of the certificate's DER
/// SubjectPublicKeyInfo (the same bytes rcgen reports for the key), so it
/// names the key: two certificates for one role get different pins.
#[test]
fn a_key_pin_is_the_sha256_of_the_subject_public_key_info() {
    use sha2::Digest;
    let pki = Pki::new(0x21);
    let (cert, key) = pki.role(Role::Dcp(1));
    let pair = rcgen::KeyPair::from_pem(&key).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
    let pin = tally_tls::key_pin(&cert_from_pem(&cert).unwrap()).unwrap();
    assert_eq!(pin, <[u8; 32]>::from(sha2::Sha256::digest(&spki)));
    let (again, _) = pki.role(Role::Dcp(1));
    assert_ne!(
        pin,
        tally_tls::key_pin(&cert_from_pem(&again).unwrap()).unwrap()
    );
}
