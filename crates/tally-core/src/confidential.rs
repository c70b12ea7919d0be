//! Confidential amounts (issue 12, the cryptographic core): Pedersen
//! commitments over Ristretto255, Bulletproofs+ range proofs, the balance
//! of commitments that shows a Transfer conserves value (output blindings
//! summing to the inputs', decision 0029), and the opening of an output
//! sealed to its payee. Wire integration (records, SE and payee
//! rules, settlement) is built on this API elsewhere; this module owns the
//! constructions and their encodings. See
//! docs/decisions/0017-confidential-amounts.md and
//! docs/spec-confidential-draft.md.
//!
//! ```text
//! B            = the Ristretto255 basepoint (value base; tari's `h_base`)
//! H            = RistrettoPoint::hash_from_bytes::<Sha3_512>("RISTRETTO_MASKING_BASEPOINT_1")
//!                (blinding base; tari's `g_base_vec[0]`, extension degree 1)
//! Commitment   = v·B + r·H                          bstr 32 (compressed Ristretto)
//! Opening      = [v, r : bstr 32]                    (r canonical, non-zero)
//! RangeProof   = [1, bits, outputs, proof : bstr]    bits ∈ {16, 32, 64}, 1 ≤ outputs ≤ 4
//! C4           = Σ C_in = Σ C_out                    (no witness on the wire)
//! SealedOpening= [1, enc : bstr 32, ct : bstr 56]
//! ```
//!
//! Every prover takes the caller's `context` (a hash of the Transfer it
//! belongs to, fixed by the caller before any proof is made), and every
//! verifier needs the same context: a proof or seal lifted from another
//! transfer does not verify. The group arithmetic is
//! curve25519-dalek's, the range proof tari's (vendored with a no_std
//! patch, see vendor/tari_bulletproofs_plus.patch), the sealing HPKE's; this
//! module composes them and implements no field or curve operation.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity, IsIdentity, MultiscalarMul, VartimeMultiscalarMul};
use hpke::aead::{ChaCha20Poly1305, ExportOnlyAead};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha512};
use tari_bulletproofs_plus::Transcript;
use tari_bulletproofs_plus::commitment_opening::CommitmentOpening;
use tari_bulletproofs_plus::generators::pedersen_gens::ExtensionDegree;
use tari_bulletproofs_plus::range_parameters::RangeParameters;

use crate::confidential_gens;
use tari_bulletproofs_plus::range_proof::VerifyAction;
use tari_bulletproofs_plus::range_statement::RangeStatement;
use tari_bulletproofs_plus::range_witness::RangeWitness;
use tari_bulletproofs_plus::ristretto::{
    RistrettoRangeProof, create_pedersen_gens_with_extension_degree,
};
use zeroize::{Zeroize, Zeroizing};

use crate::amount::Amount;
use crate::codec::{Cbor, CodecError, Reader, Writer};
use crate::crypto::{Entropy, EntropyRng, Hash32, PublicKey, SecretKey, Suite, tagged_hash};
use crate::record::RECORD_INPUTS_MAX;

const VERSION: u8 = 1;

/// Most outputs one range proof covers (aggregated). Tally's transfers
/// have a payment and a change output, a split a few more; four keeps the
/// generator tables a device needs small.
pub const RANGE_OUTPUTS_MAX: usize = 4;
/// Generators a verification with [`RangeGens::low_memory`] (feature
/// `confidential-low-memory`) holds decompressed at a time: it multiplies
/// them, and the proof's own points, by the bucket method (Pippenger; a
/// bucket per digit magnitude, no per-point tables), a group at a time.
/// 64 (about 10 KiB on the 32-bit backend) holds all of a 16-bit proof of
/// two outputs, so its doublings are done once; larger proofs take more
/// groups. Decision 0027, "Session 13".
pub const RANGE_MSM_CHUNK: usize = 64;
/// Points per chunk when proving with [`RangeGens::low_memory`]: the
/// prover's multiplications over secret scalars are curve25519-dalek's
/// constant-time Straus (a lookup table of about 1.3 KiB per point), this
/// many points at a time, so that a payee's terminal timing PAY learns
/// nothing of the amounts (decision 0030). 10 puts the third round's ten
/// points in one chunk: the M4's PAY 207.82 M instructions in 54.7 KiB
/// (6: 211.89 M in 53.7 KiB; 12: the same count in 57.3 KiB).
pub const RANGE_PROVE_MSM_CHUNK: usize = 10;
/// Most input commitments C4 sums (a Transfer's inputs).
pub const BALANCE_INPUTS_MAX: usize = RECORD_INPUTS_MAX;
/// Bytes of a compressed commitment.
pub const COMMITMENT_BYTES: usize = 32;
/// Bytes of an opening's plaintext inside a sealed opening: `v` (8, big
/// endian) ‖ `r` (32). Fixed, so the ciphertext's length says nothing
/// about the amount.
pub const OPENING_PLAINTEXT_BYTES: usize = 40;
/// Bytes of a sealed opening's ciphertext (plaintext + Poly1305 tag).
pub const SEALED_OPENING_CT_BYTES: usize = OPENING_PLAINTEXT_BYTES + 16;
/// Largest range proof: 64 bits × 4 outputs
/// (`1 + 32·(1 + 5 + 2·log2(64·4))` bytes).
pub const RANGE_PROOF_BYTES_MAX: usize = range_proof_len(64, 4);

/// Why a confidential object was refused. Each rule has its own variant,
/// so a later layer can map them to result codes one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfidentialError {
    /// The bytes are not a valid wire object.
    Decode(CodecError),
    /// Not a canonical Ristretto encoding, or the identity.
    InvalidCommitment,
    /// A range bit-length other than 16, 32 or 64.
    UnsupportedRange,
    /// The proof's bit-length is not the one the verifier requires.
    RangeBitsMismatch,
    /// No outputs, more than [`RANGE_OUTPUTS_MAX`], or not as many
    /// commitments as the proof covers; or no or too many inputs.
    OutputCount,
    /// The range generators cover fewer outputs than the proof needs.
    GeneratorCapacity,
    /// A value to prove is not below 2^bits (prover side).
    OutOfRange,
    /// Input and output values do not balance (prover side), or overflow.
    Unbalanced,
    /// The range proof does not verify for these commitments and context.
    RangeProofInvalid,
    /// The output commitments do not sum to the input commitments (C4):
    /// value is created or destroyed.
    CommitmentsUnbalanced,
    /// The payee key cannot receive an opening: not Ed25519, or not a
    /// valid point of large order.
    UnsupportedKey,
    /// The sealed opening does not open with this key, commitment and
    /// context (wrong payee, swapped, replayed or modified).
    OpeningUnreadable,
    /// The opening does not open the commitment.
    WrongOpening,
    /// The range prover failed on consistent input (cannot happen; refused
    /// rather than trusted).
    ProverFailed,
}

impl fmt::Display for ConfidentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ConfidentialError::Decode(e) => return write!(f, "malformed confidential object: {e}"),
            ConfidentialError::InvalidCommitment => {
                "commitment is not a canonical non-identity point"
            }
            ConfidentialError::UnsupportedRange => "range bit-length must be 16, 32 or 64",
            ConfidentialError::RangeBitsMismatch => {
                "range proof has another bit-length than required"
            }
            ConfidentialError::OutputCount => "wrong number of outputs or inputs",
            ConfidentialError::GeneratorCapacity => "range generators cover too few outputs",
            ConfidentialError::OutOfRange => "value does not fit the range",
            ConfidentialError::Unbalanced => "input and output values do not balance",
            ConfidentialError::RangeProofInvalid => "range proof does not verify",
            ConfidentialError::CommitmentsUnbalanced => {
                "output commitments do not sum to the input commitments"
            }
            ConfidentialError::UnsupportedKey => "payee key cannot receive a sealed opening",
            ConfidentialError::OpeningUnreadable => "sealed opening does not open for this payee",
            ConfidentialError::WrongOpening => "opening does not match the commitment",
            ConfidentialError::ProverFailed => "range prover failed",
        };
        f.write_str(s)
    }
}

impl From<CodecError> for ConfidentialError {
    fn from(e: CodecError) -> Self {
        ConfidentialError::Decode(e)
    }
}

/// The value base `B` (the Ristretto basepoint).
pub fn value_base() -> RistrettoPoint {
    RISTRETTO_BASEPOINT_POINT
}

/// The blinding base `H`: tari's first masking basepoint, so commitments
/// made here are the ones its range proofs speak about. Nobody knows
/// `log_B(H)` (it is hashed to the curve), which is what makes the
/// commitments binding.
pub fn blinding_base() -> RistrettoPoint {
    let gens = create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen);
    match gens.g_base_vec.first() {
        Some(h) => *h,
        // Extension degree 1 has exactly one masking base, built by tari
        // from a constant label: no input reaches this. Falling back to any
        // point would silently make commitments non-binding, so stop.
        None => unreachable!("tari's default Pedersen generators have one masking base"),
    }
}

/// A uniformly random non-zero scalar from the injected entropy.
fn random_scalar(rng: &mut dyn Entropy) -> Scalar {
    loop {
        let mut wide = Zeroizing::new([0u8; 64]);
        rng.fill(&mut wide[..]);
        let s = Scalar::from_bytes_mod_order_wide(&wide);
        if s != Scalar::ZERO {
            return s;
        }
    }
}

// ---------------------------------------------------------------------------
// Commitments and openings

/// A Pedersen commitment `v·B + r·H`, as 32 bytes of compressed
/// Ristretto. Only canonical encodings of points other than the identity
/// are commitments.
#[derive(Clone, Copy)]
pub struct Commitment {
    bytes: [u8; 32],
    point: RistrettoPoint,
}

