//! The worker daemon: finds its devices' leases, runs each job once, reports on it from the
//! device key, uploads its output, and drains on shutdown.
//!
//! - **Finding leases**: one server-sent event stream per device (`/v1/events?device=…`,
//!   reconnected with backoff) wakes the loop the moment a block touches the device; the loop
//!   also polls every [`AgentConfig::poll`], so a dropped stream only costs latency.
//! - **Never twice**: a lease is written to the journal (`leases.json`, replaced atomically)
//!   before its job starts. After a crash, a lease the journal says was running is reported
//!   failed ("interrupted") if the chain still has it active, and is never started again.
//! - **Reports**: `Started` once the process runs, `Running` every [`AgentConfig::heartbeat`]
//!   (the ledger times out a lease whose device stays silent), then `Finished` with the exit
//!   code or `Failed` with the reason a limit, the customer or a shutdown gave.
//! - **Logs**: uploaded every half second while the job runs and once more at its end, each
//!   upload naming its offset, so a retry never duplicates anything.
//! - **Shutdown**: no new leases; running jobs get [`AgentConfig::drain`] to finish, then are
//!   stopped and reported failed, which hands the rest of the lease back to the customer.
//!   The agent returns once those final reports are final (or 30 s have passed), so that what
//!   stops after it, the node included, cannot lose them.

use crate::discover::GpuAccess;
use crate::runtime::{Job, Limits, Outcome, Runtime, Sink, StopSignal};
use cairn_client::Client;
use cairn_primitives::{
    Amount, BoundedString, Hash, JobSpec, Keypair, LeaseReportKind, Tx, TxBody, Usage,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the worker runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The node's API.
    pub node: String,
    /// The journal and the jobs' work dirs.
    pub data_dir: PathBuf,
    /// Paths no job may see (the keys directory, the data dir).
    pub hidden: Vec<PathBuf>,
    /// Between `Running` reports.
    pub heartbeat: Duration,
    /// Between polls of the chain when no event arrives.
    pub poll: Duration,
    /// How long running jobs may take to finish on shutdown.
    pub drain: Duration,
    /// Limits for every job (the time limit is also capped by the lease's end).
    pub limits: Limits,
    /// Run bare commands in this image with the container runtime instead of the process
    /// runtime.
    pub bare_image: Option<String>,
    /// Whether jobs that ask for the network get it (else their leases fail, saying why).
    pub allow_network: bool,
}

