//! Issue 9: the attacks a hostile terminal can mount on an unbroken SE,
//! each driven over ISO 7816-4 APDUs the way a payee's phone driving a
//! card would, and each refused with its code while the SE's state stays
//! byte for byte what it was.

use tally_core::codec::Cbor;
use tally_core::dcp::{DeviceOp, DeviceRequest, RedemptionOrder, RequestKind, RequestReport};
use tally_core::policy::{TierLimits, device_class};
use tally_core::testkit::{Scheme, default_tier};
use tally_core::{Amount, Request, Suite};
use tally_se::dispatch::{CLA_ISO, ins};
use tally_se::state::PIN_TRIES_MAX;
use tally_se::{RequestParams, SeError};
use tally_wallet::testkit::{TestDevice, load};
use tally_wallet::{SeLink, WalletError, pay_offline};

const PIN: &[u8] = b"2468";

/// Cards pay up to 100 without the PIN, 250 in a row; online payments
/// need it.
fn cvm_tiers() -> Vec<TierLimits> {
    let mut tiers = Scheme::default_tiers();
    for t in tiers.iter_mut() {
        if t.device_class == device_class::CARD {
            *t = TierLimits {
                cvm_payment_max: Amount(100),
                cvm_cumulative_max: Amount(250),
                cvm_online: true,
                ..default_tier(device_class::CARD, 0)
            };
        }
    }
    tiers
}

fn snapshot(d: &TestDevice) -> Vec<u8> {
    d.applet().state().to_cbor()
}

fn refused(r: Result<impl core::fmt::Debug, WalletError>, e: SeError) {
    match r {
        Err(w) => assert!(w.is(&e), "expected {e:?} (code {}), got {w:?}", e.code()),
        Ok(v) => panic!("expected {e:?}, the SE accepted: {v:?}"),
    }
}

fn card(scheme: &mut Scheme, label: &[u8], value: u64) -> TestDevice {
    let mut d = TestDevice::new(scheme, label, device_class::CARD, 255).expect("card");
    d.link.change_pin(None, PIN).expect("set PIN");
    if value > 0 {
        load(&mut d.link, scheme, device_class::CARD, value).expect("load");
    }
    d
}

/// Attack 2: the same Issue sent again after the token was spent used to
/// be credited again (an unmodified SE signing twice for one outpoint).
#[test]
fn issue_reimport_after_spending_is_refused() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = TestDevice::new(&scheme, b"payer", device_class::PHONE, 4096).unwrap();
    let mut payee = TestDevice::new(&scheme, b"payee", device_class::PHONE, 4096).unwrap();
    let key = payer.link.generate_keys(1).unwrap()[0];
    payer
        .link
        .install_certificate(&scheme.certify(key, device_class::PHONE, 0))
        .unwrap();
    let issue = scheme.issue(key, 500);
    assert_eq!(payer.link.import_issue(&issue).unwrap(), Amount(500));
    // A retry while the token is held is not a second credit either.
    refused(payer.link.import_issue(&issue), SeError::AlreadyImported);
    pay_offline(&mut payer.link, &mut payee.link, Amount(500)).unwrap();
    assert_eq!(payer.balance().unwrap(), Amount::ZERO);
    let before = snapshot(&payer);
    refused(payer.link.import_issue(&issue), SeError::AlreadyImported);
    assert_eq!(snapshot(&payer), before, "state unchanged");
    assert_eq!(payer.balance().unwrap(), Amount::ZERO);
}

/// An imported Issue's id is kept while the Issue could be credited again
/// and dropped at the first sync past its expiry (decision 0024): the
/// table does not grow with every load, and the Issue is refused all the
/// same.
#[test]
fn an_expired_issue_leaves_the_imported_table_at_sync_and_stays_refused() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = TestDevice::new(&scheme, b"payer", device_class::PHONE, 4096).unwrap();
    let mut payee = TestDevice::new(&scheme, b"payee", device_class::PHONE, 4096).unwrap();
    let key = payer.link.generate_keys(1).unwrap()[0];
    payer
        .link
        .install_certificate(&scheme.certify(key, device_class::PHONE, 0))
        .unwrap();
    let issue = scheme.issue(key, 500);
    payer.link.import_issue(&issue).unwrap();
    pay_offline(&mut payer.link, &mut payee.link, Amount(500)).unwrap();
    let id = issue.id();
    let imported = |d: &TestDevice| d.applet().state().imported.iter().any(|i| i.id == id);
    assert!(imported(&payer));
    // A sync before the Issue expires keeps its id.
    payer
        .link
        .sync(&scheme.sync_grant(payer.se_id, 2))
        .expect("sync");
    assert!(imported(&payer));
    // The first sync past its expiry drops it.
    scheme.epoch = issue.expiry_epoch + 1;
    payer
        .link
        .sync(&scheme.sync_grant(payer.se_id, 3))
        .expect("sync");
    assert!(!imported(&payer));
    let before = snapshot(&payer);
    assert!(
        payer.link.import_issue(&issue).is_err(),
        "an expired Issue is refused"
    );
    assert_eq!(snapshot(&payer), before, "state unchanged");
    assert_eq!(payer.balance().unwrap(), Amount::ZERO);
}

