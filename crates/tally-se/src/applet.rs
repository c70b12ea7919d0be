//! The secure-element applet: commands over the persistent [`State`].
//!
//! Every mutating command follows one shape: check everything that can
//! fail against the current state, change the state (in place on the
//! payment path, `Applet::change`; beside it for the rare commands),
//! commit the change through the journal (the point of no return), and
//! only then answer. A power cut before the commit record lands leaves
//! the old state; after it, the new one. RAM never runs ahead of flash: a
//! command refused after its first change, or a failed write, reads the
//! durable state back (decision 0024). After a storage error the applet
//! refuses every command until rebooted (recovery runs at boot).
//!
//! Private keys never leave the SE: no command returns a seed.

use alloc::vec::Vec;
use core::fmt;

use tally_core::cert::role;
use tally_core::codec::{Cbor, CodecError};
use tally_core::crypto::{Entropy, SecretKey};
use tally_core::dcp::{
    DeviceOp, DeviceRequest, RedemptionOrder, RequestReport, enrolment_code_digest,
    enrolment_message,
};
use tally_core::package::{needed_certificates, sign_transfer_with};
use tally_core::policy::{TierLimits, device_class};
use tally_core::selection::{Candidate, SelectError, select};
use tally_core::verify::{
    BoundedCertCache, CertCache, Expected, VerifyError, VerifyParams, verify_package_as_payee,
};
use tally_core::{
    Amount, Epoch, Hash32, Issue, OutPoint, Output, Package, Policy, PseudonymCertificate,
    PublicKey, Receipt, Record, Request, RevocationList, Suite, SyncGrant, Transfer, TrustStore,
};

use tally_core::stream::{
    PEBBLES_MAX, Pebbles, STREAM_REFUND_FLAG, StreamAsk, StreamOpenTerms, StreamPart, TickError,
    chain_seed, chain_seed_input, chain_walk, check_tick, stream_id,
};

#[cfg(feature = "delegated-proving")]
use tally_core::confidential::RangeProof;
#[cfg(feature = "delegated-proving")]
use tally_core::confidential_record::ProvingTask;
#[cfg(feature = "delegated-proving")]
use tally_core::crypto::tagged_hash;

use crate::seal::Sealing;
use crate::state::*;
use crate::storage::{Journal, Storage, StorageError};

/// Who makes a payment's range proof (decision 0032). Passed once per
/// PAY, by value: the proof's size is not worth a heap allocation.
#[allow(clippy::large_enum_variant)]
enum Proving {
    /// The SE itself (every device; the only way for a card).
    OnSe,
    /// The device's application processor, from the SE's task; the SE
    /// checks the proof before it signs.
    #[cfg(feature = "delegated-proving")]
    Delegated(Option<RangeProof>),
}

/// What PAY's checks found, recorded when PAY commits.
struct PayChecks {
    epoch_seen: Epoch,
    spent: Amount,
    spent_since_cvm: Amount,
    budget: usize,
}

/// Which limit refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    PaymentAmount,
    Holding,
    Receiving,
    OfflineSpend,
    OfflinePayments,
    OfflineEpochs,
    HistoryBudget,
    Tokens,
    OpenRequests,
    Outgoing,
    Keys,
    /// The table of imported Issue ids is full of unexpired Issues.
    Imported,
    /// The certificate store would overflow (the package is refused
    /// rather than stored without the certificates its token needs).
    Certificates,
    /// Open requests and unacknowledged request reports fill the report
    /// table: sync first.
    Reports,
    /// The table of cancelled Issues is full of unexpired ones.
    Cancelled,
    /// [`STREAMS_MAX`] streams are open on this side already.
    Streams,
}

/// Everything the applet can refuse, grouped as rustls does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeError {
    /// Persistent storage failed; the applet must be rebooted.
    Storage(StorageError),
    /// The stored state is not readable (tampered or wrong device key).
    StateCorrupt,
    /// Input bytes are not a valid object.
    Decode(CodecError),
    /// A package, certificate or trust object failed verification.
    Verify(VerifyError),
    /// A policy limit refused the operation.
    LimitExceeded(Limit),
    NotPersonalized,
    AlreadyPersonalized,
    /// No policy or revocation list installed yet.
    NoTrust,
    /// Policy has no tier for this SE's class and tier.
    NoTier,
    InsufficientFunds,
    /// Enough value, but the package would exceed the history budget: renew.
    NeedsRenewal,
    /// No certified, unexpired offline key: sync first.
    NoCertifiedKey,
    /// A package for a nonce this SE has no open request for.
    UnknownRequest,
    /// A receipt or resend for a transfer this SE did not make.
    UnknownTransfer,
    BadReceipt,
    /// A certificate or issue for a key that is not this SE's, or of
    /// another class or tier.
    NotForThisSe,
    /// A stale or replayed policy, revocation list or sync grant.
    Stale,
    /// A redemption request not addressed to a trusted redemption key.
    NotRedemption,
    /// The applet saw a storage error and must be rebooted.
    Halted,
    /// The operation needs cardholder verification (VERIFY) first.
    CardholderVerificationRequired,
    /// Too many wrong PINs: the SE refuses cardholder operations.
    PinBlocked,
    /// Wrong PIN; `tries_left` presentations remain.
    WrongPin {
        tries_left: u8,
    },
    /// No PIN set, or a PIN of the wrong length.
    BadPin,
    /// This Issue was credited to this SE before.
    AlreadyImported,
    /// This request was paid before (its package left in an earlier
    /// epoch): a second package would strand its value.
    AlreadyPaid,
    /// A request of this kind cannot be built from this SE's state (no
    /// such redemption, amount zero or above the balance, ...).
    BadRequestParams,
    /// A payee request whose signature does not verify under the key its
    /// certificate names: altered or invented by the terminal.
    BadRequestSignature,
    /// This SE cancelled this Issue (it will never credit it); the DCP
    /// returns its value to the account.
    IssueCancelled,
    /// A package consuming an output that a record this SE holds (in a
    /// held token's lineage) consumes by another transfer: a double spend
    /// by a cloned or rolled-back payer that this payee can see offline.
    /// Accepting it would leave the payee holding value it can never pay
    /// on or renew (V10 refuses any package carrying both branches).
    ConflictingSpend,
    /// A payment that needs a range proof asked of an SE built without a
    /// prover (feature `no-se-prover`, decision 0032): its device's
    /// processor proves, through PAY P1 1 / P1 2. Nothing changed.
    NoProver,
    /// A range proof made outside the SE (decision 0032) asked of an SE
    /// that does not delegate proving: a card (its host is the payee's
    /// terminal, which must not learn the payer's change), or a policy with
    /// clear amounts (nothing to prove). Nothing changed.
    ProvingNotDelegated,
    /// A stream tick refused (replayed, skipped, forged, past the end):
    /// nothing changed.
    StreamTick(TickError),
    /// No stream with this id on this side of this SE.
    UnknownStream,
    /// The stream was closed by this SE: no tick after the close.
    StreamClosed,
    /// Stream terms out of bounds (zero price or ticks, more than
    /// [`tally_core::stream::STREAM_TICKS_MAX`] ticks, a value that overflows), or an id
    /// already in use.
    BadStreamTerms,
}

impl fmt::Display for SeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeError::Verify(e) => write!(f, "package refused: {e}"),
            SeError::Decode(e) => write!(f, "malformed input: {e}"),
            SeError::Storage(e) => write!(f, "storage: {e}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl From<StorageError> for SeError {
    fn from(e: StorageError) -> Self {
        SeError::Storage(e)
    }
}
impl From<CodecError> for SeError {
    fn from(e: CodecError) -> Self {
        SeError::Decode(e)
    }
}
impl From<VerifyError> for SeError {
    fn from(e: VerifyError) -> Self {
        SeError::Verify(e)
    }
}

/// Read-only summary for GET DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub se_id: Hash32,
    pub device_class: u8,
    pub tier: u8,
    pub balance: Amount,
    pub tokens: u32,
    pub counter: u64,
    pub epoch: Epoch,
    pub epoch_seen: Epoch,
    pub spent_since_sync: Amount,
    pub payments_since_sync: u32,
    pub received_since_sync: Amount,
    pub unacked: u32,
    pub open_requests: u32,
    pub certified_keys: u32,
}

/// One token as the terminal sees it (for coin-selection hints and display).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub outpoint: OutPoint,
    pub value: Amount,
    pub lineage_len: u32,
}

/// RAM for the payer's stream traversals together, in chain elements
/// (32 bytes): one segment traversal of the longest stream
/// ([`PEBBLES_MAX`], 16.4 KB). A stream whose segment traversal does not
/// fit beside the others' uses binary pebbling (about 1 KB, `½·log2 N`
/// hashes per tick instead of one; decision 0020, addendum session 10).
pub const TRAVERSAL_ROOM: usize = PEBBLES_MAX;

/// The applet: persistent state plus its journal and entropy source.
pub struct Applet<S: Storage, E: Entropy> {
    journal: Journal<S>,
    sealing: Sealing,
    /// (In a cell: PAY draws the confidential proofs' randomness while
    /// it reads the state.)
    entropy: core::cell::RefCell<E>,
    state: State,
    /// (Boxed, like `checked_request`: the applet is moved by value through
    /// boot and dispatch, about nine copies deep on the Cortex-M4 stack.)
    trust: Option<alloc::boxed::Box<TrustStore>>,
    cert_cache: BoundedCertCache,
    /// Signing keys made ready (RAM only, lost at power-off): CHECK REQUEST
    /// prepares the keys of the tokens PAY may spend while the user
    /// confirms, so PAY does not decompress their public keys.
    key_cache: core::cell::RefCell<Vec<(PublicKey, SecretKey)>>,
    halted: bool,
    /// The cardholder presented the right PIN in this session (RAM only:
    /// lost at power-off and consumed by the operation it authorises).
    cvm_verified: bool,
    /// The last payee request whose signature CHECK REQUEST verified (RAM
    /// only), so the PAY that follows only signs.
    /// (Boxed: the applet is moved by value through boot and dispatch, and
    /// every byte of it costs stack on the Cortex-M4.)
    checked_request: Option<alloc::boxed::Box<CheckedRequest>>,
    /// The traversal of each stream this SE pays (RAM only, rebuilt from
    /// the seed after a reboot; decision 0020).
    pebbles: Vec<(Hash32, Pebbles)>,
    /// The last element released (stream, tick, element; RAM only), so a
    /// lost answer is released again without a walk from the seed.
    last_released: Option<(Hash32, u32, Hash32)>,
}

/// What the payee's SE hands over when it closes a stream: the latest
/// element and its tick (decision 0020).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamClaim {
    pub id: Hash32,
    pub ticks: u32,
    pub element: Hash32,
    pub value: Amount,
}

/// A stream close to sign: one input (a half), one output to the half's
/// own key.
struct Close {
    input: OutPoint,
    signer: PublicKey,
    value: Amount,
    part: StreamPart,
    lineage: Vec<Hash32>,
}

/// An in-place change under way ([`Applet::change`]).
struct Pending {
    before: Shape,
    /// Debug builds: the whole state before, to check the delta and the
    /// undo against.
    #[cfg(debug_assertions)]
    full: State,
}

/// What identifies a payee request whose signature was checked.
#[derive(Clone, PartialEq, Eq)]
struct CheckedRequest {
    signature: tally_core::Signature,
    certificate: tally_core::Signature,
    amount: Amount,
    nonce: [u8; 16],
    epoch: Epoch,
    stream: Option<StreamAsk>,
}

/// Cached pseudonym certificates (signature checks skipped on reuse).
pub const CERT_CACHE_MAX: usize = 256;

/// Signing keys kept ready in RAM (oldest dropped first).
pub const KEY_CACHE_MAX: usize = 4;

/// Ed25519 signatures per batch equation when the SE verifies a package.
/// A batch's working memory grows with its size (curve25519-dalek keeps a
/// lookup table per point): an eight-hop package (17 signatures) in one
/// batch took 150 KB of heap on the Cortex-M4, against a 64 KB RAM budget
/// for the whole device; in batches of 4 RECEIVE still needed 78 KB, in
/// pairs 56 KB (stack included). The same signatures are checked either
/// way; pairs cost about 1.5 M instructions per signature against 0.8 M in
/// one batch and 1.8 M singly (docs/PERFORMANCE.md, "Cortex-M4").
pub const SIGNATURE_BATCH_MAX: usize = 2;

impl<S: Storage, E: Entropy> Applet<S, E> {
    /// Boots: runs journal recovery and loads the last committed state:
    /// the base state, then every record of its log's valid prefix
    /// applied in order. The trust store is rebuilt from the state without
    /// checking its signatures again: they were checked when it was
    /// installed, and the journal's checks (and, where the storage is
    /// outside the SE, the seal) cover it since (decision 0018).
    pub fn boot(storage: S, sealing: Sealing, entropy: E) -> Result<Self, SeError> {
        let (mut journal, payload) = Journal::open(storage).map_err(|e| match e {
            StorageError::Corrupt => SeError::StateCorrupt,
            e => SeError::Storage(e),
        })?;
        // A power cut cannot leave a newer committed header over a bad
        // payload (the header is written last): that is tampering, and
        // rolling back could re-enable spent tokens.
        if journal.newer_state_discarded() {
            return Err(SeError::StateCorrupt);
        }
        let state = load_state(&mut journal, &sealing, payload)?;
        let mut a = Applet {
            journal,
            sealing,
            entropy: core::cell::RefCell::new(entropy),
            state,
            trust: None,
            cert_cache: BoundedCertCache::new(CERT_CACHE_MAX),
            key_cache: core::cell::RefCell::new(Vec::new()),
            halted: false,
            cvm_verified: false,
            checked_request: None,
            pebbles: Vec::new(),
            last_released: None,
        };
        a.rebuild_trust();
        Ok(a)
    }