impl AgentConfig {
    /// Defaults for `node` and `data_dir`.
    pub fn new(node: &str, data_dir: PathBuf) -> Self {
        Self {
            node: node.to_string(),
            hidden: vec![data_dir.clone()],
            data_dir,
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            drain: Duration::from_secs(30),
            limits: Limits::default(),
            bare_image: None,
            allow_network: true,
        }
    }
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The node could not be used.
    #[error(transparent)]
    Node(#[from] cairn_client::Error),
    /// The journal could not be read or written.
    #[error("lease journal {path}: {reason}")]
    Journal {
        /// Its path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Where each lease this worker took stands, on disk.
struct Journal {
    path: PathBuf,
    leases: BTreeMap<u64, String>,
}

impl Journal {
    fn open(dir: &std::path::Path) -> Result<Self, AgentError> {
        let path = dir.join("leases.json");
        let err = |e: &dyn std::fmt::Display| AgentError::Journal {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        let leases = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| err(&e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err(&e)),
        };
        Ok(Self { path, leases })
    }

    /// Records `lease` as `state`, durably, before returning.
    fn set(&mut self, lease: u64, state: &str) -> Result<(), AgentError> {
        self.leases.insert(lease, state.to_string());
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&self.leases).unwrap_or_default())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| AgentError::Journal {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

/// How long a stopping worker waits for its last lease reports to become final.
const CONFIRM_WITHIN: Duration = Duration::from_secs(30);

/// Signs and submits one device's reports, keeping its nonce (several may be pending).
struct Reporter {
    /// The device's GPUs, which its leases' jobs get.
    gpus: Vec<GpuAccess>,
    client: Client,
    chain_id: String,
    min_fee: u64,
    key: Keypair,
    next_nonce: Mutex<Option<u64>>,
    /// Final reports (finished, failed) admitted but not yet seen final: a draining worker
    /// waits for them, so that stopping right after it (a devnet, a machine shutting down)
    /// cannot drop a lease's outcome with the node's mempool.
    unconfirmed: Mutex<Vec<Hash>>,
    /// Every report admitted whose fate is not known yet. One that failed in its block (a
    /// heartbeat that raced its lease's end) did not use its nonce: the nonces kept after it
    /// would leave a gap that the node never fills, and every later report would wait behind
    /// it forever.
    outstanding: Mutex<Vec<Hash>>,
}

impl Reporter {
    /// Waits until every final report admitted so far is final, or `deadline` passes.
    fn confirm(&self, deadline: Instant) {
        let pending = std::mem::take(
            &mut *self
                .unconfirmed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for hash in pending {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.wait_final(&hash, left) {
                Ok(v) if v["status"] == "failed" => {
                    tracing::warn!(%hash, code = %v["code"], "a final lease report failed");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%hash, error = %e, "a final lease report is not final"),
            }
        }
    }

    /// Forgets the kept nonce when a report admitted earlier failed in its block or left the
    /// mempool without a block: the next report reads the account's nonce again.
    fn resync(&self, next: &mut Option<u64>) {
        let mut outstanding = self
            .outstanding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut lost = false;
        outstanding.retain(|h| match self.client.tx_status(h) {
            Ok(v) if v["status"] == "final" => false,
            Ok(v) if v["status"] == "failed" => {
                lost = true;
                false
            }
            Err(cairn_client::Error::Api { status: 404, .. }) => {
                lost = true;
                false
            }
            _ => true,
        });
        if lost {
            tracing::info!("a lease report did not land; reading the device's nonce again");
            outstanding.clear();
            *next = None;
        }
    }

    fn report(&self, lease: u64, kind: LeaseReportKind, usage: Usage) {
        let mut next = self
            .next_nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.resync(&mut next);
        for attempt in 0..3 {
            let nonce = match *next {
                Some(n) => n,
                None => match self.client.next_nonce(&self.key.address()) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(lease, error = %e, "cannot read the device's nonce");
                        return;
                    }
                },
            };
            let tx = Tx {
                sender: self.key.public_key(),
                nonce,
                fee: Amount::from_base(self.min_fee),
                body: TxBody::LeaseReport {
                    lease,
                    kind: kind.clone(),
                    usage: usage.clone(),
                },
            }
            .sign(&self.key, &self.chain_id);
            match self.client.submit(&tx) {
                Ok(hash) => {
                    *next = Some(nonce + 1);
                    let mut outstanding = self
                        .outstanding
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    outstanding.push(hash);
                    // Bounded: the oldest are long decided.
                    if outstanding.len() > 64 {
                        outstanding.remove(0);
                    }
                    drop(outstanding);
                    if matches!(
                        kind,
                        LeaseReportKind::Finished { .. } | LeaseReportKind::Failed { .. }
                    ) {
                        self.unconfirmed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(hash);
                    }
                    return;
                }
                Err(cairn_client::Error::Api { code, .. })
                    if code.contains("nonce") && attempt < 2 =>
                {
                    // Another report landed or expired meanwhile: read the nonce again.
                    *next = None;
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => {
                    tracing::warn!(lease, error = %e, "lease report refused");
                    *next = None;
                    return;
                }
            }
        }
    }
}

/// The output of one job, and how much of it the node has.
#[derive(Default)]
struct LogBuffer {
    bytes: Vec<u8>,
    uploaded: usize,
    /// The runtime's latest usage sample, for heartbeats.
    usage: Usage,
}

struct JobSink {
    reporter: Arc<Reporter>,
    lease: u64,
    logs: Arc<Mutex<LogBuffer>>,
}

impl Sink for JobSink {
    fn started(&mut self) {
        tracing::info!(lease = self.lease, "job started");
        self.reporter
            .report(self.lease, LeaseReportKind::Started, Usage::default());
    }
    fn output(&mut self, bytes: &[u8]) {
        if let Ok(mut l) = self.logs.lock() {
            l.bytes.extend_from_slice(bytes);
        }
    }
    fn usage(&mut self, usage: &Usage) {
        if let Ok(mut l) = self.logs.lock() {
            l.usage = usage.clone();
        }
    }
}

fn upload(reporter: &Reporter, lease: u64, logs: &Mutex<LogBuffer>) {
    let (offset, chunk) = {
        let Ok(l) = logs.lock() else { return };
        if l.uploaded >= l.bytes.len() {
            return;
        }
        (l.uploaded, l.bytes[l.uploaded..].to_vec())
    };
    let path = format!("/v1/leases/{lease}/logs?offset={offset}");
    match reporter
        .client
        .post_signed(&path, &reporter.key, &reporter.chain_id, &chunk)
    {
        Ok(v) => {
            let len = v["length"].as_u64().unwrap_or(0) as usize;
            if let Ok(mut l) = logs.lock() {
                l.uploaded = len.min(l.bytes.len()).max(l.uploaded);
            }
        }
        Err(e) => tracing::warn!(lease, error = %e, "log upload failed; retrying"),
    }
}

struct Running {
    stop: StopSignal,
    thread: std::thread::JoinHandle<()>,
    logs: Arc<Mutex<LogBuffer>>,
    device: usize,
}

/// The worker.
pub struct Agent {
    cfg: AgentConfig,
    client: Client,
    reporters: Vec<Arc<Reporter>>,
    process: Arc<dyn Runtime>,
    container: Option<Arc<dyn Runtime>>,
}

fn text(v: &Value) -> Option<BoundedString<1024>> {
    v.as_str().and_then(|s| BoundedString::new(s).ok())
}

impl Agent {
    /// A worker for `devices` (each device's key and the GPUs its jobs get) against the
    /// node in `cfg`, running bare commands with `process` and images with `container`
    /// (jobs with an image fail when `None`).
    pub fn new(
        cfg: AgentConfig,
        devices: Vec<(Keypair, Vec<GpuAccess>)>,
        process: Arc<dyn Runtime>,
        container: Option<Arc<dyn Runtime>>,
    ) -> Result<Self, AgentError> {
        let client = Client::new(&cfg.node);
        let status = client.status()?;
        let chain_id = status["chain_id"].as_str().unwrap_or_default().to_string();
        let min_fee = status["min_fee_base"].as_u64().unwrap_or(0);
        let reporters = devices
            .into_iter()
            .map(|(key, gpus)| {
                Arc::new(Reporter {
                    gpus,
                    client: client.clone(),
                    chain_id: chain_id.clone(),
                    min_fee,
                    key,
                    next_nonce: Mutex::new(None),
                    unconfirmed: Mutex::new(Vec::new()),
                    outstanding: Mutex::new(Vec::new()),
                })
            })
            .collect();
        Ok(Self {
            cfg,
            client,
            reporters,
            process,
            container,
        })
    }

    /// Follows each device's event stream, waking the loop on every event, until `shutdown`.
    fn watch(&self, wake: mpsc::Sender<()>, shutdown: Arc<AtomicBool>) {
        for r in &self.reporters {
            let client = self.client.clone();
            let path = format!("/v1/events?device={}", r.key.address());
            let wake = wake.clone();
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                let mut backoff = Duration::from_millis(250);
                while !shutdown.load(Ordering::SeqCst) {
                    let result = client.stream_lines(&path, |line| {
                        if line.starts_with("data:") && wake.send(()).is_err() {
                            return false;
                        }
                        !shutdown.load(Ordering::SeqCst)
                    });
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "event stream dropped; polling meanwhile");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            });
        }
    }

    /// Runs until `shutdown` is set, then drains.
    pub fn run(&self, shutdown: Arc<AtomicBool>) -> Result<(), AgentError> {
        let mut journal = Journal::open(&self.cfg.data_dir)?;
        self.recover(&mut journal)?;
        for left in self.process.recover() {
            tracing::warn!(cgroup = left, "removed a job cgroup a previous run left");
        }
        if let Some(c) = &self.container {
            for name in c.recover() {
                tracing::warn!(container = name, "removed a container a previous run left");
            }
        }
        let journal = Arc::new(Mutex::new(journal));
        let (wake_tx, wake) = mpsc::channel();
        let stream_stop = Arc::new(AtomicBool::new(false));
        self.watch(wake_tx, stream_stop.clone());
        let mut running: HashMap<u64, Running> = HashMap::new();
        let mut last_beat = Instant::now();
        let mut last_upload = Instant::now();
        let mut draining: Option<Instant> = None;
        loop {
            if shutdown.load(Ordering::SeqCst) && draining.is_none() {
                tracing::info!(jobs = running.len(), "shutting down: draining running jobs");
                draining = Some(Instant::now());
            }
            if let Some(since) = draining {
                if since.elapsed() > self.cfg.drain {
                    for r in running.values() {
                        r.stop.stop("the worker shut down before the job finished");
                    }
                }
            } else {
                self.take_new_leases(&journal, &mut running);
            }
            // Leases the chain ended (closed, expired, timed out): stop their jobs.
            for (id, r) in &running {
                if let Ok(l) = self.client.get(&format!("/v1/leases/{id}"))
                    && l["state"] != "active"
                {
                    r.stop.stop(&format!(
                        "the lease ended on chain ({})",
                        l["state"].as_str().unwrap_or("?")
                    ));
                }
            }
            if last_beat.elapsed() >= self.cfg.heartbeat {
                last_beat = Instant::now();
                // A job that has ended reported its end: no heartbeat after it.
                for (id, r) in running.iter().filter(|(_, r)| !r.thread.is_finished()) {
                    let usage = r.logs.lock().map_or_else(
                        |_| Usage::default(),
                        |l| Usage {
                            log_bytes: l.bytes.len() as u64,
                            ..l.usage.clone()
                        },
                    );
                    self.reporters[r.device].report(*id, LeaseReportKind::Running, usage);
                }
            }
            if last_upload.elapsed() >= Duration::from_millis(500) {
                last_upload = Instant::now();
                for (id, r) in &running {
                    upload(&self.reporters[r.device], *id, &r.logs);
                }
            }
            let done: Vec<u64> = running
                .iter()
                .filter(|(_, r)| r.thread.is_finished())
                .map(|(id, _)| *id)
                .collect();
            for id in done {
                if let Some(r) = running.remove(&id) {
                    let _ = r.thread.join();
                }
            }
            if draining.is_some() && running.is_empty() {
                break;
            }
            let wait = if draining.is_some() {
                Duration::from_millis(50)
            } else {
                self.cfg.poll
            };
            let _ = wake.recv_timeout(wait);
        }
        stream_stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + CONFIRM_WITHIN;
        for r in &self.reporters {
            r.confirm(deadline);
        }
        Ok(())
    }

    /// Reports leases a previous run left running, without running them again.
    fn recover(&self, journal: &mut Journal) -> Result<(), AgentError> {
        let interrupted: Vec<u64> = journal
            .leases
            .iter()
            .filter(|(_, s)| s.as_str() == "running")
            .map(|(id, _)| *id)
            .collect();
        for id in interrupted {
            let lease = self.client.get(&format!("/v1/leases/{id}")).ok();
            let device = lease
                .as_ref()
                .and_then(|l| l["device"].as_str().map(str::to_string));
            let active = lease.as_ref().is_some_and(|l| l["state"] == "active");
            if active
                && let Some(r) = self
                    .reporters
                    .iter()
                    .find(|r| Some(r.key.address().to_string()) == device)
            {
                tracing::warn!(lease = id, "the previous run was interrupted; reporting it");
                r.report(
                    id,
                    LeaseReportKind::Failed {
                        reason: BoundedString::new(
                            "the worker restarted while the job ran; it is not run twice",
                        )
                        .unwrap_or_default(),
                    },
                    Usage::default(),
                );
            }
            journal.set(id, "interrupted")?;
        }
        Ok(())
    }

    fn take_new_leases(&self, journal: &Arc<Mutex<Journal>>, running: &mut HashMap<u64, Running>) {
        for (i, r) in self.reporters.iter().enumerate() {
            let Ok(dev) = self.client.get(&format!("/v1/devices/{}", r.key.address())) else {
                continue;
            };
            let lease = &dev["lease"];
            let Some(id) = lease["id"].as_u64() else {
                continue;
            };
            if lease["state"] != "active" || running.contains_key(&id) {
                continue;
            }
            if journal.lock().map_or(true, |j| j.leases.contains_key(&id)) {
                continue;
            }
            match self.start(i, id, lease, journal) {
                Ok(job) => {
                    running.insert(id, job);
                }
                Err(e) => tracing::warn!(lease = id, error = %e, "could not start the lease"),
            }
        }
    }

    fn start(
        &self,
        device: usize,
        id: u64,
        lease: &Value,
        journal: &Arc<Mutex<Journal>>,
    ) -> Result<Running, AgentError> {
        let dep_id = lease["deployment"].as_u64().unwrap_or(u64::MAX);
        let dep = self.client.get(&format!("/v1/deployments/{dep_id}"))?;
        let job = &dep["job"];
        let spec = JobSpec {
            image: job["image"]
                .as_str()
                .and_then(|s| BoundedString::new(s).ok()),
            command: job["command"]
                .as_array()
                .map(|a| a.iter().filter_map(text).collect())
                .unwrap_or_default(),
            env: job["environment"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((BoundedString::new(k.as_str()).ok()?, text(v)?)))
                        .collect()
                })
                .unwrap_or_default(),
            network: job["network"].as_bool().unwrap_or(false),
        };
        // Never past the lease's end.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left = lease["end_ms"].as_u64().unwrap_or(0).saturating_sub(now);
        let mut limits = self.cfg.limits.clone();
        limits.time = limits.time.min(Duration::from_millis(left.max(1)));
        limits.network = spec.network && self.cfg.allow_network;
        let refused = (spec.network && !self.cfg.allow_network)
            .then(|| "the job asks for the network and this worker offers none".to_string());
        let job = Job {
            lease: id,
            spec,
            limits,
            work_dir: self.cfg.data_dir.join("jobs").join(id.to_string()),
            hidden: self.cfg.hidden.clone(),
            gpus: self.reporters[device].gpus.clone(),
        };
        // Written down before anything runs: after a crash this lease is reported, not rerun.
        journal
            .lock()
            .map_err(|_| AgentError::Journal {
                path: self.cfg.data_dir.clone(),
                reason: "poisoned".into(),
            })?
            .set(id, "running")?;
        let mut job = job;
        if job.spec.image.is_none()
            && let Some(image) = &self.cfg.bare_image
        {
            job.spec.image = BoundedString::new(image.as_str()).ok();
        }
        let runtime = if job.spec.image.is_some() {
            self.container.clone()
        } else {
            Some(self.process.clone())
        };
        let reporter = self.reporters[device].clone();
        let logs = Arc::new(Mutex::new(LogBuffer::default()));
        let stop = StopSignal::default();
        let (thread_logs, thread_stop, thread_journal) =
            (logs.clone(), stop.clone(), journal.clone());
        tracing::info!(
            lease = id,
            deployment = dep_id,
            "lease booked; starting its job"
        );
        let thread = std::thread::spawn(move || {
            let mut sink = JobSink {
                reporter: reporter.clone(),
                lease: id,
                logs: thread_logs.clone(),
            };
            let result = match (refused, runtime) {
                (Some(why), _) => Err(why),
                (None, Some(rt)) => rt
                    .run(&job, &mut sink, &thread_stop)
                    .map_err(|e| e.to_string()),
                (None, None) => Err(
                    "this worker has no container runtime: jobs with an image cannot run here"
                        .into(),
                ),
            };
            upload(&reporter, id, &thread_logs);
            let usage = |u: Usage| Usage {
                log_bytes: thread_logs
                    .lock()
                    .map_or(u.log_bytes, |l| l.bytes.len() as u64),
                ..u
            };
            let (kind, u) = match result {
                Ok(r) => match r.outcome {
                    Outcome::Exited(code) => {
                        (LeaseReportKind::Finished { exit_code: code }, r.usage)
                    }
                    Outcome::Stopped(reason) => (failed(&reason), r.usage),
                },
                Err(e) => (failed(&e), Usage::default()),
            };
            tracing::info!(lease = id, outcome = ?kind, "job ended");
            // A lease the chain already ended takes no report (it would be refused).
            let active = reporter
                .client
                .get(&format!("/v1/leases/{id}"))
                .is_ok_and(|l| l["state"] == "active");
            if active {
                reporter.report(id, kind, usage(u));
            }
            if let Ok(mut j) = thread_journal.lock()
                && let Err(e) = j.set(id, "done")
            {
                tracing::error!(lease = id, error = %e, "journal write failed");
            }
        });
        Ok(Running {
            stop,
            thread,
            logs,
            device,
        })
    }
}

