//! Conformance suite of tally-ledger's store (`src/db.rs`): every method
//! of [`LedgerDb`], [`SettlementDb`] and [`SettlementQueueDb`] held to its
//! contract, written once over a `&Store` and run on SQLite (in memory)
//! and PostgreSQL (a fresh schema; skipped loudly without
//! TALLY_TEST_DATABASE_URL, a failure under `CI`). Then the guard: no SQL
//! and no positional column read anywhere in `src/` but `db.rs`.

use std::collections::BTreeSet;

use tally_core::{Hash32, OutPoint};
use tally_ledger::db::{
    AccountRow, BalanceSums, DoubleSpendRow, IssuanceCounter, JournalEntry, LedgerDb,
    NewSettledRecord, NewSpent, QueueResultRow, RunningTotalRow, SettlementDb, SettlementQueueDb,
};
use tally_ledger::ledger::{self, AccountKind};
use tally_ledger::settlement::{self, NEVER_EXPIRES};
use tally_store::{Store, StoreError, Tx};

// ---- harness ------------------------------------------------------------------

fn migrate(s: &Store) {
    s.migrate(&[&ledger::MIGRATIONS, &settlement::MIGRATIONS])
        .unwrap_or_else(|e| panic!("migrations: {e}"));
}

fn sqlite_store() -> Store {
    let s = Store::sqlite_memory().unwrap_or_else(|e| panic!("sqlite: {e}"));
    migrate(&s);
    s
}

/// A migrated PostgreSQL schema, or `None` without a database (a failure
/// under `CI`).
fn postgres_store(test: &str) -> Option<(Store, String)> {
    let r = tally_store::test_postgres_store(test);
    if r.is_none() && std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set but TALLY_TEST_DATABASE_URL is not: PostgreSQL is required");
    }
    let (s, schema) = r?;
    migrate(&s);
    Some((s, schema))
}

fn drop_schema(s: &Store, schema: &str) {
    let _ = s.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
}

/// Runs each named `fn(&Store)` once on SQLite and once on PostgreSQL.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::sqlite_store());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some((s, schema)) = super::postgres_store(test) {
                        super::$name(&s);
                        super::drop_schema(&s, &schema);
                    }
                }
            )*
        }
    };
}

/// One transaction; panics on failure.
fn run<R>(s: &Store, f: impl FnMut(&mut dyn Tx) -> Result<R, StoreError>) -> R {
    s.transact(f)
        .unwrap_or_else(|e| panic!("transaction failed: {e}"))
}

/// One transaction that must fail; returns its error (it rolled back).
fn fails<R: std::fmt::Debug>(
    s: &Store,
    f: impl FnMut(&mut dyn Tx) -> Result<R, StoreError>,
) -> StoreError {
    match s.transact(f) {
        Ok(r) => panic!("expected a failure, got {r:?}"),
        Err(e) => e,
    }
}

fn h(n: u8) -> Hash32 {
    Hash32([n; 32])
}

/// A hash from a number (many distinct ids).
fn hn(n: u32) -> Hash32 {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[31] = 0xA5;
    Hash32(b)
}

fn is_constraint(e: &StoreError) -> bool {
    matches!(e, StoreError::Constraint(_))
}

// ---- LedgerDb -----------------------------------------------------------------

fn accounts_round_trip(s: &Store) {
    run(s, |tx| {
        assert_eq!(tx.account_kind("u:a")?, None, "absent account has no kind");
        assert_eq!(tx.account_balance("u:a")?, None);
        assert_eq!(tx.add_to_balance("u:a", 5)?, None, "absent account");
        tx.insert_account("u:a", AccountKind::User)?;
        tx.insert_account("dcp:1", AccountKind::DcpSettlement)?;
        assert_eq!(tx.account_kind("u:a")?, Some(AccountKind::User));
        assert_eq!(tx.account_kind("dcp:1")?, Some(AccountKind::DcpSettlement));
        // Migrations open the central bank's three accounts.
        assert_eq!(
            tx.account_kind(ledger::ISSUANCE)?,
            Some(AccountKind::Issuance)
        );
        assert_eq!(
            tx.account_kind(ledger::OFFLINE_FLOAT)?,
            Some(AccountKind::OfflineFloat)
        );
        assert_eq!(tx.account_kind(ledger::LOSS)?, Some(AccountKind::Loss));
        assert_eq!(tx.account_balance("u:a")?, Some(0), "opened at zero");
        assert_eq!(tx.add_to_balance("u:a", 7)?, Some(7));
        assert_eq!(tx.add_to_balance("u:a", -2)?, Some(5));
        assert_eq!(tx.account_balance("u:a")?, Some(5));
        Ok(())
    });
    let e = fails(s, |tx| tx.insert_account("u:a", AccountKind::User));
    assert!(is_constraint(&e), "duplicate account: {e:?}");
    // A user account never goes negative (CHECK), and the failed
    // transaction changed nothing.
    let e = fails(s, |tx| tx.add_to_balance("u:a", -6));
    assert!(is_constraint(&e), "negative user balance: {e:?}");
    assert_eq!(run(s, |tx| tx.account_balance("u:a")), Some(5));
}

