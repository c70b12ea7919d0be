//! Supervisory access to escrowed pseudonyms (DESIGN.md §5): k-of-n
//! threshold keys, verifiable opening, and the audit log every step lands in.
//!
//! - [`setup`]: the supervisors' key set, made by a dealer-free distributed
//!   key generation ([`key_setup`]); the public [`JointParams`] (joint key,
//!   each supervisor's key share, each supervisor's Ed25519 audit key) and
//!   each supervisor's secret [`SupervisorKey`].
//! - [`opening`]: an [`OpeningRequest`] (escrow in either form, see
//!   [`RequestEscrow`]; evidence reference; written reason), a supervisor's [`DecryptionShare`] with its DLEQ
//!   proof ([`share`]), and [`combine`], which checks every share and needs
//!   k valid ones. Opening yields the SE's identity point; [`IdTable`] maps
//!   it back to the SE id.
//! - [`audit`]: the append-only, hash-chained, signed [`AuditLog`]. A
//!   supervisor can only share for a request that is in the log, and an
//!   opening result enters the log only if k logged shares reproduce it.
//!
//! Escrow creation and verification (what devices and the DCP run) are in
//! `tally_core::escrow`; the threshold ElGamal, DKG and proofs are
//! `elastic-elgamal`'s. Decisions: docs/decisions/0006-escrow.md.

use core::fmt;

use tally_core::CodecError;
use tally_core::escrow::EscrowError;

pub mod audit;
pub mod opening;
pub mod setup;

pub use audit::{AuditError, AuditFault, AuditLog, AuditSummary, Checkpoint, Entry, EntryKind};
pub use opening::{
    DecryptionShare, IdTable, LoggedRequest, Opening, OpeningRequest, OpeningResult, RequestEscrow,
    ShareFault, combine, share,
};
pub use setup::{JointParams, SupervisorKey, key_setup};

/// Most supervisors a key set may have (indexes are one byte on the wire).
pub const PARTICIPANTS_MAX: usize = 32;

/// Why a supervisory operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorError {
    /// Threshold and participant count are not `1 ≤ k ≤ n ≤ PARTICIPANTS_MAX`,
    /// or the audit keys do not match `n` (count, suite, duplicates).
    InvalidParams,
    /// The key generation protocol failed (a participant's commitment,
    /// polynomial or secret share did not check out).
    KeySetup(&'static str),
    /// Bytes were not a valid object.
    Codec(CodecError),
    /// The escrow is malformed, or the opened point does not satisfy its
    /// proof (the certifying DCP accepted a bad escrow).
    Escrow(EscrowError),
    /// The request has no evidence reference or no reason, or one is too long.
    InvalidRequest,
    /// A decryption share was refused.
    ShareRejected { index: u8, fault: ShareFault },
    /// Fewer than k valid shares; `rejected` lists the indexes of refused ones.
    NotEnoughShares {
        valid: usize,
        needed: usize,
        rejected: Vec<u8>,
    },
    /// The signing key is not the audit key the entry needs.
    WrongSigner,
    /// The audit log refused the entry, or does not verify.
    Audit(AuditError),
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::InvalidParams => f.write_str(
                "invalid key set parameters: need 1 <= k <= n <= 32 and n distinct Ed25519 audit keys",
            ),
            SupervisorError::KeySetup(why) => write!(f, "key generation failed: {why}"),
            SupervisorError::Codec(e) => write!(f, "malformed object: {e}"),
            SupervisorError::Escrow(e) => write!(f, "{e}"),
            SupervisorError::InvalidRequest => f.write_str(
                "opening request needs an evidence reference and a written reason within bounds",
            ),
            SupervisorError::ShareRejected { index, fault } => {
                write!(f, "decryption share of supervisor {index} refused: {fault}")
            }
            SupervisorError::NotEnoughShares {
                valid,
                needed,
                rejected,
            } => write!(
                f,
                "opening needs {needed} valid shares, has {valid} (refused: {rejected:?})"
            ),
            SupervisorError::WrongSigner => {
                f.write_str("signing key is not the audit key this entry needs")
            }
            SupervisorError::Audit(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SupervisorError {}

impl From<CodecError> for SupervisorError {
    fn from(e: CodecError) -> Self {
        SupervisorError::Codec(e)
    }
}

impl From<EscrowError> for SupervisorError {
    fn from(e: EscrowError) -> Self {
        SupervisorError::Escrow(e)
    }
}

impl From<AuditError> for SupervisorError {
    fn from(e: AuditError) -> Self {
        SupervisorError::Audit(e)
    }
}
