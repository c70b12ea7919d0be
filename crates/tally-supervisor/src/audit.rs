//! The supervisors' audit log: append-only, hash-chained, every entry
//! signed by the Ed25519 audit key of the supervisor who acted.
//!
//! Entry `i` is `[1, i, prev, kind, body, signer, signature]` where `prev`
//! is the hash of entry `i − 1` (all zeros for entry 0), `body` the
//! canonical CBOR of the kind's object, and the signature covers
//! `H("tally/v1/audit-entry-signed", cbor([1, i, prev, kind, body, signer]))`.
//! Entry 0 is always the key set ([`EntryKind::Setup`]). Verification walks
//! the chain and every signature, and replays the protocol: a share needs
//! its request earlier in the log, must be signed by the supervisor it
//! claims to come from, and its DLEQ proof must hold; a result must be
//! reproduced by k logged shares. Editing, deleting, reordering or
//! inserting any entry before the last one breaks the chain or a signature;
//! dropping entries from the end is caught against a [`Checkpoint`]
//! (publish or countersign the head).

use std::collections::BTreeMap;
use std::fmt;

use elastic_elgamal::VerifiableDecryption;
use elastic_elgamal::group::Ristretto;
use tally_core::codec::{Cbor, CodecError, Reader, Writer, read_vec, write_vec};
use tally_core::crypto::{self, SecretKey, tagged_hash};
use tally_core::{Hash32, PublicKey, Signature};

use crate::SupervisorError;
use crate::opening::{
    DecryptionShare, LoggedRequest, Opening, OpeningRequest, OpeningResult, ShareFault,
    check_share, combine_checked,
};
use crate::setup::JointParams;

pub const AUDIT_VERSION: u8 = 1;
/// Most entries one log file may hold.
pub const AUDIT_ENTRIES_MAX: usize = 1 << 16;
/// Largest entry body (an opening request with the longest reason is ~4.5 KB).
pub const ENTRY_BODY_BYTES_MAX: usize = 16 * 1024;

/// What an entry records. Wire codes are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// 0: the key set ([`JointParams`]); entry 0 and only there.
    Setup = 0,
    /// 1: an [`OpeningRequest`].
    Request = 1,
    /// 2: a [`DecryptionShare`], signed by the supervisor it belongs to.
    Share = 2,
    /// 3: an [`OpeningResult`].
    Result = 3,
}

impl EntryKind {
    fn from_code(c: u8) -> Result<EntryKind, CodecError> {
        match c {
            0 => Ok(EntryKind::Setup),
            1 => Ok(EntryKind::Request),
            2 => Ok(EntryKind::Share),
            3 => Ok(EntryKind::Result),
            _ => Err(CodecError::UnknownCode),
        }
    }
}

/// One log entry (see the module docs for the wire form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub prev: Hash32,
    pub kind: EntryKind,
    pub body: Vec<u8>,
    pub signer: PublicKey,
    pub signature: Signature,
}

impl Entry {
    fn write_unsigned(&self, w: &mut Writer) {
        w.u64(u64::from(AUDIT_VERSION));
        w.u64(self.seq);
        self.prev.write(w);
        w.u64(self.kind as u64);
        w.bytes(&self.body);
        self.signer.write(w);
    }
    /// What the signer signs.
    pub fn signed_message(&self) -> Hash32 {
        let mut w = Writer::new();
        w.array(6);
        self.write_unsigned(&mut w);
        tagged_hash(b"tally/v1/audit-entry-signed", &[&w.into_bytes()])
    }
    /// The next entry's `prev`.
    pub fn hash(&self) -> Hash32 {
        tagged_hash(b"tally/v1/audit-entry", &[&self.to_cbor()])
    }
}

impl Cbor for Entry {
    fn write(&self, w: &mut Writer) {
        w.array(7);
        self.write_unsigned(w);
        self.signature.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(7)?;
        r.version(AUDIT_VERSION)?;
        Ok(Entry {
            seq: r.u64()?,
            prev: Hash32::read(r)?,
            kind: EntryKind::from_code(r.u8()?)?,
            body: r.bytes_max(ENTRY_BODY_BYTES_MAX)?.to_vec(),
            signer: PublicKey::read(r)?,
            signature: Signature::read(r)?,
        })
    }
}

