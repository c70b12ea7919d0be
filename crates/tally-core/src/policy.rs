//! The policy document, the revocation list and sync grants: signed
//! statements from the back office that the SE enforces offline.

use alloc::string::String;
use alloc::vec::Vec;

use crate::amount::{Amount, Epoch};
use crate::codec::{Cbor, CodecError, Reader, Writer, read_vec, write_vec};
use crate::crypto::{
    Hash32, PublicKey, SecretKey, Signature, Signer, infallible, tagged_hash, verify,
};

pub const POLICY_VERSION: u8 = 1;
pub const POLICY_TIERS_MAX: usize = 64;
pub const REVOKED_KEYS_MAX: usize = 65_536;
pub const TRUSTED_DCPS_MAX: usize = 256;
/// Most SE manufacturers a policy can trust for enrolment.
pub const MANUFACTURERS_MAX: usize = 64;

/// How amounts travel in records (the policy's `amount_mode`).
pub mod amount_mode {
    /// Clear amounts (form 0): the default.
    pub const CLEAR: u8 = 0;
    /// Pedersen commitments with range proofs, balancing per transfer
    /// (form 1, SPEC §4.9): payees learn their own amount only.
    pub const CONFIDENTIAL: u8 = 1;
}

/// Device classes (what the SE sits in).
pub mod device_class {
    pub const CARD: u8 = 1;
    pub const PHONE: u8 = 2;
    pub const IOT: u8 = 3;
    /// The DCP's own redemption "device" (renewal and unload payee).
    pub const DCP: u8 = 4;
}

/// Limits for one device class and tier.
/// Wire: `[class, tier, payment_max, holding_max, receiving_max,
/// offline_spend_max, offline_payments_max, history_records_max,
/// offline_epochs_max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    pub device_class: u8,
    pub tier: u8,
    /// Largest single payment, sent or received.
    pub payment_max: Amount,
    /// Largest balance the SE may hold.
    pub holding_max: Amount,
    /// Most value received offline between two syncs.
    pub receiving_max: Amount,
    /// Most value paid offline between two syncs.
    pub offline_spend_max: Amount,
    /// Most payments made offline between two syncs.
    pub offline_payments_max: u32,
    /// History budget: most records in a package's ancestry.
    pub history_records_max: u16,
    /// Epochs after the last sync during which the SE still pays.
    pub offline_epochs_max: u32,
    /// Largest offline payment made without cardholder verification
    /// (contactless cards' no-PIN limit). `Amount(u64::MAX)`: never asked.
    pub cvm_payment_max: Amount,
    /// Most value paid offline without cardholder verification since the
    /// last verified payment; past it the next payment needs the PIN.
    pub cvm_cumulative_max: Amount,
    /// Debiting the user's account (online payment) needs the PIN.
    /// False only for classes without a cardholder (IoT), see THREATS.md.
    pub cvm_online: bool,
}

impl TierLimits {
    /// Whether an offline payment of `amount`, after `since_cvm` paid
    /// without verification, needs cardholder verification.
    pub fn needs_cvm(&self, amount: Amount, since_cvm: Amount) -> bool {
        amount > self.cvm_payment_max
            || since_cvm
                .checked_add(amount)
                .map(|s| s > self.cvm_cumulative_max)
                .unwrap_or(true)
    }
}

impl Cbor for TierLimits {
    fn write(&self, w: &mut Writer) {
        w.array(12);
        w.u64(u64::from(self.device_class));
        w.u64(u64::from(self.tier));
        w.u64(self.payment_max.0);
        w.u64(self.holding_max.0);
        w.u64(self.receiving_max.0);
        w.u64(self.offline_spend_max.0);
        w.u64(u64::from(self.offline_payments_max));
        w.u64(u64::from(self.history_records_max));
        w.u64(u64::from(self.offline_epochs_max));
        w.u64(self.cvm_payment_max.0);
        w.u64(self.cvm_cumulative_max.0);
        w.bool(self.cvm_online);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(12)?;
        Ok(TierLimits {
            device_class: r.u8()?,
            tier: r.u8()?,
            payment_max: Amount(r.u64()?),
            holding_max: Amount(r.u64()?),
            receiving_max: Amount(r.u64()?),
            offline_spend_max: Amount(r.u64()?),
            offline_payments_max: r.u32()?,
            history_records_max: r.u16()?,
            offline_epochs_max: r.u32()?,
            cvm_payment_max: Amount(r.u64()?),
            cvm_cumulative_max: Amount(r.u64()?),
            cvm_online: r.bool()?,
        })
    }
}

