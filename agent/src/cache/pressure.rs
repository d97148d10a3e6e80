//! Memory readings for the cache's pressure relief: the cgroup v2 limit and usage of this
//! process's cgroup (what the kubelet enforces with the pod's memory limit), or the
//! machine's total and available memory when there is no limit.

use std::path::{Path, PathBuf};

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

    /// Readings from other roots, laid out like `/sys/fs/cgroup` and `/proc`.
    pub fn at(cgroup_root: PathBuf, proc_root: PathBuf) -> Self {
        Self {
            cgroup_root,
            proc_root,
        }
    }

    /// The cgroup's limit and usage when it has a limit; else (no limit, cgroup v1, no
    /// cgroup, or its files unreadable) the machine's memory from `meminfo`.
    pub fn read(&self) -> std::io::Result<MemoryReading> {
        if let Some(reading) = self.cgroup() {
            return Ok(reading);
        }
        let text = std::fs::read_to_string(self.proc_root.join("meminfo"))?;
        parse_meminfo(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "meminfo without MemTotal and MemAvailable",
            )
        })
    }

    /// The limited cgroup v2 reading, or `None` for any reason to use `meminfo` instead.
    fn cgroup(&self) -> Option<MemoryReading> {
        let own = std::fs::read_to_string(self.proc_root.join("self/cgroup")).ok()?;
        // The path is absolute within the hierarchy; joined as is it would replace the root.
        let relative = cgroup_path(&own)?.trim_start_matches('/');
        let dir = self.cgroup_root.join(relative);
        let limit = parse_limit(&read_text(&dir, "memory.max")?)?;
        let current: u64 = read_text(&dir, "memory.current")?.trim().parse().ok()?;
        // The working set, as the kubelet counts it for eviction: page cache the kernel can
        // drop at once (the model file read, a snapshot written) is not pressure.
        let inactive = read_text(&dir, "memory.stat")
            .and_then(|stat| stat_field(&stat, "inactive_file"))
            .unwrap_or(0);
        Some(MemoryReading {
            used: current.saturating_sub(inactive),
            limit,
        })
    }
}

/// The file `name` in `dir`, or `None` when it cannot be read.
fn read_text(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

/// A field of `memory.stat` (`name value` lines).
fn stat_field(stat: &str, name: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The cgroup v2 path in `/proc/self/cgroup` (its `0::` line); `None` under cgroup v1.
fn cgroup_path(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
}

/// A `memory.max` value in bytes; `None` for `max` (no limit) or anything unreadable.
fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Total and used (total less available) memory from `/proc/meminfo`, in bytes.
fn parse_meminfo(text: &str) -> Option<MemoryReading> {
    let total = meminfo_field(text, "MemTotal:")?;
    // Free memory alone would count the page cache as used and shrink the cache for
    // memory the kernel would give back; without MemAvailable there is no honest reading.
    let available = meminfo_field(text, "MemAvailable:")?;
    Some(MemoryReading {
        used: total.saturating_sub(available),
        limit: total,
    })
}

/// The field `name` (with its colon) of `/proc/meminfo`, converted from kB to bytes.
fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.trim();
        let kb: u64 = value
            .strip_suffix("kB")
            .unwrap_or(value)
            .trim()
            .parse()
            .ok()?;
        kb.checked_mul(1024)
    })
}

/// When to shrink the cache, as fractions of the limit (`0 < low <= high <= 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermarks {
    /// Above this the cache shrinks.
    pub high: f64,
    /// What the shrink aims for.
    pub low: f64,
}

impl Watermarks {
    /// Bytes the cache should give back for `reading` when it holds `cache_bytes`: none at
    /// or below the high watermark (or with no limit to measure against); above it the
    /// cache shrinks until the process would be at the low one, never more than the cache
    /// holds.
    pub fn bytes_to_free(&self, reading: MemoryReading, cache_bytes: u64) -> u64 {
        let limit = reading.limit as f64;
        if reading.limit == 0 || reading.used as f64 <= self.high * limit {
            return 0;
        }
        // `as` saturates: a target past u64 (or NaN) cannot wrap.
        let target = (self.low * limit) as u64;
        reading.used.saturating_sub(target).min(cache_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       16384 kB\nMemFree:         1000 kB\n\
        MemAvailable:    4096 kB\nBuffers:          100 kB\nCached:          2000 kB\n";

    /// Roots laid out like `/sys/fs/cgroup` and `/proc`, removed when the test ends.
    struct Layout(PathBuf);

    impl Layout {
        /// `meminfo` and an own cgroup of `kubepods/pod1/agent`, with neither cgroup file.
        fn new(test: &str) -> Self {
            let name = format!("inferpool-pressure-{test}-{}", std::process::id());
            let root = std::env::temp_dir().join(name);
            let _ = std::fs::remove_dir_all(&root);
            let proc = root.join("proc");
            std::fs::create_dir_all(proc.join("self")).unwrap();
            std::fs::write(proc.join("meminfo"), MEMINFO).unwrap();
            let own = "0::/kubepods/pod1/agent\n";
            std::fs::write(proc.join("self/cgroup"), own).unwrap();
            Self(root)
        }

        /// Writes the cgroup file `name`.
        fn cgroup_file(self, name: &str, text: &str) -> Self {
            let dir = self.0.join("cg/kubepods/pod1/agent");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), text).unwrap();
            self
        }

        fn read(&self) -> MemoryReading {
            MemorySource::at(self.0.join("cg"), self.0.join("proc"))
                .read()
                .unwrap()
        }
    }

