//! Fraud and failure through the real binaries.
//!
//! Cloned SE: a device's three state files are copied and both copies
//! spend the same token offline to two payees; both payments verify
//! offline (finality), and settlement of the second renewal finds the
//! double spend, lists it (GET /v1/double-spends) and books the loss.
//!
//! Cloned SE paying one payee twice: the payee's SE refuses the second
//! copy offline (decision 0023) and renews the first.
//!
//! Interrupted payment: the payer pays (package written) but the payee
//! never receives it; whichever of the two syncs first, the payee is
//! credited exactly once and a late delivery of the lost package is
//! refused.
//!
//! SQLite, and PostgreSQL when TALLY_TEST_DATABASE_URL is set.

mod common;

use std::path::Path;

use common::{CliDevice, Db, Node, operator, pay_via_files, run, temp_dir};
use tally_core::codec::Cbor;
use tally_core::{Package, Record};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The `input` lines of `tally package inspect`.
fn inputs(pkg: &Path) -> Vec<String> {
    run(&["package", "inspect", &s(pkg)])
        .ok()
        .lines()
        .filter(|l| l.trim_start().starts_with("input "))
        .map(str::to_string)
        .collect()
}

fn cloned_se(db: Db, test: &str) {
    let dir = temp_dir(test);
    let d = dir.path();
    let node = Node::start(&db.url(), d, "node");
    let url = node.url();
    let op = node.operator();
    operator(&url, &["mint", "1000000", "--idempotency-key", "m"]);
    operator(
        &url,
        &["deposit", "mallory", "10000", "--idempotency-key", "d"],
    );

    let mallory = CliDevice::init(d, "mallory", &url, "phone", "mallory");
    mallory.ok(&["load", "1000"]);
    let clone = mallory.clone_to(d, "mallory-clone");
    assert_eq!(clone.balance(), mallory.balance());
    let payee1 = CliDevice::init(d, "payee1", &url, "phone", "payee1");
    let payee2 = CliDevice::init(d, "payee2", &url, "card", "payee2");

    let (r1, pkg1) = pay_via_files(d, "honest", &mallory, &payee1, 1_000);
    let (r2, pkg2) = pay_via_files(d, "cloned", &clone, &payee2, 1_000);
    // Two different transfers of one and the same token…
    let spent = inputs(&pkg1);
    assert_eq!(spent.len(), 1, "{spent:?}");
    assert_eq!(spent, inputs(&pkg2));
    assert_ne!(std::fs::read(&pkg1).ok(), std::fs::read(&pkg2).ok());
    // …and each is valid offline: the payees cannot tell.
    let trust = d.join("trust.cbor");
    operator(&url, &["trust", &s(&trust)]);
    for (pkg, req) in [(&pkg1, &r1), (&pkg2, &r2)] {
        run(&[
            "package",
            "verify",
            &s(pkg),
            "--trust",
            &s(&trust),
            "--request",
            &s(req),
        ])
        .ok();
    }
    assert_eq!(payee1.balance().balance, 1_000);
    assert_eq!(payee2.balance().balance, 1_000);

    // The first settlement is clean.
    assert_eq!(payee1.ok(&["renew"]).trim(), "renewed 1000");
    assert!(op.double_spends().expect("double spends").is_empty());
    assert_eq!(op.invariant().expect("invariant").loss, 0);
    // The second finds the double spend.
    assert_eq!(payee2.ok(&["renew"]).trim(), "renewed 1000");
    let ds = op.double_spends().expect("double spends");
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0].value, 1_000);
    let pkg = Package::from_cbor(&std::fs::read(&pkg1).expect("package")).expect("decodes");
    let input = pkg.transfer.inputs[0];
    assert_eq!(ds[0].record, input.record.to_string());
    assert_eq!(ds[0].index, input.index);
    let owner = pkg
        .ancestry
        .iter()
        .find(|r| r.id() == input.record)
        .map(|r: &Record| r.outputs()[usize::from(input.index)].owner)
        .expect("the spent token's record is in the ancestry");
    assert_eq!(
        ds[0].offender_key,
        hex::encode(owner.to_cbor()),
        "the offender is the pseudonym that owned the token"
    );

    // The loss is booked; both honest payees keep their value.
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    assert_eq!(inv.loss, -1_000, "{inv}");
    let held: u64 = [&mallory, &clone, &payee1, &payee2]
        .iter()
        .map(|dev| dev.balance().balance)
        .sum();
    assert_eq!(held, 2_000);
    assert_eq!(inv.offline_float, held as i64, "{inv}");
    // mint, load, loss cover (the deposit is the DCP's own book).
    assert_eq!(inv.journal_entries, 3, "{inv}");

    // Settling again changes nothing: no second row, no second booking.
    for dev in [&payee1, &payee2, &mallory] {
        dev.ok(&["sync"]);
    }
    payee2.ok(&["renew"]);
    assert_eq!(op.double_spends().expect("double spends").len(), 1);
    assert_eq!(op.invariant().expect("invariant"), inv);
    common::assert_schema_used(&db);
}

