//! Key files through the real `tally node`: an older node's database
//! (key seeds in its tables) has them moved into the key directory at the
//! first start and keeps its root; the tables are gone after; a key file
//! readable by others, or another key directory than the database was set
//! up with, stops the node with a clear message and changes nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{CliDevice, Node, ROOT_FILE, operator, run, temp_dir};
use tally_core::codec::Cbor;
use tally_core::{PublicKey, SecretKey, Suite};
use tally_store::{Store, Value};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `tally node` on `db` with `args`, expected to exit (not listen).
fn node_refused(db: &Path, args: &[&str]) -> String {
    let mut a = vec![
        "node",
        "--database-url",
        db.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--operator-token",
        "t",
    ];
    a.extend_from_slice(args);
    let r = run(&a);
    assert_ne!(r.code, 0, "{r:?}");
    r.stderr
}

#[test]
fn an_older_nodes_seeds_move_out_of_its_database_at_the_first_start() {
    let dir = temp_dir("keys-legacy");
    let d = dir.path();
    let db = d.join("old.sqlite");
    let (root_seed, seal_seed, dcp_seed) = ([41u8; 32], [42u8; 32], [43u8; 32]);
    {
        // The schema of an older node, with its seeds in rows.
        let central = Store::sqlite(&db).expect("central");
        let dcp = Store::sqlite(&d.join("old.sqlite.dcp")).expect("dcp");
        assert!(
            tally_dcp::legacy_seeds(&central, &dcp)
                .expect("schema")
                .is_empty()
        );
        central
            .transact(|tx| {
                for (role, seed) in [("root", root_seed), ("seal", seal_seed)] {
                    tx.execute(
                        "INSERT INTO node_secrets (role, suite, seed) VALUES ($1, 1, $2)",
                        &[role.into(), Value::Bytes(seed.to_vec())],
                    )?;
                }
                Ok::<_, tally_store::StoreError>(())
            })
            .expect("seeds");
        dcp.transact(|tx| {
            tx.execute(
                "INSERT INTO dcp_secrets (role, suite, seed) VALUES ('dcp', 1, $1)",
                &[Value::Bytes(dcp_seed.to_vec())],
            )
        })
        .expect("seed");
    }
    // With an HSM, such a database is refused (move the seeds out first).
    let err = node_refused(
        &db,
        &[
            "--pkcs11-module",
            "/nonexistent/libpkcs11.so",
            "--pkcs11-token",
            "t",
        ],
    );
    assert!(err.contains("key seeds of an older node"), "{err}");

    let keys = d.join("node.keys");
    let node = Node::start_with(&s(&db), d, "node", &["--keys", &s(&keys)]);
    let root =
        PublicKey::from_cbor(&std::fs::read(d.join(ROOT_FILE)).expect("root")).expect("root key");
    let from_seed = SecretKey::from_seed(Suite::Ed25519, &root_seed)
        .expect("seed")
        .public();
    assert_eq!(root, from_seed, "the node kept the root its database had");
    let mut files: Vec<String> = std::fs::read_dir(&keys)
        .expect("key dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["dcp.key", "opening.key", "root.key", "settlement.key"]
    );
    for f in &files {
        let mode = std::fs::metadata(keys.join(f))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // A device works against it.
    let url = node.url();
    operator(&url, &["mint", "10000", "--idempotency-key", "m"]);
    operator(
        &url,
        &["deposit", "alice", "5000", "--idempotency-key", "a"],
    );
    let alice = CliDevice::init(d, "alice", &url, "phone", "alice");
    assert_eq!(alice.ok(&["load", "1000"]).trim(), "loaded 1000");
    drop(node);

    // The seeds are no longer in the database.
    let central = Store::sqlite(&db).expect("central");
    let dcp = Store::sqlite(&d.join("old.sqlite.dcp")).expect("dcp");
    assert!(
        tally_dcp::legacy_seeds(&central, &dcp)
            .expect("read")
            .is_empty()
    );
    assert!(
        central
            .transact(|tx| tx.query("SELECT seed FROM node_secrets", &[]))
            .is_err()
    );
    assert!(
        dcp.transact(|tx| tx.query("SELECT seed FROM dcp_secrets", &[]))
            .is_err()
    );
    drop((central, dcp));

    // Another key directory on this database: refused.
    let err = node_refused(&db, &["--keys", &s(&d.join("other.keys"))]);
    assert!(err.contains("another root key"), "{err}");
    // A key file others can read: refused, left as it is.
    let root_file = keys.join("root.key");
    std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = node_refused(&db, &["--keys", &s(&keys)]);
    assert!(err.contains("chmod 600"), "{err}");
    assert_eq!(
        std::fs::metadata(&root_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    // Fixed, the node starts again with its keys.
    std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let node = Node::start_with(&s(&db), d, "node-again", &["--keys", &s(&keys)]);
    assert_eq!(node.operator().balance("alice").expect("balance"), 4_000);
    let again =
        PublicKey::from_cbor(&std::fs::read(d.join(ROOT_FILE)).expect("root")).expect("root key");
    assert_eq!(again, root);
    drop(node);
}