/// A log's length and the hash of its last entry. Whoever keeps a
/// checkpoint can tell that a log presented later still contains every
/// entry up to it, unchanged. Wire: `[len, head]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub len: u64,
    pub head: Hash32,
}

impl Cbor for Checkpoint {
    fn write(&self, w: &mut Writer) {
        w.array(2);
        w.u64(self.len);
        self.head.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(2)?;
        Ok(Checkpoint {
            len: r.u64()?,
            head: Hash32::read(r)?,
        })
    }
}

/// What is wrong with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditFault {
    /// Its sequence number is not its position (reordered, inserted or
    /// deleted entries).
    Sequence,
    /// Its `prev` is not the hash of the entry before it.
    BrokenChain,
    /// Its signer is not an audit key of the key set.
    UnknownSigner,
    /// Its signature does not verify (the entry was edited).
    BadSignature,
    /// Its body is not a valid object of its kind.
    Malformed(CodecError),
    /// Entry 0 is not the expected key set, or a key set appears later.
    Setup,
    /// A share or result names a request that is not earlier in the log.
    UnknownRequest,
    /// The same request is logged twice.
    DuplicateRequest,
    /// A share is signed by another supervisor than the one it belongs to.
    WrongSigner,
    /// The same supervisor's share for one request is logged twice.
    DuplicateShare,
    /// A logged share does not check out.
    BadShare(ShareFault),
    /// A second result for one request.
    DuplicateResult,
    /// A result does not name k distinct logged shares.
    NotEnoughShares,
    /// The logged shares do not reproduce the result's point, the point
    /// does not satisfy the escrow's proof (full escrow), or the result's
    /// `escrow_proof_checked` does not match the request's escrow form.
    ResultMismatch,
    /// The log is shorter than a checkpoint, or differs from it.
    Checkpoint,
    /// More entries than [`AUDIT_ENTRIES_MAX`].
    TooLong,
}

impl fmt::Display for AuditFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditFault::Sequence => f.write_str("sequence number is not its position"),
            AuditFault::BrokenChain => f.write_str("does not chain to the entry before it"),
            AuditFault::UnknownSigner => f.write_str("signed by a key outside the key set"),
            AuditFault::BadSignature => f.write_str("signature does not verify"),
            AuditFault::Malformed(e) => write!(f, "body is malformed: {e}"),
            AuditFault::Setup => f.write_str("key set entry missing, misplaced or different"),
            AuditFault::UnknownRequest => f.write_str("names a request not logged before it"),
            AuditFault::DuplicateRequest => f.write_str("request logged twice"),
            AuditFault::WrongSigner => {
                f.write_str("share signed by another supervisor than its own")
            }
            AuditFault::DuplicateShare => f.write_str("share logged twice"),
            AuditFault::BadShare(s) => write!(f, "share refused: {s}"),
            AuditFault::DuplicateResult => f.write_str("second result for one request"),
            AuditFault::NotEnoughShares => f.write_str("result does not name k logged shares"),
            AuditFault::ResultMismatch => f.write_str("logged shares do not reproduce the result"),
            AuditFault::Checkpoint => f.write_str("log does not contain the checkpoint"),
            AuditFault::TooLong => f.write_str("too many entries"),
        }
    }
}

/// The first faulty entry of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditError {
    /// Position of the faulty entry.
    pub seq: u64,
    pub fault: AuditFault,
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit log entry {}: {}", self.seq, self.fault)
    }
}

impl std::error::Error for AuditError {}

/// What a verified log contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSummary {
    pub checkpoint: Checkpoint,
    pub requests: usize,
    pub shares: usize,
    /// Every opening, in log order.
    pub openings: Vec<OpeningResult>,
}

/// The protocol state a log's entries build up; applying an entry checks
/// everything first and changes the state only if all checks pass.
#[derive(Clone)]
struct State {
    params_id: Hash32,
    len: u64,
    head: Hash32,
    requests: BTreeMap<Hash32, OpeningRequest>,
    shares: BTreeMap<(Hash32, u8), (DecryptionShare, VerifiableDecryption<Ristretto>)>,
    results: BTreeMap<Hash32, OpeningResult>,
    result_order: Vec<Hash32>,
}

