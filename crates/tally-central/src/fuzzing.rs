//! The DCP ↔ central bank wire (docs/SPEC.md §10) for tests and fuzzing:
//! the deterministic objects behind the §10 test vectors, the seed corpus,
//! and the oracles of the fuzz targets in `fuzz/` (`central_objects`,
//! `settlement_result`, `central_answer`), shared with their replay test
//! (`crates/tally-dcp/tests/fuzz_corpus.rs`; tally-dcp re-exports this
//! module as `tally_dcp::fuzzing`) so that `cargo test` runs them on the seeds.
//! Test support only (feature `testkit`): the keys here are public.
//!
//! Each `check_*` function is the whole body of one fuzz target: any input
//! is acceptable, and a panic is a bug.

use std::fmt::Debug;
use std::sync::Arc;

use tally_core::cert::{DcpCertificate, SettlementKey, role};
use tally_core::codec::{Cbor, Writer};
use tally_core::crypto::{Entropy, tagged_hash};
use tally_core::dcp::{MakerCertificate, SealedKind, SyncUpload, reports_digest};
use tally_core::policy::device_class;
use tally_core::sealed::{OpeningKey, SealingKey, seal};
use tally_core::{
    Amount, Epoch, Hash32, Issue, Output, Policy, PublicKey, RevocationList, SecretKey, Signature,
    Suite,
};
use tally_directory::SeEntry;
use tally_ledger::ledger::Invariant;
use tally_store::Store;

use crate::central::{
    CentralCall, CentralRequest, CentralTrust, InboxEntry, answer, reply, write_entry,
};
use crate::keys::{NodeSigner, SoftwareSigner};
use crate::{
    BackofficeError, CentralBank, CentralKeys, SettlementResult, default_tiers,
    development_escrow_key,
};

fn must<T, E: Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

// ---- the vector scheme -------------------------------------------------------

/// `SecretKey::from_seed(Ed25519, [n; 32])`.
pub fn seed_key(n: u8) -> SecretKey {
    must(
        SecretKey::from_seed(Suite::Ed25519, &[n; 32]).ok_or("seed"),
        "every 32-byte string is an Ed25519 seed",
    )
}

/// Seeds of the §10 vector scheme's keys (Ed25519 `[n; 32]`).
pub mod seed {
    pub const ROOT: u8 = 1;
    pub const SETTLEMENT: u8 = 2;
    pub const DCP1: u8 = 3;
    pub const DCP2: u8 = 4;
    pub const MAKER: u8 = 5;
    /// The SE's attestation key.
    pub const SE: u8 = 6;
    /// A certified offline key of the SE (owner of the Issues).
    pub const DEVICE: u8 = 7;
    /// The X25519 opening key (RFC 9180 DeriveKeyPair of `[8; 32]`).
    pub const OPENING: u8 = 8;
}

/// Fixed hashes of the vectors.
pub const OP: Hash32 = Hash32([0xa1; 32]);
pub const REPLY_KEY: Hash32 = Hash32([0xa2; 32]);
pub const MAILBOX: Hash32 = Hash32([0xa3; 32]);
pub const TRANSFER_ID: Hash32 = Hash32([0xa4; 32]);
pub const STRANDED_ID: Hash32 = Hash32([0xa5; 32]);
pub const ID_DIGEST: Hash32 = Hash32([0xa6; 32]);
pub const REDEMPTION_NONCE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// The `sealed` field of the Redeem vector: opaque to this layer (a
/// §9.3 `Sealed` in practice).
pub const REDEEM_SEALED: [u8; 4] = [0x5e, 0xa1, 0xed, 0x00];
pub const MAKER_NAME: &str = "Acme SE";
/// Epoch of the vector trust bundle and revocation list.
pub const EPOCH: Epoch = 1;

/// Deterministic entropy for the Sync vector's `Sealed`:
/// block `i` = `tagged_hash("tally/v1/wire-vector-entropy", [be64(i)])`.
pub struct VectorEntropy(u64);

impl Entropy for VectorEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            let block = tagged_hash(b"tally/v1/wire-vector-entropy", &[&self.0.to_be_bytes()]);
            self.0 += 1;
            chunk.copy_from_slice(&block.0[..chunk.len()]);
        }
    }
}

