//! Payment streams (issue 13 item 1, decision 0020): an OPEN payment that
//! locks the value for the payee, ticks between every pair of device
//! classes over APDUs, refusals of replayed, skipped and forged elements
//! with their codes and no state change, closes by either side into a
//! claim and a refund that are ordinary tokens (paid on and verified as
//! settlement verifies them), value conserved at every step, a power cut
//! at every write of an OPEN, a tick and a close on both sides, and the
//! flash a tick writes.

use tally_codes as codes;
use tally_core::Hash32;
use tally_core::codec::Cbor;
use tally_core::policy::device_class::{CARD, IOT, PHONE};
use tally_core::stream::{StreamAsk, reaches_anchor, stream_id};
use tally_core::testkit::{Scheme, TestEntropy};
use tally_core::{Amount, Suite};
use tally_se::state::State;
use tally_se::storage::{MemStorage, TearMode, TearingStorage};
use tally_se::{Applet, Sealing};
use tally_wallet::WalletError;
use tally_wallet::link::SeLink;
use tally_wallet::stream::{StreamLink, open_stream, stream_tick, stream_ticks};
use tally_wallet::testkit::{TEST_STORAGE_BYTES, TestDevice, load, provision};

fn apdu_size(class: u8) -> usize {
    if class == CARD { 255 } else { 4096 }
}

fn device(scheme: &Scheme, label: &str, class: u8) -> TestDevice {
    TestDevice::new(scheme, label.as_bytes(), class, apdu_size(class)).expect("provision")
}

fn refused(r: Result<impl std::fmt::Debug, WalletError>, code: u16) {
    match r {
        Err(WalletError::Refused { code: c }) => assert_eq!(c, code, "refusal code"),
        other => panic!("expected refusal {code}, got {other:?}"),
    }
}

const PRICE: Amount = Amount(3);
const TICKS: u32 = 200;

const FUNDS: u64 = 1_000;

