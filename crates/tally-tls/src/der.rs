//! The few fields of an X.509 certificate Tally reads itself: the subject
//! public key (to check that the CA's key is the root's) and the URI
//! subject alternative names (the role). Chains and signatures are
//! checked by webpki, never here; this reader only walks DER (RFC 5280
//! §4.1) strictly enough to refuse what is not a certificate: definite
//! minimal lengths, low tag numbers, no bytes after the certificate.
//! A hand-written walker of ~100 lines instead of an X.509 parser crate
//! (x509-parser brings nom, asn1-rs, der-parser and more) — see the
//! decision record.

use crate::TlsError;

/// `id-ce-subjectAltName` (2.5.29.17), DER content of the OID.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// `id-Ed25519` (1.3.101.112, RFC 8410).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT Version`.
const TAG_VERSION: u8 = 0xa0;
/// `[1] IMPLICIT issuerUniqueID`, `[2] IMPLICIT subjectUniqueID`.
const TAG_ISSUER_UID: u8 = 0x81;
const TAG_SUBJECT_UID: u8 = 0x82;
/// `[3] EXPLICIT Extensions`.
const TAG_EXTENSIONS: u8 = 0xa3;
/// GeneralName `uniformResourceIdentifier [6] IMPLICIT IA5String`.
const TAG_URI: u8 = 0x86;

/// Largest length this reader accepts (a certificate is a few KiB).
const LENGTH_MAX: usize = 1 << 20;

fn bad(what: &str) -> TlsError {
    TlsError::BadCertificate(what.to_owned())
}

/// A cursor over DER bytes.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element: its tag and content.
    fn any(&mut self) -> Result<(u8, &'a [u8]), TlsError> {
        let (&tag, rest) = self.rest.split_first().ok_or_else(|| bad("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(bad("high tag number"));
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 3 || rest.len() < n {
                return Err(bad("length"));
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            // DER: the shortest form, so a long form is for 128 and up
            // and has no leading zero byte.
            if len < 0x80 || bytes[0] == 0 {
                return Err(bad("non-minimal length"));
            }
            len
        };
        if len > LENGTH_MAX || rest.len() < len {
            return Err(bad("truncated"));
        }
        let (content, after) = rest.split_at(len);
        self.rest = after;
        Ok((tag, content))
    }

    /// The next element, which must have `tag`.
    fn expect(&mut self, tag: u8) -> Result<&'a [u8], TlsError> {
        match self.any()? {
            (t, content) if t == tag => Ok(content),
            _ => Err(bad("unexpected element")),
        }
    }

    /// The next element, which must have `tag`: the whole element (tag,
    /// length and content) and its content.
    fn expect_whole(&mut self, tag: u8) -> Result<(&'a [u8], &'a [u8]), TlsError> {
        let start = self.rest;
        let content = self.expect(tag)?;
        Ok((&start[..start.len() - self.rest.len()], content))
    }

    /// The next element if it has `tag`.
    fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, TlsError> {
        if self.peek_tag() == Some(tag) {
            self.expect(tag).map(Some)
        } else {
            Ok(None)
        }
    }

    fn end(&self) -> Result<(), TlsError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes"))
        }
    }
}

/// The fields of a certificate this crate reads.
pub struct Certificate<'a> {
    /// `SubjectPublicKeyInfo`, its content (algorithm and key).
    spki: &'a [u8],
    /// `SubjectPublicKeyInfo`, the whole DER element.
    spki_der: &'a [u8],
    /// The content of `[3] Extensions`, if present.
    extensions: Option<&'a [u8]>,
}

