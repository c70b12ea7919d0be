//! `tally tls init`: the TLS material of a deployment in one directory
//! (tally-tls's `TlsDir`): `ca.pem`, self-signed by the node's root key
//! (from the key directory or the PKCS#11 token `tally node` uses), and a
//! certificate and key per party — `central`, `dcp-<id>` for each
//! `--dcp`, `mds`, `operator` — plus `api` for the device-facing server.
//! Devices pin `ca.pem`; parties use mutual TLS with their role file.
//! `tally tls issue`: a fresh key and certificate for one role in that
//! directory, when its old key was revoked (`tally cb revoke-cert`) and
//! the party restarts under a new one.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use tally_dcp::keys::ROOT;
use tally_dcp::{KeyDir, NodeSigner, OsEntropy};
use tally_tls::issue::API_STEM;
use tally_tls::{Role, TlsDir, Validity, ca_certificate, issue_role_cert, issue_server_cert};

use crate::CliError;
use crate::pkcs11::{ROOT_LABEL, Token, TokenOptions};

/// Validity of the CA certificate (the root key itself lives longer; the
/// certificate is re-made with `tally tls init`).
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Default validity of role certificates: short, since no revocation list
/// covers them yet (decision 0014).
pub const ROLE_VALIDITY_DAYS: u32 = 90;

/// TLS certificates for the authenticated links (decision 0014).
#[derive(Subcommand)]
pub enum TlsCmd {
    /// Write ca.pem (signed by the root key) and a certificate and key per
    /// party into DIR: central, dcp-<id> per --dcp, mds, operator, api.
    Init(InitArgs),
    /// Write a fresh key and certificate for one role (central, mds,
    /// operator, dcp-<id>) into DIR, made by `init`, replacing that role's
    /// pair; ca.pem and the other roles are kept. After `tally cb
    /// revoke-cert` of the old certificate, the party restarts with the
    /// new one.
    Issue(IssueArgs),
}

/// Where the root key is.
#[derive(Args)]
pub struct RootArgs {
    /// The node's key directory (as `tally node --keys`); its root.key is
    /// created if missing, as the node would.
    #[arg(long, conflicts_with = "pkcs11_module")]
    keys: Option<PathBuf>,
    /// PKCS#11 module: the root key is then in its token.
    #[arg(long, requires = "pkcs11_token")]
    pkcs11_module: Option<PathBuf>,
    #[arg(long)]
    pkcs11_token: Option<String>,
    /// File holding the token's user PIN (else TALLY_PKCS11_PIN).
    #[arg(long)]
    pkcs11_pin_file: Option<PathBuf>,
    /// The root key's label in the token (default tally-root).
    #[arg(long)]
    pkcs11_root_label: Option<String>,
}

#[derive(Args)]
pub struct InitArgs {
    /// Directory to write into (created; key files mode 0600).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    root: RootArgs,
    /// A DCP id to issue a certificate for; repeatable.
    #[arg(long = "dcp")]
    dcps: Vec<u32>,
    /// A further host name or IP address the servers answer on (besides
    /// localhost and 127.0.0.1); repeatable.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Validity of the role and server certificates, in days.
    #[arg(long, default_value_t = ROLE_VALIDITY_DAYS)]
    days: u32,
}

#[derive(Args)]
pub struct IssueArgs {
    /// The directory `tally tls init` wrote (its ca.pem is kept).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    root: RootArgs,
    /// The role: central, mds, operator or dcp-<id>.
    #[arg(long)]
    role: String,
    /// A further host name or IP address the server answers on (besides
    /// localhost and 127.0.0.1); repeatable.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Validity of the certificate, in days.
    #[arg(long, default_value_t = ROLE_VALIDITY_DAYS)]
    days: u32,
}

pub fn run(cmd: TlsCmd) -> Result<String, CliError> {
    match cmd {
        TlsCmd::Init(args) => init(args),
        TlsCmd::Issue(args) => issue(args),
    }
}

fn check_days(days: u32) -> Result<(), CliError> {
    if days == 0 || days > tally_tls::issue::VALIDITY_DAYS_MAX {
        return Err(CliError::usage(format!(
            "--days must be 1..={}",
            tally_tls::issue::VALIDITY_DAYS_MAX
        )));
    }
    Ok(())
}

