//! Payment streams through the MDS (decision 0020, section "MDS"): OPENs,
//! claims, refunds (honest, overclaiming, twice, not conserving) in
//! batches with restarts; every batch's alerts, the holdings and the fraud
//! losses equal a simple model's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_mds::fuzzing::check_streams;

fuzz_target!(|data: &[u8]| check_streams(data));
