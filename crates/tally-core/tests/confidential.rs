//! The confidential-amounts core (`tally_core::confidential`): round trips,
//! every refusal the issue names with its typed error, properties over
//! values and blindings, byte-exact vectors and the fuzz corpus replay.
//!
//! Vectors: `TALLY_PRINT_VECTORS=1 cargo test -p tally-core --features
//! testkit,confidential --test confidential -- --nocapture vectors` prints
//! them; paste into `VECTORS` below and docs/spec-confidential-draft.md.
//! Fuzz seeds: `TALLY_WRITE_FUZZ_CORPUS=1 cargo test -p tally-core
//! --features testkit,confidential --test confidential seeds`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use proptest::prelude::*;
use tally_core::Amount;
use tally_core::codec::{Cbor, CodecError};
use tally_core::confidential::fuzzing::{ConfidentialFixture, check_confidential_objects};
use tally_core::confidential::{
    COMMITMENT_BYTES, Commitment, ConfidentialError, DerivedOpening, Opening, PayeeOpening,
    RANGE_PROOF_BYTES_MAX, RangeBits, RangeCheck, RangeGens, RangeProof, SealedOpening,
    balanced_openings, balanced_openings_with, batch_verify, blinding_base, check_balance, excess,
    opens_all, value_base,
};
use tally_core::crypto::{Hash32, PublicKey, SecretKey, Suite, tagged_hash};
use tally_core::testkit::{self, TestEntropy};

fn context(label: &[u8]) -> Hash32 {
    tagged_hash(b"tally/test/confidential-context", &[label])
}

/// Generators are costly to build: one set per bit-length for the whole
/// test binary, with capacity for four outputs.
fn gens(bits: RangeBits) -> &'static RangeGens {
    static G16: OnceLock<RangeGens> = OnceLock::new();
    static G32: OnceLock<RangeGens> = OnceLock::new();
    static G64: OnceLock<RangeGens> = OnceLock::new();
    let cell = match bits {
        RangeBits::Bits16 => &G16,
        RangeBits::Bits32 => &G32,
        RangeBits::Bits64 => &G64,
    };
    cell.get_or_init(|| RangeGens::new(bits, 4).unwrap())
}

fn openings(values: &[u64], rng: &mut TestEntropy) -> Vec<Opening> {
    values
        .iter()
        .map(|v| Opening::random(Amount(*v), rng))
        .collect()
}

fn commits(o: &[Opening]) -> Vec<Commitment> {
    o.iter().map(Opening::commit).collect()
}

/// `v·B + r·H` for a scalar `v` that no `u64` opening can hold (a negative
/// amount, `−v mod ℓ`).
fn commit_scalar(v: Scalar, r: Scalar) -> Commitment {
    let p: RistrettoPoint = v * RISTRETTO_BASEPOINT_POINT + r * blinding_base();
    Commitment::from_bytes(&p.compress().to_bytes()).unwrap()
}

// ---------------------------------------------------------------------------
// Commitments and openings

#[test]
fn bases_are_the_range_proofs_and_commitments_are_pedersen() {
    assert_eq!(value_base(), RISTRETTO_BASEPOINT_POINT);
    // H is tari's masking basepoint 1, pinned so a change of generator is
    // a visible wire change.
    assert_eq!(
        hex::encode(blinding_base().compress().as_bytes()),
        BLINDING_BASE_HEX
    );
    let r = Scalar::from(77u64);
    let o = Opening::from_parts(Amount(5), r).unwrap();
    assert_eq!(
        o.commit().point(),
        Scalar::from(5u64) * value_base() + r * blinding_base()
    );
}

/// Settlement's batched opening check (C7, decision 0028) says what
/// checking each opening says: true for honest openings, false when any
/// one is off — a value off by one, a blinding off by one, two openings
/// swapped, a commitment to a negative amount opened by its wrap-around,
/// one opening too few — wherever it sits.
#[test]
fn opens_all_agrees_with_opening_each() {
    let mut rng = TestEntropy::new(b"opens-all");
    for n in 1..=4usize {
        let values: Vec<u64> = (0..n as u64).map(|i| 100 + i).collect();
        let o = openings(&values, &mut rng);
        let c = commits(&o);
        assert!(opens_all(&o, &c), "{n} honest openings");
        for i in 0..n {
            let mut bad = o.clone();
            bad[i] = Opening::from_parts(Amount(values[i] + 1), *o[i].blinding()).unwrap();
            assert!(!opens_all(&bad, &c), "value off at {i} of {n}");
            let mut bad = o.clone();
            bad[i] = Opening::from_parts(Amount(values[i]), o[i].blinding() + Scalar::ONE).unwrap();
            assert!(!opens_all(&bad, &c), "blinding off at {i} of {n}");
        }
        if n >= 2 {
            let mut swapped = o.clone();
            swapped.swap(0, n - 1);
            assert!(!opens_all(&swapped, &c), "swapped openings, {n}");
        }
        assert!(!opens_all(&o[1..], &c), "one opening too few");
    }
    // A commitment to −1 and its best u64 "opening".
    let r = Scalar::from(7u64);
    let neg = commit_scalar(-Scalar::ONE, r);
    let wrap = Opening::from_parts(Amount(u64::MAX), r).unwrap();
    assert!(!wrap.opens(&neg));
    let o = openings(&[5], &mut rng);
    assert!(!opens_all(&[o[0].clone(), wrap], &[commits(&o)[0], neg]));
}

#[test]
fn commitment_and_opening_round_trip() {
    let mut rng = TestEntropy::new(b"round-trip");
    let o = Opening::random(Amount(250), &mut rng);
    let c = o.commit();
    let cb = c.to_cbor();
    assert_eq!(cb.len(), 2 + COMMITMENT_BYTES);
    assert_eq!(Commitment::from_cbor(&cb).unwrap(), c);
    assert_eq!(Commitment::from_bytes(c.as_bytes()).unwrap(), c);
    let ob = o.to_cbor();
    let back = Opening::from_cbor(&ob).unwrap();
    assert_eq!(back, o);
    assert!(back.opens(&c));
    assert_eq!(back.value(), Amount(250));
    // Debug prints neither part of an opening.
    assert_eq!(format!("{o:?}"), "Opening(…)");
}

#[test]
fn two_commitments_of_equal_amounts_differ() {
    let mut rng = TestEntropy::new(b"equal");
    let a = Opening::random(Amount(250), &mut rng).commit();
    let b = Opening::random(Amount(250), &mut rng).commit();
    assert_ne!(a, b);
    assert_ne!(a.to_cbor(), b.to_cbor());
    // And neither encodes the amount in the clear.
    for c in [a, b] {
        let bytes = c.to_cbor();
        assert!(!bytes.windows(2).any(|w| w == 250u16.to_be_bytes()));
    }
}

#[test]
fn commitment_decode_refuses_identity_and_non_canonical_points() {
    // The identity (0·B + 0·H).
    assert_eq!(
        Commitment::from_bytes(&[0; 32]),
        Err(ConfidentialError::InvalidCommitment)
    );
    // A field element ≥ p (p + 2): not canonical.
    let mut non_canonical = [0xff; 32];
    non_canonical[0] = 0xef;
    non_canonical[31] = 0x7f;
    assert_eq!(
        Commitment::from_bytes(&non_canonical),
        Err(ConfidentialError::InvalidCommitment)
    );
    // A "negative" (odd) field element: Ristretto refuses it.
    let mut odd = [0u8; 32];
    odd[0] = 1;
    assert_eq!(
        Commitment::from_bytes(&odd),
        Err(ConfidentialError::InvalidCommitment)
    );
    // The high bit set on a valid encoding.
    let mut rng = TestEntropy::new(b"hi-bit");
    let mut c = Opening::random(Amount(1), &mut rng).commit().to_bytes();
    c[31] |= 0x80;
    assert_eq!(
        Commitment::from_bytes(&c),
        Err(ConfidentialError::InvalidCommitment)
    );
    // Through CBOR: a typed codec error, never a panic.
    let mut cb = vec![0x58, 0x20];
    cb.extend_from_slice(&[0; 32]);
    assert_eq!(Commitment::from_cbor(&cb), Err(CodecError::Malformed));
    assert_eq!(
        Commitment::from_cbor(&[0x58, 0x1f, 0]),
        Err(CodecError::Truncated)
    );
}

