//! The central bank's signed answer to a DCP's request.

use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::tagged_hash;
use tally_core::dcp::UPLOAD_PACKAGES_MAX;
use tally_core::{Hash32, Issue, PublicKey, Signature};

use crate::BackofficeError;
use crate::keys::{KeyError, NodeSigner};

/// What the central bank answers a DCP for one request: a result signed
/// by the settlement key, plus the tokens it registered.
/// Wire (version 2): `[2, op, settled, refused, value, double_spends,
/// [Issue], balance, transfer (bstr 0|32), [[transfer id, amount]],
/// signature]`; version 1 (stored before the parties were split) has no
/// deliveries and ten elements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettlementResult {
    /// The request this answers.
    pub op: Hash32,
    /// Packages settled, and refused (failed verification).
    pub settled: u32,
    pub refused: u32,
    /// Value settled or moved (redemption: the amount redeemed).
    pub value: u64,
    pub double_spends: u32,
    /// Tokens registered: the load's, the renewal's, the delivered ones.
    pub issues: Vec<Issue>,
    /// Unused since customers' accounts are at their DCP (0).
    pub balance: u64,
    /// Redemption: the id of the settled transfer.
    pub transfer: Option<Hash32>,
    /// Sync: what waits in the device's mailbox (transfer id, amount).
    pub deliveries: Vec<(Hash32, u64)>,
}

