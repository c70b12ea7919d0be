//! Oracles of the fuzz targets in `fuzz/`, shared with their replay test
//! (`tests/fuzz_corpus.rs`), and the deterministic fixtures that the
//! targets, the seed-corpus generator, `examples/wire_sizes.rs` and the
//! benchmarks build on. Test support only (feature `testkit`).
//!
//! Each `check_*` function is the whole body of one fuzz target: any input
//! is acceptable, and a panic is a bug. Inputs that carry several APDUs are
//! a sequence of frames `[length: u16 big-endian][bytes]` ([`frames`]); a
//! length past the end of the input takes what is left.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Debug;

use tally_core::codec::Cbor;
use tally_core::crypto::{SecretKey, tagged_hash};
use tally_core::dcp::{DeviceRequest, DeviceResponse, Registration, SyncUpload};
use tally_core::escrow::EscrowCiphertext;
use tally_core::policy::device_class::{DCP, PHONE};
use tally_core::protocol::PACKAGE_CERTS_MAX;
use tally_core::sealed::{SealedKind, SealingKey};
use tally_core::testkit::{Scheme, TestEntropy, key};
use tally_core::verify::{BoundedCertCache, NoCache, verify_package_bytes};
use tally_core::{
    Amount, DcpCertificate, Expected, Issue, Package, Policy, PseudonymCertificate, Receipt,
    Record, Request, RevocationList, Suite, SyncGrant, Transfer, TrustStore, VerifyParams,
};
use tally_se::apdu::{
    ApduError, AssembledCommand, CHAINING_BIT, ChainAssembler, Command, Response, ResponseQueue,
    chunk_command, collect_response, sw,
};
use tally_se::dispatch::{AID, CLA, Card, encode_u64, ins, tag};
use tally_se::state::State;
use tally_se::storage::{MemStorage, Storage};
use tally_se::{Applet, Sealing};

use crate::link::SeLink;
use crate::session::pay_offline;
use crate::testkit::{TEST_STORAGE_BYTES, TestCard, load, provision};

/// Value every fixture payer is loaded with.
pub const LOAD_VALUE: u64 = 1_000;
/// Amount of the fixture request (the fixed expectation of `package_verify`).
pub const PAYMENT_AMOUNT: u64 = 250;
/// History budget of the testkit's card, phone and IoT tiers.
pub const HISTORY_RECORDS_MAX: usize = 32;
/// Frames of one input that the multi-APDU targets look at.
pub const FRAMES_MAX: usize = 64;
/// Chain assembly limit of the `apdu_parse` target.
pub const CHAIN_DATA_MAX: usize = 4096;

fn must<T, E: Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

// ---- framing ---------------------------------------------------------------

/// Splits an input into frames `[len: u16 BE][bytes]`.
pub fn frames(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    core::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let n = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (frame, after) = tail.split_at(n);
        rest = after;
        Some(frame)
    })
}

/// Appends one frame (inputs are built by the seed generator, so a frame
/// over 65 535 bytes is a generator bug).
pub fn push_frame(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = must(u16::try_from(bytes.len()), "frame longer than 65535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

// ---- cbor_objects ----------------------------------------------------------

/// Wire objects of the `cbor_objects` target; the first input byte (mod
/// the count) selects one, the rest is its encoding.
pub const CBOR_KINDS: [&str; 24] = [
    "issue",
    "transfer",
    "record",
    "package",
    "request",
    "receipt",
    "dcp_certificate",
    "pseudonym_certificate",
    "policy",
    "revocation_list",
    "sync_grant",
    "se_state",
    "device_request",
    "device_response",
    "sync_upload",
    "registration",
    "sealing_key",
    "escrow_ciphertext",
    "sealed_upload",
    "redemption_order",
    "maker_certificate",
    "closed_request",
    "role_revocations",
    "request_params",
];

/// `cbor_objects`: decoding never panics, and whatever decodes re-encodes
/// to exactly the input (one canonical encoding per value).
pub fn check_cbor_objects(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match usize::from(selector) % CBOR_KINDS.len() {
        0 => round_trip::<Issue>(bytes),
        1 => round_trip::<Transfer>(bytes),
        2 => round_trip::<Record>(bytes),
        3 => round_trip::<Package>(bytes),
        4 => round_trip::<Request>(bytes),
        5 => round_trip::<Receipt>(bytes),
        6 => round_trip::<DcpCertificate>(bytes),
        7 => round_trip::<PseudonymCertificate>(bytes),
        8 => round_trip::<Policy>(bytes),
        9 => round_trip::<RevocationList>(bytes),
        10 => round_trip::<SyncGrant>(bytes),
        11 => round_trip::<State>(bytes),
        12 => round_trip::<DeviceRequest>(bytes),
        13 => round_trip::<DeviceResponse>(bytes),
        14 => round_trip::<SyncUpload>(bytes),
        15 => round_trip::<Registration>(bytes),
        16 => round_trip::<SealingKey>(bytes),
        17 => {
            if let Ok(c) = EscrowCiphertext::from_bytes(bytes) {
                assert!(c.to_bytes() == bytes, "an escrow re-encodes to other bytes");
            }
        }
        18 => {
            // Settlement opening hostile sealed bytes: a typed error, never
            // a panic, and never plaintext from bytes it did not seal.
            let key = tally_core::sealed::OpeningKey::from_seed(&[7; 32]);
            for kind in [SealedKind::SyncUpload, SealedKind::Redemption] {
                let _ = key.open(kind, bytes);
            }
        }
        19 => round_trip::<tally_core::dcp::RedemptionOrder>(bytes),
        20 => round_trip::<tally_core::dcp::MakerCertificate>(bytes),
        21 => round_trip::<tally_core::dcp::RequestReport>(bytes),
        22 => {
            round_trip::<tally_core::policy::RoleRevocations>(bytes);
            // Checking hostile bytes: a typed refusal, never a panic.
            if let Ok(l) = tally_core::policy::RoleRevocations::from_cbor(bytes)
                && let Some(root) = SecretKey::from_seed(Suite::Ed25519, &[3; 32])
            {
                let _ = l.check(&root.public(), Some(l.serial ^ 1), l.issued);
            }
        }
        _ => {
            // BUILD REQUEST's command data: the next byte is the kind.
            let Some((&kind, data)) = bytes.split_first() else {
                return;
            };
            if let Ok(p) = tally_se::RequestParams::decode(kind, data) {
                assert!(
                    p.encode() == data,
                    "request parameters re-encode to other bytes"
                );
                assert_eq!(p.kind() as u8, kind);
            }
        }
    }
}

fn round_trip<T: Cbor + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(value) = T::from_cbor(bytes) {
        let again = value.to_cbor();
        assert!(again == bytes, "a decoded value re-encodes to other bytes");
        assert_eq!(T::from_cbor(&again).ok().as_ref(), Some(&value));
    }
}

// ---- package_verify ---------------------------------------------------------

/// The payee side of one fixed payment: the testkit scheme's trust store and
/// a request whose expectation every package seed satisfies.
pub struct PaymentFixture {
    pub scheme: Scheme,
    pub trust: TrustStore,
    pub params: VerifyParams,
    /// The payee's pseudonym key (signs receipts).
    pub payee: SecretKey,
    pub request: Request,
    pub expected: Expected,
}

impl PaymentFixture {
    pub fn new() -> Self {
        let scheme = Scheme::new(Suite::Ed25519);
        let payee = key(Suite::Ed25519, b"fuzz/payee");
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&tagged_hash(b"tally/v1/fuzz-nonce", &[]).0[..16]);
        let request = Request::sign(
            &payee,
            Amount(PAYMENT_AMOUNT),
            nonce,
            scheme.certify(payee.public(), PHONE, 0),
            scheme.epoch,
        );
        let expected = Expected {
            payee: payee.public(),
            amount: request.amount,
            nonce,
            stream: None,
        };
        PaymentFixture {
            trust: scheme.trust(),
            params: scheme.params(HISTORY_RECORDS_MAX),
            scheme,
            payee,
            request,
            expected,
        }
    }

    /// The payee's receipt for `package` (`None` if it does not decode).
    pub fn receipt(&self, package: &[u8]) -> Option<Receipt> {
        let p = Package::from_cbor(package).ok()?;
        Some(Receipt::sign(&self.payee, p.transfer.id()))
    }
}

impl Default for PaymentFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// `package_verify`: decoding plus verification never panics; an accepted
/// package pays exactly what was asked, re-encodes to the input, and is
/// accepted again by a verifier whose certificate cache it warmed.
pub fn check_package_verify(fx: &PaymentFixture, data: &[u8]) {
    let cold = verify_package_bytes(data, &fx.expected, &fx.trust, fx.params, &mut NoCache);
    let Ok(v) = cold else {
        return;
    };
    let (outpoint, output) = v.payment();
    assert_eq!(output.owner, fx.expected.payee, "accepted a wrong payee");
    assert_eq!(output.value, fx.expected.amount, "accepted a wrong amount");
    assert_eq!(v.package().transfer.nonce, fx.expected.nonce, "wrong nonce");
    assert_eq!(outpoint.record, v.transfer_id());
    assert_eq!(outpoint.index, 0);
    assert!(v.package().ancestry.len() <= fx.params.history_records_max);
    assert!(
        v.package().to_cbor() == data,
        "accepted non-canonical bytes"
    );

    let mut cache = BoundedCertCache::new(PACKAGE_CERTS_MAX);
    let first = verify_package_bytes(data, &fx.expected, &fx.trust, fx.params, &mut cache);
    let first = must(first, "accepted without a cache, refused with an empty one");
    let warm = verify_package_bytes(data, &fx.expected, &fx.trust, fx.params, &mut cache);
    let warm = must(warm, "accepted cold, refused with a warm certificate cache");
    assert_eq!(warm.transfer_id(), first.transfer_id());
    assert_eq!(
        first
            .signature_checks()
            .checked_sub(warm.signature_checks()),
        Some(first.package().certificates.len()),
        "a warm cache skips exactly the certificate signatures"
    );
}

// ---- apdu_parse -------------------------------------------------------------

/// `apdu_parse`: the whole input and each frame are parsed as a command and
/// as a response; parsed values round-trip; the parsed commands drive a
/// [`ChainAssembler`] in step with a model of ISO 7816-4 chaining; every
/// assembled command survives re-chunking; every response survives
/// pagination through a [`ResponseQueue`].
pub fn check_apdu_parse(data: &[u8]) {
    check_command_bytes(data);
    check_response_bytes(data);
    let mut assembler = ChainAssembler::new(CHAIN_DATA_MAX);
    let mut model = ChainModel::default();
    for frame in frames(data).take(FRAMES_MAX) {
        check_response_bytes(frame);
        let Ok(cmd) = Command::parse(frame) else {
            continue;
        };
        check_command(&cmd, frame.len());
        let got = assembler.push(&cmd);
        let want = model.push(&cmd);
        assert_eq!(got, want, "chain assembler disagrees with the model");
        assert_eq!(assembler.in_progress(), model.active.is_some());
        assert_eq!(assembler.assembled_len(), model.data.len());
        if let Ok(Some(whole)) = got {
            check_rechunk(&whole);
        }
    }
}

fn check_command_bytes(bytes: &[u8]) {
    if let Ok(cmd) = Command::parse(bytes) {
        check_command(&cmd, bytes.len());
    }
}

fn check_command(cmd: &Command<'_>, input_len: usize) {
    let enc = must(cmd.to_vec(), "a parsed command does not encode");
    assert_eq!(cmd.encoded_len(), Ok(enc.len()));
    // Short form whenever it suffices: never longer than what was parsed.
    assert!(
        enc.len() <= input_len,
        "re-encoding is longer than the input"
    );
    assert_eq!(Command::parse(&enc), Ok(*cmd), "command round trip");
}