    /// Bytes in the journal's current log (records since the last full
    /// commit, framing included): what the next boot replays.
    pub fn journal_log_bytes(&mut self) -> usize {
        self.journal.log_bytes().unwrap_or(0)
    }

    /// Sets the journal's log limit (tests of the compaction path).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_journal_log_max(&mut self, bytes: usize) {
        self.journal.set_log_max(bytes);
    }

    /// The storage, read-only (a benchmark boots a copy of it).
    pub fn storage(&self) -> &S {
        self.journal.storage()
    }

    /// Gives the storage back (tests "reboot" from it).
    pub fn into_storage(self) -> S {
        self.journal.into_inner()
    }

    fn rebuild_trust(&mut self) {
        self.trust = match (
            &self.state.personal,
            &self.state.policy,
            &self.state.revocations,
        ) {
            // Verified when installed (install_policy, install_revocations).
            (Some(p), Some(pol), Some(rev)) => {
                TrustStore::from_installed(p.root, pol.clone(), rev.clone())
                    .ok()
                    .map(alloc::boxed::Box::new)
            }
            _ => None,
        };
    }

    /// Makes `next` the durable state (a command that built its next
    /// state beside the current one; the payment path changes the state
    /// in place instead, [`Self::change`]).
    fn commit(&mut self, next: State) -> Result<(), SeError> {
        self.ready()?;
        let before = Shape::of(&self.state);
        let old = core::mem::replace(&mut self.state, next);
        #[cfg(debug_assertions)]
        Self::check_delta(&old, &before, &self.state);
        drop(old);
        self.commit_since(&before)
    }

    /// Runs `change` on the state in place and makes what it changed
    /// durable: one log record with the delta from `before` (a
    /// [`Shape`]: the identities of the entries, not a copy of the
    /// state), or, when the log is full, the whole state (compaction). The
    /// state is never held twice in RAM (decision 0024). `change` must
    /// not change the imported-Issue table ([`Self::change_imported`]
    /// does).
    ///
    /// `change` checks what can fail before it changes anything where it
    /// can; if it fails all the same after a change, or the write fails,
    /// the state is read back from the journal ([`Self::roll_back`]), so
    /// RAM never runs ahead of flash: a refused command leaves the state
    /// as it was, a failed write leaves the durable state (or, if even
    /// that cannot be read, a halted applet with nothing in RAM).
    fn change<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, SeError>,
    ) -> Result<T, SeError> {
        // (Only this wrapper is generic: one copy per command in the
        // firmware's flash, the rest once.)
        let pending = self.begin(false)?;
        let out = change(self);
        self.finish(pending, out.is_ok())?;
        out
    }

    /// [`Self::change`] for IMPORT, the one in-place command that
    /// changes the imported-Issue table.
    fn change_imported<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, SeError>,
    ) -> Result<T, SeError> {
        let pending = self.begin(true)?;
        let out = change(self);
        self.finish(pending, out.is_ok())?;
        out
    }

    /// What [`Self::change`] takes before the change: the shape of the
    /// state, with the imported table's entries if `imported` (no other
    /// payment command changes that table, the largest after a long
    /// offline run).
    #[inline(never)]
    fn begin(&mut self, imported: bool) -> Result<Pending, SeError> {
        self.ready()?;
        let before = if imported {
            Shape::of(&self.state)
        } else {
            Shape::of_payment(&self.state)
        };
        Ok(Pending {
            before,
            #[cfg(debug_assertions)]
            full: self.state.clone(),
        })
    }

    /// Commits what the change did (`done`), or undoes it.
    #[inline(never)]
    fn finish(&mut self, pending: Pending, done: bool) -> Result<(), SeError> {
        if done {
            #[cfg(debug_assertions)]
            Self::check_delta(&pending.full, &pending.before, &self.state);
            return self.commit_since(&pending.before);
        }
        self.roll_back(&pending.before);
        #[cfg(debug_assertions)]
        assert!(
            self.halted || self.state == pending.full,
            "a refused command must leave the state as it was"
        );
        Ok(())
    }

    /// Debug builds: the delta written from `before` rebuilds `after`
    /// from `old` exactly (every change the applet makes is one the
    /// identities of [`Shape`] see).
    #[cfg(debug_assertions)]
    fn check_delta(old: &State, before: &Shape, after: &State) {
        let mut check = old.clone();
        if let Some(delta) = encode_delta_since(before, after, 0, 0) {
            apply_delta(&mut check, &delta, 0, 0).expect("delta applies");
        }
        assert!(check == *after, "the delta must rebuild the next state");
    }

    /// Writes the change from `before` to the current state: a log
    /// record, or the whole state when the log is full. On a storage
    /// error the applet halts and rolls back to the durable state.
    fn commit_since(&mut self, before: &Shape) -> Result<(), SeError> {
        let written = match self.append_since(before) {
            Err(StorageError::LogFull) | Err(StorageError::TooLarge) => self.write_whole_state(),
            other => other,
        };
        if let Err(e) = written {
            self.halted = true;
            self.reload();
            return Err(SeError::Storage(e));
        }
        self.state.fit();
        Ok(())
    }

    /// Appends the delta from `before` to the current state to the log.
    fn append_since(&mut self, before: &Shape) -> Result<(), StorageError> {
        let Some(sequence) = self.journal.sequence() else {
            return Err(StorageError::LogFull);
        };
        let index = self.journal.log_records()?;
        let Some(delta) = encode_delta_since(before, &self.state, sequence, index) else {
            return Ok(());
        };
        let sealed = self.sealing.seal_owned(delta, self.entropy.get_mut());
        self.journal.append(&sealed)
    }

    /// Compaction: the whole state into the other slot. Stored in the
    /// clear, it is encoded piece by piece straight into the slot
    /// ([`Journal::commit_pieces`]): no encoding of the state's size in
    /// RAM beside it (decision 0024).
    fn write_whole_state(&mut self) -> Result<(), StorageError> {
        if self.sealing.is_clear() {
            let state = &self.state;
            return self
                .journal
                .commit_pieces(&mut |sink| state.encode_in_pieces(sink));
        }
        let plain = self.state.to_cbor();
        let sealed = self.sealing.seal_owned(plain, self.entropy.get_mut());
        self.journal.commit(&sealed)
    }

    /// Undoes a refused command's changes: nothing to do if it changed
    /// nothing (it refused before its first change), else the state is
    /// read back from the journal.
    fn roll_back(&mut self, before: &Shape) {
        if encode_delta_since(before, &self.state, 0, 0).is_some() {
            self.reload();
        }
    }

    /// Replaces the state in RAM by the durable one, as a reboot would
    /// (the RAM-only caches stay: they hold nothing the state does not
    /// vouch for). The state in RAM is dropped first, so that two are
    /// never held at once. If the journal cannot be read the applet halts
    /// with an empty state.
    fn reload(&mut self) {
        self.state = State::default();
        let loaded = match self.journal.reopen() {
            Ok(_) if self.journal.newer_state_discarded() => Err(SeError::StateCorrupt),
            Ok(payload) => load_state(&mut self.journal, &self.sealing, payload),
            Err(e) => Err(SeError::Storage(e)),
        };
        match loaded {
            Ok(state) => self.state = state,
            Err(_) => self.halted = true,
        }
        self.rebuild_trust();
    }

    fn ready(&self) -> Result<(), SeError> {
        if self.halted {
            return Err(SeError::Halted);
        }
        Ok(())
    }

    /// The whole persistent state, private keys included: tests and
    /// fuzzers only (feature `test-hooks`), never a production build.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// What a broken SE would let an attacker do: sign any device request
    /// with this SE's attestation key, outside BUILD REQUEST. Tests of the
    /// back office's own checks only (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn sign_request_unchecked(
        &self,
        counter: u64,
        op: DeviceOp,
    ) -> Result<DeviceRequest, SeError> {
        let se_id = self.se_id()?;
        let signature = self
            .attestation_key()?
            .sign(&DeviceRequest::signed_message(&se_id, counter, &op).0);
        Ok(DeviceRequest {
            se_id,
            counter,
            op,
            signature,
            attachment: Vec::new(),
        })
    }

    /// The payment log (no secrets: packages are what payees receive).
    pub fn outgoing(&self) -> &[Outgoing] {
        &self.state.outgoing
    }

    /// The SE's own request counter (last value signed).
    pub fn request_counter(&self) -> u64 {
        self.state.request_counter
    }

    fn personal(&self) -> Result<&Personalization, SeError> {
        self.state.personal.as_ref().ok_or(SeError::NotPersonalized)
    }

    fn trust(&self) -> Result<&TrustStore, SeError> {
        self.trust.as_deref().ok_or(SeError::NoTrust)
    }

    fn limits(&self) -> Result<TierLimits, SeError> {
        let p = self.personal()?;
        let t = self.trust()?;
        t.policy()
            .limits(p.device_class, p.tier)
            .copied()
            .ok_or(SeError::NoTier)
    }

    fn attestation_key(&self) -> Result<SecretKey, SeError> {
        let p = self.personal()?;
        SecretKey::from_seed(Suite::Ed25519, &p.attestation_seed).ok_or(SeError::StateCorrupt)
    }

    // ---- personalization and administration -------------------------------

    /// Factory personalization: creates the attestation key inside the SE
    /// and fixes class, tier, offline-key suite and the root of trust.
    pub fn personalize(
        &mut self,
        device_class: u8,
        tier: u8,
        suite: Suite,
        root: PublicKey,
    ) -> Result<PublicKey, SeError> {
        self.ready()?;
        if self.state.personal.is_some() {
            return Err(SeError::AlreadyPersonalized);
        }
        // A device built without the suite (tally-core `ed25519-only`)
        // could never make a key in it: to this build its code is unknown.
        if !suite.is_supported() {
            return Err(SeError::Decode(CodecError::UnknownCode));
        }
        let mut seed = [0u8; 32];
        self.entropy.get_mut().fill(&mut seed);
        let mut next = self.state.clone();
        next.personal = Some(Personalization {
            attestation_seed: seed,
            device_class,
            tier,
            suite,
            root,
        });
        self.commit(next)?;
        self.attestation_public()
    }

    /// The SE's attestation public key; its id is the SE identifier.
    pub fn attestation_public(&self) -> Result<PublicKey, SeError> {
        Ok(self.attestation_key()?.public())
    }

    /// The root key the SE was personalised with.
    pub fn root_key(&self) -> Result<PublicKey, SeError> {
        Ok(self.personal()?.root)
    }

    pub fn se_id(&self) -> Result<Hash32, SeError> {
        Ok(self.attestation_public()?.id())
    }

    /// Installs the policy (with its DCP trust list), checked against the
    /// root; only a newer serial replaces an installed one.
    pub fn install_policy(&mut self, policy: Policy) -> Result<(), SeError> {
        self.ready()?;
        let root = self.personal()?.root;
        if let Some(old) = &self.state.policy
            && policy.serial <= old.serial
        {
            return Err(SeError::Stale);
        }
        let rev = match &self.state.revocations {
            Some(r) => r.clone(),
            // A policy may arrive before the first list: check it alone.
            None => {
                tally_core::crypto::verify(&root, &policy.signed_message().0, &policy.signature)
                    .map_err(|_| SeError::Verify(VerifyError::BadTrustSignature))?;
                let mut next = self.state.clone();
                next.policy = Some(policy);
                self.commit(next)?;
                self.rebuild_trust();
                return Ok(());
            }
        };
        TrustStore::new(root, policy.clone(), rev)?;
        let mut next = self.state.clone();
        next.policy = Some(policy);
        self.commit(next)?;
        self.rebuild_trust();
        Ok(())
    }

    /// Installs a revocation list, checked against the root; only a newer
    /// serial replaces an installed one.
    pub fn install_revocations(&mut self, list: RevocationList) -> Result<(), SeError> {
        self.ready()?;
        let root = self.personal()?.root;
        if let Some(old) = &self.state.revocations
            && list.serial <= old.serial
        {
            return Err(SeError::Stale);
        }
        tally_core::crypto::verify(&root, &list.signed_message().0, &list.signature)
            .map_err(|_| SeError::Verify(VerifyError::BadTrustSignature))?;
        let mut next = self.state.clone();
        next.revocations = Some(list);
        self.commit(next)?;
        self.rebuild_trust();
        Ok(())
    }

    /// Generates `n` fresh offline keys inside the SE and returns their
    /// public halves (tests and benchmarks; a device asks for keys with
    /// BUILD REQUEST Certify, which signs them in the same commit).
    pub fn generate_keys(&mut self, n: usize) -> Result<Vec<PublicKey>, SeError> {
        self.ready()?;
        let mut next = self.state.clone();
        let out = self.fresh_keys(&mut next, n)?;
        self.commit(next)?;
        Ok(out)
    }

    /// Adds `n` fresh offline keys to `next`. Keys that own nothing and
    /// whose certificate expired are dropped first.
    fn fresh_keys(&mut self, next: &mut State, n: usize) -> Result<Vec<PublicKey>, SeError> {
        let suite = self.personal()?.suite;
        let epoch = next.epoch;
        let tokens = &next.tokens;
        // Keys of open requests and of reports not yet acknowledged (a
        // report is signed by its request's key when it is handed out).
        // And the keys that sign an open stream's close: the payee's
        // stream key, the payer's refund key (decision 0020).
        let mut outgoing_keys: Vec<PublicKey> = next
            .open_requests
            .iter()
            .map(|r| r.key)
            .chain(next.reports.iter().map(|r| r.key))
            .collect();
        for s in &next.streams_in {
            if !s.closed {
                outgoing_keys.push(s.owner);
            }
        }
        for s in &next.streams_out {
            if !s.closed {
                outgoing_keys.push(s.refund_key);
            }
        }
        // A key stays while it owns a token, waits for a payment or signs
        // a stream's close; a
        // fresh certified key stays in the pool until its certificate
        // expires. A key whose job is done (it received or held value
        // that has moved on) goes: its certificate, if still needed for an
        // ancestry, is kept in the certificate store.
        next.keys.retain(|k| {
            let fresh = !k.used && k.certified_at(epoch);
            fresh || tokens.iter().any(|t| t.owner == k.public) || outgoing_keys.contains(&k.public)
        });
        if next.keys.len() + n > KEYS_MAX {
            return Err(SeError::LimitExceeded(Limit::Keys));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            // Fails only for a suite this build lacks (a state personalised
            // by another build); `personalize` refuses such a suite.
            let k = SecretKey::generate(suite, self.entropy.get_mut())
                .map_err(|_| SeError::Decode(CodecError::UnknownCode))?;
            let public = k.public();
            next.keys.push(OfflineKey {
                seed: k.seed(),
                public,
                cert: None,
                used: false,
            });
            out.push(public);
        }
        Ok(out)
    }

    /// Installs the DCP's certificate for one of this SE's offline keys.
    pub fn install_certificate(&mut self, cert: PseudonymCertificate) -> Result<(), SeError> {
        self.ready()?;
        let p = self.personal()?;
        if cert.device_class != p.device_class || cert.tier != p.tier {
            return Err(SeError::NotForThisSe);
        }
        self.trust()?
            .verify_pseudonym_cert(&cert, self.state.epoch)?;
        let mut next = self.state.clone();
        let k = next
            .keys
            .iter_mut()
            .find(|k| k.public == cert.key)
            .ok_or(SeError::NotForThisSe)?;
        k.cert = Some(cert);
        self.commit(next)
    }

    /// Applies a sync grant: new epoch, offline counters reset, the payment
    /// log emptied of payments. The grant answers the sync request that
    /// uploaded every unacknowledged package, so the back office holds them
    /// now and pairs them with the payees' reports (DESIGN.md §4). An
    /// unacknowledged redemption stays until the DCP's receipt arrives.
    pub fn sync(&mut self, grant: SyncGrant) -> Result<(), SeError> {
        self.ready()?;
        let se_id = self.se_id()?;
        let trust = self.trust()?;
        if grant.se_id != se_id {
            return Err(SeError::NotForThisSe);
        }
        if grant.sequence <= self.state.sync_sequence || grant.epoch < self.state.epoch {
            return Err(SeError::Stale);
        }
        trust.dcp_for(&grant.signer.id(), role::SYNC, grant.epoch)?;
        tally_core::crypto::verify(&grant.signer, &grant.signed_message().0, &grant.signature)
            .map_err(|_| SeError::Verify(VerifyError::BadSignature))?;
        let mut next = self.state.clone();
        next.epoch = grant.epoch;
        next.epoch_seen = next.epoch_seen.max(grant.epoch);
        // An Issue expired at the new epoch is refused on import anyway
        // (`check_importable`): its id need not be kept any longer
        // (decision 0024; IMPORT prunes the same way).
        next.imported.retain(|i| i.expiry_epoch >= grant.epoch);
        next.sync_sequence = grant.sequence;
        next.spent_since_sync = Amount::ZERO;
        next.payments_since_sync = 0;
        next.received_since_sync = Amount::ZERO;
        // A redemption the DCP has not acknowledged stays: it is resent
        // until settled (clearing it would strand its value). A payment
        // leaving the log unacknowledged joins the acknowledged ones, so
        // the payee's receipt arriving after this sync (a device that
        // syncs right after paying, or before its payee answered) is
        // answered as done rather than as a transfer this SE never made.
        for o in &self.state.outgoing {
            if !o.redemption && !o.acked && !next.acked.contains(&o.transfer_id) {
                if next.acked.len() >= ACKED_KEPT_MAX {
                    next.acked.remove(0);
                }
                next.acked.push(o.transfer_id);
            }
        }
        next.outgoing.retain(|o| o.redemption && !o.acked);
        next.receipts.clear();
        // The grant answers the Sync request numbered `grant.sequence`
        // (the DCP signs the request's counter): every report that request
        // or an earlier one carried has reached settlement. Reports made
        // after it stay for the next sync.
        next.reports
            .retain(|r| r.sent_in == 0 || r.sent_in > grant.sequence);
        self.commit(next)
    }

    /// Imports a genesis record issued to this SE's keys (load, renewal).
    pub fn import_issue(&mut self, issue: Issue) -> Result<Amount, SeError> {
        self.ready()?;
        let limits = self.limits()?;
        let id = issue.id();
        // Credited once per SE, ever: a token still held, or one already
        // spent, names an Issue this SE imported before.
        if self.state.imported.iter().any(|i| i.id == id)
            || self.state.tokens.iter().any(|t| t.outpoint.record == id)
        {
            return Err(SeError::AlreadyImported);
        }
        if self.state.cancelled.iter().any(|i| i.id == id) {
            return Err(SeError::IssueCancelled);
        }
        self.check_importable(&issue)?;
        // Everything that can refuse the Issue, before the state changes.
        let mut credited: Vec<(Amount, Option<[u8; 32]>)> = Vec::with_capacity(issue.outputs.len());
        let mut total = Amount::ZERO;
        for (i, o) in issue.outputs.iter().enumerate() {
            if self.state.key(&o.owner).is_none() {
                return Err(SeError::NotForThisSe);
            }
            // A confidential output's amount is its opening's, sealed to
            // this SE's key and checked against the commitment.
            let (value, blinding) = self.issued_amount(&issue, i, o)?;
            if value.is_zero() {
                return Err(SeError::Verify(VerifyError::ZeroValueOutput));
            }
            total = total
                .checked_add(value)
                .ok_or(SeError::Verify(VerifyError::AmountOverflow))?;
            credited.push((value, blinding));
        }
        // An expired Issue is refused above, so its id need not be kept.
        let epoch = self.state.epoch;
        let kept = self
            .state
            .imported
            .iter()
            .filter(|i| i.expiry_epoch >= epoch)
            .count();
        if kept >= IMPORTED_MAX {
            return Err(SeError::LimitExceeded(Limit::Imported));
        }
        let balance = self
            .state
            .balance()
            .checked_add(total)
            .ok_or(SeError::LimitExceeded(Limit::Holding))?;
        if balance > limits.holding_max {
            return Err(SeError::LimitExceeded(Limit::Holding));
        }
        if self.state.tokens.len() + issue.outputs.len() > TOKENS_MAX {
            return Err(SeError::LimitExceeded(Limit::Tokens));
        }
        self.change_imported(|a| {
            let next = &mut a.state;
            next.imported.retain(|i| i.expiry_epoch >= epoch);
            next.imported.push(Imported {
                id,
                expiry_epoch: issue.expiry_epoch,
            });
            for (i, (o, (value, blinding))) in issue.outputs.iter().zip(credited).enumerate() {
                if let Some(k) = next.keys.iter_mut().find(|k| k.public == o.owner) {
                    k.used = true;
                }
                next.tokens.push(Token {
                    outpoint: OutPoint {
                        record: id,
                        index: i as u8,
                    },
                    value,
                    owner: o.owner,
                    lineage: alloc::vec![id],
                    blinding,
                });
            }
            next.records.push(StoredRecord {
                id,
                record: Record::Issue(issue).for_ancestry(),
            });
            Ok(())
        })?;
        self.check_invariants();
        Ok(total)
    }

    /// The amount (and, confidential, the blinding) of output `i` of an
    /// Issue to this SE. The Issue's form must be the policy's.
    fn issued_amount(
        &self,
        issue: &Issue,
        i: usize,
        o: &Output,
    ) -> Result<(Amount, Option<[u8; 32]>), SeError> {
        let confidential = self.trust()?.policy().is_confidential();
        if issue.confidential.is_some() != confidential {
            return Err(SeError::Verify(VerifyError::AmountForm));
        }
        if !confidential {
            return Ok((o.value, None));
        }
        #[cfg(feature = "confidential")]
        {
            use tally_core::confidential::ConfidentialError;
            // C8: an Issue settlement could not value is not credited (the
            // SE cannot open the audit seal, but checks it is there).
            let audit_ok = issue
                .confidential
                .as_ref()
                .and_then(|c| c.audit.as_ref())
                .is_some_and(|a| a.fits(issue.outputs.len()));
            if !audit_ok {
                return Err(SeError::Verify(VerifyError::AuditSealInvalid));
            }
            let sk = self.signing_key(&o.owner).ok_or(SeError::NotForThisSe)?;
            let opening = issue.open_output(i, &sk).map_err(|e| {
                SeError::Verify(match e {
                    ConfidentialError::WrongOpening => VerifyError::WrongOpening,
                    _ => VerifyError::OpeningUnreadable,
                })
            })?;
            Ok((opening.value(), Some(opening.blinding_bytes())))
        }
        #[cfg(not(feature = "confidential"))]
        {
            let _ = i;
            Err(SeError::Verify(VerifyError::AmountForm))
        }
    }

    /// What makes an Issue creditable here: a trusted issuer's signature,
    /// not expired, every output to one of this SE's keys (checked again
    /// with the values by [`Self::import_issue`]).
    fn check_importable(&self, issue: &Issue) -> Result<(), SeError> {
        let trust = self.trust()?;
        let dcp = trust.dcp_for(&issue.issuer, role::ISSUE, self.state.epoch)?;
        if issue.expiry_epoch < self.state.epoch {
            return Err(SeError::Verify(VerifyError::TokenExpired));
        }
        if issue
            .outputs
            .iter()
            .any(|o| self.state.key(&o.owner).is_none())
        {
            return Err(SeError::NotForThisSe);
        }
        tally_core::crypto::verify(
            &dcp.key,
            &issue.signed_message(&issue.id()).0,
            &issue.signature,
        )
        .map_err(|_| SeError::Verify(VerifyError::BadSignature))
    }

    // ---- cardholder verification -----------------------------------------

    fn check_not_blocked(&self) -> Result<(), SeError> {
        match &self.state.pin {
            Some(p) if p.tries_left == 0 => Err(SeError::PinBlocked),
            _ => Ok(()),
        }
    }

    /// Whether the cardholder was verified in this session (not yet consumed).
    pub fn cardholder_verified(&self) -> bool {
        self.cvm_verified
    }

    /// Remaining PIN tries, or `None` when no PIN is set.
    pub fn pin_tries_left(&self) -> Option<u8> {
        self.state.pin.as_ref().map(|p| p.tries_left)
    }

    /// ISO 7816-4 VERIFY: checks the cardholder's PIN. The try counter is
    /// decremented and committed *before* the comparison (a power cut
    /// during a wrong guess cannot save the try) and restored after a
    /// match. A match authorises the next cardholder operation of this
    /// session.
    pub fn verify_pin(&mut self, pin: &[u8]) -> Result<(), SeError> {
        self.ready()?;
        let stored = self.state.pin.clone().ok_or(SeError::BadPin)?;
        if stored.tries_left == 0 {
            return Err(SeError::PinBlocked);
        }
        let mut next = self.state.clone();
        if let Some(p) = next.pin.as_mut() {
            p.tries_left -= 1;
        }
        self.commit(next)?;
        if Pin::digest_of(&stored.salt, pin) != stored.digest {
            self.cvm_verified = false;
            return Err(SeError::WrongPin {
                tries_left: stored.tries_left - 1,
            });
        }
        let mut next = self.state.clone();
        if let Some(p) = next.pin.as_mut() {
            p.tries_left = PIN_TRIES_MAX;
        }
        self.commit(next)?;
        self.cvm_verified = true;
        Ok(())
    }

    /// ISO 7816-4 CHANGE REFERENCE DATA: sets the first PIN (`old` absent,
    /// only while none is set) or changes it (the old PIN is verified,
    /// with the try counter).
    pub fn change_pin(&mut self, old: Option<&[u8]>, new: &[u8]) -> Result<(), SeError> {
        self.ready()?;
        if !(PIN_BYTES_MIN..=PIN_BYTES_MAX).contains(&new.len()) {
            return Err(SeError::BadPin);
        }
        match (&self.state.pin, old) {
            (None, None) => {}
            (Some(_), Some(old)) => self.verify_pin(old)?,
            _ => return Err(SeError::BadPin),
        }
        let mut salt = [0u8; 16];
        self.entropy.get_mut().fill(&mut salt);
        let mut next = self.state.clone();
        next.pin = Some(Pin {
            salt,
            digest: Pin::digest_of(&salt, new),
            tries_left: PIN_TRIES_MAX,
        });
        self.commit(next)?;
        self.cvm_verified = false;
        Ok(())
    }

    // ---- requests to the back office ---------------------------------------

    /// ENROL: signs the enrolment of this SE to `account` with the
    /// account's one-time code (out of band from the DCP). Signs only
    /// under the enrolment tag and always binds this SE's id.
    pub fn enrol(&mut self, account: &str, code: &str) -> Result<tally_core::Signature, SeError> {
        self.ready()?;
        if account.is_empty() || account.len() > tally_core::dcp::ACCOUNT_NAME_BYTES_MAX {
            return Err(SeError::BadRequestParams);
        }
        let se_id = self.se_id()?;
        let k = self.attestation_key()?;
        Ok(k.sign(&enrolment_message(&se_id, account, &enrolment_code_digest(code)).0))
    }

    /// BUILD REQUEST: the SE builds and signs one back-office request from
    /// its own state, with its own counter and the kind's domain tag. The
    /// terminal supplies only what the user chose ([`RequestParams`]).
    pub fn build_request(&mut self, params: RequestParams) -> Result<DeviceRequest, SeError> {
        self.ready()?;
        let se_id = self.se_id()?;
        let epoch = self.state.epoch;
        let mut next = self.state.clone();
        let certified = |k: &OfflineKey| k.certified_at(epoch);
        let mut consumes_cvm = false;
        let op = match params {
            RequestParams::Certify { n } => {
                let n = usize::from(n);
                if n == 0 || n > tally_core::dcp::CERTIFY_KEYS_MAX {
                    return Err(SeError::BadRequestParams);
                }
                let keys = self.fresh_keys(&mut next, n)?;
                DeviceOp::Certify { keys }
            }
            RequestParams::Load { amount } => {
                let limits = self.limits()?;
                let amount = Amount(amount);
                let holding = self
                    .state
                    .balance()
                    .checked_add(amount)
                    .ok_or(SeError::LimitExceeded(Limit::Holding))?;
                if amount.is_zero() {
                    return Err(SeError::BadRequestParams);
                }
                if holding > limits.holding_max {
                    return Err(SeError::LimitExceeded(Limit::Holding));
                }
                let k = next
                    .keys
                    .iter_mut()
                    .find(|k| certified(k) && !k.used)
                    .ok_or(SeError::NoCertifiedKey)?;
                k.used = true;
                DeviceOp::Load {
                    amount: amount.0,
                    key: k.public,
                }
            }
            RequestParams::RedemptionRequest { amount, unload } => {
                if amount == 0 || Amount(amount) > self.state.balance() {
                    return Err(SeError::BadRequestParams);
                }
                DeviceOp::RedemptionRequest { amount, unload }
            }
            RequestParams::Redeem {
                nonce,
                sealed_digest,
            } => {
                let o = self
                    .state
                    .outgoing
                    .iter()
                    .find(|o| o.redemption && o.nonce == nonce)
                    .ok_or(SeError::UnknownTransfer)?;
                // The renewal's fresh token goes to a certified key of
                // ours: a never-used one if there is one, else the newest.
                let idx = next
                    .keys
                    .iter()
                    .position(|k| certified(k) && !k.used)
                    .or_else(|| next.keys.iter().rposition(&certified))
                    .ok_or(SeError::NoCertifiedKey)?;
                next.keys[idx].used = true;
                DeviceOp::Redeem {
                    nonce,
                    transfer_id: o.transfer_id,
                    key: next.keys[idx].public,
                    sealed_digest,
                }
            }
            RequestParams::Sync { sealed_digest } => {
                // Recovered and refunded tokens go to a certified key of
                // ours that stays in the key table: the newest one that
                // owns a token, else the newest certified one (not marked
                // used: a sync does not use up a fresh key, which would
                // cost a certification per sync).
                let owns = |k: &OfflineKey| next.tokens.iter().any(|t| t.owner == k.public);
                let key = next
                    .keys
                    .iter()
                    .rposition(|k| certified(k) && owns(k))
                    .or_else(|| next.keys.iter().rposition(certified))
                    .map(|i| next.keys[i].public);
                let reports = tally_core::dcp::reports_digest_of(
                    next.reports
                        .iter()
                        .map(|r| (r.nonce, r.amount.0, r.key, r.received)),
                );
                let counter = next.request_counter.saturating_add(1);
                for r in next.reports.iter_mut() {
                    r.sent_in = counter;
                }
                DeviceOp::Sync {
                    sealed_digest,
                    reports,
                    key,
                }
            }
            RequestParams::CancelIssue { issue } => {
                let id = issue.id();
                if !self.state.cancelled.iter().any(|c| c.id == id) {
                    // Verified as an import would be; recorded as
                    // cancelled in this commit, so it is never credited.
                    self.check_importable(&issue)?;
                    next.cancelled.retain(|c| c.expiry_epoch >= epoch);
                    if next.cancelled.len() >= CANCELLED_MAX {
                        return Err(SeError::LimitExceeded(Limit::Cancelled));
                    }
                    next.cancelled.push(Imported {
                        id,
                        expiry_epoch: issue.expiry_epoch,
                    });
                }
                DeviceOp::CancelIssue { issue }
            }
            RequestParams::PayOnline { to_account, amount } => {
                let limits = self.limits()?;
                if amount == 0
                    || to_account.is_empty()
                    || to_account.len() > tally_core::dcp::ACCOUNT_NAME_BYTES_MAX
                {
                    return Err(SeError::BadRequestParams);
                }
                if limits.cvm_online {
                    self.check_not_blocked()?;
                    if !self.cvm_verified {
                        return Err(SeError::CardholderVerificationRequired);
                    }
                    consumes_cvm = true;
                }
                DeviceOp::PayOnline { to_account, amount }
            }
            RequestParams::Balance => DeviceOp::Balance,
        };
        let counter = next
            .request_counter
            .checked_add(1)
            .ok_or(SeError::StateCorrupt)?;
        next.request_counter = counter;
        let signature = self
            .attestation_key()?
            .sign(&DeviceRequest::signed_message(&se_id, counter, &op).0);
        self.commit(next)?;
        if consumes_cvm {
            self.cvm_verified = false;
        }
        Ok(DeviceRequest {
            se_id,
            counter,
            op,
            signature,
            attachment: Vec::new(),
        })
    }

    // ---- the payment protocol --------------------------------------------

    /// Payee, message 1: a request for `amount` to a fresh certified key.
    pub fn create_request(&mut self, amount: Amount) -> Result<Request, SeError> {
        self.create_request_for(amount, None)
    }

    /// Payee, message 1 of a stream OPEN (decision 0020): a request for
    /// `ask.ticks_max` ticks at `ask.price`, signed with the ask, so the
    /// payer's SE must lock exactly that value for this SE's key. Clear
    /// amounts only.
    pub fn create_stream_request(&mut self, ask: StreamAsk) -> Result<Request, SeError> {
        self.ready()?;
        if self.trust()?.policy().is_confidential() {
            return Err(SeError::BadStreamTerms);
        }
        let amount = ask.value().ok_or(SeError::BadStreamTerms)?;
        self.create_request_for(amount, Some(ask))
    }

    fn create_request_for(
        &mut self,
        amount: Amount,
        stream: Option<StreamAsk>,
    ) -> Result<Request, SeError> {
        self.ready()?;
        let limits = self.limits()?;
        self.check_receivable(amount, &limits)?;
        if self.state.open_requests.len() >= OPEN_REQUESTS_MAX {
            return Err(SeError::LimitExceeded(Limit::OpenRequests));
        }
        if self.state.open_requests.len() + self.state.reports.len() >= REPORTS_MAX {
            return Err(SeError::LimitExceeded(Limit::Reports));
        }
        let epoch = self.state.epoch;
        // Prefer a key never handed out; else reuse the newest certified one.
        let idx = {
            let usable = |k: &OfflineKey| k.certified_at(epoch);
            let keys = &self.state.keys;
            keys.iter()
                .position(|k| usable(k) && !k.used)
                .or_else(|| keys.iter().rposition(usable))
                .ok_or(SeError::NoCertifiedKey)?
        };
        let cert = self.state.keys[idx]
            .cert
            .clone()
            .ok_or(SeError::NoCertifiedKey)?;
        let key = cert.key;
        let mut nonce = [0u8; 16];
        self.entropy.get_mut().fill(&mut nonce);
        let sk = self.signing_key(&key).ok_or(SeError::StateCorrupt)?;
        let epoch = self.state.epoch_seen;
        let req = tally_core::crypto::infallible(Request::try_sign_with(
            &sk, amount, nonce, cert, epoch, stream,
        ));
        self.change(|a| {
            a.state.keys[idx].used = true;
            a.state.open_requests.push(OpenRequest {
                nonce,
                amount,
                key,
                stream,
            });
            Ok(())
        })?;
        Ok(req)
    }

    fn check_receivable(&self, amount: Amount, limits: &TierLimits) -> Result<(), SeError> {
        if amount.is_zero() || amount > limits.payment_max {
            return Err(SeError::LimitExceeded(Limit::PaymentAmount));
        }
        let holding = self
            .state
            .balance()
            .checked_add(amount)
            .ok_or(SeError::LimitExceeded(Limit::Holding))?;
        if holding > limits.holding_max {
            return Err(SeError::LimitExceeded(Limit::Holding));
        }
        let recv = self
            .state
            .received_since_sync
            .checked_add(amount)
            .ok_or(SeError::LimitExceeded(Limit::Receiving))?;
        if recv > limits.receiving_max {
            return Err(SeError::LimitExceeded(Limit::Receiving));
        }
        Ok(())
    }

    /// Payer, message 2: pays `request` and returns the package bytes.
    /// Inputs are marked spent, change stored and the payment logged in
    /// the same commit. Paying the same request again returns the same
    /// package (a lost response is retried safely).
    pub fn pay(&mut self, request: &Request) -> Result<Vec<u8>, SeError> {
        self.pay_with(request, Proving::OnSe)
    }

    /// Payer, on a device whose application processor makes the range
    /// proof (decision 0032), step 1 of 2: what PAY of `request` would
    /// commit to, for the application processor to prove. Every check of
    /// PAY runs; nothing changes. The outputs' openings are derived from
    /// this SE's secret, the request, the counter and the tokens chosen,
    /// so PAY WITH PROOF makes the same ones while they are unchanged (a
    /// payment in between moves the counter, a load may change the tokens
    /// chosen: the proof is then stale, refused with nothing changed; ask
    /// again). A request paid before answers
    /// [`SeError::AlreadyPaid`]: PAY WITH PROOF returns its package.
    #[cfg(feature = "delegated-proving")]
    pub fn proving_task(&mut self, request: &Request) -> Result<ProvingTask, SeError> {
        self.ready()?;
        self.check_delegated()?;
        if self.paid_before(request).is_some() || self.state.paid.contains(&paid_id(request)) {
            return Err(SeError::AlreadyPaid);
        }
        let plan = self.pay_checks(request)?;
        let (inputs, outputs, _) = self.plan_payment(request, plan.budget)?;
        let counter = self
            .state
            .counter
            .checked_add(1)
            .ok_or(SeError::StateCorrupt)?;
        let ins = confidential_inputs(&inputs)?;
        let prepared = self.prepare_delegated(request, &ins, &new_outputs(&outputs), counter)?;
        let bits = self.trust()?.range_gens().ok_or(SeError::NoTrust)?.bits();
        Ok(prepared.task(bits))
    }

    /// Payer, step 2 of 2 of a payment proved outside the SE (decision
    /// 0032): PAY, with the range proof the application processor made
    /// for [`Applet::proving_task`]'s task (`None` for a payment of one
    /// output). The SE verifies the proof for the commitments it makes
    /// again before it signs anything: a wrong or stale proof is refused
    /// (code 905) and nothing changes. A retry of a paid request returns
    /// its package, whatever proof it carries.
    #[cfg(feature = "delegated-proving")]
    pub fn pay_proved(
        &mut self,
        request: &Request,
        proof: Option<RangeProof>,
    ) -> Result<Vec<u8>, SeError> {
        self.ready()?;
        if let Some(retry) = self.paid_before(request) {
            return retry;
        }
        self.check_delegated()?;
        self.pay_with(request, Proving::Delegated(proof))
    }

    /// Only a phone's or an IoT device's SE hands its openings to its own
    /// application processor (decision 0032): a card's host is the payee's
    /// terminal.
    #[cfg(feature = "delegated-proving")]
    fn check_delegated(&self) -> Result<(), SeError> {
        let personal = self.personal()?;
        if personal.device_class == device_class::CARD || !self.trust()?.policy().is_confidential()
        {
            return Err(SeError::ProvingNotDelegated);
        }
        Ok(())
    }

    fn pay_with(&mut self, request: &Request, proving: Proving) -> Result<Vec<u8>, SeError> {
        self.ready()?;
        if let Some(retry) = self.paid_before(request) {
            return retry;
        }
        // Paid before and its log entry gone (synced): never a second package.
        if self.state.paid.contains(&paid_id(request)) {
            return Err(SeError::AlreadyPaid);
        }
        let plan = self.pay_checks(request)?;
        let (bytes, stream) = self.change(|a| {
            let paid = a.build_payment(request, plan.budget, false, proving)?;
            let st = &mut a.state;
            st.epoch_seen = plan.epoch_seen;
            st.spent_since_sync = plan.spent;
            st.payments_since_sync += 1;
            st.spent_since_cvm = plan.spent_since_cvm;
            Ok(paid)
        })?;
        self.cvm_verified = false;
        // An OPEN's traversal, computed with its anchor: RAM only.
        if let Some((id, pebbles)) = stream {
            self.pebbles.retain(|(i, _)| *i != id);
            self.pebbles.push((id, pebbles));
        }
        self.check_invariants();
        Ok(bytes)
    }

    /// Every check PAY makes before it chooses tokens (limits, the payee's
    /// certificate and request signature, elapsed time, the cardholder),
    /// and what PAY then records.
    fn pay_checks(&mut self, request: &Request) -> Result<PayChecks, SeError> {
        let limits = self.limits()?;
        let epoch = self.state.epoch;
        self.check_payee_certificate(&request.payee)?;
        self.check_request_signature(request)?;
        let trust = self.trust()?;
        // Learn elapsed time from the payee, but never beyond what its
        // certificate could vouch for.
        let epoch_seen = self
            .state
            .epoch_seen
            .max(request.payee_epoch.min(request.payee.expiry_epoch));
        if epoch_seen.saturating_sub(epoch) > limits.offline_epochs_max {
            return Err(SeError::LimitExceeded(Limit::OfflineEpochs));
        }
        let amount = request.amount;
        if amount.is_zero() || amount > limits.payment_max {
            return Err(SeError::LimitExceeded(Limit::PaymentAmount));
        }
        let spent = self
            .state
            .spent_since_sync
            .checked_add(amount)
            .ok_or(SeError::LimitExceeded(Limit::OfflineSpend))?;
        if spent > limits.offline_spend_max {
            return Err(SeError::LimitExceeded(Limit::OfflineSpend));
        }
        if self.state.payments_since_sync >= limits.offline_payments_max {
            return Err(SeError::LimitExceeded(Limit::OfflinePayments));
        }
        self.check_not_blocked()?;
        let needs_cvm = limits.needs_cvm(amount, self.state.spent_since_cvm);
        if needs_cvm && !self.cvm_verified {
            return Err(SeError::CardholderVerificationRequired);
        }
        // The package must fit the payee's budget as well as ours.
        let payee_budget = trust
            .policy()
            .limits(request.payee.device_class, request.payee.tier)
            .map(|l| l.history_records_max)
            .unwrap_or(limits.history_records_max);
        let budget = usize::from(limits.history_records_max.min(payee_budget));
        // A verified payment starts the no-verification allowance afresh.
        let spent_since_cvm = if self.cvm_verified {
            Amount::ZERO
        } else {
            self.state
                .spent_since_cvm
                .checked_add(amount)
                .ok_or(SeError::LimitExceeded(Limit::OfflineSpend))?
        };
        Ok(PayChecks {
            epoch_seen,
            spent,
            spent_since_cvm,
            budget,
        })
    }

    /// Payer, on receiving message 1 (while the terminal shows the amount
    /// and waits for the user to confirm): checks the payee's certificate,
    /// so that the PAY that follows finds it verified and only signs.
    /// Changes nothing persistent; PAY checks everything again (the
    /// certificate's signature through the cache).
    pub fn check_request(&mut self, request: &Request) -> Result<(), SeError> {
        self.ready()?;
        self.check_payee_certificate(&request.payee)?;
        self.check_request_signature(request)?;
        // The keys of the tokens PAY is likeliest to spend (the largest, up
        // to the cache's size), made ready now rather than during PAY.
        // (A pass per key instead of a sort: no sort code in the firmware.)
        let mut taken: Vec<usize> = Vec::with_capacity(KEY_CACHE_MAX);
        for _ in 0..KEY_CACHE_MAX {
            let next = (0..self.state.tokens.len())
                .filter(|i| !taken.contains(i))
                .max_by_key(|&i| self.state.tokens[i].value);
            let Some(i) = next else { break };
            taken.push(i);
            let _ = self.signing_key(&self.state.tokens[i].owner);
        }
        Ok(())
    }

    /// The payee's certificate: issuer, expiry and revocation always; the
    /// DCP's signature once per certificate (cached in RAM: a meter paying
    /// the same charger every tick, or a PAY after [`Self::check_request`],
    /// skips it).
    fn check_payee_certificate(&mut self, cert: &PseudonymCertificate) -> Result<(), SeError> {
        let cert_id = cert.id();
        let trust = self.trust()?;
        if self.cert_cache.contains(&cert_id) {
            // Key and signature were checked when it was cached.
            trust.check_pseudonym_cert_current(cert, self.state.epoch)?;
            return Ok(());
        }
        let issuer = trust.check_pseudonym_cert(cert, self.state.epoch)?;
        tally_core::crypto::verify(&issuer, &cert.signed_message().0, &cert.signature)
            .map_err(|_| SeError::Verify(VerifyError::BadCertificateSignature))?;
        self.cert_cache.insert(cert_id);
        Ok(())
    }

    /// The payee SE's signature on the request, once per request: CHECK
    /// REQUEST verifies it while the user confirms and PAY, given the
    /// same request, finds it checked.
    fn check_request_signature(&mut self, request: &Request) -> Result<(), SeError> {
        // Compared field by field (no encoding or hashing on the warm
        // PAY): the request's signature covers amount, nonce, epoch and
        // the certificate, whose own signature stands for its content.
        let id = CheckedRequest {
            signature: request.signature,
            certificate: request.payee.signature,
            amount: request.amount,
            nonce: request.nonce,
            epoch: request.payee_epoch,
            stream: request.stream,
        };
        if self.checked_request.as_deref() == Some(&id) {
            return Ok(());
        }
        request.verify().map_err(|_| SeError::BadRequestSignature)?;
        self.checked_request = Some(alloc::boxed::Box::new(id));
        Ok(())
    }

    /// A request this SE already paid: the same package again (a lost
    /// response is retried safely); the same nonce with another amount is
    /// not a retry.
    fn paid_before(&self, request: &Request) -> Option<Result<Vec<u8>, SeError>> {
        let o = self
            .state
            .outgoing
            .iter()
            .find(|o| o.nonce == request.nonce && o.payee == request.payee.key)?;
        if o.amount != request.amount {
            return Some(Err(SeError::Stale));
        }
        Some(Ok(o.package.clone()))
    }

    /// Renewal and unload: pays the DCP's redemption key. Exempt from the
    /// offline limits (it happens online), bounded by the DCP's budget.
    /// Only an order signed by a trusted DCP redemption key and bound to
    /// this SE's id is paid: a terminal cannot make the SE pay an order
    /// another device obtained (which would credit that device's account).
    pub fn redeem(&mut self, order: &RedemptionOrder) -> Result<Vec<u8>, SeError> {
        self.ready()?;
        if order.se_id != self.se_id()? {
            return Err(SeError::NotForThisSe);
        }
        if !order.verify() {
            return Err(SeError::NotRedemption);
        }
        let request = &order.request;
        if let Some(retry) = self.paid_before(request) {
            return retry;
        }
        let trust = self.trust()?;
        if request.payee.device_class != device_class::DCP
            || trust
                .dcp_for(&request.payee.key.id(), role::REDEEM, self.state.epoch)
                .is_err()
        {
            return Err(SeError::NotRedemption);
        }
        trust.verify_pseudonym_cert(&request.payee, self.state.epoch)?;
        let budget = trust
            .policy()
            .limits(device_class::DCP, request.payee.tier)
            .map(|l| usize::from(l.history_records_max))
            .ok_or(SeError::NoTier)?;
        if request.stream.is_some() {
            return Err(SeError::NotRedemption);
        }
        let (bytes, _) = self.change(|a| a.build_payment(request, budget, true, Proving::OnSe))?;
        self.check_invariants();
        Ok(bytes)
    }

    /// The tokens PAY of `request` spends and the outputs it makes
    /// (payment, then change if any), without changing anything.
    fn plan_payment(
        &self,
        request: &Request,
        budget: usize,
    ) -> Result<(Vec<&Token>, Vec<Output>, Amount), SeError> {
        let st = &self.state;
        if st.outgoing.len() >= OUTGOING_MAX {
            return Err(SeError::LimitExceeded(Limit::Outgoing));
        }
        let amount = request.amount;
        let cands: Vec<Candidate> = st
            .tokens
            .iter()
            .map(|t| Candidate {
                value: t.value,
                lineage_len: t.lineage.len(),
            })
            .collect();
        let merged_len = |sel: &[usize]| {
            let mut ids: Vec<&Hash32> = Vec::new();
            for &i in sel {
                for id in &st.tokens[i].lineage {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            ids.len()
        };
        // Confidential mode: one to three tokens worth exactly the amount
        // first, so the payment has one output and no range proof
        // (decision 0031).
        let exact_first = self.trust()?.policy().is_confidential();
        let sel =
            select(&cands, amount, budget, &merged_len, exact_first).map_err(|e| match e {
                SelectError::InsufficientFunds => SeError::InsufficientFunds,
                SelectError::NeedsRenewal => SeError::NeedsRenewal,
            })?;
        let inputs: Vec<&Token> = sel.iter().map(|&i| &st.tokens[i]).collect();
        let total =
            Amount::sum(inputs.iter().map(|t| t.value)).ok_or(SeError::InsufficientFunds)?;
        let change = total
            .checked_sub(amount)
            .ok_or(SeError::InsufficientFunds)?;
        let mut outputs = alloc::vec![Output {
            value: amount,
            owner: request.payee.key
        }];
        if !change.is_zero() {
            let change_key = self.change_key(inputs[0])?;
            outputs.push(Output {
                value: change,
                owner: change_key,
            });
        }
        Ok((inputs, outputs, change))
    }

    /// Builds and signs the package paying `request` and changes the
    /// state in place (inputs spent, change stored, payment logged); runs
    /// inside [`Self::change`], which commits it. Everything that can be
    /// refused is checked before the first change, but the certificate
    /// bound (checked after the garbage collection). For a stream request
    /// (an OPEN, decision 0020) also returns the new stream's id and the
    /// traversal of its chain.
    #[allow(clippy::type_complexity)]
    fn build_payment(
        &mut self,
        request: &Request,
        budget: usize,
        redemption: bool,
        proving: Proving,
    ) -> Result<(Vec<u8>, Option<(Hash32, Pebbles)>), SeError> {
        let (inputs, outputs, change) = self.plan_payment(request, budget)?;
        let amount = request.amount;
        let st = &self.state;
        // Ancestry: the merged lineages of the inputs, by the ids already
        // stored with each token (no re-hashing). Each lineage is
        // topologically ordered, so keeping first occurrences keeps order.
        let mut ancestry_ids: Vec<Hash32> = Vec::new();
        for t in &inputs {
            for id in &t.lineage {
                if !ancestry_ids.contains(id) {
                    ancestry_ids.push(*id);
                }
            }
        }
        let mut ancestry: Vec<Record> = Vec::with_capacity(ancestry_ids.len());
        for id in &ancestry_ids {
            ancestry.push(st.record(id).cloned().ok_or(SeError::StateCorrupt)?);
        }
        let counter = st.counter.checked_add(1).ok_or(SeError::StateCorrupt)?;
        // A stream OPEN (decision 0020): output 0 locks the stream's value
        // for the payee under terms whose anchor is this SE's chain for the
        // OPEN's counter; the change key takes the refund.
        let open = match request.stream {
            None => None,
            Some(ask) => {
                if redemption
                    || self.trust()?.policy().is_confidential()
                    || ask.value() != Some(amount)
                {
                    return Err(SeError::BadStreamTerms);
                }
                let drop = room_for_stream(st.streams_out.iter().map(|s| s.closed))?;
                let refund_key = self.change_key(inputs[0])?;
                let seed = chain_seed(
                    &self.personal()?.attestation_seed,
                    &chain_seed_input(counter),
                );
                let room = self.traversal_room(None);
                let (pebbles, anchor) =
                    Pebbles::open_in(seed, ask.ticks_max, room).ok_or(SeError::BadStreamTerms)?;
                let terms = StreamOpenTerms {
                    index: 0,
                    refund_key,
                    ask,
                    anchor,
                };
                Some((drop, terms, pebbles))
            }
        };
        let (transfer, change_blinding) = self.make_transfer(
            &inputs,
            &outputs,
            request,
            counter,
            open.as_ref().map(|(_, t, _)| StreamPart::Open(*t)),
            proving,
        )?;
        let owner_of = |op: &OutPoint| {
            ancestry_ids
                .iter()
                .position(|id| *id == op.record)
                .and_then(|i| ancestry[i].spendable(op.index))
                .map(|o| o.owner)
        };
        let find = |k: &PublicKey| st.cert_for(k);
        let certificates = needed_certificates(&ancestry, &transfer, &owner_of, &find)
            .ok_or(SeError::NoCertifiedKey)?;
        let transfer_id = transfer.id();
        let package = Package {
            transfer: transfer.clone(),
            ancestry,
            certificates,
        };
        let bytes = package.to_cbor();
        let spent: Vec<OutPoint> = inputs.iter().map(|t| t.outpoint).collect();
        let before = st.balance();

        // From here on the state changes in place.
        let next = &mut self.state;
        next.counter = counter;
        if let Some(change_owner) = outputs.get(1).map(|o| o.owner)
            && let Some(k) = next.keys.iter_mut().find(|k| k.public == change_owner)
        {
            k.used = true;
        }
        next.tokens.retain(|t| !spent.contains(&t.outpoint));
        if outputs.len() == 2 {
            let mut lineage = Vec::with_capacity(ancestry_ids.len() + 1);
            lineage.extend_from_slice(&ancestry_ids);
            lineage.push(transfer_id);
            next.tokens.push(Token {
                outpoint: OutPoint {
                    record: transfer_id,
                    index: 1,
                },
                value: change,
                owner: outputs[1].owner,
                lineage,
                blinding: change_blinding,
            });
        }
        // The OPEN stays stored while its stream is open: the refund's
        // lineage.
        let stream = match open {
            None => None,
            Some((drop, terms, pebbles)) => {
                if let Some(i) = drop {
                    next.streams_out.remove(i);
                }
                let mut lineage = ancestry_ids.clone();
                lineage.push(transfer_id);
                let id = stream_id(&transfer_id, 0);
                next.streams_out.push(StreamOut {
                    id,
                    price: terms.ask.price,
                    ticks_max: terms.ask.ticks_max,
                    released: 0,
                    closed: false,
                    open: transfer_id,
                    counter,
                    refund_key: terms.refund_key,
                    lineage,
                });
                Some((id, pebbles))
            }
        };
        if outputs.len() == 2 || stream.is_some() {
            next.records.push(StoredRecord {
                id: transfer_id,
                record: Record::Transfer(transfer).for_ancestry(),
            });
            // The change token's future packages need the certificates of
            // every signer in its ancestry, including ours.
            for c in &package.certificates {
                if !next.certs.iter().any(|x| x.key == c.key) {
                    next.certs.push(c.clone());
                }
            }
        }
        if next.paid.len() >= PAID_KEPT_MAX {
            next.paid.remove(0);
        }
        next.paid.push(paid_id(request));
        next.outgoing.push(Outgoing {
            transfer_id,
            nonce: request.nonce,
            payee: request.payee.key,
            amount,
            counter,
            package: bytes.clone(),
            acked: false,
            redemption,
        });
        next.collect_garbage();
        if next.certs.len() > CERTS_MAX {
            return Err(SeError::LimitExceeded(Limit::Certificates));
        }
        // Conservation across the commit: what left equals what was paid.
        let after = next.balance();
        assert_eq!(
            before.checked_sub(after),
            Some(amount),
            "payment must move exactly the amount"
        );
        Ok((bytes, stream))
    }

    /// Signs the transfer spending `inputs` into `outputs` (payment, then
    /// change): clear, or under a confidential policy with commitments,
    /// the range proof (blindings balanced with the inputs', C4) and the sealed
    /// opening (SPEC §4.9). Returns the change's blinding to keep with the
    /// change token.
    fn make_transfer(
        &self,
        inputs: &[&Token],
        outputs: &[Output],
        request: &Request,
        counter: u64,
        stream: Option<StreamPart>,
        proving: Proving,
    ) -> Result<(Transfer, Option<[u8; 32]>), SeError> {
        let nonce = request.nonce;
        let key_for = |k: &PublicKey| self.signing_key(k);
        if !self.trust()?.policy().is_confidential() {
            let owners: Vec<PublicKey> = inputs.iter().map(|t| t.owner).collect();
            let t = sign_transfer_with(
                inputs.iter().map(|t| t.outpoint).collect(),
                &owners,
                outputs.to_vec(),
                nonce,
                counter,
                stream,
                &key_for,
            )
            .ok_or(SeError::StateCorrupt)?;
            return Ok((t, None));
        }
        // Streams are clear amounts only (refused before this).
        if stream.is_some() {
            return Err(SeError::BadStreamTerms);
        }
        #[cfg(feature = "confidential")]
        {
            let gens = self.trust()?.range_gens().ok_or(SeError::NoTrust)?;
            // Settlement's key, from the root-signed policy: the audit seal
            // carries every output's opening to it (SPEC §4.9.3).
            let audit_key = self.trust()?.policy().audit_key.ok_or(SeError::NoTrust)?;
            let ins = confidential_inputs(inputs)?;
            let outs = new_outputs(outputs);
            let mut rng = self.entropy.borrow_mut();
            let built = match proving {
                #[cfg(not(feature = "no-se-prover"))]
                Proving::OnSe => tally_core::confidential_record::build_transfer(
                    gens, &audit_key, &ins, &outs, nonce, counter, &key_for, &mut *rng,
                ),
                // No prover here: only a payment that needs no proof.
                #[cfg(feature = "no-se-prover")]
                Proving::OnSe => {
                    let prepared = tally_core::confidential_record::prepare_transfer(
                        &ins, &outs, nonce, counter, &mut *rng,
                    )
                    .map_err(confidential_refusal)?;
                    if prepared.needs_proof() {
                        return Err(SeError::NoProver);
                    }
                    tally_core::confidential_record::finish_transfer(
                        prepared, None, &audit_key, &key_for, &mut *rng,
                    )
                }
                #[cfg(feature = "delegated-proving")]
                Proving::Delegated(proof) => {
                    let prepared = self.prepare_delegated(request, &ins, &outs, counter)?;
                    // Checked before anything is signed: a wrong, stale or
                    // foreign proof changes nothing (decision 0032).
                    let proof = prepared.accept_proof(gens, proof).map_err(|e| match e {
                        tally_core::confidential::ConfidentialError::RangeBitsMismatch => {
                            SeError::Verify(VerifyError::RangeBitsMismatch)
                        }
                        _ => SeError::Verify(VerifyError::RangeProofInvalid),
                    })?;
                    tally_core::confidential_record::finish_transfer(
                        prepared, proof, &audit_key, &key_for, &mut *rng,
                    )
                }
            }
            .map_err(confidential_refusal)?;
            let change = built.openings.get(1).map(|o| o.blinding_bytes());
            Ok((built.transfer, change))
        }
        #[cfg(not(feature = "confidential"))]
        {
            let _ = (request, proving);
            Err(SeError::Verify(VerifyError::AmountForm))
        }
    }

    /// The first half of a transfer proved outside the SE (decision 0032):
    /// its randomness derived from this SE's secret, the request, the
    /// counter and the inputs, so that the task and PAY WITH PROOF make the
    /// same openings while nothing changed in between, and no two
    /// transfers share them (the counter moves with every transfer).
    #[cfg(feature = "delegated-proving")]
    fn prepare_delegated(
        &self,
        request: &Request,
        ins: &[(OutPoint, PublicKey, tally_core::confidential::Opening)],
        outs: &[tally_core::confidential_record::NewOutput],
        counter: u64,
    ) -> Result<tally_core::confidential_record::PreparedTransfer, SeError> {
        let mut outpoints = Vec::with_capacity(ins.len() * 33);
        for (op, _, _) in ins {
            outpoints.extend_from_slice(&op.record.0);
            outpoints.push(op.index);
        }
        let seed = tagged_hash(
            b"tally/v1/delegated-openings",
            &[
                &self.personal()?.attestation_seed,
                &paid_id(request).0,
                &counter.to_be_bytes(),
                &outpoints,
            ],
        );
        let mut rng = tally_core::crypto::SeededStream::new(seed.0);
        tally_core::confidential_record::prepare_transfer(
            ins,
            outs,
            request.nonce,
            counter,
            &mut rng,
        )
        .map_err(confidential_refusal)
    }

    /// The secret key of one of this SE's offline keys. Seed and public key
    /// were stored together by `generate_keys`, so expanding is one SHA-512
    /// and a public-key decompression (no scalar multiplication to derive
    /// the public key again); the last [`KEY_CACHE_MAX`] are kept ready in
    /// RAM (CHECK REQUEST fills it before PAY).
    fn signing_key(&self, public: &PublicKey) -> Option<SecretKey> {
        let ok = self.state.key(public)?;
        let mut cache = self.key_cache.borrow_mut();
        if let Some((_, k)) = cache.iter().find(|(p, _)| p == public) {
            return Some(k.clone());
        }
        let k = SecretKey::from_stored(&ok.seed, &ok.public)?;
        if cache.len() == KEY_CACHE_MAX {
            cache.remove(0);
        }
        cache.push((*public, k.clone()));
        Some(k)
    }

    /// The key the change goes to: the key of the first (largest) input,
    /// which has just signed and whose certificate is in the package, else
    /// the newest certified key. Not a fresh one per payment: the next
    /// payee sees the whole ancestry, change record included, so a fresh
    /// key would not unlink the payments, and every extra pseudonym in a
    /// lineage costs a stored certificate and package bytes (tried: 30
    /// one-unit payments overflowed a card's storage in `tally demo`).
    /// Keeping the change on the spending pseudonym also means that the
    /// revocation of a cheater's pseudonym named by a double spend covers
    /// the change of that spend (T30): the change of a clone's payment
    /// cannot go on circulating under a key no evidence names.
    fn change_key(&self, input: &Token) -> Result<PublicKey, SeError> {
        let epoch = self.state.epoch;
        let valid = |k: &OfflineKey| k.certified_at(epoch);
        if self.state.key(&input.owner).is_some_and(valid) {
            return Ok(input.owner);
        }
        self.state
            .keys
            .iter()
            .rev()
            .find(|k| valid(k))
            .map(|k| k.public)
            .ok_or(SeError::NoCertifiedKey)
    }

    /// Payee, message 3: verifies and stores the token, returns the receipt.
    /// A package already received returns its receipt again.
    pub fn receive(&mut self, package_bytes: &[u8]) -> Result<Receipt, SeError> {
        self.ready()?;
        let pkg = Package::from_cbor(package_bytes)?;
        let tid = pkg.transfer.id();
        if let Some(r) = self.state.receipts.iter().find(|r| r.transfer_id == tid) {
            return Ok(r.clone());
        }
        let limits = self.limits()?;
        let ri = self
            .state
            .open_requests
            .iter()
            .position(|r| r.nonce == pkg.transfer.nonce)
            .ok_or(SeError::UnknownRequest)?;
        let req = self.state.open_requests[ri].clone();
        self.check_receivable(req.amount, &limits)?;
        let trust = self.trust.as_deref().ok_or(SeError::NoTrust)?;
        let expected = Expected {
            payee: req.key,
            amount: req.amount,
            nonce: req.nonce,
            stream: req.stream,
        };
        let params = VerifyParams {
            epoch: self.state.epoch,
            history_records_max: usize::from(limits.history_records_max),
            signature_batch_max: SIGNATURE_BATCH_MAX,
        };
        // An SE built without confidential support could not spend what
        // it received under a confidential policy: it refuses instead.
        if cfg!(not(feature = "confidential")) && trust.policy().is_confidential() {
            return Err(SeError::Verify(VerifyError::AmountForm));
        }
        // The payee's key opens a confidential payment (SPEC §5, C5–C6).
        let sk = self.signing_key(&req.key).ok_or(SeError::StateCorrupt)?;
        let verified =
            verify_package_as_payee(pkg, &expected, &sk, trust, params, &mut self.cert_cache)?;
        self.store_verified(verified, ri, &limits)
    }

    /// Only a [`tally_core::VerifiedPackage`] can be stored.
    /// (Not inlined: its frame would sit under the verification's, the
    /// deepest stack of RECEIVE.)
    #[inline(never)]
    fn store_verified(
        &mut self,
        verified: tally_core::VerifiedPackage,
        request_index: usize,
        limits: &TierLimits,
    ) -> Result<Receipt, SeError> {
        // A package that consumes a token this SE still holds was signed by
        // a clone or a rolled-back copy of this SE (only its keys sign for
        // its tokens, and paying removes them in the same commit). Storing
        // it would hold the parent and the child at once: refuse the double
        // spend here instead of leaving it to settlement.
        let p = verified.package();
        let consumes_own_token = p
            .ancestry
            .iter()
            .flat_map(|r| r.inputs())
            .chain(&p.transfer.inputs)
            .any(|op| self.state.tokens.iter().any(|t| t.outpoint == *op));
        if consumes_own_token {
            return Err(SeError::Verify(VerifyError::OutputSpentTwice));
        }
        // SPEC §5.5 R2: an output the package consumes that a record of a
        // held token's lineage consumes by another transfer. The lineages
        // are closed under ancestry, so `records` is every record this SE
        // could ever put in a package beside this one.
        let spends = verified.spend_index();
        if spends
            .conflict(self.state.records.iter().map(|r| (&r.id, &r.record)))
            .is_some()
        {
            return Err(SeError::ConflictingSpend);
        }
        let (outpoint, output) = verified.payment();
        // A stream OPEN (SV5 checked it opens exactly what was asked): the
        // stream output is not a token this SE may spend; it becomes the
        // stream, with the anchor from the verified transfer (never from
        // the terminal).
        let stream = match self.state.open_requests[request_index].stream {
            None => None,
            Some(_) => {
                let terms = *verified
                    .package()
                    .transfer
                    .stream_open()
                    .ok_or(SeError::StateCorrupt)?;
                let drop = room_for_stream(self.state.streams_in.iter().map(|s| s.closed))?;
                Some((terms, drop))
            }
        };
        #[cfg(feature = "confidential")]
        let blinding = verified.payee_opening().map(|o| o.blinding_bytes());
        #[cfg(not(feature = "confidential"))]
        let blinding = None;
        let tid = verified.transfer_id();
        let mut lineage: Vec<Hash32> = Vec::with_capacity(verified.ancestry_ids().len() + 1);
        lineage.extend_from_slice(verified.ancestry_ids());
        lineage.push(tid);
        let key = self.state.key(&output.owner).ok_or(SeError::NotForThisSe)?;
        let sk = self.signing_key(&key.public).ok_or(SeError::StateCorrupt)?;
        let pkg = verified.into_package();
        if self.state.tokens.len() >= TOKENS_MAX && stream.is_none() {
            return Err(SeError::LimitExceeded(Limit::Tokens));
        }
        if self.state.records.len() + pkg.ancestry.len() + 1 > RECORDS_MAX {
            return Err(SeError::LimitExceeded(Limit::HistoryBudget));
        }
        let before = self.state.balance();
        let received_since_sync = self
            .state
            .received_since_sync
            .checked_add(output.value)
            .ok_or(SeError::LimitExceeded(Limit::Receiving))?;
        if before
            .checked_add(output.value)
            .is_none_or(|b| b > limits.holding_max)
        {
            return Err(SeError::LimitExceeded(Limit::Holding));
        }
        let receipt = Receipt::sign(&sk, tid);
        let gained = self.change(|a| {
            let gained = a.store_in_place(
                pkg,
                tid,
                (outpoint, output),
                lineage,
                blinding,
                request_index,
                stream,
            );
            a.state.received_since_sync = received_since_sync;
            // A token whose certificates were dropped could never be
            // spent: refuse instead (the payer resends, or recovery at
            // sync). Checked after the change: rolled back.
            if a.state.certs.len() > CERTS_MAX {
                return Err(SeError::LimitExceeded(Limit::Certificates));
            }
            let st = &mut a.state;
            if st.receipts.len() >= RECEIPTS_KEPT_MAX {
                st.receipts.remove(0);
            }
            st.receipts.push(receipt.clone());
            Ok(gained)
        })?;
        assert_eq!(
            self.state.balance().checked_sub(before),
            Some(gained),
            "receive adds exactly the payment"
        );
        // R2's pair, read back: no two records held now consume one output
        // where one of them is the package's.
        assert!(
            spends
                .conflict(self.state.records.iter().map(|r| (&r.id, &r.record)))
                .is_none(),
            "receive stored a conflicting spend"
        );
        self.check_invariants();
        Ok(receipt)
    }

    /// RECEIVE's change, in place: the package's records and
    /// certificates, the token (or, for a stream OPEN, the stream), the
    /// request's report. Returns the value added to the balance.
    #[allow(clippy::too_many_arguments)]
    fn store_in_place(
        &mut self,
        pkg: Package,
        tid: Hash32,
        (outpoint, output): (OutPoint, Output),
        lineage: Vec<Hash32>,
        blinding: Option<[u8; 32]>,
        request_index: usize,
        stream: Option<(StreamOpenTerms, Option<usize>)>,
    ) -> Amount {
        let next = &mut self.state;
        // Grown by what is added, not doubled (`State::fit` after the
        // commit gives back any slack; this keeps the peak down).
        next.records.reserve_exact(pkg.ancestry.len() + 1);
        next.tokens.reserve_exact(1);
        for r in pkg.ancestry.iter() {
            let id = r.id();
            if next.record(&id).is_none() {
                next.records.push(StoredRecord {
                    id,
                    record: r.clone().for_ancestry(),
                });
            }
        }
        next.records.push(StoredRecord {
            id: tid,
            record: Record::Transfer(pkg.transfer).for_ancestry(),
        });
        for c in pkg.certificates {
            if !next.certs.iter().any(|x| x.key == c.key) {
                next.certs.push(c);
            }
        }
        let gained = match stream {
            None => {
                next.tokens.push(Token {
                    outpoint,
                    value: output.value,
                    owner: output.owner,
                    lineage,
                    blinding,
                });
                output.value
            }
            Some((terms, drop)) => {
                if let Some(i) = drop {
                    next.streams_in.remove(i);
                }
                next.streams_in.push(StreamIn {
                    id: stream_id(&tid, 0),
                    price: terms.ask.price,
                    ticks_max: terms.ask.ticks_max,
                    ticks: 0,
                    latest: terms.anchor,
                    closed: false,
                    open: tid,
                    owner: output.owner,
                    lineage,
                });
                // Streamed value becomes a token at the claim.
                Amount::ZERO
            }
        };
        let req = next.open_requests.remove(request_index);
        next.reports.push(Report {
            nonce: req.nonce,
            amount: req.amount,
            key: req.key,
            received: Some(tid),
            sent_in: 0,
        });
        gained
    }

    /// Payer, message 4: the payee's receipt closes the payment. A payment
    /// (not a redemption) leaves the log in the same commit: nothing about
    /// it is needed any more (a sync uploads only unacknowledged packages;
    /// the paid request stays in `paid`, so it is never paid again), and
    /// the log — all of it in RAM — would otherwise grow with every
    /// payment until the next sync (decision 0018). Its transfer id joins
    /// the last [`ACKED_KEPT_MAX`] acknowledged ones, so a repeated ACK is
    /// still answered as done.
    pub fn ack(&mut self, receipt: &Receipt) -> Result<(), SeError> {
        self.ready()?;
        let Some(i) = self
            .state
            .outgoing
            .iter()
            .position(|o| o.transfer_id == receipt.transfer_id)
        else {
            if self.state.acked.contains(&receipt.transfer_id) {
                return Ok(());
            }
            return Err(SeError::UnknownTransfer);
        };
        let o = &self.state.outgoing[i];
        if receipt.payee != o.payee || receipt.verify().is_err() {
            return Err(SeError::BadReceipt);
        }
        if o.acked {
            // Acknowledged in a state written before entries left the log
            // at ACK (state version 3); it leaves at the next sync.
            return Ok(());
        }
        let redemption = o.redemption;
        self.change(|a| {
            let next = &mut a.state;
            if redemption {
                // A redemption stays, acknowledged, until the next sync
                // (rare, and the wallet's resume pass reads its amount).
                next.outgoing[i].acked = true;
            } else {
                next.outgoing.remove(i);
                if next.acked.len() >= ACKED_KEPT_MAX {
                    next.acked.remove(0);
                }
                next.acked.push(receipt.transfer_id);
            }
            Ok(())
        })
    }

    /// The exact package of an unacknowledged payment (an acknowledged one
    /// has left the log: [`SeError::UnknownTransfer`]).
    pub fn resend(&self, transfer_id: &Hash32) -> Result<Vec<u8>, SeError> {
        self.ready()?;
        self.state
            .outgoing
            .iter()
            .find(|o| o.transfer_id == *transfer_id)
            .map(|o| o.package.clone())
            .ok_or(SeError::UnknownTransfer)
    }

    /// Closes every open request for offline use and returns the report
    /// of every request that ended and is not yet acknowledged (received,
    /// or closed now or before), for the upload at sync. Each report is
    /// signed by its request's own key; closing and recording happen in
    /// one commit, and the reports stay until a sync grant answers the
    /// upload that carried them, so a crash before the upload reaches
    /// settlement loses none (the next sync carries them again).
    /// Settlement recovers a payment only for a request the payee's SE
    /// closed unpaid (a wallet cannot claim a package it received as
    /// interrupted) and refunds every other payment for a request that
    /// ended.
    pub fn report_requests(&mut self) -> Result<Vec<RequestReport>, SeError> {
        self.ready()?;
        let mut next = self.state.clone();
        for r in next.open_requests.drain(..) {
            next.reports.push(Report {
                nonce: r.nonce,
                amount: r.amount,
                key: r.key,
                received: None,
                sent_in: 0,
            });
        }
        let mut out = Vec::with_capacity(next.reports.len());
        for r in &next.reports {
            let sk = self.signing_key(&r.key).ok_or(SeError::StateCorrupt)?;
            out.push(RequestReport::sign(&sk, r.nonce, r.amount.0, r.received));
        }
        if next != self.state {
            self.commit(next)?;
        }
        Ok(out)
    }

    /// Credits a token recovered by settlement (an interrupted payment the
    /// DCP re-issued) — an ordinary import of a fresh Issue.
    pub fn status(&self) -> Result<Status, SeError> {
        let p = self.personal()?;
        let epoch = self.state.epoch;
        Ok(Status {
            se_id: self.se_id()?,
            device_class: p.device_class,
            tier: p.tier,
            balance: self.state.balance(),
            tokens: self.state.tokens.len() as u32,
            counter: self.state.counter,
            epoch,
            epoch_seen: self.state.epoch_seen,
            spent_since_sync: self.state.spent_since_sync,
            payments_since_sync: self.state.payments_since_sync,
            received_since_sync: self.state.received_since_sync,
            unacked: self.state.outgoing.iter().filter(|o| !o.acked).count() as u32,
            open_requests: self.state.open_requests.len() as u32,
            certified_keys: self
                .state
                .keys
                .iter()
                .filter(|k| k.certified_at(epoch))
                .count() as u32,
        })
    }

    pub fn tokens(&self) -> Vec<TokenInfo> {
        self.state
            .tokens
            .iter()
            .map(|t| TokenInfo {
                outpoint: t.outpoint,
                value: t.value,
                lineage_len: t.lineage.len() as u32,
            })
            .collect()
    }

    // ---- payment streams (decision 0020) -----------------------------------

    /// Elements a new stream traversal may hold beside the traversals of
    /// the other streams this SE pays ([`TRAVERSAL_ROOM`] less theirs,
    /// two spare each): the segment traversal where it fits, else binary
    /// pebbling ([`Pebbles::open_in`]).
    fn traversal_room(&self, except: Option<&Hash32>) -> usize {
        let held: usize = self
            .pebbles
            .iter()
            .filter(|(i, _)| Some(i) != except)
            .map(|(_, p)| p.len() + 2)
            .sum();
        TRAVERSAL_ROOM.saturating_sub(held)
    }

    /// Payer, one tick: releases element `h_k` of stream `id`. Tick `k =
    /// released + 1` is recorded durably (one small journal record)
    /// *before* the element leaves the SE, so no crash can release an
    /// element the SE has not counted. Asking for tick `k = released`
    /// again releases the same element (a lost answer retried: from RAM,
    /// or after a reboot by a walk from the seed). Anything else is
    /// refused and changes nothing.
    pub fn release_tick(&mut self, id: &Hash32, k: u32) -> Result<Hash32, SeError> {
        self.ready()?;
        let slot = self
            .state
            .streams_out
            .iter()
            .position(|s| s.id == *id)
            .ok_or(SeError::UnknownStream)?;
        let s = &self.state.streams_out[slot];
        if s.closed {
            return Err(SeError::StreamClosed);
        }
        let (released, ticks_max) = (s.released, s.ticks_max);
        if k == released && k > 0 {
            if let Some((i, j, e)) = self.last_released
                && i == *id
                && j == k
            {
                return Ok(e);
            }
            // After a reboot: from the seed.
            let seed = self.stream_seed(slot)?;
            return Ok(chain_walk(seed, ticks_max - k));
        }
        if k == 0 || k < released {
            return Err(SeError::StreamTick(TickError::Replayed));
        }
        if k > ticks_max {
            return Err(SeError::StreamTick(TickError::Exhausted));
        }
        if k != released + 1 {
            return Err(SeError::StreamTick(TickError::Skipped));
        }
        // The pebbles after a reboot: from the seed, lazily.
        let at = match self.pebbles.iter().position(|(i, _)| i == id) {
            Some(at) => at,
            None => {
                let seed = self.stream_seed(slot)?;
                let room = self.traversal_room(Some(id));
                let p = Pebbles::resume_in(seed, ticks_max, released, room)
                    .ok_or(SeError::StateCorrupt)?;
                self.pebbles.push((*id, p));
                self.pebbles.len() - 1
            }
        };
        self.commit_tick(slot, k, None)?;
        assert_eq!(self.state.streams_out[slot].released, k, "tick recorded");
        let p = &mut self.pebbles.get_mut(at).ok_or(SeError::StateCorrupt)?.1;
        let element = p.element(k).ok_or(SeError::StateCorrupt)?;
        self.last_released = Some((*id, k, element));
        Ok(element)
    }

    /// Payee, one tick: takes element `element` as tick `k` of stream
    /// `id` if it hashes to the latest element held and `k` is the next
    /// tick (one hash), records it durably and keeps only it. A replayed,
    /// skipped or forged element is refused and changes nothing; the
    /// latest tick delivered again with its element answers again and
    /// writes nothing (a retry). Returns the value streamed so far.
    pub fn accept_tick(&mut self, id: &Hash32, k: u32, element: Hash32) -> Result<Amount, SeError> {
        self.ready()?;
        let slot = self
            .state
            .streams_in
            .iter()
            .position(|s| s.id == *id)
            .ok_or(SeError::UnknownStream)?;
        let s = &self.state.streams_in[slot];
        if s.closed {
            return Err(SeError::StreamClosed);
        }
        // The tick it holds, delivered again with the same element (a
        // retried ACCEPT whose answer was lost): the same answer, nothing
        // written — as the payer's RELEASE of `released` (SPEC S2).
        if k != 0 && k == s.ticks && element == s.latest {
            return Ok(s.streamed());
        }
        check_tick(&s.latest, s.ticks, &element, k, s.ticks_max).map_err(SeError::StreamTick)?;
        let before = s.streamed();
        self.commit_tick(slot, k, Some(&element))?;
        let s = &self.state.streams_in[slot];
        assert!(s.ticks == k && s.latest == element, "tick recorded");
        let after = s.streamed();
        assert_eq!(
            after.checked_sub(before),
            Some(s.price),
            "a tick streams exactly its price"
        );
        Ok(after)
    }

    /// Payee: closes stream `id` and hands over its claim (the latest
    /// element and its tick). Closing again returns the same claim.
    pub fn close_stream_in(&mut self, id: &Hash32) -> Result<StreamClaim, SeError> {
        self.ready()?;
        let slot = self
            .state
            .streams_in
            .iter()
            .position(|s| s.id == *id)
            .ok_or(SeError::UnknownStream)?;
        let s = &self.state.streams_in[slot];
        let claim = StreamClaim {
            id: *id,
            ticks: s.ticks,
            element: s.latest,
            value: s.streamed(),
        };
        if !s.closed {
            // The claim: the stream output to this SE's key for the ticks
            // taken, with `h_k` for settlement to walk to the anchor.
            let close = (claim.ticks > 0).then(|| Close {
                input: OutPoint {
                    record: s.open,
                    index: 0,
                },
                signer: s.owner,
                value: claim.value,
                part: StreamPart::Claim {
                    ticks: claim.ticks,
                    element: claim.element,
                },
                lineage: s.lineage.clone(),
            });
            self.commit_close(id, close, &|st| st.streams_in[slot].closed = true)?;
        }
        Ok(claim)
    }

    /// Payer: closes stream `id`; no tick is released after it. Returns
    /// the ticks released (the refund is the rest). Closing again returns
    /// the same count.
    pub fn close_stream_out(&mut self, id: &Hash32) -> Result<u32, SeError> {
        self.ready()?;
        let slot = self
            .state
            .streams_out
            .iter()
            .position(|s| s.id == *id)
            .ok_or(SeError::UnknownStream)?;
        let s = &self.state.streams_out[slot];
        let released = s.released;
        if !s.closed {
            // The refund: the payer half for the ticks never released.
            let left = s.ticks_max - released;
            let close = (left > 0).then(|| Close {
                input: OutPoint {
                    record: s.open,
                    index: STREAM_REFUND_FLAG,
                },
                signer: s.refund_key,
                value: Amount(s.price.0 * u64::from(left)),
                part: StreamPart::Refund { ticks: released },
                lineage: s.lineage.clone(),
            });
            self.commit_close(id, close, &|st| st.streams_out[slot].closed = true)?;
            self.pebbles.retain(|(i, _)| i != id);
        }
        Ok(released)
    }

    /// Commits a stream's close: `mark` closes it and the close's token
    /// (its claim or refund, signed by the half's key to the same key) is
    /// stored with the OPEN's lineage, in one commit. No token for a close
    /// of nothing. Not bounded by the holding limit: the value was this
    /// SE's own before (the payer's) or accepted at OPEN (the payee's).
    fn commit_close(
        &mut self,
        id: &Hash32,
        close: Option<Close>,
        mark: &dyn Fn(&mut State),
    ) -> Result<(), SeError> {
        // Everything that can be refused, before the change.
        let signed = match close {
            None => None,
            Some(c) => {
                if self.state.tokens.len() >= TOKENS_MAX {
                    return Err(SeError::LimitExceeded(Limit::Tokens));
                }
                let counter = self
                    .state
                    .counter
                    .checked_add(1)
                    .ok_or(SeError::StateCorrupt)?;
                let mut nonce = [0u8; 16];
                nonce.copy_from_slice(&id.0[..16]);
                let key_for = |k: &PublicKey| self.signing_key(k);
                let t = sign_transfer_with(
                    alloc::vec![c.input],
                    &[c.signer],
                    alloc::vec![Output {
                        value: c.value,
                        owner: c.signer,
                    }],
                    nonce,
                    counter,
                    Some(c.part),
                    &key_for,
                )
                .ok_or(SeError::StateCorrupt)?;
                Some((c, t, counter))
            }
        };
        let before = self.state.balance();
        let gained = self.change(|a| {
            let next = &mut a.state;
            mark(next);
            let gained = match signed {
                None => Amount::ZERO,
                Some((c, t, counter)) => {
                    let tid = t.id();
                    let mut lineage = c.lineage;
                    lineage.push(tid);
                    next.counter = counter;
                    next.records.push(StoredRecord {
                        id: tid,
                        record: Record::Transfer(t),
                    });
                    next.tokens.push(Token {
                        outpoint: OutPoint {
                            record: tid,
                            index: 0,
                        },
                        value: c.value,
                        owner: c.signer,
                        lineage,
                        blinding: None,
                    });
                    c.value
                }
            };
            // (No garbage to collect: the close's token keeps the OPEN's
            // lineage.)
            Ok(gained)
        })?;
        assert_eq!(
            self.state.balance().checked_sub(before),
            Some(gained),
            "a close adds exactly its claim or refund"
        );
        self.check_invariants();
        Ok(())
    }

    /// A broken SE, for tests of settlement's and the MDS's defences only
    /// (feature `test-hooks`): sets the count and the element of stream
    /// `id` this SE is paid by without any check, as an SE whose chain
    /// check was bypassed would hold them. Not journaled.
    #[cfg(feature = "test-hooks")]
    pub fn break_stream_in(&mut self, id: &Hash32, ticks: u32, element: Hash32) -> bool {
        match self.state.streams_in.iter_mut().find(|s| s.id == *id) {
            Some(s) => {
                s.ticks = ticks;
                s.latest = element;
                true
            }
            None => false,
        }
    }

    /// The anchor of stream `id` this SE is paid by, from its verified
    /// OPEN (what settlement walks a claim to).
    pub fn stream_anchor(&self, id: &Hash32) -> Option<Hash32> {
        let s = self.state.streams_in.iter().find(|s| s.id == *id)?;
        self.state.record(&s.open)?.stream_open().map(|t| t.anchor)
    }

    /// The streams this SE pays and is paid by (no secrets).
    pub fn streams(&self) -> (&[StreamOut], &[StreamIn]) {
        (&self.state.streams_out, &self.state.streams_in)
    }

    /// The chain seed of `streams_out[slot]`: from the SE's own secret
    /// and the OPEN's counter, so only this SE can extend the chain past
    /// what it released.
    fn stream_seed(&self, slot: usize) -> Result<Hash32, SeError> {
        let counter = self.state.streams_out[slot].counter;
        Ok(chain_seed(
            &self.personal()?.attestation_seed,
            &chain_seed_input(counter),
        ))
    }

    /// Makes one tick durable as a journal record of tens of bytes (no
    /// copy of the state, no table rewritten), then applies it in memory.
    /// A full log compacts as any commit does.
    fn commit_tick(
        &mut self,
        slot: usize,
        k: u32,
        element: Option<&Hash32>,
    ) -> Result<(), SeError> {
        if self.halted {
            return Err(SeError::Halted);
        }
        // The compact tick record (SPEC §4.10.3): no encoder, no copy in
        // the clear, applied by the same code boot replays it with.
        let appended = match self.journal.sequence() {
            Some(_) => {
                let (record, len) = encode_tick_record(slot, k, element);
                let body = &record[..len];
                let result = if self.sealing.is_clear() {
                    self.journal.append(body)
                } else {
                    let sealed = self.sealing.seal(body, self.entropy.get_mut());
                    self.journal.append(&sealed)
                };
                match result {
                    Ok(()) => {
                        apply_tick_record(&mut self.state, body)
                            .map_err(|_| SeError::StateCorrupt)?;
                        return Ok(());
                    }
                    Err(StorageError::LogFull) | Err(StorageError::TooLarge) => None,
                    Err(e) => Some(e),
                }
            }
            None => None,
        };
        if let Some(e) = appended {
            self.halted = true;
            return Err(SeError::Storage(e));
        }
        // Compaction: the whole state with the tick applied, in place (no
        // second copy of the state in RAM), written in pieces straight to
        // the slot. If the write fails the applet halts and reads the
        // durable state back: RAM is never a tick ahead of flash.
        match element {
            None => self.state.streams_out[slot].released = k,
            Some(e) => {
                self.state.streams_in[slot].ticks = k;
                self.state.streams_in[slot].latest = *e;
            }
        }
        if let Err(e) = self.write_whole_state() {
            self.halted = true;
            self.reload();
            return Err(SeError::Storage(e));
        }
        Ok(())
    }

    /// Production invariants, checked after every value-moving commit:
    /// every token is owned by one of our keys, appears once, has a stored
    /// lineage ending in its own record, and the balance respects the
    /// holding bound the policy allowed when it was stored.
    fn check_invariants(&self) {
        let st = &self.state;
        for (i, t) in st.tokens.iter().enumerate() {
            assert!(st.key(&t.owner).is_some(), "token owned by a foreign key");
            assert!(!t.value.is_zero(), "zero-value token");
            assert!(
                st.tokens[..i].iter().all(|u| u.outpoint != t.outpoint),
                "token stored twice"
            );
            assert_eq!(
                t.lineage.last(),
                Some(&t.outpoint.record),
                "lineage must end in the token's record"
            );
            assert!(
                t.lineage.iter().all(|id| st.record(id).is_some()),
                "lineage record missing"
            );
        }
        assert!(
            Amount::sum(st.tokens.iter().map(|t| t.value)).is_some(),
            "balance overflow"
        );
        // An open stream can always be closed: its closing key is here.
        for s in &st.streams_in {
            assert!(s.closed || st.key(&s.owner).is_some(), "stream key missing");
        }
        for s in &st.streams_out {
            assert!(
                s.closed || st.key(&s.refund_key).is_some(),
                "refund key missing"
            );
        }
    }
}

/// The durable state: the base (`payload`, as [`Journal::open`] or
/// [`Journal::reopen`] returned it), then every record of its log's
/// valid prefix applied in order. The encoding is dropped once decoded,
/// before the log is replayed.
fn load_state<S: Storage>(
    journal: &mut Journal<S>,
    sealing: &Sealing,
    payload: Option<Vec<u8>>,
) -> Result<State, SeError> {
    let mut state = match payload {
        None => State::default(),
        Some(sealed) => {
            let plain = sealing
                .open_owned(sealed)
                .map_err(|_| SeError::StateCorrupt)?;
            State::from_stored(&plain).map_err(|_| SeError::StateCorrupt)?
        }
    };
    let sequence = journal.sequence().unwrap_or(0);
    let mut index = 0u32;
    let replayed = journal.replay(&mut |sealed| {
        let applied = if sealing.is_clear() {
            // No copy of a clear record.
            apply_record(&mut state, sealed, sequence, index).ok()
        } else {
            sealing
                .open(sealed)
                .ok()
                .and_then(|plain| apply_record(&mut state, &plain, sequence, index).ok())
        };
        index = index.saturating_add(1);
        if applied.is_none() {
            // A record whose check holds but whose content does not
            // apply was not written by this code: refuse to boot.
            return Err(StorageError::Corrupt);
        }
        Ok(())
    });
    match replayed {
        Ok(_) => {
            state.fit();
            Ok(state)
        }
        // A record that fails its check under its commit mark, or
        // whose content does not apply: damaged or altered since it
        // was committed. Refuse to boot, as for a damaged base.
        Err(StorageError::Corrupt) => Err(SeError::StateCorrupt),
        Err(e) => Err(SeError::Storage(e)),
    }
}

/// Room in a stream table whose entries' `closed` flags are given, in
/// order: `None` when there is a free slot; a full table makes room by
/// dropping its oldest closed stream (`Some(index)`); full of open
/// streams, it refuses.
fn room_for_stream(closed: impl ExactSizeIterator<Item = bool>) -> Result<Option<usize>, SeError> {
    if closed.len() < STREAMS_MAX {
        return Ok(None);
    }
    let mut closed = closed;
    closed
        .position(|c| c)
        .map(Some)
        .ok_or(SeError::LimitExceeded(Limit::Streams))
}

/// What the terminal may choose in a BUILD REQUEST (docs/APDU.md): the
/// user's parameters only. Wire (command data): Certify `n`; Load
/// `amount`; RedemptionRequest `[amount, unload]`; Redeem `[nonce,
/// sealed_digest]`; Sync `sealed_digest`; PayOnline `[to_account,
/// amount]`; Balance empty. P1 is the [`tally_core::dcp::RequestKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestParams {
    Certify {
        n: u8,
    },
    Load {
        amount: u64,
    },
    RedemptionRequest {
        amount: u64,
        unload: bool,
    },
    Redeem {
        nonce: [u8; 16],
        sealed_digest: Hash32,
    },
    Sync {
        sealed_digest: Hash32,
    },
    PayOnline {
        to_account: alloc::string::String,
        amount: u64,
    },
    Balance,
    CancelIssue {
        issue: alloc::boxed::Box<Issue>,
    },
}