/// Attack 3a: ATTEST, the blind signing oracle, is gone; the SE signs a
/// back-office request only as BUILD REQUEST from its own state, and an
/// online payment (which debits the account) only after VERIFY.
#[test]
fn no_blind_signing_and_online_payment_needs_the_pin() {
    let mut scheme = Scheme::with_tiers(Suite::Ed25519, cvm_tiers());
    let mut c = card(&mut scheme, b"victim", 0);
    let before = snapshot(&c);
    // The old ATTEST instruction answers "instruction not supported".
    let r = c
        .link
        .command(0xEE, 0, 0, b"PayOnline everything to mallory");
    assert!(matches!(r, Err(WalletError::Status(0x6D00))), "{r:?}");
    let pay_online = RequestParams::PayOnline {
        to_account: "mallory".into(),
        amount: 10_000,
    };
    refused(
        c.link.build_request(&pay_online),
        SeError::CardholderVerificationRequired,
    );
    assert_eq!(snapshot(&c), before, "nothing signed, nothing changed");
    // A wrong PIN does not authorise it either (and costs a try).
    refused(
        c.link.verify_pin(b"0000"),
        SeError::WrongPin { tries_left: 2 },
    );
    refused(
        c.link.build_request(&pay_online),
        SeError::CardholderVerificationRequired,
    );
    // The cardholder verifies: one request is signed, under its own tag.
    c.link.verify_pin(PIN).unwrap();
    let req = c.link.build_request(&pay_online).unwrap();
    let att = c.link.attestation_key().unwrap();
    let msg = DeviceRequest::signed_message(&req.se_id, req.counter, &req.op);
    tally_core::crypto::verify(&att, &msg.0, &req.signature).expect("signed by the SE");
    // The same signature does not verify as any other kind of request.
    let as_balance = DeviceRequest::signed_message(&req.se_id, req.counter, &DeviceOp::Balance);
    assert!(tally_core::crypto::verify(&att, &as_balance.0, &req.signature).is_err());
    // The verification was consumed by that one request.
    refused(
        c.link.build_request(&pay_online),
        SeError::CardholderVerificationRequired,
    );
    // Counters come from the SE and only go up.
    let next = c.link.build_request(&RequestParams::Balance).unwrap();
    assert_eq!(next.counter, req.counter + 1);
}

/// Attack 3b: a terminal feeds the card a redemption order that the
/// attacker's own device obtained (bound to the attacker's SE): paying it
/// would have unloaded the card to the attacker's account.
#[test]
fn redemption_order_of_another_se_is_refused() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut victim = card(&mut scheme, b"victim", 1_000);
    let attacker = TestDevice::new(&scheme, b"attacker", device_class::PHONE, 4096).unwrap();
    let request = Request::sign(
        &scheme.dcp,
        Amount(1_000),
        [7; 16],
        scheme.certify(scheme.dcp.public(), device_class::DCP, 0),
        scheme.epoch,
    );
    let before = snapshot(&victim);
    let for_attacker = RedemptionOrder::sign(&scheme.dcp, attacker.se_id, true, request.clone());
    refused(victim.link.redeem(&for_attacker), SeError::NotForThisSe);
    // An order for the victim not signed by the DCP's redemption key.
    let rogue = tally_core::testkit::key(Suite::Ed25519, b"rogue");
    let forged = RedemptionOrder::sign(&rogue, victim.se_id, true, request.clone());
    refused(victim.link.redeem(&forged), SeError::NotRedemption);
    // The old format, a bare Request, does not even decode.
    let r = victim.link.command(ins::REDEEM, 0, 0, &request.to_cbor());
    assert!(r.is_err(), "a bare request is not an order");
    assert_eq!(snapshot(&victim), before, "state unchanged");
    // The genuine order for this SE is paid.
    let order = RedemptionOrder::sign(&scheme.dcp, victim.se_id, true, request);
    victim.link.redeem(&order).unwrap();
    assert_eq!(victim.balance().unwrap(), Amount::ZERO);
}

