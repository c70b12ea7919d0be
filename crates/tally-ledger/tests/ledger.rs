//! The double-entry ledger, one suite run against SQLite (temp file) and
//! PostgreSQL (fresh schema per test; skipped loudly when
//! TALLY_TEST_DATABASE_URL is unset): minting, transfers, every numbered
//! rejection, idempotent replay, redemption, journal immutability, the
//! invariant after every batch, the loss account, the CHECK constraint and
//! concurrent transfers (the bank test).

#[macro_use]
mod common;

use common::{audit, balance, count, keep_rejection, ledger_snapshot, query, run};
use tally_ledger::ledger::{
    AccountKind, Applied, ISSUANCE, Invariant, LOSS, Ledger, LedgerError, OFFLINE_FLOAT,
    TransferRequest, code,
};
use tally_store::{Store, StoreError, Value};

const DCP: &str = "dcp:1";
const ALICE: &str = "user:alice";
const BOB: &str = "user:bob";

fn req(idem: &str, debit: &str, credit: &str, amount: u64, code: i64) -> TransferRequest {
    TransferRequest {
        idem: idem.into(),
        debit: debit.into(),
        credit: credit.into(),
        amount,
        code,
    }
}

fn pay(idem: &str, debit: &str, credit: &str, amount: u64) -> TransferRequest {
    req(idem, debit, credit, amount, code::TRANSFER)
}

/// One transfer in a transaction that commits whatever the ledger
/// answered: a rejection must itself write nothing, not merely be rolled
/// back by the caller.
fn attempt(s: &Store, t: &TransferRequest) -> Result<Applied, LedgerError> {
    run(s, |tx| keep_rejection(Ledger::transfer(tx, t)))
}

fn open(s: &Store, id: &str, kind: AccountKind) {
    run(s, |tx| Ledger::open_account(tx, id, kind));
}

/// A DCP holding 1_000 minted, Alice 600 and Bob 0 of it.
fn funded(s: &Store) {
    open(s, DCP, AccountKind::DcpSettlement);
    open(s, ALICE, AccountKind::User);
    open(s, BOB, AccountKind::User);
    run(s, |tx| Ledger::mint(tx, "mint-1", DCP, 1_000));
    run(s, |tx| {
        Ledger::transfer(tx, &pay("fund-alice", DCP, ALICE, 600))
    });
}

/// Asserts a rejection's variant and stable number, and that it changed
/// nothing at all.
fn assert_rejected(s: &Store, t: &TransferRequest, code: u16) -> LedgerError {
    let before = ledger_snapshot(s);
    let e = attempt(s, t).expect_err("must be rejected");
    assert_eq!(e.code(), code, "{e}");
    assert_eq!(ledger_snapshot(s), before, "a rejected transfer wrote");
    e
}

fn mint_credits_a_dcp_account(s: &Store) {
    open(s, DCP, AccountKind::DcpSettlement);
    let fresh = audit(s);
    assert_eq!((fresh.minted, fresh.journal_entries), (0, 0));
    assert_eq!(
        run(s, |tx| Ledger::mint(tx, "mint-1", DCP, 1_000)),
        Applied::New(1)
    );
    assert_eq!(
        run(s, |tx| Ledger::mint(tx, "mint-2", DCP, 250)),
        Applied::New(2)
    );
    assert_eq!(balance(s, DCP), 1_250);
    assert_eq!(balance(s, ISSUANCE), -1_250);
    let inv = audit(s);
    assert_eq!(
        inv,
        Invariant {
            minted: 1_250,
            redeemed: 0,
            accounts: 1_250,
            offline_float: 0,
            loss: 0,
            issuance: -1_250,
            negative_accounts: 0,
            journal_entries: 2,
            totals_match: true,
        }
    );
    let j = query(
        s,
        "SELECT debit, credit, amount, code FROM ledger_journal ORDER BY seq",
    );
    assert_eq!(j[0].text(0).unwrap(), ISSUANCE);
    assert_eq!(j[0].text(1).unwrap(), DCP);
    assert_eq!(j[0].int(2).unwrap(), 1_000);
    assert_eq!(j[0].int(3).unwrap(), code::MINT);
}

