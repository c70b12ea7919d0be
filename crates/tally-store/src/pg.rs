//! PostgreSQL backend: SERIALIZABLE transactions, retried by
//! [`crate::Store::transact`] on SQLSTATE 40001 / 40P01; a small pool of
//! connections so several worker threads settle in parallel.

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) use postgres::IsolationLevel;
use postgres::{Client, NoTls, Statement};

use crate::{Counter, ID_BLOCK, Pool, Row, StoreError, TX_RETRIES_MAX, Tx, TxFailure, Value};

pub struct PgStore {
    config: postgres::Config,
    pool: Pool<Conn>,
    /// Reserved id blocks per counter: (next id, end of the block).
    ids: Mutex<HashMap<String, (i64, i64)>>,
}

/// A connection and its prepared statements (one round trip saved per statement).
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

fn map_err(e: postgres::Error) -> StoreError {
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Conflict
        }
        Some(c)
            if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::CHECK_VIOLATION
                || *c == SqlState::FOREIGN_KEY_VIOLATION
                || *c == SqlState::NOT_NULL_VIOLATION =>
        {
            StoreError::Constraint(e.to_string())
        }
        // The server's own message (the Display of postgres::Error is
        // only "db error" for these).
        _ => StoreError::Db(match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        }),
    }
}

/// The planner's cost of a random page read, set on every connection
/// (see [`PgStore::connect`]).
const RANDOM_PAGE_COST: f32 = 1.1;

fn dialect(sql: &str) -> String {
    sql.replace("BLOB", "BYTEA")
}

impl PgStore {
    pub fn connect(url: &str, schema: Option<&str>) -> Result<PgStore, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::Db(e.to_string()))?;
        // Every look-up of settlement is by key (hashes, spread over the
        // whole index): a sequential scan is never the cheaper plan once
        // the tables hold a day's rows, yet the default cost (4, for
        // spinning disks) makes the planner scan tables of tens of
        // thousands of rows for a look-up of a hundred keys. Worse, under
        // SERIALIZABLE a scan takes a predicate lock on the whole relation,
        // so every concurrent settlement transaction conflicts with it.
        // 1.1 is the usual figure for SSDs and a cached working set.
        // Options given in the URL come after, so they win.
        let mut options = format!("-c random_page_cost={RANDOM_PAGE_COST}");
        if let Some(given) = config.get_options() {
            options.push(' ');
            options.push_str(given);
        }
        if let Some(s) = schema {
            options.push_str(&format!(" -c search_path={s}"));
        }
        config.options(&options);
        let s = PgStore {
            config,
            pool: Pool::new(),
            ids: Mutex::new(HashMap::new()),
        };
        // Fail early if unreachable.
        let c = s.connect_one()?;
        s.pool.give(c);
        Ok(s)
    }

    fn connect_one(&self) -> Result<Conn, StoreError> {
        Ok(Conn {
            client: self.config.connect(NoTls).map_err(map_err)?,
            statements: HashMap::new(),
        })
    }

    pub(crate) fn transact_once<R, E: TxFailure>(
        &self,
        f: &mut impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        self.transact_once_at(IsolationLevel::Serializable, f)
    }

    pub(crate) fn transact_once_at<R, E: TxFailure>(
        &self,
        level: IsolationLevel,
        f: &mut impl FnMut(&mut dyn Tx) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut conn = match self.pool.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => self.connect_one()?,
        };
        let Conn { client, statements } = &mut conn;
        let result = (|| {
            let mut tx = client
                .build_transaction()
                .isolation_level(level)
                .start()
                .map_err(map_err)?;
            let mut t = PgTx {
                tx: &mut tx,
                statements,
                store: self,
            };
            let r = f(&mut t)?;
            tx.commit().map_err(map_err)?;
            Ok(r)
        })();
        if !conn.client.is_closed() {
            self.pool.give(conn);
        }
        result
    }
}

struct PgTx<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
    statements: &'a mut HashMap<String, Statement>,
    store: &'a PgStore,
}

impl PgStore {
    fn next_id(&self, c: &Counter) -> Result<i64, StoreError> {
        let key = format!("{}.{}", c.table, c.name);
        let mut ids = self
            .ids
            .lock()
            .map_err(|_| StoreError::Db("id cache poisoned".into()))?;
        if let Some((next, end)) = ids.get_mut(&key)
            && *next < *end
        {
            *next += 1;
            return Ok(*next - 1);
        }
        let end = self.reserve(c)?;
        let start = end - ID_BLOCK;
        assert!(start >= 0, "counter {key} reserved a block below zero");
        ids.insert(key, (start + 1, end));
        Ok(start)
    }