#[test]
fn cloned_se_sqlite() {
    let dir = temp_dir("db");
    cloned_se(Db::sqlite(dir.path()), "cloned_sqlite");
}

#[test]
fn cloned_se_postgres() {
    if let Some(db) = Db::postgres("e2e_fraud::cloned_se_postgres") {
        cloned_se(db, "cloned_postgres");
    }
}

/// A sync's report, e.g. "synced to epoch 1: uploaded 1 packages,
/// reported 0 open requests, recovered 0, double spends found 0".
/// A clone paying the same payee twice (decision 0023): the payee's SE
/// refuses the second copy offline (code 2034, balance unchanged), and the
/// first renews at the DCP with no double spend and no loss.
#[test]
fn a_payee_refuses_a_clones_second_copy_sqlite() {
    let dir = temp_dir("clone_same_payee");
    let d = dir.path();
    let db = Db::sqlite(d);
    let node = Node::start(&db.url(), d, "node");
    let url = node.url();
    let op = node.operator();
    operator(&url, &["mint", "1000000", "--idempotency-key", "m"]);
    operator(
        &url,
        &["deposit", "mallory", "10000", "--idempotency-key", "d"],
    );
    let mallory = CliDevice::init(d, "mallory", &url, "phone", "mallory");
    mallory.ok(&["load", "1000"]);
    let clone = mallory.clone_to(d, "mallory-clone");
    let payee = CliDevice::init(d, "payee", &url, "phone", "payee");

    let (_, pkg1) = pay_via_files(d, "honest", &mallory, &payee, 400);
    let (req, pkg2, rcpt) = (
        d.join("cloned.request"),
        d.join("cloned.package"),
        d.join("cloned.receipt"),
    );
    payee.ok(&["request", "--amount", "400", "--out", &s(&req)]);
    clone.ok(&["pay", "--request", &s(&req), "--out", &s(&pkg2)]);
    assert_eq!(inputs(&pkg1), inputs(&pkg2), "one token, twice");
    let err = payee
        .run(&["receive", "--package", &s(&pkg2), "--out", &s(&rcpt)])
        .fails_with(1);
    assert!(err.contains("2034"), "{err}");
    assert!(!rcpt.exists());
    assert_eq!(payee.balance().balance, 400);

    assert_eq!(payee.ok(&["renew"]).trim(), "renewed 400");
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    assert_eq!(inv.loss, 0, "{inv}");
    assert!(op.double_spends().expect("double spends").is_empty());
}

