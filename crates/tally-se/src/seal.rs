//! Sealing of the persistent state at rest.
//!
//! A real SE keeps its NVM inside the tamper-resistant boundary, so the
//! bare-metal build stores the state in the clear (`Sealing::None`). The
//! std file adapter stands in for an SE whose storage an attacker can read
//! and edit: there the state is sealed with XChaCha20-Poly1305 under a
//! device key, with a fresh random 24-byte nonce per commit (random, not a
//! counter, because a torn commit may be retried with the same sequence
//! number). Any edit fails authentication and the SE refuses to boot.
//! Copying the file and the key together clones the SE: that is the
//! cloned-SE attack the back office must catch.

use alloc::vec::Vec;

#[cfg(feature = "aead")]
use chacha20poly1305::aead::Aead;
#[cfg(feature = "aead")]
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use tally_core::crypto::Entropy;

#[cfg(feature = "aead")]
const NONCE_LEN: usize = 24;
/// Associated data: binds the ciphertext to this format.
#[cfg(feature = "aead")]
const AAD: &[u8] = b"tally/v1/se-state";

#[derive(Clone)]
pub enum Sealing {
    /// Storage inside the SE boundary.
    None,
    /// Storage an attacker can read: sealed with this device key
    /// (feature `aead`).
    #[cfg(feature = "aead")]
    Aead([u8; 32]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealError;

impl Sealing {
    pub fn seal(&self, plain: &[u8], rng: &mut dyn Entropy) -> Vec<u8> {
        #[cfg(not(feature = "aead"))]
        let _ = rng;
        match self {
            Sealing::None => plain.to_vec(),
            #[cfg(feature = "aead")]
            Sealing::Aead(key) => {
                let cipher = XChaCha20Poly1305::new(&(*key).into());
                let mut nonce = [0u8; NONCE_LEN];
                rng.fill(&mut nonce);
                let n = XNonce::from(nonce);
                let payload = chacha20poly1305::aead::Payload {
                    msg: plain,
                    aad: AAD,
                };
                // Encryption into a Vec only fails on absurd lengths (> 256 GiB).
                let ct = cipher.encrypt(&n, payload).unwrap_or_default();
                let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
                out
            }
        }
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        match self {
            Sealing::None => Ok(sealed.to_vec()),
            #[cfg(feature = "aead")]
            Sealing::Aead(key) => {
                if sealed.len() < NONCE_LEN {
                    return Err(SealError);
                }
                let (nonce, ct) = sealed.split_at(NONCE_LEN);
                let mut nb = [0u8; NONCE_LEN];
                nb.copy_from_slice(nonce);
                let cipher = XChaCha20Poly1305::new(&(*key).into());
                let payload = chacha20poly1305::aead::Payload { msg: ct, aad: AAD };
                cipher
                    .decrypt(&XNonce::from(nb), payload)
                    .map_err(|_| SealError)
            }
        }
    }
}

impl Sealing {
    /// Whether the state is stored as it is (no seal): then a compaction
    /// can write it in pieces and boot can decode the payload it read,
    /// with no sealed copy beside the plain one (decision 0024).
    pub fn is_clear(&self) -> bool {
        matches!(self, Sealing::None)
    }

    /// [`Sealing::seal`] of bytes the caller gives up: in the clear, the
    /// same buffer (no copy).
    pub fn seal_owned(&self, plain: Vec<u8>, rng: &mut dyn Entropy) -> Vec<u8> {
        if self.is_clear() {
            return plain;
        }
        self.seal(&plain, rng)
    }

    /// [`Sealing::open`] of bytes the caller gives up: in the clear, the
    /// same buffer (no copy).
    pub fn open_owned(&self, sealed: Vec<u8>) -> Result<Vec<u8>, SealError> {
        if self.is_clear() {
            return Ok(sealed);
        }
        self.open(&sealed)
    }
}

#[cfg(all(test, feature = "aead"))]
mod tests {
    use super::*;
    use tally_core::testkit::TestEntropy;

    #[test]
    fn aead_round_trip_and_tamper() {
        let s = Sealing::Aead([7; 32]);
        let mut rng = TestEntropy::new(b"seal");
        let sealed = s.seal(b"state bytes", &mut rng);
        assert_eq!(s.open(&sealed).unwrap(), b"state bytes");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert_eq!(s.open(&t), Err(SealError), "flip at {i} undetected");
        }
        assert_eq!(Sealing::Aead([8; 32]).open(&sealed), Err(SealError));
        assert_eq!(s.open(&sealed[..10]), Err(SealError));
    }
}
