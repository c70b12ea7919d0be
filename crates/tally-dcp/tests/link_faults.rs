//! The link between a DCP and the central bank drops, duplicates and
//! delays messages (issue 11): every operation that crosses it — a load,
//! an interbank payment, a renewal, an unload, a sync delivering a
//! recovered token — completes exactly once after the link returns,
//! whatever was lost: nothing is lost or doubled, each DCP's book still
//! equals its settlement account, and the central invariant holds.
//!
//! The faults are injected at the `Central` interface, where the DCP sees
//! the network: a dropped request never reaches the central bank; a
//! dropped reply comes after the central bank executed and committed; a
//! duplicate executes the request twice. The same faults over a real TCP
//! link between processes are in tests/e2e_parties.rs.

mod support;

use std::sync::{Arc, Mutex};

use support::*;
use tally_core::dcp::Registration;
use tally_core::policy::device_class::{CARD, PHONE};
use tally_core::{Amount, Hash32, SecretKey, Suite};
use tally_core::{Policy, PublicKey, RevocationList};
use tally_dcp::central::InboxEntry;
use tally_dcp::{
    Backoffice, BackofficeError, Central, CentralBank, CentralKeys, CentralRequest, CentralTrust,
    MakerCertificate, NodeKeys, SoftwareSigner, development_escrow_key,
};
use tally_directory::SeEntry;
use tally_store::Store;
use tally_wallet::agent::{Agent, Backend, BackendError, PendingStore, SealedKind, manufacture};
use tally_wallet::testkit::blank_card;
use tally_wallet::{ApduLink, SeLink, pay_offline};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The request never reaches the central bank.
    DropRequest,
    /// The central bank executes and commits; the reply is lost.
    DropReply,
    /// The request arrives twice.
    Duplicate,
    /// The request arrives late.
    Delay,
}

/// The DCP's view of the network to the central bank.
struct Link {
    inner: Arc<CentralBank>,
    /// What happens to the next calls that move value, in order (None:
    /// delivered normally).
    faults: Mutex<Vec<Option<Fault>>>,
    /// Calls that reached the central bank.
    delivered: Mutex<usize>,
}

fn unanswered() -> BackofficeError {
    BackofficeError::Remote {
        code: tally_codes::CENTRAL_UNAVAILABLE,
        status: 503,
        message: "link down".into(),
    }
}

impl Central for Link {
    fn trust(&self) -> Result<CentralTrust, BackofficeError> {
        self.inner.trust()
    }
    fn device(&self, se_id: &Hash32) -> Result<Option<SeEntry>, BackofficeError> {
        self.inner.device(se_id)
    }
    fn enrol(&self, dcp: u32, maker: &MakerCertificate) -> Result<SeEntry, BackofficeError> {
        self.inner.enrol(dcp, maker)
    }
    fn set_id_digest(&self, dcp: u32, se: &Hash32, d: &Hash32) -> Result<(), BackofficeError> {
        self.inner.set_id_digest(dcp, se, d)
    }
    fn id_digest(&self, dcp: u32, se: &Hash32) -> Result<Option<Hash32>, BackofficeError> {
        self.inner.id_digest(dcp, se)
    }
    fn call(
        &self,
        dcp: u32,
        op: &Hash32,
        reply_key: &Hash32,
        req: &CentralRequest,
    ) -> Result<Vec<u8>, BackofficeError> {
        let fault = {
            let mut f = self.faults.lock().unwrap();
            if f.is_empty() { None } else { f.remove(0) }
        };
        let deliver = || {
            *self.delivered.lock().unwrap() += 1;
            self.inner.call(dcp, op, reply_key, req)
        };
        match fault {
            None => deliver(),
            Some(Fault::DropRequest) => Err(unanswered()),
            Some(Fault::DropReply) => {
                deliver()?;
                Err(unanswered())
            }
            Some(Fault::Duplicate) => {
                let first = deliver();
                let second = deliver();
                assert_eq!(first, second, "a duplicate gets the same answer");
                second
            }
            Some(Fault::Delay) => {
                std::thread::sleep(std::time::Duration::from_millis(30));
                deliver()
            }
        }
    }
    fn inbox(&self, dcp: u32) -> Result<Vec<InboxEntry>, BackofficeError> {
        self.inner.inbox(dcp)
    }
    fn ack_inbox(&self, dcp: u32, ops: &[Hash32]) -> Result<(), BackofficeError> {
        self.inner.ack_inbox(dcp, ops)
    }
    fn settlement_balance(&self, dcp: u32) -> Result<i64, BackofficeError> {
        self.inner.settlement_balance(dcp)
    }
}

