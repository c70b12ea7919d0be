//! The back-office service (central bank + directory + one DCP).

use std::fmt;
use std::sync::Mutex;

use tally_core::cert::{DcpCertificate, role};
use tally_core::codec::{Cbor, CodecError};
use tally_core::crypto::{check_key, tagged_hash};
use tally_core::policy::{TierLimits, device_class};
use tally_core::verify::{
    BoundedCertCache, VerifyError, VerifyParams, verify_package_for_settlement,
};
use tally_core::{
    Amount, Epoch, Hash32, Issue, OutPoint, Output, Package, Policy, PseudonymCertificate,
    PublicKey, Request, RevocationList, SecretKey, Suite, SyncGrant, TrustStore,
};
use tally_directory::{Directory, DirectoryError, SeEntry, SeStatus, check_attestation};
use tally_ledger::ledger::{
    self, AccountKind, Invariant, Ledger, LedgerError, TransferRequest, code,
};
use tally_ledger::settlement::{DoubleSpend, Settlement, SettlementError};
use tally_store::{Migrations, Store, StoreError, Tx, TxFailure, Value};

use tally_core::dcp::*;

pub static MIGRATIONS: Migrations = Migrations {
    component: "dcp",
    steps: &[(
        1,
        "CREATE TABLE node_meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL);
        INSERT INTO node_meta (k, v) VALUES ('epoch', 1);
        INSERT INTO node_meta (k, v) VALUES ('issue_serial', 0);
        CREATE TABLE node_secrets (role TEXT PRIMARY KEY, suite BIGINT NOT NULL, seed BLOB NOT NULL);
        CREATE TABLE node_docs (k TEXT PRIMARY KEY, body BLOB NOT NULL);
        CREATE TABLE dcp_devices (
            se_id BLOB PRIMARY KEY,
            account TEXT NOT NULL,
            device_class BIGINT NOT NULL,
            tier BIGINT NOT NULL,
            last_counter BIGINT NOT NULL,
            sync_seq BIGINT NOT NULL
        );
        CREATE TABLE dcp_responses (request_id BLOB PRIMARY KEY, se_id BLOB NOT NULL, response BLOB NOT NULL);
        CREATE TABLE dcp_redemptions (
            nonce BLOB PRIMARY KEY,
            se_id BLOB NOT NULL,
            amount BIGINT NOT NULL,
            unload BIGINT NOT NULL,
            done BIGINT NOT NULL
        );
        CREATE TABLE dcp_uploads (
            transfer_id BLOB PRIMARY KEY,
            nonce BLOB NOT NULL,
            payee_key BLOB NOT NULL,
            amount BIGINT NOT NULL,
            package BLOB NOT NULL
        );
        CREATE TABLE dcp_closed (
            nonce BLOB NOT NULL,
            payee_key BLOB NOT NULL,
            se_id BLOB NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (nonce, payee_key)
        );
        CREATE TABLE dcp_recoveries (
            transfer_id BLOB PRIMARY KEY,
            se_id BLOB NOT NULL,
            issue BLOB NOT NULL,
            delivered BIGINT NOT NULL
        )",
    )],
};

/// Epochs a pseudonym certificate stays valid after issuance.
pub const CERT_VALIDITY_EPOCHS: Epoch = 30;
/// Epochs a genesis token may circulate offline before renewal.
pub const TOKEN_VALIDITY_EPOCHS: Epoch = 60;
pub const DCP_ID: u32 = 1;
pub const DCP_ACCOUNT: &str = "dcp:1";

/// Account names devices register under (and deposits may open):
/// letters, digits, '-' and '_'.
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn user_account(name: &str) -> String {
    format!("user:{name}")
}

/// Every rejection, each with a stable code (docs/API.md).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackofficeError {
    Decode(CodecError),
    Verify(VerifyError),
    Ledger(LedgerError),
    Settlement(SettlementError),
    Directory(DirectoryError),
    UnknownDevice,
    DeviceNotActive,
    BadDeviceSignature,
    /// A counter not above the last one, with another request than the stored one.
    Replay,
    BadKey,
    UnknownRedemption,
    /// The package does not pay the redemption request.
    WrongRedemption,
    /// The redeeming device double-spent the very tokens it redeems.
    DoubleSpendByRedeemer(Box<DoubleSpend>),
    Store(StoreError),
}

