//! Confidential records (issue 12, integration): how commitments, the
//! range proof and sealed openings sit inside an
//! `Issue` and a `Transfer` (SPEC §4.9), and the payer and issuer sides
//! that build them.
//!
//! ```text
//! Output (form 1)       = [1, commitment : bstr 32, owner]
//! Transfer (conf.)      = [1, [inputs], [outputs form 1], nonce, counter, [signatures], proofs]
//!   proofs              = [range_proof, audit]                  (in an ancestry)
//!                       | [range_proof, audit, payee_opening]   (the payee's output 0:
//!                                                               derived, or sealed for one output)
//! Issue (conf.)         = [1, issuer, serial, expiry, [outputs form 1], signature, audit]
//!                       | [1, issuer, serial, expiry, [outputs form 1], signature, audit, [sealed openings]]
//! audit                 = SealedOpenings: every output's opening sealed to settlement
//! context               = H("tally/v1/confidential-context", record body)
//! ```
//!
//! The record body (what the id hashes and the signatures sign) holds the
//! commitments; the proofs and the sealed openings are witnesses outside
//! the body, each bound to the body through the
//! `context` (a proof or signature lifted from another record does not
//! verify). An output of a confidential record has `value == 0` in memory:
//! its amount is the commitment, known only to whoever holds the opening.

use alloc::vec::Vec;

use crate::amount::{Amount, Epoch};
use crate::codec::{Cbor, CodecError, Reader, Writer};
use crate::confidential::{
    Commitment, ConfidentialError, DerivedOpening, Opening, PayeeOpening, RANGE_OUTPUTS_MAX,
    RangeGens, RangeProof, SealedOpening, SealedOpenings,
};
use crate::crypto::{Entropy, Hash32, PublicKey, SecretKey, Signature, Signer, tagged_hash};
use crate::record::{Issue, OutPoint, Output, RECORD_OUTPUTS_MAX, Transfer, distinct_signers};

/// The context every proof of a confidential record is bound to: the
/// record body (commitments included; proofs, sealed openings and
/// signatures excluded) under its own tag.
pub fn record_context(body: &[u8]) -> Hash32 {
    tagged_hash(b"tally/v1/confidential-context", &[body])
}

/// The confidential part of a Transfer: one commitment per output (in the
/// body), the aggregated range proof over them and, in the package that
/// pays it, output 0's opening for the payee. Conservation needs no
/// witness: the commitments sum to the inputs' (C4, decision 0029).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfidentialTransfer {
    pub commitments: Vec<Commitment>,
    /// The outputs' aggregated range proof; `None` for a transfer of one
    /// output, whose commitment is the sum of its inputs' (C4) and so
    /// commits to their values' sum: non-negative, with nothing to prove
    /// (SPEC §4.9.2, decision 0031).
    pub range_proof: Option<RangeProof>,
    /// The audit seal: every output's opening sealed to settlement (SPEC
    /// §4.9.3). Kept in ancestries (settlement values every record of a
    /// package from it). `None` only when decoded from a package that
    /// lacks it, which the verifier refuses (C8).
    pub audit: Option<SealedOpenings>,
    /// Output 0's opening for its owner: derived from an encapsulation to
    /// its key when the transfer has change, sealed when it has one output
    /// (SPEC §4.9.2). Only the final transfer of a package needs it; a
    /// payer strips it from ancestry records.
    pub payee_opening: Option<PayeeOpening>,
}

