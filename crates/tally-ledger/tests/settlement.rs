//! Settlement and the spent registry, one suite run against SQLite (temp
//! file) and PostgreSQL (fresh schema per test; skipped loudly when
//! TALLY_TEST_DATABASE_URL is unset), on real offline packages made by
//! test SEs: every input of an ancestry is registered once, replays are
//! no-ops, a cloned SE's double spend is found (also in the middle of an
//! ancestry) with both signed records as evidence and booked to the loss
//! account, unregistered Issues are refused, stranded outputs are consumed
//! once, and the time-bound rules a payee enforces do not stop settlement.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{audit, balance, count, ledger_snapshot, query, run};
use tally_core::codec::Cbor;
use tally_core::crypto::verify;
use tally_core::dcp::RedemptionOrder;
use tally_core::policy::device_class::{CARD, DCP, PHONE};
use tally_core::testkit::{Scheme, TestEntropy};
use tally_core::verify::{NoCache, verify_package, verify_package_for_settlement};
use tally_core::{
    Amount, Expected, Hash32, Issue, OutPoint, Package, Record, Request, Suite, Transfer,
    VerifiedPackage, VerifyError, VerifyParams,
};
use tally_ledger::ledger::{self, AccountKind, Ledger, LedgerError, TransferRequest, code};
use tally_ledger::settlement::{Settlement, SettlementError, SettlementOutcome};
use tally_se::storage::MemStorage;
use tally_se::{Applet, Sealing};
use tally_store::{Row, Store, TxFailure};
use tally_wallet::SeLink;
use tally_wallet::testkit::{TEST_STORAGE_BYTES, TestDevice, certify_fresh_keys, provision};

/// An SE whose storage the test can copy (the cloned-SE attack).
type Se = Applet<MemStorage, TestEntropy>;

const DCP_ACCOUNT: &str = "dcp:1";
/// Settlement's history budget (the DCP tier's).
const SETTLEMENT_RECORDS_MAX: usize = 1024;

// ---- devices -------------------------------------------------------------