#[test]
fn opening_decode_refuses_non_canonical_and_zero_blindings() {
    assert_eq!(
        Opening::from_parts(Amount(5), Scalar::ZERO),
        Err(ConfidentialError::WrongOpening)
    );
    // [5, bstr 32 of 0xff]: not a canonical scalar.
    let mut b = vec![0x82, 0x05, 0x58, 0x20];
    b.extend_from_slice(&[0xff; 32]);
    assert_eq!(Opening::from_cbor(&b), Err(CodecError::Malformed));
    let mut z = vec![0x82, 0x05, 0x58, 0x20];
    z.extend_from_slice(&[0; 32]);
    assert_eq!(Opening::from_cbor(&z), Err(CodecError::Malformed));
}

// ---------------------------------------------------------------------------
// Range proofs

#[test]
fn range_proofs_verify_for_one_to_four_outputs_at_every_bit_length() {
    let mut rng = TestEntropy::new(b"range");
    let ctx = context(b"t1");
    for bits in [RangeBits::Bits16, RangeBits::Bits32, RangeBits::Bits64] {
        let top = match bits {
            RangeBits::Bits16 => (1 << 16) - 1,
            RangeBits::Bits32 => (1 << 32) - 1,
            RangeBits::Bits64 => u64::MAX,
        };
        for values in [&[250u64][..], &[0, top], &[1, 2, 3], &[top, 0, 7, 9]] {
            let o = openings(values, &mut rng);
            let c = commits(&o);
            let p = RangeProof::prove(gens(bits), &ctx, &o, &mut rng).unwrap();
            assert_eq!(p.bits(), bits);
            assert_eq!(p.outputs(), values.len());
            assert_eq!(p.verify(gens(bits), &ctx, &c), Ok(()));
            let bytes = p.to_cbor();
            assert!(bytes.len() <= RANGE_PROOF_BYTES_MAX + 8);
            let back = RangeProof::from_cbor(&bytes).unwrap();
            assert_eq!(back, p);
            assert_eq!(back.verify(gens(bits), &ctx, &c), Ok(()));
        }
    }
}

#[test]
fn proof_sizes_are_the_published_ones() {
    // 449 / 513 / 577 bytes for 16 / 32 / 64 bits, one output; one more
    // L, R pair (64 bytes) per doubling of the outputs. CBOR adds 7–8 bytes.
    let mut rng = TestEntropy::new(b"sizes");
    let ctx = context(b"sizes");
    for (bits, n, len) in [
        (RangeBits::Bits16, 1, 449),
        (RangeBits::Bits16, 2, 513),
        (RangeBits::Bits32, 1, 513),
        (RangeBits::Bits64, 1, 577),
        (RangeBits::Bits16, 3, 577),
        (RangeBits::Bits64, 4, 705),
    ] {
        let o = openings(&vec![1; n], &mut rng);
        let p = RangeProof::prove(gens(bits), &ctx, &o, &mut rng).unwrap();
        let cbor = p.to_cbor();
        // Array, version, bits (one byte for 16, two above 23), outputs,
        // and a three-byte byte-string head.
        let bits_head = if bits == RangeBits::Bits16 { 1 } else { 2 };
        assert_eq!(cbor.len(), len + 6 + bits_head, "{bits:?} × {n}");
    }
    assert_eq!(RANGE_PROOF_BYTES_MAX, 705);
}

#[test]
fn generators_of_any_capacity_agree() {
    // A device proves with the small tables it can afford; settlement
    // verifies with its larger ones.
    let mut rng = TestEntropy::new(b"capacity");
    let ctx = context(b"cap");
    let small = RangeGens::new(RangeBits::Bits16, 1).unwrap();
    let o = openings(&[42], &mut rng);
    let p = RangeProof::prove(&small, &ctx, &o, &mut rng).unwrap();
    assert_eq!(
        p.verify(gens(RangeBits::Bits16), &ctx, &commits(&o)),
        Ok(())
    );
    let two = openings(&[1, 2], &mut rng);
    assert_eq!(
        RangeProof::prove(&small, &ctx, &two, &mut rng),
        Err(ConfidentialError::GeneratorCapacity)
    );
    assert_eq!(
        RangeGens::new(RangeBits::Bits16, 3).err(),
        Some(ConfidentialError::OutputCount)
    );
}

/// A device's generators (decision 0027): constants decompressed on use,
/// chunked multiscalar multiplications. Its proofs are the stock ones
/// byte for byte (same randomness), each side verifies the other's, at
/// every chunk size, and it refuses what the stock verifier refuses.
#[test]
fn low_memory_generators_interoperate_with_taris() {
    let ctx = context(b"low-memory");
    for bits in [RangeBits::Bits16, RangeBits::Bits32] {
        for values in [&[250u64][..], &[250, 750], &[1, 2, 3], &[7, 0, 9, 65_535]] {
            for chunk in [1, 3, 8, 16, 200] {
                let low = RangeGens::low_memory(bits, 4, chunk, chunk.div_ceil(2)).unwrap();
                let mut rng = TestEntropy::new(b"low-memory-openings");
                let o = openings(values, &mut rng);
                let c = commits(&o);
                let mut r1 = TestEntropy::new(b"low-memory-proof");
                let mut r2 = TestEntropy::new(b"low-memory-proof");
                let from_low = RangeProof::prove(&low, &ctx, &o, &mut r1).unwrap();
                let from_stock = RangeProof::prove(gens(bits), &ctx, &o, &mut r2).unwrap();
                assert_eq!(
                    from_low.to_cbor(),
                    from_stock.to_cbor(),
                    "{bits:?} {values:?} {chunk}"
                );
                assert_eq!(from_low.verify(gens(bits), &ctx, &c), Ok(()));
                assert_eq!(from_stock.verify(&low, &ctx, &c), Ok(()));
                // Another context, or the commitments swapped: refused.
                assert_eq!(
                    from_low.verify(&low, &context(b"other"), &c),
                    Err(ConfidentialError::RangeProofInvalid)
                );
                if c.len() > 1 {
                    let mut swapped = c.clone();
                    swapped.swap(0, 1);
                    assert_eq!(
                        from_low.verify(&low, &ctx, &swapped),
                        Err(ConfidentialError::RangeProofInvalid)
                    );
                }
            }
        }
    }
    // A batch, and a batch with one bad proof named.
    let low = RangeGens::low_memory(RangeBits::Bits16, 4, 8, 4).unwrap();
    let mut rng = TestEntropy::new(b"low-memory-batch");
    let o1 = openings(&[1, 2], &mut rng);
    let o2 = openings(&[3], &mut rng);
    let (c1, c2) = (commits(&o1), commits(&o2));
    let p1 = RangeProof::prove(&low, &ctx, &o1, &mut rng).unwrap();
    let p2 = RangeProof::prove(&low, &ctx, &o2, &mut rng).unwrap();
    let other = context(b"batch-other");
    let check = |p, c, x| RangeCheck {
        proof: p,
        commitments: c,
        context: x,
    };
    assert_eq!(
        batch_verify(&low, &[check(&p1, &c1, &ctx), check(&p2, &c2, &ctx)]),
        Ok(())
    );
    assert_eq!(
        batch_verify(&low, &[check(&p1, &c1, &ctx), check(&p2, &c2, &other)]),
        Err((1, ConfidentialError::RangeProofInvalid))
    );
    // The negative-change cheat of the test below, against the device.
    let r_in = Scalar::from(1000u64);
    let r_pay = Scalar::from(300u64);
    let r_neg = r_in - r_pay;
    let pay = Opening::from_parts(Amount(15), r_pay).unwrap();
    let negative = commit_scalar(-Scalar::from(5u64), r_neg);
    let wrapped = Opening::from_parts(Amount(65531), r_neg).unwrap();
    let p = RangeProof::prove(&low, &ctx, &[pay.clone(), wrapped], &mut rng).unwrap();
    assert_eq!(
        p.verify(&low, &ctx, &[pay.commit(), negative]),
        Err(ConfidentialError::RangeProofInvalid)
    );
    // 64-bit ranges are beyond the constants (a device refuses such a
    // policy); output counts as for `new`.
    assert_eq!(
        RangeGens::low_memory(RangeBits::Bits64, 4, 8, 4).err(),
        Some(ConfidentialError::GeneratorCapacity)
    );
    assert_eq!(
        RangeGens::low_memory(RangeBits::Bits16, 3, 8, 4).err(),
        Some(ConfidentialError::OutputCount)
    );
}

