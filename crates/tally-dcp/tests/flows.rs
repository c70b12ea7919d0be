//! The back office end to end, in process: onboarding, load, offline
//! payments, renewal, unload, a cloned SE caught at settlement, and an
//! interrupted payment recovered in either order. SQLite, and PostgreSQL
//! when TALLY_TEST_DATABASE_URL is set.

mod support;

use std::sync::Arc;

use support::*;
use tally_core::Amount;
use tally_core::policy::device_class::{CARD, PHONE};
use tally_dcp::Backoffice;
use tally_store::Store;
use tally_wallet::agent::SealedKind;
use tally_wallet::{SeLink, pay_offline};

fn sqlite() -> Store {
    let dir = std::env::temp_dir().join(format!(
        "tally-dcp-flows-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    Store::sqlite(&dir.join("node.sqlite")).unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn full_story(store: Store) {
    let bo = Arc::new(Backoffice::open(store).unwrap());
    bo.mint("m1", 1_000_000).unwrap();
    bo.deposit("d1", "alice", 10_000).unwrap();
    bo.deposit("d2", "bob", 10_000).unwrap();
    let mut alice = onboard(&bo, "alice-card", CARD, "alice");
    let mut bob = onboard(&bo, "bob-phone", PHONE, "bob");
    with_agent(&bo, &mut alice, |a| a.load(5_000)).unwrap();
    assert_eq!(bo.account_balance("alice").unwrap(), 5_000);
    pay_offline(&mut alice.link, &mut bob.link, Amount(1_200)).unwrap();
    pay_offline(&mut bob.link, &mut alice.link, Amount(200)).unwrap();
    let inv = bo.invariant().unwrap();
    assert!(inv.holds());
    assert_eq!(inv.offline_float, 5_000);
    // Renewal: value stays offline, fresh single token.
    assert_eq!(
        with_agent(&bo, &mut bob, |a| a.renew()).unwrap(),
        Amount(1_000)
    );
    assert_eq!(bob.link.status().unwrap().tokens, 1);
    assert_eq!(bo.invariant().unwrap().offline_float, 5_000);
    // Unload: value back to the account.
    with_agent(&bo, &mut bob, |a| a.unload(400)).unwrap();
    assert_eq!(bo.account_balance("bob").unwrap(), 10_400);
    assert_eq!(bob.link.status().unwrap().balance, Amount(600));
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    assert_eq!(inv.offline_float, 4_600);
    // Sync on both; the renewed token is spendable offline again.
    with_agent(&bo, &mut alice, |a| a.sync()).unwrap();
    with_agent(&bo, &mut bob, |a| a.sync()).unwrap();
    pay_offline(&mut bob.link, &mut alice.link, Amount(600)).unwrap();
    with_agent(&bo, &mut alice, |a| a.renew()).unwrap();
    assert_eq!(alice.link.status().unwrap().balance, Amount(4_600));
    assert!(bo.invariant().unwrap().holds());
    assert!(bo.double_spends().unwrap().is_empty());
}

#[test]
fn full_story_sqlite() {
    full_story(sqlite());
}

#[test]
fn full_story_postgres() {
    if let Some((s, _)) = tally_store::test_postgres_store("full_story_postgres") {
        full_story(s);
    }
}

fn cloned_se(store: Store) {
    let bo = Arc::new(Backoffice::open(store).unwrap());
    bo.mint("m1", 1_000_000).unwrap();
    bo.deposit("d", "mallory", 10_000).unwrap();
    let mut m = onboard(&bo, "mallory", PHONE, "mallory");
    with_agent(&bo, &mut m, |a| a.load(1_000)).unwrap();
    let mut clone = clone_dev(&mut m);
    let mut p1 = onboard(&bo, "payee1", PHONE, "p1");
    let mut p2 = onboard(&bo, "payee2", PHONE, "p2");
    pay_offline(&mut m.link, &mut p1.link, Amount(1_000)).unwrap();
    pay_offline(&mut clone.link, &mut p2.link, Amount(1_000)).unwrap();
    // Both payees renew: the second settlement finds the double spend.
    with_agent(&bo, &mut p1, |a| a.renew()).unwrap();
    assert!(bo.double_spends().unwrap().is_empty());
    with_agent(&bo, &mut p2, |a| a.renew()).unwrap();
    let ds = bo.double_spends().unwrap();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].2, 1_000);
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    assert_eq!(inv.loss, -1_000);
    // Both honest payees keep their value (offline finality).
    assert_eq!(p1.link.status().unwrap().balance, Amount(1_000));
    assert_eq!(p2.link.status().unwrap().balance, Amount(1_000));
    assert_eq!(inv.offline_float, 2_000);
}

