//! Confidential records and packages (SPEC §4.9, rules C0–C6 of §5):
//! the wire forms, the payee's and settlement's verification, one
//! negative test per new rule (each refused with its own code, next to
//! the honest construction that verifies), and the privacy property of
//! what a payee sees.
//!
//! Vectors: `TALLY_PRINT_VECTORS=1 cargo test -p tally-core --features
//! testkit,confidential --test confidential_package -- --nocapture vectors`.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use tally_codes as codes;
use tally_core::Amount;
use tally_core::cert::PseudonymCertificate;
use tally_core::codec::{Cbor, CodecError};
use tally_core::confidential::{
    Commitment, ConfidentialError, DerivedOpening, Opening, PayeeOpening, RangeBits, RangeGens,
    RangeProof, SealedOpening, SealedOpenings, blinding_base, check_balance,
};
use tally_core::confidential_record::{NewOutput, build_transfer, record_context};
use tally_core::crypto::{Hash32, PublicKey, SecretKey, Suite};
use tally_core::policy::{Policy, amount_mode, device_class};
use tally_core::protocol::{Package, Receipt};
use tally_core::record::{Issue, OutPoint, Record, Transfer};
use tally_core::testkit::{self, Scheme, TestEntropy};
use tally_core::verify::{
    AuditFailure, Expected, NoCache, TrustStore, VerifiedPackage, VerifyError, verify_package,
    verify_package_as_payee, verify_package_for_settlement,
};

const NONCE: [u8; 16] = *b"confidential-nce";
const BUDGET: usize = 32;

/// A confidential scheme (16-bit ranges), a payer holding one confidential
/// Issue of 1000, and a payee.
struct World {
    scheme: Scheme,
    trust: TrustStore,
    payer: SecretKey,
    payee: SecretKey,
    issue: Issue,
    issue_opening: Opening,
    rng: TestEntropy,
}

impl World {
    fn new(label: &str) -> World {
        let mut scheme = Scheme::confidential(Suite::Ed25519);
        let trust = scheme.trust();
        let payer = testkit::key(Suite::Ed25519, format!("{label}-payer").as_bytes());
        let payee = testkit::key(Suite::Ed25519, format!("{label}-payee").as_bytes());
        let issue = scheme.issue(payer.public(), 1000);
        let issue_opening = issue
            .open_output(0, &payer)
            .expect("the payer opens its Issue");
        assert_eq!(issue_opening.value(), Amount(1000));
        World {
            scheme,
            trust,
            payer,
            payee,
            issue,
            issue_opening,
            rng: TestEntropy::new(label.as_bytes()),
        }
    }

    fn gens(&self) -> &RangeGens {
        self.trust
            .range_gens()
            .expect("a confidential policy has range generators")
    }

    fn cert(&self, k: &SecretKey) -> PseudonymCertificate {
        self.scheme.certify(k.public(), device_class::PHONE, 0)
    }

    fn input(&self) -> (OutPoint, PublicKey, Opening) {
        (
            OutPoint {
                record: self.issue.id(),
                index: 0,
            },
            self.payer.public(),
            self.issue_opening.clone(),
        )
    }

    /// An honest one-hop payment of `amount` to the payee (change to the
    /// payer), and the openings of its outputs.
    fn pay(&mut self, amount: u64) -> (Package, Vec<Opening>) {
        self.pay_with_nonce(amount, NONCE)
    }

    fn pay_with_nonce(&mut self, amount: u64, nonce: [u8; 16]) -> (Package, Vec<Opening>) {
        let outs = [
            NewOutput {
                owner: self.payee.public(),
                value: Amount(amount),
            },
            NewOutput {
                owner: self.payer.public(),
                value: Amount(1000 - amount),
            },
        ];
        self.pay_outputs(&outs, nonce)
    }

    /// The whole Issue (1 000) to the payee in one output: its blinding is
    /// the input's, so its opening travels sealed (SPEC §4.9.2).
    fn pay_whole(&mut self) -> (Package, Vec<Opening>) {
        let outs = [NewOutput {
            owner: self.payee.public(),
            value: Amount(1000),
        }];
        self.pay_outputs(&outs, NONCE)
    }

    fn pay_outputs(&mut self, outs: &[NewOutput], nonce: [u8; 16]) -> (Package, Vec<Opening>) {
        let payer = self.payer.clone();
        let key_for = move |k: &PublicKey| (*k == payer.public()).then(|| payer.clone());
        let input = self.input();
        let gens = self.gens().clone();
        let built = build_transfer(
            &gens,
            &Scheme::audit_key(),
            &[input],
            outs,
            nonce,
            1,
            &key_for,
            &mut self.rng,
        )
        .expect("an honest transfer builds");
        let pkg = Package {
            transfer: built.transfer,
            ancestry: vec![Record::Issue(self.issue.clone()).for_ancestry()],
            certificates: vec![self.cert(&self.payer)],
        };
        (pkg, built.openings)
    }

    fn expected(&self, amount: u64) -> Expected {
        Expected {
            payee: self.payee.public(),
            amount: Amount(amount),
            nonce: NONCE,
            stream: None,
        }
    }

    fn verify(&self, pkg: &Package, amount: u64) -> Result<VerifiedPackage, VerifyError> {
        verify_package_as_payee(
            pkg.clone(),
            &self.expected(amount),
            &self.payee,
            &self.trust,
            self.scheme.params(BUDGET),
            &mut NoCache,
        )
    }

    /// The payer signs the (tampered) transfer again: the refusal then
    /// comes from the confidential rule, not from V8.
    fn resign(&self, pkg: &mut Package) {
        pkg.transfer.signatures = vec![
            self.payer
                .sign(&pkg.transfer.signed_message(&pkg.transfer.id()).0),
        ];
    }
}

fn conf(t: &mut Transfer) -> &mut tally_core::record::ConfidentialTransfer {
    t.confidential.as_mut().expect("a confidential transfer")
}

#[track_caller]
fn assert_refused(r: Result<VerifiedPackage, VerifyError>, e: VerifyError, code: u16) {
    assert_eq!(r.as_ref().err(), Some(&e), "{:?}", r.as_ref().map(|_| ()));
    assert_eq!(e.code(), code);
}

// ------------------------------------------------------------ honest path

#[test]
fn an_honest_confidential_payment_verifies_and_the_payee_learns_its_amount() {
    let mut w = World::new("honest");
    let (pkg, openings) = w.pay(250);
    let v = w.verify(&pkg, 250).expect("verifies");
    let (op, out) = v.payment();
    assert_eq!(out.value, Amount(250));
    assert_eq!(out.owner, w.payee.public());
    assert_eq!(op.record, pkg.transfer.id());
    assert_eq!(v.payee_opening(), Some(&openings[0]));
    // On the wire: every output is a commitment, no value is in memory.
    assert!(pkg.transfer.outputs.iter().all(|o| o.value.is_zero()));
    let bytes = pkg.to_cbor();
    assert_eq!(Package::from_cbor(&bytes).as_ref(), Ok(&pkg));
    // Settlement's view verifies the same package without any opening.
    verify_package_for_settlement(pkg.clone(), &w.trust, w.scheme.params(BUDGET), &mut NoCache)
        .expect("settlement verifies");
    // (Another amount asked for of a derived opening: C6, see
    // `c6_a_wrong_opening_for_the_payee_is_refused`.)
    // The whole Issue in one output: the input's commitment itself, its
    // opening sealed with its value; another amount asked for: V11's 1102.
    let (whole, whole_openings) = w.pay_whole();
    let c = whole.transfer.confidential.as_ref().unwrap();
    assert!(matches!(c.payee_opening, Some(PayeeOpening::Sealed(_))));
    assert_eq!(c.commitments, vec![w.issue_opening.commit()]);
    let v = w.verify(&whole, 1000).expect("the whole Issue is paid");
    assert_eq!(v.payee_opening(), Some(&whole_openings[0]));
    assert_eq!(whole_openings[0], w.issue_opening);
    assert_refused(
        w.verify(&whole, 999),
        VerifyError::WrongAmount,
        codes::VERIFY_WRONG_AMOUNT,
    );
}

