//! The MDS outbox: what the central bank queues for the MDS in the same
//! transaction as a settlement, and its encoding.

use tally_core::Record;
use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_mds::{IngestRecord, Verdict};

/// The MDS outbox's backlog ([`CentralBank::mds_outbox`](crate::CentralBank::mds_outbox)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Rows waiting for the MDS.
    pub pending: u64,
    /// Age of the oldest waiting row (0 when none, or only rows queued
    /// before queue times were kept).
    pub oldest_age_seconds: u64,
    /// Rows (or records) the MDS set aside so far, each with an alert.
    pub set_aside: u64,
}

/// Wall-clock seconds, for the outbox's queue times only (monitoring;
/// nothing the protocol decides depends on it).
pub(crate) fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Outbox body: `[[record, epoch, verdict (0 verified | code), classes bstr,
/// offline_epochs + 1 (0 unknown), unacknowledged], …]`; a confidential
/// record has a seventh element, `[value, …]`: its outputs' amounts as
/// settlement opened them from the audit seal (the record itself carries
/// commitments), so the MDS sees every amount as it does for clear
/// records. The outbox never leaves the central bank's side.
pub(crate) fn encode_ingest(records: &[IngestRecord]) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(records.len());
    for r in records {
        let confidential = r.record.is_confidential();
        w.array(if confidential { 7 } else { 6 });
        r.record.write(&mut w);
        w.u64(u64::from(r.epoch));
        w.u64(match r.verdict {
            Verdict::Verified => 0,
            Verdict::Refused(c) => u64::from(c),
        });
        w.bytes(&r.output_classes);
        w.u64(r.offline_epochs.map(|e| u64::from(e) + 1).unwrap_or(0));
        w.bool(r.unacknowledged);
        if confidential {
            let outputs = r.record.outputs();
            w.array(outputs.len());
            for o in outputs {
                w.u64(o.value.0);
            }
        }
    }
    w.into_bytes()
}

pub(crate) fn decode_ingest(bytes: &[u8]) -> Result<Vec<IngestRecord>, CodecError> {
    let mut r = Reader::new(bytes);
    let n = r.array_max(1 << 20)?;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let fields = r.array_max(7)?;
        let record = Record::read(&mut r)?;
        if fields != 6 + usize::from(record.is_confidential()) {
            return Err(CodecError::Malformed);
        }
        let epoch = r.u32()?;
        let verdict = match r.u16()? {
            0 => Verdict::Verified,
            c => Verdict::Refused(c),
        };
        let mut ir = IngestRecord::new(record, epoch, verdict);
        ir.output_classes = r.bytes_max(256)?.to_vec();
        ir.offline_epochs = match r.u64()? {
            0 => None,
            e => Some(u32::try_from(e - 1).map_err(|_| CodecError::Malformed)?),
        };
        ir.unacknowledged = r.bool()?;
        if fields == 7 {
            let n = r.array_max(tally_core::record::RECORD_OUTPUTS_MAX)?;
            let outputs = match &mut ir.record {
                Record::Issue(i) => &mut i.outputs,
                Record::Transfer(t) => &mut t.outputs,
            };
            if n != outputs.len() {
                return Err(CodecError::Malformed);
            }
            for o in outputs.iter_mut() {
                o.value = tally_core::Amount(r.u64()?);
            }
        }
        out.push(ir);
    }
    if r.position() != bytes.len() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tally_core::{Amount, Hash32, Issue, Output, SecretKey, Suite};

    use super::*;

    fn record(serial: u64) -> Record {
        let owner = SecretKey::from_seed(Suite::Ed25519, &[7; 32]).expect("any seed");
        Record::Issue(Issue {
            issuer: Hash32([2; 32]),
            serial,
            expiry_epoch: 60,
            outputs: vec![Output {
                value: Amount(100),
                owner: owner.public(),
            }],
            signature: owner.sign(b"not checked here"),
            confidential: None,
        })
    }

    #[test]
    fn an_outbox_body_decodes_to_what_was_queued() {
        let mut refused = IngestRecord::new(record(2), 4, Verdict::Refused(2201));
        refused.output_classes = vec![1, 3];
        refused.offline_epochs = Some(0);
        refused.unacknowledged = true;
        let records = vec![IngestRecord::new(record(1), 3, Verdict::Verified), refused];
        let body = encode_ingest(&records);
        let back = decode_ingest(&body).expect("decodes");
        assert_eq!(back.len(), 2);
        for (a, b) in records.iter().zip(&back) {
            assert_eq!(a.record, b.record);
            assert_eq!(a.epoch, b.epoch);
            assert_eq!(a.verdict, b.verdict);
            assert_eq!(a.output_classes, b.output_classes);
            assert_eq!(a.offline_epochs, b.offline_epochs);
            assert_eq!(a.unacknowledged, b.unacknowledged);
        }
        assert_eq!(encode_ingest(&back), body);
    }

    #[test]
    fn a_truncated_or_extended_outbox_body_is_refused() {
        let body = encode_ingest(&[IngestRecord::new(record(1), 3, Verdict::Verified)]);
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(
            decode_ingest(&longer).err(),
            Some(CodecError::TrailingBytes)
        );
        for n in 0..body.len() {
            assert!(decode_ingest(&body[..n]).is_err(), "{n} bytes decoded");
        }
    }
}
