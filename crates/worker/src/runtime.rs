//! Job runtimes behind one trait, and the limits every runtime enforces.

use crate::discover::GpuAccess;
use cairn_primitives::{JobSpec, Usage};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a job may use. A job that passes one is stopped and reported failed, naming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Memory in MiB.
    pub memory_mib: u64,
    /// CPUs it may use.
    pub cpus: u32,
    /// Processes (and threads) it may have at once.
    pub pids: u32,
    /// Wall-clock time.
    pub time: Duration,
    /// Bytes of output (stdout and stderr together).
    pub log_bytes: u64,
    /// Whether it may use the network (only when the job asks and the worker allows it).
    pub network: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 1024,
            cpus: 1,
            pids: 256,
            time: Duration::from_secs(3600),
            log_bytes: 1 << 20,
            network: false,
        }
    }
}

/// One job to run.
#[derive(Clone, Debug)]
pub struct Job {
    /// The lease it serves (names containers and work dirs).
    pub lease: u64,
    /// Image or command, arguments, environment.
    pub spec: JobSpec,
    /// Its limits.
    pub limits: Limits,
    /// A private, empty directory the job may write (its working directory).
    pub work_dir: PathBuf,
    /// Paths the job must not see (the worker's keys and data).
    pub hidden: Vec<PathBuf>,
    /// GPUs the job gets (its device's); empty for CPU leases.
    pub gpus: Vec<GpuAccess>,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It exited by itself with this code.
    Exited(i32),
    /// It was stopped: by a limit, the customer or the worker shutting down (the reason).
    Stopped(String),
}

/// A run's outcome and what it used.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// How it ended.
    pub outcome: Outcome,
    /// What it used.
    pub usage: Usage,
}

/// Why a job could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime is missing or unusable on this machine.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// The job could not start.
    #[error("could not start the job: {0}")]
    Start(String),
}

/// Tells a running job to stop, with a reason; cheap to clone and check.
#[derive(Clone, Debug, Default)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
    reason: Arc<std::sync::Mutex<String>>,
}

impl StopSignal {
    /// Asks the job to stop because of `reason` (the first reason given wins).
    pub fn stop(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_empty()
        {
            *r = reason.to_string();
        }
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether it was asked to stop, and why.
    pub fn stopped(&self) -> Option<String> {
        if !self.flag.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.reason.lock().map(|r| r.clone()).unwrap_or_default())
    }
}

/// What a runtime tells the worker while a job runs.
pub trait Sink: Send {
    /// The job is running (the worker reports the lease started).
    fn started(&mut self);
    /// Output, stdout and stderr interleaved as it arrives.
    fn output(&mut self, bytes: &[u8]);
    /// What the job has used so far (CPU time, peak memory), as the runtime samples it.
    fn usage(&mut self, _usage: &Usage) {}
}

/// A way to run jobs.
pub trait Runtime: Send + Sync {
    /// Its name, for logs and reports.
    fn name(&self) -> &'static str;
    /// Why it cannot run here, or `None` when it can.
    fn unavailable(&self) -> Option<String>;
    /// Cleans up after a previous run of this worker that died (leftover containers);
    /// returns what it removed.
    fn recover(&self) -> Vec<String> {
        Vec::new()
    }
    /// Runs `job` to its end (or until `stop`, or a limit), blocking.
    fn run(
        &self,
        job: &Job,
        sink: &mut dyn Sink,
        stop: &StopSignal,
    ) -> Result<RunReport, RuntimeError>;
}