fn check_response_bytes(bytes: &[u8]) {
    let Ok(r) = Response::parse(bytes) else {
        return;
    };
    assert!(r.to_vec() == bytes, "response round trip");
    let le = usize::from(r.sw2());
    let mut queue = ResponseQueue::new();
    let mut piece = queue.start(r.data.clone(), le);
    let mut collected = piece.data.clone();
    while sw::is_bytes_remaining(piece.sw) {
        piece = queue.get_response(le);
        assert!(!piece.data.is_empty(), "61xx without progress");
        collected.extend_from_slice(&piece.data);
    }
    assert_eq!(piece.sw, sw::OK);
    assert!(collected == r.data, "pagination lost or changed bytes");
}

fn check_rechunk(whole: &AssembledCommand) {
    for block in [16, 255] {
        let chain = chunk_command(
            whole.cla,
            whole.ins,
            whole.p1,
            whole.p2,
            &whole.data,
            block,
            whole.le,
        );
        let chain = must(chain, "an assembled command does not re-chunk");
        let mut assembler = ChainAssembler::new(CHAIN_DATA_MAX);
        let mut out = None;
        for (i, apdu) in chain.iter().enumerate() {
            let cmd = must(
                Command::parse(apdu),
                "chunk_command made an unparsable APDU",
            );
            let r = must(assembler.push(&cmd), "re-chunked chain refused");
            assert_eq!(r.is_some(), i + 1 == chain.len());
            out = r;
        }
        assert_eq!(out.as_ref(), Some(whole), "re-chunked command differs");
    }
}

/// ISO 7816-4 §5.4.1 command chaining, written from the standard: blocks
/// of one chain share CLA (but b5), INS, P1, P2; b5 set means more follow.
#[derive(Default)]
struct ChainModel {
    active: Option<[u8; 4]>,
    data: Vec<u8>,
}

impl ChainModel {
    fn push(&mut self, c: &Command<'_>) -> Result<Option<AssembledCommand>, ApduError> {
        let key = [c.cla & !CHAINING_BIT, c.ins, c.p1, c.p2];
        if self.active.is_some_and(|a| a != key) {
            *self = ChainModel::default();
            return Err(ApduError::ChainMismatch);
        }
        if self.data.len() + c.data.len() > CHAIN_DATA_MAX {
            *self = ChainModel::default();
            return Err(ApduError::ChainTooLong);
        }
        self.data.extend_from_slice(c.data);
        if c.cla & CHAINING_BIT != 0 {
            self.active = Some(key);
            return Ok(None);
        }
        self.active = None;
        Ok(Some(AssembledCommand {
            cla: key[0],
            ins: key[1],
            p1: key[2],
            p2: key[3],
            data: core::mem::take(&mut self.data),
            le: c.le,
        }))
    }
}

// ---- se_dispatch ------------------------------------------------------------

/// Boots a fixture SE from `storage` (personalized or blank).
pub fn boot<S: Storage>(storage: S, sealing: Sealing, label: &[u8]) -> Applet<S, TestEntropy> {
    must(
        Applet::boot(storage, sealing, TestEntropy::new(label)),
        "fixture SE failed to boot",
    )
}

/// A phone SE on `storage`, provisioned (4 certified keys) and loaded with
/// [`LOAD_VALUE`] in one token.
pub fn loaded_payer<S: Storage>(
    scheme: &mut Scheme,
    storage: S,
    sealing: Sealing,
    label: &[u8],
) -> Applet<S, TestEntropy> {
    let mut se = boot(storage, sealing, label);
    must(provision(&mut se, scheme, PHONE, 4), "provision");
    must(load(&mut se, scheme, PHONE, LOAD_VALUE), "load");
    se
}

/// A phone SE on `storage`, provisioned but empty.
pub fn empty_payee<S: Storage>(
    scheme: &Scheme,
    storage: S,
    sealing: Sealing,
    label: &[u8],
) -> Applet<S, TestEntropy> {
    let mut se = boot(storage, sealing, label);
    must(provision(&mut se, scheme, PHONE, 4), "provision");
    se
}

/// Passes the whole loaded value back and forth between `a` (the loaded
/// one) and `b` until one holds a token whose ancestry has `records`
/// records (the Issue and `records - 1` transfers), and returns that SE.
/// Payers sync after each hop so their payment logs stay small.
pub fn grow_lineage<S: Storage>(
    scheme: &Scheme,
    mut a: Applet<S, TestEntropy>,
    mut b: Applet<S, TestEntropy>,
    records: usize,
) -> Applet<S, TestEntropy> {
    for hop in 1..records {
        let (payer, payee) = if hop % 2 == 1 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        must(pay_offline(payer, payee, Amount(LOAD_VALUE)), "chain hop");
        let se_id = must(payer.se_id(), "se id");
        let grant = scheme.sync_grant(se_id, hop as u64 + 1);
        must(SeLink::sync(payer, &grant), "sync");
    }
    if records % 2 == 1 { a } else { b }
}

/// A package paying the fixture request whose ancestry holds `records`
/// records, from SEs in memory.
pub fn package_with_records(fx: &PaymentFixture, records: usize) -> Vec<u8> {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let label = format!("fuzz/chain-{records}");
    let a = loaded_payer(
        &mut scheme,
        MemStorage::new(TEST_STORAGE_BYTES),
        Sealing::None,
        format!("{label}/a").as_bytes(),
    );
    let b = empty_payee(
        &scheme,
        MemStorage::new(TEST_STORAGE_BYTES),
        Sealing::None,
        format!("{label}/b").as_bytes(),
    );
    let mut holder = grow_lineage(&scheme, a, b, records);
    must(holder.pay(&fx.request), "final hop")
}

/// An SE image provisioned and loaded once, booted afresh for every input
/// of the `se_dispatch` target.
pub struct CardFixture {
    image: MemStorage,
    pub loaded: Amount,
}

impl CardFixture {
    pub fn new() -> Self {
        let mut scheme = Scheme::new(Suite::Ed25519);
        let se = loaded_payer(
            &mut scheme,
            MemStorage::new(TEST_STORAGE_BYTES),
            Sealing::None,
            b"fuzz/card",
        );
        CardFixture {
            image: se.into_storage(),
            loaded: Amount(LOAD_VALUE),
        }
    }

    /// The card after boot and SELECT. Its entropy differs from the one
    /// that provisioned it, so fresh keys and nonces never repeat old ones.
    pub fn boot(&self) -> TestCard {
        let mut card = Card::new(boot(self.image.clone(), Sealing::None, b"fuzz/card/run"));
        let r = card.transmit(&select_apdu());
        assert_eq!(r, [0x90, 0x00], "SELECT failed");
        card
    }
}

impl Default for CardFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// The stored image of a loaded card whose journal holds a base state and
/// a log of records (provision and load appended to it), for the
/// `se_journal` target.
pub struct JournalFixture {
    image: Vec<u8>,
    /// Bytes of slot 0 in use (commit record, base, log): where the
    /// input's patches land.
    span: usize,
    loaded: Amount,
    state: State,
    sequence: u64,
    records: u32,
}

impl JournalFixture {
    pub fn new() -> Self {
        let card = CardFixture::new();
        let image = card.image.as_bytes().to_vec();
        let (mut journal, base) = must(
            tally_se::storage::Journal::open(MemStorage::from_bytes(image.clone())),
            "fixture journal",
        );
        let base = must(base.ok_or(()), "a committed state");
        let records = must(journal.log_records(), "fixture log");
        assert!(records > 0, "the fixture's journal has a log");
        let span =
            tally_se::storage::HEADER_LEN + base.len() + must(journal.log_bytes(), "fixture log");
        let applet = boot(
            MemStorage::from_bytes(image.clone()),
            Sealing::None,
            b"fuzz/journal",
        );
        JournalFixture {
            image,
            span,
            loaded: card.loaded,
            state: applet.state().clone(),
            sequence: journal.sequence().unwrap_or(0),
            records,
        }
    }
}

impl Default for JournalFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// `se_journal`: the first byte picks the check.
///
/// * even: the card's stored image (base state and log) with the input's
///   patches `[offset: u16 BE][byte]…` XORed in (offsets modulo the part
///   of the slot in use). Boot never panics: it refuses with a typed
///   error, or comes up in a state whose value stays within what was
///   loaded, and a second boot of the same image comes up the same.
/// * odd: the rest is a log record's body (a state delta, SPEC-internal,
///   decision 0018, or a compact stream tick record, SPEC §4.10.3) applied to the card's state at the next place of its
///   log. It applies or is refused, never panics; a state it applies to
///   encodes and decodes back to itself.
pub fn check_se_journal(fx: &JournalFixture, data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        let mut st = fx.state.clone();
        if tally_se::state::apply_record(&mut st, rest, fx.sequence, fx.records).is_ok() {
            let bytes = st.to_cbor();
            let back = must(State::from_cbor(&bytes), "an applied delta's state decodes");
            assert!(back == st, "an applied delta's state round-trips");
        }
        return;
    }
    let mut image = fx.image.clone();
    for patch in rest.chunks_exact(3) {
        let offset = usize::from(u16::from_be_bytes([patch[0], patch[1]])) % fx.span.max(1);
        image[offset] ^= patch[2];
    }
    let first = Applet::boot(
        MemStorage::from_bytes(image.clone()),
        Sealing::None,
        TestEntropy::new(b"fuzz/journal/a"),
    );
    let second = Applet::boot(
        MemStorage::from_bytes(image),
        Sealing::None,
        TestEntropy::new(b"fuzz/journal/b"),
    );
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert!(a.state() == b.state(), "two boots of one image differ");
            assert!(
                a.state().balance() <= fx.loaded,
                "a damaged image booted with more value than was loaded"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "two boots of one image fail differently"),
        _ => panic!("two boots of one image disagree"),
    }
}

fn select_apdu() -> Vec<u8> {
    let mut apdu = alloc::vec![0x00, ins::SELECT, 0x04, 0x00, AID.len() as u8];
    apdu.extend_from_slice(AID);
    apdu
}

/// `se_dispatch`: a loaded card takes the frames as APDUs. It always
/// answers a status word; value is never created (the balance stays within
/// what was loaded) nor lost unrecorded (balance plus what was paid since
/// the sync covers it); and a reboot recovers exactly the state in memory.
pub fn check_se_dispatch(fx: &CardFixture, data: &[u8]) {
    let mut card = fx.boot();
    for apdu in frames(data).take(FRAMES_MAX) {
        let r = card.transmit(apdu);
        assert!(r.len() >= 2, "response without a status word");
    }
    let state = card.applet.state().clone();
    let balance = state.balance();
    assert!(
        balance <= fx.loaded,
        "value created: {balance} > {}",
        fx.loaded
    );
    // Paid since the sync: every offline payment counts in
    // `spent_since_sync` (an acknowledged one has left the log, decision
    // 0018); redemptions stay in the log until the sync.
    let logged = Amount::sum(
        state
            .outgoing
            .iter()
            .filter(|o| o.redemption)
            .map(|o| o.amount),
    );
    let covered = logged
        .and_then(|l| l.checked_add(state.spent_since_sync))
        .and_then(|l| l.checked_add(balance));
    assert!(
        covered.is_some_and(|c| c >= fx.loaded),
        "value lost without a logged payment"
    );
    let rebooted = boot(
        card.applet.into_storage(),
        Sealing::None,
        b"fuzz/card/reboot",
    );
    assert!(rebooted.state() == &state, "reboot recovered another state");
}

// ---- se_stream --------------------------------------------------------------

/// Ticks of the fixture stream, and those delivered before each input.
pub const STREAM_TICKS: u32 = 64;
pub const STREAM_TICKS_DONE: u32 = 5;

