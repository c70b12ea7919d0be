//! Payment streams (issue 13 item 1, decision 0020): the hash chain whose
//! elements are the ticks, the payer's traversal of it, and the payee's
//! one-hash check of a tick.
//!
//! The chain: `x_0` is derived from the payer SE's secret and the stream
//! id, `x_{j+1} = H("tally/v1/chain", x_j)`, and with `N` ticks element
//! `h_i = x_{N-i}`, so `h_i = H(h_{i+1})` and the anchor is `h_0 = x_N`.
//! The payer releases `h_1, h_2, …, h_N` in that order; the payee checks
//! `H(h_{k+1}) == h_k` against the latest element it holds (one hash) and
//! keeps only that one. Settlement checks a claim `(k, h_k)` against the
//! anchor with `k` hashes ([`reaches_anchor`]).
//!
//! The tag is 14 bytes so that one chain step is one SHA-256 compression
//! (4 + 14 + 4 + 32 = 54 bytes of input, under the 55 that fit one block
//! with its padding): a tick costs the payee one compression.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::amount::Amount;
use crate::codec::{Cbor, CodecError, Reader, Writer};
use crate::crypto::{Hash32, PublicKey, tagged_hash};

/// Domain tag of one chain step (14 bytes: one SHA-256 block, see above).
pub const CHAIN_TAG: &[u8] = b"tally/v1/chain";
/// Domain tag of a stream's chain seed, derived in the payer's SE.
pub const SEED_TAG: &[u8] = b"tally/v1/stream-seed";
/// Bound on the ticks of one stream: bounds the payee's and settlement's
/// chain check ([`reaches_anchor`], at most this many hashes) and the
/// payer's pebbles (at most `log2` of it plus one).
pub const STREAM_TICKS_MAX: u32 = 1 << 16;
/// Chain elements the payer's traversal ([`Pebbles`]) keeps at most, for
/// [`STREAM_TICKS_MAX`] ticks: `⌈N/s⌉` checkpoints, a buffer of `s + 1`
/// and the next segment's top, with `s = ⌈√N⌉ = 256` (16.4 KB).
pub const PEBBLES_MAX: usize = 256 + 257 + 1;

/// Why a tick was refused. Each has a stable SE code (tally-codes
/// `SE_STREAM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickError {
    /// The element's index is not above the latest held: sent before.
    Replayed,
    /// The element's index skips ticks (the payee only takes `k + 1`).
    Skipped,
    /// The element does not hash to the latest held: not of this chain.
    Forged,
    /// Past the stream's last tick.
    Exhausted,
}

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The one SHA-256 block of a chain step, all but the element: the
/// [`tagged_hash`] encoding `len(tag) ‖ tag ‖ len(x)` before the element
/// (bytes 0..22), then SHA-256's padding after it (`0x80` at byte 54,
/// zeros, the message length 54 · 8 = 432 bits big-endian at the end).
const CHAIN_BLOCK: [u8; 64] = {
    let mut b = [0u8; 64];
    b[3] = CHAIN_TAG.len() as u8;
    let mut i = 0;
    while i < CHAIN_TAG.len() {
        b[4 + i] = CHAIN_TAG[i];
        i += 1;
    }
    b[21] = 32;
    b[54] = 0x80;
    b[62] = (432u16 >> 8) as u8;
    b[63] = 432u16 as u8;
    b
};
const _: () = assert!(4 + CHAIN_TAG.len() + 4 + 32 == 54, "one block");

/// One step towards the anchor: `H("tally/v1/chain", x)`, i.e.
/// `tagged_hash(CHAIN_TAG, &[&x.0])`. Computed as that digest's single
/// block given to sha2's own compression function (`compress256`, from
/// the initial value): the same SHA-256 (tested against [`tagged_hash`]),
/// without the streaming hasher's buffer copies, which cost about as much
/// as the compression itself on the Cortex-M4 (decision 0020, addendum
/// session 10). Nothing of SHA-256 is written here but its padding.
pub fn chain_step(x: &Hash32) -> Hash32 {
    #[cfg(test)]
    tests::STEPS.with(|c| c.set(c.get() + 1));
    let mut block = CHAIN_BLOCK;
    block[22..54].copy_from_slice(&x.0);
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, core::slice::from_ref(&block));
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    Hash32(out)
}

/// `steps` chain steps from `x`.
pub fn chain_walk(mut x: Hash32, steps: u32) -> Hash32 {
    for _ in 0..steps {
        x = chain_step(&x);
    }
    x
}

/// The chain's start `x_0 = h_N` from the payer SE's secret and the stream
/// id. Never leaves the SE.
pub fn chain_seed(se_secret: &[u8; 32], stream_id: &Hash32) -> Hash32 {
    tagged_hash(SEED_TAG, &[se_secret, &stream_id.0])
}

/// The payee's check of tick `k` carrying `element`, given the latest
/// element `latest` it holds for tick `k_latest` (the anchor for 0) in a
/// stream of `ticks_max` ticks. Exactly one hash for a good tick.
pub fn check_tick(
    latest: &Hash32,
    k_latest: u32,
    element: &Hash32,
    k: u32,
    ticks_max: u32,
) -> Result<(), TickError> {
    if k <= k_latest {
        return Err(TickError::Replayed);
    }
    if k > ticks_max {
        return Err(TickError::Exhausted);
    }
    if k != k_latest + 1 {
        return Err(TickError::Skipped);
    }
    if chain_step(element) != *latest {
        return Err(TickError::Forged);
    }
    Ok(())
}

