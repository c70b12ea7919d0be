//! `tally supervisor …`: the supervisors' side of escrow opening
//! (docs/decisions/0006-escrow.md), one directory per key set.
//!
//! Files of a ceremony directory `DIR`:
//!
//! - `joint.cbor`: the public key set ([`JointParams`]): threshold, joint
//!   key, each supervisor's key share and Ed25519 audit key. Every command
//!   checks the log against it, so keep a copy somewhere the log's keeper
//!   cannot edit.
//! - `supervisor-<i>.key` (mode 0600, `i` from 0): supervisor `i`'s secrets,
//!   `[1, SupervisorKey, audit_seed (bstr 32)]`: its share of the joint
//!   secret and the seed of the Ed25519 key it signs log entries with. In a
//!   real ceremony each file goes to its supervisor and nowhere else.
//! - `audit.log`: the hash-chained, signed audit log (`[1, [entry, …]]`).
//!   Every command verifies the whole log before appending and writes it
//!   back by write-then-rename. One writer at a time: there is no lock.
//!
//! Supervisor indexes are 0-based everywhere (files, `--as`, the log).
//!
//! Id table (`combine --id-table FILE`): text, one SE per line,
//! `<se_id hex> <digest hex>` where the digest is
//! `IdPoint::digest` = `H("tally/v1/escrow-id-digest", M)`; blank lines and
//! lines starting with `#` are ignored.
//!
//! Exit codes: 0 success; 1 the operation was refused or a file is bad
//! (fewer than k valid shares, a log that does not verify, a malformed
//! file); 2 usage error.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::SecretKey;
use tally_core::{Hash32, Suite};
use tally_supervisor::audit::{self, AUDIT_ENTRIES_MAX, AUDIT_VERSION, Checkpoint};
use tally_supervisor::{
    AuditLog, Entry, EntryKind, IdTable, JointParams, OpeningRequest, OpeningResult,
    SupervisorError, SupervisorKey, combine, key_setup, share,
};

use crate::CliError;
use crate::device::{OsEntropy, parse_hash, read_file, write_atomic};

/// Version of the supervisor key file.
const KEY_FILE_VERSION: u8 = 1;
/// Largest id table file read (about 140 bytes a line: ~7 million SEs).
const ID_TABLE_FILE_BYTES_MAX: u64 = 1 << 30;
/// Largest escrow file read (an escrow is 68 or 134 bytes; hex doubles it).
const ESCROW_FILE_BYTES_MAX: u64 = 4096;

#[derive(Args)]
pub struct SupervisorCmd {
    /// Print one JSON object instead of human lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: SupervisorSub,
}

#[derive(Subcommand)]
enum SupervisorSub {
    /// Dealer-free k-of-n key generation (all n supervisors in this
    /// process): writes joint.cbor, supervisor-<i>.key and audit.log.
    Keygen {
        #[arg(long)]
        dir: PathBuf,
        /// Shares needed to open an escrow.
        #[arg(long)]
        k: usize,
        /// Supervisors.
        #[arg(long)]
        n: usize,
    },
    /// Log a signed request to open one escrow; prints the request id.
    RequestOpening {
        #[arg(long)]
        dir: PathBuf,
        /// The escrow, hex: a certificate's ciphertext-only escrow (68
        /// bytes) or the full escrow from the DCP's record (134 bytes).
        #[arg(
            long,
            conflicts_with = "escrow_file",
            required_unless_present = "escrow_file"
        )]
        escrow: Option<String>,
        /// The escrow in a file (raw bytes or hex).
        #[arg(long)]
        escrow_file: Option<PathBuf>,
        /// Reference of the evidence (MDS case, court order).
        #[arg(long)]
        evidence: String,
        /// Written reason for the opening.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Decrypt this supervisor's share of a logged request and log it with
    /// its DLEQ proof.
    Share {
        #[arg(long)]
        dir: PathBuf,
        /// Request id (hex), as printed by request-opening.
        #[arg(long)]
        request: String,
        /// This supervisor's key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check every logged share of a request, combine k valid ones, log the
    /// result; prints the opened identity point's digest and the SE id.
    Combine {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        request: String,
        /// SE id ↔ identity-point digest table (text: `<se_id> <digest>`
        /// per line, hex).
        #[arg(long)]
        id_table: Option<PathBuf>,
        #[command(flatten)]
        signer: Signer,
    },
    /// Audit log checks.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the whole log: chain, signatures, every share's proof, every
    /// result; prints the entry count and the head.
    Verify {
        /// Ceremony directory (DIR/audit.log against DIR/joint.cbor).
        #[arg(long, required_unless_present = "log", conflicts_with = "log")]
        dir: Option<PathBuf>,
        /// A log file; its key set is --joint, else joint.cbor beside it.
        #[arg(long)]
        log: Option<PathBuf>,
        #[arg(long, requires = "log")]
        joint: Option<PathBuf>,
        /// A checkpoint kept earlier, `LEN:HEAD` (as printed): the log must
        /// still hold those entries unchanged.
        #[arg(long)]
        checkpoint: Option<String>,
    },
}

