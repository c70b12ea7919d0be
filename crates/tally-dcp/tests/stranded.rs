//! Issue 10's four regressions, as a user meets them: a command whose
//! reply is lost is simply run again. The back office executes the request
//! (the reply is lost on the way back), the wallet kept the signed bytes
//! before sending them, and the next command resends them and applies the
//! stored answer: nothing is debited twice, nothing is stranded.

mod support;

use std::sync::Arc;

use support::*;
use tally_core::Amount;
use tally_core::codec::Cbor;
use tally_core::policy::device_class::{IOT, PHONE};
use tally_dcp::Backoffice;
use tally_store::Store;
use tally_wallet::SeLink;
use tally_wallet::agent::{Agent, Backend, BackendError, Finished, PendingStore, SealedKind};

/// The in-process back office, losing the reply of the `lose`-th device
/// request it executes (counting from 1).
struct LossyReply {
    inner: Local,
    lose: usize,
    seen: usize,
}

impl Backend for LossyReply {
    fn trust(
        &mut self,
    ) -> Result<
        (
            tally_core::PublicKey,
            tally_core::Policy,
            tally_core::RevocationList,
        ),
        BackendError,
    > {
        self.inner.trust()
    }
    fn register(
        &mut self,
        reg: &tally_core::dcp::Registration,
    ) -> Result<tally_core::Hash32, BackendError> {
        self.inner.register(reg)
    }
    fn seal(
        &mut self,
        root: &tally_core::PublicKey,
        kind: SealedKind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        self.inner.seal(root, kind, plaintext)
    }
    fn device(&mut self, request: &[u8]) -> Result<Vec<u8>, BackendError> {
        let answer = self.inner.device(request);
        self.seen += 1;
        if self.seen == self.lose {
            return Err(BackendError {
                status: 0,
                code: 0,
                message: "connection reset (reply lost)".into(),
            });
        }
        answer
    }
}

/// The wallet's durable slot, in memory.
#[derive(Default)]
struct Slot(Option<Vec<u8>>, Vec<tally_core::Hash32>);

impl PendingStore for Slot {
    fn get(&mut self) -> Option<Vec<u8>> {
        self.0.clone()
    }
    fn put(&mut self, request: Option<&[u8]>) -> Result<(), BackendError> {
        self.0 = request.map(<[u8]>::to_vec);
        Ok(())
    }
    fn given_up(&mut self) -> Vec<tally_core::Hash32> {
        self.1.clone()
    }
    fn give_up(&mut self, transfer_id: tally_core::Hash32) -> Result<(), BackendError> {
        self.1.push(transfer_id);
        Ok(())
    }
}

fn backoffice() -> Arc<Backoffice> {
    let bo = Arc::new(Backoffice::open(Store::sqlite_memory().unwrap()).unwrap());
    bo.mint("m", 1_000_000).unwrap();
    bo
}

