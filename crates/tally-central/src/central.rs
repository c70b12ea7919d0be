//! The central bank's side of the back office (issue 11, item 1): the
//! ledger of the DCPs' settlement accounts, settlement with the spent
//! registry, the SE directory, issuance registration, recoveries and
//! refunds, the MDS outbox. It holds the root, the settlement-result key
//! and the opening key, and none of any DCP's: a DCP signs the Issues it
//! hands out and the central bank registers them against that DCP's
//! settlement account.
//!
//! DCPs reach it through the [`Central`] trait: in process
//! ([`CentralBank`] implements it) or over HTTP (tally-api's central
//! routes and `CentralClient`). Every call names the calling DCP; over the
//! network that id comes from the caller's authentication (its mutual-TLS
//! role certificate), never from the body, so a DCP acts only on its own
//! settlement account, its own devices and its own mailboxes.
//!
//! What the central store holds of a customer: nothing. Customers'
//! accounts are at their DCP (tally-dcp's `book`); the central ledger has
//! one settlement account per DCP (`dcp:N`), the offline float, the loss
//! account and issuance.

use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use tally_core::cert::{DcpCertificate, SettlementKey, role};
use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::{check_key, tagged_hash};
use tally_core::escrow::{self, JointKey};
use tally_core::policy::{RoleRevocations, device_class};
use tally_core::sealed::{OpeningKey, SealedKind, SealingKey};
use tally_core::verify::{
    CertCache, SettlementRefusal, VerifyParams, verify_package_for_settlement,
    verify_package_groups_for_settlement_opened,
};
use tally_core::{
    Amount, Epoch, Hash32, Issue, OutPoint, Output, Package, Policy, PublicKey, Record,
    RevocationList, TrustStore,
};
use tally_directory::{Directory, DirectoryError, SeEntry, SeStatus};
use tally_ledger::db::SettlementDb;
use tally_ledger::ledger::{self, AccountKind, Applied, Invariant, Ledger, TransferRequest, code};
use tally_ledger::settlement::{Settlement, SettlementError};
use tally_mds::{IngestRecord, Mds, MdsConfig, Verdict};
use tally_store::{Migrations, Store, StoreError, Tx, TxFailure};

use tally_core::dcp::*;

use crate::db::{CentralDb, ClosedReport, InboxCredit, NewMailboxEntry, NewUpload, OutboxBacklog};
use crate::escrow::development_open;
use crate::keys::{KeyError, NodeSigner};
use crate::outbox::{OutboxEntry, OutboxRecord, encode_ingest, encode_outbox, unix_seconds};
use crate::policy::default_tiers;
use crate::{BackofficeError, OutboxStatus, SettlementResult};

/// An uploaded package as checked before the settlement transaction.
pub(crate) enum Checked {
    Verified(Box<tally_core::VerifiedPackage>),
    /// Refused with this stable code: the verifier's, or settlement's
    /// C7 (34) for a confidential package whose audit seal does not open.
    Refused(tally_core::Transfer, u16),
    Malformed,
}

/// A verified sync upload waiting for its group's transaction
/// ([`CentralBank::commit_syncs`]).
pub(crate) struct SyncJob {
    dcp: u32,
    op: Hash32,
    reply_key: Hash32,
    mailbox: Hash32,
    /// The epoch of the device's previous sync (0: none), for how long it
    /// was offline at the epoch of the group's transaction.
    last_sync: Epoch,
    upload: SyncUpload,
    checked: Vec<Checked>,
}

/// A sync request's sealed upload, waiting to be opened and verified
/// with others ([`CentralBank::verify_syncs`]).
pub(crate) struct SyncOpen {
    sealed: Vec<u8>,
    /// The digest of the reports the SE signed for.
    reports: Hash32,
}

/// A sync upload opened and checked: its packages' verdicts, in order.
pub(crate) type OpenedUpload = (SyncUpload, Vec<Checked>);

/// How long the verification of sync uploads reuses the trust objects
/// (policy, revocation list) it read: reading them is a transaction, which
/// would wait for the group commit running beside the verifications. A
/// change made in this process applies at once; one made by another
/// central bank process on the same database, within this time.
const TRUST_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Most sync requests settled in one transaction.
const SYNC_GROUP_MAX: usize = 32;

/// Most sync uploads opened and verified together: their signatures in
/// one batch (16 one-hop uploads of 8 packages: 384 signatures; the
/// per-signature cost of a batch barely falls beyond a few hundred).
const SYNC_VERIFY_GROUP_MAX: usize = 16;

/// One confidential package in this many, picked by a keyed hash of its
/// transfer id, has its range proofs and balances of commitments (C3,
/// C4) verified at settlement as well as its openings (decision 0028,
/// "Session 13"): [`CentralBank::sample_proofs`].
pub const PROOF_SAMPLE_DEFAULT: u32 = 64;

/// Whether settlement's sample picks the transfer `id`: the keyed hash's
/// first four bytes below `2^32 / one_in` (`one_in` 0: never; 1: always).
/// The key is derived from settlement's opening key, so a device cannot
/// tell which transfers are picked, and a package that comes back is
/// picked again.
pub fn proof_sample_picks(key: &Hash32, one_in: u32, id: &Hash32) -> bool {
    match one_in {
        0 => false,
        1 => true,
        n => {
            let h = tagged_hash(b"tally/v1/proof-sample", &[&key.0, &id.0]);
            let x = u32::from_be_bytes([h.0[0], h.0[1], h.0[2], h.0[3]]);
            x < u32::MAX / n
        }
    }
}

/// A settlement server's cache of certificate ids whose signatures it
/// checked: at most `max` ids, in two generations of `max / 2` — when the
/// current one is full it becomes the previous one and the one before is
/// dropped — so it keeps the ids seen most recently and keeps admitting
/// new ones. Look-up and insertion are hash-set operations. (tally-core's
/// `BoundedCertCache`, a sorted vector that stops admitting when full, is
/// right for an SE's few entries; at 100 000 every insertion moved up to
/// 3.2 MB under this cache's lock, and after 100 000 certificates nothing
/// new was cached. Decision 0028, "Session 13".)
pub struct ServerCertCache {
    current: std::collections::HashSet<Hash32>,
    previous: std::collections::HashSet<Hash32>,
    max: usize,
}

impl ServerCertCache {
    pub fn new(max: usize) -> ServerCertCache {
        ServerCertCache {
            current: std::collections::HashSet::new(),
            previous: std::collections::HashSet::new(),
            max,
        }
    }
    /// How many ids it holds (at most `max`).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CertCache for ServerCertCache {
    fn contains(&self, id: &Hash32) -> bool {
        self.current.contains(id) || self.previous.contains(id)
    }
    fn insert(&mut self, id: Hash32) {
        if self.max == 0 || self.contains(&id) {
            return;
        }
        // Two generations of max/2 (one of 1 when max is 1).
        if self.current.len() >= (self.max / 2).max(1) {
            self.previous = std::mem::take(&mut self.current);
            if self.max < 2 {
                self.previous.clear();
            }
        }
        self.current.insert(id);
    }
}

/// The central bank's certificate cache as a verifier uses it: locked
/// for each look-up or insert only, so requests verify in parallel. (A
/// certificate another request is verifying at the same moment is just
/// verified twice.) A poisoned lock still holds a consistent set.
struct SharedCertCache<'a>(&'a Mutex<ServerCertCache>);

impl CertCache for SharedCertCache<'_> {
    fn contains(&self, id: &Hash32) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(id)
    }
    fn insert(&mut self, id: Hash32) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id)
    }
}

/// A double spend as operators list it: (outpoint record, index, value,
/// offender key bytes).
pub type DoubleSpendSummary = (Hash32, u8, u64, Vec<u8>);

/// A stored answer, opened with the reply key of the call that executed
/// (another key: code 64, SPEC §10.6 I3).
fn open_stored_reply(reply_key: &Hash32, stored: &[u8]) -> Result<Vec<u8>, BackofficeError> {
    XChaCha20Poly1305::new((&reply_key.0).into())
        .decrypt(&XNonce::default(), stored)
        .map_err(|_| BackofficeError::BadSettlementResult)
}

/// The settlement account of DCP `id` at the central bank.
pub fn dcp_account(id: u32) -> String {
    format!("dcp:{id}")
}

pub use crate::db::PARTIES_MIGRATIONS;

/// A request of a DCP to the central bank, executed once per `op` (the
/// device request id): a retry gets the stored, signed result back.
/// Wire: `[1, kind, …]` canonical CBOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CentralRequest {
    /// Load: the DCP's settlement account pays the offline float the
    /// Issue's value; the Issue (signed by the calling DCP) is registered.
    Load { issue: Issue, class: u8 },
    /// Redemption of a sealed package paying the DCP's redemption request
    /// `nonce`: settled; the value goes to the DCP's settlement account
    /// (`unload`) or into `renewal`, an Issue of the calling DCP.
    Redeem {
        nonce: [u8; 16],
        transfer_id: Hash32,
        sealed: Vec<u8>,
        amount: u64,
        renewal: Option<Issue>,
        class: u8,
        last_sync: Epoch,
    },
    /// A device's sync upload: settled; the answer lists what waits in
    /// `mailbox` (recoveries and refunds) for [`CentralRequest::Deliver`].
    Sync {
        sealed: Vec<u8>,
        reports: Hash32,
        mailbox: Hash32,
        last_sync: Epoch,
    },
    /// Tokens for what waits in `mailbox`: one Issue of the calling DCP
    /// per waiting transfer, of its amount.
    Deliver {
        mailbox: Hash32,
        issues: Vec<(Hash32, Issue)>,
    },
    /// An Issue the SE refused and cancelled: consumed, its value back to
    /// the DCP's settlement account.
    Cancel { issue: Issue },
    /// An online payment to a customer of another DCP.
    Pay {
        to_dcp: u32,
        to_account: String,
        amount: u64,
    },
}

const DELIVER_MAX: usize = 64;

impl Cbor for CentralRequest {
    fn write(&self, w: &mut Writer) {
        match self {
            CentralRequest::Load { issue, class } => {
                w.array(4);
                w.u64(1);
                w.u64(1);
                issue.write(w);
                w.u64(u64::from(*class));
            }
            CentralRequest::Redeem {
                nonce,
                transfer_id,
                sealed,
                amount,
                renewal,
                class,
                last_sync,
            } => {
                w.array(9);
                w.u64(1);
                w.u64(2);
                w.bytes(nonce);
                transfer_id.write(w);
                w.bytes(sealed);
                w.u64(*amount);
                match renewal {
                    Some(i) => {
                        w.array(1);
                        i.write(w);
                    }
                    None => w.array(0),
                }
                w.u64(u64::from(*class));
                w.u64(u64::from(*last_sync));
            }
            CentralRequest::Sync {
                sealed,
                reports,
                mailbox,
                last_sync,
            } => {
                w.array(6);
                w.u64(1);
                w.u64(3);
                w.bytes(sealed);
                reports.write(w);
                mailbox.write(w);
                w.u64(u64::from(*last_sync));
            }
            CentralRequest::Deliver { mailbox, issues } => {
                w.array(4);
                w.u64(1);
                w.u64(4);
                mailbox.write(w);
                w.array(issues.len());
                for (t, i) in issues {
                    w.array(2);
                    t.write(w);
                    i.write(w);
                }
            }
            CentralRequest::Cancel { issue } => {
                w.array(3);
                w.u64(1);
                w.u64(5);
                issue.write(w);
            }
            CentralRequest::Pay {
                to_dcp,
                to_account,
                amount,
            } => {
                w.array(5);
                w.u64(1);
                w.u64(6);
                w.u64(u64::from(*to_dcp));
                w.text(to_account);
                w.u64(*amount);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(9)?;
        r.version(1)?;
        let kind = r.u64()?;
        let expect = |want: usize| {
            if n == want {
                Ok(())
            } else {
                Err(CodecError::Malformed)
            }
        };
        Ok(match kind {
            1 => {
                expect(4)?;
                CentralRequest::Load {
                    issue: Issue::read(r)?,
                    class: r.u8()?,
                }
            }
            2 => {
                expect(9)?;
                let nonce = r.bytes_array::<16>()?;
                let transfer_id = Hash32::read(r)?;
                let sealed = r.bytes_max(SEALED_UPLOAD_BYTES_MAX)?.to_vec();
                let amount = r.u64()?;
                let renewal = match r.array_max(1)? {
                    0 => None,
                    _ => Some(Issue::read(r)?),
                };
                CentralRequest::Redeem {
                    nonce,
                    transfer_id,
                    sealed,
                    amount,
                    renewal,
                    class: r.u8()?,
                    last_sync: r.u32()?,
                }
            }
            3 => {
                expect(6)?;
                CentralRequest::Sync {
                    sealed: r.bytes_max(SEALED_UPLOAD_BYTES_MAX)?.to_vec(),
                    reports: Hash32::read(r)?,
                    mailbox: Hash32::read(r)?,
                    last_sync: r.u32()?,
                }
            }
            4 => {
                expect(4)?;
                let mailbox = Hash32::read(r)?;
                let k = r.array_max(DELIVER_MAX)?;
                let mut issues = Vec::with_capacity(k);
                for _ in 0..k {
                    r.array(2)?;
                    issues.push((Hash32::read(r)?, Issue::read(r)?));
                }
                CentralRequest::Deliver { mailbox, issues }
            }
            5 => {
                expect(3)?;
                CentralRequest::Cancel {
                    issue: Issue::read(r)?,
                }
            }
            6 => {
                expect(5)?;
                CentralRequest::Pay {
                    to_dcp: r.u32()?,
                    to_account: r.text_max(ACCOUNT_NAME_BYTES_MAX)?.to_string(),
                    amount: r.u64()?,
                }
            }
            _ => return Err(CodecError::Malformed),
        })
    }
}

/// A credit waiting for a DCP: an interbank payment to `account`, or
/// (no account) money minted into its settlement account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub op: Hash32,
    pub account: Option<String>,
    pub amount: u64,
    pub from_dcp: u32,
}

impl Cbor for InboxEntry {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        self.op.write(w);
        w.text(self.account.as_deref().unwrap_or(""));
        w.u64(self.amount);
        w.u64(u64::from(self.from_dcp));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        let op = Hash32::read(r)?;
        let account = r.text_max(ACCOUNT_NAME_BYTES_MAX)?;
        Ok(InboxEntry {
            op,
            account: (!account.is_empty()).then(|| account.to_string()),
            amount: r.u64()?,
            from_dcp: r.u32()?,
        })
    }
}