fn transfers_between_user_accounts(s: &Store) {
    funded(s);
    assert_eq!(
        attempt(s, &pay("a-b-1", ALICE, BOB, 250)),
        Ok(Applied::New(3))
    );
    assert_eq!(
        attempt(s, &pay("b-a-1", BOB, ALICE, 50)),
        Ok(Applied::New(4))
    );
    // Down to exactly zero is allowed.
    assert_eq!(
        attempt(s, &pay("b-a-2", BOB, ALICE, 200)),
        Ok(Applied::New(5))
    );
    assert_eq!(balance(s, ALICE), 600);
    assert_eq!(balance(s, BOB), 0);
    assert_eq!(balance(s, DCP), 400);
    let inv = audit(s);
    assert_eq!((inv.accounts, inv.journal_entries), (1_000, 5));
}

fn unknown_account_is_rejected_with_code_10(s: &Store) {
    funded(s);
    let e = assert_rejected(s, &pay("u1", ALICE, "user:nobody", 10), 10);
    assert_eq!(e, LedgerError::UnknownAccount("user:nobody".into()));
    let e = assert_rejected(s, &pay("u2", "user:nobody", ALICE, 10), 10);
    assert_eq!(e, LedgerError::UnknownAccount("user:nobody".into()));
    assert_eq!(
        run(s, |tx| keep_rejection(Ledger::balance(tx, "user:nobody"))),
        Err(LedgerError::UnknownAccount("user:nobody".into()))
    );
    // Minting into an account that does not exist creates no money.
    let e = assert_rejected(s, &req("u3", ISSUANCE, "dcp:9", 10, code::MINT), 10);
    assert_eq!(e, LedgerError::UnknownAccount("dcp:9".into()));
    audit(s);
}

fn insufficient_funds_is_rejected_with_code_11_and_balance_unchanged(s: &Store) {
    funded(s);
    let e = assert_rejected(s, &pay("i1", ALICE, BOB, 601), 11);
    assert_eq!(
        e,
        LedgerError::InsufficientFunds {
            account: ALICE.into(),
            balance: 600,
            amount: 601,
        }
    );
    assert_eq!((balance(s, ALICE), balance(s, BOB)), (600, 0));
    // Bob has nothing; the DCP cannot redeem more than it holds.
    assert_rejected(s, &pay("i2", BOB, ALICE, 1), 11);
    assert_rejected(s, &req("i3", DCP, ISSUANCE, 401, code::REDEEM), 11);
    // The key of a rejected transfer was not consumed: it works once the
    // funds are there.
    assert_eq!(attempt(s, &pay("i1", ALICE, BOB, 600)), Ok(Applied::New(3)));
    assert_eq!((balance(s, ALICE), balance(s, BOB)), (0, 600));
    audit(s);
}

fn reused_idempotency_key_with_other_content_is_rejected_with_code_12(s: &Store) {
    funded(s);
    let original = pay("k", ALICE, BOB, 100);
    assert_eq!(attempt(s, &original), Ok(Applied::New(3)));
    // Every field but the key is part of the content.
    let variants = [
        pay("k", ALICE, BOB, 101),
        pay("k", BOB, ALICE, 100),
        pay("k", ALICE, DCP, 100),
        req("k", ALICE, BOB, 100, code::ONLINE_PAYMENT),
    ];
    for v in &variants {
        let e = assert_rejected(s, v, 12);
        assert_eq!(e, LedgerError::IdempotencyKeyReused("k".into()));
    }
    assert_eq!((balance(s, ALICE), balance(s, BOB)), (500, 100));
    // The original content is still recognised.
    assert_eq!(attempt(s, &original), Ok(Applied::Already(3)));
    audit(s);
}

fn zero_amount_is_rejected_with_code_13(s: &Store) {
    funded(s);
    assert_eq!(
        assert_rejected(s, &pay("z", ALICE, BOB, 0), 13),
        LedgerError::ZeroAmount
    );
    assert_eq!(
        assert_rejected(s, &req("z-mint", ISSUANCE, DCP, 0, code::MINT), 13),
        LedgerError::ZeroAmount
    );
    audit(s);
}