impl RequestParams {
    pub fn kind(&self) -> tally_core::dcp::RequestKind {
        use tally_core::dcp::RequestKind as K;
        match self {
            RequestParams::Certify { .. } => K::Certify,
            RequestParams::Load { .. } => K::Load,
            RequestParams::RedemptionRequest { .. } => K::RedemptionRequest,
            RequestParams::Redeem { .. } => K::Redeem,
            RequestParams::Sync { .. } => K::Sync,
            RequestParams::PayOnline { .. } => K::PayOnline,
            RequestParams::Balance => K::Balance,
            RequestParams::CancelIssue { .. } => K::CancelIssue,
        }
    }

    /// The command data (P1 carries the kind).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = tally_core::codec::Writer::new();
        match self {
            RequestParams::Certify { n } => w.u64(u64::from(*n)),
            RequestParams::Load { amount } => w.u64(*amount),
            RequestParams::RedemptionRequest { amount, unload } => {
                w.array(2);
                w.u64(*amount);
                w.bool(*unload);
            }
            RequestParams::Redeem {
                nonce,
                sealed_digest,
            } => {
                w.array(2);
                w.bytes(nonce);
                sealed_digest.write(&mut w);
            }
            RequestParams::Sync { sealed_digest } => sealed_digest.write(&mut w),
            RequestParams::PayOnline { to_account, amount } => {
                w.array(2);
                w.text(to_account);
                w.u64(*amount);
            }
            RequestParams::Balance => return Vec::new(),
            RequestParams::CancelIssue { issue } => issue.write(&mut w),
        }
        w.into_bytes()
    }

    /// Strict decoding of the command data for kind `kind`.
    pub fn decode(kind: u8, data: &[u8]) -> Result<RequestParams, CodecError> {
        use tally_core::codec::Reader;
        use tally_core::dcp::RequestKind as K;
        let kind = K::from_code(kind).ok_or(CodecError::UnknownCode)?;
        let mut r = Reader::new(data);
        let p = match kind {
            K::Certify => RequestParams::Certify { n: r.u8()? },
            K::Load => RequestParams::Load { amount: r.u64()? },
            K::RedemptionRequest => {
                r.array(2)?;
                RequestParams::RedemptionRequest {
                    amount: r.u64()?,
                    unload: r.bool()?,
                }
            }
            K::Redeem => {
                r.array(2)?;
                RequestParams::Redeem {
                    nonce: r.bytes_array()?,
                    sealed_digest: Hash32::read(&mut r)?,
                }
            }
            K::Sync => RequestParams::Sync {
                sealed_digest: Hash32::read(&mut r)?,
            },
            K::PayOnline => {
                r.array(2)?;
                RequestParams::PayOnline {
                    to_account: alloc::string::String::from(
                        r.text_max(tally_core::dcp::ACCOUNT_NAME_BYTES_MAX)?,
                    ),
                    amount: r.u64()?,
                }
            }
            // No data: anything present is trailing bytes (below).
            K::Balance => RequestParams::Balance,
            K::CancelIssue => RequestParams::CancelIssue {
                issue: alloc::boxed::Box::new(Issue::read(&mut r)?),
            },
        };
        if r.position() != data.len() {
            return Err(CodecError::TrailingBytes);
        }
        if p.encode() != data {
            return Err(CodecError::NonCanonical);
        }
        Ok(p)
    }
}

