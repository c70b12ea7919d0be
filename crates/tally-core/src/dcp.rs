//! Device ↔ DCP messages (CBOR bodies of device traffic). Wire objects of
//! SPEC.md travel inside as canonical byte strings.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::codec::{Cbor, CodecError, Reader, Writer, read_vec, write_vec};
use crate::crypto::tagged_hash;
use crate::{
    Hash32, Issue, Policy, PseudonymCertificate, PublicKey, Receipt, Request, RevocationList,
    Signature, SyncGrant,
};

pub const MESSAGE_VERSION: u8 = 1;
/// Packages of one sync upload. A sync grant clears every unacknowledged
/// payment from the SE's log, so one upload must be able to carry all the
/// log can hold (tally-se's `OUTGOING_MAX`, asserted there): at 64 an SE
/// with 65 unacknowledged payments could never sync again.
pub const UPLOAD_PACKAGES_MAX: usize = 128;
pub const CERTIFY_KEYS_MAX: usize = 16;
pub const PACKAGE_BYTES_MAX: usize = 1 << 20;
/// Bound on a sealed upload inside a device request (HPKE overhead included).
pub const SEALED_UPLOAD_BYTES_MAX: usize = 4 << 20;

/// What a device asks. Wire: `[op, ...fields]`. Every op is built and
/// signed by the SE itself (BUILD REQUEST, docs/APDU.md): the terminal
/// chooses only the parameters the user gives (amounts, the payee
/// account); keys, nonces and transfer ids come from the SE's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOp {
    /// 0: fresh offline keys, generated inside the SE in the same commit
    /// that signs this request (the signature attests them).
    Certify { keys: Vec<PublicKey> },
    /// 1: load `amount` from the user's account into a genesis token for
    /// `key`, one of the SE's own certified keys.
    Load { amount: u64, key: PublicKey },
    /// 2: ask for a redemption order (renewal if `unload` is false).
    RedemptionRequest { amount: u64, unload: bool },
    /// 3: settle the SE's redemption package `transfer_id`, which pays the
    /// order `nonce`; the package travels sealed to settlement
    /// ([`crate::sealed`], kind Redemption) in the request's attachment,
    /// whose SHA-256 is `sealed_digest`. Renewal issues to `key`.
    Redeem {
        nonce: [u8; 16],
        transfer_id: Hash32,
        key: PublicKey,
        sealed_digest: Hash32,
    },
    /// 4: sync: a [`SyncUpload`] sealed to settlement (kind SyncUpload) in
    /// the attachment, whose SHA-256 is `sealed_digest`. The DCP forwards
    /// it unread. `reports` is [`reports_digest`] of the request reports
    /// the SE handed out for this upload (settlement checks the opened
    /// upload against it, so no terminal can leave one out); recovered
    /// and refunded tokens waiting for this device are issued to `key`, a
    /// certified key of the SE's (none: they wait for a later sync).
    Sync {
        sealed_digest: Hash32,
        reports: Hash32,
        key: Option<PublicKey>,
    },
    /// 5: pay another user online, account to account (cardholder
    /// verified in the SE when the policy says so).
    PayOnline { to_account: String, amount: u64 },
    /// 6: read the user's account balance.
    Balance,
    /// 7: an Issue this SE will never credit (it refused it, e.g. over its
    /// holding limit, and recorded it as cancelled in the same commit):
    /// the DCP takes its value back to the SE's account.
    /// (Boxed: an Issue is large, and every op lives on the SE's stack.)
    CancelIssue { issue: alloc::boxed::Box<Issue> },
}

/// The kinds of [`DeviceOp`], each with its own signature domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RequestKind {
    Certify = 0,
    Load = 1,
    RedemptionRequest = 2,
    Redeem = 3,
    Sync = 4,
    PayOnline = 5,
    Balance = 6,
    CancelIssue = 7,
}

