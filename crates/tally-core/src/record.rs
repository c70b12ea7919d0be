//! Records: `Issue` (genesis) and `Transfer`, their outputs (tokens) and
//! ids.
//!
//! A record id is `H("tally/v1/record", body)` where `body` is the canonical
//! encoding of the record without its signatures; signatures sign the id.
//! Ids therefore do not change if a signature is re-encoded, and a record
//! signed twice is still one record (the spent registry depends on that).

use alloc::vec::Vec;

use crate::amount::{Amount, Epoch};
use crate::codec::{Cbor, CodecError, Reader, Writer, read_vec, write_vec};
use crate::crypto::{Hash32, PublicKey, SecretKey, Signature, Signer, infallible, tagged_hash};
use crate::stream::StreamPart;

pub const RECORD_VERSION: u8 = 1;
/// Bound on inputs of one Transfer (coin merging).
pub const RECORD_INPUTS_MAX: usize = 16;
/// Bound on outputs of one record (payment + change; an Issue may split).
pub const RECORD_OUTPUTS_MAX: usize = 8;

/// Amount form codes. 0 = clear amount; 1 = a Pedersen commitment (the
/// confidential mode, SPEC §4.9: the record then carries its proofs, see
/// [`ConfidentialTransfer`] and [`ConfidentialIssue`]). All outputs of one
/// record have one form; decoders refuse forms they do not know (form 1
/// without the `confidential` feature).
pub const AMOUNT_FORM_CLEAR: u8 = 0;
pub const AMOUNT_FORM_COMMITTED: u8 = 1;

#[cfg(feature = "confidential")]
pub use crate::confidential_record::{ConfidentialIssue, ConfidentialTransfer};
#[cfg(feature = "confidential")]
use crate::confidential_record::{read_outputs, write_outputs};

/// Without the `confidential` feature no record can be confidential: the
/// type has no values, so `Transfer::confidential` is always `None`.
#[cfg(not(feature = "confidential"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfidentialTransfer {}
/// See [`ConfidentialTransfer`].
#[cfg(not(feature = "confidential"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfidentialIssue {}

#[cfg(not(feature = "confidential"))]
fn write_outputs(
    w: &mut Writer,
    outputs: &[Output],
    _commitments: Option<&[core::convert::Infallible]>,
) {
    write_vec(w, outputs);
}
#[cfg(not(feature = "confidential"))]
fn read_outputs(
    r: &mut Reader<'_>,
) -> Result<(Vec<Output>, Option<Vec<core::convert::Infallible>>), CodecError> {
    Ok((read_vec(r, RECORD_OUTPUTS_MAX)?, None))
}

/// One output of a record: a token once the record exists.
/// Wire: `[0, value, owner]`, or in a confidential record `[1, commitment,
/// owner]` with `value` zero in memory (the commitment is in the record's
/// confidential part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub value: Amount,
    pub owner: PublicKey,
}

impl Cbor for Output {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(u64::from(AMOUNT_FORM_CLEAR));
        w.u64(self.value.0);
        self.owner.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        if r.u8()? != AMOUNT_FORM_CLEAR {
            return Err(CodecError::UnknownCode);
        }
        Ok(Output {
            value: Amount(r.u64()?),
            owner: PublicKey::read(r)?,
        })
    }
}

/// A reference to one output: `[record id, index]`. This is the token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutPoint {
    pub record: Hash32,
    pub index: u8,
}

impl Cbor for OutPoint {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        self.record.write(w);
        w.u64(u64::from(self.index));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        Ok(OutPoint {
            record: Hash32::read(r)?,
            index: r.u8()?,
        })
    }
}

/// Genesis record. Wire: `[1, issuer_key_id, serial, expiry_epoch, [outputs], signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Key id of the DCP issuing key (its certificate is in the trust list).
    pub issuer: Hash32,
    pub serial: u64,
    /// Last epoch in which the tokens may be spent offline.
    pub expiry_epoch: Epoch,
    pub outputs: Vec<Output>,
    pub signature: Signature,
    /// The commitments (and sealed openings) of a confidential Issue.
    pub confidential: Option<ConfidentialIssue>,
}

