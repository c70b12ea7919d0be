//! The central bank as a network party (`tally central`, issue 11): its
//! API for DCPs and operators, served over mutual TLS only, and the DCP's
//! client of it ([`CentralClient`], the [`Central`] trait over HTTPS).
//!
//! Who is calling is what the TLS handshake verified: the role URI SAN of
//! the client's certificate under the root's CA (tally-tls). A DCP is
//! `Role::Dcp(id)` and acts as DCP `id` only — its settlement account, the
//! SEs it enrolled, its mailboxes and its inbox; nothing in a body names
//! the caller. Operator calls need `Role::Operator`. A connection without
//! a valid role certificate never reaches a handler.
//!
//! Routes:
//! - `GET /central/v1/role-revocations` (any party): the revoked role key
//!   pins signed by the root, a CBOR [`RoleRevocations`] — what a DCP or
//!   the MDS checks the central bank's own server key against
//!   ([`keep_role_revocations`]), and the keys the MDS refuses its clients;
//! - `POST /central/v1/rpc` (DCPs): one [`tally_central::central::CentralCall`]
//!   in CBOR, answered in CBOR;
//! - `POST /central/v1/admin/mint` `{"dcp", "amount", "idempotency_key"}`,
//!   `POST /central/v1/admin/manufacturers` `{"key"}` (hex CBOR),
//!   `POST /central/v1/admin/epoch/advance`,
//!   `GET /central/v1/admin/dcps/{id}` (settlement account),
//!   `GET /central/v1/admin/double-spends`, `GET /ledger/invariant`,
//!   `POST /central/v1/admin/certificates/revoke` `{"certificate"}` (PEM)
//!   (operators).
//!
//! A party whose role certificate key was revoked (its pin in the
//! [`RevokedKeys`] the server's handshake also checks) is refused on every
//! request, also on a connection it opened before the revocation: 401,
//! code 1304, before any handler runs.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tally_central::central::{CentralCall, InboxEntry, answer, reply};
use tally_central::monitoring::{
    Outbox, OutboxRow, decode_ack, decode_fetch, encode_ack, encode_fetch,
};
use tally_central::{BackofficeError, Central, CentralBank, CentralRequest, CentralTrust};
use tally_core::codec::Cbor;
use tally_core::dcp::MakerCertificate;
use tally_core::policy::RoleRevocations;
use tally_core::{Hash32, PublicKey};
use tally_directory::SeEntry;
use tally_tls::{PeerRole, RevokedKeys, Role};

use crate::error::ApiError;
use crate::extract::PartyBody;
use crate::views::InvariantView;

/// Largest body of a central call (a sealed upload is the largest).
pub const CENTRAL_BODY_BYTES_MAX: usize = tally_core::dcp::SEALED_UPLOAD_BYTES_MAX + 64 * 1024;

const CBOR: &str = "application/cbor";

