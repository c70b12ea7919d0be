//! Test vectors of docs/SPEC.md §8, checked byte for byte.
//!
//! The objects are built from the deterministic test scheme (testkit keys
//! with fixed seeds, RFC 8032 / RFC 6979 deterministic signatures), encoded,
//! and compared with the fenced blocks of SPEC.md marked
//! ```` ```hex title=NAME ````. The SPEC's bytes are then decoded on their
//! own and the package is verified, so the document stays a usable
//! reference even if this file changes.
//!
//! To regenerate after a deliberate wire change:
//! `TALLY_PRINT_VECTORS=1 cargo test -p tally-core --features testkit --test vectors -- --nocapture`
//! prints every block; paste them into SPEC.md §8.

use std::collections::BTreeMap;

use tally_core::cert::{DcpCertificate, PseudonymCertificate, SettlementKey};
use tally_core::codec::Cbor;
use tally_core::crypto::{PublicKey, SecretKey, Suite};
use tally_core::dcp::{
    DeviceOp, DeviceRequest, DeviceResponse, MakerCertificate, RedemptionOrder, Registration,
    RequestReport, SyncUpload, enrolment_code_digest, enrolment_message,
};
use tally_core::package::{build_package, sign_transfer};
use tally_core::policy::{Policy, RevocationList, SyncGrant, device_class};
use tally_core::protocol::{Package, Receipt, Request};
use tally_core::record::{Issue, OutPoint, Output, Record, Transfer};
use tally_core::sealed::{OpeningKey, SealingKey};
use tally_core::testkit::{self, Scheme};
use tally_core::verify::{self, Expected, NoCache};
use tally_core::{Amount, Hash32};

/// 00 01 … 0f: the payee's request nonce in every vector.
const NONCE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const COUNTER: u64 = 1;
const HISTORY_BUDGET: usize = 32;

/// One deterministic one-hop payment in `suite`: Issue 1000 to the payer,
/// pay 250 to the payee with 750 change.
struct Payment {
    scheme: Scheme,
    payer: SecretKey,
    payee: SecretKey,
    issue: Issue,
    transfer: Transfer,
    request: Request,
    package: Package,
    receipt: Receipt,
}

fn payment(suite: Suite) -> Payment {
    let mut scheme = Scheme::new(suite);
    let payer = testkit::key(suite, b"payer");
    let payee = testkit::key(suite, b"payee");
    let issue = scheme.issue(payer.public(), 1000);
    let payer_cert = scheme.certify(payer.public(), device_class::PHONE, 0);
    let payee_cert = scheme.certify(payee.public(), device_class::PHONE, 0);
    let request = Request::sign(&payee, Amount(250), NONCE, payee_cert, scheme.epoch);
    let outputs = vec![
        Output {
            value: Amount(250),
            owner: payee.public(),
        },
        Output {
            value: Amount(750),
            owner: payer.public(),
        },
    ];
    let inputs = vec![OutPoint {
        record: issue.id(),
        index: 0,
    }];
    let key_for = |k: &PublicKey| (*k == payer.public()).then(|| payer.clone());
    let transfer =
        sign_transfer(inputs, &[payer.public()], outputs, NONCE, COUNTER, &key_for).unwrap();
    let package = build_package(
        transfer.clone(),
        vec![Record::Issue(issue.clone())],
        vec![payer_cert],
    );
    let receipt = Receipt::sign(&payee, transfer.id());
    Payment {
        scheme,
        payer,
        payee,
        issue,
        transfer,
        request,
        package,
        receipt,
    }
}

