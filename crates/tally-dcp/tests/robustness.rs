//! Back-office robustness against hostile devices (issue 9, items 6–7),
//! each written as the attacker would do it: an upload that once stopped
//! the MDS for good, a failed request replayed later, revocations that
//! name keys the opening did not name or too many of them.

mod support;

use std::sync::Arc;

use support::*;
use tally_core::codec::Cbor;
use tally_core::dcp::{DeviceOp, SyncUpload, attachment_digest};
use tally_core::package::sign_transfer;
use tally_core::policy::device_class::PHONE;
use tally_core::testkit::key;
use tally_core::{Amount, Hash32, OutPoint, Output, Package, Suite};
use tally_dcp::Backoffice;
use tally_mds::AlertKind;
use tally_se::RequestParams;
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

/// A cloned SE spends one token twice; both payees renew. Returns the
/// cheater's SE id and the two payees'.
fn double_spend(bo: &Arc<Backoffice>, tag: &str) -> (Hash32, Hash32, Hash32) {
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
    (m.se_id, p1.se_id, p2.se_id)
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
        reports: Vec::new(),
    };
    let sealed = Local(bo.clone())
        .seal(&bo.root_key(), SealedKind::SyncUpload, &upload.to_cbor())
        .unwrap();
    let req = build_request(
        &mut mallory,
        RequestParams::Sync {
            sealed_digest: attachment_digest(&sealed),
        },
        sealed,
    );
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

fn id_digest(bo: &Backoffice, se_id: &Hash32) -> Hash32 {
    bo.store()
        .transact(|tx| tally_directory::Directory::id_digest(tx, se_id))
        .unwrap()
        .unwrap()
}

fn revocation_state(bo: &Backoffice) -> (Vec<tally_directory::SeStatus>, Vec<Hash32>) {
    (
        bo.devices().unwrap().iter().map(|d| d.status).collect(),
        bo.revocations().unwrap().revoked,
    )
}

#[test]
fn revocation_names_only_keys_whose_escrow_opened_to_that_identity() {
    let bo = backoffice();
    bo.mint("m", 1_000_000).unwrap();
    let (mallory, _p1, p2) = double_spend(&bo, "rv");
    let offender = bo
        .alerts()
        .unwrap()
        .iter()
        .find(|a| a.kind == AlertKind::DoubleSpend)
        .and_then(|a| a.offender)
        .unwrap();
    assert!(bo.escrow_of(&offender).unwrap().is_some());
    let before = revocation_state(&bo);
    let not_opened = |e: tally_dcp::BackofficeError, k: Hash32| {
        assert_eq!(e, tally_dcp::BackofficeError::RevocationKeyNotOpened(k));
        assert_eq!(e.code(), 68);
        assert_eq!(e.status(), 403);
        assert_eq!(revocation_state(&bo), before, "nothing changed");
    };
    // Mallory's pseudonym under an honest payee's identity: the operator
    // would revoke the honest SE and name a pseudonym it never opened.
    let e = bo
        .revoke_opened(&id_digest(&bo, &p2), &[offender], "framed", None)
        .unwrap_err();
    not_opened(e, offender);
    // A key with no settled certificate, next to the right one.
    let stranger = Hash32([0x5a; 32]);
    let e = bo
        .revoke_opened(&id_digest(&bo, &mallory), &[offender, stranger], "r", None)
        .unwrap_err();
    not_opened(e, stranger);
    // Too many keys in one call.
    let many = vec![offender; tally_directory::REVOCATION_KEYS_PER_CALL_MAX + 1];
    let e = bo
        .revoke_opened(&id_digest(&bo, &mallory), &many, "r", None)
        .unwrap_err();
    assert_eq!((e.code(), e.status()), (45, 400));
    assert_eq!(revocation_state(&bo), before, "nothing changed");
    // The pseudonym whose escrow opens to mallory's identity: revoked.
    let (se, list) = bo
        .revoke_opened(&id_digest(&bo, &mallory), &[offender], "double spend", None)
        .unwrap();
    assert_eq!(se, mallory);
    assert_eq!(list.revoked, vec![offender]);
}

#[test]
fn a_failed_request_is_final_even_after_the_account_is_topped_up() {
    let bo = backoffice();
    bo.mint("m", 1_000_000).unwrap();
    bo.deposit("d1", "erin", 100).unwrap();
    bo.deposit("d2", "frank", 1).unwrap();
    let mut erin = onboard(&bo, "erin-final", PHONE, "erin");
    // (Signed through the test hook: the back office's own finality is
    // under test, not the SE's PIN check.)
    let pay = forge_request(
        &mut erin,
        DeviceOp::PayOnline {
            to_account: "frank".into(),
            amount: 5_000,
        },
        Vec::new(),
    );
    let first = bo.handle_device(&pay).unwrap_err();
    assert!(first.is_client_error(), "{first:?}");
    bo.deposit("d3", "erin", 10_000).unwrap();
    let before = (
        bo.invariant().unwrap(),
        bo.account_balance("frank").unwrap(),
    );
    // The same bytes again: the same refusal, nothing executed.
    let again = bo.handle_device(&pay).unwrap_err();
    assert_eq!(
        (again.code(), again.status(), again.to_string()),
        (first.code(), first.status(), first.to_string())
    );
    assert_eq!(
        (
            bo.invariant().unwrap(),
            bo.account_balance("frank").unwrap()
        ),
        before
    );
    assert_eq!(bo.account_balance("erin").unwrap(), 10_100);
}

#[test]
fn a_request_that_failed_on_the_server_side_stays_retryable() {
    let bo = backoffice();
    let mut dev = onboard(&bo, "ivy-retry", PHONE, "ivy");
    let certify = build_request(&mut dev, RequestParams::Certify { n: 1 }, Vec::new());
    // The directory's record of the SE's identity is (transiently) wrong:
    // the DCP refuses to escrow to it, a server-side failure (5xx).
    let digest = id_digest(&bo, &dev.se_id);
    let set = |d: &Hash32| {
        bo.store()
            .transact(|tx| {
                tx.execute(
                    "UPDATE se_escrow_ids SET id_digest = $1 WHERE se_id = $2",
                    &[d.0.to_vec().into(), dev.se_id.0.to_vec().into()],
                )
            })
            .unwrap();
    };
    set(&Hash32([0xee; 32]));
    let e = bo.handle_device(&certify).unwrap_err();
    assert_eq!((e.code(), e.status()), (58, 500), "{e:?}");
    // Repaired: the same bytes now execute (nothing final was stored).
    set(&digest);
    let ok = bo.handle_device(&certify).unwrap();
    assert!(matches!(
        tally_core::dcp::DeviceResponse::from_cbor(&ok).unwrap(),
        tally_core::dcp::DeviceResponse::Certificates(_)
    ));
    assert_eq!(bo.handle_device(&certify).unwrap(), ok);
}