impl BackofficeError {
    pub fn code(&self) -> u16 {
        match self {
            BackofficeError::Decode(_) => 101,
            BackofficeError::Verify(e) => e.code(),
            BackofficeError::Ledger(e) => e.code(),
            BackofficeError::Settlement(e) => e.code(),
            BackofficeError::Directory(e) => e.code(),
            BackofficeError::UnknownDevice => 50,
            BackofficeError::DeviceNotActive => 51,
            BackofficeError::BadDeviceSignature => 52,
            BackofficeError::Replay => 53,
            BackofficeError::BadKey => 54,
            BackofficeError::UnknownRedemption => 55,
            BackofficeError::WrongRedemption => 56,
            BackofficeError::DoubleSpendByRedeemer(_) => 57,
            BackofficeError::Store(_) => 99,
        }
    }
    /// Client errors (4xx) versus server errors (5xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            BackofficeError::Store(_)
                | BackofficeError::Ledger(LedgerError::Store(_))
                | BackofficeError::Settlement(SettlementError::Ledger(LedgerError::Store(_)))
                | BackofficeError::Directory(DirectoryError::Store(_))
        )
    }
}

impl fmt::Display for BackofficeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackofficeError::Decode(e) => write!(f, "malformed body: {e}"),
            BackofficeError::Verify(e) => write!(f, "package refused: {e}"),
            BackofficeError::Ledger(e) => write!(f, "{e}"),
            BackofficeError::Settlement(e) => write!(f, "{e}"),
            BackofficeError::Directory(e) => write!(f, "{e}"),
            BackofficeError::UnknownDevice => f.write_str("unknown device"),
            BackofficeError::DeviceNotActive => f.write_str("device is suspended or revoked"),
            BackofficeError::BadDeviceSignature => f.write_str("device signature does not verify"),
            BackofficeError::Replay => f.write_str("replayed or stale request counter"),
            BackofficeError::BadKey => f.write_str("invalid public key"),
            BackofficeError::UnknownRedemption => {
                f.write_str("no open redemption request for this package")
            }
            BackofficeError::WrongRedemption => {
                f.write_str("package does not pay the redemption request")
            }
            BackofficeError::DoubleSpendByRedeemer(d) => {
                write!(
                    f,
                    "the redeeming device double-spent output {}:{}",
                    d.outpoint.record, d.outpoint.index
                )
            }
            BackofficeError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BackofficeError {}

macro_rules! from_err {
    ($t:ty, $v:ident) => {
        impl From<$t> for BackofficeError {
            fn from(e: $t) -> Self {
                BackofficeError::$v(e)
            }
        }
    };
}
from_err!(CodecError, Decode);
from_err!(VerifyError, Verify);
from_err!(LedgerError, Ledger);
from_err!(SettlementError, Settlement);
from_err!(DirectoryError, Directory);
from_err!(StoreError, Store);

impl TxFailure for BackofficeError {
    fn is_conflict(&self) -> bool {
        match self {
            BackofficeError::Store(e) => e.is_conflict(),
            BackofficeError::Ledger(e) => e.is_conflict(),
            BackofficeError::Settlement(e) => e.is_conflict(),
            BackofficeError::Directory(e) => e.is_conflict(),
            _ => false,
        }
    }
}

/// The node's signing keys: the central bank root and the DCP key (all
/// roles). Kept in the database (`node_secrets`); a production deployment
/// puts them in an HSM behind the same calls.
pub struct NodeKeys {
    pub root: SecretKey,
    pub dcp: SecretKey,
}