/// The keys of the vector scheme, as the central bank holds them.
pub struct WireKeys {
    pub root: Arc<NodeSigner>,
    pub settlement: Arc<NodeSigner>,
    pub dcp1: Arc<NodeSigner>,
    pub dcp2: Arc<NodeSigner>,
    pub opening: Arc<OpeningKey>,
    pub maker: SecretKey,
    pub se: SecretKey,
    pub device: SecretKey,
}

impl WireKeys {
    pub fn new() -> WireKeys {
        let signer = |n| -> Arc<NodeSigner> { Arc::new(SoftwareSigner::new(seed_key(n))) };
        WireKeys {
            root: signer(seed::ROOT),
            settlement: signer(seed::SETTLEMENT),
            dcp1: signer(seed::DCP1),
            dcp2: signer(seed::DCP2),
            opening: Arc::new(OpeningKey::from_seed(&[seed::OPENING; 32])),
            maker: seed_key(seed::MAKER),
            se: seed_key(seed::SE),
            device: seed_key(seed::DEVICE),
        }
    }
    pub fn central(&self) -> CentralKeys {
        CentralKeys {
            root: self.root.clone(),
            settlement: self.settlement.clone(),
            opening: self.opening.clone(),
        }
    }
    /// The DCPs the central bank trusts: (1, DCP 1's key), (2, DCP 2's).
    pub fn dcps(&self) -> [(u32, PublicKey); 2] {
        [(1, self.dcp1.public_key()), (2, self.dcp2.public_key())]
    }
    pub fn sealing_key(&self) -> SealingKey {
        must(
            SealingKey::try_sign(&*self.root, self.opening.public()),
            "root signs",
        )
    }
    pub fn settlement_key(&self) -> SettlementKey {
        must(
            SettlementKey::try_sign(&*self.root, self.settlement.public_key()),
            "root signs",
        )
    }
    /// An Issue of DCP 1 to the device key.
    pub fn issue(&self, serial: u64, value: u64) -> Issue {
        must(
            Issue::try_sign(
                &*self.dcp1,
                serial,
                100,
                vec![Output {
                    value: Amount(value),
                    owner: self.device.public(),
                }],
            ),
            "DCP 1 signs",
        )
    }
    pub fn maker_certificate(&self) -> MakerCertificate {
        MakerCertificate::sign(
            &self.maker,
            self.se.public(),
            device_class::PHONE,
            MAKER_NAME,
        )
    }
    /// The SE id (KeyId of the attestation key).
    pub fn se_id(&self) -> Hash32 {
        self.se.public().id()
    }
    /// The sealed empty `SyncUpload` of the Sync vector.
    pub fn sealed_empty_upload(&self) -> Vec<u8> {
        let upload = SyncUpload {
            packages: Vec::new(),
            reports: Vec::new(),
        };
        must(
            seal(
                &self.sealing_key(),
                SealedKind::SyncUpload,
                &upload.to_cbor(),
                &mut VectorEntropy(0),
            ),
            "seal",
        )
    }
    /// The trust bundle a central bank with these keys answers: policy
    /// serial 1 (`XTS`, the node's default tiers, DCPs 1 and 2 with every
    /// role until `Epoch::MAX`, the maker's key), revocation list serial
    /// 1 of epoch 1, empty.
    pub fn trust(&self) -> CentralTrust {
        let dcps = self
            .dcps()
            .iter()
            .map(|(id, key)| {
                must(
                    DcpCertificate::try_sign(
                        &*self.root,
                        *id,
                        *key,
                        role::ISSUE | role::CERTIFY | role::REDEEM | role::SYNC,
                        Epoch::MAX,
                    ),
                    "root signs",
                )
            })
            .collect();
        let policy = must(
            Policy::try_sign(
                &*self.root,
                1,
                "XTS",
                default_tiers(),
                dcps,
                vec![self.maker.public()],
            ),
            "root signs",
        );
        let revocations = must(
            RevocationList::try_sign(&*self.root, 1, EPOCH, Vec::new()),
            "root signs",
        );
        CentralTrust {
            root: self.root.public_key(),
            policy,
            revocations,
            sealing_key: self.sealing_key(),
            settlement_key: self.settlement_key(),
            escrow_key: development_escrow_key(),
            epoch: EPOCH,
        }
    }
}