/// The policy document, signed by the central bank's root key.
/// Wire: `[1, serial, currency, [tiers], [dcp certificates], signature]`.
/// The DCP certificates are the trust list: the DCP keys that may issue,
/// certify, redeem and grant syncs. The manufacturer keys are the SE
/// makers whose attestation certificates enrolment accepts.
/// Wire: `[1, serial, currency, [tiers], [dcp certificates], [manufacturer keys], signature]`,
/// or with confidential amounts
/// `[1, serial, currency, [tiers], [dcp certificates], [manufacturer keys], 1, audit_key, signature]`
/// (a clear policy has one encoding: without the mode and the key).
/// `audit_key` (bstr 32) is settlement's X25519 sealing key: every
/// confidential record carries the openings of all its outputs sealed to
/// it (the audit seal, SPEC §4.9.3), so settlement can value every record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub serial: u64,
    /// ISO 4217 code ("XTS" in tests).
    pub currency: String,
    pub tiers: Vec<TierLimits>,
    pub dcps: Vec<crate::cert::DcpCertificate>,
    pub manufacturers: Vec<PublicKey>,
    /// [`amount_mode`]: clear (default) or confidential.
    pub amount_mode: u8,
    /// Settlement's X25519 public sealing key (the key of the sealed
    /// uploads, [`crate::sealed::SealingKey`]): present exactly when the
    /// policy is confidential. The root signs it with the policy, so an SE
    /// seals the audit openings to it with no other trust path.
    pub audit_key: Option<[u8; 32]>,
    pub signature: Signature,
}

