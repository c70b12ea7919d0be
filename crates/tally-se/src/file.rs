//! A fixed-size file as SE storage, for `tally device` on a host (std, Unix).
//!
//! Writes go straight to the file at their offset (`pwrite`), and
//! [`Storage::flush`] is `fdatasync`, so a [`crate::storage::Journal`] on top
//! keeps its anti-tearing guarantee across process kills and host crashes.
//! Copying the file copies the SE's state, which is how a cloned SE is
//! simulated.
//!
//! An SE is in one reader at a time: a [`FileStorage`] holds an exclusive
//! lock on its file (`flock`) until it is dropped, so two processes never
//! boot the same state and commit over each other (which would spend a
//! token twice from one honest SE, or lose one of two credits). A second
//! open while the lock is held fails with [`io::ErrorKind::WouldBlock`];
//! the lock goes with the process, a killed one included.
#![cfg(unix)]

extern crate std;

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::storage::{Storage, StorageError, checked_range};

/// Storage in a file whose length is fixed at creation.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    capacity: usize,
    last_error: Option<io::Error>,
}

impl FileStorage {
    /// Creates a new file of `capacity` zero bytes (blank for the journal)
    /// and makes its existence durable. Fails if `path` already exists, so
    /// an SE state is never truncated by mistake.
    pub fn create(path: impl AsRef<Path>, capacity: usize) -> io::Result<Self> {
        let path = path.as_ref();
        let len = u64::try_from(capacity)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "capacity too large"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        lock(&file)?;
        file.set_len(len)?;
        file.sync_all()?;
        // The directory entry must be durable too, or a crash could lose the
        // whole file.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(FileStorage {
            file,
            capacity,
            last_error: None,
        })
    }

    /// Opens an existing file, locked (see the module's documentation);
    /// its length is the capacity.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        lock(&file)?;
        let capacity = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        Ok(FileStorage {
            file,
            capacity,
            last_error: None,
        })
    }

    /// The I/O error behind the most recent [`StorageError::Io`], for
    /// reporting.
    pub fn last_error(&self) -> Option<&io::Error> {
        self.last_error.as_ref()
    }

    fn io<T>(&mut self, result: io::Result<T>) -> Result<T, StorageError> {
        result.map_err(|e| {
            self.last_error = Some(e);
            StorageError::Io
        })
    }
}

/// Takes the file's exclusive lock without waiting.
fn lock(file: &File) -> io::Result<()> {
    file.try_lock().map_err(|e| match e {
        TryLockError::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            "the secure element is in use by another process",
        ),
        TryLockError::Error(e) => e,
    })
}

impl Storage for FileStorage {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        checked_range(offset, buf.len(), self.capacity)?;
        let offset = u64::try_from(offset).map_err(|_| StorageError::OutOfBounds)?;
        let result = self.file.read_exact_at(buf, offset);
        self.io(result)
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        checked_range(offset, data.len(), self.capacity)?;
        let offset = u64::try_from(offset).map_err(|_| StorageError::OutOfBounds)?;
        let result = self.file.write_all_at(data, offset);
        self.io(result)
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        let result = self.file.sync_data();
        self.io(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Journal, MemStorage, TearMode, TearingStorage};
    use std::path::PathBuf;
    use std::vec;
    use std::vec::Vec;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(std::format!(
                "tally-se-file-{}-{}",
                std::process::id(),
                name
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A second open of a state file in use fails, and changes nothing,
    /// until the first is dropped: two commands on one SE would otherwise
    /// each boot the same state and commit over each other.
    #[test]
    fn one_holder_at_a_time() {
        let dir = TempDir::new("lock");
        let path = dir.0.join("se.bin");
        let mut held = FileStorage::create(&path, 64).unwrap();
        held.write(0, &[7]).unwrap();
        assert_eq!(
            FileStorage::open(&path).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(held);
        let held = FileStorage::open(&path).unwrap();
        assert_eq!(
            FileStorage::open(&path).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(held);
        let mut again = FileStorage::open(&path).unwrap();
        let mut b = [0u8; 1];
        again.read(0, &mut b).unwrap();
        assert_eq!(b, [7]);
    }

    #[test]
    fn create_write_reopen() {
        let dir = TempDir::new("basic");
        let path = dir.0.join("se.bin");
        let mut s = FileStorage::create(&path, 64).unwrap();
        assert_eq!(s.capacity(), 64);
        let mut buf = [0xAAu8; 64];
        s.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0u8; 64]);
        s.write(60, &[1, 2, 3, 4]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.write(61, &[1, 2, 3, 4]), Err(StorageError::OutOfBounds));
        assert_eq!(s.read(usize::MAX, &mut [0]), Err(StorageError::OutOfBounds));
        assert!(s.last_error().is_none());
        drop(s);

        let mut s = FileStorage::open(&path).unwrap();
        assert_eq!(s.capacity(), 64);
        let mut tail = [0u8; 4];
        s.read(60, &mut tail).unwrap();
        assert_eq!(tail, [1, 2, 3, 4]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64);

        // Never truncates an existing state file.
        assert_eq!(
            FileStorage::create(&path, 8).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            FileStorage::open(dir.0.join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn journal_on_file_survives_reopen_and_tearing() {
        let dir = TempDir::new("journal");
        let path = dir.0.join("se.bin");
        let capacity = 2 * (crate::storage::HEADER_LEN + 2048);
        let storage = FileStorage::create(&path, capacity).unwrap();
        let (mut journal, state) = Journal::open(storage).unwrap();
        assert_eq!(state, None);
        let first: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        journal.commit(&first).unwrap();
        drop(journal);

        // A torn second commit on the file leaves the first state.
        let storage = FileStorage::open(&path).unwrap();
        let tearing = TearingStorage::with_cut(storage, 3, TearMode::Half);
        let (mut journal, state) = Journal::open(tearing).unwrap();
        assert_eq!(state.as_deref(), Some(&first[..]));
        assert_eq!(
            journal.commit(&vec![7u8; 2000]),
            Err(StorageError::PowerLost)
        );
        drop(journal);

        let (mut journal, state) = Journal::open(FileStorage::open(&path).unwrap()).unwrap();
        assert_eq!(state.as_deref(), Some(&first[..]));
        journal.commit(b"second").unwrap();
        drop(journal);
        let (journal, state) = Journal::open(FileStorage::open(&path).unwrap()).unwrap();
        assert_eq!(state, Some(b"second".to_vec()));
        assert_eq!(journal.sequence(), Some(2));

        // The file image and an in-memory image of it recover the same.
        let bytes = std::fs::read(&path).unwrap();
        let (_, state) = Journal::open(MemStorage::from_bytes(bytes)).unwrap();
        assert_eq!(state, Some(b"second".to_vec()));
    }
}