fn account_pair_reads_both_legs_in_one_statement(s: &Store) {
    run(s, |tx| {
        tx.insert_account("u:a", AccountKind::User)?;
        tx.insert_account("u:b", AccountKind::User)?;
        tx.add_to_balance("u:b", 9)?;
        let mut rows = tx.account_pair("u:b", "u:a")?;
        rows.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(
            rows,
            vec![
                AccountRow {
                    id: "u:a".into(),
                    kind: AccountKind::User,
                    balance: 0
                },
                AccountRow {
                    id: "u:b".into(),
                    kind: AccountKind::User,
                    balance: 9
                },
            ]
        );
        let one = tx.account_pair("u:a", "u:missing")?;
        assert_eq!(one.len(), 1, "only existing accounts: {one:?}");
        assert_eq!(one[0].id, "u:a");
        assert!(tx.account_pair("u:x", "u:y")?.is_empty());
        assert_eq!(
            tx.account_pair("u:a", "u:a")?.len(),
            1,
            "one row per account"
        );
        Ok(())
    });
}

fn balances_hold_i64_extremes(s: &Store) {
    run(s, |tx| {
        tx.insert_account("u:rich", AccountKind::User)?;
        assert_eq!(tx.add_to_balance("u:rich", i64::MAX)?, Some(i64::MAX));
        assert_eq!(tx.account_balance("u:rich")?, Some(i64::MAX));
        // Issuance and loss may go negative, to the last i64.
        assert_eq!(
            tx.add_to_balance(ledger::ISSUANCE, i64::MIN)?,
            Some(i64::MIN)
        );
        assert_eq!(tx.account_balance(ledger::ISSUANCE)?, Some(i64::MIN));
        assert_eq!(tx.add_to_balance(ledger::LOSS, -1)?, Some(-1));
        Ok(())
    });
}

fn journal_round_trip_and_uniqueness(s: &Store) {
    let entry = |seq: i64, idem: &'static str, amount: i64| JournalEntry {
        seq,
        idem,
        digest: &[1, 2, 3],
        debit: "u:a",
        credit: "u:b",
        amount,
        code: ledger::code::TRANSFER,
    };
    let (s1, s2) = run(s, |tx| {
        assert_eq!(tx.journal_by_idem("t1")?, None);
        assert_eq!(tx.journal_entries()?, 0);
        let s1 = tx.next_journal_seq()?;
        let s2 = tx.next_journal_seq()?;
        assert!(s2 > s1, "sequence numbers increase within a process");
        tx.insert_journal(&entry(s1, "t1", 10))?;
        tx.insert_journal(&entry(s2, "t2", i64::MAX))?;
        Ok((s1, s2))
    });
    run(s, |tx| {
        let j = tx.journal_by_idem("t1")?.expect("journaled");
        assert_eq!((j.seq, j.digest.as_slice()), (s1, &[1u8, 2, 3][..]));
        assert_eq!(tx.journal_by_idem("t2")?.map(|j| j.seq), Some(s2));
        assert_eq!(tx.journal_entries()?, 2);
        assert!(
            tx.next_journal_seq()? > s2,
            "no sequence number handed out twice"
        );
        Ok(())
    });
    for bad in [
        entry(s2 + 1000, "t1", 1),
        entry(s1, "t3", 1),
        entry(s2 + 1001, "t4", 0),
    ] {
        let e = fails(s, |tx| tx.insert_journal(&bad));
        assert!(is_constraint(&e), "{bad:?}: {e:?}");
    }
    assert_eq!(
        run(s, |tx| tx.journal_entries()),
        2,
        "refused entries left nothing"
    );
}

