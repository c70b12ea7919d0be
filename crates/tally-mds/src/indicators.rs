//! Econometric indicators of offline money, with their JSON (for
//! `GET /mds/indicators`) and Prometheus text forms.
//!
//! Definitions (amounts in minor units; only records settlement verified
//! and the MDS did not find counterfeit count):
//! * `issued` — value of all Issue records; `redeemed` — value paid to a
//!   DCP redemption key (renewals, unloads); `circulation` = issued −
//!   redeemed: offline money the scheme stands behind.
//! * payments — transfers that pay a device (not a redemption); a
//!   payment's value is its first output (the payee's), change excluded.
//! * `average_hops` — over redemption transfers, the number of transfers
//!   between the Issue and the redeemed token (the longest chain among its
//!   inputs).
//! * `velocity` — payment value ÷ issued value: how many times issued money
//!   changed hands offline.
//! * `holdings_by_class` — unspent outputs not redeemed, by the owner's
//!   device class. Their sum is `circulation + fraud_losses`: a double
//!   spend creates money that the scheme loss account covers.
//! * offline time — epochs a device had been offline when it synced a
//!   record (mean and maximum over records that carried it).
//! * `fraud_losses` — value of outputs spent a second time.

use std::fmt::Write;

use tally_store::Tx;

use crate::MdsError;
use crate::db::MdsDb;

/// Counter names `holdings_class_N` hold the unspent value of class N.
pub(crate) const HOLDINGS_PREFIX: &str = "holdings_class_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPayments {
    pub epoch: u32,
    pub count: u64,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Indicators {
    pub records: u64,
    pub issued: u64,
    pub redeemed: u64,
    pub circulation: u64,
    pub payments: u64,
    pub payment_value: u64,
    pub payments_by_epoch: Vec<EpochPayments>,
    pub redemptions: u64,
    pub hops_total: u64,
    pub average_hops: f64,
    pub velocity: f64,
    /// `(device class, value)`, by class.
    pub holdings_by_class: Vec<(u8, u64)>,
    pub offline_samples: u64,
    pub offline_epochs_total: u64,
    pub average_offline_epochs: f64,
    pub offline_epochs_max: u64,
    pub fraud_losses: u64,
    pub double_spends: u64,
    pub counterfeits: u64,
    pub alerts_open: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

pub(crate) fn read(tx: &mut dyn Tx) -> Result<Indicators, MdsError> {
    let mut c = std::collections::HashMap::new();
    for r in tx.counters()? {
        c.insert(r.name, r.value);
    }
    let get = |n: &str| c.get(n).copied().unwrap_or(0);
    let payments_by_epoch = tx.epoch_payments()?;
    let mut holdings_by_class = Vec::new();
    for (name, v) in &c {
        if let Some(class) = name.strip_prefix(HOLDINGS_PREFIX) {
            let class: u8 = class
                .parse()
                .map_err(|_| MdsError::Corrupt(format!("counter {name}")))?;
            if *v > 0 {
                holdings_by_class.push((class, *v));
            }
        }
    }
    holdings_by_class.sort();
    let alerts_open = tx.open_alert_count()?;
    let (issued, redeemed) = (get("issued"), get("redeemed"));
    Ok(Indicators {
        records: get("records"),
        issued,
        redeemed,
        circulation: issued.saturating_sub(redeemed),
        payments: get("payments"),
        payment_value: get("payment_value"),
        payments_by_epoch,
        redemptions: get("redemptions"),
        hops_total: get("hops_total"),
        average_hops: ratio(get("hops_total"), get("redemptions")),
        velocity: ratio(get("payment_value"), issued),
        holdings_by_class,
        offline_samples: get("offline_samples"),
        offline_epochs_total: get("offline_epochs_total"),
        average_offline_epochs: ratio(get("offline_epochs_total"), get("offline_samples")),
        offline_epochs_max: get("offline_epochs_max"),
        fraud_losses: get("fraud_losses"),
        double_spends: get("double_spends"),
        counterfeits: get("counterfeits"),
        alerts_open,
    })
}

fn f(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "0".into()
    }
}