/// Who signs the entry: `--key FILE`, or `--as i` for DIR/supervisor-<i>.key.
#[derive(Args)]
struct Signer {
    /// Sign as supervisor i (its key file DIR/supervisor-<i>.key).
    #[arg(long = "as", default_value_t = 0, conflicts_with = "key")]
    as_index: u8,
    /// Sign with this supervisor key file.
    #[arg(long)]
    key: Option<PathBuf>,
}

impl Signer {
    fn path(&self, dir: &Path) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| key_path(dir, self.as_index))
    }
}

/// A supervisor's secrets as stored on disk: its key share (with the key
/// set) and the seed of its Ed25519 audit key. Decoding checks that the
/// audit key is the one the key set lists for this supervisor.
struct KeyFile {
    key: SupervisorKey,
    audit: SecretKey,
}

impl Cbor for KeyFile {
    fn write(&self, w: &mut Writer) {
        w.array(3);
        w.u64(u64::from(KEY_FILE_VERSION));
        self.key.write(w);
        w.bytes(&self.audit.seed());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(3)?;
        r.version(KEY_FILE_VERSION)?;
        let key = SupervisorKey::read(r)?;
        let seed: [u8; 32] = r.bytes_array()?;
        let audit = SecretKey::from_seed(Suite::Ed25519, &seed).ok_or(CodecError::Malformed)?;
        if key.joint().audit_key(key.index()) != Some(&audit.public()) {
            return Err(CodecError::Malformed);
        }
        Ok(KeyFile { key, audit })
    }
}

fn key_path(dir: &Path, index: u8) -> PathBuf {
    dir.join(format!("supervisor-{index}.key"))
}
fn joint_path(dir: &Path) -> PathBuf {
    dir.join("joint.cbor")
}
fn log_path(dir: &Path) -> PathBuf {
    dir.join("audit.log")
}

fn bad_file(path: &Path, what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::failed(format!("{}: not a valid {what}: {e}", path.display()))
}

fn load_joint(path: &Path) -> Result<JointParams, CliError> {
    let bytes = read_file(path)?;
    JointParams::from_cbor(&bytes).map_err(|e| bad_file(path, "supervisor key set", e))
}

fn load_key(path: &Path) -> Result<KeyFile, CliError> {
    let bytes = read_file(path)?;
    KeyFile::from_cbor(&bytes).map_err(|e| bad_file(path, "supervisor key file", e))
}

/// Where in a log file decoding fails: the entry, if one is to blame.
fn locate_malformed(bytes: &[u8]) -> Option<u64> {
    let mut r = Reader::new(bytes);
    r.array(2).ok()?;
    r.version(AUDIT_VERSION).ok()?;
    let n = r.array_max(AUDIT_ENTRIES_MAX).ok()?;
    for i in 0..n {
        let start = r.position();
        let bad = match Entry::read(&mut r) {
            Ok(_) => Entry::from_cbor(&bytes[start..r.position()]).is_err(),
            Err(_) => true,
        };
        if bad {
            return Some(i as u64);
        }
    }
    None
}

/// Reads and verifies a log file against its key set.
fn load_log(path: &Path, joint: &JointParams) -> Result<AuditLog, CliError> {
    load_log_at(path, joint, None)
}

