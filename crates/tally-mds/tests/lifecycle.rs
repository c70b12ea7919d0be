//! Alert lifecycle, AML detectors, interrupted-payment pairing and the
//! ingest contract (order, limits, idempotence), on SQLite in memory.

mod common;

use tally_core::package::sign_transfer;
use tally_core::policy::device_class::PHONE;
use tally_core::testkit::{Scheme, key};
use tally_core::{Amount, Hash32, OutPoint, Output, PublicKey, Record, SecretKey, Suite, Transfer};
use tally_mds::{
    AlertKind, AlertState, INGEST_BATCH_RECORDS_MAX, IngestRecord, Mds, MdsConfig, MdsError,
    Severity, Verdict,
};
use tally_store::Store;

struct World {
    scheme: Scheme,
    mds: Mds,
    counter: u64,
}

fn world(cfg: impl FnOnce(&mut MdsConfig)) -> World {
    let scheme = Scheme::new(Suite::Ed25519);
    let dcp = scheme.dcp.public().id();
    let mut c = MdsConfig::new(vec![dcp], vec![dcp], 10_000);
    cfg(&mut c);
    let mds = Mds::open(Store::sqlite_memory().unwrap_or_else(|e| panic!("{e}")), c)
        .unwrap_or_else(|e| panic!("{e}"));
    World {
        scheme,
        mds,
        counter: 0,
    }
}

fn sk(label: &str) -> SecretKey {
    key(Suite::Ed25519, label.as_bytes())
}

impl World {
    /// Issues `value` to `owner` and ingests it; returns the token.
    fn fund(&mut self, owner: &SecretKey, value: u64) -> OutPoint {
        let i = self.scheme.issue(owner.public(), value);
        let id = i.id();
        self.ingest(vec![IngestRecord::new(
            Record::Issue(i),
            1,
            Verdict::Verified,
        )]);
        OutPoint {
            record: id,
            index: 0,
        }
    }
    fn transfer(
        &mut self,
        from: &SecretKey,
        input: OutPoint,
        outs: &[(u64, PublicKey)],
        nonce: [u8; 16],
    ) -> Transfer {
        self.counter += 1;
        let k = from.clone();
        sign_transfer(
            vec![input],
            &[from.public()],
            outs.iter()
                .map(|(v, o)| Output {
                    value: Amount(*v),
                    owner: *o,
                })
                .collect(),
            nonce,
            self.counter,
            &|_| Some(k.clone()),
        )
        .unwrap_or_else(|| panic!("sign"))
    }
    fn ingest(&self, b: Vec<IngestRecord>) -> tally_mds::IngestOutcome {
        self.mds
            .ingest(&b)
            .unwrap_or_else(|e| panic!("ingest: {e}"))
    }
}

fn double_spend_alert(w: &mut World) -> i64 {
    let a = sk("alice");
    let tok = w.fund(&a, 500);
    let t1 = w.transfer(&a, tok, &[(500, sk("bob").public())], [1; 16]);
    let t2 = w.transfer(&a, tok, &[(500, sk("carol").public())], [2; 16]);
    w.ingest(vec![IngestRecord::new(
        Record::Transfer(t1.clone()),
        2,
        Verdict::Verified,
    )]);
    let out = w.ingest(vec![IngestRecord::new(
        Record::Transfer(t2.clone()),
        3,
        Verdict::Verified,
    )]);
    assert_eq!(out.alerts.len(), 1);
    let al = &out.alerts[0];
    assert_eq!(al.kind, AlertKind::DoubleSpend);
    assert_eq!(al.severity, Severity::Critical);
    assert_eq!(al.records, vec![t1.id(), t2.id()]);
    assert_eq!(al.subject, t2.id());
    assert_eq!(al.offender, Some(a.public().id()));
    assert_eq!(al.outpoint, Some((tok.record, 0)));
    assert_eq!(al.amount, 500);
    assert_eq!(al.epoch, 3);
    al.id
}

