//! The store of the ledger, settlement and the settlement queue: every SQL
//! statement of this crate, behind three domain traits —
//! [`LedgerDb`] (accounts, journal, running totals), [`SettlementDb`]
//! (issued roots, the spent registry, double-spend evidence, its
//! PostgreSQL partitions) and [`SettlementQueueDb`] (the queue workers
//! share). Each is implemented once, for `dyn Tx`, in tally-store's
//! portable dialect, so the same statements run on SQLite and PostgreSQL;
//! business code keeps its transaction and calls `tx.some_operation(…)`.
//!
//! Columns are read by position only here, each right next to the SELECT
//! whose column list it decodes (one decoder per row struct). The suite
//! `tests/db_conformance.rs` holds every method to its contract on both
//! backends and fails if SQL appears anywhere else in `src/`.

use std::collections::{BTreeMap, BTreeSet};

use tally_core::{Hash32, OutPoint};
use tally_store::{Counter, Migrations, Row, StoreError, Tx, Value};

use crate::ledger::AccountKind;
use crate::queue::Claimed;

// ---- schema -----------------------------------------------------------------

pub static LEDGER_MIGRATIONS: Migrations = Migrations {
    component: "ledger",
    steps: &[(
        1,
        "CREATE TABLE ledger_accounts (
            id TEXT PRIMARY KEY,
            kind BIGINT NOT NULL,
            balance BIGINT NOT NULL,
            CHECK (kind = 0 OR kind = 4 OR balance >= 0)
        );
        CREATE TABLE ledger_journal (
            seq BIGINT PRIMARY KEY,
            idem TEXT NOT NULL UNIQUE,
            digest BLOB NOT NULL,
            debit TEXT NOT NULL,
            credit TEXT NOT NULL,
            amount BIGINT NOT NULL CHECK (amount > 0),
            code BIGINT NOT NULL
        );
        CREATE TABLE ledger_meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL);
        INSERT INTO ledger_meta (k, v) VALUES ('next_seq', 1);
        INSERT INTO ledger_meta (k, v) VALUES ('minted', 0);
        INSERT INTO ledger_meta (k, v) VALUES ('redeemed', 0);
        INSERT INTO ledger_accounts (id, kind, balance) VALUES ('cb:issuance', 0, 0);
        INSERT INTO ledger_accounts (id, kind, balance) VALUES ('cb:offline-float', 3, 0);
        INSERT INTO ledger_accounts (id, kind, balance) VALUES ('cb:loss', 4, 0)",
    ), (
        2,
        // Running totals per invariant term (issuance 0, DCP and user
        // accounts together 1, float 3, loss 4), kept in the transaction
        // of every transfer between terms, so the production assertion
        // reads a constant number of rows. DCP → user transfers stay
        // inside one term and touch no total: the totals are written only
        // with the issuance, float or loss account, no new hot row.
        "CREATE TABLE ledger_totals (kind BIGINT PRIMARY KEY, total BIGINT NOT NULL);
        INSERT INTO ledger_totals (kind, total) SELECT 0, CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM ledger_accounts WHERE kind = 0;
        INSERT INTO ledger_totals (kind, total) SELECT 1, CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM ledger_accounts WHERE kind IN (1, 2);
        INSERT INTO ledger_totals (kind, total) SELECT 3, CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM ledger_accounts WHERE kind = 3;
        INSERT INTO ledger_totals (kind, total) SELECT 4, CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM ledger_accounts WHERE kind = 4",
    )],
};

/// Where journal sequence numbers come from: `ledger_meta.next_seq`, but
/// through [`Tx::next_id`], so that on PostgreSQL the row is written once
/// per block of ids in a transaction of its own, not by every transfer
/// (it was the one row every ledger transaction wrote). Sequence numbers
/// are unique and increase within a process; across processes they are
/// not in commit order, and rolled-back transfers leave gaps.
pub const JOURNAL_SEQ: Counter = Counter {
    table: "ledger_meta",
    key_column: "k",
    value_column: "v",
    name: "next_seq",
};

pub static SETTLEMENT_MIGRATIONS: Migrations = Migrations {
    component: "settlement",
    steps: &[(
        1,
        "CREATE TABLE spent (
            record BLOB NOT NULL,
            idx BIGINT NOT NULL,
            consumed_by BLOB NOT NULL,
            PRIMARY KEY (record, idx)
        );
        CREATE TABLE settled_records (id BLOB PRIMARY KEY, body BLOB NOT NULL);
        CREATE TABLE issued (id BLOB PRIMARY KEY, value BIGINT NOT NULL, dcp BIGINT NOT NULL, body BLOB NOT NULL);
        CREATE TABLE double_spends (
            seq BIGINT PRIMARY KEY,
            record BLOB NOT NULL,
            idx BIGINT NOT NULL,
            first_record BLOB NOT NULL,
            second_record BLOB NOT NULL,
            offender_key BLOB NOT NULL,
            value BIGINT NOT NULL,
            UNIQUE (record, idx, second_record)
        )",
    ), (
        2,
        // The spent registry keyed by token id (record id, output index)
        // and carrying the token's expiry epoch, so that it can be pruned
        // (docs/decisions/0013-settlement-scale-out.md). PostgreSQL:
        // range-partitioned by expiry epoch (partitions made ahead by
        // `Settlement::maintain`, dropped once past the horizon; a default
        // partition catches anything else); its primary key must contain
        // the partition key, and the expiry is a function of the token, so
        // (record, idx, expiry) is as unique as (record, idx). Rows from
        // before expiries were recorded get NEVER_EXPIRES.
        "postgres: ALTER INDEX spent_pkey RENAME TO spent_v1_pkey;
        ALTER TABLE spent RENAME TO spent_v1;
        sqlite: CREATE TABLE spent (
            record BLOB NOT NULL,
            idx BIGINT NOT NULL,
            expiry_epoch BIGINT NOT NULL,
            consumed_by BLOB NOT NULL,
            PRIMARY KEY (record, idx)
        );
        sqlite: CREATE INDEX spent_by_expiry ON spent (expiry_epoch);
        postgres: CREATE TABLE spent (
            record BLOB NOT NULL,
            idx BIGINT NOT NULL,
            expiry_epoch BIGINT NOT NULL,
            consumed_by BLOB NOT NULL,
            PRIMARY KEY (record, idx, expiry_epoch)
        ) PARTITION BY RANGE (expiry_epoch);
        postgres: CREATE TABLE spent_never PARTITION OF spent FOR VALUES FROM (4611686018427387904) TO (MAXVALUE);
        postgres: CREATE TABLE spent_default PARTITION OF spent DEFAULT;
        INSERT INTO spent (record, idx, expiry_epoch, consumed_by) SELECT record, idx, 4611686018427387904, consumed_by FROM spent_v1;
        DROP TABLE spent_v1;
        ALTER TABLE settled_records ADD COLUMN expiry_epoch BIGINT NOT NULL DEFAULT 4611686018427387904;
        CREATE INDEX settled_records_by_expiry ON settled_records (expiry_epoch);
        CREATE TABLE settlement_meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL);
        INSERT INTO settlement_meta (k, v) VALUES ('spent_horizon', 0)",
    ), (
        3,
        // The queue that settlement worker processes share (crate::queue).
        "CREATE TABLE settlement_queue (
            id BIGINT PRIMARY KEY,
            body BLOB NOT NULL,
            claimed_by TEXT,
            claimed_until BIGINT NOT NULL,
            done BIGINT NOT NULL
        );
        CREATE INDEX settlement_queue_pending ON settlement_queue (done, id);
        CREATE TABLE settlement_results (
            id BIGINT PRIMARY KEY,
            code BIGINT NOT NULL,
            registered BIGINT NOT NULL,
            already BIGINT NOT NULL,
            double_spends BIGINT NOT NULL,
            settled_by TEXT NOT NULL
        );
        INSERT INTO settlement_meta (k, v) VALUES ('next_queue_id', 1)",
    )],
};

