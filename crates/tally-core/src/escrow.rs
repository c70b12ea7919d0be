//! Escrowed pseudonyms: an SE's identity point encrypted (ElGamal over
//! ristretto255) to the supervisors' joint key, with a proof that the
//! ciphertext encrypts exactly that point under exactly that key.
//!
//! This module owns the escrow wire form (the `escrow` field of a
//! [`PseudonymCertificate`](crate::PseudonymCertificate)), its creation and
//! its verification. Opening an escrow (k-of-n threshold decryption, audit
//! log) lives in `tally-supervisor`. The group arithmetic, the ciphertext and
//! the Chaum–Pedersen proof are `elastic-elgamal`'s, so a ciphertext here is
//! byte for byte an `elastic_elgamal::Ciphertext<Ristretto>` and supervisors
//! decrypt it with that crate. Format, proof statement and transcript labels:
//! docs/decisions/0006-escrow.md.
//!
//! Statement proven (`B` the ristretto255 base point, `Y` the joint key,
//! `M` the SE's [`IdPoint`], escrow `(C1, C2)`):
//! `∃ r: C1 = r·B ∧ C2 − M = r·Y`, i.e. `log_B(C1) = log_Y(C2 − M)`.
//!
//! Anyone who knows `M` can re-check an escrow; anyone who does not learns
//! nothing from it (ElGamal is IND-CPA). But the proof also turns "is this
//! escrow SE x's?" into a test for whoever knows x's `M`, so `M` is never
//! computable from public data: it is derived from the SE id and a per-SE
//! secret salt ([`IdPoint::derive`]), and the directory and the supervisors
//! keep only its digest ([`IdPoint::digest`]). docs/decisions/0006-escrow.md
//! lists who knows `M` and the remaining trade-off.

use alloc::vec::Vec;
use core::fmt;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::traits::IsIdentity;
use elastic_elgamal::group::{ElementOps, Group, Ristretto};
use elastic_elgamal::{Ciphertext, LogEqualityProof, PublicKey as ElGamalKey, SecretKey as Nonce};
use merlin::Transcript;
use sha2::{Digest, Sha512};

use crate::codec::{Cbor, CodecError, Reader, Writer};
use crate::crypto::{Entropy, Hash32, tagged_hash};

/// Version of the escrow wire form.
pub const ESCROW_VERSION: u8 = 1;
/// Length of an encoded escrow: `[1, bstr(64), bstr(64)]` in CBOR. Fixed,
/// and well under [`crate::cert::ESCROW_BYTES_MAX`].
pub const ESCROW_BYTES: usize = 134;
/// Length of an encoded ciphertext-only escrow ([`EscrowCiphertext`]):
/// `[1, bstr(64)]` in CBOR. What a pseudonym certificate carries.
pub const ESCROW_CIPHERTEXT_BYTES: usize = 68;
const CIPHERTEXT_BYTES: usize = 64;
const PROOF_BYTES: usize = 64;

/// Domain tag of the identity-point derivation.
pub const ID_POINT_TAG: &[u8] = b"tally/v1/escrow-id";
/// Domain tag of an identity point's digest ([`IdPoint::digest`]).
pub const ID_DIGEST_TAG: &[u8] = b"tally/v1/escrow-id-digest";
/// Merlin transcript label of the escrow proof.
pub const ESCROW_TRANSCRIPT_LABEL: &[u8] = b"tally/v1/escrow";

/// Why an escrow (or a key or point it refers to) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EscrowError {
    /// The bytes are not an escrow: wrong CBOR shape, a string that is not a
    /// ristretto255 point, a non-canonical scalar, or a degenerate
    /// ciphertext (random element = identity, i.e. a plaintext escrow).
    Codec(CodecError),
    /// The joint key is not a ristretto255 point, or is the identity.
    InvalidJointKey,
    /// The identity point bytes are not a ristretto255 point.
    InvalidIdPoint,
    /// The proof does not show that this ciphertext encrypts this identity
    /// point under this joint key (another SE, another key, or tampering).
    ProofRejected,
}