/// Runs `f` on an agent whose backend loses the `lose`-th reply.
fn run<R>(
    bo: &Arc<Backoffice>,
    d: &mut Dev,
    slot: &mut Slot,
    lose: usize,
    f: impl FnOnce(&mut Agent<'_>) -> R,
) -> R {
    let mut b = LossyReply {
        inner: Local(bo.clone()),
        lose,
        seen: 0,
    };
    let mut a = Agent {
        se: &mut d.link,
        backend: &mut b,
        se_id: d.se_id,
        pending: Some(slot),
    };
    f(&mut a)
}

fn invariant_holds(bo: &Backoffice, devices: &mut [&mut Dev]) {
    let inv = bo.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    let held: u64 = devices
        .iter_mut()
        .map(|d| d.link.status().unwrap().balance.0)
        .sum();
    assert_eq!(held, inv.offline_float as u64, "float = value held in SEs");
}

/// 1. `load 3000`, then `load 1000` whose reply is lost, then `load 1000`
///    again: used to debit 5 000 and leave a 1 000 token in no SE.
#[test]
fn lost_load_reply_then_the_same_load_again() {
    let bo = backoffice();
    bo.deposit("d", "alice", 10_000).unwrap();
    let mut d = onboard(&bo, "alice-load", PHONE, "alice");
    let mut slot = Slot::default();
    run(&bo, &mut d, &mut slot, 0, |a| a.load(3_000)).unwrap();
    // The reply of the Load request is lost (the SE has certified keys
    // left from its sync, so the Load is the first request).
    let lost = run(&bo, &mut d, &mut slot, 1, |a| a.load(1_000));
    assert!(lost.is_err());
    assert!(slot.0.is_some(), "the signed load is kept");
    // The user runs the command again: the pending load is finished.
    let done = run(&bo, &mut d, &mut slot, 0, |a| a.resume()).unwrap();
    assert!(matches!(
        done.as_slice(),
        [Finished::Request(tally_core::dcp::DeviceOp::Load {
            amount: 1_000,
            ..
        })]
    ));
    assert!(slot.0.is_none());
    assert_eq!(d.link.status().unwrap().balance, Amount(4_000));
    assert_eq!(bo.account_balance("alice").unwrap(), 6_000);
    invariant_holds(&bo, &mut [&mut d]);
}

/// 2. An interrupted renewal: the SE has paid its redemption, the Redeem's
///    reply is lost. Used to print "renewed 0" on retry and strand the whole
///    balance.
#[test]
fn interrupted_renewal_is_finished_by_the_retry() {
    let bo = backoffice();
    bo.deposit("d", "bob", 10_000).unwrap();
    let mut d = onboard(&bo, "bob-renew", PHONE, "bob");
    let mut e = onboard(&bo, "erin-renew", PHONE, "erin");
    let mut slot = Slot::default();
    run(&bo, &mut d, &mut slot, 0, |a| a.load(2_000)).unwrap();
    tally_wallet::pay_offline(&mut d.link, &mut e.link, Amount(500)).unwrap();
    // RedemptionRequest (1), Redeem (2): the Redeem's reply is lost.
    let lost = run(&bo, &mut d, &mut slot, 2, |a| a.renew());
    assert!(lost.is_err());
    assert_eq!(
        d.link.status().unwrap().balance,
        Amount::ZERO,
        "paid to the DCP"
    );
    let done = run(&bo, &mut d, &mut slot, 0, |a| a.resume()).unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(d.link.status().unwrap().balance, Amount(1_500));
    assert!(d.link.outgoing().unwrap().iter().all(|o| o.acked));
    invariant_holds(&bo, &mut [&mut d, &mut e]);
    // A crash after the SE paid and before the Redeem was even built: the
    // unacknowledged redemption itself is redeemed by the next command.
    use tally_core::codec::Cbor;
    let req = build_request(
        &mut e,
        tally_se::RequestParams::RedemptionRequest {
            amount: 500,
            unload: true,
        },
        Vec::new(),
    );
    let answer = bo.handle_device(&req).unwrap();
    let tally_core::dcp::DeviceResponse::Redemption(order) =
        tally_core::dcp::DeviceResponse::from_cbor(&answer).unwrap()
    else {
        panic!("an order")
    };
    e.link.redeem(&order).unwrap();
    assert_eq!(e.link.status().unwrap().balance, Amount::ZERO);
    // … the process dies here. The next command finishes it.
    let done = run(&bo, &mut e, &mut Slot::default(), 0, |a| a.resume()).unwrap();
    assert_eq!(
        done,
        vec![Finished::Redemption {
            amount: Amount(500),
            unload: true
        }]
    );
    assert_eq!(bo.account_balance("erin").unwrap(), 500);
    invariant_holds(&bo, &mut [&mut d, &mut e]);
}

/// 3. `unload 1000` whose reply is lost, then `unload 1000` again: used to
///    take 2 000 out of the SE for one unload of 1 000. Either reply: the
///    redemption's (the second request), or the redemption order's (the
///    first: the next command then asks for the order again, the SE pays
///    it, the redemption follows — reported once, as one unload, where it
///    used to be reported as the order and the redemption).
#[test]
fn lost_unload_reply_then_the_same_unload_again() {
    for lose in [2, 1] {
        let bo = backoffice();
        bo.deposit("d2", "carol", 10_000).unwrap();
        let mut d = onboard(&bo, &format!("carol-unload-{lose}"), IOT, "carol");
        let mut slot = Slot::default();
        run(&bo, &mut d, &mut slot, 0, |a| a.load(3_000)).unwrap();
        let lost = run(&bo, &mut d, &mut slot, lose, |a| a.unload(1_000));
        assert!(lost.is_err());
        let done = run(&bo, &mut d, &mut slot, 0, |a| a.resume()).unwrap();
        assert_eq!(
            done,
            vec![Finished::Redemption {
                amount: Amount(1_000),
                unload: true
            }],
            "reply {lose} lost: the same `unload 1000` run again finds this one finished"
        );
        assert_eq!(d.link.status().unwrap().balance, Amount(2_000));
        assert_eq!(bo.account_balance("carol").unwrap(), 8_000);
        invariant_holds(&bo, &mut [&mut d]);
    }
}

/// 4. A load above the holding limit: used to debit the account, issue
///    the token and have the SE refuse it. Now the SE will not sign it and the
///    back office refuses it before debiting.
#[test]
fn load_above_the_holding_limit_debits_nothing() {
    let bo = backoffice();
    bo.deposit("d", "dave", 500_000).unwrap();
    let mut d = onboard(&bo, "dave-big", PHONE, "dave");
    let mut slot = Slot::default();
    let r = run(&bo, &mut d, &mut slot, 0, |a| a.load(300_000));
    assert!(r.is_err());
    assert!(slot.0.is_none(), "nothing pending");
    assert_eq!(bo.account_balance("dave").unwrap(), 500_000);
    assert_eq!(d.link.status().unwrap().balance, Amount::ZERO);
    invariant_holds(&bo, &mut [&mut d]);
}

/// A redemption the back office refuses for good (here: settled already
/// under another request the SE signed — what a lost pending file or a
/// clone leaves) must not block every later command: it is reported once,
/// left in the SE's log for an operator, and not tried again.
#[test]
fn a_redemption_refused_for_good_does_not_block_the_device() {
    use tally_core::codec::Cbor;
    let bo = backoffice();
    bo.deposit("d", "fay", 10_000).unwrap();
    let mut d = onboard(&bo, "fay-refused", PHONE, "fay");
    let mut slot = Slot::default();
    run(&bo, &mut d, &mut slot, 0, |a| a.load(1_000)).unwrap();
    let req = build_request(
        &mut d,
        tally_se::RequestParams::RedemptionRequest {
            amount: 400,
            unload: true,
        },
        Vec::new(),
    );
    let tally_core::dcp::DeviceResponse::Redemption(order) =
        tally_core::dcp::DeviceResponse::from_cbor(&bo.handle_device(&req).unwrap()).unwrap()
    else {
        panic!("an order")
    };
    let package = d.link.redeem(&order).unwrap();
    let transfer_id = tally_core::Package::from_cbor(&package)
        .unwrap()
        .transfer
        .id();
    // Settled under another Redeem request of this SE's (its answer lost).
    let sealed = seal_to_settlement(&bo, SealedKind::Redemption, &package);
    let key = d.link.attestation_key().unwrap();
    let other = forge_request(
        &mut d,
        tally_core::dcp::DeviceOp::Redeem {
            nonce: order.request.nonce,
            transfer_id,
            key,
            sealed_digest: tally_core::dcp::attachment_digest(&sealed),
        },
        sealed,
    );
    bo.handle_device(&other).unwrap();
    assert_eq!(bo.account_balance("fay").unwrap(), 9_400);
    // The next command's Redeem for it is refused (already redeemed).
    let done = run(&bo, &mut d, &mut slot, 0, |a| a.resume()).unwrap();
    assert!(
        matches!(done.as_slice(), [Finished::RedemptionRefused { amount, .. }] if *amount == Amount(400)),
        "{done:?}"
    );
    // Not tried again, and the device goes on.
    let again = run(&bo, &mut d, &mut slot, 0, |a| a.resume()).unwrap();
    assert!(again.is_empty(), "{again:?}");
    run(&bo, &mut d, &mut slot, 0, |a| a.load(100)).unwrap();
    assert_eq!(d.link.status().unwrap().balance, Amount(700));
    assert_eq!(bo.account_balance("fay").unwrap(), 9_300);
    invariant_holds(&bo, &mut [&mut d]);
}

/// Decision 0008's finding, in the code: a terminal shows bob's request to
/// two payers; both pay, bob's SE receives alice's package and refuses
/// carol's. Bob's SE reports the request received (by alice's transfer);
/// carol's unacknowledged payment, uploaded at her sync, is refunded to
/// her mailbox and credited at her next sync. Before, it stayed in the
/// float for ever.
#[test]
fn a_request_paid_twice_refunds_the_second_payer() {
    let bo = backoffice();
    bo.deposit("d", "alice", 10_000).unwrap();
    bo.deposit("d2", "carol", 10_000).unwrap();
    let mut a = onboard(&bo, "alice-twice", PHONE, "alice");
    let mut b = onboard(&bo, "bob-twice", PHONE, "bob");
    let mut c = onboard(&bo, "carol-twice", PHONE, "carol");
    with_agent(&bo, &mut a, |x| x.load(1_000)).unwrap();
    with_agent(&bo, &mut c, |x| x.load(1_000)).unwrap();
    let request = b.link.create_request(Amount(300)).unwrap();
    let from_alice = a.link.pay(&request).unwrap();
    let from_carol = c.link.pay(&request).unwrap();
    let receipt = b.link.receive(&from_alice).unwrap();
    a.link.ack(&receipt).unwrap();
    assert!(
        b.link.receive(&from_carol).is_err(),
        "one payment per request"
    );
    assert_eq!(c.link.status().unwrap().balance, Amount(700));
    // Carol uploads her unacknowledged payment; bob reports his request.
    with_agent(&bo, &mut c, |x| x.sync()).unwrap();
    let r = with_agent(&bo, &mut b, |x| x.sync()).unwrap();
    assert_eq!(r.recovered, Amount::ZERO, "bob was paid once, by alice");
    // Carol's next sync brings the refund.
    let r = with_agent(&bo, &mut c, |x| x.sync()).unwrap();
    assert_eq!(r.recovered, Amount(300));
    assert_eq!(c.link.status().unwrap().balance, Amount(1_000));
    assert_eq!(b.link.status().unwrap().balance, Amount(300));
    assert_eq!(a.link.status().unwrap().balance, Amount(700));
    // Nothing more on further syncs of anyone.
    for d in [&mut a, &mut b, &mut c] {
        let r = with_agent(&bo, d, |x| x.sync()).unwrap();
        assert_eq!(r.recovered, Amount::ZERO);
    }
    invariant_holds(&bo, &mut [&mut a, &mut b, &mut c]);
    assert!(bo.double_spends().unwrap().is_empty());
}

/// The payee's reports are kept in its SE until a grant answers the
/// upload that carried them: a wallet that closed its requests and died
/// before the sync reached the back office used to lose the closures, and
/// with them the recovery of an interrupted payment.
#[test]
fn request_reports_survive_a_sync_that_never_arrived() {
    let bo = backoffice();
    bo.deposit("d", "alice", 10_000).unwrap();
    let mut a = onboard(&bo, "alice-rep", PHONE, "alice");
    let mut b = onboard(&bo, "bob-rep", PHONE, "bob");
    with_agent(&bo, &mut a, |x| x.load(1_000)).unwrap();
    let request = b.link.create_request(Amount(300)).unwrap();
    let _lost_package = a.link.pay(&request).unwrap();
    // Bob's wallet starts a sync: the SE closes the request and hands out
    // its report; the wallet dies before sending anything.
    let reports = b.link.report_requests().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].received, None);
    // Alice uploads her payment; bob's next sync carries the report again.
    with_agent(&bo, &mut a, |x| x.sync()).unwrap();
    let r = with_agent(&bo, &mut b, |x| x.sync()).unwrap();
    assert_eq!(r.closed_requests, 1, "the report was kept and sent");
    assert_eq!(r.recovered, Amount(300));
    assert_eq!(b.link.status().unwrap().balance, Amount(300));
    // Acknowledged by the grant: not sent again.
    let r = with_agent(&bo, &mut b, |x| x.sync()).unwrap();
    assert_eq!((r.closed_requests, r.recovered), (0, Amount::ZERO));
    invariant_holds(&bo, &mut [&mut a, &mut b]);
}

