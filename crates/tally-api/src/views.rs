//! JSON bodies of the operator and public endpoints, and the CBOR trust
//! bundle; the same types on the server and in the clients.

use serde::{Deserialize, Serialize};
use tally_core::codec::Cbor;
use tally_core::policy::device_class;
use tally_core::{Epoch, Hash32};
use tally_directory::{SeEntry, SeStatus};
use tally_ledger::ledger::Invariant;

use crate::hex;

/// Longest account name (characters) in a path; the same bound as the
/// account of a device registration.
pub const ACCOUNT_NAME_CHARS_MAX: usize = 128;

/// Longest accepted idempotency key (characters).
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 128;

/// Body of mint and deposit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    /// Client-chosen; the same key with the same amount is a no-op, with
    /// another amount a 409.
    pub idempotency_key: String,
    /// Minor units.
    pub amount: u64,
}

impl AmountRequest {
    pub(crate) fn check(&self) -> Result<(), String> {
        let n = self.idempotency_key.chars().count();
        if n == 0 || n > IDEMPOTENCY_KEY_CHARS_MAX {
            return Err(format!(
                "idempotency_key must have 1 to {IDEMPOTENCY_KEY_CHARS_MAX} characters"
            ));
        }
        if self.idempotency_key.chars().any(char::is_control) {
            return Err("idempotency_key must not contain control characters".into());
        }
        Ok(())
    }
}

/// The ledger invariant's terms and whether it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantView {
    pub minted: i64,
    pub redeemed: i64,
    pub accounts: i64,
    pub offline_float: i64,
    pub loss: i64,
    pub issuance: i64,
    pub negative_accounts: i64,
    pub journal_entries: i64,
    /// The running totals (kept per transaction) equal the full re-sum.
    #[serde(default)]
    pub totals_match: bool,
    pub holds: bool,
}

impl From<Invariant> for InvariantView {
    fn from(i: Invariant) -> InvariantView {
        InvariantView {
            minted: i.minted,
            redeemed: i.redeemed,
            accounts: i.accounts,
            offline_float: i.offline_float,
            loss: i.loss,
            issuance: i.issuance,
            negative_accounts: i.negative_accounts,
            journal_entries: i.journal_entries,
            totals_match: i.totals_match,
            holds: i.holds(),
        }
    }
}

impl std::fmt::Display for InvariantView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: accounts {} + offline float {} + loss {} = minted {} - redeemed {} \
             (issuance {}, negative accounts {}, journal entries {}, running totals {})",
            if self.holds { "holds" } else { "VIOLATED" },
            self.accounts,
            self.offline_float,
            self.loss,
            self.minted,
            self.redeemed,
            self.issuance,
            self.negative_accounts,
            self.journal_entries,
            if self.totals_match { "match" } else { "DIFFER" }
        )
    }
}

/// A one-time enrolment code for an account (deliver it out of band).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentCodeView {
    pub account: String,
    pub code: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    pub balance: i64,
}

/// A DCP's book against its settlement account at the central bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileView {
    pub dcp: u32,
    /// Sum of every balance in the DCP's book (customers, its own money,
    /// in flight).
    pub book_sum: i64,
    pub in_flight: i64,
    /// The book's full re-sum agrees with its running totals, none negative.
    pub book_audit_ok: bool,
    pub settlement_account: i64,
    /// Nothing in flight and the book's sum is the settlement account.
    pub matches: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochView {
    pub epoch: Epoch,
}

/// One SE of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Hex of the 32-byte SE identifier.
    pub se_id: String,
    pub class: u8,
    /// "card", "phone", "iot", "dcp" or "unknown".
    pub class_name: String,
    pub maker: String,
    /// "active", "suspended" or "revoked".
    pub status: String,
}

pub(crate) fn class_name(class: u8) -> &'static str {
    match class {
        device_class::CARD => "card",
        device_class::PHONE => "phone",
        device_class::IOT => "iot",
        device_class::DCP => "dcp",
        _ => "unknown",
    }
}

impl From<&SeEntry> for DeviceView {
    fn from(e: &SeEntry) -> DeviceView {
        DeviceView {
            se_id: e.se_id.to_string(),
            class: e.device_class,
            class_name: class_name(e.device_class).into(),
            maker: e.maker.clone(),
            status: match e.status {
                SeStatus::Active => "active",
                SeStatus::Suspended => "suspended",
                SeStatus::Revoked => "revoked",
            }
            .into(),
        }
    }
}

/// One detected double spend: the output spent twice, its value and the
/// pseudonym (public key, canonical CBOR in hex) that signed both spends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoubleSpendView {
    pub record: String,
    pub index: u8,
    pub value: u64,
    pub offender_key: String,
}