/// Every vector, in SPEC.md order.
fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    let p = payment(Suite::Ed25519);
    let s = &p.scheme;
    let grant = s.sync_grant(Hash32([0x11; 32]), 1);
    let q = payment(Suite::EcdsaP256Sha256);
    let d = device_objects(&p);
    vec![
        ("root-key", s.root.public().to_cbor()),
        ("dcp-key", s.dcp.public().to_cbor()),
        ("payer-key", p.payer.public().to_cbor()),
        ("payee-key", p.payee.public().to_cbor()),
        ("payer-key-id", p.payer.public().id().0.to_vec()),
        ("dcp-certificate", s.dcp_cert.to_cbor()),
        ("policy", s.policy.to_cbor()),
        ("revocation-list", s.revocations.to_cbor()),
        (
            "role-revocations",
            tally_core::policy::RoleRevocations::try_sign(
                &s.root,
                1_764_892_800_000,
                1_764_892_800,
                vec![Hash32([0xaa; 32])],
            )
            .unwrap_or_else(|e| match e {})
            .to_cbor(),
        ),
        ("sync-grant", grant.to_cbor()),
        ("payer-certificate", p.package.certificates[0].to_cbor()),
        ("issue", p.issue.to_cbor()),
        ("issue-id", p.issue.id().0.to_vec()),
        ("request", p.request.to_cbor()),
        ("transfer", p.transfer.to_cbor()),
        ("transfer-id", p.transfer.id().0.to_vec()),
        ("package", p.package.to_cbor()),
        ("receipt", p.receipt.to_cbor()),
        ("p256-payer-key", q.payer.public().to_cbor()),
        ("p256-transfer", q.transfer.to_cbor()),
        ("p256-package", q.package.to_cbor()),
        // §9.11: device ↔ back office.
        ("maker-certificate", d.maker_cert.to_cbor()),
        ("registration", d.registration.to_cbor()),
        ("device-request-load", d.load.to_cbor()),
        ("device-request-id", d.load.id().0.to_vec()),
        (
            "device-response-issued",
            DeviceResponse::Issued(p.issue.clone()).to_cbor(),
        ),
        ("redemption-order", d.order.to_cbor()),
        ("request-report", d.report.to_cbor()),
        ("sync-upload", d.upload.to_cbor()),
        ("sealing-key", d.sealing_key.to_cbor()),
        ("settlement-key", d.settlement_key.to_cbor()),
        // §4.10: payment streams.
        ("stream-seed", stream_seed().0.to_vec()),
        ("stream-chain-4", stream_chain_4()),
        ("stream-tick-payer", stream_tick_record(None)),
        (
            "stream-tick-payee",
            stream_tick_record(Some(&stream_element(1))),
        ),
        // §4.10.5: the value binding.
        ("stream-request", stream_objects(&p).request.to_cbor()),
        ("stream-open", stream_objects(&p).open.to_cbor()),
        ("stream-claim", stream_objects(&p).claim.to_cbor()),
        ("stream-refund", stream_objects(&p).refund.to_cbor()),
        // §3.3: signatures the cofactored rule accepts and cofactorless
        // verifiers (OpenSSL, libsodium, ed25519-dalek) refuse.
        ("ed25519-mixed-order-r", edge_signature(EdgeR::MixedOrder)),
        (
            "ed25519-noncanonical-r",
            edge_signature(EdgeR::NonCanonicalSmallOrder),
        ),
    ]
}

/// §4.10: the seed of stream id 32 × `09` in an SE whose secret is
/// 32 × `07`.
fn stream_seed() -> Hash32 {
    tally_core::stream::chain_seed(&[0x07; 32], &Hash32([0x09; 32]))
}

/// §4.10.5: a stream of N = 4 ticks at price 1 from the payer to the
/// payee: the payee's stream request, the payer's OPEN spending the vector
/// Issue (output 0 locks 4 for the payee with the anchor of the 4-tick
/// chain above, output 1 the change of 996), the payee's claim of 2 ticks
/// (element `h_2`) and the payer's refund after releasing 3 ticks.
struct StreamObjects {
    request: Request,
    open: Transfer,
    claim: Transfer,
    refund: Transfer,
}

