//! Clients: [`HttpBackend`] and [`InProcess`] give a wallet the same
//! [`Backend`] over HTTP or by direct calls (with the same error mapping),
//! and [`OperatorClient`] drives the operator endpoints.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_core::sealed::SealedKind;
use tally_core::{Epoch, Hash32, Policy, PublicKey, RevocationList};
use tally_dcp::{Backoffice, Registration};
use tally_wallet::agent::{Backend, BackendError};

use crate::error::{backend_error, code};
use crate::views::{
    AlertView, AmountRequest, BalanceView, DeviceView, DoubleSpendView, EnrolmentCodeView,
    EpochView, EscrowView, InvariantView, RevokeRequest, RevokeView, TransitionRequest,
};
pub use tally_client::HttpBackend;
use tally_client::http::{agent, exchange, join, malformed_answer};
use tally_client::seal_checked;

/// The wallet's back office by direct calls: no sockets, the same answers
/// and the same error statuses as over HTTP ([`crate::status_for`]).
#[derive(Clone)]
pub struct InProcess(pub Arc<Backoffice>);

impl Backend for InProcess {
    fn trust(&mut self) -> Result<(PublicKey, Policy, RevocationList), BackendError> {
        let e = |e| backend_error(&e);
        Ok((
            self.0.root_key(),
            self.0.policy().map_err(e)?,
            self.0.revocations().map_err(e)?,
        ))
    }

    fn register(&mut self, reg: &Registration) -> Result<Hash32, BackendError> {
        self.0.register(reg).map_err(|e| backend_error(&e))
    }

    fn seal(
        &mut self,
        root: &PublicKey,
        kind: SealedKind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        seal_checked(&self.0.sealing_key(), root, kind, plaintext)
    }

    fn device(&mut self, request: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.0.handle_device(request).map_err(|e| backend_error(&e))
    }
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved).
fn segment(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The operator endpoints, typed (`base`: `http://HOST:PORT`, or
/// `https://…` with [`OperatorClient::with_agent`]).
#[derive(Clone)]
pub struct OperatorClient {
    pub base: String,
    pub token: String,
    agent: Option<ureq::Agent>,
}

impl std::fmt::Debug for OperatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorClient")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl OperatorClient {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> OperatorClient {
        OperatorClient {
            base: base.into(),
            token: token.into(),
            agent: None,
        }
    }

    /// Through `agent` (a TLS agent pinning the root's CA).
    pub fn with_agent(
        base: impl Into<String>,
        token: impl Into<String>,
        agent: ureq::Agent,
    ) -> OperatorClient {
        OperatorClient {
            base: base.into(),
            token: token.into(),
            agent: Some(agent),
        }
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent.as_ref().unwrap_or_else(|| agent())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BackendError> {
        serde_json::from_slice(bytes).map_err(|e| malformed_answer(&e.to_string()))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, BackendError> {
        let bytes = exchange(
            self.agent()
                .get(join(&self.base, path))
                .header("authorization", format!("Bearer {}", self.token))
                .header("accept", "application/json")
                .call(),
        )?;
        Self::decode(&bytes)
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, BackendError> {
        let req = self
            .agent()
            .post(join(&self.base, path))
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json");
        let r = match body {
            Some(b) => {
                let bytes = serde_json::to_vec(b).map_err(|e| BackendError {
                    status: 0,
                    code: code::MALFORMED,
                    message: e.to_string(),
                })?;
                req.header("content-type", "application/json")
                    .send(&bytes[..])
            }
            None => req.send_empty(),
        };
        Self::decode(&exchange(r)?)
    }

    /// Central bank: mints `amount` into the DCP; the invariant after it.
    pub fn mint(&self, idempotency_key: &str, amount: u64) -> Result<InvariantView, BackendError> {
        self.post(
            "/v1/cb/mint",
            Some(&AmountRequest {
                idempotency_key: idempotency_key.into(),
                amount,
            }),
        )
    }

    /// DCP: a one-time enrolment code for `account`.
    pub fn enrolment_code(&self, account: &str) -> Result<String, BackendError> {
        let v: EnrolmentCodeView = self.post::<(), _>(
            &format!("/v1/accounts/{}/enrolment-codes", segment(account)),
            None,
        )?;
        Ok(v.code)
    }

    /// DCP: credits `account` (opening it if needed); its balance after it.
    pub fn deposit(
        &self,
        account: &str,
        idempotency_key: &str,
        amount: u64,
    ) -> Result<i64, BackendError> {
        let v: BalanceView = self.post(
            &format!("/v1/accounts/{}/deposit", segment(account)),
            Some(&AmountRequest {
                idempotency_key: idempotency_key.into(),
                amount,
            }),
        )?;
        Ok(v.balance)
    }

    pub fn balance(&self, account: &str) -> Result<i64, BackendError> {
        let v: BalanceView = self.get(&format!("/v1/accounts/{}", segment(account)))?;
        Ok(v.balance)
    }

    /// GET /v1/trust: the canonical CBOR trust bundle
    /// `[root PublicKey, Policy, RevocationList]` (needs no token; checked
    /// to decode before it is returned).
    pub fn trust_bundle(&self) -> Result<Vec<u8>, BackendError> {
        tally_client::fetch_trust_bundle_with(self.agent(), &self.base).map(|(bytes, _)| bytes)
    }

    /// The published invariant (needs no token).
    pub fn invariant(&self) -> Result<InvariantView, BackendError> {
        self.get("/ledger/invariant")
    }

    pub fn advance_epoch(&self) -> Result<Epoch, BackendError> {
        let v: EpochView = self.post::<(), _>("/v1/epoch/advance", None)?;
        Ok(v.epoch)
    }

    /// DCP: its book against its settlement account at the central bank.
    pub fn reconcile(&self) -> Result<crate::ReconcileView, BackendError> {
        self.get("/v1/dcp/reconcile")
    }

    pub fn devices(&self) -> Result<Vec<DeviceView>, BackendError> {
        self.get("/v1/devices")
    }

    pub fn double_spends(&self) -> Result<Vec<DoubleSpendView>, BackendError> {
        self.get("/v1/double-spends")
    }

    /// MDS alerts, oldest first.
    pub fn alerts(&self) -> Result<Vec<AlertView>, BackendError> {
        self.get("/v1/mds/alerts")
    }

    pub fn alert_transition(
        &self,
        id: i64,
        to: &str,
        note: &str,
    ) -> Result<AlertView, BackendError> {
        self.post(
            &format!("/v1/mds/alerts/{id}/transition"),
            Some(&TransitionRequest {
                to: to.into(),
                note: note.into(),
            }),
        )
    }

    /// The escrow ciphertext of a settled pseudonym certificate (key id hex).
    pub fn escrow(&self, key_id: &str) -> Result<EscrowView, BackendError> {
        self.get(&format!("/v1/escrows/{}", segment(key_id)))
    }

    /// Revokes the SE an opening named, and lists `key_ids`.
    pub fn revoke(&self, req: &RevokeRequest) -> Result<RevokeView, BackendError> {
        self.post("/v1/directory/revoke", Some(req))
    }

    /// GET /mds/indicators (JSON text).
    pub fn indicators(&self) -> Result<serde_json::Value, BackendError> {
        self.get("/mds/indicators")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("alice_1-x"), "alice_1-x");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn connection_failures_are_status_zero() {
        let mut b = HttpBackend::new("http://127.0.0.1:1");
        let e = b.device(&[0x80]).unwrap_err();
        assert_eq!((e.status, e.code), (0, 0));
    }
}
