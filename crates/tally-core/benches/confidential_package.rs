//! Confidential packages (SPEC §4.9), one hop, 16-bit ranges, x86 one
//! core: the payee's verification (decode, every rule, its own opening)
//! against the clear package of the same payment, and the payer's side
//! (commitments, range proof, balanced blindings, sealed openings, signature);
//! and both for a whole token (one output, no range proof: decision 0031).
//!
//! `cargo bench -p tally-core --features testkit,confidential --bench confidential_package -j 1`

use criterion::{Criterion, criterion_group, criterion_main};
use tally_core::codec::Cbor;
use tally_core::confidential::fuzzing::PackageFixture;
use tally_core::confidential_record::build_transfer;
use tally_core::crypto::{PublicKey, Suite};
use tally_core::record::{OutPoint, Output, Record, Transfer};
use tally_core::testkit::{self, Scheme, TestEntropy};
use tally_core::verify::{Expected, NoCache, verify_package_bytes, verify_packages_for_settlement};
use tally_core::{Amount, Package};

fn bench(c: &mut Criterion) {
    let f = PackageFixture::new();
    let bytes = f.package.to_cbor();
    println!("confidential one-hop package: {} bytes", bytes.len());
    c.bench_function("payee verify, confidential one hop (16 bits)", |b| {
        b.iter(|| {
            let p = Package::from_cbor(&bytes).unwrap();
            f.verify(p).unwrap()
        })
    });

    // A whole token (decision 0031): one output, no range proof.
    let fw = PackageFixture::whole();
    let whole_bytes = fw.package.to_cbor();
    println!(
        "confidential whole-token one-hop package: {} bytes",
        whole_bytes.len()
    );
    c.bench_function("payee verify, confidential whole token (one output)", |b| {
        b.iter(|| {
            let p = Package::from_cbor(&whole_bytes).unwrap();
            fw.verify(p).unwrap()
        })
    });

    // The same payment in clear.
    let mut s = Scheme::new(Suite::Ed25519);
    let trust = s.trust();
    let payer = testkit::key(Suite::Ed25519, b"fixture-payer");
    let issue = s.issue(payer.public(), 1000);
    let mut t = Transfer {
        inputs: vec![OutPoint {
            record: issue.id(),
            index: 0,
        }],
        outputs: vec![
            Output {
                value: Amount(250),
                owner: f.payee.public(),
            },
            Output {
                value: Amount(750),
                owner: payer.public(),
            },
        ],
        nonce: f.expected.nonce,
        counter: 1,
        signatures: vec![],
        confidential: None,
        stream: None,
    };
    t.signatures = vec![payer.sign(&t.id().0)];
    let clear = Package {
        transfer: t,
        ancestry: vec![Record::Issue(issue)],
        certificates: vec![s.certify(payer.public(), tally_core::policy::device_class::PHONE, 0)],
    }
    .to_cbor();
    println!("clear one-hop package: {} bytes", clear.len());
    let exp = Expected {
        payee: f.payee.public(),
        amount: Amount(250),
        nonce: f.expected.nonce,
        stream: None,
    };
    c.bench_function("payee verify, clear one hop", |b| {
        b.iter(|| verify_package_bytes(&clear, &exp, &trust, s.params(32), &mut NoCache).unwrap())
    });

    // Payer: everything PAY adds for confidentiality, plus the signature.
    let mut cs = Scheme::confidential(Suite::Ed25519);
    let ctrust = cs.trust();
    let gens = ctrust.range_gens().unwrap();
    let cissue = cs.issue(payer.public(), 1000);
    let p2 = payer.clone();
    let key_for = move |k: &PublicKey| (*k == p2.public()).then(|| p2.clone());
    let mut rng = TestEntropy::new(b"bench-pay");
    let (input, outs) =
        tally_core::confidential::fuzzing::payment_of(&cissue, &payer, &f.payee.public(), 250);
    c.bench_function("payer build transfer, confidential (16 bits × 2)", |b| {
        b.iter(|| {
            build_transfer(
                gens,
                &tally_core::testkit::Scheme::audit_key(),
                std::slice::from_ref(&input),
                &outs,
                [7; 16],
                1,
                &key_for,
                &mut rng,
            )
            .unwrap()
        })
    });

    let (_, whole) =
        tally_core::confidential::fuzzing::payment_of(&cissue, &payer, &f.payee.public(), 1000);
    c.bench_function(
        "payer build transfer, confidential whole token (one output)",
        |b| {
            b.iter(|| {
                build_transfer(
                    gens,
                    &tally_core::testkit::Scheme::audit_key(),
                    std::slice::from_ref(&input),
                    &whole,
                    [7; 16],
                    1,
                    &key_for,
                    &mut rng,
                )
                .unwrap()
            })
        },
    );

    // Settlement: 64 confidential one-hop packages in one call (range
    // proofs checked per package, signatures in one batch).
    let pkgs: Vec<Package> = (0..64).map(|_| f.package.clone()).collect();
    let mut group = c.benchmark_group("settlement");
    group.sample_size(10);
    group.bench_function("settlement verify 64 confidential one-hop packages", |b| {
        b.iter(|| verify_packages_for_settlement(pkgs.clone(), &f.trust, f.params, &mut NoCache))
    });
    // What settlement runs (decision 0028): the same verification with
    // the audit seals opened (C7), against the proofs (C3, C4) + C7.
    #[cfg(feature = "sealing")]
    {
        use tally_core::verify::verify_package_groups_for_settlement_opened;
        let key =
            tally_core::sealed::OpeningKey::from_seed(&tally_core::testkit::Scheme::AUDIT_SEED);
        let bits = f.trust.range_gens().unwrap().bits();
        group.bench_function(
            "settlement verify by openings (C7) 64 confidential one-hop packages",
            |b| {
                b.iter(|| {
                    verify_package_groups_for_settlement_opened(
                        vec![pkgs.clone()],
                        &f.trust,
                        f.params,
                        &mut NoCache,
                        &key,
                        bits,
                        &|_| false,
                        false,
                    )
                })
            },
        );
        group.bench_function(
            "settlement verify proofs (C3, C4) then C7 64 confidential one-hop packages",
            |b| {
                b.iter(|| {
                    verify_packages_for_settlement(pkgs.clone(), &f.trust, f.params, &mut NoCache)
                        .into_iter()
                        .map(|v| v.unwrap().open_audit(&key, bits))
                        .collect::<Vec<_>>()
                })
            },
        );
    }
    let clear_pkgs: Vec<Package> = (0..64)
        .map(|_| Package::from_cbor(&clear).unwrap())
        .collect();
    group.bench_function("settlement verify 64 clear one-hop packages", |b| {
        b.iter(|| {
            verify_packages_for_settlement(clear_pkgs.clone(), &trust, s.params(32), &mut NoCache)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
