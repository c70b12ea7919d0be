//! The settlement queue that several worker processes share on one
//! database (PostgreSQL for more than one process).
//!
//! Producers append packages (sealed to settlement, or plain, as the
//! caller's `prepare` step expects them). A worker claims a batch under a
//! lease (an optimisation only: it keeps workers off each other's rows),
//! opens and verifies it *outside* any transaction, then settles it in one
//! transaction that first re-reads which of its rows are still pending.
//! Exactly-once therefore rests on that transaction alone: a row is marked
//! done in the same SERIALIZABLE transaction that registers its package's
//! tokens, so two workers that hold the same row (a lease ran out, a
//! worker was presumed dead) cannot both settle it — the second one's
//! transaction conflicts, is retried, and finds the row done.

use std::time::{Duration, Instant};

use tally_core::VerifiedPackage;
use tally_store::{Store, StoreError, Tx, TxFailure};

use crate::db::{QueueResultRow, SettlementQueueDb};
use crate::ledger::Ledger;
use crate::settlement::{Settlement, SettlementError};

pub use crate::db::QUEUE_ID;

/// Most packages one worker claims and settles in one transaction.
pub const CLAIM_PACKAGES_MAX: usize = 1024;

/// Times a worker settles one prepared batch again after the store gave
/// up on serialization conflicts.
const SETTLE_GIVE_UPS_MAX: usize = 100;

/// Result code stored for a package that settled.
pub const SETTLED: i64 = 0;

/// A claimed queue row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub body: Vec<u8>,
}

/// What a worker's `prepare` step made of one claimed row: a verified
/// package, or the stable code of why it was refused (malformed, failed
/// to open, failed verification).
pub type Prepared = Result<VerifiedPackage, u16>;

/// What one settled batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows this worker settled (marked done) in this batch.
    pub settled: usize,
    /// Of them, refused (verification or settlement error code stored).
    pub refused: usize,
    /// Rows another worker had finished first (skipped).
    pub skipped: usize,
    pub registered: usize,
    pub double_spends: usize,
    /// Signature checks of the verified packages.
    pub signatures: usize,
}

pub struct SettlementQueue;

impl SettlementQueue {
    /// Appends packages; returns their ids.
    pub fn enqueue(tx: &mut dyn Tx, bodies: &[Vec<u8>]) -> Result<Vec<i64>, StoreError> {
        tx.enqueue(bodies)
    }

    /// Claims up to `max` pending rows whose lease ran out (or that were
    /// never claimed) for `lease` from `now_ms`: rows of lane `k` of `n`
    /// (`id % n = k`) first, then any.
    pub fn claim(
        store: &Store,
        worker: &str,
        lane: Option<(u32, u32)>,
        max: usize,
        now_ms: i64,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let max = max.clamp(1, CLAIM_PACKAGES_MAX);
        let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        store.transact_relaxed(|tx| {
            let max = max as i64;
            let mut ids = Vec::new();
            if let Some((k, n)) = lane {
                ids = tx.claimable_in_lane(now_ms, i64::from(n.max(1)), i64::from(k), max)?;
            }
            if ids.is_empty() {
                ids = tx.claimable(now_ms, max)?;
            }
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // The lease is re-checked row by row as it is taken: under READ
            // COMMITTED a concurrent claimer may have taken some since the
            // SELECT; those are not returned.
            let mut claimed = tx.take_lease(worker, until, now_ms, &ids)?;
            claimed.sort_by_key(|c| c.id);
            Ok(claimed)
        })
    }

    /// Settles prepared rows in one transaction: rows another worker
    /// finished are skipped, the rest are settled with
    /// [`Settlement::settle_batch`] (or have their refusal code stored),
    /// marked done, and their results written; the ledger's O(1)
    /// production assertion closes the transaction.
    pub fn settle(
        store: &Store,
        worker: &str,
        rows: &[(i64, Prepared)],
    ) -> Result<BatchReport, SettlementError> {
        store.transact(|tx| Self::settle_in(tx, worker, rows))
    }