impl SettlementResult {
    /// The body of wire `version` (1: results stored before version 2,
    /// without deliveries), without its array head.
    fn write_body(&self, w: &mut Writer, version: u8) {
        w.u64(u64::from(version));
        self.op.write(w);
        w.u64(u64::from(self.settled));
        w.u64(u64::from(self.refused));
        w.u64(self.value);
        w.u64(u64::from(self.double_spends));
        w.array(self.issues.len());
        for i in &self.issues {
            i.write(w);
        }
        w.u64(self.balance);
        match &self.transfer {
            Some(t) => w.bytes(&t.0),
            None => w.bytes(&[]),
        }
        if version >= 2 {
            w.array(self.deliveries.len());
            for (t, a) in &self.deliveries {
                w.array(2);
                t.write(w);
                w.u64(*a);
            }
        }
    }
    /// Elements of the body of wire `version`.
    fn body_len(version: u8) -> usize {
        if version == 1 { 9 } else { 10 }
    }
    fn message(&self, version: u8) -> Hash32 {
        let mut w = Writer::new();
        w.array(Self::body_len(version));
        self.write_body(&mut w, version);
        tagged_hash(b"tally/v1/settlement-result", &[&w.into_bytes()])
    }
    pub(crate) fn sign(&self, key: &NodeSigner) -> Result<Vec<u8>, KeyError> {
        let mut w = Writer::new();
        w.array(Self::body_len(2) + 1);
        self.write_body(&mut w, 2);
        key.try_sign(&self.message(2).0)?.write(&mut w);
        Ok(w.into_bytes())
    }
    /// Decodes a signed result and checks it answers `op` under the
    /// settlement key (which the root certified), or under the root itself:
    /// results stored before the settlement key existed were signed by the
    /// root, and a retried request gets its stored result back.
    pub fn open(
        bytes: &[u8],
        settlement: &PublicKey,
        root: &PublicKey,
        op: &Hash32,
    ) -> Result<SettlementResult, BackofficeError> {
        let mut r = Reader::new(bytes);
        let res = (|| -> Result<(SettlementResult, Signature, u8), CodecError> {
            let version = match r.array_max(11)? {
                10 => {
                    r.version(1)?;
                    1
                }
                11 => {
                    r.version(2)?;
                    2
                }
                _ => return Err(CodecError::Malformed),
            };
            let op = Hash32::read(&mut r)?;
            let settled = r.u32()?;
            let refused = r.u32()?;
            let value = r.u64()?;
            let double_spends = r.u32()?;
            let n = r.array_max(UPLOAD_PACKAGES_MAX + 1)?;
            let mut issues = Vec::with_capacity(n);
            for _ in 0..n {
                issues.push(Issue::read(&mut r)?);
            }
            let balance = r.u64()?;
            let t = r.bytes_max(32)?;
            let transfer = match t.len() {
                0 => None,
                32 => Some(Hash32(t.try_into().map_err(|_| CodecError::Malformed)?)),
                _ => return Err(CodecError::Malformed),
            };
            let mut deliveries = Vec::new();
            if version == 2 {
                let n = r.array_max(UPLOAD_PACKAGES_MAX)?;
                for _ in 0..n {
                    r.array(2)?;
                    deliveries.push((Hash32::read(&mut r)?, r.u64()?));
                }
            }
            let sig = Signature::read(&mut r)?;
            if r.position() != bytes.len() {
                return Err(CodecError::TrailingBytes);
            }
            Ok((
                SettlementResult {
                    op,
                    settled,
                    refused,
                    value,
                    double_spends,
                    issues,
                    balance,
                    transfer,
                    deliveries,
                },
                sig,
                version,
            ))
        })();
        let (res, sig, version) = res.map_err(|_| BackofficeError::BadSettlementResult)?;
        // Canonical only (SPEC §2.1): one encoding per result.
        let mut w = Writer::new();
        w.array(Self::body_len(version) + 1);
        res.write_body(&mut w, version);
        sig.write(&mut w);
        if w.into_bytes() != bytes {
            return Err(BackofficeError::BadSettlementResult);
        }
        let msg = res.message(version);
        let signed = tally_core::crypto::verify(settlement, &msg.0, &sig).is_ok()
            || tally_core::crypto::verify(root, &msg.0, &sig).is_ok();
        if &res.op != op || !signed {
            return Err(BackofficeError::BadSettlementResult);
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tally_core::{Amount, Output, SecretKey, Suite};

    use super::*;
    use crate::keys::{NodeSigner, SoftwareSigner};

    fn key(label: u8) -> Arc<NodeSigner> {
        let k = SecretKey::from_seed(Suite::Ed25519, &[label; 32]).expect("any seed");
        Arc::new(SoftwareSigner::new(k))
    }

    fn result() -> SettlementResult {
        let owner = SecretKey::from_seed(Suite::Ed25519, &[9; 32]).expect("any seed");
        SettlementResult {
            op: Hash32([1; 32]),
            settled: 2,
            refused: 1,
            value: 700,
            double_spends: 1,
            issues: vec![Issue {
                issuer: Hash32([2; 32]),
                serial: 5,
                expiry_epoch: 60,
                outputs: vec![Output {
                    value: Amount(700),
                    owner: owner.public(),
                }],
                signature: owner.sign(b"not checked here"),
                confidential: None,
            }],
            balance: 0,
            transfer: Some(Hash32([3; 32])),
            deliveries: vec![(Hash32([4; 32]), 250)],
        }
    }

    #[test]
    fn a_signed_result_opens_under_the_settlement_key_or_the_root() {
        let (settlement, root) = (key(1), key(2));
        let res = result();
        let signed = res.sign(&*settlement).expect("software key signs");
        let opened = SettlementResult::open(
            &signed,
            &settlement.public_key(),
            &root.public_key(),
            &res.op,
        );
        assert_eq!(opened, Ok(res.clone()));
        // Results stored before the settlement key existed: signed by the root.
        let by_root = res.sign(&*root).expect("software key signs");
        let opened = SettlementResult::open(
            &by_root,
            &settlement.public_key(),
            &root.public_key(),
            &res.op,
        );
        assert_eq!(opened, Ok(res));
    }

    #[test]
    fn a_result_for_another_op_by_another_key_or_altered_is_refused() {
        let (settlement, root, stranger) = (key(1), key(2), key(3));
        let res = result();
        let open = |bytes: &[u8], op: &Hash32| {
            SettlementResult::open(bytes, &settlement.public_key(), &root.public_key(), op)
        };
        let signed = res.sign(&*settlement).expect("software key signs");
        let refused = Err(BackofficeError::BadSettlementResult);
        assert_eq!(open(&signed, &Hash32([9; 32])), refused);
        let forged = res.sign(&*stranger).expect("software key signs");
        assert_eq!(open(&forged, &res.op), refused);
        let mut trailing = signed.clone();
        trailing.push(0);
        assert_eq!(open(&trailing, &res.op), refused);
        // Every single-byte change is refused (undecodable, non-canonical,
        // or no longer signed).
        for i in 0..signed.len() {
            let mut changed = signed.clone();
            changed[i] ^= 0x01;
            assert_eq!(open(&changed, &res.op), refused, "byte {i}");
        }
    }
}
