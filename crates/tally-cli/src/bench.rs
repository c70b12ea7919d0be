//! `tally bench`: back-office throughput, printed as one markdown table.
//!
//! - settlement: renewal packages (one hop: `Issue` → `Transfer` to the
//!   DCP key; eight hops: an 8-record ancestry, then the transfer to the
//!   DCP key) are decoded, verified and registered, 64 packages per
//!   transaction, by 1 and 2 worker threads (verification inside the
//!   transaction, or one signature batch before it with `Settlement::settle`
//!   or `Settlement::settle_batch`) or by 1 and 2 worker *processes*
//!   (`tally bench worker`) on the settlement queue, each package sealed
//!   to settlement (HPKE) and opened by the worker. Beside it, from the same run, the pure
//!   Ed25519 rate of `crypto::verify_many` on batches of 64 signatures, so
//!   the settlement rate can be read as a share of the signature floor.
//! - ledger: `Ledger::transfer_batch` over random transfers among 1000
//!   user accounts, every transfer with its own idempotency key.
//!
//! Every measurement gets a fresh database (an SQLite file in a temporary
//! directory, or a PostgreSQL schema that is dropped afterwards) and ends
//! with checks that the work was really done: every input registered,
//! no double spend, the ledger invariant holds, the journal has every
//! transfer. Packages and transfers are prepared before the clock starts.

use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use tally_core::codec::{Cbor, CodecError};
use tally_core::crypto::{SigCheck, tagged_hash, verify_many};
use tally_core::policy::device_class::PHONE;
use tally_core::sealed::{OpeningKey, SealedKind, SealingKey, seal};
use tally_core::testkit::{Scheme, key};
use tally_core::verify::{
    BoundedCertCache, VerifyError, verify_package_for_settlement, verify_packages_for_settlement,
};
use tally_core::{
    Amount, Issue, OutPoint, Output, Package, Record, SecretKey, Signature, Suite, Transfer,
    TrustStore, VerifiedPackage, VerifyParams,
};
use tally_ledger::ledger::{self, AccountKind, Ledger, LedgerError, TransferRequest, code};
use tally_ledger::queue::{SettlementQueue, run_worker};
use tally_ledger::settlement::{Settlement, SettlementError};
use tally_store::{Store, StoreError, Tx, TxFailure};

use crate::CliError;

/// Packages settled in one database transaction, unless told otherwise.
const TX_PACKAGES_DEFAULT: usize = 64;
/// Packages in one device's sealed sync upload in the server-path rows
/// (about a day of one device's offline payments at a national scale of
/// 1 billion payments a day over 100 million devices).
const SYNC_UPLOAD_PACKAGES: usize = 8;
/// Sync requests in flight per core given to verification on the
/// server's path: DCPs (several, each with many devices) send
/// concurrently, and the central bank verifies on its cores while earlier
/// requests commit in groups.
const SYNC_IN_FLIGHT_PER_CORE: usize = 32;
/// Signatures per `verify_many` call of the pure batch-verification rate.
const SIG_BATCH_SIGNATURES: usize = 64;
/// How long the pure batch-verification rate is measured, per thread count.
const SIG_BATCH_DURATION: Duration = Duration::from_secs(1);
/// Value of every benchmark token.
const TOKEN_VALUE: u64 = 1_000;
/// User accounts of the ledger benchmark.
const LEDGER_ACCOUNTS: usize = 1_000;
/// Opening balance of each of them.
const LEDGER_OPENING_BALANCE: u64 = 1_000_000;
/// Largest random transfer amount.
const LEDGER_AMOUNT_MAX: u64 = 100;
/// Issues registered (and funded) per setup transaction.
const SETUP_TX_ISSUES_MAX: usize = 500;
/// Settlement's history budget (the DCP tier's).
const SETTLEMENT_RECORDS_MAX: usize = 1024;
const DCP_ID: u32 = 1;
const DCP_ACCOUNT: &str = "dcp:1";

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Settlement throughput: renewal packages verified and registered per second.
    Settlement {
        /// `postgres://…` (a fresh schema per measurement, dropped after it)
        /// or a directory for the SQLite files (default: the temp dir).
        #[arg(long)]
        database_url: Option<String>,
        /// Records (ancestry records + the transfer) per package shape.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Rounds per configuration (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Packages settled per database transaction.
        #[arg(long, default_value_t = TX_PACKAGES_DEFAULT)]
        packages_per_tx: usize,
        /// Only the rows whose verification column contains this text
        /// (e.g. "server's path"; for profiling one placement).
        #[arg(long)]
        only: Option<String>,
    },
    /// Ledger throughput: `Ledger::transfer_batch`, transfers per second.
    Ledger {
        /// `postgres://…` (a fresh schema, dropped after it) or a directory
        /// for the SQLite file (default: the temp dir).
        #[arg(long)]
        database_url: Option<String>,
        /// Transfers per round.
        #[arg(long, default_value_t = 100_000)]
        transfers: usize,
        /// Transfers per batch (one transaction each).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Rounds (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// HPKE opening rate of one core: packages sealed to settlement
    /// opened per second (what a worker does before verifying).
    Hpke {
        /// Bytes of the sealed plaintext (a one-hop package is ≈ 570).
        #[arg(long, default_value_t = 570)]
        bytes: usize,
    },
    /// One settlement worker process on a bench database (what `bench
    /// settlement` starts for its worker-process rows): the test kit's
    /// trust objects and the bench's opening key (fixed seed, public).
    Worker {
        #[command(flatten)]
        args: crate::worker::WorkerArgs,
        /// PostgreSQL schema of the bench database.
        #[arg(long)]
        schema: Option<String>,
        /// Wait until this Unix time (ms) before the first claim, so that
        /// several workers start together.
        #[arg(long)]
        start_at_ms: Option<i64>,
    },
    /// One central bank process of the server-path rows (what `bench
    /// settlement` starts for them): answers its part of the prepared
    /// sync requests on the bench database.
    CentralSync {
        /// The bench database (`postgres://…` with --schema, or an SQLite file).
        #[arg(long)]
        database_url: String,
        /// PostgreSQL schema of the bench database.
        #[arg(long)]
        schema: Option<String>,
        /// The prepared requests (written by `bench settlement`).
        #[arg(long)]
        requests: PathBuf,
        /// `K/N`: answer the K-th of N equal parts.
        #[arg(long)]
        part: String,
        /// Wait until this Unix time (ms) before the first request.
        #[arg(long)]
        start_at_ms: i64,
    },
    /// Both, on SQLite and, with --postgres or TALLY_TEST_DATABASE_URL, on PostgreSQL.
    All {
        /// PostgreSQL URL (fresh schemas, dropped afterwards); without it
        /// only SQLite is measured.
        #[arg(long, env = "TALLY_TEST_DATABASE_URL")]
        postgres: Option<String>,
        /// Records (ancestry records + the transfer) per package shape.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Ledger transfers per round.
        #[arg(long, default_value_t = 100_000)]
        transfers: usize,
        /// Ledger transfers per batch (one transaction each).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Rounds per configuration (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Packages settled per database transaction.
        #[arg(long, default_value_t = TX_PACKAGES_DEFAULT)]
        packages_per_tx: usize,
    },
}

