//! The whole story through the real binaries: a `tally node`, operator
//! calls, four file-backed devices (card, two phones, IoT) paying each
//! other offline through request/package/receipt files with every payee
//! re-spending what it received, `tally package inspect|verify` (valid,
//! tampered, wrong request), renewal, unload, and the published ledger
//! invariant against the devices' balances. SQLite, and PostgreSQL when
//! TALLY_TEST_DATABASE_URL is set.

mod common;

use std::path::Path;

use common::{CliDevice, Db, Node, SeBalance, operator, pay_via_files, run, temp_dir};
use tally_core::Package;
use tally_core::codec::Cbor;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `tally package verify PKG --trust T --request R`.
fn verify(pkg: &Path, trust: &Path, request: &Path) -> common::Run {
    run(&[
        "package",
        "verify",
        &s(pkg),
        "--trust",
        &s(trust),
        "--request",
        &s(request),
    ])
}

/// Asserts `stderr` names a numbered rule, e.g. "V8 (801)".
#[track_caller]
fn assert_names_rule(stderr: &str) {
    let names_rule = stderr.split('V').skip(1).any(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !digits.is_empty() && rest[digits.len()..].starts_with(" (")
    });
    assert!(names_rule, "no rule (V<n> (<code>)) in stderr: {stderr:?}");
}

