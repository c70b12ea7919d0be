//! The confidential-amounts core on one core: commitments, range proofs
//! (1 and 2 outputs at 16, 32 and 64 bits), a settlement-sized batch of 64
//! proofs, the balance of commitments (C4) and the sealed opening. Object sizes are
//! printed once at the start. Figures go into
//! docs/decisions/0017-confidential-amounts.md.
//!
//! `cargo bench -p tally-core --features testkit,confidential --bench confidential -j 1`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tally_core::Amount;
use tally_core::codec::Cbor;
use tally_core::confidential::{
    Opening, RangeBits, RangeCheck, RangeGens, RangeProof, SealedOpening, balanced_openings,
    batch_verify, check_balance,
};
use tally_core::crypto::{Suite, tagged_hash};
use tally_core::testkit::{self, TestEntropy};

fn sizes() {
    let mut rng = TestEntropy::new(b"bench-sizes");
    let ctx = tagged_hash(b"bench", &[b"sizes"]);
    let o = Opening::random(Amount(250), &mut rng);
    let c = o.commit();
    println!("size commitment (CBOR): {} bytes", c.to_cbor().len());
    println!("size opening (CBOR): {} bytes", o.to_cbor().len());
    for bits in [RangeBits::Bits16, RangeBits::Bits32, RangeBits::Bits64] {
        let g = RangeGens::new(bits, 4).unwrap();
        for n in [1usize, 2, 4] {
            let os: Vec<Opening> = (0..n)
                .map(|_| Opening::random(Amount(7), &mut rng))
                .collect();
            let p = RangeProof::prove(&g, &ctx, &os, &mut rng).unwrap();
            println!(
                "size range proof {} bits × {n} (CBOR): {} bytes",
                bits.bits(),
                p.to_cbor().len()
            );
        }
    }
    let outs = [
        Opening::random(Amount(250), &mut rng),
        Opening::random(Amount(750), &mut rng),
    ];
    let payee = testkit::key(Suite::Ed25519, b"payee");
    let s =
        SealedOpening::seal(&payee.public(), &ctx, &outs[0].commit(), &outs[0], &mut rng).unwrap();
    println!("size sealed opening (CBOR): {} bytes", s.to_cbor().len());
}

fn bench(c: &mut Criterion) {
    sizes();
    let mut rng = TestEntropy::new(b"bench");
    let ctx = tagged_hash(b"bench", &[b"ctx"]);

    c.bench_function("commit", |b| {
        let o = Opening::random(Amount(250), &mut rng);
        b.iter(|| black_box(o.commit()))
    });

    for bits in [RangeBits::Bits16, RangeBits::Bits32, RangeBits::Bits64] {
        c.bench_function(&format!("range gens {} bits × 2", bits.bits()), |b| {
            b.iter(|| black_box(RangeGens::new(bits, 2).unwrap()))
        });
        let g = RangeGens::new(bits, 2).unwrap();
        for n in [1usize, 2] {
            let os: Vec<Opening> = (0..n)
                .map(|_| Opening::random(Amount(250), &mut rng))
                .collect();
            let cs: Vec<_> = os.iter().map(Opening::commit).collect();
            c.bench_function(&format!("prove {} bits × {n}", bits.bits()), |b| {
                b.iter(|| black_box(RangeProof::prove(&g, &ctx, &os, &mut rng).unwrap()))
            });
            let p = RangeProof::prove(&g, &ctx, &os, &mut rng).unwrap();
            c.bench_function(&format!("verify {} bits × {n}", bits.bits()), |b| {
                b.iter(|| p.verify(&g, &ctx, &cs).unwrap())
            });
        }
    }

    // Settlement: 64 one-hop transfers' proofs (2 outputs, 16 bits), each
    // under its own context, checked as one batch.
    let g = RangeGens::new(RangeBits::Bits16, 2).unwrap();
    let items: Vec<_> = (0..64u32)
        .map(|i| {
            let ctx = tagged_hash(b"bench", &[&i.to_be_bytes()]);
            let os = [
                Opening::random(Amount(250), &mut rng),
                Opening::random(Amount(750), &mut rng),
            ];
            let p = RangeProof::prove(&g, &ctx, &os, &mut rng).unwrap();
            (ctx, vec![os[0].commit(), os[1].commit()], p)
        })
        .collect();
    let checks: Vec<RangeCheck<'_>> = items
        .iter()
        .map(|(ctx, cs, p)| RangeCheck {
            proof: p,
            commitments: cs,
            context: ctx,
        })
        .collect();
    let mut group = c.benchmark_group("batch");
    group.sample_size(10);
    group.bench_function("batch verify 64 × (16 bits × 2)", |b| {
        b.iter(|| batch_verify(&g, &checks).unwrap())
    });
    group.bench_function("verify 64 × (16 bits × 2) one by one", |b| {
        b.iter(|| {
            for ch in &checks {
                ch.proof.verify(&g, ch.context, ch.commitments).unwrap();
            }
        })
    });
    group.finish();

    let ins = [Opening::random(Amount(1000), &mut rng)];
    let values = [Amount(250), Amount(750)];
    c.bench_function("balanced openings (1 in, 2 out)", |b| {
        b.iter(|| black_box(balanced_openings(&ins, &values, &mut rng).unwrap()))
    });
    let outs = balanced_openings(&ins, &values, &mut rng).unwrap();
    let in_c = [ins[0].commit()];
    let out_c = [outs[0].commit(), outs[1].commit()];
    c.bench_function("balance check (1 in, 2 out)", |b| {
        b.iter(|| check_balance(&in_c, &out_c).unwrap())
    });

    let payee = testkit::key(Suite::Ed25519, b"payee");
    let pk = payee.public();
    c.bench_function("opening seal", |b| {
        b.iter(|| black_box(SealedOpening::seal(&pk, &ctx, &out_c[0], &outs[0], &mut rng).unwrap()))
    });
    let s = SealedOpening::seal(&pk, &ctx, &out_c[0], &outs[0], &mut rng).unwrap();
    c.bench_function("opening open + check", |b| {
        b.iter(|| black_box(s.open(&payee, &ctx, &out_c[0]).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