fn load_log_at(
    path: &Path,
    joint: &JointParams,
    checkpoint: Option<&Checkpoint>,
) -> Result<AuditLog, CliError> {
    let bytes = read_file(path)?;
    let entries = audit::decode_entries(&bytes).map_err(|e| {
        let at = match locate_malformed(&bytes) {
            Some(i) => format!("entry {i} is malformed"),
            None => "malformed".to_string(),
        };
        CliError::failed(format!(
            "{}: audit log does not verify: {at} ({e})",
            path.display()
        ))
    })?;
    AuditLog::from_entries(entries.clone(), joint, checkpoint).map_err(|e| {
        let what = entries
            .get(e.seq as usize)
            .map(|x| {
                let signer = joint
                    .audit_index(&x.signer)
                    .map_or("an unknown key".to_string(), |i| format!("supervisor {i}"));
                format!(" ({:?} entry signed by {signer})", x.kind)
            })
            .unwrap_or_default();
        CliError::failed(format!(
            "{}: audit log does not verify: {e}{what}",
            path.display()
        ))
    })
}

/// Writes the log back and reads it again: what is on disk must be what
/// was verified.
fn save_log(path: &Path, log: &AuditLog) -> Result<(), CliError> {
    let bytes = log.to_bytes();
    write_atomic(path, &bytes)?;
    let back = read_file(path)?;
    if back != bytes {
        return Err(CliError::failed(format!(
            "{}: the log read back differs from what was written",
            path.display()
        )));
    }
    Ok(())
}

fn refused(e: SupervisorError) -> CliError {
    CliError::failed(e.to_string())
}

fn hex_of(b: &[u8]) -> String {
    hex::encode(b)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Human lines, or the JSON object with `--json`.
fn output(json: bool, lines: String, value: serde_json::Value) -> String {
    if json {
        value.to_string()
    } else {
        lines.trim_end().to_string()
    }
}

pub fn run(cmd: SupervisorCmd) -> Result<String, CliError> {
    let json = cmd.json;
    match cmd.cmd {
        SupervisorSub::Keygen { dir, k, n } => keygen(json, &dir, k, n),
        SupervisorSub::RequestOpening {
            dir,
            escrow,
            escrow_file,
            evidence,
            reason,
            signer,
        } => {
            let escrow = match (escrow, escrow_file) {
                (Some(h), _) => {
                    hex::decode(h.trim()).map_err(|_| CliError::usage("--escrow must be hex"))?
                }
                (None, Some(f)) => read_escrow_file(&f)?,
                (None, None) => return Err(CliError::usage("give --escrow or --escrow-file")),
            };
            request_opening(json, &dir, &escrow, &evidence, &reason, &signer)
        }
        SupervisorSub::Share { dir, request, key } => {
            share_cmd(json, &dir, &parse_hash(&request)?, &key)
        }
        SupervisorSub::Combine {
            dir,
            request,
            id_table,
            signer,
        } => combine_cmd(
            json,
            &dir,
            &parse_hash(&request)?,
            id_table.as_deref(),
            &signer,
        ),
        SupervisorSub::Audit {
            cmd:
                AuditCmd::Verify {
                    dir,
                    log,
                    joint,
                    checkpoint,
                },
        } => {
            let (log, joint) = match (dir, log) {
                (Some(d), _) => (log_path(&d), joint_path(&d)),
                (None, Some(l)) => {
                    let j = joint.unwrap_or_else(|| {
                        l.parent()
                            .map_or_else(|| joint_path(Path::new(".")), joint_path)
                    });
                    (l, j)
                }
                (None, None) => return Err(CliError::usage("give --dir or --log")),
            };
            let checkpoint = checkpoint.as_deref().map(parse_checkpoint).transpose()?;
            audit_verify(json, &log, &joint, checkpoint.as_ref())
        }
    }
}

fn read_escrow_file(path: &Path) -> Result<Vec<u8>, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::io(path, e))?;
    if meta.len() > ESCROW_FILE_BYTES_MAX {
        return Err(CliError::usage(format!(
            "{}: too large for an escrow",
            path.display()
        )));
    }
    let bytes = read_file(path)?;
    // Hex if it reads as hex, raw bytes otherwise.
    match std::str::from_utf8(&bytes).ok().map(str::trim) {
        Some(text) if !text.is_empty() => Ok(hex::decode(text).unwrap_or(bytes)),
        _ => Ok(bytes),
    }
}

