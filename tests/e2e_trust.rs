//! Trust rooted in the SE, through the real binaries, the way a user or
//! an attacker at the keyboard meets it:
//!
//! - enrolment needs the account's one-time code (`tally operator
//!   enrol`): a wrong code is refused and leaves no device files behind,
//!   so is an SE of a manufacturer the node does not trust (without
//!   using up the code); the right code enrols one SE, and a second SE
//!   presenting the same code is refused;
//! - cardholder verification: an online payment from a card without the
//!   PIN is refused by the SE (code 2025) and the account is untouched;
//!   with the PIN it goes through; three wrong PINs block the card (code
//!   2026 afterwards, even with the right PIN); an IoT device has no
//!   cardholder and pays online without one;
//! - an offline payment above the no-PIN limit (5 000) without the PIN is
//!   refused (2025) with the SE state file byte-for-byte unchanged, and
//!   goes through with the PIN; so does the payment that takes the
//!   unverified total past 15 000.
//!
//! SQLite, and PostgreSQL when TALLY_TEST_DATABASE_URL is set.

mod common;

use std::path::Path;

use common::{CliDevice, Db, Node, PIN, Run, maker_files, operator, run, temp_dir};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The SE's three files (state, device key, terminal settings).
const SE_FILES: [&str; 3] = ["", ".key", ".json"];

/// `tally device --state DIR/NAME.se init …` with the given code, typed
/// by hand (no PIN for IoT), manufactured by the node's trusted maker.
fn init_with_code(d: &Path, name: &str, url: &str, class: &str, account: &str, code: &str) -> Run {
    init_by(d, name, url, class, account, code, &maker_files(d).0)
}

