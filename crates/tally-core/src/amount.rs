//! Amounts: u64 minor units of the policy's one currency. All arithmetic is
//! checked; overflow is an error, never a wrap.

use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn checked_add(self, o: Amount) -> Option<Amount> {
        self.0.checked_add(o.0).map(Amount)
    }
    pub fn checked_sub(self, o: Amount) -> Option<Amount> {
        self.0.checked_sub(o.0).map(Amount)
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    /// Sum of an iterator, `None` on overflow.
    pub fn sum<I: IntoIterator<Item = Amount>>(it: I) -> Option<Amount> {
        it.into_iter()
            .try_fold(Amount::ZERO, |a, b| a.checked_add(b))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A sync epoch number, handed out by the back office. Devices never read a
/// clock.
pub type Epoch = u32;
