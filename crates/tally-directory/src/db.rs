//! The directory's store: every SQL statement of this crate, behind the
//! [`DirectoryDb`] trait. Business rules (attestation, idempotency, the
//! revocation bounds) stay in [`crate::Directory`]; the methods here are
//! single domain reads and writes with typed arguments and results.
//!
//! One implementation serves both backends: tally-store runs one portable
//! SQL dialect on SQLite and PostgreSQL, so the trait is implemented once,
//! for `dyn Tx`, and every caller keeps its own transaction. Column
//! positions are read only here, in the decoder next to the SELECT whose
//! column list it decodes (tests/db_conformance.rs guards this).

use tally_core::codec::Cbor;
use tally_core::{Hash32, PublicKey, RevocationList};
use tally_store::{Migrations, Row, StoreError, Tx, Value};

use crate::{SeEntry, SeStatus};

pub static MIGRATIONS: Migrations = Migrations {
    component: "directory",
    steps: &[
        (
            1,
            "CREATE TABLE se_registry (
            se_id BLOB PRIMARY KEY,
            attestation_key BLOB NOT NULL,
            device_class BIGINT NOT NULL,
            maker TEXT NOT NULL,
            status BIGINT NOT NULL
        );
        CREATE TABLE revoked_keys (key_id BLOB PRIMARY KEY, se_id BLOB, reason TEXT NOT NULL);
        CREATE TABLE revocation_lists (serial BIGINT PRIMARY KEY, body BLOB NOT NULL)",
        ),
        (
            2,
            // Digest of each SE's escrow identity point (decision 0006): what an
            // opening resolves to. The point itself stays with the SE's DCP.
            "CREATE TABLE se_escrow_ids (id_digest BLOB PRIMARY KEY, se_id BLOB NOT NULL)",
        ),
    ],
};

/// A revocation list as stored: its serial (the table's key) and the
/// signed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRevocationList {
    pub serial: i64,
    pub list: RevocationList,
}

/// The directory's domain operations on its tables (`se_registry`,
/// `se_escrow_ids`, `revoked_keys`, `revocation_lists`).
pub trait DirectoryDb {
    /// Inserts a new SE, active. A second insert of the same id is refused
    /// by the key ([`StoreError::Constraint`]).
    fn se_insert(
        &mut self,
        se_id: &Hash32,
        attestation_key: &PublicKey,
        device_class: u8,
        maker: &str,
    ) -> Result<(), StoreError>;
    /// The SE `se_id`, if registered.
    fn se_get(&mut self, se_id: &Hash32) -> Result<Option<SeEntry>, StoreError>;
    /// Every SE, by id (bytewise ascending).
    fn se_list(&mut self) -> Result<Vec<SeEntry>, StoreError>;
    /// Sets the status of `se_id`; false if there is no such SE.
    fn se_set_status(&mut self, se_id: &Hash32, status: SeStatus) -> Result<bool, StoreError>;

    /// Records `digest` as the escrow identity digest of `se_id`. A digest
    /// stored before (for any SE) is refused by the key.
    fn escrow_id_insert(&mut self, digest: &Hash32, se_id: &Hash32) -> Result<(), StoreError>;
    /// The escrow identity digest of `se_id`, if recorded.
    fn escrow_id_of_se(&mut self, se_id: &Hash32) -> Result<Option<Hash32>, StoreError>;
    /// The SE whose escrow identity digest is `digest`, if any.
    fn se_of_escrow_id(&mut self, digest: &Hash32) -> Result<Option<Hash32>, StoreError>;

    /// Whether `key_id` is on the revoked list.
    fn revoked_key_listed(&mut self, key_id: &Hash32) -> Result<bool, StoreError>;
    /// How many keys are revoked.
    fn revoked_key_count(&mut self) -> Result<usize, StoreError>;
    /// Adds `key_id` (of SE `se_id`, if known) to the revoked list. A key
    /// listed before is refused by the key.
    fn revoked_key_insert(
        &mut self,
        key_id: &Hash32,
        se_id: Option<&Hash32>,
        reason: &str,
    ) -> Result<(), StoreError>;
    /// Every revoked key id, bytewise ascending.
    fn revoked_key_ids(&mut self) -> Result<Vec<Hash32>, StoreError>;

    /// The signed revocation list with the highest serial, if any.
    fn revocation_list_last(&mut self) -> Result<Option<StoredRevocationList>, StoreError>;
    /// Stores a signed list under `serial`; a serial used before is
    /// refused by the key.
    fn revocation_list_insert(
        &mut self,
        serial: i64,
        list: &RevocationList,
    ) -> Result<(), StoreError>;
}

fn hash_col(r: &Row, i: usize, what: &str) -> Result<Hash32, StoreError> {
    Ok(Hash32(
        r.bytes(i)?
            .try_into()
            .map_err(|_| StoreError::Type(what.into()))?,
    ))
}

