//! Hostile amounts never stop the MDS (issue 9, item 6): a refused record
//! whose outputs sum past `u64::MAX` is ingested as a counterfeit attempt,
//! a verified one with amounts the MDS cannot hold is refused with a typed
//! error and changes nothing, a batch set aside raises an alert that names
//! no device, and detection goes on after each.

use tally_core::package::sign_transfer;
use tally_core::testkit::{Scheme, key};
use tally_core::{Amount, Hash32, OutPoint, Output, Record, SecretKey, Suite, Transfer};
use tally_mds::{AlertKind, IngestRecord, Mds, MdsConfig, MdsError, Severity, Verdict};
use tally_store::Store;

fn sk(label: &str) -> SecretKey {
    key(Suite::Ed25519, label.as_bytes())
}

fn mds(scheme: &Scheme) -> Mds {
    let dcp = scheme.dcp.public().id();
    Mds::open(
        Store::sqlite_memory().unwrap(),
        MdsConfig::new(vec![dcp], vec![dcp], 10_000),
    )
    .unwrap()
}

fn transfer(from: &SecretKey, input: OutPoint, outs: &[(u64, &SecretKey)], n: u8) -> Transfer {
    let k = from.clone();
    sign_transfer(
        vec![input],
        &[from.public()],
        outs.iter()
            .map(|(v, o)| Output {
                value: Amount(*v),
                owner: o.public(),
            })
            .collect(),
        [n; 16],
        u64::from(n),
        &|_| Some(k.clone()),
    )
    .unwrap()
}

fn fund(scheme: &mut Scheme, m: &Mds, owner: &SecretKey, value: u64) -> OutPoint {
    let i = scheme.issue(owner.public(), value);
    let id = i.id();
    m.ingest(&[IngestRecord::new(Record::Issue(i), 1, Verdict::Verified)])
        .unwrap();
    OutPoint {
        record: id,
        index: 0,
    }
}

fn double_spend(scheme: &mut Scheme, m: &Mds) {
    let a = sk("ds-alice");
    let tok = fund(scheme, m, &a, 500);
    let t1 = transfer(&a, tok, &[(500, &sk("bob"))], 1);
    let t2 = transfer(&a, tok, &[(500, &sk("carol"))], 2);
    m.ingest(&[IngestRecord::new(
        Record::Transfer(t1),
        2,
        Verdict::Verified,
    )])
    .unwrap();
    let out = m
        .ingest(&[IngestRecord::new(
            Record::Transfer(t2),
            3,
            Verdict::Verified,
        )])
        .unwrap();
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].kind, AlertKind::DoubleSpend);
}

#[test]
fn refused_record_whose_outputs_overflow_is_a_counterfeit_not_a_failure() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let m = mds(&scheme);
    let mallory = sk("mallory");
    let half = u64::MAX / 2 + 1;
    let bogus = OutPoint {
        record: Hash32([7; 32]),
        index: 0,
    };
    let poison = transfer(&mallory, bogus, &[(half, &sk("x")), (half, &sk("y"))], 9);
    let out = m
        .ingest(&[IngestRecord::new(
            Record::Transfer(poison.clone()),
            2,
            Verdict::Refused(201),
        )])
        .unwrap_or_else(|e| panic!("a refused record must never fail ingestion: {e}"));
    assert_eq!(out.ingested, 1);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].kind, AlertKind::CounterfeitRefused);
    assert_eq!(out.alerts[0].subject, poison.id());
    // And detection goes on.
    double_spend(&mut scheme, &m);
}

#[test]
fn verified_record_with_amounts_out_of_range_is_refused_typed_and_changes_nothing() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let m = mds(&scheme);
    let a = sk("a");
    let tok = fund(&mut scheme, &m, &a, 500);
    let before = (m.indicators().unwrap(), m.alerts().unwrap());
    // Outputs past what the MDS stores, and outputs whose sum wraps.
    let cases = [
        transfer(&a, tok, &[(u64::MAX, &sk("b"))], 3),
        transfer(
            &a,
            tok,
            &[(u64::MAX / 2 + 1, &sk("b")), (u64::MAX / 2 + 1, &sk("c"))],
            4,
        ),
        transfer(&a, tok, &[(i64::MAX as u64, &sk("b")), (1, &sk("c"))], 5),
    ];
    for t in cases {
        let e = m
            .ingest(&[IngestRecord::new(
                Record::Transfer(t.clone()),
                2,
                Verdict::Verified,
            )])
            .unwrap_err();
        assert_eq!(e, MdsError::AmountOutOfRange { record: t.id() });
        assert_eq!(e.code(), 3013);
        assert_eq!((m.indicators().unwrap(), m.alerts().unwrap()), before);
    }
    // An Issue too (an unknown issuer's is judged on its amount).
    let rogue = Scheme::new(Suite::Ed25519).issue(a.public(), u64::MAX);
    let e = m
        .ingest(&[IngestRecord::new(
            Record::Issue(rogue.clone()),
            2,
            Verdict::Verified,
        )])
        .unwrap_err();
    assert_eq!(e, MdsError::AmountOutOfRange { record: rogue.id() });
    assert_eq!((m.indicators().unwrap(), m.alerts().unwrap()), before);
    double_spend(&mut scheme, &m);
}

#[test]
fn set_aside_raises_one_alert_naming_no_device_and_is_counted() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let m = mds(&scheme);
    assert_eq!(m.set_aside_count().unwrap(), 0);
    let body = b"not an outbox row".to_vec();
    let a = m.set_aside(&body, 3013, 4).unwrap();
    assert_eq!(a.kind, AlertKind::IngestionFailed);
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.offender, None);
    assert!(a.records.is_empty());
    assert_eq!(a.amount, 3013);
    assert_eq!(a.epoch, 4);
    assert_eq!(a.subject, Mds::set_aside_id(&body));
    // Setting the same row aside again (a crash before the outbox was
    // trimmed) is a no-op.
    assert_eq!(m.set_aside(&body, 3013, 5).unwrap(), a);
    assert_eq!(m.set_aside_count().unwrap(), 1);
    assert_eq!(m.alerts().unwrap(), vec![a.clone()]);
    assert_eq!(m.set_aside_body(&a.subject).unwrap(), Some(body));
    double_spend(&mut scheme, &m);
    assert_eq!(m.alerts().unwrap().len(), 2);
}
