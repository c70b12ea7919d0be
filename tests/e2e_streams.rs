//! Payment streams end to end with the real binaries (issue 13 item 1,
//! decision 0020): a `tally node`, an IoT meter and an IoT charger as
//! `tally device` processes. The charger writes a stream request, the
//! meter pays it (the OPEN locks ticks × price), the charger receives and
//! the meter acknowledges, as for any payment; then ticks through files,
//! each `stream release` on the meter and `stream accept` on the charger.
//! A terminal replaying, skipping or forging an element is refused with its
//! code and changes nothing; a retried release answers the same element;
//! both close offline and their shares become tokens; the charger renews
//! its claim, the meter unloads its refund. The invariant holds, the offline
//! float is what the devices hold plus the released-but-untaken ticks, and
//! the honest stream raises no alert.

mod common;

use std::path::Path;

use common::{CliDevice, Db, Node, operator, temp_dir};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The stream id a `pay` or `receive` of an OPEN printed.
fn stream_id(out: &str) -> String {
    let i = out
        .find("stream ")
        .unwrap_or_else(|| panic!("no stream id in {out:?}"));
    out[i + 7..i + 7 + 64].to_string()
}

#[test]
fn a_stream_between_two_cli_devices_settles_exactly() {
    let dir = temp_dir("e2e_streams");
    let d = dir.path();
    let db = Db::sqlite(d);
    let node = Node::start(&db.url(), d, "node");
    let url = node.url();
    operator(&url, &["mint", "100000", "--idempotency-key", "m1"]);
    for acct in ["energy", "charging"] {
        operator(
            &url,
            &[
                "deposit",
                acct,
                "5000",
                "--idempotency-key",
                &format!("dep-{acct}"),
            ],
        );
    }
    let meter = CliDevice::init(d, "meter", &url, "iot", "energy");
    let charger = CliDevice::init(d, "charger", &url, "iot", "charging");
    assert_eq!(meter.ok(&["load", "500"]).trim(), "loaded 500");

    // The OPEN: an ordinary payment of a stream request.
    let req = d.join("stream.req");
    let out = charger.ok(&[
        "stream",
        "request",
        "--price",
        "2",
        "--ticks",
        "50",
        "--out",
        &s(&req),
    ]);
    assert!(out.contains("(100 locked)"), "{out}");
    let pkg = d.join("stream.pkg");
    let paid = meter.ok(&["pay", "--request", &s(&req), "--out", &s(&pkg)]);
    let id = stream_id(&paid);
    let rcpt = d.join("stream.rcpt");
    let received = charger.ok(&["receive", "--package", &s(&pkg), "--out", &s(&rcpt)]);
    assert_eq!(stream_id(&received), id, "{received}");
    meter.ok(&["ack", "--receipt", &s(&rcpt)]);
    assert_eq!(meter.balance().balance, 400, "the OPEN locked 100");
    assert_eq!(charger.balance().balance, 0, "a stream is not a token yet");

    // Twenty ticks through files.
    let el = |k: u32| d.join(format!("tick-{k}.el"));
    // The meter's `stream release` of tick K into an element file.
    let release = |k: &str, out: &Path| {
        meter.run(&[
            "stream",
            "release",
            "--id",
            &id,
            "--tick",
            k,
            "--out",
            &s(out),
        ])
    };
    for k in 1..=20u32 {
        let k_s = k.to_string();
        release(&k_s, &el(k)).ok();
        let out = charger.ok(&[
            "stream",
            "accept",
            "--id",
            &id,
            "--tick",
            &k_s,
            "--element",
            &s(&el(k)),
        ]);
        assert!(
            out.ends_with(&format!("streamed {}\n", 2 * k))
                || out.contains(&format!("streamed {}", 2 * k)),
            "{out}"
        );
    }
    // A retried release (its answer lost) gives the same element.
    let again = d.join("tick-20-again.el");
    release("20", &again).ok();
    assert_eq!(
        std::fs::read(el(20)).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // A hostile terminal: replayed, skipped, forged — each refused, with
    // its code, nothing changed.
    let listed = charger.ok(&["stream", "list"]);
    // The charger's `stream accept` of tick K with an element file.
    let accept = |k: &str, element: &Path| {
        charger.run(&[
            "stream",
            "accept",
            "--id",
            &id,
            "--tick",
            k,
            "--element",
            &s(element),
        ])
    };
    // A retried accept (its answer lost): the same answer, nothing written.
    let retried = accept("20", &el(20)).ok();
    assert!(retried.contains("streamed 40"), "{retried}");
    assert_eq!(charger.ok(&["stream", "list"]), listed);
    let replay = accept("19", &el(19)).fails_with(1);
    assert!(replay.contains("2040"), "{replay}");
    // The held tick with another element (the previous one): replayed.
    let err = accept("20", &el(19)).fails_with(1);
    assert!(err.contains("2040"), "{err}");
    release("21", &el(21)).ok();
    let forged = d.join("forged.el");
    std::fs::write(&forged, std::fs::read(el(19)).unwrap()).unwrap();
    let err = accept("21", &forged).fails_with(1);
    assert!(err.contains("2042"), "{err}");
    let err = accept("22", &el(21)).fails_with(1);
    assert!(err.contains("2041"), "{err}");
    let err = release("23", &el(23)).fails_with(1);
    assert!(err.contains("2041"), "{err}");
    assert_eq!(
        charger.ok(&["stream", "list"]),
        listed,
        "refusals changed nothing"
    );
    // Tick 21 was released but never taken: the leftover.

    // Both close offline; closing again answers the same.
    let closed = charger.ok(&["stream", "close", "--id", &id]);
    assert!(closed.contains("claim 40"), "{closed}");
    assert_eq!(charger.ok(&["stream", "close", "--id", &id]), closed);
    let closed = meter.ok(&["stream", "close", "--id", &id]);
    assert!(closed.contains("21 ticks released; refund 58"), "{closed}");
    assert_eq!(charger.balance().balance, 40);
    assert_eq!(meter.balance().balance, 458);

    // Online: the claim renews (settlement walks its chain to the anchor),
    // the meter unloads everything it holds, the refund included.
    meter.ok(&["sync"]);
    charger.ok(&["sync"]);
    assert_eq!(charger.ok(&["renew"]).trim(), "renewed 40");
    meter.ok(&["unload", "458"]);
    assert_eq!(meter.balance().balance, 0);
    assert!(
        meter.ok(&["account"]).contains("account balance 4958"),
        "5000 − 500 loaded + 458 unloaded"
    );
    let op = node.operator();
    let inv = op.invariant().expect("invariant");
    assert!(inv.holds, "{inv}");
    // Offline: the charger's 40 and the leftover tick (2) nobody holds.
    assert_eq!(inv.offline_float, 42, "{inv}");
    let alerts = op.alerts().expect("alerts");
    assert!(alerts.is_empty(), "an honest stream raised {alerts:?}");
}
