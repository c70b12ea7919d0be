//! Settlement that scales out (issue 11, item 5), on SQLite and
//! PostgreSQL: a batch settled with a constant number of statements gives
//! every package the answer one-at-a-time settlement gives it; the spent
//! registry is pruned by expiry (PostgreSQL: whole partitions dropped) and
//! refuses packages past its horizon; the hash-partitioned layout for a
//! distributed engine works on plain PostgreSQL; journal sequence numbers
//! from two stores (two processes' worth of connections) never collide.

#[macro_use]
mod common;

use common::{audit, balance, count, query, run};
use tally_core::policy::device_class::PHONE;
use tally_core::testkit::{Scheme, key};
use tally_core::verify::{NoCache, verify_package_for_settlement};
use tally_core::{
    Amount, Issue, OutPoint, Output, Package, Record, SecretKey, Suite, Transfer, VerifiedPackage,
    VerifyParams,
};
use tally_ledger::ledger::{self, AccountKind, Ledger, LedgerError, TransferRequest, code};
use tally_ledger::settlement::{
    NEVER_EXPIRES, SPENT_PARTITION_EPOCHS, Settlement, SettlementError, SettlementOutcome,
    spent_hash_layout_ddl,
};
use tally_store::{Row, Store, StoreError, Tx, TxFailure};

const DCP_ACCOUNT: &str = "dcp:1";
const VALUE: u64 = 1_000;

fn transfer(input: OutPoint, to: &SecretKey, nonce: u8, owner: &SecretKey) -> Transfer {
    let mut t = Transfer {
        inputs: vec![input],
        outputs: vec![Output {
            value: Amount(VALUE),
            owner: to.public(),
        }],
        nonce: [nonce; 16],
        counter: 1,
        signatures: Vec::new(),
        confidential: None,
        stream: None,
    };
    t.signatures = vec![owner.sign(&t.id().0)];
    t
}

/// An Issue expiring at `expiry` to a fresh key of `label`.
fn issue(scheme: &Scheme, label: &str, serial: u64, expiry: u32) -> (Issue, SecretKey) {
    let k = key(Suite::Ed25519, format!("scale/{label}/0").as_bytes());
    let i = Issue::sign(
        &scheme.dcp,
        serial,
        expiry,
        vec![Output {
            value: Amount(VALUE),
            owner: k.public(),
        }],
    );
    (i, k)
}

/// A package: `via` hops between fresh keys after `issue`, then a
/// transfer to the DCP key. `nonce` tells two spends of one token apart.
fn chain(
    scheme: &Scheme,
    label: &str,
    start: (&Issue, &SecretKey),
    via: usize,
    nonce: u8,
) -> Package {
    let (iss, k0) = start;
    let mut ancestry = vec![Record::Issue(iss.clone())];
    let mut keys = vec![k0.clone()];
    let mut prev = OutPoint {
        record: iss.id(),
        index: 0,
    };
    for h in 1..=via {
        let k = key(
            Suite::Ed25519,
            format!("scale/{label}/{nonce}/{h}").as_bytes(),
        );
        let t = transfer(prev, &k, nonce, &keys[h - 1]);
        prev = OutPoint {
            record: t.id(),
            index: 0,
        };
        ancestry.push(Record::Transfer(t));
        keys.push(k);
    }
    let last = transfer(prev, &scheme.dcp, nonce, keys.last().unwrap_or(k0));
    Package {
        transfer: last,
        ancestry,
        certificates: keys
            .iter()
            .map(|k| scheme.certify(k.public(), PHONE, 0))
            .collect(),
    }
}

fn verified(scheme: &Scheme, p: &Package) -> VerifiedPackage {
    verify_package_for_settlement(
        p.clone(),
        &scheme.trust(),
        VerifyParams {
            epoch: 0,
            history_records_max: 1024,
            signature_batch_max: usize::MAX,
        },
        &mut NoCache,
    )
    .unwrap_or_else(|e| panic!("verification: {e}"))
}

/// Registers the Issue and moves its value into the float (a DCP load).
fn book(s: &Store, i: &Issue) {
    run(s, |tx| {
        Ledger::ensure_account(tx, DCP_ACCOUNT, AccountKind::DcpSettlement)?;
        Settlement::register_issue(tx, 1, i)?;
        Ledger::mint(tx, &format!("mint:{}", i.id()), DCP_ACCOUNT, VALUE)?;
        Ledger::transfer(
            tx,
            &TransferRequest {
                idem: format!("load:{}", i.id()),
                debit: DCP_ACCOUNT.into(),
                credit: ledger::OFFLINE_FLOAT.into(),
                amount: VALUE,
                code: code::LOAD,
            },
        )?;
        Ok::<_, SettlementError>(())
    });
}

