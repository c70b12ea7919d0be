//! Alerts: what a detector found, its evidence, and the lifecycle a case
//! follows (open → escrow opened → device revoked → closed).

use std::fmt;

use tally_core::Hash32;

/// What a detector found. Codes are stable (stored, exported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// One output consumed by two different records.
    DoubleSpend,
    /// Settlement's verifier refused the record (its code is in `code`).
    CounterfeitRefused,
    /// A transfer whose outputs do not add up to its inputs.
    NonConserving,
    /// An Issue signed by a key that is not a known issuer.
    UnknownIssuer,
    /// A transfer spending an output of a counterfeit record.
    CounterfeitDescendant,
    /// Both halves of one payment stream closed, and the payee's claim
    /// took more ticks than the payer's refund says were released
    /// (decision 0020): only a broken or cloned payer SE refunds ticks it
    /// had released (or a broken payee SE claims ticks it never got).
    /// `amount` is the excess, `(claim ticks − refund ticks) · price`.
    StreamOverclaim,
    /// Many payments just under the per-payment limit by one pseudonym in
    /// one epoch.
    Structuring,
    /// One pseudonym paying many distinct payees in one epoch.
    FanOut,
    /// One pseudonym paid by many distinct payers in one epoch.
    FanIn,
    /// One pseudonym making many payments in one epoch.
    Velocity,
    /// An outbox row (or one record of it) the MDS could not ingest was
    /// set aside so later rows keep flowing: an analyst must look at it
    /// (`subject` is its set-aside id, `amount` the failure's code). It
    /// names no device, account or pseudonym.
    IngestionFailed,
}

impl AlertKind {
    pub fn code(self) -> i64 {
        match self {
            AlertKind::DoubleSpend => 1,
            AlertKind::CounterfeitRefused => 2,
            AlertKind::NonConserving => 3,
            AlertKind::UnknownIssuer => 4,
            AlertKind::CounterfeitDescendant => 5,
            AlertKind::StreamOverclaim => 6,
            AlertKind::Structuring => 10,
            AlertKind::FanOut => 11,
            AlertKind::FanIn => 12,
            AlertKind::Velocity => 13,
            AlertKind::IngestionFailed => 30,
        }
    }
    pub fn from_code(c: i64) -> Option<AlertKind> {
        Some(match c {
            1 => AlertKind::DoubleSpend,
            2 => AlertKind::CounterfeitRefused,
            3 => AlertKind::NonConserving,
            4 => AlertKind::UnknownIssuer,
            5 => AlertKind::CounterfeitDescendant,
            6 => AlertKind::StreamOverclaim,
            10 => AlertKind::Structuring,
            11 => AlertKind::FanOut,
            12 => AlertKind::FanIn,
            13 => AlertKind::Velocity,
            30 => AlertKind::IngestionFailed,
            _ => return None,
        })
    }
    /// Fraud (money at stake) is critical; AML signals need an analyst.
    pub fn severity(self) -> Severity {
        match self {
            AlertKind::DoubleSpend
            | AlertKind::CounterfeitRefused
            | AlertKind::NonConserving
            | AlertKind::UnknownIssuer
            | AlertKind::CounterfeitDescendant
            | AlertKind::StreamOverclaim
            // Records nobody has judged: a fraud may hide in them.
            | AlertKind::IngestionFailed => Severity::Critical,
            AlertKind::Structuring | AlertKind::FanOut | AlertKind::FanIn | AlertKind::Velocity => {
                Severity::Warning
            }
        }
    }
    /// Money at stake: a fraud detector fired (not an AML signal, not an
    /// ingestion failure).
    pub fn is_fraud(self) -> bool {
        self.severity() == Severity::Critical && self != AlertKind::IngestionFailed
    }
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::DoubleSpend => "double_spend",
            AlertKind::CounterfeitRefused => "counterfeit_refused",
            AlertKind::NonConserving => "non_conserving",
            AlertKind::UnknownIssuer => "unknown_issuer",
            AlertKind::CounterfeitDescendant => "counterfeit_descendant",
            AlertKind::StreamOverclaim => "stream_overclaim",
            AlertKind::Structuring => "structuring",
            AlertKind::FanOut => "fan_out",
            AlertKind::FanIn => "fan_in",
            AlertKind::Velocity => "velocity",
            AlertKind::IngestionFailed => "ingestion_failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning = 2,
    Critical = 3,
}

/// Lifecycle of an alert. Allowed moves: Open → EscrowOpened →
/// DeviceRevoked → Closed, and Open → Closed (dismissed without opening
/// any escrow, e.g. an AML signal an analyst cleared). Nothing leaves
/// Closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    Open,
    EscrowOpened,
    DeviceRevoked,
    Closed,
}

impl AlertState {
    pub fn code(self) -> i64 {
        match self {
            AlertState::Open => 0,
            AlertState::EscrowOpened => 1,
            AlertState::DeviceRevoked => 2,
            AlertState::Closed => 3,
        }
    }
    pub fn from_code(c: i64) -> Option<AlertState> {
        Some(match c {
            0 => AlertState::Open,
            1 => AlertState::EscrowOpened,
            2 => AlertState::DeviceRevoked,
            3 => AlertState::Closed,
            _ => return None,
        })
    }
    pub fn can_move_to(self, next: AlertState) -> bool {
        matches!(
            (self, next),
            (AlertState::Open, AlertState::EscrowOpened)
                | (AlertState::EscrowOpened, AlertState::DeviceRevoked)
                | (AlertState::DeviceRevoked, AlertState::Closed)
                | (AlertState::Open, AlertState::Closed)
        )
    }
    pub fn name(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::EscrowOpened => "escrow_opened",
            AlertState::DeviceRevoked => "device_revoked",
            AlertState::Closed => "closed",
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One alert. `records` is the evidence: for a double spend, the record
/// that consumed the output first and then the second consumer (the
/// `subject`); for a counterfeit, the record itself (and the counterfeit
/// parent for a descendant); for a stream overclaim, the stream's first
/// close and then its second (the `subject`); for AML signals, the pseudonym's payments in
/// that epoch (at most [`crate::ALERT_EVIDENCE_RECORDS_MAX`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    pub severity: Severity,
    pub state: AlertState,
    /// Settlement epoch in which it was raised.
    pub epoch: u32,
    /// The offending record (fraud) or the pseudonym key id (AML).
    pub subject: Hash32,
    /// Key id of the pseudonym held responsible, when known: the owner of
    /// the double-spent output, the issuer of a counterfeit Issue, the
    /// payer of a transfer, the key that signed a stream's second close.
    pub offender: Option<Hash32>,
    pub records: Vec<Hash32>,
    /// Double spend: the output's value (the loss; for a stream half
    /// closed twice, what the second close pays). Stream overclaim: the
    /// claim's excess over the refund. Counterfeit refused:
    /// the verifier's error code. AML: the count that crossed the
    /// threshold.
    pub amount: u64,
    /// Double spend: the output consumed twice (record id, index; for a
    /// stream's payer half the index is `0x80 | i`). Stream overclaim:
    /// the stream output.
    pub outpoint: Option<(Hash32, u8)>,
}
