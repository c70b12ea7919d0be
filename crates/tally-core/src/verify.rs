//! Offline package verification (SPEC.md §5, rules V1–V12).
//!
//! The payee trusts nothing the payer's software says: every hash,
//! signature, certificate, sum and reference is recomputed here. Cheap
//! structural checks run first; all signatures are checked last, together
//! (batch). Only [`verify_package`] can make a [`VerifiedPackage`], and only
//! a `VerifiedPackage` can be stored by a payee SE.

use crate::sorted::{VecMap, VecSet};
use alloc::vec::Vec;
use core::fmt;
use tally_codes as codes;

use crate::amount::{Amount, Epoch};
use crate::cert::{DcpCertificate, PseudonymCertificate, role};
use crate::codec::{Cbor, CodecError};
use crate::crypto::{
    CheckedKey, Hash32, KeyedSigCheck, PublicKey, SigCheck, SigError, check_key, verify,
    verify_many_bounded, verify_many_keyed_bounded,
};
use crate::policy::{Policy, RevocationList};
use crate::protocol::Package;
use crate::record::{OutPoint, Output, Record, distinct_signers};
use crate::stream::{STREAM_REFUND_FLAG, StreamAsk, StreamOpenTerms, StreamPart, reaches_anchor};

/// Why a package (or a trust object) was refused. Each variant has a stable
/// number ([`VerifyError::code`]) and names the rule of SPEC.md §5 it
/// enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// V1: not a canonical encoding of a known version.
    Decode(CodecError),
    /// V2: more ancestry records than the history budget.
    HistoryBudgetExceeded { records: usize, budget: usize },
    /// V3: the same record twice in the ancestry.
    DuplicateRecord,
    /// V3: an input refers to a record that is not earlier in the ancestry.
    MissingAncestor,
    /// V3: an ancestry record that the transfer does not depend on.
    UnreachableRecord,
    /// V4: an input names an output index the record does not have.
    UnknownOutput,
    /// V4: a record with no outputs, or a transfer with no inputs.
    EmptyRecord,
    /// V5: an Issue signed by a key not in the trust list with the ISSUE role,
    /// or a certificate issued by a key without the CERTIFY role.
    UnknownIssuer,
    /// V5/V7: a DCP or pseudonym certificate past its expiry epoch.
    CertificateExpired,
    /// V5/V7: a revoked key or certificate.
    CertificateRevoked,
    /// V6: an Issue whose tokens expired.
    TokenExpired,
    /// V7: a signer with no certificate in the package.
    MissingCertificate,
    /// V7: a certificate that signs nothing in the package, or appears twice.
    UnusedCertificate,
    /// V7: a certificate whose issuer signature does not verify.
    BadCertificateSignature,
    /// V7: a certified key that is not a valid point or is of small order.
    BadKey,
    /// V8: a record signature that does not verify, or the wrong number of them.
    BadSignature,
    /// V8: a signature in another suite than its key.
    SuiteMismatch,
    /// V9: inputs and outputs of a transfer differ in value.
    ValueNotConserved,
    /// V9: an output of value zero.
    ZeroValueOutput,
    /// V9: sums overflow u64.
    AmountOverflow,
    /// V10: one output consumed twice inside the package.
    OutputSpentTwice,
    /// V11: the first output does not pay the payee's key.
    WrongPayee,
    /// V11: the first output does not carry the requested amount.
    WrongAmount,
    /// V11: the transfer answers another request.
    WrongNonce,
    /// V12: a policy, revocation list or DCP certificate not signed by the root.
    BadTrustSignature,
    /// V4 (C0): a record whose amount form (clear or committed) is not the
    /// policy's, or a transfer whose inputs are of another form than its
    /// outputs.
    AmountForm,
    /// V9 (C2): a range proof of another bit-length than the policy's.
    RangeBitsMismatch,
    /// V9 (C3): a range proof that does not verify for the transfer's
    /// commitments and context: an output committing to a negative or
    /// out-of-range amount, or a proof made for another transfer.
    RangeProofInvalid,
    /// V9 (C4): the output commitments do not sum to the consumed
    /// outputs' commitments: value created or destroyed.
    CommitmentsUnbalanced,
    /// V11 (C5): no opening for the payee, or one that does not open with
    /// the payee's key (sealed: for output 0's commitment and this
    /// transfer; derived: no shared secret with its encapsulated key).
    OpeningUnreadable,
    /// V11 (C6): the payee's opening does not open output 0's commitment
    /// (derived: with the requested amount).
    WrongOpening,
    /// V9 (C8): a confidential record without its audit seal (every
    /// output's opening sealed to settlement), or one whose length is not
    /// that of one opening per output.
    AuditSealInvalid,
    /// V4 (SV1): a stream OPEN whose terms do not fit its output (index,
    /// value `price · ticks`, bounds), or a stream in a confidential
    /// transfer.
    StreamTerms,
    /// V4 (SV2): a stream half consumed other than by its own close (one
    /// input, a claim for the payee's half, a refund for the payer's), or
    /// a close whose input is not a stream half.
    StreamSpend,
    /// V9 (SV3): a close paying other than `ticks · price` (claim) or
    /// `(ticks_max − ticks) · price` (refund), or counting more ticks than
    /// the stream has.
    StreamCloseValue,
    /// V9 (SV4, settlement): a claim whose element does not walk to the
    /// stream's anchor in `ticks` hashes: ticks the payer never released.
    StreamChain,
    /// V11 (SV5): the transfer does not open the stream the request asked
    /// for, or is a stream transfer answering a one-off request.
    WrongStream,
}

impl VerifyError {
    /// Stable numeric code (SPEC.md §5), registered in tally-codes
    /// (docs/CODES.md). Never renumbered.
    pub fn code(&self) -> u16 {
        match self {
            VerifyError::Decode(_) => codes::VERIFY_DECODE,
            VerifyError::HistoryBudgetExceeded { .. } => codes::VERIFY_HISTORY_BUDGET_EXCEEDED,
            VerifyError::DuplicateRecord => codes::VERIFY_DUPLICATE_RECORD,
            VerifyError::MissingAncestor => codes::VERIFY_MISSING_ANCESTOR,
            VerifyError::UnreachableRecord => codes::VERIFY_UNREACHABLE_RECORD,
            VerifyError::UnknownOutput => codes::VERIFY_UNKNOWN_OUTPUT,
            VerifyError::EmptyRecord => codes::VERIFY_EMPTY_RECORD,
            VerifyError::UnknownIssuer => codes::VERIFY_UNKNOWN_ISSUER,
            VerifyError::CertificateExpired => codes::VERIFY_CERTIFICATE_EXPIRED,
            VerifyError::CertificateRevoked => codes::VERIFY_CERTIFICATE_REVOKED,
            VerifyError::TokenExpired => codes::VERIFY_TOKEN_EXPIRED,
            VerifyError::MissingCertificate => codes::VERIFY_MISSING_CERTIFICATE,
            VerifyError::UnusedCertificate => codes::VERIFY_UNUSED_CERTIFICATE,
            VerifyError::BadCertificateSignature => codes::VERIFY_BAD_CERTIFICATE_SIGNATURE,
            VerifyError::BadKey => codes::VERIFY_BAD_KEY,
            VerifyError::BadSignature => codes::VERIFY_BAD_SIGNATURE,
            VerifyError::SuiteMismatch => codes::VERIFY_SUITE_MISMATCH,
            VerifyError::ValueNotConserved => codes::VERIFY_VALUE_NOT_CONSERVED,
            VerifyError::ZeroValueOutput => codes::VERIFY_ZERO_VALUE_OUTPUT,
            VerifyError::AmountOverflow => codes::VERIFY_AMOUNT_OVERFLOW,
            VerifyError::OutputSpentTwice => codes::VERIFY_OUTPUT_SPENT_TWICE,
            VerifyError::WrongPayee => codes::VERIFY_WRONG_PAYEE,
            VerifyError::WrongAmount => codes::VERIFY_WRONG_AMOUNT,
            VerifyError::WrongNonce => codes::VERIFY_WRONG_NONCE,
            VerifyError::BadTrustSignature => codes::VERIFY_BAD_TRUST_SIGNATURE,
            VerifyError::AmountForm => codes::VERIFY_AMOUNT_FORM,
            VerifyError::RangeBitsMismatch => codes::VERIFY_RANGE_BITS_MISMATCH,
            VerifyError::RangeProofInvalid => codes::VERIFY_RANGE_PROOF_INVALID,
            VerifyError::CommitmentsUnbalanced => codes::VERIFY_COMMITMENTS_UNBALANCED,
            VerifyError::OpeningUnreadable => codes::VERIFY_OPENING_UNREADABLE,
            VerifyError::WrongOpening => codes::VERIFY_WRONG_OPENING,
            VerifyError::AuditSealInvalid => codes::VERIFY_AUDIT_SEAL_INVALID,
            VerifyError::StreamTerms => codes::VERIFY_STREAM_TERMS,
            VerifyError::StreamSpend => codes::VERIFY_STREAM_SPEND,
            VerifyError::StreamCloseValue => codes::VERIFY_STREAM_CLOSE_VALUE,
            VerifyError::StreamChain => codes::VERIFY_STREAM_CHAIN,
            VerifyError::WrongStream => codes::VERIFY_WRONG_STREAM,
        }
    }
    /// The rule number (V1…V12) in SPEC.md §5.
    pub fn rule(&self) -> u8 {
        (self.code() / 100) as u8
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Decode(e) => write!(f, "V1 ({}): {e}", self.code()),
            VerifyError::HistoryBudgetExceeded { records, budget } => {
                write!(
                    f,
                    "V2 ({}): {records} ancestry records exceed the history budget of {budget}",
                    self.code()
                )
            }
            other => write!(f, "V{} ({}): {:?}", other.rule(), other.code(), other),
        }
    }
}

impl From<CodecError> for VerifyError {
    fn from(e: CodecError) -> Self {
        VerifyError::Decode(e)
    }
}

/// The verified trust anchors: root key, policy (with its DCP trust list)
/// and revocation list, each checked against the root once, on install.
#[derive(Debug, Clone)]
pub struct TrustStore {
    root: PublicKey,
    policy: Policy,
    revocations: RevocationList,
    /// The range generators of a confidential policy (built once, when
    /// the policy is installed: building them is the costliest step).
    #[cfg(feature = "confidential")]
    range_gens: Option<Gens>,
}

/// Shared range generators (cheap to clone with the trust store).
#[cfg(feature = "confidential")]
#[derive(Clone)]
struct Gens(alloc::sync::Arc<crate::confidential::RangeGens>);