/// The central bank's routes. `revoked` is the set the TLS server's
/// handshake checks too (`ClientAuth::RequiredNotRevoked`); a revocation
/// through this router adds to it at once.
pub fn central_router(bank: Arc<CentralBank>, revoked: RevokedKeys) -> Router {
    Router::new()
        .route("/central/v1/rpc", post(rpc))
        .route("/central/v1/mds/outbox", post(mds_outbox))
        .route("/central/v1/mds/ack", post(mds_ack))
        .route("/central/v1/role-revocations", get(role_revocations))
        .route("/central/v1/admin/mint", post(mint))
        .route("/central/v1/admin/manufacturers", post(manufacturer))
        .route("/central/v1/admin/epoch/advance", post(advance_epoch))
        .route("/central/v1/admin/dcps/{id}", get(dcp_account))
        .route("/central/v1/admin/double-spends", get(double_spends))
        .route("/ledger/invariant", get(invariant))
        .route(
            "/central/v1/admin/certificates/revoke",
            post(revoke_certificate),
        )
        .fallback(crate::http::no_route)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(DefaultBodyLimit::max(CENTRAL_BODY_BYTES_MAX))
        .layer(middleware::from_fn(crate::http::refuse_revoked))
        .layer(Extension(revoked))
        .with_state(bank)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeCertificateRequest {
    /// The role certificate, PEM.
    certificate: String,
}

/// Revokes the key of a party's role certificate (operators): recorded in
/// the central bank's database, so every central process refuses it, and
/// added to this process's set at once.
async fn revoke_certificate(
    State(bank): State<Arc<CentralBank>>,
    Extension(revoked): Extension<RevokedKeys>,
    role: Option<Extension<PeerRole>>,
    PartyBody(body): PartyBody,
) -> Response {
    let body: RevokeCertificateRequest = match operator_body(role, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let cert = match tally_tls::cert_from_pem(&body.certificate) {
        Ok(c) => c,
        Err(e) => {
            return refused(
                400,
                tally_codes::VERIFY_DECODE,
                &format!("not one certificate: {e}"),
            );
        }
    };
    let (pin, named) = match (tally_tls::key_pin(&cert), tally_tls::role_of(&cert)) {
        (Ok(pin), Ok(Some(role))) => (pin, role),
        _ => {
            return refused(
                400,
                tally_codes::VERIFY_DECODE,
                "not a role certificate (no role URI SAN)",
            );
        }
    };
    let stored = blocking(move || bank.revoke_role_key(&pin, &named.to_string())).await;
    match stored {
        Ok(new) => {
            revoked.insert(pin);
            json(&serde_json::json!({
                "role": named.to_string(),
                "pin": hex::encode(pin),
                "new": new,
            }))
        }
        Err(r) => r,
    }
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => ApiError::internal("could not encode the answer").into_response(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        refused(
            400,
            tally_codes::VERIFY_DECODE,
            &format!("malformed body: {e}"),
        )
    })
}

fn refused(status: u16, code: u16, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The calling DCP, or a refusal (another role, or no certificate).
fn dcp_of(role: Option<Extension<PeerRole>>) -> Result<u32, Response> {
    match role {
        Some(Extension(PeerRole(Role::Dcp(id)))) => Ok(id),
        _ => Err(refused(
            403,
            tally_codes::CENTRAL_UNKNOWN_DCP,
            "only a DCP's role certificate may call the central bank's DCP interface",
        )),
    }
}

/// An operator's JSON body: refused unless the caller is an operator and
/// the body parses.
fn operator_body<T: serde::de::DeserializeOwned>(
    role: Option<Extension<PeerRole>>,
    body: &[u8],
) -> Result<T, Response> {
    operator_of(role)?;
    parse(body)
}

fn operator_of(role: Option<Extension<PeerRole>>) -> Result<(), Response> {
    match role {
        Some(Extension(PeerRole(Role::Operator))) => Ok(()),
        _ => Err(refused(
            401,
            tally_codes::HTTP_UNAUTHORIZED,
            "only an operator's role certificate may call this",
        )),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackofficeError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::from(e).into_response()),
        Err(_) => Err(ApiError::internal("internal error").into_response()),
    }
}

async fn rpc(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
    PartyBody(body): PartyBody,
) -> Response {
    // The MDS may read the trust objects (its issuers and limits), no more.
    if matches!(role, Some(Extension(PeerRole(Role::Mds))))
        && CentralCall::from_cbor(&body) == Ok(CentralCall::Trust)
    {
        return match blocking(move || Ok(bank.trust()?.to_cbor())).await {
            Ok(bytes) => ([(header::CONTENT_TYPE, CBOR)], bytes).into_response(),
            Err(r) => r,
        };
    }
    let dcp = match dcp_of(role) {
        Ok(d) => d,
        Err(r) => return r,
    };
    // A DCP the policy does not list gets nothing, not even the trust
    // objects or a directory entry.
    if !bank.dcps().iter().any(|(id, _)| *id == dcp) {
        return ApiError::from(BackofficeError::UnknownDcp).into_response();
    }
    match blocking(move || answer(&*bank, dcp, &body)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, CBOR)], bytes).into_response(),
        Err(r) => r,
    }
}

fn mds_of(role: Option<Extension<PeerRole>>) -> Result<(), Response> {
    match role {
        Some(Extension(PeerRole(Role::Mds))) => Ok(()),
        _ => Err(refused(
            401,
            tally_codes::HTTP_UNAUTHORIZED,
            "only the MDS's role certificate may read the outbox",
        )),
    }
}

