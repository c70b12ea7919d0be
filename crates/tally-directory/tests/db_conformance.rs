//! The directory's store contract ([`DirectoryDb`]), written once and run
//! on SQLite (in memory) and PostgreSQL (a fresh schema per test; skipped
//! loudly without `TALLY_TEST_DATABASE_URL`, a failure under `CI`), and
//! the guard that keeps every SQL statement of this crate in `src/db.rs`.

use tally_core::testkit::key;
use tally_core::{Hash32, PublicKey, RevocationList, Suite};
use tally_directory::{DirectoryDb, MIGRATIONS, SeEntry, SeStatus, StoredRevocationList};
use tally_store::{Store, StoreError, Tx};

fn h(first: u8, last: u8) -> Hash32 {
    let mut b = [first; 32];
    b[31] = last;
    Hash32(b)
}

fn pk(label: &str) -> PublicKey {
    use tally_core::Signer;
    key(Suite::Ed25519, label.as_bytes()).public_key()
}

fn list(serial: u64, revoked: Vec<Hash32>) -> RevocationList {
    let root = key(Suite::Ed25519, b"root");
    RevocationList::try_sign(&root, serial, 7, revoked).unwrap_or_else(|e| match e {})
}

/// Runs `f` in one transaction, panicking on a store error.
fn tx<R>(s: &Store, mut f: impl FnMut(&mut dyn Tx) -> Result<R, StoreError>) -> R {
    s.transact(|tx| f(tx)).unwrap_or_else(|e| panic!("{e}"))
}

fn se_round_trip(s: &Store) {
    let (a, b, c) = (h(0x00, 1), h(0xff, 2), h(0x7f, 3));
    assert_eq!(tx(s, |t| t.se_get(&a)), None, "absent SE");
    assert!(tx(s, |t| t.se_list()).is_empty());
    // Inserted out of order, with the class's extremes and an empty and a
    // non-ASCII maker.
    tx(s, |t| t.se_insert(&b, &pk("b"), u8::MAX, "Ünïcode maker"));
    tx(s, |t| t.se_insert(&a, &pk("a"), 0, ""));
    tx(s, |t| t.se_insert(&c, &pk("c"), 3, "maker"));
    let want_a = SeEntry {
        se_id: a,
        attestation_key: pk("a"),
        device_class: 0,
        maker: String::new(),
        status: SeStatus::Active,
    };
    assert_eq!(tx(s, |t| t.se_get(&a)), Some(want_a.clone()));
    let got_b = tx(s, |t| t.se_get(&b)).unwrap_or_else(|| panic!("b"));
    assert_eq!(
        (got_b.device_class, got_b.maker.as_str()),
        (u8::MAX, "Ünïcode maker")
    );
    assert_eq!(got_b.attestation_key, pk("b"));
    // Bytewise order of ids on both backends.
    let ids: Vec<Hash32> = tx(s, |t| t.se_list()).iter().map(|e| e.se_id).collect();
    assert_eq!(ids, vec![a, c, b]);
    assert_eq!(tx(s, |t| t.se_list())[0], want_a);
    // The id is unique; a refused insert changes nothing.
    let dup = s.transact(|t| t.se_insert(&a, &pk("other"), 1, "x"));
    assert!(matches!(dup, Err(StoreError::Constraint(_))), "{dup:?}");
    assert_eq!(tx(s, |t| t.se_get(&a)), Some(want_a));
}

fn se_status(s: &Store) {
    let a = h(1, 1);
    assert!(
        !tx(s, |t| t.se_set_status(&a, SeStatus::Revoked)),
        "unknown SE"
    );
    assert_eq!(tx(s, |t| t.se_get(&a)), None, "no row made by an update");
    tx(s, |t| t.se_insert(&a, &pk("a"), 1, "m"));
    tx(s, |t| t.se_insert(&h(2, 2), &pk("b"), 1, "m"));
    for st in [SeStatus::Suspended, SeStatus::Revoked, SeStatus::Active] {
        assert!(tx(s, |t| t.se_set_status(&a, st)));
        assert_eq!(tx(s, |t| t.se_get(&a)).map(|e| e.status), Some(st));
    }
    assert!(tx(s, |t| t.se_set_status(&a, SeStatus::Revoked)));
    // Only the SE named.
    assert_eq!(
        tx(s, |t| t.se_get(&h(2, 2))).map(|e| e.status),
        Some(SeStatus::Active)
    );
}