#[test]
fn alert_lifecycle_open_escrow_revoked_closed() {
    let mut w = world(|_| {});
    let id = double_spend_alert(&mut w);
    assert_eq!(
        w.mds.alert(id).unwrap_or_else(|e| panic!("{e}")).state,
        AlertState::Open
    );
    for (to, note) in [
        (
            AlertState::EscrowOpened,
            "order 17: supervisors 1,3 opened escrow",
        ),
        (AlertState::DeviceRevoked, "SE revoked in directory"),
        (AlertState::Closed, "loss booked"),
    ] {
        let a = w
            .mds
            .transition(id, to, note)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.state, to);
        assert_eq!(w.mds.alert(id).unwrap_or_else(|e| panic!("{e}")).state, to);
    }
    let log = w.mds.alert_events(id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].0, AlertState::Open);
    assert_eq!(log[2].1, AlertState::Closed);
    assert_eq!(log[1].2, "SE revoked in directory");
    assert_eq!(
        w.mds
            .indicators()
            .unwrap_or_else(|e| panic!("{e}"))
            .alerts_open,
        0
    );
}

#[test]
fn illegal_alert_transitions_are_refused() {
    let mut w = world(|_| {});
    let id = double_spend_alert(&mut w);
    let refused = |w: &World, to: AlertState| match w.mds.transition(id, to, "x") {
        Err(MdsError::IllegalTransition { alert, to: t, .. }) => {
            assert_eq!((alert, t), (id, to));
        }
        other => panic!("expected IllegalTransition, got {other:?}"),
    };
    // Open cannot skip to DeviceRevoked, nor stay Open.
    refused(&w, AlertState::DeviceRevoked);
    refused(&w, AlertState::Open);
    w.mds
        .transition(id, AlertState::EscrowOpened, "ok")
        .unwrap_or_else(|e| panic!("{e}"));
    refused(&w, AlertState::Open);
    refused(&w, AlertState::Closed);
    w.mds
        .transition(id, AlertState::DeviceRevoked, "ok")
        .unwrap_or_else(|e| panic!("{e}"));
    refused(&w, AlertState::EscrowOpened);
    w.mds
        .transition(id, AlertState::Closed, "ok")
        .unwrap_or_else(|e| panic!("{e}"));
    for s in [
        AlertState::Open,
        AlertState::EscrowOpened,
        AlertState::DeviceRevoked,
        AlertState::Closed,
    ] {
        refused(&w, s);
    }
    // A refused move changes nothing.
    assert_eq!(
        w.mds
            .alert_events(id)
            .unwrap_or_else(|e| panic!("{e}"))
            .len(),
        3
    );
    assert!(matches!(
        w.mds.transition(999, AlertState::Closed, "x"),
        Err(MdsError::AlertNotFound(999))
    ));
}

#[test]
fn open_alert_may_be_dismissed() {
    let mut w = world(|_| {});
    let id = double_spend_alert(&mut w);
    let a = w
        .mds
        .transition(id, AlertState::Closed, "false positive")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.state, AlertState::Closed);
}

#[test]
fn structuring_just_under_the_limit() {
    let mut w = world(|c| {
        c.structuring_payments_min = 3;
    });
    let a = sk("smurf");
    let limit = 10_000;
    let mut raised = Vec::new();
    // Within 10 % under the limit: 9,000..=10,000. 8,999 does not count.
    for (i, v) in [9_500u64, 8_999, 9_900, 10_000, 9_000].iter().enumerate() {
        let tok = w.fund(&a, *v);
        let t = w.transfer(
            &a,
            tok,
            &[(*v, sk(&format!("mule-{i}")).public())],
            [i as u8; 16],
        );
        raised.extend(
            w.ingest(vec![IngestRecord::new(
                Record::Transfer(t),
                5,
                Verdict::Verified,
            )])
            .alerts,
        );
    }
    assert!(limit > 0);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].kind, AlertKind::Structuring);
    assert_eq!(raised[0].subject, a.public().id());
    assert_eq!(raised[0].severity, Severity::Warning);
    assert_eq!(raised[0].amount, 3);
    assert_eq!(
        raised[0].records.len(),
        4,
        "the pseudonym's payments that epoch"
    );
}

