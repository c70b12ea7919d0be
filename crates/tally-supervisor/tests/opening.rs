//! Escrow opening end to end: k-of-n key setup, requests, verifiable
//! shares, combination, and the audit log that records every step.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::CompressedRistretto;
use tally_core::codec::{Cbor, CodecError};
use tally_core::crypto::{Entropy, SecretKey};
use tally_core::escrow::{self, EscrowError, IdPoint};
use tally_core::testkit::{self, TestEntropy};
use tally_core::{Hash32, Suite};
use tally_supervisor::audit::{self, Checkpoint};
use tally_supervisor::{
    AuditFault, AuditLog, DecryptionShare, Entry, EntryKind, IdTable, JointParams, OpeningRequest,
    OpeningResult, RequestEscrow, ShareFault, SupervisorError, SupervisorKey, combine, key_setup,
    share,
};

struct Fx {
    joint: JointParams,
    keys: Vec<SupervisorKey>,
    audit: Vec<SecretKey>,
    ses: Vec<(Hash32, IdPoint)>,
    table: IdTable,
    log: AuditLog,
    rng: TestEntropy,
}

fn audit_keys(label: &str, n: usize) -> Vec<SecretKey> {
    (0..n)
        .map(|i| testkit::key(Suite::Ed25519, format!("{label}-{i}").as_bytes()))
        .collect()
}

fn fixture(k: usize, n: usize) -> Fx {
    fixture_named("supervisor", k, n)
}

fn fixture_named(label: &str, k: usize, n: usize) -> Fx {
    let audit = audit_keys(label, n);
    let pks: Vec<_> = audit.iter().map(SecretKey::public).collect();
    let mut rng = TestEntropy::new(label.as_bytes());
    let (joint, keys) = key_setup(k, &pks, &mut rng).unwrap();
    let ses: Vec<(Hash32, IdPoint)> = (1..=4u8)
        .map(|i| {
            let mut salt = [0u8; 32];
            rng.fill(&mut salt);
            let se_id = Hash32([i; 32]);
            (se_id, IdPoint::derive(&se_id, &salt))
        })
        .collect();
    let mut table = IdTable::new();
    for (id, p) in &ses {
        assert!(table.insert(*id, p.digest()));
    }
    let log = AuditLog::new(&joint, &audit[0]).unwrap();
    Fx {
        joint,
        keys,
        audit,
        ses,
        table,
        log,
        rng,
    }
}

impl Fx {
    /// Supervisor `filer` logs a request to open a fresh escrow of SE `se`.
    fn file(&mut self, se: usize, filed_at: u64, filer: usize) -> Hash32 {
        let e = escrow::create(self.joint.joint_key(), &self.ses[se].1, &mut self.rng);
        let req = OpeningRequest::new(
            &e.to_bytes(),
            "mds-case-2026-0017",
            "double spend of 2500 by a cloned card at epoch 12",
            filed_at,
        )
        .unwrap();
        self.log.append_request(&req, &self.audit[filer]).unwrap()
    }

    fn share_of(&mut self, request: &Hash32, i: usize) -> DecryptionShare {
        let r = self.log.request(request).unwrap();
        share(&self.keys[i], &r, &mut self.rng).unwrap()
    }

    /// Supervisor `i` shares and logs its share.
    fn give(&mut self, request: &Hash32, i: usize) -> DecryptionShare {
        let s = self.share_of(request, i);
        self.log.append_share(&s, &self.audit[i]).unwrap();
        s
    }

    /// A full opening by `who`, logged; returns the result.
    fn open(&mut self, request: &Hash32, who: &[usize]) -> OpeningResult {
        let shares: Vec<_> = who.iter().map(|&i| self.give(request, i)).collect();
        let r = self.log.request(request).unwrap();
        let opening = combine(&self.joint, &r, &shares).unwrap();
        let se_id = self.table.se_id(&opening.point());
        self.log
            .append_result(&opening, se_id, &self.audit[who[0]])
            .unwrap();
        self.log.result(request).unwrap().clone()
    }
}

/// A share point moved by the base point, keeping the original proof.
fn forge(s: &DecryptionShare) -> DecryptionShare {
    let d = CompressedRistretto(s.share_bytes()).decompress().unwrap();
    let moved = (d + RISTRETTO_BASEPOINT_POINT).compress().to_bytes();
    DecryptionShare::from_parts(s.request_id(), s.index(), moved, s.proof_bytes()).unwrap()
}