#[cfg(feature = "confidential")]
impl fmt::Debug for Gens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RangeGens({} bits)", self.0.bits().bits())
    }
}

impl TrustStore {
    pub fn new(
        root: PublicKey,
        policy: Policy,
        revocations: RevocationList,
    ) -> Result<TrustStore, VerifyError> {
        verify(&root, &policy.signed_message().0, &policy.signature)
            .map_err(|_| VerifyError::BadTrustSignature)?;
        verify(
            &root,
            &revocations.signed_message().0,
            &revocations.signature,
        )
        .map_err(|_| VerifyError::BadTrustSignature)?;
        check_sorted(&revocations)?;
        for (i, c) in policy.dcps.iter().enumerate() {
            Self::check_dcp_cert(&root, c)?;
            // One entry per key, so every lookup sees the same roles.
            if policy.dcps[..i].iter().any(|d| d.key == c.key) {
                return Err(VerifyError::BadTrustSignature);
            }
        }
        Self::from_installed(root, policy, revocations)
    }

    #[cfg(feature = "confidential")]
    fn range_gens_for(policy: &Policy) -> Result<Option<Gens>, VerifyError> {
        if !policy.is_confidential() {
            return Ok(None);
        }
        use crate::confidential::{RANGE_OUTPUTS_MAX, RangeBits, RangeGens};
        let bits = RangeBits::for_bound(policy.holding_bound());
        // A device (decision 0027): constant generators, bounded memory.
        #[cfg(feature = "confidential-low-memory")]
        let gens = RangeGens::low_memory(
            bits,
            RANGE_OUTPUTS_MAX,
            crate::confidential::RANGE_MSM_CHUNK,
            crate::confidential::RANGE_PROVE_MSM_CHUNK,
        );
        #[cfg(not(feature = "confidential-low-memory"))]
        let gens = RangeGens::new(bits, RANGE_OUTPUTS_MAX);
        Ok(Some(Gens(alloc::sync::Arc::new(
            gens.map_err(|_| VerifyError::BadTrustSignature)?,
        ))))
    }
    /// A trust store from objects that [`TrustStore::new`] accepted
    /// before, without checking any signature again: for a secure element
    /// rebuilding, at boot, the trust store it verified when it installed
    /// it and has kept since under its storage's integrity check (its
    /// journal; docs/decisions/0018-se-journal-log.md). Anything that was
    /// not verified that way must go through [`TrustStore::new`]. (A
    /// confidential policy's range generators are derived again: they
    /// are public parameters, not checked objects.)
    pub fn from_installed(
        root: PublicKey,
        policy: Policy,
        revocations: RevocationList,
    ) -> Result<TrustStore, VerifyError> {
        #[cfg(feature = "confidential")]
        let range_gens = Self::range_gens_for(&policy)?;
        Ok(TrustStore {
            root,
            policy,
            revocations,
            #[cfg(feature = "confidential")]
            range_gens,
        })
    }
    /// The range generators of a confidential policy (its bit-length:
    /// `RangeBits::for_bound(policy.holding_bound())`, four outputs).
    #[cfg(feature = "confidential")]
    pub fn range_gens(&self) -> Option<&crate::confidential::RangeGens> {
        self.range_gens.as_ref().map(|g| &*g.0)
    }
    fn check_dcp_cert(root: &PublicKey, c: &DcpCertificate) -> Result<(), VerifyError> {
        verify(root, &c.signed_message().0, &c.signature)
            .map_err(|_| VerifyError::BadTrustSignature)?;
        check_key(&c.key).map_err(|_| VerifyError::BadKey)
    }
    pub fn root(&self) -> &PublicKey {
        &self.root
    }
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }
    /// Replaces the policy if `p` is root-signed and newer.
    pub fn update_policy(&mut self, p: Policy) -> Result<bool, VerifyError> {
        if p.serial <= self.policy.serial {
            return Ok(false);
        }
        let t = TrustStore::new(self.root, p, self.revocations.clone())?;
        *self = t;
        Ok(true)
    }
    /// Replaces the revocation list if `l` is root-signed and newer.
    pub fn update_revocations(&mut self, l: RevocationList) -> Result<bool, VerifyError> {
        if l.serial <= self.revocations.serial {
            return Ok(false);
        }
        verify(&self.root, &l.signed_message().0, &l.signature)
            .map_err(|_| VerifyError::BadTrustSignature)?;
        check_sorted(&l)?;
        self.revocations = l;
        Ok(true)
    }
    /// The trusted DCP certificate for `key_id` holding `r`, valid in `epoch`.
    pub fn dcp_for(
        &self,
        key_id: &Hash32,
        r: u8,
        epoch: Epoch,
    ) -> Result<&DcpCertificate, VerifyError> {
        let c = self
            .policy
            .dcp(key_id)
            .filter(|c| c.has_role(r))
            .ok_or(VerifyError::UnknownIssuer)?;
        if c.expiry_epoch < epoch {
            return Err(VerifyError::CertificateExpired);
        }
        if self.revocations.is_revoked(key_id) {
            return Err(VerifyError::CertificateRevoked);
        }
        Ok(c)
    }
    /// A trusted DCP key with role `r`, regardless of expiry and revocation
    /// (settlement's view, see [`verify_package_for_settlement`]).
    pub fn dcp_any_time(&self, key_id: &Hash32, r: u8) -> Result<&DcpCertificate, VerifyError> {
        self.policy
            .dcp(key_id)
            .filter(|c| c.has_role(r))
            .ok_or(VerifyError::UnknownIssuer)
    }
    /// Checks everything about a pseudonym certificate except its signature,
    /// and returns the issuer key whose signature must be checked.
    pub fn check_pseudonym_cert(
        &self,
        c: &PseudonymCertificate,
        epoch: Epoch,
    ) -> Result<PublicKey, VerifyError> {
        let issuer = self.check_pseudonym_cert_current(c, epoch)?;
        check_key(&c.key).map_err(|_| VerifyError::BadKey)?;
        Ok(issuer)
    }
    /// The part of [`Self::check_pseudonym_cert`] that can change after a
    /// certificate was checked once: its issuer's role and validity at
    /// `epoch`, its expiry, its revocation. What cannot change (the key is
    /// a valid point, the issuer's signature) is for the first check only;
    /// a caller that cached the certificate as checked calls this alone.
    pub fn check_pseudonym_cert_current(
        &self,
        c: &PseudonymCertificate,
        epoch: Epoch,
    ) -> Result<PublicKey, VerifyError> {
        let issuer = self.dcp_for(&c.issuer, role::CERTIFY, epoch)?;
        if c.expiry_epoch < epoch {
            return Err(VerifyError::CertificateExpired);
        }
        if self.revocations.is_revoked(&c.key.id()) {
            return Err(VerifyError::CertificateRevoked);
        }
        Ok(issuer.key)
    }
    /// Full check of one pseudonym certificate, signature included.
    pub fn verify_pseudonym_cert(
        &self,
        c: &PseudonymCertificate,
        epoch: Epoch,
    ) -> Result<(), VerifyError> {
        let issuer = self.check_pseudonym_cert(c, epoch)?;
        verify(&issuer, &c.signed_message().0, &c.signature).map_err(|e| match e {
            SigError::SuiteMismatch => VerifyError::SuiteMismatch,
            _ => VerifyError::BadCertificateSignature,
        })
    }
}

/// Pseudonym certificates whose issuer signature this verifier has already
/// checked (by certificate id). Expiry and revocation are re-checked on
/// every use; only the signature check is skipped.
pub trait CertCache {
    fn contains(&self, cert_id: &Hash32) -> bool;
    fn insert(&mut self, cert_id: Hash32);
}

/// No caching.
pub struct NoCache;
impl CertCache for NoCache {
    fn contains(&self, _: &Hash32) -> bool {
        false
    }
    fn insert(&mut self, _: Hash32) {}
}

/// A bounded cache; when full it stops admitting (a cache miss only costs
/// a signature check).
pub struct BoundedCertCache {
    ids: VecSet<Hash32>,
    max: usize,
}
impl BoundedCertCache {
    pub fn new(max: usize) -> Self {
        BoundedCertCache {
            ids: VecSet::new(),
            max,
        }
    }
}
impl CertCache for BoundedCertCache {
    fn contains(&self, id: &Hash32) -> bool {
        self.ids.contains(id)
    }
    fn insert(&mut self, id: Hash32) {
        if self.ids.len() < self.max {
            self.ids.insert(id);
        }
    }
}

/// What the payee asked for: the payment must match it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub payee: PublicKey,
    pub amount: Amount,
    pub nonce: [u8; 16],
    /// The stream the request asked for (the transfer must OPEN exactly
    /// it on output 0), or `None` for a one-off payment (the transfer must
    /// not be a stream transfer).
    pub stream: Option<StreamAsk>,
}

/// Verification settings of the verifying party.
#[derive(Debug, Clone, Copy)]
pub struct VerifyParams {
    /// The verifier's current epoch (latest sync grant).
    pub epoch: Epoch,
    /// History budget from the verifier's policy tier.
    pub history_records_max: usize,
    /// At most this many Ed25519 signatures in one batch equation
    /// ([`crate::crypto::verify_many_bounded`]): a device bounds the memory
    /// of verification with it, a server passes `usize::MAX` (one batch).
    /// Which packages are accepted and how many signatures are checked do
    /// not depend on it.
    pub signature_batch_max: usize,
}

/// A package that passed every rule. Only this module can make one.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    package: Package,
    transfer_id: Hash32,
    ancestry_ids: Vec<Hash32>,
    signature_checks: usize,
    /// The payee's opening of output 0 (confidential packages).
    #[cfg(feature = "confidential")]
    payee_opening: Option<crate::confidential::Opening>,
    /// Settlement opened every audit seal and set every confidential
    /// output's value from it ([`VerifiedPackage::open_audit`]).
    #[cfg(feature = "confidential")]
    amounts_opened: bool,
    /// Settlement opened every audit seal but those of the one-output
    /// Issues named here, whose values its registry holds: the values
    /// opened so far, until [`VerifiedPackage::complete_from_registry`].
    #[cfg(all(feature = "confidential", feature = "sealing"))]
    awaiting_registry: Option<AwaitingRegistry>,
    _verified: Verified,
}

/// What a package awaits from settlement's registry: the one-output
/// Issues whose values it needs, the values its opened seals gave, and the
/// range those were checked against.
#[cfg(all(feature = "confidential", feature = "sealing"))]
#[derive(Debug, Clone)]
struct AwaitingRegistry {
    issues: Vec<Hash32>,
    values: alloc::collections::BTreeMap<Hash32, Vec<Amount>>,
    bits: crate::confidential::RangeBits,
}

