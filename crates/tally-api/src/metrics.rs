//! Prometheus text exposition: ledger gauges read at scrape time and HTTP
//! request counters kept in a fixed table of atomics (route × status), so
//! counting never takes a lock and the label set is bounded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::ROUTES;
use crate::views::InvariantView;

/// Statuses counted one by one; any other lands in "other".
const STATUSES: [u16; 14] = [
    200, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503, 504,
];
const STATUS_BUCKETS: usize = STATUSES.len() + 1;
/// Label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

pub(crate) struct HttpCounters {
    /// (ROUTES.len() + 1) × STATUS_BUCKETS; the extra route row is UNMATCHED.
    counts: Vec<AtomicU64>,
}

impl HttpCounters {
    pub(crate) fn new() -> HttpCounters {
        HttpCounters {
            counts: (0..(ROUTES.len() + 1) * STATUS_BUCKETS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn record(&self, route: Option<&str>, status: u16) {
        let r = route
            .and_then(|p| ROUTES.iter().position(|(path, _)| *path == p))
            .unwrap_or(ROUTES.len());
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len());
        self.counts[r * STATUS_BUCKETS + s].fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String) {
        out.push_str(
            "# HELP tally_http_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE tally_http_requests_total counter\n");
        let routes = ROUTES.iter().map(|(p, _)| *p).chain([UNMATCHED]);
        for (r, route) in routes.enumerate() {
            for s in 0..STATUS_BUCKETS {
                let n = self.counts[r * STATUS_BUCKETS + s].load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(s)
                    .map_or_else(|| "other".to_string(), u16::to_string);
                let _ = writeln!(
                    out,
                    "tally_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
    }
}

/// Middleware: counts every answer under its route template.
pub(crate) async fn count(
    State(counters): State<std::sync::Arc<HttpCounters>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let resp = next.run(req).await;
    counters.record(route.as_deref(), resp.status().as_u16());
    resp
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// The whole exposition. `ledger` is None when the store could not be
/// read; the HTTP counters are still served (and `tally_store_up` says 0).
pub(crate) fn render(ledger: Option<(InvariantView, u32, i64)>, counters: &HttpCounters) -> String {
    let mut out = String::with_capacity(2048);
    gauge(
        &mut out,
        "tally_store_up",
        "1 if the ledger could be read for this scrape.",
        i64::from(ledger.is_some()),
    );
    if let Some((inv, epoch, double_spends)) = ledger {
        let g: [(&str, &str, i64); 11] = [
            (
                "tally_ledger_minted",
                "Value minted by the central bank (minor units).",
                inv.minted,
            ),
            (
                "tally_ledger_redeemed",
                "Value redeemed to the central bank.",
                inv.redeemed,
            ),
            (
                "tally_ledger_accounts",
                "Sum of DCP and user account balances.",
                inv.accounts,
            ),
            (
                "tally_ledger_offline_float",
                "Value held offline in SEs.",
                inv.offline_float,
            ),
            (
                "tally_ledger_loss",
                "Scheme loss account (double spends covered, <= 0).",
                inv.loss,
            ),
            (
                "tally_ledger_issuance",
                "Central bank issuance account.",
                inv.issuance,
            ),
            (
                "tally_ledger_negative_accounts",
                "Accounts with a negative balance (must be 0).",
                inv.negative_accounts,
            ),
            (
                "tally_ledger_journal_entries",
                "Transfers in the ledger journal.",
                inv.journal_entries,
            ),
            (
                "tally_invariant_holds",
                "1 if accounts + float + loss = minted - redeemed.",
                i64::from(inv.holds),
            ),
            ("tally_epoch", "Current sync epoch.", i64::from(epoch)),
            (
                "tally_double_spends",
                "Double spends detected at settlement.",
                double_spends,
            ),
        ];
        for (name, help, v) in g {
            gauge(&mut out, name, help, v);
        }
    }
    counters.write(&mut out);
    out
}

/// The MDS feed's backlog: rows waiting, the oldest one's age, and the
/// rows (or records) the MDS set aside, each with an alert.
pub(crate) fn render_outbox(out: &mut String, o: &tally_dcp::OutboxStatus) {
    let g: [(&str, &str, u64); 3] = [
        (
            "tally_mds_outbox_pending",
            "Settled records' outbox rows waiting for the MDS.",
            o.pending,
        ),
        (
            "tally_mds_outbox_oldest_age_seconds",
            "Age of the oldest outbox row waiting for the MDS (0: none).",
            o.oldest_age_seconds,
        ),
        (
            "tally_mds_set_aside",
            "Outbox rows or records the MDS could not ingest and set aside (each alerted).",
            o.set_aside,
        ),
    ];
    for (name, help, v) in g {
        gauge(out, name, help, i64::try_from(v).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_status_with_bounded_labels() {
        let c = HttpCounters::new();
        c.record(Some("/metrics"), 200);
        c.record(Some("/metrics"), 200);
        c.record(Some("/v1/devices/request"), 409);
        c.record(None, 404);
        c.record(Some("/v1/trust"), 418);
        let mut s = String::new();
        c.write(&mut s);
        assert!(s.contains("tally_http_requests_total{route=\"/metrics\",status=\"200\"} 2\n"));
        assert!(s.contains("route=\"/v1/devices/request\",status=\"409\"} 1\n"));
        assert!(s.contains("route=\"unmatched\",status=\"404\"} 1\n"));
        assert!(s.contains("route=\"/v1/trust\",status=\"other\"} 1\n"));
    }
}
