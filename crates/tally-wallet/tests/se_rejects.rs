//! The payee SE refuses every bad package at RECEIVE, over the APDU link,
//! with the stable code of the rule it breaks (SPEC.md §5), and a refusal
//! changes nothing: the SE's state and its storage bytes are identical
//! before and after. Replays get the same receipt without a second credit,
//! and garbage APDUs never panic the card.

use std::sync::atomic::{AtomicU32, Ordering};

use tally_core::cert::role;
use tally_core::codec::{Cbor, CodecError};
use tally_core::crypto::Entropy;
use tally_core::package::sign_transfer;
use tally_core::policy::device_class::{CARD, PHONE};
use tally_core::record::distinct_signers;
use tally_core::testkit::{Scheme, TestEntropy, key};
use tally_core::{
    Amount, DcpCertificate, Output, Package, Policy, PublicKey, Record, Request, RevocationList,
    SecretKey, Signature, Suite, VerifyError,
};
use tally_se::apdu::sw;
use tally_se::dispatch::{AID, Card, ins};
use tally_se::state::State;
use tally_se::storage::MemStorage;
use tally_se::{Applet, SeError, Sealing};
use tally_wallet::testkit::{TEST_STORAGE_BYTES, TestDevice, certify_fresh_keys, load};
use tally_wallet::{ApduLink, SeLink, WalletError, pay_offline};

fn device(scheme: &Scheme, label: &str, class: u8) -> TestDevice {
    TestDevice::new(scheme, label.as_bytes(), class, 4096).expect("provision")
}

/// Reboots the device's SE from its storage and returns the storage bytes
/// (the applet owns its storage; this is how the bytes can be seen).
fn storage_image(d: &mut TestDevice) -> Vec<u8> {
    static REBOOTS: AtomicU32 = AtomicU32::new(0);
    let n = REBOOTS.fetch_add(1, Ordering::Relaxed);
    let placeholder = Applet::boot(
        MemStorage::new(TEST_STORAGE_BYTES),
        Sealing::None,
        TestEntropy::new(b"placeholder"),
    )
    .expect("blank boot");
    let applet = std::mem::replace(&mut d.link.card.applet, placeholder);
    let state = applet.state().clone();
    let bytes = applet.into_storage().into_bytes();
    // A fresh entropy label per boot, so no request nonce repeats.
    d.link.card.applet = Applet::boot(
        MemStorage::from_bytes(bytes.clone()),
        Sealing::None,
        TestEntropy::new(format!("reboot-{n}").as_bytes()),
    )
    .expect("reboot");
    assert_eq!(d.applet().state(), &state, "the state survives a reboot");
    bytes
}

fn verify_code(e: VerifyError) -> u16 {
    SeError::Verify(e).code()
}

/// Every decoding failure shares one code (V1, 101) on the wire; the
/// kind is named here for the reader.
fn decode_code(e: CodecError) -> u16 {
    let code = SeError::Decode(e).code();
    assert_eq!(code, verify_code(VerifyError::Decode(e)));
    code
}

/// Delivers `package` to the payee and asserts it is refused with `code`
/// and that neither the state nor the storage changed.
#[track_caller]
fn assert_rejected(payee: &mut TestDevice, package: &[u8], code: u16, what: &str) {
    let state = payee.applet().state().clone();
    let image = storage_image(payee);
    let r = payee.link.receive(package);
    assert_eq!(
        r.as_ref().err(),
        Some(&WalletError::Refused { code }),
        "{what}: expected code {code}, got {r:?}"
    );
    assert_eq!(payee.applet().state(), &state, "{what}: state changed");
    assert_eq!(storage_image(payee), image, "{what}: storage changed");
}

fn decode(bytes: &[u8]) -> Package {
    Package::from_cbor(bytes).expect("genuine package")
}

fn flip(sig: &Signature) -> Signature {
    let mut b = *sig.bytes();
    b[0] ^= 0x01;
    Signature::new(sig.suite(), b)
}

