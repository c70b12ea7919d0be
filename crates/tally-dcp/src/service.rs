//! A Digital Currency Provider (DCP): [`Backoffice`]. It reaches the
//! central bank (tally-central: ledger, settlement, directory, MDS feed)
//! only through the [`Central`] trait; a node (`tally node`) also holds
//! the central bank in the same process, on separate stores (DESIGN.md
//! §1, §5).
//!
//! What each side holds:
//!
//! - **DCP store** (`dcp_*` tables): its devices (SE id, account, class,
//!   tier, request counter, the secret escrow salt), its redemption
//!   requests (nonce, amount), and its request log, where each response is
//!   kept encrypted under a key derived from the request bytes (so a replay
//!   of the same request gets the same answer, and the table alone reveals
//!   nothing). No offline record, pseudonym key or offline amount.
//! - **Central store** (tally-central's; no SQL on it in this crate):
//!   ledger, spent registry, issued tokens, the settled
//!   uploads and closed requests (pseudonymous), recoveries by mailbox, the
//!   escrows of settled certificates, the MDS outbox, and the result of
//!   every settlement call by request id (idempotency).
//! - **MDS store**: the token graph (tally-mds); fed from the central
//!   store's outbox, never by the DCP.
//!
//! Device uploads (sync, redemption packages) are sealed by the wallet to
//! settlement's HPKE key ([`tally_core::sealed`]); the DCP forwards them
//! with the request id and gets back a result signed by the central bank,
//! which it checks before it answers the device.

use std::sync::Arc;
use tally_codes as codes;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use tally_core::cert::SettlementKey;

use tally_central::keys::{KeyError, NodeKeys, NodeSigner};
use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::{check_key, tagged_hash};
use tally_core::escrow::{self, IdPoint, JointKey};
use tally_core::policy::device_class;
use tally_core::sealed::SealingKey;
use tally_core::verify::VerifyParams;
use tally_core::{
    Amount, Epoch, Hash32, Issue, Output, Package, Policy, PseudonymCertificate, PublicKey,
    Request, RevocationList, SyncGrant, TrustStore,
};
use tally_directory::{DirectoryError, SeEntry, SeStatus, check_attestation};
use tally_ledger::ledger::{Invariant, LedgerError};
use tally_mds::Mds;
use tally_store::{Migrations, Store, StoreError};

use tally_core::dcp::*;

use tally_central::custody::{self, legacy_seed, migrated, pin_central_keys, pin_public_key};
pub use tally_central::{
    BackofficeError, CENTRAL_KEY_CUSTODY_MIGRATIONS, CENTRAL_MIGRATIONS, LegacySeeds,
    OUTBOX_MIGRATIONS, OsEntropy, OutboxStatus, REPORT_MIGRATIONS, SettlementResult, default_tiers,
    development_escrow_key, valid_account_name,
};
use tally_central::{Central, CentralBank, CentralKeys, CentralRequest, CentralTrust};

use crate::book::{self, Book, BookTotals};
use crate::db::{Collection, DcpBookDb, DcpDb, InFlight, NewDevice, Uncollected};

// The DCP's migrations live with its SQL (crate::db); their paths stay.
pub use crate::db::{
    DCP_KEY_CUSTODY_MIGRATIONS, ISSUE_TAG_MIGRATIONS, MIGRATIONS, REFUSAL_MIGRATIONS,
};

/// Epochs a pseudonym certificate stays valid after issuance.
pub const CERT_VALIDITY_EPOCHS: Epoch = 30;
/// Epochs a genesis token may circulate offline before renewal.
pub const TOKEN_VALIDITY_EPOCHS: Epoch = 60;
/// The DCP of a node (`tally node`): DCP 1.
pub use tally_central::DCP_ID;
/// Its settlement account at the central bank.
pub const DCP_ACCOUNT: &str = "dcp:1";

pub fn user_account(name: &str) -> String {
    format!("user:{name}")
}

fn os_random_32() -> Result<[u8; 32], StoreError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| StoreError::Db(format!("no randomness: {e}")))?;
    Ok(b)
}

/// Migrates the stores up to (not including) the key-custody step and
/// reads the key seeds an older node left in them; empty on a node that
/// never had any, or whose seeds were moved out already.
pub fn legacy_seeds(central: &Store, dcp: &Store) -> Result<LegacySeeds, BackofficeError> {
    let mut seeds = custody::central_legacy_seeds(central)?;
    dcp.migrate(&[&MIGRATIONS, &REFUSAL_MIGRATIONS, &ISSUE_TAG_MIGRATIONS])?;
    if !migrated(dcp, DCP_KEY_CUSTODY_MIGRATIONS.component)? {
        seeds.dcp = legacy_seed(dcp, "dcp_secrets", "dcp")?;
    }
    Ok(seeds)
}

/// The three stores of a node. They may be one database (distinct tables)
/// or separate ones; the DCP's never holds offline history.
pub struct Stores {
    pub central: Store,
    pub dcp: Store,
    pub mds: Store,
}

/// The key under which the DCP keeps a response: derived from the whole
/// signed request, which the DCP does not store (it keeps only its id, a
/// different hash), so only a caller holding the request can read it.
fn response_cipher(request: &[u8]) -> XChaCha20Poly1305 {
    let k = tagged_hash(b"tally/v1/response-key", &[request]);
    XChaCha20Poly1305::new((&k.0).into())
}

fn seal_response(request: &[u8], response: &[u8]) -> Vec<u8> {
    // One key per request and one response per key: a fixed nonce is safe.
    response_cipher(request)
        .encrypt(&XNonce::default(), response)
        .expect("in-memory encryption")
}

fn open_response(request: &[u8], stored: &[u8]) -> Result<Vec<u8>, BackofficeError> {
    response_cipher(request)
        .decrypt(&XNonce::default(), stored)
        .map_err(|_| {
            BackofficeError::Store(StoreError::Type("stored response does not open".into()))
        })
}

/// The key under which the DCP keeps a refusal: like the response's,
/// derived from the whole request, under its own tag (a request has one
/// or the other; each key seals one message, so a fixed nonce is safe).
fn refusal_cipher(request: &[u8]) -> XChaCha20Poly1305 {
    let k = tagged_hash(b"tally/v1/refusal-key", &[request]);
    XChaCha20Poly1305::new((&k.0).into())
}

/// A stored refusal: `[code, status, message]`, sealed.
fn seal_refusal(request: &[u8], code: u16, status: u16, message: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(3);
    w.u64(u64::from(code));
    w.u64(u64::from(status));
    w.text(message);
    refusal_cipher(request)
        .encrypt(&XNonce::default(), w.into_bytes().as_slice())
        .expect("in-memory encryption")
}

/// The stored refusal of `request`, as the error it was.
fn open_refusal(request: &[u8], stored: &[u8]) -> Result<BackofficeError, BackofficeError> {
    let corrupt = |m: &str| BackofficeError::Store(StoreError::Type(format!("stored refusal {m}")));
    let plain = refusal_cipher(request)
        .decrypt(&XNonce::default(), stored)
        .map_err(|_| corrupt("does not open"))?;
    let mut r = Reader::new(&plain);
    let fields = (|| {
        r.array(3)?;
        let code = r.u16()?;
        let status = r.u16()?;
        let message = r.text_max(1 << 16)?.to_string();
        Ok::<_, CodecError>((code, status, message))
    })();
    match fields {
        Ok((code, status, message)) if r.position() == plain.len() => {
            Ok(BackofficeError::RefusedBefore {
                code,
                status,
                message,
            })
        }
        _ => Err(corrupt("is malformed")),
    }
}