#[test]
fn every_three_of_five_recover_the_right_se_id() {
    let mut fx = fixture(3, 5);
    let mut n = 0;
    for a in 0..5 {
        for b in a + 1..5 {
            for c in b + 1..5 {
                let req = fx.file(1, n, a);
                let res = fx.open(&req, &[c, a, b]);
                assert_eq!(res.point, fx.ses[1].1);
                assert_eq!(res.se_id, Some(fx.ses[1].0));
                assert_eq!(res.used, vec![a as u8, b as u8, c as u8]);
                assert!(res.rejected.is_empty());
                n += 1;
            }
        }
    }
    assert_eq!(n, 10);
    let summary = fx.log.verify().unwrap();
    assert_eq!(summary.openings.len(), 10);
    assert_eq!(summary.shares, 30);
}

#[test]
fn k_minus_one_shares_do_not_open() {
    let mut fx = fixture(3, 5);
    let req = fx.file(0, 1, 0);
    let s0 = fx.give(&req, 0);
    let s3 = fx.give(&req, 3);
    let r = fx.log.request(&req).unwrap();
    assert_eq!(
        combine(&fx.joint, &r, &[s0, s3]),
        Err(SupervisorError::NotEnoughShares {
            valid: 2,
            needed: 3,
            rejected: vec![]
        })
    );
    // Repeating a share does not make it count twice.
    assert_eq!(
        combine(&fx.joint, &r, &[s0, s3, s0]),
        Err(SupervisorError::NotEnoughShares {
            valid: 2,
            needed: 3,
            rejected: vec![0]
        })
    );

    // Nor can a result naming only two logged shares enter the log, even
    // when it claims the right point and is properly signed.
    let forged = OpeningResult {
        request_id: req,
        point: fx.ses[0].1,
        se_id: Some(fx.ses[0].0),
        used: vec![0, 3],
        rejected: vec![],
        escrow_proof_checked: true,
    };
    let mut entries = fx.log.entries().to_vec();
    entries.push(signed(
        &entries,
        EntryKind::Result,
        forged.to_cbor(),
        &fx.audit[0],
    ));
    let err = audit::verify(&entries, &fx.joint, None).unwrap_err();
    assert_eq!((err.seq, err.fault), (4, AuditFault::NotEnoughShares));
    // Naming an unlogged third share does not help either.
    let forged3 = OpeningResult {
        used: vec![0, 1, 3],
        ..forged
    };
    let mut entries = fx.log.entries().to_vec();
    entries.push(signed(
        &entries,
        EntryKind::Result,
        forged3.to_cbor(),
        &fx.audit[0],
    ));
    let err = audit::verify(&entries, &fx.joint, None).unwrap_err();
    assert_eq!((err.seq, err.fault), (4, AuditFault::NotEnoughShares));
}

/// Appends a correctly chained entry signed by `key` (an insider forging).
fn signed(entries: &[Entry], kind: EntryKind, body: Vec<u8>, key: &SecretKey) -> Entry {
    let mut e = Entry {
        seq: entries.len() as u64,
        prev: entries.last().map(Entry::hash).unwrap_or_default(),
        kind,
        body,
        signer: key.public(),
        signature: tally_core::Signature::new(Suite::Ed25519, [0; 64]),
    };
    e.signature = key.sign(&e.signed_message().0);
    e
}