fn stream_objects(p: &Payment) -> StreamObjects {
    use tally_core::package::sign_transfer_with;
    use tally_core::stream::{STREAM_REFUND_FLAG, StreamAsk, StreamOpenTerms, StreamPart};
    let ask = StreamAsk {
        price: Amount(1),
        ticks_max: 4,
    };
    let request = Request::try_sign_stream(&p.payee, ask, NONCE, p.request.payee.clone(), 1)
        .unwrap()
        .unwrap();
    let key_for = |k: &PublicKey| {
        [&p.payer, &p.payee]
            .into_iter()
            .find(|s| s.public() == *k)
            .cloned()
    };
    let out = |value, owner| Output {
        value: Amount(value),
        owner,
    };
    let open = sign_transfer_with(
        vec![OutPoint {
            record: p.issue.id(),
            index: 0,
        }],
        &[p.payer.public()],
        vec![out(4, p.payee.public()), out(996, p.payer.public())],
        NONCE,
        2,
        Some(StreamPart::Open(StreamOpenTerms {
            index: 0,
            refund_key: p.payer.public(),
            ask,
            anchor: stream_element(0),
        })),
        &key_for,
    )
    .unwrap();
    let half = |index| OutPoint {
        record: open.id(),
        index,
    };
    let claim = sign_transfer_with(
        vec![half(0)],
        &[p.payee.public()],
        vec![out(2, p.payee.public())],
        [0; 16],
        1,
        Some(StreamPart::Claim {
            ticks: 2,
            element: stream_element(2),
        }),
        &key_for,
    )
    .unwrap();
    let refund = sign_transfer_with(
        vec![half(STREAM_REFUND_FLAG)],
        &[p.payer.public()],
        vec![out(1, p.payer.public())],
        [0; 16],
        3,
        Some(StreamPart::Refund { ticks: 3 }),
        &key_for,
    )
    .unwrap();
    StreamObjects {
        request,
        open,
        claim,
        refund,
    }
}

/// Element `h_k` of the 4-tick chain from [`stream_seed`].
fn stream_element(k: u32) -> Hash32 {
    tally_core::stream::chain_walk(stream_seed(), 4 - k)
}

/// `h_0 ‖ h_1 ‖ h_2 ‖ h_3 ‖ h_4` of the 4-tick chain, each checked by the
/// payee rule and the traversal.
fn stream_chain_4() -> Vec<u8> {
    use tally_core::stream::{Pebbles, check_tick};
    let (mut pebbles, anchor) = Pebbles::open(stream_seed(), 4).expect("chain");
    assert_eq!(anchor, stream_element(0));
    let mut out = anchor.0.to_vec();
    let mut latest = anchor;
    for k in 1..=4 {
        let h = pebbles.element(k).expect("element");
        assert_eq!(h, stream_element(k));
        check_tick(&latest, k - 1, &h, k, 4).expect("tick");
        out.extend_from_slice(&h.0);
        latest = h;
    }
    out
}

/// §4.10.3: the journal log record body of tick 1 of stream slot 0 (the
/// compact tick record, session 10), written here from the format's text
/// (tally-se's `encode_tick_record` is checked against the same bytes).
fn stream_tick_record(element: Option<&Hash32>) -> Vec<u8> {
    let side = u8::from(element.is_some());
    let mut out = vec![side, 0, 1];
    if let Some(e) = element {
        out.extend_from_slice(&e.0);
    }
    out
}

/// Message of the §3.3 edge vectors.
const EDGE_MESSAGE: &[u8] = b"tally/v1/spec-vector";

enum EdgeR {
    /// `R = r·B + T`, `T` a point of order 8 (`EIGHT_TORSION[1]`), `r` the
    /// SHA-512 of "tally/v1/spec-vector-nonce" reduced mod L.
    MixedOrder,
    /// `R_enc` = p little-endian (a non-canonical encoding of `y = 0`: the
    /// point (√−1, 0) of order 4), `r = 0`.
    NonCanonicalSmallOrder,
}

