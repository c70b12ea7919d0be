//! Routes and handlers. Each handler authenticates (operator routes),
//! decodes the body, calls the service on the blocking pool and maps the
//! result; nothing else.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tally_core::Hash32;
use tally_core::codec::Cbor;
use tally_dcp::{Backoffice, BackofficeError, Registration};
use tally_ledger::settlement::Settlement;

use std::time::Instant;

use tally_core::dcp::DeviceRequest;

use crate::error::{ApiError, code};
use crate::extract::{AccountName, AlertId, CborBody, JsonBody, KeyId, Operator, refuse_query};
use crate::metrics::{self, HttpCounters};
use crate::ratelimit::DeviceRateLimit;
use crate::views::{
    AlertView, AmountRequest, BalanceView, DeviceView, DoubleSpendView, EnrolmentCodeView,
    EpochView, EscrowView, InvariantView, ReconcileView, RevokeRequest, RevokeView,
    TransitionRequest, TrustBundle, parse_hash,
};
use crate::{ApiConfig, AppState, dashboard, openapi};
use tally_mds::AlertState;

/// Every route: (path template, method). The OpenAPI document and the
/// metrics labels are checked against this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("/", "get"),
    ("/v1/trust", "get"),
    ("/v1/trust.json", "get"),
    ("/v1/devices/register", "post"),
    ("/v1/devices/request", "post"),
    ("/v1/cb/mint", "post"),
    ("/v1/accounts/{name}/deposit", "post"),
    ("/v1/accounts/{name}", "get"),
    ("/v1/accounts/{name}/enrolment-codes", "post"),
    ("/v1/epoch/advance", "post"),
    ("/v1/devices", "get"),
    ("/v1/dcp/reconcile", "get"),
    ("/v1/double-spends", "get"),
    ("/v1/mds/alerts", "get"),
    ("/v1/mds/alerts/{id}/transition", "post"),
    ("/v1/escrows/{key_id}", "get"),
    ("/v1/directory/revoke", "post"),
    ("/mds/indicators", "get"),
    ("/ledger/invariant", "get"),
    ("/metrics", "get"),
    ("/openapi.json", "get"),
];

const CBOR: &str = "application/cbor";

/// The API on `bo`. Bodies above `cfg.body_limit_bytes` get 413.
pub fn router(bo: Arc<Backoffice>, cfg: ApiConfig) -> Router {
    let limit = cfg.body_limit_bytes;
    let state = AppState {
        bo,
        device_rate: Arc::new(DeviceRateLimit::new(cfg.device_rate)),
        cfg: Arc::new(cfg),
        metrics: Arc::new(HttpCounters::new()),
    };
    Router::new()
        .route("/", get(dashboard_page))
        .route("/v1/trust", get(trust))
        .route("/v1/trust.json", get(trust_json))
        .route("/v1/devices/register", post(register))
        .route("/v1/devices/request", post(device_request))
        .route("/v1/cb/mint", post(mint))
        .route("/v1/accounts/{name}/deposit", post(deposit))
        .route("/v1/accounts/{name}", get(balance))
        .route("/v1/accounts/{name}/enrolment-codes", post(enrolment_code))
        .route("/v1/epoch/advance", post(advance_epoch))
        .route("/v1/devices", get(devices))
        .route("/v1/dcp/reconcile", get(reconcile))
        .route("/v1/double-spends", get(double_spends))
        .route("/v1/mds/alerts", get(alerts))
        .route("/v1/mds/alerts/{id}/transition", post(alert_transition))
        .route("/v1/escrows/{key_id}", get(escrow))
        .route("/v1/directory/revoke", post(revoke))
        .route("/mds/indicators", get(indicators))
        .route("/ledger/invariant", get(invariant))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .route_layer(middleware::from_fn(refuse_query))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::count,
        ))
        .with_state(state)
}

/// Runs `f` (a store transaction) on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, BackofficeError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            eprintln!("tally-api: service task failed: {e}");
            Err(ApiError::internal("internal error"))
        }
    }
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => ApiError::internal("could not encode the answer").into_response(),
    }
}

fn cbor(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, CBOR)], bytes).into_response()
}

// ---- fallbacks ----------------------------------------------------------

