// Copyright 2022 The Tari Project
// SPDX-License-Identifier: BSD-3-Clause

//! Bulletproofs+ public range proof parameters intended for a verifier

#![allow(clippy::too_many_lines)]

use alloc::{string::ToString, vec, vec::Vec};
use core::{
    convert::{TryFrom, TryInto},
    iter::repeat_n,
    marker::PhantomData,
    ops::{Add, Mul, Shr},
};

use curve25519_dalek::{
    scalar::Scalar,
    traits::{Identity, IsIdentity, MultiscalarMul, VartimePrecomputedMultiscalarMul},
};
use ff::Field;
#[cfg(feature = "rand")]
use getrandom::SysRng;
use itertools::{Itertools, izip};
#[cfg(feature = "rand")]
use rand_core::UnwrapErr;
use rand_core::{CryptoRng, Rng};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Visitor};
use subtle::{Choice, ConditionallySelectable};
use tari_merlin::Transcript;
use zeroize::Zeroizing;

use crate::{
    errors::ProofError,
    extended_mask::ExtendedMask,
    generators::pedersen_gens::ExtensionDegree,
    protocols::{curve_point_protocol::CurvePointProtocol, scalar_protocol::ScalarProtocol},
    range_statement::RangeStatement,
    range_witness::RangeWitness,
    traits::{Compressable, Decompressable, FixedBytesRepr, Precomputable},
    transcripts::RangeProofTranscript,
    utils::{
        generic::{compute_generator_padding, nonce},
        nullrng::NullRng,
    },
};

/// Optionally extract masks when verifying the proofs
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum VerifyAction {
    /// No masks will be recovered (e.g. as a public entity)
    VerifyOnly,
    /// Recover masks and verify the proofs (e.g. as the commitment owner)
    RecoverAndVerify,
    /// Only recover masks but do not verify the proofs (e.g. as the commitment owner)
    RecoverOnly,
}

/// Contains the public range proof parameters intended for a verifier
#[derive(Clone, Debug, PartialEq)]
pub struct RangeProof<P: Compressable> {
    a: P::Compressed,
    a1: P::Compressed,
    b: P::Compressed,
    r1: Scalar,
    s1: Scalar,
    d1: Vec<Scalar>,
    li: Vec<P::Compressed>,
    ri: Vec<P::Compressed>,
    extension_degree: ExtensionDegree,
}

/// The maximum bit length for which proofs can be generated
pub const MAX_RANGE_PROOF_BIT_LENGTH: usize = 64;

/// Maximum number of proofs in a batch
/// This is only for performance reasons, where a very large batch can see diminishing returns
/// There is no theoretical limit imposed by the algorithms!
const MAX_RANGE_PROOF_BATCH_SIZE: usize = 256;

/// The number of bytes in each serialized proof element
const SERIALIZED_ELEMENT_SIZE: usize = 32;

/// The number of proof elements fixed in all proofs: `a, a1, b, r1, s1`
const FIXED_PROOF_ELEMENTS: usize = 5;

/// Assorted serialization constants
const ENCODED_EXTENSION_SIZE: usize = 1;

/// Tally's patch: curve25519-dalek's variable-time multiscalar multiplication over scalars and points given as pairs
/// of slices (one instance of it for every caller, which keeps a device's flash small).
fn parts_msm<P: CurvePointProtocol>(parts: &[(&[Scalar], &[P])]) -> P {
    let scalars = parts.iter().map(|(s, _)| s.len()).sum::<usize>();
    let points = parts.iter().map(|(_, p)| p.len()).sum::<usize>();
    P::vartime_multiscalar_mul(
        Counted {
            inner: parts.iter().flat_map(|(s, _)| s.iter()),
            left: scalars,
        },
        Counted {
            inner: parts.iter().flat_map(|(_, p)| p.iter()),
            left: points,
        },
    )
}

