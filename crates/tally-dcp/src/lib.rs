//! The back office in one service: the central bank's ledger and
//! settlement, the SE directory, and a Digital Currency Provider (DCP) —
//! onboarding, load, unload, renewal, sync with recovery of interrupted
//! payments, and online payments. Transport-free: the HTTP layer
//! (tally-api) and the in-process connector call these methods.
//!
//! Every device request is signed inside the SE (ATTEST over the request
//! digest) with a strictly increasing counter, and every operation is
//! idempotent: the same signed request again returns the stored response.

pub mod keys;
pub mod service;

pub use keys::{KeyDir, KeyError, NodeKeys, NodeSigner, SoftwareSigner};
pub use service::{
    Backoffice, BackofficeError, LegacySeeds, OsEntropy, OutboxStatus, SettlementResult, Stores,
    development_escrow_key, legacy_seeds,
};
pub use tally_core::dcp::*;