/// Zero-sized proof that the checks ran; private so no one else builds it.
#[derive(Debug, Clone, Copy)]
struct Verified;

impl VerifiedPackage {
    pub fn package(&self) -> &Package {
        &self.package
    }
    pub fn into_package(self) -> Package {
        self.package
    }
    pub fn transfer_id(&self) -> Hash32 {
        self.transfer_id
    }
    /// The token the payee received: output 0 of the transfer. In a
    /// confidential package its value is the one of the payee's checked
    /// opening.
    pub fn payment(&self) -> (OutPoint, Output) {
        #[allow(unused_mut)]
        let mut out = self.package.transfer.outputs[0];
        #[cfg(feature = "confidential")]
        if let Some(o) = &self.payee_opening {
            out.value = o.value();
        }
        (
            OutPoint {
                record: self.transfer_id,
                index: 0,
            },
            out,
        )
    }
    /// The payee's opening of its output (confidential packages), checked
    /// against the commitment: the SE stores it with the token.
    #[cfg(feature = "confidential")]
    pub fn payee_opening(&self) -> Option<&crate::confidential::Opening> {
        self.payee_opening.as_ref()
    }
    /// Whether every output value of the package is known: a clear
    /// package, or a confidential one after [`VerifiedPackage::open_audit`].
    /// Settlement books amounts only from such a package.
    pub fn amounts_opened(&self) -> bool {
        #[cfg(feature = "confidential")]
        if self.amounts_opened {
            return true;
        }
        self.package.transfer.confidential.is_none()
            && !self.package.ancestry.iter().any(Record::is_confidential)
    }
    /// Settlement's rule C7 (SPEC §4.9.4): opens the audit seal of every
    /// confidential record of the package with settlement's sealing key,
    /// checks each opening against its commitment and that its value is
    /// non-zero and within `bits`, and that each confidential transfer's
    /// opened inputs and outputs balance; then sets every confidential
    /// output's in-memory value to its opened one (the wire form, ids and
    /// signatures do not change: they hold the commitments). On failure
    /// names the first record that did not open and why; the package is
    /// not changed.
    #[cfg(all(feature = "confidential", feature = "sealing"))]
    pub fn open_audit(
        self,
        key: &crate::sealed::OpeningKey,
        bits: crate::confidential::RangeBits,
    ) -> Result<VerifiedPackage, AuditFailure> {
        let opened = self.audit_open(key, bits, false)?;
        if let Some(f) = opened.wrong_opening() {
            return Err(f);
        }
        self.audit_finish(opened)
    }

    /// The one-output confidential Issues whose audit seals settlement
    /// left to its registry (`issues_from_registry` of
    /// [`verify_package_groups_for_settlement_opened`]): the package's
    /// amounts are not opened until
    /// [`VerifiedPackage::complete_from_registry`] is given their values.
    #[cfg(all(feature = "confidential", feature = "sealing"))]
    pub fn awaiting_registry(&self) -> &[Hash32] {
        self.awaiting_registry
            .as_ref()
            .map_or(&[][..], |a| a.issues.as_slice())
    }

    /// C7's end for a package whose one-output Issues' seals were not
    /// opened: `value` gives each such Issue's value as settlement
    /// registered it, after opening its audit seal when a DCP registered
    /// it (an Issue's id binds its commitment, so the registered value is
    /// its output's opening). Each must be known, non-zero and within the
    /// range the package's other openings were checked against; then
    /// every confidential transfer's values balance, as in
    /// [`VerifiedPackage::open_audit`], and the values are written in. A
    /// package that awaits nothing is returned as it is.
    #[cfg(all(feature = "confidential", feature = "sealing"))]
    pub fn complete_from_registry(
        mut self,
        value: &dyn Fn(&Hash32) -> Option<Amount>,
    ) -> Result<VerifiedPackage, AuditFailure> {
        use crate::confidential::ConfidentialError;
        let Some(AwaitingRegistry {
            issues,
            mut values,
            bits,
        }) = self.awaiting_registry.take()
        else {
            return Ok(self);
        };
        for id in &issues {
            let v = value(id).ok_or(AuditFailure {
                record: *id,
                reason: ConfidentialError::OpeningUnreadable,
            })?;
            if v == Amount::ZERO || !bits.holds(v) {
                return Err(AuditFailure {
                    record: *id,
                    reason: ConfidentialError::OutOfRange,
                });
            }
            values.insert(*id, alloc::vec![v]);
        }
        self.finish_values(values)
    }

    /// C7's first part: every audit seal opened and every value in range;
    /// the openings not yet checked against their commitments
    /// ([`AuditOpened::wrong_opening`], or many packages' at once).
    #[cfg(all(feature = "confidential", feature = "sealing"))]
    fn audit_open(
        &self,
        key: &crate::sealed::OpeningKey,
        bits: crate::confidential::RangeBits,
        issues_from_registry: bool,
    ) -> Result<AuditOpened, AuditFailure> {
        use crate::confidential::ConfidentialError;
        let mut values: alloc::collections::BTreeMap<Hash32, Vec<Amount>> =
            alloc::collections::BTreeMap::new();
        let ids: Vec<Hash32> = self
            .ancestry_ids
            .iter()
            .copied()
            .chain(core::iter::once(self.transfer_id))
            .collect();
        let records = self
            .package
            .ancestry
            .iter()
            .map(|r| (r.audit_seal(), r))
            .collect::<Vec<_>>();
        let fail = |record: Hash32, reason: ConfidentialError| AuditFailure { record, reason };
        let mut opened: Vec<(
            Hash32,
            Vec<crate::confidential::Opening>,
            Vec<crate::confidential::Commitment>,
        )> = Vec::new();
        let mut from_registry: Vec<Hash32> = Vec::new();
        let t = &self.package.transfer;
        let last = t
            .confidential
            .as_ref()
            .map(|c| (c.audit.as_ref(), &c.commitments));
        for (i, id) in ids.iter().enumerate() {
            let (seal, commitments, context) = if let Some((seal, rec)) = records.get(i) {
                if !rec.is_confidential() {
                    continue;
                }
                if issues_from_registry
                    && let Record::Issue(iss) = rec
                    && iss.outputs.len() == 1
                {
                    from_registry.push(*id);
                    continue;
                }
                let commitments: Vec<crate::confidential::Commitment> = (0..rec.outputs().len())
                    .filter_map(|j| rec.commitment(j).copied())
                    .collect();
                let context = match rec {
                    Record::Issue(iss) => {
                        crate::confidential_record::record_context(&iss.body_bytes())
                    }
                    Record::Transfer(tr) => tr.context(),
                };
                (*seal, commitments, context)
            } else {
                match last {
                    Some((seal, c)) => (seal, c.clone(), t.context()),
                    None => continue,
                }
            };
            let seal = seal.ok_or(fail(*id, ConfidentialError::OpeningUnreadable))?;
            let openings = seal
                .open_unchecked(key, &context, &commitments)
                .map_err(|e| fail(*id, e))?;
            let mut v = Vec::with_capacity(openings.len());
            for o in &openings {
                if o.value() == Amount::ZERO || !bits.holds(o.value()) {
                    return Err(fail(*id, ConfidentialError::OutOfRange));
                }
                v.push(o.value());
            }
            values.insert(*id, v);
            opened.push((*id, openings, commitments));
        }
        Ok(AuditOpened {
            values,
            opened,
            from_registry,
            bits,
        })
    }

    /// C7's last part, once every opening opened its commitment: each
    /// confidential transfer's opened values balance; then the values are
    /// written into the package.
    #[cfg(all(feature = "confidential", feature = "sealing"))]
    fn audit_finish(mut self, opened: AuditOpened) -> Result<VerifiedPackage, AuditFailure> {
        if !opened.from_registry.is_empty() {
            // The balances wait for the registry's values.
            self.awaiting_registry = Some(AwaitingRegistry {
                issues: opened.from_registry,
                values: opened.values,
                bits: opened.bits,
            });
            return Ok(self);
        }
        self.finish_values(opened.values)
    }

    /// C7's balances and the write-in, once every confidential record's
    /// values are known.
    #[cfg(all(feature = "confidential", feature = "sealing"))]
    fn finish_values(
        mut self,
        values: alloc::collections::BTreeMap<Hash32, Vec<Amount>>,
    ) -> Result<VerifiedPackage, AuditFailure> {
        use crate::confidential::ConfidentialError;
        let fail = |record: Hash32, reason: ConfidentialError| AuditFailure { record, reason };
        let t = &self.package.transfer;
        // Each confidential transfer's opened values balance (C4 showed
        // it for the commitments; this checks the seal tells the
        // same story, so the booked amounts conserve value too).
        let transfers = self
            .package
            .ancestry
            .iter()
            .zip(&self.ancestry_ids)
            .filter_map(|(r, id)| match r {
                Record::Transfer(t) => Some((t, *id)),
                Record::Issue(_) => None,
            })
            .chain(core::iter::once((t, self.transfer_id)));
        for (tr, id) in transfers {
            let Some(outs) = values.get(&id) else {
                continue;
            };
            let ins: Option<Vec<Amount>> = tr
                .inputs
                .iter()
                .map(|op| values.get(&op.record)?.get(op.index as usize).copied())
                .collect();
            let in_sum = ins.and_then(Amount::sum);
            let out_sum = Amount::sum(outs.iter().copied());
            if in_sum.is_none() || in_sum != out_sum {
                return Err(fail(id, ConfidentialError::Unbalanced));
            }
        }
        // Nothing failed: write the values in.
        for (rec, id) in self.package.ancestry.iter_mut().zip(&self.ancestry_ids) {
            if let Some(v) = values.get(id) {
                let outs = match rec {
                    Record::Issue(i) => &mut i.outputs,
                    Record::Transfer(t) => &mut t.outputs,
                };
                for (o, a) in outs.iter_mut().zip(v) {
                    o.value = *a;
                }
            }
        }
        if let Some(v) = values.get(&self.transfer_id) {
            for (o, a) in self.package.transfer.outputs.iter_mut().zip(v) {
                o.value = *a;
            }
        }
        self.amounts_opened = true;
        Ok(self)
    }
    /// Ids of the ancestry records, in package order.
    pub fn ancestry_ids(&self) -> &[Hash32] {
        &self.ancestry_ids
    }
    /// How many signatures were checked (cache hits excluded).
    pub fn signature_checks(&self) -> usize {
        self.signature_checks
    }
    /// An output this package consumes that one of `held` consumes by
    /// another record: [`SpendIndex::conflict`] of this package's
    /// [`VerifiedPackage::spend_index`].
    pub fn conflicting_spend<'r>(
        &self,
        held: impl IntoIterator<Item = (&'r Hash32, &'r Record)>,
    ) -> Option<OutPoint> {
        self.spend_index().conflict(held)
    }
    /// What this package consumes and which records it is made of, to
    /// compare with records a holder keeps (SPEC §5.5, R2): two sets the
    /// size of the package, bounded by the history budget.
    pub fn spend_index(&self) -> SpendIndex {
        // Filled by `insert`, not `collect`: each sort instantiation costs
        // the Cortex-M4 firmware flash (see the SE's collect_garbage).
        let mut consumed: VecSet<OutPoint> = VecSet::new();
        let inputs = self
            .package
            .ancestry
            .iter()
            .flat_map(|r| r.inputs().iter())
            .chain(&self.package.transfer.inputs);
        for op in inputs {
            consumed.insert(*op);
        }
        let mut own: VecSet<Hash32> = VecSet::new();
        for id in self.ancestry_ids.iter().chain([&self.transfer_id]) {
            own.insert(*id);
        }
        SpendIndex { consumed, own }
    }
}

