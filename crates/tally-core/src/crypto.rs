//! Hashes, signature suites, keys and signature verification.
//!
//! Every key and signature carries its suite. Ed25519 verification uses the
//! cofactored equation `[8](sB − R − kA) = 0` (the ZIP-215 rule), for single
//! signatures and for batches alike, so that "is this signature valid" has
//! one answer wherever it is asked (payee, settlement, monitoring) no matter
//! how signatures are grouped. ed25519-dalek's own `verify_strict` is
//! cofactorless and its `verify_batch` uses random coefficients, which can
//! disagree on signatures crafted with small-order components; see
//! docs/decisions/0002-cofactored-ed25519.md. The group arithmetic is
//! curve25519-dalek's; nothing here implements field or curve operations.

use alloc::vec::Vec;
use core::fmt;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::codec::{Cbor, CodecError, Reader, Writer};

/// A SHA-256 digest; ids of records, keys and certificates.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Cbor for Hash32 {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Hash32(r.bytes_array()?))
    }
}

/// SHA-256 over a domain tag and the parts, each part length-prefixed so
/// that no two inputs collide by re-splitting.
pub fn tagged_hash(tag: &[u8], parts: &[&[u8]]) -> Hash32 {
    let mut h = Sha256::new();
    h.update((tag.len() as u32).to_be_bytes());
    h.update(tag);
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    Hash32(h.finalize().into())
}

/// Signature suite codes as they appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Suite {
    Ed25519 = 1,
    EcdsaP256Sha256 = 2,
}

impl Suite {
    pub fn from_code(c: u8) -> Result<Suite, CodecError> {
        match c {
            1 => Ok(Suite::Ed25519),
            2 => Ok(Suite::EcdsaP256Sha256),
            _ => Err(CodecError::UnknownCode),
        }
    }
    /// Whether this build can sign and verify in the suite. Every build
    /// decodes both suites (the wire format does not depend on the
    /// build); a device built with tally-core's `ed25519-only` feature has
    /// no P-256 code and refuses P-256 keys and signatures with
    /// [`SigError::UnsupportedSuite`].
    pub const fn is_supported(self) -> bool {
        match self {
            Suite::Ed25519 => true,
            Suite::EcdsaP256Sha256 => !cfg!(feature = "ed25519-only"),
        }
    }
    fn key_len(self) -> usize {
        match self {
            Suite::Ed25519 => 32,
            Suite::EcdsaP256Sha256 => 33,
        }
    }
}

/// A public key with its suite. Wire form: one byte string, the suite code
/// followed by the key (Ed25519: 32 bytes; P-256: 33-byte compressed SEC1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey {
    suite: Suite,
    bytes: [u8; 33],
}

impl PublicKey {
    pub fn new(suite: Suite, key: &[u8]) -> Result<PublicKey, CodecError> {
        if key.len() != suite.key_len() {
            return Err(CodecError::Malformed);
        }
        let mut bytes = [0u8; 33];
        bytes[..key.len()].copy_from_slice(key);
        Ok(PublicKey { suite, bytes })
    }
    pub fn suite(&self) -> Suite {
        self.suite
    }
    pub fn key_bytes(&self) -> &[u8] {
        &self.bytes[..self.suite.key_len()]
    }
    /// `KeyId = H("tally/v1/key", suite || key)`.
    pub fn id(&self) -> Hash32 {
        tagged_hash(b"tally/v1/key", &[&[self.suite as u8], self.key_bytes()])
    }
    fn wire(&self, out: &mut [u8; 34]) -> usize {
        out[0] = self.suite as u8;
        let k = self.key_bytes();
        out[1..1 + k.len()].copy_from_slice(k);
        1 + k.len()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:", self.suite)?;
        for b in &self.key_bytes()[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl Cbor for PublicKey {
    fn write(&self, w: &mut Writer) {
        let mut buf = [0u8; 34];
        let n = self.wire(&mut buf);
        w.bytes(&buf[..n]);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let b = r.bytes_max(34)?;
        let (&code, key) = b.split_first().ok_or(CodecError::Malformed)?;
        PublicKey::new(Suite::from_code(code)?, key)
    }
}

/// A signature with its suite. Wire form: one byte string, the suite code
/// followed by 64 bytes (Ed25519 `R || s`; P-256 `r || s`, low-S).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    suite: Suite,
    bytes: [u8; 64],
}

impl Signature {
    pub fn new(suite: Suite, bytes: [u8; 64]) -> Signature {
        Signature { suite, bytes }
    }
    pub fn suite(&self) -> Suite {
        self.suite
    }
    pub fn bytes(&self) -> &[u8; 64] {
        &self.bytes
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig({:?})", self.suite)
    }
}

impl Cbor for Signature {
    fn write(&self, w: &mut Writer) {
        let mut buf = [0u8; 65];
        buf[0] = self.suite as u8;
        buf[1..].copy_from_slice(&self.bytes);
        w.bytes(&buf);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let b: [u8; 65] = r.bytes_array()?;
        let suite = Suite::from_code(b[0])?;
        let mut bytes = [0u8; 64];
        bytes.copy_from_slice(&b[1..]);
        Ok(Signature { suite, bytes })
    }
}

/// Why a signature or key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigError {
    /// The signature's suite is not the key's suite.
    SuiteMismatch,
    /// The key is not a valid point, or is of small order.
    BadKey,
    /// The signature does not verify.
    BadSignature,
    /// The key's or signature's suite is not built into this device:
    /// P-256 under tally-core's `ed25519-only` feature (a confidential
    /// device build, decision 0027). Never returned otherwise.
    UnsupportedSuite,
}

/// A secret signing key. Lives inside the SE (and in test issuers); never
/// serialised onto the wire.
#[derive(Clone)]
pub enum SecretKey {
    Ed25519(Ed25519Secret),
    /// Absent from an `ed25519-only` build: no P-256 key can exist there,
    /// so signing and public-key derivation have no P-256 path at all.
    #[cfg(not(feature = "ed25519-only"))]
    P256(p256::ecdsa::SigningKey),
}

/// An Ed25519 signing key, kept expanded: the seed, ed25519-dalek's
/// expansion of it (clamped scalar and nonce prefix, RFC 8032 §5.1.5) and
/// the verifying key. Signing is ed25519-dalek's `hazmat::raw_sign` on
/// them: one base-point multiplication (for `R`). Deriving the public key
/// from the seed is another, which [`SecretKey::from_stored`] replaces by
/// decompressing the stored public key (a square root, far cheaper).
pub struct Ed25519Secret {
    seed: Zeroizing<[u8; 32]>,
    esk: ed25519_dalek::hazmat::ExpandedSecretKey,
    vk: ed25519_dalek::VerifyingKey,
}

impl Clone for Ed25519Secret {
    fn clone(&self) -> Self {
        Ed25519Secret {
            seed: self.seed.clone(),
            esk: ed25519_dalek::hazmat::ExpandedSecretKey {
                scalar: self.esk.scalar,
                hash_prefix: self.esk.hash_prefix,
            },
            vk: self.vk,
        }
    }
}

impl Ed25519Secret {
    /// SHA-512 of the seed, expanded (and clamped) by ed25519-dalek.
    /// `public`: the stored public key, which must belong to the seed;
    /// `None` derives it. `None` also if the stored bytes are not a point.
    fn expand(seed: &[u8; 32], public: Option<&[u8; 32]>) -> Option<Ed25519Secret> {
        let hash: Zeroizing<[u8; 64]> = Zeroizing::new(Sha512::digest(seed).into());
        let esk = ed25519_dalek::hazmat::ExpandedSecretKey::from_bytes(&hash);
        let vk = match public {
            Some(p) => match ed25519_dalek::VerifyingKey::from_bytes(p) {
                Ok(vk) => vk,
                Err(e) => {
                    // Forgotten, not dropped. ed25519-dalek boxes the
                    // cause as a `dyn core::error::Error` (the `signature`
                    // crate's `alloc` feature); dropping it calls through
                    // that vtable, which keeps the error's `Debug` and
                    // `Display` and with them `core::fmt`'s machinery in a
                    // firmware that formats nothing (6.6 KB of the
                    // Cortex-M4 payment firmware, decision 0022). Never
                    // used, the box is removed by the optimiser, allocation
                    // included; where it is not (a debug build), this path
                    // (a stored key that is not a point: a corrupt state,
                    // which the SE refuses) leaks one small box.
                    core::mem::forget(e);
                    return None;
                }
            },
            None => ed25519_dalek::VerifyingKey::from(EdwardsPoint::mul_base(&esk.scalar)),
        };
        Some(Ed25519Secret {
            seed: Zeroizing::new(*seed),
            esk,
            vk,
        })
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        ed25519_dalek::hazmat::raw_sign::<Sha512>(&self.esk, msg, &self.vk).to_bytes()
    }

