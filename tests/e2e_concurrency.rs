//! Two `tally node` processes on one PostgreSQL database (the scale-out
//! shape: stateless back-office processes, SERIALIZABLE transactions).
//!
//! Cloned payer: the two copies of a cloned SE (CLI state files) spend
//! the same token to two payees; both payees renew at the same instant,
//! one through each node. Exactly one settlement consumes the token
//! first and the other finds the double spend: one row per round, the
//! loss booked once, the invariant holding.
//!
//! Same device, both nodes: one signed request (load, unload, renewal)
//! sent to both nodes at once is applied once; the other node answers
//! the identical stored response (or 409/503 and then, retried, the
//! identical stored response). Never a double credit or debit.
//!
//! PostgreSQL only (skipped loudly without TALLY_TEST_DATABASE_URL).

mod common;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use common::{
    CliDevice, Db, MemDevice, Node, RetryStats, Retrying, operator, retry, retryable, temp_dir,
};
use tally_api::HttpBackend;
use tally_core::codec::Cbor;
use tally_core::dcp::{DeviceResponse, attachment_digest};
use tally_core::policy::device_class::PHONE;
use tally_core::{Amount, Package};
use tally_se::RequestParams;
use tally_wallet::SeLink;
use tally_wallet::agent::{Backend, BackendError, SealedKind};

/// Rounds of the cloned-payer race (fresh payees each round).
const ROUNDS: usize = 5;
/// Devices of the same-request race, and rounds (load, unload, renewal)
/// per device: each round takes at most 3 of an SE's 16 offline keys (the
/// SE has one certified when it has no unused one left).
const TWINS: usize = 2;
const TWIN_ROUNDS: usize = 3;

/// Two nodes on one fresh schema (the first runs the migrations).
fn two_nodes(test: &str) -> Option<(Db, tempfile::TempDir, Node, Node)> {
    let db = Db::postgres(test)?;
    let dir = temp_dir(test.rsplit(':').next().unwrap_or("concurrency"));
    let a = Node::start(&db.url(), dir.path(), "node-a");
    let b = Node::start(&db.url(), dir.path(), "node-b");
    Some((db, dir, a, b))
}

/// What one racer saw.
struct Outcome {
    /// The first answer's status (200 when it succeeded at once).
    first_status: u16,
    /// The final answer (after retries of 409/5xx/transport failures).
    result: Result<Vec<u8>, BackendError>,
    started: Instant,
    ended: Instant,
}