/// Settlement's check of a claim `(k, h_k)`: `H^k(h_k) == anchor`, with
/// `k` bounded by the stream's ticks (so by [`STREAM_TICKS_MAX`]).
pub fn reaches_anchor(element: &Hash32, k: u32, ticks_max: u32, anchor: &Hash32) -> bool {
    k <= ticks_max && ticks_max <= STREAM_TICKS_MAX && chain_walk(*element, k) == *anchor
}

/// The terms of one stream, as settlement reads them from the OPEN
/// record (decision 0020; the record itself is not built yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTerms {
    pub price: Amount,
    pub ticks_max: u32,
    pub anchor: Hash32,
}

/// The index flag of a stream's payer half: the refund consumes
/// `OutPoint(open id, STREAM_REFUND_FLAG | index)`, an index no real
/// output can have (`RECORD_OUTPUTS_MAX` is 8), so each half is a distinct
/// entry in the spent registry and a second close of a half is an
/// ordinary double spend.
pub const STREAM_REFUND_FLAG: u8 = 0x80;

/// What a payee's request asks for instead of a one-off payment: `ticks_max`
/// ticks at `price` each (the request's amount is their product). Wire:
/// `[price, ticks_max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAsk {
    pub price: Amount,
    pub ticks_max: u32,
}

impl StreamAsk {
    /// The value the stream locks, `price · ticks_max`; `None` for terms no
    /// stream may have (zero price or ticks, too many ticks, overflow).
    pub fn value(&self) -> Option<Amount> {
        if self.price.is_zero() || self.ticks_max == 0 || self.ticks_max > STREAM_TICKS_MAX {
            return None;
        }
        self.price
            .0
            .checked_mul(u64::from(self.ticks_max))
            .map(Amount)
    }
}

impl Cbor for StreamAsk {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        w.u64(self.price.0);
        w.u64(u64::from(self.ticks_max));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        Ok(StreamAsk {
            price: Amount(r.u64()?),
            ticks_max: r.u32()?,
        })
    }
}

/// The terms an OPEN transfer gives its stream output `index` (decision
/// 0020): the payer's refund key, the price per tick, the ticks and the
/// chain's anchor. Covered by the payer's signature (they are in the
/// transfer's body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOpenTerms {
    pub index: u8,
    pub refund_key: PublicKey,
    pub ask: StreamAsk,
    pub anchor: Hash32,
}

impl StreamOpenTerms {
    /// What settlement's [`settle_stream`] reads.
    pub fn terms(&self) -> StreamTerms {
        StreamTerms {
            price: self.ask.price,
            ticks_max: self.ask.ticks_max,
            anchor: self.anchor,
        }
    }
}

/// The stream part of a transfer. Wire: `[0, index, refund_key, price,
/// ticks_max, anchor]` (OPEN), `[1, ticks, element]` (the payee's claim),
/// `[2, ticks]` (the payer's refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPart {
    /// The transfer opens a stream on its output `terms.index`.
    Open(StreamOpenTerms),
    /// The payee's close: consumes the stream output `(open, i)` and pays
    /// `ticks · price`; `element` is `h_ticks`, which settlement walks to
    /// the anchor.
    Claim { ticks: u32, element: Hash32 },
    /// The payer's close: consumes the payer half `(open, 0x80 | i)` and
    /// pays back `(ticks_max − ticks) · price` for the ticks not released.
    Refund { ticks: u32 },
}

impl Cbor for StreamPart {
    fn write(&self, w: &mut Writer) {
        match self {
            StreamPart::Open(t) => {
                w.array(6);
                w.u64(0);
                w.u64(u64::from(t.index));
                t.refund_key.write(w);
                w.u64(t.ask.price.0);
                w.u64(u64::from(t.ask.ticks_max));
                t.anchor.write(w);
            }
            StreamPart::Claim { ticks, element } => {
                w.array(3);
                w.u64(1);
                w.u64(u64::from(*ticks));
                element.write(w);
            }
            StreamPart::Refund { ticks } => {
                w.array(2);
                w.u64(2);
                w.u64(u64::from(*ticks));
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(6)?;
        match (r.u8()?, n) {
            (0, 6) => Ok(StreamPart::Open(StreamOpenTerms {
                index: r.u8()?,
                refund_key: PublicKey::read(r)?,
                ask: StreamAsk {
                    price: Amount(r.u64()?),
                    ticks_max: r.u32()?,
                },
                anchor: Hash32::read(r)?,
            })),
            (1, 3) => Ok(StreamPart::Claim {
                ticks: r.u32()?,
                element: Hash32::read(r)?,
            }),
            (2, 2) => Ok(StreamPart::Refund { ticks: r.u32()? }),
            (0..=2, _) => Err(CodecError::Malformed),
            _ => Err(CodecError::UnknownCode),
        }
    }
}

/// The stream id of the stream output `index` of the OPEN transfer
/// `open`: `H("tally/v1/stream", open id ‖ index)`.
pub fn stream_id(open: &Hash32, index: u8) -> Hash32 {
    tagged_hash(b"tally/v1/stream", &[&open.0, &[index]])
}

/// What the payer's SE derives a stream's chain seed from: its
/// transaction counter at OPEN (known before the transfer, whose id
/// depends on the anchor, exists; unique per SE).
pub fn chain_seed_input(counter: u64) -> Hash32 {
    tagged_hash(b"tally/v1/stream-seed-input", &[&counter.to_be_bytes()])
}

/// What settlement books for a stream from what it knows of its halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBooking {
    /// Paid to the payee's claim (`k_claim · p`), once its half is known.
    pub to_payee: Amount,
    /// Refunded to the payer (`(N − k_released) · p`), once its half is
    /// known.
    pub to_payer: Amount,
    /// Released but never claimed (`(k_released − k_claim) · p`), once
    /// both halves are known; until then the undetermined part stays in
    /// the float.
    pub leftover: Amount,
}

/// Why settlement refuses a stream's halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSettleError {
    /// Terms out of bounds (zero price or ticks, too many ticks, value
    /// overflow).
    Terms,
    /// A count above the stream's ticks.
    TooManyTicks,
    /// The claim's element does not walk to the anchor in `k` hashes.
    ChainMismatch,
    /// The payee claims more ticks than the payer released: only a broken
    /// or cloned SE can, so the claim is refused and alerted.
    ClaimAboveReleased { claimed: u32, released: u32 },
}

