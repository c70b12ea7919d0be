//! SQLite backend: one file in WAL mode, one writer at a time
//! (`BEGIN IMMEDIATE`), which makes every transaction serializable.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, ErrorCode, params_from_iter, types::ValueRef};

use crate::{Counter, Row, StoreError, Tx, TxFailure, Value};

/// How hard SQLite pushes each commit to disk (`PRAGMA synchronous`).
/// The store always runs in WAL mode, where both levels keep the database
/// consistent after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `FULL` (the default): the WAL is synced at every commit, so a
    /// committed transaction survives a power cut.
    #[default]
    Full,
    /// `NORMAL`: the WAL is synced only at checkpoints, so the last
    /// commits before a power cut (not a process crash) may roll back.
    /// Only for stores whose writers re-send lost commits idempotently
    /// (e.g. the MDS, fed from settlement's outbox).
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Options of an SQLite store, set on the connection when it is opened
/// (SQLite refuses to change some of them inside a transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
}

impl SqliteOptions {
    /// Parses the query of a `sqlite:PATH?key=value&…` URL. Known keys:
    /// `synchronous` = `full` | `normal` (case-insensitive). Unknown keys
    /// or values, and repeated keys, are refused.
    pub fn parse_query(query: &str) -> Result<SqliteOptions, StoreError> {
        let mut opts = SqliteOptions::default();
        let mut seen_synchronous = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                StoreError::Config(format!(
                    "SQLite option `{pair}` has no value (expected key=value)"
                ))
            })?;
            match key {
                "synchronous" => {
                    if seen_synchronous {
                        return Err(StoreError::Config(
                            "SQLite option `synchronous` given twice".into(),
                        ));
                    }
                    seen_synchronous = true;
                    opts.synchronous = match value.to_ascii_lowercase().as_str() {
                        "full" => Synchronous::Full,
                        "normal" => Synchronous::Normal,
                        _ => {
                            return Err(StoreError::Config(format!(
                                "SQLite option synchronous={value}: expected `full` or `normal`"
                            )));
                        }
                    };
                }
                _ => {
                    return Err(StoreError::Config(format!(
                        "unknown SQLite option `{key}` (known: synchronous)"
                    )));
                }
            }
        }
        Ok(opts)
    }
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE_CAPACITY: usize = 256;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, m) => match f.code {
            ErrorCode::ConstraintViolation => {
                StoreError::Constraint(m.clone().unwrap_or_else(|| e.to_string()))
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Conflict,
            _ => StoreError::Db(e.to_string()),
        },
        _ => StoreError::Db(e.to_string()),
    }
}

/// Most memory the connection's page cache takes (KiB; SQLite's default
/// is 2 MiB). A settlement group's transaction writes a few hundred rows
/// keyed by hashes, so one or two pages per row in each B-tree: with the
/// default cache the transaction spills dirty pages to the WAL before its
/// commit and reads them back, and each checkpoint re-reads pages the
/// cache dropped.
const PAGE_CACHE_KIB_MAX: u32 = 32 * 1024;

/// `$n` → `?n`, `BLOB` stays.
fn dialect(sql: &str) -> String {
    sql.replace('$', "?")
}

impl SqliteStore {
    /// Opens (creating if needed) `path` with the default options
    /// (`synchronous = FULL`).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) `path` with `opts`.
    pub fn open_with(path: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -{};",
            opts.synchronous.pragma(),
            PAGE_CACHE_KIB_MAX,
        ))
        .map_err(map_err)?;
        // Batched settlement prepares a few statements per batch size;
        // the default cache (16) would re-prepare them.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    pub fn memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(map_err)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn transact_once<R, E: TxFailure>(
        &self,
        f: &mut impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Db("connection mutex poisoned".into()))?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(map_err)?;
        let mut t = SqliteTx { tx: &tx };
        let r = f(&mut t)?;
        tx.commit().map_err(map_err)?;
        Ok(r)
    }
}

struct SqliteTx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Bytes(b) => rusqlite::types::Value::Blob(b.clone()),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

impl Tx for SqliteTx<'_> {
    fn next_id(&mut self, c: &Counter) -> Result<i64, StoreError> {
        // One writer at a time: the row is no contention point here.
        let sql = format!(
            "UPDATE {t} SET {v} = {v} + 1 WHERE {k} = $1 RETURNING {v}",
            t = c.table,
            v = c.value_column,
            k = c.key_column
        );
        let row = self
            .query_one(&sql, &[c.name.into()])?
            .ok_or_else(|| StoreError::Type(format!("counter {}.{} missing", c.table, c.name)))?;
        Ok(row.int(0)? - 1)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let mut st = self.tx.prepare_cached(&dialect(sql)).map_err(map_err)?;
        let n = st
            .execute(params_from_iter(params.iter().map(to_sql)))
            .map_err(map_err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut st = self.tx.prepare_cached(&dialect(sql)).map_err(map_err)?;
        let cols = st.column_count();
        let mut rows = st
            .query(params_from_iter(params.iter().map(to_sql)))
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(map_err)? {
            let mut v = Vec::with_capacity(cols);
            for i in 0..cols {
                v.push(match r.get_ref(i).map_err(map_err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                });
            }
            out.push(Row(v));
        }
        Ok(out)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
