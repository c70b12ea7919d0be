//! Attacks on the redesigned device ↔ back-office format (issue 9, trust
//! rooted in the SE), in process on SQLite: open enrolment, forged
//! recovery claims, redemption orders and packages swapped between SEs,
//! loads above the holding limit. Each attack is refused with its typed
//! code and changes nothing: balances, the ledger invariant, the
//! directory, and the one-time code stays usable by its rightful SE.

mod support;

use std::sync::Arc;

use support::*;
use tally_core::codec::Cbor;
use tally_core::dcp::{
    DeviceOp, DeviceResponse, MakerCertificate, RequestReport, SyncUpload, attachment_digest,
};
use tally_core::policy::device_class::{IOT, PHONE};
use tally_core::{Amount, Hash32, Package, Record, SecretKey, Suite};
use tally_dcp::{Backoffice, BackofficeError};
use tally_directory::{Directory, DirectoryError};
use tally_se::{Limit, RequestParams, SeError};
use tally_store::Store;
use tally_wallet::SeLink;
use tally_wallet::agent::{Agent, SealedKind, manufacture};

fn node() -> Arc<Backoffice> {
    let dir = std::env::temp_dir().join(format!(
        "tally-dcp-attacks-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let bo = Arc::new(Backoffice::open(Store::sqlite(&dir.join("node.sqlite")).unwrap()).unwrap());
    bo.mint("m1", 1_000_000).unwrap();
    bo
}

/// What must not change under a refused attack.
#[derive(Debug, PartialEq)]
struct Snapshot {
    invariant: tally_ledger::ledger::Invariant,
    devices: Vec<(Hash32, bool)>,
    balances: Vec<i64>,
}

fn snapshot(bo: &Backoffice, accounts: &[&str]) -> Snapshot {
    let invariant = bo.invariant().unwrap();
    assert!(invariant.holds(), "{invariant:?}");
    Snapshot {
        invariant,
        devices: bo
            .devices()
            .unwrap()
            .into_iter()
            .map(|e| (e.se_id, e.status == tally_directory::SeStatus::Active))
            .collect(),
        balances: accounts
            .iter()
            .map(|a| bo.account_balance(a).unwrap_or(-1))
            .collect(),
    }
}

fn code_of(e: &BackofficeError) -> u16 {
    e.code()
}

// ---- 1. open enrolment ------------------------------------------------------

/// No code, a wrong code, the code of another account: 81. Nothing is
/// registered, and the account's real code still enrols its SE.
#[test]
fn enrolment_without_the_accounts_code_is_refused() {
    let bo = node();
    bo.deposit("d-a", "alice", 5_000).unwrap();
    bo.deposit("d-b", "bob", 5_000).unwrap();
    let alice_code = bo.enrolment_code("alice").unwrap();
    let bob_code = bo.enrolment_code("bob").unwrap();
    let (mut se, cert) = manufactured(&bo, "intruder", PHONE);
    let before = snapshot(&bo, &["alice", "bob"]);
    let wrong = "0000-0000-0000-0000".to_string();
    for code in ["", wrong.as_str(), bob_code.as_str()] {
        let e = register(&bo, &mut se, cert.clone(), "alice", code).unwrap_err();
        assert_eq!(code_of(&e), 81, "code {code:?}: {e}");
        assert_eq!(e, BackofficeError::BadEnrolment);
    }
    // An account that does not exist answers the same.
    let e = register(&bo, &mut se, cert.clone(), "nobody", &alice_code).unwrap_err();
    assert_eq!(code_of(&e), 81);
    // Over the wallet's own onboarding too.
    let mut b = Local(bo.clone());
    let e = Agent::onboard(&mut se, &mut b, cert.clone(), "alice", "")
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("81") || e.to_string().contains("enrolment"),
        "{e}"
    );
    assert_eq!(
        snapshot(&bo, &["alice", "bob"]),
        before,
        "a refusal changed state"
    );
    assert!(bo.devices().unwrap().is_empty());
    // The codes were not used up: each enrols its own account's SE.
    let alice_id = register(&bo, &mut se, cert, "alice", &alice_code).unwrap();
    let (mut bob_se, bob_cert) = manufactured(&bo, "bob-se", PHONE);
    let bob_id = register(&bo, &mut bob_se, bob_cert, "bob", &bob_code).unwrap();
    assert_ne!(alice_id, bob_id);
    assert_eq!(bo.devices().unwrap().len(), 2);
    assert!(bo.invariant().unwrap().holds());
}

/// A code enrols one SE: a second SE with the same code gets 82 (a retry
/// by the first SE is idempotent).
#[test]
fn an_enrolment_code_enrols_one_se_only() {
    let bo = node();
    bo.deposit("d", "alice", 5_000).unwrap();
    let code = bo.enrolment_code("alice").unwrap();
    let (mut first, cert1) = manufactured(&bo, "first", PHONE);
    let id = register(&bo, &mut first, cert1.clone(), "alice", &code).unwrap();
    assert_eq!(
        register(&bo, &mut first, cert1, "alice", &code).unwrap(),
        id
    );
    let (mut second, cert2) = manufactured(&bo, "second", PHONE);
    let before = snapshot(&bo, &["alice"]);
    let e = register(&bo, &mut second, cert2.clone(), "alice", &code).unwrap_err();
    assert_eq!(e, BackofficeError::EnrolmentCodeUsed);
    assert_eq!(code_of(&e), 82);
    let mut b = Local(bo.clone());
    let e = Agent::onboard(&mut second, &mut b, cert2, "alice", &code)
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("82") || e.to_string().contains("used"),
        "{e}"
    );
    assert_eq!(snapshot(&bo, &["alice"]), before);
    assert_eq!(bo.devices().unwrap().len(), 1);
}