    fn public(&self) -> [u8; 32] {
        self.vk.to_bytes()
    }
}

/// Randomness is injected: the SE passes its TRNG, tests a seeded source.
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);
}

/// A deterministic stream from a secret 32-byte seed: block `i` is
/// `H("tally/v1/seeded-stream", seed, i)` (SHA-256 as a PRF in counter
/// mode). For values a device must be able to make again from the same
/// secret inputs, such as the openings of a payment whose range proof is
/// made elsewhere (decision 0032); never for anything two different
/// messages could share.
pub struct SeededStream {
    seed: Zeroizing<[u8; 32]>,
    block: u64,
    buf: Zeroizing<[u8; 32]>,
    used: usize,
}

impl SeededStream {
    pub fn new(seed: [u8; 32]) -> SeededStream {
        SeededStream {
            seed: Zeroizing::new(seed),
            block: 0,
            buf: Zeroizing::new([0; 32]),
            used: 32,
        }
    }
}

impl Entropy for SeededStream {
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == 32 {
                let h = tagged_hash(
                    b"tally/v1/seeded-stream",
                    &[&self.seed[..], &self.block.to_be_bytes()],
                );
                *self.buf = h.0;
                self.block += 1;
                self.used = 0;
            }
            *b = self.buf[self.used];
            self.used += 1;
        }
    }
}

impl SecretKey {
    /// Deterministic key from a 32-byte seed. For P-256 the seed must be a
    /// valid scalar (non-zero, below the group order); `None` otherwise,
    /// and always `None` for P-256 in an `ed25519-only` build
    /// ([`SecretKey::try_from_seed`] says which).
    /// Computes the public key (an Ed25519 base-point multiplication).
    pub fn from_seed(suite: Suite, seed: &[u8; 32]) -> Option<SecretKey> {
        match suite {
            Suite::Ed25519 => Ed25519Secret::expand(seed, None).map(SecretKey::Ed25519),
            #[cfg(not(feature = "ed25519-only"))]
            Suite::EcdsaP256Sha256 => p256::ecdsa::SigningKey::from_slice(seed)
                .ok()
                .map(SecretKey::P256),
            #[cfg(feature = "ed25519-only")]
            Suite::EcdsaP256Sha256 => None,
        }
    }

    /// [`SecretKey::from_seed`] with the reason for a refusal:
    /// [`SigError::BadKey`] for a seed that is not a valid P-256 scalar,
    /// [`SigError::UnsupportedSuite`] for P-256 in an `ed25519-only` build.
    pub fn try_from_seed(suite: Suite, seed: &[u8; 32]) -> Result<SecretKey, SigError> {
        if !suite.is_supported() {
            return Err(SigError::UnsupportedSuite);
        }
        SecretKey::from_seed(suite, seed).ok_or(SigError::BadKey)
    }