/// Posts each `(node, body)` from its own thread, all released at once;
/// a 409, 5xx or transport failure is retried with the same body.
fn race(requests: Vec<(String, Vec<u8>)>, stats: &Arc<RetryStats>) -> Vec<Outcome> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(url, body)| {
            let (barrier, stats) = (barrier.clone(), stats.clone());
            thread::spawn(move || {
                let mut http = HttpBackend::new(url);
                // Warm the connection so both requests leave together.
                let _ = http.trust();
                barrier.wait();
                let started = Instant::now();
                let first = http.device(&body);
                let ended = Instant::now();
                let first_status = match &first {
                    Ok(_) => 200,
                    Err(e) => e.status,
                };
                let result = match first {
                    Err(e) if retryable(&e) || e.status == 409 => retry(&stats, || {
                        http.device(&body).map_err(|e| {
                            // A 409 may precede the stored answer; keep trying.
                            if e.status == 409 {
                                BackendError { status: 503, ..e }
                            } else {
                                e
                            }
                        })
                    }),
                    other => other,
                };
                Outcome {
                    first_status,
                    result,
                    started,
                    ended,
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| panic!("racer panicked")))
        .collect()
}

/// Whether the first attempts of two racers were in flight together.
fn overlapped(o: &[Outcome]) -> bool {
    o[0].started < o[1].ended && o[1].started < o[0].ended
}

/// An offline payment from a CLI device to an in-memory one, by files.
fn pay_to_mem(
    dir: &Path,
    tag: &str,
    payer: &CliDevice,
    payee: &mut MemDevice,
    amount: u64,
) -> Package {
    let req = dir.join(format!("{tag}.request"));
    let pkg = dir.join(format!("{tag}.package"));
    let rcpt = dir.join(format!("{tag}.receipt"));
    let s = |p: &Path| p.display().to_string();
    let r = payee
        .link
        .create_request(Amount(amount))
        .expect("payee request");
    std::fs::write(&req, r.to_cbor()).expect("write request");
    payer.ok(&["pay", "--request", &s(&req), "--out", &s(&pkg)]);
    let bytes = std::fs::read(&pkg).expect("package");
    let receipt = payee.link.receive(&bytes).expect("payee accepts");
    std::fs::write(&rcpt, receipt.to_cbor()).expect("write receipt");
    payer.ok(&["ack", "--receipt", &s(&rcpt)]);
    Package::from_cbor(&bytes).expect("package decodes")
}

/// The first steps of a renewal of every token (redemption request, SE
/// payment to the DCP, sealed upload, fresh certified key); returns the
/// Redeem request the SE built and signed, not yet sent.
fn prepare_redeem(d: &mut MemDevice, be: &mut dyn Backend, amount: u64, unload: bool) -> Vec<u8> {
    let DeviceResponse::Redemption(order) =
        d.call(be, RequestParams::RedemptionRequest { amount, unload })
    else {
        panic!("redemption request: unexpected response");
    };
    let package = d.link.redeem(&order).expect("SE pays the DCP");
    let sealed = be
        .seal(
            &d.link.root_key().expect("root"),
            SealedKind::Redemption,
            &package,
        )
        .expect("seals to settlement");
    let mut req = d.request_with_key(
        be,
        RequestParams::Redeem {
            nonce: order.request.nonce,
            sealed_digest: attachment_digest(&sealed),
        },
    );
    req.attachment = sealed;
    req.to_cbor()
}

/// Applies a Renewed response to the SE.
fn apply_renewal(d: &mut MemDevice, bytes: &[u8]) {
    let DeviceResponse::Renewed { issue, receipt } =
        DeviceResponse::from_cbor(bytes).expect("response decodes")
    else {
        panic!("not a renewal");
    };
    d.link.import_issue(&issue).expect("issue imports");
    d.link.ack(&receipt).expect("receipt acks");
}

#[test]
fn cloned_payer_redemptions_race_across_nodes() {
    let Some((db, dir, a, b)) =
        two_nodes("e2e_concurrency::cloned_payer_redemptions_race_across_nodes")
    else {
        return;
    };
    let d = dir.path();
    let op = a.operator();
    let stats = Arc::new(RetryStats::default());
    operator(&a.url(), &["mint", "1000000", "--idempotency-key", "m"]);
    operator(
        &b.url(),
        &["deposit", "mallory", "100000", "--idempotency-key", "d"],
    );
    let mallory = CliDevice::init(d, "mallory", &a.url(), "phone", "mallory");
    let (enrol_a, enrol_b) = (a.enroller(), b.enroller());
    let mut be_a = Retrying::new(&a.url(), stats.clone());
    let mut be_b = Retrying::new(&b.url(), stats.clone());
    let mut payees: Vec<MemDevice> = Vec::new();

    let value = 1_000u64;
    let mut overlaps = 0;
    let mut first_statuses = Vec::new();
    for round in 0..ROUNDS {
        // Payee 1 banks with node A, payee 2 with node B.
        let mut p1 = MemDevice::onboard(
            &mut be_a,
            &enrol_a,
            &format!("r{round}-payee1"),
            PHONE,
            "payee1",
        )
        .expect("payee1");
        let mut p2 = MemDevice::onboard(
            &mut be_b,
            &enrol_b,
            &format!("r{round}-payee2"),
            PHONE,
            "payee2",
        )
        .expect("payee2");
        mallory.ok(&["load", &value.to_string()]);
        let clone = mallory.clone_to(d, &format!("clone{round}"));
        let honest = pay_to_mem(d, &format!("r{round}-honest"), &mallory, &mut p1, value);
        let cloned = pay_to_mem(d, &format!("r{round}-cloned"), &clone, &mut p2, value);
        assert_eq!(honest.transfer.inputs, cloned.transfer.inputs, "same token");
        assert_ne!(honest.transfer.id(), cloned.transfer.id());

        let before = op.invariant().expect("invariant");
        let amount1 = p1.balance();
        let amount2 = p2.balance();
        let r1 = prepare_redeem(&mut p1, &mut be_a, amount1, false);
        let r2 = prepare_redeem(&mut p2, &mut be_b, amount2, false);
        let out = race(vec![(a.url(), r1), (b.url(), r2)], &stats);
        overlaps += usize::from(overlapped(&out));
        first_statuses.extend(out.iter().map(|o| o.first_status));
        // Both payees are honest: both renewals succeed (offline finality).
        for (o, p) in out.iter().zip([&mut p1, &mut p2]) {
            let bytes = o
                .result
                .as_ref()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            apply_renewal(p, bytes);
        }
        assert_eq!(p1.balance(), amount1);
        assert_eq!(p2.balance(), amount2);
        payees.push(p1);
        payees.push(p2);

        // Exactly one of the two settlements found the double spend.
        let ds = op.double_spends().expect("double spends");
        assert_eq!(ds.len(), round + 1, "round {round}: {ds:?}");
        let new = &ds[round];
        assert_eq!(new.value, value);
        assert_eq!(new.record, honest.transfer.inputs[0].record.to_string());
        let inv = op.invariant().expect("invariant");
        assert!(inv.holds, "{inv}");
        assert_eq!(
            inv.loss,
            before.loss - value as i64,
            "loss booked once: {inv}"
        );
        assert_eq!(inv.journal_entries, before.journal_entries + 1, "{inv}");
        let held = payees.iter_mut().map(|p| p.balance()).sum::<u64>()
            + mallory.balance().balance
            + clone.balance().balance;
        assert_eq!(inv.offline_float, held as i64, "{inv}");
        // Both nodes publish the same state.
        assert_eq!(b.operator().invariant().expect("invariant"), inv);
    }
    eprintln!(
        "cloned payer: {ROUNDS} rounds, {overlaps} with both redemptions in flight together; \
         first answers {first_statuses:?}"
    );
    assert!(overlaps > 0, "the two redemptions never overlapped");
    common::assert_schema_used(&db);
}

#[test]
fn same_request_to_both_nodes_applies_once() {
    let Some((db, _dir, a, b)) =
        two_nodes("e2e_concurrency::same_request_to_both_nodes_applies_once")
    else {
        return;
    };
    let op = a.operator();
    let stats = Arc::new(RetryStats::default());
    let mut be_a = Retrying::new(&a.url(), stats.clone());
    let enrol_a = a.enroller();
    retry(&stats, || op.mint("m", 1_000_000)).expect("mint");
    retry(&stats, || op.deposit("twin", "d", 100_000)).expect("deposit");
    let mut overlaps = 0;
    let mut first_statuses = Vec::new();
    let mut account = 100_000i64;
    let mut journal = op.invariant().expect("invariant").journal_entries;
    let mut both = |body: Vec<u8>, what: &str| -> Vec<u8> {
        let out = race(vec![(a.url(), body.clone()), (b.url(), body)], &stats);
        overlaps += usize::from(overlapped(&out));
        first_statuses.extend(out.iter().map(|o| o.first_status));
        let r: Vec<Vec<u8>> = out
            .into_iter()
            .map(|o| o.result.unwrap_or_else(|e| panic!("{what}: {e}")))
            .collect();
        assert_eq!(
            r[0], r[1],
            "{what}: both nodes answer the one stored response"
        );
        r[0].clone()
    };
    let mut held_before = 0;
    for twin in 0..TWINS {
        let mut d = MemDevice::onboard(&mut be_a, &enrol_a, &format!("twin{twin}"), PHONE, "twin")
            .expect("device");
        for round in 0..TWIN_ROUNDS {
            let what = |op: &str| format!("twin {twin} round {round}: {op}");
            // Load.
            let load = 5_000 + round as u64;
            let body = d
                .request_with_key(&mut be_a, RequestParams::Load { amount: load })
                .to_cbor();
            let resp = both(body, &what("load"));
            let DeviceResponse::Issued(issue) = DeviceResponse::from_cbor(&resp).expect("decodes")
            else {
                panic!("{}: unexpected response", what("load"));
            };
            d.link.import_issue(&issue).expect("issue imports");
            account -= load as i64;
            journal += 1;
            assert_eq!(
                op.balance("twin").expect("balance"),
                account,
                "debited once"
            );
            assert_eq!(op.invariant().expect("invariant").journal_entries, journal);

            // Unload.
            let unload = 1_000 + round as u64;
            let body = prepare_redeem(&mut d, &mut be_a, unload, true);
            let resp = both(body, &what("unload"));
            let DeviceResponse::Unloaded { balance, receipt } =
                DeviceResponse::from_cbor(&resp).expect("decodes")
            else {
                panic!("{}: unexpected response", what("unload"));
            };
            d.link.ack(&receipt).expect("receipt acks");
            account += unload as i64;
            journal += 1;
            assert_eq!(balance as i64, account);
            assert_eq!(
                op.balance("twin").expect("balance"),
                account,
                "credited once"
            );

            // Renewal of everything held.
            let held = d.balance();
            let body = prepare_redeem(&mut d, &mut be_a, held, false);
            let resp = both(body, &what("renewal"));
            apply_renewal(&mut d, &resp);
            assert_eq!(d.balance(), held);
            assert_eq!(d.link.tokens().expect("tokens").len(), 1);

            let inv = op.invariant().expect("invariant");
            assert!(inv.holds, "{inv}");
            assert_eq!(inv.journal_entries, journal, "{inv}");
            assert_eq!(
                inv.offline_float,
                (held_before + d.balance()) as i64,
                "{inv}"
            );
            assert_eq!(inv.loss, 0, "{inv}");
        }
        held_before += d.balance();
    }
    assert!(op.double_spends().expect("double spends").is_empty());
    eprintln!(
        "same request: {} races, {overlaps} with both in flight together; first answers {first_statuses:?}",
        TWINS * TWIN_ROUNDS * 3
    );
    assert!(overlaps > 0, "the two copies never overlapped");
    common::assert_schema_used(&db);
}