/// A payer and a payee SE with one stream open (an OPEN payment of
/// [`STREAM_TICKS`] ticks) and [`STREAM_TICKS_DONE`] ticks delivered,
/// booted afresh for every input of the `se_stream` target.
pub struct StreamFixture {
    payer: MemStorage,
    payee: MemStorage,
    /// The stream's id (from its OPEN transfer; deterministic).
    pub id: tally_core::Hash32,
    pub anchor: tally_core::Hash32,
}

impl StreamFixture {
    pub fn new() -> Self {
        let mut scheme = Scheme::new(Suite::Ed25519);
        let mut payer = empty_payee(
            &scheme,
            MemStorage::new(TEST_STORAGE_BYTES),
            Sealing::None,
            b"fuzz/stream/payer",
        );
        must(
            crate::testkit::load(&mut payer, &mut scheme, PHONE, 1_000),
            "load",
        );
        let mut payee = empty_payee(
            &scheme,
            MemStorage::new(TEST_STORAGE_BYTES),
            Sealing::None,
            b"fuzz/stream/payee",
        );
        let id = must(
            crate::stream::open_stream(&mut payer, &mut payee, Amount(1), STREAM_TICKS),
            "open stream",
        );
        must(
            crate::stream::stream_ticks(&mut payer, &mut payee, &id, 1, STREAM_TICKS_DONE),
            "ticks",
        );
        // The anchor as the payee's SE took it from the verified OPEN.
        let anchor = must(payee.stream_anchor(&id).ok_or("no stream"), "anchor");
        StreamFixture {
            payer: payer.into_storage(),
            payee: payee.into_storage(),
            id,
            anchor,
        }
    }

    /// Payer and payee cards after boot and SELECT.
    pub fn boot(&self) -> (TestCard, TestCard) {
        let mut a = Card::new(boot(self.payer.clone(), Sealing::None, b"fuzz/stream/a"));
        let mut b = Card::new(boot(self.payee.clone(), Sealing::None, b"fuzz/stream/b"));
        for c in [&mut a, &mut b] {
            let r = c.transmit(&select_apdu());
            assert_eq!(r, [0x90, 0x00], "SELECT failed");
        }
        (a, b)
    }
}

impl Default for StreamFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// `se_stream`: a terminal between a streaming payer and payee. Each frame
/// is `[to][APDU]`: `to` even goes to the payer's card, odd to the
/// payee's; the APDUs are anything (stream commands, replayed or forged
/// elements, closes, other commands). Whatever the order: the payee never
/// holds more ticks of the fixture stream than the payer released, the
/// element it holds always walks to the anchor in as many hashes as its
/// ticks, and each SE reboots into the state it had in memory.
pub fn check_se_stream(fx: &StreamFixture, data: &[u8]) {
    let (mut payer, mut payee) = fx.boot();
    for frame in frames(data).take(FRAMES_MAX) {
        let Some((&to, apdu)) = frame.split_first() else {
            continue;
        };
        let card = if to % 2 == 0 { &mut payer } else { &mut payee };
        let r = card.transmit(apdu);
        assert!(r.len() >= 2, "response without a status word");
    }
    let a = payer.applet.state().clone();
    let b = payee.applet.state().clone();
    let out = a.streams_out.iter().find(|s| s.id == fx.id);
    let inn = b.streams_in.iter().find(|s| s.id == fx.id);
    let (Some(out), Some(inn)) = (out, inn) else {
        panic!("the fixture stream disappeared");
    };
    assert!(
        inn.ticks <= out.released,
        "payee holds {} ticks, payer released {}",
        inn.ticks,
        out.released
    );
    assert!(
        tally_core::stream::reaches_anchor(&inn.latest, inn.ticks, STREAM_TICKS, &fx.anchor),
        "the payee holds an element not of the chain"
    );
    let ra = boot(
        payer.applet.into_storage(),
        Sealing::None,
        b"fuzz/stream/ra",
    );
    let rb = boot(
        payee.applet.into_storage(),
        Sealing::None,
        b"fuzz/stream/rb",
    );
    assert!(ra.state() == &a, "payer reboot recovered another state");
    assert!(rb.state() == &b, "payee reboot recovered another state");
}

/// One `se_stream` frame: `[to][APDU]` (see [`check_se_stream`]).
fn stream_frame(out: &mut Vec<u8>, to: u8, ins_: u8, p1: u8, data: &[u8]) {
    let mut apdu = alloc::vec![0u8];
    apdu[0] = to;
    apdu.extend_from_slice(&[CLA, ins_, p1, 0, data.len() as u8]);
    apdu.extend_from_slice(data);
    apdu.push(0);
    push_frame(out, &apdu);
}

fn stream_seeds(fx: &StreamFixture) -> Vec<(&'static str, Vec<u8>)> {
    use tally_core::codec::Writer;
    let release = |k: u32| {
        let mut w = Writer::new();
        w.array(2);
        fx.id.write(&mut w);
        w.u64(u64::from(k));
        w.into_bytes()
    };
    let accept = |k: u32, e: &tally_core::Hash32| {
        let mut w = Writer::new();
        w.array(3);
        fx.id.write(&mut w);
        w.u64(u64::from(k));
        e.write(&mut w);
        w.into_bytes()
    };
    // The elements an honest terminal would carry.
    let (mut a, _) = fx.boot();
    let mut elements = Vec::new();
    for k in STREAM_TICKS_DONE + 1..=STREAM_TICKS_DONE + 3 {
        let d = release(k);
        let mut apdu = alloc::vec![CLA, ins::STREAM_TICK, 0, 0, d.len() as u8];
        apdu.extend_from_slice(&d);
        apdu.push(0);
        let r = a.transmit(&apdu);
        assert!(r.ends_with(&[0x90, 0x00]), "fixture release");
        let e = must(tally_core::Hash32::from_cbor(&r[..r.len() - 2]), "element");
        elements.push(e);
    }
    let mut seeds = Vec::new();
    let mut honest = Vec::new();
    for (i, e) in elements.iter().enumerate() {
        let k = STREAM_TICKS_DONE + 1 + i as u32;
        stream_frame(&mut honest, 0, ins::STREAM_TICK, 0, &release(k));
        stream_frame(&mut honest, 1, ins::STREAM_TICK, 1, &accept(k, e));
    }
    seeds.push(("honest_ticks.bin", honest.clone()));
    let mut replay = honest.clone();
    stream_frame(
        &mut replay,
        1,
        ins::STREAM_TICK,
        1,
        &accept(STREAM_TICKS_DONE + 1, &elements[0]),
    );
    seeds.push(("replayed_tick.bin", replay));
    let mut skip = Vec::new();
    stream_frame(
        &mut skip,
        0,
        ins::STREAM_TICK,
        0,
        &release(STREAM_TICKS_DONE + 1),
    );
    stream_frame(
        &mut skip,
        0,
        ins::STREAM_TICK,
        0,
        &release(STREAM_TICKS_DONE + 2),
    );
    stream_frame(
        &mut skip,
        1,
        ins::STREAM_TICK,
        1,
        &accept(STREAM_TICKS_DONE + 2, &elements[1]),
    );
    seeds.push(("skipped_tick.bin", skip));
    let mut forged = Vec::new();
    stream_frame(
        &mut forged,
        1,
        ins::STREAM_TICK,
        1,
        &accept(STREAM_TICKS_DONE + 1, &tally_core::Hash32([0xEE; 32])),
    );
    seeds.push(("forged_tick.bin", forged));
    let mut closes = honest;
    stream_frame(&mut closes, 1, ins::STREAM_CLOSE, 1, &fx.id.to_cbor());
    stream_frame(&mut closes, 0, ins::STREAM_CLOSE, 0, &fx.id.to_cbor());
    stream_frame(
        &mut closes,
        0,
        ins::STREAM_TICK,
        0,
        &release(STREAM_TICKS_DONE + 4),
    );
    seeds.push(("ticks_then_closes.bin", closes));
    seeds
}

// ---- seed corpus ------------------------------------------------------------

/// One seed input: target, file name, bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Records the APDUs sent to a card as frames.
struct Recorder {
    card: TestCard,
    frames: Vec<u8>,
}

impl Recorder {
    fn send(&mut self, apdu: &[u8]) -> Vec<u8> {
        push_frame(&mut self.frames, apdu);
        self.card.transmit(apdu)
    }

    /// One command, chained in `block`-byte pieces; its response data.
    fn command(&mut self, ins_: u8, p1: u8, p2: u8, data: &[u8], block: usize) -> Vec<u8> {
        let le = if block > 255 { 65_536 } else { 256 };
        let chain = must(
            chunk_command(CLA, ins_, p1, p2, data, block, Some(le)),
            "chunk",
        );
        let r = collect_response(|a: &[u8]| Ok::<_, ()>(self.send(a)), &chain, 1 << 20);
        must(r, "seed command refused")
    }

    fn get_data(&mut self, t: u8) -> Vec<u8> {
        self.command(ins::GET_DATA, 0, t, &[], 255)
    }
}