/// Re-signs the package's transfer with the payer's keys (read from the
/// payer SE's state, which a test can see): a payer that builds a
/// malicious transfer itself rather than tampering with a signed one.
fn resign(pkg: &mut Package, payer: &State) {
    let owners: Vec<PublicKey> = pkg
        .transfer
        .inputs
        .iter()
        .map(|op| {
            pkg.ancestry
                .iter()
                .find(|r| r.id() == op.record)
                // An input naming a missing output is signed by the owner
                // of output 0, so only the bad index is wrong.
                .and_then(|r| {
                    r.outputs()
                        .get(usize::from(op.index))
                        .or(r.outputs().first())
                })
                .map(|o| o.owner)
                .expect("input's record in the ancestry")
        })
        .collect();
    assert!(!distinct_signers(owners.iter().copied()).is_empty());
    let key_for = |k: &PublicKey| {
        payer
            .key(k)
            .and_then(|ok| SecretKey::from_seed(k.suite(), &ok.seed_for_tests()))
    };
    let t = &pkg.transfer;
    pkg.transfer = sign_transfer(
        t.inputs.clone(),
        &owners,
        t.outputs.clone(),
        t.nonce,
        t.counter,
        &key_for,
    )
    .expect("payer holds the input keys");
}

/// Re-encodes the first integer after `marker` with a one-byte-longer
/// head (`0x18 n` instead of `n`): same value, non-canonical bytes.
fn lengthen_int_after(bytes: &[u8], marker: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker present")
        + marker.len();
    let n = bytes[at];
    assert!(n < 24, "a one-byte integer");
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(&[0x18, n]);
    out.extend_from_slice(&bytes[at + 1..]);
    out
}

struct Setup {
    scheme: Scheme,
    payer: TestDevice,
    payee: TestDevice,
    request: Request,
    package: Vec<u8>,
}

/// A payer with 1 000 in one token and a payee with an open request for
/// 100 that the payer has paid (package not yet delivered).
fn setup() -> Setup {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = device(&scheme, "payer", PHONE);
    let mut payee = device(&scheme, "payee", PHONE);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();
    let request = payee.link.create_request(Amount(100)).unwrap();
    let package = payer.link.pay(&request).unwrap();
    Setup {
        scheme,
        payer,
        payee,
        request,
        package,
    }
}

/// Delivers the genuine package last: the refusals left the request
/// usable, and the payee is credited once.
fn deliver_genuine(s: &mut Setup) {
    let receipt = s.payee.link.receive(&s.package).expect("genuine package");
    assert_eq!(s.payee.balance().unwrap(), Amount(100));
    s.payer.link.ack(&receipt).expect("ack");
}