/// Decision 0031: a transfer of one output carries no range proof — its
/// commitment is its inputs' (C4), already in range — and is the smaller
/// and cheaper for it; the payee still opens it and checks its amount.
#[test]
fn a_whole_token_payment_has_no_range_proof() {
    let mut w = World::new("whole-no-proof");
    let (whole, _) = w.pay_whole();
    let c = whole.transfer.confidential.as_ref().unwrap();
    assert_eq!(c.commitments.len(), 1);
    assert!(c.range_proof.is_none());
    assert_eq!(Package::from_cbor(&whole.to_cbor()), Ok(whole.clone()));
    w.verify(&whole, 1000)
        .expect("verifies without a range proof");
    // Settlement's verifier takes it too (nothing to batch for it).
    verify_package_for_settlement(
        whole.clone(),
        &w.trust,
        w.scheme.params(BUDGET),
        &mut NoCache,
    )
    .expect("settlement verifies it");
    // Against a payment with change: no proof, one output fewer, a sealed
    // opening for a derived one (SPEC §4.9; docs/PERFORMANCE.md).
    let (split, _) = w.pay(250);
    let gens = w.gens().clone();
    let (_, openings) = w.pay_whole();
    let proof = RangeProof::prove(&gens, &whole.transfer.context(), &openings, &mut w.rng).unwrap();
    println!(
        "whole-token package {} bytes (transfer {}; a 16 × 1 proof would add {}), with change {} bytes",
        whole.to_cbor().len(),
        whole.transfer.to_cbor().len(),
        proof.to_cbor().len(),
        split.to_cbor().len()
    );
    assert_eq!(whole.to_cbor().len(), WHOLE_TOKEN_PACKAGE_BYTES);
    assert!(whole.to_cbor().len() <= 1024);
}

/// C4 on a one-output transfer (decision 0031, T77): with no range proof,
/// its commitment must be its inputs' — one worth 1 more is refused.
#[test]
fn c4_a_one_output_transfer_worth_more_than_its_input_is_refused() {
    let mut w = World::new("whole-inflated");
    let (mut whole, _) = w.pay_whole();
    let more = Opening::random(Amount(1001), &mut w.rng);
    conf(&mut whole.transfer).commitments = vec![more.commit()];
    // Its opening sealed to the payee for the new commitment and context,
    // so that only C4 is broken.
    let ctx = whole.transfer.context();
    let sealed =
        SealedOpening::seal(&w.payee.public(), &ctx, &more.commit(), &more, &mut w.rng).unwrap();
    conf(&mut whole.transfer).payee_opening = Some(PayeeOpening::Sealed(sealed));
    w.resign(&mut whole);
    assert_refused(
        w.verify(&whole, 1001),
        VerifyError::CommitmentsUnbalanced,
        codes::VERIFY_COMMITMENTS_UNBALANCED,
    );
    let r = verify_package_for_settlement(whole, &w.trust, w.scheme.params(BUDGET), &mut NoCache);
    assert_eq!(r.err(), Some(VerifyError::CommitmentsUnbalanced));
}

/// The package size of a whole-token payment (one output, no range proof).
const WHOLE_TOKEN_PACKAGE_BYTES: usize = 805;

/// C3 (decision 0031): a range proof exactly when a transfer has two or
/// more outputs. On the wire the other shapes do not decode (V1); built
/// in memory they are refused with C3's code. Either way the payee is
/// not paid.
#[test]
fn c3_a_range_proof_on_one_output_or_none_on_two_is_refused() {
    let mut w = World::new("proof-shape");
    // One output with a proof (a 16 × 1 proof of its own opening).
    let (mut whole, openings) = w.pay_whole();
    let ctx = whole.transfer.context();
    let gens = w.gens().clone();
    let proof = RangeProof::prove(&gens, &ctx, &openings, &mut w.rng).unwrap();
    conf(&mut whole.transfer).range_proof = Some(proof);
    assert_refused(
        w.verify(&whole, 1000),
        VerifyError::RangeProofInvalid,
        codes::VERIFY_RANGE_PROOF_INVALID,
    );
    assert!(matches!(
        Package::from_cbor(&whole.to_cbor()),
        Err(CodecError::Malformed | CodecError::TooLong)
    ));
    // Two outputs without their proof.
    let (mut split, _) = w.pay(250);
    conf(&mut split.transfer).range_proof = None;
    assert_refused(
        w.verify(&split, 250),
        VerifyError::RangeProofInvalid,
        codes::VERIFY_RANGE_PROOF_INVALID,
    );
    assert!(Package::from_cbor(&split.to_cbor()).is_err());
    let r = verify_package_for_settlement(split, &w.trust, w.scheme.params(BUDGET), &mut NoCache);
    assert_eq!(r.err(), Some(VerifyError::RangeProofInvalid));
}

#[test]
fn a_chain_of_confidential_payments_verifies_at_every_hop() {
    let mut w = World::new("chain");
    let (pkg, openings) = w.pay(600);
    let v = w.verify(&pkg, 600).expect("hop 1");
    // The payee pays 400 of its 600 onward to a third party.
    let third = testkit::key(Suite::Ed25519, b"chain-third");
    let payee = w.payee.clone();
    let key_for = move |k: &PublicKey| (*k == payee.public()).then(|| payee.clone());
    let (op, _) = v.payment();
    let gens = w.gens().clone();
    let built = build_transfer(
        &gens,
        &Scheme::audit_key(),
        &[(op, w.payee.public(), openings[0].clone())],
        &[
            NewOutput {
                owner: third.public(),
                value: Amount(400),
            },
            NewOutput {
                owner: w.payee.public(),
                value: Amount(200),
            },
        ],
        *b"second-hop-nonce",
        1,
        &key_for,
        &mut w.rng,
    )
    .expect("hop 2 builds");
    let pkg2 = Package {
        transfer: built.transfer,
        ancestry: vec![
            pkg.ancestry[0].clone(),
            Record::Transfer(pkg.transfer.clone()).for_ancestry(),
        ],
        certificates: vec![w.cert(&w.payer), w.cert(&w.payee)],
    };
    let v2 = verify_package_as_payee(
        pkg2.clone(),
        &Expected {
            payee: third.public(),
            amount: Amount(400),
            nonce: *b"second-hop-nonce",
            stream: None,
        },
        &third,
        &w.trust,
        w.scheme.params(BUDGET),
        &mut NoCache,
    )
    .expect("hop 2 verifies");
    assert_eq!(v2.payment().1.value, Amount(400));
    // The ancestry transfer's sealed opening was stripped, not needed.
    match &pkg2.ancestry[1] {
        Record::Transfer(t) => assert!(t.confidential.as_ref().unwrap().payee_opening.is_none()),
        _ => unreachable!(),
    }
    // A range proof lifted into the ancestry is caught too.
    let mut bad = pkg2.clone();
    if let Record::Transfer(t) = &mut bad.ancestry[1] {
        conf(t).range_proof = conf(&mut pkg2.transfer.clone()).range_proof.clone();
    }
    // (Changing a witness does not change ids: the signatures still hold.)
    let r = verify_package_as_payee(
        bad,
        &Expected {
            payee: third.public(),
            amount: Amount(400),
            nonce: *b"second-hop-nonce",
            stream: None,
        },
        &third,
        &w.trust,
        w.scheme.params(BUDGET),
        &mut NoCache,
    );
    assert_refused(
        r,
        VerifyError::RangeProofInvalid,
        codes::VERIFY_RANGE_PROOF_INVALID,
    );
}

// ------------------------------------------------- one negative per rule