#[test]
fn a_wrong_share_is_rejected_by_its_proof_and_k_others_still_open() {
    let mut fx = fixture(3, 5);
    let req = fx.file(2, 1, 0);
    let s: Vec<_> = (0..5).map(|i| fx.share_of(&req, i)).collect();
    let bad = forge(&s[2]);
    let r = fx.log.request(&req).unwrap();

    let opening = combine(&fx.joint, &r, &[bad, s[0], s[1], s[4]]).unwrap();
    assert_eq!(opening.rejected(), &[2]);
    assert_eq!(opening.used(), &[0, 1, 4]);
    assert_eq!(opening.point(), fx.ses[2].1);
    // Without the k-th valid share the forged one cannot stand in.
    assert!(matches!(
        combine(&fx.joint, &r, &[bad, s[0], s[1]]),
        Err(SupervisorError::NotEnoughShares { valid: 2, .. })
    ));

    // Supervisor 3's share relabelled as supervisor 4's.
    let relabelled =
        DecryptionShare::from_parts(req, 4, s[3].share_bytes(), s[3].proof_bytes()).unwrap();
    // A share made for one request replayed for another.
    let other = fx.file(2, 2, 0);
    let replayed =
        DecryptionShare::from_parts(other, 0, s[0].share_bytes(), s[0].proof_bytes()).unwrap();
    let r = fx.log.request(&req).unwrap();
    let r_other = fx.log.request(&other).unwrap();
    assert!(matches!(
        combine(&fx.joint, &r, &[relabelled, s[0], s[1]]),
        Err(SupervisorError::NotEnoughShares { valid: 2, .. })
    ));
    assert!(matches!(
        combine(&fx.joint, &r_other, &[replayed]),
        Err(SupervisorError::NotEnoughShares { valid: 0, .. })
    ));
    assert!(matches!(
        combine(&fx.joint, &r_other, &[s[0]]),
        Err(SupervisorError::NotEnoughShares { valid: 0, .. })
    ));

    // The log refuses the forged share and stays as it was.
    let before = fx.log.checkpoint();
    assert_eq!(
        fx.log.append_share(&bad, &fx.audit[2]),
        Err(SupervisorError::ShareRejected {
            index: 2,
            fault: ShareFault::BadProof
        })
    );
    assert_eq!(
        fx.log.append_share(&relabelled, &fx.audit[4]),
        Err(SupervisorError::ShareRejected {
            index: 4,
            fault: ShareFault::BadProof
        })
    );
    // A valid share signed by someone else than its supervisor.
    assert_eq!(
        fx.log.append_share(&s[1], &fx.audit[0]),
        Err(SupervisorError::WrongSigner)
    );
    let outsider = testkit::key(Suite::Ed25519, b"outsider");
    assert_eq!(
        fx.log.append_share(&s[1], &outsider),
        Err(SupervisorError::WrongSigner)
    );
    assert_eq!(fx.log.checkpoint(), before);
    fx.log.append_share(&s[1], &fx.audit[1]).unwrap();
    assert!(matches!(
        fx.log.append_share(&s[1], &fx.audit[1]),
        Err(SupervisorError::Audit(e)) if e.fault == AuditFault::DuplicateShare
    ));
}

#[test]
fn every_step_is_in_the_log_and_the_log_verifies() {
    let mut fx = fixture(3, 5);
    let req = fx.file(3, 7, 4);
    let res = fx.open(&req, &[4, 2, 0]);
    assert_eq!(res.se_id, Some(fx.ses[3].0));

    let kinds: Vec<_> = fx.log.entries().iter().map(|e| e.kind).collect();
    use EntryKind::*;
    assert_eq!(kinds, [Setup, Request, Share, Share, Share, Result]);
    let signers: Vec<_> = fx.log.entries().iter().map(|e| e.signer).collect();
    let pk = |i: usize| fx.audit[i].public();
    assert_eq!(signers, [pk(0), pk(4), pk(4), pk(2), pk(0), pk(4)]);

    let cp = fx.log.checkpoint();
    let summary = audit::verify(fx.log.entries(), &fx.joint, Some(&cp)).unwrap();
    assert_eq!(summary.checkpoint, cp);
    assert_eq!((summary.requests, summary.shares), (1, 3));
    assert_eq!(summary.openings, vec![res]);

    // The request's evidence and reason are what was filed.
    let logged = fx.log.request(&req).unwrap().request();
    assert_eq!(logged.evidence_ref(), "mds-case-2026-0017");
    assert!(logged.reason().starts_with("double spend"));
    assert!(fx.log.request(&Hash32([9; 32])).is_none());

    // Stored as bytes and read back, it is the same verified log.
    let bytes = fx.log.to_bytes();
    let back = AuditLog::from_bytes(&bytes, &fx.joint, Some(&cp)).unwrap();
    assert_eq!(back.entries(), fx.log.entries());
    assert_eq!(back.to_bytes(), bytes);
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        AuditLog::from_bytes(&trailing, &fx.joint, None).err(),
        Some(SupervisorError::Codec(CodecError::TrailingBytes))
    );
}

