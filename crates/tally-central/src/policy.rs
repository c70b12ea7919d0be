//! Defaults of the central bank's policy and the rule for account names
//! (both roles check names: the DCP when it opens an account, the central
//! bank when a payment names one at another DCP).

use tally_core::Amount;
use tally_core::policy::{TierLimits, device_class};

/// Account names devices register under (and deposits may open):
/// letters, digits, '-' and '_'.
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Default tiers of the node's policy (XTS minor units). Cards and
/// phones pay up to 5 000 offline without the PIN, 15 000 in a row, and
/// need it for online payments; IoT classes have no cardholder (THREATS.md).
pub fn default_tiers() -> Vec<TierLimits> {
    let t = |device_class, payment_max, holding_max, history_records_max| TierLimits {
        device_class,
        tier: 0,
        payment_max: Amount(payment_max),
        holding_max: Amount(holding_max),
        receiving_max: Amount(holding_max),
        offline_spend_max: Amount(holding_max),
        offline_payments_max: 1_000,
        history_records_max,
        offline_epochs_max: 30,
        cvm_payment_max: Amount(5_000),
        cvm_cumulative_max: Amount(15_000),
        cvm_online: true,
    };
    let no_cardholder = |t: TierLimits| TierLimits {
        cvm_payment_max: Amount(u64::MAX),
        cvm_cumulative_max: Amount(u64::MAX),
        cvm_online: false,
        ..t
    };
    vec![
        t(device_class::CARD, 50_000, 100_000, 32),
        t(device_class::PHONE, 50_000, 200_000, 32),
        no_cardholder(t(device_class::IOT, 10_000, 20_000, 32)),
        no_cardholder(t(device_class::DCP, u64::MAX / 4, u64::MAX / 4, 1024)),
    ]
}