/// The device's bucket-method multiscalar multiplication (the tari patch,
/// decision 0027 "Session 13") agrees with curve25519-dalek's on every
/// size it picks a window for, on the scalars whose signed recoding carries
/// the most (the group order less one, all-ones below it, 2^252 and its
/// neighbours), on zero and one, on a point repeated with opposite
/// scalars, and across parts; unequal lengths are an error, not a sum
/// that drops terms.
#[test]
fn the_bucket_method_agrees_with_dalek() {
    use curve25519_dalek::traits::{Identity, VartimeMultiscalarMul};
    use tari_bulletproofs_plus::range_proof::bucket_msm;

    let mut rng = TestEntropy::new(b"bucket-msm");
    let two_252 = Scalar::from(1u64 << 63)
        * Scalar::from(1u64 << 63)
        * Scalar::from(1u64 << 63)
        * Scalar::from(1u64 << 63);
    let mut ones = [0xffu8; 32];
    ones[31] = 0x0f; // 2^252 - 1 < l
    let edges = [
        Scalar::ZERO,
        Scalar::ONE,
        -Scalar::ONE,
        -Scalar::from(2u64),
        two_252,
        two_252 - Scalar::ONE,
        two_252 + Scalar::ONE,
        Scalar::from_canonical_bytes(ones).unwrap(),
        Scalar::from(u64::MAX),
        -Scalar::from(u64::MAX),
    ];
    let random_scalar = |rng: &mut TestEntropy| {
        let mut wide = [0u8; 64];
        tally_core::crypto::Entropy::fill(rng, &mut wide);
        Scalar::from_bytes_mod_order_wide(&wide)
    };
    let random_point = |rng: &mut TestEntropy| RISTRETTO_BASEPOINT_POINT * random_scalar(rng);
    // Sizes across the window widths the method picks (3 to 8 bits).
    for n in [1usize, 2, 5, 10, 17, 34, 65, 81, 150, 300, 700] {
        let mut scalars: Vec<Scalar> = (0..n)
            .map(|i| {
                if i < edges.len() && n < 150 {
                    edges[i]
                } else {
                    random_scalar(&mut rng)
                }
            })
            .collect();
        let mut points: Vec<RistrettoPoint> = (0..n).map(|_| random_point(&mut rng)).collect();
        if n >= 2 {
            // One point twice with opposite scalars: the terms cancel.
            points[1] = points[0];
            scalars[1] = -scalars[0];
        }
        let want = RistrettoPoint::vartime_multiscalar_mul(&scalars, &points);
        assert_eq!(
            bucket_msm(&[(&scalars[..], &points[..])]).unwrap(),
            want,
            "n = {n}"
        );
        let cut = n / 3;
        let split = bucket_msm(&[
            (&scalars[..cut], &points[..cut]),
            (&[][..], &[][..]),
            (&scalars[cut..], &points[cut..]),
        ]);
        assert_eq!(split.unwrap(), want, "n = {n}, in parts");
    }
    // Each edge scalar alone, and every edge scalar together.
    let p = random_point(&mut rng);
    for s in edges {
        assert_eq!(bucket_msm(&[(&[s][..], &[p][..])]).unwrap(), p * s, "{s:?}");
    }
    assert_eq!(
        bucket_msm::<RistrettoPoint>(&[]).unwrap(),
        RistrettoPoint::identity()
    );
    assert!(bucket_msm(&[(&edges[..3], &[p, p][..])]).is_err());
}

#[test]
fn out_of_range_amounts_are_refused_by_the_prover() {
    let mut rng = TestEntropy::new(b"oor");
    let ctx = context(b"oor");
    let o = openings(&[1 << 16], &mut rng);
    assert_eq!(
        RangeProof::prove(gens(RangeBits::Bits16), &ctx, &o, &mut rng),
        Err(ConfidentialError::OutOfRange)
    );
    let o = openings(&[5, u64::from(u32::MAX) + 1], &mut rng);
    assert_eq!(
        RangeProof::prove(gens(RangeBits::Bits32), &ctx, &o, &mut rng),
        Err(ConfidentialError::OutOfRange)
    );
    assert_eq!(
        RangeProof::prove(gens(RangeBits::Bits16), &ctx, &[], &mut rng),
        Err(ConfidentialError::OutputCount)
    );
    let five = openings(&[1, 1, 1, 1, 1], &mut rng);
    assert_eq!(
        RangeProof::prove(gens(RangeBits::Bits16), &ctx, &five, &mut rng),
        Err(ConfidentialError::OutputCount)
    );
}

#[test]
fn an_output_committing_to_a_negative_amount_is_refused() {
    // The payer pays 15 out of 10 and keeps −5 as "change": the excess
    // balances (10 − 15 − (−5) = 0), so only the range proof stands in the
    // way. No opening (u64) can even express −5; the best a cheat can do
    // is attach a proof made for other commitments.
    let mut rng = TestEntropy::new(b"negative");
    let ctx = context(b"neg");
    let r_in = Scalar::from(1000u64);
    let r_pay = Scalar::from(300u64);
    let r_neg = r_in - r_pay;
    let input = Opening::from_parts(Amount(10), r_in).unwrap().commit();
    let pay = Opening::from_parts(Amount(15), r_pay).unwrap();
    let negative = commit_scalar(-Scalar::from(5u64), r_neg);
    // Conservation holds on the points.
    assert_eq!(
        excess(&[input], &[pay.commit(), negative]),
        Scalar::ZERO * blinding_base()
    );
    // A proof for (15, 5) does not cover (15, −5).
    let honest = [pay.clone(), Opening::from_parts(Amount(5), r_neg).unwrap()];
    let p = RangeProof::prove(gens(RangeBits::Bits16), &ctx, &honest, &mut rng).unwrap();
    assert_eq!(
        p.verify(gens(RangeBits::Bits16), &ctx, &[pay.commit(), negative]),
        Err(ConfidentialError::RangeProofInvalid)
    );
    // Wrapped: −5 mod 2^16 = 65531 is in range but is another commitment.
    let wrapped = Opening::from_parts(Amount(65531), r_neg).unwrap();
    let p = RangeProof::prove(
        gens(RangeBits::Bits16),
        &ctx,
        &[pay.clone(), wrapped],
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        p.verify(gens(RangeBits::Bits16), &ctx, &[pay.commit(), negative]),
        Err(ConfidentialError::RangeProofInvalid)
    );
}

