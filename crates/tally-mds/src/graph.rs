//! The token graph's hot state and the ingest of one batch.
//!
//! The store is the source of truth and is written append-only (records,
//! outputs, consumptions, alerts, counters). Detection needs random lookups
//! by hash — "who consumed this output?" — and a hash-keyed B-tree turns
//! each into a random page read and write, which bounds SQLite at a few
//! thousand records per second. So the lookups go to maps held in memory
//! ([`HotState`]), rebuilt from the store by [`HotState::load`] whenever the
//! MDS opens: a crash loses nothing that committed. A batch changes the
//! maps in place and logs each change ([`Undo`]); if its transaction does
//! not commit (an error, or a conflict before a retry) the log puts them
//! back, so the maps always match what committed. One MDS process writes
//! a given store.
//!
//! Each record is one row of `mds_records`, its edges packed in two BLOB
//! columns so an ingest writes one row per record (not ~4.3):
//! * `outputs`: per output, in order, [`OUTPUT_BYTES`] bytes — owner key
//!   id (32) ‖ value (u64 big-endian, 8) ‖ device class (1) ‖ redeemed
//!   (0 or 1); all outputs share the row's `depth`;
//! * `inputs`: per consumed output, in order, [`INPUT_BYTES`] bytes —
//!   record id (32) ‖ output index (1). Consumptions are ordered by the
//!   consumer's `seq`, so the first consumer of an output is the one with
//!   the lowest `seq`.
//!
//! Both are empty for a counterfeit record and NULL for rows written by
//! schema version 1, whose edges stay in `mds_outputs` / `mds_spends`.
//!
//! A valid record that opens or closes a payment stream (decision 0020)
//! also fills `stream` ([`PackedStream`]): an OPEN's terms — tag 0 ‖
//! stream output index (1) ‖ refund key id (32) ‖ price (u64 BE, 8) ‖
//! ticks (u32 BE, 4) — or a close's ticks — tag 1 (claim) or 2 (refund)
//! ‖ ticks (u32 BE, 4). Rebuilding the maps from it gives back the payer
//! half `(open, 0x80 | i)` as an output and the first close of each half.
//!
//! Stream accounting (holdings, conservation):
//! * the OPEN is an ordinary payment: its stream output (value `V = N·p`)
//!   counts in the payee's holdings once. Its payer half is registered as
//!   an output owned by the refund key, of value `V`, that never counts
//!   in holdings (the same value is already held, as the stream output);
//! * a close conserves when it pays what its ticks say: a claim of `k`
//!   ticks pays `k·p`, a refund of `k` released ticks pays `(N − k)·p`
//!   (settlement's rules S2–S4), whatever its input's value;
//! * the claim removes the stream output's `V` from holdings and adds its
//!   own output `k·p`; the refund removes nothing and adds `(N − k)·p`.
//!   With both closes the stream changed holdings by `−(k_released −
//!   k_claim)·p`: the released but unclaimed ticks leave the holdings
//!   (value nobody holds, settlement's leftover). While only the refund
//!   is known the stream output still counts its whole `V`, so holdings
//!   briefly count the refunded part twice;
//! * a half closed twice is a double spend of that half; its loss is what
//!   the second close pays (value made from nothing), not the half's `V`;
//! * when both halves' first closes are known and `k_claim > k_released`,
//!   the excess `(k_claim − k_released)·p` is a [`AlertKind::StreamOverclaim`]
//!   and counted as a fraud loss (holdings grew by it);
//! * a close is not a payment (the OPEN was): closes feed no AML count.

use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hasher};

use tally_core::policy::device_class;
use tally_core::stream::{STREAM_REFUND_FLAG, StreamPart};
use tally_core::{Hash32, OutPoint, Record, Transfer};
use tally_store::Tx;

use crate::db::{MdsDb, RecordRow};
use crate::{
    ALERT_EVIDENCE_RECORDS_MAX, Alert, AlertKind, AlertState, DEVICE_CLASS_UNKNOWN, IngestOutcome,
    IngestRecord, MdsConfig, MdsError, Pairing, Verdict, hash_of, stored,
};

pub(crate) const STATUS_VALID: i64 = 0;
pub(crate) const STATUS_COUNTERFEIT: i64 = 1;
const KIND_ISSUE: i64 = 0;
const KIND_TRANSFER: i64 = 1;
/// Packed bytes per output in `mds_records.outputs`.
pub(crate) const OUTPUT_BYTES: usize = 42;
/// Packed bytes per input in `mds_records.inputs`.
pub(crate) const INPUT_BYTES: usize = 33;
/// Packed bytes of an OPEN's terms in `mds_records.stream`.
pub(crate) const STREAM_OPEN_BYTES: usize = 46;
/// Packed bytes of a close in `mds_records.stream`.
pub(crate) const STREAM_CLOSE_BYTES: usize = 5;
const STREAM_TAG_OPEN: u8 = 0;
const STREAM_TAG_CLAIM: u8 = 1;
const STREAM_TAG_REFUND: u8 = 2;

/// Whether `op` names a stream's payer half (`0x80 | i`): no real output
/// has such an index (`RECORD_OUTPUTS_MAX` is 8).
fn is_payer_half(op: &OutPoint) -> bool {
    op.index & STREAM_REFUND_FLAG != 0
}

/// One stream, keyed by its stream output `(open, i)`: its terms and the
/// first close of each half (ticks, record id).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamState {
    price: u64,
    ticks_max: u32,
    claim: Option<(u32, Hash32)>,
    refund: Option<(u32, Hash32)>,
}

/// Which half a close consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HalfKind {
    /// The stream output, closed by the payee's claim.
    Payee,
    /// `(open, 0x80 | i)`, closed by the payer's refund.
    Payer,
}

/// A stream part as packed in `mds_records.stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackedStream {
    Open {
        index: u8,
        refund_owner: Hash32,
        price: u64,
        ticks_max: u32,
    },
    Close {
        half: HalfKind,
        ticks: u32,
    },
}