/// Refuses a request from a party whose role certificate key is revoked
/// (the central bank's and the MDS's routers), whatever the route (a connection opened before the revocation passed
/// the handshake's check).
pub(crate) async fn refuse_revoked(
    axum::Extension(revoked): axum::Extension<tally_tls::RevokedKeys>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(tally_tls::PeerPin(pin)) = req.extensions().get::<tally_tls::PeerPin>()
        && revoked.contains(pin)
    {
        return ApiError::new(
            401,
            tally_codes::CENTRAL_ROLE_REVOKED,
            "this role certificate's key is revoked",
        )
        .into_response();
    }
    next.run(req).await
}

pub(crate) async fn no_route() -> ApiError {
    ApiError::new(404, code::NO_ROUTE, "no such route (see /openapi.json)")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        code::METHOD_NOT_ALLOWED,
        "method not allowed on this route (see /openapi.json)",
    )
}

// ---- devices (CBOR) -----------------------------------------------------

async fn load_trust(bo: Arc<Backoffice>) -> Result<(TrustBundle, u32), ApiError> {
    blocking(move || {
        Ok((
            TrustBundle {
                root: bo.root_key(),
                policy: bo.policy()?,
                revocations: bo.revocations()?,
                sealing_key: bo.sealing_key(),
            },
            bo.epoch()?,
        ))
    })
    .await
}

async fn trust(State(s): State<AppState>) -> Result<Response, ApiError> {
    let (t, _) = load_trust(s.bo).await?;
    Ok(cbor(t.to_cbor()))
}

async fn trust_json(State(s): State<AppState>) -> Result<Response, ApiError> {
    let settlement = s.bo.settlement_key();
    let (t, epoch) = load_trust(s.bo).await?;
    let mut v = crate::views::trust_json(&t, epoch);
    // The key settlement results are signed with, certified by the root
    // (for DCPs and auditors; devices never check settlement results).
    v["settlement_key"] = serde_json::json!({
        "suite": settlement.key.suite() as u8,
        "key": crate::hex(settlement.key.key_bytes()),
        "cbor": crate::hex(&settlement.to_cbor()),
    });
    Ok(json(&v))
}

async fn register(State(s): State<AppState>, CborBody(b): CborBody) -> Result<Response, ApiError> {
    let reg = Registration::from_cbor(&b).map_err(BackofficeError::from)?;
    let bo = s.bo;
    let se_id: Hash32 = blocking(move || bo.register(&reg)).await?;
    Ok(cbor(se_id.to_cbor()))
}

async fn device_request(
    State(s): State<AppState>,
    CborBody(b): CborBody,
) -> Result<Response, ApiError> {
    // The SE's bucket first, before any database work. A body that does
    // not decode goes on to the service, which refuses it (400).
    let se_id = DeviceRequest::from_cbor(&b).ok().map(|r| r.se_id);
    if let Some(se) = &se_id
        && !s.device_rate.take(se, Instant::now())
    {
        return Err(ApiError::new(
            429,
            code::RATE_LIMITED,
            "too many requests from this SE: retry later (nothing was done)",
        ));
    }
    let bo = s.bo;
    let answer = blocking(move || bo.handle_device(&b)).await;
    if let (Some(se), Err(e)) = (&se_id, &answer)
        && (matches!(
            e.code,
            BACKOFFICE_UNKNOWN_DEVICE | BACKOFFICE_BAD_DEVICE_SIGNATURE
        ) || e.status == 503)
    {
        // Not this SE's request, or a serialization conflict the device is
        // told to retry: its bucket pays nothing for it.
        s.device_rate.give_back(se);
    }
    Ok(cbor(answer?))
}

/// Codes of the service's "not this device" refusals (BackofficeError
/// UnknownDevice, BadDeviceSignature).
const BACKOFFICE_UNKNOWN_DEVICE: u16 = 50;
const BACKOFFICE_BAD_DEVICE_SIGNATURE: u16 = 52;

// ---- operators (JSON, bearer token) -------------------------------------

async fn mint(
    _: Operator,
    State(s): State<AppState>,
    JsonBody(req): JsonBody<AmountRequest>,
) -> Result<Response, ApiError> {
    req.check().map_err(ApiError::malformed)?;
    let bo = s.bo;
    let inv = blocking(move || bo.mint(&req.idempotency_key, req.amount)).await?;
    Ok(json(&InvariantView::from(inv)))
}