impl fmt::Display for EscrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EscrowError::Codec(e) => write!(f, "escrow is malformed: {e}"),
            EscrowError::InvalidJointKey => {
                f.write_str("joint key is not a valid ristretto255 key")
            }
            EscrowError::InvalidIdPoint => {
                f.write_str("identity point is not a ristretto255 point")
            }
            EscrowError::ProofRejected => {
                f.write_str("escrow proof does not match this SE identity and joint key")
            }
        }
    }
}

impl From<CodecError> for EscrowError {
    fn from(e: CodecError) -> Self {
        EscrowError::Codec(e)
    }
}

pub use crate::crypto::EntropyRng;

/// The supervisors' joint ElGamal public key (ristretto255, never the
/// identity). Wire form: a 32-byte string.
#[derive(Clone)]
pub struct JointKey(ElGamalKey<Ristretto>);

impl JointKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<JointKey, EscrowError> {
        ElGamalKey::from_bytes(bytes)
            .map(JointKey)
            .map_err(|_| EscrowError::InvalidJointKey)
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.0.as_bytes());
        b
    }
    /// The key as `elastic-elgamal` sees it (for the supervisors' side).
    pub fn as_elgamal(&self) -> &ElGamalKey<Ristretto> {
        &self.0
    }
    pub fn from_elgamal(key: ElGamalKey<Ristretto>) -> Result<JointKey, EscrowError> {
        // Re-parse so the invariant (valid, not identity) holds whatever the
        // source.
        let mut b = [0u8; 32];
        b.copy_from_slice(key.as_bytes());
        JointKey::from_bytes(&b)
    }
}

impl PartialEq for JointKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}
impl Eq for JointKey {}

