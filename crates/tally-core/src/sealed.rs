//! Histories sealed to settlement (DESIGN.md §5): HPKE (RFC 9180) base
//! mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, from
//! the `hpke` crate. The device's wallet seals what it uploads; the DCP
//! forwards bytes it cannot read; settlement opens them.
//!
//! ```text
//! Sealed     = [1, enc : bstr 32, ct : bstr]           (ct ≤ SEALED_BYTES_MAX)
//! info       = "tally/v1/sealed" ‖ kind                (kind: 1 sync upload, 2 redemption)
//! aad        = the recipient key's id (SealingKey::id)
//! SealingKey = [1, X25519 public key : bstr 32, root signature]
//! ```
//!
//! The recipient key is signed by the root, so a DCP cannot substitute its
//! own key and read what it forwards.

use alloc::vec::Vec;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};

use crate::codec::{Cbor, CodecError, Reader, Writer};
use crate::crypto::{Entropy, Hash32, PublicKey, SecretKey, Signature, tagged_hash};

/// Largest ciphertext accepted: the sealed object (encapsulated key and
/// CBOR heads included) then fits in a device request's sealed field
/// ([`crate::dcp::SEALED_UPLOAD_BYTES_MAX`]).
pub const SEALED_BYTES_MAX: usize = (4 << 20) - 64;

const VERSION: u64 = 1;

pub use crate::dcp::SealedKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    Decode(CodecError),
    /// Wrong key, wrong kind, or modified ciphertext.
    Open,
    /// The sealing key's root signature does not verify.
    BadSignature,
    InvalidKey,
}

impl core::fmt::Display for SealError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SealError::Decode(e) => write!(f, "malformed sealed upload: {e}"),
            SealError::Open => {
                f.write_str("sealed upload does not open (wrong key, kind or modified)")
            }
            SealError::BadSignature => f.write_str("sealing key is not signed by the root"),
            SealError::InvalidKey => f.write_str("invalid sealing key"),
        }
    }
}

impl From<CodecError> for SealError {
    fn from(e: CodecError) -> Self {
        SealError::Decode(e)
    }
}

/// Settlement's public sealing key, signed by the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealingKey {
    pub key: [u8; 32],
    pub signature: Signature,
}

impl SealingKey {
    fn message(key: &[u8; 32]) -> Hash32 {
        tagged_hash(b"tally/v1/sealing-key", &[key])
    }
    pub fn sign(root: &SecretKey, key: [u8; 32]) -> SealingKey {
        crate::crypto::infallible(Self::try_sign(root, key))
    }
    /// [`SealingKey::sign`] by any [`crate::crypto::Signer`] (the root in
    /// an HSM).
    pub fn try_sign<S: crate::crypto::Signer + ?Sized>(
        root: &S,
        key: [u8; 32],
    ) -> Result<SealingKey, S::Error> {
        Ok(SealingKey {
            key,
            signature: root.try_sign(&Self::message(&key).0)?,
        })
    }
    /// Checks the root's signature and that the key is a valid X25519 key.
    pub fn verify(&self, root: &PublicKey) -> Result<(), SealError> {
        crate::crypto::verify(root, &Self::message(&self.key).0, &self.signature)
            .map_err(|_| SealError::BadSignature)?;
        <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&self.key)
            .map_err(|_| SealError::InvalidKey)?;
        Ok(())
    }
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/sealing-key-id", &[&self.key])
    }
}

impl Cbor for SealingKey {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(VERSION);
        w.bytes(&self.key);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        r.version(VERSION as u8)?;
        Ok(SealingKey {
            key: r.bytes_array()?,
            signature: Signature::read(r)?,
        })
    }
}

/// Settlement's private sealing key, derived from a 32-byte seed
/// (RFC 9180 DeriveKeyPair).
pub struct OpeningKey {
    secret: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl OpeningKey {
    pub fn from_seed(seed: &[u8; 32]) -> OpeningKey {
        let (secret, public) = X25519HkdfSha256::derive_keypair(seed);
        let mut p = [0u8; 32];
        p.copy_from_slice(&public.to_bytes());
        OpeningKey { secret, public: p }
    }
    pub fn public(&self) -> [u8; 32] {
        self.public
    }
    /// A secret derived from this key for `label`, which only the key's
    /// holder can compute: settlement keys its sample of packages whose
    /// proofs it verifies with it (decision 0028, "Session 13"), so a
    /// device cannot tell which packages are picked and a package is
    /// picked again when it comes back.
    pub fn derive(&self, label: &[u8]) -> Hash32 {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&self.secret.to_bytes());
        tagged_hash(b"tally/v1/opening-key-derive", &[label, &secret[..]])
    }
    /// The HPKE private key (the audit seal of confidential records is
    /// opened with it, under its own `info` and aad: SPEC §4.9.3).
    #[cfg(feature = "confidential")]
    pub(crate) fn hpke_secret(&self) -> &<X25519HkdfSha256 as hpke::Kem>::PrivateKey {
        &self.secret
    }
    fn aad(&self) -> Hash32 {
        tagged_hash(b"tally/v1/sealing-key-id", &[&self.public])
    }
    /// Opens `sealed` (the CBOR `Sealed`) of `kind`.
    pub fn open(&self, kind: SealedKind, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let s = Sealed::from_cbor(sealed)?;
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&s.enc)
            .map_err(|_| SealError::Open)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            &info(kind),
            &s.ct,
            &self.aad().0,
        )
        .map_err(|_| SealError::Open)
    }
}

