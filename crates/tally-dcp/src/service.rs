//! The back office: the central bank (ledger, settlement, directory, MDS
//! feed) and one Digital Currency Provider (DCP), in one process but on
//! separate stores (DESIGN.md §1, §5).
//!
//! What each side holds:
//!
//! - **DCP store** (`dcp_*` tables): its devices (SE id, account, class,
//!   tier, request counter, the secret escrow salt), its redemption
//!   requests (nonce, amount), and its request log, where each response is
//!   kept encrypted under a key derived from the request bytes (so a replay
//!   of the same request gets the same answer, and the table alone reveals
//!   nothing). No offline record, pseudonym key or offline amount.
//! - **Central store**: ledger, spent registry, issued tokens, the settled
//!   uploads and closed requests (pseudonymous), recoveries by mailbox, the
//!   escrows of settled certificates, the MDS outbox, and the result of
//!   every settlement call by request id (idempotency).
//! - **MDS store**: the token graph (tally-mds); fed from the central
//!   store's outbox, never by the DCP.
//!
//! Device uploads (sync, redemption packages) are sealed by the wallet to
//! settlement's HPKE key ([`tally_core::sealed`]); the DCP forwards them
//! with the request id and gets back a result signed by the central bank,
//! which it checks before it answers the device.

use std::fmt;
use std::sync::Arc;
use tally_codes as codes;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use tally_core::cert::SettlementKey;

use crate::keys::{KeyError, NodeKeys, NodeSigner};
use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::{Entropy, check_key, tagged_hash};
use tally_core::escrow::{self, IdPoint, JointKey};
use tally_core::policy::{TierLimits, device_class};
use tally_core::sealed::{OpeningKey, SealError, SealingKey};
use tally_core::verify::{VerifyError, VerifyParams};
use tally_core::{
    Amount, Epoch, Hash32, Issue, Output, Package, Policy, PseudonymCertificate, PublicKey, Record,
    Request, RevocationList, SecretKey, Signature, Suite, SyncGrant, TrustStore,
};
use tally_directory::{DirectoryError, SeEntry, SeStatus, check_attestation};
use tally_ledger::ledger::{self, Invariant, LedgerError};
use tally_ledger::settlement::{DoubleSpend, SettlementError};
use tally_mds::{IngestRecord, Mds, Verdict};
use tally_store::{Migrations, Store, StoreError, Tx, TxFailure, Value};

use tally_core::dcp::*;

use crate::book::{self, Book, BookTotals};
use crate::central::{Central, CentralBank, CentralKeys, CentralRequest, CentralTrust};

/// The central bank's own tables (ledger, settlement and directory have
/// theirs).
pub static CENTRAL_MIGRATIONS: Migrations = Migrations {
    component: "central",
    steps: &[(
        1,
        "CREATE TABLE node_meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL);
        INSERT INTO node_meta (k, v) VALUES ('epoch', 1);
        CREATE TABLE node_secrets (role TEXT PRIMARY KEY, suite BIGINT NOT NULL, seed BLOB NOT NULL);
        CREATE TABLE node_docs (k TEXT PRIMARY KEY, body BLOB NOT NULL);
        CREATE TABLE cb_ops (op_id BLOB PRIMARY KEY, reply BLOB NOT NULL);
        CREATE TABLE cb_uploads (
            transfer_id BLOB PRIMARY KEY,
            nonce BLOB NOT NULL,
            payee_key BLOB NOT NULL,
            amount BIGINT NOT NULL
        );
        CREATE TABLE cb_closed (
            nonce BLOB NOT NULL,
            payee_key BLOB NOT NULL,
            mailbox BLOB NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (nonce, payee_key)
        );
        CREATE TABLE cb_recoveries (
            transfer_id BLOB PRIMARY KEY,
            mailbox BLOB NOT NULL,
            issue BLOB NOT NULL,
            delivered BIGINT NOT NULL
        );
        CREATE TABLE cb_escrows (key_id BLOB PRIMARY KEY, escrow BLOB NOT NULL);
        CREATE TABLE cb_redemptions (nonce BLOB PRIMARY KEY, op_id BLOB NOT NULL);
        CREATE TABLE mds_outbox (op_id BLOB PRIMARY KEY, body BLOB NOT NULL)",
    )],
};

/// When each MDS outbox row was queued (unix seconds; 0 for rows queued
/// before this column), for the outbox-age metric. Its own component so
/// its steps never collide with the central bank's.
pub static OUTBOX_MIGRATIONS: Migrations = Migrations {
    component: "central_outbox",
    steps: &[(
        1,
        "ALTER TABLE mds_outbox ADD COLUMN queued_at BIGINT NOT NULL DEFAULT 0",
    )],
};

/// The refusal of each failed device request, sealed like its response
/// (see [`Backoffice::handle_device`]): a failed request is final. Its own
/// component so its steps never collide with the DCP's.
pub static REFUSAL_MIGRATIONS: Migrations = Migrations {
    component: "dcp_refusals",
    steps: &[(1, "ALTER TABLE dcp_requests ADD COLUMN refusal BLOB")],
};

/// Keyed tags of the Issues handed to devices (for cancellation).
pub static ISSUE_TAG_MIGRATIONS: Migrations = Migrations {
    component: "dcp_issues",
    steps: &[(1, "CREATE TABLE dcp_issues (tag BLOB PRIMARY KEY)")],
};

/// Request reports (received or closed), the uploader of each unacknowledged
/// package, and tokens waiting in a device's mailbox until a sync names a
/// key for them (recoveries to payees, refunds to payers).
pub static REPORT_MIGRATIONS: Migrations = Migrations {
    component: "central_reports",
    steps: &[(
        1,
        "ALTER TABLE cb_closed ADD COLUMN received BLOB;
        ALTER TABLE cb_uploads ADD COLUMN mailbox BLOB;
        CREATE TABLE cb_mailbox (
            transfer_id BLOB PRIMARY KEY,
            mailbox BLOB NOT NULL,
            amount BIGINT NOT NULL,
            refund BIGINT NOT NULL,
            issue BLOB,
            delivered BIGINT NOT NULL
        );
        INSERT INTO cb_mailbox (transfer_id, mailbox, amount, refund, issue, delivered)
            SELECT transfer_id, mailbox, 0, 0, issue, 0 FROM cb_recoveries WHERE delivered = 0;
        DELETE FROM cb_recoveries WHERE delivered = 0",
    )],
};

/// The DCP's tables.
pub static MIGRATIONS: Migrations = Migrations {
    component: "dcp",
    steps: &[(
        1,
        "CREATE TABLE dcp_secrets (role TEXT PRIMARY KEY, suite BIGINT NOT NULL, seed BLOB NOT NULL);
        CREATE TABLE dcp_devices (
            se_id BLOB PRIMARY KEY,
            account TEXT NOT NULL,
            device_class BIGINT NOT NULL,
            tier BIGINT NOT NULL,
            last_counter BIGINT NOT NULL,
            sync_seq BIGINT NOT NULL,
            sync_epoch BIGINT NOT NULL,
            escrow_salt BLOB NOT NULL
        );
        CREATE TABLE dcp_requests (
            request_id BLOB PRIMARY KEY,
            se_id BLOB NOT NULL,
            counter BIGINT NOT NULL,
            response BLOB
        );
        CREATE TABLE dcp_redemptions (
            nonce BLOB PRIMARY KEY,
            se_id BLOB NOT NULL,
            amount BIGINT NOT NULL,
            unload BIGINT NOT NULL,
            done BIGINT NOT NULL
        )",
    ), (
        2,
        // One-time enrolment codes (digests only), bound to the SE that
        // used one.
        "CREATE TABLE dcp_enrolment_codes (
            code_digest BLOB PRIMARY KEY,
            account TEXT NOT NULL,
            se_id BLOB
        )",
    )],
};

/// An uploaded package as checked before the settlement transaction.
pub(crate) enum Checked {
    Verified(Box<tally_core::VerifiedPackage>),
    Refused(tally_core::Transfer, VerifyError),
    Malformed,
}

/// Epochs a pseudonym certificate stays valid after issuance.
pub const CERT_VALIDITY_EPOCHS: Epoch = 30;
/// Epochs a genesis token may circulate offline before renewal.
pub const TOKEN_VALIDITY_EPOCHS: Epoch = 60;
/// The DCP of a node (`tally node`): DCP 1.
pub const DCP_ID: u32 = 1;
/// Its settlement account at the central bank.
pub const DCP_ACCOUNT: &str = "dcp:1";

/// Account names devices register under (and deposits may open):
/// letters, digits, '-' and '_'.
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn user_account(name: &str) -> String {
    format!("user:{name}")
}

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

    /// A store failure inside, whatever the layer that met it.
    /// The central bank did not answer (the link dropped or timed out):
    /// it may or may not have executed the request.
    pub fn is_unanswered(&self) -> bool {
        matches!(self, BackofficeError::Remote { code, .. } if *code == codes::CENTRAL_UNAVAILABLE)
    }

    /// A refusal that stands for good (a 4xx that is no serialization
    /// conflict): a retry of the same request gets the same answer.
    pub fn is_final(&self) -> bool {
        self.is_client_error() && !self.is_conflict()
    }

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

fn os_random_32() -> Result<[u8; 32], StoreError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| StoreError::Db(format!("no randomness: {e}")))?;
    Ok(b)
}

/// Key seeds an older node kept in its databases (`node_secrets`,
/// `dcp_secrets`): found once at the upgrade, moved into key files
/// ([`crate::keys::KeyDir::import_legacy`]), then dropped with the tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacySeeds {
    pub root: Option<[u8; 32]>,
    pub dcp: Option<[u8; 32]>,
    pub opening: Option<[u8; 32]>,
}