/// The outputs a verified package consumes and the ids of its records
/// (made by [`VerifiedPackage::spend_index`]).
#[derive(Debug, Clone)]
pub struct SpendIndex {
    consumed: VecSet<OutPoint>,
    own: VecSet<Hash32>,
}

impl SpendIndex {
    /// An output the package consumes that one of `held` — records the
    /// caller holds, each with its id — consumes by another record: a
    /// double spend the holder can see (SPEC §5.5, R2). The package's own
    /// records may be among `held` (a common ancestor): V10 lets only one
    /// record of the package consume each output, so a held record that
    /// is in the package is that record, never a conflict. Cost: one
    /// lookup per input of each held record (a second one for an input
    /// the package shares).
    pub fn conflict<'r>(
        &self,
        held: impl IntoIterator<Item = (&'r Hash32, &'r Record)>,
    ) -> Option<OutPoint> {
        // The input lookup first: most held records share nothing with
        // the package, and a shared input is then checked against the
        // package's own ids.
        held.into_iter()
            .flat_map(|(id, r)| r.inputs().iter().map(move |op| (id, op)))
            .find(|(id, op)| self.consumed.contains(op) && !self.own.contains(id))
            .map(|(_, op)| *op)
    }
}

/// A package's audit seals opened (C7's first part), its openings not
/// yet checked against their commitments.
#[cfg(all(feature = "confidential", feature = "sealing"))]
struct AuditOpened {
    values: alloc::collections::BTreeMap<Hash32, Vec<Amount>>,
    /// One-output confidential Issues left to settlement's registry.
    from_registry: Vec<Hash32>,
    /// The range the values were checked against.
    bits: crate::confidential::RangeBits,
    /// Per confidential record: its id, openings and commitments.
    opened: Vec<(
        Hash32,
        Vec<crate::confidential::Opening>,
        Vec<crate::confidential::Commitment>,
    )>,
}

#[cfg(all(feature = "confidential", feature = "sealing"))]
impl AuditOpened {
    /// Every opening and its commitment, in record order.
    fn pairs(
        &self,
    ) -> impl Iterator<
        Item = (
            &crate::confidential::Opening,
            &crate::confidential::Commitment,
        ),
    > {
        self.opened.iter().flat_map(|(_, o, c)| o.iter().zip(c))
    }
    /// The first record whose openings do not open its commitments (one
    /// multiscalar multiplication for the package; record by record only
    /// if that fails).
    fn wrong_opening(&self) -> Option<AuditFailure> {
        let (o, c): (Vec<_>, Vec<_>) = self.pairs().map(|(o, c)| (o.clone(), *c)).unzip();
        if crate::confidential::opens_all(&o, &c) {
            return None;
        }
        // (Failing together but not alone is a 2⁻²⁵² event: then the
        // package's first record is named.)
        let (id, ..) = self
            .opened
            .iter()
            .find(|(_, o, c)| !crate::confidential::opens_all(o, c))
            .or(self.opened.first())?;
        Some(AuditFailure {
            record: *id,
            reason: crate::confidential::ConfidentialError::WrongOpening,
        })
    }
}

/// Why settlement's rule C7 refused a package: the record whose audit
/// seal did not open, or whose openings do not match its commitments, are
/// out of range or do not balance.
#[cfg(feature = "confidential")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditFailure {
    pub record: Hash32,
    pub reason: crate::confidential::ConfidentialError,
}

/// Settlement's view: every rule except V11 (settlement checks the
/// transfer's outputs itself) and except the time-bound rules — token and
/// certificate expiry (V5–V7) and revocation. An offline payment is final
/// for the payee that accepted it under its own epoch and revocation list;
/// settlement cannot know when it was made, renewal exists precisely for
/// expired tokens, and value conservation is guarded by the spent
/// registry, not by revocation. Issuer trust, signatures, structure and
/// conservation are all checked.
pub fn verify_package_for_settlement(
    pkg: Package,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
) -> Result<VerifiedPackage, VerifyError> {
    verify_inner(pkg, Mode::Settlement, trust, params, cache)
}

/// [`verify_package_for_settlement`] for many packages at once, with the
/// same answer for each package: every rule but V8 runs per package, then
/// the signatures of all packages that got that far are checked in one
/// batch, which costs far less per signature than a batch per package
/// (a one-hop package has only 3). If the joint batch fails, each of those
/// packages is checked again on its own, so one bad package never decides
/// another's result; it only costs the others a second signature check.
/// A certificate shared by several packages of the call may be checked
/// more than once (the cache is updated after the batch).
pub fn verify_packages_for_settlement(
    pkgs: Vec<Package>,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
) -> Vec<Result<VerifiedPackage, VerifyError>> {
    verify_package_groups_for_settlement(alloc::vec![pkgs], trust, params, cache)
        .into_iter()
        .flatten()
        .collect()
}

/// [`verify_packages_for_settlement`] for groups of packages (settlement's
/// uploads, one group per request), with the same answer for each package
/// as [`verify_package_for_settlement`] would give it: the signatures of
/// every group in one batch; if that batch fails, each group's in a batch
/// of its own, and the packages of a group that fails then one by one. So
/// a bad group costs the good ones a second signature check but never
/// decides their results, and within a group one bad package never
/// decides another's. Every key is decompressed once per call: the
/// pseudonym keys by their V7 check, the DCP keys on their first use.
pub fn verify_package_groups_for_settlement(
    groups: Vec<Vec<Package>>,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
) -> Vec<Vec<Result<VerifiedPackage, VerifyError>>> {
    verify_groups(groups, trust, params, cache, Proofs::Defer, &|_| false)
}

/// What settlement refuses a package for: a rule of verification, or its
/// audit seals (C7).
#[cfg(all(feature = "confidential", feature = "sealing"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementRefusal {
    Verify(VerifyError),
    Audit(AuditFailure),
}

/// [`verify_package_groups_for_settlement`] by the party that holds
/// settlement's sealing key (SPEC §4.9.4, decision 0028): every
/// confidential record's audit seal is opened with `key` and checked (C7,
/// [`VerifiedPackage::open_audit`]) before a package is returned, and
/// that check stands in for the range proofs and the balance of
/// commitments (C3, C4), which are not verified here: an opening that opens a commitment
/// (Pedersen commitments bind) to a value within `bits`, and openings
/// that balance in clear per transfer, show what the proofs show and
/// more. A clear package is returned as verified. Every package returned
/// carries its opened amounts (or awaits the registry's, below).
///
/// A package whose transfer id `recheck` picks has its range proofs and
/// commitment balances verified as well (C3, C4; decision 0028, "Session 13"):
/// settlement samples packages that way, so that a payee SE which
/// accepted proofs that do not verify — which only a broken or
/// compromised SE does — is still seen (refused, and the MDS alerted by
/// the refused package), though the openings alone would settle it.
///
/// With `issues_from_registry`, the audit seal of a confidential Issue of
/// one output is not opened: settlement opened it when a DCP registered
/// the Issue, and its registry holds the value. Such a package comes back
/// with [`VerifiedPackage::awaiting_registry`] naming those Issues and its
/// amounts not yet opened; [`VerifiedPackage::complete_from_registry`]
/// finishes C7 with the registered values (decision 0028, "Session 13").
#[cfg(all(feature = "confidential", feature = "sealing"))]
#[allow(clippy::too_many_arguments)]
pub fn verify_package_groups_for_settlement_opened(
    groups: Vec<Vec<Package>>,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
    key: &crate::sealed::OpeningKey,
    bits: crate::confidential::RangeBits,
    recheck: &dyn Fn(&Hash32) -> bool,
    issues_from_registry: bool,
) -> Vec<Vec<Result<VerifiedPackage, SettlementRefusal>>> {
    // C7's first part per package: seals opened, values in range.
    type Opened = Result<(VerifiedPackage, Option<AuditOpened>), SettlementRefusal>;
    let opened: Vec<Vec<Opened>> =
        verify_groups(groups, trust, params, cache, Proofs::ByOpenings, recheck)
            .into_iter()
            .map(|group| {
                group
                    .into_iter()
                    .map(|r| {
                        let v = r.map_err(SettlementRefusal::Verify)?;
                        if v.amounts_opened() {
                            return Ok((v, None));
                        }
                        let a = v
                            .audit_open(key, bits, issues_from_registry)
                            .map_err(SettlementRefusal::Audit)?;
                        Ok((v, Some(a)))
                    })
                    .collect()
            })
            .collect();
    // Every opening of the call against its commitment in one
    // multiscalar multiplication; if that fails, package by package, so
    // one lying seal refuses only its package.
    let (o, c): (Vec<_>, Vec<_>) = opened
        .iter()
        .flatten()
        .flatten()
        .filter_map(|(_, a)| a.as_ref())
        .flat_map(AuditOpened::pairs)
        .map(|(o, c)| (o.clone(), *c))
        .unzip();
    let all_open = crate::confidential::opens_all(&o, &c);
    opened
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|r| {
                    let (v, a) = r?;
                    let Some(a) = a else {
                        return Ok(v);
                    };
                    if !all_open && let Some(f) = a.wrong_opening() {
                        return Err(SettlementRefusal::Audit(f));
                    }
                    v.audit_finish(a).map_err(SettlementRefusal::Audit)
                })
                .collect()
        })
        .collect()
}