/// Settlement's check of a stream (decision 0020): the claim `(k, h_k)`
/// against the anchor, the refund count, and when both are known
/// `k_claim ≤ k_released`. What it books always sums to at most the
/// stream's value `N · p`, and exactly to it once both halves are known.
pub fn settle_stream(
    terms: &StreamTerms,
    claim: Option<(u32, &Hash32)>,
    released: Option<u32>,
) -> Result<StreamBooking, StreamSettleError> {
    let n = terms.ticks_max;
    let p = terms.price.0;
    if p == 0 || n == 0 || n > STREAM_TICKS_MAX {
        return Err(StreamSettleError::Terms);
    }
    let value = p
        .checked_mul(u64::from(n))
        .ok_or(StreamSettleError::Terms)?;
    if let Some((k, element)) = claim {
        if k > n {
            return Err(StreamSettleError::TooManyTicks);
        }
        if !reaches_anchor(element, k, n, &terms.anchor) {
            return Err(StreamSettleError::ChainMismatch);
        }
    }
    if released.is_some_and(|r| r > n) {
        return Err(StreamSettleError::TooManyTicks);
    }
    if let (Some((claimed, _)), Some(released)) = (claim, released)
        && claimed > released
    {
        return Err(StreamSettleError::ClaimAboveReleased { claimed, released });
    }
    // Each product is at most N·p, which fits.
    let to_payee = Amount(claim.map_or(0, |(k, _)| u64::from(k) * p));
    let to_payer = Amount(released.map_or(0, |r| u64::from(n - r) * p));
    let leftover = match (claim, released) {
        (Some((k, _)), Some(r)) => Amount(u64::from(r - k) * p),
        _ => Amount::ZERO,
    };
    let booked = to_payee.0 + to_payer.0 + leftover.0;
    assert!(booked <= value, "a stream books at most its value");
    if claim.is_some() && released.is_some() {
        assert_eq!(
            booked, value,
            "both halves known: the whole value is booked"
        );
    }
    Ok(StreamBooking {
        to_payee,
        to_payer,
        leftover,
    })
}

/// The payer's traversal of its chain in release order: the segment
/// traversal ([`Segments`]: at most one hash per tick, `64·√N` bytes of
/// RAM) when it fits the room the caller gives it, else binary pebbling
/// ([`Binary`]: about `½·log2 N` hashes per tick, at most `log2 N + 2`,
/// about 1 KB), so that an SE paying several long streams at once stays
/// within its RAM (decision 0020, addendum session 10).
#[derive(Clone, PartialEq, Eq)]
pub struct Pebbles(Kind);

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Segments(Segments),
    Binary(Binary),
}

impl core::fmt::Debug for Pebbles {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The elements are chain elements not yet released: secret.
        f.debug_struct("Pebbles")
            .field("segments", &matches!(self.0, Kind::Segments(_)))
            .field("pebbles", &self.len())
            .finish_non_exhaustive()
    }
}

/// Elements the segment traversal of `ticks_max` ticks holds at most
/// (`⌈N/s⌉ + s + 2`, `s = ⌈√N⌉`).
pub fn segments_len(ticks_max: u32) -> usize {
    let s = ceil_sqrt(ticks_max.max(1));
    (ticks_max.div_ceil(s) + s + 2) as usize
}

impl Pebbles {
    /// A fresh traversal of a chain of `ticks_max` ticks from its seed,
    /// and the chain's anchor (`N` hashes, once, at OPEN): the segment
    /// traversal. `None` for zero ticks or more than
    /// [`STREAM_TICKS_MAX`].
    pub fn open(seed: Hash32, ticks_max: u32) -> Option<(Pebbles, Hash32)> {
        Pebbles::open_in(seed, ticks_max, usize::MAX)
    }

    /// As [`Pebbles::open`], the segment traversal only if it holds at
    /// most `room` elements ([`segments_len`]), else binary pebbling.
    pub fn open_in(seed: Hash32, ticks_max: u32, room: usize) -> Option<(Pebbles, Hash32)> {
        if segments_len(ticks_max) <= room {
            Segments::open(seed, ticks_max).map(|(p, a)| (Pebbles(Kind::Segments(p)), a))
        } else {
            Binary::open(seed, ticks_max).map(|(p, a)| (Pebbles(Kind::Binary(p)), a))
        }
    }

    /// A traversal positioned so that the next release is tick
    /// `released + 1` (after a reboot: the elements were not durable):
    /// the segment traversal.
    pub fn resume(seed: Hash32, ticks_max: u32, released: u32) -> Option<Pebbles> {
        Pebbles::resume_in(seed, ticks_max, released, usize::MAX)
    }

