//! The MDS outbox: what the central bank queues for the MDS in the same
//! transaction as a settlement, and its encoding.

use std::collections::BTreeMap;

use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::{Epoch, Hash32, Record};
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
///
/// As stored, `record` may instead be a reference to a record settlement
/// stored in the same transaction: a 33-byte string, the record's kind
/// (0 Issue, registered in `issued`; 1 Transfer, in `settled_records`)
/// then its id ([`OutboxRecord::Stored`]). A sync request's row is that
/// slim (decision 0013, session 9): no record encoded twice on the
/// request's path. The row is made whole again when the MDS fetches it
/// ([`expand_row`]); what the MDS receives is always records.
pub(crate) fn encode_ingest(records: &[IngestRecord]) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(records.len());
    for r in records {
        write_entry(
            &mut w,
            EntryRef {
                record: RecordRef::Record(&r.record),
                epoch: r.epoch,
                verdict: r.verdict,
                output_classes: &r.output_classes,
                offline_epochs: r.offline_epochs,
                unacknowledged: r.unacknowledged,
                values: None,
            },
        );
    }
    w.into_bytes()
}

/// A record as an outbox row holds it.
// Most entries of a sync request's row are references; the few records
// in full (refused ones) are moved in once, not copied around.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutboxRecord {
    /// The record itself (refused, or queued outside a sync request).
    Record(Record),
    /// A record stored by settlement, by kind (an Issue or a Transfer)
    /// and id.
    Stored { issue: bool, id: Hash32 },
}

/// One entry of an outbox row, with its record by reference or in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxEntry {
    pub record: OutboxRecord,
    pub epoch: Epoch,
    pub verdict: Verdict,
    pub output_classes: Vec<u8>,
    pub offline_epochs: Option<u32>,
    pub unacknowledged: bool,
    /// A confidential stored record's opened amounts (a record in full
    /// carries them in its outputs).
    pub values: Option<Vec<u64>>,
}

enum RecordRef<'a> {
    Record(&'a Record),
    Stored { issue: bool, id: &'a Hash32 },
}

struct EntryRef<'a> {
    record: RecordRef<'a>,
    epoch: Epoch,
    verdict: Verdict,
    output_classes: &'a [u8],
    offline_epochs: Option<u32>,
    unacknowledged: bool,
    values: Option<&'a [u64]>,
}

/// Length of a stored record's reference: kind, id.
const STORED_REF_LEN: usize = 33;

fn write_entry(w: &mut Writer, e: EntryRef<'_>) {
    // A record in full carries its opened amounts in its outputs.
    let values: Option<Vec<u64>> = match &e.record {
        RecordRef::Record(r) if r.is_confidential() => Some(
            e.values
                .map(<[u64]>::to_vec)
                .unwrap_or_else(|| r.outputs().iter().map(|o| o.value.0).collect()),
        ),
        RecordRef::Record(_) => None,
        RecordRef::Stored { .. } => e.values.map(<[u64]>::to_vec),
    };
    w.array(if values.is_some() { 7 } else { 6 });
    match e.record {
        RecordRef::Record(r) => r.write(w),
        RecordRef::Stored { issue, id } => {
            let mut b = [0u8; STORED_REF_LEN];
            b[0] = u8::from(!issue);
            b[1..].copy_from_slice(&id.0);
            w.bytes(&b);
        }
    }
    w.u64(u64::from(e.epoch));
    w.u64(match e.verdict {
        Verdict::Verified => 0,
        Verdict::Refused(c) => u64::from(c),
    });
    w.bytes(e.output_classes);
    w.u64(e.offline_epochs.map(|e| u64::from(e) + 1).unwrap_or(0));
    w.bool(e.unacknowledged);
    if let Some(values) = values {
        w.array(values.len());
        for v in values {
            w.u64(v);
        }
    }
}

/// An outbox row as stored (records by reference or in full).
pub(crate) fn encode_outbox(entries: &[OutboxEntry]) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(entries.len());
    for e in entries {
        write_entry(
            &mut w,
            EntryRef {
                record: match &e.record {
                    OutboxRecord::Record(r) => RecordRef::Record(r),
                    OutboxRecord::Stored { issue, id } => RecordRef::Stored { issue: *issue, id },
                },
                epoch: e.epoch,
                verdict: e.verdict,
                output_classes: &e.output_classes,
                offline_epochs: e.offline_epochs,
                unacknowledged: e.unacknowledged,
                values: e.values.as_deref(),
            },
        );
    }
    w.into_bytes()
}

