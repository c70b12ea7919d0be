//! Storage for the back office: one transactional SQL interface over two
//! backends, SQLite (embedded default: one file, WAL) and PostgreSQL (scale
//! out; any PostgreSQL-compatible distributed SQL engine).
//!
//! Components (ledger, settlement, directory, DCP) write their SQL once,
//! in the dialect both accept: `$1, $2, …` placeholders (rewritten to
//! SQLite's `?1, ?2, …`), `BLOB` for bytes (rewritten to `BYTEA`), BIGINT
//! integers, no vendor functions. Every transaction is SERIALIZABLE
//! (SQLite: `BEGIN IMMEDIATE`, one writer) and is retried on serialization
//! conflicts, so a closure passed to [`Store::transact`] must be safe to
//! run more than once: it may only touch the database.

use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

mod pg;
mod sqlite;

pub use pg::PgStore;
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// A value bound to or read from SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            other => Err(StoreError::Type(format!(
                "column {i}: expected integer, got {other:?}"
            ))),
        }
    }
    pub fn bytes(&self, i: usize) -> Result<&[u8], StoreError> {
        match self.0.get(i) {
            Some(Value::Bytes(v)) => Ok(v),
            other => Err(StoreError::Type(format!(
                "column {i}: expected bytes, got {other:?}"
            ))),
        }
    }
    pub fn text(&self, i: usize) -> Result<&str, StoreError> {
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(v),
            other => Err(StoreError::Type(format!(
                "column {i}: expected text, got {other:?}"
            ))),
        }
    }
    /// Bytes, or `None` for SQL NULL.
    pub fn opt_bytes(&self, i: usize) -> Result<Option<&[u8]>, StoreError> {
        if self.is_null(i) {
            return Ok(None);
        }
        self.bytes(i).map(Some)
    }
    pub fn is_null(&self, i: usize) -> bool {
        matches!(self.0.get(i), Some(Value::Null) | None)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// Serialization failure or deadlock: the transaction may be retried.
    Conflict,
    /// A UNIQUE / PRIMARY KEY / CHECK constraint refused the write.
    Constraint(String),
    /// A column had another type than the code expected.
    Type(String),
    /// Connection or other database failure.
    Db(String),
    /// The store URL or its options are invalid (nothing was opened).
    Config(String),
    /// The database schema is newer than this binary.
    SchemaTooNew {
        component: String,
        found: i64,
        known: i64,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("serialization conflict"),
            StoreError::Constraint(m) => write!(f, "constraint violated: {m}"),
            StoreError::Type(m) => write!(f, "unexpected column type: {m}"),
            StoreError::Db(m) => write!(f, "database error: {m}"),
            StoreError::Config(m) => write!(f, "invalid store configuration: {m}"),
            StoreError::SchemaTooNew {
                component,
                found,
                known,
            } => {
                write!(
                    f,
                    "schema of {component} is at version {found}, this binary knows {known}: upgrade tally"
                )
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// Errors of code that runs inside a transaction: they must say whether
/// the transaction can be retried.
pub trait TxFailure: From<StoreError> {
    fn is_conflict(&self) -> bool;
}

impl TxFailure for StoreError {
    fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict)
    }
}

/// A counter row that hands out unique ids: `UPDATE {table} SET {value}
/// = {value} + n WHERE {key} = name RETURNING {value}` (portable: SQLite
/// ≥ 3.35, PostgreSQL, CockroachDB, YugabyteDB). The row holds the next
/// id not yet handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub table: &'static str,
    pub key_column: &'static str,
    pub value_column: &'static str,
    pub name: &'static str,
}

/// Ids a PostgreSQL store reserves from a [`Counter`] at once, in a
/// transaction of its own: the counter row is written once per block, not
/// once per id, so it is no hot row for concurrent writers.
pub const ID_BLOCK: i64 = 1024;