/// Attack 4: keys to certify are generated and signed in one commit; a
/// Load names one of the SE's own certified keys; a terminal cannot put a
/// software key into a request.
#[test]
fn requests_name_only_the_se_s_own_keys() {
    let scheme = Scheme::new(Suite::Ed25519);
    let mut c = TestDevice::new(&scheme, b"card", device_class::CARD, 255).unwrap();
    let certify = c
        .link
        .build_request(&RequestParams::Certify { n: 3 })
        .unwrap();
    let DeviceOp::Certify { keys } = &certify.op else {
        panic!("a certify request: {:?}", certify.op)
    };
    assert_eq!(keys.len(), 3);
    for k in keys {
        assert!(c.applet().state().key(k).is_some(), "key held by the SE");
        c.link
            .install_certificate(&scheme.certify(*k, device_class::CARD, 0))
            .unwrap();
    }
    let load = c
        .link
        .build_request(&RequestParams::Load { amount: 300 })
        .unwrap();
    let DeviceOp::Load { key, amount } = load.op else {
        panic!("a load request")
    };
    assert_eq!(amount, 300);
    assert!(c.applet().state().key(&key).is_some(), "loads to an SE key");
    // The command data carries no key at all: a Load with trailing bytes
    // (a key smuggled in) is malformed.
    let mut data = RequestParams::Load { amount: 300 }.encode();
    data.extend_from_slice(&scheme.dcp.public().to_cbor());
    let before = snapshot(&c);
    let r = c
        .link
        .command(ins::BUILD_REQUEST, RequestKind::Load as u8, 0, &data);
    assert!(
        matches!(r, Err(WalletError::Refused { code: 101 })),
        "{r:?}"
    );
    // A load the SE could not hold is not even signed.
    refused(
        c.link.build_request(&RequestParams::Load {
            amount: default_tier(device_class::CARD, 0).holding_max.0 + 1,
        }),
        SeError::LimitExceeded(tally_se::Limit::Holding),
    );
    assert_eq!(snapshot(&c), before);
}

/// Attack 5: the request reports are built and signed by the SE; a
/// request whose package was received is reported received (with its
/// transfer), never closed, and an edited report does not verify.
#[test]
fn closures_exist_only_for_requests_closed_unpaid() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = card(&mut scheme, b"payer", 1_000);
    let mut payee = TestDevice::new(&scheme, b"payee", device_class::PHONE, 4096).unwrap();
    // One request paid and received, one left open.
    let paid = payee.link.create_request(Amount(40)).unwrap();
    let pkg = payer.link.pay(&paid).unwrap();
    payee.link.receive(&pkg).unwrap();
    let open = payee.link.create_request(Amount(60)).unwrap();
    let reports = payee.link.report_requests().unwrap();
    assert_eq!(reports.len(), 2);
    assert!(
        reports.iter().all(|r| r.verify()),
        "signed by the requests' keys"
    );
    let received = reports.iter().find(|r| r.nonce == paid.nonce).unwrap();
    let tid = tally_core::Package::from_cbor(&pkg).unwrap().transfer.id();
    assert_eq!(
        received.received,
        Some(tid),
        "reported received, not closed"
    );
    let closed: Vec<RequestReport> = reports
        .iter()
        .filter(|r| r.received.is_none())
        .cloned()
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].nonce, open.nonce);
    // Reported again, identically, until a grant acknowledges them.
    assert_eq!(payee.link.report_requests().unwrap(), reports);
    // The wallet forging a closure of the received request: the request's
    // key never signed it.
    let forged = RequestReport {
        nonce: paid.nonce,
        amount: 40,
        key: paid.payee.key,
        received: None,
        signature: closed[0].signature,
    };
    assert!(!forged.verify());
    let unreceived = RequestReport {
        received: None,
        ..received.clone()
    };
    assert!(!unreceived.verify());
    let inflated = RequestReport {
        amount: 6_000,
        ..closed[0].clone()
    };
    assert!(!inflated.verify());
    // Closed means closed: the late package is refused.
    let late = payer.link.pay(&open).unwrap();
    let before = snapshot(&payee);
    refused(payee.link.receive(&late), SeError::UnknownRequest);
    assert_eq!(snapshot(&payee), before);
}