fn running_totals_and_issuance_counters(s: &Store) {
    let sorted = |mut v: Vec<RunningTotalRow>| {
        v.sort_by_key(|r| format!("{r:?}"));
        v
    };
    let fresh = run(s, |tx| tx.running_total_rows());
    assert_eq!(
        sorted(fresh),
        sorted(vec![
            RunningTotalRow::Term { term: 0, total: 0 },
            RunningTotalRow::Term { term: 1, total: 0 },
            RunningTotalRow::Term { term: 3, total: 0 },
            RunningTotalRow::Term { term: 4, total: 0 },
            RunningTotalRow::Minted(0),
            RunningTotalRow::Redeemed(0),
        ]),
        "one row per invariant term and counter"
    );
    run(s, |tx| {
        assert_eq!(tx.add_to_total(1, 40)?, 1);
        assert_eq!(tx.add_to_total(0, -40)?, 1);
        assert_eq!(tx.add_to_total(2, 5)?, 0, "kind 2 counts in term 1: no row");
        tx.bump_issuance(IssuanceCounter::Minted, 40)?;
        tx.bump_issuance(IssuanceCounter::Redeemed, 3)?;
        tx.bump_issuance(IssuanceCounter::Redeemed, 4)?;
        assert_eq!(tx.issuance(IssuanceCounter::Minted)?, Some(40));
        assert_eq!(tx.issuance(IssuanceCounter::Redeemed)?, Some(7));
        Ok(())
    });
    let rows = run(s, |tx| tx.running_total_rows());
    assert_eq!(rows.len(), 6);
    for want in [
        RunningTotalRow::Term { term: 1, total: 40 },
        RunningTotalRow::Term {
            term: 0,
            total: -40,
        },
        RunningTotalRow::Minted(40),
        RunningTotalRow::Redeemed(7),
    ] {
        assert!(rows.contains(&want), "{want:?} not in {rows:?}");
    }
}

fn balance_sums_per_term(s: &Store) {
    run(s, |tx| {
        assert_eq!(
            tx.balance_sums()?,
            BalanceSums {
                accounts: 0,
                offline_float: 0,
                loss: 0,
                issuance: 0,
                negative_accounts: 0
            }
        );
        tx.insert_account("dcp:1", AccountKind::DcpSettlement)?;
        tx.insert_account("u:a", AccountKind::User)?;
        tx.add_to_balance("dcp:1", 100)?;
        tx.add_to_balance("u:a", 20)?;
        tx.add_to_balance(ledger::OFFLINE_FLOAT, 30)?;
        tx.add_to_balance(ledger::LOSS, -5)?;
        tx.add_to_balance(ledger::ISSUANCE, -145)?;
        assert_eq!(
            tx.balance_sums()?,
            BalanceSums {
                accounts: 120,
                offline_float: 30,
                loss: -5,
                issuance: -145,
                negative_accounts: 0
            }
        );
        Ok(())
    });
}

// ---- SettlementDb ---------------------------------------------------------------

fn issued_round_trip(s: &Store) {
    run(s, |tx| {
        assert_eq!(tx.issued(&h(1))?, None);
        tx.insert_issued(&h(1), i64::MAX, u32::MAX, b"issue body")?;
        tx.insert_issued(&h(2), 5, 1, b"other")?;
        let got = tx.issued(&h(1))?.expect("registered");
        assert_eq!((got.value, got.dcp), (i64::MAX, i64::from(u32::MAX)));
        assert_eq!(tx.issued(&h(2))?.map(|r| (r.value, r.dcp)), Some((5, 1)));
        Ok(())
    });
    let e = fails(s, |tx| tx.insert_issued(&h(1), 1, 1, b"again"));
    assert!(is_constraint(&e), "duplicate Issue: {e:?}");
    assert_eq!(
        run(s, |tx| tx.issued(&h(1))).map(|r| r.value),
        Some(i64::MAX)
    );
}

fn spent(record: Hash32, idx: i64, expiry: i64, by: Hash32) -> NewSpent {
    NewSpent {
        record: record.0.to_vec(),
        idx,
        expiry_epoch: expiry,
        consumed_by: by.0.to_vec(),
    }
}

