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
use tally_core::confidential_record::AuditedIssue;
use tally_core::stream::{STREAM_REFUND_FLAG, StreamPart};
use tally_core::verify::VerifiedPackage;
use tally_core::{Hash32, Issue, OutPoint, PublicKey, Record, Transfer};
use tally_store::{Store, StoreError, Tx, TxFailure};

use crate::db::{DoubleSpendRow, NewSettledRecord, NewSpent, SettlementDb};
use crate::ledger::{self, Ledger, LedgerError, TransferRequest};

pub use crate::db::{SETTLEMENT_MIGRATIONS as MIGRATIONS, spent_hash_layout_ddl};

/// Expiry epoch of tokens whose expiry is not known (registered before
/// expiries were recorded, or consumed by recovery with no ancestry at
/// hand): never pruned. Every registry look-up includes it.
pub const NEVER_EXPIRES: i64 = 1 << 62;
/// Expiry epochs per PostgreSQL partition of the spent registry.
pub const SPENT_PARTITION_EPOCHS: i64 = 16;
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
    /// Value booked from the loss account to the float for them (and for
    /// stream overclaims).
    pub loss_booked: u64,
    /// Stream closes that, with the other half's close settled before,
    /// claim ticks the payer refunded (decision 0020): `(claim ticks −
    /// refund ticks) · price` each, booked as a loss.
    pub stream_overclaims: Vec<StreamOverclaim>,
}

/// The two closes of one stream disagree: the payee's claim counts more
/// ticks than the payer's refund says were released. Only a broken or
/// cloned SE can sign either that way (THREATS T71); the excess is value
/// the two tokens hold beyond what the OPEN locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOverclaim {
    /// The OPEN transfer.
    pub open: Hash32,
    pub claim_ticks: u32,
    pub refund_ticks: u32,
    pub excess: u64,
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
    /// A confidential Issue or package: its amounts are commitments, and
    /// settlement books amounts only from their openings (which travel in
    /// the sealed uploads, not yet wired): refused rather than booked as
    /// zero.
    ConfidentialUnopened(Hash32),
    /// Rule C7: a confidential record's audit seal does not open with
    /// settlement's key, or an opening does not open its commitment, is
    /// out of range, or a transfer's opened values do not balance.
    /// Refused before anything is written; the MDS gets an alert.
    AuditOpeningInvalid(Hash32),
    Ledger(LedgerError),
}

