//! The MDS's store contract ([`MdsDb`]), written once and run on SQLite
//! (in memory) and PostgreSQL (a fresh schema per test; skipped loudly
//! without `TALLY_TEST_DATABASE_URL`, a failure under `CI`), and the guard
//! that keeps every SQL statement of this crate in `src/db.rs`.

use tally_core::{Epoch, Hash32, OutPoint};
use tally_mds::db::{
    AlertEvent, CounterRow, LoadedRecord, MdsDb, OpenRequest, OpenRequestState, RecordRow,
    SetAside, V1Output, V1Spend,
};
use tally_mds::{
    AMOUNT_STORED_MAX, Alert, AlertKind, AlertState, EpochPayments, MIGRATIONS, MdsError,
};
use tally_store::{Store, StoreError, Tx, Value};

fn h(first: u8, last: u8) -> Hash32 {
    let mut b = [first; 32];
    b[31] = last;
    Hash32(b)
}

/// Runs `f` in one transaction, panicking on an error.
fn tx<R>(s: &Store, mut f: impl FnMut(&mut dyn Tx) -> Result<R, MdsError>) -> R {
    s.transact(|tx| f(tx)).unwrap_or_else(|e| panic!("{e}"))
}

fn is_constraint<R: std::fmt::Debug>(r: Result<R, MdsError>) {
    assert!(
        matches!(r, Err(MdsError::Store(StoreError::Constraint(_)))),
        "{r:?}"
    );
}

/// A record row as loaded back: owned, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loaded {
    seq: i64,
    id: Hash32,
    kind: i64,
    status: i64,
    epoch: Epoch,
    payer: Option<Hash32>,
    payee: Option<Hash32>,
    payment: u64,
    depth: u64,
    redemption: bool,
    outputs: Option<Vec<u8>>,
    inputs: Option<Vec<u8>>,
    stream: Option<Vec<u8>>,
}

impl From<LoadedRecord<'_>> for Loaded {
    fn from(r: LoadedRecord<'_>) -> Self {
        Loaded {
            seq: r.seq,
            id: r.id,
            kind: r.kind,
            status: r.status,
            epoch: r.epoch,
            payer: r.payer,
            payee: r.payee,
            payment: r.payment,
            depth: r.depth,
            redemption: r.redemption,
            outputs: r.outputs.map(<[u8]>::to_vec),
            inputs: r.inputs.map(<[u8]>::to_vec),
            stream: r.stream.map(<[u8]>::to_vec),
        }
    }
}

fn loaded(s: &Store) -> Vec<Loaded> {
    tx(s, |t| {
        let mut v = Vec::new();
        t.load_records(|r| {
            v.push(Loaded::from(r));
            Ok(())
        })?;
        Ok(v)
    })
}

fn row(seq: i64) -> RecordRow {
    RecordRow {
        seq,
        id: h(0x1d, seq as u8),
        kind: seq % 2,
        epoch: seq as Epoch,
        status: 0,
        payer: Some(h(0xa0, seq as u8)),
        payee: Some(h(0xb0, seq as u8)),
        value: seq as u64 % 1000 * 10,
        payment: seq as u64,
        depth: seq as u64 % 5,
        redemption: seq % 3 == 0,
        nonce: Some([seq as u8; 16]),
        outputs: vec![seq as u8; 42],
        inputs: vec![seq as u8; 33],
        // A stream part on every fourth row, NULL on the others.
        stream: (seq % 4 == 0).then(|| vec![seq as u8; 5]),
    }
}

fn as_loaded(r: &RecordRow) -> Loaded {
    Loaded {
        seq: r.seq,
        id: r.id,
        kind: r.kind,
        status: r.status,
        epoch: r.epoch,
        payer: r.payer,
        payee: r.payee,
        payment: r.payment,
        depth: r.depth,
        redemption: r.redemption,
        outputs: Some(r.outputs.clone()),
        inputs: Some(r.inputs.clone()),
        stream: r.stream.clone(),
    }
}

