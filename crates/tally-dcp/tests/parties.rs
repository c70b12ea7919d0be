//! The back office as separate parties, in process (issue 11): one central
//! bank and two DCPs, each DCP with its own store, key, customers and
//! settlement account, reaching the central bank only through the
//! `Central` trait. Devices of both DCPs pay each other offline, renew and
//! unload at their own DCP, pay each other online across DCPs, and a
//! cloned SE is caught; each DCP's book matches its settlement account and
//! the central invariant holds. A DCP acting on another DCP's devices,
//! Issues, mailboxes or inbox is refused and changes nothing.

mod support;

use std::sync::Arc;

use support::*;
use tally_core::crypto::tagged_hash;
use tally_core::policy::device_class::{CARD, PHONE};
use tally_core::{Amount, Epoch, Hash32, Issue, Output, SecretKey, Suite};
use tally_dcp::{
    Backoffice, BackofficeError, Central, CentralBank, CentralKeys, CentralRequest, NodeKeys,
    NodeSigner, SoftwareSigner, development_escrow_key,
};
use tally_directory::DirectoryError;
use tally_store::Store;
use tally_wallet::agent::{Agent, manufacture};
use tally_wallet::testkit::blank_card;
use tally_wallet::{ApduLink, SeLink, pay_offline};

const PIN: &[u8] = b"4711";

struct Scheme {
    bank: Arc<CentralBank>,
    dcp1: Arc<Backoffice>,
    dcp2: Arc<Backoffice>,
    dcp1_key: Arc<NodeSigner>,
}

fn dcp2_key() -> Arc<NodeSigner> {
    Arc::new(SoftwareSigner::new(
        SecretKey::from_seed(Suite::Ed25519, &[0x22; 32]).unwrap(),
    ))
}

fn scheme() -> Scheme {
    let keys = NodeKeys::development();
    let k2 = dcp2_key();
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
    let dcp1 = Arc::new(
        Backoffice::open_dcp(
            Store::sqlite_memory().unwrap(),
            1,
            keys.dcp.clone(),
            bank.clone(),
        )
        .unwrap(),
    );
    let dcp2 = Arc::new(
        Backoffice::open_dcp(Store::sqlite_memory().unwrap(), 2, k2, bank.clone()).unwrap(),
    );
    Scheme {
        bank,
        dcp1,
        dcp2,
        dcp1_key: keys.dcp,
    }
}

/// A device made by the test manufacturer, PIN set, enrolled at `dcp`.
fn enrol(s: &Scheme, dcp: &Arc<Backoffice>, label: &str, class: u8, account: &str) -> Dev {
    let mut link = ApduLink::select(blank_card(label.as_bytes()), 4096).unwrap();
    let cert = manufacture(&mut link, class, s.bank.root_key(), &maker_key(), MAKER).unwrap();
    SeLink::change_pin(&mut link, None, PIN).unwrap();
    let code = dcp.enrolment_code(account).unwrap();
    let se_id = Agent::onboard(&mut link, &mut Local(dcp.clone()), cert, account, &code)
        .unwrap()
        .se_id;
    Dev { link, se_id }
}

/// Every DCP's book equals its settlement account, and the central
/// invariant holds.
fn assert_books(s: &Scheme) {
    for d in [&s.dcp1, &s.dcp2] {
        let r = d.reconcile().unwrap();
        assert!(r.matches(), "DCP {}: {r:?}", d.dcp_id());
    }
    let inv = s.bank.invariant().unwrap();
    assert!(inv.holds(), "{inv:?}");
}