/// A DCP: its devices, its customers' accounts ([`crate::book`]), its
/// issuing key, and the central bank behind [`Central`] (in process or
/// over the network). A node (`tally node`, tests) also holds the central
/// bank itself (`bank`), and then answers the central bank's operator
/// calls too.
pub struct Backoffice {
    dcp: Store,
    dcp_id: u32,
    signer: Arc<NodeSigner>,
    central: Arc<dyn Central>,
    bank: Option<Arc<CentralBank>>,
    /// The central bank's long-lived keys as they were when the DCP
    /// opened: results are checked against these, not against whatever a
    /// later answer names.
    pinned: PinnedKeys,
}

/// The central bank's keys a DCP pins at start.
struct PinnedKeys {
    root: PublicKey,
    settlement_key: SettlementKey,
    sealing_key: SealingKey,
    escrow_key: JointKey,
}

/// What the DCP stores of an Issue it handed to a device: keyed by the
/// device's secret salt, so the table names no record.
fn handed_out_tag(salt: &[u8; 32], issue: &Hash32) -> Hash32 {
    tagged_hash(b"tally/v1/dcp-issue", &[salt, &issue.0])
}

/// Issue serial of a token issued for device request `op` (part `n`):
/// derived, so a retried request re-issues the identical record.
fn issue_serial(op: &Hash32, n: u32) -> u64 {
    let h = tagged_hash(b"tally/v1/issue-serial", &[&op.0, &n.to_be_bytes()]);
    u64::from_be_bytes(h.0[..8].try_into().expect("8 bytes"))
}

/// The DCP's tables, in order.
fn dcp_migrations() -> [&'static Migrations; 6] {
    [
        &MIGRATIONS,
        &REFUSAL_MIGRATIONS,
        &ISSUE_TAG_MIGRATIONS,
        &crate::book::BOOK_MIGRATIONS,
        &crate::db::IN_FLIGHT_MIGRATIONS,
        &crate::db::UNCOLLECTED_MIGRATIONS,
    ]
}

/// Debits in flight finished per call of [`Backoffice::resolve_in_flight`].
const IN_FLIGHT_ROUND_MAX: usize = 256;

/// What one round of [`Backoffice::reclaim_uncollected`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReclaimReport {
    /// Cancelled at the central bank, the amount back with the customer.
    pub reclaimed: usize,
    /// Collected by the device after all: kept.
    pub delivered: usize,
    /// Being reclaimed, the cancellation not answered yet (or refused: for
    /// an operator); retried next round.
    pub pending: usize,
}

/// What one round of [`Backoffice::resolve_in_flight`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InFlightReport {
    /// Executed by the central bank: out of the book.
    pub settled: usize,
    /// Refused by the central bank: back to the customer.
    pub returned: usize,
    /// Still unanswered (or answered with a result that does not match,
    /// or a stored call that does not decode): left in flight.
    pub pending: usize,
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The reconciliation of a DCP's book with its settlement account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    /// The book's totals (customers, own money, in flight).
    pub book: BookTotals,
    /// The full re-sum of the book agrees with its running totals and no
    /// balance is negative.
    pub book_audit_ok: bool,
    /// The DCP's settlement account at the central bank.
    pub settlement_account: i64,
}

impl Reconciliation {
    /// With nothing in flight, the book's sum is the settlement account.
    pub fn matches(&self) -> bool {
        self.book_audit_ok && self.book.in_flight == 0 && self.book.sum == self.settlement_account
    }
}

impl Backoffice {
    /// The central bank on `store`, the DCP and the MDS on in-memory
    /// stores, with the development escrow key and the development node
    /// keys, whose secrets are public (tests, benchmarks).
    pub fn open(store: Store) -> Result<Backoffice, BackofficeError> {
        let mds = Store::sqlite_memory()?;
        let dcp = Store::sqlite_memory()?;
        Self::open_with(
            Stores {
                central: store,
                dcp,
                mds,
            },
            development_escrow_key(),
            NodeKeys::development(),
        )
    }

    /// Opens the back office with the supervisors' key set (`joint.cbor`
    /// of their ceremony): escrows are encrypted to its joint key, and a
    /// revocation after an opening must show the opening in their audit log.
    pub fn open_with_supervisors(
        stores: Stores,
        supervisors: tally_supervisor::JointParams,
        keys: NodeKeys,
    ) -> Result<Backoffice, BackofficeError> {
        let joint = supervisors.joint_key().clone();
        Self::open_node(stores, joint, Some(supervisors), keys)
    }

    /// Opens the back office: migrations, keys, policy, the MDS (and
    /// drains its outbox). Without the supervisors' key set, revocations
    /// are not checked against an audit log (development and tests).
    ///
    /// A database of an older node still holding key seeds opens only
    /// with the keys those seeds are (moved into key files by
    /// [`legacy_seeds`] and [`crate::keys::KeyDir::import_legacy`]); the
    /// seed tables are dropped then. With other keys it is refused and
    /// nothing changes ([`BackofficeError::KeysInDatabase`]).
    pub fn open_with(
        stores: Stores,
        escrow_key: JointKey,
        keys: NodeKeys,
    ) -> Result<Backoffice, BackofficeError> {
        Self::open_node(stores, escrow_key, None, keys)
    }

    /// A node: the central bank and DCP 1 in one process, on their own
    /// stores, the DCP reaching the central bank in process.
    fn open_node(
        stores: Stores,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        keys: NodeKeys,
    ) -> Result<Backoffice, BackofficeError> {
        Self::open_node_trusting(stores, escrow_key, supervisors, keys, &[])
    }

    /// [`Backoffice::open_with`] (or with the supervisors' key set) whose
    /// central bank also trusts the DCPs `more` (id, key) besides DCP 1:
    /// they run as their own [`Backoffice::open_dcp`] against
    /// [`Backoffice::central_bank`] (the demo's second DCP).
    pub fn open_node_trusting(
        stores: Stores,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        keys: NodeKeys,
        more: &[(u32, PublicKey)],
    ) -> Result<Backoffice, BackofficeError> {
        let Stores { central, dcp, mds } = stores;
        let legacy = legacy_seeds(&central, &dcp)?;
        if !legacy.match_keys(&keys) {
            return Err(BackofficeError::KeysInDatabase);
        }
        keys.self_test()?;
        let central_keys = CentralKeys {
            root: keys.root.clone(),
            settlement: keys.settlement.clone(),
            opening: keys.opening.clone(),
        };
        pin_central_keys(&central, &central_keys)?;
        // The DCP's key before the central bank opens: a wrong one changes nothing at the central
        // bank (its policy lists the DCP's key).
        dcp.migrate(&dcp_migrations())?;
        dcp.migrate(&[&DCP_KEY_CUSTODY_MIGRATIONS])?;
        pin_public_key(
            &dcp,
            "dcp_public_keys",
            "dcp",
            keys.dcp.public_key().to_cbor(),
        )?;
        let bank = Arc::new(Self::open_central(
            central,
            mds,
            central_keys,
            escrow_key,
            supervisors,
            &std::iter::once((DCP_ID, keys.dcp.public_key()))
                .chain(more.iter().copied())
                .collect::<Vec<_>>(),
        )?);
        let mut bo = Self::open_dcp(dcp, DCP_ID, keys.dcp, bank.clone())?;
        bo.bank = Some(bank);
        Ok(bo)
    }

    /// The central bank alone (`tally central`): its keys pinned in its
    /// store, trusting the DCPs `dcps`.
    pub fn open_central(
        central: Store,
        mds: Store,
        keys: CentralKeys,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        dcps: &[(u32, PublicKey)],
    ) -> Result<CentralBank, BackofficeError> {
        Self::open_central_with_mds(central, Some(mds), keys, escrow_key, supervisors, dcps)
    }

    /// [`Backoffice::open_central`] with the MDS in this process (`Some`)
    /// or as its own process (`None`, `tally mds`).
    pub fn open_central_with_mds(
        central: Store,
        mds: Option<Store>,
        keys: CentralKeys,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        dcps: &[(u32, PublicKey)],
    ) -> Result<CentralBank, BackofficeError> {
        CentralBank::open_pinned(central, mds, keys, escrow_key, supervisors, dcps)
    }

