//! The API end to end: a node on 127.0.0.1:0 (SQLite in a temp dir),
//! devices with in-memory SEs behind APDUs talking to it through
//! `HttpBackend`, and the same story through `InProcess`; then every kind
//! of bad input, each of which must come back as its typed JSON error and
//! leave the ledger untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tally_api::{
    ApiConfig, BackgroundServer, DeviceView, HttpBackend, InProcess, InvariantView, OperatorClient,
    TrustBundle,
};
use tally_core::codec::Cbor;
use tally_core::dcp::{DeviceOp, DeviceRequest, DeviceResponse, attachment_digest};
use tally_core::policy::device_class;
use tally_core::{Amount, Hash32, PublicKey, SecretKey, Signature, Suite};
use tally_dcp::Backoffice;
use tally_se::{RequestParams, SeError};
use tally_store::Store;
use tally_wallet::agent::{Agent, Backend, BackendError, manufacture};
use tally_wallet::testkit::{TestCard, blank_card};
use tally_wallet::{ApduLink, SeLink, pay_offline};

const TOKEN: &str = "test-operator-token";

struct Node {
    bo: Arc<Backoffice>,
    server: BackgroundServer,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::sqlite(&dir.path().join("node.db")).expect("sqlite");
        let bo = Arc::new(Backoffice::open(store).expect("back office"));
        bo.trust_manufacturer(maker_key().public())
            .expect("trust the test manufacturer");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let server =
            BackgroundServer::start(bo.clone(), addr, ApiConfig::new(TOKEN)).expect("server");
        Node {
            bo,
            server,
            _dir: dir,
        }
    }
    fn base(&self) -> String {
        self.server.base_url()
    }
    fn op(&self) -> OperatorClient {
        OperatorClient::new(self.base(), TOKEN)
    }
    fn backend(&self) -> HttpBackend {
        HttpBackend::new(self.base())
    }
}

fn card(label: &[u8]) -> ApduLink<TestCard> {
    ApduLink::select(blank_card(label), 4096).expect("select applet")
}

/// The test SE manufacturer's key; every node here trusts it.
fn maker_key() -> SecretKey {
    SecretKey::from_seed(Suite::Ed25519, &[0x4d; 32]).expect("maker key")
}

/// Manufactures `se` (personalised with `root`, certified by the test
/// manufacturer as `maker`) and enrols it under `account` with the
/// account's one-time `code`.
fn enrol<'a>(
    se: &'a mut ApduLink<TestCard>,
    backend: &'a mut dyn Backend,
    root: PublicKey,
    class: u8,
    maker: &str,
    account: &str,
    code: &str,
) -> Agent<'a> {
    let cert = manufacture(se, class, root, &maker_key(), maker).expect("manufacture");
    Agent::onboard(se, backend, cert, account, code).expect("onboard")
}

/// What the flow needs from an operator, over HTTP or by direct calls.
trait Operator {
    fn mint(&self, idem: &str, amount: u64) -> InvariantView;
    fn deposit(&self, account: &str, idem: &str, amount: u64) -> i64;
    fn balance(&self, account: &str) -> i64;
    fn invariant(&self) -> InvariantView;
    fn enrolment_code(&self, account: &str) -> String;
    fn root(&self) -> PublicKey;
}

impl Operator for OperatorClient {
    fn mint(&self, idem: &str, amount: u64) -> InvariantView {
        OperatorClient::mint(self, idem, amount).expect("mint")
    }
    fn deposit(&self, account: &str, idem: &str, amount: u64) -> i64 {
        OperatorClient::deposit(self, account, idem, amount).expect("deposit")
    }
    fn balance(&self, account: &str) -> i64 {
        OperatorClient::balance(self, account).expect("balance")
    }
    fn invariant(&self) -> InvariantView {
        OperatorClient::invariant(self).expect("invariant")
    }
    fn enrolment_code(&self, account: &str) -> String {
        OperatorClient::enrolment_code(self, account).expect("enrolment code")
    }
    fn root(&self) -> PublicKey {
        TrustBundle::from_cbor(&self.trust_bundle().expect("trust"))
            .expect("trust bundle")
            .root
    }
}

impl Operator for Arc<Backoffice> {
    fn mint(&self, idem: &str, amount: u64) -> InvariantView {
        Backoffice::mint(self, idem, amount).expect("mint").into()
    }
    fn deposit(&self, account: &str, idem: &str, amount: u64) -> i64 {
        Backoffice::deposit(self, idem, account, amount).expect("deposit")
    }
    fn balance(&self, account: &str) -> i64 {
        self.account_balance(account).expect("balance")
    }
    fn invariant(&self) -> InvariantView {
        Backoffice::invariant(self).expect("invariant").into()
    }
    fn enrolment_code(&self, account: &str) -> String {
        Backoffice::enrolment_code(self, account).expect("enrolment code")
    }
    fn root(&self) -> PublicKey {
        self.root_key()
    }
}

/// Two devices under two accounts: mint, deposit, load, pay offline,
/// renew both, unload one; every balance and the invariant checked.
fn payment_story(
    mut alice_backend: Box<dyn Backend>,
    mut bob_backend: Box<dyn Backend>,
    op: &dyn Operator,
) {
    let inv = op.mint("mint-1", 1_000_000);
    assert!(inv.holds);
    assert_eq!(inv.minted, 1_000_000);
    assert_eq!(op.deposit("alice", "dep-alice", 100_000), 100_000);
    assert_eq!(op.deposit("bob", "dep-bob", 50_000), 50_000);

    let mut alice_se = card(b"alice");
    let mut bob_se = card(b"bob");
    let (alice_code, bob_code) = (op.enrolment_code("alice"), op.enrolment_code("bob"));
    let mut alice = enrol(
        &mut alice_se,
        &mut *alice_backend,
        op.root(),
        device_class::CARD,
        "Test cards Ltd",
        "alice",
        &alice_code,
    );
    let mut bob = enrol(
        &mut bob_se,
        &mut *bob_backend,
        op.root(),
        device_class::PHONE,
        "Test phones Ltd",
        "bob",
        &bob_code,
    );
    assert_ne!(alice.se_id, bob.se_id);
    alice.se.change_pin(None, b"1234").expect("set PIN");

    alice.load(30_000).expect("alice loads");
    bob.load(10_000).expect("bob loads");
    assert_eq!(op.balance("alice"), 70_000);
    assert_eq!(op.balance("bob"), 40_000);
    assert_eq!(op.invariant().offline_float, 40_000);

    // Above the card's no-PIN limit: refused until the cardholder is verified.
    let e = pay_offline(&mut *alice.se, &mut *bob.se, Amount(7_000)).unwrap_err();
    assert!(e.is(&SeError::CardholderVerificationRequired), "{e}");
    assert_eq!(alice.se.status().expect("status").balance, Amount(30_000));
    alice.se.verify_pin(b"1234").expect("PIN");
    pay_offline(&mut *alice.se, &mut *bob.se, Amount(7_000)).expect("offline payment");
    assert_eq!(alice.se.status().expect("status").balance, Amount(23_000));
    assert_eq!(bob.se.status().expect("status").balance, Amount(17_000));

    assert_eq!(alice.renew().expect("alice renews"), Amount(23_000));
    assert_eq!(bob.renew().expect("bob renews"), Amount(17_000));
    assert_eq!(bob.unload(5_000).expect("bob unloads"), 45_000);
    assert_eq!(bob.se.status().expect("status").balance, Amount(12_000));
    assert_eq!(alice.account_balance().expect("device balance"), 70_000);
    alice.sync().expect("alice syncs");
    bob.sync().expect("bob syncs");

    assert_eq!(op.balance("alice"), 70_000);
    assert_eq!(op.balance("bob"), 45_000);
    let inv = op.invariant();
    assert_eq!(
        inv,
        InvariantView {
            minted: 1_000_000,
            redeemed: 0,
            // The DCP's settlement account: its own 850 000 + alice
            // 70 000 + bob 45 000 (customers' accounts are in its book)
            accounts: 965_000,
            offline_float: 35_000,
            loss: 0,
            issuance: -1_000_000,
            negative_accounts: 0,
            // mint, 2 loads, 1 unload (deposits are the DCP's own book)
            journal_entries: 4,
            // The running totals kept per transaction equal the re-sum.
            totals_match: true,
            holds: true,
        }
    );
}

