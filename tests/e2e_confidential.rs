//! Confidential mode end to end with the real binaries (issue 12): a
//! `tally node --amount-mode confidential` (the policy commits to amounts
//! and carries settlement's audit key), card, phones and an IoT meter as
//! `tally device` processes paying each other offline through files —
//! card → phone, phone → phone, phone → card, IoT → card, phone → IoT and
//! IoT → phone micropayments, a split (a payment
//! with change) and a merge (two tokens paying one amount), a chain over
//! five devices — then sync, renewal and unload settled from the audit
//! openings; the ledger invariant holds and the offline float equals what
//! the SEs hold. `tally package inspect` shows commitments, not amounts.

mod common;

use std::path::Path;

use common::{CliDevice, Db, Node, SeBalance, operator, pay_via_files, run, temp_dir};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn expect(dev: &CliDevice, balance: u64, tokens: u64) {
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
}

fn confidential_story(db: Db, test: &str) {
    let dir = temp_dir(test);
    let d = dir.path();
    let node = Node::start_with(&db.url(), d, "node", &["--amount-mode", "confidential"]);
    let url = node.url();
    operator(&url, &["mint", "1000000", "--idempotency-key", "m1"]);
    for (acct, amount) in [
        ("alice", 20_000),
        ("bob", 10_000),
        ("carol", 10_000),
        ("dave", 10_000),
        ("meter", 5_000),
    ] {
        operator(
            &url,
            &[
                "deposit",
                acct,
                &amount.to_string(),
                "--idempotency-key",
                &format!("dep-{acct}"),
            ],
        );
    }
    let op = node.operator();
    let alice = CliDevice::init(d, "alice", &url, "card", "alice");
    let bob = CliDevice::init(d, "bob", &url, "phone", "bob");
    let carol = CliDevice::init(d, "carol", &url, "phone", "carol");
    let dave = CliDevice::init(d, "dave", &url, "phone", "dave");
    let meter = CliDevice::init(d, "meter", &url, "iot", "meter");

    assert_eq!(alice.ok(&["load", "10000"]).trim(), "loaded 10000");
    assert_eq!(bob.ok(&["load", "2000"]).trim(), "loaded 2000");
    assert_eq!(meter.ok(&["load", "300"]).trim(), "loaded 300");
    expect(&alice, 10_000, 1);
    // Payment streams are clear amounts only: the SE refuses to ask for
    // one, and the user is told why.
    let err = meter
        .run(&[
            "stream",
            "request",
            "--price",
            "2",
            "--ticks",
            "10",
            "--out",
            &s(&d.join("stream.req")),
        ])
        .fails_with(1);
    assert!(
        err.contains("a confidential policy (streams are clear amounts only) (code 2046)"),
        "{err}"
    );

    // card → phone (a split: 3 000 paid, 7 000 change).
    let (_, p1) = pay_via_files(d, "p1", &alice, &bob, 3_000);
    // phone → phone, a merge: bob's 2 000 load and alice's 3 000 pay 4 000.
    let (_, p2) = pay_via_files(d, "p2", &bob, &carol, 4_000);
    // The chain goes on over five devices: carol → dave → meter (IoT) →
    // alice (phone → card, IoT → card).
    // carol's phone pays with change: the range proof is made by the
    // `tally` process (the phone's processor) and checked by her SE before
    // it signs (decision 0032); alice's card proved on its SE (p1).
    let (req3, pkg3, rcpt3) = (
        d.join("p3.request"),
        d.join("p3.package"),
        d.join("p3.receipt"),
    );
    dave.ok(&["request", "--amount", "2500", "--out", &s(&req3)]);
    let out = carol.ok(&["pay", "--request", &s(&req3), "--out", &s(&pkg3)]);
    assert!(
        out.starts_with("paid 2500:")
            && out.contains("range proof made on this device's processor, checked by its SE"),
        "{out}"
    );
    // Paying the same request again (a retry: the answer was lost) gives
    // the same package, not a second payment.
    let again = d.join("p3-again.package");
    carol.ok(&["pay", "--request", &s(&req3), "--out", &s(&again)]);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&pkg3).unwrap()
    );
    dave.ok(&["receive", "--package", &s(&pkg3), "--out", &s(&rcpt3)]);
    carol.ok(&["ack", "--receipt", &s(&rcpt3)]);
    pay_via_files(d, "p4", &dave, &meter, 1_000);
    let (_, p5) = pay_via_files(d, "p5", &meter, &alice, 1_200);
    // IoT micropayments: the meter pays dave one unit at a time.
    for i in 0..3 {
        pay_via_files(d, &format!("tick{i}"), &meter, &dave, 1);
    }
    expect(&alice, 7_000 + 1_200, 2);
    expect(&bob, 1_000, 1);
    expect(&carol, 1_500, 1);
    expect(&dave, 1_500 + 3, 4);
    expect(&meter, 300 + 1_000 - 1_200 - 3, 1);

    // What a payee (or anyone with the file) sees: commitments, not the
    // amounts of the change or of the history.
    for (pkg, paid, hidden) in [
        (&p1, 3_000u64, 7_000u64),
        (&p2, 4_000, 1_000),
        (&p5, 1_200, 97),
    ] {
        let text = run(&["package", "inspect", &s(pkg)]).ok();
        assert!(text.contains("commitment"), "{text}");
        assert!(
            !text.contains(&format!(" {hidden} ")) && !text.contains(&format!(" {paid} to")),
            "an amount is in the clear:\n{text}"
        );
    }

    // Everyone syncs: settlement opens every record's audit seal.
    for dev in [&alice, &bob, &carol, &dave, &meter] {
        let out = dev.ok(&["sync"]);
        assert!(out.contains("uploaded"), "{}: {out}", dev.name);
    }
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    assert!(op.double_spends().expect("double spends").is_empty());

    // Renewal: same value, one fresh (confidential) token.
    assert_eq!(alice.ok(&["renew"]).trim(), "renewed 8200");
    expect(&alice, 8_200, 1);
    assert_eq!(dave.ok(&["renew"]).trim(), "renewed 1503");
    expect(&dave, 1_503, 1);
    // The renewed token pays again (card → phone), and phone → card.
    pay_via_files(d, "p6", &alice, &carol, 200);
    pay_via_files(d, "p7", &carol, &alice, 100);

    // Unload: the values settlement opened reach the accounts.
    assert_eq!(
        carol.ok(&["unload", "1600"]).trim(),
        "unloaded 1600; account balance 11600"
    );
    assert_eq!(
        alice.ok(&["unload", "1000"]).trim(),
        "unloaded 1000; account balance 11000"
    );
    expect(&carol, 0, 0);
    assert_eq!(alice.balance().balance, 7_100);

    let held: u64 = [&alice, &bob, &carol, &dave, &meter]
        .iter()
        .map(|dev| dev.balance().balance)
        .sum();
    assert_eq!(held, 12_300 - 2_600);
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    assert_eq!(inv.offline_float, held as i64, "{inv}");
    assert_eq!(inv.loss, 0, "{inv}");
    assert_eq!(inv.accounts + inv.offline_float, 1_000_000, "{inv}");
}

#[test]
fn confidential_story_sqlite() {
    let dir = temp_dir("confidential-sqlite-db");
    confidential_story(Db::sqlite(dir.path()), "confidential-sqlite");
}

/// The same story on PostgreSQL (settlement's batched opening check and
/// the ledger on the server store). `PgSchema::create` fails the test
/// when `CI` is set and PostgreSQL is missing, and says it skipped
/// otherwise.
#[test]
fn confidential_story_postgres() {
    if let Some(db) = Db::postgres("e2e_confidential::confidential_story_postgres") {
        confidential_story(db, "confidential-postgres");
    }
}
