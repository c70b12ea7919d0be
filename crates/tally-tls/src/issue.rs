//! Issuing: the CA certificate signed by the root key through
//! [`tally_core::Signer`] (a key file or a PKCS#11 token: the CA key is
//! the root, never a second key on disk), role certificates under it, and
//! the directory they are written to ([`TlsDir`]).

use std::cell::RefCell;
use std::fmt;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm, SigningKey,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tally_core::{PublicKey, Signer, Suite};

use crate::{Role, TlsError, cert_from_pem, der};

/// The CA's subject (and the issuer of every role certificate).
const CA_COMMON_NAME: &str = "Tally root";
const ORGANIZATION: &str = "Tally";
/// Allowance for clocks behind the issuer's.
const NOT_BEFORE_SKEW: Duration = Duration::from_secs(3600);
/// Length of every message the root signs for Tally objects.
const TAGGED_HASH_BYTES: usize = 32;
/// The first byte of a DER SEQUENCE.
const DER_SEQUENCE: u8 = 0x30;
/// Longest validity this crate issues (ten years).
pub const VALIDITY_DAYS_MAX: u32 = 3653;

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clock skew) for `days` days (at most
    /// [`VALIDITY_DAYS_MAX`]).
    pub fn days(days: u32) -> Validity {
        let now = SystemTime::now();
        let days = u64::from(days.min(VALIDITY_DAYS_MAX));
        Validity {
            not_before: now - NOT_BEFORE_SKEW,
            not_after: now + Duration::from_secs(days * 86_400),
        }
    }

    /// When a certificate of this validity is checked after issuing: now,
    /// or the nearest instant inside the validity (a certificate issued
    /// for the past or the future is still checked for its chain).
    fn checked_at(&self) -> UnixTime {
        let now = SystemTime::now().clamp(self.not_before, self.not_after);
        UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), TlsError> {
        if self.not_after <= self.not_before {
            return Err(TlsError::Issue("not_after is not after not_before".into()));
        }
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
        Ok(())
    }
}

/// The root key as rcgen's signing key: every signature goes through the
/// [`Signer`] (and is checked under the root's public key before it is
/// put in a certificate).
struct RootKey<'a, S: ?Sized> {
    signer: &'a S,
    public: PublicKey,
    /// The signer's own error, which rcgen's error type cannot carry.
    failure: RefCell<Option<String>>,
}