/// The in-process backend with the statuses HTTP would carry (a 503 is
/// retryable: the wallet keeps its pending request).
struct Http(Local);

impl Backend for Http {
    fn trust(&mut self) -> Result<(PublicKey, Policy, RevocationList), BackendError> {
        self.0.trust()
    }
    fn register(&mut self, reg: &Registration) -> Result<Hash32, BackendError> {
        self.0.register(reg)
    }
    fn seal(
        &mut self,
        root: &PublicKey,
        kind: SealedKind,
        p: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        self.0.seal(root, kind, p)
    }
    fn device(&mut self, request: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.0.0.handle_device(request).map_err(|e| BackendError {
            status: e.status(),
            code: e.code(),
            message: e.to_string(),
        })
    }
}

#[derive(Default)]
struct Slot(Option<Vec<u8>>);

impl PendingStore for Slot {
    fn get(&mut self) -> Option<Vec<u8>> {
        self.0.clone()
    }
    fn put(&mut self, request: Option<&[u8]>) -> Result<(), BackendError> {
        self.0 = request.map(<[u8]>::to_vec);
        Ok(())
    }
}

struct Party {
    bo: Arc<Backoffice>,
    link: Arc<Link>,
}

struct Device {
    dev: Dev,
    slot: Slot,
}

