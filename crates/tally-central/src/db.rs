//! The central bank's store: every SQL statement of this crate, behind
//! two domain traits — [`CentralDb`] (the central bank's own tables:
//! epoch, signed documents, stored answers, the DCPs' inboxes, escrows,
//! redemptions, uploads, reports, mailboxes, SE ownership and the MDS
//! outbox) and [`KeyCustodyDb`] (pinned public keys, legacy seeds and
//! migration state, for any party's store). Both are implemented once,
//! for `dyn Tx`, in tally-store's portable dialect (SQLite and
//! PostgreSQL run the same statements). The ledger's and settlement's
//! tables are reached through tally-ledger's traits, the directory's
//! through tally-directory.
//!
//! Columns are read by position only here, each right next to the SELECT
//! whose column list it decodes. `tests/db_conformance.rs` holds every
//! method to its contract on both backends and fails if SQL appears
//! anywhere else in `src/`.

use std::collections::{BTreeMap, BTreeSet};

use tally_core::Hash32;
use tally_store::{Migrations, Row, StoreError, Tx, Value};

use crate::central::InboxEntry;
use crate::monitoring::OutboxRow;

// ---- schema -----------------------------------------------------------------

/// The central bank's own tables (ledger, settlement and directory have
/// theirs).
pub static CENTRAL_MIGRATIONS: Migrations = Migrations {
    component: "central",
    steps: &[(
        1,
        "CREATE TABLE node_meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL);
        INSERT INTO node_meta (k, v) VALUES ('epoch', 1);
        CREATE TABLE node_secrets (role TEXT PRIMARY KEY, suite BIGINT NOT NULL, seed BLOB NOT NULL);
        CREATE TABLE node_docs (k TEXT PRIMARY KEY, body BLOB NOT NULL);
        CREATE TABLE cb_ops (op_id BLOB PRIMARY KEY, reply BLOB NOT NULL);
        CREATE TABLE cb_uploads (
            transfer_id BLOB PRIMARY KEY,
            nonce BLOB NOT NULL,
            payee_key BLOB NOT NULL,
            amount BIGINT NOT NULL
        );
        CREATE TABLE cb_closed (
            nonce BLOB NOT NULL,
            payee_key BLOB NOT NULL,
            mailbox BLOB NOT NULL,
            amount BIGINT NOT NULL,
            PRIMARY KEY (nonce, payee_key)
        );
        CREATE TABLE cb_recoveries (
            transfer_id BLOB PRIMARY KEY,
            mailbox BLOB NOT NULL,
            issue BLOB NOT NULL,
            delivered BIGINT NOT NULL
        );
        CREATE TABLE cb_escrows (key_id BLOB PRIMARY KEY, escrow BLOB NOT NULL);
        CREATE TABLE cb_redemptions (nonce BLOB PRIMARY KEY, op_id BLOB NOT NULL);
        CREATE TABLE mds_outbox (op_id BLOB PRIMARY KEY, body BLOB NOT NULL)",
    )],
};

/// When each MDS outbox row was queued (unix seconds; 0 for rows queued
/// before this column), for the outbox-age metric. Its own component so
/// its steps never collide with the central bank's.
pub static OUTBOX_MIGRATIONS: Migrations = Migrations {
    component: "central_outbox",
    steps: &[(
        1,
        "ALTER TABLE mds_outbox ADD COLUMN queued_at BIGINT NOT NULL DEFAULT 0",
    )],
};

/// Request reports (received or closed), the uploader of each unacknowledged
/// package, and tokens waiting in a device's mailbox until a sync names a
/// key for them (recoveries to payees, refunds to payers).
pub static REPORT_MIGRATIONS: Migrations = Migrations {
    component: "central_reports",
    steps: &[(
        1,
        "ALTER TABLE cb_closed ADD COLUMN received BLOB;
        ALTER TABLE cb_uploads ADD COLUMN mailbox BLOB;
        CREATE TABLE cb_mailbox (
            transfer_id BLOB PRIMARY KEY,
            mailbox BLOB NOT NULL,
            amount BIGINT NOT NULL,
            refund BIGINT NOT NULL,
            issue BLOB,
            delivered BIGINT NOT NULL
        );
        INSERT INTO cb_mailbox (transfer_id, mailbox, amount, refund, issue, delivered)
            SELECT transfer_id, mailbox, 0, 0, issue, 0 FROM cb_recoveries WHERE delivered = 0;
        DELETE FROM cb_recoveries WHERE delivered = 0",
    )],
};

/// Drops the table of key seeds (central store). Its own component, run
/// only once the seeds are out (see tally-dcp's `Backoffice::open_with`).
/// The public keys the node first started with are kept (step 2), so a
/// node started later with other keys (a wrong key directory or token) is
/// refused instead of silently becoming another root.
pub static CENTRAL_KEY_CUSTODY_MIGRATIONS: Migrations = Migrations {
    component: "central_key_custody",
    steps: &[
        (1, "DROP TABLE node_secrets"),
        (
            2,
            "CREATE TABLE node_public_keys (role TEXT PRIMARY KEY, key BLOB NOT NULL)",
        ),
    ],
};

