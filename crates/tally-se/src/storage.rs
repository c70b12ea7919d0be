//! Transactional persistent state of the secure element.
//!
//! This module owns the anti-tearing guarantee of DESIGN.md §4: a power cut
//! during any write leaves either the old or the new state, never a mix.
//!
//! * [`Storage`]: byte-addressed non-volatile memory (flash, EEPROM, a file).
//! * [`MemStorage`]: RAM-backed storage for tests and the bare-metal build.
//! * [`TearingStorage`]: a test double that cuts power at a chosen write.
//! * [`Journal`]: the transactional layer, two ping-pong shadow slots, each a
//!   commit record (header), a base state (payload) and a log of records
//!   appended after it (docs/decisions/0001-journal-shadow-slots.md and
//!   0018-se-journal-log.md).
//!
//! # Journal layout
//!
//! The storage is split into two equal slots (an odd last byte is unused).
//! Each slot starts with a [`HEADER_LEN`]-byte commit record, all integers
//! little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4  | magic `TLYJ` |
//! | 4  | 2  | format version (3; 1 and 2 are still read) |
//! | 6  | 2  | reserved, zero |
//! | 8  | 8  | sequence number (first commit is 1) |
//! | 16 | 4  | payload length |
//! | 20 | 4  | reserved, zero |
//! | 24 | 32 | payload check: versions 2 and 3, CRC-32 of the payload (little-endian, then 28 zero bytes); version 1, SHA-256 of the payload |
//! | 56 | 32 | SHA-256 of bytes 0..56 |
//!
//! and the payload (the base state) follows at offset [`HEADER_LEN`] of the
//! slot. In format 3 the log follows the payload: records, each
//!
//! | size | field |
//! |---|---|
//! | 4 | commit mark: CRC-32 of `"TLYC"` ‖ previous check ‖ record index (u32) |
//! | 2 | body length L, 1..=[`RECORD_BODY_MAX`] (0 and `0xFFFF` end the log) |
//! | L | body |
//! | 4 | check: CRC-32 of previous check ‖ record index (u32) ‖ L (u16) ‖ body |
//!
//! The first record's "previous check" is the base's anchor: bytes 56..60
//! of its commit record (the start of the header's SHA-256, which covers
//! the sequence number and the payload check), so a log belongs to exactly
//! one base and each record to its place. The state is the base with every
//! record of the log's valid prefix applied in order (the journal stores
//! bodies; what they mean is the caller's).
//!
//! A commit ([`Journal::commit`]) writes the payload into the slot that does
//! *not* hold the current state, in [`WRITE_CHUNK_LEN`]-byte writes,
//! flushes, then writes the header in one write and flushes again. The
//! header is the commit record: until all of it has landed, its hash does
//! not match and recovery ignores the slot. The current slot is never
//! written, so it survives any tear. A commit starts an empty log in its
//! slot. [`Journal::commit_pieces`] makes the same writes from a payload
//! produced in pieces (the SE encodes its state straight into the slot,
//! decision 0024).
//!
//! An append ([`Journal::append`]) writes length, body and check after the
//! last valid record (in [`WRITE_CHUNK_LEN`]-byte writes), flushes, then
//! writes the commit mark and flushes. The record counts once its check has
//! landed; the mark, written after, tells recovery that the record was
//! complete once. A record that does not fit the log ([`LOG_BYTES_MAX`] by
//! default, and the slot's end) is refused with [`StorageError::LogFull`]
//! and the caller commits the whole state instead (compaction).
//!
//! # Recovery rules ([`Journal::open`], then [`Journal::replay`])
//!
//! Each slot is classified as blank (header all `00` or all `FF`), torn
//! (bad magic or header hash), authentic (header hash matches) and then
//! valid (payload length in bounds and payload hash matches) or damaged.
//!
//! * The valid slot with the highest sequence number wins. A damaged slot is
//!   skipped even if its sequence number is higher; that cannot result from
//!   a power cut (a header is written only after its payload is flushed, and
//!   a slot's payload is only rewritten after the other slot holds a newer
//!   commit), so [`Journal::newer_state_discarded`] reports it for the
//!   caller to treat as an integrity event.
//! * No valid slot: both blank, or one blank and one torn (a torn first
//!   commit), means nothing was ever committed: `None`. Anything else is
//!   [`StorageError::Corrupt`].
//! * The winning slot's log is read record by record: a record whose check
//!   holds counts (whether or not its mark landed); the first one whose
//!   check fails ends the log (a torn append, or stale bytes) — unless its
//!   commit mark is valid: then it was complete and has been damaged since,
//!   which no power cut does, and replay fails with
//!   [`StorageError::Corrupt`].

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest, Sha256};

/// Everything that can go wrong with persistent storage.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// A read or write reaches past the end of the storage.
    OutOfBounds,
    /// Power was cut; nothing more reaches the storage until reboot.
    PowerLost,
    /// The payload does not fit in a journal slot.
    TooLarge,
    /// No committed state can be recovered although the storage is not
    /// blank, or the current state failed its integrity check.
    Corrupt,
    /// The underlying device or file reported an error.
    Io,
    /// The storage is too small to hold two journal slots.
    CapacityTooSmall,
    /// An authentic commit record of a format version this code cannot
    /// read.
    UnsupportedVersion,
    /// An earlier commit failed part-way; the journal must be reopened
    /// ([`Journal::recover`]) to learn which state survived.
    NeedsRecovery,
    /// The sequence number would overflow.
    SequenceExhausted,
    /// The record does not fit in the log of the current slot (or the
    /// current state is of a format without a log): commit the whole
    /// state instead ([`Journal::commit`]), which starts a fresh log.
    LogFull,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            StorageError::OutOfBounds => "storage access past the end of the device",
            StorageError::PowerLost => "power lost during a storage write",
            StorageError::TooLarge => "state is larger than a journal slot",
            StorageError::Corrupt => "stored state is corrupt and cannot be recovered",
            StorageError::Io => "storage device reported an I/O error",
            StorageError::CapacityTooSmall => "storage is too small for the journal",
            StorageError::UnsupportedVersion => "stored state has an unsupported format version",
            StorageError::NeedsRecovery => "an earlier commit failed; reopen the journal",
            StorageError::SequenceExhausted => "journal sequence number exhausted",
            StorageError::LogFull => "journal log full: commit the whole state",
        };
        f.write_str(text)
    }
}

impl core::error::Error for StorageError {}

/// Byte-addressed non-volatile memory.
///
/// Each [`Storage::write`] call is one unit of the tearing model: power may
/// be cut part-way through it, leaving any prefix of it applied. Writes are
/// durable only after [`Storage::flush`] returns.
pub trait Storage {
    /// Size in bytes; valid offsets are `0..capacity()`.
    fn capacity(&self) -> usize;
    /// Fills `buf` from `offset`.
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError>;
    /// Writes `data` at `offset`.
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError>;
    /// Makes every earlier write durable.
    fn flush(&mut self) -> Result<(), StorageError>;
}

impl<S: Storage + ?Sized> Storage for &mut S {
    fn capacity(&self) -> usize {
        (**self).capacity()
    }
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        (**self).read(offset, buf)
    }
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        (**self).write(offset, data)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        (**self).flush()
    }
}

/// `offset..offset + len` if it lies within `capacity`.
pub fn checked_range(
    offset: usize,
    len: usize,
    capacity: usize,
) -> Result<core::ops::Range<usize>, StorageError> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(offset..end),
        _ => Err(StorageError::OutOfBounds),
    }
}

/// The value of an erased flash byte; [`MemStorage::new`] starts with it.
pub const ERASED_BYTE: u8 = 0xFF;

/// Storage in a fixed-size byte vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemStorage {
    bytes: Vec<u8>,
}

impl MemStorage {
    /// `capacity` bytes, all [`ERASED_BYTE`], like fresh flash.
    pub fn new(capacity: usize) -> Self {
        MemStorage {
            bytes: vec![ERASED_BYTE; capacity],
        }
    }

    /// Storage holding exactly `bytes` (for example a saved image, to
    /// simulate a reboot).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemStorage { bytes }
    }

    /// The current contents.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Mutable contents, for fault injection in tests.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// The contents, consuming the storage.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl Storage for MemStorage {
    fn capacity(&self) -> usize {
        self.bytes.len()
    }

    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        let range = checked_range(offset, buf.len(), self.bytes.len())?;
        let src = self.bytes.get(range).ok_or(StorageError::OutOfBounds)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        let range = checked_range(offset, data.len(), self.bytes.len())?;
        let dst = self.bytes.get_mut(range).ok_or(StorageError::OutOfBounds)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// How much of the write that loses power reaches the storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TearMode {
    /// None of it.
    Nothing,
    /// The first half (rounded down).
    Half,
    /// The first `n` bytes (all of them if the write is shorter).
    Prefix(usize),
    /// The first half correctly and the rest bit-inverted, as a cell that
    /// was being programmed may read back.
    Garbage,
    /// All of it, but the write still reports [`StorageError::PowerLost`].
    All,
}

impl TearMode {
    /// The modes worth trying at every write in exhaustive tests.
    pub const EXHAUSTIVE: [TearMode; 6] = [
        TearMode::Nothing,
        TearMode::Prefix(1),
        TearMode::Half,
        TearMode::Garbage,
        TearMode::Prefix(usize::MAX - 1),
        TearMode::All,
    ];
}

/// Test double: cuts power at the k-th write call.
///
/// That write is applied only partly (see [`TearMode`]) and returns
/// [`StorageError::PowerLost`], as does every later read, write and flush:
/// the device is off. Recover by taking the inner storage
/// ([`TearingStorage::into_inner`]) and opening it again, as a reboot does.
#[derive(Clone, Debug)]
pub struct TearingStorage<S> {
    inner: S,
    writes: usize,
    cut_at_write: Option<usize>,
    mode: TearMode,
    power_lost: bool,
}

impl<S: Storage> TearingStorage<S> {
    /// Passes every call through and only counts writes.
    pub fn new(inner: S) -> Self {
        TearingStorage {
            inner,
            writes: 0,
            cut_at_write: None,
            mode: TearMode::Nothing,
            power_lost: false,
        }
    }

    /// Cuts power at write call number `cut_at_write` (1-based, counted from
    /// now) with `mode`. Zero never cuts.
    pub fn with_cut(inner: S, cut_at_write: usize, mode: TearMode) -> Self {
        TearingStorage {
            cut_at_write: (cut_at_write > 0).then_some(cut_at_write),
            mode,
            ..TearingStorage::new(inner)
        }
    }

    /// Arms (or re-arms) the cut: power is lost at the `n`-th write from now.
    pub fn cut_after(&mut self, n: usize, mode: TearMode) {
        self.cut_at_write = self.writes.checked_add(n).filter(|_| n > 0);
        self.mode = mode;
    }

    /// Write calls made while power was on, including the torn one.
    pub fn writes(&self) -> usize {
        self.writes
    }

