//! Privacy by separation (issue 4), read off the databases themselves.
//!
//! Three devices pay each other offline with distinctive amounts, sync
//! (uploads sealed to settlement), renew and unload; one payment is
//! interrupted and recovered. Then every table of every store is read:
//!
//! - the DCP's store holds no offline record, no pseudonym key, no offline
//!   payment amount (only its customers, their online operations, and
//!   responses encrypted under the requests);
//! - the MDS's store holds no SE identifier and no account name;
//! - what a payee receives (the package) names pseudonyms only.

mod support;

use std::sync::Arc;

use support::*;
use tally_core::codec::Cbor;
use tally_core::policy::device_class::{CARD, IOT, PHONE};
use tally_core::{Amount, Hash32, Package, Record};
use tally_dcp::{Backoffice, Stores, development_escrow_key};
use tally_store::{Store, Value};
use tally_wallet::{PayeeSession, PayerSession};

/// Offline payment amounts: chosen so no load, renewal or unload amount
/// of the story equals one.
const PAYMENTS: [u64; 3] = [1_234, 777, 321];

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tally-privacy-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Pays and returns the package bytes the payee received.
fn pay(payer: &mut Dev, payee: &mut Dev, amount: u64) -> Vec<u8> {
    let (payee_s, request) = PayeeSession::start(&mut payee.link, Amount(amount)).unwrap();
    let payer_s = PayerSession::start(&mut payer.link, &request).unwrap();
    let package = payer_s.package().to_vec();
    let received = payee_s
        .on_package(&mut payee.link, &package)
        .map_err(|(_, e)| e)
        .unwrap();
    payer_s
        .on_receipt(&mut payer.link, &received.receipt)
        .map_err(|(_, e)| e)
        .unwrap();
    package
}

