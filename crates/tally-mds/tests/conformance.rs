//! The same scenario (payments, renewals, unloads, every fraud kind) on
//! every backend: SQLite (file) and PostgreSQL (fresh schema; loudly
//! skipped without `TALLY_TEST_DATABASE_URL`).

mod common;

use std::collections::HashSet;

use common::{fraud_mix, generate};
use tally_mds::{AlertState, Mds};
use tally_store::Store;

fn scenario_on(store: Store) {
    let s = generate(42, 30, 1_500, 5, &fraud_mix(2), 200);
    let mds = Mds::open(store, s.config.clone()).unwrap_or_else(|e| panic!("{e}"));
    for b in &s.batches {
        mds.ingest(b).unwrap_or_else(|e| panic!("ingest: {e}"));
    }
    let alerts = mds.alerts().unwrap_or_else(|e| panic!("{e}"));
    let subjects: HashSet<_> = alerts.iter().map(|a| a.subject).collect();
    let frauds: HashSet<_> = s.frauds.iter().map(|f| f.0).collect();
    assert_eq!(subjects, frauds);
    assert_eq!(alerts.len(), frauds.len());
    let e = &s.expected;
    let ind = mds.indicators().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            ind.issued,
            ind.redeemed,
            ind.payments,
            ind.payment_value,
            ind.hops_total
        ),
        (
            e.issued,
            e.redeemed,
            e.payments,
            e.payment_value,
            e.hops_total
        )
    );
    assert_eq!(
        (ind.fraud_losses, ind.double_spends, ind.counterfeits),
        (e.fraud_losses, e.double_spends, e.counterfeits)
    );
    let holdings: Vec<(u8, u64)> = e.holdings.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(ind.holdings_by_class, holdings);
    let id = alerts[0].id;
    mds.transition(id, AlertState::EscrowOpened, "o")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(mds.transition(id, AlertState::Open, "o").is_err());
    // Replay is a no-op.
    let out = mds.ingest(&s.batches[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.ingested, 0);
}

#[test]
fn conformance_sqlite() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    scenario_on(Store::sqlite(&dir.path().join("mds.db")).unwrap_or_else(|e| panic!("{e}")));
}

#[test]
fn conformance_postgres() {
    let Some((store, schema)) = tally_store::test_postgres_store("tally-mds conformance_postgres")
    else {
        return;
    };
    scenario_on(store);
    if let Some(url) = tally_store::test_database_url("cleanup")
        && let Ok(admin) = Store::postgres(&url, None)
    {
        let _ = admin.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
    }
}
