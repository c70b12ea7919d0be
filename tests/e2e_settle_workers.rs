//! Two `tally bench worker` *processes* settle one settlement queue
//! (tally_ledger::queue) on one database, racing on conflicting packages:
//! every token is spent by two different packages (a one-hop package and
//! a two-hop one), the two spends sit in different lanes so the workers
//! settle them at the same time (both start claiming at one instant), and
//! with a 50 ms lease a worker also takes the other's rows once its own
//! lane is empty, even while the other still holds them. A third copy of
//! every two-hop package is queued as well.
//!
//! Exactly once: every queue row has exactly one result and the workers'
//! settled counts add up to the rows; every token is registered once
//! (two spent rows per token), every token's double spend is recorded
//! exactly once and booked to loss once; the ledger's full audit holds.
//!
//! PostgreSQL (required under CI; both workers must take part) and an
//! SQLite file (two processes on one WAL file; one writer at a time, so
//! only exactly-once is checked there).

use std::process::Command;

#[path = "support/spends.rs"]
mod spends;
use spends::{field, spend};

use tally_core::codec::Cbor;
use tally_core::crypto::tagged_hash;
use tally_core::sealed::{OpeningKey, SealedKind, SealingKey, seal};
use tally_core::testkit::{Scheme, TestEntropy, key};
use tally_core::{Amount, Issue, Output, Package, Suite};
use tally_ledger::ledger::{self, AccountKind, Ledger, TransferRequest, code};
use tally_ledger::queue::SettlementQueue;
use tally_ledger::settlement::{self, Settlement, SettlementError};
use tally_store::{Store, StoreError, Tx};

const TOKENS: usize = 64;
const VALUE: u64 = 1_000;

fn count(tx: &mut dyn Tx, sql: &str) -> Result<i64, StoreError> {
    tx.query_one(sql, &[])?
        .ok_or_else(|| StoreError::Type("no row".into()))?
        .int(0)
}

/// Fills the queue; returns the number of rows.
fn setup(store: &Store) -> usize {
    store
        .migrate(&[&ledger::MIGRATIONS, &settlement::MIGRATIONS])
        .unwrap_or_else(|e| panic!("migrations: {e}"));
    let scheme = Scheme::new(Suite::Ed25519);
    // The bench's opening key (crates/tally-cli/src/bench.rs, fixed seed).
    let opening = OpeningKey::from_seed(&tagged_hash(b"tally/v1/bench-opening", &[]).0);
    let sealing = SealingKey::sign(&scheme.root, opening.public());
    let mut entropy = TestEntropy::new(b"workers");
    let mut rows = Vec::new();
    let mut again = Vec::new();
    for n in 0..TOKENS {
        let k0 = key(Suite::Ed25519, format!("workers/{n}/0").as_bytes());
        let issue = Issue::sign(
            &scheme.dcp,
            n as u64 + 1,
            50,
            vec![Output {
                value: Amount(VALUE),
                owner: k0.public(),
            }],
        );
        store
            .transact(|tx| {
                Ledger::ensure_account(tx, "dcp:1", AccountKind::DcpSettlement)?;
                Settlement::register_issue(tx, 1, &issue)?;
                Ledger::mint(tx, &format!("mint:{n}"), "dcp:1", VALUE)?;
                Ledger::transfer(
                    tx,
                    &TransferRequest {
                        idem: format!("load:{n}"),
                        debit: "dcp:1".into(),
                        credit: ledger::OFFLINE_FLOAT.into(),
                        amount: VALUE,
                        code: code::LOAD,
                    },
                )?;
                Ok::<_, SettlementError>(())
            })
            .unwrap_or_else(|e| panic!("load: {e}"));
        let mut sealed = |p: &Package| {
            seal(&sealing, SealedKind::Redemption, &p.to_cbor(), &mut entropy)
                .unwrap_or_else(|e| panic!("seal: {e}"))
        };
        let one = sealed(&spend(&scheme, "workers", n, &issue, &k0, 0, VALUE));
        let two = sealed(&spend(&scheme, "workers", n, &issue, &k0, 1, VALUE));
        // Adjacent ids: lanes 0 and 1 of 2, so the two workers take them
        // at the same time.
        rows.push(one);
        rows.push(two.clone());
        again.push(two);
    }
    rows.extend(again);
    store
        .transact(|tx| SettlementQueue::enqueue(tx, &rows))
        .unwrap_or_else(|e| panic!("enqueue: {e}"));
    rows.len()
}