    /// Reserves the next block of `c` in a committed transaction of its
    /// own, on another connection than the caller's; returns the block's
    /// end (exclusive).
    fn reserve(&self, c: &Counter) -> Result<i64, StoreError> {
        let sql = format!(
            "UPDATE {t} SET {v} = {v} + $1 WHERE {k} = $2 RETURNING {v}",
            t = c.table,
            v = c.value_column,
            k = c.key_column
        );
        let mut conn = match self.pool.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => self.connect_one()?,
        };
        let mut attempt = 0;
        let result = loop {
            let r = (|| {
                let mut tx = conn
                    .client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start()
                    .map_err(map_err)?;
                let row = tx
                    .query_opt(&sql, &[&ID_BLOCK, &c.name])
                    .map_err(map_err)?
                    .ok_or_else(|| {
                        StoreError::Type(format!("counter {}.{} missing", c.table, c.name))
                    })?;
                let end: i64 = row.try_get(0).map_err(map_err)?;
                tx.commit().map_err(map_err)?;
                Ok(end)
            })();
            match r {
                Err(StoreError::Conflict) if attempt < TX_RETRIES_MAX => attempt += 1,
                other => break other,
            }
        };
        if !conn.client.is_closed() {
            self.pool.give(conn);
        }
        result
    }
}

impl PgTx<'_, '_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let st = self.tx.prepare(&dialect(sql)).map_err(map_err)?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

/// SQL NULL for a parameter of any type (a typed `Option::None` would be
/// refused by columns of another type, e.g. a NULL into a BYTEA column).
#[derive(Debug)]
struct AnyNull;

impl ToSql for AnyNull {
    fn to_sql(
        &self,
        _ty: &Type,
        _out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(postgres::types::IsNull::Yes)
    }
    fn accepts(_ty: &Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

fn params(values: &[Value]) -> Vec<Box<dyn ToSql + Sync>> {
    values
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync> {
            match v {
                Value::Null => Box::new(AnyNull),
                Value::Int(i) => Box::new(*i),
                Value::Bytes(b) => Box::new(b.clone()),
                Value::Text(s) => Box::new(s.clone()),
            }
        })
        .collect()
}

impl Tx for PgTx<'_, '_> {
    fn next_id(&mut self, c: &Counter) -> Result<i64, StoreError> {
        self.store.next_id(c)
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, StoreError> {
        let p = params(values);
        let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|b| b.as_ref()).collect();
        let st = self.statement(sql)?;
        self.tx.execute(&st, &refs).map_err(map_err)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, StoreError> {
        let p = params(values);
        let refs: Vec<&(dyn ToSql + Sync)> = p.iter().map(|b| b.as_ref()).collect();
        let st = self.statement(sql)?;
        let rows = self.tx.query(&st, &refs).map_err(map_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut v = Vec::with_capacity(r.len());
            for (i, c) in r.columns().iter().enumerate() {
                let t = c.type_();
                let val = if *t == Type::INT8 {
                    r.try_get::<_, Option<i64>>(i)
                        .map_err(map_err)?
                        .map(Value::Int)
                } else if *t == Type::INT4 {
                    r.try_get::<_, Option<i32>>(i)
                        .map_err(map_err)?
                        .map(|x| Value::Int(i64::from(x)))
                } else if *t == Type::INT2 {
                    r.try_get::<_, Option<i16>>(i)
                        .map_err(map_err)?
                        .map(|x| Value::Int(i64::from(x)))
                } else if *t == Type::NUMERIC {
                    // SUM(BIGINT) is NUMERIC in PostgreSQL: read it as text.
                    return Err(StoreError::Type(format!(
                        "column {i} is NUMERIC; cast aggregates to BIGINT in portable SQL"
                    )));
                } else if *t == Type::BYTEA {
                    r.try_get::<_, Option<Vec<u8>>>(i)
                        .map_err(map_err)?
                        .map(Value::Bytes)
                } else if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::NAME {
                    r.try_get::<_, Option<String>>(i)
                        .map_err(map_err)?
                        .map(Value::Text)
                } else if *t == Type::BOOL {
                    r.try_get::<_, Option<bool>>(i)
                        .map_err(map_err)?
                        .map(|b| Value::Int(i64::from(b)))
                } else {
                    return Err(StoreError::Type(format!(
                        "column {i}: unsupported type {t}"
                    )));
                };
                v.push(val.unwrap_or(Value::Null));
            }
            out.push(Row(v));
        }
        Ok(out)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
