//! The sandboxed process runtime: Linux namespaces and mounts set up by the `cairn` binary
//! itself (see [`crate::sandbox`] for the sandbox and why it is a helper process), with no
//! external program.
//!
//! - **isolation**: every namespace unshared, the network included unless the job asks (so
//!   127.0.0.1 is a loopback of its own, with nothing listening); the machine's file system
//!   read-only; fresh `/tmp`, `/root`, `/home`, `/run`; the worker's own directories (keys,
//!   data) replaced by empty ones; a private work dir at `/work`; a cleared environment;
//!   killed with everything it started when the helper or the worker dies; a GPU lease's
//!   device node and the driver's control nodes bound in, `CUDA_VISIBLE_DEVICES` set;
//! - **identity**: when the worker runs as root, the job runs as `nobody` with no
//!   capability and `no_new_privs`, so it can read no 0600 file even if one were visible;
//! - **limits**: when the worker is root, a cgroup per job (see `cgroup`) holds its memory
//!   (resident, no swap), its processes and accounts its CPU time and peak memory; without
//!   one, rlimits stand in: processes (`RLIMIT_NPROC`, per user) and address space
//!   (`RLIMIT_AS`). Always: file size, no core dumps, open files; CPUs pinned; wall time and
//!   output size enforced here, by killing the sandbox;
//! - **start**: the job counts as started only once its program was executed; anything
//!   that fails before is an error with its reason ([`RuntimeError::Start`]).

use crate::cgroup::JobCgroup;
use crate::runtime::{Job, Outcome, RunReport, Runtime, RuntimeError, Sink, StopSignal};
use crate::sandbox::{HELPER_ARG, NOBODY, Spec, Status, is_root};
use cairn_primitives::Usage;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The NVIDIA driver's nodes every CUDA program opens besides its GPU's own.
const GPU_CONTROL_NODES: [&str; 3] = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"];

/// The job's `PATH`.
const JOB_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long the sandbox may take to start the job's program.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The process runtime: runs each job through the sandbox helper (`cairn sandbox-exec`).
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    helper: PathBuf,
}

impl Default for ProcessRuntime {
    /// The running executable is the helper (it is `cairn`).
    fn default() -> Self {
        Self {
            helper: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cairn")),
        }
    }
}

/// An absolute path with symlinks resolved (the sandbox binds paths as the kernel sees them);
/// the path itself when it does not exist.
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A started sandbox: the helper process and its status socket.
struct Started {
    child: Child,
    status: UnixStream,
}

impl ProcessRuntime {
    /// A runtime whose sandbox helper is `helper`: a `cairn` binary (tests name the one cargo
    /// built; the worker uses itself).
    pub fn with_helper(helper: impl Into<PathBuf>) -> Self {
        Self {
            helper: helper.into(),
        }
    }