impl<'a, S> RootKey<'a, S>
where
    S: Signer + ?Sized,
    S::Error: fmt::Display,
{
    fn new(signer: &'a S) -> Result<RootKey<'a, S>, TlsError> {
        let public = signer.public_key();
        if public.suite() != Suite::Ed25519 {
            return Err(TlsError::UnsupportedKey(format!(
                "the root key is {:?}; the TLS CA is signed with an Ed25519 root",
                public.suite()
            )));
        }
        Ok(RootKey {
            signer,
            public,
            failure: RefCell::new(None),
        })
    }

    /// rcgen's error, with the signer's own message when it failed.
    fn error(&self, e: rcgen::Error) -> TlsError {
        match self.failure.borrow_mut().take() {
            Some(m) => TlsError::Signer(m),
            None => TlsError::Issue(e.to_string()),
        }
    }
}

impl<S: Signer + ?Sized> PublicKeyData for RootKey<'_, S> {
    fn der_bytes(&self) -> &[u8] {
        self.public.key_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl<S> SigningKey for RootKey<'_, S>
where
    S: Signer + ?Sized,
    S::Error: fmt::Display,
{
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let fail = |m: String| {
            *self.failure.borrow_mut() = Some(m);
            rcgen::Error::RemoteKeyError
        };
        // The root signs Tally objects as 32-byte tagged hashes; through
        // here it signs only DER SEQUENCEs (a TBSCertificate), which are
        // longer: neither kind of signature can pass for the other.
        if msg.len() <= TAGGED_HASH_BYTES || msg[0] != DER_SEQUENCE {
            return Err(fail("the root signs only certificates here".into()));
        }
        let sig = self.signer.try_sign(msg).map_err(|e| fail(e.to_string()))?;
        if sig.suite() != Suite::Ed25519
            || tally_core::crypto::verify(&self.public, msg, &sig).is_err()
        {
            return Err(fail(
                "the signature does not verify under the root's public key".into(),
            ));
        }
        Ok(sig.bytes().to_vec())
    }
}

/// The CA's parameters. Deterministic but for the validity, so that an
/// [`Issuer`] rebuilt from them names the same issuer as `ca.pem`.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    // Role certificates directly under the root, no intermediate CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The self-signed CA certificate (PEM) whose key is the root key.
pub fn ca_certificate<S>(root: &S, validity: Validity) -> Result<String, TlsError>
where
    S: Signer + ?Sized,
    S::Error: fmt::Display,
{
    let key = RootKey::new(root)?;
    let mut params = ca_params();
    validity.apply(&mut params)?;
    let cert = params.self_signed(&key).map_err(|e| key.error(e))?;
    let pem = cert.pem();
    // Read back: the certificate carries the root's key.
    check_ca_key(&cert_from_pem(&pem)?, &key.public)?;
    Ok(pem)
}

/// Whether `ca` is a certificate of `root`'s key.
fn check_ca_key(ca: &CertificateDer<'_>, root: &PublicKey) -> Result<(), TlsError> {
    let key = der::Certificate::parse(ca)?.ed25519_key()?;
    if root.suite() == Suite::Ed25519 && key.as_slice() == root.key_bytes() {
        Ok(())
    } else {
        Err(TlsError::CaKeyMismatch)
    }
}

/// What a leaf certificate is for.
enum Leaf<'a> {
    Role(Role),
    /// A server without a role (the device-facing API), for these names.
    Server(&'a [String]),
}

/// A role certificate under the CA: a fresh ECDSA P-256 key, the role in
/// a URI SAN, client and server authentication, and (for every role that
/// serves) the names `localhost` and `127.0.0.1` plus `hosts`.
/// Returns `(certificate PEM, private key PEM)`.
pub fn issue_role_cert<S>(
    ca_signer: &S,
    ca_cert_pem: &str,
    role: Role,
    hosts: &[String],
    validity: Validity,
) -> Result<(String, String), TlsError>
where
    S: Signer + ?Sized,
    S::Error: fmt::Display,
{
    issue_leaf(ca_signer, ca_cert_pem, Leaf::Role(role), hosts, validity)
}

/// A server certificate with no role (the device-facing API): server
/// authentication only, for `localhost`, `127.0.0.1` and `hosts`. It
/// cannot authenticate a party: a client certificate without a role is
/// refused by [`crate::ClientAuth::Required`].
pub fn issue_server_cert<S>(
    ca_signer: &S,
    ca_cert_pem: &str,
    hosts: &[String],
    validity: Validity,
) -> Result<(String, String), TlsError>
where
    S: Signer + ?Sized,
    S::Error: fmt::Display,
{
    issue_leaf(ca_signer, ca_cert_pem, Leaf::Server(hosts), &[], validity)
}

/// Whether a certificate of `role` names the server hosts (every party
/// but an operator serves something).
fn serves(role: Role) -> bool {
    !matches!(role, Role::Operator)
}

fn san_for_host(host: &str) -> Result<SanType, TlsError> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        // A name a TLS client can ask for (rustls' DNS-name rules), so a
        // typo is refused here rather than at the first handshake.
        Err(_) => rustls_pki_types::DnsName::try_from(host)
            .ok()
            .and_then(|_| host.try_into().ok())
            .map(SanType::DnsName)
            .ok_or_else(|| TlsError::Issue(format!("{host:?} is not a host name or IP address"))),
    }
}

fn issue_leaf<S>(
    ca_signer: &S,
    ca_cert_pem: &str,
    leaf: Leaf<'_>,
    hosts: &[String],
    validity: Validity,
) -> Result<(String, String), TlsError>
where
    S: Signer + ?Sized,
    S::Error: fmt::Display,
{
    let ca = cert_from_pem(ca_cert_pem)?;
    let root = RootKey::new(ca_signer)?;
    check_ca_key(&ca, &root.public)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    let (names, eku, serves) = match &leaf {
        Leaf::Role(role) => {
            dn.push(DnType::CommonName, role.to_string());
            let uri = role
                .uri()
                .try_into()
                .map_err(|_| TlsError::BadRole(role.uri()))?;
            let eku = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
            (vec![SanType::URI(uri)], eku, serves(*role))
        }
        Leaf::Server(extra) => {
            dn.push(DnType::CommonName, "Tally device API");
            let mut names = Vec::new();
            for h in extra.iter() {
                names.push(san_for_host(h)?);
            }
            (names, vec![ExtendedKeyUsagePurpose::ServerAuth], true)
        }
    };
    let mut names = names;
    if serves {
        names.push(SanType::DnsName(
            "localhost"
                .try_into()
                .map_err(|_| TlsError::Issue("localhost".into()))?,
        ));
        names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        for h in hosts {
            names.push(san_for_host(h)?);
        }
    }
    params.distinguished_name = dn;
    params.subject_alt_names = names;
    params.extended_key_usages = eku;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params)?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Issue(e.to_string()))?;
    let issuer = Issuer::new(ca_params(), &root);
    let cert = params.signed_by(&key, &issuer).map_err(|e| root.error(e))?;

    // Read back: the certificate chains to `ca` and names what was asked.
    let der = cert.der().clone();
    check_chain(&ca, &der, validity.checked_at())?;
    if let Leaf::Role(role) = leaf
        && crate::role_of(&der)? != Some(role)
    {
        return Err(TlsError::Issue(
            "the issued certificate does not name its role".into(),
        ));
    }
    Ok((cert.pem(), key.serialize_pem()))
}

