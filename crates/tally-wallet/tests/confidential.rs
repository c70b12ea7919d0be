//! Offline payments in confidential mode (SPEC §4.9), SE to SE over the
//! APDU transport: every device kind, split and merge, a five-device
//! chain; the payee SE refuses each confidential rule's breach with its
//! code and changes nothing; and what a payee SE stores reveals no amount
//! but its own.

use std::sync::atomic::{AtomicU32, Ordering};

use tally_core::codec::Cbor;
use tally_core::confidential::{
    Commitment, Opening, PayeeOpening, RangeBits, RangeGens, RangeProof, SealedOpening, value_base,
};
use tally_core::policy::device_class::{CARD, IOT, PHONE};
use tally_core::testkit::{Scheme, TestEntropy};
use tally_core::{Amount, Package, Record, Suite, VerifyError};
use tally_se::storage::MemStorage;
use tally_se::{Applet, SeError, Sealing};
use tally_wallet::testkit::{TEST_STORAGE_BYTES, TestDevice, load};
use tally_wallet::{PayeeSession, PayerSession, SeLink, WalletError, pay_offline};

fn apdu_size(class: u8) -> usize {
    if class == CARD { 255 } else { 4096 }
}

fn device(scheme: &Scheme, label: &str, class: u8) -> TestDevice {
    TestDevice::new(scheme, label.as_bytes(), class, apdu_size(class)).expect("provision")
}

fn scheme() -> Scheme {
    Scheme::confidential(Suite::Ed25519)
}

/// Sum of every device's balance: the money invariant across the run.
fn total(devs: &mut [&mut TestDevice]) -> u64 {
    devs.iter_mut().map(|d| d.balance().unwrap().0).sum()
}

/// [`pay_offline`], keeping the package that crossed (an acknowledged
/// payment leaves the payer's log, decision 0018).
fn pay_keeping_package(
    payer: &mut dyn SeLink,
    payee: &mut dyn SeLink,
    amount: Amount,
) -> Result<Vec<u8>, WalletError> {
    pay_keeping_package_with(payer, payee, amount, false)
}

/// [`pay_keeping_package`]; with `prove_here`, the payer's processor
/// proves where its SE delegates (decision 0032).
fn pay_keeping_package_with(
    payer: &mut dyn SeLink,
    payee: &mut dyn SeLink,
    amount: Amount,
    prove_here: bool,
) -> Result<Vec<u8>, WalletError> {
    let (payee_session, request) = PayeeSession::start(payee, amount)?;
    let payer_session = if prove_here {
        PayerSession::start_proving(payer, &request, &mut TestEntropy::new(&request))?
    } else {
        PayerSession::start(payer, &request)?
    };
    let package = payer_session.package().to_vec();
    let received = payee_session
        .on_package(payee, payer_session.package())
        .map_err(|(_, e)| e)?;
    payer_session
        .on_receipt(payer, &received.receipt)
        .map_err(|(_, e)| e)?;
    Ok(package)
}

fn pay_between(payer_class: u8, payee_class: u8) {
    let mut scheme = scheme();
    let mut payer = device(&scheme, "payer", payer_class);
    let mut payee = device(&scheme, "payee", payee_class);
    load(&mut payer.link, &mut scheme, payer_class, 1_000).expect("load");
    assert_eq!(payer.balance().unwrap(), Amount(1_000));
    let bytes =
        pay_keeping_package(&mut payer.link, &mut payee.link, Amount(250)).expect("payment");
    assert_eq!(payer.balance().unwrap(), Amount(750));
    assert_eq!(payee.balance().unwrap(), Amount(250));
    assert_eq!(payer.link.status().unwrap().unacked, 0);
    // The package is confidential: every output a commitment.
    let pkg = Package::from_cbor(&bytes).unwrap();
    assert!(pkg.transfer.confidential.is_some());
    assert!(pkg.ancestry.iter().all(Record::is_confidential));
    assert!(bytes.len() > 1_000);
    // The change and the payment are spendable again.
    pay_offline(&mut payee.link, &mut payer.link, Amount(100)).expect("pay back");
    assert_eq!(total(&mut [&mut payer, &mut payee]), 1_000);
}

#[test]
fn confidential_card_to_phone() {
    pay_between(CARD, PHONE);
}

#[test]
fn confidential_phone_to_card() {
    pay_between(PHONE, CARD);
}

#[test]
fn confidential_phone_to_phone() {
    pay_between(PHONE, PHONE);
}

#[test]
fn confidential_iot_to_iot() {
    pay_between(IOT, IOT);
}