    /// What the helper is told for `job`; `cgroup` holds the job's `cgroup.procs` files when
    /// it has a cgroup (which then holds its memory and processes instead of rlimits).
    fn spec(&self, job: &Job, cgroup: Option<Vec<PathBuf>>) -> Spec {
        let l = &job.limits;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let mut env = vec![
            ("PATH".to_string(), JOB_PATH.to_string()),
            ("HOME".to_string(), "/work".to_string()),
        ];
        // The lease's GPUs: the driver's control nodes and each GPU's own node, nothing of
        // the machine's other GPUs.
        let mut devices = Vec::new();
        if !job.gpus.is_empty() {
            let uuids: Vec<&str> = job.gpus.iter().map(|g| g.uuid.as_str()).collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), uuids.join(",")));
            devices.extend(
                GPU_CONTROL_NODES
                    .iter()
                    .map(PathBuf::from)
                    .chain(job.gpus.iter().filter_map(|g| g.node.clone()))
                    .filter(|n| n.exists())
                    .map(|n| real(&n)),
            );
        }
        env.extend(
            job.spec
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let held = cgroup.is_some();
        Spec {
            command: job.spec.command.iter().map(|c| c.to_string()).collect(),
            env,
            work_dir: real(&job.work_dir),
            hidden: job.hidden.iter().map(|h| real(h)).collect(),
            devices,
            network: l.network,
            cgroup_procs: cgroup.unwrap_or_default(),
            nproc: (!held).then_some(u64::from(l.pids.max(1))),
            address_space: (!held).then_some(l.memory_mib.max(1) << 20),
            cpus: (l.cpus < cores).then_some(l.cpus.max(1)),
            parent: std::process::id(),
        }
    }

    /// Starts the helper for `spec`; output goes to the pipes of the returned child.
    fn spawn(&self, spec: &Spec) -> Result<Started, RuntimeError> {
        let body = serde_json::to_vec(spec).map_err(|e| RuntimeError::Start(e.to_string()))?;
        let (mut ours, theirs) =
            UnixStream::pair().map_err(|e| RuntimeError::Start(format!("socketpair: {e}")))?;
        let child = Command::new(&self.helper)
            .arg(HELPER_ARG)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                RuntimeError::Unavailable(format!(
                    "the sandbox helper {} cannot be executed: {e}",
                    self.helper.display()
                ))
            })?;
        let len = (body.len() as u32).to_le_bytes();
        // A helper that died at once shows as a missing status below, with its exit code.
        let _ = ours.write_all(&len).and_then(|()| ours.write_all(&body));
        Ok(Started {
            child,
            status: ours,
        })
    }

    /// Why bare commands cannot run here: runs `true` through [`Runtime::run`], exactly
    /// as a job runs, in a throwaway work dir.
    fn probe(&self) -> Option<String> {
        /// Discards what the probe prints.
        struct Discard;
        impl Sink for Discard {
            fn started(&mut self) {}
            fn output(&mut self, _: &[u8]) {}
        }
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => return Some(format!("a temporary directory: {e}")),
        };
        let job = Job {
            lease: 0,
            spec: cairn_primitives::JobSpec {
                command: vec![cairn_primitives::BoundedString::new("true").unwrap_or_default()],
                ..Default::default()
            },
            limits: crate::runtime::Limits::default(),
            work_dir: dir.path().join("work"),
            hidden: Vec::new(),
            gpus: Vec::new(),
        };
        match self.run(&job, &mut Discard, &StopSignal::default()) {
            Ok(r) if r.outcome == Outcome::Exited(0) => None,
            Ok(r) => Some(format!("a test job in the sandbox ended {:?}", r.outcome)),
            Err(e) => Some(e.to_string()),
        }
    }
}

/// Reads the helper's status: `Ok` once the job's program runs, else the reason it does not.
fn wait_status(s: &mut Started) -> Result<(), String> {
    let _ = s.status.set_read_timeout(Some(START_TIMEOUT));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if got.ends_with(b"\n")
            && let Some(st) = Status::parse(&got)
        {
            return match st {
                Status::Running => Ok(()),
                Status::Failed(why) => Err(why),
            };
        }
        if got.len() > 64 << 10 {
            return Err("the sandbox helper wrote garbage on its status socket".into());
        }
        match s.status.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "the sandbox did not start the job within {} s",
                    START_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("reading the sandbox's status: {e}")),
        }
    }
    if let Some(Status::Failed(why)) = Status::parse(&got) {
        return Err(why);
    }
    // The socket closed with no word: the helper died before the job started.
    let _ = s.child.kill();
    let code = s
        .child
        .wait()
        .map_or_else(|e| e.to_string(), |st| st.to_string());
    Err(format!(
        "the sandbox helper ended ({code}) before the job started"
    ))
}

impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process (namespaces)"
    }

    fn recover(&self) -> Vec<String> {
        if !is_root() {
            return Vec::new();
        }
        JobCgroup::remove_stale()
            .into_iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    fn unavailable(&self) -> Option<String> {
        self.probe()
    }

    fn run(
        &self,
        job: &Job,
        sink: &mut dyn Sink,
        stop: &StopSignal,
    ) -> Result<RunReport, RuntimeError> {
        if job.spec.command.is_empty() {
            return Err(RuntimeError::Start("the job has no command".into()));
        }
        std::fs::create_dir_all(&job.work_dir)
            .map_err(|e| RuntimeError::Start(format!("work dir: {e}")))?;
        if is_root() {
            std::os::unix::fs::chown(&job.work_dir, Some(NOBODY), Some(NOBODY))
                .map_err(|e| RuntimeError::Start(format!("work dir: {e}")))?;
        }
        // A cgroup when the worker may make one (root); else rlimits alone.
        let cgroup = if is_root() {
            // Unique even when one lease's job is run twice by tests or tools in one process.
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("cairn-lease-{}-{}-{seq}", job.lease, std::process::id());
            JobCgroup::create(&name, &job.limits)
                .map_err(|why| tracing::debug!(why, "no cgroup for the job; limits by rlimit"))
                .ok()
        } else {
            None
        };
        let spec = self.spec(job, cgroup.as_ref().map(JobCgroup::procs_files));
        let mut sandbox = self.spawn(&spec)?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let mut readers = Vec::new();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            sandbox
                .child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            sandbox
                .child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for mut pipe in pipes.into_iter().flatten() {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 << 10];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(tx);
        // Nothing is started, reported or billed until the job's program runs.
        if let Err(why) = wait_status(&mut sandbox) {
            let _ = sandbox.child.kill();
            let _ = sandbox.child.wait();
            drop(rx);
            for r in readers {
                let _ = r.join();
            }
            return Err(RuntimeError::Start(why));
        }
        let mut child = sandbox.child;
        drop(sandbox.status);
        let started = Instant::now();
        sink.started();
        let limits = &job.limits;
        let mut logged: u64 = 0;
        let mut stopped: Option<String> = None;
        let mut exit = None;
        let mut last_sample = Instant::now();
        loop {
            if let Some(g) = &cgroup
                && last_sample.elapsed() >= Duration::from_secs(1)
            {
                last_sample = Instant::now();
                sink.usage(&g.usage());
            }
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(chunk) => {
                    let room = limits.log_bytes.saturating_sub(logged);
                    let keep = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                    if keep > 0 {
                        sink.output(&chunk[..keep]);
                        logged += keep as u64;
                    }
                    if keep < chunk.len() && stopped.is_none() {
                        stopped = Some(format!(
                            "its output passed the log limit of {} bytes",
                            limits.log_bytes
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both pipes closed: every process in the sandbox has let go of them.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if exit.is_some() {
                        break;
                    }
                }
            }
            if exit.is_none() {
                exit = child
                    .try_wait()
                    .map_err(|e| RuntimeError::Start(e.to_string()))?;
            }
            if exit.is_some() && stopped.is_some() {
                break;
            }
            if stopped.is_none() && started.elapsed() > limits.time {
                stopped = Some(format!(
                    "it ran past its time limit of {} s",
                    limits.time.as_secs()
                ));
            }
            if stopped.is_none() {
                stopped = stop.stopped();
            }
            if stopped.is_some() && exit.is_none() {
                // The helper is the direct child; the sandbox dies with it (each stage has
                // its parent's death signal, and the PID namespace's init going away kills
                // the rest).
                let _ = child.kill();
                exit = child.wait().ok();
            }
        }
        let status = match exit {
            Some(s) => s,
            None => child
                .wait()
                .map_err(|e| RuntimeError::Start(e.to_string()))?,
        };
        drop(rx);
        for r in readers {
            let _ = r.join();
        }
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let usage = Usage {
            log_bytes: logged,
            ..cgroup.as_ref().map(JobCgroup::usage).unwrap_or_default()
        };
        let oom = cgroup.as_ref().is_some_and(JobCgroup::oom_killed);
        // Dropping the group kills anything left in it and removes it.
        drop(cgroup);
        Ok(RunReport {
            outcome: match stopped {
                Some(reason) => Outcome::Stopped(reason),
                None if oom && code != 0 => Outcome::Stopped(format!(
                    "it passed its memory limit of {} MiB and the kernel killed it",
                    limits.memory_mib
                )),
                None => Outcome::Exited(code),
            },
            usage,
        })
    }
}