#[test]
fn tampered_packages_refused_with_their_rule_code() {
    let mut s = setup();
    let good = decode(&s.package);
    let payer_state = s.payer.applet().state().clone();
    let mutate = |f: &dyn Fn(&mut Package)| {
        let mut p = good.clone();
        f(&mut p);
        p.to_cbor()
    };
    let resigned = |f: &dyn Fn(&mut Package)| {
        let mut p = good.clone();
        f(&mut p);
        resign(&mut p, &payer_state);
        p.to_cbor()
    };
    let unrelated_issue = Record::Issue(s.scheme.issue(s.request.payee.key, 5));

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "bit-flipped transfer signature",
            mutate(&|p| p.transfer.signatures[0] = flip(&p.transfer.signatures[0])),
            verify_code(VerifyError::BadSignature),
        ),
        (
            "bit-flipped issue signature",
            mutate(&|p| {
                if let Record::Issue(i) = &mut p.ancestry[0] {
                    i.signature = flip(&i.signature);
                }
            }),
            verify_code(VerifyError::BadSignature),
        ),
        (
            "bit-flipped certificate signature",
            mutate(&|p| p.certificates[0].signature = flip(&p.certificates[0].signature)),
            verify_code(VerifyError::BadCertificateSignature),
        ),
        (
            "signature labelled with another suite",
            mutate(&|p| {
                let b = *p.transfer.signatures[0].bytes();
                p.transfer.signatures[0] = Signature::new(Suite::EcdsaP256Sha256, b);
            }),
            verify_code(VerifyError::SuiteMismatch),
        ),
        (
            "version in a two-byte integer head",
            lengthen_int_after(&s.package, &[0x84]),
            decode_code(CodecError::NonCanonical),
        ),
        (
            "transfer counter in a two-byte integer head",
            {
                let mut marker = vec![0x50];
                marker.extend_from_slice(&good.transfer.nonce);
                lengthen_int_after(&s.package, &marker)
            },
            decode_code(CodecError::NonCanonical),
        ),
        (
            "trailing byte",
            [s.package.as_slice(), &[0x00]].concat(),
            decode_code(CodecError::TrailingBytes),
        ),
        (
            "truncated by one byte",
            s.package[..s.package.len() - 1].to_vec(),
            decode_code(CodecError::Truncated),
        ),
        (
            "truncated to half",
            s.package[..s.package.len() / 2].to_vec(),
            decode_code(CodecError::Truncated),
        ),
        ("empty", Vec::new(), decode_code(CodecError::Truncated)),
        (
            "unknown protocol version",
            {
                let mut b = s.package.clone();
                assert_eq!(b[1], 0x01);
                b[1] = 0x02;
                b
            },
            decode_code(CodecError::UnsupportedVersion),
        ),
        (
            "ancestry record twice",
            mutate(&|p| p.ancestry.push(p.ancestry[0].clone())),
            verify_code(VerifyError::DuplicateRecord),
        ),
        (
            "ancestry missing",
            mutate(&|p| p.ancestry.clear()),
            verify_code(VerifyError::MissingAncestor),
        ),
        (
            "unrelated record in the ancestry",
            mutate(&|p| p.ancestry.push(unrelated_issue.clone())),
            verify_code(VerifyError::UnreachableRecord),
        ),
        (
            "input names an output the record lacks",
            resigned(&|p| p.transfer.inputs[0].index = 5),
            verify_code(VerifyError::UnknownOutput),
        ),
        (
            "transfer without outputs",
            resigned(&|p| p.transfer.outputs.clear()),
            verify_code(VerifyError::EmptyRecord),
        ),
        (
            "certificates missing",
            mutate(&|p| p.certificates.clear()),
            verify_code(VerifyError::MissingCertificate),
        ),
        (
            "certificate that signs nothing",
            mutate(&|p| p.certificates.push(s.request.payee.clone())),
            verify_code(VerifyError::UnusedCertificate),
        ),
        (
            "change one unit larger than the inputs allow",
            resigned(&|p| p.transfer.outputs[1].value.0 += 1),
            verify_code(VerifyError::ValueNotConserved),
        ),
        (
            "zero-value output",
            resigned(&|p| {
                let owner = p.transfer.outputs[1].owner;
                p.transfer.outputs.push(Output {
                    value: Amount(0),
                    owner,
                })
            }),
            verify_code(VerifyError::ZeroValueOutput),
        ),
        (
            "one input consumed twice",
            resigned(&|p| {
                let i = p.transfer.inputs[0];
                p.transfer.inputs.push(i);
                p.transfer.outputs[1].value.0 += 1_000;
            }),
            verify_code(VerifyError::OutputSpentTwice),
        ),
        (
            "nonce of no open request",
            resigned(&|p| p.transfer.nonce[0] ^= 0xFF),
            SeError::UnknownRequest.code(),
        ),
    ];
    for (what, bytes, code) in &cases {
        assert_rejected(&mut s.payee, bytes, *code, what);
    }

    // Every single-byte corruption of the genuine package is refused too.
    for i in 0..s.package.len() {
        let mut b = s.package.clone();
        b[i] ^= 0x01;
        let before = s.payee.applet().state().clone();
        let r = s.payee.link.receive(&b);
        assert!(
            matches!(r, Err(WalletError::Refused { .. })),
            "byte {i} flipped: {r:?}"
        );
        assert_eq!(s.payee.applet().state(), &before, "byte {i} flipped");
    }
    deliver_genuine(&mut s);
}