/// Where queue ids come from (block-reserved on PostgreSQL, no hot row).
pub const QUEUE_ID: Counter = Counter {
    table: "settlement_meta",
    key_column: "k",
    value_column: "v",
    name: "next_queue_id",
};

/// Most rows in one multi-row INSERT, most values in one `IN (…)`.
const SQL_ROWS_MAX: usize = 256;
const SQL_IN_MAX: usize = 512;

/// The hash-partitioned layout of the spent registry for a distributed
/// SQL engine, on plain PostgreSQL: partitioned by the token's record id
/// (a SHA-256, so uniformly spread), primary key the token id alone;
/// pruning deletes by the expiry index. `{n}` partitions. See
/// docs/decisions/0013-settlement-scale-out.md.
pub fn spent_hash_layout_ddl(partitions: u32) -> Vec<String> {
    let mut v = vec![
        "DROP TABLE spent".to_string(),
        "CREATE TABLE spent (
            record BYTEA NOT NULL,
            idx BIGINT NOT NULL,
            expiry_epoch BIGINT NOT NULL,
            consumed_by BYTEA NOT NULL,
            PRIMARY KEY (record, idx)
        ) PARTITION BY HASH (record)"
            .to_string(),
    ];
    for r in 0..partitions {
        v.push(format!(
            "CREATE TABLE spent_h{r} PARTITION OF spent FOR VALUES WITH (MODULUS {partitions}, REMAINDER {r})"
        ));
    }
    v.push("CREATE INDEX spent_by_expiry ON spent (expiry_epoch)".to_string());
    v
}

// ---- the ledger ---------------------------------------------------------------

/// An account as a transfer reads it (`ledger_accounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: String,
    pub kind: AccountKind,
    pub balance: i64,
}

/// The journal entry an idempotency key names: where it is and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRef {
    pub seq: i64,
    /// [`crate::ledger::TransferRequest`]'s content digest.
    pub digest: Vec<u8>,
}

/// A journal entry to append (`ledger_journal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalEntry<'a> {
    pub seq: i64,
    pub idem: &'a str,
    pub digest: &'a [u8],
    pub debit: &'a str,
    pub credit: &'a str,
    pub amount: i64,
    pub code: i64,
}

/// The two counters of money created and destroyed (`ledger_meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuanceCounter {
    Minted,
    Redeemed,
}

impl IssuanceCounter {
    pub fn key(self) -> &'static str {
        match self {
            IssuanceCounter::Minted => "minted",
            IssuanceCounter::Redeemed => "redeemed",
        }
    }
}

/// The balances summed per invariant term, in one pass over the accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceSums {
    /// DCP settlement and user accounts (kinds 1 and 2).
    pub accounts: i64,
    pub offline_float: i64,
    pub loss: i64,
    pub issuance: i64,
    /// Accounts of kinds 1, 2 and 3 with a negative balance.
    pub negative_accounts: i64,
}

/// One row of the running totals as stored: an invariant term's total
/// (`ledger_totals`), or one of the issuance counters (`ledger_meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningTotalRow {
    Term { term: i64, total: i64 },
    Minted(i64),
    Redeemed(i64),
}