impl Default for WireKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// Signs `res` with the settlement key as the central bank does (wire
/// version 2).
pub fn sign_result(res: &SettlementResult, key: &NodeSigner) -> Vec<u8> {
    must(res.sign(key), "settlement key signs")
}

/// One `CentralRequest` of each kind, in §10 order.
pub fn requests(k: &WireKeys) -> Vec<(&'static str, CentralRequest)> {
    vec![
        (
            "central-request-load",
            CentralRequest::Load {
                issue: k.issue(1, 1000),
                class: device_class::PHONE,
            },
        ),
        (
            "central-request-redeem",
            CentralRequest::Redeem {
                nonce: REDEMPTION_NONCE,
                transfer_id: TRANSFER_ID,
                sealed: REDEEM_SEALED.to_vec(),
                amount: 1000,
                renewal: Some(k.issue(2, 1000)),
                class: device_class::PHONE,
                last_sync: 3,
            },
        ),
        (
            "central-request-sync",
            CentralRequest::Sync {
                sealed: k.sealed_empty_upload(),
                reports: reports_digest(&[]),
                mailbox: MAILBOX,
                last_sync: 3,
            },
        ),
        (
            "central-request-deliver",
            CentralRequest::Deliver {
                mailbox: MAILBOX,
                issues: vec![(STRANDED_ID, k.issue(3, 250))],
            },
        ),
        (
            "central-request-cancel",
            CentralRequest::Cancel {
                issue: k.issue(1, 1000),
            },
        ),
        (
            "central-request-pay",
            CentralRequest::Pay {
                to_dcp: 2,
                to_account: "bob".into(),
                amount: 250,
            },
        ),
    ]
}

/// One `CentralCall` of each method, in §10 order.
pub fn calls(k: &WireKeys) -> Vec<(&'static str, CentralCall)> {
    let pay = requests(k)
        .into_iter()
        .find(|(n, _)| *n == "central-request-pay")
        .map(|(_, r)| r);
    let pay = must(pay.ok_or("no pay request"), "requests");
    vec![
        ("central-call-trust", CentralCall::Trust),
        ("central-call-device", CentralCall::Device(k.se_id())),
        (
            "central-call-enrol",
            CentralCall::Enrol(k.maker_certificate()),
        ),
        (
            "central-call-set-id-digest",
            CentralCall::SetIdDigest(k.se_id(), ID_DIGEST),
        ),
        ("central-call-id-digest", CentralCall::IdDigest(k.se_id())),
        (
            "central-call-call",
            CentralCall::Call {
                op: OP,
                reply_key: REPLY_KEY,
                request: pay,
            },
        ),
        ("central-call-inbox", CentralCall::Inbox),
        ("central-call-ack-inbox", CentralCall::AckInbox(vec![OP])),
        (
            "central-call-settlement-balance",
            CentralCall::SettlementBalance,
        ),
    ]
}

/// An interbank credit and a mint, as the inbox lists them.
pub fn inbox_entries() -> Vec<(&'static str, InboxEntry)> {
    vec![
        (
            "inbox-entry",
            InboxEntry {
                op: OP,
                account: Some("bob".into()),
                amount: 250,
                from_dcp: 1,
            },
        ),
        (
            "inbox-entry-mint",
            InboxEntry {
                op: tagged_hash(b"tally/v1/mint", &[&2u32.to_be_bytes(), b"m1"]),
                account: None,
                amount: 100_000,
                from_dcp: 0,
            },
        ),
    ]
}

/// The version-2 result of the vectors: every field non-empty (no request
/// produces this combination; it shows the encoding of each).
pub fn settlement_result(k: &WireKeys) -> SettlementResult {
    SettlementResult {
        op: OP,
        settled: 1,
        refused: 1,
        value: 1000,
        double_spends: 0,
        issues: vec![k.issue(2, 1000)],
        balance: 0,
        transfer: Some(TRANSFER_ID),
        deliveries: vec![(STRANDED_ID, 250), (Hash32([0xa7; 32]), 40)],
    }
}

