//! The response cache's snapshot file: versioned and checksummed, written atomically (a
//! temporary file beside it, fsync, rename, fsync of the directory), so that a crash
//! mid-write leaves the previous snapshot whole. Reading never trusts the file: a foreign,
//! truncated or corrupt one is an error for the caller to log before starting empty.
//!
//! Layout: magic `IPCACHE\0`, format version (u32 LE), payload length (u64 LE), CRC-32 of
//! the payload (u32 LE), then the payload (postcard).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bumped whenever the payload's shape changes.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"IPCACHE\0";
const HEADER: usize = 8 + 4 + 8 + 4;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file system failed.
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Not a snapshot of ours.
    #[error("not a response cache snapshot")]
    Foreign,
    /// A snapshot of another format version.
    #[error("snapshot format {0}, this agent reads {FORMAT_VERSION}")]
    Version(u32),
    /// Shorter than its header says.
    #[error("snapshot truncated")]
    Truncated,
    /// The payload does not match its checksum.
    #[error("snapshot checksum mismatch")]
    Checksum,
    /// The payload does not decode.
    #[error("snapshot payload: {0}")]
    Decode(String),
}

/// Writes `value` to `path` atomically; returns the bytes written.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<u64, SnapshotError> {
    let payload = postcard::to_stdvec(value).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = write_file(&temp, &payload);
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let bytes = written?;
    std::fs::rename(&temp, path)?;
    // The rename is durable only once the directory is; a directory that cannot be opened
    // (not on Linux) keeps the file, just not the guarantee.
    if let Ok(d) = File::open(dir) {
        d.sync_all()?;
    }
    Ok(bytes)
}

fn write_file(path: &Path, payload: &[u8]) -> Result<u64, SnapshotError> {
    let mut file = File::create(path)?;
    file.write_all(MAGIC)?;
    file.write_all(&FORMAT_VERSION.to_le_bytes())?;
    file.write_all(&(payload.len() as u64).to_le_bytes())?;
    file.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    file.write_all(payload)?;
    file.sync_all()?;
    Ok((HEADER + payload.len()) as u64)
}

/// The value in the snapshot at `path`, or `None` when there is none.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let payload = checked_payload(&bytes)?;
    postcard::from_bytes(payload)
        .map(Some)
        .map_err(|e| SnapshotError::Decode(e.to_string()))
}

/// The payload of `bytes` once magic, version, length and checksum agree.
fn checked_payload(bytes: &[u8]) -> Result<&[u8], SnapshotError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::Foreign);
    }
    let field = |at: usize, len: usize| bytes.get(at..at + len).ok_or(SnapshotError::Truncated);
    let version = u32::from_le_bytes(
        field(8, 4)?
            .try_into()
            .map_err(|_| SnapshotError::Truncated)?,
    );
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    let len = u64::from_le_bytes(
        field(12, 8)?
            .try_into()
            .map_err(|_| SnapshotError::Truncated)?,
    );
    let crc = u32::from_le_bytes(
        field(20, 4)?
            .try_into()
            .map_err(|_| SnapshotError::Truncated)?,
    );
    let len = usize::try_from(len).map_err(|_| SnapshotError::Truncated)?;
    let payload = bytes
        .get(HEADER..)
        .filter(|p| p.len() == len)
        .ok_or(SnapshotError::Truncated)?;
    if crc32fast::hash(payload) != crc {
        return Err(SnapshotError::Checksum);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        values: Vec<u32>,
    }

    fn sample() -> Sample {
        Sample {
            name: "cache".into(),
            values: (0..100).collect(),
        }
    }

    fn dir(test: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("inferpool-snapshot-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_written_snapshot_reads_back_and_replaces_the_old_one_cleanly() {
        let d = dir("roundtrip");
        let path = d.join("s");
        assert!(read::<Sample>(&path).unwrap().is_none());
        write(
            &path,
            &Sample {
                name: "old".into(),
                values: vec![],
            },
        )
        .unwrap();
        let bytes = write(&path, &sample()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        assert_eq!(read::<Sample>(&path).unwrap(), Some(sample()));
        let files: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(files.len(), 1, "a temporary file was left behind");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damaged_files_are_errors_never_values() {
        let d = dir("damaged");
        let path = d.join("s");
        write(&path, &sample()).unwrap();
        let good = std::fs::read(&path).unwrap();
        for cut in [0, 4, 8, 12, 20, HEADER, HEADER + 1, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(read::<Sample>(&path).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        flipped[HEADER + 3] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        assert!(matches!(
            read::<Sample>(&path),
            Err(SnapshotError::Checksum)
        ));
        std::fs::write(&path, b"garbage that is long enough to have a header").unwrap();
        assert!(matches!(read::<Sample>(&path), Err(SnapshotError::Foreign)));
        let mut other = good.clone();
        other[8] = 9;
        std::fs::write(&path, &other).unwrap();
        assert!(matches!(
            read::<Sample>(&path),
            Err(SnapshotError::Version(9))
        ));
        let mut huge = good;
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        assert!(matches!(
            read::<Sample>(&path),
            Err(SnapshotError::Truncated)
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
