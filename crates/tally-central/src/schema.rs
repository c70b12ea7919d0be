//! The central bank's own tables (ledger, settlement and directory have
//! theirs), and the small helpers its SQL shares.

use tally_core::Hash32;
use tally_store::{Migrations, StoreError, Tx, Value};

use crate::BackofficeError;

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

pub(crate) fn b(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

pub(crate) fn hash(bytes: &[u8]) -> Result<Hash32, StoreError> {
    Ok(Hash32(
        bytes
            .try_into()
            .map_err(|_| StoreError::Type("hash".into()))?,
    ))
}

pub(crate) fn meta(tx: &mut dyn Tx, k: &str) -> Result<i64, BackofficeError> {
    Ok(tx
        .query_one("SELECT v FROM node_meta WHERE k = $1", &[k.into()])?
        .ok_or_else(|| StoreError::Type(format!("node_meta.{k} missing")))?
        .int(0)?)
}
