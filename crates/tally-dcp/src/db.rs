//! The DCP's store: every SQL statement of this crate and its migrations,
//! behind two traits — [`DcpDb`] (devices, enrolment codes, the request
//! log, redemption requests, handed-out Issue tags) and [`DcpBookDb`] (the
//! customers' book, [`crate::book`]). Business rules (counters, sagas,
//! the book's invariant) stay in [`crate::service`] and [`crate::book`];
//! the methods here are single domain reads and writes with typed
//! arguments and results.
//!
//! One implementation serves both backends: tally-store runs one portable
//! SQL dialect on SQLite and PostgreSQL, so each trait is implemented
//! once, for `dyn Tx`, and every caller keeps its own transaction. Column
//! positions are read only here, in the decoder next to the SELECT whose
//! column list it decodes (tests/db_conformance.rs guards this). The SQL
//! the DCP runs through tally-central's custody helpers (key seeds, pinned
//! public keys) stays there.

use tally_core::{Epoch, Hash32};
use tally_store::{Migrations, Row, StoreError, Tx, Value};

/// The DCP's tables.
pub static MIGRATIONS: Migrations = Migrations {
    component: "dcp",
    steps: &[(
        1,
        "CREATE TABLE dcp_secrets (role TEXT PRIMARY KEY, suite BIGINT NOT NULL, seed BLOB NOT NULL);
        CREATE TABLE dcp_devices (
            se_id BLOB PRIMARY KEY,
            account TEXT NOT NULL,
            device_class BIGINT NOT NULL,
            tier BIGINT NOT NULL,
            last_counter BIGINT NOT NULL,
            sync_seq BIGINT NOT NULL,
            sync_epoch BIGINT NOT NULL,
            escrow_salt BLOB NOT NULL
        );
        CREATE TABLE dcp_requests (
            request_id BLOB PRIMARY KEY,
            se_id BLOB NOT NULL,
            counter BIGINT NOT NULL,
            response BLOB
        );
        CREATE TABLE dcp_redemptions (
            nonce BLOB PRIMARY KEY,
            se_id BLOB NOT NULL,
            amount BIGINT NOT NULL,
            unload BIGINT NOT NULL,
            done BIGINT NOT NULL
        )",
    ), (
        2,
        // One-time enrolment codes (digests only), bound to the SE that
        // used one.
        "CREATE TABLE dcp_enrolment_codes (
            code_digest BLOB PRIMARY KEY,
            account TEXT NOT NULL,
            se_id BLOB
        )",
    )],
};

/// The refusal of each failed device request, sealed like its response
/// (see [`crate::Backoffice::handle_device`]): a failed request is final.
/// Its own component so its steps never collide with the DCP's.
pub static REFUSAL_MIGRATIONS: Migrations = Migrations {
    component: "dcp_refusals",
    steps: &[(1, "ALTER TABLE dcp_requests ADD COLUMN refusal BLOB")],
};

/// The central calls of debits in flight (the request each in-flight
/// posting waits on), so the DCP can finish them itself when the device
/// never retries (`Backoffice::resolve_in_flight`).
pub static IN_FLIGHT_MIGRATIONS: Migrations = Migrations {
    component: "dcp_in_flight",
    steps: &[(
        1,
        "CREATE TABLE dcp_in_flight (
            idem TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            rid BLOB NOT NULL,
            attempt BIGINT NOT NULL,
            account TEXT NOT NULL,
            amount BIGINT NOT NULL,
            reply_key BLOB NOT NULL,
            request BLOB NOT NULL,
            since BIGINT NOT NULL
        );
        CREATE INDEX dcp_in_flight_since ON dcp_in_flight (since)",
    )],
};

/// Loads the DCP finished itself (`resolve_in_flight`) whose Issue no
/// device has collected yet, and what became of each
/// (`Backoffice::reclaim_uncollected`): the Issue is kept so it can be
/// cancelled at the central bank if its device never comes back.
pub static UNCOLLECTED_MIGRATIONS: Migrations = Migrations {
    component: "dcp_uncollected",
    steps: &[(
        1,
        "CREATE TABLE dcp_uncollected (
            rid BLOB PRIMARY KEY,
            account TEXT NOT NULL,
            amount BIGINT NOT NULL,
            issue BLOB NOT NULL,
            reply_key BLOB NOT NULL,
            since BIGINT NOT NULL,
            state BIGINT NOT NULL
        );
        CREATE INDEX dcp_uncollected_since ON dcp_uncollected (state, since)",
    )],
};

