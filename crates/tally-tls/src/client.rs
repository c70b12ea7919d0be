//! The client end: a blocking `ureq` agent that trusts only the Tally CA
//! (pinned: no system roots, no webpki-roots) and, for a party, presents
//! its role certificate. No tokio, no axum: a device wallet links this.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use crate::{RevokedKeys, TlsError, cert_from_pem, certs_from_pem, key_from_pem, provider};

/// Time for one whole exchange: the same as the plain agent of
/// `tally_client::http::agent` (a test there checks they agree).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The TLS settings of an agent: trust only the CA in `ca_pem`; present
/// `client` = `(certificate PEM, key PEM)` if given. Every PEM is checked
/// here (ureq would panic on a key that does not match its certificate).
pub fn tls_config(ca_pem: &str, client: Option<(&str, &str)>) -> Result<TlsConfig, TlsError> {
    let ca = cert_from_pem(ca_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let check = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut builder = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(provider())
        .root_certs(RootCerts::Specific(Arc::new(vec![
            Certificate::from_der(&ca).to_owned(),
        ])));
    if let Some((cert_pem, key_pem)) = client {
        let chain = certs_from_pem(cert_pem)?;
        let key = key_from_pem(key_pem)?;
        // rustls checks that the key is the certificate's.
        check
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let key =
            PrivateKey::from_pem(key_pem.as_bytes()).map_err(|e| TlsError::Pem(e.to_string()))?;
        let chain: Vec<Certificate<'static>> = chain
            .iter()
            .map(|c| Certificate::from_der(c).to_owned())
            .collect();
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
}

/// A blocking agent over HTTPS to a Tally server: pinned CA, optional
/// client certificate, the timeouts of the plain agent, HTTP statuses
/// returned rather than turned into errors, and `http://` refused.
pub fn client_agent(ca_pem: &str, client: Option<(&str, &str)>) -> Result<ureq::Agent, TlsError> {
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .https_only(true)
        .tls_config(tls_config(ca_pem, client)?)
        .build()
        .into())
}

/// An agent of a party calling another party: as [`client_agent`], and the
/// server must present a role certificate of `server` (a DCP calling the
/// central bank accepts only `urn:tally:role:central`). Every party's
/// certificate chains to the one CA, so the CA alone would let any party
/// (another DCP, the MDS) answer in the central bank's name to a client
/// misdirected to it (DNS, a wrong URL); the role check refuses that
/// server at the handshake, before a request is sent.
pub fn party_agent(
    ca_pem: &str,
    client: (&str, &str),
    server: crate::Role,
) -> Result<ureq::Agent, TlsError> {
    party_agent_with(ca_pem, client, server, None)
}

/// What a party knows about revoked server keys: the pins of the
/// root-signed role revocation list it last believed, and until when it
/// believes it (unix seconds). The owner refreshes it (a DCP or the MDS
/// from the central bank, `tally_api::keep_role_revocations`); every
/// agent made with it sees the refresh at once.
#[derive(Debug, Clone, Default)]
pub struct ServerRevocations {
    revoked: RevokedKeys,
    believed_until: Arc<AtomicU64>,
}

impl ServerRevocations {
    pub fn new() -> ServerRevocations {
        ServerRevocations::default()
    }
    /// The revoked pins (the same set a party's own server may refuse).
    pub fn revoked(&self) -> &RevokedKeys {
        &self.revoked
    }
    /// A list believed: its pins added (revocations are permanent), its
    /// end of belief kept if later than the one held.
    pub fn believe(&self, pins: impl IntoIterator<Item = [u8; 32]>, until: u64) {
        self.revoked.extend(pins);
        self.believed_until.fetch_max(until, Ordering::AcqRel);
    }
    /// Whether a believed list covers unix time `now`.
    pub fn is_current(&self, now: u64) -> bool {
        now <= self.believed_until.load(Ordering::Acquire)
    }
    /// Why a server key of pin `pin` is refused (`current`: also while no
    /// believed list covers the present), if it is.
    fn refuses(&self, pin: &[u8; 32], current: bool) -> Option<Refusal> {
        if self.revoked.contains(pin) {
            Some(Refusal::Revoked)
        } else if current && !self.is_current(unix_now()) {
            Some(Refusal::NoCurrentList)
        } else {
            None
        }
    }
}

/// Why [`ServerRevocations`] refuses a server key: one answer for the
/// handshake ([`Refusal::tls_error`]) and for a request on an open
/// connection ([`Refusal::message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Revoked,
    NoCurrentList,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Revoked => "the server's key is revoked",
            Refusal::NoCurrentList => {
                "no current role revocation list: the server's key cannot be checked"
            }
        }
    }
    fn tls_error(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(match self {
            Refusal::Revoked => rustls::CertificateError::Revoked,
            Refusal::NoCurrentList => rustls::CertificateError::ApplicationVerificationFailure,
        })
    }
}