#[test]
fn fan_out_fan_in_and_velocity() {
    let mut w = world(|c| {
        c.fan_out_min = 5;
        c.fan_in_min = 4;
        c.velocity_payments_min = 8;
    });
    let hub = sk("hub");
    let sink = sk("sink");
    let mut batch = Vec::new();
    // hub pays 8 distinct payees (fan-out at 5, velocity at 8) in one
    // batch; 4 distinct payers pay sink (fan-in at 4) in the next.
    for i in 0..8u8 {
        let tok = w.fund(&hub, 100);
        let t = w.transfer(&hub, tok, &[(100, sk(&format!("p{i}")).public())], [i; 16]);
        batch.push(IngestRecord::new(Record::Transfer(t), 2, Verdict::Verified));
    }
    let out = w.ingest(batch);
    let kinds: Vec<AlertKind> = out.alerts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, vec![AlertKind::FanOut, AlertKind::Velocity]);
    assert!(out.alerts.iter().all(|a| a.subject == hub.public().id()));
    let mut raised = Vec::new();
    for i in 0..5u8 {
        let payer = sk(&format!("q{i}"));
        let tok = w.fund(&payer, 100);
        let t = w.transfer(&payer, tok, &[(100, sink.public())], [i; 16]);
        raised.extend(
            w.ingest(vec![IngestRecord::new(
                Record::Transfer(t),
                2,
                Verdict::Verified,
            )])
            .alerts,
        );
    }
    assert_eq!(raised.len(), 1, "raised once when crossing: {raised:?}");
    assert_eq!(raised[0].kind, AlertKind::FanIn);
    assert_eq!(raised[0].subject, sink.public().id());
    assert_eq!(raised[0].records.len(), 4, "payments up to the crossing");
    // Another epoch starts from zero.
    let payer = sk("q-late");
    let tok = w.fund(&payer, 100);
    let t = w.transfer(&payer, tok, &[(100, sink.public())], [9; 16]);
    assert!(
        w.ingest(vec![IngestRecord::new(
            Record::Transfer(t),
            3,
            Verdict::Verified
        )])
        .alerts
        .is_empty()
    );
}

#[test]
fn interrupted_payment_paired_from_either_side() {
    let mut w = world(|_| {});
    let payer = sk("payer");
    let payee = sk("payee");
    // Payer's unacknowledged package first, payee's report later.
    let tok = w.fund(&payer, 300);
    let t = w.transfer(
        &payer,
        tok,
        &[(200, payee.public()), (100, payer.public())],
        [7; 16],
    );
    let mut r = IngestRecord::new(Record::Transfer(t.clone()), 4, Verdict::Verified);
    r.unacknowledged = true;
    assert!(w.ingest(vec![r]).pairings.is_empty());
    let p = w
        .mds
        .report_open_request(payee.public().id(), [7; 16], 200, 5)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("not paired"));
    assert_eq!((p.transfer, p.amount), (t.id(), 200));
    // Reporting again is a no-op that returns the same pairing.
    assert_eq!(
        w.mds
            .report_open_request(payee.public().id(), [7; 16], 200, 6)
            .unwrap_or_else(|e| panic!("{e}")),
        Some(p)
    );
    // Payee's report first, the payer's package later.
    let tok = w.fund(&payer, 50);
    assert_eq!(
        w.mds
            .report_open_request(payee.public().id(), [8; 16], 50, 5)
            .unwrap_or_else(|e| panic!("{e}")),
        None
    );
    let t = w.transfer(&payer, tok, &[(50, payee.public())], [8; 16]);
    let mut r = IngestRecord::new(Record::Transfer(t.clone()), 6, Verdict::Verified);
    r.unacknowledged = true;
    let out = w.ingest(vec![r]);
    assert_eq!(out.pairings.len(), 1);
    assert_eq!(out.pairings[0].transfer, t.id());
    // A request for another amount is not paired with it.
    assert_eq!(
        w.mds
            .report_open_request(payee.public().id(), [8; 16], 49, 7)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|p| p.amount),
        Some(50),
        "already paired request keeps its pairing"
    );
}

#[test]
fn unknown_parent_refuses_the_whole_batch() {
    let mut w = world(|_| {});
    let a = sk("a");
    let tok = w.fund(&a, 10);
    let ghost = OutPoint {
        record: Hash32([9; 32]),
        index: 0,
    };
    let ok = w.transfer(&a, tok, &[(10, sk("b").public())], [1; 16]);
    let bad = w.transfer(&a, ghost, &[(10, sk("b").public())], [2; 16]);
    let r = w.mds.ingest(&[
        IngestRecord::new(Record::Transfer(ok.clone()), 2, Verdict::Verified),
        IngestRecord::new(Record::Transfer(bad), 2, Verdict::Verified),
    ]);
    assert!(
        matches!(r, Err(MdsError::UnknownInput(op)) if op == ghost),
        "{r:?}"
    );
    // Nothing of the batch was kept: `ok` ingests as new.
    let out = w.ingest(vec![IngestRecord::new(
        Record::Transfer(ok),
        2,
        Verdict::Verified,
    )]);
    assert_eq!(out.ingested, 1);
}