/// Cardholder verification of offline payments: above the single no-PIN
/// limit, or past the cumulative one, PAY needs VERIFY; three wrong PINs
/// block the SE, and the try counter survives a reboot.
#[test]
fn offline_payments_above_the_no_pin_limits_need_the_pin() {
    let mut scheme = Scheme::with_tiers(Suite::Ed25519, cvm_tiers());
    let mut c = card(&mut scheme, b"card", 2_000);
    let mut shop = TestDevice::new(&scheme, b"shop", device_class::PHONE, 4096).unwrap();
    // 150 > 100: a PIN is needed; nothing moves without it.
    let before = snapshot(&c);
    let req = shop.link.create_request(Amount(150)).unwrap();
    refused(c.link.pay(&req), SeError::CardholderVerificationRequired);
    assert_eq!(snapshot(&c), before);
    c.link.verify_pin(PIN).unwrap();
    let pkg = c.link.pay(&req).unwrap();
    c.link.ack(&shop.link.receive(&pkg).unwrap()).unwrap();
    // Small payments go through until 250 have been paid without it.
    for _ in 0..2 {
        pay_offline(&mut c.link, &mut shop.link, Amount(100)).unwrap();
    }
    let req = shop.link.create_request(Amount(60)).unwrap();
    let before = snapshot(&c);
    refused(c.link.pay(&req), SeError::CardholderVerificationRequired);
    assert_eq!(snapshot(&c), before);
    // Three wrong PINs block the card, for good.
    for left in (0..PIN_TRIES_MAX).rev() {
        refused(
            c.link.verify_pin(b"9999"),
            SeError::WrongPin { tries_left: left },
        );
    }
    refused(c.link.verify_pin(PIN), SeError::PinBlocked);
    refused(c.link.pay(&req), SeError::PinBlocked);
    refused(c.link.change_pin(Some(PIN), b"1357"), SeError::PinBlocked);
}

/// VERIFY commits the decremented try counter before it compares: pulling
/// the card after a wrong guess (a reboot) does not give the try back.
#[test]
fn a_wrong_pin_costs_a_try_across_a_reboot() {
    let mut scheme = Scheme::with_tiers(Suite::Ed25519, cvm_tiers());
    let mut c = card(&mut scheme, b"card", 0);
    refused(
        c.link.verify_pin(b"1111"),
        SeError::WrongPin { tries_left: 2 },
    );
    let applet = std::mem::replace(
        &mut c.link.card.applet,
        tally_se::Applet::boot(
            tally_se::storage::MemStorage::new(1024),
            tally_se::Sealing::None,
            tally_core::testkit::TestEntropy::new(b"placeholder"),
        )
        .unwrap(),
    );
    let storage = applet.into_storage();
    let rebooted = tally_se::Applet::boot(
        storage,
        tally_se::Sealing::None,
        tally_core::testkit::TestEntropy::new(b"after"),
    )
    .unwrap();
    assert_eq!(rebooted.pin_tries_left(), Some(2));
    assert!(!rebooted.cardholder_verified(), "verification is RAM only");
    // Over the APDU interface, an empty VERIFY reports the tries: 63C2.
    c.link.card.applet = rebooted;
    let r = c.link.command_in_class(CLA_ISO, ins::VERIFY, 0, 0, &[]);
    assert!(
        matches!(r, Err(WalletError::Refused { code }) if code == SeError::WrongPin { tries_left: 2 }.code()),
        "{r:?}"
    );
}

/// Item 7 of issue 9: a sync used to empty the whole payment log, so a
/// redemption the SE had paid but the DCP never acknowledged (its answer
/// lost) could no longer be resent or redeemed: its value was stranded.
#[test]
fn an_unacknowledged_redemption_survives_a_sync() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut c = card(&mut scheme, b"card", 1_000);
    let request = Request::sign(
        &scheme.dcp,
        Amount(1_000),
        [9; 16],
        scheme.certify(scheme.dcp.public(), device_class::DCP, 0),
        scheme.epoch,
    );
    let order = RedemptionOrder::sign(&scheme.dcp, c.se_id, true, request);
    let package = c.link.redeem(&order).unwrap();
    // The answer is lost; the device syncs (a new epoch).
    c.link.sync(&scheme.sync_grant(c.se_id, 2)).unwrap();
    let log = c.link.outgoing().unwrap();
    assert_eq!(log.len(), 1, "the redemption is still in the log");
    assert!(log[0].redemption && !log[0].acked);
    assert_eq!(c.link.resend(&log[0].transfer_id).unwrap(), package);
    // And the SE still builds the Redeem request for it.
    let req = c
        .link
        .build_request(&RequestParams::Redeem {
            nonce: [9; 16],
            sealed_digest: tally_core::Hash32([0; 32]),
        })
        .unwrap();
    assert!(
        matches!(req.op, DeviceOp::Redeem { transfer_id, .. } if transfer_id == log[0].transfer_id)
    );
}

