//! The MDS's store: every SQL statement of this crate and its migrations,
//! behind the [`MdsDb`] trait. Detection (the token graph's lookups, the
//! detectors, the counters' arithmetic) stays in `graph.rs`, the alert
//! lifecycle in `lib.rs`; the methods here are single domain reads and
//! writes with typed arguments and results.
//!
//! One implementation serves both backends: tally-store runs one portable
//! SQL dialect on SQLite and PostgreSQL, so the trait is implemented once,
//! for `dyn Tx`, and every caller keeps its own transaction. Column
//! positions are read only here, in the decoder next to the SELECT whose
//! column list it decodes (tests/db_conformance.rs guards this). Errors
//! are the MDS's own ([`MdsError`]): a row this code did not write that
//! way is [`MdsError::Corrupt`], an amount past BIGINT is
//! [`MdsError::Overflow`], as they were before the store had a trait.

use tally_core::{Epoch, Hash32, OutPoint};
use tally_store::{Migrations, Row, StoreError, Tx, Value};

use crate::{Alert, AlertKind, AlertState, EpochPayments, MdsError, hash_of, stored};

pub static MIGRATIONS: Migrations = Migrations {
    component: "mds",
    steps: &[
        (
            1,
            "CREATE TABLE mds_records (
            id BLOB PRIMARY KEY,
            seq BIGINT NOT NULL,
            kind BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            status BIGINT NOT NULL,
            payer BLOB NOT NULL,
            payee BLOB NOT NULL,
            value BIGINT NOT NULL,
            payment BIGINT NOT NULL,
            depth BIGINT NOT NULL,
            redemption BIGINT NOT NULL,
            nonce BLOB NOT NULL
        );
        CREATE TABLE mds_outputs (
            record BLOB NOT NULL,
            idx BIGINT NOT NULL,
            owner BLOB NOT NULL,
            value BIGINT NOT NULL,
            class BIGINT NOT NULL,
            depth BIGINT NOT NULL,
            redeemed BIGINT NOT NULL
        );
        CREATE TABLE mds_spends (
            seq BIGINT NOT NULL,
            record BLOB NOT NULL,
            idx BIGINT NOT NULL,
            consumer BLOB NOT NULL
        );
        CREATE TABLE mds_alerts (
            id BIGINT PRIMARY KEY,
            kind BIGINT NOT NULL,
            severity BIGINT NOT NULL,
            state BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            subject BLOB NOT NULL,
            offender BLOB,
            records BLOB NOT NULL,
            amount BIGINT NOT NULL,
            op_record BLOB,
            op_idx BIGINT
        );
        CREATE INDEX mds_alerts_state ON mds_alerts (state);
        CREATE TABLE mds_alert_events (
            alert BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            from_state BIGINT NOT NULL,
            to_state BIGINT NOT NULL,
            note TEXT NOT NULL,
            PRIMARY KEY (alert, seq)
        );
        CREATE TABLE mds_epochs (
            epoch BIGINT PRIMARY KEY,
            payments BIGINT NOT NULL,
            value BIGINT NOT NULL
        );
        CREATE TABLE mds_open_requests (
            payee BLOB NOT NULL,
            nonce BLOB NOT NULL,
            amount BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            paired_with BLOB,
            PRIMARY KEY (payee, nonce)
        );
        CREATE TABLE mds_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
        INSERT INTO mds_counters (name, value) VALUES ('records', 0);
        INSERT INTO mds_counters (name, value) VALUES ('issued', 0);
        INSERT INTO mds_counters (name, value) VALUES ('redeemed', 0);
        INSERT INTO mds_counters (name, value) VALUES ('redemptions', 0);
        INSERT INTO mds_counters (name, value) VALUES ('hops_total', 0);
        INSERT INTO mds_counters (name, value) VALUES ('payments', 0);
        INSERT INTO mds_counters (name, value) VALUES ('payment_value', 0);
        INSERT INTO mds_counters (name, value) VALUES ('offline_samples', 0);
        INSERT INTO mds_counters (name, value) VALUES ('offline_epochs_total', 0);
        INSERT INTO mds_counters (name, value) VALUES ('offline_epochs_max', 0);
        INSERT INTO mds_counters (name, value) VALUES ('fraud_losses', 0);
        INSERT INTO mds_counters (name, value) VALUES ('double_spends', 0);
        INSERT INTO mds_counters (name, value) VALUES ('counterfeits', 0)",
        ),
        // One row per record: its outputs and inputs packed in the row
        // (see `graph.rs` for the layout) instead of ~3.3 edge rows, keyed
        // by the ingest sequence so every insert appends. The random
        // 32-byte key of version 1 dirtied about one index page per record
        // in every commit; uniqueness of ids is kept by the lookup maps
        // (checked again when they are rebuilt). Rows of version 1 keep
        // NULL edge columns and their edges in `mds_outputs` / `mds_spends`,
        // which new ingests no longer write.
        (
            2,
            "CREATE TABLE mds_records_v2 (
            seq BIGINT PRIMARY KEY,
            id BLOB NOT NULL,
            kind BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            status BIGINT NOT NULL,
            payer BLOB NOT NULL,
            payee BLOB NOT NULL,
            value BIGINT NOT NULL,
            payment BIGINT NOT NULL,
            depth BIGINT NOT NULL,
            redemption BIGINT NOT NULL,
            nonce BLOB NOT NULL,
            outputs BLOB,
            inputs BLOB
        );
        INSERT INTO mds_records_v2 (seq, id, kind, epoch, status, payer, payee, value, payment, depth, redemption, nonce)
            SELECT seq, id, kind, epoch, status, payer, payee, value, payment, depth, redemption, nonce FROM mds_records;
        DROP TABLE mds_records;
        ALTER TABLE mds_records_v2 RENAME TO mds_records",
        ),
        // Outbox rows (or single records of them) that failed ingestion,
        // kept with the failure's code and the alert that reported them,
        // so the rows after them keep flowing (see `Mds::set_aside`).
        (
            3,
            "CREATE TABLE mds_set_aside (
            id BLOB PRIMARY KEY,
            alert BIGINT NOT NULL,
            code BIGINT NOT NULL,
            epoch BIGINT NOT NULL,
            body BLOB NOT NULL
        )",
        ),
        // A payment stream's part of a record (decision 0020), packed as
        // `graph.rs` lays it out: an OPEN's terms (so the payer half is
        // rebuilt on open), a claim's or refund's ticks (so the first
        // close of each half is compared with the other across restarts).
        // NULL for every other record and for rows written before.
        (4, "ALTER TABLE mds_records ADD COLUMN stream BLOB"),
    ],
};