/// C3: the payer pays 1001 out of 1000 and keeps −1 as change, with
/// blindings that balance. Values cancel on the points, so C4 holds; only
/// the range proof stands in the way, and no proof exists for −1.
#[test]
fn c3_an_output_committing_to_a_negative_amount_is_refused() {
    let mut w = World::new("negative");
    let (mut pkg, _) = w.pay(250);
    let r_in = *w.issue_opening.blinding();
    let pay = Opening::random(Amount(1001), &mut w.rng);
    let r_neg = r_in - pay.blinding();
    let neg: RistrettoPoint = -RISTRETTO_BASEPOINT_POINT + r_neg * blinding_base();
    let neg = Commitment::from_bytes(&neg.compress().to_bytes()).unwrap();
    let commitments = vec![pay.commit(), neg];
    let ctx = record_context(&Transfer::body_bytes_with(
        &pkg.transfer,
        Some(&commitments),
    ));
    // r_in = r_pay + r_neg and 1000 = 1001 − 1: the commitments balance.
    assert_eq!(
        check_balance(&[w.issue_opening.commit()], &commitments),
        Ok(())
    );
    // The best proof the cheat has: one for (1001, 65535), another statement.
    let wrapped = Opening::from_parts(Amount(65535), r_neg).unwrap();
    let proof = RangeProof::prove(
        w.trust.range_gens().unwrap(),
        &ctx,
        &[pay.clone(), wrapped],
        &mut w.rng,
    )
    .unwrap();
    let sealed =
        SealedOpening::seal(&w.payee.public(), &ctx, &commitments[0], &pay, &mut w.rng).unwrap();
    let c = conf(&mut pkg.transfer);
    c.commitments = commitments;
    c.range_proof = Some(proof);
    c.payee_opening = Some(PayeeOpening::Sealed(sealed));
    w.resign(&mut pkg);
    assert_refused(
        w.verify(&pkg, 1001),
        VerifyError::RangeProofInvalid,
        codes::VERIFY_RANGE_PROOF_INVALID,
    );
}

/// C2: an output above the policy's range (2^16) proved with a 32-bit
/// proof: the bit-length is not the policy's.
#[test]
fn c2_an_output_above_the_policy_range_is_refused() {
    let mut w = World::new("above");
    let (mut pkg, openings) = w.pay(250);
    let ctx = pkg.transfer.context();
    let g32 = RangeGens::new(RangeBits::Bits32, 2).unwrap();
    let proof = RangeProof::prove(&g32, &ctx, &openings, &mut w.rng).unwrap();
    conf(&mut pkg.transfer).range_proof = Some(proof);
    assert_refused(
        w.verify(&pkg, 250),
        VerifyError::RangeBitsMismatch,
        codes::VERIFY_RANGE_BITS_MISMATCH,
    );
}

/// C4's cheat on a payment of 250 from 1 000: its change output becomes
/// 800 (value created), with the commitments, the transfer's context for
/// them and an honest range proof over both outputs (both are in range).
fn value_created(
    w: &mut World,
    pkg: &Package,
    openings: &mut [Opening],
) -> (Vec<Commitment>, Hash32, RangeProof) {
    // The change's value raised by 50 under its balanced blinding: only
    // the values' side of the points differs.
    openings[1] = Opening::from_parts(Amount(800), *openings[1].blinding()).unwrap();
    let commitments: Vec<Commitment> = openings.iter().map(Opening::commit).collect();
    let ctx = record_context(&Transfer::body_bytes_with(
        &pkg.transfer,
        Some(&commitments),
    ));
    let proof =
        RangeProof::prove(w.trust.range_gens().unwrap(), &ctx, openings, &mut w.rng).unwrap();
    (commitments, ctx, proof)
}

/// C4: value created: 1000 in, 250 + 800 out, the blindings balanced.
/// The range proof is honest (both in range); the commitments do not sum.
#[test]
fn c4_value_created_is_refused() {
    let mut w = World::new("excess");
    let (honest, _) = w.pay(250);
    let (mut pkg, mut openings) = w.pay(250);
    let (commitments, ctx, proof) = value_created(&mut w, &pkg, &mut openings);
    let sealed = SealedOpening::seal(
        &w.payee.public(),
        &ctx,
        &commitments[0],
        &openings[0],
        &mut w.rng,
    )
    .unwrap();
    let c = conf(&mut pkg.transfer);
    c.commitments = commitments;
    c.range_proof = Some(proof);
    c.payee_opening = Some(PayeeOpening::Sealed(sealed));
    w.resign(&mut pkg);
    assert_refused(
        w.verify(&pkg, 250),
        VerifyError::CommitmentsUnbalanced,
        codes::VERIFY_COMMITMENTS_UNBALANCED,
    );
    // The honest transfer of the same shape verifies.
    w.verify(&honest, 250).expect("honest");
}

/// C6: the payer seals an opening of 200 for the commitment to 250 (so
/// the payee would credit another amount than the one committed).
#[test]
fn c6_a_wrong_opening_for_the_payee_is_refused() {
    let mut w = World::new("wrong-opening");
    let (mut pkg, openings) = w.pay(250);
    let ctx = pkg.transfer.context();
    let lie = Opening::from_parts(Amount(200), *openings[0].blinding()).unwrap();
    let c0 = pkg.transfer.confidential.as_ref().unwrap().commitments[0];
    let sealed =
        SealedOpening::seal_unchecked(&w.payee.public(), &ctx, &c0, &lie, &mut w.rng).unwrap();
    let (honest, _) = w.pay(250);
    // The payer's own derived opening (the honest form with change) for a
    // request of 200: the payee's point 200·B + r·H is not the commitment.
    assert!(matches!(
        honest.transfer.confidential.as_ref().unwrap().payee_opening,
        Some(PayeeOpening::Derived(_))
    ));
    assert_refused(
        w.verify(&honest, 200),
        VerifyError::WrongOpening,
        codes::VERIFY_WRONG_OPENING,
    );
    conf(&mut pkg.transfer).payee_opening = Some(PayeeOpening::Sealed(sealed));
    assert_refused(
        w.verify(&pkg, 200),
        VerifyError::WrongOpening,
        codes::VERIFY_WRONG_OPENING,
    );
    // No opening at all, or one sealed to another key: unreadable.
    let mut none = pkg.clone();
    conf(&mut none.transfer).payee_opening = None;
    assert_refused(
        w.verify(&none, 250),
        VerifyError::OpeningUnreadable,
        codes::VERIFY_OPENING_UNREADABLE,
    );
    let other = testkit::key(Suite::Ed25519, b"not-the-payee");
    let mut foreign = pkg.clone();
    conf(&mut foreign.transfer).payee_opening = Some(PayeeOpening::Sealed(
        SealedOpening::seal(&other.public(), &ctx, &c0, &openings[0], &mut w.rng).unwrap(),
    ));
    assert_refused(
        w.verify(&foreign, 250),
        VerifyError::OpeningUnreadable,
        codes::VERIFY_OPENING_UNREADABLE,
    );
    // A derived opening for another key, or lifted from another payment
    // of the same amount to the same payee: the derived blinding is not
    // the commitment's.
    let (d_other, _) = DerivedOpening::derive(&other.public(), &mut w.rng).unwrap();
    conf(&mut foreign.transfer).payee_opening = Some(PayeeOpening::Derived(d_other));
    assert_refused(
        w.verify(&foreign, 250),
        VerifyError::WrongOpening,
        codes::VERIFY_WRONG_OPENING,
    );
    let (second, _) = w.pay_with_nonce(250, *b"a-second-payment");
    let mut lifted = honest.clone();
    conf(&mut lifted.transfer).payee_opening = second
        .transfer
        .confidential
        .as_ref()
        .unwrap()
        .payee_opening
        .clone();
    assert_refused(
        w.verify(&lifted, 250),
        VerifyError::WrongOpening,
        codes::VERIFY_WRONG_OPENING,
    );
    w.verify(&honest, 250).expect("the honest payment verifies");
    // Without the payee's key (the plain entry point) nothing is opened.
    assert_refused(
        verify_package(
            honest,
            &w.expected(250),
            &w.trust,
            w.scheme.params(BUDGET),
            &mut NoCache,
        ),
        VerifyError::OpeningUnreadable,
        codes::VERIFY_OPENING_UNREADABLE,
    );
}

