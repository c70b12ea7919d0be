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
use std::sync::Mutex;
use tally_codes as codes;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use tally_core::cert::{DcpCertificate, SettlementKey, role};

use crate::keys::{KeyError, NodeKeys, NodeSigner};
use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::{Entropy, check_key, tagged_hash};
use tally_core::escrow::{self, IdPoint, JointKey};
use tally_core::policy::{TierLimits, device_class};
use tally_core::sealed::{OpeningKey, SealError, SealedKind, SealingKey};
use tally_core::verify::{
    BoundedCertCache, VerifyError, VerifyParams, verify_package_for_settlement,
    verify_packages_for_settlement,
};
use tally_core::{
    Amount, Epoch, Hash32, Issue, OutPoint, Output, Package, Policy, PseudonymCertificate,
    PublicKey, Record, Request, RevocationList, SecretKey, Signature, Suite, SyncGrant, TrustStore,
};
use tally_directory::{Directory, DirectoryError, SeEntry, SeStatus, check_attestation};
use tally_ledger::ledger::{
    self, AccountKind, Invariant, Ledger, LedgerError, TransferRequest, code,
};
use tally_ledger::settlement::{DoubleSpend, Settlement, SettlementError};
use tally_mds::{IngestRecord, Mds, MdsConfig, Verdict};
use tally_store::{Migrations, Store, StoreError, Tx, TxFailure, Value};

use tally_core::dcp::*;

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
enum Checked {
    Verified(Box<tally_core::VerifiedPackage>),
    Refused(tally_core::Transfer, VerifyError),
    Malformed,
}