/// `A_enc ‖ R_enc ‖ S_enc ‖ M` for the key `key("edge")`, with `S = r +
/// k·a`, `k = SHA-512(R_enc ‖ A_enc ‖ M) mod L`: `S·B − k·A − R = −T`, a
/// small-order point, so `[8](S·B − k·A − R)` is the identity but
/// `S·B − k·A − R` is not.
fn edge_signature(kind: EdgeR) -> Vec<u8> {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_TABLE, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};
    let wide = |parts: &[&[u8]]| -> Scalar {
        let mut h = Sha512::new();
        for p in parts {
            h.update(p);
        }
        let bytes: [u8; 64] = h.finalize().into();
        Scalar::from_bytes_mod_order_wide(&bytes)
    };
    let seed =
        tally_core::crypto::tagged_hash(b"tally/v1/testkit", &[b"edge", &0u32.to_be_bytes()]);
    let expanded = ed25519_dalek::hazmat::ExpandedSecretKey::from(&seed.0);
    let a_enc = (&expanded.scalar * ED25519_BASEPOINT_TABLE).compress().0;
    let (r, r_enc) = match kind {
        EdgeR::MixedOrder => {
            let r = wide(&[b"tally/v1/spec-vector-nonce"]);
            (
                r,
                (&r * ED25519_BASEPOINT_TABLE + EIGHT_TORSION[1])
                    .compress()
                    .0,
            )
        }
        EdgeR::NonCanonicalSmallOrder => {
            let mut p = [0xffu8; 32];
            p[0] = 0xed;
            p[31] = 0x7f;
            (Scalar::ZERO, p)
        }
    };
    let k = wide(&[&r_enc, &a_enc, EDGE_MESSAGE]);
    let s = r + k * expanded.scalar;
    [&a_enc[..], &r_enc, s.as_bytes(), EDGE_MESSAGE].concat()
}

/// The §3.3 edge vectors: accepted by Tally's rule (single and batched),
/// refused by ed25519-dalek's cofactorless `verify` and `verify_strict`.
#[test]
fn edge_signature_vectors_are_accepted_cofactored_and_refused_cofactorless() {
    let spec = hex_blocks(&spec_text());
    for name in ["ed25519-mixed-order-r", "ed25519-noncanonical-r"] {
        let v = spec
            .get(name)
            .unwrap_or_else(|| panic!("SPEC.md lacks {name}"));
        let (a, rest) = v.split_at(32);
        let (sig, msg) = rest.split_at(64);
        let key = PublicKey::new(Suite::Ed25519, a).expect("a valid key");
        let sig64: [u8; 64] = sig.try_into().unwrap();
        let sig = tally_core::crypto::Signature::new(Suite::Ed25519, sig64);
        assert_eq!(
            tally_core::crypto::verify(&key, msg, &sig),
            Ok(()),
            "{name}: Tally's cofactored rule"
        );
        let check = || tally_core::crypto::SigCheck {
            key: &key,
            msg,
            sig: &sig,
        };
        let batch = [check(), check()];
        assert!(
            tally_core::crypto::verify_many(&batch).is_ok(),
            "{name}: batched"
        );
        let dalek = ed25519_dalek::VerifyingKey::from_bytes(a.try_into().unwrap()).unwrap();
        let dsig = ed25519_dalek::Signature::from_bytes(&sig64);
        assert!(
            dalek.verify_strict(msg, &dsig).is_err(),
            "{name}: verify_strict"
        );
        use ed25519_dalek::Verifier as _;
        assert!(
            dalek.verify(msg, &dsig).is_err(),
            "{name}: cofactorless verify"
        );
        // One bit of S changed: refused by the cofactored rule too.
        let mut bad = sig64;
        bad[32] ^= 1;
        assert!(
            tally_core::crypto::verify(
                &key,
                msg,
                &tally_core::crypto::Signature::new(Suite::Ed25519, bad)
            )
            .is_err(),
            "{name}: altered S"
        );
    }
}

/// The §9.11 objects: an SE (attestation key `key("se")`, phone, maker
/// `key("maker")` named "Acme SE") enrolling as `alice` with the code
/// `ABCD-EFGH-JKMN-PQRS`, then asking to load 1000 to the payer key
/// (counter 7); the DCP's unload order for it;
/// the payee's report of the §8 request, received; a sync upload of the
/// §8 package and that report; the sealing key of the opening seed
/// `[8; 32]` and the settlement key `key("settlement")`, both root-signed.
/// The order's request is the DCP's own: 1000 to the DCP key (certified
/// by itself, class DCP, tier 0), nonce 16 × `0x22`, payee epoch 1.
struct DeviceObjects {
    maker_cert: MakerCertificate,
    registration: Registration,
    load: DeviceRequest,
    order: RedemptionOrder,
    report: RequestReport,
    upload: SyncUpload,
    sealing_key: SealingKey,
    settlement_key: SettlementKey,
}

const ENROLMENT_CODE: &str = "ABCD-EFGH-JKMN-PQRS";

