//! Authenticated links between the parties of the back office and to
//! devices (issue 11, item 3; docs/decisions/0014-authenticated-links.md).
//!
//! This crate owns the X.509 side of Tally: the TLS certificate authority
//! (a self-signed certificate whose key *is* the central bank's root key,
//! signed through [`tally_core::Signer`]), the role certificates issued
//! under it (the role travels in a URI SAN, `urn:tally:role:…`), the
//! rustls configurations of both ends and the serving of an axum router
//! over TLS with the peer's verified [`Role`] in each request.
//!
//! Features split it by who links it: `client` (a ureq agent that pins the
//! CA: what a device wallet links, no tokio or axum), `server` (tokio,
//! hyper, axum) and `issue` (rcgen: the CLI and tests). TLS is rustls with
//! the ring provider only, TLS 1.3 only.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod der;

/// The rustls this crate configures (its `ServerConfig` is what
/// `server_config` returns).
pub use rustls;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "issue")]
pub mod issue;
#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "client")]
pub use client::{ServerCheck, ServerRevocations, client_agent, party_agent, party_agent_with};
#[cfg(feature = "issue")]
pub use issue::{TlsDir, Validity, ca_certificate, issue_role_cert, issue_server_cert};
#[cfg(feature = "server")]
pub use server::{ClientAuth, PeerPin, PeerRole, serve_tls, server_config};

/// The URI SAN prefix of a role certificate.
pub const ROLE_URI_PREFIX: &str = "urn:tally:role:";

/// Who a party is, as its certificate says (URI SAN
/// `urn:tally:role:central`, `…:dcp:<id>`, `…:mds`, `…:operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The central bank: core ledger, settlement, directory.
    Central,
    /// One Digital Currency Provider, by its id in the policy's trust list.
    Dcp(u32),
    /// Monitoring and detection.
    Mds,
    /// An operator (administration, dashboards).
    Operator,
}

impl Role {
    /// The role's URI SAN, e.g. `urn:tally:role:dcp:1`.
    pub fn uri(&self) -> String {
        match self {
            Role::Central => format!("{ROLE_URI_PREFIX}central"),
            Role::Dcp(id) => format!("{ROLE_URI_PREFIX}dcp:{id}"),
            Role::Mds => format!("{ROLE_URI_PREFIX}mds"),
            Role::Operator => format!("{ROLE_URI_PREFIX}operator"),
        }
    }

    /// Parses a role URI SAN. `Ok(None)`: the URI is not a role URI (it
    /// does not start with [`ROLE_URI_PREFIX`]); an error: it does, but
    /// names no role.
    pub fn from_uri(uri: &str) -> Result<Option<Role>, TlsError> {
        let Some(rest) = uri.strip_prefix(ROLE_URI_PREFIX) else {
            return Ok(None);
        };
        let bad = || TlsError::BadRole(uri.to_owned());
        let role = match rest {
            "central" => Role::Central,
            "mds" => Role::Mds,
            "operator" => Role::Operator,
            _ => {
                Role::Dcp(parse_dcp_id(rest.strip_prefix("dcp:").ok_or_else(bad)?).ok_or_else(bad)?)
            }
        };
        Ok(Some(role))
    }
}

/// A DCP id in its one canonical decimal form: digits only, no sign, no
/// leading zero (so `dcp:01` and `dcp:1` are not two names of one DCP).
fn parse_dcp_id(s: &str) -> Option<u32> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// The short form, also the file stem in a [`TlsDir`]: `central`,
/// `dcp-1`, `mds`, `operator`.
impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Central => f.write_str("central"),
            Role::Dcp(id) => write!(f, "dcp-{id}"),
            Role::Mds => f.write_str("mds"),
            Role::Operator => f.write_str("operator"),
        }
    }
}

impl FromStr for Role {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Role, TlsError> {
        match s {
            "central" => Ok(Role::Central),
            "mds" => Ok(Role::Mds),
            "operator" => Ok(Role::Operator),
            _ => s
                .strip_prefix("dcp-")
                .and_then(parse_dcp_id)
                .map(Role::Dcp)
                .ok_or_else(|| TlsError::BadRole(s.to_owned())),
        }
    }
}

