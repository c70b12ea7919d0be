//! Every wire object's decoder: never panics; what decodes re-encodes to
//! exactly the input. The first byte selects the object type.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_wallet::fuzzing::check_cbor_objects(data));
