//! Rules of docs/SPEC.md §10 that an outside implementer must reproduce,
//! pinned on the in-process central bank: the idempotency rule (one
//! execution per `op`, the stored answer whatever the body once the body
//! passes the checks made before the transaction), the reply key, and
//! what the stored answer is. The regressions below are findings of the
//! spec work (issue 11), fixed in tally-central; the `#[ignore]`d test is
//! one that still fails (see the report of branch `wire`).

use tally_core::Hash32;
use tally_core::codec::Cbor;
use tally_dcp::central::{CentralCall, CentralRequest, answer, reply};
use tally_dcp::fuzzing::{self, CentralFixture, FIXTURE_MINT};
use tally_dcp::{Central, SettlementResult};

fn pay(amount: u64) -> CentralRequest {
    CentralRequest::Pay {
        to_dcp: 2,
        to_account: "bob".into(),
        amount,
    }
}

fn open(f: &CentralFixture, signed: &[u8], op: &Hash32) -> SettlementResult {
    let t = f.keys.trust();
    SettlementResult::open(signed, &t.settlement_key.key, &t.root, op).expect("opens")
}

/// §10.5 rule I2: a retry with the same op gets the stored answer, byte
/// for byte, whatever its body; nothing executes twice.
#[test]
fn a_retry_with_the_same_op_gets_the_stored_answer_whatever_its_body() {
    let f = CentralFixture::new();
    let op = Hash32([0x31; 32]);
    let key = Hash32([0x32; 32]);
    let first = f.bank.call(1, &op, &key, &pay(100)).unwrap();
    let again = f.bank.call(1, &op, &key, &pay(100)).unwrap();
    let other_body = f.bank.call(1, &op, &key, &pay(999)).unwrap();
    assert_eq!(first, again);
    assert_eq!(first, other_body);
    assert_eq!(open(&f, &other_body, &op).value, 100);
    assert_eq!(f.bank.dcp_balance(1).unwrap(), FIXTURE_MINT as i64 - 100);
    assert_eq!(f.bank.dcp_balance(2).unwrap(), FIXTURE_MINT as i64 + 100);
    let credits = f.bank.inbox(2).unwrap();
    assert_eq!(
        credits
            .iter()
            .filter(|e| e.account.as_deref() == Some("bob"))
            .count(),
        1,
        "{credits:?}"
    );
}

/// §10.5 rule I3: the stored answer opens only with the reply key of the
/// first call; another key gets code 64 and nothing executes.
#[test]
fn a_retry_with_another_reply_key_is_refused_and_executes_nothing() {
    let f = CentralFixture::new();
    let op = Hash32([0x41; 32]);
    f.bank.call(1, &op, &Hash32([0x42; 32]), &pay(100)).unwrap();
    let e = f
        .bank
        .call(1, &op, &Hash32([0x43; 32]), &pay(100))
        .unwrap_err();
    assert_eq!(e.code(), tally_codes::DCP_BAD_SETTLEMENT_RESULT);
    assert_eq!(f.bank.dcp_balance(1).unwrap(), FIXTURE_MINT as i64 - 100);
}

/// §10.5 rule I4: a refusal is not stored: the same op executes when
/// retried after the cause went away (here: funds arrived).
#[test]
fn a_refused_op_is_not_stored_and_may_succeed_later() {
    let f = CentralFixture::new();
    let op = Hash32([0x51; 32]);
    let key = Hash32([0x52; 32]);
    let too_much = FIXTURE_MINT + 10;
    let e = f.bank.call(1, &op, &key, &pay(too_much)).unwrap_err();
    assert_eq!(e.code(), tally_codes::LEDGER_INSUFFICIENT_FUNDS);
    f.bank.mint(1, "more", 10).unwrap();
    let res = f.bank.call(1, &op, &key, &pay(too_much)).unwrap();
    assert_eq!(open(&f, &res, &op).value, too_much);
}

/// §10.6 rule I2: the stored answer is looked up before the checks of
/// the request's body, so a retry whose body would now be refused (here
/// an Issue of another DCP) still gets the answer of what executed — a
/// refusal would make the DCP undo an op the central bank executed.
/// (Before this rule, the check ran first: the retry got code 1301.)
#[test]
fn the_stored_answer_is_returned_before_the_body_is_checked() {
    let f = CentralFixture::new();
    let op = Hash32([0x61; 32]);
    let key = Hash32([0x62; 32]);
    let first = f.bank.call(1, &op, &key, &pay(100)).unwrap();
    let foreign = CentralRequest::Cancel {
        issue: tally_core::Issue::sign(
            &fuzzing::seed_key(0x77),
            1,
            10,
            vec![tally_core::Output {
                value: tally_core::Amount(5),
                owner: f.keys.device.public(),
            }],
        ),
    };
    assert_eq!(f.bank.call(1, &op, &key, &foreign).unwrap(), first);
    // A payee DCP that is not (or no longer) in the policy: the same.
    let gone = CentralRequest::Pay {
        to_dcp: 99,
        to_account: "bob".into(),
        amount: 100,
    };
    assert_eq!(f.bank.call(1, &op, &key, &gone).unwrap(), first);
    assert_eq!(f.bank.dcp_balance(1).unwrap(), FIXTURE_MINT as i64 - 100);
    // A fresh op with that body is still refused by the check.
    let e = f
        .bank
        .call(1, &Hash32([0x63; 32]), &key, &foreign)
        .unwrap_err();
    assert_eq!(e.code(), tally_codes::CENTRAL_FOREIGN_ISSUE);
}