/// Payment record. Wire: `[1, [inputs], [outputs], nonce, counter, [signatures]]`.
/// `signatures[i]` is by the i-th distinct owner key of the inputs, in order
/// of first appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub inputs: Vec<OutPoint>,
    pub outputs: Vec<Output>,
    /// The payee's request nonce.
    pub nonce: [u8; 16],
    /// The payer SE's monotonic transaction counter.
    pub counter: u64,
    pub signatures: Vec<Signature>,
    /// The commitments, proofs and sealed opening of a confidential
    /// transfer (SPEC §4.9); `None` for clear amounts. (Boxed: the range
    /// proof is large, and records are moved on a device's stack.)
    pub confidential: Option<alloc::boxed::Box<ConfidentialTransfer>>,
    /// A payment stream's OPEN terms, claim or refund (SPEC §4.10,
    /// decision 0020); `None` for an ordinary payment. Part of the body, so
    /// the signatures cover it; clear amounts only.
    pub stream: Option<alloc::boxed::Box<StreamPart>>,
}

#[cfg(feature = "confidential")]
fn issue_commitments(i: &Issue) -> Option<&[crate::confidential::Commitment]> {
    i.confidential.as_ref().map(|c| c.commitments.as_slice())
}
#[cfg(not(feature = "confidential"))]
fn issue_commitments(i: &Issue) -> Option<&[core::convert::Infallible]> {
    i.confidential.as_ref().map(|c| match *c {})
}
#[cfg(feature = "confidential")]
fn transfer_commitments(t: &Transfer) -> Option<&[crate::confidential::Commitment]> {
    t.confidential.as_ref().map(|c| c.commitments.as_slice())
}
#[cfg(not(feature = "confidential"))]
fn transfer_commitments(t: &Transfer) -> Option<&[core::convert::Infallible]> {
    t.confidential.as_ref().map(|c| match **c {})
}

fn write_issue_body(w: &mut Writer, i: &Issue) {
    w.u64(u64::from(RECORD_VERSION));
    i.issuer.write(w);
    w.u64(i.serial);
    w.u64(u64::from(i.expiry_epoch));
    write_outputs(w, &i.outputs, issue_commitments(i));
}

fn write_transfer_body(w: &mut Writer, t: &Transfer) {
    write_transfer_body_with(w, t, transfer_commitments(t));
}

fn write_transfer_body_with(
    w: &mut Writer,
    t: &Transfer,
    #[cfg(feature = "confidential")] commitments: Option<&[crate::confidential::Commitment]>,
    #[cfg(not(feature = "confidential"))] commitments: Option<&[core::convert::Infallible]>,
) {
    w.u64(u64::from(RECORD_VERSION));
    write_vec(w, &t.inputs);
    write_outputs(w, &t.outputs, commitments);
    w.bytes(&t.nonce);
    w.u64(t.counter);
    if let Some(p) = &t.stream {
        p.write(w);
    }
}

impl Issue {
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        w.array(5);
        write_issue_body(&mut w, self);
        w.into_bytes()
    }
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/record", &[&self.body_bytes()])
    }
    /// What the issuer's signature signs, given the Issue's `id`: the id,
    /// and for a confidential Issue with its audit seal the seal too
    /// (SPEC §3.2, decision 0034).
    pub fn signed_message(&self, id: &Hash32) -> Hash32 {
        #[cfg(feature = "confidential")]
        return crate::confidential::SealedOpenings::signed_message(
            id,
            self.confidential.as_ref().and_then(|c| c.audit.as_ref()),
        );
        #[cfg(not(feature = "confidential"))]
        *id
    }
    /// Builds and signs an Issue (DCP side).
    pub fn sign(
        issuer: &SecretKey,
        serial: u64,
        expiry_epoch: Epoch,
        outputs: Vec<Output>,
    ) -> Issue {
        infallible(Self::try_sign(issuer, serial, expiry_epoch, outputs))
    }
    /// [`Issue::sign`] by any [`Signer`] (a DCP issuing key in an HSM).
    pub fn try_sign<S: Signer + ?Sized>(
        issuer: &S,
        serial: u64,
        expiry_epoch: Epoch,
        outputs: Vec<Output>,
    ) -> Result<Issue, S::Error> {
        let key = issuer.public_key();
        let mut i = Issue {
            issuer: key.id(),
            serial,
            expiry_epoch,
            outputs,
            signature: Signature::new(key.suite(), [0; 64]),
            confidential: None,
        };
        i.signature = issuer.try_sign(&i.id().0)?;
        Ok(i)
    }
}