/// An iterator that knows how many items it has left (curve25519-dalek's multiscalar multiplications require an exact
/// size hint, which a flattening iterator does not give).
struct Counted<I> {
    inner: I,
    left: usize,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.left = self.left.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Tally's patch: curve25519-dalek's constant-time multiscalar multiplication (Straus over radix-16 digits, each
/// digit's multiple selected from its point's table in constant time) over scalars and points given as pairs of
/// slices: for secret scalars, where which operations run must not depend on the scalars.
fn parts_msm_ct<P: CurvePointProtocol + MultiscalarMul<Point = P>>(parts: &[(&[Scalar], &[P])]) -> P {
    let scalars = parts.iter().map(|(s, _)| s.len()).sum::<usize>();
    let points = parts.iter().map(|(_, p)| p.len()).sum::<usize>();
    P::multiscalar_mul(
        Counted {
            inner: parts.iter().flat_map(|(s, _)| s.iter()),
            left: scalars,
        },
        Counted {
            inner: parts.iter().flat_map(|(_, p)| p.iter()),
            left: points,
        },
    )
}

/// Tally's low-memory patch: `sum(s_i * P_i)` as the sum of `msm` over `chunk` points at a time, so that the memory
/// it takes (curve25519-dalek's per-point lookup tables) is bounded by `chunk` whatever the number of points. The
/// chunks depend only on the parts' lengths, which must have been checked equal.
fn chunked_msm<P: CurvePointProtocol>(chunk: usize, parts: &[(&[Scalar], &[P])], msm: fn(&[(&[Scalar], &[P])]) -> P) -> P {
    let chunk = chunk.max(1);
    let mut acc = P::identity();
    let mut pieces: Vec<(&[Scalar], &[P])> = Vec::with_capacity(parts.len());
    let mut taken = 0usize;
    for (scalars, points) in parts {
        let mut at = 0usize;
        while at < scalars.len() {
            let end = scalars.len().min(at + (chunk - taken));
            pieces.push((&scalars[at..end], &points[at..end]));
            taken += end - at;
            at = end;
            if taken == chunk {
                acc += msm(&pieces);
                pieces.clear();
                taken = 0;
            }
        }
    }
    if taken > 0 {
        acc += msm(&pieces);
    }
    acc
}

/// Bits of a canonical scalar (below the group order, which is below 2^253): the windows of the bucket method cover
/// these.
const SCALAR_BITS: usize = 253;

/// Tally's low-memory patch: window widths the bucket method may use. Within these, a canonical scalar's signed
/// recoding never carries out of its top window (the top window holds at most `c - 2` significant bits).
const BUCKET_WINDOWS: core::ops::RangeInclusive<usize> = 3..=8;

/// The point additions of the bucket method over `n` points with windows of `c` bits: per window, one addition per
/// point and two per bucket (the running sum), and `c` doublings between windows.
fn bucket_cost(n: usize, c: usize) -> usize {
    let windows = SCALAR_BITS.div_ceil(c);
    windows.saturating_mul(n.saturating_add(1usize << c).saturating_add(c))
}

/// The window width with the fewest additions for `n` points.
fn bucket_window(n: usize) -> usize {
    BUCKET_WINDOWS.min_by_key(|&c| bucket_cost(n, c)).unwrap_or(5)
}

/// The unsigned value of the `c` bits of `bytes` (little-endian) from bit `start`; bits past the end read as zero.
fn window_bits(bytes: &[u8; 32], start: usize, c: usize) -> u32 {
    let byte = start / 8;
    let shift = start % 8;
    let lo = bytes.get(byte).copied().unwrap_or(0) as u32;
    let hi = bytes.get(byte.saturating_add(1)).copied().unwrap_or(0) as u32;
    ((lo | (hi << 8)) >> shift) & ((1u32 << c) - 1)
}

/// Tally's low-memory patch: `sum(s_i * P_i)` by Pippenger's bucket method over points that are all in memory, for a
/// device that cannot hold curve25519-dalek's per-point lookup tables (about 1.3 KiB per point on the 32-bit backend)
/// for many points at once. Each scalar is recoded in signed radix `2^c` (digits in `[-2^(c-1), 2^(c-1))`); window by
/// window, from the top, each point is added to (or subtracted from) the bucket of its digit's magnitude, the buckets
/// are summed as `sum(k * B_k)` with a running sum, and the result is doubled `c` times before the next window. The
/// memory is `2^(c-1)` buckets and a carry bit per scalar per window; the doublings are shared by all points, which
/// chunked Straus repeats per chunk. Variable time (it skips zero digits and empty buckets), like the multiplications it
/// replaces. `parts` pairs scalars with points; each pair must have as many of each, or an error.
pub fn bucket_msm<P: CurvePointProtocol>(parts: &[(&[Scalar], &[P])]) -> Result<P, ProofError> {
    let mut n = 0usize;
    for (scalars, points) in parts {
        if scalars.len() != points.len() {
            return Err(ProofError::InvalidLength(
                "Multiscalar multiplication with unequal numbers of scalars and points".to_string(),
            ));
        }
        n = n.checked_add(scalars.len()).ok_or(ProofError::SizeOverflow)?;
    }
    if n == 0 {
        return Ok(P::identity());
    }
    let c = bucket_window(n);
    let windows = SCALAR_BITS.div_ceil(c);
    let half = 1u32 << (c - 1);
    // Each scalar's carry into each window of its recoding (the recoding runs from the bottom, the sum from the top).
    let carry_bytes = windows.div_ceil(8);
    let mut carries: Zeroizing<Vec<u8>> =
        Zeroizing::new(vec![0u8; n.checked_mul(carry_bytes).ok_or(ProofError::SizeOverflow)?]);
    for (i, scalar) in parts.iter().flat_map(|(scalars, _)| scalars.iter()).enumerate() {
        let bytes = scalar.as_bytes();
        let row = &mut carries[i * carry_bytes..(i + 1) * carry_bytes];
        let mut carry = 0u32;
        for j in 0..windows {
            row[j / 8] |= (carry as u8) << (j % 8);
            let d = window_bits(bytes, j * c, c) + carry;
            carry = (d + half) >> c;
        }
        if carry != 0 {
            return Err(ProofError::InvalidArgument("Scalar is not canonical".to_string()));
        }
    }
    let mut buckets: Vec<Option<P>> = vec![None; half as usize];
    let mut acc: Option<P> = None;
    for j in (0..windows).rev() {
        if let Some(a) = acc.as_mut() {
            for _ in 0..c {
                let t = a.clone();
                *a += &t;
            }
        }
        let mut i = 0usize;
        for (scalars, points) in parts {
            for (scalar, point) in scalars.iter().zip(points.iter()) {
                let carry = u32::from((carries[i * carry_bytes + j / 8] >> (j % 8)) & 1);
                i += 1;
                let d = window_bits(scalar.as_bytes(), j * c, c) + carry;
                // d in [0, 2^c]: the digit is d, or d - 2^c when d reaches half of it
                let (magnitude, negative) = if d >= half { ((1u32 << c) - d, true) } else { (d, false) };
                if magnitude == 0 {
                    continue;
                }
                let bucket = &mut buckets[(magnitude - 1) as usize];
                match (bucket.as_mut(), negative) {
                    (Some(b), false) => *b += point,
                    (Some(b), true) => *b -= point,
                    (None, false) => *bucket = Some(point.clone()),
                    (None, true) => *bucket = Some(-point.clone()),
                }
            }
        }
        // sum(k * B_k) = B_half + (B_half + B_(half-1)) + ...
        let mut running: Option<P> = None;
        let mut sum: Option<P> = None;
        for bucket in buckets.iter_mut().rev() {
            if let Some(b) = bucket.take() {
                match running.as_mut() {
                    Some(r) => *r += &b,
                    None => running = Some(b),
                }
            }
            if let Some(r) = running.as_ref() {
                match sum.as_mut() {
                    Some(s) => *s += r,
                    None => sum = Some(r.clone()),
                }
            }
        }
        if let Some(s) = sum {
            match acc.as_mut() {
                Some(a) => *a += &s,
                None => acc = Some(s),
            }
        }
    }
    Ok(acc.unwrap_or_else(P::identity))
}

/// Tally's patch: the prover's multiplications over secret scalars (its vectors, which the value bits and its random
/// masks make), in constant time: a payee's terminal times the payer's proof, and a variable-time multiplication takes
/// time by the scalars' digits. Stock (`chunk` is `None`): curve25519-dalek's constant-time multiplication over all
/// points at once. Low-memory: the same over `chunk` points at a time (its tables take about 1.3 KiB per point on the
/// 32-bit backend). Which operations run depends only on the number of points.
fn secret_msm<P: CurvePointProtocol + MultiscalarMul<Point = P>>(
    chunk: Option<usize>,
    parts: &[(&[Scalar], &[P])],
) -> Result<P, ProofError> {
    if parts.iter().any(|(s, p)| s.len() != p.len()) {
        return Err(ProofError::InvalidLength(
            "Multiscalar multiplication with unequal numbers of scalars and points".to_string(),
        ));
    }
    Ok(match chunk {
        None => parts_msm_ct(parts),
        Some(chunk) => chunked_msm(chunk, parts, parts_msm_ct),
    })
}

/// Tally's patch: a multiplication over public scalars and points in memory, in variable time. Stock (`chunk` is
/// `None`): curve25519-dalek's. Low-memory: the bucket method (curve25519-dalek's variable-time Straus over the
/// prover's few points took twice the bucket method's memory: 29 KB more at the Cortex-M4's peak).
fn public_msm<P: CurvePointProtocol>(chunk: Option<usize>, parts: &[(&[Scalar], &[P])]) -> Result<P, ProofError> {
    match chunk {
        None if parts.iter().all(|(s, p)| s.len() == p.len()) => Ok(parts_msm(parts)),
        _ => bucket_msm(parts),
    }
}

/// Tally's patch: `(sum(bit_i·P_i), sum(P_i))` in constant time: each point or the identity is selected in constant
/// time and added (complete addition formulas: the same operations either way). `bits` and `points` must be as many.
fn select_sum<P: CurvePointProtocol + ConditionallySelectable>(bits: &[u8], points: &[P]) -> Result<(P, P), ProofError> {
    if bits.len() != points.len() {
        return Err(ProofError::InvalidLength("Bit vector and generators do not match".to_string()));
    }
    let identity = P::identity();
    let mut selected = P::identity();
    let mut all = P::identity();
    for (bit, point) in bits.iter().zip(points) {
        selected += P::conditional_select(&identity, point, Choice::from(*bit & 1));
        all += point;
    }
    Ok((selected, all))
}

/// Tally's patch: the prover's first commitment `A = sum(a_L_i·G_i + a_R_i·H_i) + sum(alpha_k·B_k)` in constant time.
/// The value bits are secret, and a variable-time multiplication by `a_R_i = a_L_i - 1` (minus one, a full-length
/// scalar, for a clear bit; zero for a set one) takes time in proportion to the number of clear bits. As `a_R_i =
/// a_L_i - 1`, `A = sum(bit_i·(G_i + H_i)) - sum(H_i) + sum(alpha_k·B_k)`: `G_i + H_i` or the identity is selected in
/// constant time and added (complete addition formulas: the same operations either way), the masks by the
/// constant-time multiplication. The same point as the multiscalar multiplication, so the same proof, and cheaper.
fn bits_commitment<P>(
    bits: &[u8],
    gi: impl Iterator<Item = P>,
    hi: impl Iterator<Item = P>,
    alpha: &[Scalar],
    g_bases: &[P],
) -> Result<P, ProofError>
where
    P: CurvePointProtocol + MultiscalarMul<Point = P> + ConditionallySelectable,
    for<'p> &'p P: Add<Output = P>,
{
    let identity = P::identity();
    let mut selected = P::identity();
    let mut h_sum = P::identity();
    let mut n = 0usize;
    for ((bit, g), h) in bits.iter().zip(gi).zip(hi) {
        let both = &g + &h;
        selected += P::conditional_select(&identity, &both, Choice::from(*bit & 1));
        h_sum += &h;
        n += 1;
    }
    if n != bits.len() || alpha.len() > g_bases.len() {
        return Err(ProofError::InvalidLength("Bit vector and generators do not match".to_string()));
    }
    selected -= &h_sum;
    selected += parts_msm_ct(&[(alpha, &g_bases[..alpha.len()])]);
    Ok(selected)
}

/// Estimated curve-operation cost of the batch verification check using evaluation against precomputed tables
/// (Straus).
///
/// Evaluation against the precomputed tables avoids computing lookup tables for the static generators, but its
/// per-point cost is constant, whereas Pippenger's per-point cost shrinks as the problem grows; for large batches
/// Pippenger wins even though it must process the static generators from scratch.
///
/// The estimate counts curve operations, mirroring `VartimePrecomputedStraus` in `curve25519-dalek` (5.0.0):
/// 256 doublings, ~256/9 additions per static scalar (width-8 NAF), and table construction (~8 operations) plus
/// ~256/6 additions (width-5 NAF) per dynamic point. If the `curve25519-dalek` algorithms are retuned, these
/// constants must be revisited; a stale estimate affects only performance, not correctness, since both strategies
/// compute the same linear combination.
fn estimate_straus_cost(static_count: usize, dynamic_count: usize) -> usize {
    256usize
        .saturating_add(static_count.saturating_mul(29))
        .saturating_add(dynamic_count.saturating_mul(51))
}

/// Estimated curve-operation cost of the batch verification check using Pippenger's algorithm over all `size` points.
///
/// The estimate counts curve operations, mirroring `Pippenger` in `curve25519-dalek` (5.0.0): ~256/w + 1
/// columns, each costing an addition per point plus half a bucket set, with the window width `w` chosen by problem
/// size. See [`estimate_straus_cost`] for the consequences of drift against `curve25519-dalek`.
fn estimate_pippenger_cost(size: usize) -> usize {
    let (window, buckets) = if size < 500 {
        (6usize, 32usize)
    } else if size < 800 {
        (7, 64)
    } else {
        (8, 128)
    };
    #[allow(clippy::arithmetic_side_effects)]
    let columns = 256 / window + 1;
    columns.saturating_mul(size.saturating_add(buckets)).saturating_add(256)
}

/// # Example
/// ```
/// use curve25519_dalek::scalar::Scalar;
/// use tari_merlin::Transcript;
/// #[cfg(feature = "rand")]
/// use getrandom::{rand_core::UnwrapErr, SysRng};
/// # fn main() {
/// #[cfg(feature = "rand")]
/// # {
/// use tari_bulletproofs_plus::{
///     commitment_opening::CommitmentOpening,
///     errors::ProofError,
///     extended_mask::ExtendedMask,
///     generators::pedersen_gens::ExtensionDegree,
///     protocols::scalar_protocol::ScalarProtocol,
///     range_parameters::RangeParameters,
///     range_proof::{RangeProof, VerifyAction},
///     range_statement::RangeStatement,
///     range_witness::RangeWitness,
///     ristretto,
///     ristretto::RistrettoRangeProof,
/// };
/// let mut rng = UnwrapErr(SysRng);
/// let transcript_label: &'static str = "BatchedRangeProofTest";
/// let bit_length = 64; // Other powers of two are permissible up to 2^6 = 64
///
/// // 0.  Batch data
/// let proof_batch = vec![1, 4]; // a batch with two proofs, one of which is aggregated
/// let mut private_masks: Vec<Option<ExtendedMask>> = vec![];
/// let mut public_masks = vec![];
/// let mut statements_private = vec![];
/// let mut statements_public = vec![];
/// let mut proofs = vec![];
/// let mut transcripts = vec![];
///
/// for aggregation_size in proof_batch {
///     // 1. Generators
///     let extension_degree = ExtensionDegree::DefaultPedersen;
///     let pc_gens = ristretto::create_pedersen_gens_with_extension_degree(extension_degree);
///     let generators = RangeParameters::init(bit_length, aggregation_size, pc_gens).unwrap();
///
///     // 2. Create witness data
///     let mut commitments = vec![];
///     let mut openings = vec![];
///     let mut minimum_values = vec![];
///     for m in 0..aggregation_size {
///         let value = 123000111222333 * m as u64; // Value in uT
///         let blindings = vec![Scalar::random_not_zero(&mut rng); extension_degree as usize];
///         if m == 2 {
///             // Minimum value proofs other than zero are can be built into the proof
///             minimum_values.push(Some(value / 3));
///         } else {
///             minimum_values.push(None);
///         }
///         commitments.push(
///             generators
///                 .pc_gens()
///                 .commit(&Scalar::from(value), blindings.as_slice())
///                 .unwrap(),
///         );
///         openings.push(CommitmentOpening::new(value, blindings.clone()));
///         if m == 0 {
///             if aggregation_size == 1 {
///                 // Masks (any secret scalar) can be embedded for proofs with aggregation size = 1
///                 private_masks.push(Some(ExtendedMask::assign(extension_degree, blindings).unwrap()));
///                 public_masks.push(None);
///             } else {
///                 private_masks.push(None);
///                 public_masks.push(None);
///             }
///         }
///     }
///     let mut witness = RangeWitness::init(openings).unwrap();
///
///     // 3. Generate the statement
///     let seed_nonce = if aggregation_size == 1 {
///         // A secret seed nonce will be needed to recover the secret scalar for proofs with aggregation size = 1
///         Some(Scalar::random_not_zero(&mut rng))
///     } else {
///         None
///     };
///     let private_statement = RangeStatement::init(
///         generators.clone(),
///         commitments.clone(),
///         minimum_values.clone(),
///         // Only the owner will know the secret seed_nonce
///         seed_nonce,
///     )
///     .unwrap();
///     statements_private.push(private_statement.clone());
///     let public_statement =
///         RangeStatement::init(generators.clone(), commitments, minimum_values.clone(), None).unwrap();
///     statements_public.push(public_statement.clone());
///     let mut transcript = Transcript::new(transcript_label.as_bytes());
///     transcripts.push(transcript.clone());
///
///     // 4. Create the proofs
///     let proof = RistrettoRangeProof::prove(&mut transcript, &private_statement.clone(), &witness);
///     proofs.push(proof.unwrap());
/// }
///
/// // 5. Verify the entire batch as the commitment owner, i.e. the prover self
/// let recovered_private_masks = RangeProof::verify_batch(
///     &mut transcripts.clone(),
///     &statements_private,
///     &proofs,
///     VerifyAction::RecoverAndVerify,
/// )
/// .unwrap();
/// assert_eq!(private_masks, recovered_private_masks);
///
/// // 6. Verify the entire batch as public entity
/// let recovered_public_masks =
///     RangeProof::verify_batch(&mut transcripts, &statements_public, &proofs, VerifyAction::VerifyOnly).unwrap();
/// assert_eq!(public_masks, recovered_public_masks);
///
/// # }
/// # }
/// ```
impl<P> RangeProof<P>
where
    for<'p> &'p P: Mul<Scalar, Output = P>,
    for<'p> &'p P: Add<Output = P>,
    P: CurvePointProtocol + Precomputable + MultiscalarMul<Point = P> + ConditionallySelectable,
    P::Compressed: FixedBytesRepr + IsIdentity + Identity,
{
    /// Helper function to return the proof's extension degree
    pub fn extension_degree(&self) -> ExtensionDegree {
        self.extension_degree
    }

    /// Create a single or aggregated range proof for a single party that knows all the secrets
    /// The prover must ensure that the commitments and witness opening data are consistent
    #[cfg(feature = "rand")]
    pub fn prove(
        transcript: &mut Transcript,
        statement: &RangeStatement<P>,
        witness: &RangeWitness,
    ) -> Result<Self, ProofError> {
        Self::prove_with_rng(transcript, statement, witness, &mut UnwrapErr(SysRng))
    }

    /// Create a single or aggregated range proof for a single party that knows all the secrets
    /// The prover must ensure that the commitments and witness opening data are consistent
    pub fn prove_with_rng<R: CryptoRng>(
        transcript: &mut Transcript,
        statement: &RangeStatement<P>,
        witness: &RangeWitness,
        rng: &mut R,
    ) -> Result<Self, ProofError> {
        // Useful lengths
        let bit_length = statement.generators.bit_length();
        let aggregation_factor = statement.commitments.len();
        let extension_degree = statement.generators.extension_degree() as usize;
        let full_length = bit_length
            .checked_mul(aggregation_factor)
            .ok_or(ProofError::SizeOverflow)?;

        // The witness openings must correspond to the number of statement commitments
        // This ensures a common aggregation factor
        if witness.openings.len() != statement.commitments.len() {
            return Err(ProofError::InvalidLength(
                "Witness openings and statement commitments do not match!".to_string(),
            ));
        }

        // The witness and statement extension degrees must match
        // This ensures we have the necessary corresponding generators
        if witness.extension_degree != statement.generators.extension_degree() {
            return Err(ProofError::InvalidLength(
                "Witness and statement extension degrees do not match!".to_string(),
            ));
        }

        // Each witness value must not overflow the bit length
        // This ensures bit decompositions are valid
        for opening in &witness.openings {
            // If the bit length is large enough, no `u64` value can overflow
            if bit_length < 64 && opening.v >> bit_length > 0 {
                return Err(ProofError::InvalidLength(
                    "Value exceeds bit vector capacity!".to_string(),
                ));
            }
        }

        // Each witness opening must be valid for the corresponding statement commitment
        // This ensures correctness of the proving relation for this instance
        for (opening, commitment) in witness.openings.iter().zip(statement.commitments.iter()) {
            if &statement
                .generators
                .pc_gens
                .commit(&Scalar::from(opening.v), &opening.r)? !=
                commitment
            {
                return Err(ProofError::InvalidArgument("Witness opening is invalid!".to_string()));
            }
        }

        // Start a new transcript and generate the transcript RNG
        let mut range_proof_transcript = RangeProofTranscript::<P, R>::new(
            transcript,
            &statement.generators.h_base().compress(),
            statement.generators.g_bases_compressed(),
            bit_length,
            extension_degree,
            aggregation_factor,
            statement,
            Some(witness),
            rng,
        )?;

        // Set bit arrays
        let mut a_li = Zeroizing::new(Vec::with_capacity(full_length));
        let mut a_ri = Zeroizing::new(Vec::with_capacity(full_length));
        // Tally: the bits themselves, for `A` in constant time (`bits_commitment`)
        let mut bits: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(full_length));
        for (minimum_value, value) in statement
            .minimum_value_promises
            .iter()
            .zip(witness.openings.iter().map(|o| &o.v))
        {
            // Offset by the minimum value if needed
            let offset_value = if let Some(minimum_value) = minimum_value {
                Zeroizing::new(value.checked_sub(*minimum_value).ok_or(ProofError::InvalidArgument(
                    "Minimum value is larger than value".to_string(),
                ))?)
            } else {
                Zeroizing::new(*value)
            };

            // Decompose into bits
            for i in 0..bit_length {
                let i_u32 = u32::try_from(i).map_err(|_| ProofError::SizeOverflow)?;
                bits.push((offset_value.shr(i_u32) & 1) as u8);
                a_li.push(Scalar::from(offset_value.shr(i_u32) & 1));
                a_ri.push(Scalar::from(offset_value.shr(i_u32) & 1) - Scalar::ONE);
            }
        }

        // Compute A by multi-scalar multiplication
        let mut alpha = Zeroizing::new(Vec::with_capacity(extension_degree));
        for k in 0..extension_degree {
            alpha.push(if let Some(seed_nonce) = statement.seed_nonce {
                nonce(&seed_nonce, "alpha", None, Some(k))?
            } else {
                // Zero is allowed by the protocol, but excluded by the implementation to be unambiguous
                Scalar::random_not_zero(range_proof_transcript.as_mut_rng())
            });
        }
        // Tally: `A` no longer multiplies the padding; the call still checks that the generators cover the aggregation
        compute_generator_padding(
            statement.generators.bit_length(),
            statement.commitments.len(),
            statement.generators.max_aggregation_factor(),
        )?;
        // Only take as much of the folding vectors as needed for the aggregation factor (made here, before `A`, so
        // that generators from a source are produced once)
        // Tally: with precomputed tables (a host) the generators are not folded: each folded generator stays a sum of
        // the original ones, `gi = sum_k wg[k] * G_k` over the original indices `k` that fold into `i`, and L, R and
        // the final A1's generators are multiplications against the tables over the original generators with the
        // weights multiplied in (the folding's scalar multiplications were 40 % of a proof). Same proof, bit for bit.
        // Only with `std` (hosts): a device without tables folds, and its flash does not carry this path.
        let precomp = statement.generators.precomp();
        let mut weights: Option<(Vec<Scalar>, Vec<Scalar>)> = if cfg!(feature = "std") {
            precomp
                .as_ref()
                .map(|_| (vec![Scalar::ONE; full_length], vec![Scalar::ONE; full_length]))
        } else {
            None
        };
        let (mut gi_base, mut hi_base): (Vec<P>, Vec<P>) = if weights.is_some() {
            (Vec::new(), Vec::new())
        } else {
            (
                statement.generators.gi_base_iter().take(full_length).collect(),
                statement.generators.hi_base_iter().take(full_length).collect(),
            )
        };
        let chunk = statement.generators.msm_chunk();
        // Tally: in constant time (`bits_commitment`), from the resident vectors or, with tables, the generators
        let a = if weights.is_some() {
            bits_commitment(
                &bits,
                statement.generators.gi_base_iter().take(full_length),
                statement.generators.hi_base_iter().take(full_length),
                &alpha,
                statement.generators.g_bases(),
            )?
        } else {
            bits_commitment(
                &bits,
                gi_base.iter().cloned(),
                hi_base.iter().cloned(),
                &alpha,
                statement.generators.g_bases(),
            )?
        };

        // Update transcript, get challenges, and update RNG
        let (y, z) = range_proof_transcript.challenges_y_z(&a.compress())?;

        let z_square = z * z;

        // Compute powers of the challenge
        let y_powers_len = full_length.checked_add(2).ok_or(ProofError::SizeOverflow)?;
        let mut y_powers = Vec::with_capacity(y_powers_len);
        let mut y_power = Scalar::ONE;
        for _ in 0..y_powers_len {
            y_powers.push(y_power);
            y_power *= y;
        }

        // Compute d efficiently
        let mut d = Vec::with_capacity(full_length);
        d.push(z_square);
        let two = Scalar::from(2u8);
        for _ in 1..bit_length {
            d.push(two * d.last().ok_or(ProofError::SizeOverflow)?);
        }
        for j in 1..aggregation_factor {
            for i in 0..bit_length {
                #[allow(clippy::arithmetic_side_effects)]
                d.push(d.get((j - 1) * bit_length + i).ok_or(ProofError::SizeOverflow)? * z_square);
            }
        }

        // Prepare for inner product
        for a_li in a_li.iter_mut() {
            *a_li -= z;
        }
        for (a_ri, d, y_power) in izip!(a_ri.iter_mut(), d.iter(), y_powers.iter().rev().skip(1)) {
            *a_ri += d * y_power + z;
        }
        let mut z_even_powers = Scalar::ONE;
        for opening in &witness.openings {
            z_even_powers *= z_square;
            for (r, alpha1_val) in opening.r.iter().zip(alpha.iter_mut()) {
                *alpha1_val += z_even_powers *
                    r *
                    y_powers
                        .get(full_length.checked_add(1).ok_or(ProofError::SizeOverflow)?)
                        .ok_or(ProofError::SizeOverflow)?;
            }
        }

        let g_base = statement.generators.g_bases();
        let h_base = statement.generators.h_base();

        let rounds = usize::try_from(full_length.ilog2()).map_err(|_| ProofError::SizeOverflow)?;
        let mut li = Vec::<P>::with_capacity(rounds);
        let mut ri = Vec::<P>::with_capacity(rounds);

        let mut n = full_length;
        let mut round = 0;

        // Tally: the folded generators are kept up to one common factor
        // per vector (`gi = g_scale · gi_base[i]`, `hi = h_scale ·
        // hi_base[i]`): a round folds both halves with the same two
        // challenges for every i, so `e⁻¹·lo + e·y⁻ⁿ·hi = e⁻¹·(lo +
        // e²·y⁻ⁿ·hi)`, one scalar multiplication per generator instead of
        // two; the factor goes into the scalars that multiply the
        // generators (L, R and the final A1). Same proof, bit for bit.
        let mut g_scale = Scalar::ONE;
        let mut h_scale = Scalar::ONE;

        // Perform the inner-product folding rounds
        while n > 1 {
            n /= 2;

            // Split the vectors for folding
            let (a_lo, a_hi) = a_li
                .split_at_checked(n)
                .ok_or(ProofError::InvalidLength("Invalid vector split index".to_string()))?;
            let (b_lo, b_hi) = a_ri
                .split_at_checked(n)
                .ok_or(ProofError::InvalidLength("Invalid vector split index".to_string()))?;
            let y_n_inverse = if y_powers[n] == Scalar::ZERO {
                return Err(ProofError::InvalidArgument(
                    "Cannot invert a zero valued Scalar".to_string(),
                ));
            } else {
                y_powers[n].invert()
            };

            let a_lo_offset = a_lo.iter().map(|s| s * y_n_inverse).collect::<Vec<Scalar>>();
            let a_hi_offset = a_hi.iter().map(|s| s * y_powers[n]).collect::<Vec<Scalar>>();
            // Tally: the scalars of L and R on the generators, times their
            // vectors' common factors.
            let a_lo_scaled = Zeroizing::new(a_lo_offset.iter().map(|s| s * g_scale).collect::<Vec<Scalar>>());
            let a_hi_scaled = Zeroizing::new(a_hi_offset.iter().map(|s| s * g_scale).collect::<Vec<Scalar>>());
            let b_lo_scaled = Zeroizing::new(b_lo.iter().map(|s| s * h_scale).collect::<Vec<Scalar>>());
            let b_hi_scaled = Zeroizing::new(b_hi.iter().map(|s| s * h_scale).collect::<Vec<Scalar>>());

            let d_l = if let Some(seed_nonce) = statement.seed_nonce {
                Zeroizing::new(
                    (0..extension_degree)
                        .map(|k| nonce(&seed_nonce, "dL", Some(round), Some(k)))
                        .collect::<Result<Vec<_>, ProofError>>()?,
                )
            } else {
                // Zero is allowed by the protocol, but excluded by the implementation to be unambiguous
                Zeroizing::new(
                    (0..extension_degree)
                        .map(|_| Scalar::random_not_zero(range_proof_transcript.as_mut_rng()))
                        .collect(),
                )
            };
            let d_r = if let Some(seed_nonce) = statement.seed_nonce {
                Zeroizing::new(
                    (0..extension_degree)
                        .map(|k| nonce(&seed_nonce, "dR", Some(round), Some(k)))
                        .collect::<Result<Vec<_>, ProofError>>()?,
                )
            } else {
                // Zero is allowed by the protocol, but excluded by the implementation to be unambiguous
                Zeroizing::new(
                    (0..extension_degree)
                        .map(|_| Scalar::random_not_zero(range_proof_transcript.as_mut_rng()))
                        .collect(),
                )
            };

            round = round.checked_add(1).ok_or(ProofError::SizeOverflow)?;

            let c_l = Zeroizing::new(
                izip!(a_lo, y_powers.iter().skip(1), b_hi)
                    .fold(Scalar::ZERO, |acc, (a, y_power, b)| acc + a * y_power * b),
            );
            let c_r = Zeroizing::new(
                izip!(
                    a_hi,
                    y_powers.iter().skip(n.checked_add(1).ok_or(ProofError::SizeOverflow)?),
                    b_lo
                )
                .fold(Scalar::ZERO, |acc, (a, y_power, b)| acc + a * y_power * b),
            );

            // Compute L and R by multi-scalar multiplication
            if let (Some(precomp), Some((wg, wh))) = (precomp.as_ref(), weights.as_ref()) {
                // Over the original generators (interleaved as in the tables): the current vectors have length 2n,
                // original index k sits at k mod 2n, in the high half from n on
                let mut l_static: Zeroizing<Vec<Scalar>> = Zeroizing::new(Vec::with_capacity(2 * full_length));
                let mut r_static: Zeroizing<Vec<Scalar>> = Zeroizing::new(Vec::with_capacity(2 * full_length));
                for (k, (wg, wh)) in wg.iter().zip(wh.iter()).enumerate() {
                    let i = k % (2 * n);
                    if i >= n {
                        l_static.push(a_lo_scaled[i - n] * wg);
                        l_static.push(Scalar::ZERO);
                        r_static.push(Scalar::ZERO);
                        r_static.push(b_lo_scaled[i - n] * wh);
                    } else {
                        l_static.push(Scalar::ZERO);
                        l_static.push(b_hi_scaled[i] * wh);
                        r_static.push(a_hi_scaled[i] * wg);
                        r_static.push(Scalar::ZERO);
                    }
                }
                li.push(precomp.vartime_mixed_multiscalar_mul(
                    l_static.iter(),
                    core::iter::once(&*c_l).chain(d_l.iter()),
                    core::iter::once(h_base).chain(g_base.iter()),
                ));
                ri.push(precomp.vartime_mixed_multiscalar_mul(
                    r_static.iter(),
                    core::iter::once(&*c_r).chain(d_r.iter()),
                    core::iter::once(h_base).chain(g_base.iter()),
                ));
            } else {
                let (gi_base_lo, gi_base_hi) = gi_base
                    .split_at_checked(n)
                    .ok_or(ProofError::InvalidLength("Invalid vector split index".to_string()))?;
                let (hi_base_lo, hi_base_hi) = hi_base
                    .split_at_checked(n)
                    .ok_or(ProofError::InvalidLength("Invalid vector split index".to_string()))?;
                if 2 * n == full_length {
                    // Tally: the first round's vectors are the value bits plus public scalars (`a = bit - z`, `b =
                    // bit + p` with `p` from the challenges), so L and R are sums of generators selected by the bits
                    // in constant time (`select_sum`), multiplied by public scalars (variable time: which operations
                    // run depends on public scalars only), and the secret `c` and masks in constant time. The same
                    // points as the constant-time multiplication over every generator, at about half its cost.
                    let (bits_lo, bits_hi) = bits
                        .split_at_checked(n)
                        .ok_or(ProofError::InvalidLength("Invalid vector split index".to_string()))?;
                    let public = |b: &[Scalar], bits: &[u8]| -> Vec<Scalar> {
                        b.iter().zip(bits).map(|(b, bit)| (b - Scalar::from(*bit)) * h_scale).collect()
                    };
                    let (p_hi, p_lo) = (public(b_hi, bits_hi), public(b_lo, bits_lo));
                    let (g_l, g_l_all) = select_sum(bits_lo, gi_base_hi)?;
                    let (h_l, _) = select_sum(bits_hi, hi_base_lo)?;
                    let (g_r, g_r_all) = select_sum(bits_hi, gi_base_lo)?;
                    let (h_r, _) = select_sum(bits_lo, hi_base_hi)?;
                    let k_l = y_n_inverse * g_scale;
                    let k_r = y_powers[n] * g_scale;
                    let mut l = secret_msm(
                        chunk,
                        &[(core::slice::from_ref(&*c_l), core::slice::from_ref(h_base)), (&d_l[..], g_base)],
                    )?;
                    l += public_msm(chunk, &[(&[k_l, Scalar::ZERO - k_l * z, h_scale], &[g_l, g_l_all, h_l]), (&p_hi[..], hi_base_lo)])?;
                    let mut r = secret_msm(
                        chunk,
                        &[(core::slice::from_ref(&*c_r), core::slice::from_ref(h_base)), (&d_r[..], g_base)],
                    )?;
                    r += public_msm(chunk, &[(&[k_r, Scalar::ZERO - k_r * z, h_scale], &[g_r, g_r_all, h_r]), (&p_lo[..], hi_base_hi)])?;
                    li.push(l);
                    ri.push(r);
                } else {
                    li.push(secret_msm(
                        chunk,
                        &[
                            (core::slice::from_ref(&*c_l), core::slice::from_ref(h_base)),
                            (&d_l[..], g_base),
                            (&a_lo_scaled[..], gi_base_hi),
                            (&b_hi_scaled[..], hi_base_lo),
                        ],
                    )?);
                    ri.push(secret_msm(
                        chunk,
                        &[
                            (core::slice::from_ref(&*c_r), core::slice::from_ref(h_base)),
                            (&d_r[..], g_base),
                            (&a_hi_scaled[..], gi_base_lo),
                            (&b_lo_scaled[..], hi_base_hi),
                        ],
                    )?);
                }
            }

            // Update transcript, get challenge, and update RNG
            let e = range_proof_transcript.challenge_round_e(
                &li.last()
                    .ok_or(ProofError::InvalidLength("Bad inner product vector length".to_string()))?
                    .compress(),
                &ri.last()
                    .ok_or(ProofError::InvalidLength("Bad inner product vector length".to_string()))?
                    .compress(),
            )?;
            let e_square = e * e;
            let e_inverse = e.invert();
            let e_inverse_square = e_inverse * e_inverse;

            // Fold the vectors (Tally: up to the common factors, above)
            let c_g = e_square * y_n_inverse;
            if let Some((wg, wh)) = weights.as_mut() {
                for (k, (wg, wh)) in wg.iter_mut().zip(wh.iter_mut()).enumerate() {
                    if k % (2 * n) >= n {
                        *wg *= c_g;
                        *wh *= e_inverse_square;
                    }
                }
            } else {
                let (gi_base_lo, gi_base_hi) = gi_base
                    .split_at_checked(n)
                    .ok_or(ProofError::InvalidLength("Invalid vector split index".to_string()))?;
                let (hi_base_lo, hi_base_hi) = hi_base
                    .split_at_checked(n)
                    .ok_or(ProofError::InvalidLength("Invalid vector split index".to_string()))?;
                gi_base = gi_base_lo
                    .iter()
                    .zip(gi_base_hi.iter())
                    .map(|(lo, hi)| lo + &parts_msm(&[(core::slice::from_ref(&c_g), core::slice::from_ref(hi))]))
                    .collect();
                hi_base = hi_base_lo
                    .iter()
                    .zip(hi_base_hi.iter())
                    .map(|(lo, hi)| {
                        lo + &parts_msm(&[(core::slice::from_ref(&e_inverse_square), core::slice::from_ref(hi))])
                    })
                    .collect();
            }
            g_scale *= e_inverse;
            h_scale *= e;
            a_li = Zeroizing::new(
                a_lo.iter()
                    .zip(a_hi_offset.iter())
                    .map(|(lo, hi)| lo * e + hi * e_inverse)
                    .collect(),
            );
            a_ri = Zeroizing::new(
                b_lo.iter()
                    .zip(b_hi.iter())
                    .map(|(lo, hi)| lo * e_inverse + hi * e)
                    .collect(),
            );

            for (alpha, (l, r)) in alpha.iter_mut().zip(d_l.iter().zip(d_r.iter())) {
                *alpha += l * e_square + r * e_inverse_square;
            }
        }

        // Random masks
        // Zero is allowed by the protocol, but excluded by the implementation to be unambiguous
        let r = Zeroizing::new(Scalar::random_not_zero(range_proof_transcript.as_mut_rng()));
        let s = Zeroizing::new(Scalar::random_not_zero(range_proof_transcript.as_mut_rng()));
        let d = if let Some(seed_nonce) = statement.seed_nonce {
            Zeroizing::new(
                (0..extension_degree)
                    .map(|k| nonce(&seed_nonce, "d", None, Some(k)))
                    .collect::<Result<Vec<_>, ProofError>>()?,
            )
        } else {
            // Zero is allowed by the protocol, but excluded by the implementation to be unambiguous
            Zeroizing::new(
                (0..extension_degree)
                    .map(|_| Scalar::random_not_zero(range_proof_transcript.as_mut_rng()))
                    .collect(),
            )
        };
        let eta = if let Some(seed_nonce) = statement.seed_nonce {
            Zeroizing::new(
                (0..extension_degree)
                    .map(|k| nonce(&seed_nonce, "eta", None, Some(k)))
                    .collect::<Result<Vec<_>, ProofError>>()?,
            )
        } else {
            // Zero is allowed by the protocol, but excluded by the implementation to be unambiguous
            Zeroizing::new(
                (0..extension_degree)
                    .map(|_| Scalar::random_not_zero(range_proof_transcript.as_mut_rng()))
                    .collect(),
            )
        };

        // Tally: the fully folded generators, from the weights where they were not folded
        if let (Some(precomp), Some((wg, wh))) = (precomp.as_ref(), weights.as_ref()) {
            let zero = Scalar::ZERO;
            gi_base = vec![precomp.vartime_multiscalar_mul(wg.iter().interleave(repeat_n(&zero, wh.len())))];
            hi_base = vec![precomp.vartime_multiscalar_mul(repeat_n(&zero, wg.len()).interleave(wh.iter()))];
        }
        let (Some(gi_final), Some(hi_final)) = (gi_base.first(), hi_base.first()) else {
            return Err(ProofError::InvalidLength("Bad inner product vector length".to_string()));
        };
        #[allow(clippy::arithmetic_side_effects)]
        let mut a1 =
            gi_final * (*r * g_scale) + hi_final * (*s * h_scale) + h_base * (*r * y_powers[1] * a_ri[0] + *s * y_powers[1] * a_li[0]);
        let mut b = h_base * (*r * y_powers[1] * *s);
        #[allow(clippy::arithmetic_side_effects)]
        for (g_base, &d) in g_base.iter().zip(d.iter()) {
            a1 += g_base * d;
        }
        #[allow(clippy::arithmetic_side_effects)]
        for (g_base, &eta) in g_base.iter().zip(eta.iter()) {
            b += g_base * eta;
        }

        // Update transcript, get challenge, and update RNG
        let e = range_proof_transcript.challenge_final_e(&a1.compress(), &b.compress())?;
        let e_square = e * e;

        let r1 = *r + a_li[0] * e;
        let s1 = *s + a_ri[0] * e;
        let d1: Vec<Scalar> = izip!(eta.iter(), d.iter(), alpha.iter())
            .map(|(eta, d, alpha)| eta + d * e + alpha * e_square)
            .collect();

        // Assemble the proof
        Ok(RangeProof {
            a: a.compress(),
            a1: a1.compress(),
            b: b.compress(),
            r1,
            s1,
            d1,
            li: li.iter().map(|p| p.compress()).collect(),
            ri: ri.iter().map(|p| p.compress()).collect(),
            extension_degree: statement.generators.extension_degree(),
        })
    }

    fn verify_statements_and_generators_consistency(
        statements: &[RangeStatement<P>],
        range_proofs: &[RangeProof<P>],
    ) -> Result<(usize, usize), ProofError> {
        let first_statement = statements
            .first()
            .ok_or(ProofError::InvalidArgument("Empty proof statements".to_string()))?;
        let first_proof = range_proofs
            .first()
            .ok_or(ProofError::InvalidArgument("Empty proofs".to_string()))?;
        if statements.len() != range_proofs.len() {
            return Err(ProofError::InvalidArgument(
                "Range statements and proofs length mismatch".to_string(),
            ));
        }

        let g_base_vec = first_statement.generators.g_bases();
        let h_base = first_statement.generators.h_base();
        let bit_length = first_statement.generators.bit_length();
        let mut max_mn = first_statement
            .commitments
            .len()
            .checked_mul(first_statement.generators.bit_length())
            .ok_or(ProofError::SizeOverflow)?;
        let mut max_index = 0;
        let extension_degree = first_statement.generators.extension_degree();

        if extension_degree != ExtensionDegree::try_from(first_proof.d1.len())? {
            return Err(ProofError::InvalidArgument("Inconsistent extension degree".to_string()));
        }
        for (i, (statement, proof)) in statements.iter().zip(range_proofs.iter()).enumerate().skip(1) {
            if g_base_vec != statement.generators.g_bases() {
                return Err(ProofError::InvalidArgument(
                    "Inconsistent G generator point in batch statement".to_string(),
                ));
            }
            if h_base != statement.generators.h_base() {
                return Err(ProofError::InvalidArgument(
                    "Inconsistent H generator point in batch statement".to_string(),
                ));
            }
            if bit_length != statement.generators.bit_length() {
                return Err(ProofError::InvalidArgument(
                    "Inconsistent bit length in batch statement".to_string(),
                ));
            }
            if extension_degree != statement.generators.extension_degree() ||
                extension_degree != ExtensionDegree::try_from(proof.d1.len())?
            {
                return Err(ProofError::InvalidArgument("Inconsistent extension degree".to_string()));
            }
            let full_length = statement
                .commitments
                .len()
                .checked_mul(statement.generators.bit_length())
                .ok_or(ProofError::SizeOverflow)?;
            if full_length > max_mn {
                max_mn = full_length;
                max_index = i;
            }
        }
        let max_statement = statements
            .get(max_index)
            .ok_or(ProofError::InvalidArgument("Out of bounds statement index".to_string()))?;
        for (i, statement) in statements.iter().enumerate() {
            for value in Iterator::flatten(statement.minimum_value_promises.iter()) {
                // If the bit length is 64, no 64-bit value can exceed the capacity
                if bit_length < 64 && value >> bit_length > 0 {
                    return Err(ProofError::InvalidLength(
                        "Minimum value promise exceeds bit vector capacity".to_string(),
                    ));
                }
            }
            if i == max_index {
                continue;
            }
            // Statements cloned from the same generators share their precomputation tables, in which case the
            // expensive element-wise comparisons can be skipped
            if statement.generators.shares_generator_data(&max_statement.generators) {
                continue;
            }
            if statement
                .generators
                .gi_base_iter()
                .zip(max_statement.generators.gi_base_iter())
                .any(|(a, b)| a != b)
            {
                return Err(ProofError::InvalidArgument(
                    "Inconsistent Gi generator point vector in batch statement".to_string(),
                ));
            }
            if statement
                .generators
                .hi_base_iter()
                .zip(max_statement.generators.hi_base_iter())
                .any(|(a, b)| a != b)
            {
                return Err(ProofError::InvalidArgument(
                    "Inconsistent Hi generator point vector in batch statement".to_string(),
                ));
            }
        }

        Ok((max_mn, max_index))
    }

    /// Wrapper function for batch verification in different modes: mask recovery, verification, or both
    pub fn verify_batch(
        transcripts: &mut [Transcript],
        statements: &[RangeStatement<P>],
        proofs: &[RangeProof<P>],
        action: VerifyAction,
    ) -> Result<Vec<Option<ExtendedMask>>, ProofError> {
        // By definition, an empty batch fails
        if statements.is_empty() || proofs.is_empty() || transcripts.is_empty() {
            return Err(ProofError::InvalidArgument(
                "Range statements or proofs length empty".to_string(),
            ));
        }
        // We need to check for size consistency here, even though it's also done later
        if statements.len() != proofs.len() {
            return Err(ProofError::InvalidArgument(
                "Range statements and proofs length mismatch".to_string(),
            ));
        }
        if transcripts.len() != statements.len() {
            return Err(ProofError::InvalidArgument(
                "Range statements and transcripts length mismatch".to_string(),
            ));
        }

        // Store masks from all results
        let mut masks = Vec::<Option<ExtendedMask>>::with_capacity(proofs.len());

        // Get chunks of the transcripts, statements, and proofs
        // The transcripts must be chunked alongside the statements and proofs so that each chunk verifies against its
        // own transcripts; otherwise chunks after the first would incorrectly reuse the leading transcripts
        let chunks = izip!(
            transcripts.chunks_mut(MAX_RANGE_PROOF_BATCH_SIZE),
            statements.chunks(MAX_RANGE_PROOF_BATCH_SIZE),
            proofs.chunks(MAX_RANGE_PROOF_BATCH_SIZE),
        );

        // If any batch fails, propagate the error; otherwise, store the masks and keep going
        for (batch_transcripts, batch_statements, batch_proofs) in chunks {
            let mut result = RangeProof::verify(batch_transcripts, batch_statements, batch_proofs, action)?;

            masks.append(&mut result);
        }

        Ok(masks)
    }

    // Verify a batch of single and/or aggregated range proofs as a public entity, or recover the masks for single
    // range proofs by a party that can supply the optional seed nonces
    fn verify(
        transcripts: &mut [Transcript],
        statements: &[RangeStatement<P>],
        range_proofs: &[RangeProof<P>],
        extract_masks: VerifyAction,
    ) -> Result<Vec<Option<ExtendedMask>>, ProofError> {
        // Verify generators consistency & select largest aggregation factor
        let (max_mn, max_index) = RangeProof::verify_statements_and_generators_consistency(statements, range_proofs)?;
        let first_statement = statements
            .first()
            .ok_or(ProofError::InvalidArgument("Empty proof statements".to_string()))?;
        let max_statement = statements
            .get(max_index)
            .ok_or(ProofError::InvalidArgument("Out of bounds statement index".to_string()))?;

        // Set up useful values
        let g_base_vec = first_statement.generators.g_bases();
        let h_base = first_statement.generators.h_base();
        let bit_length = first_statement.generators.bit_length();
        let extension_degree = first_statement.generators.extension_degree() as usize;
        let g_bases_compressed = first_statement.generators.g_bases_compressed();
        let h_base_compressed = first_statement.generators.h_base_compressed();
        let precomp = max_statement.generators.precomp();

        // Compute 2**n-1 for later use
        let two = Scalar::from(2u8);
        let two_n_minus_one = two.pow_vartime([bit_length as u64]) - Scalar::ONE;

        // Weighted coefficients for common generators
        let mut g_base_scalars = vec![Scalar::ZERO; extension_degree];
        let mut h_base_scalar = Scalar::ZERO;
        let mut gi_base_scalars = vec![Scalar::ZERO; max_mn];
        let mut hi_base_scalars = vec![Scalar::ZERO; max_mn];

        // Final multiscalar multiplication data
        // Because we use precomputation on the generator vectors, we need to separate the static data from the dynamic
        // data. However, we can't combine precomputation data, so the Pedersen generators go with the dynamic
        // data :(
        let mut msm_dynamic_len = extension_degree.checked_add(1).ok_or(ProofError::SizeOverflow)?;
        for (statement, proof) in statements.iter().zip(range_proofs.iter()) {
            msm_dynamic_len = msm_dynamic_len
                .checked_add(statement.commitments.len())
                .ok_or(ProofError::SizeOverflow)?;
            msm_dynamic_len = msm_dynamic_len.checked_add(3).ok_or(ProofError::SizeOverflow)?;
            msm_dynamic_len = msm_dynamic_len
                .checked_add(proof.li.len().checked_mul(2).ok_or(ProofError::SizeOverflow)?)
                .ok_or(ProofError::SizeOverflow)?;
        }
        let mut dynamic_scalars: Vec<Scalar> = Vec::with_capacity(msm_dynamic_len);
        let mut dynamic_points: Vec<P> = Vec::with_capacity(msm_dynamic_len);

        // Recovered masks
        let mut masks = Vec::with_capacity(range_proofs.len());

        // Set up the weight transcript
        let mut weight_transcript = Transcript::new(b"Bulletproofs+ verifier weights");

        // Generate challenges from all proofs in the batch, using the final transcript RNG of each to obtain a new
        // weight
        let mut batch_challenges = Vec::with_capacity(range_proofs.len());
        for (proof, statement, transcript) in izip!(range_proofs, statements, transcripts) {
            let mut null_rng = NullRng;

            // Start the transcript, using `NullRng` since we don't need or want actual randomness there
            let mut transcript = RangeProofTranscript::new(
                transcript,
                &h_base_compressed,
                g_bases_compressed,
                bit_length,
                extension_degree,
                statement.commitments.len(),
                statement,
                None,
                &mut null_rng,
            )?;

            // Get the challenges and include them in the batch vectors
            let (y, z) = transcript.challenges_y_z(&proof.a)?;
            let round_e = proof
                .li
                .iter()
                .zip(proof.ri.iter())
                .map(|(l, r)| transcript.challenge_round_e(l, r))
                .collect::<Result<Vec<Scalar>, ProofError>>()?;
            let e = transcript.challenge_final_e(&proof.a1, &proof.b)?;

            batch_challenges.push((y, z, round_e, e));

            // Use the transcript RNG to bind this proof to the weight transcript
            let mut transcript_rng = transcript.to_verifier_rng(&proof.r1, &proof.s1, &proof.d1);
            let mut bytes = vec![0u8; 32];
            transcript_rng.fill_bytes(&mut bytes);
            weight_transcript.append_message(b"proof", &bytes);
        }

        // Finalize the weight transcript so it can be used for pseudorandom weights
        let mut weight_transcript_rng = weight_transcript.build_rng().finalize(&mut NullRng);

        // Process each proof and add it to the batch
        for (proof, statement, batch_challenge) in izip!(range_proofs, statements, batch_challenges) {
            let r1 = proof.r1;
            let s1 = proof.s1;
            let d1 = &proof.d1;

            // Useful lengths
            let aggregation_factor = statement.commitments.len();
            let full_length = aggregation_factor
                .checked_mul(bit_length)
                .ok_or(ProofError::SizeOverflow)?;
            let rounds = proof.li.len();

            if proof.li.len() != proof.ri.len() {
                return Err(ProofError::InvalidLength(
                    "Vector L length not equal to vector R length".to_string(),
                ));
            }

            // Check for an overflow from the number of rounds
            let rounds_u32 = u32::try_from(rounds).map_err(|_| ProofError::SizeOverflow)?;
            if rounds_u32.leading_zeros() == 0 {
                return Err(ProofError::SizeOverflow);
            }
            if 1usize.checked_shl(rounds_u32).ok_or(ProofError::SizeOverflow)? != full_length {
                return Err(ProofError::InvalidLength("Vector L/R length not adequate".to_string()));
            }

            // Parse out the challenges
            let (y, z, challenges, e) = batch_challenge;

            // Compute challenge inverses in a batch
            let mut challenges_inv = challenges.clone();
            challenges_inv.extend_from_slice(&[y, y - Scalar::ONE]);
            let challenges_inv_prod = Scalar::invert_batch_alloc(&mut challenges_inv) * y * (y - Scalar::ONE);
            let y_1_inverse = challenges_inv
                .pop()
                .ok_or(ProofError::VerificationFailed("Unexpected vector error".to_string()))?;
            let y_inverse = challenges_inv
                .pop()
                .ok_or(ProofError::VerificationFailed("Unexpected vector error".to_string()))?;

            // Compute useful challenge values
            let z_square = z * z;
            let e_square = e * e;
            let challenges_sq: Vec<Scalar> = challenges.iter().map(|c| c * c).collect();
            let challenges_sq_inv: Vec<Scalar> = challenges_inv.iter().map(|c| c * c).collect();
            let y_nm = y.pow_vartime([full_length as u64]);
            let y_nm_1 = y_nm * y;

            // Decompress the proof elements; this validates their encodings, so it must happen even when only
            // recovering masks
            let a = proof.a_decompressed()?;
            let a1 = proof.a1_decompressed()?;
            let b = proof.b_decompressed()?;
            let li = proof.li_decompressed()?;
            let ri = proof.ri_decompressed()?;

            // Recover the mask if possible (only for non-aggregated proofs)
            match extract_masks {
                VerifyAction::VerifyOnly => masks.push(None),
                _ => {
                    if let Some(seed_nonce) = statement.seed_nonce {
                        // Divisions by `e_square` and by `z_square * y_nm_1` are folded into a single inversion,
                        // hoisted out of the loop since it does not depend on `k`
                        let denominator_inverse = (e_square * z_square * y_nm_1).invert();
                        let mut temp_masks = Vec::with_capacity(extension_degree);
                        for (k, d1_val) in d1.iter().enumerate().take(extension_degree) {
                            let mut residue = nonce(&seed_nonce, "alpha", None, Some(k))?;
                            for (j, (challenge_sq, challenge_sq_inv)) in
                                challenges_sq.iter().zip(challenges_sq_inv.iter()).enumerate()
                            {
                                residue += challenge_sq * nonce(&seed_nonce, "dL", Some(j), Some(k))?;
                                residue += challenge_sq_inv * nonce(&seed_nonce, "dR", Some(j), Some(k))?;
                            }
                            let this_mask = (*d1_val -
                                nonce(&seed_nonce, "eta", None, Some(k))? -
                                e * nonce(&seed_nonce, "d", None, Some(k))? -
                                residue * e_square) *
                                denominator_inverse;
                            temp_masks.push(this_mask);
                        }
                        masks.push(Some(ExtendedMask::assign(extension_degree.try_into()?, temp_masks)?));
                    } else {
                        masks.push(None);
                    }
                    if extract_masks == VerifyAction::RecoverOnly {
                        continue;
                    }
                },
            }

            // Everything hereafter is only needed for verification, so mask-only recovery skips it entirely

            // Nonzero batch weight
            let weight = Scalar::random_not_zero(&mut weight_transcript_rng);

            // Compute the sum of powers of the challenge as a partial sum of a geometric series
            let y_sum = y * (y_nm - Scalar::ONE) * y_1_inverse;

            // Compute d's sum efficiently
            let mut d_sum = z_square;
            let mut d_sum_temp_z = z_square;
            for _ in 0..aggregation_factor.ilog2() {
                d_sum = d_sum + d_sum * d_sum_temp_z;
                d_sum_temp_z = d_sum_temp_z * d_sum_temp_z;
            }
            d_sum *= two_n_minus_one;

            // Aggregate the generator scalars
            let mut s = Vec::with_capacity(full_length);
            s.push(challenges_inv_prod);
            for i in 1..full_length {
                let log_i = usize::try_from(i.checked_ilog2().ok_or(ProofError::SizeOverflow)?)
                    .map_err(|_| ProofError::SizeOverflow)?;
                let j = 1 << log_i;
                #[allow(clippy::arithmetic_side_effects)]
                s.push(
                    s.get(i - j).ok_or(ProofError::SizeOverflow)? *
                        challenges_sq.get(rounds - log_i - 1).ok_or(ProofError::SizeOverflow)?,
                );
            }

            // The batch weight is folded into the per-proof constants so that each term costs one fewer
            // multiplication, and `d[i] * y**(nm - i)` is tracked incrementally rather than materializing `d`:
            // - within a bit block, `d` doubles while the power of `y` decrements: multiply by `2 * y**(-1)`
            // - crossing into the next aggregation block multiplies `d` by `z**2` and resets the doubling, so the
            //   tracker restarts from the previous block start multiplied by `z**2 * y**(-n)`
            let weighted_r1_e = weight * r1 * e;
            let weighted_s1_e = weight * s1 * e;
            let weighted_e_square = weight * e_square;
            let weighted_e_square_z = weighted_e_square * z;
            let two_y_inverse = two * y_inverse;
            let z_square_y_inverse_n = z_square * y_inverse.pow_vartime([bit_length as u64]);
            let mut weighted_r1_e_y_inv_i = weighted_r1_e;
            let mut block_start_d_y = z_square * y_nm;
            let mut d_y = block_start_d_y;
            #[allow(clippy::arithmetic_side_effects)]
            for (i, (s, s_rev, gi_base_scalar, hi_base_scalar)) in izip!(
                s.iter(),
                s.iter().rev(),
                gi_base_scalars.iter_mut(),
                hi_base_scalars.iter_mut()
            )
            .enumerate()
            {
                *gi_base_scalar += weighted_r1_e_y_inv_i * s + weighted_e_square_z;
                *hi_base_scalar += weighted_s1_e * s_rev - weighted_e_square * d_y - weighted_e_square_z;
                weighted_r1_e_y_inv_i *= y_inverse;
                // The bit length is a nonzero power of two and `i + 1` cannot overflow since `i < full_length`
                if (i + 1) % bit_length == 0 {
                    block_start_d_y *= z_square_y_inverse_n;
                    d_y = block_start_d_y;
                } else {
                    d_y *= two_y_inverse;
                }
            }

            // Remaining terms
            // Tally: `0 - x`, not `-x`: the same for reduced scalars, and the firmware then carries no `Neg` (2.3 KB)
            let neg_weighted_e_square = Scalar::ZERO - weighted_e_square;
            let neg_weighted_e_square_y_nm_1 = neg_weighted_e_square * y_nm_1;
            let mut z_even_powers = Scalar::ONE;
            for minimum_value_promise in &statement.minimum_value_promises {
                z_even_powers *= z_square;
                let weighted = neg_weighted_e_square_y_nm_1 * z_even_powers;
                dynamic_scalars.push(weighted);
                if let Some(minimum_value) = minimum_value_promise {
                    h_base_scalar -= weighted * Scalar::from(*minimum_value);
                }
            }
            dynamic_points.extend_from_slice(&statement.commitments);

            h_base_scalar += weight * (r1 * y * s1 + e_square * (y_nm_1 * z * d_sum + (z_square - z) * y_sum));
            for (g_base_scalar, d1) in g_base_scalars.iter_mut().zip(d1.iter()) {
                *g_base_scalar += weight * d1;
            }

            dynamic_scalars.push(Scalar::ZERO - weight * e);
            dynamic_points.push(a1);
            dynamic_scalars.push(Scalar::ZERO - weight);
            dynamic_points.push(b);
            dynamic_scalars.push(neg_weighted_e_square);
            dynamic_points.push(a);

            dynamic_scalars.extend(challenges_sq.into_iter().map(|c| neg_weighted_e_square * c));
            dynamic_points.extend(li);
            dynamic_scalars.extend(challenges_sq_inv.into_iter().map(|c| neg_weighted_e_square * c));
            dynamic_points.extend(ri);
        }
        if extract_masks == VerifyAction::RecoverOnly {
            return Ok(masks);
        }

        // Pedersen generators
        dynamic_scalars.extend_from_slice(&g_base_scalars);
        dynamic_points.extend_from_slice(g_base_vec);
        dynamic_scalars.push(h_base_scalar);
        dynamic_points.push(h_base.clone());

        // Compute the generator padding for the precomputed evaluation. This also guards against any statement's
        // commitments exceeding the generators' aggregation capacity, so it must run regardless of which multiscalar
        // multiplication strategy is chosen below
        let padding = compute_generator_padding(
            max_statement.generators.bit_length(),
            max_statement.commitments.len(),
            max_statement.generators.max_aggregation_factor(),
        )?;

        // Perform the final check, choosing the multiscalar multiplication strategy by estimated cost
        let static_count = max_mn.saturating_mul(2);
        let dynamic_count = dynamic_scalars.len();
        let pippenger_cost = estimate_pippenger_cost(static_count.saturating_add(dynamic_count));
        let batch_is_valid = if let Some(group) = max_statement.generators.msm_chunk() {
            // Generators from a source (low-memory patch): produced on demand, `group` of them held at a time and
            // multiplied by the bucket method, the proofs' own points with the last group
            let group = group.max(1);
            let mut gi = max_statement.generators.gi_base_iter().take(max_mn);
            let mut hi = max_statement.generators.hi_base_iter().take(max_mn);
            let mut sum = P::identity();
            let mut start = 0usize;
            loop {
                let end = start.saturating_add(group.div_ceil(2)).min(max_mn);
                let g_points: Vec<P> = gi.by_ref().take(end - start).collect();
                let h_points: Vec<P> = hi.by_ref().take(end - start).collect();
                let g_scalars = gi_base_scalars.get(start..end).unwrap_or(&[]);
                let h_scalars = hi_base_scalars.get(start..end).unwrap_or(&[]);
                if end == max_mn {
                    sum += bucket_msm(&[
                        (g_scalars, &g_points[..]),
                        (h_scalars, &h_points[..]),
                        (&dynamic_scalars[..], &dynamic_points[..]),
                    ])?;
                    break;
                }
                sum += bucket_msm(&[(g_scalars, &g_points[..]), (h_scalars, &h_points[..])])?;
                start = end;
            }
            sum == P::identity()
        } else if pippenger_cost < estimate_straus_cost(static_count, dynamic_count) {
            P::vartime_multiscalar_mul(
                gi_base_scalars
                    .iter()
                    .interleave(hi_base_scalars.iter())
                    .chain(dynamic_scalars.iter()),
                max_statement
                    .generators
                    .gi_base_iter()
                    .take(max_mn)
                    .interleave(max_statement.generators.hi_base_iter().take(max_mn))
                    .chain(dynamic_points.iter().cloned()),
            ) == P::identity()
        } else {
            let precomp = precomp.ok_or(ProofError::InvalidArgument("No precomputed generators".to_string()))?;
            precomp.vartime_mixed_multiscalar_mul(
                gi_base_scalars
                    .iter()
                    .interleave(hi_base_scalars.iter())
                    .chain(repeat_n(&Scalar::ZERO, padding)),
                dynamic_scalars.iter(),
                dynamic_points.iter(),
            ) == P::identity()
        };
        if !batch_is_valid {
            return Err(ProofError::VerificationFailed(
                "Range proof batch not valid".to_string(),
            ));
        }

        Ok(masks)
    }

    fn a_decompressed(&self) -> Result<P, ProofError> {
        self.a.decompress().ok_or_else(|| {
            ProofError::InvalidArgument("Member 'a' was not the canonical encoding of a point".to_string())
        })
    }

    // Helper function to decompress A1
    fn a1_decompressed(&self) -> Result<P, ProofError> {
        self.a1.decompress().ok_or_else(|| {
            ProofError::InvalidArgument("Member 'a1' was not the canonical encoding of a point".to_string())
        })
    }

    // Helper function to decompress B
    fn b_decompressed(&self) -> Result<P, ProofError> {
        self.b.decompress().ok_or_else(|| {
            ProofError::InvalidArgument("Member 'b' was not the canonical encoding of a point".to_string())
        })
    }

    // Helper function to decompress Li
    fn li_decompressed(&self) -> Result<Vec<P>, ProofError> {
        self.li
            .iter()
            .map(|p| {
                p.decompress().ok_or(ProofError::InvalidArgument(
                    "An item in member 'L' was not the canonical encoding of a point".to_string(),
                ))
            })
            .collect()
    }

    // Helper function to decompress Ri
    fn ri_decompressed(&self) -> Result<Vec<P>, ProofError> {
        self.ri
            .iter()
            .map(|p| {
                p.decompress().ok_or(ProofError::InvalidArgument(
                    "An item in member 'R' was not the canonical encoding of a point".to_string(),
                ))
            })
            .collect()
    }
}

impl<P> RangeProof<P>
where
    P: Compressable,
    P::Compressed: FixedBytesRepr,
{
    /// Serializes the proof into a canonical byte array
    /// The first byte is an encoding of the extension degree, which tells us the length of `d1`
    /// Then we serialize the rest of the proof elements as canonical byte encodings
    pub fn to_bytes(&self) -> Vec<u8> {
        // The total proof size: extension degree encoding, fixed elements, vectors
        #[allow(clippy::arithmetic_side_effects)]
        let mut buf = Vec::with_capacity(
            ENCODED_EXTENSION_SIZE +
                (self.li.len() + self.ri.len() + FIXED_PROOF_ELEMENTS + self.d1.len()) * SERIALIZED_ELEMENT_SIZE,
        );

        // Encode the extension degree as a single byte
        buf.extend_from_slice(&(self.extension_degree as u8).to_le_bytes());

        // Encode `d1`, whose size is set by the extension degree
        for d1 in &self.d1 {
            buf.extend_from_slice(d1.as_bytes());
        }

        // Encode the fixed proof elements
        buf.extend_from_slice(self.a.as_fixed_bytes());
        buf.extend_from_slice(self.a1.as_fixed_bytes());
        buf.extend_from_slice(self.b.as_fixed_bytes());
        buf.extend_from_slice(self.r1.as_bytes());
        buf.extend_from_slice(self.s1.as_bytes());

        // Encode the remaining vectors, interleaved for easier deserialization
        for (l, r) in self.li.iter().zip(self.ri.iter()) {
            buf.extend_from_slice(l.as_fixed_bytes());
            buf.extend_from_slice(r.as_fixed_bytes());
        }

        buf
    }

    /// Deserializes the proof from a canonical byte slice
    /// First we parse the extension degree, validate it, and use it to parse `d1`
    /// Then we parse the remainder of the proof elements, inferring the lengths of `li` and `ri`
    pub fn from_bytes(slice: &[u8]) -> Result<Self, ProofError> {
        // Helper to parse a scalar from a chunk iterator
        let parse_scalar =
            |chunks: &mut core::slice::Iter<'_, [u8; SERIALIZED_ELEMENT_SIZE]>| -> Result<Scalar, ProofError> {
                chunks
                    .next()
                    .ok_or(ProofError::InvalidLength("Serialized proof is too short".to_string()))
                    .and_then(|bytes| {
                        Option::<Scalar>::from(Scalar::from_canonical_bytes(*bytes))
                            .ok_or(ProofError::InvalidArgument("Invalid parsing".to_string()))
                    })
            };

        // Helper to parse a compressed point from a chunk iterator
        let parse_point = |chunks: &mut core::slice::Iter<'_, [u8; SERIALIZED_ELEMENT_SIZE]>| -> Result<
            <P as Compressable>::Compressed,
            ProofError,
        > {
            chunks
                .next()
                .ok_or(ProofError::InvalidLength("Serialized proof is too short".to_string()))
                .map(|bytes| <P as Compressable>::Compressed::from_fixed_bytes(*bytes))
        };

        // Get the extension degree, which is encoded as a single byte
        let extension_degree = ExtensionDegree::try_from(
            *(slice
                .first()
                .ok_or_else(|| ProofError::InvalidLength("Serialized proof is too short".to_string()))?),
        )?;

        // The rest of the serialization is of encoded proof elements
        let (element_chunks, chunk_remainder) = slice
            .get(ENCODED_EXTENSION_SIZE..)
            .ok_or(ProofError::InvalidLength("Serialized proof is too short".to_string()))?
            .as_chunks::<SERIALIZED_ELEMENT_SIZE>();
        let mut chunks = element_chunks.iter();

        // Extract `d1`, whose length is determined by the extension degree
        let d1 = (0..extension_degree as usize)
            .map(|_| parse_scalar(&mut chunks))
            .collect::<Result<Vec<Scalar>, ProofError>>()?;

        // Extract the fixed proof elements
        let a = parse_point(&mut chunks)?;
        let a1 = parse_point(&mut chunks)?;
        let b = parse_point(&mut chunks)?;
        let r1 = parse_scalar(&mut chunks)?;
        let s1 = parse_scalar(&mut chunks)?;

        // Extract the inner-product folding vectors `li` and `ri`
        let mut tuples = chunks
            .by_ref()
            .tuples::<(&[u8; SERIALIZED_ELEMENT_SIZE], &[u8; SERIALIZED_ELEMENT_SIZE])>();
        let (li, ri): (
            Vec<<P as Compressable>::Compressed>,
            Vec<<P as Compressable>::Compressed>,
        ) = tuples
            .by_ref()
            .map(|(l, r)| {
                (
                    <P as Compressable>::Compressed::from_fixed_bytes(*l),
                    <P as Compressable>::Compressed::from_fixed_bytes(*r),
                )
            })
            .unzip();

        // The inner-product folding vectors should not be empty
        if li.is_empty() || ri.is_empty() {
            return Err(ProofError::InvalidLength("Serialized proof is too short".to_string()));
        }

        // We want to ensure that no data remains unused, to ensure serialization is canonical
        // To do so, we check two things:
        // - the tuple iterator has no leftover data, meaning an extra proof element
        // - the chunk iterator has no leftover data, meaning extra bytes that don't yield a full proof element
        if tuples.into_buffer().len() > 0 || !chunk_remainder.is_empty() {
            return Err(ProofError::InvalidLength(
                "Unused data after deserialization".to_string(),
            ));
        }

        Ok(RangeProof {
            a,
            a1,
            b,
            r1,
            s1,
            d1,
            li,
            ri,
            extension_degree,
        })
    }

