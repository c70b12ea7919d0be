//! Tally protocol core: amounts, ids, canonical CBOR, keys and signature
//! suites, certificates, records, protocol messages, policy, and the offline
//! payee verifier.
//!
//! `no_std` + `alloc`, no I/O: randomness comes in through
//! [`crypto::Entropy`], time through epoch numbers the caller supplies.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod amount;
pub mod cert;
pub mod codec;
#[cfg(feature = "confidential")]
pub mod confidential;
#[cfg(feature = "confidential")]
pub mod confidential_gens;
#[cfg(feature = "confidential")]
pub mod confidential_record;
pub mod crypto;
pub mod dcp;
#[cfg(feature = "escrow")]
pub mod escrow;
pub mod package;
pub mod policy;
pub mod protocol;
pub mod record;
#[cfg(feature = "sealing")]
pub mod sealed;
pub mod selection;
pub mod sorted;
pub mod stream;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod verify;

pub use amount::{Amount, Epoch};
pub use cert::{DcpCertificate, PseudonymCertificate, SettlementKey};
pub use codec::{Cbor, CodecError};
pub use crypto::{Hash32, PublicKey, SecretKey, Signature, Signer, Suite};
pub use policy::{Policy, RevocationList, SyncGrant, TierLimits};
pub use protocol::{Package, Receipt, Request};
pub use record::{Issue, OutPoint, Output, Record, Transfer};
pub use verify::{Expected, TrustStore, VerifiedPackage, VerifyError, VerifyParams};