fn stream_between(payer_class: u8, payee_class: u8, payer_closes_first: bool) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = device(&scheme, "payer", payer_class);
    let mut payee = device(&scheme, "payee", payee_class);
    load(&mut payer.link, &mut scheme, payer_class, FUNDS).unwrap();
    let id = open_stream(&mut payer.link, &mut payee.link, PRICE, TICKS).unwrap();
    // The OPEN locked the stream's value: it left the payer and is not
    // (yet) the payee's to spend.
    let value = PRICE.0 * u64::from(TICKS);
    assert_eq!(payer.balance().unwrap(), Amount(FUNDS - value));
    assert_eq!(payee.balance().unwrap(), Amount::ZERO);
    let anchor = payee.applet().stream_anchor(&id).unwrap();

    let elements = stream_ticks(&mut payer.link, &mut payee.link, &id, 1, 40).unwrap();
    assert_eq!(elements.len(), 40);

    // The terminal replays, skips and forges: each refused with its code,
    // and the payee SE's state does not change.
    let before = payee.applet().state().clone();
    // The tick it holds again, with its element (a retry): the same answer.
    assert_eq!(
        payee.link.accept_tick(&id, 40, &elements[39]).unwrap(),
        Amount(PRICE.0 * 40)
    );
    refused(
        payee.link.accept_tick(&id, 40, &elements[38]),
        codes::SE_STREAM_REPLAYED,
    );
    refused(
        payee.link.accept_tick(&id, 12, &elements[11]),
        codes::SE_STREAM_REPLAYED,
    );
    let e42 = payer.link.release_tick(&id, 41).unwrap();
    let e42b = payer.link.release_tick(&id, 41).unwrap();
    assert_eq!(e42, e42b, "a lost answer is released again, the same");
    refused(
        payee.link.accept_tick(&id, 42, &e42),
        codes::SE_STREAM_SKIPPED,
    );
    refused(
        payee.link.accept_tick(&id, 41, &Hash32([7; 32])),
        codes::SE_STREAM_FORGED,
    );
    refused(
        payee.link.accept_tick(&id, 41, &elements[39]),
        codes::SE_STREAM_FORGED,
    );
    refused(
        payee.link.accept_tick(&Hash32([1; 32]), 41, &e42),
        codes::SE_STREAM_UNKNOWN,
    );
    assert_eq!(*payee.applet().state(), before, "refusals change nothing");
    // The payer releases no tick out of order either.
    refused(payer.link.release_tick(&id, 43), codes::SE_STREAM_SKIPPED);
    refused(payer.link.release_tick(&id, 40), codes::SE_STREAM_REPLAYED);
    assert_eq!(
        payee.link.accept_tick(&id, 41, &e42).unwrap(),
        Amount(PRICE.0 * 41)
    );
    // Released but never delivered: tick 42 (the leftover, decision 0020).
    payer.link.release_tick(&id, 42).unwrap();

    let (released, claim) = if payer_closes_first {
        let released = payer.link.close_stream_out(&id).unwrap();
        refused(payer.link.release_tick(&id, 43), codes::SE_STREAM_CLOSED);
        (released, payee.link.close_stream_in(&id).unwrap())
    } else {
        let claim = payee.link.close_stream_in(&id).unwrap();
        let e = payer.link.release_tick(&id, 42).unwrap();
        refused(payee.link.accept_tick(&id, 42, &e), codes::SE_STREAM_CLOSED);
        (payer.link.close_stream_out(&id).unwrap(), claim)
    };
    assert_eq!(released, 42);
    assert_eq!(claim.ticks, 41);
    assert_eq!(claim.value, Amount(PRICE.0 * 41));
    assert!(
        claim.ticks <= released,
        "the payee holds only what was released"
    );
    assert!(reaches_anchor(&claim.element, claim.ticks, TICKS, &anchor));
    assert!(!reaches_anchor(
        &claim.element,
        claim.ticks + 1,
        TICKS,
        &anchor
    ));
    // Closing again answers the same, and closes nothing twice.
    assert_eq!(payee.link.close_stream_in(&id).unwrap(), claim);
    assert_eq!(payer.link.close_stream_out(&id).unwrap(), released);
    // The claim and the refund are tokens: the payee holds 41 ticks, the
    // payer the 158 it never released; tick 42 (released, never taken) is
    // the leftover nobody holds.
    let refund = PRICE.0 * u64::from(TICKS - released);
    assert_eq!(payee.balance().unwrap(), claim.value);
    assert_eq!(payer.balance().unwrap(), Amount(FUNDS - value + refund));
    assert_eq!(
        claim.value.0 + refund + PRICE.0 * u64::from(released - claim.ticks),
        value,
        "claim + refund + leftover = the value locked"
    );
    // Both pay on like any token, and their packages pass settlement's
    // rules, the claim's chain walked to the anchor.
    for (from, amount) in [(&mut payee, claim.value), (&mut payer, Amount(refund))] {
        let mut third = device(&scheme, "third", PHONE);
        let request = third.link.create_request(amount).unwrap();
        let package = from.link.pay(&request).unwrap();
        let pkg = tally_core::Package::from_cbor(&package).unwrap();
        tally_core::verify::verify_package_for_settlement(
            pkg,
            &scheme.trust(),
            scheme.params(32),
            &mut tally_core::verify::NoCache,
        )
        .expect("settlement accepts the close's token");
        let receipt = third.link.receive(&package).unwrap();
        from.link.ack(&receipt).unwrap();
        assert_eq!(third.balance().unwrap(), amount);
    }
}

#[test]
fn card_to_phone_payee_closes_first() {
    stream_between(CARD, PHONE, false);
}

#[test]
fn phone_to_card_payer_closes_first() {
    stream_between(PHONE, CARD, true);
}

#[test]
fn phone_to_phone() {
    stream_between(PHONE, PHONE, false);
}

#[test]
fn iot_to_iot() {
    stream_between(IOT, IOT, true);
}

#[test]
fn iot_to_card_and_card_to_iot() {
    stream_between(IOT, CARD, false);
    stream_between(CARD, IOT, true);
}