fn same_account_is_rejected_with_code_14(s: &Store) {
    funded(s);
    assert_eq!(
        assert_rejected(s, &pay("same", ALICE, ALICE, 10), 14),
        LedgerError::SameAccount
    );
    // Also when the amount would not even be covered.
    assert_eq!(
        assert_rejected(s, &pay("same-2", BOB, BOB, 10), 14),
        LedgerError::SameAccount
    );
    audit(s);
}

fn existing_account_is_rejected_with_code_15(s: &Store) {
    funded(s);
    let before = ledger_snapshot(s);
    for kind in [AccountKind::User, AccountKind::DcpSettlement] {
        let e = run(s, |tx| {
            keep_rejection(Ledger::open_account(tx, ALICE, kind))
        })
        .expect_err("exists");
        assert_eq!(e, LedgerError::AccountExists(ALICE.into()));
        assert_eq!(e.code(), 15);
    }
    // The central bank's own accounts exist from the first migration.
    for id in [ISSUANCE, OFFLINE_FLOAT, LOSS] {
        let e = run(s, |tx| {
            keep_rejection(Ledger::open_account(tx, id, AccountKind::User))
        })
        .expect_err("exists");
        assert_eq!(e.code(), 15);
    }
    // ensure_account: a no-op for the same kind, 15 for another kind.
    run(s, |tx| Ledger::ensure_account(tx, ALICE, AccountKind::User));
    let e = run(s, |tx| {
        keep_rejection(Ledger::ensure_account(
            tx,
            ALICE,
            AccountKind::DcpSettlement,
        ))
    })
    .expect_err("other kind");
    assert_eq!(e.code(), 15);
    assert_eq!(ledger_snapshot(s), before, "nothing changed");
    assert_eq!(
        balance(s, ALICE),
        600,
        "reopening did not reset the balance"
    );
    // ensure_account opens a missing one, at zero.
    run(s, |tx| {
        Ledger::ensure_account(tx, "user:carol", AccountKind::User)
    });
    assert_eq!(balance(s, "user:carol"), 0);
    audit(s);
}

fn amount_beyond_i64_is_rejected_with_code_16(s: &Store) {
    funded(s);
    let e = assert_rejected(s, &pay("o", ALICE, BOB, u64::MAX), 16);
    assert_eq!(e, LedgerError::Overflow);
    assert_rejected(s, &req("o2", ISSUANCE, DCP, 1 << 63, code::MINT), 16);
    audit(s);
}

fn idempotent_replay_returns_already_with_the_same_seq(s: &Store) {
    funded(s);
    let t = pay("replay", ALICE, BOB, 600);
    assert_eq!(attempt(s, &t), Ok(Applied::New(3)));
    let after_first = ledger_snapshot(s);
    // Replayed in its own transaction, twice in one transaction, and after
    // Alice's balance would no longer cover it: the key is checked first.
    assert_eq!(attempt(s, &t), Ok(Applied::Already(3)));
    assert_eq!(
        run(s, |tx| Ok::<_, LedgerError>((
            Ledger::transfer(tx, &t)?,
            Ledger::transfer(tx, &t)?
        ))),
        (Applied::Already(3), Applied::Already(3))
    );
    assert_eq!(
        ledger_snapshot(s),
        after_first,
        "a replay changed the books"
    );
    // Later transfers do not move the replayed sequence number.
    assert_eq!(
        attempt(s, &pay("later", BOB, ALICE, 10)),
        Ok(Applied::New(4))
    );
    assert_eq!(attempt(s, &t), Ok(Applied::Already(3)));
    // A replayed mint does not mint twice.
    assert_eq!(
        run(s, |tx| Ledger::mint(tx, "mint-1", DCP, 1_000)),
        Applied::Already(1)
    );
    let inv = audit(s);
    assert_eq!((inv.minted, inv.journal_entries), (1_000, 4));
    assert_eq!((balance(s, ALICE), balance(s, BOB)), (10, 590));
}

