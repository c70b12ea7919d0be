//! MDS ingestion rate and double-spend detection latency on SQLite (a
//! temp file, WAL), writing a small table.
//!
//! `cargo run --release -p tally-mds --example ingest_bench [payments] [devices] [batch] [sqlite|sqlite-full|postgres]`
//!
//! * `sqlite` (default): WAL with `synchronous = NORMAL`, as an MDS store
//!   should be opened (`Store::sqlite_with` / `sqlite:PATH?synchronous=normal`):
//!   the WAL is synced at checkpoints only, so a power cut may roll back
//!   the last commits, which settlement re-sends through its outbox and
//!   the MDS ingests idempotently.
//! * `sqlite-full`: WAL with `synchronous = FULL` (tally-store's default,
//!   one fsync per commit), for comparison.
//! * `postgres`: a fresh schema under `TALLY_TEST_DATABASE_URL`, dropped
//!   at the end.
//!
//! * ingestion: the deterministic scenario of the acceptance test (honest
//!   payments, loads, renewals, unloads), generated and signed first, then
//!   ingested batch by batch; records/s counts only the ingest calls.
//! * detection latency: on the loaded store, a token is spent, then spent
//!   again; the time from handing the second branch to `Mds::ingest`
//!   until the call returns with the alert committed. Measured alone (the
//!   second branch as a one-record batch, as settlement of one package
//!   would hand it over) and at the end of a full batch of honest records.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use tally_core::package::sign_transfer;
use tally_core::testkit::{Scheme, key};
use tally_core::{Amount, OutPoint, Output, Record, Suite};
use tally_mds::{AlertKind, IngestRecord, Mds, Verdict};
use tally_store::{SqliteOptions, Store, Synchronous};

fn arg(i: usize, d: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(d)
}