fn records(s: &Store) {
    assert!(loaded(s).is_empty());
    // 101 rows: statements of 64, 32, 4 and 1 rows; given out of order.
    let mut rows: Vec<RecordRow> = (1..=101).map(row).collect();
    rows.reverse();
    // Absent parties, nonce and edges: empty bytes, not NULL; the
    // amounts' and the epoch's extremes.
    rows[0] = RecordRow {
        payer: None,
        payee: None,
        nonce: None,
        outputs: Vec::new(),
        inputs: Vec::new(),
        value: AMOUNT_STORED_MAX,
        payment: AMOUNT_STORED_MAX,
        depth: AMOUNT_STORED_MAX,
        epoch: Epoch::MAX,
        ..row(i64::MAX)
    };
    tx(s, |t| t.insert_records(rows.clone()));
    let mut want: Vec<Loaded> = rows.iter().map(as_loaded).collect();
    want.sort_by_key(|r| r.seq);
    assert_eq!(loaded(s), want, "every row, by seq");
    let top = loaded(s).pop().unwrap_or_else(|| panic!("rows"));
    assert_eq!(
        (top.payer, top.payee, top.outputs, top.payment),
        (None, None, Some(Vec::new()), AMOUNT_STORED_MAX)
    );
    // Past BIGINT: refused, and nothing of that call is written.
    let over = s.transact(|t| {
        t.insert_records(vec![
            row(200),
            RecordRow {
                value: AMOUNT_STORED_MAX + 1,
                ..row(201)
            },
        ])
    });
    assert_eq!(over, Err(MdsError::Overflow));
    assert_eq!(loaded(s).len(), 101);
    // The sequence is the key.
    is_constraint(s.transact(|t| t.insert_records(vec![row(5)])));
    assert_eq!(loaded(s).len(), 101);
    tx(s, |t| t.insert_records(Vec::new()));
    assert_eq!(loaded(s).len(), 101);
}

fn unpaired_transfers(s: &Store) {
    let (payee, nonce) = (h(0xb0, 1), [7u8; 16]);
    let base = RecordRow {
        payee: Some(payee),
        nonce: Some(nonce),
        payment: 40,
        redemption: false,
        status: 0,
        ..row(1)
    };
    assert_eq!(tx(s, |t| t.unpaired_transfer(&payee, &nonce, 40)), None);
    tx(s, |t| {
        t.insert_records(vec![
            // A counterfeit, a redemption and another amount do not pair.
            RecordRow {
                status: 1,
                id: h(0xc1, 0),
                ..base.clone()
            },
            RecordRow {
                seq: 2,
                redemption: true,
                id: h(0xc2, 0),
                ..base.clone()
            },
            RecordRow {
                seq: 3,
                payment: 41,
                id: h(0xc3, 0),
                ..base.clone()
            },
        ])
    });
    assert_eq!(tx(s, |t| t.unpaired_transfer(&payee, &nonce, 40)), None);
    assert_eq!(
        tx(s, |t| t.unpaired_transfer(&payee, &nonce, 41)),
        Some(h(0xc3, 0))
    );
    tx(s, |t| {
        t.insert_records(vec![RecordRow {
            seq: 4,
            id: h(0xc4, 0),
            ..base.clone()
        }])
    });
    assert_eq!(
        tx(s, |t| t.unpaired_transfer(&payee, &nonce, 40)),
        Some(h(0xc4, 0))
    );
    assert_eq!(tx(s, |t| t.unpaired_transfer(&payee, &[8; 16], 40)), None);
    assert_eq!(
        tx(s, |t| t.unpaired_transfer(&h(0xb0, 2), &nonce, 40)),
        None
    );
    let over = s.transact(|t| t.unpaired_transfer(&payee, &nonce, u64::MAX));
    assert_eq!(over, Err(MdsError::Overflow));
}