/// Every §10 vector, in SPEC.md order: (name, bytes).
pub fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    let k = WireKeys::new();
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for (n, c) in calls(&k) {
        out.push((n, c.to_cbor()));
    }
    for (n, r) in requests(&k) {
        out.push((n, r.to_cbor()));
    }
    out.push(("central-trust", k.trust().to_cbor()));
    for (n, e) in inbox_entries() {
        out.push((n, e.to_cbor()));
    }
    out.push((
        "settlement-result-v2",
        sign_result(&settlement_result(&k), &*k.settlement),
    ));
    out
}

// ---- central_objects -----------------------------------------------------------

/// Decoders of the `central_objects` target, selected by the first byte
/// (mod this count).
pub const CENTRAL_OBJECTS: [&str; 15] = [
    "CentralCall",
    "CentralRequest",
    "CentralTrust",
    "InboxEntry",
    "reply::trust",
    "reply::device",
    "reply::entry",
    "reply::unit",
    "reply::id_digest",
    "reply::signed",
    "reply::inbox",
    "reply::balance",
    "monitoring::fetch",
    "monitoring::ack",
    "outbox::body",
];

/// The selector byte of `central_objects` for decoder `name`.
pub fn central_object_selector(name: &str) -> u8 {
    let i = CENTRAL_OBJECTS.iter().position(|n| *n == name);
    must(i.ok_or(name), "unknown decoder") as u8
}

fn round_trip<T: Cbor + Debug>(bytes: &[u8], what: &str) {
    if let Ok(v) = T::from_cbor(bytes) {
        assert_eq!(
            v.to_cbor(),
            bytes,
            "{what}: accepted input does not re-encode"
        );
    }
}

fn same<T: Debug>(
    got: Result<T, tally_core::CodecError>,
    bytes: &[u8],
    encode: impl Fn(&T, &mut Writer),
    what: &str,
) {
    if let Ok(v) = got {
        let mut w = Writer::new();
        encode(&v, &mut w);
        assert_eq!(
            w.into_bytes(),
            bytes,
            "{what}: accepted {v:?}, which does not re-encode to the input"
        );
    }
}

/// `central_objects`: selector byte + bytes. Every decoder of the central
/// wire never panics, and what it accepts re-encodes to exactly the input
/// (canonical CBOR, §2.1): the `reply` decoders included, each against
/// the writer `answer` uses.
pub fn check_central_objects(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    match usize::from(sel) % CENTRAL_OBJECTS.len() {
        0 => round_trip::<CentralCall>(bytes, "CentralCall"),
        1 => round_trip::<CentralRequest>(bytes, "CentralRequest"),
        2 => round_trip::<CentralTrust>(bytes, "CentralTrust"),
        3 => {
            round_trip::<InboxEntry>(bytes, "InboxEntry");
            if let Ok(e) = InboxEntry::from_cbor(bytes) {
                assert_ne!(
                    e.account.as_deref(),
                    Some(""),
                    "empty account decoded as Some"
                );
            }
        }
        4 => same(
            reply::trust(bytes),
            bytes,
            |v, w| v.write(w),
            "reply::trust",
        ),
        5 => same(
            reply::device(bytes),
            bytes,
            |v: &Option<SeEntry>, w| match v {
                Some(e) => {
                    w.array(1);
                    write_entry(w, e);
                }
                None => w.array(0),
            },
            "reply::device",
        ),
        6 => same(
            reply::entry(bytes),
            bytes,
            |v, w| write_entry(w, v),
            "reply::entry",
        ),
        7 => same(reply::unit(bytes), bytes, |_, w| w.array(0), "reply::unit"),
        8 => same(
            reply::id_digest(bytes),
            bytes,
            |v: &Option<Hash32>, w| match v {
                Some(d) => {
                    w.array(1);
                    d.write(w);
                }
                None => w.array(0),
            },
            "reply::id_digest",
        ),
        9 => same(
            reply::signed(bytes),
            bytes,
            |v: &Vec<u8>, w| w.bytes(v),
            "reply::signed",
        ),
        10 => same(
            reply::inbox(bytes),
            bytes,
            |v: &Vec<InboxEntry>, w| {
                w.array(v.len());
                for e in v {
                    e.write(w);
                }
            },
            "reply::inbox",
        ),
        11 => same(
            reply::balance(bytes),
            bytes,
            |v: &i64, w| w.u64(*v as u64),
            "reply::balance",
        ),
        // The MDS's pull of the outbox (tally_central::monitoring).
        12 => {
            if let Ok((epoch, rows)) = crate::monitoring::decode_fetch(bytes) {
                assert_eq!(
                    crate::monitoring::encode_fetch(epoch, &rows),
                    bytes,
                    "monitoring::decode_fetch accepted a non-canonical encoding"
                );
            }
        }
        13 => {
            if let Ok(ops) = crate::monitoring::decode_ack(bytes) {
                assert_eq!(
                    crate::monitoring::encode_ack(&ops),
                    bytes,
                    "monitoring::decode_ack accepted a non-canonical encoding"
                );
            }
        }
        // An MDS outbox row as stored (records by reference or in full)
        // and as the MDS takes it (records in full only).
        _ => check_outbox_body(bytes),
    }
}