/// Keyed tags of the Issues handed to devices (for cancellation).
pub static ISSUE_TAG_MIGRATIONS: Migrations = Migrations {
    component: "dcp_issues",
    steps: &[(1, "CREATE TABLE dcp_issues (tag BLOB PRIMARY KEY)")],
};

/// Drops the table of key seeds (DCP store); keeps the DCP's public key.
pub static DCP_KEY_CUSTODY_MIGRATIONS: Migrations = Migrations {
    component: "dcp_key_custody",
    steps: &[
        (1, "DROP TABLE dcp_secrets"),
        (
            2,
            "CREATE TABLE dcp_public_keys (role TEXT PRIMARY KEY, key BLOB NOT NULL)",
        ),
    ],
};

/// The book's tables, with the DCP's own three accounts
/// ([`crate::book::OWN`], [`crate::book::IN_FLIGHT`],
/// [`crate::book::SUSPENSE`]) and its running totals at zero.
pub static BOOK_MIGRATIONS: Migrations = Migrations {
    component: "dcp_book",
    steps: &[(
        1,
        "CREATE TABLE dcp_accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL);
        CREATE TABLE dcp_postings (
            idem TEXT PRIMARY KEY,
            debit TEXT,
            credit TEXT,
            amount BIGINT NOT NULL
        );
        CREATE TABLE dcp_book_totals (k TEXT PRIMARY KEY, v BIGINT NOT NULL);
        INSERT INTO dcp_book_totals (k, v) VALUES ('in', 0);
        INSERT INTO dcp_book_totals (k, v) VALUES ('out', 0);
        INSERT INTO dcp_book_totals (k, v) VALUES ('sum', 0);
        INSERT INTO dcp_accounts (name, balance) VALUES ('dcp:own', 0);
        INSERT INTO dcp_accounts (name, balance) VALUES ('dcp:in-flight', 0);
        INSERT INTO dcp_accounts (name, balance) VALUES ('dcp:suspense', 0)",
    )],
};

// ---- rows ------------------------------------------------------------------

/// One enrolment code of an account: its digest and the SE it is bound
/// to (`None`: not used yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentCode {
    pub digest: Hash32,
    pub se_id: Option<Hash32>,
}

/// A device as the DCP first records it: linked to `account`, tier 0,
/// no request seen (counter 0), never synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice<'a> {
    pub se_id: &'a Hash32,
    pub account: &'a str,
    pub device_class: u8,
    /// The secret escrow salt (see [`crate::service`]).
    pub salt: &'a [u8; 32],
}

/// What a device request needs of its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub account: String,
    pub device_class: u8,
    pub tier: u8,
    /// The sequence of the last sync grant (its request's counter).
    pub sync_seq: i64,
    pub sync_epoch: Epoch,
    pub salt: [u8; 32],
}

/// A logged device request's outcome: its sealed response, or its sealed
/// refusal, or neither (claimed, not finished).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoggedRequest {
    pub response: Option<Vec<u8>>,
    pub refusal: Option<Vec<u8>>,
}

/// A redemption request the DCP signed for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redemption {
    pub se_id: Hash32,
    pub amount: u64,
    pub unload: bool,
    /// Its redemption was answered (the nonce cannot be redeemed again).
    pub done: bool,
}

/// A posting of the book as stored (`None`: across the book's edge).
/// A debit in flight: the in-flight posting `idem` (`{kind}:{rid}:{attempt}`)
/// of `amount` from `account`, waiting on the central call `request`
/// (CBOR `CentralRequest`) for device request `rid` with `reply_key`,
/// since `since` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub idem: String,
    pub kind: String,
    pub rid: Hash32,
    pub attempt: u32,
    pub account: String,
    pub amount: u64,
    pub reply_key: Hash32,
    pub request: Vec<u8>,
    pub since: i64,
}

/// What became of a load's Issue the DCP finished without its device
/// (`dcp_uncollected.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// Not handed to the device yet.
    Waiting,
    /// Handed to the device (its retry got the answer): never reclaimed.
    Delivered,
    /// Being cancelled at the central bank: the device's retries are
    /// refused from now on.
    Reclaiming,
    /// Cancelled, the amount credited back to the customer.
    Reclaimed,
}

