//! Escrow and opening costs, printed as a Markdown table:
//!
//! ```sh
//! cargo run --release -p tally-supervisor --example escrow_bench
//! ```
//!
//! Each operation runs `ROUNDS` times after a warm-up; the table gives the
//! median and the 10th/90th percentiles (the machine is shared, so the
//! median is the number to quote). Fixtures are deterministic
//! (`TestEntropy`), k = 3 of n = 5.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tally_core::crypto::SecretKey;
use tally_core::escrow::{self, IdPoint};
use tally_core::testkit::{self, TestEntropy};
use tally_core::{Hash32, Suite};
use tally_supervisor::{AuditLog, OpeningRequest, combine, key_setup, share};

const ROUNDS: usize = 300;
const WARMUP: usize = 20;

fn measure(rounds: usize, mut f: impl FnMut()) -> [Duration; 3] {
    for _ in 0..WARMUP.min(rounds) {
        f();
    }
    let mut t: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    t.sort();
    [t[rounds / 10], t[rounds / 2], t[rounds * 9 / 10]]
}

fn row(name: &str, t: [Duration; 3]) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {name} | {:.1} | {:.1} | {:.1} |",
        us(t[1]),
        us(t[0]),
        us(t[2])
    );
}

fn main() {
    let (k, n) = (3, 5);
    let audit: Vec<SecretKey> = (0..n)
        .map(|i| testkit::key(Suite::Ed25519, format!("bench-supervisor-{i}").as_bytes()))
        .collect();
    let pks: Vec<_> = audit.iter().map(SecretKey::public).collect();
    let mut rng = TestEntropy::new(b"escrow bench");
    let (joint, keys) = key_setup(k, &pks, &mut rng).expect("key setup");
    let se_id = Hash32([7; 32]);
    let id = IdPoint::derive(&se_id, &[0x42; 32]);
    let bytes = escrow::create(joint.joint_key(), &id, &mut rng).to_bytes();

    let mut log = AuditLog::new(&joint, &audit[0]).expect("log");
    let req = OpeningRequest::new(&bytes, "bench-case", "benchmark opening", 1).expect("request");
    let req_id = log.append_request(&req, &audit[0]).expect("append request");
    let shares: Vec<_> = [0usize, 2, 4]
        .iter()
        .map(|&i| {
            let r = log.request(&req_id).expect("logged");
            share(&keys[i], &r, &mut rng).expect("share")
        })
        .collect();
    for (s, i) in shares.iter().zip([0usize, 2, 4]) {
        log.append_share(s, &audit[i]).expect("append share");
    }
    let r = log.request(&req_id).expect("logged");
    let opening = combine(&joint, &r, &shares).expect("combine");
    assert_eq!(opening.point(), id);
    let mut done = log.clone();
    done.append_result(&opening, Some(se_id), &audit[0])
        .expect("append result");

    let s1 = share(&keys[1], &r, &mut rng).expect("share");
    println!(
        "escrow: {} bytes; k = {k} of n = {n}; {ROUNDS} rounds\n",
        bytes.len()
    );
    println!("| operation | median µs | p10 µs | p90 µs |");
    println!("|---|---:|---:|---:|");
    row(
        "escrow create (SE or DCP: encrypt + DLEQ proof)",
        measure(ROUNDS, || {
            black_box(escrow::create(joint.joint_key(), &id, &mut rng));
        }),
    );
    row(
        "escrow verify (DCP before certifying: decode + proof)",
        measure(ROUNDS, || {
            escrow::verify(joint.joint_key(), &id, black_box(&bytes)).expect("verifies");
        }),
    );
    row(
        "identity point derivation (SHA-512 + hash to ristretto255)",
        measure(ROUNDS, || {
            black_box(IdPoint::derive(black_box(&se_id), &[0x42; 32]));
        }),
    );
    row(
        "one decryption share with its DLEQ proof",
        measure(ROUNDS, || {
            black_box(share(&keys[1], &r, &mut rng).expect("share"));
        }),
    );
    row(
        "combine 3 of 5 (check 3 share proofs, interpolate, check escrow proof)",
        measure(ROUNDS, || {
            black_box(combine(&joint, &r, black_box(&shares)).expect("opens"));
        }),
    );
    row(
        "opening 3 of 5, end to end (3 shares + combine)",
        measure(ROUNDS, || {
            let s: Vec<_> = [0usize, 2, 4]
                .iter()
                .map(|&i| share(&keys[i], &r, &mut rng).expect("share"))
                .collect();
            black_box(combine(&joint, &r, &s).expect("opens"));
        }),
    );
    row(
        "audit log: append one share (check proof, sign, chain; incl. cloning a 5-entry log)",
        measure(ROUNDS, || {
            let mut l = log.clone();
            l.append_share(&s1, &audit[1]).expect("append");
            black_box(l);
        }),
    );
    row(
        "audit verify, log of one opening (6 entries)",
        measure(ROUNDS, || {
            black_box(done.verify().expect("verifies"));
        }),
    );
    row(
        "key setup 3 of 5 (committed Pedersen DKG, all 5 in process)",
        measure(ROUNDS / 10, || {
            black_box(key_setup(k, &pks, &mut rng).expect("key setup"));
        }),
    );
}