/// Whether the certificate in `leaf_pem` chains to the CA in `ca_pem`
/// now (webpki; as a server certificate, so a role certificate without
/// the server EKU would fail).
pub fn verify_leaf(ca_pem: &str, leaf_pem: &str) -> Result<(), TlsError> {
    check_chain(
        &cert_from_pem(ca_pem)?,
        &cert_from_pem(leaf_pem)?,
        UnixTime::now(),
    )
}

/// Whether `leaf` chains to `ca` (webpki, ring provider's algorithms).
fn check_chain(
    ca: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
    at: UnixTime,
) -> Result<(), TlsError> {
    let anchor = webpki_anchor(ca)?;
    let ee = rustls::server::ParsedCertificate::try_from(leaf)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let provider = crate::provider();
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &ee,
        &anchor,
        &[],
        at,
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| TlsError::BadCertificate(format!("does not chain to the CA: {e}")))
}

fn webpki_anchor(ca: &CertificateDer<'_>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone().into_owned())
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    Ok(roots)
}

/// A directory of TLS material: `ca.pem`, `<role>.pem` and `<role>.key`
/// (e.g. `dcp-1.pem`, `dcp-1.key`), `api.pem`/`api.key` for the
/// device-facing server. Key files are mode 0600 and refused when group
/// or others can read them.
pub struct TlsDir {
    path: PathBuf,
}

/// The file stem of the device-facing server's certificate and key.
pub const API_STEM: &str = "api";

impl TlsDir {
    /// The directory at `path`, created (mode 0755: it holds public
    /// certificates too; keys are 0600) if missing.
    pub fn open_or_create(path: &Path) -> Result<TlsDir, TlsError> {
        fs::create_dir_all(path).map_err(|e| io(path, e))?;
        Ok(TlsDir {
            path: path.to_path_buf(),
        })
    }

    /// An existing directory (nothing is created).
    pub fn open(path: &Path) -> Result<TlsDir, TlsError> {
        if !path.is_dir() {
            return Err(TlsError::Io(format!("{}: not a directory", path.display())));
        }
        Ok(TlsDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ca_path(&self) -> PathBuf {
        self.path.join("ca.pem")
    }

    pub fn cert_path(&self, stem: &str) -> PathBuf {
        self.path.join(format!("{stem}.pem"))
    }

    pub fn key_path(&self, stem: &str) -> PathBuf {
        self.path.join(format!("{stem}.key"))
    }

    /// `ca.pem`.
    pub fn ca_pem(&self) -> Result<String, TlsError> {
        read(&self.ca_path())
    }

    /// `(certificate PEM, key PEM)` of `stem` (a role's short form or
    /// [`API_STEM`]); the key file must not be readable by others.
    pub fn pair(&self, stem: &str) -> Result<(String, String), TlsError> {
        let key_path = self.key_path(stem);
        let mode = fs::metadata(&key_path)
            .map_err(|e| io(&key_path, e))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(TlsError::Exposed {
                path: key_path.display().to_string(),
                mode,
            });
        }
        Ok((read(&self.cert_path(stem))?, read(&key_path)?))
    }

    /// Writes `ca.pem` (replacing it).
    pub fn write_ca(&self, pem: &str) -> Result<(), TlsError> {
        write_file(&self.ca_path(), pem, 0o644)
    }

    /// Writes `<stem>.pem` (0644) and `<stem>.key` (0600), replacing them.
    pub fn write_pair(&self, stem: &str, cert_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        write_file(&self.key_path(stem), key_pem, 0o600)?;
        write_file(&self.cert_path(stem), cert_pem, 0o644)
    }
}

fn io(path: &Path, e: std::io::Error) -> TlsError {
    TlsError::Io(format!("{}: {e}", path.display()))
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|e| io(path, e))
}

/// Written whole under a temporary name with its final mode, synced,
/// then renamed over `path`: a reader never sees half a key, and a key is
/// never readable by others even for a moment.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(|e| io(path, e))
}