#[test]
fn failed_batch_leaves_consumptions_and_aml_counts_as_committed() {
    // The lookup maps change in place during a batch: a batch refused
    // half-way must put back the consumption it recorded and the payment
    // it counted, or the next spend would look like a double spend and
    // cross the velocity threshold early.
    let mut w = world(|c| c.velocity_payments_min = 2);
    let a = sk("a");
    let tok = w.fund(&a, 10);
    let ghost = OutPoint {
        record: Hash32([9; 32]),
        index: 0,
    };
    let refused = w.transfer(&a, tok, &[(10, sk("b").public())], [1; 16]);
    let bad = w.transfer(&a, ghost, &[(10, sk("b").public())], [2; 16]);
    let r = w.mds.ingest(&[
        IngestRecord::new(Record::Transfer(refused.clone()), 2, Verdict::Verified),
        IngestRecord::new(Record::Transfer(bad), 2, Verdict::Verified),
    ]);
    assert!(matches!(r, Err(MdsError::UnknownInput(_))), "{r:?}");
    let other = w.transfer(&a, tok, &[(10, sk("c").public())], [3; 16]);
    let out = w.ingest(vec![IngestRecord::new(
        Record::Transfer(other.clone()),
        2,
        Verdict::Verified,
    )]);
    assert_eq!((out.ingested, out.alerts.len()), (1, 0), "{:?}", out.alerts);
    // Now the first attempt's transfer is the second spend and payment.
    let out = w.ingest(vec![IngestRecord::new(
        Record::Transfer(refused.clone()),
        2,
        Verdict::Verified,
    )]);
    let kinds: Vec<AlertKind> = out.alerts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, vec![AlertKind::DoubleSpend, AlertKind::Velocity]);
    assert_eq!(out.alerts[0].records, vec![other.id(), refused.id()]);
    assert_eq!(out.alerts[1].records, vec![other.id(), refused.id()]);
}

#[test]
fn batch_bound_is_enforced() {
    let w = world(|_| {});
    let i = Scheme::new(Suite::Ed25519).issue(sk("x").public(), 1);
    let b = vec![
        IngestRecord::new(Record::Issue(i), 1, Verdict::Verified);
        INGEST_BATCH_RECORDS_MAX + 1
    ];
    assert!(matches!(
        w.mds.ingest(&b),
        Err(MdsError::BatchTooLarge { .. })
    ));
}

#[test]
fn indicators_json_and_prometheus() {
    let mut w = world(|_| {});
    double_spend_alert(&mut w);
    let ind = w.mds.indicators().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ind.issued, 500);
    assert_eq!(ind.fraud_losses, 500);
    let j = ind.to_json();
    assert!(j.starts_with('{') && j.ends_with('}'), "{j}");
    assert!(j.contains("\"issued\":500"), "{j}");
    assert!(j.contains("\"fraud_losses\":500"), "{j}");
    assert!(j.contains("\"payments_by_epoch\":[{\"epoch\":2,\"count\":1,\"value\":500},{\"epoch\":3,\"count\":1,\"value\":500}]"), "{j}");
    let p = ind.to_prometheus();
    assert!(p.contains("tally_mds_offline_circulation 500\n"), "{p}");
    assert!(p.contains("tally_mds_double_spends_total 1\n"), "{p}");
    assert!(
        p.contains("tally_mds_epoch_payments{epoch=\"3\"} 1\n"),
        "{p}"
    );
    // Every sample line has a TYPE line for its family.
    for line in p.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        assert!(p.contains(&format!("# TYPE {name} ")), "{name}");
    }
    let _ = PHONE;
}

