//! Serving an axum router over TLS. Parties (DCP, MDS, operator → central)
//! authenticate with a role certificate under the CA ([`ClientAuth::Required`]):
//! webpki checks the chain, this module requires exactly one role URI SAN,
//! and the handshake fails otherwise — a refused client never reaches a
//! handler. Devices authenticate the server only ([`ClientAuth::None`]).
//! Each request carries the peer's verified role as [`PeerRole`].

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::{RevokedKeys, Role, TlsError, key_pin, provider, role_of};

/// Time a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further ones wait in the kernel's backlog.
pub const CONNECTIONS_MAX: usize = 1024;

/// The verified role of the party at the other end of the connection
/// (mutual TLS only), in each request's extensions. A handler takes it as
/// an extractor, `PeerRole(role): PeerRole` (a connection without one —
/// a server-authenticated one — gets 401 and the handler does not run),
/// or `Option<PeerRole>` where both kinds of connection occur; the
/// extension itself is also readable as `axum::Extension<PeerRole>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRole(pub Role);

impl<S: Send + Sync> FromRequestParts<S> for PeerRole {
    type Rejection = (StatusCode, &'static str);
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<PeerRole, Self::Rejection> {
        parts.extensions.get::<PeerRole>().copied().ok_or((
            StatusCode::UNAUTHORIZED,
            "this connection has no authenticated party (mutual TLS with a role certificate)",
        ))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for PeerRole {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<PeerRole>, Infallible> {
        Ok(parts.extensions.get::<PeerRole>().copied())
    }
}

/// The key pin ([`crate::key_pin`]) of the party's certificate, beside
/// [`PeerRole`] in each request's extensions (mutual TLS only): what a
/// server checks against its [`RevokedKeys`] on every request, so a
/// connection opened before a revocation is cut at its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPin(pub [u8; 32]);

/// Who must present a certificate.
#[derive(Clone)]
pub enum ClientAuth {
    /// Nobody: devices, which authenticate the server by the pinned CA
    /// and themselves by their SE's signatures inside each request.
    None,
    /// Every client: a certificate chaining to this CA with exactly one
    /// role URI SAN (mutual TLS between parties).
    Required(CertificateDer<'static>),
    /// As [`ClientAuth::Required`], and the certificate's key must not be
    /// in the revoked set (checked at every handshake; handlers check
    /// [`PeerPin`] per request).
    RequiredNotRevoked(CertificateDer<'static>, RevokedKeys),
}

/// A TLS 1.3 server configuration (ring provider) for `cert_chain` (leaf
/// first) and its `key`.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(_) | ClientAuth::RequiredNotRevoked(..) => {
            let (ca, revoked) = match client_auth {
                ClientAuth::Required(ca) => (ca, None),
                ClientAuth::RequiredNotRevoked(ca, revoked) => (ca, Some(revoked)),
                ClientAuth::None => unreachable!("matched above"),
            };
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(ca)
                .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(RoleVerifier { inner, revoked }))
        }
    };
    let config = builder
        .with_single_cert(cert_chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// webpki's client verifier, and then a role: a certificate from the CA
/// without a role URI SAN (such as the device-facing server's) does not
/// authenticate a party; nor does one whose key is revoked.
struct RoleVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Option<RevokedKeys>,
}

impl fmt::Debug for RoleVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoleVerifier")
    }
}

impl ClientCertVerifier for RoleVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Some(revoked) = &self.revoked {
            match key_pin(end_entity) {
                Ok(pin) if !revoked.contains(&pin) => {}
                Ok(_) => return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)),
                Err(_) => {
                    return Err(rustls::Error::InvalidCertificate(
                        CertificateError::ApplicationVerificationFailure,
                    ));
                }
            }
        }
        match role_of(end_entity) {
            Ok(Some(_)) => Ok(verified),
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then
/// stops accepting and lets the connections in flight finish their
/// requests (graceful shutdown, as `axum::serve` does for plain HTTP).
/// HTTP/1.1. A client that fails the handshake is dropped before any
/// request is read.
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(io::Error::other)?,
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors and the like: back off, retry.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                _ => return,
            };
            // The chain and the role were verified in the handshake.
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let role = leaf.and_then(|leaf| role_of(leaf).ok().flatten());
            let pin = leaf.and_then(|leaf| key_pin(leaf).ok());
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                if let (Some(role), Some(pin)) = (role, pin) {
                    req.extensions_mut().insert(PeerRole(role));
                    req.extensions_mut().insert(PeerPin(pin));
                }
                router.clone().call(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
