//! Crash safety of the payment protocol on the SE (DESIGN.md §4): power is
//! cut at every storage write of PAY, RECEIVE and ACK, in every tearing
//! mode. After a reboot each SE is in exactly its old or its new state, the
//! interrupted step can be completed by resending, value is conserved and
//! the payee is credited exactly once. Also: tampered sealed state refuses
//! to boot, and a byte copy of the storage boots as a working clone (the
//! cloned-SE attack the back office must catch).

use tally_core::codec::Cbor;
use tally_core::policy::device_class::{CARD, PHONE};
use tally_core::testkit::{Scheme, TestEntropy};
use tally_core::{Amount, Package, Receipt, Request, Suite};
use tally_se::state::State;
use tally_se::storage::{HEADER_LEN, Journal, MemStorage, StorageError, TearMode, TearingStorage};
use tally_se::{Applet, SeError, Sealing};
use tally_wallet::SeLink;
use tally_wallet::testkit::{TEST_STORAGE_BYTES, TestDevice, load, provision};

type Se = Applet<TearingStorage<MemStorage>, TestEntropy>;

thread_local! {
    /// The journal log limit the SEs of this test thread boot with: `None`
    /// is the default (each command appends one log record); a tiny one
    /// makes every command a compaction (the whole state into the other
    /// slot).
    static LOG_MAX: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

const LOADED: u64 = 1_000;
const PAID: u64 = 300;

/// Boots an SE from a storage image, optionally cutting power at write
/// `k` (counted from boot) with `mode`.
fn boot(image: &[u8], cut: Option<(usize, TearMode)>) -> Se {
    let mem = MemStorage::from_bytes(image.to_vec());
    let storage = match cut {
        Some((k, mode)) => TearingStorage::with_cut(mem, k, mode),
        None => TearingStorage::new(mem),
    };
    let mut se = match Applet::boot(storage, Sealing::None, TestEntropy::new(b"reboot")) {
        Ok(a) => a,
        Err(e) => panic!("boot failed: {e} (cut {cut:?})"),
    };
    if let Some(n) = LOG_MAX.with(|c| c.get()) {
        se.set_journal_log_max(n);
    }
    se
}

/// Powers the SE off and returns what its storage holds, plus the number
/// of write calls it saw.
fn power_off(se: Se) -> (Vec<u8>, usize) {
    let t = se.into_storage();
    let writes = t.writes();
    (t.into_inner().into_bytes(), writes)
}

fn balance(se: &Se) -> u64 {
    se.state().balance().0
}

fn unacked(st: &State) -> Vec<(tally_core::Hash32, Amount)> {
    st.outgoing
        .iter()
        .filter(|o| !o.acked)
        .map(|o| (o.transfer_id, o.amount))
        .collect()
}

/// A loaded payer, a payee with an open request for `PAID`, and the
/// reference (uncut) run of the whole protocol.
struct World {
    payer_loaded: Vec<u8>,
    payee_requested: Vec<u8>,
    request: Request,
    // Reference results of an uncut run.
    payer_old: State,
    payer_paid: State,
    payer_paid_image: Vec<u8>,
    payer_acked: State,
    payee_old: State,
    payee_received: State,
    package: Vec<u8>,
    receipt: Receipt,
    pay_writes: usize,
    receive_writes: usize,
    ack_writes: usize,
    /// The write after which each command's new state is durable, and
    /// its length (see [`Point`]).
    pay_point: Point,
    receive_point: Point,
    ack_point: Point,
}

/// The point of no return of one command: the write (1-based) that makes
/// the new state durable once it lands in full, and that write's length.
/// A log record's last chunk (its check; the commit mark follows), or a
/// full commit's commit record.
#[derive(Clone, Copy, Debug)]
struct Point {
    write: usize,
    len: usize,
}

/// The point of no return of a command of `total` writes whose journal log
/// went from `before` to `after` bytes.
fn point(total: usize, before: usize, after: usize) -> Point {
    if after > before {
        // mark (written last, 4 bytes) | length | body | check
        let framed = after - before - 4;
        let len = match framed % 256 {
            0 => 256,
            n => n,
        };
        Point {
            write: total - 1,
            len,
        }
    } else {
        Point {
            write: total,
            len: HEADER_LEN,
        }
    }
}

fn world() -> World {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let blank = vec![0xFF; TEST_STORAGE_BYTES];
    let mut payer = boot(&blank, None);
    provision(&mut payer, &scheme, PHONE, 4).expect("provision payer");
    load(&mut payer, &mut scheme, PHONE, LOADED).expect("load");
    let mut payee = boot(&blank, None);
    provision(&mut payee, &scheme, CARD, 4).expect("provision payee");
    let request = payee.create_request(Amount(PAID)).expect("request");
    let payer_old = payer.state().clone();
    let payee_old = payee.state().clone();
    let (payer_loaded, _) = power_off(payer);
    let (payee_requested, _) = power_off(payee);

    // Reference run, each step on a freshly booted SE so that write counts
    // cover exactly one command.
    let mut payer = boot(&payer_loaded, None);
    let log0 = payer.journal_log_bytes();
    let package = payer.pay(&request).expect("reference pay");
    let log1 = payer.journal_log_bytes();
    let payer_paid = payer.state().clone();
    let (payer_paid_image, pay_writes) = power_off(payer);
    let pay_point = point(pay_writes, log0, log1);

    let mut payee = boot(&payee_requested, None);
    let log0 = payee.journal_log_bytes();
    let receipt = payee.receive(&package).expect("reference receive");
    let log1 = payee.journal_log_bytes();
    let payee_received = payee.state().clone();
    let (_, receive_writes) = power_off(payee);
    let receive_point = point(receive_writes, log0, log1);

    let mut payer = boot(&payer_paid_image, None);
    let log0 = payer.journal_log_bytes();
    payer.ack(&receipt).expect("reference ack");
    let log1 = payer.journal_log_bytes();
    let payer_acked = payer.state().clone();
    let (_, ack_writes) = power_off(payer);
    let ack_point = point(ack_writes, log0, log1);
    // Each command took the path this thread asked for.
    for p in [pay_point, receive_point, ack_point] {
        let compacting = LOG_MAX.with(|c| c.get()).is_some();
        assert_eq!(p.len == HEADER_LEN && p.write > 1, compacting, "{p:?}");
    }

    // Booting writes nothing; every command is one journal log record
    // (record, then its commit mark) or one full commit (payload chunks,
    // then the commit record).
    let (_, boot_writes) = power_off(boot(&payer_loaded, None));
    assert_eq!(boot_writes, 0);
    for w in [pay_writes, receive_writes, ack_writes] {
        assert!(
            w >= 2,
            "a commit is at least two writes: a record and its mark, or a payload and a header"
        );
    }
    World {
        payer_loaded,
        payee_requested,
        request,
        payer_old,
        payer_paid,
        payer_paid_image,
        payer_acked,
        payee_old,
        payee_received,
        package,
        receipt,
        pay_writes,
        receive_writes,
        ack_writes,
        pay_point,
        receive_point,
        ack_point,
    }
}

/// True if a cut at write `k` (with `mode`) must leave the new state: only
/// once the command's point of no return landed in full.
fn header_landed(k: usize, p: Point, mode: TearMode) -> bool {
    k > p.write
        || (k == p.write
            && match mode {
                TearMode::All => true,
                TearMode::Prefix(n) => n >= p.len,
                _ => false,
            })
}

/// Runs `test` with every command appending a log record, then again with
/// every command compacting (the whole state into the other slot).
fn both_paths(test: fn()) {
    LOG_MAX.with(|c| c.set(None));
    test();
    LOG_MAX.with(|c| c.set(Some(1)));
    test();
    LOG_MAX.with(|c| c.set(None));
}

#[test]
fn pay_torn_at_every_write_leaves_old_or_new_state_and_completes_once() {
    both_paths(pay_torn);
}

fn pay_torn() {
    let w = world();
    let tid = Package::from_cbor(&w.package).unwrap().transfer.id();
    let mut saw = (0, 0);
    for k in 1..=w.pay_writes + 1 {
        for mode in TearMode::EXHAUSTIVE {
            let ctx = format!("PAY cut at write {k}/{} mode {mode:?}", w.pay_writes);
            let mut payer = boot(&w.payer_loaded, Some((k, mode)));
            let r = payer.pay(&w.request);
            if k <= w.pay_writes {
                assert_eq!(r, Err(SeError::Storage(StorageError::PowerLost)), "{ctx}");
                // After a storage error the applet refuses everything.
                assert_eq!(payer.resend(&tid), Err(SeError::Halted), "{ctx}");
                assert_eq!(payer.pay(&w.request), Err(SeError::Halted), "{ctx}");
            } else {
                assert_eq!(r.as_ref(), Ok(&w.package), "{ctx}");
            }
            let (image, _) = power_off(payer);
            let mut payer = boot(&image, None);
            let st = payer.state().clone();
            let is_new = if st == w.payer_old {
                false
            } else if st == w.payer_paid {
                true
            } else {
                panic!("{ctx}: payer is in neither its old nor its new state");
            };
            assert_eq!(
                is_new,
                header_landed(k, w.pay_point, mode),
                "{ctx}: the commit record is the point of no return"
            );

            let package = if is_new {
                saw.1 += 1;
                assert_eq!(balance(&payer), LOADED - PAID, "{ctx}");
                assert_eq!(unacked(&st), vec![(tid, Amount(PAID))], "{ctx}");
                assert_eq!(st.counter, w.payer_old.counter + 1, "{ctx}");
                payer.resend(&tid).expect("resend of the logged payment")
            } else {
                saw.0 += 1;
                assert_eq!(balance(&payer), LOADED, "{ctx}");
                assert_eq!(st.counter, w.payer_old.counter, "{ctx}");
                assert_eq!(st.tokens, w.payer_old.tokens, "{ctx}");
                assert!(st.outgoing.is_empty(), "{ctx}");
                assert_eq!(payer.resend(&tid), Err(SeError::UnknownTransfer), "{ctx}");
                payer.pay(&w.request).expect("paying again after the cut")
            };
            // Deterministic signatures: whichever way, the same package.
            assert_eq!(package, w.package, "{ctx}");

            let mut payee = boot(&w.payee_requested, None);
            let receipt = payee.receive(&package).expect("payee accepts");
            assert_eq!(balance(&payer) + balance(&payee), LOADED, "{ctx}");
            let again = payee.receive(&package).expect("second delivery");
            assert_eq!(again, receipt, "{ctx}: same receipt");
            assert_eq!(balance(&payee), PAID, "{ctx}: credited once");
            payer.ack(&receipt).expect("ack");
            assert_eq!(payer.status().unwrap().unacked, 0, "{ctx}");
            assert_eq!(balance(&payer) + balance(&payee), LOADED, "{ctx}");
        }
    }
    assert!(saw.0 > 0 && saw.1 > 0, "both outcomes exercised: {saw:?}");
}

/// PAY WITH PROOF (decision 0032) on a phone's SE, under a confidential
/// policy, cut at every write: old or new state after the reboot; from the
/// old one the same proof pays again (the task's openings are derived from
/// the unchanged state), from the new one RESEND gives the package; either
/// way one package, credited once.
#[test]
fn pay_with_proof_torn_at_every_write_completes_once_with_the_same_proof() {
    both_paths(pay_proved_torn);
}

fn pay_proved_torn() {
    let mut scheme = Scheme::confidential(Suite::Ed25519);
    let blank = vec![0xFF; TEST_STORAGE_BYTES];
    let mut payer = boot(&blank, None);
    provision(&mut payer, &scheme, PHONE, 4).expect("provision payer");
    load(&mut payer, &mut scheme, PHONE, LOADED).expect("load");
    let mut payee = boot(&blank, None);
    provision(&mut payee, &scheme, PHONE, 4).expect("provision payee");
    let request = payee.create_request(Amount(PAID)).expect("request");
    let old = payer.state().clone();
    let (loaded, _) = power_off(payer);
    let (payee_requested, _) = power_off(payee);

    let mut payer = boot(&loaded, None);
    let task = payer.proving_task(&request).expect("task");
    let gens = tally_core::confidential::RangeGens::new(task.bits, 4).unwrap();
    let proof = task
        .prove(&gens, &mut TestEntropy::new(b"processor"))
        .unwrap();
    let (_, task_writes) = power_off(payer);
    assert_eq!(task_writes, 0, "the task writes nothing");
    let mut payer = boot(&loaded, None);
    let package = payer
        .pay_proved(&request, proof.clone())
        .expect("reference");
    let tid = Package::from_cbor(&package).unwrap().transfer.id();
    let paid = payer.state().clone();
    let (_, writes) = power_off(payer);
    let mut saw = (0, 0);
    for k in 1..=writes + 1 {
        for mode in TearMode::EXHAUSTIVE {
            let ctx = format!("PAY WITH PROOF cut at write {k}/{writes} mode {mode:?}");
            let mut payer = boot(&loaded, Some((k, mode)));
            let r = payer.pay_proved(&request, proof.clone());
            if k <= writes {
                assert_eq!(r, Err(SeError::Storage(StorageError::PowerLost)), "{ctx}");
            } else {
                assert_eq!(r.as_ref(), Ok(&package), "{ctx}");
            }
            let (image, _) = power_off(payer);
            let mut payer = boot(&image, None);
            let again = if *payer.state() == old {
                saw.0 += 1;
                payer.pay_proved(&request, proof.clone())
            } else {
                saw.1 += 1;
                assert_eq!(payer.state(), &paid, "{ctx}: neither old nor new");
                payer.resend(&tid)
            };
            assert_eq!(again.as_ref(), Ok(&package), "{ctx}");
            let mut payee = boot(&payee_requested, None);
            payee.receive(&package).expect("payee accepts");
            assert_eq!(balance(&payer) + balance(&payee), LOADED, "{ctx}");
        }
    }
    assert!(saw.0 > 0 && saw.1 > 0, "both outcomes exercised: {saw:?}");
}

#[test]
fn receive_torn_at_every_write_credits_exactly_once() {
    both_paths(receive_torn);
}

fn receive_torn() {
    let w = world();
    let mut saw = (0, 0);
    for k in 1..=w.receive_writes + 1 {
        for mode in TearMode::EXHAUSTIVE {
            let ctx = format!(
                "RECEIVE cut at write {k}/{} mode {mode:?}",
                w.receive_writes
            );
            let mut payee = boot(&w.payee_requested, Some((k, mode)));
            let r = payee.receive(&w.package);
            if k <= w.receive_writes {
                assert_eq!(r, Err(SeError::Storage(StorageError::PowerLost)), "{ctx}");
                assert_eq!(payee.receive(&w.package), Err(SeError::Halted), "{ctx}");
            } else {
                assert_eq!(r.as_ref(), Ok(&w.receipt), "{ctx}");
            }
            let (image, _) = power_off(payee);
            let mut payee = boot(&image, None);
            let mut payer = boot(&w.payer_paid_image, None);
            let st = payee.state().clone();
            let is_new = if st == w.payee_old {
                false
            } else if st == w.payee_received {
                true
            } else {
                panic!("{ctx}: payee is in neither its old nor its new state");
            };
            assert_eq!(is_new, header_landed(k, w.receive_point, mode), "{ctx}");

            // Value in flight: the payer's unacknowledged package, as long
            // as the payee has not stored it.
            let in_flight: u64 = if is_new {
                saw.1 += 1;
                0
            } else {
                saw.0 += 1;
                unacked(payer.state()).iter().map(|(_, a)| a.0).sum()
            };
            assert_eq!(
                balance(&payer) + in_flight + balance(&payee),
                LOADED,
                "{ctx}"
            );
            assert_eq!(balance(&payee), if is_new { PAID } else { 0 }, "{ctx}");

            // The payer resends its logged package; the payee completes or
            // recognises it.
            let tid = w.receipt.transfer_id;
            let resent = payer.resend(&tid).expect("resend");
            assert_eq!(resent, w.package, "{ctx}");
            let receipt = payee.receive(&resent).expect("redelivery");
            assert_eq!(receipt, w.receipt, "{ctx}");
            assert_eq!(balance(&payee), PAID, "{ctx}: credited exactly once");
            let settled = payee.state().clone();
            assert_eq!(payee.receive(&resent), Ok(receipt.clone()), "{ctx}");
            assert_eq!(payee.state(), &settled, "{ctx}: a replay changes nothing");
            payer.ack(&receipt).expect("ack");
            assert_eq!(balance(&payer) + balance(&payee), LOADED, "{ctx}");
            assert!(unacked(payer.state()).is_empty(), "{ctx}");
        }
    }
    assert!(saw.0 > 0 && saw.1 > 0, "both outcomes exercised: {saw:?}");
}

#[test]
fn ack_torn_at_every_write_is_acked_or_not_and_ack_again_works() {
    both_paths(ack_torn);
}

fn ack_torn() {
    let w = world();
    let mut saw = (0, 0);
    for k in 1..=w.ack_writes + 1 {
        for mode in TearMode::EXHAUSTIVE {
            let ctx = format!("ACK cut at write {k}/{} mode {mode:?}", w.ack_writes);
            let mut payer = boot(&w.payer_paid_image, Some((k, mode)));
            let r = payer.ack(&w.receipt);
            if k <= w.ack_writes {
                assert_eq!(r, Err(SeError::Storage(StorageError::PowerLost)), "{ctx}");
            } else {
                assert_eq!(r, Ok(()), "{ctx}");
            }
            let (image, _) = power_off(payer);
            let mut payer = boot(&image, None);
            let st = payer.state().clone();
            if st == w.payer_paid {
                saw.0 += 1;
                assert_eq!(unacked(&st).len(), 1, "{ctx}");
            } else if st == w.payer_acked {
                saw.1 += 1;
                assert!(unacked(&st).is_empty(), "{ctx}");
            } else {
                panic!("{ctx}: payer is in neither its old nor its new state");
            }
            assert_eq!(
                st == w.payer_acked,
                header_landed(k, w.ack_point, mode),
                "{ctx}"
            );
            assert_eq!(balance(&payer), LOADED - PAID, "{ctx}");
            payer.ack(&w.receipt).expect("ack again");
            assert_eq!(payer.state(), &w.payer_acked, "{ctx}");
            payer.ack(&w.receipt).expect("ack is idempotent");
            assert_eq!(payer.state(), &w.payer_acked, "{ctx}");
        }
    }
    assert!(saw.0 > 0 && saw.1 > 0, "both outcomes exercised: {saw:?}");
}

// ---- sealed state at rest ------------------------------------------------

const DEVICE_KEY: [u8; 32] = [0x5E; 32];

type SealedSe = Applet<MemStorage, TestEntropy>;

fn boot_sealed(image: Vec<u8>, key: [u8; 32], label: &[u8]) -> Result<SealedSe, SeError> {
    Applet::boot(
        MemStorage::from_bytes(image),
        Sealing::Aead(key),
        TestEntropy::new(label),
    )
}

/// A provisioned SE with sealed state, loaded with `LOADED` in one token.
fn sealed_payer(scheme: &mut Scheme) -> Vec<u8> {
    sealed_payer_with(scheme, None)
}

/// [`sealed_payer`] whose journal log is limited to `log_max` bytes
/// (`Some(1)`: every commit is a full one, the state is the base alone).
fn sealed_payer_with(scheme: &mut Scheme, log_max: Option<usize>) -> Vec<u8> {
    let mut se = match boot_sealed(vec![0xFF; TEST_STORAGE_BYTES], DEVICE_KEY, b"sealed") {
        Ok(se) => se,
        Err(e) => panic!("boot: {e}"),
    };
    if let Some(n) = log_max {
        se.set_journal_log_max(n);
    }
    provision(&mut se, scheme, PHONE, 4).expect("provision");
    load(&mut se, scheme, PHONE, LOADED).expect("load");
    se.into_storage().into_bytes()
}

/// Offset of the payload of the slot holding the newest commit.
fn current_payload_offset(image: &[u8]) -> usize {
    let slot_len = image.len() / 2;
    let sequence = |slot: usize| {
        u64::from_le_bytes(
            image[slot * slot_len + 8..slot * slot_len + 16]
                .try_into()
                .unwrap(),
        )
    };
    let slot = if sequence(1) != u64::MAX && sequence(1) > sequence(0) {
        1
    } else {
        0
    };
    slot * slot_len + HEADER_LEN
}

fn assert_state_corrupt(r: Result<SealedSe, SeError>, what: &str) {
    match r {
        Err(SeError::StateCorrupt) => {}
        Err(e) => panic!("{what}: expected StateCorrupt, got {e:?}"),
        Ok(_) => panic!("{what}: tampered state booted"),
    }
}

#[test]
fn sealed_state_tampered_in_place_refuses_to_boot() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let image = sealed_payer(&mut scheme);
    let se = boot_sealed(image.clone(), DEVICE_KEY, b"ok").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(se.state().balance(), Amount(LOADED));

    // A flipped byte in the newest slot: the journal falls back to the
    // previous commit and reports it; rolling back could re-enable spent
    // tokens, so the SE refuses to boot.
    let at = current_payload_offset(&image);
    for delta in [0, 24, 100] {
        let mut bad = image.clone();
        bad[at + delta] ^= 0x01;
        assert_state_corrupt(
            boot_sealed(bad, DEVICE_KEY, b"t"),
            &format!("raw flip at payload byte {delta}"),
        );
    }
}