fn info(kind: SealedKind) -> [u8; 16] {
    let mut i = *b"tally/v1/sealed\0";
    i[15] = kind as u8;
    i
}

struct Sealed {
    enc: [u8; 32],
    ct: Vec<u8>,
}

impl Cbor for Sealed {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(VERSION);
        w.bytes(&self.enc);
        w.bytes(&self.ct);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        r.version(VERSION as u8)?;
        Ok(Sealed {
            enc: r.bytes_array()?,
            ct: r.bytes_max(SEALED_BYTES_MAX)?.to_vec(),
        })
    }
}

/// Seals `plaintext` of `kind` to `to` (whose root signature the caller
/// has checked with [`SealingKey::verify`]). Fresh ephemeral key per call.
pub fn seal(
    to: &SealingKey,
    kind: SealedKind,
    plaintext: &[u8],
    rng: &mut dyn Entropy,
) -> Result<Vec<u8>, SealError> {
    if plaintext.len() + 16 > SEALED_BYTES_MAX {
        return Err(SealError::Decode(CodecError::TooLong));
    }
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&to.key)
        .map_err(|_| SealError::InvalidKey)?;
    let mut rng = crate::crypto::EntropyRng(rng);
    let (enc, ct) =
        hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeS::Base,
            &pk,
            &info(kind),
            plaintext,
            &to.id().0,
            &mut rng,
        )
        .map_err(|_| SealError::InvalidKey)?;
    let mut e = [0u8; 32];
    e.copy_from_slice(&enc.to_bytes());
    Ok(Sealed { enc: e, ct }.to_cbor())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Suite;
    use crate::testkit::TestEntropy;

    fn setup() -> (SecretKey, OpeningKey, SealingKey) {
        let root = SecretKey::from_seed(Suite::Ed25519, &[7; 32]).unwrap();
        let ok = OpeningKey::from_seed(&[9; 32]);
        let sk = SealingKey::sign(&root, ok.public());
        (root, ok, sk)
    }

    #[test]
    fn seal_open_roundtrip_and_kind_binding() {
        let (root, ok, sk) = setup();
        sk.verify(&root.public()).unwrap();
        let mut rng = TestEntropy::new(b"seal");
        let s1 = seal(&sk, SealedKind::SyncUpload, b"history", &mut rng).unwrap();
        let s2 = seal(&sk, SealedKind::SyncUpload, b"history", &mut rng).unwrap();
        assert_ne!(s1, s2, "fresh ephemeral key per seal");
        assert_eq!(ok.open(SealedKind::SyncUpload, &s1).unwrap(), b"history");
        assert_eq!(ok.open(SealedKind::Redemption, &s1), Err(SealError::Open));
        let other = OpeningKey::from_seed(&[10; 32]);
        assert_eq!(
            other.open(SealedKind::SyncUpload, &s1),
            Err(SealError::Open)
        );
        // Flip each byte of the ciphertext part: never opens.
        for i in (s1.len() - 20)..s1.len() {
            let mut t = s1.clone();
            t[i] ^= 1;
            assert!(ok.open(SealedKind::SyncUpload, &t).is_err());
        }
        assert!(matches!(
            ok.open(SealedKind::SyncUpload, &[0x83, 1]),
            Err(SealError::Decode(_))
        ));
    }

    #[test]
    fn sealing_key_needs_the_root() {
        let (_root, ok, mut sk) = setup();
        let other = SecretKey::from_seed(Suite::Ed25519, &[8; 32]).unwrap();
        assert_eq!(sk.verify(&other.public()), Err(SealError::BadSignature));
        sk.key[0] ^= 1;
        assert_ne!(sk.key, ok.public());
        let root = SecretKey::from_seed(Suite::Ed25519, &[7; 32]).unwrap();
        assert_eq!(sk.verify(&root.public()), Err(SealError::BadSignature));
        let back = SealingKey::from_cbor(&SealingKey::sign(&root, ok.public()).to_cbor()).unwrap();
        back.verify(&root.public()).unwrap();
    }
}