/// `recheck`: with [`Proofs::ByOpenings`], the transfers whose proofs are
/// verified as well ([`Proofs::Defer`] for their packages).
fn verify_groups(
    groups: Vec<Vec<Package>>,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
    proofs: Proofs,
    recheck: &dyn Fn(&Hash32) -> bool,
) -> Vec<Vec<Result<VerifiedPackage, VerifyError>>> {
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    #[allow(unused_mut)]
    let mut checked: Vec<Result<Checked, VerifyError>> = groups
        .into_iter()
        .flatten()
        .map(|p| {
            let proofs = if proofs == Proofs::ByOpenings
                && p.transfer.confidential.is_some()
                && recheck(&p.transfer.id())
            {
                Proofs::Defer
            } else {
                proofs
            };
            check_all_but_signatures(p, Mode::Settlement, trust, params, cache, proofs)
        })
        .collect();
    // C3: every range proof of the call in one batch (one multiscalar
    // multiplication); if it fails, each package's proofs again on their
    // own, so one bad proof refuses only its package.
    #[cfg(feature = "confidential")]
    {
        let all: Vec<PendingRange> = checked
            .iter()
            .flatten()
            .flat_map(|c| c.deferred_ranges.iter().cloned())
            .collect();
        if verify_ranges(trust, &all).is_err() {
            for c in checked.iter_mut() {
                if let Ok(ch) = c
                    && let Err(e) = verify_ranges(trust, &ch.deferred_ranges)
                {
                    *c = Err(e);
                }
            }
        }
    }
    let keys = KeyTable::of(&checked);
    let batch_max = params.signature_batch_max;
    // V8: which packages' signatures are known good from a batch.
    let mut good = alloc::vec![keys.verify(checked.iter().flatten(), batch_max); checked.len()];
    if !good.first().copied().unwrap_or(true) && sizes.len() > 1 {
        let mut start = 0;
        for &n in &sizes {
            let group = start..start + n;
            start += n;
            if n > 1 && keys.verify(checked[group.clone()].iter().flatten(), batch_max) {
                good[group].iter_mut().for_each(|g| *g = true);
            }
        }
    }
    let mut results = checked.into_iter().zip(good).map(|(c, good)| {
        let c = c?;
        if !good {
            c.verify_signatures_with(Some(&keys), batch_max)?;
        }
        Ok(c.into_verified(cache))
    });
    sizes
        .iter()
        .map(|&n| results.by_ref().take(n).collect())
        .collect()
}

/// The keys of a settlement call's signature checks, each decompressed
/// once ([`CheckedKey`]).
struct KeyTable(VecMap<PublicKey, CheckedKey>);

impl KeyTable {
    /// The pseudonym keys V7 checked, then every other key of the checks
    /// (the DCPs'); a key that is not a usable point is left out, so the
    /// checks under it take the bare key's path (and its error).
    fn of(checked: &[Result<Checked, VerifyError>]) -> KeyTable {
        let mut t = VecMap::new();
        for c in checked.iter().flatten() {
            for k in &c.checked_keys {
                t.insert(*k.key(), *k);
            }
        }
        for c in checked.iter().flatten() {
            for (k, ..) in &c.checks {
                if !t.contains_key(k)
                    && let Ok(ck) = CheckedKey::new(k)
                {
                    t.insert(*k, ck);
                }
            }
        }
        KeyTable(t)
    }

    /// The checks of `checked` under their keys of this table; `None`
    /// when one of the keys is not in it.
    fn keyed<'a>(&'a self, checked: &'a Checked) -> Option<Vec<KeyedSigCheck<'a>>> {
        checked
            .checks
            .iter()
            .map(|(k, m, s, _)| {
                Some(KeyedSigCheck {
                    key: self.0.get(k)?,
                    msg: &m.0,
                    sig: s,
                })
            })
            .collect()
    }

    /// Whether every signature of `checked` verifies, in one batch.
    fn verify<'a>(&'a self, checked: impl Iterator<Item = &'a Checked>, batch_max: usize) -> bool {
        let mut all = Vec::new();
        for c in checked {
            match self.keyed(c) {
                Some(k) => all.extend(k),
                None => return false,
            }
        }
        verify_many_keyed_bounded(&all, batch_max).is_ok()
    }
}

/// Decodes and verifies a package for a payee.
pub fn verify_package_bytes(
    bytes: &[u8],
    expected: &Expected,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
) -> Result<VerifiedPackage, VerifyError> {
    let pkg = Package::from_cbor(bytes)?;
    verify_package(pkg, expected, trust, params, cache)
}

/// Verifies a decoded package for a payee.
pub fn verify_package(
    pkg: Package,
    expected: &Expected,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
) -> Result<VerifiedPackage, VerifyError> {
    verify_inner(pkg, Mode::Payee(expected, None), trust, params, cache)
}

/// [`verify_package`] for a payee that can open a confidential payment:
/// `payee_key` is the secret key of `expected.payee`, used only to open
/// output 0's sealed opening (SPEC §5, C5–C6). On a clear package it is the
/// same as [`verify_package`].
pub fn verify_package_as_payee(
    pkg: Package,
    expected: &Expected,
    payee_key: &crate::crypto::SecretKey,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
) -> Result<VerifiedPackage, VerifyError> {
    verify_inner(
        pkg,
        Mode::Payee(expected, Some(payee_key)),
        trust,
        params,
        cache,
    )
}

/// What a pending signature check covers (for error attribution).
enum Pending {
    Record,
    Cert,
}

#[derive(Clone, Copy)]
enum Mode<'a> {
    /// What was asked for, and the key that opens a confidential payment.
    Payee(&'a Expected, Option<&'a crate::crypto::SecretKey>),
    Settlement,
}

/// A package that passed every rule except V8, with the signature checks
/// V8 still has to make.
struct Checked {
    package: Package,
    transfer_id: Hash32,
    ancestry_ids: Vec<Hash32>,
    checks: Vec<(PublicKey, Hash32, crate::crypto::Signature, Pending)>,
    /// Certificates whose signatures are among `checks` (cache them once
    /// those verified).
    new_cert_ids: Vec<Hash32>,
    /// Settlement only: the certified keys as V7 checked them, kept for
    /// V8 (a device's verifier keeps only the bare keys: less memory).
    checked_keys: Vec<CheckedKey>,
    #[cfg(feature = "confidential")]
    payee_opening: Option<crate::confidential::Opening>,
    /// Range proofs left for the caller to batch (settlement's many
    /// packages): proof, commitments, context.
    #[cfg(feature = "confidential")]
    deferred_ranges: Vec<PendingRange>,
}

#[cfg(feature = "confidential")]
type PendingRange = (
    crate::confidential::RangeProof,
    Vec<crate::confidential::Commitment>,
    Hash32,
);

impl Checked {
    fn sig_checks(&self) -> impl Iterator<Item = SigCheck<'_>> {
        self.checks.iter().map(|(k, m, s, _)| SigCheck {
            key: k,
            msg: &m.0,
            sig: s,
        })
    }

    /// V8: every signature, in batches of at most `batch_max`.
    fn verify_signatures(&self, batch_max: usize) -> Result<(), VerifyError> {
        self.verify_signatures_with(None, batch_max)
    }

    /// [`Checked::verify_signatures`] under the keys of `keys` when it has
    /// them all (same answer, no key decompressed again).
    fn verify_signatures_with(
        &self,
        keys: Option<&KeyTable>,
        batch_max: usize,
    ) -> Result<(), VerifyError> {
        let r = match keys.and_then(|t| t.keyed(self)) {
            Some(keyed) => verify_many_keyed_bounded(&keyed, batch_max),
            None => {
                let sig_checks: Vec<SigCheck<'_>> = self.sig_checks().collect();
                verify_many_bounded(&sig_checks, batch_max)
            }
        };
        r.map_err(|(i, e)| match (e, &self.checks[i].3) {
            (SigError::SuiteMismatch, _) => VerifyError::SuiteMismatch,
            (SigError::BadKey, _) => VerifyError::BadKey,
            (_, Pending::Cert) => VerifyError::BadCertificateSignature,
            _ => VerifyError::BadSignature,
        })
    }

    /// Only after [`Checked::verify_signatures`] (or a batch containing
    /// every one of its checks) succeeded.
    fn into_verified(self, cache: &mut dyn CertCache) -> VerifiedPackage {
        for cid in self.new_cert_ids {
            cache.insert(cid);
        }
        VerifiedPackage {
            package: self.package,
            transfer_id: self.transfer_id,
            ancestry_ids: self.ancestry_ids,
            signature_checks: self.checks.len(),
            #[cfg(feature = "confidential")]
            payee_opening: self.payee_opening,
            #[cfg(feature = "confidential")]
            amounts_opened: false,
            #[cfg(all(feature = "confidential", feature = "sealing"))]
            awaiting_registry: None,
            _verified: Verified,
        }
    }
}

fn verify_inner(
    pkg: Package,
    mode: Mode<'_>,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut dyn CertCache,
) -> Result<VerifiedPackage, VerifyError> {
    let checked = check_all_but_signatures(pkg, mode, trust, params, cache, Proofs::Now)?;
    checked.verify_signatures(params.signature_batch_max)?;
    Ok(checked.into_verified(cache))
}

/// How a call checks a confidential transfer's proofs (C3, C4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proofs {
    /// Range proofs and balances of commitments here, for this package.
    Now,
    /// Balances of commitments here; range proofs left in the result for the caller to
    /// batch with other packages'.
    Defer,
    /// Neither: the caller opens every confidential record's audit seal
    /// (C7) before the package leaves it, which checks every commitment
    /// against its opening, its range and each transfer's balance in
    /// clear — what the proofs show without the openings. Only
    /// [`verify_package_groups_for_settlement_opened`] uses it.
    #[cfg_attr(not(feature = "sealing"), allow(dead_code))]
    ByOpenings,
}