impl Commitment {
    /// Decodes a commitment: refuses non-canonical encodings (Ristretto
    /// decompression accepts exactly one encoding per point) and the
    /// identity (a commitment to 0 with blinding 0, which hides nothing).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Commitment, ConfidentialError> {
        let point = CompressedRistretto(*bytes)
            .decompress()
            .ok_or(ConfidentialError::InvalidCommitment)?;
        if point.is_identity() {
            return Err(ConfidentialError::InvalidCommitment);
        }
        Ok(Commitment {
            bytes: *bytes,
            point,
        })
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
    pub fn point(&self) -> RistrettoPoint {
        self.point
    }
    fn from_point(point: RistrettoPoint) -> Commitment {
        Commitment {
            bytes: point.compress().to_bytes(),
            point,
        }
    }
}

impl PartialEq for Commitment {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for Commitment {}

impl fmt::Debug for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Commitment(")?;
        for b in &self.bytes[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

impl Cbor for Commitment {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.bytes);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Commitment::from_bytes(&r.bytes_array()?).map_err(|_| CodecError::Malformed)
    }
}

/// What opens a commitment: the value and the blinding. Secret to the
/// payer and the payee of the output (and settlement); zeroed on drop.
#[derive(Clone)]
pub struct Opening {
    value: Amount,
    blinding: Scalar,
}

impl Opening {
    /// A fresh opening of `value` with a uniformly random blinding.
    pub fn random(value: Amount, rng: &mut dyn Entropy) -> Opening {
        Opening {
            value,
            blinding: random_scalar(rng),
        }
    }
    /// An opening from its parts. A zero blinding is refused: with it the
    /// commitment of a small value can be found by trying values.
    pub fn from_parts(value: Amount, blinding: Scalar) -> Result<Opening, ConfidentialError> {
        if blinding == Scalar::ZERO {
            return Err(ConfidentialError::WrongOpening);
        }
        Ok(Opening { value, blinding })
    }
    /// An opening from a value and a stored blinding (32 bytes, canonical,
    /// non-zero): what an SE keeps with each token it holds.
    pub fn from_bytes(value: Amount, blinding: &[u8; 32]) -> Result<Opening, ConfidentialError> {
        let r = Option::<Scalar>::from(Scalar::from_canonical_bytes(*blinding))
            .ok_or(ConfidentialError::WrongOpening)?;
        Opening::from_parts(value, r)
    }
    /// The blinding's 32 bytes (for the holder's own sealed storage).
    pub fn blinding_bytes(&self) -> [u8; 32] {
        self.blinding.to_bytes()
    }
    pub fn value(&self) -> Amount {
        self.value
    }
    pub fn blinding(&self) -> &Scalar {
        &self.blinding
    }
    /// `v·B + r·H`, in constant time (the value and blinding are secret).
    pub fn commit(&self) -> Commitment {
        let v = Zeroizing::new(Scalar::from(self.value.0));
        Commitment::from_point(RistrettoPoint::multiscalar_mul(
            [*v, self.blinding],
            [value_base(), blinding_base()],
        ))
    }
    /// Whether this opening opens `c`.
    pub fn opens(&self, c: &Commitment) -> bool {
        self.commit() == *c
    }
    fn to_plaintext(&self) -> Zeroizing<[u8; OPENING_PLAINTEXT_BYTES]> {
        let mut p = Zeroizing::new([0u8; OPENING_PLAINTEXT_BYTES]);
        p[..8].copy_from_slice(&self.value.0.to_be_bytes());
        p[8..].copy_from_slice(self.blinding.as_bytes());
        p
    }
    fn from_plaintext(p: &[u8]) -> Result<Opening, ConfidentialError> {
        let (v, r) = p
            .split_at_checked(8)
            .filter(|(_, r)| r.len() == 32)
            .ok_or(ConfidentialError::OpeningUnreadable)?;
        let mut vb = [0u8; 8];
        vb.copy_from_slice(v);
        let mut rb = Zeroizing::new([0u8; 32]);
        rb.copy_from_slice(r);
        let blinding = Option::<Scalar>::from(Scalar::from_canonical_bytes(*rb))
            .ok_or(ConfidentialError::WrongOpening)?;
        Opening::from_parts(Amount(u64::from_be_bytes(vb)), blinding)
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.value.0.zeroize();
        self.blinding.zeroize();
    }
}

impl PartialEq for Opening {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value && self.blinding == other.blinding
    }
}
impl Eq for Opening {}

impl fmt::Debug for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither part is printed: both are secret.
        f.write_str("Opening(…)")
    }
}

/// `[v, r : bstr 32]`: what a device uploads (sealed) to settlement.
impl Cbor for Opening {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        w.u64(self.value.0);
        w.bytes(self.blinding.as_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        let value = Amount(r.u64()?);
        let rb: Zeroizing<[u8; 32]> = Zeroizing::new(r.bytes_array()?);
        let blinding = Option::<Scalar>::from(Scalar::from_canonical_bytes(*rb))
            .ok_or(CodecError::Malformed)?;
        Opening::from_parts(value, blinding).map_err(|_| CodecError::Malformed)
    }
}

// ---------------------------------------------------------------------------
// Range proofs

/// Range bit-lengths Bulletproofs+ supports here (powers of two): a range
/// proof shows `0 ≤ v < 2^bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum RangeBits {
    Bits16 = 16,
    Bits32 = 32,
    Bits64 = 64,
}

impl RangeBits {
    pub fn from_code(bits: u8) -> Result<RangeBits, ConfidentialError> {
        match bits {
            16 => Ok(RangeBits::Bits16),
            32 => Ok(RangeBits::Bits32),
            64 => Ok(RangeBits::Bits64),
            _ => Err(ConfidentialError::UnsupportedRange),
        }
    }
    /// The smallest range holding every amount up to `bound` (the
    /// policy's holding limit): an output can never be worth more than its
    /// holder may hold.
    pub fn for_bound(bound: Amount) -> RangeBits {
        if bound.0 < 1 << 16 {
            RangeBits::Bits16
        } else if bound.0 < 1 << 32 {
            RangeBits::Bits32
        } else {
            RangeBits::Bits64
        }
    }
    pub fn bits(self) -> usize {
        self as usize
    }
    /// Whether `v < 2^bits`.
    pub fn holds(self, v: Amount) -> bool {
        match self {
            RangeBits::Bits64 => true,
            b => v.0 >> b.bits() == 0,
        }
    }
}

/// Bytes of a tari proof of `bits` over `outputs` (padded to a power of
/// two): extension byte, `d1`, `A, A1, B, r1, s1`, and `log2(bits·m)`
/// pairs `L, R`.
const fn range_proof_len(bits: usize, outputs: usize) -> usize {
    let m = outputs.next_power_of_two();
    let rounds = (bits * m).trailing_zeros() as usize;
    1 + 32 * (1 + 5 + 2 * rounds)
}

/// The generators for range proofs of one bit-length over up to
/// `outputs_max` outputs (1, 2 or 4), with tari's precomputed tables. Made
/// once and kept: building them hashes `2·bits·outputs_max` points to the
/// curve and fills the tables (tens of milliseconds on x86, far more on a
/// device; see the decision record for the memory they take).
#[derive(Clone)]
pub struct RangeGens {
    bits: RangeBits,
    outputs_max: usize,
    params: RangeParameters<RistrettoPoint>,
    /// The same generators for proving (with [`RangeGens::low_memory`]
    /// another chunk size; otherwise a clone sharing the tables).
    prove_params: RangeParameters<RistrettoPoint>,
}