/// Per-connection SQLite settings for the ingesting connection: a page
/// cache (64 MiB) that keeps the pages ingest appends to and the
/// counters. (`temp_store` cannot be set here: SQLite refuses it inside a
/// transaction once the connection has used temporary storage, which
/// migration 2 does.)
const SQLITE_INGEST_PRAGMAS: &[&str] = &["PRAGMA cache_size = -65536"];

/// Most rows per multi-row INSERT (15 columns: 960 parameters, under
/// both backends' limits). Smaller statements come in halving sizes so at
/// most seven distinct INSERTs are ever prepared.
const INSERT_ROWS_MAX: usize = 64;

const RECORD_COLUMNS: &str = "mds_records (seq, id, kind, epoch, status, payer, payee, value, payment, depth, redemption, nonce, outputs, inputs, stream)";

// ---- rows ------------------------------------------------------------------

/// One record's row as ingest writes it (schema version 2: its edges
/// packed as `graph.rs` lays them out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    /// Ingest sequence: the table's key, increasing.
    pub seq: i64,
    pub id: Hash32,
    /// `graph.rs`'s record kind code (Issue, Transfer).
    pub kind: i64,
    pub epoch: Epoch,
    /// `graph.rs`'s status code (valid, counterfeit).
    pub status: i64,
    /// Absent: stored as empty bytes (the column is NOT NULL).
    pub payer: Option<Hash32>,
    /// Absent: stored as empty bytes.
    pub payee: Option<Hash32>,
    pub value: u64,
    pub payment: u64,
    pub depth: u64,
    pub redemption: bool,
    /// Absent (an Issue, a counterfeit): stored as empty bytes.
    pub nonce: Option<[u8; 16]>,
    /// Packed outputs (see `graph.rs`).
    pub outputs: Vec<u8>,
    /// Packed inputs (see `graph.rs`).
    pub inputs: Vec<u8>,
    /// Packed stream part (see `graph.rs`); `None` (NULL) for a record
    /// that neither opens nor closes a stream.
    pub stream: Option<Vec<u8>>,
}