#[test]
fn payment_story_over_http() {
    let node = Node::start();
    payment_story(
        Box::new(node.backend()),
        Box::new(node.backend()),
        &node.op(),
    );
    // The published invariant and the operator's view are the same thing.
    let published: InvariantView = get_json(&node, "/ledger/invariant", None).2;
    assert_eq!(published, node.op().invariant().expect("invariant"));
    assert!(published.holds);
    let devices = node.op().devices().expect("devices");
    assert_eq!(devices.len(), 2);
    let mut classes: Vec<_> = devices
        .iter()
        .map(|d: &DeviceView| d.class_name.as_str())
        .collect();
    classes.sort_unstable();
    assert_eq!(classes, ["card", "phone"]);
    assert!(
        devices
            .iter()
            .all(|d| d.status == "active" && d.se_id.len() == 64)
    );
    assert!(node.op().double_spends().expect("double spends").is_empty());
}

#[test]
fn payment_story_in_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bo = Arc::new(
        Backoffice::open(Store::sqlite(&dir.path().join("node.db")).expect("sqlite"))
            .expect("back office"),
    );
    bo.trust_manufacturer(maker_key().public())
        .expect("trust the test manufacturer");
    payment_story(
        Box::new(InProcess(bo.clone())),
        Box::new(InProcess(bo.clone())),
        &bo,
    );
}

// ---- raw HTTP helpers -----------------------------------------------------

fn raw_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// (status, content type, body)
fn send(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let url = format!("{}{path}", node.base());
    let a = raw_agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let r = match method {
        "GET" => {
            let mut rb = a.get(&url);
            if let Some(h) = &auth {
                rb = rb.header("authorization", h);
            }
            rb.call()
        }
        "POST" => {
            let mut rb = a.post(&url).header("content-type", content_type);
            if let Some(h) = &auth {
                rb = rb.header("authorization", h);
            }
            rb.send(body)
        }
        "DELETE" => a.delete(&url).call(),
        _ => panic!("method {method}"),
    };
    let mut resp = r.expect("HTTP exchange");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("body");
    (status, ct, body)
}

fn get_json<T: serde::de::DeserializeOwned>(
    node: &Node,
    path: &str,
    token: Option<&str>,
) -> (u16, String, T) {
    let (s, ct, b) = send(node, "GET", path, token, "", &[]);
    let v = serde_json::from_slice(&b)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&b)));
    (s, ct, v)
}

/// Asserts the answer is the JSON error envelope with `status` and `code`.
fn assert_error(answer: (u16, String, Vec<u8>), status: u16, code: u16) -> String {
    let (s, ct, body) = answer;
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(s, status, "status of {text}");
    assert!(
        ct.starts_with("application/json"),
        "content type {ct} of {text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
    assert_eq!(v["error"]["code"], code, "code of {text}");
    let message = v["error"]["message"].as_str().expect("message").to_string();
    assert!(!message.is_empty());
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "only the error member: {text}"
    );
    message
}

fn published_invariant(node: &Node) -> serde_json::Value {
    let (s, _, v) = get_json::<serde_json::Value>(node, "/ledger/invariant", None);
    assert_eq!(s, 200);
    v
}

/// A request built and signed by the SE (BUILD REQUEST).
fn built(se: &mut dyn SeLink, params: RequestParams) -> DeviceRequest {
    se.build_request(&params).expect("build request")
}

/// A request the real SE never builds, signed with its attestation key
/// through the test hook: an attacker who extracted the SE's key.
fn forged(se: &ApduLink<TestCard>, counter: u64, op: DeviceOp) -> Vec<u8> {
    se.card
        .applet
        .sign_request_unchecked(counter, op)
        .expect("sign")
        .to_cbor()
}