fn redeem_burns_from_a_dcp_account(s: &Store) {
    funded(s);
    assert_eq!(
        run(s, |tx| Ledger::redeem(tx, "burn-1", DCP, 300)),
        Applied::New(3)
    );
    assert_eq!(balance(s, DCP), 100);
    assert_eq!(balance(s, ISSUANCE), -700);
    let inv = audit(s);
    assert_eq!((inv.minted, inv.redeemed, inv.accounts), (1_000, 300, 700));
    assert_eq!(
        run(s, |tx| Ledger::redeem(tx, "burn-1", DCP, 300)),
        Applied::Already(3)
    );
    // Not more than the DCP holds; the books stay as they were.
    let e = run(s, |tx| {
        keep_rejection(Ledger::redeem(tx, "burn-2", DCP, 101))
    })
    .expect_err("overdraw");
    assert_eq!(e.code(), 11);
    assert_eq!(
        run(s, |tx| Ledger::redeem(tx, "burn-2", DCP, 100)),
        Applied::New(4)
    );
    let inv = audit(s);
    assert_eq!((inv.redeemed, inv.accounts, inv.issuance), (400, 600, -600));
}

fn journal_is_append_only(s: &Store) {
    funded(s);
    let journal = |s: &Store| {
        query(
            s,
            "SELECT seq, idem, digest, debit, credit, amount, code FROM ledger_journal ORDER BY seq",
        )
    };
    let mut seen = journal(s);
    let steps: Vec<TransferRequest> = vec![
        pay("j1", ALICE, BOB, 100),
        pay("j1", ALICE, BOB, 100),   // replay
        pay("j2", BOB, ALICE, 1_000), // rejected
        pay("j1", ALICE, BOB, 7),     // key reused
        pay("j3", BOB, ALICE, 100),   // reversal: a new entry, not an edit
        req("j4", DCP, ISSUANCE, 50, code::REDEEM),
    ];
    for t in &steps {
        let _ = attempt(s, t);
        let now = journal(s);
        assert!(now.len() >= seen.len(), "the journal shrank");
        assert_eq!(&now[..seen.len()], &seen[..], "a journal entry changed");
        seen = now;
    }
    assert_eq!(seen.len(), 5, "two mints/funding + j1, j3, j4");
    // The reversal left the original entry in place.
    let idems: Vec<&str> = seen.iter().map(|r| r.text(1).unwrap()).collect();
    assert_eq!(idems, ["mint-1", "fund-alice", "j1", "j3", "j4"]);
    audit(s);
}

fn invariant_holds_after_every_batch(s: &Store) {
    open(s, DCP, AccountKind::DcpSettlement);
    open(s, ALICE, AccountKind::User);
    open(s, BOB, AccountKind::User);
    let batches: Vec<Vec<TransferRequest>> = vec![
        vec![
            req("b1-mint", ISSUANCE, DCP, 5_000, code::MINT),
            pay("b1-a", DCP, ALICE, 2_000),
        ],
        vec![
            pay("b2-ab", ALICE, BOB, 700),
            req("b2-load", DCP, OFFLINE_FLOAT, 1_000, code::LOAD),
        ],
        vec![
            req("b3-cover", LOSS, OFFLINE_FLOAT, 120, code::LOSS_COVER),
            req("b3-unload", OFFLINE_FLOAT, BOB, 300, code::UNLOAD),
            req("b3-burn", DCP, ISSUANCE, 900, code::REDEEM),
        ],
        // Bob's last unit leaves in the first transfer; the second is
        // refused inside the batch.
        vec![
            pay("b4-ba", BOB, ALICE, 1_000),
            pay("b4-over", BOB, ALICE, 1),
        ],
    ];
    // The model: expected (minted, redeemed, accounts, float, loss).
    let expected = [
        (5_000, 0, 5_000, 0, 0),
        (5_000, 0, 4_000, 1_000, 0),
        (5_000, 900, 3_400, 820, -120),
        (5_000, 900, 3_400, 820, -120),
    ];
    for (batch, want) in batches.iter().zip(expected) {
        let results = run(s, |tx| Ledger::transfer_batch(tx, batch));
        assert_eq!(results.len(), batch.len());
        for (t, r) in batch.iter().zip(&results) {
            let refused = t.idem == "b4-over";
            assert_eq!(
                r.as_ref().map_err(|e| e.code()).err(),
                refused.then_some(11),
                "{t:?}"
            );
        }
        let inv = audit(s);
        assert!(inv.holds());
        assert_eq!(
            (
                inv.minted,
                inv.redeemed,
                inv.accounts,
                inv.offline_float,
                inv.loss
            ),
            want,
            "{inv:?}"
        );
        assert_eq!(inv.issuance, -(inv.minted - inv.redeemed));
    }
    assert_eq!(balance(s, BOB), 0);
    assert_eq!(balance(s, ALICE), 2_300);
}