#[test]
fn iot_to_phone_and_phone_to_iot() {
    stream_between(IOT, PHONE, true);
    stream_between(PHONE, IOT, false);
}

#[test]
fn card_to_card() {
    stream_between(CARD, CARD, false);
}

#[test]
fn bad_terms_are_refused() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = device(&scheme, "payer", IOT);
    let mut payee = device(&scheme, "payee", CARD);
    load(&mut payer.link, &mut scheme, IOT, 1_000).unwrap();
    let ask = |price, ticks_max| StreamAsk {
        price: Amount(price),
        ticks_max,
    };
    for bad in [
        ask(0, 10),
        ask(1, 0),
        ask(1, (1 << 16) + 1),
        ask(u64::MAX / 2, 4),
    ] {
        refused(
            payee.link.create_stream_request(bad),
            codes::SE_STREAM_TERMS,
        );
    }
    // Eight streams each way at most; a closed one makes room (the oldest
    // closed one is dropped).
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(open_stream(&mut payer.link, &mut payee.link, Amount(1), 4).unwrap());
    }
    let before = (payer.balance().unwrap(), payee.applet().state().clone());
    let request = payee.link.create_stream_request(ask(1, 4)).unwrap();
    refused(payer.link.pay(&request), codes::SE_LIMIT_STREAMS);
    assert_eq!(
        payer.balance().unwrap(),
        before.0,
        "a refused OPEN locks nothing"
    );
    payer.link.close_stream_out(&ids[3]).unwrap();
    let package = payer.link.pay(&request).unwrap();
    // The payee is full of open streams: it refuses the OPEN, changing
    // nothing; a closed stream makes room and the same package is taken.
    let full = payee.applet().state().clone();
    refused(payee.link.receive(&package), codes::SE_LIMIT_STREAMS);
    assert_eq!(*payee.applet().state(), full);
    payee.link.close_stream_in(&ids[5]).unwrap();
    let receipt = payee.link.receive(&package).unwrap();
    payer.link.ack(&receipt).unwrap();
    let id = stream_id(&receipt.transfer_id, 0);
    refused(
        payer.link.close_stream_out(&ids[3]),
        codes::SE_STREAM_UNKNOWN,
    );
    let outs: Vec<Hash32> = payer.applet().streams().0.iter().map(|s| s.id).collect();
    assert!(outs.len() == 8 && !outs.contains(&ids[3]) && outs.contains(&id));
    let ins: Vec<Hash32> = payee.applet().streams().1.iter().map(|s| s.id).collect();
    assert!(ins.len() == 8 && !ins.contains(&ids[5]) && ins.contains(&id));
}

/// A terminal between the two SEs cannot turn a stream request into a
/// payment or change its terms: the payee's SE signed the ask (and it
/// takes the anchor from the verified OPEN, not from the terminal).
#[test]
fn a_terminal_cannot_change_what_an_open_locks() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut payer = device(&scheme, "payer", IOT);
    let mut payee = device(&scheme, "payee", IOT);
    load(&mut payer.link, &mut scheme, IOT, 1_000).unwrap();
    let request = payee
        .link
        .create_stream_request(StreamAsk {
            price: PRICE,
            ticks_max: 10,
        })
        .unwrap();
    let funds = payer.balance().unwrap();
    // The ask dropped (a one-off payment of the same amount) or changed:
    // the payee's signature no longer holds, the payer's SE refuses.
    let mut one_off = request.clone();
    one_off.stream = None;
    refused(
        payer.link.pay(&one_off),
        codes::SE_REQUEST_SIGNATURE_INVALID,
    );
    let mut dearer = request.clone();
    dearer.stream = Some(StreamAsk {
        price: Amount(6),
        ticks_max: 5,
    });
    refused(payer.link.pay(&dearer), codes::SE_REQUEST_SIGNATURE_INVALID);
    assert_eq!(payer.balance().unwrap(), funds);
    // (A one-off transfer answering the stream request, which no honest
    // payer SE makes, is refused by the payee's verifier: rule SV5,
    // tally-core tests/verifier.rs.)
    // The honest OPEN is taken.
    let package = payer.link.pay(&request).unwrap();
    let receipt = payee.link.receive(&package).unwrap();
    payer.link.ack(&receipt).unwrap();
    assert_eq!(payee.applet().streams().1.len(), 1);
}