/// The ledger's tables: accounts, the append-only journal, the running
/// totals of the invariant and the issuance counters.
pub trait LedgerDb {
    /// The kind of account `id`; `None` if there is none.
    fn account_kind(&mut self, id: &str) -> Result<Option<AccountKind>, StoreError>;
    /// Opens account `id` with balance 0 (a duplicate id is
    /// [`StoreError::Constraint`]).
    fn insert_account(&mut self, id: &str, kind: AccountKind) -> Result<(), StoreError>;
    /// The balance of account `id`; `None` if there is none.
    fn account_balance(&mut self, id: &str) -> Result<Option<i64>, StoreError>;
    /// The accounts among `a` and `b` that exist, in one statement (in no
    /// particular order).
    fn account_pair(&mut self, a: &str, b: &str) -> Result<Vec<AccountRow>, StoreError>;
    /// Adds `by` to the balance of `id` and returns the balance written;
    /// `None` if there is no such account.
    fn add_to_balance(&mut self, id: &str, by: i64) -> Result<Option<i64>, StoreError>;
    /// The journal entry under idempotency key `idem`.
    fn journal_by_idem(&mut self, idem: &str) -> Result<Option<JournalRef>, StoreError>;
    /// A fresh journal sequence number ([`JOURNAL_SEQ`]).
    fn next_journal_seq(&mut self) -> Result<i64, StoreError>;
    /// Appends an entry (a used sequence number or idempotency key, or a
    /// non-positive amount, is [`StoreError::Constraint`]).
    fn insert_journal(&mut self, e: &JournalEntry<'_>) -> Result<(), StoreError>;
    /// Entries in the journal.
    fn journal_entries(&mut self) -> Result<i64, StoreError>;
    /// Adds `by` to the running total of invariant term `term`; returns
    /// the rows changed (1, or 0 for an unknown term).
    fn add_to_total(&mut self, term: i64, by: i64) -> Result<u64, StoreError>;
    /// Adds `by` to an issuance counter.
    fn bump_issuance(&mut self, c: IssuanceCounter, by: i64) -> Result<(), StoreError>;
    /// An issuance counter; `None` if its row is missing.
    fn issuance(&mut self, c: IssuanceCounter) -> Result<Option<i64>, StoreError>;
    /// Balances summed per invariant term over every account.
    fn balance_sums(&mut self) -> Result<BalanceSums, StoreError>;
    /// Every running total and both issuance counters, in one statement
    /// over a constant number of rows.
    fn running_total_rows(&mut self) -> Result<Vec<RunningTotalRow>, StoreError>;
}

fn account_kind_of(code: i64) -> Result<AccountKind, StoreError> {
    AccountKind::from_code(code).ok_or_else(|| StoreError::Type("account kind".into()))
}

/// Decodes `SELECT id, kind, balance FROM ledger_accounts`.
fn account_row(r: &Row) -> Result<AccountRow, StoreError> {
    Ok(AccountRow {
        kind: account_kind_of(r.int(1)?)?,
        id: r.text(0)?.to_string(),
        balance: r.int(2)?,
    })
}

/// Decodes `SELECT seq, digest FROM ledger_journal`.
fn journal_ref(r: &Row) -> Result<JournalRef, StoreError> {
    Ok(JournalRef {
        seq: r.int(0)?,
        digest: r.bytes(1)?.to_vec(),
    })
}

/// Decodes the five sums of [`LedgerDb::balance_sums`].
fn balance_sums(r: &Row) -> Result<BalanceSums, StoreError> {
    Ok(BalanceSums {
        accounts: r.int(0)?,
        offline_float: r.int(1)?,
        loss: r.int(2)?,
        issuance: r.int(3)?,
        negative_accounts: r.int(4)?,
    })
}

/// Decodes `SELECT table, key, value` of [`LedgerDb::running_total_rows`]:
/// table 0 is `ledger_totals` (key: the term), 1 `ledger_meta` (key 0
/// minted, 1 redeemed).
fn running_total_row(r: &Row) -> Result<RunningTotalRow, StoreError> {
    let (table, k, v) = (r.int(0)?, r.int(1)?, r.int(2)?);
    match (table, k) {
        (0, term) => Ok(RunningTotalRow::Term { term, total: v }),
        (1, 0) => Ok(RunningTotalRow::Minted(v)),
        (1, 1) => Ok(RunningTotalRow::Redeemed(v)),
        _ => Err(StoreError::Type(format!("running total {table}/{k}"))),
    }
}

fn one_int(row: Option<Row>, what: &str) -> Result<i64, StoreError> {
    row.ok_or_else(|| StoreError::Type(format!("no {what}")))?
        .int(0)
}

impl<'a> LedgerDb for dyn Tx + 'a {
    fn account_kind(&mut self, id: &str) -> Result<Option<AccountKind>, StoreError> {
        self.query_one(
            "SELECT kind FROM ledger_accounts WHERE id = $1",
            &[id.into()],
        )?
        .map(|r| account_kind_of(r.int(0)?))
        .transpose()
    }

