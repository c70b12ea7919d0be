//! Shared by the ledger and settlement suites: one migrated store per test
//! (SQLite in a fresh temp file, PostgreSQL in a fresh schema), the macro
//! that runs one test body against both backends, and the book-keeping
//! auditor both suites check the ledger with.

// Each suite uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use tally_ledger::ledger::{self, Invariant, Ledger, LedgerError};
use tally_store::{Row, Store, StoreError, Tx};

/// A migrated store that cleans up after a passing test (a failing one
/// leaves its file or schema behind for inspection).
pub struct TestDb {
    pub store: Store,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Schema(String),
}

fn migrate(store: &Store) {
    store
        .migrate(&[
            &tally_ledger::ledger::MIGRATIONS,
            &tally_ledger::settlement::MIGRATIONS,
        ])
        .unwrap_or_else(|e| panic!("migrations: {e}"));
}

/// A fresh SQLite file under the temp dir, unique per test and run.
pub fn sqlite(test: &str) -> TestDb {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "tally-ledger-{}-{test}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let store = Store::sqlite(&dir.join("db.sqlite")).unwrap_or_else(|e| panic!("sqlite: {e}"));
    migrate(&store);
    TestDb {
        store,
        cleanup: Cleanup::Dir(dir),
    }
}

/// A fresh PostgreSQL schema, or `None` (with the store crate's loud skip
/// message) when TALLY_TEST_DATABASE_URL is unset.
pub fn postgres(test: &str) -> Option<TestDb> {
    let (store, schema) = tally_store::test_postgres_store(test)?;
    migrate(&store);
    Some(TestDb {
        store,
        cleanup: Cleanup::Schema(schema),
    })
}

impl TestDb {
    /// Called only after the test body returned.
    pub fn passed(self) {
        match self.cleanup {
            Cleanup::Dir(dir) => {
                drop(self.store);
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema(schema) => {
                let _ = self
                    .store
                    .transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
            }
        }
    }
}

/// Runs each named `fn(&Store)` once on SQLite and once on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let db = crate::common::sqlite(stringify!($name));
                    super::$name(&db.store);
                    db.passed();
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some(db) = crate::common::postgres(test) {
                        super::$name(&db.store);
                        db.passed();
                    }
                }
            )*
        }
    };
}

/// Runs `f` in one transaction and unwraps.
pub fn run<R, E: tally_store::TxFailure + std::fmt::Debug>(
    s: &Store,
    f: impl FnMut(&mut dyn Tx) -> Result<R, E>,
) -> R {
    match s.transact(f) {
        Ok(r) => r,
        Err(e) => panic!("transaction failed: {e:?}"),
    }
}

pub fn query(s: &Store, sql: &str) -> Vec<Row> {
    run(s, |tx| tx.query(sql, &[]))
}

pub fn count(s: &Store, table: &str) -> i64 {
    let rows = query(s, &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"));
    rows[0].int(0).unwrap_or_else(|e| panic!("{e}"))
}

pub fn balance(s: &Store, account: &str) -> i64 {
    run(s, |tx| Ledger::balance(tx, account))
}

pub fn invariant(s: &Store) -> Invariant {
    run(s, |tx| Ledger::invariant(tx))
}

/// Every ledger table, in a stable order: what "changes nothing" compares.
pub fn ledger_snapshot(s: &Store) -> Vec<Vec<Row>> {
    [
        "SELECT id, kind, balance FROM ledger_accounts ORDER BY id",
        "SELECT seq, idem, digest, debit, credit, amount, code FROM ledger_journal ORDER BY seq",
        "SELECT k, v FROM ledger_meta ORDER BY k",
    ]
    .iter()
    .map(|q| query(s, q))
    .collect()
}

/// The auditor: the invariant holds, and replaying the journal from zero
/// gives exactly the stored balances, minted and redeemed totals, and a
/// gapless sequence. A balance changed without a journal entry, or an
/// entry without both legs, shows up here.
pub fn audit(s: &Store) -> Invariant {
    let inv = invariant(s);
    assert!(inv.holds(), "ledger invariant violated: {inv:?}");
    let journal = query(
        s,
        "SELECT seq, debit, credit, amount, code FROM ledger_journal ORDER BY seq",
    );
    let mut replayed: BTreeMap<String, i64> = BTreeMap::new();
    let (mut minted, mut redeemed) = (0i64, 0i64);
    for (i, r) in journal.iter().enumerate() {
        let get = |e: Result<i64, StoreError>| e.unwrap_or_else(|e| panic!("{e}"));
        // Sequence numbers are unique and increase in journal order; they
        // may have gaps (PostgreSQL reserves them in blocks).
        if i > 0 {
            assert!(
                get(r.int(0)) > get(journal[i - 1].int(0)),
                "journal sequence not increasing"
            );
        }
        let amount = get(r.int(3));
        assert!(amount > 0);
        *replayed.entry(r.text(1).unwrap().to_string()).or_default() -= amount;
        *replayed.entry(r.text(2).unwrap().to_string()).or_default() += amount;
        match get(r.int(4)) {
            ledger::code::MINT => minted += amount,
            ledger::code::REDEEM => redeemed += amount,
            _ => {}
        }
    }
    assert_eq!((inv.minted, inv.redeemed), (minted, redeemed));
    assert_eq!(inv.journal_entries, journal.len() as i64);
    for r in query(s, "SELECT id, balance FROM ledger_accounts") {
        let id = r.text(0).unwrap();
        assert_eq!(
            r.int(1).unwrap(),
            replayed.get(id).copied().unwrap_or(0),
            "balance of {id} differs from its journal"
        );
    }
    let next = query(s, "SELECT v FROM ledger_meta WHERE k = 'next_seq'");
    if let Some(last) = journal.last() {
        assert!(
            next[0].int(0).unwrap() > last.int(0).unwrap(),
            "next_seq behind the journal"
        );
    }
    inv
}

/// Unwraps a ledger result inside a closure that must not swallow store
/// errors (so conflicts are still retried).
pub fn keep_rejection<R>(r: Result<R, LedgerError>) -> Result<Result<R, LedgerError>, LedgerError> {
    match r {
        Err(LedgerError::Store(e)) => Err(LedgerError::Store(e)),
        other => Ok(other),
    }
}