#[test]
fn confidential_chain_across_five_devices() {
    let mut scheme = scheme();
    let classes = [CARD, PHONE, IOT, PHONE, CARD];
    let mut devs: Vec<TestDevice> = classes
        .iter()
        .enumerate()
        .map(|(i, &c)| device(&scheme, &format!("cdev{i}"), c))
        .collect();
    load(&mut devs[0].link, &mut scheme, CARD, 10_000).unwrap();
    let mut amount = 9_000u64;
    for i in 0..devs.len() - 1 {
        let (a, b) = devs.split_at_mut(i + 1);
        pay_offline(&mut a[i].link, &mut b[0].link, Amount(amount)).expect("hop");
        amount -= 1_000;
    }
    let balances: Vec<u64> = devs.iter_mut().map(|d| d.balance().unwrap().0).collect();
    assert_eq!(balances, vec![1_000, 1_000, 1_000, 1_000, 6_000]);
    assert_eq!(balances.iter().sum::<u64>(), 10_000);
}

#[test]
fn confidential_split_and_merge() {
    let mut scheme = scheme();
    let mut a = device(&scheme, "a", PHONE);
    let mut b = device(&scheme, "b", PHONE);
    load(&mut a.link, &mut scheme, PHONE, 300).unwrap();
    load(&mut a.link, &mut scheme, PHONE, 200).unwrap();
    load(&mut a.link, &mut scheme, PHONE, 100).unwrap();
    // 450 needs the 300 and the 200 merged (two input commitments in one
    // excess), with change 50.
    pay_offline(&mut a.link, &mut b.link, Amount(450)).unwrap();
    assert_eq!(a.balance().unwrap(), Amount(150));
    assert_eq!(b.balance().unwrap(), Amount(450));
    assert_eq!(a.applet().tokens().len(), 2);
    let mut c = device(&scheme, "c", PHONE);
    pay_offline(&mut b.link, &mut c.link, Amount(450)).unwrap();
    assert_eq!(c.balance().unwrap(), Amount(450));
    assert_eq!(b.balance().unwrap(), Amount(0));
    assert_eq!(total(&mut [&mut a, &mut b, &mut c]), 600);
}

/// Decision 0031: a card pays with a token worth exactly the amount —
/// chosen before a covering token of shorter ancestry — in a transfer of
/// one output with no range proof; the payee SE accepts it and opens its
/// amount; a range proof attached to such a transfer does not decode, and
/// the payee SE refuses it and changes nothing. Two tokens worth the
/// amount together are merged into one output, without a proof too.
#[test]
fn confidential_a_whole_token_is_paid_without_a_range_proof() {
    let mut scheme = scheme();
    let mut a = device(&scheme, "whole-a", PHONE);
    let mut card = device(&scheme, "whole-card", CARD);
    let mut c = device(&scheme, "whole-c", PHONE);
    let mut d = device(&scheme, "whole-d", PHONE);
    load(&mut a.link, &mut scheme, PHONE, 1_000).unwrap();
    pay_offline(&mut a.link, &mut card.link, Amount(250)).unwrap();
    load(&mut card.link, &mut scheme, CARD, 300).unwrap();
    // The card holds 250 (Issue and transfer in its ancestry) and 300 (an
    // Issue alone): it pays 250 with the 250, not from the 300.
    let bytes = pay_keeping_package(&mut card.link, &mut c.link, Amount(250)).unwrap();
    let pkg = Package::from_cbor(&bytes).unwrap();
    let t = pkg.transfer.confidential.as_ref().unwrap();
    assert_eq!(pkg.transfer.outputs.len(), 1);
    assert!(t.range_proof.is_none());
    // Its own transfer is small; the ancestry carries the earlier split,
    // range proof and all (the price of not proving on the card).
    assert!(pkg.transfer.to_cbor().len() < 400);
    assert_eq!(card.balance().unwrap(), Amount(300));
    assert_eq!(c.balance().unwrap(), Amount(250));

    // A proof on a one-output transfer: the payee SE refuses it (V1).
    let request = d.link.create_request(Amount(300)).unwrap();
    let good = card.link.pay(&request).unwrap();
    let mut p = Package::from_cbor(&good).unwrap();
    assert!(conf(&mut p).range_proof.is_none());
    let gens = RangeGens::new(RangeBits::Bits16, 4).unwrap();
    let mut rng = TestEntropy::new(b"whole-token-proof");
    let some = [Opening::random(Amount(300), &mut rng)];
    conf(&mut p).range_proof =
        Some(RangeProof::prove(&gens, &p.transfer.context(), &some, &mut rng).unwrap());
    assert_rejected(
        &mut d,
        &p.to_cbor(),
        VerifyError::Decode(tally_core::codec::CodecError::Malformed),
        "a range proof on one output",
    );
    // The honest package is still taken.
    d.link
        .receive(&good)
        .expect("the honest whole-token package");
    assert_eq!(d.balance().unwrap(), Amount(300));
    assert_eq!(total(&mut [&mut a, &mut card, &mut c, &mut d]), 1_300);

    // Two tokens worth the amount together: merged into one output, no
    // range proof either.
    let mut e = device(&scheme, "whole-e", PHONE);
    load(&mut e.link, &mut scheme, PHONE, 120).unwrap();
    load(&mut e.link, &mut scheme, PHONE, 500).unwrap();
    load(&mut e.link, &mut scheme, PHONE, 80).unwrap();
    let bytes = pay_keeping_package(&mut e.link, &mut c.link, Amount(200)).unwrap();
    let mut pkg = Package::from_cbor(&bytes).unwrap();
    assert_eq!(pkg.transfer.inputs.len(), 2);
    assert_eq!(pkg.transfer.outputs.len(), 1);
    assert!(conf(&mut pkg).range_proof.is_none());
    assert_eq!(e.balance().unwrap(), Amount(500));
    assert_eq!(c.balance().unwrap(), Amount(450));
}