    /// A DCP alone (`tally dcp`) with id `id` and issuing key `signer`,
    /// reaching the central bank through `central`. The central bank must
    /// trust this key for this id (its policy's DCP list), or the DCP does
    /// not start.
    pub fn open_dcp(
        store: Store,
        id: u32,
        signer: Arc<NodeSigner>,
        central: Arc<dyn Central>,
    ) -> Result<Backoffice, BackofficeError> {
        store.migrate(&dcp_migrations())?;
        store.migrate(&[&DCP_KEY_CUSTODY_MIGRATIONS])?;
        let msg = tagged_hash(b"tally/v1/key-self-test", &[b"dcp"]).0;
        let sig = signer.try_sign(&msg)?;
        tally_core::crypto::verify(&signer.public_key(), &msg, &sig)
            .map_err(|_| KeyError::BadSignature { role: "dcp" })?;
        pin_public_key(
            &store,
            "dcp_public_keys",
            "dcp",
            signer.public_key().to_cbor(),
        )?;
        let trust = central.trust()?;
        if !trust
            .policy
            .dcps
            .iter()
            .any(|c| c.dcp_id == id && c.key == signer.public_key())
        {
            return Err(BackofficeError::UnknownDcp);
        }
        let pinned = PinnedKeys {
            root: trust.root,
            settlement_key: trust.settlement_key,
            sealing_key: trust.sealing_key,
            escrow_key: trust.escrow_key,
        };
        let bo = Backoffice {
            dcp: store,
            dcp_id: id,
            signer,
            central,
            bank: None,
            pinned,
        };
        bo.book_inbox()?;
        Ok(bo)
    }

    fn bank(&self) -> Result<&CentralBank, BackofficeError> {
        self.bank.as_deref().ok_or_else(|| BackofficeError::Remote {
            code: codes::CENTRAL_UNAVAILABLE,
            status: 503,
            message: "this process is a DCP: ask the central bank".into(),
        })
    }

    /// The central bank of a node (None in a DCP process).
    pub fn central_bank(&self) -> Option<&Arc<CentralBank>> {
        self.bank.as_ref()
    }

    /// The central bank's store (ledger, settlement, directory).
    ///
    /// # Panics
    /// In a DCP process (no central bank here).
    pub fn store(&self) -> &Store {
        self.bank
            .as_deref()
            .expect("the central bank's store is in the central bank's process")
            .store()
    }

    pub fn dcp_store(&self) -> &Store {
        &self.dcp
    }

    /// # Panics
    /// In a DCP process.
    pub fn mds(&self) -> &Mds {
        self.bank
            .as_deref()
            .expect("the MDS is in the central bank's process")
            .mds()
    }

    pub fn dcp_id(&self) -> u32 {
        self.dcp_id
    }

    pub fn root_key(&self) -> PublicKey {
        self.pinned.root
    }

    pub fn dcp_key(&self) -> PublicKey {
        self.signer.public_key()
    }

    pub fn settlement_key(&self) -> SettlementKey {
        self.pinned.settlement_key.clone()
    }

    pub fn sealing_key(&self) -> SealingKey {
        self.pinned.sealing_key.clone()
    }

    pub fn escrow_key(&self) -> JointKey {
        self.pinned.escrow_key.clone()
    }

    pub fn epoch(&self) -> Result<Epoch, BackofficeError> {
        Ok(self.central.trust()?.epoch)
    }

    /// The signed policy.
    pub fn policy(&self) -> Result<Policy, BackofficeError> {
        Ok(self.central.trust()?.policy)
    }

    /// Central bank: makes amounts confidential (SPEC §4.9): the policy
    /// is re-signed with settlement's sealing key as its audit key. Meant
    /// for a fresh scheme, before devices enrol.
    pub fn use_confidential_amounts(&self) -> Result<Policy, BackofficeError> {
        self.bank()?.use_confidential_amounts()
    }

    /// Central bank: trusts an SE manufacturer's key for enrolment.
    pub fn trust_manufacturer(&self, key: PublicKey) -> Result<Policy, BackofficeError> {
        self.bank()?.trust_manufacturer(key)
    }

    /// DCP: a one-time enrolment code for `account`, to hand to the
    /// account holder out of band. Only its digest is stored; it works
    /// once, for one SE.
    pub fn enrolment_code(&self, account: &str) -> Result<String, BackofficeError> {
        if !valid_account_name(account) {
            return Err(BackofficeError::Decode(CodecError::Malformed));
        }
        let acct = user_account(account);
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let random = os_random_32()?;
        let mut code = String::with_capacity(19);
        for (i, b) in random.iter().take(16).enumerate() {
            if i > 0 && i % 4 == 0 {
                code.push('-');
            }
            code.push(ALPHABET[usize::from(b & 31)] as char);
        }
        let digest = enrolment_code_digest(&code);
        self.dcp.transact(|tx| {
            Book::ensure(tx, &acct)?;
            tx.enrolment_code_insert(&digest, &acct)?;
            Ok::<_, BackofficeError>(())
        })?;
        Ok(code)
    }

    pub fn revocations(&self) -> Result<RevocationList, BackofficeError> {
        Ok(self.central.trust()?.revocations)
    }

    /// What settlement verifies against (settlement worker processes).
    pub fn settlement_verifier(&self) -> Result<(TrustStore, VerifyParams), BackofficeError> {
        self.bank()?.settlement_verifier()
    }

    /// Opens one package sealed to settlement as a redemption.
    pub fn open_sealed_package(&self, sealed: &[u8]) -> Result<Package, BackofficeError> {
        self.bank()?.open_sealed_package(sealed)
    }

    pub fn advance_epoch(&self) -> Result<Epoch, BackofficeError> {
        self.bank()?.advance_epoch()
    }

    // ---- operators ------------------------------------------------------

    /// Central bank: mint `amount` into this DCP's settlement account
    /// (the DCP books it as its own money at once).
    pub fn mint(&self, idem: &str, amount: u64) -> Result<Invariant, BackofficeError> {
        let inv = self.bank()?.mint(self.dcp_id, idem, amount)?;
        self.book_inbox()?;
        Ok(inv)
    }

    /// Books the credits the central bank holds for this DCP (mints,
    /// interbank payments to its customers), each once, then acknowledges
    /// them. A credit for an account this DCP does not have goes to the
    /// suspense account. Returns how many were booked.
    pub fn book_inbox(&self) -> Result<usize, BackofficeError> {
        let entries = self.central.inbox(self.dcp_id)?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut ops = Vec::with_capacity(entries.len());
        for e in &entries {
            self.dcp.transact(|tx| {
                let to = match &e.account {
                    None => book::OWN.to_string(),
                    Some(a) => {
                        let acct = user_account(a);
                        if valid_account_name(a) && tx.book_balance(&acct)?.is_some() {
                            acct
                        } else {
                            book::SUSPENSE.to_string()
                        }
                    }
                };
                Book::post(tx, &format!("inbox:{}", e.op), None, Some(&to), e.amount)?;
                Ok::<_, BackofficeError>(())
            })?;
            ops.push(e.op);
        }
        self.central.ack_inbox(self.dcp_id, &ops)?;
        Ok(ops.len())
    }

    /// DCP: credit a customer's account from the DCP's own money (the
    /// customer paid in bank money). Opens the account if needed.
    pub fn deposit(&self, idem: &str, account: &str, amount: u64) -> Result<i64, BackofficeError> {
        if !valid_account_name(account) {
            return Err(BackofficeError::Decode(CodecError::Malformed));
        }
        self.book_inbox()?;
        let acct = user_account(account);
        self.dcp.transact(|tx| {
            Book::ensure(tx, &acct)?;
            Book::post(
                tx,
                &format!("deposit:{idem}"),
                Some(book::OWN),
                Some(&acct),
                amount,
            )?;
            Ok(Book::balance(tx, &acct)?)
        })
    }

