//! The SE's persistent store: a RAM region that behaves like the SE's
//! flash/EEPROM (erased to 0xFF, survives a simulated reboot because the
//! applet is dropped and booted again from the same bytes), with an
//! optional power cut for the recovery scenario.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tally_se::storage::{ERASED_BYTE, Storage, StorageError, checked_range};

/// Bytes written to each store since reset (flash wear per operation).
static WRITTEN: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

pub fn written() -> [usize; 2] {
    [WRITTEN[0].load(Relaxed), WRITTEN[1].load(Relaxed)]
}

pub struct Flash {
    id: usize,
    mem: &'static mut [u8],
    /// Cut power at the next write: half of it lands.
    tear_next: bool,
    dead: bool,
    pub writes: usize,
}

impl Flash {
    pub fn new(id: usize, mem: &'static mut [u8]) -> Self {
        let mut f = Flash {
            id,
            mem,
            tear_next: false,
            dead: false,
            writes: 0,
        };
        f.erase();
        f
    }
    /// This store made a copy of `other` (a benchmark boots the copy).
    pub fn copy_from(&mut self, other: &Flash) {
        self.mem.copy_from_slice(other.mem);
        self.dead = false;
        self.tear_next = false;
    }
    pub fn erase(&mut self) {
        self.mem.fill(ERASED_BYTE);
        self.dead = false;
        self.tear_next = false;
    }
    /// The next write (for a PAY, its journal log record) is torn in half
    /// and the device loses power.
    pub fn tear_next_write(&mut self) {
        self.tear_next = true;
    }
    /// Power comes back (reboot).
    pub fn power_on(&mut self) {
        self.dead = false;
    }
}

impl Storage for Flash {
    fn capacity(&self) -> usize {
        self.mem.len()
    }
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), StorageError> {
        if self.dead {
            return Err(StorageError::PowerLost);
        }
        let r = checked_range(offset, buf.len(), self.mem.len())?;
        buf.copy_from_slice(&self.mem[r]);
        Ok(())
    }
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StorageError> {
        if self.dead {
            return Err(StorageError::PowerLost);
        }
        let r = checked_range(offset, data.len(), self.mem.len())?;
        self.writes += 1;
        if self.tear_next {
            let half = data.len() / 2;
            self.mem[r.start..r.start + half].copy_from_slice(&data[..half]);
            WRITTEN[self.id].fetch_add(half, Relaxed);
            self.tear_next = false;
            self.dead = true;
            return Err(StorageError::PowerLost);
        }
        self.mem[r].copy_from_slice(data);
        WRITTEN[self.id].fetch_add(data.len(), Relaxed);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StorageError> {
        if self.dead {
            return Err(StorageError::PowerLost);
        }
        Ok(())
    }
}