impl LegacySeeds {
    pub fn is_empty(&self) -> bool {
        self.root.is_none() && self.dcp.is_none() && self.opening.is_none()
    }

    /// Every seed here belongs to the key `keys` holds for its role.
    fn match_keys(&self, keys: &NodeKeys) -> bool {
        let ed = |s: &[u8; 32]| SecretKey::from_seed(Suite::Ed25519, s).map(|k| k.public());
        self.root
            .is_none_or(|s| ed(&s) == Some(keys.root.public_key()))
            && self
                .dcp
                .is_none_or(|s| ed(&s) == Some(keys.dcp.public_key()))
            && self
                .opening
                .is_none_or(|s| OpeningKey::from_seed(&s).public() == keys.opening.public())
    }
}

/// Drops the table of key seeds (central store). Its own component, run
/// only once the seeds are out (see [`Backoffice::open_with`]).
/// The public keys the node first started with are kept (step 2), so a
/// node started later with other keys (a wrong key directory or token) is
/// refused instead of silently becoming another root.
pub static CENTRAL_KEY_CUSTODY_MIGRATIONS: Migrations = Migrations {
    component: "central_key_custody",
    steps: &[
        (1, "DROP TABLE node_secrets"),
        (
            2,
            "CREATE TABLE node_public_keys (role TEXT PRIMARY KEY, key BLOB NOT NULL)",
        ),
    ],
};

/// Drops the table of key seeds (DCP store); keeps the DCP's public key.
pub static DCP_KEY_CUSTODY_MIGRATIONS: Migrations = Migrations {
    component: "dcp_key_custody",
    steps: &[
        (1, "DROP TABLE dcp_secrets"),
        (
            2,
            "CREATE TABLE dcp_public_keys (role TEXT PRIMARY KEY, key BLOB NOT NULL)",
        ),
    ],
};

/// Records `key` as the key of `role` on first start; afterwards checks
/// that it is still the same.
fn pin_public_key(
    store: &Store,
    table: &str,
    role: &'static str,
    key: Vec<u8>,
) -> Result<(), BackofficeError> {
    let insert =
        format!("INSERT INTO {table} (role, key) VALUES ($1, $2) ON CONFLICT (role) DO NOTHING");
    let select = format!("SELECT key FROM {table} WHERE role = $1");
    store.transact(|tx| {
        tx.execute(&insert, &[role.into(), key.clone().into()])?;
        let pinned = tx
            .query_one(&select, &[role.into()])?
            .ok_or_else(|| StoreError::Type(format!("{table}.{role} missing")))?;
        if pinned.bytes(0)? != key.as_slice() {
            return Err(BackofficeError::KeysChanged { role });
        }
        Ok(())
    })
}

fn migrated(store: &Store, component: &str) -> Result<bool, BackofficeError> {
    store.transact(|tx| {
        let r = tx.query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1",
            &[component.into()],
        )?;
        Ok::<_, BackofficeError>(r.map(|r| r.int(0)).transpose()?.unwrap_or(0) > 0)
    })
}

fn legacy_seed(
    store: &Store,
    table: &str,
    role: &str,
) -> Result<Option<[u8; 32]>, BackofficeError> {
    let select = format!("SELECT seed FROM {table} WHERE role = $1");
    store.transact(|tx| {
        Ok(match tx.query_one(&select, &[role.into()])? {
            Some(r) => Some(
                r.bytes(0)?
                    .try_into()
                    .map_err(|_| StoreError::Type("seed".into()))?,
            ),
            None => None,
        })
    })
}

/// Migrates the stores up to (not including) the key-custody step and
/// reads the key seeds an older node left in them; empty on a node that
/// never had any, or whose seeds were moved out already.
pub fn legacy_seeds(central: &Store, dcp: &Store) -> Result<LegacySeeds, BackofficeError> {
    migrate_before_custody(central, dcp)?;
    let mut seeds = LegacySeeds::default();
    if !migrated(central, CENTRAL_KEY_CUSTODY_MIGRATIONS.component)? {
        seeds.root = legacy_seed(central, "node_secrets", "root")?;
        seeds.opening = legacy_seed(central, "node_secrets", "seal")?;
    }
    if !migrated(dcp, DCP_KEY_CUSTODY_MIGRATIONS.component)? {
        seeds.dcp = legacy_seed(dcp, "dcp_secrets", "dcp")?;
    }
    Ok(seeds)
}

fn migrate_before_custody(central: &Store, dcp: &Store) -> Result<(), BackofficeError> {
    central.migrate(&[
        &ledger::MIGRATIONS,
        &tally_ledger::settlement::MIGRATIONS,
        &tally_directory::MIGRATIONS,
        &CENTRAL_MIGRATIONS,
        &OUTBOX_MIGRATIONS,
        &REPORT_MIGRATIONS,
    ])?;
    dcp.migrate(&[&MIGRATIONS, &REFUSAL_MIGRATIONS, &ISSUE_TAG_MIGRATIONS])?;
    Ok(())
}

/// Default tiers of the node's policy (XTS minor units). Cards and
/// phones pay up to 5 000 offline without the PIN, 15 000 in a row, and
/// need it for online payments; IoT classes have no cardholder (THREATS.md).
pub fn default_tiers() -> Vec<TierLimits> {
    let t = |device_class, payment_max, holding_max, history_records_max| TierLimits {
        device_class,
        tier: 0,
        payment_max: Amount(payment_max),
        holding_max: Amount(holding_max),
        receiving_max: Amount(holding_max),
        offline_spend_max: Amount(holding_max),
        offline_payments_max: 1_000,
        history_records_max,
        offline_epochs_max: 30,
        cvm_payment_max: Amount(5_000),
        cvm_cumulative_max: Amount(15_000),
        cvm_online: true,
    };
    let no_cardholder = |t: TierLimits| TierLimits {
        cvm_payment_max: Amount(u64::MAX),
        cvm_cumulative_max: Amount(u64::MAX),
        cvm_online: false,
        ..t
    };
    vec![
        t(device_class::CARD, 50_000, 100_000, 32),
        t(device_class::PHONE, 50_000, 200_000, 32),
        no_cardholder(t(device_class::IOT, 10_000, 20_000, 32)),
        no_cardholder(t(device_class::DCP, u64::MAX / 4, u64::MAX / 4, 1024)),
    ]
}

/// The three stores of a node. They may be one database (distinct tables)
/// or separate ones; the DCP's never holds offline history.
pub struct Stores {
    pub central: Store,
    pub dcp: Store,
    pub mds: Store,
}

/// The supervisors' joint escrow key of development nodes: its secret is
/// public (`x = H("tally/v1/dev-escrow-secret")`), so escrows made with it
/// protect nothing. Production nodes take the key from the supervisors'
/// ceremony (`tally supervisor keygen`, `tally node --escrow-key`).
pub fn development_escrow_key() -> JointKey {
    use curve25519_dalek::{RistrettoPoint, Scalar};
    let x = Scalar::from_bytes_mod_order(tagged_hash(b"tally/v1/dev-escrow-secret", &[]).0);
    JointKey::from_bytes(&RistrettoPoint::mul_base(&x).compress().to_bytes())
        .expect("a non-zero multiple of the base point")
}

/// Opens an escrow ciphertext (`C1`, `C2`) with the development secret:
/// the digest of its identity point, or `None` if `joint` is not the
/// development key (then only the supervisors can open it).
pub(crate) fn development_open(
    joint: &JointKey,
    random: &curve25519_dalek::RistrettoPoint,
    blinded: &curve25519_dalek::RistrettoPoint,
) -> Option<Hash32> {
    use curve25519_dalek::Scalar;
    if joint.to_bytes() != development_escrow_key().to_bytes() {
        return None;
    }
    let x = Scalar::from_bytes_mod_order(tagged_hash(b"tally/v1/dev-escrow-secret", &[]).0);
    Some(IdPoint::from_point(&(blinded - random * x)).digest())
}

/// The OS random generator as [`Entropy`] (escrow and sealing randomness).
pub struct OsEntropy;
impl Entropy for OsEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(out))
            .expect("the OS random generator is readable");
    }
}

/// What the central bank answers a DCP for one request: a result signed
/// by the settlement key, plus the tokens it registered.
/// Wire (version 2): `[2, op, settled, refused, value, double_spends,
/// [Issue], balance, transfer (bstr 0|32), [[transfer id, amount]],
/// signature]`; version 1 (stored before the parties were split) has no
/// deliveries and ten elements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettlementResult {
    /// The request this answers.
    pub op: Hash32,
    /// Packages settled, and refused (failed verification).
    pub settled: u32,
    pub refused: u32,
    /// Value settled or moved (redemption: the amount redeemed).
    pub value: u64,
    pub double_spends: u32,
    /// Tokens registered: the load's, the renewal's, the delivered ones.
    pub issues: Vec<Issue>,
    /// Unused since customers' accounts are at their DCP (0).
    pub balance: u64,
    /// Redemption: the id of the settled transfer.
    pub transfer: Option<Hash32>,
    /// Sync: what waits in the device's mailbox (transfer id, amount).
    pub deliveries: Vec<(Hash32, u64)>,
}