/// An SE certified by a maker key the central bank does not trust, or a
/// certificate whose signature does not verify: 43, and the code it
/// presented is not used up.
#[test]
fn an_untrusted_manufacturer_cannot_enrol() {
    let bo = node();
    bo.deposit("d", "alice", 5_000).unwrap();
    let code = bo.enrolment_code("alice").unwrap();
    // Trust the real maker (as every honest onboarding here does).
    let _ = manufactured(&bo, "warm-up", PHONE);
    let rogue = SecretKey::from_seed(Suite::Ed25519, &[0x66; 32]).unwrap();
    let mut se =
        tally_wallet::ApduLink::select(tally_wallet::testkit::blank_card(b"rogue"), 4096).unwrap();
    let rogue_cert = manufacture(&mut se, PHONE, bo.root_key(), &rogue, MAKER).unwrap();
    let before = snapshot(&bo, &["alice"]);
    let e = register(&bo, &mut se, rogue_cert.clone(), "alice", &code).unwrap_err();
    assert_eq!(
        e,
        BackofficeError::Directory(DirectoryError::UntrustedManufacturer)
    );
    assert_eq!(code_of(&e), 43);
    // The trusted maker's key named on a certificate it did not sign.
    let forged = MakerCertificate {
        maker_key: maker_key().public(),
        ..rogue_cert
    };
    let e = register(&bo, &mut se, forged, "alice", &code).unwrap_err();
    assert_eq!(code_of(&e), 43);
    assert_eq!(snapshot(&bo, &["alice"]), before);
    assert!(bo.devices().unwrap().is_empty());
    // The code still enrols a trusted SE.
    let (mut good, cert) = manufactured(&bo, "good", PHONE);
    register(&bo, &mut good, cert, "alice", &code).unwrap();
    assert_eq!(bo.devices().unwrap().len(), 1);
}

