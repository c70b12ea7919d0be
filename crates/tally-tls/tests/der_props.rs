//! The certificate reader (tally_tls::der) on hostile bytes: random input
//! and every truncation or one-byte change of real role certificates give
//! a value or a typed error, never a panic; an untouched certificate
//! reads back its role and key.

use proptest::prelude::*;
use tally_core::{SecretKey, Suite};
use tally_tls::{Role, Validity, ca_certificate, cert_from_pem, issue_role_cert, role_of};

fn certs() -> (Vec<u8>, Vec<u8>, [u8; 32]) {
    let root = SecretKey::from_seed(Suite::Ed25519, &[0x21; 32]).unwrap();
    let ca_pem = ca_certificate(&root, Validity::days(1)).unwrap();
    let (leaf, _) = issue_role_cert(&root, &ca_pem, Role::Dcp(42), &[], Validity::days(1)).unwrap();
    let mut key = [0u8; 32];
    key.copy_from_slice(root.public().key_bytes());
    (
        cert_from_pem(&ca_pem).unwrap().to_vec(),
        cert_from_pem(&leaf).unwrap().to_vec(),
        key,
    )
}

fn read(bytes: &[u8]) {
    let der = rustls_pki_types::CertificateDer::from(bytes);
    let _ = role_of(&der);
    if let Ok(c) = tally_tls::der::Certificate::parse(bytes) {
        let _ = c.uris();
        let _ = c.ed25519_key();
    }
}

#[test]
fn real_certificates_read_back() {
    let (ca, leaf, key) = certs();
    assert_eq!(role_of(&ca.clone().into()), Ok(None));
    assert_eq!(role_of(&leaf.clone().into()), Ok(Some(Role::Dcp(42))));
    let parsed = tally_tls::der::Certificate::parse(&ca).unwrap();
    assert_eq!(parsed.ed25519_key().unwrap(), key);
    // Trailing bytes and every truncation are refused.
    let mut longer = leaf.clone();
    longer.push(0);
    assert!(tally_tls::der::Certificate::parse(&longer).is_err());
    for n in 0..leaf.len() {
        assert!(
            tally_tls::der::Certificate::parse(&leaf[..n]).is_err(),
            "{n}"
        );
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read(&bytes);
    }

    #[test]
    fn changed_certificates_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), ca in any::<bool>()) {
        let (c, l, _) = certs();
        let mut bytes = if ca { c } else { l };
        let i = at.index(bytes.len());
        bytes[i] = byte;
        read(&bytes);
    }
}