fn invariant_detects_every_kind_of_imbalance(s: &Store) {
    funded(s);
    let good = audit(s);
    assert!(good.holds());
    // The negative space of holds(): each term off by one breaks it.
    let broken = [
        Invariant {
            minted: good.minted + 1,
            ..good
        },
        Invariant {
            redeemed: good.redeemed + 1,
            ..good
        },
        Invariant {
            accounts: good.accounts + 1,
            ..good
        },
        Invariant {
            offline_float: good.offline_float + 1,
            ..good
        },
        Invariant {
            loss: good.loss - 1,
            ..good
        },
        Invariant {
            issuance: good.issuance + 1,
            ..good
        },
        Invariant {
            negative_accounts: 1,
            ..good
        },
        // Balances right, running totals not.
        Invariant {
            totals_match: false,
            ..good
        },
        // Balanced, but the loss account above zero.
        Invariant {
            loss: 1,
            offline_float: good.offline_float - 1,
            ..good
        },
    ];
    for b in broken {
        assert!(!b.holds(), "{b:?}");
    }
    // Money created outside the journal is seen by the stored terms (the
    // change is rolled back afterwards).
    let seen: Result<Invariant, LedgerError> = s.transact(|tx| {
        tx.execute(
            "UPDATE ledger_accounts SET balance = balance + 1 WHERE id = $1",
            &[BOB.into()],
        )?;
        let inv = Ledger::invariant(tx)?;
        assert!(
            !inv.holds(),
            "an unjournaled credit went unnoticed: {inv:?}"
        );
        Err(LedgerError::Store(StoreError::Db("roll back".into())))
    });
    assert!(seen.is_err());
    assert!(audit(s).holds());
}

/// The O(1) production assertion reads the running totals; the full
/// re-sum checks that they match the balances. A running total changed
/// outside a transfer is caught by both (rolled back afterwards).
fn running_totals_follow_every_cross_kind_transfer(s: &Store) {
    funded(s);
    let t = run(s, |tx| Ledger::assert_invariant(tx));
    assert_eq!(
        (
            t.minted,
            t.redeemed,
            t.accounts,
            t.offline_float,
            t.loss,
            t.issuance
        ),
        (1_000, 0, 1_000, 0, 0, -1_000)
    );
    // Float in, loss out, redemption: every kind moves.
    run(s, |tx| {
        Ledger::transfer(tx, &req("load", ALICE, OFFLINE_FLOAT, 100, code::LOAD))
    });
    run(s, |tx| {
        Ledger::transfer(tx, &req("cover", LOSS, OFFLINE_FLOAT, 7, code::LOSS_COVER))
    });
    run(s, |tx| Ledger::redeem(tx, "burn", DCP, 50));
    let t = run(s, |tx| Ledger::assert_invariant(tx));
    assert_eq!(
        (
            t.minted,
            t.redeemed,
            t.accounts,
            t.offline_float,
            t.loss,
            t.issuance
        ),
        (1_000, 50, 850, 107, -7, -950)
    );
    assert!(audit(s).totals_match);
    // Negative space: a total off by one, balanced so that the re-sum of
    // the balances still holds, is seen by both checks.
    let caught: Result<(bool, bool), LedgerError> = s.transact(|tx| {
        tx.execute(
            "UPDATE ledger_totals SET total = total + 1 WHERE kind = 1",
            &[],
        )?;
        tx.execute(
            "UPDATE ledger_totals SET total = total - 1 WHERE kind = 3",
            &[],
        )?;
        let inv = Ledger::invariant(tx)?;
        let mut t = Ledger::running_totals(tx)?;
        assert!(t.holds(), "a balanced shift keeps the equation");
        tx.execute(
            "UPDATE ledger_totals SET total = total + 1 WHERE kind = 3",
            &[],
        )?;
        t = Ledger::running_totals(tx)?;
        Err(LedgerError::Store(StoreError::Db(format!(
            "roll back {}",
            u8::from(!inv.totals_match && !inv.holds()) + 2 * u8::from(!t.holds())
        ))))
    });
    assert_eq!(
        caught,
        Err(LedgerError::Store(StoreError::Db("roll back 3".into())))
    );
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.transact(|tx| {
            tx.execute(
                "UPDATE ledger_totals SET total = total + 1 WHERE kind = 1",
                &[],
            )?;
            Ledger::assert_invariant(tx)?;
            Ok::<_, LedgerError>(())
        })
    }));
    // (Last: on SQLite the panic leaves the connection's mutex poisoned.)
    assert!(
        panicked.is_err(),
        "the production assertion let a broken total pass"
    );
}