impl fmt::Debug for JointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JointKey(")?;
        for b in &self.0.as_bytes()[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

impl Cbor for JointKey {
    fn write(&self, w: &mut Writer) {
        w.bytes(self.0.as_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        JointKey::from_bytes(&r.bytes_array()?).map_err(|_| CodecError::Malformed)
    }
}

/// An SE's identity point `M`: what an escrow encrypts and what opening
/// yields. Decryption gives back a point, not an SE id, so the directory
/// and the supervisors keep a table SE id → [`IdPoint::digest`]; `M`
/// itself is known to the SE and to whoever checks its escrows (the DCP).
///
/// Wire form: the 32-byte compressed ristretto255 encoding.
#[derive(Clone, Copy)]
pub struct IdPoint {
    bytes: [u8; 32],
    point: RistrettoPoint,
}

impl IdPoint {
    /// `M = from_uniform_bytes(SHA-512(len‖"tally/v1/escrow-id" ‖ len‖se_id ‖ len‖salt))`,
    /// each part preceded by its length as a 4-byte big-endian integer.
    ///
    /// `salt` is a per-SE secret (32 random bytes chosen at registration,
    /// held by the SE, the DCP and the directory): with a public salt anyone
    /// holding a list of SE ids could test every certificate's escrow
    /// against every SE (see the module docs).
    pub fn derive(se_id: &Hash32, salt: &[u8; 32]) -> IdPoint {
        let mut h = Sha512::new();
        for part in [ID_POINT_TAG, &se_id.0[..], &salt[..]] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        let wide: [u8; 64] = h.finalize().into();
        IdPoint::from_point(&RistrettoPoint::from_uniform_bytes(&wide))
    }
    pub fn from_point(point: &RistrettoPoint) -> IdPoint {
        IdPoint {
            bytes: point.compress().to_bytes(),
            point: *point,
        }
    }
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<IdPoint, EscrowError> {
        let point = CompressedRistretto(*bytes)
            .decompress()
            .ok_or(EscrowError::InvalidIdPoint)?;
        Ok(IdPoint {
            bytes: *bytes,
            point,
        })
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }
    pub fn point(&self) -> &RistrettoPoint {
        &self.point
    }
    /// `H("tally/v1/escrow-id-digest", M)`: what the directory's and the
    /// supervisors' SE id table is keyed by. Holding digests lets them name
    /// the SE of an opened escrow without being able to test certificates
    /// against SEs, which needs `M` itself.
    pub fn digest(&self) -> Hash32 {
        tagged_hash(ID_DIGEST_TAG, &[&self.bytes])
    }
}

impl PartialEq for IdPoint {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for IdPoint {}
impl PartialOrd for IdPoint {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for IdPoint {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}
impl core::hash::Hash for IdPoint {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Debug for IdPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdPoint(")?;
        for b in &self.bytes[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

impl Cbor for IdPoint {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.bytes);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        IdPoint::from_bytes(&r.bytes_array()?).map_err(|_| CodecError::Malformed)
    }
}

/// An escrow: ElGamal ciphertext `(C1, C2) = (r·B, M + r·Y)` and the
/// Chaum–Pedersen proof `(c, s)` that it encrypts `M` under `Y`.
///
/// Wire form (canonical CBOR, [`ESCROW_BYTES`] = 134 bytes):
/// `[1, C1 ‖ C2 (bstr 64), c ‖ s (bstr 64)]` — the two byte strings are
/// `elastic_elgamal::Ciphertext::to_bytes` and
/// `elastic_elgamal::LogEqualityProof::to_bytes`.
///
/// A decoded `Escrow` is well formed (valid points, canonical scalars,
/// `C1 ≠ identity`) but not yet checked against any SE or key: that is
/// [`Escrow::verify`].
#[derive(Clone, Copy)]
pub struct Escrow {
    ciphertext: Ciphertext<Ristretto>,
    proof: LogEqualityProof<Ristretto>,
}

fn proof_transcript(id: &IdPoint) -> Transcript {
    let mut t = Transcript::new(ESCROW_TRANSCRIPT_LABEL);
    t.append_message(b"id-point", &id.bytes);
    t
}

/// Encrypts `id` to `joint` with fresh randomness and proves it. Every call
/// gives a different escrow, so escrows of one SE cannot be linked.
pub fn create(joint: &JointKey, id: &IdPoint, rng: &mut dyn Entropy) -> Escrow {
    let mut rng = EntropyRng(rng);
    let r = Nonce::<Ristretto>::generate(&mut rng);
    let random = Ristretto::mul_generator(r.expose_scalar());
    let shared = joint.0.as_element() * r.expose_scalar();
    let proof = LogEqualityProof::new(
        &joint.0,
        &r,
        (random, shared),
        &mut proof_transcript(id),
        &mut rng,
    );
    let escrow = Escrow {
        ciphertext: Ciphertext::from_elements(random, id.point + shared),
        proof,
    };
    // r = 0 has probability 2^-252; the verifier refuses it, so the maker
    // does not check for it.
    debug_assert!(escrow.verify(joint, id).is_ok());
    escrow
}

/// Decodes `bytes` and checks the escrow against the SE's identity point
/// and the joint key. What the DCP runs before certifying; anyone who knows
/// the SE's point can run it again on the certificate.
pub fn verify(joint: &JointKey, id: &IdPoint, bytes: &[u8]) -> Result<Escrow, EscrowError> {
    let escrow = Escrow::from_bytes(bytes)?;
    escrow.verify(joint, id)?;
    Ok(escrow)
}

impl Escrow {
    /// Checks `log_B(C1) = log_Y(C2 − M)` for `Y = joint`, `M = id`.
    pub fn verify(&self, joint: &JointKey, id: &IdPoint) -> Result<(), EscrowError> {
        let shared = *self.ciphertext.blinded_element() - id.point;
        self.proof
            .verify(
                &joint.0,
                (*self.ciphertext.random_element(), shared),
                &mut proof_transcript(id),
            )
            .map_err(|_| EscrowError::ProofRejected)
    }

    /// The ciphertext, for threshold decryption with `elastic-elgamal`.
    pub fn ciphertext(&self) -> Ciphertext<Ristretto> {
        self.ciphertext
    }

    /// The same ciphertext without its proof: what goes into a pseudonym
    /// certificate (decision 0006). The DCP checks the full escrow before
    /// certifying; the certificate carries only this.
    pub fn ciphertext_only(&self) -> EscrowCiphertext {
        EscrowCiphertext {
            ciphertext: self.ciphertext,
        }
    }

    /// The wire form (what goes into the certificate's `escrow` field).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_cbor()
    }

    /// Decodes the wire form strictly (see [`Escrow`]); does not verify the
    /// proof.
    pub fn from_bytes(bytes: &[u8]) -> Result<Escrow, EscrowError> {
        Ok(Escrow::from_cbor(bytes)?)
    }
}

impl PartialEq for Escrow {
    fn eq(&self, other: &Self) -> bool {
        self.ciphertext.to_bytes() == other.ciphertext.to_bytes()
            && self.proof.to_bytes() == other.proof.to_bytes()
    }
}
impl Eq for Escrow {}

impl fmt::Debug for Escrow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Escrow(")?;
        for b in &self.ciphertext.to_bytes()[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

/// The ciphertext-only form of an escrow: `(C1, C2) = (r·B, M + r·Y)`
/// without the proof. This is what a pseudonym certificate carries
/// (decision 0006): without the proof, knowing an SE's `M` does not let
/// anyone link that SE's certificates (ElGamal is IND-CPA), and the
/// certificate is 66 bytes shorter. The DCP checks the full [`Escrow`]
/// before signing, so its signature is what vouches for the ciphertext.
///
/// Wire form (canonical CBOR, [`ESCROW_CIPHERTEXT_BYTES`] = 68 bytes):
/// `[1, C1 ‖ C2 (bstr 64)]`. A decoded value has valid points and
/// `C1 ≠ identity`; nothing more can be checked without the proof.
#[derive(Clone, Copy)]
pub struct EscrowCiphertext {
    ciphertext: Ciphertext<Ristretto>,
}

impl EscrowCiphertext {
    /// The ciphertext, for threshold decryption with `elastic-elgamal`.
    pub fn ciphertext(&self) -> Ciphertext<Ristretto> {
        self.ciphertext
    }

    /// The wire form (what goes into the certificate's `escrow` field).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_cbor()
    }

    /// Decodes the wire form strictly: both elements must be points and
    /// `C1` must not be the identity (a plaintext escrow).
    pub fn from_bytes(bytes: &[u8]) -> Result<EscrowCiphertext, EscrowError> {
        Ok(EscrowCiphertext::from_cbor(bytes)?)
    }

    /// Whether `escrow` is this ciphertext with a proof: how a DCP's record
    /// of the full escrow is matched to a certificate's ciphertext.
    pub fn is_ciphertext_of(&self, escrow: &Escrow) -> bool {
        self.ciphertext.to_bytes() == escrow.ciphertext.to_bytes()
    }
}

impl PartialEq for EscrowCiphertext {
    fn eq(&self, other: &Self) -> bool {
        self.ciphertext.to_bytes() == other.ciphertext.to_bytes()
    }
}
impl Eq for EscrowCiphertext {}

impl fmt::Debug for EscrowCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EscrowCiphertext(")?;
        for b in &self.ciphertext.to_bytes()[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

impl Cbor for EscrowCiphertext {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        w.u64(u64::from(ESCROW_VERSION));
        w.bytes(&self.ciphertext.to_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        r.version(ESCROW_VERSION)?;
        let c: [u8; CIPHERTEXT_BYTES] = r.bytes_array()?;
        Ok(EscrowCiphertext {
            ciphertext: read_ciphertext(&c)?,
        })
    }
}

/// `C1 ‖ C2` as two points, refusing `C1 = identity`: r = 0 would put M
/// itself in C2, a plaintext escrow (its proof would even verify).
fn read_ciphertext(c: &[u8; CIPHERTEXT_BYTES]) -> Result<Ciphertext<Ristretto>, CodecError> {
    let random = element(&c[..32])?;
    let blinded = element(&c[32..])?;
    if random.is_identity() {
        return Err(CodecError::Malformed);
    }
    Ok(Ciphertext::from_elements(random, blinded))
}

fn element(bytes: &[u8]) -> Result<RistrettoPoint, CodecError> {
    Ristretto::deserialize_element(bytes).ok_or(CodecError::Malformed)
}

impl Cbor for Escrow {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(u64::from(ESCROW_VERSION));
        w.bytes(&self.ciphertext.to_bytes());
        w.bytes(&self.proof.to_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        r.version(ESCROW_VERSION)?;
        let c: [u8; CIPHERTEXT_BYTES] = r.bytes_array()?;
        let p: [u8; PROOF_BYTES] = r.bytes_array()?;
        let ciphertext = read_ciphertext(&c)?;
        let proof = LogEqualityProof::from_bytes(&p).ok_or(CodecError::Malformed)?;
        Ok(Escrow { ciphertext, proof })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{ESCROW_BYTES_MAX, PseudonymCertificate};
    use crate::crypto::Suite;
    use crate::testkit::{self, TestEntropy};
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    use curve25519_dalek::scalar::Scalar;

    fn joint(label: &[u8]) -> (Scalar, JointKey) {
        let mut wide = [0u8; 64];
        TestEntropy::new(label).fill(&mut wide);
        let x = Scalar::from_bytes_mod_order_wide(&wide);
        let y = (x * RISTRETTO_BASEPOINT_POINT).compress().to_bytes();
        (x, JointKey::from_bytes(&y).unwrap())
    }

    fn se(n: u8) -> IdPoint {
        IdPoint::derive(&Hash32([n; 32]), &[n ^ 0x5a; 32])
    }

    #[test]
    fn escrow_verifies_and_fits_the_certificate_field() {
        let (_, y) = joint(b"joint");
        let id = se(1);
        let e = create(&y, &id, &mut TestEntropy::new(b"e1"));
        let bytes = e.to_bytes();
        assert_eq!(bytes.len(), ESCROW_BYTES);
        assert!(bytes.len() <= ESCROW_BYTES_MAX);
        assert_eq!(verify(&y, &id, &bytes), Ok(e));

        // It travels inside a pseudonym certificate and comes back intact.
        let dcp = testkit::key(Suite::Ed25519, b"dcp-1");
        let holder = testkit::key(Suite::Ed25519, b"holder");
        let cert = PseudonymCertificate::sign(&dcp, holder.public(), 10, 1, 0, bytes.clone());
        let back = PseudonymCertificate::from_cbor(&cert.to_cbor()).unwrap();
        assert_eq!(verify(&y, &id, &back.escrow), Ok(e));
    }

    #[test]
    fn decrypting_with_the_joint_secret_gives_the_id_point() {
        let (x, y) = joint(b"joint");
        let id = se(2);
        let e = create(&y, &id, &mut TestEntropy::new(b"e2"));
        let c = e.ciphertext();
        let m = c.blinded_element() - x * c.random_element();
        assert_eq!(IdPoint::from_point(&m), id);
    }

    #[test]
    fn proof_rejects_another_se() {
        let (_, y) = joint(b"joint");
        let bytes = create(&y, &se(1), &mut TestEntropy::new(b"e")).to_bytes();
        assert_eq!(verify(&y, &se(2), &bytes), Err(EscrowError::ProofRejected));
        // Same SE id, another salt: another point, refused as well.
        let other_salt = IdPoint::derive(&Hash32([1; 32]), &[0; 32]);
        assert_eq!(
            verify(&y, &other_salt, &bytes),
            Err(EscrowError::ProofRejected)
        );
    }

    #[test]
    fn proof_rejects_another_joint_key() {
        let (_, y) = joint(b"joint");
        let (_, y2) = joint(b"other joint");
        let id = se(1);
        let bytes = create(&y, &id, &mut TestEntropy::new(b"e")).to_bytes();
        assert_eq!(verify(&y2, &id, &bytes), Err(EscrowError::ProofRejected));
    }

    #[test]
    fn proof_rejects_a_tampered_ciphertext() {
        let (_, y) = joint(b"joint");
        let id = se(1);
        let e = create(&y, &id, &mut TestEntropy::new(b"e"));
        let c = e.ciphertext();
        // Valid points, shifted: C2 + B (would decrypt to M + B), C1 + B.
        for (c1, c2) in [
            (
                *c.random_element(),
                c.blinded_element() + RISTRETTO_BASEPOINT_POINT,
            ),
            (
                c.random_element() + RISTRETTO_BASEPOINT_POINT,
                *c.blinded_element(),
            ),
        ] {
            let t = Escrow {
                ciphertext: Ciphertext::from_elements(c1, c2),
                proof: e.proof,
            };
            assert_eq!(
                verify(&y, &id, &t.to_bytes()),
                Err(EscrowError::ProofRejected)
            );
        }
        // Any single flipped bit is refused, as malformed or by the proof.
        let bytes = e.to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                verify(&y, &id, &b).is_err(),
                "bit flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn escrows_of_one_se_are_rerandomised() {
        let (_, y) = joint(b"joint");
        let id = se(1);
        let mut rng = TestEntropy::new(b"same rng");
        let a = create(&y, &id, &mut rng);
        let b = create(&y, &id, &mut rng);
        assert_ne!(a.to_bytes(), b.to_bytes());
        assert_ne!(
            a.ciphertext().random_element().compress(),
            b.ciphertext().random_element().compress()
        );
        assert_ne!(
            a.ciphertext().blinded_element().compress(),
            b.ciphertext().blinded_element().compress()
        );
        assert!(a.verify(&y, &id).is_ok() && b.verify(&y, &id).is_ok());
    }

    #[test]
    fn plaintext_escrow_with_a_valid_proof_is_refused() {
        // r = 0: C1 = identity, C2 = M. The DLEQ proof for r = 0 is valid,
        // so only the decoder's identity check stops it.
        let (_, y) = joint(b"joint");
        let id = se(1);
        let zero = Nonce::<Ristretto>::from_bytes(&[0u8; 32]).unwrap();
        let identity = Ristretto::identity();
        let proof = LogEqualityProof::new(
            &y.0,
            &zero,
            (identity, identity),
            &mut proof_transcript(&id),
            &mut EntropyRng(&mut TestEntropy::new(b"p")),
        );
        let e = Escrow {
            ciphertext: Ciphertext::from_elements(identity, id.point),
            proof,
        };
        assert_eq!(e.verify(&y, &id), Ok(()));
        assert_eq!(
            verify(&y, &id, &e.to_bytes()),
            Err(EscrowError::Codec(CodecError::Malformed))
        );
    }

    #[test]
    fn decoding_is_strict() {
        let (_, y) = joint(b"joint");
        let id = se(1);
        let bytes = create(&y, &id, &mut TestEntropy::new(b"e")).to_bytes();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Escrow::from_bytes(&trailing),
            Err(EscrowError::Codec(CodecError::TrailingBytes))
        );
        assert_eq!(
            Escrow::from_bytes(&bytes[..100]),
            Err(EscrowError::Codec(CodecError::Truncated))
        );
        let mut v2 = bytes.clone();
        v2[1] = 2;
        assert_eq!(
            Escrow::from_bytes(&v2),
            Err(EscrowError::Codec(CodecError::UnsupportedVersion))
        );
        assert!(Escrow::from_bytes(&[]).is_err());
        // A non-canonical scalar (s + ℓ) in the proof is refused.
        let mut big = bytes.clone();
        big[bytes.len() - 1] = 0xff;
        assert_eq!(
            Escrow::from_bytes(&big),
            Err(EscrowError::Codec(CodecError::Malformed))
        );
    }

    #[test]
    fn ciphertext_only_form_round_trips_and_decrypts() {
        let (x, y) = joint(b"joint");
        let id = se(4);
        let e = create(&y, &id, &mut TestEntropy::new(b"e4"));
        let c = e.ciphertext_only();
        let bytes = c.to_bytes();
        assert_eq!(bytes.len(), ESCROW_CIPHERTEXT_BYTES);
        assert!(bytes.len() <= ESCROW_BYTES_MAX);
        // Pinned shape: [1, bstr 64] = 0x82 0x01 0x58 0x40 ‖ C1 ‖ C2.
        assert_eq!(&bytes[..4], &[0x82, 0x01, 0x58, 0x40]);
        assert_eq!(&bytes[4..], &e.ciphertext().to_bytes()[..]);
        assert_eq!(EscrowCiphertext::from_bytes(&bytes), Ok(c));
        assert!(c.is_ciphertext_of(&e));
        let other = create(&y, &id, &mut TestEntropy::new(b"e5"));
        assert!(!c.is_ciphertext_of(&other));
        let m = c.ciphertext().blinded_element() - x * c.ciphertext().random_element();
        assert_eq!(IdPoint::from_point(&m), id);
        // The two forms are not interchangeable on the wire.
        assert!(Escrow::from_bytes(&bytes).is_err());
        assert!(EscrowCiphertext::from_bytes(&e.to_bytes()).is_err());
    }

    #[test]
    fn ciphertext_only_decoding_is_strict() {
        let (_, y) = joint(b"joint");
        let e = create(&y, &se(1), &mut TestEntropy::new(b"e"));
        let bytes = e.ciphertext_only().to_bytes();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            EscrowCiphertext::from_bytes(&trailing),
            Err(EscrowError::Codec(CodecError::TrailingBytes))
        );
        assert_eq!(
            EscrowCiphertext::from_bytes(&bytes[..40]),
            Err(EscrowError::Codec(CodecError::Truncated))
        );
        let mut v2 = bytes.clone();
        v2[1] = 2;
        assert_eq!(
            EscrowCiphertext::from_bytes(&v2),
            Err(EscrowError::Codec(CodecError::UnsupportedVersion))
        );
        // C1 = identity (a plaintext escrow) is refused.
        let mut plain = bytes.clone();
        plain[4..36].fill(0);
        assert_eq!(
            EscrowCiphertext::from_bytes(&plain),
            Err(EscrowError::Codec(CodecError::Malformed))
        );
        // Non-points in either half are refused.
        for range in [4..36, 36..68] {
            let mut bad = bytes.clone();
            bad[range].fill(0xff);
            assert_eq!(
                EscrowCiphertext::from_bytes(&bad),
                Err(EscrowError::Codec(CodecError::Malformed))
            );
        }
    }

    #[test]
    fn joint_key_and_id_point_parsing() {
        assert_eq!(
            JointKey::from_bytes(&[0u8; 32]),
            Err(EscrowError::InvalidJointKey)
        );
        assert_eq!(
            JointKey::from_bytes(&[0xff; 32]),
            Err(EscrowError::InvalidJointKey)
        );
        assert_eq!(
            IdPoint::from_bytes(&[0xff; 32]),
            Err(EscrowError::InvalidIdPoint)
        );
        let (_, y) = joint(b"joint");
        assert_eq!(JointKey::from_cbor(&y.to_cbor()), Ok(y.clone()));
        let id = se(3);
        assert_eq!(IdPoint::from_cbor(&id.to_cbor()), Ok(id));
    }

    #[test]
    fn id_point_derivation_vector() {
        // Pins the derivation (tag, length prefixes, order of parts).
        let id = IdPoint::derive(&Hash32([1; 32]), &[2; 32]);
        assert_eq!(
            hex::encode(id.to_bytes()),
            "e0d295cf48b1b2417fe534224c8c9bf96a2d8c373e0ecb454127f1baa51e6260"
        );
        assert_ne!(id, IdPoint::derive(&Hash32([2; 32]), &[1; 32]));
        assert_eq!(
            id.digest(),
            tagged_hash(b"tally/v1/escrow-id-digest", &[&id.to_bytes()])
        );
    }
}
