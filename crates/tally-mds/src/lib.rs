//! Monitoring & Detection (MDS): the central bank's view of offline money.
//!
//! The MDS owns the token graph — which record created which output, who
//! (as a pseudonym key id) owns it, its amount, and which record consumed
//! it — built from the records settlement has already judged. It never
//! sees identities: no SE ids, no accounts, only pseudonym key ids and
//! amounts (DESIGN.md §1, §5). Records come from settlement, never via the
//! DCP.
//!
//! Detectors run inside the ingest transaction, so an alert is visible as
//! soon as the batch that proves it commits. The store is the truth and is
//! written append-only: records (with payer / payee pseudonym ids,
//! amounts, epoch, depth), outputs, consumption edges, alerts and their
//! lifecycle log, per-epoch payment totals, counters. The lookups detection
//! needs (output → owner, value, first consumer; pseudonym × epoch →
//! activity) live in maps rebuilt from those tables whenever the MDS
//! opens; a batch changes them in place and puts them back if its
//! transaction does not commit (see `graph.rs` for why: hash-keyed B-tree lookups bound SQLite at a few
//! thousand records per second). Memory: about 150 bytes per output and
//! 60 per record, plus the activity of the pseudonyms seen (a payment
//! stream adds its payer half, one more output, and its terms).
//!
//! * double spend — an output consumed by a second, different record, at
//!   any depth of any ancestry (every record of every settled ancestry is
//!   ingested once, so an ancestry's middle is seen like its leaf);
//! * counterfeit — a record settlement refused (its verifier code), an
//!   Issue by an unknown issuer, a transfer that does not conserve value,
//!   a transfer spending an output of a counterfeit record;
//! * payment streams (decision 0020) — an OPEN's payer half is an output
//!   outside the holdings, a close conserves when it pays what its ticks
//!   say, a half closed twice is a double spend, and a claim of more
//!   ticks than the refund says were released is a stream overclaim;
//! * AML — structuring (many payments just under the per-payment limit),
//!   fan-out, fan-in and velocity per pseudonym and epoch.
//!
//! Indicators (see [`Indicators`]) are kept as counters updated in the same
//! transaction, once per batch.
//!
//! Every SQL statement is in [`db`] (the trait [`db::MdsDb`], one
//! implementation for both backends; tests/db_conformance.rs keeps it
//! there).

use std::fmt;
use std::sync::Mutex;
use tally_codes as codes;

use tally_core::crypto::tagged_hash;
use tally_core::{Epoch, Hash32, OutPoint, Record};
use tally_store::{Store, StoreError, TxFailure};

mod alert;
pub mod db;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod graph;
mod indicators;

pub use alert::{Alert, AlertKind, AlertState, Severity};
pub use db::MIGRATIONS;
use db::{AlertEvent, MdsDb, OpenRequest, SetAside};
pub use graph::AMOUNT_STORED_MAX;
pub use indicators::{EpochPayments, Indicators};

/// Most records in one [`Mds::ingest`] call (one transaction).
pub const INGEST_BATCH_RECORDS_MAX: usize = 10_000;
/// Most record ids listed as evidence of one AML alert.
pub const ALERT_EVIDENCE_RECORDS_MAX: usize = 64;
/// Device class of an output whose owner's class settlement did not know.
pub const DEVICE_CLASS_UNKNOWN: u8 = 0;

/// Detection thresholds and the scheme facts the MDS needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdsConfig {
    /// Key ids of the DCP issuing keys the root certified.
    pub known_issuers: Vec<Hash32>,
    /// Key ids of DCP redemption keys: an output paying one of them is
    /// value returned to the DCP (renewal or unload), no longer offline.
    pub redemption_keys: Vec<Hash32>,
    /// The policy's per-payment limit (minor units).
    pub payment_max: u64,
    /// A payment within this many percent under the limit counts as "just
    /// under the limit".
    pub structuring_margin_percent: u64,
    /// That many near-limit payments by one pseudonym in one epoch raise a
    /// structuring alert.
    pub structuring_payments_min: u64,
    /// That many distinct payees of one pseudonym in one epoch raise a
    /// fan-out alert.
    pub fan_out_min: u64,
    /// That many distinct payers of one pseudonym in one epoch raise a
    /// fan-in alert.
    pub fan_in_min: u64,
    /// That many payments by one pseudonym in one epoch raise a velocity
    /// alert.
    pub velocity_payments_min: u64,
}

