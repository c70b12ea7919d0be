//! The development escrow key, whose secret is public.

use tally_core::Hash32;
use tally_core::crypto::tagged_hash;
use tally_core::escrow::{IdPoint, JointKey};

/// The supervisors' joint escrow key of development nodes: its secret is
/// public (`x = H("tally/v1/dev-escrow-secret")`), so escrows made with it
/// protect nothing. Production nodes take the key from the supervisors'
/// ceremony (`tally supervisor keygen`, `tally node --escrow-key`).
pub fn development_escrow_key() -> JointKey {
    use curve25519_dalek::{RistrettoPoint, Scalar};
    let x = Scalar::from_bytes_mod_order(tagged_hash(b"tally/v1/dev-escrow-secret", &[]).0);
    JointKey::from_bytes(&RistrettoPoint::mul_base(&x).compress().to_bytes())
        .expect("a non-zero multiple of the base point")
}

/// Opens an escrow ciphertext (`C1`, `C2`) with the development secret:
/// the digest of its identity point, or `None` if `joint` is not the
/// development key (then only the supervisors can open it).
pub(crate) fn development_open(
    joint: &JointKey,
    random: &curve25519_dalek::RistrettoPoint,
    blinded: &curve25519_dalek::RistrettoPoint,
) -> Option<Hash32> {
    use curve25519_dalek::Scalar;
    if joint.to_bytes() != development_escrow_key().to_bytes() {
        return None;
    }
    let x = Scalar::from_bytes_mod_order(tagged_hash(b"tally/v1/dev-escrow-secret", &[]).0);
    Some(IdPoint::from_point(&(blinded - random * x)).digest())
}
