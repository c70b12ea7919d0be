//! Test vectors of docs/SPEC.md §10 (the DCP ↔ central bank wire),
//! checked byte for byte.
//!
//! The objects come from `tally_dcp::fuzzing` (keys `SecretKey::from_seed
//! (Ed25519, [n; 32])`, fixed hashes, deterministic signatures and a
//! deterministic HPKE seal). Each is encoded and compared with the fenced
//! block of SPEC.md marked ```` ```hex title=NAME ````; then the SPEC's
//! bytes are decoded on their own and must give back the same value, and
//! the signed ones verify.
//!
//! To regenerate after a deliberate wire change:
//! `TALLY_PRINT_VECTORS=1 cargo test -p tally-dcp --test wire_vectors -- --nocapture`
//! prints every block; paste them into SPEC.md §10.11.

use std::collections::BTreeMap;

use tally_core::codec::Cbor;
use tally_core::crypto::tagged_hash;
use tally_core::dcp::SyncUpload;
use tally_core::sealed::SealedKind;
use tally_dcp::central::{CentralCall, CentralRequest, CentralTrust, InboxEntry};
use tally_dcp::fuzzing::{self, OP, WireKeys};
use tally_dcp::{CentralBank, SettlementResult, development_escrow_key};
use tally_store::Store;

/// SPEC.md's §10 (the §8 vectors are tally-core's tests/vectors.rs).
fn spec_text() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SPEC.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let i = text
        .find("\n## 10. ")
        .expect("SPEC.md has a section 10 (DCP ↔ central bank)");
    text[i..].to_string()
}

/// The ```` ```hex title=NAME ```` blocks of a Markdown text, whitespace
/// inside a block ignored (the convention of tally-core's tests/vectors.rs).
fn hex_blocks(md: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("```hex title=") else {
            continue;
        };
        let mut hex_text = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            hex_text.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        let bytes = hex::decode(&hex_text).unwrap_or_else(|e| panic!("vector {name}: {e}"));
        assert!(
            out.insert(name.trim().to_string(), bytes).is_none(),
            "vector {name} appears twice"
        );
    }
    out
}

fn print_block(name: &str, bytes: &[u8]) {
    println!("```hex title={name}");
    for chunk in bytes.chunks(32) {
        println!("{}", hex::encode(chunk));
    }
    println!("```");
}

#[test]
fn spec_vectors_match_the_code() {
    let vectors = fuzzing::vectors();
    if std::env::var_os("TALLY_PRINT_VECTORS").is_some() {
        for (name, bytes) in &vectors {
            println!("`{name}` — {} bytes:\n", bytes.len());
            print_block(name, bytes);
            println!();
        }
        return;
    }
    let spec = hex_blocks(&spec_text());
    let mut names: Vec<&str> = vectors.iter().map(|(n, _)| *n).collect();
    names.sort();
    let spec_names: Vec<&str> = spec.keys().map(String::as_str).collect();
    assert_eq!(
        names, spec_names,
        "SPEC.md §10 has other vectors than the code"
    );
    for (name, bytes) in &vectors {
        assert_eq!(
            hex::encode(&spec[*name]),
            hex::encode(bytes),
            "vector {name} differs from SPEC.md"
        );
    }
}

/// Decodes `name` from SPEC.md, checks it re-encodes to the same bytes.
fn decode<T: Cbor + std::fmt::Debug>(spec: &BTreeMap<String, Vec<u8>>, name: &str) -> T {
    let bytes = spec
        .get(name)
        .unwrap_or_else(|| panic!("SPEC.md lacks vector {name}"));
    let v = T::from_cbor(bytes).unwrap_or_else(|e| panic!("vector {name} does not decode: {e}"));
    assert_eq!(&v.to_cbor(), bytes, "{name} does not re-encode");
    v
}