type Answer = Result<(usize, usize, usize, u64), u16>;

fn answer(r: &Result<SettlementOutcome, SettlementError>) -> Answer {
    match r {
        Ok(o) => Ok((
            o.registered,
            o.already,
            o.double_spends.len(),
            o.loss_booked,
        )),
        Err(e) => Err(e.code()),
    }
}

fn registry_in(tx: &mut dyn Tx) -> Result<Vec<Vec<Row>>, StoreError> {
    let mut v = Vec::new();
    for q in [
        "SELECT record, idx, expiry_epoch, consumed_by FROM spent ORDER BY record, idx",
        "SELECT id, body, expiry_epoch FROM settled_records ORDER BY id",
        "SELECT seq, record, idx, first_record, second_record, offender_key, value FROM double_spends ORDER BY seq",
        "SELECT id, balance FROM ledger_accounts ORDER BY id",
        "SELECT idem, debit, credit, amount, code FROM ledger_journal ORDER BY idem",
    ] {
        v.push(tx.query(q, &[])?);
    }
    Ok(v)
}

/// One batch, against the same packages settled one at a time (in a
/// transaction rolled back afterwards): the same answers, the same rows.
fn batch_answers_as_one_at_a_time(s: &Store) {
    let scheme = Scheme::new(Suite::Ed25519);
    let (i1, k1) = issue(&scheme, "a", 1, 40);
    let (i2, k2) = issue(&scheme, "b", 2, 40);
    let (fake, kf) = issue(&scheme, "fake", 3, 40);
    book(s, &i1);
    book(s, &i2);
    // A spends I1's token; B spends it again one hop deep (a double
    // spend in an ancestry: honoured, booked to loss); C has a root no
    // DCP registered; D is A again; E is an honest one-hop package whose
    // ancestry is shared with F (F pays on from E's token's first hop).
    let a = chain(&scheme, "a", (&i1, &k1), 0, 1);
    let b = chain(&scheme, "a", (&i1, &k1), 1, 2);
    let c = chain(&scheme, "fake", (&fake, &kf), 0, 1);
    let e = chain(&scheme, "b", (&i2, &k2), 2, 1);
    let f = chain(&scheme, "b", (&i2, &k2), 2, 1);
    let pkgs = [&a, &c, &b, &a, &e, &f];
    let v: Vec<VerifiedPackage> = pkgs.iter().map(|p| verified(&scheme, p)).collect();
    let idems: Vec<String> = (0..v.len()).map(|i| format!("pkg:{i}")).collect();
    let items: Vec<(&VerifiedPackage, &str)> =
        v.iter().zip(&idems).map(|(p, i)| (p, i.as_str())).collect();

    let mut one_by_one: Option<(Vec<Answer>, Vec<Vec<Row>>)> = None;
    let rolled_back: Result<(), SettlementError> = s.transact(|tx| {
        let mut answers = Vec::new();
        for (p, idem) in &items {
            answers.push(answer(&Settlement::settle(tx, p, idem)));
        }
        one_by_one = Some((answers, registry_in(tx)?));
        Err(SettlementError::Ledger(LedgerError::Store(StoreError::Db(
            "roll back".into(),
        ))))
    });
    assert!(rolled_back.is_err());
    let (expected, expected_rows) = one_by_one.unwrap_or_else(|| panic!("no sequential run"));
    assert_eq!(
        expected,
        vec![
            Ok((1, 0, 0, 0)),
            Err(30),
            Ok((1, 0, 1, VALUE)),
            Ok((0, 1, 0, 0)),
            Ok((3, 0, 0, 0)),
            Ok((0, 3, 0, 0)),
        ]
    );
    let (answers, rows) = run(s, |tx| {
        let r = Settlement::settle_batch(tx, &items)?;
        Ok::<_, SettlementError>((r.iter().map(answer).collect::<Vec<_>>(), registry_in(tx)?))
    });
    assert_eq!(answers, expected);
    assert_eq!(rows, expected_rows);
    assert_eq!(count(s, "spent"), 1 + 1 + 3);
    assert_eq!(count(s, "double_spends"), 1);
    assert_eq!(balance(s, ledger::LOSS), -(VALUE as i64));
    // Every registration carries its token's expiry.
    assert_eq!(
        query(
            s,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM spent WHERE expiry_epoch = 40"
        )[0]
        .int(0)
        .unwrap(),
        5
    );
    audit(s);
    // The batch again: all replays.
    let again = run(s, |tx| {
        Ok::<_, SettlementError>(
            Settlement::settle_batch(tx, &items)?
                .iter()
                .map(answer)
                .collect::<Vec<_>>(),
        )
    });
    assert_eq!(
        again,
        vec![
            Ok((0, 1, 0, 0)),
            Err(30),
            Ok((0, 1, 0, 0)),
            Ok((0, 1, 0, 0)),
            Ok((0, 3, 0, 0)),
            Ok((0, 3, 0, 0))
        ]
    );
    assert_eq!(count(s, "double_spends"), 1);
}