    /// A key from its seed and the public key stored with it, which must be
    /// the one [`SecretKey::from_seed`] derived from that seed: for
    /// Ed25519 it is taken as is (hashed into every signature), saving the
    /// base-point multiplication that derives it. Signing under a public key
    /// that does not belong to the seed would make signatures that reveal
    /// the secret scalar (two signatures of one message under two claimed
    /// keys), so this is only for the SE's own sealed state, where seed and
    /// public key were written together by the SE and an attacker who could
    /// change one could read the other. `None` if the suite differs from the
    /// key's or the seed is invalid, and for P-256 in an `ed25519-only`
    /// build.
    pub fn from_stored(seed: &[u8; 32], public: &PublicKey) -> Option<SecretKey> {
        match public.suite {
            Suite::Ed25519 => {
                let mut p = [0u8; 32];
                p.copy_from_slice(public.key_bytes());
                let k = Ed25519Secret::expand(seed, Some(&p))?;
                debug_assert_eq!(
                    EdwardsPoint::mul_base(&k.esk.scalar).compress().to_bytes(),
                    p,
                    "stored public key belongs to the seed"
                );
                Some(SecretKey::Ed25519(k))
            }
            // p256 derives the verifying key on construction either way
            // (and an `ed25519-only` build has none: `None`).
            Suite::EcdsaP256Sha256 => SecretKey::from_seed(Suite::EcdsaP256Sha256, seed),
        }
    }

    /// A fresh key from `rng`. [`SigError::UnsupportedSuite`] for a suite
    /// this build lacks (P-256 under `ed25519-only`), before drawing any
    /// randomness; otherwise it retries until the seed is a valid key and
    /// never fails.
    pub fn generate(suite: Suite, rng: &mut dyn Entropy) -> Result<SecretKey, SigError> {
        if !suite.is_supported() {
            return Err(SigError::UnsupportedSuite);
        }
        loop {
            let mut seed = [0u8; 32];
            rng.fill(&mut seed);
            if let Some(k) = SecretKey::from_seed(suite, &seed) {
                return Ok(k);
            }
        }
    }

    /// The 32-byte seed (for the SE's own sealed storage only).
    pub fn seed(&self) -> [u8; 32] {
        match self {
            SecretKey::Ed25519(k) => *k.seed,
            #[cfg(not(feature = "ed25519-only"))]
            SecretKey::P256(k) => k.to_bytes().into(),
        }
    }

    pub fn suite(&self) -> Suite {
        match self {
            SecretKey::Ed25519(_) => Suite::Ed25519,
            #[cfg(not(feature = "ed25519-only"))]
            SecretKey::P256(_) => Suite::EcdsaP256Sha256,
        }
    }

    pub fn public(&self) -> PublicKey {
        match self {
            SecretKey::Ed25519(k) => PublicKey {
                suite: Suite::Ed25519,
                bytes: pad33(&k.public()),
            },
            #[cfg(not(feature = "ed25519-only"))]
            SecretKey::P256(k) => {
                let p = k.verifying_key().to_sec1_point(true);
                let mut bytes = [0u8; 33];
                bytes.copy_from_slice(p.as_bytes());
                PublicKey {
                    suite: Suite::EcdsaP256Sha256,
                    bytes,
                }
            }
        }
    }

    /// Signs `msg`. Both suites are deterministic (RFC 8032; RFC 6979), so
    /// signing needs no randomness. P-256 signatures are normalised to low-S.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        match self {
            SecretKey::Ed25519(k) => Signature {
                suite: Suite::Ed25519,
                bytes: k.sign(msg),
            },
            #[cfg(not(feature = "ed25519-only"))]
            SecretKey::P256(k) => {
                use p256::ecdsa::signature::Signer as _;
                let s: p256::ecdsa::Signature = k.sign(msg);
                let s = s.normalize_s();
                let mut bytes = [0u8; 64];
                bytes.copy_from_slice(&s.to_bytes());
                Signature {
                    suite: Suite::EcdsaP256Sha256,
                    bytes,
                }
            }
        }
    }
}

/// Whatever signs with one long-lived key: a [`SecretKey`] in memory, or
/// (on the back office) a key file or an HSM behind the same calls, so the
/// constructors of signed objects (`try_sign`) need not know where the key
/// lives. A software key cannot fail (`Error = Infallible`); an HSM can.
pub trait Signer {
    type Error;
    /// The key signatures verify under (its suite travels with it).
    fn public_key(&self) -> PublicKey;
    /// Signs `msg` with the key's suite (Ed25519: RFC 8032 pure EdDSA;
    /// P-256: ECDSA over SHA-256, low-S).
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, Self::Error>;
}

impl Signer for SecretKey {
    type Error = core::convert::Infallible;
    fn public_key(&self) -> PublicKey {
        self.public()
    }
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, Self::Error> {
        Ok(self.sign(msg))
    }
}

/// Unwraps what a software key signed: its error type has no value.
pub fn infallible<T>(r: Result<T, core::convert::Infallible>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => match e {},
    }
}

fn pad33(k: &[u8; 32]) -> [u8; 33] {
    let mut b = [0u8; 33];
    b[..32].copy_from_slice(k);
    b
}

/// Ed25519 key as a curve point, refusing small-order keys.
fn ed25519_point(key: &PublicKey) -> Result<EdwardsPoint, SigError> {
    let mut kb = [0u8; 32];
    kb.copy_from_slice(key.key_bytes());
    let a = CompressedEdwardsY(kb)
        .decompress()
        .ok_or(SigError::BadKey)?;
    if a.is_small_order() {
        return Err(SigError::BadKey);
    }
    Ok(a)
}

struct EdParts {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
    a: EdwardsPoint,
}