fn settled(id: Hash32, expiry: i64) -> NewSettledRecord {
    NewSettledRecord {
        id: id.0.to_vec(),
        body: vec![id.0[0]; 3],
        expiry_epoch: expiry,
    }
}

fn registry_view_answers_exactly_what_was_asked(s: &Store) {
    run(s, |tx| {
        let empty = tx.registry_view(&[], &[], &[], &[NEVER_EXPIRES])?;
        assert_eq!(empty.horizon, 0, "fresh horizon");
        assert!(empty.issues.is_empty() && empty.settled.is_empty() && empty.consumed.is_empty());
        tx.insert_issued(&h(1), 10, 1, b"i1")?;
        tx.insert_issued(&h(9), 10, 1, b"i9")?;
        tx.insert_settled(
            &[settled(h(2), 7), settled(h(8), 7)],
            &[
                spent(h(1), 0, 7, h(2)),
                spent(h(1), 1, 7, h(3)),
                spent(h(9), 0, 7, h(8)),
            ],
        )?;
        // h(3) is asked for and absent; h(9) / h(8) exist and are not asked.
        let v = tx.registry_view(
            &[h(1), h(3)],
            &[h(2), h(3)],
            &[h(1), h(4)],
            &[7, NEVER_EXPIRES],
        )?;
        assert_eq!(v.issues, BTreeSet::from([h(1).0.to_vec()]));
        assert_eq!(v.settled, BTreeSet::from([h(2).0.to_vec()]));
        assert_eq!(v.consumed.len(), 2, "{:?}", v.consumed);
        assert_eq!(
            v.consumed.get(&(h(1).0.to_vec(), 0)),
            Some(&h(2).0.to_vec())
        );
        assert_eq!(
            v.consumed.get(&(h(1).0.to_vec(), 1)),
            Some(&h(3).0.to_vec())
        );
        // Duplicates in a request are harmless.
        let d = tx.registry_view(&[h(1), h(1)], &[h(2), h(2)], &[h(1), h(1)], &[7])?;
        assert_eq!(
            (d.issues.len(), d.settled.len(), d.consumed.len()),
            (1, 1, 2)
        );
        Ok(())
    });
}

fn registry_view_of_a_large_batch_is_chunked_not_truncated(s: &Store) {
    // Above the single-statement size (half of the 512-value IN list).
    const N: u32 = 700;
    run(s, |tx| {
        let ids: Vec<Hash32> = (0..N).map(hn).collect();
        let rows: Vec<NewSpent> = ids.iter().map(|r| spent(*r, 3, 11, h(77))).collect();
        let recs: Vec<NewSettledRecord> = ids.iter().map(|r| settled(*r, 11)).collect();
        tx.insert_settled(&recs, &rows)?;
        for id in ids.iter().step_by(50) {
            tx.insert_issued(id, 1, 1, b"i")?;
        }
        let v = tx.registry_view(&ids, &ids, &ids, &[11, NEVER_EXPIRES])?;
        assert_eq!(v.horizon, 0);
        assert_eq!(v.settled.len(), N as usize);
        assert_eq!(v.consumed.len(), N as usize);
        assert_eq!(v.issues.len(), N.div_ceil(50) as usize);
        assert!(v.consumed.values().all(|c| *c == h(77).0.to_vec()));
        Ok(())
    });
}

fn settled_rows_are_written_in_chunks(s: &Store) {
    // 0, 1, a non-power of two, and more than one multi-row INSERT.
    for (round, n) in [(0u32, 0u32), (1, 1), (2, 3), (3, 300)] {
        let ids: Vec<Hash32> = (0..n).map(|i| hn(round * 1000 + i)).collect();
        run(s, |tx| {
            let recs: Vec<NewSettledRecord> = ids.iter().map(|i| settled(*i, 5)).collect();
            let rows: Vec<NewSpent> = ids
                .iter()
                .map(|i| spent(*i, 0, NEVER_EXPIRES, h(round as u8)))
                .collect();
            tx.insert_settled(&recs, &rows)
        });
        run(s, |tx| {
            for id in &ids {
                assert_eq!(tx.settled_record_body(&id.0)?, Some(vec![id.0[0]; 3]));
                assert_eq!(tx.settled_record_expiry(id)?, Some(5));
                let op = OutPoint {
                    record: *id,
                    index: 0,
                };
                assert_eq!(tx.spent_consumer(&op)?, Some(h(round as u8)));
            }
            Ok(())
        });
    }
    // A key written since it was read as absent: the transaction must be
    // retried (Conflict), not refused.
    let e = fails(s, |tx| tx.insert_settled(&[settled(hn(3000), 5)], &[]));
    assert_eq!(e, StoreError::Conflict, "duplicate settled record");
    let e = fails(s, |tx| {
        tx.insert_settled(&[], &[spent(hn(3000), 0, NEVER_EXPIRES, h(1))])
    });
    assert_eq!(e, StoreError::Conflict, "duplicate registration");
}

