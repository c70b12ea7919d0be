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
pub const CBOR_KINDS: [&str; 23] = [
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
        21 => round_trip::<tally_core::dcp::ClosedRequest>(bytes),
        _ => {
            // BUILD REQUEST's command data: the next byte is the kind.
            let Some((&kind, data)) = bytes.split_first() else {
                return;
            };
            if let Ok(p) = tally_se::RequestParams::decode(kind, data) {
                assert!(p.encode() == data, "request parameters re-encode to other bytes");
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
        let request = Request {
            amount: Amount(PAYMENT_AMOUNT),
            nonce,
            payee: scheme.certify(payee.public(), PHONE, 0),
            payee_epoch: scheme.epoch,
        };
        let expected = Expected {
            payee: payee.public(),
            amount: request.amount,
            nonce,
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

fn select_apdu() -> Vec<u8> {
    let mut apdu = alloc::vec![0x00, ins::SELECT, 0x04, 0x00, AID.len() as u8];
    apdu.extend_from_slice(AID);
    apdu
}

/// `se_dispatch`: a loaded card takes the frames as APDUs. It always
/// answers a status word; value is never created (the balance stays within
/// what was loaded) nor lost unrecorded (balance plus logged payments covers
/// it); and a reboot recovers exactly the state in memory.
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
    let logged = Amount::sum(state.outgoing.iter().map(|o| o.amount));
    let covered = logged.and_then(|l| l.checked_add(balance));
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
    let closed = tally_core::dcp::ClosedRequest {
        nonce: fx.request.nonce,
        amount: fx.request.amount.0,
        key: fx.payee.public(),
        signature: fx.payee.sign(
            &tally_core::dcp::ClosedRequest::signed_message(
                &fx.request.nonce,
                fx.request.amount.0,
                &fx.payee.public(),
            )
            .0,
        ),
    };
    let mut params = alloc::vec![5u8];
    params.extend_from_slice(
        &tally_se::RequestParams::PayOnline {
            to_account: "alice".into(),
            amount: 250,
        }
        .encode(),
    );
    for (i, bytes) in [
        (19usize, order.to_cbor()),
        (20, maker.to_cbor()),
        (21, closed.to_cbor()),
        (22, params),
    ] {
        let mut input = alloc::vec![i as u8];
        input.extend_from_slice(&bytes);
        seed("cbor_objects", &format!("{}.bin", CBOR_KINDS[i]), input);
    }
    let mut issue_record = alloc::vec![2u8];
    issue_record.extend_from_slice(&Record::Issue(issue.clone()).to_cbor());
    seed("cbor_objects", "record_issue.bin", issue_record);

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
    let redemption = Request {
        amount: Amount(300),
        nonce: [0x52; 16],
        payee: fx.scheme.certify(fx.scheme.dcp.public(), DCP, 0),
        payee_epoch: fx.scheme.epoch,
    };
    let order = tally_core::dcp::RedemptionOrder::sign(&fx.scheme.dcp, se_id, false, redemption);
    rec.command(ins::REDEEM, 0, 0, &order.to_cbor(), 255);
    seed(
        "se_dispatch",
        "admin_replays_redeem.bin",
        core::mem::take(&mut rec.frames),
    );

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
