//! The back office: the central bank ([`central`]: ledger of the DCPs'
//! settlement accounts, settlement, the SE directory, the MDS feed) and
//! Digital Currency Providers ([`service`]: onboarding, load, unload,
//! renewal, sync with recovery of interrupted payments, online payments,
//! their customers' accounts in [`book`]). A DCP reaches the central bank
//! through the [`Central`] trait, in process or over the network.
//! Transport-free: the HTTP layer (tally-api) calls these methods.
//!
//! Every device request is signed inside the SE (ATTEST over the request
//! digest) with a strictly increasing counter, and every operation is
//! idempotent: the same signed request again returns the stored response.

pub mod book;
pub mod central;
#[cfg(feature = "testkit")]
pub mod fuzzing;
pub mod keys;
pub mod service;

pub use central::{
    Central, CentralBank, CentralKeys, CentralRequest, CentralTrust, InboxEntry, dcp_account,
};
pub use keys::{KeyDir, KeyError, NodeKeys, NodeSigner, SoftwareSigner};
pub use service::{
    Backoffice, BackofficeError, LegacySeeds, OsEntropy, OutboxStatus, Reconciliation,
    SettlementResult, Stores, development_escrow_key, legacy_seeds,
};
pub use tally_core::dcp::*;