/// Which DCP each mailbox, upload and report came through, which DCP
/// enrolled each SE, and the credits waiting for each DCP (interbank
/// payments, mints). Its own component so its steps never collide.
pub static PARTIES_MIGRATIONS: Migrations = Migrations {
    component: "central_parties",
    steps: &[(
        1,
        "ALTER TABLE cb_uploads ADD COLUMN dcp BIGINT NOT NULL DEFAULT 1;
        ALTER TABLE cb_closed ADD COLUMN dcp BIGINT NOT NULL DEFAULT 1;
        ALTER TABLE cb_mailbox ADD COLUMN dcp BIGINT NOT NULL DEFAULT 1;
        CREATE TABLE cb_device_dcp (se_id BLOB PRIMARY KEY, dcp BIGINT NOT NULL);
        CREATE TABLE cb_inbox (
            op_id BLOB PRIMARY KEY,
            dcp BIGINT NOT NULL,
            account TEXT,
            amount BIGINT NOT NULL,
            from_dcp BIGINT NOT NULL
        )",
    )],
};

/// Revoked role certificates: the key pin (SHA-256 of the
/// SubjectPublicKeyInfo) of each, the role it named and when. Kept for
/// ever: a revocation is never undone (issue a new key instead).
pub static ROLE_REVOCATION_MIGRATIONS: Migrations = Migrations {
    component: "central_role_revocations",
    steps: &[(
        1,
        "CREATE TABLE cb_role_revocations (
            pin BLOB PRIMARY KEY,
            role TEXT NOT NULL,
            revoked_at BIGINT NOT NULL
        )",
    )],
};

// ---- row types ------------------------------------------------------------------

/// A credit to queue for a DCP (`cb_inbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxCredit<'a> {
    pub op: &'a Hash32,
    pub dcp: u32,
    /// The account at that DCP; `None` for its settlement account.
    pub account: Option<&'a str>,
    pub amount: u64,
    pub from_dcp: u32,
}

/// The MDS outbox's size and its oldest queue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub pending: i64,
    /// Oldest `queued_at` above 0 (0 when none).
    pub oldest_queued_at: i64,
}

/// A transfer's value waiting in a device's mailbox (`cb_mailbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRow {
    pub mailbox: Hash32,
    pub amount: i64,
    /// The delivered Issue (CBOR); `None` until delivered.
    pub issue: Option<Vec<u8>>,
    pub dcp: i64,
}

/// A new mailbox entry: a recovery (to the payee) or a refund (to the payer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewMailboxEntry<'a> {
    pub transfer_id: &'a Hash32,
    pub mailbox: &'a Hash32,
    pub amount: i64,
    pub refund: bool,
    pub dcp: i64,
}

/// A delivery waiting in a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingDelivery {
    pub transfer_id: Hash32,
    pub amount: i64,
}

/// The uploader of a settled package (`cb_uploads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewUpload<'a> {
    pub transfer_id: &'a Hash32,
    pub nonce: &'a [u8; 16],
    /// The payee's key (CBOR).
    pub payee_key: &'a [u8],
    pub amount: i64,
    pub mailbox: &'a Hash32,
    pub dcp: i64,
}

/// An upload as request resolution reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadRow {
    pub transfer_id: Hash32,
    pub amount: i64,
    /// The uploader's mailbox; `None` for uploads from before refunds.
    pub mailbox: Option<Hash32>,
    pub dcp: i64,
}

/// A payee's report that closed a request (`cb_closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedReport<'a> {
    pub nonce: &'a [u8; 16],
    /// The request's key (CBOR).
    pub payee_key: &'a [u8],
    pub mailbox: &'a Hash32,
    pub amount: i64,
    /// The transfer the payee received; `None` if none.
    pub received: Option<&'a Hash32>,
    pub dcp: i64,
}

/// A closing report as request resolution reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedRow {
    pub mailbox: Hash32,
    pub amount: i64,
    pub received: Option<Hash32>,
    pub dcp: i64,
}

// ---- the central bank's tables ------------------------------------------------

/// The central bank's own tables.
pub trait CentralDb {
    /// The current epoch (its row must exist).
    fn epoch(&mut self) -> Result<i64, StoreError>;
    /// Moves the epoch on by one.
    fn advance_epoch(&mut self) -> Result<(), StoreError>;