impl RequestKind {
    pub fn from_code(c: u8) -> Option<RequestKind> {
        Some(match c {
            0 => RequestKind::Certify,
            1 => RequestKind::Load,
            2 => RequestKind::RedemptionRequest,
            3 => RequestKind::Redeem,
            4 => RequestKind::Sync,
            5 => RequestKind::PayOnline,
            6 => RequestKind::Balance,
            7 => RequestKind::CancelIssue,
            _ => return None,
        })
    }
    /// The domain tag of this kind's signatures: a signature for one kind
    /// never verifies as another.
    pub fn tag(self) -> &'static [u8] {
        match self {
            RequestKind::Certify => b"tally/v1/req/certify",
            RequestKind::Load => b"tally/v1/req/load",
            RequestKind::RedemptionRequest => b"tally/v1/req/redemption-request",
            RequestKind::Redeem => b"tally/v1/req/redeem",
            RequestKind::Sync => b"tally/v1/req/sync",
            RequestKind::PayOnline => b"tally/v1/req/pay-online",
            RequestKind::Balance => b"tally/v1/req/balance",
            RequestKind::CancelIssue => b"tally/v1/req/cancel-issue",
        }
    }
    /// Whether requests of this kind carry a sealed attachment.
    pub fn has_attachment(self) -> bool {
        matches!(self, RequestKind::Redeem | RequestKind::Sync)
    }
}

impl DeviceOp {
    pub fn kind(&self) -> RequestKind {
        match self {
            DeviceOp::Certify { .. } => RequestKind::Certify,
            DeviceOp::Load { .. } => RequestKind::Load,
            DeviceOp::RedemptionRequest { .. } => RequestKind::RedemptionRequest,
            DeviceOp::Redeem { .. } => RequestKind::Redeem,
            DeviceOp::Sync { .. } => RequestKind::Sync,
            DeviceOp::PayOnline { .. } => RequestKind::PayOnline,
            DeviceOp::Balance => RequestKind::Balance,
            DeviceOp::CancelIssue { .. } => RequestKind::CancelIssue,
        }
    }
    /// The digest the attachment must have, for kinds that carry one.
    pub fn sealed_digest(&self) -> Option<&Hash32> {
        match self {
            DeviceOp::Redeem { sealed_digest, .. } | DeviceOp::Sync { sealed_digest, .. } => {
                Some(sealed_digest)
            }
            _ => None,
        }
    }
}

/// The digest of a sealed attachment, as the SE signs it.
pub fn attachment_digest(sealed: &[u8]) -> Hash32 {
    tagged_hash(b"tally/v1/req/attachment", &[sealed])
}

/// What a payee's SE reports about one of its requests, at the syncs
/// after the request ended (DESIGN.md §4): received by `received` (the
/// transfer it stored), or closed unpaid (`None`, when a sync closed it
/// still open). Signed by the request's own key inside the SE, so neither
/// the wallet nor the DCP can write one; the SE keeps each report until a
/// sync grant answers the upload that carried it. Settlement resolves each
/// request once from it: the received transfer stands, a closed request
/// is credited with the first matching payment, and every other payment
/// for the request is refunded to its payer (decision 0008).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestReport {
    pub nonce: [u8; 16],
    pub amount: u64,
    pub key: PublicKey,
    pub received: Option<Hash32>,
    pub signature: Signature,
}

impl RequestReport {
    /// `tagged_hash("tally/v1/request-report", [nonce, be64(amount),
    /// cbor(key), received transfer id or the empty string])`.
    pub fn signed_message(
        nonce: &[u8; 16],
        amount: u64,
        key: &PublicKey,
        received: Option<&Hash32>,
    ) -> Hash32 {
        tagged_hash(
            b"tally/v1/request-report",
            &[
                nonce,
                &amount.to_be_bytes(),
                &key.to_cbor(),
                received.map(|t| t.0.as_slice()).unwrap_or(&[]),
            ],
        )
    }
    pub fn sign(
        key: &crate::crypto::SecretKey,
        nonce: [u8; 16],
        amount: u64,
        received: Option<Hash32>,
    ) -> RequestReport {
        let public = key.public();
        let signature =
            key.sign(&Self::signed_message(&nonce, amount, &public, received.as_ref()).0);
        RequestReport {
            nonce,
            amount,
            key: public,
            received,
            signature,
        }
    }
    pub fn verify(&self) -> bool {
        crate::crypto::verify(
            &self.key,
            &Self::signed_message(&self.nonce, self.amount, &self.key, self.received.as_ref()).0,
            &self.signature,
        )
        .is_ok()
    }
}

