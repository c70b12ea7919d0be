//! Issue 10, as a user drives it: `tally device load`, `unload`, `renew`
//! and `sync` against a node that a killer thread SIGKILLs at seeded
//! random moments (and restarts on the same port). Every command that
//! fails is simply run again, unchanged, until it succeeds — no identical
//! bytes kept by the test, no operator. Afterwards every SE holds exactly
//! what its completed commands say, every account too, nothing is
//! pending, the invariant holds and the offline float equals the value
//! held in SEs. SQLite, and PostgreSQL when TALLY_TEST_DATABASE_URL is set.

mod common;

use std::time::{Duration, Instant};

use common::{CliDevice, Db, Killer, Node, Rng, operator, retry, seed, temp_dir};

/// Devices (each its own account). A device's key table allows about 12
/// loads, unloads and renewal rounds per certificate lifetime, so the run
/// spreads its operations.
const DEVICES: usize = 50;
const OPS_PER_DEVICE: u32 = 8;
const DEPOSIT: u64 = 1_000_000;
const LOAD_MAX: u64 = 1_500;
const KILL_PAUSE_MS: (u64, u64) = (50, 300);
const OPS_MIN: u64 = 200;
const KILLS_MIN: u64 = 20;
/// Attempts of one command before the test gives up on it.
const ATTEMPTS_MAX: u32 = 200;
const RUN_TIME_MAX: Duration = Duration::from_secs(240);

struct Dev {
    cli: CliDevice,
    account: String,
    se: u64,
    acct: u64,
    ops_left: u32,
}

/// Runs `args` on `d` until it succeeds, the way a user retries.
fn until_ok(d: &CliDevice, args: &[&str], failures: &mut u64) -> String {
    for _ in 0..ATTEMPTS_MAX {
        let r = d.run(args);
        if r.code == 0 {
            return r.stdout;
        }
        // Only the node's absence or a crash mid-request is expected here.
        assert!(
            !r.stderr.contains("refused (4") || r.stderr.contains("(429"),
            "`{}` refused for good: {}",
            args.join(" "),
            r.stderr
        );
        *failures += 1;
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("`{}` never succeeded", args.join(" "));
}

fn user_crash_run(db: Db, test: &str) {
    let started = Instant::now();
    let mut rng = Rng::new(seed(test, 0x05e2_c2a5));
    let dir = temp_dir(test);
    let node = Node::start(&db.url(), dir.path(), "node");
    let url = node.url();
    let stats = std::sync::Arc::new(common::RetryStats::default());
    let op = node.operator();
    retry(&stats, || op.mint("m", DEPOSIT * DEVICES as u64)).expect("mint");
    let mut devs: Vec<Dev> = (0..DEVICES)
        .map(|i| {
            let account = format!("user{i}");
            retry(&stats, || op.deposit(&account, &format!("d{i}"), DEPOSIT)).expect("deposit");
            Dev {
                cli: CliDevice::init(dir.path(), &format!("dev{i}"), &url, "phone", &account),
                account,
                se: 0,
                acct: DEPOSIT,
                ops_left: OPS_PER_DEVICE,
            }
        })
        .collect();

    let killer = Killer::start(node, rng.next_u64(), KILL_PAUSE_MS, RUN_TIME_MAX);
    let (mut ops, mut failures) = (0u64, 0u64);
    let mut kinds = [0u64; 4];
    while ops < OPS_MIN || killer.kills.load(std::sync::atomic::Ordering::SeqCst) < KILLS_MIN {
        assert!(
            started.elapsed() < RUN_TIME_MAX,
            "{ops} operations, {} kills",
            killer.kills.load(std::sync::atomic::Ordering::SeqCst)
        );
        let live: Vec<usize> = (0..devs.len()).filter(|&i| devs[i].ops_left > 0).collect();
        assert!(!live.is_empty(), "out of devices after {ops} operations");
        let d = &mut devs[live[rng.range(0, live.len() as u64 - 1) as usize]];
        d.ops_left -= 1;
        match rng.range(0, 9) {
            0..=3 => {
                let a = rng.range(1, LOAD_MAX);
                until_ok(&d.cli, &["load", &a.to_string()], &mut failures);
                d.se += a;
                d.acct -= a;
                kinds[0] += 1;
            }
            4..=6 if d.se > 0 => {
                let a = rng.range(1, d.se);
                until_ok(&d.cli, &["unload", &a.to_string()], &mut failures);
                d.se -= a;
                d.acct += a;
                kinds[1] += 1;
            }
            7 => {
                until_ok(&d.cli, &["renew"], &mut failures);
                kinds[2] += 1;
            }
            _ => {
                until_ok(&d.cli, &["sync"], &mut failures);
                kinds[3] += 1;
            }
        }
        ops += 1;
    }
    let kills = killer.kills.load(std::sync::atomic::Ordering::SeqCst);
    let node = killer.finish();
    let op = node.operator();
    let mut held = 0u64;
    for d in &devs {
        assert_eq!(
            d.cli.balance().balance,
            d.se,
            "{} holds its loads − unloads",
            d.cli.name
        );
        assert_eq!(
            retry(&stats, || op.balance(&d.account)).expect("balance") as u64,
            d.acct,
            "{}'s account",
            d.account
        );
        let status = d.cli.ok(&["status"]);
        assert!(status.contains("pending: nothing"), "{status}");
        held += d.se;
    }
    let inv = operator(&url, &["invariant"]);
    assert!(inv.starts_with("holds"), "{inv}");
    assert!(
        inv.contains(&format!("offline float {held} ")),
        "float equals the value held in SEs ({held}): {inv}"
    );
    assert!(failures > 0, "no command ever failed: the kills missed");
    eprintln!(
        "{test}: {ops} commands (loads {}, unloads {}, renewals {}, syncs {}), {kills} kills, {failures} failed attempts run again, in {:.1?}",
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3],
        started.elapsed()
    );
}

#[test]
fn commands_run_again_after_kill_9_sqlite() {
    let db_dir = temp_dir("ucrash_db");
    user_crash_run(Db::sqlite(db_dir.path()), "user_crash_sqlite");
}

#[test]
fn commands_run_again_after_kill_9_postgres() {
    if let Some(db) = Db::postgres("e2e_user_crash::commands_run_again_after_kill_9_postgres") {
        user_crash_run(db, "user_crash_postgres");
    }
}
