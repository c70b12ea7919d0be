//! Sync uploads verified in one signature batch and settled in one group
//! (issue 11): a forged upload among honest ones refuses only itself.

use tally_core::cert::PseudonymCertificate;
use tally_core::crypto::Entropy;
use tally_core::dcp::reports_digest;
use tally_core::policy::device_class::PHONE;
use tally_core::sealed::seal;
use tally_core::{Amount, Transfer, VerifyError};

use super::*;
use crate::fuzzing::{CentralFixture, seed_key};
use crate::monitoring::Outbox as _;
use crate::outbox::decode_ingest;

struct CountingEntropy(u64);

impl Entropy for CountingEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            let b = tagged_hash(b"tally/test/sync-group", &[&self.0.to_be_bytes()]);
            self.0 += 1;
            chunk.copy_from_slice(&b.0[..chunk.len()]);
        }
    }
}

const VALUE: u64 = 500;

/// An Issue of DCP 1 (registered by a load) to a fresh certified key, and
/// a package paying it on; with `forge`, the transfer is signed by a key
/// that does not own the Issue's output (V8: a bad signature).
fn loaded_package(f: &CentralFixture, serial: u8, forge: bool) -> (Issue, Package) {
    let owner = seed_key(100 + serial);
    let issue = Issue::try_sign(
        &*f.keys.dcp1,
        u64::from(serial),
        100,
        vec![Output {
            value: Amount(VALUE),
            owner: owner.public(),
        }],
    )
    .expect("DCP 1 signs");
    let op = tagged_hash(b"tally/test/load", &[&[serial]]);
    f.bank
        .call(
            1,
            &op,
            &op,
            &CentralRequest::Load {
                issue: issue.clone(),
                class: PHONE,
            },
        )
        .expect("the Issue is loaded");
    let mut t = Transfer {
        inputs: vec![OutPoint {
            record: issue.id(),
            index: 0,
        }],
        outputs: vec![Output {
            value: Amount(VALUE),
            owner: seed_key(200 + serial).public(),
        }],
        nonce: [serial; 16],
        counter: 1,
        signatures: Vec::new(),
        confidential: None,
        stream: None,
    };
    let signer = if forge { seed_key(99) } else { owner.clone() };
    t.signatures = vec![signer.sign(&t.id().0)];
    let cert =
        PseudonymCertificate::try_sign(&*f.keys.dcp1, owner.public(), 1000, PHONE, 0, vec![])
            .expect("DCP 1 signs");
    let pkg = Package {
        transfer: t,
        ancestry: vec![Record::Issue(issue.clone())],
        certificates: vec![cert],
    };
    (issue, pkg)
}

fn sealed_upload(f: &CentralFixture, packages: &[&Package], n: u64) -> Vec<u8> {
    let upload = SyncUpload {
        packages: packages.iter().map(|p| p.to_cbor()).collect(),
        reports: Vec::new(),
    };
    seal(
        &f.keys.sealing_key(),
        SealedKind::SyncUpload,
        &upload.to_cbor(),
        &mut CountingEntropy(n << 32),
    )
    .expect("seals")
}

fn sync_request(sealed: Vec<u8>, op: &Hash32) -> CentralRequest {
    CentralRequest::Sync {
        sealed,
        reports: reports_digest(&[]),
        mailbox: tagged_hash(b"tally/test/mailbox", &[&op.0]),
        last_sync: 0,
    }
}

fn open_result(f: &CentralFixture, signed: &[u8], op: &Hash32) -> SettlementResult {
    SettlementResult::open(signed, &f.bank.settlement_key().key, &f.bank.root_key(), op)
        .expect("a signed answer for the op")
}

fn spent(f: &CentralFixture, issue: &Issue) -> Option<Hash32> {
    f.bank
        .store()
        .transact(|tx| {
            Settlement::is_spent(
                tx,
                &OutPoint {
                    record: issue.id(),
                    index: 0,
                },
            )
        })
        .expect("reads the registry")
}

/// The outbox row queued for `op`, decoded.
fn outbox_of(f: &CentralFixture, op: &Hash32) -> Vec<IngestRecord> {
    let (_, rows) = f.bank.fetch().expect("reads the outbox");
    let row = rows
        .iter()
        .find(|r| r.op == op.0.to_vec())
        .expect("a row for the request");
    decode_ingest(&row.body).expect("decodes")
}