/// A load the SE can no longer hold when its answer arrives (payments
/// received offline in between filled the holding limit): the SE refuses
/// the Issue, records it as never to be credited and signs its
/// cancellation in one commit; the DCP returns the value to the account.
/// Before, the pending load blocked every online command and the value
/// sat in the float.
#[test]
fn an_issue_the_se_refuses_is_cancelled_back_to_the_account() {
    let bo = backoffice();
    bo.deposit("d", "alice", 50_000).unwrap();
    bo.deposit("d2", "bob", 50_000).unwrap();
    // IoT tier: holds 20 000, pays up to 10 000, no cardholder.
    let mut a = onboard(&bo, "alice-cancel", IOT, "alice");
    let mut b = onboard(&bo, "bob-cancel", IOT, "bob");
    with_agent(&bo, &mut b, |x| x.load(10_000)).unwrap();
    let mut slot = Slot::default();
    // Alice loads 15 000; the reply is lost.
    assert!(run(&bo, &mut a, &mut slot, 1, |x| x.load(15_000)).is_err());
    assert_eq!(bo.account_balance("alice").unwrap(), 35_000);
    // Meanwhile bob pays her 10 000 offline: 25 000 would exceed 20 000.
    tally_wallet::pay_offline(&mut b.link, &mut a.link, Amount(10_000)).unwrap();
    let load = slot.0.clone().expect("the signed load is kept");
    let done = run(&bo, &mut a, &mut slot, 0, |x| x.resume()).unwrap();
    assert_eq!(done, vec![Finished::Cancelled { amount: 15_000 }]);
    assert!(slot.0.is_none(), "nothing pending");
    assert_eq!(bo.account_balance("alice").unwrap(), 50_000, "load undone");
    assert_eq!(a.link.status().unwrap().balance, Amount(10_000));
    invariant_holds(&bo, &mut [&mut a, &mut b]);
    // The stored answer again (the same load bytes): the SE never
    // credits that Issue now, and a second cancellation credits nothing.
    let answer =
        tally_core::dcp::DeviceResponse::from_cbor(&bo.handle_device(&load).unwrap()).unwrap();
    let tally_core::dcp::DeviceResponse::Issued(issue) = answer else {
        panic!("expected the stored Issue");
    };
    let e = a.link.import_issue(&issue).unwrap_err();
    assert!(e.is(&tally_se::SeError::IssueCancelled), "{e:?}");
    let again = a
        .link
        .build_request(&tally_se::RequestParams::CancelIssue {
            issue: Box::new(issue),
        })
        .unwrap();
    bo.handle_device(&again.to_cbor()).unwrap();
    assert_eq!(
        bo.account_balance("alice").unwrap(),
        50_000,
        "credited once"
    );
    assert_eq!(a.link.status().unwrap().balance, Amount(10_000));
    invariant_holds(&bo, &mut [&mut a, &mut b]);
}