async fn deposit(
    _: Operator,
    State(s): State<AppState>,
    AccountName(name): AccountName,
    JsonBody(req): JsonBody<AmountRequest>,
) -> Result<Response, ApiError> {
    req.check().map_err(ApiError::malformed)?;
    let bo = s.bo;
    let balance = blocking(move || bo.deposit(&req.idempotency_key, &name, req.amount)).await?;
    Ok(json(&BalanceView { balance }))
}

/// DCP operator: a one-time code that lets one SE enrol for the account.
async fn enrolment_code(
    _: Operator,
    State(s): State<AppState>,
    AccountName(name): AccountName,
) -> Result<Response, ApiError> {
    let bo = s.bo;
    let account = name.clone();
    let code = blocking(move || bo.enrolment_code(&account)).await?;
    Ok(json(&EnrolmentCodeView {
        account: name,
        code,
    }))
}

async fn balance(
    _: Operator,
    State(s): State<AppState>,
    AccountName(name): AccountName,
) -> Result<Response, ApiError> {
    let bo = s.bo;
    let balance = blocking(move || bo.account_balance(&name)).await?;
    Ok(json(&BalanceView { balance }))
}

async fn advance_epoch(_: Operator, State(s): State<AppState>) -> Result<Response, ApiError> {
    let bo = s.bo;
    let epoch = blocking(move || bo.advance_epoch()).await?;
    Ok(json(&EpochView { epoch }))
}

async fn devices(_: Operator, State(s): State<AppState>) -> Result<Response, ApiError> {
    let bo = s.bo;
    let list = blocking(move || bo.devices()).await?;
    Ok(json(&list.iter().map(DeviceView::from).collect::<Vec<_>>()))
}

async fn reconcile(_: Operator, State(s): State<AppState>) -> Result<Response, ApiError> {
    let bo = s.bo;
    let (dcp, r) = blocking(move || Ok((bo.dcp_id(), bo.reconcile()?))).await?;
    Ok(json(&ReconcileView {
        dcp,
        book_sum: r.book.sum,
        in_flight: r.book.in_flight,
        book_audit_ok: r.book_audit_ok,
        settlement_account: r.settlement_account,
        matches: r.matches(),
    }))
}

async fn double_spends(_: Operator, State(s): State<AppState>) -> Result<Response, ApiError> {
    let bo = s.bo;
    let list = blocking(move || bo.double_spends()).await?;
    Ok(json(
        &list.iter().map(DoubleSpendView::from).collect::<Vec<_>>(),
    ))
}

async fn alerts(_: Operator, State(s): State<AppState>) -> Result<Response, ApiError> {
    let bo = s.bo;
    let list = blocking(move || bo.alerts()).await?;
    Ok(json(&list.iter().map(AlertView::from).collect::<Vec<_>>()))
}

/// Hex text → bytes (`None` if it is not hex).
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn alert_state(name: &str) -> Result<AlertState, ApiError> {
    Ok(match name {
        "open" => AlertState::Open,
        "escrow_opened" => AlertState::EscrowOpened,
        "device_revoked" => AlertState::DeviceRevoked,
        "closed" => AlertState::Closed,
        other => {
            return Err(ApiError::malformed(format!(
                "unknown alert state {other:?}"
            )));
        }
    })
}

async fn alert_transition(
    _: Operator,
    State(s): State<AppState>,
    AlertId(id): AlertId,
    JsonBody(req): JsonBody<TransitionRequest>,
) -> Result<Response, ApiError> {
    let to = alert_state(&req.to)?;
    let bo = s.bo;
    let a = blocking(move || bo.alert_transition(id, to, &req.note)).await?;
    Ok(json(&AlertView::from(&a)))
}

async fn escrow(
    _: Operator,
    State(s): State<AppState>,
    KeyId(id): KeyId,
) -> Result<Response, ApiError> {
    let bo = s.bo;
    match blocking(move || bo.escrow_of(&id)).await? {
        Some(e) => Ok(json(&EscrowView {
            key_id: id.to_string(),
            escrow: crate::hex(&e),
        })),
        None => Err(ApiError::new(
            404,
            code::NOT_FOUND,
            "no settled certificate with an escrow for this key",
        )),
    }
}