/// What the SE remembers of a paid request: its nonce and payee key.
/// A confidential SE's tokens as the payer side of a transfer takes them:
/// each with its opening (every token of a confidential SE has one).
#[cfg(feature = "confidential")]
fn confidential_inputs(
    inputs: &[&Token],
) -> Result<Vec<(OutPoint, PublicKey, tally_core::confidential::Opening)>, SeError> {
    let mut ins = Vec::with_capacity(inputs.len());
    for t in inputs {
        let b = t.blinding.as_ref().ok_or(SeError::StateCorrupt)?;
        let o = tally_core::confidential::Opening::from_bytes(t.value, b)
            .map_err(|_| SeError::StateCorrupt)?;
        ins.push((t.outpoint, t.owner, o));
    }
    Ok(ins)
}

#[cfg(feature = "confidential")]
fn new_outputs(outputs: &[Output]) -> Vec<tally_core::confidential_record::NewOutput> {
    outputs
        .iter()
        .map(|o| tally_core::confidential_record::NewOutput {
            owner: o.owner,
            value: o.value,
        })
        .collect()
}

/// Why the payer side of a confidential transfer refused.
#[cfg(feature = "confidential")]
fn confidential_refusal(e: tally_core::confidential::ConfidentialError) -> SeError {
    match e {
        // The payee's key cannot receive an opening (P-256).
        tally_core::confidential::ConfidentialError::UnsupportedKey => SeError::BadRequestParams,
        // Balanced by construction, in range by the limits: a refusal here
        // means corrupt state.
        _ => SeError::StateCorrupt,
    }
}

fn paid_id(request: &Request) -> Hash32 {
    tally_core::crypto::tagged_hash(
        b"tally/v1/se-paid-request",
        &[&request.nonce, &request.payee.key.to_cbor()],
    )
}