/// Deterministic seeds for every target: valid objects, packages that pay
/// the fixture request (one hop, two hops, at the history budget) and APDU
/// sessions of real commands.
pub fn seed_corpus() -> Vec<Seed> {
    let fx = PaymentFixture::new();
    let mut seeds = Vec::new();
    let mut seed = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            name: String::from(name),
            bytes,
        })
    };

    // Packages.
    let one_hop = package_with_records(&fx, 1);
    let at_budget = package_with_records(&fx, HISTORY_RECORDS_MAX);
    seed("package_verify", "one_hop.bin", one_hop.clone());
    seed(
        "package_verify",
        "two_hops.bin",
        package_with_records(&fx, 2),
    );
    seed("package_verify", "at_budget_32.bin", at_budget);

    // Stream objects (decision 0020): the OPEN transfer, the payee's
    // claim, a stream request.
    {
        let sfx = StreamFixture::new();
        let (_, mut payee) = sfx.boot();
        let open = must(
            payee
                .applet
                .state()
                .streams_in
                .iter()
                .find(|s| s.id == sfx.id)
                .and_then(|s| payee.applet.state().record(&s.open).cloned())
                .ok_or("no OPEN"),
            "OPEN record",
        );
        must(payee.applet.close_stream_in(&sfx.id), "claim");
        let claim = must(
            payee
                .applet
                .state()
                .records
                .last()
                .map(|r| r.record.clone())
                .ok_or("no claim"),
            "claim record",
        );
        let request = must(
            payee
                .applet
                .create_stream_request(tally_core::stream::StreamAsk {
                    price: Amount(2),
                    ticks_max: 100,
                }),
            "stream request",
        );
        for (name, kind, bytes) in [
            ("stream_open_record.bin", 2u8, open.to_cbor()),
            ("stream_claim_record.bin", 2, claim.to_cbor()),
            ("stream_request.bin", 4, request.to_cbor()),
        ] {
            let mut input = alloc::vec![kind];
            input.extend_from_slice(&bytes);
            seed("cbor_objects", name, input);
        }
    }

    // Objects, each prefixed with its kind selector.
    let pkg = must(Package::from_cbor(&one_hop), "one-hop package");
    let Some(Record::Issue(issue)) = pkg.ancestry.first().cloned() else {
        panic!("a one-hop package starts with its Issue")
    };
    let receipt = must(fx.receipt(&one_hop).ok_or(()), "receipt");
    let mut scheme = Scheme::new(Suite::Ed25519);
    let revoked = [fx.payee.public().id(), scheme.dcp.public().id()];
    scheme.revoke(&revoked);
    let revocations = scheme.revocations.clone();
    let card = CardFixture::new();
    let state = card.boot().applet.state().clone();
    let objects: [Vec<u8>; 12] = [
        issue.to_cbor(),
        pkg.transfer.to_cbor(),
        Record::Transfer(pkg.transfer.clone()).to_cbor(),
        one_hop.clone(),
        fx.request.to_cbor(),
        receipt.to_cbor(),
        fx.scheme.dcp_cert.to_cbor(),
        fx.request.payee.to_cbor(),
        fx.scheme.policy.to_cbor(),
        revocations.to_cbor(),
        fx.scheme.sync_grant(issue.issuer, 7).to_cbor(),
        state.to_cbor(),
    ];
    for (i, bytes) in objects.iter().enumerate() {
        let mut input = alloc::vec![i as u8];
        input.extend_from_slice(bytes);
        seed("cbor_objects", &format!("{}.bin", CBOR_KINDS[i]), input);
    }
    let order = tally_core::dcp::RedemptionOrder::sign(
        &fx.scheme.dcp,
        issue.issuer,
        true,
        fx.request.clone(),
    );
    let maker = tally_core::dcp::MakerCertificate::sign(
        &fx.scheme.root,
        fx.payee.public(),
        tally_core::policy::device_class::CARD,
        "fuzz-maker",
    );
    let closed = tally_core::dcp::RequestReport::sign(
        &fx.payee,
        fx.request.nonce,
        fx.request.amount.0,
        Some(fx.request.payee.id()),
    );
    let mut params = alloc::vec![5u8];
    params.extend_from_slice(
        &tally_se::RequestParams::PayOnline {
            to_account: "alice".into(),
            amount: 250,
        }
        .encode(),
    );
    let role_list = tally_core::policy::RoleRevocations::try_sign(
        &fx.scheme.root,
        1_764_892_800_000,
        1_764_892_800,
        alloc::vec![Hash32([9; 32]), Hash32([3; 32])],
    )
    .unwrap_or_else(|e| match e {});
    for (i, bytes) in [
        (19usize, order.to_cbor()),
        (20, maker.to_cbor()),
        (21, closed.to_cbor()),
        (22, role_list.to_cbor()),
        (23, params),
    ] {
        let mut input = alloc::vec![i as u8];
        input.extend_from_slice(&bytes);
        seed("cbor_objects", &format!("{}.bin", CBOR_KINDS[i]), input);
    }
    let mut issue_record = alloc::vec![2u8];
    issue_record.extend_from_slice(&Record::Issue(issue.clone()).to_cbor());
    seed("cbor_objects", "record_issue.bin", issue_record);

    // Journal images and deltas: no patch, a flip in the base, a flip in
    // the log, a delta that changes the counter.
    let journal = JournalFixture::new();
    seed("se_journal", "intact.bin", alloc::vec![0]);
    seed("se_journal", "base_flip.bin", alloc::vec![0, 0, 100, 0x01]);
    let at = u16::try_from(journal.span - 8)
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    seed(
        "se_journal",
        "log_flip.bin",
        alloc::vec![0, at[0], at[1], 0x20],
    );
    let mut next = journal.state.clone();
    next.counter += 1;
    let delta = must(
        tally_se::state::encode_delta(&journal.state, &next, journal.sequence, journal.records)
            .ok_or(()),
        "a delta",
    );
    let mut input = alloc::vec![1u8];
    input.extend_from_slice(&delta);
    seed("se_journal", "delta_counter.bin", input);
    // A stream tick record (decision 0020) for a stream the state lacks:
    // refused, the state unchanged.
    let tick = tally_se::state::encode_tick_delta(journal.sequence, journal.records, 0, 1, None);
    let mut input = alloc::vec![1u8];
    input.extend_from_slice(&tick);
    seed("se_journal", "delta_stream_tick.bin", input);
    let (tick, len) = tally_se::state::encode_tick_record(0, 1, None);
    let mut input = alloc::vec![1u8];
    input.extend_from_slice(&tick[..len]);
    seed("se_journal", "record_stream_tick.bin", input);

    // Stream sessions between the fixture payer and payee.
    for (name, bytes) in stream_seeds(&StreamFixture::new()) {
        seed("se_stream", name, bytes);
    }

    // APDU sessions on the fixture card.
    let request = fx.request.to_cbor();
    let mut rec = Recorder {
        card: card.boot(),
        frames: Vec::new(),
    };
    let _ = rec.get_data(tag::STATUS);
    let package = rec.command(ins::PAY, 0, 0, &request, 255);
    let receipt = must(fx.receipt(&package).ok_or(()), "receipt");
    rec.command(ins::ACK, 0, 0, &receipt.to_cbor(), 255);
    let _ = rec.get_data(tag::OUTGOING);
    let pay_short = core::mem::take(&mut rec.frames);
    seed("se_dispatch", "pay_ack_short_apdus.bin", pay_short.clone());
    seed("apdu_parse", "pay_ack_short_apdus.bin", pay_short);

    let mut rec = Recorder {
        card: card.boot(),
        frames: Vec::new(),
    };
    let package = rec.command(ins::PAY, 0, 0, &request, 4096);
    let tid = must(Package::from_cbor(&package), "package").transfer.id();
    rec.command(ins::RESEND, 0, 0, &tid.to_cbor(), 4096);
    let receipt = must(fx.receipt(&package).ok_or(()), "receipt");
    rec.command(ins::ACK, 0, 0, &receipt.to_cbor(), 4096);
    let pay_extended = core::mem::take(&mut rec.frames);
    seed(
        "se_dispatch",
        "pay_resend_ack_extended.bin",
        pay_extended.clone(),
    );
    seed("apdu_parse", "pay_resend_ack_extended.bin", pay_extended);

    // The card pays itself: request, pay, receive, acknowledge.
    let mut rec = Recorder {
        card: card.boot(),
        frames: Vec::new(),
    };
    let own_request = rec.command(ins::CREATE_REQUEST, 0, 0, &encode_u64(100), 255);
    let package = rec.command(ins::PAY, 0, 0, &own_request, 255);
    let receipt = rec.command(ins::RECEIVE, 0, 0, &package, 255);
    rec.command(ins::ACK, 0, 0, &receipt, 255);
    let _ = rec.get_data(tag::TOKENS);
    seed(
        "se_dispatch",
        "self_payment.bin",
        core::mem::take(&mut rec.frames),
    );

    // Requests, keys, attestation.
    let mut rec = Recorder {
        card: card.boot(),
        frames: Vec::new(),
    };
    rec.command(ins::CREATE_REQUEST, 0, 0, &encode_u64(1), 255);
    rec.command(ins::CREATE_REQUEST, 0, 0, &encode_u64(5_000), 255);
    rec.command(ins::GENERATE_KEYS, 1, 0, &[], 255);
    rec.command(ins::BUILD_REQUEST, 0, 0, &encode_u64(1), 255);
    rec.command(ins::BUILD_REQUEST, 1, 0, &encode_u64(100), 255);
    rec.command(ins::BUILD_REQUEST, 6, 0, &[], 255);
    rec.command(ins::ENROL, 0, 0, &[0x82, 0x61, 0x61, 0x61, 0x63], 255);
    let _ = rec.get_data(tag::ATTESTATION_KEY);
    rec.command(ins::CLOSE_REQUESTS, 0, 0, &[], 255);
    seed(
        "se_dispatch",
        "requests_keys_build_request.bin",
        core::mem::take(&mut rec.frames),
    );

    // Back-office objects the card already has (stale or idempotent), and
    // a redemption to the DCP.
    let mut rec = Recorder {
        card: card.boot(),
        frames: Vec::new(),
    };
    let loaded_issue = state.records.iter().find_map(|r| match &r.record {
        Record::Issue(i) => Some(i.clone()),
        Record::Transfer(_) => None,
    });
    let loaded_issue = must(loaded_issue.ok_or(()), "the card holds its Issue");
    let se_id = must(rec.card.applet.se_id(), "se id");
    let admin: [(u8, Vec<u8>); 4] = [
        (ins::IMPORT_ISSUE, loaded_issue.to_cbor()),
        (ins::INSTALL_POLICY, fx.scheme.policy.to_cbor()),
        (ins::INSTALL_REVOCATIONS, fx.scheme.revocations.to_cbor()),
        (ins::SYNC, fx.scheme.sync_grant(se_id, 1).to_cbor()),
    ];
    for (i, d) in &admin {
        let chain = must(chunk_command(CLA, *i, 0, 0, d, 255, Some(256)), "chunk");
        let _ = collect_response(|a: &[u8]| Ok::<_, ()>(rec.send(a)), &chain, 1 << 20);
    }
    let _ = rec.get_data(tag::LAST_ERROR);
    let redemption = Request::sign(
        &fx.scheme.dcp,
        Amount(300),
        [0x52; 16],
        fx.scheme.certify(fx.scheme.dcp.public(), DCP, 0),
        fx.scheme.epoch,
    );
    let order = tally_core::dcp::RedemptionOrder::sign(&fx.scheme.dcp, se_id, false, redemption);
    rec.command(ins::REDEEM, 0, 0, &order.to_cbor(), 255);
    seed(
        "se_dispatch",
        "admin_replays_redeem.bin",
        core::mem::take(&mut rec.frames),
    );

    for (name, bytes) in adversarial_seeds() {
        seed("adversarial_terminal", name, bytes);
    }

    // Single APDUs for apdu_parse (the whole input is parsed too).
    seed("apdu_parse", "select.bin", select_apdu());
    seed(
        "apdu_parse",
        "response_61xx.bin",
        Response {
            data: one_hop.get(..256).unwrap_or(&one_hop).to_vec(),
            sw: sw::bytes_remaining(one_hop.len().saturating_sub(256)),
        }
        .to_vec(),
    );
    seeds
}

/// Wire sizes of the protocol objects, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSizes {
    pub issue: usize,
    pub transfer: usize,
    pub package_one_hop: usize,
    pub package_at_budget: usize,
    pub package_at_budget_records: usize,
    pub package_at_budget_certificates: usize,
    pub request: usize,
    pub receipt: usize,
    pub pseudonym_certificate: usize,
}

impl WireSizes {
    pub fn measure() -> WireSizes {
        let fx = PaymentFixture::new();
        let one_hop = package_with_records(&fx, 1);
        let at_budget = package_with_records(&fx, HISTORY_RECORDS_MAX);
        let pkg = must(Package::from_cbor(&one_hop), "one-hop package");
        let big = must(Package::from_cbor(&at_budget), "at-budget package");
        let receipt = must(fx.receipt(&one_hop).ok_or(()), "receipt");
        WireSizes {
            issue: match pkg.ancestry.first() {
                Some(Record::Issue(i)) => i.to_cbor().len(),
                _ => panic!("a one-hop package starts with its Issue"),
            },
            transfer: pkg.transfer.to_cbor().len(),
            package_one_hop: one_hop.len(),
            package_at_budget: at_budget.len(),
            package_at_budget_records: big.ancestry.len(),
            package_at_budget_certificates: big.certificates.len(),
            request: fx.request.to_cbor().len(),
            receipt: receipt.to_cbor().len(),
            pseudonym_certificate: fx.request.payee.to_cbor().len(),
        }
    }
}

// ---- adversarial_terminal ---------------------------------------------------
//
// A stateful hostile terminal (issue 9): two or three honest SEs behind the
// APDU interface, a simulated DCP that loads, certifies, syncs and orders
// redemptions, and an attacker who sends arbitrary APDUs, replays and
// mutates every message it has ever seen (from the SEs and from the DCP)
// under any INS, drops and reorders the legitimate protocol's messages,
// guesses PINs and pulls the power. The cardholder never types the PIN in a
// run, so any value that leaves a card by a path that needs cardholder
// verification is a violation. The oracle is checked after every command
// the card dispatches (see [`check_adversarial_terminal`]).

use alloc::collections::{BTreeMap, BTreeSet};
use tally_core::dcp::{DeviceOp, RedemptionOrder, RequestKind};
use tally_core::policy::TierLimits;
use tally_core::policy::device_class::CARD;
use tally_core::testkit::default_tier;
use tally_core::{Hash32, OutPoint, Output};
use tally_se::RequestParams;
use tally_se::dispatch::CLA_ISO;

