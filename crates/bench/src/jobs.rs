//! `cairn bench jobs`: job start latency for the process runtime, from the lease being final
//! to the job's process running (docs/design.md §6 bar: p50 and p99 < 100 ms), beside the
//! limit measured in the same run: the bare cost of starting the same sandboxed process, with no
//! chain, event stream or worker in between.
//!
//! Each run opens a one-replica deployment whose job prints the wall clock (`date +%s%N`)
//! as its first act. "Final" is when the owner's event stream delivers the deployment's
//! transaction as final (the same stream the worker listens on for its device); "running" is
//! the time the job printed. Both clocks are this machine's. Without `--node` the bench
//! starts its own devnet (node and worker) in a temporary directory and stops it after.

use crate::percentile;
use anyhow::{Context, Result, bail};
use cairn_client::Client;
use cairn_keystore::Keystore;
use cairn_primitives::{BoundedString, JobSpec, Keypair, OpenDeployment, Resources, TxBody};
use cairn_worker::{Job, Limits, ProcessRuntime, Runtime, StopSignal};
use clap::Args;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `cairn bench jobs`.
#[derive(Args)]
pub(crate) struct JobsBenchArgs {
    /// A running node whose worker serves a CPU device (default: start a devnet for the run).
    #[arg(long)]
    node: Option<String>,
    /// The customer's key (needs credits; devnet's alice has them).
    #[arg(long, default_value = "alice")]
    key: String,
    /// Key store directory (with --node).
    #[arg(long, env = "CAIRN_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// Jobs to start.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

const BAR_MS: f64 = 100.0;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A devnet child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct OwnDevnet {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for OwnDevnet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_devnet() -> Result<(OwnDevnet, String, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--p2p",
            "127.0.0.1:0",
            // The device is verified in its join round, seconds after it registers; then no
            // regular round (a few seconds of every core) runs while job starts are timed.
            "--min-round-gap-secs",
            "86400",
            "--dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting a devnet")?;
    let stderr = child.stderr.take().context("devnet stderr")?;
    let keys = dir.path().join("keys");
    let net = OwnDevnet { child, _dir: dir };
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.trim().strip_prefix("API:") {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = url.context("the devnet printed no API address")?;
    Ok((net, url, keys))
}

/// Waits until `key` has credits and some device is registered (devnet's worker does both).
fn wait_ready(client: &Client, key: &Keypair) -> Result<()> {
    let start = Instant::now();
    loop {
        let credits = client
            .account(&key.address(), false)
            .map_or(0, |a| a["credits"].as_u64().unwrap_or(0));
        let devices = client
            .get("/v1/devices?limit=1")
            .map_or(0, |d| d["devices"].as_array().map_or(0, Vec::len));
        if credits > 0 && devices > 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("no device or no credits after 120 s (credits {credits}, devices {devices})");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Arrival times of the owner's final transactions, from its event stream.
fn follow_txs(client: Client, owner: String) -> Arc<Mutex<HashMap<String, u128>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let path = format!("/v1/events?account={owner}");
        loop {
            let _ = client.stream_lines(&path, |line| {
                let at = now_ns();
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                    && let Some(hash) = v["hash"].as_str()
                    && let Ok(mut m) = seen.lock()
                {
                    m.entry(hash.to_string()).or_insert(at);
                }
                true
            });
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    out
}

fn job_spec() -> Result<JobSpec> {
    Ok(JobSpec {
        image: None,
        command: ["sh", "-c", "date +%s%N"]
            .iter()
            .map(|s| BoundedString::new(*s).map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<Result<_>>()?,
        env: Vec::new(),
        network: false,
    })
}

/// One job through the chain and the worker: ms from final to running.
fn one_run(
    client: &Client,
    key: &Keypair,
    chain_id: &str,
    finals: &Mutex<HashMap<String, u128>>,
) -> Result<f64> {
    let open = OpenDeployment {
        resources: Resources {
            classes: vec![BoundedString::new("CPU").map_err(|e| anyhow::anyhow!("{e}"))?],
            min_vram_mib: 0,
            gpu_count: 0,
            cpu_cores: 0,
            ram_mib: 0,
        },
        replicas: 1,
        region: None,
        duration_secs: 120,
        max_price_per_hour: cairn_primitives::PayUnits(1_000_000),
        job: job_spec()?,
    };
    let hash = client.sign_and_submit(key, None, TxBody::OpenDeployment(open))?;
    let status = client.wait_final(&hash, Duration::from_secs(30))?;
    if status["status"] != "final" {
        bail!("the deployment failed: {}", status["code"]);
    }
    let list = client.get(&format!(
        "/v1/deployments?owner={}&limit=1000",
        key.address()
    ))?;
    let dep = list["deployments"]
        .as_array()
        .and_then(|d| d.iter().filter_map(|x| x["id"].as_u64()).max())
        .context("no deployment")?;
    let d = client.get(&format!("/v1/deployments/{dep}"))?;
    let lease = d["leases"]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|l| l.as_u64().or_else(|| l["id"].as_u64()))
        .context("the deployment has no lease")?;
    let start = Instant::now();
    let printed: u128 = loop {
        let (bytes, _) =
            client.get_signed_bytes(&format!("/v1/leases/{lease}/logs"), key, chain_id, &[])?;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(ns) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
            break ns;
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("lease {lease}: the job printed nothing in 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let final_at = loop {
        if let Some(t) = finals
            .lock()
            .ok()
            .and_then(|m| m.get(&hash.to_string()).copied())
        {
            break t;
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the event stream never delivered {hash}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The device is free again once the lease has ended.
    while client
        .get(&format!("/v1/leases/{lease}"))
        .is_ok_and(|l| l["state"] == "active")
    {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("lease {lease} did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((printed as f64 - final_at as f64) / 1e6)
}

/// A sink that keeps what the job printed.
#[derive(Default)]
struct Collect {
    out: Vec<u8>,
}

impl cairn_worker::Sink for Collect {
    fn started(&mut self) {}
    fn output(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
}

/// The floor: the same sandboxed process started directly, ms from asking to running.
fn sandbox_floor(runs: usize) -> Result<Vec<f64>> {
    let rt = ProcessRuntime::default();
    if let Some(why) = rt.unavailable() {
        bail!("{why}");
    }
    let dir = tempfile::tempdir()?;
    let mut out = Vec::new();
    for i in 0..runs {
        let job = Job {
            lease: i as u64,
            spec: job_spec()?,
            limits: Limits::default(),
            work_dir: dir.path().join(i.to_string()),
            hidden: Vec::new(),
            gpus: Vec::new(),
        };
        let mut sink = Collect::default();
        let asked = now_ns();
        rt.run(&job, &mut sink, &StopSignal::default())?;
        let printed: u128 = String::from_utf8_lossy(&sink.out)
            .trim()
            .parse()
            .context("the job printed no time")?;
        out.push((printed as f64 - asked as f64) / 1e6);
    }
    Ok(out)
}

pub(crate) fn run(a: JobsBenchArgs) -> Result<()> {
    let (_devnet, url, keys_dir) = match &a.node {
        Some(url) => (
            None,
            url.clone(),
            a.keys_dir
                .clone()
                .map_or_else(Keystore::default_location, Keystore::at)
                .dir()
                .to_path_buf(),
        ),
        None => {
            if !a.json {
                eprintln!("starting a devnet for the run…");
            }
            let (net, url, keys) = start_devnet()?;
            (Some(net), url, keys)
        }
    };
    let client = Client::new(&url);
    let key = Keystore::at(&keys_dir).load(&a.key)?;
    wait_ready(&client, &key)?;
    let chain_id = client.status()?["chain_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let finals = follow_txs(client.clone(), key.address().to_string());
    // Let the stream connect before the first deployment.
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = Vec::with_capacity(a.runs);
    for i in 0..a.runs {
        lat.push(one_run(&client, &key, &chain_id, &finals)?);
        if !a.json {
            eprint!("\rjob {}/{}: {:.1} ms   ", i + 1, a.runs, lat[i]);
        }
    }
    if !a.json {
        eprintln!();
    }
    let mut floor = sandbox_floor(a.runs)?;
    lat.sort_by(f64::total_cmp);
    floor.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let (f50, f99) = (percentile(&floor, 0.5), percentile(&floor, 0.99));
    if a.json {
        println!(
            "{}",
            json!({
                "runs": a.runs,
                "start_p50_ms": p50, "start_p99_ms": p99,
                "start_min_ms": lat.first(), "start_max_ms": lat.last(),
                "sandbox_p50_ms": f50, "sandbox_p99_ms": f99,
                "bar_ms": BAR_MS, "bar_met": p99 < BAR_MS,
            })
        );
    } else {
        println!("{:<44} {:>10} {:>10} {:>10}", "", "p50", "p99", "bar");
        println!(
            "{:<44} {:>7.1} ms {:>7.1} ms {:>7} ms  {}",
            "job start: lease final → process running",
            p50,
            p99,
            BAR_MS,
            if p99 < BAR_MS { "met" } else { "MISSED" }
        );
        println!(
            "{:<44} {:>7.1} ms {:>7.1} ms {:>10}",
            "limit: the same sandbox started directly", f50, f99, ""
        );
        println!(
            "({} jobs each; min {:.1} ms, max {:.1} ms)",
            a.runs,
            lat[0],
            lat[lat.len() - 1]
        );
    }
    Ok(())
}
