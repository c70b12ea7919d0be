//! SQLite options: `synchronous` set at open (SQLite refuses to change it
//! inside a transaction), through `Store::sqlite_with` and the
//! `sqlite:PATH?synchronous=…` URL form of `Store::open`.

use std::path::PathBuf;

use tally_store::{SqliteOptions, Store, StoreError, Synchronous, Value};

fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-store-opts-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `PRAGMA synchronous` of the store's connection: 1 NORMAL, 2 FULL.
fn synchronous(s: &Store) -> i64 {
    s.transact(|tx| tx.query_one("PRAGMA synchronous", &[]))
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap()
}

fn journal_mode(s: &Store) -> String {
    s.transact(|tx| tx.query_one("PRAGMA journal_mode", &[]))
        .unwrap()
        .unwrap()
        .text(0)
        .unwrap()
        .to_string()
}

fn config_error(url: &str) -> String {
    match Store::open(url) {
        Err(StoreError::Config(m)) => m,
        Err(e) => panic!("{url}: expected a configuration error, got {e}"),
        Ok(_) => panic!("{url}: expected a configuration error, opened"),
    }
}

#[test]
fn default_is_full_wal() {
    let d = dir("default");
    assert_eq!(SqliteOptions::default().synchronous, Synchronous::Full);
    let s = Store::sqlite(&d.join("a.db")).unwrap();
    assert_eq!(synchronous(&s), 2);
    assert_eq!(journal_mode(&s), "wal");
    let s = Store::sqlite_with(&d.join("b.db"), SqliteOptions::default()).unwrap();
    assert_eq!(synchronous(&s), 2);
}

#[test]
fn sqlite_with_normal() {
    let d = dir("with-normal");
    let opts = SqliteOptions {
        synchronous: Synchronous::Normal,
    };
    let s = Store::sqlite_with(&d.join("db"), opts).unwrap();
    assert_eq!(synchronous(&s), 1);
    assert_eq!(journal_mode(&s), "wal");
    // Stays NORMAL across transactions (one connection per SQLite store).
    s.transact(|tx| tx.execute("CREATE TABLE t (k BIGINT PRIMARY KEY)", &[]))
        .unwrap();
    for k in 0..3 {
        s.transact(|tx| tx.execute("INSERT INTO t (k) VALUES ($1)", &[Value::Int(k)]))
            .unwrap();
    }
    assert_eq!(synchronous(&s), 1);
    drop(s);
    // Committed rows are there after a clean reopen with the default.
    let s = Store::sqlite(&d.join("db")).unwrap();
    assert_eq!(synchronous(&s), 2);
    let n = s
        .transact(|tx| tx.query_one("SELECT COUNT(*) FROM t", &[]))
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn open_urls() {
    let d = dir("urls");
    let p = d.join("db").display().to_string();
    let s = Store::open(&format!("sqlite:{p}?synchronous=normal")).unwrap();
    assert_eq!(s.backend(), "sqlite");
    assert_eq!(synchronous(&s), 1);
    drop(s);
    let s = Store::open(&format!("sqlite:{p}?synchronous=NORMAL")).unwrap();
    assert_eq!(synchronous(&s), 1);
    drop(s);
    let s = Store::open(&format!("sqlite:{p}?synchronous=full")).unwrap();
    assert_eq!(synchronous(&s), 2);
    drop(s);
    // Without options, and as a bare path: FULL.
    let s = Store::open(&format!("sqlite:{p}")).unwrap();
    assert_eq!(synchronous(&s), 2);
    drop(s);
    let s = Store::open(&format!("sqlite:{p}?")).unwrap();
    assert_eq!(synchronous(&s), 2);
    drop(s);
    let s = Store::open(&p).unwrap();
    assert_eq!(synchronous(&s), 2);
    drop(s);
    // All of them opened the same file: the options are not in its name.
    assert!(d.join("db").exists());
    for f in std::fs::read_dir(&d).unwrap() {
        let name = f.unwrap().file_name();
        assert!(name.to_string_lossy().starts_with("db"), "{name:?}");
        assert!(!name.to_string_lossy().contains('?'), "{name:?}");
    }
}

#[test]
fn bare_path_is_taken_as_is() {
    let d = dir("bare");
    let p = d.join("odd?synchronous=normal").display().to_string();
    let s = Store::open(&p).unwrap();
    assert_eq!(synchronous(&s), 2);
    assert!(d.join("odd?synchronous=normal").exists());
}

#[test]
fn bad_options_are_refused() {
    let d = dir("bad");
    let p = d.join("db").display().to_string();
    let m = config_error(&format!("sqlite:{p}?synchronus=normal"));
    assert!(m.contains("unknown SQLite option `synchronus`"), "{m}");
    let m = config_error(&format!("sqlite:{p}?synchronous=off"));
    assert!(m.contains("synchronous=off"), "{m}");
    let m = config_error(&format!("sqlite:{p}?synchronous"));
    assert!(m.contains("has no value"), "{m}");
    let m = config_error(&format!("sqlite:{p}?synchronous=normal&synchronous=full"));
    assert!(m.contains("twice"), "{m}");
    let m = config_error("sqlite:?synchronous=normal");
    assert!(m.contains("names no SQLite file"), "{m}");
    // Nothing was created by the refused URLs.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    let e = Store::open(&format!("sqlite:{p}?x=1")).err().unwrap();
    assert!(
        e.to_string().starts_with("invalid store configuration: "),
        "{e}"
    );
}
