//! The MDS as a consumer of the central bank's outbox (issue 11, item 1):
//! settled records reach the MDS after the settlement commit, through the
//! outbox, pulled by the MDS — in the central bank's process (a background
//! task) or in its own (`tally mds`, over mutual TLS with the `mds` role)
//! — never on a device's request path.
//!
//! Ingestion is idempotent, so a crash between ingesting and acknowledging
//! only replays. A row the MDS refuses (it does not decode, or a record of
//! it cannot be ingested) is set aside in the MDS with an alert and the
//! feed goes on: no record from a device can stop it.

use tally_core::Epoch;
use tally_core::codec::{CodecError, Reader, Writer};
use tally_mds::{Mds, MdsError};

use crate::error::BackofficeError;
use crate::outbox::{decode_ingest, encode_ingest};

/// Rows handed out per pull.
pub const OUTBOX_BATCH_MAX: usize = 64;
/// Largest outbox row body a consumer accepts (a sync upload's records).
pub const OUTBOX_ROW_BYTES_MAX: usize = 8 << 20;

/// One outbox row: its key and its records (`encode_ingest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub op: Vec<u8>,
    pub body: Vec<u8>,
}

/// Where the MDS pulls settled records from.
pub trait Outbox {
    /// The oldest rows (at most [`OUTBOX_BATCH_MAX`]) and the current
    /// epoch (for alerts raised while ingesting them).
    fn fetch(&self) -> Result<(Epoch, Vec<OutboxRow>), BackofficeError>;
    /// Removes rows the MDS ingested.
    fn ack(&self, ops: &[Vec<u8>]) -> Result<(), BackofficeError>;
}

/// An answer to a fetch on the wire: `[epoch, [[op, body], …]]`.
pub fn encode_fetch(epoch: Epoch, rows: &[OutboxRow]) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(2);
    w.u64(u64::from(epoch));
    w.array(rows.len());
    for r in rows {
        w.array(2);
        w.bytes(&r.op);
        w.bytes(&r.body);
    }
    w.into_bytes()
}

pub fn decode_fetch(bytes: &[u8]) -> Result<(Epoch, Vec<OutboxRow>), CodecError> {
    let mut r = Reader::new(bytes);
    r.array(2)?;
    let epoch = r.u32()?;
    let n = r.array_max(OUTBOX_BATCH_MAX)?;
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        r.array(2)?;
        rows.push(OutboxRow {
            op: r.bytes_max(64)?.to_vec(),
            body: r.bytes_max(OUTBOX_ROW_BYTES_MAX)?.to_vec(),
        });
    }
    if r.position() != bytes.len() {
        return Err(CodecError::TrailingBytes);
    }
    if encode_fetch(epoch, &rows) != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok((epoch, rows))
}

/// An acknowledgement on the wire: `[op, …]`.
pub fn encode_ack(ops: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(ops.len());
    for o in ops {
        w.bytes(o);
    }
    w.into_bytes()
}

pub fn decode_ack(bytes: &[u8]) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut r = Reader::new(bytes);
    let n = r.array_max(OUTBOX_BATCH_MAX)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        ops.push(r.bytes_max(64)?.to_vec());
    }
    if r.position() != bytes.len() {
        return Err(CodecError::TrailingBytes);
    }
    if encode_ack(&ops) != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(ops)
}

/// Pulls every waiting row into `mds`; returns how many were ingested.
/// A failure of the MDS's store or of the link stops the pull (the rows
/// stay for the next one).
pub fn pump(outbox: &dyn Outbox, mds: &Mds) -> Result<usize, BackofficeError> {
    let mut done = 0;
    loop {
        let (epoch, rows) = outbox.fetch()?;
        if rows.is_empty() {
            return Ok(done);
        }
        let mut ops = Vec::with_capacity(rows.len());
        for row in rows {
            ingest_row(mds, &row.body, epoch)?;
            ops.push(row.op);
        }
        done += ops.len();
        outbox.ack(&ops)?;
    }
}

/// Ingests one outbox row. What the MDS refuses for the row's content is
/// set aside with an [`tally_mds::AlertKind::IngestionFailed`] alert: the
/// whole row if it does not decode (code 101), else record by record.
/// `Err` only for failures of the MDS itself (its store), which a later
/// pull retries.
pub fn ingest_row(mds: &Mds, body: &[u8], epoch: Epoch) -> Result<(), MdsError> {
    let batch = match decode_ingest(body) {
        Ok(b) => b,
        Err(e) => {
            let code = BackofficeError::Decode(e).code();
            let a = mds.set_aside(body, code, epoch)?;
            tracing::error!(
                alert = a.id,
                code,
                "MDS outbox row does not decode; set aside"
            );
            return Ok(());
        }
    };
    for chunk in batch.chunks(tally_mds::INGEST_BATCH_RECORDS_MAX) {
        match mds.ingest(chunk) {
            Ok(_) => {}
            Err(e) if !e.is_content_fault() => return Err(e),
            Err(_) => {
                // Parents come before children, so a child of a record
                // set aside fails (unknown input) and follows it.
                for r in chunk {
                    match mds.ingest(std::slice::from_ref(r)) {
                        Ok(_) => {}
                        Err(e) if !e.is_content_fault() => return Err(e),
                        Err(e) => {
                            let a = mds.set_aside(
                                &encode_ingest(std::slice::from_ref(r)),
                                e.code(),
                                epoch,
                            )?;
                            tracing::error!(alert = a.id, error = %e, "MDS record set aside");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
