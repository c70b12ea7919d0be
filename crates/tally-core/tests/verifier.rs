//! Integration tests of the offline payee verifier (SPEC.md §5, V1–V12).
//!
//! Every rule has at least one negative test that asserts the exact
//! [`VerifyError`] and its stable code, next to the same construction with
//! the defect removed, which must verify: a test that cannot fail proves
//! nothing. Where the defect is not about signatures, the tampered records
//! are re-signed so that the rejection really comes from the intended rule.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tally_core::cert::{DcpCertificate, PseudonymCertificate, role};
use tally_core::codec::{Cbor, CodecError};
use tally_core::crypto::{PublicKey, SecretKey, Signature, Suite};
use tally_core::policy::{Policy, RevocationList, device_class};
use tally_core::protocol::Package;
use tally_core::record::{Issue, OutPoint, Output, Record, Transfer, distinct_signers};
use tally_core::stream::{STREAM_REFUND_FLAG, StreamPart};
use tally_core::testkit::{self, Scheme};
use tally_core::verify::{
    self, BoundedCertCache, CertCache, Expected, NoCache, TrustStore, VerifiedPackage, VerifyError,
    VerifyParams,
};
use tally_core::{Amount, Epoch, Hash32};

const BUDGET: usize = 32;
const NONCE: [u8; 16] = *b"tally-test-nonce";
const ED: Suite = Suite::Ed25519;
const P256: Suite = Suite::EcdsaP256Sha256;

// ---------------------------------------------------------------- helpers

/// A little payer-side world: one test scheme, the records made so far (in
/// creation order, hence topological), the parties' keys and certificates.
/// `package` is an independent reference implementation of package
/// assembly: ancestry = records reachable from the inputs, in book order;
/// certificates = owners of inputs, in order of first use.
struct Book {
    scheme: Scheme,
    records: Vec<Record>,
    keys: BTreeMap<PublicKey, SecretKey>,
    certs: BTreeMap<PublicKey, PseudonymCertificate>,
}

impl Book {
    fn new(suite: Suite) -> Book {
        Book::with_scheme(Scheme::new(suite))
    }

    fn with_scheme(scheme: Scheme) -> Book {
        Book {
            scheme,
            records: Vec::new(),
            keys: BTreeMap::new(),
            certs: BTreeMap::new(),
        }
    }

    /// A party in the scheme's suite, certified as a phone.
    fn party(&mut self, label: &str) -> PublicKey {
        let suite = self.scheme.root.suite();
        self.party_in(suite, label)
    }

    fn party_in(&mut self, suite: Suite, label: &str) -> PublicKey {
        let sk = testkit::key(suite, label.as_bytes());
        let pk = sk.public();
        self.certs
            .insert(pk, self.scheme.certify(pk, device_class::PHONE, 0));
        self.keys.insert(pk, sk);
        pk
    }

    fn issue(&mut self, to: PublicKey, value: u64) -> OutPoint {
        let i = self.scheme.issue(to, value);
        OutPoint {
            record: self.push_issue(i),
            index: 0,
        }
    }

    fn push_issue(&mut self, i: Issue) -> Hash32 {
        let id = i.id();
        self.records.push(Record::Issue(i));
        id
    }

    fn owner(&self, op: &OutPoint) -> Option<PublicKey> {
        let r = self.records.iter().find(|r| r.id() == op.record)?;
        r.spendable(op.index).map(|o| o.owner)
    }

    /// A transfer signed by the owners of its inputs.
    fn transfer(
        &self,
        inputs: &[OutPoint],
        outputs: &[(PublicKey, u64)],
        nonce: [u8; 16],
        counter: u64,
    ) -> Transfer {
        let mut t = Transfer {
            inputs: inputs.to_vec(),
            outputs: outputs
                .iter()
                .map(|&(owner, v)| Output {
                    value: Amount(v),
                    owner,
                })
                .collect(),
            nonce,
            counter,
            signatures: Vec::new(),
            confidential: None,
            stream: None,
        };
        self.sign(&mut t);
        t
    }

    /// (Re-)signs `t`: one signature per distinct input owner. A key the
    /// book has no secret for gets a zero signature.
    fn sign(&self, t: &mut Transfer) {
        let id = t.id();
        t.signatures = distinct_signers(t.inputs.iter().filter_map(|op| self.owner(op)))
            .iter()
            .map(|k| match self.keys.get(k) {
                Some(sk) => sk.sign(&id.0),
                None => Signature::new(k.suite(), [0; 64]),
            })
            .collect();
    }

    /// Keeps `t` as a record that later transfers may spend from.
    fn commit(&mut self, t: &Transfer) -> Hash32 {
        self.records.push(Record::Transfer(t.clone()));
        t.id()
    }

    fn package(&self, t: &Transfer) -> Package {
        let mut need: BTreeSet<Hash32> = BTreeSet::new();
        let mut stack: Vec<Hash32> = t.inputs.iter().map(|i| i.record).collect();
        while let Some(id) = stack.pop() {
            if need.insert(id)
                && let Some(r) = self.records.iter().find(|r| r.id() == id)
            {
                stack.extend(r.inputs().iter().map(|i| i.record));
            }
        }
        let ancestry: Vec<Record> = self
            .records
            .iter()
            .filter(|r| need.contains(&r.id()))
            .cloned()
            .collect();
        let mut signers: Vec<PublicKey> = Vec::new();
        let transfers = ancestry
            .iter()
            .filter_map(|r| match r {
                Record::Transfer(t) => Some(t),
                Record::Issue(_) => None,
            })
            .chain(std::iter::once(t));
        for tr in transfers {
            for k in tr.inputs.iter().filter_map(|op| self.owner(op)) {
                if !signers.contains(&k) {
                    signers.push(k);
                }
            }
        }
        let certificates = signers
            .iter()
            .filter_map(|k| self.certs.get(k).cloned())
            .collect();
        Package {
            transfer: t.clone(),
            ancestry,
            certificates,
        }
    }

    fn verify(&self, pkg: &Package, exp: &Expected) -> Result<VerifiedPackage, VerifyError> {
        self.verify_at(pkg, exp, self.scheme.params(BUDGET))
    }

    fn verify_at(
        &self,
        pkg: &Package,
        exp: &Expected,
        params: VerifyParams,
    ) -> Result<VerifiedPackage, VerifyError> {
        verify::verify_package(pkg.clone(), exp, &self.scheme.trust(), params, &mut NoCache)
    }
}

/// What the payee of `t` asked for, read off its first output.
fn expected_of(t: &Transfer) -> Expected {
    Expected {
        payee: t.outputs[0].owner,
        amount: t.outputs[0].value,
        nonce: t.nonce,
        stream: None,
    }
}

/// The basic case: Issue 1000 to the payer; the payer pays 250 to the payee
/// with 750 change.
struct OneHop {
    book: Book,
    payer: PublicKey,
    payee: PublicKey,
    coin: OutPoint,
}

impl OneHop {
    fn new() -> OneHop {
        OneHop::in_book(Book::new(ED))
    }

    fn in_book(mut book: Book) -> OneHop {
        let payer = book.party("payer");
        let payee = book.party("payee");
        let coin = book.issue(payer, 1000);
        OneHop {
            book,
            payer,
            payee,
            coin,
        }
    }

    fn transfer(&self) -> Transfer {
        self.book.transfer(
            &[self.coin],
            &[(self.payee, 250), (self.payer, 750)],
            NONCE,
            7,
        )
    }

    fn expected(&self) -> Expected {
        Expected {
            payee: self.payee,
            amount: Amount(250),
            nonce: NONCE,
            stream: None,
        }
    }

    fn package(&self) -> Package {
        self.book.package(&self.transfer())
    }

    /// The standard transfer changed by `f`, then re-signed and packaged.
    fn package_with(&self, f: impl FnOnce(&mut Transfer)) -> Package {
        let mut t = self.transfer();
        f(&mut t);
        self.book.sign(&mut t);
        self.book.package(&t)
    }

    fn verify(&self, pkg: &Package) -> Result<VerifiedPackage, VerifyError> {
        self.book.verify(pkg, &self.expected())
    }

    fn verify_bytes(&self, bytes: &[u8]) -> Result<VerifiedPackage, VerifyError> {
        verify::verify_package_bytes(
            bytes,
            &self.expected(),
            &self.book.scheme.trust(),
            self.book.scheme.params(BUDGET),
            &mut NoCache,
        )
    }
}

