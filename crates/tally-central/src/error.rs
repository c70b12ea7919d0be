//! The back office's error: every rejection of the central bank and of a
//! DCP, each with a stable code (tally-codes) and an HTTP status. One type
//! for both roles, because a DCP passes the central bank's refusals on to
//! its devices unchanged (and stores them with their code and status).

use std::fmt;

use tally_codes as codes;
use tally_core::Hash32;
use tally_core::codec::CodecError;
use tally_core::sealed::SealError;
use tally_core::verify::VerifyError;
use tally_directory::DirectoryError;
use tally_ledger::ledger::LedgerError;
use tally_ledger::settlement::{DoubleSpend, SettlementError};
use tally_store::{StoreError, TxFailure};

use crate::keys::KeyError;

/// Every rejection, each with a stable code (docs/API.md).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackofficeError {
    Decode(CodecError),
    Verify(VerifyError),
    Ledger(LedgerError),
    Settlement(SettlementError),
    Directory(DirectoryError),
    UnknownDevice,
    DeviceNotActive,
    BadDeviceSignature,
    /// A counter not above the last one, with another request than the stored one.
    Replay,
    BadKey,
    UnknownRedemption,
    /// The package does not pay the redemption request.
    WrongRedemption,
    /// The redeeming device double-spent the very tokens it redeems.
    DoubleSpendByRedeemer(Box<DoubleSpend>),
    /// The escrow the DCP made does not verify for the identity the
    /// directory registered (never certified).
    EscrowMismatch,
    /// A sealed upload does not open or is malformed.
    Sealed(SealError),
    /// A back-office key could not sign (key file or HSM failure);
    /// nothing was changed.
    Signer(KeyError),
    /// The database still holds key seeds of an older node, and they are
    /// not the keys the node was started with (docs/decisions, key
    /// custody): move them out with `tally node --keys DIR` first.
    KeysInDatabase,
    /// The database was set up with another key for `role` than the one
    /// the node was started with (a wrong key directory or token; keys
    /// are not rotated by restarting).
    KeysChanged {
        role: &'static str,
    },
    /// Settlement's signed result does not verify or does not answer this request.
    BadSettlementResult,
    /// A revocation without a verified k-of-n opening of this identity in
    /// the supervisors' audit log.
    OpeningNotShown,
    /// The request's attachment is not the sealed upload the SE signed.
    BadAttachment,
    /// No outstanding enrolment code of this account matches the SE's
    /// enrolment signature (also: unknown account, so that strangers
    /// cannot tell accounts apart).
    BadEnrolment,
    /// The enrolment code was used by another SE.
    EnrolmentCodeUsed,
    /// The sealed redemption package is not the transfer the SE signed for.
    TransferMismatch,
    /// A load the device could not hold (above its class's holding limit).
    LoadAboveHolding,
    /// A cancellation of an Issue this DCP did not issue to this SE, or
    /// whose token was spent.
    NotCancellable,
    /// A load whose Issue its device never collected: the DCP cancelled
    /// it at the central bank and returned the amount to the account.
    LoadReclaimed,
    /// The opened sync upload's request reports are not those the SE
    /// signed for (a terminal left one out or changed it).
    ReportsMismatch,
    /// A revocation names a key whose certificate's escrow was not opened
    /// to the identity revoked.
    RevocationKeyNotOpened(Hash32),
    /// This very request (the same bytes) was refused before: the stored
    /// refusal, returned again without executing anything.
    RefusedBefore {
        code: u16,
        status: u16,
        message: String,
    },
    /// The calling party is not a DCP the central bank trusts (or a
    /// payment names an unknown DCP).
    UnknownDcp,
    /// An Issue not signed by the calling DCP, or of another value.
    ForeignIssue,
    /// A delivery that does not match what waits in the mailbox.
    NotDeliverable,
    /// The central bank's answer over the network (its code, status and
    /// message), or no answer ([`codes::CENTRAL_UNAVAILABLE`], 503).
    Remote {
        code: u16,
        status: u16,
        message: String,
    },
    /// The MDS refused (unknown alert, illegal lifecycle move) or failed.
    Mds {
        message: String,
        client: bool,
    },
    Store(StoreError),
}

