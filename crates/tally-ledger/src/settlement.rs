//! Settlement and the spent registry.
//!
//! Every output consumed by any transfer in a settled ancestry is
//! registered as `outpoint → consuming record`. The same record presented
//! again is a no-op (idempotent); a different consuming record is a double
//! spend: both signed records are kept as evidence, and the double-spent
//! value is booked from the scheme loss account to the offline float, so
//! the float keeps matching the tokens actually outstanding and money is
//! never silently created. Every `Issue` at the root of an ancestry must be
//! one the DCPs registered when they issued it; anything else is a
//! counterfeit (or a stolen issuing key) and the package is refused.
//!
//! All of it happens in the caller's one database transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use tally_codes as codes;

use tally_core::codec::Cbor;
use tally_core::verify::VerifiedPackage;
use tally_core::{Hash32, Issue, OutPoint, PublicKey, Record, Transfer};
use tally_store::{Migrations, Row, Store, StoreError, Tx, TxFailure, Value};

use crate::ledger::{self, Ledger, LedgerError, TransferRequest};

pub static MIGRATIONS: Migrations = Migrations {
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

/// Expiry epoch of tokens whose expiry is not known (registered before
/// expiries were recorded, or consumed by recovery with no ancestry at
/// hand): never pruned. Every registry look-up includes it.
pub const NEVER_EXPIRES: i64 = 1 << 62;
/// Expiry epochs per PostgreSQL partition of the spent registry.
pub const SPENT_PARTITION_EPOCHS: i64 = 16;
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

/// Evidence of one double spend: two different records consuming one
/// output, both signed by the output's owner key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoubleSpend {
    pub outpoint: OutPoint,
    /// The record that consumed it first; `None` when it was consumed by
    /// the recovery of an interrupted payment.
    pub first: Option<Transfer>,
    pub second: Transfer,
    /// The pseudonym that signed both.
    pub offender: PublicKey,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettlementOutcome {
    /// Outputs newly registered as spent.
    pub registered: usize,
    /// Outputs already registered by the same record (idempotent replay).
    pub already: usize,
    /// Newly detected double spends (already-known ones are not repeated).
    pub double_spends: Vec<DoubleSpend>,
    /// Value booked from the loss account to the float for them.
    pub loss_booked: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettlementError {
    /// An `Issue` no DCP registered: counterfeit or stolen issuing key.
    UnknownIssue(Hash32),
    /// The package consumes a token that expired before the registry's
    /// horizon: its registrations may have been pruned, so it can no
    /// longer be checked for double spends and is refused.
    BeyondHorizon {
        expiry_epoch: i64,
        horizon: i64,
    },
    Ledger(LedgerError),
}

impl SettlementError {
    /// Stable code, registered in tally-codes (docs/CODES.md).
    pub fn code(&self) -> u16 {
        match self {
            SettlementError::UnknownIssue(_) => codes::SETTLEMENT_UNKNOWN_ISSUE,
            SettlementError::BeyondHorizon { .. } => codes::SETTLEMENT_BEYOND_HORIZON,
            SettlementError::Ledger(e) => e.code(),
        }
    }
}

impl fmt::Display for SettlementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettlementError::UnknownIssue(id) => {
                write!(f, "issue {id} was never registered by a DCP (counterfeit)")
            }
            SettlementError::BeyondHorizon {
                expiry_epoch,
                horizon,
            } => write!(
                f,
                "a consumed token expired at epoch {expiry_epoch}, before the spent registry's horizon {horizon}"
            ),
            SettlementError::Ledger(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SettlementError {}

impl From<LedgerError> for SettlementError {
    fn from(e: LedgerError) -> Self {
        SettlementError::Ledger(e)
    }
}
impl From<StoreError> for SettlementError {
    fn from(e: StoreError) -> Self {
        SettlementError::Ledger(LedgerError::Store(e))
    }
}
impl TxFailure for SettlementError {
    fn is_conflict(&self) -> bool {
        matches!(self, SettlementError::Ledger(e) if e.is_conflict())
    }
}

pub struct Settlement;

impl Settlement {
    /// Registers a genesis record the DCP just signed (load, renewal,
    /// recovery), so settlement can later recognise it as a root.
    pub fn register_issue(tx: &mut dyn Tx, dcp: u32, issue: &Issue) -> Result<(), SettlementError> {
        let id = issue.id();
        if tx
            .query_one(
                "SELECT value FROM issued WHERE id = $1",
                &[id.0.as_slice().into()],
            )?
            .is_some()
        {
            return Ok(());
        }
        let value: u64 = issue.outputs.iter().map(|o| o.value.0).sum();
        tx.execute(
            "INSERT INTO issued (id, value, dcp, body) VALUES ($1, $2, $3, $4)",
            &[
                id.0.as_slice().into(),
                Value::Int(i64::try_from(value).map_err(|_| LedgerError::Overflow)?),
                Value::Int(i64::from(dcp)),
                issue.to_cbor().into(),
            ],
        )?;
        Ok(())
    }

    /// Registers every consumption in a verified package. `idem` names the
    /// settlement request (it keys the loss booking in the journal).
    pub fn settle(
        tx: &mut dyn Tx,
        pkg: &VerifiedPackage,
        idem: &str,
    ) -> Result<SettlementOutcome, SettlementError> {
        let mut r = Self::settle_batch(tx, &[(pkg, idem)])?;
        r.pop()
            .unwrap_or_else(|| Err(StoreError::Type("no outcome for the package".into()).into()))
    }

    /// Settles packages in one transaction with a constant number of
    /// statements per batch (not per package): one look-up of the batch's
    /// `Issue` roots, one of its transfers, one of its consumed tokens,
    /// then multi-row INSERTs. The answer for each package, in order, is
    /// the one [`Settlement::settle`] would give it after the packages
    /// before it: a refused package (unknown Issue, token beyond the
    /// horizon) changes nothing; double spends between packages of the
    /// batch are found as between batches. A store error fails the batch.
    pub fn settle_batch(
        tx: &mut dyn Tx,
        batch: &[(&VerifiedPackage, &str)],
    ) -> Result<Vec<Result<SettlementOutcome, SettlementError>>, SettlementError> {
        // Expiry of every token a package touches, from its own ancestry.
        let expiries: Vec<BTreeMap<Hash32, i64>> =
            batch.iter().map(|(p, _)| record_expiries(p)).collect();
        let mut results: Vec<Option<Result<SettlementOutcome, SettlementError>>> =
            vec![None; batch.len()];

        // Everything the registry holds about this batch, in one query.
        let mut issue_ids: Vec<Value> = Vec::new();
        let mut tids: Vec<Value> = Vec::new();
        let mut records: Vec<Value> = Vec::new();
        let mut epochs: BTreeSet<i64> = BTreeSet::from([NEVER_EXPIRES]);
        for (i, (p, _)) in batch.iter().enumerate() {
            for (rec, id) in p.package().ancestry.iter().zip(p.ancestry_ids()) {
                if let Record::Issue(_) = rec {
                    issue_ids.push(id.0.as_slice().into());
                }
            }
            for (t, tid) in transfers_of(p) {
                tids.push(tid.0.as_slice().into());
                for op in &t.inputs {
                    records.push(op.record.0.as_slice().into());
                    epochs.insert(
                        expiries[i]
                            .get(&op.record)
                            .copied()
                            .unwrap_or(NEVER_EXPIRES),
                    );
                }
            }
        }
        let epoch_values: Vec<Value> = epochs.iter().map(|e| Value::Int(*e)).collect();
        let known = lookup(tx, &issue_ids, &tids, &records, &epoch_values)?;
        let horizon = known.horizon;
        let mut settled = known.settled;
        let mut consumed = known.consumed;

        for (i, (p, _)) in batch.iter().enumerate() {
            // Roots: every Issue must be registered (checked before writing).
            let unknown = p
                .package()
                .ancestry
                .iter()
                .zip(p.ancestry_ids())
                .find(|(rec, id)| {
                    matches!(rec, Record::Issue(_)) && !known.issues.contains(id.0.as_slice())
                });
            if let Some((_, id)) = unknown {
                results[i] = Some(Err(SettlementError::UnknownIssue(*id)));
                continue;
            }
            // Past the horizon a token's registration may be gone.
            let oldest = transfers_of(p)
                .flat_map(|(t, _)| t.inputs.iter())
                .map(|op| {
                    expiries[i]
                        .get(&op.record)
                        .copied()
                        .unwrap_or(NEVER_EXPIRES)
                })
                .min();
            if let Some(e) = oldest
                && e < horizon
            {
                results[i] = Some(Err(SettlementError::BeyondHorizon {
                    expiry_epoch: e,
                    horizon,
                }));
            }
        }
        let accepted: Vec<usize> = (0..batch.len()).filter(|i| results[*i].is_none()).collect();

        // Walk the batch in order as one-at-a-time settlement would.
        let mut new_records: Vec<[Value; 3]> = Vec::new();
        let mut new_spent: Vec<[Value; 4]> = Vec::new();
        for &i in &accepted {
            let (p, idem) = batch[i];
            let mut out = SettlementOutcome::default();
            let exp = &expiries[i];
            for (t, tid) in transfers_of(p) {
                let tid_bytes = tid.0.to_vec();
                if settled.insert(tid_bytes.clone()) {
                    new_records.push([
                        tid_bytes.clone().into(),
                        t.to_cbor().into(),
                        Value::Int(exp.get(&tid).copied().unwrap_or(NEVER_EXPIRES)),
                    ]);
                }
                for op in &t.inputs {
                    let key = (op.record.0.to_vec(), i64::from(op.index));
                    match consumed.get(&key) {
                        None => {
                            new_spent.push([
                                key.0.clone().into(),
                                Value::Int(key.1),
                                Value::Int(exp.get(&op.record).copied().unwrap_or(NEVER_EXPIRES)),
                                tid_bytes.clone().into(),
                            ]);
                            consumed.insert(key, tid_bytes.clone());
                            out.registered += 1;
                        }
                        Some(c) if *c == tid_bytes => out.already += 1,
                        Some(c) => {
                            let first_id = c.clone();
                            // Rare: write what is pending so that the
                            // evidence queries below see it.
                            flush(tx, &mut new_records, &mut new_spent)?;
                            if let Some(d) = Self::double_spend(tx, p, op, &first_id, t, tid)? {
                                out.loss_booked = out
                                    .loss_booked
                                    .checked_add(d.value)
                                    .ok_or(LedgerError::Overflow)?;
                                out.double_spends.push(d);
                            }
                        }
                    }
                }
            }
            if out.loss_booked > 0 {
                flush(tx, &mut new_records, &mut new_spent)?;
                let loss_idem = format!("{idem}:loss");
                let booked = Ledger::transfer(
                    tx,
                    &TransferRequest {
                        idem: loss_idem.clone(),
                        debit: ledger::LOSS.into(),
                        credit: ledger::OFFLINE_FLOAT.into(),
                        amount: out.loss_booked,
                        code: ledger::code::LOSS_COVER,
                    },
                )?;
                // These double spends are new, so no earlier booking can be
                // theirs: `Already` means the caller reused its key for another
                // settlement with the same loss, and the loss would go unbooked.
                if let ledger::Applied::Already(_) = booked {
                    return Err(LedgerError::IdempotencyKeyReused(loss_idem).into());
                }
            }
            results[i] = Some(Ok(out));
        }
        flush(tx, &mut new_records, &mut new_spent)?;
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(StoreError::Type("package without outcome".into()).into()))
            })
            .collect())
    }

    /// A consumption of `op` by `t` when `first_id` consumed it before:
    /// the evidence, unless this double spend is known already.
    fn double_spend(
        tx: &mut dyn Tx,
        p: &VerifiedPackage,
        op: &OutPoint,
        first_id: &[u8],
        t: &Transfer,
        tid: Hash32,
    ) -> Result<Option<DoubleSpend>, SettlementError> {
        let key = [
            Value::Bytes(op.record.0.to_vec()),
            Value::Int(i64::from(op.index)),
        ];
        let tid_v: Value = tid.0.as_slice().into();
        let known = tx.query_one(
            "SELECT seq FROM double_spends WHERE record = $1 AND idx = $2 AND second_record = $3",
            &[key[0].clone(), key[1].clone(), tid_v.clone()],
        )?;
        if known.is_some() {
            return Ok(None);
        }
        // The first consumer is a settled record, or none when the output
        // was consumed by interrupted-payment recovery (`consume_stranded`):
        // the payee was re-credited and the stranded token spent anyway.
        let first = match tx.query_one(
            "SELECT body FROM settled_records WHERE id = $1",
            &[first_id.to_vec().into()],
        )? {
            Some(row) => Some(
                Transfer::from_cbor(row.bytes(0)?)
                    .map_err(|e| StoreError::Type(format!("stored record: {e}")))?,
            ),
            None => None,
        };
        // The verifier resolved every input, so the output exists.
        let pkg = p.package();
        let o = pkg
            .ancestry
            .iter()
            .zip(p.ancestry_ids())
            .find(|(_, id)| **id == op.record)
            .and_then(|(r, _)| r.outputs().get(op.index as usize).copied())
            .ok_or_else(|| StoreError::Type("input not in ancestry".into()))?;
        let seq = tx
            .query_one(
                "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM double_spends",
                &[],
            )?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0)
            + 1;
        tx.execute(
            "INSERT INTO double_spends (seq, record, idx, first_record, second_record, offender_key, value) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                Value::Int(seq),
                key[0].clone(),
                key[1].clone(),
                first_id.to_vec().into(),
                tid_v,
                o.owner.to_cbor().into(),
                Value::Int(i64::try_from(o.value.0).map_err(|_| LedgerError::Overflow)?),
            ],
        )?;
        Ok(Some(DoubleSpend {
            outpoint: *op,
            first,
            second: t.clone(),
            offender: o.owner,
            value: o.value.0,
        }))
    }

    /// The registry's horizon: tokens that expired before it may have
    /// been pruned, and packages consuming them are refused.
    pub fn horizon(tx: &mut dyn Tx) -> Result<i64, SettlementError> {
        Ok(tx
            .query_one(
                "SELECT v FROM settlement_meta WHERE k = 'spent_horizon'",
                &[],
            )?
            .ok_or_else(|| StoreError::Type("settlement_meta.spent_horizon missing".into()))?
            .int(0)?)
    }

    /// Creates the PostgreSQL partitions of the spent registry for expiry
    /// epochs `from..=to` (each in its own transaction; a partition that
    /// cannot be made because the default partition already holds rows of
    /// its range is left out, and those rows stay where they are). Does
    /// nothing on SQLite or on a registry that is not range-partitioned.
    /// Returns the partitions created.
    pub fn prepare_partitions(store: &Store, from: i64, to: i64) -> Result<usize, SettlementError> {
        if store.backend() != "postgres" || !range_partitioned(store)? {
            return Ok(0);
        }
        let mut created = 0;
        let first = from.max(0) / SPENT_PARTITION_EPOCHS;
        let last = to.clamp(0, NEVER_EXPIRES - 1) / SPENT_PARTITION_EPOCHS;
        for b in first..=last {
            let lo = b * SPENT_PARTITION_EPOCHS;
            let name = format!("spent_e{lo}");
            let exists = store.transact(|tx| {
                Ok::<_, StoreError>(
                    tx.query_one(
                        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = $1 AND n.nspname = current_schema()",
                        &[name.as_str().into()],
                    )?
                    .is_some(),
                )
            })?;
            if exists {
                continue;
            }
            let made = store.transact(|tx| {
                tx.execute(
                    &format!(
                        "CREATE TABLE {name} PARTITION OF spent FOR VALUES FROM ({lo}) TO ({})",
                        lo + SPENT_PARTITION_EPOCHS
                    ),
                    &[],
                )
            });
            match made {
                Ok(_) => created += 1,
                // Rows of this range in the default partition (or a
                // concurrent maintainer): leave it, nothing is lost.
                Err(StoreError::Db(_)) | Err(StoreError::Constraint(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(created)
    }

    /// Moves the horizon to `horizon` (never back) and removes every
    /// registration of a token that expired before it: whole partitions
    /// dropped on a range-partitioned PostgreSQL registry, rows deleted
    /// otherwise (and from the default partition). Settled-record bodies
    /// of the same expiry go too. Returns (partitions dropped, rows deleted).
    pub fn prune(store: &Store, horizon: i64) -> Result<(usize, u64), SettlementError> {
        // First the horizon, committed: from here on no package consuming
        // such a token is registered, so deleting its rows is safe.
        let horizon = store.transact(|tx| {
            let old = Self::horizon(tx)?;
            let h = old.max(horizon);
            tx.execute(
                "UPDATE settlement_meta SET v = $1 WHERE k = 'spent_horizon'",
                &[Value::Int(h)],
            )?;
            Ok::<_, SettlementError>(h)
        })?;
        let mut dropped = 0;
        if store.backend() == "postgres" && range_partitioned(store)? {
            let parts = store.transact(|tx| {
                tx.query(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace WHERE p.relname = 'spent' AND n.nspname = current_schema()",
                    &[],
                )
            })?;
            for r in parts {
                let name = r.text(0)?.to_string();
                let Some(lo) = name
                    .strip_prefix("spent_e")
                    .and_then(|x| x.parse::<i64>().ok())
                else {
                    continue;
                };
                if lo + SPENT_PARTITION_EPOCHS <= horizon {
                    store.transact(|tx| tx.execute(&format!("DROP TABLE {name}"), &[]))?;
                    dropped += 1;
                }
            }
        }
        let deleted = store.transact(|tx| {
            let n = tx.execute(
                "DELETE FROM spent WHERE expiry_epoch < $1",
                &[Value::Int(horizon)],
            )?;
            tx.execute(
                "DELETE FROM settled_records WHERE expiry_epoch < $1",
                &[Value::Int(horizon)],
            )?;
            Ok::<_, StoreError>(n)
        })?;
        Ok((dropped, deleted))
    }

    /// Marks an output consumed by a synthetic record (interrupted-payment
    /// recovery: the stranded output may never be spent again). Returns
    /// false if it was already consumed.
    pub fn consume_stranded(
        tx: &mut dyn Tx,
        op: &OutPoint,
        by: &Hash32,
    ) -> Result<bool, SettlementError> {
        let key = [
            Value::Bytes(op.record.0.to_vec()),
            Value::Int(i64::from(op.index)),
        ];
        if tx
            .query_one(
                "SELECT consumed_by FROM spent WHERE record = $1 AND idx = $2",
                &key,
            )?
            .is_some()
        {
            return Ok(false);
        }
        // The stranded output belongs to a settled transfer, whose outputs'
        // expiry was recorded with it; otherwise it is never pruned.
        let expiry = match tx.query_one(
            "SELECT expiry_epoch FROM settled_records WHERE id = $1",
            &[key[0].clone()],
        )? {
            Some(r) => r.int(0)?,
            None => NEVER_EXPIRES,
        };
        tx.execute(
            "INSERT INTO spent (record, idx, expiry_epoch, consumed_by) VALUES ($1, $2, $3, $4)",
            &[
                key[0].clone(),
                key[1].clone(),
                Value::Int(expiry),
                by.0.as_slice().into(),
            ],
        )?;
        Ok(true)
    }

    pub fn is_spent(tx: &mut dyn Tx, op: &OutPoint) -> Result<Option<Hash32>, SettlementError> {
        let key = [
            Value::Bytes(op.record.0.to_vec()),
            Value::Int(i64::from(op.index)),
        ];
        match tx.query_one(
            "SELECT consumed_by FROM spent WHERE record = $1 AND idx = $2",
            &key,
        )? {
            None => Ok(None),
            Some(r) => {
                let b: [u8; 32] = r
                    .bytes(0)?
                    .try_into()
                    .map_err(|_| StoreError::Type("hash length".into()))?;
                Ok(Some(Hash32(b)))
            }
        }
    }

    pub fn double_spend_count(tx: &mut dyn Tx) -> Result<i64, SettlementError> {
        Ok(tx
            .query_one("SELECT CAST(COUNT(*) AS BIGINT) FROM double_spends", &[])?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0))
    }
}

/// Every transfer of a package with its id: ancestry transfers, then the
/// package's own transfer.
fn transfers_of(p: &VerifiedPackage) -> impl Iterator<Item = (&Transfer, Hash32)> {
    p.package()
        .ancestry
        .iter()
        .zip(p.ancestry_ids().iter().copied())
        .filter_map(|(r, id)| match r {
            Record::Transfer(t) => Some((t, id)),
            Record::Issue(_) => None,
        })
        .chain(std::iter::once((&p.package().transfer, p.transfer_id())))
}

/// The expiry epoch of the outputs of every record of a package: an
/// Issue's own, a transfer's the earliest of its inputs'. It is a function
/// of the record alone (ids commit to inputs), so every package carrying
/// a token computes the same expiry for it.
fn record_expiries(p: &VerifiedPackage) -> BTreeMap<Hash32, i64> {
    let mut exp: BTreeMap<Hash32, i64> = BTreeMap::new();
    let pkg = p.package();
    let mut pending: Vec<(&Transfer, Hash32)> = Vec::new();
    for (rec, id) in pkg.ancestry.iter().zip(p.ancestry_ids()) {
        match rec {
            Record::Issue(i) => {
                exp.insert(*id, i64::from(i.expiry_epoch));
            }
            Record::Transfer(t) => pending.push((t, *id)),
        }
    }
    pending.push((&pkg.transfer, p.transfer_id()));
    // Ancestries need not be in order; each pass resolves at least one
    // transfer of a verified (acyclic, fully resolved) package.
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|(t, id)| {
            let ins: Option<Vec<i64>> = t
                .inputs
                .iter()
                .map(|op| exp.get(&op.record).copied())
                .collect();
            match ins {
                Some(v) => {
                    exp.insert(*id, v.into_iter().min().unwrap_or(NEVER_EXPIRES));
                    false
                }
                None => true,
            }
        });
        if pending.len() == before {
            // Not reachable for a verified package; unknown stays NEVER.
            break;
        }
    }
    exp
}