#[test]
fn package_for_another_request_refused() {
    // Request selection is by the transfer's nonce, so a package answering
    // another request is refused as UnknownRequest (nonce not open here) or
    // WrongPayee (nonce rewritten to another open request of this SE: the
    // keys differ). WrongNonce (1103) cannot surface at the SE.
    let mut s = setup();
    let mut elsewhere = device(&s.scheme, "elsewhere", PHONE);
    let req_elsewhere = elsewhere.link.create_request(Amount(100)).unwrap();
    let pkg_elsewhere = s.payer.link.pay(&req_elsewhere).unwrap();
    assert_rejected(
        &mut s.payee,
        &pkg_elsewhere,
        SeError::UnknownRequest.code(),
        "package for another payee's request",
    );

    let second = s.payee.link.create_request(Amount(100)).unwrap();
    assert_ne!(
        second.payee.key, s.request.payee.key,
        "fresh key per request"
    );
    let payer_state = s.payer.applet().state().clone();
    let mut p = decode(&s.package);
    p.transfer.nonce = second.nonce;
    resign(&mut p, &payer_state);
    assert_rejected(
        &mut s.payee,
        &p.to_cbor(),
        verify_code(VerifyError::WrongPayee),
        "nonce moved to another open request",
    );
    elsewhere
        .link
        .receive(&pkg_elsewhere)
        .expect("its own payee takes it");
    deliver_genuine(&mut s);
}

#[test]
fn wrong_amount_and_wrong_payee_refused() {
    // The request is signed by the payee's key: a payer's SE refuses an
    // altered copy (2032). The payee's SE checks the package itself all
    // the same: a request for its nonce signed by another certified key
    // (what a terminal holding such a key could make) is paid by a second
    // payer, and the payee refuses the package.
    let mut s = setup();
    let mut payer2 = device(&s.scheme, "payer2", PHONE);
    load(&mut payer2.link, &mut s.scheme, PHONE, 1_000).unwrap();

    let mut less = s.request.clone();
    less.amount = Amount(90);
    match payer2.link.pay(&less) {
        Err(e) => assert!(e.is(&SeError::BadRequestSignature), "{e:?}"),
        Ok(_) => panic!("an altered request was paid"),
    }

    let other = key(Suite::Ed25519, b"another certified key");
    let redirected = Request::sign(
        &other,
        s.request.amount,
        s.request.nonce,
        s.scheme.certify(other.public(), PHONE, 0),
        s.request.payee_epoch,
    );
    let pkg = payer2.link.pay(&redirected).unwrap();
    assert_rejected(
        &mut s.payee,
        &pkg,
        verify_code(VerifyError::WrongPayee),
        "paid to another payee's key under this payee's nonce",
    );
    deliver_genuine(&mut s);
}

#[test]
fn package_over_the_payees_history_budget_refused() {
    // The payee's policy is newer than the payer's and cuts the phones'
    // history budget to 2; the payer still plans with 32.
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut p0 = device(&scheme, "p0", PHONE);
    let mut p1 = device(&scheme, "p1", PHONE);
    let mut payer = device(&scheme, "payer", CARD);
    let mut payee = device(&scheme, "payee", PHONE);
    load(&mut p0.link, &mut scheme, PHONE, 1_000).unwrap();
    pay_offline(&mut p0.link, &mut p1.link, Amount(1_000)).unwrap();
    pay_offline(&mut p1.link, &mut payer.link, Amount(1_000)).unwrap();
    assert_eq!(payer.applet().tokens()[0].lineage_len, 3);

    let mut tiers = Scheme::default_tiers();
    for t in tiers.iter_mut().filter(|t| t.device_class == PHONE) {
        t.history_records_max = 2;
    }
    scheme.set_tiers(tiers);
    payee.link.install_policy(&scheme.policy).unwrap();
    let req = payee.link.create_request(Amount(100)).unwrap();
    let pkg = payer.link.pay(&req).expect("payer's own policy allows 32");
    assert_eq!(decode(&pkg).ancestry.len(), 3);
    assert_rejected(
        &mut payee,
        &pkg,
        verify_code(VerifyError::HistoryBudgetExceeded {
            records: 3,
            budget: 2,
        }),
        "3 records against a budget of 2",
    );
}

#[test]
fn package_signed_under_a_revoked_certificate_refused() {
    let mut s = setup();
    // The payee's own key is fine; the payer's spending key is revoked.
    let spending_key = decode(&s.package).ancestry[0].outputs()[0].owner;
    s.scheme.revoke(&[spending_key.id()]);
    s.payee
        .link
        .install_revocations(&s.scheme.revocations)
        .unwrap();
    assert_rejected(
        &mut s.payee,
        &s.package.clone(),
        verify_code(VerifyError::CertificateRevoked),
        "payer's certificate revoked",
    );
}

