//! The revocation list is bounded (issue 9, item 7): one call adds at most
//! REVOCATION_KEYS_PER_CALL_MAX keys and the list never passes
//! REVOCATION_LIST_ENTRIES_MAX (a list every device must install at sync);
//! a refused call changes nothing.

use tally_core::testkit::key;
use tally_core::{Hash32, Suite};
use tally_directory::{
    Directory, DirectoryError, MIGRATIONS, REVOCATION_KEYS_PER_CALL_MAX,
    REVOCATION_LIST_ENTRIES_MAX,
};
use tally_store::Store;

fn keys(from: usize, n: usize) -> Vec<Hash32> {
    (from..from + n)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Hash32(h)
        })
        .collect()
}

fn revoke(store: &Store, k: &[Hash32]) -> Result<(), DirectoryError> {
    store.transact(|tx| Directory::revoke_keys(tx, None, k, "test"))
}

fn listed(store: &Store) -> Vec<Hash32> {
    let root = key(Suite::Ed25519, b"root");
    store
        .transact(|tx| Directory::revocation_list::<_, DirectoryError>(tx, &root, 1))
        .unwrap()
        .revoked
}

#[test]
fn one_call_naming_too_many_keys_is_refused_and_changes_nothing() {
    let store = Store::sqlite_memory().unwrap();
    store.migrate(&[&MIGRATIONS]).unwrap();
    let e = revoke(&store, &keys(0, REVOCATION_KEYS_PER_CALL_MAX + 1)).unwrap_err();
    assert_eq!(
        e,
        DirectoryError::TooManyRevocations {
            keys: REVOCATION_KEYS_PER_CALL_MAX + 1,
            max: REVOCATION_KEYS_PER_CALL_MAX
        }
    );
    assert_eq!(e.code(), 45);
    assert!(listed(&store).is_empty());
    revoke(&store, &keys(0, REVOCATION_KEYS_PER_CALL_MAX)).unwrap();
    assert_eq!(listed(&store).len(), REVOCATION_KEYS_PER_CALL_MAX);
}

#[test]
fn the_list_never_passes_its_bound() {
    let store = Store::sqlite_memory().unwrap();
    store.migrate(&[&MIGRATIONS]).unwrap();
    let per = REVOCATION_KEYS_PER_CALL_MAX;
    let mut n = 0;
    while n < REVOCATION_LIST_ENTRIES_MAX {
        let take = per.min(REVOCATION_LIST_ENTRIES_MAX - n);
        revoke(&store, &keys(n, take)).unwrap();
        n += take;
    }
    let before = listed(&store);
    assert_eq!(before.len(), REVOCATION_LIST_ENTRIES_MAX);
    // Keys already listed (and duplicates) add nothing: still accepted.
    revoke(&store, &[keys(0, 1)[0], keys(0, 1)[0]]).unwrap();
    let e = revoke(&store, &keys(n, 1)).unwrap_err();
    assert_eq!(
        e,
        DirectoryError::RevocationListFull {
            listed: REVOCATION_LIST_ENTRIES_MAX,
            adding: 1,
            max: REVOCATION_LIST_ENTRIES_MAX
        }
    );
    assert_eq!(e.code(), 46);
    assert_eq!(listed(&store), before);
}