fn se(scheme: &Scheme, label: &str, class: u8) -> Se {
    let mut a = Applet::boot(
        MemStorage::new(TEST_STORAGE_BYTES),
        Sealing::None,
        TestEntropy::new(label.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("boot {label}: {e}"));
    provision(&mut a, scheme, class, 4).unwrap_or_else(|e| panic!("provision {label}: {e}"));
    a
}

/// A device behind the APDU transport (cards speak short APDUs).
fn device(scheme: &Scheme, label: &str, class: u8) -> TestDevice {
    let apdu = if class == CARD { 255 } else { 4096 };
    TestDevice::new(scheme, label.as_bytes(), class, apdu)
        .unwrap_or_else(|e| panic!("device {label}: {e}"))
}

/// Boots `n` SEs from a byte copy of `se`'s storage.
fn clones(se: Se, n: usize) -> Vec<Se> {
    let image = se.into_storage().into_bytes();
    (0..n)
        .map(|i| {
            Applet::boot(
                MemStorage::from_bytes(image.clone()),
                Sealing::None,
                TestEntropy::new(format!("clone-{i}").as_bytes()),
            )
            .unwrap_or_else(|e| panic!("clone {i}: {e}"))
        })
        .collect()
}

/// The DCP issues `value` to a fresh certified key of the SE; returns the
/// Issue so the back office can register it.
fn load(se: &mut dyn SeLink, scheme: &mut Scheme, class: u8, value: u64) -> Issue {
    let keys = certify_fresh_keys(se, scheme, class, 1).unwrap_or_else(|e| panic!("keys: {e}"));
    let issue = scheme.issue(keys[0], value);
    se.import_issue(&issue)
        .unwrap_or_else(|e| panic!("import: {e}"));
    issue
}

/// One offline payment, all four messages; the payee SE verified and
/// stored it. Returns the package the payer sent.
fn pay(payer: &mut dyn SeLink, payee: &mut dyn SeLink, amount: u64) -> Package {
    let request = payee
        .create_request(Amount(amount))
        .unwrap_or_else(|e| panic!("request: {e}"));
    let bytes = payer.pay(&request).unwrap_or_else(|e| panic!("pay: {e}"));
    let receipt = payee
        .receive(&bytes)
        .unwrap_or_else(|e| panic!("payee refused: {e}"));
    payer.ack(&receipt).unwrap_or_else(|e| panic!("ack: {e}"));
    Package::from_cbor(&bytes).unwrap_or_else(|e| panic!("package: {e}"))
}

/// Renewal/unload: the SE pays the DCP's redemption key, on the DCP's
/// order bound to this SE.
fn redeem(se: &mut dyn SeLink, scheme: &Scheme, amount: u64) -> Package {
    let request = Request::sign(
        &scheme.dcp,
        Amount(amount),
        [0x52; 16],
        scheme.certify(scheme.dcp.public(), DCP, 0),
        scheme.epoch,
    );
    let se_id = se
        .attestation_key()
        .unwrap_or_else(|e| panic!("attestation key: {e}"))
        .id();
    let order = RedemptionOrder::sign(&scheme.dcp, se_id, false, request);
    let bytes = se.redeem(&order).unwrap_or_else(|e| panic!("redeem: {e}"));
    Package::from_cbor(&bytes).unwrap_or_else(|e| panic!("package: {e}"))
}

// ---- packages --------------------------------------------------------------

/// Every transfer of a package: ancestry transfers, then the new one.
fn transfers_of(pkg: &Package) -> Vec<&Transfer> {
    pkg.ancestry
        .iter()
        .filter_map(|r| match r {
            Record::Transfer(t) => Some(t),
            Record::Issue(_) => None,
        })
        .chain(std::iter::once(&pkg.transfer))
        .collect()
}

/// Every `(input, consuming record)` of a package.
fn inputs_of(pkg: &Package) -> Vec<(OutPoint, Hash32)> {
    transfers_of(pkg)
        .into_iter()
        .flat_map(|t| t.inputs.iter().map(move |op| (*op, t.id())))
        .collect()
}

/// Value of the tokens that exist after these packages, from the packages
/// alone: outputs of every record minus every consumed output. A double
/// spend consumes one output twice and so leaves both spends' outputs
/// outstanding: what the float must cover.
fn outstanding(pkgs: &[&Package]) -> i64 {
    let mut outputs: BTreeMap<OutPoint, u64> = BTreeMap::new();
    let mut consumed: BTreeSet<OutPoint> = BTreeSet::new();
    for p in pkgs {
        let records = p
            .ancestry
            .iter()
            .cloned()
            .chain(std::iter::once(Record::Transfer(p.transfer.clone())));
        for r in records {
            let id = r.id();
            for (i, o) in r.outputs().iter().enumerate() {
                outputs.insert(
                    OutPoint {
                        record: id,
                        index: i as u8,
                    },
                    o.value.0,
                );
            }
            consumed.extend(r.inputs().iter().copied());
        }
    }
    outputs
        .iter()
        .filter(|(op, _)| !consumed.contains(op))
        .map(|(_, v)| *v as i64)
        .sum()
}

// ---- back office -----------------------------------------------------------

/// What a DCP load does in the back office: registers the Issue it signed
/// (unless `register` is false: a counterfeit root) and moves its value
/// into the offline float: mint to the DCP's account, then DCP → float.
fn book_issue(s: &Store, issue: &Issue, register: bool) {
    let value: u64 = issue.outputs.iter().map(|o| o.value.0).sum();
    let id = issue.id();
    run(s, |tx| {
        Ledger::ensure_account(tx, DCP_ACCOUNT, AccountKind::DcpSettlement)?;
        if register {
            Settlement::register_issue(tx, 1, issue)?;
        }
        Ledger::mint(tx, &format!("mint:{id}"), DCP_ACCOUNT, value)?;
        Ledger::transfer(
            tx,
            &TransferRequest {
                idem: format!("load:{id}"),
                debit: DCP_ACCOUNT.into(),
                credit: ledger::OFFLINE_FLOAT.into(),
                amount: value,
                code: code::LOAD,
            },
        )?;
        Ok::<_, SettlementError>(())
    });
}

fn book_load(s: &Store, issue: &Issue) {
    book_issue(s, issue, true);
}

fn verified_at(scheme: &Scheme, pkg: &Package, epoch: u32) -> VerifiedPackage {
    let params = VerifyParams {
        epoch,
        history_records_max: SETTLEMENT_RECORDS_MAX,
        signature_batch_max: usize::MAX,
    };
    verify_package_for_settlement(pkg.clone(), &scheme.trust(), params, &mut NoCache)
        .unwrap_or_else(|e| panic!("settlement verification: {e}"))
}

/// Settlement inside one transaction that commits whatever settle
/// answered: a refusal must itself write nothing.
fn try_settle(
    s: &Store,
    v: &VerifiedPackage,
    idem: &str,
) -> Result<SettlementOutcome, SettlementError> {
    run(s, |tx| match Settlement::settle(tx, v, idem) {
        Err(e) if e.is_conflict() => Err(e),
        r => Ok(r),
    })
}

/// Verifies and settles; the ledger must balance afterwards.
fn settle(s: &Store, scheme: &Scheme, pkg: &Package, idem: &str) -> SettlementOutcome {
    let v = verified_at(scheme, pkg, scheme.epoch);
    let out = run(s, |tx| Settlement::settle(tx, &v, idem));
    audit(s);
    out
}

fn is_spent(s: &Store, op: &OutPoint) -> Option<Hash32> {
    run(s, |tx| Settlement::is_spent(tx, op))
}

fn double_spends(s: &Store) -> i64 {
    run(s, |tx| Settlement::double_spend_count(tx))
}

fn registry_snapshot(s: &Store) -> Vec<Vec<Row>> {
    [
        "SELECT record, idx, consumed_by FROM spent ORDER BY record, idx",
        "SELECT id, body FROM settled_records ORDER BY id",
        "SELECT seq, record, idx, first_record, second_record, offender_key, value FROM double_spends ORDER BY seq",
        "SELECT id, value, dcp, body FROM issued ORDER BY id",
    ]
    .iter()
    .map(|q| query(s, q))
    .collect()
}

/// Everything settlement may touch.
fn books(s: &Store) -> (Vec<Vec<Row>>, Vec<Vec<Row>>) {
    (ledger_snapshot(s), registry_snapshot(s))
}

fn outcome(registered: usize, already: usize) -> SettlementOutcome {
    SettlementOutcome {
        registered,
        already,
        double_spends: Vec::new(),
        loss_booked: 0,
        stream_overclaims: Vec::new(),
    }
}

// ---- a renewal with a merged, multi-hop ancestry ---------------------------

struct Renewal {
    scheme: Scheme,
    issues: Vec<Issue>,
    /// A → B (merges two Issues), B → C (merges that with a third Issue).
    hops: Vec<Package>,
    /// C renews everything it holds: pays the DCP's redemption key.
    renewal: Package,
}

const RENEWAL_INPUTS: usize = 5;

fn renewal() -> Renewal {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut a = device(&scheme, "a", PHONE);
    let mut b = device(&scheme, "b", CARD);
    let mut c = device(&scheme, "c", PHONE);
    let i1 = load(&mut a.link, &mut scheme, PHONE, 300);
    let i2 = load(&mut a.link, &mut scheme, PHONE, 200);
    let ab = pay(&mut a.link, &mut b.link, 450);
    let i3 = load(&mut b.link, &mut scheme, CARD, 50);
    let bc = pay(&mut b.link, &mut c.link, 480);
    let renewal = redeem(&mut c.link, &scheme, 480);
    // The shape the counts below rely on: 3 Issues and 2 transfers of 2
    // inputs each behind a renewal of 1 input.
    assert_eq!(renewal.ancestry.len(), 5);
    assert_eq!(
        transfers_of(&renewal)
            .iter()
            .map(|t| t.inputs.len())
            .collect::<Vec<_>>(),
        [2, 2, 1]
    );
    assert_eq!(inputs_of(&renewal).len(), RENEWAL_INPUTS);
    assert_eq!(renewal.transfer.outputs[0].owner, scheme.dcp.public());
    Renewal {
        scheme,
        issues: vec![i1, i2, i3],
        hops: vec![ab, bc],
        renewal,
    }
}

fn renewal_registers_every_input_of_every_record_in_its_ancestry(s: &Store) {
    let w = renewal();
    for i in &w.issues {
        book_load(s, i);
    }
    let journal = count(s, "ledger_journal");
    let out = settle(s, &w.scheme, &w.renewal, "renew-1");
    assert_eq!(out, outcome(RENEWAL_INPUTS, 0));
    assert_eq!(count(s, "spent"), RENEWAL_INPUTS as i64);
    for (op, consumer) in inputs_of(&w.renewal) {
        assert_eq!(is_spent(s, &op), Some(consumer), "{op:?}");
    }
    // Only inputs: the renewal's output and B's change stay unspent.
    let bc = &w.hops[1].transfer;
    for op in [
        OutPoint {
            record: w.renewal.transfer.id(),
            index: 0,
        },
        OutPoint {
            record: bc.id(),
            index: 1,
        },
    ] {
        assert_eq!(is_spent(s, &op), None);
    }
    assert_eq!(count(s, "settled_records"), 3);
    assert_eq!(double_spends(s), 0);
    // No double spend: settlement journals nothing, the float is intact.
    assert_eq!(count(s, "ledger_journal"), journal);
    assert_eq!(balance(s, ledger::OFFLINE_FLOAT), 550);
    assert_eq!(balance(s, ledger::LOSS), 0);
}

fn settling_the_same_package_again_is_a_no_op(s: &Store) {
    let w = renewal();
    for i in &w.issues {
        book_load(s, i);
    }
    settle(s, &w.scheme, &w.renewal, "renew-1");
    let before = books(s);
    for idem in ["renew-1", "renew-1-retry"] {
        let out = settle(s, &w.scheme, &w.renewal, idem);
        assert_eq!(out, outcome(0, RENEWAL_INPUTS), "{idem}");
        assert_eq!(books(s), before, "a replay changed the books ({idem})");
    }
    assert_eq!(double_spends(s), 0);
}

fn settled_ancestors_count_as_already(s: &Store) {
    let w = renewal();
    for i in &w.issues {
        book_load(s, i);
    }
    assert_eq!(settle(s, &w.scheme, &w.hops[0], "hop-1"), outcome(2, 0));
    assert_eq!(settle(s, &w.scheme, &w.hops[1], "hop-2"), outcome(2, 2));
    assert_eq!(settle(s, &w.scheme, &w.renewal, "renew"), outcome(1, 4));
    assert_eq!(count(s, "spent"), RENEWAL_INPUTS as i64);
    assert_eq!(double_spends(s), 0);
}

// ---- cloned SEs ------------------------------------------------------------

const CLONED_VALUE: u64 = 1_000;

/// A loaded payer SE (its Issue booked) copied byte for byte `n` times.
fn cloned_payer(s: &Store, scheme: &mut Scheme, n: usize) -> (Vec<Se>, Issue) {
    let mut payer = se(scheme, "payer", PHONE);
    let issue = load(&mut payer, scheme, PHONE, CLONED_VALUE);
    book_load(s, &issue);
    let copies = clones(payer, n);
    for c in &copies {
        assert_eq!(c.state().balance(), Amount(CLONED_VALUE));
    }
    (copies, issue)
}

/// Checks one piece of double-spend evidence against the two packages.
fn assert_evidence(
    ds: &tally_ledger::DoubleSpend,
    issue: &Issue,
    first: &Transfer,
    second: &Transfer,
) {
    let token = OutPoint {
        record: issue.id(),
        index: 0,
    };
    assert_eq!(ds.outpoint, token);
    let ds_first = ds
        .first
        .as_ref()
        .expect("first consumer is a settled record");
    assert_eq!(ds_first, first);
    assert_eq!(&ds.second, second);
    assert_ne!(ds_first.id(), ds.second.id());
    assert!(ds_first.inputs.contains(&token) && ds.second.inputs.contains(&token));
    assert_eq!(ds.offender, issue.outputs[0].owner);
    assert_eq!(ds.value, CLONED_VALUE);
    assert_eq!(ds.value, issue.outputs[0].value.0);
    // Two signatures by one key over two different transfers.
    for t in [ds_first, &ds.second] {
        assert_eq!(t.signatures.len(), 1);
        assert!(
            verify(&ds.offender, &t.id().0, &t.signatures[0]).is_ok(),
            "evidence does not verify with the offender key"
        );
    }
    assert!(verify(&ds.offender, &ds.second.id().0, &ds_first.signatures[0]).is_err());
}

fn cloned_se_double_spend_is_found_with_both_signed_records(s: &Store) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let (mut c, issue) = cloned_payer(s, &mut scheme, 2);
    let mut payee_a = device(&scheme, "payee-a", PHONE);
    let mut payee_b = device(&scheme, "payee-b", CARD);
    // Offline, both payees accept: only settlement can catch it.
    let pkg_a = pay(&mut c[0], &mut payee_a.link, 300);
    let pkg_b = pay(&mut c[1], &mut payee_b.link, CLONED_VALUE);
    assert_eq!(pkg_a.transfer.inputs, pkg_b.transfer.inputs);

    assert_eq!(settle(s, &scheme, &pkg_a, "settle-a"), outcome(1, 0));
    assert_eq!(balance(s, ledger::OFFLINE_FLOAT), CLONED_VALUE as i64);
    let journal = count(s, "ledger_journal");

    let out = settle(s, &scheme, &pkg_b, "settle-b");
    assert_eq!((out.registered, out.already), (0, 0));
    assert_eq!(out.double_spends.len(), 1, "{out:?}");
    assert_evidence(
        &out.double_spends[0],
        &issue,
        &pkg_a.transfer,
        &pkg_b.transfer,
    );
    assert_eq!(out.loss_booked, CLONED_VALUE);
    // The loss is booked: loss −value, float +value, one journal entry.
    assert_eq!(balance(s, ledger::LOSS), -(CLONED_VALUE as i64));
    assert_eq!(balance(s, ledger::OFFLINE_FLOAT), 2 * CLONED_VALUE as i64);
    assert_eq!(
        balance(s, ledger::OFFLINE_FLOAT),
        outstanding(&[&pkg_a, &pkg_b])
    );
    assert_eq!(count(s, "ledger_journal"), journal + 1);
    let last = query(
        s,
        "SELECT idem, debit, credit, amount, code FROM ledger_journal ORDER BY seq DESC LIMIT 1",
    );
    assert_eq!(last[0].text(0).unwrap(), "settle-b:loss");
    assert_eq!(last[0].text(1).unwrap(), ledger::LOSS);
    assert_eq!(last[0].text(2).unwrap(), ledger::OFFLINE_FLOAT);
    assert_eq!(last[0].int(3).unwrap(), CLONED_VALUE as i64);
    assert_eq!(last[0].int(4).unwrap(), code::LOSS_COVER);
    let inv = audit(s);
    assert_eq!(inv.loss, -(CLONED_VALUE as i64));

    // The stored evidence names both records and the offender.
    assert_eq!(double_spends(s), 1);
    let row = &query(
        s,
        "SELECT first_record, second_record, offender_key, value FROM double_spends",
    )[0];
    assert_eq!(row.bytes(0).unwrap(), pkg_a.transfer.id().0);
    assert_eq!(row.bytes(1).unwrap(), pkg_b.transfer.id().0);
    assert_eq!(row.bytes(2).unwrap(), issue.outputs[0].owner.to_cbor());
    assert_eq!(row.int(3).unwrap(), CLONED_VALUE as i64);
    // The first consumption stands; the payees' tokens stay spendable
    // (offline payments are final for the payee).
    assert_eq!(
        is_spent(s, &pkg_a.transfer.inputs[0]),
        Some(pkg_a.transfer.id())
    );
    for p in [&pkg_a, &pkg_b] {
        let paid = OutPoint {
            record: p.transfer.id(),
            index: 0,
        };
        assert_eq!(is_spent(s, &paid), None);
    }

    // Replaying the double-spending package reports and books nothing new.
    let before = books(s);
    for idem in ["settle-b", "settle-b-retry"] {
        let again = settle(s, &scheme, &pkg_b, idem);
        assert_eq!(again, outcome(0, 0), "{idem}");
        assert_eq!(books(s), before, "{idem}");
    }
    // Nor does replaying the first one.
    assert_eq!(settle(s, &scheme, &pkg_a, "settle-a"), outcome(0, 1));
    assert_eq!(books(s), before);
}