fn pack_stream(p: &PackedStream) -> Vec<u8> {
    match p {
        PackedStream::Open {
            index,
            refund_owner,
            price,
            ticks_max,
        } => {
            let mut b = Vec::with_capacity(STREAM_OPEN_BYTES);
            b.push(STREAM_TAG_OPEN);
            b.push(*index);
            b.extend_from_slice(&refund_owner.0);
            b.extend_from_slice(&price.to_be_bytes());
            b.extend_from_slice(&ticks_max.to_be_bytes());
            b
        }
        PackedStream::Close { half, ticks } => {
            let mut b = Vec::with_capacity(STREAM_CLOSE_BYTES);
            b.push(match half {
                HalfKind::Payee => STREAM_TAG_CLAIM,
                HalfKind::Payer => STREAM_TAG_REFUND,
            });
            b.extend_from_slice(&ticks.to_be_bytes());
            b
        }
    }
}

pub(crate) fn unpack_stream(b: &[u8]) -> Result<PackedStream, MdsError> {
    let bad = || MdsError::Corrupt(format!("stream part of {} bytes", b.len()));
    let u32_at = |i: usize| -> Result<u32, MdsError> {
        let w: [u8; 4] = b
            .get(i..i + 4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        Ok(u32::from_be_bytes(w))
    };
    match (b.first().copied(), b.len()) {
        (Some(STREAM_TAG_OPEN), STREAM_OPEN_BYTES) => {
            let price: [u8; 8] = b[34..42].try_into().map_err(|_| bad())?;
            let index = b[1];
            // A stream output is a real output, never a payer half.
            if index & STREAM_REFUND_FLAG != 0 {
                return Err(bad());
            }
            Ok(PackedStream::Open {
                index,
                refund_owner: hash_of(&b[2..34])?,
                price: u64::from_be_bytes(price),
                ticks_max: u32_at(42)?,
            })
        }
        (Some(STREAM_TAG_CLAIM), STREAM_CLOSE_BYTES) => Ok(PackedStream::Close {
            half: HalfKind::Payee,
            ticks: u32_at(1)?,
        }),
        (Some(STREAM_TAG_REFUND), STREAM_CLOSE_BYTES) => Ok(PackedStream::Close {
            half: HalfKind::Payer,
            ticks: u32_at(1)?,
        }),
        _ => Err(bad()),
    }
}

/// The stream output `(open, i)` whose half `op` is (either half).
fn stream_of(op: &OutPoint) -> OutPoint {
    OutPoint {
        record: op.record,
        index: op.index & !STREAM_REFUND_FLAG,
    }
}

/// What a valid transfer does with payment streams.
enum StreamUse {
    /// Nothing: ordinary conservation applies.
    None,
    /// Opens a stream on its output `index` (terms checked against it).
    Open {
        index: u8,
        refund_owner: Hash32,
        price: u64,
        ticks_max: u32,
    },
    /// Closes one half of the stream whose output is `stream`, paying `due`.
    Close {
        stream: OutPoint,
        half: HalfKind,
        ticks: u32,
        due: u64,
    },
    /// Consumes a half other than by its own close, closes no half, or
    /// opens on terms its output does not carry: settlement refuses all
    /// of these (S1–S3), so nothing backs what it pays.
    Broken,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct OutState {
    owner: Hash32,
    value: u64,
    depth: u64,
    class: u8,
    redeemed: bool,
    consumed_by: Option<Hash32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    payments: u64,
    near_limit: u64,
    fan_out: u64,
    fan_in: u64,
}

#[derive(Debug, Default, Clone)]
struct ActState {
    counts: Counts,
    /// Payments made by the pseudonym in the epoch (evidence, bounded).
    paid: Vec<Hash32>,
    /// Payments received.
    received: Vec<Hash32>,
}

fn push_bounded(v: &mut Vec<Hash32>, id: Hash32) {
    if v.len() < ALERT_EVIDENCE_RECORDS_MAX {
        v.push(id);
    }
}

/// Hashes the maps' keys, which are SHA-256 outputs (record ids, key ids)
/// plus small integers: a multiply-xor mix of 8-byte words, seeded per
/// process from std's random hasher state. SipHash cost ~4 % of ingest;
/// the seed keeps bucket collisions out of reach of a device grinding
/// record nonces, since it cannot compute bucket positions offline.
#[derive(Clone)]
pub(crate) struct IdHashState(u64);

impl Default for IdHashState {
    fn default() -> Self {
        IdHashState(RandomState::new().hash_one(0x7461_6c6c_795f_6d64u64) | 1)
    }
}

impl BuildHasher for IdHashState {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

pub(crate) struct IdHasher(u64);

impl IdHasher {
    #[inline]
    fn mix(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Final avalanche so the low bits (bucket) and top bits (tag) both
        // depend on every word.
        let mut z = self.0;
        z = (z ^ (z >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        z ^ (z >> 32)
    }
}

type HashMap<K, V> = std::collections::HashMap<K, V, IdHashState>;
type HashSet<K> = std::collections::HashSet<K, IdHashState>;

/// Lookup state rebuilt from the store on open.
#[derive(Default)]
pub(crate) struct HotState {
    records: HashMap<Hash32, i64>,
    outputs: HashMap<OutPoint, OutState>,
    activity: HashMap<(Hash32, u32), ActState>,
    pairs: HashSet<(Hash32, Hash32, u32)>,
    /// Payment streams by stream output `(open, i)`.
    streams: HashMap<OutPoint, StreamState>,
    next_seq: i64,
}

impl HotState {
    pub(crate) fn load(tx: &mut dyn Tx, cfg: &MdsConfig) -> Result<HotState, MdsError> {
        let mut s = HotState {
            next_seq: 1,
            ..HotState::default()
        };
        // Edges written by schema version 1 predate every packed row, so
        // their consumptions come first.
        tx.load_v1_outputs(|o| {
            s.outputs.insert(
                o.outpoint,
                OutState {
                    owner: o.owner,
                    value: o.value,
                    depth: o.depth,
                    class: o.class,
                    redeemed: o.redeemed,
                    consumed_by: None,
                },
            );
            Ok(())
        })?;
        tx.load_v1_spends(|sp| {
            s.next_seq = s.next_seq.max(sp.seq + 1);
            s.consume(sp.outpoint, sp.consumer)
        })?;
        tx.load_records(|r| {
            let id = r.id;
            // The store has no unique index on ids: the maps are the guard,
            // checked here when they are read back.
            if s.records.insert(id, r.status).is_some() {
                return Err(MdsError::Corrupt(format!("record {id} stored twice")));
            }
            s.next_seq = s.next_seq.max(r.seq + 1);
            if let Some(outputs) = r.outputs {
                for (index, o) in unpack_outputs(outputs)?.into_iter().enumerate() {
                    let index = u8::try_from(index)
                        .map_err(|_| MdsError::Corrupt(format!("record {id}: outputs")))?;
                    s.outputs.insert(
                        OutPoint { record: id, index },
                        OutState {
                            owner: o.owner,
                            value: o.value,
                            depth: r.depth,
                            class: o.class,
                            redeemed: o.redeemed,
                            consumed_by: None,
                        },
                    );
                }
            }
            let stream = r.stream.map(unpack_stream).transpose()?;
            if let Some(PackedStream::Open {
                index,
                refund_owner,
                price,
                ticks_max,
            }) = stream
            {
                s.open_stream(None, id, index, refund_owner, price, ticks_max, r.depth)?;
            }
            if let Some(inputs) = r.inputs {
                let inputs = unpack_inputs(inputs)?;
                for op in &inputs {
                    s.consume(*op, id)?;
                }
                if let Some(PackedStream::Close { half, ticks }) = stream {
                    // A close was stored only with its one half as input.
                    let [op] = inputs[..] else {
                        return Err(MdsError::Corrupt(format!("record {id}: stream close")));
                    };
                    let consumed_first = s.outputs.get(&op).and_then(|o| o.consumed_by) == Some(id);
                    if consumed_first {
                        s.note_close(None, stream_of(&op), half, ticks, id)?;
                    }
                }
            }
            if matches!(stream, Some(PackedStream::Close { .. })) {
                // A close is not a payment.
                return Ok(());
            }
            if r.status != STATUS_VALID || r.kind != KIND_TRANSFER || r.redemption {
                return Ok(());
            }
            let (Some(payer), Some(payee)) = (r.payer, r.payee) else {
                return Ok(());
            };
            s.note_payment(cfg, None, id, payer, payee, r.epoch, r.payment);
            Ok(())
        })?;
        Ok(s)
    }

    /// Marks `op` consumed by `consumer` unless an earlier consumer won.
    fn consume(&mut self, op: OutPoint, consumer: Hash32) -> Result<(), MdsError> {
        let o = self
            .outputs
            .get_mut(&op)
            .ok_or_else(|| MdsError::Corrupt(format!("spend of unknown output {}", op.record)))?;
        o.consumed_by.get_or_insert(consumer);
        Ok(())
    }

    /// Registers the stream the OPEN `open` makes on its output `index`
    /// and its payer half `(open, 0x80 | index)`: an output of the stream's
    /// value owned by the refund key, which holdings never count.
    #[allow(clippy::too_many_arguments)]
    fn open_stream(
        &mut self,
        undo: Option<&mut Undo>,
        open: Hash32,
        index: u8,
        refund_owner: Hash32,
        price: u64,
        ticks_max: u32,
        depth: u64,
    ) -> Result<(), MdsError> {
        let stream = OutPoint {
            record: open,
            index,
        };
        let half = OutPoint {
            record: open,
            index: index | STREAM_REFUND_FLAG,
        };
        let value = price
            .checked_mul(u64::from(ticks_max))
            .ok_or(MdsError::Overflow)?;
        if self.outputs.contains_key(&half) || self.streams.contains_key(&stream) {
            return Err(MdsError::Corrupt(format!(
                "stream {open}:{index} opened twice"
            )));
        }
        self.outputs.insert(
            half,
            OutState {
                owner: refund_owner,
                value,
                depth,
                class: DEVICE_CLASS_UNKNOWN,
                redeemed: false,
                consumed_by: None,
            },
        );
        self.streams.insert(
            stream,
            StreamState {
                price,
                ticks_max,
                claim: None,
                refund: None,
            },
        );
        if let Some(u) = undo {
            u.outputs.push(half);
            u.streams.push(stream);
        }
        Ok(())
    }

    /// Records the first close of `half` of `stream`. Returns the stream
    /// as it now is.
    fn note_close(
        &mut self,
        undo: Option<&mut Undo>,
        stream: OutPoint,
        half: HalfKind,
        ticks: u32,
        close: Hash32,
    ) -> Result<StreamState, MdsError> {
        let s = self.streams.get_mut(&stream).ok_or_else(|| {
            MdsError::Corrupt(format!("close of unknown stream {}", stream.record))
        })?;
        let slot = match half {
            HalfKind::Payee => &mut s.claim,
            HalfKind::Payer => &mut s.refund,
        };
        if slot.is_some() {
            return Err(MdsError::Corrupt(format!(
                "stream {} closed first twice",
                stream.record
            )));
        }
        *slot = Some((ticks, close));
        if let Some(u) = undo {
            u.closes.push((stream, half));
        }
        Ok(*s)
    }

    /// The activity of `k`, saved in `undo` before its first change in
    /// the batch.
    fn touch(&mut self, undo: Option<&mut Undo>, k: (Hash32, u32)) -> &mut ActState {
        let (before, a) = match self.activity.entry(k) {
            Entry::Occupied(e) => {
                let a = e.into_mut();
                let before = ActBefore {
                    counts: a.counts,
                    paid: a.paid.len(),
                    received: a.received.len(),
                };
                (Some(before), a)
            }
            Entry::Vacant(e) => (None, e.insert(ActState::default())),
        };
        if let Some(u) = undo {
            u.activity.entry(k).or_insert(before);
        }
        a
    }

    #[allow(clippy::too_many_arguments)]
    fn note_payment(
        &mut self,
        cfg: &MdsConfig,
        mut undo: Option<&mut Undo>,
        id: Hash32,
        payer: Hash32,
        payee: Hash32,
        epoch: u32,
        payment: u64,
    ) {
        // Distinct counterparties: each pair counts once per epoch.
        let new_pair = payer != payee && self.pairs.insert((payer, payee, epoch));
        if new_pair && let Some(u) = undo.as_deref_mut() {
            u.pairs.push((payer, payee, epoch));
        }
        let a = self.touch(undo.as_deref_mut(), (payer, epoch));
        a.counts.payments += 1;
        if cfg.near_limit(payment) {
            a.counts.near_limit += 1;
        }
        a.counts.fan_out += u64::from(new_pair);
        push_bounded(&mut a.paid, id);
        let b = self.touch(undo, (payee, epoch));
        b.counts.fan_in += u64::from(new_pair);
        push_bounded(&mut b.received, id);
    }
}

/// An activity entry before a batch first changed it.
#[derive(Clone, Copy)]
struct ActBefore {
    counts: Counts,
    /// Lengths of the evidence lists (append-only, so truncating restores them).
    paid: usize,
    received: usize,
}

/// What a batch changed in [`HotState`], to put back if its transaction
/// does not commit (an error, or a conflict before a retry). The maps are
/// changed in place so a batch's lookups see one map, and a commit costs
/// nothing more.
#[derive(Default)]
pub(crate) struct Undo {
    records: Vec<Hash32>,
    outputs: Vec<OutPoint>,
    /// Outputs whose first consumer the batch set.
    consumed: Vec<OutPoint>,
    /// `None`: the key was new in the batch.
    activity: HashMap<(Hash32, u32), Option<ActBefore>>,
    pairs: Vec<(Hash32, Hash32, u32)>,
    /// Streams the batch opened.
    streams: Vec<OutPoint>,
    /// Stream halves whose first close the batch recorded.
    closes: Vec<(OutPoint, HalfKind)>,
    next_seq: Option<i64>,
}

impl Undo {
    /// Puts `hot` back as it was before the batch and empties the log.
    pub(crate) fn rollback(&mut self, hot: &mut HotState) {
        let u = std::mem::take(self);
        for id in &u.records {
            hot.records.remove(id);
        }
        for op in &u.outputs {
            hot.outputs.remove(op);
        }
        for op in &u.consumed {
            if let Some(o) = hot.outputs.get_mut(op) {
                o.consumed_by = None;
            }
        }
        for (k, before) in u.activity {
            match (before, hot.activity.get_mut(&k)) {
                (None, _) => {
                    hot.activity.remove(&k);
                }
                (Some(b), Some(a)) => {
                    a.counts = b.counts;
                    a.paid.truncate(b.paid);
                    a.received.truncate(b.received);
                }
                (Some(_), None) => {}
            }
        }
        for p in &u.pairs {
            hot.pairs.remove(p);
        }
        for (op, half) in &u.closes {
            if let Some(st) = hot.streams.get_mut(op) {
                match half {
                    HalfKind::Payee => st.claim = None,
                    HalfKind::Payer => st.refund = None,
                }
            }
        }
        for op in &u.streams {
            hot.streams.remove(op);
        }
        if let Some(seq) = u.next_seq {
            hot.next_seq = seq;
        }
    }
}

/// An output as packed in `mds_records.outputs`.
pub(crate) struct PackedOutput {
    pub(crate) owner: Hash32,
    pub(crate) value: u64,
    pub(crate) class: u8,
    pub(crate) redeemed: bool,
}

fn pack_output(buf: &mut Vec<u8>, o: &PackedOutput) {
    buf.extend_from_slice(&o.owner.0);
    buf.extend_from_slice(&o.value.to_be_bytes());
    buf.push(o.class);
    buf.push(u8::from(o.redeemed));
}

pub(crate) fn unpack_outputs(b: &[u8]) -> Result<Vec<PackedOutput>, MdsError> {
    if !b.len().is_multiple_of(OUTPUT_BYTES) {
        return Err(MdsError::Corrupt(format!("outputs of {} bytes", b.len())));
    }
    b.chunks_exact(OUTPUT_BYTES)
        .map(|c| {
            let (owner, rest) = c.split_at(32);
            let (value, flags) = rest.split_at(8);
            let mut v = [0u8; 8];
            v.copy_from_slice(value);
            Ok(PackedOutput {
                owner: hash_of(owner)?,
                value: u64::from_be_bytes(v),
                class: flags[0],
                redeemed: match flags[1] {
                    0 => false,
                    1 => true,
                    f => return Err(MdsError::Corrupt(format!("redeemed flag {f}"))),
                },
            })
        })
        .collect()
}

fn pack_input(buf: &mut Vec<u8>, op: &OutPoint) {
    buf.extend_from_slice(&op.record.0);
    buf.push(op.index);
}

pub(crate) fn unpack_inputs(b: &[u8]) -> Result<Vec<OutPoint>, MdsError> {
    if !b.len().is_multiple_of(INPUT_BYTES) {
        return Err(MdsError::Corrupt(format!("inputs of {} bytes", b.len())));
    }
    b.chunks_exact(INPUT_BYTES)
        .map(|c| {
            Ok(OutPoint {
                record: hash_of(&c[..32])?,
                index: c[32],
            })
        })
        .collect()
}

#[derive(Default)]
struct Counters {
    records: u64,
    issued: u64,
    redeemed: u64,
    redemptions: u64,
    hops_total: u64,
    payments: u64,
    payment_value: u64,
    offline_samples: u64,
    offline_epochs_total: u64,
    offline_epochs_max: u64,
    fraud_losses: u64,
    double_spends: u64,
    counterfeits: u64,
    /// Unspent, unredeemed value by device class (may go down).
    holdings: HashMap<u8, i128>,
}

fn add(a: &mut u64, v: u64) -> Result<(), MdsError> {
    *a = a.checked_add(v).ok_or(MdsError::Overflow)?;
    Ok(())
}

/// Largest amount the MDS stores (its amount columns are BIGINT).
pub const AMOUNT_STORED_MAX: u64 = i64::MAX as u64;

/// The sum of `values` if every partial sum (and so every value) is at
/// most [`AMOUNT_STORED_MAX`]; `None` otherwise.
fn stored_sum(values: impl IntoIterator<Item = u64>) -> Option<u64> {
    values.into_iter().try_fold(0u64, |acc, v| {
        acc.checked_add(v).filter(|s| *s <= AMOUNT_STORED_MAX)
    })
}

enum Resolved {
    Found(OutState),
    CounterfeitParent,
}

pub(crate) struct Batch<'a> {
    cfg: &'a MdsConfig,
    hot: &'a mut HotState,
    undo: &'a mut Undo,
    next_alert: i64,
    counters: Counters,
    epochs: std::collections::BTreeMap<u32, (u64, u64)>,
    record_rows: Vec<RecordRow>,
    pub(crate) out: IngestOutcome,
}

impl<'a> Batch<'a> {
    /// A batch that changes `hot` in place and logs each change in `undo`
    /// (which must be empty: the caller rolls back a failed attempt).
    pub(crate) fn new(
        cfg: &'a MdsConfig,
        hot: &'a mut HotState,
        undo: &'a mut Undo,
        next_alert: i64,
    ) -> Self {
        undo.next_seq = Some(hot.next_seq);
        Batch {
            cfg,
            hot,
            undo,
            next_alert,
            counters: Counters::default(),
            epochs: Default::default(),
            record_rows: Vec::new(),
            out: IngestOutcome::default(),
        }
    }

    fn seq(&mut self) -> i64 {
        let s = self.hot.next_seq;
        self.hot.next_seq += 1;
        s
    }

    fn status_of(&self, id: &Hash32) -> Option<i64> {
        self.hot.records.get(id).copied()
    }

    fn resolve(&self, op: &OutPoint) -> Result<Resolved, MdsError> {
        match self.hot.outputs.get(op) {
            Some(o) => Ok(Resolved::Found(*o)),
            None => match self.status_of(&op.record) {
                Some(STATUS_COUNTERFEIT) => Ok(Resolved::CounterfeitParent),
                _ => Err(MdsError::UnknownInput(*op)),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        tx: &mut dyn Tx,
        kind: AlertKind,
        epoch: u32,
        subject: Hash32,
        offender: Option<Hash32>,
        records: Vec<Hash32>,
        amount: u64,
        outpoint: Option<(Hash32, u8)>,
    ) -> Result<(), MdsError> {
        self.next_alert += 1;
        let a = Alert {
            id: self.next_alert,
            kind,
            severity: kind.severity(),
            state: AlertState::Open,
            epoch,
            subject,
            offender,
            records,
            amount,
            outpoint,
        };
        tx.insert_alert(&a)?;
        self.out.alerts.push(a);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record_row(
        &mut self,
        r: &IngestRecord,
        kind: i64,
        status: i64,
        payer: Option<Hash32>,
        payee: Option<Hash32>,
        value: u64,
        payment: u64,
        depth: u64,
        redemption: bool,
        nonce: Option<&[u8; 16]>,
        outputs: Vec<u8>,
        inputs: Vec<u8>,
        stream: Option<Vec<u8>>,
    ) -> Result<(), MdsError> {
        let seq = self.seq();
        // Refused here, before the row is queued: amounts the store keeps.
        stored(value)?;
        stored(payment)?;
        stored(depth)?;
        self.record_rows.push(RecordRow {
            seq,
            id: r.id,
            kind,
            epoch: r.epoch,
            status,
            payer,
            payee,
            value,
            payment,
            depth,
            redemption,
            nonce: nonce.copied(),
            outputs,
            inputs,
            stream,
        });
        self.hot.records.insert(r.id, status);
        self.undo.records.push(r.id);
        Ok(())
    }

    pub(crate) fn ingest_one(&mut self, tx: &mut dyn Tx, r: &IngestRecord) -> Result<(), MdsError> {
        if self.status_of(&r.id).is_some() {
            self.out.duplicates += 1;
            return Ok(());
        }
        let outputs = r.record.outputs();
        // Amounts come from devices. A refused record is judged by its
        // verifier's code alone: its amounts are never summed (a refused
        // upload whose outputs wrap u64 once stopped the MDS for good).
        // Any other record's outputs must fit what the MDS stores, one by
        // one and in total.
        let out_sum = match r.verdict {
            Verdict::Refused(_) => 0,
            Verdict::Verified => stored_sum(outputs.iter().map(|o| o.value.0))
                .ok_or(MdsError::AmountOutOfRange { record: r.id })?,
        };
        self.out.ingested += 1;
        add(&mut self.counters.records, 1)?;
        if let Some(o) = r.offline_epochs {
            add(&mut self.counters.offline_samples, 1)?;
            add(&mut self.counters.offline_epochs_total, u64::from(o))?;
            self.counters.offline_epochs_max = self.counters.offline_epochs_max.max(u64::from(o));
        }
        // A key id is a hash: compute each owner's once.
        let owners: Vec<Hash32> = outputs.iter().map(|o| o.owner.id()).collect();
        let payee = owners.first().copied();
        match &r.record {
            Record::Issue(i) => {
                let fraud = match r.verdict {
                    Verdict::Refused(code) => {
                        Some((AlertKind::CounterfeitRefused, u64::from(code)))
                    }
                    Verdict::Verified if !self.cfg.known_issuers.contains(&i.issuer) => {
                        Some((AlertKind::UnknownIssuer, out_sum))
                    }
                    Verdict::Verified => None,
                };
                if let Some((kind, amount)) = fraud {
                    return self.counterfeit(
                        tx,
                        r,
                        KIND_ISSUE,
                        Some(i.issuer),
                        payee,
                        kind,
                        amount,
                        vec![r.id],
                    );
                }
                let (_, packed) = self.queue_outputs(r, &owners, 0)?;
                self.record_row(
                    r,
                    KIND_ISSUE,
                    STATUS_VALID,
                    Some(i.issuer),
                    payee,
                    out_sum,
                    0,
                    0,
                    false,
                    None,
                    packed,
                    Vec::new(),
                    None,
                )?;
                add(&mut self.counters.issued, out_sum)?;
            }
            Record::Transfer(t) => {
                // Judge everything before writing anything about the record.
                if let Verdict::Refused(code) = r.verdict {
                    // Settlement refused the package, so its ancestry may
                    // never have reached the MDS: name the payer if known,
                    // never require the parents.
                    let payer = t.inputs.iter().find_map(|op| match self.resolve(op) {
                        Ok(Resolved::Found(o)) => Some(o.owner),
                        _ => None,
                    });
                    return self.counterfeit(
                        tx,
                        r,
                        KIND_TRANSFER,
                        payer,
                        payee,
                        AlertKind::CounterfeitRefused,
                        u64::from(code),
                        vec![r.id],
                    );
                }
                let mut inputs = Vec::with_capacity(t.inputs.len());
                let mut counterfeit_parent = None;
                for op in &t.inputs {
                    match self.resolve(op)? {
                        Resolved::Found(row) => inputs.push(row),
                        Resolved::CounterfeitParent => {
                            counterfeit_parent.get_or_insert(op.record);
                        }
                    }
                }
                let payer = inputs.first().map(|i| i.owner);
                // Each input is a stored output (at most AMOUNT_STORED_MAX),
                // but their sum need not be: sum exactly in u128 (at most
                // RECORD_INPUTS_MAX terms) and compare there.
                let in_sum = inputs
                    .iter()
                    .try_fold(0u128, |acc, i| acc.checked_add(u128::from(i.value)))
                    .ok_or(MdsError::Overflow)?;
                // At most RECORD_INPUTS_MAX inputs: pairwise is cheaper than a set.
                let repeated = t
                    .inputs
                    .iter()
                    .enumerate()
                    .any(|(i, op)| t.inputs[..i].contains(op));
                let stream_use = self.stream_use(t);
                // What the outputs must add up to: the inputs, or for a
                // stream close what its ticks say (its input's value is
                // split between the stream's two halves).
                let due = match &stream_use {
                    StreamUse::None | StreamUse::Open { .. } => Some(in_sum),
                    StreamUse::Close { due, .. } => Some(u128::from(*due)),
                    StreamUse::Broken => None,
                };
                let fraud = if let Some(p) = counterfeit_parent {
                    Some((AlertKind::CounterfeitDescendant, out_sum, vec![r.id, p]))
                } else if t.inputs.is_empty() || repeated || due != Some(u128::from(out_sum)) {
                    // The difference, capped at what an alert stores
                    // (nothing backs a broken stream spend).
                    let diff = due.unwrap_or(0).abs_diff(u128::from(out_sum));
                    Some((
                        AlertKind::NonConserving,
                        u64::try_from(diff.min(u128::from(AMOUNT_STORED_MAX)))
                            .map_err(|_| MdsError::Overflow)?,
                        vec![r.id],
                    ))
                } else {
                    None
                };
                if let Some((kind, amount, records)) = fraud {
                    return self.counterfeit(
                        tx,
                        r,
                        KIND_TRANSFER,
                        payer,
                        payee,
                        kind,
                        amount,
                        records,
                    );
                }
                let depth = inputs
                    .iter()
                    .map(|i| i.depth)
                    .max()
                    .unwrap_or(0)
                    .checked_add(1)
                    .ok_or(MdsError::Overflow)?;
                let mut packed_inputs = Vec::with_capacity(t.inputs.len() * INPUT_BYTES);
                for (op, row) in t.inputs.iter().zip(&inputs) {
                    pack_input(&mut packed_inputs, op);
                    match row.consumed_by {
                        None => {
                            if let Some(o) = self.hot.outputs.get_mut(op) {
                                o.consumed_by = Some(r.id);
                                self.undo.consumed.push(*op);
                            }
                            // A payer half never counted in holdings (its
                            // value is held once, as the stream output).
                            if !row.redeemed && !is_payer_half(op) {
                                let h = self.counters.holdings.entry(row.class).or_default();
                                *h = h
                                    .checked_sub(i128::from(row.value))
                                    .ok_or(MdsError::Overflow)?;
                            }
                            if let StreamUse::Close {
                                stream,
                                half,
                                ticks,
                                ..
                            } = stream_use
                            {
                                self.first_close(tx, r, op, row, stream, half, ticks)?;
                            }
                        }
                        Some(first) => {
                            // A half closed twice: the second close made
                            // what it pays from nothing (a half's value is
                            // split, not what either close pays).
                            let loss = match stream_use {
                                StreamUse::Close { .. } => out_sum,
                                _ => row.value,
                            };
                            add(&mut self.counters.fraud_losses, loss)?;
                            add(&mut self.counters.double_spends, 1)?;
                            self.raise(
                                tx,
                                AlertKind::DoubleSpend,
                                r.epoch,
                                r.id,
                                Some(row.owner),
                                vec![first, r.id],
                                loss,
                                Some((op.record, op.index)),
                            )?;
                        }
                    }
                }
                let (redeemed, packed_outputs) = self.queue_outputs(r, &owners, depth)?;
                let packed_stream = match stream_use {
                    StreamUse::Open {
                        index,
                        refund_owner,
                        price,
                        ticks_max,
                    } => {
                        self.hot.open_stream(
                            Some(&mut *self.undo),
                            r.id,
                            index,
                            refund_owner,
                            price,
                            ticks_max,
                            depth,
                        )?;
                        Some(pack_stream(&PackedStream::Open {
                            index,
                            refund_owner,
                            price,
                            ticks_max,
                        }))
                    }
                    StreamUse::Close { half, ticks, .. } => {
                        Some(pack_stream(&PackedStream::Close { half, ticks }))
                    }
                    StreamUse::None | StreamUse::Broken => None,
                };
                let is_close = matches!(stream_use, StreamUse::Close { .. });
                let payment = outputs.first().map(|o| o.value.0).unwrap_or(0);
                if redeemed > 0 {
                    add(&mut self.counters.redemptions, 1)?;
                    add(&mut self.counters.redeemed, redeemed)?;
                    // depth ≥ 1: checked_add(1) above.
                    add(&mut self.counters.hops_total, depth.saturating_sub(1))?;
                } else if !is_close && let (Some(payer), Some(payee)) = (payer, payee) {
                    // A stream close is not a payment (its OPEN was one).
                    add(&mut self.counters.payments, 1)?;
                    add(&mut self.counters.payment_value, payment)?;
                    let e = self.epochs.entry(r.epoch).or_default();
                    add(&mut e.0, 1)?;
                    add(&mut e.1, payment)?;
                    self.hot.note_payment(
                        self.cfg,
                        Some(self.undo),
                        r.id,
                        payer,
                        payee,
                        r.epoch,
                        payment,
                    );
                }
                self.record_row(
                    r,
                    KIND_TRANSFER,
                    STATUS_VALID,
                    payer,
                    payee,
                    out_sum,
                    payment,
                    depth,
                    redeemed > 0,
                    Some(&t.nonce),
                    packed_outputs,
                    packed_inputs,
                    packed_stream,
                )?;
                if r.unacknowledged
                    && let Some(payee) = payee
                {
                    self.pair_from_transfer(tx, payee, &t.nonce, r.id, payment)?;
                }
            }
        }
        Ok(())
    }

    /// What `t` does with payment streams, judged against the streams
    /// the MDS knows (settlement's S1–S3 again: a verified record is
    /// never [`StreamUse::Broken`]).
    fn stream_use(&self, t: &Transfer) -> StreamUse {
        let is_half = |op: &OutPoint| {
            if is_payer_half(op) {
                self.hot.streams.contains_key(&stream_of(op))
            } else {
                self.hot.streams.contains_key(op)
            }
        };
        let spends_half = t.inputs.iter().any(is_half);
        match t.stream.as_deref() {
            None if spends_half => StreamUse::Broken,
            None => StreamUse::None,
            Some(StreamPart::Open(terms)) => {
                let fits = t
                    .outputs
                    .get(usize::from(terms.index))
                    .is_some_and(|o| terms.ask.value() == Some(o.value));
                if spends_half || !fits || t.confidential.is_some() {
                    return StreamUse::Broken;
                }
                StreamUse::Open {
                    index: terms.index,
                    refund_owner: terms.refund_key.id(),
                    price: terms.ask.price.0,
                    ticks_max: terms.ask.ticks_max,
                }
            }
            Some(StreamPart::Claim { ticks, .. }) => {
                let [op] = t.inputs[..] else {
                    return StreamUse::Broken;
                };
                match self.hot.streams.get(&op) {
                    Some(st) if !is_payer_half(&op) && *ticks <= st.ticks_max => {
                        match st.price.checked_mul(u64::from(*ticks)) {
                            Some(due) => StreamUse::Close {
                                stream: op,
                                half: HalfKind::Payee,
                                ticks: *ticks,
                                due,
                            },
                            None => StreamUse::Broken,
                        }
                    }
                    _ => StreamUse::Broken,
                }
            }
            Some(StreamPart::Refund { ticks }) => {
                let [op] = t.inputs[..] else {
                    return StreamUse::Broken;
                };
                let stream = stream_of(&op);
                match self.hot.streams.get(&stream) {
                    Some(st) if is_payer_half(&op) && *ticks <= st.ticks_max => {
                        match st.price.checked_mul(u64::from(st.ticks_max - *ticks)) {
                            Some(due) => StreamUse::Close {
                                stream,
                                half: HalfKind::Payer,
                                ticks: *ticks,
                                due,
                            },
                            None => StreamUse::Broken,
                        }
                    }
                    _ => StreamUse::Broken,
                }
            }
        }
    }

    /// `r` is the first close of its `half` (input `op`, owned by
    /// `row.owner`) of `stream`: records its ticks and, when the other
    /// half's first close is known, raises [`AlertKind::StreamOverclaim`]
    /// if the claim took more ticks than the refund says were released.
    /// The one who signed the second close is named: a refund of released
    /// ticks (a broken or cloned payer SE), or a claim past them.
    #[allow(clippy::too_many_arguments)]
    fn first_close(
        &mut self,
        tx: &mut dyn Tx,
        r: &IngestRecord,
        op: &OutPoint,
        row: &OutState,
        stream: OutPoint,
        half: HalfKind,
        ticks: u32,
    ) -> Result<(), MdsError> {
        debug_assert_eq!(stream_of(op), stream);
        let st = self
            .hot
            .note_close(Some(&mut *self.undo), stream, half, ticks, r.id)?;
        let (Some((claimed, claim)), Some((released, refund))) = (st.claim, st.refund) else {
            return Ok(());
        };
        if claimed <= released {
            return Ok(());
        }
        // ticks ≤ ticks_max and price · ticks_max fits (the OPEN's terms).
        let excess = st
            .price
            .checked_mul(u64::from(claimed - released))
            .ok_or(MdsError::Overflow)?;
        let first = match half {
            HalfKind::Payee => refund,
            HalfKind::Payer => claim,
        };
        add(&mut self.counters.fraud_losses, excess)?;
        self.raise(
            tx,
            AlertKind::StreamOverclaim,
            r.epoch,
            r.id,
            Some(row.owner),
            vec![first, r.id],
            excess,
            Some((stream.record, stream.index)),
        )
    }

    /// A counterfeit record: its row (no edges — nothing may spend its
    /// outputs, and what it spent stays unspent) and its alert.
    #[allow(clippy::too_many_arguments)]
    fn counterfeit(
        &mut self,
        tx: &mut dyn Tx,
        r: &IngestRecord,
        kind_code: i64,
        offender: Option<Hash32>,
        payee: Option<Hash32>,
        kind: AlertKind,
        amount: u64,
        records: Vec<Hash32>,
    ) -> Result<(), MdsError> {
        add(&mut self.counters.counterfeits, 1)?;
        self.record_row(
            r,
            kind_code,
            STATUS_COUNTERFEIT,
            offender,
            payee,
            0,
            0,
            0,
            false,
            None,
            Vec::new(),
            Vec::new(),
            None,
        )?;
        self.raise(tx, kind, r.epoch, r.id, offender, records, amount, None)
    }

    /// Adds the outputs to the overlay; returns the value paid to
    /// redemption keys and the outputs packed for the record's row.
    fn queue_outputs(
        &mut self,
        r: &IngestRecord,
        owners: &[Hash32],
        depth: u64,
    ) -> Result<(u64, Vec<u8>), MdsError> {
        let mut redeemed = 0u64;
        let outputs = r.record.outputs();
        let mut packed = Vec::with_capacity(outputs.len() * OUTPUT_BYTES);
        for (i, (o, owner)) in outputs.iter().zip(owners).enumerate() {
            let index = u8::try_from(i).map_err(|_| MdsError::Overflow)?;
            let is_redemption = self.cfg.redemption_keys.contains(owner);
            let class = if is_redemption {
                device_class::DCP
            } else {
                r.output_classes
                    .get(i)
                    .copied()
                    .unwrap_or(DEVICE_CLASS_UNKNOWN)
            };
            if is_redemption {
                add(&mut redeemed, o.value.0)?;
            } else {
                let h = self.counters.holdings.entry(class).or_default();
                *h = h
                    .checked_add(i128::from(o.value.0))
                    .ok_or(MdsError::Overflow)?;
            }
            // Stored values are BIGINT elsewhere: keep the same bound.
            stored(o.value.0)?;
            pack_output(
                &mut packed,
                &PackedOutput {
                    owner: *owner,
                    value: o.value.0,
                    class,
                    redeemed: is_redemption,
                },
            );
            let op = OutPoint {
                record: r.id,
                index,
            };
            self.undo.outputs.push(op);
            self.hot.outputs.insert(
                op,
                OutState {
                    owner: *owner,
                    value: o.value.0,
                    depth,
                    class,
                    redeemed: is_redemption,
                    consumed_by: None,
                },
            );
        }
        Ok((redeemed, packed))
    }

    fn pair_from_transfer(
        &mut self,
        tx: &mut dyn Tx,
        payee: Hash32,
        nonce: &[u8; 16],
        transfer: Hash32,
        payment: u64,
    ) -> Result<(), MdsError> {
        if tx.pair_open_request(&payee, nonce, &transfer, payment)? {
            self.out.pairings.push(Pairing {
                payee,
                nonce: *nonce,
                transfer,
                amount: payment,
            });
        }
        Ok(())
    }

    /// Writes the queued rows and per-batch aggregates, and raises the AML
    /// alerts whose thresholds this batch crossed (each crossing once:
    /// old < min ≤ new).
    pub(crate) fn flush(&mut self, tx: &mut dyn Tx) -> Result<(), MdsError> {
        tx.insert_records(std::mem::take(&mut self.record_rows))?;
        // Thresholds crossed by this batch: before it (saved in the undo
        // log at the first change) against now.
        let mut keys: Vec<((Hash32, u32), Counts)> = self
            .undo
            .activity
            .iter()
            .map(|(k, b)| (*k, b.map(|b| b.counts).unwrap_or_default()))
            .collect();
        keys.sort_by_key(|(k, _)| *k);
        for (k, o) in keys {
            let Some(now) = self.hot.activity.get(&k) else {
                continue;
            };
            let n = now.counts;
            let checks = [
                (
                    AlertKind::Structuring,
                    o.near_limit,
                    n.near_limit,
                    self.cfg.structuring_payments_min,
                    false,
                ),
                (
                    AlertKind::FanOut,
                    o.fan_out,
                    n.fan_out,
                    self.cfg.fan_out_min,
                    false,
                ),
                (
                    AlertKind::FanIn,
                    o.fan_in,
                    n.fan_in,
                    self.cfg.fan_in_min,
                    true,
                ),
                (
                    AlertKind::Velocity,
                    o.payments,
                    n.payments,
                    self.cfg.velocity_payments_min,
                    false,
                ),
            ];
            let mut raise = Vec::new();
            for (kind, before, after, min, incoming) in checks {
                if min > 0 && before < min && after >= min {
                    // The evidence lists keep the first payments, bounded.
                    let records = if incoming {
                        now.received.clone()
                    } else {
                        now.paid.clone()
                    };
                    raise.push((kind, records, after));
                }
            }
            for (kind, records, after) in raise {
                self.raise(tx, kind, k.1, k.0, Some(k.0), records, after, None)?;
            }
        }
        for (epoch, (count, value)) in std::mem::take(&mut self.epochs) {
            tx.add_epoch_payments(epoch, count, value)?;
        }
        let c = &self.counters;
        let mut deltas: Vec<(String, i128)> = [
            ("records", c.records),
            ("issued", c.issued),
            ("redeemed", c.redeemed),
            ("redemptions", c.redemptions),
            ("hops_total", c.hops_total),
            ("payments", c.payments),
            ("payment_value", c.payment_value),
            ("offline_samples", c.offline_samples),
            ("offline_epochs_total", c.offline_epochs_total),
            ("fraud_losses", c.fraud_losses),
            ("double_spends", c.double_spends),
            ("counterfeits", c.counterfeits),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), i128::from(*v)))
        .collect();
        let mut classes: Vec<_> = c.holdings.iter().collect();
        classes.sort();
        for (class, v) in classes {
            deltas.push((format!("{}{class}", crate::indicators::HOLDINGS_PREFIX), *v));
        }
        for (name, delta) in deltas {
            if delta == 0 {
                continue;
            }
            let d = i64::try_from(delta).map_err(|_| MdsError::Overflow)?;
            tx.add_counter(&name, d)?;
        }
        if c.offline_epochs_max > 0 {
            tx.raise_offline_epochs_max(c.offline_epochs_max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_stream_parts_round_trip_and_malformed_ones_are_corrupt() {
        let parts = [
            PackedStream::Open {
                index: 7,
                refund_owner: Hash32([0xab; 32]),
                price: u64::MAX,
                ticks_max: u32::MAX,
            },
            PackedStream::Close {
                half: HalfKind::Payee,
                ticks: 65_536,
            },
            PackedStream::Close {
                half: HalfKind::Payer,
                ticks: 0,
            },
        ];
        for p in parts {
            let b = pack_stream(&p);
            assert_eq!(unpack_stream(&b), Ok(p));
            // One byte short or long, or another tag: corrupt.
            assert!(unpack_stream(&b[..b.len() - 1]).is_err());
            let mut long = b.clone();
            long.push(0);
            assert!(unpack_stream(&long).is_err());
            let mut tag = b.clone();
            tag[0] = 3;
            assert!(unpack_stream(&tag).is_err());
        }
        assert!(unpack_stream(&[]).is_err());
        // An OPEN on a payer-half index names no real output.
        let mut b = pack_stream(&parts[0]);
        b[1] = STREAM_REFUND_FLAG;
        assert!(unpack_stream(&b).is_err());
    }
}