/// A record's row as the MDS reads it back when it opens. The packed
/// edges are `None` for rows of schema version 1 (their edges are in
/// [`V1Output`] and [`V1Spend`] rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRecord<'r> {
    pub seq: i64,
    pub id: Hash32,
    pub kind: i64,
    pub status: i64,
    pub epoch: Epoch,
    pub payer: Option<Hash32>,
    pub payee: Option<Hash32>,
    pub payment: u64,
    pub depth: u64,
    pub redemption: bool,
    pub outputs: Option<&'r [u8]>,
    pub inputs: Option<&'r [u8]>,
    /// The packed stream part, `None` for records without one.
    pub stream: Option<&'r [u8]>,
}

/// An output written by schema version 1 (`mds_outputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Output {
    pub outpoint: OutPoint,
    pub owner: Hash32,
    pub value: u64,
    pub depth: u64,
    pub class: u8,
    pub redeemed: bool,
}

/// A consumption written by schema version 1 (`mds_spends`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Spend {
    pub seq: i64,
    pub outpoint: OutPoint,
    pub consumer: Hash32,
}

/// One step of an alert's lifecycle log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    pub from: AlertState,
    pub to: AlertState,
    pub note: String,
}

/// A payee's report of an interrupted payment (an open request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    pub payee: Hash32,
    pub nonce: [u8; 16],
    pub amount: u64,
    pub epoch: Epoch,
    /// The payer's unacknowledged transfer it was paired with, if any.
    pub paired_with: Option<Hash32>,
}

/// A stored open request as the payee's report finds it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequestState {
    pub amount: u64,
    pub paired_with: Option<Hash32>,
}

/// An ingest counter (`records`, `issued`, `holdings_class_N`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub name: String,
    pub value: u64,
}

/// What ingestion set aside (see [`crate::Mds::set_aside`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside<'a> {
    /// [`crate::Mds::set_aside_id`] of `body`.
    pub id: Hash32,
    /// The alert that reported it.
    pub alert: i64,
    /// The failure's code.
    pub code: u16,
    pub epoch: Epoch,
    pub body: &'a [u8],
}

// ---- the trait ----------------------------------------------------------------

/// The MDS's domain operations on its tables (`mds_*`).
pub trait MdsDb {
    /// Per-connection settings of the ingesting transaction (SQLite's page
    /// cache; nothing on PostgreSQL).
    fn prepare_ingest(&mut self) -> Result<(), MdsError>;