/// Epochs a pseudonym certificate stays valid after issuance.
pub const CERT_VALIDITY_EPOCHS: Epoch = 30;
/// Epochs a genesis token may circulate offline before renewal.
pub const TOKEN_VALIDITY_EPOCHS: Epoch = 60;
pub const DCP_ID: u32 = 1;
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
            BackofficeError::Mds { client: true, .. } => codes::DCP_MDS_REFUSED,
            BackofficeError::Mds { client: false, .. } => codes::NODE_MDS_FAILURE,
            BackofficeError::Store(_) => codes::NODE_INTERNAL,
        }
    }
    /// Client errors (4xx) versus server errors (5xx).
    pub fn is_client_error(&self) -> bool {
        if let BackofficeError::RefusedBefore { status, .. } = self {
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
            BackofficeError::RefusedBefore { status, .. } => *status,
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
fn development_open(
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

/// What the central bank answers the DCP for one device request: a result
/// signed by the root, plus the tokens it issued and the balance after.
/// Wire: `[1, op, settled, refused, value, double_spends, [Issue], balance,
/// transfer (bstr 0|32), signature]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettlementResult {
    /// The device request this answers.
    pub op: Hash32,
    /// Packages settled, and refused (failed verification).
    pub settled: u32,
    pub refused: u32,
    /// Value settled (redemption: the amount redeemed).
    pub value: u64,
    pub double_spends: u32,
    /// Renewal, load or recovered tokens.
    pub issues: Vec<Issue>,
    /// Account balance after the operation (unload, online payment, balance).
    pub balance: u64,
    /// Redemption: the id of the settled transfer.
    pub transfer: Option<Hash32>,
}

impl SettlementResult {
    fn write_body(&self, w: &mut Writer) {
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
    fn message(&self) -> Hash32 {
        let mut w = Writer::new();
        w.array(9);
        self.write_body(&mut w);
        tagged_hash(b"tally/v1/settlement-result", &[&w.into_bytes()])
    }
    fn sign(&self, key: &NodeSigner) -> Result<Vec<u8>, KeyError> {
        let mut w = Writer::new();
        w.array(10);
        self.write_body(&mut w);
        key.try_sign(&self.message().0)?.write(&mut w);
        Ok(w.into_bytes())
    }
    /// Decodes a signed result and checks it answers `op` under the
    /// settlement key (which the root certified), or under the root itself:
    /// results stored before the settlement key existed were signed by the
    /// root, and a retried request gets its stored result back.
    fn open(
        bytes: &[u8],
        settlement: &PublicKey,
        root: &PublicKey,
        op: &Hash32,
    ) -> Result<SettlementResult, BackofficeError> {
        let mut r = Reader::new(bytes);
        let res = (|| -> Result<(SettlementResult, Signature), CodecError> {
            r.array(10)?;
            r.version(1)?;
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
                },
                sig,
            ))
        })();
        let (res, sig) = res.map_err(|_| BackofficeError::BadSettlementResult)?;
        let msg = res.message();
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

pub struct Backoffice {
    central: Store,
    dcp: Store,
    mds: Mds,
    keys: NodeKeys,
    sealing_key: SealingKey,
    settlement_key: SettlementKey,
    escrow_key: JointKey,
    /// The supervisors' key set (production nodes): revocation after an
    /// opening then needs the opening's verified audit log.
    supervisors: Option<tally_supervisor::JointParams>,
    dcp_cert: DcpCertificate,
    cache: Mutex<BoundedCertCache>,
}

fn b(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

fn hash(bytes: &[u8]) -> Result<Hash32, StoreError> {
    Ok(Hash32(
        bytes
            .try_into()
            .map_err(|_| StoreError::Type("hash".into()))?,
    ))
}

fn meta(tx: &mut dyn Tx, k: &str) -> Result<i64, BackofficeError> {
    Ok(tx
        .query_one("SELECT v FROM node_meta WHERE k = $1", &[k.into()])?
        .ok_or_else(|| StoreError::Type(format!("node_meta.{k} missing")))?
        .int(0)?)
}

/// Issue serial of a token issued for device request `op` (part `n`):
/// derived, so a retried request re-issues the identical record.
/// What the DCP stores of an Issue it handed to a device: keyed by the
/// device's secret salt, so the table names no record.
fn handed_out_tag(salt: &[u8; 32], issue: &Hash32) -> Hash32 {
    tagged_hash(b"tally/v1/dcp-issue", &[salt, &issue.0])
}

fn issue_serial(op: &Hash32, n: u32) -> u64 {
    let h = tagged_hash(b"tally/v1/issue-serial", &[&op.0, &n.to_be_bytes()]);
    u64::from_be_bytes(h.0[..8].try_into().expect("8 bytes"))
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
        let mut bo = Self::open_with(stores, supervisors.joint_key().clone(), keys)?;
        bo.supervisors = Some(supervisors);
        Ok(bo)
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
        let Stores { central, dcp, mds } = stores;
        let legacy = legacy_seeds(&central, &dcp)?;
        if !legacy.match_keys(&keys) {
            return Err(BackofficeError::KeysInDatabase);
        }
        central.migrate(&[&CENTRAL_KEY_CUSTODY_MIGRATIONS])?;
        dcp.migrate(&[&DCP_KEY_CUSTODY_MIGRATIONS])?;
        keys.self_test()?;
        let root_cbor = keys.root.public_key().to_cbor();
        pin_public_key(&central, "node_public_keys", "root", root_cbor)?;
        let settlement_cbor = keys.settlement.public_key().to_cbor();
        pin_public_key(&central, "node_public_keys", "settlement", settlement_cbor)?;
        let opening = keys.opening.public().to_vec();
        pin_public_key(&central, "node_public_keys", "opening", opening)?;
        pin_public_key(
            &dcp,
            "dcp_public_keys",
            "dcp",
            keys.dcp.public_key().to_cbor(),
        )?;
        let dcp_cert = DcpCertificate::try_sign(
            &*keys.root,
            DCP_ID,
            keys.dcp.public_key(),
            role::ISSUE | role::CERTIFY | role::REDEEM | role::SYNC,
            Epoch::MAX,
        )?;
        let sealing_key = SealingKey::try_sign(&*keys.root, keys.opening.public())?;
        let settlement_key = SettlementKey::try_sign(&*keys.root, keys.settlement.public_key())?;
        // What devices and DCPs will check, checked before anything uses it.
        let root = keys.root.public_key();
        sealing_key
            .verify(&root)
            .map_err(|_| BackofficeError::Signer(KeyError::BadSignature { role: "root" }))?;
        settlement_key
            .verify(&root)
            .map_err(|_| BackofficeError::Signer(KeyError::BadSignature { role: "root" }))?;
        let dcp_id = keys.dcp.public_key().id();
        let payment_max = default_tiers()
            .iter()
            .filter(|t| t.device_class != device_class::DCP)
            .map(|t| t.payment_max.0)
            .max()
            .unwrap_or(0);
        let mds = Mds::open(mds, MdsConfig::new(vec![dcp_id], vec![dcp_id], payment_max))
            .map_err(|e| StoreError::Db(format!("MDS: {e}")))?;
        let bo = Backoffice {
            central,
            dcp,
            mds,
            keys,
            sealing_key,
            settlement_key,
            escrow_key,
            supervisors: None,
            dcp_cert,
            cache: Mutex::new(BoundedCertCache::new(100_000)),
        };
        bo.central.transact(|tx| {
            Ledger::ensure_account(tx, DCP_ACCOUNT, AccountKind::DcpSettlement)?;
            Ok::<_, BackofficeError>(())
        })?;
        bo.policy()?;
        bo.pump_mds();
        Ok(bo)
    }

    /// The central bank's store (ledger, settlement, directory).
    pub fn store(&self) -> &Store {
        &self.central
    }

    /// The DCP's store.
    pub fn dcp_store(&self) -> &Store {
        &self.dcp
    }

    pub fn mds(&self) -> &Mds {
        &self.mds
    }

    pub fn root_key(&self) -> PublicKey {
        self.keys.root.public_key()
    }

    pub fn dcp_key(&self) -> PublicKey {
        self.keys.dcp.public_key()
    }

    /// The key settlement results are signed with, certified by the root.
    pub fn settlement_key(&self) -> SettlementKey {
        self.settlement_key.clone()
    }

    /// Settlement's HPKE key, signed by the root: devices seal uploads to it.
    pub fn sealing_key(&self) -> SealingKey {
        self.sealing_key.clone()
    }

    /// The supervisors' joint key the DCP encrypts identities to.
    pub fn escrow_key(&self) -> JointKey {
        self.escrow_key.clone()
    }

    pub fn epoch(&self) -> Result<Epoch, BackofficeError> {
        self.central.transact(|tx| Ok(meta(tx, "epoch")? as Epoch))
    }

    /// The signed policy; re-signed (serial + 1) only when its content changes.
    pub fn policy(&self) -> Result<Policy, BackofficeError> {
        self.central.transact(|tx| self.policy_in(tx))
    }

    fn policy_in(&self, tx: &mut dyn Tx) -> Result<Policy, BackofficeError> {
        let tiers = default_tiers();
        let dcps = vec![self.dcp_cert.clone()];
        let manufacturers = Self::manufacturers_in(tx)?;
        let old = tx.query_one("SELECT body FROM node_docs WHERE k = 'policy'", &[])?;
        let serial = match &old {
            Some(r) => {
                let p = Policy::from_cbor(r.bytes(0)?)?;
                if p.tiers == tiers && p.dcps == dcps && p.manufacturers == manufacturers {
                    return Ok(p);
                }
                p.serial + 1
            }
            None => 1,
        };
        let p = Policy::try_sign(&*self.keys.root, serial, "XTS", tiers, dcps, manufacturers)?;
        if old.is_some() {
            tx.execute(
                "UPDATE node_docs SET body = $1 WHERE k = 'policy'",
                &[p.to_cbor().into()],
            )?;
        } else {
            tx.execute(
                "INSERT INTO node_docs (k, body) VALUES ('policy', $1)",
                &[p.to_cbor().into()],
            )?;
        }
        Ok(p)
    }

    fn manufacturers_in(tx: &mut dyn Tx) -> Result<Vec<PublicKey>, BackofficeError> {
        match tx.query_one("SELECT body FROM node_docs WHERE k = 'manufacturers'", &[])? {
            None => Ok(Vec::new()),
            Some(r) => {
                let bytes = r.bytes(0)?;
                let mut rd = Reader::new(bytes);
                Ok(tally_core::codec::read_vec(
                    &mut rd,
                    tally_core::policy::MANUFACTURERS_MAX,
                )?)
            }
        }
    }

    /// Central bank: trusts an SE manufacturer's key for enrolment (the
    /// policy is re-signed with it). Idempotent.
    pub fn trust_manufacturer(&self, key: PublicKey) -> Result<Policy, BackofficeError> {
        check_key(&key).map_err(|_| BackofficeError::BadKey)?;
        self.central.transact(|tx| {
            let mut list = Self::manufacturers_in(tx)?;
            if !list.contains(&key) {
                if list.len() >= tally_core::policy::MANUFACTURERS_MAX {
                    return Err(BackofficeError::Decode(CodecError::TooLong));
                }
                list.push(key);
                let mut w = Writer::new();
                tally_core::codec::write_vec(&mut w, &list);
                tx.execute("DELETE FROM node_docs WHERE k = 'manufacturers'", &[])?;
                tx.execute(
                    "INSERT INTO node_docs (k, body) VALUES ('manufacturers', $1)",
                    &[w.into_bytes().into()],
                )?;
            }
            self.policy_in(tx)
        })
    }

    /// DCP: a one-time enrolment code for `account`, to hand to the
    /// account holder out of band. Only its digest is stored; it works
    /// once, for one SE.
    pub fn enrolment_code(&self, account: &str) -> Result<String, BackofficeError> {
        if !valid_account_name(account) {
            return Err(BackofficeError::Decode(CodecError::Malformed));
        }
        let acct = user_account(account);
        self.central.transact(|tx| {
            Ledger::ensure_account(tx, &acct, AccountKind::User)?;
            Ok::<_, BackofficeError>(())
        })?;
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
            tx.execute(
                "INSERT INTO dcp_enrolment_codes (code_digest, account, se_id) VALUES ($1, $2, NULL)",
                &[b(&digest), acct.clone().into()],
            )?;
            Ok::<_, BackofficeError>(())
        })?;
        Ok(code)
    }

    pub fn revocations(&self) -> Result<RevocationList, BackofficeError> {
        self.central.transact(|tx| self.revocations_in(tx))
    }

    fn revocations_in(&self, tx: &mut dyn Tx) -> Result<RevocationList, BackofficeError> {
        let epoch = meta(tx, "epoch")? as Epoch;
        Directory::revocation_list::<_, BackofficeError>(tx, &*self.keys.root, epoch)
    }

    /// The trust objects of a short read transaction (verification runs
    /// outside the settlement transaction).
    fn trust(&self) -> Result<TrustStore, BackofficeError> {
        self.central.transact(|tx| self.trust_in(tx))
    }

    fn trust_in(&self, tx: &mut dyn Tx) -> Result<TrustStore, BackofficeError> {
        Ok(TrustStore::new(
            self.root_key(),
            self.policy_in(tx)?,
            self.revocations_in(tx)?,
        )?)
    }

    /// What settlement verifies against, read in a short transaction: the
    /// trust objects and the parameters (the DCP tier's history budget).
    /// Settlement worker processes (`tally settle-worker`) use it too.
    pub fn settlement_verifier(&self) -> Result<(TrustStore, VerifyParams), BackofficeError> {
        let trust = self.trust()?;
        let budget = trust
            .policy()
            .limits(device_class::DCP, 0)
            .map(|l| usize::from(l.history_records_max))
            .unwrap_or(1024);
        Ok((
            trust,
            VerifyParams {
                epoch: 0,
                history_records_max: budget,
                signature_batch_max: usize::MAX,
            },
        ))
    }

    /// Opens one package sealed to settlement as a redemption (what the
    /// settlement queue carries), outside any transaction.
    pub fn open_sealed_package(&self, sealed: &[u8]) -> Result<Package, BackofficeError> {
        Ok(Package::from_cbor(
            &self.keys.opening.open(SealedKind::Redemption, sealed)?,
        )?)
    }

    pub fn advance_epoch(&self) -> Result<Epoch, BackofficeError> {
        self.central.transact(|tx| {
            tx.execute("UPDATE node_meta SET v = v + 1 WHERE k = 'epoch'", &[])?;
            Ok(meta(tx, "epoch")? as Epoch)
        })
    }

    // ---- operators ------------------------------------------------------

    /// Central bank: mint `amount` into the DCP's settlement account.
    pub fn mint(&self, idem: &str, amount: u64) -> Result<Invariant, BackofficeError> {
        self.central.transact(|tx| {
            Ledger::mint(tx, &format!("mint:{idem}"), DCP_ACCOUNT, amount)?;
            Ledger::assert_invariant(tx)?;
            // Minting is rare: the operator gets the full audit back.
            Ok(Ledger::audit(tx)?)
        })
    }

    /// DCP: credit a user's account from the DCP's settlement account
    /// (the user paid in bank money). Opens the account if needed.
    pub fn deposit(&self, idem: &str, account: &str, amount: u64) -> Result<i64, BackofficeError> {
        if !valid_account_name(account) {
            return Err(BackofficeError::Decode(CodecError::Malformed));
        }
        let acct = user_account(account);
        self.central.transact(|tx| {
            Ledger::ensure_account(tx, &acct, AccountKind::User)?;
            Ledger::transfer(
                tx,
                &TransferRequest {
                    idem: format!("deposit:{idem}"),
                    debit: DCP_ACCOUNT.into(),
                    credit: acct.clone(),
                    amount,
                    code: code::TRANSFER,
                },
            )?;
            Ledger::assert_invariant(tx)?;
            Ok(Ledger::balance(tx, &acct)?)
        })
    }

    pub fn account_balance(&self, account: &str) -> Result<i64, BackofficeError> {
        self.central
            .transact(|tx| Ok(Ledger::balance(tx, &user_account(account))?))
    }

    pub fn invariant(&self) -> Result<Invariant, BackofficeError> {
        self.central.transact(|tx| Ok(Ledger::invariant(tx)?))
    }

    pub fn devices(&self) -> Result<Vec<SeEntry>, BackofficeError> {
        self.central.transact(|tx| Ok(Directory::list(tx)?))
    }

    /// Double spends found so far: (outpoint record, index, value, offender key bytes).
    pub fn double_spends(&self) -> Result<Vec<(Hash32, u8, u64, Vec<u8>)>, BackofficeError> {
        self.central.transact(|tx| {
            tx.query(
                "SELECT record, idx, value, offender_key FROM double_spends ORDER BY seq",
                &[],
            )?
            .iter()
            .map(|r| -> Result<_, BackofficeError> {
                Ok((
                    hash(r.bytes(0)?)?,
                    r.int(1)? as u8,
                    r.int(2)? as u64,
                    r.bytes(3)?.to_vec(),
                ))
            })
            .collect()
        })
    }

    /// The escrow (ciphertext) of the settled certificate of pseudonym
    /// `key_id`, for an opening request.
    pub fn escrow_of(&self, key_id: &Hash32) -> Result<Option<Vec<u8>>, BackofficeError> {
        self.central.transact(|tx| {
            Ok(tx
                .query_one(
                    "SELECT escrow FROM cb_escrows WHERE key_id = $1",
                    &[b(key_id)],
                )?
                .map(|r| r.bytes(0).map(|x| x.to_vec()))
                .transpose()?)
        })
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
        if key_ids.len() > tally_directory::REVOCATION_KEYS_PER_CALL_MAX {
            return Err(DirectoryError::TooManyRevocations {
                keys: key_ids.len(),
                max: tally_directory::REVOCATION_KEYS_PER_CALL_MAX,
            }
            .into());
        }
        // The ciphertexts opened to `id_digest` (None: development node).
        let opened: Option<Vec<Vec<u8>>> = match &self.supervisors {
            Some(params) => {
                let (log, request) = opening.ok_or(BackofficeError::OpeningNotShown)?;
                let log = tally_supervisor::AuditLog::from_bytes(log, params, None)
                    .map_err(|_| BackofficeError::OpeningNotShown)?;
                let result = log
                    .result(request)
                    .ok_or(BackofficeError::OpeningNotShown)?;
                if &result.point.digest() != id_digest {
                    return Err(BackofficeError::OpeningNotShown);
                }
                let summary = log.verify().map_err(|_| BackofficeError::OpeningNotShown)?;
                Some(
                    summary
                        .openings
                        .iter()
                        .filter(|o| &o.point.digest() == id_digest)
                        .filter_map(|o| log.request(&o.request_id))
                        .map(|r| r.request().escrow().ciphertext().to_bytes())
                        .collect(),
                )
            }
            None => None,
        };
        for k in key_ids {
            let stored = self
                .escrow_of(k)?
                .ok_or(BackofficeError::RevocationKeyNotOpened(*k))?;
            let ct = escrow::EscrowCiphertext::from_bytes(&stored)
                .map_err(|_| BackofficeError::RevocationKeyNotOpened(*k))?
                .ciphertext();
            let bound = match &opened {
                Some(opened) => opened.contains(&ct.to_bytes()),
                None => {
                    development_open(&self.escrow_key, ct.random_element(), ct.blinded_element())
                        .as_ref()
                        == Some(id_digest)
                }
            };
            if !bound {
                return Err(BackofficeError::RevocationKeyNotOpened(*k));
            }
        }
        self.central.transact(|tx| {
            let se_id =
                Directory::se_by_id_digest(tx, id_digest)?.ok_or(BackofficeError::UnknownDevice)?;
            Directory::set_status(tx, &se_id, SeStatus::Revoked)?;
            Directory::revoke_keys(tx, Some(&se_id), key_ids, reason)?;
            Ok((se_id, self.revocations_in(tx)?))
        })
    }

    // ---- monitoring -------------------------------------------------------

    pub fn alerts(&self) -> Result<Vec<tally_mds::Alert>, BackofficeError> {
        self.pump_mds();
        Ok(self.mds.alerts()?)
    }

    pub fn alert(&self, id: i64) -> Result<tally_mds::Alert, BackofficeError> {
        Ok(self.mds.alert(id)?)
    }

    pub fn alert_transition(
        &self,
        id: i64,
        to: tally_mds::AlertState,
        note: &str,
    ) -> Result<tally_mds::Alert, BackofficeError> {
        Ok(self.mds.transition(id, to, note)?)
    }

    pub fn indicators(&self) -> Result<tally_mds::Indicators, BackofficeError> {
        self.pump_mds();
        Ok(self.mds.indicators()?)
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
        if let Some(e) = self
            .central
            .transact(|tx| Ok::<_, BackofficeError>(Directory::get(tx, &se_id)?))?
        {
            if e.status != SeStatus::Active {
                return Err(BackofficeError::Directory(DirectoryError::Revoked));
            }
        }
        // Nor does an SE no trusted manufacturer certified.
        let manufacturers = self.policy()?.manufacturers;
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
        let e = self.central.transact(|tx| {
            let e = Directory::register(tx, &reg.maker_cert, &manufacturers)?;
            Ledger::ensure_account(tx, &acct, AccountKind::User)?;
            Ok::<_, BackofficeError>(e)
        })?;
        let reg_device_class = reg.maker_cert.device_class;
        let fresh = os_random_32()?;
        let salt: [u8; 32] = self.dcp.transact(|tx| {
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
        self.central.transact(|tx| {
            Directory::set_id_digest(tx, &e.se_id, &digest)?;
            Ok::<_, BackofficeError>(())
        })?;
        Ok(e.se_id)
    }

    /// Handles one signed device request (CBOR) and returns the CBOR
    /// response. Authenticated, idempotent, crash-safe:
    ///
    /// 1. the SE's signature and status (directory);
    /// 2. the DCP claims the counter for this request id (a different
    ///    request with a used counter is a replay);
    /// 3. the central bank executes the operation in one transaction keyed
    ///    by the request id (a retry gets the stored result);
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
            .transact(|tx| Ok::<_, BackofficeError>(Directory::get(tx, &req.se_id)?))?
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
        // Settlement's records reach the MDS after its commit (outbox).
        if matches!(
            req.op,
            DeviceOp::Sync { .. } | DeviceOp::Redeem { .. } | DeviceOp::Load { .. }
        ) {
            self.pump_mds();
        }
        Ok(bytes)
    }

    /// A failed request is final: a typed refusal (a 4xx) is stored for
    /// the request id, sealed under the request like a response, and the
    /// same bytes later get it back without executing (they might succeed
    /// after the account was topped up). Transient failures (store errors,
    /// serialization conflicts: 5xx) are not stored, so a retry executes.
    /// Returns `e` as the caller must see it.
    fn refuse_finally(&self, body: &[u8], rid: &Hash32, e: BackofficeError) -> BackofficeError {
        if !e.is_client_error() || e.is_conflict() {
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

    /// Runs `f` once per device request on the central store: the reply is
    /// stored under the request id and a retry gets it back unchanged.
    /// The ledger invariant is asserted before the commit.
    ///
    /// The stored reply is encrypted under `reply_key`, which the DCP
    /// derives from the signed request: the central store keeps no link
    /// from a request (and so from the account its journal entries name)
    /// to the tokens it issued or settled.
    fn central_call(
        &self,
        op: &Hash32,
        reply_key: &Hash32,
        mut f: impl FnMut(&mut dyn Tx) -> Result<SettlementResult, BackofficeError>,
    ) -> Result<SettlementResult, BackofficeError> {
        let cipher = XChaCha20Poly1305::new((&reply_key.0).into());
        let reply = self.central.transact(|tx| {
            if let Some(r) = tx.query_one("SELECT reply FROM cb_ops WHERE op_id = $1", &[b(op)])? {
                return cipher
                    .decrypt(&XNonce::default(), r.bytes(0)?)
                    .map_err(|_| BackofficeError::BadSettlementResult);
            }
            let mut res = f(tx)?;
            res.op = *op;
            let signed = res.sign(&*self.keys.settlement)?;
            // One key per request and one reply per key: a fixed nonce is safe.
            let sealed = cipher
                .encrypt(&XNonce::default(), signed.as_slice())
                .map_err(|_| BackofficeError::BadSettlementResult)?;
            tx.execute(
                "INSERT INTO cb_ops (op_id, reply) VALUES ($1, $2)",
                &[b(op), sealed.into()],
            )?;
            Ledger::assert_invariant(tx)?;
            Ok::<_, BackofficeError>(signed)
        })?;
        // What the DCP acts on is what the central bank signed.
        SettlementResult::open(&reply, &self.settlement_key.key, &self.root_key(), op)
    }

    fn execute(
        &self,
        ctx: &DeviceCtx,
        entry: &SeEntry,
        req: &DeviceRequest,
    ) -> Result<DeviceResponse, BackofficeError> {
        let epoch = self.epoch()?;
        match &req.op {
            DeviceOp::Certify { keys } => self.certify(ctx, entry, epoch, keys),
            DeviceOp::Load { amount, key } => {
                check_key(key).map_err(|_| BackofficeError::BadKey)?;
                // Refused before anything is debited: a token the SE
                // cannot hold would strand the value in the float.
                let holding = self
                    .policy()?
                    .limits(ctx.class, ctx.tier)
                    .map(|l| l.holding_max)
                    .ok_or(BackofficeError::LoadAboveHolding)?;
                if Amount(*amount) > holding {
                    return Err(BackofficeError::LoadAboveHolding);
                }
                let res = self.central_call(&ctx.rid, &ctx.reply_key, |tx| {
                    Ledger::transfer(
                        tx,
                        &TransferRequest {
                            idem: format!("load:{}", ctx.rid),
                            debit: ctx.account.clone(),
                            credit: ledger::OFFLINE_FLOAT.into(),
                            amount: *amount,
                            code: code::LOAD,
                        },
                    )?;
                    let issue = self.issue(tx, &ctx.rid, 0, epoch, *amount, *key, ctx.class)?;
                    Ok(SettlementResult {
                        value: *amount,
                        issues: vec![issue],
                        ..SettlementResult::default()
                    })
                })?;
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
                    &*self.keys.dcp,
                    self.dcp_key(),
                    epoch + CERT_VALIDITY_EPOCHS,
                    device_class::DCP,
                    0,
                    Vec::new(),
                )?;
                let request =
                    Request::try_sign(&*self.keys.dcp, Amount(*amount), nonce, cert, epoch)?;
                // Bound to this SE: another SE refuses to pay it.
                Ok(DeviceResponse::Redemption(RedemptionOrder::try_sign(
                    &*self.keys.dcp,
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
            } => self.redeem(ctx, epoch, nonce, transfer_id, &req.attachment, key),
            DeviceOp::Sync { reports, key, .. } => {
                if let Some(k) = key {
                    check_key(k).map_err(|_| BackofficeError::BadKey)?;
                }
                self.sync(ctx, epoch, &req.attachment, reports, key.as_ref())
            }
            DeviceOp::CancelIssue { issue } => self.cancel_issue(ctx, issue),
            DeviceOp::PayOnline { to_account, amount } => {
                let res = self.central_call(&ctx.rid, &ctx.reply_key, |tx| {
                    Ledger::transfer(
                        tx,
                        &TransferRequest {
                            idem: format!("online:{}", ctx.rid),
                            debit: ctx.account.clone(),
                            credit: user_account(to_account),
                            amount: *amount,
                            code: code::ONLINE_PAYMENT,
                        },
                    )?;
                    Ok(SettlementResult {
                        balance: Ledger::balance(tx, &ctx.account)? as u64,
                        ..SettlementResult::default()
                    })
                })?;
                Ok(DeviceResponse::Balance {
                    balance: res.balance,
                })
            }
            DeviceOp::Balance => Ok(DeviceResponse::Balance {
                balance: self.account_balance_of(&ctx.account)? as u64,
            }),
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
        let by = tagged_hash(b"tally/v1/cancel", &[&id.0]);
        let res = self.central_call(&ctx.rid, &ctx.reply_key, |tx| {
            for i in 0..issue.outputs.len() {
                let op = OutPoint {
                    record: id,
                    index: i as u8,
                };
                if !Settlement::consume_stranded(tx, &op, &by)?
                    && Settlement::is_spent(tx, &op)? != Some(by)
                {
                    return Err(BackofficeError::NotCancellable);
                }
            }
            // Keyed by the Issue: a second cancellation (another request
            // of the same SE) credits nothing more.
            Ledger::transfer(
                tx,
                &TransferRequest {
                    idem: format!("cancel:{id}"),
                    debit: ledger::OFFLINE_FLOAT.into(),
                    credit: ctx.account.clone(),
                    amount,
                    code: code::UNLOAD,
                },
            )?;
            Ok(SettlementResult {
                value: amount,
                balance: Ledger::balance(tx, &ctx.account)? as u64,
                ..SettlementResult::default()
            })
        })?;
        Ok(DeviceResponse::Balance {
            balance: res.balance,
        })
    }

    fn account_balance_of(&self, account: &str) -> Result<i64, BackofficeError> {
        self.central
            .transact(|tx| Ok(Ledger::balance(tx, account)?))
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
        ctx: &DeviceCtx,
        entry: &SeEntry,
        epoch: Epoch,
        keys: &[PublicKey],
    ) -> Result<DeviceResponse, BackofficeError> {
        let id = IdPoint::derive(&ctx.se_id, &ctx.salt);
        let registered = self
            .central
            .transact(|tx| Ok::<_, BackofficeError>(Directory::id_digest(tx, &entry.se_id)?))?;
        if registered != Some(id.digest()) {
            return Err(BackofficeError::EscrowMismatch);
        }
        let mut certs = Vec::with_capacity(keys.len());
        for k in keys {
            check_key(k).map_err(|_| BackofficeError::BadKey)?;
            let e = escrow::create(&self.escrow_key, &id, &mut OsEntropy);
            escrow::verify(&self.escrow_key, &id, &e.to_bytes())
                .map_err(|_| BackofficeError::EscrowMismatch)?;
            certs.push(PseudonymCertificate::try_sign(
                &*self.keys.dcp,
                *k,
                epoch + CERT_VALIDITY_EPOCHS,
                ctx.class,
                ctx.tier,
                e.ciphertext_only().to_bytes(),
            )?);
        }
        Ok(DeviceResponse::Certificates(certs))
    }

    fn issue(
        &self,
        tx: &mut dyn Tx,
        op: &Hash32,
        n: u32,
        epoch: Epoch,
        amount: u64,
        key: PublicKey,
        owner_class: u8,
    ) -> Result<Issue, BackofficeError> {
        let issue = Issue::try_sign(
            &*self.keys.dcp,
            issue_serial(op, n),
            epoch + TOKEN_VALIDITY_EPOCHS,
            vec![Output {
                value: Amount(amount),
                owner: key,
            }],
        )?;
        Settlement::register_issue(tx, DCP_ID, &issue)?;
        // The MDS counts money from its issuance (circulation = issued −
        // redeemed), not from when it first reaches settlement.
        let mut r = IngestRecord::new(Record::Issue(issue.clone()), epoch, Verdict::Verified);
        r.output_classes = vec![owner_class];
        self.queue_mds(
            tx,
            &tagged_hash(b"tally/v1/outbox-issue", &[&issue.id().0]),
            &[r],
        )?;
        Ok(issue)
    }

    fn verify_for_settlement(
        &self,
        tx: &mut dyn Tx,
        pkg: Package,
    ) -> Result<tally_core::VerifiedPackage, BackofficeError> {
        let trust = self.trust_in(tx)?;
        self.verify_with(&trust, pkg)
    }

    /// Checks an upload's packages against the trust objects of a short
    /// read transaction, before the settlement transaction: the signature
    /// checks of one device's upload never run inside a transaction that
    /// holds locks (or repeat on a serialization retry). A policy or
    /// revocation change between the two is picked up by the next upload.
    fn precheck(&self, packages: &[Vec<u8>]) -> Result<Vec<Checked>, BackofficeError> {
        let (trust, params) = self.settlement_verifier()?;
        // One signature batch for the whole upload; each package still
        // gets the answer it would get on its own.
        let mut decoded = Vec::with_capacity(packages.len());
        let mut transfers = Vec::with_capacity(packages.len());
        let mut slots = Vec::with_capacity(packages.len());
        for p in packages {
            match Package::from_cbor(p) {
                Err(_) => slots.push(false),
                Ok(pkg) => {
                    transfers.push(pkg.transfer.clone());
                    decoded.push(pkg);
                    slots.push(true);
                }
            }
        }
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| StoreError::Db("cache poisoned".into()))?;
        let mut verified = verify_packages_for_settlement(decoded, &trust, params, &mut *cache)
            .into_iter()
            .zip(transfers);
        let mut out = Vec::with_capacity(packages.len());
        for decoded in slots {
            out.push(match (decoded, verified.next()) {
                (false, _) => Checked::Malformed,
                (true, Some((Ok(v), _))) => Checked::Verified(Box::new(v)),
                (true, Some((Err(e), transfer))) => Checked::Refused(transfer, e),
                (true, None) => {
                    return Err(StoreError::Type("verification lost a package".into()).into());
                }
            });
        }
        Ok(out)
    }

    fn verify_with(
        &self,
        trust: &TrustStore,
        pkg: Package,
    ) -> Result<tally_core::VerifiedPackage, BackofficeError> {
        let budget = trust
            .policy()
            .limits(device_class::DCP, 0)
            .map(|l| usize::from(l.history_records_max))
            .unwrap_or(1024);
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| StoreError::Db("cache poisoned".into()))?;
        Ok(verify_package_for_settlement(
            pkg,
            trust,
            VerifyParams {
                epoch: 0,
                history_records_max: budget,
                signature_batch_max: usize::MAX,
            },
            &mut *cache,
        )?)
    }

    /// Settlement's side of a settled package: keeps the escrows of its
    /// certificates (for openings) and queues its records for the MDS.
    fn record_settled(
        &self,
        tx: &mut dyn Tx,
        pkg: &Package,
        epoch: Epoch,
        offline_epochs: Option<u32>,
        unacknowledged: bool,
        out: &mut Vec<IngestRecord>,
    ) -> Result<(), BackofficeError> {
        let mut classes = std::collections::HashMap::new();
        classes.insert(self.dcp_key(), device_class::DCP);
        for c in &pkg.certificates {
            classes.insert(c.key, c.device_class);
            if !c.escrow.is_empty()
                && tx
                    .query_one(
                        "SELECT key_id FROM cb_escrows WHERE key_id = $1",
                        &[b(&c.key.id())],
                    )?
                    .is_none()
            {
                tx.execute(
                    "INSERT INTO cb_escrows (key_id, escrow) VALUES ($1, $2)",
                    &[b(&c.key.id()), c.escrow.clone().into()],
                )?;
            }
        }
        let last = pkg.ancestry.len();
        let records = pkg
            .ancestry
            .iter()
            .cloned()
            .chain(std::iter::once(Record::Transfer(pkg.transfer.clone())));
        for (i, rec) in records.enumerate() {
            let outputs = match &rec {
                Record::Issue(x) => &x.outputs,
                Record::Transfer(x) => &x.outputs,
            };
            let output_classes = outputs
                .iter()
                .map(|o| {
                    classes
                        .get(&o.owner)
                        .copied()
                        .unwrap_or(tally_mds::DEVICE_CLASS_UNKNOWN)
                })
                .collect();
            let mut r = IngestRecord::new(rec, epoch, Verdict::Verified);
            r.output_classes = output_classes;
            if i == last {
                r.offline_epochs = offline_epochs;
                r.unacknowledged = unacknowledged;
            }
            out.push(r);
        }
        Ok(())
    }

    fn redeem(
        &self,
        ctx: &DeviceCtx,
        epoch: Epoch,
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
        // The central bank's side: opens and verifies (before its
        // transaction), settles, moves value. A package that does not open
        // or verify is refused inside, after the one-payout guard, as
        // before.
        let verified: Result<tally_core::VerifiedPackage, BackofficeError> = self
            .keys
            .opening
            .open(SealedKind::Redemption, sealed)
            .map_err(BackofficeError::from)
            .and_then(|plain| Ok(Package::from_cbor(&plain)?))
            .and_then(|pkg| {
                let trust = self.trust()?;
                self.verify_with(&trust, pkg)
            });
        let dcp_key = self.dcp_key();
        let res = self.central_call(&ctx.rid, &ctx.reply_key, |tx| {
            // One payout per redemption request, whatever the number of
            // different device requests that carry it (the DCP marks its own
            // row done only after this commits).
            // (A tag of the request, not its id: the journal names the
            // account by request id, the nonce names the settled transfer.)
            let tag = tagged_hash(b"tally/v1/redemption-op", &[&ctx.reply_key.0]);
            match tx.query_one(
                "SELECT op_id FROM cb_redemptions WHERE nonce = $1",
                &[nonce.to_vec().into()],
            )? {
                Some(r) if r.bytes(0)? != tag.0.as_slice() => {
                    return Err(BackofficeError::UnknownRedemption);
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO cb_redemptions (nonce, op_id) VALUES ($1, $2)",
                        &[nonce.to_vec().into(), b(&tag)],
                    )?;
                }
            }
            let verified = verified.as_ref().map_err(Clone::clone)?;
            let t = &verified.package().transfer;
            if &t.nonce != nonce {
                return Err(BackofficeError::UnknownRedemption);
            }
            if verified.transfer_id() != *transfer_id {
                return Err(BackofficeError::TransferMismatch);
            }
            if t.outputs[0]
                != (Output {
                    value: Amount(amount),
                    owner: dcp_key,
                })
            {
                return Err(BackofficeError::WrongRedemption);
            }
            let outcome = Settlement::settle(tx, verified, &format!("redeem:{}", ctx.rid))?;
            let tid = verified.transfer_id();
            if let Some(d) = outcome.double_spends.iter().find(|d| d.second.id() == tid) {
                // The redeemer itself is the cheater: nothing is honoured (the
                // transaction rolls back); the evidence goes back to the caller.
                return Err(BackofficeError::DoubleSpendByRedeemer(Box::new(d.clone())));
            }
            let mut ingest = Vec::new();
            let offline = (ctx.sync_epoch > 0).then(|| epoch.saturating_sub(ctx.sync_epoch));
            self.record_settled(tx, verified.package(), epoch, offline, false, &mut ingest)?;
            self.queue_mds(tx, &ctx.rid, &ingest)?;
            let mut res = SettlementResult {
                settled: 1,
                value: amount,
                double_spends: outcome.double_spends.len() as u32,
                transfer: Some(tid),
                ..SettlementResult::default()
            };
            if unload {
                Ledger::transfer(
                    tx,
                    &TransferRequest {
                        idem: format!("unload:{}", ctx.rid),
                        debit: ledger::OFFLINE_FLOAT.into(),
                        credit: ctx.account.clone(),
                        amount,
                        code: code::UNLOAD,
                    },
                )?;
                res.balance = Ledger::balance(tx, &ctx.account)? as u64;
            } else {
                res.issues
                    .push(self.issue(tx, &ctx.rid, 0, epoch, amount, *key, ctx.class)?);
            }
            Ok(res)
        });
        let res = match res {
            Err(BackofficeError::DoubleSpendByRedeemer(d)) => {
                // Nothing is honoured (the settlement rolled back), but the
                // MDS must see the attempt: the redeemer's package goes to
                // the outbox on its own, so the double spend raises an alert.
                self.report_refused_redemption(ctx, epoch, sealed);
                return Err(BackofficeError::DoubleSpendByRedeemer(d));
            }
            other => other?,
        };
        let tid = res.transfer.ok_or(BackofficeError::BadSettlementResult)?;
        if res.value != amount {
            return Err(BackofficeError::BadSettlementResult);
        }
        let receipt = tally_core::Receipt::try_sign(&*self.keys.dcp, tid)?;
        if unload {
            Ok(DeviceResponse::Unloaded {
                balance: res.balance,
                receipt,
            })
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
        ctx: &DeviceCtx,
        epoch: Epoch,
        sealed: &[u8],
        reports: &Hash32,
        key: Option<&PublicKey>,
    ) -> Result<DeviceResponse, BackofficeError> {
        // Where the central bank leaves tokens recovered or refunded for
        // this device: a per-device name only the DCP can link to the
        // device.
        let mailbox = tagged_hash(b"tally/v1/mailbox", &[&ctx.salt]);
        let offline = (ctx.sync_epoch > 0).then(|| epoch.saturating_sub(ctx.sync_epoch));
        // Opening and verification before the settlement transaction.
        let upload =
            SyncUpload::from_cbor(&self.keys.opening.open(SealedKind::SyncUpload, sealed)?)?;
        // The reports are those the SE signed for (it drops them once the
        // grant for this request arrives, so none may be left out).
        if tally_core::dcp::reports_digest(&upload.reports) != *reports {
            return Err(BackofficeError::ReportsMismatch);
        }
        let checked = self.precheck(&upload.packages)?;
        let res = self.central_call(&ctx.rid, &ctx.reply_key, |tx| {
            self.settle_upload(
                tx, &ctx.rid, epoch, &mailbox, offline, &upload, &checked, key,
            )
        })?;
        let (policy, revocations) = self.central.transact(|tx| {
            Ok::<_, BackofficeError>((self.policy_in(tx)?, self.revocations_in(tx)?))
        })?;
        Ok(DeviceResponse::Synced(SyncBundle {
            policy,
            revocations,
            // The grant's sequence is this request's counter: the SE
            // drops the reports this request (or an earlier one) carried.
            grant: SyncGrant::try_sign(&*self.keys.dcp, ctx.se_id, epoch, ctx.counter)?,
            recovered: res.issues,
            double_spends: res.double_spends,
        }))
    }

    /// Settles one opened sync upload. A package that fails verification
    /// is not settled but goes to the MDS as a counterfeit attempt; the
    /// rest of the upload still settles.
    #[allow(clippy::too_many_arguments)]
    fn settle_upload(
        &self,
        tx: &mut dyn Tx,
        op: &Hash32,
        epoch: Epoch,
        mailbox: &Hash32,
        offline: Option<u32>,
        upload: &SyncUpload,
        checked: &[Checked],
        key: Option<&PublicKey>,
    ) -> Result<SettlementResult, BackofficeError> {
        let mut res = SettlementResult::default();
        let mut ingest = Vec::new();
        for (i, c) in checked.iter().enumerate() {
            let verified = match c {
                Checked::Verified(v) => v,
                Checked::Malformed => {
                    res.refused += 1;
                    continue;
                }
                Checked::Refused(transfer, e) => {
                    res.refused += 1;
                    ingest.push(IngestRecord::new(
                        Record::Transfer(transfer.clone()),
                        epoch,
                        Verdict::Refused(e.code()),
                    ));
                    continue;
                }
            };
            let outcome = Settlement::settle(tx, verified, &format!("sync:{op}:{i}"))?;
            res.settled += 1;
            res.double_spends += outcome.double_spends.len() as u32;
            let t = &verified.package().transfer;
            res.value += t.outputs[0].value.0;
            self.record_settled(tx, verified.package(), epoch, offline, true, &mut ingest)?;
            let tid = verified.transfer_id();
            if tx
                .query_one(
                    "SELECT amount FROM cb_uploads WHERE transfer_id = $1",
                    &[b(&tid)],
                )?
                .is_none()
            {
                // The uploader (the payer) is where a refund goes.
                tx.execute(
                    "INSERT INTO cb_uploads (transfer_id, nonce, payee_key, amount, mailbox) VALUES ($1, $2, $3, $4, $5)",
                    &[b(&tid), t.nonce.to_vec().into(), t.outputs[0].owner.to_cbor().into(), Value::Int(t.outputs[0].value.0 as i64), b(mailbox)],
                )?;
            }
            self.resolve(tx, &t.nonce, &t.outputs[0].owner)?;
        }
        for r in &upload.reports {
            // Only the payee's SE signs a report, with the request's key.
            if !r.verify() {
                res.refused += 1;
                continue;
            }
            let k = [Value::Bytes(r.nonce.to_vec()), r.key.to_cbor().into()];
            // The first report of a request stands (an honest SE makes
            // one per request and sends it again until acknowledged).
            if tx
                .query_one(
                    "SELECT amount FROM cb_closed WHERE nonce = $1 AND payee_key = $2",
                    &k,
                )?
                .is_none()
            {
                let received = match &r.received {
                    Some(t) => Value::Bytes(t.0.to_vec()),
                    None => Value::Null,
                };
                tx.execute(
                    "INSERT INTO cb_closed (nonce, payee_key, mailbox, amount, received) VALUES ($1, $2, $3, $4, $5)",
                    &[k[0].clone(), k[1].clone(), b(mailbox), Value::Int(r.amount as i64), received],
                )?;
            }
            self.resolve(tx, &r.nonce, &r.key)?;
        }
        // Tokens waiting in this device's mailbox, issued now to the key
        // the SE named (none named: they wait for a later sync). The
        // central call is idempotent per request, so a retried sync gets
        // the same Issues.
        if let Some(key) = key {
            for r in tx.query(
                "SELECT transfer_id, amount, issue FROM cb_mailbox WHERE mailbox = $1 AND delivered = 0 ORDER BY transfer_id LIMIT 64",
                &[b(mailbox)],
            )? {
                let tid = hash(r.bytes(0)?)?;
                let issue = match r.opt_bytes(2)? {
                    Some(bytes) => Issue::from_cbor(bytes)?,
                    None => {
                        let delivery = tagged_hash(b"tally/v1/recovery-op", &[&op.0, &tid.0]);
                        self.issue(
                            tx,
                            &delivery,
                            0,
                            epoch,
                            r.int(1)? as u64,
                            *key,
                            tally_mds::DEVICE_CLASS_UNKNOWN,
                        )?
                    }
                };
                tx.execute(
                    "UPDATE cb_mailbox SET delivered = 1, issue = $1 WHERE transfer_id = $2",
                    &[issue.to_cbor().into(), b(&tid)],
                )?;
                res.issues.push(issue);
            }
        }
        self.queue_mds(tx, op, &ingest)?;
        Ok(res)
    }

    /// Resolves a payee's request once both sides are known (decision
    /// 0008): the payee's report (received by transfer T, or closed
    /// unpaid) and the payers' uploaded, unacknowledged payments for it.
    /// The received transfer stands; for a closed request the first
    /// uploaded payment of the requested amount is recovered to the
    /// payee; every other uploaded payment for the request is refunded to
    /// its payer. Each stranded output is consumed once in the spent
    /// registry (a second resolution finds it consumed and does nothing),
    /// and the fresh token waits in the mailbox of the payee or the payer.
    fn resolve(
        &self,
        tx: &mut dyn Tx,
        nonce: &[u8; 16],
        key: &PublicKey,
    ) -> Result<(), BackofficeError> {
        let k = [Value::Bytes(nonce.to_vec()), key.to_cbor().into()];
        let Some(report) = tx.query_one(
            "SELECT mailbox, amount, received FROM cb_closed WHERE nonce = $1 AND payee_key = $2",
            &k,
        )?
        else {
            return Ok(());
        };
        let payee_mailbox = hash(report.bytes(0)?)?;
        let asked = report.int(1)? as u64;
        let received = report.opt_bytes(2)?.map(hash).transpose()?;
        // Whether the closed request was credited already.
        let mut credited = received.is_some()
            || tx
                .query_one(
                    "SELECT transfer_id FROM cb_mailbox WHERE mailbox = $1 AND refund = 0 AND transfer_id IN (SELECT transfer_id FROM cb_uploads WHERE nonce = $2 AND payee_key = $3)",
                    &[b(&payee_mailbox), k[0].clone(), k[1].clone()],
                )?
                .is_some();
        for up in tx.query(
            "SELECT transfer_id, amount, mailbox FROM cb_uploads WHERE nonce = $1 AND payee_key = $2 ORDER BY transfer_id",
            &k,
        )? {
            let tid = hash(up.bytes(0)?)?;
            if Some(tid) == received {
                continue; // the payee holds it
            }
            let amount = up.int(1)? as u64;
            let recover = !credited && amount == asked;
            let (to, tag) = if recover {
                (payee_mailbox, &b"tally/v1/recovery"[..])
            } else {
                let Some(m) = up.opt_bytes(2)? else {
                    continue; // uploaded before refunds existed: an operator's case
                };
                (hash(m)?, &b"tally/v1/refund"[..])
            };
            let by = tagged_hash(tag, &[&tid.0]);
            if !Settlement::consume_stranded(
                tx,
                &OutPoint {
                    record: tid,
                    index: 0,
                },
                &by,
            )? {
                if recover && Settlement::is_spent(tx, &OutPoint { record: tid, index: 0 })? == Some(by) {
                    credited = true;
                }
                continue; // resolved before (or spent by the payee)
            }
            credited |= recover;
            tx.execute(
                "INSERT INTO cb_mailbox (transfer_id, mailbox, amount, refund, issue, delivered) VALUES ($1, $2, $3, $4, NULL, 0)",
                &[b(&tid), b(&to), Value::Int(amount as i64), Value::Int(i64::from(!recover))],
            )?;
        }
        Ok(())
    }

    // ---- MDS feed (outbox) ------------------------------------------------

    /// A redemption refused because the redeemer double-spent its own
    /// tokens: its (verified) records go to the MDS without settling.
    /// Best effort: a failure is logged, the refusal stands either way.
    fn report_refused_redemption(&self, ctx: &DeviceCtx, epoch: Epoch, sealed: &[u8]) {
        let key = tagged_hash(b"tally/v1/outbox-refused-redemption", &[&ctx.rid.0]);
        let r = self.central.transact(|tx| {
            if tx
                .query_one("SELECT op_id FROM mds_outbox WHERE op_id = $1", &[b(&key)])?
                .is_some()
            {
                return Ok(());
            }
            let plain = self.keys.opening.open(SealedKind::Redemption, sealed)?;
            let verified = self.verify_for_settlement(tx, Package::from_cbor(&plain)?)?;
            let mut ingest = Vec::new();
            self.record_settled(tx, verified.package(), epoch, None, false, &mut ingest)?;
            self.queue_mds(tx, &key, &ingest)
        });
        match r {
            Ok(()) => self.pump_mds(),
            Err(e) => tracing::error!(error = %e, "refused redemption not reported to the MDS"),
        }
    }

    fn queue_mds(
        &self,
        tx: &mut dyn Tx,
        op: &Hash32,
        records: &[IngestRecord],
    ) -> Result<(), BackofficeError> {
        if records.is_empty() {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO mds_outbox (op_id, body, queued_at) VALUES ($1, $2, $3)",
            &[
                b(op),
                encode_ingest(records).into(),
                Value::Int(unix_seconds()),
            ],
        )?;
        Ok(())
    }

    /// Moves settled records from the outbox into the MDS. Ingestion is
    /// idempotent, so a crash between ingesting and deleting only replays.
    /// A row the MDS refuses (it does not decode, or a record of it cannot
    /// be ingested) is set aside in the MDS with an alert and the pump goes
    /// on: no record from a device can stop it. Store failures leave the
    /// rows for the next call (and are logged).
    pub fn pump_mds(&self) {
        loop {
            let rows = match self.central.transact(|tx| {
                Ok::<_, BackofficeError>(
                    tx.query(
                        "SELECT op_id, body FROM mds_outbox ORDER BY op_id LIMIT 64",
                        &[],
                    )?
                    .iter()
                    .map(|r| Ok::<_, StoreError>((r.bytes(0)?.to_vec(), r.bytes(1)?.to_vec())))
                    .collect::<Result<Vec<_>, _>>()?,
                )
            }) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "MDS outbox unreadable");
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            for (op, body) in rows {
                if let Err(e) = self.ingest_outbox_row(&body) {
                    tracing::error!(error = %e, "MDS ingestion failed; will retry");
                    return;
                }
                if let Err(e) = self.central.transact(|tx| {
                    tx.execute(
                        "DELETE FROM mds_outbox WHERE op_id = $1",
                        &[op.clone().into()],
                    )?;
                    Ok::<_, BackofficeError>(())
                }) {
                    tracing::error!(error = %e, "MDS outbox not trimmed");
                    return;
                }
            }
        }
    }

    /// Ingests one outbox row. What the MDS refuses for the row's content
    /// is set aside with an [`tally_mds::AlertKind::IngestionFailed`]
    /// alert: the whole row if it does not decode (code 101), else record
    /// by record, so the row's other records (a double spend among them)
    /// are still judged. `Err` only for failures of the MDS itself (its
    /// store), which a later call retries.
    fn ingest_outbox_row(&self, body: &[u8]) -> Result<(), tally_mds::MdsError> {
        // The epoch an alert is raised in, read only when one is.
        let epoch = || self.epoch().unwrap_or(0);
        let batch = match decode_ingest(body) {
            Ok(b) => b,
            Err(e) => {
                let code = BackofficeError::Decode(e).code();
                let a = self.mds.set_aside(body, code, epoch())?;
                tracing::error!(
                    alert = a.id,
                    code,
                    "MDS outbox row does not decode; set aside"
                );
                return Ok(());
            }
        };
        for chunk in batch.chunks(tally_mds::INGEST_BATCH_RECORDS_MAX) {
            match self.mds.ingest(chunk) {
                Ok(_) => {}
                Err(e) if !e.is_content_fault() => return Err(e),
                Err(_) => {
                    // Parents come before children, so a child of a record
                    // set aside fails (unknown input) and follows it.
                    for r in chunk {
                        match self.mds.ingest(std::slice::from_ref(r)) {
                            Ok(_) => {}
                            Err(e) if !e.is_content_fault() => return Err(e),
                            Err(e) => {
                                let a = self.mds.set_aside(
                                    &encode_ingest(std::slice::from_ref(r)),
                                    e.code(),
                                    epoch(),
                                )?;
                                tracing::error!(alert = a.id, error = %e, "MDS record set aside");
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The MDS feed's backlog, for monitoring.
    pub fn mds_outbox(&self) -> Result<OutboxStatus, BackofficeError> {
        let (pending, oldest) = self.central.transact(|tx| {
            let r = tx.query_one(
                "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(MIN(CASE WHEN queued_at > 0 THEN queued_at END), 0) AS BIGINT) FROM mds_outbox",
                &[],
            )?;
            Ok::<_, BackofficeError>(match r {
                Some(r) => (r.int(0)?, r.int(1)?),
                None => (0, 0),
            })
        })?;
        let oldest_age_seconds = if oldest > 0 {
            u64::try_from(unix_seconds().saturating_sub(oldest)).unwrap_or(0)
        } else {
            0
        };
        Ok(OutboxStatus {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_age_seconds,
            set_aside: self.mds.set_aside_count()?,
        })
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
fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Outbox body: `[[record, epoch, verdict (0 verified | code), classes bstr,
/// offline_epochs + 1 (0 unknown), unacknowledged], …]`.
fn encode_ingest(records: &[IngestRecord]) -> Vec<u8> {
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

fn decode_ingest(bytes: &[u8]) -> Result<Vec<IngestRecord>, CodecError> {
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