/// Parties `p0…pn` (suites from `suites`, cycled); Issue `value` to p0; then
/// p_i pays `pays[i]` to p_{i+1} with change back to p_i, each hop spending
/// the token received in the hop before. The last hop is the package's
/// transfer.
fn chain(book: &mut Book, suites: &[Suite], value: u64, pays: &[u64]) -> (Package, Expected) {
    assert!(!pays.is_empty());
    let parties: Vec<PublicKey> = (0..=pays.len())
        .map(|i| book.party_in(suites[i % suites.len()], &format!("hop-{i}")))
        .collect();
    let mut coin = book.issue(parties[0], value);
    let mut held = value;
    for (i, &pay) in pays.iter().enumerate() {
        assert!(pay >= 1 && pay <= held);
        let mut outs = vec![(parties[i + 1], pay)];
        if held > pay {
            outs.push((parties[i], held - pay));
        }
        let t = book.transfer(&[coin], &outs, [i as u8; 16], i as u64 + 1);
        if i + 1 == pays.len() {
            let exp = expected_of(&t);
            return (book.package(&t), exp);
        }
        coin = OutPoint {
            record: book.commit(&t),
            index: 0,
        };
        held = pay;
    }
    unreachable!()
}

/// Two Issue tokens (600 to `a`, 400 to `b`) merged into one payment of 900
/// to the payee with 100 change to `a`.
fn merge(book: &mut Book, a: PublicKey, b: PublicKey) -> (Package, Expected) {
    let payee = book.party("merge-payee");
    let c1 = book.issue(a, 600);
    let c2 = book.issue(b, 400);
    let t = book.transfer(&[c1, c2], &[(payee, 900), (a, 100)], NONCE, 3);
    let exp = expected_of(&t);
    (book.package(&t), exp)
}

#[track_caller]
fn accepts(r: Result<VerifiedPackage, VerifyError>) -> VerifiedPackage {
    match r {
        Ok(v) => v,
        Err(e) => panic!("rejected a valid package: {e}"),
    }
}

#[track_caller]
fn rejects(r: Result<VerifiedPackage, VerifyError>, want: VerifyError, code: u16) {
    match r {
        Ok(_) => panic!("accepted a package that should fail with {want:?}"),
        Err(e) => {
            assert_eq!(e, want);
            assert_eq!(e.code(), code);
            assert_eq!(u16::from(e.rule()), code / 100);
        }
    }
}

fn flip(sig: &Signature, byte: usize) -> Signature {
    let mut b = *sig.bytes();
    b[byte] ^= 0x01;
    Signature::new(sig.suite(), b)
}

/// Replaces the policy's DCP trust list (root-signed, serial + 1).
fn set_dcps(scheme: &mut Scheme, dcps: Vec<DcpCertificate>) {
    scheme.policy = Policy::sign(
        &scheme.root,
        scheme.policy.serial + 1,
        "XTS",
        scheme.policy.tiers.clone(),
        dcps,
    );
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern in encoding")
}

// ---------------------------------------------------------------- valid packages

#[test]
fn one_hop_package_verifies() {
    let h = OneHop::new();
    let pkg = h.package();
    assert_eq!(pkg.ancestry.len(), 1);
    assert_eq!(pkg.certificates.len(), 1);
    let v = accepts(h.verify(&pkg));
    assert_eq!(v.transfer_id(), pkg.transfer.id());
    assert_eq!(v.ancestry_ids(), &[h.coin.record]);
    let (op, out) = v.payment();
    assert_eq!(
        op,
        OutPoint {
            record: pkg.transfer.id(),
            index: 0
        }
    );
    assert_eq!((out.owner, out.value), (h.payee, Amount(250)));
    // Issue + certificate + transfer.
    assert_eq!(v.signature_checks(), 3);
    // The same through the byte interface.
    accepts(h.verify_bytes(&pkg.to_cbor()));
    assert_eq!(Package::from_cbor(&pkg.to_cbor()), Ok(pkg));
}

#[test]
fn multi_hop_chain_verifies() {
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[ED], 10_000, &[9_000, 5_000, 5_000, 1_234, 1]);
    assert_eq!(pkg.ancestry.len(), 5);
    assert_eq!(pkg.certificates.len(), 5);
    let v = accepts(book.verify(&pkg, &exp));
    // 1 Issue + 5 certificates + 5 transfers.
    assert_eq!(v.signature_checks(), 11);
}

#[test]
fn signature_batch_size_changes_neither_verdict_nor_count() {
    // A device verifies in small batches to bound memory (the SE in
    // pairs); a server in one batch. Same packages accepted, same refusal
    // and rule for a bad signature anywhere, same number of checks.
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[ED], 10_000, &[9_000, 5_000, 5_000, 1_234, 1]);
    let at = |batch| VerifyParams {
        epoch: book.scheme.epoch,
        history_records_max: BUDGET,
        signature_batch_max: batch,
    };
    let mut bad_record = pkg.clone();
    let Record::Transfer(t) = &mut bad_record.ancestry[2] else {
        panic!("record 2 is a transfer")
    };
    let mut sig = *t.signatures[0].bytes();
    sig[40] ^= 1;
    t.signatures[0] = Signature::new(ED, sig);
    let mut bad_cert = pkg.clone();
    let mut sig = *bad_cert.certificates[3].signature.bytes();
    sig[7] ^= 1;
    bad_cert.certificates[3].signature = Signature::new(ED, sig);
    for batch in [0, 1, 2, 3, 4, 64, usize::MAX] {
        let v = accepts(book.verify_at(&pkg, &exp, at(batch)));
        assert_eq!(v.signature_checks(), 11, "batch {batch}");
        rejects(
            book.verify_at(&bad_record, &exp, at(batch)),
            VerifyError::BadSignature,
            801,
        );
        rejects(
            book.verify_at(&bad_cert, &exp, at(batch)),
            VerifyError::BadCertificateSignature,
            703,
        );
    }
}

#[test]
fn merge_package_verifies() {
    // One owner: one signature.
    let mut book = Book::new(ED);
    let a = book.party("a");
    let (pkg, exp) = merge(&mut book, a, a);
    assert_eq!(pkg.ancestry.len(), 2);
    assert_eq!(pkg.transfer.signatures.len(), 1);
    accepts(book.verify(&pkg, &exp));
    // Two owners: two signatures, two certificates.
    let mut book = Book::new(ED);
    let (a, b) = (book.party("a"), book.party("b"));
    let (pkg, exp) = merge(&mut book, a, b);
    assert_eq!(pkg.transfer.signatures.len(), 2);
    assert_eq!(pkg.certificates.len(), 2);
    accepts(book.verify(&pkg, &exp));
}

#[test]
fn p256_scheme_package_verifies() {
    let h = OneHop::in_book(Book::new(P256));
    let pkg = h.package();
    assert_eq!(pkg.transfer.signatures[0].suite(), P256);
    accepts(h.verify(&pkg));
    let mut book = Book::new(P256);
    let (pkg, exp) = chain(&mut book, &[P256], 500, &[400, 300, 200]);
    accepts(book.verify(&pkg, &exp));
}

#[test]
fn mixed_suites_verify() {
    // Ed25519 scheme, parties alternating suites.
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[P256, ED], 500, &[400, 300, 200, 100]);
    accepts(book.verify(&pkg, &exp));
    // P-256 scheme, Ed25519 and P-256 parties; a merge signed in both suites.
    let mut book = Book::new(P256);
    let (pkg, exp) = chain(&mut book, &[ED, P256], 500, &[400, 300]);
    accepts(book.verify(&pkg, &exp));
    let a = book.party_in(ED, "mixed-a");
    let b = book.party_in(P256, "mixed-b");
    let (pkg, exp) = merge(&mut book, a, b);
    let suites: Vec<Suite> = pkg.transfer.signatures.iter().map(|s| s.suite()).collect();
    assert_eq!(suites, [ED, P256]);
    accepts(book.verify(&pkg, &exp));
}