impl SettlementResult {
    fn write_body(&self, w: &mut Writer) {
        w.u64(2);
        self.op.write(w);
        w.u64(u64::from(self.settled));
        w.u64(u64::from(self.refused));
        w.u64(self.value);
        w.u64(u64::from(self.double_spends));
        w.array(self.issues.len());
        for i in &self.issues {
            i.write(w);
        }
        w.u64(self.balance);
        match &self.transfer {
            Some(t) => w.bytes(&t.0),
            None => w.bytes(&[]),
        }
        w.array(self.deliveries.len());
        for (t, a) in &self.deliveries {
            w.array(2);
            t.write(w);
            w.u64(*a);
        }
    }
    /// Version 1's body (verifying results stored before version 2).
    fn write_body_v1(&self, w: &mut Writer) {
        w.u64(1);
        self.op.write(w);
        w.u64(u64::from(self.settled));
        w.u64(u64::from(self.refused));
        w.u64(self.value);
        w.u64(u64::from(self.double_spends));
        w.array(self.issues.len());
        for i in &self.issues {
            i.write(w);
        }
        w.u64(self.balance);
        match &self.transfer {
            Some(t) => w.bytes(&t.0),
            None => w.bytes(&[]),
        }
    }
    fn message(&self, version: u8) -> Hash32 {
        let mut w = Writer::new();
        if version == 1 {
            w.array(9);
            self.write_body_v1(&mut w);
        } else {
            w.array(10);
            self.write_body(&mut w);
        }
        tagged_hash(b"tally/v1/settlement-result", &[&w.into_bytes()])
    }
    pub(crate) fn sign(&self, key: &NodeSigner) -> Result<Vec<u8>, KeyError> {
        let mut w = Writer::new();
        w.array(11);
        self.write_body(&mut w);
        key.try_sign(&self.message(2).0)?.write(&mut w);
        Ok(w.into_bytes())
    }
    /// Decodes a signed result and checks it answers `op` under the
    /// settlement key (which the root certified), or under the root itself:
    /// results stored before the settlement key existed were signed by the
    /// root, and a retried request gets its stored result back.
    pub fn open(
        bytes: &[u8],
        settlement: &PublicKey,
        root: &PublicKey,
        op: &Hash32,
    ) -> Result<SettlementResult, BackofficeError> {
        let mut r = Reader::new(bytes);
        let res = (|| -> Result<(SettlementResult, Signature, u8), CodecError> {
            let version = match r.array_max(11)? {
                10 => {
                    r.version(1)?;
                    1
                }
                11 => {
                    r.version(2)?;
                    2
                }
                _ => return Err(CodecError::Malformed),
            };
            let op = Hash32::read(&mut r)?;
            let settled = r.u32()?;
            let refused = r.u32()?;
            let value = r.u64()?;
            let double_spends = r.u32()?;
            let n = r.array_max(UPLOAD_PACKAGES_MAX + 1)?;
            let mut issues = Vec::with_capacity(n);
            for _ in 0..n {
                issues.push(Issue::read(&mut r)?);
            }
            let balance = r.u64()?;
            let t = r.bytes_max(32)?;
            let transfer = match t.len() {
                0 => None,
                32 => Some(Hash32(t.try_into().map_err(|_| CodecError::Malformed)?)),
                _ => return Err(CodecError::Malformed),
            };
            let mut deliveries = Vec::new();
            if version == 2 {
                let n = r.array_max(UPLOAD_PACKAGES_MAX)?;
                for _ in 0..n {
                    r.array(2)?;
                    deliveries.push((Hash32::read(&mut r)?, r.u64()?));
                }
            }
            let sig = Signature::read(&mut r)?;
            if r.position() != bytes.len() {
                return Err(CodecError::TrailingBytes);
            }
            Ok((
                SettlementResult {
                    op,
                    settled,
                    refused,
                    value,
                    double_spends,
                    issues,
                    balance,
                    transfer,
                    deliveries,
                },
                sig,
                version,
            ))
        })();
        let (res, sig, version) = res.map_err(|_| BackofficeError::BadSettlementResult)?;
        // Canonical only (SPEC §2.1): one encoding per result.
        let mut w = Writer::new();
        if version == 1 {
            w.array(10);
            res.write_body_v1(&mut w);
        } else {
            w.array(11);
            res.write_body(&mut w);
        }
        sig.write(&mut w);
        if w.into_bytes() != bytes {
            return Err(BackofficeError::BadSettlementResult);
        }
        let msg = res.message(version);
        let signed = tally_core::crypto::verify(settlement, &msg.0, &sig).is_ok()
            || tally_core::crypto::verify(root, &msg.0, &sig).is_ok();
        if &res.op != op || !signed {
            return Err(BackofficeError::BadSettlementResult);
        }
        Ok(res)
    }
}

/// The key under which the DCP keeps a response: derived from the whole
/// signed request, which the DCP does not store (it keeps only its id, a
/// different hash), so only a caller holding the request can read it.
fn response_cipher(request: &[u8]) -> XChaCha20Poly1305 {
    let k = tagged_hash(b"tally/v1/response-key", &[request]);
    XChaCha20Poly1305::new((&k.0).into())
}

fn seal_response(request: &[u8], response: &[u8]) -> Vec<u8> {
    // One key per request and one response per key: a fixed nonce is safe.
    response_cipher(request)
        .encrypt(&XNonce::default(), response)
        .expect("in-memory encryption")
}

fn open_response(request: &[u8], stored: &[u8]) -> Result<Vec<u8>, BackofficeError> {
    response_cipher(request)
        .decrypt(&XNonce::default(), stored)
        .map_err(|_| {
            BackofficeError::Store(StoreError::Type("stored response does not open".into()))
        })
}

/// The key under which the DCP keeps a refusal: like the response's,
/// derived from the whole request, under its own tag (a request has one
/// or the other; each key seals one message, so a fixed nonce is safe).
fn refusal_cipher(request: &[u8]) -> XChaCha20Poly1305 {
    let k = tagged_hash(b"tally/v1/refusal-key", &[request]);
    XChaCha20Poly1305::new((&k.0).into())
}

/// A stored refusal: `[code, status, message]`, sealed.
fn seal_refusal(request: &[u8], code: u16, status: u16, message: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(3);
    w.u64(u64::from(code));
    w.u64(u64::from(status));
    w.text(message);
    refusal_cipher(request)
        .encrypt(&XNonce::default(), w.into_bytes().as_slice())
        .expect("in-memory encryption")
}

/// The stored refusal of `request`, as the error it was.
fn open_refusal(request: &[u8], stored: &[u8]) -> Result<BackofficeError, BackofficeError> {
    let corrupt = |m: &str| BackofficeError::Store(StoreError::Type(format!("stored refusal {m}")));
    let plain = refusal_cipher(request)
        .decrypt(&XNonce::default(), stored)
        .map_err(|_| corrupt("does not open"))?;
    let mut r = Reader::new(&plain);
    let fields = (|| {
        r.array(3)?;
        let code = r.u16()?;
        let status = r.u16()?;
        let message = r.text_max(1 << 16)?.to_string();
        Ok::<_, CodecError>((code, status, message))
    })();
    match fields {
        Ok((code, status, message)) if r.position() == plain.len() => {
            Ok(BackofficeError::RefusedBefore {
                code,
                status,
                message,
            })
        }
        _ => Err(corrupt("is malformed")),
    }
}

/// A DCP: its devices, its customers' accounts ([`crate::book`]), its
/// issuing key, and the central bank behind [`Central`] (in process or
/// over the network). A node (`tally node`, tests) also holds the central
/// bank itself (`bank`), and then answers the central bank's operator
/// calls too.
pub struct Backoffice {
    dcp: Store,
    dcp_id: u32,
    signer: Arc<NodeSigner>,
    central: Arc<dyn Central>,
    bank: Option<Arc<CentralBank>>,
}

pub(crate) fn b(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

pub(crate) fn hash(bytes: &[u8]) -> Result<Hash32, StoreError> {
    Ok(Hash32(
        bytes
            .try_into()
            .map_err(|_| StoreError::Type("hash".into()))?,
    ))
}

pub(crate) fn meta(tx: &mut dyn Tx, k: &str) -> Result<i64, BackofficeError> {
    Ok(tx
        .query_one("SELECT v FROM node_meta WHERE k = $1", &[k.into()])?
        .ok_or_else(|| StoreError::Type(format!("node_meta.{k} missing")))?
        .int(0)?)
}

/// What the DCP stores of an Issue it handed to a device: keyed by the
/// device's secret salt, so the table names no record.
fn handed_out_tag(salt: &[u8; 32], issue: &Hash32) -> Hash32 {
    tagged_hash(b"tally/v1/dcp-issue", &[salt, &issue.0])
}

/// Issue serial of a token issued for device request `op` (part `n`):
/// derived, so a retried request re-issues the identical record.
fn issue_serial(op: &Hash32, n: u32) -> u64 {
    let h = tagged_hash(b"tally/v1/issue-serial", &[&op.0, &n.to_be_bytes()]);
    u64::from_be_bytes(h.0[..8].try_into().expect("8 bytes"))
}

/// The DCP's tables, in order.
fn dcp_migrations() -> [&'static Migrations; 4] {
    [
        &MIGRATIONS,
        &REFUSAL_MIGRATIONS,
        &ISSUE_TAG_MIGRATIONS,
        &crate::book::BOOK_MIGRATIONS,
    ]
}

/// Migrates the central store and checks the central bank's keys sign
/// and are the keys it was set up with (pinned at first start).
fn pin_central_keys(central: &Store, keys: &CentralKeys) -> Result<(), BackofficeError> {
    central.migrate(&crate::central::migrations())?;
    central.migrate(&[&CENTRAL_KEY_CUSTODY_MIGRATIONS])?;
    for (role, s) in [("root", &keys.root), ("settlement", &keys.settlement)] {
        let msg = tagged_hash(b"tally/v1/key-self-test", &[role.as_bytes()]).0;
        let sig = s.try_sign(&msg)?;
        tally_core::crypto::verify(&s.public_key(), &msg, &sig)
            .map_err(|_| KeyError::BadSignature { role })?;
    }
    pin_public_key(
        central,
        "node_public_keys",
        "root",
        keys.root.public_key().to_cbor(),
    )?;
    pin_public_key(
        central,
        "node_public_keys",
        "settlement",
        keys.settlement.public_key().to_cbor(),
    )?;
    pin_public_key(
        central,
        "node_public_keys",
        "opening",
        keys.opening.public().to_vec(),
    )?;
    Ok(())
}

/// The reconciliation of a DCP's book with its settlement account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    /// The book's totals (customers, own money, in flight).
    pub book: BookTotals,
    /// The full re-sum of the book agrees with its running totals and no
    /// balance is negative.
    pub book_audit_ok: bool,
    /// The DCP's settlement account at the central bank.
    pub settlement_account: i64,
}