fn every_further_copy_is_one_more_double_spend(s: &Store) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let (mut c, issue) = cloned_payer(s, &mut scheme, 3);
    let mut pkgs = Vec::new();
    for (i, amount) in [300, CLONED_VALUE, 700].into_iter().enumerate() {
        let mut payee = device(&scheme, &format!("payee-{i}"), PHONE);
        pkgs.push(pay(&mut c[i], &mut payee.link, amount));
    }
    let outs: Vec<SettlementOutcome> = pkgs
        .iter()
        .enumerate()
        .map(|(i, p)| settle(s, &scheme, p, &format!("settle-{i}")))
        .collect();
    assert!(outs[0].double_spends.is_empty());
    for i in [1, 2] {
        assert_eq!(outs[i].double_spends.len(), 1);
        // Evidence always pairs with the consumption that was registered.
        assert_evidence(
            &outs[i].double_spends[0],
            &issue,
            &pkgs[0].transfer,
            &pkgs[i].transfer,
        );
    }
    assert_eq!(double_spends(s), 2);
    assert_eq!(balance(s, ledger::LOSS), -2 * CLONED_VALUE as i64);
    let refs: Vec<&Package> = pkgs.iter().collect();
    assert_eq!(balance(s, ledger::OFFLINE_FLOAT), outstanding(&refs));
    assert_eq!(outstanding(&refs), 3 * CLONED_VALUE as i64);
}

