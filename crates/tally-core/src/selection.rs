//! Coin selection: which tokens fund a payment.
//!
//! Prefers one token with the smallest ancestry that covers the amount (the
//! package stays small and far from the history budget) — in confidential
//! mode, first one worth exactly the amount (decision 0031: a transfer of
//! one output needs no range proof, the costliest part of a payment);
//! otherwise merges
//! tokens, smallest ancestry first, until the amount is covered. A
//! selection whose merged ancestry would exceed the history budget is
//! refused: the device must renew first.

use alloc::vec::Vec;

use crate::amount::Amount;
use crate::record::RECORD_INPUTS_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub value: Amount,
    /// Records in this token's ancestry (including its own record).
    pub lineage_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectError {
    /// The tokens together hold less than the amount.
    InsufficientFunds,
    /// Enough value, but every selection exceeds the history budget or the
    /// input bound: renew first.
    NeedsRenewal,
}

/// Returns indices into `cands`. `merged_len(sel)` gives the number of
/// distinct records in the union of the selected tokens' ancestries; the
/// package built from `sel` must have `merged_len(sel) <= budget`. With
/// `exact_first` (confidential mode), a single token worth exactly
/// `amount` is taken before any other, whatever its ancestry within the
/// budget: the payment then has no change and no range proof.
pub fn select(
    cands: &[Candidate],
    amount: Amount,
    budget: usize,
    merged_len: &dyn Fn(&[usize]) -> usize,
    exact_first: bool,
) -> Result<Vec<usize>, SelectError> {
    let total = Amount::sum(cands.iter().map(|c| c.value)).ok_or(SelectError::InsufficientFunds)?;
    if amount.is_zero() || total < amount {
        return Err(SelectError::InsufficientFunds);
    }
    if exact_first {
        let exact = (0..cands.len())
            .filter(|&i| cands[i].value == amount && cands[i].lineage_len <= budget)
            .min_by_key(|&i| cands[i].lineage_len);
        if let Some(i) = exact {
            return Ok(alloc::vec![i]);
        }
    }
    // One token: smallest ancestry, then the smallest value that covers.
    let single = (0..cands.len())
        .filter(|&i| cands[i].value >= amount && cands[i].lineage_len <= budget)
        .min_by_key(|&i| (cands[i].lineage_len, cands[i].value));
    if let Some(i) = single {
        return Ok(alloc::vec![i]);
    }
    // Merge: smallest ancestry first, larger values first among equals.
    // An insertion sort (stable): at most a few hundred tokens, and the
    // library's sort costs a microcontroller's flash several KiB.
    let key = |i: usize| (cands[i].lineage_len, core::cmp::Reverse(cands[i].value));
    let mut order: Vec<usize> = Vec::with_capacity(cands.len());
    for i in 0..cands.len() {
        let at = order.partition_point(|&j| key(j) <= key(i));
        order.insert(at, i);
    }
    let mut sel: Vec<usize> = Vec::new();
    let mut sum = Amount::ZERO;
    for i in order {
        if sel.len() == RECORD_INPUTS_MAX {
            break;
        }
        sel.push(i);
        if merged_len(&sel) > budget {
            sel.pop();
            continue;
        }
        sum = sum
            .checked_add(cands[i].value)
            .ok_or(SelectError::InsufficientFunds)?;
        if sum >= amount {
            return Ok(sel);
        }
    }
    Err(SelectError::NeedsRenewal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: u64, l: usize) -> Candidate {
        Candidate {
            value: Amount(v),
            lineage_len: l,
        }
    }

    #[test]
    fn prefers_single_short_lineage() {
        let cands = [c(100, 5), c(60, 1), c(50, 1)];
        let sum = |s: &[usize]| s.iter().map(|&i| cands[i].lineage_len).sum();
        let select =
            |c: &[Candidate], a, b, m: &dyn Fn(&[usize]) -> usize| select(c, a, b, m, false);
        assert_eq!(select(&cands, Amount(55), 10, &sum), Ok(alloc::vec![1]));
        assert_eq!(select(&cands, Amount(50), 10, &sum), Ok(alloc::vec![2]));
        assert_eq!(select(&cands, Amount(70), 10, &sum), Ok(alloc::vec![0]));
        assert_eq!(select(&cands, Amount(70), 4, &sum), Ok(alloc::vec![1, 2]));
        assert_eq!(
            select(&cands, Amount(200), 10, &sum),
            Ok(alloc::vec![1, 2, 0])
        );
        assert_eq!(
            select(&cands, Amount(211), 10, &sum),
            Err(SelectError::InsufficientFunds)
        );
        assert_eq!(
            select(&cands, Amount(200), 6, &sum),
            Err(SelectError::NeedsRenewal)
        );
        assert_eq!(
            select(&cands, Amount(0), 6, &sum),
            Err(SelectError::InsufficientFunds)
        );
    }

    /// Confidential mode: a token worth exactly the amount first, even
    /// with a longer ancestry (no change, no range proof); else as before.
    #[test]
    fn confidential_mode_prefers_an_exact_token() {
        let cands = [c(100, 1), c(60, 3), c(60, 2), c(40, 1)];
        let sum = |s: &[usize]| s.iter().map(|&i| cands[i].lineage_len).sum();
        assert_eq!(
            select(&cands, Amount(60), 10, &sum, true),
            Ok(alloc::vec![2])
        );
        assert_eq!(
            select(&cands, Amount(60), 10, &sum, false),
            Ok(alloc::vec![0])
        );
        // Beyond the budget the exact token is not taken.
        assert_eq!(
            select(&cands, Amount(60), 1, &sum, true),
            Ok(alloc::vec![0])
        );
        // No exact token: the usual choice.
        assert_eq!(
            select(&cands, Amount(50), 10, &sum, true),
            Ok(alloc::vec![0])
        );
    }
}
