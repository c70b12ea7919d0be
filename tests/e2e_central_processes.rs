//! The server's settlement path scales out as central bank *processes* on
//! one database: two `tally bench central-sync` processes (each a
//! `CentralBank` answering DCP sync requests, as `tally central` does)
//! race on conflicting uploads. Every token is spent by two packages (a
//! one-hop and a two-hop one) uploaded in two sync requests that the two
//! processes send at the same instant, in the same token order; a third
//! upload repeats every two-hop package.
//!
//! Exactly once: each token is registered once (two spent rows), its
//! double spend is recorded once and booked to loss once, every request
//! is answered once (the answers' counts add up), and the ledger's full
//! audit holds. PostgreSQL (required under CI) and an SQLite file.

use std::process::Command;

#[path = "support/spends.rs"]
mod spends;
use spends::{field, spend};

use tally_central::CentralRequest;
use tally_core::codec::{Cbor, Writer};
use tally_core::crypto::tagged_hash;
use tally_core::dcp::{SyncUpload, reports_digest};
use tally_core::sealed::{OpeningKey, SealedKind, SealingKey, seal};
use tally_core::testkit::{Scheme, TestEntropy, key};
use tally_core::{Amount, Hash32, Issue, Output, Package, Suite};
use tally_ledger::ledger::{self, Ledger, TransferRequest, code};
use tally_ledger::settlement::{Settlement, SettlementError};
use tally_store::{Store, StoreError, Tx};

const TOKENS: usize = 48;
const VALUE: u64 = 1_000;
/// Every this many tokens, an upload spending a forged Issue joins the race.
const FORGED_EVERY: usize = 6;

fn count(tx: &mut dyn Tx, table: &str) -> Result<i64, StoreError> {
    tx.query_one(
        &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"),
        &[],
    )?
    .ok_or_else(|| StoreError::Type("no row".into()))?
    .int(0)
}