impl Policy {
    fn write_body(&self, w: &mut Writer) {
        w.u64(u64::from(POLICY_VERSION));
        w.u64(self.serial);
        w.text(&self.currency);
        write_vec(w, &self.tiers);
        write_vec(w, &self.dcps);
        write_vec(w, &self.manufacturers);
        if self.amount_mode != amount_mode::CLEAR {
            w.u64(u64::from(self.amount_mode));
            if let Some(k) = &self.audit_key {
                w.bytes(k);
            }
        }
    }
    fn body_len(&self) -> usize {
        if self.amount_mode == amount_mode::CLEAR {
            6
        } else {
            7 + usize::from(self.audit_key.is_some())
        }
    }
    pub fn signed_message(&self) -> Hash32 {
        let mut w = Writer::new();
        w.array(self.body_len());
        self.write_body(&mut w);
        tagged_hash(b"tally/v1/policy", &[&w.into_bytes()])
    }
    pub fn sign(
        root: &SecretKey,
        serial: u64,
        currency: &str,
        tiers: Vec<TierLimits>,
        dcps: Vec<crate::cert::DcpCertificate>,
    ) -> Policy {
        Self::sign_with_manufacturers(root, serial, currency, tiers, dcps, Vec::new())
    }
    /// [`Policy::sign`] with the SE manufacturers enrolment trusts.
    pub fn sign_with_manufacturers(
        root: &SecretKey,
        serial: u64,
        currency: &str,
        tiers: Vec<TierLimits>,
        dcps: Vec<crate::cert::DcpCertificate>,
        manufacturers: Vec<PublicKey>,
    ) -> Policy {
        infallible(Self::try_sign(
            root,
            serial,
            currency,
            tiers,
            dcps,
            manufacturers,
        ))
    }
    /// [`Policy::sign_with_manufacturers`] by any [`Signer`] (the root in
    /// an HSM).
    pub fn try_sign<S: Signer + ?Sized>(
        root: &S,
        serial: u64,
        currency: &str,
        tiers: Vec<TierLimits>,
        dcps: Vec<crate::cert::DcpCertificate>,
        manufacturers: Vec<PublicKey>,
    ) -> Result<Policy, S::Error> {
        let mut p = Policy {
            serial,
            currency: currency.into(),
            tiers,
            dcps,
            manufacturers,
            amount_mode: amount_mode::CLEAR,
            audit_key: None,
            signature: Signature::new(root.public_key().suite(), [0; 64]),
        };
        p.signature = root.try_sign(&p.signed_message().0)?;
        Ok(p)
    }
    /// This policy with another amount mode, signed again by `root`. A
    /// confidential policy keeps its audit key (and needs one to encode:
    /// see [`Policy::try_resign_confidential`]); a clear one drops it.
    pub fn try_resign_with_mode<S: Signer + ?Sized>(
        mut self,
        root: &S,
        mode: u8,
    ) -> Result<Policy, S::Error> {
        self.amount_mode = mode;
        if mode == amount_mode::CLEAR {
            self.audit_key = None;
        }
        self.signature = root.try_sign(&self.signed_message().0)?;
        Ok(self)
    }
    /// [`Policy::try_resign_with_mode`] with a key in memory.
    pub fn resign_with_mode(self, root: &SecretKey, mode: u8) -> Policy {
        infallible(self.try_resign_with_mode(root, mode))
    }
    /// This policy in confidential mode with settlement's X25519 sealing
    /// key as its audit key, signed again by `root`.
    pub fn try_resign_confidential<S: Signer + ?Sized>(
        mut self,
        root: &S,
        audit_key: [u8; 32],
    ) -> Result<Policy, S::Error> {
        self.audit_key = Some(audit_key);
        self.try_resign_with_mode(root, amount_mode::CONFIDENTIAL)
    }
    /// [`Policy::try_resign_confidential`] with a key in memory.
    pub fn resign_confidential(self, root: &SecretKey, audit_key: [u8; 32]) -> Policy {
        infallible(self.try_resign_confidential(root, audit_key))
    }
    pub fn is_confidential(&self) -> bool {
        self.amount_mode == amount_mode::CONFIDENTIAL
    }
    /// The bound the range proofs of a confidential policy must cover:
    /// the largest holding limit of any device tier (an output is never
    /// worth more than its holder may hold; the DCP's own redemption tier
    /// is not a device and is left out). Range bits:
    /// `RangeBits::for_bound(holding_bound())`.
    pub fn holding_bound(&self) -> Amount {
        self.tiers
            .iter()
            .filter(|t| t.device_class != device_class::DCP)
            .map(|t| t.holding_max)
            .max()
            .unwrap_or(Amount::ZERO)
    }
    pub fn limits(&self, device_class: u8, tier: u8) -> Option<&TierLimits> {
        self.tiers
            .iter()
            .find(|t| t.device_class == device_class && t.tier == tier)
    }
    pub fn dcp(&self, key_id: &Hash32) -> Option<&crate::cert::DcpCertificate> {
        self.dcps.iter().find(|c| c.key.id() == *key_id)
    }
}

impl Cbor for Policy {
    fn write(&self, w: &mut Writer) {
        w.array(self.body_len() + 1);
        self.write_body(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(9)?;
        // Clear: 7 elements; confidential: the mode and the audit key.
        if n != 7 && n != 9 {
            return Err(CodecError::Malformed);
        }
        r.version(POLICY_VERSION)?;
        let serial = r.u64()?;
        let currency = String::from(r.text_max(8)?);
        let tiers = read_vec(r, POLICY_TIERS_MAX)?;
        let dcps = read_vec(r, TRUSTED_DCPS_MAX)?;
        let manufacturers = read_vec(r, MANUFACTURERS_MAX)?;
        let (amount_mode, audit_key) = if n == 9 {
            match r.u8()? {
                amount_mode::CONFIDENTIAL => (amount_mode::CONFIDENTIAL, Some(r.bytes_array()?)),
                // Clear is written by leaving the field out.
                amount_mode::CLEAR => return Err(CodecError::NonCanonical),
                _ => return Err(CodecError::UnknownCode),
            }
        } else {
            (amount_mode::CLEAR, None)
        };
        Ok(Policy {
            serial,
            currency,
            tiers,
            dcps,
            manufacturers,
            amount_mode,
            audit_key,
            signature: Signature::read(r)?,
        })
    }
}

/// Signed, versioned list of revoked key ids (DCP keys and pseudonym keys).
/// Wire: `[1, serial, epoch, [key ids, strictly ascending], signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    pub serial: u64,
    pub epoch: Epoch,
    pub revoked: Vec<Hash32>,
    pub signature: Signature,
}