#[test]
fn token_from_an_unknown_issuer_refused() {
    // A counterfeiter runs its own root and DCP. Its SE trusts the real DCP
    // as well, so it accepts honest requests and pays them with its own
    // tokens.
    let honest = Scheme::new(Suite::Ed25519);
    let mut rogue = Scheme::new(Suite::Ed25519);
    rogue.root = key(Suite::Ed25519, b"rogue-root");
    rogue.dcp = key(Suite::Ed25519, b"rogue-dcp");
    let all = role::ISSUE | role::CERTIFY | role::REDEEM | role::SYNC;
    rogue.dcp_cert = DcpCertificate::sign(&rogue.root, 66, rogue.dcp.public(), all, 1_000);
    let honest_certifier =
        DcpCertificate::sign(&rogue.root, 1, honest.dcp.public(), role::CERTIFY, 1_000);
    rogue.policy = Policy::sign(
        &rogue.root,
        1,
        "XTS",
        Scheme::default_tiers(),
        vec![rogue.dcp_cert.clone(), honest_certifier],
    );
    rogue.revocations = RevocationList::sign(&rogue.root, 1, 1, Vec::new());

    let mut counterfeiter = device(&rogue, "counterfeiter", PHONE);
    load(&mut counterfeiter.link, &mut rogue, PHONE, 500).unwrap();
    let mut payee = device(&honest, "payee", PHONE);
    let req = payee.link.create_request(Amount(100)).unwrap();
    let pkg = counterfeiter.link.pay(&req).expect("rogue SE pays");
    assert_rejected(
        &mut payee,
        &pkg,
        verify_code(VerifyError::UnknownIssuer),
        "issue signed by a DCP outside the payee's trust list",
    );
}

#[test]
fn expired_certificate_and_expired_token_refused() {
    // The payer was certified at epoch 1 (certificates expire at 11, its
    // token at 21). Payees that synced later refuse its packages.
    for (epoch, rule) in [
        (12, VerifyError::CertificateExpired),
        (22, VerifyError::TokenExpired),
    ] {
        let mut scheme = Scheme::new(Suite::Ed25519);
        let mut payer = device(&scheme, "payer", PHONE);
        let mut payee = device(&scheme, "payee", PHONE);
        load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();
        scheme.epoch = epoch;
        payee.link.sync(&scheme.sync_grant(payee.se_id, 2)).unwrap();
        certify_fresh_keys(&mut payee.link, &scheme, PHONE, 1).unwrap();
        let req = payee.link.create_request(Amount(100)).unwrap();
        let pkg = payer.link.pay(&req).expect("within 30 offline epochs");
        assert_rejected(
            &mut payee,
            &pkg,
            verify_code(rule),
            &format!("payee at epoch {epoch}"),
        );
    }
}

#[test]
fn replayed_package_returns_the_same_receipt_without_credit() {
    let mut s = setup();
    let first = s.payee.link.receive(&s.package).unwrap();
    let state = s.payee.applet().state().clone();
    let image = storage_image(&mut s.payee);
    for _ in 0..3 {
        let again = s.payee.link.receive(&s.package).expect("replay");
        assert_eq!(again, first);
    }
    assert_eq!(s.payee.balance().unwrap(), Amount(100));
    assert_eq!(s.payee.applet().state(), &state);
    assert_eq!(storage_image(&mut s.payee), image);
    // After a reboot the receipt is still known.
    let again = s
        .payee
        .link
        .receive(&s.package)
        .expect("replay after reboot");
    assert_eq!(again, first);
    assert_eq!(s.payee.balance().unwrap(), Amount(100));
}

/// Sends raw APDU bytes to the card.
fn transmit(d: &mut TestDevice, apdu: &[u8]) -> Vec<u8> {
    d.link.card.transmit(apdu)
}

fn status_word(resp: &[u8]) -> u16 {
    u16::from_be_bytes([resp[resp.len() - 2], resp[resp.len() - 1]])
}

