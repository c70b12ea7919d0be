//! ISO 7816-4 framing: command and response parsing, command chaining and
//! GET RESPONSE pagination. The input is parsed whole and as frames
//! `[len: u16 BE][APDU]`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_wallet::fuzzing::check_apdu_parse(data));
