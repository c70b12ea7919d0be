//! `tally supervisor` through the real binary: a 3-of-5 key set made by
//! `keygen`, escrows of known SEs (made here with tally-core, as a DCP
//! would), an opening request, too few shares, a tampered and a forged
//! share, k shares naming the right SE through the id table, and the audit
//! log verifying until one byte of it changes.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{Run, run, temp_dir};
use tally_core::codec::{Cbor, Reader, Writer, write_vec};
use tally_core::crypto::SecretKey;
use tally_core::escrow::{self, IdPoint, JointKey};
use tally_core::testkit::TestEntropy;
use tally_core::{Hash32, Signature, Suite};
use tally_supervisor::audit::decode_entries;
use tally_supervisor::{
    AuditLog, DecryptionShare, Entry, EntryKind, JointParams, SupervisorKey, share,
};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn sv(args: &[&str]) -> Run {
    let mut a = vec!["supervisor"];
    a.extend_from_slice(args);
    run(&a)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A synthetic SE: its id and identity point (secret salt).
fn se(n: u8) -> (Hash32, IdPoint) {
    let id = Hash32([n; 32]);
    (id, IdPoint::derive(&id, &[n ^ 0xa5; 32]))
}

/// Supervisor `i`'s key file, decoded the way the CLI documents it:
/// `[1, SupervisorKey, audit_seed]`.
fn key_file(dir: &Path, i: u8) -> (SupervisorKey, SecretKey) {
    let bytes = std::fs::read(dir.join(format!("supervisor-{i}.key"))).unwrap();
    let mut r = Reader::new(&bytes);
    r.array(3).unwrap();
    r.version(1).unwrap();
    let key = SupervisorKey::read(&mut r).unwrap();
    let seed: [u8; 32] = r.bytes_array().unwrap();
    assert_eq!(r.position(), bytes.len());
    (key, SecretKey::from_seed(Suite::Ed25519, &seed).unwrap())
}

fn write_log(path: &Path, entries: &[Entry]) {
    let mut w = Writer::new();
    w.array(2);
    w.u64(1);
    write_vec(&mut w, entries);
    std::fs::write(path, w.into_bytes()).unwrap();
}

#[test]
fn three_of_five_opening_through_the_cli() {
    let tmp = temp_dir("supervisor");
    let dir = tmp.path().join("board");
    let d = s(&dir);

    // Key generation: joint key printed, key files private, log of one entry.
    let out = json(&sv(&["--json", "keygen", "--dir", &d, "--k", "3", "--n", "5"]).ok());
    assert_eq!((out["k"].as_u64(), out["n"].as_u64()), (Some(3), Some(5)));
    assert_eq!(out["entries"].as_u64(), Some(1));
    let joint_hex = out["joint_key"].as_str().unwrap().to_string();
    let joint_key = JointKey::from_bytes(&hex::decode(&joint_hex).unwrap().try_into().unwrap())
        .expect("printed joint key is a key");
    let joint = JointParams::from_cbor(&std::fs::read(dir.join("joint.cbor")).unwrap()).unwrap();
    assert_eq!(joint.joint_key(), &joint_key);
    assert_eq!((joint.threshold(), joint.participants()), (3, 5));
    for i in 0..5u8 {
        let p = dir.join(format!("supervisor-{i}.key"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        assert_eq!(key_file(&dir, i).0.index(), i);
    }
    // A second keygen into the same directory is refused, nothing touched.
    let log_before = std::fs::read(dir.join("audit.log")).unwrap();
    let err = sv(&["keygen", "--dir", &d, "--k", "2", "--n", "3"]).fails_with(2);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(dir.join("audit.log")).unwrap(), log_before);

    // A DCP made escrows for registered SEs; the directory's id table.
    let ses: Vec<_> = (1..=3).map(se).collect();
    let table = tmp.path().join("ids.txt");
    let mut text = String::from("# se_id digest\n");
    for (id, point) in &ses {
        text.push_str(&format!("{id} {}\n", point.digest()));
    }
    std::fs::write(&table, text).unwrap();
    let mut rng = TestEntropy::new(b"e2e supervisor escrows");
    let full = escrow::create(&joint_key, &ses[1].1, &mut rng);
    let cipher_hex = hex::encode(full.ciphertext_only().to_bytes());

    // Supervisor 1 files a request for the certificate's ciphertext.
    let request = sv(&[
        "request-opening",
        "--dir",
        &d,
        "--escrow",
        &cipher_hex,
        "--evidence",
        "mds-case-2026-0042",
        "--reason",
        "double spend by a cloned card",
        "--as",
        "1",
    ])
    .ok()
    .trim()
    .to_string();
    assert_eq!(request.len(), 64, "request id: {request}");

    // k − 1 shares: combine refuses, clearly, and logs nothing.
    for i in [0, 3] {
        let key = s(&dir.join(format!("supervisor-{i}.key")));
        let out = sv(&["share", "--dir", &d, "--request", &request, "--key", &key]).ok();
        assert!(out.contains(&format!("supervisor {i} shared")), "{out}");
    }
    let log_k_minus_1 = std::fs::read(dir.join("audit.log")).unwrap();
    let err = sv(&["combine", "--dir", &d, "--request", &request]).fails_with(1);
    assert!(err.contains("2 valid shares logged, 3 needed"), "{err}");
    assert_eq!(std::fs::read(dir.join("audit.log")).unwrap(), log_k_minus_1);

    // A share edited inside the log file: its entry no longer verifies, so
    // neither audit verify nor combine accepts the log.
    let entries = decode_entries(&log_k_minus_1).unwrap();
    assert_eq!(entries.len(), 4);
    let share_d = DecryptionShare::from_cbor(&entries[3].body)
        .unwrap()
        .share_bytes();
    let at = log_k_minus_1
        .windows(32)
        .position(|w| w == share_d)
        .expect("share point in the log file");
    let mut edited = log_k_minus_1.clone();
    edited[at + 7] ^= 0x10;
    std::fs::write(dir.join("audit.log"), &edited).unwrap();
    let err = sv(&["audit", "verify", "--dir", &d]).fails_with(1);
    assert!(err.contains("entry 3"), "{err}");
    let err = sv(&["combine", "--dir", &d, "--request", &request]).fails_with(1);
    assert!(err.contains("audit log does not verify"), "{err}");

    // A wrong share, properly signed by its own supervisor and chained:
    // refused by its DLEQ proof.
    let (key4, audit4) = key_file(&dir, 4);
    let log = AuditLog::from_bytes(&log_k_minus_1, &joint, None).unwrap();
    let logged = log.request(&req_hash(&request)).unwrap();
    let good = share(&key4, &logged, &mut rng).unwrap();
    let mut moved = good.share_bytes();
    moved[0] ^= 0x02;
    let forged = (0..=255u8)
        .find_map(|b| {
            let mut m = moved;
            m[31] = b;
            DecryptionShare::from_parts(good.request_id(), 4, m, good.proof_bytes()).ok()
        })
        .expect("some nearby encoding is a point");
    let mut entries = log.entries().to_vec();
    let mut e = Entry {
        seq: entries.len() as u64,
        prev: entries.last().unwrap().hash(),
        kind: EntryKind::Share,
        body: forged.to_cbor(),
        signer: audit4.public(),
        signature: Signature::new(Suite::Ed25519, [0; 64]),
    };
    e.signature = audit4.sign(&e.signed_message().0);
    entries.push(e);
    write_log(&dir.join("audit.log"), &entries);
    let err = sv(&["audit", "verify", "--dir", &d]).fails_with(1);
    assert!(
        err.contains("entry 4") && err.contains("DLEQ proof does not verify"),
        "{err}"
    );

    // Back to the honest log; the third share opens it.
    std::fs::write(dir.join("audit.log"), &log_k_minus_1).unwrap();
    let key2 = s(&dir.join("supervisor-2.key"));
    sv(&["share", "--dir", &d, "--request", &request, "--key", &key2]).ok();
    let out = json(
        &sv(&[
            "--json",
            "combine",
            "--dir",
            &d,
            "--request",
            &request,
            "--id-table",
            &s(&table),
            "--as",
            "2",
        ])
        .ok(),
    );
    assert_eq!(out["se_id"].as_str(), Some(ses[1].0.to_string().as_str()));
    assert_eq!(
        out["id_point_digest"].as_str(),
        Some(ses[1].1.digest().to_string().as_str())
    );
    assert_eq!(out["used"], serde_json::json!([0, 2, 3]));
    assert_eq!(out["escrow_proof_checked"], serde_json::json!(false));
    // Asking again shows the logged result instead of logging a second one.
    let again = sv(&["combine", "--dir", &d, "--request", &request]).ok();
    assert!(again.contains("already opened"), "{again}");
    assert!(again.contains(&ses[1].0.to_string()), "{again}");

    // The full escrow from the DCP's record: the proof is re-checked.
    let full_req = sv(&[
        "request-opening",
        "--dir",
        &d,
        "--escrow",
        &hex::encode(full.to_bytes()),
        "--evidence",
        "mds-case-2026-0042",
        "--reason",
        "confirm with the DCP record",
    ])
    .ok()
    .trim()
    .to_string();
    for i in [1, 2, 4] {
        let key = s(&dir.join(format!("supervisor-{i}.key")));
        sv(&["share", "--dir", &d, "--request", &full_req, "--key", &key]).ok();
    }
    let out = sv(&[
        "combine",
        "--dir",
        &d,
        "--request",
        &full_req,
        "--id-table",
        &s(&table),
    ])
    .ok();
    assert!(out.contains(&format!("se id {}", ses[1].0)), "{out}");
    assert!(out.contains("escrow proof re-checked"), "{out}");

    // The whole log verifies: setup, 2 requests, 6 shares, 2 results.
    let out = json(&sv(&["--json", "audit", "verify", "--dir", &d]).ok());
    assert_eq!(out["entries"].as_u64(), Some(11));
    assert_eq!(out["openings"].as_u64(), Some(2));
    let checkpoint = out["checkpoint"].as_str().unwrap().to_string();
    let human = sv(&["audit", "verify", "--log", &s(&dir.join("audit.log"))]).ok();
    assert!(human.contains("11 entries"), "{human}");
    assert!(human.contains(&checkpoint), "{human}");
    sv(&["audit", "verify", "--dir", &d, "--checkpoint", &checkpoint]).ok();

    // One byte changed anywhere: verification fails, cleanly (exit 1, not
    // a panic), and names what is wrong.
    let good_log = std::fs::read(dir.join("audit.log")).unwrap();
    let reason_at = good_log
        .windows(12)
        .position(|w| w == b"double spend")
        .unwrap();
    let mut edited = good_log.clone();
    edited[reason_at] = b'D';
    std::fs::write(dir.join("audit.log"), &edited).unwrap();
    let err = sv(&["audit", "verify", "--dir", &d]).fails_with(1);
    assert!(
        err.contains("entry 1") && err.contains("signature does not verify"),
        "{err}"
    );
    for at in (0..good_log.len()).step_by(good_log.len() / 24) {
        let mut edited = good_log.clone();
        edited[at] ^= 0x01;
        std::fs::write(dir.join("audit.log"), &edited).unwrap();
        let err = sv(&["audit", "verify", "--dir", &d]).fails_with(1);
        assert!(err.contains("does not verify"), "byte {at}: {err}");
    }
    // Dropping the last entry leaves a valid prefix; the checkpoint catches it.
    let mut entries = decode_entries(&good_log).unwrap();
    entries.pop();
    write_log(&dir.join("audit.log"), &entries);
    sv(&["audit", "verify", "--dir", &d]).ok();
    let err = sv(&["audit", "verify", "--dir", &d, "--checkpoint", &checkpoint]).fails_with(1);
    assert!(err.contains("checkpoint"), "{err}");
    std::fs::write(dir.join("audit.log"), &good_log).unwrap();

    // Bad files are errors, not panics.
    let bad_key = tmp.path().join("bad.key");
    std::fs::write(&bad_key, b"not a key").unwrap();
    let err = sv(&[
        "share",
        "--dir",
        &d,
        "--request",
        &request,
        "--key",
        &s(&bad_key),
    ])
    .fails_with(1);
    assert!(err.contains("not a valid supervisor key file"), "{err}");
    let unknown = Hash32([7; 32]).to_string();
    let key0 = s(&dir.join("supervisor-0.key"));
    let err = sv(&["share", "--dir", &d, "--request", &unknown, "--key", &key0]).fails_with(1);
    assert!(err.contains("not in the audit log"), "{err}");
    let bad_table = tmp.path().join("bad-ids.txt");
    std::fs::write(&bad_table, "zz 00\n").unwrap();
    let err = sv(&[
        "combine",
        "--dir",
        &d,
        "--request",
        &request,
        "--id-table",
        &s(&bad_table),
    ])
    .fails_with(2);
    assert!(err.contains("bad-ids.txt:1"), "{err}");
    assert_eq!(std::fs::read(dir.join("audit.log")).unwrap(), good_log);
}

fn req_hash(hex_id: &str) -> Hash32 {
    Hash32(hex::decode(hex_id).unwrap().try_into().unwrap())
}