impl RangeGens {
    pub fn new(bits: RangeBits, outputs_max: usize) -> Result<RangeGens, ConfidentialError> {
        if !matches!(outputs_max, 1 | 2 | 4) {
            return Err(ConfidentialError::OutputCount);
        }
        let params = RangeParameters::init(
            bits.bits(),
            outputs_max,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .map_err(|_| ConfidentialError::GeneratorCapacity)?;
        Ok(RangeGens {
            bits,
            outputs_max,
            prove_params: params.clone(),
            params,
        })
    }
    /// The same generators for a device with little RAM (decision 0027):
    /// taken from the constants in [`confidential_gens`] (compressed, in
    /// flash) and decompressed each time a multiscalar multiplication
    /// needs them, never hashed to the curve, held or tabulated;
    /// verifying multiplies `msm_chunk` points at a time and proving
    /// `prove_msm_chunk` (curve25519-dalek's variable-time multiscalar
    /// multiplication per chunk, summed), so their memory is bounded
    /// whatever the proof's size. Proofs are interchangeable with those of [`RangeGens::new`]
    /// (the same points; tests/confidential.rs). Ranges up to
    /// [`confidential_gens::GENS_PER_PARTY`] bits.
    pub fn low_memory(
        bits: RangeBits,
        outputs_max: usize,
        msm_chunk: usize,
        prove_msm_chunk: usize,
    ) -> Result<RangeGens, ConfidentialError> {
        if !matches!(outputs_max, 1 | 2 | 4) {
            return Err(ConfidentialError::OutputCount);
        }
        if bits.bits() > confidential_gens::GENS_PER_PARTY
            || outputs_max > confidential_gens::PARTIES
        {
            return Err(ConfidentialError::GeneratorCapacity);
        }
        let params = |chunk| {
            RangeParameters::init_from_source(
                bits.bits(),
                outputs_max,
                create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
                constant_generator,
                chunk,
            )
            .map_err(|_| ConfidentialError::GeneratorCapacity)
        };
        Ok(RangeGens {
            bits,
            outputs_max,
            params: params(msm_chunk)?,
            prove_params: params(prove_msm_chunk)?,
        })
    }
    pub fn bits(&self) -> RangeBits {
        self.bits
    }
    pub fn outputs_max(&self) -> usize {
        self.outputs_max
    }

    /// The statement for `commitments`, padded with identity commitments
    /// (openings `0, 0`) to a power of two, as tari requires: the padding
    /// is in range and fixed, so prover and verifier derive it alike.
    fn statement(
        &self,
        commitments: &[RistrettoPoint],
    ) -> Result<RangeStatement<RistrettoPoint>, ConfidentialError> {
        self.statement_with(&self.params, commitments)
    }
    fn statement_with(
        &self,
        params: &RangeParameters<RistrettoPoint>,
        commitments: &[RistrettoPoint],
    ) -> Result<RangeStatement<RistrettoPoint>, ConfidentialError> {
        let m = commitments.len().next_power_of_two();
        if m > self.outputs_max {
            return Err(ConfidentialError::GeneratorCapacity);
        }
        let mut points = Vec::with_capacity(m);
        points.extend_from_slice(commitments);
        points.resize(m, RistrettoPoint::identity());
        RangeStatement::init(params.clone(), points, vec![None; m], None)
            .map_err(|_| ConfidentialError::GeneratorCapacity)
    }
}

/// Generator `index` of party `party`'s H chain (`h`) or G chain, from
/// the constants (the source of [`RangeGens::low_memory`]). A constant
/// that does not decompress would be a corrupted table: `None`, which
/// makes tari's iterators end early and every proof fail (never accept).
fn constant_generator(h: bool, party: usize, index: usize) -> Option<RistrettoPoint> {
    let table = if h {
        &confidential_gens::H
    } else {
        &confidential_gens::G
    };
    CompressedRistretto(*table.get(party)?.get(index)?).decompress()
}

/// The Fiat–Shamir transcript of a range proof: Tally's label, then the
/// caller's context and the number of real outputs; tari then appends its
/// generators, bit-length, aggregation factor and the commitments.
fn range_transcript(context: &Hash32, outputs: usize) -> Transcript {
    let mut t = Transcript::new(b"tally/v1/range-proof");
    t.append_message(b"context", &context.0);
    t.append_u64(b"outputs", outputs as u64);
    t
}

/// A Bulletproofs+ range proof over the outputs of one transfer,
/// aggregated: each committed value is in `[0, 2^bits)`.
#[derive(Clone, PartialEq)]
pub struct RangeProof {
    bits: RangeBits,
    outputs: u8,
    proof: RistrettoRangeProof,
}

impl Eq for RangeProof {}

impl fmt::Debug for RangeProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RangeProof({} bits × {})",
            self.bits.bits(),
            self.outputs
        )
    }
}

/// One range proof to check: the proof, the commitments of the outputs it
/// covers (in order) and the context of its transfer.
pub struct RangeCheck<'a> {
    pub proof: &'a RangeProof,
    pub commitments: &'a [Commitment],
    pub context: &'a Hash32,
}

impl RangeProof {
    /// Proves that every opening's value is below `2^bits` for the
    /// commitments `openings[i].commit()`, bound to `context`.
    pub fn prove(
        gens: &RangeGens,
        context: &Hash32,
        openings: &[Opening],
        rng: &mut dyn Entropy,
    ) -> Result<RangeProof, ConfidentialError> {
        let n = openings.len();
        if n == 0 || n > RANGE_OUTPUTS_MAX {
            return Err(ConfidentialError::OutputCount);
        }
        if openings.iter().any(|o| !gens.bits.holds(o.value)) {
            return Err(ConfidentialError::OutOfRange);
        }
        let m = n.next_power_of_two();
        let commitments: Vec<RistrettoPoint> = openings.iter().map(|o| o.commit().point).collect();
        let statement = gens.statement_with(&gens.prove_params, &commitments)?;
        let mut witness_openings = Vec::with_capacity(m);
        for o in openings {
            witness_openings.push(CommitmentOpening::new(o.value.0, vec![o.blinding]));
        }
        witness_openings.resize_with(m, || CommitmentOpening::new(0, vec![Scalar::ZERO]));
        let witness =
            RangeWitness::init(witness_openings).map_err(|_| ConfidentialError::ProverFailed)?;
        let mut transcript = range_transcript(context, n);
        let proof = RistrettoRangeProof::prove_with_rng(
            &mut transcript,
            &statement,
            &witness,
            &mut EntropyRng(rng),
        )
        .map_err(|_| ConfidentialError::ProverFailed)?;
        Ok(RangeProof {
            bits: gens.bits,
            outputs: n as u8,
            proof,
        })
    }

    pub fn bits(&self) -> RangeBits {
        self.bits
    }
    pub fn outputs(&self) -> usize {
        usize::from(self.outputs)
    }

    /// Verifies this proof for `commitments` under `context` with `gens`
    /// (whose bit-length is the one the verifier requires).
    pub fn verify(
        &self,
        gens: &RangeGens,
        context: &Hash32,
        commitments: &[Commitment],
    ) -> Result<(), ConfidentialError> {
        batch_verify(
            gens,
            &[RangeCheck {
                proof: self,
                commitments,
                context,
            }],
        )
        .map_err(|(_, e)| e)
    }
}

/// Verifies many range proofs of `gens`' bit-length together (one
/// multiscalar multiplication with random weights, tari's batch
/// verifier). On failure, returns the index of the first refused check,
/// found by checking singly; which proofs are accepted does not depend on
/// how they are batched.
pub fn batch_verify(
    gens: &RangeGens,
    checks: &[RangeCheck<'_>],
) -> Result<(), (usize, ConfidentialError)> {
    if checks.is_empty() {
        return Ok(());
    }
    let mut transcripts = Vec::with_capacity(checks.len());
    let mut statements = Vec::with_capacity(checks.len());
    let mut proofs = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        if c.proof.bits != gens.bits {
            return Err((i, ConfidentialError::RangeBitsMismatch));
        }
        let n = c.commitments.len();
        if n != c.proof.outputs() || n == 0 || n > RANGE_OUTPUTS_MAX {
            return Err((i, ConfidentialError::OutputCount));
        }
        let points: Vec<RistrettoPoint> = c.commitments.iter().map(|k| k.point).collect();
        statements.push(gens.statement(&points).map_err(|e| (i, e))?);
        transcripts.push(range_transcript(c.context, n));
        proofs.push(c.proof.proof.clone());
    }
    let batch = RistrettoRangeProof::verify_batch(
        &mut transcripts,
        &statements,
        &proofs,
        VerifyAction::VerifyOnly,
    );
    if batch.is_ok() {
        return Ok(());
    }
    if checks.len() > 1 {
        for (i, c) in checks.iter().enumerate() {
            batch_verify(gens, core::slice::from_ref(c)).map_err(|(_, e)| (i, e))?;
        }
    }
    // Refused as a batch (or a single proof refused): the first check.
    Err((0, ConfidentialError::RangeProofInvalid))
}

impl Cbor for RangeProof {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        w.u64(u64::from(VERSION));
        w.u64(self.bits as u64);
        w.u64(u64::from(self.outputs));
        w.bytes(&self.proof.to_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        r.version(VERSION)?;
        let bits = RangeBits::from_code(r.u8()?).map_err(|_| CodecError::UnknownCode)?;
        let outputs = r.u8()?;
        if outputs == 0 || usize::from(outputs) > RANGE_OUTPUTS_MAX {
            return Err(CodecError::Malformed);
        }
        let bytes = r.bytes_max(RANGE_PROOF_BYTES_MAX)?;
        // The length is fixed by bits and outputs: anything else is not a
        // proof of this statement shape (and tari would infer another).
        if bytes.len() != range_proof_len(bits.bits(), usize::from(outputs)) {
            return Err(CodecError::Malformed);
        }
        let proof = RistrettoRangeProof::from_bytes(bytes).map_err(|_| CodecError::Malformed)?;
        if proof.extension_degree() != ExtensionDegree::DefaultPedersen {
            return Err(CodecError::Malformed);
        }
        Ok(RangeProof {
            bits,
            outputs,
            proof,
        })
    }
}

// ---------------------------------------------------------------------------
// Conservation of value: the commitments balance (decision 0029)

/// `E = Σ C_in − Σ C_out`. The payer chooses the output blindings so that
/// they sum to the inputs' ([`balanced_openings`]); then `E` is the
/// identity exactly when the values balance.
pub fn excess(inputs: &[Commitment], outputs: &[Commitment]) -> RistrettoPoint {
    let mut e = RistrettoPoint::identity();
    for c in inputs {
        e += c.point;
    }
    for c in outputs {
        e -= c.point;
    }
    e
}

fn check_counts(inputs: usize, outputs: usize) -> Result<(), ConfidentialError> {
    if inputs == 0 || inputs > BALANCE_INPUTS_MAX || outputs == 0 || outputs > RANGE_OUTPUTS_MAX {
        return Err(ConfidentialError::OutputCount);
    }
    Ok(())
}

/// Rule C4: a transfer's output commitments sum to its inputs'
/// (`Σ C_in = Σ C_out` as group elements).
///
/// Why this is conservation: the range proof is an argument of knowledge
/// of every output's opening, and the payer SE knows its inputs'. If the
/// sums are equal while the values differ, whoever knows all openings
/// knows `log_H(B)`, which nobody does. With the range proofs (no output
/// wraps around ℓ) the outputs carry exactly the inputs' total. It
/// replaces the Schnorr signature by the excess under `H` of decision
/// 0017, which proved the same thing for a non-zero excess at 64 bytes
/// and two scalar multiplications per transfer: the owner's signature
/// already authorises the transfer, so nothing needs the excess's
/// freedom (decision 0029).
pub fn check_balance(
    inputs: &[Commitment],
    outputs: &[Commitment],
) -> Result<(), ConfidentialError> {
    check_counts(inputs.len(), outputs.len())?;
    if excess(inputs, outputs).is_identity() {
        Ok(())
    } else {
        Err(ConfidentialError::CommitmentsUnbalanced)
    }
}