impl BackofficeError {
    /// Stable code, registered in tally-codes (docs/CODES.md); a nested
    /// component's error keeps its own.
    pub fn code(&self) -> u16 {
        match self {
            BackofficeError::Decode(_) => codes::VERIFY_DECODE,
            BackofficeError::Verify(e) => e.code(),
            BackofficeError::Ledger(e) => e.code(),
            BackofficeError::Settlement(e) => e.code(),
            BackofficeError::Directory(e) => e.code(),
            BackofficeError::UnknownDevice => codes::DCP_UNKNOWN_DEVICE,
            BackofficeError::DeviceNotActive => codes::DCP_DEVICE_NOT_ACTIVE,
            BackofficeError::BadDeviceSignature => codes::DCP_BAD_DEVICE_SIGNATURE,
            BackofficeError::Replay => codes::DCP_REPLAY,
            BackofficeError::BadKey => codes::DCP_BAD_KEY,
            BackofficeError::UnknownRedemption => codes::DCP_UNKNOWN_REDEMPTION,
            BackofficeError::WrongRedemption => codes::DCP_WRONG_REDEMPTION,
            BackofficeError::DoubleSpendByRedeemer(_) => codes::DCP_DOUBLE_SPEND_BY_REDEEMER,
            BackofficeError::EscrowMismatch => codes::DCP_ESCROW_MISMATCH,
            BackofficeError::Sealed(_) => codes::DCP_SEALED,
            BackofficeError::BadSettlementResult => codes::DCP_BAD_SETTLEMENT_RESULT,
            BackofficeError::Signer(_) => codes::NODE_SIGNER_FAILED,
            BackofficeError::KeysInDatabase => codes::NODE_KEYS_IN_DATABASE,
            BackofficeError::KeysChanged { .. } => codes::NODE_KEYS_CHANGED,
            BackofficeError::OpeningNotShown => codes::DCP_OPENING_NOT_SHOWN,
            BackofficeError::BadAttachment => codes::DCP_BAD_ATTACHMENT,
            BackofficeError::BadEnrolment => codes::DCP_BAD_ENROLMENT,
            BackofficeError::EnrolmentCodeUsed => codes::DCP_ENROLMENT_CODE_USED,
            BackofficeError::TransferMismatch => codes::DCP_TRANSFER_MISMATCH,
            BackofficeError::LoadAboveHolding => codes::DCP_LOAD_ABOVE_HOLDING,
            BackofficeError::NotCancellable => codes::DCP_ISSUE_NOT_CANCELLABLE,
            BackofficeError::LoadReclaimed => codes::DCP_LOAD_RECLAIMED,
            BackofficeError::ReportsMismatch => codes::DCP_REPORTS_DIGEST_MISMATCH,
            BackofficeError::RevocationKeyNotOpened(_) => codes::DCP_REVOCATION_KEY_NOT_OPENED,
            BackofficeError::RefusedBefore { code, .. } => *code,
            BackofficeError::UnknownDcp => codes::CENTRAL_UNKNOWN_DCP,
            BackofficeError::ForeignIssue => codes::CENTRAL_FOREIGN_ISSUE,
            BackofficeError::NotDeliverable => codes::CENTRAL_NOT_DELIVERABLE,
            BackofficeError::Remote { code, .. } => *code,
            BackofficeError::Mds { client: true, .. } => codes::DCP_MDS_REFUSED,
            BackofficeError::Mds { client: false, .. } => codes::NODE_MDS_FAILURE,
            BackofficeError::Store(_) => codes::NODE_INTERNAL,
        }
    }
    /// Client errors (4xx) versus server errors (5xx).
    pub fn is_client_error(&self) -> bool {
        if let BackofficeError::RefusedBefore { status, .. }
        | BackofficeError::Remote { status, .. } = self
        {
            return *status < 500;
        }
        !matches!(
            self,
            BackofficeError::Store(_)
                | BackofficeError::EscrowMismatch
                | BackofficeError::BadSettlementResult
                | BackofficeError::Signer(_)
                | BackofficeError::KeysInDatabase
                | BackofficeError::KeysChanged { .. }
                | BackofficeError::Mds { client: false, .. }
                | BackofficeError::Ledger(LedgerError::Store(_))
                | BackofficeError::Settlement(SettlementError::Ledger(LedgerError::Store(_)))
                | BackofficeError::Directory(DirectoryError::Store(_))
        )
    }

    /// Whether the central bank's commit is unknown: the link dropped or
    /// timed out (1303), or a store failure (in process, or 99 over the
    /// network), which may have met the commit itself. The DCP keeps the
    /// customer's amount in flight then; the retry of the same request
    /// finds the stored result or executes. A serialization conflict
    /// (rolled back) or a signer failure (nothing written) is no such case.
    pub fn is_unanswered(&self) -> bool {
        match self {
            BackofficeError::Remote { code, .. } => {
                *code == codes::CENTRAL_UNAVAILABLE || *code == codes::NODE_INTERNAL
            }
            e => e.store_failure().is_some_and(|s| !s.is_conflict()),
        }
    }

