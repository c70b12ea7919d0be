//! Payer-side assembly of transfers and packages.

use alloc::vec::Vec;

use crate::cert::PseudonymCertificate;
use crate::crypto::{PublicKey, SecretKey, Signature};
use crate::protocol::Package;
use crate::record::{OutPoint, Output, Record, Transfer, distinct_signers};

/// Certificates of every key that signs a transfer in `ancestry` or `t`,
/// each once, in order of first use. `find` maps a key to its certificate.
pub fn needed_certificates<'c>(
    ancestry: &[Record],
    t: &Transfer,
    owner_of: &dyn Fn(&OutPoint) -> Option<PublicKey>,
    find: &dyn Fn(&PublicKey) -> Option<&'c PseudonymCertificate>,
) -> Option<Vec<PseudonymCertificate>> {
    let mut keys: Vec<PublicKey> = Vec::new();
    let transfers = ancestry
        .iter()
        .filter_map(|r| match r {
            Record::Transfer(t) => Some(t),
            Record::Issue(_) => None,
        })
        .chain(core::iter::once(t));
    for tr in transfers {
        for op in &tr.inputs {
            let k = owner_of(op)?;
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys.iter().map(|k| find(k).cloned()).collect()
}

/// Signs a transfer: one signature per distinct input owner, in order of
/// first appearance. `owners[i]` is the owner of `inputs[i]`; `key_for`
/// returns the secret key of an owner.
pub fn sign_transfer(
    inputs: Vec<OutPoint>,
    owners: &[PublicKey],
    outputs: Vec<Output>,
    nonce: [u8; 16],
    counter: u64,
    key_for: &dyn Fn(&PublicKey) -> Option<SecretKey>,
) -> Option<Transfer> {
    sign_transfer_with(inputs, owners, outputs, nonce, counter, None, key_for)
}

/// [`sign_transfer`] with a stream part (an OPEN's terms, a claim or a
/// refund: decision 0020) in the signed body.
pub fn sign_transfer_with(
    inputs: Vec<OutPoint>,
    owners: &[PublicKey],
    outputs: Vec<Output>,
    nonce: [u8; 16],
    counter: u64,
    stream: Option<crate::stream::StreamPart>,
    key_for: &dyn Fn(&PublicKey) -> Option<SecretKey>,
) -> Option<Transfer> {
    let mut t = Transfer {
        inputs,
        outputs,
        nonce,
        counter,
        signatures: Vec::new(),
        confidential: None,
        stream: stream.map(alloc::boxed::Box::new),
    };
    let id = t.id();
    let mut sigs: Vec<Signature> = Vec::new();
    for k in distinct_signers(owners.iter().copied()) {
        sigs.push(key_for(&k)?.sign(&id.0));
    }
    t.signatures = sigs;
    Some(t)
}

/// Builds a package: the transfer, its merged ancestry and the needed
/// certificates.
pub fn build_package(
    transfer: Transfer,
    ancestry: Vec<Record>,
    certificates: Vec<PseudonymCertificate>,
) -> Package {
    Package {
        transfer,
        ancestry,
        certificates,
    }
}