/// Every rule except V8; cheap structural checks first; C3 and C4 as
/// `proofs` says.
fn check_all_but_signatures(
    pkg: Package,
    mode: Mode<'_>,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &dyn CertCache,
    #[allow(unused_variables)] proofs: Proofs,
) -> Result<Checked, VerifyError> {
    // V2: history budget.
    if pkg.ancestry.len() > params.history_records_max {
        return Err(VerifyError::HistoryBudgetExceeded {
            records: pkg.ancestry.len(),
            budget: params.history_records_max,
        });
    }
    // V3: ids, uniqueness, order (every input refers to an earlier record).
    let mut ids: Vec<Hash32> = Vec::with_capacity(pkg.ancestry.len());
    let mut index_of: VecMap<Hash32, usize> = VecMap::new();
    for (i, rec) in pkg.ancestry.iter().enumerate() {
        let id = rec.id();
        if index_of.insert(id, i).is_some() {
            return Err(VerifyError::DuplicateRecord);
        }
        for inp in rec.inputs() {
            if !index_of.contains_key(&inp.record) || inp.record == id {
                return Err(VerifyError::MissingAncestor);
            }
        }
        ids.push(id);
    }
    let transfer_id = pkg.transfer.id();
    if index_of.contains_key(&transfer_id) {
        return Err(VerifyError::DuplicateRecord);
    }
    for inp in &pkg.transfer.inputs {
        if !index_of.contains_key(&inp.record) {
            return Err(VerifyError::MissingAncestor);
        }
    }
    // V3: reachability from the transfer (walk back; parents are earlier).
    let mut reached = alloc::vec![false; pkg.ancestry.len()];
    let mut stack: Vec<usize> = pkg
        .transfer
        .inputs
        .iter()
        .filter_map(|i| index_of.get(&i.record).copied())
        .collect();
    while let Some(i) = stack.pop() {
        if reached[i] {
            continue;
        }
        reached[i] = true;
        for inp in pkg.ancestry[i].inputs() {
            if let Some(&j) = index_of.get(&inp.record) {
                stack.push(j);
            }
        }
    }
    if reached.iter().any(|r| !r) {
        return Err(VerifyError::UnreachableRecord);
    }

    // C0: one amount form. A payee takes only the policy's; settlement
    // takes either, one form per transfer (checked with the inputs below).
    if let Mode::Payee(..) = mode {
        let want = trust.policy().is_confidential();
        if pkg.transfer.confidential.is_some() != want
            || pkg.ancestry.iter().any(|r| r.is_confidential() != want)
        {
            return Err(VerifyError::AmountForm);
        }
    }
    // C8: every confidential record carries its audit seal, one opening
    // per output (payee and settlement: the payee cannot open it, but it
    // refuses a package settlement could not value).
    #[cfg(feature = "confidential")]
    for rec in &pkg.ancestry {
        check_audit_seal(rec.audit_seal(), rec.is_confidential(), rec.outputs().len())?;
    }
    #[cfg(feature = "confidential")]
    check_audit_seal(
        pkg.transfer
            .confidential
            .as_ref()
            .and_then(|c| c.audit.as_ref()),
        pkg.transfer.confidential.is_some(),
        pkg.transfer.outputs.len(),
    )?;
    // V4, V9, V10 over every transfer (ancestry transfers and the final one).
    // An input is an output of an earlier record, or the payer half
    // `(open, 0x80 | i)` of the stream OPEN `open` on its output `i`: a
    // virtual output of the stream's value owned by the refund key.
    let lookup_record = |op: &OutPoint| -> Result<(&Record, Output, Half<'_>), VerifyError> {
        let i = *index_of
            .get(&op.record)
            .ok_or(VerifyError::MissingAncestor)?;
        let rec = &pkg.ancestry[i];
        let open = rec.stream_open();
        if op.index & STREAM_REFUND_FLAG != 0 {
            let terms = open
                .filter(|t| t.index == op.index & !STREAM_REFUND_FLAG)
                .ok_or(VerifyError::UnknownOutput)?;
            let value = terms.ask.value().ok_or(VerifyError::StreamTerms)?;
            let out = Output {
                value,
                owner: terms.refund_key,
            };
            return Ok((rec, out, Half::Payer(terms)));
        }
        let out = rec
            .outputs()
            .get(op.index as usize)
            .copied()
            .ok_or(VerifyError::UnknownOutput)?;
        match open {
            Some(terms) if terms.index == op.index => Ok((rec, out, Half::Payee(terms))),
            _ => Ok((rec, out, Half::None)),
        }
    };
    let mut consumed: VecSet<OutPoint> = VecSet::new();
    let transfers = pkg
        .ancestry
        .iter()
        .filter_map(|r| match r {
            Record::Transfer(t) => Some(t),
            Record::Issue(_) => None,
        })
        .chain(core::iter::once(&pkg.transfer));
    // Per transfer: its distinct signers (owner keys of its inputs).
    let mut signer_lists: Vec<Vec<PublicKey>> = Vec::new();
    // Per confidential transfer: its input commitments (C3, C4 below).
    #[cfg(feature = "confidential")]
    let mut conf_checks: Vec<(
        &crate::record::Transfer,
        Vec<crate::confidential::Commitment>,
    )> = Vec::new();
    for t in transfers.clone() {
        if t.inputs.is_empty() || t.outputs.is_empty() {
            return Err(VerifyError::EmptyRecord);
        }
        let mut owners = Vec::with_capacity(t.inputs.len());
        let mut in_sum = Amount::ZERO;
        #[cfg(feature = "confidential")]
        let mut in_commitments = Vec::new();
        check_stream_open(t)?;
        let mut half = Half::None;
        for op in &t.inputs {
            let (rec, out, h) = lookup_record(op)?;
            if !matches!(h, Half::None) {
                half = h;
            }
            if !consumed.insert(*op) {
                return Err(VerifyError::OutputSpentTwice);
            }
            if rec.is_confidential() != t.confidential.is_some() {
                return Err(VerifyError::AmountForm);
            }
            #[cfg(feature = "confidential")]
            if let Some(c) = rec.commitment(op.index as usize) {
                in_commitments.push(*c);
            }
            in_sum = in_sum
                .checked_add(out.value)
                .ok_or(VerifyError::AmountOverflow)?;
            owners.push(out.owner);
        }
        if t.confidential.is_none() {
            let out_sum = checked_outputs_sum(&t.outputs)?;
            // SV2, SV3: a close pays what its ticks say, not its input's
            // value (the stream's value is split between its two halves).
            match check_stream_close(t, half, matches!(mode, Mode::Settlement))? {
                Some(due) if due != out_sum => return Err(VerifyError::StreamCloseValue),
                Some(_) => {}
                None if in_sum != out_sum => return Err(VerifyError::ValueNotConserved),
                None => {}
            }
        }
        #[cfg(feature = "confidential")]
        if t.confidential.is_some() {
            conf_checks.push((t, in_commitments));
        }
        let signers = distinct_signers(owners.into_iter());
        if signers.len() != t.signatures.len() {
            return Err(VerifyError::BadSignature);
        }
        signer_lists.push(signers);
    }

    // V5, V6: Issue records.
    let mut checks: Vec<(PublicKey, Hash32, crate::crypto::Signature, Pending)> = Vec::new();
    for (rec, id) in pkg.ancestry.iter().zip(&ids) {
        if let Record::Issue(iss) = rec {
            if iss.outputs.is_empty() {
                return Err(VerifyError::EmptyRecord);
            }
            // A confidential Issue's amounts are its trusted issuer's word
            // (signed below); settlement checks them against the openings.
            if iss.confidential.is_none() {
                checked_outputs_sum(&iss.outputs)?;
            }
            let dcp = match mode {
                Mode::Payee(..) => trust.dcp_for(&iss.issuer, role::ISSUE, params.epoch)?,
                Mode::Settlement => trust.dcp_any_time(&iss.issuer, role::ISSUE)?,
            };
            if matches!(mode, Mode::Payee(..)) && iss.expiry_epoch < params.epoch {
                return Err(VerifyError::TokenExpired);
            }
            checks.push((
                dcp.key,
                iss.signed_message(id),
                iss.signature,
                Pending::Record,
            ));
        }
    }

    // V7: certificates of every signer: present, used, trusted, unexpired,
    // unrevoked; signature checked unless cached.
    let mut cert_for: VecMap<PublicKey, usize> = VecMap::new();
    for (i, c) in pkg.certificates.iter().enumerate() {
        if cert_for.insert(c.key, i).is_some() {
            return Err(VerifyError::UnusedCertificate);
        }
    }
    let mut cert_used = alloc::vec![false; pkg.certificates.len()];
    let transfer_record_ids: Vec<Hash32> = pkg
        .ancestry
        .iter()
        .zip(&ids)
        .filter(|(r, _)| matches!(r, Record::Transfer(_)))
        .map(|(_, id)| *id)
        .chain(core::iter::once(transfer_id))
        .collect();
    let mut new_cert_ids: Vec<Hash32> = Vec::new();
    let mut checked_keys: Vec<CheckedKey> = Vec::new();
    for ((t, signers), tid) in transfers.zip(&signer_lists).zip(&transfer_record_ids) {
        let message = t.signed_message(tid);
        for (k, sig) in signers.iter().zip(&t.signatures) {
            let ci = *cert_for.get(k).ok_or(VerifyError::MissingCertificate)?;
            let cert = &pkg.certificates[ci];
            if !cert_used[ci] {
                cert_used[ci] = true;
                let issuer = match mode {
                    Mode::Payee(..) => trust.check_pseudonym_cert(cert, params.epoch)?,
                    Mode::Settlement => {
                        checked_keys
                            .push(CheckedKey::new(&cert.key).map_err(|_| VerifyError::BadKey)?);
                        trust.dcp_any_time(&cert.issuer, role::CERTIFY)?.key
                    }
                };
                let cid = cert.id();
                if !cache.contains(&cid) {
                    checks.push((issuer, cert.signed_message(), cert.signature, Pending::Cert));
                    new_cert_ids.push(cid);
                }
            }
            checks.push((*k, message, *sig, Pending::Record));
        }
    }
    if cert_used.iter().any(|u| !u) {
        return Err(VerifyError::UnusedCertificate);
    }

    // V11: the payment itself.
    #[cfg(feature = "confidential")]
    let mut payee_opening = None;
    if let Mode::Payee(exp, _key) = mode {
        let first = pkg.transfer.outputs[0];
        if first.owner != exp.payee {
            return Err(VerifyError::WrongPayee);
        }
        if pkg.transfer.confidential.is_none() && first.value != exp.amount {
            return Err(VerifyError::WrongAmount);
        }
        if pkg.transfer.nonce != exp.nonce {
            return Err(VerifyError::WrongNonce);
        }
        // SV5: exactly the stream asked for, on output 0, or none at all.
        let opens = match pkg.transfer.stream.as_deref() {
            None => None,
            Some(StreamPart::Open(terms)) if terms.index == 0 => Some(terms.ask),
            Some(_) => return Err(VerifyError::WrongStream),
        };
        if opens != exp.stream {
            return Err(VerifyError::WrongStream);
        }
        // C5, C6: the payee's own opening first (what it is paid).
        #[cfg(feature = "confidential")]
        if let Some(c) = &pkg.transfer.confidential {
            let opening = open_payment(c, &pkg.transfer, exp, _key)?;
            if opening.value() != exp.amount {
                return Err(VerifyError::WrongAmount);
            }
            payee_opening = Some(opening);
        }
    }

    // C2–C4: range proofs (one batch for the package) and balances.
    #[cfg(feature = "confidential")]
    let deferred_ranges = check_confidential(&conf_checks, trust, proofs)?;

    Ok(Checked {
        package: pkg,
        transfer_id,
        ancestry_ids: ids,
        checks,
        new_cert_ids,
        checked_keys,
        #[cfg(feature = "confidential")]
        payee_opening,
        #[cfg(feature = "confidential")]
        deferred_ranges,
    })
}

