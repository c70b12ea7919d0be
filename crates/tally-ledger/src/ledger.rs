//! Double-entry ledger (TigerBeetle's shape: accounts and immutable
//! transfers, stable numbered result codes, idempotency keys).

use std::fmt;
use tally_codes as codes;

use sha2::{Digest, Sha256};
use tally_store::{StoreError, Tx, TxFailure};

use crate::db::{IssuanceCounter, JournalEntry, LedgerDb, RunningTotalRow};

pub use crate::db::{JOURNAL_SEQ, LEDGER_MIGRATIONS as MIGRATIONS};

/// What an account is. Codes are stored; never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// The central bank's issuance account (balance −(minted − redeemed)).
    Issuance = 0,
    /// A DCP's settlement account at the central bank.
    DcpSettlement = 1,
    /// A user's account held through a DCP.
    User = 2,
    /// Value held offline in SEs.
    OfflineFloat = 3,
    /// Value the scheme covered for double spends (≤ 0).
    Loss = 4,
}

impl AccountKind {
    /// The invariant term (row of `ledger_totals`) the kind counts in.
    fn term(self) -> i64 {
        match self {
            AccountKind::DcpSettlement | AccountKind::User => 1,
            k => k as i64,
        }
    }

    pub(crate) fn from_code(c: i64) -> Option<AccountKind> {
        Some(match c {
            0 => AccountKind::Issuance,
            1 => AccountKind::DcpSettlement,
            2 => AccountKind::User,
            3 => AccountKind::OfflineFloat,
            4 => AccountKind::Loss,
            _ => return None,
        })
    }
}

pub type AccountId = String;

pub const ISSUANCE: &str = "cb:issuance";
pub const OFFLINE_FLOAT: &str = "cb:offline-float";
pub const LOSS: &str = "cb:loss";

/// Journal codes: what a transfer was for.
pub mod code {
    pub const TRANSFER: i64 = 1;
    pub const MINT: i64 = 2;
    pub const REDEEM: i64 = 3;
    pub const LOAD: i64 = 4;
    pub const UNLOAD: i64 = 5;
    pub const LOSS_COVER: i64 = 6;
    pub const RECOVERY: i64 = 7;
    pub const ONLINE_PAYMENT: i64 = 8;
}

/// Rejections, each with a stable number ([`LedgerError::code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerError {
    UnknownAccount(String),
    InsufficientFunds {
        account: String,
        balance: i64,
        amount: i64,
    },
    /// The idempotency key was used before for a different transfer.
    IdempotencyKeyReused(String),
    ZeroAmount,
    SameAccount,
    AccountExists(String),
    /// Amount above i64::MAX or a balance would overflow.
    Overflow,
    /// The code does not fit the accounts: MINT must debit issuance, REDEEM
    /// must credit it, and nothing else may touch issuance.
    InvalidCode,
    Store(StoreError),
}

impl LedgerError {
    /// Stable code, registered in tally-codes (docs/CODES.md).
    pub fn code(&self) -> u16 {
        match self {
            LedgerError::UnknownAccount(_) => codes::LEDGER_UNKNOWN_ACCOUNT,
            LedgerError::InsufficientFunds { .. } => codes::LEDGER_INSUFFICIENT_FUNDS,
            LedgerError::IdempotencyKeyReused(_) => codes::LEDGER_IDEMPOTENCY_KEY_REUSED,
            LedgerError::ZeroAmount => codes::LEDGER_ZERO_AMOUNT,
            LedgerError::SameAccount => codes::LEDGER_SAME_ACCOUNT,
            LedgerError::AccountExists(_) => codes::LEDGER_ACCOUNT_EXISTS,
            LedgerError::Overflow => codes::LEDGER_OVERFLOW,
            LedgerError::InvalidCode => codes::LEDGER_INVALID_CODE,
            LedgerError::Store(_) => codes::NODE_INTERNAL,
        }
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::UnknownAccount(a) => write!(f, "unknown account {a}"),
            LedgerError::InsufficientFunds {
                account,
                balance,
                amount,
            } => {
                write!(
                    f,
                    "insufficient funds in {account}: balance {balance}, amount {amount}"
                )
            }
            LedgerError::IdempotencyKeyReused(k) => {
                write!(f, "idempotency key {k} was used for a different transfer")
            }
            LedgerError::ZeroAmount => f.write_str("amount must be positive"),
            LedgerError::SameAccount => f.write_str("debit and credit account are the same"),
            LedgerError::AccountExists(a) => write!(f, "account {a} exists"),
            LedgerError::Overflow => f.write_str("amount overflows"),
            LedgerError::InvalidCode => f.write_str("transfer code does not fit its accounts"),
            LedgerError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LedgerError {}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        LedgerError::Store(e)
    }
}