#[test]
fn bad_input_gets_typed_errors_and_changes_nothing() {
    let node = Node::start();
    let op = node.op();
    op.mint("mint-1", 500_000).expect("mint");
    op.deposit("carol", "dep-carol", 20_000).expect("deposit");
    let mut backend = node.backend();
    let mut se = card(b"carol");
    let code = op.enrolment_code("carol").expect("enrolment code");
    let se_id = {
        let mut carol = enrol(
            &mut se,
            &mut backend,
            node.bo.root_key(),
            device_class::PHONE,
            "Test phones Ltd",
            "carol",
            &code,
        );
        carol.load(2_000).expect("load");
        carol.se_id
    };
    // The counter of the last request the back office accepted.
    let last = se.card.applet.request_counter();

    let before = published_invariant(&node);
    assert_eq!(before["holds"], true);

    // Malformed CBOR, on both device routes.
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &[0xff, 0x00],
        ),
        400,
        101,
    );
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/register",
            None,
            "application/cbor",
            &[0x85, 0x01],
        ),
        400,
        101,
    );
    // A valid request with a trailing byte is malformed too.
    let mut trailing = built(&mut se, RequestParams::Balance).to_cbor();
    trailing.push(0);
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &trailing,
        ),
        400,
        101,
    );

    // Malformed JSON, unknown fields, negative amounts, empty keys.
    for body in [
        &b"{not json"[..],
        br#"{"idempotency_key":"k","amount":5,"extra":1}"#,
        br#"{"idempotency_key":"k","amount":-5}"#,
        br#"{"idempotency_key":"","amount":5}"#,
        br#"{"amount":5}"#,
    ] {
        assert_error(
            send(
                &node,
                "POST",
                "/v1/cb/mint",
                Some(TOKEN),
                "application/json",
                body,
            ),
            400,
            101,
        );
    }
    assert_error(
        send(
            &node,
            "POST",
            "/v1/accounts/carol/deposit",
            Some(TOKEN),
            "application/json",
            b"[]",
        ),
        400,
        101,
    );
    // An account name a device could never register under.
    assert_error(
        send(
            &node,
            "POST",
            "/v1/accounts/ca%20rol/deposit",
            Some(TOKEN),
            "application/json",
            br#"{"idempotency_key":"x","amount":5}"#,
        ),
        400,
        tally_api::code::BAD_ACCOUNT_NAME,
    );

    // A body over the limit (1 MiB by default): 413, as JSON.
    let big = vec![0u8; (1 << 20) + 1];
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &big,
        ),
        413,
        tally_api::code::BODY_TOO_LARGE,
    );
    assert_error(
        send(
            &node,
            "POST",
            "/v1/cb/mint",
            Some(TOKEN),
            "application/json",
            &big,
        ),
        413,
        tally_api::code::BODY_TOO_LARGE,
    );

    // Signed for one operation (and kind), sent with another: bad signature.
    let mut swapped = built(&mut se, RequestParams::Balance);
    assert_eq!((swapped.se_id, swapped.counter), (se_id, last + 2));
    swapped.op = DeviceOp::PayOnline {
        to_account: "carol".into(),
        amount: 1,
    };
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &swapped.to_cbor(),
        ),
        403,
        52,
    );

    // The counter of the last request again, with another operation (the
    // SE never signs a counter twice: signed with its extracted key).
    let replay = forged(&se, last, DeviceOp::Balance);
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &replay,
        ),
        409,
        53,
    );

    // A device the directory does not know.
    let mut stranger = built(&mut se, RequestParams::Balance);
    stranger.se_id = Hash32([7; 32]);
    let stranger = stranger.to_cbor();
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &stranger,
        ),
        404,
        50,
    );

    // Operator calls without a token, with a wrong one.
    let mint = br#"{"idempotency_key":"mint-2","amount":1000}"#;
    assert_error(
        send(&node, "POST", "/v1/cb/mint", None, "application/json", mint),
        401,
        tally_api::code::UNAUTHORIZED,
    );
    assert_error(
        send(
            &node,
            "POST",
            "/v1/cb/mint",
            Some("guess"),
            "application/json",
            mint,
        ),
        401,
        tally_api::code::UNAUTHORIZED,
    );
    for path in ["/v1/devices", "/v1/double-spends", "/v1/accounts/carol"] {
        assert_error(send(&node, "GET", path, None, "", &[]), 401, 60);
    }
    assert_error(
        send(&node, "POST", "/v1/epoch/advance", None, "", &[]),
        401,
        60,
    );

    // A reused idempotency key with another amount; an unknown account.
    let reuse = br#"{"idempotency_key":"mint-1","amount":1}"#;
    assert_error(
        send(
            &node,
            "POST",
            "/v1/cb/mint",
            Some(TOKEN),
            "application/json",
            reuse,
        ),
        409,
        12,
    );
    assert_error(
        send(&node, "GET", "/v1/accounts/nobody", Some(TOKEN), "", &[]),
        404,
        10,
    );
    // Refused by the ledger's rules: a zero deposit, an online payment
    // above the balance.
    assert_error(
        send(
            &node,
            "POST",
            "/v1/accounts/carol/deposit",
            Some(TOKEN),
            "application/json",
            br#"{"idempotency_key":"zero","amount":0}"#,
        ),
        422,
        13,
    );
    // (An online payment from a phone needs the cardholder's PIN first.)
    let pay = RequestParams::PayOnline {
        to_account: "carol".into(),
        amount: 1_000_000,
    };
    se.change_pin(None, b"2468").expect("set PIN");
    let e = se.build_request(&pay).unwrap_err();
    assert!(e.is(&SeError::CardholderVerificationRequired), "{e}");
    se.verify_pin(b"2468").expect("PIN");
    let too_much = built(&mut se, pay).to_cbor();
    let m = assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &too_much,
        ),
        422,
        14,
    );
    assert!(m.contains("same"), "{m}");

    // No such route, no such method: JSON too.
    assert_error(send(&node, "GET", "/v2/nothing", None, "", &[]), 404, 62);
    assert_error(send(&node, "DELETE", "/v1/trust", None, "", &[]), 405, 63);

    assert_eq!(
        published_invariant(&node),
        before,
        "a rejection changed the ledger"
    );

    // The same mint again (same key, same amount) is a no-op.
    let again = op.mint("mint-1", 500_000).expect("idempotent mint");
    assert_eq!(serde_json::to_value(again).expect("json"), before);
}

#[test]
fn identical_replay_returns_identical_bytes() {
    let node = Node::start();
    let op = node.op();
    op.mint("m", 100_000).expect("mint");
    op.deposit("dave", "d", 10_000).expect("deposit");
    let mut backend = node.backend();
    let mut se = card(b"dave");
    let code = op.enrolment_code("dave").expect("enrolment code");
    let se_id = enrol(
        &mut se,
        &mut backend,
        node.bo.root_key(),
        device_class::CARD,
        "Test cards Ltd",
        "dave",
        &code,
    )
    .se_id;
    let certify = built(&mut se, RequestParams::Certify { n: 1 });
    let DeviceOp::Certify { keys } = &certify.op else {
        panic!("not a certify request");
    };
    let key = keys[0];
    let certify = certify.to_cbor();
    let load = built(&mut se, RequestParams::Load { amount: 3_000 });
    assert!(matches!(load.op, DeviceOp::Load { amount: 3_000, .. }));
    let load = load.to_cbor();

    let (s, ct, certs) = send(
        &node,
        "POST",
        "/v1/devices/request",
        None,
        "application/cbor",
        &certify,
    );
    assert_eq!((s, ct.as_str()), (200, "application/cbor"));
    let DeviceResponse::Certificates(certs) = DeviceResponse::from_cbor(&certs).expect("response")
    else {
        panic!("not certificates");
    };
    assert_eq!(certs[0].key, key);
    se.install_certificate(&certs[0]).expect("install");

    let first = send(
        &node,
        "POST",
        "/v1/devices/request",
        None,
        "application/cbor",
        &load,
    );
    assert_eq!(first.0, 200);
    let after_first = published_invariant(&node);
    let second = send(
        &node,
        "POST",
        "/v1/devices/request",
        None,
        "application/cbor",
        &load,
    );
    assert_eq!(second.0, 200);
    assert_eq!(
        first.2, second.2,
        "a replay must return the stored response"
    );
    assert_eq!(
        published_invariant(&node),
        after_first,
        "a replay must not load twice"
    );
    assert_eq!(op.balance("dave").expect("balance"), 7_000);

    let DeviceResponse::Issued(issue) = DeviceResponse::from_cbor(&first.2).expect("response")
    else {
        panic!("not an issue");
    };
    assert_eq!(se.import_issue(&issue).expect("import"), Amount(3_000));
    // The agent goes on with the SE's next counter.
    let mut dave = Agent {
        se: &mut se,
        backend: &mut backend,
        se_id,
        pending: None,
    };
    assert_eq!(dave.account_balance().expect("balance"), 7_000);
}