impl Reconciliation {
    /// With nothing in flight, the book's sum is the settlement account.
    pub fn matches(&self) -> bool {
        self.book_audit_ok && self.book.in_flight == 0 && self.book.sum == self.settlement_account
    }
}

impl Backoffice {
    /// The central bank on `store`, the DCP and the MDS on in-memory
    /// stores, with the development escrow key and the development node
    /// keys, whose secrets are public (tests, benchmarks).
    pub fn open(store: Store) -> Result<Backoffice, BackofficeError> {
        let mds = Store::sqlite_memory()?;
        let dcp = Store::sqlite_memory()?;
        Self::open_with(
            Stores {
                central: store,
                dcp,
                mds,
            },
            development_escrow_key(),
            NodeKeys::development(),
        )
    }

    /// Opens the back office with the supervisors' key set (`joint.cbor`
    /// of their ceremony): escrows are encrypted to its joint key, and a
    /// revocation after an opening must show the opening in their audit log.
    pub fn open_with_supervisors(
        stores: Stores,
        supervisors: tally_supervisor::JointParams,
        keys: NodeKeys,
    ) -> Result<Backoffice, BackofficeError> {
        let joint = supervisors.joint_key().clone();
        Self::open_node(stores, joint, Some(supervisors), keys)
    }

    /// Opens the back office: migrations, keys, policy, the MDS (and
    /// drains its outbox). Without the supervisors' key set, revocations
    /// are not checked against an audit log (development and tests).
    ///
    /// A database of an older node still holding key seeds opens only
    /// with the keys those seeds are (moved into key files by
    /// [`legacy_seeds`] and [`crate::keys::KeyDir::import_legacy`]); the
    /// seed tables are dropped then. With other keys it is refused and
    /// nothing changes ([`BackofficeError::KeysInDatabase`]).
    pub fn open_with(
        stores: Stores,
        escrow_key: JointKey,
        keys: NodeKeys,
    ) -> Result<Backoffice, BackofficeError> {
        Self::open_node(stores, escrow_key, None, keys)
    }

    /// A node: the central bank and DCP 1 in one process, on their own
    /// stores, the DCP reaching the central bank in process.
    fn open_node(
        stores: Stores,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        keys: NodeKeys,
    ) -> Result<Backoffice, BackofficeError> {
        Self::open_node_trusting(stores, escrow_key, supervisors, keys, &[])
    }

    /// [`Backoffice::open_with`] (or with the supervisors' key set) whose
    /// central bank also trusts the DCPs `more` (id, key) besides DCP 1:
    /// they run as their own [`Backoffice::open_dcp`] against
    /// [`Backoffice::central_bank`] (the demo's second DCP).
    pub fn open_node_trusting(
        stores: Stores,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        keys: NodeKeys,
        more: &[(u32, PublicKey)],
    ) -> Result<Backoffice, BackofficeError> {
        let Stores { central, dcp, mds } = stores;
        let legacy = legacy_seeds(&central, &dcp)?;
        if !legacy.match_keys(&keys) {
            return Err(BackofficeError::KeysInDatabase);
        }
        keys.self_test()?;
        let central_keys = CentralKeys {
            root: keys.root.clone(),
            settlement: keys.settlement.clone(),
            opening: keys.opening.clone(),
        };
        pin_central_keys(&central, &central_keys)?;
        // The DCP's key before the central bank opens: a wrong one changes nothing at the central
        // bank (its policy lists the DCP's key).
        dcp.migrate(&dcp_migrations())?;
        dcp.migrate(&[&DCP_KEY_CUSTODY_MIGRATIONS])?;
        pin_public_key(
            &dcp,
            "dcp_public_keys",
            "dcp",
            keys.dcp.public_key().to_cbor(),
        )?;
        let bank = Arc::new(Self::open_central(
            central,
            mds,
            central_keys,
            escrow_key,
            supervisors,
            &std::iter::once((DCP_ID, keys.dcp.public_key()))
                .chain(more.iter().copied())
                .collect::<Vec<_>>(),
        )?);
        let mut bo = Self::open_dcp(dcp, DCP_ID, keys.dcp, bank.clone())?;
        bo.bank = Some(bank);
        Ok(bo)
    }

    /// The central bank alone (`tally central`): its keys pinned in its
    /// store, trusting the DCPs `dcps`.
    pub fn open_central(
        central: Store,
        mds: Store,
        keys: CentralKeys,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        dcps: &[(u32, PublicKey)],
    ) -> Result<CentralBank, BackofficeError> {
        pin_central_keys(&central, &keys)?;
        CentralBank::open(central, mds, keys, escrow_key, supervisors, dcps)
    }

    /// A DCP alone (`tally dcp`) with id `id` and issuing key `signer`,
    /// reaching the central bank through `central`. The central bank must
    /// trust this key for this id (its policy's DCP list), or the DCP does
    /// not start.
    pub fn open_dcp(
        store: Store,
        id: u32,
        signer: Arc<NodeSigner>,
        central: Arc<dyn Central>,
    ) -> Result<Backoffice, BackofficeError> {
        store.migrate(&dcp_migrations())?;
        store.migrate(&[&DCP_KEY_CUSTODY_MIGRATIONS])?;
        let msg = tagged_hash(b"tally/v1/key-self-test", &[b"dcp"]).0;
        let sig = signer.try_sign(&msg)?;
        tally_core::crypto::verify(&signer.public_key(), &msg, &sig)
            .map_err(|_| KeyError::BadSignature { role: "dcp" })?;
        pin_public_key(
            &store,
            "dcp_public_keys",
            "dcp",
            signer.public_key().to_cbor(),
        )?;
        let trust = central.trust()?;
        if !trust
            .policy
            .dcps
            .iter()
            .any(|c| c.dcp_id == id && c.key == signer.public_key())
        {
            return Err(BackofficeError::UnknownDcp);
        }
        let bo = Backoffice {
            dcp: store,
            dcp_id: id,
            signer,
            central,
            bank: None,
        };
        bo.book_inbox()?;
        Ok(bo)
    }

    fn bank(&self) -> Result<&CentralBank, BackofficeError> {
        self.bank.as_deref().ok_or_else(|| BackofficeError::Remote {
            code: codes::CENTRAL_UNAVAILABLE,
            status: 503,
            message: "this process is a DCP: ask the central bank".into(),
        })
    }

    /// The central bank of a node (None in a DCP process).
    pub fn central_bank(&self) -> Option<&Arc<CentralBank>> {
        self.bank.as_ref()
    }

    /// The central bank's store (ledger, settlement, directory).
    ///
    /// # Panics
    /// In a DCP process (no central bank here).
    pub fn store(&self) -> &Store {
        self.bank
            .as_deref()
            .expect("the central bank's store is in the central bank's process")
            .store()
    }

    pub fn dcp_store(&self) -> &Store {
        &self.dcp
    }

    /// # Panics
    /// In a DCP process.
    pub fn mds(&self) -> &Mds {
        self.bank
            .as_deref()
            .expect("the MDS is in the central bank's process")
            .mds()
    }

    pub fn dcp_id(&self) -> u32 {
        self.dcp_id
    }

    pub fn root_key(&self) -> PublicKey {
        match &self.bank {
            Some(b) => b.root_key(),
            None => self
                .central
                .trust()
                .map(|t| t.root)
                .expect("the central bank answers"),
        }
    }

    pub fn dcp_key(&self) -> PublicKey {
        self.signer.public_key()
    }

    pub fn settlement_key(&self) -> SettlementKey {
        match &self.bank {
            Some(b) => b.settlement_key(),
            None => self
                .central
                .trust()
                .map(|t| t.settlement_key)
                .expect("the central bank answers"),
        }
    }

    pub fn sealing_key(&self) -> SealingKey {
        match &self.bank {
            Some(b) => b.sealing_key(),
            None => self
                .central
                .trust()
                .map(|t| t.sealing_key)
                .expect("the central bank answers"),
        }
    }

    pub fn escrow_key(&self) -> JointKey {
        match &self.bank {
            Some(b) => b.escrow_key(),
            None => self
                .central
                .trust()
                .map(|t| t.escrow_key)
                .expect("the central bank answers"),
        }
    }

    pub fn epoch(&self) -> Result<Epoch, BackofficeError> {
        Ok(self.central.trust()?.epoch)
    }

    /// The signed policy.
    pub fn policy(&self) -> Result<Policy, BackofficeError> {
        Ok(self.central.trust()?.policy)
    }