impl RevocationList {
    fn write_body(&self, w: &mut Writer) {
        w.u64(u64::from(POLICY_VERSION));
        w.u64(self.serial);
        w.u64(u64::from(self.epoch));
        write_vec(w, &self.revoked);
    }
    pub fn signed_message(&self) -> Hash32 {
        let mut w = Writer::new();
        w.array(4);
        self.write_body(&mut w);
        tagged_hash(b"tally/v1/revocation-list", &[&w.into_bytes()])
    }
    pub fn sign(root: &SecretKey, serial: u64, epoch: Epoch, revoked: Vec<Hash32>) -> Self {
        infallible(Self::try_sign(root, serial, epoch, revoked))
    }
    /// [`RevocationList::sign`] by any [`Signer`] (the root in an HSM).
    pub fn try_sign<S: Signer + ?Sized>(
        root: &S,
        serial: u64,
        epoch: Epoch,
        mut revoked: Vec<Hash32>,
    ) -> Result<Self, S::Error> {
        revoked.sort();
        revoked.dedup();
        let mut l = RevocationList {
            serial,
            epoch,
            revoked,
            signature: Signature::new(root.public_key().suite(), [0; 64]),
        };
        l.signature = root.try_sign(&l.signed_message().0)?;
        Ok(l)
    }
    /// Binary search: the list is kept sorted.
    pub fn is_revoked(&self, key_id: &Hash32) -> bool {
        self.revoked.binary_search(key_id).is_ok()
    }
}

impl Cbor for RevocationList {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        self.write_body(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        r.version(POLICY_VERSION)?;
        let serial = r.u64()?;
        let epoch = r.u32()?;
        let revoked: Vec<Hash32> = read_vec(r, REVOKED_KEYS_MAX)?;
        // Canonical form: strictly ascending (sorted, no duplicates).
        if revoked.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CodecError::NonCanonical);
        }
        Ok(RevocationList {
            serial,
            epoch,
            revoked,
            signature: Signature::read(r)?,
        })
    }
}

/// The back office's revoked role-certificate keys (decision 0014), signed
/// by the root so that a party which cannot ask the central bank's
/// database — a DCP or the MDS checking the central bank's own server key —
/// can refuse a revoked key: the list reaches it over a link the revoked
/// key may itself serve, so it is believed for its signature only, and for
/// [`ROLE_REVOCATIONS_MAX_AGE_S`] after `issued` (a stolen key's holder
/// cannot make a fresh list without the root, and an old one stops being
/// accepted). `pins` are SHA-256 of the certificates' SubjectPublicKeyInfo
/// (RFC 7469), sorted, no duplicates. Wire: `[1, serial, issued, pins,
/// signature]`, signed as `tagged_hash("tally/v1/role-revocations", [1,
/// serial, issued, pins])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRevocations {
    /// Rises with every list the root signs (never reused).
    pub serial: u64,
    /// Unix seconds when the root signed it.
    pub issued: u64,
    pub pins: Vec<Hash32>,
    pub signature: Signature,
}

/// How long a signed [`RoleRevocations`] is believed after it was issued.
pub const ROLE_REVOCATIONS_MAX_AGE_S: u64 = 300;
/// Revoked role keys a list may carry (a bound for the decoder).
pub const ROLE_PINS_MAX: usize = 4_096;

/// Why a [`RoleRevocations`] is not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleRevocationsError {
    /// Not signed by the root.
    BadSignature,
    /// Older than one already believed (a lower serial): a replay.
    Replayed,
    /// Issued more than [`ROLE_REVOCATIONS_MAX_AGE_S`] ago.
    Stale,
    /// Issued after `now` by more than the allowed clock skew.
    FromTheFuture,
}

impl core::fmt::Display for RoleRevocationsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BadSignature => "role revocations not signed by the root",
            Self::Replayed => "role revocations older than the ones held",
            Self::Stale => "role revocations too old",
            Self::FromTheFuture => "role revocations issued in the future",
        })
    }
}

impl RoleRevocations {
    /// Clock skew allowed between the central bank and a party.
    pub const SKEW_S: u64 = 60;

