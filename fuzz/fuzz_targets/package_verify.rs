//! Decoding and payee verification of a package against the testkit
//! scheme and one fixed request: never panics; an accepted package pays
//! exactly what was requested.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_wallet::fuzzing::{PaymentFixture, check_package_verify};

static FIXTURE: OnceLock<PaymentFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    check_package_verify(FIXTURE.get_or_init(PaymentFixture::new), data)
});