#[test]
fn a_clear_issue_is_refused_by_a_confidential_se() {
    let scheme = scheme();
    let mut d = device(&scheme, "clear-issue", PHONE);
    let keys = tally_wallet::testkit::certify_fresh_keys(&mut d.link, &scheme, PHONE, 1).unwrap();
    let clear = tally_core::Issue::sign(
        &scheme.dcp,
        99,
        scheme.epoch + 20,
        vec![tally_core::Output {
            value: Amount(10),
            owner: keys[0],
        }],
    );
    let state = d.applet().state().clone();
    let r = d.link.import_issue(&clear);
    assert_eq!(
        r.err(),
        Some(WalletError::Refused {
            code: SeError::Verify(VerifyError::AmountForm).code()
        })
    );
    assert_eq!(d.applet().state(), &state);
}

// ------------------------------------------------ SE refusals, unchanged

/// Reboots the device's SE from its storage and returns the storage
/// bytes (how a test sees what the SE keeps).
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
    d.link.card.applet = Applet::boot(
        MemStorage::from_bytes(bytes.clone()),
        Sealing::None,
        TestEntropy::new(format!("conf-reboot-{n}").as_bytes()),
    )
    .expect("reboot");
    assert_eq!(d.applet().state(), &state, "the state survives a reboot");
    bytes
}

#[track_caller]
fn assert_rejected(payee: &mut TestDevice, package: &[u8], e: VerifyError, what: &str) {
    let code = SeError::Verify(e).code();
    let state = payee.applet().state().clone();
    let image = storage_image(payee);
    let r = payee.link.receive(package);
    assert_eq!(
        r.as_ref().err(),
        Some(&WalletError::Refused { code }),
        "{what}: expected {e:?} ({code}), got {r:?}"
    );
    assert_eq!(payee.applet().state(), &state, "{what}: state changed");
    assert_eq!(storage_image(payee), image, "{what}: storage changed");
}

struct Setup {
    payer: TestDevice,
    payee: TestDevice,
    package: Vec<u8>,
    /// A second payment of the same amount (another request, another
    /// payee device): its proofs are the "other transfer".
    other: Package,
}

fn setup() -> Setup {
    let mut scheme = scheme();
    let mut payer = device(&scheme, "payer", PHONE);
    let mut payee = device(&scheme, "payee", PHONE);
    let mut bystander = device(&scheme, "bystander", PHONE);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();
    let request = payee.link.create_request(Amount(100)).unwrap();
    let package = payer.link.pay(&request).unwrap();
    let req2 = bystander.link.create_request(Amount(100)).unwrap();
    let other = Package::from_cbor(&payer.link.pay(&req2).unwrap()).unwrap();
    Setup {
        payer,
        payee,
        package,
        other,
    }
}

fn conf(p: &mut Package) -> &mut tally_core::record::ConfidentialTransfer {
    p.transfer.confidential.as_mut().unwrap()
}

/// The payer's keys, read from its SE's state (a test can see it): a
/// payer that builds a malicious transfer itself.
fn resign(pkg: &mut Package, payer: &TestDevice) {
    tally_wallet::testkit::sign_as_payer(pkg, payer.applet());
}