// ---- power cuts --------------------------------------------------------------

type Se = Applet<TearingStorage<MemStorage>, TestEntropy>;

fn boot(image: &[u8], cut: Option<(usize, TearMode)>) -> Se {
    let mem = MemStorage::from_bytes(image.to_vec());
    let storage = match cut {
        Some((k, mode)) => TearingStorage::with_cut(mem, k, mode),
        None => TearingStorage::new(mem),
    };
    match Applet::boot(storage, Sealing::None, TestEntropy::new(b"reboot")) {
        Ok(a) => a,
        Err(e) => panic!("boot failed: {e} (cut {cut:?})"),
    }
}

fn power_off(se: Se) -> (Vec<u8>, usize) {
    let t = se.into_storage();
    let writes = t.writes();
    (t.into_inner().into_bytes(), writes)
}

fn released(st: &State) -> u32 {
    st.streams_out[0].released
}

fn ticks(st: &State) -> (u32, Hash32) {
    (st.streams_in[0].ticks, st.streams_in[0].latest)
}

/// Payer and payee mid-stream (`done` ticks delivered), as storage
/// images, with the stream's id and anchor.
fn mid_stream(done: u32, log_max: Option<usize>) -> (Vec<u8>, Vec<u8>, Hash32, Hash32) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let blank = vec![0xFF; TEST_STORAGE_BYTES];
    let mut payer = boot(&blank, None);
    provision(&mut payer, &scheme, IOT, 2).unwrap();
    load(&mut payer, &mut scheme, IOT, 1_000).unwrap();
    let mut payee = boot(&blank, None);
    provision(&mut payee, &scheme, IOT, 2).unwrap();
    if let Some(n) = log_max {
        payer.set_journal_log_max(n);
        payee.set_journal_log_max(n);
    }
    let id = open_stream(&mut payer, &mut payee, PRICE, 64).unwrap();
    stream_ticks(&mut payer, &mut payee, &id, 1, done).unwrap();
    let anchor = payee.stream_anchor(&id).unwrap();
    (power_off(payer).0, power_off(payee).0, id, anchor)
}