/// Which half of a stream an input is.
#[derive(Clone, Copy)]
enum Half<'a> {
    /// An ordinary output.
    None,
    /// The stream output itself: the payee's half, consumed by its claim.
    Payee(&'a StreamOpenTerms),
    /// `(open, 0x80 | i)`: the payer's half, consumed by its refund.
    Payer(&'a StreamOpenTerms),
}

/// SV1: an OPEN's terms fit its output: the index names an output whose
/// value is `price · ticks_max` within the bounds; clear amounts only.
fn check_stream_open(t: &crate::record::Transfer) -> Result<(), VerifyError> {
    let Some(part) = t.stream.as_deref() else {
        return Ok(());
    };
    if t.confidential.is_some() {
        return Err(VerifyError::StreamTerms);
    }
    if let StreamPart::Open(terms) = part {
        let out = t
            .outputs
            .get(usize::from(terms.index))
            .ok_or(VerifyError::StreamTerms)?;
        if terms.ask.value() != Some(out.value) {
            return Err(VerifyError::StreamTerms);
        }
    }
    Ok(())
}

/// SV2–SV4 for one transfer whose inputs include the stream half `half`
/// (or none): a half is consumed only by its own close, alone; a close
/// consumes exactly one half. Returns what the close must pay (`None`: not
/// a close, ordinary conservation applies). With `walk_chain`
/// (settlement), a claim's element must walk to the anchor (SV4); a device
/// does not walk up to 65,536 hashes, it relies on the claiming SE having
/// checked every element (decision 0020).
fn check_stream_close(
    t: &crate::record::Transfer,
    half: Half<'_>,
    walk_chain: bool,
) -> Result<Option<Amount>, VerifyError> {
    let part = match t.stream.as_deref() {
        Some(StreamPart::Open(_)) | None => {
            return match half {
                Half::None => Ok(None),
                _ => Err(VerifyError::StreamSpend),
            };
        }
        Some(p) => p,
    };
    if t.inputs.len() != 1 {
        return Err(VerifyError::StreamSpend);
    }
    let price = |terms: &StreamOpenTerms, ticks: u32| {
        // ticks ≤ ticks_max and price · ticks_max fits (SV1 on the OPEN).
        Amount(terms.ask.price.0 * u64::from(ticks))
    };
    match (part, half) {
        (StreamPart::Claim { ticks, element }, Half::Payee(terms)) => {
            if *ticks > terms.ask.ticks_max {
                return Err(VerifyError::StreamCloseValue);
            }
            if walk_chain && !reaches_anchor(element, *ticks, terms.ask.ticks_max, &terms.anchor) {
                return Err(VerifyError::StreamChain);
            }
            Ok(Some(price(terms, *ticks)))
        }
        (StreamPart::Refund { ticks }, Half::Payer(terms)) => {
            let left = terms
                .ask
                .ticks_max
                .checked_sub(*ticks)
                .ok_or(VerifyError::StreamCloseValue)?;
            Ok(Some(price(terms, left)))
        }
        _ => Err(VerifyError::StreamSpend),
    }
}

/// C8 for one record.
#[cfg(feature = "confidential")]
fn check_audit_seal(
    audit: Option<&crate::confidential::SealedOpenings>,
    confidential: bool,
    outputs: usize,
) -> Result<(), VerifyError> {
    if !confidential {
        return Ok(());
    }
    match audit {
        Some(a) if a.fits(outputs) => Ok(()),
        _ => Err(VerifyError::AuditSealInvalid),
    }
}

/// C5, C6: opens output 0's sealed opening with the payee's key and checks
/// it against output 0's commitment.
#[cfg(feature = "confidential")]
fn open_payment(
    c: &crate::record::ConfidentialTransfer,
    t: &crate::record::Transfer,
    exp: &Expected,
    key: Option<&crate::crypto::SecretKey>,
) -> Result<crate::confidential::Opening, VerifyError> {
    use crate::confidential::ConfidentialError;
    let sealed = c
        .payee_opening
        .as_ref()
        .ok_or(VerifyError::OpeningUnreadable)?;
    let key = key
        .filter(|k| k.public() == exp.payee)
        .ok_or(VerifyError::OpeningUnreadable)?;
    let commitment = c.commitments.first().ok_or(VerifyError::EmptyRecord)?;
    sealed
        .open(key, &t.context(), commitment, exp.amount)
        .map_err(|e| match e {
            ConfidentialError::WrongOpening => VerifyError::WrongOpening,
            _ => VerifyError::OpeningUnreadable,
        })
}

/// C2–C4 over every confidential transfer of a package: the bit-length
/// of each range proof (the policy's), each transfer's balance of
/// commitments, then all
/// range proofs in one batch — or, [`Proofs::Defer`], returned for a
/// larger batch; [`Proofs::ByOpenings`]: C2 only.
#[cfg(feature = "confidential")]
fn check_confidential(
    transfers: &[(
        &crate::record::Transfer,
        Vec<crate::confidential::Commitment>,
    )],
    trust: &TrustStore,
    proofs: Proofs,
) -> Result<Vec<PendingRange>, VerifyError> {
    if transfers.is_empty() {
        return Ok(Vec::new());
    }
    let gens = trust.range_gens().ok_or(VerifyError::AmountForm)?;
    let mut pending = Vec::with_capacity(transfers.len());
    for (t, inputs) in transfers {
        let Some(c) = &t.confidential else {
            return Err(VerifyError::AmountForm);
        };
        // A range proof exactly when there are two outputs or more: one
        // output commits to its inputs' sum (C4), which needs none
        // (decision 0031). The decoder admits nothing else; a record
        // built in memory is held to it here.
        let proof = match (&c.range_proof, c.commitments.len() >= 2) {
            (Some(p), true) => Some(p),
            (None, false) => None,
            _ => return Err(VerifyError::RangeProofInvalid),
        };
        if let Some(p) = proof
            && p.bits() != gens.bits()
        {
            return Err(VerifyError::RangeBitsMismatch);
        }
        if proofs == Proofs::ByOpenings {
            continue;
        }
        crate::confidential::check_balance(inputs, &c.commitments)
            .map_err(|_| VerifyError::CommitmentsUnbalanced)?;
        if let Some(p) = proof {
            pending.push((p.clone(), c.commitments.clone(), t.context()));
        }
    }
    if proofs != Proofs::Now {
        return Ok(pending);
    }
    verify_ranges(trust, &pending)?;
    Ok(Vec::new())
}

/// C3 for many range proofs in one batch (tari's batch verifier).
#[cfg(feature = "confidential")]
fn verify_ranges(trust: &TrustStore, pending: &[PendingRange]) -> Result<(), VerifyError> {
    use crate::confidential::{ConfidentialError, RangeCheck, batch_verify};
    if pending.is_empty() {
        return Ok(());
    }
    let gens = trust.range_gens().ok_or(VerifyError::AmountForm)?;
    let checks: Vec<RangeCheck<'_>> = pending
        .iter()
        .map(|(proof, commitments, context)| RangeCheck {
            proof,
            commitments,
            context,
        })
        .collect();
    batch_verify(gens, &checks).map_err(|(_, e)| match e {
        ConfidentialError::RangeBitsMismatch => VerifyError::RangeBitsMismatch,
        _ => VerifyError::RangeProofInvalid,
    })
}

/// `is_revoked` binary-searches: a list built out of order in memory
/// (decoding already refuses one) must not silently miss a key.
fn check_sorted(l: &RevocationList) -> Result<(), VerifyError> {
    if l.revoked.windows(2).any(|w| w[0] >= w[1]) {
        return Err(VerifyError::Decode(CodecError::NonCanonical));
    }
    Ok(())
}

fn checked_outputs_sum(outputs: &[Output]) -> Result<Amount, VerifyError> {
    let mut s = Amount::ZERO;
    for o in outputs {
        if o.value.is_zero() {
            return Err(VerifyError::ZeroValueOutput);
        }
        s = s.checked_add(o.value).ok_or(VerifyError::AmountOverflow)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Suite;
    use crate::testkit::Scheme;
    use alloc::collections::BTreeSet;

    /// One of each kind of refusal.
    fn every_kind() -> Vec<VerifyError> {
        use VerifyError::*;
        alloc::vec![
            Decode(CodecError::Truncated),
            HistoryBudgetExceeded {
                records: 2,
                budget: 1
            },
            DuplicateRecord,
            MissingAncestor,
            UnreachableRecord,
            UnknownOutput,
            EmptyRecord,
            UnknownIssuer,
            CertificateExpired,
            CertificateRevoked,
            TokenExpired,
            MissingCertificate,
            UnusedCertificate,
            BadCertificateSignature,
            BadKey,
            BadSignature,
            SuiteMismatch,
            ValueNotConserved,
            ZeroValueOutput,
            AmountOverflow,
            OutputSpentTwice,
            WrongPayee,
            WrongAmount,
            WrongNonce,
            BadTrustSignature,
            AmountForm,
            RangeBitsMismatch,
            RangeProofInvalid,
            CommitmentsUnbalanced,
            OpeningUnreadable,
            WrongOpening,
            AuditSealInvalid,
            StreamTerms,
            StreamSpend,
            StreamCloseValue,
            StreamChain,
            WrongStream,
        ]
    }

    /// Every refusal answers with a code the registry gives verification,
    /// each its own, and every verification code in use is answered.
    #[test]
    fn codes_are_the_registrys() {
        let got: BTreeSet<u16> = every_kind().iter().map(|e| e.code()).collect();
        assert_eq!(got.len(), every_kind().len(), "two kinds share a code");
        for e in every_kind() {
            assert!(
                codes::is_used_by(e.code(), codes::Component::Verify),
                "{e:?}"
            );
            assert_eq!(u16::from(e.rule()), e.code() / 100);
        }
        let registered: BTreeSet<u16> = codes::REGISTRY
            .iter()
            .filter(|c| c.component == codes::Component::Verify && c.state == codes::State::Used)
            .map(|c| c.code)
            .collect();
        assert_eq!(got, registered);
    }

    #[test]
    fn unsorted_revocation_list_refused_at_install() {
        let s = Scheme::new(Suite::Ed25519);
        let mut l =
            RevocationList::sign(&s.root, 2, 1, alloc::vec![Hash32([1; 32]), Hash32([2; 32])]);
        l.revoked.reverse();
        l.signature = s.root.sign(&l.signed_message().0);
        let e = TrustStore::new(s.root.public(), s.policy.clone(), l.clone()).unwrap_err();
        assert_eq!(e, VerifyError::Decode(CodecError::NonCanonical));
        let mut t = s.trust();
        assert!(t.update_revocations(l).is_err());
        assert!(!t.revocations().is_revoked(&Hash32([1; 32])));
    }

    /// A renewal package: an Issue to a fresh certified key, then the whole
    /// value to the DCP key.
    fn renewal(s: &Scheme, n: u8) -> Package {
        use crate::record::{Issue, Transfer};
        use crate::{Amount, SecretKey};
        let k = SecretKey::from_seed(Suite::Ed25519, &[n; 32]).unwrap();
        let issue = Issue::sign(
            &s.dcp,
            u64::from(n),
            s.epoch + 20,
            alloc::vec![Output {
                value: Amount(100),
                owner: k.public(),
            }],
        );
        let mut t = Transfer {
            inputs: alloc::vec![OutPoint {
                record: issue.id(),
                index: 0,
            }],
            outputs: alloc::vec![Output {
                value: Amount(100),
                owner: s.dcp.public(),
            }],
            nonce: [n; 16],
            counter: 1,
            signatures: Vec::new(),
            confidential: None,
            stream: None,
        };
        t.signatures = alloc::vec![k.sign(&t.id().0)];
        Package {
            transfer: t,
            ancestry: alloc::vec![Record::Issue(issue)],
            certificates: alloc::vec![s.certify(k.public(), crate::policy::device_class::PHONE, 0)],
        }
    }

    #[test]
    fn many_packages_at_once_answer_as_one_at_a_time() {
        let s = Scheme::new(Suite::Ed25519);
        let trust = s.trust();
        let params = s.params(1024);
        let mut pkgs: Vec<Package> = (1..=6).map(|n| renewal(&s, n)).collect();
        // 1: a bad transfer signature; 3: a bad certificate signature;
        // 4: structurally wrong (no certificate for the signer).
        pkgs[1].transfer.signatures[0] = s.dcp.sign(b"not the record id");
        pkgs[3].certificates[0].signature = s.dcp.sign(b"not the certificate");
        pkgs[4].certificates.clear();
        let one_at_a_time: Vec<Result<Hash32, VerifyError>> = pkgs
            .iter()
            .map(|p| {
                verify_package_for_settlement(p.clone(), &trust, params, &mut NoCache)
                    .map(|v| v.transfer_id())
            })
            .collect();
        assert_eq!(
            one_at_a_time
                .iter()
                .map(|r| r.as_ref().err().copied())
                .collect::<Vec<_>>(),
            alloc::vec![
                None,
                Some(VerifyError::BadSignature),
                None,
                Some(VerifyError::BadCertificateSignature),
                Some(VerifyError::MissingCertificate),
                None
            ]
        );
        let mut cache = BoundedCertCache::new(100);
        let at_once: Vec<Result<Hash32, VerifyError>> =
            verify_packages_for_settlement(pkgs.clone(), &trust, params, &mut cache)
                .into_iter()
                .map(|r| r.map(|v| v.transfer_id()))
                .collect();
        assert_eq!(at_once, one_at_a_time);
        // Only certificates of accepted packages are cached.
        for (p, r) in pkgs.iter().zip(&at_once) {
            if let Some(c) = p.certificates.first() {
                assert_eq!(cache.contains(&c.id()), r.is_ok());
            }
        }
        // All good: one joint batch, every package accepted.
        let good: Vec<Package> = (7..=9).map(|n| renewal(&s, n)).collect();
        let r = verify_packages_for_settlement(good, &trust, params, &mut NoCache);
        assert!(
            r.iter()
                .all(|v| v.as_ref().is_ok_and(|v| v.signature_checks() == 3))
        );
    }

    /// Settlement's uploads verified together: one bad upload (group)
    /// never decides another's results, nor one bad package another's in
    /// its group; every answer is the one-at-a-time answer.
    #[test]
    fn groups_of_packages_answer_as_one_at_a_time() {
        let s = Scheme::new(Suite::Ed25519);
        let trust = s.trust();
        let params = s.params(1024);
        let mut groups: Vec<Vec<Package>> = alloc::vec![
            (1..=3).map(|n| renewal(&s, n)).collect(),
            (4..=6).map(|n| renewal(&s, n)).collect(),
            (7..=8).map(|n| renewal(&s, n)).collect(),
            alloc::vec![renewal(&s, 9)],
        ];
        // Group 1: a forged transfer signature; group 3: a forged
        // certificate signature (the group's only package).
        groups[1][1].transfer.signatures[0] = s.dcp.sign(b"not the record id");
        groups[3][0].certificates[0].signature = s.dcp.sign(b"not the certificate");
        let one_at_a_time: Vec<Vec<Result<Hash32, VerifyError>>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|p| {
                        verify_package_for_settlement(p.clone(), &trust, params, &mut NoCache)
                            .map(|v| v.transfer_id())
                    })
                    .collect()
            })
            .collect();
        let refused: Vec<(usize, usize, VerifyError)> = one_at_a_time
            .iter()
            .enumerate()
            .flat_map(|(g, r)| {
                r.iter()
                    .enumerate()
                    .filter_map(move |(i, r)| r.as_ref().err().map(|e| (g, i, *e)))
            })
            .collect();
        assert_eq!(
            refused,
            alloc::vec![
                (1, 1, VerifyError::BadSignature),
                (3, 0, VerifyError::BadCertificateSignature)
            ]
        );
        let together: Vec<Vec<Result<Hash32, VerifyError>>> =
            verify_package_groups_for_settlement(groups.clone(), &trust, params, &mut NoCache)
                .into_iter()
                .map(|g| g.into_iter().map(|r| r.map(|v| v.transfer_id())).collect())
                .collect();
        assert_eq!(together, one_at_a_time);
        // No bad group: every package accepted from the joint batch.
        groups.truncate(1);
        let r = verify_package_groups_for_settlement(groups, &trust, params, &mut NoCache);
        assert_eq!(r.len(), 1);
        assert!(r[0].iter().all(Result::is_ok));
        assert!(
            verify_package_groups_for_settlement(Vec::new(), &trust, params, &mut NoCache)
                .is_empty()
        );
    }

    /// V7 in settlement: a certified key that is not a usable point is
    /// refused as before (its point is what V8 uses afterwards).
    #[test]
    fn a_small_order_certified_key_is_refused_by_settlement() {
        let s = Scheme::new(Suite::Ed25519);
        let trust = s.trust();
        let params = s.params(1024);
        use crate::record::Issue;
        use crate::{Amount, SecretKey};
        // The identity point (y = 1): small order. It owns an Issue, is
        // certified, and "signs" the transfer.
        let mut y = [0u8; 32];
        y[0] = 1;
        let identity = PublicKey::new(Suite::Ed25519, &y).unwrap();
        let mut p = renewal(&s, 1);
        let issue = Issue::sign(
            &s.dcp,
            1,
            s.epoch + 20,
            alloc::vec![Output {
                value: Amount(100),
                owner: identity,
            }],
        );
        p.transfer.inputs[0].record = issue.id();
        let k = SecretKey::from_seed(Suite::Ed25519, &[1; 32]).unwrap();
        p.transfer.signatures = alloc::vec![k.sign(&p.transfer.id().0)];
        p.ancestry = alloc::vec![Record::Issue(issue)];
        p.certificates = alloc::vec![s.certify(identity, crate::policy::device_class::PHONE, 0)];
        let alone = verify_package_for_settlement(p.clone(), &trust, params, &mut NoCache);
        assert_eq!(alone.err(), Some(VerifyError::BadKey));
        let grouped = verify_package_groups_for_settlement(
            alloc::vec![alloc::vec![p, renewal(&s, 2)]],
            &trust,
            params,
            &mut NoCache,
        );
        assert_eq!(grouped[0][0].as_ref().err(), Some(&VerifyError::BadKey));
        assert!(grouped[0][1].is_ok());
    }

    /// R2 (SPEC §5.5): held records that are the package's own are a
    /// common ancestry; a held transfer consuming one of the package's
    /// outputs under another id is the double spend.
    #[test]
    fn conflicting_spend_is_another_record_consuming_the_same_output() {
        let s = Scheme::new(Suite::Ed25519);
        let trust = s.trust();
        let params = s.params(1024);
        let v = verify_package_for_settlement(renewal(&s, 1), &trust, params, &mut NoCache)
            .expect("valid");
        let p = v.package().clone();
        let tid = v.transfer_id();
        let own: Vec<(Hash32, Record)> = p
            .ancestry
            .iter()
            .map(|r| (r.id(), r.clone()))
            .chain([(tid, Record::Transfer(p.transfer.clone()))])
            .collect();
        assert_eq!(v.conflicting_spend(own.iter().map(|(i, r)| (i, r))), None);
        assert_eq!(v.conflicting_spend(core::iter::empty()), None);
        // The same Issue output spent again by another transfer.
        let mut other = p.transfer.clone();
        other.nonce = [9; 16];
        let other = Record::Transfer(other);
        let held = [(other.id(), other)];
        assert_eq!(
            v.conflicting_spend(own.iter().chain(&held).map(|(i, r)| (i, r))),
            Some(p.transfer.inputs[0])
        );
        // A held record that merely spends the package's Issue output under
        // the package's own transfer id is no conflict (it is that record).
        let relabelled = [(tid, held[0].1.clone())];
        assert_eq!(
            v.conflicting_spend(relabelled.iter().map(|(i, r)| (i, r))),
            None
        );
    }

    #[test]
    fn duplicate_dcp_key_in_policy_refused() {
        let s = Scheme::new(Suite::Ed25519);
        let mut dcps = s.policy.dcps.clone();
        let mut weaker = DcpCertificate::sign(&s.root, 1, s.dcp.public(), role::ISSUE, 1_000);
        weaker.expiry_epoch = 1_000;
        dcps.push(weaker);
        let p = Policy::sign(&s.root, 2, "XTS", s.policy.tiers.clone(), dcps);
        assert_eq!(
            TrustStore::new(s.root.public(), p, s.revocations.clone()).unwrap_err(),
            VerifyError::BadTrustSignature
        );
        // The same policy without the duplicate is accepted.
        assert!(TrustStore::new(s.root.public(), s.policy.clone(), s.revocations.clone()).is_ok());
    }
}