/// Steps of one adversarial program at most.
pub const ADVERSARY_STEPS_MAX: usize = 64;
/// Messages the attacker remembers at most (oldest kept).
pub const ADVERSARY_MESSAGES_MAX: usize = 256;
/// The cardholders' PIN: set on every card at setup, never presented.
pub const ADVERSARY_PIN: &[u8] = &[0x5A, 0x17, 0x93, 0x08, 0xC4, 0x61];
/// Single offline payment allowed without the PIN.
pub const ADVERSARY_CVM_PAYMENT_MAX: u64 = 100;
/// Offline value allowed without the PIN since the last verification.
pub const ADVERSARY_CVM_CUMULATIVE_MAX: u64 = 250;
/// Values the fixture cards are loaded with at setup.
pub const ADVERSARY_INITIAL_LOADS: [u64; 3] = [1_000, 300, 0];
/// Amounts the program's amount selectors pick from (around the limits).
pub const ADVERSARY_AMOUNTS: [u64; 10] = [1, 7, 40, 99, 100, 101, 150, 250, 1_000, 5_000];

/// (class byte, INS) that the replay, mutate and plain steps choose from.
const ADVERSARY_INS: [(u8, u8); 20] = [
    (CLA, ins::GET_DATA),
    (CLA, ins::CREATE_REQUEST),
    (CLA, ins::CHECK_REQUEST),
    (CLA, ins::PAY),
    (CLA, ins::RECEIVE),
    (CLA, ins::ACK),
    (CLA, ins::RESEND),
    (CLA, ins::REDEEM),
    (CLA, ins::CLOSE_REQUESTS),
    (CLA, ins::PERSONALIZE),
    (CLA, ins::INSTALL_POLICY),
    (CLA, ins::INSTALL_REVOCATIONS),
    (CLA, ins::GENERATE_KEYS),
    (CLA, ins::INSTALL_CERTIFICATE),
    (CLA, ins::SYNC),
    (CLA, ins::IMPORT_ISSUE),
    (CLA, ins::BUILD_REQUEST),
    (CLA, ins::ENROL),
    (CLA_ISO, ins::VERIFY),
    (CLA_ISO, ins::CHANGE_REFERENCE_DATA),
];
const BLOCKS: [usize; 4] = [255, 16, 4096, 1];

/// One step of an adversarial program. Indices (`se`, `msg`, `request`…)
/// are taken modulo what exists when the step runs; pool indices count
/// from the most recent entry (0: the latest message, request, package or
/// receipt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// An arbitrary APDU to SE `se`.
    Raw { se: u8, apdu: Vec<u8> },
    /// A remembered message as the data of command `ins` (an index into
    /// the command table) with P1 `p1`, chained in `block`-selected pieces.
    Replay {
        msg: u8,
        se: u8,
        ins: u8,
        p1: u8,
        block: u8,
    },
    /// A remembered message, mutated (`how`: bit flip, truncation, byte
    /// xor, junk appended at `pos`), sent as command `ins`.
    Mutate {
        msg: u8,
        se: u8,
        ins: u8,
        how: u8,
        pos: u16,
        mask: u8,
    },
    /// Legitimate protocol, message 1: CREATE REQUEST on the payee.
    Request { payee: u8, amount: u8 },
    /// Message 2: PAY of a request the attacker relays (any of them).
    Pay { payer: u8, request: u8 },
    /// Message 3: RECEIVE of a package (any of them).
    Receive { payee: u8, package: u8 },
    /// Message 4: ACK of a receipt (any of them).
    Ack { payer: u8, receipt: u8 },
    /// The DCP loads the SE: BUILD REQUEST Load, an Issue to the key it
    /// names (legitimately loaded), delivered by IMPORT ISSUE or dropped.
    Load { se: u8, amount: u8, deliver: bool },
    /// The DCP orders a redemption bound to the SE (`flags` bit 0: unload,
    /// bit 1: deliver by REDEEM).
    Redeem { se: u8, amount: u8, flags: u8 },
    /// The DCP grants a sync (next sequence) and it is delivered.
    Sync { se: u8 },
    /// The DCP certifies `n % 3 + 1` keys from BUILD REQUEST Certify and
    /// installs the certificates.
    Certify { se: u8, n: u8 },
    /// VERIFY with a PIN that is not the cardholder's.
    WrongPin { se: u8, pin: Vec<u8> },
    /// Power cut: the SE boots again from its storage (and is selected).
    Reboot { se: u8 },
    /// BUILD REQUEST of kind `kind % 7` with well-formed parameters
    /// (PayOnline to the attacker's account among them).
    Build { se: u8, kind: u8, amount: u8 },
    /// A command without data: `ins` from the table, P1, P2.
    Plain { se: u8, ins: u8, p1: u8, p2: u8 },
}

const STEP_KINDS: u8 = 15;

impl Step {
    /// Appends the step's bytes (the format [`check_adversarial_terminal`]
    /// reads; byte strings are `[len: u8][bytes]`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let short = |out: &mut Vec<u8>, b: &[u8]| {
            let b = &b[..b.len().min(255)];
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        };
        match self {
            Step::Raw { se, apdu } => {
                out.extend_from_slice(&[0, *se]);
                short(out, apdu);
            }
            Step::Replay {
                msg,
                se,
                ins,
                p1,
                block,
            } => out.extend_from_slice(&[1, *msg, *se, *ins, *p1, *block]),
            Step::Mutate {
                msg,
                se,
                ins,
                how,
                pos,
                mask,
            } => {
                out.extend_from_slice(&[2, *msg, *se, *ins, *how]);
                out.extend_from_slice(&pos.to_be_bytes());
                out.push(*mask);
            }
            Step::Request { payee, amount } => out.extend_from_slice(&[3, *payee, *amount]),
            Step::Pay { payer, request } => out.extend_from_slice(&[4, *payer, *request]),
            Step::Receive { payee, package } => out.extend_from_slice(&[5, *payee, *package]),
            Step::Ack { payer, receipt } => out.extend_from_slice(&[6, *payer, *receipt]),
            Step::Load {
                se,
                amount,
                deliver,
            } => out.extend_from_slice(&[7, *se, *amount, u8::from(*deliver)]),
            Step::Redeem { se, amount, flags } => out.extend_from_slice(&[8, *se, *amount, *flags]),
            Step::Sync { se } => out.extend_from_slice(&[9, *se]),
            Step::Certify { se, n } => out.extend_from_slice(&[10, *se, *n]),
            Step::WrongPin { se, pin } => {
                out.extend_from_slice(&[11, *se]);
                short(out, pin);
            }
            Step::Reboot { se } => out.extend_from_slice(&[12, *se]),
            Step::Build { se, kind, amount } => out.extend_from_slice(&[13, *se, *kind, *amount]),
            Step::Plain { se, ins, p1, p2 } => out.extend_from_slice(&[14, *se, *ins, *p1, *p2]),
        }
    }
}

/// An adversarial program's bytes: the SE count byte (bit 0 set: three
/// SEs, else two) and the steps.
pub fn encode_program(three_ses: bool, steps: &[Step]) -> Vec<u8> {
    let mut out = alloc::vec![u8::from(three_ses)];
    for s in steps {
        s.encode(&mut out);
    }
    out
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn short(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte()).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
}

/// Reads a program: SE count and at most [`ADVERSARY_STEPS_MAX`] steps
/// (missing bytes read as zero; the step kind is taken modulo the kinds).
pub fn decode_program(data: &[u8]) -> (bool, Vec<Step>) {
    let mut c = Cursor(data);
    let three = c.byte() & 1 == 1;
    let mut steps = Vec::new();
    while !c.0.is_empty() && steps.len() < ADVERSARY_STEPS_MAX {
        let k = c.byte() % STEP_KINDS;
        let mut b = || c.byte();
        let step = match k {
            0 => {
                let se = b();
                Step::Raw {
                    se,
                    apdu: c.short(),
                }
            }
            1 => Step::Replay {
                msg: b(),
                se: b(),
                ins: b(),
                p1: b(),
                block: b(),
            },
            2 => Step::Mutate {
                msg: b(),
                se: b(),
                ins: b(),
                how: b(),
                pos: u16::from_be_bytes([b(), b()]),
                mask: b(),
            },
            3 => Step::Request {
                payee: b(),
                amount: b(),
            },
            4 => Step::Pay {
                payer: b(),
                request: b(),
            },
            5 => Step::Receive {
                payee: b(),
                package: b(),
            },
            6 => Step::Ack {
                payer: b(),
                receipt: b(),
            },
            7 => Step::Load {
                se: b(),
                amount: b(),
                deliver: b() & 1 == 1,
            },
            8 => Step::Redeem {
                se: b(),
                amount: b(),
                flags: b(),
            },
            9 => Step::Sync { se: b() },
            10 => Step::Certify { se: b(), n: b() },
            11 => {
                let se = b();
                Step::WrongPin { se, pin: c.short() }
            }
            12 => Step::Reboot { se: b() },
            13 => Step::Build {
                se: b(),
                kind: b(),
                amount: b(),
            },
            _ => Step::Plain {
                se: b(),
                ins: b(),
                p1: b(),
                p2: b(),
            },
        };
        steps.push(step);
    }
    (three, steps)
}

/// The value one honest SE can sign away against what entitles it to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValueObservation {
    /// Its balance (the tokens it holds, as GET DATA STATUS reports).
    pub balance: u64,
    /// Value of every package it ever signed (payments and redemptions).
    pub paid: u128,
    /// Value of the DCP's Issues it was credited (each once).
    pub loaded: u128,
    /// Value of the honest packages it received (each once).
    pub received: u128,
}

/// Oracle, per SE: what it holds plus what it signed away never exceeds
/// what was legitimately loaded into it plus what it legitimately
/// received. Panics on a violation.
pub fn assert_value_conserved(se: usize, o: &ValueObservation) {
    let out = u128::from(o.balance) + o.paid;
    let entitled = o.loaded + o.received;
    assert!(
        out <= entitled,
        "value created in SE {se}: balance {} + paid {} > loaded {} + received {}",
        o.balance,
        o.paid,
        o.loaded,
        o.received
    );
}

/// Oracle, all honest SEs together: balances plus packages signed but not
/// received by an honest SE plus redemptions never exceed the value the
/// DCP issued. Panics on a violation.
pub fn assert_total_conserved(balances: u128, unreceived: u128, redeemed: u128, issued: u128) {
    assert!(
        balances + unreceived + redeemed <= issued,
        "value created: balances {balances} + unreceived {unreceived} + redeemed {redeemed} > issued {issued}"
    );
}

/// Oracle: value paid offline while the cardholder was never verified
/// stays within the no-PIN limits. Panics on a violation.
pub fn assert_no_pin_payment(se: usize, amount: u64, paid_before: u128) {
    assert!(
        amount <= ADVERSARY_CVM_PAYMENT_MAX,
        "SE {se} paid {amount} offline without cardholder verification (limit {ADVERSARY_CVM_PAYMENT_MAX})"
    );
    assert!(
        paid_before + u128::from(amount) <= u128::from(ADVERSARY_CVM_CUMULATIVE_MAX),
        "SE {se} paid {} offline in all without cardholder verification (limit {ADVERSARY_CVM_CUMULATIVE_MAX})",
        paid_before + u128::from(amount)
    );
}

/// Cards: 100 per payment and 250 in all without the PIN; online payments
/// need it.
pub fn adversary_tiers() -> Vec<TierLimits> {
    let mut tiers = Scheme::default_tiers();
    for t in tiers.iter_mut() {
        if t.device_class == CARD {
            *t = TierLimits {
                cvm_payment_max: Amount(ADVERSARY_CVM_PAYMENT_MAX),
                cvm_cumulative_max: Amount(ADVERSARY_CVM_CUMULATIVE_MAX),
                cvm_online: true,
                ..default_tier(CARD, 0)
            };
        }
    }
    tiers
}

