//! The Tally secure-element applet.
//!
//! `no_std` + `alloc`. Persistent state sits behind [`storage::Storage`]
//! and is committed atomically by [`storage::Journal`]; the commands live
//! in [`applet::Applet`]; [`dispatch`] exposes them as ISO 7816-4 APDUs.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod apdu;
pub mod applet;
pub mod dispatch;
#[cfg(feature = "std")]
pub mod file;
pub mod seal;
pub mod state;
pub mod storage;

pub use applet::{
    Applet, Limit, RequestParams, SIGNATURE_BATCH_MAX, SeError, Status, StreamClaim, TokenInfo,
};
pub use seal::Sealing;

/// Deterministic xorshift64* for the unit tests, so failures replay from
/// the seed.
#[cfg(test)]
pub(crate) mod test_rng {
    use alloc::vec::Vec;

    pub(crate) struct XorShift(pub(crate) u64);

    impl XorShift {
        pub(crate) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        pub(crate) fn byte(&mut self) -> u8 {
            self.next() as u8
        }

        pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.byte()).collect()
        }
    }
}