#[test]
fn a_modified_log_fails_verification() {
    let mut fx = fixture(3, 5);
    let req = fx.file(0, 1, 1);
    fx.open(&req, &[0, 1, 2]);
    fx.file(1, 2, 3);
    let good = fx.log.entries().to_vec();
    let cp = fx.log.checkpoint();
    let len = good.len();
    assert_eq!(len, 7);
    let joint = &fx.joint;
    let fails_at = |entries: &[Entry], cp: Option<&Checkpoint>| {
        audit::verify(entries, joint, cp).map(|_| ()).unwrap_err()
    };

    for i in 0..len {
        // Any edited byte of a body breaks that entry's signature.
        let mut e = good.clone();
        let last = e[i].body.len() - 1;
        e[i].body[last] ^= 1;
        let err = fails_at(&e, None);
        assert_eq!((err.seq, err.fault), (i as u64, AuditFault::BadSignature));

        // The signer re-signing its own edited entry breaks the chain
        // after it; for the last entry, the checkpoint catches it.
        let mut e = good.clone();
        e[i].body[last] ^= 1;
        e[i] = signed(
            &e[..i],
            e[i].kind,
            e[i].body.clone(),
            &signer_of(&fx, &good[i]),
        );
        // Caught at the entry itself when the edit breaks its meaning
        // (malformed body, failing proof), else by the next link.
        let err = fails_at(&e, Some(&cp));
        if err.seq == i as u64 + 1 {
            assert_eq!(err.fault, AuditFault::BrokenChain, "entry {i}");
        } else {
            assert_eq!(err.seq, i as u64, "entry {i}: {err:?}");
            assert!(
                !matches!(
                    err.fault,
                    AuditFault::BadSignature | AuditFault::UnknownSigner
                ),
                "entry {i}: {err:?}"
            );
        }

        // Edited sequence numbers or links are caught.
        let mut e = good.clone();
        e[i].seq += 1;
        assert_eq!(fails_at(&e, None).seq, i as u64);
        let mut e = good.clone();
        e[i].prev.0[0] ^= 1;
        assert_eq!(fails_at(&e, None).seq, i as u64);

        // A signature by a key outside the key set.
        let mut e = good.clone();
        let outsider = testkit::key(Suite::Ed25519, b"outsider");
        e[i] = signed(&good[..i], good[i].kind, good[i].body.clone(), &outsider);
        let err = fails_at(&e, None);
        assert_eq!((err.seq, err.fault), (i as u64, AuditFault::UnknownSigner));
    }

    // Deleting any entry but the last, or swapping neighbours.
    for i in 0..len - 1 {
        let mut e = good.clone();
        e.remove(i);
        assert_eq!(fails_at(&e, None).seq, i as u64, "deleted {i}");
        let mut e = good.clone();
        e.swap(i, i + 1);
        assert_eq!(fails_at(&e, None).seq, i as u64, "swapped {i}");
    }
    // Truncation from the middle: entries 2..5 dropped.
    let mut e = good.clone();
    e.drain(2..5);
    assert_eq!(fails_at(&e, None).fault, AuditFault::Sequence);
    // Dropping the tail leaves a valid prefix; the checkpoint catches it.
    assert!(audit::verify(&good[..5], joint, None).is_ok());
    let err = fails_at(&good[..5], Some(&cp));
    assert_eq!((err.seq, err.fault), (5, AuditFault::Checkpoint));
    assert!(audit::verify(&good, joint, Some(&cp)).is_ok());

    // A log made by another key set does not verify against this one.
    let other_keys = audit_keys("impostor", 5);
    let pks: Vec<_> = other_keys.iter().map(SecretKey::public).collect();
    let (other_joint, _) = key_setup(3, &pks, &mut TestEntropy::new(b"impostor")).unwrap();
    let other_log = AuditLog::new(&other_joint, &other_keys[0]).unwrap();
    let err = fails_at(other_log.entries(), None);
    assert_eq!((err.seq, err.fault), (0, AuditFault::UnknownSigner));
    // Nor one whose setup entry names another key set, even if signed by
    // a supervisor of this one.
    let mut e = vec![signed(
        &[],
        EntryKind::Setup,
        other_joint.to_cbor(),
        &fx.audit[0],
    )];
    let err = fails_at(&e, None);
    assert_eq!((err.seq, err.fault), (0, AuditFault::Setup));
    e.clear();
    assert_eq!(fails_at(&e, None).fault, AuditFault::Setup);
}

fn signer_of(fx: &Fx, e: &Entry) -> SecretKey {
    let i = fx.joint.audit_index(&e.signer).unwrap();
    fx.audit[usize::from(i)].clone()
}

