//! Opening one escrow: the request, each supervisor's verifiable decryption
//! share, and the combination of k valid shares into the SE's identity
//! point.

use std::collections::BTreeMap;
use std::fmt;

use elastic_elgamal::group::Ristretto;
use elastic_elgamal::{
    CandidateDecryption, Ciphertext, Keypair, LogEqualityProof, VerifiableDecryption,
};
use merlin::Transcript;
use tally_core::Hash32;
use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::{Entropy, tagged_hash};
use tally_core::escrow::{EntropyRng, Escrow, EscrowCiphertext, EscrowError, IdPoint, JointKey};

use crate::setup::{JointParams, SupervisorKey};
use crate::{PARTICIPANTS_MAX, SupervisorError};

pub const OPENING_VERSION: u8 = 1;
pub const EVIDENCE_REF_BYTES_MAX: usize = 256;
pub const REASON_BYTES_MAX: usize = 4096;
/// Bound on the SE id table's wire form.
pub const ID_TABLE_ENTRIES_MAX: usize = 1 << 24;
/// Merlin transcript label of a decryption share's proof.
pub const SHARE_TRANSCRIPT_LABEL: &[u8] = b"tally/v1/escrow-share";

/// The escrow an opening request names, in either of its two wire forms.
///
/// A pseudonym certificate carries only the ciphertext (decision 0006): the
/// DCP checked the full escrow's proof against the SE's registered identity
/// point before signing, and keeps the full escrow with its certification
/// records. A request filed from a certificate alone is therefore
/// [`RequestEscrow::CiphertextOnly`]; one filed from the DCP's record is
/// [`RequestEscrow::Full`].
///
/// The difference shows after opening. With the proof, [`combine`] and the
/// audit log re-check that the opened point satisfies it, so a point that
/// the shares produce but the proof contradicts is an error, never an SE.
/// Without it there is nothing to re-check: the opened point is what the
/// ciphertext holds, and the DCP's signature on the certificate is the only
/// statement that it is a registered SE's point. The opening result records
/// which case applied ([`OpeningResult::escrow_proof_checked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestEscrow {
    /// `[1, C1 ‖ C2, c ‖ s]` (134 bytes): ciphertext and proof.
    Full(Escrow),
    /// `[1, C1 ‖ C2]` (68 bytes): what a certificate carries.
    CiphertextOnly(EscrowCiphertext),
}

impl RequestEscrow {
    /// Decodes either form, strictly. The CBOR array header tells them
    /// apart (3 elements: full, 2: ciphertext only).
    pub fn from_bytes(bytes: &[u8]) -> Result<RequestEscrow, EscrowError> {
        match bytes.first() {
            Some(0x82) => EscrowCiphertext::from_bytes(bytes).map(RequestEscrow::CiphertextOnly),
            _ => Escrow::from_bytes(bytes).map(RequestEscrow::Full),
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            RequestEscrow::Full(e) => e.to_bytes(),
            RequestEscrow::CiphertextOnly(c) => c.to_bytes(),
        }
    }
    /// The ciphertext the supervisors decrypt.
    pub fn ciphertext(&self) -> Ciphertext<Ristretto> {
        match self {
            RequestEscrow::Full(e) => e.ciphertext(),
            RequestEscrow::CiphertextOnly(c) => c.ciphertext(),
        }
    }
    /// Whether the escrow carries a proof the opened point is checked against.
    pub fn has_proof(&self) -> bool {
        matches!(self, RequestEscrow::Full(_))
    }
    /// The post-opening check: the opened point against the escrow's proof,
    /// if it has one. `Ok(true)`: checked; `Ok(false)`: no proof to check.
    pub fn check_opened(&self, joint: &JointKey, point: &IdPoint) -> Result<bool, EscrowError> {
        match self {
            RequestEscrow::Full(e) => e.verify(joint, point).map(|()| true),
            RequestEscrow::CiphertextOnly(_) => Ok(false),
        }
    }
}

/// A request to open one escrow. Wire:
/// `[1, escrow (bstr: either form of [`RequestEscrow`]), evidence_ref
/// (text), reason (text), filed_at (uint, seconds since the Unix epoch,
/// caller's clock)]`. Its id is `H("tally/v1/opening-request", cbor)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningRequest {
    escrow: RequestEscrow,
    evidence_ref: String,
    reason: String,
    filed_at: u64,
}

