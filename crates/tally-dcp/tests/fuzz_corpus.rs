//! Replays every committed input of the central-wire fuzz targets,
//! `fuzz/corpus/<target>/*` and `fuzz/regressions/<target>/*` for
//! `central_objects`, `settlement_result` and `central_answer`, through the
//! same checks the targets run (`tally_dcp::fuzzing`), on the stable
//! toolchain. (The wallet's targets are replayed by
//! crates/tally-wallet/tests/fuzz_corpus.rs.)
//!
//! The seeds come from `fuzzing::seed_corpus`. To rewrite them after a
//! wire change: `TALLY_WRITE_FUZZ_CORPUS=1 cargo test -p tally-dcp --test
//! fuzz_corpus seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use tally_core::codec::Cbor;
use tally_dcp::central::CentralCall;
use tally_dcp::fuzzing::{
    self, CentralFixture, ResultFixture, check_central_answer, check_central_objects,
    check_settlement_result,
};

const TARGETS: [&str; 3] = ["central_objects", "settlement_result", "central_answer"];

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

/// Every committed input passes its check. `central_answer` inputs each
/// get a fresh central bank, so one input's effects never explain
/// another's outcome.
#[test]
fn corpus_and_regressions_pass_their_checks() {
    let results = ResultFixture::new();
    for target in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "no seed corpus for {target}");
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let data = fs::read(path).expect("read fuzz input");
            match target {
                "central_objects" => check_central_objects(&data),
                "settlement_result" => check_settlement_result(&results, &data),
                "central_answer" => check_central_answer(&CentralFixture::new(), &data),
                _ => unreachable!(),
            }
        }
    }
}

/// The generated seeds pass their checks, each decoder and method has one,
/// and the executable `central_answer` seeds really execute (so the
/// fuzzer starts from the bank's deep paths, not from its decoder). With
/// `TALLY_WRITE_FUZZ_CORPUS` set they are written to `fuzz/corpus/`.
#[test]
fn seeds() {
    let results = ResultFixture::new();
    let seeds = fuzzing::seed_corpus();
    for t in TARGETS {
        assert!(seeds.iter().any(|s| s.target == t), "no seed for {t}");
    }
    for (i, decoder) in fuzzing::CENTRAL_OBJECTS.iter().enumerate() {
        assert!(
            seeds
                .iter()
                .any(|s| s.target == "central_objects" && s.bytes[0] as usize == i),
            "no central_objects seed for {decoder}"
        );
    }
    for s in &seeds {
        match s.target {
            "central_objects" => check_central_objects(&s.bytes),
            "settlement_result" => {
                let f = &results;
                tally_dcp::SettlementResult::open(&s.bytes, &f.settlement, &f.root, &f.op)
                    .expect("the result seed opens");
                check_settlement_result(f, &s.bytes);
            }
            "central_answer" => {
                let fixture = CentralFixture::new();
                check_central_answer(&fixture, &s.bytes);
                if s.name.starts_with("dcp1-") {
                    let dcp = fuzzing::answer_caller(s.bytes[0]);
                    let r = tally_dcp::central::answer(&fixture.bank, dcp, &s.bytes[1..]);
                    // Executed once already by the check: a retry of a
                    // call answers too (stored result, idempotent reads).
                    assert!(r.is_ok(), "{}: {:?}", s.name, r.err());
                }
            }
            other => panic!("seed for unknown target {other}"),
        }
    }
    if std::env::var_os("TALLY_WRITE_FUZZ_CORPUS").is_some() {
        for t in TARGETS {
            let dir = fuzz_dir().join("corpus").join(t);
            let _ = fs::remove_dir_all(&dir);
        }
        for s in &seeds {
            let dir = fuzz_dir().join("corpus").join(s.target);
            fs::create_dir_all(&dir).expect("create corpus dir");
            fs::write(dir.join(&s.name), &s.bytes).expect("write seed");
        }
    }
}

/// The refusal oracle bites: a call of DCP 3 (not trusted) is refused
/// with code 1300 and changes nothing; a Pay above the settlement
/// account's balance is refused with 11 and leaves both accounts.
#[test]
fn refusals_change_nothing() {
    use tally_dcp::Central;
    let f = CentralFixture::new();
    let e = tally_dcp::central::answer(&f.bank, 3, &CentralCall::Inbox.to_cbor()).unwrap_err();
    assert_eq!(e.code(), tally_codes::CENTRAL_UNKNOWN_DCP);
    let before = (
        f.bank.dcp_balance(1).unwrap(),
        f.bank.dcp_balance(2).unwrap(),
    );
    let inbox = f.bank.inbox(2).unwrap();
    let pay = CentralCall::Call {
        op: tally_core::Hash32([9; 32]),
        reply_key: tally_core::Hash32([8; 32]),
        request: tally_dcp::CentralRequest::Pay {
            to_dcp: 2,
            to_account: "bob".into(),
            amount: fuzzing::FIXTURE_MINT + 1,
        },
    };
    let mut input = vec![0u8];
    input.extend(pay.to_cbor());
    check_central_answer(&f, &input);
    let e = tally_dcp::central::answer(&f.bank, 1, &input[1..]).unwrap_err();
    assert_eq!(e.code(), tally_codes::LEDGER_INSUFFICIENT_FUNDS);
    assert_eq!(
        (
            f.bank.dcp_balance(1).unwrap(),
            f.bank.dcp_balance(2).unwrap()
        ),
        before
    );
    assert_eq!(f.bank.inbox(2).unwrap(), inbox);
}