/// Found by the adversarial-terminal fuzzer: a sync empties the payment
/// log, and PAY recognised an already-paid request only there, so a
/// terminal replaying an old request after a sync got a second package,
/// which the payee cannot accept (its request is closed): the value was
/// stranded. The SE now remembers the requests it paid.
#[test]
fn a_request_replayed_after_a_sync_is_not_paid_twice() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = card(&mut scheme, b"payer", 1_000);
    let mut payee = TestDevice::new(&scheme, b"payee", device_class::PHONE, 4096).unwrap();
    let req = payee.link.create_request(Amount(80)).unwrap();
    let pkg = payer.link.pay(&req).unwrap();
    // Before the sync, the same request gets the same package (a retry).
    assert_eq!(payer.link.pay(&req).unwrap(), pkg);
    payer.link.ack(&payee.link.receive(&pkg).unwrap()).unwrap();
    payer.link.sync(&scheme.sync_grant(payer.se_id, 2)).unwrap();
    let before = snapshot(&payer);
    refused(payer.link.pay(&req), SeError::AlreadyPaid);
    assert_eq!(snapshot(&payer), before);
    assert_eq!(payer.balance().unwrap(), Amount(920));
}

/// Decision 0008's loss path: the payee's `Request` was unsigned, so a
/// terminal could raise its amount or invent a nonce for a real payee key;
/// the payer's SE paid, the payee's SE refused the package (unknown nonce
/// or wrong amount) and the payer's value was stranded. The request is now
/// signed by the payee's certified key and the payer's SE checks it (in
/// CHECK REQUEST, and in PAY for a request it has not checked).
#[test]
fn an_altered_or_invented_request_is_not_paid() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = card(&mut scheme, b"payer", 1_000);
    let mut payee = TestDevice::new(&scheme, b"payee", device_class::PHONE, 4096).unwrap();
    let genuine = payee.link.create_request(Amount(40)).unwrap();
    assert!(genuine.verify().is_ok());
    let before = snapshot(&payer);

    // The amount raised by the terminal, signature kept.
    let raised = Request {
        amount: Amount(90),
        ..genuine.clone()
    };
    refused(
        payer.link.check_request(&raised),
        SeError::BadRequestSignature,
    );
    refused(payer.link.pay(&raised), SeError::BadRequestSignature);
    // A nonce the payee's SE never issued, for the payee's real key.
    let invented = Request {
        nonce: [0xAB; 16],
        ..genuine.clone()
    };
    refused(payer.link.pay(&invented), SeError::BadRequestSignature);
    // Re-signed by a key that is not the certified payee key.
    let rogue = tally_core::testkit::key(Suite::Ed25519, b"rogue");
    let resigned = Request::sign(
        &rogue,
        Amount(90),
        genuine.nonce,
        genuine.payee.clone(),
        genuine.payee_epoch,
    );
    refused(payer.link.pay(&resigned), SeError::BadRequestSignature);
    // An earlier epoch claimed for the payee (to hide elapsed time).
    let older = Request {
        payee_epoch: genuine.payee_epoch.saturating_sub(1),
        ..genuine.clone()
    };
    if older != genuine {
        refused(payer.link.pay(&older), SeError::BadRequestSignature);
    }
    assert_eq!(snapshot(&payer), before, "nothing paid, state unchanged");

    // A check of the genuine request, then an altered PAY: the cached
    // check is for other bytes, so PAY checks again and refuses.
    payer.link.check_request(&genuine).unwrap();
    refused(payer.link.pay(&raised), SeError::BadRequestSignature);
    assert_eq!(snapshot(&payer), before);

    // The genuine request is paid and received.
    let package = payer.link.pay(&genuine).unwrap();
    payee.link.receive(&package).unwrap();
    assert_eq!(payer.balance().unwrap(), Amount(960));
    assert_eq!(payee.balance().unwrap(), Amount(40));
}