    /// As [`Pebbles::resume`], within `room` elements as
    /// [`Pebbles::open_in`].
    pub fn resume_in(seed: Hash32, ticks_max: u32, released: u32, room: usize) -> Option<Pebbles> {
        if segments_len(ticks_max) <= room {
            Segments::resume(seed, ticks_max, released).map(|p| Pebbles(Kind::Segments(p)))
        } else {
            // Binary pebbling walks lazily: the first release after it
            // walks from the seed (at most N hashes, once).
            Binary::resume(seed, ticks_max, released).map(|p| Pebbles(Kind::Binary(p)))
        }
    }

    /// Element `h_k` (tick `k`, 1-based), releasing the ticks up to it.
    /// Ticks must be asked in rising order; `None` for tick 0, past the
    /// end, or a tick not above the last one taken.
    pub fn element(&mut self, k: u32) -> Option<Hash32> {
        match &mut self.0 {
            Kind::Segments(p) => p.element(k),
            Kind::Binary(p) => p.element(k),
        }
    }

    /// Elements held (RAM: 32 bytes each, 36 for binary pebbling).
    pub fn len(&self) -> usize {
        match &self.0 {
            Kind::Segments(p) => p.len(),
            Kind::Binary(p) => p.len(),
        }
    }

    /// Whether no element is left (the chain is used up).
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Kind::Segments(p) => p.is_empty(),
            Kind::Binary(p) => p.is_empty(),
        }
    }

    /// Whether this is the segment traversal.
    pub fn is_segments(&self) -> bool {
        matches!(self.0, Kind::Segments(_))
    }

    /// The segment traversal's buffer length and segment length.
    #[cfg(test)]
    fn segment_buffer(&self) -> Option<(usize, u32)> {
        match &self.0 {
            Kind::Segments(p) => Some((p.buf.len(), p.seg)),
            Kind::Binary(_) => None,
        }
    }
}

/// The payer's segment traversal of its chain in release order (decision 0020,
/// addendum session 10: checkpoints and one segment buffer). The
/// positions `0..N` (from the seed `x_0`; tick `k` releases position
/// `N − k`) are cut from the top into segments of `s = ⌈√N⌉` positions
/// (the lowest one may be shorter). The traversal keeps the element at
/// the base of every segment not started yet (its checkpoint) and, in one
/// buffer of at most `s + 1` elements, the current segment's unreleased
/// elements at one end and the next segment's, computed upwards from its
/// checkpoint one hash per tick, at the other. By the time the current
/// segment is used up the next one is complete (it needs `s − 1` hashes
/// and the current one lasts `s` ticks), so every tick costs at most one
/// hash, flat, with no spike at a segment's end. RAM: at most
/// `⌈N/s⌉ + s + 2` elements of 32 bytes, about `64·√N` bytes (6.4 KB for
/// 10,000 ticks, 16.4 KB for [`STREAM_TICKS_MAX`]).
///
/// OPEN walks the chain once (`N` hashes, the anchor at the end), keeping
/// the checkpoints and the top segment. Everything is RAM only: after a
/// reboot [`Segments::resume`] walks from the seed to the next tick's
/// position (at most `N` hashes, as OPEN) and computes up front whatever
/// part of the next segment the rest of the current one leaves no time
/// for (at most `s − 1` hashes), so the ticks after it cost one hash too.
#[derive(Clone, PartialEq, Eq)]
struct Segments {
    /// Checkpoints of the segments not started yet, positions rising
    /// (the last is the next to start).
    checkpoints: Vec<Hash32>,
    /// The current segment's unreleased elements at one end (its highest
    /// at that end), the next segment's computed elements at the other.
    buf: VecDeque<Hash32>,
    /// Elements of the current segment in `buf`.
    cur_left: u32,
    /// Whether the current segment is at the back of `buf` (else the
    /// front); the next segment is at the other end.
    from_back: bool,
    /// The current segment's lowest position.
    cur_base: u32,
    /// The next segment: its lowest position, the highest computed so
    /// far and its element (`None`: no segment below the current one).
    next: Option<(u32, u32, Hash32)>,
    /// Segment length `s`.
    seg: u32,
    ticks_max: u32,
    /// Ticks released (the next is `released + 1`).
    released: u32,
}

/// `⌈√n⌉` for `n ≥ 1`.
fn ceil_sqrt(n: u32) -> u32 {
    let mut s = 1u32;
    while s.saturating_mul(s) < n {
        s += 1;
    }
    s
}

impl Segments {
    /// A fresh traversal of a chain of `ticks_max` ticks from its seed,
    /// and the chain's anchor (`N` hashes, once, at OPEN). `None` for zero
    /// ticks or more than [`STREAM_TICKS_MAX`].
    fn open(seed: Hash32, ticks_max: u32) -> Option<(Segments, Hash32)> {
        let p = Segments::resume(seed, ticks_max, 0)?;
        // The walk stopped at x_{N-1} = h_1, on top of the current
        // segment; the anchor is one step more.
        let top = if p.from_back {
            p.buf.back()
        } else {
            p.buf.front()
        };
        let anchor = chain_step(top?);
        Some((p, anchor))
    }