fn cli_story(db: Db, test: &str) {
    let dir = temp_dir(test);
    let d = dir.path();
    let node = Node::start(&db.url(), d, "node");
    let url = node.url();

    // Central bank mints (the same key again is a no-op), the DCP credits
    // four accounts.
    assert_eq!(
        operator(&url, &["mint", "1000000", "--idempotency-key", "m1"]).trim(),
        "minted 1000000"
    );
    operator(&url, &["mint", "1000000", "--idempotency-key", "m1"]);
    for (acct, amount) in [("alice", 20_000), ("bob", 10_000), ("carol", 10_000)] {
        let out = operator(
            &url,
            &[
                "deposit",
                acct,
                &amount.to_string(),
                "--idempotency-key",
                &format!("dep-{acct}"),
            ],
        );
        assert_eq!(out.trim(), format!("{acct}: balance {amount}"));
    }
    operator(
        &url,
        &["deposit", "meter", "5000", "--idempotency-key", "dep-meter"],
    );
    let op = node.operator();
    let inv = op.invariant().expect("invariant");
    assert_eq!((inv.minted, inv.accounts), (1_000_000, 1_000_000), "{inv}");

    let alice = CliDevice::init(d, "alice", &url, "card", "alice");
    let bob = CliDevice::init(d, "bob", &url, "phone", "bob");
    let carol = CliDevice::init(d, "carol", &url, "phone", "carol");
    let meter = CliDevice::init(d, "meter", &url, "iot", "meter");
    // Re-registration is idempotent.
    assert_eq!(alice.ok(&["register"]).trim(), "registered and synced");
    let devices = op.devices().expect("devices");
    let mut classes: Vec<&str> = devices.iter().map(|v| v.class_name.as_str()).collect();
    classes.sort_unstable();
    assert_eq!(classes, ["card", "iot", "phone", "phone"]);

    assert_eq!(alice.ok(&["load", "10000"]).trim(), "loaded 10000");
    assert_eq!(bob.ok(&["load", "2000"]).trim(), "loaded 2000");
    assert_eq!(
        alice.ok(&["account"]).trim(),
        "account balance 10000",
        "the load left the account"
    );
    // More than the account holds: refused, nothing changes.
    let err = carol.run(&["load", "10001"]).fails_with(1);
    assert!(err.contains("back office refused"), "{err}");
    assert_eq!(carol.balance().balance, 0);

    // The offline chain: alice → bob → carol → meter → alice. Bob must
    // merge his load with what alice paid; carol and meter only hold what
    // they received.
    let (r1, p1) = pay_via_files(d, "p1", &alice, &bob, 3_000);
    let (r2, p2) = pay_via_files(d, "p2", &bob, &carol, 4_000);
    let (r3, p3) = pay_via_files(d, "p3", &carol, &meter, 2_500);
    let (r4, p4) = pay_via_files(d, "p4", &meter, &alice, 1_000);
    let expect = |dev: &CliDevice, balance: u64, tokens: u64| {
        assert_eq!(
            dev.balance(),
            SeBalance {
                balance,
                tokens,
                unacked: 0
            },
            "{}",
            dev.name
        );
    };
    expect(&alice, 8_000, 2);
    expect(&bob, 1_000, 1);
    expect(&carol, 1_500, 1);
    expect(&meter, 1_500, 1);
    // Every payment was acknowledged, so none is left in the SE's log
    // (decision 0018); the tokens are listed.
    let history = bob.ok(&["history"]);
    assert!(!history.contains("payment"), "{history}");
    assert!(history.contains("token "), "{history}");

    // inspect: the last hop carries the whole chain as its ancestry.
    let text = run(&["package", "inspect", &s(&p4)]).ok();
    let pkg = Package::from_cbor(&std::fs::read(&p4).expect("package")).expect("decodes");
    assert!(
        text.contains(&format!("transfer {}", pkg.transfer.id())),
        "{text}"
    );
    assert!(text.contains("output 0: 1000 to"), "{text}");
    assert!(
        text.contains("ancestry: 5 records"),
        "issue(alice), alice→bob, issue(bob), bob→carol, carol→meter:\n{text}"
    );
    assert_eq!(text.matches("  issue ").count(), 2, "{text}");

    // verify: every package is valid against its own request.
    let trust = d.join("trust.cbor");
    let out = operator(&url, &["trust", &s(&trust)]);
    assert!(out.contains("trust bundle written"), "{out}");
    for (pkg, req, amount) in [
        (&p1, &r1, 3_000),
        (&p2, &r2, 4_000),
        (&p3, &r3, 2_500),
        (&p4, &r4, 1_000),
    ] {
        let out = verify(pkg, &trust, req).ok();
        assert!(out.starts_with(&format!("valid: pays {amount} ")), "{out}");
    }
    // Against another payee's request: V11.
    let err = verify(&p4, &trust, &r3).fails_with(3);
    assert!(err.contains("V11"), "{err}");
    // A flipped bit in the final transfer's signature: V8.
    let bytes = std::fs::read(&p4).expect("package");
    let sig = pkg.transfer.signatures[0].bytes().to_vec();
    let at = bytes
        .windows(sig.len())
        .position(|w| w == sig.as_slice())
        .expect("signature bytes are in the package");
    let tampered = d.join("tampered.package");
    let mut t = bytes.clone();
    t[at + 7] ^= 0x01;
    std::fs::write(&tampered, &t).expect("write");
    let err = verify(&tampered, &trust, &r4).fails_with(3);
    assert!(err.contains("V8 (801)"), "{err}");
    // Any flipped bit is caught (exit 3 and a rule), never accepted or a crash.
    let stride = (bytes.len() / 40).max(1);
    for at in (0..bytes.len()).step_by(stride) {
        let mut t = bytes.clone();
        t[at] ^= 0x10;
        std::fs::write(&tampered, &t).expect("write");
        let err = verify(&tampered, &trust, &r4).fails_with(3);
        assert_names_rule(&err);
    }

    // A transfer with no outputs decodes but breaks V4; checked without a
    // request (the package's own first output is what it claims to pay),
    // it must be refused with the rule, not crash.
    let mut empty = pkg.clone();
    empty.transfer.outputs.clear();
    std::fs::write(&tampered, empty.to_cbor()).expect("write");
    let err = run(&["package", "verify", &s(&tampered), "--trust", &s(&trust)]).fails_with(3);
    assert!(err.contains("V4 (402)"), "{err}");

    // Renewal: same value, one fresh token; the offline float is unchanged.
    let before = op.invariant().expect("invariant");
    assert_eq!(meter.ok(&["renew"]).trim(), "renewed 1500");
    assert_eq!(alice.ok(&["renew"]).trim(), "renewed 8000");
    expect(&meter, 1_500, 1);
    expect(&alice, 8_000, 1);
    let after = op.invariant().expect("invariant");
    assert_eq!(after.offline_float, before.offline_float);
    assert_eq!(after.journal_entries, before.journal_entries);
    // The renewed token pays offline again.
    pay_via_files(d, "p5", &alice, &carol, 500);

    // Unload: value back to the accounts.
    assert_eq!(
        bob.ok(&["unload", "1000"]).trim(),
        "unloaded 1000; account balance 9000"
    );
    assert_eq!(
        alice.ok(&["unload", "2500"]).trim(),
        "unloaded 2500; account balance 12500"
    );
    let err = carol.run(&["unload", "999999"]).fails_with(1);
    assert!(!err.is_empty());
    expect(&bob, 0, 0);
    expect(&alice, 5_000, 1);
    assert_eq!(op.balance("bob").expect("balance"), 9_000);
    assert_eq!(op.balance("alice").expect("balance"), 12_500);

    // Everything acknowledged: syncs upload nothing and recover nothing.
    for dev in [&alice, &bob, &carol, &meter] {
        let out = dev.ok(&["sync"]);
        assert!(
            out.contains("uploaded 0 packages") && out.contains("recovered 0"),
            "{}: {out}",
            dev.name
        );
    }

    // The published invariant against what the devices hold.
    let held: u64 = [&alice, &bob, &carol, &meter]
        .iter()
        .map(|dev| dev.balance().balance)
        .sum();
    assert_eq!(held, 12_000 - 3_500);
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    assert_eq!(inv.offline_float, held as i64, "{inv}");
    assert_eq!(inv.loss, 0, "{inv}");
    assert_eq!(inv.accounts + inv.offline_float, 1_000_000, "{inv}");
    // mint, 2 loads, 2 unloads (deposits are the DCP's own book).
    assert_eq!(inv.journal_entries, 5, "{inv}");
    assert!(op.double_spends().expect("double spends").is_empty());
    let text = operator(&url, &["invariant"]);
    assert!(text.starts_with("holds: "), "{text}");
    common::assert_schema_used(&db);
}