fn spent_registry_single_rows(s: &Store) {
    let op = OutPoint {
        record: h(4),
        index: 255,
    };
    run(s, |tx| {
        assert_eq!(tx.spent_consumer(&op)?, None);
        assert_eq!(tx.settled_record_expiry(&h(4))?, None);
        assert_eq!(tx.settled_record_body(&h(4).0)?, None);
        tx.insert_spent(&spent(h(4), 255, NEVER_EXPIRES, h(5)))?;
        assert_eq!(tx.spent_consumer(&op)?, Some(h(5)));
        let other = OutPoint {
            record: h(4),
            index: 254,
        };
        assert_eq!(tx.spent_consumer(&other)?, None, "keyed by (record, index)");
        Ok(())
    });
    let e = fails(s, |tx| {
        tx.insert_spent(&spent(h(4), 255, NEVER_EXPIRES, h(6)))
    });
    assert!(is_constraint(&e), "second registration: {e:?}");
    assert_eq!(
        run(s, |tx| tx.spent_consumer(&op)),
        Some(h(5)),
        "first stands"
    );
}

fn double_spend_evidence(s: &Store) {
    let ds = |seq: i64, idx: i64, second: u8, value: i64| DoubleSpendRow {
        seq,
        record: h(1),
        idx,
        first_record: h(2).0.to_vec(),
        second_record: h(second),
        offender_key: vec![9; 33],
        value,
    };
    run(s, |tx| {
        assert_eq!(tx.last_double_spend_seq()?, 0);
        assert_eq!(tx.double_spend_count()?, 0);
        assert!(tx.double_spends()?.is_empty());
        assert!(!tx.double_spend_known(&h(1), 0, &h(3))?);
        // Written out of order: read back by seq.
        tx.insert_double_spend(&ds(2, 0, 4, 1))?;
        tx.insert_double_spend(&ds(1, 0, 3, i64::MAX))?;
        assert_eq!(tx.last_double_spend_seq()?, 2);
        assert_eq!(tx.double_spend_count()?, 2);
        assert_eq!(
            tx.double_spends()?,
            vec![ds(1, 0, 3, i64::MAX), ds(2, 0, 4, 1)]
        );
        assert!(tx.double_spend_known(&h(1), 0, &h(3))?);
        assert!(!tx.double_spend_known(&h(1), 1, &h(3))?, "another output");
        assert!(!tx.double_spend_known(&h(1), 0, &h(5))?, "another consumer");
        Ok(())
    });
    let e = fails(s, |tx| tx.insert_double_spend(&ds(3, 0, 3, 1)));
    assert!(is_constraint(&e), "same evidence twice: {e:?}");
    assert_eq!(run(s, |tx| tx.double_spend_count()), 2);
}