fn ed25519_parts(
    key: &PublicKey,
    point: Option<&EdwardsPoint>,
    msg: &[u8],
    sig: &Signature,
) -> Result<EdParts, SigError> {
    let a = match point {
        Some(a) => *a,
        None => ed25519_point(key)?,
    };
    let mut rb = [0u8; 32];
    rb.copy_from_slice(&sig.bytes[..32]);
    let mut sb = [0u8; 32];
    sb.copy_from_slice(&sig.bytes[32..]);
    let r = CompressedEdwardsY(rb)
        .decompress()
        .ok_or(SigError::BadSignature)?;
    let s =
        Option::<Scalar>::from(Scalar::from_canonical_bytes(sb)).ok_or(SigError::BadSignature)?;
    let mut h = Sha512::new();
    h.update(rb);
    h.update(key.key_bytes());
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Ok(EdParts { r, s, k, a })
}

/// P-256 verification; [`SigError::UnsupportedSuite`] in an
/// `ed25519-only` build, which links no P-256 code.
#[cfg(feature = "ed25519-only")]
fn verify_p256(_: &PublicKey, _: &[u8], _: &Signature) -> Result<(), SigError> {
    Err(SigError::UnsupportedSuite)
}

#[cfg(not(feature = "ed25519-only"))]
fn verify_p256(key: &PublicKey, msg: &[u8], sig: &Signature) -> Result<(), SigError> {
    use p256::ecdsa::signature::Verifier as _;
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.key_bytes())
        .map_err(|_| SigError::BadKey)?;
    let s = p256::ecdsa::Signature::from_slice(&sig.bytes).map_err(|_| SigError::BadSignature)?;
    // Only low-S signatures are canonical.
    if s.normalize_s() != s {
        return Err(SigError::BadSignature);
    }
    vk.verify(msg, &s).map_err(|_| SigError::BadSignature)
}

/// Checks that `key` is usable (a valid, not small-order point; and of a
/// suite this build has: [`SigError::UnsupportedSuite`] otherwise).
pub fn check_key(key: &PublicKey) -> Result<(), SigError> {
    CheckedKey::new(key).map(|_| ())
}

/// A key that passed [`check_key`], kept with its decompressed curve point
/// (Ed25519), so that the signatures checked under it ([`KeyedSigCheck`])
/// do not decompress it again. Verification with it accepts exactly what
/// verification with the bare key accepts. Larger than a [`PublicKey`]
/// (the point is 160 bytes): for a verifier with memory to spare
/// (settlement), not for a device.
#[derive(Clone, Copy)]
pub struct CheckedKey {
    key: PublicKey,
    /// The Ed25519 point; `None` for P-256 (its library parses per check).
    point: Option<EdwardsPoint>,
}

impl CheckedKey {
    /// [`check_key`], keeping the point.
    pub fn new(key: &PublicKey) -> Result<CheckedKey, SigError> {
        let point = match key.suite {
            Suite::Ed25519 => Some(ed25519_point(key)?),
            #[cfg(not(feature = "ed25519-only"))]
            Suite::EcdsaP256Sha256 => {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(key.key_bytes())
                    .map_err(|_| SigError::BadKey)?;
                None
            }
            #[cfg(feature = "ed25519-only")]
            Suite::EcdsaP256Sha256 => return Err(SigError::UnsupportedSuite),
        };
        Ok(CheckedKey { key: *key, point })
    }
    pub fn key(&self) -> &PublicKey {
        &self.key
    }
}

impl fmt::Debug for CheckedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CheckedKey").field(&self.key).finish()
    }
}

/// Verifies one signature.
pub fn verify(key: &PublicKey, msg: &[u8], sig: &Signature) -> Result<(), SigError> {
    verify_at(key, None, msg, sig)
}

/// [`verify`] with the key's point when it is known already.
fn verify_at(
    key: &PublicKey,
    point: Option<&EdwardsPoint>,
    msg: &[u8],
    sig: &Signature,
) -> Result<(), SigError> {
    if key.suite != sig.suite {
        return Err(SigError::SuiteMismatch);
    }
    match key.suite {
        Suite::Ed25519 => {
            let p = ed25519_parts(key, point, msg, sig)?;
            // R' = s·B − k·A ; accept iff [8](R' − R) is the identity.
            let r2 = EdwardsPoint::vartime_double_scalar_mul_basepoint(
                &(Scalar::ZERO - p.k),
                &p.a,
                &p.s,
            );
            if (r2 - p.r).mul_by_cofactor().is_identity() {
                Ok(())
            } else {
                Err(SigError::BadSignature)
            }
        }
        Suite::EcdsaP256Sha256 => verify_p256(key, msg, sig),
    }
}

/// One signature to check: key, message, signature.
pub struct SigCheck<'a> {
    pub key: &'a PublicKey,
    pub msg: &'a [u8],
    pub sig: &'a Signature,
}

/// One signature to check under a [`CheckedKey`].
pub struct KeyedSigCheck<'a> {
    pub key: &'a CheckedKey,
    pub msg: &'a [u8],
    pub sig: &'a Signature,
}

/// What the batch verifier needs of one check, with or without the key's
/// point.
trait Check {
    fn key(&self) -> &PublicKey;
    fn point(&self) -> Option<&EdwardsPoint>;
    fn msg(&self) -> &[u8];
    fn sig(&self) -> &Signature;
    fn verify(&self) -> Result<(), SigError> {
        verify_at(self.key(), self.point(), self.msg(), self.sig())
    }
}

impl Check for SigCheck<'_> {
    fn key(&self) -> &PublicKey {
        self.key
    }
    fn point(&self) -> Option<&EdwardsPoint> {
        None
    }
    fn msg(&self) -> &[u8] {
        self.msg
    }
    fn sig(&self) -> &Signature {
        self.sig
    }
}

impl Check for KeyedSigCheck<'_> {
    fn key(&self) -> &PublicKey {
        &self.key.key
    }
    fn point(&self) -> Option<&EdwardsPoint> {
        self.key.point.as_ref()
    }
    fn msg(&self) -> &[u8] {
        self.msg
    }
    fn sig(&self) -> &Signature {
        self.sig
    }
}