/// Three provisioned cards (PIN set, loaded with
/// [`ADVERSARY_INITIAL_LOADS`]), built once and booted afresh per input,
/// with the back-office objects the attacker saw while they were set up.
pub struct AdversaryFixture {
    pub scheme: Scheme,
    images: Vec<MemStorage>,
    pub se_ids: Vec<Hash32>,
    /// The setup Issues: (SE index, Issue).
    pub issues: Vec<(usize, Issue)>,
    /// Policy, revocations, certificates, sync grants and Issues (what a
    /// terminal in the middle saw).
    pub messages: Vec<Vec<u8>>,
    /// The DCP's certificate for its redemption key (payee of orders).
    redemption_payee: PseudonymCertificate,
}

impl AdversaryFixture {
    pub fn new() -> Self {
        use crate::link::ApduLink;
        let scheme = Scheme::with_tiers(Suite::Ed25519, adversary_tiers());
        let mut images = Vec::new();
        let mut se_ids = Vec::new();
        let mut issues = Vec::new();
        let mut messages = alloc::vec![
            scheme.policy.to_cbor(),
            scheme.revocations.to_cbor(),
            scheme.dcp_cert.to_cbor(),
        ];
        for (i, value) in ADVERSARY_INITIAL_LOADS.iter().enumerate() {
            let label = format!("adversary/se{i}");
            let mut link = must(
                ApduLink::select(crate::testkit::blank_card(label.as_bytes()), 255),
                "select",
            );
            let se_id = must(provision(&mut link, &scheme, CARD, 4), "provision");
            must(
                SeLink::change_pin(&mut link, None, ADVERSARY_PIN),
                "set PIN",
            );
            if *value > 0 {
                let keys = must(
                    crate::testkit::certify_fresh_keys(&mut link, &scheme, CARD, 1),
                    "certify",
                );
                let issue = Issue::sign(
                    &scheme.dcp,
                    i as u64 + 1,
                    scheme.epoch + 20,
                    alloc::vec![Output {
                        value: Amount(*value),
                        owner: keys[0],
                    }],
                );
                must(SeLink::import_issue(&mut link, &issue), "load");
                messages.push(issue.to_cbor());
                issues.push((i, issue));
            }
            let applet = link.card.applet;
            for k in &applet.state().keys {
                if let Some(c) = &k.cert {
                    messages.push(c.to_cbor());
                }
            }
            messages.push(scheme.sync_grant(se_id, 1).to_cbor());
            images.push(applet.into_storage());
            se_ids.push(se_id);
        }
        let redemption_payee = scheme.certify(scheme.dcp.public(), DCP, 0);
        messages.push(redemption_payee.to_cbor());
        AdversaryFixture {
            scheme,
            images,
            se_ids,
            issues,
            messages,
            redemption_payee,
        }
    }
}

impl Default for AdversaryFixture {
    fn default() -> Self {
        Self::new()
    }
}

struct HonestSe {
    card: TestCard,
    id: Hash32,
    /// Mirror of the card's chain assembler: which command a block
    /// completes (the card dispatches exactly those).
    mirror: ChainAssembler,
    tokens: BTreeSet<OutPoint>,
    ever: BTreeSet<OutPoint>,
    value: ValueObservation,
    no_pin_paid: u128,
    /// The attacker presented the right PIN (a guess: never expected, but
    /// then the cardholder-verification oracles no longer apply).
    pin_known: bool,
    sync_sequence: u64,
    reboots: u32,
}

struct Sent {
    payer: usize,
    amount: u64,
    redemption: bool,
    received: bool,
}

/// What one run of [`run_adversarial_terminal`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdversaryStats {
    pub steps: usize,
    pub apdus: usize,
    /// Commands the cards dispatched and completed.
    pub accepted: usize,
    /// Commands the cards dispatched and refused (state compared).
    pub refused: usize,
    /// Packages signed (payments and redemptions) / received.
    pub packages: usize,
    pub received: usize,
    /// Issues credited by the SE they were issued to.
    pub credited: usize,
}

/// The state of one run: cards, the attacker's memory, the DCP's books.
struct Adversary<'a> {
    stats: AdversaryStats,
    fx: &'a AdversaryFixture,
    ses: Vec<HonestSe>,
    messages: Vec<Vec<u8>>,
    requests: Vec<Vec<u8>>,
    packages: Vec<Vec<u8>>,
    receipts: Vec<Vec<u8>>,
    /// Issue id → (SE it was issued to, value).
    issued: BTreeMap<Hash32, (usize, u64)>,
    issued_total: u128,
    /// Transfer id → what the package pays.
    sent: BTreeMap<Hash32, Sent>,
    unreceived: u128,
    redeemed: u128,
    /// Redemption order nonce → SE it is bound to.
    orders: BTreeMap<[u8; 16], usize>,
    serial: u64,
}

fn is_ok(sw_: u16) -> bool {
    sw_ == sw::OK || sw::is_bytes_remaining(sw_)
}

impl<'a> Adversary<'a> {
    fn new(fx: &'a AdversaryFixture, count: usize) -> Self {
        let mut issued = BTreeMap::new();
        let mut issued_total = 0u128;
        for (i, issue) in &fx.issues {
            if *i < count {
                let v = issue.outputs.iter().map(|o| o.value.0).sum::<u64>();
                issued.insert(issue.id(), (*i, v));
                issued_total += u128::from(v);
            }
        }
        let mut ses = Vec::new();
        for i in 0..count {
            let label = format!("adversary/se{i}/run");
            let mut card = Card::new(boot(fx.images[i].clone(), Sealing::None, label.as_bytes()));
            assert_eq!(card.transmit(&select_apdu()), [0x90, 0x00], "SELECT failed");
            let st = card.applet.state();
            let tokens: BTreeSet<OutPoint> = st.tokens.iter().map(|t| t.outpoint).collect();
            let balance = st.balance().0;
            let sync_sequence = st.sync_sequence;
            ses.push(HonestSe {
                card,
                id: fx.se_ids[i],
                mirror: ChainAssembler::new(tally_se::dispatch::COMMAND_DATA_MAX),
                ever: tokens.clone(),
                tokens,
                value: ValueObservation {
                    balance,
                    loaded: u128::from(balance),
                    ..ValueObservation::default()
                },
                no_pin_paid: 0,
                pin_known: false,
                sync_sequence,
                reboots: 0,
            });
        }
        Adversary {
            stats: AdversaryStats::default(),
            fx,
            ses,
            messages: fx.messages.clone(),
            requests: Vec::new(),
            packages: Vec::new(),
            receipts: Vec::new(),
            issued,
            issued_total,
            sent: BTreeMap::new(),
            unreceived: 0,
            redeemed: 0,
            orders: BTreeMap::new(),
            serial: 1_000,
        }
    }

    fn se(&self, i: u8) -> usize {
        usize::from(i) % self.ses.len()
    }

    fn remember(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() && self.messages.len() < ADVERSARY_MESSAGES_MAX {
            self.messages.push(bytes.to_vec());
        }
    }

    /// One APDU to SE `i`, with the per-command oracles: a refusal changes
    /// nothing; a dispatched success is checked and its effects booked.
    fn transmit(&mut self, i: usize, apdu: &[u8]) -> Vec<u8> {
        let se = &mut self.ses[i];
        let dispatched = match Command::parse(apdu) {
            Err(_) => {
                se.mirror.reset();
                None
            }
            Ok(cmd) if cmd.ins == 0xC0 => None,
            Ok(cmd) => se.mirror.push(&cmd).ok().flatten(),
        };
        let before = se.card.applet.state().clone();
        let raw = se.card.transmit(apdu);
        self.stats.apdus += 1;
        if dispatched.is_some() {
            if is_ok(Response::parse(&raw).map(|r| r.sw).unwrap_or(0)) {
                self.stats.accepted += 1;
            } else {
                self.stats.refused += 1;
            }
        }
        let r = must(Response::parse(&raw), "response without a status word");
        let iso_pin = dispatched.as_ref().is_some_and(|c| {
            c.cla & !CHAINING_BIT == CLA_ISO
                && (c.ins == ins::VERIFY || c.ins == ins::CHANGE_REFERENCE_DATA)
        });
        if !is_ok(r.sw) {
            self.assert_unchanged(i, &before, iso_pin, &dispatched, r.sw);
            return raw;
        }
        let Some(c) = dispatched else {
            return raw;
        };
        if iso_pin && !c.data.is_empty() {
            // The right PIN, guessed: from here on this SE's cardholder
            // counts as verified.
            self.ses[i].pin_known = true;
        }
        if c.cla & !CHAINING_BIT == CLA {
            if c.ins == ins::BUILD_REQUEST && c.p1 == RequestKind::PayOnline as u8 {
                assert!(
                    self.ses[i].pin_known,
                    "SE {i} signed a PayOnline request without cardholder verification"
                );
            }
            if c.ins == ins::REDEEM {
                let order = must(RedemptionOrder::from_cbor(&c.data), "REDEEM accepted data");
                assert!(
                    order.se_id == self.ses[i].id,
                    "SE {i} paid a redemption order bound to another SE"
                );
            }
        }
        self.book(i);
        raw
    }

    fn assert_unchanged(
        &self,
        i: usize,
        before: &State,
        iso_pin: bool,
        c: &Option<AssembledCommand>,
        sw_: u16,
    ) {
        let after = self.ses[i].card.applet.state();
        if after == before {
            return;
        }
        let mut expected = before.clone();
        if iso_pin {
            // A wrong PIN costs a try, committed before the comparison:
            // the only change a refused VERIFY makes.
            if let (Some(b), Some(a)) = (expected.pin.as_mut(), after.pin.as_ref()) {
                assert!(
                    a.tries_left + 1 == b.tries_left,
                    "SE {i}: a refused PIN command moved the try counter from {} to {}",
                    b.tries_left,
                    a.tries_left
                );
                b.tries_left = a.tries_left;
            }
        }
        let (ins_, p1) = c.as_ref().map(|c| (c.ins, c.p1)).unwrap_or((0, 0));
        assert!(
            expected.to_cbor() == after.to_cbor(),
            "SE {i}: refused command (INS {ins_:02X} P1 {p1:02X}, SW {sw_:04X}) changed its state"
        );
    }

    /// Books what SE `i`'s last command did to value: packages it signed,
    /// tokens it gained (each from an Issue issued to it or a package
    /// paying it, each once), and checks the per-SE oracle.
    fn book(&mut self, i: usize) {
        let st = self.ses[i].card.applet.state().clone();
        for o in &st.outgoing {
            if self.sent.contains_key(&o.transfer_id) {
                continue;
            }
            self.stats.packages += 1;
            let se = &mut self.ses[i];
            se.value.paid += u128::from(o.amount.0);
            if o.redemption {
                assert!(
                    self.orders.get(&o.nonce) == Some(&i),
                    "SE {i} paid a redemption the DCP never ordered for it"
                );
                self.redeemed += u128::from(o.amount.0);
            } else {
                if !se.pin_known {
                    assert_no_pin_payment(i, o.amount.0, se.no_pin_paid);
                }
                se.no_pin_paid += u128::from(o.amount.0);
                self.unreceived += u128::from(o.amount.0);
            }
            self.sent.insert(
                o.transfer_id,
                Sent {
                    payer: i,
                    amount: o.amount.0,
                    redemption: o.redemption,
                    received: false,
                },
            );
        }
        let now: BTreeSet<OutPoint> = st.tokens.iter().map(|t| t.outpoint).collect();
        for t in &st.tokens {
            if self.ses[i].tokens.contains(&t.outpoint) {
                continue;
            }
            assert!(
                self.ses[i].ever.insert(t.outpoint),
                "SE {i} holds token {:?} again after spending it",
                t.outpoint
            );
            if let Some(&(to, value)) = self.issued.get(&t.outpoint.record) {
                assert!(to == i, "SE {i} credited an Issue issued to SE {to}");
                assert!(t.value.0 == value, "SE {i} credited another value");
                self.ses[i].value.loaded += u128::from(value);
                self.stats.credited += 1;
            } else if let Some(s) = self.sent.get_mut(&t.outpoint.record) {
                if t.outpoint.index == 0 {
                    assert!(!s.redemption, "SE {i} received a redemption package");
                    assert!(!s.received, "a package was received twice (SE {i})");
                    assert!(t.value.0 == s.amount, "SE {i} received another value");
                    s.received = true;
                    self.unreceived -= u128::from(s.amount);
                    self.ses[i].value.received += u128::from(s.amount);
                    self.stats.received += 1;
                } else {
                    assert!(s.payer == i, "SE {i} holds the change of SE {}", s.payer);
                }
            } else {
                panic!("SE {i} holds a token of a record nobody legitimately made");
            }
        }
        let se = &mut self.ses[i];
        se.tokens = now;
        se.value.balance = st.balance().0;
        assert_value_conserved(i, &se.value);
    }