impl Cbor for Issue {
    fn write(&self, w: &mut Writer) {
        // [.., signature], [.., signature, audit] or [.., signature, audit,
        // [openings]]: the openings only travel with an audit seal.
        #[cfg(feature = "confidential")]
        let audit = self.confidential.as_ref().and_then(|c| c.audit.as_ref());
        #[cfg(feature = "confidential")]
        let openings = self
            .confidential
            .as_ref()
            .map(|c| c.openings.as_slice())
            .filter(|o| !o.is_empty() && audit.is_some());
        #[cfg(not(feature = "confidential"))]
        let (audit, openings): (Option<&Issue>, Option<&[Issue]>) = (None, None);
        w.array(6 + usize::from(audit.is_some()) + usize::from(openings.is_some()));
        write_issue_body(w, self);
        self.signature.write(w);
        #[cfg(feature = "confidential")]
        if let Some(a) = audit {
            a.write(w);
            if let Some(o) = openings {
                write_vec(w, o);
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(8)?;
        if !(6..=8).contains(&n) {
            return Err(CodecError::Malformed);
        }
        r.version(RECORD_VERSION)?;
        let issuer = Hash32::read(r)?;
        let serial = r.u64()?;
        let expiry_epoch = r.u32()?;
        let (outputs, commitments) = read_outputs(r)?;
        let signature = Signature::read(r)?;
        #[cfg(feature = "confidential")]
        let confidential = match commitments {
            None if n == 6 => None,
            None => return Err(CodecError::Malformed),
            Some(commitments) => {
                let audit = if n >= 7 {
                    Some(crate::confidential::SealedOpenings::read(r)?)
                } else {
                    None
                };
                let openings = if n == 8 {
                    let o: Vec<crate::confidential::SealedOpening> =
                        read_vec(r, RECORD_OUTPUTS_MAX)?;
                    // One per output, or the 6-element form.
                    if o.len() != outputs.len() {
                        return Err(CodecError::Malformed);
                    }
                    o
                } else {
                    Vec::new()
                };
                Some(ConfidentialIssue {
                    commitments,
                    audit,
                    openings,
                })
            }
        };
        #[cfg(not(feature = "confidential"))]
        let confidential = match commitments {
            None if n == 6 => None,
            _ => return Err(CodecError::UnknownCode),
        };
        Ok(Issue {
            issuer,
            serial,
            expiry_epoch,
            outputs,
            signature,
            confidential,
        })
    }
}

impl Transfer {
    /// The stream this transfer OPENs, if any (decision 0020).
    pub fn stream_open(&self) -> Option<&crate::stream::StreamOpenTerms> {
        match self.stream.as_deref() {
            Some(StreamPart::Open(terms)) => Some(terms),
            _ => None,
        }
    }
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(192);
        w.array(5 + usize::from(self.stream.is_some()));
        write_transfer_body(&mut w, self);
        w.into_bytes()
    }
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/record", &[&self.body_bytes()])
    }
    /// What the owners' signatures sign, given the transfer's `id`: the
    /// id, and for a confidential transfer with its audit seal the seal
    /// too (SPEC §3.2, decision 0034).
    pub fn signed_message(&self, id: &Hash32) -> Hash32 {
        #[cfg(feature = "confidential")]
        return crate::confidential::SealedOpenings::signed_message(
            id,
            self.confidential.as_ref().and_then(|c| c.audit.as_ref()),
        );
        #[cfg(not(feature = "confidential"))]
        *id
    }
    /// The body of `t` with `commitments` as its output amounts (the
    /// payer's side, before the proofs exist).
    #[cfg(feature = "confidential")]
    pub fn body_bytes_with(
        t: &Transfer,
        commitments: Option<&[crate::confidential::Commitment]>,
    ) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.array(5);
        write_transfer_body_with(&mut w, t, commitments);
        w.into_bytes()
    }
}

impl Cbor for Transfer {
    fn write(&self, w: &mut Writer) {
        w.array(6 + usize::from(self.confidential.is_some()) + usize::from(self.stream.is_some()));
        write_transfer_body(w, self);
        write_vec(w, &self.signatures);
        #[cfg(feature = "confidential")]
        if let Some(c) = &self.confidential {
            c.write_proofs(w);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(7)?;
        if n != 6 && n != 7 {
            return Err(CodecError::Malformed);
        }
        r.version(RECORD_VERSION)?;
        let inputs = read_vec(r, RECORD_INPUTS_MAX)?;
        let (outputs, commitments) = read_outputs(r)?;
        let nonce = r.bytes_array()?;
        let counter = r.u64()?;
        // The 7-element form with clear outputs is a stream transfer: its
        // stream part ends the body, before the signatures. (Streams are
        // clear amounts only, so the two 7-element forms never meet.)
        let stream = if n == 7 && commitments.is_none() {
            Some(alloc::boxed::Box::new(StreamPart::read(r)?))
        } else {
            None
        };
        let signatures = read_vec(r, RECORD_INPUTS_MAX)?;
        // Committed outputs and the proofs element come together.
        let confidential = match commitments {
            None if n == 6 || stream.is_some() => None,
            #[cfg(feature = "confidential")]
            Some(c) if n == 7 => Some(alloc::boxed::Box::new(ConfidentialTransfer::read_proofs(
                r, c,
            )?)),
            _ => return Err(CodecError::Malformed),
        };
        Ok(Transfer {
            inputs,
            outputs,
            nonce,
            counter,
            signatures,
            confidential,
            stream,
        })
    }
}

/// Either record kind. Wire: `[kind, record]` with kind 0 = Issue,
/// 1 = Transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Issue(Issue),
    Transfer(Transfer),
}

