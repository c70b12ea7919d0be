//! `SettlementResult::open` under fixed settlement and root keys and a
//! fixed op: never panics; an accepted result answers that op, is the
//! canonical encoding of what it returned, and its signature verifies over
//! the SPEC's message (§9.6).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_dcp::fuzzing::{ResultFixture, check_settlement_result};

static FIXTURE: OnceLock<ResultFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    check_settlement_result(FIXTURE.get_or_init(ResultFixture::new), data)
});