#[test]
fn an_amount_above_the_policy_range_is_refused_by_the_verifier() {
    // 2^16 + 5 needs a 32-bit proof; a verifier whose policy range is 16
    // bits refuses it, and relabelling the proof does not decode.
    let mut rng = TestEntropy::new(b"above");
    let ctx = context(b"above");
    let o = openings(&[(1 << 16) + 5], &mut rng);
    let c = commits(&o);
    let p = RangeProof::prove(gens(RangeBits::Bits32), &ctx, &o, &mut rng).unwrap();
    assert_eq!(
        p.verify(gens(RangeBits::Bits16), &ctx, &c),
        Err(ConfidentialError::RangeBitsMismatch)
    );
    let mut relabelled = p.to_cbor();
    assert_eq!(&relabelled[2..4], &[0x18, 0x20]); // bits: 32
    relabelled.splice(2..4, [0x10]); // bits: 16, canonical
    assert_eq!(
        RangeProof::from_cbor(&relabelled),
        Err(CodecError::Malformed)
    );
    // A 16-bit proof made for a small value, presented for the big one.
    let small = openings(&[5], &mut rng);
    let p16 = RangeProof::prove(gens(RangeBits::Bits16), &ctx, &small, &mut rng).unwrap();
    assert_eq!(
        p16.verify(gens(RangeBits::Bits16), &ctx, &c),
        Err(ConfidentialError::RangeProofInvalid)
    );
}

#[test]
fn a_commitment_swapped_between_outputs_is_refused() {
    let mut rng = TestEntropy::new(b"swap");
    let ctx = context(b"swap");
    let o = openings(&[250, 750], &mut rng);
    let c = commits(&o);
    let p = RangeProof::prove(gens(RangeBits::Bits16), &ctx, &o, &mut rng).unwrap();
    let swapped = [c[1], c[0]];
    assert_eq!(
        p.verify(gens(RangeBits::Bits16), &ctx, &swapped),
        Err(ConfidentialError::RangeProofInvalid)
    );
    // The payee's sealed opening is bound to its own commitment.
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let s = SealedOpening::seal(&payee.public(), &ctx, &c[0], &o[0], &mut rng).unwrap();
    assert_eq!(
        s.open(&payee, &ctx, &c[1]).err(),
        Some(ConfidentialError::OpeningUnreadable)
    );
    // A commitment replaced by one from another transfer.
    let other = Opening::random(Amount(250), &mut rng).commit();
    assert_eq!(
        p.verify(gens(RangeBits::Bits16), &ctx, &[other, c[1]]),
        Err(ConfidentialError::RangeProofInvalid)
    );
    assert_eq!(
        p.verify(gens(RangeBits::Bits16), &ctx, &c[..1]),
        Err(ConfidentialError::OutputCount)
    );
}

#[test]
fn a_proof_from_another_transfer_is_refused() {
    let mut rng = TestEntropy::new(b"replay");
    let ctx = context(b"first");
    let other = context(b"second");
    let o = openings(&[250, 750], &mut rng);
    let c = commits(&o);
    let p = RangeProof::prove(gens(RangeBits::Bits16), &ctx, &o, &mut rng).unwrap();
    assert_eq!(
        p.verify(gens(RangeBits::Bits16), &other, &c),
        Err(ConfidentialError::RangeProofInvalid)
    );
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let s = SealedOpening::seal(&payee.public(), &ctx, &c[0], &o[0], &mut rng).unwrap();
    assert_eq!(
        s.open(&payee, &other, &c[0]).err(),
        Some(ConfidentialError::OpeningUnreadable)
    );
}

#[test]
fn batch_verification_accepts_good_batches_and_names_the_bad_proof() {
    let mut rng = TestEntropy::new(b"batch");
    let g = gens(RangeBits::Bits16);
    let mut items = Vec::new();
    for i in 0..6u8 {
        let ctx = context(&[i]);
        let o = openings(&vec![u64::from(i) * 10; 1 + usize::from(i % 2)], &mut rng);
        let p = RangeProof::prove(g, &ctx, &o, &mut rng).unwrap();
        items.push((ctx, commits(&o), p));
    }
    let checks = |items: &[(Hash32, Vec<Commitment>, RangeProof)]| -> Vec<(Hash32, Vec<Commitment>, RangeProof)> {
        items.to_vec()
    };
    let owned = checks(&items);
    let list: Vec<RangeCheck<'_>> = owned
        .iter()
        .map(|(ctx, c, p)| RangeCheck {
            proof: p,
            commitments: c,
            context: ctx,
        })
        .collect();
    assert_eq!(batch_verify(g, &list), Ok(()));
    assert_eq!(batch_verify(g, &[]), Ok(()));
    // Item 4 verified under item 3's context: the batch names item 4.
    let mut bad = items.clone();
    bad[4].0 = items[3].0;
    let list: Vec<RangeCheck<'_>> = bad
        .iter()
        .map(|(ctx, c, p)| RangeCheck {
            proof: p,
            commitments: c,
            context: ctx,
        })
        .collect();
    assert_eq!(
        batch_verify(g, &list),
        Err((4, ConfidentialError::RangeProofInvalid))
    );
}