pub fn run(cmd: BenchCmd) -> Result<String, CliError> {
    let mut report = Report::default();
    match cmd {
        BenchCmd::Settlement {
            database_url,
            records,
            rounds,
            packages_per_tx,
            only,
        } => {
            report.rounds = rounds.max(1);
            let opts = SettlementOptions {
                records,
                rounds: report.rounds,
                tx_packages: packages_per_tx.max(1),
                only,
            };
            settlement(&Target::parse(database_url), &opts, &mut report)?
        }
        BenchCmd::Ledger {
            database_url,
            transfers,
            batch,
            rounds,
        } => {
            report.rounds = rounds.max(1);
            ledger_bench(
                &Target::parse(database_url),
                transfers,
                batch,
                report.rounds,
                &mut report,
            )?
        }
        BenchCmd::Hpke { bytes } => return Ok(hpke_rate(bytes)),
        BenchCmd::Worker {
            args,
            schema,
            start_at_ms,
        } => return bench_worker(&args, schema.as_deref(), start_at_ms),
        BenchCmd::CentralSync {
            database_url,
            schema,
            requests,
            part,
            start_at_ms,
        } => {
            return central_sync_child(
                &database_url,
                schema.as_deref(),
                &requests,
                &part,
                start_at_ms,
            )
            .map_err(CliError::from);
        }
        BenchCmd::All {
            postgres,
            records,
            transfers,
            batch,
            rounds,
            packages_per_tx,
        } => {
            report.rounds = rounds.max(1);
            let opts = SettlementOptions {
                records,
                rounds: report.rounds,
                tx_packages: packages_per_tx.max(1),
                only: None,
            };
            let mut targets = vec![Target::Sqlite(std::env::temp_dir())];
            match postgres.filter(|u| !u.is_empty()) {
                Some(u) => targets.push(Target::Postgres(u)),
                None => progress(
                    "PostgreSQL skipped: pass --postgres URL or set TALLY_TEST_DATABASE_URL",
                ),
            }
            for t in &targets {
                settlement(t, &opts, &mut report)?;
            }
            for t in &targets {
                ledger_bench(t, transfers, batch, report.rounds, &mut report)?;
            }
        }
    }
    Ok(report.render())
}

fn progress(m: &str) {
    eprintln!("tally bench: {m}");
}

// ---- failures ----------------------------------------------------------------

#[derive(Debug)]
enum Failure {
    Store(StoreError),
    Ledger(LedgerError),
    Settlement(SettlementError),
    Verify(VerifyError),
    Decode(CodecError),
    /// A post-run check found the work not done as expected.
    Check(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Store(e) => write!(f, "{e}"),
            Failure::Ledger(e) => write!(f, "ledger: {e}"),
            Failure::Settlement(e) => write!(f, "settlement: {e}"),
            Failure::Verify(e) => write!(f, "a benchmark package was refused: {e}"),
            Failure::Decode(e) => write!(f, "a benchmark package did not decode: {e}"),
            Failure::Check(m) => write!(f, "benchmark check failed: {m}"),
        }
    }
}

macro_rules! failure_from {
    ($t:ty, $v:ident) => {
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::$v(e)
            }
        }
    };
}
failure_from!(StoreError, Store);
failure_from!(LedgerError, Ledger);
failure_from!(SettlementError, Settlement);
failure_from!(VerifyError, Verify);
failure_from!(CodecError, Decode);

impl TxFailure for Failure {
    fn is_conflict(&self) -> bool {
        match self {
            Failure::Store(e) => e.is_conflict(),
            Failure::Ledger(e) => e.is_conflict(),
            Failure::Settlement(e) => e.is_conflict(),
            _ => false,
        }
    }
}

impl From<Failure> for CliError {
    fn from(e: Failure) -> Self {
        CliError::failed(e.to_string())
    }
}

// ---- databases ---------------------------------------------------------------

enum Target {
    /// SQLite files in this directory.
    Sqlite(PathBuf),
    /// A fresh schema per measurement in this database.
    Postgres(String),
}

impl Target {
    fn parse(url: Option<String>) -> Target {
        match url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Target::Postgres(u)
            }
            Some(dir) => Target::Sqlite(PathBuf::from(dir.strip_prefix("sqlite:").unwrap_or(&dir))),
            None => Target::Sqlite(std::env::temp_dir()),
        }
    }
    fn backend(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "SQLite",
            Target::Postgres(_) => "PostgreSQL",
        }
    }
}

/// A migrated, empty database that removes itself when dropped.
struct BenchDb {
    store: Option<Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Schema { url: String, schema: String },
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

impl BenchDb {
    fn fresh(target: &Target) -> Result<BenchDb, Failure> {
        let db = match target {
            Target::Sqlite(parent) => {
                let dir = parent.join(format!("tally-bench-{}", unique_suffix()));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Failure::Check(format!("{}: {e}", dir.display())))?;
                let store = Store::sqlite(&dir.join("bench.sqlite"))?;
                BenchDb {
                    store: Some(store),
                    cleanup: Cleanup::Dir(dir),
                }
            }
            Target::Postgres(url) => {
                let schema = format!("tally_bench_{}", unique_suffix());
                let admin = Store::postgres(url, None)?;
                admin.transact(|tx| tx.execute(&format!("CREATE SCHEMA {schema}"), &[]))?;
                let store = Store::postgres(url, Some(&schema))?;
                BenchDb {
                    store: Some(store),
                    cleanup: Cleanup::Schema {
                        url: url.clone(),
                        schema,
                    },
                }
            }
        };
        db.store()
            .migrate(&[&ledger::MIGRATIONS, &tally_ledger::settlement::MIGRATIONS])?;
        Ok(db)
    }

    /// How a worker process finds this database.
    fn worker_args(&self) -> Vec<String> {
        match &self.cleanup {
            Cleanup::Dir(d) => vec![
                "--database-url".into(),
                d.join("bench.sqlite").display().to_string(),
            ],
            Cleanup::Schema { url, schema } => vec![
                "--database-url".into(),
                url.clone(),
                "--schema".into(),
                schema.clone(),
            ],
        }
    }

    /// A second store on this database (the central bank's own
    /// connections, as a `tally central` process would have).
    fn reopen(&self) -> Result<Store, Failure> {
        Ok(match &self.cleanup {
            Cleanup::Dir(d) => Store::sqlite(&d.join("bench.sqlite"))?,
            Cleanup::Schema { url, schema } => Store::postgres(url, Some(schema))?,
        })
    }

    fn store(&self) -> &Store {
        // Only `drop` takes the store out.
        self.store.as_ref().expect("store present until drop")
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        // Close the connections first: the schema drop must not wait on them.
        drop(self.store.take());
        let r = match &self.cleanup {
            Cleanup::Dir(d) => std::fs::remove_dir_all(d).map_err(|e| e.to_string()),
            Cleanup::Schema { url, schema } => Store::postgres(url, None)
                .and_then(|a| {
                    a.transact(|tx| tx.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[]))
                })
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            progress(&format!("cleanup failed (remove it by hand): {e}"));
        }
    }
}

// ---- report ------------------------------------------------------------------

#[derive(Default)]
struct Report {
    /// Every pure batch-verification measurement: (threads, signatures/s).
    batch_rates: Vec<(usize, f64)>,
    settlement: Vec<SettlementRow>,
    ledger: Vec<LedgerRow>,
    rounds: usize,
}

/// One settlement configuration, measured `rounds` times, each round a
/// pure batch-verification measurement immediately followed by the
/// settlement run (so background load hits both alike).
struct SettlementRow {
    backend: &'static str,
    shape: Shape,
    threads: usize,
    placement: Placement,
    packages: usize,
    tx_packages: usize,
    records: usize,
    signatures: usize,
    /// Transactions and retried attempts, over all rounds.
    transactions: usize,
    retries: usize,
    /// Per round: (seconds, pure batch rate at the same thread count).
    rounds: Vec<(f64, f64)>,
}

struct LedgerRow {
    backend: &'static str,
    transfers: usize,
    batch: usize,
    rejected: usize,
    /// Seconds of each round.
    rounds: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let mut it = l.split_whitespace();
            Some(format!("{} {} {}", it.next()?, it.next()?, it.next()?))
        })
        .unwrap_or_else(|| "unknown".into());
    format!(
        "| | |\n|---|---|\n| nproc | {nproc} |\n| CPU | {} ({} MHz) |\n| load average at the end (1, 5, 15 min) | {load} |\n",
        field("model name"),
        field("cpu MHz"),
    )
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

impl Report {
    fn batch_rate(&mut self, threads: usize) -> f64 {
        let r = pure_batch_rate(threads, SIG_BATCH_DURATION);
        self.batch_rates.push((threads, r));
        r
    }

    fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Machine\n\n{}", machine());
        let rounds = self.rounds;
        let mut threads: Vec<usize> = self.batch_rates.iter().map(|(t, _)| *t).collect();
        threads.sort_unstable();
        threads.dedup();
        if !threads.is_empty() {
            let _ = writeln!(
                s,
                "## Pure Ed25519 batch verification\n\n`crypto::verify_many`, {SIG_BATCH_SIGNATURES} signatures (distinct keys) per call, {} s per measurement, one measurement before every settlement round.\n\n| threads | measurements | median signatures/s | min | max |\n|---:|---:|---:|---:|---:|",
                SIG_BATCH_DURATION.as_secs_f64()
            );
            for t in threads {
                let v: Vec<f64> = self
                    .batch_rates
                    .iter()
                    .filter(|(n, _)| *n == t)
                    .map(|(_, r)| *r)
                    .collect();
                let (lo, hi) = min_max(&v);
                let _ = writeln!(
                    s,
                    "| {t} | {} | {} | {} | {} |",
                    v.len(),
                    thousands(median(v.clone())),
                    thousands(lo),
                    thousands(hi)
                );
            }
            let _ = writeln!(s);
        }
        if !self.settlement.is_empty() {
            let _ = writeln!(
                s,
                "## Settlement\n\nDecode + verification + registration in the spent registry, in transactions of the given number of packages (verification: per package inside the transaction; one signature batch per transaction before it, then `Settlement::settle` per package or `Settlement::settle_batch`; or worker processes on the settlement queue, which also open each package (HPKE) and keep the queue); medians of {rounds} rounds. \"threads\" counts worker processes in the worker-process rows. Records = ancestry records + the transfer. \"Of pure batch rate\" is the settlement signature rate over the pure batch rate measured just before it at the same thread count (median of the per-round ratios); \"retries per tx\" counts attempts after serialization conflicts.\n\n| backend | package | threads | verification | packages/tx | packages | records | signatures | median s | records/s | packages/s | signatures/s | of pure batch rate | retries per tx |\n|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in &self.settlement {
                let secs = median(r.rounds.iter().map(|(t, _)| *t).collect());
                let ratio = median(
                    r.rounds
                        .iter()
                        .map(|(t, pure)| r.signatures as f64 / t / pure)
                        .collect(),
                );
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {:.0} % | {:.2} |",
                    r.backend,
                    r.shape.name(),
                    r.threads,
                    r.placement.name(),
                    r.tx_packages,
                    r.packages,
                    r.records,
                    r.signatures,
                    secs,
                    thousands(r.records as f64 / secs),
                    thousands(r.packages as f64 / secs),
                    thousands(r.signatures as f64 / secs),
                    100.0 * ratio,
                    r.retries as f64 / r.transactions.max(1) as f64,
                );
            }
            let _ = writeln!(s);
        }
        if !self.ledger.is_empty() {
            let _ = writeln!(
                s,
                "## Ledger\n\n`Ledger::transfer_batch`, one transaction per batch, random transfers among {LEDGER_ACCOUNTS} user accounts, unique idempotency keys, 1 thread; {rounds} rounds, each on a fresh database.\n\n| backend | transfers | batch | rejected | median s | median transfers/s | min | max |\n|---|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in &self.ledger {
                let secs = median(r.rounds.clone());
                let (lo, hi) = min_max(&r.rounds);
                let t = r.transfers as f64;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.2} | {} | {} | {} |",
                    r.backend,
                    r.transfers,
                    r.batch,
                    r.rejected,
                    secs,
                    thousands(t / secs),
                    thousands(t / hi),
                    thousands(t / lo),
                );
            }
        }
        s.trim_end().to_string()
    }
}

// ---- pure signature rate -----------------------------------------------------

