//! The back office's DCP role: Digital Currency Providers ([`service`]:
//! onboarding, load, unload,
//! renewal, sync with recovery of interrupted payments, online payments,
//! their customers' accounts in [`book`]). A DCP reaches the central bank
//! (tally-central, re-exported here as [`central`]: ledger of the DCPs'
//! settlement accounts, settlement, the SE directory, the MDS feed)
//! through the [`Central`] trait, in process or over the network; it has
//! no SQL on the central bank's tables (tests/production_build.rs). Its
//! own SQL is all in [`db`] (the traits `DcpDb` and `DcpBookDb`;
//! tests/db_conformance.rs keeps it there).
//! Transport-free: the HTTP layer (tally-api) calls these methods.
//!
//! Every device request is signed inside the SE (ATTEST over the request
//! digest) with a strictly increasing counter, and every operation is
//! idempotent: the same signed request again returns the stored response.

pub mod book;
pub mod db;
pub mod service;

// The central bank is its own crate (tally-central); its modules and types
// stay reachable here under their old paths.
pub use service::{
    Backoffice, BackofficeError, InFlightReport, LegacySeeds, OsEntropy, OutboxStatus,
    ReclaimReport, Reconciliation, SettlementResult, Stores, development_escrow_key, legacy_seeds,
};
/// The central wire's vectors and fuzz oracles (tally-central, feature
/// `testkit`), under the path the fuzz targets and tests use.
#[cfg(feature = "testkit")]
pub use tally_central::fuzzing;
pub use tally_central::{
    Central, CentralBank, CentralKeys, CentralRequest, CentralTrust, InboxEntry, dcp_account,
};
pub use tally_central::{KeyDir, KeyError, NodeKeys, NodeSigner, SoftwareSigner};
pub use tally_central::{central, keys};
pub use tally_core::dcp::*;
