//! One SE, one command at a time, as a card is in one reader. Two `tally
//! device` commands on the same SE file used to boot the same state and
//! commit over each other: two `pay`s spent one token twice (an honest,
//! never-cloned device then looked like a clone at settlement), `pay` and
//! `unload` of one token both went through, two `receive`s kept one of two
//! payments, two `load`s debited the account twice and kept one token, and
//! the file could be left unbootable. Each attack is run here with the real
//! binary, several rounds, the two commands started at the same instant:
//! they now run one after the other (the second waits for the first), so
//! value is neither doubled nor lost and the invariant holds.
//!
//! Also: an `init` whose settings are written before the SE is registered
//! (a kill after registration leaves a device `sync` finishes), and a
//! command that finds the SE held says so and waits.

mod common;

use std::path::Path;
use std::sync::Barrier;
use std::time::Duration;

use common::{CliDevice, Db, Node, Run, operator, pay_via_files, temp_dir};

const ROUNDS: usize = 4;

/// Runs `a` on `da` and `b` on `db` at the same instant.
fn at_once(da: &CliDevice, a: &[&str], db: &CliDevice, b: &[&str]) -> (Run, Run) {
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let ta = s.spawn(|| {
            start.wait();
            da.run(a)
        });
        let tb = s.spawn(|| {
            start.wait();
            db.run(b)
        });
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn story(db: Db, dir: &Path, test: &str) {
    let node = Node::start(&db.url(), dir, test);
    let url = node.url();
    let op = node.operator();
    operator(&url, &["mint", "1000000", "--idempotency-key", "m"]);
    let bob = CliDevice::init(dir, "bob", &url, "phone", "bob");
    let carol = CliDevice::init(dir, "carol", &url, "phone", "carol");

    // Two payments of one token at once, to two payees: one is paid, the
    // other refused for want of value, never both.
    for round in 0..ROUNDS {
        let name = format!("payer{round}");
        operator(
            &url,
            &["deposit", &name, "1000", "--idempotency-key", &name],
        );
        let payer = CliDevice::init(dir, &name, &url, "phone", &name);
        payer.ok(&["load", "100"]);
        assert_eq!(payer.balance().tokens, 1);
        let (rb, rc) = (
            dir.join(format!("rb{round}")),
            dir.join(format!("rc{round}")),
        );
        let (pb, pc) = (
            dir.join(format!("pb{round}")),
            dir.join(format!("pc{round}")),
        );
        bob.ok(&["request", "--amount", "100", "--out", &s(&rb)]);
        carol.ok(&["request", "--amount", "100", "--out", &s(&rc)]);
        let (x, y) = at_once(
            &payer,
            &["pay", "--request", &s(&rb), "--out", &s(&pb)],
            &payer,
            &["pay", "--request", &s(&rc), "--out", &s(&pc)],
        );
        assert!(
            (x.code == 0) != (y.code == 0),
            "round {round}: exactly one of two payments of one token: {x:?} {y:?}"
        );
        assert_eq!(
            payer.balance().balance,
            0,
            "the payer's SE boots and is empty"
        );
        let (payee, pkg) = if x.code == 0 {
            (&bob, &pb)
        } else {
            (&carol, &pc)
        };
        let rcpt = dir.join(format!("rcpt{round}"));
        payee.ok(&["receive", "--package", &s(pkg), "--out", &s(&rcpt)]);
        payer.ok(&["ack", "--receipt", &s(&rcpt)]);
    }
    let paid = bob.balance().balance + carol.balance().balance;
    assert_eq!(paid, 100 * ROUNDS as u64);

    // `pay` and `unload` of the one token at once: one of the two.
    for round in 0..ROUNDS {
        let name = format!("unloader{round}");
        operator(
            &url,
            &["deposit", &name, "1000", "--idempotency-key", &name],
        );
        let d = CliDevice::init(dir, &name, &url, "phone", &name);
        d.ok(&["load", "100"]);
        let r = dir.join(format!("ru{round}"));
        let p = dir.join(format!("pu{round}"));
        bob.ok(&["request", "--amount", "100", "--out", &s(&r)]);
        let (x, y) = at_once(
            &d,
            &["unload", "100"],
            &d,
            &["pay", "--request", &s(&r), "--out", &s(&p)],
        );
        assert!(
            (x.code == 0) != (y.code == 0),
            "round {round}: unload or pay of one token, not both: {x:?} {y:?}"
        );
        assert_eq!(d.balance().balance, 0);
        let account = op.balance(&name).unwrap();
        if x.code == 0 {
            assert_eq!(account, 1_000, "unloaded back to the account");
        } else {
            assert_eq!(account, 900);
            let rcpt = dir.join(format!("rcptu{round}"));
            bob.ok(&["receive", "--package", &s(&p), "--out", &s(&rcpt)]);
            d.ok(&["ack", "--receipt", &s(&rcpt)]);
        }
    }

    // Two payments received at once by one payee: both kept.
    operator(
        &url,
        &["deposit", "alice", "100000", "--idempotency-key", "alice"],
    );
    operator(
        &url,
        &["deposit", "dave", "100000", "--idempotency-key", "dave"],
    );
    let alice = CliDevice::init(dir, "alice", &url, "phone", "alice");
    let dave = CliDevice::init(dir, "dave", &url, "phone", "dave");
    alice.ok(&["load", "2000"]);
    dave.ok(&["load", "2000"]);
    for round in 0..ROUNDS {
        let (ra, rd) = (
            dir.join(format!("ra{round}")),
            dir.join(format!("rd{round}")),
        );
        let (pa, pd) = (
            dir.join(format!("pa{round}")),
            dir.join(format!("pd{round}")),
        );
        let (xa, xd) = (
            dir.join(format!("xa{round}")),
            dir.join(format!("xd{round}")),
        );
        carol.ok(&["request", "--amount", "10", "--out", &s(&ra)]);
        carol.ok(&["request", "--amount", "10", "--out", &s(&rd)]);
        alice.ok(&["pay", "--request", &s(&ra), "--out", &s(&pa)]);
        dave.ok(&["pay", "--request", &s(&rd), "--out", &s(&pd)]);
        let before = carol.balance().balance;
        let (x, y) = at_once(
            &carol,
            &["receive", "--package", &s(&pa), "--out", &s(&xa)],
            &carol,
            &["receive", "--package", &s(&pd), "--out", &s(&xd)],
        );
        assert_eq!((x.code, y.code), (0, 0), "{x:?} {y:?}");
        assert_eq!(
            carol.balance().balance,
            before + 20,
            "round {round}: both kept"
        );
        alice.ok(&["ack", "--receipt", &s(&xa)]);
        dave.ok(&["ack", "--receipt", &s(&xd)]);
    }

    // Two loads at once on one SE: both debited, both held.
    for round in 0..ROUNDS {
        let (se, account) = (alice.balance().balance, op.balance("alice").unwrap());
        let (x, y) = at_once(&alice, &["load", "10"], &alice, &["load", "20"]);
        assert_eq!((x.code, y.code), (0, 0), "{x:?} {y:?}");
        assert_eq!(alice.balance().balance, se + 30, "round {round}");
        assert_eq!(op.balance("alice").unwrap(), account - 30, "round {round}");
    }

    // A command that finds the SE held by another says so, waits, and
    // then runs: the test holds the state file's lock for a moment.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&alice.state)
        .unwrap();
    held.try_lock().unwrap();
    let (r, release) = std::thread::scope(|sc| {
        let t = sc.spawn(|| alice.run(&["balance"]));
        std::thread::sleep(Duration::from_millis(600));
        let release = t.is_finished();
        held.unlock().unwrap();
        (t.join().unwrap(), release)
    });
    assert!(!release, "the command waited for the SE");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("another command is using this secure element"),
        "{r:?}"
    );
    drop(held);

    // Everyone online: nothing lost, nothing doubled.
    for d in [&bob, &carol, &alice, &dave] {
        d.ok(&["renew"]);
    }
    let inv = operator(&url, &["invariant"]);
    assert!(inv.starts_with("holds"), "{inv}");
    let alerts = operator(&url, &["alerts"]);
    assert!(
        !alerts.contains("double_spend"),
        "no honest device looks like a clone: {alerts}"
    );
    // A sanity payment after all of it.
    pay_via_files(dir, "last", &alice, &bob, 5);
    drop(node);
}