    /// Central bank: trusts an SE manufacturer's key for enrolment.
    pub fn trust_manufacturer(&self, key: PublicKey) -> Result<Policy, BackofficeError> {
        self.bank()?.trust_manufacturer(key)
    }

    /// DCP: a one-time enrolment code for `account`, to hand to the
    /// account holder out of band. Only its digest is stored; it works
    /// once, for one SE.
    pub fn enrolment_code(&self, account: &str) -> Result<String, BackofficeError> {
        if !valid_account_name(account) {
            return Err(BackofficeError::Decode(CodecError::Malformed));
        }
        let acct = user_account(account);
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let random = os_random_32()?;
        let mut code = String::with_capacity(19);
        for (i, b) in random.iter().take(16).enumerate() {
            if i > 0 && i % 4 == 0 {
                code.push('-');
            }
            code.push(ALPHABET[usize::from(b & 31)] as char);
        }
        let digest = enrolment_code_digest(&code);
        self.dcp.transact(|tx| {
            Book::ensure(tx, &acct)?;
            tx.execute(
                "INSERT INTO dcp_enrolment_codes (code_digest, account, se_id) VALUES ($1, $2, NULL)",
                &[b(&digest), acct.clone().into()],
            )?;
            Ok::<_, BackofficeError>(())
        })?;
        Ok(code)
    }

    pub fn revocations(&self) -> Result<RevocationList, BackofficeError> {
        Ok(self.central.trust()?.revocations)
    }

    /// What settlement verifies against (settlement worker processes).
    pub fn settlement_verifier(&self) -> Result<(TrustStore, VerifyParams), BackofficeError> {
        self.bank()?.settlement_verifier()
    }

    /// Opens one package sealed to settlement as a redemption.
    pub fn open_sealed_package(&self, sealed: &[u8]) -> Result<Package, BackofficeError> {
        self.bank()?.open_sealed_package(sealed)
    }

    pub fn advance_epoch(&self) -> Result<Epoch, BackofficeError> {
        self.bank()?.advance_epoch()
    }

    // ---- operators ------------------------------------------------------

    /// Central bank: mint `amount` into this DCP's settlement account
    /// (the DCP books it as its own money at once).
    pub fn mint(&self, idem: &str, amount: u64) -> Result<Invariant, BackofficeError> {
        let inv = self.bank()?.mint(self.dcp_id, idem, amount)?;
        self.book_inbox()?;
        Ok(inv)
    }

    /// Books the credits the central bank holds for this DCP (mints,
    /// interbank payments to its customers), each once, then acknowledges
    /// them. A credit for an account this DCP does not have goes to the
    /// suspense account. Returns how many were booked.
    pub fn book_inbox(&self) -> Result<usize, BackofficeError> {
        let entries = self.central.inbox(self.dcp_id)?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut ops = Vec::with_capacity(entries.len());
        for e in &entries {
            self.dcp.transact(|tx| {
                let to = match &e.account {
                    None => book::OWN.to_string(),
                    Some(a) => {
                        let acct = user_account(a);
                        if valid_account_name(a)
                            && tx
                                .query_one(
                                    "SELECT balance FROM dcp_accounts WHERE name = $1",
                                    &[acct.clone().into()],
                                )?
                                .is_some()
                        {
                            acct
                        } else {
                            book::SUSPENSE.to_string()
                        }
                    }
                };
                Book::post(tx, &format!("inbox:{}", e.op), None, Some(&to), e.amount)?;
                Ok::<_, BackofficeError>(())
            })?;
            ops.push(e.op);
        }
        self.central.ack_inbox(self.dcp_id, &ops)?;
        Ok(ops.len())
    }

    /// DCP: credit a customer's account from the DCP's own money (the
    /// customer paid in bank money). Opens the account if needed.
    pub fn deposit(&self, idem: &str, account: &str, amount: u64) -> Result<i64, BackofficeError> {
        if !valid_account_name(account) {
            return Err(BackofficeError::Decode(CodecError::Malformed));
        }
        self.book_inbox()?;
        let acct = user_account(account);
        self.dcp.transact(|tx| {
            Book::ensure(tx, &acct)?;
            Book::post(
                tx,
                &format!("deposit:{idem}"),
                Some(book::OWN),
                Some(&acct),
                amount,
            )?;
            Ok(Book::balance(tx, &acct)?)
        })
    }

    pub fn account_balance(&self, account: &str) -> Result<i64, BackofficeError> {
        self.dcp
            .transact(|tx| Ok(Book::balance(tx, &user_account(account))?))
    }

    /// This DCP's book against its settlement account at the central bank.
    pub fn reconcile(&self) -> Result<Reconciliation, BackofficeError> {
        self.book_inbox()?;
        let (book, book_audit_ok) = self
            .dcp
            .transact(|tx| Ok::<_, BackofficeError>(Book::audit(tx)?))?;
        Ok(Reconciliation {
            book,
            book_audit_ok,
            settlement_account: self.central.settlement_balance(self.dcp_id)?,
        })
    }

    pub fn invariant(&self) -> Result<Invariant, BackofficeError> {
        self.bank()?.invariant()
    }

    pub fn devices(&self) -> Result<Vec<SeEntry>, BackofficeError> {
        self.bank()?.devices()
    }

    /// Double spends found so far: (outpoint record, index, value, offender key bytes).
    pub fn double_spends(&self) -> Result<Vec<(Hash32, u8, u64, Vec<u8>)>, BackofficeError> {
        self.bank()?.double_spends()
    }

    /// The escrow (ciphertext) of the settled certificate of pseudonym
    /// `key_id`, for an opening request.
    pub fn escrow_of(&self, key_id: &Hash32) -> Result<Option<Vec<u8>>, BackofficeError> {
        self.bank()?.escrow_of(key_id)
    }

    /// Containment: the supervisors opened an escrow to identity-point
    /// digest `id_digest`. The directory revokes that SE (it can no longer
    /// sync, load or be certified) and puts `key_ids` on the next
    /// revocation list, which devices install at sync and then refuse
    /// those pseudonyms offline.
    ///
    /// Each key id must be a pseudonym whose settled certificate carried an
    /// escrow opened to `id_digest` (its escrow is kept by key id, see
    /// [`Backoffice::escrow_of`]); any other is refused
    /// (`RevocationKeyNotOpened`): an operator cannot name another SE's
    /// pseudonyms, nor link a pseudonym to this SE without an opening. At
    /// most [`tally_directory::REVOCATION_KEYS_PER_CALL_MAX`] keys per call
    /// and [`tally_directory::REVOCATION_LIST_ENTRIES_MAX`] on the list.
    /// A refusal changes nothing.
    ///
    /// With the supervisors' key set configured, `opening` must be their
    /// audit log (file bytes) and the request id whose logged k-of-n result
    /// opened to `id_digest`; the whole log is verified (chain, signatures,
    /// shares' proofs, recombination) before anything changes, and the
    /// opened escrows are those of every logged result that opened to
    /// `id_digest`. A development node (no key set) opens a key's escrow
    /// itself with the development secret, which is public.
    pub fn revoke_opened(
        &self,
        id_digest: &Hash32,
        key_ids: &[Hash32],
        reason: &str,
        opening: Option<(&[u8], &Hash32)>,
    ) -> Result<(Hash32, RevocationList), BackofficeError> {
        self.bank()?
            .revoke_opened(id_digest, key_ids, reason, opening)
    }

    // ---- monitoring -------------------------------------------------------

    pub fn alerts(&self) -> Result<Vec<tally_mds::Alert>, BackofficeError> {
        self.bank()?.alerts()
    }

    pub fn alert(&self, id: i64) -> Result<tally_mds::Alert, BackofficeError> {
        self.bank()?.alert(id)
    }

    pub fn alert_transition(
        &self,
        id: i64,
        to: tally_mds::AlertState,
        note: &str,
    ) -> Result<tally_mds::Alert, BackofficeError> {
        self.bank()?.alert_transition(id, to, note)
    }

    pub fn indicators(&self) -> Result<tally_mds::Indicators, BackofficeError> {
        self.bank()?.indicators()
    }

    /// Moves settled records from the outbox into the MDS (a node only).
    pub fn pump_mds(&self) {
        if let Some(b) = &self.bank {
            b.pump_mds();
        }
    }

    /// The MDS feed's backlog, for monitoring.
    pub fn mds_outbox(&self) -> Result<OutboxStatus, BackofficeError> {
        self.bank()?.mds_outbox()
    }

    // ---- devices --------------------------------------------------------