#[test]
fn an_opened_point_that_breaks_the_escrow_proof_is_reported() {
    // A DCP that certified a tampered escrow (C2 moved by B): the shares
    // decrypt it, but the point does not satisfy the escrow's own proof.
    let mut fx = fixture(2, 3);
    let e = escrow::create(fx.joint.joint_key(), &fx.ses[0].1, &mut fx.rng);
    let mut bytes = e.to_bytes();
    let c2 = CompressedRistretto(bytes[36..68].try_into().unwrap())
        .decompress()
        .unwrap();
    bytes[36..68].copy_from_slice(&(c2 + RISTRETTO_BASEPOINT_POINT).compress().to_bytes());
    let req = OpeningRequest::new(&bytes, "case", "tampered escrow", 1).unwrap();
    let id = fx.log.append_request(&req, &fx.audit[0]).unwrap();
    let shares = [fx.give(&id, 0), fx.give(&id, 2)];
    let r = fx.log.request(&id).unwrap();
    assert_eq!(
        combine(&fx.joint, &r, &shares),
        Err(SupervisorError::Escrow(EscrowError::ProofRejected))
    );
}

#[test]
fn an_escrow_of_an_unregistered_se_opens_to_no_se_id() {
    let mut fx = fixture(2, 3);
    let stranger = IdPoint::derive(&Hash32([0xee; 32]), &[7; 32]);
    let e = escrow::create(fx.joint.joint_key(), &stranger, &mut fx.rng);
    let req = OpeningRequest::new(&e.to_bytes(), "case", "unknown device", 1).unwrap();
    let id = fx.log.append_request(&req, &fx.audit[1]).unwrap();
    let shares = [fx.give(&id, 1), fx.give(&id, 2)];
    let r = fx.log.request(&id).unwrap();
    let opening = combine(&fx.joint, &r, &shares).unwrap();
    assert_eq!(opening.point(), stranger);
    assert_eq!(fx.table.se_id(&opening.point()), None);
    fx.log.append_result(&opening, None, &fx.audit[1]).unwrap();
    assert_eq!(fx.log.verify().unwrap().openings[0].se_id, None);
    // One result per request.
    assert!(matches!(
        fx.log.append_result(&opening, None, &fx.audit[1]),
        Err(SupervisorError::Audit(e)) if e.fault == AuditFault::DuplicateResult
    ));
}

#[test]
fn requests_need_evidence_and_a_reason() {
    let mut fx = fixture(2, 3);
    let e = escrow::create(fx.joint.joint_key(), &fx.ses[0].1, &mut fx.rng).to_bytes();
    for (evidence, reason) in [("", "why"), ("case", ""), ("case", "  ")] {
        assert_eq!(
            OpeningRequest::new(&e, evidence, reason, 1),
            Err(SupervisorError::InvalidRequest)
        );
    }
    let long = "x".repeat(5000);
    assert_eq!(
        OpeningRequest::new(&e, "case", &long, 1),
        Err(SupervisorError::InvalidRequest)
    );
    assert!(matches!(
        OpeningRequest::new(&e[..100], "case", "why", 1),
        Err(SupervisorError::Escrow(_))
    ));
    // The same request cannot be filed twice.
    let req = OpeningRequest::new(&e, "case", "why", 1).unwrap();
    fx.log.append_request(&req, &fx.audit[0]).unwrap();
    assert!(matches!(
        fx.log.append_request(&req, &fx.audit[1]),
        Err(SupervisorError::Audit(e)) if e.fault == AuditFault::DuplicateRequest
    ));
}

#[test]
fn a_supervisor_of_another_key_set_cannot_share() {
    let mut fx = fixture(2, 3);
    let other = fixture_named("other board", 2, 3);
    let req = fx.file(0, 1, 0);
    let r = fx.log.request(&req).unwrap();
    assert_eq!(
        share(&other.keys[0], &r, &mut TestEntropy::new(b"x")),
        Err(SupervisorError::InvalidParams)
    );
    assert!(matches!(
        combine(&other.joint, &r, &[]),
        Err(SupervisorError::InvalidParams)
    ));
}