#[test]
fn range_proof_decoder_refuses_malformed_proofs() {
    let f = fixture();
    let good = f.proof.to_cbor();
    // [1, 16, 2, bstr 513]
    assert_eq!(&good[..4], &[0x84, 0x01, 0x10, 0x02]);
    let mut v = good.clone();
    v[1] = 2;
    assert_eq!(
        RangeProof::from_cbor(&v),
        Err(CodecError::UnsupportedVersion)
    );
    let mut b = good.clone();
    b[2] = 0x08; // 8 bits: not a supported range
    assert_eq!(RangeProof::from_cbor(&b), Err(CodecError::UnknownCode));
    for outputs in [0u8, 5] {
        let mut o = good.clone();
        o[3] = outputs;
        assert_eq!(RangeProof::from_cbor(&o), Err(CodecError::Malformed));
    }
    // Claiming one output: the 513-byte proof has the wrong length.
    let mut one = good.clone();
    one[3] = 1;
    assert_eq!(RangeProof::from_cbor(&one), Err(CodecError::Malformed));
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        RangeProof::from_cbor(&trailing),
        Err(CodecError::TrailingBytes)
    );
    assert_eq!(
        RangeProof::from_cbor(&good[..good.len() - 1]),
        Err(CodecError::Truncated)
    );
    // A non-canonical scalar inside the proof (r1 at byte 4 + 3 + 1 + 32·4).
    let mut s = good.clone();
    let r1 = 4 + 3 + 1 + 32 * 4;
    s[r1..r1 + 32].copy_from_slice(&[0xff; 32]);
    assert_eq!(RangeProof::from_cbor(&s), Err(CodecError::Malformed));
    // Extension degree byte other than 1.
    let mut ext = good.clone();
    ext[7] = 2;
    assert_eq!(RangeProof::from_cbor(&ext), Err(CodecError::Malformed));
    // Flipping any byte of a point makes the proof fail, never panic.
    for i in [7 + 1 + 32, 7 + 1 + 32 * 6, good.len() - 1] {
        let mut t = good.clone();
        t[i] ^= 1;
        if let Ok(p) = RangeProof::from_cbor(&t) {
            assert_eq!(
                p.verify(&f.gens, &f.context, &f.outputs),
                Err(ConfidentialError::RangeProofInvalid)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Balance of commitments (C4, decision 0029)

fn blinding_sum(o: &[Opening]) -> Scalar {
    o.iter().map(Opening::blinding).sum()
}

#[test]
fn balanced_openings_balance_and_only_for_balanced_values() {
    let mut rng = TestEntropy::new(b"balance");
    let ins = openings(&[600, 400], &mut rng);
    let outs = balanced_openings(&ins, &[Amount(250), Amount(750)], &mut rng).unwrap();
    assert_eq!(
        outs.iter().map(Opening::value).collect::<Vec<_>>(),
        vec![Amount(250), Amount(750)]
    );
    assert_eq!(blinding_sum(&outs), blinding_sum(&ins));
    assert_eq!(check_balance(&commits(&ins), &commits(&outs)), Ok(()));
    // The payee's blinding is fresh: another draw gives another one, and
    // neither is an input's.
    let again = balanced_openings(&ins, &[Amount(250), Amount(750)], &mut rng).unwrap();
    assert_ne!(again[0].blinding(), outs[0].blinding());
    assert!(ins.iter().all(|i| i.blinding() != outs[0].blinding()));
    // One output spending one input: the same commitment (nothing to hide
    // from whoever could open the input).
    let one = balanced_openings(&ins[..1], &[Amount(600)], &mut rng).unwrap();
    assert_eq!(one[0].commit(), ins[0].commit());
    // A merge: the output commits to the sum.
    let merged = balanced_openings(&ins, &[Amount(1000)], &mut rng).unwrap();
    assert_eq!(
        merged[0].commit().point(),
        ins[0].commit().point() + ins[1].commit().point()
    );
    // Creating one unit: refused before anything is committed.
    assert_eq!(
        balanced_openings(&ins, &[Amount(251), Amount(750)], &mut rng).err(),
        Some(ConfidentialError::Unbalanced)
    );
    // Overflowing sums are unbalanced, not wrapped.
    let huge = openings(&[u64::MAX, 1], &mut rng);
    assert_eq!(
        balanced_openings(&huge, &[Amount(0)], &mut rng).err(),
        Some(ConfidentialError::Unbalanced)
    );
    assert_eq!(
        balanced_openings(&[], &[Amount(0)], &mut rng).err(),
        Some(ConfidentialError::OutputCount)
    );
    assert_eq!(
        balanced_openings(&ins, &[], &mut rng).err(),
        Some(ConfidentialError::OutputCount)
    );
    let five = [Amount(200); 5];
    assert_eq!(
        balanced_openings(&ins, &five, &mut rng).err(),
        Some(ConfidentialError::OutputCount)
    );
}

#[test]
fn commitments_that_do_not_balance_are_refused() {
    let mut rng = TestEntropy::new(b"unbalanced");
    let ins = openings(&[1000], &mut rng);
    let in_c = commits(&ins);
    let outs = balanced_openings(&ins, &[Amount(250), Amount(750)], &mut rng).unwrap();
    assert_eq!(check_balance(&in_c, &commits(&outs)), Ok(()));
    // The payer swaps its change for a larger one: value created.
    let inflated = [
        outs[0].commit(),
        Opening::from_parts(Amount(751), *outs[1].blinding())
            .unwrap()
            .commit(),
    ];
    assert_eq!(
        check_balance(&in_c, &inflated),
        Err(ConfidentialError::CommitmentsUnbalanced)
    );
    // One unit less: value destroyed.
    let deflated = [
        outs[0].commit(),
        Opening::from_parts(Amount(749), *outs[1].blinding())
            .unwrap()
            .commit(),
    ];
    assert_eq!(
        check_balance(&in_c, &deflated),
        Err(ConfidentialError::CommitmentsUnbalanced)
    );
    // Outputs of the same total under blindings that were not balanced
    // (what an excess signature used to cover): refused.
    let others = openings(&[250, 750], &mut rng);
    assert_eq!(
        check_balance(&in_c, &commits(&others)),
        Err(ConfidentialError::CommitmentsUnbalanced)
    );
    // An output dropped, or another transfer's input.
    assert_eq!(
        check_balance(&in_c, &commits(&outs[..1])),
        Err(ConfidentialError::CommitmentsUnbalanced)
    );
    let elsewhere = commits(&openings(&[1000], &mut rng));
    assert_eq!(
        check_balance(&elsewhere, &commits(&outs)),
        Err(ConfidentialError::CommitmentsUnbalanced)
    );
    // Too many inputs or outputs, or none: refused before any arithmetic.
    let many: Vec<Commitment> = (0..17).map(|_| in_c[0]).collect();
    assert_eq!(
        check_balance(&many, &commits(&outs)),
        Err(ConfidentialError::OutputCount)
    );
    assert_eq!(check_balance(&[], &[]), Err(ConfidentialError::OutputCount));
    assert_eq!(
        check_balance(&in_c, &[in_c[0]; 5]),
        Err(ConfidentialError::OutputCount)
    );
}

// ---------------------------------------------------------------------------
// Sealed openings

#[test]
fn the_payee_opens_its_output_including_from_its_stored_key() {
    let mut rng = TestEntropy::new(b"sealed");
    let ctx = context(b"sealed");
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let o = Opening::random(Amount(250), &mut rng);
    let c = o.commit();
    let s = SealedOpening::seal(&payee.public(), &ctx, &c, &o, &mut rng).unwrap();
    assert_eq!(s.open(&payee, &ctx, &c).unwrap(), o);
    // The SE rebuilds its key from the stored seed and public key.
    let stored = SecretKey::from_stored(&payee.seed(), &payee.public()).unwrap();
    assert_eq!(s.open(&stored, &ctx, &c).unwrap(), o);
    let bytes = s.to_cbor();
    assert_eq!(bytes.len(), 1 + 1 + 2 + 32 + 2 + 56);
    assert_eq!(SealedOpening::from_cbor(&bytes).unwrap(), s);
    // Fresh ephemeral key each time.
    let s2 = SealedOpening::seal(&payee.public(), &ctx, &c, &o, &mut rng).unwrap();
    assert_ne!(s2.to_cbor(), bytes);
}

#[test]
fn a_wrong_opening_for_the_payee_is_refused() {
    let mut rng = TestEntropy::new(b"wrong");
    let ctx = context(b"wrong");
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let o = Opening::random(Amount(250), &mut rng);
    let c = o.commit();
    // The honest sealer refuses to seal a lie.
    let lie = Opening::from_parts(Amount(2500), *o.blinding()).unwrap();
    assert_eq!(
        SealedOpening::seal(&payee.public(), &ctx, &c, &lie, &mut rng).err(),
        Some(ConfidentialError::WrongOpening)
    );
    // A lying payer seals it anyway: the payee's check refuses it.
    let s = SealedOpening::seal_unchecked(&payee.public(), &ctx, &c, &lie, &mut rng).unwrap();
    assert_eq!(
        s.open(&payee, &ctx, &c).err(),
        Some(ConfidentialError::WrongOpening)
    );
    // Sealed to someone else: the payee cannot read it.
    let other = testkit::key(Suite::Ed25519, b"other");
    let s = SealedOpening::seal(&other.public(), &ctx, &c, &o, &mut rng).unwrap();
    assert_eq!(
        s.open(&payee, &ctx, &c).err(),
        Some(ConfidentialError::OpeningUnreadable)
    );
    // Modified ciphertext or ephemeral key.
    let good = SealedOpening::seal(&payee.public(), &ctx, &c, &o, &mut rng)
        .unwrap()
        .to_cbor();
    for i in [4usize, 20, 40, good.len() - 1] {
        let mut b = good.clone();
        b[i] ^= 1;
        let s = SealedOpening::from_cbor(&b).unwrap();
        assert_eq!(
            s.open(&payee, &ctx, &c).err(),
            Some(ConfidentialError::OpeningUnreadable),
            "byte {i}"
        );
    }
}

#[test]
fn keys_that_cannot_receive_openings_are_refused() {
    let mut rng = TestEntropy::new(b"keys");
    let ctx = context(b"keys");
    let o = Opening::random(Amount(1), &mut rng);
    let c = o.commit();
    let p256 = testkit::key(Suite::EcdsaP256Sha256, b"p256");
    assert_eq!(
        SealedOpening::seal(&p256.public(), &ctx, &c, &o, &mut rng).err(),
        Some(ConfidentialError::UnsupportedKey)
    );
    let small_order = PublicKey::new(Suite::Ed25519, &[0u8; 32]).unwrap();
    assert_eq!(
        SealedOpening::seal(&small_order, &ctx, &c, &o, &mut rng).err(),
        Some(ConfidentialError::UnsupportedKey)
    );
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let s = SealedOpening::seal(&payee.public(), &ctx, &c, &o, &mut rng).unwrap();
    assert_eq!(
        s.open(&p256, &ctx, &c).err(),
        Some(ConfidentialError::UnsupportedKey)
    );
}

/// The payee's blinding derived from an encapsulation to its key
/// (decision 0029, "Session 14"): the payee derives what the payer did,
/// and accepts only the amount it asked for, for the commitment made with
/// that blinding.
#[test]
fn a_derived_opening_opens_only_for_its_payee_amount_and_commitment() {
    let mut rng = TestEntropy::new(b"derived");
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let ins = openings(&[1000], &mut rng);
    let (d, r0) = DerivedOpening::derive(&payee.public(), &mut rng).unwrap();
    let outs =
        balanced_openings_with(&ins, &[Amount(250), Amount(750)], Some(&*r0), &mut rng).unwrap();
    assert_eq!(outs[0].blinding(), &*r0);
    assert_eq!(check_balance(&commits(&ins), &commits(&outs)), Ok(()));
    let c0 = outs[0].commit();
    assert_eq!(d.open(&payee, &c0, Amount(250)), Ok(outs[0].clone()));
    // Its wire form: [2, enc], 36 bytes, one encoding; either form of a
    // payee opening decodes from its own bytes only.
    let bytes = d.to_cbor();
    assert_eq!(bytes.len(), 36);
    assert_eq!(DerivedOpening::from_cbor(&bytes), Ok(d));
    let p = PayeeOpening::from_cbor(&bytes).unwrap();
    assert_eq!(p, PayeeOpening::Derived(d));
    assert_eq!(p.to_cbor(), bytes);
    let ctx = context(b"derived");
    assert_eq!(p.open(&payee, &ctx, &c0, Amount(250)), Ok(outs[0].clone()));
    let sealed = SealedOpening::seal(&payee.public(), &ctx, &c0, &outs[0], &mut rng).unwrap();
    assert_eq!(
        PayeeOpening::from_cbor(&sealed.to_cbor()),
        Ok(PayeeOpening::Sealed(sealed.clone()))
    );
    assert!(SealedOpening::from_cbor(&bytes).is_err());
    assert!(DerivedOpening::from_cbor(&sealed.to_cbor()).is_err());
    // Another amount, another commitment, another key: the derived point
    // is not the commitment.
    assert_eq!(
        d.open(&payee, &c0, Amount(251)),
        Err(ConfidentialError::WrongOpening)
    );
    assert_eq!(
        d.open(&payee, &outs[1].commit(), Amount(750)),
        Err(ConfidentialError::WrongOpening)
    );
    let other = testkit::key(Suite::Ed25519, b"not-the-payee");
    assert_eq!(
        d.open(&other, &c0, Amount(250)),
        Err(ConfidentialError::WrongOpening)
    );
    // Two derivations to one payee give two blindings (fresh ephemeral
    // keys): equal amounts, different commitments.
    let (d2, r2) = DerivedOpening::derive(&payee.public(), &mut rng).unwrap();
    assert_ne!(*r2, *r0);
    assert_ne!(d2, d);
    // An encapsulated key of small order: no shared secret.
    let mut zero = bytes.clone();
    zero[4..].fill(0);
    let z = DerivedOpening::from_cbor(&zero).unwrap();
    assert_eq!(
        z.open(&payee, &c0, Amount(250)),
        Err(ConfidentialError::OpeningUnreadable)
    );
    // Keys that cannot receive: P-256 and small-order Ed25519.
    let p256 = testkit::key(Suite::EcdsaP256Sha256, b"p256");
    assert_eq!(
        DerivedOpening::derive(&p256.public(), &mut rng).err(),
        Some(ConfidentialError::UnsupportedKey)
    );
    assert_eq!(
        d.open(&p256, &c0, Amount(250)),
        Err(ConfidentialError::UnsupportedKey)
    );
    // A fixed first blinding needs a second output to balance.
    assert_eq!(
        balanced_openings_with(&ins, &[Amount(1000)], Some(&*r0), &mut rng).err(),
        Some(ConfidentialError::OutputCount)
    );
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn commitments_add_like_their_openings(
        a in any::<u32>(), b in any::<u32>(), ra in any::<[u8; 32]>(), rb in any::<[u8; 32]>()
    ) {
        let ra = Scalar::from_bytes_mod_order(ra);
        let rb = Scalar::from_bytes_mod_order(rb);
        prop_assume!(ra != Scalar::ZERO && rb != Scalar::ZERO && ra + rb != Scalar::ZERO);
        let oa = Opening::from_parts(Amount(u64::from(a)), ra).unwrap();
        let ob = Opening::from_parts(Amount(u64::from(b)), rb).unwrap();
        let sum = Opening::from_parts(Amount(u64::from(a) + u64::from(b)), ra + rb).unwrap();
        prop_assert_eq!(oa.commit().point() + ob.commit().point(), sum.commit().point());
        let back = Opening::from_cbor(&oa.to_cbor()).unwrap();
        prop_assert!(back.opens(&oa.commit()));
        prop_assert_eq!(Commitment::from_cbor(&oa.commit().to_cbor()).unwrap(), oa.commit());
    }

    #[test]
    fn any_balanced_split_balances_and_proves(
        total in 1u64..(1 << 16), cut in any::<u16>(), seed in any::<[u8; 8]>()
    ) {
        let mut rng = TestEntropy::new(&seed);
        let ctx = context(&seed);
        let pay = u64::from(cut) % (total + 1);
        let ins = openings(&[total], &mut rng);
        let outs =
            balanced_openings(&ins, &[Amount(pay), Amount(total - pay)], &mut rng).unwrap();
        prop_assert_eq!(check_balance(&commits(&ins), &commits(&outs)), Ok(()));
        let p = RangeProof::prove(gens(RangeBits::Bits16), &ctx, &outs, &mut rng).unwrap();
        prop_assert_eq!(p.verify(gens(RangeBits::Bits16), &ctx, &commits(&outs)), Ok(()));
        // One unit more on the payee's side: the payer refuses to commit.
        prop_assert_eq!(
            balanced_openings(&ins, &[Amount(pay + 1), Amount(total - pay)], &mut rng).err(),
            Some(ConfidentialError::Unbalanced)
        );
        // Moved onto the payee's commitment after the fact: C4 refuses.
        let cheat = [
            Opening::from_parts(Amount(pay + 1), *outs[0].blinding()).unwrap().commit(),
            outs[1].commit(),
        ];
        prop_assert_eq!(
            check_balance(&commits(&ins), &cheat),
            Err(ConfidentialError::CommitmentsUnbalanced)
        );
    }

    #[test]
    fn any_derived_opening_opens_for_its_amount_only(
        total in 2u64..(1 << 16), cut in any::<u16>(), seed in any::<[u8; 8]>()
    ) {
        let mut rng = TestEntropy::new(&seed);
        let pay = 1 + u64::from(cut) % (total - 1);
        let payee = testkit::key(Suite::Ed25519, b"payee");
        let ins = openings(&[total], &mut rng);
        let (d, r0) = DerivedOpening::derive(&payee.public(), &mut rng).unwrap();
        let outs = balanced_openings_with(
            &ins,
            &[Amount(pay), Amount(total - pay)],
            Some(&*r0),
            &mut rng,
        )
        .unwrap();
        prop_assert_eq!(check_balance(&commits(&ins), &commits(&outs)), Ok(()));
        let back = DerivedOpening::from_cbor(&d.to_cbor()).unwrap();
        prop_assert_eq!(back.open(&payee, &outs[0].commit(), Amount(pay)), Ok(outs[0].clone()));
        prop_assert_eq!(
            back.open(&payee, &outs[0].commit(), Amount(pay + 1)),
            Err(ConfidentialError::WrongOpening)
        );
        prop_assert_eq!(
            back.open(&payee, &outs[1].commit(), Amount(total - pay)),
            Err(ConfidentialError::WrongOpening)
        );
    }

    #[test]
    fn hostile_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..800)) {
        check_confidential_objects(fixture(), &data);
    }
}

// ---------------------------------------------------------------------------
// Vectors

/// `H`, compressed.
const BLINDING_BASE_HEX: &str = "044fad914b346d1623f0a123c90bec712c6bac717f2acbc48e12db5f6dcaef79";

/// The fixed vectors: built from `TestEntropy::new(b"confidential-vectors")`.
const VECTORS: &[(&str, &str)] = &[
    (
        "context",
        "fcc6ec7dd02a6f3197d9473c1961c2d44491254a0b0ab0d927fbaae2f31bf9f1",
    ),
    (
        "input_opening",
        "821903e85820ee885f5e612fbdee60bf044133dca55cb2a03607131963db8c3e20257d4e4a0a",
    ),
    (
        "input_commitment",
        "58209626e1d2cf08dedb57850a3a7527eb1f1717ab0688c6133dc35bdd1cfba49e11",
    ),
    (
        "output_opening_0",
        "8218fa582016d640ac02642bf44195f9b1b8acb03ced893f6bdfda269668f5919a6ead2504",
    ),
    (
        "output_commitment_0",
        "582040f7cfaa38bdf8add1c0c14a8509af288adb638ccb744c20e55841596c55bc27",
    ),
    (
        "output_opening_1",
        "821902ee5820d8b21eb25ecb91fa1e2a0b8f7a2ff51fc516f79b333e3c4524498e8a0ea12406",
    ),
    (
        "output_commitment_1",
        "5820ea4e1f97f3dfb119334e4c598a44c63fc342d64f2cd00ff75fe6bfaf5bd3fd1f",
    ),
    (
        "range_proof_16x2",
        "8401100259020101addea11b153fcbd93d5dd24f25408efe5926605e4c6a5f27a172404d093dd90258a77c87a5d238d1223e968d81f91581729a594f8537bc7bfd31757049736b004245952cf9d9c05cbafdeb5ac4c1d2c89f470a541bf944f0c8f222ad9f8c1c33408eb1c4a90d10b8680dc63e66ae20bd67b7fb2a8c39572676b9347f66e71404cb749a05d4ff004ef39bab7907289076f058e19401bda702eb4ef3c139c2e6031db6e8ce8808d585ae397b6a9f2ebd46d64d4e15b2669623a43cc63896d01a09b2627850c9d36521f50053bc721357929bdce5e1ba2171dc6fc8ce7cf747eb46b2f12d8441b31373a557c2e8829e1ee66b591aa9c46a7459fdbe4185afa53a3cb45b3751e6bc420f3cd6cf3a721abc7bf1a48294891121d95086841bee24f4599c2e645a3c748de5b0856155b1a675bfe80066952e11ed1f326668e993aadf681e92fc4dd21bde33d7644be308f9aaab99f530d4b221e07f4490fd9e12a3977054be56e7a744c3afc781a6ddbc6d7df3ca85e5bd082087240fc0c8d9fe29f52260697efdc960109c60307b59cbfd6c01ec1383987ac11b31b56b793b91714c7a8e2e9c7eca345daf6bb823afc5d5c318af0de8ad26c84fe09e006511423ba62fa4744b4e4059394111bedf8227aa59e61fe9a18d0bb360c7770d29594bc25d162ca695c084412e6d008795c6e4055e79590146a283b5dcf8f0c36745ab5c1916",
    ),
    (
        "sealed_opening_0",
        "830158209829f249a30342ce6b4cea6be5b81c51118491bfd3ee8ab3a53f5c348d0d2f335838baafe995522995c5af20db53f71223ff71d02272f33032aeabaa492007aef21550510ce9f8c617e8fd8db109711c46e919f6fa68db54bf05",
    ),
];

fn build_vectors() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = TestEntropy::new(b"confidential-vectors");
    let ctx = context(b"vectors");
    let input = Opening::random(Amount(1000), &mut rng);
    let outs = balanced_openings(
        std::slice::from_ref(&input),
        &[Amount(250), Amount(750)],
        &mut rng,
    )
    .unwrap();
    let proof = RangeProof::prove(gens(RangeBits::Bits16), &ctx, &outs, &mut rng).unwrap();
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let sealed =
        SealedOpening::seal(&payee.public(), &ctx, &outs[0].commit(), &outs[0], &mut rng).unwrap();
    vec![
        ("context", ctx.0.to_vec()),
        ("input_opening", input.to_cbor()),
        ("input_commitment", input.commit().to_cbor()),
        ("output_opening_0", outs[0].to_cbor()),
        ("output_commitment_0", outs[0].commit().to_cbor()),
        ("output_opening_1", outs[1].to_cbor()),
        ("output_commitment_1", outs[1].commit().to_cbor()),
        ("range_proof_16x2", proof.to_cbor()),
        ("sealed_opening_0", sealed.to_cbor()),
    ]
}