/// The payer's side of C4: fresh openings of `values` whose blindings sum
/// to the inputs' (`Σ r_out = Σ r_in`). Every blinding but the last is
/// uniformly random; the last is what balances, itself uniform to anyone
/// who does not know every input's blinding. Refuses unless the values
/// balance (the money invariant, checked before anything is committed)
/// and the counts fit. Output 0's opening is the payee's and random: the
/// payee learns nothing of the inputs' blindings from it.
pub fn balanced_openings(
    inputs: &[Opening],
    values: &[Amount],
    rng: &mut dyn Entropy,
) -> Result<Vec<Opening>, ConfidentialError> {
    balanced_openings_with(inputs, values, None, rng)
}

/// [`balanced_openings`] with output 0's blinding given (`first`: the one
/// a [`DerivedOpening`] derives for the payee); it then needs a second
/// output to balance, and refuses with [`ConfidentialError::OutputCount`]
/// otherwise. With `first` given and two outputs the change's blinding is
/// fixed too; in the 2^-252 case that it is zero the call fails
/// ([`ConfidentialError::WrongOpening`]) and the payer derives again.
pub fn balanced_openings_with(
    inputs: &[Opening],
    values: &[Amount],
    first: Option<&Scalar>,
    rng: &mut dyn Entropy,
) -> Result<Vec<Opening>, ConfidentialError> {
    check_counts(inputs.len(), values.len())?;
    let total_in = Amount::sum(inputs.iter().map(|o| o.value));
    let total_out = Amount::sum(values.iter().copied());
    match (total_in, total_out) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(ConfidentialError::Unbalanced),
    }
    if first.is_some() && values.len() < 2 {
        return Err(ConfidentialError::OutputCount);
    }
    let mut r_in = Zeroizing::new(Scalar::ZERO);
    for o in inputs {
        *r_in += o.blinding;
    }
    let (last, others) = values.split_last().ok_or(ConfidentialError::OutputCount)?;
    loop {
        let mut out: Vec<Opening> = Vec::with_capacity(values.len());
        for (i, v) in others.iter().enumerate() {
            out.push(match (i, first) {
                (0, Some(r)) => Opening::from_parts(*v, *r)?,
                _ => Opening::random(*v, rng),
            });
        }
        let mut rest = Zeroizing::new(*r_in);
        for o in &out {
            *rest -= o.blinding;
        }
        // A zero blinding is never an opening (`from_parts`). Drawn again
        // while some blinding is random (probability 2^-252).
        if let Ok(o) = Opening::from_parts(*last, *rest) {
            out.push(o);
            return Ok(out);
        }
        let random = others.len() - usize::from(first.is_some());
        if random == 0 {
            return Err(ConfidentialError::WrongOpening);
        }
    }
}

// ---------------------------------------------------------------------------
// Openings sealed to the payee

/// An output's opening sealed to its owner: HPKE (RFC 9180) base mode,
/// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 — the suite
/// of [`crate::sealed`] — to the X25519 form of the payee's Ed25519 key
/// (the birational map of libsodium's `crypto_sign_ed25519_pk_to_curve25519`;
/// the secret side is `crypto_sign_ed25519_sk_to_curve25519`: the first 32
/// bytes of SHA-512 of the seed, clamped, which the SE derives from the
/// seed it keeps).
///
/// ```text
/// info = "tally/v1/opening"
/// aad  = H("tally/v1/opening-aad", context ‖ commitment ‖ payee Ed25519 key)
/// pt   = v (u64 big endian) ‖ r (32 bytes)         40 bytes, fixed
/// wire = [1, enc : bstr 32, ct : bstr 56]
/// ```
///
/// The aad binds the commitment and the transfer: an opening moved to
/// another output or replayed into another transfer does not open.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedOpening {
    enc: [u8; 32],
    ct: [u8; SEALED_OPENING_CT_BYTES],
}

impl fmt::Debug for SealedOpening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedOpening(…)")
    }
}

const OPENING_INFO: &[u8] = b"tally/v1/opening";

fn opening_aad(context: &Hash32, commitment: &Commitment, payee: &[u8]) -> Hash32 {
    tagged_hash(
        b"tally/v1/opening-aad",
        &[&context.0, commitment.as_bytes(), payee],
    )
}

/// The payee's X25519 public key: its Ed25519 key mapped to Montgomery
/// form. Refuses other suites and keys that are not valid points of large
/// order (a small-order key would make every sealed opening readable).
fn payee_x25519(payee: &PublicKey) -> Result<[u8; 32], ConfidentialError> {
    if payee.suite() != Suite::Ed25519 {
        return Err(ConfidentialError::UnsupportedKey);
    }
    crate::crypto::check_key(payee).map_err(|_| ConfidentialError::UnsupportedKey)?;
    let mut kb = [0u8; 32];
    kb.copy_from_slice(payee.key_bytes());
    let point = CompressedEdwardsY(kb)
        .decompress()
        .ok_or(ConfidentialError::UnsupportedKey)?;
    Ok(point.to_montgomery().to_bytes())
}

/// The X25519 secret of a payee's Ed25519 key (libsodium's
/// `crypto_sign_ed25519_sk_to_curve25519`): HPKE's DeserializePrivateKey
/// clamps the first half of SHA-512 of the seed.
fn payee_x25519_secret(
    payee: &SecretKey,
) -> Result<<X25519HkdfSha256 as hpke::Kem>::PrivateKey, ConfidentialError> {
    if payee.suite() != Suite::Ed25519 {
        return Err(ConfidentialError::UnsupportedKey);
    }
    let seed = Zeroizing::new(payee.seed());
    let mut wide: Zeroizing<[u8; 64]> = Zeroizing::new(Sha512::digest(&seed[..]).into());
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&wide[..32])
        .map_err(|_| ConfidentialError::UnsupportedKey);
    wide.zeroize();
    sk
}

impl SealedOpening {
    /// Seals `opening` (which must open `commitment`) to `payee` for the
    /// transfer `context`. Fresh ephemeral key per call.
    pub fn seal(
        payee: &PublicKey,
        context: &Hash32,
        commitment: &Commitment,
        opening: &Opening,
        rng: &mut dyn Entropy,
    ) -> Result<SealedOpening, ConfidentialError> {
        if !opening.opens(commitment) {
            return Err(ConfidentialError::WrongOpening);
        }
        Self::seal_made(payee, context, commitment, opening, rng)
    }

    /// [`SealedOpening::seal`] without its check that `opening` opens
    /// `commitment`, for a caller that has just computed `commitment` from
    /// `opening` (the payer's and the issuer's builders): the check would
    /// recompute the same commitment (two scalar multiplications).
    pub(crate) fn seal_made(
        payee: &PublicKey,
        context: &Hash32,
        commitment: &Commitment,
        opening: &Opening,
        rng: &mut dyn Entropy,
    ) -> Result<SealedOpening, ConfidentialError> {
        let x = payee_x25519(payee)?;
        let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&x)
            .map_err(|_| ConfidentialError::UnsupportedKey)?;
        let aad = opening_aad(context, commitment, payee.key_bytes());
        let pt = opening.to_plaintext();
        let (enc, ct) =
            hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &pk,
                OPENING_INFO,
                &pt[..],
                &aad.0,
                &mut EntropyRng(rng),
            )
            .map_err(|_| ConfidentialError::UnsupportedKey)?;
        let mut e = [0u8; 32];
        e.copy_from_slice(&enc.to_bytes());
        let ct: [u8; SEALED_OPENING_CT_BYTES] = ct
            .as_slice()
            .try_into()
            .map_err(|_| ConfidentialError::ProverFailed)?;
        Ok(SealedOpening { enc: e, ct })
    }

    /// Opens with the payee's own key and checks the opening against
    /// `commitment`: what a payee SE does before it accepts an output.
    pub fn open(
        &self,
        payee: &SecretKey,
        context: &Hash32,
        commitment: &Commitment,
    ) -> Result<Opening, ConfidentialError> {
        let sk = payee_x25519_secret(payee)?;
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&self.enc)
            .map_err(|_| ConfidentialError::OpeningUnreadable)?;
        let public = payee.public();
        let aad = opening_aad(context, commitment, public.key_bytes());
        let pt = Zeroizing::new(
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &sk,
                &enc,
                OPENING_INFO,
                &self.ct,
                &aad.0,
            )
            .map_err(|_| ConfidentialError::OpeningUnreadable)?,
        );
        let opening = Opening::from_plaintext(&pt)?;
        if !opening.opens(commitment) {
            return Err(ConfidentialError::WrongOpening);
        }
        Ok(opening)
    }
}

impl Cbor for SealedOpening {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(u64::from(VERSION));
        w.bytes(&self.enc);
        w.bytes(&self.ct);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        SealedOpening::read_fields(r)
    }
}

impl SealedOpening {
    /// The fields after the array header (shared with [`PayeeOpening`]).
    fn read_fields(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.version(VERSION)?;
        Ok(SealedOpening {
            enc: r.bytes_array()?,
            ct: r.bytes_array()?,
        })
    }
}

// ---------------------------------------------------------------------------
// The payee's blinding derived, not sealed (decision 0029, "Session 14")

const DERIVED_INFO: &[u8] = b"tally/v1/opening-blinding";
const DERIVED_EXPORT: &[u8] = b"blinding";
/// Version of a [`DerivedOpening`] on the wire (a [`SealedOpening`] is 1).
const DERIVED_VERSION: u8 = 2;