/// §10.3: the answer to `Call` is a bstr holding the signed result, which
/// opens for the call's op under the trust bundle's settlement key.
#[test]
fn the_answer_to_call_is_the_signed_result_as_a_byte_string() {
    let f = CentralFixture::new();
    let op = Hash32([0x71; 32]);
    let body = CentralCall::Call {
        op,
        reply_key: Hash32([0x72; 32]),
        request: pay(7),
    }
    .to_cbor();
    let bytes = answer(&f.bank, 1, &body).unwrap();
    let signed = reply::signed(&bytes).unwrap();
    assert_eq!(open(&f, &signed, &op).value, 7);
    // The DCP id is not in the body: DCP 2 sending the same bytes pays
    // from its own account, to itself, which is refused (code 10).
    let e = answer(&f.bank, 2, &body).unwrap_err();
    assert_eq!(e.code(), tally_codes::LEDGER_UNKNOWN_ACCOUNT);
}

// ---- findings of the spec work --------------------------------------------------

/// §2.1 says every decoder rejects non-canonical input. The `reply`
/// decoders read with `Reader` and did not re-encode, so a non-shortest
/// integer head was accepted: `18 05` was 5 as a balance (found by the
/// `central_objects` fuzz target, fuzz/regressions/central_objects/).
#[test]
fn reply_decoders_refuse_non_canonical_input() {
    assert!(reply::balance(&[0x18, 0x05]).is_err());
    assert!(reply::unit(&[0x98, 0x00]).is_err());
    assert!(reply::inbox(&[0x98, 0x00]).is_err());
}

/// The same for a signed result: a non-shortest head for `settled` kept
/// the signature valid (the message is computed from the decoded values),
/// so one result had several accepted encodings.
#[test]
fn settlement_result_open_refuses_non_canonical_input() {
    let f = CentralFixture::new();
    let k = &f.keys;
    let signed = fuzzing::sign_result(&fuzzing::settlement_result(k), &*k.settlement);
    // [0x8b, 0x02, 0x58 0x20 op(32), settled=0x01, …]: settled at offset 36.
    assert_eq!(signed[36], 0x01);
    let mut loose = signed[..36].to_vec();
    loose.extend([0x18, 0x01]);
    loose.extend(&signed[37..]);
    let t = k.trust();
    assert!(
        SettlementResult::open(&loose, &t.settlement_key.key, &t.root, &fuzzing::OP).is_err(),
        "a non-canonical result opened"
    );
}

/// A Load of an Issue the central bank already registered (under another
/// op) debited the DCP's account again: registration was idempotent by
/// Issue id, the ledger transfer keyed by op, so the float held twice the
/// value of the one token. Now refused (1301), changing nothing.
#[test]
fn a_second_load_of_the_same_issue_is_refused() {
    let f = CentralFixture::new();
    let issue = f.keys.issue(99, 500);
    let load = CentralRequest::Load {
        issue,
        class: tally_core::policy::device_class::PHONE,
    };
    f.bank
        .call(1, &Hash32([0x81; 32]), &Hash32([0x82; 32]), &load)
        .unwrap();
    let second = f
        .bank
        .call(1, &Hash32([0x83; 32]), &Hash32([0x84; 32]), &load);
    assert_eq!(
        second.expect_err("the same Issue was loaded twice").code(),
        tally_codes::CENTRAL_FOREIGN_ISSUE
    );
    assert_eq!(f.bank.dcp_balance(1).unwrap(), FIXTURE_MINT as i64 - 500);
}

/// Stored answers are kept per (DCP, op) (they were keyed by op alone, so
/// an op of DCP 2 answered DCP 1 with DCP 2's result): DCP 1's own call
/// with an op DCP 2 used executes for DCP 1.
#[test]
fn stored_answers_are_kept_per_dcp() {
    let f = CentralFixture::new();
    let op = Hash32([0x91; 32]);
    let key = Hash32([0x92; 32]);
    let to_dcp1 = CentralRequest::Pay {
        to_dcp: 1,
        to_account: "alice".into(),
        amount: 5,
    };
    f.bank.call(2, &op, &key, &to_dcp1).unwrap();
    let load = CentralRequest::Load {
        issue: f.keys.issue(91, 300),
        class: tally_core::policy::device_class::PHONE,
    };
    let signed = f.bank.call(1, &op, &key, &load).unwrap();
    let res = open(&f, &signed, &op);
    assert_eq!(
        (res.value, res.issues.len()),
        (300, 1),
        "DCP 1 got DCP 2's result"
    );
}

/// What is left of the same finding: the ledger's idempotency keys
/// (`interbank:<op>`, `load:<op>`, `unload:<op>`, `redeem:<op>`,
/// `sync:<op>:<i>`) are still per op, so an op another DCP used first for
/// the same kind makes DCP 1's call fail with 12 (409) — a refusal its
/// saga treats as final. Ops are hashes of SE-signed requests, so this
/// needs a DCP that learns another's request ids.
#[test]
fn an_op_of_one_dcp_does_not_block_another_dcps_request() {
    let f = CentralFixture::new();
    let op = Hash32([0x93; 32]);
    let key = Hash32([0x94; 32]);
    let to_dcp1 = CentralRequest::Pay {
        to_dcp: 1,
        to_account: "alice".into(),
        amount: 5,
    };
    f.bank.call(2, &op, &key, &to_dcp1).unwrap();
    let signed = f.bank.call(1, &op, &key, &pay(100)).unwrap();
    assert_eq!(open(&f, &signed, &op).value, 100);
}