/// The outbox row decoders: what decodes re-encodes to exactly the input;
/// a row the MDS takes has no reference; a row whose references cannot be
/// resolved is passed on unchanged.
fn check_outbox_body(bytes: &[u8]) {
    use crate::outbox::{
        OutboxRecord, decode_ingest, decode_outbox, encode_ingest, encode_outbox, expand_row,
    };
    let stored = decode_outbox(bytes);
    if let Ok(entries) = &stored {
        assert_eq!(
            encode_outbox(entries),
            bytes,
            "outbox::decode_outbox accepted a non-canonical encoding"
        );
    }
    if let Ok(records) = decode_ingest(bytes) {
        assert_eq!(
            encode_ingest(&records),
            bytes,
            "outbox::decode_ingest accepted a non-canonical encoding"
        );
        assert!(
            stored.as_ref().is_ok_and(|e| e
                .iter()
                .all(|e| matches!(e.record, OutboxRecord::Record(_)))),
            "the MDS took a row holding a reference"
        );
    }
    let empty = std::collections::BTreeMap::new();
    assert_eq!(
        expand_row(bytes, &empty, &empty),
        bytes,
        "a row was changed without the records it names"
    );
}

// ---- settlement_result ---------------------------------------------------------

/// The fixed keys and op `settlement_result` opens results with.
pub struct ResultFixture {
    pub settlement: PublicKey,
    pub root: PublicKey,
    pub op: Hash32,
}

impl ResultFixture {
    pub fn new() -> ResultFixture {
        let k = WireKeys::new();
        ResultFixture {
            settlement: k.settlement.public_key(),
            root: k.root.public_key(),
            op: OP,
        }
    }
}

impl Default for ResultFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// The body of a result of `version` (1 or 2), written from the SPEC
/// (§9.6), independently of `SettlementResult`'s own writer.
pub fn result_body(res: &SettlementResult, version: u8) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(if version == 1 { 9 } else { 10 });
    w.u64(u64::from(version));
    res.op.write(&mut w);
    w.u64(u64::from(res.settled));
    w.u64(u64::from(res.refused));
    w.u64(res.value);
    w.u64(u64::from(res.double_spends));
    w.array(res.issues.len());
    for i in &res.issues {
        i.write(&mut w);
    }
    w.u64(res.balance);
    w.bytes(res.transfer.as_ref().map(|t| &t.0[..]).unwrap_or(&[]));
    if version == 2 {
        w.array(res.deliveries.len());
        for (t, a) in &res.deliveries {
            w.array(2);
            t.write(&mut w);
            w.u64(*a);
        }
    }
    w.into_bytes()
}