#[test]
fn cloned_se_sqlite() {
    cloned_se(sqlite());
}

#[test]
fn cloned_se_postgres() {
    if let Some((s, _)) = tally_store::test_postgres_store("cloned_se_postgres") {
        cloned_se(s);
    }
}

fn interrupted(store: Store, payer_first: bool) {
    let bo = Arc::new(Backoffice::open(store).unwrap());
    bo.mint("m1", 1_000_000).unwrap();
    bo.deposit("d", "a", 10_000).unwrap();
    let mut a = onboard(&bo, "a", PHONE, "a");
    let mut b = onboard(&bo, "b", PHONE, "b");
    with_agent(&bo, &mut a, |x| x.load(1_000)).unwrap();
    // Payer commits; the package never reaches the payee.
    let req = b.link.create_request(Amount(300)).unwrap();
    let _lost = a.link.pay(&req).unwrap();
    assert_eq!(a.link.status().unwrap().balance, Amount(700));
    assert_eq!(b.link.status().unwrap().balance, Amount(0));
    if payer_first {
        with_agent(&bo, &mut a, |x| x.sync()).unwrap();
        let r = with_agent(&bo, &mut b, |x| x.sync()).unwrap();
        assert_eq!(r.recovered, Amount(300));
    } else {
        let r = with_agent(&bo, &mut b, |x| x.sync()).unwrap();
        assert_eq!(r.recovered, Amount(0));
        with_agent(&bo, &mut a, |x| x.sync()).unwrap();
        let r = with_agent(&bo, &mut b, |x| x.sync()).unwrap();
        assert_eq!(r.recovered, Amount(300));
    }
    // Exactly once: more syncs recover nothing more.
    for _ in 0..2 {
        with_agent(&bo, &mut a, |x| x.sync()).unwrap();
        assert_eq!(
            with_agent(&bo, &mut b, |x| x.sync()).unwrap().recovered,
            Amount(0)
        );
    }
    assert_eq!(b.link.status().unwrap().balance, Amount(300));
    assert_eq!(a.link.status().unwrap().balance, Amount(700));
    let inv = bo.invariant().unwrap();
    assert!(inv.holds());
    assert_eq!(inv.offline_float, 1_000);
    // The recovered token renews normally.
    with_agent(&bo, &mut b, |x| x.renew()).unwrap();
    assert!(bo.invariant().unwrap().holds());
}

#[test]
fn interrupted_payment_payer_syncs_first() {
    interrupted(sqlite(), true);
}

#[test]
fn interrupted_payment_payee_syncs_first() {
    interrupted(sqlite(), false);
}

#[test]
fn interrupted_payment_postgres() {
    if let Some((s, _)) = tally_store::test_postgres_store("interrupted_payment_postgres") {
        interrupted(s, false);
    }
}

/// Regression: every load, renewal round and unload took a key slot that
/// was only freed when its certificate expired, so the 13th operation of a
/// device failed with a full key table.
#[test]
fn many_operations_do_not_exhaust_the_key_table() {
    let bo = Arc::new(Backoffice::open(sqlite()).unwrap());
    bo.mint("m1", 1_000_000).unwrap();
    bo.deposit("d", "alice", 100_000).unwrap();
    let mut a = onboard(&bo, "alice-many", PHONE, "alice");
    let mut b = onboard(&bo, "bob-many", PHONE, "bob");
    for i in 0..40u64 {
        match i % 4 {
            0 => {
                with_agent(&bo, &mut a, |x| x.load(100)).unwrap();
            }
            1 => {
                pay_offline(&mut a.link, &mut b.link, Amount(50)).unwrap();
            }
            2 => {
                with_agent(&bo, &mut a, |x| x.renew()).unwrap();
                with_agent(&bo, &mut b, |x| x.renew()).unwrap();
            }
            _ => {
                with_agent(&bo, &mut b, |x| x.unload(10)).unwrap();
            }
        }
    }
    assert!(a.link.status().unwrap().certified_keys >= 1);
    assert_eq!(a.link.status().unwrap().balance, Amount(500));
    assert_eq!(b.link.status().unwrap().balance, Amount(400));
    assert!(bo.invariant().unwrap().holds());
}