/// A revoked SE does not come back with a fresh, valid code: 44, and the
/// code stays usable for a new SE.
#[test]
fn a_revoked_se_cannot_register_again() {
    let bo = node();
    bo.deposit("d", "alice", 5_000).unwrap();
    let (mut se, cert) = manufactured(&bo, "revoked", PHONE);
    let first = bo.enrolment_code("alice").unwrap();
    let se_id = register(&bo, &mut se, cert.clone(), "alice", &first).unwrap();
    let digest = bo
        .store()
        .transact(|tx| Directory::id_digest(tx, &se_id))
        .unwrap()
        .expect("identity digest");
    bo.revoke_opened(&digest, &[], "test: extracted keys", None)
        .unwrap();
    let fresh = bo.enrolment_code("alice").unwrap();
    let before = snapshot(&bo, &["alice"]);
    let e = register(&bo, &mut se, cert.clone(), "alice", &fresh).unwrap_err();
    assert_eq!(e, BackofficeError::Directory(DirectoryError::Revoked));
    assert_eq!(code_of(&e), 44);
    // Its first code again: still revoked.
    let e = register(&bo, &mut se, cert, "alice", &first).unwrap_err();
    assert_eq!(code_of(&e), 44);
    assert_eq!(snapshot(&bo, &["alice"]), before);
    // The fresh code was not used up.
    let (mut new_se, new_cert) = manufactured(&bo, "replacement", PHONE);
    let new_id = register(&bo, &mut new_se, new_cert, "alice", &fresh).unwrap();
    assert_ne!(new_id, se_id);
}

// ---- 2. forged recovery -----------------------------------------------------

/// A payee that received a package (and withheld the receipt, so the
/// payer uploads it as unacknowledged) claims it as an interrupted
/// payment with closures its SE never signed: none is recovered; the
/// payee is credited once, by the package it received.
#[test]
fn a_forged_closure_recovers_nothing() {
    let bo = node();
    bo.deposit("d", "alice", 10_000).unwrap();
    let mut a = onboard(&bo, "alice-f", PHONE, "alice");
    let mut b = onboard(&bo, "bob-f", PHONE, "bob");
    with_agent(&bo, &mut a, |x| x.load(1_000)).unwrap();
    // Bob's SE receives the package; Bob's terminal keeps the receipt.
    let request = b.link.create_request(Amount(300)).unwrap();
    let package = a.link.pay(&request).unwrap();
    b.link.receive(&package).unwrap();
    assert_eq!(b.link.status().unwrap().balance, Amount(300));
    // Alice's SE still lists it unacknowledged: her sync uploads it.
    with_agent(&bo, &mut a, |x| x.sync()).unwrap();
    let key = request.payee.key;
    let nonce = request.nonce;
    let attacker = SecretKey::from_seed(Suite::Ed25519, &[0x77; 32]).unwrap();
    // A closure Bob's SE did sign, for another request, to borrow from.
    b.link.create_request(Amount(10)).unwrap();
    let genuine = b
        .link
        .report_requests()
        .unwrap()
        .into_iter()
        .find(|r| r.received.is_none())
        .unwrap();
    assert!(genuine.verify());
    let closures = [
        // The payment's nonce and key, signed by a key Bob does own.
        RequestReport {
            nonce,
            amount: 300,
            key,
            received: None,
            signature: attacker.sign(&RequestReport::signed_message(&nonce, 300, &key, None).0),
        },
        // The payment's nonce and key with a signature of Bob's SE over
        // another closure: it does not verify.
        RequestReport {
            nonce,
            amount: 300,
            key,
            received: None,
            signature: genuine.signature,
        },
        // The payment's nonce under the attacker's own key, validly
        // self-signed: it names no payment.
        RequestReport::sign(&attacker, nonce, 300, None),
    ];
    assert!(!closures[0].verify() && !closures[1].verify() && closures[2].verify());
    let before = snapshot(&bo, &["alice", "bob"]);
    for (i, c) in closures.iter().enumerate() {
        let upload = SyncUpload {
            packages: Vec::new(),
            reports: vec![c.clone()],
        }
        .to_cbor();
        let sealed = seal_to_settlement(&bo, SealedKind::SyncUpload, &upload);
        // Bob's wallet has its SE sign the Sync of what it sealed.
        let req = build_request(
            &mut b,
            RequestParams::Sync {
                sealed_digest: attachment_digest(&sealed),
            },
            sealed,
        );
        // The SE signed the digest of its own reports: an upload carrying
        // any other report is refused before settlement (86).
        let e = bo.handle_device(&req).unwrap_err();
        assert_eq!(code_of(&e), 86, "closure {i}: {e}");
        assert_eq!(snapshot(&bo, &["alice", "bob"]), before, "closure {i}");
    }
    // Honest syncs on both sides recover nothing either.
    for _ in 0..2 {
        with_agent(&bo, &mut a, |x| x.sync()).unwrap();
        let r = with_agent(&bo, &mut b, |x| x.sync()).unwrap();
        assert_eq!(r.recovered, Amount(0));
    }
    assert_eq!(
        b.link.status().unwrap().balance,
        Amount(300),
        "credited once"
    );
    assert_eq!(a.link.status().unwrap().balance, Amount(700));
    // Bob's received token renews, once; the float is what was loaded.
    assert_eq!(with_agent(&bo, &mut b, |x| x.renew()).unwrap(), Amount(300));
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    assert_eq!(inv.offline_float, 1_000);
    assert_eq!(inv.loss, 0);
    assert!(bo.double_spends().unwrap().is_empty());
}

