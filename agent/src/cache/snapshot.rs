//! The response cache's snapshot file: versioned and checksummed, written atomically (a
//! temporary file beside it, fsync, rename, fsync of the directory), so that a crash
//! mid-write leaves the previous snapshot whole. Reading never trusts the file: a foreign,
//! truncated or corrupt one is an error for the caller to log before starting empty.
//!
//! Layout: magic `IPCACHE\0`, format version (u32 LE), payload length (u64 LE), CRC-32 of
//! the payload (u32 LE), then the payload (postcard).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bumped whenever the payload's shape changes.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"IPCACHE\0";
/// Magic, version, payload length, checksum.
const HEADER: usize = 8 + 4 + 8 + 4;

/// Numbers this process's temporary files, so that two writes at once (the periodic
/// snapshot and the one at drain) never share one.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file system failed.
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Not a snapshot of ours (its magic is wrong).
    #[error("not a response cache snapshot (bad magic)")]
    Foreign,
    /// A snapshot of another format version.
    #[error("snapshot format version {0}, this agent reads version {FORMAT_VERSION}")]
    Version(u32),
    /// Shorter than its header, or than the payload length the header declares.
    #[error("snapshot truncated (shorter than its header or declared payload)")]
    Truncated,
    /// The payload does not match its checksum.
    #[error("snapshot checksum mismatch")]
    Checksum,
    /// The value does not encode, or the payload does not decode to one (bytes after the
    /// declared payload, or after the value in it, included).
    #[error("snapshot payload: {0}")]
    Decode(String),
}

/// Writes `value` to `path` atomically, creating its directory if missing; returns the
/// bytes written. On success the new snapshot has replaced any old one durably; on error
/// the old one is untouched (unless only the final directory fsync failed).
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<u64, SnapshotError> {
    let payload = postcard::to_stdvec(value).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    let (dir, temp) = temp_path(path)?;
    std::fs::create_dir_all(dir)?;
    let written = write_file(&temp, &payload).and_then(|bytes| {
        std::fs::rename(&temp, path)?;
        Ok(bytes)
    });
    if written.is_err() {
        // Best effort: the error worth reporting is the one that stopped the write.
        let _ = std::fs::remove_file(&temp);
    }
    let bytes = written?;
    sync_dir(dir)?;
    Ok(bytes)
}

/// The directory of `path` and a temporary file in it (`.<file>.tmp-<pid>-<n>`): the same
/// directory, so that the rename never crosses file systems.
fn temp_path(path: &Path) -> std::io::Result<(&Path, PathBuf)> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("snapshot path {} names no file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let temp = format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id());
    Ok((dir, dir.join(temp)))
}

/// Removes the temporary files a writer killed mid-write left beside `path` (call before
/// any writer of this process starts).
pub fn remove_stale_temporaries(path: &Path) {
    let (Some(name), Some(dir)) = (path.file_name(), path.parent()) else {
        return;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Header and payload into a new file at `path`, on disk before it returns.
fn write_file(path: &Path, payload: &[u8]) -> Result<u64, SnapshotError> {
    let mut file = File::create(path)?;
    file.write_all(&header_of(payload))?;
    file.write_all(payload)?;
    // Before the rename: otherwise a crash could leave the new name on unwritten blocks.
    file.sync_all()?;
    Ok((HEADER + payload.len()) as u64)
}

/// The header that goes before `payload`.
fn header_of(payload: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    header
}

/// `payload` as a snapshot file holds it (header, then the payload): what the fuzz target
/// uses to reach the payload decoder past the checksum.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = header_of(payload);
    bytes.extend_from_slice(payload);
    bytes
}

/// `value` encoded as a snapshot file's bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, SnapshotError> {
    let payload = postcard::to_stdvec(value).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    Ok(frame(&payload))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match File::open(dir) {
        Ok(dir) => dir.sync_all(),
        // Windows cannot open a directory as a file; there the rename is as durable as it
        // gets. Elsewhere a failure to open it is a real error.
        Err(_) if cfg!(not(unix)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The value in the snapshot at `path`, or `None` when there is none.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, SnapshotError> {
    // The whole file, at its actual length: nothing is sized by the declared length.
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    parse(&bytes).map(Some)
}

/// The value in a snapshot file's `bytes`, once magic, version, length and checksum agree.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SnapshotError> {
    decode(checked_payload(bytes)?)
}

/// The value in `payload`, which must hold exactly one.
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, SnapshotError> {
    let (value, rest) = postcard::take_from_bytes::<T>(payload)
        .map_err(|e| SnapshotError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SnapshotError::Decode(format!(
            "{} bytes after the value",
            rest.len()
        )));
    }
    Ok(value)
}

/// The payload of `bytes` once magic, version, length and checksum agree.
fn checked_payload(bytes: &[u8]) -> Result<&[u8], SnapshotError> {
    let (declared, crc) = header(bytes)?;
    let payload = bytes.get(HEADER..).ok_or(SnapshotError::Truncated)?;
    // A length beyond usize cannot fit in memory, so the file is surely shorter.
    let declared = usize::try_from(declared).unwrap_or(usize::MAX);
    match payload.len().cmp(&declared) {
        std::cmp::Ordering::Less => return Err(SnapshotError::Truncated),
        std::cmp::Ordering::Greater => {
            let extra = payload.len() - declared;
            return Err(SnapshotError::Decode(format!(
                "{extra} bytes after the declared payload"
            )));
        }
        std::cmp::Ordering::Equal => {}
    }
    if crc32fast::hash(payload) != crc {
        return Err(SnapshotError::Checksum);
    }
    Ok(payload)
}

/// The declared payload length and checksum, once magic and version are ours.
fn header(bytes: &[u8]) -> Result<(u64, u32), SnapshotError> {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        // A file that is a prefix of the magic is one of ours cut short, not a foreign one.
        return Err(if MAGIC.starts_with(bytes) {
            SnapshotError::Truncated
        } else {
            SnapshotError::Foreign
        });
    }
    let version = u32::from_le_bytes(field(bytes, 8)?);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    Ok((
        u64::from_le_bytes(field(bytes, 12)?),
        u32::from_le_bytes(field(bytes, 20)?),
    ))
}