impl ConfidentialTransfer {
    /// The proofs element (everything but the commitments, which are in
    /// the outputs): `[range_proof, audit]` or `[range_proof, audit,
    /// payee_opening]`; without an audit seal (refused by the verifier,
    /// C8) `[range_proof]`, and then no payee opening either. A transfer
    /// of one output has no range proof: `[audit]`, `[audit,
    /// payee_opening]` or `[]` (the reader knows the outputs' count).
    pub(crate) fn write_proofs(&self, w: &mut Writer) {
        let n = match (&self.audit, &self.payee_opening) {
            (None, _) => 0,
            (Some(_), None) => 1,
            (Some(_), Some(_)) => 2,
        };
        w.array(n + usize::from(self.range_proof.is_some()));
        if let Some(p) = &self.range_proof {
            p.write(w);
        }
        if let Some(a) = &self.audit {
            a.write(w);
            if let Some(s) = &self.payee_opening {
                s.write(w);
            }
        }
    }
    pub(crate) fn read_proofs(
        r: &mut Reader<'_>,
        commitments: Vec<Commitment>,
    ) -> Result<Self, CodecError> {
        // Two or more outputs: the range proof comes first and is
        // required; one output: there is none (decision 0031).
        let proved = commitments.len() >= 2;
        let n = r.array_max(2 + usize::from(proved))?;
        if proved && n < 1 {
            return Err(CodecError::Malformed);
        }
        let range_proof = if proved {
            Some(RangeProof::read(r)?)
        } else {
            None
        };
        let rest = n - usize::from(proved);
        let audit = if rest >= 1 {
            Some(SealedOpenings::read(r)?)
        } else {
            None
        };
        let payee_opening = if rest == 2 {
            Some(PayeeOpening::read(r)?)
        } else {
            None
        };
        Ok(ConfidentialTransfer {
            commitments,
            range_proof,
            audit,
            payee_opening,
        })
    }
}

/// The confidential part of an Issue: one commitment per output (in the
/// body) and, as the DCP hands it to the loading SE, each output's opening
/// sealed to its owner. The Issue is signed by a trusted issuer, which
/// knows every amount (it debited the account): it needs no range proof
/// and balances no inputs. Stored and forwarded in ancestries without
/// openings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfidentialIssue {
    pub commitments: Vec<Commitment>,
    /// The audit seal (every output's opening sealed to settlement); kept
    /// in ancestries. `None` only as decoded, refused by the verifier (C8).
    pub audit: Option<SealedOpenings>,
    /// Empty, or one per output, in order.
    pub openings: Vec<SealedOpening>,
}

/// Writes a record's outputs: form 0 (clear value) or, with commitments,
/// form 1 (the commitment in place of the value).
pub(crate) fn write_outputs(
    w: &mut Writer,
    outputs: &[Output],
    commitments: Option<&[Commitment]>,
) {
    w.array(outputs.len());
    for (i, o) in outputs.iter().enumerate() {
        w.array(3);
        match commitments.and_then(|c| c.get(i)) {
            Some(c) => {
                w.u64(1);
                c.write(w);
            }
            None => {
                w.u64(0);
                w.u64(o.value.0);
            }
        }
        o.owner.write(w);
    }
}

/// Reads a record's outputs: all of one form. Returns the commitments if
/// the form is 1 (the outputs' values are then zero).
pub(crate) fn read_outputs(
    r: &mut Reader<'_>,
) -> Result<(Vec<Output>, Option<Vec<Commitment>>), CodecError> {
    let n = r.array_max(RECORD_OUTPUTS_MAX)?;
    let mut outputs = Vec::with_capacity(n);
    let mut commitments: Vec<Commitment> = Vec::new();
    let mut form = None;
    for _ in 0..n {
        r.array(3)?;
        let f = r.u8()?;
        if *form.get_or_insert(f) != f {
            // One record, one form: a mix would let one output's value
            // hide among commitments (and has two encodings of intent).
            return Err(CodecError::Malformed);
        }
        let value = match f {
            0 => Amount(r.u64()?),
            1 => {
                commitments.push(Commitment::read(r)?);
                Amount::ZERO
            }
            _ => return Err(CodecError::UnknownCode),
        };
        outputs.push(Output {
            value,
            owner: PublicKey::read(r)?,
        });
    }
    if form == Some(1) {
        if n > RANGE_OUTPUTS_MAX {
            return Err(CodecError::TooLong);
        }
        Ok((outputs, Some(commitments)))
    } else {
        Ok((outputs, None))
    }
}

/// What the payer's side knows of one output it creates.
pub struct NewOutput {
    pub owner: PublicKey,
    pub value: Amount,
}