#[test]
fn cli_story_sqlite() {
    let dir = temp_dir("db");
    cli_story(Db::sqlite(dir.path()), "cli_sqlite");
}

#[test]
fn cli_story_postgres() {
    if let Some(db) = Db::postgres("e2e_cli::cli_story_postgres") {
        cli_story(db, "cli_postgres");
    }
}

/// The README's main command (`tally demo`) runs to the end: the whole
/// story, the containment loop, the indicators, the invariant.
#[test]
fn demo_runs_to_the_end() {
    let out = common::run(&["demo"]).ok();
    for step in [
        "8. Cloned SE",
        "9. The MDS",
        "10. Supervisors",
        "11. The directory revokes",
        "12. ",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    assert!(
        out.contains("mallory-phone tries to pay it 100 XTS offline: refused"),
        "{out}"
    );
    assert!(
        out.contains("mallory-phone can no longer sync: true"),
        "{out}"
    );
    assert!(out.contains("(equals the offline float: true)"), "{out}");
    // Two DCPs: a customer of DCP 2 paid offline from DCP 1, an interbank
    // payment, each DCP's book equal to its settlement account.
    for dcp in ["DCP 1", "DCP 2"] {
        let line = out
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{dcp}: customers' accounts"))
            })
            .unwrap_or_else(|| panic!("no reconciliation of {dcp} in:\n{out}"));
        assert!(line.ends_with("(reconciled)"), "{line}");
    }
    assert!(out.contains("alice pays dave@2 300 XTS online"), "{out}");
    // A payment stream, closed by both sides; the charger's claim renews
    // with its other tokens at step 7 (settlement walks its chain).
    assert!(
        out.contains("the charger's claim 80 XTS, the meter's refund 20 XTS"),
        "{out}"
    );
    assert!(out.contains("losses from fraud"), "{out}");
    // The confidential scheme: the payee saw commitments, settlement every
    // amount.
    assert!(
        out.contains("0 of the amounts 1000 / 700 / 300 / 180 in the clear"),
        "{out}"
    );
    assert!(out.contains("3 payments worth 600"), "{out}");
    assert!(
        out.contains("the range proof made by his phone's processor and checked by his SE"),
        "{out}"
    );
    // A whole token paid without a range proof (decision 0031).
    assert!(
        out.contains("frank then pays grace his remaining 180 whole: one output, no range proof"),
        "{out}"
    );
}