/// Why a certificate, key or TLS configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// PEM text without the expected item, or not PEM at all.
    Pem(String),
    /// A certificate that does not parse as X.509 (or has bytes after it).
    BadCertificate(String),
    /// A role that is not one of [`Role`]'s forms.
    BadRole(String),
    /// A certificate with more than one role URI SAN.
    AmbiguousRole,
    /// The root key's suite cannot sign the CA certificate (only Ed25519).
    UnsupportedKey(String),
    /// The CA certificate's key is not the signer's key.
    CaKeyMismatch,
    /// rustls refused the configuration (e.g. a key that does not match
    /// its certificate).
    Config(String),
    /// The root signer failed or signed wrongly.
    Signer(String),
    /// Certificate generation failed.
    Issue(String),
    /// A file or directory could not be read or written.
    Io(String),
    /// A key file readable by group or others.
    Exposed { path: String, mode: u32 },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Pem(m) => write!(f, "PEM: {m}"),
            TlsError::BadCertificate(m) => write!(f, "certificate: {m}"),
            TlsError::BadRole(r) => write!(
                f,
                "{r:?} is not a role (central, dcp-<id>, mds, operator; URI {ROLE_URI_PREFIX}…)"
            ),
            TlsError::AmbiguousRole => f.write_str("certificate names more than one role"),
            TlsError::UnsupportedKey(m) => write!(f, "unsupported key: {m}"),
            TlsError::CaKeyMismatch => {
                f.write_str("the CA certificate's key is not the root signer's key")
            }
            TlsError::Config(m) => write!(f, "TLS configuration: {m}"),
            TlsError::Signer(m) => write!(f, "root signer: {m}"),
            TlsError::Issue(m) => write!(f, "issuing a certificate: {m}"),
            TlsError::Io(m) => f.write_str(m),
            TlsError::Exposed { path, mode } => write!(
                f,
                "{path}: mode {mode:03o} lets group or others read a private key; chmod 600"
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// The role a certificate names in its URI SAN: `Ok(None)` when it names
/// none, an error when it names a malformed role or several roles.
pub fn role_of(cert: &CertificateDer<'_>) -> Result<Option<Role>, TlsError> {
    let parsed = der::Certificate::parse(cert)?;
    let mut role = None;
    for uri in parsed.uris()? {
        if let Some(r) = Role::from_uri(uri)?
            && role.replace(r).is_some()
        {
            return Err(TlsError::AmbiguousRole);
        }
    }
    Ok(role)
}

/// The pin of a certificate's key: SHA-256 of its DER
/// `SubjectPublicKeyInfo` (RFC 7469's `pin-sha256`). A revoked role key
/// is named by its pin, so every certificate ever issued for that key —
/// not only one serial — is refused.
pub fn key_pin(cert: &CertificateDer<'_>) -> Result<[u8; 32], TlsError> {
    use sha2::Digest;
    let parsed = der::Certificate::parse(cert)?;
    Ok(sha2::Sha256::digest(parsed.spki_der()).into())
}

/// The Ed25519 key of the CA in `ca_pem`: the root's key (the CA is the
/// root, see [`issue`]), which a party pinned at installation and so can
/// check root-signed objects against without asking anyone.
pub fn ca_key(ca_pem: &str) -> Result<[u8; 32], TlsError> {
    let ca = cert_from_pem(ca_pem)?;
    der::Certificate::parse(&ca)?.ed25519_key()
}

/// The one crypto provider of every Tally TLS end: rustls' ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in `pem`, in order; at least one.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no CERTIFICATE in the text".into()));
    }
    for c in &certs {
        der::Certificate::parse(c)?;
    }
    Ok(certs)
}

/// The one certificate in `pem` (a CA certificate to pin).
pub fn cert_from_pem(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    let mut certs = certs_from_pem(pem)?;
    match (certs.pop(), certs.is_empty()) {
        (Some(c), true) => Ok(c),
        _ => Err(TlsError::Pem("expected exactly one CERTIFICATE".into())),
    }
}

/// The private key in `pem` (PKCS#8, SEC1 or PKCS#1).
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Pem(e.to_string()))
}

/// Key pins of revoked role certificates, shared between a server's
/// handshake verifier and its request handlers (and a client's
/// [`client::ServerRevocations`]) (cheap to clone; every
/// clone sees the same set). The owner refreshes it from wherever the
/// revocations are kept (the central bank: its database).
#[derive(Debug, Clone, Default)]
pub struct RevokedKeys(Arc<RwLock<BTreeSet<[u8; 32]>>>);

impl RevokedKeys {
    pub fn new() -> RevokedKeys {
        RevokedKeys::default()
    }

    /// Whether `pin` is revoked.
    pub fn contains(&self, pin: &[u8; 32]) -> bool {
        // A poisoned lock still holds a whole set (writers only replace or
        // insert), so it is read rather than failing open or closed.
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(pin)
    }

    /// Adds `pin`; whether it was new.
    pub fn insert(&self, pin: [u8; 32]) -> bool {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pin)
    }

    /// Adds `pins` (a refresh from the source of truth). Revocations are
    /// permanent, so a refresh only ever adds: a pin missing from `pins`
    /// (read from a lagging replica) stays revoked.
    pub fn extend(&self, pins: impl IntoIterator<Item = [u8; 32]>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(pins);
    }

    /// Every revoked pin, ascending.
    pub fn pins(&self) -> Vec<[u8; 32]> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_both_forms() {
        for r in [
            Role::Central,
            Role::Dcp(0),
            Role::Dcp(1),
            Role::Dcp(u32::MAX),
            Role::Mds,
            Role::Operator,
        ] {
            assert_eq!(Role::from_uri(&r.uri()), Ok(Some(r)));
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        assert_eq!(Role::Dcp(7).uri(), "urn:tally:role:dcp:7");
        assert_eq!(Role::Dcp(7).to_string(), "dcp-7");
    }

    #[test]
    fn malformed_roles_are_refused_and_foreign_uris_ignored() {
        for bad in [
            "dcp:01",
            "dcp:",
            "dcp:+1",
            "dcp:-1",
            "dcp:4294967296",
            "dcp:1 ",
            "Central",
            "",
            "dcp",
        ] {
            let uri = format!("{ROLE_URI_PREFIX}{bad}");
            assert!(
                matches!(Role::from_uri(&uri), Err(TlsError::BadRole(_))),
                "{uri}"
            );
        }
        for bad in ["dcp-01", "dcp-", "dcp:1", "DCP-1", "root", ""] {
            assert!(bad.parse::<Role>().is_err(), "{bad}");
        }
        assert_eq!(Role::from_uri("https://example.org/central"), Ok(None));
        assert_eq!(Role::from_uri("urn:tally:other:central"), Ok(None));
    }

    #[test]
    fn pem_without_a_certificate_is_refused() {
        assert!(matches!(certs_from_pem(""), Err(TlsError::Pem(_))));
        assert!(matches!(
            certs_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(TlsError::BadCertificate(_))
        ));
        assert!(key_from_pem("not a key").is_err());
    }
}