impl NodeKeys {
    fn load_or_create(store: &Store) -> Result<NodeKeys, BackofficeError> {
        let get = |role: &'static str| -> Result<SecretKey, BackofficeError> {
            store.transact(|tx| {
                if let Some(r) = tx.query_one(
                    "SELECT suite, seed FROM node_secrets WHERE role = $1",
                    &[role.into()],
                )? {
                    let suite = Suite::from_code(r.int(0)? as u8)?;
                    let seed: [u8; 32] = r
                        .bytes(1)?
                        .try_into()
                        .map_err(|_| StoreError::Type("seed".into()))?;
                    return SecretKey::from_seed(suite, &seed).ok_or(BackofficeError::BadKey);
                }
                let seed = os_random_32()?;
                tx.execute(
                    "INSERT INTO node_secrets (role, suite, seed) VALUES ($1, $2, $3)",
                    &[
                        role.into(),
                        Value::Int(Suite::Ed25519 as i64),
                        seed.to_vec().into(),
                    ],
                )?;
                SecretKey::from_seed(Suite::Ed25519, &seed).ok_or(BackofficeError::BadKey)
            })
        };
        Ok(NodeKeys {
            root: get("root")?,
            dcp: get("dcp")?,
        })
    }
}

fn os_random_32() -> Result<[u8; 32], StoreError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| StoreError::Db(format!("no randomness: {e}")))?;
    Ok(b)
}

/// Default tiers of the node's policy (XTS minor units).
pub fn default_tiers() -> Vec<TierLimits> {
    let t = |device_class, payment_max, holding_max, history_records_max| TierLimits {
        device_class,
        tier: 0,
        payment_max: Amount(payment_max),
        holding_max: Amount(holding_max),
        receiving_max: Amount(holding_max),
        offline_spend_max: Amount(holding_max),
        offline_payments_max: 1_000,
        history_records_max,
        offline_epochs_max: 30,
    };
    vec![
        t(device_class::CARD, 50_000, 100_000, 32),
        t(device_class::PHONE, 50_000, 200_000, 32),
        t(device_class::IOT, 10_000, 20_000, 32),
        t(device_class::DCP, u64::MAX / 4, u64::MAX / 4, 1024),
    ]
}

pub struct Backoffice {
    store: Store,
    keys: NodeKeys,
    dcp_cert: DcpCertificate,
    cache: Mutex<BoundedCertCache>,
}