/// `settlement_result`: `SettlementResult::open` under the fixed keys and
/// op never panics; what it accepts answers that op, is exactly the
/// canonical encoding of what it returned (body re-encoded from the SPEC,
/// plus the signature), and that signature verifies over the body's
/// tagged hash under the settlement key or the root. Version 1 has no
/// deliveries.
pub fn check_settlement_result(f: &ResultFixture, data: &[u8]) {
    let Ok(res) = SettlementResult::open(data, &f.settlement, &f.root, &f.op) else {
        return;
    };
    assert_eq!(res.op, f.op, "a result for another op was accepted");
    let version = match data.first() {
        Some(0x8a) => 1,
        Some(0x8b) => 2,
        other => panic!("accepted a result whose head is {other:?}"),
    };
    if version == 1 {
        assert!(res.deliveries.is_empty(), "version 1 with deliveries");
    }
    let body = result_body(&res, version);
    // The signature is the last field: bstr of 65 = 58 41 ‖ 65 bytes.
    assert!(data.len() >= 67, "too short to hold a signature");
    let (head, sig_bytes) = data.split_at(data.len() - 67);
    let sig = must(Signature::from_cbor(sig_bytes), "the signature field");
    assert_eq!(&head[1..], &body[1..], "accepted a non-canonical result");
    let msg = tagged_hash(b"tally/v1/settlement-result", &[&body]);
    assert!(
        tally_core::crypto::verify(&f.settlement, &msg.0, &sig).is_ok()
            || tally_core::crypto::verify(&f.root, &msg.0, &sig).is_ok(),
        "accepted a result whose signature does not verify over the SPEC's message"
    );
}

// ---- central_answer ------------------------------------------------------------

/// Money minted into each DCP's settlement account of the answer fixture.
pub const FIXTURE_MINT: u64 = 1_000_000;

/// An in-process central bank with the vector keys (DCPs 1 and 2, the
/// maker trusted, each DCP minted [`FIXTURE_MINT`]).
pub struct CentralFixture {
    pub bank: CentralBank,
    pub keys: WireKeys,
}

impl CentralFixture {
    pub fn new() -> CentralFixture {
        let keys = WireKeys::new();
        let bank = must(
            CentralBank::open(
                must(Store::sqlite_memory(), "store"),
                must(Store::sqlite_memory(), "MDS store"),
                keys.central(),
                development_escrow_key(),
                None,
                &keys.dcps(),
            ),
            "central bank opens",
        );
        must(bank.trust_manufacturer(keys.maker.public()), "maker");
        for dcp in [1, 2] {
            must(
                bank.mint(dcp, &format!("fixture-{dcp}"), FIXTURE_MINT),
                "mint",
            );
        }
        CentralFixture { bank, keys }
    }
}

impl Default for CentralFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// What a refused call must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    invariant: Invariant,
    balances: [i64; 2],
    inboxes: [Vec<InboxEntry>; 2],
    devices: Vec<SeEntry>,
    id_digest: Option<Hash32>,
}

fn snapshot(f: &CentralFixture) -> Snapshot {
    let b = &f.bank;
    let se = f.keys.se_id();
    use crate::Central;
    Snapshot {
        invariant: must(b.invariant(), "invariant"),
        balances: [
            must(b.dcp_balance(1), "balance"),
            must(b.dcp_balance(2), "balance"),
        ],
        inboxes: [must(b.inbox(1), "inbox"), must(b.inbox(2), "inbox")],
        devices: must(b.devices(), "devices"),
        id_digest: b.id_digest(1, &se).unwrap_or(None),
    }
}

/// The DCP an input of `central_answer` calls as: its first byte mod 4
/// (0, 1 → DCP 1; 2 → DCP 2; 3 → DCP 3, which the bank does not trust).
pub fn answer_caller(selector: u8) -> u32 {
    match selector % 4 {
        0 | 1 => 1,
        2 => 2,
        _ => 3,
    }
}

/// `central_answer`: caller byte + body. `crate::central::answer` on
/// the fixture's bank never panics. An answer decodes with the `reply`
/// decoder of its method (a signed result opens under the trust bundle's
/// settlement key for the call's op), and the ledger invariant holds. A
/// refusal has a registered code with a status the registry allows, and
/// changes nothing: the invariant, both settlement accounts, both inboxes,
/// the directory and the SE's identity digest are as before.
pub fn check_central_answer(f: &CentralFixture, data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let dcp = answer_caller(sel);
    let before = snapshot(f);
    match answer(&f.bank, dcp, body) {
        Ok(bytes) => {
            let call = must(
                CentralCall::from_cbor(body),
                "answered a call that does not decode",
            );
            check_reply(f, &call, &bytes);
            let inv = must(f.bank.invariant(), "invariant");
            assert!(inv.holds(), "after {call:?}: {inv:?}");
        }
        Err(e) => {
            check_refusal(&e);
            assert_eq!(snapshot(f), before, "refused ({e}) but changed state");
        }
    }
}