impl Record {
    pub fn id(&self) -> Hash32 {
        match self {
            Record::Issue(i) => i.id(),
            Record::Transfer(t) => t.id(),
        }
    }
    pub fn outputs(&self) -> &[Output] {
        match self {
            Record::Issue(i) => &i.outputs,
            Record::Transfer(t) => &t.outputs,
        }
    }
    pub fn inputs(&self) -> &[OutPoint] {
        match self {
            Record::Issue(_) => &[],
            Record::Transfer(t) => &t.inputs,
        }
    }
    /// The stream this record OPENs, if any (decision 0020).
    pub fn stream_open(&self) -> Option<&crate::stream::StreamOpenTerms> {
        match self {
            Record::Transfer(t) => t.stream_open(),
            Record::Issue(_) => None,
        }
    }
    /// What an input naming `index` of this record consumes: output
    /// `index`, or for `0x80 | i` the payer half of the stream this record
    /// opens on output `i` — the stream's value, owned by its refund key.
    pub fn spendable(&self, index: u8) -> Option<Output> {
        if index & crate::stream::STREAM_REFUND_FLAG != 0 {
            let terms = self
                .stream_open()
                .filter(|t| t.index == index & !crate::stream::STREAM_REFUND_FLAG)?;
            return Some(Output {
                value: terms.ask.value()?,
                owner: terms.refund_key,
            });
        }
        self.outputs().get(usize::from(index)).copied()
    }
    /// Whether the record's amounts are commitments.
    pub fn is_confidential(&self) -> bool {
        match self {
            Record::Issue(i) => i.confidential.is_some(),
            Record::Transfer(t) => t.confidential.is_some(),
        }
    }
    /// The commitment of output `index` of a confidential record.
    #[cfg(feature = "confidential")]
    pub fn commitment(&self, index: usize) -> Option<&crate::confidential::Commitment> {
        match self {
            Record::Issue(i) => i.confidential.as_ref()?.commitments.get(index),
            Record::Transfer(t) => t.confidential.as_ref()?.commitments.get(index),
        }
    }
    /// The audit seal of a confidential record (SPEC §4.9.3).
    #[cfg(feature = "confidential")]
    pub fn audit_seal(&self) -> Option<&crate::confidential::SealedOpenings> {
        match self {
            Record::Issue(i) => i.confidential.as_ref()?.audit.as_ref(),
            Record::Transfer(t) => t.confidential.as_ref()?.audit.as_ref(),
        }
    }
    /// The record as it travels in an ancestry (no sealed openings to a
    /// payee; the audit seal stays: settlement values every record of an
    /// ancestry from it).
    pub fn for_ancestry(self) -> Record {
        #[cfg(feature = "confidential")]
        return match self {
            Record::Issue(i) => Record::Issue(i.without_openings()),
            Record::Transfer(t) => Record::Transfer(t.without_opening()),
        };
        #[cfg(not(feature = "confidential"))]
        self
    }
}

impl Cbor for Record {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        match self {
            Record::Issue(i) => {
                w.u64(0);
                i.write(w)
            }
            Record::Transfer(t) => {
                w.u64(1);
                t.write(w)
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        match r.u8()? {
            0 => Ok(Record::Issue(Issue::read(r)?)),
            1 => Ok(Record::Transfer(Transfer::read(r)?)),
            _ => Err(CodecError::UnknownCode),
        }
    }
}

/// Distinct owner keys of `inputs` in order of first appearance: the order
/// of a Transfer's signatures.
pub fn distinct_signers(owners: impl Iterator<Item = PublicKey>) -> Vec<PublicKey> {
    let mut v: Vec<PublicKey> = Vec::new();
    for k in owners {
        if !v.contains(&k) {
            v.push(k);
        }
    }
    v
}