    fn assert_total(&self) {
        let balances = self.ses.iter().map(|s| u128::from(s.value.balance)).sum();
        assert_total_conserved(balances, self.unreceived, self.redeemed, self.issued_total);
    }

    /// A whole command (chained, GET RESPONSE collected); its data, which
    /// the attacker remembers, or the status word.
    fn command(
        &mut self,
        i: usize,
        (cla, ins_): (u8, u8),
        p1: u8,
        p2: u8,
        data: &[u8],
        block: usize,
    ) -> Result<Vec<u8>, u16> {
        let le = if block > 255 { 65_536 } else { 256 };
        let Ok(chain) = chunk_command(cla, ins_, p1, p2, data, block, Some(le)) else {
            return Err(0);
        };
        let Some((last, first)) = chain.split_last() else {
            return Err(0);
        };
        for apdu in first {
            let r = must(Response::parse(&self.transmit(i, apdu)), "response");
            if r.sw != sw::OK {
                return Err(r.sw);
            }
        }
        let mut r = must(Response::parse(&self.transmit(i, last)), "response");
        let mut out = Vec::new();
        loop {
            out.extend_from_slice(&r.data);
            if r.sw == sw::OK {
                self.remember(&out);
                return Ok(out);
            }
            if !sw::is_bytes_remaining(r.sw) {
                return Err(r.sw);
            }
            let get = [0x00, 0xC0, 0x00, 0x00, r.sw2()];
            r = must(Response::parse(&self.transmit(i, &get)), "response");
        }
    }

    fn tally(&mut self, i: usize, ins_: u8, p1: u8, data: &[u8]) -> Result<Vec<u8>, u16> {
        self.command(i, (CLA, ins_), p1, 0, data, 255)
    }

    /// The `n`-th most recent entry of a pool (0: the latest), modulo its
    /// length.
    fn pick(pool: &[Vec<u8>], n: u8) -> Option<Vec<u8>> {
        let i = pool
            .len()
            .checked_sub(1 + usize::from(n) % pool.len().max(1))?;
        Some(pool[i].clone())
    }

    fn amount(sel: u8) -> u64 {
        ADVERSARY_AMOUNTS[usize::from(sel) % ADVERSARY_AMOUNTS.len()]
    }

    fn build(&mut self, i: usize, params: &RequestParams) -> Option<DeviceRequest> {
        let kind = params.kind() as u8;
        let bytes = self
            .tally(i, ins::BUILD_REQUEST, kind, &params.encode())
            .ok()?;
        Some(must(
            DeviceRequest::from_cbor(&bytes),
            "BUILD REQUEST response",
        ))
    }

    fn run(&mut self, step: &Step) {
        match step {
            Step::Raw { se, apdu } => {
                let i = self.se(*se);
                let raw = self.transmit(i, apdu);
                if let Ok(r) = Response::parse(&raw) {
                    self.remember(&r.data);
                }
            }
            Step::Replay {
                msg,
                se,
                ins: which,
                p1,
                block,
            } => {
                let Some(m) = Self::pick(&self.messages, *msg) else {
                    return;
                };
                let i = self.se(*se);
                let target = ADVERSARY_INS[usize::from(*which) % ADVERSARY_INS.len()];
                let block = BLOCKS[usize::from(*block) % BLOCKS.len()];
                let _ = self.command(i, target, *p1, 0, &m, block);
            }
            Step::Mutate {
                msg,
                se,
                ins: which,
                how,
                pos,
                mask,
            } => {
                let Some(mut m) = Self::pick(&self.messages, *msg) else {
                    return;
                };
                if m.is_empty() {
                    return;
                }
                let pos = usize::from(*pos);
                let at = pos % m.len();
                let bit_at = pos / 8 % m.len();
                match how % 4 {
                    0 => m[bit_at] ^= 1 << (pos % 8),
                    1 => m.truncate(at),
                    2 => m[at] ^= mask | 1,
                    _ => m.extend(core::iter::repeat_n(*mask, pos % 8 + 1)),
                }
                let i = self.se(*se);
                let target = ADVERSARY_INS[usize::from(*which) % ADVERSARY_INS.len()];
                let _ = self.command(i, target, 0, 0, &m, 255);
            }
            Step::Request { payee, amount } => {
                let i = self.se(*payee);
                if let Ok(r) = self.tally(
                    i,
                    ins::CREATE_REQUEST,
                    0,
                    &encode_u64(Self::amount(*amount)),
                ) {
                    self.requests.push(r);
                }
            }
            Step::Pay { payer, request } => {
                let Some(r) = Self::pick(&self.requests, *request) else {
                    return;
                };
                let i = self.se(*payer);
                if let Ok(p) = self.tally(i, ins::PAY, 0, &r) {
                    self.packages.push(p);
                }
            }
            Step::Receive { payee, package } => {
                let Some(p) = Self::pick(&self.packages, *package) else {
                    return;
                };
                let i = self.se(*payee);
                if let Ok(r) = self.command(i, (CLA, ins::RECEIVE), 0, 0, &p, 4096) {
                    self.receipts.push(r);
                }
            }
            Step::Ack { payer, receipt } => {
                let Some(r) = Self::pick(&self.receipts, *receipt) else {
                    return;
                };
                let i = self.se(*payer);
                let _ = self.tally(i, ins::ACK, 0, &r);
            }
            Step::Load {
                se,
                amount,
                deliver,
            } => {
                let i = self.se(*se);
                let amount = Self::amount(*amount);
                let Some(req) = self.build(i, &RequestParams::Load { amount }) else {
                    return;
                };
                let DeviceOp::Load { amount, key } = req.op else {
                    panic!("SE {i} answered a Load with another request")
                };
                self.serial += 1;
                let fx = self.fx;
                let issue = Issue::sign(
                    &fx.scheme.dcp,
                    self.serial,
                    fx.scheme.epoch + 20,
                    alloc::vec![Output {
                        value: Amount(amount),
                        owner: key,
                    }],
                );
                self.issued.insert(issue.id(), (i, amount));
                self.issued_total += u128::from(amount);
                let bytes = issue.to_cbor();
                self.remember(&bytes);
                if *deliver {
                    let _ = self.tally(i, ins::IMPORT_ISSUE, 0, &bytes);
                }
            }
            Step::Redeem { se, amount, flags } => {
                let i = self.se(*se);
                self.serial += 1;
                let mut nonce = [0u8; 16];
                nonce.copy_from_slice(
                    &tagged_hash(b"tally/v1/fuzz-order", &[&self.serial.to_be_bytes()]).0[..16],
                );
                let request = Request::sign(
                    &self.fx.scheme.dcp,
                    Amount(Self::amount(*amount)),
                    nonce,
                    self.fx.redemption_payee.clone(),
                    self.fx.scheme.epoch,
                );
                let order = RedemptionOrder::sign(
                    &self.fx.scheme.dcp,
                    self.ses[i].id,
                    flags & 1 == 1,
                    request,
                );
                self.orders.insert(nonce, i);
                let bytes = order.to_cbor();
                self.remember(&bytes);
                if flags & 2 != 0
                    && let Ok(p) = self.tally(i, ins::REDEEM, 0, &bytes)
                {
                    self.packages.push(p);
                }
            }
            Step::Sync { se } => {
                let i = self.se(*se);
                self.ses[i].sync_sequence += 1;
                let grant = self
                    .fx
                    .scheme
                    .sync_grant(self.ses[i].id, self.ses[i].sync_sequence);
                let bytes = grant.to_cbor();
                self.remember(&bytes);
                let _ = self.tally(i, ins::SYNC, 0, &bytes);
            }
            Step::Certify { se, n } => {
                let i = self.se(*se);
                let Some(req) = self.build(i, &RequestParams::Certify { n: n % 3 + 1 }) else {
                    return;
                };
                let DeviceOp::Certify { keys } = req.op else {
                    panic!("SE {i} answered a Certify with another request")
                };
                for k in keys {
                    let cert = self.fx.scheme.certify(k, CARD, 0).to_cbor();
                    self.remember(&cert);
                    let _ = self.tally(i, ins::INSTALL_CERTIFICATE, 0, &cert);
                }
            }
            Step::WrongPin { se, pin } => {
                let i = self.se(*se);
                let mut pin = pin.clone();
                if pin == ADVERSARY_PIN {
                    pin[0] ^= 1;
                }
                let _ = self.command(i, (CLA_ISO, ins::VERIFY), 0, 0x80, &pin, 255);
            }
            Step::Reboot { se } => {
                let i = self.se(*se);
                let s = &mut self.ses[i];
                s.reboots += 1;
                let label = format!("adversary/se{i}/reboot{}", s.reboots);
                let blank = Card::new(boot(
                    MemStorage::new(1024),
                    Sealing::None,
                    b"adversary/placeholder",
                ));
                let old = core::mem::replace(&mut s.card, blank);
                let state = old.applet.state().clone();
                let applet = boot(old.applet.into_storage(), Sealing::None, label.as_bytes());
                assert!(
                    applet.state() == &state,
                    "SE {i} rebooted into another state"
                );
                s.card = Card::new(applet);
                s.mirror.reset();
                let r = self.transmit(i, &select_apdu());
                assert_eq!(r, [0x90, 0x00], "SELECT after reboot failed");
            }
            Step::Build { se, kind, amount } => {
                let i = self.se(*se);
                let a = Self::amount(*amount);
                let params = match kind % 7 {
                    0 => RequestParams::Certify { n: (a % 5) as u8 },
                    1 => RequestParams::Load { amount: a },
                    2 => RequestParams::RedemptionRequest {
                        amount: a,
                        unload: a % 2 == 1,
                    },
                    3 => RequestParams::Redeem {
                        nonce: [0; 16],
                        sealed_digest: Hash32::default(),
                    },
                    4 => RequestParams::Sync {
                        sealed_digest: Hash32::default(),
                    },
                    5 => RequestParams::PayOnline {
                        to_account: String::from("mallory"),
                        amount: a,
                    },
                    _ => RequestParams::Balance,
                };
                let _ = self.build(i, &params);
            }
            Step::Plain {
                se,
                ins: which,
                p1,
                p2,
            } => {
                let i = self.se(*se);
                let target = ADVERSARY_INS[usize::from(*which) % ADVERSARY_INS.len()];
                let _ = self.command(i, target, *p1, *p2, &[], 255);
            }
        }
    }
}