impl OpeningRequest {
    /// `escrow` is the bytes of a pseudonym certificate's escrow field (the
    /// ciphertext-only form) or of the full escrow from the DCP's records;
    /// `evidence_ref` names the evidence (an MDS case, a court order);
    /// `reason` is the written reason. Both must be non-empty.
    pub fn new(
        escrow: &[u8],
        evidence_ref: &str,
        reason: &str,
        filed_at: u64,
    ) -> Result<OpeningRequest, SupervisorError> {
        let escrow = RequestEscrow::from_bytes(escrow)?;
        if evidence_ref.trim().is_empty()
            || reason.trim().is_empty()
            || evidence_ref.len() > EVIDENCE_REF_BYTES_MAX
            || reason.len() > REASON_BYTES_MAX
        {
            return Err(SupervisorError::InvalidRequest);
        }
        Ok(OpeningRequest {
            escrow,
            evidence_ref: evidence_ref.to_string(),
            reason: reason.to_string(),
            filed_at,
        })
    }
    pub fn escrow(&self) -> &RequestEscrow {
        &self.escrow
    }
    pub fn evidence_ref(&self) -> &str {
        &self.evidence_ref
    }
    pub fn reason(&self) -> &str {
        &self.reason
    }
    pub fn filed_at(&self) -> u64 {
        self.filed_at
    }
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/opening-request", &[&self.to_cbor()])
    }
}

impl Cbor for OpeningRequest {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        w.u64(u64::from(OPENING_VERSION));
        w.bytes(&self.escrow.to_bytes());
        w.text(&self.evidence_ref);
        w.text(&self.reason);
        w.u64(self.filed_at);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        r.version(OPENING_VERSION)?;
        let escrow = r.bytes_max(tally_core::cert::ESCROW_BYTES_MAX)?;
        let evidence_ref = r.text_max(EVIDENCE_REF_BYTES_MAX)?;
        let reason = r.text_max(REASON_BYTES_MAX)?;
        let filed_at = r.u64()?;
        OpeningRequest::new(escrow, evidence_ref, reason, filed_at).map_err(|e| match e {
            SupervisorError::Codec(c) => c,
            SupervisorError::Escrow(tally_core::escrow::EscrowError::Codec(c)) => c,
            _ => CodecError::Malformed,
        })
    }
}

/// A request as it stands in a verified audit log. Only the log hands
/// these out, so a supervisor cannot produce a share for a request nobody
/// logged.
#[derive(Debug, Clone, Copy)]
pub struct LoggedRequest<'a> {
    request: &'a OpeningRequest,
    id: Hash32,
    params_id: Hash32,
}

impl<'a> LoggedRequest<'a> {
    pub(crate) fn new(request: &'a OpeningRequest, id: Hash32, params_id: Hash32) -> Self {
        LoggedRequest {
            request,
            id,
            params_id,
        }
    }
    pub fn request(&self) -> &'a OpeningRequest {
        self.request
    }
    pub fn id(&self) -> Hash32 {
        self.id
    }
}

/// Why one decryption share was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareFault {
    /// Made for another request.
    OtherRequest,
    /// The index names no supervisor of this key set.
    UnknownSupervisor,
    /// A valid share of this supervisor for this request is already counted.
    Duplicate,
    /// The DLEQ proof does not show `log_B(K_i) = log_C1(D_i)`.
    BadProof,
}

impl fmt::Display for ShareFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShareFault::OtherRequest => "made for another request",
            ShareFault::UnknownSupervisor => "no such supervisor",
            ShareFault::Duplicate => "duplicate share",
            ShareFault::BadProof => "its DLEQ proof does not verify",
        })
    }
}

/// Supervisor `index`'s decryption share `D_i = x_i·C1` of the request's
/// escrow, with a Chaum–Pedersen proof that `log_B(K_i) = log_C1(D_i)`
/// (`K_i` its public key share), bound to the key set and the request.
///
/// Wire: `[1, request_id, index, D_i (bstr 32), c ‖ s (bstr 64)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptionShare {
    request_id: Hash32,
    index: u8,
    share: [u8; 32],
    proof: [u8; 64],
}