    /// A refusal that stands for good (a 4xx that is no serialization
    /// conflict): a retry of the same request gets the same answer.
    pub fn is_final(&self) -> bool {
        self.is_client_error() && !self.is_conflict()
    }

    /// A store failure inside, whatever the layer that met it.
    pub fn store_failure(&self) -> Option<&StoreError> {
        match self {
            BackofficeError::Store(s)
            | BackofficeError::Ledger(LedgerError::Store(s))
            | BackofficeError::Settlement(SettlementError::Ledger(LedgerError::Store(s)))
            | BackofficeError::Directory(DirectoryError::Store(s)) => Some(s),
            _ => None,
        }
    }

    /// The HTTP status of the rejection: 4xx for everything the caller can
    /// fix or must not retry as is, 5xx only for store failures (503 for
    /// a serialization conflict that outlived the retries). Here rather
    /// than in the HTTP layer because a device request's refusal is stored
    /// with its status (a failed request is final).
    pub fn status(&self) -> u16 {
        if let Some(s) = self.store_failure() {
            return if matches!(s, StoreError::Conflict) {
                503
            } else {
                500
            };
        }
        fn ledger_status(e: &LedgerError) -> u16 {
            match e {
                LedgerError::UnknownAccount(_) => 404,
                LedgerError::IdempotencyKeyReused(_) | LedgerError::AccountExists(_) => 409,
                LedgerError::Store(_) => 500,
                // Insufficient funds, zero amount, same account, overflow,
                // and whatever the ledger adds later: refused by its rules.
                _ => 422,
            }
        }
        match self {
            BackofficeError::RefusedBefore { status, .. }
            | BackofficeError::Remote { status, .. } => *status,
            BackofficeError::UnknownDcp => 403,
            BackofficeError::ForeignIssue => 422,
            BackofficeError::NotDeliverable => 409,
            BackofficeError::Decode(_) | BackofficeError::BadKey => 400,
            BackofficeError::BadDeviceSignature
            | BackofficeError::DeviceNotActive
            | BackofficeError::OpeningNotShown
            | BackofficeError::RevocationKeyNotOpened(_) => 403,
            BackofficeError::Directory(
                DirectoryError::BadAttestation
                | DirectoryError::UntrustedManufacturer
                | DirectoryError::Revoked,
            )
            | BackofficeError::BadEnrolment => 403,
            BackofficeError::EnrolmentCodeUsed => 409,
            BackofficeError::BadAttachment => 400,
            BackofficeError::TransferMismatch
            | BackofficeError::LoadAboveHolding
            | BackofficeError::NotCancellable
            | BackofficeError::ReportsMismatch => 422,
            BackofficeError::LoadReclaimed => 410,
            BackofficeError::UnknownDevice
            | BackofficeError::Directory(DirectoryError::UnknownSe) => 404,
            // A redemption that is unknown to this device or already done:
            // the state on the server conflicts with what the device thinks.
            BackofficeError::Replay
            | BackofficeError::UnknownRedemption
            | BackofficeError::Directory(DirectoryError::Conflict)
            | BackofficeError::Directory(DirectoryError::RevocationListFull { .. }) => 409,
            BackofficeError::Directory(DirectoryError::TooManyRevocations { .. }) => 400,
            BackofficeError::Ledger(l)
            | BackofficeError::Settlement(SettlementError::Ledger(l)) => ledger_status(l),
            BackofficeError::Verify(_)
            | BackofficeError::Settlement(_)
            | BackofficeError::WrongRedemption
            | BackofficeError::DoubleSpendByRedeemer(_)
            | BackofficeError::Sealed(_) => 422,
            // Variants added later.
            other if other.is_client_error() => 400,
            _ => 500,
        }
    }
}

