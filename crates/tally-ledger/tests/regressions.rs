//! Regressions named after what they caught.

use tally_ledger::ledger::{self, AccountKind, Ledger, LedgerError, TransferRequest, code};
use tally_store::{Store, StoreError};

fn store() -> Store {
    let s = Store::sqlite_memory().unwrap();
    s.migrate(&[&ledger::MIGRATIONS]).unwrap();
    s
}

fn t(idem: &str, debit: &str, credit: &str, amount: u64, c: i64) -> TransferRequest {
    TransferRequest {
        idem: idem.into(),
        debit: debit.into(),
        credit: credit.into(),
        amount,
        code: c,
    }
}

/// A transfer code that does not fit its accounts used to move the
/// minted/redeemed totals (or the issuance balance) alone.
#[test]
fn transfer_code_must_fit_accounts_or_money_is_created() {
    let s = store();
    s.transact(|tx| {
        Ledger::open_account(tx, "dcp:1", AccountKind::DcpSettlement)?;
        Ledger::open_account(tx, "user:a", AccountKind::User)?;
        Ledger::mint(tx, "m", "dcp:1", 100)?;
        Ok::<_, LedgerError>(())
    })
    .unwrap();
    let cases = [
        t("x1", "dcp:1", "user:a", 10, code::MINT),
        t("x2", "user:a", "dcp:1", 10, code::REDEEM),
        t("x3", ledger::ISSUANCE, "user:a", 10, code::TRANSFER),
        t("x4", "dcp:1", ledger::ISSUANCE, 10, code::LOAD),
    ];
    for c in &cases {
        let before = s.transact(|tx| Ledger::invariant(tx)).unwrap();
        let r = s.transact(|tx| Ledger::transfer(tx, c));
        assert_eq!(r, Err(LedgerError::InvalidCode), "{c:?}");
        assert_eq!(LedgerError::InvalidCode.code(), 17);
        let after = s.transact(|tx| Ledger::invariant(tx)).unwrap();
        assert_eq!(before, after);
        assert!(after.holds());
    }
    // The fitting codes still work.
    s.transact(|tx| Ledger::transfer(tx, &t("ok", "dcp:1", "user:a", 10, code::TRANSFER)))
        .unwrap();
    s.transact(|tx| Ledger::redeem(tx, "r", "dcp:1", 5))
        .unwrap();
    let inv = s.transact(|tx| Ledger::invariant(tx)).unwrap();
    assert!(inv.holds());
    assert_eq!((inv.minted, inv.redeemed, inv.accounts), (100, 5, 95));
    let _: Option<StoreError> = None;
}
