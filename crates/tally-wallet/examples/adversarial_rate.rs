//! Executions per second of the `adversarial_terminal` harness
//! (docs/PERFORMANCE.md, "Adversarial-terminal fuzzer"): the seed corpus,
//! then random programs from a fixed-seed generator, for ~10 s each way
//! (`ADVERSARIAL_RATE_SECS` to change it).
//!
//! `cargo run --release -p tally-wallet --features testkit --example adversarial_rate`

use std::time::{Duration, Instant};

use tally_wallet::fuzzing::{
    AdversaryFixture, AdversaryStats, adversarial_seeds, run_adversarial_terminal,
};

/// xorshift64*: deterministic program bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn add(t: &mut AdversaryStats, s: AdversaryStats) {
    t.steps += s.steps;
    t.apdus += s.apdus;
    t.accepted += s.accepted;
    t.refused += s.refused;
    t.packages += s.packages;
    t.received += s.received;
    t.credited += s.credited;
}

fn measure(name: &str, secs: f64, mut next: impl FnMut() -> Vec<u8>, fx: &AdversaryFixture) {
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    let mut execs = 0u64;
    let mut total = AdversaryStats::default();
    while start.elapsed() < budget {
        let input = next();
        add(&mut total, run_adversarial_terminal(fx, &input));
        execs += 1;
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "{name}: {execs} execs in {t:.1} s = {:.0} execs/s; per exec {:.1} steps, {:.1} APDUs \
         ({:.0} APDUs/s), {:.1} accepted / {:.1} refused commands, {:.2} packages, {:.2} received, {:.2} Issues credited",
        execs as f64 / t,
        total.steps as f64 / execs as f64,
        total.apdus as f64 / execs as f64,
        total.apdus as f64 / t,
        total.accepted as f64 / execs as f64,
        total.refused as f64 / execs as f64,
        total.packages as f64 / execs as f64,
        total.received as f64 / execs as f64,
        total.credited as f64 / execs as f64,
    );
}

fn main() {
    let secs: f64 = std::env::var("ADVERSARIAL_RATE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let t = Instant::now();
    let fx = AdversaryFixture::new();
    println!(
        "fixture (3 cards provisioned, PIN set, loaded): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let seeds: Vec<Vec<u8>> = adversarial_seeds().into_iter().map(|(_, b)| b).collect();
    let mut i = 0;
    measure(
        "seed corpus",
        secs,
        || {
            i += 1;
            seeds[i % seeds.len()].clone()
        },
        &fx,
    );
    let mut rng = Rng(0x7A11_7A11_7A11_7A11);
    measure(
        "random programs (64-320 bytes)",
        secs,
        || {
            let n = 64 + (rng.next() % 257) as usize;
            (0..n).map(|_| rng.next() as u8).collect()
        },
        &fx,
    );
}