impl<'a> Certificate<'a> {
    /// Walks `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm,
    /// signatureValue }` down to the subject public key and extensions.
    pub fn parse(der: &'a [u8]) -> Result<Certificate<'a>, TlsError> {
        let mut outer = Der::new(der);
        let cert = outer.expect(TAG_SEQUENCE)?;
        outer.end()?;
        let mut cert = Der::new(cert);
        let tbs = cert.expect(TAG_SEQUENCE)?;
        cert.expect(TAG_SEQUENCE)?; // signatureAlgorithm
        cert.expect(TAG_BIT_STRING)?; // signatureValue
        cert.end()?;

        let mut tbs = Der::new(tbs);
        tbs.optional(TAG_VERSION)?;
        tbs.expect(TAG_INTEGER)?; // serialNumber
        tbs.expect(TAG_SEQUENCE)?; // signature
        tbs.expect(TAG_SEQUENCE)?; // issuer
        tbs.expect(TAG_SEQUENCE)?; // validity
        tbs.expect(TAG_SEQUENCE)?; // subject
        let (spki_der, spki) = tbs.expect_whole(TAG_SEQUENCE)?;
        tbs.optional(TAG_ISSUER_UID)?;
        tbs.optional(TAG_SUBJECT_UID)?;
        let extensions = tbs.optional(TAG_EXTENSIONS)?;
        tbs.end()?;
        Ok(Certificate {
            spki,
            spki_der,
            extensions,
        })
    }

    /// The subject's `SubjectPublicKeyInfo`, DER-encoded (what an RFC 7469
    /// key pin hashes).
    pub fn spki_der(&self) -> &'a [u8] {
        self.spki_der
    }

    /// The Ed25519 public key of the subject, or an error for any other
    /// algorithm.
    pub fn ed25519_key(&self) -> Result<[u8; 32], TlsError> {
        let mut spki = Der::new(self.spki);
        let mut alg = Der::new(spki.expect(TAG_SEQUENCE)?);
        let oid = alg.expect(TAG_OID)?;
        alg.end()?;
        if oid != OID_ED25519 {
            return Err(TlsError::UnsupportedKey(
                "the certificate's key is not Ed25519".into(),
            ));
        }
        let bits = spki.expect(TAG_BIT_STRING)?;
        spki.end()?;
        match bits.split_first() {
            Some((0, key)) => key.try_into().map_err(|_| bad("Ed25519 key length")),
            _ => Err(bad("public key bit string")),
        }
    }

    /// Every URI in the subject alternative names (none without the
    /// extension). A certificate with two SAN extensions is refused.
    pub fn uris(&self) -> Result<Vec<&'a str>, TlsError> {
        let Some(ext) = self.extensions else {
            return Ok(Vec::new());
        };
        let mut outer = Der::new(ext);
        let mut list = Der::new(outer.expect(TAG_SEQUENCE)?);
        outer.end()?;
        let mut san = None;
        while !list.is_empty() {
            let mut e = Der::new(list.expect(TAG_SEQUENCE)?);
            let oid = e.expect(TAG_OID)?;
            e.optional(TAG_BOOLEAN)?; // critical
            let value = e.expect(TAG_OCTET_STRING)?;
            e.end()?;
            if oid == OID_SUBJECT_ALT_NAME && san.replace(value).is_some() {
                return Err(bad("two subjectAltName extensions"));
            }
        }
        let mut uris = Vec::new();
        if let Some(value) = san {
            let mut outer = Der::new(value);
            let mut names = Der::new(outer.expect(TAG_SEQUENCE)?);
            outer.end()?;
            while !names.is_empty() {
                let (tag, content) = names.any()?;
                if tag == TAG_URI {
                    // IA5String: ASCII.
                    if !content.is_ascii() {
                        return Err(bad("URI is not IA5"));
                    }
                    uris.push(std::str::from_utf8(content).map_err(|_| bad("URI"))?);
                }
            }
        }
        Ok(uris)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_must_be_minimal_and_within_the_input() {
        assert!(Der::new(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0]).any().is_err());
        assert!(Der::new(&[0x30, 0x82, 0x00, 0x80]).any().is_err());
        assert!(Der::new(&[0x30, 0x03, 0, 0]).any().is_err());
        assert!(Der::new(&[0x30, 0x80]).any().is_err(), "indefinite length");
        assert!(Der::new(&[0x1f, 0x01, 0]).any().is_err(), "high tag");
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([7u8; 0x80]);
        let (tag, content) = Der::new(&long).any().unwrap();
        assert_eq!((tag, content.len()), (0x04, 0x80));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        for bytes in [
            &[][..],
            &[0x30, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x04, 0x00],
        ] {
            assert!(Certificate::parse(bytes).is_err(), "{bytes:?}");
        }
    }
}
