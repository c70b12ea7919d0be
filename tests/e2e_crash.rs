//! Crash safety of the back office (DESIGN.md §4: every operation
//! idempotent under retry, and surviving kill -9 at any point).
//!
//! A real `tally node` serves a client loop in this process: devices with
//! in-memory SEs onboard, then load, renew and unload, at least 200
//! operations in all, while a killer thread SIGKILLs the node at seeded
//! random moments and restarts it on the same port. The client retries
//! every failed HTTP exchange with the identical signed request bytes.
//! Afterwards every operation must have been applied exactly once: each
//! SE holds what was loaded minus what was unloaded, each account holds
//! deposits − loads + unloads, the journal has exactly one entry per
//! money movement, the invariant holds and there are no double spends.
//! SQLite, and PostgreSQL when TALLY_TEST_DATABASE_URL is set.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Db, Killer, MemDevice, Node, RetryStats, Retrying, Rng, retry, seed, temp_dir};
use tally_core::policy::device_class::{CARD, IOT, PHONE};
use tally_wallet::SeLink;

/// Operations per device. Each SE's key table holds 16 offline keys and
/// frees one only when its certificate expires (30 epochs); onboarding
/// takes 4 and every load, renewal round and unload takes 1, so a device
/// carries at most 12 operations per certificate lifetime: the run adds
/// devices as it goes.
const OPS_PER_DEVICE: u32 = 8;
/// Devices onboarded at a time.
const DEVICE_BATCH: usize = 5;
const ACCOUNTS: [&str; 4] = ["acct0", "acct1", "acct2", "acct3"];
const DEPOSIT: u64 = 100_000_000;
const LOAD_MAX: u64 = 1_500;
/// Pause between kills, milliseconds.
const KILL_PAUSE_MS: (u64, u64) = (50, 400);
/// The run goes on until it did at least this many operations and saw
/// at least this many kills…
const OPS_MIN: u64 = 200;
const KILLS_MIN: u64 = 20;
/// …within these bounds.
const OPS_MAX: u64 = 50_000;
const RUN_TIME_MAX: Duration = Duration::from_secs(45);

#[derive(Default, Clone, Copy)]
struct Expected {
    loaded: u64,
    unloaded: u64,
    ops_left: u32,
}

