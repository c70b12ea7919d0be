//! HTTP API of the back office (axum): device traffic in CBOR, operator
//! calls in JSON, the published ledger invariant, Prometheus metrics, the
//! OpenAPI document and a small server-rendered dashboard. Also the clients
//! that speak it: [`HttpBackend`] and [`InProcess`] implement the wallet's
//! [`tally_wallet::agent::Backend`], and [`OperatorClient`] drives the
//! operator endpoints.
//!
//! Handlers are thin: authenticate, call the [`Backoffice`] (on the
//! blocking pool: every call is a database transaction), map the result.
//! Every failure, including the framework's own (body too large, no such
//! route), is the JSON envelope `{"error": {"code", "message"}}`; the status
//! comes from [`status_for`], which the in-process connector shares.

#![forbid(unsafe_code)]
// The handlers' helpers return axum's `Response` as their error, the
// rejection already rendered (status, code, JSON): boxing it buys nothing.
#![allow(clippy::result_large_err)]

mod central;
mod client;
mod dashboard;
mod error;
mod extract;
mod http;
mod mds;
mod metrics;
mod openapi;
mod ratelimit;
mod server;
mod views;

use std::sync::Arc;

pub use central::{
    CENTRAL_BODY_BYTES_MAX, CentralClient, DcpAccountView, OutboxClient, ROLE_REVOCATIONS_POLL,
    ROLE_REVOCATIONS_RETRY, central_router, fetch_role_revocations, fetch_role_revocations_at,
    refresh_role_revocations, refresh_role_revocations_at, role_revocations_url,
};
pub use client::{HttpBackend, InProcess, OperatorClient};
pub use error::{ApiError, backend_error, code, status_for};
pub use http::{ROUTES, router};
pub use mds::{MDS_BODY_BYTES_MAX, RoleRevocationRelay, mds_role_revocations_url, mds_router};
pub use openapi::document as openapi_document;
pub use ratelimit::{
    DEVICE_REQUESTS_BURST_MAX, DEVICE_REQUESTS_REFILL_PER_SECOND, DeviceRate, RATE_LIMITED_SES_MAX,
};
pub use server::{BackgroundServer, run, serve};
pub use tally_dcp::Backoffice;
pub use views::{
    ACCOUNT_NAME_CHARS_MAX, AlertView, AmountRequest, BalanceView, DeviceView, DoubleSpendView,
    EpochView, ErrorBody, ErrorEnvelope, EscrowView, InvariantView, ReconcileView, RevokeRequest,
    RevokeView, TransitionRequest, TrustBundle, parse_hash,
};

/// Default request body limit (1 MiB).
pub const BODY_LIMIT_BYTES_DEFAULT: usize = 1 << 20;

/// Settings of the HTTP layer.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Bearer token of the operator endpoints. Empty: operator endpoints
    /// refuse every call (401).
    pub operator_token: String,
    /// Largest accepted request body; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Per-SE limit on device requests; past it, 429.
    pub device_rate: DeviceRate,
}

impl ApiConfig {
    pub fn new(operator_token: impl Into<String>) -> ApiConfig {
        ApiConfig {
            operator_token: operator_token.into(),
            body_limit_bytes: BODY_LIMIT_BYTES_DEFAULT,
            device_rate: DeviceRate::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig::new(String::new())
    }
}

// The token is a secret: never print it.
impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("operator_token", &"<redacted>")
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("device_rate", &self.device_rate)
            .finish()
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) bo: Arc<Backoffice>,
    pub(crate) cfg: Arc<ApiConfig>,
    pub(crate) metrics: Arc<metrics::HttpCounters>,
    pub(crate) device_rate: Arc<ratelimit::DeviceRateLimit>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}
