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
/// Pebbles the traversal keeps at most: one per halving of the distance
/// to the next element, plus the seed.
pub const PEBBLES_MAX: usize = 18;

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

/// One step towards the anchor: `H("tally/v1/chain", x)`.
pub fn chain_step(x: &Hash32) -> Hash32 {
    #[cfg(test)]
    tests::STEPS.with(|c| c.set(c.get() + 1));
    tagged_hash(CHAIN_TAG, &[&x.0])
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

/// The payer's traversal of its chain in release order (binary pebbling
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
pub struct Pebbles {
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

impl core::fmt::Debug for Pebbles {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The pebbles are chain elements not yet released: secret.
        f.debug_struct("Pebbles")
            .field("pebbles", &self.stack.len())
            .field("jobs", &self.jobs.len())
            .field("ticks_max", &self.ticks_max)
            .finish_non_exhaustive()
    }
}

impl Pebbles {
    /// A fresh traversal of a chain of `ticks_max` ticks from its seed,
    /// and the chain's anchor (`N` hashes, once, at OPEN). `None` for zero
    /// ticks or more than [`STREAM_TICKS_MAX`].
    pub fn open(seed: Hash32, ticks_max: u32) -> Option<(Pebbles, Hash32)> {
        let mut p = Pebbles::resume(seed, ticks_max, 0)?;
        // Walks to x_{N-1} = h_1 leaving pebbles, then one step more.
        p.walk_to(ticks_max - 1);
        let first = p.stack.last().map(|(_, x)| *x)?;
        p.plan_jobs();
        Some((p, chain_step(&first)))
    }

    /// A traversal positioned so that the next release is tick
    /// `released + 1` (after a reboot: the pebbles were not durable).
    pub fn resume(seed: Hash32, ticks_max: u32, released: u32) -> Option<Pebbles> {
        if ticks_max == 0 || ticks_max > STREAM_TICKS_MAX || released > ticks_max {
            return None;
        }
        let mut stack = Vec::with_capacity(PEBBLES_MAX);
        stack.push((0, seed));
        Some(Pebbles {
            stack,
            jobs: Vec::new(),
            ticks_max,
        })
    }

    /// Element `h_k` (tick `k`, 1-based), consuming the pebbles above it.
    /// Ticks must be asked in rising order; `None` for tick 0, past the
    /// end, or a tick below one already taken.
    pub fn element(&mut self, k: u32) -> Option<Hash32> {
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
    pub fn len(&self) -> usize {
        self.stack.len() + self.jobs.iter().map(|j| j.found.len() + 1).sum::<usize>()
    }

    /// Whether no pebble is left (the chain is used up).
    pub fn is_empty(&self) -> bool {
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

    #[test]
    fn a_tick_costs_at_most_one_hash_per_job_and_half_log2_n_on_average() {
        for n in [2u32, 7, 64, 1000, 10_000] {
            let log2 = u64::from(32 - n.leading_zeros());
            let (mut p, _) = Pebbles::open(seed(), n).unwrap();
            let (mut worst, start) = (0u64, steps());
            for k in 1..=n {
                let before = steps();
                p.element(k).unwrap();
                worst = worst.max(steps() - before);
            }
            let total = steps() - start;
            std::eprintln!("N {n}: worst tick {worst} hashes, {total} in all");
            assert!(worst <= log2 + 2, "N {n}: worst tick {worst} hashes");
            assert!(
                total <= (u64::from(n) * log2).div_ceil(2) + u64::from(n),
                "N {n}: {total} hashes in all"
            );
        }
    }

    fn seed() -> Hash32 {
        chain_seed(&[7; 32], &Hash32([9; 32]))
    }

    #[test]
    fn pebbles_release_the_chain_in_order_and_each_element_checks() {
        for n in [1u32, 2, 3, 5, 8, 100, 1000] {
            let (mut p, anchor) = Pebbles::open(seed(), n).unwrap();
            assert_eq!(anchor, chain_walk(seed(), n), "anchor is H^N(seed)");
            let mut latest = anchor;
            for k in 1..=n {
                let h = p.element(k).unwrap();
                assert_eq!(h, chain_walk(seed(), n - k), "h_k = x_(N-k)");
                check_tick(&latest, k - 1, &h, k, n).unwrap();
                assert!(reaches_anchor(&h, k, n, &anchor));
                latest = h;
                assert!(p.stack.len() <= PEBBLES_MAX);
            }
            assert_eq!(p.element(n + 1), None);
        }
    }

    #[test]
    fn pebbles_stay_few_over_10000_ticks() {
        let n = 10_000u32;
        let (mut p, _) = Pebbles::open(seed(), n).unwrap();
        let mut max_pebbles = 0;
        for k in 1..=n {
            p.element(k).unwrap();
            max_pebbles = max_pebbles.max(p.len());
        }
        std::eprintln!("N 10000: at most {max_pebbles} pebbles");
        assert!(max_pebbles <= 120, "{max_pebbles} pebbles for 10,000 ticks");
    }

    #[test]
    fn resume_after_reboot_releases_the_same_elements() {
        let n = 77;
        let (mut p, _) = Pebbles::open(seed(), n).unwrap();
        for k in 1..=30 {
            p.element(k).unwrap();
        }
        let mut q = Pebbles::resume(seed(), n, 30).unwrap();
        for k in 31..=n {
            assert_eq!(q.element(k), p.element(k));
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