impl TxFailure for LedgerError {
    fn is_conflict(&self) -> bool {
        matches!(self, LedgerError::Store(StoreError::Conflict))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// Client-chosen; the same key with the same content is a no-op.
    pub idem: String,
    pub debit: String,
    pub credit: String,
    pub amount: u64,
    pub code: i64,
}

impl TransferRequest {
    fn digest(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        for part in [self.debit.as_bytes(), self.credit.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(self.amount.to_be_bytes());
        h.update(self.code.to_be_bytes());
        h.finalize().to_vec()
    }
}

/// What [`Ledger::transfer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Newly journaled at this sequence number.
    New(i64),
    /// The same transfer was journaled before at this sequence number.
    Already(i64),
}

/// The ledger invariant, read in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invariant {
    pub minted: i64,
    pub redeemed: i64,
    /// Sum of every account except issuance, float and loss.
    pub accounts: i64,
    pub offline_float: i64,
    pub loss: i64,
    pub issuance: i64,
    /// Accounts (other than issuance and loss) with a negative balance.
    pub negative_accounts: i64,
    pub journal_entries: i64,
    /// The running totals ([`RunningTotals`]) equal these sums.
    pub totals_match: bool,
}

impl Invariant {
    /// accounts + float + loss = minted − redeemed, issuance mirrors it,
    /// no negative balance.
    pub fn holds(&self) -> bool {
        let outstanding = self.minted - self.redeemed;
        self.accounts + self.offline_float + self.loss == outstanding
            && self.issuance == -outstanding
            && self.negative_accounts == 0
            && self.loss <= 0
            && self.totals_match
    }
}

/// The invariant's terms as kept incrementally (`ledger_totals`, and the
/// minted / redeemed counters): a constant number of rows, read by the
/// production assertion of every ledger transaction. The full re-sum
/// ([`Ledger::invariant`]) checks that these match the balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningTotals {
    pub minted: i64,
    pub redeemed: i64,
    /// Total of DCP settlement and user accounts (kinds 1 and 2).
    pub accounts: i64,
    pub offline_float: i64,
    pub loss: i64,
    pub issuance: i64,
}

impl RunningTotals {
    /// accounts + float + loss = minted − redeemed, issuance mirrors it,
    /// the loss account never positive. (No negative balance is enforced
    /// by the accounts table's CHECK.)
    pub fn holds(&self) -> bool {
        let Some(outstanding) = self.minted.checked_sub(self.redeemed) else {
            return false;
        };
        self.accounts
            .checked_add(self.offline_float)
            .and_then(|x| x.checked_add(self.loss))
            == Some(outstanding)
            && self.issuance.checked_neg() == Some(outstanding)
            && self.loss <= 0
    }
}

pub struct Ledger;

/// An account's kind and balance as read at the start of a transfer.
type KindAndBalance = (AccountKind, i64);

fn amount_i64(a: u64) -> Result<i64, LedgerError> {
    i64::try_from(a).map_err(|_| LedgerError::Overflow)
}

impl Ledger {
    pub fn open_account(tx: &mut dyn Tx, id: &str, kind: AccountKind) -> Result<(), LedgerError> {
        if tx.account_kind(id)?.is_some() {
            return Err(LedgerError::AccountExists(id.into()));
        }
        tx.insert_account(id, kind)?;
        Ok(())
    }

    /// Opens the account unless it exists (with the same kind).
    pub fn ensure_account(tx: &mut dyn Tx, id: &str, kind: AccountKind) -> Result<(), LedgerError> {
        match tx.account_kind(id)? {
            Some(k) if k == kind => Ok(()),
            Some(_) => Err(LedgerError::AccountExists(id.into())),
            None => Self::open_account(tx, id, kind),
        }
    }

    pub fn balance(tx: &mut dyn Tx, id: &str) -> Result<i64, LedgerError> {
        tx.account_balance(id)?
            .ok_or_else(|| LedgerError::UnknownAccount(id.into()))
    }

