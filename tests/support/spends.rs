//! Spends of one token, for the end-to-end settlement races
//! (tests/e2e_settle_workers.rs, tests/e2e_central_processes.rs): an
//! Issue's output spent through `hops` transfers between fresh keys to
//! the DCP key, as a certified package; and the `key=value` fields of a
//! child process's report line.

#![allow(dead_code)]

use tally_core::policy::device_class::PHONE;
use tally_core::testkit::{Scheme, key};
use tally_core::{Amount, Issue, OutPoint, Output, Package, Record, SecretKey, Suite, Transfer};

/// `input` (worth `value`) to `to`, signed by `owner`.
pub fn transfer(
    input: OutPoint,
    to: &SecretKey,
    nonce: u8,
    owner: &SecretKey,
    value: u64,
) -> Transfer {
    let mut t = Transfer {
        inputs: vec![input],
        outputs: vec![Output {
            value: Amount(value),
            owner: to.public(),
        }],
        nonce: [nonce; 16],
        counter: 1,
        signatures: Vec::new(),
        confidential: None,
        stream: None,
    };
    t.signatures = vec![owner.sign(&t.id().0)];
    t
}

/// `issue` (one output of `value`, owned by `k0`) → `hops` transfers
/// between keys `key("{label}/{n}/{h}")` → the DCP key.
pub fn spend(
    scheme: &Scheme,
    label: &str,
    n: usize,
    issue: &Issue,
    k0: &SecretKey,
    hops: usize,
    value: u64,
) -> Package {
    let mut ancestry = vec![Record::Issue(issue.clone())];
    let mut keys = vec![k0.clone()];
    let mut prev = OutPoint {
        record: issue.id(),
        index: 0,
    };
    for h in 1..=hops {
        let k = key(Suite::Ed25519, format!("{label}/{n}/{h}").as_bytes());
        let t = transfer(prev, &k, 2, &keys[h - 1], value);
        prev = OutPoint {
            record: t.id(),
            index: 0,
        };
        ancestry.push(Record::Transfer(t));
        keys.push(k);
    }
    let last = transfer(prev, &scheme.dcp, hops as u8 + 1, &keys[hops], value);
    Package {
        transfer: last,
        ancestry,
        certificates: keys
            .iter()
            .map(|k| scheme.certify(k.public(), PHONE, 0))
            .collect(),
    }
}

/// The integer field `key=…` of a report line.
pub fn field(line: &str, key: &str) -> i64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in `{line}`"))
}
