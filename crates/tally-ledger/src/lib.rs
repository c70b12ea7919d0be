//! The central bank's core ledger and settlement.
//!
//! [`ledger`]: double-entry accounts and an immutable journal; every
//! transfer debits one account and credits another, so the balances sum to
//! zero at all times. The issuance account holds −(minted − redeemed); the
//! loss account goes negative by the value the scheme covered for double
//! spends. Hence, for every other account together:
//! `sum(balances) + offline float + loss = minted − redeemed`.
//!
//! [`db`]: the store of all three — every SQL statement of the crate,
//! behind the domain traits [`db::LedgerDb`], [`db::SettlementDb`] and
//! [`db::SettlementQueueDb`].
//!
//! [`queue`]: the queue several settlement worker processes share.
//!
//! [`settlement`]: verifies packages with the tally-core verifier and
//! registers every consumed output in the spent registry.

pub mod db;
pub mod ledger;
pub mod queue;
pub mod settlement;

pub use ledger::{
    AccountId, AccountKind, Invariant, Ledger, LedgerError, RunningTotals, TransferRequest,
};
pub use settlement::{DoubleSpend, Settlement, SettlementError, SettlementOutcome};