/// A confidential transfer and the openings of its outputs (the payer
/// keeps the change's, settlement gets all of them in the sync upload).
pub struct BuiltTransfer {
    pub transfer: Transfer,
    pub openings: Vec<Opening>,
}

/// What a device whose SE does not prove its own payments (decision 0032)
/// hands to its application processor: the policy's range bit-length,
/// the context of the transfer being built and its outputs' openings
/// (value and blinding). Wire: `[1, bits : 16 / 32 / 64, context : bstr
/// 32, [[value : uint, blinding : bstr 32], ...]]`, one to
/// [`RANGE_OUTPUTS_MAX`] openings, each blinding a canonical, non-zero
/// scalar. The inputs' openings never leave the SE.
#[derive(Clone)]
pub struct ProvingTask {
    pub bits: crate::confidential::RangeBits,
    pub context: Hash32,
    pub openings: Vec<Opening>,
}

/// The wire version of [`ProvingTask`].
pub const PROVING_TASK_VERSION: u8 = 1;

impl core::fmt::Debug for ProvingTask {
    // The blindings are secret: never in a log.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ProvingTask({} outputs)", self.openings.len())
    }
}

impl ProvingTask {
    /// Whether the SE waits for a range proof (two or more outputs) or for
    /// none (one output, decision 0031).
    pub fn needs_proof(&self) -> bool {
        self.openings.len() >= 2
    }
    /// The application processor's side: the range proof the SE will
    /// check, or `None` when it waits for none. `gens` must be of the
    /// task's bit-length.
    pub fn prove(
        &self,
        gens: &RangeGens,
        rng: &mut dyn Entropy,
    ) -> Result<Option<RangeProof>, ConfidentialError> {
        if !self.needs_proof() {
            return Ok(None);
        }
        if gens.bits() != self.bits {
            return Err(ConfidentialError::RangeBitsMismatch);
        }
        RangeProof::prove(gens, &self.context, &self.openings, rng).map(Some)
    }
}

impl Cbor for ProvingTask {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        w.u64(u64::from(PROVING_TASK_VERSION));
        w.u64(self.bits as u64);
        self.context.write(w);
        w.array(self.openings.len());
        for o in &self.openings {
            w.array(2);
            w.u64(o.value().0);
            w.bytes(&o.blinding_bytes());
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        r.version(PROVING_TASK_VERSION)?;
        let bits = crate::confidential::RangeBits::from_code(r.u8()?)
            .map_err(|_| CodecError::UnknownCode)?;
        let context = Hash32::read(r)?;
        let n = r.array_max(RANGE_OUTPUTS_MAX)?;
        if n == 0 {
            return Err(CodecError::Malformed);
        }
        let mut openings = Vec::with_capacity(n);
        for _ in 0..n {
            r.array(2)?;
            let value = Amount(r.u64()?);
            let blinding: [u8; 32] = r.bytes_array()?;
            openings
                .push(Opening::from_bytes(value, &blinding).map_err(|_| CodecError::Malformed)?);
        }
        Ok(ProvingTask {
            bits,
            context,
            openings,
        })
    }
}

/// Payer side: builds, proves and signs a confidential transfer spending
/// `inputs` (with their owners and openings) into `outputs` (output 0 is
/// the payee's; its opening is sealed to its owner). Refuses unless the
/// values balance and every output fits the range (the money invariant is
/// checked here, before anything is signed). `key_for` returns the secret
/// key of an input owner. [`prepare_transfer`], the range proof and
/// [`finish_transfer`] in one, with one source of randomness (one
/// function: the card's firmware has no flash for the halves' moves).
#[allow(clippy::too_many_arguments)]
pub fn build_transfer(
    gens: &RangeGens,
    audit_key: &[u8; 32],
    inputs: &[(OutPoint, PublicKey, Opening)],
    outputs: &[NewOutput],
    nonce: [u8; 16],
    counter: u64,
    key_for: &dyn Fn(&PublicKey) -> Option<SecretKey>,
    rng: &mut dyn Entropy,
) -> Result<BuiltTransfer, ConfidentialError> {
    let (derived, openings, commitments) = balanced_outputs(inputs, outputs, rng)?;
    let mut t = unsigned_transfer(inputs, outputs, nonce, counter);
    let context = record_context(&Transfer::body_bytes_with(&t, Some(&commitments)));
    // One output commits to its inputs' sum (C4): nothing to prove
    // (decision 0031). Two or more: each must be shown non-negative.
    let range_proof = if openings.len() >= 2 {
        Some(RangeProof::prove(gens, &context, &openings, rng)?)
    } else {
        None
    };
    let owners = distinct_signers(inputs.iter().map(|(_, k, _)| *k));
    seal_and_sign(
        &mut t,
        Witnesses {
            commitments,
            openings: &openings,
            context: &context,
            derived,
            range_proof,
        },
        audit_key,
        &owners,
        key_for,
        rng,
    )?;
    Ok(BuiltTransfer {
        transfer: t,
        openings,
    })
}

