//! Every policy limit the SE enforces, tested at its boundary over the APDU
//! transport: at the limit the operation passes, one unit over it is
//! refused with the exact `LimitExceeded` code, and the refused operation
//! leaves the SE's state exactly as it was. Also the refusals of stale or
//! misaddressed trust objects (policy, sync grant, certificate).

use tally_core::policy::device_class::{CARD, IOT, PHONE};
use tally_core::testkit::Scheme;
use tally_core::{Amount, Suite, TierLimits};
use tally_se::state::State;
use tally_se::{Limit, SeError};
use tally_wallet::testkit::{TestDevice, certify_fresh_keys, load};
use tally_wallet::{SeLink, WalletError, pay_offline};

/// A device class and the change to make to its tier.
type TierEdit<'a> = (u8, &'a dyn Fn(&mut TierLimits));

/// The four default tiers with `edit` applied to the tier of `class`.
fn tiers_with(edits: &[TierEdit<'_>]) -> Vec<TierLimits> {
    let mut tiers = Scheme::default_tiers();
    for (class, edit) in edits {
        let t = tiers
            .iter_mut()
            .find(|t| t.device_class == *class)
            .expect("default tiers cover every class");
        edit(t);
    }
    tiers
}

fn scheme_with(edits: &[TierEdit<'_>]) -> Scheme {
    Scheme::with_tiers(Suite::Ed25519, tiers_with(edits))
}

fn device(scheme: &Scheme, label: &str, class: u8) -> TestDevice {
    TestDevice::new(scheme, label.as_bytes(), class, 4096).expect("provision")
}

fn snapshot(d: &TestDevice) -> State {
    d.applet().state().clone()
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, WalletError>, e: SeError) {
    match r {
        Err(w) => assert!(w.is(&e), "expected {e:?} (code {}), got {w:?}", e.code()),
        Ok(v) => panic!("expected refusal {e:?}, got Ok({v:?})"),
    }
}

fn limit(l: Limit) -> SeError {
    SeError::LimitExceeded(l)
}

/// Next sync grant for a device (sequence 1 was used at provisioning).
fn sync(d: &mut TestDevice, scheme: &Scheme, sequence: u64) {
    let g = scheme.sync_grant(d.se_id, sequence);
    d.link.sync(&g).expect("sync");
}

// ---- payment_max ---------------------------------------------------------

#[test]
fn payment_max_payer_refuses_one_over_its_own_limit() {
    // The payer (phone) may pay at most 100; the payee (card) may receive
    // much more, so only the payer's check stands between them.
    let mut scheme = scheme_with(&[(PHONE, &|t| t.payment_max = Amount(100))]);
    let mut payer = device(&scheme, "payer", PHONE);
    let mut payee = device(&scheme, "payee", CARD);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();

    pay_offline(&mut payer.link, &mut payee.link, Amount(100)).expect("at the limit");
    assert_eq!(payer.balance().unwrap(), Amount(900));

    let req = payee
        .link
        .create_request(Amount(101))
        .expect("payee allows 101");
    let before = snapshot(&payer);
    assert_refused(payer.link.pay(&req), limit(Limit::PaymentAmount));
    assert_eq!(snapshot(&payer), before, "refused PAY changed the payer");

    pay_offline(&mut payer.link, &mut payee.link, Amount(100)).expect("still pays 100");
    assert_eq!(payee.balance().unwrap(), Amount(200));
}

#[test]
fn payment_max_payee_refuses_to_request_one_over() {
    let scheme = scheme_with(&[(PHONE, &|t| t.payment_max = Amount(100))]);
    let mut payee = device(&scheme, "payee", PHONE);
    let before = snapshot(&payee);
    assert_refused(
        payee.link.create_request(Amount(101)),
        limit(Limit::PaymentAmount),
    );
    assert_refused(
        payee.link.create_request(Amount(0)),
        limit(Limit::PaymentAmount),
    );
    assert_eq!(snapshot(&payee), before);
    let r = payee
        .link
        .create_request(Amount(100))
        .expect("at the limit");
    assert_eq!(r.amount, Amount(100));
    assert_eq!(payee.link.status().unwrap().open_requests, 1);
}

#[test]
fn payment_max_payee_refuses_package_after_policy_lowered_it() {
    // A request made under a generous policy, then the payee's policy is
    // lowered: the package is refused at RECEIVE too.
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = device(&scheme, "payer", CARD);
    let mut payee = device(&scheme, "payee", PHONE);
    load(&mut payer.link, &mut scheme, CARD, 1_000).unwrap();
    let at = payee.link.create_request(Amount(100)).unwrap();
    let over = payee.link.create_request(Amount(101)).unwrap();
    let pkg_at = payer.link.pay(&at).unwrap();
    let pkg_over = payer.link.pay(&over).unwrap();

    scheme.set_tiers(tiers_with(&[(PHONE, &|t| t.payment_max = Amount(100))]));
    payee
        .link
        .install_policy(&scheme.policy)
        .expect("newer serial");
    let before = snapshot(&payee);
    assert_refused(payee.link.receive(&pkg_over), limit(Limit::PaymentAmount));
    assert_eq!(snapshot(&payee), before);
    payee.link.receive(&pkg_at).expect("at the limit");
    assert_eq!(payee.balance().unwrap(), Amount(100));
}

// ---- holding_max ---------------------------------------------------------

#[test]
fn holding_max_on_receive() {
    let mut scheme = scheme_with(&[(PHONE, &|t| t.holding_max = Amount(500))]);
    let mut payer = device(&scheme, "payer", CARD);
    let mut payee = device(&scheme, "payee", PHONE);
    load(&mut payer.link, &mut scheme, CARD, 2_000).unwrap();

    // Each request alone fits the empty SE, so all three are granted.
    let a = payee.link.create_request(Amount(300)).unwrap();
    let b = payee.link.create_request(Amount(200)).unwrap();
    let c = payee.link.create_request(Amount(1)).unwrap();
    let pa = payer.link.pay(&a).unwrap();
    let pb = payer.link.pay(&b).unwrap();
    let pc = payer.link.pay(&c).unwrap();
    payee.link.receive(&pa).unwrap();
    payee.link.receive(&pb).expect("exactly at holding_max");
    assert_eq!(payee.balance().unwrap(), Amount(500));

    let before = snapshot(&payee);
    assert_refused(payee.link.receive(&pc), limit(Limit::Holding));
    assert_refused(payee.link.create_request(Amount(1)), limit(Limit::Holding));
    assert_eq!(snapshot(&payee), before);
    assert_eq!(payee.balance().unwrap(), Amount(500));
}

#[test]
fn holding_max_on_load() {
    let mut scheme = scheme_with(&[(PHONE, &|t| t.holding_max = Amount(500))]);
    let mut se = device(&scheme, "se", PHONE);

    // One over on an empty SE.
    let k = certify_fresh_keys(&mut se.link, &scheme, PHONE, 1).unwrap();
    let over = scheme.issue(k[0], 501);
    let before = snapshot(&se);
    assert_refused(se.link.import_issue(&over), limit(Limit::Holding));
    assert_eq!(snapshot(&se), before);

    // Exactly at the limit, in two loads.
    assert_eq!(
        load(&mut se.link, &mut scheme, PHONE, 200).unwrap(),
        Amount(200)
    );
    let k = certify_fresh_keys(&mut se.link, &scheme, PHONE, 1).unwrap();
    let at = scheme.issue(k[0], 300);
    let one_more = scheme.issue(k[0], 1);
    se.link.import_issue(&at).expect("at holding_max");
    assert_eq!(se.balance().unwrap(), Amount(500));
    let before = snapshot(&se);
    assert_refused(se.link.import_issue(&one_more), limit(Limit::Holding));
    assert_eq!(snapshot(&se), before);
}

// ---- receiving_max -------------------------------------------------------

#[test]
fn receiving_max_since_last_sync_and_reset_by_sync() {
    let mut scheme = scheme_with(&[(PHONE, &|t| t.receiving_max = Amount(300))]);
    let mut payer = device(&scheme, "payer", CARD);
    let mut payee = device(&scheme, "payee", PHONE);
    load(&mut payer.link, &mut scheme, CARD, 2_000).unwrap();

    let a = payee.link.create_request(Amount(200)).unwrap();
    let b = payee.link.create_request(Amount(100)).unwrap();
    let c = payee.link.create_request(Amount(1)).unwrap();
    let (pa, pb, pc) = (
        payer.link.pay(&a).unwrap(),
        payer.link.pay(&b).unwrap(),
        payer.link.pay(&c).unwrap(),
    );
    payee.link.receive(&pa).unwrap();
    payee.link.receive(&pb).expect("exactly at receiving_max");
    assert_eq!(
        payee.link.status().unwrap().received_since_sync,
        Amount(300)
    );

    let before = snapshot(&payee);
    assert_refused(payee.link.receive(&pc), limit(Limit::Receiving));
    assert_refused(
        payee.link.create_request(Amount(1)),
        limit(Limit::Receiving),
    );
    assert_eq!(snapshot(&payee), before);

    // A sync resets the counter: the same package now goes through.
    sync(&mut payee, &scheme, 2);
    assert_eq!(payee.link.status().unwrap().received_since_sync, Amount(0));
    payee.link.receive(&pc).expect("after sync");
    assert_eq!(payee.balance().unwrap(), Amount(301));
    payee
        .link
        .create_request(Amount(299))
        .expect("299 more fit the fresh allowance");
    assert_refused(
        payee.link.create_request(Amount(300)),
        limit(Limit::Receiving),
    );
}

// ---- offline_spend_max / offline_payments_max ------------------------------

#[test]
fn offline_spend_max_since_last_sync_and_reset_by_sync() {
    let mut scheme = scheme_with(&[(PHONE, &|t| t.offline_spend_max = Amount(300))]);
    let mut payer = device(&scheme, "payer", PHONE);
    let mut payee = device(&scheme, "payee", CARD);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();

    pay_offline(&mut payer.link, &mut payee.link, Amount(200)).unwrap();
    pay_offline(&mut payer.link, &mut payee.link, Amount(100)).expect("at the limit");
    assert_eq!(payer.link.status().unwrap().spent_since_sync, Amount(300));

    let req = payee.link.create_request(Amount(1)).unwrap();
    let before = snapshot(&payer);
    assert_refused(payer.link.pay(&req), limit(Limit::OfflineSpend));
    assert_eq!(snapshot(&payer), before);

    sync(&mut payer, &scheme, 2);
    let st = payer.link.status().unwrap();
    assert_eq!(st.spent_since_sync, Amount(0));
    assert_eq!(st.payments_since_sync, 0);
    let pkg = payer.link.pay(&req).expect("after sync");
    payee.link.receive(&pkg).unwrap();
    assert_eq!(payer.balance().unwrap(), Amount(699));
}

#[test]
fn offline_payments_max_since_last_sync_and_reset_by_sync() {
    let mut scheme = scheme_with(&[(PHONE, &|t| t.offline_payments_max = 3)]);
    let mut payer = device(&scheme, "payer", PHONE);
    let mut payee = device(&scheme, "payee", CARD);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();

    for _ in 0..3 {
        pay_offline(&mut payer.link, &mut payee.link, Amount(1)).unwrap();
    }
    assert_eq!(payer.link.status().unwrap().payments_since_sync, 3);
    let req = payee.link.create_request(Amount(1)).unwrap();
    let before = snapshot(&payer);
    assert_refused(payer.link.pay(&req), limit(Limit::OfflinePayments));
    assert_eq!(snapshot(&payer), before);

    sync(&mut payer, &scheme, 2);
    let pkg = payer.link.pay(&req).expect("after sync");
    payee.link.receive(&pkg).unwrap();
    assert_eq!(payee.balance().unwrap(), Amount(4));
    assert_eq!(payer.link.status().unwrap().payments_since_sync, 1);
}

// ---- history_records_max -------------------------------------------------

#[test]
fn history_budget_chain_at_budget_passes_one_more_hop_needs_renewal() {
    let budget3 = |t: &mut TierLimits| t.history_records_max = 3;
    let mut scheme = scheme_with(&[(PHONE, &budget3), (CARD, &budget3)]);
    let mut devs: Vec<TestDevice> = (0..5)
        .map(|i| device(&scheme, &format!("hop{i}"), PHONE))
        .collect();
    load(&mut devs[0].link, &mut scheme, PHONE, 100).unwrap();
    // Full-value hops: each token's ancestry grows by exactly one record.
    for i in 0..3 {
        let (a, b) = devs.split_at_mut(i + 1);
        pay_offline(&mut a[i].link, &mut b[0].link, Amount(100))
            .unwrap_or_else(|e| panic!("hop {i} with ancestry {} failed: {e}", i + 1));
    }
    let toks = devs[3].applet().tokens();
    assert_eq!(toks.len(), 1);
    assert_eq!(toks[0].lineage_len, 4, "issue + three transfers");

    let req = devs[4].link.create_request(Amount(100)).unwrap();
    let before = snapshot(&devs[3]);
    assert_refused(devs[3].link.pay(&req), SeError::NeedsRenewal);
    assert_eq!(snapshot(&devs[3]), before);
    assert_eq!(devs[3].balance().unwrap(), Amount(100));
}

#[test]
fn history_budget_payer_uses_the_smaller_budget_of_the_payee() {
    // Phones may carry 5 records of history, cards only 2: a phone paying
    // a card must stay within the card's budget.
    let mut scheme = scheme_with(&[
        (PHONE, &|t| t.history_records_max = 5),
        (CARD, &|t| t.history_records_max = 2),
    ]);
    let mut p0 = device(&scheme, "p0", PHONE);
    let mut p1 = device(&scheme, "p1", PHONE);
    let mut p2 = device(&scheme, "p2", PHONE);
    let mut card = device(&scheme, "card", CARD);
    load(&mut p0.link, &mut scheme, PHONE, 1_000).unwrap();
    pay_offline(&mut p0.link, &mut p1.link, Amount(600)).unwrap();

    // p1's token: issue + one transfer = 2 records, the card's budget.
    pay_offline(&mut p1.link, &mut card.link, Amount(100)).expect("at the card's budget");
    // p1's change now carries 3 records.
    let toks = p1.applet().tokens();
    assert_eq!(toks.len(), 1);
    assert_eq!(toks[0].lineage_len, 3);

    let req = card.link.create_request(Amount(100)).unwrap();
    let before = snapshot(&p1);
    assert_refused(p1.link.pay(&req), SeError::NeedsRenewal);
    assert_eq!(snapshot(&p1), before);
    assert_eq!(card.balance().unwrap(), Amount(100));

    // The same token is fine for a phone payee (its budget is 5).
    pay_offline(&mut p1.link, &mut p2.link, Amount(100)).expect("within the phone's budget");
    assert_eq!(p2.balance().unwrap(), Amount(100));
}

// ---- offline_epochs_max --------------------------------------------------

#[test]
fn offline_epochs_max_learned_from_the_payees_request() {
    let mut scheme = scheme_with(&[(PHONE, &|t| t.offline_epochs_max = 2)]);
    let mut payer = device(&scheme, "payer", PHONE);
    let mut at_limit = device(&scheme, "payee-epoch3", CARD);
    let mut over = device(&scheme, "payee-epoch4", CARD);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();

    // The first payee synced two epochs later than the payer.
    scheme.epoch += 2;
    sync(&mut at_limit, &scheme, 2);
    let req = at_limit.link.create_request(Amount(10)).unwrap();
    assert_eq!(req.payee_epoch, 3);
    let pkg = payer
        .link
        .pay(&req)
        .expect("two epochs behind: at the limit");
    at_limit.link.receive(&pkg).unwrap();
    assert_eq!(payer.link.status().unwrap().epoch_seen, 3);

    // The second payee synced three epochs later.
    scheme.epoch += 1;
    sync(&mut over, &scheme, 2);
    let req = over.link.create_request(Amount(10)).unwrap();
    assert_eq!(req.payee_epoch, 4);
    let before = snapshot(&payer);
    assert_refused(payer.link.pay(&req), limit(Limit::OfflineEpochs));
    assert_eq!(snapshot(&payer), before);

    // Syncing the payer to the current epoch lets it pay again.
    sync(&mut payer, &scheme, 2);
    let pkg = payer.link.pay(&req).expect("after sync");
    over.link.receive(&pkg).unwrap();
    assert_eq!(payer.balance().unwrap(), Amount(980));
}

#[test]
fn offline_epochs_payee_epoch_is_capped_by_its_certificate_expiry() {
    // A payee (its own key, certified) can claim any epoch in the request
    // it signs. The payer believes it only as far as the payee's
    // certificate could be valid (issued at epoch 1, expiring at 11).
    let mut scheme = Scheme::new(Suite::Ed25519); // offline_epochs_max = 30
    let mut payer = device(&scheme, "payer", PHONE);
    load(&mut payer.link, &mut scheme, PHONE, 100).unwrap();
    let payee = tally_core::testkit::key(Suite::Ed25519, b"payee claiming the future");
    let req = tally_core::Request::sign(
        &payee,
        Amount(10),
        [3; 16],
        scheme.certify(payee.public(), PHONE, 0),
        u32::MAX,
    );
    payer.link.pay(&req).expect("10 epochs behind is within 30");
    assert_eq!(
        payer.link.status().unwrap().epoch_seen,
        req.payee.expiry_epoch
    );
}

// ---- trust objects -------------------------------------------------------

#[test]
fn stale_policy_same_or_older_serial_refused() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut se = device(&scheme, "se", IOT);
    let before = snapshot(&se);
    assert_refused(se.link.install_policy(&scheme.policy), SeError::Stale);
    assert_eq!(snapshot(&se), before);

    scheme.set_tiers(Scheme::default_tiers());
    let middle = scheme.policy.clone();
    scheme.set_tiers(Scheme::default_tiers());
    se.link
        .install_policy(&scheme.policy)
        .expect("serial 3 > 1");
    let before = snapshot(&se);
    assert_refused(se.link.install_policy(&middle), SeError::Stale);
    assert_refused(se.link.install_policy(&scheme.policy), SeError::Stale);
    assert_eq!(snapshot(&se), before);
    assert_eq!(se.applet().state().policy.as_ref().unwrap().serial, 3);
}

#[test]
fn sync_grant_for_another_se_refused() {
    let scheme = Scheme::new(Suite::Ed25519);
    let mut a = device(&scheme, "a", PHONE);
    let b = device(&scheme, "b", PHONE);
    let before = snapshot(&a);
    assert_refused(
        a.link.sync(&scheme.sync_grant(b.se_id, 2)),
        SeError::NotForThisSe,
    );
    assert_eq!(snapshot(&a), before);
}

#[test]
fn replayed_or_older_sync_grant_refused() {
    let mut scheme = scheme_with(&[(PHONE, &|t| t.offline_payments_max = 1)]);
    let mut payer = device(&scheme, "payer", PHONE);
    let mut payee = device(&scheme, "payee", PHONE);
    load(&mut payer.link, &mut scheme, PHONE, 100).unwrap();
    let grant2 = scheme.sync_grant(payer.se_id, 2);
    payer.link.sync(&grant2).unwrap();
    pay_offline(&mut payer.link, &mut payee.link, Amount(1)).unwrap();

    // Replaying the grant would reset the offline counters: refused.
    let before = snapshot(&payer);
    assert_refused(payer.link.sync(&grant2), SeError::Stale);
    assert_refused(
        payer.link.sync(&scheme.sync_grant(payer.se_id, 1)),
        SeError::Stale,
    );
    // A newer sequence that goes back in epoch is refused too.
    scheme.epoch += 1;
    payer.link.sync(&scheme.sync_grant(payer.se_id, 3)).unwrap();
    let after_epoch2 = snapshot(&payer);
    scheme.epoch -= 1;
    assert_refused(
        payer.link.sync(&scheme.sync_grant(payer.se_id, 4)),
        SeError::Stale,
    );
    assert_eq!(snapshot(&payer), after_epoch2);
    assert_ne!(before, after_epoch2);
}

#[test]
fn certificate_for_another_class_or_tier_refused() {
    let scheme = Scheme::new(Suite::Ed25519);
    let mut se = device(&scheme, "se", PHONE);
    let mut other = device(&scheme, "other", PHONE);
    let keys = se.link.generate_keys(1).unwrap();
    let before = snapshot(&se);
    assert_refused(
        se.link
            .install_certificate(&scheme.certify(keys[0], CARD, 0)),
        SeError::NotForThisSe,
    );
    assert_refused(
        se.link
            .install_certificate(&scheme.certify(keys[0], PHONE, 1)),
        SeError::NotForThisSe,
    );
    // A correct certificate for a key this SE does not hold.
    let foreign = other.link.generate_keys(1).unwrap();
    assert_refused(
        se.link
            .install_certificate(&scheme.certify(foreign[0], PHONE, 0)),
        SeError::NotForThisSe,
    );
    assert_eq!(snapshot(&se), before);
    se.link
        .install_certificate(&scheme.certify(keys[0], PHONE, 0))
        .expect("right class and tier");
}