#[test]
fn sealed_state_tampered_with_valid_journal_framing_refuses_to_boot() {
    // An attacker who rewrites the file with correct journal hashes still
    // cannot forge the sealed payload. (A state compacted into its base, so
    // that the base alone is the whole state.)
    let mut scheme = Scheme::new(Suite::Ed25519);
    let image = sealed_payer_with(&mut scheme, Some(1));
    let (mut journal, sealed) = Journal::open(MemStorage::from_bytes(image.clone())).unwrap();
    let sealed = sealed.expect("a committed state");
    for i in [0, 30, sealed.len() - 1] {
        let mut forged = sealed.clone();
        forged[i] ^= 0x80;
        let (mut j, _) = Journal::open(MemStorage::from_bytes(image.clone())).unwrap();
        j.commit(&forged).unwrap();
        assert_state_corrupt(
            boot_sealed(j.into_inner().into_bytes(), DEVICE_KEY, b"t"),
            &format!("re-framed flip at sealed byte {i}"),
        );
    }
    // The sealed bytes moved to a fresh, validly framed journal boot fine
    // with the right key and not with another.
    journal.commit(&sealed).unwrap();
    let moved = journal.into_inner().into_bytes();
    let se = boot_sealed(moved.clone(), DEVICE_KEY, b"t").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(se.state().balance(), Amount(LOADED));
    assert_state_corrupt(boot_sealed(moved, [0x11; 32], b"t"), "wrong device key");
}