#[test]
fn vectors() {
    let ours = build_vectors();
    if std::env::var_os("TALLY_PRINT_VECTORS").is_some() {
        println!(
            "BLINDING_BASE_HEX {}",
            hex::encode(blinding_base().compress().as_bytes())
        );
        for (name, bytes) in &ours {
            println!("(\"{name}\", \"{}\"),", hex::encode(bytes));
        }
        return;
    }
    assert_eq!(ours.len(), VECTORS.len(), "vector list changed");
    for ((name, bytes), (vname, vhex)) in ours.iter().zip(VECTORS) {
        assert_eq!(name, vname);
        assert_eq!(&hex::encode(bytes), vhex, "vector {name}");
    }
    // The checked-in bytes on their own decode and verify.
    let get = |n: &str| -> Vec<u8> {
        let (_, h) = VECTORS.iter().find(|(k, _)| *k == n).unwrap();
        hex::decode(h).unwrap()
    };
    let ctx = Hash32(get("context").try_into().unwrap());
    let input = Commitment::from_cbor(&get("input_commitment")).unwrap();
    let c0 = Commitment::from_cbor(&get("output_commitment_0")).unwrap();
    let c1 = Commitment::from_cbor(&get("output_commitment_1")).unwrap();
    let o0 = Opening::from_cbor(&get("output_opening_0")).unwrap();
    assert!(o0.opens(&c0));
    assert_eq!(o0.value(), Amount(250));
    let proof = RangeProof::from_cbor(&get("range_proof_16x2")).unwrap();
    assert_eq!(
        proof.verify(gens(RangeBits::Bits16), &ctx, &[c0, c1]),
        Ok(())
    );
    // C4: the outputs balance the input.
    assert_eq!(check_balance(&[input], &[c0, c1]), Ok(()));
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let s = SealedOpening::from_cbor(&get("sealed_opening_0")).unwrap();
    assert_eq!(s.open(&payee, &ctx, &c0).unwrap(), o0);
}

