//! Key custody in the stores: the public keys a party first started with
//! (pinned, so a restart with other keys is refused), and the key seeds an
//! older node left in its databases (read once, to move them into key
//! files).

use tally_core::codec::Cbor;
use tally_core::crypto::tagged_hash;
use tally_core::escrow::JointKey;
use tally_core::sealed::OpeningKey;
use tally_core::{PublicKey, SecretKey, Suite};
use tally_ledger::ledger;
use tally_store::{Store, StoreError};

use crate::BackofficeError;
use crate::central::{CentralBank, CentralKeys};
use crate::db::KeyCustodyDb;
use crate::keys::{KeyError, NodeKeys};
use crate::schema::{
    CENTRAL_KEY_CUSTODY_MIGRATIONS, CENTRAL_MIGRATIONS, OUTBOX_MIGRATIONS, REPORT_MIGRATIONS,
};

/// Key seeds an older node kept in its databases (`node_secrets`,
/// `dcp_secrets`): found once at the upgrade, moved into key files
/// ([`crate::keys::KeyDir::import_legacy`]), then dropped with the tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacySeeds {
    pub root: Option<[u8; 32]>,
    pub dcp: Option<[u8; 32]>,
    pub opening: Option<[u8; 32]>,
}

impl LegacySeeds {
    pub fn is_empty(&self) -> bool {
        self.root.is_none() && self.dcp.is_none() && self.opening.is_none()
    }

    /// Every seed here belongs to the key `keys` holds for its role.
    pub fn match_keys(&self, keys: &NodeKeys) -> bool {
        let ed = |s: &[u8; 32]| SecretKey::from_seed(Suite::Ed25519, s).map(|k| k.public());
        self.root
            .is_none_or(|s| ed(&s) == Some(keys.root.public_key()))
            && self
                .dcp
                .is_none_or(|s| ed(&s) == Some(keys.dcp.public_key()))
            && self
                .opening
                .is_none_or(|s| OpeningKey::from_seed(&s).public() == keys.opening.public())
    }
}

/// Records `key` as the key of `role` on first start; afterwards checks
/// that it is still the same.
pub fn pin_public_key(
    store: &Store,
    table: &str,
    role: &'static str,
    key: Vec<u8>,
) -> Result<(), BackofficeError> {
    store.transact(|tx| {
        tx.pin_key_if_absent(table, role, &key)?;
        let pinned = tx
            .pinned_key(table, role)?
            .ok_or_else(|| StoreError::Type(format!("{table}.{role} missing")))?;
        if pinned != key {
            return Err(BackofficeError::KeysChanged { role });
        }
        Ok(())
    })
}

/// Whether `component` has run any migration step on `store`.
pub fn migrated(store: &Store, component: &str) -> Result<bool, BackofficeError> {
    store.transact(|tx| Ok::<_, BackofficeError>(tx.migration_version(component)? > 0))
}

/// The seed of `role` in the seed table `table` of an older node, if any.
pub fn legacy_seed(
    store: &Store,
    table: &str,
    role: &str,
) -> Result<Option<[u8; 32]>, BackofficeError> {
    store.transact(|tx| {
        Ok(match tx.legacy_seed(table, role)? {
            Some(seed) => Some(
                seed.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Type("seed".into()))?,
            ),
            None => None,
        })
    })
}

/// Migrates the central store and checks the central bank's keys sign
/// and are the keys it was set up with (pinned at first start).
pub fn pin_central_keys(central: &Store, keys: &CentralKeys) -> Result<(), BackofficeError> {
    central.migrate(&crate::central::migrations())?;
    central.migrate(&[&CENTRAL_KEY_CUSTODY_MIGRATIONS])?;
    for (role, s) in [("root", &keys.root), ("settlement", &keys.settlement)] {
        let msg = tagged_hash(b"tally/v1/key-self-test", &[role.as_bytes()]).0;
        let sig = s.try_sign(&msg)?;
        tally_core::crypto::verify(&s.public_key(), &msg, &sig)
            .map_err(|_| KeyError::BadSignature { role })?;
    }
    pin_public_key(
        central,
        "node_public_keys",
        "root",
        keys.root.public_key().to_cbor(),
    )?;
    pin_public_key(
        central,
        "node_public_keys",
        "settlement",
        keys.settlement.public_key().to_cbor(),
    )?;
    pin_public_key(
        central,
        "node_public_keys",
        "opening",
        keys.opening.public().to_vec(),
    )?;
    Ok(())
}

/// Migrates the central store up to (not including) the key-custody step
/// and reads the root and opening seeds an older node left in it (`dcp`
/// stays `None`: the DCP's seed is in the DCP's store); empty on a store
/// that never had any, or whose seeds were moved out already.
pub fn central_legacy_seeds(central: &Store) -> Result<LegacySeeds, BackofficeError> {
    central.migrate(&[
        &ledger::MIGRATIONS,
        &tally_ledger::settlement::MIGRATIONS,
        &tally_directory::MIGRATIONS,
        &CENTRAL_MIGRATIONS,
        &OUTBOX_MIGRATIONS,
        &REPORT_MIGRATIONS,
    ])?;
    let mut seeds = LegacySeeds::default();
    if !migrated(central, CENTRAL_KEY_CUSTODY_MIGRATIONS.component)? {
        seeds.root = legacy_seed(central, "node_secrets", "root")?;
        seeds.opening = legacy_seed(central, "node_secrets", "seal")?;
    }
    Ok(seeds)
}

impl CentralBank {
    /// The central bank alone (`tally central`): its keys self-tested and
    /// pinned in its store ([`pin_central_keys`]), then
    /// [`CentralBank::open_with_mds`] (the MDS in this process, `Some`, or
    /// its own process, `None`), trusting the DCPs `dcps`.
    pub fn open_pinned(
        central: Store,
        mds: Option<Store>,
        keys: CentralKeys,
        escrow_key: JointKey,
        supervisors: Option<tally_supervisor::JointParams>,
        dcps: &[(u32, PublicKey)],
    ) -> Result<CentralBank, BackofficeError> {
        pin_central_keys(&central, &keys)?;
        CentralBank::open_with_mds(central, mds, keys, escrow_key, supervisors, dcps)
    }
}