impl MdsConfig {
    /// Thresholds suited to the testkit scheme: structuring at 5 payments
    /// within 10 % under the limit, fan-out / fan-in at 20 counterparties,
    /// velocity at 40 payments per pseudonym and epoch.
    pub fn new(known_issuers: Vec<Hash32>, redemption_keys: Vec<Hash32>, payment_max: u64) -> Self {
        MdsConfig {
            known_issuers,
            redemption_keys,
            payment_max,
            structuring_margin_percent: 10,
            structuring_payments_min: 5,
            fan_out_min: 20,
            fan_in_min: 20,
            velocity_payments_min: 40,
        }
    }
    fn near_limit(&self, v: u64) -> bool {
        let floor = u128::from(self.payment_max)
            * u128::from(100u64.saturating_sub(self.structuring_margin_percent));
        v <= self.payment_max && u128::from(v) * 100 >= floor
    }
}

/// Settlement's verdict on a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Settlement verified it (signatures, certificates, conservation).
    Verified,
    /// Settlement refused it: the stable code of its verifier
    /// (`VerifyError::code`) or settlement error.
    Refused(u16),
}

/// One record as settlement hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRecord {
    pub id: Hash32,
    pub record: Record,
    /// Settlement epoch in which it was settled.
    pub epoch: Epoch,
    pub verdict: Verdict,
    /// Device class of each output's owner as its pseudonym certificate
    /// says (same order as the outputs); missing entries are
    /// [`DEVICE_CLASS_UNKNOWN`]. Outputs to redemption keys are counted as
    /// [`device_class::DCP`].
    pub output_classes: Vec<u8>,
    /// Epochs the uploading device had been offline when it synced this
    /// record (settlement epoch − its previous sync epoch), if known.
    pub offline_epochs: Option<u32>,
    /// The payer uploaded this transfer without the payee's receipt
    /// (interrupted payment): pair it with the payee's open request.
    pub unacknowledged: bool,
}

impl IngestRecord {
    pub fn new(record: Record, epoch: Epoch, verdict: Verdict) -> Self {
        IngestRecord {
            id: record.id(),
            record,
            epoch,
            verdict,
            output_classes: Vec::new(),
            offline_epochs: None,
            unacknowledged: false,
        }
    }
}

/// An interrupted payment matched from both sides: the payee's open
/// request and the payer's unacknowledged transfer. The DCP credits the
/// payee `amount` once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    pub payee: Hash32,
    pub nonce: [u8; 16],
    pub transfer: Hash32,
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    /// Records new to the MDS.
    pub ingested: usize,
    /// Records it had already (idempotent replay).
    pub duplicates: usize,
    /// Alerts this batch raised.
    pub alerts: Vec<Alert>,
    /// Interrupted payments this batch paired.
    pub pairings: Vec<Pairing>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MdsError {
    Store(StoreError),
    /// A verified transfer spends an output of a record the MDS never
    /// ingested: settlement must hand over ancestries parents first.
    UnknownInput(OutPoint),
    BatchTooLarge {
        records: usize,
        max: usize,
    },
    Overflow,
    /// A record whose output amounts (one, or their sum) exceed what the
    /// MDS stores ([`AMOUNT_STORED_MAX`]); nothing of its batch was kept.
    AmountOutOfRange {
        record: Hash32,
    },
    AlertNotFound(i64),
    IllegalTransition {
        alert: i64,
        from: AlertState,
        to: AlertState,
    },
    /// A stored row that this code did not write that way.
    Corrupt(String),
}

impl MdsError {
    /// Stable code, registered in tally-codes (docs/CODES.md): 3000–3099,
    /// apart from every other component's (they share `ingestion_failed`
    /// alerts with the verifier's 101).
    pub fn code(&self) -> u16 {
        match self {
            MdsError::Store(_) => codes::MDS_STORE,
            MdsError::UnknownInput(_) => codes::MDS_UNKNOWN_INPUT,
            MdsError::BatchTooLarge { .. } => codes::MDS_BATCH_TOO_LARGE,
            MdsError::Overflow => codes::MDS_OVERFLOW,
            MdsError::AmountOutOfRange { .. } => codes::MDS_AMOUNT_OUT_OF_RANGE,
            MdsError::AlertNotFound(_) => codes::MDS_ALERT_NOT_FOUND,
            MdsError::IllegalTransition { .. } => codes::MDS_ILLEGAL_TRANSITION,
            MdsError::Corrupt(_) => codes::MDS_CORRUPT,
        }
    }

    /// The batch's content is at fault, not the MDS: ingesting the same
    /// records again fails the same way (a feeder sets them aside, see
    /// [`Mds::set_aside`]). Store failures and corrupt state are the
    /// MDS's own and worth retrying.
    pub fn is_content_fault(&self) -> bool {
        matches!(
            self,
            MdsError::UnknownInput(_)
                | MdsError::BatchTooLarge { .. }
                | MdsError::Overflow
                | MdsError::AmountOutOfRange { .. }
        )
    }
}

