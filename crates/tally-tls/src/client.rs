//! The client end: a blocking `ureq` agent that trusts only the Tally CA
//! (pinned: no system roots, no webpki-roots) and, for a party, presents
//! its role certificate. No tokio, no axum: a device wallet links this.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use crate::{TlsError, cert_from_pem, certs_from_pem, key_from_pem, provider};

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