/// The MDS pulls settled records: `[epoch, [[op, body], …]]`.
async fn mds_outbox(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
) -> Response {
    if let Err(r) = mds_of(role) {
        return r;
    }
    match blocking(move || {
        let (epoch, rows) = Outbox::fetch(&*bank)?;
        Ok(encode_fetch(epoch, &rows))
    })
    .await
    {
        Ok(bytes) => ([(header::CONTENT_TYPE, CBOR)], bytes).into_response(),
        Err(r) => r,
    }
}

/// The revoked role certificate key pins, for the MDS, which refuses
/// them to its own clients (operators): a CBOR array of 32-byte strings.
async fn role_revocations(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
) -> Response {
    // Every party with a role certificate (the handshake checked it); the
    // list is public to them and believed for its root signature only.
    if role.is_none() {
        return refused(
            401,
            tally_codes::HTTP_UNAUTHORIZED,
            "a role certificate is needed",
        );
    }
    match blocking(move || bank.signed_role_revocations()).await {
        Ok(list) => ([(header::CONTENT_TYPE, CBOR)], list.to_cbor()).into_response(),
        Err(r) => r,
    }
}

/// The MDS acknowledges what it ingested: `[op, …]`.
async fn mds_ack(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
    PartyBody(body): PartyBody,
) -> Response {
    if let Err(r) = mds_of(role) {
        return r;
    }
    let ops = match decode_ack(&body) {
        Ok(o) => o,
        Err(e) => return ApiError::from(BackofficeError::Decode(e)).into_response(),
    };
    match blocking(move || Outbox::ack(&*bank, &ops)).await {
        Ok(()) => ([(header::CONTENT_TYPE, CBOR)], vec![0x80u8]).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub dcp: u32,
    pub amount: u64,
    pub idempotency_key: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DcpAccountView {
    pub dcp: u32,
    pub balance: i64,
}

async fn mint(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
    PartyBody(body): PartyBody,
) -> Response {
    let m: MintRequest = match operator_body(role, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if m.idempotency_key.is_empty() || m.idempotency_key.len() > 128 {
        return refused(400, tally_codes::VERIFY_DECODE, "bad idempotency key");
    }
    match blocking(move || bank.mint(m.dcp, &m.idempotency_key, m.amount)).await {
        Ok(inv) => json(&InvariantView::from(inv)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManufacturerRequest {
    /// The manufacturer's public key, CBOR in hex.
    pub key: String,
}

async fn manufacturer(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
    PartyBody(body): PartyBody,
) -> Response {
    let body: ManufacturerRequest = match operator_body(role, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let key = match hex::decode(&body.key)
        .ok()
        .and_then(|b| PublicKey::from_cbor(&b).ok())
    {
        Some(k) => k,
        None => return refused(400, tally_codes::VERIFY_DECODE, "not a public key"),
    };
    match blocking(move || bank.trust_manufacturer(key)).await {
        Ok(p) => json(&serde_json::json!({ "policy_serial": p.serial })),
        Err(r) => r,
    }
}

async fn advance_epoch(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
) -> Response {
    if let Err(r) = operator_of(role) {
        return r;
    }
    match blocking(move || bank.advance_epoch()).await {
        Ok(e) => json(&serde_json::json!({ "epoch": e })),
        Err(r) => r,
    }
}

async fn dcp_account(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
    Path(id): Path<u32>,
) -> Response {
    if let Err(r) = operator_of(role) {
        return r;
    }
    match blocking(move || bank.settlement_balance(id)).await {
        Ok(balance) => json(&DcpAccountView { dcp: id, balance }),
        Err(r) => r,
    }
}

async fn double_spends(
    State(bank): State<Arc<CentralBank>>,
    role: Option<Extension<PeerRole>>,
) -> Response {
    if let Err(r) = operator_of(role) {
        return r;
    }
    match blocking(move || bank.double_spends()).await {
        Ok(d) => json(&serde_json::json!({ "count": d.len() })),
        Err(r) => r,
    }
}

async fn invariant(State(bank): State<Arc<CentralBank>>) -> Response {
    match blocking(move || bank.invariant()).await {
        Ok(inv) => json(&InvariantView::from(inv)),
        Err(r) => r,
    }
}

/// A DCP's client of the central bank over HTTPS (mutual TLS: the agent
/// presents the DCP's role certificate and pins the root's CA).
pub struct CentralClient {
    url: String,
    agent: ureq::Agent,
}

impl CentralClient {
    /// `base` is `https://HOST:PORT`; `agent` from
    /// `tally_tls::client_agent(ca, Some((dcp cert, dcp key)))`.
    pub fn new(base: &str, agent: ureq::Agent) -> CentralClient {
        CentralClient {
            url: format!("{}/central/v1/rpc", base.trim_end_matches('/')),
            agent,
        }
    }

    fn unanswered(message: String) -> BackofficeError {
        BackofficeError::Remote {
            code: tally_codes::CENTRAL_UNAVAILABLE,
            status: 503,
            message,
        }
    }

    fn exchange(&self, call: &CentralCall) -> Result<Vec<u8>, BackofficeError> {
        let r = self
            .agent
            .post(&self.url)
            .header("content-type", CBOR)
            .send(&call.to_cbor()[..]);
        match tally_client::http::exchange(r) {
            Ok(body) => Ok(body),
            // No answer, or not the central bank's: it may have executed.
            // A revoked key is refused before the body is looked at, so
            // the refusal says nothing about an earlier copy of the call
            // (which may have executed): unanswered too, and the DCP keeps
            // its debit in flight until it calls with a new key.
            Err(e)
                if e.status == 0
                    || e.code == tally_codes::NO_CODE
                    || e.code == tally_codes::CENTRAL_ROLE_REVOKED =>
            {
                Err(Self::unanswered(e.message))
            }
            Err(e) => Err(BackofficeError::Remote {
                code: e.code,
                status: e.status,
                message: e.message,
            }),
        }
    }

    fn decode<T>(
        &self,
        call: &CentralCall,
        f: impl FnOnce(&[u8]) -> Result<T, tally_core::codec::CodecError>,
    ) -> Result<T, BackofficeError> {
        let body = self.exchange(call)?;
        // A body that does not decode came from something else than the
        // central bank (or was cut): treated as no answer.
        f(&body).map_err(|e| Self::unanswered(format!("malformed answer: {e}")))
    }
}

impl Central for CentralClient {
    fn trust(&self) -> Result<CentralTrust, BackofficeError> {
        self.decode(&CentralCall::Trust, reply::trust)
    }
    fn device(&self, se_id: &Hash32) -> Result<Option<SeEntry>, BackofficeError> {
        self.decode(&CentralCall::Device(*se_id), reply::device)
    }
    fn enrol(&self, _dcp: u32, maker: &MakerCertificate) -> Result<SeEntry, BackofficeError> {
        self.decode(&CentralCall::Enrol(maker.clone()), reply::entry)
    }
    fn set_id_digest(
        &self,
        _dcp: u32,
        se_id: &Hash32,
        digest: &Hash32,
    ) -> Result<(), BackofficeError> {
        self.decode(&CentralCall::SetIdDigest(*se_id, *digest), reply::unit)
    }
    fn id_digest(&self, _dcp: u32, se_id: &Hash32) -> Result<Option<Hash32>, BackofficeError> {
        self.decode(&CentralCall::IdDigest(*se_id), reply::id_digest)
    }
    fn call(
        &self,
        _dcp: u32,
        op: &Hash32,
        reply_key: &Hash32,
        req: &CentralRequest,
    ) -> Result<Vec<u8>, BackofficeError> {
        self.decode(
            &CentralCall::Call {
                op: *op,
                reply_key: *reply_key,
                request: req.clone(),
            },
            reply::signed,
        )
    }
    fn inbox(&self, _dcp: u32) -> Result<Vec<InboxEntry>, BackofficeError> {
        self.decode(&CentralCall::Inbox, reply::inbox)
    }
    fn ack_inbox(&self, _dcp: u32, ops: &[Hash32]) -> Result<(), BackofficeError> {
        self.decode(&CentralCall::AckInbox(ops.to_vec()), reply::unit)
    }
    fn settlement_balance(&self, _dcp: u32) -> Result<i64, BackofficeError> {
        self.decode(&CentralCall::SettlementBalance, reply::balance)
    }
}

/// The MDS's client of the central bank's outbox over HTTPS (mutual TLS
/// with the `mds` role certificate).
pub struct OutboxClient {
    base: String,
    agent: ureq::Agent,
}

/// A failed exchange of the MDS with the central bank: no answer is
/// "unavailable" (503, code 1303).
fn outbox_error(e: tally_wallet::agent::BackendError) -> BackofficeError {
    BackofficeError::Remote {
        code: if e.status == 0 {
            tally_codes::CENTRAL_UNAVAILABLE
        } else {
            e.code
        },
        status: if e.status == 0 { 503 } else { e.status },
        message: e.message,
    }
}

impl OutboxClient {
    pub fn new(base: &str, agent: ureq::Agent) -> OutboxClient {
        OutboxClient {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    fn post(&self, path: &str, body: &[u8]) -> Result<Vec<u8>, BackofficeError> {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", CBOR)
            .send(body);
        tally_client::http::exchange(r).map_err(outbox_error)
    }

    /// The central bank's trust objects (the MDS's issuers and limits).
    pub fn trust(&self) -> Result<CentralTrust, BackofficeError> {
        let body = self.post("/central/v1/rpc", &CentralCall::Trust.to_cbor())?;
        reply::trust(&body).map_err(BackofficeError::Decode)
    }
}

impl Outbox for OutboxClient {
    fn fetch(&self) -> Result<(tally_core::Epoch, Vec<OutboxRow>), BackofficeError> {
        let body = self.post("/central/v1/mds/outbox", &[])?;
        decode_fetch(&body).map_err(BackofficeError::Decode)
    }
    fn ack(&self, ops: &[Vec<u8>]) -> Result<(), BackofficeError> {
        self.post("/central/v1/mds/ack", &encode_ack(ops))
            .map(|_| ())
    }
}

/// The central bank's root-signed role revocation list at `base`, fetched
/// over `agent` (a party agent that checks revoked server keys but not
/// freshness: this is how freshness is regained). Decoded whole; not yet
/// checked (see [`RoleRevocations::check`]).
pub fn fetch_role_revocations(
    agent: &ureq::Agent,
    base: &str,
) -> Result<RoleRevocations, BackofficeError> {
    fetch_role_revocations_at(agent, &role_revocations_url(base))
}

/// Where the central bank serves its role revocation list.
pub fn role_revocations_url(central: &str) -> String {
    format!(
        "{}/central/v1/role-revocations",
        central.trim_end_matches('/')
    )
}

/// [`fetch_role_revocations`] from a full URL: the central bank's, or a
/// party that relays the list it believes (the MDS, `GET
/// /mds/role-revocations`). Who serves it does not matter: the list is
/// believed for the root's signature and its freshness only.
pub fn fetch_role_revocations_at(
    agent: &ureq::Agent,
    url: &str,
) -> Result<RoleRevocations, BackofficeError> {
    let body = tally_client::http::exchange(agent.get(url).call()).map_err(outbox_error)?;
    RoleRevocations::from_cbor(&body).map_err(BackofficeError::Decode)
}

/// How often a party re-reads the role revocation list.
pub const ROLE_REVOCATIONS_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// How often it tries while it holds none.
pub const ROLE_REVOCATIONS_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// One refresh of a party's [`tally_tls::ServerRevocations`] from the
/// central bank at `base` (decision 0014, session 10; the CLI's parties
/// run it every [`ROLE_REVOCATIONS_POLL`]): the list is believed if the
/// root — `root`, the key of the CA the party pinned at installation,
/// never one the central bank sends — signed it, its serial is not below
/// `held` (the last believed) and it is current. A list that fails
/// changes nothing. The serial believed.
pub fn refresh_role_revocations(
    agent: &ureq::Agent,
    base: &str,
    root: &PublicKey,
    held: Option<u64>,
    into: &tally_tls::ServerRevocations,
) -> Result<u64, String> {
    refresh_role_revocations_at(agent, &role_revocations_url(base), root, held, into)
        .map(|list| list.serial)
}

/// [`refresh_role_revocations`] from a full URL (see
/// [`fetch_role_revocations_at`]); the list believed.
pub fn refresh_role_revocations_at(
    agent: &ureq::Agent,
    url: &str,
    root: &PublicKey,
    held: Option<u64>,
    into: &tally_tls::ServerRevocations,
) -> Result<RoleRevocations, String> {
    let list = fetch_role_revocations_at(agent, url).map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    list.check(root, held, now).map_err(|e| e.to_string())?;
    into.believe(list.pins.iter().map(|p| p.0), list.believed_until());
    Ok(list)
}
