//! The device side around an SE: a typed link to the SE (direct or over
//! APDUs), payer and payee sessions for the four-message protocol, and
//! coin-selection previews. `no_std` + `alloc`, so the payer/payee logic
//! runs on a microcontroller too.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod agent;
#[cfg(feature = "testkit")]
pub mod fuzzing;
pub mod link;
pub mod session;
pub mod stream;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use link::{ApduLink, SeLink, Transmit, WalletError};
#[cfg(feature = "delegated-proving")]
pub use session::pay_proving_here;
pub use session::{Outcome, PayeeSession, PayerSession, Prover, pay_offline};
pub use tally_core::selection;