    /// A traversal positioned so that the next release is tick
    /// `released + 1` (after a reboot: the elements were not durable).
    /// Walks from the seed to that tick's position.
    fn resume(seed: Hash32, ticks_max: u32, released: u32) -> Option<Segments> {
        if ticks_max == 0 || ticks_max > STREAM_TICKS_MAX || released > ticks_max {
            return None;
        }
        let n = ticks_max;
        let seg = ceil_sqrt(n);
        let mut p = Segments {
            checkpoints: Vec::new(),
            buf: VecDeque::new(),
            cur_left: 0,
            from_back: true,
            cur_base: 0,
            next: None,
            seg,
            ticks_max,
            released,
        };
        if released == n {
            return Some(p);
        }
        // The next position to release, its segment (counted from the
        // top) and that segment's base.
        let t = n - released - 1;
        let c = (n - 1 - t) / seg;
        let base = p.base(c);
        let below = base.div_ceil(seg) as usize;
        p.checkpoints = Vec::with_capacity(below);
        p.buf = VecDeque::with_capacity((seg + 1) as usize);
        let mut x = seed;
        for j in 0..=t {
            if j > 0 {
                x = chain_step(&x);
            }
            if j >= base {
                p.buf.push_back(x);
            } else if (n - 1 - j) % seg == seg - 1 || j == 0 {
                // The base of a segment below the current one.
                p.checkpoints.push(x);
            }
        }
        debug_assert_eq!(p.checkpoints.len(), below);
        p.cur_base = base;
        p.cur_left = t - base + 1;
        p.start_next();
        // What the rest of the current segment leaves no time for.
        while p.next_needed() > p.cur_left.saturating_sub(1) {
            p.step();
        }
        Some(p)
    }

    /// The lowest position of segment `c` (counted from the top).
    fn base(&self, c: u32) -> u32 {
        self.ticks_max
            .saturating_sub(c.saturating_add(1).saturating_mul(self.seg))
    }

    /// Starts the segment below the current one from its checkpoint (if
    /// any), at the end of `buf` the current segment is not at.
    fn start_next(&mut self) {
        self.next = self.checkpoints.pop().map(|x| {
            let base = self.cur_base.saturating_sub(self.seg);
            self.push_next(x);
            (base, base, x)
        });
    }

    fn push_next(&mut self, x: Hash32) {
        if self.from_back {
            self.buf.push_front(x);
        } else {
            self.buf.push_back(x);
        }
    }

    /// Hashes the next segment still needs.
    fn next_needed(&self) -> u32 {
        self.next
            .map_or(0, |(_, at, _)| (self.cur_base - 1).saturating_sub(at))
    }

    /// One hash of the next segment (nothing if it is complete).
    fn step(&mut self) {
        if let Some((base, at, x)) = self.next
            && at + 1 < self.cur_base
        {
            let y = chain_step(&x);
            self.push_next(y);
            self.next = Some((base, at + 1, y));
        }
    }

    /// Releases the next element: from the current segment, then one hash
    /// of the next segment.
    fn release_next(&mut self) -> Option<Hash32> {
        if self.cur_left == 0 {
            return None;
        }
        let x = if self.from_back {
            self.buf.pop_back()
        } else {
            self.buf.pop_front()
        }?;
        self.cur_left -= 1;
        self.released += 1;
        if self.cur_left == 0
            && let Some((base, _, _)) = self.next
        {
            // Complete on schedule; after anything else, at once.
            while self.next_needed() > 0 {
                self.step();
            }
            self.cur_left = self.cur_base - base;
            self.cur_base = base;
            self.from_back = !self.from_back;
            // No hash this tick: the buffer holds the new current
            // segment and the following one's checkpoint (`s + 1`), and
            // the `s − 1` ticks after this one are enough for the rest.
            self.start_next();
        } else {
            self.step();
        }
        Some(x)
    }

    /// Element `h_k` (tick `k`, 1-based), releasing the ticks up to it.
    /// Ticks must be asked in rising order; `None` for tick 0, past the
    /// end, or a tick not above the last one taken.
    fn element(&mut self, k: u32) -> Option<Hash32> {
        if k == 0 || k > self.ticks_max || k <= self.released {
            return None;
        }
        let mut x = None;
        while self.released < k {
            x = Some(self.release_next()?);
        }
        x
    }

    /// Elements held (RAM: 32 bytes each).
    fn len(&self) -> usize {
        self.checkpoints.len() + self.buf.len() + usize::from(self.next.is_some())
    }

    /// Whether no element is left (the chain is used up).
    fn is_empty(&self) -> bool {
        self.cur_left == 0
    }
}

/// The payer's traversal of its chain in release order when the
/// segment traversal does not fit its room (binary pebbling
/// with the walks done ahead of time). A stack of pebbles `(j, x_j)` with
/// positions rising towards the top; element `x_t` is the top pebble once
/// the pebbles above `t` are used. Whenever a pebble `m` lies on a pebble
/// `j` with a gap between them, the walk that will fill the gap (from
/// `j` up to `m − 1`, leaving a pebble half-way each time, as the plain
/// recursive schedule would do at once when `m` is used) runs as a
/// background job, one hash per tick, while the elements from the top
/// down to `m` are released: by the time `m − 1` is needed its pebbles are
/// there. So a tick costs at most one hash per job (at most one job per
/// pebble: `log2 N + 1`) and about `½·log2 N` on average (7 for 10,000
/// ticks), instead of the plain schedule's `N/2` for the tick after the
/// upper half is used. Storage: the pebbles plus the jobs' pebbles so far,
/// `O(log² N)` in the worst case (Schoenmakers' explicit optimal schedule
/// needs `log2 N`; decision 0020).
///
/// OPEN computes the anchor in the first walk and leaves the pebbles and
/// jobs for tick 1. Everything is RAM only: after a reboot
/// [`Pebbles::resume`] starts from the seed (one walk to the next tick,
/// then the jobs as usual).
#[derive(Clone, PartialEq, Eq)]
struct Binary {
    /// `(position from the seed, element)`, positions strictly rising.
    stack: Vec<(u32, Hash32)>,
    /// At most one per pebble with a gap above it, keyed by `base`.
    jobs: Vec<Job>,
    ticks_max: u32,
}