/// Signatures per second of `verify_many` on batches of 64 distinct keys
/// and messages, `threads` threads each on its own batch, for `duration`.
fn pure_batch_rate(threads: usize, duration: Duration) -> f64 {
    let batches: Vec<Vec<(tally_core::PublicKey, [u8; 32], Signature)>> = (0..threads)
        .map(|t| {
            (0..SIG_BATCH_SIGNATURES)
                .map(|i| {
                    let k = key(Suite::Ed25519, format!("bench/batch/{t}/{i}").as_bytes());
                    let msg = tagged_hash(b"tally/v1/bench-msg", &[&(i as u64).to_be_bytes()]).0;
                    (k.public(), msg, k.sign(&msg))
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    let verified: usize = std::thread::scope(|s| {
        let handles: Vec<_> = batches
            .iter()
            .map(|b| {
                s.spawn(move || {
                    let checks: Vec<SigCheck<'_>> = b
                        .iter()
                        .map(|(k, m, sig)| SigCheck {
                            key: k,
                            msg: m,
                            sig,
                        })
                        .collect();
                    let mut n = 0usize;
                    while start.elapsed() < duration {
                        if verify_many(&checks).is_err() {
                            panic!("a benchmark signature did not verify");
                        }
                        n += checks.len();
                    }
                    n
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("batch thread panicked")))
            .sum()
    });
    verified as f64 / start.elapsed().as_secs_f64()
}

// ---- settlement --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    OneHop,
    EightHop,
    /// A one-hop package with confidential amounts (issue 12): its Issue
    /// and transfer commit to their values and carry audit seals to
    /// settlement's key; measured on the server's path only.
    Confidential,
}

impl Shape {
    /// Ancestry records of one package.
    fn ancestry(self) -> usize {
        match self {
            Shape::OneHop | Shape::Confidential => 1,
            Shape::EightHop => 8,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Shape::OneHop => "one hop (2 records)",
            Shape::EightHop => "eight hops (9 records)",
            Shape::Confidential => "confidential one hop (2 records)",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Shape::OneHop => "one-hop",
            Shape::EightHop => "eight-hop",
            Shape::Confidential => "confidential-one-hop",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Decode and verify inside the transaction, then register.
    Inside,
    /// Decode and verify each package of a chunk first (verification is
    /// pure), then register the chunk in one transaction.
    Before,
    /// As `Before`, but the signatures of the whole chunk are checked in
    /// one batch (`verify_packages_for_settlement`).
    BeforeJoint,
    /// As `BeforeJoint`, and the chunk registered with
    /// `Settlement::settle_batch` (a constant number of statements).
    BatchSettle,
    /// Worker *processes* (`tally bench worker`) on the settlement queue:
    /// HPKE opening, decoding and one signature batch per claimed batch
    /// outside the transaction, `settle_batch` + queue bookkeeping + the
    /// O(1) invariant assertion inside it. "threads" = processes.
    Processes,
    /// The path a running `tally central` takes: DCP sync requests
    /// (`Central::call` with `CentralRequest::Sync`), each a device's
    /// sealed upload of [`SYNC_UPLOAD_PACKAGES`] packages: one HPKE opening
    /// and one signature batch per upload before the transaction, then
    /// settlement, the upload and mailbox bookkeeping, the MDS outbox and
    /// the signed, stored answer inside it. "threads" = concurrent
    /// requests in one central process.
    CentralSync,
    /// As `CentralSync`, by `tally bench central-sync` processes, each a
    /// central bank on the one database. "threads" = processes.
    CentralSyncProcesses,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Inside => "inside the tx, per package",
            Placement::Before => "before the tx, per package",
            Placement::BeforeJoint => "before the tx, one batch per tx",
            Placement::BatchSettle => "before the tx, one batch per tx, settle_batch",
            Placement::Processes => "worker processes: sealed queue, settle_batch",
            Placement::CentralSync => {
                "the server's path: central sync requests, 8 packages per sealed upload"
            }
            Placement::CentralSyncProcesses => {
                "the server's path, central bank processes: sync requests, 8 packages per sealed upload"
            }
        }
    }
}

/// Renewal packages of one shape, encoded, with the Issues at their roots.
struct Prepared {
    shape: Shape,
    packages: Vec<Vec<u8>>,
    issues: Vec<Issue>,
}

fn signed_transfer(
    input: OutPoint,
    output: Output,
    nonce: [u8; 16],
    owner: &SecretKey,
) -> Transfer {
    let mut t = Transfer {
        inputs: vec![input],
        outputs: vec![output],
        nonce,
        counter: 1,
        signatures: Vec::new(),
        confidential: None,
        stream: None,
    };
    t.signatures = vec![owner.sign(&t.id().0)];
    t
}

/// Package `n` of a shape: a fresh chain of pseudonyms, every one of them
/// certified, ending in a transfer of the whole value to the DCP key (what
/// a device sends to renew a token).
fn renewal_package(scheme: &Scheme, shape: Shape, n: usize) -> (Package, Issue) {
    let keys: Vec<SecretKey> = (0..shape.ancestry())
        .map(|h| {
            key(
                Suite::Ed25519,
                format!("bench/{}/{n}/{h}", shape.label()).as_bytes(),
            )
        })
        .collect();
    let nonce = |h: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(
            &tagged_hash(
                b"tally/v1/bench-nonce",
                &[
                    shape.label().as_bytes(),
                    &(n as u64).to_be_bytes(),
                    &(h as u64).to_be_bytes(),
                ],
            )
            .0[..16],
        );
        b
    };
    let issue = Issue::sign(
        &scheme.dcp,
        n as u64 + 1,
        scheme.epoch + 20,
        vec![Output {
            value: Amount(TOKEN_VALUE),
            owner: keys[0].public(),
        }],
    );
    let mut ancestry = vec![Record::Issue(issue.clone())];
    let mut prev = OutPoint {
        record: issue.id(),
        index: 0,
    };
    for h in 1..keys.len() {
        let t = signed_transfer(
            prev,
            Output {
                value: Amount(TOKEN_VALUE),
                owner: keys[h].public(),
            },
            nonce(h),
            &keys[h - 1],
        );
        prev = OutPoint {
            record: t.id(),
            index: 0,
        };
        ancestry.push(Record::Transfer(t));
    }
    let last = keys.len() - 1;
    let transfer = signed_transfer(
        prev,
        Output {
            value: Amount(TOKEN_VALUE),
            owner: scheme.dcp.public(),
        },
        nonce(keys.len()),
        &keys[last],
    );
    let certificates = keys
        .iter()
        .map(|k| scheme.certify(k.public(), PHONE, 0))
        .collect();
    (
        Package {
            transfer,
            ancestry,
            certificates,
        },
        issue,
    )
}

/// What confidential packages are made with: the range generators of the
/// bench central bank's confidential policy and its audit key.
struct ConfidentialSetup {
    gens: tally_core::confidential::RangeGens,
    bits: tally_core::confidential::RangeBits,
    audit_key: [u8; 32],
}

fn confidential_setup() -> ConfidentialSetup {
    use tally_core::confidential::{RANGE_OUTPUTS_MAX, RangeBits, RangeGens};
    let policy = Store::sqlite_memory()
        .map_err(Failure::from)
        .and_then(|s| bench_central(s, &Scheme::new(Suite::Ed25519)))
        .and_then(|b| b.use_confidential_amounts().map_err(central_failure))
        .unwrap_or_else(|e| panic!("the bench's confidential policy: {e}"));
    let bits = RangeBits::for_bound(policy.holding_bound());
    ConfidentialSetup {
        gens: RangeGens::new(bits, RANGE_OUTPUTS_MAX)
            .unwrap_or_else(|e| panic!("range generators: {e:?}")),
        bits,
        audit_key: bench_opening_key().public(),
    }
}

/// Confidential package `n`: an Issue of [`TOKEN_VALUE`] to a fresh
/// certified key, then the whole value to the DCP key, both committed
/// and sealed to settlement's audit key.
fn confidential_package(scheme: &Scheme, c: &ConfidentialSetup, n: usize) -> (Package, Issue) {
    use tally_core::confidential_record::{NewOutput, build_transfer, sign_issue};
    let k = key(Suite::Ed25519, format!("bench/confidential/{n}").as_bytes());
    let mut rng = tally_core::testkit::TestEntropy::new(format!("bench/c/{n}").as_bytes());
    let value = Amount(TOKEN_VALUE);
    let (issue, openings) = tally_core::crypto::infallible(sign_issue(
        &scheme.dcp,
        &c.audit_key,
        n as u64 + 1,
        scheme.epoch + 20,
        &[NewOutput {
            owner: k.public(),
            value,
        }],
        &mut rng,
    ))
    .unwrap_or_else(|e| panic!("confidential Issue: {e:?}"));
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(
        &tagged_hash(b"tally/v1/bench-cnonce", &[&(n as u64).to_be_bytes()]).0[..16],
    );
    let built = build_transfer(
        &c.gens,
        &c.audit_key,
        &[(
            OutPoint {
                record: issue.id(),
                index: 0,
            },
            k.public(),
            openings[0].clone(),
        )],
        &[NewOutput {
            owner: scheme.dcp.public(),
            value,
        }],
        nonce,
        1,
        &|pk| (*pk == k.public()).then(|| k.clone()),
        &mut rng,
    )
    .unwrap_or_else(|e| panic!("confidential transfer: {e:?}"));
    (
        Package {
            transfer: built.transfer,
            ancestry: vec![Record::Issue(issue.clone().without_openings())],
            certificates: vec![scheme.certify(k.public(), PHONE, 0)],
        },
        issue,
    )
}

fn prepare(scheme: &Scheme, shape: Shape, records: usize) -> Prepared {
    let per_package = shape.ancestry() + 1;
    let mut count = records.div_ceil(per_package).max(2);
    // A confidential PAY costs milliseconds to prove: a quarter of the
    // records is enough for a rate (settled at about a third of the
    // transparent rate, so it runs about as long as the others).
    let confidential = (shape == Shape::Confidential).then(confidential_setup);
    if confidential.is_some() {
        count = (count / 4).max(2);
    }
    progress(&format!(
        "preparing {count} {} renewal packages",
        shape.label()
    ));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let per_worker = count.div_ceil(workers);
    let confidential = confidential.as_ref();
    let parts: Vec<Vec<(Vec<u8>, Issue)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    (w * per_worker..((w + 1) * per_worker).min(count))
                        .map(|n| {
                            let (p, i) = match confidential {
                                Some(c) => confidential_package(scheme, c, n),
                                None => renewal_package(scheme, shape, n),
                            };
                            (p.to_cbor(), i)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("preparation panicked")))
            .collect()
    });
    let (packages, issues) = parts.into_iter().flatten().unzip();
    Prepared {
        shape,
        packages,
        issues,
    }
}

/// What a DCP load did before these tokens reached settlement: every
/// Issue registered, its value minted and moved into the offline float.
fn book_issues(store: &Store, issues: &[Issue]) -> Result<(), Failure> {
    let confidential_bits = issues
        .iter()
        .any(|i| i.confidential.is_some())
        .then(|| confidential_setup().bits);
    store.transact(|tx| {
        Ledger::ensure_account(tx, DCP_ACCOUNT, AccountKind::DcpSettlement)?;
        Ok::<_, Failure>(())
    })?;
    for (c, chunk) in issues.chunks(SETUP_TX_ISSUES_MAX).enumerate() {
        // A confidential Issue's value is what its audit seal opens to.
        let audited: Vec<Option<tally_core::confidential_record::AuditedIssue>> = chunk
            .iter()
            .map(|i| {
                i.confidential.as_ref().map(|_| {
                    i.open_audit(
                        &bench_opening_key(),
                        confidential_bits.unwrap_or_else(|| panic!("range bits")),
                    )
                    .unwrap_or_else(|e| panic!("bench audit seal: {e:?}"))
                })
            })
            .collect();
        let value: u64 = chunk
            .iter()
            .zip(&audited)
            .map(|(i, a)| match a {
                Some(a) => a.value().0,
                None => i.outputs.iter().map(|o| o.value.0).sum(),
            })
            .sum();
        store.transact(|tx| {
            for (i, a) in chunk.iter().zip(&audited) {
                match a {
                    Some(a) => Settlement::register_audited_issue(tx, DCP_ID, a)?,
                    None => Settlement::register_issue(tx, DCP_ID, i)?,
                }
            }
            Ledger::mint(tx, &format!("bench-mint:{c}"), DCP_ACCOUNT, value)?;
            Ledger::transfer(
                tx,
                &TransferRequest {
                    idem: format!("bench-load:{c}"),
                    debit: DCP_ACCOUNT.into(),
                    credit: ledger::OFFLINE_FLOAT.into(),
                    amount: value,
                    code: code::LOAD,
                },
            )?;
            Ok::<_, Failure>(())
        })?;
    }
    Ok(())
}

/// Times a transaction is started again after `Store::transact` gave up
/// on serialization conflicts.
const TX_GIVE_UPS_MAX: usize = 100;

/// `Store::transact`, started again when it gave up on serialization
/// conflicts (what a client of the service would do).
fn transact_until_done<R>(
    store: &Store,
    mut f: impl FnMut(&mut dyn Tx) -> Result<R, Failure>,
) -> Result<R, Failure> {
    let mut gave_up = 0;
    loop {
        match store.transact(&mut f) {
            Err(e) if e.is_conflict() && gave_up < TX_GIVE_UPS_MAX => gave_up += 1,
            r => return r,
        }
    }
}

/// What one settlement worker did.
#[derive(Default)]
struct WorkerTally {
    signatures: usize,
    transactions: usize,
    /// Attempts beyond the first (serialization conflicts).
    retries: usize,
}

/// Settles `packages` (global indices from `first`).
fn settle_worker(
    store: &Store,
    trust: &TrustStore,
    packages: &[Vec<u8>],
    first: usize,
    placement: Placement,
    tx_packages: usize,
) -> Result<WorkerTally, Failure> {
    let params = VerifyParams {
        epoch: 0,
        history_records_max: SETTLEMENT_RECORDS_MAX,
        signature_batch_max: usize::MAX,
    };
    let mut cache = BoundedCertCache::new(100_000);
    let mut done = WorkerTally::default();
    for (c, chunk) in packages.chunks(tx_packages).enumerate() {
        let mut attempts = 0;
        let base = first + c * tx_packages;
        let check = |v: &VerifiedPackage, o: &tally_ledger::SettlementOutcome| {
            let inputs: usize = v
                .package()
                .ancestry
                .iter()
                .map(|r| r.inputs().len())
                .sum::<usize>()
                + v.package().transfer.inputs.len();
            if o.registered != inputs || !o.double_spends.is_empty() {
                return Err(Failure::Check(format!(
                    "package registered {} of {inputs} inputs, {} double spends",
                    o.registered,
                    o.double_spends.len()
                )));
            }
            Ok(())
        };
        match placement {
            Placement::Processes | Placement::CentralSync | Placement::CentralSyncProcesses => {
                return Err(Failure::Check(
                    "worker processes and the central bank settle on their own".into(),
                ));
            }
            Placement::BatchSettle => {
                let pkgs = chunk
                    .iter()
                    .map(|b| Package::from_cbor(b))
                    .collect::<Result<Vec<_>, _>>()?;
                let verified = verify_packages_for_settlement(pkgs, trust, params, &mut cache)
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                done.signatures += verified.iter().map(|v| v.signature_checks()).sum::<usize>();
                let idems: Vec<String> = (0..verified.len())
                    .map(|i| format!("bench:{}", base + i))
                    .collect();
                let items: Vec<(&VerifiedPackage, &str)> = verified
                    .iter()
                    .zip(&idems)
                    .map(|(v, i)| (v, i.as_str()))
                    .collect();
                transact_until_done(store, |tx| {
                    attempts += 1;
                    let outs = Settlement::settle_batch(tx, &items)?;
                    for (v, o) in verified.iter().zip(outs) {
                        check(v, &o?)?;
                    }
                    Ledger::assert_invariant(tx)?;
                    Ok::<_, Failure>(())
                })?;
            }
            Placement::Before | Placement::BeforeJoint => {
                let mut verified = Vec::with_capacity(chunk.len());
                if placement == Placement::Before {
                    for bytes in chunk {
                        let pkg = Package::from_cbor(bytes)?;
                        verified.push(verify_package_for_settlement(
                            pkg, trust, params, &mut cache,
                        )?);
                    }
                } else {
                    let pkgs = chunk
                        .iter()
                        .map(|b| Package::from_cbor(b))
                        .collect::<Result<Vec<_>, _>>()?;
                    for v in verify_packages_for_settlement(pkgs, trust, params, &mut cache) {
                        verified.push(v?);
                    }
                }
                done.signatures += verified.iter().map(|v| v.signature_checks()).sum::<usize>();
                transact_until_done(store, |tx| {
                    attempts += 1;
                    for (i, v) in verified.iter().enumerate() {
                        let o = Settlement::settle(tx, v, &format!("bench:{}", base + i))?;
                        check(v, &o)?;
                    }
                    Ok::<_, Failure>(())
                })?;
            }
            Placement::Inside => {
                done.signatures += transact_until_done(store, |tx| {
                    attempts += 1;
                    let mut sigs = 0;
                    for (i, bytes) in chunk.iter().enumerate() {
                        let pkg = Package::from_cbor(bytes)?;
                        // A retried attempt verifies again; no cache, so
                        // every attempt checks every signature.
                        let v = verify_package_for_settlement(
                            pkg,
                            trust,
                            params,
                            &mut tally_core::verify::NoCache,
                        )?;
                        sigs += v.signature_checks();
                        let o = Settlement::settle(tx, &v, &format!("bench:{}", base + i))?;
                        check(&v, &o)?;
                    }
                    Ok::<_, Failure>(sigs)
                })?;
            }
        }
        done.transactions += 1;
        done.retries += attempts - 1;
    }
    Ok(done)
}

fn count(tx: &mut dyn Tx, table: &str) -> Result<i64, Failure> {
    Ok(tx
        .query_one(
            &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"),
            &[],
        )?
        .ok_or_else(|| Failure::Check(format!("no count of {table}")))?
        .int(0)?)
}

fn settle_run(
    target: &Target,
    scheme: &Scheme,
    prepared: &Prepared,
    threads: usize,
    placement: Placement,
    tx_packages: usize,
) -> Result<(f64, WorkerTally), Failure> {
    let db = BenchDb::fresh(target)?;
    let store = db.store();
    book_issues(store, &prepared.issues)?;
    let trust = scheme.trust();
    let per_thread = prepared.packages.len().div_ceil(threads);
    if placement == Placement::Processes {
        return settle_processes(&db, scheme, prepared, threads, tx_packages);
    }
    if placement == Placement::CentralSync {
        return central_sync(&db, scheme, prepared, threads, false);
    }
    if placement == Placement::CentralSyncProcesses {
        return central_sync(&db, scheme, prepared, threads, true);
    }
    let start = Instant::now();
    let done: WorkerTally = std::thread::scope(|s| {
        let handles: Vec<_> = prepared
            .packages
            .chunks(per_thread)
            .enumerate()
            .map(|(w, part)| {
                let trust = &trust;
                s.spawn(move || {
                    settle_worker(store, trust, part, w * per_thread, placement, tx_packages)
                })
            })
            .collect();
        let mut total = WorkerTally::default();
        for h in handles {
            let w = h
                .join()
                .unwrap_or_else(|_| Err(Failure::Check("worker panicked".into())))?;
            total.signatures += w.signatures;
            total.transactions += w.transactions;
            total.retries += w.retries;
        }
        Ok::<_, Failure>(total)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let packages = prepared.packages.len();
    // Every record a transfer consumed is registered, nothing twice, and
    // the books balance.
    let transfers = packages * prepared.shape.ancestry();
    store.transact(|tx| {
        let spent = count(tx, "spent")?;
        let settled = count(tx, "settled_records")?;
        let doubles = count(tx, "double_spends")?;
        if spent != transfers as i64 || settled != transfers as i64 || doubles != 0 {
            return Err(Failure::Check(format!(
                "expected {transfers} spent outputs and settled transfers, found {spent} and {settled}, {doubles} double spends"
            )));
        }
        let inv = Ledger::invariant(tx)?;
        if !inv.holds() {
            return Err(Failure::Check(format!("ledger invariant: {inv:?}")));
        }
        Ok(())
    })?;
    Ok((seconds, done))
}

/// Settlement's opening key in the bench (fixed seed, so it is public):
/// the bench seals its queued packages to it.
pub fn bench_opening_key() -> OpeningKey {
    OpeningKey::from_seed(&tagged_hash(b"tally/v1/bench-opening", &[]).0)
}

/// `tally bench hpke`: opens of one sealed body per second, one thread,
/// for 2 s, beside the pure Ed25519 batch rate of the same moment.
fn hpke_rate(bytes: usize) -> String {
    let scheme = Scheme::new(Suite::Ed25519);
    let opening = bench_opening_key();
    let sealing = SealingKey::sign(&scheme.root, opening.public());
    let mut entropy = tally_core::testkit::TestEntropy::new(b"bench-hpke");
    let sealed = match seal(
        &sealing,
        SealedKind::Redemption,
        &vec![7u8; bytes],
        &mut entropy,
    ) {
        Ok(s) => s,
        Err(e) => return format!("sealing failed: {e}"),
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        if opening.open(SealedKind::Redemption, &sealed).is_err() {
            return "opening failed".into();
        }
        n += 1;
    }
    let opens = n as f64 / start.elapsed().as_secs_f64();
    let sigs = pure_batch_rate(1, SIG_BATCH_DURATION);
    format!(
        "| HPKE opens/s (1 thread, {bytes} B) | µs per open | pure Ed25519 batch signatures/s (1 thread) | µs per signature |\n|---:|---:|---:|---:|\n| {} | {:.1} | {} | {:.1} |\n",
        thousands(opens),
        1e6 / opens,
        thousands(sigs),
        1e6 / sigs
    )
}

/// `tally bench worker`.
fn bench_worker(
    args: &crate::worker::WorkerArgs,
    schema: Option<&str>,
    start_at_ms: Option<i64>,
) -> Result<String, CliError> {
    let opts = args.options()?;
    let store = match schema {
        Some(s) => Store::postgres(&args.database_url, Some(s)),
        None => Store::open(&args.database_url),
    }
    .map_err(|e| CliError::failed(format!("cannot open the bench database: {e}")))?;
    let scheme = Scheme::new(Suite::Ed25519);
    let trust = scheme.trust();
    let opening = bench_opening_key();
    let params = VerifyParams {
        epoch: 0,
        history_records_max: SETTLEMENT_RECORDS_MAX,
        signature_batch_max: usize::MAX,
    };
    let mut cache = tally_central::central::ServerCertCache::new(100_000);
    if let Some(t) = start_at_ms {
        let wait = t - crate::worker::unix_ms();
        if wait > 0 {
            std::thread::sleep(Duration::from_millis(wait as u64));
        }
    }
    let open = |b: &[u8]| {
        opening
            .open(SealedKind::Redemption, b)
            .ok()
            .and_then(|p| Package::from_cbor(&p).ok())
    };
    let report = run_worker(&store, &opts, &crate::worker::unix_ms, &mut |claimed| {
        Ok(crate::worker::prepare(
            claimed, &open, &trust, params, &mut cache,
        ))
    })
    .map_err(|e| CliError::failed(format!("settlement failed: {e}")))?;
    Ok(crate::worker::report_line(&opts.name, &report))
}

/// Parses `key=value` fields of a worker's report line.
fn report_field(line: &str, key: &str) -> Result<i64, Failure> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure::Check(format!("worker report without {key}: {line}")))
}

/// Worker processes on the settlement queue: packages sealed and queued
/// (untimed), then `processes` children of this binary settle them; the
/// time is from the first claim to the last settled batch over all of
/// them.
fn settle_processes(
    db: &BenchDb,
    scheme: &Scheme,
    prepared: &Prepared,
    processes: usize,
    tx_packages: usize,
) -> Result<(f64, WorkerTally), Failure> {
    let store = db.store();
    let sealing = SealingKey::sign(&scheme.root, bench_opening_key().public());
    let mut entropy = tally_core::testkit::TestEntropy::new(b"bench-seal");
    let sealed = prepared
        .packages
        .iter()
        .map(|p| seal(&sealing, SealedKind::Redemption, p, &mut entropy))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Check(format!("sealing: {e}")))?;
    for chunk in sealed.chunks(SETUP_TX_ISSUES_MAX) {
        store.transact(|tx| Ok::<_, Failure>(SettlementQueue::enqueue(tx, chunk)?))?;
    }
    let exe = std::env::current_exe().map_err(|e| Failure::Check(e.to_string()))?;
    // Every worker starts claiming at the same instant, after all have
    // connected (start-up is not timed either way).
    let start_at = crate::worker::unix_ms() + 1_000;
    let children = (0..processes)
        .map(|k| {
            let mut c = std::process::Command::new(&exe);
            c.args(["bench", "worker", "--until-empty", "--lease-ms", "60000"])
                .args(["--batch", &tx_packages.to_string()])
                .args(["--lane", &format!("{k}/{processes}")])
                .args(["--name", &format!("bench-{k}")])
                .args(["--start-at-ms", &start_at.to_string()])
                .args(db.worker_args())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit());
            c.spawn()
                .map_err(|e| Failure::Check(format!("cannot start a worker: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut done = WorkerTally::default();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut settled = 0;
    for c in children {
        let out = c
            .wait_with_output()
            .map_err(|e| Failure::Check(format!("worker: {e}")))?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            return Err(Failure::Check(format!(
                "worker failed ({}): {line}",
                out.status
            )));
        }
        settled += report_field(&line, "settled")? as usize;
        done.signatures += report_field(&line, "signatures")? as usize;
        done.transactions += report_field(&line, "batches")? as usize;
        if report_field(&line, "refused")? != 0 || report_field(&line, "double_spends")? != 0 {
            return Err(Failure::Check(format!(
                "a bench package was refused: {line}"
            )));
        }
        let (f, l) = (
            report_field(&line, "first_claim_ms")?,
            report_field(&line, "last_settled_ms")?,
        );
        if f > 0 {
            first = first.min(f);
            last = last.max(l);
        }
    }
    if settled != prepared.packages.len() || first > last {
        return Err(Failure::Check(format!(
            "workers settled {settled} of {} packages",
            prepared.packages.len()
        )));
    }
    let transfers = prepared.packages.len() * prepared.shape.ancestry();
    store.transact(|tx| {
        let spent = count(tx, "spent")?;
        let results = count(tx, "settlement_results")?;
        let pending = SettlementQueue::pending(tx)?;
        if spent != transfers as i64 || results != prepared.packages.len() as i64 || pending != 0 {
            return Err(Failure::Check(format!(
                "expected {transfers} spent outputs and {} results, found {spent} and {results}, {pending} pending",
                prepared.packages.len()
            )));
        }
        let inv = Ledger::invariant(tx)?;
        if !inv.holds() {
            return Err(Failure::Check(format!("ledger invariant: {inv:?}")));
        }
        Ok(())
    })?;
    Ok(((last - first) as f64 / 1000.0, done))
}

/// A central bank on the bench database with the bench's keys: the test
/// scheme's root and DCP 1, the development settlement key, the bench's
/// opening key. The MDS is its own process here (`tally central
/// --external-mds`): its outbox rows are written, not ingested.
fn bench_central(store: Store, scheme: &Scheme) -> Result<tally_central::CentralBank, Failure> {
    let keys = tally_central::CentralKeys {
        root: std::sync::Arc::new(tally_central::SoftwareSigner::new(scheme.root.clone())),
        settlement: tally_central::NodeKeys::development().settlement,
        opening: std::sync::Arc::new(bench_opening_key()),
    };
    tally_central::CentralBank::open_with_mds(
        store,
        None,
        keys,
        tally_central::development_escrow_key(),
        None,
        &[(DCP_ID, scheme.dcp.public())],
    )
    .map_err(central_failure)
}

fn central_failure(e: tally_central::BackofficeError) -> Failure {
    Failure::Check(format!("central bank: {e}"))
}

/// What a central bank process answered: packages settled (double spends
/// included), double spends found, packages refused, requests refused.
#[derive(Default, Clone, Copy)]
struct SyncTally {
    settled: u64,
    double_spends: u64,
    refused: u64,
    failed: u64,
}

/// [`send_syncs`] from `senders` concurrent request threads (each a
/// contiguous share of the requests), totalled.
fn send_syncs_in_flight(
    bank: &tally_central::CentralBank,
    root: &tally_core::PublicKey,
    requests: &[(tally_core::Hash32, tally_central::CentralRequest)],
    senders: usize,
) -> Result<SyncTally, Failure> {
    let per = requests.len().div_ceil(senders.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = requests
            .chunks(per)
            .map(|part| s.spawn(move || send_syncs(bank, root, part)))
            .collect();
        let mut total = SyncTally::default();
        for h in handles {
            let t = h
                .join()
                .unwrap_or_else(|_| Err(Failure::Check("request thread panicked".into())))?;
            total.settled += t.settled;
            total.double_spends += t.double_spends;
            total.refused += t.refused;
            total.failed += t.failed;
        }
        Ok(total)
    })
}

/// Sends `requests` as DCP 1 and checks every signed answer.
fn send_syncs(
    bank: &tally_central::CentralBank,
    root: &tally_core::PublicKey,
    requests: &[(tally_core::Hash32, tally_central::CentralRequest)],
) -> Result<SyncTally, Failure> {
    use tally_central::Central as _;
    let mut t = SyncTally::default();
    for (op, req) in requests {
        let reply_key = tagged_hash(b"tally/v1/bench-reply", &[&op.0]);
        // A refused request is counted (the caller decides whether one
        // may be refused): the others go on.
        let signed = match bank.call(DCP_ID, op, &reply_key, req) {
            Ok(signed) => signed,
            Err(e) if e.is_final() => {
                t.failed += 1;
                continue;
            }
            Err(e) => return Err(central_failure(e)),
        };
        let res =
            tally_central::SettlementResult::open(&signed, &bank.settlement_key().key, root, op)
                .map_err(central_failure)?;
        t.settled += u64::from(res.settled);
        t.double_spends += u64::from(res.double_spends);
        t.refused += u64::from(res.refused);
    }
    Ok(t)
}

/// The server's path: DCP sync requests to a central bank on the bench
/// database, `threads` at a time in one process, or by `threads` central
/// bank processes (`processes`), each request carrying one device's sealed
/// upload of [`SYNC_UPLOAD_PACKAGES`] packages (sealed before the clock
/// starts).
fn central_sync(
    db: &BenchDb,
    scheme: &Scheme,
    prepared: &Prepared,
    threads: usize,
    processes: bool,
) -> Result<(f64, WorkerTally), Failure> {
    use tally_core::dcp::{SyncUpload, reports_digest};
    let bank = bench_central(db.reopen()?, scheme)?;
    if prepared.shape == Shape::Confidential {
        bank.use_confidential_amounts().map_err(central_failure)?;
    }
    // Signature checks per package, counted as the other rows count them
    // (a fresh certificate cache; every package has its own certificates).
    let (trust, params) = bank.settlement_verifier().map_err(central_failure)?;
    let mut signatures = 0;
    let mut cache = BoundedCertCache::new(100_000);
    for bytes in &prepared.packages {
        let v =
            verify_package_for_settlement(Package::from_cbor(bytes)?, &trust, params, &mut cache)?;
        signatures += v.signature_checks();
    }
    let mut entropy = tally_core::testkit::TestEntropy::new(b"bench-sync");
    let sealing = bank.sealing_key();
    let no_reports = reports_digest(&[]);
    let requests = prepared
        .packages
        .chunks(SYNC_UPLOAD_PACKAGES)
        .enumerate()
        .map(|(n, chunk)| {
            let upload = SyncUpload {
                packages: chunk.to_vec(),
                reports: Vec::new(),
            };
            let sealed = seal(
                &sealing,
                SealedKind::SyncUpload,
                &upload.to_cbor(),
                &mut entropy,
            )
            .map_err(|e| Failure::Check(format!("sealing: {e}")))?;
            let op = tagged_hash(b"tally/v1/bench-sync-op", &[&(n as u64).to_be_bytes()]);
            let req = tally_central::CentralRequest::Sync {
                sealed,
                reports: no_reports,
                mailbox: tagged_hash(b"tally/v1/bench-mailbox", &[&op.0]),
                last_sync: 0,
            };
            Ok((op, req))
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let root = scheme.root.public();
    let (seconds, settled) = if processes {
        drop(bank);
        central_sync_processes(db, &requests, threads)?
    } else {
        let bank = bank.limit_verification(threads);
        let start = Instant::now();
        let tally =
            send_syncs_in_flight(&bank, &root, &requests, threads * SYNC_IN_FLIGHT_PER_CORE)?;
        (start.elapsed().as_secs_f64(), tally)
    };
    if settled.refused != 0 || settled.double_spends != 0 || settled.failed != 0 {
        return Err(Failure::Check(format!(
            "the central bank refused {} bench packages and {} requests and found {} double spends",
            settled.refused, settled.failed, settled.double_spends
        )));
    }
    let settled = settled.settled;
    if settled != prepared.packages.len() as u64 {
        return Err(Failure::Check(format!(
            "the central bank settled {settled} of {} packages",
            prepared.packages.len()
        )));
    }
    let transfers = prepared.packages.len() * prepared.shape.ancestry();
    db.store().transact(|tx| {
        let spent = count(tx, "spent")?;
        if spent != transfers as i64 {
            return Err(Failure::Check(format!(
                "expected {transfers} spent outputs, found {spent}"
            )));
        }
        let inv = Ledger::invariant(tx)?;
        if !inv.holds() {
            return Err(Failure::Check(format!("ledger invariant: {inv:?}")));
        }
        Ok(())
    })?;
    Ok((
        seconds,
        WorkerTally {
            signatures,
            transactions: requests.len(),
            retries: 0,
        },
    ))
}

/// `processes` children (`tally bench central-sync`), each a central bank
/// on the bench database answering its part of `requests`; the time is
/// from the first request to the last answer over all of them.
fn central_sync_processes(
    db: &BenchDb,
    requests: &[(tally_core::Hash32, tally_central::CentralRequest)],
    processes: usize,
) -> Result<(f64, SyncTally), Failure> {
    let file = std::env::temp_dir().join(format!("tally-bench-sync-{}.cbor", unique_suffix()));
    let mut w = tally_core::codec::Writer::new();
    w.array(requests.len());
    for (op, req) in requests {
        w.array(2);
        w.bytes(&op.0);
        w.bytes(&req.to_cbor());
    }
    std::fs::write(&file, w.into_bytes())
        .map_err(|e| Failure::Check(format!("{}: {e}", file.display())))?;
    let exe = std::env::current_exe().map_err(|e| Failure::Check(e.to_string()))?;
    let start_at = crate::worker::unix_ms() + 1_500;
    let args = db.worker_args();
    let children = (0..processes)
        .map(|k| {
            let mut c = std::process::Command::new(&exe);
            c.args(["bench", "central-sync"])
                .arg("--requests")
                .arg(&file)
                .args(["--part", &format!("{k}/{processes}")])
                .args(["--start-at-ms", &start_at.to_string()])
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit());
            c.spawn()
                .map_err(|e| Failure::Check(format!("cannot start a central bank: {e}")))
        })
        .collect::<Result<Vec<_>, _>>();
    let children = match children {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
    };
    let mut tally = SyncTally::default();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let mut failure = None;
    for c in children {
        let out = c
            .wait_with_output()
            .map_err(|e| Failure::Check(format!("central bank process: {e}")))?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            failure = Some(Failure::Check(format!(
                "central bank process failed ({}): {line}",
                out.status
            )));
            continue;
        }
        tally.settled += report_field(&line, "settled")? as u64;
        tally.double_spends += report_field(&line, "double_spends")? as u64;
        tally.refused += report_field(&line, "refused")? as u64;
        tally.failed += report_field(&line, "failed")? as u64;
        first = first.min(report_field(&line, "first_ms")?);
        last = last.max(report_field(&line, "last_ms")?);
    }
    let _ = std::fs::remove_file(&file);
    if let Some(f) = failure {
        return Err(f);
    }
    Ok(((last - first).max(0) as f64 / 1000.0, tally))
}

/// `tally bench central-sync`: one central bank process of the
/// server-path rows.
fn central_sync_child(
    database_url: &str,
    schema: Option<&str>,
    requests: &std::path::Path,
    part: &str,
    start_at_ms: i64,
) -> Result<String, Failure> {
    let (k, n) = part
        .split_once('/')
        .and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|(k, n)| *n > 0 && k < n)
        .ok_or_else(|| Failure::Check(format!("--part {part}: expected K/N with K < N")))?;
    let store = match schema {
        Some(s) => Store::postgres(database_url, Some(s))?,
        None => Store::open(database_url)?,
    };
    let scheme = Scheme::new(Suite::Ed25519);
    let bank = bench_central(store, &scheme)?;
    let bytes = std::fs::read(requests)
        .map_err(|e| Failure::Check(format!("{}: {e}", requests.display())))?;
    let mut r = tally_core::codec::Reader::new(&bytes);
    let count = r.array_max(1 << 20)?;
    let mut all = Vec::with_capacity(count);
    for _ in 0..count {
        r.array(2)?;
        let op = tally_core::Hash32(r.bytes_array()?);
        let req = tally_central::CentralRequest::from_cbor(r.bytes_max(usize::MAX)?)?;
        all.push((op, req));
    }
    let per = all.len().div_ceil(n);
    let mine = all.chunks(per.max(1)).nth(k).unwrap_or(&[]);
    let wait = start_at_ms - crate::worker::unix_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64));
    }
    let bank = bank.limit_verification(1);
    let first = crate::worker::unix_ms();
    let t = send_syncs_in_flight(&bank, &scheme.root.public(), mine, SYNC_IN_FLIGHT_PER_CORE)?;
    let last = crate::worker::unix_ms();
    Ok(format!(
        "settled={} double_spends={} refused={} failed={} requests={} first_ms={first} last_ms={last}",
        t.settled,
        t.double_spends,
        t.refused,
        t.failed,
        mine.len()
    ))
}

