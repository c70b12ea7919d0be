//! Coin selection: which tokens fund a payment.
//!
//! Prefers one token with the smallest ancestry that covers the amount (the
//! package stays small and far from the history budget) — in confidential
//! mode, first one token, or two or three, worth exactly the amount
//! (decision 0031: a transfer of one output needs no range proof, the
//! costliest part of a payment);
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
/// `exact_first` (confidential mode), one token — else two, else three —
/// worth exactly `amount` together is taken before any other, whatever
/// its ancestry within the budget: the payment then has no change and no
/// range proof.
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
    if exact_first && let Some(sel) = exact(cands, amount, budget, merged_len) {
        return Ok(sel);
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

/// Tokens worth exactly `amount` together: one, else two, else three
/// (a payment of them has one output and no range proof, decision 0031),
/// the fewest first and among as many the smallest merged ancestry within
/// the budget. At most `n³/6` candidate sets: a few thousand for the
/// tokens an SE holds.
fn exact(
    cands: &[Candidate],
    amount: Amount,
    budget: usize,
    merged_len: &dyn Fn(&[usize]) -> usize,
) -> Option<Vec<usize>> {
    let n = cands.len();
    let v = |i: usize| cands[i].value.0;
    let mut best: Option<(usize, Vec<usize>)> = None;
    let consider = |sel: Vec<usize>, best: &mut Option<(usize, Vec<usize>)>| {
        let len = merged_len(&sel);
        if len <= budget && best.as_ref().is_none_or(|(l, _)| len < *l) {
            *best = Some((len, sel));
        }
    };
    for i in 0..n {
        if v(i) == amount.0 {
            consider(alloc::vec![i], &mut best);
        }
    }
    if best.is_none() {
        for i in 0..n {
            for j in i + 1..n {
                if v(i).checked_add(v(j)) == Some(amount.0) {
                    consider(alloc::vec![i, j], &mut best);
                }
            }
        }
    }
    if best.is_none() {
        for i in 0..n {
            for j in i + 1..n {
                for k in j + 1..n {
                    let sum = v(i).checked_add(v(j)).and_then(|s| s.checked_add(v(k)));
                    if sum == Some(amount.0) {
                        consider(alloc::vec![i, j, k], &mut best);
                    }
                }
            }
        }
    }
    best.map(|(_, sel)| sel)
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

    /// Confidential mode: tokens worth exactly the amount first — one,
    /// else two, else three, each time the smallest merged ancestry, even
    /// a longer one than a covering token's (no change, no range proof);
    /// else as before.
    #[test]
    fn confidential_mode_prefers_tokens_worth_exactly_the_amount() {
        let cands = [c(100, 1), c(60, 3), c(60, 2), c(40, 1)];
        let sum = |s: &[usize]| s.iter().map(|&i| cands[i].lineage_len).sum();
        let exact = |a: u64, budget: usize| select(&cands, Amount(a), budget, &sum, true);
        let usual = |a: u64, budget: usize| select(&cands, Amount(a), budget, &sum, false);
        assert_eq!(exact(60, 10), Ok(alloc::vec![2]));
        assert_eq!(usual(60, 10), Ok(alloc::vec![0]));
        // Beyond the budget the exact token is not taken.
        assert_eq!(exact(60, 1), Ok(alloc::vec![0]));
        // Two tokens, three tokens.
        assert_eq!(exact(140, 10), Ok(alloc::vec![0, 3]));
        assert_eq!(exact(160, 10), Ok(alloc::vec![0, 2]));
        assert_eq!(exact(160, 3), Ok(alloc::vec![0, 2]));
        assert_eq!(exact(200, 10), Ok(alloc::vec![0, 2, 3]));
        // Four would be needed, or none adds up: the usual choice.
        assert_eq!(exact(260, 10), usual(260, 10));
        assert_eq!(exact(50, 10), Ok(alloc::vec![0]));
    }
}