    fn insert_account(&mut self, id: &str, kind: AccountKind) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO ledger_accounts (id, kind, balance) VALUES ($1, $2, 0)",
            &[id.into(), Value::Int(kind as i64)],
        )?;
        Ok(())
    }

    fn account_balance(&mut self, id: &str) -> Result<Option<i64>, StoreError> {
        self.query_one(
            "SELECT balance FROM ledger_accounts WHERE id = $1",
            &[id.into()],
        )?
        .map(|r| r.int(0))
        .transpose()
    }

    fn account_pair(&mut self, a: &str, b: &str) -> Result<Vec<AccountRow>, StoreError> {
        self.query(
            "SELECT id, kind, balance FROM ledger_accounts WHERE id IN ($1, $2)",
            &[a.into(), b.into()],
        )?
        .iter()
        .map(account_row)
        .collect()
    }

    fn add_to_balance(&mut self, id: &str, by: i64) -> Result<Option<i64>, StoreError> {
        self.query_one(
            "UPDATE ledger_accounts SET balance = balance + $1 WHERE id = $2 RETURNING balance",
            &[Value::Int(by), id.into()],
        )?
        .map(|r| r.int(0))
        .transpose()
    }

    fn journal_by_idem(&mut self, idem: &str) -> Result<Option<JournalRef>, StoreError> {
        self.query_one(
            "SELECT seq, digest FROM ledger_journal WHERE idem = $1",
            &[idem.into()],
        )?
        .map(|r| journal_ref(&r))
        .transpose()
    }

    fn next_journal_seq(&mut self) -> Result<i64, StoreError> {
        self.next_id(&JOURNAL_SEQ)
    }

    fn insert_journal(&mut self, e: &JournalEntry<'_>) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO ledger_journal (seq, idem, digest, debit, credit, amount, code) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                Value::Int(e.seq),
                e.idem.into(),
                e.digest.into(),
                e.debit.into(),
                e.credit.into(),
                Value::Int(e.amount),
                Value::Int(e.code),
            ],
        )?;
        Ok(())
    }

    fn journal_entries(&mut self) -> Result<i64, StoreError> {
        let row = self.query_one("SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_journal", &[])?;
        one_int(row, "count")
    }

    fn add_to_total(&mut self, term: i64, by: i64) -> Result<u64, StoreError> {
        self.execute(
            "UPDATE ledger_totals SET total = total + $1 WHERE kind = $2",
            &[Value::Int(by), Value::Int(term)],
        )
    }

    fn bump_issuance(&mut self, c: IssuanceCounter, by: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE ledger_meta SET v = v + $1 WHERE k = $2",
            &[Value::Int(by), c.key().into()],
        )?;
        Ok(())
    }

    fn issuance(&mut self, c: IssuanceCounter) -> Result<Option<i64>, StoreError> {
        self.query_one("SELECT v FROM ledger_meta WHERE k = $1", &[c.key().into()])?
            .map(|r| r.int(0))
            .transpose()
    }

    fn balance_sums(&mut self) -> Result<BalanceSums, StoreError> {
        let row = self
            .query_one(
                "SELECT
                    CAST(COALESCE(SUM(CASE WHEN kind IN (1, 2) THEN balance ELSE 0 END), 0) AS BIGINT),
                    CAST(COALESCE(SUM(CASE WHEN kind = 3 THEN balance ELSE 0 END), 0) AS BIGINT),
                    CAST(COALESCE(SUM(CASE WHEN kind = 4 THEN balance ELSE 0 END), 0) AS BIGINT),
                    CAST(COALESCE(SUM(CASE WHEN kind = 0 THEN balance ELSE 0 END), 0) AS BIGINT),
                    CAST(COALESCE(SUM(CASE WHEN kind IN (1, 2, 3) AND balance < 0 THEN 1 ELSE 0 END), 0) AS BIGINT)
                 FROM ledger_accounts",
                &[],
            )?
            .ok_or_else(|| StoreError::Type("no sums".into()))?;
        balance_sums(&row)
    }

    fn running_total_rows(&mut self) -> Result<Vec<RunningTotalRow>, StoreError> {
        self.query(
            "SELECT 0, kind, total FROM ledger_totals UNION ALL SELECT 1, CASE WHEN k = 'minted' THEN 0 ELSE 1 END, v FROM ledger_meta WHERE k IN ('minted', 'redeemed')",
            &[],
        )?
        .iter()
        .map(running_total_row)
        .collect()
    }
}

// ---- settlement and the spent registry ---------------------------------------

/// A registered `Issue` (`issued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedRow {
    pub value: i64,
    /// The DCP that registered it.
    pub dcp: i64,
}

/// What the registry holds about one settlement batch
/// ([`SettlementDb::registry_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryView {
    /// `settlement_meta.spent_horizon`.
    pub horizon: i64,
    /// Ids of the batch's `Issue` roots that are registered.
    pub issues: BTreeSet<Vec<u8>>,
    /// Ids of the batch's transfers that are settled.
    pub settled: BTreeSet<Vec<u8>>,
    /// Registered consumptions of the tokens of the batch's input
    /// records: (record, index) → consuming record.
    pub consumed: BTreeMap<(Vec<u8>, i64), Vec<u8>>,
}

/// A settled record to store (`settled_records`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSettledRecord {
    pub id: Vec<u8>,
    pub body: Vec<u8>,
    pub expiry_epoch: i64,
}

/// A consumption to register (`spent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSpent {
    pub record: Vec<u8>,
    pub idx: i64,
    pub expiry_epoch: i64,
    pub consumed_by: Vec<u8>,
}

/// Evidence of one double spend (`double_spends`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoubleSpendRow {
    pub seq: i64,
    pub record: Hash32,
    pub idx: i64,
    pub first_record: Vec<u8>,
    pub second_record: Hash32,
    pub offender_key: Vec<u8>,
    pub value: i64,
}