// ---- 3. redemption orders and packages swapped ----------------------------

/// One SE's redemption order fed to another SE (over APDUs): refused in
/// the SE (2015) with nothing spent; and a Redeem whose sealed package
/// is not the transfer the op names: 83, nothing settled or paid, and the
/// honest Redeem still goes through.
#[test]
fn redemption_orders_and_packages_are_bound() {
    let bo = node();
    bo.deposit("d", "alice", 10_000).unwrap();
    bo.deposit("d-b", "bob", 10_000).unwrap();
    let mut a = onboard(&bo, "alice-o", PHONE, "alice");
    let mut b = onboard(&bo, "bob-o", PHONE, "bob");
    with_agent(&bo, &mut a, |x| x.load(1_000)).unwrap();
    with_agent(&bo, &mut b, |x| x.load(1_000)).unwrap();
    let req = build_request(
        &mut a,
        RequestParams::RedemptionRequest {
            amount: 1_000,
            unload: true,
        },
        Vec::new(),
    );
    let DeviceResponse::Redemption(order) =
        DeviceResponse::from_cbor(&bo.handle_device(&req).unwrap()).unwrap()
    else {
        panic!("expected a redemption order")
    };
    assert_eq!(order.se_id, a.se_id);
    assert!(order.verify());
    // Bob's SE, over APDUs, refuses Alice's order: Bob's tokens would
    // otherwise be unloaded into Alice's account.
    let bob_status = b.link.status().unwrap();
    let e = b.link.redeem(&order).unwrap_err();
    assert!(e.is(&SeError::NotForThisSe), "{e}");
    assert_eq!(SeError::NotForThisSe.code(), 2015);
    assert!(e.to_string().contains("2015"), "{e}");
    assert_eq!(b.link.status().unwrap(), bob_status, "nothing spent");
    assert!(b.link.outgoing().unwrap().is_empty());
    // Alice pays her own order.
    let package = a.link.redeem(&order).unwrap();
    let transfer_id = Record::Transfer(Package::from_cbor(&package).unwrap().transfer).id();
    let sealed = seal_to_settlement(&bo, SealedKind::Redemption, &package);
    // A Redeem naming another transfer than the sealed package (what the
    // real SE never signs: it names its own payment of the order).
    let key = a.link.generate_keys(1).unwrap()[0];
    let before = snapshot(&bo, &["alice", "bob"]);
    for other in [Hash32([0x33; 32]), Hash32(transfer_id.0.map(|x| x ^ 1))] {
        let swapped = forge_request(
            &mut a,
            DeviceOp::Redeem {
                nonce: order.request.nonce,
                transfer_id: other,
                key,
                sealed_digest: attachment_digest(&sealed),
            },
            sealed.clone(),
        );
        let e = bo.handle_device(&swapped).unwrap_err();
        assert_eq!(e, BackofficeError::TransferMismatch);
        assert_eq!(code_of(&e), 83);
        assert_eq!(snapshot(&bo, &["alice", "bob"]), before);
    }
    // The attachment swapped under a signed Redeem: refused before anything.
    let mut honest = a
        .link
        .build_request(&RequestParams::Redeem {
            nonce: order.request.nonce,
            sealed_digest: attachment_digest(&sealed),
        })
        .unwrap();
    honest.attachment = seal_to_settlement(&bo, SealedKind::Redemption, &package);
    let e = bo.handle_device(&honest.to_cbor()).unwrap_err();
    assert_eq!(e, BackofficeError::BadAttachment);
    assert_eq!(code_of(&e), 80);
    assert_eq!(snapshot(&bo, &["alice", "bob"]), before);
    // The Redeem the SE builds for its payment still unloads, once.
    let ok = build_request(
        &mut a,
        RequestParams::Redeem {
            nonce: order.request.nonce,
            sealed_digest: attachment_digest(&sealed),
        },
        sealed,
    );
    let DeviceResponse::Unloaded { balance, receipt } =
        DeviceResponse::from_cbor(&bo.handle_device(&ok).unwrap()).unwrap()
    else {
        panic!("expected an unload")
    };
    assert_eq!(balance, 10_000);
    assert_eq!(receipt.transfer_id, transfer_id);
    a.link.ack(&receipt).unwrap();
    assert_eq!(bo.account_balance("bob").unwrap(), 9_000);
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    assert_eq!(inv.offline_float, 1_000);
}