/// The payee's output opening when the payee needs no value sent: its
/// blinding derived from a fresh HPKE encapsulation to its key, its value
/// the amount the payee asked for in its Request. Only the encapsulated
/// key travels (36 bytes on the wire against 94 for a [`SealedOpening`]).
///
/// ```text
/// HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AEAD Export-only (0xFFFF),
///   to the payee's key as for SealedOpening
/// info = "tally/v1/opening-blinding"
/// r    = Export("blinding", 64 bytes), reduced mod ℓ (wide); never zero
/// wire = [2, enc : bstr 32]
/// payee: accepts iff amount·B + r·H = C₀ (amount: its Request's)
/// ```
///
/// The payer derives `r` first and balances the other outputs' blindings
/// against it ([`balanced_openings_with`]); so it needs a second output
/// (one output spending one input has the input's blinding, which only a
/// [`SealedOpening`] can carry). Nobody without the payee's key or the
/// payer's ephemeral secret learns `r`. A derivation for another key,
/// another transfer or another amount gives a point other than `C₀`: the
/// payee refuses it ([`ConfidentialError::WrongOpening`]); the commitment
/// check is the authentication, as the AEAD tag is for a sealed opening.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DerivedOpening {
    enc: [u8; 32],
}

impl fmt::Debug for DerivedOpening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedOpening(…)")
    }
}

fn derived_blinding(
    ctx_export: impl FnOnce(&mut [u8]) -> Result<(), hpke::HpkeError>,
) -> Result<Scalar, ConfidentialError> {
    let mut wide = Zeroizing::new([0u8; 64]);
    ctx_export(&mut wide[..]).map_err(|_| ConfidentialError::OpeningUnreadable)?;
    Ok(Scalar::from_bytes_mod_order_wide(&wide))
}

impl DerivedOpening {
    /// Payer: a fresh encapsulation to `payee` and the non-zero blinding
    /// it derives, which output 0 must carry.
    pub fn derive(
        payee: &PublicKey,
        rng: &mut dyn Entropy,
    ) -> Result<(DerivedOpening, Zeroizing<Scalar>), ConfidentialError> {
        let x = payee_x25519(payee)?;
        let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&x)
            .map_err(|_| ConfidentialError::UnsupportedKey)?;
        loop {
            let (enc, ctx) = hpke::setup_sender_with_rng::<
                ExportOnlyAead,
                HkdfSha256,
                X25519HkdfSha256,
            >(&OpModeS::Base, &pk, DERIVED_INFO, &mut EntropyRng(rng))
            .map_err(|_| ConfidentialError::UnsupportedKey)?;
            let r = Zeroizing::new(derived_blinding(|out| ctx.export(DERIVED_EXPORT, out))?);
            // A zero blinding is never an opening (probability 2^-252).
            if *r != Scalar::ZERO {
                let mut e = [0u8; 32];
                e.copy_from_slice(&enc.to_bytes());
                return Ok((DerivedOpening { enc: e }, r));
            }
        }
    }

    /// Payee: derives the blinding with its own key and accepts the
    /// opening `(amount, r)` only if it opens `commitment`.
    pub fn open(
        &self,
        payee: &SecretKey,
        commitment: &Commitment,
        amount: Amount,
    ) -> Result<Opening, ConfidentialError> {
        let sk = payee_x25519_secret(payee)?;
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&self.enc)
            .map_err(|_| ConfidentialError::OpeningUnreadable)?;
        let ctx = hpke::setup_receiver::<ExportOnlyAead, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            DERIVED_INFO,
        )
        .map_err(|_| ConfidentialError::OpeningUnreadable)?;
        let r = Zeroizing::new(derived_blinding(|out| ctx.export(DERIVED_EXPORT, out))?);
        let opening = Opening::from_parts(amount, *r)?;
        if !opening.opens(commitment) {
            return Err(ConfidentialError::WrongOpening);
        }
        Ok(opening)
    }
}

impl Cbor for DerivedOpening {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        w.u64(u64::from(DERIVED_VERSION));
        w.bytes(&self.enc);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        DerivedOpening::read_fields(r)
    }
}

impl DerivedOpening {
    /// The fields after the array header (shared with [`PayeeOpening`]).
    fn read_fields(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.version(DERIVED_VERSION)?;
        Ok(DerivedOpening {
            enc: r.bytes_array()?,
        })
    }
}

/// How a transfer's output 0 reaches its payee: sealed (value and
/// blinding, `[1, enc, ct]`; a one-output transfer, whose blinding is its
/// inputs') or derived (`[2, enc]`; every transfer with change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayeeOpening {
    Sealed(SealedOpening),
    Derived(DerivedOpening),
}

impl PayeeOpening {
    /// Payee: its opening of `commitment`, for a payment of `amount`. A
    /// sealed opening carries its own value (the caller compares it with
    /// `amount`); a derived one is checked with `amount` itself.
    pub fn open(
        &self,
        payee: &SecretKey,
        context: &Hash32,
        commitment: &Commitment,
        amount: Amount,
    ) -> Result<Opening, ConfidentialError> {
        match self {
            PayeeOpening::Sealed(s) => s.open(payee, context, commitment),
            PayeeOpening::Derived(d) => d.open(payee, commitment, amount),
        }
    }
}

impl Cbor for PayeeOpening {
    fn write(&self, w: &mut Writer) {
        match self {
            PayeeOpening::Sealed(s) => s.write(w),
            PayeeOpening::Derived(d) => d.write(w),
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        // The array's length says which: 3 sealed, 2 derived.
        match r.array_max(3)? {
            3 => SealedOpening::read_fields(r).map(PayeeOpening::Sealed),
            2 => DerivedOpening::read_fields(r).map(PayeeOpening::Derived),
            _ => Err(CodecError::Malformed),
        }
    }
}

// ---------------------------------------------------------------------------
// The audit seal: every output's opening, sealed to settlement

/// Longest audit-seal ciphertext: [`RANGE_OUTPUTS_MAX`] openings and the tag.
pub const SEALED_OPENINGS_CT_BYTES_MAX: usize = RANGE_OUTPUTS_MAX * OPENING_PLAINTEXT_BYTES + 16;

const AUDIT_INFO: &[u8] = b"tally/v1/audit-openings";

fn audit_aad(context: &Hash32, audit_key: &[u8; 32], commitments: &[Commitment]) -> Hash32 {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + commitments.len());
    parts.push(&context.0);
    parts.push(audit_key);
    for c in commitments {
        parts.push(c.as_bytes());
    }
    tagged_hash(b"tally/v1/audit-aad", &parts)
}

/// The audit seal of a confidential record (SPEC §4.9.3): the openings of
/// all its outputs, in order, sealed (HPKE, the suite of
/// [`SealedOpening`]) to settlement's X25519 key, which the signed policy
/// carries. The payer SE seals it in PAY (it made every opening), the DCP
/// for an Issue. Nobody on the way can read it; settlement opens it and
/// checks every opening against its commitment (rule C7), which is how it
/// learns the amount of every record, a cloned SE's double spend included.
///
/// ```text
/// info = "tally/v1/audit-openings"
/// aad  = H("tally/v1/audit-aad", context ‖ audit key ‖ commitment_0 ‖ … ‖ commitment_n-1)
/// pt   = (v u64 big endian ‖ r 32 bytes) × n       40·n bytes
/// wire = [1, enc : bstr 32, ct : bstr 40·n + 16]
/// ```
///
/// Its `info` and aad differ from the payee's [`SealedOpening`], so
/// neither can stand for the other; the aad binds the record (context) and
/// every commitment in order, so a seal lifted from another record, or
/// with its record's outputs reordered, does not open.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedOpenings {
    enc: [u8; 32],
    ct: Vec<u8>,
}

impl fmt::Debug for SealedOpenings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedOpenings({} bytes)", self.ct.len())
    }
}

impl SealedOpenings {
    /// Seals `openings` (which must open `commitments`, in order) to the
    /// policy's audit key for the record `context`.
    pub fn seal(
        audit_key: &[u8; 32],
        context: &Hash32,
        commitments: &[Commitment],
        openings: &[Opening],
        rng: &mut dyn Entropy,
    ) -> Result<SealedOpenings, ConfidentialError> {
        if commitments.len() != openings.len() {
            return Err(ConfidentialError::OutputCount);
        }
        // One opening at a time (not `opens_all`): this runs on the SE,
        // where the batched check's code costs more flash than it saves
        // instructions.
        if commitments.iter().zip(openings).any(|(c, o)| !o.opens(c)) {
            return Err(ConfidentialError::WrongOpening);
        }
        Self::seal_made(audit_key, context, commitments, openings, rng)
    }