/// Bad input: a device redeeming tokens of another device (a redemption
/// package answering another SE's order) is refused and changes nothing:
/// the other SE refuses to pay the order and to build the request, and
/// the request forged with its extracted key is refused by the DCP.
#[test]
fn tokens_of_another_device_are_refused() {
    use tally_core::codec::Cbor;
    use tally_core::dcp::{DeviceOp, DeviceResponse, attachment_digest};
    use tally_core::{Package, Record};
    use tally_se::{RequestParams, SeError};
    let bo = Arc::new(Backoffice::open(sqlite()).unwrap());
    bo.mint("m1", 1_000_000).unwrap();
    bo.deposit("d", "alice", 10_000).unwrap();
    let mut a = onboard(&bo, "alice-x", PHONE, "alice");
    let mut b = onboard(&bo, "bob-x", PHONE, "bob");
    with_agent(&bo, &mut a, |x| x.load(1_000)).unwrap();
    // Alice's SE pays a redemption order issued to Alice…
    let req_bytes = build_request(
        &mut a,
        RequestParams::RedemptionRequest {
            amount: 1_000,
            unload: true,
        },
        Vec::new(),
    );
    let DeviceResponse::Redemption(order) =
        DeviceResponse::from_cbor(&bo.handle_device(&req_bytes).unwrap()).unwrap()
    else {
        panic!("expected a redemption order")
    };
    let package = a.link.redeem(&order).unwrap();
    let transfer_id = Record::Transfer(Package::from_cbor(&package).unwrap().transfer).id();
    // …and Bob's device tries to unload it into Bob's account. Bob's SE
    // builds no Redeem for a redemption it did not pay.
    let sealed = seal_to_settlement(&bo, SealedKind::Redemption, &package);
    let e = b
        .link
        .build_request(&RequestParams::Redeem {
            nonce: order.request.nonce,
            sealed_digest: attachment_digest(&sealed),
        })
        .unwrap_err();
    assert!(e.is(&SeError::UnknownTransfer), "{e}");
    // With Bob's SE key extracted, the request is forged: the DCP refuses it.
    let key = b.link.generate_keys(1).unwrap()[0];
    let before = bo.invariant().unwrap();
    let bob_before = bo.account_balance("bob").unwrap();
    let steal = forge_request(
        &mut b,
        DeviceOp::Redeem {
            nonce: order.request.nonce,
            transfer_id,
            key,
            sealed_digest: attachment_digest(&sealed),
        },
        sealed.clone(),
    );
    let e = bo.handle_device(&steal).unwrap_err();
    assert_eq!(
        e.code(),
        tally_dcp::BackofficeError::UnknownRedemption.code()
    );
    assert_eq!(bo.invariant().unwrap(), before);
    assert_eq!(bo.account_balance("bob").unwrap(), bob_before);
    // Alice's own device can still unload it.
    let ok = build_request(
        &mut a,
        RequestParams::Redeem {
            nonce: order.request.nonce,
            sealed_digest: attachment_digest(&sealed),
        },
        sealed,
    );
    assert!(matches!(
        DeviceResponse::from_cbor(&bo.handle_device(&ok).unwrap()).unwrap(),
        DeviceResponse::Unloaded { .. }
    ));
    assert_eq!(bo.account_balance("alice").unwrap(), 10_000);
}

