//! The SE directory: which secure elements exist (identifier, class,
//! maker, attestation key, status), registration with an attestation
//! signature made inside the SE, and signed, versioned revocation lists.
//! The rules are here; every SQL statement is in [`db`] (the trait
//! [`DirectoryDb`]; tests/db_conformance.rs keeps it there).

use std::fmt;
use tally_codes as codes;

use tally_core::crypto::verify;
use tally_core::dcp::MakerCertificate;
use tally_core::{Epoch, Hash32, PublicKey, RevocationList, Signature, Signer};
use tally_store::{StoreError, Tx, TxFailure};

pub mod db;

pub use db::{DirectoryDb, MIGRATIONS, StoredRevocationList};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeStatus {
    Active = 0,
    Suspended = 1,
    Revoked = 2,
}

impl SeStatus {
    pub fn from_code(c: i64) -> Option<SeStatus> {
        Some(match c {
            0 => SeStatus::Active,
            1 => SeStatus::Suspended,
            2 => SeStatus::Revoked,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeEntry {
    pub se_id: Hash32,
    pub attestation_key: PublicKey,
    pub device_class: u8,
    pub maker: String,
    pub status: SeStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The attestation signature does not verify.
    BadAttestation,
    /// Registered before with other attributes.
    Conflict,
    UnknownSe,
    /// The attestation key's certificate is not by a manufacturer the
    /// policy trusts, or does not verify.
    UntrustedManufacturer,
    /// The SE was revoked: it cannot register again.
    Revoked,
    /// One revocation names more keys than [`REVOCATION_KEYS_PER_CALL_MAX`].
    TooManyRevocations {
        keys: usize,
        max: usize,
    },
    /// The revocation list would pass [`REVOCATION_LIST_ENTRIES_MAX`].
    RevocationListFull {
        listed: usize,
        adding: usize,
        max: usize,
    },
    Store(StoreError),
}

impl DirectoryError {
    /// Stable code, registered in tally-codes (docs/CODES.md).
    pub fn code(&self) -> u16 {
        match self {
            DirectoryError::BadAttestation => codes::DIRECTORY_BAD_ATTESTATION,
            DirectoryError::Conflict => codes::DIRECTORY_CONFLICT,
            DirectoryError::UnknownSe => codes::DIRECTORY_UNKNOWN_SE,
            DirectoryError::UntrustedManufacturer => codes::DIRECTORY_UNTRUSTED_MANUFACTURER,
            DirectoryError::Revoked => codes::DIRECTORY_REVOKED,
            DirectoryError::TooManyRevocations { .. } => codes::DIRECTORY_TOO_MANY_REVOCATIONS,
            DirectoryError::RevocationListFull { .. } => codes::DIRECTORY_REVOCATION_LIST_FULL,
            DirectoryError::Store(_) => codes::NODE_INTERNAL,
        }
    }
}

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectoryError::BadAttestation => f.write_str("attestation signature does not verify"),
            DirectoryError::Conflict => f.write_str("SE registered before with other attributes"),
            DirectoryError::UnknownSe => f.write_str("unknown secure element"),
            DirectoryError::UntrustedManufacturer => {
                f.write_str("attestation key not certified by a trusted manufacturer")
            }
            DirectoryError::Revoked => f.write_str("secure element revoked"),
            DirectoryError::TooManyRevocations { keys, max } => {
                write!(f, "{keys} keys in one revocation, at most {max}")
            }
            DirectoryError::RevocationListFull {
                listed,
                adding,
                max,
            } => write!(
                f,
                "revocation list holds {listed} keys; {adding} more would pass {max}"
            ),
            DirectoryError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DirectoryError {}

/// A software root cannot fail to sign.
impl From<core::convert::Infallible> for DirectoryError {
    fn from(e: core::convert::Infallible) -> Self {
        match e {}
    }
}

impl From<StoreError> for DirectoryError {
    fn from(e: StoreError) -> Self {
        DirectoryError::Store(e)
    }
}
impl TxFailure for DirectoryError {
    fn is_conflict(&self) -> bool {
        matches!(self, DirectoryError::Store(StoreError::Conflict))
    }
}

/// Most key ids one revocation may add: a containment names the few
/// pseudonyms an opening linked, never a bulk list.
pub const REVOCATION_KEYS_PER_CALL_MAX: usize = 64;
/// Most key ids on the revocation list. Every device installs the whole
/// list at sync (a command of at most 256 KiB, kept in the SE's state), so
/// one list too large for them would make every device's sync fail; this
/// is 32 KiB of key ids, far under that and under the decoder's
/// [`tally_core::policy::REVOKED_KEYS_MAX`].
pub const REVOCATION_LIST_ENTRIES_MAX: usize = 1024;
const _: () = assert!(REVOCATION_LIST_ENTRIES_MAX <= tally_core::policy::REVOKED_KEYS_MAX);

/// Verifies a signature an SE made over `message` with its attestation key.
pub fn check_attestation(key: &PublicKey, message: &Hash32, sig: &Signature) -> bool {
    verify(key, &message.0, sig).is_ok()
}

pub struct Directory;

impl Directory {
    /// Registers an SE whose attestation key a trusted manufacturer
    /// certified. Idempotent for an active SE; a revoked or suspended SE
    /// cannot register again.
    pub fn register(
        tx: &mut dyn Tx,
        maker_cert: &MakerCertificate,
        manufacturers: &[PublicKey],
    ) -> Result<SeEntry, DirectoryError> {
        if !manufacturers.contains(&maker_cert.maker_key) || !maker_cert.verify() {
            return Err(DirectoryError::UntrustedManufacturer);
        }
        let attestation_key = &maker_cert.attestation_key;
        let (device_class, maker) = (maker_cert.device_class, maker_cert.maker.as_str());
        let se_id = attestation_key.id();
        if let Some(e) = Self::get(tx, &se_id)? {
            if e.status != SeStatus::Active {
                return Err(DirectoryError::Revoked);
            }
            if e.device_class != device_class || e.maker != maker {
                return Err(DirectoryError::Conflict);
            }
            return Ok(e);
        }
        tx.se_insert(&se_id, attestation_key, device_class, maker)?;
        Self::get(tx, &se_id)?.ok_or(DirectoryError::UnknownSe)
    }

    pub fn get(tx: &mut dyn Tx, se_id: &Hash32) -> Result<Option<SeEntry>, DirectoryError> {
        Ok(tx.se_get(se_id)?)
    }

    pub fn list(tx: &mut dyn Tx) -> Result<Vec<SeEntry>, DirectoryError> {
        Ok(tx.se_list()?)
    }

    pub fn set_status(
        tx: &mut dyn Tx,
        se_id: &Hash32,
        status: SeStatus,
    ) -> Result<(), DirectoryError> {
        if !tx.se_set_status(se_id, status)? {
            return Err(DirectoryError::UnknownSe);
        }
        Ok(())
    }

    /// Records the digest of the SE's escrow identity point. Idempotent; a
    /// different digest for an SE that has one is a conflict.
    pub fn set_id_digest(
        tx: &mut dyn Tx,
        se_id: &Hash32,
        digest: &Hash32,
    ) -> Result<(), DirectoryError> {
        match Self::id_digest(tx, se_id)? {
            Some(d) if &d == digest => Ok(()),
            Some(_) => Err(DirectoryError::Conflict),
            None => {
                tx.escrow_id_insert(digest, se_id)?;
                Ok(())
            }
        }
    }

    pub fn id_digest(tx: &mut dyn Tx, se_id: &Hash32) -> Result<Option<Hash32>, DirectoryError> {
        Ok(tx.escrow_id_of_se(se_id)?)
    }

    /// The SE an opened escrow names (by its identity point's digest).
    pub fn se_by_id_digest(
        tx: &mut dyn Tx,
        digest: &Hash32,
    ) -> Result<Option<Hash32>, DirectoryError> {
        Ok(tx.se_of_escrow_id(digest)?)
    }

    /// Adds key ids (pseudonym or DCP keys) to the next revocation list:
    /// at most [`REVOCATION_KEYS_PER_CALL_MAX`] per call, and never past
    /// [`REVOCATION_LIST_ENTRIES_MAX`] on the list. Everything is checked
    /// before anything is written; keys already listed are skipped.
    pub fn revoke_keys(
        tx: &mut dyn Tx,
        se_id: Option<&Hash32>,
        key_ids: &[Hash32],
        reason: &str,
    ) -> Result<(), DirectoryError> {
        if key_ids.len() > REVOCATION_KEYS_PER_CALL_MAX {
            return Err(DirectoryError::TooManyRevocations {
                keys: key_ids.len(),
                max: REVOCATION_KEYS_PER_CALL_MAX,
            });
        }
        let mut fresh: Vec<&Hash32> = Vec::with_capacity(key_ids.len());
        for k in key_ids {
            if !fresh.contains(&k) && !tx.revoked_key_listed(k)? {
                fresh.push(k);
            }
        }
        let listed = tx.revoked_key_count()?;
        if listed.saturating_add(fresh.len()) > REVOCATION_LIST_ENTRIES_MAX {
            return Err(DirectoryError::RevocationListFull {
                listed,
                adding: fresh.len(),
                max: REVOCATION_LIST_ENTRIES_MAX,
            });
        }
        for k in fresh {
            tx.revoked_key_insert(k, se_id, reason)?;
        }
        Ok(())
    }

    /// The current revocation list: re-signed with a new serial whenever the
    /// set of revoked keys changed since the last list. `root` is any
    /// [`Signer`] (the root may sit in an HSM), whose failure comes back as
    /// `E`; nothing is stored then.
    pub fn revocation_list<S, E>(
        tx: &mut dyn Tx,
        root: &S,
        epoch: Epoch,
    ) -> Result<RevocationList, E>
    where
        S: Signer + ?Sized,
        E: From<DirectoryError> + From<S::Error>,
    {
        let (keys, serial) = match Self::last_revocation_list(tx)? {
            Ok(current) => return Ok(current),
            Err(next) => next,
        };
        let l = RevocationList::try_sign(root, serial as u64, epoch, keys)?;
        tx.revocation_list_insert(serial, &l)
            .map_err(DirectoryError::from)?;
        Ok(l)
    }

    /// The last signed list if it still names exactly the revoked keys;
    /// otherwise the keys and serial of the list to sign next.
    #[allow(clippy::type_complexity)]
    fn last_revocation_list(
        tx: &mut dyn Tx,
    ) -> Result<Result<RevocationList, (Vec<Hash32>, i64)>, DirectoryError> {
        let keys: Vec<Hash32> = tx.revoked_key_ids()?;
        let last = tx.revocation_list_last()?;
        let serial = last.as_ref().map(|l| l.serial).unwrap_or(0) + 1;
        if let Some(StoredRevocationList { list, .. }) = last {
            let mut sorted = keys.clone();
            sorted.sort();
            if list.revoked == sorted {
                return Ok(Ok(list));
            }
        }
        Ok(Err((keys, serial)))
    }
}