/// Rows as schema version 1 left them after migration 2 (edges in their
/// own tables, NULL packed edges), read back through the trait.
fn version_1_rows(s: &Store) {
    let b = |h: Hash32| Value::Bytes(h.0.to_vec());
    s.transact(|t| {
        t.execute(
            "INSERT INTO mds_records (seq, id, kind, epoch, status, payer, payee, value, payment, depth, redemption, nonce) VALUES (7, $1, 1, 3, 0, $2, $3, 9, 9, 2, 0, $4)",
            &[b(h(0x11, 0)), b(h(0xa1, 0)), b(h(0xb1, 0)), Value::Bytes(vec![1; 16])],
        )?;
        for (seq, idx) in [(9i64, 1i64), (8, 0)] {
            t.execute(
                "INSERT INTO mds_spends (seq, record, idx, consumer) VALUES ($1, $2, $3, $4)",
                &[Value::Int(seq), b(h(0x10, 0)), Value::Int(idx), b(h(0x11, 0))],
            )?;
        }
        t.execute(
            "INSERT INTO mds_outputs (record, idx, owner, value, class, depth, redeemed) VALUES ($1, 0, $2, $3, 255, 1, 1)",
            &[b(h(0x10, 0)), b(h(0xa1, 0)), Value::Int(i64::MAX)],
        )?;
        Ok::<_, StoreError>(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded(s),
        vec![Loaded {
            seq: 7,
            id: h(0x11, 0),
            kind: 1,
            status: 0,
            epoch: 3,
            payer: Some(h(0xa1, 0)),
            payee: Some(h(0xb1, 0)),
            payment: 9,
            depth: 2,
            redemption: false,
            outputs: None,
            inputs: None,
            stream: None,
        }]
    );
    let outputs = tx(s, |t| {
        let mut v = Vec::new();
        t.load_v1_outputs(|o| {
            v.push(o);
            Ok(())
        })?;
        Ok(v)
    });
    assert_eq!(
        outputs,
        vec![V1Output {
            outpoint: OutPoint {
                record: h(0x10, 0),
                index: 0
            },
            owner: h(0xa1, 0),
            value: i64::MAX as u64,
            depth: 1,
            class: 255,
            redeemed: true,
        }]
    );
    let spends = tx(s, |t| {
        let mut v = Vec::new();
        t.load_v1_spends(|sp| {
            v.push(sp);
            Ok(())
        })?;
        Ok(v)
    });
    let spend = |seq, index| V1Spend {
        seq,
        outpoint: OutPoint {
            record: h(0x10, 0),
            index,
        },
        consumer: h(0x11, 0),
    };
    assert_eq!(spends, vec![spend(8, 0), spend(9, 1)], "by seq");
    // A callback's error stops the load and comes back.
    let stopped = s.transact(|t| t.load_records(|_| Err(MdsError::Corrupt("stop".into()))));
    assert_eq!(stopped, Err(MdsError::Corrupt("stop".into())));
}

fn alert(id: i64, kind: AlertKind) -> Alert {
    Alert {
        id,
        kind,
        severity: kind.severity(),
        state: AlertState::Open,
        epoch: id as u32,
        subject: h(0x5b, id as u8),
        offender: None,
        records: Vec::new(),
        amount: 0,
        outpoint: None,
    }
}

fn alerts(s: &Store) {
    assert_eq!(tx(s, |t| t.last_alert_id()), 0);
    assert!(tx(s, |t| t.alerts()).is_empty());
    assert_eq!(tx(s, |t| t.alert(1)), None);
    let full = Alert {
        offender: Some(h(0x0f, 0)),
        records: vec![h(1, 0), h(2, 0), h(3, 0)],
        amount: AMOUNT_STORED_MAX,
        outpoint: Some((h(0x09, 0), u8::MAX)),
        epoch: u32::MAX,
        ..alert(3, AlertKind::DoubleSpend)
    };
    let (a1, a2) = (
        alert(1, AlertKind::Structuring),
        alert(2, AlertKind::IngestionFailed),
    );
    for a in [&full, &a1, &a2] {
        tx(s, |t| t.insert_alert(a));
    }
    assert_eq!(tx(s, |t| t.alert(3)), Some(full.clone()));
    assert_eq!(tx(s, |t| t.alert(1)), Some(a1.clone()));
    assert_eq!(
        tx(s, |t| t.alerts()),
        vec![a1.clone(), a2.clone(), full.clone()]
    );
    assert_eq!(tx(s, |t| t.last_alert_id()), 3);
    assert_eq!(tx(s, |t| t.open_alert_count()), 3);
    is_constraint(s.transact(|t| t.insert_alert(&a1)));
    let over = s.transact(|t| {
        t.insert_alert(&Alert {
            amount: AMOUNT_STORED_MAX + 1,
            ..alert(9, AlertKind::Velocity)
        })
    });
    assert_eq!(over, Err(MdsError::Overflow));
    assert_eq!(tx(s, |t| t.alert(9)), None);
    // Moves only from the state named.
    assert!(!tx(s, |t| t.move_alert(
        1,
        AlertState::EscrowOpened,
        AlertState::Closed
    )));
    assert!(!tx(s, |t| t.move_alert(
        42,
        AlertState::Open,
        AlertState::Closed
    )));
    assert!(tx(s, |t| t.move_alert(
        1,
        AlertState::Open,
        AlertState::Closed
    )));
    assert_eq!(
        tx(s, |t| t.alert(1)).map(|a| a.state),
        Some(AlertState::Closed)
    );
    assert_eq!(
        tx(s, |t| t.alert(2)).map(|a| a.state),
        Some(AlertState::Open)
    );
    assert_eq!(tx(s, |t| t.open_alert_count()), 2);
    assert!(tx(s, |t| t.move_alert(
        3,
        AlertState::Open,
        AlertState::EscrowOpened
    )));
    assert_eq!(tx(s, |t| t.open_alert_count()), 2, "not closed is open");
    // The highest id, not the count.
    tx(s, |t| t.insert_alert(&alert(i64::MAX, AlertKind::FanIn)));
    assert_eq!(tx(s, |t| t.last_alert_id()), i64::MAX);
}

fn alert_events(s: &Store) {
    let ev = |from, to, note: &str| AlertEvent {
        from,
        to,
        note: note.to_string(),
    };
    assert_eq!(tx(s, |t| t.alert_event_count(1)), 0);
    assert!(tx(s, |t| t.alert_events(1)).is_empty());
    let e1 = ev(AlertState::Open, AlertState::EscrowOpened, "");
    let e2 = ev(
        AlertState::EscrowOpened,
        AlertState::DeviceRevoked,
        "order nº 7",
    );
    tx(s, |t| t.insert_alert_event(1, 2, &e2));
    tx(s, |t| t.insert_alert_event(1, 1, &e1));
    tx(s, |t| {
        t.insert_alert_event(2, 1, &ev(AlertState::Open, AlertState::Closed, "x"))
    });
    assert_eq!(
        tx(s, |t| t.alert_events(1)),
        vec![e1.clone(), e2],
        "by step"
    );
    assert_eq!(tx(s, |t| t.alert_event_count(1)), 2);
    assert_eq!(tx(s, |t| t.alert_event_count(2)), 1);
    is_constraint(s.transact(|t| t.insert_alert_event(1, 1, &e1)));
    assert_eq!(tx(s, |t| t.alert_event_count(1)), 2);
}

fn set_aside(s: &Store) {
    let id = h(0x5a, 1);
    assert_eq!(tx(s, |t| t.set_aside_alert(&id)), None);
    assert_eq!(tx(s, |t| t.set_aside_body(&id)), None);
    assert_eq!(tx(s, |t| t.set_aside_count()), 0);
    let a = alert(4, AlertKind::IngestionFailed);
    tx(s, |t| t.insert_alert(&a));
    tx(s, |t| t.insert_alert(&alert(5, AlertKind::IngestionFailed)));
    let entry = SetAside {
        id,
        alert: 4,
        code: u16::MAX,
        epoch: Epoch::MAX,
        body: b"row",
    };
    tx(s, |t| t.insert_set_aside(&entry));
    tx(s, |t| {
        t.insert_set_aside(&SetAside {
            id: h(0x5a, 2),
            alert: 5,
            body: &[],
            ..entry.clone()
        })
    });
    assert_eq!(tx(s, |t| t.set_aside_alert(&id)), Some(a));
    assert_eq!(tx(s, |t| t.set_aside_body(&id)), Some(b"row".to_vec()));
    assert_eq!(tx(s, |t| t.set_aside_body(&h(0x5a, 2))), Some(Vec::new()));
    assert_eq!(tx(s, |t| t.set_aside_count()), 2);
    is_constraint(s.transact(|t| t.insert_set_aside(&entry)));
    assert_eq!(tx(s, |t| t.set_aside_count()), 2);
}

fn open_requests(s: &Store) {
    let (payee, nonce) = (h(0xb0, 0), [3u8; 16]);
    assert_eq!(tx(s, |t| t.open_request(&payee, &nonce)), None);
    let req = OpenRequest {
        payee,
        nonce,
        amount: AMOUNT_STORED_MAX,
        epoch: Epoch::MAX,
        paired_with: None,
    };
    tx(s, |t| t.insert_open_request(&req));
    let state = |paired_with| OpenRequestState {
        amount: AMOUNT_STORED_MAX,
        paired_with,
    };
    assert_eq!(tx(s, |t| t.open_request(&payee, &nonce)), Some(state(None)));
    // The same payee, another request; another payee, the same nonce.
    assert_eq!(tx(s, |t| t.open_request(&payee, &[4; 16])), None);
    assert_eq!(tx(s, |t| t.open_request(&h(0xb0, 1), &nonce)), None);
    let (t1, t2) = (h(0x71, 1), h(0x71, 2));
    assert!(
        !tx(s, |t| t.pair_open_request(&payee, &nonce, &t1, 5)),
        "amount"
    );
    assert!(tx(s, |t| t.pair_open_request(
        &payee,
        &nonce,
        &t1,
        AMOUNT_STORED_MAX
    )));
    assert!(
        !tx(s, |t| t.pair_open_request(
            &payee,
            &nonce,
            &t2,
            AMOUNT_STORED_MAX
        )),
        "paired once"
    );
    assert_eq!(
        tx(s, |t| t.open_request(&payee, &nonce)),
        Some(state(Some(t1)))
    );
    let paired = OpenRequest {
        nonce: [5; 16],
        paired_with: Some(t2),
        ..req.clone()
    };
    tx(s, |t| t.insert_open_request(&paired));
    assert_eq!(
        tx(s, |t| t.open_request(&payee, &[5; 16])),
        Some(state(Some(t2)))
    );
    is_constraint(s.transact(|t| t.insert_open_request(&req)));
    let over = s.transact(|t| {
        t.insert_open_request(&OpenRequest {
            nonce: [6; 16],
            amount: u64::MAX,
            ..req.clone()
        })
    });
    assert_eq!(over, Err(MdsError::Overflow));
    assert_eq!(tx(s, |t| t.open_request(&payee, &[6; 16])), None);
}

fn counters_and_epochs(s: &Store) {
    assert!(tx(s, |t| t.epoch_payments()).is_empty());
    tx(s, |t| t.add_epoch_payments(5, 1, 10));
    tx(s, |t| {
        t.add_epoch_payments(Epoch::MAX, 2, AMOUNT_STORED_MAX)
    });
    tx(s, |t| t.add_epoch_payments(5, 1, 10));
    tx(s, |t| t.add_epoch_payments(0, 0, 0));
    let ep = |epoch, count, value| EpochPayments {
        epoch,
        count,
        value,
    };
    assert_eq!(
        tx(s, |t| t.epoch_payments()),
        vec![
            ep(0, 0, 0),
            ep(5, 2, 20),
            ep(Epoch::MAX, 2, AMOUNT_STORED_MAX)
        ],
        "by epoch"
    );
    let over = s.transact(|t| t.add_epoch_payments(5, u64::MAX, 1));
    assert_eq!(over, Err(MdsError::Overflow));
    let counters = |s: &Store| {
        let mut c = tx(s, |t| t.counters());
        c.sort_by(|a, b| a.name.cmp(&b.name));
        c
    };
    let initial = counters(s);
    assert_eq!(initial.len(), 13, "{initial:?}");
    assert!(initial.iter().all(|c| c.value == 0));
    let value = |s: &Store, name: &str| {
        counters(s)
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
    };
    tx(s, |t| t.add_counter("records", 5));
    tx(s, |t| t.add_counter("records", -2));
    tx(s, |t| t.add_counter("holdings_class_7", i64::MAX));
    assert_eq!(value(s, "records"), Some(3));
    assert_eq!(value(s, "holdings_class_7"), Some(i64::MAX as u64));
    assert_eq!(value(s, "issued"), Some(0));
    tx(s, |t| t.raise_offline_epochs_max(9));
    tx(s, |t| t.raise_offline_epochs_max(4));
    assert_eq!(value(s, "offline_epochs_max"), Some(9), "only raised");
    assert_eq!(counters(s).len(), 14);
    assert!(counters(s).contains(&CounterRow {
        name: "holdings_class_7".into(),
        value: i64::MAX as u64
    }));
    // The ingest session's settings may be applied again.
    tx(s, |t| t.prepare_ingest());
    tx(s, |t| t.prepare_ingest());
}

fn migrate(s: &Store) {
    s.migrate(&[&MIGRATIONS]).unwrap_or_else(|e| panic!("{e}"));
    // Migrations re-run are a no-op.
    s.migrate(&[&MIGRATIONS]).unwrap_or_else(|e| panic!("{e}"));
}

fn sqlite() -> Store {
    let s = Store::sqlite_memory().unwrap_or_else(|e| panic!("{e}"));
    migrate(&s);
    s
}

/// PostgreSQL, migrated, in a fresh schema; `None` without a database
/// (a failure under CI).
fn postgres(test: &str) -> Option<Store> {
    let name = format!("tally-mds db {test}");
    let r = tally_store::test_postgres_store(&name);
    if r.is_none() && std::env::var_os("CI").is_some() {
        panic!("{name}: CI is set but TALLY_TEST_DATABASE_URL is not: PostgreSQL is required");
    }
    let (s, _schema) = r?;
    migrate(&s);
    Some(s)
}

macro_rules! contracts {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::sqlite()); } )*
        }
        mod postgres {
            $( #[test] fn $name() {
                if let Some(s) = super::postgres(stringify!($name)) {
                    super::$name(&s);
                }
            } )*
        }
    };
}

contracts!(
    records,
    unpaired_transfers,
    version_1_rows,
    alerts,
    alert_events,
    set_aside,
    open_requests,
    counters_and_epochs,
);

// ---- the guard: SQL only in src/db.rs ---------------------------------

#[path = "../../tally-store/tests/common/sql_guard.rs"]
mod sql_guard;

#[test]
fn sql_lives_only_in_db_rs() {
    let found = sql_guard::scan_crate(env!("CARGO_MANIFEST_DIR"), &["db.rs"]);
    assert!(
        found.is_empty(),
        "SQL or positional row reads outside src/db.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_finds_each_kind_of_violation() {
    sql_guard::self_test();
}