#[test]
fn the_payee_se_refuses_each_confidential_breach_and_changes_nothing() {
    let mut s = setup();
    let good = Package::from_cbor(&s.package).unwrap();
    let payee_key = good.transfer.outputs[0].owner;
    let mut rng = TestEntropy::new(b"se-breaches");

    // Value created (C4): the change's commitment raised by one unit and
    // the transfer signed again by the payer's key. The payee's derived
    // opening still opens output 0 (C5 and C6 pass; it is not bound to the
    // context, only to its commitment and amount).
    let mut p = good.clone();
    assert!(matches!(
        conf(&mut p).payee_opening,
        Some(PayeeOpening::Derived(_))
    ));
    let raised = conf(&mut p).commitments[1].point() + value_base();
    conf(&mut p).commitments[1] = Commitment::from_bytes(&raised.compress().to_bytes()).unwrap();
    resign(&mut p, &s.payer);
    assert_rejected(
        &mut s.payee,
        &p.to_cbor(),
        VerifyError::CommitmentsUnbalanced,
        "value created",
    );

    // A range proof from another transfer.
    let mut p = good.clone();
    conf(&mut p).range_proof = s
        .other
        .transfer
        .confidential
        .as_ref()
        .unwrap()
        .range_proof
        .clone();
    assert_rejected(
        &mut s.payee,
        &p.to_cbor(),
        VerifyError::RangeProofInvalid,
        "lifted proof",
    );

    // Commitments swapped between the outputs, signed again: the payee's
    // derived blinding does not open the change's commitment.
    let mut p = good.clone();
    conf(&mut p).commitments.swap(0, 1);
    resign(&mut p, &s.payer);
    assert_rejected(
        &mut s.payee,
        &p.to_cbor(),
        VerifyError::WrongOpening,
        "swapped commitments",
    );

    // A wrong opening sealed to the payee: 90 for the commitment to 100.
    let mut p = good.clone();
    let ctx = p.transfer.context();
    let c0 = conf(&mut p).commitments[0];
    let lie = Opening::random(Amount(90), &mut rng);
    conf(&mut p).payee_opening = Some(PayeeOpening::Sealed(
        SealedOpening::seal_unchecked(&payee_key, &ctx, &c0, &lie, &mut rng).unwrap(),
    ));
    assert_rejected(
        &mut s.payee,
        &p.to_cbor(),
        VerifyError::WrongOpening,
        "wrong opening",
    );

    // A proof of other values (what a cheat committing to a negative or
    // out-of-range change can attach at best): the range proof fails.
    let mut p = good.clone();
    let some = [
        Opening::random(Amount(100), &mut rng),
        Opening::random(Amount(1000), &mut rng),
    ];
    let gens = RangeGens::new(RangeBits::Bits16, 4).unwrap();
    conf(&mut p).range_proof = Some(RangeProof::prove(&gens, &ctx, &some, &mut rng).unwrap());
    assert_rejected(
        &mut s.payee,
        &p.to_cbor(),
        VerifyError::RangeProofInvalid,
        "proof of other values",
    );

    // The genuine package is still accepted, once.
    let receipt = s.payee.link.receive(&s.package).expect("genuine");
    assert_eq!(s.payee.balance().unwrap(), Amount(100));
    s.payer.link.ack(&receipt).unwrap();
    let again = s
        .payee
        .link
        .receive(&s.package)
        .expect("replay: same receipt");
    assert_eq!(again, receipt);
    assert_eq!(s.payee.balance().unwrap(), Amount(100));
}

// ---------------------------------------------------------------- privacy