/// C5/C6: the payee's commitment and the change's swapped (and the
/// transfer signed again): output 0 now commits to the change, which the
/// payee's derived blinding does not open (C6), nor a sealed opening,
/// bound to its commitment (C5).
#[test]
fn c5_a_commitment_swapped_between_outputs_is_refused() {
    let mut w = World::new("swap");
    let (mut pkg, openings) = w.pay(250);
    let c0 = pkg.transfer.confidential.as_ref().unwrap().commitments[0];
    conf(&mut pkg.transfer).commitments.swap(0, 1);
    w.resign(&mut pkg);
    assert_refused(
        w.verify(&pkg, 250),
        VerifyError::WrongOpening,
        codes::VERIFY_WRONG_OPENING,
    );
    // A sealed opening of the payee's amount, bound to its commitment.
    let ctx = pkg.transfer.context();
    conf(&mut pkg.transfer).payee_opening = Some(PayeeOpening::Sealed(
        SealedOpening::seal(&w.payee.public(), &ctx, &c0, &openings[0], &mut w.rng).unwrap(),
    ));
    assert_refused(
        w.verify(&pkg, 250),
        VerifyError::OpeningUnreadable,
        codes::VERIFY_OPENING_UNREADABLE,
    );
    // Not signed again: the same refusal (witnesses first, V8 last).
    let (mut unsigned, _) = w.pay(250);
    conf(&mut unsigned.transfer).commitments.swap(0, 1);
    assert_eq!(
        w.verify(&unsigned, 250).err(),
        Some(VerifyError::WrongOpening)
    );
}

/// C3: a range proof lifted from another transfer of the same amounts
/// (another nonce, hence another context).
#[test]
fn c3_a_proof_from_another_transfer_is_refused() {
    let mut w = World::new("lifted");
    let (pkg, _) = w.pay(250);
    let (other, _) = w.pay_with_nonce(250, *b"another-transfer");
    let mut lifted = pkg.clone();
    conf(&mut lifted.transfer).range_proof = other
        .transfer
        .confidential
        .as_ref()
        .unwrap()
        .range_proof
        .clone();
    assert_refused(
        w.verify(&lifted, 250),
        VerifyError::RangeProofInvalid,
        codes::VERIFY_RANGE_PROOF_INVALID,
    );
}

/// C0: a payee takes only the policy's amount form.
#[test]
fn c0_the_amount_form_must_be_the_policys() {
    let mut w = World::new("form");
    let (pkg, _) = w.pay(250);
    // The same scheme with a clear policy refuses the confidential package.
    let clear = Policy::sign(
        &w.scheme.root,
        w.scheme.policy.serial,
        "XTS",
        w.scheme.policy.tiers.clone(),
        w.scheme.policy.dcps.clone(),
    );
    let clear_trust =
        TrustStore::new(w.scheme.root.public(), clear, w.scheme.revocations.clone()).unwrap();
    assert!(clear_trust.range_gens().is_none());
    let r = verify_package_as_payee(
        pkg,
        &w.expected(250),
        &w.payee,
        &clear_trust,
        w.scheme.params(BUDGET),
        &mut NoCache,
    );
    assert_refused(r, VerifyError::AmountForm, codes::VERIFY_AMOUNT_FORM);
    // A clear package under the confidential policy: refused as well.
    let mut s = Scheme::new(Suite::Ed25519);
    let payer = testkit::key(Suite::Ed25519, b"form-clear-payer");
    let issue = s.issue(payer.public(), 100);
    let mut t = Transfer {
        inputs: vec![OutPoint {
            record: issue.id(),
            index: 0,
        }],
        outputs: vec![tally_core::Output {
            value: Amount(100),
            owner: w.payee.public(),
        }],
        nonce: NONCE,
        counter: 1,
        signatures: vec![],
        confidential: None,
        stream: None,
    };
    t.signatures = vec![payer.sign(&t.signed_message(&t.id()).0)];
    let clear_pkg = Package {
        transfer: t,
        ancestry: vec![Record::Issue(issue)],
        certificates: vec![s.certify(payer.public(), device_class::PHONE, 0)],
    };
    assert_refused(
        w.verify(&clear_pkg, 100),
        VerifyError::AmountForm,
        codes::VERIFY_AMOUNT_FORM,
    );
}

// ------------------------------------------------------------------ wire

#[test]
fn records_and_policies_have_one_encoding_per_form() {
    let mut w = World::new("wire");
    let (pkg, _) = w.pay(250);
    // Transfer: 7 elements with committed outputs; the proofs element
    // without the sealed opening has 2 items.
    let t = pkg.transfer.clone();
    assert_eq!(Transfer::from_cbor(&t.to_cbor()), Ok(t.clone()));
    let stripped = t.clone().without_opening();
    assert_eq!(stripped.id(), t.id(), "witnesses are outside the id");
    assert_eq!(
        Transfer::from_cbor(&stripped.to_cbor()),
        Ok(stripped.clone())
    );
    // Committed outputs without the proofs element: refused.
    let c = t.confidential.as_ref().unwrap();
    let proofs_len = 1
        + c.range_proof.as_ref().unwrap().to_cbor().len()
        + c.audit.as_ref().unwrap().to_cbor().len()
        + c.payee_opening.as_ref().unwrap().to_cbor().len();
    let mut b = t.to_cbor();
    assert_eq!(b[0], 0x87);
    b[0] = 0x86;
    b.truncate(b.len() - proofs_len);
    assert_eq!(Transfer::from_cbor(&b), Err(CodecError::Malformed));
    // Issue: with openings (as loaded) and without (in an ancestry).
    let i = w.issue.clone();
    assert_eq!(Issue::from_cbor(&i.to_cbor()), Ok(i.clone()));
    let a = i.clone().without_openings();
    assert_eq!(a.id(), i.id());
    assert_eq!(Issue::from_cbor(&a.to_cbor()), Ok(a.clone()));
    assert!(a.to_cbor().len() < i.to_cbor().len());
    // Policy: the clear form has no mode field; mode 0 written out is not
    // canonical, an unknown mode is refused.
    let p = w.scheme.policy.clone();
    assert_eq!(p.amount_mode, amount_mode::CONFIDENTIAL);
    let pb = p.to_cbor();
    assert_eq!(pb[0], 0x89);
    assert_eq!(Policy::from_cbor(&pb), Ok(p.clone()));
    assert_eq!(p.audit_key, Some(Scheme::audit_key()));
    let mut zero = pb.clone();
    // The mode, then the audit key (bstr 32: 34 bytes), then the signature.
    let mode_at = pb.len() - p.signature.to_cbor().len() - 34 - 1;
    assert_eq!(zero[mode_at], 0x01);
    zero[mode_at] = 0x00;
    assert_eq!(Policy::from_cbor(&zero), Err(CodecError::NonCanonical));
    zero[mode_at] = 0x02;
    assert_eq!(Policy::from_cbor(&zero), Err(CodecError::UnknownCode));
    let clear = Scheme::new(Suite::Ed25519).policy;
    assert_eq!(clear.to_cbor()[0], 0x87);
}

#[test]
fn a_record_mixing_amount_forms_does_not_decode() {
    let mut w = World::new("mixed");
    let (pkg, _) = w.pay(250);
    let b = pkg.transfer.to_cbor();
    // Output 1 `[1, h'…32', owner]` rewritten as `[0, 750, owner]` would
    // change lengths; instead, flip output 1's form byte to 0: its
    // "value" is then a byte string, which is malformed either way, and
    // a form-0 output among form-1 outputs is refused as well.
    let c1 = pkg.transfer.confidential.as_ref().unwrap().commitments[1];
    let at = b
        .windows(32)
        .position(|x| x == c1.as_bytes())
        .expect("output 1's commitment")
        - 3;
    assert_eq!(&b[at..at + 3], &[0x01, 0x58, 0x20]);
    let mut m = b.clone();
    m[at] = 0x00;
    assert_eq!(Transfer::from_cbor(&m), Err(CodecError::Malformed));
}