struct SettlementOptions {
    /// Records per package shape.
    records: usize,
    rounds: usize,
    tx_packages: usize,
    /// Only placements whose name contains this.
    only: Option<String>,
}

fn settlement(
    target: &Target,
    opts: &SettlementOptions,
    report: &mut Report,
) -> Result<(), CliError> {
    let scheme = Scheme::new(Suite::Ed25519);
    let rounds = opts.rounds;
    for shape in [Shape::OneHop, Shape::EightHop, Shape::Confidential] {
        let confidential = shape == Shape::Confidential;
        if confidential
            && opts
                .only
                .as_deref()
                .is_some_and(|o| !Placement::CentralSync.name().contains(o))
        {
            continue;
        }
        let prepared = prepare(&scheme, shape, opts.records);
        for threads in [1, 2] {
            for placement in [
                Placement::Inside,
                Placement::BeforeJoint,
                Placement::BatchSettle,
                Placement::Processes,
                Placement::CentralSync,
                Placement::CentralSyncProcesses,
            ] {
                if opts
                    .only
                    .as_deref()
                    .is_some_and(|o| !placement.name().contains(o))
                    || (confidential && placement != Placement::CentralSync)
                {
                    continue;
                }
                progress(&format!(
                    "settlement on {}: {}, {threads} thread(s), verification {}, {rounds} rounds",
                    target.backend(),
                    shape.label(),
                    placement.name()
                ));
                let mut row = SettlementRow {
                    backend: target.backend(),
                    shape,
                    threads,
                    placement,
                    packages: prepared.packages.len(),
                    tx_packages: if matches!(
                        placement,
                        Placement::CentralSync | Placement::CentralSyncProcesses
                    ) {
                        SYNC_UPLOAD_PACKAGES
                    } else {
                        opts.tx_packages
                    },
                    records: prepared.packages.len() * (shape.ancestry() + 1),
                    signatures: 0,
                    transactions: 0,
                    retries: 0,
                    rounds: Vec::new(),
                };
                for _ in 0..rounds {
                    let pure = report.batch_rate(threads);
                    let (secs, done) = settle_run(
                        target,
                        &scheme,
                        &prepared,
                        threads,
                        placement,
                        opts.tx_packages,
                    )?;
                    row.signatures = done.signatures;
                    row.transactions += done.transactions;
                    row.retries += done.retries;
                    row.rounds.push((secs, pure));
                }
                report.settlement.push(row);
            }
        }
    }
    Ok(())
}