enum Change {
    Setup,
    Request(Hash32, OpeningRequest),
    Share(DecryptionShare, VerifiableDecryption<Ristretto>),
    Result(OpeningResult),
}

fn body<T: Cbor>(b: &[u8]) -> Result<T, AuditFault> {
    T::from_cbor(b).map_err(AuditFault::Malformed)
}

impl State {
    fn new(joint: &JointParams) -> State {
        State {
            params_id: joint.id(),
            len: 0,
            head: Hash32::default(),
            requests: BTreeMap::new(),
            shares: BTreeMap::new(),
            results: BTreeMap::new(),
            result_order: Vec::new(),
        }
    }

    fn check(&self, joint: &JointParams, e: &Entry) -> Result<Change, AuditFault> {
        if e.seq != self.len {
            return Err(AuditFault::Sequence);
        }
        if self.len as usize >= AUDIT_ENTRIES_MAX {
            return Err(AuditFault::TooLong);
        }
        if e.prev != self.head {
            return Err(AuditFault::BrokenChain);
        }
        let signer = joint
            .audit_index(&e.signer)
            .ok_or(AuditFault::UnknownSigner)?;
        crypto::verify(&e.signer, &e.signed_message().0, &e.signature)
            .map_err(|_| AuditFault::BadSignature)?;
        if (e.seq == 0) != (e.kind == EntryKind::Setup) {
            return Err(AuditFault::Setup);
        }
        match e.kind {
            EntryKind::Setup => {
                let p: JointParams = body(&e.body)?;
                if p != *joint {
                    return Err(AuditFault::Setup);
                }
                Ok(Change::Setup)
            }
            EntryKind::Request => {
                let r: OpeningRequest = body(&e.body)?;
                let id = r.id();
                if self.requests.contains_key(&id) {
                    return Err(AuditFault::DuplicateRequest);
                }
                Ok(Change::Request(id, r))
            }
            EntryKind::Share => {
                let s: DecryptionShare = body(&e.body)?;
                let r = self
                    .requests
                    .get(&s.request_id())
                    .ok_or(AuditFault::UnknownRequest)?;
                if s.index() != signer {
                    return Err(AuditFault::WrongSigner);
                }
                if self.shares.contains_key(&(s.request_id(), s.index())) {
                    return Err(AuditFault::DuplicateShare);
                }
                let d = check_share(
                    joint,
                    &self.params_id,
                    &s.request_id(),
                    r.escrow().ciphertext(),
                    &s,
                )
                .map_err(AuditFault::BadShare)?;
                Ok(Change::Share(s, d))
            }
            EntryKind::Result => {
                let res: OpeningResult = body(&e.body)?;
                let r = self
                    .requests
                    .get(&res.request_id)
                    .ok_or(AuditFault::UnknownRequest)?;
                if self.results.contains_key(&res.request_id) {
                    return Err(AuditFault::DuplicateResult);
                }
                let ascending = res.used.windows(2).all(|w| w[0] < w[1]);
                if res.used.len() != joint.threshold() || !ascending {
                    return Err(AuditFault::NotEnoughShares);
                }
                let mut used = Vec::with_capacity(res.used.len());
                for i in &res.used {
                    let (_, d) = self
                        .shares
                        .get(&(res.request_id, *i))
                        .ok_or(AuditFault::NotEnoughShares)?;
                    used.push((*i, *d));
                }
                let ciphertext = r.escrow().ciphertext();
                let point =
                    combine_checked(joint, ciphertext, &used).ok_or(AuditFault::ResultMismatch)?;
                // A full escrow's proof must hold for the point; a
                // ciphertext-only one has none, and the result must say
                // which of the two it was.
                let checked = r
                    .escrow()
                    .check_opened(joint.joint_key(), &point)
                    .map_err(|_| AuditFault::ResultMismatch)?;
                if point != res.point || checked != res.escrow_proof_checked {
                    return Err(AuditFault::ResultMismatch);
                }
                Ok(Change::Result(res))
            }
        }
    }

