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

pub const RECORD_VERSION: u8 = 1;
/// Bound on inputs of one Transfer (coin merging).
pub const RECORD_INPUTS_MAX: usize = 16;
/// Bound on outputs of one record (payment + change; an Issue may split).
pub const RECORD_OUTPUTS_MAX: usize = 8;

/// Amount form codes. 0 = clear amount. The confidential mode adds form 1
/// (a Pedersen commitment with range proof) here without changing any other
/// field; decoders refuse forms they do not know.
pub const AMOUNT_FORM_CLEAR: u8 = 0;

/// One output of a record: a token once the record exists.
/// Wire: `[form, value, owner]`.
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
}

fn write_issue_body(w: &mut Writer, i: &Issue) {
    w.u64(u64::from(RECORD_VERSION));
    i.issuer.write(w);
    w.u64(i.serial);
    w.u64(u64::from(i.expiry_epoch));
    write_vec(w, &i.outputs);
}

fn write_transfer_body(w: &mut Writer, t: &Transfer) {
    w.u64(u64::from(RECORD_VERSION));
    write_vec(w, &t.inputs);
    write_vec(w, &t.outputs);
    w.bytes(&t.nonce);
    w.u64(t.counter);
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
        };
        i.signature = issuer.try_sign(&i.id().0)?;
        Ok(i)
    }
}

impl Cbor for Issue {
    fn write(&self, w: &mut Writer) {
        w.array(6);
        write_issue_body(w, self);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(6)?;
        r.version(RECORD_VERSION)?;
        Ok(Issue {
            issuer: Hash32::read(r)?,
            serial: r.u64()?,
            expiry_epoch: r.u32()?,
            outputs: read_vec(r, RECORD_OUTPUTS_MAX)?,
            signature: Signature::read(r)?,
        })
    }
}

impl Transfer {
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(192);
        w.array(5);
        write_transfer_body(&mut w, self);
        w.into_bytes()
    }
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/record", &[&self.body_bytes()])
    }
}

impl Cbor for Transfer {
    fn write(&self, w: &mut Writer) {
        w.array(6);
        write_transfer_body(w, self);
        write_vec(w, &self.signatures);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(6)?;
        r.version(RECORD_VERSION)?;
        Ok(Transfer {
            inputs: read_vec(r, RECORD_INPUTS_MAX)?,
            outputs: read_vec(r, RECORD_OUTPUTS_MAX)?,
            nonce: r.bytes_array()?,
            counter: r.u64()?,
            signatures: read_vec(r, RECORD_INPUTS_MAX)?,
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