#[test]
fn garbage_apdus_never_panic_and_are_refused() {
    let mut s = setup();
    let mut rng = TestEntropy::new(b"garbage");
    let mut byte = || {
        let mut b = [0u8; 1];
        rng.fill(&mut b);
        b[0]
    };

    // Raw random APDUs: any bytes, any length. The card always answers a
    // status word; with an error status it carries no data.
    for _ in 0..3_000 {
        let len = usize::from(byte()) + usize::from(byte() % 2) * usize::from(byte());
        let apdu: Vec<u8> = (0..len).map(|_| byte()).collect();
        let resp = transmit(&mut s.payee, &apdu);
        assert!(resp.len() >= 2, "no status word for {apdu:02X?}");
        let sw_ = status_word(&resp);
        if sw_ != sw::OK && sw_ & 0xFF00 != sw::BYTES_REMAINING {
            assert_eq!(resp.len(), 2, "data with error status {sw_:04X}");
        }
    }
    // A malformed APDU drops any half-received chain; select again.
    transmit(&mut s.payee, &[0x00]);
    let mut select = vec![0x00, ins::SELECT, 0x04, 0x00, AID.len() as u8];
    select.extend_from_slice(AID);
    assert_eq!(status_word(&transmit(&mut s.payee, &select)), sw::OK);

    // Well-framed commands with random data, to every command that takes
    // data: all refused, nothing changes.
    let state = s.payee.applet().state().clone();
    let image = storage_image(&mut s.payee);
    let commands = [
        ins::RECEIVE,
        ins::PAY,
        ins::REDEEM,
        ins::ACK,
        ins::RESEND,
        ins::SYNC,
        ins::IMPORT_ISSUE,
        ins::INSTALL_POLICY,
        ins::INSTALL_REVOCATIONS,
        ins::INSTALL_CERTIFICATE,
        ins::PERSONALIZE,
        0x00,
        0x7F,
    ];
    for i in 0..600usize {
        let command = commands[i % commands.len()];
        let len = usize::from(byte()) * (1 + usize::from(byte() % 3));
        let data: Vec<u8> = (0..len).map(|_| byte()).collect();
        let r = s.payee.link.command(command, byte(), byte(), &data);
        assert!(
            matches!(r, Err(WalletError::Refused { .. } | WalletError::Status(_))),
            "INS {command:02X} with {len} random bytes: {r:?}"
        );
        assert_eq!(s.payee.applet().state(), &state, "INS {command:02X}");
    }
    assert_eq!(storage_image(&mut s.payee), image);
    // The card still works.
    deliver_genuine(&mut s);
}

// ---- a double spend the payee can see (SPEC §5.5 R2, decision 0023) ----

/// Boots a second SE from a copy of `d`'s storage: the cloned-SE attack
/// (the same keys, tokens and counter in two places).
fn clone_of(d: &mut TestDevice, label: &str) -> TestDevice {
    let bytes = storage_image(d);
    let applet = Applet::boot(
        MemStorage::from_bytes(bytes),
        Sealing::None,
        TestEntropy::new(label.as_bytes()),
    )
    .expect("the copy boots");
    TestDevice {
        link: ApduLink::select(Card::new(applet), 4096).expect("select"),
        se_id: d.se_id,
        class: d.class,
    }
}

/// A payer with 1 000 in one token, a copy of its SE taken before it pays,
/// and a payee.
fn clone_setup() -> (Scheme, TestDevice, TestDevice, TestDevice) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = device(&scheme, "payer", PHONE);
    let payee = device(&scheme, "payee", PHONE);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();
    let clone = clone_of(&mut payer, "clone");
    (scheme, payer, clone, payee)
}