/// A power cut at every write of one tick, in every tearing mode, on the
/// payer (release) and then on the payee (accept). After a reboot each SE
/// holds the tick before or after; an element left the payer's SE only if
/// its tick was durable; the payee counts a tick only with its element;
/// the stream then goes on to the end and the payee's claim checks
/// against the anchor. Value conserved: the payee never holds more ticks
/// than the payer released.
fn tick_survives_power_cuts(log_max: Option<usize>) {
    let (payer_image, payee_image, id, anchor) = mid_stream(5, log_max);
    // Reference: how many writes one release and one accept make.
    let mut p = boot(&payer_image, None);
    if let Some(n) = log_max {
        p.set_journal_log_max(n);
    }
    let e6 = p.release_tick(&id, 6).unwrap();
    let (_, release_writes) = power_off(p);
    let mut q = boot(&payee_image, None);
    if let Some(n) = log_max {
        q.set_journal_log_max(n);
    }
    q.accept_tick(&id, 6, e6).unwrap();
    let (_, accept_writes) = power_off(q);
    assert!(release_writes >= 2 && accept_writes >= 2);

    for cut in 1..=release_writes {
        for mode in TearMode::EXHAUSTIVE {
            let mut p = boot(&payer_image, Some((cut, mode)));
            if let Some(n) = log_max {
                p.set_journal_log_max(n);
            }
            let answer = p.release_tick(&id, 6);
            let (image, _) = power_off(p);
            let mut p = boot(&image, None);
            let r = released(p.state());
            assert!(r == 5 || r == 6, "cut {cut} {mode:?}: released {r}");
            if answer.is_ok() {
                assert_eq!(
                    r, 6,
                    "cut {cut} {mode:?}: an element left before its tick was durable"
                );
            }
            // The terminal asks again: the same element either way.
            assert_eq!(p.release_tick(&id, 6).unwrap(), e6, "cut {cut} {mode:?}");
            let mut q = boot(&payee_image, None);
            q.accept_tick(&id, 6, e6).unwrap();
            stream_ticks(&mut p, &mut q, &id, 7, 58).unwrap();
            let claim = q.close_stream_in(&id).unwrap();
            assert_eq!(claim.ticks, 64);
            assert!(reaches_anchor(&claim.element, 64, 64, &anchor));
        }
    }

    for cut in 1..=accept_writes {
        for mode in TearMode::EXHAUSTIVE {
            let mut q = boot(&payee_image, Some((cut, mode)));
            if let Some(n) = log_max {
                q.set_journal_log_max(n);
            }
            let before = ticks(q.state());
            let answer = q.accept_tick(&id, 6, e6);
            let (image, _) = power_off(q);
            let mut q = boot(&image, None);
            let after = ticks(q.state());
            assert!(
                after == before || after == (6, e6),
                "cut {cut} {mode:?}: payee holds {after:?}"
            );
            if answer.is_ok() {
                assert_eq!(after, (6, e6), "cut {cut} {mode:?}: counted, not durable");
            }
            // Delivered again: taken, or answered again if it landed.
            assert_eq!(q.accept_tick(&id, 6, e6).unwrap(), Amount(PRICE.0 * 6));
            assert_eq!(ticks(q.state()), (6, e6));
            let mut p = boot(&payer_image, None);
            assert_eq!(p.release_tick(&id, 6).unwrap(), e6);
            stream_ticks(&mut p, &mut q, &id, 7, 10).unwrap();
            assert!(ticks(q.state()).0 <= released(p.state()));
        }
    }
}

#[test]
fn a_tick_survives_a_power_cut_at_every_write() {
    tick_survives_power_cuts(None);
}

#[test]
fn a_tick_survives_a_power_cut_at_every_write_of_a_compaction() {
    // A log that holds nothing: every tick compacts (the whole state).
    tick_survives_power_cuts(Some(1));
}

#[test]
fn the_payer_resumes_after_a_reboot_without_its_pebbles() {
    let (payer_image, payee_image, id, anchor) = mid_stream(20, None);
    let mut p = boot(&payer_image, None);
    let mut q = boot(&payee_image, None);
    stream_ticks(&mut p, &mut q, &id, 21, 44).unwrap();
    let claim = q.close_stream_in(&id).unwrap();
    assert_eq!(claim.ticks, 64);
    assert!(reaches_anchor(&claim.element, 64, 64, &anchor));
    refused(
        StreamLink::release_tick(&mut p, &id, 65),
        codes::SE_STREAM_EXHAUSTED,
    );
}

/// Flash written per tick on each side: the journal log grows by one
/// small record per tick (figures in decision 0020).
#[test]
fn a_tick_writes_at_most_64_bytes_of_flash_per_device() {
    let (payer_image, payee_image, id, _) = mid_stream(3, None);
    let mut p = boot(&payer_image, None);
    let mut q = boot(&payee_image, None);
    let mut worst = (0usize, 0usize);
    for k in 4..=60 {
        let (p0, q0) = (p.journal_log_bytes(), q.journal_log_bytes());
        stream_tick(&mut p, &mut q, &id, k).unwrap();
        let (p1, q1) = (p.journal_log_bytes(), q.journal_log_bytes());
        assert!(p1 > p0 && q1 > q0, "each tick is one log record");
        worst = (worst.0.max(p1 - p0), worst.1.max(q1 - q0));
    }
    println!(
        "flash per tick: payer {} bytes, payee {} bytes",
        worst.0, worst.1
    );
    assert!(worst.0 <= 64, "payer writes {} bytes per tick", worst.0);
    assert!(worst.1 <= 64, "payee writes {} bytes per tick", worst.1);
}

