//! The SE boots from its stored image with the input's bytes patched in
//! (base state and journal log), or applies the input as a log record's
//! state delta: never panics, never boots with value it was not given,
//! boots the same image the same way twice (decision 0018).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_wallet::fuzzing::{JournalFixture, check_se_journal};

static FIXTURE: OnceLock<JournalFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| check_se_journal(FIXTURE.get_or_init(JournalFixture::new), data));