// --------------------------------------------------------------- privacy

/// Every encoding of `v` a reader could look for: CBOR unsigned heads of
/// every width, big- and little-endian u16/u32/u64, decimal text.
fn encodings(v: u64) -> Vec<Vec<u8>> {
    let mut e = vec![
        v.to_be_bytes().to_vec(),
        v.to_le_bytes().to_vec(),
        (v as u32).to_be_bytes().to_vec(),
        (v as u32).to_le_bytes().to_vec(),
        format!("{v}").into_bytes(),
        tally_core::codec::Writer::new().tap_u64(v),
    ];
    // Two-byte forms match random bytes too often to mean anything; the
    // CBOR head (3 bytes for 256…65535) and the text carry them.
    e.retain(|x| x.len() >= 3);
    e
}

trait TapU64 {
    fn tap_u64(self, v: u64) -> Vec<u8>;
}
impl TapU64 for tally_core::codec::Writer {
    fn tap_u64(mut self, v: u64) -> Vec<u8> {
        self.u64(v);
        self.into_bytes()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_payee_sees_no_amount_but_its_own() {
    let mut w = World::new("privacy");
    let (pkg, _) = w.pay(300);
    let bytes = pkg.to_cbor();
    // The input (1000) and the change (700) appear in no encoding; the
    // payee's own amount is not on the wire either (it is sealed).
    for v in [1000u64, 700, 300] {
        for e in encodings(v) {
            assert!(!contains(&bytes, &e), "{v} visible as {e:02x?}");
        }
    }
    // Two payments of the same amount to the same payee commit
    // differently (fresh blindings).
    let (again, _) = w.pay_with_nonce(300, *b"same-amount-nnce");
    let c = |p: &Package| {
        p.transfer
            .confidential
            .as_ref()
            .unwrap()
            .commitments
            .clone()
    };
    assert_ne!(c(&pkg)[0], c(&again)[0]);
    assert_ne!(c(&pkg)[1], c(&again)[1]);
}

// ------------------------------------------------------------ sizes

#[test]
fn one_hop_sizes() {
    let mut w = World::new("sizes");
    let (pkg, _) = w.pay(250);
    let t = &pkg.transfer;
    let c = t.confidential.as_ref().unwrap();
    let sizes = [
        ("package", pkg.to_cbor().len()),
        ("transfer", t.to_cbor().len()),
        ("issue (ancestry form)", pkg.ancestry[0].to_cbor().len()),
        (
            "issue (as loaded, with its sealed opening)",
            w.issue.to_cbor().len(),
        ),
        (
            "range proof",
            c.range_proof.as_ref().unwrap().to_cbor().len(),
        ),
        (
            "payee's opening (derived)",
            c.payee_opening.as_ref().unwrap().to_cbor().len(),
        ),
        ("certificate", pkg.certificates[0].to_cbor().len()),
    ];
    for (what, n) in sizes {
        println!("{what}: {n} bytes");
    }
    // The package's size today (SPEC §4.9; issue target 1 024, missed:
    // see docs/PERFORMANCE.md and decision 0019 — 1 378 bytes with the
    // transfer's and the Issue's audit seals; 66 fewer without the excess
    // signature of decision 0017, 58 fewer with the payee's blinding
    // derived, not sealed: decision 0029).
    assert_eq!(pkg.to_cbor().len(), 1378);
    assert_eq!(t.to_cbor().len(), 959);
    assert_eq!(c.payee_opening.as_ref().unwrap().to_cbor().len(), 36);
    let receipt = Receipt::sign(&w.payee, t.id());
    assert_eq!(Receipt::from_cbor(&receipt.to_cbor()), Ok(receipt));
    let _ = Hash32([0; 32]);
}

/// Settlement checks the range proofs of many packages in one batch; a
/// bad proof refuses its own package only, with the answer one-at-a-time
/// verification gives.
#[test]
fn settlement_batches_range_proofs_and_names_the_bad_package() {
    use tally_core::verify::verify_packages_for_settlement;
    let mut w = World::new("settle-batch");
    let mut pkgs: Vec<Package> = (0..4u8)
        .map(|i| w.pay_with_nonce(100 + u64::from(i), [i; 16]).0)
        .collect();
    let all_good = verify_packages_for_settlement(
        pkgs.clone(),
        &w.trust,
        w.scheme.params(BUDGET),
        &mut NoCache,
    );
    assert!(all_good.iter().all(Result::is_ok));
    let lifted = pkgs[0]
        .transfer
        .confidential
        .as_ref()
        .unwrap()
        .range_proof
        .clone();
    conf(&mut pkgs[2].transfer).range_proof = lifted;
    let r = verify_packages_for_settlement(
        pkgs.clone(),
        &w.trust,
        w.scheme.params(BUDGET),
        &mut NoCache,
    );
    let errs: Vec<Option<VerifyError>> = r.iter().map(|r| r.as_ref().err().copied()).collect();
    assert_eq!(
        errs,
        vec![None, None, Some(VerifyError::RangeProofInvalid), None]
    );
    for (p, e) in pkgs.iter().zip(&errs) {
        let one = verify_package_for_settlement(
            p.clone(),
            &w.trust,
            w.scheme.params(BUDGET),
            &mut NoCache,
        );
        assert_eq!(one.err(), *e);
    }
}

// --------------------------------------------------------------- vectors

/// The blocks ```` ```hex confidential=NAME ```` of SPEC.md §4.9.
fn spec_blocks() -> Vec<(String, Vec<u8>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SPEC.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("```hex confidential=") else {
            continue;
        };
        let mut h = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            h.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        out.push((name.trim().to_string(), hex::decode(&h).unwrap()));
    }
    out
}

/// The confidential vectors: the fuzz fixture's package (deterministic:
/// `TestEntropy::new(b"confidential-package-fixture")`, testkit keys
/// `fixture-payer` and `payee`, Issue of 1000, payment 250, change 750,
/// 16-bit ranges), its Issue as loaded (with the sealed opening), its
/// transfer, and the payee's receipt.
fn vectors_of_the_fixture() -> Vec<(String, Vec<u8>)> {
    let f = tally_core::confidential::fuzzing::PackageFixture::new();
    let receipt = Receipt::sign(&f.payee, f.package.transfer.id());
    let whole = tally_core::confidential::fuzzing::PackageFixture::whole();
    vec![
        ("issue".to_string(), f.issue.to_cbor()),
        ("transfer".to_string(), f.package.transfer.to_cbor()),
        ("package".to_string(), f.package.to_cbor()),
        ("receipt".to_string(), receipt.to_cbor()),
        (
            "whole-transfer".to_string(),
            whole.package.transfer.to_cbor(),
        ),
        ("whole-package".to_string(), whole.package.to_cbor()),
        (
            "proving-task".to_string(),
            proving_task_of_the_fixture().to_cbor(),
        ),
    ]
}

/// The proving task (decision 0032) for the fixture's payment of 250 from
/// its Issue of 1000, change to the payer, nonce `fixture-nonce-01`,
/// counter 1, the openings' randomness from `SeededStream` with seed
/// `TH("tally/test/proving-task-vector")`.
fn proving_task_of_the_fixture() -> tally_core::confidential_record::ProvingTask {
    use tally_core::confidential::RangeBits;
    use tally_core::confidential_record::prepare_transfer;
    use tally_core::crypto::{SeededStream, tagged_hash};
    let f = tally_core::confidential::fuzzing::PackageFixture::new();
    let payer = testkit::key(Suite::Ed25519, b"fixture-payer");
    let (input, outputs) =
        tally_core::confidential::fuzzing::payment_of(&f.issue, &payer, &f.payee.public(), 250);
    let seed = tagged_hash(b"tally/test/proving-task-vector", &[]);
    let prepared = prepare_transfer(
        &[input],
        &outputs,
        *b"fixture-nonce-01",
        1,
        &mut SeededStream::new(seed.0),
    )
    .unwrap();
    prepared.task(RangeBits::Bits16)
}

#[test]
fn vectors() {
    let ours = vectors_of_the_fixture();
    if std::env::var_os("TALLY_PRINT_VECTORS").is_some() {
        for (name, bytes) in &ours {
            println!("```hex confidential={name}");
            for chunk in bytes.chunks(32) {
                println!("{}", hex::encode(chunk));
            }
            println!("```");
        }
        return;
    }
    let spec = spec_blocks();
    assert_eq!(
        spec.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        ours.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        "SPEC.md §4.9 has other vectors than the code"
    );
    for ((name, b), (_, s)) in ours.iter().zip(&spec) {
        assert_eq!(
            hex::encode(s),
            hex::encode(b),
            "vector {name} differs from SPEC.md"
        );
    }
    // SPEC's bytes on their own: the package verifies for the payee and
    // pays 250; the Issue opens to 1000 for the payer; the receipt
    // verifies.
    let f = tally_core::confidential::fuzzing::PackageFixture::new();
    let pkg = Package::from_cbor(&spec[2].1).unwrap();
    assert_eq!(f.verify(pkg).unwrap().payment().1.value, Amount(250));
    let issue = Issue::from_cbor(&spec[0].1).unwrap();
    let payer = testkit::key(Suite::Ed25519, b"fixture-payer");
    assert_eq!(issue.open_output(0, &payer).unwrap().value(), Amount(1000));
    Receipt::from_cbor(&spec[3].1).unwrap().verify().unwrap();
    // The whole token: one output, no range proof, pays 1000.
    let whole = tally_core::confidential::fuzzing::PackageFixture::whole();
    let pkg = Package::from_cbor(&spec[5].1).unwrap();
    assert!(
        pkg.transfer
            .confidential
            .as_ref()
            .unwrap()
            .range_proof
            .is_none()
    );
    assert_eq!(whole.verify(pkg).unwrap().payment().1.value, Amount(1000));
    // The proving task: its openings are the payment and the change, and
    // the payee derives the payment's blinding from the transfer it
    // belongs to (the task's first opening is its derived opening).
    let task = tally_core::confidential_record::ProvingTask::from_cbor(&spec[6].1).unwrap();
    let values: Vec<u64> = task.openings.iter().map(|o| o.value().0).collect();
    assert_eq!(values, [250, 750]);
    let proof = task
        .prove(
            &RangeGens::new(task.bits, 2).unwrap(),
            &mut TestEntropy::new(b"v"),
        )
        .unwrap()
        .unwrap();
    let commitments: Vec<_> = task.openings.iter().map(|o| o.commit()).collect();
    proof
        .verify(
            &RangeGens::new(task.bits, 2).unwrap(),
            &task.context,
            &commitments,
        )
        .unwrap();
}

/// C7 (settlement, with uploaded openings): the openings must open the
/// commitments and balance; a swapped or altered opening is refused.
#[test]
fn c7_settlement_checks_uploaded_openings() {
    use tally_core::confidential::ConfidentialError;
    use tally_core::confidential_record::check_transfer_openings;
    let mut w = World::new("c7");
    let (pkg, openings) = w.pay(250);
    let input_c = *pkg.ancestry[0].commitment(0).unwrap();
    let inputs = [(input_c, w.issue_opening.clone())];
    assert_eq!(
        check_transfer_openings(&pkg.transfer, &inputs, &openings),
        Ok(vec![Amount(250), Amount(750)])
    );
    let swapped = [openings[1].clone(), openings[0].clone()];
    assert_eq!(
        check_transfer_openings(&pkg.transfer, &inputs, &swapped),
        Err(ConfidentialError::WrongOpening)
    );
    let altered = [
        Opening::from_parts(Amount(251), *openings[0].blinding()).unwrap(),
        openings[1].clone(),
    ];
    assert_eq!(
        check_transfer_openings(&pkg.transfer, &inputs, &altered),
        Err(ConfidentialError::WrongOpening)
    );
    assert_eq!(
        check_transfer_openings(&pkg.transfer, &inputs, &openings[..1]),
        Err(ConfidentialError::OutputCount)
    );
}

// ------------------------------------------------------------ audit seal

fn settlement_key() -> tally_core::sealed::OpeningKey {
    tally_core::sealed::OpeningKey::from_seed(&Scheme::AUDIT_SEED)
}

fn settle_view(w: &World, pkg: &Package) -> VerifiedPackage {
    verify_package_for_settlement(pkg.clone(), &w.trust, w.scheme.params(BUDGET), &mut NoCache)
        .expect("the package verifies for settlement")
}

fn bits(w: &World) -> RangeBits {
    w.gens().bits()
}

/// C7: settlement opens every record's audit seal and learns every
/// amount of the package (the payer's change and the Issue's value
/// included), which the payee never learns.
#[test]
fn c7_settlement_opens_the_audit_seal_of_every_record() {
    let mut w = World::new("audit-honest");
    let (pkg, _) = w.pay(250);
    // The audit seal stays in the ancestry form (the payee opening goes).
    match &pkg.ancestry[0] {
        Record::Issue(i) => {
            let c = i.confidential.as_ref().unwrap();
            assert!(c.openings.is_empty());
            assert!(c.audit.as_ref().unwrap().fits(1));
        }
        _ => unreachable!(),
    }
    let stripped = pkg.transfer.clone().without_opening();
    assert!(stripped.confidential.as_ref().unwrap().audit.is_some());
    let v = settle_view(&w, &pkg);
    assert!(!v.amounts_opened());
    assert_eq!(v.package().transfer.outputs[1].value, Amount::ZERO);
    let opened = v
        .open_audit(&settlement_key(), bits(&w))
        .expect("honest seals open");
    assert!(opened.amounts_opened());
    let values: Vec<Amount> = opened
        .package()
        .transfer
        .outputs
        .iter()
        .map(|o| o.value)
        .collect();
    assert_eq!(values, vec![Amount(250), Amount(750)]);
    assert_eq!(
        opened.package().ancestry[0].outputs()[0].value,
        Amount(1000)
    );
    // The wire form and the ids did not change: they hold commitments.
    assert_eq!(opened.package().to_cbor(), pkg.to_cbor());
    assert_eq!(opened.package().transfer.id(), pkg.transfer.id());
}

/// A hostile payer seals a wrong opening for its change (the payee cannot
/// tell: it cannot read the seal); settlement refuses the package (C7)
/// and names the record.
#[test]
fn c7_a_wrong_audit_opening_is_refused_by_settlement() {
    let mut w = World::new("audit-wrong");
    let (mut pkg, openings) = w.pay(250);
    let c = conf(&mut pkg.transfer).clone();
    let lying = [
        openings[0].clone(),
        Opening::from_parts(Amount(10), *openings[1].blinding()).unwrap(),
    ];
    conf(&mut pkg.transfer).audit = Some(
        SealedOpenings::seal_unchecked(
            &Scheme::audit_key(),
            &pkg.transfer.context(),
            &c.commitments,
            &lying,
            &mut w.rng,
        )
        .unwrap(),
    );
    // The hostile payer signs what it sealed (the signatures cover the
    // seal, decision 0034). The payee accepts it: the seal is there, well
    // formed (C8) and signed.
    w.resign(&mut pkg);
    let v = w.verify(&pkg, 250).expect("the payee cannot read the seal");
    assert_eq!(v.payment().1.value, Amount(250));
    let r = settle_view(&w, &pkg).open_audit(&settlement_key(), bits(&w));
    assert_eq!(
        r.err(),
        Some(AuditFailure {
            record: pkg.transfer.id(),
            reason: ConfidentialError::WrongOpening
        })
    );
    // The honest SealedOpenings::seal refuses to seal it at all.
    assert_eq!(
        SealedOpenings::seal(
            &Scheme::audit_key(),
            &pkg.transfer.context(),
            &c.commitments,
            &lying,
            &mut w.rng,
        ),
        Err(ConfidentialError::WrongOpening)
    );
}

/// Settlement by openings (decision 0028): with settlement's sealing key
/// in the call, the audit openings (C7) stand in for the range proofs and
/// the balance of commitments (C3, C4). What the proofs refuse is still
/// refused: C4's cheat — 1 000 in, 250 + 800 out, an honest range proof —
/// with an audit seal that tells the truth does not balance in clear; one whose seal lies does not open. The other packages of the
/// call settle with their amounts. A package whose range proof does not
/// verify but whose openings are honest settles: its amounts are in range
/// and balance, which is what settlement books (the proof is the payee's
/// evidence, not settlement's).
#[test]
fn settlement_by_openings_refuses_what_the_proofs_refuse() {
    use tally_core::verify::SettlementRefusal;
    let mut w = World::new("by-openings");
    let good: Vec<Package> = (0..3u8)
        .map(|i| w.pay_with_nonce(100 + u64::from(i), [i; 16]).0)
        .collect();
    let (mut inflated, mut openings) = w.pay_with_nonce(250, [10; 16]);
    let (commitments, ctx, proof) = value_created(&mut w, &inflated, &mut openings);
    let truthful = SealedOpenings::seal(
        &Scheme::audit_key(),
        &ctx,
        &commitments,
        &openings,
        &mut w.rng,
    )
    .unwrap();
    let c = conf(&mut inflated.transfer);
    c.commitments = commitments.clone();
    c.range_proof = Some(proof);
    c.audit = Some(truthful);
    w.resign(&mut inflated);
    assert_eq!(inflated.transfer.context(), ctx);
    // Its seal lying instead (750 for the 800 output): does not open.
    let mut lying = inflated.clone();
    conf(&mut lying.transfer).audit = Some(
        SealedOpenings::seal_unchecked(
            &Scheme::audit_key(),
            &ctx,
            &commitments,
            &[
                openings[0].clone(),
                Opening::from_parts(Amount(750), *openings[1].blinding()).unwrap(),
            ],
            &mut w.rng,
        )
        .unwrap(),
    );
    w.resign(&mut lying);
    // A good package with another transfer's range proof.
    let (mut lifted, _) = w.pay_with_nonce(120, [11; 16]);
    conf(&mut lifted.transfer).range_proof = good[0]
        .transfer
        .confidential
        .as_ref()
        .unwrap()
        .range_proof
        .clone();
    w.resign(&mut lifted);

    let call = vec![
        vec![good[0].clone(), inflated.clone()],
        vec![
            good[1].clone(),
            lying.clone(),
            lifted.clone(),
            good[2].clone(),
        ],
    ];
    let r: Vec<Result<VerifiedPackage, SettlementRefusal>> =
        settle_by_openings(&w, call, &|_| false, false)
            .into_iter()
            .flatten()
            .collect();
    assert_eq!(r.len(), 6);
    assert_eq!(
        r[1].as_ref().err(),
        Some(&SettlementRefusal::Audit(AuditFailure {
            record: inflated.transfer.id(),
            reason: ConfidentialError::Unbalanced
        }))
    );
    assert_eq!(
        r[3].as_ref().err(),
        Some(&SettlementRefusal::Audit(AuditFailure {
            record: lying.transfer.id(),
            reason: ConfidentialError::WrongOpening
        }))
    );
    for (i, want) in [(0, 100), (2, 101), (4, 120), (5, 102)] {
        let v = r[i].as_ref().expect("settles");
        assert!(v.amounts_opened());
        assert_eq!(v.package().transfer.outputs[0].value, Amount(want));
        assert_eq!(
            v.package().transfer.outputs[1].value,
            Amount(1000 - want),
            "the change, opened"
        );
    }
    // The same packages through the proofs: C4 and C3 refuse them.
    let one = |p: &Package| {
        verify_package_for_settlement(p.clone(), &w.trust, w.scheme.params(BUDGET), &mut NoCache)
            .err()
    };
    assert_eq!(one(&inflated), Some(VerifyError::CommitmentsUnbalanced));
    assert_eq!(one(&lifted), Some(VerifyError::RangeProofInvalid));

    // Settlement's sample (decision 0028, "Session 13"): a package whose
    // transfer it picks has its proofs verified too. The lifted range
    // proof, which its honest openings settled above, is refused by C3
    // when picked; the same call's other packages, picked or not, settle
    // as before; the inflated one is refused by C4 before its seal opens.
    let picked = [
        lifted.transfer.id(),
        inflated.transfer.id(),
        good[1].transfer.id(),
    ];
    let r: Vec<Result<VerifiedPackage, SettlementRefusal>> = settle_by_openings(
        &w,
        vec![vec![
            good[0].clone(),
            lifted.clone(),
            good[1].clone(),
            inflated.clone(),
        ]],
        &|id| picked.contains(id),
        false,
    )
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(
        r[1].as_ref().err(),
        Some(&SettlementRefusal::Verify(VerifyError::RangeProofInvalid))
    );
    assert_eq!(
        r[3].as_ref().err(),
        Some(&SettlementRefusal::Verify(
            VerifyError::CommitmentsUnbalanced
        ))
    );
    for (i, want) in [(0, 100), (2, 101)] {
        let v = r[i].as_ref().expect("settles, picked or not");
        assert!(v.amounts_opened());
        assert_eq!(v.package().transfer.outputs[0].value, Amount(want));
    }
    // Picked alone, the lifted proof is refused the same way (its own
    // batch of one).
    let alone = settle_by_openings(&w, vec![vec![lifted.clone()]], &|_| true, false);
    assert_eq!(
        alone[0][0].as_ref().err(),
        Some(&SettlementRefusal::Verify(VerifyError::RangeProofInvalid))
    );
}

/// A seal lifted from another record (same outputs, same values) does not
/// open: its aad binds the record's context and commitments. A seal to
/// another key, or read with another key, does not open either.
#[test]
fn c7_a_lifted_audit_seal_or_another_key_is_refused() {
    let mut w = World::new("audit-lifted");
    let (mut pkg, _) = w.pay(250);
    let (other, _) = w.pay_with_nonce(250, [3; 16]);
    conf(&mut pkg.transfer).audit = other.transfer.confidential.as_ref().unwrap().audit.clone();
    // A hostile payer signs the lifted seal (a relay could not).
    w.resign(&mut pkg);
    let r = settle_view(&w, &pkg).open_audit(&settlement_key(), bits(&w));
    assert_eq!(
        r.err().map(|f| (f.record, f.reason)),
        Some((pkg.transfer.id(), ConfidentialError::OpeningUnreadable))
    );
    let (pkg, _) = w.pay_with_nonce(250, [4; 16]);
    let wrong_key = tally_core::sealed::OpeningKey::from_seed(&[0x5A; 32]);
    let r = settle_view(&w, &pkg).open_audit(&wrong_key, bits(&w));
    assert_eq!(
        r.err().map(|f| f.reason),
        Some(ConfidentialError::OpeningUnreadable)
    );
    // A payee's sealed opening (same shape as one output's audit seal)
    // cannot stand in for an Issue's audit seal: other info, other aad,
    // other key.
    let (mut pkg, _) = w.pay_whole();
    let payee_bytes = conf(&mut pkg.transfer)
        .payee_opening
        .as_ref()
        .unwrap()
        .to_cbor();
    let as_audit = SealedOpenings::from_cbor(&payee_bytes).expect("same wire shape");
    match &mut pkg.ancestry[0] {
        Record::Issue(i) => {
            i.confidential.as_mut().unwrap().audit = Some(as_audit);
            // A hostile issuer signs it.
            i.signature = w.scheme.dcp.sign(&i.signed_message(&i.id()).0);
        }
        _ => unreachable!(),
    }
    let r = settle_view(&w, &pkg).open_audit(&settlement_key(), bits(&w));
    assert_eq!(
        r.err().map(|f| (f.record, f.reason)),
        Some((pkg.ancestry[0].id(), ConfidentialError::OpeningUnreadable))
    );
}

/// Anyone relaying a package (a terminal, the network) alters a bit of an
/// audit seal, the transfer's or its ancestry Issue's. The payee cannot
/// open the seal, and settlement would refuse the package for good (C7):
/// the payee's money would be stranded. The signatures cover the seal
/// (decision 0034), so the payee refuses the package (V6 for the Issue's
/// signature, V8 for the transfer's) and the payer keeps its intact one to
/// upload.
#[test]
fn a_relay_altering_an_audit_seal_is_refused_by_the_payee() {
    let mut w = World::new("audit-relay");
    let (pkg, _) = w.pay(250);
    let bytes = pkg.to_cbor();
    let transfer_seal = conf(&mut pkg.transfer.clone())
        .audit
        .clone()
        .unwrap()
        .to_cbor();
    let issue_seal = match &pkg.ancestry[0] {
        Record::Issue(i) => i
            .confidential
            .as_ref()
            .unwrap()
            .audit
            .clone()
            .unwrap()
            .to_cbor(),
        _ => unreachable!(),
    };
    for (what, seal) in [("transfer", &transfer_seal), ("issue", &issue_seal)] {
        let at = bytes
            .windows(seal.len())
            .position(|x| x == seal.as_slice())
            .expect("the seal is in the package");
        // Every byte of the seal's ciphertext and encapsulated key.
        let mut refused = 0;
        for i in at + 2..at + seal.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            let Ok(altered) = Package::from_cbor(&bad) else {
                continue;
            };
            let r = w.verify(&altered, 250);
            assert!(
                matches!(r, Err(VerifyError::BadSignature)),
                "{what} seal byte {i}: {:?}",
                r.map(|_| ())
            );
            let r = verify_package_for_settlement(
                altered,
                &w.trust,
                w.scheme.params(BUDGET),
                &mut NoCache,
            );
            assert_eq!(r.err(), Some(VerifyError::BadSignature), "{what} byte {i}");
            refused += 1;
        }
        assert!(
            refused >= seal.len() - 8,
            "{what}: {refused} of {}",
            seal.len()
        );
    }
    w.verify(&pkg, 250).expect("the honest package verifies");
}