    pub fn account_balance(&self, account: &str) -> Result<i64, BackofficeError> {
        self.dcp
            .transact(|tx| Ok(Book::balance(tx, &user_account(account))?))
    }

    /// This DCP's book against its settlement account at the central bank.
    pub fn reconcile(&self) -> Result<Reconciliation, BackofficeError> {
        self.book_inbox()?;
        let (book, book_audit_ok) = self
            .dcp
            .transact(|tx| Ok::<_, BackofficeError>(Book::audit(tx)?))?;
        Ok(Reconciliation {
            book,
            book_audit_ok,
            settlement_account: self.central.settlement_balance(self.dcp_id)?,
        })
    }

    pub fn invariant(&self) -> Result<Invariant, BackofficeError> {
        self.bank()?.invariant()
    }

    pub fn devices(&self) -> Result<Vec<SeEntry>, BackofficeError> {
        self.bank()?.devices()
    }

    /// Double spends found so far: (outpoint record, index, value, offender key bytes).
    #[allow(clippy::type_complexity)] // the central bank's shape, passed through
    pub fn double_spends(&self) -> Result<Vec<(Hash32, u8, u64, Vec<u8>)>, BackofficeError> {
        self.bank()?.double_spends()
    }

    /// The escrow (ciphertext) of the settled certificate of pseudonym
    /// `key_id`, for an opening request.
    pub fn escrow_of(&self, key_id: &Hash32) -> Result<Option<Vec<u8>>, BackofficeError> {
        self.bank()?.escrow_of(key_id)
    }

    /// Containment: the supervisors opened an escrow to identity-point
    /// digest `id_digest`. The directory revokes that SE (it can no longer
    /// sync, load or be certified) and puts `key_ids` on the next
    /// revocation list, which devices install at sync and then refuse
    /// those pseudonyms offline.
    ///
    /// Each key id must be a pseudonym whose settled certificate carried an
    /// escrow opened to `id_digest` (its escrow is kept by key id, see
    /// [`Backoffice::escrow_of`]); any other is refused
    /// (`RevocationKeyNotOpened`): an operator cannot name another SE's
    /// pseudonyms, nor link a pseudonym to this SE without an opening. At
    /// most [`tally_directory::REVOCATION_KEYS_PER_CALL_MAX`] keys per call
    /// and [`tally_directory::REVOCATION_LIST_ENTRIES_MAX`] on the list.
    /// A refusal changes nothing.
    ///
    /// With the supervisors' key set configured, `opening` must be their
    /// audit log (file bytes) and the request id whose logged k-of-n result
    /// opened to `id_digest`; the whole log is verified (chain, signatures,
    /// shares' proofs, recombination) before anything changes, and the
    /// opened escrows are those of every logged result that opened to
    /// `id_digest`. A development node (no key set) opens a key's escrow
    /// itself with the development secret, which is public.
    pub fn revoke_opened(
        &self,
        id_digest: &Hash32,
        key_ids: &[Hash32],
        reason: &str,
        opening: Option<(&[u8], &Hash32)>,
    ) -> Result<(Hash32, RevocationList), BackofficeError> {
        self.bank()?
            .revoke_opened(id_digest, key_ids, reason, opening)
    }

    // ---- monitoring -------------------------------------------------------

    pub fn alerts(&self) -> Result<Vec<tally_mds::Alert>, BackofficeError> {
        self.bank()?.alerts()
    }

    pub fn alert(&self, id: i64) -> Result<tally_mds::Alert, BackofficeError> {
        self.bank()?.alert(id)
    }

    pub fn alert_transition(
        &self,
        id: i64,
        to: tally_mds::AlertState,
        note: &str,
    ) -> Result<tally_mds::Alert, BackofficeError> {
        self.bank()?.alert_transition(id, to, note)
    }

    pub fn indicators(&self) -> Result<tally_mds::Indicators, BackofficeError> {
        self.bank()?.indicators()
    }

    /// Moves settled records from the outbox into the MDS (a node only).
    pub fn pump_mds(&self) {
        if let Some(b) = &self.bank {
            b.pump_mds();
        }
    }

    /// The MDS feed's backlog, for monitoring.
    pub fn mds_outbox(&self) -> Result<OutboxStatus, BackofficeError> {
        self.bank()?.mds_outbox()
    }

    // ---- devices --------------------------------------------------------

    /// Onboarding: registers the SE in the directory (attestation checked)
    /// and links it to a user account at this DCP, with a fresh secret
    /// escrow salt; the directory learns the digest of the SE's identity
    /// point (what supervisors resolve an opening with). Idempotent.
    pub fn register(&self, reg: &Registration) -> Result<Hash32, BackofficeError> {
        if !valid_account_name(&reg.account) {
            return Err(BackofficeError::BadEnrolment);
        }
        let acct = user_account(&reg.account);
        let se_id = reg.attestation_key().id();
        // A revoked SE does not get to use up a code.
        if let Some(e) = self.central.device(&se_id)?
            && e.status != SeStatus::Active
        {
            return Err(BackofficeError::Directory(DirectoryError::Revoked));
        }
        // Nor does an SE no trusted manufacturer certified.
        let manufacturers = self.central.trust()?.policy.manufacturers;
        if !manufacturers.contains(&reg.maker_cert.maker_key) || !reg.maker_cert.verify() {
            return Err(BackofficeError::Directory(
                DirectoryError::UntrustedManufacturer,
            ));
        }
        // The account's one-time code, bound to this SE (a retry by the
        // same SE finds it bound to itself).
        self.dcp.transact(|tx| {
            for code in tx.enrolment_codes(&acct)? {
                let message = enrolment_message(&se_id, &reg.account, &code.digest);
                if !check_attestation(reg.attestation_key(), &message, &reg.signature) {
                    continue;
                }
                match code.se_id {
                    None => tx.enrolment_code_bind(&code.digest, &se_id)?,
                    Some(bound) if bound != se_id => {
                        return Err(BackofficeError::EnrolmentCodeUsed);
                    }
                    Some(_) => {}
                }
                return Ok(());
            }
            Err(BackofficeError::BadEnrolment)
        })?;
        let e = self.central.enrol(self.dcp_id, &reg.maker_cert)?;
        let reg_device_class = reg.maker_cert.device_class;
        let fresh = os_random_32()?;
        let salt: [u8; 32] = self.dcp.transact(|tx| {
            Book::ensure(tx, &acct)?;
            if let Some(salt) = tx.device_salt(&e.se_id)? {
                return Ok::<_, BackofficeError>(salt);
            }
            tx.device_insert(&NewDevice {
                se_id: &e.se_id,
                account: &acct,
                device_class: reg_device_class,
                salt: &fresh,
            })?;
            Ok(fresh)
        })?;
        let digest = IdPoint::derive(&e.se_id, &salt).digest();
        self.central.set_id_digest(self.dcp_id, &e.se_id, &digest)?;
        Ok(e.se_id)
    }