fn h(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

const SE_COLUMNS: &str = "se_id, attestation_key, device_class, maker, status";

/// Decodes a row of `SELECT {SE_COLUMNS} FROM se_registry`.
fn se_from_row(r: &Row) -> Result<SeEntry, StoreError> {
    Ok(SeEntry {
        se_id: hash_col(r, 0, "se_id")?,
        attestation_key: PublicKey::from_cbor(r.bytes(1)?)
            .map_err(|e| StoreError::Type(e.to_string()))?,
        device_class: u8::try_from(r.int(2)?).map_err(|_| StoreError::Type("class".into()))?,
        maker: r.text(3)?.to_string(),
        status: SeStatus::from_code(r.int(4)?).ok_or_else(|| StoreError::Type("status".into()))?,
    })
}

/// Decodes a row of `SELECT serial, body FROM revocation_lists`.
fn revocation_list_from_row(r: &Row) -> Result<StoredRevocationList, StoreError> {
    Ok(StoredRevocationList {
        serial: r.int(0)?,
        list: RevocationList::from_cbor(r.bytes(1)?)
            .map_err(|e| StoreError::Type(e.to_string()))?,
    })
}

impl<'a> DirectoryDb for dyn Tx + 'a {
    fn se_insert(
        &mut self,
        se_id: &Hash32,
        attestation_key: &PublicKey,
        device_class: u8,
        maker: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO se_registry (se_id, attestation_key, device_class, maker, status) VALUES ($1, $2, $3, $4, $5)",
            &[
                h(se_id),
                attestation_key.to_cbor().into(),
                Value::Int(i64::from(device_class)),
                maker.into(),
                Value::Int(SeStatus::Active as i64),
            ],
        )?;
        Ok(())
    }

    fn se_get(&mut self, se_id: &Hash32) -> Result<Option<SeEntry>, StoreError> {
        self.query_one(
            &format!("SELECT {SE_COLUMNS} FROM se_registry WHERE se_id = $1"),
            &[h(se_id)],
        )?
        .map(|r| se_from_row(&r))
        .transpose()
    }

    fn se_list(&mut self) -> Result<Vec<SeEntry>, StoreError> {
        self.query(
            &format!("SELECT {SE_COLUMNS} FROM se_registry ORDER BY se_id"),
            &[],
        )?
        .iter()
        .map(se_from_row)
        .collect()
    }

    fn se_set_status(&mut self, se_id: &Hash32, status: SeStatus) -> Result<bool, StoreError> {
        let n = self.execute(
            "UPDATE se_registry SET status = $1 WHERE se_id = $2",
            &[Value::Int(status as i64), h(se_id)],
        )?;
        Ok(n > 0)
    }

    fn escrow_id_insert(&mut self, digest: &Hash32, se_id: &Hash32) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO se_escrow_ids (id_digest, se_id) VALUES ($1, $2)",
            &[h(digest), h(se_id)],
        )?;
        Ok(())
    }

    fn escrow_id_of_se(&mut self, se_id: &Hash32) -> Result<Option<Hash32>, StoreError> {
        self.query_one(
            "SELECT id_digest FROM se_escrow_ids WHERE se_id = $1",
            &[h(se_id)],
        )?
        .map(|r| hash_col(&r, 0, "digest"))
        .transpose()
    }

    fn se_of_escrow_id(&mut self, digest: &Hash32) -> Result<Option<Hash32>, StoreError> {
        self.query_one(
            "SELECT se_id FROM se_escrow_ids WHERE id_digest = $1",
            &[h(digest)],
        )?
        .map(|r| hash_col(&r, 0, "se id"))
        .transpose()
    }

    fn revoked_key_listed(&mut self, key_id: &Hash32) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT reason FROM revoked_keys WHERE key_id = $1",
                &[h(key_id)],
            )?
            .is_some())
    }

    fn revoked_key_count(&mut self) -> Result<usize, StoreError> {
        let n = self
            .query_one("SELECT CAST(COUNT(*) AS BIGINT) FROM revoked_keys", &[])?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0);
        usize::try_from(n).map_err(|_| StoreError::Type("count".into()))
    }

    fn revoked_key_insert(
        &mut self,
        key_id: &Hash32,
        se_id: Option<&Hash32>,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO revoked_keys (key_id, se_id, reason) VALUES ($1, $2, $3)",
            &[
                h(key_id),
                se_id.map(h).unwrap_or(Value::Null),
                reason.into(),
            ],
        )?;
        Ok(())
    }

    fn revoked_key_ids(&mut self) -> Result<Vec<Hash32>, StoreError> {
        self.query("SELECT key_id FROM revoked_keys ORDER BY key_id", &[])?
            .iter()
            .map(|r| hash_col(r, 0, "key id"))
            .collect()
    }

    fn revocation_list_last(&mut self) -> Result<Option<StoredRevocationList>, StoreError> {
        self.query_one(
            "SELECT serial, body FROM revocation_lists ORDER BY serial DESC LIMIT 1",
            &[],
        )?
        .map(|r| revocation_list_from_row(&r))
        .transpose()
    }

    fn revocation_list_insert(
        &mut self,
        serial: i64,
        list: &RevocationList,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO revocation_lists (serial, body) VALUES ($1, $2)",
            &[Value::Int(serial), list.to_cbor().into()],
        )?;
        Ok(())
    }
}
