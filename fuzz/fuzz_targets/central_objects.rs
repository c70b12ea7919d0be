//! Every decoder of the DCP ↔ central bank wire (SPEC §10): `CentralCall`,
//! `CentralRequest`, `CentralTrust`, `InboxEntry` and the `reply::*`
//! answers never panic; what decodes re-encodes to exactly the input. The
//! first byte selects the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_dcp::fuzzing::check_central_objects(data));