/// How a party agent checks the server's key against revocations.
#[derive(Debug, Clone)]
pub struct ServerCheck {
    pub revocations: ServerRevocations,
    /// Also refuse while no believed list covers the present (every call
    /// but the one that fetches the list).
    pub current: bool,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`party_agent`], and with `check` the server's key is refused when its
/// pin is revoked (or, `check.current`, when no believed revocation list
/// is current): at the handshake, and before every request on a
/// connection opened earlier, so a connection to a key revoked since is
/// not used again.
pub fn party_agent_with(
    ca_pem: &str,
    client: (&str, &str),
    server: crate::Role,
    check: Option<ServerCheck>,
) -> Result<ureq::Agent, TlsError> {
    // Every PEM checked (and the key matched to its certificate) as for
    // `client_agent`.
    tls_config(ca_pem, Some(client))?;
    let ca = cert_from_pem(ca_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(RoleVerifier {
        inner: webpki,
        role: server,
        check: check.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs_from_pem(client.0)?, key_from_pem(client.1)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    use ureq::unversioned::transport::Connector as _;
    let agent_config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .https_only(true)
        .build();
    Ok(ureq::Agent::with_parts(
        agent_config,
        ureq::unversioned::transport::TcpConnector::default().chain(PinnedTls {
            config: Arc::new(config),
            check,
        }),
        ureq::unversioned::resolver::DefaultResolver::default(),
    ))
}

/// The CA's WebPKI checks (chain, validity, host name), then the role.
#[derive(Debug)]
struct RoleVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    role: crate::Role,
    check: Option<ServerCheck>,
}

impl rustls::client::danger::ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match crate::role_of(end_entity) {
            Ok(Some(r)) if r == self.role => {}
            _ => {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        if let Some(c) = &self.check {
            let pin = crate::key_pin(end_entity).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
            if let Some(why) = c.revocations.refuses(&pin, c.current) {
                return Err(why.tls_error());
            }
        }
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// ureq's TLS step with a rustls configuration of ours (ureq's own
/// `TlsConfig` cannot take a certificate verifier).
#[derive(Debug)]
struct PinnedTls {
    config: Arc<ClientConfig>,
    check: Option<ServerCheck>,
}

impl<In: ureq::unversioned::transport::Transport> ureq::unversioned::transport::Connector<In>
    for PinnedTls
{
    type Out = ureq::unversioned::transport::Either<In, PinnedTlsTransport>;

    fn connect(
        &self,
        details: &ureq::unversioned::transport::ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        use ureq::unversioned::transport::{Either, LazyBuffers, TransportAdapter};
        let Some(transport) = chained else {
            return Err(ureq::Error::Tls("no connection to secure"));
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .authority()
            .map(|a| a.host())
            .ok_or(ureq::Error::Tls("no host to check the certificate against"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| ureq::Error::Tls("not a host name or IP address"))?;
        let mut conn = rustls::ClientConnection::new(self.config.clone(), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock).map_err(|e| {
            // Refused at the handshake for a revoked key (only the
            // revocation check answers `Revoked`: no CRL is configured):
            // the same words as on a connection opened before.
            let revoked = rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked);
            if self.check.is_some()
                && e.get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| *r == revoked)
            {
                ureq::Error::Tls(Refusal::Revoked.message())
            } else {
                ureq::Error::from(e)
            }
        })?;
        // The server's key pin, checked again before every request.
        let server_pin = match &self.check {
            Some(_) => Some(
                conn.peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| crate::key_pin(c).ok())
                    .ok_or(ureq::Error::Tls("the server presented no certificate"))?,
            ),
            None => None,
        };
        Ok(Some(Either::B(PinnedTlsTransport {
            check: self.check.clone().zip(server_pin),
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: rustls::StreamOwned { conn, sock },
        })))
    }
}

/// A TLS connection made by [`PinnedTls`].
pub struct PinnedTlsTransport {
    check: Option<(ServerCheck, [u8; 32])>,
    buffers: ureq::unversioned::transport::LazyBuffers,
    stream: rustls::StreamOwned<
        rustls::ClientConnection,
        ureq::unversioned::transport::TransportAdapter,
    >,
}

impl std::fmt::Debug for PinnedTlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinnedTlsTransport")
    }
}

impl ureq::unversioned::transport::Transport for PinnedTlsTransport {
    fn buffers(&mut self) -> &mut dyn ureq::unversioned::transport::Buffers {
        &mut self.buffers
    }
    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<(), ureq::Error> {
        use std::io::Write as _;
        use ureq::unversioned::transport::Buffers as _;
        if let Some((c, pin)) = &self.check
            && let Some(why) = c.revocations.refuses(pin, c.current)
        {
            return Err(ureq::Error::Tls(why.message()));
        }
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }
    fn await_input(
        &mut self,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<bool, ureq::Error> {
        use std::io::Read as _;
        use ureq::unversioned::transport::Buffers as _;
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }
    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }
    fn is_tls(&self) -> bool {
        true
    }
}