    /// Handles one signed device request (CBOR) and returns the CBOR
    /// response. Authenticated, idempotent, crash-safe:
    ///
    /// 1. the SE's signature and status (directory);
    /// 2. the DCP claims the counter for this request id (a different
    ///    request with a used counter is a replay);
    /// 3. the central bank executes its part once per request id (a retry
    ///    gets the stored result), the DCP books its customers' side once
    ///    per request id;
    /// 4. the DCP stores the response, encrypted under the request.
    ///
    /// A crash between any two steps is repaired by retrying the same
    /// request: every step is idempotent on the request id.
    pub fn handle_device(&self, body: &[u8]) -> Result<Vec<u8>, BackofficeError> {
        let req = DeviceRequest::from_cbor(body)?;
        if !req.attachment_matches() {
            return Err(BackofficeError::BadAttachment);
        }
        let rid = req.id();
        let entry = self
            .central
            .device(&req.se_id)?
            .ok_or(BackofficeError::UnknownDevice)?;
        // Built and signed by the SE itself, under the kind's own tag.
        if !check_attestation(
            &entry.attestation_key,
            &DeviceRequest::signed_message(&req.se_id, req.counter, &req.op),
            &req.signature,
        ) {
            return Err(BackofficeError::BadDeviceSignature);
        }
        if req.counter > i64::MAX as u64 {
            return Err(BackofficeError::Replay);
        }
        // Step 2: a stored response or refusal answers a retry; otherwise
        // claim the counter.
        let claimed = self.dcp.transact(|tx| {
            if let Some(logged) = tx.request(&rid)? {
                if let Some(response) = logged.response {
                    return Ok(Err(Ok(response)));
                }
                if let Some(refusal) = logged.refusal {
                    return Ok(Err(Err(refusal)));
                }
                // A load the DCP finished itself and then cancelled because
                // its device did not come back in time: the Issue must not
                // be handed out any more (its tokens are cancelled).
                if matches!(req.op, DeviceOp::Load { .. })
                    && matches!(
                        tx.uncollected_state(&rid)?,
                        Some(Collection::Reclaiming | Collection::Reclaimed)
                    )
                {
                    return Err(BackofficeError::LoadReclaimed);
                }
            } else {
                let last = tx
                    .device_last_counter(&req.se_id)?
                    .ok_or(BackofficeError::UnknownDevice)?;
                if req.counter <= last {
                    return Err(BackofficeError::Replay);
                }
                tx.device_set_last_counter(&req.se_id, req.counter)?;
                tx.request_insert(&rid, &req.se_id, req.counter)?;
            }
            let dev = tx
                .device(&req.se_id)?
                .ok_or(BackofficeError::UnknownDevice)?;
            Ok(Ok(DeviceCtx {
                se_id: req.se_id,
                account: dev.account,
                class: dev.device_class,
                tier: dev.tier,
                sync_epoch: dev.sync_epoch,
                salt: dev.salt,
                counter: req.counter,
                rid,
                reply_key: tagged_hash(b"tally/v1/central-reply-key", &[body]),
            }))
        })?;
        let ctx = match claimed {
            Err(Ok(stored)) => return open_response(body, &stored),
            Err(Err(refusal)) => return Err(open_refusal(body, &refusal)?),
            Ok(ctx) => ctx,
        };
        let executed = if entry.status != SeStatus::Active {
            Err(BackofficeError::DeviceNotActive)
        } else {
            self.execute_op(&ctx, &entry, &req)
        };
        let resp = match executed {
            Ok(resp) => resp,
            Err(e) => return Err(self.refuse_finally(body, &rid, e)),
        };
        let bytes = resp.to_cbor();
        let sealed = seal_response(body, &bytes);
        self.dcp.transact(|tx| {
            // A load finished by the DCP itself is handed out only while it
            // is not being reclaimed, and then never reclaimed (one
            // transaction decides, against `reclaim_uncollected`'s).
            if matches!(req.op, DeviceOp::Load { .. }) {
                match tx.uncollected_state(&rid)? {
                    Some(Collection::Reclaiming | Collection::Reclaimed) => {
                        return Err(BackofficeError::LoadReclaimed);
                    }
                    Some(Collection::Waiting) => {
                        tx.uncollected_move(&rid, Collection::Waiting, Collection::Delivered)?;
                    }
                    Some(Collection::Delivered) | None => {}
                }
            }
            tx.request_set_response(&rid, &sealed)?;
            if let DeviceOp::Redeem { nonce, .. } = &req.op {
                tx.redemption_mark_done(nonce)?;
            }
            // A keyed tag (per-SE salt) of every Issue handed to this
            // device, so that only its own can be cancelled; the store
            // keeps no record id (decision 0007).
            let handed: Vec<&Issue> = match &resp {
                DeviceResponse::Issued(i) | DeviceResponse::Renewed { issue: i, .. } => vec![i],
                DeviceResponse::Synced(bundle) => bundle.recovered.iter().collect(),
                _ => Vec::new(),
            };
            for i in handed {
                let tag = handed_out_tag(&ctx.salt, &i.id());
                if !tx.issue_tag_exists(&tag)? {
                    tx.issue_tag_insert(&tag)?;
                }
            }
            if let DeviceResponse::Synced(bundle) = &resp {
                tx.device_set_synced(&ctx.se_id, bundle.grant.sequence, bundle.grant.epoch)?;
            }
            Ok::<_, BackofficeError>(())
        })?;
        Ok(bytes)
    }

    /// A failed request is final: a typed refusal (a 4xx) is stored for
    /// the request id, sealed under the request like a response, and the
    /// same bytes later get it back without executing (they might succeed
    /// after the account was topped up). Transient failures (store errors,
    /// serialization conflicts, an unreachable central bank: 5xx) are not
    /// stored, so a retry executes. Returns `e` as the caller must see it.
    fn refuse_finally(&self, body: &[u8], rid: &Hash32, e: BackofficeError) -> BackofficeError {
        if !e.is_final() {
            return e;
        }
        let sealed = seal_refusal(body, e.code(), e.status(), &e.to_string());
        let stored = self.dcp.transact(|tx| {
            tx.request_set_refusal(rid, &sealed)?;
            Ok::<_, BackofficeError>(())
        });
        if let Err(s) = stored {
            // Not stored: the request stays retryable, the refusal stands.
            tracing::error!(error = %s, "device request refusal not stored");
        }
        e
    }

    /// Asks the central bank to execute `req` once for this device
    /// request and checks what it signed: the DCP acts on the result only.
    fn central_call(
        &self,
        op: &Hash32,
        reply_key: &Hash32,
        req: &CentralRequest,
    ) -> Result<SettlementResult, BackofficeError> {
        let reply = self.central.call(self.dcp_id, op, reply_key, req)?;
        let k = &self.pinned;
        SettlementResult::open(&reply, &k.settlement_key.key, &k.root, op)
    }

    /// A customer's payment out of the book through the central bank
    /// (a load, an interbank payment), as a saga keyed by the request:
    /// the amount moves to `in-flight` first, then the central bank
    /// executes once, then the amount leaves the book — or, when the
    /// central bank answered with a failure (its transaction rolled back),
    /// goes back to the customer, and a retry of the request starts a new
    /// attempt. Only an unanswered call (the link dropped: the central
    /// bank may have executed it) leaves the amount in flight; the retry
    /// of the same request then finds the central bank's stored result.
    fn debit_through_central(
        &self,
        ctx: &DeviceCtx,
        kind: &str,
        amount: u64,
        req: &CentralRequest,
    ) -> Result<SettlementResult, BackofficeError> {
        let rid = ctx.rid;
        let attempt = self.dcp.transact(|tx| {
            let mut n = 0u32;
            while Book::posted(tx, &format!("{kind}-returned:{rid}:{n}"))? {
                n += 1;
            }
            let idem = format!("{kind}:{rid}:{n}");
            let new = Book::post(tx, &idem, Some(&ctx.account), Some(book::IN_FLIGHT), amount)?;
            // The call this posting waits on, with it: the DCP finishes
            // the saga itself if the device never retries.
            if new {
                tx.in_flight_insert(&InFlight {
                    idem,
                    kind: kind.to_string(),
                    rid,
                    attempt: n,
                    account: ctx.account.clone(),
                    amount,
                    reply_key: ctx.reply_key,
                    request: req.to_cbor(),
                    since: unix_seconds(),
                })?;
            }
            Ok::<_, BackofficeError>(n)
        })?;
        self.finish_debit(
            kind,
            &rid,
            attempt,
            &ctx.account,
            amount,
            &ctx.reply_key,
            req,
            false,
        )
    }

