//! The MDS as its own party (`tally mds`, issue 11): it pulls settled
//! records from the central bank's outbox with its `mds` role certificate
//! and answers operators (mutual TLS, `operator` role) about alerts and
//! indicators. Its store holds the token graph and alerts: no SE id, no
//! account name (decision 0007).
//!
//! Routes (operators): `GET /mds/alerts`, `POST /mds/alerts/{id}/transition`
//! `{"to", "note"}`, `GET /mds/indicators`; (any role certificate) `GET
//! /mds/role-revocations`, the root-signed role revocation list the MDS
//! last believed, relayed so that an operator's `tally cb` can refuse a
//! revoked MDS key before it trusts the MDS's answers (THREATS T75).

use std::sync::{Arc, PoisonError, RwLock};

use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tally_mds::Mds;
use tally_tls::{PeerRole, Role};

use crate::error::ApiError;
use crate::extract::PartyBody;

/// Largest body the MDS takes (an alert transition: a short JSON object).
pub const MDS_BODY_BYTES_MAX: usize = 16 * 1024;
use crate::views::{AlertView, TransitionRequest};

/// The root-signed role revocation list the MDS last believed (its
/// refresh from the central bank sets it), served as the central bank
/// served it. Relaying gives a client nothing it must trust the MDS for:
/// the client checks the root's signature, the serial and the list's
/// freshness itself, so an MDS can withhold a newer list only for as long
/// as an older one stays current (`ROLE_REVOCATIONS_MAX_AGE_S`), exactly
/// as a revoked central bank key could.
#[derive(Debug, Clone, Default)]
pub struct RoleRevocationRelay(Arc<RwLock<Option<Vec<u8>>>>);

impl RoleRevocationRelay {
    pub fn new() -> Self {
        Self::default()
    }
    /// Relay `list` (already checked by the caller) from now on.
    pub fn set(&self, list: &tally_core::policy::RoleRevocations) {
        use tally_core::codec::Cbor as _;
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(list.to_cbor());
    }
    fn get(&self) -> Option<Vec<u8>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Where an MDS at `base` relays the role revocation list.
pub fn mds_role_revocations_url(base: &str) -> String {
    format!("{}/mds/role-revocations", base.trim_end_matches('/'))
}

/// The MDS's routes. `revoked`: the role keys the central bank revoked
/// (the MDS process refreshes it from the central bank), refused on every
/// request as the handshake refuses them; `relay`: the list it believes,
/// served to its clients.
pub fn mds_router(
    mds: Arc<Mds>,
    revoked: tally_tls::RevokedKeys,
    relay: RoleRevocationRelay,
) -> Router {
    Router::new()
        .route("/mds/alerts", get(alerts))
        .route("/mds/alerts/{id}/transition", post(transition))
        .route("/mds/indicators", get(indicators))
        .route(
            "/mds/role-revocations",
            get(move |role| role_revocations(relay.clone(), role)),
        )
        .fallback(crate::http::no_route)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MDS_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(crate::http::refuse_revoked))
        .layer(Extension(revoked))
        .with_state(mds)
}

async fn role_revocations(
    relay: RoleRevocationRelay,
    role: Option<Extension<PeerRole>>,
) -> Response {
    // Every party with a role certificate, as at the central bank.
    if role.is_none() {
        return ApiError::new(
            401,
            tally_codes::HTTP_UNAUTHORIZED,
            "a role certificate is needed",
        )
        .into_response();
    }
    match relay.get() {
        Some(list) => ([(header::CONTENT_TYPE, "application/cbor")], list).into_response(),
        None => ApiError::new(
            503,
            tally_codes::CENTRAL_UNAVAILABLE,
            "the MDS holds no role revocation list yet (the central bank has not answered): retry",
        )
        .into_response(),
    }
}

fn operator(role: Option<Extension<PeerRole>>) -> Result<(), Response> {
    match role {
        Some(Extension(PeerRole(Role::Operator))) => Ok(()),
        _ => Err(ApiError::new(
            401,
            tally_codes::HTTP_UNAUTHORIZED,
            "only an operator's role certificate may call this",
        )
        .into_response()),
    }
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tally_mds::MdsError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::from(tally_dcp::BackofficeError::from(e)).into_response()),
        Err(_) => Err(ApiError::internal("internal error").into_response()),
    }
}

async fn alerts(State(mds): State<Arc<Mds>>, role: Option<Extension<PeerRole>>) -> Response {
    if let Err(r) = operator(role) {
        return r;
    }
    match run(move || mds.alerts()).await {
        Ok(list) => json_bytes(
            serde_json::to_vec(&list.iter().map(AlertView::from).collect::<Vec<_>>())
                .unwrap_or_default(),
        ),
        Err(r) => r,
    }
}

async fn transition(
    State(mds): State<Arc<Mds>>,
    role: Option<Extension<PeerRole>>,
    Path(id): Path<i64>,
    PartyBody(body): PartyBody,
) -> Response {
    if let Err(r) = operator(role) {
        return r;
    }
    let req: TransitionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::malformed(format!("malformed body: {e}")).into_response(),
    };
    let to = match crate::http::alert_state(&req.to) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    match run(move || mds.transition(id, to, &req.note)).await {
        Ok(a) => json_bytes(serde_json::to_vec(&AlertView::from(&a)).unwrap_or_default()),
        Err(r) => r,
    }
}

async fn indicators(State(mds): State<Arc<Mds>>, role: Option<Extension<PeerRole>>) -> Response {
    if let Err(r) = operator(role) {
        return r;
    }
    match run(move || mds.indicators()).await {
        Ok(ind) => json_bytes(ind.to_json().into_bytes()),
        Err(r) => r,
    }
}