fn race(store: &Store, rows: usize, db_args: &[String], must_overlap: bool) {
    // Both claim from the same instant, once both have started.
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        + 1_500;
    let children: Vec<_> = (0..2)
        .map(|k| {
            Command::new(env!("CARGO_BIN_EXE_tally"))
                .args([
                    "bench",
                    "worker",
                    "--until-empty",
                    "--lease-ms",
                    "50",
                    "--batch",
                    "4",
                ])
                .args(["--lane", &format!("{k}/2"), "--name", &format!("w{k}")])
                .args(["--start-at-ms", &start_at.to_string()])
                .args(db_args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start tally: {e}"))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|c| {
            c.wait_with_output()
                .unwrap_or_else(|e| panic!("worker: {e}"))
        })
        .collect();
    let (mut settled, mut busy) = (0, 0);
    for out in &children {
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "worker failed: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{line}");
        assert_eq!(field(&line, "refused"), 0, "{line}");
        settled += field(&line, "settled");
        busy += i64::from(field(&line, "batches") > 0);
    }
    assert_eq!(
        settled as usize, rows,
        "each row settled by exactly one worker"
    );
    // Both took part: each settled a batch or found its claimed rows
    // already settled by the other (`skipped`), so they overlapped.
    // (SQLite: one writer at a time, and its busy handler sleeps with
    // backoff, so one process may take every row before the other gets
    // the lock; there the test checks exactly-once only.)
    if must_overlap {
        assert_eq!(
            busy, 2,
            "both workers must have worked on rows (else nothing raced)"
        );
    }
    let checks = store.transact(|tx| {
        Ok::<_, SettlementError>((
            count(
                tx,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM settlement_results",
            )?,
            count(
                tx,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM settlement_results WHERE code <> 0",
            )?,
            count(
                tx,
                "SELECT CAST(COUNT(DISTINCT id) AS BIGINT) FROM settlement_results",
            )?,
            SettlementQueue::pending(tx)?,
            count(tx, "SELECT CAST(COUNT(*) AS BIGINT) FROM spent")?,
            count(tx, "SELECT CAST(COUNT(*) AS BIGINT) FROM double_spends")?,
            count(
                tx,
                "SELECT CAST(COUNT(DISTINCT record) AS BIGINT) FROM double_spends",
            )?,
            Ledger::balance(tx, ledger::LOSS)?,
            count(
                tx,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_journal WHERE code = 6",
            )?,
        ))
    });
    let (results, refused, distinct, pending, spent, doubles, tokens, loss, covers) =
        checks.unwrap_or_else(|e| panic!("checks: {e}"));
    assert_eq!(
        (results, refused, distinct, pending),
        (rows as i64, 0, rows as i64, 0)
    );
    assert_eq!(spent, 2 * TOKENS as i64, "every token registered once");
    assert_eq!(
        (doubles, tokens),
        (TOKENS as i64, TOKENS as i64),
        "one double spend per token"
    );
    assert_eq!(
        loss,
        -((TOKENS as u64 * VALUE) as i64),
        "each loss booked once"
    );
    assert_eq!(covers, TOKENS as i64);
    let inv = store
        .transact(|tx| Ledger::audit(tx))
        .unwrap_or_else(|e| panic!("audit: {e}"));
    assert!(inv.holds() && inv.totals_match, "{inv:?}");
}

#[test]
fn two_worker_processes_settle_conflicting_packages_once_on_postgres() {
    let Some((store, schema)) = tally_store::test_postgres_store("e2e_settle_workers") else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but TALLY_TEST_DATABASE_URL is not: PostgreSQL is required");
        }
        return;
    };
    let rows = setup(&store);
    let url = tally_store::test_database_url("e2e_settle_workers").unwrap_or_default();
    race(
        &store,
        rows,
        &[
            "--database-url".into(),
            url,
            "--schema".into(),
            schema.clone(),
        ],
        true,
    );
    let _ = store.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
}

#[test]
fn two_worker_processes_settle_conflicting_packages_once_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tally-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("central.sqlite");
    let store = Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}"));
    let rows = setup(&store);
    race(
        &store,
        rows,
        &["--database-url".into(), path.display().to_string()],
        false,
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

/// The production process mode, `tally settle-worker`, on a node's own
/// database (its trust objects and opening key): a queued body that does
/// not open under the node's key is refused with code 32 and stored as
/// settled-refused once; the worker exits when the queue is empty.
#[test]
fn settle_worker_refuses_what_does_not_open_under_the_node_key() {
    let dir = std::env::temp_dir().join(format!("tally-settle-worker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("central.sqlite");
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["settle-worker", "--until-empty", "--name", "prod"])
            .args(["--database-url", &path.display().to_string()])
            .output()
            .unwrap_or_else(|e| panic!("cannot start tally: {e}"));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        line
    };
    // First start: creates the node's database; nothing queued.
    let line = run();
    assert_eq!(
        (field(&line, "settled"), field(&line, "audits")),
        (0, 1),
        "{line}"
    );
    let store = Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}"));
    // Sealed to the bench's key, not to this node's.
    let scheme = Scheme::new(Suite::Ed25519);
    let bench = OpeningKey::from_seed(&tagged_hash(b"tally/v1/bench-opening", &[]).0);
    let foreign = seal(
        &SealingKey::sign(&scheme.root, bench.public()),
        SealedKind::Redemption,
        b"not for this node",
        &mut TestEntropy::new(b"foreign"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    store
        .transact(|tx| SettlementQueue::enqueue(tx, &[foreign.clone(), b"garbage".to_vec()]))
        .unwrap_or_else(|e| panic!("{e}"));
    let line = run();
    assert_eq!(
        (field(&line, "settled"), field(&line, "refused")),
        (2, 2),
        "{line}"
    );
    let codes = store
        .transact(|tx| {
            tx.query(
                "SELECT code, settled_by FROM settlement_results ORDER BY id",
                &[],
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(codes.len(), 2);
    for r in &codes {
        assert_eq!((r.int(0).unwrap(), r.text(1).unwrap()), (32, "prod"));
    }
    // Nothing left: a third run settles nothing.
    assert_eq!(field(&run(), "settled"), 0);
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}