/// C8: a confidential record without its audit seal, or with one of the
/// wrong length, is refused by the payee and by settlement's verifier.
#[test]
fn c8_a_missing_or_malformed_audit_seal_is_refused() {
    let mut w = World::new("audit-missing");
    let (pkg, _) = w.pay(250);
    let mut none = pkg.clone();
    conf(&mut none.transfer).audit = None;
    // Without the seal the payee opening cannot travel either (wire
    // `[range_proof]`): the decoder keeps neither.
    let decoded = Package::from_cbor(&none.to_cbor()).unwrap();
    assert!(
        decoded
            .transfer
            .confidential
            .as_ref()
            .unwrap()
            .audit
            .is_none()
    );
    assert_refused(
        w.verify(&decoded, 250),
        VerifyError::AuditSealInvalid,
        codes::VERIFY_AUDIT_SEAL_INVALID,
    );
    assert_eq!(
        verify_package_for_settlement(decoded, &w.trust, w.scheme.params(BUDGET), &mut NoCache)
            .err(),
        Some(VerifyError::AuditSealInvalid)
    );
    // One opening's length for two outputs.
    let mut short = pkg.clone();
    conf(&mut short.transfer).audit = Some(SealedOpenings::garbage(1));
    assert_refused(
        w.verify(&short, 250),
        VerifyError::AuditSealInvalid,
        codes::VERIFY_AUDIT_SEAL_INVALID,
    );
    // An ancestry Issue without its seal.
    let mut issue_none = pkg.clone();
    match &mut issue_none.ancestry[0] {
        Record::Issue(i) => i.confidential.as_mut().unwrap().audit = None,
        _ => unreachable!(),
    }
    let decoded = Package::from_cbor(&issue_none.to_cbor()).unwrap();
    assert_refused(
        w.verify(&decoded, 250),
        VerifyError::AuditSealInvalid,
        codes::VERIFY_AUDIT_SEAL_INVALID,
    );
    // The honest package still verifies.
    w.verify(&pkg, 250).expect("honest");
}