    /// [`SealedOpenings::seal`] without its check that the openings open
    /// the commitments, for a caller that has just computed `commitments`
    /// from `openings` (the payer's and the issuer's builders).
    pub(crate) fn seal_made(
        audit_key: &[u8; 32],
        context: &Hash32,
        commitments: &[Commitment],
        openings: &[Opening],
        rng: &mut dyn Entropy,
    ) -> Result<SealedOpenings, ConfidentialError> {
        if openings.is_empty() || openings.len() > RANGE_OUTPUTS_MAX {
            return Err(ConfidentialError::OutputCount);
        }
        let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(audit_key)
            .map_err(|_| ConfidentialError::UnsupportedKey)?;
        let aad = audit_aad(context, audit_key, commitments);
        let mut pt = Zeroizing::new(Vec::with_capacity(openings.len() * OPENING_PLAINTEXT_BYTES));
        for o in openings {
            pt.extend_from_slice(&o.to_plaintext()[..]);
        }
        let (enc, ct) =
            hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &pk,
                AUDIT_INFO,
                &pt[..],
                &aad.0,
                &mut EntropyRng(rng),
            )
            .map_err(|_| ConfidentialError::UnsupportedKey)?;
        let mut e = [0u8; 32];
        e.copy_from_slice(&enc.to_bytes());
        Ok(SealedOpenings { enc: e, ct })
    }

    /// How many openings the seal holds (from its length): what a payee
    /// checks against the record's outputs without being able to open it.
    pub fn openings(&self) -> usize {
        self.ct.len().saturating_sub(16) / OPENING_PLAINTEXT_BYTES
    }

    /// Whether the seal is well formed for `outputs` outputs: its
    /// ciphertext has exactly the length of that many openings.
    pub fn fits(&self, outputs: usize) -> bool {
        (1..=RANGE_OUTPUTS_MAX).contains(&outputs)
            && self.ct.len() == outputs * OPENING_PLAINTEXT_BYTES + 16
    }

    /// Settlement: opens the seal with its sealing key and checks every
    /// opening against its commitment, in order (rule C7). Returns the
    /// openings (their values are what settlement books).
    #[cfg(feature = "sealing")]
    pub fn open(
        &self,
        key: &crate::sealed::OpeningKey,
        context: &Hash32,
        commitments: &[Commitment],
    ) -> Result<Vec<Opening>, ConfidentialError> {
        let openings = self.open_unchecked(key, context, commitments)?;
        if !opens_all(&openings, commitments) {
            return Err(ConfidentialError::WrongOpening);
        }
        Ok(openings)
    }

    /// [`SealedOpenings::open`] without checking the openings against the
    /// commitments: the caller checks them, with others, in one
    /// [`opens_all`] (settlement's C7 over a whole package).
    #[cfg(feature = "sealing")]
    pub(crate) fn open_unchecked(
        &self,
        key: &crate::sealed::OpeningKey,
        context: &Hash32,
        commitments: &[Commitment],
    ) -> Result<Vec<Opening>, ConfidentialError> {
        if !self.fits(commitments.len()) {
            return Err(ConfidentialError::OutputCount);
        }
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&self.enc)
            .map_err(|_| ConfidentialError::OpeningUnreadable)?;
        let aad = audit_aad(context, &key.public(), commitments);
        let pt = Zeroizing::new(
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                key.hpke_secret(),
                &enc,
                AUDIT_INFO,
                &self.ct,
                &aad.0,
            )
            .map_err(|_| ConfidentialError::OpeningUnreadable)?,
        );
        let openings = pt
            .chunks(OPENING_PLAINTEXT_BYTES)
            .map(Opening::from_plaintext)
            .collect::<Result<Vec<Opening>, ConfidentialError>>()?;
        if openings.len() != commitments.len() {
            return Err(ConfidentialError::OutputCount);
        }
        Ok(openings)
    }
}

/// Whether every opening opens its commitment (`oᵢ` opens `Cᵢ`), in one
/// multiscalar multiplication: `Σ wᵢ·Cᵢ = (Σ wᵢ·vᵢ)·B + (Σ wᵢ·rᵢ)·H`,
/// with weights `wᵢ` hashed from every commitment and opening of the call
/// (SHA-512, reduced; `w₀ = 1`); the left side in variable time (public
/// points, weights that are hash outputs), the right side, whose scalars
/// are secret, in constant time. If some `Cᵢ` is not
/// `vᵢ·B + rᵢ·H`, the sum is the identity only if the weights cancel the
/// differences, which whoever chose the openings cannot arrange without
/// predicting the hash: probability about 2⁻²⁵² per try. Settlement's C7
/// (decision 0028); the same answer as checking each with
/// [`Opening::opens`], at about the cost of one.
pub fn opens_all(openings: &[Opening], commitments: &[Commitment]) -> bool {
    if openings.len() != commitments.len() {
        return false;
    }
    let mut h = Sha512::new();
    h.update(b"tally/v1/opens-all");
    for (o, c) in openings.iter().zip(commitments) {
        h.update(c.to_bytes());
        h.update(&o.to_plaintext()[..]);
    }
    let seed = Zeroizing::new(<[u8; 64]>::from(h.finalize()));
    let weights: Vec<Scalar> = (0..openings.len())
        .map(|i| {
            if i == 0 {
                return Scalar::ONE;
            }
            let mut wide = Zeroizing::new([0u8; 64]);
            let mut h = Sha512::new();
            h.update(&seed[..]);
            h.update((i as u64).to_be_bytes());
            wide.copy_from_slice(&h.finalize());
            Scalar::from_bytes_mod_order_wide(&wide)
        })
        .collect();
    let mut v = Zeroizing::new(Scalar::ZERO);
    let mut r = Zeroizing::new(Scalar::ZERO);
    for (o, w) in openings.iter().zip(&weights) {
        *v += w * Scalar::from(o.value.0);
        *r += w * o.blinding;
    }
    // The weighted commitments in variable time: the weights are hash
    // outputs, which say nothing of the openings they were hashed from.
    // The weighted sums of values and blindings are secret: constant time.
    let committed = RistrettoPoint::vartime_multiscalar_mul(
        &weights,
        commitments.iter().map(Commitment::point),
    );
    let opened = RistrettoPoint::multiscalar_mul([*v, *r], [value_base(), blinding_base()]);
    committed == opened
}

impl SealedOpenings {
    /// What a confidential record's signatures sign, given its `id`
    /// (SPEC §3.2, decision 0034): `TH("tally/v1/confidential-signed",
    /// [id, enc, ct])`, the id bound to the record's audit seal. The seal
    /// is outside the body (bound to it through the context) and only
    /// settlement can open it, so a payee cannot check it: without a
    /// signature over it, anyone relaying a package could alter the seal
    /// unseen, the payee would accept the payment and settlement refuse
    /// it for good. A record without its seal (refused by C8 anyway)
    /// signs its id.
    pub fn signed_message(id: &Hash32, audit: Option<&SealedOpenings>) -> Hash32 {
        match audit {
            Some(a) => tagged_hash(b"tally/v1/confidential-signed", &[&id.0, &a.enc, &a.ct]),
            None => *id,
        }
    }
}

impl Cbor for SealedOpenings {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(u64::from(VERSION));
        w.bytes(&self.enc);
        w.bytes(&self.ct);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        r.version(VERSION)?;
        let enc = r.bytes_array()?;
        // The length is checked against the record's outputs by the
        // verifier (C8), so a wrong count has its own code.
        let ct = r.bytes_max(SEALED_OPENINGS_CT_BYTES_MAX)?.to_vec();
        Ok(SealedOpenings { enc, ct })
    }
}

#[cfg(any(test, feature = "testkit"))]
impl SealedOpenings {
    /// Seals whatever openings it is given, even ones that do not open
    /// `commitments`: a hostile payer, for tests of settlement's C7.
    pub fn seal_unchecked(
        audit_key: &[u8; 32],
        context: &Hash32,
        commitments: &[Commitment],
        openings: &[Opening],
        rng: &mut dyn Entropy,
    ) -> Result<SealedOpenings, ConfidentialError> {
        Self::seal_made(audit_key, context, commitments, openings, rng)
    }
    /// A seal of `n` openings' length whose bytes open for no key.
    pub fn garbage(n: usize) -> SealedOpenings {
        SealedOpenings {
            enc: [9; 32],
            ct: vec![7; n * OPENING_PLAINTEXT_BYTES + 16],
        }
    }
}

#[cfg(any(test, feature = "testkit"))]
impl SealedOpening {
    /// Seals whatever opening it is given, even one that does not open
    /// `commitment`: a lying payer, for tests of the payee's check.
    pub fn seal_unchecked(
        payee: &PublicKey,
        context: &Hash32,
        commitment: &Commitment,
        opening: &Opening,
        rng: &mut dyn Entropy,
    ) -> Result<SealedOpening, ConfidentialError> {
        Self::seal_made(payee, context, commitment, opening, rng)
    }
}

/// The `confidential_objects` fuzz target's checks (fuzz/fuzz_targets/),
/// here so that the corpus replay in tests/confidential.rs runs exactly
/// what the fuzzer runs, on the stable toolchain.
#[cfg(any(test, feature = "testkit"))]
pub mod fuzzing {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;
    use crate::testkit::{self, TestEntropy};

    /// A confidential one-hop package (SPEC §4.9) and what its payee
    /// verifies it with.
    pub struct PackageFixture {
        pub trust: crate::verify::TrustStore,
        pub payee: SecretKey,
        pub expected: crate::verify::Expected,
        pub params: crate::verify::VerifyParams,
        pub package: crate::protocol::Package,
        /// The Issue as loaded (with its sealed opening).
        pub issue: crate::record::Issue,
    }

    /// What PAY spends and makes for `payment` from `payer`'s confidential
    /// Issue of 1000 (its output 0) to `payee`: the input with its
    /// opening, and the payment's output then the change's (none when the
    /// whole Issue is paid). The fixture's, its vectors' and the benches'.
    pub fn payment_of(
        issue: &crate::record::Issue,
        payer: &SecretKey,
        payee: &PublicKey,
        payment: u64,
    ) -> (
        (crate::record::OutPoint, PublicKey, Opening),
        Vec<crate::confidential_record::NewOutput>,
    ) {
        use crate::confidential_record::NewOutput;
        let opening = issue
            .open_output(0, payer)
            .unwrap_or_else(|e| panic!("fixture issue opening: {e}"));
        let input = (
            crate::record::OutPoint {
                record: issue.id(),
                index: 0,
            },
            payer.public(),
            opening,
        );
        let mut outputs = vec![NewOutput {
            owner: *payee,
            value: Amount(payment),
        }];
        if payment < 1000 {
            outputs.push(NewOutput {
                owner: payer.public(),
                value: Amount(1000 - payment),
            });
        }
        (input, outputs)
    }