impl DecryptionShare {
    pub fn request_id(&self) -> Hash32 {
        self.request_id
    }
    pub fn index(&self) -> u8 {
        self.index
    }
    /// `D_i`, compressed.
    pub fn share_bytes(&self) -> [u8; 32] {
        self.share
    }
    /// Builds a share from its parts (as received off the wire, or forged in
    /// tests); nothing is checked but the encodings.
    pub fn from_parts(
        request_id: Hash32,
        index: u8,
        share: [u8; 32],
        proof: [u8; 64],
    ) -> Result<DecryptionShare, CodecError> {
        if usize::from(index) >= PARTICIPANTS_MAX
            || CandidateDecryption::<Ristretto>::from_bytes(&share).is_none()
            || LogEqualityProof::<Ristretto>::from_bytes(&proof).is_none()
        {
            return Err(CodecError::Malformed);
        }
        Ok(DecryptionShare {
            request_id,
            index,
            share,
            proof,
        })
    }
    pub fn proof_bytes(&self) -> [u8; 64] {
        self.proof
    }
}

impl Cbor for DecryptionShare {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        w.u64(u64::from(OPENING_VERSION));
        self.request_id.write(w);
        w.u64(u64::from(self.index));
        w.bytes(&self.share);
        w.bytes(&self.proof);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        r.version(OPENING_VERSION)?;
        DecryptionShare::from_parts(
            Hash32::read(r)?,
            r.u8()?,
            r.bytes_array()?,
            r.bytes_array()?,
        )
    }
}

fn share_transcript(params_id: &Hash32, request_id: &Hash32, index: u8) -> Transcript {
    let mut t = Transcript::new(SHARE_TRANSCRIPT_LABEL);
    t.append_message(b"params", &params_id.0);
    t.append_message(b"request", &request_id.0);
    t.append_u64(b"index", u64::from(index));
    t
}

/// Supervisor `key` decrypts its share of the logged request's escrow and
/// proves it. Refused if `key` belongs to another key set than the log.
pub fn share(
    key: &SupervisorKey,
    request: &LoggedRequest<'_>,
    rng: &mut dyn Entropy,
) -> Result<DecryptionShare, SupervisorError> {
    if key.joint().id() != request.params_id {
        return Err(SupervisorError::InvalidParams);
    }
    let keypair = Keypair::from(key.participant().secret_share().clone());
    let (d, proof) = VerifiableDecryption::new(
        request.request.escrow().ciphertext(),
        &keypair,
        &mut share_transcript(&request.params_id, &request.id, key.index()),
        &mut EntropyRng(rng),
    );
    let mut share = [0u8; 32];
    share.copy_from_slice(&d.to_bytes());
    let mut p = [0u8; 64];
    p.copy_from_slice(&proof.to_bytes());
    Ok(DecryptionShare {
        request_id: request.id,
        index: key.index(),
        share,
        proof: p,
    })
}

/// Checks one share against the key set and the request's ciphertext.
pub(crate) fn check_share(
    joint: &JointParams,
    params_id: &Hash32,
    request_id: &Hash32,
    ciphertext: Ciphertext<Ristretto>,
    s: &DecryptionShare,
) -> Result<VerifiableDecryption<Ristretto>, ShareFault> {
    if s.request_id != *request_id {
        return Err(ShareFault::OtherRequest);
    }
    let key = joint
        .key_set()
        .participant_key(usize::from(s.index))
        .ok_or(ShareFault::UnknownSupervisor)?;
    // Both parse: checked when the share was built or decoded.
    let candidate = CandidateDecryption::from_bytes(&s.share).ok_or(ShareFault::BadProof)?;
    let proof = LogEqualityProof::from_bytes(&s.proof).ok_or(ShareFault::BadProof)?;
    candidate
        .verify(
            ciphertext,
            key,
            &proof,
            &mut share_transcript(params_id, request_id, s.index),
        )
        .map_err(|_| ShareFault::BadProof)
}