    fn apply(&mut self, e: &Entry, change: Change) {
        match change {
            Change::Setup => {}
            Change::Request(id, r) => {
                self.requests.insert(id, r);
            }
            Change::Share(s, d) => {
                self.shares.insert((s.request_id(), s.index()), (s, d));
            }
            Change::Result(res) => {
                self.result_order.push(res.request_id);
                self.results.insert(res.request_id, res);
            }
        }
        self.len += 1;
        self.head = e.hash();
    }

    fn summary(&self) -> AuditSummary {
        AuditSummary {
            checkpoint: Checkpoint {
                len: self.len,
                head: self.head,
            },
            requests: self.requests.len(),
            shares: self.shares.len(),
            openings: self
                .result_order
                .iter()
                .filter_map(|id| self.results.get(id).cloned())
                .collect(),
        }
    }
}

fn replay(
    entries: &[Entry],
    joint: &JointParams,
    checkpoint: Option<&Checkpoint>,
) -> Result<State, AuditError> {
    let mut state = State::new(joint);
    if entries.is_empty() {
        return Err(AuditError {
            seq: 0,
            fault: AuditFault::Setup,
        });
    }
    for e in entries {
        let change = state.check(joint, e).map_err(|fault| AuditError {
            seq: state.len,
            fault,
        })?;
        state.apply(e, change);
        if let Some(c) = checkpoint
            && c.len == state.len
            && c.head != state.head
        {
            return Err(AuditError {
                seq: state.len - 1,
                fault: AuditFault::Checkpoint,
            });
        }
    }
    if let Some(c) = checkpoint
        && c.len > state.len
    {
        return Err(AuditError {
            seq: state.len,
            fault: AuditFault::Checkpoint,
        });
    }
    Ok(state)
}

/// Verifies a log against the key set it claims to serve: chain, every
/// signature, and the protocol (see the module docs). With a checkpoint,
/// also that the log still holds every entry up to it, unchanged.
pub fn verify(
    entries: &[Entry],
    joint: &JointParams,
    checkpoint: Option<&Checkpoint>,
) -> Result<AuditSummary, AuditError> {
    replay(entries, joint, checkpoint).map(|s| s.summary())
}

/// Decodes a log file: `[1, [entry, …]]`.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<Entry>, CodecError> {
    struct Entries(Vec<Entry>);
    impl Cbor for Entries {
        fn write(&self, w: &mut Writer) {
            w.array(2);
            w.u64(u64::from(AUDIT_VERSION));
            write_vec(w, &self.0);
        }
        fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
            r.array(2)?;
            r.version(AUDIT_VERSION)?;
            Ok(Entries(read_vec(r, AUDIT_ENTRIES_MAX)?))
        }
    }
    Entries::from_cbor(bytes).map(|e| e.0)
}

/// A verified audit log. Every value of this type is a valid log for its
/// key set: it is made by [`AuditLog::new`] or by verifying entries, and
/// every append is checked like verification checks it before the entry
/// is added.
#[derive(Clone)]
pub struct AuditLog {
    joint: JointParams,
    entries: Vec<Entry>,
    state: State,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AuditLog({} entries, head {:?})",
            self.entries.len(),
            self.state.head
        )
    }
}

impl AuditLog {
    /// Starts a log with the key set as entry 0, signed by one supervisor.
    pub fn new(joint: &JointParams, signer: &SecretKey) -> Result<AuditLog, SupervisorError> {
        let mut log = AuditLog {
            joint: joint.clone(),
            entries: Vec::new(),
            state: State::new(joint),
        };
        log.append(EntryKind::Setup, joint.to_cbor(), signer)?;
        Ok(log)
    }