fn horizon_and_pruning(s: &Store) {
    run(s, |tx| {
        assert_eq!(tx.spent_horizon()?, 0);
        tx.insert_settled(
            &[
                settled(h(1), 3),
                settled(h(2), 10),
                settled(h(3), NEVER_EXPIRES),
            ],
            &[
                spent(h(1), 0, 3, h(2)),
                spent(h(1), 1, 9, h(2)),
                spent(h(2), 0, 10, h(3)),
                spent(h(3), 0, NEVER_EXPIRES, h(4)),
            ],
        )?;
        tx.set_spent_horizon(10)?;
        assert_eq!(tx.spent_horizon()?, 10);
        Ok(())
    });
    let deleted = run(s, |tx| {
        let n = tx.delete_spent_before(10)?;
        let r = tx.delete_settled_records_before(10)?;
        Ok((n, r))
    });
    assert_eq!(deleted, (2, 1), "only what expired before the horizon");
    run(s, |tx| {
        let at = |record, index| OutPoint { record, index };
        assert_eq!(tx.spent_consumer(&at(h(1), 0))?, None);
        assert_eq!(tx.spent_consumer(&at(h(1), 1))?, None);
        assert_eq!(
            tx.spent_consumer(&at(h(2), 0))?,
            Some(h(3)),
            "expiry = horizon stays"
        );
        assert_eq!(tx.spent_consumer(&at(h(3), 0))?, Some(h(4)));
        assert_eq!(tx.settled_record_expiry(&h(1))?, None);
        assert_eq!(tx.settled_record_expiry(&h(2))?, Some(10));
        assert_eq!(tx.settled_record_expiry(&h(3))?, Some(NEVER_EXPIRES));
        // Idempotent re-run.
        assert_eq!(tx.delete_spent_before(10)?, 0);
        assert_eq!(tx.delete_settled_records_before(10)?, 0);
        Ok(())
    });
}

/// Rows this code never writes (an unknown account kind, a missing
/// horizon) are typed store errors, not guesses.
fn malformed_rows_are_typed_errors(s: &Store) {
    run(s, |tx| {
        tx.execute(
            "INSERT INTO ledger_accounts (id, kind, balance) VALUES ('u:odd', 9, 0)",
            &[],
        )?;
        tx.execute("DELETE FROM settlement_meta WHERE k = 'spent_horizon'", &[])?;
        Ok(())
    });
    let is_type = |e: StoreError| matches!(e, StoreError::Type(_));
    assert!(is_type(fails(s, |tx| tx.account_kind("u:odd"))));
    assert!(is_type(
        fails(s, |tx| tx.account_pair("u:odd", ledger::LOSS))
    ));
    assert!(is_type(fails(s, |tx| tx.spent_horizon())));
    assert!(is_type(fails(s, |tx| tx.registry_view(
        &[],
        &[],
        &[],
        &[NEVER_EXPIRES]
    ))));
}

// ---- SettlementQueueDb --------------------------------------------------------

fn queue_enqueue_and_claim(s: &Store) {
    let ids = run(s, |tx| {
        assert!(tx.enqueue(&[])?.is_empty());
        assert_eq!(tx.pending_count()?, 0);
        tx.enqueue(&(0u8..6).map(|i| vec![i; 4]).collect::<Vec<_>>())
    });
    assert_eq!(ids.len(), 6);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
    run(s, |tx| {
        assert_eq!(tx.pending_count()?, 6);
        assert_eq!(
            tx.claimable(100, 4)?,
            ids[..4].to_vec(),
            "lowest first, limited"
        );
        let lane: Vec<i64> = ids.iter().copied().filter(|i| i % 2 == 1).collect();
        assert_eq!(tx.claimable_in_lane(100, 2, 1, 10)?, lane);
        // Lease two of them until 200; the others stay claimable.
        let mut taken = tx.take_lease("w1", 200, 100, &ids[..2])?;
        taken.sort_by_key(|c| c.id);
        assert_eq!(
            taken.iter().map(|c| c.id).collect::<Vec<_>>(),
            ids[..2].to_vec()
        );
        assert_eq!(taken[1].body, vec![1u8; 4], "the body comes with the lease");
        assert!(
            tx.take_lease("w2", 300, 150, &ids[..2])?.is_empty(),
            "a running lease is not taken again"
        );
        assert_eq!(tx.claimable(150, 10)?, ids[2..].to_vec());
        // After the lease ran out, the rows are claimable again.
        assert_eq!(tx.claimable(201, 10)?, ids.clone());
        assert_eq!(tx.take_lease("w2", 400, 201, &ids[..1])?.len(), 1);
        Ok(())
    });
}

