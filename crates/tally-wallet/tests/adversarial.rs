//! The stateful adversarial-terminal fuzzer (issue 9) as a property test:
//! random programs of hostile-terminal steps (arbitrary APDUs, replays and
//! mutations of every message seen, the honest protocol dropped and
//! reordered, DCP loads, redemption orders, syncs, wrong PINs, power cuts)
//! against two or three PIN-protected cards, checked by the oracles of
//! `tally_wallet::fuzzing::check_adversarial_terminal`. The same harness is
//! the cargo-fuzz target `fuzz/fuzz_targets/adversarial_terminal.rs`.

use std::sync::OnceLock;

use proptest::prelude::*;
use tally_wallet::fuzzing::{
    ADVERSARY_CVM_CUMULATIVE_MAX, ADVERSARY_CVM_PAYMENT_MAX, AdversaryFixture, Step,
    ValueObservation, adversarial_seeds, assert_no_pin_payment, assert_total_conserved,
    assert_value_conserved, decode_program, encode_program, run_adversarial_terminal,
};

/// Cases per property: about 15 s for both in a dev build (the harness
/// runs ~500 programs/s there, ~25 APDUs each).
const CASES: u32 = 4_000;

fn fixture() -> &'static AdversaryFixture {
    static FX: OnceLock<AdversaryFixture> = OnceLock::new();
    FX.get_or_init(AdversaryFixture::new)
}

fn step() -> impl Strategy<Value = Step> {
    let b = || any::<u8>();
    // Small indices: recent messages and the SEs that exist.
    let ix = || 0u8..8;
    prop_oneof![
        2 => (b(), proptest::collection::vec(b(), 0..40))
            .prop_map(|(se, apdu)| Step::Raw { se, apdu }),
        6 => (ix(), b(), b(), prop_oneof![Just(0u8), b()], b())
            .prop_map(|(msg, se, ins, p1, block)| Step::Replay { msg, se, ins, p1, block }),
        4 => (ix(), b(), b(), b(), b().prop_map(u16::from), b())
            .prop_map(|(msg, se, ins, how, pos, mask)| Step::Mutate { msg, se, ins, how, pos, mask }),
        4 => (b(), b()).prop_map(|(payee, amount)| Step::Request { payee, amount }),
        4 => (b(), ix()).prop_map(|(payer, request)| Step::Pay { payer, request }),
        4 => (b(), ix()).prop_map(|(payee, package)| Step::Receive { payee, package }),
        3 => (b(), ix()).prop_map(|(payer, receipt)| Step::Ack { payer, receipt }),
        2 => (b(), b(), any::<bool>()).prop_map(|(se, amount, deliver)| Step::Load { se, amount, deliver }),
        2 => (b(), b(), b()).prop_map(|(se, amount, flags)| Step::Redeem { se, amount, flags }),
        1 => b().prop_map(|se| Step::Sync { se }),
        1 => (b(), b()).prop_map(|(se, n)| Step::Certify { se, n }),
        1 => (b(), proptest::collection::vec(b(), 0..14))
            .prop_map(|(se, pin)| Step::WrongPin { se, pin }),
        1 => b().prop_map(|se| Step::Reboot { se }),
        2 => (b(), b(), b()).prop_map(|(se, kind, amount)| Step::Build { se, kind, amount }),
        1 => (b(), b(), b(), b()).prop_map(|(se, ins, p1, p2)| Step::Plain { se, ins, p1, p2 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn hostile_terminal_programs_keep_the_oracles(
        three in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..=64),
    ) {
        let bytes = encode_program(three, &steps);
        // The typed steps are the byte format the fuzz target reads.
        prop_assert_eq!(decode_program(&bytes), (three, steps));
        run_adversarial_terminal(fixture(), &bytes);
    }

    /// Arbitrary bytes as a program, the way cargo-fuzz starts.
    #[test]
    fn arbitrary_bytes_keep_the_oracles(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        run_adversarial_terminal(fixture(), &data);
    }
}

/// The seeds reach what they are for: payments received, the Issue
/// credited once, refusals compared.
#[test]
fn seeds_reach_the_protocol() {
    for (name, bytes) in adversarial_seeds() {
        let s = run_adversarial_terminal(fixture(), &bytes);
        eprintln!("{name}: {s:?}");
        if name != "honest_payments.bin" {
            assert!(s.refused > 0, "{name}: nothing refused: {s:?}");
        }
        match name {
            "honest_payments.bin" => {
                assert_eq!((s.packages, s.received, s.credited), (3, 3, 1), "{s:?}")
            }
            "issue_replay_after_spending.bin" => {
                assert_eq!((s.credited, s.received), (1, 1), "{s:?}")
            }
            // 100 paid and received, 100 more; the third 100 would pass
            // the 250 allowed without the PIN; 150 alone is over 100.
            "no_pin_online_and_limits.bin" => assert_eq!(s.packages, 2, "{s:?}"),
            // One order paid once by its SE (the other SE's refused), one
            // delivered: two redemption packages, none received.
            "redemption_orders.bin" => assert_eq!((s.packages, s.received), (2, 0), "{s:?}"),
            _ => {}
        }
    }
}

// ---- the oracle can fire (negative controls) -------------------------------

#[test]
#[should_panic(expected = "value created in SE 1")]
fn oracle_fires_on_value_created_in_one_se() {
    // A card that holds 1 000, paid 300, but was loaded with 1 000 and
    // received nothing: 300 came from nowhere.
    assert_value_conserved(
        1,
        &ValueObservation {
            balance: 1_000,
            paid: 300,
            loaded: 1_000,
            received: 0,
        },
    );
}

#[test]
fn oracle_accepts_exact_conservation() {
    assert_value_conserved(
        0,
        &ValueObservation {
            balance: 700,
            paid: 500,
            loaded: 1_000,
            received: 200,
        },
    );
    assert_total_conserved(1_000, 200, 100, 1_300);
}

#[test]
#[should_panic(expected = "value created")]
fn oracle_fires_on_value_created_overall() {
    // Balances 1 200 and an unreceived package of 200 out of 1 300 issued.
    assert_total_conserved(1_200, 200, 0, 1_300);
}

#[test]
#[should_panic(expected = "without cardholder verification")]
fn oracle_fires_on_a_payment_over_the_no_pin_limit() {
    assert_no_pin_payment(0, ADVERSARY_CVM_PAYMENT_MAX + 1, 0);
}

#[test]
#[should_panic(expected = "in all without cardholder verification")]
fn oracle_fires_past_the_cumulative_no_pin_limit() {
    assert_no_pin_payment(
        0,
        ADVERSARY_CVM_PAYMENT_MAX,
        u128::from(ADVERSARY_CVM_CUMULATIVE_MAX),
    );
}