fn check_reply(f: &CentralFixture, call: &CentralCall, bytes: &[u8]) {
    let what = format!("answer to {call:?}");
    match call {
        CentralCall::Trust => {
            let t = must(reply::trust(bytes), &what);
            assert_eq!(t.root, f.keys.root.public_key());
            must(
                t.settlement_key.verify(&t.root),
                "settlement key under the root",
            );
        }
        CentralCall::Device(_) => {
            must(reply::device(bytes), &what);
        }
        CentralCall::Enrol(m) => {
            let e = must(reply::entry(bytes), &what);
            assert_eq!(e.se_id, m.attestation_key.id());
        }
        CentralCall::SetIdDigest(..) | CentralCall::AckInbox(_) => must(reply::unit(bytes), &what),
        CentralCall::IdDigest(_) => {
            must(reply::id_digest(bytes), &what);
        }
        CentralCall::Call { op, .. } => {
            let signed = must(reply::signed(bytes), &what);
            let trust = f.keys.trust();
            must(
                SettlementResult::open(&signed, &trust.settlement_key.key, &trust.root, op),
                &what,
            );
        }
        CentralCall::Inbox => {
            must(reply::inbox(bytes), &what);
        }
        CentralCall::SettlementBalance => {
            let b = must(reply::balance(bytes), &what);
            assert!(b >= 0);
        }
    }
}

fn check_refusal(e: &BackofficeError) {
    let code = e.code();
    let c = tally_codes::REGISTRY.iter().find(|c| c.code == code);
    let c = must(c.ok_or(code), "refused with an unregistered code");
    assert_eq!(
        c.state,
        tally_codes::State::Used,
        "refused with reserved code {code}"
    );
    let status = e.status();
    assert!(
        c.http.contains(&status),
        "code {code} ({}) answered with status {status}, registry allows {:?}: {e}",
        c.name,
        c.http
    );
}

// ---- seeds ---------------------------------------------------------------------

/// One seed input of a fuzz target.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Calls the answer fixture executes (they succeed on a fresh fixture):
/// the read-only methods, a load, an empty sync, an interbank payment and
/// an enrolment of the vector SE.
pub fn answer_seeds(k: &WireKeys) -> Vec<(&'static str, CentralCall)> {
    let call = |n: u8, request| CentralCall::Call {
        op: Hash32([n; 32]),
        reply_key: Hash32([n ^ 0xff; 32]),
        request,
    };
    vec![
        ("trust", CentralCall::Trust),
        ("enrol", CentralCall::Enrol(k.maker_certificate())),
        ("device", CentralCall::Device(k.se_id())),
        (
            "load",
            call(
                0x10,
                CentralRequest::Load {
                    issue: k.issue(10, 500),
                    class: device_class::PHONE,
                },
            ),
        ),
        (
            "sync_empty",
            call(
                0x11,
                CentralRequest::Sync {
                    sealed: k.sealed_empty_upload(),
                    reports: reports_digest(&[]),
                    mailbox: MAILBOX,
                    last_sync: 0,
                },
            ),
        ),
        (
            "pay",
            call(
                0x12,
                CentralRequest::Pay {
                    to_dcp: 2,
                    to_account: "bob".into(),
                    amount: 250,
                },
            ),
        ),
        ("inbox", CentralCall::Inbox),
        ("ack_inbox", CentralCall::AckInbox(vec![OP])),
        ("balance", CentralCall::SettlementBalance),
    ]
}