    /// True once power has been cut.
    pub fn power_lost(&self) -> bool {
        self.power_lost
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped storage, holding whatever reached it before the cut.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn torn_prefix(&self, data: &[u8]) -> Vec<u8> {
        let half = data.len() / 2;
        match self.mode {
            TearMode::Nothing => Vec::new(),
            TearMode::Half => data.get(..half).unwrap_or(data).to_vec(),
            TearMode::Prefix(n) => data.get(..n).unwrap_or(data).to_vec(),
            TearMode::All => data.to_vec(),
            TearMode::Garbage => data
                .iter()
                .enumerate()
                .map(|(i, b)| if i < half { *b } else { !*b })
                .collect(),
        }
    }
}

impl<S: Storage> Storage for TearingStorage<S> {
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        if self.power_lost {
            return Err(StorageError::PowerLost);
        }
        self.inner.read(offset, buf)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        if self.power_lost {
            return Err(StorageError::PowerLost);
        }
        self.writes = self.writes.saturating_add(1);
        if self.cut_at_write != Some(self.writes) {
            return self.inner.write(offset, data);
        }
        self.power_lost = true;
        let prefix = self.torn_prefix(data);
        if !prefix.is_empty() {
            // What reaches the cells is all that matters; the caller sees
            // PowerLost either way.
            let _ = self.inner.write(offset, &prefix);
        }
        Err(StorageError::PowerLost)
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if self.power_lost {
            return Err(StorageError::PowerLost);
        }
        self.inner.flush()
    }
}

/// Size of a commit record.
pub const HEADER_LEN: usize = 88;
/// Payload bytes per write call during a commit.
pub const WRITE_CHUNK_LEN: usize = 256;
/// Journal format version written by this code: 3, a base state followed
/// by a log of records. Versions 1 (SHA-256 of the payload in the commit
/// record) and 2 (CRC-32, no log) are still read; see [`payload_check`].
pub const FORMAT_VERSION: u16 = 3;
/// Log bytes a slot may hold after its base state before [`Journal::append`]
/// answers [`StorageError::LogFull`] (unless [`Journal::set_log_max`]
/// changes it). It bounds what boot replays.
pub const LOG_BYTES_MAX: usize = 8 * 1024;
/// Framing of one log record: a 4-byte commit mark and a 2-byte length
/// before the body, a 4-byte check after it.
pub const RECORD_OVERHEAD: usize = 10;
/// Largest record body (the length field is a `u16`; `0xFFFF` and `0`
/// mark the end of the log).
pub const RECORD_BODY_MAX: usize = 0xFFFE;

const MAGIC: [u8; 4] = *b"TLYJ";
const HASHED_HEADER_LEN: usize = 56;
const SLOT_COUNT: usize = 2;

/// The commit record of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    version: u16,
    sequence: u64,
    payload_len: u32,
    payload_check: [u8; 32],
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer {
            buf: &mut out,
            at: 0,
        };
        w.put(&MAGIC);
        w.put(&self.version.to_le_bytes());
        w.put(&[0, 0]);
        w.put(&self.sequence.to_le_bytes());
        w.put(&self.payload_len.to_le_bytes());
        w.put(&[0, 0, 0, 0]);
        w.put(&self.payload_check);
        let hash = sha256(w.written());
        w.put(&hash);
        out
    }

    /// Classifies a header as read from storage.
    fn decode(bytes: &[u8; HEADER_LEN]) -> Result<HeaderState, StorageError> {
        if bytes.iter().all(|b| *b == 0x00) || bytes.iter().all(|b| *b == 0xFF) {
            return Ok(HeaderState::Blank);
        }
        let (hashed, check) = bytes.split_at(HASHED_HEADER_LEN);
        let mut r = Reader { buf: hashed };
        let (Some(magic), Some(version), Some(reserved_a), Some(sequence)) =
            (r.take::<4>(), r.take::<2>(), r.take::<2>(), r.take::<8>())
        else {
            return Ok(HeaderState::Torn);
        };
        let (Some(payload_len), Some(reserved_b), Some(payload_check)) =
            (r.take::<4>(), r.take::<4>(), r.take::<32>())
        else {
            return Ok(HeaderState::Torn);
        };
        if magic != MAGIC || sha256(hashed).as_slice() != check {
            return Ok(HeaderState::Torn);
        }
        let version = u16::from_le_bytes(version);
        if !(1..=FORMAT_VERSION).contains(&version) || reserved_a != [0; 2] || reserved_b != [0; 4]
        {
            return Err(StorageError::UnsupportedVersion);
        }
        Ok(HeaderState::Authentic(Header {
            version,
            sequence: u64::from_le_bytes(sequence),
            payload_len: u32::from_le_bytes(payload_len),
            payload_check,
        }))
    }
}

/// Appends to a fixed buffer; encodes only constant-size fields.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.at.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        debug_assert!(end <= self.buf.len(), "header field past HEADER_LEN");
        self.at = end;
    }

    fn written(&self) -> &[u8] {
        self.buf.get(..self.at).unwrap_or(&[])
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.buf.split_first_chunk::<N>()?;
        self.buf = rest;
        Some(*head)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeaderState {
    Blank,
    Torn,
    Authentic(Header),
}

/// What recovery found in one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SlotState {
    Blank,
    Torn,
    /// Authentic header whose payload is out of bounds or fails its hash.
    Damaged {
        sequence: u64,
    },
    /// Authentic, and its payload in bounds; once [`Journal::open`] has
    /// checked it (in pieces, not kept: boot reads only the winning
    /// slot's payload into RAM), valid. A slot older than a valid one is
    /// left unchecked: it is never read.
    Valid {
        header: Header,
    },
}

impl SlotState {
    fn authentic_sequence(&self) -> Option<u64> {
        match self {
            SlotState::Damaged { sequence } => Some(*sequence),
            SlotState::Valid { header, .. } => Some(header.sequence),
            SlotState::Blank | SlotState::Torn => None,
        }
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The payload check a commit record of `version` carries.
///
/// It detects a payload that is not what the commit wrote (bit rot, a
/// write that failed silently, a slot overwritten behind the journal's
/// back); ordering, not this check, makes commits atomic (the record is
/// written after its payload is flushed). Version 2 uses CRC-32: every
/// commit re-checks the whole state, and SHA-256 of a 4 KB state was a
/// quarter of a PAY on a Cortex-M4 (0.26 M of 1.17 M instructions) for no
/// protection a CRC lacks here. Neither stops a deliberate change: whoever
/// can write the storage can recompute either; the SE's storage lies
/// inside its boundary, and `Sealing` authenticates the payload where it
/// does not (docs/decisions/0001-journal-shadow-slots.md).
fn payload_check(version: u16, payload: &[u8]) -> [u8; 32] {
    if version == 1 {
        return sha256(payload);
    }
    let mut out = [0u8; 32];
    out[..4].copy_from_slice(&crc32(payload).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), with a 1 KiB
/// table built at compile time, one table step per byte.
fn crc32(data: &[u8]) -> u32 {
    !crc32_update(!0, data)
}

/// Feeds `data` into a running CRC-32 register (start with `!0`, finish
/// with `!`).
fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    // Four bytes at a time: the register is reflected (least significant
    // byte first), so XOR-ing a little-endian word into it and taking
    // four table steps is the four bytes one by one; it saves the loop's
    // per-byte overhead (boot checks the base and the log, up to 24 KB
    // after a long offline run: 8 → about 4.5 instructions a byte on
    // the Cortex-M4, docs/PERFORMANCE.md).
    let step = |crc: u32| TABLE[(crc & 0xFF) as usize] ^ (crc >> 8);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        crc ^= u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        crc = step(step(step(step(crc))));
    }
    for &b in words.remainder() {
        crc = step(crc ^ u32::from(b));
    }
    crc
}

/// The check of log record number `index` (0-based) with `body`, chained
/// to the check before it (`previous`: the record before, or for the
/// first record the base's anchor, [`anchor_of`]).
fn record_check(previous: u32, index: u32, body: &[u8]) -> u32 {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut crc = crc32_update(!0, &previous.to_le_bytes());
    crc = crc32_update(crc, &index.to_le_bytes());
    crc = crc32_update(crc, &len.to_le_bytes());
    !crc32_update(crc, body)
}

/// The commit mark of log record `index`: written after the record itself
/// has landed, at its start. It depends on the chain, not on the body, so
/// a record whose check fails under a valid mark was complete once and was
/// damaged since (not torn by a power cut), and a stale mark of another
/// log never matches.
fn mark_of(previous: u32, index: u32) -> u32 {
    let mut crc = crc32_update(!0, b"TLYC");
    crc = crc32_update(crc, &previous.to_le_bytes());
    !crc32_update(crc, &index.to_le_bytes())
}

/// What the first record of a slot's log chains to: the first four bytes
/// (little-endian) of the SHA-256 that ends the base's commit record, so
/// a log belongs to exactly one base (its sequence number and payload
/// check) and stale records of an earlier base in the same slot never
/// replay.
fn anchor_of(header: &Header) -> u32 {
    let encoded = header.encode();
    let mut a = [0u8; 4];
    a.copy_from_slice(&encoded[HASHED_HEADER_LEN..HASHED_HEADER_LEN + 4]);
    u32::from_le_bytes(a)
}

/// Where the current slot's log stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Log {
    /// Absolute offset of the first record (right after the base payload).
    start: usize,
    /// Absolute offset where the next record goes.
    end: usize,
    /// Valid records.
    count: u32,
    /// Check of the last valid record (the anchor when there is none).
    check: u32,
}

/// The state the journal last committed or recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    slot: usize,
    header: Header,
}

/// What makes a payload in pieces for [`Journal::commit_pieces`]: it
/// hands each piece, in order, to the sink it is given, and stops when the
/// sink answers false; it answers whether it got to the end.
pub type Pieces<'a> = dyn FnMut(&mut dyn FnMut(&[u8]) -> bool) -> bool + 'a;

/// What recovery found in a storage (see [`Journal::open`]).
struct Recovered {
    slot_len: usize,
    current: Option<Current>,
    next_sequence: u64,
    newer_state_discarded: bool,
}

/// Transactional storage of one opaque state blob (see the module docs for
/// layout and recovery rules).
///
/// After a commit fails with any storage error (typically
/// [`StorageError::PowerLost`]) the outcome is unknown: the old or the new
/// state may have survived. The journal then refuses further commits and
/// reads with [`StorageError::NeedsRecovery`]; reopen it
/// ([`Journal::recover`], or [`Journal::open`] after a reboot) to learn
/// which state is current.
#[derive(Debug)]
pub struct Journal<S: Storage> {
    storage: S,
    slot_len: usize,
    current: Option<Current>,
    /// The current slot's log, once scanned ([`Journal::replay`], or the
    /// first [`Journal::append`]).
    log: Option<Log>,
    log_max: usize,
    next_sequence: u64,
    needs_recovery: bool,
    newer_state_discarded: bool,
}

impl<S: Storage> Journal<S> {
    /// Recovers the journal at boot. Returns it with the current state:
    /// `None` if nothing was ever committed.
    pub fn open(mut storage: S) -> Result<(Self, Option<Vec<u8>>), StorageError> {
        let (found, payload) = Self::recover_from(&mut storage)?;
        let journal = Journal {
            storage,
            slot_len: found.slot_len,
            current: found.current,
            log: None,
            log_max: LOG_BYTES_MAX,
            next_sequence: found.next_sequence,
            needs_recovery: false,
            newer_state_discarded: found.newer_state_discarded,
        };
        Ok((journal, payload))
    }