fn failed(reason: &str) -> LeaseReportKind {
    let mut r = reason.to_string();
    while r.len() > 256 {
        r.pop();
    }
    LeaseReportKind::Failed {
        reason: BoundedString::new(r).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_primitives::SignedTx;
    use cairn_primitives::wire::DecodeExt;
    use std::io::{BufRead, BufReader, Read, Write};

    /// A node's API reduced to what a reporter reads, over real HTTP on loopback: every
    /// transaction's status is `status` (a JSON body, or a 404), the account's nonce is
    /// `nonce`, and each submitted transaction is kept. Stops once no request came for
    /// half a second.
    fn node(
        status: Option<&'static str>,
        nonce: u64,
    ) -> (String, std::thread::JoinHandle<Vec<SignedTx>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serve = std::thread::spawn(move || {
            let mut posted = Vec::new();
            let mut heard = Instant::now();
            while heard.elapsed() < Duration::from_millis(500) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                heard = Instant::now();
                stream.set_nonblocking(false).unwrap();
                let mut stream = stream;
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let (code, answer) = if line.starts_with("POST /v1/txs") {
                    let tx = SignedTx::decode(cairn_primitives::wire::Copying(&body[..])).unwrap();
                    let hash = tx.hash();
                    posted.push(tx);
                    (200, format!(r#"{{"hash":"{hash}"}}"#))
                } else if line.starts_with("GET /v1/txs/") {
                    match status {
                        Some(s) => (200, format!(r#"{{"status":"{s}"}}"#)),
                        None => (
                            404,
                            r#"{"error":{"code":"not_found","message":"unknown transaction"}}"#
                                .to_string(),
                        ),
                    }
                } else if line.starts_with("GET /v1/accounts/") {
                    (200, format!(r#"{{"nonce":{nonce}}}"#))
                } else {
                    (
                        404,
                        r#"{"error":{"code":"not_found","message":"?"}}"#.to_string(),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
            posted
        });
        (url, serve)
    }

    fn reporter(url: &str, kept: u64, outstanding: Hash) -> Reporter {
        Reporter {
            gpus: Vec::new(),
            client: Client::new(url),
            chain_id: "cairn-test".into(),
            min_fee: 1,
            key: Keypair::from_seed([9; 32]),
            next_nonce: Mutex::new(Some(kept)),
            unconfirmed: Mutex::new(Vec::new()),
            outstanding: Mutex::new(vec![outstanding]),
        }
    }

    fn heartbeat(r: &Reporter) {
        r.report(7, LeaseReportKind::Running, Usage::default());
    }

    #[test]
    fn a_report_that_failed_in_its_block_or_left_the_mempool_makes_the_next_read_the_nonce() {
        // The reporter kept nonce 6 after a report with nonce 5 that then failed in its
        // block (or was dropped: unknown to the node): 5 is still the account's next nonce,
        // and a report sent with 6 would wait behind a gap forever.
        for status in [Some("failed"), None] {
            let (url, node) = node(status, 5);
            let r = reporter(&url, 6, Hash([1; 32]));
            heartbeat(&r);
            let posted = node.join().unwrap();
            assert_eq!(posted.len(), 1, "{status:?}");
            assert_eq!(posted[0].tx.nonce, 5, "{status:?}");
            assert_eq!(*r.next_nonce.lock().unwrap(), Some(6));
            assert_eq!(r.outstanding.lock().unwrap().len(), 1);
        }
    }

    #[test]
    fn a_report_still_pending_or_final_keeps_the_nonce() {
        for status in ["pending", "final"] {
            let (url, node) = node(Some(status), 5);
            let r = reporter(&url, 6, Hash([1; 32]));
            heartbeat(&r);
            let posted = node.join().unwrap();
            assert_eq!(posted.len(), 1, "{status}");
            assert_eq!(posted[0].tx.nonce, 6, "{status}");
            assert_eq!(*r.next_nonce.lock().unwrap(), Some(7));
            // A final one is forgotten; a pending one is watched until its fate is known.
            let watched = r.outstanding.lock().unwrap().len();
            assert_eq!(watched, if status == "final" { 1 } else { 2 }, "{status}");
        }
    }
}