impl Cbor for RequestReport {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        w.bytes(&self.nonce);
        w.u64(self.amount);
        self.key.write(w);
        match &self.received {
            Some(t) => {
                w.array(1);
                t.write(w);
            }
            None => w.array(0),
        }
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        Ok(RequestReport {
            nonce: r.bytes_array()?,
            amount: r.u64()?,
            key: PublicKey::read(r)?,
            received: match r.array_max(1)? {
                0 => None,
                _ => Some(Hash32::read(r)?),
            },
            signature: Signature::read(r)?,
        })
    }
}

/// What the SE signs in a Sync request for the reports it handed out:
/// `tagged_hash("tally/v1/reports", [signed_message(report)...])`, in the
/// order given (the SE computes it from its own table, without signing
/// again).
pub fn reports_digest(reports: &[RequestReport]) -> Hash32 {
    reports_digest_of(
        reports
            .iter()
            .map(|r| (r.nonce, r.amount, r.key, r.received)),
    )
}

/// [`reports_digest`] from the reports' signed fields
/// `(nonce, amount, key, received)`.
pub fn reports_digest_of(
    reports: impl IntoIterator<Item = ([u8; 16], u64, PublicKey, Option<Hash32>)>,
) -> Hash32 {
    let messages: Vec<Hash32> = reports
        .into_iter()
        .map(|(nonce, amount, key, received)| {
            RequestReport::signed_message(&nonce, amount, &key, received.as_ref())
        })
        .collect();
    let parts: Vec<&[u8]> = messages.iter().map(|m| m.0.as_slice()).collect();
    tagged_hash(b"tally/v1/reports", &parts)
}

/// What a device's sync uploads, sealed to settlement: its unacknowledged
/// packages and its request reports. Wire: `[1, [package bstr], [RequestReport]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncUpload {
    pub packages: Vec<Vec<u8>>,
    pub reports: Vec<RequestReport>,
}

impl Cbor for SyncUpload {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(u64::from(MESSAGE_VERSION));
        w.array(self.packages.len());
        for p in &self.packages {
            w.bytes(p);
        }
        write_vec(w, &self.reports);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        r.version(MESSAGE_VERSION)?;
        let packages: Vec<Blob> = read_vec(r, UPLOAD_PACKAGES_MAX)?;
        Ok(SyncUpload {
            packages: packages.into_iter().map(|b| b.0).collect(),
            reports: read_vec(r, crate::protocol::PACKAGE_RECORDS_MAX)?,
        })
    }
}

/// What a device seals to settlement ([`crate::sealed`], host side): it
/// selects the HPKE `info` string, so a redemption cannot be replayed as a
/// sync upload or the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SealedKind {
    SyncUpload = 1,
    Redemption = 2,
}

struct Blob(Vec<u8>);
impl Cbor for Blob {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Blob(r.bytes_max(PACKAGE_BYTES_MAX)?.to_vec()))
    }
}