#[test]
fn settlement_view_skips_only_the_payee_rule() {
    let h = OneHop::new();
    let pkg = h.package();
    let trust = h.book.scheme.trust();
    let params = h.book.scheme.params(BUDGET);
    // Wrong expectations do not matter without a payee…
    assert!(
        verify::verify_package_for_settlement(pkg.clone(), &trust, params, &mut NoCache).is_ok()
    );
    // …but every other rule still does.
    let mut bad = pkg;
    bad.transfer.signatures[0] = flip(&bad.transfer.signatures[0], 40);
    let e = verify::verify_package_for_settlement(bad, &trust, params, &mut NoCache).unwrap_err();
    assert_eq!(e, VerifyError::BadSignature);
}

// ---------------------------------------------------------------- V1 decoding

#[test]
fn v1_non_canonical_integer_head() {
    let h = OneHop::new();
    let bytes = h.package().to_cbor();
    accepts(h.verify_bytes(&bytes));
    // The counter (7) follows the nonce; write it with a 1-byte argument
    // (0x18 0x07) instead of inline.
    let at = find(&bytes, &[&[0x50][..], &NONCE[..]].concat()) + 17;
    assert_eq!(bytes[at], 0x07);
    let mut bad = bytes[..at].to_vec();
    bad.extend_from_slice(&[0x18, 0x07]);
    bad.extend_from_slice(&bytes[at + 1..]);
    rejects(
        h.verify_bytes(&bad),
        VerifyError::Decode(CodecError::NonCanonical),
        101,
    );
}

#[test]
fn v1_indefinite_length_array() {
    let h = OneHop::new();
    let bytes = h.package().to_cbor();
    assert_eq!(bytes[0], 0x84);
    let mut bad = bytes.clone();
    bad[0] = 0x9f;
    bad.push(0xff);
    rejects(
        h.verify_bytes(&bad),
        VerifyError::Decode(CodecError::NonCanonical),
        101,
    );
}

#[test]
fn v1_trailing_bytes() {
    let h = OneHop::new();
    let mut bytes = h.package().to_cbor();
    accepts(h.verify_bytes(&bytes));
    bytes.push(0x00);
    rejects(
        h.verify_bytes(&bytes),
        VerifyError::Decode(CodecError::TrailingBytes),
        101,
    );
    // A second copy of the whole package is trailing bytes too.
    let one = h.package().to_cbor();
    rejects(
        h.verify_bytes(&[one.clone(), one].concat()),
        VerifyError::Decode(CodecError::TrailingBytes),
        101,
    );
}

#[test]
fn v1_truncated_package() {
    let h = OneHop::new();
    let bytes = h.package().to_cbor();
    accepts(h.verify_bytes(&bytes));
    for n in 0..bytes.len() {
        rejects(
            h.verify_bytes(&bytes[..n]),
            VerifyError::Decode(CodecError::Truncated),
            101,
        );
    }
}

#[test]
fn v1_unknown_version() {
    let h = OneHop::new();
    let bytes = h.package().to_cbor();
    // [0x84, version, [0x86, version, …
    assert_eq!(&bytes[..4], &[0x84, 0x01, 0x86, 0x01]);
    for at in [1, 3] {
        let mut bad = bytes.clone();
        bad[at] = 0x02;
        rejects(
            h.verify_bytes(&bad),
            VerifyError::Decode(CodecError::UnsupportedVersion),
            101,
        );
    }
}

#[test]
fn v1_unknown_codes() {
    let h = OneHop::new();
    let bytes = h.package().to_cbor();
    // The transfer's signature list: [bstr(65) = suite || sig] after the counter.
    let at = find(
        &bytes,
        &[&[0x50][..], &NONCE[..], &[0x07, 0x81, 0x58, 0x41]].concat(),
    ) + 21;
    assert_eq!(bytes[at], ED as u8);
    let mut bad = bytes.clone();
    bad[at] = 0x07;
    rejects(
        h.verify_bytes(&bad),
        VerifyError::Decode(CodecError::UnknownCode),
        101,
    );
    // A known suite code decodes but no longer matches the key.
    bad[at] = P256 as u8;
    rejects(h.verify_bytes(&bad), VerifyError::SuiteMismatch, 802);
}

// ---------------------------------------------------------------- V2 history budget

#[test]
fn v2_history_budget_boundary() {
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[ED], 100, &[90, 80, 70]);
    let records = pkg.ancestry.len();
    assert_eq!(records, 3);
    let at = |budget| VerifyParams {
        epoch: book.scheme.epoch,
        history_records_max: budget,
        signature_batch_max: usize::MAX,
    };
    accepts(book.verify_at(&pkg, &exp, at(records)));
    rejects(
        book.verify_at(&pkg, &exp, at(records - 1)),
        VerifyError::HistoryBudgetExceeded {
            records,
            budget: records - 1,
        },
        201,
    );
}

// ---------------------------------------------------------------- V3 ancestry structure

#[test]
fn v3_duplicate_record() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let mut bad = pkg.clone();
    bad.ancestry.push(bad.ancestry[0].clone());
    rejects(h.verify(&bad), VerifyError::DuplicateRecord, 301);
    // The transfer itself listed in its own ancestry.
    let mut bad = pkg.clone();
    bad.ancestry.push(Record::Transfer(pkg.transfer.clone()));
    rejects(h.verify(&bad), VerifyError::DuplicateRecord, 301);
}

#[test]
fn v3_missing_ancestor() {
    let h = OneHop::new();
    let mut bad = h.package();
    bad.ancestry.clear();
    rejects(h.verify(&bad), VerifyError::MissingAncestor, 302);
    // In a chain, a record in the middle left out.
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[ED], 100, &[90, 80, 70]);
    accepts(book.verify(&pkg, &exp));
    let mut bad = pkg.clone();
    bad.ancestry.remove(1);
    rejects(book.verify(&bad, &exp), VerifyError::MissingAncestor, 302);
}

#[test]
fn v3_misordered_ancestry() {
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[ED], 100, &[90, 80]);
    accepts(book.verify(&pkg, &exp));
    // Child before parent: [T1, Issue] instead of [Issue, T1].
    let mut bad = pkg.clone();
    bad.ancestry.swap(0, 1);
    rejects(book.verify(&bad, &exp), VerifyError::MissingAncestor, 302);
}

#[test]
fn v3_unreachable_padding_record() {
    let mut h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let payer = h.payer;
    let pad = h.book.scheme.issue(payer, 5);
    for at in [0, 1] {
        let mut bad = pkg.clone();
        bad.ancestry.insert(at, Record::Issue(pad.clone()));
        rejects(h.verify(&bad), VerifyError::UnreachableRecord, 303);
    }
}

// ---------------------------------------------------------------- V4 references and shape

#[test]
fn v4_unknown_output() {
    let h = OneHop::new();
    accepts(h.verify(&h.package_with(|t| t.inputs[0].index = 0)));
    rejects(
        h.verify(&h.package_with(|t| t.inputs[0].index = 1)),
        VerifyError::UnknownOutput,
        401,
    );
    // Inside the ancestry: the second hop spends output 2 of a two-output record.
    let mut book = Book::new(ED);
    let (a, b, c) = (book.party("a"), book.party("b"), book.party("c"));
    let coin = book.issue(a, 100);
    let t1 = book.transfer(&[coin], &[(b, 60), (a, 40)], [1; 16], 1);
    let t1_id = book.commit(&t1);
    for (index, ok) in [(1, true), (2, false)] {
        let t2 = book.transfer(
            &[OutPoint {
                record: t1_id,
                index,
            }],
            &[(b, 40)],
            [index; 16],
            2,
        );
        let t2_id = book.commit(&t2);
        let t3 = book.transfer(
            &[OutPoint {
                record: t2_id,
                index: 0,
            }],
            &[(c, 40)],
            NONCE,
            3,
        );
        let r = book.verify(&book.package(&t3), &expected_of(&t3));
        if ok {
            accepts(r);
        } else {
            rejects(r, VerifyError::UnknownOutput, 401);
        }
    }
}

#[test]
fn v4_empty_record() {
    let h = OneHop::new();
    // A transfer with no outputs.
    rejects(
        h.verify(&h.package_with(|t| t.outputs.clear())),
        VerifyError::EmptyRecord,
        402,
    );
    // A transfer with no inputs (and so no ancestry and no signatures).
    let mut bad = h.package_with(|t| t.inputs.clear());
    assert!(bad.ancestry.is_empty() && bad.transfer.signatures.is_empty());
    bad.certificates.clear();
    rejects(h.verify(&bad), VerifyError::EmptyRecord, 402);
    accepts(h.verify(&h.package_with(|_| {})));
}