/// The seed corpus: every §10 vector for `central_objects` (under its
/// decoder's selector), the signed result for `settlement_result`, and for
/// `central_answer` every call vector as DCP 1, the executable calls of
/// [`answer_seeds`] as DCP 1 and DCP 2, and a foreign caller.
pub fn seed_corpus() -> Vec<Seed> {
    let k = WireKeys::new();
    let mut out = Vec::new();
    let mut push = |target: &'static str, name: String, bytes: Vec<u8>| {
        out.push(Seed {
            target,
            name,
            bytes,
        })
    };
    for (name, bytes) in vectors() {
        let decoder = match name {
            n if n.starts_with("central-call-") => "CentralCall",
            n if n.starts_with("central-request-") => "CentralRequest",
            "central-trust" => "CentralTrust",
            n if n.starts_with("inbox-entry") => "InboxEntry",
            _ => "reply::signed",
        };
        let mut b = vec![central_object_selector(decoder)];
        if decoder == "reply::signed" {
            let mut w = Writer::new();
            w.bytes(&bytes);
            b.extend(w.into_bytes());
            push("settlement_result", format!("{name}.bin"), bytes.clone());
        } else {
            b.extend(&bytes);
        }
        push("central_objects", format!("{name}.bin"), b);
        if name.starts_with("central-call-") {
            let mut b = vec![0];
            b.extend(&bytes);
            push("central_answer", format!("vector-{name}.bin"), b);
        }
    }
    // The reply shapes, as `answer` writes them.
    let trust = k.trust();
    let entry = SeEntry {
        se_id: k.se_id(),
        attestation_key: k.se.public(),
        device_class: device_class::PHONE,
        maker: MAKER_NAME.into(),
        status: tally_directory::SeStatus::Active,
    };
    let replies: Vec<(&str, Vec<u8>)> = {
        let mut v = Vec::new();
        v.push(("reply::trust", trust.to_cbor()));
        let mut w = Writer::new();
        w.array(1);
        write_entry(&mut w, &entry);
        v.push(("reply::device", w.into_bytes()));
        let mut w = Writer::new();
        write_entry(&mut w, &entry);
        v.push(("reply::entry", w.into_bytes()));
        v.push(("reply::unit", vec![0x80]));
        let mut w = Writer::new();
        w.array(1);
        ID_DIGEST.write(&mut w);
        v.push(("reply::id_digest", w.into_bytes()));
        let mut w = Writer::new();
        let entries = inbox_entries();
        w.array(entries.len());
        for (_, e) in &entries {
            e.write(&mut w);
        }
        v.push(("reply::inbox", w.into_bytes()));
        let mut w = Writer::new();
        w.u64(FIXTURE_MINT);
        v.push(("reply::balance", w.into_bytes()));
        let rows = [crate::monitoring::OutboxRow {
            op: vec![7; 32],
            body: vec![0x80],
        }];
        v.push((
            "monitoring::fetch",
            crate::monitoring::encode_fetch(3, &rows),
        ));
        v.push((
            "monitoring::ack",
            crate::monitoring::encode_ack(&[vec![7; 32]]),
        ));
        // A sync request's stored row: an Issue by reference, a refused
        // transfer in full.
        let issue = k.issue(1, 1000);
        let entry = |record| crate::outbox::OutboxEntry {
            record,
            epoch: 3,
            verdict: tally_mds::Verdict::Verified,
            output_classes: vec![device_class::PHONE],
            offline_epochs: Some(2),
            unacknowledged: true,
            values: None,
        };
        v.push((
            "outbox::body",
            crate::outbox::encode_outbox(&[
                entry(crate::outbox::OutboxRecord::Stored {
                    issue: true,
                    id: issue.id(),
                }),
                entry(crate::outbox::OutboxRecord::Record(
                    tally_core::Record::Issue(issue),
                )),
            ]),
        ));
        v
    };
    for (decoder, bytes) in replies {
        let mut b = vec![central_object_selector(decoder)];
        b.extend(bytes);
        let name = decoder.replace("::", "_");
        push("central_objects", format!("{name}.bin"), b);
    }
    for (name, call) in answer_seeds(&k) {
        for (sel, who) in [(0u8, "dcp1"), (2, "dcp2")] {
            let mut b = vec![sel];
            b.extend(call.to_cbor());
            push("central_answer", format!("{who}-{name}.bin"), b);
        }
    }
    let mut b = vec![3u8];
    b.extend(CentralCall::Inbox.to_cbor());
    push("central_answer", "stranger-inbox.bin".into(), b);
    out
}