/// `adversarial_terminal`: runs the program in `data` ([`decode_program`])
/// against fresh boots of the fixture's cards. Panics on a violation:
/// - value created: for each SE, balance plus value of the packages it
///   signed exceeds the value of the DCP's Issues credited to it plus the
///   honest packages it received; for all together, balances plus
///   unreceived packages plus redemptions exceed what the DCP issued;
/// - an Issue credited twice, or to an SE it was not issued to; a package
///   received twice; a token held again after it was spent; a token from a
///   record nobody legitimately made;
/// - a PayOnline request signed, or an offline payment above the no-PIN
///   limits made, while the cardholder was never verified;
/// - a REDEEM answered for an order bound to another SE, or a redemption
///   paid that the DCP never ordered for this SE;
/// - a refused command that changed the SE's state (a refused VERIFY may
///   only take one try off the counter);
/// - a response without a status word, or a reboot into another state.
pub fn check_adversarial_terminal(fx: &AdversaryFixture, data: &[u8]) {
    run_adversarial_terminal(fx, data);
}

/// [`check_adversarial_terminal`], returning what the run did.
pub fn run_adversarial_terminal(fx: &AdversaryFixture, data: &[u8]) -> AdversaryStats {
    let (three, steps) = decode_program(data);
    let mut run = Adversary::new(fx, if three { 3 } else { 2 });
    for step in &steps {
        run.run(step);
        run.assert_total();
        run.stats.steps += 1;
    }
    run.stats
}

/// Seed programs of `adversarial_terminal`: the honest protocol, and each
/// attack of issue 9 as a first move for the fuzzer to build on.
pub fn adversarial_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Step::*;
    // Indices of the command table (ADVERSARY_INS).
    const GET_DATA: u8 = 0;
    const RECEIVE: u8 = 4;
    const ACK: u8 = 5;
    const RESEND: u8 = 6;
    const REDEEM: u8 = 7;
    const CLOSE: u8 = 8;
    const SYNC: u8 = 14;
    const IMPORT: u8 = 15;
    const BUILD: u8 = 16;
    const VERIFY: u8 = 18;
    const CHANGE_PIN: u8 = 19;
    // Amount selectors (ADVERSARY_AMOUNTS).
    const A7: u8 = 1;
    const A40: u8 = 2;
    const A99: u8 = 3;
    const A100: u8 = 4;
    const A150: u8 = 6;
    const A1000: u8 = 8;
    let replay = |msg, se, ins| Replay {
        msg,
        se,
        ins,
        p1: 0,
        block: 0,
    };
    let mut seeds = Vec::new();
    seeds.push((
        "honest_payments.bin",
        encode_program(
            true,
            &[
                Request {
                    payee: 1,
                    amount: A40,
                },
                Pay {
                    payer: 0,
                    request: 0,
                },
                Receive {
                    payee: 1,
                    package: 0,
                },
                Ack {
                    payer: 0,
                    receipt: 0,
                },
                Request {
                    payee: 0,
                    amount: A7,
                },
                Pay {
                    payer: 1,
                    request: 0,
                },
                Receive {
                    payee: 0,
                    package: 0,
                },
                Ack {
                    payer: 1,
                    receipt: 0,
                },
                Load {
                    se: 2,
                    amount: A99,
                    deliver: true,
                },
                Request {
                    payee: 0,
                    amount: A40,
                },
                Pay {
                    payer: 2,
                    request: 0,
                },
                Receive {
                    payee: 0,
                    package: 0,
                },
                Ack {
                    payer: 2,
                    receipt: 0,
                },
                Sync { se: 0 },
                Sync { se: 1 },
                Certify { se: 2, n: 1 },
                Plain {
                    se: 0,
                    ins: GET_DATA,
                    p1: 0,
                    p2: 1,
                },
            ],
        ),
    ));
    // Attack 2: the Issue again after its token was spent, to every SE.
    let mut issue_replay = alloc::vec![
        Load {
            se: 0,
            amount: A99,
            deliver: true
        },
        replay(1, 0, IMPORT),
        Request {
            payee: 1,
            amount: A99
        },
        Pay {
            payer: 0,
            request: 0
        },
        Receive {
            payee: 1,
            package: 0
        },
        Ack {
            payer: 0,
            receipt: 0
        },
    ];
    for m in 0..8 {
        issue_replay.push(replay(m, 0, IMPORT));
        issue_replay.push(replay(m, 1, IMPORT));
    }
    issue_replay.push(Sync { se: 0 });
    issue_replay.push(replay(6, 0, IMPORT));
    issue_replay.push(Reboot { se: 0 });
    issue_replay.push(replay(7, 0, IMPORT));
    seeds.push((
        "issue_replay_after_spending.bin",
        encode_program(false, &issue_replay),
    ));
    // Attack 3a and cardholder verification: PayOnline without the PIN,
    // wrong PINs, payments above the no-PIN limits, a reboot between.
    seeds.push((
        "no_pin_online_and_limits.bin",
        encode_program(
            false,
            &[
                Build {
                    se: 0,
                    kind: 5,
                    amount: A1000,
                },
                WrongPin {
                    se: 0,
                    pin: b"0000".to_vec(),
                },
                Build {
                    se: 0,
                    kind: 5,
                    amount: A7,
                },
                Request {
                    payee: 1,
                    amount: A150,
                },
                Pay {
                    payer: 0,
                    request: 0,
                },
                Request {
                    payee: 1,
                    amount: A100,
                },
                Pay {
                    payer: 0,
                    request: 0,
                },
                Receive {
                    payee: 1,
                    package: 0,
                },
                Request {
                    payee: 1,
                    amount: A100,
                },
                Pay {
                    payer: 0,
                    request: 0,
                },
                Request {
                    payee: 1,
                    amount: A100,
                },
                Pay {
                    payer: 0,
                    request: 0,
                },
                Plain {
                    se: 0,
                    ins: VERIFY,
                    p1: 0,
                    p2: 0x80,
                },
                WrongPin {
                    se: 0,
                    pin: b"1234".to_vec(),
                },
                Reboot { se: 0 },
                WrongPin {
                    se: 0,
                    pin: b"123456".to_vec(),
                },
                Pay {
                    payer: 0,
                    request: 0,
                },
                Build {
                    se: 0,
                    kind: 5,
                    amount: A7,
                },
                replay(0, 0, CHANGE_PIN),
                Plain {
                    se: 1,
                    ins: BUILD,
                    p1: 5,
                    p2: 0,
                },
            ],
        ),
    ));
    // Attack 3b: another SE's redemption order, a forged one (mutated),
    // the genuine one twice, its package to an honest payee.
    seeds.push((
        "redemption_orders.bin",
        encode_program(
            true,
            &[
                Redeem {
                    se: 0,
                    amount: A40,
                    flags: 0,
                },
                replay(0, 1, REDEEM),
                replay(0, 2, REDEEM),
                Mutate {
                    msg: 0,
                    se: 0,
                    ins: REDEEM,
                    how: 2,
                    pos: 40,
                    mask: 0x10,
                },
                replay(0, 0, REDEEM),
                replay(0, 0, REDEEM),
                Receive {
                    payee: 1,
                    package: 0,
                },
                Redeem {
                    se: 1,
                    amount: A100,
                    flags: 3,
                },
                Receive {
                    payee: 2,
                    package: 0,
                },
                replay(0, 1, RECEIVE),
                replay(0, 2, RECEIVE),
                Build {
                    se: 0,
                    kind: 2,
                    amount: A40,
                },
                Build {
                    se: 0,
                    kind: 3,
                    amount: A40,
                },
            ],
        ),
    ));
    // Attack 5 and the message protocol out of order: dropped, reordered
    // and replayed requests, packages and receipts; sync in between.
    seeds.push((
        "drop_reorder_resend.bin",
        encode_program(
            false,
            &[
                Request {
                    payee: 1,
                    amount: A40,
                },
                Request {
                    payee: 1,
                    amount: A7,
                },
                Pay {
                    payer: 0,
                    request: 1,
                },
                Pay {
                    payer: 0,
                    request: 0,
                },
                Receive {
                    payee: 1,
                    package: 0,
                },
                Plain {
                    se: 1,
                    ins: CLOSE,
                    p1: 0,
                    p2: 0,
                },
                Receive {
                    payee: 1,
                    package: 1,
                },
                Receive {
                    payee: 1,
                    package: 0,
                },
                Ack {
                    payer: 0,
                    receipt: 0,
                },
                Ack {
                    payer: 1,
                    receipt: 0,
                },
                Sync { se: 0 },
                Pay {
                    payer: 0,
                    request: 1,
                },
                Receive {
                    payee: 1,
                    package: 0,
                },
                replay(0, 0, RESEND),
                replay(0, 0, ACK),
                replay(2, 1, SYNC),
                Pay {
                    payer: 1,
                    request: 0,
                },
                Reboot { se: 1 },
                Receive {
                    payee: 1,
                    package: 1,
                },
            ],
        ),
    ));
    // Mutations of packages, receipts, Issues, certificates and grants.
    let mut mutations = alloc::vec![
        Load {
            se: 1,
            amount: A40,
            deliver: false
        },
        Request {
            payee: 1,
            amount: A40
        },
        Pay {
            payer: 0,
            request: 0
        },
    ];
    for (k, how) in [(0u16, 0u8), (7, 1), (90, 2), (3, 3), (400, 0), (33, 2)] {
        mutations.push(Mutate {
            msg: 0,
            se: 1,
            ins: RECEIVE,
            how,
            pos: k * 13,
            mask: 0x41,
        });
        mutations.push(Mutate {
            msg: 3,
            se: 1,
            ins: IMPORT,
            how,
            pos: k * 5,
            mask: 0x80,
        });
    }
    mutations.push(Receive {
        payee: 1,
        package: 0,
    });
    for k in 0..6u16 {
        mutations.push(Mutate {
            msg: 0,
            se: 0,
            ins: ACK,
            how: k as u8,
            pos: k * 31,
            mask: 0x01,
        });
        mutations.push(Mutate {
            msg: 10 + k as u8,
            se: 0,
            ins: SYNC,
            how: 2,
            pos: k,
            mask: 0xFF,
        });
    }
    seeds.push(("mutations.bin", encode_program(false, &mutations)));
    // Raw APDUs: broken chains, stray GET RESPONSE, wrong class, an
    // unknown INS, extended lengths, a SELECT of another application.
    seeds.push((
        "raw_apdus.bin",
        encode_program(
            false,
            &[
                Raw {
                    se: 0,
                    apdu: alloc::vec![0x90, ins::PAY, 0, 0, 2, 0xA4, 0x61],
                },
                Raw {
                    se: 0,
                    apdu: alloc::vec![0x80, ins::RECEIVE, 0, 0, 1, 0x01],
                },
                Raw {
                    se: 0,
                    apdu: alloc::vec![0x00, 0xC0, 0, 0, 0],
                },
                Raw {
                    se: 1,
                    apdu: alloc::vec![0x80, 0xEE, 0, 0, 3, 1, 2, 3],
                },
                Raw {
                    se: 1,
                    apdu: alloc::vec![0x80, ins::GET_DATA, 0, 2, 0, 0, 0],
                },
                Raw {
                    se: 1,
                    apdu: alloc::vec![0x00, ins::SELECT, 4, 0, 2, 0xF0, 0x54],
                },
                Raw {
                    se: 1,
                    apdu: alloc::vec![0x80, ins::GET_DATA, 0, 1, 0],
                },
                Raw {
                    se: 0,
                    apdu: alloc::vec![0x00, ins::VERIFY, 0, 0x80, 0],
                },
                Raw {
                    se: 0,
                    apdu: alloc::vec![0x00, ins::CHANGE_REFERENCE_DATA, 1, 0x80, 4, 1, 2, 3, 4],
                },
                Raw {
                    se: 0,
                    apdu: alloc::vec![0x80, ins::BUILD_REQUEST, 6, 0, 0],
                },
                Raw {
                    se: 0,
                    apdu: alloc::vec![
                        0x80,
                        ins::BUILD_REQUEST,
                        5,
                        0,
                        11,
                        0x82,
                        0x67,
                        b'm',
                        b'a',
                        b'l',
                        b'l',
                        b'o',
                        b'r',
                        b'y',
                        0x18,
                        0x64
                    ],
                },
            ],
        ),
    ));
    seeds
}