fn partitions(s: &Store) -> Vec<String> {
    query(
        s,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace WHERE p.relname = 'spent' AND n.nspname = current_schema() ORDER BY c.relname",
    )
    .iter()
    .map(|r| r.text(0).unwrap().to_string())
    .collect()
}

fn spent_below(s: &Store, epoch: i64) -> i64 {
    query(
        s,
        &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM spent WHERE expiry_epoch < {epoch}"),
    )[0]
    .int(0)
    .unwrap()
}

/// Tokens that expired before the horizon are pruned (PostgreSQL: their
/// partition dropped) and packages consuming them are refused with code
/// 31, changing nothing; later tokens stay registered and replays of them
/// are still recognised.
fn pruning_drops_expired_tokens_and_refuses_them_afterwards(s: &Store) {
    let scheme = Scheme::new(Suite::Ed25519);
    let made = Settlement::prepare_partitions(s, 0, 120).unwrap_or_else(|e| panic!("{e}"));
    if s.backend() == "postgres" {
        assert_eq!(made, (120 / SPENT_PARTITION_EPOCHS + 1) as usize);
        // Idempotent.
        assert_eq!(Settlement::prepare_partitions(s, 0, 120).unwrap_or(99), 0);
    } else {
        assert_eq!(made, 0);
    }
    let (old, ko) = issue(&scheme, "old", 1, 10);
    let (new, kn) = issue(&scheme, "new", 2, 100);
    book(s, &old);
    book(s, &new);
    let p_old = chain(&scheme, "old", (&old, &ko), 2, 1);
    let p_new = chain(&scheme, "new", (&new, &kn), 2, 1);
    let (v_old, v_new) = (verified(&scheme, &p_old), verified(&scheme, &p_new));
    for (v, idem) in [(&v_old, "old"), (&v_new, "new")] {
        let o = run(s, |tx| Settlement::settle(tx, v, idem));
        assert_eq!(o.registered, 3);
    }
    assert_eq!(spent_below(s, 50), 3);
    if s.backend() == "postgres" {
        // Rows are in their epoch's partition, not in the default one.
        let n = |t: &str| {
            query(s, &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {t}"))[0]
                .int(0)
                .unwrap()
        };
        assert_eq!(
            (n("spent_e0"), n("spent_e96"), n("spent_default")),
            (3, 3, 0)
        );
    }
    let (dropped, deleted) = Settlement::prune(s, 50).unwrap_or_else(|e| panic!("{e}"));
    if s.backend() == "postgres" {
        // Buckets [0,16), [16,32), [32,48) lie wholly below 50.
        assert_eq!((dropped, deleted), (3, 0));
        let left = partitions(s);
        assert!(!left.contains(&"spent_e0".to_string()), "{left:?}");
        assert!(left.contains(&"spent_e48".to_string()), "{left:?}");
    } else {
        assert_eq!((dropped, deleted), (0, 3));
    }
    assert_eq!(spent_below(s, 50), 0);
    assert_eq!(count(s, "spent"), 3);
    assert_eq!(count(s, "settled_records"), 3);
    // Past the horizon: refused, nothing written.
    let before = run(s, |tx| registry_in(tx));
    let r = run(s, |tx| match Settlement::settle(tx, &v_old, "old-again") {
        Err(e) if e.is_conflict() => Err(e),
        r => Ok(r),
    });
    assert_eq!(r.as_ref().map_err(SettlementError::code), Err(31));
    assert!(matches!(
        r,
        Err(SettlementError::BeyondHorizon {
            expiry_epoch: 10,
            horizon: 50
        })
    ));
    assert_eq!(run(s, |tx| registry_in(tx)), before);
    // Live tokens: still known.
    let o = run(s, |tx| Settlement::settle(tx, &v_new, "new-again"));
    assert_eq!((o.registered, o.already), (0, 3));
    // The horizon never moves back.
    Settlement::prune(s, 20).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(s, |tx| Settlement::horizon(tx)), 50);
    audit(s);
}