    /// Onboarding: registers the SE in the directory (attestation checked)
    /// and links it to a user account at this DCP, with a fresh secret
    /// escrow salt; the directory learns the digest of the SE's identity
    /// point (what supervisors resolve an opening with). Idempotent.
    pub fn register(&self, reg: &Registration) -> Result<Hash32, BackofficeError> {
        if !valid_account_name(&reg.account) {
            return Err(BackofficeError::BadEnrolment);
        }
        let acct = user_account(&reg.account);
        let se_id = reg.attestation_key().id();
        // A revoked SE does not get to use up a code.
        if let Some(e) = self.central.device(&se_id)? {
            if e.status != SeStatus::Active {
                return Err(BackofficeError::Directory(DirectoryError::Revoked));
            }
        }
        // Nor does an SE no trusted manufacturer certified.
        let manufacturers = self.central.trust()?.policy.manufacturers;
        if !manufacturers.contains(&reg.maker_cert.maker_key) || !reg.maker_cert.verify() {
            return Err(BackofficeError::Directory(
                DirectoryError::UntrustedManufacturer,
            ));
        }
        // The account's one-time code, bound to this SE (a retry by the
        // same SE finds it bound to itself).
        self.dcp.transact(|tx| {
            let codes = tx.query(
                "SELECT code_digest, se_id FROM dcp_enrolment_codes WHERE account = $1",
                &[acct.clone().into()],
            )?;
            for r in codes {
                let digest = hash(r.bytes(0)?)?;
                let message = enrolment_message(&se_id, &reg.account, &digest);
                if !check_attestation(reg.attestation_key(), &message, &reg.signature) {
                    continue;
                }
                if r.is_null(1) {
                    tx.execute(
                        "UPDATE dcp_enrolment_codes SET se_id = $1 WHERE code_digest = $2",
                        &[b(&se_id), b(&digest)],
                    )?;
                } else if r.bytes(1)? != se_id.0.as_slice() {
                    return Err(BackofficeError::EnrolmentCodeUsed);
                }
                return Ok(());
            }
            Err(BackofficeError::BadEnrolment)
        })?;
        let e = self.central.enrol(self.dcp_id, &reg.maker_cert)?;
        let reg_device_class = reg.maker_cert.device_class;
        let fresh = os_random_32()?;
        let salt: [u8; 32] = self.dcp.transact(|tx| {
            Book::ensure(tx, &acct)?;
            if let Some(r) = tx.query_one("SELECT escrow_salt FROM dcp_devices WHERE se_id = $1", &[b(&e.se_id)])? {
                return Ok::<_, BackofficeError>(r.bytes(0)?.try_into().map_err(|_| StoreError::Type("salt".into()))?);
            }
            tx.execute(
                "INSERT INTO dcp_devices (se_id, account, device_class, tier, last_counter, sync_seq, sync_epoch, escrow_salt) VALUES ($1, $2, $3, 0, 0, 0, 0, $4)",
                &[b(&e.se_id), acct.clone().into(), Value::Int(i64::from(reg_device_class)), fresh.to_vec().into()],
            )?;
            Ok(fresh)
        })?;
        let digest = IdPoint::derive(&e.se_id, &salt).digest();
        self.central.set_id_digest(self.dcp_id, &e.se_id, &digest)?;
        Ok(e.se_id)
    }

    /// Handles one signed device request (CBOR) and returns the CBOR
    /// response. Authenticated, idempotent, crash-safe:
    ///
    /// 1. the SE's signature and status (directory);
    /// 2. the DCP claims the counter for this request id (a different
    ///    request with a used counter is a replay);
    /// 3. the central bank executes its part once per request id (a retry
    ///    gets the stored result), the DCP books its customers' side once
    ///    per request id;
    /// 4. the DCP stores the response, encrypted under the request.
    ///
    /// A crash between any two steps is repaired by retrying the same
    /// request: every step is idempotent on the request id.
    pub fn handle_device(&self, body: &[u8]) -> Result<Vec<u8>, BackofficeError> {
        let req = DeviceRequest::from_cbor(body)?;
        if !req.attachment_matches() {
            return Err(BackofficeError::BadAttachment);
        }
        let rid = req.id();
        let entry = self
            .central
            .device(&req.se_id)?
            .ok_or(BackofficeError::UnknownDevice)?;
        // Built and signed by the SE itself, under the kind's own tag.
        if !check_attestation(
            &entry.attestation_key,
            &DeviceRequest::signed_message(&req.se_id, req.counter, &req.op),
            &req.signature,
        ) {
            return Err(BackofficeError::BadDeviceSignature);
        }
        if req.counter > i64::MAX as u64 {
            return Err(BackofficeError::Replay);
        }
        // Step 2: a stored response or refusal answers a retry; otherwise
        // claim the counter.
        let claimed = self.dcp.transact(|tx| {
            if let Some(r) = tx.query_one("SELECT response, refusal FROM dcp_requests WHERE request_id = $1", &[b(&rid)])? {
                if !r.is_null(0) {
                    return Ok(Err(Ok(r.bytes(0)?.to_vec())));
                }
                if !r.is_null(1) {
                    return Ok(Err(Err(r.bytes(1)?.to_vec())));
                }
            } else {
                let dev = tx
                    .query_one("SELECT last_counter FROM dcp_devices WHERE se_id = $1", &[b(&req.se_id)])?
                    .ok_or(BackofficeError::UnknownDevice)?;
                if (req.counter as i64) <= dev.int(0)? {
                    return Err(BackofficeError::Replay);
                }
                tx.execute("UPDATE dcp_devices SET last_counter = $1 WHERE se_id = $2", &[Value::Int(req.counter as i64), b(&req.se_id)])?;
                tx.execute(
                    "INSERT INTO dcp_requests (request_id, se_id, counter, response) VALUES ($1, $2, $3, NULL)",
                    &[b(&rid), b(&req.se_id), Value::Int(req.counter as i64)],
                )?;
            }
            let dev = tx
                .query_one("SELECT account, device_class, tier, sync_seq, sync_epoch, escrow_salt FROM dcp_devices WHERE se_id = $1", &[b(&req.se_id)])?
                .ok_or(BackofficeError::UnknownDevice)?;
            Ok(Ok(DeviceCtx {
                se_id: req.se_id,
                account: dev.text(0)?.to_string(),
                class: dev.int(1)? as u8,
                tier: dev.int(2)? as u8,
                sync_epoch: dev.int(4)? as Epoch,
                salt: dev.bytes(5)?.try_into().map_err(|_| StoreError::Type("salt".into()))?,
                counter: req.counter,
                rid,
                reply_key: tagged_hash(b"tally/v1/central-reply-key", &[body]),
            }))
        })?;
        let ctx = match claimed {
            Err(Ok(stored)) => return open_response(body, &stored),
            Err(Err(refusal)) => return Err(open_refusal(body, &refusal)?),
            Ok(ctx) => ctx,
        };
        let executed = if entry.status != SeStatus::Active {
            Err(BackofficeError::DeviceNotActive)
        } else {
            self.execute(&ctx, &entry, &req)
        };
        let resp = match executed {
            Ok(resp) => resp,
            Err(e) => return Err(self.refuse_finally(body, &rid, e)),
        };
        let bytes = resp.to_cbor();
        let sealed = seal_response(body, &bytes);
        self.dcp.transact(|tx| {
            tx.execute(
                "UPDATE dcp_requests SET response = $1 WHERE request_id = $2",
                &[sealed.clone().into(), b(&rid)],
            )?;
            if let DeviceOp::Redeem { nonce, .. } = &req.op {
                tx.execute(
                    "UPDATE dcp_redemptions SET done = 1 WHERE nonce = $1",
                    &[nonce.to_vec().into()],
                )?;
            }
            // A keyed tag (per-SE salt) of every Issue handed to this
            // device, so that only its own can be cancelled; the store
            // keeps no record id (decision 0007).
            let handed: Vec<&Issue> = match &resp {
                DeviceResponse::Issued(i) | DeviceResponse::Renewed { issue: i, .. } => vec![i],
                DeviceResponse::Synced(bundle) => bundle.recovered.iter().collect(),
                _ => Vec::new(),
            };
            for i in handed {
                let tag = handed_out_tag(&ctx.salt, &i.id());
                if tx
                    .query_one("SELECT tag FROM dcp_issues WHERE tag = $1", &[b(&tag)])?
                    .is_none()
                {
                    tx.execute("INSERT INTO dcp_issues (tag) VALUES ($1)", &[b(&tag)])?;
                }
            }
            if let DeviceResponse::Synced(bundle) = &resp {
                tx.execute(
                    "UPDATE dcp_devices SET sync_seq = $1, sync_epoch = $2 WHERE se_id = $3",
                    &[
                        Value::Int(bundle.grant.sequence as i64),
                        Value::Int(i64::from(bundle.grant.epoch)),
                        b(&ctx.se_id),
                    ],
                )?;
            }
            Ok::<_, BackofficeError>(())
        })?;
        Ok(bytes)
    }

    /// A failed request is final: a typed refusal (a 4xx) is stored for
    /// the request id, sealed under the request like a response, and the
    /// same bytes later get it back without executing (they might succeed
    /// after the account was topped up). Transient failures (store errors,
    /// serialization conflicts, an unreachable central bank: 5xx) are not
    /// stored, so a retry executes. Returns `e` as the caller must see it.
    fn refuse_finally(&self, body: &[u8], rid: &Hash32, e: BackofficeError) -> BackofficeError {
        if !e.is_final() {
            return e;
        }
        let sealed = seal_refusal(body, e.code(), e.status(), &e.to_string());
        let stored = self.dcp.transact(|tx| {
            tx.execute(
                "UPDATE dcp_requests SET refusal = $1 WHERE request_id = $2 AND response IS NULL",
                &[sealed.clone().into(), b(rid)],
            )?;
            Ok::<_, BackofficeError>(())
        });
        if let Err(s) = stored {
            // Not stored: the request stays retryable, the refusal stands.
            tracing::error!(error = %s, "device request refusal not stored");
        }
        e
    }

    /// Asks the central bank to execute `req` once for this device
    /// request and checks what it signed: the DCP acts on the result only.
    fn central_call(
        &self,
        trust: &CentralTrust,
        op: &Hash32,
        reply_key: &Hash32,
        req: &CentralRequest,
    ) -> Result<SettlementResult, BackofficeError> {
        let reply = self.central.call(self.dcp_id, op, reply_key, req)?;
        SettlementResult::open(&reply, &trust.settlement_key.key, &trust.root, op)
    }

