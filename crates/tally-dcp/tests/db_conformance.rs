//! The DCP's store contract ([`DcpDb`], [`DcpBookDb`]), written once and
//! run on SQLite (in memory) and PostgreSQL (a fresh schema per test;
//! skipped loudly without `TALLY_TEST_DATABASE_URL`, a failure under
//! `CI`), and the guard that keeps every SQL statement of this crate in
//! `src/db.rs`.

use std::collections::BTreeSet;

use tally_core::{Epoch, Hash32};
use tally_dcp::book::{IN_FLIGHT, OWN, SUSPENSE};
use tally_dcp::db::{
    BOOK_MIGRATIONS, BookResum, BookTotal, DCP_KEY_CUSTODY_MIGRATIONS, DcpBookDb, DcpDb, Device,
    EnrolmentCode, IN_FLIGHT_MIGRATIONS, ISSUE_TAG_MIGRATIONS, InFlight, LoggedRequest, MIGRATIONS,
    NewDevice, Posting, REFUSAL_MIGRATIONS, Redemption, StoredTotals,
};
use tally_dcp::db::{Collection, UNCOLLECTED_MIGRATIONS, Uncollected};
use tally_store::{Migrations, Store, StoreError, Tx};

fn h(first: u8, last: u8) -> Hash32 {
    let mut b = [first; 32];
    b[31] = last;
    Hash32(b)
}

/// Runs `f` in one transaction, panicking on a store error.
fn tx<R>(s: &Store, mut f: impl FnMut(&mut dyn Tx) -> Result<R, StoreError>) -> R {
    s.transact(|tx| f(tx)).unwrap_or_else(|e| panic!("{e}"))
}

fn is_constraint<R: std::fmt::Debug>(r: Result<R, StoreError>) {
    assert!(matches!(r, Err(StoreError::Constraint(_))), "{r:?}");
}

fn enrolment_codes(s: &Store) {
    let (d1, d2, d3) = (h(1, 0), h(2, 0), h(3, 0));
    assert!(tx(s, |t| t.enrolment_codes("user:a")).is_empty());
    tx(s, |t| t.enrolment_code_insert(&d1, "user:a"));
    tx(s, |t| t.enrolment_code_insert(&d2, "user:a"));
    tx(s, |t| t.enrolment_code_insert(&d3, "user:b"));
    let unbound = |d| EnrolmentCode {
        digest: d,
        se_id: None,
    };
    let set = |v: Vec<EnrolmentCode>| v.into_iter().map(|c| (c.digest, c.se_id)).collect();
    let got: BTreeSet<_> = set(tx(s, |t| t.enrolment_codes("user:a")));
    assert_eq!(got, set(vec![unbound(d1), unbound(d2)]));
    tx(s, |t| t.enrolment_code_bind(&d2, &h(0xee, 1)));
    let got: BTreeSet<_> = set(tx(s, |t| t.enrolment_codes("user:a")));
    assert_eq!(
        got,
        set(vec![
            unbound(d1),
            EnrolmentCode {
                digest: d2,
                se_id: Some(h(0xee, 1))
            }
        ])
    );
    assert_eq!(tx(s, |t| t.enrolment_codes("user:b")), vec![unbound(d3)]);
    // A digest is one code, whatever the account.
    is_constraint(s.transact(|t| t.enrolment_code_insert(&d1, "user:b")));
    assert_eq!(tx(s, |t| t.enrolment_codes("user:b")).len(), 1);
}