/// `n` central bank processes answer their parts of `requests` from one
/// instant; returns their report lines.
fn central_processes(
    dir: &std::path::Path,
    db_args: &[String],
    requests: &[(Hash32, CentralRequest)],
    n: usize,
) -> Vec<String> {
    let file = dir.join(format!("requests-{}.cbor", requests.len()));
    let mut w = Writer::new();
    w.array(requests.len());
    for (op, req) in requests {
        w.array(2);
        w.bytes(&op.0);
        w.bytes(&req.to_cbor());
    }
    std::fs::write(&file, w.into_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        + 2_000;
    let children: Vec<_> = (0..n)
        .map(|k| {
            Command::new(env!("CARGO_BIN_EXE_tally"))
                .args(["bench", "central-sync", "--requests"])
                .arg(&file)
                .args(["--part", &format!("{k}/{n}")])
                .args(["--start-at-ms", &start_at.to_string()])
                .args(db_args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start tally: {e}"))
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                out.status.success(),
                "central bank process failed: {line}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("{line}");
            line
        })
        .collect()
}

fn race(store: &Store, dir: &std::path::Path, db_args: &[String]) {
    // One process with no request migrates the database (as a first
    // `tally central` start would) before the two race.
    assert_eq!(central_processes(dir, db_args, &[], 1).len(), 1);
    let scheme = Scheme::new(Suite::Ed25519);
    // The bench's opening key (crates/tally-cli/src/bench.rs, fixed seed).
    let opening = OpeningKey::from_seed(&tagged_hash(b"tally/v1/bench-opening", &[]).0);
    let sealing = SealingKey::sign(&scheme.root, opening.public());
    let mut entropy = TestEntropy::new(b"central-processes");
    let (mut first, mut second, mut third, mut fourth) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // An Issue of one output of VALUE owned by `owner`, registered and
    // loaded as a Load request would.
    let loaded = |serial: u64, owner: &tally_core::SecretKey| {
        let issue = Issue::sign(
            &scheme.dcp,
            serial,
            50,
            vec![Output {
                value: Amount(VALUE),
                owner: owner.public(),
            }],
        );
        store
            .transact(|tx| {
                Settlement::register_issue(tx, 1, &issue)?;
                Ledger::mint(tx, &format!("mint:{serial}"), "dcp:1", VALUE)?;
                Ledger::transfer(
                    tx,
                    &TransferRequest {
                        idem: format!("load:{serial}"),
                        debit: "dcp:1".into(),
                        credit: ledger::OFFLINE_FLOAT.into(),
                        amount: VALUE,
                        code: code::LOAD,
                    },
                )?;
                Ok::<_, SettlementError>(())
            })
            .unwrap_or_else(|e| panic!("load: {e}"));
        issue
    };
    for n in 0..TOKENS {
        let k0 = key(Suite::Ed25519, format!("central/{n}/0").as_bytes());
        let issue = loaded(n as u64 + 1, &k0);
        let mut sync = |label: &str, p: &Package| {
            let upload = SyncUpload {
                packages: vec![p.to_cbor()],
                reports: Vec::new(),
            };
            let sealed = seal(
                &sealing,
                SealedKind::SyncUpload,
                &upload.to_cbor(),
                &mut entropy,
            )
            .unwrap_or_else(|e| panic!("seal: {e}"));
            let op = tagged_hash(
                b"tally/v1/test-op",
                &[label.as_bytes(), &(n as u64).to_be_bytes()],
            );
            (
                op,
                CentralRequest::Sync {
                    sealed,
                    reports: reports_digest(&[]),
                    mailbox: tagged_hash(b"tally/v1/test-mailbox", &[&op.0]),
                    last_sync: 0,
                },
            )
        };
        first.push(sync(
            "one",
            &spend(&scheme, "central", n, &issue, &k0, 0, VALUE),
        ));
        if n % FORGED_EVERY == FORGED_EVERY - 1 {
            // An Issue under the DCP's key that no Load registered (a
            // stolen issuing key): its upload is refused as a whole, in
            // whatever group of concurrent requests it lands, and the
            // uploads grouped with it settle as if it had not come.
            let forged = Issue::sign(
                &scheme.dcp,
                10_000 + n as u64,
                50,
                vec![Output {
                    value: Amount(VALUE),
                    owner: k0.public(),
                }],
            );
            first.push(sync(
                "forged",
                &spend(&scheme, "forged", n, &forged, &k0, 0, VALUE),
            ));
        }
        let two = spend(&scheme, "central", n, &issue, &k0, 1, VALUE);
        second.push(sync("two", &two));
        third.push(sync("again", &two));
        // A token settled for the first time by two copies of one request
        // at once (a DCP's retry racing its original).
        let fresh = loaded(20_000 + n as u64, &k0);
        fourth.push(sync(
            "twice",
            &spend(&scheme, "twice", n, &fresh, &k0, 0, VALUE),
        ));
    }
    // Part 0 of 2 sends the one-hop spends, part 1 the two-hop spends,
    // token by token from the same instant; then the repeats.
    let mut requests = first;
    requests.extend(second);
    let lines = central_processes(dir, db_args, &requests, 2);
    let again = central_processes(dir, db_args, &third, 1);
    // Each request twice, the copies in different request threads of one
    // process: in one group, or the second after the first's commit.
    let mut twice = fourth.clone();
    twice.extend(fourth);
    let twice = central_processes(dir, db_args, &twice, 1);
    let sum = |lines: &[String], key: &str| lines.iter().map(|l| field(l, key)).sum::<i64>();
    let forged = (TOKENS / FORGED_EVERY) as i64;
    assert_eq!(sum(&lines, "requests"), 2 * TOKENS as i64 + forged);
    assert_eq!(sum(&lines, "failed"), forged, "each forged upload refused");
    assert_eq!(sum(&again, "failed"), 0);
    assert_eq!(sum(&lines, "refused") + sum(&again, "refused"), 0);
    assert_eq!(sum(&lines, "settled"), 2 * TOKENS as i64);
    // Each token's second spend was found a double spend by whichever
    // process settled it second; the repeats are replays, not new ones.
    assert_eq!(sum(&lines, "double_spends"), TOKENS as i64);
    assert_eq!(sum(&again, "double_spends"), 0);
    // Both copies answered with the one settlement (same result twice).
    assert_eq!(sum(&twice, "failed"), 0);
    assert_eq!(sum(&twice, "settled"), 2 * TOKENS as i64);
    assert_eq!(sum(&twice, "double_spends"), 0);
    let (spent, doubles, loss, covers) = store
        .transact(|tx| {
            Ok::<_, SettlementError>((
                count(tx, "spent")?,
                count(tx, "double_spends")?,
                Ledger::balance(tx, ledger::LOSS)?,
                tx.query_one(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_journal WHERE code = 6",
                    &[],
                )?
                .ok_or_else(|| StoreError::Type("no row".into()))?
                .int(0)?,
            ))
        })
        .unwrap_or_else(|e| panic!("checks: {e}"));
    assert_eq!(spent, 3 * TOKENS as i64, "every token registered once");
    assert_eq!(doubles, TOKENS as i64, "one double spend per token");
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
fn two_central_bank_processes_settle_conflicting_uploads_once_on_postgres() {
    let Some((store, schema)) = tally_store::test_postgres_store("e2e_central_processes") else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but TALLY_TEST_DATABASE_URL is not: PostgreSQL is required");
        }
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = tally_store::test_database_url("e2e_central_processes").unwrap_or_default();
    race(
        &store,
        dir.path(),
        &[
            "--database-url".into(),
            url,
            "--schema".into(),
            schema.clone(),
        ],
    );
    let _ = store.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
}

#[test]
fn two_central_bank_processes_settle_conflicting_uploads_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("central.sqlite");
    let store = Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}"));
    race(
        &store,
        dir.path(),
        &["--database-url".into(), path.display().to_string()],
    );
}