/// The spent registry with what it is checked against: the `Issue`
/// roots DCPs registered, settled records, consumed tokens, double-spend
/// evidence, the pruning horizon, and the registry's PostgreSQL partitions.
pub trait SettlementDb {
    /// The registered `Issue` `id`.
    fn issued(&mut self, id: &Hash32) -> Result<Option<IssuedRow>, StoreError>;
    /// Registers an `Issue` (a registered id is [`StoreError::Constraint`]).
    fn insert_issued(
        &mut self,
        id: &Hash32,
        value: i64,
        dcp: u32,
        body: &[u8],
    ) -> Result<(), StoreError>;
    /// Everything the registry holds about a batch, in one round trip for
    /// a batch of ordinary size (`UNION ALL` of the four look-ups; larger
    /// batches take one query per look-up, chunked). `epochs` are the
    /// expiry epochs of the input records (PostgreSQL's partition pruning).
    fn registry_view(
        &mut self,
        issue_ids: &[Hash32],
        tids: &[Hash32],
        records: &[Hash32],
        epochs: &[i64],
    ) -> Result<RegistryView, StoreError>;
    /// Stores settled records and registers consumptions with multi-row
    /// INSERTs (chunks of powers of two). A key written concurrently since
    /// it was read as absent is [`StoreError::Conflict`].
    fn insert_settled(
        &mut self,
        records: &[NewSettledRecord],
        spent: &[NewSpent],
    ) -> Result<(), StoreError>;
    /// The body of settled record `id`.
    fn settled_record_body(&mut self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The stored bodies of the registered Issues `issues` and of the
    /// settled records `transfers`, by id (what the MDS outbox names by
    /// id); an id not stored is absent. One query per kind for up to
    /// `SQL_IN_MAX` ids.
    #[allow(clippy::type_complexity)]
    fn record_bodies(
        &mut self,
        issues: &[Hash32],
        transfers: &[Hash32],
    ) -> Result<(BTreeMap<Hash32, Vec<u8>>, BTreeMap<Hash32, Vec<u8>>), StoreError>;
    /// The expiry epoch stored with settled record `id`.
    fn settled_record_expiry(&mut self, id: &Hash32) -> Result<Option<i64>, StoreError>;
    /// The record that consumed `op`, if any.
    fn spent_consumer(&mut self, op: &OutPoint) -> Result<Option<Hash32>, StoreError>;
    /// Registers one consumption.
    fn insert_spent(&mut self, s: &NewSpent) -> Result<(), StoreError>;
    /// Whether this double spend (output, second consumer) is on record.
    fn double_spend_known(
        &mut self,
        record: &Hash32,
        idx: i64,
        second: &Hash32,
    ) -> Result<bool, StoreError>;
    /// The highest evidence number used (0 when none).
    fn last_double_spend_seq(&mut self) -> Result<i64, StoreError>;
    fn insert_double_spend(&mut self, d: &DoubleSpendRow) -> Result<(), StoreError>;
    /// Every double spend on record, in the order found (`seq`).
    fn double_spends(&mut self) -> Result<Vec<DoubleSpendRow>, StoreError>;
    fn double_spend_count(&mut self) -> Result<i64, StoreError>;
    /// The registry's horizon (its row must exist).
    fn spent_horizon(&mut self) -> Result<i64, StoreError>;
    fn set_spent_horizon(&mut self, horizon: i64) -> Result<(), StoreError>;
    /// Deletes registrations of tokens that expired before `horizon`;
    /// returns how many.
    fn delete_spent_before(&mut self, horizon: i64) -> Result<u64, StoreError>;
    /// Deletes settled records whose outputs expired before `horizon`.
    fn delete_settled_records_before(&mut self, horizon: i64) -> Result<u64, StoreError>;
    /// PostgreSQL: whether `spent` is range-partitioned in this schema.
    fn spent_range_partitioned(&mut self) -> Result<bool, StoreError>;
    /// PostgreSQL: the partitions of `spent` in this schema.
    fn spent_partitions(&mut self) -> Result<Vec<String>, StoreError>;
    /// PostgreSQL: whether relation `name` exists in this schema.
    fn relation_exists(&mut self, name: &str) -> Result<bool, StoreError>;
    /// PostgreSQL: partition `name` of `spent` for expiry epochs `lo..hi`.
    fn create_spent_partition(&mut self, name: &str, lo: i64, hi: i64) -> Result<(), StoreError>;
    /// PostgreSQL: drops partition `name` of `spent`.
    fn drop_spent_partition(&mut self, name: &str) -> Result<(), StoreError>;
}

fn hash32(bytes: &[u8]) -> Result<Hash32, StoreError> {
    Ok(Hash32(
        bytes
            .try_into()
            .map_err(|_| StoreError::Type("hash length".into()))?,
    ))
}

fn hash_value(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

/// Decodes `SELECT seq, record, idx, first_record, second_record,
/// offender_key, value FROM double_spends`.
fn double_spend_row(r: &Row) -> Result<DoubleSpendRow, StoreError> {
    Ok(DoubleSpendRow {
        seq: r.int(0)?,
        record: hash32(r.bytes(1)?)?,
        idx: r.int(2)?,
        first_record: r.bytes(3)?.to_vec(),
        second_record: hash32(r.bytes(4)?)?,
        offender_key: r.bytes(5)?.to_vec(),
        value: r.int(6)?,
    })
}

impl<'a> SettlementDb for dyn Tx + 'a {
    fn issued(&mut self, id: &Hash32) -> Result<Option<IssuedRow>, StoreError> {
        self.query_one(
            "SELECT value, dcp FROM issued WHERE id = $1",
            &[hash_value(id)],
        )?
        .map(|r| {
            Ok(IssuedRow {
                value: r.int(0)?,
                dcp: r.int(1)?,
            })
        })
        .transpose()
    }

    fn insert_issued(
        &mut self,
        id: &Hash32,
        value: i64,
        dcp: u32,
        body: &[u8],
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO issued (id, value, dcp, body) VALUES ($1, $2, $3, $4)",
            &[
                hash_value(id),
                Value::Int(value),
                Value::Int(i64::from(dcp)),
                body.into(),
            ],
        )?;
        Ok(())
    }

    fn registry_view(
        &mut self,
        issue_ids: &[Hash32],
        tids: &[Hash32],
        records: &[Hash32],
        epochs: &[i64],
    ) -> Result<RegistryView, StoreError> {
        let values = |v: &[Hash32]| -> Vec<Value> { v.iter().map(hash_value).collect() };
        let epochs: Vec<Value> = epochs.iter().map(|e| Value::Int(*e)).collect();
        lookup(
            self,
            &values(issue_ids),
            &values(tids),
            &values(records),
            &epochs,
        )
    }

    fn insert_settled(
        &mut self,
        records: &[NewSettledRecord],
        spent: &[NewSpent],
    ) -> Result<(), StoreError> {
        let records: Vec<[Value; 3]> = records
            .iter()
            .map(|r| {
                [
                    r.id.clone().into(),
                    r.body.clone().into(),
                    Value::Int(r.expiry_epoch),
                ]
            })
            .collect();
        let spent: Vec<[Value; 4]> = spent.iter().map(spent_values).collect();
        insert_rows(
            self,
            "INSERT INTO settled_records (id, body, expiry_epoch)",
            &records,
        )?;
        insert_rows(
            self,
            "INSERT INTO spent (record, idx, expiry_epoch, consumed_by)",
            &spent,
        )
    }

    fn settled_record_body(&mut self, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.query_one(
            "SELECT body FROM settled_records WHERE id = $1",
            &[id.into()],
        )?
        .map(|r| r.bytes(0).map(<[u8]>::to_vec))
        .transpose()
    }

    fn record_bodies(
        &mut self,
        issues: &[Hash32],
        transfers: &[Hash32],
    ) -> Result<(BTreeMap<Hash32, Vec<u8>>, BTreeMap<Hash32, Vec<u8>>), StoreError> {
        let mut bodies = |table: &str, ids: &[Hash32]| {
            let ids: Vec<Value> = ids.iter().map(hash_value).collect();
            let mut out = BTreeMap::new();
            for row in select_in(
                self,
                &format!("SELECT id, body FROM {table} WHERE id IN "),
                "",
                &ids,
                &[],
            )? {
                out.insert(hash32(row.bytes(0)?)?, row.bytes(1)?.to_vec());
            }
            Ok::<_, StoreError>(out)
        };
        Ok((
            bodies("issued", issues)?,
            bodies("settled_records", transfers)?,
        ))
    }

    fn settled_record_expiry(&mut self, id: &Hash32) -> Result<Option<i64>, StoreError> {
        self.query_one(
            "SELECT expiry_epoch FROM settled_records WHERE id = $1",
            &[hash_value(id)],
        )?
        .map(|r| r.int(0))
        .transpose()
    }

    fn spent_consumer(&mut self, op: &OutPoint) -> Result<Option<Hash32>, StoreError> {
        self.query_one(
            "SELECT consumed_by FROM spent WHERE record = $1 AND idx = $2",
            &[hash_value(&op.record), Value::Int(i64::from(op.index))],
        )?
        .map(|r| hash32(r.bytes(0)?))
        .transpose()
    }

    fn insert_spent(&mut self, s: &NewSpent) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO spent (record, idx, expiry_epoch, consumed_by) VALUES ($1, $2, $3, $4)",
            &spent_values(s),
        )?;
        Ok(())
    }

    fn double_spend_known(
        &mut self,
        record: &Hash32,
        idx: i64,
        second: &Hash32,
    ) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT seq FROM double_spends WHERE record = $1 AND idx = $2 AND second_record = $3",
                &[hash_value(record), Value::Int(idx), hash_value(second)],
            )?
            .is_some())
    }

    fn last_double_spend_seq(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .query_one(
                "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM double_spends",
                &[],
            )?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0))
    }

    fn insert_double_spend(&mut self, d: &DoubleSpendRow) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO double_spends (seq, record, idx, first_record, second_record, offender_key, value) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                Value::Int(d.seq),
                hash_value(&d.record),
                Value::Int(d.idx),
                d.first_record.clone().into(),
                hash_value(&d.second_record),
                d.offender_key.clone().into(),
                Value::Int(d.value),
            ],
        )?;
        Ok(())
    }

    fn double_spends(&mut self) -> Result<Vec<DoubleSpendRow>, StoreError> {
        self.query(
            "SELECT seq, record, idx, first_record, second_record, offender_key, value FROM double_spends ORDER BY seq",
            &[],
        )?
        .iter()
        .map(double_spend_row)
        .collect()
    }

    fn double_spend_count(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .query_one("SELECT CAST(COUNT(*) AS BIGINT) FROM double_spends", &[])?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0))
    }

    fn spent_horizon(&mut self) -> Result<i64, StoreError> {
        self.query_one(
            "SELECT v FROM settlement_meta WHERE k = 'spent_horizon'",
            &[],
        )?
        .ok_or_else(|| StoreError::Type("settlement_meta.spent_horizon missing".into()))?
        .int(0)
    }

    fn set_spent_horizon(&mut self, horizon: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE settlement_meta SET v = $1 WHERE k = 'spent_horizon'",
            &[Value::Int(horizon)],
        )?;
        Ok(())
    }

    fn delete_spent_before(&mut self, horizon: i64) -> Result<u64, StoreError> {
        self.execute(
            "DELETE FROM spent WHERE expiry_epoch < $1",
            &[Value::Int(horizon)],
        )
    }

    fn delete_settled_records_before(&mut self, horizon: i64) -> Result<u64, StoreError> {
        self.execute(
            "DELETE FROM settled_records WHERE expiry_epoch < $1",
            &[Value::Int(horizon)],
        )
    }

    fn spent_range_partitioned(&mut self) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT CAST(p.partstrat AS TEXT) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'spent' AND n.nspname = current_schema()",
                &[],
            )?
            .map(|r| r.text(0).map(|s| s == "r"))
            .transpose()?
            .unwrap_or(false))
    }

    fn spent_partitions(&mut self) -> Result<Vec<String>, StoreError> {
        self.query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace WHERE p.relname = 'spent' AND n.nspname = current_schema()",
            &[],
        )?
        .iter()
        .map(|r| r.text(0).map(str::to_string))
        .collect()
    }

    fn relation_exists(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = $1 AND n.nspname = current_schema()",
                &[name.into()],
            )?
            .is_some())
    }

    fn create_spent_partition(&mut self, name: &str, lo: i64, hi: i64) -> Result<(), StoreError> {
        self.execute(
            &format!("CREATE TABLE {name} PARTITION OF spent FOR VALUES FROM ({lo}) TO ({hi})"),
            &[],
        )?;
        Ok(())
    }

    fn drop_spent_partition(&mut self, name: &str) -> Result<(), StoreError> {
        self.execute(&format!("DROP TABLE {name}"), &[])?;
        Ok(())
    }
}