fn devices(s: &Store) {
    let (se, other) = (h(0x5e, 1), h(0x5e, 2));
    assert_eq!(tx(s, |t| t.device(&se)), None);
    assert_eq!(tx(s, |t| t.device_salt(&se)), None);
    assert_eq!(tx(s, |t| t.device_last_counter(&se)), None);
    let salt = [0xa5; 32];
    let new = NewDevice {
        se_id: &se,
        account: "user:ünï",
        device_class: u8::MAX,
        salt: &salt,
    };
    tx(s, |t| t.device_insert(&new));
    tx(s, |t| {
        t.device_insert(&NewDevice {
            se_id: &other,
            account: "user:o",
            device_class: 1,
            salt: &[0; 32],
        })
    });
    assert_eq!(
        tx(s, |t| t.device(&se)),
        Some(Device {
            account: "user:ünï".into(),
            device_class: u8::MAX,
            tier: 0,
            sync_seq: 0,
            sync_epoch: 0,
            salt,
        })
    );
    assert_eq!(tx(s, |t| t.device_salt(&se)), Some(salt));
    assert_eq!(tx(s, |t| t.device_last_counter(&se)), Some(0));
    is_constraint(s.transact(|t| t.device_insert(&new)));
    // Counters up to i64::MAX; past it refused, changing nothing.
    let top = i64::MAX as u64;
    tx(s, |t| t.device_set_last_counter(&se, top));
    assert_eq!(tx(s, |t| t.device_last_counter(&se)), Some(top));
    let past = s.transact(|t| t.device_set_last_counter(&se, top + 1));
    assert!(matches!(past, Err(StoreError::Type(_))), "{past:?}");
    assert_eq!(tx(s, |t| t.device_last_counter(&se)), Some(top));
    tx(s, |t| t.device_set_synced(&se, top, Epoch::MAX));
    let d = tx(s, |t| t.device(&se)).unwrap_or_else(|| panic!("device"));
    assert_eq!((d.sync_seq, d.sync_epoch), (i64::MAX, Epoch::MAX));
    assert!(
        s.transact(|t| t.device_set_synced(&se, u64::MAX, 1))
            .is_err()
    );
    // Only the device named changed; updates make no rows.
    let o = tx(s, |t| t.device(&other)).unwrap_or_else(|| panic!("other"));
    assert_eq!((o.sync_seq, o.sync_epoch), (0, 0));
    assert_eq!(tx(s, |t| t.device_last_counter(&other)), Some(0));
    tx(s, |t| t.device_set_last_counter(&h(9, 9), 5));
    tx(s, |t| t.device_set_synced(&h(9, 9), 5, 5));
    assert_eq!(tx(s, |t| t.device(&h(9, 9))), None);
}

fn requests(s: &Store) {
    let (r1, r2, se) = (h(0x71, 1), h(0x71, 2), h(0x5e, 0));
    assert_eq!(tx(s, |t| t.request(&r1)), None);
    tx(s, |t| t.request_insert(&r1, &se, i64::MAX as u64));
    tx(s, |t| t.request_insert(&r2, &se, 0));
    assert_eq!(tx(s, |t| t.request(&r1)), Some(LoggedRequest::default()));
    is_constraint(s.transact(|t| t.request_insert(&r1, &se, 1)));
    assert!(
        s.transact(|t| t.request_insert(&h(0x71, 3), &se, u64::MAX))
            .is_err()
    );
    assert_eq!(tx(s, |t| t.request(&h(0x71, 3))), None);
    // An empty response is a response (not NULL).
    tx(s, |t| t.request_set_response(&r1, &[]));
    assert_eq!(
        tx(s, |t| t.request(&r1)),
        Some(LoggedRequest {
            response: Some(Vec::new()),
            refusal: None
        })
    );
    // A refusal never replaces a response.
    assert!(!tx(s, |t| t.request_set_refusal(&r1, b"no")));
    assert_eq!(tx(s, |t| t.request(&r1)).and_then(|r| r.refusal), None);
    assert!(tx(s, |t| t.request_set_refusal(&r2, b"refused")));
    assert_eq!(
        tx(s, |t| t.request(&r2)),
        Some(LoggedRequest {
            response: None,
            refusal: Some(b"refused".to_vec())
        })
    );
    assert!(!tx(s, |t| t.request_set_refusal(&h(0x71, 9), b"x")));
}