fn queue_done_and_results(s: &Store) {
    let ids = run(s, |tx| tx.enqueue(&[vec![1], vec![2], vec![3]]));
    run(s, |tx| {
        assert_eq!(tx.pending_among(&ids)?, ids.iter().copied().collect());
        assert_eq!(tx.mark_done(&ids[..2])?, 2);
        assert_eq!(
            tx.mark_done(&ids[..2])?,
            0,
            "idempotent: done rows stay done"
        );
        assert_eq!(tx.pending_among(&ids)?, BTreeSet::from([ids[2]]));
        assert_eq!(tx.pending_count()?, 1);
        assert!(tx.claimable(i64::MAX, 10)?.iter().all(|i| *i == ids[2]));
        tx.insert_results(&[
            QueueResultRow {
                id: ids[0],
                code: 0,
                registered: 3,
                already: 0,
                double_spends: 1,
                settled_by: "w1",
            },
            QueueResultRow {
                id: ids[1],
                code: 2201,
                registered: 0,
                already: i64::MAX,
                double_spends: 0,
                settled_by: "w2",
            },
        ])?;
        let rows = tx.query(
            "SELECT id, code, registered, already, double_spends, settled_by FROM settlement_results ORDER BY id",
            &[],
        )?;
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[1].int(1)?, rows[1].int(3)?, rows[1].text(5)?),
            (2201, i64::MAX, "w2")
        );
        Ok(())
    });
    let e = fails(s, |tx| {
        tx.insert_results(&[QueueResultRow {
            id: ids[0],
            code: 0,
            registered: 0,
            already: 0,
            double_spends: 0,
            settled_by: "w3",
        }])
    });
    assert_eq!(e, StoreError::Conflict, "a result stored twice");
    // Many ids: the pending look-up is chunked, not truncated.
    let many = run(s, |tx| tx.enqueue(&vec![vec![0u8]; 1100]));
    assert_eq!(run(s, |tx| tx.pending_among(&many)).len(), 1100);
}

conformance!(
    accounts_round_trip,
    account_pair_reads_both_legs_in_one_statement,
    balances_hold_i64_extremes,
    journal_round_trip_and_uniqueness,
    running_totals_and_issuance_counters,
    balance_sums_per_term,
    issued_round_trip,
    registry_view_answers_exactly_what_was_asked,
    registry_view_of_a_large_batch_is_chunked_not_truncated,
    settled_rows_are_written_in_chunks,
    spent_registry_single_rows,
    double_spend_evidence,
    horizon_and_pruning,
    malformed_rows_are_typed_errors,
    queue_enqueue_and_claim,
    queue_done_and_results,
);

/// The PostgreSQL catalogue methods (partitions of the spent registry):
/// PostgreSQL only.
#[test]
fn postgres_spent_partitions() {
    let Some((s, schema)) = postgres_store("db_conformance::postgres_spent_partitions") else {
        return;
    };
    run(&s, |tx| {
        assert!(
            tx.spent_range_partitioned()?,
            "range-partitioned after migrations"
        );
        let parts = tx.spent_partitions()?;
        assert!(
            parts.contains(&"spent_never".to_string())
                && parts.contains(&"spent_default".to_string()),
            "{parts:?}"
        );
        assert!(tx.relation_exists("spent_never")?);
        assert!(!tx.relation_exists("spent_e16")?);
        Ok(())
    });
    run(&s, |tx| tx.create_spent_partition("spent_e16", 16, 32));
    run(&s, |tx| {
        assert!(tx.relation_exists("spent_e16")?);
        assert!(tx.spent_partitions()?.contains(&"spent_e16".to_string()));
        // A token of epoch 20 lands in it and is found through the view.
        tx.insert_spent(&spent(h(1), 0, 20, h(2)))?;
        let v = tx.registry_view(&[], &[], &[h(1)], &[20])?;
        assert_eq!(v.consumed.len(), 1);
        Ok(())
    });
    run(&s, |tx| tx.drop_spent_partition("spent_e16"));
    run(&s, |tx| {
        assert!(!tx.relation_exists("spent_e16")?);
        assert_eq!(
            tx.spent_consumer(&OutPoint {
                record: h(1),
                index: 0
            })?,
            None,
            "dropped with its partition"
        );
        Ok(())
    });
    drop_schema(&s, &schema);
}

// ---- the guard ------------------------------------------------------------------

#[path = "../../tally-store/tests/common/sql_guard.rs"]
mod sql_guard;

#[test]
fn the_guard_finds_each_kind_of_violation() {
    sql_guard::self_test();
}

/// SQL lives in `src/db.rs` only.
#[test]
fn sql_lives_only_in_db_rs() {
    let found = sql_guard::scan_crate(env!("CARGO_MANIFEST_DIR"), &["db.rs"]);
    assert!(
        found.is_empty(),
        "SQL or positional row reads outside src/db.rs:\n{}",
        found.join("\n")
    );
}