fn crash_run(db: Db, test: &str) {
    let started = Instant::now();
    let seed = seed(test, 0x7a11_c0de);
    let mut rng = Rng::new(seed);
    let dir = temp_dir(test);
    let node = Node::start(&db.url(), dir.path(), "node");
    let url = node.url();
    let op = node.operator();
    let stats = Arc::new(RetryStats::default());
    let enroller = node.enroller();

    // Money in, before the fire starts (retried all the same).
    retry(&stats, || op.mint("m", DEPOSIT * ACCOUNTS.len() as u64)).expect("mint");
    for a in ACCOUNTS {
        retry(&stats, || op.deposit(a, &format!("dep-{a}"), DEPOSIT)).expect("deposit");
    }

    let killer = Killer::start(node, rng.next_u64(), KILL_PAUSE_MS, RUN_TIME_MAX);
    let mut be = Retrying::new(&url, stats.clone());
    let mut devs: Vec<MemDevice> = Vec::new();
    let mut want: Vec<Expected> = Vec::new();
    let (mut loads, mut renewals, mut unloads) = (0u64, 0u64, 0u64);
    let mut ops = 0u64;
    while ops < OPS_MIN || killer.kills.load(Ordering::SeqCst) < KILLS_MIN {
        assert!(
            started.elapsed() < RUN_TIME_MAX && ops < OPS_MAX,
            "{ops} operations and {} kills in {:.1?}",
            killer.kills.load(Ordering::SeqCst),
            started.elapsed()
        );
        let mut live: Vec<usize> = (0..devs.len()).filter(|&i| want[i].ops_left > 0).collect();
        if live.is_empty() {
            // Onboarding (trust, register, sync, certify) under fire too.
            for _ in 0..DEVICE_BATCH {
                let i = devs.len();
                let class = [CARD, PHONE, IOT][i % 3];
                let d = MemDevice::onboard(
                    &mut be,
                    &enroller,
                    &format!("crash{i}"),
                    class,
                    ACCOUNTS[i % ACCOUNTS.len()],
                )
                .unwrap_or_else(|e| panic!("device {i}: {e}"));
                devs.push(d);
                want.push(Expected {
                    ops_left: OPS_PER_DEVICE,
                    ..Expected::default()
                });
                live.push(i);
            }
        }
        let i = live[rng.range(0, live.len() as u64 - 1) as usize];
        let d = &mut devs[i];
        let balance = d.balance();
        let tokens = d.link.tokens().expect("SE tokens");
        let renewable = tokens.len() > 1 || tokens.iter().any(|t| t.lineage_len > 1);
        let pick = rng.range(0, 9);
        let r = if balance > 0 && pick >= 8 {
            let amount = rng.range(1, balance);
            unloads += 1;
            want[i].unloaded += amount;
            d.with(&mut be, |a| a.unload(amount).map(|_| ()))
        } else if renewable && pick >= 5 {
            renewals += 1;
            d.with(&mut be, |a| {
                a.renew()
                    .map(|v| assert_eq!(v.0, balance, "renewal keeps the value"))
            })
        } else {
            let amount = rng.range(1, LOAD_MAX);
            loads += 1;
            want[i].loaded += amount;
            d.with(&mut be, |a| a.load(amount).map(|_| ()))
        };
        if let Err(e) = r {
            panic!("operation {ops} on device {i} failed: {e}");
        }
        want[i].ops_left -= 1;
        ops += 1;
    }
    let kills = killer.kills.load(Ordering::SeqCst);
    let node = killer.finish();

    // Exactly once, everywhere.
    let mut held = 0u64;
    for (i, d) in devs.iter_mut().enumerate() {
        let b = d.balance();
        assert_eq!(b, want[i].loaded - want[i].unloaded, "SE of device {i}");
        held += b;
    }
    for (k, a) in ACCOUNTS.iter().enumerate() {
        let (mut loaded, mut unloaded) = (0, 0);
        for i in (k..devs.len()).step_by(ACCOUNTS.len()) {
            loaded += want[i].loaded;
            unloaded += want[i].unloaded;
        }
        let got = retry(&stats, || op.balance(a)).expect("balance");
        assert_eq!(got, (DEPOSIT - loaded + unloaded) as i64, "account {a}");
    }
    let inv = retry(&stats, || op.invariant()).expect("invariant");
    assert!(inv.holds, "{inv}");
    assert_eq!(inv.offline_float, held as i64, "{inv}");
    assert_eq!(inv.loss, 0, "{inv}");
    // mint + one entry per load and per unload at the central bank
    // (renewals move no money between accounts; deposits are the DCP's
    // own book).
    assert_eq!(inv.journal_entries, (1 + loads + unloads) as i64, "{inv}");
    assert!(
        retry(&stats, || op.double_spends())
            .expect("double spends")
            .is_empty()
    );
    let failed = stats.failed_attempts.load(Ordering::Relaxed);
    let retried = stats.retried_requests.load(Ordering::Relaxed);
    eprintln!(
        "{test}: {ops} operations ({loads} loads, {renewals} renewals, {unloads} unloads) on {} devices; \
         {kills} kills, {} node starts, {retried} requests retried ({failed} failed attempts) in {:.1?}",
        devs.len(),
        node.starts,
        started.elapsed()
    );
    assert!(retried > 0, "no request ever failed: the kills missed");
    common::assert_schema_used(&db);
}

#[test]
fn kill_9_during_operations_sqlite() {
    let dir = temp_dir("db");
    crash_run(Db::sqlite(dir.path()), "crash_sqlite");
}

#[test]
fn kill_9_during_operations_postgres() {
    if let Some(db) = Db::postgres("e2e_crash::kill_9_during_operations_postgres") {
        crash_run(db, "crash_postgres");
    }
}