    /// A customer's payment out of the book through the central bank
    /// (a load, an interbank payment), as a saga keyed by the request:
    /// the amount moves to `in-flight` first, then the central bank
    /// executes once, then the amount leaves the book — or, when the
    /// central bank answered with a failure (its transaction rolled back),
    /// goes back to the customer, and a retry of the request starts a new
    /// attempt. Only an unanswered call (the link dropped: the central
    /// bank may have executed it) leaves the amount in flight; the retry
    /// of the same request then finds the central bank's stored result.
    fn debit_through_central(
        &self,
        trust: &CentralTrust,
        ctx: &DeviceCtx,
        kind: &str,
        amount: u64,
        req: &CentralRequest,
    ) -> Result<SettlementResult, BackofficeError> {
        let rid = ctx.rid;
        let attempt = self.dcp.transact(|tx| {
            let mut n = 0u32;
            while Book::posted(tx, &format!("{kind}-returned:{rid}:{n}"))? {
                n += 1;
            }
            Book::post(
                tx,
                &format!("{kind}:{rid}:{n}"),
                Some(&ctx.account),
                Some(book::IN_FLIGHT),
                amount,
            )?;
            Ok::<_, BackofficeError>(n)
        })?;
        match self.central_call(trust, &rid, &ctx.reply_key, req) {
            Ok(res) => {
                if res.value != amount {
                    return Err(BackofficeError::BadSettlementResult);
                }
                self.dcp.transact(|tx| {
                    Book::post(
                        tx,
                        &format!("{kind}-settled:{rid}:{attempt}"),
                        Some(book::IN_FLIGHT),
                        None,
                        amount,
                    )?;
                    Ok::<_, BackofficeError>(())
                })?;
                Ok(res)
            }
            Err(e) if e.is_unanswered() => Err(e),
            Err(e) => {
                self.dcp.transact(|tx| {
                    Book::post(
                        tx,
                        &format!("{kind}-returned:{rid}:{attempt}"),
                        Some(book::IN_FLIGHT),
                        Some(&ctx.account),
                        amount,
                    )?;
                    Ok::<_, BackofficeError>(())
                })?;
                Err(e)
            }
        }
    }

    /// Money the central bank moved to this DCP for a customer (an unload,
    /// a cancelled Issue), booked once per `idem`.
    fn credit_customer(
        &self,
        idem: &str,
        account: &str,
        amount: u64,
    ) -> Result<u64, BackofficeError> {
        self.dcp.transact(|tx| {
            Book::post(tx, idem, None, Some(account), amount)?;
            Ok::<_, BackofficeError>(Book::balance(tx, account)? as u64)
        })
    }

    fn book_balance(&self, account: &str) -> Result<u64, BackofficeError> {
        Ok(self
            .dcp
            .transact(|tx| Ok::<_, BackofficeError>(Book::balance(tx, account)?))?
            as u64)
    }

    /// An Issue of this DCP for request `op` (part `n`): deterministic, so
    /// a retry signs the identical record.
    fn sign_issue(
        &self,
        op: &Hash32,
        n: u32,
        epoch: Epoch,
        amount: u64,
        key: PublicKey,
    ) -> Result<Issue, BackofficeError> {
        Ok(Issue::try_sign(
            &*self.signer,
            issue_serial(op, n),
            epoch + TOKEN_VALIDITY_EPOCHS,
            vec![Output {
                value: Amount(amount),
                owner: key,
            }],
        )?)
    }

    fn execute(
        &self,
        ctx: &DeviceCtx,
        entry: &SeEntry,
        req: &DeviceRequest,
    ) -> Result<DeviceResponse, BackofficeError> {
        let trust = self.central.trust()?;
        let epoch = trust.epoch;
        match &req.op {
            DeviceOp::Certify { keys } => self.certify(&trust, ctx, entry, epoch, keys),
            DeviceOp::Load { amount, key } => {
                check_key(key).map_err(|_| BackofficeError::BadKey)?;
                // Refused before anything is debited: a token the SE
                // cannot hold would strand the value in the float.
                let holding = trust
                    .policy
                    .limits(ctx.class, ctx.tier)
                    .map(|l| l.holding_max)
                    .ok_or(BackofficeError::LoadAboveHolding)?;
                if Amount(*amount) > holding {
                    return Err(BackofficeError::LoadAboveHolding);
                }
                if *amount == 0 {
                    return Err(BackofficeError::Ledger(LedgerError::ZeroAmount));
                }
                let issue = self.sign_issue(&ctx.rid, 0, epoch, *amount, *key)?;
                let res = self.debit_through_central(
                    &trust,
                    ctx,
                    "load",
                    *amount,
                    &CentralRequest::Load {
                        issue,
                        class: ctx.class,
                    },
                )?;
                // What the central bank registered (a retry after an
                // epoch change gets the first Issue, not a new one).
                let issue = res
                    .issues
                    .into_iter()
                    .next()
                    .ok_or(BackofficeError::BadSettlementResult)?;
                Ok(DeviceResponse::Issued(issue))
            }
            DeviceOp::RedemptionRequest { amount, unload } => {
                if *amount == 0 {
                    return Err(BackofficeError::Ledger(LedgerError::ZeroAmount));
                }
                let mut nonce = [0u8; 16];
                nonce.copy_from_slice(
                    &tagged_hash(b"tally/v1/redemption-nonce", &[&ctx.rid.0]).0[..16],
                );
                self.dcp.transact(|tx| {
                    if tx.query_one("SELECT done FROM dcp_redemptions WHERE nonce = $1", &[nonce.to_vec().into()])?.is_none() {
                        tx.execute(
                            "INSERT INTO dcp_redemptions (nonce, se_id, amount, unload, done) VALUES ($1, $2, $3, $4, 0)",
                            &[nonce.to_vec().into(), b(&ctx.se_id), Value::Int(*amount as i64), Value::Int(i64::from(*unload))],
                        )?;
                    }
                    Ok::<_, BackofficeError>(())
                })?;
                let cert = PseudonymCertificate::try_sign(
                    &*self.signer,
                    self.dcp_key(),
                    epoch + CERT_VALIDITY_EPOCHS,
                    device_class::DCP,
                    0,
                    Vec::new(),
                )?;
                let request =
                    Request::try_sign(&*self.signer, Amount(*amount), nonce, cert, epoch)?;
                // Bound to this SE: another SE refuses to pay it.
                Ok(DeviceResponse::Redemption(RedemptionOrder::try_sign(
                    &*self.signer,
                    ctx.se_id,
                    *unload,
                    request,
                )?))
            }
            DeviceOp::Redeem {
                nonce,
                transfer_id,
                key,
                ..
            } => self.redeem(&trust, ctx, nonce, transfer_id, &req.attachment, key),
            DeviceOp::Sync { reports, key, .. } => {
                if let Some(k) = key {
                    check_key(k).map_err(|_| BackofficeError::BadKey)?;
                }
                self.sync(&trust, ctx, &req.attachment, reports, key.as_ref())
            }
            DeviceOp::CancelIssue { issue } => self.cancel_issue(&trust, ctx, issue),
            DeviceOp::PayOnline { to_account, amount } => {
                let (name, to_dcp) = match to_account.rsplit_once('@') {
                    Some((n, d)) => (
                        n,
                        d.parse::<u32>()
                            .map_err(|_| LedgerError::UnknownAccount(to_account.clone()))?,
                    ),
                    None => (to_account.as_str(), self.dcp_id),
                };
                if !valid_account_name(name) {
                    return Err(LedgerError::UnknownAccount(to_account.clone()).into());
                }
                if to_dcp == self.dcp_id {
                    // Between two customers of this DCP: its own book.
                    let payee = user_account(name);
                    let balance = self.dcp.transact(|tx| {
                        Book::post(
                            tx,
                            &format!("online:{}", ctx.rid),
                            Some(&ctx.account),
                            Some(&payee),
                            *amount,
                        )?;
                        Ok::<_, BackofficeError>(Book::balance(tx, &ctx.account)? as u64)
                    })?;
                    return Ok(DeviceResponse::Balance { balance });
                }
                // To a customer of another DCP: through the central ledger.
                if *amount == 0 {
                    return Err(BackofficeError::Ledger(LedgerError::ZeroAmount));
                }
                self.debit_through_central(
                    &trust,
                    ctx,
                    "online",
                    *amount,
                    &CentralRequest::Pay {
                        to_dcp,
                        to_account: name.to_string(),
                        amount: *amount,
                    },
                )?;
                Ok(DeviceResponse::Balance {
                    balance: self.book_balance(&ctx.account)?,
                })
            }
            DeviceOp::Balance => {
                // Credits waiting at the central bank first (best effort:
                // the balance is what the book holds).
                if let Err(e) = self.book_inbox() {
                    tracing::warn!(error = %e, "inbox not booked");
                }
                Ok(DeviceResponse::Balance {
                    balance: self.book_balance(&ctx.account)?,
                })
            }
        }
    }

