//! Replays every committed fuzz input, `fuzz/corpus/<target>/*` and
//! `fuzz/regressions/<target>/*` (`adversarial_terminal` included), through the same checks the fuzz targets
//! run (`tally_wallet::fuzzing`), on the stable toolchain.
//!
//! The seeds come from `fuzzing::seed_corpus`. To rewrite them after a wire
//! format change: `TALLY_WRITE_FUZZ_CORPUS=1 cargo test -p tally-wallet
//! --features testkit --test fuzz_corpus seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use tally_core::Package;
use tally_core::codec::Cbor;
use tally_core::verify::{NoCache, verify_package_bytes};
use tally_wallet::fuzzing::{
    self, AdversaryFixture, CardFixture, HISTORY_RECORDS_MAX, JournalFixture, PaymentFixture,
    check_adversarial_terminal, check_apdu_parse, check_cbor_objects, check_package_verify,
    check_se_dispatch, check_se_journal, check_se_stream,
};

const TARGETS: [&str; 7] = [
    "cbor_objects",
    "package_verify",
    "apdu_parse",
    "se_dispatch",
    "adversarial_terminal",
    "se_journal",
    "se_stream",
];

/// Targets over the central bank's wire, replayed by
/// crates/tally-dcp/tests/fuzz_corpus.rs (the wallet does not link the
/// back office).
const TARGETS_OF_TALLY_DCP: [&str; 3] = ["central_objects", "settlement_result", "central_answer"];

/// The confidential-amounts objects, replayed by
/// crates/tally-core/tests/confidential.rs (the core owns them).
const TARGETS_OF_TALLY_CORE: [&str; 1] = ["confidential_objects"];

/// Payment streams through the MDS, replayed by
/// crates/tally-mds/tests/fuzz_corpus.rs (the wallet does not link it).
const TARGETS_OF_TALLY_MDS: [&str; 1] = ["mds_streams"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn corpus_and_regressions_pass_their_checks() {
    let payment = PaymentFixture::new();
    let card = CardFixture::new();
    let adversary = AdversaryFixture::new();
    let journal = JournalFixture::new();
    let stream = fuzzing::StreamFixture::new();
    for kind in ["corpus", "regressions"] {
        let root = fuzz_dir().join(kind);
        for dir in fs::read_dir(&root).into_iter().flatten() {
            let dir = dir.expect("directory entry").path();
            let target = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                TARGETS.contains(&target)
                    || TARGETS_OF_TALLY_DCP.contains(&target)
                    || TARGETS_OF_TALLY_CORE.contains(&target)
                    || TARGETS_OF_TALLY_MDS.contains(&target),
                "{} is not a fuzz target",
                dir.display()
            );
        }
    }
    for target in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "no seed corpus for {target}");
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let data = fs::read(path).expect("read fuzz input");
            match target {
                "cbor_objects" => check_cbor_objects(&data),
                "package_verify" => check_package_verify(&payment, &data),
                "apdu_parse" => check_apdu_parse(&data),
                "se_dispatch" => check_se_dispatch(&card, &data),
                "adversarial_terminal" => check_adversarial_terminal(&adversary, &data),
                "se_journal" => check_se_journal(&journal, &data),
                "se_stream" => check_se_stream(&stream, &data),
                _ => unreachable!(),
            }
        }
    }
}

/// The generator's package seeds are accepted (so the fuzzer starts from
/// the verifier's deep paths), the at-budget one is exactly at the budget,
/// and every seed passes its target's check. With `TALLY_WRITE_FUZZ_CORPUS`
/// set the seeds are written to `fuzz/corpus/`.
#[test]
fn seeds() {
    let payment = PaymentFixture::new();
    let card = CardFixture::new();
    let adversary = AdversaryFixture::new();
    let journal = JournalFixture::new();
    let stream = fuzzing::StreamFixture::new();
    let seeds = fuzzing::seed_corpus();
    for t in TARGETS {
        assert!(seeds.iter().any(|s| s.target == t), "no seed for {t}");
    }
    for s in &seeds {
        match s.target {
            "package_verify" => {
                let v = verify_package_bytes(
                    &s.bytes,
                    &payment.expected,
                    &payment.trust,
                    payment.params,
                    &mut NoCache,
                );
                assert!(v.is_ok(), "{}: {:?}", s.name, v.err());
                check_package_verify(&payment, &s.bytes);
            }
            "cbor_objects" => check_cbor_objects(&s.bytes),
            "apdu_parse" => check_apdu_parse(&s.bytes),
            "se_dispatch" => check_se_dispatch(&card, &s.bytes),
            "adversarial_terminal" => check_adversarial_terminal(&adversary, &s.bytes),
            "se_journal" => check_se_journal(&journal, &s.bytes),
            "se_stream" => check_se_stream(&stream, &s.bytes),
            other => panic!("seed for unknown target {other}"),
        }
    }
    let at_budget = seeds
        .iter()
        .find(|s| s.name == "at_budget_32.bin")
        .expect("at-budget seed");
    let pkg = Package::from_cbor(&at_budget.bytes).expect("decodes");
    assert_eq!(pkg.ancestry.len(), HISTORY_RECORDS_MAX);

    if std::env::var_os("TALLY_WRITE_FUZZ_CORPUS").is_some() {
        for s in &seeds {
            let dir = fuzz_dir().join("corpus").join(s.target);
            fs::create_dir_all(&dir).expect("create corpus dir");
            fs::write(dir.join(&s.name), &s.bytes).expect("write seed");
        }
    }
}

/// Found by `se_dispatch` (regressions/se_dispatch/
/// receive_accepts_package_spending_own_unspent_token.bin): a clone of an
/// SE pays the original's request with a token the original still holds;
/// the original must refuse the package instead of holding parent and
/// child at once.
#[test]
fn regression_receive_refuses_package_spending_own_unspent_token() {
    let image = CardFixture::new();
    let mut original = image.boot();
    let mut clone = image.boot();
    let request = original
        .applet
        .create_request(tally_core::Amount(100))
        .expect("request");
    let package = clone.applet.pay(&request).expect("the clone pays");
    let refused = original.applet.receive(&package).expect_err("double spend");
    assert_eq!(refused.code(), 1001, "{refused}");
    assert_eq!(original.applet.state().balance(), image.loaded);
    assert_eq!(original.applet.state().open_requests.len(), 1);
}
