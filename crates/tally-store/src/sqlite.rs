//! SQLite backend: one file in WAL mode, one writer at a time
//! (`BEGIN IMMEDIATE`), which makes every transaction serializable.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, ErrorCode, params_from_iter, types::ValueRef};

use crate::{Row, StoreError, Tx, TxFailure, Value};

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

/// `$n` → `?n`, `BLOB` stays.
fn dialect(sql: &str) -> String {
    sql.replace('$', "?")
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
        )
        .map_err(map_err)?;
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
