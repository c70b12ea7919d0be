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

pub use applet::{Applet, Limit, SeError, Status, TokenInfo};
pub use seal::Sealing;