/// Lagrange-combines exactly the shares in `used` (indexes ascending, k of
/// them, all already checked) and decrypts.
pub(crate) fn combine_checked(
    joint: &JointParams,
    ciphertext: Ciphertext<Ristretto>,
    used: &[(u8, VerifiableDecryption<Ristretto>)],
) -> Option<IdPoint> {
    let combined = joint
        .key_set()
        .params()
        .combine_shares(used.iter().map(|(i, d)| (usize::from(*i), *d)))?;
    Some(IdPoint::from_point(
        &combined.decrypt_to_element(ciphertext),
    ))
}

/// An opened escrow: the SE's identity point, which shares made it, and
/// which were refused. Only [`combine`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    request_id: Hash32,
    point: IdPoint,
    used: Vec<u8>,
    rejected: Vec<u8>,
    escrow_proof_checked: bool,
}

impl Opening {
    pub fn request_id(&self) -> Hash32 {
        self.request_id
    }
    /// The SE's identity point; [`IdTable::se_id`] names the SE.
    pub fn point(&self) -> IdPoint {
        self.point
    }
    /// Indexes of the k shares combined, ascending.
    pub fn used(&self) -> &[u8] {
        &self.used
    }
    /// Indexes claimed by refused shares.
    pub fn rejected(&self) -> &[u8] {
        &self.rejected
    }
    /// Whether the point was checked against the escrow's proof (a full
    /// escrow) or not (ciphertext only; see [`RequestEscrow`]).
    pub fn escrow_proof_checked(&self) -> bool {
        self.escrow_proof_checked
    }
}

/// Checks every share (request, supervisor, DLEQ proof, duplicates) and
/// combines the k valid ones with the lowest indexes. Fewer than k valid
/// shares is an error that lists the refused ones. If the request names a
/// full escrow, the opened point is then checked against its proof: a point
/// that does not satisfy it means the certifying DCP accepted a malformed
/// escrow, and is reported as `Escrow(ProofRejected)` rather than returned
/// as an SE. A ciphertext-only escrow has no proof, so that check is
/// skipped and [`Opening::escrow_proof_checked`] says so.
pub fn combine(
    joint: &JointParams,
    request: &LoggedRequest<'_>,
    shares: &[DecryptionShare],
) -> Result<Opening, SupervisorError> {
    let params_id = joint.id();
    if params_id != request.params_id {
        return Err(SupervisorError::InvalidParams);
    }
    let ciphertext = request.request.escrow().ciphertext();
    let mut valid: BTreeMap<u8, VerifiableDecryption<Ristretto>> = BTreeMap::new();
    let mut rejected = Vec::new();
    for s in shares {
        if valid.contains_key(&s.index) {
            rejected.push(s.index);
            continue;
        }
        match check_share(joint, &params_id, &request.id, ciphertext, s) {
            Ok(d) => {
                valid.insert(s.index, d);
            }
            Err(_) => rejected.push(s.index),
        }
    }
    let k = joint.threshold();
    if valid.len() < k {
        return Err(SupervisorError::NotEnoughShares {
            valid: valid.len(),
            needed: k,
            rejected,
        });
    }
    let used: Vec<(u8, VerifiableDecryption<Ristretto>)> = valid.into_iter().take(k).collect();
    let point =
        combine_checked(joint, ciphertext, &used).ok_or(SupervisorError::NotEnoughShares {
            valid: used.len(),
            needed: k,
            rejected: rejected.clone(),
        })?;
    let escrow_proof_checked = request
        .request
        .escrow()
        .check_opened(joint.joint_key(), &point)?;
    Ok(Opening {
        request_id: request.id,
        point,
        used: used.iter().map(|(i, _)| *i).collect(),
        rejected,
        escrow_proof_checked,
    })
}

/// What an opening result records in the audit log. Wire:
/// `[1, request_id, point, se_id (bstr 0 or 32: empty if the point is in
/// no table), [used index], [rejected index], escrow_proof_checked (bool)]`.
///
/// `escrow_proof_checked` is true when the request named a full escrow and
/// the point satisfied its proof, false when the request named the
/// ciphertext only (what a certificate carries) and there was no proof to
/// check: the point is then vouched for by the shares' proofs (it is what
/// the ciphertext decrypts to) and by the certifying DCP's signature, not
/// by the escrow proof. Audit verification refuses a result whose flag
/// does not match its request's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningResult {
    pub request_id: Hash32,
    pub point: IdPoint,
    pub se_id: Option<Hash32>,
    pub used: Vec<u8>,
    pub rejected: Vec<u8>,
    pub escrow_proof_checked: bool,
}