impl From<&(Hash32, u8, u64, Vec<u8>)> for DoubleSpendView {
    fn from((record, index, value, key): &(Hash32, u8, u64, Vec<u8>)) -> DoubleSpendView {
        DoubleSpendView {
            record: record.to_string(),
            index: *index,
            value: *value,
            offender_key: hex(key),
        }
    }
}

pub use tally_client::{ErrorBody, ErrorEnvelope, TrustBundle};

/// GET /v1/trust.json: the trust objects for people (hex of each
/// canonical encoding, plus the fields worth reading).
pub(crate) fn trust_json(bundle: &TrustBundle, epoch: Epoch) -> serde_json::Value {
    serde_json::json!({
        "epoch": epoch,
        "root": {
            "suite": bundle.root.suite() as u8,
            "key": hex(bundle.root.key_bytes()),
            "id": bundle.root.id().to_string(),
            "cbor": hex(&bundle.root.to_cbor()),
        },
        "policy": {
            "serial": bundle.policy.serial,
            "currency": bundle.policy.currency,
            "tiers": bundle.policy.tiers.iter().map(|t| serde_json::json!({
                "device_class": t.device_class,
                "class_name": class_name(t.device_class),
                "tier": t.tier,
                "payment_max": t.payment_max.0,
                "holding_max": t.holding_max.0,
                "receiving_max": t.receiving_max.0,
                "offline_spend_max": t.offline_spend_max.0,
                "offline_payments_max": t.offline_payments_max,
                "history_records_max": t.history_records_max,
                "offline_epochs_max": t.offline_epochs_max,
            })).collect::<Vec<_>>(),
            "dcps": bundle.policy.dcps.len(),
            "cbor": hex(&bundle.policy.to_cbor()),
        },
        "sealing_key": {
            "kem": "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305",
            "key": hex(&bundle.sealing_key.key),
            "cbor": hex(&bundle.sealing_key.to_cbor()),
        },
        "revocations": {
            "serial": bundle.revocations.serial,
            "epoch": bundle.revocations.epoch,
            "revoked": bundle.revocations.revoked.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "cbor": hex(&bundle.revocations.to_cbor()),
        },
    })
}

/// One MDS alert (GET /v1/mds/alerts). Ids are hex; `offender` is the key
/// id of the pseudonym held responsible, when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    pub id: i64,
    pub kind: String,
    pub severity: String,
    pub state: String,
    pub epoch: u32,
    pub subject: String,
    pub offender: Option<String>,
    pub records: Vec<String>,
    pub amount: u64,
    pub outpoint: Option<(String, u8)>,
}

impl From<&tally_mds::Alert> for AlertView {
    fn from(a: &tally_mds::Alert) -> AlertView {
        AlertView {
            id: a.id,
            kind: a.kind.name().to_string(),
            severity: match a.severity {
                tally_mds::Severity::Critical => "critical".into(),
                tally_mds::Severity::Warning => "warning".into(),
            },
            state: a.state.name().to_string(),
            epoch: a.epoch,
            subject: a.subject.to_string(),
            offender: a.offender.map(|h| h.to_string()),
            records: a.records.iter().map(|h| h.to_string()).collect(),
            amount: a.amount,
            outpoint: a.outpoint.map(|(h, i)| (h.to_string(), i)),
        }
    }
}

/// POST /v1/mds/alerts/{id}/transition: `to` is open | escrow_opened |
/// device_revoked | closed; `note` says why (kept in the alert's events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRequest {
    pub to: String,
    pub note: String,
}

/// GET /v1/escrows/{key_id}: the escrow ciphertext of a settled pseudonym
/// certificate, for an opening request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowView {
    pub key_id: String,
    pub escrow: String,
}

/// POST /v1/directory/revoke: the supervisors opened an escrow to
/// `id_digest`; revoke that SE and list `key_ids`. With `alert`, the alert
/// moves to device_revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRequest {
    pub id_digest: String,
    pub key_ids: Vec<String>,
    pub reason: String,
    #[serde(default)]
    pub alert: Option<i64>,
    /// The supervisors' audit log file (hex) and the id of the opening
    /// request in it; required when the node knows the supervisors' key set.
    #[serde(default)]
    pub audit_log: Option<String>,
    #[serde(default)]
    pub request: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeView {
    pub se_id: String,
    pub revocation_serial: u64,
    pub revoked_keys: usize,
}

/// 64 hex digits → a hash.
pub fn parse_hash(s: &str) -> Option<Hash32> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Hash32(out))
}