fn batch_applies_exactly_the_accepted_transfers(s: &Store) {
    funded(s);
    run(s, |tx| Ledger::transfer(tx, &pay("taken", ALICE, BOB, 10)));
    let batch = vec![
        pay("ok-1", ALICE, BOB, 100),
        pay("bad-funds", BOB, ALICE, 1_000),
        pay("ok-2", DCP, BOB, 50),
        pay("bad-zero", ALICE, BOB, 0),
        pay("bad-unknown", ALICE, "user:ghost", 5),
        pay("bad-same", BOB, BOB, 5),
        pay("taken", ALICE, BOB, 11),
        pay("ok-3", BOB, ALICE, 20),
        pay("ok-1", ALICE, BOB, 100), // replay inside the batch
    ];
    let results = run(s, |tx| Ledger::transfer_batch(tx, &batch));
    let codes: Vec<Result<Applied, u16>> = results
        .into_iter()
        .map(|r| r.map_err(|e| e.code()))
        .collect();
    assert_eq!(
        codes,
        vec![
            Ok(Applied::New(4)),
            Err(11),
            Ok(Applied::New(5)),
            Err(13),
            Err(10),
            Err(14),
            Err(12),
            Ok(Applied::New(6)),
            Ok(Applied::Already(4)),
        ]
    );
    assert_eq!(balance(s, ALICE), 600 - 10 - 100 + 20);
    assert_eq!(balance(s, BOB), 10 + 100 + 50 - 20);
    assert_eq!(balance(s, DCP), 400 - 50);
    let idems: Vec<String> = query(s, "SELECT idem FROM ledger_journal ORDER BY seq")
        .iter()
        .map(|r| r.text(0).unwrap().to_string())
        .collect();
    assert_eq!(
        idems,
        ["mint-1", "fund-alice", "taken", "ok-1", "ok-2", "ok-3"]
    );
    audit(s);
}

fn loss_account_may_go_negative_user_accounts_may_not(s: &Store) {
    funded(s);
    run(s, |tx| {
        Ledger::transfer(tx, &req("load", DCP, OFFLINE_FLOAT, 100, code::LOAD))
    });
    // The scheme covers a double spend: loss goes below zero.
    assert_eq!(
        attempt(s, &req("cover", LOSS, OFFLINE_FLOAT, 250, code::LOSS_COVER)),
        Ok(Applied::New(4))
    );
    assert_eq!(balance(s, LOSS), -250);
    assert_eq!(balance(s, OFFLINE_FLOAT), 350);
    let inv = audit(s);
    assert_eq!((inv.loss, inv.negative_accounts), (-250, 0));
    // Nobody else may: user, DCP and float accounts stop at zero.
    for (debit, have) in [(ALICE, 600), (BOB, 0), (DCP, 300), (OFFLINE_FLOAT, 350)] {
        let e = assert_rejected(
            s,
            &pay(&format!("over-{debit}"), debit, LOSS, have as u64 + 1),
            11,
        );
        assert!(matches!(e, LedgerError::InsufficientFunds { balance, .. } if balance == have));
    }
    audit(s);
}

