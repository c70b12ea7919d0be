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
    // Smallest ancestry first, larger values first among equals: the
    // order of a merge, and of the exact search's pool. Made once, and
    // only if one of them runs.
    let mut order: Option<Vec<usize>> = None;
    if exact_first {
        let pool = order.get_or_insert_with(|| merge_order(cands));
        if let Some(sel) = exact(cands, pool, amount, budget, merged_len) {
            return Ok(sel);
        }
    }
    // One token: smallest ancestry, then the smallest value that covers.
    let single = (0..cands.len())
        .filter(|&i| cands[i].value >= amount && cands[i].lineage_len <= budget)
        .min_by_key(|&i| (cands[i].lineage_len, cands[i].value));
    if let Some(i) = single {
        return Ok(alloc::vec![i]);
    }
    // Merge, in that order.
    let order = order.unwrap_or_else(|| merge_order(cands));
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

/// Indices of `cands`, smallest ancestry first, larger values first among
/// equals. An insertion sort (stable): at most a few hundred tokens, and
/// the library's sort costs a microcontroller's flash several KiB.
fn merge_order(cands: &[Candidate]) -> Vec<usize> {
    let key = |i: usize| (cands[i].lineage_len, core::cmp::Reverse(cands[i].value));
    let mut order: Vec<usize> = Vec::with_capacity(cands.len());
    for i in 0..cands.len() {
        let at = order.partition_point(|&j| key(j) <= key(i));
        order.insert(at, i);
    }
    order
}

/// Tokens the exact search combines in twos and threes: the first this
/// many of `order` worth at most the amount. `C(32, 3)` = 4 960 sets at
/// most, whatever an SE holds (up to 256 tokens: 2.8 million triples).
const EXACT_POOL_MAX: usize = 32;

/// Tokens worth exactly `amount` together: one, else two, else three
/// (a payment of them has one output and no range proof, decision 0031),
/// the fewest first and among as many the smallest merged ancestry within
/// the budget. One token is looked for among all; two and three among the
/// pool (`EXACT_POOL_MAX` tokens of `order` worth at most the amount).
/// The indices are returned in ascending order.
fn exact(
    cands: &[Candidate],
    order: &[usize],
    amount: Amount,
    budget: usize,
    merged_len: &dyn Fn(&[usize]) -> usize,
) -> Option<Vec<usize>> {
    let pool: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| cands[i].value <= amount)
        .take(EXACT_POOL_MAX)
        .collect();
    let n = pool.len();
    let v = |k: usize| cands[pool[k]].value.0;
    let mut best: Option<(usize, Vec<usize>)> = None;
    let consider = |mut sel: Vec<usize>, best: &mut Option<(usize, Vec<usize>)>| {
        let len = merged_len(&sel);
        if len <= budget && best.as_ref().is_none_or(|(l, _)| len < *l) {
            // Ascending (at most three: a bubble sort, where the
            // library's sort would cost the SE's flash kilobytes).
            for end in (1..sel.len()).rev() {
                for k in 0..end {
                    if sel[k] > sel[k + 1] {
                        sel.swap(k, k + 1);
                    }
                }
            }
            *best = Some((len, sel));
        }
    };
    // An index loop: the enumerating iterator costs the card firmware 52
    // bytes of flash.
    #[allow(clippy::needless_range_loop)]
    for i in 0..cands.len() {
        if cands[i].value == amount {
            consider(alloc::vec![i], &mut best);
        }
    }
    if best.is_none() {
        for i in 0..n {
            for j in i + 1..n {
                if v(i).checked_add(v(j)) == Some(amount.0) {
                    consider(alloc::vec![pool[i], pool[j]], &mut best);
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
                        consider(alloc::vec![pool[i], pool[j], pool[k]], &mut best);
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

    /// The exact search combines only the first `EXACT_POOL_MAX` tokens
    /// (by ancestry) in twos and threes, so a full SE's 256 tokens cost
    /// thousands of sets, not millions; a single exact token is found
    /// among all of them.
    #[test]
    fn the_exact_search_combines_a_bounded_pool() {
        // 40 tokens of 1000 (short ancestry), then 7, 3 and 10 (long).
        // Tokens worth more than the amount stay out of the pool: 10
        // alone, and 7 + 10, are found behind the forty.
        let mut cands: Vec<Candidate> = (0..40).map(|_| c(1000, 1)).collect();
        cands.push(c(7, 5));
        cands.push(c(3, 5));
        cands.push(c(10, 9));
        let sum = |s: &[usize]| s.iter().map(|&i| cands[i].lineage_len).sum();
        assert_eq!(
            select(&cands, Amount(10), 64, &sum, true),
            Ok(alloc::vec![42])
        );
        assert_eq!(
            select(&cands, Amount(17), 64, &sum, true),
            Ok(alloc::vec![40, 42])
        );
        // 40 tokens of 1 fill the pool: a pair of them makes 2, but 1007
        // (1000 + 7) needs a token outside it: the usual choice.
        let mut cands: Vec<Candidate> = (0..40).map(|_| c(1, 1)).collect();
        cands.push(c(1000, 2));
        cands.push(c(7, 3));
        let sum = |s: &[usize]| s.iter().map(|&i| cands[i].lineage_len).sum();
        assert_eq!(
            select(&cands, Amount(2), 64, &sum, true),
            Ok(alloc::vec![0, 1])
        );
        assert_eq!(
            select(&cands, Amount(1007), 64, &sum, true),
            select(&cands, Amount(1007), 64, &sum, false)
        );
    }
}