impl SettlementError {
    /// Stable code, registered in tally-codes (docs/CODES.md).
    pub fn code(&self) -> u16 {
        match self {
            SettlementError::UnknownIssue(_) => codes::SETTLEMENT_UNKNOWN_ISSUE,
            SettlementError::BeyondHorizon { .. } => codes::SETTLEMENT_BEYOND_HORIZON,
            SettlementError::ConfidentialUnopened(_) => codes::SETTLEMENT_CONFIDENTIAL_UNOPENED,
            SettlementError::AuditOpeningInvalid(_) => codes::SETTLEMENT_AUDIT_OPENING_INVALID,
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
            SettlementError::ConfidentialUnopened(id) => write!(
                f,
                "record {id} has confidential amounts and no openings: not booked"
            ),
            SettlementError::AuditOpeningInvalid(id) => write!(
                f,
                "C7: the audit openings of record {id} do not open, match its commitments, fit the range or balance"
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
    /// A confidential Issue is refused here (code 33): it is registered
    /// through [`Settlement::register_audited_issue`], from its openings.
    pub fn register_issue(tx: &mut dyn Tx, dcp: u32, issue: &Issue) -> Result<(), SettlementError> {
        let id = issue.id();
        if issue.confidential.is_some() {
            return Err(SettlementError::ConfidentialUnopened(id));
        }
        Self::register_valued_issue(tx, dcp, issue)
    }

    /// Registers a confidential Issue whose audit seal settlement opened
    /// (rule C7, [`Issue::open_audit`]): its value is the sum of the
    /// openings. The stored body keeps the commitments.
    pub fn register_audited_issue(
        tx: &mut dyn Tx,
        dcp: u32,
        issue: &AuditedIssue,
    ) -> Result<(), SettlementError> {
        Self::register_valued_issue(tx, dcp, issue.issue())
    }

    fn register_valued_issue(
        tx: &mut dyn Tx,
        dcp: u32,
        issue: &Issue,
    ) -> Result<(), SettlementError> {
        let id = issue.id();
        if tx.issued(&id)?.is_some() {
            return Ok(());
        }
        let value: u64 = issue.outputs.iter().map(|o| o.value.0).sum();
        tx.insert_issued(
            &id,
            i64::try_from(value).map_err(|_| LedgerError::Overflow)?,
            dcp,
            &issue.to_cbor(),
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
        let mut issue_ids: Vec<Hash32> = Vec::new();
        let mut tids: Vec<Hash32> = Vec::new();
        let mut records: Vec<Hash32> = Vec::new();
        let mut epochs: BTreeSet<i64> = BTreeSet::from([NEVER_EXPIRES]);
        for (i, (p, _)) in batch.iter().enumerate() {
            for (rec, id) in p.package().ancestry.iter().zip(p.ancestry_ids()) {
                if let Record::Issue(_) = rec {
                    issue_ids.push(*id);
                }
            }
            for (t, tid) in transfers_of(p) {
                tids.push(tid);
                for op in &t.inputs {
                    records.push(op.record);
                    epochs.insert(
                        expiries[i]
                            .get(&op.record)
                            .copied()
                            .unwrap_or(NEVER_EXPIRES),
                    );
                }
            }
        }
        let epochs: Vec<i64> = epochs.into_iter().collect();
        let known = tx.registry_view(&issue_ids, &tids, &records, &epochs)?;
        let horizon = known.horizon;
        let mut settled = known.settled;
        let mut consumed = known.consumed;

        for (i, (p, _)) in batch.iter().enumerate() {
            // Amounts are booked from clear values: a confidential record's
            // are commitments (zero in memory) until settlement opened its
            // audit seal (C7, `VerifiedPackage::open_audit`); an unopened
            // one is refused before writing.
            let confidential = if p.amounts_opened() {
                None
            } else {
                p.package()
                    .ancestry
                    .iter()
                    .zip(p.ancestry_ids())
                    .find(|(rec, _)| rec.is_confidential())
                    .map(|(_, id)| *id)
                    .or_else(|| {
                        p.package()
                            .transfer
                            .confidential
                            .is_some()
                            .then(|| p.transfer_id())
                    })
            };
            if let Some(id) = confidential {
                results[i] = Some(Err(SettlementError::ConfidentialUnopened(id)));
                continue;
            }
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
        let mut new_records: Vec<NewSettledRecord> = Vec::new();
        let mut new_spent: Vec<NewSpent> = Vec::new();
        for &i in &accepted {
            let (p, idem) = batch[i];
            let mut out = SettlementOutcome::default();
            let exp = &expiries[i];
            for (t, tid) in transfers_of(p) {
                let tid_bytes = tid.0.to_vec();
                if settled.insert(tid_bytes.clone()) {
                    new_records.push(NewSettledRecord {
                        id: tid_bytes.clone(),
                        body: t.to_cbor(),
                        expiry_epoch: exp.get(&tid).copied().unwrap_or(NEVER_EXPIRES),
                    });
                }
                for op in &t.inputs {
                    let key = (op.record.0.to_vec(), i64::from(op.index));
                    match consumed.get(&key) {
                        None => {
                            new_spent.push(NewSpent {
                                record: key.0.clone(),
                                idx: key.1,
                                expiry_epoch: exp.get(&op.record).copied().unwrap_or(NEVER_EXPIRES),
                                consumed_by: tid_bytes.clone(),
                            });
                            consumed.insert(key, tid_bytes.clone());
                            out.registered += 1;
                            // A stream half's close: against the other
                            // half's, if that one settled before.
                            let other = (
                                op.record.0.to_vec(),
                                i64::from(op.index ^ STREAM_REFUND_FLAG),
                            );
                            if t.stream.is_some()
                                && let Some(other_id) = consumed.get(&other).cloned()
                            {
                                flush(tx, &mut new_records, &mut new_spent)?;
                                if let Some(o) = Self::stream_overclaim(tx, p, op, t, &other_id)? {
                                    out.loss_booked = out
                                        .loss_booked
                                        .checked_add(o.excess)
                                        .ok_or(LedgerError::Overflow)?;
                                    out.stream_overclaims.push(o);
                                }
                            }
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

    /// The stream close `t` (consuming the half `op`) against the other
    /// half's close `other_id`, settled before: the claim's ticks above the
    /// refund's, if any (decision 0020; the verifier checked each close on
    /// its own, SV2–SV4).
    fn stream_overclaim(
        tx: &mut dyn Tx,
        p: &VerifiedPackage,
        op: &OutPoint,
        t: &Transfer,
        other_id: &[u8],
    ) -> Result<Option<StreamOverclaim>, SettlementError> {
        let ticks = |part: Option<&StreamPart>| match part {
            Some(StreamPart::Claim { ticks, .. }) => Some((true, *ticks)),
            Some(StreamPart::Refund { ticks }) => Some((false, *ticks)),
            _ => None,
        };
        let Some((mine_is_claim, mine)) = ticks(t.stream.as_deref()) else {
            return Ok(None);
        };
        // The other half may have been consumed by interrupted-payment
        // recovery (no body): nothing to compare.
        let Some(body) = tx.settled_record_body(other_id)? else {
            return Ok(None);
        };
        let other = Transfer::from_cbor(&body)
            .map_err(|e| StoreError::Type(format!("stored record: {e}")))?;
        let Some((other_is_claim, theirs)) = ticks(other.stream.as_deref()) else {
            return Ok(None);
        };
        if mine_is_claim == other_is_claim {
            return Ok(None);
        }
        let (claim_ticks, refund_ticks) = if mine_is_claim {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        if claim_ticks <= refund_ticks {
            return Ok(None);
        }
        // The OPEN is in the package's ancestry (the verifier resolved it).
        let price = p
            .package()
            .ancestry
            .iter()
            .zip(p.ancestry_ids())
            .find(|(_, id)| **id == op.record)
            .and_then(|(r, _)| r.stream_open())
            .map(|terms| terms.ask.price.0)
            .ok_or_else(|| StoreError::Type("stream OPEN not in ancestry".into()))?;
        let excess = price
            .checked_mul(u64::from(claim_ticks - refund_ticks))
            .ok_or(LedgerError::Overflow)?;
        Ok(Some(StreamOverclaim {
            open: op.record,
            claim_ticks,
            refund_ticks,
            excess,
        }))
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
        if tx.double_spend_known(&op.record, i64::from(op.index), &tid)? {
            return Ok(None);
        }
        // The first consumer is a settled record, or none when the output
        // was consumed by interrupted-payment recovery (`consume_stranded`):
        // the payee was re-credited and the stranded token spent anyway.
        let first = match tx.settled_record_body(first_id)? {
            Some(body) => Some(
                Transfer::from_cbor(&body)
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
            .and_then(|(r, _)| {
                let half = r
                    .stream_open()
                    .is_some_and(|x| x.index == op.index & !tally_core::stream::STREAM_REFUND_FLAG);
                r.spendable(op.index).map(|o| (o, half))
            })
            .ok_or_else(|| StoreError::Type("input not in ancestry".into()))?;
        // A stream half closed twice: the second close creates what it
        // pays (a close has one input), not the whole stream's value.
        let (mut o, stream) = o;
        if stream && t.stream.is_some() {
            o.value = tally_core::Amount::sum(t.outputs.iter().map(|x| x.value))
                .ok_or(LedgerError::Overflow)?;
        }
        let seq = tx.last_double_spend_seq()? + 1;
        tx.insert_double_spend(&DoubleSpendRow {
            seq,
            record: op.record,
            idx: i64::from(op.index),
            first_record: first_id.to_vec(),
            second_record: tid,
            offender_key: o.owner.to_cbor(),
            value: i64::try_from(o.value.0).map_err(|_| LedgerError::Overflow)?,
        })?;
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
        Ok(tx.spent_horizon()?)
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
            let exists = store.transact(|tx| tx.relation_exists(&name))?;
            if exists {
                continue;
            }
            let made = store
                .transact(|tx| tx.create_spent_partition(&name, lo, lo + SPENT_PARTITION_EPOCHS));
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
            tx.set_spent_horizon(h)?;
            Ok::<_, SettlementError>(h)
        })?;
        let mut dropped = 0;
        if store.backend() == "postgres" && range_partitioned(store)? {
            let parts = store.transact(|tx| tx.spent_partitions())?;
            for name in parts {
                let Some(lo) = name
                    .strip_prefix("spent_e")
                    .and_then(|x| x.parse::<i64>().ok())
                else {
                    continue;
                };
                if lo + SPENT_PARTITION_EPOCHS <= horizon {
                    store.transact(|tx| tx.drop_spent_partition(&name))?;
                    dropped += 1;
                }
            }
        }
        let deleted = store.transact(|tx| {
            let n = tx.delete_spent_before(horizon)?;
            tx.delete_settled_records_before(horizon)?;
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
        if tx.spent_consumer(op)?.is_some() {
            return Ok(false);
        }
        // The stranded output belongs to a settled transfer, whose outputs'
        // expiry was recorded with it; otherwise it is never pruned.
        let expiry = tx
            .settled_record_expiry(&op.record)?
            .unwrap_or(NEVER_EXPIRES);
        tx.insert_spent(&NewSpent {
            record: op.record.0.to_vec(),
            idx: i64::from(op.index),
            expiry_epoch: expiry,
            consumed_by: by.0.to_vec(),
        })?;
        Ok(true)
    }

    pub fn is_spent(tx: &mut dyn Tx, op: &OutPoint) -> Result<Option<Hash32>, SettlementError> {
        Ok(tx.spent_consumer(op)?)
    }

    pub fn double_spend_count(tx: &mut dyn Tx) -> Result<i64, SettlementError> {
        Ok(tx.double_spend_count()?)
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

/// Writes what a batch has pending (settled records, consumptions).
fn flush(
    tx: &mut dyn Tx,
    records: &mut Vec<NewSettledRecord>,
    spent: &mut Vec<NewSpent>,
) -> Result<(), StoreError> {
    tx.insert_settled(records, spent)?;
    records.clear();
    spent.clear();
    Ok(())
}

/// Whether `spent` is PostgreSQL's range-partitioned layout (not the
/// hash-partitioned one of a distributed deployment).
fn range_partitioned(store: &Store) -> Result<bool, StoreError> {
    store.transact(|tx| tx.spent_range_partitioned())
}
