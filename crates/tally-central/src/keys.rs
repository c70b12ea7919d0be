//! Custody of the back office's long-lived keys (docs/decisions,
//! "key custody"): the central bank's root (policy, revocation lists, DCP
//! certificates, the settlement key's certificate), its settlement key
//! (settlement results), its opening key (the HPKE key uploads are sealed
//! to) and the DCP's issuing key (issues, pseudonym certificates, grants,
//! receipts, redemption orders).
//!
//! Every signing key sits behind [`tally_core::Signer`]: a key file here
//! ([`KeyDir`], development and small deployments) or a PKCS#11 token
//! (`tally node --pkcs11-module …`, in tally-cli, which alone links the
//! PKCS#11 library). No private key is kept in a database row.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tally_core::codec::{CodecError, Reader, Writer};
use tally_core::crypto::{Entropy, tagged_hash};
use tally_core::sealed::OpeningKey;
use tally_core::{PublicKey, SecretKey, Signature, Signer, Suite};

/// Why a back-office key could not be loaded or could not sign.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file or the key directory could not be read or written.
    Io { path: PathBuf, message: String },
    /// A key file (or the directory) is readable by group or others.
    Exposed { path: PathBuf, mode: u32 },
    /// A key file does not hold a key.
    Malformed { path: PathBuf },
    /// A key file exists with another key than the one to write there.
    Conflict { path: PathBuf },
    /// The signing device (HSM) failed or refused.
    Device(String),
    /// A signature from the device does not verify under its public key.
    BadSignature { role: &'static str },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Io { path, message } => write!(f, "{}: {message}", path.display()),
            KeyError::Exposed { path, mode } => write!(
                f,
                "{}: mode {mode:03o} lets group or others read a private key; chmod 600 (700 for the directory)",
                path.display()
            ),
            KeyError::Malformed { path } => write!(f, "{}: not a Tally key file", path.display()),
            KeyError::Conflict { path } => write!(
                f,
                "{}: holds another key than the one to be written there",
                path.display()
            ),
            KeyError::Device(m) => write!(f, "signing device: {m}"),
            KeyError::BadSignature { role } => write!(
                f,
                "the {role} key's signature does not verify under its public key"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// A long-lived back-office signing key, wherever it lives.
pub type NodeSigner = dyn Signer<Error = KeyError> + Send + Sync;

/// A key in memory (loaded from a key file, or a development key).
pub struct SoftwareSigner(SecretKey);

impl SoftwareSigner {
    pub fn new(key: SecretKey) -> SoftwareSigner {
        SoftwareSigner(key)
    }
}

impl Signer for SoftwareSigner {
    type Error = KeyError;
    fn public_key(&self) -> PublicKey {
        self.0.public()
    }
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, KeyError> {
        Ok(self.0.sign(msg))
    }
}

/// The node's keys.
#[derive(Clone)]
pub struct NodeKeys {
    /// The central bank's root: the SEs' trust anchor. Signs rarely.
    pub root: Arc<NodeSigner>,
    /// Signs settlement results; certified by the root.
    pub settlement: Arc<NodeSigner>,
    /// The DCP's key (every DCP role), certified by the root.
    pub dcp: Arc<NodeSigner>,
    /// Settlement's HPKE opening key (decapsulation stays in software:
    /// see the key-custody decision record).
    pub opening: Arc<OpeningKey>,
}

impl NodeKeys {
    /// Keys derived from public labels: their secrets are public, so they
    /// protect nothing. For tests and benchmarks that reopen one store
    /// and expect the same root, never for a node (`tally node` takes a
    /// key directory or an HSM).
    pub fn development() -> NodeKeys {
        let ed = |role: &[u8]| -> Arc<NodeSigner> {
            let seed = tagged_hash(b"tally/v1/dev-node-key", &[role]).0;
            // Any 32 bytes are an Ed25519 seed.
            let key = SecretKey::from_seed(Suite::Ed25519, &seed)
                .expect("every 32-byte string is an Ed25519 seed");
            Arc::new(SoftwareSigner(key))
        };
        NodeKeys {
            root: ed(b"root"),
            settlement: ed(b"settlement"),
            dcp: ed(b"dcp"),
            opening: Arc::new(OpeningKey::from_seed(
                &tagged_hash(b"tally/v1/dev-node-key", &[b"opening"]).0,
            )),
        }
    }

    /// Each signing key signs a probe and the signature is checked under
    /// its public key: a wrong key label or a broken device shows at start,
    /// not at the first device request.
    pub fn self_test(&self) -> Result<(), KeyError> {
        for (role, s) in [
            ("root", &self.root),
            ("settlement", &self.settlement),
            ("dcp", &self.dcp),
        ] {
            let msg = tagged_hash(b"tally/v1/key-self-test", &[role.as_bytes()]).0;
            let sig = s.try_sign(&msg)?;
            tally_core::crypto::verify(&s.public_key(), &msg, &sig)
                .map_err(|_| KeyError::BadSignature { role })?;
        }
        Ok(())
    }
}

/// Key file kinds (the second field of a key file).
const KIND_ED25519: u8 = Suite::Ed25519 as u8;
const KIND_P256: u8 = Suite::EcdsaP256Sha256 as u8;
/// An X25519 (HPKE) opening key.
const KIND_X25519: u8 = 32;
const KEY_FILE_VERSION: u8 = 1;

/// Roles and their file names in a key directory.
pub const ROOT: &str = "root";
pub const SETTLEMENT: &str = "settlement";
pub const DCP: &str = "dcp";
pub const OPENING: &str = "opening";

/// A directory of key files, one per role (`root.key`, `settlement.key`,
/// `dcp.key`, `opening.key`), each `[1, kind, seed]` in canonical CBOR,
/// mode 0600 in a directory of mode 0700. Files readable by group or
/// others are refused, not repaired.
pub struct KeyDir {
    path: PathBuf,
}

impl KeyDir {
    /// Opens `path`, creating it (mode 0700) if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<KeyDir, KeyError> {
        let io = |e: std::io::Error| KeyError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io)?;
        }
        let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        Ok(KeyDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, role: &str) -> PathBuf {
        self.path.join(format!("{role}.key"))
    }

    /// The key file of `role`: `None` if there is none.
    fn read(&self, role: &str) -> Result<Option<(u8, [u8; 32])>, KeyError> {
        let path = self.file(role);
        let io = |e: std::io::Error| KeyError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path, mode });
        }
        let bytes = fs::read(&path).map_err(io)?;
        let mut r = Reader::new(&bytes);
        let parsed = (|| -> Result<(u8, [u8; 32]), CodecError> {
            r.array(3)?;
            r.version(KEY_FILE_VERSION)?;
            let kind = r.u8()?;
            let seed: [u8; 32] = r.bytes_array()?;
            Ok((kind, seed))
        })();
        match parsed {
            Ok(k) if r.position() == bytes.len() => Ok(Some(k)),
            _ => Err(KeyError::Malformed { path }),
        }
    }

    /// Writes a new key file (mode 0600, synced) unless `role` has one:
    /// written whole under a temporary name, then linked to its name, which
    /// fails if the name exists, so two nodes starting at once on one
    /// directory agree on the key of the first (and never see half a
    /// file). Returns the key the file holds.
    fn create(&self, role: &str, kind: u8, seed: &[u8; 32]) -> Result<(u8, [u8; 32]), KeyError> {
        if let Some(existing) = self.read(role)? {
            return Ok(existing);
        }
        let path = self.file(role);
        let io = |e: std::io::Error| KeyError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut w = Writer::new();
        w.array(3);
        w.u64(u64::from(KEY_FILE_VERSION));
        w.u64(u64::from(kind));
        w.bytes(seed);
        let mut nonce = [0u8; 8];
        crate::OsEntropy.fill(&mut nonce);
        let tmp = self.path.join(format!(
            ".{role}.key.{}.{:016x}",
            std::process::id(),
            u64::from_le_bytes(nonce)
        ));
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&w.into_bytes())?;
            f.sync_all()?;
            fs::hard_link(&tmp, &path)
        })();
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return self.read(role)?.ok_or(KeyError::Malformed { path });
            }
            Err(e) => return Err(io(e)),
        }
        // The new name must survive a crash too.
        fs::File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok((kind, *seed))
    }

    /// Writes a key file that must hold exactly this key: an existing file
    /// with another key is a [`KeyError::Conflict`].
    fn write(&self, role: &str, kind: u8, seed: &[u8; 32]) -> Result<(), KeyError> {
        if self.create(role, kind, seed)? == (kind, *seed) {
            Ok(())
        } else {
            Err(KeyError::Conflict {
                path: self.file(role),
            })
        }
    }

    /// The signing key of `role`, created (Ed25519, from `rng`) if the
    /// directory has none.
    pub fn signer(&self, role: &str, rng: &mut dyn Entropy) -> Result<Arc<NodeSigner>, KeyError> {
        let (kind, seed) = match self.read(role)? {
            Some(k) => k,
            None => {
                let mut seed = [0u8; 32];
                rng.fill(&mut seed);
                self.create(role, KIND_ED25519, &seed)?
            }
        };
        let suite = match kind {
            KIND_ED25519 => Suite::Ed25519,
            KIND_P256 => Suite::EcdsaP256Sha256,
            _ => {
                return Err(KeyError::Malformed {
                    path: self.file(role),
                });
            }
        };
        let key = SecretKey::from_seed(suite, &seed).ok_or_else(|| KeyError::Malformed {
            path: self.file(role),
        })?;
        Ok(Arc::new(SoftwareSigner(key)))
    }

    /// The HPKE opening key, created if the directory has none.
    pub fn opening_key(&self, rng: &mut dyn Entropy) -> Result<Arc<OpeningKey>, KeyError> {
        let seed = match self.read(OPENING)? {
            Some((KIND_X25519, seed)) => seed,
            Some(_) => {
                return Err(KeyError::Malformed {
                    path: self.file(OPENING),
                });
            }
            None => {
                let mut seed = [0u8; 32];
                rng.fill(&mut seed);
                match self.create(OPENING, KIND_X25519, &seed)? {
                    (KIND_X25519, seed) => seed,
                    _ => {
                        return Err(KeyError::Malformed {
                            path: self.file(OPENING),
                        });
                    }
                }
            }
        };
        Ok(Arc::new(OpeningKey::from_seed(&seed)))
    }

    /// Every key from this directory, each created on first use.
    pub fn node_keys(&self, rng: &mut dyn Entropy) -> Result<NodeKeys, KeyError> {
        Ok(NodeKeys {
            root: self.signer(ROOT, rng)?,
            settlement: self.signer(SETTLEMENT, rng)?,
            dcp: self.signer(DCP, rng)?,
            opening: self.opening_key(rng)?,
        })
    }

    /// Writes seeds moved out of an older node's database (Ed25519 root
    /// and DCP keys, the X25519 opening key).
    pub fn import_legacy(&self, seeds: &crate::LegacySeeds) -> Result<(), KeyError> {
        if let Some(s) = &seeds.root {
            self.write(ROOT, KIND_ED25519, s)?;
        }
        if let Some(s) = &seeds.dcp {
            self.write(DCP, KIND_ED25519, s)?;
        }
        if let Some(s) = &seeds.opening {
            self.write(OPENING, KIND_X25519, s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);
    impl Entropy for Counter {
        fn fill(&mut self, out: &mut [u8]) {
            for b in out {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "tally-keys-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn keys_are_created_once_with_private_modes_and_reloaded() {
        let p = tmp("create");
        let dir = KeyDir::open_or_create(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let keys = dir.node_keys(&mut Counter(0)).unwrap();
        keys.self_test().unwrap();
        for role in [ROOT, SETTLEMENT, DCP, OPENING] {
            let m = fs::metadata(p.join(format!("{role}.key"))).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{role}");
        }
        // Distinct keys per role.
        assert_ne!(keys.root.public_key(), keys.dcp.public_key());
        assert_ne!(keys.root.public_key(), keys.settlement.public_key());
        // Reopened (other entropy): the same keys, nothing rewritten.
        let again = KeyDir::open_or_create(&p)
            .unwrap()
            .node_keys(&mut Counter(100))
            .unwrap();
        assert_eq!(again.root.public_key(), keys.root.public_key());
        assert_eq!(again.settlement.public_key(), keys.settlement.public_key());
        assert_eq!(again.dcp.public_key(), keys.dcp.public_key());
        assert_eq!(again.opening.public(), keys.opening.public());
        fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn nodes_starting_at_once_on_one_directory_agree_on_its_keys() {
        let p = tmp("race");
        let keys: Vec<_> = (0..8u8)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    KeyDir::open_or_create(&p)
                        .unwrap()
                        .node_keys(&mut Counter(i.wrapping_mul(29)))
                        .unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        for k in &keys[1..] {
            assert_eq!(k.root.public_key(), keys[0].root.public_key());
            assert_eq!(k.dcp.public_key(), keys[0].dcp.public_key());
            assert_eq!(k.opening.public(), keys[0].opening.public());
        }
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn group_or_world_readable_key_files_are_refused() {
        let p = tmp("exposed");
        let dir = KeyDir::open_or_create(&p).unwrap();
        dir.signer(ROOT, &mut Counter(0)).unwrap();
        let f = p.join("root.key");
        let before = fs::read(&f).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            dir.signer(ROOT, &mut Counter(0)),
            Err(KeyError::Exposed { mode: 0o640, .. })
        ));
        // Refused, not repaired, not replaced.
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::read(&f).unwrap(), before);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            KeyDir::open_or_create(&p),
            Err(KeyError::Exposed { mode: 0o755, .. })
        ));
        fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn malformed_key_files_are_refused_and_left_alone() {
        let p = tmp("malformed");
        let dir = KeyDir::open_or_create(&p).unwrap();
        let f = p.join("dcp.key");
        for junk in [&b""[..], b"\x83\x01\x01\x41\x00", b"not cbor at all"] {
            let _ = fs::remove_file(&f);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&f)
                .unwrap()
                .write_all(junk)
                .unwrap();
            assert!(matches!(
                dir.signer(DCP, &mut Counter(0)),
                Err(KeyError::Malformed { .. })
            ));
            assert_eq!(fs::read(&f).unwrap(), junk);
        }
        fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn importing_a_different_seed_over_an_existing_key_is_a_conflict() {
        let p = tmp("conflict");
        let dir = KeyDir::open_or_create(&p).unwrap();
        let root = dir.signer(ROOT, &mut Counter(0)).unwrap().public_key();
        let seeds = crate::LegacySeeds {
            root: Some([9; 32]),
            dcp: None,
            opening: None,
        };
        assert!(matches!(
            dir.import_legacy(&seeds),
            Err(KeyError::Conflict { .. })
        ));
        assert_eq!(
            dir.signer(ROOT, &mut Counter(0)).unwrap().public_key(),
            root
        );
        fs::remove_dir_all(&p).unwrap();
    }
}