impl Collection {
    fn code(self) -> i64 {
        match self {
            Collection::Waiting => 0,
            Collection::Delivered => 1,
            Collection::Reclaiming => 2,
            Collection::Reclaimed => 3,
        }
    }
    fn from_code(c: i64) -> Result<Collection, StoreError> {
        Ok(match c {
            0 => Collection::Waiting,
            1 => Collection::Delivered,
            2 => Collection::Reclaiming,
            3 => Collection::Reclaimed,
            _ => return Err(StoreError::Type(format!("collection state {c}"))),
        })
    }
}

/// A load the DCP finished itself, its Issue not collected (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncollected {
    /// The device request of the load.
    pub rid: Hash32,
    pub account: String,
    pub amount: u64,
    /// The Issue the central bank registered (CBOR).
    pub issue: Vec<u8>,
    /// The reply key of the load's central call.
    pub reply_key: Hash32,
    /// When the DCP finished the load (Unix seconds).
    pub since: i64,
    pub state: Collection,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub debit: Option<String>,
    pub credit: Option<String>,
    pub amount: i64,
}

/// One of the book's running totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookTotal {
    /// Money that came in from the settlement account.
    MoneyIn,
    /// Money that left to the settlement account.
    MoneyOut,
    /// The running sum of every balance.
    Sum,
}

impl BookTotal {
    /// The total's key in `dcp_book_totals`.
    fn key(self) -> &'static str {
        match self {
            BookTotal::MoneyIn => "in",
            BookTotal::MoneyOut => "out",
            BookTotal::Sum => "sum",
        }
    }
}

/// The book's running totals as stored (a missing one reads 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredTotals {
    pub money_in: i64,
    pub money_out: i64,
    pub sum: i64,
}

/// The book re-summed from every balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookResum {
    pub sum: i64,
    /// Accounts whose balance is below zero.
    pub negative_accounts: i64,
}

// ---- traits -----------------------------------------------------------------

/// The DCP's devices, enrolment codes, request log, redemption requests
/// and handed-out Issue tags.
pub trait DcpDb {
    /// Records a debit in flight (a key stored before is refused).
    fn in_flight_insert(&mut self, f: &InFlight) -> Result<(), StoreError>;
    /// Forgets the debit in flight `idem` (its saga ended); absent: no-op.
    fn in_flight_delete(&mut self, idem: &str) -> Result<(), StoreError>;
    /// Debits in flight since `before` (Unix seconds) or earlier, oldest
    /// first, at most `max`.
    fn in_flight_before(&mut self, before: i64, max: usize) -> Result<Vec<InFlight>, StoreError>;
    /// Records a load finished without its device, as
    /// [`Collection::Waiting`]; a row for `u.rid` already there (the device
    /// collected first) is kept: whether it was new.
    fn uncollected_insert(&mut self, u: &Uncollected) -> Result<bool, StoreError>;
    /// The collection state of load `rid`, if the DCP finished it itself.
    fn uncollected_state(&mut self, rid: &Hash32) -> Result<Option<Collection>, StoreError>;
    /// Moves load `rid` from `from` to `to`; whether it was in `from`.
    fn uncollected_move(
        &mut self,
        rid: &Hash32,
        from: Collection,
        to: Collection,
    ) -> Result<bool, StoreError>;
    /// Loads waiting since `before` (Unix seconds) or earlier, and every
    /// load being reclaimed, oldest first, at most `max`.
    fn uncollected_due(&mut self, before: i64, max: usize) -> Result<Vec<Uncollected>, StoreError>;
    /// Stores a fresh enrolment code's digest for `account`, unbound. A
    /// digest stored before is refused by the key.
    fn enrolment_code_insert(&mut self, digest: &Hash32, account: &str) -> Result<(), StoreError>;
    /// Every enrolment code of `account` (no order promised).
    fn enrolment_codes(&mut self, account: &str) -> Result<Vec<EnrolmentCode>, StoreError>;
    /// Binds the code `digest` to `se_id`.
    fn enrolment_code_bind(&mut self, digest: &Hash32, se_id: &Hash32) -> Result<(), StoreError>;