#[test]
fn cloned_se_storage_copy_spends_the_same_token_twice() {
    // Copying the sealed storage together with the device key clones the
    // SE. Offline, both clones make valid payments from the same token:
    // the payees accept both, and only the back office's spent registry
    // can catch it. This test pins that precondition.
    let mut scheme = Scheme::new(Suite::Ed25519);
    let image = sealed_payer(&mut scheme);
    let mut clone_a =
        boot_sealed(image.clone(), DEVICE_KEY, b"a").unwrap_or_else(|e| panic!("{e}"));
    let mut clone_b = boot_sealed(image, DEVICE_KEY, b"b").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(clone_a.state(), clone_b.state());
    assert_eq!(clone_a.state().tokens.len(), 1);

    let mut payee_a = TestDevice::new(&scheme, b"payee-a", PHONE, 4096).unwrap();
    let mut payee_b = TestDevice::new(&scheme, b"payee-b", CARD, 255).unwrap();
    let req_a = payee_a.link.create_request(Amount(PAID)).unwrap();
    let req_b = payee_b.link.create_request(Amount(LOADED)).unwrap();
    let pkg_a = clone_a.pay(&req_a).expect("clone a pays");
    let pkg_b = clone_b.pay(&req_b).expect("clone b pays");
    payee_a.link.receive(&pkg_a).expect("payee a accepts");
    payee_b.link.receive(&pkg_b).expect("payee b accepts");
    assert_eq!(payee_a.balance().unwrap(), Amount(PAID));
    assert_eq!(payee_b.balance().unwrap(), Amount(LOADED));

    let a = Package::from_cbor(&pkg_a).unwrap().transfer;
    let b = Package::from_cbor(&pkg_b).unwrap().transfer;
    assert_ne!(a.id(), b.id(), "two different transfers");
    assert_eq!(a.inputs, b.inputs, "spending the same outpoint");
    // The evidence settlement will hold: one counter value used twice and
    // two signatures by the same owner key over different transfers.
    assert_eq!(a.counter, b.counter);
    assert_ne!(a.signatures, b.signatures);
}