    fn settle_in(
        tx: &mut dyn Tx,
        worker: &str,
        rows: &[(i64, Prepared)],
    ) -> Result<BatchReport, SettlementError> {
        let mut report = BatchReport::default();
        if rows.is_empty() {
            return Ok(report);
        }
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let pending = tx.pending_among(&ids)?;
        let mine: Vec<&(i64, Prepared)> =
            rows.iter().filter(|(id, _)| pending.contains(id)).collect();
        report.skipped = rows.len() - mine.len();
        if mine.is_empty() {
            return Ok(report);
        }
        let idems: Vec<String> = mine.iter().map(|(id, _)| format!("queue:{id}")).collect();
        let batch: Vec<(&VerifiedPackage, &str)> = mine
            .iter()
            .zip(&idems)
            .filter_map(|((_, p), idem)| p.as_ref().ok().map(|v| (v, idem.as_str())))
            .collect();
        let mut outcomes = Settlement::settle_batch(tx, &batch)?.into_iter();
        let mut results: Vec<QueueResultRow<'_>> = Vec::with_capacity(mine.len());
        for (id, p) in &mine {
            let (code, registered, already, doubles) = match p {
                Err(code) => (i64::from(*code), 0, 0, 0),
                Ok(v) => {
                    report.signatures += v.signature_checks();
                    match outcomes.next() {
                        Some(Ok(o)) => (SETTLED, o.registered, o.already, o.double_spends.len()),
                        Some(Err(e)) => (i64::from(e.code()), 0, 0, 0),
                        None => {
                            return Err(
                                StoreError::Type("settle_batch lost an outcome".into()).into()
                            );
                        }
                    }
                }
            };
            if code == SETTLED {
                report.registered += registered;
                report.double_spends += doubles;
            } else {
                report.refused += 1;
            }
            results.push(QueueResultRow {
                id: *id,
                code,
                registered: registered as i64,
                already: already as i64,
                double_spends: doubles as i64,
                settled_by: worker,
            });
        }
        let done_ids: Vec<i64> = mine.iter().map(|(id, _)| *id).collect();
        let n = tx.mark_done(&done_ids)?;
        // Read as pending in this transaction, so each must flip now.
        assert_eq!(
            n as usize,
            mine.len(),
            "a pending queue row was not marked done"
        );
        tx.insert_results(&results)?;
        Ledger::assert_invariant(tx)?;
        report.settled = mine.len();
        Ok(report)
    }

    /// Rows not done yet.
    pub fn pending(tx: &mut dyn Tx) -> Result<i64, StoreError> {
        tx.pending_count()
    }
}

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Names the worker in claims and results.
    pub name: String,
    /// `(k, n)`: prefer rows with `id % n = k`.
    pub lane: Option<(u32, u32)>,
    pub batch: usize,
    pub lease: Duration,
    /// Stop when the queue has no claimable row (else poll).
    pub until_empty: bool,
    pub poll: Duration,
    /// Full re-sum of the ledger (the periodic audit) this often.
    pub audit_every: Duration,
}

/// What a worker did in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub batches: usize,
    pub settled: usize,
    pub refused: usize,
    pub skipped: usize,
    pub registered: usize,
    pub double_spends: usize,
    pub signatures: usize,
    pub audits: usize,
    /// Clock (ms) at the first non-empty claim and after the last settled
    /// batch: the worker's busy interval.
    pub first_claim_ms: Option<i64>,
    pub last_settled_ms: Option<i64>,
}

/// A worker's `prepare` step: every claimed row opened and verified.
pub type PrepareFn<'a> = dyn FnMut(&[Claimed]) -> Result<Vec<Prepared>, StoreError> + 'a;

/// The worker loop: claim, `prepare` (open + verify, outside any
/// transaction), settle; the full audit every `audit_every` and at the end.
/// `prepare` answers every claimed row, or fails (e.g. the trust objects
/// could not be read), which stops the worker and leaves the rows to the
/// next claim after their lease.
pub fn run_worker(
    store: &Store,
    opts: &WorkerOptions,
    clock_ms: &dyn Fn() -> i64,
    prepare: &mut PrepareFn<'_>,
) -> Result<WorkerReport, SettlementError> {
    let mut total = WorkerReport::default();
    let mut last_audit = Instant::now();
    loop {
        let claimed = match SettlementQueue::claim(
            store,
            &opts.name,
            opts.lane,
            opts.batch,
            clock_ms(),
            opts.lease,
        ) {
            Err(StoreError::Conflict) => continue,
            other => other?,
        };
        if claimed.is_empty() {
            if opts.until_empty {
                break;
            }
            std::thread::sleep(opts.poll);
            continue;
        }
        total.first_claim_ms.get_or_insert_with(clock_ms);
        let prepared = prepare(&claimed)?;
        assert_eq!(
            prepared.len(),
            claimed.len(),
            "prepare must answer every row"
        );
        let rows: Vec<(i64, Prepared)> = claimed.iter().map(|c| c.id).zip(prepared).collect();
        // Conflicts after the store's own retries: the prepared batch is
        // still valid, so settle it again rather than give up on it.
        let mut gave_up = 0;
        let r = loop {
            match SettlementQueue::settle(store, &opts.name, &rows) {
                Err(e) if e.is_conflict() && gave_up < SETTLE_GIVE_UPS_MAX => gave_up += 1,
                other => break other?,
            }
        };
        total.batches += 1;
        total.settled += r.settled;
        total.refused += r.refused;
        total.skipped += r.skipped;
        total.registered += r.registered;
        total.double_spends += r.double_spends;
        total.signatures += r.signatures;
        total.last_settled_ms = Some(clock_ms());
        if last_audit.elapsed() >= opts.audit_every {
            store.transact(|tx| Ledger::audit(tx).map(|_| ()))?;
            total.audits += 1;
            last_audit = Instant::now();
        }
    }
    store.transact(|tx| Ledger::audit(tx).map(|_| ()))?;
    total.audits += 1;
    Ok(total)
}