fn check_constraint_refuses_negative_balances(s: &Store) {
    funded(s);
    run(s, |tx| {
        Ledger::open_account(tx, "user:zero", AccountKind::User)
    });
    // A direct write that skips Ledger::transfer is refused by the
    // database for every kind except issuance and loss.
    for id in [ALICE, "user:zero", DCP, OFFLINE_FLOAT] {
        let r = s.transact(|tx| {
            tx.execute(
                "UPDATE ledger_accounts SET balance = balance - 601 WHERE id = $1",
                &[id.into()],
            )
        });
        assert!(matches!(r, Err(StoreError::Constraint(_))), "{id}: {r:?}");
        let r = s.transact(|tx| {
            tx.execute(
                "INSERT INTO ledger_accounts (id, kind, balance) VALUES ($1, $2, $3)",
                &[
                    format!("{id}-new").into(),
                    Value::Int(AccountKind::User as i64),
                    Value::Int(-1),
                ],
            )
        });
        assert!(matches!(r, Err(StoreError::Constraint(_))), "{id}: {r:?}");
    }
    // Issuance and loss are allowed below zero by the schema (rolled back).
    for id in [ISSUANCE, LOSS] {
        let r: Result<u64, StoreError> = s.transact(|tx| {
            let n = tx.execute(
                "UPDATE ledger_accounts SET balance = -5000 WHERE id = $1",
                &[id.into()],
            )?;
            assert_eq!(n, 1);
            Err(StoreError::Db("roll back".into()))
        });
        assert_eq!(r, Err(StoreError::Db("roll back".into())));
    }
    // Journal amounts are positive in the schema too.
    let r = s.transact(|tx| {
        tx.execute(
            "INSERT INTO ledger_journal (seq, idem, digest, debit, credit, amount, code) VALUES (999, 'x', $1, $2, $3, 0, 1)",
            &[vec![0u8; 32].into(), ALICE.into(), BOB.into()],
        )
    });
    assert!(matches!(r, Err(StoreError::Constraint(_))), "{r:?}");
    assert_eq!(balance(s, ALICE), 600);
    audit(s);
}

/// xorshift64*: a seeded, dependency-free generator; one seed per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BANK_ACCOUNTS: usize = 5;
const BANK_THREADS: u64 = 4;
const BANK_TRANSFERS_PER_THREAD: usize = 40;
const BANK_OPENING_BALANCE: i64 = 1_000;