    /// The central call of attempt `attempt` of a debit, and the end of
    /// its saga: the amount leaves the book (answered success) or goes
    /// back to `account` (answered failure); unanswered, it stays in
    /// flight for a retry. `without_device`: the DCP finishes it itself
    /// (`resolve_in_flight`), so a load's Issue is recorded as waiting.
    #[allow(clippy::too_many_arguments)]
    fn finish_debit(
        &self,
        kind: &str,
        rid: &Hash32,
        attempt: u32,
        account: &str,
        amount: u64,
        reply_key: &Hash32,
        req: &CentralRequest,
        without_device: bool,
    ) -> Result<SettlementResult, BackofficeError> {
        let in_flight = format!("{kind}:{rid}:{attempt}");
        match self.central_call(rid, reply_key, req) {
            Ok(res) => {
                if res.value != amount {
                    return Err(BackofficeError::BadSettlementResult);
                }
                // A load finished without its device: its Issue waits for
                // the device's retry, recorded with the settled posting so
                // that a crash cannot leave one without the other; if the
                // device never comes, `reclaim_uncollected` returns it.
                let waiting = match res.issues.first() {
                    Some(issue) if without_device && kind == "load" => Some(Uncollected {
                        rid: *rid,
                        account: account.to_string(),
                        amount,
                        issue: issue.to_cbor(),
                        reply_key: *reply_key,
                        since: unix_seconds(),
                        state: Collection::Waiting,
                    }),
                    _ => None,
                };
                self.dcp.transact(|tx| {
                    Book::post(
                        tx,
                        &format!("{kind}-settled:{rid}:{attempt}"),
                        Some(book::IN_FLIGHT),
                        None,
                        amount,
                    )?;
                    tx.in_flight_delete(&in_flight)?;
                    if let Some(u) = &waiting {
                        tx.uncollected_insert(u)?;
                    }
                    Ok::<_, BackofficeError>(())
                })?;
                Ok(res)
            }
            Err(e) if e.is_unanswered() => Err(e),
            Err(e) => {
                self.dcp.transact(|tx| {
                    Book::post(
                        tx,
                        &format!("{kind}-returned:{rid}:{attempt}"),
                        Some(book::IN_FLIGHT),
                        Some(account),
                        amount,
                    )?;
                    tx.in_flight_delete(&in_flight)?;
                    Ok::<_, BackofficeError>(())
                })?;
                Err(e)
            }
        }
    }

    /// Finishes the debits in flight for at least `older_than_s` seconds
    /// whose device did not come back (issue 11): each one's central call
    /// is sent again — the same op and reply key, so the central bank
    /// answers what it executed, or executes it now if the first call
    /// never arrived (the device's SE signed the request; the DCP only
    /// completes it). An answered success takes the amount out of flight,
    /// an answered failure returns it to the customer; an unanswered call
    /// leaves it for the next round. The device's own retry later gets the
    /// same stored answer and moves nothing again. `tally dcp` runs this
    /// every second for debits older than 30 s.
    pub fn resolve_in_flight(&self, older_than_s: i64) -> Result<InFlightReport, BackofficeError> {
        let rows = self.dcp.transact(|tx| {
            Ok::<_, BackofficeError>(
                tx.in_flight_before(unix_seconds() - older_than_s, IN_FLIGHT_ROUND_MAX)?,
            )
        })?;
        let mut report = InFlightReport::default();
        for f in rows {
            // A stored call that no longer decodes (written by another
            // version) must not block the others: it stays in flight for
            // an operator, and the round goes on.
            let Ok(req) = CentralRequest::from_cbor(&f.request) else {
                report.pending += 1;
                continue;
            };
            match self.finish_debit(
                &f.kind,
                &f.rid,
                f.attempt,
                &f.account,
                f.amount,
                &f.reply_key,
                &req,
                true,
            ) {
                Ok(_) => report.settled += 1,
                Err(e) if e.is_unanswered() => report.pending += 1,
                Err(BackofficeError::BadSettlementResult) => report.pending += 1,
                Err(_) => report.returned += 1,
            }
        }
        Ok(report)
    }

    /// Returns the amounts of loads whose device never collected the Issue
    /// (issue 11): a load the DCP finished itself ([`Self::resolve_in_flight`])
    /// and whose device has not retried for `older_than_s` seconds since is
    /// cancelled at the central bank (its outputs consumed there, so a token
    /// of it appearing later is a double spend) and its amount credited back
    /// to the customer, once. The device was never given the Issue — the
    /// DCP answers a device only with a stored response, and none was
    /// stored — and from the moment the reclaim starts its retry is refused
    /// (410, code 87) instead of being answered with the Issue. A reclaim
    /// interrupted (unanswered cancel, crash) is finished by the next round.
    /// `tally dcp` and `tally node` run this every second.
    pub fn reclaim_uncollected(&self, older_than_s: i64) -> Result<ReclaimReport, BackofficeError> {
        let rows = self.dcp.transact(|tx| {
            Ok::<_, BackofficeError>(
                tx.uncollected_due(unix_seconds() - older_than_s, IN_FLIGHT_ROUND_MAX)?,
            )
        })?;
        let mut report = ReclaimReport::default();
        for u in rows {
            if u.state == Collection::Waiting {
                // Decided in one transaction against the device's own
                // retry (handle_device): handed out, or reclaimed.
                let start = self.dcp.transact(|tx| {
                    let answered = tx.request(&u.rid)?.is_some_and(|l| l.response.is_some());
                    if answered {
                        tx.uncollected_move(&u.rid, Collection::Waiting, Collection::Delivered)?;
                        return Ok::<_, BackofficeError>(false);
                    }
                    Ok(tx.uncollected_move(&u.rid, Collection::Waiting, Collection::Reclaiming)?)
                })?;
                if !start {
                    report.delivered += 1;
                    continue;
                }
            }
            let Ok(issue) = Issue::from_cbor(&u.issue) else {
                report.pending += 1;
                continue;
            };
            let op = tagged_hash(b"tally/v1/reclaim-op", &[&u.rid.0]);
            let reply_key = tagged_hash(b"tally/v1/reclaim-reply-key", &[&u.reply_key.0]);
            match self.central_call(
                &op,
                &reply_key,
                &CentralRequest::Cancel {
                    issue: issue.clone(),
                },
            ) {
                // `value` is 0 when the Issue was cancelled before (by an
                // earlier round whose answer was lost): the credit below
                // is keyed by the Issue, so it is made once either way.
                Ok(res) if res.value == u.amount || res.value == 0 => {
                    self.dcp.transact(|tx| {
                        Book::post(
                            tx,
                            &format!("cancel:{}", issue.id()),
                            None,
                            Some(&u.account),
                            u.amount,
                        )?;
                        tx.uncollected_move(&u.rid, Collection::Reclaiming, Collection::Reclaimed)?;
                        Ok::<_, BackofficeError>(())
                    })?;
                    report.reclaimed += 1;
                }
                Ok(_) => report.pending += 1,
                Err(e) => {
                    if !e.is_unanswered() {
                        tracing::error!(error = %e, "an uncollected load could not be cancelled: left for an operator");
                    }
                    report.pending += 1;
                }
            }
        }
        Ok(report)
    }

    /// Money the central bank moved to this DCP for a customer (an unload,
    /// a cancelled Issue), booked once per `idem`.
    fn credit_customer(
        &self,
        idem: &str,
        account: &str,
        amount: u64,
    ) -> Result<u64, BackofficeError> {
        self.dcp.transact(|tx| {
            Book::post(tx, idem, None, Some(account), amount)?;
            Ok::<_, BackofficeError>(Book::balance(tx, account)? as u64)
        })
    }

    fn book_balance(&self, account: &str) -> Result<u64, BackofficeError> {
        Ok(self
            .dcp
            .transact(|tx| Ok::<_, BackofficeError>(Book::balance(tx, account)?))?
            as u64)
    }

