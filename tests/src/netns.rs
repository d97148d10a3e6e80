//! A network namespace created by a test, joined to this one by a veth pair: the one
//! place besides loopback that tests may dial. Kubernetes refuses loopback addresses in
//! EndpointSlices, so a test of Kubernetes discovery runs its agent in here.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Addresses inside namespaces that this test process created (and may dial).
static OWNED: Mutex<Vec<IpAddr>> = Mutex::new(Vec::new());

/// Whether `ip` is loopback or inside a namespace this process created.
pub fn may_dial(ip: IpAddr) -> bool {
    ip.is_loopback() || OWNED.lock().is_ok_and(|owned| owned.contains(&ip))
}

/// A network namespace with `inner` reachable from here; deleted when dropped.
#[derive(Debug)]
pub struct NetNs {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    /// The address inside it.
    pub inner: Ipv4Addr,
    host_veth: String,
    inner_veth: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl NetNs {
    /// Creates a namespace and a /30 link to it (needs CAP_NET_ADMIN).
    pub fn create() -> anyhow::Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let (pid, n) = (std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let name = format!("ipool-{pid}-{n}");
        let tag = (pid % 100_000) * 10 + n % 10;
        let (host_veth, inner_veth) = (format!("vh{tag}"), format!("vn{tag}"));
        // 10.(200..250).(0..255).0/30 from the process id and sequence: distinct per run.
        let (b, c) = (200 + (pid % 50) as u8, ((pid / 50) % 64 * 4 + n % 4) as u8);
        let host = format!("10.{b}.{c}.1");
        let inner = Ipv4Addr::new(10, b, c, 2);
        ip(&["netns", "add", &name])?;
        let ns = Self {
            name: name.clone(),
            inner,
            host_veth: host_veth.clone(),
            inner_veth: inner_veth.clone(),
        };
        ip(&[
            "link",
            "add",
            &host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &inner_veth,
        ])?;
        ip(&["link", "set", &inner_veth, "netns", &name])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", &host_veth])?;
        ip(&["link", "set", &host_veth, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{inner}/30"), "dev", &inner_veth])?;
        inside(&["link", "set", &inner_veth, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        if let Ok(mut owned) = OWNED.lock() {
            owned.push(IpAddr::V4(inner));
        }
        Ok(ns)
    }
}

impl NetNs {
    /// Shapes both ends of the link with the root qdisc `qdisc` (e.g. `netem delay 50ms
    /// loss 2%`, `tbf rate 256kbit burst 4kb latency 200ms`), so that traffic each way is
    /// delayed, lost or slowed as it says; replaces any earlier shaping.
    pub fn shape(&self, qdisc: &str) -> anyhow::Result<()> {
        let spec: Vec<&str> = qdisc.split_whitespace().collect();
        let host = [
            &["qdisc", "replace", "dev", &self.host_veth, "root"],
            &spec[..],
        ];
        tc(&[], &host.concat())?;
        let inner = [
            &["qdisc", "replace", "dev", &self.inner_veth, "root"],
            &spec[..],
        ];
        tc(&["netns", "exec", &self.name], &inner.concat())
    }
}

impl NetNs {
    /// `(dropped, overlimits)` packets of the shaping on both ends, from `tc -s`: what it
    /// discarded, and how often it held traffic back.
    pub fn shaped(&self) -> anyhow::Result<(u64, u64)> {
        let host = tc_output(&[], &["-s", "qdisc", "show", "dev", &self.host_veth])?;
        let prefix = ["netns", "exec", self.name.as_str()];
        let inner = tc_output(&prefix, &["-s", "qdisc", "show", "dev", &self.inner_veth])?;
        let count = |text: &str, word: &str| -> u64 {
            // `tc -s` prints `(dropped 0, overlimits 12 requeues 0)`.
            let words: Vec<&str> = text
                .split(|c: char| c.is_whitespace() || ",()".contains(c))
                .collect();
            words
                .windows(2)
                .filter(|w| w[0] == word)
                .filter_map(|w| w[1].parse::<u64>().ok())
                .sum()
        };
        let both = format!("{host}\n{inner}");
        Ok((count(&both, "dropped"), count(&both, "overlimits")))
    }
}

/// Runs `tc args` (inside a namespace when `prefix` is `ip netns exec NAME`'s arguments).
fn tc(prefix: &[&str], args: &[&str]) -> anyhow::Result<()> {
    tc_output(prefix, args).map(drop)
}

/// The same, returning what it printed.
fn tc_output(prefix: &[&str], args: &[&str]) -> anyhow::Result<String> {
    let mut command = match prefix.is_empty() {
        true => Command::new("tc"),
        false => {
            let mut ip = Command::new("ip");
            ip.args(prefix).arg("tc");
            ip
        }
    };
    let out = command.args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "tc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(mut owned) = OWNED.lock() {
            owned.retain(|a| *a != IpAddr::V4(self.inner));
        }
        let _ = ip(&["link", "del", &self.host_veth]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