fn encodings(v: u64) -> Vec<Vec<u8>> {
    let mut cbor = tally_core::codec::Writer::new();
    cbor.u64(v);
    let mut e = vec![
        v.to_be_bytes().to_vec(),
        v.to_le_bytes().to_vec(),
        (v as u32).to_be_bytes().to_vec(),
        (v as u32).to_le_bytes().to_vec(),
        format!("{v}").into_bytes(),
        cbor.into_bytes(),
    ];
    e.retain(|x| x.len() >= 3);
    e
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Amounts chosen to collide with no limit, epoch or counter of the test
/// scheme: the payer loads 4 321 and pays 1 234, keeping 3 087.
#[test]
fn a_payee_se_stores_no_amount_but_its_own() {
    let mut scheme = scheme();
    let mut payer = device(&scheme, "priv-payer", PHONE);
    let mut payee = device(&scheme, "priv-payee", CARD);
    load(&mut payer.link, &mut scheme, PHONE, 4_321).unwrap();
    pay_offline(&mut payer.link, &mut payee.link, Amount(1_234)).unwrap();
    let state = payee.applet().state().to_cbor();
    let image = storage_image(&mut payee);
    for v in [4_321u64, 3_087] {
        for e in encodings(v) {
            assert!(
                !contains(&state, &e),
                "{v} in the payee's state as {e:02x?}"
            );
            assert!(
                !contains(&image, &e),
                "{v} in the payee's storage as {e:02x?}"
            );
        }
    }
    // Its own amount it does know (the token's value).
    assert!(encodings(1_234).iter().any(|e| contains(&state, e)));
    // Clear mode, for contrast: the same payment shows the change.
    let mut clear = Scheme::new(Suite::Ed25519);
    let mut cp = device(&clear, "clear-payer", PHONE);
    let mut ce = device(&clear, "clear-payee", CARD);
    load(&mut cp.link, &mut clear, PHONE, 4_321).unwrap();
    pay_offline(&mut cp.link, &mut ce.link, Amount(1_234)).unwrap();
    let clear_state = ce.applet().state().to_cbor();
    assert!(encodings(3_087).iter().any(|e| contains(&clear_state, e)));
}

#[test]
fn two_equal_payments_have_different_commitments() {
    let mut scheme = scheme();
    let mut payer = device(&scheme, "eq-payer", PHONE);
    let mut payee = device(&scheme, "eq-payee", PHONE);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();
    let c: Vec<_> = (0..2)
        .map(|_| pay_keeping_package(&mut payer.link, &mut payee.link, Amount(100)).unwrap())
        .map(|b| Package::from_cbor(&b).unwrap())
        .map(|p| p.transfer.confidential.unwrap().commitments[0])
        .collect();
    assert_eq!(c.len(), 2);
    assert_ne!(c[0], c[1]);
}

/// Forty payments of pseudo-random amounts among three devices of every
/// kind: the total never changes, every token an SE holds keeps the
/// opening of its commitment (value and blinding), and a payment an SE
/// cannot make is refused without changing anything.
#[test]
fn confidential_random_payments_conserve_value() {
    use tally_core::confidential::{Commitment, Opening};
    let mut scheme = scheme();
    let classes = [CARD, PHONE, IOT];
    let mut devs: Vec<TestDevice> = classes
        .iter()
        .enumerate()
        .map(|(i, &c)| device(&scheme, &format!("rnd{i}"), c))
        .collect();
    for (i, c) in classes.iter().enumerate() {
        load(&mut devs[i].link, &mut scheme, *c, 2_000 + 500 * i as u64).unwrap();
    }
    let total0: u64 = devs.iter_mut().map(|d| d.balance().unwrap().0).sum();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut made = 0;
    for _ in 0..40 {
        let a = (next() % 3) as usize;
        let b = (a + 1 + (next() % 2) as usize) % 3;
        let amount = 1 + next() % 900;
        let (pa, pb) = if a < b {
            let (l, r) = devs.split_at_mut(b);
            (&mut l[a], &mut r[0])
        } else {
            let (l, r) = devs.split_at_mut(a);
            (&mut r[0], &mut l[b])
        };
        let before = pa.applet().state().clone();
        // Half the payments as a phone or IoT device makes them when its
        // processor proves (decision 0032; a card proves itself).
        let paid = if next() % 2 == 0 {
            pay_offline(&mut pa.link, &mut pb.link, Amount(amount)).map(|_| ())
        } else {
            pay_keeping_package_with(&mut pa.link, &mut pb.link, Amount(amount), true).map(|_| ())
        };
        match paid {
            Ok(_) => made += 1,
            Err(e) => {
                // Only a lack of funds (or of history budget) refuses.
                assert!(
                    e.is(&SeError::InsufficientFunds) || e.is(&SeError::NeedsRenewal),
                    "{e:?}"
                );
                assert_eq!(pa.applet().state(), &before);
            }
        }
        let total: u64 = devs.iter_mut().map(|d| d.balance().unwrap().0).sum();
        assert_eq!(total, total0);
    }
    assert!(made >= 30, "only {made} payments went through");
    // Every held token's opening opens the commitment it was paid as.
    for d in &devs {
        let st = d.applet().state();
        for t in &st.tokens {
            let b = t.blinding.expect("a confidential token keeps its blinding");
            let o = Opening::from_bytes(t.value, &b).unwrap();
            let rec = st
                .records
                .iter()
                .find(|r| r.id == t.outpoint.record)
                .expect("the token's record is stored");
            let c: &Commitment = rec.record.commitment(t.outpoint.index as usize).unwrap();
            assert!(o.opens(c));
        }
    }
}

/// Renewal/unload in confidential mode: the SE pays its whole balance to
/// the DCP's redemption key; the DCP (holding that key) opens the amount,
/// and every rule holds (the back office cannot book it yet: SPEC §4.9.4).
#[test]
fn confidential_redemption_opens_for_the_dcp() {
    use tally_core::Request;
    use tally_core::dcp::RedemptionOrder;
    use tally_core::policy::device_class::DCP;
    use tally_core::verify::{Expected, NoCache, verify_package_as_payee};
    let mut scheme = scheme();
    let mut d = device(&scheme, "redeemer", PHONE);
    load(&mut d.link, &mut scheme, PHONE, 700).unwrap();
    let nonce = [0x52; 16];
    let request = Request::sign(
        &scheme.dcp,
        Amount(700),
        nonce,
        scheme.certify(scheme.dcp.public(), DCP, 0),
        scheme.epoch,
    );
    let se_id = d.link.attestation_key().unwrap().id();
    let order = RedemptionOrder::sign(&scheme.dcp, se_id, false, request);
    let bytes = d.link.redeem(&order).expect("redeem");
    assert_eq!(d.balance().unwrap(), Amount(0));
    let pkg = Package::from_cbor(&bytes).unwrap();
    assert!(pkg.transfer.confidential.is_some());
    let v = verify_package_as_payee(
        pkg,
        &Expected {
            payee: scheme.dcp.public(),
            amount: Amount(700),
            nonce,
            stream: None,
        },
        &scheme.dcp,
        &scheme.trust(),
        scheme.params(1024),
        &mut NoCache,
    )
    .expect("the DCP verifies and opens the redemption");
    assert_eq!(v.payment().1.value, Amount(700));
}

/// SPEC §5.5 R2 under commitments (decision 0023): a clone of the payer
/// pays the same payee again with the same token; the payee's SE sees the
/// shared output, refuses the second copy (2034) and changes nothing, and
/// still pays on with the first.
#[test]
fn confidential_a_clones_second_copy_to_the_same_payee_is_refused() {
    let mut scheme = scheme();
    let mut payer = device(&scheme, "payer", PHONE);
    let mut payee = device(&scheme, "payee", PHONE);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();
    let image = storage_image(&mut payer);
    let clone = Applet::boot(
        MemStorage::from_bytes(image),
        Sealing::None,
        TestEntropy::new(b"conf-clone"),
    )
    .expect("the copy boots");
    let mut clone = TestDevice {
        link: tally_wallet::ApduLink::select(tally_se::dispatch::Card::new(clone), 4096)
            .expect("select"),
        se_id: payer.se_id,
        class: PHONE,
    };
    pay_offline(&mut payer.link, &mut payee.link, Amount(100)).expect("first copy");
    let req = payee.link.create_request(Amount(100)).unwrap();
    let second = clone.link.pay(&req).expect("the clone pays");

    let state = payee.applet().state().clone();
    let before = storage_image(&mut payee);
    assert_eq!(
        payee.link.receive(&second).err(),
        Some(WalletError::Refused {
            code: SeError::ConflictingSpend.code()
        })
    );
    assert_eq!(payee.applet().state(), &state);
    assert_eq!(storage_image(&mut payee), before);

    let mut next = device(&scheme, "next", PHONE);
    pay_offline(&mut payee.link, &mut next.link, Amount(100)).expect("pays on");
    assert_eq!(next.balance().unwrap(), Amount(100));
}

// ---- Proving on the application processor (decision 0032) ---------------

/// The policy's generators as a phone's application processor holds them.
fn ap_gens() -> RangeGens {
    RangeGens::new(RangeBits::Bits16, 4).unwrap()
}

/// A payment of 250 from a phone holding 1 000 (one Issue): with change.
fn delegated_setup(label: &str) -> (Scheme, TestDevice, TestDevice, tally_core::Request) {
    let mut scheme = scheme();
    let mut payer = device(&scheme, &format!("{label}-payer"), PHONE);
    let mut payee = device(&scheme, &format!("{label}-payee"), PHONE);
    load(&mut payer.link, &mut scheme, PHONE, 1_000).unwrap();
    let request = payee.link.create_request(Amount(250)).unwrap();
    (scheme, payer, payee, request)
}

#[track_caller]
fn assert_pay_refused(
    payer: &mut TestDevice,
    request: &tally_core::Request,
    proof: Option<&RangeProof>,
    e: SeError,
    what: &str,
) {
    let state = payer.applet().state().clone();
    let image = storage_image(payer);
    let r = payer.link.pay_proved(request, proof);
    assert_eq!(
        r.as_ref().err(),
        Some(&WalletError::Refused { code: e.code() }),
        "{what}: expected {e:?}, got {r:?}"
    );
    assert_eq!(payer.applet().state(), &state, "{what}: state changed");
    assert_eq!(storage_image(payer), image, "{what}: storage changed");
}

#[test]
fn a_phone_pays_with_a_range_proof_made_by_its_application_processor() {
    let (_scheme, mut payer, mut payee, request) = delegated_setup("ap");
    let input_blinding = payer.applet().state().tokens[0].blinding.unwrap();
    // The task changes nothing and is the same when asked again.
    let state = payer.applet().state().clone();
    let task = payer.link.proving_task(&request).unwrap();
    assert_eq!(payer.applet().state(), &state);
    assert_eq!(
        task.to_cbor(),
        payer.link.proving_task(&request).unwrap().to_cbor()
    );
    // The outputs' openings, never the input's.
    assert!(task.needs_proof());
    let values: Vec<u64> = task.openings.iter().map(|o| o.value().0).collect();
    assert_eq!(values, [250, 750]);
    assert!(!contains(&task.to_cbor(), &input_blinding));

    // The payment itself, through the sessions: a second request of 250.
    let (payee_session, request2) = PayeeSession::start(&mut payee.link, Amount(250)).unwrap();
    let mut rng = TestEntropy::new(b"the phone's application processor");
    let payer_session = PayerSession::start_proving(&mut payer.link, &request2, &mut rng).unwrap();
    let pkg = Package::from_cbor(payer_session.package()).unwrap();
    let t = pkg.transfer.confidential.as_ref().unwrap();
    assert_eq!(t.commitments.len(), 2);
    assert!(t.range_proof.is_some());
    let received = payee_session
        .on_package(&mut payee.link, payer_session.package())
        .map_err(|(_, e)| e)
        .expect("the payee SE takes the package");
    // A retry after a lost answer: the same package, proof or not.
    let again = PayerSession::start_proving(&mut payer.link, &request2, &mut rng).unwrap();
    assert_eq!(again.package(), payer_session.package());
    payer_session
        .on_receipt(&mut payer.link, &received.receipt)
        .map_err(|(_, e)| e)
        .unwrap();
    assert_eq!(payer.balance().unwrap(), Amount(750));
    assert_eq!(payee.balance().unwrap(), Amount(250));
    // The change the application processor proved pays on as any token.
    pay_offline(&mut payer.link, &mut payee.link, Amount(700)).expect("the change pays on");
    assert_eq!(total(&mut [&mut payer, &mut payee]), 1_000);
}

#[test]
fn the_se_refuses_a_wrong_stale_or_foreign_proof_and_changes_nothing() {
    let (scheme, mut payer, mut payee, request) = delegated_setup("ap-wrong");
    let gens = ap_gens();
    let mut rng = TestEntropy::new(b"ap-wrong");
    let task = payer.link.proving_task(&request).unwrap();
    let invalid = SeError::Verify(VerifyError::RangeProofInvalid);

    // No proof for two outputs.
    assert_pay_refused(&mut payer, &request, None, invalid.clone(), "no proof");
    // A proof of other openings (the change claimed as 760: value made
    // from nothing if it were signed), under the right context.
    let mut forged = task.openings.clone();
    forged[1] = Opening::random(Amount(760), &mut rng);
    let p = RangeProof::prove(&gens, &task.context, &forged, &mut rng).unwrap();
    assert_pay_refused(
        &mut payer,
        &request,
        Some(&p),
        invalid.clone(),
        "other openings",
    );
    // The right openings bound to another transfer's context.
    let other = tally_core::crypto::tagged_hash(b"another transfer", &[]);
    let p = RangeProof::prove(&gens, &other, &task.openings, &mut rng).unwrap();
    assert_pay_refused(
        &mut payer,
        &request,
        Some(&p),
        invalid.clone(),
        "foreign context",
    );
    // The right openings in the other order (the payment's and the
    // change's commitments swapped).
    let swapped = [task.openings[1].clone(), task.openings[0].clone()];
    let p = RangeProof::prove(&gens, &task.context, &swapped, &mut rng).unwrap();
    assert_pay_refused(
        &mut payer,
        &request,
        Some(&p),
        invalid.clone(),
        "swapped outputs",
    );
    // An honest proof of another payment's task (another request, the
    // same payer: a proof lifted from another transfer).
    let other_request = device(&scheme, "ap-wrong-other", PHONE)
        .link
        .create_request(Amount(250))
        .unwrap();
    let other_task = payer.link.proving_task(&other_request).unwrap();
    let p = other_task.prove(&gens, &mut rng).unwrap();
    assert!(p.is_some());
    assert_pay_refused(
        &mut payer,
        &request,
        p.as_ref(),
        invalid.clone(),
        "another task's proof",
    );
    // A proof of the payment's output alone.
    let p = RangeProof::prove(&gens, &task.context, &task.openings[..1], &mut rng).unwrap();
    assert_pay_refused(
        &mut payer,
        &request,
        Some(&p),
        invalid.clone(),
        "one output of two",
    );
    // Another bit-length than the policy's.
    let wide = RangeGens::new(RangeBits::Bits32, 4).unwrap();
    let p = RangeProof::prove(&wide, &task.context, &task.openings, &mut rng).unwrap();
    assert_pay_refused(
        &mut payer,
        &request,
        Some(&p),
        SeError::Verify(VerifyError::RangeBitsMismatch),
        "32-bit proof",
    );

    // Stale: another payment between the task and PAY moves the counter,
    // so the SE's openings are new and the old proof proves nothing.
    let proof = task.prove(&gens, &mut rng).unwrap();
    let mut bystander = device(&scheme, "ap-wrong-bystander", PHONE);
    pay_offline(&mut payer.link, &mut bystander.link, Amount(50)).unwrap();
    assert_pay_refused(&mut payer, &request, proof.as_ref(), invalid, "stale proof");
    // Asked again, proved again: paid.
    let task = payer.link.proving_task(&request).unwrap();
    let values: Vec<u64> = task.openings.iter().map(|o| o.value().0).collect();
    assert_eq!(values, [250, 700]);
    let proof = task.prove(&gens, &mut rng).unwrap();
    let package = payer.link.pay_proved(&request, proof.as_ref()).unwrap();
    payee
        .link
        .receive(&package)
        .expect("the fresh proof's package");
    assert_eq!(payer.balance().unwrap(), Amount(700));
    assert_eq!(total(&mut [&mut payer, &mut payee, &mut bystander]), 1_000);
    // Paid: no second task for the request.
    assert_eq!(
        payer.link.proving_task(&request).err(),
        Some(WalletError::refused(SeError::AlreadyPaid))
    );
}

#[test]
fn a_whole_token_payment_needs_no_proof_from_the_application_processor() {
    let mut scheme = scheme();
    let mut payer = device(&scheme, "ap-whole-payer", IOT);
    let mut payee = device(&scheme, "ap-whole-payee", PHONE);
    load(&mut payer.link, &mut scheme, IOT, 300).unwrap();
    let request = payee.link.create_request(Amount(300)).unwrap();
    let task = payer.link.proving_task(&request).unwrap();
    assert!(!task.needs_proof());
    assert_eq!(task.openings.len(), 1);
    let mut rng = TestEntropy::new(b"ap-whole");
    assert!(task.prove(&ap_gens(), &mut rng).unwrap().is_none());
    // A proof where none belongs is refused.
    let p = RangeProof::prove(&ap_gens(), &task.context, &task.openings, &mut rng).unwrap();
    assert_pay_refused(
        &mut payer,
        &request,
        Some(&p),
        SeError::Verify(VerifyError::RangeProofInvalid),
        "a proof on one output",
    );
    let package = payer.link.pay_proved(&request, None).unwrap();
    payee.link.receive(&package).expect("whole token");
    assert_eq!(payee.balance().unwrap(), Amount(300));
    assert_eq!(payer.balance().unwrap(), Amount::ZERO);
}

#[test]
fn a_card_never_hands_its_openings_to_its_host() {
    // A card's host is the payee's terminal: it must not learn the
    // payer's change (decision 0032).
    let (mut scheme, _, mut payee, _) = delegated_setup("ap-card");
    let mut card = device(&scheme, "ap-card", CARD);
    load(&mut card.link, &mut scheme, CARD, 1_000).unwrap();
    let request = payee.link.create_request(Amount(250)).unwrap();
    let refused = SeError::ProvingNotDelegated;
    let state = card.applet().state().clone();
    assert_eq!(
        card.link.proving_task(&request).err(),
        Some(WalletError::refused(refused.clone()))
    );
    assert_eq!(card.applet().state(), &state);
    let task = {
        let (_, mut phone, _, _) = delegated_setup("ap-card-phone");
        phone.link.proving_task(&request).unwrap()
    };
    let proof = task
        .prove(&ap_gens(), &mut TestEntropy::new(b"ap-card"))
        .unwrap();
    assert_pay_refused(&mut card, &request, proof.as_ref(), refused.clone(), "card");
    // The card proves on itself as before.
    card.link.pay(&request).expect("PAY on the card");
    // Clear amounts: nothing to prove.
    let mut clear = Scheme::new(Suite::Ed25519);
    let mut phone = device(&clear, "ap-clear", PHONE);
    let mut clear_payee = device(&clear, "ap-clear-payee", PHONE);
    load(&mut phone.link, &mut clear, PHONE, 100).unwrap();
    let request = clear_payee.link.create_request(Amount(10)).unwrap();
    assert_eq!(
        phone.link.proving_task(&request).err(),
        Some(WalletError::refused(refused))
    );
}

#[test]
fn a_phone_se_reached_over_nfc_never_hands_out_its_openings() {
    // A phone's embedded SE routed to the NFC antenna: a payee's terminal
    // talks to it directly and asks for the proving task, to learn what
    // the payer keeps (decision 0032). Only the phone's own processor, on
    // the internal interface, gets it.
    let (_scheme, mut payer, mut payee, request) = delegated_setup("ap-nfc");
    payer
        .link
        .card
        .set_interface(tally_se::dispatch::Interface::Contactless);
    let refused = WalletError::refused(SeError::ProvingNotDelegated);
    let state = payer.applet().state().clone();
    assert_eq!(
        payer.link.proving_task(&request).err(),
        Some(refused.clone())
    );
    assert_eq!(payer.link.pay_proved(&request, None).err(), Some(refused));
    assert_eq!(payer.applet().state(), &state);
    // Over NFC the SE pays as a card does, proving itself.
    let package = payer.link.pay(&request).expect("PAY over NFC");
    let mut pkg = Package::from_cbor(&package).unwrap();
    assert!(conf(&mut pkg).range_proof.is_some());
    payee.link.receive(&package).expect("the payee takes it");
    assert_eq!(payer.balance().unwrap(), Amount(750));
}

#[test]
fn pay_with_an_unknown_p1_pays_nothing() {
    // PAY's P1 says what is asked: 0 pay, 1 the proving task, 2 pay with
    // a proof (decision 0032). Anything else is refused, never a payment.
    let (_scheme, mut payer, _payee, request) = delegated_setup("ap-p1");
    let state = payer.applet().state().clone();
    for p1 in [3u8, 0x80, 0xFF] {
        let r = payer
            .link
            .command(tally_se::dispatch::ins::PAY, p1, 0, &request.to_cbor());
        assert!(r.is_err(), "P1 {p1:02X}: {r:?}");
        assert_eq!(payer.applet().state(), &state, "P1 {p1:02X}");
    }
    assert_eq!(payer.balance().unwrap(), Amount(1_000));
}