fn double_spend_in_the_middle_of_an_ancestry_is_found(s: &Store) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let (mut c, issue) = cloned_payer(s, &mut scheme, 2);
    let mut a = device(&scheme, "a", PHONE);
    let mut b = device(&scheme, "b", CARD);
    let mut a2 = device(&scheme, "a2", PHONE);
    let mut b2 = device(&scheme, "b2", PHONE);
    let pkg_a = pay(&mut c[0], &mut a.link, 300);
    let pkg_b = pay(&mut c[1], &mut b.link, CLONED_VALUE);
    // Each payee spends onward; only these downstream packages settle.
    let pkg_a2 = pay(&mut a.link, &mut a2.link, 200);
    let pkg_b2 = pay(&mut b.link, &mut b2.link, 600);
    assert_eq!(
        pkg_b2.ancestry.len(),
        2,
        "the clone's spend is in the middle"
    );

    assert_eq!(settle(s, &scheme, &pkg_a2, "settle-a2"), outcome(2, 0));
    let out = settle(s, &scheme, &pkg_b2, "settle-b2");
    // The final transfer's own input is new; the clone's spend in its
    // ancestry is the double spend.
    assert_eq!((out.registered, out.already), (1, 0));
    assert_eq!(out.double_spends.len(), 1, "{out:?}");
    assert_evidence(
        &out.double_spends[0],
        &issue,
        &pkg_a.transfer,
        &pkg_b.transfer,
    );
    assert_eq!(out.loss_booked, CLONED_VALUE);
    assert_eq!(
        is_spent(s, &pkg_b2.transfer.inputs[0]),
        Some(pkg_b2.transfer.id())
    );
    assert_eq!(balance(s, ledger::LOSS), -(CLONED_VALUE as i64));
    assert_eq!(
        balance(s, ledger::OFFLINE_FLOAT),
        outstanding(&[&pkg_a2, &pkg_b2])
    );
    assert!(audit(s).holds());
}