    /// Applies one transfer: checks everything first, then writes the
    /// journal entry and both balances. The same idempotency key with the
    /// same content returns [`Applied::Already`] and changes nothing.
    pub fn transfer(tx: &mut dyn Tx, t: &TransferRequest) -> Result<Applied, LedgerError> {
        let digest = t.digest();
        if let Some(prev) = tx.journal_by_idem(&t.idem)? {
            if prev.digest == digest {
                return Ok(Applied::Already(prev.seq));
            }
            return Err(LedgerError::IdempotencyKeyReused(t.idem.clone()));
        }
        if t.amount == 0 {
            return Err(LedgerError::ZeroAmount);
        }
        if t.debit == t.credit {
            return Err(LedgerError::SameAccount);
        }
        // Money is created and destroyed only by MINT and REDEEM, and those
        // only against the issuance account: the minted/redeemed totals of
        // the invariant then always match the issuance balance.
        let touches_issuance = t.debit == ISSUANCE || t.credit == ISSUANCE;
        let ok = match t.code {
            code::MINT => t.debit == ISSUANCE,
            code::REDEEM => t.credit == ISSUANCE,
            _ => !touches_issuance,
        };
        if !ok {
            return Err(LedgerError::InvalidCode);
        }
        let amount = amount_i64(t.amount)?;
        let ((dkind, dbal), (ckind, cbal)) = Self::two_accounts(tx, &t.debit, &t.credit)?;
        let may_go_negative = matches!(dkind, AccountKind::Issuance | AccountKind::Loss);
        let new_d = dbal.checked_sub(amount).ok_or(LedgerError::Overflow)?;
        if new_d < 0 && !may_go_negative {
            return Err(LedgerError::InsufficientFunds {
                account: t.debit.clone(),
                balance: dbal,
                amount,
            });
        }
        let new_c = cbal.checked_add(amount).ok_or(LedgerError::Overflow)?;
        // Point of no return.
        let seq = tx.next_journal_seq()?;
        tx.insert_journal(&JournalEntry {
            seq,
            idem: &t.idem,
            digest: &digest,
            debit: &t.debit,
            credit: &t.credit,
            amount,
            code: t.code,
        })?;
        // Each leg is read back as it is written: the balance the checks
        // above were made against is the one the write changed.
        let d_after = Self::add_to_balance(tx, &t.debit, -amount)?;
        let c_after = Self::add_to_balance(tx, &t.credit, amount)?;
        assert_eq!(
            (d_after, c_after),
            (new_d, new_c),
            "both legs of transfer {} must land on the balances it was checked against",
            t.idem
        );
        let (dterm, cterm) = (dkind.term(), ckind.term());
        if dterm != cterm {
            // Transfers inside one term leave its total unchanged; only
            // these touch the running totals.
            Self::add_to_total(tx, dterm, -amount)?;
            Self::add_to_total(tx, cterm, amount)?;
        }
        if t.code == code::MINT {
            tx.bump_issuance(IssuanceCounter::Minted, amount)?;
        } else if t.code == code::REDEEM {
            tx.bump_issuance(IssuanceCounter::Redeemed, amount)?;
        }
        Ok(Applied::New(seq))
    }

    /// Kind and balance of both accounts of a transfer, in one statement.
    fn two_accounts(
        tx: &mut dyn Tx,
        debit: &str,
        credit: &str,
    ) -> Result<(KindAndBalance, KindAndBalance), LedgerError> {
        let mut found = (None, None);
        for a in tx.account_pair(debit, credit)? {
            if a.id == debit {
                found.0 = Some((a.kind, a.balance));
            } else if a.id == credit {
                found.1 = Some((a.kind, a.balance));
            }
        }
        match found {
            (Some(d), Some(c)) => Ok((d, c)),
            (None, _) => Err(LedgerError::UnknownAccount(debit.into())),
            (_, None) => Err(LedgerError::UnknownAccount(credit.into())),
        }
    }

    /// Adds `by` to a balance and returns the balance written.
    fn add_to_balance(tx: &mut dyn Tx, id: &str, by: i64) -> Result<i64, LedgerError> {
        Ok(tx
            .add_to_balance(id, by)?
            .ok_or_else(|| StoreError::Type(format!("account {id} vanished in a transfer")))?)
    }

    fn add_to_total(tx: &mut dyn Tx, term: i64, by: i64) -> Result<(), LedgerError> {
        let n = tx.add_to_total(term, by)?;
        assert_eq!(n, 1, "running total of invariant term {term} missing");
        Ok(())
    }

    /// The central bank mints `amount` into a DCP's settlement account.
    pub fn mint(
        tx: &mut dyn Tx,
        idem: &str,
        dcp_account: &str,
        amount: u64,
    ) -> Result<Applied, LedgerError> {
        Self::transfer(
            tx,
            &TransferRequest {
                idem: idem.into(),
                debit: ISSUANCE.into(),
                credit: dcp_account.into(),
                amount,
                code: code::MINT,
            },
        )
    }

