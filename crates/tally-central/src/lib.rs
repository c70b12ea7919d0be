//! The central bank as a role: the ledger of the DCPs' settlement
//! accounts, settlement with the spent registry, the SE directory, issuance
//! and the MDS outbox ([`central`]), the [`Central`] trait a DCP reaches it
//! through (in process, or over the network with the wire types here), its
//! signed answers ([`SettlementResult`]), its tables ([`schema`]) and key
//! custody ([`keys`], [`custody`]). Every SQL statement of the crate is in
//! [`db`], behind the domain traits [`db::CentralDb`] and
//! [`db::KeyCustodyDb`].
//!
//! A DCP (tally-dcp) depends on this crate, never the other way round:
//! the central bank's tables are touched only from here.
//! [`BackofficeError`] is shared by both roles, so that a DCP hands the
//! central bank's refusals to its devices with their code and status.

pub mod central;
pub mod custody;
pub mod db;
pub mod error;
pub mod escrow;
#[cfg(any(test, feature = "testkit"))]
pub mod fuzzing;
mod group;
pub mod keys;
pub mod monitoring;
pub mod outbox;
pub mod policy;
pub mod result;
pub mod schema;

pub use central::{
    Central, CentralBank, CentralKeys, CentralRequest, CentralTrust, InboxEntry, dcp_account,
};
pub use custody::LegacySeeds;
pub use error::BackofficeError;
pub use escrow::development_escrow_key;
pub use keys::{KeyDir, KeyError, NodeKeys, NodeSigner, SoftwareSigner};
pub use outbox::OutboxStatus;
pub use policy::{default_tiers, valid_account_name};
pub use result::SettlementResult;
pub use schema::{
    CENTRAL_KEY_CUSTODY_MIGRATIONS, CENTRAL_MIGRATIONS, OUTBOX_MIGRATIONS, REPORT_MIGRATIONS,
};

use tally_core::crypto::Entropy;

/// The DCP of a node (`tally node`): DCP 1. Also the DCP of everything a
/// central store kept from before there were several DCPs.
pub const DCP_ID: u32 = 1;

/// The OS random generator as [`Entropy`] (escrow and sealing randomness).
pub struct OsEntropy;
impl Entropy for OsEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(out))
            .expect("the OS random generator is readable");
    }
}
