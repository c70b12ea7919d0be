//! Key custody: the back office's keys behind `Signer`, no seed in a
//! database row, the move of an older node's seeds into key files, and a
//! signing device that fails.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::*;
use tally_core::policy::device_class::PHONE;
use tally_core::sealed::OpeningKey;
use tally_core::{PublicKey, SecretKey, Signature, Signer, Suite};
use tally_dcp::{
    Backoffice, BackofficeError, KeyDir, KeyError, NodeKeys, OsEntropy, Stores,
    development_escrow_key, legacy_seeds,
};
use tally_store::{Store, Value};
use tally_wallet::SeLink;
use tally_wallet::agent::AgentError;

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tally-key-custody-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stores(dir: &std::path::Path) -> Stores {
    Stores {
        central: Store::sqlite(&dir.join("central.sqlite")).unwrap(),
        dcp: Store::sqlite(&dir.join("central.sqlite.dcp")).unwrap(),
        mds: Store::sqlite_memory().unwrap(),
    }
}

/// Writes seeds where an older node kept them.
fn plant_legacy_seeds(s: Stores, root: [u8; 32], seal: [u8; 32], dcp: [u8; 32]) {
    // Creates the pre-custody schema (with the seed tables).
    assert!(legacy_seeds(&s.central, &s.dcp).unwrap().is_empty());
    s.central
        .transact(|tx| {
            for (role, seed) in [("root", root), ("seal", seal)] {
                tx.execute(
                    "INSERT INTO node_secrets (role, suite, seed) VALUES ($1, 1, $2)",
                    &[role.into(), Value::Bytes(seed.to_vec())],
                )?;
            }
            Ok::<_, tally_store::StoreError>(())
        })
        .unwrap();
    s.dcp
        .transact(|tx| {
            tx.execute(
                "INSERT INTO dcp_secrets (role, suite, seed) VALUES ('dcp', 1, $1)",
                &[Value::Bytes(dcp.to_vec())],
            )
        })
        .unwrap();
}

/// `stores` opens the same databases each time it is called.
fn legacy_seeds_move_out(stores: &dyn Fn() -> Stores, dir: &std::path::Path) {
    let (root, seal, dcp) = ([11u8; 32], [12u8; 32], [13u8; 32]);
    plant_legacy_seeds(stores(), root, seal, dcp);

    // Other keys than the seeds: refused, and the seeds stay where they are.
    let e = Backoffice::open_with(stores(), development_escrow_key(), NodeKeys::development())
        .err()
        .expect("refused");
    assert_eq!(e, BackofficeError::KeysInDatabase);
    assert_eq!(e.code(), tally_codes::NODE_KEYS_IN_DATABASE);
    let s = stores();
    let found = legacy_seeds(&s.central, &s.dcp).unwrap();
    assert_eq!(
        (found.root, found.opening, found.dcp),
        (Some(root), Some(seal), Some(dcp))
    );

    // Moved into key files, the node opens with the very same keys.
    let keydir = KeyDir::open_or_create(&dir.join("keys")).unwrap();
    keydir.import_legacy(&found).unwrap();
    let keys = keydir.node_keys(&mut OsEntropy).unwrap();
    let bo = Backoffice::open_with(stores(), development_escrow_key(), keys).unwrap();
    let ed = |s: &[u8; 32]| SecretKey::from_seed(Suite::Ed25519, s).unwrap().public();
    assert_eq!(bo.root_key(), ed(&root));
    assert_eq!(bo.dcp_key(), ed(&dcp));
    assert_eq!(bo.sealing_key().key, OpeningKey::from_seed(&seal).public());
    // The settlement key is new, and not the root.
    assert_ne!(bo.settlement_key().key, bo.root_key());
    drop(bo);

    // The seed tables are gone: nothing left to find, and they no longer exist.
    let s = stores();
    assert!(legacy_seeds(&s.central, &s.dcp).unwrap().is_empty());
    assert!(
        s.central
            .transact(|tx| tx.query("SELECT seed FROM node_secrets", &[]))
            .is_err()
    );
    assert!(
        s.dcp
            .transact(|tx| tx.query("SELECT seed FROM dcp_secrets", &[]))
            .is_err()
    );
    // And it reopens with the key files alone.
    let keys = KeyDir::open_or_create(&dir.join("keys"))
        .unwrap()
        .node_keys(&mut OsEntropy)
        .unwrap();
    let bo = Backoffice::open_with(stores(), development_escrow_key(), keys).unwrap();
    assert_eq!(bo.root_key(), ed(&root));
}