/// Runs `f` with the next central calls of `p` as `schedule` says; if
/// the operation fails, the link returns and the device resends its
/// pending request (what the CLI does on the next command).
fn with_faults<R>(
    p: &Party,
    d: &mut Device,
    schedule: &[Option<Fault>],
    f: impl FnOnce(&mut Agent<'_>) -> Result<R, tally_wallet::agent::AgentError>,
) {
    let fault = schedule
        .iter()
        .flatten()
        .next()
        .copied()
        .unwrap_or(Fault::Delay);
    p.link.faults.lock().unwrap().extend_from_slice(schedule);
    let mut b = Http(Local(p.bo.clone()));
    let mut a = Agent {
        se: &mut d.dev.link,
        backend: &mut b,
        se_id: d.dev.se_id,
        pending: Some(&mut d.slot),
    };
    let first = f(&mut a);
    assert!(
        p.link.faults.lock().unwrap().is_empty(),
        "every fault was hit"
    );
    if first.is_err() {
        assert!(
            matches!(fault, Fault::DropRequest | Fault::DropReply),
            "{fault:?} failed: {:?}",
            first.err()
        );
        let finished = a.resume().expect("the retry after the link returns");
        assert_eq!(finished.len(), 1, "the pending request was finished");
    }
    assert!(d.slot.0.is_none(), "nothing left pending");
}

fn with_fault<R>(
    p: &Party,
    d: &mut Device,
    fault: Fault,
    f: impl FnOnce(&mut Agent<'_>) -> Result<R, tally_wallet::agent::AgentError>,
) {
    with_faults(p, d, &[Some(fault)], f)
}

fn enrol(bank: &CentralBank, p: &Party, label: &str, class: u8, account: &str) -> Device {
    let mut link = ApduLink::select(blank_card(label.as_bytes()), 4096).unwrap();
    let cert = manufacture(&mut link, class, bank.root_key(), &maker_key(), MAKER).unwrap();
    SeLink::change_pin(&mut link, None, b"4711").unwrap();
    let code = p.bo.enrolment_code(account).unwrap();
    let se_id = Agent::onboard(&mut link, &mut Local(p.bo.clone()), cert, account, &code)
        .unwrap()
        .se_id;
    Device {
        dev: Dev { link, se_id },
        slot: Slot::default(),
    }
}

/// The central bank, DCP 1 (alice's card) and DCP 2 (bob's phone),
/// each DCP behind its own faulty link; 100 000 minted to each DCP,
/// 20 000 deposited for alice and for bob.
fn parties() -> (Arc<CentralBank>, Party, Party, Device, Device) {
    let keys = NodeKeys::development();
    let k2: Arc<tally_dcp::NodeSigner> = Arc::new(SoftwareSigner::new(
        SecretKey::from_seed(Suite::Ed25519, &[0x22; 32]).unwrap(),
    ));
    let bank = Arc::new(
        Backoffice::open_central(
            Store::sqlite_memory().unwrap(),
            Store::sqlite_memory().unwrap(),
            CentralKeys {
                root: keys.root.clone(),
                settlement: keys.settlement.clone(),
                opening: keys.opening.clone(),
            },
            development_escrow_key(),
            None,
            &[(1, keys.dcp.public_key()), (2, k2.public_key())],
        )
        .unwrap(),
    );
    bank.trust_manufacturer(maker_key().public()).unwrap();
    let party = |id: u32, key: Arc<tally_dcp::NodeSigner>| {
        let link = Arc::new(Link {
            inner: bank.clone(),
            faults: Mutex::new(Vec::new()),
            delivered: Mutex::new(0),
        });
        let bo =
            Backoffice::open_dcp(Store::sqlite_memory().unwrap(), id, key, link.clone()).unwrap();
        Party {
            bo: Arc::new(bo),
            link,
        }
    };
    let p1 = party(1, keys.dcp.clone());
    let p2 = party(2, k2);
    bank.mint(1, "m1", 100_000).unwrap();
    bank.mint(2, "m2", 100_000).unwrap();
    p1.bo.deposit("d", "alice", 20_000).unwrap();
    p2.bo.deposit("d", "bob", 20_000).unwrap();
    let alice = enrol(&bank, &p1, "alice-card", CARD, "alice");
    let bob = enrol(&bank, &p2, "bob-phone", PHONE, "bob");
    (bank, p1, p2, alice, bob)
}

fn story(fault: Fault) {
    let (bank, p1, p2, mut alice, mut bob) = parties();
    with_fault(&p1, &mut alice, fault, |a| a.load(5_000));
    with_fault(&p1, &mut alice, fault, |a| {
        a.pay_online("bob@2", 1_000, Some("4711"))
    });
    pay_offline(&mut alice.dev.link, &mut bob.dev.link, Amount(2_000)).unwrap();
    with_fault(&p2, &mut bob, fault, |a| a.renew());
    with_fault(&p2, &mut bob, fault, |a| a.unload(500));
    // An interrupted payment (the package never reaches bob): alice's
    // sync reports it, bob's sync gets it back — the delivery crosses the
    // faulty link too.
    let req = bob.dev.link.create_request(Amount(700)).unwrap();
    let _lost = alice.dev.link.pay(&req).unwrap();
    with_fault(&p1, &mut alice, fault, |a| a.sync());
    // Bob's sync closes the request (its first central call finds the
    // payment alice uploaded), and its second call delivers the
    // recovered token: the fault hits the delivery.
    with_faults(&p2, &mut bob, &[None, Some(fault)], |a| a.sync());

    p2.bo.book_inbox().unwrap();
    assert_eq!(p1.bo.account_balance("alice").unwrap(), 14_000, "{fault:?}");
    assert_eq!(p2.bo.account_balance("bob").unwrap(), 21_500, "{fault:?}");
    assert_eq!(alice.dev.link.status().unwrap().balance, Amount(2_300));
    assert_eq!(bob.dev.link.status().unwrap().balance, Amount(2_200));
    assert_eq!(bank.dcp_balance(1).unwrap(), 100_000 - 5_000 - 1_000);
    assert_eq!(bank.dcp_balance(2).unwrap(), 100_000 + 1_000 + 500);
    for p in [&p1, &p2] {
        let r = p.bo.reconcile().unwrap();
        assert!(r.matches(), "{fault:?}: DCP {}: {r:?}", p.bo.dcp_id());
    }
    let inv = bank.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
    assert_eq!(inv.offline_float, 2_300 + 2_200, "{fault:?}");
    assert!(*p1.link.delivered.lock().unwrap() > 0);
}

/// Runs one command of device `d` at DCP `p`.
fn run<R>(p: &Party, d: &mut Device, f: impl FnOnce(&mut Agent<'_>) -> R) -> R {
    let mut b = Http(Local(p.bo.clone()));
    let mut a = Agent {
        se: &mut d.dev.link,
        backend: &mut b,
        se_id: d.dev.se_id,
        pending: Some(&mut d.slot),
    };
    f(&mut a)
}

/// `d` pays 1 000 to bob@2 online with `fault` on `p`'s next central
/// call: the command fails, its request stays pending on the device.
fn interrupted_payment(p: &Party, d: &mut Device, fault: Fault) {
    p.link.faults.lock().unwrap().push(Some(fault));
    assert!(run(p, d, |a| a.pay_online("bob@2", 1_000, Some("4711"))).is_err());
}

/// A device whose interbank payment was interrupted never comes back: the
/// DCP finishes the debit itself (`resolve_in_flight`), exactly once —
/// for a dropped request the central bank executes it then, for a dropped
/// reply it answers what it executed — and the device's late retry moves
/// nothing again.
fn in_flight_story(fault: Fault) {
    let (bank, p1, p2, mut alice, _bob) = parties();
    interrupted_payment(&p1, &mut alice, fault);
    let r = p1.bo.reconcile().unwrap();
    assert_eq!(r.book.in_flight, 1_000, "{fault:?}: {r:?}");
    assert!(!r.matches());
    // Too recent to be resolved yet: the device may still retry.
    assert_eq!(
        p1.bo.resolve_in_flight(3_600).unwrap(),
        tally_dcp::InFlightReport::default()
    );
    let report = p1.bo.resolve_in_flight(0).unwrap();
    assert_eq!(
        report,
        tally_dcp::InFlightReport {
            settled: 1,
            returned: 0,
            pending: 0
        },
        "{fault:?}"
    );
    let check = |what: &str| {
        p2.bo.book_inbox().unwrap();
        assert_eq!(
            p1.bo.account_balance("alice").unwrap(),
            19_000,
            "{fault:?} {what}"
        );
        assert_eq!(
            p2.bo.account_balance("bob").unwrap(),
            21_000,
            "{fault:?} {what}"
        );
        assert_eq!(bank.dcp_balance(1).unwrap(), 99_000, "{fault:?} {what}");
        assert_eq!(bank.dcp_balance(2).unwrap(), 101_000, "{fault:?} {what}");
        for p in [&p1, &p2] {
            let r = p.bo.reconcile().unwrap();
            assert!(
                r.matches(),
                "{fault:?} {what}: DCP {}: {r:?}",
                p.bo.dcp_id()
            );
        }
        assert!(bank.invariant().unwrap().holds());
    };
    check("after the DCP finished it");
    // Nothing left for a second round.
    assert_eq!(
        p1.bo.resolve_in_flight(0).unwrap(),
        tally_dcp::InFlightReport::default()
    );
    // The device comes back after all: its retry gets the stored answer.
    let finished = run(&p1, &mut alice, |a| a.resume()).expect("the late retry");
    assert_eq!(finished.len(), 1);
    check("after the device's late retry");
}

#[test]
fn a_debit_whose_request_was_dropped_is_finished_by_the_dcp_when_the_device_never_retries() {
    in_flight_story(Fault::DropRequest);
}

#[test]
fn a_debit_whose_reply_was_dropped_is_finished_by_the_dcp_when_the_device_never_retries() {
    in_flight_story(Fault::DropReply);
}

/// The central bank refuses the call when the DCP sends it again (here:
/// the payer DCP's settlement account was emptied meanwhile): the amount
/// goes back to the customer, once.
#[test]
fn a_debit_the_central_bank_refuses_on_resolution_goes_back_to_the_customer() {
    let (bank, p1, _p2, mut alice, _bob) = parties();
    interrupted_payment(&p1, &mut alice, Fault::DropRequest);
    // DCP 1's settlement account cannot cover it any more.
    let drain = CentralRequest::Pay {
        to_dcp: 2,
        to_account: "carol".into(),
        amount: 100_000,
    };
    bank.call(1, &Hash32([0x5a; 32]), &Hash32([0x5b; 32]), &drain)
        .unwrap();
    let report = p1.bo.resolve_in_flight(0).unwrap();
    assert_eq!(
        report,
        tally_dcp::InFlightReport {
            settled: 0,
            returned: 1,
            pending: 0
        }
    );
    assert_eq!(p1.bo.account_balance("alice").unwrap(), 20_000);
    assert_eq!(p1.bo.reconcile().unwrap().book.in_flight, 0);
    assert!(bank.invariant().unwrap().holds());
}

/// `d` loads 5 000 with `fault` on `p`'s next central call: the command
/// fails, its request stays pending on the device.
fn interrupted_load(p: &Party, d: &mut Device, fault: Fault) {
    p.link.faults.lock().unwrap().push(Some(fault));
    assert!(run(p, d, |a| a.load(5_000)).is_err());
}

/// DCP 1's books and the central bank's after a load of 5 000 by alice
/// that is `loaded` (in her SE) or not.
fn assert_books(bank: &CentralBank, p1: &Party, loaded: bool, what: &str) {
    let (account, float) = if loaded { (15_000, 5_000) } else { (20_000, 0) };
    assert_eq!(p1.bo.account_balance("alice").unwrap(), account, "{what}");
    assert_eq!(bank.dcp_balance(1).unwrap(), 100_000 - float, "{what}");
    let r = p1.bo.reconcile().unwrap();
    assert!(r.matches(), "{what}: {r:?}");
    let inv = bank.invariant().unwrap();
    assert!(inv.holds(), "{what}: {inv:?}");
    assert_eq!(inv.offline_float, float, "{what}");
}

/// A load the DCP finished itself (its device never retried) leaves an
/// Issue nobody holds: after the grace period the DCP cancels it at the
/// central bank and returns the amount to the customer, once — also when
/// the cancellation's answer is lost on the way — and the device's late
/// retry is refused (410, code 87) instead of handing out the cancelled
/// Issue; nothing moves again.
fn uncollected_story(fault: Fault) {
    let (bank, p1, _p2, mut alice, _bob) = parties();
    interrupted_load(&p1, &mut alice, fault);
    assert_eq!(p1.bo.resolve_in_flight(0).unwrap().settled, 1, "{fault:?}");
    // The load is settled: the amount is in the float, its Issue waits.
    assert_eq!(p1.bo.account_balance("alice").unwrap(), 15_000);
    assert_eq!(bank.invariant().unwrap().offline_float, 5_000);
    // Within the grace period nothing happens.
    assert_eq!(
        p1.bo.reclaim_uncollected(3_600).unwrap(),
        tally_dcp::ReclaimReport::default()
    );
    // The cancellation's answer is lost: the reclaim is pending, and the
    // device's retry is already refused.
    p1.link.faults.lock().unwrap().push(Some(Fault::DropReply));
    assert_eq!(
        p1.bo.reclaim_uncollected(0).unwrap(),
        tally_dcp::ReclaimReport {
            reclaimed: 0,
            delivered: 0,
            pending: 1
        },
        "{fault:?}"
    );
    let late = run(&p1, &mut alice, |a| a.resume());
    match late {
        Err(tally_wallet::agent::AgentError::Backend(e)) => {
            assert_eq!(e.code, tally_codes::DCP_LOAD_RECLAIMED, "{e:?}");
            assert_eq!(e.status, 410, "{e:?}");
        }
        other => panic!("{fault:?}: the late retry was not refused: {other:?}"),
    }
    assert_eq!(alice.dev.link.status().unwrap().balance, Amount(0));
    // The next round finishes it.
    assert_eq!(
        p1.bo.reclaim_uncollected(0).unwrap(),
        tally_dcp::ReclaimReport {
            reclaimed: 1,
            delivered: 0,
            pending: 0
        },
        "{fault:?}"
    );
    assert_books(&bank, &p1, false, "after the reclaim");
    // Nothing left; a second round and another late retry move nothing.
    assert_eq!(
        p1.bo.reclaim_uncollected(0).unwrap(),
        tally_dcp::ReclaimReport::default()
    );
    let again = run(&p1, &mut alice, |a| a.resume());
    assert!(
        again.is_ok_and(|f| f.is_empty()),
        "nothing pending any more"
    );
    assert_books(&bank, &p1, false, "after a second round");
    // The device can load again (a new request).
    run(&p1, &mut alice, |a| a.load(5_000)).expect("a new load");
    assert_books(&bank, &p1, true, "after a new load");
    assert_eq!(alice.dev.link.status().unwrap().balance, Amount(5_000));
}

#[test]
fn an_uncollected_load_whose_request_was_dropped_goes_back_to_the_customer() {
    uncollected_story(Fault::DropRequest);
}

#[test]
fn an_uncollected_load_whose_reply_was_dropped_goes_back_to_the_customer() {
    uncollected_story(Fault::DropReply);
}

/// The device comes back within the grace period: its retry gets the
/// Issue, and the load is never reclaimed.
#[test]
fn a_load_collected_within_the_grace_period_is_not_reclaimed() {
    let (bank, p1, _p2, mut alice, _bob) = parties();
    interrupted_load(&p1, &mut alice, Fault::DropReply);
    assert_eq!(p1.bo.resolve_in_flight(0).unwrap().settled, 1);
    let finished = run(&p1, &mut alice, |a| a.resume()).expect("the late retry");
    assert_eq!(finished.len(), 1);
    assert_eq!(alice.dev.link.status().unwrap().balance, Amount(5_000));
    assert_eq!(
        p1.bo.reclaim_uncollected(0).unwrap(),
        tally_dcp::ReclaimReport::default(),
        "a collected load is not due"
    );
    assert_books(&bank, &p1, true, "collected");
}

/// A stored call that does not decode (a poison row) is left in flight
/// and does not stop the round: the other debit is finished.
#[test]
fn an_undecodable_stored_call_does_not_block_the_others() {
    let (_bank, p1, _p2, mut alice, _bob) = parties();
    p1.bo
        .dcp_store()
        .transact(|tx| {
            use tally_dcp::db::{DcpDb, InFlight};
            tx.in_flight_insert(&InFlight {
                idem: "online:poison:0".into(),
                kind: "online".into(),
                rid: Hash32([0x99; 32]),
                attempt: 0,
                account: "user:alice".into(),
                amount: 1,
                reply_key: Hash32([0x98; 32]),
                request: vec![0xff, 0x00],
                since: 0,
            })
        })
        .unwrap();
    interrupted_payment(&p1, &mut alice, Fault::DropReply);
    let report = p1.bo.resolve_in_flight(0).unwrap();
    assert_eq!(
        report,
        tally_dcp::InFlightReport {
            settled: 1,
            returned: 0,
            pending: 1
        }
    );
    assert_eq!(p1.bo.reconcile().unwrap().book.in_flight, 0);
}

#[test]
fn a_dropped_request_is_executed_once_when_the_link_returns() {
    story(Fault::DropRequest);
}

#[test]
fn a_dropped_reply_is_not_executed_again() {
    story(Fault::DropReply);
}

#[test]
fn a_duplicated_request_is_executed_once() {
    story(Fault::Duplicate);
}

#[test]
fn a_delayed_request_completes() {
    story(Fault::Delay);
}