fn spent_values(s: &NewSpent) -> [Value; 4] {
    [
        s.record.clone().into(),
        Value::Int(s.idx),
        Value::Int(s.expiry_epoch),
        s.consumed_by.clone().into(),
    ]
}

/// One round trip for a batch of ordinary size (`UNION ALL` of the four
/// look-ups); larger batches take one query per look-up and chunk.
fn lookup(
    tx: &mut dyn Tx,
    issue_ids: &[Value],
    tids: &[Value],
    records: &[Value],
    epochs: &[Value],
) -> Result<RegistryView, StoreError> {
    const HORIZON: &str = "SELECT 3, CAST(NULL AS BLOB), v, CAST(NULL AS BLOB) FROM settlement_meta WHERE k = 'spent_horizon'";
    let rows = if issue_ids.len().max(tids.len()).max(records.len()) <= SQL_IN_MAX / 2 {
        let mut params: Vec<Value> = Vec::new();
        let list = |v: &[Value], params: &mut Vec<Value>| {
            let p = padded(v);
            let s = placeholders(params.len() + 1, p.len());
            params.extend(p);
            s
        };
        let mut parts = vec![HORIZON.to_string()];
        if !issue_ids.is_empty() {
            parts.push(format!(
                "SELECT 0, id, CAST(NULL AS BIGINT), CAST(NULL AS BLOB) FROM issued WHERE id IN ({})",
                list(issue_ids, &mut params)
            ));
        }
        if !tids.is_empty() {
            parts.push(format!(
                "SELECT 1, id, CAST(NULL AS BIGINT), CAST(NULL AS BLOB) FROM settled_records WHERE id IN ({})",
                list(tids, &mut params)
            ));
        }
        if !records.is_empty() {
            let r = list(records, &mut params);
            // The expiry filter is there for PostgreSQL's partition
            // pruning. SQLite has no partitions, and with it SQLite's
            // planner may take the expiry index, which is not selective
            // (every token of an epoch shares one value): a scan per look-up.
            if tx.backend() == "sqlite" {
                parts.push(format!(
                    "SELECT 2, record, idx, consumed_by FROM spent WHERE record IN ({r})"
                ));
            } else {
                let e = list(epochs, &mut params);
                parts.push(format!(
                    "SELECT 2, record, idx, consumed_by FROM spent WHERE record IN ({r}) AND expiry_epoch IN ({e})"
                ));
            }
        }
        tx.query(&parts.join(" UNION ALL "), &params)?
    } else {
        let tag = |rows: Vec<Row>, t: i64| -> Vec<Row> {
            rows.into_iter()
                .map(|mut r| {
                    r.0.insert(0, Value::Int(t));
                    r.0.resize(4, Value::Null);
                    r
                })
                .collect()
        };
        let mut rows = tx.query(HORIZON, &[])?;
        rows.extend(tag(
            select_in(tx, "SELECT id FROM issued WHERE id IN ", "", issue_ids, &[])?,
            0,
        ));
        rows.extend(tag(
            select_in(
                tx,
                "SELECT id FROM settled_records WHERE id IN ",
                "",
                tids,
                &[],
            )?,
            1,
        ));
        let spent = if tx.backend() == "sqlite" {
            select_in(
                tx,
                "SELECT 2, record, idx, consumed_by FROM spent WHERE record IN ",
                "",
                records,
                &[],
            )?
        } else {
            select_in(
                tx,
                "SELECT 2, record, idx, consumed_by FROM spent WHERE record IN ",
                " AND expiry_epoch IN ",
                records,
                epochs,
            )?
        };
        rows.extend(spent);
        rows
    };
    let mut k = RegistryView {
        horizon: i64::MIN,
        issues: BTreeSet::new(),
        settled: BTreeSet::new(),
        consumed: BTreeMap::new(),
    };
    for r in rows {
        match r.int(0)? {
            0 => {
                k.issues.insert(r.bytes(1)?.to_vec());
            }
            1 => {
                k.settled.insert(r.bytes(1)?.to_vec());
            }
            2 => {
                k.consumed
                    .insert((r.bytes(1)?.to_vec(), r.int(2)?), r.bytes(3)?.to_vec());
            }
            3 => k.horizon = r.int(2)?,
            t => return Err(StoreError::Type(format!("look-up row of kind {t}"))),
        }
    }
    if k.horizon == i64::MIN {
        return Err(StoreError::Type(
            "settlement_meta.spent_horizon missing".into(),
        ));
    }
    Ok(k)
}