    fn write_body(&self, w: &mut Writer) {
        w.u64(u64::from(POLICY_VERSION));
        w.u64(self.serial);
        w.u64(self.issued);
        write_vec(w, &self.pins);
    }
    pub fn signed_message(&self) -> Hash32 {
        let mut w = Writer::new();
        w.array(4);
        self.write_body(&mut w);
        tagged_hash(b"tally/v1/role-revocations", &[&w.into_bytes()])
    }
    /// Signs the list with the root (pins sorted and deduplicated here).
    pub fn try_sign<S: Signer + ?Sized>(
        root: &S,
        serial: u64,
        issued: u64,
        mut pins: Vec<Hash32>,
    ) -> Result<Self, S::Error> {
        pins.sort();
        pins.dedup();
        let mut l = RoleRevocations {
            serial,
            issued,
            pins,
            signature: Signature::new(root.public_key().suite(), [0; 64]),
        };
        l.signature = root.try_sign(&l.signed_message().0)?;
        Ok(l)
    }
    /// Whether a party holding a list of serial `held` (none yet: `None`)
    /// believes this one at unix time `now`: the root's signature, a
    /// serial not below the one held, issued within the last
    /// [`ROLE_REVOCATIONS_MAX_AGE_S`] (and not ahead of `now` by more than
    /// [`Self::SKEW_S`]).
    pub fn check(
        &self,
        root: &PublicKey,
        held: Option<u64>,
        now: u64,
    ) -> Result<(), RoleRevocationsError> {
        verify(root, &self.signed_message().0, &self.signature)
            .map_err(|_| RoleRevocationsError::BadSignature)?;
        if held.is_some_and(|h| self.serial < h) {
            return Err(RoleRevocationsError::Replayed);
        }
        if self.issued > now.saturating_add(Self::SKEW_S) {
            return Err(RoleRevocationsError::FromTheFuture);
        }
        if now.saturating_sub(self.issued) > ROLE_REVOCATIONS_MAX_AGE_S {
            return Err(RoleRevocationsError::Stale);
        }
        Ok(())
    }
    /// Until when (unix seconds) this list is believed.
    pub fn believed_until(&self) -> u64 {
        self.issued.saturating_add(ROLE_REVOCATIONS_MAX_AGE_S)
    }
    /// Binary search: the list is kept sorted.
    pub fn is_revoked(&self, pin: &Hash32) -> bool {
        self.pins.binary_search(pin).is_ok()
    }
}

impl Cbor for RoleRevocations {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        self.write_body(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        r.version(POLICY_VERSION)?;
        let serial = r.u64()?;
        let issued = r.u64()?;
        let pins: Vec<Hash32> = read_vec(r, ROLE_PINS_MAX)?;
        if pins.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CodecError::NonCanonical);
        }
        Ok(RoleRevocations {
            serial,
            issued,
            pins,
            signature: Signature::read(r)?,
        })
    }
}

/// The back office's word, at sync, that the SE is now in `epoch`. Signed by
/// a DCP key with the SYNC role; bound to one SE and strictly increasing
/// `sequence`, so it cannot be replayed to another SE or twice.
/// Wire: `[1, se_id, epoch, sequence, signer_key, signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGrant {
    pub se_id: Hash32,
    pub epoch: Epoch,
    pub sequence: u64,
    pub signer: PublicKey,
    pub signature: Signature,
}

impl SyncGrant {
    fn write_body(&self, w: &mut Writer) {
        w.u64(u64::from(POLICY_VERSION));
        self.se_id.write(w);
        w.u64(u64::from(self.epoch));
        w.u64(self.sequence);
        self.signer.write(w);
    }
    pub fn signed_message(&self) -> Hash32 {
        let mut w = Writer::new();
        w.array(5);
        self.write_body(&mut w);
        tagged_hash(b"tally/v1/sync-grant", &[&w.into_bytes()])
    }
    pub fn sign(dcp: &SecretKey, se_id: Hash32, epoch: Epoch, sequence: u64) -> Self {
        infallible(Self::try_sign(dcp, se_id, epoch, sequence))
    }
    /// [`SyncGrant::sign`] by any [`Signer`].
    pub fn try_sign<S: Signer + ?Sized>(
        dcp: &S,
        se_id: Hash32,
        epoch: Epoch,
        sequence: u64,
    ) -> Result<Self, S::Error> {
        let signer = dcp.public_key();
        let mut g = SyncGrant {
            se_id,
            epoch,
            sequence,
            signer,
            signature: Signature::new(signer.suite(), [0; 64]),
        };
        g.signature = dcp.try_sign(&g.signed_message().0)?;
        Ok(g)
    }
}