/// Two different signed requests redeeming one redemption order (the SE
/// builds a Redeem for its payment as often as asked, each with its own
/// counter and sealing): the second is refused by the central bank even
/// when the DCP's own check is passed (the race window between the
/// central commit and the DCP marking its row done, simulated by
/// resetting that row), and nothing is paid twice.
#[test]
fn one_redemption_pays_once_across_requests() {
    use tally_core::codec::Cbor;
    use tally_core::dcp::{DeviceResponse, attachment_digest};
    use tally_se::RequestParams;
    let bo = Arc::new(Backoffice::open(sqlite()).unwrap());
    bo.mint("m1", 1_000_000).unwrap();
    bo.deposit("d", "alice", 10_000).unwrap();
    let mut a = onboard(&bo, "alice-twice", PHONE, "alice");
    with_agent(&bo, &mut a, |x| x.load(1_000)).unwrap();
    let r = build_request(
        &mut a,
        RequestParams::RedemptionRequest {
            amount: 1_000,
            unload: true,
        },
        Vec::new(),
    );
    let DeviceResponse::Redemption(order) =
        DeviceResponse::from_cbor(&bo.handle_device(&r).unwrap()).unwrap()
    else {
        panic!("expected a redemption order")
    };
    let package = a.link.redeem(&order).unwrap();
    let redeem = |a: &mut Dev| {
        let sealed = seal_to_settlement(&bo, SealedKind::Redemption, &package);
        build_request(
            a,
            RequestParams::Redeem {
                nonce: order.request.nonce,
                sealed_digest: attachment_digest(&sealed),
            },
            sealed,
        )
    };
    let first = redeem(&mut a);
    let second = redeem(&mut a);
    assert_ne!(first, second);
    bo.handle_device(&first).unwrap();
    assert_eq!(bo.account_balance("alice").unwrap(), 10_000);
    let after_first = bo.invariant().unwrap();
    // The race: the DCP has not marked its row done yet.
    bo.dcp_store()
        .transact(|tx| {
            tx.execute("UPDATE dcp_redemptions SET done = 0", &[])?;
            Ok::<_, tally_store::StoreError>(())
        })
        .unwrap();
    let e = bo.handle_device(&second).unwrap_err();
    assert_eq!(
        e.code(),
        tally_dcp::BackofficeError::UnknownRedemption.code()
    );
    assert_eq!(bo.account_balance("alice").unwrap(), 10_000, "paid once");
    assert_eq!(bo.invariant().unwrap(), after_first);
    // The first request again is still answered, identically.
    let again = bo.handle_device(&first).unwrap();
    assert!(matches!(
        DeviceResponse::from_cbor(&again).unwrap(),
        DeviceResponse::Unloaded {
            balance: 10_000,
            ..
        }
    ));
}

/// A cloned SE that redeems a token its original already spent is refused
/// (57), nothing moves, and the MDS still sees the attempt as a double
/// spend (the refused package reaches it outside the rolled-back settlement).
#[test]
fn redeemer_double_spend_is_refused_and_reported_to_the_mds() {
    let bo = Arc::new(Backoffice::open(sqlite()).unwrap());
    bo.mint("m1", 1_000_000).unwrap();
    bo.deposit("d", "mallory", 10_000).unwrap();
    let mut m = onboard(&bo, "mallory-r", PHONE, "mallory");
    with_agent(&bo, &mut m, |a| a.load(1_000)).unwrap();
    let mut clone = clone_dev(&mut m);
    let mut p1 = onboard(&bo, "payee-r", PHONE, "p1");
    pay_offline(&mut m.link, &mut p1.link, Amount(1_000)).unwrap();
    with_agent(&bo, &mut p1, |a| a.renew()).unwrap();
    assert!(bo.alerts().unwrap().is_empty());
    let before = bo.invariant().unwrap();
    let e = with_agent(&bo, &mut clone, |a| a.unload(1_000)).unwrap_err();
    assert!(e.to_string().contains("57"), "{e}");
    assert_eq!(bo.invariant().unwrap(), before, "nothing honoured");
    assert_eq!(bo.account_balance("mallory").unwrap(), 9_000);
    let alerts = bo.alerts().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, tally_mds::AlertKind::DoubleSpend);
    assert_eq!(alerts[0].amount, 1_000);
}