fn escrow_ids(s: &Store) {
    let (se, digest) = (h(1, 0), h(0xd1, 0));
    assert_eq!(tx(s, |t| t.escrow_id_of_se(&se)), None);
    assert_eq!(tx(s, |t| t.se_of_escrow_id(&digest)), None);
    tx(s, |t| t.escrow_id_insert(&digest, &se));
    tx(s, |t| t.escrow_id_insert(&h(0xd2, 0), &h(2, 0)));
    assert_eq!(tx(s, |t| t.escrow_id_of_se(&se)), Some(digest));
    assert_eq!(tx(s, |t| t.se_of_escrow_id(&digest)), Some(se));
    assert_eq!(tx(s, |t| t.se_of_escrow_id(&h(0xd2, 0))), Some(h(2, 0)));
    // A digest names one SE.
    let dup = s.transact(|t| t.escrow_id_insert(&digest, &h(3, 0)));
    assert!(matches!(dup, Err(StoreError::Constraint(_))), "{dup:?}");
    assert_eq!(tx(s, |t| t.se_of_escrow_id(&digest)), Some(se));
    assert_eq!(tx(s, |t| t.escrow_id_of_se(&h(3, 0))), None);
}

fn revoked_keys(s: &Store) {
    let (k1, k2, k3) = (h(0xff, 0), h(0x00, 9), h(0x80, 0));
    assert_eq!(tx(s, |t| t.revoked_key_count()), 0);
    assert!(tx(s, |t| t.revoked_key_ids()).is_empty());
    assert!(!tx(s, |t| t.revoked_key_listed(&k1)));
    // With and without an SE (a NULL BLOB on PostgreSQL).
    tx(s, |t| t.revoked_key_insert(&k1, Some(&h(5, 5)), "opened"));
    tx(s, |t| t.revoked_key_insert(&k2, None, ""));
    tx(s, |t| t.revoked_key_insert(&k3, None, "dcp key"));
    assert!(tx(s, |t| t.revoked_key_listed(&k1)));
    assert!(tx(s, |t| t.revoked_key_listed(&k2)));
    assert!(!tx(s, |t| t.revoked_key_listed(&h(0x42, 0))));
    assert_eq!(tx(s, |t| t.revoked_key_count()), 3);
    assert_eq!(tx(s, |t| t.revoked_key_ids()), vec![k2, k3, k1]);
    let dup = s.transact(|t| t.revoked_key_insert(&k1, None, "again"));
    assert!(matches!(dup, Err(StoreError::Constraint(_))), "{dup:?}");
    assert_eq!(tx(s, |t| t.revoked_key_count()), 3);
}

fn revocation_lists(s: &Store) {
    assert_eq!(tx(s, |t| t.revocation_list_last()), None);
    let l5 = list(5, vec![h(2, 0), h(1, 0)]);
    let l3 = list(3, vec![]);
    tx(s, |t| t.revocation_list_insert(5, &l5));
    tx(s, |t| t.revocation_list_insert(3, &l3));
    // The highest serial, not the last inserted.
    assert_eq!(
        tx(s, |t| t.revocation_list_last()),
        Some(StoredRevocationList {
            serial: 5,
            list: l5.clone()
        })
    );
    let dup = s.transact(|t| t.revocation_list_insert(5, &l3));
    assert!(matches!(dup, Err(StoreError::Constraint(_))), "{dup:?}");
    // The serial's extremes are stored as they are.
    let top = list(i64::MAX as u64, vec![h(9, 9)]);
    tx(s, |t| t.revocation_list_insert(i64::MIN, &l3));
    assert_eq!(
        tx(s, |t| t.revocation_list_last()).map(|l| l.serial),
        Some(5)
    );
    tx(s, |t| t.revocation_list_insert(i64::MAX, &top));
    assert_eq!(
        tx(s, |t| t.revocation_list_last()),
        Some(StoredRevocationList {
            serial: i64::MAX,
            list: top.clone()
        })
    );
}

fn sqlite() -> Store {
    let s = Store::sqlite_memory().unwrap_or_else(|e| panic!("{e}"));
    s.migrate(&[&MIGRATIONS]).unwrap_or_else(|e| panic!("{e}"));
    // Migrations re-run are a no-op.
    s.migrate(&[&MIGRATIONS]).unwrap_or_else(|e| panic!("{e}"));
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
    s.migrate(&[&MIGRATIONS]).unwrap_or_else(|e| panic!("{e}"));
    s.migrate(&[&MIGRATIONS]).unwrap_or_else(|e| panic!("{e}"));
    Some(s)
}

macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::sqlite()); } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                if let Some(s) = super::postgres(concat!("tally-directory db ", stringify!($name))) {
                    super::$name(&s);
                }
            } )*
        }
    };
}

contracts!(
    se_round_trip,
    se_status,
    escrow_ids,
    revoked_keys,
    revocation_lists,
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
