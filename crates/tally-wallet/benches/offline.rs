//! Offline payment costs, side by side in one run (docs/PERFORMANCE.md):
//! wire sizes, the payer SE's PAY on in-memory and on file-backed sealed
//! storage, payee verification of a one-hop and an at-budget package, and
//! the bare signature checks the verification contains.
//!
//! `cargo bench -p tally-wallet --bench offline`
//!
//! After criterion's report the bench prints a summary table (medians read
//! back from criterion's `estimates.json`) with the verification overhead
//! beyond the signature checks.

use std::fs::{self, File};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use tally_core::codec::Cbor;
use tally_core::crypto::{SigCheck, verify, verify_many};
use tally_core::record::distinct_signers;
use tally_core::testkit::{Scheme, key};
use tally_core::verify::{
    BoundedCertCache, CertCache, NoCache, verify_package, verify_package_bytes,
};
use tally_core::{Package, PublicKey, Record, Signature, Suite};
use tally_se::Sealing;
use tally_se::file::FileStorage;
use tally_se::storage::{MemStorage, Storage};
use tally_wallet::fuzzing::{
    HISTORY_RECORDS_MAX, PaymentFixture, WireSizes, boot, empty_payee, grow_lineage, loaded_payer,
    package_with_records,
};
use tally_wallet::testkit::TEST_STORAGE_BYTES;

const DEVICE_KEY: [u8; 32] = [0x42; 32];

/// A payer SE image whose single token has `records` ancestry records.
fn payer_image<S: Storage>(records: usize, a: S, b: S, sealing: &Sealing) -> (S, bool) {
    let mut scheme = Scheme::new(Suite::Ed25519);
    let a = loaded_payer(&mut scheme, a, sealing.clone(), b"bench/a");
    let b = empty_payee(&scheme, b, sealing.clone(), b"bench/b");
    let holder = grow_lineage(&scheme, a, b, records);
    // grow_lineage returns `a` for an odd record count, `b` for an even one.
    (holder.into_storage(), records % 2 == 1)
}

/// Prepared state files of a file-backed payer (sealed with AEAD).
fn payer_file(dir: &Path, records: usize) -> PathBuf {
    let pa = dir.join(format!("payer-{records}-a.se"));
    let pb = dir.join(format!("payer-{records}-b.se"));
    let _ = fs::remove_file(&pa);
    let _ = fs::remove_file(&pb);
    let sa = FileStorage::create(&pa, TEST_STORAGE_BYTES).expect("create state file");
    let sb = FileStorage::create(&pb, TEST_STORAGE_BYTES).expect("create state file");
    let (_, is_a) = payer_image(records, sa, sb, &Sealing::Aead(DEVICE_KEY));
    if is_a { pa } else { pb }
}

/// The signature checks a verifier makes for `pkg`, with no certificate
/// cached (`with_certs`) or all of them cached.
fn signature_checks(
    pkg: &Package,
    fx: &PaymentFixture,
    with_certs: bool,
) -> Vec<(PublicKey, [u8; 32], Signature)> {
    let dcp = |issuer| fx.trust.policy().dcp(issuer).expect("trusted DCP").key;
    let mut out = Vec::new();
    for r in &pkg.ancestry {
        if let Record::Issue(i) = r {
            out.push((dcp(&i.issuer), i.id().0, i.signature));
        }
    }
    if with_certs {
        for c in &pkg.certificates {
            out.push((dcp(&c.issuer), c.signed_message().0, c.signature));
        }
    }
    let owner = |op: &tally_core::OutPoint| {
        pkg.ancestry
            .iter()
            .find(|r| r.id() == op.record)
            .and_then(|r| r.outputs().get(usize::from(op.index)))
            .map(|o| o.owner)
            .expect("input in ancestry")
    };
    let transfers = pkg
        .ancestry
        .iter()
        .filter_map(|r| match r {
            Record::Transfer(t) => Some(t),
            Record::Issue(_) => None,
        })
        .chain(std::iter::once(&pkg.transfer));
    for t in transfers {
        let signers = distinct_signers(t.inputs.iter().map(owner));
        for (k, s) in signers.iter().zip(&t.signatures) {
            out.push((*k, t.id().0, *s));
        }
    }
    out
}