/// An SE holds up to `OUTGOING_MAX` (128) unacknowledged payments, and a
/// sync grant clears them all, so one sync upload must carry every one.
/// The upload's bound was 64: from the 65th unacknowledged payment on,
/// every sync was refused (101) for good, and a payment whose package
/// never reached its payee could not be recovered.
#[test]
fn a_sync_carries_every_unacknowledged_payment_the_se_can_hold() {
    const PAYMENTS: usize = 66;
    let bo = backoffice();
    bo.deposit("d", "alice", 100_000).unwrap();
    let mut a = onboard(&bo, "alice-many", PHONE, "alice");
    let mut b = onboard(&bo, "bob-many", PHONE, "bob");
    with_agent(&bo, &mut a, |x| x.load(5_000)).unwrap();
    for i in 1..=PAYMENTS {
        let request = b.link.create_request(Amount(1)).unwrap();
        let package = a.link.pay(&request).unwrap();
        // Bob takes every package but hands no receipt back; the last
        // package never reaches him.
        if i < PAYMENTS {
            b.link.receive(&package).unwrap();
        }
        if i % 5 == 0 {
            // Keeps the change token's history short (a renewal is not a
            // sync: the payments stay unacknowledged in alice's SE).
            with_agent(&bo, &mut a, |x| x.renew()).unwrap();
            with_agent(&bo, &mut b, |x| x.sync()).unwrap();
        }
    }
    assert_eq!(a.link.status().unwrap().unacked as usize, PAYMENTS);
    let r = with_agent(&bo, &mut a, |x| x.sync()).unwrap();
    assert_eq!(r.uploaded, PAYMENTS);
    assert_eq!(a.link.status().unwrap().unacked, 0);
    // Bob reports the request the lost package answered; the payment is
    // recovered to him.
    let r = with_agent(&bo, &mut b, |x| x.sync()).unwrap();
    assert_eq!(r.recovered, Amount(1));
    assert_eq!(b.link.status().unwrap().balance, Amount(PAYMENTS as u64));
    assert_eq!(
        a.link.status().unwrap().balance,
        Amount(5_000 - PAYMENTS as u64)
    );
    invariant_holds(&bo, &mut [&mut a, &mut b]);
}
