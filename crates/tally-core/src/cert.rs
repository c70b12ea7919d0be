//! Certificates: the central bank's root certifies DCP keys; a DCP key
//! certifies an SE's offline (pseudonym) keys.

use alloc::vec::Vec;

use crate::amount::Epoch;
use crate::codec::{Cbor, CodecError, Reader, Writer};
use crate::crypto::{Hash32, PublicKey, SecretKey, Signature, Signer, infallible, tagged_hash};

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
        infallible(Self::try_sign(root, dcp_id, key, roles, expiry_epoch))
    }
    /// [`DcpCertificate::sign`] by any [`Signer`] (the root in an HSM).
    pub fn try_sign<S: Signer + ?Sized>(
        root: &S,
        dcp_id: u32,
        key: PublicKey,
        roles: u8,
        expiry_epoch: Epoch,
    ) -> Result<Self, S::Error> {
        let mut c = DcpCertificate {
            dcp_id,
            key,
            roles,
            expiry_epoch,
            signature: Signature::new(root.public_key().suite(), [0; 64]),
        };
        c.signature = root.try_sign(&c.signed_message().0)?;
        Ok(c)
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
        infallible(Self::try_sign(
            issuer,
            key,
            expiry_epoch,
            device_class,
            tier,
            escrow,
        ))
    }
    /// [`PseudonymCertificate::sign`] by any [`Signer`].
    pub fn try_sign<S: Signer + ?Sized>(
        issuer: &S,
        key: PublicKey,
        expiry_epoch: Epoch,
        device_class: u8,
        tier: u8,
        escrow: Vec<u8>,
    ) -> Result<Self, S::Error> {
        let issuer_key = issuer.public_key();
        let mut c = PseudonymCertificate {
            key,
            issuer: issuer_key.id(),
            expiry_epoch,
            device_class,
            tier,
            escrow,
            signature: Signature::new(issuer_key.suite(), [0; 64]),
        };
        c.signature = issuer.try_sign(&c.signed_message().0)?;
        Ok(c)
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

/// Root → settlement key: the key that signs settlement results (what the
/// central bank answers a DCP for each device request), so that the root
/// signs only rarely (policy, revocation lists, certificates) and can stay
/// in an HSM or offline. Wire: `[1, key, signature]`; the root signs
/// `H("tally/v1/settlement-key", [1, key])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementKey {
    pub key: PublicKey,
    pub signature: Signature,
}

impl SettlementKey {
    pub fn signed_message(key: &PublicKey) -> Hash32 {
        let mut w = Writer::new();
        w.array(2);
        w.u64(u64::from(CERT_VERSION));
        key.write(&mut w);
        tagged_hash(b"tally/v1/settlement-key", &[&w.into_bytes()])
    }
    /// The root certifies `key` for settlement results.
    pub fn try_sign<S: Signer + ?Sized>(root: &S, key: PublicKey) -> Result<Self, S::Error> {
        Ok(SettlementKey {
            key,
            signature: root.try_sign(&Self::signed_message(&key).0)?,
        })
    }
    /// Checks the root's signature and that the key is usable.
    pub fn verify(&self, root: &PublicKey) -> Result<(), crate::crypto::SigError> {
        crate::crypto::check_key(&self.key)?;
        crate::crypto::verify(root, &Self::signed_message(&self.key).0, &self.signature)
    }
}

impl Cbor for SettlementKey {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(u64::from(CERT_VERSION));
        self.key.write(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        r.version(CERT_VERSION)?;
        Ok(SettlementKey {
            key: PublicKey::read(r)?,
            signature: Signature::read(r)?,
        })
    }
}

#[cfg(test)]
mod settlement_key_tests {
    use super::*;
    use crate::crypto::Suite;

    #[test]
    fn settlement_key_verifies_under_its_root_only() {
        let root = SecretKey::from_seed(Suite::Ed25519, &[1; 32]).unwrap();
        let other = SecretKey::from_seed(Suite::Ed25519, &[2; 32]).unwrap();
        let key = SecretKey::from_seed(Suite::Ed25519, &[3; 32])
            .unwrap()
            .public();
        let cert = infallible(SettlementKey::try_sign(&root, key));
        assert_eq!(cert.verify(&root.public()), Ok(()));
        assert!(cert.verify(&other.public()).is_err());
        let back = SettlementKey::from_cbor(&cert.to_cbor()).unwrap();
        assert_eq!(back, cert);
        // Another key under the root's signature does not verify.
        let mut swapped = cert.clone();
        swapped.key = other.public();
        assert!(swapped.verify(&root.public()).is_err());
    }
}