    /// Verifies `entries` (and the checkpoint, if any) and keeps them.
    pub fn from_entries(
        entries: Vec<Entry>,
        joint: &JointParams,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<AuditLog, AuditError> {
        let state = replay(&entries, joint, checkpoint)?;
        Ok(AuditLog {
            joint: joint.clone(),
            entries,
            state,
        })
    }

    /// Decodes and verifies a log file.
    pub fn from_bytes(
        bytes: &[u8],
        joint: &JointParams,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<AuditLog, SupervisorError> {
        let entries = decode_entries(bytes)?;
        Ok(AuditLog::from_entries(entries, joint, checkpoint)?)
    }

    /// The log file: `[1, [entry, …]]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.array(2);
        w.u64(u64::from(AUDIT_VERSION));
        write_vec(&mut w, &self.entries);
        w.into_bytes()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    pub fn joint(&self) -> &JointParams {
        &self.joint
    }
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            len: self.state.len,
            head: self.state.head,
        }
    }

    /// Walks the whole log again (chain, signatures, protocol).
    pub fn verify(&self) -> Result<AuditSummary, AuditError> {
        verify(&self.entries, &self.joint, None)
    }

    /// A logged request, for [`crate::share`] and [`crate::combine`].
    pub fn request(&self, id: &Hash32) -> Option<LoggedRequest<'_>> {
        self.state
            .requests
            .get(id)
            .map(|r| LoggedRequest::new(r, *id, self.state.params_id))
    }

    /// The shares logged for a request, by supervisor index.
    pub fn shares(&self, request_id: &Hash32) -> Vec<DecryptionShare> {
        self.state
            .shares
            .range((*request_id, 0)..=(*request_id, u8::MAX))
            .map(|(_, (s, _))| *s)
            .collect()
    }

    /// The logged result of a request, if it was opened.
    pub fn result(&self, request_id: &Hash32) -> Option<&OpeningResult> {
        self.state.results.get(request_id)
    }

    fn append(
        &mut self,
        kind: EntryKind,
        body: Vec<u8>,
        signer: &SecretKey,
    ) -> Result<Hash32, SupervisorError> {
        let mut e = Entry {
            seq: self.state.len,
            prev: self.state.head,
            kind,
            body,
            signer: signer.public(),
            signature: Signature::new(signer.suite(), [0; 64]),
        };
        e.signature = signer.sign(&e.signed_message().0);
        let change = self
            .state
            .check(&self.joint, &e)
            .map_err(|fault| match fault {
                AuditFault::UnknownSigner | AuditFault::WrongSigner => SupervisorError::WrongSigner,
                fault => SupervisorError::Audit(AuditError { seq: e.seq, fault }),
            })?;
        self.state.apply(&e, change);
        let hash = e.hash();
        self.entries.push(e);
        assert_eq!(self.entries.len() as u64, self.state.len);
        assert_eq!(self.entries.last().map(Entry::hash), Some(self.state.head));
        Ok(hash)
    }

    /// Logs an opening request, signed by the supervisor filing it; returns
    /// the request id.
    pub fn append_request(
        &mut self,
        request: &OpeningRequest,
        signer: &SecretKey,
    ) -> Result<Hash32, SupervisorError> {
        self.append(EntryKind::Request, request.to_cbor(), signer)?;
        Ok(request.id())
    }

    /// Logs a decryption share, signed by the supervisor it belongs to.
    /// A share whose proof fails is refused and not logged.
    pub fn append_share(
        &mut self,
        share: &DecryptionShare,
        signer: &SecretKey,
    ) -> Result<(), SupervisorError> {
        self.append(EntryKind::Share, share.to_cbor(), signer)
            .map(|_| ())
            .map_err(|e| match e {
                SupervisorError::Audit(AuditError {
                    fault: AuditFault::BadShare(fault),
                    ..
                }) => SupervisorError::ShareRejected {
                    index: share.index(),
                    fault,
                },
                e => e,
            })
    }

    /// Logs an opening, with the SE id the directory's table gives for its
    /// point (if any). Refused unless the k shares it used are in the log
    /// and reproduce its point.
    pub fn append_result(
        &mut self,
        opening: &Opening,
        se_id: Option<Hash32>,
        signer: &SecretKey,
    ) -> Result<(), SupervisorError> {
        let res = OpeningResult::new(opening, se_id);
        self.append(EntryKind::Result, res.to_cbor(), signer)
            .map(|_| ())
    }
}