    impl Drop for Layout {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn machine() -> MemoryReading {
        MemoryReading {
            used: 12288 * 1024,
            limit: 16384 * 1024,
        }
    }

    #[test]
    fn own_cgroup_is_the_v2_line() {
        let text = "12:memory:/kubepods/pod1\n1:cpu:/x\n0::/kubepods/burstable/pod1/agent\n";
        assert_eq!(cgroup_path(text), Some("/kubepods/burstable/pod1/agent"));
        assert_eq!(cgroup_path("0::/\n"), Some("/"));
        assert_eq!(cgroup_path("12:memory:/kubepods/pod1\n"), None);
        assert_eq!(cgroup_path(""), None);
    }

    #[test]
    fn limits_parse_and_max_is_none() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_limit("0"), Some(0));
        assert_eq!(parse_limit(""), None);
        assert_eq!(parse_limit("-1\n"), None);
    }

    #[test]
    fn meminfo_parses_in_bytes() {
        assert_eq!(parse_meminfo(MEMINFO), Some(machine()));
        assert_eq!(parse_meminfo("MemTotal: 16 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: 16 kB\n"), None);
        assert_eq!(parse_meminfo("garbage"), None);
        let overflow = format!("MemTotal: {} kB\nMemAvailable: 1 kB\n", u64::MAX);
        assert_eq!(parse_meminfo(&overflow), None);
    }

    #[test]
    fn a_limited_cgroup_is_read() {
        let layout = Layout::new("limited")
            .cgroup_file("memory.max", "1000\n")
            .cgroup_file("memory.current", "600\n");
        let expected = MemoryReading {
            used: 600,
            limit: 1000,
        };
        assert_eq!(layout.read(), expected);
    }

    #[test]
    fn an_unlimited_cgroup_reads_meminfo() {
        let layout = Layout::new("max")
            .cgroup_file("memory.max", "max\n")
            .cgroup_file("memory.current", "600\n");
        assert_eq!(layout.read(), machine());
    }

    #[test]
    fn a_limit_without_usage_reads_meminfo() {
        let layout = Layout::new("nocurrent").cgroup_file("memory.max", "1000\n");
        assert_eq!(layout.read(), machine());
    }

    #[test]
    fn no_cgroup_files_read_meminfo() {
        assert_eq!(Layout::new("none").read(), machine());
    }

    #[test]
    fn no_meminfo_either_is_an_error() {
        let layout = Layout::new("nothing");
        std::fs::remove_file(layout.0.join("proc/meminfo")).unwrap();
        let source = MemorySource::at(layout.0.join("cg"), layout.0.join("proc"));
        assert!(source.read().is_err());
    }

    fn watermarks() -> Watermarks {
        Watermarks {
            high: 0.9,
            low: 0.8,
        }
    }

    fn using(used: u64) -> MemoryReading {
        MemoryReading { used, limit: 1000 }
    }

    #[test]
    fn nothing_to_free_at_or_below_high() {
        assert_eq!(watermarks().bytes_to_free(using(500), 500), 0);
        assert_eq!(watermarks().bytes_to_free(using(900), 500), 0);
    }

    #[test]
    fn above_high_frees_down_to_low() {
        assert_eq!(watermarks().bytes_to_free(using(950), 500), 150);
        assert_eq!(watermarks().bytes_to_free(using(2000), 5000), 1200);
    }

    #[test]
    fn never_more_than_the_cache_holds() {
        assert_eq!(watermarks().bytes_to_free(using(950), 100), 100);
        assert_eq!(watermarks().bytes_to_free(using(950), 0), 0);
    }

    #[test]
    fn no_limit_frees_nothing() {
        let reading = MemoryReading { used: 5, limit: 0 };
        assert_eq!(watermarks().bytes_to_free(reading, 100), 0);
    }

    #[test]
    fn the_working_set_leaves_out_inactive_page_cache() {
        let stat = "anon 100\ninactive_file 250\nactive_file 10\n";
        assert_eq!(stat_field(stat, "inactive_file"), Some(250));
        assert_eq!(stat_field(stat, "file"), None);
        let reading = Layout::new("working-set")
            .cgroup_file("memory.max", "1000\n")
            .cgroup_file("memory.current", "600\n")
            .cgroup_file("memory.stat", stat)
            .read();
        assert_eq!(
            reading,
            MemoryReading {
                used: 350,
                limit: 1000
            }
        );
    }
}