#[test]
fn in_process_and_http_map_errors_the_same_way() {
    let node = Node::start();
    let mut http = node.backend();
    let mut local = InProcess(node.bo.clone());
    let cases: [&[u8]; 2] = [&[0xff], &[0x85, 0x01, 0x58, 0x20]];
    for body in cases {
        let a = http.device(body).unwrap_err();
        let b = local.device(body).unwrap_err();
        assert_eq!(a, b);
        assert_eq!((a.status, a.code), (400, 101));
    }
    let unknown = DeviceRequest {
        se_id: Hash32([9; 32]),
        counter: 1,
        op: DeviceOp::Balance,
        signature: Signature::new(Suite::Ed25519, [1; 64]),
        attachment: Vec::new(),
    }
    .to_cbor();
    let a = http.device(&unknown).unwrap_err();
    assert_eq!(a, local.device(&unknown).unwrap_err());
    assert_eq!(
        a,
        BackendError {
            status: 404,
            code: 50,
            message: "unknown device".into()
        }
    );
    // Trust: the same objects both ways.
    assert_eq!(http.trust().expect("trust"), local.trust().expect("trust"));
}

#[test]
fn public_surface_trust_metrics_openapi_dashboard() {
    let node = Node::start();
    let op = node.op();
    op.mint("m", 250_000).expect("mint");
    op.deposit("frank", "d", 1_000).expect("deposit");
    assert_eq!(op.balance("frank").expect("balance"), 1_000);
    let mut backend = node.backend();
    let mut se = card(b"frank");
    let code = op.enrolment_code("frank").expect("enrolment code");
    let mut frank = enrol(
        &mut se,
        &mut backend,
        node.bo.root_key(),
        device_class::IOT,
        "<b>Meters & Co</b>",
        "frank",
        &code,
    );
    frank.load(500).expect("load");

    // Trust, CBOR and JSON.
    let (s, ct, bytes) = send(&node, "GET", "/v1/trust", None, "", &[]);
    assert_eq!((s, ct.as_str()), (200, "application/cbor"));
    let t = TrustBundle::from_cbor(&bytes).expect("trust bundle");
    assert_eq!(t.root, node.bo.root_key());
    assert_eq!(op.trust_bundle().expect("trust"), bytes);
    let (s, _, j) = get_json::<serde_json::Value>(&node, "/v1/trust.json", None);
    assert_eq!(s, 200);
    assert_eq!(j["policy"]["currency"], "XTS");
    assert_eq!(
        j["root"]["cbor"].as_str().map(str::len),
        Some(2 * t.root.to_cbor().len())
    );
    assert_eq!(j["epoch"], 1);

    assert_eq!(op.advance_epoch().expect("advance"), 2);
    let (_, _, j) = get_json::<serde_json::Value>(&node, "/v1/trust.json", None);
    assert_eq!(j["epoch"], 2);

    // Metrics: ledger gauges and templated route labels.
    let (s, ct, body) = send(&node, "GET", "/metrics", None, "", &[]);
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    let m = String::from_utf8(body).expect("utf-8");
    for line in [
        "tally_ledger_minted 250000\n",
        "tally_ledger_offline_float 500\n",
        "tally_ledger_loss 0\n",
        "tally_invariant_holds 1\n",
        "tally_epoch 2\n",
        "tally_double_spends 0\n",
        "tally_http_requests_total{route=\"/v1/devices/request\",status=\"200\"} ",
        "tally_http_requests_total{route=\"/v1/accounts/{name}\",status=\"200\"} 1\n",
        "tally_http_requests_total{route=\"/v1/devices/register\",status=\"200\"} 1\n",
        "# TYPE tally_http_requests_total counter\n",
    ] {
        assert!(m.contains(line), "metrics lack {line:?}:\n{m}");
    }

    // OpenAPI: every route, with the error schema.
    let (s, _, doc) = get_json::<serde_json::Value>(&node, "/openapi.json", None);
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in tally_api::ROUTES {
        assert!(doc["paths"][*path][*method].is_object(), "{method} {path}");
    }
    assert!(doc["components"]["schemas"]["Error"].is_object());
    assert_eq!(
        doc["paths"]["/v1/devices/request"]["post"]["requestBody"]["content"]
            .as_object()
            .map(|c| c.contains_key("application/cbor")),
        Some(true)
    );

    // Dashboard: server-rendered, escaped, linked.
    let (s, ct, page) = send(&node, "GET", "/", None, "", &[]);
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    let page = String::from_utf8(page).expect("utf-8");
    assert!(page.contains("<span id=\"invariant\" class=\"ok\">holds</span>"));
    assert!(page.contains("<span id=\"devices\">1</span>"));
    assert!(page.contains("<span id=\"double-spends\">0</span>"));
    assert!(page.contains("<td class=\"n\">250000</td>"));
    assert!(page.contains("href=\"/metrics\"") && page.contains("href=\"/openapi.json\""));
    assert!(!page.contains("<script"));
    assert!(
        !page.contains("<b>Meters"),
        "device text must be escaped or absent"
    );
}

#[test]
fn graceful_stop_then_clients_see_connection_errors() {
    let node = Node::start();
    let base = node.base();
    let Node { server, bo, _dir } = node;
    server.stop().expect("clean stop");
    let e = HttpBackend::new(base.clone()).trust().unwrap_err();
    assert_eq!((e.status, e.code), (0, 0));
    let e = OperatorClient::new(base, TOKEN).invariant().unwrap_err();
    assert_eq!(e.status, 0);
    drop(bo);
}

