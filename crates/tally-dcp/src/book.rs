//! The DCP's book of its customers' accounts (issue 11, item 1). The
//! central bank's ledger holds one settlement account per DCP; the DCP
//! holds its customers' balances here, in its own database, so the central
//! store never names a customer.
//!
//! Every posting moves an amount once per idempotency key between two
//! accounts of the book, or across the book's edge: money arriving from
//! the DCP's settlement account at the central bank (`debit = None`:
//! a mint, an interbank credit, an unload, a cancelled Issue) or leaving
//! it (`credit = None`: a load, an interbank payment). The invariant,
//! asserted in every posting's transaction:
//!
//! ```text
//! sum of all balances = money in − money out     (running totals)
//! no balance is negative
//! ```
//!
//! and, when nothing is in flight and the inbox is booked, the sum equals
//! the DCP's settlement account at the central bank
//! ([`crate::Backoffice::reconcile`]).

use tally_ledger::ledger::LedgerError;
use tally_store::{Migrations, StoreError, Tx, Value};

/// The DCP's own money (not yet deposited to a customer).
pub const OWN: &str = "dcp:own";
/// Debited from a customer, not yet settled by the central bank (a load or
/// an interbank payment in progress).
pub const IN_FLIGHT: &str = "dcp:in-flight";
/// Interbank credits for an account this DCP does not have (for an
/// operator to return).
pub const SUSPENSE: &str = "dcp:suspense";

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

/// The book's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BookTotals {
    /// Money that came in from the settlement account.
    pub money_in: i64,
    /// Money that left to the settlement account.
    pub money_out: i64,
    /// The running sum of every balance.
    pub sum: i64,
    /// In flight to the central bank.
    pub in_flight: i64,
}

impl BookTotals {
    /// sum = in − out.
    pub fn holds(&self) -> bool {
        self.money_in.checked_sub(self.money_out) == Some(self.sum)
    }
}

pub struct Book;

impl Book {
    /// Opens `name` (balance 0) if it does not exist.
    pub fn ensure(tx: &mut dyn Tx, name: &str) -> Result<(), LedgerError> {
        if tx
            .query_one(
                "SELECT balance FROM dcp_accounts WHERE name = $1",
                &[name.into()],
            )?
            .is_none()
        {
            tx.execute(
                "INSERT INTO dcp_accounts (name, balance) VALUES ($1, 0)",
                &[name.into()],
            )?;
        }
        Ok(())
    }

    pub fn balance(tx: &mut dyn Tx, name: &str) -> Result<i64, LedgerError> {
        Ok(tx
            .query_one(
                "SELECT balance FROM dcp_accounts WHERE name = $1",
                &[name.into()],
            )?
            .ok_or_else(|| LedgerError::UnknownAccount(name.to_string()))?
            .int(0)?)
    }

    /// Whether the posting `idem` was made.
    pub fn posted(tx: &mut dyn Tx, idem: &str) -> Result<bool, LedgerError> {
        Ok(tx
            .query_one(
                "SELECT amount FROM dcp_postings WHERE idem = $1",
                &[idem.into()],
            )?
            .is_some())
    }