/// Statements inside one transaction.
pub trait Tx {
    /// A fresh id from `counter`, unique across every process using the
    /// database. Ids increase within one process but not across processes,
    /// and an id taken by a transaction that rolls back is not reused
    /// (gaps). SQLite (one writer) updates the row in this transaction;
    /// PostgreSQL hands out ids from a block it reserved in a separate,
    /// committed transaction ([`ID_BLOCK`] ids at a time), like a
    /// sequence with a cache.
    fn next_id(&mut self, counter: &Counter) -> Result<i64, StoreError>;
    /// Runs a statement; returns the number of rows changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// The backend's name ("sqlite" or "postgres").
    fn backend(&self) -> &'static str;

    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        let mut rows = self.query(sql, params)?;
        if rows.len() > 1 {
            return Err(StoreError::Type(format!(
                "expected at most one row, got {}",
                rows.len()
            )));
        }
        Ok(rows.pop())
    }

    /// Marks a point this transaction can roll back to
    /// ([`Tx::rollback_to`]) without ending it: one unit of work among
    /// several in one transaction (group commit). Names are the caller's
    /// constants, never data.
    fn savepoint(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.execute(&format!("SAVEPOINT {name}"), &[]).map(|_| ())
    }
    /// Keeps what was done since [`Tx::savepoint`] `name` (the
    /// transaction's commit still decides).
    fn release_savepoint(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.execute(&format!("RELEASE SAVEPOINT {name}"), &[])
            .map(|_| ())
    }
    /// Undoes what was done since [`Tx::savepoint`] `name` and forgets the
    /// savepoint; the transaction goes on (on PostgreSQL, also after a
    /// statement failed in it).
    fn rollback_to_savepoint(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.execute(&format!("ROLLBACK TO SAVEPOINT {name}"), &[])?;
        self.release_savepoint(name)
    }
}

/// Versioned migrations of one component: `(version, sql)`, statements
/// separated by `;`, applied in order, each version once. A statement
/// prefixed `sqlite:` or `postgres:` runs on that backend only.
pub struct Migrations {
    pub component: &'static str,
    pub steps: &'static [(i64, &'static str)],
}

/// Most retries of one transaction on serialization conflicts.
pub const TX_RETRIES_MAX: u32 = 20;