// ---- refusals --------------------------------------------------------------

fn unknown_issue_is_refused_with_code_30_and_changes_nothing(s: &Store) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut a = device(&scheme, "a", PHONE);
    let mut b = device(&scheme, "b", PHONE);
    let known = load(&mut a.link, &mut scheme, PHONE, 300);
    let unknown = load(&mut a.link, &mut scheme, PHONE, 200);
    book_issue(s, &known, true);
    book_issue(s, &unknown, false);
    // Merges both tokens: the unregistered root comes second.
    let pkg = pay(&mut a.link, &mut b.link, 450);
    assert_eq!(pkg.ancestry.len(), 2);
    // The package is genuine as far as signatures go: only the registry
    // knows that no DCP reported this Issue.
    let v = verified_at(&scheme, &pkg, scheme.epoch);
    let before = books(s);
    let e = try_settle(s, &v, "settle-1").expect_err("counterfeit root");
    assert_eq!(e, SettlementError::UnknownIssue(unknown.id()));
    assert_eq!(e.code(), 30);
    assert_eq!(books(s), before, "a refused settlement wrote");
    assert_eq!(count(s, "spent"), 0);

    // Once the DCP registers it, the same package settles.
    run(s, |tx| Settlement::register_issue(tx, 1, &unknown));
    run(s, |tx| Settlement::register_issue(tx, 1, &unknown)); // idempotent
    assert_eq!(count(s, "issued"), 2);
    assert_eq!(try_settle(s, &v, "settle-1"), Ok(outcome(2, 0)));
    audit(s);
}

/// Confidential amounts (SPEC §4.9) are booked only from their openings,
/// which do not reach settlement yet: a confidential Issue or package is
/// refused with code 33 and nothing is written (never booked as zero).
fn confidential_records_are_refused_without_openings(s: &Store) {
    let mut scheme = Scheme::confidential(Suite::Ed25519);
    let mut a = device(&scheme, "conf-a", PHONE);
    let mut b = device(&scheme, "conf-b", PHONE);
    let issue = load(&mut a.link, &mut scheme, PHONE, 300);
    assert!(issue.confidential.is_some());
    let before = books(s);
    let e = run(s, |tx| match Settlement::register_issue(tx, 1, &issue) {
        Err(e) if e.is_conflict() => Err(e),
        r => Ok(r),
    })
    .expect_err("a confidential Issue has no value to register");
    assert_eq!(e, SettlementError::ConfidentialUnopened(issue.id()));
    assert_eq!(e.code(), 33);
    let pkg = pay(&mut a.link, &mut b.link, 100);
    let v = verified_at(&scheme, &pkg, scheme.epoch);
    let e = try_settle(s, &v, "conf-1").expect_err("confidential package");
    assert_eq!(e.code(), 33);
    assert_eq!(books(s), before, "a refused settlement wrote");
    assert_eq!(count(s, "spent"), 0);
}

// ---- confidential: settlement values records from their audit seals ----

fn audit_key() -> tally_core::sealed::OpeningKey {
    tally_core::sealed::OpeningKey::from_seed(&Scheme::AUDIT_SEED)
}

fn range_bits(scheme: &Scheme) -> tally_core::confidential::RangeBits {
    tally_core::confidential::RangeBits::for_bound(scheme.policy.holding_bound())
}

/// A confidential load in the back office: settlement opens the Issue's
/// audit seal (C7) and registers and books the opened value.
fn book_confidential_load(s: &Store, scheme: &Scheme, issue: &Issue) -> u64 {
    let audited = issue
        .open_audit(&audit_key(), range_bits(scheme))
        .unwrap_or_else(|e| panic!("audit seal of the Issue: {e}"));
    let value = audited.value().0;
    let id = issue.id();
    run(s, |tx| {
        Ledger::ensure_account(tx, DCP_ACCOUNT, AccountKind::DcpSettlement)?;
        Settlement::register_audited_issue(tx, 1, &audited)?;
        Ledger::mint(tx, &format!("mint:{id}"), DCP_ACCOUNT, value)?;
        Ledger::transfer(
            tx,
            &TransferRequest {
                idem: format!("load:{id}"),
                debit: DCP_ACCOUNT.into(),
                credit: ledger::OFFLINE_FLOAT.into(),
                amount: value,
                code: code::LOAD,
            },
        )?;
        Ok::<_, SettlementError>(())
    });
    value
}

/// Verification for settlement, then C7 (what the central bank does
/// before its transaction).
fn opened(scheme: &Scheme, pkg: &Package) -> VerifiedPackage {
    verified_at(scheme, pkg, scheme.epoch)
        .open_audit(&audit_key(), range_bits(scheme))
        .unwrap_or_else(|f| panic!("audit seal of {}: {}", f.record, f.reason))
}