impl fmt::Display for MdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MdsError::Store(e) => write!(f, "{e}"),
            MdsError::UnknownInput(op) => write!(
                f,
                "input {}:{} refers to a record the MDS has not ingested (ingest parents first)",
                op.record, op.index
            ),
            MdsError::BatchTooLarge { records, max } => {
                write!(f, "batch of {records} records exceeds {max}")
            }
            MdsError::Overflow => f.write_str("amount overflow"),
            MdsError::AmountOutOfRange { record } => write!(
                f,
                "record {record} has output amounts past {AMOUNT_STORED_MAX} (one or in total)"
            ),
            MdsError::AlertNotFound(id) => write!(f, "no alert {id}"),
            MdsError::IllegalTransition { alert, from, to } => {
                write!(f, "alert {alert} cannot move from {from} to {to}")
            }
            MdsError::Corrupt(m) => write!(f, "corrupt MDS row: {m}"),
        }
    }
}

impl std::error::Error for MdsError {}

impl From<StoreError> for MdsError {
    fn from(e: StoreError) -> Self {
        MdsError::Store(e)
    }
}

impl TxFailure for MdsError {
    fn is_conflict(&self) -> bool {
        matches!(self, MdsError::Store(StoreError::Conflict))
    }
}

/// The monitoring and detection service over one store. One `Mds` (one
/// process) writes a given store: its lookup maps are private to it.
pub struct Mds {
    store: Store,
    config: MdsConfig,
    hot: Mutex<graph::HotState>,
}

/// `v` as the MDS stores amounts and counts (BIGINT): at most
/// [`AMOUNT_STORED_MAX`].
pub(crate) fn stored(v: u64) -> Result<i64, MdsError> {
    i64::try_from(v).map_err(|_| MdsError::Overflow)
}

pub(crate) fn hash_of(b: &[u8]) -> Result<Hash32, MdsError> {
    let a: [u8; 32] = b
        .try_into()
        .map_err(|_| MdsError::Corrupt(format!("hash of {} bytes", b.len())))?;
    Ok(Hash32(a))
}