// ---------------------------------------------------------------- V5 issuers and DCP keys

#[test]
fn v5_issue_signed_by_untrusted_key() {
    for rogue in [false, true] {
        let mut book = Book::new(ED);
        let payer = book.party("payer");
        let payee = book.party("payee");
        let issuer = if rogue {
            testkit::key(ED, b"rogue-dcp")
        } else {
            book.scheme.dcp.clone()
        };
        let id = book.push_issue(Issue::sign(
            &issuer,
            1,
            21,
            vec![Output {
                value: Amount(10),
                owner: payer,
            }],
        ));
        let t = book.transfer(
            &[OutPoint {
                record: id,
                index: 0,
            }],
            &[(payee, 10)],
            NONCE,
            1,
        );
        let r = book.verify(&book.package(&t), &expected_of(&t));
        if rogue {
            rejects(r, VerifyError::UnknownIssuer, 501);
        } else {
            accepts(r);
        }
    }
}

#[test]
fn v5_issue_signed_by_trusted_key_without_issue_role() {
    for roles in [role::ISSUE, role::CERTIFY | role::REDEEM | role::SYNC] {
        let mut book = Book::new(ED);
        let second = testkit::key(ED, b"dcp-2");
        let cert2 = DcpCertificate::sign(&book.scheme.root, 2, second.public(), roles, 1_000);
        let dcps = vec![book.scheme.dcp_cert.clone(), cert2];
        set_dcps(&mut book.scheme, dcps);
        let payer = book.party("payer");
        let payee = book.party("payee");
        let id = book.push_issue(Issue::sign(
            &second,
            1,
            21,
            vec![Output {
                value: Amount(10),
                owner: payer,
            }],
        ));
        let t = book.transfer(
            &[OutPoint {
                record: id,
                index: 0,
            }],
            &[(payee, 10)],
            NONCE,
            1,
        );
        let r = book.verify(&book.package(&t), &expected_of(&t));
        if roles == role::ISSUE {
            accepts(r);
        } else {
            rejects(r, VerifyError::UnknownIssuer, 501);
        }
    }
}

#[test]
fn v5_pseudonym_certificate_from_untrusted_issuer() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let rogue = testkit::key(ED, b"rogue-dcp");
    let mut bad = pkg.clone();
    bad.certificates[0] =
        PseudonymCertificate::sign(&rogue, h.payer, 11, device_class::PHONE, 0, Vec::new());
    rejects(h.verify(&bad), VerifyError::UnknownIssuer, 501);
    // The same certificate from the trusted DCP is fine.
    let mut good = pkg;
    good.certificates[0] = PseudonymCertificate::sign(
        &h.book.scheme.dcp,
        h.payer,
        11,
        device_class::PHONE,
        0,
        Vec::new(),
    );
    accepts(h.verify(&good));
}

#[test]
fn v5_dcp_certificate_expired() {
    let mut scheme = Scheme::new(ED);
    let all = role::ISSUE | role::CERTIFY | role::REDEEM | role::SYNC;
    scheme.dcp_cert = DcpCertificate::sign(&scheme.root, 1, scheme.dcp.public(), all, 3);
    let dcps = vec![scheme.dcp_cert.clone()];
    set_dcps(&mut scheme, dcps);
    let h = OneHop::in_book(Book::with_scheme(scheme));
    let pkg = h.package();
    let at = |epoch: Epoch| VerifyParams {
        epoch,
        history_records_max: BUDGET,
        signature_batch_max: usize::MAX,
    };
    // Valid through its expiry epoch, refused after it.
    accepts(h.book.verify_at(&pkg, &h.expected(), at(3)));
    rejects(
        h.book.verify_at(&pkg, &h.expected(), at(4)),
        VerifyError::CertificateExpired,
        502,
    );
}

#[test]
fn v5_dcp_key_revoked() {
    let mut h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let dcp_id = h.book.scheme.dcp.public().id();
    h.book.scheme.revoke(&[dcp_id]);
    rejects(h.verify(&pkg), VerifyError::CertificateRevoked, 503);
}

// ---------------------------------------------------------------- V6 token expiry

#[test]
fn v6_token_expired() {
    // The scheme is at epoch 1: expiry 1 is the last good epoch.
    for expiry in [1, 0] {
        let mut book = Book::new(ED);
        let payer = book.party("payer");
        let payee = book.party("payee");
        let dcp = book.scheme.dcp.clone();
        let id = book.push_issue(Issue::sign(
            &dcp,
            1,
            expiry,
            vec![Output {
                value: Amount(10),
                owner: payer,
            }],
        ));
        let t = book.transfer(
            &[OutPoint {
                record: id,
                index: 0,
            }],
            &[(payee, 10)],
            NONCE,
            1,
        );
        let r = book.verify(&book.package(&t), &expected_of(&t));
        if expiry == 1 {
            accepts(r);
        } else {
            rejects(r, VerifyError::TokenExpired, 601);
        }
    }
}

// ---------------------------------------------------------------- V7 certificates

#[test]
fn v7_pseudonym_certificate_expired() {
    let h = OneHop::new();
    let pkg = h.package();
    let dcp = &h.book.scheme.dcp;
    for (expiry, ok) in [(1, true), (0, false)] {
        let mut p = pkg.clone();
        p.certificates[0] =
            PseudonymCertificate::sign(dcp, h.payer, expiry, device_class::PHONE, 0, Vec::new());
        if ok {
            accepts(h.verify(&p));
        } else {
            rejects(h.verify(&p), VerifyError::CertificateExpired, 502);
        }
    }
}

#[test]
fn v7_pseudonym_key_revoked() {
    let mut h = OneHop::new();
    let pkg = h.package();
    // Revoking some other key changes nothing.
    let other = h.payee.id();
    h.book.scheme.revoke(&[other]);
    accepts(h.verify(&pkg));
    let payer = h.payer.id();
    h.book.scheme.revoke(&[payer]);
    rejects(h.verify(&pkg), VerifyError::CertificateRevoked, 503);
}

#[test]
fn v7_missing_certificate() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let mut bad = pkg.clone();
    bad.certificates.clear();
    rejects(h.verify(&bad), VerifyError::MissingCertificate, 701);
    // In a chain, the certificate of a key that signed an ancestry record.
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[ED], 100, &[90, 80]);
    let mut bad = pkg.clone();
    bad.certificates.remove(0);
    rejects(
        book.verify(&bad, &exp),
        VerifyError::MissingCertificate,
        701,
    );
}

#[test]
fn v7_unused_certificate() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    // A certificate for a key that signs nothing.
    let mut extra = pkg.clone();
    extra.certificates.push(h.book.certs[&h.payee].clone());
    rejects(h.verify(&extra), VerifyError::UnusedCertificate, 702);
    // The signer's certificate twice.
    let mut dup = pkg.clone();
    dup.certificates.push(pkg.certificates[0].clone());
    rejects(h.verify(&dup), VerifyError::UnusedCertificate, 702);
}

#[test]
fn v7_bad_certificate_signature() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    for byte in [0, 40] {
        let mut bad = pkg.clone();
        bad.certificates[0].signature = flip(&bad.certificates[0].signature, byte);
        rejects(h.verify(&bad), VerifyError::BadCertificateSignature, 703);
    }
    // A field changed after signing.
    let mut bad = pkg.clone();
    bad.certificates[0].tier = 1;
    rejects(h.verify(&bad), VerifyError::BadCertificateSignature, 703);
}

#[test]
fn v7_small_order_key_certified() {
    // y = 1 encodes the identity, the smallest of the small-order points.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let small = PublicKey::new(ED, &identity).unwrap();
    for bad_key in [false, true] {
        let mut book = Book::new(ED);
        let payee = book.party("payee");
        let owner = if bad_key {
            // Certified by the DCP; no secret key exists, so the book signs with zeros.
            book.certs
                .insert(small, book.scheme.certify(small, device_class::PHONE, 0));
            small
        } else {
            book.party("payer")
        };
        let coin = book.issue(owner, 10);
        let t = book.transfer(&[coin], &[(payee, 10)], NONCE, 1);
        let r = book.verify(&book.package(&t), &expected_of(&t));
        if bad_key {
            rejects(r, VerifyError::BadKey, 704);
        } else {
            accepts(r);
        }
    }
}

// ---------------------------------------------------------------- V8 record signatures