/// Found with decision 0021 (a meter and its clone paying one station):
/// the payee accepted both copies of a double spend, and then could never
/// pay on or renew what it held (V10 refuses any package with both).
#[test]
fn a_clone_paying_the_same_payee_twice_is_refused_the_second_time() {
    let (scheme, mut payer, mut clone, mut payee) = clone_setup();
    let req1 = payee.link.create_request(Amount(100)).unwrap();
    let req2 = payee.link.create_request(Amount(100)).unwrap();
    // A copy of the payee that never sees the first package: it shows the
    // clone's package is sound on its own.
    let mut payee_twin = clone_of(&mut payee, "payee twin");

    let package1 = payer.link.pay(&req1).expect("the payer pays");
    let receipt = payee.link.receive(&package1).expect("first copy");
    payer.link.ack(&receipt).expect("ack");
    // The clone spends the same token again, for the same payee.
    let package2 = clone.link.pay(&req2).expect("the clone pays");
    let (p1, p2) = (decode(&package1), decode(&package2));
    assert_eq!(p1.transfer.inputs, p2.transfer.inputs, "one output, twice");
    assert_ne!(p1.transfer.id(), p2.transfer.id());

    assert_rejected(
        &mut payee,
        &package2,
        SeError::ConflictingSpend.code(),
        "the clone's copy",
    );
    assert_eq!(SeError::ConflictingSpend.code(), 2034);
    assert_eq!(payee.balance().unwrap(), Amount(100));
    assert_eq!(payee.applet().state().open_requests.len(), 1, "req2 open");
    // Only the conflict refused it: a payee without the first accepts it.
    payee_twin
        .link
        .receive(&package2)
        .expect("the clone's package alone is valid");

    // The payee pays on with the first: the next payee verifies it.
    let mut next = device(&scheme, "next", PHONE);
    pay_offline(&mut payee.link, &mut next.link, Amount(100)).expect("pays on");
    assert_eq!(next.balance().unwrap(), Amount(100));
    assert_eq!(payee.balance().unwrap(), Amount(0));
}

/// The clone's double spend reaches the payee one hop later, inside the
/// ancestry of another payer's package: the payee sees it all the same.
#[test]
fn a_double_spend_in_the_ancestry_is_refused() {
    let (scheme, mut payer, mut clone, mut payee) = clone_setup();
    let mut middle = device(&scheme, "middle", PHONE);
    pay_offline(&mut payer.link, &mut payee.link, Amount(100)).expect("honest");
    pay_offline(&mut clone.link, &mut middle.link, Amount(300)).expect("clone");

    let req = payee.link.create_request(Amount(200)).unwrap();
    let package = middle.link.pay(&req).expect("middle pays on");
    let p = decode(&package);
    assert!(
        p.ancestry.len() >= 2
            && p.transfer
                .inputs
                .iter()
                .all(|i| i.record != p.ancestry[0].id()),
        "the conflicting transfer is in the ancestry, not the final one"
    );
    assert_rejected(
        &mut payee,
        &package,
        SeError::ConflictingSpend.code(),
        "a double spend one hop back",
    );
    assert_eq!(payee.balance().unwrap(), Amount(100));
    // The middle's value is still its own to resend or recover; the
    // payee's request stays open for an honest package.
    assert_eq!(payee.applet().state().open_requests.len(), 1);
}

/// Two payments from one payer, the second made from the change of the
/// first: both ancestries share the first transfer (the same record), which
/// is a common ancestor, not a double spend. Both are accepted and the
/// payee pays on the merge of the two.
#[test]
fn payments_sharing_an_ancestor_are_accepted_and_merged() {
    let (scheme, mut payer, _clone, mut payee) = clone_setup();
    pay_offline(&mut payer.link, &mut payee.link, Amount(100)).expect("first");
    pay_offline(&mut payer.link, &mut payee.link, Amount(150)).expect("second, from change");
    let toks = payee.applet().tokens();
    assert_eq!(toks.len(), 2);
    assert_eq!(payee.balance().unwrap(), Amount(250));

    // A third payment on a different branch of the same Issue's output
    // tree (the payer's change of its change) is still no conflict.
    pay_offline(&mut payer.link, &mut payee.link, Amount(50)).expect("third");
    assert_eq!(payee.balance().unwrap(), Amount(300));

    let mut next = device(&scheme, "next", PHONE);
    let out = pay_offline(&mut payee.link, &mut next.link, Amount(300)).expect("merge");
    assert_eq!(next.balance().unwrap(), Amount(300));
    assert_eq!(payee.balance().unwrap(), Amount(0));
    assert!(out.package_bytes > 0);
}