/// A stranded output consumed by recovery takes the expiry recorded with
/// its settled transfer; an unknown one is never pruned.
fn stranded_outputs_keep_their_expiry(s: &Store) {
    let scheme = Scheme::new(Suite::Ed25519);
    let (i, k) = issue(&scheme, "st", 1, 30);
    book(s, &i);
    let p = chain(&scheme, "st", (&i, &k), 1, 1);
    let v = verified(&scheme, &p);
    run(s, |tx| Settlement::settle(tx, &v, "st"));
    let out = OutPoint {
        record: v.transfer_id(),
        index: 0,
    };
    let by = tally_core::crypto::tagged_hash(b"test", &[b"recovery"]);
    assert!(run(s, |tx| Settlement::consume_stranded(tx, &out, &by)));
    let unknown = OutPoint {
        record: by,
        index: 0,
    };
    assert!(run(s, |tx| Settlement::consume_stranded(tx, &unknown, &by)));
    let e = |op: &OutPoint| {
        run(s, |tx| {
            tx.query_one(
                "SELECT expiry_epoch FROM spent WHERE record = $1 AND idx = 0",
                &[op.record.0.as_slice().into()],
            )
        })
        .unwrap_or_else(|| panic!("not registered"))
        .int(0)
        .unwrap()
    };
    assert_eq!((e(&out), e(&unknown)), (30, NEVER_EXPIRES));
}

/// A batch larger than one `UNION ALL` look-up takes (more than 256
/// transfers) is looked up in chunks, with the same answers.
fn large_batch_is_looked_up_in_chunks(s: &Store) {
    let scheme = Scheme::new(Suite::Ed25519);
    let mut vs = Vec::new();
    for n in 0..300u64 {
        let (i, k) = issue(&scheme, &format!("l{n}"), n + 1, 40);
        book(s, &i);
        vs.push(verified(
            &scheme,
            &chain(&scheme, &format!("l{n}"), (&i, &k), 0, 1),
        ));
    }
    // One token spent twice inside the batch.
    let (i0, k0) = issue(&scheme, "l0", 1, 40);
    vs.push(verified(&scheme, &chain(&scheme, "l0", (&i0, &k0), 1, 7)));
    let idems: Vec<String> = (0..vs.len()).map(|n| format!("l:{n}")).collect();
    let items: Vec<(&VerifiedPackage, &str)> = vs
        .iter()
        .zip(&idems)
        .map(|(v, i)| (v, i.as_str()))
        .collect();
    let answers = run(s, |tx| {
        Ok::<_, SettlementError>(
            Settlement::settle_batch(tx, &items)?
                .iter()
                .map(answer)
                .collect::<Vec<_>>(),
        )
    });
    assert!(
        answers[..300].iter().all(|a| *a == Ok((1, 0, 0, 0))),
        "{answers:?}"
    );
    assert_eq!(answers[300], Ok((1, 0, 1, VALUE)));
    let again = run(s, |tx| {
        Ok::<_, SettlementError>(
            Settlement::settle_batch(tx, &items)?
                .iter()
                .map(answer)
                .collect::<Vec<_>>(),
        )
    });
    assert!(
        again[..300].iter().all(|a| *a == Ok((0, 1, 0, 0))),
        "{again:?}"
    );
    assert_eq!(again[300], Ok((0, 1, 0, 0)));
    assert_eq!(count(s, "spent"), 301);
    assert_eq!(count(s, "double_spends"), 1);
    audit(s);
}

on_both_backends!(
    large_batch_is_looked_up_in_chunks,
    batch_answers_as_one_at_a_time,
    pruning_drops_expired_tokens_and_refuses_them_afterwards,
    stranded_outputs_keep_their_expiry,
);

/// PostgreSQL only; under CI a missing database is a failure.
fn postgres_or_fail(test: &str) -> Option<(Store, String)> {
    let r = tally_store::test_postgres_store(test);
    if r.is_none() && std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set but TALLY_TEST_DATABASE_URL is not: PostgreSQL is required");
    }
    r
}