    impl PackageFixture {
        /// A payment of 250 from an Issue of 1000, with change (SPEC
        /// §4.9.5's vectors).
        pub fn new() -> PackageFixture {
            Self::paying(250)
        }
        /// The whole Issue of 1000 paid: one output, no range proof
        /// (decision 0031; SPEC §4.9.5's `whole-` vectors).
        pub fn whole() -> PackageFixture {
            Self::paying(1000)
        }
        fn paying(payment: u64) -> PackageFixture {
            use crate::confidential_record::build_transfer;
            use crate::record::Record;
            let mut rng = TestEntropy::new(b"confidential-package-fixture");
            let mut scheme = testkit::Scheme::confidential(Suite::Ed25519);
            let trust = scheme.trust();
            let payer = testkit::key(Suite::Ed25519, b"fixture-payer");
            let payee = testkit::key(Suite::Ed25519, b"payee");
            let issue = scheme.issue(payer.public(), 1000);
            let (input, outputs) = payment_of(&issue, &payer, &payee.public(), payment);
            let nonce = *b"fixture-nonce-01";
            let gens = match trust.range_gens() {
                Some(g) => g,
                None => panic!("a confidential policy has generators"),
            };
            let p2 = payer.clone();
            let key_for = move |k: &PublicKey| (*k == p2.public()).then(|| p2.clone());
            let built = build_transfer(
                gens,
                &testkit::Scheme::audit_key(),
                &[input],
                &outputs,
                nonce,
                1,
                &key_for,
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("fixture transfer: {e}"));
            let package = crate::protocol::Package {
                transfer: built.transfer,
                ancestry: vec![Record::Issue(issue.clone()).for_ancestry()],
                certificates: vec![scheme.certify(
                    payer.public(),
                    crate::policy::device_class::PHONE,
                    0,
                )],
            };
            PackageFixture {
                params: scheme.params(32),
                trust,
                expected: crate::verify::Expected {
                    payee: payee.public(),
                    amount: Amount(payment),
                    nonce,
                    stream: None,
                },
                payee,
                package,
                issue,
            }
        }

        /// The payee's verification of `pkg`.
        pub fn verify(
            &self,
            pkg: crate::protocol::Package,
        ) -> Result<crate::verify::VerifiedPackage, crate::verify::VerifyError> {
            crate::verify::verify_package_as_payee(
                pkg,
                &self.expected,
                &self.payee,
                &self.trust,
                self.params,
                &mut crate::verify::NoCache,
            )
        }
    }

    impl Default for PackageFixture {
        fn default() -> Self {
            Self::new()
        }
    }

    /// One honest confidential transfer (1000 in; 250 to the payee, 750
    /// change) with every object the decoders and verifiers take.
    pub struct ConfidentialFixture {
        pub gens: RangeGens,
        /// The same generators as a device holds them (decision 0027):
        /// constants, chunked multiscalar multiplications (3 points at a
        /// time, so a proof's sums cross chunk boundaries).
        pub low_gens: RangeGens,
        pub context: Hash32,
        pub inputs: Vec<Commitment>,
        pub outputs: Vec<Commitment>,
        pub output_openings: Vec<Opening>,
        pub proof: RangeProof,
        pub payee: SecretKey,
        pub sealed: SealedOpening,
        pub package: PackageFixture,
    }

    impl ConfidentialFixture {
        pub fn new() -> ConfidentialFixture {
            let mut rng = TestEntropy::new(b"confidential-fixture");
            let gens = match RangeGens::new(RangeBits::Bits16, 2) {
                Ok(g) => g,
                Err(e) => panic!("fixture generators: {e}"),
            };
            let low_gens = match RangeGens::low_memory(RangeBits::Bits16, 2, 3, 3) {
                Ok(g) => g,
                Err(e) => panic!("fixture low-memory generators: {e}"),
            };
            let context = tagged_hash(b"tally/test/confidential-context", &[b"fixture"]);
            let input = Opening::random(Amount(1000), &mut rng);
            let output_openings = balanced_openings(
                core::slice::from_ref(&input),
                &[Amount(250), Amount(750)],
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("fixture openings: {e}"));
            let outputs: Vec<Commitment> = output_openings.iter().map(Opening::commit).collect();
            let proof = RangeProof::prove(&gens, &context, &output_openings, &mut rng)
                .unwrap_or_else(|e| panic!("fixture proof: {e}"));
            let payee = testkit::key(Suite::Ed25519, b"payee");
            let sealed = SealedOpening::seal(
                &payee.public(),
                &context,
                &outputs[0],
                &output_openings[0],
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("fixture sealed opening: {e}"));
            ConfidentialFixture {
                gens,
                low_gens,
                context,
                inputs: vec![input.commit()],
                outputs,
                output_openings,
                proof,
                payee,
                sealed,
                package: PackageFixture::new(),
            }
        }

        /// Seed inputs: selector byte ‖ the fixture's encoding of each kind.
        pub fn seeds(&self) -> Vec<(&'static str, Vec<u8>)> {
            let whole = PackageFixture::whole();
            let with = |sel: u8, b: Vec<u8>| {
                let mut v = vec![sel];
                v.extend_from_slice(&b);
                v
            };
            vec![
                ("commitment.bin", with(0, self.outputs[0].to_cbor())),
                (
                    "proving_task.bin",
                    with(
                        0,
                        crate::confidential_record::ProvingTask {
                            bits: self.gens.bits(),
                            context: self.context,
                            openings: self.output_openings.clone(),
                        }
                        .to_cbor(),
                    ),
                ),
                ("opening.bin", with(1, self.output_openings[0].to_cbor())),
                ("range_proof.bin", with(2, self.proof.to_cbor())),
                ("balance.bin", with(3, self.outputs[1].to_cbor())),
                ("sealed_opening.bin", with(4, self.sealed.to_cbor())),
                (
                    "derived_opening.bin",
                    with(
                        4,
                        self.package
                            .package
                            .transfer
                            .confidential
                            .as_ref()
                            .and_then(|c| c.payee_opening.as_ref())
                            .map(Cbor::to_cbor)
                            .unwrap_or_default(),
                    ),
                ),
                (
                    "audit_seal.bin",
                    with(
                        4,
                        self.package
                            .package
                            .transfer
                            .confidential
                            .as_ref()
                            .and_then(|c| c.audit.as_ref())
                            .map(Cbor::to_cbor)
                            .unwrap_or_default(),
                    ),
                ),
                ("package.bin", with(5, self.package.package.to_cbor())),
                (
                    "record_transfer.bin",
                    with(
                        6,
                        crate::record::Record::Transfer(self.package.package.transfer.clone())
                            .to_cbor(),
                    ),
                ),
                (
                    "record_issue.bin",
                    with(
                        6,
                        crate::record::Record::Issue(self.package.issue.clone()).to_cbor(),
                    ),
                ),
                // A whole token: one output, no range proof (decision 0031).
                ("whole_package.bin", with(5, whole.package.to_cbor())),
                (
                    "record_whole_transfer.bin",
                    with(
                        6,
                        crate::record::Record::Transfer(whole.package.transfer.clone()).to_cbor(),
                    ),
                ),
            ]
        }
    }

    impl Default for ConfidentialFixture {
        fn default() -> Self {
            Self::new()
        }
    }

    fn round_trip<T: Cbor>(bytes: &[u8]) -> Option<T> {
        let v = T::from_cbor(bytes).ok()?;
        assert!(
            v.to_cbor() == bytes,
            "a confidential object re-encodes to other bytes"
        );
        Some(v)
    }