/// The outputs' openings balanced with the inputs' (C4, decision 0029),
/// output 0's derived for the payee when there is change, and their
/// commitments. Refuses unless the values balance.
#[allow(clippy::type_complexity)]
fn balanced_outputs(
    inputs: &[(OutPoint, PublicKey, Opening)],
    outputs: &[NewOutput],
    rng: &mut dyn Entropy,
) -> Result<(Option<DerivedOpening>, Vec<Opening>, Vec<Commitment>), ConfidentialError> {
    if outputs.is_empty() || outputs.len() > RANGE_OUTPUTS_MAX || inputs.is_empty() {
        return Err(ConfidentialError::OutputCount);
    }
    let in_sum = Amount::sum(inputs.iter().map(|(_, _, o)| o.value()));
    let out_sum = Amount::sum(outputs.iter().map(|o| o.value));
    if in_sum.is_none() || in_sum != out_sum {
        return Err(ConfidentialError::Unbalanced);
    }
    // Output blindings sum to the inputs' (C4, decision 0029); this also
    // checks the counts and the money invariant again.
    // With change, output 0's blinding is derived for the payee (only the
    // encapsulated key travels); one output takes its inputs' blinding,
    // sealed with its value below (decision 0029, "Session 14").
    let in_openings: Vec<Opening> = inputs.iter().map(|(_, _, o)| o.clone()).collect();
    let values: Vec<Amount> = outputs.iter().map(|o| o.value).collect();
    let derived = if outputs.len() >= 2 {
        Some(DerivedOpening::derive(&outputs[0].owner, rng)?)
    } else {
        None
    };
    let openings = crate::confidential::balanced_openings_with(
        &in_openings,
        &values,
        derived.as_ref().map(|(_, r)| &**r),
        rng,
    )?;
    let commitments: Vec<Commitment> = openings.iter().map(Opening::commit).collect();
    Ok((derived.map(|(d, _)| d), openings, commitments))
}

/// The transfer's body before its commitments and signatures.
fn unsigned_transfer(
    inputs: &[(OutPoint, PublicKey, Opening)],
    outputs: &[NewOutput],
    nonce: [u8; 16],
    counter: u64,
) -> Transfer {
    Transfer {
        inputs: inputs.iter().map(|(op, _, _)| *op).collect(),
        outputs: outputs
            .iter()
            .map(|o| Output {
                value: Amount::ZERO,
                owner: o.owner,
            })
            .collect(),
        nonce,
        counter,
        signatures: Vec::new(),
        confidential: None,
        stream: None,
    }
}

/// What [`seal_and_sign`] attaches to a transfer.
struct Witnesses<'a> {
    commitments: Vec<Commitment>,
    openings: &'a [Opening],
    context: &'a Hash32,
    derived: Option<DerivedOpening>,
    range_proof: Option<RangeProof>,
}