fn migrated(test: &str) -> Option<(Store, String)> {
    let (s, schema) = postgres_or_fail(test)?;
    s.migrate(&[&ledger::MIGRATIONS, &tally_ledger::settlement::MIGRATIONS])
        .unwrap_or_else(|e| panic!("migrations: {e}"));
    Some((s, schema))
}

fn drop_schema(s: &Store, schema: &str) {
    let _ = s.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
}

/// The layout of docs/decisions for a distributed engine (primary key the
/// token id, hash-partitioned by its record id) on plain PostgreSQL: the
/// same settlement code registers, finds double spends, recognises
/// replays and prunes by deletion; rows spread over the partitions.
#[test]
fn hash_partitioned_registry_on_postgres() {
    let Some((s, schema)) = migrated("scale::hash_partitioned_registry_on_postgres") else {
        return;
    };
    s.transact(|tx| {
        for stmt in spent_hash_layout_ddl(8) {
            tx.execute(&stmt, &[])?;
        }
        Ok::<_, StoreError>(())
    })
    .unwrap_or_else(|e| panic!("hash layout: {e}"));
    assert_eq!(partitions(&s).len(), 8);
    // Not range-partitioned: nothing to prepare.
    assert_eq!(Settlement::prepare_partitions(&s, 0, 100).unwrap_or(99), 0);
    let scheme = Scheme::new(Suite::Ed25519);
    let mut vs = Vec::new();
    for n in 0..32u64 {
        let (i, k) = issue(
            &scheme,
            &format!("h{n}"),
            n + 1,
            if n % 2 == 0 { 10 } else { 90 },
        );
        book(&s, &i);
        vs.push(verified(
            &scheme,
            &chain(&scheme, &format!("h{n}"), (&i, &k), 1, 1),
        ));
    }
    // A double spend of the first token, one hop deep.
    let (i0, k0) = issue(&scheme, "h0", 1, 10);
    let double = verified(&scheme, &chain(&scheme, "h0", (&i0, &k0), 2, 9));
    let idems: Vec<String> = (0..vs.len()).map(|n| format!("h:{n}")).collect();
    let mut items: Vec<(&VerifiedPackage, &str)> = vs
        .iter()
        .zip(&idems)
        .map(|(v, i)| (v, i.as_str()))
        .collect();
    items.push((&double, "h:double"));
    let answers = run(&s, |tx| {
        Ok::<_, SettlementError>(
            Settlement::settle_batch(tx, &items)?
                .iter()
                .map(answer)
                .collect::<Vec<_>>(),
        )
    });
    assert!(
        answers[..32].iter().all(|a| *a == Ok((2, 0, 0, 0))),
        "{answers:?}"
    );
    assert_eq!(answers[32], Ok((2, 0, 1, VALUE)));
    assert_eq!(count(&s, "spent"), 66);
    let spread = query(
        &s,
        "SELECT CAST(tableoid::regclass AS TEXT), CAST(COUNT(*) AS BIGINT) FROM spent GROUP BY 1",
    );
    assert!(
        spread.len() >= 6,
        "rows in only {} of 8 partitions",
        spread.len()
    );
    // Replays are recognised across partitions.
    let again = run(&s, |tx| {
        Ok::<_, SettlementError>(
            Settlement::settle_batch(tx, &items[..32])?
                .iter()
                .map(answer)
                .collect::<Vec<_>>(),
        )
    });
    assert!(again.iter().all(|a| *a == Ok((0, 2, 0, 0))), "{again:?}");
    // Pruning deletes by expiry (no partition to drop).
    let (dropped, deleted) = Settlement::prune(&s, 50).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dropped, 0);
    assert_eq!(deleted, 16 * 2 + 2);
    assert_eq!(spent_below(&s, 50), 0);
    assert_eq!(partitions(&s).len(), 8);
    audit(&s);
    drop_schema(&s, &schema);
}

