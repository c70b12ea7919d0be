//! Device requests are rate-limited per SE: one token bucket per SE id,
//! in memory in this node, taken before the service is called (so before
//! any database transaction). An exhausted bucket answers 429
//! ([`crate::code::RATE_LIMITED`]) and nothing is done: the request's
//! counter is not claimed, so the same bytes may be sent again later.
//!
//! The SE id is read from the request before its signature is checked;
//! so that forged requests naming someone else's SE cannot drain its
//! bucket, the token is given back when the service answers that the
//! device is unknown or the signature does not verify; it is also given
//! back for a serialization conflict (503), which the device is told to
//! retry with the same bytes. The table is bounded: when full, buckets
//! that have refilled (idle SEs) are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tally_core::Hash32;

/// Requests one SE may send at once (the bucket's size).
pub const DEVICE_REQUESTS_BURST_MAX: u32 = 64;
/// Requests per second one SE may keep sending (the bucket's refill).
pub const DEVICE_REQUESTS_REFILL_PER_SECOND: u32 = 4;
/// Most SEs tracked at once.
pub const RATE_LIMITED_SES_MAX: usize = 65_536;

/// A bucket's contents are kept in thousandths of a token.
const MILLI: u64 = 1_000;

/// The limits of [`DeviceRateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRate {
    pub burst_max: u32,
    pub refill_per_second: u32,
}

impl Default for DeviceRate {
    fn default() -> Self {
        DeviceRate {
            burst_max: DEVICE_REQUESTS_BURST_MAX,
            refill_per_second: DEVICE_REQUESTS_REFILL_PER_SECOND,
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    at: Instant,
}

pub(crate) struct DeviceRateLimit {
    rate: DeviceRate,
    buckets: Mutex<HashMap<Hash32, Bucket>>,
}

impl DeviceRateLimit {
    pub(crate) fn new(rate: DeviceRate) -> DeviceRateLimit {
        DeviceRateLimit {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn full(&self) -> u64 {
        u64::from(self.rate.burst_max).saturating_mul(MILLI)
    }

    /// The bucket refilled up to `now`.
    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let ms = u64::try_from(now.saturating_duration_since(b.at).as_millis()).unwrap_or(u64::MAX);
        // refill_per_second tokens per second = refill_per_second milli-tokens per ms.
        let gained = ms.saturating_mul(u64::from(self.rate.refill_per_second));
        Bucket {
            milli_tokens: b.milli_tokens.saturating_add(gained).min(self.full()),
            at: now,
        }
    }

    /// Takes one token of `se`'s bucket; `false`: over the limit.
    pub(crate) fn take(&self, se: &Hash32, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            // A panic while holding the lock: fail open rather than stop
            // every device (the service's own checks still apply).
            return true;
        };
        if !buckets.contains_key(se) && buckets.len() >= RATE_LIMITED_SES_MAX {
            let full = self.full();
            buckets.retain(|_, b| self.refilled(*b, now).milli_tokens < full);
            if buckets.len() >= RATE_LIMITED_SES_MAX {
                return false;
            }
        }
        let b = buckets.entry(*se).or_insert(Bucket {
            milli_tokens: self.full(),
            at: now,
        });
        *b = self.refilled(*b, now);
        if b.milli_tokens >= MILLI {
            b.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }

    /// Gives back the token of a request that turned out not to be `se`'s.
    pub(crate) fn give_back(&self, se: &Hash32) {
        if let Ok(mut buckets) = self.buckets.lock()
            && let Some(b) = buckets.get_mut(se)
        {
            b.milli_tokens = b.milli_tokens.saturating_add(MILLI).min(self.full());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_se() {
        let l = DeviceRateLimit::new(DeviceRate {
            burst_max: 3,
            refill_per_second: 2,
        });
        let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.take(&a, t0)));
        assert!(!l.take(&a, t0));
        assert!(l.take(&b, t0), "another SE has its own bucket");
        assert!(!l.take(&a, t0 + Duration::from_millis(499)));
        assert!(l.take(&a, t0 + Duration::from_millis(500)));
        l.give_back(&a);
        assert!(l.take(&a, t0 + Duration::from_millis(500)));
        assert!(!l.take(&a, t0 + Duration::from_millis(500)));
        // Never more than the burst, however long idle.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| l.take(&a, later)));
        assert!(!l.take(&a, later));
    }
}
