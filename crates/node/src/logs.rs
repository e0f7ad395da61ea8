//! Job logs: what workers upload for their leases, kept by the node they upload to (off the
//! ledger: logs are neither consensus state nor replicated) and read back only by the
//! deployment's owner (see `api::logs`).
//!
//! One append-only file per lease under `<data-dir>/logs/`. An upload names the offset it
//! starts at, so a retried upload is recognized and nothing is stored twice; a gap is
//! refused with the current length, which the worker resumes from.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Most bytes kept per lease; a worker stops a job whose output would pass its own (smaller)
/// limit, so this only bounds a misbehaving worker.
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The upload starts past the end of what is stored.
    #[error("upload starts at byte {offset} but {len} bytes are stored")]
    Gap {
        /// Where the upload starts.
        offset: u64,
        /// What is stored.
        len: u64,
    },
    /// The log would pass [`MAX_LOG_BYTES`].
    #[error("the log would pass {MAX_LOG_BYTES} bytes")]
    TooLarge,
    /// The disk failed.
    #[error("log storage: {0}")]
    Io(#[from] std::io::Error),
}

/// The node's lease logs.
pub struct LogStore {
    dir: PathBuf,
    // Appends are rare and short; one lock keeps offsets consistent.
    lock: Mutex<()>,
}

impl LogStore {
    /// Logs under `dir` (created on first write).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
        }
    }

    fn path(&self, lease: u64) -> PathBuf {
        self.dir.join(format!("{lease}.log"))
    }

    /// Bytes stored for `lease`.
    pub fn len(&self, lease: u64) -> u64 {
        std::fs::metadata(self.path(lease)).map_or(0, |m| m.len())
    }

    /// Stores `data` as the bytes from `offset` on; returns the new length. Bytes already
    /// stored are skipped (a retry), so the log never holds anything twice.
    pub fn append(&self, lease: u64, offset: u64, data: &[u8]) -> Result<u64, LogError> {
        let _g = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let len = self.len(lease);
        if offset > len {
            return Err(LogError::Gap { offset, len });
        }
        let skip = usize::try_from(len - offset).unwrap_or(usize::MAX);
        let Some(new) = data.get(skip..) else {
            return Ok(len);
        };
        if new.is_empty() {
            return Ok(len);
        }
        if len + new.len() as u64 > MAX_LOG_BYTES {
            return Err(LogError::TooLarge);
        }
        std::fs::create_dir_all(&self.dir)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(lease))?;
        f.write_all(new)?;
        f.sync_data()?;
        Ok(len + new.len() as u64)
    }

    /// Up to `max` bytes of `lease`'s log from `offset`, and the log's length.
    pub fn read(&self, lease: u64, offset: u64, max: usize) -> Result<(Vec<u8>, u64), LogError> {
        let mut f = match std::fs::File::open(self.path(lease)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e.into()),
        };
        let len = f.metadata()?.len();
        if offset >= len {
            return Ok((Vec::new(), len));
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        f.take(max as u64).read_to_end(&mut buf)?;
        Ok((buf, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_not_stored_twice_and_gaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::new(dir.path());
        assert_eq!(logs.read(7, 0, 100).unwrap(), (vec![], 0));
        assert_eq!(logs.append(7, 0, b"hello ").unwrap(), 6);
        // The same upload again, and one overlapping it: only the new bytes land.
        assert_eq!(logs.append(7, 0, b"hello ").unwrap(), 6);
        assert_eq!(logs.append(7, 3, b"lo world").unwrap(), 11);
        assert!(matches!(
            logs.append(7, 20, b"x"),
            Err(LogError::Gap {
                offset: 20,
                len: 11
            })
        ));
        assert_eq!(logs.read(7, 0, 100).unwrap().0, b"hello world");
        assert_eq!(logs.read(7, 6, 3).unwrap(), (b"wor".to_vec(), 11));
        assert!(matches!(
            logs.append(7, 11, &vec![0; MAX_LOG_BYTES as usize]),
            Err(LogError::TooLarge)
        ));
    }
}
