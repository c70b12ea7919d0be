//! The back office's refusals answer with the codes tally-codes registers
//! for their component, each kind its own, with the HTTP status the
//! registry gives it; and every ledger, settlement, directory, DCP and
//! node code in use is answered by some kind (docs/CODES.md).

use std::collections::{BTreeMap, BTreeSet};

use tally_central::BackofficeError;
use tally_codes::{Component, REGISTRY, State};
use tally_core::codec::CodecError;
use tally_core::sealed::SealError;
use tally_core::verify::VerifyError;
use tally_core::{Hash32, OutPoint, SecretKey, Suite, Transfer};
use tally_directory::DirectoryError;
use tally_ledger::{DoubleSpend, LedgerError, SettlementError};
use tally_store::StoreError;

fn ledger_kinds() -> Vec<LedgerError> {
    use LedgerError::*;
    vec![
        UnknownAccount("user:x".into()),
        InsufficientFunds {
            account: "user:x".into(),
            balance: 1,
            amount: 2,
        },
        IdempotencyKeyReused("k".into()),
        ZeroAmount,
        SameAccount,
        AccountExists("user:x".into()),
        Overflow,
        InvalidCode,
        Store(StoreError::Db("x".into())),
    ]
}

fn directory_kinds() -> Vec<DirectoryError> {
    use DirectoryError::*;
    vec![
        BadAttestation,
        Conflict,
        UnknownSe,
        UntrustedManufacturer,
        Revoked,
        TooManyRevocations { keys: 65, max: 64 },
        RevocationListFull {
            listed: 1024,
            adding: 1,
            max: 1024,
        },
        Store(StoreError::Conflict),
    ]
}

fn double_spend() -> DoubleSpend {
    let t = Transfer {
        inputs: vec![],
        outputs: vec![],
        nonce: [0; 16],
        counter: 1,
        signatures: vec![],
        confidential: None,
        stream: None,
    };
    DoubleSpend {
        outpoint: OutPoint {
            record: Hash32([1; 32]),
            index: 0,
        },
        first: None,
        second: t,
        offender: SecretKey::from_seed(Suite::Ed25519, &[7; 32])
            .expect("seed")
            .public(),
        value: 1,
    }
}

/// One of each kind of back-office refusal, nested components included.
fn every_kind() -> Vec<BackofficeError> {
    use BackofficeError::*;
    let mut v = vec![
        Decode(CodecError::Truncated),
        Verify(VerifyError::BadSignature),
        Settlement(SettlementError::UnknownIssue(Hash32([2; 32]))),
        Settlement(SettlementError::BeyondHorizon {
            expiry_epoch: 1,
            horizon: 2,
        }),
        Settlement(SettlementError::ConfidentialUnopened(Hash32([3; 32]))),
        Settlement(SettlementError::AuditOpeningInvalid(Hash32([4; 32]))),
        UnknownDevice,
        DeviceNotActive,
        BadDeviceSignature,
        Replay,
        BadKey,
        UnknownRedemption,
        WrongRedemption,
        DoubleSpendByRedeemer(Box::new(double_spend())),
        EscrowMismatch,
        Sealed(SealError::Open),
        BadSettlementResult,
        Signer(tally_central::KeyError::Device("token removed".into())),
        KeysInDatabase,
        KeysChanged { role: "root" },
        OpeningNotShown,
        BadAttachment,
        BadEnrolment,
        EnrolmentCodeUsed,
        TransferMismatch,
        LoadAboveHolding,
        NotCancellable,
        LoadReclaimed,
        ReportsMismatch,
        RevocationKeyNotOpened(Hash32([3; 32])),
        Mds {
            message: "no alert 9".into(),
            client: true,
        },
        Mds {
            message: "store".into(),
            client: false,
        },
        Store(StoreError::Db("x".into())),
    ];
    v.extend(ledger_kinds().into_iter().map(Ledger));
    v.extend(
        ledger_kinds()
            .into_iter()
            .map(|l| Settlement(SettlementError::Ledger(l))),
    );
    v.extend(directory_kinds().into_iter().map(Directory));
    v
}

#[test]
fn every_refusal_answers_its_registered_code_and_status() {
    for e in every_kind() {
        let code = e.code();
        let reg = tally_codes::lookup(code).unwrap_or_else(|| panic!("{code} unregistered: {e:?}"));
        assert_eq!(reg.state, State::Used, "{e:?} answers reserved {code}");
        assert!(
            reg.http.contains(&e.status()),
            "{e:?}: status {} but the registry gives {code} {:?}",
            e.status(),
            reg.http
        );
    }
}

#[test]
fn kinds_have_their_own_codes_and_every_code_in_use_is_answered() {
    // Two kinds with one code would be two meanings for one number; the
    // store failure is one meaning met in several layers.
    let mut by_code: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for e in every_kind() {
        let kind = format!("{e:?}");
        let kind = kind.split(['(', ' ', '{']).next().unwrap_or("").to_string();
        let nested = match &e {
            BackofficeError::Ledger(l)
            | BackofficeError::Settlement(SettlementError::Ledger(l)) => format!("Ledger::{l:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or("")
                .to_string(),
            BackofficeError::Directory(d) => format!("Directory::{d:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or("")
                .to_string(),
            _ => kind,
        };
        by_code.entry(e.code()).or_default().insert(nested);
    }
    for (code, kinds) in &by_code {
        if *code != tally_codes::NODE_INTERNAL {
            assert_eq!(kinds.len(), 1, "code {code} answers {kinds:?}");
        }
    }
    for c in [
        Component::Ledger,
        Component::Settlement,
        Component::Directory,
        Component::Dcp,
        Component::Node,
    ] {
        // 32 is the settlement worker's stored result for a queued body
        // that does not open, not a back-office refusal
        // (tests/e2e_settle_workers.rs checks it).
        for r in REGISTRY.iter().filter(|r| {
            r.component == c
                && r.state == State::Used
                && r.code != tally_codes::SETTLEMENT_QUEUED_BODY_UNREADABLE
        }) {
            assert!(
                by_code.contains_key(&r.code),
                "{} ({}) answered by no kind",
                r.name,
                r.code
            );
        }
    }
}

/// A refusal stored with a device request comes back with its stored code
/// and status, whatever the registry says today.
#[test]
fn a_stored_refusal_keeps_its_code() {
    let e = BackofficeError::RefusedBefore {
        code: tally_codes::LEDGER_INSUFFICIENT_FUNDS,
        status: 422,
        message: "m".into(),
    };
    assert_eq!((e.code(), e.status()), (11, 422));
}