/// Verifies many signatures. Ed25519 signatures are checked together with
/// one multiscalar multiplication (random linear combination, coefficients
/// derived by hashing every input, then the same cofactored equation as
/// [`verify`]); P-256 ones one by one. On failure returns the index of the
/// first bad signature, found by re-checking singly.
pub fn verify_many(checks: &[SigCheck<'_>]) -> Result<(), (usize, SigError)> {
    verify_many_bounded(checks, usize::MAX)
}

/// [`verify_many`] with at most `batch_max` Ed25519 signatures per
/// multiscalar multiplication. A batch's working memory grows with its
/// size (curve25519-dalek keeps a lookup table per point, two points per
/// signature: about 3 KB per signature on a 32-bit target), so a
/// memory-bounded device checks in small batches; `1` checks one by one
/// with no heap at all. Which signatures are accepted does not depend on
/// the batch size (the batch equation is the cofactored single equation
/// summed with random coefficients), nor does the number of signatures
/// checked; only time and memory do.
pub fn verify_many_bounded(
    checks: &[SigCheck<'_>],
    batch_max: usize,
) -> Result<(), (usize, SigError)> {
    verify_many_inner(checks, batch_max)
}

/// [`verify_many_bounded`] under keys checked before: no key is
/// decompressed again. Accepts exactly what [`verify_many_bounded`]
/// accepts for the same keys, messages and signatures.
pub fn verify_many_keyed_bounded(
    checks: &[KeyedSigCheck<'_>],
    batch_max: usize,
) -> Result<(), (usize, SigError)> {
    verify_many_inner(checks, batch_max)
}

fn verify_many_inner<C: Check>(checks: &[C], batch_max: usize) -> Result<(), (usize, SigError)> {
    let mut ed = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        if c.key().suite != c.sig().suite {
            return Err((i, SigError::SuiteMismatch));
        }
        match c.key().suite {
            Suite::Ed25519 => ed.push(i),
            Suite::EcdsaP256Sha256 => verify_p256(c.key(), c.msg(), c.sig()).map_err(|e| (i, e))?,
        }
    }
    for chunk in ed.chunks(batch_max.max(1)) {
        match chunk {
            [i] => checks[*i].verify().map_err(|e| (*i, e))?,
            _ => verify_ed25519_batch(checks, chunk)?,
        }
    }
    Ok(())
}

/// The Ed25519 checks `checks[i]` for `i` in `ed`, as one batch. Not
/// inlined: its frame is large and a caller checking one by one does not
/// need it on the stack.
#[inline(never)]
fn verify_ed25519_batch<C: Check>(checks: &[C], ed: &[usize]) -> Result<(), (usize, SigError)> {
    match ed.len() {
        0 => return Ok(()),
        1 => {
            return checks[ed[0]].verify().map_err(|e| (ed[0], e));
        }
        _ => {}
    }
    let mut parts = Vec::with_capacity(ed.len());
    let mut transcript = Sha512::new();
    transcript.update(b"tally/v1/ed25519-batch");
    for &i in ed {
        let c = &checks[i];
        parts.push(ed25519_parts(c.key(), c.point(), c.msg(), c.sig()).map_err(|e| (i, e))?);
        transcript.update(c.key().key_bytes());
        transcript.update(c.sig().bytes);
        transcript.update((c.msg().len() as u64).to_le_bytes());
        transcript.update(c.msg());
    }
    let seed: [u8; 64] = transcript.finalize().into();
    let mut scalars = Vec::with_capacity(2 * parts.len() + 1);
    let mut points = Vec::with_capacity(2 * parts.len() + 1);
    let mut b_coeff = Scalar::ZERO;
    // A key that signs several of the batch's messages (a DCP's: its
    // Issues and certificates) is one term of the sum, its coefficients
    // added: Σ c_j·A = (Σ c_j)·A, the same equation with fewer points.
    let mut key_term: crate::sorted::VecMap<&[u8], usize> = crate::sorted::VecMap::new();
    for (j, (p, &i)) in parts.iter().zip(ed).enumerate() {
        // z_j: 128-bit coefficient from the transcript, unknown to a signer
        // before all signatures are fixed.
        let mut h = Sha512::new();
        h.update(seed);
        h.update((j as u64).to_le_bytes());
        let d: [u8; 64] = h.finalize().into();
        let mut zb = [0u8; 32];
        zb[..16].copy_from_slice(&d[..16]);
        let z = Scalar::from_bytes_mod_order(zb);
        b_coeff += z * p.s;
        scalars.push(Scalar::ZERO - z);
        points.push(p.r);
        let c = Scalar::ZERO - z * p.k;
        let key = checks[i].key().key_bytes();
        match key_term.get(&key) {
            Some(&t) => scalars[t] += c,
            None => {
                key_term.insert(key, points.len());
                scalars.push(c);
                points.push(p.a);
            }
        }
    }
    scalars.push(b_coeff);
    points.push(ED25519_BASEPOINT_POINT);
    let sum = EdwardsPoint::vartime_multiscalar_mul(scalars.iter(), points.iter());
    if sum.mul_by_cofactor().is_identity() {
        return Ok(());
    }
    for &i in ed {
        checks[i].verify().map_err(|e| (i, e))?;
    }
    // The batch failed but every single check passed: cannot happen for the
    // cofactored equation except with negligible probability; refuse.
    Err((ed[0], SigError::BadSignature))
}

/// Adapts the injected [`Entropy`] to the `rand_core` 0.10 traits that
/// `elastic-elgamal` and `hpke` take.
pub struct EntropyRng<'a>(pub &'a mut dyn Entropy);

impl rand_core::TryRng for EntropyRng<'_> {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, core::convert::Infallible> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, core::convert::Infallible> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), core::convert::Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

// `Entropy` is the SE's TRNG or the OS generator: cryptographic by contract.
impl rand_core::TryCryptoRng for EntropyRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexb(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn rfc8032_test_vector_2() {
        // RFC 8032 §7.1 TEST 2 (one-byte message 0x72).
        let sk: [u8; 32] = hexb("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
            .try_into()
            .unwrap();
        let k = SecretKey::from_seed(Suite::Ed25519, &sk).unwrap();
        let pk = k.public();
        assert_eq!(
            pk.key_bytes(),
            &hexb("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")[..]
        );
        let sig = k.sign(&[0x72]);
        assert_eq!(
            &sig.bytes[..],
            &hexb(
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
            )[..]
        );
        assert_eq!(verify(&pk, &[0x72], &sig), Ok(()));
        assert_eq!(verify(&pk, &[0x73], &sig), Err(SigError::BadSignature));
    }

    /// A key signing several messages of one batch is one term of the
    /// batch equation: a forgery under it is still found, whichever of
    /// its messages it is, and under a key used once as well.
    #[test]
    fn a_key_shared_by_several_signatures_of_a_batch_still_catches_a_forgery() {
        let shared = SecretKey::from_seed(Suite::Ed25519, &[61; 32]).unwrap();
        let others: Vec<SecretKey> = (0..4u8)
            .map(|i| SecretKey::from_seed(Suite::Ed25519, &[70 + i; 32]).unwrap())
            .collect();
        // Signers: shared, other 0, shared, other 1, shared, other 2, shared, other 3.
        let signer = |i: usize| {
            if i.is_multiple_of(2) {
                &shared
            } else {
                &others[i / 2]
            }
        };
        let msgs: Vec<[u8; 32]> = (0..8u8).map(|i| [i ^ 0x5a; 32]).collect();
        let pubs: Vec<PublicKey> = (0..8).map(|i| signer(i).public()).collect();
        let good: Vec<Signature> = (0..8).map(|i| signer(i).sign(&msgs[i])).collect();
        let run = |sigs: &[Signature]| {
            let checks: Vec<SigCheck<'_>> = (0..8)
                .map(|i| SigCheck {
                    key: &pubs[i],
                    msg: &msgs[i],
                    sig: &sigs[i],
                })
                .collect();
            verify_many(&checks)
        };
        assert_eq!(run(&good), Ok(()));
        for forged in 0..8 {
            let mut sigs = good.clone();
            // A valid signature, but of another message.
            sigs[forged] = signer(forged).sign(b"another message");
            assert_eq!(run(&sigs), Err((forged, SigError::BadSignature)));
        }
        // Two signatures under the shared key swapped: each is valid for
        // the other's message, so the sum of their terms must not hide it.
        let mut sigs = good.clone();
        sigs.swap(0, 2);
        assert_eq!(run(&sigs), Err((0, SigError::BadSignature)));
    }

    /// Checks under keys checked before accept and refuse exactly what
    /// the same checks under the bare keys do, with the same index.
    #[test]
    fn keyed_checks_agree_with_bare_ones() {
        let keys: Vec<SecretKey> = (0..6u8)
            .map(|i| SecretKey::from_seed(Suite::Ed25519, &[i + 40; 32]).unwrap())
            .collect();
        let msgs: Vec<[u8; 32]> = (0..6u8).map(|i| [i; 32]).collect();
        let mut sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let pubs: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let checked: Vec<CheckedKey> = pubs.iter().map(|k| CheckedKey::new(k).unwrap()).collect();
        for round in 0..2 {
            let bare: Vec<SigCheck<'_>> = (0..6)
                .map(|i| SigCheck {
                    key: &pubs[i],
                    msg: &msgs[i],
                    sig: &sigs[i],
                })
                .collect();
            let keyed: Vec<KeyedSigCheck<'_>> = (0..6)
                .map(|i| KeyedSigCheck {
                    key: &checked[i],
                    msg: &msgs[i],
                    sig: &sigs[i],
                })
                .collect();
            for batch_max in [1, 4, usize::MAX] {
                let b = verify_many_bounded(&bare, batch_max);
                assert_eq!(verify_many_keyed_bounded(&keyed, batch_max), b);
                assert_eq!(b.is_ok(), round == 0);
            }
            // Round 1: signature 3 signed another message.
            sigs[3] = keys[3].sign(b"another message");
        }
        assert_eq!(
            verify_many_keyed_bounded(
                &(0..6)
                    .map(|i| KeyedSigCheck {
                        key: &checked[i],
                        msg: &msgs[i],
                        sig: &sigs[i],
                    })
                    .collect::<Vec<_>>(),
                usize::MAX
            ),
            Err((3, SigError::BadSignature))
        );
        // A small-order key is refused when checked, as by `check_key`.
        let mut y = [0u8; 32];
        y[0] = 1;
        let identity = PublicKey::new(Suite::Ed25519, &y).unwrap();
        assert_eq!(CheckedKey::new(&identity).err(), Some(SigError::BadKey));
        assert_eq!(check_key(&identity), Err(SigError::BadKey));
    }

    #[test]
    fn agrees_with_dalek_strict_on_honest_signatures() {
        use ed25519_dalek::Verifier as _;
        for i in 0..20u8 {
            let k = SecretKey::from_seed(Suite::Ed25519, &[i; 32]).unwrap();
            let msg = [i; 40];
            let sig = k.sign(&msg);
            assert_eq!(verify(&k.public(), &msg, &sig), Ok(()));
            let dk = ed25519_dalek::SigningKey::from_bytes(&[i; 32]);
            let ds = ed25519_dalek::Signature::from_bytes(sig.bytes());
            assert!(dk.verifying_key().verify_strict(&msg, &ds).is_ok());
            assert!(dk.verifying_key().verify(&msg, &ds).is_ok());
        }
    }

    #[test]
    fn expanded_signing_matches_dalek_and_stored_keys_sign_alike() {
        use ed25519_dalek::Signer as _;
        for i in 0..20u8 {
            let seed = [i.wrapping_mul(37).wrapping_add(1); 32];
            let k = SecretKey::from_seed(Suite::Ed25519, &seed).unwrap();
            let dk = ed25519_dalek::SigningKey::from_bytes(&seed);
            assert_eq!(k.public().key_bytes(), dk.verifying_key().as_bytes());
            assert_eq!(k.seed(), seed);
            let stored = SecretKey::from_stored(&seed, &k.public()).unwrap();
            assert_eq!(stored.public(), k.public());
            for len in [0usize, 1, 32, 100] {
                let msg: Vec<u8> = (0..len).map(|j| j as u8 ^ i).collect();
                let want = dk.sign(&msg).to_bytes();
                assert_eq!(k.sign(&msg).bytes(), &want);
                assert_eq!(stored.sign(&msg).bytes(), &want);
            }
        }
        #[cfg(not(feature = "ed25519-only"))]
        {
            let p = SecretKey::from_seed(Suite::EcdsaP256Sha256, &[5; 32]).unwrap();
            let stored = SecretKey::from_stored(&[5; 32], &p.public()).unwrap();
            assert_eq!(stored.public(), p.public());
            assert_eq!(stored.sign(b"m").bytes(), p.sign(b"m").bytes());
        }
    }

    /// A stored Ed25519 public key that is not a point gives no key
    /// (the error path that forgets ed25519-dalek's boxed error, decision
    /// 0022).
    #[test]
    fn stored_ed25519_key_must_be_a_point() {
        let seed = [3u8; 32];
        let good = SecretKey::from_seed(Suite::Ed25519, &seed)
            .unwrap()
            .public();
        assert!(SecretKey::from_stored(&seed, &good).is_some());
        let not_a_point = (2u8..)
            .map(|i| {
                let mut b = [0u8; 32];
                b[0] = i;
                b
            })
            .find(|b| CompressedEdwardsY(*b).decompress().is_none())
            .unwrap();
        let k = PublicKey::new(Suite::Ed25519, &not_a_point).unwrap();
        assert!(SecretKey::from_stored(&seed, &k).is_none());
    }

    #[cfg(not(feature = "ed25519-only"))]
    #[test]
    fn p256_sign_verify_low_s() {
        let k = SecretKey::from_seed(Suite::EcdsaP256Sha256, &[7; 32]).unwrap();
        let sig = k.sign(b"hello");
        assert_eq!(verify(&k.public(), b"hello", &sig), Ok(()));
        assert_eq!(
            verify(&k.public(), b"hellp", &sig),
            Err(SigError::BadSignature)
        );
        // The high-S twin of a valid signature is refused.
        let s = p256::ecdsa::Signature::from_slice(sig.bytes()).unwrap();
        let (r, sv) = s.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*sv).unwrap();
        let mut hb = [0u8; 64];
        hb.copy_from_slice(&high.to_bytes());
        assert_eq!(
            verify(
                &k.public(),
                b"hello",
                &Signature::new(Suite::EcdsaP256Sha256, hb)
            ),
            Err(SigError::BadSignature)
        );
    }

    #[cfg(not(feature = "ed25519-only"))]
    #[test]
    fn suite_mismatch() {
        let e = SecretKey::from_seed(Suite::Ed25519, &[1; 32]).unwrap();
        let p = SecretKey::from_seed(Suite::EcdsaP256Sha256, &[1; 32]).unwrap();
        let sig = p.sign(b"m");
        assert_eq!(
            verify(&e.public(), b"m", &sig),
            Err(SigError::SuiteMismatch)
        );
    }

    #[cfg(not(feature = "ed25519-only"))]
    #[test]
    fn batch_finds_the_bad_one() {
        let keys: Vec<SecretKey> = (0..6u8)
            .map(|i| {
                SecretKey::from_seed(
                    if i % 3 == 2 {
                        Suite::EcdsaP256Sha256
                    } else {
                        Suite::Ed25519
                    },
                    &[i + 1; 32],
                )
                .unwrap()
            })
            .collect();
        let pks: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let msgs: Vec<[u8; 8]> = (0..6u8).map(|i| [i; 8]).collect();
        let mut sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let checks = |sigs: &Vec<Signature>| -> Result<(), (usize, SigError)> {
            let c: Vec<SigCheck<'_>> = (0..6)
                .map(|i| SigCheck {
                    key: &pks[i],
                    msg: &msgs[i],
                    sig: &sigs[i],
                })
                .collect();
            verify_many(&c)
        };
        assert_eq!(checks(&sigs), Ok(()));
        sigs[4].bytes[40] ^= 1;
        assert_eq!(checks(&sigs), Err((4, SigError::BadSignature)));
        // Any batch size finds the same bad signature.
        for batch_max in [0, 1, 2, 3, 64] {
            let c: Vec<SigCheck<'_>> = (0..6)
                .map(|i| SigCheck {
                    key: &pks[i],
                    msg: &msgs[i],
                    sig: &sigs[i],
                })
                .collect();
            assert_eq!(
                verify_many_bounded(&c, batch_max),
                Err((4, SigError::BadSignature)),
                "batch_max {batch_max}"
            );
            assert_eq!(verify_many_bounded(&c[..4], batch_max), Ok(()));
        }
    }

    #[test]
    fn torsioned_r_is_judged_the_same_single_and_batched() {
        // A signer can add a small-order point T to R. The cofactored rule
        // accepts it; what matters is that single and batch agree.
        use curve25519_dalek::constants::EIGHT_TORSION;
        let k = SecretKey::from_seed(Suite::Ed25519, &[9; 32]).unwrap();
        let dk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let pk = k.public();
        let msg = b"torsion";
        // Build a signature with R = rB + T by hand (hazmat-free: from the
        // expanded secret scalar).
        let esk = ed25519_dalek::hazmat::ExpandedSecretKey::from(&dk.to_bytes());
        let r = Scalar::from_bytes_mod_order([3u8; 32]);
        let big_r = (r * ED25519_BASEPOINT_POINT) + EIGHT_TORSION[1];
        let rb = big_r.compress().to_bytes();
        let mut h = Sha512::new();
        h.update(rb);
        h.update(pk.key_bytes());
        h.update(msg);
        let kk = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = r + kk * esk.scalar;
        let mut sb = [0u8; 64];
        sb[..32].copy_from_slice(&rb);
        sb[32..].copy_from_slice(s.as_bytes());
        let sig = Signature::new(Suite::Ed25519, sb);
        let single = verify(&pk, msg, &sig);
        let other = k.sign(b"x");
        let batch = verify_many(&[
            SigCheck {
                key: &pk,
                msg,
                sig: &sig,
            },
            SigCheck {
                key: &pk,
                msg: b"x",
                sig: &other,
            },
        ]);
        assert_eq!(single.is_ok(), batch.is_ok());
        assert!(single.is_ok());
    }

    /// Without `ed25519-only` both suites are built; with it, everything
    /// P-256 is refused with `UnsupportedSuite` (never a panic) and Ed25519
    /// works as before, in the same batch too. The P-256 key and signature
    /// are made with the p256 crate directly (still a dependency there).
    #[test]
    fn p256_only_where_built() {
        use p256::ecdsa::signature::Signer as _;
        let sk = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let mut kb = [0u8; 33];
        kb.copy_from_slice(sk.verifying_key().to_sec1_point(true).as_bytes());
        let pk = PublicKey::new(Suite::EcdsaP256Sha256, &kb).unwrap();
        let s: p256::ecdsa::Signature = sk.sign(b"hello");
        let mut sb = [0u8; 64];
        sb.copy_from_slice(&s.normalize_s().to_bytes());
        let sig = Signature::new(Suite::EcdsaP256Sha256, sb);
        let ed = SecretKey::from_seed(Suite::Ed25519, &[7; 32]).unwrap();
        let ed_sig = ed.sign(b"hello");
        let ed_pk = ed.public();
        let checks = [
            SigCheck {
                key: &ed_pk,
                msg: b"hello",
                sig: &ed_sig,
            },
            SigCheck {
                key: &ed_pk,
                msg: b"hello",
                sig: &ed_sig,
            },
            SigCheck {
                key: &pk,
                msg: b"hello",
                sig: &sig,
            },
        ];
        let mut rng = FixedEntropy(0);
        if cfg!(feature = "ed25519-only") {
            assert!(!Suite::EcdsaP256Sha256.is_supported());
            assert_eq!(verify(&pk, b"hello", &sig), Err(SigError::UnsupportedSuite));
            assert_eq!(check_key(&pk), Err(SigError::UnsupportedSuite));
            assert_eq!(
                CheckedKey::new(&pk).map(|_| ()),
                Err(SigError::UnsupportedSuite)
            );
            assert_eq!(verify_many(&checks), Err((2, SigError::UnsupportedSuite)));
            for batch_max in [1, 2, 64] {
                assert_eq!(
                    verify_many_bounded(&checks, batch_max),
                    Err((2, SigError::UnsupportedSuite))
                );
            }
            assert_eq!(
                SecretKey::try_from_seed(Suite::EcdsaP256Sha256, &[7; 32]).map(|_| ()),
                Err(SigError::UnsupportedSuite)
            );
            assert!(SecretKey::from_seed(Suite::EcdsaP256Sha256, &[7; 32]).is_none());
            assert!(SecretKey::from_stored(&[7; 32], &pk).is_none());
            assert_eq!(
                SecretKey::generate(Suite::EcdsaP256Sha256, &mut rng).map(|_| ()),
                Err(SigError::UnsupportedSuite)
            );
            assert_eq!(rng.0, 0, "no randomness drawn for an unsupported suite");
        } else {
            assert!(Suite::EcdsaP256Sha256.is_supported());
            assert_eq!(verify(&pk, b"hello", &sig), Ok(()));
            assert_eq!(check_key(&pk), Ok(()));
            assert_eq!(verify_many(&checks), Ok(()));
            let k = SecretKey::try_from_seed(Suite::EcdsaP256Sha256, &[7; 32]).unwrap();
            assert_eq!(k.public(), pk);
            assert_eq!(k.sign(b"hello").bytes(), sig.bytes());
            // Not a scalar: refused as a bad key, not as a missing suite.
            assert_eq!(
                SecretKey::try_from_seed(Suite::EcdsaP256Sha256, &[0; 32]).map(|_| ()),
                Err(SigError::BadKey)
            );
            let g = SecretKey::generate(Suite::EcdsaP256Sha256, &mut rng).unwrap();
            assert_eq!(g.suite(), Suite::EcdsaP256Sha256);
        }
        // Ed25519 is unaffected either way.
        assert!(Suite::Ed25519.is_supported());
        assert_eq!(verify(&ed_pk, b"hello", &ed_sig), Ok(()));
        assert_eq!(verify_many_bounded(&checks[..2], 2), Ok(()));
        assert_eq!(
            verify(&ed_pk, b"hellp", &ed_sig),
            Err(SigError::BadSignature)
        );
        let g = SecretKey::generate(Suite::Ed25519, &mut rng).unwrap();
        assert_eq!(verify(&g.public(), b"m", &g.sign(b"m")), Ok(()));
        let stored = SecretKey::from_stored(&[7; 32], &ed_pk).unwrap();
        assert_eq!(stored.sign(b"hello").bytes(), ed_sig.bytes());
    }

    /// Counts the bytes it hands out (all 0x5a).
    struct FixedEntropy(usize);

    impl Entropy for FixedEntropy {
        fn fill(&mut self, buf: &mut [u8]) {
            buf.fill(0x5a);
            self.0 += buf.len();
        }
    }

    #[test]
    fn small_order_key_refused() {
        let pk = PublicKey::new(Suite::Ed25519, &[0u8; 32]).unwrap();
        // y = 0 is a point of order 4.
        assert_eq!(check_key(&pk), Err(SigError::BadKey));
    }
}
