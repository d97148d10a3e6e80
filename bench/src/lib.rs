//! Shared pieces of inferpool's benchmarks: process statistics from /proc and percentiles.

pub mod cache;
pub mod drivers;
pub mod grpc_hop;
pub mod keepalive;
pub mod process;
pub mod timeline;

use std::time::Duration;

/// CPU time and memory of one process, read from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcStats {
    /// User + system CPU seconds so far.
    pub cpu_seconds: f64,
    /// Resident memory now, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory, bytes.
    pub peak_rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn proc_stats(pid: u32) -> anyhow::Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name.
    let cpu_seconds = (ticks(11) + ticks(12)) / clock_ticks_per_second();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcStats {
        cpu_seconds,
        rss_bytes: kib("VmRSS:"),
        peak_rss_bytes: kib("VmHWM:"),
    })
}

/// CPU seconds of `pid` and every process descended from it (nginx's workers are children
/// of its master); processes that exit meanwhile are not counted.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut total = 0.0;
    let mut pending = vec![pid];
    while let Some(p) = pending.pop() {
        total += proc_stats(p).map_or(0.0, |s| s.cpu_seconds);
        pending.extend(children(p));
    }
    total
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent(child) == Some(pid))
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised name: state, then the parent's pid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// USER_HZ is 100 on every Linux this runs on (the kernel ABI fixes it for /proc).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// The `q`-quantile (0..=1) of `samples` by nearest rank; `None` when empty.
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// Mebibytes, for printing.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The CPU and the kernel path a benchmark ran on, for its header: the model name, the
/// vector extensions candle's kernels pick from, and the switches that override them.
pub fn cpu_header() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let switch = |name: &str| {
        std::env::var(name)
            .map(|v| format!(" {name}={v}"))
            .unwrap_or_default()
    };
    format!(
        "cpu: {model}, {threads} threads, {}{}{}",
        vector_extensions(),
        switch("INFERPOOL_NO_REPACK"),
        switch("MISTRALRS_FORCE_AVX2"),
    )
}

#[cfg(target_arch = "x86_64")]
fn vector_extensions() -> String {
    let found: Vec<&str> = [
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        (
            "avx512vnni",
            std::arch::is_x86_feature_detected!("avx512vnni"),
        ),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    format!("x86-64 with {}", found.join(" "))
}

#[cfg(not(target_arch = "x86_64"))]
fn vector_extensions() -> String {
    std::env::consts::ARCH.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&s, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&s, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&s, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_process_tree_counts_its_children() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        let me = std::process::id();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while proc_stats(child.id()).unwrap().cpu_seconds < 0.05 {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never used CPU"
            );
            std::thread::yield_now();
        }
        assert!(children(me).contains(&child.id()));
        // This process's own time, read first: it keeps growing (this loop spins), so a
        // reading taken after the tree's could pass it and hide the child's share.
        let mine = proc_stats(me).unwrap().cpu_seconds;
        assert!(tree_cpu_seconds(me) >= mine + 0.04);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn this_process_has_stats() {
        let s = proc_stats(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
    }
}
