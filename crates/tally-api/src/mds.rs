//! The MDS as its own party (`tally mds`, issue 11): it pulls settled
//! records from the central bank's outbox with its `mds` role certificate
//! and answers operators (mutual TLS, `operator` role) about alerts and
//! indicators. Its store holds the token graph and alerts: no SE id, no
//! account name (decision 0007).
//!
//! Routes (operators): `GET /mds/alerts`, `POST /mds/alerts/{id}/transition`
//! `{"to", "note"}`, `GET /mds/indicators`.

use std::sync::Arc;

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

/// The MDS's routes. `revoked`: the role keys the central bank revoked
/// (the MDS process refreshes it from the central bank), refused on every
/// request as the handshake refuses them.
pub fn mds_router(mds: Arc<Mds>, revoked: tally_tls::RevokedKeys) -> Router {
    Router::new()
        .route("/mds/alerts", get(alerts))
        .route("/mds/alerts/{id}/transition", post(transition))
        .route("/mds/indicators", get(indicators))
        .fallback(crate::http::no_route)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MDS_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(crate::http::refuse_revoked))
        .layer(Extension(revoked))
        .with_state(mds)
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