#[test]
fn aml_state_and_graph_survive_reopen() {
    // The hot maps are rebuilt from the store: a fan-in that straddles a
    // restart is counted once across it, and a double spend of an output
    // consumed before the restart is caught after it.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("mds.db");
    let mut scheme = Scheme::new(Suite::Ed25519);
    let dcp = scheme.dcp.public().id();
    let mut cfg = MdsConfig::new(vec![dcp], vec![dcp], 10_000);
    cfg.fan_in_min = 4;
    let open = |cfg: &MdsConfig| {
        Mds::open(
            Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}")),
            cfg.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let sink = sk("sink");
    let mut spent = None;
    let mut pay = |mds: &Mds, i: u8| {
        let payer = sk(&format!("r{i}"));
        let issue = scheme.issue(payer.public(), 100);
        let tok = OutPoint {
            record: issue.id(),
            index: 0,
        };
        let k = payer.clone();
        let t = sign_transfer(
            vec![tok],
            &[payer.public()],
            vec![Output {
                value: Amount(100),
                owner: sink.public(),
            }],
            [i; 16],
            1,
            &|_| Some(k.clone()),
        )
        .unwrap_or_else(|| panic!("sign"));
        let out = mds
            .ingest(&[
                IngestRecord::new(Record::Issue(issue), 1, Verdict::Verified),
                IngestRecord::new(Record::Transfer(t), 1, Verdict::Verified),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        (out, tok, payer)
    };
    {
        let mds = open(&cfg);
        for i in 0..3 {
            let (out, tok, payer) = pay(&mds, i);
            assert!(out.alerts.is_empty());
            spent = Some((tok, payer));
        }
    }
    let mds = open(&cfg);
    let (out, _, _) = pay(&mds, 3);
    assert_eq!(out.alerts.len(), 1, "{:?}", out.alerts);
    assert_eq!(out.alerts[0].kind, AlertKind::FanIn);
    assert_eq!(out.alerts[0].records.len(), 4);
    let (tok, payer) = spent.unwrap_or_else(|| panic!("no token"));
    let k = payer.clone();
    let again = sign_transfer(
        vec![tok],
        &[payer.public()],
        vec![Output {
            value: Amount(100),
            owner: sk("elsewhere").public(),
        }],
        [99; 16],
        2,
        &|_| Some(k.clone()),
    )
    .unwrap_or_else(|| panic!("sign"));
    let out = mds
        .ingest(&[IngestRecord::new(
            Record::Transfer(again),
            2,
            Verdict::Verified,
        )])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].kind, AlertKind::DoubleSpend);
    assert_eq!(out.alerts[0].offender, Some(payer.public().id()));
    // Alert ids continue after the restart.
    assert_eq!(out.alerts[0].id, 2);
}

#[test]
fn refused_record_needs_no_ancestry() {
    // Settlement refused the whole package, so the MDS never saw the
    // parents: the refused transfer is still flagged, not an error.
    let w = world(|_| {});
    let a = sk("forger");
    let ghost = OutPoint {
        record: Hash32([7; 32]),
        index: 0,
    };
    let t = sign_transfer(
        vec![ghost],
        &[a.public()],
        vec![Output {
            value: Amount(5),
            owner: sk("b").public(),
        }],
        [3; 16],
        1,
        &|_| Some(a.clone()),
    )
    .unwrap_or_else(|| panic!("sign"));
    let out = w.ingest(vec![IngestRecord::new(
        Record::Transfer(t.clone()),
        4,
        Verdict::Refused(801),
    )]);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].kind, AlertKind::CounterfeitRefused);
    assert_eq!(out.alerts[0].amount, 801);
    assert_eq!(out.alerts[0].subject, t.id());
    assert_eq!(out.alerts[0].offender, None);
    assert_eq!(
        w.mds
            .indicators()
            .unwrap_or_else(|e| panic!("{e}"))
            .counterfeits,
        1
    );
}

#[test]
fn double_spend_is_caught_whichever_branch_arrives_first() {
    // The subject is the branch that reached the MDS second; the evidence
    // holds both, first consumer first.
    let mut w = world(|_| {});
    let a = sk("alice");
    let tok = w.fund(&a, 80);
    let t1 = w.transfer(&a, tok, &[(80, sk("bob").public())], [1; 16]);
    let t2 = w.transfer(&a, tok, &[(80, sk("carol").public())], [2; 16]);
    let out = w.ingest(vec![
        IngestRecord::new(Record::Transfer(t2.clone()), 2, Verdict::Verified),
        IngestRecord::new(Record::Transfer(t1.clone()), 2, Verdict::Verified),
    ]);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].records, vec![t2.id(), t1.id()]);
    assert_eq!(out.alerts[0].subject, t1.id());
    // A third spend is a second alert on the same output.
    let t3 = w.transfer(&a, tok, &[(80, sk("dave").public())], [3; 16]);
    let out = w.ingest(vec![IngestRecord::new(
        Record::Transfer(t3.clone()),
        3,
        Verdict::Verified,
    )]);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].records, vec![t2.id(), t3.id()]);
    let ind = w.mds.indicators().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((ind.double_spends, ind.fraud_losses), (2, 160));
}