/// Seals the openings (the audit seal to settlement's `audit_key`, output
/// 0's to its payee unless derived), attaches the proofs and signs `t`.
fn seal_and_sign(
    t: &mut Transfer,
    w: Witnesses<'_>,
    audit_key: &[u8; 32],
    owners: &[PublicKey],
    key_for: &dyn Fn(&PublicKey) -> Option<SecretKey>,
    rng: &mut dyn Entropy,
) -> Result<(), ConfidentialError> {
    // The commitments were computed from these openings: the seals do not
    // check them again.
    let audit = Some(SealedOpenings::seal_made(
        audit_key,
        w.context,
        &w.commitments,
        w.openings,
        rng,
    )?);
    let payee_opening = Some(match w.derived {
        Some(d) => PayeeOpening::Derived(d),
        None => PayeeOpening::Sealed(SealedOpening::seal_made(
            &t.outputs[0].owner,
            w.context,
            &w.commitments[0],
            &w.openings[0],
            rng,
        )?),
    });
    t.confidential = Some(alloc::boxed::Box::new(ConfidentialTransfer {
        commitments: w.commitments,
        range_proof: w.range_proof,
        audit,
        payee_opening,
    }));
    let message = t.signed_message(&t.id());
    for k in owners {
        let sk = key_for(k).ok_or(ConfidentialError::UnsupportedKey)?;
        t.signatures.push(sk.sign(&message.0));
    }
    Ok(())
}

/// A confidential transfer up to its range proof (decision 0032): the
/// outputs' openings balanced with the inputs', their commitments in the
/// unsigned body, and the context a proof must be bound to. Nothing is
/// sealed or signed yet.
pub struct PreparedTransfer {
    transfer: Transfer,
    commitments: Vec<Commitment>,
    openings: Vec<Opening>,
    context: Hash32,
    derived: Option<DerivedOpening>,
    /// The inputs' owners, who sign.
    owners: Vec<PublicKey>,
}

impl PreparedTransfer {
    /// Whether the outputs need a range proof (two or more outputs).
    pub fn needs_proof(&self) -> bool {
        self.openings.len() >= 2
    }
    /// What a prover outside the SE needs: the bit-length of the policy's
    /// range, the context and the outputs' openings, never the inputs'.
    pub fn task(&self, bits: crate::confidential::RangeBits) -> ProvingTask {
        ProvingTask {
            bits,
            context: self.context,
            openings: self.openings.clone(),
        }
    }
    /// Checks a range proof made elsewhere before anything is signed: none
    /// for one output, else one that verifies for exactly these
    /// commitments under this context with the policy's generators.
    pub fn accept_proof(
        &self,
        gens: &RangeGens,
        proof: Option<RangeProof>,
    ) -> Result<Option<RangeProof>, ConfidentialError> {
        match (self.needs_proof(), proof) {
            (false, None) => Ok(None),
            (true, Some(p)) => {
                if p.outputs() != self.commitments.len() {
                    return Err(ConfidentialError::OutputCount);
                }
                if p.bits() != gens.bits() {
                    return Err(ConfidentialError::RangeBitsMismatch);
                }
                p.verify(gens, &self.context, &self.commitments)?;
                Ok(Some(p))
            }
            _ => Err(ConfidentialError::OutputCount),
        }
    }
}

/// Payer side, first half of [`build_transfer`] (decision 0032): balances
/// the openings, commits and fixes the context. Refuses unless the values
/// balance.
pub fn prepare_transfer(
    inputs: &[(OutPoint, PublicKey, Opening)],
    outputs: &[NewOutput],
    nonce: [u8; 16],
    counter: u64,
    rng: &mut dyn Entropy,
) -> Result<PreparedTransfer, ConfidentialError> {
    let (derived, openings, commitments) = balanced_outputs(inputs, outputs, rng)?;
    let transfer = unsigned_transfer(inputs, outputs, nonce, counter);
    let context = record_context(&Transfer::body_bytes_with(&transfer, Some(&commitments)));
    Ok(PreparedTransfer {
        transfer,
        commitments,
        openings,
        context,
        derived,
        owners: distinct_signers(inputs.iter().map(|(_, k, _)| *k)),
    })
}