impl Indicators {
    /// JSON for `GET /mds/indicators`.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(1024);
        let _ = write!(
            s,
            "{{\"records\":{},\"issued\":{},\"redeemed\":{},\"circulation\":{},\"payments\":{},\"payment_value\":{},\"payments_by_epoch\":[",
            self.records,
            self.issued,
            self.redeemed,
            self.circulation,
            self.payments,
            self.payment_value
        );
        for (i, e) in self.payments_by_epoch.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                s,
                "{sep}{{\"epoch\":{},\"count\":{},\"value\":{}}}",
                e.epoch, e.count, e.value
            );
        }
        let _ = write!(
            s,
            "],\"redemptions\":{},\"average_hops\":{},\"velocity\":{},\"holdings_by_class\":[",
            self.redemptions,
            f(self.average_hops),
            f(self.velocity)
        );
        for (i, (c, v)) in self.holdings_by_class.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}{{\"device_class\":{c},\"value\":{v}}}");
        }
        let _ = write!(
            s,
            "],\"offline_samples\":{},\"average_offline_epochs\":{},\"offline_epochs_max\":{},\"fraud_losses\":{},\"double_spends\":{},\"counterfeits\":{},\"alerts_open\":{}}}",
            self.offline_samples,
            f(self.average_offline_epochs),
            self.offline_epochs_max,
            self.fraud_losses,
            self.double_spends,
            self.counterfeits,
            self.alerts_open
        );
        s
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut s = String::with_capacity(2048);
        let mut one = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(s, "# HELP tally_mds_{name} {help}");
            let _ = writeln!(s, "# TYPE tally_mds_{name} {kind}");
            let _ = writeln!(s, "tally_mds_{name} {v}");
        };
        one(
            "records_total",
            "counter",
            "Records ingested.",
            self.records.to_string(),
        );
        one(
            "issued_total",
            "counter",
            "Value issued (minor units).",
            self.issued.to_string(),
        );
        one(
            "redeemed_total",
            "counter",
            "Value redeemed by renewals and unloads (minor units).",
            self.redeemed.to_string(),
        );
        one(
            "offline_circulation",
            "gauge",
            "Offline money in circulation: issued - redeemed (minor units).",
            self.circulation.to_string(),
        );
        one(
            "payments_total",
            "counter",
            "Offline payments settled.",
            self.payments.to_string(),
        );
        one(
            "payment_value_total",
            "counter",
            "Value of offline payments (minor units).",
            self.payment_value.to_string(),
        );
        one(
            "redemptions_total",
            "counter",
            "Redemption transfers (renewal, unload).",
            self.redemptions.to_string(),
        );
        one(
            "average_hops_before_renewal",
            "gauge",
            "Mean transfers between issue and redemption.",
            f(self.average_hops),
        );
        one(
            "velocity",
            "gauge",
            "Payment value divided by issued value.",
            f(self.velocity),
        );
        one(
            "average_offline_epochs",
            "gauge",
            "Mean epochs offline before sync.",
            f(self.average_offline_epochs),
        );
        one(
            "offline_epochs_max",
            "gauge",
            "Most epochs offline before sync.",
            self.offline_epochs_max.to_string(),
        );
        one(
            "fraud_losses_total",
            "counter",
            "Value of double-spent outputs (minor units).",
            self.fraud_losses.to_string(),
        );
        one(
            "double_spends_total",
            "counter",
            "Double spends detected.",
            self.double_spends.to_string(),
        );
        one(
            "counterfeits_total",
            "counter",
            "Counterfeit records detected.",
            self.counterfeits.to_string(),
        );
        one(
            "alerts_open",
            "gauge",
            "Alerts not closed.",
            self.alerts_open.to_string(),
        );
        let _ = writeln!(
            s,
            "# HELP tally_mds_epoch_payments Offline payments per settlement epoch."
        );
        let _ = writeln!(s, "# TYPE tally_mds_epoch_payments gauge");
        for e in &self.payments_by_epoch {
            let _ = writeln!(
                s,
                "tally_mds_epoch_payments{{epoch=\"{}\"}} {}",
                e.epoch, e.count
            );
        }
        let _ = writeln!(
            s,
            "# HELP tally_mds_epoch_payment_value Offline payment value per settlement epoch (minor units)."
        );
        let _ = writeln!(s, "# TYPE tally_mds_epoch_payment_value gauge");
        for e in &self.payments_by_epoch {
            let _ = writeln!(
                s,
                "tally_mds_epoch_payment_value{{epoch=\"{}\"}} {}",
                e.epoch, e.value
            );
        }
        let _ = writeln!(
            s,
            "# HELP tally_mds_holdings Unspent offline value by device class (minor units)."
        );
        let _ = writeln!(s, "# TYPE tally_mds_holdings gauge");
        for (c, v) in &self.holdings_by_class {
            let _ = writeln!(s, "tally_mds_holdings{{device_class=\"{c}\"}} {v}");
        }
        s
    }
}