#[test]
fn two_dcps_pay_each_other_offline_and_online() {
    let s = scheme();
    s.bank.mint(1, "m1", 100_000).unwrap();
    s.bank.mint(2, "m2", 100_000).unwrap();
    s.dcp1.deposit("d1", "alice", 20_000).unwrap();
    s.dcp1.deposit("d2", "carol", 5_000).unwrap();
    s.dcp2.deposit("d1", "bob", 20_000).unwrap();
    assert_books(&s);
    // The central bank knows no customer: only the DCPs' accounts.
    assert_eq!(s.bank.dcp_balance(1).unwrap(), 100_000);
    assert_eq!(s.bank.dcp_balance(2).unwrap(), 100_000);

    let mut alice = enrol(&s, &s.dcp1, "alice-card", CARD, "alice");
    let mut bob = enrol(&s, &s.dcp2, "bob-phone", PHONE, "bob");
    // Load at DCP 1 (its settlement account pays the float).
    with_agent(&s.dcp1, &mut alice, |a| a.load(8_000)).unwrap();
    assert_eq!(s.dcp1.account_balance("alice").unwrap(), 12_000);
    assert_eq!(s.bank.dcp_balance(1).unwrap(), 92_000);
    assert_books(&s);

    // Offline: a token of DCP 1 to a device of DCP 2, and back.
    pay_offline(&mut alice.link, &mut bob.link, Amount(3_000)).unwrap();
    pay_offline(&mut bob.link, &mut alice.link, Amount(500)).unwrap();
    // Bob renews and unloads at his own DCP.
    assert_eq!(
        with_agent(&s.dcp2, &mut bob, |a| a.renew()).unwrap(),
        Amount(2_500)
    );
    with_agent(&s.dcp2, &mut bob, |a| a.unload(1_000)).unwrap();
    assert_eq!(s.dcp2.account_balance("bob").unwrap(), 21_000);
    assert_eq!(s.bank.dcp_balance(2).unwrap(), 101_000);
    assert_books(&s);

    // Online across DCPs: through the central ledger, into bob's account
    // at DCP 2 (booked from its inbox).
    let left = with_agent(&s.dcp1, &mut alice, |a| {
        a.pay_online("bob@2", 2_000, Some("4711"))
    })
    .unwrap();
    assert_eq!(left, 10_000);
    assert_eq!(s.dcp2.book_inbox().unwrap(), 1);
    assert_eq!(s.dcp2.account_balance("bob").unwrap(), 23_000);
    assert_eq!(s.bank.dcp_balance(1).unwrap(), 90_000);
    assert_eq!(s.bank.dcp_balance(2).unwrap(), 103_000);
    // Within DCP 1: its own book; the central bank sees nothing.
    with_agent(&s.dcp1, &mut alice, |a| {
        a.pay_online("carol", 1_000, Some("4711"))
    })
    .unwrap();
    assert_eq!(s.dcp1.account_balance("carol").unwrap(), 6_000);
    assert_eq!(s.bank.dcp_balance(1).unwrap(), 90_000);
    // To an account DCP 2 does not have: booked to its suspense account,
    // never lost.
    with_agent(&s.dcp1, &mut alice, |a| {
        a.pay_online("nobody@2", 100, Some("4711"))
    })
    .unwrap();
    s.dcp2.book_inbox().unwrap();
    assert_books(&s);
    // To a DCP that does not exist: refused, nothing moved.
    let before = s.dcp1.account_balance("alice").unwrap();
    let e = with_agent(&s.dcp1, &mut alice, |a| {
        a.pay_online("bob@9", 100, Some("4711"))
    })
    .unwrap_err();
    assert!(format!("{e:?}").contains("1300"), "{e:?}");
    assert_eq!(s.dcp1.account_balance("alice").unwrap(), before);
    assert_books(&s);

    // A cloned card of DCP 1 pays a customer of each DCP: caught.
    let mut clone = clone_dev(&mut alice);
    let mut carol = enrol(&s, &s.dcp1, "carol-phone", PHONE, "carol");
    pay_offline(&mut alice.link, &mut carol.link, Amount(1_000)).unwrap();
    pay_offline(&mut clone.link, &mut bob.link, Amount(1_000)).unwrap();
    with_agent(&s.dcp1, &mut carol, |a| a.renew()).unwrap();
    with_agent(&s.dcp2, &mut bob, |a| a.renew()).unwrap();
    assert_eq!(s.bank.double_spends().unwrap().len(), 1);
    assert_books(&s);
}