fn device_objects(p: &Payment) -> DeviceObjects {
    let s = &p.scheme;
    let se = testkit::key(Suite::Ed25519, b"se");
    let maker = testkit::key(Suite::Ed25519, b"maker");
    let maker_cert = MakerCertificate::sign(&maker, se.public(), device_class::PHONE, "Acme SE");
    let se_id = se.public().id();
    let code = enrolment_code_digest(ENROLMENT_CODE);
    let registration = Registration {
        maker_cert: maker_cert.clone(),
        account: "alice".into(),
        signature: se.sign(&enrolment_message(&se_id, "alice", &code).0),
    };
    let op = DeviceOp::Load {
        amount: 1000,
        key: p.payer.public(),
    };
    let load = DeviceRequest {
        se_id,
        counter: 7,
        signature: se.sign(&DeviceRequest::signed_message(&se_id, 7, &op).0),
        op,
        attachment: Vec::new(),
    };
    // The DCP's redemption request: its own key, certified by itself as
    // the DCP class, for the SE's 1000, nonce 32 × 0x22 truncated to 16.
    let dcp_cert = s.certify(s.dcp.public(), device_class::DCP, 0);
    let redemption = Request::sign(&s.dcp, Amount(1000), [0x22; 16], dcp_cert, s.epoch);
    let order = RedemptionOrder::sign(&s.dcp, se_id, true, redemption);
    let report = RequestReport::sign(&p.payee, NONCE, 250, Some(p.transfer.id()));
    let upload = SyncUpload {
        packages: vec![p.package.to_cbor()],
        reports: vec![report.clone()],
    };
    let sealing_key = SealingKey::sign(&s.root, OpeningKey::from_seed(&[8; 32]).public());
    let settlement_key = SettlementKey::try_sign(
        &s.root,
        testkit::key(Suite::Ed25519, b"settlement").public(),
    )
    .unwrap();
    DeviceObjects {
        maker_cert,
        registration,
        load,
        order,
        report,
        upload,
        sealing_key,
        settlement_key,
    }
}

/// SPEC.md up to §10, whose vectors (the central bank's wire) are
/// checked by crates/tally-dcp/tests/wire_vectors.rs.
fn spec_text() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SPEC.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    match text.find("\n## 10. ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The ```` ```hex title=NAME ```` blocks of a Markdown text, whitespace
/// inside a block ignored.
fn hex_blocks(md: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("```hex title=") else {
            continue;
        };
        let mut hex_text = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            hex_text.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        let bytes = hex::decode(&hex_text).unwrap_or_else(|e| panic!("vector {name}: {e}"));
        assert!(
            out.insert(name.trim().to_string(), bytes).is_none(),
            "vector {name} appears twice"
        );
    }
    out
}

fn print_block(name: &str, bytes: &[u8]) {
    println!("```hex title={name}");
    for chunk in bytes.chunks(32) {
        println!("{}", hex::encode(chunk));
    }
    println!("```");
}

#[test]
fn spec_vectors_match_the_code() {
    let ours = vectors();
    if std::env::var_os("TALLY_PRINT_VECTORS").is_some() {
        for (name, bytes) in &ours {
            print_block(name, bytes);
        }
        return;
    }
    let spec = hex_blocks(&spec_text());
    let names: Vec<&str> = ours.iter().map(|(n, _)| *n).collect();
    let spec_names: Vec<&str> = spec.keys().map(String::as_str).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted, spec_names,
        "SPEC.md has other vectors than the code"
    );
    for (name, bytes) in &ours {
        assert_eq!(
            hex::encode(&spec[*name]),
            hex::encode(bytes),
            "vector {name} differs from SPEC.md"
        );
    }
}

