//! Memory readings for the cache's pressure relief: the cgroup v2 limit and usage of this
//! process's cgroup (what the kubelet enforces with the pod's memory limit), or the
//! machine's total and available memory when there is no limit.

use std::path::PathBuf;

/// Memory in use against the limit, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    /// In use.
    pub used: u64,
    /// The most there is.
    pub limit: u64,
}

/// Where readings come from (the real files, or a directory laid out like them in tests).
#[derive(Debug, Clone)]
pub struct MemorySource {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
}

impl MemorySource {
    /// `/sys/fs/cgroup` and `/proc`.
    pub fn system() -> Self {
        Self::at("/sys/fs/cgroup".into(), "/proc".into())
    }

    /// Readings from other roots.
    pub fn at(cgroup_root: PathBuf, proc_root: PathBuf) -> Self {
        Self {
            cgroup_root,
            proc_root,
        }
    }

    /// The cgroup's limit and usage when it has a limit, else the machine's memory.
    pub fn read(&self) -> std::io::Result<MemoryReading> {
        if let Some(reading) = self.cgroup() {
            return Ok(reading);
        }
        let text = std::fs::read_to_string(self.proc_root.join("meminfo"))?;
        parse_meminfo(&text).ok_or_else(|| std::io::Error::other("meminfo without MemTotal"))
    }

    fn cgroup(&self) -> Option<MemoryReading> {
        let own = std::fs::read_to_string(self.proc_root.join("self/cgroup")).ok()?;
        let dir = self
            .cgroup_root
            .join(cgroup_path(&own)?.trim_start_matches('/'));
        let limit = parse_limit(&std::fs::read_to_string(dir.join("memory.max")).ok()?)?;
        let used = std::fs::read_to_string(dir.join("memory.current")).ok()?;
        Some(MemoryReading {
            used: used.trim().parse().ok()?,
            limit,
        })
    }
}

/// The cgroup v2 path in `/proc/self/cgroup` (its `0::` line).
fn cgroup_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A `memory.max` value; `None` for `max` (no limit).
fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Total and used (total less available) memory from `/proc/meminfo`.
fn parse_meminfo(text: &str) -> Option<MemoryReading> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let kb = l.strip_prefix(name)?.trim().trim_end_matches("kB").trim();
            kb.parse::<u64>().ok().map(|kb| kb * 1024)
        })
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:").unwrap_or(total);
    Some(MemoryReading {
        used: total.saturating_sub(available),
        limit: total,
    })
}

/// When to shrink: fractions of the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermarks {
    /// Above this the cache shrinks.
    pub high: f64,
    /// What the shrink aims for.
    pub low: f64,
}

impl Watermarks {
    /// Bytes the cache should give back: none at or below the high watermark; above it,
    /// what would bring the process to the low one, never more than the cache holds.
    pub fn bytes_to_free(&self, reading: MemoryReading, cache_bytes: u64) -> u64 {
        let limit = reading.limit as f64;
        if reading.limit == 0 || (reading.used as f64) <= self.high * limit {
            return 0;
        }
        let target = (self.low * limit) as u64;
        reading.used.saturating_sub(target).min(cache_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       16384 kB\nMemFree:  1000 kB\nMemAvailable:    4096 kB\n";

    fn layout(test: &str, limit: Option<&str>) -> MemorySource {
        let root =
            std::env::temp_dir().join(format!("inferpool-pressure-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (cg, proc) = (root.join("cg"), root.join("proc"));
        std::fs::create_dir_all(proc.join("self")).unwrap();
        std::fs::write(proc.join("meminfo"), MEMINFO).unwrap();
        std::fs::write(proc.join("self/cgroup"), "0::/kubepods/pod1/agent\n").unwrap();
        if let Some(limit) = limit {
            let dir = cg.join("kubepods/pod1/agent");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("memory.max"), limit).unwrap();
            std::fs::write(dir.join("memory.current"), "600\n").unwrap();
        }
        MemorySource::at(cg, proc)
    }

    #[test]
    fn files_parse() {
        assert_eq!(cgroup_path("1:cpu:/x\n0::/a/b\n"), Some("/a/b"));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("1024\n"), Some(1024));
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!((m.limit, m.used), (16384 * 1024, 12288 * 1024));
    }

    #[test]
    fn a_cgroup_limit_wins_and_no_limit_falls_back_to_meminfo() {
        let limited = layout("limited", Some("1000\n")).read().unwrap();
        assert_eq!(
            limited,
            MemoryReading {
                used: 600,
                limit: 1000
            }
        );
        let unlimited = layout("max", Some("max\n")).read().unwrap();
        assert_eq!(unlimited.limit, 16384 * 1024);
        let none = layout("none", None).read().unwrap();
        assert_eq!(none, unlimited);
    }

    #[test]
    fn shrink_only_above_high_to_low_and_never_more_than_held() {
        let w = Watermarks {
            high: 0.9,
            low: 0.8,
        };
        let at = |used| MemoryReading { used, limit: 1000 };
        assert_eq!(w.bytes_to_free(at(900), 500), 0);
        assert_eq!(w.bytes_to_free(at(950), 500), 150);
        assert_eq!(w.bytes_to_free(at(950), 100), 100);
        assert_eq!(w.bytes_to_free(MemoryReading { used: 5, limit: 0 }, 100), 0);
    }
}