fn as_checks(v: &[(PublicKey, [u8; 32], Signature)]) -> Vec<SigCheck<'_>> {
    v.iter()
        .map(|(key, msg, sig)| SigCheck { key, msg, sig })
        .collect()
}

/// Rounds of the paired verification / signature-check measurement.
const PAIRED_ROUNDS: usize = 300;

/// One paired row: label, verify_package (ns), verify_many (ns), medians.
type Paired = (&'static str, f64, f64);

fn bench(c: &mut Criterion) -> Vec<Paired> {
    let fx = PaymentFixture::new();
    let sizes = WireSizes::measure();
    eprintln!("wire sizes (bytes): {sizes:#?}");

    // ---- payer SE: PAY -----------------------------------------------------
    let dir = std::env::temp_dir().join(format!("tally-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("bench dir");
    let mem = |records| {
        let (s, _) = payer_image(
            records,
            MemStorage::new(TEST_STORAGE_BYTES),
            MemStorage::new(TEST_STORAGE_BYTES),
            &Sealing::None,
        );
        s
    };
    let mem_one = mem(1);
    let mem_budget = mem(HISTORY_RECORDS_MAX);
    let file_one = payer_file(&dir, 1);
    let file_budget = payer_file(&dir, HISTORY_RECORDS_MAX);
    let work = dir.join("work.se");

    let mut g = c.benchmark_group("pay");
    g.sample_size(50).measurement_time(Duration::from_secs(4));
    for (name, image) in [("mem_one_hop", &mem_one), ("mem_at_budget", &mem_budget)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || boot(image.clone(), Sealing::None, b"bench/pay"),
                |mut se| {
                    let pkg = se.pay(black_box(&fx.request)).expect("pay");
                    (se, pkg)
                },
                BatchSize::PerIteration,
            )
        });
    }
    // The terminal's flow: CHECK REQUEST (payee certificate and request
    // signature) while the user confirms, outside the measurement; PAY.
    g.bench_function("mem_one_hop_checked", |b| {
        b.iter_batched(
            || {
                let mut se = boot(mem_one.clone(), Sealing::None, b"bench/pay");
                se.check_request(&fx.request).expect("check request");
                se
            },
            |mut se| {
                let pkg = se.pay(black_box(&fx.request)).expect("pay");
                (se, pkg)
            },
            BatchSize::PerIteration,
        )
    });
    for (name, prepared) in [
        ("file_one_hop", &file_one),
        ("file_at_budget", &file_budget),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    fs::copy(prepared, &work).expect("copy state file");
                    // The copy's dirty pages must not be flushed by PAY's fsync.
                    File::open(&work)
                        .and_then(|f| f.sync_all())
                        .expect("sync copy");
                    let s = FileStorage::open(&work).expect("open state file");
                    boot(s, Sealing::Aead(DEVICE_KEY), b"bench/pay")
                },
                |mut se| {
                    let pkg = se.pay(black_box(&fx.request)).expect("pay");
                    (se, pkg)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    let _ = fs::remove_dir_all(&dir);

    // ---- payee: verification ---------------------------------------------
    let one_hop = package_with_records(&fx, 1);
    let at_budget = package_with_records(&fx, HISTORY_RECORDS_MAX);
    let p1 = Package::from_cbor(&one_hop).expect("one-hop package");
    let pn = Package::from_cbor(&at_budget).expect("at-budget package");
    assert_eq!(pn.ancestry.len(), HISTORY_RECORDS_MAX);
    let v = |p: &Package, cache: &mut dyn CertCache| {
        verify_package(p.clone(), &fx.expected, &fx.trust, fx.params, cache).expect("verifies")
    };
    let sigs1 = signature_checks(&p1, &fx, true);
    let sigsn = signature_checks(&pn, &fx, true);
    let sigsn_warm = signature_checks(&pn, &fx, false);
    assert_eq!(sigs1.len(), v(&p1, &mut NoCache).signature_checks());
    assert_eq!(sigsn.len(), v(&pn, &mut NoCache).signature_checks());
    let mut warm1 = BoundedCertCache::new(1024);
    let mut warmn = BoundedCertCache::new(1024);
    v(&p1, &mut warm1);
    v(&pn, &mut warmn);
    assert_eq!(sigsn_warm.len(), v(&pn, &mut warmn).signature_checks());
    eprintln!(
        "signatures: one-hop {}, at-budget {} ({} with a warm certificate cache)",
        sigs1.len(),
        sigsn.len(),
        sigsn_warm.len()
    );

    let mut g = c.benchmark_group("verify");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    let cases: [(&str, &Package, Option<&mut BoundedCertCache>); 4] = [
        ("one_hop_no_cache", &p1, None),
        ("one_hop_warm_cache", &p1, Some(&mut warm1)),
        ("at_budget_no_cache", &pn, None),
        ("at_budget_warm_cache", &pn, Some(&mut warmn)),
    ];
    for (name, pkg, mut cache) in cases {
        g.bench_function(name, |b| {
            b.iter_batched(
                || pkg.clone(),
                |p| {
                    let cache: &mut dyn CertCache = match cache.as_deref_mut() {
                        Some(c) => c,
                        None => &mut NoCache,
                    };
                    verify_package(p, &fx.expected, &fx.trust, fx.params, cache).expect("verifies")
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("at_budget_bytes_no_cache", |b| {
        b.iter(|| {
            verify_package_bytes(
                black_box(&at_budget),
                &fx.expected,
                &fx.trust,
                fx.params,
                &mut NoCache,
            )
            .expect("verifies")
        })
    });
    g.bench_function("at_budget_decode", |b| {
        b.iter(|| Package::from_cbor(black_box(&at_budget)).expect("decodes"))
    });
    g.finish();

    // ---- the signature checks alone ---------------------------------------
    let mut g = c.benchmark_group("signatures");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    let ed = key(Suite::Ed25519, b"bench/ed25519");
    let p256 = key(Suite::EcdsaP256Sha256, b"bench/p256");
    let msg = [7u8; 32];
    let (ed_pk, ed_sig) = (ed.public(), ed.sign(&msg));
    let (p_pk, p_sig) = (p256.public(), p256.sign(&msg));
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| verify(black_box(&ed_pk), black_box(&msg), black_box(&ed_sig)).expect("ok"))
    });
    g.bench_function("p256_verify", |b| {
        b.iter(|| verify(black_box(&p_pk), black_box(&msg), black_box(&p_sig)).expect("ok"))
    });
    for (name, sigs) in [
        ("verify_many_one_hop", &sigs1),
        ("verify_many_at_budget", &sigsn),
        ("verify_many_at_budget_no_certs", &sigsn_warm),
    ] {
        let checks = as_checks(sigs);
        g.bench_function(name, |b| {
            b.iter(|| verify_many(black_box(&checks)).expect("ok"))
        });
    }
    g.finish();

    // Paired: verification and its bare signature checks alternate, so that
    // load from other processes on the machine hits both alike.
    let paired =
        |pkg: &Package, cache: &mut dyn CertCache, sigs: &[(PublicKey, [u8; 32], Signature)]| {
            let checks = as_checks(sigs);
            let mut tv = Vec::with_capacity(PAIRED_ROUNDS);
            let mut ts = Vec::with_capacity(PAIRED_ROUNDS);
            for _ in 0..PAIRED_ROUNDS {
                let p = pkg.clone();
                let t = Instant::now();
                let r = verify_package(p, &fx.expected, &fx.trust, fx.params, &mut *cache);
                tv.push(t.elapsed());
                drop(black_box(r).expect("verifies"));
                let t = Instant::now();
                let r = verify_many(black_box(&checks));
                ts.push(t.elapsed());
                r.expect("ok");
            }
            (median(tv), median(ts))
        };
    let (v1, s1) = paired(&p1, &mut NoCache, &sigs1);
    let (vn, sn) = paired(&pn, &mut NoCache, &sigsn);
    let (vw, sw) = paired(&pn, &mut warmn, &sigsn_warm);
    vec![
        ("one hop, no cache", v1, s1),
        ("at budget, no cache", vn, sn),
        ("at budget, warm cache", vw, sw),
    ]
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(f64::NAN, |d| d.as_nanos() as f64)
}

/// One statistic (ns) of a benchmark from criterion's saved estimates:
/// `field` is "mean", "median" or "slope" (absent for batched routines).
fn estimate_ns(root: &Path, group: &str, name: &str, field: &str) -> Option<f64> {
    let path = root.join(group).join(name).join("new/estimates.json");
    let text = fs::read_to_string(path).ok()?;
    let key = format!("\"{field}\":");
    let rest = &text[text.find(&key)? + key.len()..];
    if rest.starts_with("null") {
        return None;
    }
    let p = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let num: String = rest[p..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        .collect();
    num.parse().ok()
}

/// Criterion's headline estimate (slope when it has one, else mean) and
/// the median, in ns.
fn estimates(root: &Path, group: &str, name: &str) -> Option<(f64, f64)> {
    let headline = estimate_ns(root, group, name, "slope")
        .or_else(|| estimate_ns(root, group, name, "mean"))?;
    Some((headline, estimate_ns(root, group, name, "median")?))
}

fn summary(paired: &[Paired]) {
    // target/release/deps/offline-… → target/criterion
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.join("criterion"))
        });
    let Some(root) = root else { return };
    let rows = [
        ("pay", "mem_one_hop"),
        ("pay", "mem_one_hop_checked"),
        ("pay", "mem_at_budget"),
        ("pay", "file_one_hop"),
        ("pay", "file_at_budget"),
        ("verify", "one_hop_no_cache"),
        ("verify", "one_hop_warm_cache"),
        ("verify", "at_budget_no_cache"),
        ("verify", "at_budget_warm_cache"),
        ("verify", "at_budget_bytes_no_cache"),
        ("verify", "at_budget_decode"),
        ("signatures", "ed25519_verify"),
        ("signatures", "p256_verify"),
        ("signatures", "verify_many_one_hop"),
        ("signatures", "verify_many_at_budget"),
        ("signatures", "verify_many_at_budget_no_certs"),
    ];
    println!("\n| benchmark | estimate (µs) | median (µs) |\n|---|---:|---:|");
    for (g, n) in rows {
        if let Some((e, m)) = estimates(&root, g, n) {
            println!("| {g}/{n} | {:.1} | {:.1} |", e / 1e3, m / 1e3);
        }
    }
    println!(
        "\n| verification vs its signature checks | verify (µs) | verify_many (µs) | overhead |\n|---|---:|---:|---:|"
    );
    for (label, verify_name, sigs_name) in [
        (
            "one hop, no cache",
            "one_hop_no_cache",
            "verify_many_one_hop",
        ),
        (
            "at budget, no cache",
            "at_budget_no_cache",
            "verify_many_at_budget",
        ),
        (
            "at budget, warm cache",
            "at_budget_warm_cache",
            "verify_many_at_budget_no_certs",
        ),
    ] {
        if let (Some((v, _)), Some((s, _))) = (
            estimates(&root, "verify", verify_name),
            estimates(&root, "signatures", sigs_name),
        ) {
            println!(
                "| {label} | {:.1} | {:.1} | {:+.1}% |",
                v / 1e3,
                s / 1e3,
                (v / s - 1.0) * 100.0
            );
        }
    }
    println!(
        "\n| paired ({PAIRED_ROUNDS} alternating rounds, medians) | verify (µs) | verify_many (µs) | overhead |\n|---|---:|---:|---:|"
    );
    for (label, v, s) in paired {
        println!(
            "| {label} | {:.1} | {:.1} | {:+.1}% |",
            v / 1e3,
            s / 1e3,
            (v / s - 1.0) * 100.0
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let paired = bench(&mut c);
    c.final_summary();
    summary(&paired);
}