#[test]
fn key_setup_refuses_bad_parameters() {
    let mut rng = TestEntropy::new(b"params");
    let keys: Vec<_> = audit_keys("p", 33).iter().map(SecretKey::public).collect();
    assert!(key_setup(1, &keys[..1], &mut rng).is_ok());
    for (k, n) in [(0, 3), (4, 3), (3, 33), (1, 0)] {
        assert_eq!(
            key_setup(k, &keys[..n], &mut rng).err(),
            Some(SupervisorError::InvalidParams),
            "{k} of {n}"
        );
    }
    let dup = [keys[0], keys[1], keys[0]];
    assert_eq!(
        key_setup(2, &dup, &mut rng).err(),
        Some(SupervisorError::InvalidParams)
    );
    let p256 = testkit::key(Suite::EcdsaP256Sha256, b"p256").public();
    assert_eq!(
        key_setup(2, &[keys[0], keys[1], p256], &mut rng).err(),
        Some(SupervisorError::InvalidParams)
    );
}

#[test]
fn objects_round_trip_through_canonical_cbor() {
    let mut fx = fixture(3, 5);
    let req = fx.file(0, 1, 0);
    let res = fx.open(&req, &[1, 2, 3]);

    fn round<T: Cbor + PartialEq + std::fmt::Debug>(v: &T) {
        let b = v.to_cbor();
        assert_eq!(&T::from_cbor(&b).unwrap(), v);
        let mut t = b.clone();
        t.push(0);
        assert_eq!(T::from_cbor(&t).err(), Some(CodecError::TrailingBytes));
    }
    round(&fx.joint);
    round(fx.log.request(&req).unwrap().request());
    round(&fx.log.shares(&req)[0]);
    round(&res);
    round(&fx.table);
    round(&fx.log.checkpoint());
    round(&fx.log.entries()[3]);

    // A supervisor's key survives storage and still makes valid shares.
    let stored = fx.keys[4].to_cbor();
    let key = SupervisorKey::from_cbor(&stored).unwrap();
    assert_eq!(key.index(), 4);
    let req2 = fx.file(1, 2, 0);
    let r = fx.log.request(&req2).unwrap();
    let s = share(&key, &r, &mut fx.rng).unwrap();
    fx.log.append_share(&s, &fx.audit[4]).unwrap();
    // Filed under another index, the secret does not match its key share.
    let mut wrong = stored.clone();
    assert_eq!(wrong[2], 4);
    wrong[2] = 3;
    assert_eq!(
        SupervisorKey::from_cbor(&wrong).err(),
        Some(CodecError::Malformed)
    );

    // Key sets whose share keys do not lie on one polynomial are refused.
    let p = fx.joint.to_cbor();
    let share_keys = fx.joint.key_set().participant_keys();
    let at = |k: &[u8]| p.windows(32).position(|w| w == k).unwrap();
    let (a, b) = (at(share_keys[1].as_bytes()), at(share_keys[4].as_bytes()));
    let mut swapped = p.clone();
    swapped[a..a + 32].copy_from_slice(share_keys[4].as_bytes());
    swapped[b..b + 32].copy_from_slice(share_keys[1].as_bytes());
    assert_eq!(
        JointParams::from_cbor(&swapped).err(),
        Some(CodecError::Malformed)
    );
    assert_eq!(JointParams::from_cbor(&p).as_ref(), Ok(&fx.joint));
}

/// Files `bytes` as a request by supervisor 0 and opens it with shares of
/// supervisors `who`, logging everything; returns the logged result.
fn open_bytes(fx: &mut Fx, bytes: &[u8], who: &[usize]) -> OpeningResult {
    let req = OpeningRequest::new(bytes, "mds-case-2026-0031", "cloned card", 9).unwrap();
    let id = fx.log.append_request(&req, &fx.audit[0]).unwrap();
    fx.open(&id, who)
}