/// Hybrid online/offline (issue 13, item 3): a connected IoT device pays
/// with the same command and the same SE authorisation, and its route —
/// the device's own policy — decides when the payment reaches the ledger.
/// Online, each payment is settled before `pay` returns; a cloned meter
/// cannot settle its second spend of the same token (the DCP has seen its
/// request counter), and the payee's sync finds the double spend. Auto falls back to offline when the DCP does
/// not answer (settled later, as any offline payment); online refuses to
/// pay without its DCP and changes nothing.
#[test]
fn a_connected_device_settles_each_payment_at_once_and_falls_back_offline() {
    let dir = temp_dir("route");
    let d = dir.path();
    let db = Db::sqlite(d);
    let mut node = Node::start(&db.url(), d, "node");
    let url = node.url();
    operator(&url, &["mint", "100000", "--idempotency-key", "m1"]);
    for acct in ["meter", "charger"] {
        operator(
            &url,
            &[
                "deposit",
                acct,
                "1000",
                "--idempotency-key",
                &format!("dep-{acct}"),
            ],
        );
    }
    operator(
        &url,
        &["deposit", "kiosk", "1000", "--idempotency-key", "dep-kiosk"],
    );
    let meter = CliDevice::init(d, "meter", &url, "iot", "meter");
    let charger = CliDevice::init(d, "charger", &url, "iot", "charger");
    let kiosk = CliDevice::init(d, "kiosk", &url, "iot", "kiosk");
    assert_eq!(meter.ok(&["route", "online"]).trim(), "route online");
    assert_eq!(meter.ok(&["load", "100"]).trim(), "loaded 100");
    let clone = meter.clone_to(d, "meter-clone");

    let pay_to = |payer: &CliDevice, payee: &CliDevice, tag: &str, amount: u64| -> String {
        let req = d.join(format!("{tag}.request"));
        let pkg = d.join(format!("{tag}.package"));
        let rcpt = d.join(format!("{tag}.receipt"));
        payee.ok(&[
            "request",
            "--amount",
            &amount.to_string(),
            "--out",
            &s(&req),
        ]);
        let out = payer.ok(&["pay", "--request", &s(&req), "--out", &s(&pkg)]);
        assert!(out.starts_with(&format!("paid {amount}:")), "{out}");
        payee.ok(&["receive", "--package", &s(&pkg), "--out", &s(&rcpt)]);
        // On the online route the payment left the SE's log at its sync:
        // the receipt is still answered as done.
        payer.ok(&["ack", "--receipt", &s(&rcpt)]);
        out
    };
    let pay = |payer: &CliDevice, tag: &str, amount: u64| pay_to(payer, &charger, tag, amount);
    // Online: settled before the command returns.
    let out = pay(&meter, "t1", 1);
    assert!(
        out.contains("settled at the ledger online (uploaded 1 packages, double spends found 0)"),
        "{out}"
    );
    // The clone spends the same token (it holds the state before t1). Its
    // settlement is refused: the DCP has seen its request counter (the
    // original's). The payee's renewal settles what it received: the
    // double spend is found then, against the registered t1.
    let out = pay_to(&clone, &kiosk, "t2", 1);
    assert!(
        out.contains("not settled online yet") && out.contains("code 53"),
        "{out}"
    );
    assert_eq!(kiosk.ok(&["renew"]).trim(), "renewed 1");
    let op = node.operator();
    assert_eq!(op.double_spends().expect("double spends").len(), 1);

    // Auto without a DCP: paid offline, settled later.
    assert_eq!(meter.ok(&["route", "auto"]).trim(), "route auto");
    node.kill();
    let out = pay(&meter, "t3", 2);
    assert!(!out.contains("settled"), "{out}");
    // Online without a DCP: refused before the SE pays; nothing changes.
    assert_eq!(meter.ok(&["route", "online"]).trim(), "route online");
    let before = meter.balance();
    let req = d.join("t4.request");
    charger.ok(&["request", "--amount", "3", "--out", &s(&req)]);
    let err = meter
        .run(&[
            "pay",
            "--request",
            &s(&req),
            "--out",
            &s(&d.join("t4.package")),
        ])
        .fails_with(1);
    assert!(err.contains("nothing was paid"), "{err}");
    assert_eq!(meter.balance(), before);
    assert!(!d.join("t4.package").exists());
    assert_eq!(before.balance, 100 - 1 - 2);

    // t3 settles as an offline payment does: here when its payee renews.
    node.restart();
    assert_eq!(charger.ok(&["renew"]).trim(), "renewed 3");
    assert_eq!(op.double_spends().expect("double spends").len(), 1);
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
}