/// The bank test: concurrent random transfers with unique keys, retried
/// by Store::transact on conflicts. Afterwards every balance equals its
/// opening balance plus the accepted transfers (addition commutes, so the
/// model needs no order), nothing is negative, and the journal holds
/// exactly the accepted transfers.
fn concurrent_random_transfers_keep_the_books(s: &Store) {
    let names: Vec<String> = (0..BANK_ACCOUNTS).map(|i| format!("user:{i}")).collect();
    open(s, DCP, AccountKind::DcpSettlement);
    let total = BANK_OPENING_BALANCE * BANK_ACCOUNTS as i64;
    run(s, |tx| Ledger::mint(tx, "mint-bank", DCP, total as u64));
    for n in &names {
        open(s, n, AccountKind::User);
        run(s, |tx| {
            Ledger::transfer(
                tx,
                &pay(&format!("open-{n}"), DCP, n, BANK_OPENING_BALANCE as u64),
            )
        });
    }
    let opening_entries = audit(s).journal_entries;

    type Worker = (Vec<(usize, usize, i64, String)>, usize, u32, usize);
    let per_thread: Vec<Worker> = std::thread::scope(|scope| {
        let names = &names;
        let handles: Vec<_> = (0..BANK_THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
                    let mut accepted = Vec::new();
                    let mut rejected = 0usize;
                    let mut exhausted_retries = 0u32;
                    let mut attempts = 0usize;
                    for i in 0..BANK_TRANSFERS_PER_THREAD {
                        let from = rng.below(BANK_ACCOUNTS as u64) as usize;
                        let to = (from + 1 + rng.below(BANK_ACCOUNTS as u64 - 1) as usize)
                            % BANK_ACCOUNTS;
                        let amount = 1 + rng.below(400);
                        let idem = format!("bank-{t}-{i}");
                        let transfer = pay(&idem, &names[from], &names[to], amount);
                        // Store::transact retries conflicts; should it give
                        // up, the client retries with the same key.
                        let r = loop {
                            match s.transact(|tx| {
                                attempts += 1;
                                Ledger::transfer(tx, &transfer)
                            }) {
                                Err(LedgerError::Store(StoreError::Conflict)) => {
                                    exhausted_retries += 1;
                                }
                                other => break other,
                            }
                        };
                        match r {
                            Ok(Applied::New(_)) => {
                                accepted.push((from, to, amount as i64, idem));
                            }
                            Ok(Applied::Already(_)) => {
                                panic!("a fresh key {idem} was seen as a replay")
                            }
                            Err(LedgerError::InsufficientFunds { .. }) => rejected += 1,
                            Err(e) => panic!("transfer {idem}: {e}"),
                        }
                    }
                    (accepted, rejected, exhausted_retries, attempts)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });

    let mut model = vec![BANK_OPENING_BALANCE; BANK_ACCOUNTS];
    let mut accepted_keys: Vec<String> = Vec::new();
    let mut rejected = 0;
    let (mut attempts, mut gave_up) = (0, 0);
    for (accepted, r, g, a) in &per_thread {
        rejected += r;
        attempts += a;
        gave_up += g;
        for (from, to, amount, idem) in accepted {
            model[*from] -= amount;
            model[*to] += amount;
            accepted_keys.push(idem.clone());
        }
    }
    let transfers = BANK_THREADS as usize * BANK_TRANSFERS_PER_THREAD;
    assert_eq!(accepted_keys.len() + rejected, transfers);
    // What the run exercised (shown with --nocapture).
    eprintln!(
        "bank test on {}: {} accepted, {rejected} refused, {} conflict retries, {gave_up} exhausted",
        s.backend(),
        accepted_keys.len(),
        attempts - transfers,
    );
    let balances: Vec<i64> = names.iter().map(|n| balance(s, n)).collect();
    assert_eq!(
        balances, model,
        "balances differ from the accepted transfers"
    );
    assert!(balances.iter().all(|b| *b >= 0), "{balances:?}");
    assert_eq!(balances.iter().sum::<i64>(), total);
    let inv = audit(s);
    assert_eq!(
        inv.journal_entries,
        opening_entries + accepted_keys.len() as i64
    );
    let mut journaled: Vec<String> = query(
        s,
        "SELECT idem FROM ledger_journal WHERE idem LIKE 'bank-%'",
    )
    .iter()
    .map(|r| r.text(0).unwrap().to_string())
    .collect();
    journaled.sort();
    accepted_keys.sort();
    assert_eq!(journaled, accepted_keys);
    assert_eq!(count(s, "ledger_accounts"), 3 + 1 + BANK_ACCOUNTS as i64);
}

on_both_backends!(
    mint_credits_a_dcp_account,
    transfers_between_user_accounts,
    unknown_account_is_rejected_with_code_10,
    insufficient_funds_is_rejected_with_code_11_and_balance_unchanged,
    reused_idempotency_key_with_other_content_is_rejected_with_code_12,
    zero_amount_is_rejected_with_code_13,
    same_account_is_rejected_with_code_14,
    existing_account_is_rejected_with_code_15,
    amount_beyond_i64_is_rejected_with_code_16,
    idempotent_replay_returns_already_with_the_same_seq,
    redeem_burns_from_a_dcp_account,
    journal_is_append_only,
    invariant_holds_after_every_batch,
    invariant_detects_every_kind_of_imbalance,
    running_totals_follow_every_cross_kind_transfer,
    batch_applies_exactly_the_accepted_transfers,
    loss_account_may_go_negative_user_accounts_may_not,
    check_constraint_refuses_negative_balances,
    concurrent_random_transfers_keep_the_books,
);