/// One honest and one forged upload in one verification group and one
/// commit group: the joint signature batch fails, the honest upload is
/// accepted from its own batch and settles; the forged one is refused
/// with V8's code and nothing of it is settled.
#[test]
fn a_forged_upload_in_a_group_refuses_only_its_own_request() {
    let f = CentralFixture::new();
    let (good_issue, good) = loaded_package(&f, 1, false);
    let (good_issue2, good2) = loaded_package(&f, 2, false);
    let (bad_issue, bad) = loaded_package(&f, 3, true);
    let balance_before = f.bank.dcp_balance(1).expect("balance");

    let uploads = [
        sealed_upload(&f, &[&good, &good2], 1),
        sealed_upload(&f, &[&bad], 2),
    ];
    let opened = f.bank.verify_syncs(
        uploads
            .iter()
            .map(|s| SyncOpen {
                sealed: s.clone(),
                reports: reports_digest(&[]),
            })
            .collect(),
    );
    assert_eq!(opened.len(), 2);
    let (good_upload, good_checked) = opened[0].as_ref().expect("opens");
    let (_, bad_checked) = opened[1].as_ref().expect("opens");
    assert_eq!(good_upload.packages.len(), 2);
    assert!(
        good_checked
            .iter()
            .all(|c| matches!(c, Checked::Verified(_))),
        "the honest upload's packages verify despite the forged one in the batch"
    );
    match bad_checked.as_slice() {
        [Checked::Refused(t, code)] => {
            assert_eq!(*code, VerifyError::BadSignature.code());
            assert_eq!(t.id(), bad.transfer.id());
        }
        _ => panic!("the forged package is refused with its code"),
    }

    // Both settle in one transaction.
    let epoch = f.bank.epoch().expect("epoch");
    let ops = [
        tagged_hash(b"tally/test/sync", &[b"good"]),
        tagged_hash(b"tally/test/sync", &[b"bad"]),
    ];
    let jobs: Vec<SyncJob> = opened
        .into_iter()
        .zip(&ops)
        .map(|(o, op)| {
            let (upload, checked) = o.expect("opens");
            SyncJob {
                dcp: 1,
                op: *op,
                reply_key: *op,
                mailbox: tagged_hash(b"tally/test/mailbox", &[&op.0]),
                last_sync: 0,
                upload,
                checked,
            }
        })
        .collect();
    let answers = f.bank.commit_syncs(jobs);
    let good_res = open_result(&f, answers[0].as_ref().expect("answered"), &ops[0]);
    assert_eq!((good_res.settled, good_res.refused), (2, 0));
    assert_eq!(good_res.value, 2 * VALUE);
    let bad_res = open_result(&f, answers[1].as_ref().expect("answered"), &ops[1]);
    assert_eq!((bad_res.settled, bad_res.refused, bad_res.value), (0, 1, 0));

    // The honest tokens are spent by their transfers; the forged
    // upload's token is not, no upload row names its transfer, and the
    // MDS hears of it only as refused with V8's code.
    assert_eq!(spent(&f, &good_issue), Some(good.transfer.id()));
    assert_eq!(spent(&f, &good_issue2), Some(good2.transfer.id()));
    assert_eq!(spent(&f, &bad_issue), None);
    let uploads_known = f
        .bank
        .store()
        .transact(|tx| tx.uploads_known(&[good.transfer.id(), bad.transfer.id()]))
        .expect("reads uploads");
    assert!(uploads_known.contains(&good.transfer.id()));
    assert!(!uploads_known.contains(&bad.transfer.id()));
    let bad_rows = outbox_of(&f, &ops[1]);
    assert_eq!(bad_rows.len(), 1);
    assert_eq!(
        bad_rows[0].verdict,
        Verdict::Refused(VerifyError::BadSignature.code())
    );
    assert_eq!(bad_rows[0].record, Record::Transfer(bad.transfer.clone()));
    // The honest request's row names its records by id as stored; the
    // MDS fetch makes it the row the records in full would be.
    let stored_body = f
        .bank
        .store()
        .transact(|tx| tx.outbox_rows(64))
        .expect("reads the outbox")
        .into_iter()
        .find(|r| r.op == ops[0].0.to_vec())
        .expect("a row for the request")
        .body;
    let slim = crate::outbox::decode_outbox(&stored_body).expect("decodes");
    assert_eq!(slim.len(), 4, "an Issue and a transfer per package");
    assert!(
        slim.iter()
            .all(|e| matches!(e.record, crate::outbox::OutboxRecord::Stored { .. }))
    );
    let mut in_full = Vec::new();
    for p in [&good, &good2] {
        f.bank.ingest_records(p, epoch, None, true, &mut in_full);
    }
    let fetched = f.bank.fetch().expect("fetches").1;
    let fetched = fetched
        .iter()
        .find(|r| r.op == ops[0].0.to_vec())
        .expect("fetched");
    assert_eq!(fetched.body, crate::outbox::encode_ingest(&in_full));
    assert!(stored_body.len() < fetched.body.len() / 2);
    assert!(
        outbox_of(&f, &ops[0])
            .iter()
            .all(|r| r.verdict == Verdict::Verified)
    );
    // The MDS of this process takes every row, none set aside.
    f.bank.pump_mds();
    assert_eq!(f.bank.mds_outbox().expect("backlog").pending, 0);
    assert_eq!(f.bank.mds().set_aside_count().expect("count"), 0);
    assert!(f.bank.mds().indicators().expect("indicators").records >= 5);
    assert_eq!(
        f.bank.dcp_balance(1).expect("balance"),
        balance_before,
        "a renewal-free sync moves nothing in DCP 1's account"
    );
    assert!(f.bank.invariant().expect("invariant").holds());

    // A retry of either request gets the stored answer.
    let again = f.bank.commit_syncs(vec![SyncJob {
        dcp: 1,
        op: ops[1],
        reply_key: ops[1],
        mailbox: tagged_hash(b"tally/test/mailbox", &[&ops[1].0]),
        last_sync: 0,
        upload: SyncUpload {
            packages: Vec::new(),
            reports: Vec::new(),
        },
        checked: Vec::new(),
    }]);
    assert_eq!(
        open_result(&f, again[0].as_ref().expect("answered"), &ops[1]),
        bad_res
    );
}