    /// Reopens the journal in place, as [`Journal::open`] after a reboot
    /// (the log limit set is kept): the applet rolls its state back to
    /// the durable one this way when a command fails after changing it in
    /// memory (decision 0024).
    pub fn reopen(&mut self) -> Result<Option<Vec<u8>>, StorageError> {
        let (found, payload) = Self::recover_from(&mut self.storage)?;
        self.slot_len = found.slot_len;
        self.current = found.current;
        self.log = None;
        self.next_sequence = found.next_sequence;
        self.needs_recovery = false;
        self.newer_state_discarded = found.newer_state_discarded;
        Ok(payload)
    }

    fn recover_from(storage: &mut S) -> Result<(Recovered, Option<Vec<u8>>), StorageError> {
        let slot_len = storage.capacity() / SLOT_COUNT;
        if slot_len <= HEADER_LEN {
            return Err(StorageError::CapacityTooSmall);
        }
        let payload_max = slot_payload_max(slot_len);
        let mut slots = [
            read_slot(storage, 0, payload_max)?,
            read_slot(storage, slot_len, payload_max)?,
        ];
        // Payloads are checked newest first, in pieces (not kept: boot
        // reads the winner's once, below). An older slot's payload only
        // matters when every newer one is damaged, or when both slots
        // carry one sequence number: else it is not read at all.
        let newest_first = if slots[1].authentic_sequence() > slots[0].authentic_sequence() {
            [1, 0]
        } else {
            [0, 1]
        };
        let mut valid: Option<u64> = None;
        // The first payload that passes its check is read whole, once, and
        // checked in RAM: it is the winner unless the other slot carries
        // the same sequence number (then both are identical, below). Boot
        // after a long offline run reads a base of 16 KB (docs/PERFORMANCE.md).
        let mut first: Option<(usize, Vec<u8>)> = None;
        for index in newest_first {
            let SlotState::Valid { header } = slots[index] else {
                continue;
            };
            if valid.is_some_and(|v| v > header.sequence) {
                continue;
            }
            let offset = (index * slot_len)
                .checked_add(HEADER_LEN)
                .ok_or(StorageError::OutOfBounds)?;
            let len = payload_len(&header)?;
            let check = if first.is_none() {
                let mut payload = vec![0u8; len];
                storage.read(offset, &mut payload)?;
                let check = payload_check(header.version, &payload);
                if check == header.payload_check {
                    first = Some((index, payload));
                }
                check
            } else {
                payload_check_of_stored(storage, offset, len, header.version)?
            };
            if check == header.payload_check {
                valid = Some(header.sequence);
            } else {
                slots[index] = SlotState::Damaged {
                    sequence: header.sequence,
                };
            }
        }
        let highest_authentic = slots.iter().filter_map(SlotState::authentic_sequence).max();
        let mut best: Option<(usize, Header)> = None;
        for (index, slot) in slots.iter().enumerate() {
            if let SlotState::Valid { header } = slot {
                match best {
                    Some((_, b)) if b.sequence == header.sequence => {
                        // Two valid commits with one sequence number cannot
                        // come from this code unless they are identical:
                        // same length and, both payloads having just
                        // matched their checks, the same check (what the
                        // checks are for: a power cut, not a forger).
                        if b.payload_len != header.payload_len
                            || b.payload_check != header.payload_check
                        {
                            return Err(StorageError::Corrupt);
                        }
                    }
                    Some((_, b)) if b.sequence > header.sequence => {}
                    _ => best = Some((index, *header)),
                }
            }
        }
        let (current, payload) = match best {
            Some((slot, header)) => {
                let payload = match first {
                    // Read and checked above.
                    Some((index, payload)) if index == slot => payload,
                    _ => {
                        // Checked in pieces just now (nothing writes the
                        // storage in between).
                        let mut payload = vec![0u8; payload_len(&header)?];
                        let offset = (slot * slot_len)
                            .checked_add(HEADER_LEN)
                            .ok_or(StorageError::OutOfBounds)?;
                        storage.read(offset, &mut payload)?;
                        payload
                    }
                };
                (Some(Current { slot, header }), Some(payload))
            }
            None => match &slots {
                [SlotState::Blank, SlotState::Blank]
                | [SlotState::Blank, SlotState::Torn]
                | [SlotState::Torn, SlotState::Blank] => (None, None),
                _ => return Err(StorageError::Corrupt),
            },
        };
        let next_sequence = match highest_authentic {
            Some(s) => s.checked_add(1).ok_or(StorageError::SequenceExhausted)?,
            None => 1,
        };
        let newer_state_discarded = match (current, highest_authentic) {
            (Some(c), Some(h)) => h > c.header.sequence,
            _ => false,
        };
        let found = Recovered {
            slot_len,
            current,
            next_sequence,
            newer_state_discarded,
        };
        Ok((found, payload))
    }

    /// Reopens the journal from its storage, as a reboot would; use it
    /// after a commit failed.
    pub fn recover(self) -> Result<(Self, Option<Vec<u8>>), StorageError> {
        Journal::open(self.storage)
    }

    /// Largest payload a commit accepts, in bytes.
    pub fn payload_max(&self) -> usize {
        slot_payload_max(self.slot_len)
    }

    /// Sequence number of the current state; `None` before the first
    /// commit.
    pub fn sequence(&self) -> Option<u64> {
        self.current.map(|c| c.header.sequence)
    }

    /// True when recovery skipped an authentic commit newer than the state
    /// it returned because that commit's payload failed its check. A power
    /// cut cannot cause this; it means the storage was altered.
    pub fn newer_state_discarded(&self) -> bool {
        self.newer_state_discarded
    }

    /// True after a failed commit, until the journal is reopened.
    pub fn needs_recovery(&self) -> bool {
        self.needs_recovery
    }

    /// The underlying storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The underlying storage, consuming the journal.
    pub fn into_inner(self) -> S {
        self.storage
    }

    /// Reads the current state back from storage and checks its hash.
    pub fn read_current(&mut self) -> Result<Option<Vec<u8>>, StorageError> {
        if self.needs_recovery {
            return Err(StorageError::NeedsRecovery);
        }
        let Some(current) = self.current else {
            return Ok(None);
        };
        let mut payload = vec![0u8; payload_len(&current.header)?];
        self.storage
            .read(self.payload_offset(current.slot), &mut payload)?;
        if payload_check(current.header.version, &payload) != current.header.payload_check {
            return Err(StorageError::Corrupt);
        }
        Ok(Some(payload))
    }

    /// Atomically replaces the state with `payload`.
    ///
    /// On `Ok` the new state is durable. On `Err(TooLarge)`,
    /// `Err(NeedsRecovery)` or `Err(SequenceExhausted)` nothing was
    /// written. On any other error the outcome is unknown and the journal
    /// must be reopened (see [`Journal`]).
    pub fn commit(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        if self.needs_recovery {
            return Err(StorageError::NeedsRecovery);
        }
        if u32::try_from(payload.len()).is_err() || payload.len() > self.payload_max() {
            return Err(StorageError::TooLarge);
        }
        self.commit_pieces(&mut |sink| sink(payload))
    }

    /// [`Journal::commit`] of a payload made in pieces: `produce` hands
    /// each piece, in order, to the sink it is given (which answers false
    /// to stop it), and the pieces go to the other slot in
    /// [`WRITE_CHUNK_LEN`]-byte writes as they come, the payload check
    /// computed on the way. The payload is never whole in RAM: a
    /// compaction writes the state straight from its decoded form
    /// (decision 0024). The writes are those of [`Journal::commit`] with
    /// the same payload, so a power cut has the same outcomes.
    ///
    /// `Err(TooLarge)` once the pieces pass [`Journal::payload_max`]:
    /// what was written of them is in the slot that does not hold the
    /// current state, under its old commit record, and is never read (the
    /// journal stays usable). Other errors as for [`Journal::commit`].
    pub fn commit_pieces(&mut self, produce: &mut Pieces<'_>) -> Result<(), StorageError> {
        if self.needs_recovery {
            return Err(StorageError::NeedsRecovery);
        }
        let sequence = self.next_sequence;
        let next_sequence = sequence
            .checked_add(1)
            .ok_or(StorageError::SequenceExhausted)?;
        let slot = match self.current {
            Some(c) => (c.slot + 1) % SLOT_COUNT,
            None => 0,
        };
        let payload_offset = self.payload_offset(slot);
        let payload_max = self.payload_max();

        // From here on the inactive slot changes; a failure leaves it in an
        // unknown state and only recovery can tell which commit survived.
        self.needs_recovery = true;
        let mut chunk: Vec<u8> = Vec::with_capacity(WRITE_CHUNK_LEN);
        let mut written = 0usize;
        let mut crc = !0u32;
        let mut failed: Option<StorageError> = None;
        let storage = &mut self.storage;
        let mut put = |chunk: &mut Vec<u8>, written: &mut usize, crc: &mut u32| {
            let end = written.saturating_add(chunk.len());
            if end > payload_max {
                return Err(StorageError::TooLarge);
            }
            let offset = payload_offset
                .checked_add(*written)
                .ok_or(StorageError::OutOfBounds)?;
            storage.write(offset, chunk)?;
            *crc = crc32_update(*crc, chunk);
            *written = end;
            chunk.clear();
            Ok(())
        };
        let produced = produce(&mut |mut piece: &[u8]| {
            while !piece.is_empty() {
                let take = WRITE_CHUNK_LEN.saturating_sub(chunk.len()).min(piece.len());
                let (head, rest) = piece.split_at(take);
                chunk.extend_from_slice(head);
                piece = rest;
                if chunk.len() == WRITE_CHUNK_LEN
                    && let Err(e) = put(&mut chunk, &mut written, &mut crc)
                {
                    failed = Some(e);
                    return false;
                }
            }
            true
        });
        if failed.is_none()
            && !chunk.is_empty()
            && let Err(e) = put(&mut chunk, &mut written, &mut crc)
        {
            failed = Some(e);
        }
        match (produced, failed) {
            (_, Some(StorageError::TooLarge)) => {
                // The current slot and its log are untouched; the other
                // slot's commit record still names its old payload, which
                // no longer matches it: recovery skips that slot.
                self.needs_recovery = false;
                return Err(StorageError::TooLarge);
            }
            (_, Some(e)) => return Err(e),
            (false, None) => return Err(StorageError::Io),
            (true, None) => {}
        }
        let payload_len = u32::try_from(written).map_err(|_| StorageError::TooLarge)?;
        let mut payload_check = [0u8; 32];
        payload_check[..4].copy_from_slice(&(!crc).to_le_bytes());
        let header = Header {
            sequence,
            payload_len,
            version: FORMAT_VERSION,
            payload_check,
        };
        self.storage.flush()?;
        self.write_header(slot, &header)?;
        self.needs_recovery = false;

        let start = payload_offset.saturating_add(written);
        self.current = Some(Current { slot, header });
        self.log = Some(Log {
            start,
            end: start,
            count: 0,
            check: anchor_of(&header),
        });
        self.next_sequence = next_sequence;
        self.newer_state_discarded = false;
        Ok(())
    }