#[test]
fn spec_vectors_decode_and_verify() {
    let v = hex_blocks(&spec_text());
    let get = |n: &str| {
        v.get(n)
            .unwrap_or_else(|| panic!("SPEC.md lacks vector {n}"))
            .as_slice()
    };
    // Every object decodes and re-encodes to the same bytes.
    fn round_trip<T: Cbor>(b: &[u8]) -> T {
        let t = T::from_cbor(b).expect("vector decodes");
        assert_eq!(t.to_cbor(), b);
        t
    }
    let root: PublicKey = round_trip(get("root-key"));
    let payer: PublicKey = round_trip(get("payer-key"));
    let payee: PublicKey = round_trip(get("payee-key"));
    let dcp: PublicKey = round_trip(get("dcp-key"));
    assert_eq!(payer.id().0, get("payer-key-id"));
    let dcp_cert: DcpCertificate = round_trip(get("dcp-certificate"));
    assert_eq!(dcp_cert.key, dcp);
    let policy: Policy = round_trip(get("policy"));
    let revocations: RevocationList = round_trip(get("revocation-list"));
    let roles: tally_core::policy::RoleRevocations = round_trip(get("role-revocations"));
    assert_eq!(roles.check(&root, None, roles.issued), Ok(()));
    let grant: SyncGrant = round_trip(get("sync-grant"));
    assert_eq!(grant.signer, dcp);
    assert!(tally_core::crypto::verify(&dcp, &grant.signed_message().0, &grant.signature).is_ok());
    let payer_cert: PseudonymCertificate = round_trip(get("payer-certificate"));
    let issue: Issue = round_trip(get("issue"));
    assert_eq!(issue.id().0, get("issue-id"));
    let request: Request = round_trip(get("request"));
    let transfer: Transfer = round_trip(get("transfer"));
    assert_eq!(transfer.id().0, get("transfer-id"));
    let package: Package = round_trip(get("package"));
    let receipt: Receipt = round_trip(get("receipt"));

    // The pieces fit together.
    assert_eq!(package.transfer, transfer);
    assert_eq!(package.ancestry, vec![Record::Issue(issue.clone())]);
    assert_eq!(package.certificates, vec![payer_cert.clone()]);
    assert_eq!(policy.dcps, vec![dcp_cert]);
    assert_eq!(request.payee.key, payee);
    assert_eq!(
        (transfer.outputs[0].owner, transfer.outputs[0].value),
        (payee, Amount(250))
    );
    assert_eq!(
        (transfer.outputs[1].owner, transfer.outputs[1].value),
        (payer, Amount(750))
    );
    assert_eq!(
        (issue.outputs[0].owner, issue.outputs[0].value),
        (payer, Amount(1000))
    );

    // The package verifies against the request, under the vector trust store.
    let trust =
        verify::TrustStore::new(root, policy, revocations).expect("trust objects are root-signed");
    trust
        .verify_pseudonym_cert(&request.payee, 1)
        .expect("payee certificate");
    trust
        .verify_pseudonym_cert(&payer_cert, 1)
        .expect("payer certificate");
    let exp = Expected {
        payee: request.payee.key,
        amount: request.amount,
        nonce: request.nonce,
        stream: None,
    };
    let params = verify::VerifyParams {
        epoch: request.payee_epoch,
        history_records_max: HISTORY_BUDGET,
        signature_batch_max: usize::MAX,
    };
    let verified = verify::verify_package_bytes(get("package"), &exp, &trust, params, &mut NoCache)
        .expect("package");
    assert_eq!(receipt.transfer_id, verified.transfer_id());
    assert_eq!(receipt.payee, payee);
    assert!(receipt.verify().is_ok());

    // P-256: the transfer is signed by the payer key, and the package verifies.
    let p256_payer: PublicKey = round_trip(get("p256-payer-key"));
    let p256_transfer: Transfer = round_trip(get("p256-transfer"));
    assert!(
        tally_core::crypto::verify(
            &p256_payer,
            &p256_transfer.id().0,
            &p256_transfer.signatures[0]
        )
        .is_ok()
    );
    let p256_package: Package = round_trip(get("p256-package"));
    assert_eq!(p256_package.transfer, p256_transfer);
    let q = payment(Suite::EcdsaP256Sha256);
    let exp = Expected {
        payee: q.payee.public(),
        amount: Amount(250),
        nonce: NONCE,
        stream: None,
    };
    let params = q.scheme.params(HISTORY_BUDGET);
    assert!(
        verify::verify_package(p256_package, &exp, &q.scheme.trust(), params, &mut NoCache).is_ok()
    );

    // §9.11: the device ↔ back-office objects decode on their own, their
    // signatures verify, and they fit together.
    let maker_cert: MakerCertificate = round_trip(get("maker-certificate"));
    assert!(maker_cert.verify());
    let se_id = maker_cert.attestation_key.id();
    let registration: Registration = round_trip(get("registration"));
    assert_eq!(registration.maker_cert, maker_cert);
    let code = enrolment_code_digest(ENROLMENT_CODE);
    assert!(
        tally_core::crypto::verify(
            &maker_cert.attestation_key,
            &enrolment_message(&se_id, &registration.account, &code).0,
            &registration.signature
        )
        .is_ok()
    );
    let load: DeviceRequest = round_trip(get("device-request-load"));
    assert_eq!(load.se_id, se_id);
    assert_eq!(load.id().0, get("device-request-id"));
    assert!(load.attachment_matches());
    assert!(
        tally_core::crypto::verify(
            &maker_cert.attestation_key,
            &DeviceRequest::signed_message(&load.se_id, load.counter, &load.op).0,
            &load.signature
        )
        .is_ok()
    );
    let issued: DeviceResponse = round_trip(get("device-response-issued"));
    assert_eq!(issued, DeviceResponse::Issued(issue));
    let order: RedemptionOrder = round_trip(get("redemption-order"));
    assert!(order.verify());
    assert_eq!((order.se_id, order.unload), (se_id, true));
    let report: RequestReport = round_trip(get("request-report"));
    assert!(report.verify());
    assert_eq!(report.received, Some(transfer.id()));
    let upload: SyncUpload = round_trip(get("sync-upload"));
    assert_eq!(upload.packages, vec![get("package").to_vec()]);
    assert_eq!(upload.reports, vec![report]);
    let sealing_key: SealingKey = round_trip(get("sealing-key"));
    assert!(sealing_key.verify(&root).is_ok());
    let settlement_key: SettlementKey = round_trip(get("settlement-key"));
    assert!(settlement_key.verify(&root).is_ok());
}