/// Copies an SE's whole storage: what a cloned-SE attacker does.
fn clone_se(link: &mut ApduLink<TestCard>, label: &[u8]) -> ApduLink<TestCard> {
    use tally_core::testkit::TestEntropy;
    use tally_se::storage::MemStorage;
    use tally_se::{Applet, Sealing};
    let boot = |st: MemStorage, l: &[u8]| {
        Applet::boot(st, Sealing::None, TestEntropy::new(l)).expect("boot")
    };
    let real = std::mem::replace(&mut link.card.applet, boot(MemStorage::new(1024), b"tmp"));
    let storage = real.into_storage();
    let copy = MemStorage::from_bytes(storage.as_bytes().to_vec());
    link.card.applet = boot(storage, b"original");
    ApduLink::select(tally_se::dispatch::Card::new(boot(copy, label)), 4096).expect("select")
}

#[test]
fn cloned_se_double_spend_is_caught_listed_and_booked_to_loss() {
    let node = Node::start();
    let op = node.op();
    op.mint("m", 100_000).expect("mint");
    for (who, amount) in [("mallory", 5_000), ("carol", 1_000), ("bob", 1_000)] {
        op.deposit(who, &format!("d-{who}"), amount)
            .expect("deposit");
    }
    let (mut bm, mut bc, mut bb) = (node.backend(), node.backend(), node.backend());
    let (mut sm, mut sc, mut sb) = (card(b"mallory"), card(b"carol"), card(b"bob"));
    let root = node.bo.root_key();
    let code = |who: &str| op.enrolment_code(who).expect("enrolment code");
    {
        let code = code("mallory");
        let mut m = enrol(
            &mut sm,
            &mut bm,
            root,
            device_class::PHONE,
            "m",
            "mallory",
            &code,
        );
        m.load(1_000).expect("load");
    }
    let (carol_code, bob_code) = (code("carol"), code("bob"));
    let mut carol = enrol(
        &mut sc,
        &mut bc,
        root,
        device_class::PHONE,
        "c",
        "carol",
        &carol_code,
    );
    let mut bob = enrol(
        &mut sb,
        &mut bb,
        root,
        device_class::PHONE,
        "b",
        "bob",
        &bob_code,
    );
    let mut clone = clone_se(&mut sm, b"clone");

    pay_offline(&mut sm, &mut *carol.se, Amount(1_000)).expect("first spend");
    pay_offline(&mut clone, &mut *bob.se, Amount(1_000)).expect("second spend, offline");
    assert_eq!(carol.renew().expect("carol renews"), Amount(1_000));
    // Offline finality: bob is renewed too; the scheme covers the loss.
    assert_eq!(bob.renew().expect("bob renews"), Amount(1_000));

    let ds = op.double_spends().expect("double spends");
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0].value, 1_000);
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv:?}");
    assert_eq!(inv.loss, -1_000);
    assert_eq!(inv.offline_float, 2_000);

    let (_, _, page) = send(&node, "GET", "/", None, "", &[]);
    let page = String::from_utf8(page).expect("utf-8");
    assert!(page.contains("<span id=\"double-spends\">1</span>"));
    let (_, _, m) = send(&node, "GET", "/metrics", None, "", &[]);
    let m = String::from_utf8(m).expect("utf-8");
    assert!(m.contains("tally_double_spends 1\n") && m.contains("tally_ledger_loss -1000\n"));
}