/// `prefix (…a…) [infix (…b…)]` over chunks of `a`; `IN` lists padded to
/// a power of two (repeating the last value) so that few distinct
/// statements are prepared.
fn select_in(
    tx: &mut dyn Tx,
    prefix: &str,
    infix: &str,
    a: &[Value],
    b: &[Value],
) -> Result<Vec<Row>, StoreError> {
    let mut out = Vec::new();
    if a.is_empty() {
        return Ok(out);
    }
    for chunk in a.chunks(SQL_IN_MAX) {
        let mut params: Vec<Value> = padded(chunk);
        let mut sql = format!("{prefix}({})", placeholders(1, params.len()));
        if !infix.is_empty() {
            let bp = padded(b);
            sql.push_str(&format!(
                "{infix}({})",
                placeholders(params.len() + 1, bp.len())
            ));
            params.extend(bp);
        }
        out.extend(tx.query(&sql, &params)?);
    }
    Ok(out)
}

fn padded(v: &[Value]) -> Vec<Value> {
    let mut p = v.to_vec();
    if let Some(last) = v.last() {
        p.resize(v.len().next_power_of_two(), last.clone());
    }
    p
}

fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Multi-row `INSERT … VALUES (…), (…)` of `rows`, in chunks whose sizes
/// are powers of two (few distinct statements to prepare).
fn insert_rows<const N: usize>(
    tx: &mut dyn Tx,
    head: &str,
    rows: &[[Value; N]],
) -> Result<(), StoreError> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = rest.len().min(SQL_ROWS_MAX);
        let n = if n.is_power_of_two() {
            n
        } else {
            n.next_power_of_two() / 2
        };
        let (now, later) = rest.split_at(n);
        let values = (0..n)
            .map(|r| format!("({})", placeholders(r * N + 1, N)))
            .collect::<Vec<_>>()
            .join(", ");
        let params: Vec<Value> = now.iter().flat_map(|r| r.iter().cloned()).collect();
        let written = match tx.execute(&format!("{head} VALUES {values}"), &params) {
            // Every key was just read as absent in this SERIALIZABLE
            // transaction: a duplicate means a concurrent transaction
            // committed it since, so this one must retry and see it.
            Err(StoreError::Constraint(_)) => return Err(StoreError::Conflict),
            r => r?,
        };
        assert_eq!(
            written, n as u64,
            "a multi-row INSERT wrote {written} of {n} rows"
        );
        rest = later;
    }
    Ok(())
}

// ---- the settlement queue -----------------------------------------------------

/// The result of one settled queue row (`settlement_results`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueResultRow<'a> {
    pub id: i64,
    /// [`crate::queue::SETTLED`] or the refusal's stable code.
    pub code: i64,
    pub registered: i64,
    pub already: i64,
    pub double_spends: i64,
    pub settled_by: &'a str,
}

