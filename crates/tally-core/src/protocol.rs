//! The four protocol messages: `Request` → `Package` → `Receipt` (→ ACK,
//! which is local to the payer SE and has no wire object).

use alloc::vec::Vec;

use crate::amount::{Amount, Epoch};
use crate::cert::PseudonymCertificate;
use crate::codec::{Cbor, CodecError, Reader, Writer, read_vec, write_vec};
use crate::crypto::{Hash32, PublicKey, SecretKey, Signature, Signer, infallible, tagged_hash};
use crate::record::{Record, Transfer};
use crate::stream::StreamAsk;

pub const PROTOCOL_VERSION: u8 = 1;
/// Decoding bound on ancestry records; the policy's history budget is
/// usually far lower and is what the verifier enforces.
pub const PACKAGE_RECORDS_MAX: usize = 1024;
pub const PACKAGE_CERTS_MAX: usize = 1024;

/// Payee → payer. Wire:
/// `[1, amount, nonce, payee_certificate, payee_epoch, signature]`.
/// The payee is paid to `payee_certificate.key`, a pseudonym of its SE,
/// which signs the request (SPEC §4.7): a terminal can neither change the
/// amount nor invent a nonce for a real payee key, either of which would
/// make the payer pay a package the payee's SE must refuse (value
/// stranded, decision 0008).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub amount: Amount,
    pub nonce: [u8; 16],
    pub payee: PseudonymCertificate,
    /// The latest epoch the payee's SE has seen; lets an offline payer learn
    /// that time has passed without trusting a clock.
    pub payee_epoch: Epoch,
    /// By `payee.key` over [`Request::signed_message`].
    pub signature: Signature,
    /// A payment stream instead of a one-off payment (SPEC §4.10): the
    /// amount is `price · ticks_max`, locked for the payee by an OPEN
    /// transfer. Signed with the rest, so a terminal can turn neither a
    /// payment into a stream nor the reverse.
    pub stream: Option<StreamAsk>,
}

impl Request {
    /// `tagged_hash("tally/v1/request", amount ‖ nonce ‖ certificate id ‖ payee_epoch)`,
    /// integers big-endian (amount 8 bytes, epoch 4).
    pub fn signed_message(
        amount: Amount,
        nonce: &[u8; 16],
        payee: &PseudonymCertificate,
        payee_epoch: Epoch,
    ) -> Hash32 {
        Self::signed_message_for(amount, nonce, payee, payee_epoch, None)
    }

    /// [`Request::signed_message`], or for a stream request
    /// `tagged_hash("tally/v1/stream-request", amount ‖ nonce ‖ certificate
    /// id ‖ payee_epoch ‖ price ‖ ticks_max)` (price 8 bytes, ticks 4).
    pub fn signed_message_for(
        amount: Amount,
        nonce: &[u8; 16],
        payee: &PseudonymCertificate,
        payee_epoch: Epoch,
        stream: Option<&StreamAsk>,
    ) -> Hash32 {
        if let Some(a) = stream {
            return tagged_hash(
                b"tally/v1/stream-request",
                &[
                    &amount.0.to_be_bytes(),
                    nonce,
                    &payee.id().0,
                    &payee_epoch.to_be_bytes(),
                    &a.price.0.to_be_bytes(),
                    &a.ticks_max.to_be_bytes(),
                ],
            );
        }
        tagged_hash(
            b"tally/v1/request",
            &[
                &amount.0.to_be_bytes(),
                nonce,
                &payee.id().0,
                &payee_epoch.to_be_bytes(),
            ],
        )
    }

    /// A request signed by the payee's key (the key `payee` certifies).
    pub fn sign(
        key: &SecretKey,
        amount: Amount,
        nonce: [u8; 16],
        payee: PseudonymCertificate,
        payee_epoch: Epoch,
    ) -> Request {
        infallible(Self::try_sign(key, amount, nonce, payee, payee_epoch))
    }

    /// [`Request::sign`] by any [`Signer`] (the DCP's redemption key in an
    /// HSM).
    pub fn try_sign<S: Signer + ?Sized>(
        key: &S,
        amount: Amount,
        nonce: [u8; 16],
        payee: PseudonymCertificate,
        payee_epoch: Epoch,
    ) -> Result<Request, S::Error> {
        Self::try_sign_with(key, amount, nonce, payee, payee_epoch, None)
    }

    /// A request, or with `stream` a stream request (whose `amount` must
    /// be the ask's value: see [`Request::try_sign_stream`]), signed by the
    /// payee's key.
    pub fn try_sign_with<S: Signer + ?Sized>(
        key: &S,
        amount: Amount,
        nonce: [u8; 16],
        payee: PseudonymCertificate,
        payee_epoch: Epoch,
        stream: Option<StreamAsk>,
    ) -> Result<Request, S::Error> {
        let m = Self::signed_message_for(amount, &nonce, &payee, payee_epoch, stream.as_ref());
        let signature = key.try_sign(&m.0)?;
        Ok(Request {
            amount,
            nonce,
            payee,
            payee_epoch,
            signature,
            stream,
        })
    }