impl Cbor for DeviceOp {
    fn write(&self, w: &mut Writer) {
        match self {
            DeviceOp::Certify { keys } => {
                w.array(2);
                w.u64(0);
                write_vec(w, keys);
            }
            DeviceOp::Load { amount, key } => {
                w.array(3);
                w.u64(1);
                w.u64(*amount);
                key.write(w);
            }
            DeviceOp::RedemptionRequest { amount, unload } => {
                w.array(3);
                w.u64(2);
                w.u64(*amount);
                w.bool(*unload);
            }
            DeviceOp::Redeem {
                nonce,
                transfer_id,
                key,
                sealed_digest,
            } => {
                w.array(5);
                w.u64(3);
                w.bytes(nonce);
                transfer_id.write(w);
                key.write(w);
                sealed_digest.write(w);
            }
            DeviceOp::Sync {
                sealed_digest,
                reports,
                key,
            } => {
                w.array(4);
                w.u64(4);
                sealed_digest.write(w);
                reports.write(w);
                match key {
                    Some(k) => {
                        w.array(1);
                        k.write(w);
                    }
                    None => w.array(0),
                }
            }
            DeviceOp::PayOnline { to_account, amount } => {
                w.array(3);
                w.u64(5);
                w.text(to_account);
                w.u64(*amount);
            }
            DeviceOp::Balance => {
                w.array(1);
                w.u64(6);
            }
            DeviceOp::CancelIssue { issue } => {
                w.array(2);
                w.u64(7);
                issue.write(w);
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(5)?;
        let op = r.u8()?;
        let arity = |want: usize| {
            if n == want {
                Ok(())
            } else {
                Err(CodecError::Malformed)
            }
        };
        Ok(match op {
            0 => {
                arity(2)?;
                DeviceOp::Certify {
                    keys: read_vec(r, CERTIFY_KEYS_MAX)?,
                }
            }
            1 => {
                arity(3)?;
                DeviceOp::Load {
                    amount: r.u64()?,
                    key: PublicKey::read(r)?,
                }
            }
            2 => {
                arity(3)?;
                DeviceOp::RedemptionRequest {
                    amount: r.u64()?,
                    unload: r.bool()?,
                }
            }
            3 => {
                arity(5)?;
                DeviceOp::Redeem {
                    nonce: r.bytes_array()?,
                    transfer_id: Hash32::read(r)?,
                    key: PublicKey::read(r)?,
                    sealed_digest: Hash32::read(r)?,
                }
            }
            4 => {
                arity(4)?;
                DeviceOp::Sync {
                    sealed_digest: Hash32::read(r)?,
                    reports: Hash32::read(r)?,
                    key: match r.array_max(1)? {
                        0 => None,
                        _ => Some(PublicKey::read(r)?),
                    },
                }
            }
            5 => {
                arity(3)?;
                DeviceOp::PayOnline {
                    to_account: r.text_max(ACCOUNT_NAME_BYTES_MAX)?.to_string(),
                    amount: r.u64()?,
                }
            }
            6 => {
                arity(1)?;
                DeviceOp::Balance
            }
            7 => {
                arity(2)?;
                DeviceOp::CancelIssue {
                    issue: alloc::boxed::Box::new(Issue::read(r)?),
                }
            }
            _ => return Err(CodecError::UnknownCode),
        })
    }
}

/// Longest account name, in bytes.
pub const ACCOUNT_NAME_BYTES_MAX: usize = 128;

/// A device request built and signed by the SE. Wire:
/// `[2, se_id, counter, op, signature, attachment]`; the SE's attestation
/// key signs [`DeviceRequest::signed_message`] under the op's own domain
/// tag, with the SE's own monotonic request counter. The attachment (the
/// sealed upload of Sync and Redeem, empty otherwise) is not signed
/// itself: its digest is part of the op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub se_id: Hash32,
    pub counter: u64,
    pub op: DeviceOp,
    pub signature: Signature,
    pub attachment: Vec<u8>,
}

/// Version of [`DeviceRequest`] (2: built by the SE, per-kind tags).
pub const DEVICE_REQUEST_VERSION: u8 = 2;

impl DeviceRequest {
    /// The digest the SE signs: binds SE, counter, kind and operation.
    pub fn signed_message(se_id: &Hash32, counter: u64, op: &DeviceOp) -> Hash32 {
        tagged_hash(
            op.kind().tag(),
            &[&se_id.0, &counter.to_be_bytes(), &op.to_cbor()],
        )
    }
    /// Whether the attachment is what the signed op names.
    pub fn attachment_matches(&self) -> bool {
        match self.op.sealed_digest() {
            Some(d) => attachment_digest(&self.attachment) == *d,
            None => self.attachment.is_empty(),
        }
    }
    /// Idempotency key: the digest of the whole request, attachment included.
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/device-request-id", &[&self.to_cbor()])
    }
}

impl Cbor for DeviceRequest {
    fn write(&self, w: &mut Writer) {
        w.array(6);
        w.u64(u64::from(DEVICE_REQUEST_VERSION));
        self.se_id.write(w);
        w.u64(self.counter);
        self.op.write(w);
        self.signature.write(w);
        w.bytes(&self.attachment);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(6)?;
        r.version(DEVICE_REQUEST_VERSION)?;
        Ok(DeviceRequest {
            se_id: Hash32::read(r)?,
            counter: r.u64()?,
            op: DeviceOp::read(r)?,
            signature: Signature::read(r)?,
            attachment: r.bytes_max(SEALED_UPLOAD_BYTES_MAX)?.to_vec(),
        })
    }
}

/// A redemption order: the DCP's request for the SE's tokens (renewal or
/// unload), bound to one SE and signed by the DCP's redemption key (the
/// key `request.payee` certifies). REDEEM pays only an order for its own
/// SE id, so a terminal cannot feed one SE another's order.
/// Wire: `[1, se_id, unload, Request, signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedemptionOrder {
    pub se_id: Hash32,
    pub unload: bool,
    pub request: Request,
    pub signature: Signature,
}

