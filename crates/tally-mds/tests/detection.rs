//! The MDS acceptance test: ≥10,000 payments among ≥100 devices with ≥20
//! injected frauds (double spends at the leaf and in the middle of
//! ancestries, refused records, non-conserving transfers, unknown issuers
//! and their descendants). Every fraud is flagged by record id, honest
//! traffic raises nothing, and the indicators equal the values the
//! generator's model computed on its own.

mod common;

use std::collections::{HashMap, HashSet};

use common::{FraudKind, Scenario, fraud_mix, generate};
use tally_core::Hash32;
use tally_mds::{AlertKind, Indicators, Mds};
use tally_store::Store;

fn expected_kind(k: FraudKind) -> AlertKind {
    match k {
        FraudKind::DoubleSpendLeaf | FraudKind::DoubleSpendMiddle => AlertKind::DoubleSpend,
        FraudKind::BadSignature => AlertKind::CounterfeitRefused,
        FraudKind::NonConserving => AlertKind::NonConserving,
        FraudKind::UnknownIssuer => AlertKind::UnknownIssuer,
        FraudKind::CounterfeitDescendant => AlertKind::CounterfeitDescendant,
    }
}

pub fn check_indicators(ind: &Indicators, s: &Scenario) {
    let e = &s.expected;
    assert_eq!(ind.issued, e.issued, "issued");
    assert_eq!(ind.redeemed, e.redeemed, "redeemed");
    assert_eq!(ind.circulation, e.issued - e.redeemed, "circulation");
    assert_eq!(ind.payments, e.payments, "payments");
    assert_eq!(ind.payment_value, e.payment_value, "payment value");
    let by_epoch: Vec<(u32, u64, u64)> = ind
        .payments_by_epoch
        .iter()
        .map(|p| (p.epoch, p.count, p.value))
        .collect();
    let want: Vec<(u32, u64, u64)> = e.by_epoch.iter().map(|(k, v)| (*k, v.0, v.1)).collect();
    assert_eq!(by_epoch, want, "payments by epoch");
    assert_eq!(ind.redemptions, e.redemptions, "redemptions");
    assert_eq!(ind.hops_total, e.hops_total, "hops");
    assert!((ind.average_hops - e.hops_total as f64 / e.redemptions as f64).abs() < 1e-9);
    assert!((ind.velocity - e.payment_value as f64 / e.issued as f64).abs() < 1e-9);
    let holdings: Vec<(u8, u64)> = e.holdings.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(ind.holdings_by_class, holdings, "holdings by class");
    let held: u64 = holdings.iter().map(|h| h.1).sum();
    assert_eq!(
        held,
        ind.circulation + ind.fraud_losses,
        "holdings = circulation + losses"
    );
    assert_eq!(ind.offline_samples, e.offline_samples);
    assert_eq!(ind.offline_epochs_total, e.offline_total);
    assert_eq!(ind.offline_epochs_max, e.offline_max);
    assert_eq!(ind.fraud_losses, e.fraud_losses, "fraud losses");
    assert_eq!(ind.double_spends, e.double_spends, "double spends");
    assert_eq!(ind.counterfeits, e.counterfeits, "counterfeits");
}

/// Ingests the scenario and checks alerts and indicators.
pub fn run(mds: &Mds, s: &Scenario) {
    let mut raised = Vec::new();
    for b in &s.batches {
        let out = mds.ingest(b).unwrap_or_else(|e| panic!("ingest: {e}"));
        raised.extend(out.alerts);
    }
    let stored = mds.alerts().unwrap_or_else(|e| panic!("alerts: {e}"));
    assert_eq!(stored, raised, "alerts returned = alerts stored");
    let fraud_ids: HashMap<Hash32, FraudKind> = s.frauds.iter().copied().collect();
    // Every fraud is flagged, by its record id and the right detector.
    for (id, kind) in &s.frauds {
        let hit = stored
            .iter()
            .find(|a| a.subject == *id)
            .unwrap_or_else(|| panic!("fraud {kind:?} {id} not flagged"));
        assert_eq!(hit.kind, expected_kind(*kind), "{id}");
        assert!(hit.records.contains(id));
        if hit.kind == AlertKind::DoubleSpend {
            assert_eq!(hit.records.len(), 2, "both spends as evidence");
            assert!(hit.offender.is_some());
            assert!(hit.outpoint.is_some());
        }
    }
    // No alert about anything else: honest traffic raises nothing.
    let mut seen = HashSet::new();
    for a in &stored {
        assert!(
            fraud_ids.contains_key(&a.subject),
            "alert on honest traffic: {a:?}"
        );
        assert!(seen.insert(a.subject), "one alert per fraud: {a:?}");
    }
    assert_eq!(stored.len(), s.frauds.len());
    let ind = mds
        .indicators()
        .unwrap_or_else(|e| panic!("indicators: {e}"));
    check_indicators(&ind, s);
    assert_eq!(ind.alerts_open, s.frauds.len() as u64);
    // Replaying everything is a no-op.
    for b in s.batches.iter().take(3) {
        let out = mds.ingest(b).unwrap_or_else(|e| panic!("replay: {e}"));
        assert_eq!(out.ingested, 0);
        assert!(out.alerts.is_empty());
    }
    assert_eq!(mds.indicators().unwrap_or_else(|e| panic!("{e}")), ind);
}

#[test]
fn ten_thousand_payments_every_fraud_flagged_no_false_alarm() {
    let t0 = std::time::Instant::now();
    let s = generate(0x7a11, 120, 10_000, 20, &fraud_mix(4), 500);
    let records: usize = s.batches.iter().map(Vec::len).sum();
    assert!(s.frauds.len() >= 20, "{} frauds", s.frauds.len());
    assert!(s.expected.payments >= 10_000);
    let generated = t0.elapsed();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::sqlite(&dir.path().join("mds.db")).unwrap_or_else(|e| panic!("{e}"));
    let mds = Mds::open(store, s.config.clone()).unwrap_or_else(|e| panic!("{e}"));
    let t1 = std::time::Instant::now();
    run(&mds, &s);
    eprintln!(
        "generated {records} records ({} frauds, {} devices) in {generated:?}; ingested and checked in {:?}",
        s.frauds.len(),
        s.devices,
        t1.elapsed()
    );
}

#[test]
fn detection_survives_reopen() {
    // All detection state is in the store: a double spend whose first
    // spend was ingested before a restart is still caught after it.
    let s = generate(
        7,
        20,
        400,
        4,
        &[FraudKind::DoubleSpendMiddle, FraudKind::DoubleSpendLeaf],
        50,
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("mds.db");
    let half = s.batches.len() - 1;
    {
        let mds = Mds::open(
            Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}")),
            s.config.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for b in &s.batches[..half] {
            mds.ingest(b).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let mds = Mds::open(
        Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}")),
        s.config.clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for b in &s.batches[half..] {
        mds.ingest(b).unwrap_or_else(|e| panic!("{e}"));
    }
    let alerts = mds.alerts().unwrap_or_else(|e| panic!("{e}"));
    let subjects: HashSet<Hash32> = alerts.iter().map(|a| a.subject).collect();
    for (id, _) in &s.frauds {
        assert!(subjects.contains(id));
    }
    assert_eq!(alerts.len(), s.frauds.len());
    check_indicators(&mds.indicators().unwrap_or_else(|e| panic!("{e}")), &s);
}