#[test]
fn an_older_nodes_seeds_move_into_key_files_once_and_leave_the_database() {
    let dir = temp("legacy");
    legacy_seeds_move_out(&|| stores(&dir), &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_older_nodes_seeds_move_into_key_files_once_and_leave_the_database_postgres() {
    let test = "key_custody_legacy_postgres";
    let Some((_, schema)) = tally_store::test_postgres_store(test) else {
        return;
    };
    let url = tally_store::test_database_url(test).unwrap();
    let dir = temp("legacy-pg");
    // One database for the central bank and the DCP, as `tally node` does.
    let open = || Stores {
        central: Store::postgres(&url, Some(&schema)).unwrap(),
        dcp: Store::postgres(&url, Some(&schema)).unwrap(),
        mds: Store::sqlite_memory().unwrap(),
    };
    legacy_seeds_move_out(&open, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A signing device that can be made to fail (an HSM that went away).
struct Flaky {
    key: SecretKey,
    down: Arc<AtomicBool>,
}

impl Signer for Flaky {
    type Error = KeyError;
    fn public_key(&self) -> PublicKey {
        self.key.public()
    }
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, KeyError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(KeyError::Device("token removed".into()));
        }
        Ok(self.key.sign(msg))
    }
}

#[test]
fn a_signing_device_failure_is_a_server_error_and_changes_nothing() {
    let dcp_down = Arc::new(AtomicBool::new(false));
    let settlement_down = Arc::new(AtomicBool::new(false));
    let mut keys = NodeKeys::development();
    keys.dcp = Arc::new(Flaky {
        key: SecretKey::from_seed(Suite::Ed25519, &[21; 32]).unwrap(),
        down: dcp_down.clone(),
    });
    keys.settlement = Arc::new(Flaky {
        key: SecretKey::from_seed(Suite::Ed25519, &[22; 32]).unwrap(),
        down: settlement_down.clone(),
    });
    let bo = Arc::new(
        Backoffice::open_with(
            Stores {
                central: Store::sqlite_memory().unwrap(),
                dcp: Store::sqlite_memory().unwrap(),
                mds: Store::sqlite_memory().unwrap(),
            },
            development_escrow_key(),
            keys,
        )
        .unwrap(),
    );
    // Settlement results are signed by a key the root certified.
    let sk = bo.settlement_key();
    sk.verify(&bo.root_key()).unwrap();
    assert_eq!(
        sk.key,
        SecretKey::from_seed(Suite::Ed25519, &[22; 32])
            .unwrap()
            .public()
    );

    bo.mint("m", 100_000).unwrap();
    bo.deposit("d", "alice", 10_000).unwrap();
    let mut alice = onboard(&bo, "alice", PHONE, "alice");
    for down in [&dcp_down, &settlement_down] {
        down.store(true, Ordering::SeqCst);
        match with_agent(&bo, &mut alice, |a| a.load(4_000)) {
            Err(AgentError::Backend(e)) => {
                assert_eq!(e.code, tally_codes::NODE_SIGNER_FAILED, "{e:?}")
            }
            other => panic!("expected a back-office refusal, got {other:?}"),
        }
        assert_eq!(bo.account_balance("alice").unwrap(), 10_000);
        let inv = bo.invariant().unwrap();
        assert!(inv.holds());
        assert_eq!(inv.offline_float, 0);
        assert_eq!(alice.link.status().unwrap().balance.0, 0);
        down.store(false, Ordering::SeqCst);
    }
    // Back up: the same load goes through.
    with_agent(&bo, &mut alice, |a| a.load(4_000)).unwrap();
    assert_eq!(bo.account_balance("alice").unwrap(), 6_000);
    assert_eq!(alice.link.status().unwrap().balance.0, 4_000);
    assert!(bo.invariant().unwrap().holds());
}

#[test]
fn a_broken_signing_device_is_found_at_start() {
    // A device answering with signatures of another key (a wrong key label).
    struct Liar(SecretKey, SecretKey);
    impl Signer for Liar {
        type Error = KeyError;
        fn public_key(&self) -> PublicKey {
            self.0.public()
        }
        fn try_sign(&self, msg: &[u8]) -> Result<Signature, KeyError> {
            Ok(self.1.sign(msg))
        }
    }
    let mut keys = NodeKeys::development();
    keys.root = Arc::new(Liar(
        SecretKey::from_seed(Suite::Ed25519, &[31; 32]).unwrap(),
        SecretKey::from_seed(Suite::Ed25519, &[32; 32]).unwrap(),
    ));
    let e = Backoffice::open(Store::sqlite_memory().unwrap()).map(|_| ());
    assert!(e.is_ok());
    let e = Backoffice::open_with(
        Stores {
            central: Store::sqlite_memory().unwrap(),
            dcp: Store::sqlite_memory().unwrap(),
            mds: Store::sqlite_memory().unwrap(),
        },
        development_escrow_key(),
        keys,
    )
    .err()
    .expect("refused");
    assert_eq!(
        e,
        BackofficeError::Signer(KeyError::BadSignature { role: "root" })
    );
    assert_eq!(e.code(), tally_codes::NODE_SIGNER_FAILED);
}

#[test]
fn a_node_started_with_other_keys_than_its_database_was_set_up_with_is_refused() {
    let dir = temp("pinned");
    let first = KeyDir::open_or_create(&dir.join("keys-a"))
        .unwrap()
        .node_keys(&mut OsEntropy)
        .unwrap();
    let root = Backoffice::open_with(stores(&dir), development_escrow_key(), first.clone())
        .unwrap()
        .root_key();
    let policy_before = {
        let s = stores(&dir);
        s.central
            .transact(|tx| tx.query_one("SELECT body FROM node_docs WHERE k = 'policy'", &[]))
            .unwrap()
            .unwrap()
            .bytes(0)
            .unwrap()
            .to_vec()
    };
    // A fresh key directory (a typo in --keys): refused, nothing re-signed.
    let other = KeyDir::open_or_create(&dir.join("keys-b"))
        .unwrap()
        .node_keys(&mut OsEntropy)
        .unwrap();
    let e = Backoffice::open_with(stores(&dir), development_escrow_key(), other)
        .err()
        .expect("refused");
    assert_eq!(e, BackofficeError::KeysChanged { role: "root" });
    assert_eq!(e.code(), tally_codes::NODE_KEYS_CHANGED);
    // Only the DCP key differs: refused too.
    let mut dcp_only = first.clone();
    dcp_only.dcp = NodeKeys::development().dcp;
    let e = Backoffice::open_with(stores(&dir), development_escrow_key(), dcp_only)
        .err()
        .expect("refused");
    assert_eq!(e, BackofficeError::KeysChanged { role: "dcp" });
    let s = stores(&dir);
    let policy_after = s
        .central
        .transact(|tx| tx.query_one("SELECT body FROM node_docs WHERE k = 'policy'", &[]))
        .unwrap()
        .unwrap()
        .bytes(0)
        .unwrap()
        .to_vec();
    assert_eq!(policy_after, policy_before);
    // The right keys still open it.
    let bo = Backoffice::open_with(stores(&dir), development_escrow_key(), first).unwrap();
    assert_eq!(bo.root_key(), root);
    std::fs::remove_dir_all(&dir).unwrap();
}