/// Journal sequence numbers from two stores on one database (as two
/// settlement processes would have) with interleaved transfers: unique,
/// each store's increasing, and the books balance.
#[test]
fn journal_ids_from_two_stores_never_collide() {
    let Some((s, schema)) = migrated("scale::journal_ids_from_two_stores_never_collide") else {
        return;
    };
    let url = tally_store::test_database_url("scale").unwrap_or_default();
    let other = Store::postgres(&url, Some(&schema)).unwrap_or_else(|e| panic!("{e}"));
    run(&s, |tx| {
        for (dcp, user) in [("dcp:a", "user:a"), ("dcp:b", "user:b")] {
            Ledger::open_account(tx, dcp, AccountKind::DcpSettlement)?;
            Ledger::open_account(tx, user, AccountKind::User)?;
            Ledger::mint(tx, &format!("m:{dcp}"), dcp, 1_000_000)?;
        }
        Ok::<_, LedgerError>(())
    });
    let seqs: Vec<Vec<i64>> = std::thread::scope(|sc| {
        // Disjoint accounts, and DCP → user stays inside one invariant
        // term: the two writers share no row, not even a running total.
        let hs: Vec<_> = [(&s, "dcp:a", "user:a"), (&other, "dcp:b", "user:b")]
            .into_iter()
            .enumerate()
            .map(|(w, (st, from, to))| {
                sc.spawn(move || {
                    (0..300)
                        .map(|n| {
                            let r = run(st, |tx| {
                                Ledger::transfer(
                                    tx,
                                    &TransferRequest {
                                        idem: format!("w{w}:{n}"),
                                        debit: from.into(),
                                        credit: to.into(),
                                        amount: 1,
                                        code: code::TRANSFER,
                                    },
                                )
                            });
                            match r {
                                ledger::Applied::New(q) => q,
                                ledger::Applied::Already(q) => panic!("replayed at {q}"),
                            }
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("worker")))
            .collect()
    });
    for w in &seqs {
        assert!(
            w.windows(2).all(|p| p[0] < p[1]),
            "a store's ids must increase"
        );
    }
    let mut all: Vec<i64> = seqs.concat();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 600, "journal ids collided");
    assert_eq!(count(&s, "ledger_journal"), 602);
    assert_eq!((balance(&s, "user:a"), balance(&s, "user:b")), (300, 300));
    audit(&s);
    drop(other);
    drop_schema(&s, &schema);
}

/// A registry made by settlement migration 1, with registrations in it,
/// upgraded: every registration kept, with the never-pruned expiry, and
/// still found (a second consumer is a double spend).
fn upgrade_keeps_registrations(s: &Store) {
    let v1 = tally_store::Migrations {
        component: "settlement",
        steps: &tally_ledger::settlement::MIGRATIONS.steps[..1],
    };
    s.migrate(&[&ledger::MIGRATIONS, &v1])
        .unwrap_or_else(|e| panic!("v1: {e}"));
    let scheme = Scheme::new(Suite::Ed25519);
    let (i, k) = issue(&scheme, "up", 1, 40);
    let first = verified(&scheme, &chain(&scheme, "up", (&i, &k), 0, 1));
    let rows = [
        (i.id(), first.transfer_id()),
        (
            first.transfer_id(),
            tally_core::crypto::tagged_hash(b"test", &[b"x"]),
        ),
    ];
    run(s, |tx| {
        for (rec, by) in &rows {
            tx.execute(
                "INSERT INTO spent (record, idx, consumed_by) VALUES ($1, 0, $2)",
                &[rec.0.as_slice().into(), by.0.as_slice().into()],
            )?;
        }
        Ok::<_, StoreError>(())
    });
    s.migrate(&[&ledger::MIGRATIONS, &tally_ledger::settlement::MIGRATIONS])
        .unwrap_or_else(|e| panic!("upgrade: {e}"));
    let got = query(
        s,
        "SELECT record, expiry_epoch, consumed_by FROM spent ORDER BY record",
    );
    assert_eq!(got.len(), 2);
    for r in &got {
        assert_eq!(r.int(1).unwrap(), NEVER_EXPIRES);
    }
    // Still found: the same token spent by another package.
    book(s, &i);
    let other = verified(&scheme, &chain(&scheme, "up", (&i, &k), 1, 2));
    let o = run(s, |tx| Settlement::settle(tx, &other, "after-upgrade"));
    assert_eq!((o.registered, o.double_spends.len()), (1, 1));
    // Pruning never removes them.
    Settlement::prune(s, 1_000).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count(s, "spent"), 3 - 1);
}

#[test]
fn upgrade_keeps_registrations_sqlite() {
    let dir = std::env::temp_dir().join(format!("tally-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let s = Store::sqlite(&dir.join("db.sqlite")).unwrap_or_else(|e| panic!("{e}"));
    upgrade_keeps_registrations(&s);
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn upgrade_keeps_registrations_postgres() {
    let Some((s, schema)) = postgres_or_fail("scale::upgrade_keeps_registrations_postgres") else {
        return;
    };
    upgrade_keeps_registrations(&s);
    drop_schema(&s, &schema);
}