fn redemptions(s: &Store) {
    let se = h(0x5e, 0);
    let n = |i: u8| [i; 16];
    assert!(!tx(s, |t| t.redemption_exists(&n(1))));
    assert_eq!(tx(s, |t| t.redemption(&n(1))), None);
    // Every u64 amount round-trips, past i64::MAX too.
    let amounts = [
        (1, 0u64),
        (2, i64::MAX as u64),
        (3, i64::MAX as u64 + 1),
        (4, u64::MAX),
    ];
    for (i, amount) in amounts {
        tx(s, |t| t.redemption_insert(&n(i), &se, amount, i % 2 == 0));
    }
    for (i, amount) in amounts {
        assert!(tx(s, |t| t.redemption_exists(&n(i))));
        assert_eq!(
            tx(s, |t| t.redemption(&n(i))),
            Some(Redemption {
                se_id: se,
                amount,
                unload: i % 2 == 0,
                done: false
            })
        );
    }
    tx(s, |t| t.redemption_mark_done(&n(2)));
    assert!(tx(s, |t| t.redemption(&n(2))).is_some_and(|r| r.done));
    assert!(tx(s, |t| t.redemption(&n(3))).is_some_and(|r| !r.done));
    is_constraint(s.transact(|t| t.redemption_insert(&n(1), &h(1, 1), 5, false)));
    assert_eq!(tx(s, |t| t.redemption(&n(1))).map(|r| r.se_id), Some(se));
}

fn issue_tags(s: &Store) {
    assert!(!tx(s, |t| t.issue_tag_exists(&h(1, 1))));
    tx(s, |t| t.issue_tag_insert(&h(1, 1)));
    assert!(tx(s, |t| t.issue_tag_exists(&h(1, 1))));
    assert!(!tx(s, |t| t.issue_tag_exists(&h(1, 2))));
    is_constraint(s.transact(|t| t.issue_tag_insert(&h(1, 1))));
}

fn book_accounts(s: &Store) {
    for own in [OWN, IN_FLIGHT, SUSPENSE] {
        assert_eq!(tx(s, |t| t.book_balance(own)), Some(0), "{own}");
    }
    assert_eq!(tx(s, |t| t.book_balance("user:a")), None);
    tx(s, |t| t.book_open_account("user:a"));
    tx(s, |t| t.book_open_account("user:b"));
    assert_eq!(tx(s, |t| t.book_balance("user:a")), Some(0));
    is_constraint(s.transact(|t| t.book_open_account("user:a")));
    tx(s, |t| t.book_credit_account("user:a", i64::MAX));
    assert_eq!(tx(s, |t| t.book_balance("user:a")), Some(i64::MAX));
    tx(s, |t| t.book_debit_account("user:a", i64::MAX));
    tx(s, |t| t.book_debit_account("user:b", 5));
    assert_eq!(tx(s, |t| t.book_balance("user:a")), Some(0));
    assert_eq!(tx(s, |t| t.book_balance("user:b")), Some(-5));
    tx(s, |t| t.book_credit_account("user:nobody", 5));
    assert_eq!(tx(s, |t| t.book_balance("user:nobody")), None);
    tx(s, |t| t.book_credit_account(OWN, 12));
    assert_eq!(
        tx(s, |t| t.book_resum()),
        BookResum {
            sum: 7,
            negative_accounts: 1
        }
    );
}

fn book_postings(s: &Store) {
    assert!(!tx(s, |t| t.book_posted("k")));
    assert_eq!(tx(s, |t| t.book_posting("k")), None);
    let edge_in = Posting {
        debit: None,
        credit: Some("user:a".into()),
        amount: i64::MAX,
    };
    let empty_name = Posting {
        debit: Some(String::new()),
        credit: None,
        amount: i64::MIN,
    };
    tx(s, |t| t.book_insert_posting("k", &edge_in));
    tx(s, |t| t.book_insert_posting("k2", &empty_name));
    assert!(tx(s, |t| t.book_posted("k")));
    assert_eq!(tx(s, |t| t.book_posting("k")), Some(edge_in.clone()));
    // An empty name is a name, not NULL.
    assert_eq!(tx(s, |t| t.book_posting("k2")), Some(empty_name));
    is_constraint(s.transact(|t| {
        t.book_insert_posting(
            "k",
            &Posting {
                debit: Some("x".into()),
                credit: Some("y".into()),
                amount: 1,
            },
        )
    }));
    assert_eq!(tx(s, |t| t.book_posting("k")), Some(edge_in));
}