/// Every cell of every table of an SQLite store: (table, value).
fn dump(store: &Store) -> Vec<(String, Value)> {
    store
        .transact(|tx| {
            let tables: Vec<String> = tx
                .query(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                    &[],
                )?
                .iter()
                .map(|r| r.text(0).map(str::to_string))
                .collect::<Result<_, _>>()?;
            let mut out = Vec::new();
            for t in tables {
                for row in tx.query(&format!("SELECT * FROM \"{t}\""), &[])? {
                    for v in row.0 {
                        out.push((t.clone(), v));
                    }
                }
            }
            Ok::<_, tally_store::StoreError>(out)
        })
        .unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Does any cell hold `needle`, raw or as hex text?
fn cells_with(cells: &[(String, Value)], needle: &[u8]) -> Vec<String> {
    let h = hex(needle);
    cells
        .iter()
        .filter(|(_, v)| match v {
            Value::Bytes(b) => contains(b, needle),
            Value::Text(t) => t.contains(&h),
            _ => false,
        })
        .map(|(t, _)| t.clone())
        .collect()
}

#[test]
fn dcp_store_holds_no_offline_history_and_mds_no_identity() {
    let stores = Stores {
        central: Store::sqlite(&temp("central.sqlite")).unwrap(),
        dcp: Store::sqlite(&temp("dcp.sqlite")).unwrap(),
        mds: Store::sqlite(&temp("mds.sqlite")).unwrap(),
    };
    let bo = Arc::new(
        Backoffice::open_with(
            stores,
            development_escrow_key(),
            tally_dcp::NodeKeys::development(),
        )
        .unwrap(),
    );
    bo.mint("m", 1_000_000).unwrap();
    for acct in ["alice", "bob", "carol"] {
        bo.deposit(acct, acct, 50_000).unwrap();
    }
    let mut alice = onboard(&bo, "alice-card", CARD, "alice");
    let mut bob = onboard(&bo, "bob-phone", PHONE, "bob");
    let mut carol = onboard(&bo, "carol-meter", IOT, "carol");
    with_agent(&bo, &mut alice, |a| a.load(10_000)).unwrap();
    with_agent(&bo, &mut bob, |a| a.load(9_000)).unwrap();

    let mut packages = vec![
        pay(&mut alice, &mut bob, PAYMENTS[0]),
        pay(&mut bob, &mut carol, PAYMENTS[1]),
    ];
    // An interrupted payment: Alice's SE pays, Carol never gets the package.
    let (_lost, request) = PayeeSession::start(&mut carol.link, Amount(PAYMENTS[2])).unwrap();
    let payer_s = PayerSession::start(&mut alice.link, &request).unwrap();
    packages.push(payer_s.package().to_vec());
    drop(payer_s);

    // Sync: Alice uploads her unacknowledged package, then Carol reports
    // her closed request and gets the payment back in the same sync.
    for d in [&mut alice, &mut bob] {
        with_agent(&bo, d, |a| a.sync()).unwrap();
    }
    let r = with_agent(&bo, &mut carol, |a| a.sync()).unwrap();
    assert_eq!(
        r.recovered,
        Amount(PAYMENTS[2]),
        "interrupted payment recovered"
    );
    // Renewal (bob: 9000 - 777 + 1234 = 9457) and an unload.
    with_agent(&bo, &mut bob, |a| a.renew()).unwrap();
    with_agent(&bo, &mut carol, |a| a.renew()).unwrap();
    with_agent(&bo, &mut alice, |a| a.unload(5_000)).unwrap();
    assert!(bo.invariant().unwrap().holds());
    bo.pump_mds();

    // What the tests look for.
    let se_ids: Vec<Hash32> = [&alice, &bob, &carol].iter().map(|d| d.se_id).collect();
    let mut pseudonyms = Vec::new();
    let mut record_ids = Vec::new();
    let mut signatures = Vec::new();
    for p in &packages {
        let pkg = Package::from_cbor(p).unwrap();
        for c in &pkg.certificates {
            pseudonyms.push(c.key.key_bytes().to_vec());
            pseudonyms.push(c.key.id().0.to_vec());
        }
        let t = Record::Transfer(pkg.transfer.clone());
        record_ids.push(t.id());
        signatures.push(pkg.transfer.signatures[0].to_cbor());
        for r in &pkg.ancestry {
            record_ids.push(r.id());
        }
        // A payee learns pseudonyms only: no SE id in what it receives.
        for id in &se_ids {
            assert!(!contains(p, &id.0), "an SE id travels in a package");
        }
        // The escrow in each certificate is the 68-byte ciphertext.
        for c in &pkg.certificates {
            assert_eq!(c.escrow.len(), 68, "ciphertext-only escrow");
        }
    }
    assert!(pseudonyms.len() >= 6 && record_ids.len() >= 6);

    // The DCP's store: no offline history in the clear.
    let dcp = dump(bo.dcp_store());
    assert!(
        dcp.len() > 20,
        "the DCP store is in use ({} cells)",
        dcp.len()
    );
    for k in &pseudonyms {
        assert_eq!(
            cells_with(&dcp, k),
            Vec::<String>::new(),
            "pseudonym key in the DCP store"
        );
    }
    for id in &record_ids {
        assert_eq!(
            cells_with(&dcp, &id.0),
            Vec::<String>::new(),
            "record id in the DCP store"
        );
    }
    for s in &signatures {
        assert_eq!(
            cells_with(&dcp, &s[2..]),
            Vec::<String>::new(),
            "record in the DCP store"
        );
    }
    for (t, v) in &dcp {
        if let Value::Int(i) = v {
            assert!(
                !PAYMENTS.contains(&(*i as u64)),
                "offline amount {i} in DCP table {t}"
            );
        }
    }
    // The same needles are found in the central store (the test can see them).
    let central = dump(bo.store());
    assert!(!cells_with(&central, &record_ids[0].0).is_empty());
    assert!(
        !cells_with(&central, &pseudonyms[0]).is_empty()
            || !cells_with(&central, &pseudonyms[1]).is_empty()
    );

    // The central bank's per-request replies are encrypted under the
    // request: its journal names accounts by request id, and the replies
    // must not link those to the tokens issued or settled.
    let replies: Vec<(String, Value)> = central
        .iter()
        .filter(|(t, _)| t == "cb_ops")
        .cloned()
        .collect();
    assert!(replies.len() >= 6, "{} replies", replies.len());
    for k in &pseudonyms {
        assert_eq!(
            cells_with(&replies, k),
            Vec::<String>::new(),
            "pseudonym in a stored reply"
        );
    }

    // The MDS store (after it pulled the outbox): pseudonyms and amounts,
    // no SE id, no account.
    bo.pump_mds();
    let mds = dump(bo.mds().store());
    assert!(
        mds.iter()
            .any(|(_, v)| matches!(v, Value::Int(i) if *i as u64 == PAYMENTS[0])),
        "the MDS sees amounts"
    );
    for id in &se_ids {
        assert_eq!(
            cells_with(&mds, &id.0),
            Vec::<String>::new(),
            "SE id in the MDS store"
        );
    }
    for (t, v) in &mds {
        if let Value::Text(s) = v {
            for acct in ["alice", "bob", "carol", "user:"] {
                assert!(!s.contains(acct), "account {acct} in MDS table {t}");
            }
        }
    }
    let ind = bo.indicators().unwrap();
    assert!(ind.to_json().contains("payments"));
}
