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

use std::fmt;
use tally_codes as codes;

use tally_core::codec::Cbor;
use tally_core::verify::VerifiedPackage;
use tally_core::{Hash32, Issue, OutPoint, PublicKey, Record, Transfer};
use tally_store::{Migrations, StoreError, Tx, TxFailure, Value};

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
    )],
};

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
    Ledger(LedgerError),
}

impl SettlementError {
    /// Stable code, registered in tally-codes (docs/CODES.md).
    pub fn code(&self) -> u16 {
        match self {
            SettlementError::UnknownIssue(_) => codes::SETTLEMENT_UNKNOWN_ISSUE,
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
        let p = pkg.package();
        // The verifier computed every record id; hashing them again would
        // re-encode every record.
        let ids = pkg.ancestry_ids();
        // Roots first: every Issue must be registered (check before writing).
        for (rec, id) in p.ancestry.iter().zip(ids) {
            if let Record::Issue(_) = rec {
                let id = *id;
                if tx
                    .query_one(
                        "SELECT value FROM issued WHERE id = $1",
                        &[id.0.as_slice().into()],
                    )?
                    .is_none()
                {
                    return Err(SettlementError::UnknownIssue(id));
                }
            }
        }
        let output_of = |op: &OutPoint| -> Option<tally_core::Output> {
            p.ancestry
                .iter()
                .zip(ids)
                .find(|(_, id)| **id == op.record)
                .and_then(|(r, _)| r.outputs().get(op.index as usize).copied())
        };
        let mut out = SettlementOutcome::default();
        let transfers = p
            .ancestry
            .iter()
            .zip(ids.iter().copied())
            .filter_map(|(r, id)| match r {
                Record::Transfer(t) => Some((t, id)),
                Record::Issue(_) => None,
            })
            .chain(std::iter::once((&p.transfer, pkg.transfer_id())));
        for (t, tid) in transfers {
            let tid_v: Value = tid.0.as_slice().into();
            // Insert-unless-present in one statement (one round trip fewer
            // than SELECT then INSERT; portable SQL, no ON CONFLICT). The
            // CASTs give PostgreSQL the parameter types.
            tx.execute(
                "INSERT INTO settled_records (id, body) SELECT CAST($1 AS BLOB), CAST($2 AS BLOB) WHERE NOT EXISTS (SELECT 1 FROM settled_records WHERE id = $1)",
                &[tid_v.clone(), t.to_cbor().into()],
            )?;
            for op in &t.inputs {
                let key = [
                    Value::Bytes(op.record.0.to_vec()),
                    Value::Int(i64::from(op.index)),
                ];
                // The common case, a first consumption, is one statement;
                // only an output consumed before is read back and judged.
                let inserted = tx.execute(
                    "INSERT INTO spent (record, idx, consumed_by) SELECT CAST($1 AS BLOB), CAST($2 AS BIGINT), CAST($3 AS BLOB) WHERE NOT EXISTS (SELECT 1 FROM spent WHERE record = $1 AND idx = $2)",
                    &[key[0].clone(), key[1].clone(), tid_v.clone()],
                )?;
                let consumer = match inserted {
                    1 => None,
                    0 => Some(
                        tx.query_one(
                            "SELECT consumed_by FROM spent WHERE record = $1 AND idx = $2",
                            &key,
                        )?
                        .ok_or_else(|| {
                            StoreError::Type("spent row neither inserted nor present".into())
                        })?,
                    ),
                    n => {
                        return Err(StoreError::Type(format!(
                            "{n} spent rows inserted for one output"
                        ))
                        .into());
                    }
                };
                match consumer {
                    None => out.registered += 1,
                    Some(r) if r.bytes(0)? == tid.0.as_slice() => out.already += 1,
                    Some(r) => {
                        let first_id = r.bytes(0)?.to_vec();
                        let known = tx.query_one(
                            "SELECT seq FROM double_spends WHERE record = $1 AND idx = $2 AND second_record = $3",
                            &[key[0].clone(), key[1].clone(), tid_v.clone()],
                        )?;
                        if known.is_some() {
                            continue;
                        }
                        // The first consumer is a settled record, or none when
                        // the output was consumed by interrupted-payment
                        // recovery (`consume_stranded`): the payee was
                        // re-credited and the stranded token spent anyway.
                        let first = match tx.query_one(
                            "SELECT body FROM settled_records WHERE id = $1",
                            &[first_id.clone().into()],
                        )? {
                            Some(row) => Some(
                                Transfer::from_cbor(row.bytes(0)?)
                                    .map_err(|e| StoreError::Type(format!("stored record: {e}")))?,
                            ),
                            None => None,
                        };
                        // The verifier resolved every input, so the output exists.
                        let o = output_of(op)
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
                                first_id.into(),
                                tid_v.clone(),
                                o.owner.to_cbor().into(),
                                Value::Int(i64::try_from(o.value.0).map_err(|_| LedgerError::Overflow)?),
                            ],
                        )?;
                        out.loss_booked = out
                            .loss_booked
                            .checked_add(o.value.0)
                            .ok_or(LedgerError::Overflow)?;
                        out.double_spends.push(DoubleSpend {
                            outpoint: *op,
                            first,
                            second: t.clone(),
                            offender: o.owner,
                            value: o.value.0,
                        });
                    }
                }
            }
        }
        if out.loss_booked > 0 {
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
        Ok(out)
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
        tx.execute(
            "INSERT INTO spent (record, idx, consumed_by) VALUES ($1, $2, $3)",
            &[key[0].clone(), key[1].clone(), by.0.as_slice().into()],
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