/// A walk from pebble `base` to `target`, one hash at a time.
#[derive(Clone, PartialEq, Eq)]
struct Job {
    base: u32,
    target: u32,
    /// Where the walk is.
    at: (u32, Hash32),
    /// The next half-way stop, where a pebble is left.
    stop: u32,
    /// Pebbles left so far, rising.
    found: Vec<(u32, Hash32)>,
}

impl Job {
    fn new(base: (u32, Hash32), target: u32) -> Job {
        Job {
            base: base.0,
            target,
            at: base,
            stop: base.0 + (target - base.0).div_ceil(2),
            found: Vec::new(),
        }
    }
    fn done(&self) -> bool {
        self.at.0 >= self.target
    }
    /// One hash (nothing if done).
    fn step(&mut self) {
        if self.done() {
            return;
        }
        self.at = (self.at.0 + 1, chain_step(&self.at.1));
        if self.at.0 == self.stop {
            self.found.push(self.at);
            if !self.done() {
                self.stop = self.at.0 + (self.target - self.at.0).div_ceil(2);
            }
        }
    }
}

impl Binary {
    /// A fresh traversal of a chain of `ticks_max` ticks from its seed,
    /// and the chain's anchor (`N` hashes, once, at OPEN). `None` for zero
    /// ticks or more than [`STREAM_TICKS_MAX`].
    fn open(seed: Hash32, ticks_max: u32) -> Option<(Binary, Hash32)> {
        let mut p = Binary::resume(seed, ticks_max, 0)?;
        // Walks to x_{N-1} = h_1 leaving pebbles, then one step more.
        p.walk_to(ticks_max - 1);
        let first = p.stack.last().map(|(_, x)| *x)?;
        p.plan_jobs();
        Some((p, chain_step(&first)))
    }

    /// A traversal positioned so that the next release is tick
    /// `released + 1` (after a reboot: the pebbles were not durable).
    fn resume(seed: Hash32, ticks_max: u32, released: u32) -> Option<Binary> {
        if ticks_max == 0 || ticks_max > STREAM_TICKS_MAX || released > ticks_max {
            return None;
        }
        let mut stack = Vec::with_capacity(PEBBLES_MAX);
        stack.push((0, seed));
        Some(Binary {
            stack,
            jobs: Vec::new(),
            ticks_max,
        })
    }

    /// Element `h_k` (tick `k`, 1-based), consuming the pebbles above it.
    /// Ticks must be asked in rising order; `None` for tick 0, past the
    /// end, or a tick below one already taken.
    fn element(&mut self, k: u32) -> Option<Hash32> {
        if k == 0 || k > self.ticks_max {
            return None;
        }
        let t = self.ticks_max - k;
        // Pebbles above t belong to ticks already released; so do their
        // jobs.
        while self.stack.last().is_some_and(|(j, _)| *j > t) {
            self.stack.pop();
        }
        let top = *self.stack.last()?;
        self.jobs.retain(|job| job.base <= top.0 && job.target <= t);
        // The gap above the top pebble: its job, finished now if it is
        // behind (it never is on the schedule above), its pebbles laid.
        if let Some(i) = self.jobs.iter().position(|job| job.base == top.0) {
            let mut job = self.jobs.swap_remove(i);
            if job.target == t {
                while !job.done() {
                    job.step();
                }
                self.stack.extend(job.found);
            }
        }
        // Whatever is left (the first release after a resume): at once.
        self.walk_to(t);
        let (j, x) = self.stack.pop()?;
        debug_assert_eq!(j, t);
        self.plan_jobs();
        // The background work of this tick: one hash per job.
        for job in &mut self.jobs {
            job.step();
        }
        Some(x)
    }

    /// Pebbles held, in the stack and in the jobs (RAM: 36 bytes each).
    fn len(&self) -> usize {
        self.stack.len() + self.jobs.iter().map(|j| j.found.len() + 1).sum::<usize>()
    }

    /// Whether no pebble is left (the chain is used up).
    fn is_empty(&self) -> bool {
        self.stack.is_empty()
    }

    /// Walks the top pebble up to position `t`, leaving a pebble half-way
    /// each time (`x_t` ends on top).
    fn walk_to(&mut self, t: u32) {
        while let Some(&(j, x)) = self.stack.last() {
            if j >= t {
                return;
            }
            let mid = j + (t - j).div_ceil(2);
            let y = chain_walk(x, mid - j);
            self.stack.push((mid, y));
        }
    }