/// The sealed log record bodies of the current slot of `image`, read back
/// with the journal's own framing.
fn sealed_records(image: &[u8]) -> Vec<Vec<u8>> {
    let (mut journal, _) = Journal::open(MemStorage::from_bytes(image.to_vec())).unwrap();
    let mut out = Vec::new();
    journal
        .replay(&mut |r| {
            out.push(r.to_vec());
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn sealed_log_records_tampered_moved_or_dropped() {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let image = sealed_payer(&mut scheme);
    let records = sealed_records(&image);
    assert!(records.len() >= 2, "provision and load left a log");
    let last = records.last().unwrap().clone();
    let at = image
        .windows(last.len())
        .rposition(|w| w == last.as_slice())
        .expect("the last record in the image");

    // A flipped byte in a committed record, in place: its check fails
    // under its commit mark (not a tear): the SE refuses to boot.
    for i in [0, 30, last.len() - 1] {
        let mut bad = image.clone();
        bad[at + i] ^= 0x01;
        assert_state_corrupt(
            boot_sealed(bad, DEVICE_KEY, b"t"),
            &format!("flip at byte {i} of the last record"),
        );
    }

    // Re-framed by someone without the device key: a valid log whose
    // records are a flipped one, or an earlier record moved to the end
    // (valid framing, valid seal, wrong place): refused.
    let (mut journal, base) = Journal::open(MemStorage::from_bytes(image.clone())).unwrap();
    let base = base.unwrap();
    let rebuild = |bodies: &[Vec<u8>]| {
        let mut j = Journal::open(MemStorage::new(TEST_STORAGE_BYTES))
            .unwrap()
            .0;
        j.commit(&base).unwrap();
        for b in bodies {
            j.append(b).unwrap();
        }
        j.into_inner().into_bytes()
    };
    let mut flipped = records.clone();
    flipped.last_mut().unwrap()[40] ^= 0x80;
    assert_state_corrupt(
        boot_sealed(rebuild(&flipped), DEVICE_KEY, b"t"),
        "re-framed flipped record",
    );
    let mut moved = records.clone();
    let first = moved[0].clone();
    moved.push(first);
    assert_state_corrupt(
        boot_sealed(rebuild(&moved), DEVICE_KEY, b"t"),
        "re-framed record replayed at another place",
    );
    // The same records re-framed boot to the same state.
    let same = boot_sealed(rebuild(&records), DEVICE_KEY, b"t").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(same.state().balance(), Amount(LOADED));
    // Dropping the last records re-frames an earlier state of this SE: a
    // rollback, which whoever can write the file could always do by
    // putting back an old copy of it (the seal authenticates a state, not
    // its freshness; THREATS.md): it boots, and the back office catches
    // the double spend as for a cloned SE (below).
    let earlier = boot_sealed(rebuild(&records[..records.len() - 1]), DEVICE_KEY, b"t")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(earlier.state(), same.state());
    assert_eq!(journal.log_records().unwrap() as usize, records.len());
}

/// A storage whose writes fail with an I/O error from write number
/// `fail_at` on (nothing of them lands) while reads still work: the SE
/// can read back what is durable.
struct FailingWrites {
    inner: MemStorage,
    writes: usize,
    fail_at: usize,
}

impl tally_se::storage::Storage for FailingWrites {
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read(offset, buf)
    }
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        self.writes += 1;
        if self.writes >= self.fail_at {
            return Err(StorageError::Io);
        }
        self.inner.write(offset, data)
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

/// PAY, RECEIVE and ACK change the state in place before they write it
/// (decision 0024): when a write fails, the state in RAM must be the
/// durable one (what a reboot finds), never the change that did not land.
#[test]
fn a_failed_write_leaves_the_state_in_ram_at_the_durable_state() {
    both_paths(failed_write_rolls_back);
}

fn failed_write_rolls_back() {
    let w = world();
    let steps = [
        (
            "PAY",
            &w.payer_loaded,
            w.pay_writes,
            &w.payer_old,
            &w.payer_paid,
        ),
        (
            "RECEIVE",
            &w.payee_requested,
            w.receive_writes,
            &w.payee_old,
            &w.payee_received,
        ),
        (
            "ACK",
            &w.payer_paid_image,
            w.ack_writes,
            &w.payer_paid,
            &w.payer_acked,
        ),
    ];
    for (name, image, writes, old, new) in steps {
        let mut saw_old = false;
        for k in 1..=writes {
            let ctx = format!("{name} failing from write {k}/{writes}");
            let storage = FailingWrites {
                inner: MemStorage::from_bytes(image.to_vec()),
                writes: 0,
                fail_at: k,
            };
            let mut se =
                Applet::boot(storage, Sealing::None, TestEntropy::new(b"reboot")).expect("boot");
            if let Some(n) = LOG_MAX.with(|c| c.get()) {
                se.set_journal_log_max(n);
            }
            let r = match name {
                "PAY" => se.pay(&w.request).map(|_| ()),
                "RECEIVE" => se.receive(&w.package).map(|_| ()),
                _ => se.ack(&w.receipt),
            };
            assert_eq!(r, Err(SeError::Storage(StorageError::Io)), "{ctx}");
            let in_ram = se.state().clone();
            assert!(
                &in_ram == old || &in_ram == new,
                "{ctx}: neither old nor new"
            );
            saw_old |= &in_ram == old;
            let bytes = se.into_storage().inner.into_bytes();
            let rebooted = boot(&bytes, None);
            assert_eq!(&in_ram, rebooted.state(), "{ctx}: RAM ahead of flash");
        }
        assert!(
            saw_old,
            "{name}: a failed write left the old state at least once"
        );
    }
}