    /// Decoding never panics and re-encodes to the input; verifying hostile
    /// bytes never panics and accepts nothing but the fixture's own
    /// objects (a forgery would have to be found by the fuzzer).
    pub fn check_confidential_objects(f: &ConfidentialFixture, data: &[u8]) {
        let Some((&selector, bytes)) = data.split_first() else {
            return;
        };
        match selector % 7 {
            0 => {
                let _ = round_trip::<Commitment>(bytes);
                // A proving task (decision 0032) on the same bytes: one
                // encoding; proved, its proof verifies for exactly its
                // openings' commitments under its context, or it is
                // refused as out of range.
                if let Some(task) = round_trip::<crate::confidential_record::ProvingTask>(bytes) {
                    let mut rng = TestEntropy::new(b"fuzz-proving-task");
                    let commitments: Vec<Commitment> =
                        task.openings.iter().map(Opening::commit).collect();
                    match task.prove(&f.low_gens, &mut rng) {
                        Ok(None) => assert!(!task.needs_proof()),
                        Ok(Some(p)) => {
                            assert!(p.verify(&f.low_gens, &task.context, &commitments).is_ok());
                            assert!(
                                p.verify(&f.low_gens, &f.context, &commitments).is_ok()
                                    == (task.context == f.context),
                                "a task's proof verifies under another context"
                            );
                        }
                        Err(ConfidentialError::RangeBitsMismatch) => {
                            assert!(task.bits != f.low_gens.bits())
                        }
                        Err(e) => assert!(
                            e == ConfidentialError::OutOfRange
                                && task
                                    .openings
                                    .iter()
                                    .any(|o| !f.low_gens.bits().holds(o.value())),
                            "a task in range is not proved: {e:?}"
                        ),
                    }
                }
            }
            1 => {
                // A hostile opening next to an honest one: the batched
                // check (settlement's C7) gives the answer of checking
                // each, in either position.
                if let Some(o) = round_trip::<Opening>(bytes) {
                    let honest = &f.output_openings[1];
                    let each = o.opens(&f.outputs[0]);
                    assert_eq!(
                        opens_all(&[o.clone(), honest.clone()], &f.outputs),
                        each,
                        "the batched opening check disagrees with the single one"
                    );
                    let swapped = [f.outputs[1], f.outputs[0]];
                    assert_eq!(opens_all(&[honest.clone(), o.clone()], &swapped), each);
                    assert_eq!(opens_all(core::slice::from_ref(&o), &f.outputs[..1]), each);
                }
            }
            2 => {
                if let Some(p) = round_trip::<RangeProof>(bytes) {
                    let ok = p.verify(&f.gens, &f.context, &f.outputs).is_ok();
                    assert!(!ok || p == f.proof, "a range proof not made here verifies");
                    // The device's low-memory verifier agrees with the
                    // stock one on every input (decision 0027).
                    assert_eq!(
                        p.verify(&f.low_gens, &f.context, &f.outputs).is_ok(),
                        ok,
                        "the low-memory verifier disagrees with the stock one"
                    );
                    // Any other context or order is refused.
                    let mut swapped = f.outputs.clone();
                    swapped.reverse();
                    assert!(p.verify(&f.gens, &f.context, &swapped).is_err());
                }
            }
            3 => {
                // C4 over a decoded commitment: the fixture's outputs
                // balance its input; with the commitment added as one more
                // output they do not (it is never the identity); added on
                // both sides they do again.
                if let Some(c) = round_trip::<Commitment>(bytes) {
                    assert_eq!(check_balance(&f.inputs, &f.outputs), Ok(()));
                    let mut more = f.outputs.clone();
                    more.push(c);
                    assert_eq!(
                        check_balance(&f.inputs, &more),
                        Err(ConfidentialError::CommitmentsUnbalanced),
                        "an extra output balances"
                    );
                    let mut ins = f.inputs.clone();
                    ins.push(c);
                    assert_eq!(check_balance(&ins, &more), Ok(()));
                }
            }
            5 => {
                // A confidential package: decodes canonically, and if the
                // payee accepts it, it is the fixture's payment (same
                // transfer id, same amount credited).
                let Some(p) = round_trip::<crate::protocol::Package>(bytes) else {
                    return;
                };
                // Settlement's verifier with its sealing key (decision
                // 0028): a package it accepts has every amount opened, in
                // range, and balanced per transfer — whatever its proofs.
                #[cfg(feature = "sealing")]
                {
                    let key =
                        crate::sealed::OpeningKey::from_seed(&crate::testkit::Scheme::AUDIT_SEED);
                    let trust = &f.package.trust;
                    let bits = trust
                        .range_gens()
                        .map(RangeGens::bits)
                        .expect("the confidential fixture has range generators");
                    let settle = |recheck: bool, from_registry: bool| {
                        crate::verify::verify_package_groups_for_settlement_opened(
                            vec![vec![p.clone()]],
                            trust,
                            f.package.params,
                            &mut crate::verify::NoCache,
                            &key,
                            bits,
                            &|_| recheck,
                            from_registry,
                        )
                    };
                    let r = settle(false, false);
                    // The registry path (decision 0028, "Session 13"): a
                    // one-output Issue's value from the registry — here the
                    // value opening its seal gives — ends C7 on the same
                    // package, and it refuses what the openings refuse.
                    let from_registry = settle(false, true);
                    let opened = r
                        .first()
                        .and_then(|g| g.first())
                        .and_then(|x| x.as_ref().ok());
                    if let Some(Some(Ok(w))) = from_registry.first().map(|g| g.first()) {
                        let registered = |id: &Hash32| {
                            opened?
                                .package()
                                .ancestry
                                .iter()
                                .find(|rec| rec.id() == *id)
                                .and_then(|rec| rec.outputs().first())
                                .map(|o| o.value)
                        };
                        let done = w.clone().complete_from_registry(&registered);
                        assert_eq!(
                            done.as_ref().ok().map(|d| d.package()),
                            opened.map(|o| o.package()),
                            "the registry path and opening every seal disagree"
                        );
                    } else {
                        assert!(
                            opened.is_none(),
                            "the registry path refused what the openings accept"
                        );
                    }
                    // Settlement's sample only refuses more: a package it
                    // accepts with its proofs checked as well is accepted
                    // by its openings alone, with the same amounts.
                    if let Some(Some(Ok(v))) = settle(true, false).first().map(|g| g.first()) {
                        assert_eq!(
                            r.first()
                                .and_then(|g| g.first())
                                .and_then(|x| x.as_ref().ok())
                                .map(|x| x.package()),
                            Some(v.package()),
                            "the sampled check accepted what the openings refused"
                        );
                    }
                    if let Some(Some(Ok(v))) = r.first().map(|g| g.first()) {
                        assert!(v.amounts_opened(), "settled with unopened amounts");
                        let pkg = v.package();
                        let value_of = |op: &crate::record::OutPoint| {
                            pkg.ancestry
                                .iter()
                                .find(|r| r.id() == op.record)
                                .and_then(|r| r.outputs().get(op.index as usize))
                                .map(|o| o.value)
                        };
                        let ins: Option<Vec<Amount>> =
                            pkg.transfer.inputs.iter().map(value_of).collect();
                        let outs = pkg.transfer.outputs.iter().map(|o| o.value);
                        assert!(
                            pkg.transfer
                                .outputs
                                .iter()
                                .all(|o| o.value != Amount::ZERO && bits.holds(o.value)),
                            "a settled output out of range"
                        );
                        assert_eq!(
                            ins.and_then(Amount::sum),
                            Amount::sum(outs),
                            "a settled transfer that does not balance"
                        );
                    }
                }
                if let Ok(v) = f.package.verify(p) {
                    assert!(
                        v.transfer_id() == f.package.package.transfer.id()
                            && v.payment().1.value == Amount(250),
                        "a package not made here pays the payee"
                    );
                }
            }
            6 => {
                // Records of either form decode to one encoding; a
                // confidential Issue's openings open only for its owner.
                if let Some(crate::record::Record::Issue(i)) =
                    round_trip::<crate::record::Record>(bytes)
                    && let Ok(o) = i.open_output(0, &f.payee)
                {
                    assert!(o.opens(&o.commit()));
                }
            }
            _ => {
                // The audit seal's decoder on the same bytes (it has the
                // same shape): one encoding, and its opening count is
                // what its length says.
                if let Some(a) = round_trip::<SealedOpenings>(bytes) {
                    assert!(!a.fits(a.openings()) || a.openings() >= 1);
                }
                if let Some(s) = round_trip::<SealedOpening>(bytes)
                    && let Ok(o) = s.open(&f.payee, &f.context, &f.outputs[0])
                {
                    assert!(o == f.output_openings[0], "a foreign opening opens");
                }
                // The transfer's payee opening, either form: only the
                // fixture's own opening opens its output 0 (a derived
                // blinding from hostile bytes never equals it).
                if let Some(p) = round_trip::<PayeeOpening>(bytes)
                    && let Ok(o) = p.open(&f.payee, &f.context, &f.outputs[0], Amount(250))
                {
                    assert!(o == f.output_openings[0], "a foreign payee opening opens");
                }
            }
        }
    }
}

#[cfg(test)]
mod constant_generators {
    extern crate std;

    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::fmt::Write as _;

    use super::*;

    /// tari's own generators (hashed to the curve) for the constants'
    /// whole capacity, compressed: `[G, H][party][i]`.
    fn tari_generators() -> [Vec<Vec<[u8; 32]>>; 2] {
        let params = RangeParameters::init(
            confidential_gens::GENS_PER_PARTY,
            confidential_gens::PARTIES,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .expect("tari's generators");
        let split = |points: Vec<RistrettoPoint>| -> Vec<Vec<[u8; 32]>> {
            points
                .chunks(confidential_gens::GENS_PER_PARTY)
                .map(|c| c.iter().map(|p| p.compress().to_bytes()).collect())
                .collect()
        };
        [
            split(params.gi_base_iter().collect()),
            split(params.hi_base_iter().collect()),
        ]
    }

    /// The constants are tari's generators, point for point, and each
    /// decompresses to the point tari uses. With `TALLY_WRITE_GENS=1` the
    /// test rewrites src/confidential_gens.rs first.
    #[test]
    fn constant_generators_equal_taris() {
        let [g, h] = tari_generators();
        assert_eq!(g.len(), confidential_gens::PARTIES);
        if std::env::var_os("TALLY_WRITE_GENS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/confidential_gens.rs");
            let old = std::fs::read_to_string(path).expect("read confidential_gens.rs");
            let head = &old[..old.find("const TABLE_G").expect("TABLE_G")];
            let table = |t: &[Vec<[u8; 32]>]| {
                let mut s = String::from("[\n");
                for party in t {
                    s.push_str("    [\n");
                    for p in party {
                        s.push_str("        [");
                        for (i, b) in p.iter().enumerate() {
                            let sep = if i == 0 { "" } else { ", " };
                            let _ = write!(s, "{sep}0x{b:02x}");
                        }
                        s.push_str("],\n");
                    }
                    s.push_str("    ],\n");
                }
                s.push(']');
                s
            };
            let new = format!(
                "{head}const TABLE_G: [[[u8; 32]; GENS_PER_PARTY]; PARTIES] = {};\n\nconst TABLE_H: [[[u8; 32]; GENS_PER_PARTY]; PARTIES] = {};\n",
                table(&g),
                table(&h)
            );
            std::fs::write(path, new).expect("write confidential_gens.rs");
            return;
        }
        for (party, (gp, hp)) in g.iter().zip(&h).enumerate() {
            for (i, (gb, hb)) in gp.iter().zip(hp).enumerate() {
                assert_eq!(&confidential_gens::G[party][i], gb, "G[{party}][{i}]");
                assert_eq!(&confidential_gens::H[party][i], hb, "H[{party}][{i}]");
                assert_eq!(
                    constant_generator(false, party, i).map(|p| p.compress().to_bytes()),
                    Some(*gb)
                );
                assert_eq!(
                    constant_generator(true, party, i).map(|p| p.compress().to_bytes()),
                    Some(*hb)
                );
            }
        }
        assert!(constant_generator(false, 0, confidential_gens::GENS_PER_PARTY).is_none());
        assert!(constant_generator(true, confidential_gens::PARTIES, 0).is_none());
    }
}