#[test]
fn spec_vectors_decode_to_the_same_values() {
    let spec = hex_blocks(&spec_text());
    let k = WireKeys::new();
    for (name, call) in fuzzing::calls(&k) {
        assert_eq!(decode::<CentralCall>(&spec, name), call, "{name}");
    }
    for (name, req) in fuzzing::requests(&k) {
        assert_eq!(decode::<CentralRequest>(&spec, name), req, "{name}");
    }
    let trust: CentralTrust = decode(&spec, "central-trust");
    assert_eq!(trust, k.trust());
    for (name, e) in fuzzing::inbox_entries() {
        assert_eq!(decode::<InboxEntry>(&spec, name), e, "{name}");
    }

    // The signed result opens under the trust bundle's settlement key,
    // for its op only, and equals the value it was made from.
    let signed = &spec["settlement-result-v2"];
    let res = SettlementResult::open(signed, &trust.settlement_key.key, &trust.root, &OP)
        .expect("the result vector opens");
    assert_eq!(res, fuzzing::settlement_result(&k));
    assert!(
        SettlementResult::open(
            signed,
            &trust.settlement_key.key,
            &trust.root,
            &tally_core::Hash32([0; 32])
        )
        .is_err(),
        "a result opened for another op"
    );
    // The signature is over tagged_hash("tally/v1/settlement-result",
    // [body]) with body the 10-array without the signature (§9.6).
    let body = fuzzing::result_body(&res, 2);
    assert_eq!(&signed[1..signed.len() - 67], &body[1..]);
    let sig = tally_core::Signature::from_cbor(&signed[signed.len() - 67..]).unwrap();
    let msg = tagged_hash(b"tally/v1/settlement-result", &[&body]);
    assert!(tally_core::crypto::verify(&trust.settlement_key.key, &msg.0, &sig).is_ok());

    // The trust objects verify under the root it names.
    trust
        .settlement_key
        .verify(&trust.root)
        .expect("settlement key");
    trust.sealing_key.verify(&trust.root).expect("sealing key");
    tally_core::TrustStore::new(trust.root, trust.policy.clone(), trust.revocations.clone())
        .expect("policy and revocation list are root-signed");
}

/// The Sync vector's `sealed` opens with the opening key of seed `[8; 32]`
/// as a `SyncUpload` without packages or reports; its `reports` is the
/// digest of no reports.
#[test]
fn sync_vector_carries_an_empty_upload() {
    let spec = hex_blocks(&spec_text());
    let k = WireKeys::new();
    let CentralRequest::Sync {
        sealed, reports, ..
    } = decode::<CentralRequest>(&spec, "central-request-sync")
    else {
        panic!("not a Sync");
    };
    let plain = k
        .opening
        .open(SealedKind::SyncUpload, &sealed)
        .expect("opens");
    let upload = SyncUpload::from_cbor(&plain).expect("an upload");
    assert!(upload.packages.is_empty() && upload.reports.is_empty());
    assert_eq!(reports, tagged_hash(b"tally/v1/reports", &[]));
    // Sealed as a sync upload, it does not open as a redemption.
    assert!(k.opening.open(SealedKind::Redemption, &sealed).is_err());
}

/// A central bank opened with the vector keys answers Trust with the
/// vector's keys (root, sealing, settlement, escrow) and DCP list; its
/// policy serial differs only because trusting the maker re-signs it.
#[test]
fn a_central_bank_with_the_vector_keys_answers_the_vector_trust() {
    use tally_dcp::Central;
    let k = WireKeys::new();
    let bank = CentralBank::open(
        Store::sqlite_memory().unwrap(),
        Store::sqlite_memory().unwrap(),
        k.central(),
        development_escrow_key(),
        None,
        &k.dcps(),
    )
    .unwrap();
    bank.trust_manufacturer(k.maker.public()).unwrap();
    let ours = k.trust();
    let theirs = bank.trust().unwrap();
    assert_eq!(theirs.root, ours.root);
    assert_eq!(theirs.sealing_key, ours.sealing_key);
    assert_eq!(theirs.settlement_key, ours.settlement_key);
    assert_eq!(theirs.escrow_key, ours.escrow_key);
    assert_eq!(theirs.epoch, ours.epoch);
    assert_eq!(theirs.policy.dcps, ours.policy.dcps);
    assert_eq!(theirs.policy.tiers, ours.policy.tiers);
    assert_eq!(theirs.policy.manufacturers, ours.policy.manufacturers);
    assert_eq!(theirs.revocations.revoked, ours.revocations.revoked);
}