    /// An Issue of this DCP for request `op` (part `n`): deterministic, so
    /// a retry signs the identical record. Under a confidential policy
    /// (SPEC §4.9) the Issue commits to `amount`, carries its opening
    /// sealed to `key` (the loading SE) and the audit seal to settlement's
    /// key (the policy's `audit_key`); its blindings and HPKE ephemerals
    /// come from a ChaCha20 stream seeded with this DCP's own signature
    /// over the request, so only this DCP can derive them and a retry
    /// (with a deterministic signer) makes the same record.
    fn sign_issue(
        &self,
        policy: &Policy,
        op: &Hash32,
        n: u32,
        epoch: Epoch,
        amount: u64,
        key: PublicKey,
    ) -> Result<Issue, BackofficeError> {
        if policy.is_confidential() {
            use tally_core::confidential_record::{NewOutput, sign_issue};
            let audit_key = policy
                .audit_key
                .ok_or(BackofficeError::BadSettlementResult)?;
            let seed_msg = tagged_hash(
                b"tally/v1/confidential-issue-seed",
                &[&op.0, &n.to_be_bytes()],
            );
            let seed_sig = self.signer.try_sign(&seed_msg.0)?;
            let mut rng = SeededEntropy::new(&seed_sig.to_cbor());
            return match sign_issue(
                &*self.signer,
                &audit_key,
                issue_serial(op, n),
                epoch + TOKEN_VALIDITY_EPOCHS,
                &[NewOutput {
                    owner: key,
                    value: Amount(amount),
                }],
                &mut rng,
            )? {
                Ok((issue, _openings)) => Ok(issue),
                // The owner key cannot receive a sealed opening (P-256).
                Err(_) => Err(BackofficeError::BadKey),
            };
        }
        Ok(Issue::try_sign(
            &*self.signer,
            issue_serial(op, n),
            epoch + TOKEN_VALIDITY_EPOCHS,
            vec![Output {
                value: Amount(amount),
                owner: key,
            }],
        )?)
    }

    fn execute_op(
        &self,
        ctx: &DeviceCtx,
        entry: &SeEntry,
        req: &DeviceRequest,
    ) -> Result<DeviceResponse, BackofficeError> {
        let trust = self.central.trust()?;
        let epoch = trust.epoch;
        match &req.op {
            DeviceOp::Certify { keys } => self.certify(&trust, ctx, entry, epoch, keys),
            DeviceOp::Load { amount, key } => {
                check_key(key).map_err(|_| BackofficeError::BadKey)?;
                // Refused before anything is debited: a token the SE
                // cannot hold would strand the value in the float.
                let holding = trust
                    .policy
                    .limits(ctx.class, ctx.tier)
                    .map(|l| l.holding_max)
                    .ok_or(BackofficeError::LoadAboveHolding)?;
                if Amount(*amount) > holding {
                    return Err(BackofficeError::LoadAboveHolding);
                }
                if *amount == 0 {
                    return Err(BackofficeError::Ledger(LedgerError::ZeroAmount));
                }
                let issue = self.sign_issue(&trust.policy, &ctx.rid, 0, epoch, *amount, *key)?;
                let res = self.debit_through_central(
                    ctx,
                    "load",
                    *amount,
                    &CentralRequest::Load {
                        issue,
                        class: ctx.class,
                    },
                )?;
                // What the central bank registered (a retry after an
                // epoch change gets the first Issue, not a new one).
                let issue = res
                    .issues
                    .into_iter()
                    .next()
                    .ok_or(BackofficeError::BadSettlementResult)?;
                Ok(DeviceResponse::Issued(issue))
            }
            DeviceOp::RedemptionRequest { amount, unload } => {
                if *amount == 0 {
                    return Err(BackofficeError::Ledger(LedgerError::ZeroAmount));
                }
                let mut nonce = [0u8; 16];
                nonce.copy_from_slice(
                    &tagged_hash(b"tally/v1/redemption-nonce", &[&ctx.rid.0]).0[..16],
                );
                self.dcp.transact(|tx| {
                    if !tx.redemption_exists(&nonce)? {
                        tx.redemption_insert(&nonce, &ctx.se_id, *amount, *unload)?;
                    }
                    Ok::<_, BackofficeError>(())
                })?;
                let cert = PseudonymCertificate::try_sign(
                    &*self.signer,
                    self.dcp_key(),
                    epoch + CERT_VALIDITY_EPOCHS,
                    device_class::DCP,
                    0,
                    Vec::new(),
                )?;
                let request =
                    Request::try_sign(&*self.signer, Amount(*amount), nonce, cert, epoch)?;
                // Bound to this SE: another SE refuses to pay it.
                Ok(DeviceResponse::Redemption(RedemptionOrder::try_sign(
                    &*self.signer,
                    ctx.se_id,
                    *unload,
                    request,
                )?))
            }
            DeviceOp::Redeem {
                nonce,
                transfer_id,
                key,
                ..
            } => self.redeem(&trust, ctx, nonce, transfer_id, &req.attachment, key),
            DeviceOp::Sync { reports, key, .. } => {
                if let Some(k) = key {
                    check_key(k).map_err(|_| BackofficeError::BadKey)?;
                }
                self.sync(&trust, ctx, &req.attachment, reports, key.as_ref())
            }
            DeviceOp::CancelIssue { issue } => self.cancel_issue(ctx, issue),
            DeviceOp::PayOnline { to_account, amount } => {
                let (name, to_dcp) = match to_account.rsplit_once('@') {
                    Some((n, d)) => (
                        n,
                        d.parse::<u32>()
                            .map_err(|_| LedgerError::UnknownAccount(to_account.clone()))?,
                    ),
                    None => (to_account.as_str(), self.dcp_id),
                };
                if !valid_account_name(name) {
                    return Err(LedgerError::UnknownAccount(to_account.clone()).into());
                }
                if to_dcp == self.dcp_id {
                    // Between two customers of this DCP: its own book.
                    let payee = user_account(name);
                    let balance = self.dcp.transact(|tx| {
                        Book::post(
                            tx,
                            &format!("online:{}", ctx.rid),
                            Some(&ctx.account),
                            Some(&payee),
                            *amount,
                        )?;
                        Ok::<_, BackofficeError>(Book::balance(tx, &ctx.account)? as u64)
                    })?;
                    return Ok(DeviceResponse::Balance { balance });
                }
                // To a customer of another DCP: through the central ledger.
                if *amount == 0 {
                    return Err(BackofficeError::Ledger(LedgerError::ZeroAmount));
                }
                self.debit_through_central(
                    ctx,
                    "online",
                    *amount,
                    &CentralRequest::Pay {
                        to_dcp,
                        to_account: name.to_string(),
                        amount: *amount,
                    },
                )?;
                Ok(DeviceResponse::Balance {
                    balance: self.book_balance(&ctx.account)?,
                })
            }
            DeviceOp::Balance => {
                // Credits waiting at the central bank first (best effort:
                // the balance is what the book holds).
                if let Err(e) = self.book_inbox() {
                    tracing::warn!(error = %e, "inbox not booked");
                }
                Ok(DeviceResponse::Balance {
                    balance: self.book_balance(&ctx.account)?,
                })
            }
        }
    }

