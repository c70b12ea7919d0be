//! Certificates: the central bank's root certifies DCP keys; a DCP key
//! certifies an SE's offline (pseudonym) keys.

use alloc::vec::Vec;

use crate::amount::Epoch;
use crate::codec::{Cbor, CodecError, Reader, Writer};
use crate::crypto::{Hash32, PublicKey, SecretKey, Signature, tagged_hash};

pub const CERT_VERSION: u8 = 1;
/// Bound on the escrow field (ElGamal ciphertext + proof, issue 4).
pub const ESCROW_BYTES_MAX: usize = 256;

/// What a DCP key may do (bit set).
pub mod role {
    /// Sign `Issue` records.
    pub const ISSUE: u8 = 1;
    /// Certify SE pseudonym keys.
    pub const CERTIFY: u8 = 2;
    /// Receive tokens for renewal and unload (the redemption key).
    pub const REDEEM: u8 = 4;
    /// Sign sync grants (epoch statements) for SEs.
    pub const SYNC: u8 = 8;
}

/// Root → DCP key. Wire: `[1, dcp_id, key, roles, expiry_epoch, signature]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcpCertificate {
    pub dcp_id: u32,
    pub key: PublicKey,
    pub roles: u8,
    pub expiry_epoch: Epoch,
    pub signature: Signature,
}

impl DcpCertificate {
    fn write_body(&self, w: &mut Writer) {
        w.u64(u64::from(CERT_VERSION));
        w.u64(u64::from(self.dcp_id));
        self.key.write(w);
        w.u64(u64::from(self.roles));
        w.u64(u64::from(self.expiry_epoch));
    }
    /// The bytes the root signs.
    pub fn signed_message(&self) -> Hash32 {
        let mut w = Writer::new();
        w.array(5);
        self.write_body(&mut w);
        tagged_hash(b"tally/v1/dcp-cert", &[&w.into_bytes()])
    }
    pub fn sign(
        root: &SecretKey,
        dcp_id: u32,
        key: PublicKey,
        roles: u8,
        expiry_epoch: Epoch,
    ) -> Self {
        let mut c = DcpCertificate {
            dcp_id,
            key,
            roles,
            expiry_epoch,
            signature: Signature::new(root.suite(), [0; 64]),
        };
        c.signature = root.sign(&c.signed_message().0);
        c
    }
    pub fn has_role(&self, r: u8) -> bool {
        self.roles & r == r
    }
}

impl Cbor for DcpCertificate {
    fn write(&self, w: &mut Writer) {
        w.array(6);
        self.write_body(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(6)?;
        r.version(CERT_VERSION)?;
        Ok(DcpCertificate {
            dcp_id: r.u32()?,
            key: PublicKey::read(r)?,
            roles: r.u8()?,
            expiry_epoch: r.u32()?,
            signature: Signature::read(r)?,
        })
    }
}

/// DCP → SE offline key (a pseudonym).
/// Wire: `[1, key, issuer_key_id, expiry_epoch, device_class, tier, escrow, signature]`.
///
/// `escrow` is a byte string, empty until the privacy layer fills it with
/// the SE identifier encrypted to the supervisors' key and its proof
/// (SPEC.md §4.3). It is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PseudonymCertificate {
    pub key: PublicKey,
    pub issuer: Hash32,
    pub expiry_epoch: Epoch,
    pub device_class: u8,
    pub tier: u8,
    pub escrow: Vec<u8>,
    pub signature: Signature,
}

impl PseudonymCertificate {
    fn write_body(&self, w: &mut Writer) {
        w.u64(u64::from(CERT_VERSION));
        self.key.write(w);
        self.issuer.write(w);
        w.u64(u64::from(self.expiry_epoch));
        w.u64(u64::from(self.device_class));
        w.u64(u64::from(self.tier));
        w.bytes(&self.escrow);
    }
    pub fn signed_message(&self) -> Hash32 {
        let mut w = Writer::new();
        w.array(7);
        self.write_body(&mut w);
        tagged_hash(b"tally/v1/pseudonym-cert", &[&w.into_bytes()])
    }
    /// Certificate id (what caches and revocation lists name).
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/cert-id", &[&self.to_cbor()])
    }
    pub fn sign(
        issuer: &SecretKey,
        key: PublicKey,
        expiry_epoch: Epoch,
        device_class: u8,
        tier: u8,
        escrow: Vec<u8>,
    ) -> Self {
        let mut c = PseudonymCertificate {
            key,
            issuer: issuer.public().id(),
            expiry_epoch,
            device_class,
            tier,
            escrow,
            signature: Signature::new(issuer.suite(), [0; 64]),
        };
        c.signature = issuer.sign(&c.signed_message().0);
        c
    }
}

impl Cbor for PseudonymCertificate {
    fn write(&self, w: &mut Writer) {
        w.array(8);
        self.write_body(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(8)?;
        r.version(CERT_VERSION)?;
        Ok(PseudonymCertificate {
            key: PublicKey::read(r)?,
            issuer: Hash32::read(r)?,
            expiry_epoch: r.u32()?,
            device_class: r.u8()?,
            tier: r.u8()?,
            escrow: r.bytes_max(ESCROW_BYTES_MAX)?.to_vec(),
            signature: Signature::read(r)?,
        })
    }
}