/// Payer side, second half of [`build_transfer`] (decision 0032): seals
/// the openings, attaches `range_proof` as given (checked by the caller
/// with [`PreparedTransfer::accept_proof`]) and signs.
pub fn finish_transfer(
    prepared: PreparedTransfer,
    range_proof: Option<RangeProof>,
    audit_key: &[u8; 32],
    key_for: &dyn Fn(&PublicKey) -> Option<SecretKey>,
    rng: &mut dyn Entropy,
) -> Result<BuiltTransfer, ConfidentialError> {
    let PreparedTransfer {
        mut transfer,
        commitments,
        openings,
        context,
        derived,
        owners,
    } = prepared;
    seal_and_sign(
        &mut transfer,
        Witnesses {
            commitments,
            openings: &openings,
            context: &context,
            derived,
            range_proof,
        },
        audit_key,
        &owners,
        key_for,
        rng,
    )?;
    Ok(BuiltTransfer { transfer, openings })
}

/// A confidential Issue with the openings of its outputs, or why it
/// could not be made (the signer's own error is the outer one).
pub type IssueResult = Result<(Issue, Vec<Opening>), ConfidentialError>;

/// Issuer side: a confidential Issue of `outputs`, each output's opening
/// sealed to its owner (the loading SE) and all of them sealed to
/// settlement's `audit_key` (the policy's). Returns the Issue and the
/// openings. Every owner must be an Ed25519 key (sealed openings need one).
pub fn sign_issue<S: Signer + ?Sized>(
    issuer: &S,
    audit_key: &[u8; 32],
    serial: u64,
    expiry_epoch: Epoch,
    outputs: &[NewOutput],
    rng: &mut dyn Entropy,
) -> Result<IssueResult, S::Error> {
    if outputs.is_empty() || outputs.len() > RANGE_OUTPUTS_MAX {
        return Ok(Err(ConfidentialError::OutputCount));
    }
    let openings: Vec<Opening> = outputs
        .iter()
        .map(|o| Opening::random(o.value, rng))
        .collect();
    let commitments: Vec<Commitment> = openings.iter().map(Opening::commit).collect();
    let key = issuer.public_key();
    let mut issue = Issue {
        issuer: key.id(),
        serial,
        expiry_epoch,
        outputs: outputs
            .iter()
            .map(|o| Output {
                value: Amount::ZERO,
                owner: o.owner,
            })
            .collect(),
        signature: Signature::new(key.suite(), [0; 64]),
        confidential: Some(ConfidentialIssue {
            commitments: commitments.clone(),
            audit: None,
            openings: Vec::new(),
        }),
    };
    let context = record_context(&issue.body_bytes());
    // The commitments were computed above from these openings: the seals
    // do not check them again.
    let audit = match SealedOpenings::seal_made(audit_key, &context, &commitments, &openings, rng) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    let mut sealed = Vec::with_capacity(outputs.len());
    for ((o, c), op) in outputs.iter().zip(&commitments).zip(&openings) {
        match SealedOpening::seal_made(&o.owner, &context, c, op, rng) {
            Ok(s) => sealed.push(s),
            Err(e) => return Ok(Err(e)),
        }
    }
    // The audit seal goes in before the signature, which covers it.
    if let Some(c) = issue.confidential.as_mut() {
        c.audit = Some(audit);
        c.openings = sealed;
    }
    issue.signature = issuer.try_sign(&issue.signed_message(&issue.id()).0)?;
    Ok(Ok((issue, openings)))
}

impl Issue {
    /// This Issue as it travels in an ancestry: without sealed openings.
    pub fn without_openings(mut self) -> Issue {
        if let Some(c) = self.confidential.as_mut() {
            c.openings.clear();
        }
        self
    }
    /// The opening of output `index`, sealed to `owner`'s key, opened and
    /// checked against its commitment (what a loading SE does).
    pub fn open_output(
        &self,
        index: usize,
        owner: &SecretKey,
    ) -> Result<Opening, ConfidentialError> {
        let c = self
            .confidential
            .as_ref()
            .ok_or(ConfidentialError::OpeningUnreadable)?;
        let (sealed, commitment) = c
            .openings
            .get(index)
            .zip(c.commitments.get(index))
            .ok_or(ConfidentialError::OpeningUnreadable)?;
        sealed.open(owner, &record_context(&self.body_bytes()), commitment)
    }
}

