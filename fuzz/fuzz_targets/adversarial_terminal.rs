//! A hostile terminal runs the input as a program of steps against two or
//! three PIN-protected cards and a simulated DCP (arbitrary APDUs, replays
//! and mutations of every message seen, the honest protocol dropped and
//! reordered, loads, redemption orders, syncs, wrong PINs, power cuts).
//! Value is never created, no Issue is credited twice, nothing needing the
//! PIN happens without it, no SE pays another SE's redemption order, and a
//! refused command changes nothing (`tally_wallet::fuzzing::
//! check_adversarial_terminal`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_wallet::fuzzing::{AdversaryFixture, check_adversarial_terminal};

static FIXTURE: OnceLock<AdversaryFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| check_adversarial_terminal(
    FIXTURE.get_or_init(AdversaryFixture::new),
    data
));