/// `tally tls issue`: one role's pair, issued under the directory's CA by
/// the root key (refused if the key is not the CA's), written over the
/// old pair.
fn issue(args: IssueArgs) -> Result<String, CliError> {
    check_days(args.days)?;
    let role: Role = args
        .role
        .parse()
        .map_err(|e| CliError::usage(format!("--role: {e}")))?;
    let failed = |e: tally_tls::TlsError| CliError::failed(format!("tls: {e}"));
    let dir = TlsDir::open(&args.dir).map_err(failed)?;
    let ca = dir.ca_pem().map_err(failed)?;
    let root = root_signer(&args.root)?;
    let (cert, key) = issue_role_cert(&*root, &ca, role, &args.hosts, Validity::days(args.days))
        .map_err(failed)?;
    // The new leaf must chain to the CA the parties pin.
    tally_tls::issue::verify_leaf(&ca, &cert).map_err(failed)?;
    let stem = role.to_string();
    dir.write_pair(&stem, &cert, &key).map_err(failed)?;
    let pin =
        tally_tls::key_pin(&tally_tls::cert_from_pem(&cert).map_err(failed)?).map_err(failed)?;
    Ok(format!(
        "{}: {stem}.pem and {stem}.key issued (key pin {})",
        args.dir.display(),
        hex::encode(pin)
    ))
}

fn root_signer(args: &RootArgs) -> Result<Arc<NodeSigner>, CliError> {
    match (&args.keys, &args.pkcs11_module, &args.pkcs11_token) {
        (Some(dir), None, _) => {
            let dir =
                KeyDir::open_or_create(dir).map_err(|e| CliError::failed(format!("keys: {e}")))?;
            dir.signer(ROOT, &mut OsEntropy)
                .map_err(|e| CliError::failed(format!("keys: {e}")))
        }
        (None, Some(module), Some(token)) => {
            let token = Token::open(&TokenOptions {
                module: module.clone(),
                token: token.clone(),
                pin_file: args.pkcs11_pin_file.clone(),
            })?;
            token.signer(
                args.pkcs11_root_label.as_deref().unwrap_or(ROOT_LABEL),
                "root",
            )
        }
        _ => Err(CliError::usage(
            "the root key is needed: --keys DIR, or --pkcs11-module and --pkcs11-token",
        )),
    }
}

fn init(args: InitArgs) -> Result<String, CliError> {
    check_days(args.days)?;
    let mut dcps = args.dcps.clone();
    dcps.sort_unstable();
    dcps.dedup();
    let root = root_signer(&args.root)?;
    let failed = |e: tally_tls::TlsError| CliError::failed(format!("tls: {e}"));
    // Everything is issued in memory first: a failing signer writes nothing.
    let ca = ca_certificate(&*root, Validity::days(CA_VALIDITY_DAYS)).map_err(failed)?;
    let validity = Validity::days(args.days);
    let mut roles = vec![Role::Central];
    roles.extend(dcps.iter().map(|&id| Role::Dcp(id)));
    roles.extend([Role::Mds, Role::Operator]);
    let mut pairs = Vec::with_capacity(roles.len() + 1);
    for role in roles {
        let (cert, key) =
            issue_role_cert(&*root, &ca, role, &args.hosts, validity).map_err(failed)?;
        pairs.push((role.to_string(), cert, key));
    }
    let (cert, key) = issue_server_cert(&*root, &ca, &args.hosts, validity).map_err(failed)?;
    pairs.push((API_STEM.to_string(), cert, key));

    let dir = TlsDir::open_or_create(&args.dir).map_err(failed)?;
    for (stem, cert, key) in &pairs {
        dir.write_pair(stem, cert, key).map_err(failed)?;
    }
    // The CA last: a directory with ca.pem is a complete one.
    dir.write_ca(&ca).map_err(failed)?;
    let stems: Vec<&str> = pairs.iter().map(|(s, _, _)| s.as_str()).collect();
    Ok(format!(
        "{}: ca.pem and {}",
        args.dir.display(),
        stems.join(", ")
    ))
}