/// A confidential Issue whose audit seal settlement opened and checked
/// (rule C7): its outputs carry their opened values in memory (the wire
/// form and the id keep the commitments). Only [`Issue::open_audit`]
/// makes one, so settlement registers an Issue's value from its openings
/// and from nothing else.
#[cfg(feature = "sealing")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedIssue {
    issue: Issue,
}

#[cfg(feature = "sealing")]
impl AuditedIssue {
    /// The Issue, each output's `value` its opened amount.
    pub fn issue(&self) -> &Issue {
        &self.issue
    }
    /// The sum of the opened values (checked: each fits `bits`, at most
    /// [`RANGE_OUTPUTS_MAX`] outputs, so it cannot overflow u64).
    pub fn value(&self) -> Amount {
        Amount::sum(self.issue.outputs.iter().map(|o| o.value)).unwrap_or(Amount::ZERO)
    }
}

#[cfg(feature = "sealing")]
impl Issue {
    /// Settlement's rule C7 for an Issue: opens its audit seal with
    /// settlement's sealing key and checks every opening against its
    /// commitment, non-zero and within `bits`.
    pub fn open_audit(
        &self,
        key: &crate::sealed::OpeningKey,
        bits: crate::confidential::RangeBits,
    ) -> Result<AuditedIssue, ConfidentialError> {
        let c = self
            .confidential
            .as_ref()
            .ok_or(ConfidentialError::OutputCount)?;
        let seal = c
            .audit
            .as_ref()
            .ok_or(ConfidentialError::OpeningUnreadable)?;
        let openings = seal.open(key, &record_context(&self.body_bytes()), &c.commitments)?;
        let mut issue = self.clone();
        for (o, op) in issue.outputs.iter_mut().zip(&openings) {
            if op.value() == Amount::ZERO || !bits.holds(op.value()) {
                return Err(ConfidentialError::OutOfRange);
            }
            o.value = op.value();
        }
        Ok(AuditedIssue { issue })
    }
}

impl Transfer {
    /// This transfer as it travels in an ancestry: without the payee's
    /// sealed opening.
    pub fn without_opening(mut self) -> Transfer {
        if let Some(c) = self.confidential.as_mut() {
            c.payee_opening = None;
        }
        self
    }
    /// The context of a confidential transfer's proofs.
    pub fn context(&self) -> Hash32 {
        record_context(&self.body_bytes())
    }
}

/// Settlement's check of one confidential transfer against the openings a
/// device uploaded (rule C7, SPEC §4.9.4): every opening opens its
/// commitment (`WrongOpening`), and the opened values balance in u64
/// (`Unbalanced`, overflow included). `inputs` are the consumed outputs'
/// commitments with their openings. Returns the outputs' amounts, which
/// settlement books. (The sealed uploads do not carry openings yet; this
/// is the check they will feed.)
pub fn check_transfer_openings(
    t: &Transfer,
    inputs: &[(Commitment, Opening)],
    outputs: &[Opening],
) -> Result<Vec<Amount>, ConfidentialError> {
    let c = t
        .confidential
        .as_ref()
        .ok_or(ConfidentialError::OutputCount)?;
    if outputs.len() != c.commitments.len() || inputs.len() != t.inputs.len() {
        return Err(ConfidentialError::OutputCount);
    }
    for (commitment, o) in inputs {
        if !o.opens(commitment) {
            return Err(ConfidentialError::WrongOpening);
        }
    }
    for (commitment, o) in c.commitments.iter().zip(outputs) {
        if !o.opens(commitment) {
            return Err(ConfidentialError::WrongOpening);
        }
    }
    let in_sum = Amount::sum(inputs.iter().map(|(_, o)| o.value()));
    let out_sum = Amount::sum(outputs.iter().map(Opening::value));
    match (in_sum, out_sum) {
        (Some(a), Some(b)) if a == b => Ok(outputs.iter().map(Opening::value).collect()),
        _ => Err(ConfidentialError::Unbalanced),
    }
}