/// Most inbox entries handed out at once.
pub const INBOX_BATCH_MAX: usize = 256;
/// Seconds after which [`CentralBank::signed_role_revocations`] signs a
/// fresh list even if no key was revoked: a fifth of how long a list is
/// believed, so a party polling it never holds a stale one.
pub const ROLE_LIST_RESIGN_S: u64 = tally_core::policy::ROLE_REVOCATIONS_MAX_AGE_S / 5;

/// What a DCP needs from the central bank to serve devices: the trust
/// objects, the keys that certify results, and the current epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralTrust {
    pub root: PublicKey,
    pub policy: Policy,
    pub revocations: RevocationList,
    pub sealing_key: SealingKey,
    pub settlement_key: SettlementKey,
    pub escrow_key: JointKey,
    pub epoch: Epoch,
}

impl Cbor for CentralTrust {
    fn write(&self, w: &mut Writer) {
        w.array(8);
        w.u64(1);
        self.root.write(w);
        self.policy.write(w);
        self.revocations.write(w);
        self.sealing_key.write(w);
        self.settlement_key.write(w);
        w.bytes(&self.escrow_key.to_bytes());
        w.u64(u64::from(self.epoch));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(8)?;
        r.version(1)?;
        Ok(CentralTrust {
            root: PublicKey::read(r)?,
            policy: Policy::read(r)?,
            revocations: RevocationList::read(r)?,
            sealing_key: SealingKey::read(r)?,
            settlement_key: SettlementKey::read(r)?,
            escrow_key: JointKey::from_bytes(&r.bytes_array::<32>()?)
                .map_err(|_| CodecError::Malformed)?,
            epoch: r.u32()?,
        })
    }
}

/// The central bank as a DCP sees it. `dcp` is the calling DCP, which
/// the transport authenticated (in process: the DCP's own id).
pub trait Central: Send + Sync {
    fn trust(&self) -> Result<CentralTrust, BackofficeError>;
    /// The directory's entry of an SE.
    fn device(&self, se_id: &Hash32) -> Result<Option<SeEntry>, BackofficeError>;
    /// Registers an SE certified by a trusted manufacturer, enrolled by
    /// `dcp` (another DCP's SE is refused with a directory conflict).
    fn enrol(&self, dcp: u32, maker: &MakerCertificate) -> Result<SeEntry, BackofficeError>;
    /// The digest of the SE's escrowed identity point (set once).
    fn set_id_digest(
        &self,
        dcp: u32,
        se_id: &Hash32,
        digest: &Hash32,
    ) -> Result<(), BackofficeError>;
    fn id_digest(&self, dcp: u32, se_id: &Hash32) -> Result<Option<Hash32>, BackofficeError>;
    /// Executes `req` once for `op`; returns the signed result (bytes of
    /// [`SettlementResult`]), which the caller opens with the settlement
    /// key. `reply_key` encrypts the stored result.
    fn call(
        &self,
        dcp: u32,
        op: &Hash32,
        reply_key: &Hash32,
        req: &CentralRequest,
    ) -> Result<Vec<u8>, BackofficeError>;
    /// Credits waiting for `dcp` (oldest first).
    fn inbox(&self, dcp: u32) -> Result<Vec<InboxEntry>, BackofficeError>;
    /// Removes credits `dcp` has booked.
    fn ack_inbox(&self, dcp: u32, ops: &[Hash32]) -> Result<(), BackofficeError>;
    /// The balance of `dcp`'s settlement account (reconciliation).
    fn settlement_balance(&self, dcp: u32) -> Result<i64, BackofficeError>;
}

/// The central bank's keys.
#[derive(Clone)]
pub struct CentralKeys {
    pub root: Arc<NodeSigner>,
    pub settlement: Arc<NodeSigner>,
    pub opening: Arc<OpeningKey>,
}

pub struct CentralBank {
    store: Store,
    /// The MDS in this process, or None when it is its own process.
    mds: Option<Mds>,
    keys: CentralKeys,
    sealing_key: SealingKey,
    settlement_key: SettlementKey,
    escrow_key: JointKey,
    supervisors: Option<tally_supervisor::JointParams>,
    /// Every DCP's certificate, by id (the policy's trust list).
    dcps: Vec<DcpCertificate>,
    cache: Mutex<ServerCertCache>,
    /// The last trust store built, with the policy and revocation list it
    /// was built from: a request whose trust objects are unchanged reuses
    /// it instead of verifying their root signatures again.
    trust_cache: Mutex<Option<(Policy, RevocationList, TrustStore)>>,
    /// The last root-signed role revocation list ([`Self::signed_role_revocations`]).
    role_list: Mutex<Option<RoleRevocations>>,
    /// Settlement's verifier for uploads, with when it was read
    /// ([`TRUST_REFRESH`]).
    verifier: Mutex<Option<(std::time::Instant, TrustStore, VerifyParams)>>,
    /// Sync requests waiting for, or in, a group commit.
    syncs: crate::group::GroupCommit<SyncJob, Result<Vec<u8>, BackofficeError>>,
    /// Sync uploads waiting to be opened and verified, in groups (one
    /// signature batch per group), one group per core given to
    /// verification ([`CentralBank::limit_verification`]).
    openings: crate::group::GroupCommit<SyncOpen, Result<OpenedUpload, BackofficeError>>,
    /// Settlement's sample of confidential packages whose proofs it
    /// verifies: its key, and one in how many ([`proof_sample_picks`]).
    proof_sample: (Hash32, std::sync::atomic::AtomicU32),
}

/// The central bank's tables, in order.
pub fn migrations() -> [&'static Migrations; 8] {
    [
        &ledger::MIGRATIONS,
        &tally_ledger::settlement::MIGRATIONS,
        &tally_directory::MIGRATIONS,
        &crate::schema::CENTRAL_MIGRATIONS,
        &crate::schema::OUTBOX_MIGRATIONS,
        &crate::schema::REPORT_MIGRATIONS,
        &PARTIES_MIGRATIONS,
        &crate::db::ROLE_REVOCATION_MIGRATIONS,
    ]
}

impl CentralBank {
    /// Opens the central bank on `store` (migrated by the caller, keys
    /// pinned) with the MDS on `mds`, trusting the DCPs `dcps` (id, key).
    pub fn open(
        store: Store,
        mds: Store,
        keys: CentralKeys,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        dcps: &[(u32, PublicKey)],
    ) -> Result<CentralBank, BackofficeError> {
        Self::open_with_mds(store, Some(mds), keys, escrow_key, supervisors, dcps)
    }