fn book_totals(s: &Store) {
    assert_eq!(tx(s, |t| t.book_totals()), StoredTotals::default());
    assert_eq!(
        tx(s, |t| t.book_resum()),
        BookResum {
            sum: 0,
            negative_accounts: 0
        }
    );
    tx(s, |t| t.book_add_total(BookTotal::MoneyIn, 100));
    tx(s, |t| t.book_add_total(BookTotal::MoneyOut, 30));
    tx(s, |t| t.book_add_total(BookTotal::Sum, 100));
    tx(s, |t| t.book_add_total(BookTotal::Sum, -30));
    tx(s, |t| t.book_add_total(BookTotal::MoneyIn, i64::MAX - 100));
    assert_eq!(
        tx(s, |t| t.book_totals()),
        StoredTotals {
            money_in: i64::MAX,
            money_out: 30,
            sum: 70
        }
    );
}

static ALL: [&Migrations; 7] = [
    &MIGRATIONS,
    &REFUSAL_MIGRATIONS,
    &ISSUE_TAG_MIGRATIONS,
    &BOOK_MIGRATIONS,
    &DCP_KEY_CUSTODY_MIGRATIONS,
    &IN_FLIGHT_MIGRATIONS,
    &UNCOLLECTED_MIGRATIONS,
];

/// Loads finished without their device: the first row for a request is
/// kept, states move only from the state named, and the due list holds
/// the waiting rows old enough plus every row being reclaimed, oldest
/// first, bounded.
fn uncollected(s: &Store) {
    let row = |n: u8, since: i64| Uncollected {
        rid: h(0x40, n),
        account: "user:alice".into(),
        amount: u64::try_from(i64::MAX).unwrap(),
        issue: vec![0x86, n],
        reply_key: h(0x41, n),
        since,
        state: Collection::Waiting,
    };
    assert_eq!(tx(s, |t| t.uncollected_state(&h(0x40, 1))), None);
    assert!(tx(s, |t| t.uncollected_insert(&row(1, 10))));
    assert!(!tx(s, |t| t.uncollected_insert(&Uncollected {
        account: "user:mallory".into(),
        ..row(1, 99)
    })));
    assert!(tx(s, |t| t.uncollected_insert(&row(2, 20))));
    assert!(tx(s, |t| t.uncollected_insert(&row(3, 30))));
    assert_eq!(
        tx(s, |t| t.uncollected_due(i64::MAX, 10)),
        vec![row(1, 10), row(2, 20), row(3, 30)]
    );
    assert_eq!(
        tx(s, |t| t.uncollected_due(20, 10)),
        vec![row(1, 10), row(2, 20)]
    );
    assert_eq!(tx(s, |t| t.uncollected_due(i64::MAX, 1)), vec![row(1, 10)]);
    // Moves only from the state named.
    assert!(!tx(s, |t| t.uncollected_move(
        &h(0x40, 1),
        Collection::Reclaiming,
        Collection::Reclaimed
    )));
    assert!(tx(s, |t| t.uncollected_move(
        &h(0x40, 1),
        Collection::Waiting,
        Collection::Delivered
    )));
    assert!(tx(s, |t| t.uncollected_move(
        &h(0x40, 3),
        Collection::Waiting,
        Collection::Reclaiming
    )));
    assert_eq!(
        tx(s, |t| t.uncollected_state(&h(0x40, 1))),
        Some(Collection::Delivered)
    );
    // Delivered rows are never due; a row being reclaimed is due at once.
    assert_eq!(
        tx(s, |t| t.uncollected_due(0, 10)),
        vec![Uncollected {
            state: Collection::Reclaiming,
            ..row(3, 30)
        }]
    );
    assert!(tx(s, |t| t.uncollected_move(
        &h(0x40, 3),
        Collection::Reclaiming,
        Collection::Reclaimed
    )));
    assert_eq!(tx(s, |t| t.uncollected_due(i64::MAX, 10)), vec![row(2, 20)]);
    assert_eq!(
        tx(s, |t| t.uncollected_state(&h(0x40, 3))),
        Some(Collection::Reclaimed)
    );
}