impl Cbor for SyncGrant {
    fn write(&self, w: &mut Writer) {
        w.array(6);
        self.write_body(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(6)?;
        r.version(POLICY_VERSION)?;
        Ok(SyncGrant {
            se_id: Hash32::read(r)?,
            epoch: r.u32()?,
            sequence: r.u64()?,
            signer: PublicKey::read(r)?,
            signature: Signature::read(r)?,
        })
    }
}

/// Convenience for checks that a key is in the trust list with a role.
pub fn trusted_with_role<'a>(
    policy: &'a Policy,
    key: &PublicKey,
    role: u8,
) -> Option<&'a crate::cert::DcpCertificate> {
    policy
        .dcps
        .iter()
        .find(|c| c.key == *key && c.has_role(role))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Cbor;
    use crate::crypto::Suite;
    use alloc::vec;

    const NOW: u64 = 1_764_892_800;

    fn root() -> SecretKey {
        SecretKey::from_seed(Suite::Ed25519, &[1; 32]).expect("key")
    }

    fn list(serial: u64, issued: u64, pins: Vec<Hash32>) -> RoleRevocations {
        RoleRevocations::try_sign(&root(), serial, issued, pins).unwrap_or_else(|e| match e {})
    }

    #[test]
    fn a_role_revocation_list_is_believed_only_signed_current_and_not_older() {
        let l = list(
            5,
            NOW,
            vec![Hash32([9; 32]), Hash32([3; 32]), Hash32([9; 32])],
        );
        assert_eq!(
            l.pins,
            vec![Hash32([3; 32]), Hash32([9; 32])],
            "sorted, deduplicated"
        );
        let back = RoleRevocations::from_cbor(&l.to_cbor()).expect("decodes");
        assert_eq!(back, l);
        let r = root().public();
        assert_eq!(l.check(&r, None, NOW), Ok(()));
        assert_eq!(
            l.check(&r, Some(5), NOW + ROLE_REVOCATIONS_MAX_AGE_S),
            Ok(())
        );
        assert!(l.is_revoked(&Hash32([3; 32])) && !l.is_revoked(&Hash32([4; 32])));
        assert_eq!(l.believed_until(), NOW + ROLE_REVOCATIONS_MAX_AGE_S);
        // Another key, a changed pin, an older serial, stale, from the future.
        let other = SecretKey::from_seed(Suite::Ed25519, &[2; 32]).expect("key");
        assert_eq!(
            l.check(&other.public(), None, NOW),
            Err(RoleRevocationsError::BadSignature)
        );
        let mut forged = l.clone();
        forged.pins.pop();
        assert_eq!(
            forged.check(&r, None, NOW),
            Err(RoleRevocationsError::BadSignature)
        );
        let mut later = l.clone();
        later.issued += 1;
        assert_eq!(
            later.check(&r, None, NOW),
            Err(RoleRevocationsError::BadSignature)
        );
        assert_eq!(
            l.check(&r, Some(6), NOW),
            Err(RoleRevocationsError::Replayed)
        );
        assert_eq!(
            l.check(&r, None, NOW + ROLE_REVOCATIONS_MAX_AGE_S + 1),
            Err(RoleRevocationsError::Stale)
        );
        assert_eq!(
            l.check(&r, None, NOW - RoleRevocations::SKEW_S - 1),
            Err(RoleRevocationsError::FromTheFuture)
        );
    }

    #[test]
    fn a_role_revocation_list_decodes_only_in_its_canonical_form() {
        let l = list(1, NOW, vec![Hash32([1; 32]), Hash32([2; 32])]);
        let mut unsorted = l.clone();
        unsorted.pins.reverse();
        assert_eq!(
            RoleRevocations::from_cbor(&unsorted.to_cbor()),
            Err(CodecError::NonCanonical)
        );
        let mut bytes = l.to_cbor();
        bytes.push(0);
        assert!(RoleRevocations::from_cbor(&bytes).is_err(), "trailing byte");
        assert!(RoleRevocations::from_cbor(&bytes[..bytes.len() - 10]).is_err());
    }
}