// ---------------------------------------------------------------------------
// Fuzz corpus

fn fixture() -> &'static ConfidentialFixture {
    static F: OnceLock<ConfidentialFixture> = OnceLock::new();
    F.get_or_init(ConfidentialFixture::new)
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn seeds() {
    let f = fixture();
    let seeds = f.seeds();
    let dir = fuzz_dir().join("corpus").join("confidential_objects");
    if std::env::var_os("TALLY_WRITE_FUZZ_CORPUS").is_some() {
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (_, bytes) in &seeds {
        check_confidential_objects(f, bytes);
    }
    // The fixture's own objects verify (so the fuzzer starts deep).
    assert_eq!(f.proof.verify(&f.gens, &f.context, &f.outputs), Ok(()));
    assert_eq!(check_balance(&f.inputs, &f.outputs), Ok(()));
    assert!(f.sealed.open(&f.payee, &f.context, &f.outputs[0]).is_ok());
    // The fixture's package settles by its openings (the fuzz target's
    // settlement branch starts from an accepted package): 250 and 750.
    let key = tally_core::sealed::OpeningKey::from_seed(&testkit::Scheme::AUDIT_SEED);
    let trust = &f.package.trust;
    let settled = tally_core::verify::verify_package_groups_for_settlement_opened(
        vec![vec![f.package.package.clone()]],
        trust,
        f.package.params,
        &mut tally_core::verify::NoCache,
        &key,
        trust.range_gens().unwrap().bits(),
        &|_| true,
        false,
    );
    let v = settled[0][0].as_ref().expect("the fixture settles");
    let values: Vec<Amount> = v
        .package()
        .transfer
        .outputs
        .iter()
        .map(|o| o.value)
        .collect();
    assert_eq!(values, vec![Amount(250), Amount(750)]);
}

#[test]
fn fuzz_corpus_and_regressions_pass_their_checks() {
    let f = fixture();
    let seeds = files(&fuzz_dir().join("corpus").join("confidential_objects"));
    assert!(!seeds.is_empty(), "no seed corpus for confidential_objects");
    let regressions = files(&fuzz_dir().join("regressions").join("confidential_objects"));
    for path in seeds.iter().chain(&regressions) {
        check_confidential_objects(f, &fs::read(path).unwrap());
    }
}

/// The proving task a phone's SE hands its application processor
/// (decision 0032): one encoding; one to four canonical, non-zero
/// blindings; proved, it verifies for its own commitments only.
#[test]
fn a_proving_task_decodes_strictly_and_proves_its_own_commitments() {
    use tally_core::confidential_record::ProvingTask;
    let mut rng = TestEntropy::new(b"proving-task");
    let task = ProvingTask {
        bits: RangeBits::Bits16,
        context: context(b"task"),
        openings: openings(&[250, 750], &mut rng),
    };
    let bytes = task.to_cbor();
    let back = ProvingTask::from_cbor(&bytes).unwrap();
    assert_eq!(back.to_cbor(), bytes);
    assert!(back.needs_proof());
    let proof = back
        .prove(gens(RangeBits::Bits16), &mut rng)
        .unwrap()
        .unwrap();
    let c = commits(&task.openings);
    assert_eq!(
        proof.verify(gens(RangeBits::Bits16), &task.context, &c),
        Ok(())
    );
    assert!(
        proof
            .verify(gens(RangeBits::Bits16), &context(b"other"), &c)
            .is_err()
    );
    // Out of range: refused by the prover, not proved.
    let wide = ProvingTask {
        bits: RangeBits::Bits16,
        context: task.context,
        openings: openings(&[250, 70_000], &mut rng),
    };
    assert_eq!(
        wide.prove(gens(RangeBits::Bits16), &mut rng).err(),
        Some(ConfidentialError::OutOfRange)
    );
    // One output: nothing to prove.
    let one = ProvingTask {
        bits: RangeBits::Bits16,
        context: task.context,
        openings: openings(&[300], &mut rng),
    };
    assert!(
        one.prove(gens(RangeBits::Bits16), &mut rng)
            .unwrap()
            .is_none()
    );

    let encode = |n: usize, blinding: [u8; 32]| {
        let mut w = tally_core::codec::Writer::new();
        w.array(4);
        w.u64(1);
        w.u64(16);
        task.context.write(&mut w);
        w.array(n);
        for _ in 0..n {
            w.array(2);
            w.u64(5);
            w.bytes(&blinding);
        }
        w.into_bytes()
    };
    let good = task.openings[0].blinding_bytes();
    assert!(ProvingTask::from_cbor(&encode(4, good)).is_ok());
    assert!(
        ProvingTask::from_cbor(&encode(0, good)).is_err(),
        "no opening"
    );
    assert!(
        ProvingTask::from_cbor(&encode(5, good)).is_err(),
        "five openings"
    );
    assert!(
        ProvingTask::from_cbor(&encode(1, [0; 32])).is_err(),
        "a zero blinding"
    );
    assert!(
        ProvingTask::from_cbor(&encode(1, [0xff; 32])).is_err(),
        "not canonical"
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(ProvingTask::from_cbor(&trailing).is_err(), "trailing bytes");
    let mut version = bytes.clone();
    version[1] = 2;
    assert!(ProvingTask::from_cbor(&version).is_err(), "another version");
    let mut bits = bytes.clone();
    bits[2] = 17;
    assert!(
        ProvingTask::from_cbor(&bits).is_err(),
        "an unknown bit-length"
    );
    // Generators of another bit-length than the task's: refused.
    assert_eq!(
        back.prove(gens(RangeBits::Bits32), &mut rng).err(),
        Some(ConfidentialError::RangeBitsMismatch)
    );
    // A task's blindings never reach a log.
    assert_eq!(format!("{task:?}"), "ProvingTask(2 outputs)");
}

#[test]
fn range_bits_follow_the_policy_bound() {
    assert_eq!(RangeBits::for_bound(Amount(0)), RangeBits::Bits16);
    assert_eq!(RangeBits::for_bound(Amount(65_535)), RangeBits::Bits16);
    assert_eq!(RangeBits::for_bound(Amount(65_536)), RangeBits::Bits32);
    assert_eq!(
        RangeBits::for_bound(Amount(u64::from(u32::MAX))),
        RangeBits::Bits32
    );
    assert_eq!(RangeBits::for_bound(Amount(1 << 32)), RangeBits::Bits64);
    assert!(RangeBits::Bits16.holds(Amount(65_535)));
    assert!(!RangeBits::Bits16.holds(Amount(65_536)));
    assert!(RangeBits::Bits64.holds(Amount(u64::MAX)));
    for bad in [0u8, 8, 24, 128] {
        assert_eq!(
            RangeBits::from_code(bad),
            Err(ConfidentialError::UnsupportedRange)
        );
    }
}

#[test]
fn sealed_openings_do_not_leak_the_amount_by_length() {
    let mut rng = TestEntropy::new(b"length");
    let ctx = context(b"length");
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let lens: Vec<usize> = [0u64, 1, 250, 1 << 40, u64::MAX]
        .iter()
        .map(|v| {
            let o = Opening::random(Amount(*v), &mut rng);
            SealedOpening::seal(&payee.public(), &ctx, &o.commit(), &o, &mut rng)
                .unwrap()
                .to_cbor()
                .len()
        })
        .collect();
    assert!(lens.iter().all(|l| *l == lens[0]), "{lens:?}");
}

/// Every seed with each byte flipped in turn (the low bit, then the high
/// bit): near-valid objects reach the decoders' and verifiers' deep paths
/// (points that do not decompress, scalars out of range, proofs that parse
/// but do not verify), where random bytes rarely go.
#[test]
fn mutated_seeds_never_panic_and_never_verify() {
    let f = fixture();
    for (_, seed) in f.seeds() {
        for i in 1..seed.len() {
            for bit in [0x01u8, 0x80] {
                let mut m = seed.clone();
                m[i] ^= bit;
                check_confidential_objects(f, &m);
            }
        }
        // Truncations too.
        for len in 0..seed.len() {
            check_confidential_objects(f, &seed[..len]);
        }
    }
}