/// The `N` bytes of `bytes` at `at`.
fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], SnapshotError> {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(SnapshotError::Truncated)
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

    /// A directory of the test's own, removed when the test ends (failing or not).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let name = format!("inferpool-snapshot-{test}-{}", std::process::id());
            let dir = std::env::temp_dir().join(name);
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `path` holding `bytes`, read back as a snapshot.
    fn read_bytes(path: &Path, bytes: &[u8]) -> Result<Option<Sample>, SnapshotError> {
        std::fs::write(path, bytes).unwrap();
        read::<Sample>(path)
    }

    /// A good snapshot of `sample()` at `path`, and its bytes.
    fn good(path: &Path) -> Vec<u8> {
        write(path, &sample()).unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_snapshot_reads_back_and_its_directory_is_made() {
        let scratch = Scratch::new("roundtrip");
        let path = scratch.0.join("nested/dir/cache.snapshot");
        let bytes = write(&path, &sample()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        assert_eq!(read::<Sample>(&path).unwrap(), Some(sample()));
    }

    #[test]
    fn encoded_bytes_are_the_file_write_makes() {
        let scratch = Scratch::new("encode");
        let path = scratch.0.join("s");
        assert_eq!(encode(&sample()).unwrap(), good(&path));
        assert_eq!(parse::<Sample>(&good(&path)).unwrap(), sample());
    }

    #[test]
    fn a_missing_file_is_no_snapshot() {
        let scratch = Scratch::new("missing");
        assert!(read::<Sample>(&scratch.0.join("none")).unwrap().is_none());
    }

    #[test]
    fn a_write_replaces_the_old_snapshot_and_leaves_no_temporary_file() {
        let scratch = Scratch::new("replace");
        let path = scratch.0.join("s");
        let old = Sample {
            name: "old".into(),
            values: vec![7],
        };
        write(&path, &old).unwrap();
        write(&path, &sample()).unwrap();
        assert_eq!(read::<Sample>(&path).unwrap(), Some(sample()));
        let names: Vec<_> = std::fs::read_dir(&scratch.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s"], "a temporary file was left behind");
    }

    #[test]
    fn a_truncated_file_is_an_error_at_every_cut() {
        let scratch = Scratch::new("truncated");
        let path = scratch.0.join("s");
        let good = good(&path);
        for cut in 0..good.len() {
            let result = read_bytes(&path, &good[..cut]);
            assert!(
                matches!(result, Err(SnapshotError::Truncated)),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_checksum() {
        let scratch = Scratch::new("flipped");
        let path = scratch.0.join("s");
        let mut bytes = good(&path);
        bytes[HEADER + 3] ^= 0x40;
        let result = read_bytes(&path, &bytes);
        assert!(matches!(result, Err(SnapshotError::Checksum)), "{result:?}");
    }

    #[test]
    fn garbage_is_foreign() {
        let scratch = Scratch::new("garbage");
        let path = scratch.0.join("s");
        std::fs::create_dir_all(&scratch.0).unwrap();
        for garbage in [
            &b"garbage that is long enough to have a header"[..],
            b"{}",
            b"\0",
        ] {
            let result = read_bytes(&path, garbage);
            assert!(matches!(result, Err(SnapshotError::Foreign)), "{result:?}");
        }
    }

    #[test]
    fn another_version_is_refused_before_its_payload() {
        let scratch = Scratch::new("version");
        let path = scratch.0.join("s");
        let mut bytes = good(&path);
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let result = read_bytes(&path, &bytes);
        assert!(
            matches!(result, Err(SnapshotError::Version(2))),
            "{result:?}"
        );
    }

    #[test]
    fn a_huge_declared_length_is_truncated_not_allocated() {
        let scratch = Scratch::new("huge");
        let path = scratch.0.join("s");
        let mut bytes = good(&path);
        bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        let result = read_bytes(&path, &bytes);
        assert!(
            matches!(result, Err(SnapshotError::Truncated)),
            "{result:?}"
        );
    }

    #[test]
    fn bytes_after_the_payload_are_an_error() {
        let scratch = Scratch::new("trailing");
        let path = scratch.0.join("s");
        let mut bytes = good(&path);
        bytes.push(0);
        let result = read_bytes(&path, &bytes);
        assert!(
            matches!(result, Err(SnapshotError::Decode(_))),
            "{result:?}"
        );
    }

    #[test]
    fn a_payload_of_another_shape_does_not_decode() {
        let scratch = Scratch::new("shape");
        let path = scratch.0.join("s");
        write(&path, &(1u8, 2u8, 3u8)).unwrap();
        let result = read::<u8>(&path);
        assert!(
            matches!(result, Err(SnapshotError::Decode(_))),
            "{result:?}"
        );
        let result = read::<Sample>(&path);
        assert!(
            matches!(result, Err(SnapshotError::Decode(_))),
            "{result:?}"
        );
    }

    #[test]
    fn stale_temporaries_are_removed_and_the_snapshot_kept() {
        let dir = std::env::temp_dir().join(format!("inferpool-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        std::fs::write(dir.join(".s.tmp-1-0"), b"half").unwrap();
        std::fs::write(&path, b"kept").unwrap();
        remove_stale_temporaries(&path);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("s")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
