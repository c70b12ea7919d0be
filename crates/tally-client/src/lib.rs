//! The device's client of the back office: [`HttpBackend`] gives a wallet
//! the [`Backend`] of tally-wallet over HTTP. Its own crate so that a
//! wallet links no server code (issue 11); the server (tally-api) uses the
//! same wire types ([`TrustBundle`], [`ErrorEnvelope`]) and the HTTP
//! helpers of [`http`] for its operator client.

use serde::{Deserialize, Serialize};
use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::Entropy;
use tally_core::dcp::Registration;
use tally_core::sealed::{SealedKind, SealingKey};
use tally_core::{Hash32, Policy, PublicKey, RevocationList};
use tally_wallet::agent::{Backend, BackendError};

pub use http::{REQUEST_TIMEOUT, RESPONSE_BYTES_MAX};
use http::{agent, exchange, join, malformed_answer};

/// Codes a client reports itself (registered in tally-codes).
pub mod code {
    /// No HTTP answer at all, or one without an error envelope.
    pub const UNREACHABLE: u16 = tally_codes::NO_CODE;
    /// An answer that does not decode.
    pub const MALFORMED: u16 = tally_codes::VERIFY_DECODE;
}

/// `{"error": {"code", "message"}}`: every failure answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
}

/// What a fresh SE is given at initialization, and the key wallets seal
/// uploads to. Wire (GET /v1/trust): `[root PublicKey, Policy,
/// RevocationList, SealingKey]`, canonical CBOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    pub root: PublicKey,
    pub policy: Policy,
    pub revocations: RevocationList,
    pub sealing_key: SealingKey,
}

impl Cbor for TrustBundle {
    fn write(&self, w: &mut Writer) {
        w.array(4);
        self.root.write(w);
        self.policy.write(w);
        self.revocations.write(w);
        self.sealing_key.write(w);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.array(4)?;
        Ok(TrustBundle {
            root: PublicKey::read(r)?,
            policy: Policy::read(r)?,
            revocations: RevocationList::read(r)?,
            sealing_key: SealingKey::read(r)?,
        })
    }
}

/// Randomness from the operating system (the HPKE sealing of uploads).
/// The server has its own (tally-dcp); this crate does not link it.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(out))
            .expect("the OS random generator is readable");
    }
}

/// The HTTP plumbing shared with the server crate's operator client.
pub mod http {
    use std::sync::OnceLock;
    use std::time::Duration;

    use tally_wallet::agent::BackendError;

    use crate::ErrorEnvelope;
    use crate::code;

    /// Largest response body a client reads (a sync bundle with recovered
    /// tokens is the largest answer).
    pub const RESPONSE_BYTES_MAX: u64 = 16 << 20;
    /// Time for one whole exchange.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    /// Longest server text kept in an error message.
    const ERROR_TEXT_CHARS_MAX: usize = 512;

    /// One connection pool for every client of the process.
    pub fn agent() -> &'static ureq::Agent {
        static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
        AGENT.get_or_init(|| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(REQUEST_TIMEOUT))
                .build()
                .into()
        })
    }

    pub fn unreachable(e: &ureq::Error) -> BackendError {
        BackendError {
            status: 0,
            code: code::UNREACHABLE,
            message: format!("back office unreachable: {e}"),
        }
    }

    /// 2xx → the body; anything else → the JSON error envelope as a
    /// [`BackendError`] (or the raw text when the answer is not one).
    pub fn exchange(
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<u8>, BackendError> {
        let mut resp = r.map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_vec()
            .map_err(|e| unreachable(&e))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(env) => BackendError {
                status,
                code: env.error.code,
                message: env.error.message,
            },
            Err(_) => BackendError {
                status,
                code: code::UNREACHABLE,
                message: String::from_utf8_lossy(&body)
                    .chars()
                    .take(ERROR_TEXT_CHARS_MAX)
                    .collect(),
            },
        })
    }

    pub fn malformed_answer(what: &str) -> BackendError {
        BackendError {
            status: 200,
            code: code::MALFORMED,
            message: format!("malformed answer from the back office: {what}"),
        }
    }

    pub fn join(base: &str, path: &str) -> String {
        format!("{}{path}", base.trim_end_matches('/'))
    }
}

