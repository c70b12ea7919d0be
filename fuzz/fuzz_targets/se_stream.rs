//! A terminal between a streaming payer and payee SE sends the frames
//! `[len: u16 BE][to][APDU]` of the input to either card: the payee never
//! holds more ticks than the payer released, its element always walks to
//! the anchor, and both SEs reboot into the state they had in memory.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_wallet::fuzzing::{StreamFixture, check_se_stream};

static FIXTURE: OnceLock<StreamFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| check_se_stream(FIXTURE.get_or_init(StreamFixture::new), data));