    /// Posts `amount` from `debit` to `credit` once for `idem` (`None`:
    /// across the book's edge). Returns whether it was new; the same key
    /// with another posting is refused. Refused, changing nothing: an
    /// unknown account, insufficient funds, a zero amount.
    pub fn post(
        tx: &mut dyn Tx,
        idem: &str,
        debit: Option<&str>,
        credit: Option<&str>,
        amount: u64,
    ) -> Result<bool, LedgerError> {
        let opt = |a: Option<&str>| match a {
            Some(a) => Value::Text(a.to_string()),
            None => Value::Null,
        };
        if let Some(r) = tx.query_one(
            "SELECT debit, credit, amount FROM dcp_postings WHERE idem = $1",
            &[idem.into()],
        )? {
            let same = |i: usize, want: Option<&str>| -> Result<bool, StoreError> {
                Ok(match want {
                    None => r.is_null(i),
                    Some(w) => !r.is_null(i) && r.text(i)? == w,
                })
            };
            if same(0, debit)? && same(1, credit)? && r.int(2)? == amount as i64 {
                return Ok(false);
            }
            return Err(LedgerError::IdempotencyKeyReused(idem.to_string()));
        }
        if amount == 0 {
            return Err(LedgerError::ZeroAmount);
        }
        if debit.is_some() && debit == credit {
            return Err(LedgerError::SameAccount);
        }
        let amount_i = i64::try_from(amount).map_err(|_| LedgerError::Overflow)?;
        if let Some(d) = debit {
            let balance = Self::balance(tx, d)?;
            if balance < amount_i {
                return Err(LedgerError::InsufficientFunds {
                    account: d.to_string(),
                    balance,
                    amount: amount_i,
                });
            }
        }
        if let Some(c) = credit {
            let balance = Self::balance(tx, c)?;
            balance.checked_add(amount_i).ok_or(LedgerError::Overflow)?;
        }
        tx.execute(
            "INSERT INTO dcp_postings (idem, debit, credit, amount) VALUES ($1, $2, $3, $4)",
            &[idem.into(), opt(debit), opt(credit), Value::Int(amount_i)],
        )?;
        if let Some(d) = debit {
            tx.execute(
                "UPDATE dcp_accounts SET balance = balance - $1 WHERE name = $2",
                &[Value::Int(amount_i), d.into()],
            )?;
        }
        if let Some(c) = credit {
            tx.execute(
                "UPDATE dcp_accounts SET balance = balance + $1 WHERE name = $2",
                &[Value::Int(amount_i), c.into()],
            )?;
        }
        match (debit, credit) {
            (None, Some(_)) => Self::add_total(tx, &["in", "sum"], amount_i)?,
            (Some(_), None) => {
                Self::add_total(tx, &["out"], amount_i)?;
                Self::add_total(tx, &["sum"], -amount_i)?;
            }
            _ => {}
        }
        Self::assert_invariant(tx)?;
        Ok(true)
    }

    fn add_total(tx: &mut dyn Tx, keys: &[&str], by: i64) -> Result<(), LedgerError> {
        for k in keys {
            tx.execute(
                "UPDATE dcp_book_totals SET v = v + $1 WHERE k = $2",
                &[Value::Int(by), (*k).into()],
            )?;
        }
        Ok(())
    }

    /// The running totals (cheap: three rows).
    pub fn totals(tx: &mut dyn Tx) -> Result<BookTotals, LedgerError> {
        let mut t = BookTotals::default();
        for r in tx.query("SELECT k, v FROM dcp_book_totals", &[])? {
            let v = r.int(1)?;
            match r.text(0)? {
                "in" => t.money_in = v,
                "out" => t.money_out = v,
                "sum" => t.sum = v,
                _ => {}
            }
        }
        t.in_flight = Self::balance(tx, IN_FLIGHT)?;
        Ok(t)
    }

    /// The book's invariant from the running totals, in the posting's
    /// transaction: a violation aborts it.
    pub fn assert_invariant(tx: &mut dyn Tx) -> Result<BookTotals, LedgerError> {
        let t = Self::totals(tx)?;
        if !t.holds() {
            return Err(LedgerError::Store(StoreError::Type(format!(
                "DCP book invariant violated: sum {} != in {} - out {}",
                t.sum, t.money_in, t.money_out
            ))));
        }
        Ok(t)
    }

    /// The full audit: every balance re-summed and none negative, against
    /// the running totals.
    pub fn audit(tx: &mut dyn Tx) -> Result<(BookTotals, bool), LedgerError> {
        let t = Self::totals(tx)?;
        let r = tx
            .query_one(
                "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT), CAST(COUNT(CASE WHEN balance < 0 THEN 1 END) AS BIGINT) FROM dcp_accounts",
                &[],
            )?
            .ok_or_else(|| StoreError::Type("no sum".into()))?;
        let ok = t.holds() && r.int(0)? == t.sum && r.int(1)? == 0;
        Ok((t, ok))
    }
}