fn b(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

fn meta(tx: &mut dyn Tx, k: &str) -> Result<i64, BackofficeError> {
    Ok(tx
        .query_one("SELECT v FROM node_meta WHERE k = $1", &[k.into()])?
        .ok_or_else(|| StoreError::Type(format!("node_meta.{k} missing")))?
        .int(0)?)
}

impl Backoffice {
    /// Opens the back office on `store`: migrations, keys, policy.
    pub fn open(store: Store) -> Result<Backoffice, BackofficeError> {
        store.migrate(&[
            &ledger::MIGRATIONS,
            &tally_ledger::settlement::MIGRATIONS,
            &tally_directory::MIGRATIONS,
            &MIGRATIONS,
        ])?;
        let keys = NodeKeys::load_or_create(&store)?;
        let dcp_cert = DcpCertificate::sign(
            &keys.root,
            DCP_ID,
            keys.dcp.public(),
            role::ISSUE | role::CERTIFY | role::REDEEM | role::SYNC,
            Epoch::MAX,
        );
        let bo = Backoffice {
            store,
            keys,
            dcp_cert,
            cache: Mutex::new(BoundedCertCache::new(100_000)),
        };
        bo.store.transact(|tx| {
            Ledger::ensure_account(tx, DCP_ACCOUNT, AccountKind::DcpSettlement)?;
            Ok::<_, BackofficeError>(())
        })?;
        bo.policy()?;
        Ok(bo)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn root_key(&self) -> PublicKey {
        self.keys.root.public()
    }

    pub fn dcp_key(&self) -> PublicKey {
        self.keys.dcp.public()
    }

    pub fn epoch(&self) -> Result<Epoch, BackofficeError> {
        self.store.transact(|tx| Ok(meta(tx, "epoch")? as Epoch))
    }

    /// The signed policy; re-signed (serial + 1) only when its content changes.
    pub fn policy(&self) -> Result<Policy, BackofficeError> {
        self.store.transact(|tx| self.policy_in(tx))
    }

    fn policy_in(&self, tx: &mut dyn Tx) -> Result<Policy, BackofficeError> {
        let tiers = default_tiers();
        let dcps = vec![self.dcp_cert.clone()];
        let old = tx.query_one("SELECT body FROM node_docs WHERE k = 'policy'", &[])?;
        let serial = match &old {
            Some(r) => {
                let p = Policy::from_cbor(r.bytes(0)?)?;
                if p.tiers == tiers && p.dcps == dcps {
                    return Ok(p);
                }
                p.serial + 1
            }
            None => 1,
        };
        let p = Policy::sign(&self.keys.root, serial, "XTS", tiers, dcps);
        if old.is_some() {
            tx.execute(
                "UPDATE node_docs SET body = $1 WHERE k = 'policy'",
                &[p.to_cbor().into()],
            )?;
        } else {
            tx.execute(
                "INSERT INTO node_docs (k, body) VALUES ('policy', $1)",
                &[p.to_cbor().into()],
            )?;
        }
        Ok(p)
    }

    pub fn revocations(&self) -> Result<RevocationList, BackofficeError> {
        self.store.transact(|tx| self.revocations_in(tx))
    }

    fn revocations_in(&self, tx: &mut dyn Tx) -> Result<RevocationList, BackofficeError> {
        let epoch = meta(tx, "epoch")? as Epoch;
        Ok(Directory::revocation_list(tx, &self.keys.root, epoch)?)
    }

    fn trust_in(&self, tx: &mut dyn Tx) -> Result<TrustStore, BackofficeError> {
        Ok(TrustStore::new(
            self.root_key(),
            self.policy_in(tx)?,
            self.revocations_in(tx)?,
        )?)
    }

    pub fn advance_epoch(&self) -> Result<Epoch, BackofficeError> {
        self.store.transact(|tx| {
            tx.execute("UPDATE node_meta SET v = v + 1 WHERE k = 'epoch'", &[])?;
            Ok(meta(tx, "epoch")? as Epoch)
        })
    }

    // ---- operators ------------------------------------------------------

    /// Central bank: mint `amount` into the DCP's settlement account.
    pub fn mint(&self, idem: &str, amount: u64) -> Result<Invariant, BackofficeError> {
        self.store.transact(|tx| {
            Ledger::mint(tx, &format!("mint:{idem}"), DCP_ACCOUNT, amount)?;
            Ok(Ledger::assert_invariant(tx)?)
        })
    }

    /// DCP: credit a user's account from the DCP's settlement account
    /// (the user paid in bank money). Opens the account if needed.
    pub fn deposit(&self, idem: &str, account: &str, amount: u64) -> Result<i64, BackofficeError> {
        if !valid_account_name(account) {
            return Err(BackofficeError::Decode(CodecError::Malformed));
        }
        let acct = user_account(account);
        self.store.transact(|tx| {
            Ledger::ensure_account(tx, &acct, AccountKind::User)?;
            Ledger::transfer(
                tx,
                &TransferRequest {
                    idem: format!("deposit:{idem}"),
                    debit: DCP_ACCOUNT.into(),
                    credit: acct.clone(),
                    amount,
                    code: code::TRANSFER,
                },
            )?;
            Ledger::assert_invariant(tx)?;
            Ok(Ledger::balance(tx, &acct)?)
        })
    }

    pub fn account_balance(&self, account: &str) -> Result<i64, BackofficeError> {
        self.store
            .transact(|tx| Ok(Ledger::balance(tx, &user_account(account))?))
    }

    pub fn invariant(&self) -> Result<Invariant, BackofficeError> {
        self.store.transact(|tx| Ok(Ledger::invariant(tx)?))
    }

    pub fn devices(&self) -> Result<Vec<SeEntry>, BackofficeError> {
        self.store.transact(|tx| Ok(Directory::list(tx)?))
    }

    /// Double spends found so far: (outpoint record, index, value, offender key bytes).
    pub fn double_spends(&self) -> Result<Vec<(Hash32, u8, u64, Vec<u8>)>, BackofficeError> {
        self.store.transact(|tx| {
            tx.query(
                "SELECT record, idx, value, offender_key FROM double_spends ORDER BY seq",
                &[],
            )?
            .iter()
            .map(|r| -> Result<_, BackofficeError> {
                Ok((
                    Hash32(
                        r.bytes(0)?
                            .try_into()
                            .map_err(|_| StoreError::Type("hash".into()))?,
                    ),
                    r.int(1)? as u8,
                    r.int(2)? as u64,
                    r.bytes(3)?.to_vec(),
                ))
            })
            .collect()
        })
    }

    // ---- devices --------------------------------------------------------

    /// Onboarding: registers the SE in the directory (attestation checked)
    /// and links it to a user account at this DCP. Idempotent.
    pub fn register(&self, reg: &Registration) -> Result<Hash32, BackofficeError> {
        if !valid_account_name(&reg.account) {
            return Err(BackofficeError::Decode(CodecError::Malformed));
        }
        self.store.transact(|tx| {
            let e = Directory::register(tx, &reg.attestation_key, reg.device_class, &reg.maker, &reg.signature)?;
            let acct = user_account(&reg.account);
            Ledger::ensure_account(tx, &acct, AccountKind::User)?;
            if tx.query_one("SELECT account FROM dcp_devices WHERE se_id = $1", &[b(&e.se_id)])?.is_none() {
                tx.execute(
                    "INSERT INTO dcp_devices (se_id, account, device_class, tier, last_counter, sync_seq) VALUES ($1, $2, $3, 0, 0, 0)",
                    &[b(&e.se_id), acct.into(), Value::Int(i64::from(reg.device_class))],
                )?;
            }
            Ok(e.se_id)
        })
    }

    /// Handles one signed device request (CBOR) and returns the CBOR
    /// response. Authenticated, idempotent, atomic.
    pub fn handle_device(&self, body: &[u8]) -> Result<Vec<u8>, BackofficeError> {
        let req = DeviceRequest::from_cbor(body)?;
        let rid = req.id();
        self.store.transact(|tx| {
            if let Some(r) = tx.query_one("SELECT response FROM dcp_responses WHERE request_id = $1", &[b(&rid)])? {
                return Ok(r.bytes(0)?.to_vec());
            }
            let entry = Directory::get(tx, &req.se_id)?.ok_or(BackofficeError::UnknownDevice)?;
            let dev = tx
                .query_one("SELECT account, device_class, tier, last_counter, sync_seq FROM dcp_devices WHERE se_id = $1", &[b(&req.se_id)])?
                .ok_or(BackofficeError::UnknownDevice)?;
            if !check_attestation(&entry.attestation_key, &DeviceRequest::challenge(&req.se_id, req.counter, &req.op), &req.signature) {
                return Err(BackofficeError::BadDeviceSignature);
            }
            if entry.status != SeStatus::Active {
                return Err(BackofficeError::DeviceNotActive);
            }
            let last_counter = dev.int(3)?;
            if (req.counter as i64) <= last_counter || req.counter > i64::MAX as u64 {
                return Err(BackofficeError::Replay);
            }
            let ctx = DeviceCtx {
                se_id: req.se_id,
                account: dev.text(0)?.to_string(),
                class: dev.int(1)? as u8,
                tier: dev.int(2)? as u8,
                sync_seq: dev.int(4)? as u64,
                rid,
            };
            let resp = self.execute(tx, &ctx, &req.op)?;
            let bytes = resp.to_cbor();
            tx.execute("UPDATE dcp_devices SET last_counter = $1 WHERE se_id = $2", &[Value::Int(req.counter as i64), b(&req.se_id)])?;
            tx.execute(
                "INSERT INTO dcp_responses (request_id, se_id, response) VALUES ($1, $2, $3)",
                &[b(&rid), b(&req.se_id), bytes.clone().into()],
            )?;
            Ledger::assert_invariant(tx)?;
            Ok(bytes)
        })
    }

    fn execute(
        &self,
        tx: &mut dyn Tx,
        ctx: &DeviceCtx,
        op: &DeviceOp,
    ) -> Result<DeviceResponse, BackofficeError> {
        let epoch = meta(tx, "epoch")? as Epoch;
        match op {
            DeviceOp::Certify { keys } => {
                let mut certs = Vec::with_capacity(keys.len());
                for k in keys {
                    check_key(k).map_err(|_| BackofficeError::BadKey)?;
                    certs.push(PseudonymCertificate::sign(
                        &self.keys.dcp,
                        *k,
                        epoch + CERT_VALIDITY_EPOCHS,
                        ctx.class,
                        ctx.tier,
                        Vec::new(),
                    ));
                }
                Ok(DeviceResponse::Certificates(certs))
            }
            DeviceOp::Load { amount, key } => {
                check_key(key).map_err(|_| BackofficeError::BadKey)?;
                Ledger::transfer(
                    tx,
                    &TransferRequest {
                        idem: format!("load:{}", ctx.rid),
                        debit: ctx.account.clone(),
                        credit: ledger::OFFLINE_FLOAT.into(),
                        amount: *amount,
                        code: code::LOAD,
                    },
                )?;
                let issue = self.issue(tx, epoch, *amount, *key)?;
                Ok(DeviceResponse::Issued(issue))
            }
            DeviceOp::RedemptionRequest { amount, unload } => {
                if *amount == 0 {
                    return Err(BackofficeError::Ledger(LedgerError::ZeroAmount));
                }
                let mut nonce = [0u8; 16];
                nonce.copy_from_slice(
                    &tagged_hash(b"tally/v1/redemption-nonce", &[&ctx.rid.0]).0[..16],
                );
                tx.execute(
                    "INSERT INTO dcp_redemptions (nonce, se_id, amount, unload, done) VALUES ($1, $2, $3, $4, 0)",
                    &[nonce.to_vec().into(), b(&ctx.se_id), Value::Int(*amount as i64), Value::Int(i64::from(*unload))],
                )?;
                let cert = PseudonymCertificate::sign(
                    &self.keys.dcp,
                    self.dcp_key(),
                    epoch + CERT_VALIDITY_EPOCHS,
                    device_class::DCP,
                    0,
                    Vec::new(),
                );
                Ok(DeviceResponse::Redemption(Request {
                    amount: Amount(*amount),
                    nonce,
                    payee: cert,
                    payee_epoch: epoch,
                }))
            }
            DeviceOp::Redeem { package, key } => self.redeem(tx, ctx, epoch, package, key),
            DeviceOp::Sync { packages, closed } => self.sync(tx, ctx, epoch, packages, closed),
            DeviceOp::PayOnline { to_account, amount } => {
                Ledger::transfer(
                    tx,
                    &TransferRequest {
                        idem: format!("online:{}", ctx.rid),
                        debit: ctx.account.clone(),
                        credit: user_account(to_account),
                        amount: *amount,
                        code: code::ONLINE_PAYMENT,
                    },
                )?;
                Ok(DeviceResponse::Balance {
                    balance: Ledger::balance(tx, &ctx.account)? as u64,
                })
            }
            DeviceOp::Balance => Ok(DeviceResponse::Balance {
                balance: Ledger::balance(tx, &ctx.account)? as u64,
            }),
        }
    }

    fn issue(
        &self,
        tx: &mut dyn Tx,
        epoch: Epoch,
        amount: u64,
        key: PublicKey,
    ) -> Result<Issue, BackofficeError> {
        tx.execute(
            "UPDATE node_meta SET v = v + 1 WHERE k = 'issue_serial'",
            &[],
        )?;
        let serial = meta(tx, "issue_serial")? as u64;
        let issue = Issue::sign(
            &self.keys.dcp,
            serial,
            epoch + TOKEN_VALIDITY_EPOCHS,
            vec![Output {
                value: Amount(amount),
                owner: key,
            }],
        );
        Settlement::register_issue(tx, DCP_ID, &issue)?;
        Ok(issue)
    }

    fn verify_for_settlement(
        &self,
        tx: &mut dyn Tx,
        bytes: &[u8],
    ) -> Result<tally_core::VerifiedPackage, BackofficeError> {
        let pkg = Package::from_cbor(bytes)?;
        let trust = self.trust_in(tx)?;
        let budget = trust
            .policy()
            .limits(device_class::DCP, 0)
            .map(|l| usize::from(l.history_records_max))
            .unwrap_or(1024);
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| StoreError::Db("cache poisoned".into()))?;
        Ok(verify_package_for_settlement(
            pkg,
            &trust,
            VerifyParams {
                epoch: 0,
                history_records_max: budget,
                signature_batch_max: usize::MAX,
            },
            &mut *cache,
        )?)
    }

    fn redeem(
        &self,
        tx: &mut dyn Tx,
        ctx: &DeviceCtx,
        epoch: Epoch,
        package: &[u8],
        key: &PublicKey,
    ) -> Result<DeviceResponse, BackofficeError> {
        check_key(key).map_err(|_| BackofficeError::BadKey)?;
        let verified = self.verify_for_settlement(tx, package)?;
        let t = &verified.package().transfer;
        let red = tx
            .query_one(
                "SELECT se_id, amount, unload, done FROM dcp_redemptions WHERE nonce = $1",
                &[t.nonce.to_vec().into()],
            )?
            .ok_or(BackofficeError::UnknownRedemption)?;
        if red.bytes(0)? != ctx.se_id.0.as_slice() || red.int(3)? != 0 {
            return Err(BackofficeError::UnknownRedemption);
        }
        let amount = red.int(1)? as u64;
        let unload = red.int(2)? != 0;
        if t.outputs[0]
            != (Output {
                value: Amount(amount),
                owner: self.dcp_key(),
            })
        {
            return Err(BackofficeError::WrongRedemption);
        }
        let outcome = Settlement::settle(tx, &verified, &format!("redeem:{}", ctx.rid))?;
        let tid = verified.transfer_id();
        if let Some(d) = outcome.double_spends.iter().find(|d| d.second.id() == tid) {
            // The redeemer itself is the cheater: nothing is honoured (the
            // transaction rolls back); the evidence goes back to the caller.
            return Err(BackofficeError::DoubleSpendByRedeemer(Box::new(d.clone())));
        }
        tx.execute(
            "UPDATE dcp_redemptions SET done = 1 WHERE nonce = $1",
            &[t.nonce.to_vec().into()],
        )?;
        let receipt = tally_core::Receipt::sign(&self.keys.dcp, tid);
        if unload {
            Ledger::transfer(
                tx,
                &TransferRequest {
                    idem: format!("unload:{}", ctx.rid),
                    debit: ledger::OFFLINE_FLOAT.into(),
                    credit: ctx.account.clone(),
                    amount,
                    code: code::UNLOAD,
                },
            )?;
            Ok(DeviceResponse::Unloaded {
                balance: Ledger::balance(tx, &ctx.account)? as u64,
                receipt,
            })
        } else {
            Ok(DeviceResponse::Renewed {
                issue: self.issue(tx, epoch, amount, *key)?,
                receipt,
            })
        }
    }

    fn sync(
        &self,
        tx: &mut dyn Tx,
        ctx: &DeviceCtx,
        epoch: Epoch,
        packages: &[Vec<u8>],
        closed: &[ClosedRequest],
    ) -> Result<DeviceResponse, BackofficeError> {
        let mut double_spends = 0u32;
        for (i, p) in packages.iter().enumerate() {
            let verified = self.verify_for_settlement(tx, p)?;
            let outcome = Settlement::settle(tx, &verified, &format!("sync:{}:{i}", ctx.rid))?;
            double_spends += outcome.double_spends.len() as u32;
            let t = &verified.package().transfer;
            let tid = verified.transfer_id();
            if tx
                .query_one(
                    "SELECT amount FROM dcp_uploads WHERE transfer_id = $1",
                    &[b(&tid)],
                )?
                .is_none()
            {
                tx.execute(
                    "INSERT INTO dcp_uploads (transfer_id, nonce, payee_key, amount, package) VALUES ($1, $2, $3, $4, $5)",
                    &[b(&tid), t.nonce.to_vec().into(), t.outputs[0].owner.to_cbor().into(), Value::Int(t.outputs[0].value.0 as i64), p.clone().into()],
                )?;
            }
            self.pair(tx, epoch, &t.nonce, &t.outputs[0].owner)?;
        }
        for c in closed {
            let k = [Value::Bytes(c.nonce.to_vec()), c.key.to_cbor().into()];
            if tx
                .query_one(
                    "SELECT amount FROM dcp_closed WHERE nonce = $1 AND payee_key = $2",
                    &k,
                )?
                .is_none()
            {
                tx.execute(
                    "INSERT INTO dcp_closed (nonce, payee_key, se_id, amount) VALUES ($1, $2, $3, $4)",
                    &[k[0].clone(), k[1].clone(), b(&ctx.se_id), Value::Int(c.amount as i64)],
                )?;
            }
            self.pair(tx, epoch, &c.nonce, &c.key)?;
        }
        let mut recovered = Vec::new();
        for r in tx.query(
            "SELECT transfer_id, issue FROM dcp_recoveries WHERE se_id = $1 AND delivered = 0",
            &[b(&ctx.se_id)],
        )? {
            recovered.push(Issue::from_cbor(r.bytes(1)?)?);
            tx.execute(
                "UPDATE dcp_recoveries SET delivered = 1 WHERE transfer_id = $1",
                &[r.bytes(0)?.to_vec().into()],
            )?;
        }
        let seq = ctx.sync_seq + 1;
        tx.execute(
            "UPDATE dcp_devices SET sync_seq = $1 WHERE se_id = $2",
            &[Value::Int(seq as i64), b(&ctx.se_id)],
        )?;
        Ok(DeviceResponse::Synced(SyncBundle {
            policy: self.policy_in(tx)?,
            revocations: self.revocations_in(tx)?,
            grant: SyncGrant::sign(&self.keys.dcp, ctx.se_id, epoch, seq),
            recovered,
            double_spends,
        }))
    }

    /// Interrupted payment: the payer's uploaded package and the payee's
    /// closed request, whichever came first. When both are here the payee
    /// is credited once: the stranded output is consumed for good and an
    /// equal fresh token is issued to the payee's key.
    fn pair(
        &self,
        tx: &mut dyn Tx,
        epoch: Epoch,
        nonce: &[u8; 16],
        key: &PublicKey,
    ) -> Result<(), BackofficeError> {
        let k = [Value::Bytes(nonce.to_vec()), key.to_cbor().into()];
        let Some(up) = tx.query_one(
            "SELECT transfer_id, amount FROM dcp_uploads WHERE nonce = $1 AND payee_key = $2",
            &k,
        )?
        else {
            return Ok(());
        };
        let Some(cl) = tx.query_one(
            "SELECT se_id, amount FROM dcp_closed WHERE nonce = $1 AND payee_key = $2",
            &k,
        )?
        else {
            return Ok(());
        };
        let tid = Hash32(
            up.bytes(0)?
                .try_into()
                .map_err(|_| StoreError::Type("hash".into()))?,
        );
        let amount = up.int(1)? as u64;
        if cl.int(1)? as u64 != amount {
            return Ok(()); // not the payment the payee asked for
        }
        let by = tagged_hash(b"tally/v1/recovery", &[&tid.0]);
        if !Settlement::consume_stranded(
            tx,
            &OutPoint {
                record: tid,
                index: 0,
            },
            &by,
        )? {
            return Ok(()); // already recovered (or the payee did receive it)
        }
        let issue = self.issue(tx, epoch, amount, *key)?;
        tx.execute(
            "INSERT INTO dcp_recoveries (transfer_id, se_id, issue, delivered) VALUES ($1, $2, $3, 0)",
            &[b(&tid), cl.bytes(0)?.to_vec().into(), issue.to_cbor().into()],
        )?;
        Ok(())
    }
}

struct DeviceCtx {
    se_id: Hash32,
    account: String,
    class: u8,
    tier: u8,
    sync_seq: u64,
    rid: Hash32,
}