/// An outbox row as stored: its entries, records by reference or in full.
pub(crate) fn decode_outbox(bytes: &[u8]) -> Result<Vec<OutboxEntry>, CodecError> {
    let mut r = Reader::new(bytes);
    let n = r.array_max(1 << 20)?;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let fields = r.array_max(7)?;
        // CBOR major type 2 (a byte string): a reference.
        let stored = matches!(r.input().get(r.position()), Some(b) if b >> 5 == 2);
        let record = if stored {
            let b: [u8; STORED_REF_LEN] = r.bytes_array()?;
            let issue = match b[0] {
                0 => true,
                1 => false,
                _ => return Err(CodecError::UnknownCode),
            };
            let mut id = [0u8; 32];
            id.copy_from_slice(&b[1..]);
            OutboxRecord::Stored {
                issue,
                id: Hash32(id),
            }
        } else {
            let record = Record::read(&mut r)?;
            if fields != 6 + usize::from(record.is_confidential()) {
                return Err(CodecError::Malformed);
            }
            OutboxRecord::Record(record)
        };
        if fields != 6 && fields != 7 {
            return Err(CodecError::Malformed);
        }
        let epoch = r.u32()?;
        let verdict = match r.u16()? {
            0 => Verdict::Verified,
            c => Verdict::Refused(c),
        };
        let output_classes = r.bytes_max(256)?.to_vec();
        let offline_epochs = match r.u64()? {
            0 => None,
            e => Some(u32::try_from(e - 1).map_err(|_| CodecError::Malformed)?),
        };
        let unacknowledged = r.bool()?;
        let values = if fields == 7 {
            let n = r.array_max(tally_core::record::RECORD_OUTPUTS_MAX)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(r.u64()?);
            }
            Some(v)
        } else {
            None
        };
        out.push(OutboxEntry {
            record,
            epoch,
            verdict,
            output_classes,
            offline_epochs,
            unacknowledged,
            values,
        });
    }
    if r.position() != bytes.len() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(out)
}

/// An entry with its record in full as an [`IngestRecord`]: the opened
/// amounts of a confidential record set on its outputs.
fn ingest_record(record: Record, e: OutboxEntry) -> Result<IngestRecord, CodecError> {
    let mut record = record;
    if record.is_confidential() != e.values.is_some() {
        return Err(CodecError::Malformed);
    }
    if let Some(values) = &e.values {
        let outputs = match &mut record {
            Record::Issue(i) => &mut i.outputs,
            Record::Transfer(t) => &mut t.outputs,
        };
        if values.len() != outputs.len() {
            return Err(CodecError::Malformed);
        }
        for (o, v) in outputs.iter_mut().zip(values) {
            o.value = tally_core::Amount(*v);
        }
    }
    let mut ir = IngestRecord::new(record, e.epoch, e.verdict);
    ir.output_classes = e.output_classes;
    ir.offline_epochs = e.offline_epochs;
    ir.unacknowledged = e.unacknowledged;
    Ok(ir)
}

/// What the MDS receives: every record in full (a stored reference is
/// [`CodecError::Malformed`] here; [`expand_row`] resolves them first).
pub(crate) fn decode_ingest(bytes: &[u8]) -> Result<Vec<IngestRecord>, CodecError> {
    decode_outbox(bytes)?
        .into_iter()
        .map(|e| match e.record.clone() {
            OutboxRecord::Record(r) => ingest_record(r, e),
            OutboxRecord::Stored { .. } => Err(CodecError::Malformed),
        })
        .collect()
}

/// The references among outbox rows (`bodies`): the Issues' ids and the
/// Transfers' ids. A body that does not decode has none.
pub(crate) fn stored_refs(bodies: &[&[u8]]) -> (Vec<Hash32>, Vec<Hash32>) {
    let (mut issues, mut transfers) = (Vec::new(), Vec::new());
    for b in bodies {
        for e in decode_outbox(b).unwrap_or_default() {
            match e.record {
                OutboxRecord::Stored { issue: true, id } => issues.push(id),
                OutboxRecord::Stored { issue: false, id } => transfers.push(id),
                OutboxRecord::Record(_) => {}
            }
        }
    }
    issues.sort_unstable();
    issues.dedup();
    transfers.sort_unstable();
    transfers.dedup();
    (issues, transfers)
}