impl RedemptionOrder {
    pub fn signed_message(se_id: &Hash32, unload: bool, request: &Request) -> Hash32 {
        tagged_hash(
            b"tally/v1/redemption-order",
            &[&se_id.0, &[u8::from(unload)], &request.to_cbor()],
        )
    }
    pub fn sign(
        dcp: &crate::crypto::SecretKey,
        se_id: Hash32,
        unload: bool,
        request: Request,
    ) -> Self {
        crate::crypto::infallible(Self::try_sign(dcp, se_id, unload, request))
    }
    /// [`RedemptionOrder::sign`] by any [`crate::crypto::Signer`].
    pub fn try_sign<S: crate::crypto::Signer + ?Sized>(
        dcp: &S,
        se_id: Hash32,
        unload: bool,
        request: Request,
    ) -> Result<Self, S::Error> {
        let signature = dcp.try_sign(&Self::signed_message(&se_id, unload, &request).0)?;
        Ok(RedemptionOrder {
            se_id,
            unload,
            request,
            signature,
        })
    }
    /// The signature under the key the request names as payee.
    pub fn verify(&self) -> bool {
        crate::crypto::verify(
            &self.request.payee.key,
            &Self::signed_message(&self.se_id, self.unload, &self.request).0,
            &self.signature,
        )
        .is_ok()
    }
}

impl Cbor for RedemptionOrder {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        w.u64(u64::from(MESSAGE_VERSION));
        self.se_id.write(w);
        w.bool(self.unload);
        self.request.write(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        r.version(MESSAGE_VERSION)?;
        Ok(RedemptionOrder {
            se_id: Hash32::read(r)?,
            unload: r.bool()?,
            request: Request::read(r)?,
            signature: Signature::read(r)?,
        })
    }
}

/// The manufacturer's certificate of an SE's attestation key, made at
/// manufacture; enrolment accepts it only under a manufacturer key of the
/// policy. Wire: `[1, attestation_key, class, maker, maker_key, signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakerCertificate {
    pub attestation_key: PublicKey,
    pub device_class: u8,
    pub maker: String,
    pub maker_key: PublicKey,
    pub signature: Signature,
}

impl MakerCertificate {
    pub fn signed_message(attestation_key: &PublicKey, device_class: u8, maker: &str) -> Hash32 {
        tagged_hash(
            b"tally/v1/maker-cert",
            &[
                &attestation_key.to_cbor(),
                &[device_class],
                maker.as_bytes(),
            ],
        )
    }
    pub fn sign(
        maker_key: &crate::crypto::SecretKey,
        attestation_key: PublicKey,
        device_class: u8,
        maker: &str,
    ) -> Self {
        MakerCertificate {
            attestation_key,
            device_class,
            maker: maker.to_string(),
            maker_key: maker_key.public(),
            signature: maker_key
                .sign(&Self::signed_message(&attestation_key, device_class, maker).0),
        }
    }
    pub fn verify(&self) -> bool {
        crate::crypto::verify(
            &self.maker_key,
            &Self::signed_message(&self.attestation_key, self.device_class, &self.maker).0,
            &self.signature,
        )
        .is_ok()
    }
}

impl Cbor for MakerCertificate {
    fn write(&self, w: &mut Writer) {
        w.array(6);
        w.u64(u64::from(MESSAGE_VERSION));
        self.attestation_key.write(w);
        w.u64(u64::from(self.device_class));
        w.text(&self.maker);
        self.maker_key.write(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(6)?;
        r.version(MESSAGE_VERSION)?;
        Ok(MakerCertificate {
            attestation_key: PublicKey::read(r)?,
            device_class: r.u8()?,
            maker: r.text_max(64)?.to_string(),
            maker_key: PublicKey::read(r)?,
            signature: Signature::read(r)?,
        })
    }
}

/// The digest of a one-time enrolment code (what the DCP stores and the
/// SE signs; the code itself never travels to the back office).
pub fn enrolment_code_digest(code: &str) -> Hash32 {
    tagged_hash(b"tally/v1/enrolment-code", &[code.trim().as_bytes()])
}

/// What the SE signs (ENROL) to register: its id, the account and the
/// digest of the account's one-time enrolment code.
pub fn enrolment_message(se_id: &Hash32, account: &str, code_digest: &Hash32) -> Hash32 {
    tagged_hash(
        b"tally/v1/req/enrol",
        &[&se_id.0, account.as_bytes(), &code_digest.0],
    )
}

/// Registration: the manufacturer's certificate of the SE's attestation
/// key, and the SE's signature binding its id, the account and the
/// account's one-time enrolment code ([`enrolment_message`]).
/// Wire: `[2, maker_cert, account, signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub maker_cert: MakerCertificate,
    /// The user account (held at this DCP) the device belongs to.
    pub account: String,
    pub signature: Signature,
}

