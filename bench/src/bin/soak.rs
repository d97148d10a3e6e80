//! The soak (issue #23): a local pool of two agents with the default model under bounded
//! streaming load for a set time (30 minutes by default), one agent SIGKILLed every two
//! minutes in turn (local mode restarts it, as a Deployment would). Prints the RSS and
//! open file descriptors of every process (the local process and each agent) at the start
//! and the end, requests by outcome, and lost requests: refused or failed before their
//! first token while the other agent was alive. Any lost request fails the run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use inferpool_bench::process::Process;
use inferpool_bench::{mib, proc_stats};
use inferpool_e2e::http::{free_port, post_json};
use inferpool_e2e::local::agent_pid_of;
use inferpool_e2e::parts::ScratchDir;
use inferpool_e2e::streams::{Ended, stream_one};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The inferpool-operator binary (its inferpool-agent beside it).
    #[arg(long)]
    operator: PathBuf,
    /// How long the load runs.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Seconds between agent kills.
    #[arg(long, default_value_t = 120)]
    restart_every_seconds: u64,
    /// Concurrent streaming clients (the load's bound).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Tokens per answer.
    #[arg(long, default_value_t = 32)]
    max_tokens: u32,
}

const MODEL: &str = "smollm2-soak";
const POOL: &str = "soak";
const AGENTS: usize = 2;

/// What the clients got.
#[derive(Debug, Default)]
struct Outcomes {
    completed: AtomicUsize,
    cut: AtomicUsize,
    lost: AtomicUsize,
}

/// A process's memory and descriptors.
#[derive(Debug, Clone, Copy)]
struct Usage {
    pid: u32,
    rss: u64,
    fds: usize,
}

fn usage(pid: u32) -> Option<Usage> {
    let rss = proc_stats(pid).ok()?.rss_bytes;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Usage { pid, rss, fds })
}

/// The agents of the local process `local` that run, by id (`soak-0`, ...).
fn agents(local: u32) -> Vec<(String, u32)> {
    (0..AGENTS)
        .map(|i| format!("{POOL}-{i}"))
        .filter_map(|id| agent_pid_of(local, &id).map(|pid| (id, pid)))
        .collect()
}

fn start_pool(args: &Args) -> anyhow::Result<(Process, SocketAddr)> {
    let dir = ScratchDir::new("soak")?;
    let file = dir.path().join("pool.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: {POOL}\n\
             spec:\n  replicas: {AGENTS}\n  model:\n    source: bundled\n    servedName: {MODEL}\n"
        ),
    )?;
    let addr = free_port()?;
    let log = std::fs::File::create(dir.path().join("local.log"))?;
    let child = Command::new(&args.operator)
        .args([
            "local",
            "--addr",
            &addr.to_string(),
            "--queue-wait-seconds",
            "300",
            "-f",
        ])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok((Process::new(child, dir), addr))
}

/// Waits until both agents answer through the gateway.
fn until_serving(addr: SocketAddr, local: u32) -> anyhow::Result<()> {
    let body =
        json!({"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        let answered =
            post_json(addr, "/v1/chat/completions", &body).is_ok_and(|r| r.status == 200);
        if answered && agents(local).len() == AGENTS {
            return Ok(());
        }
        std::thread::park_timeout(Duration::from_millis(200));
    }
    anyhow::bail!("the pool did not serve within 300 s")
}

/// One client: streams until `done`, counting each answer's outcome.
fn client(addr: SocketAddr, i: usize, max_tokens: u32, done: &AtomicBool, out: &Outcomes) {
    let streaming = AtomicUsize::new(0);
    let mut n = i * 1_000_000;
    while !done.load(Ordering::Relaxed) {
        let counter = match stream_one(addr, MODEL, n, max_tokens, &streaming) {
            Ok(Ended::Completed) => &out.completed,
            Ok(Ended::Cut) => &out.cut,
            Ok(Ended::Lost(why)) => {
                eprintln!("soak: lost: {why}");
                &out.lost
            }
            Err(e) => {
                eprintln!("soak: lost: {e:#}");
                &out.lost
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
}

/// Kills agent `id` and waits until local mode runs it again; returns the new pid.
fn kill_and_wait(local: u32, id: &str) -> anyhow::Result<u32> {
    let old = agents(local)
        .into_iter()
        .find(|(a, _)| a == id)
        .map(|(_, p)| p);
    let old = old.ok_or_else(|| anyhow::anyhow!("no agent {id}"))?;
    Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if let Some((_, pid)) = agents(local)
            .into_iter()
            .find(|(a, p)| a == id && *p != old)
        {
            return Ok(pid);
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    anyhow::bail!("{id} was not restarted within 120 s")
}

fn snapshot(local: u32) -> Vec<(String, Option<Usage>)> {
    let mut all = vec![("local (gateway)".to_owned(), usage(local))];
    all.extend(agents(local).into_iter().map(|(id, pid)| (id, usage(pid))));
    all
}

fn print_usage(start: &[(String, Option<Usage>)], end: &[(String, Option<Usage>)]) {
    println!(
        "{:<18} {:>22} {:>22}",
        "process", "start (pid rss fds)", "end (pid rss fds)"
    );
    let show = |u: Option<&Usage>| {
        u.map_or("-".to_owned(), |u| {
            format!("{} {:.0}MiB {}", u.pid, mib(u.rss), u.fds)
        })
    };
    for (name, first) in start {
        let last = end
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, u)| u.as_ref());
        println!("{name:<18} {:>22} {:>22}", show(first.as_ref()), show(last));
    }
}

/// Returns once `at` has passed since `began`.
fn wait_until(began: Instant, at: Duration) {
    while began.elapsed() < at {
        std::thread::park_timeout(at - began.elapsed());
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (pool, addr) = start_pool(&args)?;
    let local = pool.child.id();
    until_serving(addr, local)?;
    let start = snapshot(local);
    let (done, out) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Outcomes::default()),
    );
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (done, out, tokens) = (done.clone(), out.clone(), args.max_tokens);
            std::thread::spawn(move || client(addr, i, tokens, &done, &out))
        })
        .collect();
    let began = Instant::now();
    let length = Duration::from_secs(args.minutes * 60);
    let every = Duration::from_secs(args.restart_every_seconds.max(1));
    let mut kills = 0u32;
    while every * (kills + 1) < length {
        wait_until(began, every * (kills + 1));
        kill_and_wait(local, &format!("{POOL}-{}", kills as usize % AGENTS))?;
        kills += 1;
    }
    wait_until(began, length);
    done.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let end = snapshot(local);
    print_usage(&start, &end);
    let (completed, cut, lost) = (
        out.completed.load(Ordering::Relaxed),
        out.cut.load(Ordering::Relaxed),
        out.lost.load(Ordering::Relaxed),
    );
    println!(
        "soak: {:?}, {} clients, {kills} agent kills: {completed} completed, {cut} cut mid-stream (error event), {lost} lost (must be 0)",
        began.elapsed(),
        args.clients
    );
    anyhow::ensure!(lost == 0, "{lost} requests lost");
    Ok(())
}