/// Seals to `key` after checking the root signed it: a DCP cannot slip in
/// a key of its own and read what it forwards.
pub fn seal_checked(
    key: &SealingKey,
    root: &PublicKey,
    kind: SealedKind,
    plaintext: &[u8],
) -> Result<Vec<u8>, BackendError> {
    let refuse = |e: tally_core::sealed::SealError| BackendError {
        status: 200,
        code: code::MALFORMED,
        message: format!("cannot seal the upload: {e}"),
    };
    key.verify(root).map_err(refuse)?;
    tally_core::sealed::seal(key, kind, plaintext, &mut OsEntropy).map_err(refuse)
}

/// GET /v1/trust at `base`: the canonical CBOR bytes and their decoding
/// (bytes that do not decode are a malformed answer).
pub fn fetch_trust_bundle(base: &str) -> Result<(Vec<u8>, TrustBundle), BackendError> {
    fetch_trust_bundle_with(agent(), base)
}

/// [`fetch_trust_bundle`] through `agent` (e.g. a TLS agent pinning the
/// root's CA, [`tally_tls::client_agent`]).
pub fn fetch_trust_bundle_with(
    agent: &ureq::Agent,
    base: &str,
) -> Result<(Vec<u8>, TrustBundle), BackendError> {
    let bytes = exchange(
        agent
            .get(join(base, "/v1/trust"))
            .header("accept", "application/cbor")
            .call(),
    )?;
    let t = TrustBundle::from_cbor(&bytes).map_err(|_| malformed_answer("trust bundle"))?;
    Ok((bytes, t))
}

/// The wallet's back office over HTTP (`base`: `http://HOST:PORT`) or
/// HTTPS (`https://HOST:PORT`, with [`HttpBackend::pinned`]). Blocking.
#[derive(Debug, Clone)]
pub struct HttpBackend {
    pub base: String,
    /// `None`: the process's plain agent ([`http::agent`]).
    agent: Option<ureq::Agent>,
}

impl HttpBackend {
    /// Plain HTTP through the process's shared agent (loopback, tests).
    pub fn new(base: impl Into<String>) -> HttpBackend {
        HttpBackend {
            base: base.into(),
            agent: None,
        }
    }

    /// Through `agent` (e.g. a TLS agent from [`tally_tls::client_agent`]).
    pub fn with_agent(base: impl Into<String>, agent: ureq::Agent) -> HttpBackend {
        HttpBackend {
            base: base.into(),
            agent: Some(agent),
        }
    }

    /// HTTPS to a server whose certificate chains to the CA in `ca_pem`,
    /// and to no other (the CA's key is the root the SE was personalised
    /// with: docs/decisions/0014-authenticated-links.md). Server
    /// authentication only: the device authenticates itself by its SE's
    /// signatures inside each request.
    pub fn pinned(
        base: impl Into<String>,
        ca_pem: &str,
    ) -> Result<HttpBackend, tally_tls::TlsError> {
        Ok(HttpBackend::with_agent(
            base,
            tally_tls::client_agent(ca_pem, None)?,
        ))
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent.as_ref().unwrap_or_else(|| agent())
    }

    /// GET /v1/trust, decoded.
    fn trust_bundle(&self) -> Result<TrustBundle, BackendError> {
        fetch_trust_bundle_with(self.agent(), &self.base).map(|(_, t)| t)
    }

    fn post_cbor(&self, path: &str, body: &[u8]) -> Result<Vec<u8>, BackendError> {
        exchange(
            self.agent()
                .post(join(&self.base, path))
                .header("content-type", "application/cbor")
                .header("accept", "application/cbor")
                .send(body),
        )
    }
}

impl Backend for HttpBackend {
    fn trust(&mut self) -> Result<(PublicKey, Policy, RevocationList), BackendError> {
        let t = self.trust_bundle()?;
        Ok((t.root, t.policy, t.revocations))
    }

    fn seal(
        &mut self,
        root: &PublicKey,
        kind: SealedKind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        seal_checked(&self.trust_bundle()?.sealing_key, root, kind, plaintext)
    }

    fn register(&mut self, reg: &Registration) -> Result<Hash32, BackendError> {
        let bytes = self.post_cbor("/v1/devices/register", &reg.to_cbor())?;
        Hash32::from_cbor(&bytes).map_err(|_| malformed_answer("se_id"))
    }

    fn device(&mut self, request: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.post_cbor("/v1/devices/request", request)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tls_agent_has_the_plain_agents_timeouts() {
        assert_eq!(tally_tls::client::REQUEST_TIMEOUT, super::REQUEST_TIMEOUT);
        assert_eq!(
            super::http::agent().config().timeouts().global,
            Some(super::REQUEST_TIMEOUT)
        );
    }
}