#[test]
fn a_dcp_cannot_act_for_another_dcp() {
    let s = scheme();
    s.bank.mint(1, "m1", 50_000).unwrap();
    s.bank.mint(2, "m2", 50_000).unwrap();
    s.dcp1.deposit("d1", "alice", 20_000).unwrap();
    let mut alice = enrol(&s, &s.dcp1, "alice-card", CARD, "alice");
    let issue = with_agent(&s.dcp1, &mut alice, |a| a.load(5_000)).unwrap();
    let before = (
        s.bank.dcp_balance(1).unwrap(),
        s.bank.dcp_balance(2).unwrap(),
        s.bank.invariant().unwrap(),
    );
    let c: &dyn Central = &*s.bank;
    let op = |n: u8| tagged_hash(b"test/op", &[&[n]]);

    // Another DCP's SE: no escrow digest to read or set, no re-enrolment.
    assert_eq!(
        c.id_digest(2, &alice.se_id).unwrap_err(),
        BackofficeError::UnknownDevice
    );
    assert_eq!(
        c.set_id_digest(2, &alice.se_id, &Hash32([7; 32]))
            .unwrap_err(),
        BackofficeError::UnknownDevice
    );
    // An Issue signed by DCP 1, loaded against DCP 2's account: refused
    // (a DCP cannot spend another's money or issue in its name).
    let foreign = Issue::try_sign(
        &*s.dcp1_key,
        99,
        100 as Epoch,
        vec![Output {
            value: Amount(1_000),
            owner: issue.outputs[0].owner,
        }],
    )
    .unwrap();
    assert_eq!(
        c.call(
            2,
            &op(1),
            &op(2),
            &CentralRequest::Load {
                issue: foreign,
                class: CARD
            }
        )
        .unwrap_err(),
        BackofficeError::ForeignIssue
    );
    // DCP 2 cancelling DCP 1's Issue (to be credited its value): refused.
    assert_eq!(
        c.call(2, &op(3), &op(4), &CentralRequest::Cancel { issue })
            .unwrap_err(),
        BackofficeError::ForeignIssue
    );
    // A party the policy does not list.
    assert_eq!(
        c.call(
            9,
            &op(5),
            &op(6),
            &CentralRequest::Pay {
                to_dcp: 1,
                to_account: "alice".into(),
                amount: 1
            }
        )
        .unwrap_err(),
        BackofficeError::UnknownDcp
    );
    assert_eq!(c.inbox(9).unwrap_err(), BackofficeError::UnknownDcp);
    // A DCP 1 payment to DCP 2 waits in DCP 2's inbox; DCP 1 cannot
    // acknowledge it away.
    s.dcp2.book_inbox().unwrap();
    with_agent(&s.dcp1, &mut alice, |a| {
        a.pay_online("bob@2", 700, Some("4711"))
    })
    .unwrap();
    let waiting = c.inbox(2).unwrap();
    assert_eq!(waiting.len(), 1);
    c.ack_inbox(1, &[waiting[0].op]).unwrap();
    assert_eq!(c.inbox(2).unwrap(), waiting);
    let mailbox = Hash32([5; 32]);
    assert!(
        c.call(
            2,
            &op(7),
            &op(8),
            &CentralRequest::Deliver {
                mailbox,
                issues: vec![]
            }
        )
        .is_ok()
    );
    // An empty delivery delivers nothing; one naming a transfer that
    // waits in no mailbox of DCP 2 is refused.
    let fake = Issue::try_sign(
        &*dcp2_key(),
        1,
        100,
        vec![Output {
            value: Amount(700),
            owner: s.dcp1.dcp_key(),
        }],
    )
    .unwrap();
    assert_eq!(
        c.call(
            2,
            &op(9),
            &op(10),
            &CentralRequest::Deliver {
                mailbox,
                issues: vec![(Hash32([1; 32]), fake)]
            }
        )
        .unwrap_err(),
        BackofficeError::NotDeliverable
    );
    // Re-enrolling DCP 1's SE at DCP 2: the directory refuses.
    let mut link = ApduLink::select(blank_card(b"alice-card"), 4096).unwrap();
    let cert = manufacture(&mut link, CARD, s.bank.root_key(), &maker_key(), MAKER).unwrap();
    assert_eq!(
        c.enrol(2, &cert).unwrap_err(),
        BackofficeError::Directory(DirectoryError::Conflict)
    );
    // Nothing moved but the one payment DCP 1 made.
    assert_eq!(s.bank.dcp_balance(1).unwrap(), before.0 - 700);
    assert_eq!(s.bank.dcp_balance(2).unwrap(), before.1 + 700);
    assert_eq!(
        s.bank.invariant().unwrap().offline_float,
        before.2.offline_float
    );
    s.dcp2.book_inbox().unwrap();
    assert_books(&s);
}