/// Outstanding value of confidential packages, from settlement's opened view.
fn outstanding_opened(scheme: &Scheme, pkgs: &[&Package]) -> i64 {
    let opened: Vec<Package> = pkgs
        .iter()
        .map(|p| opened(scheme, p).into_package())
        .collect();
    outstanding(&opened.iter().collect::<Vec<_>>())
}

/// Load → pay → pay onward → redeem the rest, in confidential mode: every
/// package settles from its audit openings, the float equals the value
/// still held offline, and the redeemed amount is what was loaded minus
/// what was paid away.
fn confidential_chain_settles_from_audit_openings(s: &Store) {
    let mut scheme = Scheme::confidential(Suite::Ed25519);
    let mut a = device(&scheme, "conf-chain-a", PHONE);
    let mut b = device(&scheme, "conf-chain-b", CARD);
    let mut c = device(&scheme, "conf-chain-c", PHONE);
    let issue = load(&mut a.link, &mut scheme, PHONE, 900);
    assert_eq!(book_confidential_load(s, &scheme, &issue), 900);
    assert_eq!(
        issue.outputs[0].value,
        Amount::ZERO,
        "the wire holds a commitment"
    );
    let p1 = pay(&mut a.link, &mut b.link, 300);
    let p2 = pay(&mut b.link, &mut c.link, 120);
    let v1 = opened(&scheme, &p1);
    let values: Vec<u64> = v1
        .package()
        .transfer
        .outputs
        .iter()
        .map(|o| o.value.0)
        .collect();
    assert_eq!(values, vec![300, 600]);
    // Unopened, the package is still refused (33) and nothing is written.
    let before = books(s);
    let e = try_settle(s, &verified_at(&scheme, &p1, scheme.epoch), "conf-unopened")
        .expect_err("an unopened confidential package");
    assert_eq!(e.code(), 33);
    assert_eq!(books(s), before);
    let out = run(s, |tx| Settlement::settle(tx, &v1, "conf-p1"));
    assert_eq!(out, outcome(1, 0));
    let v2 = opened(&scheme, &p2);
    // p2's ancestry holds p1 (its audit seal kept) and the Issue.
    assert_eq!(v2.package().ancestry.len(), 2);
    assert_eq!(
        run(s, |tx| Settlement::settle(tx, &v2, "conf-p2")),
        outcome(1, 1)
    );
    audit(s);
    assert_eq!(balance(s, ledger::OFFLINE_FLOAT), 900);
    assert_eq!(
        balance(s, ledger::OFFLINE_FLOAT),
        outstanding_opened(&scheme, &[&p1, &p2])
    );
    // a redeems its change (600): what was loaded minus what it paid.
    let r = redeem(&mut a.link, &scheme, 600);
    let vr = opened(&scheme, &r);
    assert_eq!(vr.package().transfer.outputs[0].value, Amount(600));
    assert_eq!(
        run(s, |tx| Settlement::settle(tx, &vr, "conf-redeem")),
        // Its ancestry holds p1, whose input is registered already.
        outcome(1, 1)
    );
    run(s, |tx| {
        Ledger::transfer(
            tx,
            &TransferRequest {
                idem: "unload:conf".into(),
                debit: ledger::OFFLINE_FLOAT.into(),
                credit: DCP_ACCOUNT.into(),
                amount: vr.package().transfer.outputs[0].value.0,
                code: code::UNLOAD,
            },
        )
    });
    audit(s);
    assert_eq!(balance(s, ledger::OFFLINE_FLOAT), 300);
    // What b and c still hold: every unspent output but the redeemed one
    // (the DCP's, out of the float).
    assert_eq!(
        balance(s, ledger::OFFLINE_FLOAT),
        outstanding_opened(&scheme, &[&p1, &p2, &r]) - 600
    );
}

/// A cloned confidential SE pays twice with one token: settlement finds
/// it and books the double-spent token's VALUE (opened from the audit
/// seal of the Issue the clone spent, which no honest device uploaded).
fn confidential_double_spend_books_the_opened_value(s: &Store) {
    let mut scheme = Scheme::confidential(Suite::Ed25519);
    let mut payer = se(&scheme, "conf-payer", PHONE);
    let issue = load(&mut payer, &mut scheme, PHONE, CLONED_VALUE);
    book_confidential_load(s, &scheme, &issue);
    let mut c = clones(payer, 2);
    let mut payee_a = device(&scheme, "conf-payee-a", PHONE);
    let mut payee_b = device(&scheme, "conf-payee-b", CARD);
    let pkg_a = pay(&mut c[0], &mut payee_a.link, 300);
    let pkg_b = pay(&mut c[1], &mut payee_b.link, 700);
    assert_eq!(pkg_a.transfer.inputs, pkg_b.transfer.inputs);
    let va = opened(&scheme, &pkg_a);
    assert_eq!(
        run(s, |tx| Settlement::settle(tx, &va, "conf-a")),
        outcome(1, 0)
    );
    let vb = opened(&scheme, &pkg_b);
    let out = run(s, |tx| Settlement::settle(tx, &vb, "conf-b"));
    assert_eq!(out.double_spends.len(), 1, "{out:?}");
    assert_eq!(out.double_spends[0].value, CLONED_VALUE);
    assert_eq!(out.loss_booked, CLONED_VALUE);
    assert_eq!(out.double_spends[0].offender, issue.outputs[0].owner);
    let inv = audit(s);
    assert_eq!(inv.loss, -(CLONED_VALUE as i64));
    assert_eq!(balance(s, ledger::OFFLINE_FLOAT), 2 * CLONED_VALUE as i64);
    assert_eq!(
        balance(s, ledger::OFFLINE_FLOAT),
        outstanding_opened(&scheme, &[&pkg_a, &pkg_b])
    );
    let row = &query(s, "SELECT value FROM double_spends")[0];
    assert_eq!(row.int(0).unwrap(), CLONED_VALUE as i64);
}