    /// Every record, by ingest sequence, to `f` (its packed edges borrowed).
    fn load_records(
        &mut self,
        f: impl FnMut(LoadedRecord<'_>) -> Result<(), MdsError>,
    ) -> Result<(), MdsError>;
    /// Every output written by schema version 1 (no order promised).
    fn load_v1_outputs(
        &mut self,
        f: impl FnMut(V1Output) -> Result<(), MdsError>,
    ) -> Result<(), MdsError>;
    /// Every consumption written by schema version 1, by sequence.
    fn load_v1_spends(
        &mut self,
        f: impl FnMut(V1Spend) -> Result<(), MdsError>,
    ) -> Result<(), MdsError>;
    /// Inserts record rows, `INSERT_ROWS_MAX` (64) per statement and the rest
    /// in halving sizes. Amounts past [`crate::AMOUNT_STORED_MAX`] are
    /// [`MdsError::Overflow`] and nothing of the call is written.
    fn insert_records(&mut self, rows: Vec<RecordRow>) -> Result<(), MdsError>;
    /// The valid, non-redemption transfer paying `payment` to `payee`
    /// under request `nonce`, if one was ingested.
    fn unpaired_transfer(
        &mut self,
        payee: &Hash32,
        nonce: &[u8; 16],
        payment: u64,
    ) -> Result<Option<Hash32>, MdsError>;

    /// The highest alert id (0 without alerts).
    fn last_alert_id(&mut self) -> Result<i64, MdsError>;
    /// Stores an alert. An id used before is refused by the key.
    fn insert_alert(&mut self, a: &Alert) -> Result<(), MdsError>;
    /// The alert `id`, if any.
    fn alert(&mut self, id: i64) -> Result<Option<Alert>, MdsError>;
    /// Every alert, by id.
    fn alerts(&mut self) -> Result<Vec<Alert>, MdsError>;
    /// Alerts not closed.
    fn open_alert_count(&mut self) -> Result<u64, MdsError>;
    /// Moves alert `id` from `from` to `to`; false (nothing changed) if
    /// it is not in `from` or does not exist.
    fn move_alert(&mut self, id: i64, from: AlertState, to: AlertState) -> Result<bool, MdsError>;
    /// How many steps the lifecycle log of `alert` holds.
    fn alert_event_count(&mut self, alert: i64) -> Result<i64, MdsError>;
    /// Logs step `seq` of `alert`'s lifecycle. A step logged before is
    /// refused by the key.
    fn insert_alert_event(
        &mut self,
        alert: i64,
        seq: i64,
        event: &AlertEvent,
    ) -> Result<(), MdsError>;
    /// The lifecycle log of `alert`, by step.
    fn alert_events(&mut self, alert: i64) -> Result<Vec<AlertEvent>, MdsError>;

    /// The alert that reported the body set aside under `id`, if any.
    fn set_aside_alert(&mut self, id: &Hash32) -> Result<Option<Alert>, MdsError>;
    /// Stores a body set aside. An id used before is refused by the key.
    fn insert_set_aside(&mut self, s: &SetAside<'_>) -> Result<(), MdsError>;
    /// How many bodies are set aside.
    fn set_aside_count(&mut self) -> Result<u64, MdsError>;
    /// The body set aside under `id`, if any.
    fn set_aside_body(&mut self, id: &Hash32) -> Result<Option<Vec<u8>>, MdsError>;

    /// The open request `(payee, nonce)`, if reported.
    fn open_request(
        &mut self,
        payee: &Hash32,
        nonce: &[u8; 16],
    ) -> Result<Option<OpenRequestState>, MdsError>;
    /// Stores an open request. One reported before is refused by the key.
    fn insert_open_request(&mut self, r: &OpenRequest) -> Result<(), MdsError>;
    /// Pairs the unpaired open request `(payee, nonce)` for `amount` with
    /// `transfer`; whether one was paired.
    fn pair_open_request(
        &mut self,
        payee: &Hash32,
        nonce: &[u8; 16],
        transfer: &Hash32,
        amount: u64,
    ) -> Result<bool, MdsError>;

    /// Adds `count` payments worth `value` to `epoch` (creating its row).
    fn add_epoch_payments(&mut self, epoch: Epoch, count: u64, value: u64) -> Result<(), MdsError>;
    /// Payments per epoch, by epoch.
    fn epoch_payments(&mut self) -> Result<Vec<EpochPayments>, MdsError>;
    /// Adds `delta` (may be negative) to counter `name` (creating it).
    fn add_counter(&mut self, name: &str, delta: i64) -> Result<(), MdsError>;
    /// Raises `offline_epochs_max` to `value` if it is lower.
    fn raise_offline_epochs_max(&mut self, value: u64) -> Result<(), MdsError>;
    /// Every counter (no order promised).
    fn counters(&mut self) -> Result<Vec<CounterRow>, MdsError>;
}

// ---- decoders and encoders ---------------------------------------------------

fn hv(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

fn iv(v: u64) -> Result<Value, MdsError> {
    Ok(Value::Int(stored(v)?))
}

/// A non-negative integer column.
fn uint(r: &Row, i: usize) -> Result<u64, MdsError> {
    u64::try_from(r.int(i)?).map_err(|_| MdsError::Corrupt(format!("negative column {i}")))
}

fn opt_hash(b: &[u8]) -> Result<Option<Hash32>, MdsError> {
    if b.is_empty() {
        Ok(None)
    } else {
        hash_of(b).map(Some)
    }
}

fn epoch_col(r: &Row, i: usize) -> Result<Epoch, MdsError> {
    Epoch::try_from(r.int(i)?).map_err(|_| MdsError::Corrupt("epoch".into()))
}

fn index_col(r: &Row, i: usize) -> Result<u8, MdsError> {
    u8::try_from(r.int(i)?).map_err(|_| MdsError::Corrupt("idx".into()))
}

/// INSERT with SQL NULL literals for absent values: a bound NULL has no
/// column type on PostgreSQL (tally-store binds it as BIGINT), which a
/// BLOB column refuses.
fn insert_row(
    tx: &mut (dyn Tx + '_),
    table: &str,
    cols: &[(&str, Option<Value>)],
) -> Result<(), MdsError> {
    let mut names = String::new();
    let mut places = String::new();
    let mut params = Vec::with_capacity(cols.len());
    for (i, (name, v)) in cols.iter().enumerate() {
        if i > 0 {
            names.push_str(", ");
            places.push_str(", ");
        }
        names.push_str(name);
        match v {
            Some(v) => {
                params.push(v.clone());
                places.push_str(&format!("${}", params.len()));
            }
            None => places.push_str("NULL"),
        }
    }
    tx.execute(
        &format!("INSERT INTO {table} ({names}) VALUES ({places})"),
        &params,
    )?;
    Ok(())
}

const ALERT_COLUMNS: &str =
    "id, kind, state, epoch, subject, offender, records, amount, op_record, op_idx";

/// Decodes a row of `SELECT {ALERT_COLUMNS} FROM mds_alerts`.
fn alert_from_row(r: &Row) -> Result<Alert, MdsError> {
    let kind = AlertKind::from_code(r.int(1)?)
        .ok_or_else(|| MdsError::Corrupt(format!("alert kind {:?}", r.0.get(1))))?;
    let state = AlertState::from_code(r.int(2)?)
        .ok_or_else(|| MdsError::Corrupt(format!("alert state {:?}", r.0.get(2))))?;
    let records = r
        .bytes(6)?
        .chunks(32)
        .map(hash_of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Alert {
        id: r.int(0)?,
        kind,
        severity: kind.severity(),
        state,
        epoch: u32::try_from(r.int(3)?).map_err(|_| MdsError::Corrupt("epoch".into()))?,
        subject: hash_of(r.bytes(4)?)?,
        offender: if r.is_null(5) {
            None
        } else {
            Some(hash_of(r.bytes(5)?)?)
        },
        records,
        amount: uint(r, 7)?,
        outpoint: if r.is_null(8) {
            None
        } else {
            Some((
                hash_of(r.bytes(8)?)?,
                u8::try_from(r.int(9)?).map_err(|_| MdsError::Corrupt("op_idx".into()))?,
            ))
        },
    })
}

const LOAD_RECORD_COLUMNS: &str = "id, status, kind, epoch, payer, payee, payment, redemption, seq, depth, outputs, inputs, stream";

/// Decodes a row of `SELECT {LOAD_RECORD_COLUMNS} FROM mds_records`.
fn loaded_record_from_row(r: &Row) -> Result<LoadedRecord<'_>, MdsError> {
    Ok(LoadedRecord {
        id: hash_of(r.bytes(0)?)?,
        status: r.int(1)?,
        kind: r.int(2)?,
        epoch: epoch_col(r, 3)?,
        payer: opt_hash(r.bytes(4)?)?,
        payee: opt_hash(r.bytes(5)?)?,
        payment: uint(r, 6)?,
        redemption: r.int(7)? != 0,
        seq: r.int(8)?,
        depth: uint(r, 9)?,
        outputs: r.opt_bytes(10)?,
        inputs: r.opt_bytes(11)?,
        stream: r.opt_bytes(12)?,
    })
}

/// Decodes a row of `SELECT record, idx, owner, value, depth, class,
/// redeemed FROM mds_outputs`.
fn v1_output_from_row(r: &Row) -> Result<V1Output, MdsError> {
    Ok(V1Output {
        outpoint: OutPoint {
            record: hash_of(r.bytes(0)?)?,
            index: index_col(r, 1)?,
        },
        owner: hash_of(r.bytes(2)?)?,
        value: uint(r, 3)?,
        depth: uint(r, 4)?,
        class: u8::try_from(r.int(5)?).map_err(|_| MdsError::Corrupt("class".into()))?,
        redeemed: r.int(6)? != 0,
    })
}

/// Decodes a row of `SELECT record, idx, consumer, seq FROM mds_spends`.
fn v1_spend_from_row(r: &Row) -> Result<V1Spend, MdsError> {
    Ok(V1Spend {
        outpoint: OutPoint {
            record: hash_of(r.bytes(0)?)?,
            index: index_col(r, 1)?,
        },
        consumer: hash_of(r.bytes(2)?)?,
        seq: r.int(3)?,
    })
}

/// Decodes a row of `SELECT from_state, to_state, note FROM mds_alert_events`.
fn alert_event_from_row(r: &Row) -> Result<AlertEvent, MdsError> {
    let s = |i| {
        AlertState::from_code(r.int(i)?)
            .ok_or_else(|| MdsError::Corrupt("alert event state".into()))
    };
    Ok(AlertEvent {
        from: s(0)?,
        to: s(1)?,
        note: r.text(2)?.to_string(),
    })
}

/// Decodes a row of `SELECT paired_with, amount FROM mds_open_requests`.
fn open_request_from_row(r: &Row) -> Result<OpenRequestState, MdsError> {
    Ok(OpenRequestState {
        paired_with: if r.is_null(0) {
            None
        } else {
            Some(hash_of(r.bytes(0)?)?)
        },
        amount: uint(r, 1)?,
    })
}

/// Decodes a row of `SELECT epoch, payments, value FROM mds_epochs`.
fn epoch_payments_from_row(r: &Row) -> Result<EpochPayments, MdsError> {
    Ok(EpochPayments {
        epoch: epoch_col(r, 0)?,
        count: uint(r, 1)?,
        value: uint(r, 2)?,
    })
}

/// Decodes a row of `SELECT name, value FROM mds_counters`.
fn counter_from_row(r: &Row) -> Result<CounterRow, MdsError> {
    Ok(CounterRow {
        name: r.text(0)?.to_string(),
        value: uint(r, 1)?,
    })
}

/// A count: `SELECT CAST(COUNT(*) AS BIGINT) …` (or MAX, COALESCE'd).
fn count_from_row(r: Option<Row>) -> Result<i64, MdsError> {
    Ok(r.map(|r| r.int(0)).transpose()?.unwrap_or(0))
}

fn record_values(r: RecordRow) -> Result<[Value; 15], MdsError> {
    let b = |h: Option<Hash32>| Value::Bytes(h.map(|h| h.0.to_vec()).unwrap_or_default());
    Ok([
        Value::Int(r.seq),
        hv(&r.id),
        Value::Int(r.kind),
        Value::Int(i64::from(r.epoch)),
        Value::Int(r.status),
        b(r.payer),
        b(r.payee),
        iv(r.value)?,
        iv(r.payment)?,
        iv(r.depth)?,
        Value::Int(i64::from(r.redemption)),
        Value::Bytes(r.nonce.map(|n| n.to_vec()).unwrap_or_default()),
        Value::Bytes(r.outputs),
        Value::Bytes(r.inputs),
        r.stream.map(Value::Bytes).unwrap_or(Value::Null),
    ])
}

// ---- the one implementation ----------------------------------------------------

impl<'a> MdsDb for dyn Tx + 'a {
    fn prepare_ingest(&mut self) -> Result<(), MdsError> {
        if self.backend() == "sqlite" {
            for p in SQLITE_INGEST_PRAGMAS {
                self.execute(p, &[])?;
            }
        }
        Ok(())
    }

    fn load_records(
        &mut self,
        mut f: impl FnMut(LoadedRecord<'_>) -> Result<(), MdsError>,
    ) -> Result<(), MdsError> {
        for r in self.query(
            &format!("SELECT {LOAD_RECORD_COLUMNS} FROM mds_records ORDER BY seq"),
            &[],
        )? {
            f(loaded_record_from_row(&r)?)?;
        }
        Ok(())
    }

    fn load_v1_outputs(
        &mut self,
        mut f: impl FnMut(V1Output) -> Result<(), MdsError>,
    ) -> Result<(), MdsError> {
        for r in self.query(
            "SELECT record, idx, owner, value, depth, class, redeemed FROM mds_outputs",
            &[],
        )? {
            f(v1_output_from_row(&r)?)?;
        }
        Ok(())
    }

    fn load_v1_spends(
        &mut self,
        mut f: impl FnMut(V1Spend) -> Result<(), MdsError>,
    ) -> Result<(), MdsError> {
        for r in self.query(
            "SELECT record, idx, consumer, seq FROM mds_spends ORDER BY seq",
            &[],
        )? {
            f(v1_spend_from_row(&r)?)?;
        }
        Ok(())
    }

    /// Multi-row INSERTs: as many of `INSERT_ROWS_MAX` rows as fit, then
    /// the rest in halving sizes (32, 16, …, 1), so each size's statement
    /// is prepared once per connection and then reused from the cache.
    fn insert_records(&mut self, rows: Vec<RecordRow>) -> Result<(), MdsError> {
        // Every row converts before any is written.
        let rows = rows
            .into_iter()
            .map(record_values)
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = rows.into_iter();
        let mut sql = String::new();
        let mut params = Vec::new();
        loop {
            let left = rows.len();
            if left == 0 {
                return Ok(());
            }
            let chunk = if left >= INSERT_ROWS_MAX {
                INSERT_ROWS_MAX
            } else {
                1 << left.ilog2()
            };
            sql.clear();
            params.clear();
            sql.push_str("INSERT INTO ");
            sql.push_str(RECORD_COLUMNS);
            sql.push_str(" VALUES ");
            for (i, row) in rows.by_ref().take(chunk).enumerate() {
                sql.push_str(if i == 0 { "(" } else { ", (" });
                for (j, v) in row.into_iter().enumerate() {
                    params.push(v);
                    if j > 0 {
                        sql.push_str(", ");
                    }
                    sql.push('$');
                    sql.push_str(&params.len().to_string());
                }
                sql.push(')');
            }
            self.execute(&sql, &params)?;
        }
    }

    fn unpaired_transfer(
        &mut self,
        payee: &Hash32,
        nonce: &[u8; 16],
        payment: u64,
    ) -> Result<Option<Hash32>, MdsError> {
        self.query_one(
            "SELECT id FROM mds_records WHERE payee = $1 AND nonce = $2 AND status = 0 AND payment = $3 AND redemption = 0",
            &[hv(payee), Value::Bytes(nonce.to_vec()), iv(payment)?],
        )?
        .map(|r| hash_of(r.bytes(0)?))
        .transpose()
    }

    fn last_alert_id(&mut self) -> Result<i64, MdsError> {
        count_from_row(self.query_one(
            "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM mds_alerts",
            &[],
        )?)
    }

    fn insert_alert(&mut self, a: &Alert) -> Result<(), MdsError> {
        let mut records = Vec::with_capacity(a.records.len() * 32);
        for r in &a.records {
            records.extend_from_slice(&r.0);
        }
        insert_row(
            self,
            "mds_alerts",
            &[
                ("id", Some(Value::Int(a.id))),
                ("kind", Some(Value::Int(a.kind.code()))),
                ("severity", Some(Value::Int(a.severity as i64))),
                ("state", Some(Value::Int(a.state.code()))),
                ("epoch", Some(Value::Int(i64::from(a.epoch)))),
                ("subject", Some(hv(&a.subject))),
                ("offender", a.offender.as_ref().map(hv)),
                ("records", Some(Value::Bytes(records))),
                ("amount", Some(iv(a.amount)?)),
                ("op_record", a.outpoint.map(|(h, _)| hv(&h))),
                ("op_idx", a.outpoint.map(|(_, i)| Value::Int(i64::from(i)))),
            ],
        )
    }

    fn alert(&mut self, id: i64) -> Result<Option<Alert>, MdsError> {
        self.query_one(
            &format!("SELECT {ALERT_COLUMNS} FROM mds_alerts WHERE id = $1"),
            &[Value::Int(id)],
        )?
        .map(|r| alert_from_row(&r))
        .transpose()
    }

    fn alerts(&mut self) -> Result<Vec<Alert>, MdsError> {
        self.query(
            &format!("SELECT {ALERT_COLUMNS} FROM mds_alerts ORDER BY id"),
            &[],
        )?
        .iter()
        .map(alert_from_row)
        .collect()
    }

    fn open_alert_count(&mut self) -> Result<u64, MdsError> {
        let r = self
            .query_one(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM mds_alerts WHERE state <> 3",
                &[],
            )?
            .ok_or_else(|| StoreError::Type("no count row".into()))?;
        uint(&r, 0)
    }

    fn move_alert(&mut self, id: i64, from: AlertState, to: AlertState) -> Result<bool, MdsError> {
        let n = self.execute(
            "UPDATE mds_alerts SET state = $2 WHERE id = $1 AND state = $3",
            &[
                Value::Int(id),
                Value::Int(to.code()),
                Value::Int(from.code()),
            ],
        )?;
        Ok(n == 1)
    }

    fn alert_event_count(&mut self, alert: i64) -> Result<i64, MdsError> {
        count_from_row(self.query_one(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM mds_alert_events WHERE alert = $1",
            &[Value::Int(alert)],
        )?)
    }

    fn insert_alert_event(
        &mut self,
        alert: i64,
        seq: i64,
        event: &AlertEvent,
    ) -> Result<(), MdsError> {
        self.execute(
            "INSERT INTO mds_alert_events (alert, seq, from_state, to_state, note) VALUES ($1, $2, $3, $4, $5)",
            &[
                Value::Int(alert),
                Value::Int(seq),
                Value::Int(event.from.code()),
                Value::Int(event.to.code()),
                event.note.as_str().into(),
            ],
        )?;
        Ok(())
    }

    fn alert_events(&mut self, alert: i64) -> Result<Vec<AlertEvent>, MdsError> {
        self.query(
            "SELECT from_state, to_state, note FROM mds_alert_events WHERE alert = $1 ORDER BY seq",
            &[Value::Int(alert)],
        )?
        .iter()
        .map(alert_event_from_row)
        .collect()
    }

    fn set_aside_alert(&mut self, id: &Hash32) -> Result<Option<Alert>, MdsError> {
        self.query_one(
            &format!(
                "SELECT {ALERT_COLUMNS} FROM mds_alerts WHERE id = (SELECT alert FROM mds_set_aside WHERE id = $1)"
            ),
            &[hv(id)],
        )?
        .map(|r| alert_from_row(&r))
        .transpose()
    }

    fn insert_set_aside(&mut self, s: &SetAside<'_>) -> Result<(), MdsError> {
        self.execute(
            "INSERT INTO mds_set_aside (id, alert, code, epoch, body) VALUES ($1, $2, $3, $4, $5)",
            &[
                hv(&s.id),
                Value::Int(s.alert),
                Value::Int(i64::from(s.code)),
                Value::Int(i64::from(s.epoch)),
                Value::Bytes(s.body.to_vec()),
            ],
        )?;
        Ok(())
    }

    fn set_aside_count(&mut self) -> Result<u64, MdsError> {
        let n = count_from_row(
            self.query_one("SELECT CAST(COUNT(*) AS BIGINT) FROM mds_set_aside", &[])?,
        )?;
        u64::try_from(n).map_err(|_| MdsError::Corrupt("negative count".into()))
    }

    fn set_aside_body(&mut self, id: &Hash32) -> Result<Option<Vec<u8>>, MdsError> {
        Ok(self
            .query_one("SELECT body FROM mds_set_aside WHERE id = $1", &[hv(id)])?
            .map(|r| r.bytes(0).map(<[u8]>::to_vec))
            .transpose()?)
    }

    fn open_request(
        &mut self,
        payee: &Hash32,
        nonce: &[u8; 16],
    ) -> Result<Option<OpenRequestState>, MdsError> {
        self.query_one(
            "SELECT paired_with, amount FROM mds_open_requests WHERE payee = $1 AND nonce = $2",
            &[hv(payee), Value::Bytes(nonce.to_vec())],
        )?
        .map(|r| open_request_from_row(&r))
        .transpose()
    }

    fn insert_open_request(&mut self, r: &OpenRequest) -> Result<(), MdsError> {
        insert_row(
            self,
            "mds_open_requests",
            &[
                ("payee", Some(hv(&r.payee))),
                ("nonce", Some(Value::Bytes(r.nonce.to_vec()))),
                ("amount", Some(iv(r.amount)?)),
                ("epoch", Some(Value::Int(i64::from(r.epoch)))),
                ("paired_with", r.paired_with.as_ref().map(hv)),
            ],
        )
    }

    fn pair_open_request(
        &mut self,
        payee: &Hash32,
        nonce: &[u8; 16],
        transfer: &Hash32,
        amount: u64,
    ) -> Result<bool, MdsError> {
        let n = self.execute(
            "UPDATE mds_open_requests SET paired_with = $3 WHERE payee = $1 AND nonce = $2 AND paired_with IS NULL AND amount = $4",
            &[hv(payee), Value::Bytes(nonce.to_vec()), hv(transfer), iv(amount)?],
        )?;
        Ok(n == 1)
    }

    fn add_epoch_payments(&mut self, epoch: Epoch, count: u64, value: u64) -> Result<(), MdsError> {
        let vals = [Value::Int(i64::from(epoch)), iv(count)?, iv(value)?];
        let n = self.execute(
            "UPDATE mds_epochs SET payments = payments + $2, value = value + $3 WHERE epoch = $1",
            &vals,
        )?;
        if n == 0 {
            self.execute(
                "INSERT INTO mds_epochs (epoch, payments, value) VALUES ($1, $2, $3)",
                &vals,
            )?;
        }
        Ok(())
    }

    fn epoch_payments(&mut self) -> Result<Vec<EpochPayments>, MdsError> {
        self.query(
            "SELECT epoch, payments, value FROM mds_epochs ORDER BY epoch",
            &[],
        )?
        .iter()
        .map(epoch_payments_from_row)
        .collect()
    }

    fn add_counter(&mut self, name: &str, delta: i64) -> Result<(), MdsError> {
        let d = Value::Int(delta);
        let n = self.execute(
            "UPDATE mds_counters SET value = value + $2 WHERE name = $1",
            &[name.into(), d.clone()],
        )?;
        if n == 0 {
            self.execute(
                "INSERT INTO mds_counters (name, value) VALUES ($1, $2)",
                &[name.into(), d],
            )?;
        }
        Ok(())
    }

    fn raise_offline_epochs_max(&mut self, value: u64) -> Result<(), MdsError> {
        self.execute(
            "UPDATE mds_counters SET value = $1 WHERE name = 'offline_epochs_max' AND value < $1",
            &[iv(value)?],
        )?;
        Ok(())
    }

    fn counters(&mut self) -> Result<Vec<CounterRow>, MdsError> {
        self.query("SELECT name, value FROM mds_counters", &[])?
            .iter()
            .map(counter_from_row)
            .collect()
    }
}