#[test]
fn v8_bad_transfer_signature() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    for byte in [0, 31, 32, 40] {
        let mut bad = pkg.clone();
        bad.transfer.signatures[0] = flip(&bad.transfer.signatures[0], byte);
        rejects(h.verify(&bad), VerifyError::BadSignature, 801);
    }
    // A field changed after signing (not re-signed).
    let mut bad = pkg.clone();
    bad.transfer.counter += 1;
    rejects(h.verify(&bad), VerifyError::BadSignature, 801);
}

#[test]
fn v8_bad_ancestry_transfer_signature() {
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[ED], 100, &[90, 80, 70]);
    accepts(book.verify(&pkg, &exp));
    for i in [1, 2] {
        let mut bad = pkg.clone();
        let Record::Transfer(t) = &mut bad.ancestry[i] else {
            panic!("transfer expected")
        };
        t.signatures[0] = flip(&t.signatures[0], 40);
        rejects(book.verify(&bad, &exp), VerifyError::BadSignature, 801);
    }
}

#[test]
fn v8_bad_issue_signature() {
    let h = OneHop::new();
    let pkg = h.package();
    let mut bad = pkg.clone();
    let Record::Issue(i) = &mut bad.ancestry[0] else {
        panic!("issue expected")
    };
    // Signatures are not part of the record id: the transfer still points at it.
    i.signature = flip(&i.signature, 40);
    assert_eq!(bad.ancestry[0].id(), pkg.ancestry[0].id());
    rejects(h.verify(&bad), VerifyError::BadSignature, 801);
    accepts(h.verify(&pkg));
}

#[test]
fn v8_wrong_signature_count() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let mut none = pkg.clone();
    none.transfer.signatures.clear();
    rejects(h.verify(&none), VerifyError::BadSignature, 801);
    let mut two = pkg.clone();
    two.transfer.signatures.push(pkg.transfer.signatures[0]);
    rejects(h.verify(&two), VerifyError::BadSignature, 801);
    // A merge of two owners signed by only one of them.
    let mut book = Book::new(ED);
    let (a, b) = (book.party("a"), book.party("b"));
    let (pkg, exp) = merge(&mut book, a, b);
    accepts(book.verify(&pkg, &exp));
    let mut one = pkg.clone();
    one.transfer.signatures.pop();
    rejects(book.verify(&one, &exp), VerifyError::BadSignature, 801);
    // Two signatures in the wrong order.
    let mut swapped = pkg;
    swapped.transfer.signatures.swap(0, 1);
    rejects(book.verify(&swapped, &exp), VerifyError::BadSignature, 801);
}

#[test]
fn v8_suite_mismatch() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    // A valid P-256 signature over the transfer id, on the payer's Ed25519 key.
    let p = testkit::key(P256, b"payer");
    let mut bad = pkg.clone();
    bad.transfer.signatures[0] = p.sign(&pkg.transfer.id().0);
    rejects(h.verify(&bad), VerifyError::SuiteMismatch, 802);
}

// ---------------------------------------------------------------- V9 value

#[test]
fn v9_value_not_conserved() {
    let h = OneHop::new();
    accepts(h.verify(&h.package_with(|t| t.outputs[1].value = Amount(750))));
    for change in [749, 751] {
        let bad = h.package_with(|t| t.outputs[1].value = Amount(change));
        rejects(h.verify(&bad), VerifyError::ValueNotConserved, 901);
    }
    // Inside the ancestry.
    let mut book = Book::new(ED);
    let (a, b, c) = (book.party("a"), book.party("b"), book.party("c"));
    let coin = book.issue(a, 100);
    let t1 = book.transfer(&[coin], &[(b, 101)], [1; 16], 1);
    let id = book.commit(&t1);
    let t2 = book.transfer(
        &[OutPoint {
            record: id,
            index: 0,
        }],
        &[(c, 101)],
        [2; 16],
        2,
    );
    rejects(
        book.verify(&book.package(&t2), &expected_of(&t2)),
        VerifyError::ValueNotConserved,
        901,
    );
}

#[test]
fn v9_zero_value_output() {
    let h = OneHop::new();
    // A third output of zero keeps the sums equal.
    let bad = h.package_with(|t| {
        t.outputs.push(Output {
            value: Amount(0),
            owner: h.payer,
        })
    });
    rejects(h.verify(&bad), VerifyError::ZeroValueOutput, 902);
    let good = h.package_with(|t| {
        t.outputs[1].value = Amount(749);
        t.outputs.push(Output {
            value: Amount(1),
            owner: h.payer,
        });
    });
    accepts(h.verify(&good));
    // An Issue with a zero-value output next to the spent one.
    for second in [1, 0] {
        let mut book = Book::new(ED);
        let (payer, payee) = (book.party("payer"), book.party("payee"));
        let dcp = book.scheme.dcp.clone();
        let outs = vec![
            Output {
                value: Amount(10),
                owner: payer,
            },
            Output {
                value: Amount(second),
                owner: payer,
            },
        ];
        let id = book.push_issue(Issue::sign(&dcp, 1, 21, outs));
        let t = book.transfer(
            &[OutPoint {
                record: id,
                index: 0,
            }],
            &[(payee, 10)],
            NONCE,
            1,
        );
        let r = book.verify(&book.package(&t), &expected_of(&t));
        if second == 0 {
            rejects(r, VerifyError::ZeroValueOutput, 902);
        } else {
            accepts(r);
        }
    }
}

#[test]
fn v9_amount_overflow() {
    // Transfer outputs whose sum overflows.
    let h = OneHop::new();
    let bad = h.package_with(|t| t.outputs[1].value = Amount(u64::MAX));
    rejects(h.verify(&bad), VerifyError::AmountOverflow, 903);
    // Transfer inputs whose sum overflows.
    for half in [u64::MAX / 2, u64::MAX / 2 + 1] {
        let mut book = Book::new(ED);
        let (payer, payee) = (book.party("payer"), book.party("payee"));
        let c1 = book.issue(payer, half);
        let c2 = book.issue(payer, half);
        let t = book.transfer(
            &[c1, c2],
            &[(payee, 1), (payer, half.wrapping_mul(2).wrapping_sub(1))],
            NONCE,
            1,
        );
        let r = book.verify(&book.package(&t), &expected_of(&t));
        if half == u64::MAX / 2 {
            accepts(r);
        } else {
            rejects(r, VerifyError::AmountOverflow, 903);
        }
    }
    // Issue outputs whose sum overflows (the spent output alone is fine).
    for first in [u64::MAX - 1, u64::MAX] {
        let mut book = Book::new(ED);
        let (payer, payee) = (book.party("payer"), book.party("payee"));
        let dcp = book.scheme.dcp.clone();
        let outs = vec![
            Output {
                value: Amount(first),
                owner: payer,
            },
            Output {
                value: Amount(1),
                owner: payer,
            },
        ];
        let id = book.push_issue(Issue::sign(&dcp, 1, 21, outs));
        let t = book.transfer(
            &[OutPoint {
                record: id,
                index: 0,
            }],
            &[(payee, 5), (payer, first - 5)],
            NONCE,
            1,
        );
        let r = book.verify(&book.package(&t), &expected_of(&t));
        if first == u64::MAX {
            rejects(r, VerifyError::AmountOverflow, 903);
        } else {
            accepts(r);
        }
    }
}

// ---------------------------------------------------------------- V10 double spends

#[test]
fn v10_same_outpoint_twice_in_one_transfer() {
    let mut book = Book::new(ED);
    let (payer, payee) = (book.party("payer"), book.party("payee"));
    let c1 = book.issue(payer, 1000);
    let c2 = book.issue(payer, 1000);
    // Sums are consistent with counting the input twice; signed properly.
    let outs = [(payee, 250), (payer, 1750)];
    let good = book.transfer(&[c1, c2], &outs, NONCE, 1);
    accepts(book.verify(&book.package(&good), &expected_of(&good)));
    let bad = book.transfer(&[c1, c1], &outs, NONCE, 1);
    rejects(
        book.verify(&book.package(&bad), &expected_of(&bad)),
        VerifyError::OutputSpentTwice,
        1001,
    );
}