    /// The signed policy (CBOR), if one was signed.
    fn policy_doc(&mut self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores the first signed policy.
    fn insert_policy_doc(&mut self, body: &[u8]) -> Result<(), StoreError>;
    /// Replaces the signed policy.
    fn update_policy_doc(&mut self, body: &[u8]) -> Result<(), StoreError>;
    /// The trusted manufacturers' keys (a CBOR list), if any were trusted.
    fn manufacturers_doc(&mut self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the list of trusted manufacturers.
    fn replace_manufacturers_doc(&mut self, body: &[u8]) -> Result<(), StoreError>;

    /// Records the revocation of the role certificate key `pin` (naming
    /// `role`, at unix time `at`); whether it is new (a second revocation
    /// of one key keeps the first row).
    fn insert_role_revocation(
        &mut self,
        pin: &[u8; 32],
        role: &str,
        at: i64,
    ) -> Result<bool, StoreError>;
    /// Every revoked role certificate key pin, in pin order.
    fn role_revocations(&mut self) -> Result<Vec<[u8; 32]>, StoreError>;

    /// The stored (encrypted) answer to request `op_key`.
    fn stored_reply(&mut self, op_key: &Hash32) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores the answer to `op_key` (a second one is
    /// [`StoreError::Constraint`]).
    fn insert_reply(&mut self, op_key: &Hash32, sealed: &[u8]) -> Result<(), StoreError>;
    /// The stored answers among `op_keys`, by key (one statement per
    /// [`BATCH_ROWS_MAX`] keys).
    fn stored_replies(
        &mut self,
        op_keys: &[Hash32],
    ) -> Result<BTreeMap<Hash32, Vec<u8>>, StoreError>;
    /// Stores answers (`op_key`, sealed answer), one statement per
    /// [`BATCH_ROWS_MAX`] rows (a key answered before is
    /// [`StoreError::Constraint`]).
    fn insert_replies(&mut self, rows: &[(Hash32, Vec<u8>)]) -> Result<(), StoreError>;

    /// Queues a credit for a DCP (a used op is [`StoreError::Constraint`]).
    fn insert_inbox(&mut self, c: &InboxCredit<'_>) -> Result<(), StoreError>;
    /// Up to `max` credits waiting for `dcp`, by op.
    fn inbox(&mut self, dcp: u32, max: usize) -> Result<Vec<InboxEntry>, StoreError>;
    /// Removes credit `op` of `dcp` (another DCP's is left); returns the
    /// rows removed.
    fn delete_inbox(&mut self, dcp: u32, op: &Hash32) -> Result<u64, StoreError>;

    /// The escrow of a settled certificate's pseudonym `key_id`.
    fn escrow(&mut self, key_id: &Hash32) -> Result<Option<Vec<u8>>, StoreError>;
    fn has_escrow(&mut self, key_id: &Hash32) -> Result<bool, StoreError>;
    fn insert_escrow(&mut self, key_id: &Hash32, escrow: &[u8]) -> Result<(), StoreError>;
    /// Which of `key_ids` have an escrow stored (one statement).
    fn escrows_known(&mut self, key_ids: &[Hash32]) -> Result<BTreeSet<Hash32>, StoreError>;
    /// Stores escrows of keys that have none (one statement; a key
    /// already stored is a store error, as for [`CentralDb::insert_escrow`]).
    fn insert_escrows(&mut self, rows: &[(Hash32, &[u8])]) -> Result<(), StoreError>;

    /// The redemption-op tag a DCP's redemption request `nonce` was paid
    /// under.
    fn redemption_op(&mut self, nonce: &[u8; 16]) -> Result<Option<Vec<u8>>, StoreError>;
    fn insert_redemption(&mut self, nonce: &[u8; 16], tag: &Hash32) -> Result<(), StoreError>;

    /// Whether outbox row `op` exists.
    fn outbox_has(&mut self, op: &Hash32) -> Result<bool, StoreError>;
    /// Queues an outbox row (a used op is [`StoreError::Constraint`]).
    fn insert_outbox(&mut self, op: &Hash32, body: &[u8], queued_at: i64)
    -> Result<(), StoreError>;
    /// Queues outbox rows (`op`, body), one statement per
    /// [`BATCH_ROWS_MAX`] rows (a used op is [`StoreError::Constraint`]).
    fn insert_outboxes(
        &mut self,
        rows: &[(Hash32, Vec<u8>)],
        queued_at: i64,
    ) -> Result<(), StoreError>;
    fn outbox_backlog(&mut self) -> Result<OutboxBacklog, StoreError>;
    /// Up to `max` outbox rows, by op.
    fn outbox_rows(&mut self, max: usize) -> Result<Vec<OutboxRow>, StoreError>;
    /// Removes outbox row `op`; returns the rows removed.
    fn delete_outbox(&mut self, op: &[u8]) -> Result<u64, StoreError>;

    /// The DCP that enrolled SE `se_id`.
    fn device_dcp(&mut self, se_id: &Hash32) -> Result<Option<i64>, StoreError>;
    fn insert_device_dcp(&mut self, se_id: &Hash32, dcp: u32) -> Result<(), StoreError>;

    /// The mailbox entry of transfer `transfer_id`.
    fn mailbox_entry(&mut self, transfer_id: &Hash32) -> Result<Option<MailboxRow>, StoreError>;
    /// Marks a mailbox entry delivered with its Issue.
    fn set_delivered(&mut self, transfer_id: &Hash32, issue: &[u8]) -> Result<(), StoreError>;
    /// Up to 64 undelivered entries of `mailbox` at `dcp`, by transfer id.
    fn waiting_deliveries(
        &mut self,
        mailbox: &Hash32,
        dcp: u32,
    ) -> Result<Vec<WaitingDelivery>, StoreError>;
    /// [`CentralDb::waiting_deliveries`] of several (mailbox, DCP) pairs
    /// in one statement (per [`BATCH_ROWS_MAX`] mailboxes): each pair's
    /// up to 64, by transfer id; a pair with none is absent.
    #[allow(clippy::type_complexity)]
    fn waiting_deliveries_of(
        &mut self,
        mailboxes: &[(Hash32, u32)],
    ) -> Result<BTreeMap<(Hash32, u32), Vec<WaitingDelivery>>, StoreError>;
    /// Whether `mailbox` holds a recovery (not a refund) of an upload
    /// paying request (`nonce`, `payee_key`).
    fn recovery_credited(
        &mut self,
        mailbox: &Hash32,
        nonce: &[u8; 16],
        payee_key: &[u8],
    ) -> Result<bool, StoreError>;
    fn insert_mailbox(&mut self, e: &NewMailboxEntry<'_>) -> Result<(), StoreError>;

    /// Whether an upload of `transfer_id` is recorded.
    fn upload_exists(&mut self, transfer_id: &Hash32) -> Result<bool, StoreError>;
    fn insert_upload(&mut self, u: &NewUpload<'_>) -> Result<(), StoreError>;
    /// Which of `transfer_ids` have an upload recorded (one statement).
    fn uploads_known(&mut self, transfer_ids: &[Hash32]) -> Result<BTreeSet<Hash32>, StoreError>;
    /// Records uploads not recorded yet (one statement).
    fn insert_uploads(&mut self, rows: &[NewUpload<'_>]) -> Result<(), StoreError>;
    /// Uploads paying request (`nonce`, `payee_key`), by transfer id.
    fn uploads_for(
        &mut self,
        nonce: &[u8; 16],
        payee_key: &[u8],
    ) -> Result<Vec<UploadRow>, StoreError>;

    /// Whether request (`nonce`, `payee_key`) was closed by a report.
    fn closed_exists(&mut self, nonce: &[u8; 16], payee_key: &[u8]) -> Result<bool, StoreError>;
    /// The closed requests (`nonce`, payee key) among requests of the
    /// `nonces` (one statement).
    fn closed_requests(&mut self, nonces: &[[u8; 16]]) -> Result<ClosedRequests, StoreError>;
    fn insert_closed(&mut self, r: &ClosedReport<'_>) -> Result<(), StoreError>;
    /// The report that closed request (`nonce`, `payee_key`).
    fn closed_report(
        &mut self,
        nonce: &[u8; 16],
        payee_key: &[u8],
    ) -> Result<Option<ClosedRow>, StoreError>;
}

/// Requests closed by a payee's report: (`nonce`, the request key's CBOR).
pub type ClosedRequests = BTreeSet<([u8; 16], Vec<u8>)>;

/// `$first, …, $(first + n - 1)`: an `IN (…)` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `VALUES` rows of a multi-row INSERT of `rows` rows of `columns`.
fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(r * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ids among `ids` that `select_in` (`SELECT <one hash column> FROM …
/// WHERE <column> IN`) finds, one statement per [`BATCH_ROWS_MAX`] ids.
fn hashes_present(
    tx: &mut (dyn Tx + '_),
    select_in: &str,
    ids: &[Hash32],
) -> Result<BTreeSet<Hash32>, StoreError> {
    let mut found = BTreeSet::new();
    for chunk in ids.chunks(BATCH_ROWS_MAX) {
        let sql = format!("{select_in} ({})", placeholders(1, chunk.len()));
        let params: Vec<Value> = chunk.iter().map(hash_value).collect();
        for r in tx.query(&sql, &params)? {
            found.insert(hash(r.bytes(0)?)?);
        }
    }
    Ok(found)
}

/// `insert_values` (`INSERT INTO t (columns…) VALUES`) of `rows`, one
/// multi-row statement per [`BATCH_ROWS_MAX`] rows; every row has the same
/// number of values.
fn insert_rows(
    tx: &mut (dyn Tx + '_),
    insert_values: &str,
    rows: impl Iterator<Item = Vec<Value>>,
) -> Result<(), StoreError> {
    let rows: Vec<Vec<Value>> = rows.collect();
    for chunk in rows.chunks(BATCH_ROWS_MAX) {
        let columns = chunk[0].len();
        let sql = format!("{insert_values} {}", value_rows(chunk.len(), columns));
        let params: Vec<Value> = chunk.iter().flatten().cloned().collect();
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

/// Rows per statement of the batched look-ups and inserts: far below both
/// backends' parameter limits (SQLite 32 766, PostgreSQL 65 535) at six
/// columns.
const BATCH_ROWS_MAX: usize = 512;

pub(crate) fn hash_value(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

fn hash(bytes: &[u8]) -> Result<Hash32, StoreError> {
    Ok(Hash32(
        bytes
            .try_into()
            .map_err(|_| StoreError::Type("hash".into()))?,
    ))
}

fn first_bytes(row: Option<Row>) -> Result<Option<Vec<u8>>, StoreError> {
    row.map(|r| r.bytes(0).map(<[u8]>::to_vec)).transpose()
}

/// Decodes `SELECT op_id, account, amount, from_dcp FROM cb_inbox`.
fn inbox_entry(r: &Row) -> Result<InboxEntry, StoreError> {
    Ok(InboxEntry {
        op: hash(r.bytes(0)?)?,
        account: if r.is_null(1) {
            None
        } else {
            Some(r.text(1)?.to_string())
        },
        amount: r.int(2)? as u64,
        from_dcp: r.int(3)? as u32,
    })
}

/// Decodes `SELECT op_id, body FROM mds_outbox`.
fn outbox_row(r: &Row) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        op: r.bytes(0)?.to_vec(),
        body: r.bytes(1)?.to_vec(),
    })
}

/// Decodes `SELECT mailbox, amount, issue, dcp FROM cb_mailbox`.
fn mailbox_row(r: &Row) -> Result<MailboxRow, StoreError> {
    Ok(MailboxRow {
        mailbox: hash(r.bytes(0)?)?,
        amount: r.int(1)?,
        issue: r.opt_bytes(2)?.map(<[u8]>::to_vec),
        dcp: r.int(3)?,
    })
}

/// Decodes `SELECT transfer_id, amount FROM cb_mailbox`.
fn waiting_delivery(r: &Row) -> Result<WaitingDelivery, StoreError> {
    Ok(WaitingDelivery {
        transfer_id: hash(r.bytes(0)?)?,
        amount: r.int(1)?,
    })
}

/// Decodes `SELECT transfer_id, amount, mailbox, dcp FROM cb_uploads`.
fn upload_row(r: &Row) -> Result<UploadRow, StoreError> {
    Ok(UploadRow {
        transfer_id: hash(r.bytes(0)?)?,
        amount: r.int(1)?,
        mailbox: r.opt_bytes(2)?.map(hash).transpose()?,
        dcp: r.int(3)?,
    })
}

/// Decodes `SELECT mailbox, amount, received, dcp FROM cb_closed`.
fn closed_row(r: &Row) -> Result<ClosedRow, StoreError> {
    Ok(ClosedRow {
        mailbox: hash(r.bytes(0)?)?,
        amount: r.int(1)?,
        received: r.opt_bytes(2)?.map(hash).transpose()?,
        dcp: r.int(3)?,
    })
}

fn request_key(nonce: &[u8; 16], payee_key: &[u8]) -> [Value; 2] {
    [Value::Bytes(nonce.to_vec()), payee_key.into()]
}

impl<'a> CentralDb for dyn Tx + 'a {
    fn epoch(&mut self) -> Result<i64, StoreError> {
        self.query_one("SELECT v FROM node_meta WHERE k = $1", &["epoch".into()])?
            .ok_or_else(|| StoreError::Type("node_meta.epoch missing".into()))?
            .int(0)
    }

    fn advance_epoch(&mut self) -> Result<(), StoreError> {
        self.execute("UPDATE node_meta SET v = v + 1 WHERE k = 'epoch'", &[])?;
        Ok(())
    }

    fn policy_doc(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.query_one("SELECT body FROM node_docs WHERE k = 'policy'", &[])?;
        first_bytes(row)
    }

    fn insert_policy_doc(&mut self, body: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO node_docs (k, body) VALUES ('policy', $1)",
            &[body.into()],
        )?;
        Ok(())
    }

    fn update_policy_doc(&mut self, body: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "UPDATE node_docs SET body = $1 WHERE k = 'policy'",
            &[body.into()],
        )?;
        Ok(())
    }

    fn manufacturers_doc(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.query_one("SELECT body FROM node_docs WHERE k = 'manufacturers'", &[])?;
        first_bytes(row)
    }

    fn replace_manufacturers_doc(&mut self, body: &[u8]) -> Result<(), StoreError> {
        self.execute("DELETE FROM node_docs WHERE k = 'manufacturers'", &[])?;
        self.execute(
            "INSERT INTO node_docs (k, body) VALUES ('manufacturers', $1)",
            &[body.into()],
        )?;
        Ok(())
    }

    fn insert_role_revocation(
        &mut self,
        pin: &[u8; 32],
        role: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let n = self.execute(
            "INSERT INTO cb_role_revocations (pin, role, revoked_at) VALUES ($1, $2, $3)
             ON CONFLICT (pin) DO NOTHING",
            &[Value::Bytes(pin.to_vec()), role.into(), Value::Int(at)],
        )?;
        Ok(n == 1)
    }

    fn role_revocations(&mut self) -> Result<Vec<[u8; 32]>, StoreError> {
        self.query("SELECT pin FROM cb_role_revocations ORDER BY pin", &[])?
            .iter()
            .map(|r| hash(r.bytes(0)?).map(|h| h.0))
            .collect()
    }

    fn stored_reply(&mut self, op_key: &Hash32) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.query_one(
            "SELECT reply FROM cb_ops WHERE op_id = $1",
            &[hash_value(op_key)],
        )?;
        first_bytes(row)
    }

    fn insert_reply(&mut self, op_key: &Hash32, sealed: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO cb_ops (op_id, reply) VALUES ($1, $2)",
            &[hash_value(op_key), sealed.into()],
        )?;
        Ok(())
    }

    fn stored_replies(
        &mut self,
        op_keys: &[Hash32],
    ) -> Result<BTreeMap<Hash32, Vec<u8>>, StoreError> {
        let mut found = BTreeMap::new();
        for chunk in op_keys.chunks(BATCH_ROWS_MAX) {
            let sql = format!(
                "SELECT op_id, reply FROM cb_ops WHERE op_id IN ({})",
                placeholders(1, chunk.len())
            );
            let params: Vec<Value> = chunk.iter().map(hash_value).collect();
            for r in self.query(&sql, &params)? {
                found.insert(hash(r.bytes(0)?)?, r.bytes(1)?.to_vec());
            }
        }
        Ok(found)
    }

    fn insert_replies(&mut self, rows: &[(Hash32, Vec<u8>)]) -> Result<(), StoreError> {
        insert_rows(
            self,
            "INSERT INTO cb_ops (op_id, reply) VALUES",
            rows.iter()
                .map(|(k, r)| vec![hash_value(k), Value::Bytes(r.clone())]),
        )
    }

    fn insert_inbox(&mut self, c: &InboxCredit<'_>) -> Result<(), StoreError> {
        let account = match c.account {
            Some(a) => Value::Text(a.to_string()),
            None => Value::Null,
        };
        self.execute(
            "INSERT INTO cb_inbox (op_id, dcp, account, amount, from_dcp) VALUES ($1, $2, $3, $4, $5)",
            &[
                hash_value(c.op),
                Value::Int(i64::from(c.dcp)),
                account,
                Value::Int(c.amount as i64),
                Value::Int(i64::from(c.from_dcp)),
            ],
        )?;
        Ok(())
    }

    fn inbox(&mut self, dcp: u32, max: usize) -> Result<Vec<InboxEntry>, StoreError> {
        self.query(
            &format!("SELECT op_id, account, amount, from_dcp FROM cb_inbox WHERE dcp = $1 ORDER BY op_id LIMIT {max}"),
            &[Value::Int(i64::from(dcp))],
        )?
        .iter()
        .map(inbox_entry)
        .collect()
    }

    fn delete_inbox(&mut self, dcp: u32, op: &Hash32) -> Result<u64, StoreError> {
        self.execute(
            "DELETE FROM cb_inbox WHERE op_id = $1 AND dcp = $2",
            &[hash_value(op), Value::Int(i64::from(dcp))],
        )
    }

    fn escrow(&mut self, key_id: &Hash32) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.query_one(
            "SELECT escrow FROM cb_escrows WHERE key_id = $1",
            &[hash_value(key_id)],
        )?;
        first_bytes(row)
    }

    fn has_escrow(&mut self, key_id: &Hash32) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT key_id FROM cb_escrows WHERE key_id = $1",
                &[hash_value(key_id)],
            )?
            .is_some())
    }

    fn insert_escrow(&mut self, key_id: &Hash32, escrow: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO cb_escrows (key_id, escrow) VALUES ($1, $2)",
            &[hash_value(key_id), escrow.into()],
        )?;
        Ok(())
    }

    fn escrows_known(&mut self, key_ids: &[Hash32]) -> Result<BTreeSet<Hash32>, StoreError> {
        hashes_present(
            self,
            "SELECT key_id FROM cb_escrows WHERE key_id IN",
            key_ids,
        )
    }

    fn insert_escrows(&mut self, rows: &[(Hash32, &[u8])]) -> Result<(), StoreError> {
        insert_rows(
            self,
            "INSERT INTO cb_escrows (key_id, escrow) VALUES",
            rows.iter()
                .map(|(k, e)| vec![hash_value(k), Value::Bytes(e.to_vec())]),
        )
    }

    fn redemption_op(&mut self, nonce: &[u8; 16]) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.query_one(
            "SELECT op_id FROM cb_redemptions WHERE nonce = $1",
            &[nonce.to_vec().into()],
        )?;
        first_bytes(row)
    }

    fn insert_redemption(&mut self, nonce: &[u8; 16], tag: &Hash32) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO cb_redemptions (nonce, op_id) VALUES ($1, $2)",
            &[nonce.to_vec().into(), hash_value(tag)],
        )?;
        Ok(())
    }