/// The audit seal's size per hop (decision 0019).
#[test]
fn audit_seal_sizes() {
    let mut w = World::new("audit-size");
    let (pkg, _) = w.pay(250);
    let c = pkg.transfer.confidential.as_ref().unwrap();
    let transfer_seal = c.audit.as_ref().unwrap().to_cbor().len();
    let issue_seal = pkg.ancestry[0].audit_seal().unwrap().to_cbor().len();
    println!("audit seal, 2 outputs: {transfer_seal} bytes; 1 output: {issue_seal} bytes");
    println!("one-hop package: {} bytes", pkg.to_cbor().len());
    // [1, enc 32, ct 40·n + 16] in CBOR.
    assert_eq!(transfer_seal, 1 + 1 + 2 + 32 + 2 + 96);
    assert_eq!(issue_seal, 1 + 1 + 2 + 32 + 2 + 56);
}

/// Settlement's verification by openings of `groups` with `w`'s trust,
/// settlement's key and range: `recheck` picks transfers whose proofs are
/// verified too, `from_registry` leaves one-output Issues to the registry.
fn settle_by_openings(
    w: &World,
    groups: Vec<Vec<Package>>,
    recheck: &dyn Fn(&Hash32) -> bool,
    from_registry: bool,
) -> Vec<Vec<Result<VerifiedPackage, tally_core::verify::SettlementRefusal>>> {
    tally_core::verify::verify_package_groups_for_settlement_opened(
        groups,
        &w.trust,
        w.scheme.params(BUDGET),
        &mut NoCache,
        &settlement_key(),
        bits(w),
        recheck,
        from_registry,
    )
}