/// The queue several settlement workers share.
pub trait SettlementQueueDb {
    /// Appends packages in one multi-row INSERT; returns their ids
    /// ([`QUEUE_ID`]), in order.
    fn enqueue(&mut self, bodies: &[Vec<u8>]) -> Result<Vec<i64>, StoreError>;
    /// Up to `max` ids of pending rows whose lease ran out before `now_ms`
    /// and with `id % n = k`, lowest first.
    fn claimable_in_lane(
        &mut self,
        now_ms: i64,
        n: i64,
        k: i64,
        max: i64,
    ) -> Result<Vec<i64>, StoreError>;
    /// Up to `max` ids of pending rows whose lease ran out before
    /// `now_ms`, lowest first.
    fn claimable(&mut self, now_ms: i64, max: i64) -> Result<Vec<i64>, StoreError>;
    /// Leases those of `ids` that are still pending and unleased at
    /// `now_ms` to `worker` until `until`, in one statement; returns the
    /// rows taken (in no particular order).
    fn take_lease(
        &mut self,
        worker: &str,
        until: i64,
        now_ms: i64,
        ids: &[i64],
    ) -> Result<Vec<Claimed>, StoreError>;
    /// Those of `ids` not done yet (chunked, padded `IN` lists).
    fn pending_among(&mut self, ids: &[i64]) -> Result<BTreeSet<i64>, StoreError>;
    /// Marks `ids` done in one statement; returns the rows changed (those
    /// that were pending).
    fn mark_done(&mut self, ids: &[i64]) -> Result<u64, StoreError>;
    /// Stores results with multi-row INSERTs.
    fn insert_results(&mut self, rows: &[QueueResultRow<'_>]) -> Result<(), StoreError>;
    /// Rows not done yet.
    fn pending_count(&mut self) -> Result<i64, StoreError>;
}

/// Decodes `SELECT id` / `RETURNING id` of queue rows.
fn queue_id(r: &Row) -> Result<i64, StoreError> {
    r.int(0)
}

/// Decodes `RETURNING id, body` of a lease taken.
fn claimed(r: &Row) -> Result<Claimed, StoreError> {
    Ok(Claimed {
        id: r.int(0)?,
        body: r.bytes(1)?.to_vec(),
    })
}

impl<'a> SettlementQueueDb for dyn Tx + 'a {
    fn enqueue(&mut self, bodies: &[Vec<u8>]) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::with_capacity(bodies.len());
        let mut rows: Vec<[Value; 4]> = Vec::with_capacity(bodies.len());
        for b in bodies {
            let id = self.next_id(&QUEUE_ID)?;
            ids.push(id);
            rows.push([
                Value::Int(id),
                b.clone().into(),
                Value::Int(0),
                Value::Int(0),
            ]);
        }
        insert_rows(
            self,
            "INSERT INTO settlement_queue (id, body, claimed_until, done)",
            &rows,
        )?;
        Ok(ids)
    }

    fn claimable_in_lane(
        &mut self,
        now_ms: i64,
        n: i64,
        k: i64,
        max: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.query(
            "SELECT id FROM settlement_queue WHERE done = 0 AND claimed_until < $1 AND id % $2 = $3 ORDER BY id LIMIT $4",
            &[Value::Int(now_ms), Value::Int(n), Value::Int(k), Value::Int(max)],
        )?
        .iter()
        .map(queue_id)
        .collect()
    }

    fn claimable(&mut self, now_ms: i64, max: i64) -> Result<Vec<i64>, StoreError> {
        self.query(
            "SELECT id FROM settlement_queue WHERE done = 0 AND claimed_until < $1 ORDER BY id LIMIT $2",
            &[Value::Int(now_ms), Value::Int(max)],
        )?
        .iter()
        .map(queue_id)
        .collect()
    }

    fn take_lease(
        &mut self,
        worker: &str,
        until: i64,
        now_ms: i64,
        ids: &[i64],
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut params = vec![
            Value::Text(worker.to_string()),
            Value::Int(until),
            Value::Int(now_ms),
        ];
        params.extend(ids.iter().map(|id| Value::Int(*id)));
        self.query(
            &format!(
                "UPDATE settlement_queue SET claimed_by = $1, claimed_until = $2 WHERE done = 0 AND claimed_until < $3 AND id IN ({}) RETURNING id, body",
                placeholders(4, ids.len())
            ),
            &params,
        )?
        .iter()
        .map(claimed)
        .collect()
    }

    fn pending_among(&mut self, ids: &[i64]) -> Result<BTreeSet<i64>, StoreError> {
        let ids: Vec<Value> = ids.iter().map(|id| Value::Int(*id)).collect();
        select_in(
            self,
            "SELECT id FROM settlement_queue WHERE done = 0 AND id IN ",
            "",
            &ids,
            &[],
        )?
        .iter()
        .map(queue_id)
        .collect()
    }

    fn mark_done(&mut self, ids: &[i64]) -> Result<u64, StoreError> {
        let ids: Vec<Value> = ids.iter().map(|id| Value::Int(*id)).collect();
        self.execute(
            &format!(
                "UPDATE settlement_queue SET done = 1 WHERE done = 0 AND id IN ({})",
                placeholders(1, ids.len())
            ),
            &ids,
        )
    }

    fn insert_results(&mut self, rows: &[QueueResultRow<'_>]) -> Result<(), StoreError> {
        let rows: Vec<[Value; 6]> = rows
            .iter()
            .map(|r| {
                [
                    Value::Int(r.id),
                    Value::Int(r.code),
                    Value::Int(r.registered),
                    Value::Int(r.already),
                    Value::Int(r.double_spends),
                    Value::Text(r.settled_by.to_string()),
                ]
            })
            .collect();
        insert_rows(
            self,
            "INSERT INTO settlement_results (id, code, registered, already, double_spends, settled_by)",
            &rows,
        )
    }

    fn pending_count(&mut self) -> Result<i64, StoreError> {
        let row = self.query_one(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM settlement_queue WHERE done = 0",
            &[],
        )?;
        one_int(row, "count")
    }
}