/// §4.10.5's vectors decode, re-encode to the same bytes, and verify as
/// packages: the OPEN against the stream request, the claim and the refund
/// as ancestry of settlement's view (the claim's element walked to the
/// anchor).
#[test]
fn stream_vectors_decode_and_verify() {
    use tally_core::stream::StreamAsk;
    let v = hex_blocks(&spec_text());
    let get = |n: &str| {
        Transfer::from_cbor(v.get(n).unwrap_or_else(|| panic!("SPEC.md lacks {n}"))).unwrap()
    };
    let p = payment(Suite::Ed25519);
    let request = Request::from_cbor(&v["stream-request"]).unwrap();
    request.verify().unwrap();
    assert_eq!(
        request.stream,
        Some(StreamAsk {
            price: Amount(1),
            ticks_max: 4
        })
    );
    let (open, claim, refund) = (
        get("stream-open"),
        get("stream-claim"),
        get("stream-refund"),
    );
    for (t, n) in [
        (&open, "stream-open"),
        (&claim, "stream-claim"),
        (&refund, "stream-refund"),
    ] {
        assert_eq!(t.to_cbor(), v[n], "{n} re-encodes");
    }
    let trust = p.scheme.trust();
    let params = p.scheme.params(HISTORY_BUDGET);
    let payer_cert = p.package.certificates[0].clone();
    let pkg = build_package(
        open.clone(),
        vec![Record::Issue(p.issue.clone())],
        vec![payer_cert.clone()],
    );
    let exp = Expected {
        payee: request.payee.key,
        amount: request.amount,
        nonce: request.nonce,
        stream: request.stream,
    };
    verify::verify_package(pkg, &exp, &trust, params, &mut NoCache).expect("the OPEN");
    let payee_cert = request.payee.clone();
    for (close, certs) in [
        (&claim, vec![payer_cert.clone(), payee_cert]),
        (&refund, vec![payer_cert.clone()]),
    ] {
        let pkg = build_package(
            close.clone(),
            vec![
                Record::Issue(p.issue.clone()),
                Record::Transfer(open.clone()),
            ],
            certs,
        );
        verify::verify_package_for_settlement(pkg, &trust, params, &mut NoCache)
            .expect("the close, as settlement sees it");
    }
}