async fn revoke(
    _: Operator,
    State(s): State<AppState>,
    JsonBody(req): JsonBody<RevokeRequest>,
) -> Result<Response, ApiError> {
    let digest = parse_hash(&req.id_digest)
        .ok_or_else(|| ApiError::malformed("id_digest: 64 hex digits"))?;
    let keys = req
        .key_ids
        .iter()
        .map(|k| parse_hash(k).ok_or_else(|| ApiError::malformed("key_ids: 64 hex digits each")))
        .collect::<Result<Vec<_>, _>>()?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::malformed("a revocation needs a reason"));
    }
    let opening = match (&req.audit_log, &req.request) {
        (Some(log), Some(request)) => Some((
            decode_hex(log).ok_or_else(|| ApiError::malformed("audit_log: hex"))?,
            parse_hash(request).ok_or_else(|| ApiError::malformed("request: 64 hex digits"))?,
        )),
        (None, None) => None,
        _ => return Err(ApiError::malformed("give both audit_log and request")),
    };
    let bo = s.bo;
    let view = blocking(move || {
        // The alert first: a wrong id or state refuses before anything changes.
        if let Some(a) = req.alert {
            let alert = bo.alert(a)?;
            if alert.state != AlertState::EscrowOpened {
                return Err(BackofficeError::Mds {
                    message: format!("alert {a} is {}, not escrow_opened", alert.state),
                    client: true,
                });
            }
        }
        let (se_id, list) = bo.revoke_opened(
            &digest,
            &keys,
            &req.reason,
            opening.as_ref().map(|(l, r)| (l.as_slice(), r)),
        )?;
        if let Some(a) = req.alert {
            // The MDS keeps no SE id (decision 0007): the note names the
            // revocation list entry, not the device.
            bo.alert_transition(
                a,
                AlertState::DeviceRevoked,
                &format!(
                    "device revoked (revocation list serial {}, {} keys): {}",
                    list.serial,
                    keys.len(),
                    req.reason
                ),
            )?;
        }
        Ok(RevokeView {
            se_id: se_id.to_string(),
            revocation_serial: list.serial,
            revoked_keys: list.revoked.len(),
        })
    })
    .await?;
    Ok(json(&view))
}

// ---- public -------------------------------------------------------------

/// Econometric indicators from the MDS (aggregates only).
async fn indicators(State(s): State<AppState>) -> Result<Response, ApiError> {
    let bo = s.bo;
    let ind = blocking(move || bo.indicators()).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], ind.to_json()).into_response())
}

async fn invariant(State(s): State<AppState>) -> Result<Response, ApiError> {
    let bo = s.bo;
    let inv = blocking(move || bo.invariant()).await?;
    Ok(json(&InvariantView::from(inv)))
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    let bo = s.bo.clone();
    let (ledger, mds, outbox) = blocking(move || {
        let ledger = (|| {
            Ok::<_, BackofficeError>((
                InvariantView::from(bo.invariant()?),
                bo.epoch()?,
                double_spend_count(&bo)?,
            ))
        })()
        .ok();
        let mds = bo.indicators().ok().map(|i| i.to_prometheus());
        // After the pump that `indicators` ran: what is still waiting.
        let outbox = bo.mds_outbox().ok();
        Ok((ledger, mds, outbox))
    })
    .await
    .unwrap_or((None, None, None));
    let mut text = metrics::render(ledger, &s.metrics);
    if let Some(m) = mds {
        text.push_str(&m);
    }
    if let Some(o) = outbox {
        metrics::render_outbox(&mut text, &o);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A count, not the list: scrapes stay cheap however many were found.
pub(crate) fn double_spend_count(bo: &Backoffice) -> Result<i64, BackofficeError> {
    bo.store()
        .transact(|tx| Ok::<_, BackofficeError>(Settlement::double_spend_count(tx)?))
}

async fn openapi_json() -> Response {
    json(&openapi::document())
}

async fn dashboard_page(State(s): State<AppState>) -> Result<Html<String>, ApiError> {
    let bo = s.bo;
    let snapshot = blocking(move || dashboard::Snapshot::read(&bo)).await?;
    Ok(Html(dashboard::render(&snapshot)))
}