impl Registration {
    pub fn attestation_key(&self) -> &PublicKey {
        &self.maker_cert.attestation_key
    }
}

impl Cbor for Registration {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        w.u64(u64::from(DEVICE_REQUEST_VERSION));
        self.maker_cert.write(w);
        w.text(&self.account);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        r.version(DEVICE_REQUEST_VERSION)?;
        Ok(Registration {
            maker_cert: MakerCertificate::read(r)?,
            account: r.text_max(ACCOUNT_NAME_BYTES_MAX)?.to_string(),
            signature: Signature::read(r)?,
        })
    }
}

/// Answers. Wire: `[kind, ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceResponse {
    /// 0
    Certificates(Vec<PseudonymCertificate>),
    /// 1: load or renewal
    Issued(Issue),
    /// 2: the DCP's signed order for this SE's tokens
    Redemption(RedemptionOrder),
    /// 3: unload credited: new account balance, and the DCP's receipt for
    /// the redemption package (the SE acknowledges it).
    Unloaded { balance: u64, receipt: Receipt },
    /// 4
    Synced(SyncBundle),
    /// 5: account balance after the operation
    Balance { balance: u64 },
    /// 6: renewal: the fresh token and the DCP's receipt for the package.
    Renewed { issue: Issue, receipt: Receipt },
}

/// Everything a device receives at sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncBundle {
    pub policy: Policy,
    pub revocations: RevocationList,
    pub grant: SyncGrant,
    /// Tokens recovered for this device (interrupted payments).
    pub recovered: Vec<Issue>,
    /// Double spends found in what this device uploaded (for its owner's view).
    pub double_spends: u32,
}

impl Cbor for SyncBundle {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        self.policy.write(w);
        self.revocations.write(w);
        self.grant.write(w);
        write_vec(w, &self.recovered);
        w.u64(u64::from(self.double_spends));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        Ok(SyncBundle {
            policy: Policy::read(r)?,
            revocations: RevocationList::read(r)?,
            grant: SyncGrant::read(r)?,
            recovered: read_vec(r, UPLOAD_PACKAGES_MAX)?,
            double_spends: r.u32()?,
        })
    }
}

impl Cbor for DeviceResponse {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        match self {
            DeviceResponse::Certificates(c) => {
                w.u64(0);
                write_vec(w, c)
            }
            DeviceResponse::Issued(i) => {
                w.u64(1);
                i.write(w)
            }
            DeviceResponse::Redemption(r) => {
                w.u64(2);
                r.write(w)
            }
            DeviceResponse::Unloaded { balance, receipt } => {
                w.u64(3);
                w.array(2);
                w.u64(*balance);
                receipt.write(w)
            }
            DeviceResponse::Synced(b) => {
                w.u64(4);
                b.write(w)
            }
            DeviceResponse::Balance { balance } => {
                w.u64(5);
                w.u64(*balance)
            }
            DeviceResponse::Renewed { issue, receipt } => {
                w.u64(6);
                w.array(2);
                issue.write(w);
                receipt.write(w)
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        Ok(match r.u8()? {
            0 => DeviceResponse::Certificates(read_vec(r, CERTIFY_KEYS_MAX)?),
            1 => DeviceResponse::Issued(Issue::read(r)?),
            2 => DeviceResponse::Redemption(RedemptionOrder::read(r)?),
            3 => {
                r.array(2)?;
                DeviceResponse::Unloaded {
                    balance: r.u64()?,
                    receipt: Receipt::read(r)?,
                }
            }
            4 => DeviceResponse::Synced(SyncBundle::read(r)?),
            5 => DeviceResponse::Balance { balance: r.u64()? },
            6 => {
                r.array(2)?;
                DeviceResponse::Renewed {
                    issue: Issue::read(r)?,
                    receipt: Receipt::read(r)?,
                }
            }
            _ => return Err(CodecError::UnknownCode),
        })
    }
}