    /// Records a device. A device recorded before is refused by the key.
    fn device_insert(&mut self, d: &NewDevice<'_>) -> Result<(), StoreError>;
    /// The escrow salt of `se_id`, if the device is recorded.
    fn device_salt(&mut self, se_id: &Hash32) -> Result<Option<[u8; 32]>, StoreError>;
    /// The device `se_id`, if recorded.
    fn device(&mut self, se_id: &Hash32) -> Result<Option<Device>, StoreError>;
    /// The highest request counter `se_id` used, if the device is recorded.
    fn device_last_counter(&mut self, se_id: &Hash32) -> Result<Option<u64>, StoreError>;
    /// Sets the highest request counter of `se_id` (at most `i64::MAX`).
    fn device_set_last_counter(&mut self, se_id: &Hash32, counter: u64) -> Result<(), StoreError>;
    /// Records the sync grant `se_id` got (sequence at most `i64::MAX`).
    fn device_set_synced(
        &mut self,
        se_id: &Hash32,
        sequence: u64,
        epoch: Epoch,
    ) -> Result<(), StoreError>;

    /// The logged request `request_id`, if claimed.
    fn request(&mut self, request_id: &Hash32) -> Result<Option<LoggedRequest>, StoreError>;
    /// Claims `request_id` for `se_id`'s `counter` (at most `i64::MAX`), with
    /// no response yet. A request logged before is refused by the key.
    fn request_insert(
        &mut self,
        request_id: &Hash32,
        se_id: &Hash32,
        counter: u64,
    ) -> Result<(), StoreError>;
    /// Stores the sealed response of `request_id`.
    fn request_set_response(
        &mut self,
        request_id: &Hash32,
        sealed: &[u8],
    ) -> Result<(), StoreError>;
    /// Stores the sealed refusal of `request_id` unless it has a response;
    /// whether it was stored.
    fn request_set_refusal(
        &mut self,
        request_id: &Hash32,
        sealed: &[u8],
    ) -> Result<bool, StoreError>;

    /// Whether the redemption request `nonce` exists.
    fn redemption_exists(&mut self, nonce: &[u8; 16]) -> Result<bool, StoreError>;
    /// The redemption request `nonce`, if any.
    fn redemption(&mut self, nonce: &[u8; 16]) -> Result<Option<Redemption>, StoreError>;
    /// Records a redemption request, not done. Any `u64` amount round-trips
    /// (kept as its 64-bit pattern). A nonce used before is refused by
    /// the key.
    fn redemption_insert(
        &mut self,
        nonce: &[u8; 16],
        se_id: &Hash32,
        amount: u64,
        unload: bool,
    ) -> Result<(), StoreError>;
    /// Marks the redemption request `nonce` done.
    fn redemption_mark_done(&mut self, nonce: &[u8; 16]) -> Result<(), StoreError>;

    /// Whether the handed-out Issue tag `tag` is stored.
    fn issue_tag_exists(&mut self, tag: &Hash32) -> Result<bool, StoreError>;
    /// Stores a handed-out Issue tag. A tag stored before is refused by
    /// the key.
    fn issue_tag_insert(&mut self, tag: &Hash32) -> Result<(), StoreError>;
}

/// The DCP's book: accounts, postings (once per idempotency key) and
/// running totals.
pub trait DcpBookDb {
    /// The balance of `name`, if the account exists.
    fn book_balance(&mut self, name: &str) -> Result<Option<i64>, StoreError>;
    /// Opens `name` with balance 0. An account opened before is refused
    /// by the key.
    fn book_open_account(&mut self, name: &str) -> Result<(), StoreError>;
    /// Whether the posting `idem` exists.
    fn book_posted(&mut self, idem: &str) -> Result<bool, StoreError>;
    /// The posting `idem`, if any.
    fn book_posting(&mut self, idem: &str) -> Result<Option<Posting>, StoreError>;
    /// Stores a posting (balances and totals are moved separately). A key
    /// used before is refused.
    fn book_insert_posting(&mut self, idem: &str, p: &Posting) -> Result<(), StoreError>;
    /// Takes `amount` off the balance of `name` (no row: nothing changes).
    fn book_debit_account(&mut self, name: &str, amount: i64) -> Result<(), StoreError>;
    /// Adds `amount` to the balance of `name` (no row: nothing changes).
    fn book_credit_account(&mut self, name: &str, amount: i64) -> Result<(), StoreError>;
    /// Adds `by` (may be negative) to the running total `total`.
    fn book_add_total(&mut self, total: BookTotal, by: i64) -> Result<(), StoreError>;
    /// The running totals.
    fn book_totals(&mut self) -> Result<StoredTotals, StoreError>;
    /// Every balance re-summed, and how many are negative.
    fn book_resum(&mut self) -> Result<BookResum, StoreError>;
}

// ---- decoders ---------------------------------------------------------------

/// Decodes `SELECT rid, account, amount, issue, reply_key, since, state
/// FROM dcp_uncollected`.
fn uncollected_row(r: &Row) -> Result<Uncollected, StoreError> {
    let hash32 = |b: &[u8]| -> Result<Hash32, StoreError> {
        Ok(Hash32(
            b.try_into().map_err(|_| StoreError::Type("hash".into()))?,
        ))
    };
    Ok(Uncollected {
        rid: hash32(r.bytes(0)?)?,
        account: r.text(1)?.to_string(),
        amount: u64::try_from(r.int(2)?).map_err(|_| StoreError::Type("amount".into()))?,
        issue: r.bytes(3)?.to_vec(),
        reply_key: hash32(r.bytes(4)?)?,
        since: r.int(5)?,
        state: Collection::from_code(r.int(6)?)?,
    })
}

fn in_flight_row(r: &Row) -> Result<InFlight, StoreError> {
    let hash32 = |b: &[u8]| -> Result<Hash32, StoreError> {
        Ok(Hash32(
            b.try_into().map_err(|_| StoreError::Type("hash".into()))?,
        ))
    };
    Ok(InFlight {
        idem: r.text(0)?.to_string(),
        kind: r.text(1)?.to_string(),
        rid: hash32(r.bytes(2)?)?,
        attempt: u32::try_from(r.int(3)?).map_err(|_| StoreError::Type("attempt".into()))?,
        account: r.text(4)?.to_string(),
        amount: u64::try_from(r.int(5)?).map_err(|_| StoreError::Type("amount".into()))?,
        reply_key: hash32(r.bytes(6)?)?,
        request: r.bytes(7)?.to_vec(),
        since: r.int(8)?,
    })
}

fn h(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

fn hash_col(r: &Row, i: usize, what: &str) -> Result<Hash32, StoreError> {
    Ok(Hash32(
        r.bytes(i)?
            .try_into()
            .map_err(|_| StoreError::Type(what.into()))?,
    ))
}

fn salt_col(r: &Row, i: usize) -> Result<[u8; 32], StoreError> {
    r.bytes(i)?
        .try_into()
        .map_err(|_| StoreError::Type("salt".into()))
}

fn u64_param(v: u64, what: &str) -> Result<Value, StoreError> {
    Ok(Value::Int(i64::try_from(v).map_err(|_| {
        StoreError::Type(format!("{what} {v} past i64::MAX"))
    })?))
}

fn opt_text(v: Option<&str>) -> Value {
    match v {
        Some(s) => Value::Text(s.to_string()),
        None => Value::Null,
    }
}

/// Decodes a row of `SELECT code_digest, se_id FROM dcp_enrolment_codes`.
fn enrolment_code_from_row(r: &Row) -> Result<EnrolmentCode, StoreError> {
    Ok(EnrolmentCode {
        digest: hash_col(r, 0, "hash")?,
        se_id: if r.is_null(1) {
            None
        } else {
            Some(hash_col(r, 1, "se id")?)
        },
    })
}

const DEVICE_COLUMNS: &str = "account, device_class, tier, sync_seq, sync_epoch, escrow_salt";

/// Decodes a row of `SELECT {DEVICE_COLUMNS} FROM dcp_devices`.
fn device_from_row(r: &Row) -> Result<Device, StoreError> {
    let small = |i: usize, what: &str| {
        u8::try_from(r.int(i)?).map_err(|_| StoreError::Type(what.to_string()))
    };
    Ok(Device {
        account: r.text(0)?.to_string(),
        device_class: small(1, "device class")?,
        tier: small(2, "tier")?,
        sync_seq: r.int(3)?,
        sync_epoch: Epoch::try_from(r.int(4)?)
            .map_err(|_| StoreError::Type("sync epoch".into()))?,
        salt: salt_col(r, 5)?,
    })
}

/// Decodes a row of `SELECT response, refusal FROM dcp_requests`.
fn logged_request_from_row(r: &Row) -> Result<LoggedRequest, StoreError> {
    Ok(LoggedRequest {
        response: r.opt_bytes(0)?.map(<[u8]>::to_vec),
        refusal: r.opt_bytes(1)?.map(<[u8]>::to_vec),
    })
}

/// Decodes a row of `SELECT se_id, amount, unload, done FROM dcp_redemptions`.
fn redemption_from_row(r: &Row) -> Result<Redemption, StoreError> {
    Ok(Redemption {
        se_id: hash_col(r, 0, "se id")?,
        // The amount's 64-bit pattern, as stored (see `redemption_insert`).
        amount: r.int(1)? as u64,
        unload: r.int(2)? != 0,
        done: r.int(3)? != 0,
    })
}

/// Decodes a row of `SELECT debit, credit, amount FROM dcp_postings`.
fn posting_from_row(r: &Row) -> Result<Posting, StoreError> {
    let side = |i: usize| -> Result<Option<String>, StoreError> {
        Ok(if r.is_null(i) {
            None
        } else {
            Some(r.text(i)?.to_string())
        })
    };
    Ok(Posting {
        debit: side(0)?,
        credit: side(1)?,
        amount: r.int(2)?,
    })
}

/// Decodes the rows of `SELECT k, v FROM dcp_book_totals`.
fn totals_from_rows(rows: &[Row]) -> Result<StoredTotals, StoreError> {
    let mut t = StoredTotals::default();
    for r in rows {
        let v = r.int(1)?;
        match r.text(0)? {
            "in" => t.money_in = v,
            "out" => t.money_out = v,
            "sum" => t.sum = v,
            _ => {}
        }
    }
    Ok(t)
}

/// Decodes the row of the re-sum in [`DcpBookDb::book_resum`].
fn resum_from_row(r: &Row) -> Result<BookResum, StoreError> {
    Ok(BookResum {
        sum: r.int(0)?,
        negative_accounts: r.int(1)?,
    })
}

// ---- the one implementation ----------------------------------------------------

impl<'a> DcpDb for dyn Tx + 'a {
    fn in_flight_insert(&mut self, f: &InFlight) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO dcp_in_flight (idem, kind, rid, attempt, account, amount, reply_key, request, since) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                f.idem.as_str().into(),
                f.kind.as_str().into(),
                h(&f.rid),
                Value::Int(i64::from(f.attempt)),
                f.account.as_str().into(),
                Value::Int(i64::try_from(f.amount).map_err(|_| StoreError::Type("amount".into()))?),
                h(&f.reply_key),
                f.request.clone().into(),
                Value::Int(f.since),
            ],
        )?;
        Ok(())
    }

    fn in_flight_delete(&mut self, idem: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM dcp_in_flight WHERE idem = $1", &[idem.into()])?;
        Ok(())
    }

    fn in_flight_before(&mut self, before: i64, max: usize) -> Result<Vec<InFlight>, StoreError> {
        self.query(
            "SELECT idem, kind, rid, attempt, account, amount, reply_key, request, since FROM dcp_in_flight WHERE since <= $1 ORDER BY since, idem LIMIT $2",
            &[Value::Int(before), Value::Int(max as i64)],
        )?
        .iter()
        .map(in_flight_row)
        .collect()
    }

    fn uncollected_insert(&mut self, u: &Uncollected) -> Result<bool, StoreError> {
        let n = self.execute(
            "INSERT INTO dcp_uncollected (rid, account, amount, issue, reply_key, since, state) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (rid) DO NOTHING",
            &[
                h(&u.rid),
                u.account.as_str().into(),
                Value::Int(i64::try_from(u.amount).map_err(|_| StoreError::Type("amount".into()))?),
                u.issue.clone().into(),
                h(&u.reply_key),
                Value::Int(u.since),
                Value::Int(u.state.code()),
            ],
        )?;
        Ok(n == 1)
    }

    fn uncollected_state(&mut self, rid: &Hash32) -> Result<Option<Collection>, StoreError> {
        self.query_one(
            "SELECT state FROM dcp_uncollected WHERE rid = $1",
            &[h(rid)],
        )?
        .map(|r| Collection::from_code(r.int(0)?))
        .transpose()
    }

    fn uncollected_move(
        &mut self,
        rid: &Hash32,
        from: Collection,
        to: Collection,
    ) -> Result<bool, StoreError> {
        let n = self.execute(
            "UPDATE dcp_uncollected SET state = $1 WHERE rid = $2 AND state = $3",
            &[Value::Int(to.code()), h(rid), Value::Int(from.code())],
        )?;
        Ok(n == 1)
    }

    fn uncollected_due(&mut self, before: i64, max: usize) -> Result<Vec<Uncollected>, StoreError> {
        self.query(
            "SELECT rid, account, amount, issue, reply_key, since, state FROM dcp_uncollected WHERE (state = $1 AND since <= $2) OR state = $3 ORDER BY since, rid LIMIT $4",
            &[
                Value::Int(Collection::Waiting.code()),
                Value::Int(before),
                Value::Int(Collection::Reclaiming.code()),
                Value::Int(max as i64),
            ],
        )?
        .iter()
        .map(uncollected_row)
        .collect()
    }

    fn enrolment_code_insert(&mut self, digest: &Hash32, account: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO dcp_enrolment_codes (code_digest, account, se_id) VALUES ($1, $2, NULL)",
            &[h(digest), account.into()],
        )?;
        Ok(())
    }

    fn enrolment_codes(&mut self, account: &str) -> Result<Vec<EnrolmentCode>, StoreError> {
        self.query(
            "SELECT code_digest, se_id FROM dcp_enrolment_codes WHERE account = $1",
            &[account.into()],
        )?
        .iter()
        .map(enrolment_code_from_row)
        .collect()
    }

    fn enrolment_code_bind(&mut self, digest: &Hash32, se_id: &Hash32) -> Result<(), StoreError> {
        self.execute(
            "UPDATE dcp_enrolment_codes SET se_id = $1 WHERE code_digest = $2",
            &[h(se_id), h(digest)],
        )?;
        Ok(())
    }

    fn device_insert(&mut self, d: &NewDevice<'_>) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO dcp_devices (se_id, account, device_class, tier, last_counter, sync_seq, sync_epoch, escrow_salt) VALUES ($1, $2, $3, 0, 0, 0, 0, $4)",
            &[
                h(d.se_id),
                d.account.into(),
                Value::Int(i64::from(d.device_class)),
                d.salt.to_vec().into(),
            ],
        )?;
        Ok(())
    }

    fn device_salt(&mut self, se_id: &Hash32) -> Result<Option<[u8; 32]>, StoreError> {
        self.query_one(
            "SELECT escrow_salt FROM dcp_devices WHERE se_id = $1",
            &[h(se_id)],
        )?
        .map(|r| salt_col(&r, 0))
        .transpose()
    }

    fn device(&mut self, se_id: &Hash32) -> Result<Option<Device>, StoreError> {
        self.query_one(
            &format!("SELECT {DEVICE_COLUMNS} FROM dcp_devices WHERE se_id = $1"),
            &[h(se_id)],
        )?
        .map(|r| device_from_row(&r))
        .transpose()
    }

    fn device_last_counter(&mut self, se_id: &Hash32) -> Result<Option<u64>, StoreError> {
        self.query_one(
            "SELECT last_counter FROM dcp_devices WHERE se_id = $1",
            &[h(se_id)],
        )?
        .map(|r| u64::try_from(r.int(0)?).map_err(|_| StoreError::Type("negative counter".into())))
        .transpose()
    }

    fn device_set_last_counter(&mut self, se_id: &Hash32, counter: u64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE dcp_devices SET last_counter = $1 WHERE se_id = $2",
            &[u64_param(counter, "counter")?, h(se_id)],
        )?;
        Ok(())
    }

    fn device_set_synced(
        &mut self,
        se_id: &Hash32,
        sequence: u64,
        epoch: Epoch,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE dcp_devices SET sync_seq = $1, sync_epoch = $2 WHERE se_id = $3",
            &[
                u64_param(sequence, "sync sequence")?,
                Value::Int(i64::from(epoch)),
                h(se_id),
            ],
        )?;
        Ok(())
    }

    fn request(&mut self, request_id: &Hash32) -> Result<Option<LoggedRequest>, StoreError> {
        self.query_one(
            "SELECT response, refusal FROM dcp_requests WHERE request_id = $1",
            &[h(request_id)],
        )?
        .map(|r| logged_request_from_row(&r))
        .transpose()
    }

    fn request_insert(
        &mut self,
        request_id: &Hash32,
        se_id: &Hash32,
        counter: u64,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO dcp_requests (request_id, se_id, counter, response) VALUES ($1, $2, $3, NULL)",
            &[h(request_id), h(se_id), u64_param(counter, "counter")?],
        )?;
        Ok(())
    }

    fn request_set_response(
        &mut self,
        request_id: &Hash32,
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE dcp_requests SET response = $1 WHERE request_id = $2",
            &[sealed.into(), h(request_id)],
        )?;
        Ok(())
    }

    fn request_set_refusal(
        &mut self,
        request_id: &Hash32,
        sealed: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self.execute(
            "UPDATE dcp_requests SET refusal = $1 WHERE request_id = $2 AND response IS NULL",
            &[sealed.into(), h(request_id)],
        )?;
        Ok(n > 0)
    }

    fn redemption_exists(&mut self, nonce: &[u8; 16]) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT done FROM dcp_redemptions WHERE nonce = $1",
                &[nonce.to_vec().into()],
            )?
            .is_some())
    }

    fn redemption(&mut self, nonce: &[u8; 16]) -> Result<Option<Redemption>, StoreError> {
        self.query_one(
            "SELECT se_id, amount, unload, done FROM dcp_redemptions WHERE nonce = $1",
            &[nonce.to_vec().into()],
        )?
        .map(|r| redemption_from_row(&r))
        .transpose()
    }

    fn redemption_insert(
        &mut self,
        nonce: &[u8; 16],
        se_id: &Hash32,
        amount: u64,
        unload: bool,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO dcp_redemptions (nonce, se_id, amount, unload, done) VALUES ($1, $2, $3, $4, 0)",
            &[
                nonce.to_vec().into(),
                h(se_id),
                // The 64-bit pattern: `redemption` reads back the same u64.
                Value::Int(amount as i64),
                Value::Int(i64::from(unload)),
            ],
        )?;
        Ok(())
    }

    fn redemption_mark_done(&mut self, nonce: &[u8; 16]) -> Result<(), StoreError> {
        self.execute(
            "UPDATE dcp_redemptions SET done = 1 WHERE nonce = $1",
            &[nonce.to_vec().into()],
        )?;
        Ok(())
    }

    fn issue_tag_exists(&mut self, tag: &Hash32) -> Result<bool, StoreError> {
        Ok(self
            .query_one("SELECT tag FROM dcp_issues WHERE tag = $1", &[h(tag)])?
            .is_some())
    }

    fn issue_tag_insert(&mut self, tag: &Hash32) -> Result<(), StoreError> {
        self.execute("INSERT INTO dcp_issues (tag) VALUES ($1)", &[h(tag)])?;
        Ok(())
    }
}