/// [`init_with_code`] with the manufacturer key file `maker_key`.
fn init_by(
    d: &Path,
    name: &str,
    url: &str,
    class: &str,
    account: &str,
    code: &str,
    maker_key: &Path,
) -> Run {
    let dev = CliDevice::at(d, name);
    let args = common::init_args_with(d, url, class, account, code, maker_key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dev.run(&args)
}

#[track_caller]
fn assert_no_device_files(dev: &CliDevice) {
    for suffix in SE_FILES {
        assert!(
            !dev.file(suffix).exists(),
            "{} left behind",
            dev.file(suffix).display()
        );
    }
}

/// The same code with one character changed (still well-formed).
fn another_code(code: &str) -> String {
    let mut c: Vec<char> = code.chars().collect();
    c[0] = if c[0] == 'A' { 'B' } else { 'A' };
    c.into_iter().collect()
}

fn trust_story(db: Db, test: &str) {
    let dir = temp_dir(test);
    let d = dir.path();
    let node = Node::start(&db.url(), d, "node");
    let url = node.url();
    let op = node.operator();
    operator(&url, &["mint", "1000000", "--idempotency-key", "m"]);
    for (who, amount) in [
        ("alice", 20_000),
        ("bob", 1_000),
        ("carol", 50_000),
        ("meter", 5_000),
    ] {
        operator(
            &url,
            &[
                "deposit",
                who,
                &amount.to_string(),
                "--idempotency-key",
                who,
            ],
        );
    }

    // ---- (a) enrolment with the one-time code ------------------------
    let code = common::enrolment_code(&url, "alice");
    assert_eq!(code.len(), 19, "XXXX-XXXX-XXXX-XXXX: {code}");
    let alice = CliDevice::at(d, "alice");
    let wrong = another_code(&code);
    let e = init_with_code(d, "alice", &url, "card", "alice", &wrong).fails_with(1);
    assert!(e.contains("nothing kept"), "{e}");
    assert!(e.contains("(403 "), "wrong code refused by the DCP: {e}");
    assert_no_device_files(&alice);
    // A code of another account does not enrol for this one either.
    let bobs = common::enrolment_code(&url, "bob");
    let e = init_with_code(d, "alice", &url, "card", "alice", &bobs).fails_with(1);
    assert!(e.contains("(403 "), "{e}");
    assert_no_device_files(&alice);
    // An SE certified by a manufacturer the node does not trust: refused,
    // and the code is not used up.
    run(&["manufacturer", "keygen", "--out", &s(&d.join("rogue"))]).ok();
    let e = init_by(
        d,
        "alice",
        &url,
        "card",
        "alice",
        &code,
        &d.join("rogue.key"),
    )
    .fails_with(1);
    assert!(e.contains("(403 "), "untrusted manufacturer: {e}");
    assert_no_device_files(&alice);
    assert!(op.devices().expect("devices").is_empty());

    let out = init_with_code(d, "alice", &url, "card", "alice", &code).ok();
    assert!(out.contains("registered for account alice"), "{out}");
    for suffix in SE_FILES {
        assert!(alice.file(suffix).exists(), "{suffix}");
    }
    // The same code again, for a second SE: refused, nothing kept.
    let second = CliDevice::at(d, "alice2");
    let e = init_with_code(d, "alice2", &url, "card", "alice", &code).fails_with(1);
    assert!(e.contains("(409 "), "code already used: {e}");
    assert_no_device_files(&second);
    assert_eq!(op.devices().expect("devices").len(), 1);
    // The enrolled card works (re-registration is idempotent).
    assert_eq!(alice.ok(&["register"]).trim(), "registered and synced");

    // ---- (b) online payments need the PIN on a card -------------------
    let bob = CliDevice::init(d, "bob", &url, "phone", "bob");
    let balances = || {
        (
            op.balance("alice").expect("alice"),
            op.balance("bob").expect("bob"),
        )
    };
    assert_eq!(balances(), (20_000, 1_000));
    // `alice` (CliDevice::at) types no PIN by itself.
    let e = alice
        .run(&["pay-online", "--to", "bob", "500"])
        .fails_with(1);
    assert!(e.contains("code 2025"), "cardholder verification: {e}");
    assert_eq!(balances(), (20_000, 1_000), "nothing moved");
    let out = alice.ok(&["pay-online", "--to", "bob", "500", "--pin", PIN]);
    assert_eq!(out.trim(), "paid 500 to bob online; account balance 19500");
    assert_eq!(balances(), (19_500, 1_500));
    // The verification was used up by that payment.
    let e = alice
        .run(&["pay-online", "--to", "bob", "500"])
        .fails_with(1);
    assert!(e.contains("code 2025"), "{e}");
    // Three wrong PINs…
    for attempt in 0..3 {
        let e = alice
            .run(&["pay-online", "--to", "bob", "500", "--pin", "9999"])
            .fails_with(1);
        assert!(e.contains("code 2027"), "wrong PIN {attempt}: {e}");
        assert_eq!(balances(), (19_500, 1_500));
    }
    // …block the card: the right PIN no longer helps, nor does no PIN.
    let e = alice
        .run(&["pay-online", "--to", "bob", "500", "--pin", PIN])
        .fails_with(1);
    assert!(e.contains("code 2026"), "blocked: {e}");
    let e = alice
        .run(&["pay-online", "--to", "bob", "500"])
        .fails_with(1);
    assert!(e.contains("code 2026"), "blocked: {e}");
    let e = alice.run(&["pin", "1357", "--old", PIN]).fails_with(1);
    assert!(e.contains("code 2026"), "blocked: {e}");
    assert_eq!(balances(), (19_500, 1_500), "nothing moved");
    // An IoT device has no cardholder: no PIN asked.
    let meter = CliDevice::init(d, "meter", &url, "iot", "meter");
    assert_eq!(meter.pin, None);
    let out = meter.ok(&["pay-online", "--to", "bob", "700"]);
    assert_eq!(out.trim(), "paid 700 to bob online; account balance 4300");
    assert_eq!(op.balance("bob").expect("bob"), 2_200);

    // ---- (c) offline payments above the no-PIN limits -----------------
    let carol = CliDevice::init(d, "carol", &url, "phone", "carol");
    let carol_by_hand = CliDevice::at(d, "carol");
    assert_eq!(carol.ok(&["load", "40000"]).trim(), "loaded 40000");
    let snapshot = |dev: &CliDevice| -> Vec<Vec<u8>> {
        SE_FILES
            .iter()
            .map(|x| std::fs::read(dev.file(x)).expect("SE file"))
            .collect()
    };
    let request = |tag: &str, amount: u64| {
        let req = d.join(format!("{tag}.request"));
        bob.ok(&[
            "request",
            "--amount",
            &amount.to_string(),
            "--out",
            &s(&req),
        ]);
        req
    };
    // Pays `req` (with the PIN iff `pin`), then bob receives and carol acks.
    let settle = |tag: &str, req: &Path, amount: u64, pin: bool| {
        let (pkg, rcpt) = (
            d.join(format!("{tag}.package")),
            d.join(format!("{tag}.receipt")),
        );
        let mut args = vec!["pay", "--request", &s(req), "--out", &s(&pkg)]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        if pin {
            args.extend(["--pin".to_string(), PIN.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = carol_by_hand.ok(&args);
        assert!(out.starts_with(&format!("paid {amount}:")), "{out}");
        bob.ok(&["receive", "--package", &s(&pkg), "--out", &s(&rcpt)]);
        carol_by_hand.ok(&["ack", "--receipt", &s(&rcpt)]);
    };

    let req = request("big", 6_000);
    let pkg = d.join("big.package");
    let before = snapshot(&carol);
    let e = carol_by_hand
        .run(&["pay", "--request", &s(&req), "--out", &s(&pkg)])
        .fails_with(1);
    assert!(e.contains("code 2025"), "above the no-PIN limit: {e}");
    assert!(
        snapshot(&carol) == before,
        "a refused payment left the SE's files byte-for-byte unchanged"
    );
    assert!(!pkg.exists(), "no package written");
    assert_eq!(carol.balance().balance, 40_000);
    settle("big", &req, 6_000, true);
    assert_eq!(carol.balance().balance, 34_000);

    // Since that verified payment: 3 × 4 000 without the PIN; the fourth
    // would take the unverified total to 16 000 > 15 000.
    for i in 0..3 {
        let tag = format!("small{i}");
        let req = request(&tag, 4_000);
        settle(&tag, &req, 4_000, false);
    }
    let req = request("fourth", 4_000);
    let before = snapshot(&carol);
    let e = carol_by_hand
        .run(&[
            "pay",
            "--request",
            &s(&req),
            "--out",
            &s(&d.join("fourth.package")),
        ])
        .fails_with(1);
    assert!(e.contains("code 2025"), "past the cumulative limit: {e}");
    assert!(snapshot(&carol) == before, "SE files unchanged");
    settle("fourth", &req, 4_000, true);
    assert_eq!(carol.balance().balance, 34_000 - 16_000);
    assert_eq!(bob.balance().balance, 22_000);

    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    assert!(op.double_spends().expect("double spends").is_empty());
    common::assert_schema_used(&db);
}

#[test]
fn trust_story_sqlite() {
    let dir = temp_dir("db");
    trust_story(Db::sqlite(dir.path()), "trust_sqlite");
}

#[test]
fn trust_story_postgres() {
    if let Some(db) = Db::postgres("e2e_trust::trust_story_postgres") {
        trust_story(db, "trust_postgres");
    }
}