/// C7: a hostile payer's audit seal (a wrong opening for its change), one
/// lifted from another record, or none at all: the package is refused
/// before settlement writes anything.
fn confidential_bad_audit_seals_are_refused(s: &Store) {
    use tally_core::confidential::{ConfidentialError, Opening, SealedOpenings};
    let mut scheme = Scheme::confidential(Suite::Ed25519);
    let mut a = device(&scheme, "conf-bad-a", PHONE);
    let mut b = device(&scheme, "conf-bad-b", PHONE);
    let issue = load(&mut a.link, &mut scheme, PHONE, 500);
    book_confidential_load(s, &scheme, &issue);
    let pkg = pay(&mut a.link, &mut b.link, 200);
    let before = books(s);

    // Wrong opening: the change claimed as 1 instead of 300.
    let mut wrong = pkg.clone();
    let commitments = conf(&mut wrong).commitments.clone();
    let fake = [
        Opening::random(Amount(200), &mut TestEntropy::new(b"fake-0")),
        Opening::random(Amount(1), &mut TestEntropy::new(b"fake-1")),
    ];
    conf(&mut wrong).audit = Some(
        SealedOpenings::seal_unchecked(
            &Scheme::audit_key(),
            &wrong.transfer.context(),
            &commitments,
            &fake,
            &mut TestEntropy::new(b"hostile"),
        )
        .unwrap(),
    );
    resign(&mut wrong, &a);
    let f = verified_at(&scheme, &wrong, scheme.epoch)
        .open_audit(&audit_key(), range_bits(&scheme))
        .expect_err("a wrong opening");
    assert_eq!(
        (f.record, f.reason),
        (wrong.transfer.id(), ConfidentialError::WrongOpening)
    );
    // Lifted: the Issue's seal in the transfer.
    let mut lifted = pkg.clone();
    conf(&mut lifted).audit = pkg.ancestry[0].audit_seal().cloned();
    // (one opening for two outputs: the verifier's C8 already refuses it)
    assert_eq!(
        verify_package_for_settlement(
            lifted.clone(),
            &scheme.trust(),
            scheme.params(SETTLEMENT_RECORDS_MAX),
            &mut NoCache
        )
        .err(),
        Some(VerifyError::AuditSealInvalid)
    );
    // Lifted from another transfer of the same shape.
    let mut c = device(&scheme, "conf-bad-c", PHONE);
    let other = pay(&mut b.link, &mut c.link, 50);
    conf(&mut lifted).audit = other.transfer.confidential.as_ref().unwrap().audit.clone();
    resign(&mut lifted, &a);
    let f = verified_at(&scheme, &lifted, scheme.epoch)
        .open_audit(&audit_key(), range_bits(&scheme))
        .expect_err("a lifted seal");
    assert_eq!(f.reason, ConfidentialError::OpeningUnreadable);
    // Missing.
    let mut missing = pkg.clone();
    conf(&mut missing).audit = None;
    let missing = Package::from_cbor(&missing.to_cbor()).unwrap();
    assert_eq!(
        verify_package_for_settlement(
            missing,
            &scheme.trust(),
            scheme.params(SETTLEMENT_RECORDS_MAX),
            &mut NoCache
        )
        .err()
        .map(|e| e.code()),
        Some(907)
    );
    let e = SettlementError::AuditOpeningInvalid(wrong.transfer.id());
    assert_eq!(e.code(), 34);
    assert_eq!(books(s), before, "a refused package wrote");
    // The honest package still settles.
    let v = opened(&scheme, &pkg);
    assert_eq!(
        run(s, |tx| Settlement::settle(tx, &v, "conf-ok")),
        outcome(1, 0)
    );
    audit(s);
}

fn conf(p: &mut Package) -> &mut tally_core::record::ConfidentialTransfer {
    p.transfer.confidential.as_mut().expect("confidential")
}

/// A hostile payer signs what it altered (the signatures cover the audit
/// seal, decision 0034).
fn resign(p: &mut Package, payer: &TestDevice) {
    tally_wallet::testkit::sign_as_payer(p, payer.applet());
}

fn reused_settlement_key_for_another_loss_is_refused(s: &Store) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let (mut c, _) = cloned_payer(s, &mut scheme, 3);
    let mut pkgs = Vec::new();
    for (i, clone) in c.iter_mut().enumerate() {
        let mut payee = device(&scheme, &format!("payee-{i}"), PHONE);
        pkgs.push(pay(clone, &mut payee.link, 100 * (i as u64 + 1)));
    }
    settle(s, &scheme, &pkgs[0], "sync-1");
    assert_eq!(
        settle(s, &scheme, &pkgs[1], "sync-2").loss_booked,
        CLONED_VALUE
    );
    // Another double spend of the same value under the key of the last
    // settlement: its loss booking would look like a replay of that one.
    let before = books(s);
    let v = verified_at(&scheme, &pkgs[2], scheme.epoch);
    let e = s
        .transact(|tx| Settlement::settle(tx, &v, "sync-2"))
        .expect_err("key reused");
    assert_eq!(
        e,
        SettlementError::Ledger(LedgerError::IdempotencyKeyReused("sync-2:loss".into()))
    );
    assert_eq!(e.code(), 12);
    assert_eq!(books(s), before, "the refused settlement left traces");
    // Under its own key the loss is booked.
    let out = settle(s, &scheme, &pkgs[2], "sync-3");
    assert_eq!(out.loss_booked, CLONED_VALUE);
    assert_eq!(balance(s, ledger::LOSS), -2 * CLONED_VALUE as i64);
    let refs: Vec<&Package> = pkgs.iter().collect();
    assert_eq!(balance(s, ledger::OFFLINE_FLOAT), outstanding(&refs));
}