/// A stored row made whole: each reference replaced by the record's
/// stored body (`issues`, `transfers`: bodies by id). A row without
/// references is returned as it is. A row whose reference cannot be
/// resolved (its record pruned past the horizon before the MDS fetched
/// it) or that does not decode is returned as it is too: the MDS cannot
/// decode it and sets it aside with an alert, so nothing is lost
/// silently.
pub(crate) fn expand_row(
    body: &[u8],
    issues: &BTreeMap<Hash32, Vec<u8>>,
    transfers: &BTreeMap<Hash32, Vec<u8>>,
) -> Vec<u8> {
    let Ok(entries) = decode_outbox(body) else {
        return body.to_vec();
    };
    if entries
        .iter()
        .all(|e| matches!(e.record, OutboxRecord::Record(_)))
    {
        return body.to_vec();
    }
    let whole: Result<Vec<IngestRecord>, CodecError> = entries
        .into_iter()
        .map(|e| {
            let record = match &e.record {
                OutboxRecord::Record(r) => r.clone(),
                OutboxRecord::Stored { issue: true, id } => Record::Issue(
                    tally_core::Issue::from_cbor(issues.get(id).ok_or(CodecError::Malformed)?)?,
                ),
                OutboxRecord::Stored { issue: false, id } => {
                    Record::Transfer(tally_core::Transfer::from_cbor(
                        transfers.get(id).ok_or(CodecError::Malformed)?,
                    )?)
                }
            };
            if let OutboxRecord::Stored { id, .. } = &e.record
                && record.id() != *id
            {
                return Err(CodecError::Malformed);
            }
            ingest_record(record, e)
        })
        .collect();
    match whole {
        Ok(records) => encode_ingest(&records),
        Err(_) => body.to_vec(),
    }
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

    fn stored(r: &Record, unacknowledged: bool) -> OutboxEntry {
        OutboxEntry {
            record: OutboxRecord::Stored {
                issue: matches!(r, Record::Issue(_)),
                id: r.id(),
            },
            epoch: 5,
            verdict: Verdict::Verified,
            output_classes: vec![2],
            offline_epochs: unacknowledged.then_some(3),
            unacknowledged,
            values: None,
        }
    }

    /// A slim row (records by id) is made whole from the stored bodies
    /// into exactly what a row with the records in full would be.
    #[test]
    fn a_slim_row_expands_to_the_row_in_full() {
        let issue = record(1);
        let refused = record(2);
        let mut slim = vec![stored(&issue, false)];
        slim.push(OutboxEntry {
            record: OutboxRecord::Record(refused.clone()),
            epoch: 5,
            verdict: Verdict::Refused(2201),
            output_classes: Vec::new(),
            offline_epochs: None,
            unacknowledged: false,
            values: None,
        });
        slim.push(stored(&issue, true));
        let body = encode_outbox(&slim);
        assert_eq!(decode_outbox(&body).expect("decodes"), slim);
        assert_eq!(
            decode_ingest(&body).err(),
            Some(CodecError::Malformed),
            "the MDS never takes a reference for a record"
        );
        let (issues, transfers) = stored_refs(&[&body]);
        assert_eq!(issues, vec![issue.id()]);
        assert!(transfers.is_empty());
        let Record::Issue(i) = &issue else {
            unreachable!()
        };
        let bodies = BTreeMap::from([(issue.id(), i.to_cbor())]);
        let whole = expand_row(&body, &bodies, &BTreeMap::new());
        let mut a = IngestRecord::new(issue.clone(), 5, Verdict::Verified);
        a.output_classes = vec![2];
        let b = IngestRecord::new(refused, 5, Verdict::Refused(2201));
        let mut c = a.clone();
        c.offline_epochs = Some(3);
        c.unacknowledged = true;
        assert_eq!(whole, encode_ingest(&[a, b, c]));
        // A row in full is passed on as it is.
        assert_eq!(expand_row(&whole, &bodies, &BTreeMap::new()), whole);
    }

    /// A reference that cannot be resolved (pruned, or a body that is not
    /// the record named) leaves the row as stored: the MDS cannot decode
    /// it and sets it aside with an alert, nothing is dropped silently.
    #[test]
    fn an_unresolved_reference_leaves_the_row_for_the_mds_to_set_aside() {
        let issue = record(1);
        let body = encode_outbox(&[stored(&issue, false)]);
        assert_eq!(expand_row(&body, &BTreeMap::new(), &BTreeMap::new()), body);
        let Record::Issue(other) = record(9) else {
            unreachable!()
        };
        let wrong = BTreeMap::from([(issue.id(), other.to_cbor())]);
        assert_eq!(expand_row(&body, &wrong, &BTreeMap::new()), body);
        assert!(decode_ingest(&body).is_err());
        // A reference of an unknown kind does not decode.
        let mut bad = body.clone();
        let at = bad
            .windows(2)
            .position(|w| w == [0x58, 33])
            .expect("the reference's head");
        bad[at + 2] = 7;
        assert_eq!(decode_outbox(&bad).err(), Some(CodecError::UnknownCode));
        for n in 0..body.len() {
            assert!(decode_outbox(&body[..n]).is_err(), "{n} bytes decoded");
        }
    }
}