    /// Sets how many log bytes a slot may hold after its base before
    /// [`Journal::append`] answers [`StorageError::LogFull`] (default
    /// [`LOG_BYTES_MAX`]; the slot's end bounds it anyway). Recovery reads
    /// whatever valid log a slot holds, whatever this is set to.
    pub fn set_log_max(&mut self, bytes: usize) {
        self.log_max = bytes;
    }

    /// Reads the current slot's log in order and hands each record's body
    /// to `visit`, stopping at the first record whose check fails (a torn
    /// append, or stale bytes): the valid prefix. An error from `visit`
    /// stops the replay and is returned. Boot calls it once, right after
    /// [`Journal::open`], to bring the base state up to date; a second call
    /// must find exactly the same records, or the storage changed behind
    /// the journal's back ([`StorageError::Corrupt`]).
    pub fn replay(
        &mut self,
        visit: &mut dyn FnMut(&[u8]) -> Result<(), StorageError>,
    ) -> Result<u32, StorageError> {
        if self.needs_recovery {
            return Err(StorageError::NeedsRecovery);
        }
        let Some(current) = self.current else {
            return Ok(0);
        };
        let start = self
            .payload_offset(current.slot)
            .saturating_add(payload_len(&current.header)?);
        let anchor = anchor_of(&current.header);
        let log = if current.header.version == FORMAT_VERSION {
            let limit = self
                .header_offset(current.slot)
                .saturating_add(self.slot_len);
            // No append writes past the log's limit: an unmarked "record"
            // beyond it is stale bytes, not read (its CRC over up to 64 KB
            // of old data was most of a boot, session 11).
            let unmarked_limit = start
                .saturating_add(self.log_max.max(LOG_BYTES_MAX))
                .min(limit);
            scan_log(
                &mut self.storage,
                start,
                limit,
                unmarked_limit,
                anchor,
                visit,
            )?
        } else {
            // Formats 1 and 2 have no log: whatever follows the payload is
            // stale bytes of older commits.
            Log {
                start,
                end: start,
                count: 0,
                check: anchor,
            }
        };
        if self.log.is_some_and(|known| known != log) {
            return Err(StorageError::Corrupt);
        }
        self.log = Some(log);
        Ok(log.count)
    }

    /// Records in the current slot's log (scanning it if not done yet).
    pub fn log_records(&mut self) -> Result<u32, StorageError> {
        Ok(self.scanned_log()?.map_or(0, |l| l.count))
    }

    /// Bytes the current slot's log holds, framing included.
    pub fn log_bytes(&mut self) -> Result<usize, StorageError> {
        Ok(self
            .scanned_log()?
            .map_or(0, |l| l.end.saturating_sub(l.start)))
    }

    fn scanned_log(&mut self) -> Result<Option<Log>, StorageError> {
        if self.log.is_none() && self.current.is_some() {
            self.replay(&mut |_| Ok(()))?;
        }
        Ok(self.log)
    }

    /// Durably appends one record to the current state's log: the state
    /// is now the base with every record replayed in order.
    ///
    /// One record: a 2-byte little-endian body length, the body, and a
    /// CRC-32 chained to the record before it (see the module docs),
    /// written after the last valid record in [`WRITE_CHUNK_LEN`]-byte
    /// writes and flushed. Until its last byte lands its check fails and
    /// recovery stops before it.
    ///
    /// `Err(LogFull)`: the record does not fit (or nothing was committed
    /// yet, or the current state is of an older format without a log);
    /// `Err(TooLarge)` for an empty or oversized body; then, as with
    /// `NeedsRecovery` and `SequenceExhausted`, nothing was written. Any
    /// other error leaves the outcome unknown, as for
    /// [`Journal::commit`].
    pub fn append(&mut self, body: &[u8]) -> Result<(), StorageError> {
        if self.needs_recovery {
            return Err(StorageError::NeedsRecovery);
        }
        if body.is_empty() || body.len() > RECORD_BODY_MAX {
            return Err(StorageError::TooLarge);
        }
        let Some(current) = self.current else {
            return Err(StorageError::LogFull);
        };
        if current.header.version != FORMAT_VERSION {
            return Err(StorageError::LogFull);
        }
        let Some(log) = self.scanned_log()? else {
            return Err(StorageError::LogFull);
        };
        let slot_end = self
            .header_offset(current.slot)
            .saturating_add(self.slot_len);
        let limit = slot_end.min(log.start.saturating_add(self.log_max));
        let next_end = log
            .end
            .checked_add(body.len().saturating_add(RECORD_OVERHEAD))
            .filter(|end| *end <= limit)
            .ok_or(StorageError::LogFull)?;
        let count = log.count.checked_add(1).ok_or(StorageError::LogFull)?;
        let check = record_check(log.check, log.count, body);
        let mark = mark_of(log.check, log.count);
        let len = u16::try_from(body.len()).map_err(|_| StorageError::TooLarge)?;
        // Length, body, check; on the stack for a small record (a stream
        // tick's), no allocation.
        let framed_len = body.len() + RECORD_OVERHEAD - 4;
        let mut small = [0u8; 64];
        let mut large = Vec::new();
        let framed: &mut [u8] = if framed_len <= small.len() {
            &mut small[..framed_len]
        } else {
            large.resize(framed_len, 0);
            &mut large
        };
        framed[..2].copy_from_slice(&len.to_le_bytes());
        framed[2..2 + body.len()].copy_from_slice(body);
        framed[2 + body.len()..].copy_from_slice(&check.to_le_bytes());
        let framed: &[u8] = framed;
        let framed_at = log.end.checked_add(4).ok_or(StorageError::OutOfBounds)?;

        self.needs_recovery = true;
        for (i, chunk) in framed.chunks(WRITE_CHUNK_LEN).enumerate() {
            let offset = framed_at
                .checked_add(i.saturating_mul(WRITE_CHUNK_LEN))
                .ok_or(StorageError::OutOfBounds)?;
            self.storage.write(offset, chunk)?;
        }
        self.storage.flush()?;
        // The record is durable (its check landed last); the mark at its
        // start says so, for recovery to tell later damage from a tear.
        self.storage.write(log.end, &mark.to_le_bytes())?;
        self.storage.flush()?;
        let mut landed = [0u8; 4];
        self.storage.read(log.end, &mut landed)?;
        if landed != mark.to_le_bytes() {
            return Err(StorageError::Corrupt);
        }
        self.needs_recovery = false;
        self.log = Some(Log {
            end: next_end,
            count,
            check,
            ..log
        });
        Ok(())
    }

    /// Writes a slot's commit record (its payload flushed before) and
    /// checks it landed.
    fn write_header(&mut self, slot: usize, header: &Header) -> Result<(), StorageError> {
        let encoded = header.encode();
        let header_offset = self.header_offset(slot);
        self.storage.write(header_offset, &encoded)?;
        self.storage.flush()?;
        // Past the point of no return: check the commit record landed.
        let mut check = [0u8; HEADER_LEN];
        self.storage.read(header_offset, &mut check)?;
        if check != encoded {
            return Err(StorageError::Corrupt);
        }
        Ok(())
    }

    fn header_offset(&self, slot: usize) -> usize {
        slot.saturating_mul(self.slot_len)
    }

    fn payload_offset(&self, slot: usize) -> usize {
        self.header_offset(slot).saturating_add(HEADER_LEN)
    }
}

/// Reads the valid prefix of a log that starts at `start`, ends before
/// `limit` and chains to `anchor`; hands each body to `visit`. A record
/// without its mark (the last one, its mark cut by a power loss, or stale
/// bytes) is only considered if it ends by `unmarked_limit`, the furthest
/// an append writes.
fn scan_log<S: Storage>(
    storage: &mut S,
    start: usize,
    limit: usize,
    unmarked_limit: usize,
    anchor: u32,
    visit: &mut dyn FnMut(&[u8]) -> Result<(), StorageError>,
) -> Result<Log, StorageError> {
    let mut log = Log {
        start,
        end: start,
        count: 0,
        check: anchor,
    };
    let mut body = Vec::new();
    // mark (4) | length (2) | body | check (4)
    while let Some(body_at) = log.end.checked_add(6).filter(|e| *e <= limit) {
        let mut head = [0u8; 6];
        storage.read(log.end, &mut head)?;
        let [m0, m1, m2, m3, l0, l1] = head;
        let marked = u32::from_le_bytes([m0, m1, m2, m3]) == mark_of(log.check, log.count);
        let len = usize::from(u16::from_le_bytes([l0, l1]));
        let next = body_at
            .checked_add(len)
            .and_then(|c| c.checked_add(4))
            .filter(|e| *e <= limit);
        let (Some(next), Some(count)) = (next, log.count.checked_add(1)) else {
            if marked {
                return Err(StorageError::Corrupt);
            }
            break;
        };
        if !marked && next > unmarked_limit {
            break;
        }
        let check = if (1..=RECORD_BODY_MAX).contains(&len) {
            // The buffer only grows (zeroed once, not per record): body
            // and check read in one piece.
            if body.len() < len + 4 {
                body.resize(len + 4, 0);
            }
            storage.read(body_at, &mut body[..len + 4])?;
            let (b, stored) = body[..len + 4].split_at(len);
            let stored = [stored[0], stored[1], stored[2], stored[3]];
            let check = record_check(log.check, log.count, b);
            (u32::from_le_bytes(stored) == check).then_some(check)
        } else {
            None
        };
        let Some(check) = check else {
            // Committed once (its mark landed after it) but not intact
            // now: damage, not a power cut. Unmarked: a torn append, or
            // stale bytes; the log ends here.
            if marked {
                return Err(StorageError::Corrupt);
            }
            break;
        };
        // A valid record whose mark did not land (power was cut while it
        // was written) is complete: it counts.
        visit(&body[..len])?;
        log = Log {
            end: next,
            count,
            check,
            ..log
        };
    }
    Ok(log)
}

fn slot_payload_max(slot_len: usize) -> usize {
    let max = slot_len.saturating_sub(HEADER_LEN);
    usize::try_from(u32::MAX).map_or(max, |limit| max.min(limit))
}

fn payload_len(header: &Header) -> Result<usize, StorageError> {
    usize::try_from(header.payload_len).map_err(|_| StorageError::Corrupt)
}

fn read_slot<S: Storage>(
    storage: &mut S,
    offset: usize,
    payload_max: usize,
) -> Result<SlotState, StorageError> {
    let mut raw = [0u8; HEADER_LEN];
    storage.read(offset, &mut raw)?;
    let header = match Header::decode(&raw)? {
        HeaderState::Blank => return Ok(SlotState::Blank),
        HeaderState::Torn => return Ok(SlotState::Torn),
        HeaderState::Authentic(header) => header,
    };
    match payload_len(&header) {
        // In bounds; the payload is checked by the caller (newest first).
        Ok(len) if len <= payload_max => Ok(SlotState::Valid { header }),
        _ => Ok(SlotState::Damaged {
            sequence: header.sequence,
        }),
    }
}