impl fmt::Display for BackofficeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackofficeError::Decode(e) => write!(f, "malformed body: {e}"),
            BackofficeError::Verify(e) => write!(f, "package refused: {e}"),
            BackofficeError::Ledger(e) => write!(f, "{e}"),
            BackofficeError::Settlement(e) => write!(f, "{e}"),
            BackofficeError::Directory(e) => write!(f, "{e}"),
            BackofficeError::UnknownDevice => f.write_str("unknown device"),
            BackofficeError::DeviceNotActive => f.write_str("device is suspended or revoked"),
            BackofficeError::BadDeviceSignature => f.write_str("device signature does not verify"),
            BackofficeError::Replay => f.write_str("replayed or stale request counter"),
            BackofficeError::BadKey => f.write_str("invalid public key"),
            BackofficeError::UnknownRedemption => {
                f.write_str("no open redemption request for this package")
            }
            BackofficeError::WrongRedemption => {
                f.write_str("package does not pay the redemption request")
            }
            BackofficeError::DoubleSpendByRedeemer(d) => {
                write!(
                    f,
                    "the redeeming device double-spent output {}:{}",
                    d.outpoint.record, d.outpoint.index
                )
            }
            BackofficeError::EscrowMismatch => {
                f.write_str("escrow does not verify for the registered identity")
            }
            BackofficeError::Sealed(e) => write!(f, "{e}"),
            BackofficeError::BadAttachment => {
                f.write_str("attachment does not match the digest the SE signed")
            }
            BackofficeError::BadEnrolment => {
                f.write_str("enrolment refused: no matching one-time code for this account")
            }
            BackofficeError::EnrolmentCodeUsed => {
                f.write_str("enrolment code already used by another device")
            }
            BackofficeError::TransferMismatch => {
                f.write_str("sealed package is not the transfer the SE signed for")
            }
            BackofficeError::NotCancellable => f.write_str(
                "not an Issue of this DCP's to this device, or its token was spent: cannot cancel",
            ),
            BackofficeError::LoadReclaimed => f.write_str(
                "this load was not collected in time: the DCP cancelled its Issue and returned the amount to the account",
            ),
            BackofficeError::ReportsMismatch => {
                f.write_str("the upload's request reports are not those the SE signed for")
            }
            BackofficeError::LoadAboveHolding => {
                f.write_str("load above the device's holding limit")
            }
            BackofficeError::Mds { message, .. } => write!(f, "MDS: {message}"),
            BackofficeError::OpeningNotShown => {
                f.write_str("no verified opening of this identity in the supervisors' audit log")
            }
            BackofficeError::BadSettlementResult => {
                f.write_str("settlement result does not verify")
            }
            BackofficeError::Signer(e) => write!(f, "back-office key: {e}"),
            BackofficeError::KeysInDatabase => f.write_str(
                "the database holds key seeds of an older node that are not the keys given; \
                 start once with `tally node --keys DIR` (without --pkcs11-module) to move them \
                 into key files",
            ),
            BackofficeError::KeysChanged { role } => write!(
                f,
                "the database was set up with another {role} key than the one given \
                 (wrong --keys directory or token?); keys are not changed by a restart"
            ),
            BackofficeError::RevocationKeyNotOpened(k) => write!(
                f,
                "key {k} is not a pseudonym whose escrow was opened to this identity"
            ),
            BackofficeError::RefusedBefore { message, .. } => f.write_str(message),
            BackofficeError::UnknownDcp => f.write_str("not a DCP of the policy's trust list"),
            BackofficeError::ForeignIssue => {
                f.write_str("Issue not signed by the calling DCP, or of another value")
            }
            BackofficeError::NotDeliverable => {
                f.write_str("delivery does not match what waits in the mailbox")
            }
            BackofficeError::Remote { message, .. } => write!(f, "central bank: {message}"),
            BackofficeError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BackofficeError {}

impl From<KeyError> for BackofficeError {
    fn from(e: KeyError) -> Self {
        BackofficeError::Signer(e)
    }
}

macro_rules! from_err {
    ($t:ty, $v:ident) => {
        impl From<$t> for BackofficeError {
            fn from(e: $t) -> Self {
                BackofficeError::$v(e)
            }
        }
    };
}
from_err!(CodecError, Decode);
from_err!(VerifyError, Verify);
from_err!(LedgerError, Ledger);
from_err!(SettlementError, Settlement);
from_err!(DirectoryError, Directory);
from_err!(StoreError, Store);
from_err!(SealError, Sealed);

impl From<tally_mds::MdsError> for BackofficeError {
    fn from(e: tally_mds::MdsError) -> Self {
        let client = matches!(
            e,
            tally_mds::MdsError::AlertNotFound(_) | tally_mds::MdsError::IllegalTransition { .. }
        );
        BackofficeError::Mds {
            message: e.to_string(),
            client,
        }
    }
}

impl TxFailure for BackofficeError {
    fn is_conflict(&self) -> bool {
        match self {
            BackofficeError::Store(e) => e.is_conflict(),
            BackofficeError::Ledger(e) => e.is_conflict(),
            BackofficeError::Settlement(e) => e.is_conflict(),
            BackofficeError::Directory(e) => e.is_conflict(),
            _ => false,
        }
    }
}