    /// [`CentralBank::open`] with the MDS in this process (`Some`) or as
    /// its own process (`None`: `tally mds` pulls the outbox).
    pub fn open_with_mds(
        store: Store,
        mds: Option<Store>,
        keys: CentralKeys,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        dcps: &[(u32, PublicKey)],
    ) -> Result<CentralBank, BackofficeError> {
        store.migrate(&migrations())?;
        let mut certs = Vec::with_capacity(dcps.len());
        for (id, key) in dcps {
            check_key(key).map_err(|_| BackofficeError::BadKey)?;
            if certs.iter().any(|c: &DcpCertificate| c.dcp_id == *id) {
                return Err(BackofficeError::Decode(CodecError::Malformed));
            }
            certs.push(DcpCertificate::try_sign(
                &*keys.root,
                *id,
                *key,
                role::ISSUE | role::CERTIFY | role::REDEEM | role::SYNC,
                Epoch::MAX,
            )?);
        }
        let sealing_key = SealingKey::try_sign(&*keys.root, keys.opening.public())?;
        let settlement_key = SettlementKey::try_sign(&*keys.root, keys.settlement.public_key())?;
        let root = keys.root.public_key();
        sealing_key
            .verify(&root)
            .map_err(|_| BackofficeError::Signer(KeyError::BadSignature { role: "root" }))?;
        settlement_key
            .verify(&root)
            .map_err(|_| BackofficeError::Signer(KeyError::BadSignature { role: "root" }))?;
        let issuers: Vec<Hash32> = certs.iter().map(|c| c.key.id()).collect();
        let payment_max = default_tiers()
            .iter()
            .filter(|t| t.device_class != device_class::DCP)
            .map(|t| t.payment_max.0)
            .max()
            .unwrap_or(0);
        let mds = match mds {
            Some(m) => Some(
                Mds::open(m, MdsConfig::new(issuers.clone(), issuers, payment_max))
                    .map_err(|e| StoreError::Db(format!("MDS: {e}")))?,
            ),
            None => None,
        };
        let sample_key = keys.opening.derive(b"proof-sample");
        let bank = CentralBank {
            store,
            mds,
            keys,
            sealing_key,
            settlement_key,
            escrow_key,
            supervisors,
            dcps: certs,
            cache: Mutex::new(ServerCertCache::new(100_000)),
            trust_cache: Mutex::new(None),
            role_list: Mutex::new(None),
            verifier: Mutex::new(None),
            syncs: crate::group::GroupCommit::new(SYNC_GROUP_MAX),
            openings: crate::group::GroupCommit::with_leaders(
                SYNC_VERIFY_GROUP_MAX,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            proof_sample: (
                sample_key,
                std::sync::atomic::AtomicU32::new(PROOF_SAMPLE_DEFAULT),
            ),
        };
        bank.store.transact(|tx| {
            for c in &bank.dcps {
                Ledger::ensure_account(tx, &dcp_account(c.dcp_id), AccountKind::DcpSettlement)?;
            }
            Ok::<_, BackofficeError>(())
        })?;
        bank.policy()?;
        bank.pump_mds();
        Ok(bank)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    /// Opens and verifies uploads on at most `n` threads at once
    /// (default: the machine's cores), each taking the uploads waiting
    /// (up to [`SYNC_VERIFY_GROUP_MAX`]) into one signature batch. The
    /// settling transaction is not counted: it runs in groups
    /// ([`crate::group`]), beside the verifications.
    pub fn limit_verification(mut self, n: usize) -> Self {
        self.openings = crate::group::GroupCommit::with_leaders(SYNC_VERIFY_GROUP_MAX, n);
        self
    }
    /// From now on, verifies the range proofs and balances of one
    /// confidential package in `one_in` at settlement, besides its
    /// openings (default
    /// [`PROOF_SAMPLE_DEFAULT`]; 0: none, 1: every one). A picked package
    /// whose proofs do not verify is refused, and the MDS sees it as any
    /// refused package (a counterfeit alert with the rule's code).
    pub fn sample_proofs(&self, one_in: u32) {
        self.proof_sample
            .1
            .store(one_in, std::sync::atomic::Ordering::Relaxed);
    }
    /// The MDS of this process.
    ///
    /// # Panics
    /// When the MDS is its own process ([`CentralBank::open_with_mds`]
    /// with `None`).
    pub fn mds(&self) -> &Mds {
        self.mds.as_ref().expect("the MDS runs as its own process")
    }
    pub fn root_key(&self) -> PublicKey {
        self.keys.root.public_key()
    }
    pub fn settlement_key(&self) -> SettlementKey {
        self.settlement_key.clone()
    }
    pub fn sealing_key(&self) -> SealingKey {
        self.sealing_key.clone()
    }
    pub fn escrow_key(&self) -> JointKey {
        self.escrow_key.clone()
    }
    /// The DCPs this central bank trusts (id, key).
    pub fn dcps(&self) -> Vec<(u32, PublicKey)> {
        self.dcps.iter().map(|c| (c.dcp_id, c.key)).collect()
    }

    fn dcp_cert(&self, dcp: u32) -> Result<&DcpCertificate, BackofficeError> {
        self.dcps
            .iter()
            .find(|c| c.dcp_id == dcp)
            .ok_or(BackofficeError::UnknownDcp)
    }

    pub fn epoch(&self) -> Result<Epoch, BackofficeError> {
        self.store.transact(|tx| Ok(tx.epoch()? as Epoch))
    }

    pub fn advance_epoch(&self) -> Result<Epoch, BackofficeError> {
        let r = self.store.transact(|tx| {
            tx.advance_epoch()?;
            Ok(tx.epoch()? as Epoch)
        });
        self.trust_changed();
        r
    }

    /// The signed policy; re-signed (serial + 1) only when its content changes.
    pub fn policy(&self) -> Result<Policy, BackofficeError> {
        self.store.transact(|tx| self.policy_in(tx))
    }

    fn policy_in(&self, tx: &mut dyn Tx) -> Result<Policy, BackofficeError> {
        let tiers = default_tiers();
        let dcps = self.dcps.clone();
        let manufacturers = Self::manufacturers_in(tx)?;
        let old = tx.policy_doc()?;
        let (serial, confidential) = match &old {
            Some(body) => {
                let p = Policy::from_cbor(body)?;
                if p.tiers == tiers && p.dcps == dcps && p.manufacturers == manufacturers {
                    return Ok(p);
                }
                (p.serial + 1, p.is_confidential())
            }
            None => (1, false),
        };
        let mut p = Policy::try_sign(&*self.keys.root, serial, "XTS", tiers, dcps, manufacturers)?;
        // The amount mode, once confidential, stays (a later change of
        // tiers or manufacturers re-signs it as it was).
        if confidential {
            p = p.try_resign_confidential(&*self.keys.root, self.keys.opening.public())?;
        }
        if old.is_some() {
            tx.update_policy_doc(&p.to_cbor())?;
        } else {
            tx.insert_policy_doc(&p.to_cbor())?;
        }
        Ok(p)
    }

    /// Makes amounts confidential (SPEC §4.9): the policy is re-signed
    /// (serial + 1) with `amount_mode` 1 and settlement's sealing key as
    /// its audit key, to which every confidential record seals its
    /// outputs' openings. Idempotent. Devices take it at their next sync;
    /// the scheme is meant to choose the mode before it issues anything
    /// (an SE holding clear tokens cannot pay them under a confidential
    /// policy).
    pub fn use_confidential_amounts(&self) -> Result<Policy, BackofficeError> {
        let r = self.store.transact(|tx| {
            let p = self.policy_in(tx)?;
            if p.is_confidential() {
                return Ok(p);
            }
            let mut next = p;
            next.serial += 1;
            let next =
                next.try_resign_confidential(&*self.keys.root, self.keys.opening.public())?;
            tx.update_policy_doc(&next.to_cbor())?;
            Ok(next)
        });
        self.trust_changed();
        r
    }

    fn manufacturers_in(tx: &mut dyn Tx) -> Result<Vec<PublicKey>, BackofficeError> {
        match tx.manufacturers_doc()? {
            None => Ok(Vec::new()),
            Some(bytes) => {
                let mut rd = Reader::new(&bytes);
                Ok(tally_core::codec::read_vec(
                    &mut rd,
                    tally_core::policy::MANUFACTURERS_MAX,
                )?)
            }
        }
    }

    /// Trusts an SE manufacturer's key for enrolment (the policy is
    /// re-signed with it). Idempotent.
    pub fn trust_manufacturer(&self, key: PublicKey) -> Result<Policy, BackofficeError> {
        check_key(&key).map_err(|_| BackofficeError::BadKey)?;
        let r = self.store.transact(|tx| {
            let mut list = Self::manufacturers_in(tx)?;
            if !list.contains(&key) {
                if list.len() >= tally_core::policy::MANUFACTURERS_MAX {
                    return Err(BackofficeError::Decode(CodecError::TooLong));
                }
                list.push(key);
                let mut w = Writer::new();
                tally_core::codec::write_vec(&mut w, &list);
                tx.replace_manufacturers_doc(&w.into_bytes())?;
            }
            self.policy_in(tx)
        });
        self.trust_changed();
        r
    }

    pub fn revocations(&self) -> Result<RevocationList, BackofficeError> {
        self.store.transact(|tx| self.revocations_in(tx))
    }

    /// Revokes a party's role certificate key, named by its pin (SHA-256
    /// of the certificate's SubjectPublicKeyInfo): from now on the central
    /// bank refuses every certificate for that key, at the handshake and
    /// on connections already open (the serving process checks its
    /// [`tally_tls`]-side set, refreshed from [`Self::revoked_role_keys`]).
    /// `role` is kept for the record. Permanent and idempotent: whether the
    /// key was newly revoked.
    pub fn revoke_role_key(&self, pin: &[u8; 32], role: &str) -> Result<bool, BackofficeError> {
        let at = unix_seconds();
        Ok(self
            .store
            .transact(|tx| tx.insert_role_revocation(pin, role, at))?)
    }

    /// Every revoked role certificate key pin.
    pub fn revoked_role_keys(&self) -> Result<Vec<[u8; 32]>, BackofficeError> {
        Ok(self.store.transact(|tx| tx.role_revocations())?)
    }

    /// The revoked role keys signed by the root (decision 0014, "a DCP
    /// refuses a revoked central bank key"): what a party checks the
    /// central bank's own server key against, believed for
    /// [`tally_core::policy::ROLE_REVOCATIONS_MAX_AGE_S`] after it was
    /// signed. Re-signed when a key was revoked since the last one, or when
    /// the last one is [`ROLE_LIST_RESIGN_S`] old; otherwise the same list
    /// (one root signature per interval, not per request). Its serial is
    /// the unix time in milliseconds, strictly rising in this process.
    pub fn signed_role_revocations(&self) -> Result<RoleRevocations, BackofficeError> {
        let mut pins: Vec<Hash32> = self.revoked_role_keys()?.into_iter().map(Hash32).collect();
        pins.sort();
        pins.dedup();
        let mut cached = self
            .role_list
            .lock()
            .map_err(|_| StoreError::Db("role list cache poisoned".into()))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let now = now_ms / 1000;
        if let Some(l) = cached
            .as_ref()
            .filter(|l| l.pins == pins && now.saturating_sub(l.issued) < ROLE_LIST_RESIGN_S)
        {
            return Ok(l.clone());
        }
        let serial = cached
            .as_ref()
            .map_or(now_ms, |l| now_ms.max(l.serial.saturating_add(1)));
        let list = RoleRevocations::try_sign(&*self.keys.root, serial, now, pins)?;
        *cached = Some(list.clone());
        Ok(list)
    }

    fn revocations_in(&self, tx: &mut dyn Tx) -> Result<RevocationList, BackofficeError> {
        let epoch = tx.epoch()? as Epoch;
        Directory::revocation_list::<_, BackofficeError>(tx, &*self.keys.root, epoch)
    }

    fn trust_store(&self) -> Result<TrustStore, BackofficeError> {
        self.store.transact(|tx| self.trust_in(tx))
    }

    fn trust_in(&self, tx: &mut dyn Tx) -> Result<TrustStore, BackofficeError> {
        let policy = self.policy_in(tx)?;
        let revocations = self.revocations_in(tx)?;
        let mut cached = self
            .trust_cache
            .lock()
            .map_err(|_| StoreError::Db("trust cache poisoned".into()))?;
        // The same signed objects as last time (compared whole, signatures
        // included): they verified then, under the same root.
        if let Some((_, _, t)) = cached
            .as_ref()
            .filter(|(p, r, _)| *p == policy && *r == revocations)
        {
            return Ok(t.clone());
        }
        let trust = TrustStore::new(self.root_key(), policy.clone(), revocations.clone())?;
        *cached = Some((policy, revocations, trust.clone()));
        Ok(trust)
    }

    /// What settlement verifies against, read in a short transaction.
    pub fn settlement_verifier(&self) -> Result<(TrustStore, VerifyParams), BackofficeError> {
        let trust = self.trust_store()?;
        let budget = trust
            .policy()
            .limits(device_class::DCP, 0)
            .map(|l| usize::from(l.history_records_max))
            .unwrap_or(1024);
        Ok((
            trust,
            VerifyParams {
                epoch: 0,
                history_records_max: budget,
                signature_batch_max: usize::MAX,
            },
        ))
    }

    /// [`CentralBank::settlement_verifier`], reused for [`TRUST_REFRESH`].
    fn upload_verifier(&self) -> Result<(TrustStore, VerifyParams), BackofficeError> {
        let lock = || {
            self.verifier
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((at, trust, params)) = lock().as_ref()
            && at.elapsed() < TRUST_REFRESH
        {
            return Ok((trust.clone(), *params));
        }
        let read_at = std::time::Instant::now();
        let (trust, params) = self.settlement_verifier()?;
        *lock() = Some((read_at, trust.clone(), params));
        Ok((trust, params))
    }

    /// Forgets the verifier of uploads: the trust objects changed here.
    fn trust_changed(&self) {
        *self
            .verifier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Opens one package sealed to settlement as a redemption.
    pub fn open_sealed_package(&self, sealed: &[u8]) -> Result<Package, BackofficeError> {
        Ok(Package::from_cbor(
            &self.keys.opening.open(SealedKind::Redemption, sealed)?,
        )?)
    }

    // ---- operators ------------------------------------------------------

    /// Mints `amount` into DCP `dcp`'s settlement account; the DCP books
    /// it from its inbox.
    pub fn mint(&self, dcp: u32, idem: &str, amount: u64) -> Result<Invariant, BackofficeError> {
        self.dcp_cert(dcp)?;
        let op = tagged_hash(b"tally/v1/mint", &[&dcp.to_be_bytes(), idem.as_bytes()]);
        self.store.transact(|tx| {
            // The DCP books it once: the inbox entry is written with the
            // journal entry, and not again for a repeated idempotency key.
            let applied = Ledger::mint(tx, &format!("mint:{idem}"), &dcp_account(dcp), amount)?;
            if matches!(applied, Applied::New(_)) {
                Self::credit_inbox(tx, &op, dcp, None, amount, 0)?;
            }
            Ledger::assert_invariant(tx)?;
            Ok(Ledger::audit(tx)?)
        })
    }

    fn credit_inbox(
        tx: &mut dyn Tx,
        op: &Hash32,
        dcp: u32,
        account: Option<&str>,
        amount: u64,
        from: u32,
    ) -> Result<(), BackofficeError> {
        tx.insert_inbox(&InboxCredit {
            op,
            dcp,
            account,
            amount,
            from_dcp: from,
        })?;
        Ok(())
    }

    /// Balance of DCP `dcp`'s settlement account.
    pub fn dcp_balance(&self, dcp: u32) -> Result<i64, BackofficeError> {
        self.store
            .transact(|tx| Ok(Ledger::balance(tx, &dcp_account(dcp))?))
    }

    pub fn invariant(&self) -> Result<Invariant, BackofficeError> {
        self.store.transact(|tx| Ok(Ledger::invariant(tx)?))
    }

    pub fn devices(&self) -> Result<Vec<SeEntry>, BackofficeError> {
        self.store.transact(|tx| Ok(Directory::list(tx)?))
    }

    /// Double spends found so far: (outpoint record, index, value, offender key bytes).
    pub fn double_spends(&self) -> Result<Vec<DoubleSpendSummary>, BackofficeError> {
        self.store.transact(|tx| {
            Ok(tx
                .double_spends()?
                .into_iter()
                .map(|d| (d.record, d.idx as u8, d.value as u64, d.offender_key))
                .collect())
        })
    }

    /// The escrow (ciphertext) of the settled certificate of pseudonym
    /// `key_id`, for an opening request.
    pub fn escrow_of(&self, key_id: &Hash32) -> Result<Option<Vec<u8>>, BackofficeError> {
        self.store
            .transact(|tx| Ok::<_, BackofficeError>(tx.escrow(key_id)?))
    }

    /// Containment: see tally-dcp's `Backoffice::revoke_opened`.
    pub fn revoke_opened(
        &self,
        id_digest: &Hash32,
        key_ids: &[Hash32],
        reason: &str,
        opening: Option<(&[u8], &Hash32)>,
    ) -> Result<(Hash32, RevocationList), BackofficeError> {
        if key_ids.len() > tally_directory::REVOCATION_KEYS_PER_CALL_MAX {
            return Err(DirectoryError::TooManyRevocations {
                keys: key_ids.len(),
                max: tally_directory::REVOCATION_KEYS_PER_CALL_MAX,
            }
            .into());
        }
        // The ciphertexts opened to `id_digest` (None: development node).
        let opened: Option<Vec<Vec<u8>>> = match &self.supervisors {
            Some(params) => {
                let (log, request) = opening.ok_or(BackofficeError::OpeningNotShown)?;
                let log = tally_supervisor::AuditLog::from_bytes(log, params, None)
                    .map_err(|_| BackofficeError::OpeningNotShown)?;
                let result = log
                    .result(request)
                    .ok_or(BackofficeError::OpeningNotShown)?;
                if &result.point.digest() != id_digest {
                    return Err(BackofficeError::OpeningNotShown);
                }
                let summary = log.verify().map_err(|_| BackofficeError::OpeningNotShown)?;
                Some(
                    summary
                        .openings
                        .iter()
                        .filter(|o| &o.point.digest() == id_digest)
                        .filter_map(|o| log.request(&o.request_id))
                        .map(|r| r.request().escrow().ciphertext().to_bytes())
                        .collect(),
                )
            }
            None => None,
        };
        for k in key_ids {
            let stored = self
                .escrow_of(k)?
                .ok_or(BackofficeError::RevocationKeyNotOpened(*k))?;
            let ct = escrow::EscrowCiphertext::from_bytes(&stored)
                .map_err(|_| BackofficeError::RevocationKeyNotOpened(*k))?
                .ciphertext();
            let bound = match &opened {
                Some(opened) => opened.contains(&ct.to_bytes()),
                None => {
                    development_open(&self.escrow_key, ct.random_element(), ct.blinded_element())
                        .as_ref()
                        == Some(id_digest)
                }
            };
            if !bound {
                return Err(BackofficeError::RevocationKeyNotOpened(*k));
            }
        }
        let r = self.store.transact(|tx| {
            let se_id =
                Directory::se_by_id_digest(tx, id_digest)?.ok_or(BackofficeError::UnknownDevice)?;
            Directory::set_status(tx, &se_id, SeStatus::Revoked)?;
            Directory::revoke_keys(tx, Some(&se_id), key_ids, reason)?;
            Ok((se_id, self.revocations_in(tx)?))
        });
        self.trust_changed();
        r
    }

    // ---- monitoring -------------------------------------------------------

    pub fn alerts(&self) -> Result<Vec<tally_mds::Alert>, BackofficeError> {
        self.pump_mds();
        Ok(self.mds_here()?.alerts()?)
    }

    pub fn alert(&self, id: i64) -> Result<tally_mds::Alert, BackofficeError> {
        Ok(self.mds_here()?.alert(id)?)
    }

    pub fn alert_transition(
        &self,
        id: i64,
        to: tally_mds::AlertState,
        note: &str,
    ) -> Result<tally_mds::Alert, BackofficeError> {
        Ok(self.mds_here()?.transition(id, to, note)?)
    }

    pub fn indicators(&self) -> Result<tally_mds::Indicators, BackofficeError> {
        self.pump_mds();
        Ok(self.mds_here()?.indicators()?)
    }

    // ---- requests of DCPs -------------------------------------------------

    /// Runs `f` once per request `op` on the central store: the signed
    /// reply is stored under `op`, encrypted under `reply_key` (derived by
    /// the DCP from the device's signed request, so the central store
    /// keeps no link from a request to what it issued or settled), and a
    /// retry gets it back unchanged. The invariant is asserted before the
    /// commit.
    fn once(
        &self,
        dcp: u32,
        op: &Hash32,
        reply_key: &Hash32,
        mut f: impl FnMut(&mut dyn Tx) -> Result<SettlementResult, BackofficeError>,
    ) -> Result<Vec<u8>, BackofficeError> {
        // Stored per (DCP, op): an op of one DCP never answers or blocks
        // another's. DCP 1 keeps the bare op, as results stored before
        // there were several DCPs are keyed.
        let key = op_key(dcp, op);
        self.store.transact(|tx| {
            if let Some(stored) = tx.stored_reply(&key)? {
                return open_stored_reply(reply_key, &stored);
            }
            let res = f(tx)?;
            let signed = self.sign_and_store(tx, &key, op, reply_key, res)?;
            Ledger::assert_invariant(tx)?;
            Ok::<_, BackofficeError>(signed)
        })
    }

    /// Signs `res` as the answer to `op` and stores it, sealed under
    /// `reply_key`, at `key` (the request's (DCP, op) key).
    fn sign_and_store(
        &self,
        tx: &mut dyn Tx,
        key: &Hash32,
        op: &Hash32,
        reply_key: &Hash32,
        res: SettlementResult,
    ) -> Result<Vec<u8>, BackofficeError> {
        let (signed, sealed) = self.sign_and_seal(op, reply_key, res)?;
        tx.insert_reply(key, &sealed)?;
        Ok(signed)
    }

    /// The signed answer to `op`, and the same sealed under the reply key
    /// as it is stored.
    fn sign_and_seal(
        &self,
        op: &Hash32,
        reply_key: &Hash32,
        mut res: SettlementResult,
    ) -> Result<(Vec<u8>, Vec<u8>), BackofficeError> {
        res.op = *op;
        let signed = res.sign(&*self.keys.settlement)?;
        // One key per request and one reply per key: a fixed nonce is safe.
        let sealed = XChaCha20Poly1305::new((&reply_key.0).into())
            .encrypt(&XNonce::default(), signed.as_slice())
            .map_err(|_| BackofficeError::BadSettlementResult)?;
        Ok((signed, sealed))
    }

    /// An Issue of DCP `dcp`: its signature under that DCP's key.
    fn check_issue(&self, dcp: u32, issue: &Issue) -> Result<u64, BackofficeError> {
        let cert = self.dcp_cert(dcp)?;
        let id = issue.id();
        if issue.issuer != cert.key.id()
            || tally_core::crypto::verify(&cert.key, &issue.signed_message(&id).0, &issue.signature)
                .is_err()
            || issue.outputs.is_empty()
        {
            return Err(BackofficeError::ForeignIssue);
        }
        // A confidential Issue's value is what its audit seal opens to.
        if issue.confidential.is_some()
            && let Some(a) = self.audit_issue(&self.policy()?, issue)?
        {
            return Ok(a.value().0);
        }
        issue
            .outputs
            .iter()
            .try_fold(0u64, |s, o| s.checked_add(o.value.0))
            .ok_or(BackofficeError::ForeignIssue)
    }

    /// Registers a fresh Issue of `dcp`. One registered before (under
    /// another request) is refused: its value would be paid into the float
    /// twice for one token.
    fn register_issue(
        &self,
        tx: &mut dyn Tx,
        dcp: u32,
        issue: &Issue,
        epoch: Epoch,
        owner_class: u8,
    ) -> Result<(), BackofficeError> {
        if tx.issued(&issue.id())?.is_some() {
            return Err(BackofficeError::ForeignIssue);
        }
        // A confidential Issue is registered (and handed to the MDS) with
        // the values its audit seal opens to.
        // (Inside the caller's transaction: the policy is read with it.)
        let audited = self.audit_issue(&self.policy_in(tx)?, issue)?;
        let valued = match &audited {
            Some(a) => {
                Settlement::register_audited_issue(tx, dcp, a)?;
                a.issue().clone()
            }
            None => {
                Settlement::register_issue(tx, dcp, issue)?;
                issue.clone()
            }
        };
        // The MDS counts money from its issuance (circulation = issued −
        // redeemed), not from when it first reaches settlement.
        let mut r = IngestRecord::new(Record::Issue(valued), epoch, Verdict::Verified);
        r.output_classes = vec![owner_class];
        let key = tagged_hash(b"tally/v1/outbox-issue", &[&issue.id().0]);
        if !tx.outbox_has(&key)? {
            self.queue_mds(tx, &key, &[r])?;
        }
        Ok(())
    }

    fn execute_request(
        &self,
        dcp: u32,
        op: &Hash32,
        reply_key: &Hash32,
        req: &CentralRequest,
    ) -> Result<Vec<u8>, BackofficeError> {
        // Only a DCP of the policy's trust list calls.
        self.dcp_cert(dcp)?;
        let account = dcp_account(dcp);
        if let CentralRequest::Sync {
            sealed,
            reports,
            mailbox,
            last_sync,
        } = req
        {
            return self.sync(dcp, op, reply_key, sealed, reports, mailbox, *last_sync);
        }
        // An op answered before gets its stored answer before any check of
        // the body (SPEC §10.6 I2): a refusal now (a payee DCP removed from
        // the policy, a new epoch) would make the DCP undo what executed.
        let key = op_key(dcp, op);
        let (epoch, stored) = self.store.transact(|tx| {
            Ok::<_, BackofficeError>((tx.epoch()? as Epoch, tx.stored_reply(&key)?))
        })?;
        if let Some(stored) = stored {
            return open_stored_reply(reply_key, &stored);
        }
        match req {
            CentralRequest::Load { issue, class } => {
                let amount = self.check_issue(dcp, issue)?;
                self.once(dcp, op, reply_key, |tx| {
                    Ledger::transfer(
                        tx,
                        &TransferRequest {
                            idem: format!("load:{}", op_key(dcp, op)),
                            debit: account.clone(),
                            credit: ledger::OFFLINE_FLOAT.into(),
                            amount,
                            code: code::LOAD,
                        },
                    )?;
                    self.register_issue(tx, dcp, issue, epoch, *class)?;
                    Ok(SettlementResult {
                        value: amount,
                        issues: vec![issue.clone()],
                        ..SettlementResult::default()
                    })
                })
            }
            CentralRequest::Redeem {
                nonce,
                transfer_id,
                sealed,
                amount,
                renewal,
                class,
                last_sync,
            } => self.redeem(
                dcp,
                op,
                reply_key,
                epoch,
                RedeemArgs {
                    nonce,
                    transfer_id,
                    sealed,
                    amount: *amount,
                    renewal: renewal.as_ref(),
                    class: *class,
                    last_sync: *last_sync,
                },
            ),
            // Answered above, before the look-up of a stored answer.
            CentralRequest::Sync {
                sealed,
                reports,
                mailbox,
                last_sync,
            } => self.sync(dcp, op, reply_key, sealed, reports, mailbox, *last_sync),
            CentralRequest::Deliver { mailbox, issues } => {
                let mut amounts = Vec::with_capacity(issues.len());
                for (_, i) in issues {
                    amounts.push(self.check_issue(dcp, i)?);
                }
                self.once(dcp, op, reply_key, |tx| {
                    let mut res = SettlementResult::default();
                    for ((tid, issue), amount) in issues.iter().zip(&amounts) {
                        let row = tx
                            .mailbox_entry(tid)?
                            .ok_or(BackofficeError::NotDeliverable)?;
                        if row.mailbox != *mailbox
                            || row.amount as u64 != *amount
                            || row.dcp != i64::from(dcp)
                        {
                            return Err(BackofficeError::NotDeliverable);
                        }
                        match row.issue.as_deref() {
                            // Delivered before: only the same Issue again.
                            Some(prev) if prev != issue.to_cbor().as_slice() => {
                                return Err(BackofficeError::NotDeliverable);
                            }
                            Some(_) => {}
                            None => {
                                self.register_issue(
                                    tx,
                                    dcp,
                                    issue,
                                    epoch,
                                    tally_mds::DEVICE_CLASS_UNKNOWN,
                                )?;
                                tx.set_delivered(tid, &issue.to_cbor())?;
                            }
                        }
                        res.issues.push(issue.clone());
                        res.value += amount;
                        res.settled += 1;
                    }
                    Ok(res)
                })
            }
            CentralRequest::Cancel { issue } => {
                let amount = self.check_issue(dcp, issue)?;
                let id = issue.id();
                let by = tagged_hash(b"tally/v1/cancel", &[&id.0]);
                self.once(dcp, op, reply_key, |tx| {
                    // Only an Issue this DCP registered.
                    let registered = tx.issued(&id)?.map(|r| r.dcp);
                    if registered != Some(i64::from(dcp)) {
                        return Err(BackofficeError::NotCancellable);
                    }
                    for i in 0..issue.outputs.len() {
                        let op = OutPoint {
                            record: id,
                            index: i as u8,
                        };
                        if !Settlement::consume_stranded(tx, &op, &by)?
                            && Settlement::is_spent(tx, &op)? != Some(by)
                        {
                            return Err(BackofficeError::NotCancellable);
                        }
                    }
                    // Keyed by the Issue: a second cancellation (another
                    // request of the same SE) moves nothing more.
                    let applied = Ledger::transfer(
                        tx,
                        &TransferRequest {
                            idem: format!("cancel:{id}"),
                            debit: ledger::OFFLINE_FLOAT.into(),
                            credit: account.clone(),
                            amount,
                            code: code::UNLOAD,
                        },
                    )?;
                    Ok(SettlementResult {
                        value: if matches!(applied, Applied::New(_)) {
                            amount
                        } else {
                            0
                        },
                        ..SettlementResult::default()
                    })
                })
            }
            CentralRequest::Pay {
                to_dcp,
                to_account,
                amount,
            } => {
                self.dcp_cert(*to_dcp)?;
                if *to_dcp == dcp || !crate::policy::valid_account_name(to_account) {
                    return Err(BackofficeError::Ledger(
                        tally_ledger::ledger::LedgerError::UnknownAccount(to_account.clone()),
                    ));
                }
                self.once(dcp, op, reply_key, |tx| {
                    let applied = Ledger::transfer(
                        tx,
                        &TransferRequest {
                            idem: format!("interbank:{}", op_key(dcp, op)),
                            debit: account.clone(),
                            credit: dcp_account(*to_dcp),
                            amount: *amount,
                            code: code::ONLINE_PAYMENT,
                        },
                    )?;
                    if matches!(applied, Applied::New(_)) {
                        Self::credit_inbox(
                            tx,
                            &op_key(dcp, op),
                            *to_dcp,
                            Some(to_account),
                            *amount,
                            dcp,
                        )?;
                    }
                    Ok(SettlementResult {
                        value: *amount,
                        ..SettlementResult::default()
                    })
                })
            }
        }
    }

    /// A DCP's sync request: the device's sealed upload opened and
    /// verified with the other uploads waiting (one signature batch), then
    /// settled with the other requests waiting in one transaction (group
    /// commit). Unlike the other requests, no transaction reads a stored
    /// answer or the epoch first: the group's transaction does both (an
    /// answered op gets its stored answer there), and only a request
    /// refused before it looks for a stored answer (SPEC §10.6 I2: an op
    /// answered before gets that answer, whatever a check says now). On
    /// SQLite that read waited for the group's commit on the one
    /// connection; on PostgreSQL it was a transaction of four round trips.
    #[allow(clippy::too_many_arguments)]
    fn sync(
        &self,
        dcp: u32,
        op: &Hash32,
        reply_key: &Hash32,
        sealed: &[u8],
        reports: &Hash32,
        mailbox: &Hash32,
        last_sync: Epoch,
    ) -> Result<Vec<u8>, BackofficeError> {
        // Opening and verification before the settlement transaction, on
        // one of the cores given to them, with the other uploads waiting
        // there (one signature batch).
        let open = SyncOpen {
            sealed: sealed.to_vec(),
            reports: *reports,
        };
        let opened = self
            .openings
            .submit(open, |jobs| self.verify_syncs(jobs))
            .unwrap_or_else(|| {
                Err(BackofficeError::Store(StoreError::Db(
                    "the upload's verification was interrupted".into(),
                )))
            });
        let (upload, checked) = match opened {
            Ok(o) => o,
            Err(e) => {
                let key = op_key(dcp, op);
                return match self.store.transact(|tx| tx.stored_reply(&key))? {
                    Some(stored) => open_stored_reply(reply_key, &stored),
                    None => Err(e),
                };
            }
        };
        // Concurrent uploads share one transaction and one commit.
        let job = SyncJob {
            dcp,
            op: *op,
            reply_key: *reply_key,
            mailbox: *mailbox,
            last_sync,
            upload,
            checked,
        };
        self.syncs
            .submit(job, |jobs| self.commit_syncs(jobs))
            .unwrap_or_else(|| {
                Err(BackofficeError::Store(StoreError::Db(
                    "the request's group commit was interrupted".into(),
                )))
            })
    }

    /// Opens sealed sync uploads and checks their packages against the
    /// trust objects (read at most [`TRUST_REFRESH`] ago), before the
    /// settlement transaction; one answer per upload, in order. The
    /// packages of every upload that opens are verified together (one
    /// signature batch; see [`verify_package_groups_for_settlement`] for
    /// what happens when it fails), and each package still gets the
    /// answer it would get alone: an upload that does not open refuses
    /// only its own request, a forged package only itself.
    pub(crate) fn verify_syncs(
        &self,
        jobs: Vec<SyncOpen>,
    ) -> Vec<Result<OpenedUpload, BackofficeError>> {
        let opened: Vec<Result<SyncUpload, BackofficeError>> = jobs
            .iter()
            .map(|j| {
                let upload = SyncUpload::from_cbor(
                    &self.keys.opening.open(SealedKind::SyncUpload, &j.sealed)?,
                )?;
                // The reports are those the SE signed for (it drops them
                // once the grant for this request arrives, so none may be
                // left out).
                if tally_core::dcp::reports_digest(&upload.reports) != j.reports {
                    return Err(BackofficeError::ReportsMismatch);
                }
                Ok(upload)
            })
            .collect();
        let uploads: Vec<&[Vec<u8>]> = opened
            .iter()
            .flatten()
            .map(|u| u.packages.as_slice())
            .collect();
        let mut checked = match self.check_uploads(&uploads) {
            Ok(c) => c.into_iter(),
            Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
        };
        opened
            .into_iter()
            .map(|u| {
                let u = u?;
                let c = checked.next().ok_or_else(|| {
                    BackofficeError::from(StoreError::Type("verification lost an upload".into()))
                })?;
                Ok((u, c))
            })
            .collect()
    }

    /// Checks uploads' packages against the trust objects (read at most
    /// [`TRUST_REFRESH`] ago): one signature batch for all of them; each
    /// package still gets the answer it would get on its own.
    fn check_uploads(&self, uploads: &[&[Vec<u8>]]) -> Result<Vec<Vec<Checked>>, BackofficeError> {
        let (trust, params) = self.upload_verifier()?;
        let mut groups = Vec::with_capacity(uploads.len());
        let mut transfers = Vec::with_capacity(uploads.len());
        let mut slots = Vec::with_capacity(uploads.len());
        for packages in uploads {
            let mut decoded = Vec::with_capacity(packages.len());
            let mut ts = Vec::with_capacity(packages.len());
            let mut ss = Vec::with_capacity(packages.len());
            for p in packages.iter() {
                match Package::from_cbor(p) {
                    Err(_) => ss.push(false),
                    Ok(pkg) => {
                        ts.push(pkg.transfer.clone());
                        decoded.push(pkg);
                        ss.push(true);
                    }
                }
            }
            groups.push(decoded);
            transfers.push(ts);
            slots.push(ss);
        }
        // The cache is locked per look-up, not across the verification:
        // concurrent requests verify in parallel.
        let mut cache = SharedCertCache(&self.cache);
        // C7 with settlement's sealing key in the same call, which is what
        // lets it stand in for the range proofs and balances (decision
        // 0028): every package comes back with its amounts opened, or
        // awaiting its one-output Issues' registered values.
        let verified = verify_package_groups_for_settlement_opened(
            groups,
            &trust,
            params,
            &mut cache,
            &self.keys.opening,
            range_bits(trust.policy()),
            &|id| {
                let one_in = self
                    .proof_sample
                    .1
                    .load(std::sync::atomic::Ordering::Relaxed);
                proof_sample_picks(&self.proof_sample.0, one_in, id)
            },
            // A one-output Issue's value comes from the registry, inside
            // the settling transaction (`settle_uploads`): its audit seal
            // was opened when it was registered.
            true,
        );
        let mut out = Vec::with_capacity(uploads.len());
        for ((verified, transfers), slots) in verified.into_iter().zip(transfers).zip(slots) {
            let mut verified = verified.into_iter().zip(transfers);
            let mut checked = Vec::with_capacity(slots.len());
            for decoded in slots {
                checked.push(match (decoded, verified.next()) {
                    (false, _) => Checked::Malformed,
                    (true, Some((Ok(v), _))) => Checked::Verified(Box::new(v)),
                    (true, Some((Err(SettlementRefusal::Verify(e)), transfer))) => {
                        Checked::Refused(transfer, e.code())
                    }
                    (true, Some((Err(SettlementRefusal::Audit(f)), transfer))) => Checked::Refused(
                        transfer,
                        SettlementError::AuditOpeningInvalid(f.record).code(),
                    ),
                    (true, None) => {
                        return Err(StoreError::Type("verification lost a package".into()).into());
                    }
                });
            }
            out.push(checked);
        }
        if out.len() != uploads.len() {
            return Err(StoreError::Type("verification lost an upload".into()).into());
        }
        Ok(out)
    }

    fn verify_with(
        &self,
        trust: &TrustStore,
        pkg: Package,
    ) -> Result<tally_core::VerifiedPackage, BackofficeError> {
        let budget = trust
            .policy()
            .limits(device_class::DCP, 0)
            .map(|l| usize::from(l.history_records_max))
            .unwrap_or(1024);
        let v = verify_package_for_settlement(
            pkg,
            trust,
            VerifyParams {
                epoch: 0,
                history_records_max: budget,
                signature_batch_max: usize::MAX,
            },
            &mut SharedCertCache(&self.cache),
        )?;
        Ok(self.open_amounts(trust, v)?)
    }

    /// Rule C7 (SPEC §4.9.4), before the settlement transaction: a
    /// confidential package's audit seals opened with settlement's sealing
    /// key, every opening checked against its commitment, in the range of
    /// the policy and balanced per transfer; the package then carries the
    /// opened values that settlement books. A clear package is returned
    /// as it is. The opened values stay on this side: devices and DCPs
    /// only ever see commitments.
    fn open_amounts(
        &self,
        trust: &TrustStore,
        v: tally_core::VerifiedPackage,
    ) -> Result<tally_core::VerifiedPackage, SettlementError> {
        if v.amounts_opened() {
            return Ok(v);
        }
        v.open_audit(&self.keys.opening, range_bits(trust.policy()))
            .map_err(|f| SettlementError::AuditOpeningInvalid(f.record))
    }

    /// C7 for a confidential Issue a DCP registers (load, renewal,
    /// recovery): its audit seal opened and checked; `None` for a clear
    /// Issue.
    fn audit_issue(
        &self,
        policy: &Policy,
        issue: &Issue,
    ) -> Result<Option<tally_core::confidential_record::AuditedIssue>, BackofficeError> {
        if issue.confidential.is_none() {
            return Ok(None);
        }
        if !policy.is_confidential() {
            return Err(BackofficeError::ForeignIssue);
        }
        issue
            .open_audit(&self.keys.opening, range_bits(policy))
            .map(Some)
            .map_err(|_| SettlementError::AuditOpeningInvalid(issue.id()).into())
    }

    /// The device class of each output's owner, as the MDS takes it: a
    /// DCP key, a certified key of the package, or unknown.
    fn output_classes<'p>(&self, pkg: &'p Package) -> impl Fn(&[Output]) -> Vec<u8> + 'p {
        let mut classes = std::collections::HashMap::new();
        for c in &self.dcps {
            classes.insert(c.key, device_class::DCP);
        }
        for c in &pkg.certificates {
            classes.insert(c.key, c.device_class);
        }
        move |outputs: &[Output]| {
            outputs
                .iter()
                .map(|o| {
                    classes
                        .get(&o.owner)
                        .copied()
                        .unwrap_or(tally_mds::DEVICE_CLASS_UNKNOWN)
                })
                .collect()
        }
    }

    /// Settlement's side of a settled package: keeps the escrows of its
    /// certificates (for openings) and queues its records for the MDS.
    fn record_settled(
        &self,
        tx: &mut dyn Tx,
        pkg: &Package,
        epoch: Epoch,
        offline_epochs: Option<u32>,
        unacknowledged: bool,
        out: &mut Vec<IngestRecord>,
    ) -> Result<(), BackofficeError> {
        Self::keep_escrows(tx, &[pkg])?;
        self.ingest_records(pkg, epoch, offline_epochs, unacknowledged, out);
        Ok(())
    }

    /// Keeps the escrows of the packages' certificates (for openings),
    /// each once: one look-up and one multi-row insert for all of them.
    fn keep_escrows(tx: &mut dyn Tx, pkgs: &[&Package]) -> Result<(), BackofficeError> {
        let mut wanted: std::collections::BTreeMap<Hash32, &Vec<u8>> =
            std::collections::BTreeMap::new();
        for pkg in pkgs {
            for c in &pkg.certificates {
                if !c.escrow.is_empty() {
                    wanted.entry(c.key.id()).or_insert(&c.escrow);
                }
            }
        }
        let ids: Vec<Hash32> = wanted.keys().copied().collect();
        for known in tx.escrows_known(&ids)? {
            wanted.remove(&known);
        }
        let rows: Vec<(Hash32, &[u8])> = wanted.iter().map(|(k, e)| (*k, e.as_slice())).collect();
        tx.insert_escrows(&rows)?;
        Ok(())
    }

    /// The package's records for the MDS, each with its outputs' device
    /// classes (from the package's certificates).
    fn ingest_records(
        &self,
        pkg: &Package,
        epoch: Epoch,
        offline_epochs: Option<u32>,
        unacknowledged: bool,
        out: &mut Vec<IngestRecord>,
    ) {
        let classes = self.output_classes(pkg);
        let last = pkg.ancestry.len();
        let records = pkg
            .ancestry
            .iter()
            .cloned()
            .chain(std::iter::once(Record::Transfer(pkg.transfer.clone())));
        for (i, rec) in records.enumerate() {
            let outputs = match &rec {
                Record::Issue(x) => &x.outputs,
                Record::Transfer(x) => &x.outputs,
            };
            let output_classes = classes(outputs);
            let mut r = IngestRecord::new(rec, epoch, Verdict::Verified);
            r.output_classes = output_classes;
            if i == last {
                r.offline_epochs = offline_epochs;
                r.unacknowledged = unacknowledged;
            }
            out.push(r);
        }
    }

    /// [`CentralBank::ingest_records`] for a package settled in this
    /// transaction, as the outbox row keeps it: each record by reference
    /// (its Issues are registered, its transfers in `settled_records`;
    /// the MDS fetch resolves them), with the opened amounts of a
    /// confidential record. The final transfer is unacknowledged (a sync
    /// upload is the payer's).
    fn stored_entries(
        &self,
        v: &tally_core::VerifiedPackage,
        epoch: Epoch,
        offline_epochs: Option<u32>,
        out: &mut Vec<OutboxEntry>,
    ) {
        let pkg = v.package();
        let classes = self.output_classes(pkg);
        let records = pkg
            .ancestry
            .iter()
            .zip(v.ancestry_ids())
            .map(|(r, id)| {
                (
                    r.outputs(),
                    r.is_confidential(),
                    matches!(r, Record::Issue(_)),
                    *id,
                )
            })
            .chain(std::iter::once((
                pkg.transfer.outputs.as_slice(),
                pkg.transfer.confidential.is_some(),
                false,
                v.transfer_id(),
            )));
        let last = pkg.ancestry.len();
        for (i, (outputs, confidential, issue, id)) in records.enumerate() {
            let output_classes = classes(outputs);
            out.push(OutboxEntry {
                record: OutboxRecord::Stored { issue, id },
                epoch,
                verdict: Verdict::Verified,
                output_classes,
                offline_epochs: if i == last { offline_epochs } else { None },
                unacknowledged: i == last,
                values: confidential.then(|| outputs.iter().map(|o| o.value.0).collect()),
            });
        }
    }

    fn redeem(
        &self,
        dcp: u32,
        op: &Hash32,
        reply_key: &Hash32,
        epoch: Epoch,
        a: RedeemArgs<'_>,
    ) -> Result<Vec<u8>, BackofficeError> {
        let dcp_key = self.dcp_cert(dcp)?.key;
        if let Some(i) = a.renewal
            && self.check_issue(dcp, i)? != a.amount
        {
            return Err(BackofficeError::ForeignIssue);
        }
        // Opens and verifies before the transaction. A package that does
        // not open or verify is refused inside, after the one-payout
        // guard, as before.
        let verified: Result<tally_core::VerifiedPackage, BackofficeError> = self
            .keys
            .opening
            .open(SealedKind::Redemption, a.sealed)
            .map_err(BackofficeError::from)
            .and_then(|plain| Ok(Package::from_cbor(&plain)?))
            .and_then(|pkg| {
                let trust = self.trust_store()?;
                self.verify_with(&trust, pkg)
            });
        let account = dcp_account(dcp);
        let res = self.once(dcp, op, reply_key, |tx| {
            // One payout per redemption request, whatever the number of
            // different device requests that carry it.
            let tag = tagged_hash(b"tally/v1/redemption-op", &[&reply_key.0]);
            match tx.redemption_op(a.nonce)? {
                Some(paid) if paid != tag.0.as_slice() => {
                    return Err(BackofficeError::UnknownRedemption);
                }
                Some(_) => {}
                None => {
                    tx.insert_redemption(a.nonce, &tag)?;
                }
            }
            let verified = verified.as_ref().map_err(Clone::clone)?;
            let t = &verified.package().transfer;
            if &t.nonce != a.nonce {
                return Err(BackofficeError::UnknownRedemption);
            }
            if verified.transfer_id() != *a.transfer_id {
                return Err(BackofficeError::TransferMismatch);
            }
            if t.outputs[0]
                != (Output {
                    value: Amount(a.amount),
                    owner: dcp_key,
                })
            {
                return Err(BackofficeError::WrongRedemption);
            }
            let outcome = Settlement::settle(tx, verified, &format!("redeem:{}", op_key(dcp, op)))?;
            let tid = verified.transfer_id();
            if let Some(d) = outcome.double_spends.iter().find(|d| d.second.id() == tid) {
                // The redeemer itself is the cheater: nothing is honoured
                // (the transaction rolls back).
                return Err(BackofficeError::DoubleSpendByRedeemer(Box::new(d.clone())));
            }
            let mut ingest = Vec::new();
            let offline = (a.last_sync > 0).then(|| epoch.saturating_sub(a.last_sync));
            self.record_settled(tx, verified.package(), epoch, offline, false, &mut ingest)?;
            self.queue_mds(tx, op, &ingest)?;
            let mut res = SettlementResult {
                settled: 1,
                value: a.amount,
                double_spends: outcome.double_spends.len() as u32,
                transfer: Some(tid),
                ..SettlementResult::default()
            };
            match a.renewal {
                None => {
                    Ledger::transfer(
                        tx,
                        &TransferRequest {
                            idem: format!("unload:{}", op_key(dcp, op)),
                            debit: ledger::OFFLINE_FLOAT.into(),
                            credit: account.clone(),
                            amount: a.amount,
                            code: code::UNLOAD,
                        },
                    )?;
                }
                Some(issue) => {
                    self.register_issue(tx, dcp, issue, epoch, a.class)?;
                    res.issues.push(issue.clone());
                }
            }
            Ok(res)
        });
        match res {
            Err(BackofficeError::DoubleSpendByRedeemer(d)) => {
                // Nothing is honoured (the settlement rolled back), but the
                // MDS must see the attempt: the redeemer's package goes to
                // the outbox on its own, so the double spend raises an alert.
                self.report_refused_redemption(op, epoch, a.sealed);
                Err(BackofficeError::DoubleSpendByRedeemer(d))
            }
            // A package settlement's rules refuse (a forged stream claim,
            // S4; an audit seal that lies, C7; …): nothing is honoured, and
            // the MDS sees the attempt as a sync upload's refused package
            // is seen (a counterfeit alert with the rule's code).
            Err(
                e @ (BackofficeError::Verify(_)
                | BackofficeError::Settlement(SettlementError::AuditOpeningInvalid(_))),
            ) => {
                self.report_refused_package(op, epoch, a.sealed, e.code());
                Err(e)
            }
            other => other,
        }
    }

    /// Settles one opened sync upload. A package that fails verification
    /// is not settled but goes to the MDS as a counterfeit attempt; the
    /// rest of the upload still settles. What waits in `mailbox` is
    /// listed in the result (`deliveries`).
    #[allow(clippy::too_many_arguments)]
    /// Settles a group of verified sync uploads in one transaction (see
    /// [`crate::group`]); one answer per job, in order. A request answered
    /// before (or twice in the group) gets its stored answer. The fresh
    /// ones settle together — one `settle_batch` and one statement per
    /// kind of bookkeeping for the whole group, inside a savepoint; if any
    /// of them is refused as a whole (a package the registry refuses),
    /// the group is rolled back to the savepoint and each request settles
    /// alone in its own savepoint, so a refused request rolls back only
    /// itself. One invariant check and one commit for the group. A
    /// conflict retries the whole group; a failure of the transaction
    /// itself (its commit included) answers every request with it — a
    /// store failure, which a DCP treats as unanswered and retries.
    fn commit_syncs(&self, jobs: Vec<SyncJob>) -> Vec<Result<Vec<u8>, BackofficeError>> {
        let out = self.store.transact(|tx| {
            let keys: Vec<Hash32> = jobs.iter().map(|j| op_key(j.dcp, &j.op)).collect();
            let mut out: Vec<Option<Result<Vec<u8>, BackofficeError>>> =
                (0..jobs.len()).map(|_| None).collect();
            // Answered before, or the retry of a request earlier in this
            // group (answered from what that one stores).
            let mut fresh: Vec<usize> = Vec::with_capacity(jobs.len());
            let mut repeats: Vec<usize> = Vec::new();
            let answered = tx.stored_replies(&keys)?;
            let epoch = tx.epoch()? as Epoch;
            for (i, j) in jobs.iter().enumerate() {
                if fresh.iter().any(|&f| keys[f] == keys[i]) {
                    repeats.push(i);
                } else if let Some(stored) = answered.get(&keys[i]) {
                    out[i] = Some(open_stored_reply(&j.reply_key, stored));
                } else {
                    fresh.push(i);
                }
            }
            const GROUP: &str = "sync_group";
            const ONE: &str = "sync_request";
            tx.savepoint(GROUP)?;
            let together: Vec<&SyncJob> = fresh.iter().map(|&i| &jobs[i]).collect();
            match self.settle_uploads(tx, epoch, &together) {
                Ok(results) => {
                    tx.release_savepoint(GROUP)?;
                    // Every answer of the group stored in one statement.
                    let mut rows = Vec::with_capacity(fresh.len());
                    for (&i, res) in fresh.iter().zip(results) {
                        let j = &jobs[i];
                        let (signed, sealed) = self.sign_and_seal(&j.op, &j.reply_key, res)?;
                        rows.push((keys[i], sealed));
                        out[i] = Some(Ok(signed));
                    }
                    tx.insert_replies(&rows)?;
                }
                Err(e) if e.is_conflict() => return Err(e),
                Err(_) => {
                    tx.rollback_to_savepoint(GROUP)?;
                    for &i in &fresh {
                        let j = &jobs[i];
                        tx.savepoint(ONE)?;
                        let r = self.settle_uploads(tx, epoch, &[j]).and_then(|mut r| {
                            let res = r.pop().ok_or(BackofficeError::BadSettlementResult)?;
                            self.sign_and_store(tx, &keys[i], &j.op, &j.reply_key, res)
                        });
                        match r {
                            Ok(signed) => {
                                tx.release_savepoint(ONE)?;
                                out[i] = Some(Ok(signed));
                            }
                            Err(e) if e.is_conflict() => return Err(e),
                            Err(e) => {
                                tx.rollback_to_savepoint(ONE)?;
                                out[i] = Some(Err(e));
                            }
                        }
                    }
                }
            }
            for i in repeats {
                out[i] = Some(match tx.stored_reply(&keys[i])? {
                    Some(stored) => open_stored_reply(&jobs[i].reply_key, &stored),
                    // The first was refused: so is its retry.
                    None => match fresh.iter().find(|&&f| keys[f] == keys[i]) {
                        Some(&f) => out[f]
                            .clone()
                            .unwrap_or(Err(BackofficeError::BadSettlementResult)),
                        None => Err(BackofficeError::BadSettlementResult),
                    },
                });
            }
            Ledger::assert_invariant(tx)?;
            Ok::<_, BackofficeError>(
                out.into_iter()
                    .map(|o| o.unwrap_or(Err(BackofficeError::BadSettlementResult)))
                    .collect::<Vec<_>>(),
            )
        });
        match out {
            Ok(out) => out,
            Err(e) => {
                let e = match e.store_failure() {
                    Some(_) => e,
                    None => BackofficeError::Store(StoreError::Db(format!(
                        "the group's transaction failed: {e}"
                    ))),
                };
                jobs.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }

    /// The settlement of verified sync uploads, one result per job, with a
    /// constant number of statements for all of them: every verified
    /// package in one `settle_batch` (double spends between uploads are
    /// found as within one), then escrows, uploaders and closed requests
    /// each in one statement. The effect is that of settling the uploads
    /// one after the other in this order. A package the registry refuses
    /// fails the call (the caller rolls back and settles the uploads
    /// singly, so only the upload holding it is refused).
    fn settle_uploads(
        &self,
        tx: &mut dyn Tx,
        epoch: Epoch,
        jobs: &[&SyncJob],
    ) -> Result<Vec<SettlementResult>, BackofficeError> {
        let mut results: Vec<SettlementResult> =
            jobs.iter().map(|_| SettlementResult::default()).collect();
        let mut ingest: Vec<Vec<OutboxEntry>> = jobs.iter().map(|_| Vec::new()).collect();
        let mut idems: Vec<String> = Vec::new();
        let mut owners: Vec<usize> = Vec::new();
        let mut verified: Vec<&tally_core::VerifiedPackage> = Vec::new();
        // C7's end for the packages whose one-output Issues' values are in
        // the registry (decision 0028, "Session 13"): registered after
        // their audit seals were opened, and never changed since. One
        // look-up per distinct Issue of the group. Per package in job
        // order: `None` (nothing awaited), the completed package, or the
        // record C7 refuses it for.
        let mut registered: std::collections::BTreeMap<Hash32, Option<Amount>> =
            std::collections::BTreeMap::new();
        let mut completed: Vec<Option<Result<tally_core::VerifiedPackage, Hash32>>> = Vec::new();
        for c in jobs.iter().flat_map(|j| j.checked.iter()) {
            let Checked::Verified(v) = c else {
                completed.push(None);
                continue;
            };
            if v.awaiting_registry().is_empty() {
                completed.push(None);
                continue;
            }
            for id in v.awaiting_registry() {
                if !registered.contains_key(id) {
                    let value = tx
                        .issued(id)?
                        .and_then(|row| u64::try_from(row.value).ok())
                        .map(Amount);
                    registered.insert(*id, value);
                }
            }
            let value = |id: &Hash32| registered.get(id).copied().flatten();
            completed.push(Some(
                (**v)
                    .clone()
                    .complete_from_registry(&value)
                    .map_err(|f| f.record),
            ));
        }
        let mut slot = 0usize;
        for (n, j) in jobs.iter().enumerate() {
            let key = op_key(j.dcp, &j.op);
            for (i, c) in j.checked.iter().enumerate() {
                let done = &completed[slot];
                slot += 1;
                if let (Some(Err(record)), Checked::Verified(v)) = (done, c) {
                    // Refused as a sync upload's package C7 refuses.
                    results[n].refused += 1;
                    ingest[n].push(OutboxEntry {
                        record: OutboxRecord::Record(Record::Transfer(
                            v.package().transfer.clone(),
                        )),
                        epoch,
                        verdict: Verdict::Refused(
                            SettlementError::AuditOpeningInvalid(*record).code(),
                        ),
                        output_classes: Vec::new(),
                        offline_epochs: None,
                        unacknowledged: false,
                        values: None,
                    });
                    continue;
                }
                match c {
                    Checked::Verified(v) => {
                        verified.push(match done {
                            Some(Ok(completed)) => completed,
                            _ => v,
                        });
                        owners.push(n);
                        idems.push(format!("sync:{key}:{i}"));
                    }
                    Checked::Malformed => results[n].refused += 1,
                    Checked::Refused(transfer, code) => {
                        results[n].refused += 1;
                        // Not stored by settlement: the record in full.
                        ingest[n].push(OutboxEntry {
                            record: OutboxRecord::Record(Record::Transfer(transfer.clone())),
                            epoch,
                            verdict: Verdict::Refused(*code),
                            output_classes: Vec::new(),
                            offline_epochs: None,
                            unacknowledged: false,
                            values: None,
                        });
                    }
                }
            }
        }
        let batch: Vec<(&tally_core::VerifiedPackage, &str)> = verified
            .iter()
            .zip(&idems)
            .map(|(v, i)| (*v, i.as_str()))
            .collect();
        let outcomes = Settlement::settle_batch(tx, &batch)?;
        for ((v, &n), outcome) in verified.iter().zip(&owners).zip(outcomes) {
            let outcome = outcome?;
            let res = &mut results[n];
            res.settled += 1;
            res.double_spends += outcome.double_spends.len() as u32;
            res.value += v.package().transfer.outputs[0].value.0;
        }
        let pkgs: Vec<&Package> = verified.iter().map(|v| v.package()).collect();
        Self::keep_escrows(tx, &pkgs)?;
        for (v, &n) in verified.iter().zip(&owners) {
            let last_sync = jobs[n].last_sync;
            let offline = (last_sync > 0).then(|| epoch.saturating_sub(last_sync));
            self.stored_entries(v, epoch, offline, &mut ingest[n]);
        }
        // The uploader (the payer) is where a refund goes: each transfer's
        // first upload is kept.
        let mut fresh: std::collections::BTreeMap<Hash32, (&tally_core::Transfer, usize)> =
            std::collections::BTreeMap::new();
        for (v, &n) in verified.iter().zip(&owners) {
            // A stream OPEN is never recovered or refunded as a payment:
            // its payer takes back what it did not release by its own
            // refund half, and a payee that never received it claims
            // nothing. Paying its output out here as well would pay the
            // stream twice (found by the protocol model, decision 0020
            // session 11).
            if v.package().transfer.stream_open().is_some() {
                continue;
            }
            fresh
                .entry(v.transfer_id())
                .or_insert((&v.package().transfer, n));
        }
        let ids: Vec<Hash32> = fresh.keys().copied().collect();
        for known in tx.uploads_known(&ids)? {
            fresh.remove(&known);
        }
        let payee_keys: Vec<Vec<u8>> = fresh
            .values()
            .map(|(t, _)| t.outputs[0].owner.to_cbor())
            .collect();
        let rows: Vec<NewUpload<'_>> = fresh
            .iter()
            .zip(&payee_keys)
            .map(|((tid, (t, n)), key)| NewUpload {
                transfer_id: tid,
                nonce: &t.nonce,
                payee_key: key,
                amount: t.outputs[0].value.0 as i64,
                mailbox: &jobs[*n].mailbox,
                dcp: i64::from(jobs[*n].dcp),
            })
            .collect();
        tx.insert_uploads(&rows)?;
        // Requests a payee's report closed before: resolved now that the
        // payer's side is known (one look-up for the group).
        let nonces: Vec<[u8; 16]> = pkgs.iter().map(|p| p.transfer.nonce).collect();
        let closed = tx.closed_requests(&nonces)?;
        for p in &pkgs {
            let t = &p.transfer;
            if closed.contains(&(t.nonce, t.outputs[0].owner.to_cbor())) {
                self.resolve(tx, &t.nonce, &t.outputs[0].owner)?;
            }
        }
        for (n, j) in jobs.iter().enumerate() {
            for r in &j.upload.reports {
                // Only the payee's SE signs a report, with the request's key.
                if !r.verify() {
                    results[n].refused += 1;
                    continue;
                }
                let payee_key = r.key.to_cbor();
                // The first report of a request stands.
                if !tx.closed_exists(&r.nonce, &payee_key)? {
                    tx.insert_closed(&ClosedReport {
                        nonce: &r.nonce,
                        payee_key: &payee_key,
                        mailbox: &j.mailbox,
                        amount: r.amount as i64,
                        received: r.received.as_ref(),
                        dcp: i64::from(j.dcp),
                    })?;
                }
                self.resolve(tx, &r.nonce, &r.key)?;
            }
        }
        // What waits in the devices' mailboxes (issued by the DCP, then
        // registered by a Deliver request), one look-up for the group.
        let boxes: Vec<(Hash32, u32)> = jobs.iter().map(|j| (j.mailbox, j.dcp)).collect();
        let waiting = tx.waiting_deliveries_of(&boxes)?;
        for (n, j) in jobs.iter().enumerate() {
            for d in waiting.get(&(j.mailbox, j.dcp)).into_iter().flatten() {
                results[n].deliveries.push((d.transfer_id, d.amount as u64));
            }
        }
        let outbox: Vec<(Hash32, Vec<u8>)> = jobs
            .iter()
            .zip(&ingest)
            .filter(|(_, i)| !i.is_empty())
            .map(|(j, i)| (j.op, encode_outbox(i)))
            .collect();
        tx.insert_outboxes(&outbox, unix_seconds())?;
        Ok(results)
    }

    /// Resolves a payee's request once both sides are known (decision
    /// 0010): see the SPEC §9.2. Each stranded output is consumed once in
    /// the spent registry, and the value waits in the mailbox of the payee
    /// or the payer, at the DCP it came through.
    fn resolve(
        &self,
        tx: &mut dyn Tx,
        nonce: &[u8; 16],
        key: &PublicKey,
    ) -> Result<(), BackofficeError> {
        let payee_key = key.to_cbor();
        let Some(report) = tx.closed_report(nonce, &payee_key)? else {
            return Ok(());
        };
        let payee_mailbox = report.mailbox;
        let asked = report.amount as u64;
        let received = report.received;
        let payee_dcp = report.dcp;
        // Whether the closed request was credited already.
        let mut credited =
            received.is_some() || tx.recovery_credited(&payee_mailbox, nonce, &payee_key)?;
        for up in tx.uploads_for(nonce, &payee_key)? {
            let tid = up.transfer_id;
            if Some(tid) == received {
                continue; // the payee holds it
            }
            let amount = up.amount as u64;
            let recover = !credited && amount == asked;
            let (to, to_dcp, tag) = if recover {
                (payee_mailbox, payee_dcp, &b"tally/v1/recovery"[..])
            } else {
                let Some(m) = up.mailbox else {
                    continue; // uploaded before refunds existed: an operator's case
                };
                (m, up.dcp, &b"tally/v1/refund"[..])
            };
            let by = tagged_hash(tag, &[&tid.0]);
            if !Settlement::consume_stranded(
                tx,
                &OutPoint {
                    record: tid,
                    index: 0,
                },
                &by,
            )? {
                if recover
                    && Settlement::is_spent(
                        tx,
                        &OutPoint {
                            record: tid,
                            index: 0,
                        },
                    )? == Some(by)
                {
                    credited = true;
                }
                continue; // resolved before (or spent by the payee)
            }
            credited |= recover;
            tx.insert_mailbox(&NewMailboxEntry {
                transfer_id: &tid,
                mailbox: &to,
                amount: amount as i64,
                refund: !recover,
                dcp: to_dcp,
            })?;
        }
        Ok(())
    }

    // ---- MDS feed (outbox) ------------------------------------------------

    /// A redemption refused because the redeemer double-spent its own
    /// tokens: its (verified) records go to the MDS without settling.
    /// Best effort: a failure is logged, the refusal stands either way.
    fn report_refused_redemption(&self, op: &Hash32, epoch: Epoch, sealed: &[u8]) {
        let key = tagged_hash(b"tally/v1/outbox-refused-redemption", &[&op.0]);
        let r = self.store.transact(|tx| {
            if tx.outbox_has(&key)? {
                return Ok(());
            }
            let plain = self.keys.opening.open(SealedKind::Redemption, sealed)?;
            let trust = self.trust_in(tx)?;
            let verified = self.verify_with(&trust, Package::from_cbor(&plain)?)?;
            let mut ingest = Vec::new();
            self.record_settled(tx, verified.package(), epoch, None, false, &mut ingest)?;
            self.queue_mds(tx, &key, &ingest)
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "refused redemption not reported to the MDS");
        }
    }

    /// A redemption whose package settlement's rules refused: its paying
    /// transfer goes to the MDS as refused (`code`), without settling.
    /// Best effort and once per request: a failure is logged, the refusal
    /// stands either way.
    fn report_refused_package(&self, op: &Hash32, epoch: Epoch, sealed: &[u8], code: u16) {
        let key = tagged_hash(b"tally/v1/outbox-refused-package", &[&op.0]);
        let r = self.store.transact(|tx| {
            if tx.outbox_has(&key)? {
                return Ok(());
            }
            let plain = self.keys.opening.open(SealedKind::Redemption, sealed)?;
            let pkg = Package::from_cbor(&plain)?;
            let ingest = [IngestRecord::new(
                Record::Transfer(pkg.transfer),
                epoch,
                Verdict::Refused(code),
            )];
            self.queue_mds(tx, &key, &ingest)
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "refused redemption package not reported to the MDS");
        }
    }

    fn queue_mds(
        &self,
        tx: &mut dyn Tx,
        op: &Hash32,
        records: &[IngestRecord],
    ) -> Result<(), BackofficeError> {
        if records.is_empty() {
            return Ok(());
        }
        tx.insert_outbox(op, &encode_ingest(records), unix_seconds())?;
        Ok(())
    }

    /// Moves settled records from the outbox into the MDS of this
    /// process (none when the MDS is its own process: `tally mds` pulls
    /// them over the network). Called by a background task of the process
    /// and before the MDS is read, never on a device's request path.
    /// Store failures leave the rows for the next call (and are logged).
    pub fn pump_mds(&self) {
        let Some(mds) = &self.mds else { return };
        if let Err(e) = crate::monitoring::pump(self, mds) {
            tracing::error!(error = %e, "MDS feed failed; will retry");
        }
    }

    fn mds_here(&self) -> Result<&Mds, BackofficeError> {
        self.mds.as_ref().ok_or_else(|| BackofficeError::Remote {
            code: tally_codes::CENTRAL_UNAVAILABLE,
            status: 503,
            message: "the MDS runs as its own process (`tally mds`): ask it".into(),
        })
    }

    /// The MDS feed's backlog, for monitoring.
    pub fn mds_outbox(&self) -> Result<OutboxStatus, BackofficeError> {
        let OutboxBacklog {
            pending,
            oldest_queued_at: oldest,
        } = self
            .store
            .transact(|tx| Ok::<_, BackofficeError>(tx.outbox_backlog()?))?;
        let oldest_age_seconds = if oldest > 0 {
            u64::try_from(unix_seconds().saturating_sub(oldest)).unwrap_or(0)
        } else {
            0
        };
        Ok(OutboxStatus {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_age_seconds,
            set_aside: match &self.mds {
                Some(m) => m.set_aside_count()?,
                None => 0,
            },
        })
    }

    fn device_dcp(tx: &mut dyn Tx, se_id: &Hash32) -> Result<Option<i64>, BackofficeError> {
        Ok(tx.device_dcp(se_id)?)
    }
}

/// One call of the [`Central`] interface on the wire (a DCP to the
/// central bank over the network): `[1, method, …]` canonical CBOR. The
/// calling DCP is not in it: the transport authenticates it.
// `Call` holds a request with an Issue (larger since confidential Issues
// are compiled in); a call is decoded once per request and never stored
// in bulk, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CentralCall {
    Trust,
    Device(Hash32),
    Enrol(MakerCertificate),
    SetIdDigest(Hash32, Hash32),
    IdDigest(Hash32),
    Call {
        op: Hash32,
        reply_key: Hash32,
        request: CentralRequest,
    },
    Inbox,
    AckInbox(Vec<Hash32>),
    SettlementBalance,
}

impl Cbor for CentralCall {
    fn write(&self, w: &mut Writer) {
        match self {
            CentralCall::Trust => {
                w.array(2);
                w.u64(1);
                w.u64(1);
            }
            CentralCall::Device(se) => {
                w.array(3);
                w.u64(1);
                w.u64(2);
                se.write(w);
            }
            CentralCall::Enrol(m) => {
                w.array(3);
                w.u64(1);
                w.u64(3);
                m.write(w);
            }
            CentralCall::SetIdDigest(se, d) => {
                w.array(4);
                w.u64(1);
                w.u64(4);
                se.write(w);
                d.write(w);
            }
            CentralCall::IdDigest(se) => {
                w.array(3);
                w.u64(1);
                w.u64(5);
                se.write(w);
            }
            CentralCall::Call {
                op,
                reply_key,
                request,
            } => {
                w.array(5);
                w.u64(1);
                w.u64(6);
                op.write(w);
                reply_key.write(w);
                request.write(w);
            }
            CentralCall::Inbox => {
                w.array(2);
                w.u64(1);
                w.u64(7);
            }
            CentralCall::AckInbox(ops) => {
                w.array(3);
                w.u64(1);
                w.u64(8);
                w.array(ops.len());
                for o in ops {
                    o.write(w);
                }
            }
            CentralCall::SettlementBalance => {
                w.array(2);
                w.u64(1);
                w.u64(9);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.array_max(5)?;
        r.version(1)?;
        let method = r.u64()?;
        let want = match method {
            1 | 7 | 9 => 2,
            2 | 3 | 5 | 8 => 3,
            4 => 4,
            6 => 5,
            _ => return Err(CodecError::Malformed),
        };
        if n != want {
            return Err(CodecError::Malformed);
        }
        Ok(match method {
            1 => CentralCall::Trust,
            2 => CentralCall::Device(Hash32::read(r)?),
            3 => CentralCall::Enrol(MakerCertificate::read(r)?),
            4 => CentralCall::SetIdDigest(Hash32::read(r)?, Hash32::read(r)?),
            5 => CentralCall::IdDigest(Hash32::read(r)?),
            6 => CentralCall::Call {
                op: Hash32::read(r)?,
                reply_key: Hash32::read(r)?,
                request: CentralRequest::read(r)?,
            },
            7 => CentralCall::Inbox,
            8 => {
                let k = r.array_max(INBOX_BATCH_MAX)?;
                let mut ops = Vec::with_capacity(k);
                for _ in 0..k {
                    ops.push(Hash32::read(r)?);
                }
                CentralCall::AckInbox(ops)
            }
            _ => CentralCall::SettlementBalance,
        })
    }
}

/// An SE's directory entry on the wire: `[se_id, attestation key, class,
/// maker, status]`.
pub fn write_entry(w: &mut Writer, e: &SeEntry) {
    w.array(5);
    e.se_id.write(w);
    e.attestation_key.write(w);
    w.u64(u64::from(e.device_class));
    w.text(&e.maker);
    w.u64(e.status as u64);
}

pub fn read_entry(r: &mut Reader<'_>) -> Result<SeEntry, CodecError> {
    r.array(5)?;
    Ok(SeEntry {
        se_id: Hash32::read(r)?,
        attestation_key: PublicKey::read(r)?,
        device_class: r.u8()?,
        maker: r.text_max(ACCOUNT_NAME_BYTES_MAX)?.to_string(),
        status: SeStatus::from_code(r.u64()? as i64).ok_or(CodecError::Malformed)?,
    })
}

/// Answers one wire call of DCP `dcp` (authenticated by the transport):
/// the answer's CBOR. Every answer is an array whose shape the method
/// fixes (see [`CentralCall`]); a refusal is the error, which the
/// transport maps to its status and code.
pub fn answer(central: &dyn Central, dcp: u32, body: &[u8]) -> Result<Vec<u8>, BackofficeError> {
    let call = CentralCall::from_cbor(body)?;
    let mut w = Writer::new();
    match call {
        CentralCall::Trust => central.trust()?.write(&mut w),
        CentralCall::Device(se) => match central.device(&se)? {
            Some(e) => {
                w.array(1);
                write_entry(&mut w, &e);
            }
            None => w.array(0),
        },
        CentralCall::Enrol(m) => write_entry(&mut w, &central.enrol(dcp, &m)?),
        CentralCall::SetIdDigest(se, d) => {
            central.set_id_digest(dcp, &se, &d)?;
            w.array(0);
        }
        CentralCall::IdDigest(se) => match central.id_digest(dcp, &se)? {
            Some(d) => {
                w.array(1);
                d.write(&mut w);
            }
            None => w.array(0),
        },
        CentralCall::Call {
            op,
            reply_key,
            request,
        } => w.bytes(&central.call(dcp, &op, &reply_key, &request)?),
        CentralCall::Inbox => {
            let entries = central.inbox(dcp)?;
            w.array(entries.len());
            for e in &entries {
                e.write(&mut w);
            }
        }
        CentralCall::AckInbox(ops) => {
            central.ack_inbox(dcp, &ops)?;
            w.array(0);
        }
        CentralCall::SettlementBalance => {
            let b = central.settlement_balance(dcp)?;
            w.u64(
                u64::try_from(b)
                    .map_err(|_| StoreError::Type("negative settlement account".into()))?,
            );
        }
    }
    Ok(w.into_bytes())
}

/// The answer to `call` as [`answer`] wrote it, for the client side.
pub mod reply {
    use super::*;

    fn done<T>(r: Reader<'_>, bytes: &[u8], v: T) -> Result<T, CodecError> {
        if r.position() != bytes.len() {
            return Err(CodecError::TrailingBytes);
        }
        Ok(v)
    }

    /// Canonical only (SPEC §2.1): the answer re-encoded must be the
    /// bytes received.
    fn canonical<T>(
        bytes: &[u8],
        v: T,
        encode: impl FnOnce(&T, &mut Writer),
    ) -> Result<T, CodecError> {
        let mut w = Writer::new();
        encode(&v, &mut w);
        if w.into_bytes() != bytes {
            return Err(CodecError::NonCanonical);
        }
        Ok(v)
    }

    pub fn trust(bytes: &[u8]) -> Result<CentralTrust, CodecError> {
        CentralTrust::from_cbor(bytes)
    }
    pub fn device(bytes: &[u8]) -> Result<Option<SeEntry>, CodecError> {
        let mut r = Reader::new(bytes);
        let v = match r.array_max(1)? {
            0 => None,
            _ => Some(read_entry(&mut r)?),
        };
        let v = done(r, bytes, v)?;
        canonical(bytes, v, |v, w| match v {
            Some(e) => {
                w.array(1);
                write_entry(w, e);
            }
            None => w.array(0),
        })
    }
    pub fn entry(bytes: &[u8]) -> Result<SeEntry, CodecError> {
        let mut r = Reader::new(bytes);
        let v = read_entry(&mut r)?;
        let v = done(r, bytes, v)?;
        canonical(bytes, v, |e, w| write_entry(w, e))
    }
    pub fn unit(bytes: &[u8]) -> Result<(), CodecError> {
        let mut r = Reader::new(bytes);
        r.array(0)?;
        done(r, bytes, ())?;
        canonical(bytes, (), |_, w| w.array(0))
    }
    pub fn id_digest(bytes: &[u8]) -> Result<Option<Hash32>, CodecError> {
        let mut r = Reader::new(bytes);
        let v = match r.array_max(1)? {
            0 => None,
            _ => Some(Hash32::read(&mut r)?),
        };
        let v = done(r, bytes, v)?;
        canonical(bytes, v, |v, w| match v {
            Some(d) => {
                w.array(1);
                d.write(w);
            }
            None => w.array(0),
        })
    }
    pub fn signed(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut r = Reader::new(bytes);
        let v = r.bytes_max(UPLOAD_PACKAGES_MAX * 4096 + 4096)?.to_vec();
        let v = done(r, bytes, v)?;
        canonical(bytes, v, |v, w| w.bytes(v))
    }
    pub fn inbox(bytes: &[u8]) -> Result<Vec<InboxEntry>, CodecError> {
        let mut r = Reader::new(bytes);
        let n = r.array_max(INBOX_BATCH_MAX)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(InboxEntry::read(&mut r)?);
        }
        let v = done(r, bytes, out)?;
        canonical(bytes, v, |v, w| {
            w.array(v.len());
            for e in v {
                e.write(w);
            }
        })
    }
    pub fn balance(bytes: &[u8]) -> Result<i64, CodecError> {
        let mut r = Reader::new(bytes);
        let v = i64::try_from(r.u64()?).map_err(|_| CodecError::Malformed)?;
        let v = done(r, bytes, v)?;
        canonical(bytes, v, |v, w| w.u64(*v as u64))
    }
}

/// The key of DCP `dcp`'s request `op` at the central bank: its stored
/// answer and its journal and settlement entries. Per (DCP, op), so one
/// DCP's op never answers, blocks or collides with another's; DCP 1 keeps
/// the bare op, as what was stored before there were several DCPs is
/// keyed.
pub fn op_key(dcp: u32, op: &Hash32) -> Hash32 {
    if dcp == crate::DCP_ID {
        *op
    } else {
        tagged_hash(b"tally/v1/central-op", &[&dcp.to_be_bytes(), &op.0])
    }
}

struct RedeemArgs<'a> {
    nonce: &'a [u8; 16],
    transfer_id: &'a Hash32,
    sealed: &'a [u8],
    amount: u64,
    renewal: Option<&'a Issue>,
    class: u8,
    last_sync: Epoch,
}

impl Central for CentralBank {
    fn trust(&self) -> Result<CentralTrust, BackofficeError> {
        let (policy, revocations, epoch) = self.store.transact(|tx| {
            Ok::<_, BackofficeError>((
                self.policy_in(tx)?,
                self.revocations_in(tx)?,
                tx.epoch()? as Epoch,
            ))
        })?;
        Ok(CentralTrust {
            root: self.root_key(),
            policy,
            revocations,
            sealing_key: self.sealing_key.clone(),
            settlement_key: self.settlement_key.clone(),
            escrow_key: self.escrow_key.clone(),
            epoch,
        })
    }

    fn device(&self, se_id: &Hash32) -> Result<Option<SeEntry>, BackofficeError> {
        self.store
            .transact(|tx| Ok::<_, BackofficeError>(Directory::get(tx, se_id)?))
    }

    fn enrol(&self, dcp: u32, maker: &MakerCertificate) -> Result<SeEntry, BackofficeError> {
        self.dcp_cert(dcp)?;
        self.store.transact(|tx| {
            let se_id = maker.attestation_key.id();
            match Self::device_dcp(tx, &se_id)? {
                Some(d) if d != i64::from(dcp) => {
                    return Err(BackofficeError::Directory(DirectoryError::Conflict));
                }
                Some(_) => {}
                None => {
                    tx.insert_device_dcp(&se_id, dcp)?;
                }
            }
            let manufacturers = Self::manufacturers_in(tx)?;
            Ok(Directory::register(tx, maker, &manufacturers)?)
        })
    }

    fn set_id_digest(
        &self,
        dcp: u32,
        se_id: &Hash32,
        digest: &Hash32,
    ) -> Result<(), BackofficeError> {
        self.store.transact(|tx| {
            if Self::device_dcp(tx, se_id)? != Some(i64::from(dcp)) {
                return Err(BackofficeError::UnknownDevice);
            }
            Directory::set_id_digest(tx, se_id, digest)?;
            Ok(())
        })
    }

    fn id_digest(&self, dcp: u32, se_id: &Hash32) -> Result<Option<Hash32>, BackofficeError> {
        self.store.transact(|tx| {
            if Self::device_dcp(tx, se_id)? != Some(i64::from(dcp)) {
                return Err(BackofficeError::UnknownDevice);
            }
            Ok(Directory::id_digest(tx, se_id)?)
        })
    }

    fn call(
        &self,
        dcp: u32,
        op: &Hash32,
        reply_key: &Hash32,
        req: &CentralRequest,
    ) -> Result<Vec<u8>, BackofficeError> {
        // Settlement's records reach the MDS after the commit, through the
        // outbox, off this path.
        self.execute_request(dcp, op, reply_key, req)
    }

    fn inbox(&self, dcp: u32) -> Result<Vec<InboxEntry>, BackofficeError> {
        self.dcp_cert(dcp)?;
        self.store
            .transact(|tx| Ok::<_, BackofficeError>(tx.inbox(dcp, INBOX_BATCH_MAX)?))
    }

    fn settlement_balance(&self, dcp: u32) -> Result<i64, BackofficeError> {
        self.dcp_cert(dcp)?;
        self.dcp_balance(dcp)
    }

    fn ack_inbox(&self, dcp: u32, ops: &[Hash32]) -> Result<(), BackofficeError> {
        self.dcp_cert(dcp)?;
        self.store.transact(|tx| {
            for op in ops {
                tx.delete_inbox(dcp, op)?;
            }
            Ok(())
        })
    }
}

impl crate::monitoring::Outbox for CentralBank {
    fn fetch(&self) -> Result<(Epoch, Vec<crate::monitoring::OutboxRow>), BackofficeError> {
        self.store.transact(|tx| {
            let epoch = tx.epoch()? as Epoch;
            let mut rows = tx.outbox_rows(crate::monitoring::OUTBOX_BATCH_MAX)?;
            // Records a sync request's row names by id, read in one
            // query per kind for the whole fetch.
            let bodies: Vec<&[u8]> = rows.iter().map(|r| r.body.as_slice()).collect();
            let (issues, transfers) = crate::outbox::stored_refs(&bodies);
            if !issues.is_empty() || !transfers.is_empty() {
                let (issues, transfers) = tx.record_bodies(&issues, &transfers)?;
                for r in &mut rows {
                    r.body = crate::outbox::expand_row(&r.body, &issues, &transfers);
                }
            }
            Ok((epoch, rows))
        })
    }

    fn ack(&self, ops: &[Vec<u8>]) -> Result<(), BackofficeError> {
        self.store.transact(|tx| {
            for op in ops {
                tx.delete_outbox(op)?;
            }
            Ok(())
        })
    }
}

/// The range bits of a confidential policy's amounts (the bound its range
/// proofs cover: `RangeBits::for_bound` of the device holding limits).
fn range_bits(policy: &Policy) -> tally_core::confidential::RangeBits {
    tally_core::confidential::RangeBits::for_bound(policy.holding_bound())
}

#[cfg(test)]
#[path = "sync_group_tests.rs"]
mod sync_group_tests;

#[cfg(test)]
mod proof_sample_tests {
    use super::*;

    /// The sample picks about one transfer in `n`, the same ones every
    /// time for one key, other ones for another key; 0 picks none, 1 all.
    #[test]
    fn the_proof_sample_is_keyed_stable_and_near_its_rate() {
        let ids: Vec<Hash32> = (0u32..20_000)
            .map(|i| tagged_hash(b"test/transfer", &[&i.to_be_bytes()]))
            .collect();
        let k1 = tagged_hash(b"test/key", &[b"1"]);
        let k2 = tagged_hash(b"test/key", &[b"2"]);
        let picked = |k: &Hash32, n: u32| -> Vec<usize> {
            (0..ids.len())
                .filter(|&i| proof_sample_picks(k, n, &ids[i]))
                .collect()
        };
        let a = picked(&k1, 64);
        // 20 000 / 64 = 312.5; a binomial's standard deviation is ~17.6.
        assert!((240..=390).contains(&a.len()), "{}", a.len());
        assert_eq!(a, picked(&k1, 64), "the same key picks the same ones");
        let b = picked(&k2, 64);
        let shared = a.iter().filter(|i| b.contains(i)).count();
        assert!(shared < a.len() / 4, "another key picks others: {shared}");
        assert!(picked(&k1, 0).is_empty());
        assert_eq!(picked(&k1, 1).len(), ids.len());
        let half = picked(&k1, 2).len();
        assert!((9_500..=10_500).contains(&half), "{half}");
    }
}

#[cfg(test)]
mod cert_cache_tests {
    use super::*;

    fn id(i: u32) -> Hash32 {
        tagged_hash(b"test/cert", &[&i.to_be_bytes()])
    }

    /// The cache never holds more than its bound, keeps the ids inserted
    /// most recently (at least the last half of the bound), keeps
    /// admitting new ids once full, and holds no duplicates; 0 caches
    /// nothing, 1 the last id.
    #[test]
    fn the_server_cert_cache_is_bounded_and_keeps_the_recent_ids() {
        for max in [0usize, 1, 2, 3, 10, 1000] {
            let mut c = ServerCertCache::new(max);
            for i in 0..5_000u32 {
                c.insert(id(i));
                c.insert(id(i));
                assert!(c.len() <= max, "max {max}: {} ids", c.len());
                let recent = (max / 2).max(usize::from(max > 0));
                for back in 0..recent.min(i as usize + 1) {
                    assert!(
                        c.contains(&id(i - back as u32)),
                        "max {max}: id {back} back"
                    );
                }
            }
            assert_eq!(c.is_empty(), max == 0);
            assert!(!c.contains(&id(0)), "max {max}: the oldest id went");
        }
    }
}
