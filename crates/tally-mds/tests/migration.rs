//! A store written by schema version 1 (edges in `mds_outputs` and
//! `mds_spends`, one row each) keeps its token graph after migration 2
//! packs new records' edges into their own row: outputs and consumptions
//! of both layouts are seen together, before and after a reopen.

use tally_core::package::sign_transfer;
use tally_core::testkit::{Scheme, key};
use tally_core::{Amount, Hash32, OutPoint, Output, Record, SecretKey, Suite};
use tally_mds::{AlertKind, IngestRecord, MIGRATIONS, Mds, MdsConfig, Verdict};
use tally_store::{Migrations, Store, StoreError, Value};

const ISSUE_V1: Hash32 = Hash32([1; 32]);
const TRANSFER_V1: Hash32 = Hash32([2; 32]);

fn sk(label: &str) -> SecretKey {
    key(Suite::Ed25519, label.as_bytes())
}

fn b(h: &Hash32) -> Value {
    Value::Bytes(h.0.to_vec())
}

/// What version 1 wrote for: an Issue of 100 + 50 to `a`, and a transfer
/// of the 100 from `a` to `b` (the spend row has its own `seq`).
fn write_v1(store: &Store, dcp: Hash32, a: Hash32, b_: Hash32) {
    static V1: Migrations = Migrations {
        component: "mds",
        steps: MIGRATIONS.steps.split_at(1).0,
    };
    store.migrate(&[&V1]).unwrap_or_else(|e| panic!("{e}"));
    store
        .transact(|tx| {
            let record = "INSERT INTO mds_records (id, seq, kind, epoch, status, payer, payee, value, payment, depth, redemption, nonce) VALUES ($1, $2, $3, 1, 0, $4, $5, $6, $7, $8, 0, $9)";
            tx.execute(
                record,
                &[
                    b(&ISSUE_V1),
                    Value::Int(1),
                    Value::Int(0),
                    b(&dcp),
                    b(&a),
                    Value::Int(150),
                    Value::Int(0),
                    Value::Int(0),
                    Value::Bytes(Vec::new()),
                ],
            )?;
            tx.execute(
                record,
                &[
                    b(&TRANSFER_V1),
                    Value::Int(3),
                    Value::Int(1),
                    b(&a),
                    b(&b_),
                    Value::Int(100),
                    Value::Int(100),
                    Value::Int(1),
                    Value::Bytes(vec![7; 16]),
                ],
            )?;
            let output = "INSERT INTO mds_outputs (record, idx, owner, value, class, depth, redeemed) VALUES ($1, $2, $3, $4, 1, $5, 0)";
            for (rec, idx, owner, value, depth) in [
                (ISSUE_V1, 0, a, 100, 0),
                (ISSUE_V1, 1, a, 50, 0),
                (TRANSFER_V1, 0, b_, 100, 1),
            ] {
                tx.execute(
                    output,
                    &[
                        b(&rec),
                        Value::Int(idx),
                        b(&owner),
                        Value::Int(value),
                        Value::Int(depth),
                    ],
                )?;
            }
            tx.execute(
                "INSERT INTO mds_spends (seq, record, idx, consumer) VALUES (2, $1, 0, $2)",
                &[b(&ISSUE_V1), b(&TRANSFER_V1)],
            )?;
            Ok::<_, StoreError>(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

fn spend(from: &SecretKey, input: OutPoint, value: u64, to: &SecretKey, n: u8) -> IngestRecord {
    let k = from.clone();
    let t = sign_transfer(
        vec![input],
        &[from.public()],
        vec![Output {
            value: Amount(value),
            owner: to.public(),
        }],
        [n; 16],
        u64::from(n),
        &|_| Some(k.clone()),
    )
    .unwrap_or_else(|| panic!("sign"));
    IngestRecord::new(Record::Transfer(t), 2, Verdict::Verified)
}

#[test]
fn v1_edges_survive_the_packing_migration() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("mds.db");
    let scheme = Scheme::new(Suite::Ed25519);
    let dcp = scheme.dcp.public().id();
    let cfg = MdsConfig::new(vec![dcp], vec![dcp], 10_000);
    let (a, b_, c) = (sk("a"), sk("b"), sk("c"));
    write_v1(
        &Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}")),
        dcp,
        a.public().id(),
        b_.public().id(),
    );
    let open = || {
        Mds::open(
            Store::sqlite(&path).unwrap_or_else(|e| panic!("{e}")),
            cfg.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let first = OutPoint {
        record: ISSUE_V1,
        index: 0,
    };
    let second = OutPoint {
        record: ISSUE_V1,
        index: 1,
    };
    let paid = OutPoint {
        record: TRANSFER_V1,
        index: 0,
    };
    let honest = spend(&a, second, 50, &c, 1);
    {
        let mds = open();
        // A consumption written by version 1 is still the first one.
        let out = mds
            .ingest(&[spend(&a, first, 100, &c, 9)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.alerts.len(), 1, "{:?}", out.alerts);
        assert_eq!(out.alerts[0].kind, AlertKind::DoubleSpend);
        assert_eq!(out.alerts[0].records[0], TRANSFER_V1);
        assert_eq!(out.alerts[0].offender, Some(a.public().id()));
        // Unspent version-1 outputs spend normally.
        let out = mds
            .ingest(&[honest.clone(), spend(&b_, paid, 100, &c, 2)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.ingested, out.alerts.len()), (2, 0), "{:?}", out.alerts);
    }
    // After a reopen the maps come from both layouts: a packed
    // consumption of a version-1 output is the first one.
    let mds = open();
    let out = mds
        .ingest(&[spend(&a, second, 50, &b_, 3)])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.alerts.len(), 1, "{:?}", out.alerts);
    assert_eq!(out.alerts[0].kind, AlertKind::DoubleSpend);
    assert_eq!(
        out.alerts[0].records,
        vec![honest.id, out.alerts[0].subject]
    );
    assert_eq!(mds.ingest(&[honest]).map(|o| o.duplicates), Ok(1));
}