/// Bytes read at a time when a payload is checked in place.
const READ_PIECE_LEN: usize = 256;

/// [`payload_check`] of the `len` bytes at `offset`, read in pieces
/// (format 1, SHA-256, only left by old releases: read whole).
fn payload_check_of_stored<S: Storage>(
    storage: &mut S,
    offset: usize,
    len: usize,
    version: u16,
) -> Result<[u8; 32], StorageError> {
    if version == 1 {
        let mut payload = vec![0u8; len];
        storage.read(offset, &mut payload)?;
        return Ok(payload_check(version, &payload));
    }
    let mut buf = [0u8; READ_PIECE_LEN];
    let mut crc = !0u32;
    let mut at = 0usize;
    while at < len {
        let n = (len - at).min(READ_PIECE_LEN);
        let piece = &mut buf[..n];
        storage.read(
            offset.checked_add(at).ok_or(StorageError::OutOfBounds)?,
            piece,
        )?;
        crc = crc32_update(crc, piece);
        at += n;
    }
    let mut out = [0u8; 32];
    out[..4].copy_from_slice(&(!crc).to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::XorShift;

    const CAPACITY: usize = 2 * (HEADER_LEN + 4096);

    fn payload(tag: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| tag.wrapping_mul(31) ^ (i as u8) ^ ((i >> 8) as u8))
            .collect()
    }

    /// Storage bytes after committing each payload in turn to fresh storage.
    fn image_after(commits: &[Vec<u8>], fill: u8) -> Vec<u8> {
        let mut mem = MemStorage::from_bytes(vec![fill; CAPACITY]);
        {
            let (mut journal, state) = Journal::open(&mut mem).unwrap();
            assert_eq!(state, None);
            for p in commits {
                journal.commit(p).unwrap();
            }
        }
        mem.into_bytes()
    }

    fn reopen(bytes: Vec<u8>) -> Result<(Journal<MemStorage>, Option<Vec<u8>>), StorageError> {
        Journal::open(MemStorage::from_bytes(bytes))
    }

    #[test]
    fn blank_storage_opens_empty() {
        for fill in [0x00, 0xFF] {
            let (mut journal, state) = reopen(vec![fill; CAPACITY]).unwrap();
            assert_eq!(state, None);
            assert_eq!(journal.sequence(), None);
            assert_eq!(journal.read_current(), Ok(None));
            assert_eq!(journal.payload_max(), 4096);
        }
        assert_eq!(
            Journal::open(MemStorage::new(2 * HEADER_LEN + 1)).err(),
            Some(StorageError::CapacityTooSmall)
        );
        assert!(Journal::open(MemStorage::new(2 * HEADER_LEN + 2)).is_ok());
    }

    #[test]
    fn commit_and_reopen() {
        let mut mem = MemStorage::new(CAPACITY);
        let (mut journal, _) = Journal::open(&mut mem).unwrap();
        for (i, len) in [0usize, 1, 255, 256, 257, 1000, 4096]
            .into_iter()
            .enumerate()
        {
            let p = payload(i as u8, len);
            journal.commit(&p).unwrap();
            assert_eq!(journal.sequence(), Some(i as u64 + 1));
            assert_eq!(journal.read_current(), Ok(Some(p.clone())));
            let (again, state) = reopen(journal.storage().as_bytes().to_vec()).unwrap();
            assert_eq!(state, Some(p));
            assert_eq!(again.sequence(), Some(i as u64 + 1));
            assert!(!again.newer_state_discarded());
        }
    }

    #[test]
    fn too_large_writes_nothing() {
        let mut tearing = TearingStorage::new(MemStorage::new(CAPACITY));
        let (mut journal, _) = Journal::open(&mut tearing).unwrap();
        journal.commit(b"first").unwrap();
        let before = journal.storage().writes();
        assert_eq!(
            journal.commit(&payload(1, 4097)),
            Err(StorageError::TooLarge)
        );
        assert_eq!(journal.storage().writes(), before);
        assert!(!journal.needs_recovery());
        journal.commit(b"second").unwrap();
        assert_eq!(journal.read_current(), Ok(Some(b"second".to_vec())));
    }

    #[test]
    fn writes_are_chunked() {
        let mut tearing = TearingStorage::new(MemStorage::new(CAPACITY));
        let (mut journal, _) = Journal::open(&mut tearing).unwrap();
        journal.commit(&payload(0, 1000)).unwrap();
        // Four payload chunks and one header.
        assert_eq!(journal.storage().writes(), 4 + 1);
        journal.commit(&[]).unwrap();
        assert_eq!(journal.storage().writes(), 5 + 1);
    }

    /// A compaction writes the state in pieces of any size: the storage
    /// must end up byte for byte as after a commit of the whole payload,
    /// by the same writes (the tearing tests of `commit` cover both).
    #[test]
    fn a_commit_in_pieces_writes_what_a_commit_writes() {
        let history = [payload(1, 900), payload(2, 300)];
        for len in [0usize, 1, 255, 256, 257, 1000, 4096] {
            let next = payload(3, len);
            let mut whole =
                TearingStorage::new(MemStorage::from_bytes(image_after(&history, 0xFF)));
            let (mut journal, _) = Journal::open(&mut whole).unwrap();
            journal.commit(&next).unwrap();
            for piece_len in [1usize, 7, 256, 300] {
                let mut pieces =
                    TearingStorage::new(MemStorage::from_bytes(image_after(&history, 0xFF)));
                let (mut journal, _) = Journal::open(&mut pieces).unwrap();
                journal
                    .commit_pieces(&mut |sink| next.chunks(piece_len).all(&mut *sink))
                    .unwrap();
                assert_eq!(journal.read_current(), Ok(Some(next.clone())));
                assert_eq!(pieces.writes(), whole.writes(), "len {len} by {piece_len}");
                assert_eq!(
                    pieces.inner().as_bytes(),
                    whole.inner().as_bytes(),
                    "len {len} by {piece_len}"
                );
            }
        }
    }

    /// Pieces that outgrow the slot are refused part-way: the current
    /// state and its log stay, the journal keeps working, and the other
    /// slot's stale commit is never read as current.
    #[test]
    fn pieces_past_the_slot_are_refused_and_the_journal_stays_usable() {
        let mut mem = MemStorage::new(CAPACITY);
        let (mut journal, _) = Journal::open(&mut mem).unwrap();
        journal.commit(b"base one").unwrap();
        journal.commit(b"base two").unwrap();
        journal.append(b"record").unwrap();
        let big = payload(4, 4097);
        assert_eq!(
            journal.commit_pieces(&mut |sink| big.chunks(100).all(&mut *sink)),
            Err(StorageError::TooLarge)
        );
        assert!(!journal.needs_recovery());
        assert_eq!(journal.read_current(), Ok(Some(b"base two".to_vec())));
        let (mut again, state) = reopen(journal.storage().as_bytes().to_vec()).unwrap();
        assert_eq!(state, Some(b"base two".to_vec()));
        assert!(!again.newer_state_discarded());
        let mut records = Vec::new();
        again
            .replay(&mut |r| {
                records.push(r.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(records, vec![b"record".to_vec()]);
        journal.commit(b"base three").unwrap();
        let (_, state) = reopen(journal.storage().as_bytes().to_vec()).unwrap();
        assert_eq!(state, Some(b"base three".to_vec()));
    }

    /// Two valid commit records with one sequence number (a commit
    /// retried after a cut that landed it) must name the same payload;
    /// anything else is corruption, not a state to pick from.
    #[test]
    fn two_valid_commits_with_one_sequence_must_agree() {
        let slot_1 = CAPACITY / 2;
        let with_slot_1 = |payload: &[u8]| {
            let mut mem = MemStorage::new(CAPACITY);
            {
                let (mut j, _) = Journal::open(&mut mem).unwrap();
                j.commit(b"first").unwrap();
            }
            let header = Header {
                version: FORMAT_VERSION,
                sequence: 1,
                payload_len: payload.len() as u32,
                payload_check: payload_check(FORMAT_VERSION, payload),
            };
            mem.write(slot_1 + HEADER_LEN, payload).unwrap();
            mem.write(slot_1, &header.encode()).unwrap();
            Journal::open(mem).map(|(_, state)| state)
        };
        assert_eq!(with_slot_1(b"first"), Ok(Some(b"first".to_vec())));
        assert_eq!(with_slot_1(b"other"), Err(StorageError::Corrupt));
        assert_eq!(with_slot_1(b"first and more"), Err(StorageError::Corrupt));
    }

    /// A journal reopened in place finds what a reboot finds.
    #[test]
    fn reopen_in_place_is_a_reboot() {
        let mut mem = MemStorage::new(CAPACITY);
        let (mut journal, _) = Journal::open(&mut mem).unwrap();
        journal.commit(b"base").unwrap();
        journal.append(b"one").unwrap();
        assert_eq!(journal.reopen(), Ok(Some(b"base".to_vec())));
        assert_eq!(journal.sequence(), Some(1));
        assert_eq!(journal.log_records(), Ok(1));
        journal.append(b"two").unwrap();
        assert_eq!(journal.log_records(), Ok(2));
    }

    /// Number of write calls `commit(next)` makes on top of `image`.
    fn writes_of_commit(image: &[u8], next: &[u8]) -> usize {
        let mut tearing = TearingStorage::new(MemStorage::from_bytes(image.to_vec()));
        let (mut journal, _) = Journal::open(&mut tearing).unwrap();
        journal.commit(next).unwrap();
        tearing.writes()
    }

    /// Cuts power at every write of `commit(next)` on top of `history`
    /// (already committed) with every tear mode, reboots, and checks the
    /// recovered state is exactly the old or the new one.
    fn check_every_tear(history: &[Vec<u8>], next: &[u8], fill: u8) {
        let image = image_after(history, fill);
        let old = history.last().cloned();
        let total = writes_of_commit(&image, next);
        for k in 1..=total {
            for mode in TearMode::EXHAUSTIVE {
                let mut tearing =
                    TearingStorage::with_cut(MemStorage::from_bytes(image.clone()), k, mode);
                let (mut journal, state) = Journal::open(&mut tearing).unwrap();
                assert_eq!(state, old);
                assert_eq!(journal.commit(next), Err(StorageError::PowerLost));
                assert!(journal.needs_recovery());
                assert_eq!(journal.commit(next), Err(StorageError::NeedsRecovery));
                assert_eq!(journal.read_current(), Err(StorageError::NeedsRecovery));
                assert!(tearing.power_lost());
                let bytes = tearing.into_inner().into_bytes();

                let (mut journal, recovered) = reopen(bytes.clone()).unwrap();
                let header_write = k == total;
                let header_complete = header_write
                    && match mode {
                        TearMode::All => true,
                        TearMode::Prefix(n) => n >= HEADER_LEN,
                        _ => false,
                    };
                let expected = if header_complete {
                    Some(next.to_vec())
                } else {
                    old.clone()
                };
                assert_eq!(
                    recovered,
                    expected,
                    "k={k}/{total} mode={mode:?} history={}",
                    history.len()
                );
                assert!(!journal.newer_state_discarded());
                assert_eq!(journal.read_current(), Ok(expected.clone()));

                // The recovered journal keeps working, and a later tear
                // still recovers.
                let after = payload(0xEE, 300);
                journal.commit(&after).unwrap();
                let (_, state) = reopen(journal.into_inner().into_bytes()).unwrap();
                assert_eq!(state, Some(after));
            }
        }
    }

    #[test]
    fn exhaustive_tearing_over_a_commit_sequence() {
        let lens = [0usize, 1, 300, 4096, 256, 700, 5, 4096, 0, 513];
        let commits: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, len)| payload(i as u8 + 1, *len))
            .collect();
        for fill in [0x00, 0xFF] {
            for n in 0..commits.len() {
                let (history, rest) = commits.split_at(n);
                if let Some(next) = rest.first() {
                    check_every_tear(history, next, fill);
                }
            }
        }
    }

    #[test]
    fn identical_payload_recommit_tears_safely() {
        let p = payload(9, 600);
        check_every_tear(&[p.clone(), p.clone()], &p, 0xFF);
        check_every_tear(core::slice::from_ref(&p), &p, 0xFF);
    }

    #[test]
    fn repeated_tears_then_success() {
        // Several failed attempts in a row at one commit, each rebooting.
        let mut bytes = image_after(&[b"a".to_vec(), b"b".to_vec()], 0xFF);
        let next = payload(3, 2000);
        for (k, mode) in [
            (1, TearMode::Half),
            (3, TearMode::Garbage),
            (9, TearMode::Nothing),
        ] {
            let storage = TearingStorage::with_cut(MemStorage::from_bytes(bytes), k, mode);
            let (mut journal, state) = Journal::open(storage).unwrap();
            assert_eq!(state, Some(b"b".to_vec()));
            assert_eq!(journal.commit(&next), Err(StorageError::PowerLost));
            bytes = journal.into_inner().into_inner().into_bytes();
        }
        let (mut journal, state) = reopen(bytes).unwrap();
        assert_eq!(state, Some(b"b".to_vec()));
        journal.commit(&next).unwrap();
        assert_eq!(journal.sequence(), Some(3));
        let (_, state) = reopen(journal.into_inner().into_bytes()).unwrap();
        assert_eq!(state, Some(next));
    }

    #[test]
    fn recover_after_power_lost_with_all_bytes_written() {
        let image = image_after(&[b"old".to_vec()], 0xFF);
        let storage = TearingStorage::with_cut(MemStorage::from_bytes(image), 1, TearMode::Nothing);
        let (mut journal, _) = Journal::open(storage).unwrap();
        assert_eq!(journal.sequence(), Some(1));
        assert_eq!(journal.commit(b"new"), Err(StorageError::PowerLost));
        // The in-memory journal does not claim the new state.
        assert_eq!(journal.sequence(), Some(1));
        assert_eq!(journal.recover().err(), Some(StorageError::PowerLost));

        // Header write lands fully but reports PowerLost: after reboot the
        // new state is current.
        let image = image_after(&[b"old".to_vec()], 0xFF);
        let storage = TearingStorage::with_cut(MemStorage::from_bytes(image), 2, TearMode::All);
        let (mut journal, _) = Journal::open(storage).unwrap();
        assert_eq!(journal.commit(b"new"), Err(StorageError::PowerLost));
        let bytes = journal.into_inner().into_inner().into_bytes();
        let (journal, state) = reopen(bytes).unwrap();
        assert_eq!(state, Some(b"new".to_vec()));
        assert_eq!(journal.sequence(), Some(2));
    }

    fn slot_offset(slot: usize) -> usize {
        slot * (CAPACITY / 2)
    }

    #[test]
    fn damaged_newest_payload_falls_back_to_previous_state() {
        let mut bytes = image_after(&[b"one".to_vec(), b"two".to_vec()], 0xFF);
        // "two" (sequence 2) is in slot 1.
        bytes[slot_offset(1) + HEADER_LEN] ^= 0x01;
        let (mut journal, state) = reopen(bytes).unwrap();
        assert_eq!(state, Some(b"one".to_vec()));
        assert_eq!(journal.sequence(), Some(1));
        assert!(journal.newer_state_discarded());
        // The next commit gets a sequence number above the discarded one.
        journal.commit(b"three").unwrap();
        assert_eq!(journal.sequence(), Some(3));
        assert!(!journal.newer_state_discarded());
        let (journal, state) = reopen(journal.into_inner().into_bytes()).unwrap();
        assert_eq!(state, Some(b"three".to_vec()));
        assert_eq!(journal.sequence(), Some(3));
    }

    #[test]
    fn damaged_only_commit_is_corrupt_not_empty() {
        let mut bytes = image_after(&[b"only".to_vec()], 0xFF);
        bytes[slot_offset(0) + HEADER_LEN + 2] ^= 0x80;
        assert_eq!(reopen(bytes).err(), Some(StorageError::Corrupt));
    }

    #[test]
    fn both_slots_invalid_is_corrupt() {
        let mut bytes = image_after(&[b"one".to_vec(), b"two".to_vec()], 0xFF);
        bytes[slot_offset(0) + 9] ^= 0x01;
        bytes[slot_offset(1) + 9] ^= 0x01;
        assert_eq!(reopen(bytes).err(), Some(StorageError::Corrupt));

        let mut bytes = image_after(&[b"one".to_vec(), b"two".to_vec()], 0xFF);
        bytes[slot_offset(0) + HEADER_LEN] ^= 0x01;
        bytes[slot_offset(1) + HEADER_LEN] ^= 0x01;
        assert_eq!(reopen(bytes).err(), Some(StorageError::Corrupt));
    }

    #[test]
    fn torn_first_header_means_never_committed() {
        let mut bytes = vec![0xFF; CAPACITY];
        bytes[..10].copy_from_slice(b"TLYJ\x01\x00\x00\x00\x01\x00");
        let (journal, state) = reopen(bytes).unwrap();
        assert_eq!(state, None);
        assert_eq!(journal.sequence(), None);
    }

    /// Storage whose reads can be made to return flipped bytes, to model
    /// cells that decay after boot.
    struct DecayingStorage {
        inner: MemStorage,
        decayed: core::cell::Cell<bool>,
    }

    impl Storage for DecayingStorage {
        fn capacity(&self) -> usize {
            self.inner.capacity()
        }
        fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
            self.inner.read(offset, buf)?;
            if self.decayed.get()
                && let Some(b) = buf.first_mut()
            {
                *b ^= 0x01;
            }
            Ok(())
        }
        fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
            self.inner.write(offset, data)
        }
        fn flush(&mut self) -> Result<(), StorageError> {
            self.inner.flush()
        }
    }

    #[test]
    fn read_current_detects_corruption_since_open() {
        let storage = DecayingStorage {
            inner: MemStorage::from_bytes(image_after(&[b"value".to_vec()], 0xFF)),
            decayed: core::cell::Cell::new(false),
        };
        let (mut journal, state) = Journal::open(storage).unwrap();
        assert_eq!(state, Some(b"value".to_vec()));
        assert_eq!(journal.read_current(), Ok(Some(b"value".to_vec())));
        journal.storage().decayed.set(true);
        assert_eq!(journal.read_current(), Err(StorageError::Corrupt));
        // A commit whose header does not read back as written fails and
        // asks for recovery.
        assert_eq!(journal.commit(b"next"), Err(StorageError::Corrupt));
        assert!(journal.needs_recovery());
        assert_eq!(journal.sequence(), Some(1));
    }

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        // Four bytes at a time is one byte at a time, for every length
        // and wherever a running register is split.
        fn bytewise(mut crc: u32, data: &[u8]) -> u32 {
            for &b in data {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        0xEDB8_8320 ^ (crc >> 1)
                    } else {
                        crc >> 1
                    };
                }
            }
            crc
        }
        let data: Vec<u8> = (0..70u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..data.len() {
            let d = &data[..len];
            assert_eq!(crc32_update(!0, d), bytewise(!0, d));
            for cut in 0..len {
                let (a, b) = d.split_at(cut);
                assert_eq!(crc32_update(crc32_update(!0, a), b), bytewise(!0, d));
            }
        }
    }

    #[test]
    fn version_1_journal_is_read_and_the_next_commit_writes_version_2() {
        // A store written by the previous format: SHA-256 payload check.
        let mut bytes = image_after(&[b"one".to_vec()], 0xFF);
        let v1 = Header {
            version: 1,
            sequence: 1,
            payload_len: 3,
            payload_check: sha256(b"one"),
        };
        let slot = bytes[..HEADER_LEN].to_vec();
        assert_eq!(u16::from_le_bytes([slot[4], slot[5]]), FORMAT_VERSION);
        bytes[..HEADER_LEN].copy_from_slice(&v1.encode());
        let (mut journal, current) = Journal::open(MemStorage::from_bytes(bytes.clone())).unwrap();
        assert_eq!(current.as_deref(), Some(&b"one"[..]));
        assert_eq!(
            journal.read_current().unwrap().as_deref(),
            Some(&b"one"[..])
        );
        // A damaged version-1 payload is still found damaged.
        let mut bad = bytes;
        bad[HEADER_LEN] ^= 1;
        assert!(!matches!(
            Journal::open(MemStorage::from_bytes(bad)),
            Ok((_, Some(_)))
        ));
        journal.commit(b"two").unwrap();
        let (_, current) = Journal::open(MemStorage::from_bytes(
            journal.into_inner().as_bytes().to_vec(),
        ))
        .unwrap();
        assert_eq!(current.as_deref(), Some(&b"two"[..]));
    }

    #[test]
    fn unsupported_version_is_reported() {
        let mut bytes = image_after(&[b"one".to_vec()], 0xFF);
        let header = &mut bytes[..HEADER_LEN];
        header[4] = 4;
        let hash = sha256(&header[..HASHED_HEADER_LEN]);
        header[HASHED_HEADER_LEN..].copy_from_slice(&hash);
        assert_eq!(reopen(bytes).err(), Some(StorageError::UnsupportedVersion));
    }

    #[test]
    fn authentic_header_with_oversized_length_is_damaged() {
        let mut bytes = image_after(&[b"one".to_vec(), b"two".to_vec()], 0xFF);
        let header = &mut bytes[slot_offset(1)..slot_offset(1) + HEADER_LEN];
        header[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let hash = sha256(&header[..HASHED_HEADER_LEN]);
        header[HASHED_HEADER_LEN..].copy_from_slice(&hash);
        let (journal, state) = reopen(bytes).unwrap();
        assert_eq!(state, Some(b"one".to_vec()));
        assert!(journal.newer_state_discarded());
    }

    #[test]
    fn random_flips_never_panic_or_invent_state() {
        let history = [payload(1, 100), payload(2, 900), payload(3, 40)];
        let image = image_after(&history, 0xFF);
        let known = [history[1].clone(), history[2].clone()];
        let mut rng = XorShift(0x7A11_5E00_0000_0001);
        for round in 0..3000 {
            let mut bytes = image.clone();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let slot = rng.below(2);
                // Mostly headers, sometimes payloads.
                let within = if round % 4 == 0 {
                    rng.below(CAPACITY / 2)
                } else {
                    rng.below(HEADER_LEN)
                };
                bytes[slot_offset(slot) + within] ^= 1 << rng.below(8);
            }
            match reopen(bytes) {
                Ok((_, Some(state))) => assert!(known.contains(&state)),
                Ok((_, None)) => panic!("committed state vanished"),
                Err(e) => assert_eq!(e, StorageError::Corrupt),
            }
        }
        // Arbitrary garbage in both headers.
        for _ in 0..2000 {
            let mut bytes = image.clone();
            for slot in 0..2 {
                for b in &mut bytes[slot_offset(slot)..slot_offset(slot) + HEADER_LEN] {
                    *b = rng.next() as u8;
                }
            }
            assert_eq!(reopen(bytes).err(), Some(StorageError::Corrupt));
        }
    }

    #[test]
    fn mem_storage_bounds() {
        let mut mem = MemStorage::new(16);
        assert_eq!(mem.capacity(), 16);
        assert_eq!(mem.write(10, &[1; 6]), Ok(()));
        assert_eq!(mem.write(11, &[1; 6]), Err(StorageError::OutOfBounds));
        assert_eq!(mem.write(usize::MAX, &[1]), Err(StorageError::OutOfBounds));
        let mut buf = [0u8; 6];
        assert_eq!(mem.read(10, &mut buf), Ok(()));
        assert_eq!(buf, [1; 6]);
        assert_eq!(mem.read(16, &mut []), Ok(()));
        assert_eq!(mem.read(17, &mut []), Err(StorageError::OutOfBounds));
        assert_eq!(mem.read(12, &mut buf), Err(StorageError::OutOfBounds));
        assert_eq!(mem.as_bytes()[..10], [ERASED_BYTE; 10]);
        let copy = mem.clone().into_bytes();
        assert_eq!(MemStorage::from_bytes(copy), mem);
    }

    #[test]
    fn tearing_storage_modes() {
        let data: Vec<u8> = (1..=10).collect();
        let cases: [(TearMode, Vec<u8>); 6] = [
            (TearMode::Nothing, vec![0; 10]),
            (TearMode::Half, [&data[..5], &[0; 5][..]].concat()),
            (TearMode::Prefix(3), [&data[..3], &[0; 7][..]].concat()),
            (TearMode::Prefix(99), data.clone()),
            (TearMode::All, data.clone()),
            (
                TearMode::Garbage,
                data.iter()
                    .enumerate()
                    .map(|(i, b)| if i < 5 { *b } else { !*b })
                    .collect(),
            ),
        ];
        for (mode, expected) in cases {
            let mut s = TearingStorage::with_cut(MemStorage::from_bytes(vec![0; 10]), 2, mode);
            assert_eq!(s.write(0, &[0; 10]), Ok(()));
            assert_eq!(s.flush(), Ok(()));
            assert!(!s.power_lost());
            assert_eq!(s.write(0, &data), Err(StorageError::PowerLost));
            assert!(s.power_lost());
            assert_eq!(s.writes(), 2);
            // Everything afterwards fails and changes nothing.
            assert_eq!(s.write(0, &[7; 10]), Err(StorageError::PowerLost));
            assert_eq!(s.flush(), Err(StorageError::PowerLost));
            assert_eq!(s.read(0, &mut [0; 1]), Err(StorageError::PowerLost));
            assert_eq!(s.writes(), 2);
            assert_eq!(s.inner().as_bytes(), &expected[..], "{mode:?}");
            assert_eq!(s.into_inner().into_bytes(), expected);
        }
        // Never cuts without a configured write, and cut_after re-arms.
        let mut s = TearingStorage::new(MemStorage::new(4));
        for _ in 0..100 {
            assert_eq!(s.write(0, &[1]), Ok(()));
        }
        s.cut_after(2, TearMode::Nothing);
        assert_eq!(s.write(1, &[2]), Ok(()));
        assert_eq!(s.write(2, &[3]), Err(StorageError::PowerLost));
        assert_eq!(s.writes(), 102);
        assert_eq!(s.into_inner().into_bytes(), vec![1, 2, 0xFF, 0xFF]);
        let mut s = TearingStorage::with_cut(MemStorage::new(4), 0, TearMode::Nothing);
        assert_eq!(s.write(0, &[1]), Ok(()));
    }

    #[test]
    fn errors_display() {
        for e in [
            StorageError::OutOfBounds,
            StorageError::PowerLost,
            StorageError::TooLarge,
            StorageError::Corrupt,
            StorageError::Io,
            StorageError::CapacityTooSmall,
            StorageError::UnsupportedVersion,
            StorageError::NeedsRecovery,
            StorageError::SequenceExhausted,
            StorageError::LogFull,
        ] {
            assert!(!alloc::format!("{e}").is_empty());
        }
    }

    // ---- the log (format 3) ------------------------------------------------

    /// One journal operation of a test history.
    #[derive(Clone, Debug)]
    enum Op {
        Commit(Vec<u8>),
        Append(Vec<u8>),
    }

    /// What a journal holds, as recovery sees it: the base and the records
    /// of its log's valid prefix.
    type Logical = (Option<Vec<u8>>, Vec<Vec<u8>>);

    fn apply_op<S: Storage>(journal: &mut Journal<S>, op: &Op) -> Result<(), StorageError> {
        match op {
            Op::Commit(p) => journal.commit(p),
            Op::Append(r) => journal.append(r),
        }
    }

    fn model_after(ops: &[Op]) -> Logical {
        let mut base = None;
        let mut records = Vec::new();
        for op in ops {
            match op {
                Op::Commit(p) => {
                    base = Some(p.clone());
                    records.clear();
                }
                Op::Append(r) => records.push(r.clone()),
            }
        }
        (base, records)
    }

    fn image_of(ops: &[Op], fill: u8) -> Vec<u8> {
        let mut mem = MemStorage::from_bytes(vec![fill; CAPACITY]);
        {
            let (mut journal, _) = Journal::open(&mut mem).unwrap();
            for op in ops {
                apply_op(&mut journal, op).unwrap();
            }
        }
        mem.into_bytes()
    }

    fn recover_logical<S: Storage>(storage: S) -> (Journal<S>, Logical) {
        let (mut journal, base) = Journal::open(storage).unwrap();
        let mut records = Vec::new();
        journal
            .replay(&mut |r| {
                records.push(r.to_vec());
                Ok(())
            })
            .unwrap();
        (journal, (base, records))
    }

    /// Whether a cut at write `k` of `total` (with `mode`) leaves the new
    /// state: for a commit, once its commit record (the last write) landed
    /// in full; for an append, once the record's last chunk (the write
    /// before its commit mark) did.
    fn new_state_landed(op: &Op, k: usize, total: usize, mode: TearMode) -> bool {
        let (point, len) = match op {
            Op::Commit(_) => (total, HEADER_LEN),
            Op::Append(r) => (
                total - 1,
                match (r.len() + RECORD_OVERHEAD - 4) % WRITE_CHUNK_LEN {
                    0 => WRITE_CHUNK_LEN,
                    n => n,
                },
            ),
        };
        k > point
            || (k == point
                && match mode {
                    TearMode::All => true,
                    TearMode::Prefix(n) => n >= len,
                    _ => false,
                })
    }

    /// Cuts power at every write of `next` on top of `history` in every
    /// tear mode, reboots, and checks that recovery finds exactly the old
    /// or the new logical state — the new one only when the last write
    /// (the commit record, or the record's end with its check) landed in
    /// full — and that the journal keeps working afterwards.
    fn check_every_tear_of(history: &[Op], next: &Op, fill: u8) {
        let image = image_of(history, fill);
        let old = model_after(history);
        let new = model_after(&[history, core::slice::from_ref(next)].concat());
        let total = {
            let mut t = TearingStorage::new(MemStorage::from_bytes(image.clone()));
            let (mut j, _) = Journal::open(&mut t).unwrap();
            apply_op(&mut j, next).unwrap();
            t.writes()
        };
        for k in 1..=total {
            for mode in TearMode::EXHAUSTIVE {
                let mut tearing =
                    TearingStorage::with_cut(MemStorage::from_bytes(image.clone()), k, mode);
                let (mut journal, _) = Journal::open(&mut tearing).unwrap();
                assert_eq!(
                    apply_op(&mut journal, next),
                    Err(StorageError::PowerLost),
                    "k={k}"
                );
                assert!(journal.needs_recovery());
                assert_eq!(journal.append(b"more"), Err(StorageError::NeedsRecovery));
                let bytes = tearing.into_inner().into_bytes();
                let (mut journal, got) = recover_logical(MemStorage::from_bytes(bytes));
                let landed = new_state_landed(next, k, total, mode);
                let expected = if landed { &new } else { &old };
                assert_eq!(
                    &got,
                    expected,
                    "k={k}/{total} mode={mode:?} next={next:?} history={}",
                    history.len()
                );
                assert!(!journal.newer_state_discarded());
                // It keeps working: an append lands after the valid prefix
                // (over any torn bytes), and a compaction after it.
                journal.append(&payload(0xA1, 40)).unwrap();
                let (mut journal, got) = recover_logical(journal.into_inner());
                let mut want = expected.clone();
                want.1.push(payload(0xA1, 40));
                assert_eq!(got, want, "append after recovery, k={k} mode={mode:?}");
                journal.commit(&payload(0xEE, 300)).unwrap();
                journal.append(&payload(0xA2, 7)).unwrap();
                let (_, got) = recover_logical(journal.into_inner());
                assert_eq!(got, (Some(payload(0xEE, 300)), vec![payload(0xA2, 7)]));
            }
        }
    }

    #[test]
    fn appended_records_replay_in_order_after_reopen() {
        let mut mem = MemStorage::new(CAPACITY);
        let (mut journal, _) = Journal::open(&mut mem).unwrap();
        assert_eq!(journal.append(b"x"), Err(StorageError::LogFull));
        journal.commit(b"base").unwrap();
        assert_eq!(journal.append(&[]), Err(StorageError::TooLarge));
        let records: Vec<Vec<u8>> = (0..5u8)
            .map(|i| payload(i, 10 + 100 * i as usize))
            .collect();
        for r in &records {
            journal.append(r).unwrap();
        }
        assert_eq!(journal.log_records(), Ok(5));
        assert_eq!(journal.sequence(), Some(1));
        let (mut again, got) = recover_logical(MemStorage::from_bytes(mem.as_bytes().to_vec()));
        assert_eq!(got, (Some(b"base".to_vec()), records.clone()));
        assert_eq!(again.log_records(), Ok(5));
        // A second replay finds the same records.
        assert_eq!(again.replay(&mut |_| Ok(())), Ok(5));
        // An error from the visitor stops the replay.
        let mut seen = 0;
        assert_eq!(
            again.replay(&mut |_| {
                seen += 1;
                if seen == 2 {
                    Err(StorageError::Corrupt)
                } else {
                    Ok(())
                }
            }),
            Err(StorageError::Corrupt)
        );
        assert_eq!(seen, 2);
    }

    #[test]
    fn a_full_log_asks_for_compaction_and_writes_nothing() {
        let mut tearing = TearingStorage::new(MemStorage::new(CAPACITY));
        let (mut journal, _) = Journal::open(&mut tearing).unwrap();
        journal.commit(b"base").unwrap();
        journal.set_log_max(100);
        journal.append(&payload(1, 50)).unwrap();
        let before = journal.storage().writes();
        assert_eq!(journal.append(&payload(2, 50)), Err(StorageError::LogFull));
        assert_eq!(journal.storage().writes(), before);
        assert!(!journal.needs_recovery());
        // Exactly what fits still fits.
        journal
            .append(&payload(3, 100 - 60 - RECORD_OVERHEAD))
            .unwrap();
        assert_eq!(journal.log_bytes(), Ok(100));
        // Compaction: the whole state into the other slot, a fresh log.
        journal.commit(b"compacted").unwrap();
        assert_eq!(journal.log_records(), Ok(0));
        journal.append(b"after").unwrap();
        let (_, got) = recover_logical(MemStorage::from_bytes(
            journal.into_inner().inner().as_bytes().to_vec(),
        ));
        assert_eq!(got, (Some(b"compacted".to_vec()), vec![b"after".to_vec()]));
        // The slot's end bounds the log whatever the limit.
        let mut mem = MemStorage::new(2 * (HEADER_LEN + 64));
        let (mut journal, _) = Journal::open(&mut mem).unwrap();
        journal.commit(&payload(4, 50)).unwrap();
        assert_eq!(journal.append(&[1; 5]), Err(StorageError::LogFull));
        journal.append(&[1; 4]).unwrap();
    }

    #[test]
    fn exhaustive_tearing_of_appends() {
        let base = Op::Commit(payload(1, 700));
        let records = [1usize, 30, 250, 251, 600, 2];
        for fill in [0x00, 0xFF] {
            let mut history = vec![base.clone()];
            for (i, len) in records.iter().enumerate() {
                let next = Op::Append(payload(0x40 + i as u8, *len));
                check_every_tear_of(&history, &next, fill);
                history.push(next);
            }
        }
    }

    #[test]
    fn exhaustive_tearing_of_compaction() {
        for fill in [0x00, 0xFF] {
            // A log in slot 0, compacted into slot 1; then a log in slot
            // 1 compacted back over slot 0's stale log.
            let mut history = vec![
                Op::Commit(payload(1, 300)),
                Op::Append(payload(2, 80)),
                Op::Append(payload(3, 500)),
            ];
            let next = Op::Commit(payload(4, 900));
            check_every_tear_of(&history, &next, fill);
            history.push(next);
            history.push(Op::Append(payload(5, 20)));
            check_every_tear_of(&history, &Op::Commit(payload(1, 300)), fill);
        }
    }

    /// Storage that counts the bytes read from it.
    struct CountingReads {
        inner: MemStorage,
        read: usize,
    }
    impl Storage for CountingReads {
        fn capacity(&self) -> usize {
            self.inner.capacity()
        }
        fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
            self.read += buf.len();
            self.inner.read(offset, buf)
        }
        fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
            self.inner.write(offset, data)
        }
        fn flush(&mut self) -> Result<(), StorageError> {
            self.inner.flush()
        }
    }

    /// Stale bytes after the log that read as an unmarked record longer
    /// than any append writes are not read (its CRC over old data was
    /// most of a boot, session 11); the log's records all replay.
    #[test]
    fn stale_bytes_after_the_log_are_not_read_as_a_long_record() {
        let slot = HEADER_LEN + 128 * 1024;
        let mut journal = Journal::open(MemStorage::new(2 * slot)).unwrap().0;
        journal.commit(&payload(1, 100)).unwrap();
        journal.append(&payload(2, 40)).unwrap();
        journal.append(&payload(3, 40)).unwrap();
        let end = HEADER_LEN + 100 + 2 * (40 + RECORD_OVERHEAD);
        assert_eq!(journal.log_bytes().unwrap(), 2 * (40 + RECORD_OVERHEAD));
        let mut storage = journal.into_inner();
        // An unmarked head whose length fits the slot, not the log.
        let mut stale = [0x5Au8; 6];
        stale[4..].copy_from_slice(&60_000u16.to_le_bytes());
        storage.write(end, &stale).unwrap();
        let (mut journal, base) = Journal::open(CountingReads {
            inner: storage,
            read: 0,
        })
        .unwrap();
        assert_eq!(base, Some(payload(1, 100)));
        let mut records = Vec::new();
        let n = journal
            .replay(&mut |r| {
                records.push(r.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(records, vec![payload(2, 40), payload(3, 40)]);
        let read = journal.storage().read;
        assert!(read < LOG_BYTES_MAX + 1024, "{read} bytes read");
    }

    #[test]
    fn stale_records_of_an_earlier_base_never_replay() {
        // The same base payload lands in slot 0 twice; slot 0's first log
        // is still in place behind the second copy.
        let p = payload(1, 300);
        let ops = [
            Op::Commit(p.clone()),
            Op::Append(payload(2, 40)),
            Op::Append(payload(3, 40)),
            Op::Commit(payload(9, 10)),
            Op::Commit(p.clone()),
        ];
        let image = image_of(&ops, 0xFF);
        let (journal, got) = recover_logical(MemStorage::from_bytes(image.clone()));
        assert_eq!(got, (Some(p), vec![]));
        assert_eq!(journal.sequence(), Some(3));
        // The stale bytes are there.
        let at = HEADER_LEN + 300 + 4;
        assert_eq!(&image[at..at + 2], &40u16.to_le_bytes());
    }

    #[test]
    fn a_reordered_damaged_or_replayed_record_ends_the_valid_prefix() {
        let ops = [
            Op::Commit(payload(1, 100)),
            Op::Append(payload(2, 40)),
            Op::Append(payload(3, 40)),
            Op::Append(payload(4, 40)),
        ];
        let image = image_of(&ops, 0xFF);
        let first = HEADER_LEN + 100;
        let framed = 40 + RECORD_OVERHEAD;
        let rec = |i: usize| first + i * framed..first + (i + 1) * framed;
        // Swap records 1 and 2: only record 0 stays.
        let mut swapped = image.clone();
        let (a, b) = (image[rec(1)].to_vec(), image[rec(2)].to_vec());
        swapped[rec(1)].copy_from_slice(&b);
        swapped[rec(2)].copy_from_slice(&a);
        let (_, got) = recover_logical(MemStorage::from_bytes(swapped));
        assert_eq!(got.1, vec![payload(2, 40)]);
        // Record 0 copied over record 1 (a replay): only record 0 stays.
        let mut replayed = image.clone();
        replayed[rec(1)].copy_from_slice(&image[rec(0)]);
        let (_, got) = recover_logical(MemStorage::from_bytes(replayed));
        assert_eq!(got.1, vec![payload(2, 40)]);
        // A flipped bit in any byte of record 2: in its commit mark, the
        // record still counts (a mark torn by a power cut); in its length,
        // body or check, under its mark, it was damaged after it was
        // committed, which no power cut does: the log is corrupt.
        for i in rec(2) {
            let mut bad = image.clone();
            bad[i] ^= 0x04;
            let (mut journal, base) = Journal::open(MemStorage::from_bytes(bad)).unwrap();
            assert_eq!(base, Some(payload(1, 100)));
            let mut got = Vec::new();
            let r = journal.replay(&mut |b| {
                got.push(b.to_vec());
                Ok(())
            });
            if i < rec(2).start + 4 {
                assert_eq!(r, Ok(3), "byte {i}");
            } else {
                assert_eq!(r, Err(StorageError::Corrupt), "byte {i}");
                assert_eq!(got, vec![payload(2, 40), payload(3, 40)], "byte {i}");
            }
        }
        // Storage changed between boot's replay and a later one.
        let mut mem = MemStorage::from_bytes(image);
        let (mut journal, _) = recover_logical(&mut mem);
        journal.storage.as_bytes_mut()[rec(2).start + 5] ^= 1;
        assert_eq!(journal.replay(&mut |_| Ok(())), Err(StorageError::Corrupt));
    }

    #[test]
    fn a_version_2_state_is_read_and_migrated_by_its_first_commit() {
        let mut bytes = image_after(&[b"one".to_vec()], 0xFF);
        let v2 = Header {
            version: 2,
            sequence: 1,
            payload_len: 3,
            payload_check: payload_check(2, b"one"),
        };
        bytes[..HEADER_LEN].copy_from_slice(&v2.encode());
        // Bytes after a version-2 payload are never a log, even valid-looking.
        let rec = [
            &3u16.to_le_bytes()[..],
            b"abc",
            &record_check(anchor_of(&v2), 0, b"abc").to_le_bytes(),
        ]
        .concat();
        bytes[HEADER_LEN + 3..HEADER_LEN + 3 + rec.len()].copy_from_slice(&rec);
        let (mut journal, got) = recover_logical(MemStorage::from_bytes(bytes));
        assert_eq!(got, (Some(b"one".to_vec()), vec![]));
        assert_eq!(journal.append(b"rec"), Err(StorageError::LogFull));
        assert!(!journal.needs_recovery());
        journal.commit(b"one").unwrap();
        journal.append(b"rec").unwrap();
        let (_, got) = recover_logical(journal.into_inner());
        assert_eq!(got, (Some(b"one".to_vec()), vec![b"rec".to_vec()]));
    }

    #[test]
    fn repeated_tears_of_one_append_then_success() {
        let mut bytes = image_of(
            &[Op::Commit(payload(1, 100)), Op::Append(payload(2, 30))],
            0xFF,
        );
        let next = payload(3, 600);
        for (k, mode) in [
            (1, TearMode::Half),
            (3, TearMode::Garbage),
            (2, TearMode::Prefix(1)),
        ] {
            let storage = TearingStorage::with_cut(MemStorage::from_bytes(bytes), k, mode);
            let (mut journal, _) = recover_logical(storage);
            assert_eq!(journal.append(&next), Err(StorageError::PowerLost));
            bytes = journal.into_inner().into_inner().into_bytes();
            let (_, got) = recover_logical(MemStorage::from_bytes(bytes.clone()));
            assert_eq!(got.1, vec![payload(2, 30)]);
        }
        let (mut journal, _) = recover_logical(MemStorage::from_bytes(bytes));
        journal.append(&next).unwrap();
        let (_, got) = recover_logical(journal.into_inner());
        assert_eq!(got.1, vec![payload(2, 30), next]);
    }

    #[test]
    fn sequence_exhaustion_is_an_error() {
        let mut bytes = image_after(&[b"one".to_vec()], 0xFF);
        let header = &mut bytes[..HEADER_LEN];
        header[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let hash = sha256(&header[..HASHED_HEADER_LEN]);
        header[HASHED_HEADER_LEN..].copy_from_slice(&hash);
        assert_eq!(reopen(bytes).err(), Some(StorageError::SequenceExhausted));
    }
}