// ---- ledger ------------------------------------------------------------------

/// xorshift64*: deterministic transfers, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn user(i: u64) -> String {
    format!("user:bench-{i}")
}

fn ledger_bench(
    target: &Target,
    transfers: usize,
    batch: usize,
    rounds: usize,
    report: &mut Report,
) -> Result<(), CliError> {
    if batch == 0 || transfers == 0 {
        return Err(CliError::usage("--transfers and --batch must be positive"));
    }
    progress(&format!(
        "ledger on {}: {transfers} transfers in batches of {batch}, {rounds} rounds",
        target.backend()
    ));
    let mut row = LedgerRow {
        backend: target.backend(),
        transfers,
        batch,
        rejected: 0,
        rounds: Vec::new(),
    };
    for _ in 0..rounds {
        let (secs, rejected) = ledger_run(target, transfers, batch)?;
        row.rounds.push(secs);
        row.rejected = rejected;
    }
    report.ledger.push(row);
    Ok(())
}

/// One round on a fresh database: (seconds, rejected transfers).
fn ledger_run(target: &Target, transfers: usize, batch: usize) -> Result<(f64, usize), Failure> {
    let db = BenchDb::fresh(target)?;
    let store = db.store();
    let accounts = LEDGER_ACCOUNTS as u64;
    store.transact(|tx| {
        Ledger::ensure_account(tx, DCP_ACCOUNT, AccountKind::DcpSettlement)?;
        Ledger::mint(
            tx,
            "bench-mint",
            DCP_ACCOUNT,
            LEDGER_OPENING_BALANCE * accounts,
        )?;
        for i in 0..accounts {
            Ledger::open_account(tx, &user(i), AccountKind::User)?;
            Ledger::transfer(
                tx,
                &TransferRequest {
                    idem: format!("bench-open:{i}"),
                    debit: DCP_ACCOUNT.into(),
                    credit: user(i),
                    amount: LEDGER_OPENING_BALANCE,
                    code: code::TRANSFER,
                },
            )?;
        }
        Ok::<_, Failure>(())
    })?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let requests: Vec<TransferRequest> = (0..transfers)
        .map(|n| {
            let d = rng.below(accounts);
            let c = (d + 1 + rng.below(accounts - 1)) % accounts;
            TransferRequest {
                idem: format!("bench:{n}"),
                debit: user(d),
                credit: user(c),
                amount: 1 + rng.below(LEDGER_AMOUNT_MAX),
                code: code::TRANSFER,
            }
        })
        .collect();
    let before = store.transact(|tx| Ok::<_, Failure>(Ledger::invariant(tx)?.journal_entries))?;
    let start = Instant::now();
    let mut rejected = 0;
    for b in requests.chunks(batch) {
        let results = store.transact(|tx| Ok::<_, Failure>(Ledger::transfer_batch(tx, b)?))?;
        rejected += results.iter().filter(|r| r.is_err()).count();
    }
    let seconds = start.elapsed().as_secs_f64();
    store.transact(|tx| {
        let inv = Ledger::invariant(tx)?;
        let journaled = (inv.journal_entries - before) as usize;
        if !inv.holds() || journaled != transfers - rejected {
            return Err(Failure::Check(format!(
                "{journaled} journaled of {transfers} ({rejected} rejected); invariant {inv:?}"
            )));
        }
        Ok(())
    })?;
    Ok((seconds, rejected))
}