/// Settlement's registry path (decision 0028, "Session 13"): with
/// `issues_from_registry`, a one-output Issue's audit seal is not opened;
/// the package awaits its registered value, and C7 ends with it. The right
/// value gives what opening every seal gives; a wrong one is refused as
/// the transfer's imbalance, a missing or out-of-range one names the
/// Issue; an unfinished package has no opened amounts (settlement's
/// registry then refuses it, `ConfidentialUnopened`).
#[test]
fn settlement_ends_c7_with_a_registered_issue_value() {
    let mut w = World::new("registry");
    let (pkg, _) = w.pay(250);
    let Record::Issue(issue) = &pkg.ancestry[0] else {
        panic!("a one-hop package's ancestry is its Issue")
    };
    assert_eq!(issue.outputs.len(), 1);
    let issue_id = issue.id();
    let verify = |from_registry: bool| {
        settle_by_openings(&w, vec![vec![pkg.clone()]], &|_| false, from_registry)
            .remove(0)
            .remove(0)
            .unwrap()
    };
    let opened = verify(false);
    assert!(opened.awaiting_registry().is_empty());
    assert!(opened.amounts_opened());
    let awaiting = verify(true);
    assert_eq!(awaiting.awaiting_registry(), &[issue_id]);
    assert!(!awaiting.amounts_opened());
    // The registered value: the same package as opening every seal.
    let done = awaiting
        .clone()
        .complete_from_registry(&|id| (*id == issue_id).then_some(Amount(1000)))
        .unwrap();
    assert!(done.amounts_opened());
    assert!(done.awaiting_registry().is_empty());
    assert_eq!(done.package(), opened.package());
    // A wrong value: the transfer does not balance.
    assert_eq!(
        awaiting
            .clone()
            .complete_from_registry(&|_| Some(Amount(999)))
            .err(),
        Some(AuditFailure {
            record: pkg.transfer.id(),
            reason: ConfidentialError::Unbalanced
        })
    );
    // Unknown to the registry, zero, or beyond the range: the Issue named.
    for (value, reason) in [
        (None, ConfidentialError::OpeningUnreadable),
        (Some(Amount(0)), ConfidentialError::OutOfRange),
        (Some(Amount(1 << 16)), ConfidentialError::OutOfRange),
    ] {
        assert_eq!(
            awaiting.clone().complete_from_registry(&|_| value).err(),
            Some(AuditFailure {
                record: issue_id,
                reason
            }),
            "{value:?}"
        );
    }
}