/// Debits in flight: round trip (u64 amounts up to i64::MAX, attempt
/// u32::MAX), oldest first with the bound inclusive, a limit, a key
/// stored twice refused, deletion idempotent.
fn in_flight(s: &Store) {
    let row = |idem: &str, since: i64, amount: u64, attempt: u32| InFlight {
        idem: idem.to_string(),
        kind: "interbank".into(),
        rid: h(7, since as u8),
        attempt,
        account: "user:alice".into(),
        amount,
        reply_key: h(8, 1),
        request: vec![0x83, 1, 2, 3],
        since,
    };
    assert!(tx(s, |t| t.in_flight_before(i64::MAX, 10)).is_empty());
    let (a, b, c) = (
        row("a", 100, i64::MAX as u64, u32::MAX),
        row("b", 50, 1, 0),
        row("c", 200, 5, 1),
    );
    for r in [&a, &b, &c] {
        tx(s, |t| t.in_flight_insert(r));
    }
    assert_eq!(
        tx(s, |t| t.in_flight_before(49, 10)),
        Vec::<InFlight>::new()
    );
    assert_eq!(
        tx(s, |t| t.in_flight_before(100, 10)),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(tx(s, |t| t.in_flight_before(i64::MAX, 1)), vec![b.clone()]);
    is_constraint(s.transact(|t| t.in_flight_insert(&row("a", 1, 1, 1))));
    tx(s, |t| t.in_flight_delete("b"));
    tx(s, |t| t.in_flight_delete("b"));
    tx(s, |t| t.in_flight_delete("nothing"));
    assert_eq!(tx(s, |t| t.in_flight_before(i64::MAX, 10)), vec![a, c]);
}

fn sqlite() -> Store {
    let s = Store::sqlite_memory().unwrap_or_else(|e| panic!("{e}"));
    s.migrate(&ALL).unwrap_or_else(|e| panic!("{e}"));
    // Migrations re-run are a no-op (the book's seed rows too).
    s.migrate(&ALL).unwrap_or_else(|e| panic!("{e}"));
    s
}

/// PostgreSQL, migrated, in a fresh schema; `None` without a database
/// (a failure under CI).
fn postgres(test: &str) -> Option<Store> {
    let r = tally_store::test_postgres_store(test);
    if r.is_none() && std::env::var_os("CI").is_some() {
        panic!("{test}: CI is set but TALLY_TEST_DATABASE_URL is not: PostgreSQL is required");
    }
    let (s, _schema) = r?;
    s.migrate(&ALL).unwrap_or_else(|e| panic!("{e}"));
    s.migrate(&ALL).unwrap_or_else(|e| panic!("{e}"));
    Some(s)
}

macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::sqlite()); } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                if let Some(s) = super::postgres(concat!("tally-dcp db ", stringify!($name))) {
                    super::$name(&s);
                }
            } )*
        }
    };
}

contracts!(
    enrolment_codes,
    devices,
    requests,
    redemptions,
    issue_tags,
    book_accounts,
    book_postings,
    book_totals,
    in_flight,
    uncollected,
);

// ---- the guard: SQL only in src/db.rs ---------------------------------

#[path = "../../tally-store/tests/common/sql_guard.rs"]
mod sql_guard;

#[test]
fn sql_lives_only_in_db_rs() {
    let found = sql_guard::scan_crate(env!("CARGO_MANIFEST_DIR"), &["db.rs"]);
    assert!(
        found.is_empty(),
        "SQL or positional row reads outside src/db.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_finds_each_kind_of_violation() {
    sql_guard::self_test();
}