fn sync(dev: &CliDevice) -> (u64, u64, u64) {
    let out = dev.ok(&["sync"]);
    let num = |key: &str| -> u64 {
        out.split(key)
            .nth(1)
            .and_then(|r| r.split([',', ' ']).find(|w| !w.is_empty()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key:?} in {out:?}"))
    };
    (num("uploaded "), num("reported "), num("recovered "))
}

fn interrupted(db: Db, test: &str, payer_first: bool) {
    let dir = temp_dir(test);
    let d = dir.path();
    let node = Node::start(&db.url(), d, "node");
    let url = node.url();
    let op = node.operator();
    operator(&url, &["mint", "1000000", "--idempotency-key", "m"]);
    operator(
        &url,
        &["deposit", "payer", "10000", "--idempotency-key", "d"],
    );
    let payer = CliDevice::init(d, "payer", &url, "phone", "payer");
    let payee = CliDevice::init(d, "payee", &url, "card", "payee");
    payer.ok(&["load", "1000"]);

    // The payer commits and writes the package; it never reaches the payee.
    let req = d.join("lost.request");
    let lost = d.join("lost.package");
    payee.ok(&["request", "--amount", "300", "--out", &s(&req)]);
    payer.ok(&["pay", "--request", &s(&req), "--out", &s(&lost)]);
    let b = payer.balance();
    assert_eq!((b.balance, b.unacked), (700, 1));
    // Paying the same request again resends the identical package and
    // spends nothing more.
    let again = d.join("again.package");
    payer.ok(&["pay", "--request", &s(&req), "--out", &s(&again)]);
    assert_eq!(std::fs::read(&again).ok(), std::fs::read(&lost).ok());
    assert_eq!(payer.balance(), b);
    assert_eq!(payee.balance().balance, 0);

    if payer_first {
        assert_eq!(
            sync(&payer).0,
            1,
            "the payer uploads its unacknowledged package"
        );
        let (_, reported, recovered) = sync(&payee);
        assert_eq!((reported, recovered), (1, 300));
    } else {
        let (_, reported, recovered) = sync(&payee);
        assert_eq!((reported, recovered), (1, 0), "nothing to pair with yet");
        assert_eq!(sync(&payer).0, 1);
        assert_eq!(sync(&payee).2, 300);
    }
    assert_eq!(payee.balance().balance, 300);
    assert_eq!(payer.balance().balance, 700);
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    assert_eq!(inv.offline_float, 1_000, "{inv}");

    // Exactly once: more syncs, in both orders, change nothing.
    for round in 0..3 {
        let (first, second) = if round % 2 == 0 {
            (&payer, &payee)
        } else {
            (&payee, &payer)
        };
        assert_eq!(sync(first), (0, 0, 0), "{}", first.name);
        assert_eq!(sync(second), (0, 0, 0), "{}", second.name);
    }
    assert_eq!(payee.balance().balance, 300);
    assert_eq!(payer.balance().balance, 700);
    assert_eq!(op.invariant().expect("invariant"), inv);

    // The lost package arriving late is refused: its request is closed and
    // the value was already recovered.
    let rcpt = d.join("late.receipt");
    payee
        .run(&["receive", "--package", &s(&lost), "--out", &s(&rcpt)])
        .fails_with(1);
    assert_eq!(payee.balance().balance, 300);

    // The recovered token is ordinary money: it renews and unloads.
    assert_eq!(payee.ok(&["renew"]).trim(), "renewed 300");
    assert_eq!(
        payee.ok(&["unload", "300"]).trim(),
        "unloaded 300; account balance 300"
    );
    payer.ok(&["renew"]);
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    assert_eq!(inv.offline_float, 700, "{inv}");
    assert_eq!(inv.loss, 0, "{inv}");
    assert!(op.double_spends().expect("double spends").is_empty());
    common::assert_schema_used(&db);
}

#[test]
fn interrupted_payment_payer_syncs_first_sqlite() {
    let dir = temp_dir("db");
    interrupted(Db::sqlite(dir.path()), "interrupted_payer_first", true);
}

#[test]
fn interrupted_payment_payee_syncs_first_sqlite() {
    let dir = temp_dir("db");
    interrupted(Db::sqlite(dir.path()), "interrupted_payee_first", false);
}

#[test]
fn interrupted_payment_payer_syncs_first_postgres() {
    if let Some(db) = Db::postgres("e2e_fraud::interrupted_payment_payer_syncs_first_postgres") {
        interrupted(db, "interrupted_payer_first_pg", true);
    }
}

#[test]
fn interrupted_payment_payee_syncs_first_postgres() {
    if let Some(db) = Db::postgres("e2e_fraud::interrupted_payment_payee_syncs_first_postgres") {
        interrupted(db, "interrupted_payee_first_pg", false);
    }
}
