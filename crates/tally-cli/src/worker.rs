//! `tally settle-worker`: one settlement worker process. Several of them
//! (on one PostgreSQL) share the settlement queue of tally-ledger
//! (`tally_ledger::queue`): each claims a batch, opens (HPKE) and
//! verifies it with one signature batch outside any transaction, then
//! settles it in one transaction with a constant number of statements.

use std::time::Duration;

use clap::Args;
use tally_central::central::ServerCertCache;
use tally_core::verify::verify_packages_for_settlement;
use tally_core::{Package, TrustStore, VerifyParams};
use tally_ledger::queue::{Claimed, Prepared, WorkerOptions, WorkerReport, run_worker};
use tally_ledger::settlement::Settlement;
use tally_store::Store;

use crate::CliError;

/// Refusal code stored for a queued body that does not open or decode.
pub const UNREADABLE: u16 = tally_codes::SETTLEMENT_QUEUED_BODY_UNREADABLE;
/// Certificates a worker keeps verified between batches.
const CERT_CACHE_ENTRIES: usize = 100_000;

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The central bank's database (`postgres://…`, or an SQLite file for
    /// a single machine).
    #[arg(long)]
    pub database_url: String,
    /// Name in claims and results (default: worker-PID).
    #[arg(long)]
    pub name: Option<String>,
    /// `K/N`: prefer queue rows with id % N = K (then take any).
    #[arg(long)]
    pub lane: Option<String>,
    /// Packages per claim and per settlement transaction.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// How long a claim keeps other workers off its rows.
    #[arg(long, default_value_t = 30_000)]
    pub lease_ms: u64,
    /// Exit when nothing is left to claim (default: keep polling).
    #[arg(long)]
    pub until_empty: bool,
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
    /// Full re-sum of the ledger (periodic audit) this often.
    #[arg(long, default_value_t = 60)]
    pub audit_every_s: u64,
    /// At start, prune the spent registry of tokens that expired more
    /// than this many epochs ago (packages consuming them are refused
    /// from then on). Without it nothing is pruned.
    #[arg(long)]
    pub prune_grace_epochs: Option<u32>,
    /// The node's key directory (its opening key opens the queued
    /// bodies); default `FILE.keys` beside an SQLite database, as for
    /// `tally node`. A node whose signing keys are in a PKCS#11 token is
    /// not supported by the worker yet.
    #[arg(long)]
    pub keys: Option<std::path::PathBuf>,
}

impl WorkerArgs {
    pub fn options(&self) -> Result<WorkerOptions, CliError> {
        let lane = match &self.lane {
            None => None,
            Some(l) => {
                let (k, n) = l
                    .split_once('/')
                    .and_then(|(k, n)| Some((k.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
                    .filter(|(k, n)| *n > 0 && k < n)
                    .ok_or_else(|| {
                        CliError::usage(format!("--lane {l}: expected K/N with K < N"))
                    })?;
                Some((k, n))
            }
        };
        Ok(WorkerOptions {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("worker-{}", std::process::id())),
            lane,
            batch: self.batch.max(1),
            lease: Duration::from_millis(self.lease_ms),
            until_empty: self.until_empty,
            poll: Duration::from_millis(self.poll_ms.max(1)),
            audit_every: Duration::from_secs(self.audit_every_s),
        })
    }
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens and verifies claimed rows: `open` each body, then every package
/// that opened in one `verify_packages_for_settlement` (one signature
/// batch per claimed batch).
pub fn prepare(
    claimed: &[Claimed],
    open: &dyn Fn(&[u8]) -> Option<Package>,
    trust: &TrustStore,
    params: VerifyParams,
    cache: &mut ServerCertCache,
) -> Vec<Prepared> {
    let mut slots = Vec::with_capacity(claimed.len());
    let mut pkgs = Vec::with_capacity(claimed.len());
    for c in claimed {
        match open(&c.body) {
            Some(p) => {
                pkgs.push(p);
                slots.push(true);
            }
            None => slots.push(false),
        }
    }
    let mut verified = verify_packages_for_settlement(pkgs, trust, params, cache).into_iter();
    slots
        .into_iter()
        .map(|opened| {
            if !opened {
                return Err(UNREADABLE);
            }
            match verified.next() {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => Err(e.code()),
                None => Err(UNREADABLE),
            }
        })
        .collect()
}

pub fn report_line(name: &str, r: &WorkerReport) -> String {
    format!(
        "settle-worker {name}: batches={} settled={} refused={} skipped={} registered={} double_spends={} signatures={} audits={} first_claim_ms={} last_settled_ms={}",
        r.batches,
        r.settled,
        r.refused,
        r.skipped,
        r.registered,
        r.double_spends,
        r.signatures,
        r.audits,
        r.first_claim_ms.unwrap_or(0),
        r.last_settled_ms.unwrap_or(0)
    )
}

/// `tally settle-worker`: trust objects and the opening key of the back
/// office whose central database this is.
pub fn run(args: WorkerArgs) -> Result<String, CliError> {
    let opts = args.options()?;
    let urls = crate::node::StoreUrls::new(&args.database_url, "", "");
    let dir = args
        .keys
        .clone()
        .or_else(|| crate::node::KeyOptions::default_dir(&args.database_url))
        .ok_or_else(|| CliError::usage("--keys DIR is required with a PostgreSQL database"))?;
    let keys = crate::node::KeyOptions { dir, pkcs11: None };
    let bo = crate::node::open_backoffice(&urls, None, &keys)?;
    let store = Store::open(&args.database_url)
        .map_err(|e| CliError::failed(format!("cannot open database: {e}")))?;
    let epoch = i64::from(
        bo.epoch()
            .map_err(|e| CliError::failed(format!("cannot read the epoch: {e}")))?,
    );
    // Partitions for every expiry a token issued from now on can have.
    let ahead = 2 * i64::from(tally_dcp::service::TOKEN_VALIDITY_EPOCHS);
    Settlement::prepare_partitions(&store, epoch, epoch + ahead)
        .map_err(|e| CliError::failed(format!("cannot prepare partitions: {e}")))?;
    if let Some(g) = args.prune_grace_epochs {
        let (dropped, deleted) = Settlement::prune(&store, epoch - i64::from(g))
            .map_err(|e| CliError::failed(format!("cannot prune: {e}")))?;
        tracing::info!(dropped, deleted, "spent registry pruned");
    }
    let mut cache = ServerCertCache::new(CERT_CACHE_ENTRIES);
    let open = |b: &[u8]| bo.open_sealed_package(b).ok();
    let report = run_worker(&store, &opts, &unix_ms, &mut |claimed| {
        // Policy and revocations as of this batch.
        let (trust, params) = bo.settlement_verifier().map_err(|e| {
            tally_store::StoreError::Db(format!("cannot read the trust objects: {e}"))
        })?;
        Ok(prepare(claimed, &open, &trust, params, &mut cache))
    });
    let report = report.map_err(|e| CliError::failed(format!("settlement failed: {e}")))?;
    Ok(report_line(&opts.name, &report))
}
