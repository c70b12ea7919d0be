//! A provisioned, loaded card receives the frames `[len: u16 BE][APDU]`
//! of the input: never panics, never creates or silently loses value, and
//! reboots into the state it had in memory.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_wallet::fuzzing::{CardFixture, check_se_dispatch};

static FIXTURE: OnceLock<CardFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| check_se_dispatch(FIXTURE.get_or_init(CardFixture::new), data));