/// Sealed uploads that do not open (garbage, another key, the other kind),
/// and hostile calls to the monitoring and containment endpoints: each a
/// typed error, nothing changed.
#[test]
fn sealed_uploads_and_containment_endpoints_refuse_bad_input() {
    use tally_core::dcp::SyncUpload;
    use tally_core::sealed::{OpeningKey, SealedKind, SealingKey, seal};
    let node = Node::start();
    let op = node.op();
    op.mint("mint-1", 500_000).expect("mint");
    op.deposit("dora", "dep-dora", 20_000).expect("deposit");
    let mut backend = node.backend();
    let mut se = card(b"dora");
    let code = op.enrolment_code("dora").expect("enrolment code");
    enrol(
        &mut se,
        &mut backend,
        node.bo.root_key(),
        device_class::PHONE,
        "Test phones Ltd",
        "dora",
        &code,
    )
    .load(2_000)
    .expect("load");
    // The wallet has the SE sign the Sync of whatever it sealed.
    let sync = |se: &mut ApduLink<TestCard>, sealed: Vec<u8>| {
        let mut req = built(
            se,
            RequestParams::Sync {
                sealed_digest: attachment_digest(&sealed),
            },
        );
        req.attachment = sealed;
        req
    };
    let before = published_invariant(&node);
    let upload = SyncUpload::default().to_cbor();
    let root = tally_core::SecretKey::from_seed(Suite::Ed25519, &[3; 32]).expect("key");
    let other = SealingKey::sign(&root, OpeningKey::from_seed(&[4; 32]).public());
    let mut rng = tally_core::testkit::TestEntropy::new(b"api-sealed");
    let right = node.bo.sealing_key();
    for sealed in [
        vec![0x83, 0x01, 0x40, 0x40],
        seal(&other, SealedKind::SyncUpload, &upload, &mut rng).expect("seal"),
        seal(&right, SealedKind::Redemption, &upload, &mut rng).expect("seal"),
    ] {
        let req = sync(&mut se, sealed).to_cbor();
        let m = assert_error(
            send(
                &node,
                "POST",
                "/v1/devices/request",
                None,
                "application/cbor",
                &req,
            ),
            422,
            59,
        );
        assert!(m.contains("sealed"), "{m}");
    }
    // The upload sealed right, under a Sync signed for another attachment:
    // refused before anything opens it.
    let sealed = seal(&right, SealedKind::SyncUpload, &upload, &mut rng).expect("seal");
    let mut other = sync(&mut se, sealed.clone());
    other.attachment = seal(&right, SealedKind::SyncUpload, &upload, &mut rng).expect("seal");
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &other.to_cbor(),
        ),
        400,
        80,
    );
    // Without its attachment, too.
    other.attachment = Vec::new();
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request",
            None,
            "application/cbor",
            &other.to_cbor(),
        ),
        400,
        80,
    );
    // The same upload sealed right does sync.
    let req = sync(&mut se, sealed).to_cbor();
    let (status, _, _) = send(
        &node,
        "POST",
        "/v1/devices/request",
        None,
        "application/cbor",
        &req,
    );
    assert_eq!(status, 200);

    // The wallet seals only to a key signed by the root its SE trusts: a
    // back office naming another root (and its own key) is refused.
    let mut hb = node.backend();
    let e = hb
        .seal(&root.public(), SealedKind::SyncUpload, &upload)
        .expect_err("a key not signed by this root");
    assert!(e.message.contains("not signed by the root"), "{e}");
    let se_root = se.root_key().expect("root");
    assert_eq!(se_root, node.bo.root_key());
    hb.seal(&se_root, SealedKind::SyncUpload, &upload)
        .expect("the SE's root signed the key");

    // Escrow lookups.
    assert_error(
        send(&node, "GET", "/v1/escrows/zz", Some(TOKEN), "", &[]),
        400,
        tally_api::code::BAD_PATH_PARAMETER,
    );
    assert_error(
        send(
            &node,
            "GET",
            &format!("/v1/escrows/{}", "00".repeat(32)),
            None,
            "",
            &[],
        ),
        401,
        60,
    );
    assert_error(
        send(
            &node,
            "GET",
            &format!("/v1/escrows/{}", "00".repeat(32)),
            Some(TOKEN),
            "",
            &[],
        ),
        404,
        66,
    );
    // Revocation: malformed, unknown identity, alert that is not open for it.
    let post = |path: &str, body: &str| {
        send(
            &node,
            "POST",
            path,
            Some(TOKEN),
            "application/json",
            body.as_bytes(),
        )
    };
    assert_error(post("/v1/directory/revoke", "{"), 400, 101);
    assert_error(
        post(
            "/v1/directory/revoke",
            r#"{"id_digest":"xx","key_ids":[],"reason":"r"}"#,
        ),
        400,
        101,
    );
    let digest = "11".repeat(32);
    assert_error(
        post(
            "/v1/directory/revoke",
            &format!(r#"{{"id_digest":"{digest}","key_ids":[],"reason":" "}}"#),
        ),
        400,
        101,
    );
    assert_error(
        post(
            "/v1/directory/revoke",
            &format!(r#"{{"id_digest":"{digest}","key_ids":[],"reason":"r"}}"#),
        ),
        404,
        50,
    );
    assert_error(
        post(
            "/v1/directory/revoke",
            &format!(r#"{{"id_digest":"{digest}","key_ids":[],"reason":"r","alert":7}}"#),
        ),
        400,
        65,
    );
    assert_error(
        post(
            "/v1/mds/alerts/7/transition",
            r#"{"to":"closed","note":"n"}"#,
        ),
        400,
        65,
    );
    assert_error(
        post("/v1/mds/alerts/7/transition", r#"{"to":"gone","note":"n"}"#),
        400,
        101,
    );
    assert!(
        op.devices()
            .expect("devices")
            .iter()
            .all(|d| d.status == "active")
    );
    assert_eq!(
        published_invariant(&node),
        before,
        "a refusal changed the ledger"
    );

    // Indicators, JSON and Prometheus.
    let (s, _, ind) = get_json::<serde_json::Value>(&node, "/mds/indicators", None);
    assert_eq!(s, 200);
    assert_eq!(ind["issued"], 2_000, "{ind}");
    assert_eq!(ind["circulation"], 2_000, "{ind}");
    let (_, _, metrics) = send(&node, "GET", "/metrics", None, "", &[]);
    let metrics = String::from_utf8(metrics).expect("text");
    assert!(
        metrics.contains("\ntally_mds_offline_circulation 2000\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\ntally_mds_holdings{device_class=\"2\"} 2000\n"),
        "{metrics}"
    );
}

fn parse_hex(h: &str) -> Option<Vec<u8>> {
    h.len()
        .is_multiple_of(2)
        .then(|| {
            (0..h.len() / 2)
                .map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Percent-encodes every byte outside A-Z a-z 0-9 - _ (a path segment).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Regression (issue 9, hostile input): path parameters that do not
/// parse, account names past 128 characters or with other characters,
/// query strings and wrong content types each get the JSON error with
/// their own code (axum's plain-text rejections before), and a deposit
/// to an over-long name no longer opens an account.
#[test]
fn hostile_paths_queries_and_media_types_get_typed_json_errors() {
    use tally_api::code;
    let node = Node::start();
    let op = node.op();
    op.mint("mint-1", 100_000).expect("mint");
    op.deposit("erin", "dep-erin", 1_000).expect("deposit");
    let before = published_invariant(&node);
    let get = |path: &str| send(&node, "GET", path, Some(TOKEN), "", &[]);
    let post = |path: &str, ct: &str, body: &[u8]| send(&node, "POST", path, Some(TOKEN), ct, body);
    let amount = br#"{"idempotency_key":"h-1","amount":5}"#;
    let transition = br#"{"to":"closed","note":"n"}"#;

    // Key ids: not hex, one digit short or long, not UTF-8, signed.
    for key in [
        "zz".to_string(),
        "0".repeat(63),
        "0".repeat(65),
        format!("{}g", "0".repeat(63)),
        "%FF".repeat(32),
        format!("+{}", "0".repeat(63)),
    ] {
        assert_error(
            get(&format!("/v1/escrows/{key}")),
            400,
            code::BAD_PATH_PARAMETER,
        );
    }
    // Alert ids: words, signs, fractions, spaces, past i64::MAX.
    for id in [
        "abc",
        "-1",
        "+1",
        "1.5",
        "%201",
        "99999999999999999999",
        "9223372036854775808",
    ] {
        assert_error(
            post(
                &format!("/v1/mds/alerts/{id}/transition"),
                "application/json",
                transition,
            ),
            400,
            code::BAD_PATH_PARAMETER,
        );
    }
    // A well-formed id that names no alert is the MDS's refusal, not ours.
    assert_error(
        post(
            "/v1/mds/alerts/9223372036854775807/transition",
            "application/json",
            transition,
        ),
        400,
        65,
    );

    // Account names: 128 characters parse (unknown account: 404), 129 do
    // not; nor do slashes, spaces, colons, non-ASCII letters, bytes that
    // are not UTF-8.
    let longest = "a".repeat(tally_api::ACCOUNT_NAME_CHARS_MAX);
    assert_error(get(&format!("/v1/accounts/{longest}")), 404, 10);
    let too_long = "a".repeat(tally_api::ACCOUNT_NAME_CHARS_MAX + 1);
    for name in [
        segment(&too_long),
        segment("a/b"),
        segment("ca rol"),
        segment("dcp:1"),
        segment("é"),
        "%FF".into(),
    ] {
        assert_error(
            get(&format!("/v1/accounts/{name}")),
            400,
            code::BAD_ACCOUNT_NAME,
        );
        assert_error(
            post(
                &format!("/v1/accounts/{name}/deposit"),
                "application/json",
                amount,
            ),
            400,
            code::BAD_ACCOUNT_NAME,
        );
    }

    // Query strings, well formed or not, on every kind of route.
    for path in [
        "/ledger/invariant?x=1",
        "/?%zz",
        "/metrics?a=b&a=c",
        "/v1/accounts/erin?name=other",
        "/v1/devices?limit=1",
    ] {
        assert_error(get(path), 400, code::UNEXPECTED_QUERY);
    }
    assert_error(
        send(
            &node,
            "POST",
            "/v1/devices/request?x",
            None,
            "application/cbor",
            &[0xff],
        ),
        400,
        code::UNEXPECTED_QUERY,
    );

    // Content types: a device body that says JSON, an operator body that
    // says CBOR, text, or nothing at all.
    for ct in ["application/json", "text/plain", ""] {
        assert_error(
            send(&node, "POST", "/v1/devices/request", None, ct, &[0xff]),
            415,
            code::UNSUPPORTED_MEDIA_TYPE,
        );
        assert_error(
            send(&node, "POST", "/v1/devices/register", None, ct, &[0xff]),
            415,
            code::UNSUPPORTED_MEDIA_TYPE,
        );
    }
    for ct in ["application/cbor", "text/plain", "application/jsonx", ""] {
        assert_error(
            post("/v1/cb/mint", ct, amount),
            415,
            code::UNSUPPORTED_MEDIA_TYPE,
        );
        assert_error(
            post("/v1/accounts/erin/deposit", ct, amount),
            415,
            code::UNSUPPORTED_MEDIA_TYPE,
        );
        assert_error(
            post("/v1/directory/revoke", ct, b"{}"),
            415,
            code::UNSUPPORTED_MEDIA_TYPE,
        );
    }
    assert_eq!(
        published_invariant(&node),
        before,
        "a refusal changed the ledger"
    );
    // Nothing was opened under a refused name.
    assert_error(get(&format!("/v1/accounts/{}", &too_long[..128])), 404, 10);

    // The media type is matched without its parameters and its case.
    let (s, _, _) = post(
        "/v1/accounts/erin/deposit",
        "Application/JSON; charset=utf-8",
        amount,
    );
    assert_eq!(s, 200);
    assert_eq!(op.balance("erin").expect("balance"), 1_005);

    // The OpenAPI document lists the new codes and the 415 answers.
    let (_, _, doc) = get_json::<serde_json::Value>(&node, "/openapi.json", None);
    // The code schema's enum is the registry's HTTP codes (docs/CODES.md).
    let listed: Vec<u64> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("code enum")
            .iter()
            .filter_map(|c| c.as_u64())
            .collect();
    for c in [70, 71, 72, 73] {
        assert!(listed.contains(&c), "{c} not documented: {listed:?}");
    }
    let registered: Vec<u64> = tally_codes::REGISTRY
        .iter()
        .filter(|c| c.state == tally_codes::State::Used && !c.http.is_empty())
        .map(|c| u64::from(c.code))
        .collect();
    assert_eq!(listed, registered);
    let d415 = doc["paths"]["/v1/cb/mint"]["post"]["responses"]["415"]["description"]
        .as_str()
        .expect("415 answer");
    assert!(d415.contains("(codes 73;"), "{d415}");
}

/// Issue 9: a caller without the operator token gets the same bytes for
/// an account that exists, one that does not and a name that does not
/// even parse, on every route that takes an account name (and the same
/// for alerts and pseudonyms): the API cannot be used to enumerate them.
#[test]
fn strangers_get_the_same_answer_for_unknown_and_existing_accounts() {
    let node = Node::start();
    let op = node.op();
    op.mint("mint-1", 100_000).expect("mint");
    op.deposit("grace", "dep-grace", 1_000).expect("deposit");
    let amount = br#"{"idempotency_key":"e-1","amount":5}"#;
    let too_long = "g".repeat(tally_api::ACCOUNT_NAME_CHARS_MAX + 1);
    for token in [None, Some("guess"), Some("")] {
        for ct in ["application/json", "text/plain"] {
            let answers: Vec<_> = ["grace", "nobody", too_long.as_str(), "%FF"]
                .iter()
                .flat_map(|name| {
                    [
                        send(
                            &node,
                            "GET",
                            &format!("/v1/accounts/{name}"),
                            token,
                            "",
                            &[],
                        ),
                        send(
                            &node,
                            "POST",
                            &format!("/v1/accounts/{name}/deposit"),
                            token,
                            ct,
                            amount,
                        ),
                        send(
                            &node,
                            "POST",
                            &format!("/v1/accounts/{name}/enrolment-codes"),
                            token,
                            ct,
                            b"",
                        ),
                    ]
                })
                .collect();
            for a in &answers {
                assert_eq!(a, &answers[0], "an answer told accounts apart");
            }
            assert_error(answers[0].clone(), 401, tally_api::code::UNAUTHORIZED);
        }
        let escrows: Vec<_> = ["00".repeat(32), "zz".into()]
            .iter()
            .map(|k| send(&node, "GET", &format!("/v1/escrows/{k}"), token, "", &[]))
            .collect();
        let alerts: Vec<_> = ["1", "x"]
            .iter()
            .map(|id| {
                send(
                    &node,
                    "POST",
                    &format!("/v1/mds/alerts/{id}/transition"),
                    token,
                    "text/plain",
                    b"",
                )
            })
            .collect();
        for a in escrows.iter().chain(&alerts) {
            assert_eq!(a.0, 401);
            assert_eq!(a.2, escrows[0].2);
        }
    }
    assert_eq!(op.balance("grace").expect("balance"), 1_000);
}

/// Issue 9, what strangers see: after a run with devices, offline
/// payments, renewals and a double spend, no route that answers without
/// the operator token shows an account name, an SE id, a pseudonym (its
/// key, its key id, or a 16-digit piece of either) or a record id. Before,
/// the dashboard listed each double spend's offender pseudonym and record.
#[test]
fn unauthenticated_pages_show_no_identities() {
    let node = Node::start();
    let op = node.op();
    op.mint("m", 100_000).expect("mint");
    let names = ["acct-quokka", "acct-narwhal", "acct-axolotl"];
    for who in names {
        op.deposit(who, &format!("d-{who}"), 5_000)
            .expect("deposit");
    }
    let (mut b0, mut b1, mut b2) = (node.backend(), node.backend(), node.backend());
    let (mut s0, mut s1, mut s2) = (card(b"quokka"), card(b"narwhal"), card(b"axolotl"));
    let root = node.bo.root_key();
    let codes: Vec<String> = names
        .iter()
        .map(|n| op.enrolment_code(n).expect("enrolment code"))
        .collect();
    {
        let mut m = enrol(
            &mut s0,
            &mut b0,
            root,
            device_class::PHONE,
            "m",
            names[0],
            &codes[0],
        );
        m.load(1_000).expect("load");
    }
    let mut n = enrol(
        &mut s1,
        &mut b1,
        root,
        device_class::CARD,
        "n",
        names[1],
        &codes[1],
    );
    let mut x = enrol(
        &mut s2,
        &mut b2,
        root,
        device_class::IOT,
        "x",
        names[2],
        &codes[2],
    );
    n.load(2_000).expect("load");
    let mut clone = clone_se(&mut s0, b"clone");
    pay_offline(&mut s0, &mut *n.se, Amount(1_000)).expect("first spend");
    pay_offline(&mut clone, &mut *x.se, Amount(1_000)).expect("second spend, offline");
    pay_offline(&mut *n.se, &mut *x.se, Amount(500)).expect("honest payment");
    n.renew().expect("renew");
    x.renew().expect("renew");
    n.sync().expect("sync");
    x.sync().expect("sync");

    // What an operator sees, and must stay between operators.
    let mut secret_hex: Vec<String> = op
        .devices()
        .expect("devices")
        .into_iter()
        .map(|d| d.se_id)
        .collect();
    assert_eq!(secret_hex.len(), 3);
    let ds = op.double_spends().expect("double spends");
    assert_eq!(ds.len(), 1, "{ds:?}");
    for d in &ds {
        let cbor = parse_hex(&d.offender_key).expect("hex");
        let key = tally_core::PublicKey::from_cbor(&cbor).expect("key");
        secret_hex.push(d.offender_key.clone());
        secret_hex.push(hex_of(key.key_bytes()));
        secret_hex.push(key.id().to_string());
        secret_hex.push(d.record.clone());
    }
    let secret_bytes: Vec<Vec<u8>> = secret_hex.iter().filter_map(|h| parse_hex(h)).collect();

    let mut checked = 0;
    for (template, method) in tally_api::ROUTES {
        if *method != "get" {
            continue;
        }
        let path = template
            .replace("{name}", names[1])
            .replace("{key_id}", &secret_hex[4])
            .replace("{id}", "1");
        let (status, _, body) = send(&node, "GET", &path, None, "", &[]);
        if status == 401 {
            continue; // operator route: the body is the error alone
        }
        assert_eq!(status, 200, "{path}");
        checked += 1;
        let text = String::from_utf8_lossy(&body).to_lowercase();
        for name in names {
            assert!(!text.contains(name), "{path} shows account {name}");
        }
        for h in &secret_hex {
            for piece in h.as_bytes().windows(16) {
                let piece = std::str::from_utf8(piece).expect("hex");
                assert!(!text.contains(piece), "{path} shows {piece} (of {h})");
            }
        }
        for raw in &secret_bytes {
            for piece in raw.windows(8) {
                assert!(
                    !body.windows(8).any(|w| w == piece),
                    "{path} carries raw bytes of an identity"
                );
            }
        }
    }
    // /, /v1/trust, /v1/trust.json, /mds/indicators, /ledger/invariant,
    // /metrics, /openapi.json
    assert_eq!(checked, 7);
    // The aggregate is still there.
    let (_, _, page) = send(&node, "GET", "/", None, "", &[]);
    let page = String::from_utf8(page).expect("utf-8");
    assert!(
        page.contains("<span id=\"double-spends\">1</span>"),
        "{page}"
    );
    assert!(
        page.contains("<span id=\"double-spends-value\">1000</span>"),
        "{page}"
    );
}

/// Issue 9, enrolment over HTTP: one-time codes come from the operator
/// route only; a registration without the account's code (none, a wrong
/// one, another account's) is 403/81, an SE of an untrusted manufacturer
/// 403/43 (without using up the code), the code used by a second SE
/// 409/82. Nothing is registered or moved by a refusal.
#[test]
fn enrolment_over_http_needs_a_trusted_maker_and_the_accounts_code() {
    use tally_core::dcp::{MakerCertificate, Registration};
    let node = Node::start();
    let op = node.op();
    op.mint("m", 100_000).expect("mint");
    op.deposit("ivy", "d-ivy", 1_000).expect("deposit");
    op.deposit("jon", "d-jon", 1_000).expect("deposit");
    // Codes are the operator's to hand out.
    assert_error(
        send(
            &node,
            "POST",
            "/v1/accounts/ivy/enrolment-codes",
            None,
            "",
            &[],
        ),
        401,
        tally_api::code::UNAUTHORIZED,
    );
    assert_error(
        send(
            &node,
            "POST",
            "/v1/accounts/i%20vy/enrolment-codes",
            Some(TOKEN),
            "",
            &[],
        ),
        400,
        tally_api::code::BAD_ACCOUNT_NAME,
    );
    let ivy_code = op.enrolment_code("ivy").expect("code");
    let jon_code = op.enrolment_code("jon").expect("code");
    assert_ne!(ivy_code, jon_code);
    let before = published_invariant(&node);
    let root = node.bo.root_key();
    let mut hb = node.backend();
    let reg = |se: &mut ApduLink<TestCard>, cert: &MakerCertificate, account: &str, code: &str| {
        Registration {
            maker_cert: cert.clone(),
            account: account.into(),
            signature: se.enrol(account, code).expect("enrol"),
        }
    };
    let mut se = card(b"ivy");
    let cert = manufacture(
        &mut se,
        device_class::PHONE,
        root,
        &maker_key(),
        "Test phones Ltd",
    )
    .expect("manufacture");
    for code in ["", "0000-0000-0000-0000", jon_code.as_str()] {
        let e = hb.register(&reg(&mut se, &cert, "ivy", code)).unwrap_err();
        assert_eq!((e.status, e.code), (403, 81), "{code:?}: {e}");
    }
    // An SE a rogue maker certified, with ivy's real code.
    let rogue = SecretKey::from_seed(Suite::Ed25519, &[0x66; 32]).expect("key");
    let mut rogue_se = card(b"rogue");
    let rogue_cert = manufacture(
        &mut rogue_se,
        device_class::PHONE,
        root,
        &rogue,
        "Test phones Ltd",
    )
    .expect("manufacture");
    let e = hb
        .register(&reg(&mut rogue_se, &rogue_cert, "ivy", &ivy_code))
        .unwrap_err();
    assert_eq!((e.status, e.code), (403, 43), "{e}");
    assert!(op.devices().expect("devices").is_empty());
    // The code enrols ivy's SE (a retry is idempotent), and no other.
    let se_id = hb
        .register(&reg(&mut se, &cert, "ivy", &ivy_code))
        .expect("register");
    assert_eq!(
        hb.register(&reg(&mut se, &cert, "ivy", &ivy_code))
            .expect("retry"),
        se_id
    );
    let mut other = card(b"other");
    let other_cert = manufacture(
        &mut other,
        device_class::PHONE,
        root,
        &maker_key(),
        "Test phones Ltd",
    )
    .expect("manufacture");
    let e = hb
        .register(&reg(&mut other, &other_cert, "ivy", &ivy_code))
        .unwrap_err();
    assert_eq!((e.status, e.code), (409, 82), "{e}");
    let devices = op.devices().expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].se_id, se_id.to_string());
    assert_eq!(
        published_invariant(&node),
        before,
        "a refusal changed the ledger"
    );
    assert_eq!(op.balance("ivy").expect("balance"), 1_000);
    assert_eq!(op.balance("jon").expect("balance"), 1_000);
}
