//! Hostile devices against the node (issue 9, item 7), as the attacker
//! would do it: a failed request replayed after the account was topped up
//! (in process), and a burst of requests from one SE over HTTP. Each is
//! refused with a typed error and changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tally_api::{ApiConfig, BackgroundServer, DeviceRate, HttpBackend, InProcess, code};
use tally_core::codec::Cbor;
use tally_core::dcp::{DeviceOp, DeviceRequest};
use tally_core::policy::device_class;
use tally_core::{SecretKey, Signature, Suite};
use tally_dcp::Backoffice;
use tally_se::RequestParams;
use tally_store::Store;
use tally_wallet::agent::{Agent, Backend, BackendError, manufacture};
use tally_wallet::testkit::{TestCard, blank_card};
use tally_wallet::{ApduLink, SeLink};

fn card(label: &[u8]) -> ApduLink<TestCard> {
    ApduLink::select(blank_card(label), 4096).expect("select applet")
}

const PIN: &[u8] = b"2468";

/// The test SE manufacturer's key.
fn maker_key() -> SecretKey {
    SecretKey::from_seed(Suite::Ed25519, &[0x4d; 32]).expect("maker key")
}

/// Manufactures `se` (PIN set) and enrols it for `account` with a fresh
/// one-time code.
fn onboard<'a>(
    se: &'a mut ApduLink<TestCard>,
    backend: &'a mut dyn Backend,
    bo: &Backoffice,
    account: &str,
) -> Agent<'a> {
    bo.trust_manufacturer(maker_key().public())
        .expect("trust maker");
    let cert = manufacture(se, device_class::PHONE, bo.root_key(), &maker_key(), "acme")
        .expect("manufacture");
    se.change_pin(None, PIN).expect("PIN");
    let code = bo.enrolment_code(account).expect("code");
    Agent::onboard(se, backend, cert, account, &code).expect("onboard")
}

/// A request the SE builds and signs itself; an online payment after the
/// cardholder's PIN.
fn signed(se: &mut ApduLink<TestCard>, params: RequestParams) -> Vec<u8> {
    if matches!(params, RequestParams::PayOnline { .. }) {
        se.verify_pin(PIN).expect("PIN");
    }
    se.build_request(&params).expect("build").to_cbor()
}

fn backoffice() -> Arc<Backoffice> {
    Arc::new(Backoffice::open(Store::sqlite_memory().expect("sqlite")).expect("back office"))
}

#[test]
fn failed_online_payment_replayed_after_top_up_gets_the_same_refusal() {
    let bo = backoffice();
    bo.mint("m", 1_000_000).expect("mint");
    bo.deposit("d1", "erin", 100).expect("deposit");
    bo.deposit("d2", "frank", 1).expect("deposit");
    let mut backend = InProcess(bo.clone());
    let mut se = card(b"erin");
    onboard(&mut se, &mut backend, &bo, "erin");
    // Erin's SE signs a payment her account cannot cover; it fails.
    let pay = signed(
        &mut se,
        RequestParams::PayOnline {
            to_account: "frank".into(),
            amount: 5_000,
        },
    );
    let first = backend.device(&pay).expect_err("insufficient funds");
    assert_eq!(first.status, 422, "{first:?}");
    // The account is topped up; a terminal that kept the signed bytes
    // sends them again.
    bo.deposit("d3", "erin", 10_000).expect("deposit");
    let before = (
        bo.invariant().expect("invariant"),
        bo.account_balance("erin").expect("balance"),
        bo.account_balance("frank").expect("balance"),
    );
    for _ in 0..2 {
        let again = backend.device(&pay).expect_err("a failed request is final");
        assert_eq!(again, first, "the same stored refusal");
    }
    assert_eq!(
        (
            bo.invariant().expect("invariant"),
            bo.account_balance("erin").expect("balance"),
            bo.account_balance("frank").expect("balance"),
        ),
        before,
        "nothing executed"
    );
    assert_eq!(before.1, 10_100);
    // A fresh request (next counter) for the same payment now goes through.
    let fresh = signed(
        &mut se,
        RequestParams::PayOnline {
            to_account: "frank".into(),
            amount: 5_000,
        },
    );
    backend.device(&fresh).expect("paid");
    assert_eq!(bo.account_balance("frank").expect("balance"), 5_001);
}

#[test]
fn burst_from_one_se_gets_429_and_changes_nothing() {
    let bo = backoffice();
    bo.mint("m", 1_000_000).expect("mint");
    bo.deposit("d", "gina", 1_000).expect("deposit");
    let mut cfg = ApiConfig::new("t");
    cfg.device_rate = DeviceRate {
        burst_max: 4,
        refill_per_second: 2,
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server = BackgroundServer::start(bo.clone(), addr, cfg).expect("server");
    let mut http = HttpBackend::new(server.base_url());
    let mut se = card(b"gina");
    let mut other = card(b"hank");
    // Onboarding (registration) is not a device request: not counted.
    let se_id = onboard(&mut se, &mut http, &bo, "gina").se_id;
    bo.deposit("d2", "hank", 10).expect("deposit");
    onboard(&mut other, &mut http, &bo, "hank");
    // Forged requests naming gina's SE cost her bucket nothing.
    for i in 0..8u8 {
        let forged = DeviceRequest {
            se_id,
            counter: 1_000 + u64::from(i),
            op: DeviceOp::Balance,
            signature: Signature::new(Suite::Ed25519, [i; 64]),
            attachment: Vec::new(),
        }
        .to_cbor();
        assert_eq!(http.device(&forged).expect_err("forged").code, 52);
    }
    let before = bo.invariant().expect("invariant");
    let mut answered = 0;
    let mut limited = None;
    for _ in 0..40 {
        let req = signed(&mut se, RequestParams::Balance);
        match http.device(&req) {
            Ok(_) => answered += 1,
            Err(e) => {
                assert_eq!((e.status, e.code), (429, code::RATE_LIMITED), "{e:?}");
                limited = Some(req);
                break;
            }
        }
    }
    // What was left of the burst of 4 after onboarding's own requests
    // (the forged ones took none), plus what refilled during the loop.
    assert!((1..40).contains(&answered), "{answered} answered");
    let limited = limited.expect("a burst past the limit is refused");
    assert_eq!(bo.invariant().expect("invariant"), before);
    // Another SE is not limited by gina's burst.
    let h = signed(&mut other, RequestParams::Balance);
    http.device(&h).expect("hank is not limited");
    // The refused request claimed nothing (not even its counter): once the
    // bucket refilled, the same bytes are answered.
    std::thread::sleep(Duration::from_millis(700));
    let ok: Result<Vec<u8>, BackendError> = http.device(&limited);
    ok.expect("answered after the refill");
    // And /metrics counts the 429s and shows the MDS feed's backlog.
    let text = ureq::get(format!("{}/metrics", server.base_url()))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(
        text.contains("route=\"/v1/devices/request\",status=\"429\"}"),
        "{text}"
    );
    for g in [
        "tally_mds_outbox_pending 0\n",
        "tally_mds_outbox_oldest_age_seconds 0\n",
        "tally_mds_set_aside 0\n",
    ] {
        assert!(text.contains(g), "{g} in {text}");
    }
    server.stop().expect("stop");
}