/// The store: one of the two backends.
// One per process (or a few): the size of the PostgreSQL variant (its
// configuration, pool and id blocks) does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Opens (creating if needed) an SQLite file with the default options
    /// (WAL, `synchronous = FULL`).
    pub fn sqlite(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::open(path)?))
    }
    /// Opens (creating if needed) an SQLite file with `opts`.
    pub fn sqlite_with(path: &Path, opts: SqliteOptions) -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::open_with(path, opts)?))
    }
    /// An in-memory SQLite store (tests).
    pub fn sqlite_memory() -> Result<Store, StoreError> {
        Ok(Store::Sqlite(SqliteStore::memory()?))
    }
    /// Connects to PostgreSQL (`postgres://…`), optionally inside `schema`.
    pub fn postgres(url: &str, schema: Option<&str>) -> Result<Store, StoreError> {
        Ok(Store::Postgres(PgStore::connect(url, schema)?))
    }
    /// Opens a store from a URL:
    ///
    /// * `postgres://…` or `postgresql://…`: PostgreSQL;
    /// * `sqlite:PATH` or `sqlite:PATH?key=value&…`: an SQLite file, with
    ///   options after the first `?` (see [`SqliteOptions::parse_query`];
    ///   today only `synchronous=full|normal`, default `full`); unknown
    ///   options are refused with [`StoreError::Config`];
    /// * anything else: a bare SQLite file path, taken as is (no options,
    ///   a `?` is part of the file name).
    pub fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::postgres(url, None)
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let (path, opts) = match rest.split_once('?') {
                Some((path, query)) => (path, SqliteOptions::parse_query(query)?),
                None => (rest, SqliteOptions::default()),
            };
            if path.is_empty() {
                return Err(StoreError::Config(format!(
                    "`{url}` names no SQLite file (expected sqlite:PATH)"
                )));
            }
            Store::sqlite_with(Path::new(path), opts)
        } else {
            Store::sqlite(Path::new(url))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Runs `f` in one SERIALIZABLE transaction, committing if it returns
    /// Ok and rolling back otherwise; retries on conflicts.
    pub fn transact<R, E: TxFailure>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        self.retrying(false, f)
    }

    /// As [`Store::transact`], but READ COMMITTED on PostgreSQL (SQLite
    /// is serializable anyway). Only for work whose correctness does not
    /// rest on isolation — a lease on queue rows, re-checked by the
    /// UPDATE that takes it — where SERIALIZABLE's predicate locks would
    /// make concurrent claimers conflict for nothing.
    pub fn transact_relaxed<R, E: TxFailure>(
        &self,
        f: impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        self.retrying(true, f)
    }

    /// One transaction, retried on conflicts with capped exponential
    /// backoff (conflicting writers spread out).
    fn retrying<R, E: TxFailure>(
        &self,
        relaxed: bool,
        mut f: impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut attempt = 0u32;
        loop {
            let r = match self {
                Store::Sqlite(s) => s.transact_once(&mut f),
                Store::Postgres(s) if relaxed => {
                    s.transact_once_at(pg::IsolationLevel::ReadCommitted, &mut f)
                }
                Store::Postgres(s) => s.transact_once(&mut f),
            };
            match r {
                Err(e) if e.is_conflict() && attempt < TX_RETRIES_MAX => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_micros(200u64 << attempt.min(8)));
                }
                other => return other,
            }
        }
    }

    /// Applies pending migrations of each component.
    pub fn migrate(&self, components: &[&Migrations]) -> Result<(), StoreError> {
        self.transact(|tx| {
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (component, version))",
                &[],
            )?;
            Ok::<_, StoreError>(())
        })?;
        for m in components {
            let known = m.steps.iter().map(|s| s.0).max().unwrap_or(0);
            self.transact(|tx| {
                let row = tx.query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1",
                    &[m.component.into()],
                )?;
                let found = match row {
                    Some(r) => r.int(0)?,
                    None => 0,
                };
                if found > known {
                    return Err(StoreError::SchemaTooNew {
                        component: m.component.into(),
                        found,
                        known,
                    });
                }
                for (v, sql) in m.steps.iter().filter(|(v, _)| *v > found) {
                    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                        // `sqlite: …` / `postgres: …`: a statement for one
                        // backend only (physical layout: partitioning).
                        let stmt = match stmt.split_once(':') {
                            Some((b, rest)) if b == "sqlite" || b == "postgres" => {
                                if b != tx.backend() {
                                    continue;
                                }
                                rest.trim()
                            }
                            _ => stmt,
                        };
                        tx.execute(stmt, &[])?;
                    }
                    tx.execute(
                        "INSERT INTO schema_migrations (component, version) VALUES ($1, $2)",
                        &[m.component.into(), Value::Int(*v)],
                    )?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// A PostgreSQL URL for tests from `TALLY_TEST_DATABASE_URL`, or `None`
/// with a loud message on stderr so a skipped backend is never silent.
pub fn test_database_url(test: &str) -> Option<String> {
    match std::env::var("TALLY_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!(
                "\n*** SKIPPED (PostgreSQL): {test}: TALLY_TEST_DATABASE_URL is not set; \
                 set it (e.g. postgres://postgres@127.0.0.1:5432/test) to run this test against PostgreSQL ***\n"
            );
            None
        }
    }
}

/// A fresh PostgreSQL schema for one test: `(store, schema name)`.
pub fn test_postgres_store(test: &str) -> Option<(Store, String)> {
    let url = test_database_url(test)?;
    let schema = format!(
        "t_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            % 1_000_000_000_000
    );
    let admin = match PgStore::connect(&url, None) {
        Ok(s) => s,
        Err(e) => panic!("TALLY_TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}"),
    };
    let st = Store::Postgres(admin);
    if let Err(e) = st.transact(|tx| tx.execute(&format!("CREATE SCHEMA {schema}"), &[])) {
        panic!("cannot create test schema: {e}");
    }
    match Store::postgres(&url, Some(&schema)) {
        Ok(s) => Some((s, schema)),
        Err(e) => panic!("cannot connect to test schema: {e}"),
    }
}

/// Guards a connection pool of one backend.
pub(crate) struct Pool<C> {
    free: Mutex<Vec<C>>,
}

impl<C> Pool<C> {
    pub(crate) fn new() -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
        }
    }
    pub(crate) fn take(&self) -> Option<C> {
        self.free.lock().ok()?.pop()
    }
    pub(crate) fn give(&self, c: C) {
        if let Ok(mut v) = self.free.lock() {
            v.push(c);
        }
    }
}