#[test]
fn a_ciphertext_only_escrow_opens_to_the_right_se_without_a_proof_check() {
    let mut fx = fixture(3, 5);
    let e = escrow::create(fx.joint.joint_key(), &fx.ses[2].1, &mut fx.rng);
    let cipher = e.ciphertext_only();
    let req = OpeningRequest::new(&cipher.to_bytes(), "case", "why", 1).unwrap();
    assert_eq!(*req.escrow(), RequestEscrow::CiphertextOnly(cipher));
    assert!(!req.escrow().has_proof());
    // The request's wire form keeps the ciphertext-only form.
    assert_eq!(OpeningRequest::from_cbor(&req.to_cbor()), Ok(req.clone()));

    let res = open_bytes(&mut fx, &cipher.to_bytes(), &[4, 1, 3]);
    assert_eq!(res.point, fx.ses[2].1);
    assert_eq!(res.se_id, Some(fx.ses[2].0));
    assert!(!res.escrow_proof_checked);
    assert_eq!(OpeningResult::from_cbor(&res.to_cbor()), Ok(res.clone()));

    // The same escrow filed in full (from the DCP's record) opens to the
    // same point, and that result says the proof was checked.
    let full = open_bytes(&mut fx, &e.to_bytes(), &[0, 1, 2]);
    assert_eq!(full.point, res.point);
    assert!(full.escrow_proof_checked);

    let summary = fx.log.verify().unwrap();
    assert_eq!(summary.openings, vec![res, full]);
}

#[test]
fn an_opening_result_must_say_whether_the_proof_was_checked() {
    // A result claiming a proof check for a ciphertext-only request, or
    // hiding one for a full request, is refused by audit verification.
    for ciphertext_only in [true, false] {
        let mut fx = fixture(2, 3);
        let e = escrow::create(fx.joint.joint_key(), &fx.ses[0].1, &mut fx.rng);
        let bytes = if ciphertext_only {
            e.ciphertext_only().to_bytes()
        } else {
            e.to_bytes()
        };
        let req = OpeningRequest::new(&bytes, "case", "why", 1).unwrap();
        let id = fx.log.append_request(&req, &fx.audit[0]).unwrap();
        let shares = [fx.give(&id, 0), fx.give(&id, 1)];
        let r = fx.log.request(&id).unwrap();
        let opening = combine(&fx.joint, &r, &shares).unwrap();
        assert_eq!(opening.escrow_proof_checked(), !ciphertext_only);

        let mut lie = OpeningResult::new(&opening, Some(fx.ses[0].0));
        lie.escrow_proof_checked = ciphertext_only;
        let mut entries = fx.log.entries().to_vec();
        entries.push(signed(
            &entries,
            EntryKind::Result,
            lie.to_cbor(),
            &fx.audit[0],
        ));
        let err = audit::verify(&entries, &fx.joint, None).unwrap_err();
        assert_eq!((err.seq, err.fault), (4, AuditFault::ResultMismatch));

        fx.log
            .append_result(&opening, Some(fx.ses[0].0), &fx.audit[0])
            .unwrap();
        assert!(fx.log.verify().is_ok());
    }
}

#[test]
fn a_tampered_ciphertext_only_escrow_opens_to_no_registered_se() {
    // Without the proof nothing catches a ciphertext moved after the DCP
    // checked it; what stops it in practice is the DCP's signature over the
    // certificate. The opened point is then in no table: no SE is named.
    let mut fx = fixture(2, 3);
    let e = escrow::create(fx.joint.joint_key(), &fx.ses[0].1, &mut fx.rng);
    let mut bytes = e.ciphertext_only().to_bytes();
    let c2 = CompressedRistretto(bytes[36..68].try_into().unwrap())
        .decompress()
        .unwrap();
    bytes[36..68].copy_from_slice(&(c2 + RISTRETTO_BASEPOINT_POINT).compress().to_bytes());
    let res = open_bytes(&mut fx, &bytes, &[0, 2]);
    assert_eq!(
        res.point,
        IdPoint::from_point(&(fx.ses[0].1.point() + RISTRETTO_BASEPOINT_POINT))
    );
    assert_eq!(res.se_id, None);
    assert!(!res.escrow_proof_checked);
}

#[test]
fn request_escrow_decoding_is_strict_in_both_forms() {
    let mut fx = fixture(2, 3);
    let e = escrow::create(fx.joint.joint_key(), &fx.ses[0].1, &mut fx.rng);
    let c = e.ciphertext_only().to_bytes();
    assert_eq!(
        RequestEscrow::from_bytes(&e.to_bytes()),
        Ok(RequestEscrow::Full(e))
    );
    assert_eq!(RequestEscrow::from_bytes(&c).unwrap().to_bytes(), c);
    let mut plain = c.clone();
    plain[4..36].fill(0);
    for bad in [&c[..40], &plain[..], &[0x82][..], &[][..]] {
        assert!(matches!(
            OpeningRequest::new(bad, "case", "why", 1),
            Err(SupervisorError::Escrow(_))
        ));
    }
}