#[test]
fn v10_double_spend_inside_the_ancestry() {
    // A pays B with the Issue token, then pays C with the same token again;
    // B and C merge both tokens into one payment to D.
    for double_spend in [false, true] {
        let mut book = Book::new(ED);
        let (a, b, c, d) = (
            book.party("a"),
            book.party("b"),
            book.party("c"),
            book.party("d"),
        );
        let coin = book.issue(a, 100);
        let other = book.issue(a, 100);
        let t1 = book.transfer(&[coin], &[(b, 100)], [1; 16], 1);
        let t1_id = book.commit(&t1);
        let second = if double_spend { coin } else { other };
        let t2 = book.transfer(&[second], &[(c, 100)], [2; 16], 2);
        let t2_id = book.commit(&t2);
        let t3 = book.transfer(
            &[
                OutPoint {
                    record: t1_id,
                    index: 0,
                },
                OutPoint {
                    record: t2_id,
                    index: 0,
                },
            ],
            &[(d, 200)],
            NONCE,
            3,
        );
        let pkg = book.package(&t3);
        let r = book.verify(&pkg, &expected_of(&t3));
        if double_spend {
            assert_eq!(pkg.ancestry.len(), 3);
            rejects(r, VerifyError::OutputSpentTwice, 1001);
        } else {
            assert_eq!(pkg.ancestry.len(), 4);
            accepts(r);
        }
    }
}

// ---------------------------------------------------------------- V11 the payment

#[test]
fn v11_wrong_payee() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let exp = Expected {
        payee: h.payer,
        ..h.expected()
    };
    rejects(h.book.verify(&pkg, &exp), VerifyError::WrongPayee, 1101);
    // Payment and change swapped: the payee is paid, but not in output 0.
    let swapped = h.package_with(|t| t.outputs.swap(0, 1));
    rejects(h.verify(&swapped), VerifyError::WrongPayee, 1101);
}

#[test]
fn v11_wrong_amount() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let exp = Expected {
        amount: Amount(251),
        ..h.expected()
    };
    rejects(h.book.verify(&pkg, &exp), VerifyError::WrongAmount, 1102);
    let less = h.package_with(|t| {
        t.outputs[0].value = Amount(249);
        t.outputs[1].value = Amount(751);
    });
    rejects(h.verify(&less), VerifyError::WrongAmount, 1102);
}

#[test]
fn v11_wrong_nonce() {
    let h = OneHop::new();
    let pkg = h.package();
    accepts(h.verify(&pkg));
    let exp = Expected {
        nonce: [0; 16],
        ..h.expected()
    };
    rejects(h.book.verify(&pkg, &exp), VerifyError::WrongNonce, 1103);
    let other = h.package_with(|t| t.nonce[15] ^= 1);
    rejects(h.verify(&other), VerifyError::WrongNonce, 1103);
}

// ---------------------------------------------------------------- V12 trust anchors

#[test]
fn v12_trust_objects_must_be_root_signed() {
    let s = Scheme::new(ED);
    let root = s.root.public();
    let rogue = testkit::key(ED, b"rogue-root");
    let want = Some(VerifyError::BadTrustSignature);
    assert!(TrustStore::new(root, s.policy.clone(), s.revocations.clone()).is_ok());
    assert_eq!(VerifyError::BadTrustSignature.code(), 1201);
    // Policy signed by another key.
    let p = Policy::sign(
        &rogue,
        1,
        "XTS",
        s.policy.tiers.clone(),
        s.policy.dcps.clone(),
    );
    assert_eq!(TrustStore::new(root, p, s.revocations.clone()).err(), want);
    // Revocation list signed by another key.
    let l = RevocationList::sign(&rogue, 1, 1, Vec::new());
    assert_eq!(TrustStore::new(root, s.policy.clone(), l).err(), want);
    // A root-signed policy carrying a DCP certificate the root did not sign.
    let dcp2 = testkit::key(ED, b"dcp-2").public();
    let rogue_cert = DcpCertificate::sign(&rogue, 2, dcp2, role::ISSUE, 1_000);
    let good_cert = DcpCertificate::sign(&s.root, 2, dcp2, role::ISSUE, 1_000);
    let with = |c: DcpCertificate| {
        Policy::sign(
            &s.root,
            2,
            "XTS",
            s.policy.tiers.clone(),
            vec![s.dcp_cert.clone(), c],
        )
    };
    assert_eq!(
        TrustStore::new(root, with(rogue_cert), s.revocations.clone()).err(),
        want
    );
    assert!(TrustStore::new(root, with(good_cert.clone()), s.revocations.clone()).is_ok());
    // Updates: refused when not root-signed, applied when they are.
    let mut t = s.trust();
    let p2 = Policy::sign(
        &rogue,
        2,
        "XTS",
        s.policy.tiers.clone(),
        s.policy.dcps.clone(),
    );
    assert_eq!(t.update_policy(p2).err(), want);
    assert_eq!(t.policy().serial, 1);
    assert_eq!(t.update_policy(with(good_cert)), Ok(true));
    assert_eq!(t.policy().serial, 2);
    assert_eq!(
        t.update_revocations(RevocationList::sign(&rogue, 2, 1, Vec::new()))
            .err(),
        want
    );
    assert_eq!(
        t.update_revocations(RevocationList::sign(&s.root, 2, 1, Vec::new())),
        Ok(true)
    );
    // Older or equal serials are ignored, signed or not.
    assert_eq!(
        t.update_revocations(RevocationList::sign(&s.root, 2, 1, Vec::new())),
        Ok(false)
    );
}

// ---------------------------------------------------------------- certificate cache

fn verify_cached(
    pkg: &Package,
    exp: &Expected,
    trust: &TrustStore,
    epoch: Epoch,
    cache: &mut dyn CertCache,
) -> Result<VerifiedPackage, VerifyError> {
    let params = VerifyParams {
        epoch,
        history_records_max: BUDGET,
        signature_batch_max: usize::MAX,
    };
    verify::verify_package(pkg.clone(), exp, trust, params, cache)
}

#[test]
fn cert_cache_saves_signature_checks() {
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &[ED], 100, &[90, 80, 70]);
    let trust = book.scheme.trust();
    let mut cache = BoundedCertCache::new(16);
    let first = accepts(verify_cached(&pkg, &exp, &trust, 1, &mut cache));
    // 1 Issue + 3 certificates + 3 transfers, then the certificates are cached.
    assert_eq!(first.signature_checks(), 7);
    let second = accepts(verify_cached(&pkg, &exp, &trust, 1, &mut cache));
    assert_eq!(second.signature_checks(), 4);
    // A bounded cache that is full admits nothing: no savings.
    let mut tiny = BoundedCertCache::new(0);
    accepts(verify_cached(&pkg, &exp, &trust, 1, &mut tiny));
    assert_eq!(
        accepts(verify_cached(&pkg, &exp, &trust, 1, &mut tiny)).signature_checks(),
        7
    );
}

#[test]
fn failed_verification_caches_nothing() {
    let h = OneHop::new();
    let pkg = h.package();
    let trust = h.book.scheme.trust();
    let mut cache = BoundedCertCache::new(16);
    let mut bad = pkg.clone();
    bad.transfer.signatures[0] = flip(&bad.transfer.signatures[0], 40);
    rejects(
        verify_cached(&bad, &h.expected(), &trust, 1, &mut cache),
        VerifyError::BadSignature,
        801,
    );
    assert!(!cache.contains(&pkg.certificates[0].id()));
    assert_eq!(
        accepts(verify_cached(&pkg, &h.expected(), &trust, 1, &mut cache)).signature_checks(),
        3
    );
    assert!(cache.contains(&pkg.certificates[0].id()));
}

#[test]
fn cached_certificate_is_still_checked_for_revocation_and_expiry() {
    let mut h = OneHop::new();
    let pkg = h.package();
    let exp = h.expected();
    let mut cache = BoundedCertCache::new(16);
    let trust = h.book.scheme.trust();
    accepts(verify_cached(&pkg, &exp, &trust, 1, &mut cache));
    assert!(cache.contains(&pkg.certificates[0].id()));
    assert_eq!(
        accepts(verify_cached(&pkg, &exp, &trust, 1, &mut cache)).signature_checks(),
        2
    );
    // Expiry: the certificate is valid through epoch 11, the token through 21.
    assert_eq!(pkg.certificates[0].expiry_epoch, 11);
    accepts(verify_cached(&pkg, &exp, &trust, 11, &mut cache));
    rejects(
        verify_cached(&pkg, &exp, &trust, 12, &mut cache),
        VerifyError::CertificateExpired,
        502,
    );
    // Revocation after caching.
    let payer = h.payer.id();
    h.book.scheme.revoke(&[payer]);
    let revoked = h.book.scheme.trust();
    rejects(
        verify_cached(&pkg, &exp, &revoked, 1, &mut cache),
        VerifyError::CertificateRevoked,
        503,
    );
    // A cached certificate id does not vouch for a tampered certificate.
    let mut bad = pkg.clone();
    bad.certificates[0].tier = 1;
    rejects(
        verify_cached(&bad, &exp, &trust, 1, &mut cache),
        VerifyError::BadCertificateSignature,
        703,
    );
}

