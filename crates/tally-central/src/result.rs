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
    fn write_body(&self, w: &mut Writer) {
        w.u64(2);
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
        w.array(self.deliveries.len());
        for (t, a) in &self.deliveries {
            w.array(2);
            t.write(w);
            w.u64(*a);
        }
    }
    /// Version 1's body (verifying results stored before version 2).
    fn write_body_v1(&self, w: &mut Writer) {
        w.u64(1);
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
    }
    fn message(&self, version: u8) -> Hash32 {
        let mut w = Writer::new();
        if version == 1 {
            w.array(9);
            self.write_body_v1(&mut w);
        } else {
            w.array(10);
            self.write_body(&mut w);
        }
        tagged_hash(b"tally/v1/settlement-result", &[&w.into_bytes()])
    }
    pub(crate) fn sign(&self, key: &NodeSigner) -> Result<Vec<u8>, KeyError> {
        let mut w = Writer::new();
        w.array(11);
        self.write_body(&mut w);
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
        if version == 1 {
            w.array(10);
            res.write_body_v1(&mut w);
        } else {
            w.array(11);
            res.write_body(&mut w);
        }
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
