//! One conformance suite, run against SQLite (temp file) and PostgreSQL
//! (fresh schema per test; skipped loudly when TALLY_TEST_DATABASE_URL is unset).

use std::sync::Arc;

use tally_store::{Migrations, Store, StoreError, Value, test_postgres_store};

static M: Migrations = Migrations {
    component: "conformance",
    steps: &[
        (
            1,
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL CHECK (v >= 0), b BLOB)",
        ),
        (
            2,
            "CREATE TABLE counter (id BIGINT PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO counter (id, n) VALUES (1, 0)",
        ),
        (
            3,
            "CREATE TABLE nullable (id BIGINT PRIMARY KEY, b BLOB, t TEXT, n BIGINT)",
        ),
    ],
};

fn sqlite_store(name: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("tally-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Store::sqlite(&dir.join("db.sqlite")).unwrap()
}

fn commit_and_rollback(s: &Store) {
    s.migrate(&[&M]).unwrap();
    s.migrate(&[&M]).unwrap(); // idempotent
    s.transact(|tx| {
        tx.execute(
            "INSERT INTO kv (k, v, b) VALUES ($1, $2, $3)",
            &["a".into(), Value::Int(5), vec![1u8, 2, 3].into()],
        )
    })
    .unwrap();
    // An error inside the closure rolls everything back.
    let r: Result<(), StoreError> = s.transact(|tx| {
        tx.execute(
            "INSERT INTO kv (k, v, b) VALUES ($1, $2, $3)",
            &["b".into(), Value::Int(1), Value::Null],
        )?;
        Err(StoreError::Db("abort".into()))
    });
    assert!(r.is_err());
    let rows = s
        .transact(|tx| tx.query("SELECT k, v, b FROM kv ORDER BY k", &[]))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text(0).unwrap(), "a");
    assert_eq!(rows[0].int(1).unwrap(), 5);
    assert_eq!(rows[0].bytes(2).unwrap(), &[1, 2, 3]);
}

fn constraints(s: &Store) {
    s.migrate(&[&M]).unwrap();
    s.transact(|tx| {
        tx.execute(
            "INSERT INTO kv (k, v) VALUES ($1, $2)",
            &["x".into(), Value::Int(1)],
        )
    })
    .unwrap();
    let dup = s.transact(|tx| {
        tx.execute(
            "INSERT INTO kv (k, v) VALUES ($1, $2)",
            &["x".into(), Value::Int(2)],
        )
    });
    assert!(matches!(dup, Err(StoreError::Constraint(_))), "{dup:?}");
    let neg = s.transact(|tx| tx.execute("UPDATE kv SET v = v - 5 WHERE k = $1", &["x".into()]));
    assert!(matches!(neg, Err(StoreError::Constraint(_))), "{neg:?}");
    let sum = s
        .transact(|tx| tx.query_one("SELECT CAST(COALESCE(SUM(v), 0) AS BIGINT) FROM kv", &[]))
        .unwrap()
        .unwrap();
    assert_eq!(sum.int(0).unwrap(), 1);
}

fn concurrent_increments(s: Store) {
    s.migrate(&[&M]).unwrap();
    let s = Arc::new(s);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    s.transact(|tx| {
                        let n = tx
                            .query_one("SELECT n FROM counter WHERE id = 1", &[])?
                            .map(|r| r.int(0))
                            .transpose()?
                            .unwrap_or(0);
                        tx.execute(
                            "UPDATE counter SET n = $1 WHERE id = 1",
                            &[Value::Int(n + 1)],
                        )
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = s
        .transact(|tx| tx.query_one("SELECT n FROM counter WHERE id = 1", &[]))
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap();
    assert_eq!(n, 100, "lost updates under concurrency");
}

macro_rules! conformance {
    ($($name:ident),*) => {
        mod sqlite { $( #[test] fn $name() { super::$name(&super::sqlite_store(stringify!($name))); } )* }
        mod postgres { $( #[test] fn $name() { if let Some((s, _)) = tally_store::test_postgres_store(stringify!($name)) { super::$name(&s); } } )* }
    };
}
/// Regression: on PostgreSQL a bound NULL was typed BIGINT, so NULL into a
/// BLOB or TEXT column failed to serialise.
fn nulls_of_every_type(s: &Store) {
    s.migrate(&[&M]).unwrap();
    s.transact(|tx| {
        tx.execute(
            "INSERT INTO nullable (id, b, t, n) VALUES ($1, $2, $3, $4)",
            &[Value::Int(1), Value::Null, Value::Null, Value::Null],
        )
    })
    .unwrap();
    let r = s
        .transact(|tx| tx.query_one("SELECT b, t, n FROM nullable WHERE id = 1", &[]))
        .unwrap()
        .unwrap();
    assert!(r.is_null(0) && r.is_null(1) && r.is_null(2));
}

conformance!(commit_and_rollback, constraints, nulls_of_every_type);

#[test]
fn sqlite_concurrent_increments() {
    concurrent_increments(sqlite_store("concurrent"));
}

#[test]
fn postgres_concurrent_increments() {
    if let Some((s, _)) = test_postgres_store("postgres_concurrent_increments") {
        concurrent_increments(s);
    }
}
