//! `tally_dcp::central::answer` on an in-process central bank (SQLite in
//! memory, the §10 vector keys, DCPs 1 and 2 funded): any call body from
//! any caller gives an answer that decodes with its method's `reply`
//! decoder, or a refusal with a registered code that changes nothing.
//! The first byte selects the caller (`fuzzing::answer_caller`).
//!
//! The bank is shared across inputs for speed, so an input that executes
//! (a seed's Load, Pay, Enrol…) changes what later inputs meet; the replay
//! test (crates/tally-dcp/tests/fuzz_corpus.rs) gives each input a fresh
//! bank. Reproduce a crash there, not by rerunning a single input here.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_dcp::fuzzing::{CentralFixture, check_central_answer};

static FIXTURE: OnceLock<CentralFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    check_central_answer(FIXTURE.get_or_init(CentralFixture::new), data)
});
