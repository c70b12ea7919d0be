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
use tally_store::{StoreError, Tx};

use crate::db::{BookTotal, DcpBookDb, Posting};

/// The DCP's own money (not yet deposited to a customer).
pub const OWN: &str = "dcp:own";
/// Debited from a customer, not yet settled by the central bank (a load or
/// an interbank payment in progress).
pub const IN_FLIGHT: &str = "dcp:in-flight";
/// Interbank credits for an account this DCP does not have (for an
/// operator to return).
pub const SUSPENSE: &str = "dcp:suspense";

pub use crate::db::BOOK_MIGRATIONS;

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
        if tx.book_balance(name)?.is_none() {
            tx.book_open_account(name)?;
        }
        Ok(())
    }

    pub fn balance(tx: &mut dyn Tx, name: &str) -> Result<i64, LedgerError> {
        tx.book_balance(name)?
            .ok_or_else(|| LedgerError::UnknownAccount(name.to_string()))
    }

    /// Whether the posting `idem` was made.
    pub fn posted(tx: &mut dyn Tx, idem: &str) -> Result<bool, LedgerError> {
        Ok(tx.book_posted(idem)?)
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
        if let Some(p) = tx.book_posting(idem)? {
            if p.debit.as_deref() == debit
                && p.credit.as_deref() == credit
                && p.amount == amount as i64
            {
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
        tx.book_insert_posting(
            idem,
            &Posting {
                debit: debit.map(str::to_string),
                credit: credit.map(str::to_string),
                amount: amount_i,
            },
        )?;
        if let Some(d) = debit {
            tx.book_debit_account(d, amount_i)?;
        }
        if let Some(c) = credit {
            tx.book_credit_account(c, amount_i)?;
        }
        match (debit, credit) {
            (None, Some(_)) => {
                Self::add_total(tx, &[BookTotal::MoneyIn, BookTotal::Sum], amount_i)?
            }
            (Some(_), None) => {
                Self::add_total(tx, &[BookTotal::MoneyOut], amount_i)?;
                Self::add_total(tx, &[BookTotal::Sum], -amount_i)?;
            }
            _ => {}
        }
        Self::assert_invariant(tx)?;
        Ok(true)
    }

    fn add_total(tx: &mut dyn Tx, totals: &[BookTotal], by: i64) -> Result<(), LedgerError> {
        for t in totals {
            tx.book_add_total(*t, by)?;
        }
        Ok(())
    }

    /// The running totals (cheap: three rows).
    pub fn totals(tx: &mut dyn Tx) -> Result<BookTotals, LedgerError> {
        let stored = tx.book_totals()?;
        Ok(BookTotals {
            money_in: stored.money_in,
            money_out: stored.money_out,
            sum: stored.sum,
            in_flight: Self::balance(tx, IN_FLIGHT)?,
        })
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
        let r = tx.book_resum()?;
        let ok = t.holds() && r.sum == t.sum && r.negative_accounts == 0;
        Ok((t, ok))
    }
}