// ---------------------------------------------------------------- byte flips

#[test]
fn every_single_byte_flip_of_a_one_hop_package_is_rejected() {
    let h = OneHop::new();
    let bytes = h.package().to_cbor();
    let trust = h.book.scheme.trust();
    let params = h.book.scheme.params(BUDGET);
    let exp = h.expected();
    accepts(verify::verify_package_bytes(
        &bytes,
        &exp,
        &trust,
        params,
        &mut NoCache,
    ));
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            let r = verify::verify_package_bytes(&b, &exp, &trust, params, &mut NoCache);
            assert!(r.is_err(), "byte {i} ^ {mask:#04x} accepted");
        }
    }
}

// ---------------------------------------------------------------- properties

/// A random chain: issue value, per-hop payment fractions, per-party suites.
fn chain_params() -> impl Strategy<Value = (u64, Vec<u64>, Vec<bool>)> {
    (
        1u64..=1_000_000,
        prop::collection::vec(any::<u64>(), 1..=8),
        prop::collection::vec(any::<bool>(), 9),
    )
}

fn build_chain(value: u64, draws: &[u64], p256: &[bool]) -> (Book, Package, Expected) {
    let mut held = value;
    let pays: Vec<u64> = draws
        .iter()
        .map(|d| {
            held = 1 + d % held;
            held
        })
        .collect();
    let suites: Vec<Suite> = p256.iter().map(|&p| if p { P256 } else { ED }).collect();
    let mut book = Book::new(ED);
    let (pkg, exp) = chain(&mut book, &suites, value, &pays);
    (book, pkg, exp)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_valid_chains_verify((value, draws, p256) in chain_params()) {
        let (book, pkg, exp) = build_chain(value, &draws, &p256);
        prop_assert_eq!(pkg.ancestry.len(), draws.len());
        let bytes = pkg.to_cbor();
        let decoded = Package::from_cbor(&bytes);
        prop_assert_eq!(decoded.as_ref(), Ok(&pkg));
        let v = verify::verify_package_bytes(&bytes, &exp, &book.scheme.trust(), book.scheme.params(BUDGET), &mut NoCache);
        prop_assert!(v.is_ok(), "{:?}", v.err());
    }

    #[test]
    fn any_single_byte_flip_is_rejected(
        (value, draws, p256) in chain_params(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let (book, pkg, exp) = build_chain(value, &draws, &p256);
        let mut bytes = pkg.to_cbor();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        let r = verify::verify_package_bytes(&bytes, &exp, &book.scheme.trust(), book.scheme.params(BUDGET), &mut NoCache);
        prop_assert!(r.is_err(), "byte {} ^ {:#04x} accepted", i, mask);
    }
}

// ------------------------------------------------ payment streams (SV1–SV5)

mod streams {
    //! The value binding of a payment stream (SPEC §4.10, decision 0020):
    //! an OPEN locks `price · ticks` on one output for the payee; the
    //! payee's claim consumes that output and pays `k · price`, the payer's
    //! refund consumes the payer half `(open, 0x80 | i)` and pays the rest.
    use super::*;
    use tally_core::stream::{StreamAsk, StreamOpenTerms, chain_walk, stream_id};

    const PRICE: u64 = 3;
    const TICKS: u32 = 10;

    struct Stream {
        book: Book,
        payer: PublicKey,
        payee: PublicKey,
        other: PublicKey,
        seed: Hash32,
        open: Transfer,
    }

    fn ask() -> StreamAsk {
        StreamAsk {
            price: Amount(PRICE),
            ticks_max: TICKS,
        }
    }

    impl Stream {
        /// The payer (Issue of 100) opens a stream of 10 ticks at 3 for the
        /// payee: output 0 locks 30, output 1 is the change of 70.
        fn new() -> Stream {
            let mut book = Book::new(ED);
            let payer = book.party("payer");
            let payee = book.party("payee");
            let other = book.party("other");
            let coin = book.issue(payer, 100);
            let seed = Hash32([7; 32]);
            let terms = StreamOpenTerms {
                index: 0,
                refund_key: payer,
                ask: ask(),
                anchor: chain_walk(seed, TICKS),
            };
            let mut open = book.transfer(&[coin], &[(payee, 30), (payer, 70)], NONCE, 1);
            open.stream = Some(Box::new(StreamPart::Open(terms)));
            book.sign(&mut open);
            Stream {
                book,
                payer,
                payee,
                other,
                seed,
                open,
            }
        }

        fn commit_open(&mut self) -> Hash32 {
            let open = self.open.clone();
            self.book.commit(&open)
        }

        fn element(&self, k: u32) -> Hash32 {
            chain_walk(self.seed, TICKS - k)
        }

        /// A close of `half` with `part`, paying `value` to `to`.
        fn close(&self, input: OutPoint, part: StreamPart, to: PublicKey, value: u64) -> Transfer {
            let mut t = self.book.transfer(&[input], &[(to, value)], [0; 16], 2);
            t.stream = Some(Box::new(part));
            self.book.sign(&mut t);
            t
        }

        fn expected_open(&self) -> Expected {
            Expected {
                payee: self.payee,
                amount: Amount(30),
                nonce: NONCE,
                stream: Some(ask()),
            }
        }

        fn settle(&self, pkg: &Package) -> Result<VerifiedPackage, VerifyError> {
            verify::verify_package_for_settlement(
                pkg.clone(),
                &self.book.scheme.trust(),
                self.book.scheme.params(BUDGET),
                &mut NoCache,
            )
        }

        /// `t` paid on to `other` as a one-off payment, and what it asked.
        fn pay_on(&mut self, t: &Transfer, value: u64) -> (Package, Expected) {
            let id = self.book.commit(t);
            let pay = self.book.transfer(
                &[OutPoint {
                    record: id,
                    index: 0,
                }],
                &[(self.other, value)],
                NONCE,
                3,
            );
            let pkg = self.book.package(&pay);
            (pkg, expected_of(&pay))
        }
    }

    fn payee_half(open: Hash32) -> OutPoint {
        OutPoint {
            record: open,
            index: 0,
        }
    }
    fn payer_half(open: Hash32) -> OutPoint {
        OutPoint {
            record: open,
            index: STREAM_REFUND_FLAG,
        }
    }

    #[test]
    fn the_open_is_the_payment_the_stream_request_asked_for() {
        let s = Stream::new();
        let pkg = s.book.package(&s.open);
        accepts(s.book.verify(&pkg, &s.expected_open()));
        // SV5: the same transfer against a one-off request, another price,
        // or a one-off payment against the stream request: refused.
        let mut one_off = s.expected_open();
        one_off.stream = None;
        rejects(
            s.book.verify(&pkg, &one_off),
            VerifyError::WrongStream,
            1106,
        );
        let mut dearer = s.expected_open();
        dearer.stream = Some(StreamAsk {
            price: Amount(6),
            ticks_max: 5,
        });
        rejects(s.book.verify(&pkg, &dearer), VerifyError::WrongStream, 1106);
        let mut plain = s.open.clone();
        plain.stream = None;
        s.book.sign(&mut plain);
        rejects(
            s.book.verify(&s.book.package(&plain), &s.expected_open()),
            VerifyError::WrongStream,
            1106,
        );
        // The stream id names the stream output of this OPEN.
        assert_ne!(stream_id(&s.open.id(), 0), stream_id(&s.open.id(), 1));
    }

    #[test]
    fn sv1_terms_must_fit_the_output() {
        let s = Stream::new();
        for bad in [
            // value 30 ≠ 4 · 10
            StreamOpenTerms {
                ask: StreamAsk {
                    price: Amount(4),
                    ticks_max: TICKS,
                },
                ..terms_of(&s.open)
            },
            // no output 5
            StreamOpenTerms {
                index: 5,
                ..terms_of(&s.open)
            },
            // zero price
            StreamOpenTerms {
                ask: StreamAsk {
                    price: Amount(0),
                    ticks_max: TICKS,
                },
                ..terms_of(&s.open)
            },
        ] {
            let mut t = s.open.clone();
            t.stream = Some(Box::new(StreamPart::Open(bad)));
            s.book.sign(&mut t);
            let mut exp = s.expected_open();
            exp.stream = Some(bad.ask);
            rejects(
                s.book.verify(&s.book.package(&t), &exp),
                VerifyError::StreamTerms,
                404,
            );
        }
    }

    fn terms_of(t: &Transfer) -> StreamOpenTerms {
        match t.stream.as_deref() {
            Some(StreamPart::Open(terms)) => *terms,
            _ => panic!("not an OPEN"),
        }
    }

    #[test]
    fn claim_and_refund_are_tokens_that_pay_on() {
        let mut s = Stream::new();
        let open = s.commit_open();
        // The payee took 4 ticks: its claim pays 12; the payer released 4:
        // its refund pays 18.
        let claim = s.close(
            payee_half(open),
            StreamPart::Claim {
                ticks: 4,
                element: s.element(4),
            },
            s.payee,
            12,
        );
        let refund = s.close(
            payer_half(open),
            StreamPart::Refund { ticks: 4 },
            s.payer,
            18,
        );
        let (pkg, exp) = s.pay_on(&claim, 12);
        accepts(s.book.verify(&pkg, &exp));
        accepts(s.settle(&pkg));
        let (pkg, exp) = s.pay_on(&refund, 18);
        let v = accepts(s.book.verify(&pkg, &exp));
        // The payer half is consumed under its own outpoint, distinct from
        // the stream output: the spent registry holds each once.
        assert!(
            v.package()
                .ancestry
                .iter()
                .flat_map(|r| r.inputs())
                .any(|op| *op == payer_half(open))
        );
        accepts(s.settle(&pkg));
    }

    #[test]
    fn sv2_a_half_is_consumed_only_by_its_own_close() {
        let mut s = Stream::new();
        let open = s.commit_open();
        // The payee spends the stream output as if it were 30 of its own.
        let spend = s
            .book
            .transfer(&[payee_half(open)], &[(s.other, 30)], NONCE, 3);
        rejects(
            s.book.verify(&s.book.package(&spend), &expected_of(&spend)),
            VerifyError::StreamSpend,
            405,
        );
        // The payer spends its half as an ordinary 30.
        let spend = s
            .book
            .transfer(&[payer_half(open)], &[(s.other, 30)], NONCE, 3);
        rejects(
            s.book.verify(&s.book.package(&spend), &expected_of(&spend)),
            VerifyError::StreamSpend,
            405,
        );
        // A refund on the payee's half, a claim on the payer's.
        for (input, part) in [
            (payee_half(open), StreamPart::Refund { ticks: 4 }),
            (
                payer_half(open),
                StreamPart::Claim {
                    ticks: 4,
                    element: s.element(4),
                },
            ),
        ] {
            let t = s.close(input, part, s.payee, 18);
            let (pkg, exp) = s.pay_on(&t, 18);
            rejects(s.book.verify(&pkg, &exp), VerifyError::StreamSpend, 405);
        }
        // A claim on an ordinary output (the OPEN's change).
        let t = s.close(
            OutPoint {
                record: open,
                index: 1,
            },
            StreamPart::Claim {
                ticks: 4,
                element: s.element(4),
            },
            s.payer,
            12,
        );
        let (pkg, exp) = s.pay_on(&t, 12);
        rejects(s.book.verify(&pkg, &exp), VerifyError::StreamSpend, 405);
    }

    #[test]
    fn sv3_a_close_pays_exactly_its_ticks() {
        let mut s = Stream::new();
        let open = s.commit_open();
        let cases = [
            // claims 4 ticks, pays 15
            (
                payee_half(open),
                StreamPart::Claim {
                    ticks: 4,
                    element: s.element(4),
                },
                15,
            ),
            // claims 11 of 10 ticks
            (
                payee_half(open),
                StreamPart::Claim {
                    ticks: 11,
                    element: s.element(4),
                },
                33,
            ),
            // refunds as if 2 released, but takes the value of 0
            (payer_half(open), StreamPart::Refund { ticks: 2 }, 30),
            // refund counting more ticks than the stream has
            (payer_half(open), StreamPart::Refund { ticks: 11 }, 3),
        ];
        for (input, part, value) in cases {
            let t = s.close(input, part, s.payee, value);
            let (pkg, exp) = s.pay_on(&t, value);
            rejects(
                s.book.verify(&pkg, &exp),
                VerifyError::StreamCloseValue,
                908,
            );
        }
    }

    #[test]
    fn sv4_settlement_walks_a_claim_to_the_anchor() {
        let mut s = Stream::new();
        let open = s.commit_open();
        // The payer released 4; a broken payee SE claims 7 with an element
        // it cannot have (a preimage of the chain).
        let forged = s.close(
            payee_half(open),
            StreamPart::Claim {
                ticks: 7,
                element: Hash32([9; 32]),
            },
            s.payee,
            21,
        );
        let (pkg, exp) = s.pay_on(&forged, 21);
        // A device does not walk the chain (up to 65,536 hashes): it relies
        // on the claiming SE; settlement does and refuses.
        accepts(s.book.verify(&pkg, &exp));
        rejects(s.settle(&pkg), VerifyError::StreamChain, 909);
        // The element of tick 4 presented as tick 5 does not reach either.
        let shifted = s.close(
            payee_half(open),
            StreamPart::Claim {
                ticks: 5,
                element: s.element(4),
            },
            s.payee,
            15,
        );
        let (pkg, _) = s.pay_on(&shifted, 15);
        rejects(s.settle(&pkg), VerifyError::StreamChain, 909);
    }

    #[test]
    fn a_half_closed_twice_is_a_double_spend() {
        let mut s = Stream::new();
        let open = s.commit_open();
        let a = s.close(
            payer_half(open),
            StreamPart::Refund { ticks: 4 },
            s.payer,
            18,
        );
        let b = s.close(
            payer_half(open),
            StreamPart::Refund { ticks: 2 },
            s.payer,
            24,
        );
        let a_id = s.book.commit(&a);
        let b_id = s.book.commit(&b);
        let merge = s.book.transfer(
            &[
                OutPoint {
                    record: a_id,
                    index: 0,
                },
                OutPoint {
                    record: b_id,
                    index: 0,
                },
            ],
            &[(s.other, 42)],
            NONCE,
            4,
        );
        rejects(
            s.book.verify(&s.book.package(&merge), &expected_of(&merge)),
            VerifyError::OutputSpentTwice,
            1001,
        );
    }

    #[test]
    fn stream_records_and_requests_round_trip() {
        let mut s = Stream::new();
        let open = s.commit_open();
        let claim = s.close(
            payee_half(open),
            StreamPart::Claim {
                ticks: 4,
                element: s.element(4),
            },
            s.payee,
            12,
        );
        for t in [s.open.clone(), claim] {
            let bytes = t.to_cbor();
            assert_eq!(Transfer::from_cbor(&bytes).unwrap(), t);
        }
        // The stream part is in the body: the id changes with it.
        let mut plain = s.open.clone();
        plain.stream = None;
        assert_ne!(plain.id(), s.open.id());
        let key = testkit::key(ED, b"payee");
        let cert = s.book.certs[&s.payee].clone();
        let req = tally_core::Request::try_sign_stream(&key, ask(), NONCE, cert.clone(), 3)
            .unwrap()
            .unwrap();
        assert_eq!(req.amount, Amount(30));
        req.verify().unwrap();
        let back = tally_core::Request::from_cbor(&req.to_cbor()).unwrap();
        assert_eq!(back, req);
        // A terminal turning the stream request into a one-off payment of
        // the same amount breaks the payee's signature.
        let mut one_off = req.clone();
        one_off.stream = None;
        assert!(one_off.verify().is_err());
        // Terms no stream may have are no request.
        assert!(
            tally_core::Request::try_sign_stream(
                &key,
                StreamAsk {
                    price: Amount(1),
                    ticks_max: 0,
                },
                NONCE,
                cert,
                3,
            )
            .unwrap()
            .is_none()
        );
    }
}