/// Runs `op` on an SE booted from `image` with a power cut at every write
/// of it, in every tearing mode; after a reboot the SE holds the state
/// before or the state after (`before`, `after` from an uncut run), and
/// `op` run again on the rebooted SE reaches `after`.
fn cut_at_every_write<T: std::fmt::Debug>(
    image: &[u8],
    op: &dyn Fn(&mut Se) -> Result<T, tally_se::SeError>,
) {
    let mut se = boot(image, None);
    let before = se.state().clone();
    op(&mut se).expect("uncut run");
    let after = se.state().clone();
    let (_, writes) = power_off(se);
    assert!(writes >= 2, "a commit is at least two writes");
    assert_ne!(before, after, "the operation changes the state");
    for cut in 1..=writes {
        for mode in TearMode::EXHAUSTIVE {
            let mut se = boot(image, Some((cut, mode)));
            let answer = op(&mut se);
            let (bytes, _) = power_off(se);
            let mut se = boot(&bytes, None);
            let st = se.state().clone();
            assert!(
                st == before || st == after,
                "cut {cut} {mode:?}: a third state"
            );
            if answer.is_ok() {
                assert!(st == after, "cut {cut} {mode:?}: answered, not durable");
            }
            op(&mut se).unwrap_or_else(|e| panic!("cut {cut} {mode:?}: retry refused: {e}"));
            // What the pebbles or entropy hold in RAM is not compared.
            assert_eq!(
                se.state().streams_out,
                after.streams_out,
                "cut {cut} {mode:?}"
            );
            assert_eq!(
                se.state().streams_in,
                after.streams_in,
                "cut {cut} {mode:?}"
            );
        }
    }
}

#[test]
fn opens_and_closes_survive_a_power_cut_at_every_write() {
    let (payer_image, payee_image, id, anchor) = mid_stream(5, None);
    // Opening a second stream: the payee's request, then PAY (a retry
    // answers the same package: opened once) and RECEIVE (a retry answers
    // the same receipt).
    let mut q = boot(&payee_image, None);
    let request = q
        .create_stream_request(StreamAsk {
            price: PRICE,
            ticks_max: 16,
        })
        .unwrap();
    let payee_with_request = power_off(q).0;
    cut_at_every_write(&payer_image, &|se: &mut Se| se.pay(&request));
    let package = boot(&payer_image, None).pay(&request).unwrap();
    cut_at_every_write(&payee_with_request, &|se: &mut Se| se.receive(&package));
    // Closes answer the same again after a cut either way.
    cut_at_every_write(&payer_image, &|se: &mut Se| se.close_stream_out(&id));
    cut_at_every_write(&payee_image, &|se: &mut Se| se.close_stream_in(&id));
    let mut q = boot(&payee_image, None);
    let claim = q.close_stream_in(&id).unwrap();
    assert_eq!(claim.ticks, 5);
    assert!(reaches_anchor(&claim.element, 5, 64, &anchor));
}

/// Deterministic xorshift64* (a failing seed replays).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    CloseOut,
    Release(u32),
    CloseIn,
    Accept(u32, Hash32),
}

fn apply(se: &mut Se, id: &Hash32, op: Op) -> Result<Option<(u32, Hash32)>, tally_se::SeError> {
    match op {
        Op::CloseOut => se.close_stream_out(id).map(|_| None),
        Op::Release(k) => se.release_tick(id, k).map(|e| Some((k, e))),
        Op::CloseIn => se.close_stream_in(id).map(|_| None),
        Op::Accept(k, e) => se.accept_tick(id, k, e).map(|_| None),
    }
}