impl<'a> DcpBookDb for dyn Tx + 'a {
    fn book_balance(&mut self, name: &str) -> Result<Option<i64>, StoreError> {
        self.query_one(
            "SELECT balance FROM dcp_accounts WHERE name = $1",
            &[name.into()],
        )?
        .map(|r| r.int(0))
        .transpose()
    }

    fn book_open_account(&mut self, name: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO dcp_accounts (name, balance) VALUES ($1, 0)",
            &[name.into()],
        )?;
        Ok(())
    }

    fn book_posted(&mut self, idem: &str) -> Result<bool, StoreError> {
        Ok(self
            .query_one(
                "SELECT amount FROM dcp_postings WHERE idem = $1",
                &[idem.into()],
            )?
            .is_some())
    }

    fn book_posting(&mut self, idem: &str) -> Result<Option<Posting>, StoreError> {
        self.query_one(
            "SELECT debit, credit, amount FROM dcp_postings WHERE idem = $1",
            &[idem.into()],
        )?
        .map(|r| posting_from_row(&r))
        .transpose()
    }

    fn book_insert_posting(&mut self, idem: &str, p: &Posting) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO dcp_postings (idem, debit, credit, amount) VALUES ($1, $2, $3, $4)",
            &[
                idem.into(),
                opt_text(p.debit.as_deref()),
                opt_text(p.credit.as_deref()),
                Value::Int(p.amount),
            ],
        )?;
        Ok(())
    }

    fn book_debit_account(&mut self, name: &str, amount: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE dcp_accounts SET balance = balance - $1 WHERE name = $2",
            &[Value::Int(amount), name.into()],
        )?;
        Ok(())
    }

    fn book_credit_account(&mut self, name: &str, amount: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE dcp_accounts SET balance = balance + $1 WHERE name = $2",
            &[Value::Int(amount), name.into()],
        )?;
        Ok(())
    }

    fn book_add_total(&mut self, total: BookTotal, by: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE dcp_book_totals SET v = v + $1 WHERE k = $2",
            &[Value::Int(by), total.key().into()],
        )?;
        Ok(())
    }

    fn book_totals(&mut self) -> Result<StoredTotals, StoreError> {
        totals_from_rows(&self.query("SELECT k, v FROM dcp_book_totals", &[])?)
    }

    fn book_resum(&mut self) -> Result<BookResum, StoreError> {
        let r = self
            .query_one(
                "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT), CAST(COUNT(CASE WHEN balance < 0 THEN 1 END) AS BIGINT) FROM dcp_accounts",
                &[],
            )?
            .ok_or_else(|| StoreError::Type("no sum".into()))?;
        resum_from_row(&r)
    }
}
