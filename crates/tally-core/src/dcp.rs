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
pub const UPLOAD_PACKAGES_MAX: usize = 64;
pub const CERTIFY_KEYS_MAX: usize = 16;
pub const PACKAGE_BYTES_MAX: usize = 1 << 20;
/// Bound on a sealed upload inside a device request (HPKE overhead included).
pub const SEALED_UPLOAD_BYTES_MAX: usize = 4 << 20;

/// What a device asks. Wire: `[op, ...fields]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOp {
    /// 0: fresh offline keys to certify.
    Certify { keys: Vec<PublicKey> },
    /// 1: load `amount` from the user's account into a genesis token for `key`.
    Load { amount: u64, key: PublicKey },
    /// 2: ask for a redemption request (renewal if `unload` is false).
    RedemptionRequest { amount: u64, unload: bool },
    /// 3: settle the SE's redemption package, sealed to settlement
    /// ([`crate::sealed`], kind Redemption); `nonce` names the redemption
    /// request it pays; renewal issues to `key`.
    Redeem {
        nonce: [u8; 16],
        sealed: Vec<u8>,
        key: PublicKey,
    },
    /// 4: sync: a [`SyncUpload`] (unacknowledged packages and closed
    /// requests) sealed to settlement (kind SyncUpload). The DCP forwards
    /// it unread.
    Sync { sealed: Vec<u8> },
    /// 5: pay another user online, account to account.
    PayOnline { to_account: String, amount: u64 },
    /// 6: read the user's account balance.
    Balance,
}

/// A payee's request closed at sync without a package (DESIGN.md §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedRequest {
    pub nonce: [u8; 16],
    pub amount: u64,
    pub key: PublicKey,
}

impl Cbor for ClosedRequest {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.bytes(&self.nonce);
        w.u64(self.amount);
        self.key.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        Ok(ClosedRequest {
            nonce: r.bytes_array()?,
            amount: r.u64()?,
            key: PublicKey::read(r)?,
        })
    }
}

/// What a device's sync uploads, sealed to settlement: its unacknowledged
/// packages and its closed requests. Wire: `[1, [package bstr], [ClosedRequest]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncUpload {
    pub packages: Vec<Vec<u8>>,
    pub closed: Vec<ClosedRequest>,
}

impl Cbor for SyncUpload {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(u64::from(MESSAGE_VERSION));
        w.array(self.packages.len());
        for p in &self.packages {
            w.bytes(p);
        }
        write_vec(w, &self.closed);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        r.version(MESSAGE_VERSION)?;
        let packages: Vec<Blob> = read_vec(r, UPLOAD_PACKAGES_MAX)?;
        Ok(SyncUpload {
            packages: packages.into_iter().map(|b| b.0).collect(),
            closed: read_vec(r, crate::protocol::PACKAGE_RECORDS_MAX)?,
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
            DeviceOp::Redeem { nonce, sealed, key } => {
                w.array(4);
                w.u64(3);
                w.bytes(nonce);
                w.bytes(sealed);
                key.write(w);
            }
            DeviceOp::Sync { sealed } => {
                w.array(2);
                w.u64(4);
                w.bytes(sealed);
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
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(4)?;
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
                arity(4)?;
                DeviceOp::Redeem {
                    nonce: r.bytes_array()?,
                    sealed: r.bytes_max(SEALED_UPLOAD_BYTES_MAX)?.to_vec(),
                    key: PublicKey::read(r)?,
                }
            }
            4 => {
                arity(2)?;
                DeviceOp::Sync {
                    sealed: r.bytes_max(SEALED_UPLOAD_BYTES_MAX)?.to_vec(),
                }
            }
            5 => {
                arity(3)?;
                DeviceOp::PayOnline {
                    to_account: r.text_max(128)?.to_string(),
                    amount: r.u64()?,
                }
            }
            6 => {
                arity(1)?;
                DeviceOp::Balance
            }
            _ => return Err(CodecError::UnknownCode),
        })
    }
}

/// A signed device request. Wire: `[1, se_id, counter, op, signature]`;
/// the SE's attestation key signs (ATTEST) [`DeviceRequest::challenge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub se_id: Hash32,
    pub counter: u64,
    pub op: DeviceOp,
    pub signature: Signature,
}

impl DeviceRequest {
    /// The bytes the SE signs: binds SE, counter and operation.
    pub fn challenge(se_id: &Hash32, counter: u64, op: &DeviceOp) -> Vec<u8> {
        let h = tagged_hash(
            b"tally/v1/device-request",
            &[&se_id.0, &counter.to_be_bytes(), &op.to_cbor()],
        );
        h.0.to_vec()
    }
    /// Idempotency key: the digest of the whole signed request.
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/device-request-id", &[&self.to_cbor()])
    }
}

impl Cbor for DeviceRequest {
    fn write(&self, w: &mut Writer) {
        w.array(5);
        w.u64(u64::from(MESSAGE_VERSION));
        self.se_id.write(w);
        w.u64(self.counter);
        self.op.write(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(5)?;
        r.version(MESSAGE_VERSION)?;
        Ok(DeviceRequest {
            se_id: Hash32::read(r)?,
            counter: r.u64()?,
            op: DeviceOp::read(r)?,
            signature: Signature::read(r)?,
        })
    }
}

/// Registration (unauthenticated envelope: the attestation signature over
/// the registration challenge is the authentication).
/// Wire: `[1, attestation_key, class, maker, account, signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub attestation_key: PublicKey,
    pub device_class: u8,
    pub maker: String,
    /// The user account (held at this DCP) the device belongs to.
    pub account: String,
    pub signature: Signature,
}

impl Cbor for Registration {
    fn write(&self, w: &mut Writer) {
        w.array(6);
        w.u64(u64::from(MESSAGE_VERSION));
        self.attestation_key.write(w);
        w.u64(u64::from(self.device_class));
        w.text(&self.maker);
        w.text(&self.account);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(6)?;
        r.version(MESSAGE_VERSION)?;
        Ok(Registration {
            attestation_key: PublicKey::read(r)?,
            device_class: r.u8()?,
            maker: r.text_max(64)?.to_string(),
            account: r.text_max(128)?.to_string(),
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
    /// 2
    Redemption(Request),
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
            2 => DeviceResponse::Redemption(Request::read(r)?),
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

/// What an SE signs (ATTEST) to register: binds its attestation key to
/// its class and maker.
pub fn registration_challenge(
    attestation_key: &PublicKey,
    device_class: u8,
    maker: &str,
) -> Vec<u8> {
    let mut c = b"tally/v1/register".to_vec();
    c.extend_from_slice(&attestation_key.to_cbor());
    c.push(device_class);
    c.extend_from_slice(maker.as_bytes());
    c
}
