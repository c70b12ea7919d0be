//! The MDS's failures answer with the codes tally-codes registers for it
//! (3000–3099), each kind its own: they share `ingestion_failed` alerts
//! with the verifier's 101, so they must not reuse the ledger's 10–13 or
//! settlement's 30 as they did before the registry.

use std::collections::BTreeSet;

use tally_codes::{Component, REGISTRY, State};
use tally_core::{Hash32, OutPoint};
use tally_mds::{AlertState, MdsError};
use tally_store::StoreError;

fn every_kind() -> Vec<MdsError> {
    use MdsError::*;
    vec![
        Store(StoreError::Conflict),
        UnknownInput(OutPoint {
            record: Hash32([1; 32]),
            index: 0,
        }),
        BatchTooLarge { records: 2, max: 1 },
        Overflow,
        AmountOutOfRange {
            record: Hash32([2; 32]),
        },
        AlertNotFound(7),
        IllegalTransition {
            alert: 7,
            from: AlertState::Closed,
            to: AlertState::Open,
        },
        Corrupt("row".into()),
    ]
}

#[test]
fn mds_failures_answer_their_own_registered_codes() {
    let got: BTreeSet<u16> = every_kind().iter().map(|e| e.code()).collect();
    assert_eq!(got.len(), every_kind().len(), "two kinds share a code");
    for e in every_kind() {
        assert!(tally_codes::is_used_by(e.code(), Component::Mds), "{e:?}");
    }
    let registered: BTreeSet<u16> = REGISTRY
        .iter()
        .filter(|c| c.component == Component::Mds && c.state == State::Used)
        .map(|c| c.code)
        .collect();
    assert_eq!(got, registered);
    // The codes a feeder sets aside, and so stores in alerts, are apart
    // from every code the back office answers devices with.
    for e in every_kind().iter().filter(|e| e.is_content_fault()) {
        assert!((3000..3100).contains(&e.code()), "{e:?}");
    }
}