impl Mds {
    /// Opens the MDS over `store`, applying its migrations.
    pub fn open(store: Store, config: MdsConfig) -> Result<Mds, MdsError> {
        store.migrate(&[&MIGRATIONS])?;
        let hot = store.transact(|tx| graph::HotState::load(tx, &config))?;
        Ok(Mds {
            store,
            config,
            hot: Mutex::new(hot),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Closes the MDS and hands its store back, so a restart can be
    /// replayed over a store that cannot be opened twice (SQLite in
    /// memory): [`Mds::open`] rebuilds everything from it.
    pub fn into_store(self) -> Store {
        self.store
    }

    pub fn config(&self) -> &MdsConfig {
        &self.config
    }

    /// Ingests settled records in one transaction, parents before
    /// children (a batch may hold whole ancestries in settlement's order).
    /// Records already ingested are skipped, so replaying a batch is a
    /// no-op.
    pub fn ingest(&self, batch: &[IngestRecord]) -> Result<IngestOutcome, MdsError> {
        if batch.len() > INGEST_BATCH_RECORDS_MAX {
            return Err(MdsError::BatchTooLarge {
                records: batch.len(),
                max: INGEST_BATCH_RECORDS_MAX,
            });
        }
        let mut hot = self
            .hot
            .lock()
            .map_err(|_| MdsError::Corrupt("a previous ingest panicked".into()))?;
        let hot = &mut *hot;
        let mut undo = graph::Undo::default();
        let committed = self.store.transact(|tx| {
            // A retried attempt starts from the maps as last committed.
            undo.rollback(hot);
            tx.prepare_ingest()?;
            let next_alert = tx.last_alert_id()?;
            let mut b = graph::Batch::new(&self.config, hot, &mut undo, next_alert);
            for r in batch {
                b.ingest_one(tx, r)?;
            }
            b.flush(tx)?;
            Ok::<_, MdsError>(b.out)
        });
        if committed.is_err() {
            // Not committed: the maps follow the store.
            undo.rollback(hot);
        }
        committed
    }

    /// The id under which [`Mds::set_aside`] keeps `body`.
    pub fn set_aside_id(body: &[u8]) -> Hash32 {
        tagged_hash(b"tally/v1/mds-set-aside", &[body])
    }

    /// Sets aside `body` (an outbox row, or one record of it, in the
    /// feeder's encoding), which ingestion refused with error `code`, and
    /// raises an [`AlertKind::IngestionFailed`] alert (epoch `epoch`,
    /// subject [`Mds::set_aside_id`], amount `code`; no offender, no
    /// evidence records: it names no device, account or pseudonym). The
    /// feeder then drops the row, so the rows after it keep flowing.
    /// Setting the same body aside again returns the first alert.
    pub fn set_aside(&self, body: &[u8], code: u16, epoch: Epoch) -> Result<Alert, MdsError> {
        let id = Self::set_aside_id(body);
        // Alert ids are allocated under the ingest lock (one writer).
        let _hot = self
            .hot
            .lock()
            .map_err(|_| MdsError::Corrupt("a previous ingest panicked".into()))?;
        self.store.transact(|tx| {
            if let Some(a) = tx.set_aside_alert(&id)? {
                return Ok(a);
            }
            let next = tx
                .last_alert_id()?
                .checked_add(1)
                .ok_or(MdsError::Overflow)?;
            let kind = AlertKind::IngestionFailed;
            let a = Alert {
                id: next,
                kind,
                severity: kind.severity(),
                state: AlertState::Open,
                epoch,
                subject: id,
                offender: None,
                records: Vec::new(),
                amount: u64::from(code),
                outpoint: None,
            };
            tx.insert_alert(&a)?;
            tx.insert_set_aside(&SetAside {
                id,
                alert: next,
                code,
                epoch,
                body,
            })?;
            Ok(a)
        })
    }

    /// How many rows ingestion has set aside so far.
    pub fn set_aside_count(&self) -> Result<u64, MdsError> {
        self.store.transact(|tx| tx.set_aside_count())
    }

    /// The bytes set aside under `id` (an analyst's evidence).
    pub fn set_aside_body(&self, id: &Hash32) -> Result<Option<Vec<u8>>, MdsError> {
        self.store.transact(|tx| tx.set_aside_body(id))
    }

    /// The payee's side of an interrupted payment: its SE closed the
    /// request `nonce` for `amount` to pseudonym `payee` without receiving
    /// the package. Pairs it with an unacknowledged transfer already
    /// ingested, or waits for one. Reporting twice is a no-op.
    pub fn report_open_request(
        &self,
        payee: Hash32,
        nonce: [u8; 16],
        amount: u64,
        epoch: Epoch,
    ) -> Result<Option<Pairing>, MdsError> {
        self.store.transact(|tx| {
            if let Some(existing) = tx.open_request(&payee, &nonce)? {
                return Ok(existing.paired_with.map(|transfer| Pairing {
                    payee,
                    nonce,
                    transfer,
                    amount: existing.amount,
                }));
            }
            let transfer = tx.unpaired_transfer(&payee, &nonce, amount)?;
            tx.insert_open_request(&OpenRequest {
                payee,
                nonce,
                amount,
                epoch,
                paired_with: transfer,
            })?;
            Ok(transfer.map(|transfer| Pairing {
                payee,
                nonce,
                transfer,
                amount,
            }))
        })
    }

    /// Every alert, oldest first.
    pub fn alerts(&self) -> Result<Vec<Alert>, MdsError> {
        self.store.transact(|tx| tx.alerts())
    }

    pub fn alert(&self, id: i64) -> Result<Alert, MdsError> {
        self.store
            .transact(|tx| tx.alert(id)?.ok_or(MdsError::AlertNotFound(id)))
    }

    /// Moves an alert along its lifecycle, recording the step and `note`
    /// (who decided, which order) in the alert's event log.
    pub fn transition(&self, id: i64, to: AlertState, note: &str) -> Result<Alert, MdsError> {
        self.store.transact(|tx| {
            let mut a = tx.alert(id)?.ok_or(MdsError::AlertNotFound(id))?;
            if !a.state.can_move_to(to) {
                return Err(MdsError::IllegalTransition {
                    alert: id,
                    from: a.state,
                    to,
                });
            }
            let seq = tx.alert_event_count(id)? + 1;
            tx.insert_alert_event(
                id,
                seq,
                &AlertEvent {
                    from: a.state,
                    to,
                    note: note.to_string(),
                },
            )?;
            if !tx.move_alert(id, a.state, to)? {
                return Err(MdsError::Corrupt(format!("alert {id} state changed")));
            }
            a.state = to;
            Ok(a)
        })
    }

    /// The lifecycle log of one alert: `(from, to, note)` in order.
    pub fn alert_events(&self, id: i64) -> Result<Vec<(AlertState, AlertState, String)>, MdsError> {
        self.store.transact(|tx| {
            Ok(tx
                .alert_events(id)?
                .into_iter()
                .map(|e| (e.from, e.to, e.note))
                .collect())
        })
    }

    /// The econometric indicators, read from the counters in one
    /// transaction.
    pub fn indicators(&self) -> Result<Indicators, MdsError> {
        self.store.transact(indicators::read)
    }
}
