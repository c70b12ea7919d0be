//! GET /: one server-rendered page (no script): the ledger invariant, the
//! SE fleet by class and status, the double spends as a count and a value,
//! and links to the machine-readable endpoints. The page needs no token, so
//! it shows aggregates only: no account names, no SE ids, no pseudonyms,
//! no record ids (the list of double spends with offender pseudonyms is
//! `GET /v1/double-spends`, behind the operator token).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tally_dcp::{Backoffice, BackofficeError};

use crate::http::double_spend_count;
use crate::views::{DeviceView, InvariantView};

pub(crate) struct Snapshot {
    invariant: InvariantView,
    epoch: u32,
    devices: usize,
    /// (class name, status) → count
    fleet: BTreeMap<(String, String), usize>,
    double_spends_total: i64,
    /// Value of every double-spent output (minor units).
    double_spends_value: u128,
}

impl Snapshot {
    pub(crate) fn read(bo: &Backoffice) -> Result<Snapshot, BackofficeError> {
        let invariant = InvariantView::from(bo.invariant()?);
        let epoch = bo.epoch()?;
        let list = bo.devices()?;
        let mut fleet = BTreeMap::new();
        for d in list.iter().map(DeviceView::from) {
            *fleet.entry((d.class_name, d.status)).or_insert(0) += 1;
        }
        let double_spends_value = bo
            .double_spends()?
            .iter()
            .map(|(_, _, value, _)| u128::from(*value))
            .sum();
        Ok(Snapshot {
            invariant,
            epoch,
            devices: list.len(),
            fleet,
            double_spends_total: double_spend_count(bo)?,
            double_spends_value,
        })
    }
}

/// HTML-escapes text (makers and keys come from devices).
pub(crate) fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

pub(crate) fn render(s: &Snapshot) -> String {
    let inv = &s.invariant;
    let mut h = String::with_capacity(8192);
    h.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Tally back office</title><style>\
         body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}\
         table{border-collapse:collapse;margin:0.5rem 0 1.5rem}\
         th,td{border:1px solid #ccc;padding:0.25rem 0.75rem;text-align:left}\
         td.n{text-align:right;font-variant-numeric:tabular-nums}\
         .ok{color:#075;font-weight:bold}.bad{color:#b00;font-weight:bold}\
         code{font-size:0.9em}</style></head><body>\n",
    );
    let _ = writeln!(
        h,
        "<h1>Tally back office</h1>\n<p>Sync epoch <b>{}</b></p>",
        s.epoch
    );

    let (class, word) = if inv.holds {
        ("ok", "holds")
    } else {
        ("bad", "VIOLATED")
    };
    let _ = writeln!(
        h,
        "<h2>Ledger invariant: <span id=\"invariant\" class=\"{class}\">{word}</span></h2>\n\
         <p>accounts + offline float + loss = minted − redeemed</p>\n<table id=\"invariant-terms\">"
    );
    for (name, v) in [
        ("minted", inv.minted),
        ("redeemed", inv.redeemed),
        ("accounts", inv.accounts),
        ("offline float", inv.offline_float),
        ("loss", inv.loss),
        ("issuance", inv.issuance),
        ("negative accounts", inv.negative_accounts),
        ("journal entries", inv.journal_entries),
    ] {
        let _ = writeln!(h, "<tr><th>{name}</th><td class=\"n\">{v}</td></tr>");
    }
    h.push_str("</table>\n");

    let _ = writeln!(
        h,
        "<h2>Devices: <span id=\"devices\">{}</span></h2>",
        s.devices
    );
    if !s.fleet.is_empty() {
        h.push_str("<table><tr><th>class</th><th>status</th><th>count</th></tr>\n");
        for ((class, status), n) in &s.fleet {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{n}</td></tr>",
                escape(class),
                escape(status)
            );
        }
        h.push_str("</table>\n");
    }

    let _ = writeln!(
        h,
        "<h2>Double spends: <span id=\"double-spends\">{}</span></h2>",
        s.double_spends_total
    );
    if s.double_spends_total == 0 {
        h.push_str("<p>None detected.</p>\n");
    } else {
        let _ = writeln!(
            h,
            "<p>Value double-spent: <span id=\"double-spends-value\">{}</span>, \
             booked to the scheme loss account.</p>",
            s.double_spends_value
        );
    }

    h.push_str(
        "<h2>Machine-readable</h2>\n<ul>\
         <li><a href=\"/metrics\">/metrics</a> (Prometheus)</li>\
         <li><a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1)</li>\
         <li><a href=\"/ledger/invariant\">/ledger/invariant</a> (JSON)</li>\
         <li><a href=\"/v1/trust.json\">/v1/trust.json</a> (root key, policy, revocations)</li>\
         </ul>\n</body></html>\n",
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_device_supplied_text() {
        assert_eq!(
            escape("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }
}