fn parse_checkpoint(s: &str) -> Result<Checkpoint, CliError> {
    let bad = || CliError::usage(format!("--checkpoint must be LEN:HEAD, got {s:?}"));
    let (len, head) = s.split_once(':').ok_or_else(bad)?;
    Ok(Checkpoint {
        len: len.parse().map_err(|_| bad())?,
        head: parse_hash(head)?,
    })
}

/// Creates `path` with mode 0600; refuses to overwrite.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::io(path, e))
}

fn keygen(json: bool, dir: &Path, k: usize, n: usize) -> Result<String, CliError> {
    if k == 0 || k > n || n > tally_supervisor::PARTICIPANTS_MAX {
        return Err(CliError::usage(format!(
            "need 1 <= k <= n <= {}, got k = {k}, n = {n}",
            tally_supervisor::PARTICIPANTS_MAX
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
    // Check everything before writing anything.
    let mut targets = vec![joint_path(dir), log_path(dir)];
    targets.extend((0..n).map(|i| key_path(dir, i as u8)));
    if let Some(p) = targets.iter().find(|p| p.exists()) {
        return Err(CliError::usage(format!(
            "{} exists; refusing to overwrite a key set (use an empty directory)",
            p.display()
        )));
    }

    let audit: Vec<SecretKey> = (0..n)
        .map(|_| SecretKey::generate(Suite::Ed25519, &mut OsEntropy))
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::failed(format!("audit key: {e:?}")))?;
    let pks: Vec<_> = audit.iter().map(SecretKey::public).collect();
    let (joint, keys) = key_setup(k, &pks, &mut OsEntropy).map_err(refused)?;
    let log = AuditLog::new(&joint, &audit[0]).map_err(refused)?;

    for (key, audit) in keys.into_iter().zip(audit) {
        let path = key_path(dir, key.index());
        write_secret(&path, &KeyFile { key, audit }.to_cbor())?;
    }
    write_atomic(&joint_path(dir), &joint.to_cbor())?;
    save_log(&log_path(dir), &log)?;
    // Read back what the other commands will read.
    let back = load_joint(&joint_path(dir))?;
    assert_eq!(back, joint, "joint.cbor read back differs");
    load_log(&log_path(dir), &joint)?;

    let joint_key = hex_of(&joint.joint_key().to_bytes());
    let cp = log.checkpoint();
    let mut lines = String::new();
    let _ = writeln!(lines, "key set {k} of {n} in {}", dir.display());
    let _ = writeln!(lines, "joint key {joint_key}");
    let _ = writeln!(lines, "key set id {}", joint.id());
    let _ = writeln!(
        lines,
        "supervisor keys {} … {} (mode 0600; hand each to its supervisor)",
        key_path(dir, 0).display(),
        key_path(dir, (n - 1) as u8).display()
    );
    let _ = writeln!(
        lines,
        "audit log {} head {}:{}",
        log_path(dir).display(),
        cp.len,
        cp.head
    );
    Ok(output(
        json,
        lines,
        serde_json::json!({
            "k": k,
            "n": n,
            "joint_key": joint_key,
            "key_set_id": joint.id().to_string(),
            "joint": joint_path(dir).display().to_string(),
            "keys": (0..n)
                .map(|i| key_path(dir, i as u8).display().to_string())
                .collect::<Vec<_>>(),
            "log": log_path(dir).display().to_string(),
            "entries": cp.len,
            "head": cp.head.to_string(),
        }),
    ))
}

fn request_opening(
    json: bool,
    dir: &Path,
    escrow: &[u8],
    evidence: &str,
    reason: &str,
    signer: &Signer,
) -> Result<String, CliError> {
    let joint = load_joint(&joint_path(dir))?;
    let key = load_key(&signer.path(dir))?;
    if key.key.joint() != &joint {
        return Err(CliError::failed(
            "the key file belongs to another key set than joint.cbor",
        ));
    }
    let mut log = load_log(&log_path(dir), &joint)?;
    let request = OpeningRequest::new(escrow, evidence, reason, now_secs()).map_err(refused)?;
    let id = log.append_request(&request, &key.audit).map_err(refused)?;
    save_log(&log_path(dir), &log)?;
    let form = if request.escrow().has_proof() {
        "full escrow"
    } else {
        "ciphertext only"
    };
    Ok(output(
        json,
        format!("{id}\n"),
        serde_json::json!({
            "request": id.to_string(),
            "escrow_form": form,
            "filed_by": key.key.index(),
            "entries": log.checkpoint().len,
        }),
    ))
}

fn share_cmd(json: bool, dir: &Path, request: &Hash32, key: &Path) -> Result<String, CliError> {
    let joint = load_joint(&joint_path(dir))?;
    let key = load_key(key)?;
    if key.key.joint() != &joint {
        return Err(CliError::failed(
            "the key file belongs to another key set than joint.cbor",
        ));
    }
    let mut log = load_log(&log_path(dir), &joint)?;
    let logged = log
        .request(request)
        .ok_or_else(|| CliError::failed(format!("request {request} is not in the audit log")))?;
    let s = share(&key.key, &logged, &mut OsEntropy).map_err(refused)?;
    log.append_share(&s, &key.audit).map_err(refused)?;
    save_log(&log_path(dir), &log)?;
    let logged = log.shares(request).len();
    let k = joint.threshold();
    Ok(output(
        json,
        format!(
            "supervisor {} shared for request {request} ({logged} of {k} needed shares logged)\n",
            s.index()
        ),
        serde_json::json!({
            "request": request.to_string(),
            "supervisor": s.index(),
            "shares_logged": logged,
            "threshold": k,
        }),
    ))
}

/// Reads the id table text format (see the module docs).
fn load_id_table(path: &Path) -> Result<IdTable, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::io(path, e))?;
    if meta.len() > ID_TABLE_FILE_BYTES_MAX {
        return Err(CliError::usage(format!(
            "{}: id table too large",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    let mut table = IdTable::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            CliError::usage(format!(
                "{}:{}: {why} (expected `<se_id hex> <digest hex>`)",
                path.display(),
                n + 1
            ))
        };
        let mut parts = line.split_whitespace();
        let (Some(se), Some(digest), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not two fields"));
        };
        let se = parse_hash(se).map_err(|_| bad("SE id is not 64 hex digits"))?;
        let digest = parse_hash(digest).map_err(|_| bad("digest is not 64 hex digits"))?;
        if !table.insert(se, digest) {
            return Err(bad("this digest already names another SE"));
        }
    }
    Ok(table)
}

fn describe(res: &OpeningResult, joint: &JointParams, fresh: bool) -> (String, serde_json::Value) {
    let digest = res.point.digest();
    let se = res.se_id.map(|s| s.to_string());
    let mut lines = String::new();
    if !fresh {
        let _ = writeln!(
            lines,
            "request {} was already opened; logged result:",
            res.request_id
        );
    }
    let _ = writeln!(lines, "opened request {}", res.request_id);
    let _ = writeln!(lines, "identity point digest {digest}");
    let _ = writeln!(
        lines,
        "se id {}",
        se.as_deref().unwrap_or("unknown (not in the id table)")
    );
    let _ = writeln!(
        lines,
        "shares used {:?} of k = {}; refused {:?}",
        res.used,
        joint.threshold(),
        res.rejected
    );
    let _ = writeln!(
        lines,
        "escrow proof {}",
        if res.escrow_proof_checked {
            "re-checked against the opened point"
        } else {
            "not re-checked (ciphertext-only escrow: the certifying DCP checked it)"
        }
    );
    let value = serde_json::json!({
        "request": res.request_id.to_string(),
        "already_opened": !fresh,
        "id_point_digest": digest.to_string(),
        "se_id": se,
        "used": res.used,
        "refused": res.rejected,
        "escrow_proof_checked": res.escrow_proof_checked,
    });
    (lines, value)
}

fn combine_cmd(
    json: bool,
    dir: &Path,
    request: &Hash32,
    id_table: Option<&Path>,
    signer: &Signer,
) -> Result<String, CliError> {
    let joint = load_joint(&joint_path(dir))?;
    let table = id_table.map(load_id_table).transpose()?;
    let mut log = load_log(&log_path(dir), &joint)?;
    if let Some(res) = log.result(request) {
        let (lines, value) = describe(res, &joint, false);
        return Ok(output(json, lines, value));
    }
    let logged = log
        .request(request)
        .ok_or_else(|| CliError::failed(format!("request {request} is not in the audit log")))?;
    let shares = log.shares(request);
    let opening = combine(&joint, &logged, &shares).map_err(|e| match e {
        SupervisorError::NotEnoughShares {
            valid,
            needed,
            rejected,
        } => CliError::failed(format!(
            "cannot open request {request}: {valid} valid shares logged, {needed} needed{} \
             (more supervisors must run `tally supervisor share`)",
            if rejected.is_empty() {
                String::new()
            } else {
                format!("; refused: {rejected:?}")
            }
        )),
        e => refused(e),
    })?;
    let key = load_key(&signer.path(dir))?;
    let se_id = table.as_ref().and_then(|t| t.se_id(&opening.point()));
    log.append_result(&opening, se_id, &key.audit)
        .map_err(refused)?;
    save_log(&log_path(dir), &log)?;
    let res = log
        .result(request)
        .ok_or_else(|| CliError::failed("the result was not logged"))?;
    let (lines, value) = describe(res, &joint, true);
    Ok(output(json, lines, value))
}

fn audit_verify(
    json: bool,
    log: &Path,
    joint: &Path,
    checkpoint: Option<&Checkpoint>,
) -> Result<String, CliError> {
    let joint = load_joint(joint)?;
    let log = load_log_at(log, &joint, checkpoint)?;
    let summary = log.verify().map_err(|e| CliError::failed(e.to_string()))?;
    let cp = summary.checkpoint;
    let kinds = |k: EntryKind| log.entries().iter().filter(|e| e.kind == k).count();
    let mut lines = String::new();
    let _ = writeln!(lines, "audit log verifies: {} entries", cp.len);
    let _ = writeln!(lines, "head {}:{}", cp.len, cp.head);
    let _ = writeln!(
        lines,
        "requests {}, shares {}, openings {}",
        summary.requests,
        summary.shares,
        summary.openings.len()
    );
    Ok(output(
        json,
        lines,
        serde_json::json!({
            "ok": true,
            "entries": cp.len,
            "head": cp.head.to_string(),
            "checkpoint": format!("{}:{}", cp.len, cp.head),
            "requests": kinds(EntryKind::Request),
            "shares": kinds(EntryKind::Share),
            "openings": summary.openings.len(),
        }),
    ))
}

/// The supervisor steps as `tally demo` runs them (same code paths as the
/// commands, files in `dir`).
#[cfg(feature = "dev-tools")]
pub(crate) mod steps {
    use super::*;

    fn field(out: &str, name: &str) -> Result<String, CliError> {
        let v: serde_json::Value =
            serde_json::from_str(out).map_err(|e| CliError::failed(e.to_string()))?;
        v[name]
            .as_str()
            .map(str::to_string)
            .or_else(|| v[name].as_u64().map(|n| n.to_string()))
            .ok_or_else(|| CliError::failed(format!("no {name} in {out}")))
    }

    /// Runs the k-of-n ceremony; returns the path of joint.cbor.
    pub(crate) fn keygen(dir: &Path, k: usize, n: usize) -> Result<PathBuf, CliError> {
        super::keygen(true, dir, k, n)?;
        Ok(joint_path(dir))
    }

    /// Files an opening request as supervisor 0; returns its id.
    pub(crate) fn request(
        dir: &Path,
        escrow: &[u8],
        evidence: &str,
        reason: &str,
    ) -> Result<Hash32, CliError> {
        let signer = Signer {
            as_index: 0,
            key: None,
        };
        let out = request_opening(true, dir, escrow, evidence, reason, &signer)?;
        parse_hash(&field(&out, "request")?)
    }

    pub(crate) fn share(dir: &Path, request: &Hash32, index: u8) -> Result<(), CliError> {
        share_cmd(true, dir, request, &key_path(dir, index)).map(|_| ())
    }

    /// Combines the logged shares; returns the identity point's digest (hex).
    pub(crate) fn combine(dir: &Path, request: &Hash32) -> Result<String, CliError> {
        let signer = Signer {
            as_index: 0,
            key: None,
        };
        let out = combine_cmd(true, dir, request, None, &signer)?;
        field(&out, "id_point_digest")
    }

    /// Verifies the whole audit log; returns the entry count.
    pub(crate) fn verify(dir: &Path) -> Result<String, CliError> {
        let out = audit_verify(true, &log_path(dir), &joint_path(dir), None)?;
        field(&out, "entries")
    }
}