    /// A job for every gap between two pebbles that has none yet.
    fn plan_jobs(&mut self) {
        for w in 0..self.stack.len().saturating_sub(1) {
            let (lo, hi) = (self.stack[w], self.stack[w + 1].0);
            if hi > lo.0 + 1 && !self.jobs.iter().any(|job| job.base == lo.0) {
                self.jobs.push(Job::new(lo, hi - 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    std::thread_local! {
        /// Chain steps computed on this thread (the traversal's cost).
        pub(super) static STEPS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
    }

    fn steps() -> u64 {
        STEPS.with(|c| c.get())
    }

    /// The traversal's RAM bound for `n` ticks (elements).
    fn bound(n: u32) -> usize {
        segments_len(n)
    }

    #[test]
    fn a_chain_step_is_the_tagged_hash() {
        let mut x = Hash32([0; 32]);
        for i in 0..200u32 {
            assert_eq!(chain_step(&x), tagged_hash(CHAIN_TAG, &[&x.0]), "step {i}");
            x = tagged_hash(b"test", &[&i.to_be_bytes(), &x.0]);
        }
        assert_eq!(bound(STREAM_TICKS_MAX), PEBBLES_MAX);
    }

    #[test]
    fn a_tick_costs_at_most_one_hash() {
        for n in [1u32, 2, 3, 7, 64, 65, 1000, 10_000] {
            let (mut p, _) = Pebbles::open(seed(), n).unwrap();
            let (mut worst, start) = (0u64, steps());
            for k in 1..=n {
                let before = steps();
                p.element(k).unwrap();
                worst = worst.max(steps() - before);
            }
            let total = steps() - start;
            std::eprintln!("N {n}: worst tick {worst} hashes, {total} in all");
            assert!(worst <= 1, "N {n}: worst tick {worst} hashes");
            assert!(total < u64::from(n), "N {n}: {total} hashes in all");
        }
    }

    fn seed() -> Hash32 {
        chain_seed(&[7; 32], &Hash32([9; 32]))
    }

    /// `x_0 .. x_N` walked naively.
    fn naive(seed: Hash32, n: u32) -> std::vec::Vec<Hash32> {
        let mut v = std::vec![seed];
        for _ in 0..n {
            let x = chain_step(v.last().unwrap());
            v.push(x);
        }
        v
    }

    #[test]
    fn pebbles_release_the_chain_in_order_and_each_element_checks() {
        for n in [1u32, 2, 3, 4, 5, 8, 9, 10, 100, 1000] {
            let chain = naive(seed(), n);
            let (mut p, anchor) = Pebbles::open(seed(), n).unwrap();
            assert_eq!(anchor, chain[n as usize], "anchor is H^N(seed)");
            let mut latest = anchor;
            for k in 1..=n {
                let h = p.element(k).unwrap();
                assert_eq!(h, chain[(n - k) as usize], "h_k = x_(N-k)");
                check_tick(&latest, k - 1, &h, k, n).unwrap();
                assert!(reaches_anchor(&h, k, n, &anchor));
                latest = h;
                assert!(p.len() <= bound(n), "N {n} k {k}: {} elements", p.len());
                assert!(p.segment_buffer().is_some_and(|(b, s)| b <= s as usize + 1));
            }
            assert!(p.is_empty());
            assert_eq!(p.element(n + 1), None);
        }
    }

    #[test]
    fn pebbles_stay_few_over_10000_ticks() {
        let n = 10_000u32;
        let (mut p, _) = Pebbles::open(seed(), n).unwrap();
        let mut max_pebbles = p.len();
        for k in 1..=n {
            p.element(k).unwrap();
            max_pebbles = max_pebbles.max(p.len());
        }
        std::eprintln!("N 10000: at most {max_pebbles} elements");
        assert!(
            max_pebbles <= 202,
            "{max_pebbles} elements for 10,000 ticks"
        );
    }

    #[test]
    fn resume_after_reboot_releases_the_same_elements() {
        for n in [1u32, 2, 9, 10, 77] {
            let chain = naive(seed(), n);
            for released in 0..=n {
                let before = steps();
                let mut q = Pebbles::resume(seed(), n, released).unwrap();
                // The walk to the next tick, and at most s - 1 more.
                assert!(steps() - before <= u64::from(n + ceil_sqrt(n)));
                for k in released + 1..=n {
                    let before = steps();
                    assert_eq!(q.element(k), Some(chain[(n - k) as usize]));
                    assert!(steps() - before <= 1, "N {n} resumed at {released}");
                    assert!(q.len() <= bound(n));
                    assert!(q.segment_buffer().is_some_and(|(b, s)| b <= s as usize + 1));
                }
                assert!(q.is_empty());
            }
        }
    }

    #[test]
    fn skipped_and_repeated_asks() {
        let n = 50;
        let chain = naive(seed(), n);
        let (mut p, _) = Pebbles::open(seed(), n).unwrap();
        assert_eq!(p.element(0), None);
        assert_eq!(p.element(3), Some(chain[47]));
        assert_eq!(p.element(3), None);
        assert_eq!(p.element(2), None);
        assert_eq!(p.element(20), Some(chain[30]));
        assert_eq!(p.element(21), Some(chain[29]));
        assert_eq!(p.element(51), None);
        assert_eq!(p.element(50), Some(chain[0]));
        assert!(p.is_empty());
    }

    #[test]
    fn without_room_binary_pebbling_releases_the_chain_within_log2_n_hashes() {
        for n in [1u32, 2, 7, 64, 1000, 10_000] {
            let log2 = u64::from(32 - n.leading_zeros());
            let chain = naive(seed(), n);
            let (mut p, anchor) = Pebbles::open_in(seed(), n, segments_len(n) - 1).unwrap();
            assert!(!p.is_segments());
            assert_eq!(anchor, chain[n as usize]);
            let (mut worst, start, mut most) = (0u64, steps(), 0usize);
            for k in 1..=n {
                let before = steps();
                assert_eq!(p.element(k), Some(chain[(n - k) as usize]));
                worst = worst.max(steps() - before);
                most = most.max(p.len());
            }
            let total = steps() - start;
            assert!(worst <= log2 + 2, "N {n}: worst tick {worst} hashes");
            assert!(
                total <= (u64::from(n) * log2).div_ceil(2) + u64::from(n),
                "N {n}: {total} hashes in all"
            );
            assert!(most <= 120, "N {n}: {most} pebbles");
            // Resumed without room: the same elements.
            let released = n / 3;
            let mut q = Pebbles::resume_in(seed(), n, released, 0).unwrap();
            assert!(!q.is_segments());
            for k in released + 1..=n {
                assert_eq!(q.element(k), Some(chain[(n - k) as usize]));
            }
        }
        let (p, _) = Pebbles::open_in(seed(), 10_000, segments_len(10_000)).unwrap();
        assert!(p.is_segments());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Any N, resumed anywhere: the naive chain, one hash per tick.
        #[test]
        fn pebbles_match_the_naive_chain(
            n in 1u32..3000,
            at in 0u32..3000,
            seed_byte in proptest::prelude::any::<u8>(),
        ) {
            let seed = chain_seed(&[seed_byte; 32], &Hash32([1; 32]));
            let chain = naive(seed, n);
            let released = at % (n + 1);
            let mut p = if released == 0 {
                let (p, anchor) = Pebbles::open(seed, n).unwrap();
                proptest::prop_assert_eq!(anchor, chain[n as usize]);
                p
            } else {
                Pebbles::resume(seed, n, released).unwrap()
            };
            for k in released + 1..=n {
                let before = steps();
                proptest::prop_assert_eq!(p.element(k), Some(chain[(n - k) as usize]));
                proptest::prop_assert!(steps() - before <= 1);
                proptest::prop_assert!(p.len() <= bound(n));
                proptest::prop_assert!(p.segment_buffer().is_some_and(|(b, s)| b <= s as usize + 1));
            }
            proptest::prop_assert!(p.is_empty());
        }
    }

    #[test]
    fn replayed_skipped_forged_and_exhausted_ticks_are_refused() {
        let n = 10;
        let (mut p, anchor) = Pebbles::open(seed(), n).unwrap();
        let h1 = p.element(1).unwrap();
        let h2 = p.element(2).unwrap();
        let h3 = p.element(3).unwrap();
        assert_eq!(check_tick(&anchor, 0, &h1, 1, n), Ok(()));
        assert_eq!(check_tick(&h1, 1, &h1, 1, n), Err(TickError::Replayed));
        assert_eq!(check_tick(&h1, 1, &h3, 3, n), Err(TickError::Skipped));
        assert_eq!(check_tick(&h1, 1, &h3, 2, n), Err(TickError::Forged));
        assert_eq!(
            check_tick(&h1, 1, &Hash32([0; 32]), 2, n),
            Err(TickError::Forged)
        );
        assert_eq!(check_tick(&h1, 1, &h2, 2, n), Ok(()));
        assert_eq!(check_tick(&h2, 10, &h2, 11, n), Err(TickError::Exhausted));
        // A claim one tick beyond what the element proves fails the anchor.
        assert!(!reaches_anchor(&h2, 3, n, &anchor));
        assert!(!reaches_anchor(&h2, 1, n, &anchor));
        assert!(reaches_anchor(&h2, 2, n, &anchor));
        assert!(reaches_anchor(&anchor, 0, n, &anchor));
    }

    #[test]
    fn settlement_books_the_value_and_refuses_a_claim_above_the_released_ticks() {
        let n = 10;
        let (mut p, anchor) = Pebbles::open(seed(), n).unwrap();
        let h: std::vec::Vec<Hash32> = (1..=n).map(|k| p.element(k).unwrap()).collect();
        let terms = StreamTerms {
            price: Amount(3),
            ticks_max: n,
            anchor,
        };
        // Both halves: claim 6, released 7 → 18 + 9 + 3 = 30.
        let b = settle_stream(&terms, Some((6, &h[5])), Some(7)).unwrap();
        assert_eq!(
            (b.to_payee, b.to_payer, b.leftover),
            (Amount(18), Amount(9), Amount(3))
        );
        // One half at a time, in either order.
        let b = settle_stream(&terms, Some((6, &h[5])), None).unwrap();
        assert_eq!(
            (b.to_payee, b.to_payer, b.leftover),
            (Amount(18), Amount(0), Amount(0))
        );
        let b = settle_stream(&terms, None, Some(7)).unwrap();
        assert_eq!(
            (b.to_payee, b.to_payer, b.leftover),
            (Amount(0), Amount(9), Amount(0))
        );
        // The payee claims more than was released (a broken payer or payee
        // SE): refused.
        assert_eq!(
            settle_stream(&terms, Some((8, &h[7])), Some(7)),
            Err(StreamSettleError::ClaimAboveReleased {
                claimed: 8,
                released: 7
            })
        );
        // A claim whose element is not the k-th: refused.
        assert_eq!(
            settle_stream(&terms, Some((7, &h[5])), None),
            Err(StreamSettleError::ChainMismatch)
        );
        assert_eq!(
            settle_stream(&terms, Some((11, &h[5])), None),
            Err(StreamSettleError::TooManyTicks)
        );
        assert_eq!(
            settle_stream(&terms, None, Some(11)),
            Err(StreamSettleError::TooManyTicks)
        );
        let zero = StreamTerms {
            price: Amount(0),
            ..terms
        };
        assert_eq!(
            settle_stream(&zero, None, None),
            Err(StreamSettleError::Terms)
        );
        // Nothing claimed, all released: the leftover is everything streamed.
        let b = settle_stream(&terms, Some((0, &anchor)), Some(10)).unwrap();
        assert_eq!(
            (b.to_payee, b.to_payer, b.leftover),
            (Amount(0), Amount(0), Amount(30))
        );
    }

    #[test]
    fn bad_lengths_are_refused() {
        assert!(Pebbles::open(seed(), 0).is_none());
        assert!(Pebbles::open(seed(), STREAM_TICKS_MAX + 1).is_none());
        assert!(Pebbles::resume(seed(), 5, 6).is_none());
    }
}