    /// Helper function to return the serialized proof's extension degree
    pub fn extension_degree_from_proof_bytes(slice: &[u8]) -> Result<ExtensionDegree, ProofError> {
        ExtensionDegree::try_from(
            *(slice
                .first()
                .ok_or_else(|| ProofError::InvalidLength("Serialized proof is too short".to_string()))?)
                as usize,
        )
    }
}

impl<P> Serialize for RangeProof<P>
where
    P: Compressable,
    P::Compressed: FixedBytesRepr,
{
    fn serialize<S>(&self, serializer: S) -> Result<S::Ok, S::Error>
    where S: Serializer {
        serializer.serialize_bytes(&self.to_bytes()[..])
    }
}

impl<'de, P> Deserialize<'de> for RangeProof<P>
where
    P: Compressable,
    P::Compressed: FixedBytesRepr,
{
    fn deserialize<D>(deserializer: D) -> Result<Self, D::Error>
    where D: Deserializer<'de> {
        struct RangeProofVisitor<B>(PhantomData<B>);

        impl<'de, T> Visitor<'de> for RangeProofVisitor<T>
        where
            T: Compressable,
            T::Compressed: FixedBytesRepr,
        {
            type Value = RangeProof<T>;

            fn expecting(&self, formatter: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                formatter.write_str("a valid RangeProof")
            }

            fn visit_bytes<E>(self, v: &[u8]) -> Result<RangeProof<T>, E>
            where E: serde::de::Error {
                RangeProof::from_bytes(v).map_err(|_| serde::de::Error::custom("deserialization error"))
            }
        }

        deserializer.deserialize_bytes(RangeProofVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use core::convert::TryFrom;

    use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
    use rand_chacha::ChaCha12Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::{
        BulletproofGens,
        commitment_opening::CommitmentOpening,
        generators::pedersen_gens::ExtensionDegree,
        range_parameters::RangeParameters,
        ristretto::{RistrettoRangeProof, create_pedersen_gens_with_extension_degree},
    };

    #[test]
    fn test_serialized_element_size() {
        // Check that the serialized proof element size constant is correct (at least for Ristretto)
        assert_eq!(
            RistrettoPoint::identity().compress().as_bytes().len(),
            SERIALIZED_ELEMENT_SIZE
        );
        assert_eq!(Scalar::ZERO.as_bytes().len(), SERIALIZED_ELEMENT_SIZE);
    }

    #[test]
    fn test_from_bytes() {
        assert!((RistrettoRangeProof::from_bytes(&[])).is_err());
        assert!((RistrettoRangeProof::from_bytes(Scalar::ZERO.as_bytes().as_slice())).is_err());
        let proof = RistrettoRangeProof {
            a: CompressedRistretto::identity(),
            a1: CompressedRistretto::identity(),
            b: CompressedRistretto::identity(),
            r1: Scalar::ZERO,
            s1: Scalar::ZERO,
            d1: vec![],
            li: vec![],
            ri: vec![],
            extension_degree: ExtensionDegree::DefaultPedersen,
        };
        let proof_bytes = proof.to_bytes();
        assert!(RistrettoRangeProof::from_bytes(&proof_bytes).is_err());

        let proof = RistrettoRangeProof {
            a: CompressedRistretto::identity(),
            a1: CompressedRistretto::identity(),
            b: CompressedRistretto::identity(),
            r1: Scalar::ZERO,
            s1: Scalar::ZERO,
            d1: vec![Scalar::ZERO],
            li: vec![CompressedRistretto::identity()],
            ri: vec![CompressedRistretto::identity()],
            extension_degree: ExtensionDegree::DefaultPedersen,
        };
        let proof_bytes = proof.to_bytes();
        assert!(RistrettoRangeProof::from_bytes(&proof_bytes).is_ok());
        assert_eq!(proof.extension_degree(), proof.extension_degree);
        assert_eq!(
            RistrettoRangeProof::extension_degree_from_proof_bytes(&proof_bytes).unwrap(),
            proof.extension_degree()
        );

        let proof = RistrettoRangeProof {
            a: CompressedRistretto::identity(),
            a1: CompressedRistretto::identity(),
            b: CompressedRistretto::identity(),
            r1: Scalar::ZERO,
            s1: Scalar::ZERO,
            d1: vec![
                Scalar::ZERO,
                Scalar::ZERO,
                Scalar::ZERO,
                Scalar::ZERO,
                Scalar::ZERO,
                Scalar::ZERO,
            ],
            li: vec![CompressedRistretto::identity()],
            ri: vec![CompressedRistretto::identity()],
            extension_degree: ExtensionDegree::AddFiveBasePoints,
        };
        let proof_bytes = proof.to_bytes();
        assert_eq!(proof.extension_degree(), proof.extension_degree);
        assert_eq!(
            RistrettoRangeProof::extension_degree_from_proof_bytes(&proof_bytes).unwrap(),
            proof.extension_degree()
        );
        assert!(RistrettoRangeProof::from_bytes(&proof_bytes).is_ok());
        let mut proof_bytes_meddled = proof_bytes.clone();

        for i in 0..u8::MAX {
            if ExtensionDegree::try_from(i).is_err() {
                proof_bytes_meddled[0] = i;
                assert!(RistrettoRangeProof::from_bytes(&proof_bytes_meddled).is_err());
                break;
            }
        }

        for i in 0..proof_bytes.len() {
            match RistrettoRangeProof::from_bytes(&proof_bytes[..proof_bytes.len() - i]) {
                Ok(proof_from_bytes) => {
                    assert_eq!(proof, proof_from_bytes);
                    assert_eq!(i, 0)
                },
                Err(_) => {
                    assert_ne!(i, 0)
                },
            }
        }

        let mut proof_bytes_meddled = proof_bytes.clone();
        for i in 0..proof_bytes.len() * 10 {
            proof_bytes_meddled.append(&mut 0u8.to_le_bytes().to_vec());
            match RistrettoRangeProof::from_bytes(&proof_bytes_meddled) {
                Ok(_) => {
                    // Adding two zero-valued byte representations of CompressedRistretto would be valid
                    assert_eq!((i + 1) % 64, 0);
                },
                Err(_) => {
                    assert_ne!((i + 1) % 64, 0);
                },
            }
        }
    }

    #[test]
    fn test_consistency_errors() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Generate two proofs
        let params = RangeParameters::init(
            4,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        let mut witnesses = Vec::new();
        let mut statements = Vec::new();
        let mut proofs = Vec::new();
        for _ in 0..2 {
            witnesses.push(RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap());
            statements.push(
                RangeStatement::init(
                    params.clone(),
                    vec![params.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
                    vec![None],
                    None,
                )
                .unwrap(),
            );
            proofs.push(
                RangeProof::prove_with_rng(
                    &mut Transcript::new(b"Test"),
                    statements.last().unwrap(),
                    witnesses.last().unwrap(),
                    &mut rng,
                )
                .unwrap(),
            );
        }

        // Empty vectors
        assert!(RangeProof::verify_statements_and_generators_consistency(&[], &proofs).is_err());
        assert!(RangeProof::verify_statements_and_generators_consistency(&statements, &[]).is_err());

        // Vector length mismatch
        assert!(RangeProof::verify_statements_and_generators_consistency(&statements, &proofs[..1]).is_err());

        // Make the first statement's extension degree mismatch against the corresponding proof
        let params_mismatch = RangeParameters::init(
            4,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::AddOneBasePoint),
        )
        .unwrap();
        let statement_mismatch = RangeStatement::init(
            params_mismatch.clone(),
            vec![params_mismatch.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        assert!(RangeProof::verify_statements_and_generators_consistency(&[statement_mismatch], &proofs[..1]).is_err());

        // Make the second statement's `g_base_vec` mismatch against the first statement
        let mut gens_mismatch = create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen);
        gens_mismatch.g_base_vec[0] = RistrettoPoint::identity();
        let params_mismatch = RangeParameters::init(4, 1, gens_mismatch).unwrap();
        let statement_mismatch = RangeStatement::init(
            params_mismatch.clone(),
            vec![params_mismatch.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        assert!(
            RangeProof::verify_statements_and_generators_consistency(
                &[statements[0].clone(), statement_mismatch],
                &proofs
            )
            .is_err()
        );

        // Make the second statement's `h_base` mismatch against the first statement
        let mut gens_mismatch = create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen);
        gens_mismatch.h_base = RistrettoPoint::identity();
        let params_mismatch = RangeParameters::init(4, 1, gens_mismatch).unwrap();
        let statement_mismatch = RangeStatement::init(
            params_mismatch.clone(),
            vec![params_mismatch.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        assert!(
            RangeProof::verify_statements_and_generators_consistency(
                &[statements[0].clone(), statement_mismatch],
                &proofs
            )
            .is_err()
        );

        // Make the second statement's bit length mismatch against the first statement
        let params_mismatch = RangeParameters::init(
            2,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        let statement_mismatch = RangeStatement::init(
            params_mismatch.clone(),
            vec![params_mismatch.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        assert!(
            RangeProof::verify_statements_and_generators_consistency(
                &[statements[0].clone(), statement_mismatch],
                &proofs
            )
            .is_err()
        );

        // Make the second statement's extension degree mismatch against the first statement
        let mut gens_mismatch = create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen);
        gens_mismatch.extension_degree = ExtensionDegree::AddOneBasePoint;
        let params_mismatch = RangeParameters::init(4, 1, gens_mismatch).unwrap();
        let statement_mismatch = RangeStatement::init(
            params_mismatch.clone(),
            vec![params_mismatch.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        assert!(
            RangeProof::verify_statements_and_generators_consistency(
                &[statements[0].clone(), statement_mismatch],
                &proofs
            )
            .is_err()
        );

        // Use a minimum value promise exceeding the bit length
        let statement_invalid = RangeStatement::init(
            params.clone(),
            vec![params.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![Some(1 << 4)],
            None,
        )
        .unwrap();
        assert!(
            RangeProof::verify_statements_and_generators_consistency(
                &[statements[0].clone(), statement_invalid],
                &proofs
            )
            .is_err()
        );

        // Make the second statement's `gi_base` mismatch against the first statement
        let mut gens_mismatch = BulletproofGens::new(4, 1).unwrap();
        gens_mismatch.g_vec_mut()[0][0] = RistrettoPoint::identity();
        let params_mismatch = RangeParameters {
            bp_gens: gens_mismatch,
            pc_gens: create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        };
        let statement_mismatch = RangeStatement::init(
            params_mismatch.clone(),
            vec![params_mismatch.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        assert!(
            RangeProof::verify_statements_and_generators_consistency(
                &[statements[0].clone(), statement_mismatch],
                &proofs
            )
            .is_err()
        );

        // Make the second statement's `hi_base` mismatch against the first statement
        let mut gens_mismatch = BulletproofGens::new(4, 1).unwrap();
        gens_mismatch.h_vec_mut()[0][0] = RistrettoPoint::identity();
        let params_mismatch = RangeParameters {
            bp_gens: gens_mismatch,
            pc_gens: create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        };
        let statement_mismatch = RangeStatement::init(
            params_mismatch.clone(),
            vec![params_mismatch.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        assert!(
            RangeProof::verify_statements_and_generators_consistency(
                &[statements[0].clone(), statement_mismatch],
                &proofs
            )
            .is_err()
        );
    }

    #[test]
    fn test_getters() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Generate a valid proof
        let params = RangeParameters::init(
            4,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![params.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        let mut proof =
            RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).unwrap();

        // Mutate proof elements
        let mut bytes = [0u8; 32];
        bytes[0] = 1;

        proof.a = CompressedRistretto::from_fixed_bytes(bytes);
        assert!(proof.a_decompressed().is_err());

        proof.a1 = CompressedRistretto::from_fixed_bytes(bytes);
        assert!(proof.a1_decompressed().is_err());

        proof.b = CompressedRistretto::from_fixed_bytes(bytes);
        assert!(proof.b_decompressed().is_err());

        // Mutate proof vectors
        proof.li[0] = CompressedRistretto::from_fixed_bytes(bytes);
        assert!(proof.li_decompressed().is_err());

        proof.ri[0] = CompressedRistretto::from_fixed_bytes(bytes);
        assert!(proof.ri_decompressed().is_err());
    }

    #[test]
    fn test_extension_degree_from_proof_bytes() {
        assert!(RangeProof::<RistrettoPoint>::extension_degree_from_proof_bytes(&[]).is_err());
        assert!(RangeProof::<RistrettoPoint>::extension_degree_from_proof_bytes(&[0u8; 32]).is_err());
    }

    #[test]
    fn test_prover_consistency_errors() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Create range parameters to use for all tests
        let params = RangeParameters::init(
            4,
            2,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();

        // Witness openings do not correspond to number of statement commitments
        // The witness opens one commitment, but the statement opens two
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![
                params
                    .pc_gens
                    .commit(&Scalar::from(1u64), &witness.openings[0].r)
                    .unwrap();
                2
            ],
            vec![None, None],
            None,
        )
        .unwrap();
        assert!(RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).is_err());

        // Witness and statement extension degrees do not match
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE, Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![
                params
                    .pc_gens
                    .commit(&Scalar::from(1u64), &witness.openings[0].r[..1])
                    .unwrap(),
            ],
            vec![None],
            None,
        )
        .unwrap();
        assert!(RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).is_err());

        // Witness value overflows bit length
        let witness = RangeWitness::init(vec![CommitmentOpening::new(16u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![
                params
                    .pc_gens
                    .commit(&Scalar::from(16u64), &witness.openings[0].r)
                    .unwrap(),
            ],
            vec![None],
            None,
        )
        .unwrap();
        assert!(RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).is_err());

        // Witness opening is invalid for statement commitment
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![
                params
                    .pc_gens
                    .commit(&Scalar::from(2u64), &(witness.openings[0].r))
                    .unwrap(),
            ],
            vec![None],
            None,
        )
        .unwrap();
        assert!(RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).is_err());

        // Witness value does not meet minimum value promise
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![
                params
                    .pc_gens
                    .commit(&Scalar::from(1u64), &(witness.openings[0].r))
                    .unwrap(),
            ],
            vec![Some(2u64)],
            None,
        )
        .unwrap();
        assert!(RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).is_err());
    }

    #[test]
    fn test_verify_errors() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Generate a valid proof
        let params = RangeParameters::init(
            4,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![params.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        let mut proof =
            RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).unwrap();

        // Empty statement and proof vectors
        assert!(RangeProof::verify_batch(&mut [], &[], &[proof.clone()], VerifyAction::VerifyOnly).is_err());
        assert!(
            RangeProof::verify_batch(
                &mut [Transcript::new(b"Test")],
                core::slice::from_ref(&statement),
                &[],
                VerifyAction::VerifyOnly,
            )
            .is_err()
        );

        // Proof vector mismatches
        proof.li.pop();
        assert!(
            RangeProof::verify_batch(
                &mut [Transcript::new(b"Test")],
                core::slice::from_ref(&statement),
                &[proof.clone()],
                VerifyAction::VerifyOnly,
            )
            .is_err()
        );

        proof.ri.pop();
        assert!(
            RangeProof::verify_batch(
                &mut [Transcript::new(b"Test")],
                &[statement],
                &[proof],
                VerifyAction::VerifyOnly,
            )
            .is_err()
        );
    }

    #[test]
    fn test_recover_only_rejects_invalid_point_encodings() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Generate a valid proof with a seed nonce so that masks are recoverable
        let params = RangeParameters::init(
            4,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![params.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            Some(Scalar::random_not_zero(&mut rng)),
        )
        .unwrap();
        let mut proof =
            RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).unwrap();

        // A proof element that is not the canonical encoding of a point must be rejected even when only recovering
        // masks
        proof.a = CompressedRistretto([0xFF; 32]);
        assert!(
            RangeProof::verify_batch(
                &mut [Transcript::new(b"Test")],
                &[statement],
                &[proof],
                VerifyAction::RecoverOnly,
            )
            .is_err()
        );
    }

    #[test]
    fn test_batch_rejects_commitments_exceeding_generator_capacity() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Generate a valid aggregated proof against generators that support the aggregation factor
        let params = RangeParameters::init(
            4,
            2,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        let witness = RangeWitness::init(vec![
            CommitmentOpening::new(1u64, vec![Scalar::ONE]),
            CommitmentOpening::new(2u64, vec![Scalar::ONE]),
        ])
        .unwrap();
        let commitments = vec![
            params.pc_gens().commit(&Scalar::from(1u64), &[Scalar::ONE]).unwrap(),
            params.pc_gens().commit(&Scalar::from(2u64), &[Scalar::ONE]).unwrap(),
        ];
        let mut statement = RangeStatement::init(params, commitments, vec![None, None], None).unwrap();
        let proof = RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).unwrap();

        // Swap in generators whose aggregation capacity is too small for the commitments; verification must report
        // the size overflow rather than attempting a multiscalar multiplication with truncated generators
        statement.generators = RangeParameters::init(
            4,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        assert!(matches!(
            RangeProof::verify_batch(
                &mut [Transcript::new(b"Test")],
                &[statement],
                &[proof],
                VerifyAction::VerifyOnly,
            ),
            Err(ProofError::SizeOverflow)
        ));
    }

    #[test]
    fn test_msm_cost_estimates() {
        // A single 64-bit proof (128 static scalars, a handful of dynamic points) must use the precomputed tables
        assert!(estimate_straus_cost(128, 16) < estimate_pippenger_cost(128 + 16));

        // A large batch of single proofs must switch to Pippenger
        let dynamic_count = 257 * 16;
        assert!(estimate_pippenger_cost(128 + dynamic_count) < estimate_straus_cost(128, dynamic_count));
    }

    #[test]
    fn test_large_batch_invalid_proof_is_rejected() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Generate a single valid proof to replicate across a large batch
        let params = RangeParameters::init(
            4,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![params.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        let proof = RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).unwrap();

        // The batch must be large enough for the cost estimate to choose Pippenger over the precomputed tables, so
        // that rejection is exercised through the plain multiscalar multiplication path. Each proof contributes its
        // commitment, `a`, `a1`, `b`, and the `2 * log2(mn)` folding points to the dynamic column; the batch adds the
        // Pedersen bases once and shares `2 * mn` static generator scalars
        let n = 100;
        let dynamic_count = n * 8 + 2;
        let static_count = 8;
        assert!(
            estimate_pippenger_cost(static_count + dynamic_count) < estimate_straus_cost(static_count, dynamic_count),
            "batch too small to take the Pippenger path"
        );

        // The valid batch must verify
        let statements = vec![statement.clone(); n];
        let proofs = vec![proof.clone(); n];
        let mut transcripts = vec![Transcript::new(b"Test"); n];
        RangeProof::verify_batch(&mut transcripts, &statements, &proofs, VerifyAction::VerifyOnly).unwrap();

        // Corrupt a single proof; the batch must be rejected
        let mut proofs_bad = proofs;
        proofs_bad[n / 2].r1 += Scalar::ONE;
        let mut transcripts = vec![Transcript::new(b"Test"); n];
        assert!(
            RangeProof::verify_batch(&mut transcripts, &statements, &proofs_bad, VerifyAction::VerifyOnly).is_err(),
            "an invalid proof in a batch taking the Pippenger path must be detected"
        );
    }

    #[test]
    fn test_aggregation_lower_than_generators() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Create range parameters
        let params = RangeParameters::init(
            4,
            2,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();

        // Witness and statement correspond to fewer commitments than the aggregation factor
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![
                params
                    .pc_gens
                    .commit(&Scalar::from(1u64), &witness.openings[0].r)
                    .unwrap(),
            ],
            vec![None],
            None,
        )
        .unwrap();
        let proof = RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).unwrap();

        // The proof should verify
        RangeProof::verify_batch(
            &mut [Transcript::new(b"Test")],
            &[statement],
            &[proof],
            VerifyAction::VerifyOnly,
        )
        .unwrap();
    }

    #[test]
    fn test_batch_larger_than_max_batch_size_is_fully_verified() {
        let mut rng = ChaCha12Rng::seed_from_u64(8675309); // for testing only!

        // Generate a single valid proof to replicate across an oversized batch
        let params = RangeParameters::init(
            4,
            1,
            create_pedersen_gens_with_extension_degree(ExtensionDegree::DefaultPedersen),
        )
        .unwrap();
        let witness = RangeWitness::init(vec![CommitmentOpening::new(1u64, vec![Scalar::ONE])]).unwrap();
        let statement = RangeStatement::init(
            params.clone(),
            vec![params.pc_gens().commit(&Scalar::ONE, &[Scalar::ONE]).unwrap()],
            vec![None],
            None,
        )
        .unwrap();
        let proof = RangeProof::prove_with_rng(&mut Transcript::new(b"Test"), &statement, &witness, &mut rng).unwrap();

        // Use a batch that is one larger than the internal chunk size, so it spans two chunks
        let n = MAX_RANGE_PROOF_BATCH_SIZE + 1;
        let statements = vec![statement.clone(); n];

        // With every proof valid, all proofs must be verified and a mask slot returned for each
        let proofs = vec![proof.clone(); n];
        let mut transcripts = vec![Transcript::new(b"Test"); n];
        let masks = RangeProof::verify_batch(&mut transcripts, &statements, &proofs, VerifyAction::VerifyOnly).unwrap();
        assert_eq!(
            masks.len(),
            n,
            "a mask slot must be returned for every proof in the batch"
        );

        // Corrupt only the proof beyond the first chunk; the batch must now be rejected
        let mut proofs_bad = vec![proof.clone(); n];
        proofs_bad[MAX_RANGE_PROOF_BATCH_SIZE].r1 += Scalar::ONE;
        let mut transcripts = vec![Transcript::new(b"Test"); n];
        assert!(
            RangeProof::verify_batch(&mut transcripts, &statements, &proofs_bad, VerifyAction::VerifyOnly).is_err(),
            "an invalid proof beyond the first chunk must be detected"
        );
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)]
    fn test_s_logarithm() {
        for i in 1usize..64 {
            assert_eq!(
                (32 - 1 - (i as u32).leading_zeros()) as usize,
                usize::try_from(i.ilog2()).unwrap()
            );
        }
    }
}