    /// An Issue the SE refused and cancelled (it recorded, in the commit
    /// that signed this request, that it will never credit it): its value
    /// goes back to the SE's account, once. Only an Issue this DCP gave
    /// this SE (a keyed tag of it was stored when it was handed out), whose
    /// outputs nothing has consumed; the outputs are then consumed in the
    /// spent registry, so a token of it appearing later is a double spend.
    fn cancel_issue(
        &self,
        ctx: &DeviceCtx,
        issue: &Issue,
    ) -> Result<DeviceResponse, BackofficeError> {
        let id = issue.id();
        let dcp = self.dcp_key();
        if issue.issuer != dcp.id()
            || tally_core::crypto::verify(&dcp, &issue.signed_message(&id).0, &issue.signature)
                .is_err()
        {
            return Err(BackofficeError::NotCancellable);
        }
        let tag = handed_out_tag(&ctx.salt, &id);
        let ours = self
            .dcp
            .transact(|tx| Ok::<_, BackofficeError>(tx.issue_tag_exists(&tag)?))?;
        if !ours {
            return Err(BackofficeError::NotCancellable);
        }
        let amount: u64 = issue.outputs.iter().map(|o| o.value.0).sum();
        self.central_call(
            &ctx.rid,
            &ctx.reply_key,
            &CentralRequest::Cancel {
                issue: issue.clone(),
            },
        )?;
        // Keyed by the Issue: a second cancellation credits nothing more.
        let balance = self.credit_customer(&format!("cancel:{id}"), &ctx.account, amount)?;
        Ok(DeviceResponse::Balance { balance })
    }

    /// Certifies fresh pseudonym keys. Each certificate carries the SE's
    /// identity point encrypted to the supervisors (fresh randomness, so
    /// certificates of one SE are unlinkable). The DCP makes the escrow
    /// from the salt it keeps and checks, before signing, that its proof
    /// verifies for the identity point whose digest the directory holds
    /// for this SE; the certificate then carries the ciphertext only
    /// (decision 0006).
    fn certify(
        &self,
        trust: &CentralTrust,
        ctx: &DeviceCtx,
        entry: &SeEntry,
        epoch: Epoch,
        keys: &[PublicKey],
    ) -> Result<DeviceResponse, BackofficeError> {
        let id = IdPoint::derive(&ctx.se_id, &ctx.salt);
        let registered = self.central.id_digest(self.dcp_id, &entry.se_id)?;
        if registered != Some(id.digest()) {
            return Err(BackofficeError::EscrowMismatch);
        }
        let escrow_key = &trust.escrow_key;
        let mut certs = Vec::with_capacity(keys.len());
        for k in keys {
            check_key(k).map_err(|_| BackofficeError::BadKey)?;
            let e = escrow::create(escrow_key, &id, &mut OsEntropy);
            escrow::verify(escrow_key, &id, &e.to_bytes())
                .map_err(|_| BackofficeError::EscrowMismatch)?;
            certs.push(PseudonymCertificate::try_sign(
                &*self.signer,
                *k,
                epoch + CERT_VALIDITY_EPOCHS,
                ctx.class,
                ctx.tier,
                e.ciphertext_only().to_bytes(),
            )?);
        }
        Ok(DeviceResponse::Certificates(certs))
    }

    fn redeem(
        &self,
        trust: &CentralTrust,
        ctx: &DeviceCtx,
        nonce: &[u8; 16],
        transfer_id: &Hash32,
        sealed: &[u8],
        key: &PublicKey,
    ) -> Result<DeviceResponse, BackofficeError> {
        check_key(key).map_err(|_| BackofficeError::BadKey)?;
        // The DCP's side: its own redemption request, by nonce.
        let (amount, unload) = self.dcp.transact(|tx| {
            let red = tx
                .redemption(nonce)?
                .ok_or(BackofficeError::UnknownRedemption)?;
            if red.se_id != ctx.se_id || red.done {
                return Err(BackofficeError::UnknownRedemption);
            }
            Ok((red.amount, red.unload))
        })?;
        let renewal = if unload {
            None
        } else {
            Some(self.sign_issue(&trust.policy, &ctx.rid, 0, trust.epoch, amount, *key)?)
        };
        // The central bank's side: opens, verifies, settles, pays out.
        let res = self.central_call(
            &ctx.rid,
            &ctx.reply_key,
            &CentralRequest::Redeem {
                nonce: *nonce,
                transfer_id: *transfer_id,
                sealed: sealed.to_vec(),
                amount,
                renewal,
                class: ctx.class,
                last_sync: ctx.sync_epoch,
            },
        )?;
        let tid = res.transfer.ok_or(BackofficeError::BadSettlementResult)?;
        if res.value != amount {
            return Err(BackofficeError::BadSettlementResult);
        }
        let receipt = tally_core::Receipt::try_sign(&*self.signer, tid)?;
        if unload {
            let balance =
                self.credit_customer(&format!("unload:{}", ctx.rid), &ctx.account, amount)?;
            Ok(DeviceResponse::Unloaded { balance, receipt })
        } else {
            let issue = res
                .issues
                .into_iter()
                .next()
                .ok_or(BackofficeError::BadSettlementResult)?;
            Ok(DeviceResponse::Renewed { issue, receipt })
        }
    }

    fn sync(
        &self,
        trust: &CentralTrust,
        ctx: &DeviceCtx,
        sealed: &[u8],
        reports: &Hash32,
        key: Option<&PublicKey>,
    ) -> Result<DeviceResponse, BackofficeError> {
        // Where the central bank leaves tokens recovered or refunded for
        // this device: a per-device name only the DCP can link to the
        // device.
        let mailbox = tagged_hash(b"tally/v1/mailbox", &[&ctx.salt]);
        let res = self.central_call(
            &ctx.rid,
            &ctx.reply_key,
            &CentralRequest::Sync {
                sealed: sealed.to_vec(),
                reports: *reports,
                mailbox,
                last_sync: ctx.sync_epoch,
            },
        )?;
        // Tokens waiting in the mailbox, issued now to the key the SE
        // named (none named: they wait for a later sync). The delivery is
        // its own central request, once per sync request: a retried sync
        // gets the same Issues back.
        let mut recovered = Vec::new();
        if let (Some(key), false) = (key, res.deliveries.is_empty()) {
            let mut issues = Vec::with_capacity(res.deliveries.len());
            for (tid, amount) in &res.deliveries {
                let delivery = tagged_hash(b"tally/v1/recovery-op", &[&ctx.rid.0, &tid.0]);
                issues.push((
                    *tid,
                    self.sign_issue(&trust.policy, &delivery, 0, trust.epoch, *amount, *key)?,
                ));
            }
            let op = tagged_hash(b"tally/v1/deliver-op", &[&ctx.rid.0]);
            let reply_key = tagged_hash(b"tally/v1/deliver-reply-key", &[&ctx.reply_key.0]);
            let delivered = self.central_call(
                &op,
                &reply_key,
                &CentralRequest::Deliver { mailbox, issues },
            )?;
            recovered = delivered.issues;
        }
        // The trust objects after the settlement (a revocation it caused
        // goes out now).
        let after = self.central.trust()?;
        Ok(DeviceResponse::Synced(SyncBundle {
            policy: after.policy,
            revocations: after.revocations,
            // The grant's sequence is this request's counter: the SE
            // drops the reports this request (or an earlier one) carried.
            grant: SyncGrant::try_sign(&*self.signer, ctx.se_id, trust.epoch, ctx.counter)?,
            recovered,
            double_spends: res.double_spends,
        }))
    }
}

struct DeviceCtx {
    se_id: Hash32,
    account: String,
    class: u8,
    tier: u8,
    sync_epoch: Epoch,
    salt: [u8; 32],
    /// The request's counter (a sync grant's sequence).
    counter: u64,
    rid: Hash32,
    /// Key of the central bank's stored reply (derived from the request).
    reply_key: Hash32,
}

/// A ChaCha20 stream from a secret seed (SHA-256 of it): the randomness
/// of a confidential Issue, derived so that a retry makes the same record.
struct SeededEntropy(rand_chacha::ChaCha20Rng);

impl SeededEntropy {
    fn new(secret: &[u8]) -> SeededEntropy {
        use rand_chacha::rand_core::SeedableRng;
        let seed = tagged_hash(b"tally/v1/confidential-issue-rng", &[secret]).0;
        SeededEntropy(rand_chacha::ChaCha20Rng::from_seed(seed))
    }
}

impl tally_core::crypto::Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        use rand_chacha::rand_core::Rng;
        self.0.fill_bytes(buf);
    }
}