/// A hostile terminal between the two SEs, with power cuts: random
/// releases and accepts (replayed, skipped, forged or honest elements),
/// closes, and a power cut at a random write of a random command, each
/// command on a freshly booted SE. After every step: the SE holds the
/// state before or the state the command makes (the latter if it
/// answered), a refusal changed nothing, the payee holds at most the
/// ticks the payer released, and its element walks to the anchor in as
/// many hashes as its ticks.
#[test]
fn random_terminal_with_power_cuts_never_lets_the_payee_exceed_the_payer() {
    let (payer_image, payee_image, id, anchor) = mid_stream(2, None);
    let (mut most_ticks, mut cuts_that_bit) = (0u32, 0usize);
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let (mut pa, mut pb) = (payer_image.clone(), payee_image.clone());
        let mut seen: Vec<(u32, Hash32)> = Vec::new();
        for step in 0..60 {
            let cut = if rng.below(4) == 0 {
                Some((
                    1 + rng.below(3) as usize,
                    TearMode::EXHAUSTIVE[rng.below(6) as usize],
                ))
            } else {
                None
            };
            let on_payer = rng.below(2) == 0;
            let image = if on_payer { pa.clone() } else { pb.clone() };
            let before = boot(&image, None).state().clone();
            let k_rel = before.streams_out.first().map_or(0, |s| s.released);
            let k_in = before.streams_in.first().map_or(0, |s| s.ticks);
            // Mostly honest (the stream must progress), sometimes hostile,
            // rarely a close.
            let roll = rng.below(40);
            let op = match (on_payer, roll) {
                (true, 0) => Op::CloseOut,
                (true, 1..=8) => Op::Release((k_rel + rng.below(3) as u32).saturating_sub(1)),
                (true, _) => Op::Release(k_rel + 1),
                (false, 0) => Op::CloseIn,
                (false, r) => {
                    let k = if r <= 8 {
                        (k_in + rng.below(3) as u32).max(1)
                    } else {
                        k_in + 1
                    };
                    let e = match (r, seen.iter().find(|(j, _)| *j == k)) {
                        (1..=3, _) => Hash32([rng.below(256) as u8; 32]),
                        (_, Some((_, e))) => *e,
                        (_, None) => seen.last().map_or(Hash32([7; 32]), |(_, e)| *e),
                    };
                    Op::Accept(k, e)
                }
            };
            // The uncut outcome, for reference.
            let mut reference = boot(&image, None);
            let uncut = apply(&mut reference, &id, op);
            let after = reference.state().clone();
            // The run that counts, perhaps cut.
            let mut se = boot(&image, cut);
            let answer = apply(&mut se, &id, op);
            let (bytes, _) = power_off(se);
            let st = boot(&bytes, None).state().clone();
            let what = format!("seed {seed} step {step} {op:?} cut {cut:?}: {answer:?}");
            match &answer {
                Ok(released) => {
                    assert_eq!(st, after, "{what}: answered, not durable");
                    if let Some(r) = released {
                        seen.push(*r);
                    }
                }
                Err(tally_se::SeError::Storage(_)) => {
                    cuts_that_bit += 1;
                    assert!(st == before || st == after, "{what}: a third state")
                }
                Err(e) => {
                    assert_eq!(uncut.as_ref().err(), Some(e), "{what}");
                    assert_eq!(st, before, "{what}: a refusal changed the state");
                }
            }
            if on_payer {
                pa = bytes;
            } else {
                pb = bytes;
            }
            let a = boot(&pa, None).state().clone();
            let b = boot(&pb, None).state().clone();
            let (out, inn) = (&a.streams_out[0], &b.streams_in[0]);
            assert!(
                inn.ticks <= out.released,
                "{what}: payee {} > released {}",
                inn.ticks,
                out.released
            );
            assert!(
                reaches_anchor(&inn.latest, inn.ticks, 64, &anchor),
                "{what}: the payee holds an element not of the chain"
            );
            most_ticks = most_ticks.max(inn.ticks);
        }
    }
    // The walk is not trivial: streams progressed and cuts hit commits.
    println!("most ticks {most_ticks}, commands cut {cuts_that_bit}");
    assert!(most_ticks >= 20 && cuts_that_bit >= 20);
}