    /// The central bank redeems (burns) `amount` from a DCP's account.
    pub fn redeem(
        tx: &mut dyn Tx,
        idem: &str,
        dcp_account: &str,
        amount: u64,
    ) -> Result<Applied, LedgerError> {
        Self::transfer(
            tx,
            &TransferRequest {
                idem: idem.into(),
                debit: dcp_account.into(),
                credit: ISSUANCE.into(),
                amount,
                code: code::REDEEM,
            },
        )
    }

    /// Reads the invariant's terms in the current transaction.
    pub fn invariant(tx: &mut dyn Tx) -> Result<Invariant, LedgerError> {
        let meta = |tx: &mut dyn Tx, c: IssuanceCounter| -> Result<i64, LedgerError> {
            Ok(tx
                .issuance(c)?
                .ok_or_else(|| StoreError::Type(format!("ledger_meta.{} missing", c.key())))?)
        };
        let minted = meta(tx, IssuanceCounter::Minted)?;
        let redeemed = meta(tx, IssuanceCounter::Redeemed)?;
        let sums = tx.balance_sums()?;
        let journal = tx.journal_entries()?;
        let running = Self::running_totals(tx)?;
        let mut inv = Invariant {
            minted,
            redeemed,
            accounts: sums.accounts,
            offline_float: sums.offline_float,
            loss: sums.loss,
            issuance: sums.issuance,
            negative_accounts: sums.negative_accounts,
            journal_entries: journal,
            totals_match: false,
        };
        inv.totals_match = running
            == RunningTotals {
                minted,
                redeemed,
                accounts: inv.accounts,
                offline_float: inv.offline_float,
                loss: inv.loss,
                issuance: inv.issuance,
            };
        Ok(inv)
    }

    /// The running totals, in the current transaction: one query over a
    /// constant number of rows.
    pub fn running_totals(tx: &mut dyn Tx) -> Result<RunningTotals, LedgerError> {
        let mut t = RunningTotals {
            minted: 0,
            redeemed: 0,
            accounts: 0,
            offline_float: 0,
            loss: 0,
            issuance: 0,
        };
        let mut seen = 0u8;
        for row in tx.running_total_rows()? {
            let (slot, v) = match row {
                RunningTotalRow::Term { term: 0, total } => (&mut t.issuance, total),
                RunningTotalRow::Term { term: 1, total } => (&mut t.accounts, total),
                RunningTotalRow::Term { term: 3, total } => (&mut t.offline_float, total),
                RunningTotalRow::Term { term: 4, total } => (&mut t.loss, total),
                RunningTotalRow::Minted(v) => (&mut t.minted, v),
                RunningTotalRow::Redeemed(v) => (&mut t.redeemed, v),
                RunningTotalRow::Term { term, .. } => {
                    return Err(StoreError::Type(format!("running total 0/{term}")).into());
                }
            };
            *slot = slot.checked_add(v).ok_or(LedgerError::Overflow)?;
            seen += 1;
        }
        if seen != 6 {
            return Err(StoreError::Type(format!("{seen} running totals, expected 6")).into());
        }
        Ok(t)
    }

    /// Production assertion, after every ledger transaction: the running
    /// totals satisfy the invariant. O(1): it reads the totals, not the
    /// accounts; the full re-sum ([`Ledger::invariant`]) is the periodic
    /// audit (settlement workers, `GET /ledger/invariant`).
    pub fn assert_invariant(tx: &mut dyn Tx) -> Result<RunningTotals, LedgerError> {
        let t = Self::running_totals(tx)?;
        assert!(
            t.holds(),
            "ledger invariant violated (running totals): {t:?}"
        );
        Ok(t)
    }

    /// The periodic audit: the full re-sum, asserted, including that the
    /// running totals match it.
    pub fn audit(tx: &mut dyn Tx) -> Result<Invariant, LedgerError> {
        let inv = Self::invariant(tx)?;
        assert!(inv.holds(), "ledger audit failed: {inv:?}");
        Ok(inv)
    }

    /// Applies a batch in one transaction; each transfer gets its own
    /// result (a rejected transfer changes nothing); the invariant is
    /// asserted after the batch.
    pub fn transfer_batch(
        tx: &mut dyn Tx,
        batch: &[TransferRequest],
    ) -> Result<Vec<Result<Applied, LedgerError>>, LedgerError> {
        let mut out = Vec::with_capacity(batch.len());
        for t in batch {
            match Self::transfer(tx, t) {
                Err(LedgerError::Store(e)) => return Err(LedgerError::Store(e)),
                r => out.push(r),
            }
        }
        Self::assert_invariant(tx)?;
        Ok(out)
    }
}