    /// An Issue the SE refused and cancelled (it recorded, in the commit
    /// that signed this request, that it will never credit it): its value
    /// goes back to the SE's account, once. Only an Issue this DCP gave
    /// this SE (a keyed tag of it was stored when it was handed out), whose
    /// outputs nothing has consumed; the outputs are then consumed in the
    /// spent registry, so a token of it appearing later is a double spend.
    fn cancel_issue(
        &self,
        trust: &CentralTrust,
        ctx: &DeviceCtx,
        issue: &Issue,
    ) -> Result<DeviceResponse, BackofficeError> {
        let id = issue.id();
        let dcp = self.dcp_key();
        if issue.issuer != dcp.id()
            || tally_core::crypto::verify(&dcp, &id.0, &issue.signature).is_err()
        {
            return Err(BackofficeError::NotCancellable);
        }
        let tag = handed_out_tag(&ctx.salt, &id);
        let ours = self.dcp.transact(|tx| {
            Ok::<_, BackofficeError>(
                tx.query_one("SELECT tag FROM dcp_issues WHERE tag = $1", &[b(&tag)])?
                    .is_some(),
            )
        })?;
        if !ours {
            return Err(BackofficeError::NotCancellable);
        }
        let amount: u64 = issue.outputs.iter().map(|o| o.value.0).sum();
        self.central_call(
            trust,
            &ctx.rid,
            &ctx.reply_key,
            &CentralRequest::Cancel {
                issue: issue.clone(),
            },
        )?;
        // Keyed by the Issue: a second cancellation credits nothing more.
        let balance = self.credit_customer(&format!("cancel:{id}"), &ctx.account, amount)?;
        Ok(DeviceResponse::Balance { balance })
    }

    /// Certifies fresh pseudonym keys. Each certificate carries the SE's
    /// identity point encrypted to the supervisors (fresh randomness, so
    /// certificates of one SE are unlinkable). The DCP makes the escrow
    /// from the salt it keeps and checks, before signing, that its proof
    /// verifies for the identity point whose digest the directory holds
    /// for this SE; the certificate then carries the ciphertext only
    /// (decision 0006).
    fn certify(
        &self,
        trust: &CentralTrust,
        ctx: &DeviceCtx,
        entry: &SeEntry,
        epoch: Epoch,
        keys: &[PublicKey],
    ) -> Result<DeviceResponse, BackofficeError> {
        let id = IdPoint::derive(&ctx.se_id, &ctx.salt);
        let registered = self.central.id_digest(self.dcp_id, &entry.se_id)?;
        if registered != Some(id.digest()) {
            return Err(BackofficeError::EscrowMismatch);
        }
        let escrow_key = &trust.escrow_key;
        let mut certs = Vec::with_capacity(keys.len());
        for k in keys {
            check_key(k).map_err(|_| BackofficeError::BadKey)?;
            let e = escrow::create(escrow_key, &id, &mut OsEntropy);
            escrow::verify(escrow_key, &id, &e.to_bytes())
                .map_err(|_| BackofficeError::EscrowMismatch)?;
            certs.push(PseudonymCertificate::try_sign(
                &*self.signer,
                *k,
                epoch + CERT_VALIDITY_EPOCHS,
                ctx.class,
                ctx.tier,
                e.ciphertext_only().to_bytes(),
            )?);
        }
        Ok(DeviceResponse::Certificates(certs))
    }

    fn redeem(
        &self,
        trust: &CentralTrust,
        ctx: &DeviceCtx,
        nonce: &[u8; 16],
        transfer_id: &Hash32,
        sealed: &[u8],
        key: &PublicKey,
    ) -> Result<DeviceResponse, BackofficeError> {
        check_key(key).map_err(|_| BackofficeError::BadKey)?;
        // The DCP's side: its own redemption request, by nonce.
        let (amount, unload) = self.dcp.transact(|tx| {
            let red = tx
                .query_one(
                    "SELECT se_id, amount, unload, done FROM dcp_redemptions WHERE nonce = $1",
                    &[nonce.to_vec().into()],
                )?
                .ok_or(BackofficeError::UnknownRedemption)?;
            if red.bytes(0)? != ctx.se_id.0.as_slice() || red.int(3)? != 0 {
                return Err(BackofficeError::UnknownRedemption);
            }
            Ok((red.int(1)? as u64, red.int(2)? != 0))
        })?;
        let renewal = if unload {
            None
        } else {
            Some(self.sign_issue(&ctx.rid, 0, trust.epoch, amount, *key)?)
        };
        // The central bank's side: opens, verifies, settles, pays out.
        let res = self.central_call(
            trust,
            &ctx.rid,
            &ctx.reply_key,
            &CentralRequest::Redeem {
                nonce: *nonce,
                transfer_id: *transfer_id,
                sealed: sealed.to_vec(),
                amount,
                renewal,
                class: ctx.class,
                last_sync: ctx.sync_epoch,
            },
        )?;
        let tid = res.transfer.ok_or(BackofficeError::BadSettlementResult)?;
        if res.value != amount {
            return Err(BackofficeError::BadSettlementResult);
        }
        let receipt = tally_core::Receipt::try_sign(&*self.signer, tid)?;
        if unload {
            let balance =
                self.credit_customer(&format!("unload:{}", ctx.rid), &ctx.account, amount)?;
            Ok(DeviceResponse::Unloaded { balance, receipt })
        } else {
            let issue = res
                .issues
                .into_iter()
                .next()
                .ok_or(BackofficeError::BadSettlementResult)?;
            Ok(DeviceResponse::Renewed { issue, receipt })
        }
    }

    fn sync(
        &self,
        trust: &CentralTrust,
        ctx: &DeviceCtx,
        sealed: &[u8],
        reports: &Hash32,
        key: Option<&PublicKey>,
    ) -> Result<DeviceResponse, BackofficeError> {
        // Where the central bank leaves tokens recovered or refunded for
        // this device: a per-device name only the DCP can link to the
        // device.
        let mailbox = tagged_hash(b"tally/v1/mailbox", &[&ctx.salt]);
        let res = self.central_call(
            trust,
            &ctx.rid,
            &ctx.reply_key,
            &CentralRequest::Sync {
                sealed: sealed.to_vec(),
                reports: *reports,
                mailbox,
                last_sync: ctx.sync_epoch,
            },
        )?;
        // Tokens waiting in the mailbox, issued now to the key the SE
        // named (none named: they wait for a later sync). The delivery is
        // its own central request, once per sync request: a retried sync
        // gets the same Issues back.
        let mut recovered = Vec::new();
        if let (Some(key), false) = (key, res.deliveries.is_empty()) {
            let mut issues = Vec::with_capacity(res.deliveries.len());
            for (tid, amount) in &res.deliveries {
                let delivery = tagged_hash(b"tally/v1/recovery-op", &[&ctx.rid.0, &tid.0]);
                issues.push((
                    *tid,
                    self.sign_issue(&delivery, 0, trust.epoch, *amount, *key)?,
                ));
            }
            let op = tagged_hash(b"tally/v1/deliver-op", &[&ctx.rid.0]);
            let reply_key = tagged_hash(b"tally/v1/deliver-reply-key", &[&ctx.reply_key.0]);
            let delivered = self.central_call(
                trust,
                &op,
                &reply_key,
                &CentralRequest::Deliver { mailbox, issues },
            )?;
            recovered = delivered.issues;
        }
        // The trust objects after the settlement (a revocation it caused
        // goes out now).
        let after = self.central.trust()?;
        Ok(DeviceResponse::Synced(SyncBundle {
            policy: after.policy,
            revocations: after.revocations,
            // The grant's sequence is this request's counter: the SE
            // drops the reports this request (or an earlier one) carried.
            grant: SyncGrant::try_sign(&*self.signer, ctx.se_id, trust.epoch, ctx.counter)?,
            recovered,
            double_spends: res.double_spends,
        }))
    }
}

/// The MDS outbox's backlog ([`Backoffice::mds_outbox`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Rows waiting for the MDS.
    pub pending: u64,
    /// Age of the oldest waiting row (0 when none, or only rows queued
    /// before queue times were kept).
    pub oldest_age_seconds: u64,
    /// Rows (or records) the MDS set aside so far, each with an alert.
    pub set_aside: u64,
}

/// Wall-clock seconds, for the outbox's queue times only (monitoring;
/// nothing the protocol decides depends on it).
pub(crate) fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Outbox body: `[[record, epoch, verdict (0 verified | code), classes bstr,
/// offline_epochs + 1 (0 unknown), unacknowledged], …]`.
pub(crate) fn encode_ingest(records: &[IngestRecord]) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(records.len());
    for r in records {
        w.array(6);
        r.record.write(&mut w);
        w.u64(u64::from(r.epoch));
        w.u64(match r.verdict {
            Verdict::Verified => 0,
            Verdict::Refused(c) => u64::from(c),
        });
        w.bytes(&r.output_classes);
        w.u64(r.offline_epochs.map(|e| u64::from(e) + 1).unwrap_or(0));
        w.bool(r.unacknowledged);
    }
    w.into_bytes()
}

pub(crate) fn decode_ingest(bytes: &[u8]) -> Result<Vec<IngestRecord>, CodecError> {
    let mut r = Reader::new(bytes);
    let n = r.array_max(1 << 20)?;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        r.array(6)?;
        let record = Record::read(&mut r)?;
        let epoch = r.u32()?;
        let verdict = match r.u16()? {
            0 => Verdict::Verified,
            c => Verdict::Refused(c),
        };
        let mut ir = IngestRecord::new(record, epoch, verdict);
        ir.output_classes = r.bytes_max(256)?.to_vec();
        ir.offline_epochs = match r.u64()? {
            0 => None,
            e => Some(u32::try_from(e - 1).map_err(|_| CodecError::Malformed)?),
        };
        ir.unacknowledged = r.bool()?;
        out.push(ir);
    }
    if r.position() != bytes.len() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(out)
}

struct DeviceCtx {
    se_id: Hash32,
    account: String,
    class: u8,
    tier: u8,
    sync_epoch: Epoch,
    salt: [u8; 32],
    /// The request's counter (a sync grant's sequence).
    counter: u64,
    rid: Hash32,
    /// Key of the central bank's stored reply (derived from the request).
    reply_key: Hash32,
}
