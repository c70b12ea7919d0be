//! Offline payments between every kind of device, over the APDU transport.

use tally_core::policy::device_class::{CARD, IOT, PHONE};
use tally_core::testkit::Scheme;
use tally_core::{Amount, Suite};
use tally_wallet::testkit::{TestDevice, load};
use tally_wallet::{SeLink, pay_offline};

/// NFC cards speak short APDUs; phones' embedded SEs extended ones.
fn apdu_size(class: u8) -> usize {
    if class == CARD { 255 } else { 4096 }
}

fn device(scheme: &Scheme, label: &str, class: u8) -> TestDevice {
    TestDevice::new(scheme, label.as_bytes(), class, apdu_size(class)).expect("provision")
}

fn pay_between(payer_class: u8, payee_class: u8) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = device(&scheme, "payer", payer_class);
    let mut payee = device(&scheme, "payee", payee_class);
    load(&mut payer.link, &mut scheme, payer_class, 1_000).expect("load");
    let out = pay_offline(&mut payer.link, &mut payee.link, Amount(250)).expect("payment");
    assert_eq!(payer.balance().unwrap(), Amount(750));
    assert_eq!(payee.balance().unwrap(), Amount(250));
    assert_eq!(payer.link.status().unwrap().unacked, 0);
    assert!(out.package_bytes > 0);
}

#[test]
fn card_to_phone() {
    pay_between(CARD, PHONE);
}

#[test]
fn phone_to_card() {
    pay_between(PHONE, CARD);
}

#[test]
fn phone_to_phone() {
    pay_between(PHONE, PHONE);
}

#[test]
fn device_to_device_iot() {
    pay_between(IOT, IOT);
}

#[test]
fn chain_across_six_devices_each_respends() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let classes = [CARD, PHONE, IOT, PHONE, CARD, IOT];
    let mut devs: Vec<TestDevice> = classes
        .iter()
        .enumerate()
        .map(|(i, &c)| device(&scheme, &format!("dev{i}"), c))
        .collect();
    load(&mut devs[0].link, &mut scheme, CARD, 10_000).unwrap();
    let mut amount = 9_000u64;
    for i in 0..devs.len() - 1 {
        let (a, b) = devs.split_at_mut(i + 1);
        let out = pay_offline(&mut a[i].link, &mut b[0].link, Amount(amount)).expect("hop");
        // The package grows by one hop of ancestry each time.
        assert!(out.package_bytes > 0);
        amount -= 1_000;
    }
    let balances: Vec<u64> = devs.iter_mut().map(|d| d.balance().unwrap().0).collect();
    assert_eq!(balances, vec![1_000, 1_000, 1_000, 1_000, 1_000, 5_000]);
    assert_eq!(balances.iter().sum::<u64>(), 10_000);
}

#[test]
fn split_and_merge() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut a = device(&scheme, "a", PHONE);
    let mut b = device(&scheme, "b", PHONE);
    load(&mut a.link, &mut scheme, PHONE, 300).unwrap();
    load(&mut a.link, &mut scheme, PHONE, 200).unwrap();
    load(&mut a.link, &mut scheme, PHONE, 100).unwrap();
    // 450 needs the 300 and the 200 token merged, with change 50.
    pay_offline(&mut a.link, &mut b.link, Amount(450)).unwrap();
    assert_eq!(a.balance().unwrap(), Amount(150));
    assert_eq!(b.balance().unwrap(), Amount(450));
    let toks = a.applet().tokens();
    assert_eq!(toks.len(), 2, "the 100 token and the 50 change");
    // The payee re-spends the merged token: the package carries both issues.
    let mut c = device(&scheme, "c", PHONE);
    pay_offline(&mut b.link, &mut c.link, Amount(450)).unwrap();
    assert_eq!(c.balance().unwrap(), Amount(450));
    assert_eq!(b.balance().unwrap(), Amount(0));
}

#[test]
fn one_minor_unit() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut meter = device(&scheme, "meter", IOT);
    let mut charger = device(&scheme, "charger", IOT);
    load(&mut meter.link, &mut scheme, IOT, 5).unwrap();
    for _ in 0..5 {
        pay_offline(&mut meter.link, &mut charger.link, Amount(1)).unwrap();
    }
    assert_eq!(meter.balance().unwrap(), Amount(0));
    assert_eq!(charger.balance().unwrap(), Amount(5));
}

#[test]
fn p256_suite_payments() {
    let mut scheme = Scheme::new(Suite::EcdsaP256Sha256);
    let mut a = TestDevice::new(&scheme, b"p256-a", CARD, 255).unwrap();
    let mut b = TestDevice::new(&scheme, b"p256-b", PHONE, 4096).unwrap();
    load(&mut a.link, &mut scheme, CARD, 100).unwrap();
    pay_offline(&mut a.link, &mut b.link, Amount(60)).unwrap();
    assert_eq!(b.balance().unwrap(), Amount(60));
}

#[test]
fn check_request_ahead_of_pay_over_apdu() {
    use tally_core::codec::Cbor;
    use tally_core::{Request, Signature, VerifyError};
    use tally_se::SeError;
    use tally_wallet::{PayeeSession, PayerSession};

    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = device(&scheme, "payer", CARD);
    let mut payee = device(&scheme, "payee", PHONE);
    load(&mut payer.link, &mut scheme, CARD, 1_000).expect("load");
    let (session, req) = PayeeSession::start(&mut payee.link, Amount(250)).expect("request");

    // A certificate whose DCP signature is broken is refused at CHECK
    // REQUEST, and the check changes nothing persistent.
    let mut forged = Request::from_cbor(&req).expect("decode");
    let mut sig = *forged.payee.signature.bytes();
    sig[10] ^= 1;
    forged.payee.signature = Signature::new(Suite::Ed25519, sig);
    let err = PayerSession::check(&mut payer.link, &forged.to_cbor()).expect_err("forged");
    assert!(
        err.is(&SeError::Verify(VerifyError::BadCertificateSignature)),
        "{err:?}"
    );
    let before = payer.link.status().expect("status");

    PayerSession::check(&mut payer.link, &req).expect("the honest request checks");
    assert_eq!(payer.link.status().expect("status"), before);
    let pay = PayerSession::start(&mut payer.link, &req).expect("PAY after CHECK REQUEST");
    let received = session
        .on_package(&mut payee.link, pay.package())
        .map_err(|(_, e)| e)
        .expect("receive");
    pay.on_receipt(&mut payer.link, &received.receipt)
        .map_err(|(_, e)| e)
        .expect("ack");
    assert_eq!(payer.balance().unwrap(), Amount(750));
    assert_eq!(payee.balance().unwrap(), Amount(250));
}