    fn outbox_has(&mut self, op: &Hash32) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT op_id FROM mds_outbox WHERE op_id = $1",
                &[hash_value(op)],
            )?
            .is_some())
    }

    fn insert_outbox(
        &mut self,
        op: &Hash32,
        body: &[u8],
        queued_at: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO mds_outbox (op_id, body, queued_at) VALUES ($1, $2, $3)",
            &[hash_value(op), body.into(), Value::Int(queued_at)],
        )?;
        Ok(())
    }

    fn insert_outboxes(
        &mut self,
        rows: &[(Hash32, Vec<u8>)],
        queued_at: i64,
    ) -> Result<(), StoreError> {
        insert_rows(
            self,
            "INSERT INTO mds_outbox (op_id, body, queued_at) VALUES",
            rows.iter().map(|(op, body)| {
                vec![
                    hash_value(op),
                    Value::Bytes(body.clone()),
                    Value::Int(queued_at),
                ]
            }),
        )
    }

    fn outbox_backlog(&mut self) -> Result<OutboxBacklog, StoreError> {
        let r = self.query_one(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(MIN(CASE WHEN queued_at > 0 THEN queued_at END), 0) AS BIGINT) FROM mds_outbox",
            &[],
        )?;
        Ok(match r {
            Some(r) => OutboxBacklog {
                pending: r.int(0)?,
                oldest_queued_at: r.int(1)?,
            },
            None => OutboxBacklog {
                pending: 0,
                oldest_queued_at: 0,
            },
        })
    }

    fn outbox_rows(&mut self, max: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.query(
            &format!("SELECT op_id, body FROM mds_outbox ORDER BY op_id LIMIT {max}"),
            &[],
        )?
        .iter()
        .map(outbox_row)
        .collect()
    }

    fn delete_outbox(&mut self, op: &[u8]) -> Result<u64, StoreError> {
        self.execute("DELETE FROM mds_outbox WHERE op_id = $1", &[op.into()])
    }

    fn device_dcp(&mut self, se_id: &Hash32) -> Result<Option<i64>, StoreError> {
        self.query_one(
            "SELECT dcp FROM cb_device_dcp WHERE se_id = $1",
            &[hash_value(se_id)],
        )?
        .map(|r| r.int(0))
        .transpose()
    }

    fn insert_device_dcp(&mut self, se_id: &Hash32, dcp: u32) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO cb_device_dcp (se_id, dcp) VALUES ($1, $2)",
            &[hash_value(se_id), Value::Int(i64::from(dcp))],
        )?;
        Ok(())
    }

    fn mailbox_entry(&mut self, transfer_id: &Hash32) -> Result<Option<MailboxRow>, StoreError> {
        self.query_one(
            "SELECT mailbox, amount, issue, dcp FROM cb_mailbox WHERE transfer_id = $1",
            &[hash_value(transfer_id)],
        )?
        .map(|r| mailbox_row(&r))
        .transpose()
    }

    fn set_delivered(&mut self, transfer_id: &Hash32, issue: &[u8]) -> Result<(), StoreError> {
        self.execute(
            "UPDATE cb_mailbox SET delivered = 1, issue = $1 WHERE transfer_id = $2",
            &[issue.into(), hash_value(transfer_id)],
        )?;
        Ok(())
    }

    fn waiting_deliveries(
        &mut self,
        mailbox: &Hash32,
        dcp: u32,
    ) -> Result<Vec<WaitingDelivery>, StoreError> {
        self.query(
            "SELECT transfer_id, amount FROM cb_mailbox WHERE mailbox = $1 AND dcp = $2 AND delivered = 0 ORDER BY transfer_id LIMIT 64",
            &[hash_value(mailbox), Value::Int(i64::from(dcp))],
        )?
        .iter()
        .map(waiting_delivery)
        .collect()
    }

    fn waiting_deliveries_of(
        &mut self,
        mailboxes: &[(Hash32, u32)],
    ) -> Result<BTreeMap<(Hash32, u32), Vec<WaitingDelivery>>, StoreError> {
        let wanted: BTreeSet<(Hash32, u32)> = mailboxes.iter().copied().collect();
        let boxes: Vec<Hash32> = wanted
            .iter()
            .map(|(m, _)| *m)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out: BTreeMap<(Hash32, u32), Vec<WaitingDelivery>> = BTreeMap::new();
        for chunk in boxes.chunks(BATCH_ROWS_MAX) {
            // Each (mailbox, DCP)'s first 64 by transfer id, as
            // `waiting_deliveries` reads one.
            let sql = format!(
                "SELECT mailbox, dcp, transfer_id, amount FROM (\
                 SELECT mailbox, dcp, transfer_id, amount, ROW_NUMBER() OVER \
                 (PARTITION BY mailbox, dcp ORDER BY transfer_id) AS n \
                 FROM cb_mailbox WHERE delivered = 0 AND mailbox IN ({})) AS w \
                 WHERE n <= 64 ORDER BY mailbox, dcp, transfer_id",
                placeholders(1, chunk.len())
            );
            let params: Vec<Value> = chunk.iter().map(hash_value).collect();
            for r in self.query(&sql, &params)? {
                let key = (
                    hash(r.bytes(0)?)?,
                    u32::try_from(r.int(1)?).map_err(|_| StoreError::Type("dcp".into()))?,
                );
                if wanted.contains(&key) {
                    out.entry(key).or_default().push(WaitingDelivery {
                        transfer_id: hash(r.bytes(2)?)?,
                        amount: r.int(3)?,
                    });
                }
            }
        }
        Ok(out)
    }

    fn recovery_credited(
        &mut self,
        mailbox: &Hash32,
        nonce: &[u8; 16],
        payee_key: &[u8],
    ) -> Result<bool, StoreError> {
        let [n, k] = request_key(nonce, payee_key);
        Ok(self
            .query_one(
                "SELECT transfer_id FROM cb_mailbox WHERE mailbox = $1 AND refund = 0 AND transfer_id IN (SELECT transfer_id FROM cb_uploads WHERE nonce = $2 AND payee_key = $3)",
                &[hash_value(mailbox), n, k],
            )?
            .is_some())
    }

    fn insert_mailbox(&mut self, e: &NewMailboxEntry<'_>) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO cb_mailbox (transfer_id, mailbox, amount, refund, issue, delivered, dcp) VALUES ($1, $2, $3, $4, NULL, 0, $5)",
            &[
                hash_value(e.transfer_id),
                hash_value(e.mailbox),
                Value::Int(e.amount),
                Value::Int(i64::from(e.refund)),
                Value::Int(e.dcp),
            ],
        )?;
        Ok(())
    }

    fn upload_exists(&mut self, transfer_id: &Hash32) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT amount FROM cb_uploads WHERE transfer_id = $1",
                &[hash_value(transfer_id)],
            )?
            .is_some())
    }

    fn insert_upload(&mut self, u: &NewUpload<'_>) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO cb_uploads (transfer_id, nonce, payee_key, amount, mailbox, dcp) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                hash_value(u.transfer_id),
                u.nonce.to_vec().into(),
                u.payee_key.into(),
                Value::Int(u.amount),
                hash_value(u.mailbox),
                Value::Int(u.dcp),
            ],
        )?;
        Ok(())
    }

    fn uploads_known(&mut self, transfer_ids: &[Hash32]) -> Result<BTreeSet<Hash32>, StoreError> {
        hashes_present(
            self,
            "SELECT transfer_id FROM cb_uploads WHERE transfer_id IN",
            transfer_ids,
        )
    }

    fn insert_uploads(&mut self, rows: &[NewUpload<'_>]) -> Result<(), StoreError> {
        insert_rows(
            self,
            "INSERT INTO cb_uploads (transfer_id, nonce, payee_key, amount, mailbox, dcp) VALUES",
            rows.iter().map(|u| {
                vec![
                    hash_value(u.transfer_id),
                    u.nonce.to_vec().into(),
                    u.payee_key.into(),
                    Value::Int(u.amount),
                    hash_value(u.mailbox),
                    Value::Int(u.dcp),
                ]
            }),
        )
    }

    fn uploads_for(
        &mut self,
        nonce: &[u8; 16],
        payee_key: &[u8],
    ) -> Result<Vec<UploadRow>, StoreError> {
        self.query(
            "SELECT transfer_id, amount, mailbox, dcp FROM cb_uploads WHERE nonce = $1 AND payee_key = $2 ORDER BY transfer_id",
            &request_key(nonce, payee_key),
        )?
        .iter()
        .map(upload_row)
        .collect()
    }

    fn closed_exists(&mut self, nonce: &[u8; 16], payee_key: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT amount FROM cb_closed WHERE nonce = $1 AND payee_key = $2",
                &request_key(nonce, payee_key),
            )?
            .is_some())
    }

    fn closed_requests(&mut self, nonces: &[[u8; 16]]) -> Result<ClosedRequests, StoreError> {
        let mut closed = BTreeSet::new();
        for chunk in nonces.chunks(BATCH_ROWS_MAX) {
            let sql = format!(
                "SELECT nonce, payee_key FROM cb_closed WHERE nonce IN ({})",
                placeholders(1, chunk.len())
            );
            let params: Vec<Value> = chunk.iter().map(|n| Value::Bytes(n.to_vec())).collect();
            for r in self.query(&sql, &params)? {
                let nonce: [u8; 16] = r
                    .bytes(0)?
                    .try_into()
                    .map_err(|_| StoreError::Type("request nonce".into()))?;
                closed.insert((nonce, r.bytes(1)?.to_vec()));
            }
        }
        Ok(closed)
    }

    fn insert_closed(&mut self, r: &ClosedReport<'_>) -> Result<(), StoreError> {
        let [n, k] = request_key(r.nonce, r.payee_key);
        let received = match r.received {
            Some(t) => hash_value(t),
            None => Value::Null,
        };
        self.execute(
            "INSERT INTO cb_closed (nonce, payee_key, mailbox, amount, received, dcp) VALUES ($1, $2, $3, $4, $5, $6)",
            &[n, k, hash_value(r.mailbox), Value::Int(r.amount), received, Value::Int(r.dcp)],
        )?;
        Ok(())
    }

    fn closed_report(
        &mut self,
        nonce: &[u8; 16],
        payee_key: &[u8],
    ) -> Result<Option<ClosedRow>, StoreError> {
        self.query_one(
            "SELECT mailbox, amount, received, dcp FROM cb_closed WHERE nonce = $1 AND payee_key = $2",
            &request_key(nonce, payee_key),
        )?
        .map(|r| closed_row(&r))
        .transpose()
    }
}