/// What the registry holds about a batch.
struct Known {
    horizon: i64,
    issues: BTreeSet<Vec<u8>>,
    settled: BTreeSet<Vec<u8>>,
    consumed: BTreeMap<(Vec<u8>, i64), Vec<u8>>,
}

/// One round trip for a batch of ordinary size (`UNION ALL` of the four
/// look-ups); larger batches take one query per look-up and chunk.
fn lookup(
    tx: &mut dyn Tx,
    issue_ids: &[Value],
    tids: &[Value],
    records: &[Value],
    epochs: &[Value],
) -> Result<Known, StoreError> {
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
    let mut k = Known {
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
pub(crate) fn select_in(
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

pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Multi-row `INSERT … VALUES (…), (…)` of `rows`, in chunks whose sizes
/// are powers of two (few distinct statements to prepare).
pub(crate) fn insert_rows<const N: usize>(
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

fn flush(
    tx: &mut dyn Tx,
    records: &mut Vec<[Value; 3]>,
    spent: &mut Vec<[Value; 4]>,
) -> Result<(), StoreError> {
    insert_rows(
        tx,
        "INSERT INTO settled_records (id, body, expiry_epoch)",
        records,
    )?;
    insert_rows(
        tx,
        "INSERT INTO spent (record, idx, expiry_epoch, consumed_by)",
        spent,
    )?;
    records.clear();
    spent.clear();
    Ok(())
}

/// Whether `spent` is PostgreSQL's range-partitioned layout (not the
/// hash-partitioned one of a distributed deployment).
fn range_partitioned(store: &Store) -> Result<bool, StoreError> {
    store.transact(|tx| {
        Ok(tx
            .query_one(
                "SELECT CAST(p.partstrat AS TEXT) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'spent' AND n.nspname = current_schema()",
                &[],
            )?
            .map(|r| r.text(0).map(|s| s == "r"))
            .transpose()?
            .unwrap_or(false))
    })
}