impl OpeningResult {
    pub fn new(opening: &Opening, se_id: Option<Hash32>) -> OpeningResult {
        OpeningResult {
            request_id: opening.request_id,
            point: opening.point,
            se_id,
            used: opening.used.clone(),
            rejected: opening.rejected.clone(),
            escrow_proof_checked: opening.escrow_proof_checked,
        }
    }
}

fn write_indexes(w: &mut Writer, v: &[u8]) {
    w.array(v.len());
    for i in v {
        w.u64(u64::from(*i));
    }
}

fn read_indexes(r: &mut Reader<'_>) -> Result<Vec<u8>, CodecError> {
    let n = r.array_max(4 * PARTICIPANTS_MAX)?;
    (0..n).map(|_| r.u8()).collect()
}

impl Cbor for OpeningResult {
    fn write(&self, w: &mut Writer) {
        w.array(7);
        w.u64(u64::from(OPENING_VERSION));
        self.request_id.write(w);
        self.point.write(w);
        match &self.se_id {
            Some(id) => id.write(w),
            None => w.bytes(&[]),
        }
        write_indexes(w, &self.used);
        write_indexes(w, &self.rejected);
        w.bool(self.escrow_proof_checked);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(7)?;
        r.version(OPENING_VERSION)?;
        let request_id = Hash32::read(r)?;
        let point = IdPoint::read(r)?;
        let se_id = match r.bytes_max(32)? {
            [] => None,
            b => Some(Hash32(b.try_into().map_err(|_| CodecError::Malformed)?)),
        };
        Ok(OpeningResult {
            request_id,
            point,
            se_id,
            used: read_indexes(r)?,
            rejected: read_indexes(r)?,
            escrow_proof_checked: r.bool()?,
        })
    }
}

/// SE id ↔ identity-point digest, kept by the directory and handed to the
/// supervisors: decryption yields a point `M`, and `H(M)` names the SE. The
/// table holds digests, not points, so holding it does not let anyone test
/// a certificate's escrow against an SE (that needs `M`; see
/// docs/decisions/0006-escrow.md). One digest names one SE.
/// Wire: `[1, [[digest, se_id], …]]`, sorted by digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdTable {
    by_digest: BTreeMap<Hash32, Hash32>,
}

impl IdTable {
    pub fn new() -> IdTable {
        IdTable::default()
    }
    /// Adds an SE by its registered digest ([`IdPoint::digest`]); `false`
    /// (and no change) if the digest already names another SE.
    pub fn insert(&mut self, se_id: Hash32, digest: Hash32) -> bool {
        match self.by_digest.get(&digest) {
            Some(existing) => *existing == se_id,
            None => {
                self.by_digest.insert(digest, se_id);
                true
            }
        }
    }
    /// The SE whose identity point an opening produced.
    pub fn se_id(&self, point: &IdPoint) -> Option<Hash32> {
        self.by_digest.get(&point.digest()).copied()
    }
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

impl Cbor for IdTable {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        w.u64(u64::from(OPENING_VERSION));
        w.array(self.by_digest.len());
        for (digest, se_id) in &self.by_digest {
            w.array(2);
            digest.write(w);
            se_id.write(w);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        r.version(OPENING_VERSION)?;
        let n = r.array_max(ID_TABLE_ENTRIES_MAX)?;
        let mut t = IdTable::new();
        for _ in 0..n {
            r.array(2)?;
            let digest = Hash32::read(r)?;
            let se_id = Hash32::read(r)?;
            // Repeats and order are caught by the canonical re-encoding in
            // `from_cbor`; a digest naming two SEs is refused here.
            if !t.insert(se_id, digest) {
                return Err(CodecError::Malformed);
            }
        }
        Ok(t)
    }
}