#[test]
fn one_command_at_a_time_on_one_se_sqlite() {
    let dir = temp_dir("one_reader_sqlite");
    story(
        Db::sqlite(dir.path()),
        dir.path(),
        "one_command_at_a_time_on_one_se_sqlite",
    );
}

/// What a user is told when a command half succeeds or the SE refuses:
/// enough to act on. `pay` and `receive` whose output file cannot be
/// written after the SE committed say what the SE did and that running
/// the same command again gives the same package or receipt (nothing is
/// paid or credited twice); a package received again says so rather than
/// "received 0"; an SE refusal names its meaning, not only its code.
#[test]
fn a_user_is_told_what_happened_and_what_to_do() {
    let tmp = temp_dir("one_reader_messages");
    let dir = tmp.path();
    let node = Node::start(&Db::sqlite(dir).url(), dir, "one_reader_messages");
    let url = node.url();
    operator(&url, &["mint", "100000", "--idempotency-key", "m"]);
    operator(
        &url,
        &["deposit", "alice", "10000", "--idempotency-key", "a"],
    );
    let alice = CliDevice::init(dir, "alice", &url, "phone", "alice");
    let bob = CliDevice::init(dir, "bob", &url, "phone", "bob");
    alice.ok(&["load", "1000"]);
    let req = dir.join("req");
    bob.ok(&["request", "--amount", "300", "--out", &s(&req)]);

    // `pay` to a directory that does not exist: the SE paid.
    let nowhere = dir.join("no-such-dir/pkg");
    let err = alice
        .run(&["pay", "--request", &s(&req), "--out", &s(&nowhere)])
        .fails_with(1);
    assert!(
        err.contains("the secure element paid 300, but the package could not be written")
            && err.contains("nothing is paid twice"),
        "{err}"
    );
    assert_eq!(alice.balance().balance, 700);
    let pkg = dir.join("pkg");
    let out = alice.ok(&["pay", "--request", &s(&req), "--out", &s(&pkg)]);
    assert!(out.starts_with("paid 300:"), "{out}");
    assert_eq!(alice.balance().balance, 700, "paid once");

    // `receive` likewise; then the same package again.
    let err = bob
        .run(&["receive", "--package", &s(&pkg), "--out", &s(&nowhere)])
        .fails_with(1);
    assert!(
        err.contains(
            "the secure element took it (received 300), but the receipt could not be written"
        ),
        "{err}"
    );
    let rcpt = dir.join("rcpt");
    let out = bob.ok(&["receive", "--package", &s(&pkg), "--out", &s(&rcpt)]);
    assert!(
        out.starts_with("already received (nothing credited again); receipt written to"),
        "{out}"
    );
    assert_eq!(bob.balance().balance, 300, "credited once");
    alice.ok(&["ack", "--receipt", &s(&rcpt)]);

    // An SE refusal in words: the ninth open request.
    for i in 0..8 {
        bob.ok(&[
            "request",
            "--amount",
            "5",
            "--out",
            &s(&dir.join(format!("r{i}"))),
        ]);
    }
    let err = bob
        .run(&["request", "--amount", "5", "--out", &s(&dir.join("r9"))])
        .fails_with(1);
    assert!(
        err.contains("the secure element refused: table full: open requests (code 2108)")
            && err.contains("`tally device sync` closes the requests nobody paid"),
        "{err}"
    );
    // An online command the SE refuses: in words, with what to check.
    let err = alice.run(&["unload", "5000"]).fails_with(1);
    assert!(
        err.contains("request parameters do not fit the SE's state (code 2030); an amount of 0, more than the SE holds"),
        "{err}"
    );
    assert_eq!(alice.balance().balance, 700, "nothing unloaded");
    let inv = operator(&url, &["invariant"]);
    assert!(inv.starts_with("holds"), "{inv}");
    drop(node);
}