/// The same through the request path, many requests at once on one
/// verification thread (so they queue and verify in groups): every honest
/// upload settles, every forged one is refused, whatever the grouping.
#[test]
fn concurrent_sync_requests_with_forged_uploads_settle_the_honest_ones() {
    let f = CentralFixture::new();
    let f = CentralFixture {
        bank: f.bank.limit_verification(1),
        keys: f.keys,
    };
    let cases: Vec<(bool, Issue, Package)> = (1..=12u8)
        .map(|n| {
            let forge = n % 4 == 0;
            let (i, p) = loaded_package(&f, n, forge);
            (forge, i, p)
        })
        .collect();
    let requests: Vec<(Hash32, CentralRequest)> = cases
        .iter()
        .enumerate()
        .map(|(n, (_, _, p))| {
            let op = tagged_hash(b"tally/test/sync-many", &[&[n as u8]]);
            (op, sync_request(sealed_upload(&f, &[p], n as u64), &op))
        })
        .collect();
    let answers: Vec<SettlementResult> = std::thread::scope(|s| {
        let handles: Vec<_> = requests
            .iter()
            .map(|(op, req)| {
                let f = &f;
                s.spawn(move || {
                    let signed = f.bank.call(1, op, op, req).expect("answered");
                    open_result(f, &signed, op)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    });
    for ((forge, issue, p), res) in cases.iter().zip(&answers) {
        if *forge {
            assert_eq!((res.settled, res.refused), (0, 1));
            assert_eq!(spent(&f, issue), None);
        } else {
            assert_eq!((res.settled, res.refused), (1, 0));
            assert_eq!(spent(&f, issue), Some(p.transfer.id()));
        }
    }
    assert!(f.bank.invariant().expect("invariant").holds());
}

/// Session 11 (issue 11): a sync request reads no stored answer before its
/// verification; the group's transaction does, and a request refused
/// before it looks one up. So a retried op gets its stored answer even
/// when its upload no longer opens (SPEC §10.6 I2), and the epoch of the
/// group's transaction is the one its records and offline time take.
#[test]
fn a_retried_sync_gets_its_stored_answer_even_when_its_upload_no_longer_opens() {
    let f = CentralFixture::new();
    let (issue, p) = loaded_package(&f, 1, false);
    let op = tagged_hash(b"tally/test/sync-retry", &[b"first"]);
    let epoch = f.bank.advance_epoch().expect("a new epoch");
    let first = CentralRequest::Sync {
        sealed: sealed_upload(&f, &[&p], 1),
        reports: reports_digest(&[]),
        mailbox: tagged_hash(b"tally/test/mailbox", &[&op.0]),
        last_sync: epoch - 1,
    };
    let signed = f.bank.call(1, &op, &op, &first).expect("answered");
    let res = open_result(&f, &signed, &op);
    assert_eq!((res.settled, res.refused), (1, 0));
    assert_eq!(spent(&f, &issue), Some(p.transfer.id()));
    let rows = outbox_of(&f, &op);
    let last = rows.last().expect("the transfer's row");
    assert_eq!(last.epoch, epoch, "the group's epoch");
    assert_eq!(last.offline_epochs, Some(1), "offline since the last sync");

    // The retry's upload is garbage now: the stored answer, nothing new.
    let garbage = CentralRequest::Sync {
        sealed: vec![0x5a; 200],
        reports: reports_digest(&[]),
        mailbox: tagged_hash(b"tally/test/mailbox", &[&op.0]),
        last_sync: 0,
    };
    let again = f
        .bank
        .call(1, &op, &op, &garbage)
        .expect("the stored answer");
    assert_eq!(open_result(&f, &again, &op), res);
    assert_eq!(outbox_of(&f, &op).len(), rows.len(), "nothing queued twice");

    // A fresh op with that upload is refused and changes nothing.
    let fresh = tagged_hash(b"tally/test/sync-retry", &[b"fresh"]);
    let before = f.bank.invariant().expect("invariant");
    assert!(f.bank.call(1, &fresh, &fresh, &garbage).is_err());
    let (_, rows) = f.bank.fetch().expect("reads the outbox");
    assert!(rows.iter().all(|r| r.op != fresh.0.to_vec()));
    assert_eq!(f.bank.invariant().expect("invariant"), before);
    assert!(before.holds());
}
