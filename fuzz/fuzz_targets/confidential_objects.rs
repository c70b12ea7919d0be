//! The confidential-amounts decoders and verifiers: commitments, openings,
//! range proofs, the balance of commitments and sealed openings never panic, decode
//! to one canonical encoding, and hostile bytes never verify or open
//! (tally_core::confidential::fuzzing). The first byte selects the object.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_core::confidential::fuzzing::{ConfidentialFixture, check_confidential_objects};

static FIXTURE: OnceLock<ConfidentialFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    check_confidential_objects(FIXTURE.get_or_init(ConfidentialFixture::new), data)
});