fn consume_stranded_marks_an_output_once(s: &Store) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let mut a = device(&scheme, "a", PHONE);
    let mut b = device(&scheme, "b", CARD);
    let issue = load(&mut a.link, &mut scheme, PHONE, 500);
    book_load(s, &issue);
    let pkg = pay(&mut a.link, &mut b.link, 200);
    settle(s, &scheme, &pkg, "settle");
    let t = pkg.transfer.id();
    let paid = OutPoint {
        record: t,
        index: 0,
    };
    let change = OutPoint {
        record: t,
        index: 1,
    };
    let recovery = Hash32([0x5A; 32]);
    let ledger_before = ledger_snapshot(s);
    let spent = count(s, "spent");

    assert!(run(s, |tx| Settlement::consume_stranded(
        tx, &paid, &recovery
    )));
    assert_eq!(is_spent(s, &paid), Some(recovery));
    assert_eq!(count(s, "spent"), spent + 1);
    // A second time, by the same or another record: refused, unchanged.
    for by in [recovery, Hash32([0xA5; 32])] {
        assert!(!run(s, |tx| Settlement::consume_stranded(tx, &paid, &by)));
        assert_eq!(is_spent(s, &paid), Some(recovery));
    }
    // An output settlement already consumed is not taken over either.
    let token = pkg.transfer.inputs[0];
    assert!(!run(s, |tx| Settlement::consume_stranded(
        tx, &token, &recovery
    )));
    assert_eq!(is_spent(s, &token), Some(t));
    assert_eq!(is_spent(s, &change), None);
    assert_eq!(count(s, "spent"), spent + 1);
    assert_eq!(ledger_snapshot(s), ledger_before, "no money moves");
}

// ---- time-bound rules: the payee's, not settlement's -----------------------

/// One hop, its Issue booked; returns the package and what the payee
/// asked for.
fn one_hop(s: &Store, scheme: &mut Scheme) -> (Package, Expected) {
    let mut a = device(scheme, "a", PHONE);
    let mut b = device(scheme, "b", CARD);
    let issue = load(&mut a.link, scheme, PHONE, 500);
    book_load(s, &issue);
    let pkg = pay(&mut a.link, &mut b.link, 200);
    let expected = Expected {
        payee: pkg.transfer.outputs[0].owner,
        amount: pkg.transfer.outputs[0].value,
        nonce: pkg.transfer.nonce,
        stream: None,
    };
    (pkg, expected)
}

fn payee_verdict(
    scheme: &Scheme,
    pkg: &Package,
    exp: &Expected,
    epoch: u32,
) -> Result<(), VerifyError> {
    let params = VerifyParams {
        epoch,
        history_records_max: SETTLEMENT_RECORDS_MAX,
        signature_batch_max: usize::MAX,
    };
    verify_package(pkg.clone(), exp, &scheme.trust(), params, &mut NoCache).map(|_| ())
}

fn expired_tokens_still_settle_but_a_payee_refuses_them(s: &Store) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let (pkg, exp) = one_hop(s, &mut scheme);
    let issue_expiry = match &pkg.ancestry[0] {
        Record::Issue(i) => i.expiry_epoch,
        Record::Transfer(_) => panic!("root first"),
    };
    let cert_expiry = pkg.certificates[0].expiry_epoch;
    assert!(cert_expiry < issue_expiry);
    assert_eq!(payee_verdict(&scheme, &pkg, &exp, scheme.epoch), Ok(()));
    // Past the payer's certificate, then past the tokens themselves.
    assert_eq!(
        payee_verdict(&scheme, &pkg, &exp, cert_expiry + 1),
        Err(VerifyError::CertificateExpired)
    );
    let late = issue_expiry + 1;
    assert_eq!(
        payee_verdict(&scheme, &pkg, &exp, late),
        Err(VerifyError::TokenExpired)
    );
    let v = verified_at(&scheme, &pkg, late);
    assert_eq!(
        run(s, |tx| Settlement::settle(tx, &v, "late")),
        outcome(1, 0)
    );
    assert_eq!(
        is_spent(s, &pkg.transfer.inputs[0]),
        Some(pkg.transfer.id())
    );
    audit(s);
}

fn revoked_payer_key_still_settles_but_a_payee_refuses_it(s: &Store) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let (pkg, exp) = one_hop(s, &mut scheme);
    let payer_key = match &pkg.ancestry[0] {
        Record::Issue(i) => i.outputs[0].owner,
        Record::Transfer(_) => panic!("root first"),
    };
    assert_eq!(pkg.certificates[0].key, payer_key);
    assert_eq!(payee_verdict(&scheme, &pkg, &exp, scheme.epoch), Ok(()));
    scheme.revoke(&[payer_key.id()]);
    assert_eq!(
        payee_verdict(&scheme, &pkg, &exp, scheme.epoch),
        Err(VerifyError::CertificateRevoked)
    );
    assert_eq!(settle(s, &scheme, &pkg, "after-revocation"), outcome(1, 0));
    assert_eq!(
        is_spent(s, &pkg.transfer.inputs[0]),
        Some(pkg.transfer.id())
    );
}

on_both_backends!(
    renewal_registers_every_input_of_every_record_in_its_ancestry,
    settling_the_same_package_again_is_a_no_op,
    settled_ancestors_count_as_already,
    cloned_se_double_spend_is_found_with_both_signed_records,
    every_further_copy_is_one_more_double_spend,
    double_spend_in_the_middle_of_an_ancestry_is_found,
    unknown_issue_is_refused_with_code_30_and_changes_nothing,
    reused_settlement_key_for_another_loss_is_refused,
    confidential_records_are_refused_without_openings,
    confidential_chain_settles_from_audit_openings,
    confidential_double_spend_books_the_opened_value,
    confidential_bad_audit_seals_are_refused,
    consume_stranded_marks_an_output_once,
    expired_tokens_still_settle_but_a_payee_refuses_them,
    revoked_payer_key_still_settles_but_a_payee_refuses_it,
);