// ---- key custody ------------------------------------------------------------------

/// Key custody in any party's store: the public keys it first started
/// with, the seeds an older node left in it, and whether a component has
/// run any migration. Table names are the caller's constants
/// (`node_public_keys`, `node_secrets`, a DCP's own), never input.
pub trait KeyCustodyDb {
    /// Records `key` for `role` in `table` unless a key is pinned already.
    fn pin_key_if_absent(&mut self, table: &str, role: &str, key: &[u8]) -> Result<(), StoreError>;
    /// The key pinned for `role` in `table`.
    fn pinned_key(&mut self, table: &str, role: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The seed of `role` in the legacy seed table `table`.
    fn legacy_seed(&mut self, table: &str, role: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The highest migration step `component` has run (0: none).
    fn migration_version(&mut self, component: &str) -> Result<i64, StoreError>;
}

impl<'a> KeyCustodyDb for dyn Tx + 'a {
    fn pin_key_if_absent(&mut self, table: &str, role: &str, key: &[u8]) -> Result<(), StoreError> {
        self.execute(
            &format!(
                "INSERT INTO {table} (role, key) VALUES ($1, $2) ON CONFLICT (role) DO NOTHING"
            ),
            &[role.into(), key.into()],
        )?;
        Ok(())
    }

    fn pinned_key(&mut self, table: &str, role: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.query_one(
            &format!("SELECT key FROM {table} WHERE role = $1"),
            &[role.into()],
        )?;
        first_bytes(row)
    }

    fn legacy_seed(&mut self, table: &str, role: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.query_one(
            &format!("SELECT seed FROM {table} WHERE role = $1"),
            &[role.into()],
        )?;
        first_bytes(row)
    }

    fn migration_version(&mut self, component: &str) -> Result<i64, StoreError> {
        Ok(self
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = $1",
                &[component.into()],
            )?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0))
    }
}