    /// A stream request (`ticks_max` ticks at `price`), signed by the
    /// payee's key; `None` for terms no stream may have.
    pub fn try_sign_stream<S: Signer + ?Sized>(
        key: &S,
        ask: StreamAsk,
        nonce: [u8; 16],
        payee: PseudonymCertificate,
        payee_epoch: Epoch,
    ) -> Result<Option<Request>, S::Error> {
        let Some(amount) = ask.value() else {
            return Ok(None);
        };
        Self::try_sign_with(key, amount, nonce, payee, payee_epoch, Some(ask)).map(Some)
    }

    /// The signature under the payee's certified key. (The certificate
    /// itself is checked against the trust list separately.)
    pub fn verify(&self) -> Result<(), crate::crypto::SigError> {
        crate::crypto::verify(
            &self.payee.key,
            &Self::signed_message_for(
                self.amount,
                &self.nonce,
                &self.payee,
                self.payee_epoch,
                self.stream.as_ref(),
            )
            .0,
            &self.signature,
        )
    }
}

impl Cbor for Request {
    fn write(&self, w: &mut Writer) {
        w.array(6 + usize::from(self.stream.is_some()));
        w.u64(u64::from(PROTOCOL_VERSION));
        w.u64(self.amount.0);
        w.bytes(&self.nonce);
        self.payee.write(w);
        w.u64(u64::from(self.payee_epoch));
        self.signature.write(w);
        if let Some(a) = &self.stream {
            a.write(w);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(7)?;
        if n != 6 && n != 7 {
            return Err(CodecError::Malformed);
        }
        r.version(PROTOCOL_VERSION)?;
        let mut req = Request {
            amount: Amount(r.u64()?),
            nonce: r.bytes_array()?,
            payee: PseudonymCertificate::read(r)?,
            payee_epoch: r.u32()?,
            signature: Signature::read(r)?,
            stream: None,
        };
        // (That the amount is the ask's value is the payer's SE's check
        // before it signs an OPEN, and the payee's verifier's, rule SV5.)
        if n == 7 {
            req.stream = Some(StreamAsk::read(r)?);
        }
        Ok(req)
    }
}

/// Payer → payee. Wire: `[1, transfer, [ancestry], [certificates]]`.
/// `ancestry` holds every record reachable from the transfer's inputs back
/// to `Issue` records, each once, parents before children;
/// `certificates` holds the pseudonym certificate of every key that signed
/// a transfer in the package, each once, in order of first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub transfer: Transfer,
    pub ancestry: Vec<Record>,
    pub certificates: Vec<PseudonymCertificate>,
}

impl Cbor for Package {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        w.u64(u64::from(PROTOCOL_VERSION));
        self.transfer.write(w);
        write_vec(w, &self.ancestry);
        write_vec(w, &self.certificates);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        r.version(PROTOCOL_VERSION)?;
        Ok(Package {
            transfer: Transfer::read(r)?,
            ancestry: read_vec(r, PACKAGE_RECORDS_MAX)?,
            certificates: read_vec(r, PACKAGE_CERTS_MAX)?,
        })
    }
}

/// Payee → payer, after the payee SE stored the token.
/// Wire: `[1, transfer_id, payee_key, signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub transfer_id: Hash32,
    pub payee: PublicKey,
    pub signature: Signature,
}

impl Receipt {
    pub fn signed_message(transfer_id: &Hash32) -> Hash32 {
        tagged_hash(b"tally/v1/receipt", &[&transfer_id.0])
    }
    pub fn sign(payee: &SecretKey, transfer_id: Hash32) -> Receipt {
        infallible(Self::try_sign(payee, transfer_id))
    }
    /// [`Receipt::sign`] by any [`Signer`] (the DCP's key in an HSM).
    pub fn try_sign<S: Signer + ?Sized>(
        payee: &S,
        transfer_id: Hash32,
    ) -> Result<Receipt, S::Error> {
        Ok(Receipt {
            transfer_id,
            payee: payee.public_key(),
            signature: payee.try_sign(&Self::signed_message(&transfer_id).0)?,
        })
    }
    pub fn verify(&self) -> Result<(), crate::crypto::SigError> {
        crate::crypto::verify(
            &self.payee,
            &Self::signed_message(&self.transfer_id).0,
            &self.signature,
        )
    }
}

impl Cbor for Receipt {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        w.u64(u64::from(PROTOCOL_VERSION));
        self.transfer_id.write(w);
        self.payee.write(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        r.version(PROTOCOL_VERSION)?;
        Ok(Receipt {
            transfer_id: Hash32::read(r)?,
            payee: PublicKey::read(r)?,
            signature: Signature::read(r)?,
        })
    }
}