// ---- 4. load above the holding limit ----------------------------------------

/// A load above the device class's holding limit: the SE refuses to
/// build it; forged with the SE's extracted key, the DCP refuses it (84)
/// before anything is debited.
#[test]
fn a_load_above_the_holding_limit_is_refused() {
    let bo = node();
    bo.deposit("d", "meter", 50_000).unwrap();
    let mut m = onboard(&bo, "meter", IOT, "meter");
    let holding = bo.policy().unwrap().limits(IOT, 0).unwrap().holding_max.0;
    assert_eq!(holding, 20_000);
    let before = snapshot(&bo, &["meter"]);
    let e = with_agent(&bo, &mut m, |x| x.load(holding + 1)).unwrap_err();
    assert!(
        matches!(&e, tally_wallet::agent::AgentError::Se(w) if w.is(&SeError::LimitExceeded(Limit::Holding))),
        "{e}"
    );
    assert_eq!(snapshot(&bo, &["meter"]), before);
    let key = m.link.generate_keys(1).unwrap()[0];
    for amount in [holding + 1, 49_000, u64::MAX] {
        let forged = forge_request(&mut m, DeviceOp::Load { amount, key }, Vec::new());
        let e = bo.handle_device(&forged).unwrap_err();
        assert_eq!(e, BackofficeError::LoadAboveHolding, "load {amount}");
        assert_eq!(code_of(&e), 84);
        assert_eq!(snapshot(&bo, &["meter"]), before, "load {amount}");
    }
    assert_eq!(
        bo.account_balance("meter").unwrap(),
        50_000,
        "nothing debited"
    );
    assert_eq!(m.link.status().unwrap().balance, Amount(0));
    // Up to the limit loads.
    with_agent(&bo, &mut m, |x| x.load(holding)).unwrap();
    assert_eq!(bo.account_balance("meter").unwrap(), 30_000);
    assert_eq!(bo.invariant().unwrap().offline_float, holding as i64);
}
