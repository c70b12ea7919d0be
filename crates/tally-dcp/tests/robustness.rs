//! Back-office robustness against hostile devices (issue 9, items 6–7),
//! each written as the attacker would do it: an upload that once stopped
//! the MDS for good, a failed request replayed later, revocations that
//! name keys the opening did not name or too many of them.

mod support;

use std::sync::Arc;

use support::*;
use tally_core::codec::Cbor;
use tally_core::dcp::{DeviceOp, SyncUpload};
use tally_core::package::sign_transfer;
use tally_core::policy::device_class::PHONE;
use tally_core::testkit::key;
use tally_core::{Amount, Hash32, OutPoint, Output, Package, Suite};
use tally_dcp::Backoffice;
use tally_mds::AlertKind;
use tally_store::Store;
use tally_wallet::agent::{Backend, SealedKind};
use tally_wallet::pay_offline;

fn backoffice() -> Arc<Backoffice> {
    Arc::new(Backoffice::open(Store::sqlite_memory().unwrap()).unwrap())
}

/// A package whose two outputs sum past `u64::MAX`, spending nothing that
/// exists: settlement refuses it and hands it to the MDS as refused.
fn poison_package() -> Vec<u8> {
    let k = key(Suite::Ed25519, b"poison");
    let half = u64::MAX / 2 + 1;
    let transfer = sign_transfer(
        vec![OutPoint {
            record: Hash32([9; 32]),
            index: 0,
        }],
        &[k.public()],
        vec![
            Output {
                value: Amount(half),
                owner: k.public(),
            },
            Output {
                value: Amount(half),
                owner: k.public(),
            },
        ],
        [3; 16],
        1,
        &|_| Some(k.clone()),
    )
    .unwrap();
    Package {
        transfer,
        ancestry: Vec::new(),
        certificates: Vec::new(),
    }
    .to_cbor()
}

/// A cloned SE spends one token twice; both payees renew.
fn double_spend(bo: &Arc<Backoffice>, tag: &str) {
    bo.deposit(&format!("d-{tag}"), &format!("m-{tag}"), 10_000)
        .unwrap();
    let mut m = onboard(bo, &format!("m-{tag}"), PHONE, &format!("m-{tag}"));
    with_agent(bo, &mut m, |a| a.load(1_000)).unwrap();
    let mut clone = clone_dev(&mut m);
    let mut p1 = onboard(bo, &format!("p1-{tag}"), PHONE, &format!("p1-{tag}"));
    let mut p2 = onboard(bo, &format!("p2-{tag}"), PHONE, &format!("p2-{tag}"));
    pay_offline(&mut m.link, &mut p1.link, Amount(1_000)).unwrap();
    pay_offline(&mut clone.link, &mut p2.link, Amount(1_000)).unwrap();
    with_agent(bo, &mut p1, |a| a.renew()).unwrap();
    with_agent(bo, &mut p2, |a| a.renew()).unwrap();
}

fn kinds(bo: &Backoffice) -> Vec<AlertKind> {
    bo.alerts().unwrap().iter().map(|a| a.kind).collect()
}

#[test]
fn upload_whose_outputs_sum_past_u64_max_does_not_stop_the_mds() {
    let bo = backoffice();
    bo.mint("m", 1_000_000).unwrap();
    bo.deposit("d", "mallory", 10_000).unwrap();
    let mut mallory = onboard(&bo, "mallory-poison", PHONE, "mallory");
    let upload = SyncUpload {
        packages: vec![poison_package()],
        closed: Vec::new(),
    };
    let sealed = Local(bo.clone())
        .seal(&bo.root_key(), SealedKind::SyncUpload, &upload.to_cbor())
        .unwrap();
    let req = sign_request(&mut mallory, DeviceOp::Sync { sealed });
    bo.handle_device(&req).unwrap();
    // The poison row was judged (a counterfeit attempt), not left behind.
    assert_eq!(kinds(&bo), vec![AlertKind::CounterfeitRefused]);
    let status = bo.mds_outbox().unwrap();
    assert_eq!(status.pending, 0, "{status:?}");
    assert_eq!(status.set_aside, 0);
    // A double spend after it is still alerted.
    double_spend(&bo, "after-poison");
    assert_eq!(
        kinds(&bo),
        vec![AlertKind::CounterfeitRefused, AlertKind::DoubleSpend]
    );
    assert!(bo.invariant().unwrap().holds());
}

#[test]
fn outbox_row_the_mds_cannot_ingest_is_set_aside_with_an_alert() {
    let bo = backoffice();
    bo.mint("m", 1_000_000).unwrap();
    // A row that sorts first and that no code can ingest.
    bo.store()
        .transact(|tx| {
            tx.execute(
                "INSERT INTO mds_outbox (op_id, body) VALUES ($1, $2)",
                &[vec![0u8; 32].into(), vec![0xffu8, 0x00, 0x13].into()],
            )
        })
        .unwrap();
    bo.pump_mds();
    let alerts = bo.alerts().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.kind, AlertKind::IngestionFailed);
    assert_eq!(a.amount, 101, "the row does not decode");
    assert_eq!(a.offender, None);
    assert!(a.records.is_empty());
    assert_eq!(
        bo.mds_outbox().unwrap(),
        tally_dcp::OutboxStatus {
            pending: 0,
            oldest_age_seconds: 0,
            set_aside: 1
        }
    );
    double_spend(&bo, "after-garbage");
    assert_eq!(
        kinds(&bo),
        vec![AlertKind::IngestionFailed, AlertKind::DoubleSpend]
    );
}