/// CPU time this thread has used (user + system), where Linux tells it:
/// on a shared machine it says what ingestion costs apart from waiting
/// for a core or for the disk.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised name; utime and stime are the 12th
    // and 13th of those, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn main() {
    let payments = arg(1, 100_000);
    let devices = arg(2, 1_000);
    let batch = arg(3, 2_000);
    let t = Instant::now();
    let s = common::generate(1, devices, payments, 20, &[], batch);
    let records: usize = s.batches.iter().map(Vec::len).sum();
    eprintln!("generated {records} records in {:?}", t.elapsed());
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: temp dir: {e}");
            std::process::exit(1);
        }
    };
    let backend = std::env::args().nth(4).unwrap_or_else(|| "sqlite".into());
    let synchronous = match backend.as_str() {
        "sqlite" => Synchronous::Normal,
        "sqlite-full" => Synchronous::Full,
        "postgres" => Synchronous::Full, // unused
        other => {
            eprintln!("error: backend `{other}`: expected sqlite, sqlite-full or postgres");
            std::process::exit(2);
        }
    };
    let postgres = backend == "postgres";
    let schema = if postgres {
        match tally_store::test_postgres_store("ingest_bench") {
            Some((_, schema)) => Some(schema),
            None => {
                eprintln!("error: set TALLY_TEST_DATABASE_URL to bench PostgreSQL");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let url = tally_store::test_database_url("ingest_bench").unwrap_or_default();
    let open = || -> Result<Mds, Box<dyn std::error::Error>> {
        let store = match &schema {
            Some(schema) => Store::postgres(&url, Some(schema))?,
            None => Store::sqlite_with(&dir.path().join("mds.db"), SqliteOptions { synchronous })?,
        };
        Ok(Mds::open(store, s.config.clone())?)
    };
    let mds = match open() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: open MDS: {e}");
            std::process::exit(1);
        }
    };
    let mut busy = Duration::ZERO;
    let mut worst = Duration::ZERO;
    let cpu_before = thread_cpu();
    for b in &s.batches {
        let t = Instant::now();
        if let Err(e) = mds.ingest(b) {
            eprintln!("error: ingest: {e}");
            std::process::exit(1);
        }
        let d = t.elapsed();
        busy += d;
        worst = worst.max(d);
    }
    let rate = records as f64 / busy.as_secs_f64();
    let cpu = cpu_before
        .zip(thread_cpu())
        .map(|(a, b)| b.saturating_sub(a));
    // Crash recovery cost: reopening rebuilds the lookup maps from the store.
    let before = mds.indicators();
    drop(mds);
    let t = Instant::now();
    let mds = match open() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: reopen MDS: {e}");
            std::process::exit(1);
        }
    };
    let reopen = t.elapsed();
    if mds.indicators() != before {
        eprintln!("error: indicators changed across reopen");
        std::process::exit(1);
    }

    // Detection latency on the loaded store.
    let mut scheme = Scheme::new(Suite::Ed25519);
    let honest_tail: Vec<IngestRecord> = s.batches.last().cloned().unwrap_or_default();
    let mut alone = Vec::new();
    let mut in_batch = Vec::new();
    for trial in 0..40u32 {
        let owner = key(Suite::Ed25519, format!("bench-latency-{trial}").as_bytes());
        let issue = scheme.issue(owner.public(), 1_000);
        let tok = OutPoint {
            record: issue.id(),
            index: 0,
        };
        let spend = |to: &str, n: u8| {
            let k = owner.clone();
            sign_transfer(
                vec![tok],
                &[owner.public()],
                vec![Output {
                    value: Amount(1_000),
                    owner: key(Suite::Ed25519, to.as_bytes()).public(),
                }],
                [n; 16],
                u64::from(n),
                &|_| Some(k.clone()),
            )
        };
        let (Some(first), Some(second)) = (spend("bench-a", 1), spend("bench-b", 2)) else {
            eprintln!("error: signing failed");
            std::process::exit(1);
        };
        let epoch = 21;
        let first_batch = vec![
            IngestRecord::new(Record::Issue(issue), epoch, Verdict::Verified),
            IngestRecord::new(Record::Transfer(first), epoch, Verdict::Verified),
        ];
        let second = IngestRecord::new(Record::Transfer(second), epoch, Verdict::Verified);
        if let Err(e) = mds.ingest(&first_batch) {
            eprintln!("error: ingest: {e}");
            std::process::exit(1);
        }
        // Half the trials alone, half behind a full batch of (replayed,
        // hence skipped-after-lookup) honest records plus fresh ones would
        // need fresh signatures; replayed records still cost their lookup.
        let (batch, sink): (Vec<IngestRecord>, &mut Vec<Duration>) = if trial % 2 == 0 {
            (vec![second], &mut alone)
        } else {
            let mut b = honest_tail.clone();
            b.push(second);
            (b, &mut in_batch)
        };
        let t = Instant::now();
        let out = match mds.ingest(&batch) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: ingest: {e}");
                std::process::exit(1);
            }
        };
        let d = t.elapsed();
        if !out.alerts.iter().any(|a| a.kind == AlertKind::DoubleSpend) {
            eprintln!("error: double spend not detected");
            std::process::exit(1);
        }
        sink.push(d);
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (a50, amax) = stats(&mut alone);
    let (b50, bmax) = stats(&mut in_batch);
    if let Some(schema) = &schema
        && let Ok(admin) = Store::postgres(&url, None)
    {
        let _ = admin.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]));
    }
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| backend | {} |",
        match (&schema, synchronous) {
            (Some(_), _) => "postgres",
            (None, Synchronous::Normal) => "sqlite (file, WAL, synchronous = NORMAL)",
            (None, Synchronous::Full) => "sqlite (file, WAL, synchronous = FULL)",
        }
    );
    println!(
        "| records ingested | {records} ({payments} payments, {devices} devices, batches of {batch}) |"
    );
    println!("| ingest time | {:.3} s |", busy.as_secs_f64());
    println!("| ingestion rate | {rate:.0} records/s |");
    if let Some(cpu) = cpu.filter(|c| !c.is_zero()) {
        println!(
            "| ingest CPU time (this thread) | {:.3} s = {:.0} records per CPU-second |",
            cpu.as_secs_f64(),
            records as f64 / cpu.as_secs_f64()
        );
    }
    println!("| slowest batch | {:.1} ms |", worst.as_secs_f64() * 1e3);
    println!(
        "| reopen (rebuild lookup maps) | {:.0} ms |",
        reopen.as_secs_f64() * 1e3
    );
    println!(
        "| detection latency, second branch alone | p50 {:.2} ms, max {:.2} ms |",
        a50.as_secs_f64() * 1e3,
        amax.as_secs_f64() * 1e3
    );
    println!(
        "| detection latency, behind {} records | p50 {:.2} ms, max {:.2} ms |",
        honest_tail.len(),
        b50.as_secs_f64() * 1e3,
        bmax.as_secs_f64() * 1e3
    );
}
