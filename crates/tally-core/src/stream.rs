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

use crate::crypto::{Hash32, tagged_hash};

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

/// The payer's traversal of its chain in release order (binary pebbling):
/// a stack of pebbles `(j, x_j)` with positions rising towards the top.
/// To release `x_t` the top pebble is walked half-way to `t` and a pebble
/// left there, again and again, until it reaches `t`. Storage is at most
/// `log2 N + 1` pebbles; the whole chain costs `½·N·log2 N` hashes, so
/// about `½·log2 N` per tick on average (7 for 10,000 ticks). Opening the
/// stream computes the anchor in the same walk, leaving the pebbles for
/// the first release in place. The pebbles are RAM only: after a reboot
/// [`Pebbles::resume`] starts again from the seed.
///
/// This is the simple amortised schedule, not Schoenmakers' explicit
/// optimal one: a single tick can cost up to `N/2` hashes (the tick
/// after the upper half of the chain is released, at most once per
/// halving). Decision 0020 says why and what the optimal schedule would
/// change.
#[derive(Clone, PartialEq, Eq)]
pub struct Pebbles {
    /// `(position from the seed, element)`, positions strictly rising.
    stack: Vec<(u32, Hash32)>,
    ticks_max: u32,
}

impl core::fmt::Debug for Pebbles {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The pebbles are chain elements not yet released: secret.
        f.debug_struct("Pebbles")
            .field("pebbles", &self.stack.len())
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
        let first = p.walk_to(ticks_max - 1);
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
        Some(Pebbles { stack, ticks_max })
    }

    /// Element `h_k` (tick `k`, 1-based), consuming the pebbles above it.
    /// Ticks must be asked in rising order; `None` for tick 0, past the
    /// end, or a tick below one already taken.
    pub fn element(&mut self, k: u32) -> Option<Hash32> {
        if k == 0 || k > self.ticks_max {
            return None;
        }
        let t = self.ticks_max - k;
        // Pebbles above t belong to ticks already released.
        while self.stack.last().is_some_and(|(j, _)| *j > t) {
            self.stack.pop();
        }
        if self.stack.is_empty() {
            return None;
        }
        let x = self.walk_to(t);
        // x_t is released now; keep nothing at or above it.
        self.stack.pop();
        Some(x)
    }

    /// Pebbles held (RAM: 36 bytes each).
    pub fn len(&self) -> usize {
        self.stack.len()
    }

    /// Whether no pebble is left (the chain is used up).
    pub fn is_empty(&self) -> bool {
        self.stack.is_empty()
    }

    /// Walks the top pebble up to position `t`, leaving a pebble half-way
    /// each time; returns `x_t`, which is left on top.
    fn walk_to(&mut self, t: u32) -> Hash32 {
        loop {
            let (j, x) = match self.stack.last() {
                Some(top) => *top,
                None => return Hash32([0; 32]),
            };
            if j >= t {
                return x;
            }
            let mid = j + (t - j).div_ceil(2);
            let y = chain_walk(x, mid - j);
            self.stack.push((mid, y));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                assert!(p.len() <= PEBBLES_MAX);
            }
            assert_eq!(p.element(n + 1), None);
        }
    }

    #[test]
    fn pebbles_stay_logarithmic_over_10000_ticks() {
        let n = 10_000u32;
        let (mut p, _) = Pebbles::open(seed(), n).unwrap();
        let mut max_pebbles = 0;
        for k in 1..=n {
            p.element(k).unwrap();
            max_pebbles = max_pebbles.max(p.len());
        }
        assert!(max_pebbles <= 15, "{max_pebbles} pebbles for 10,000 ticks");
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
    fn bad_lengths_are_refused() {
        assert!(Pebbles::open(seed(), 0).is_none());
        assert!(Pebbles::open(seed(), STREAM_TICKS_MAX + 1).is_none());
        assert!(Pebbles::resume(seed(), 5, 6).is_none());
    }
}
