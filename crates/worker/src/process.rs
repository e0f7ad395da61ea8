//! The sandboxed process runtime: bubblewrap.
//!
//! A bare command runs as `prlimit … -- [setpriv --reuid nobody …] bwrap … -- command`:
//! - **isolation** (bwrap): every namespace unshared, the network included unless the job
//!   asks (so 127.0.0.1 is a loopback of its own, with nothing listening); the root file
//!   system read-only; fresh `/tmp`, `/root`, `/home`, `/run`; the worker's own directories
//!   (keys, data) replaced by empty ones; a private work dir at `/work`; a cleared
//!   environment; killed with everything it started when bwrap or the worker dies; a GPU
//!   lease's device node and the driver's control nodes bound in, `CUDA_VISIBLE_DEVICES` set;
//! - **identity**: when the worker runs as root, the job runs as `nobody` (setpriv, every
//!   capability dropped), so it can read no 0600 file even if one were visible;
//! - **limits**: when the worker is root, a cgroup per job (see `cgroup`) holds its memory
//!   (resident, no swap), its processes and accounts its CPU time and peak memory; without
//!   one, rlimits stand in: processes (`RLIMIT_NPROC`, per user) and address space
//!   (`RLIMIT_AS`). Always: file size, no core dumps, open files; CPUs pinned with taskset;
//!   wall time and output size enforced here, by killing the sandbox.

use crate::cgroup::JobCgroup;
use crate::runtime::{Job, Outcome, RunReport, Runtime, RuntimeError, Sink, StopSignal};
use cairn_primitives::Usage;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The NVIDIA driver's nodes every CUDA program opens besides its GPU's own.
const GPU_CONTROL_NODES: [&str; 3] = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"];

/// The user jobs run as when the worker is root.
const NOBODY: u32 = 65_534;

/// The bubblewrap runtime.
#[derive(Debug, Default, Clone)]
pub struct ProcessRuntime;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn works(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl ProcessRuntime {
    /// The full command line for `job` without a cgroup (public for tests and inspection):
    /// memory as address space and processes per user, by rlimits.
    pub fn command_line(&self, job: &Job) -> Vec<String> {
        self.line(job, None)
    }

    /// The command line; with `cgroup` (its `cgroup.procs` files) the job first joins the
    /// group, which then holds its memory and processes, and rlimits keep only the rest.
    fn line(&self, job: &Job, cgroup: Option<&[PathBuf]>) -> Vec<String> {
        let l = &job.limits;
        let mut a: Vec<String> = Vec::new();
        if let Some(files) = cgroup {
            // The shell joins every controller's group, then becomes the job: nothing of the
            // job runs outside the group, not even for an instant.
            a.extend([
                "sh".into(),
                "-c".into(),
                "n=$1; shift; while [ \"$n\" -gt 0 ]; do echo $$ > \"$1\" || exit 125; \
                 shift; n=$((n - 1)); done; exec \"$@\""
                    .into(),
                "cairn-join-cgroup".into(),
                files.len().to_string(),
            ]);
            a.extend(files.iter().map(|f| f.display().to_string()));
        }
        a.push("prlimit".into());
        if cgroup.is_none() {
            a.extend([
                format!("--nproc={}", l.pids.max(1)),
                format!("--as={}", l.memory_mib.max(1) << 20),
            ]);
        }
        a.extend([
            format!("--fsize={}", 1u64 << 30),
            "--core=0".into(),
            "--nofile=1024".into(),
            "--".into(),
        ]);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        if l.cpus < cores {
            a.extend([
                "taskset".into(),
                "--cpu-list".into(),
                format!("0-{}", l.cpus.max(1) - 1),
            ]);
        }
        if is_root() {
            a.extend([
                "setpriv".into(),
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
                "--inh-caps=-all".into(),
                "--bounding-set=-all".into(),
            ]);
        }
        a.extend(
            [
                "bwrap",
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
                "--tmpfs",
                "/root",
                "--tmpfs",
                "/home",
                "--tmpfs",
                "/run",
            ]
            .map(String::from),
        );
        if l.network {
            a.push("--share-net".into());
        }
        for h in &job.hidden {
            let p = h.display().to_string();
            if h.is_dir() {
                a.extend(["--tmpfs".into(), p]);
            } else if h.exists() {
                a.extend(["--ro-bind".into(), "/dev/null".into(), p]);
            }
        }
        // The lease's GPUs: the driver's control nodes and each GPU's own node, nothing of
        // the machine's other GPUs.
        if !job.gpus.is_empty() {
            let nodes = GPU_CONTROL_NODES
                .iter()
                .map(std::path::PathBuf::from)
                .chain(job.gpus.iter().filter_map(|g| g.node.clone()));
            for node in nodes.filter(|n| n.exists()) {
                let p = node.display().to_string();
                a.extend(["--dev-bind".into(), p.clone(), p]);
            }
        }
        a.extend([
            "--bind".into(),
            job.work_dir.display().to_string(),
            "/work".into(),
            "--chdir".into(),
            "/work".into(),
            "--clearenv".into(),
            "--setenv".into(),
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin".into(),
            "--setenv".into(),
            "HOME".into(),
            "/work".into(),
        ]);
        if !job.gpus.is_empty() {
            let uuids: Vec<&str> = job.gpus.iter().map(|g| g.uuid.as_str()).collect();
            a.extend([
                "--setenv".into(),
                "CUDA_VISIBLE_DEVICES".into(),
                uuids.join(","),
            ]);
        }
        for (k, v) in &job.spec.env {
            a.extend(["--setenv".into(), k.to_string(), v.to_string()]);
        }
        a.push("--".into());
        a.extend(job.spec.command.iter().map(|c| c.to_string()));
        a
    }
}

impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process (bubblewrap)"
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
        if !works("bwrap", "--version") {
            return Some(
                "bubblewrap is not installed (apt-get install bubblewrap): bare commands cannot run"
                    .into(),
            );
        }
        if !works("prlimit", "--version") || !works("setpriv", "--version") {
            return Some("util-linux's prlimit and setpriv are missing".into());
        }
        None
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
        if let Some(why) = self.unavailable() {
            return Err(RuntimeError::Unavailable(why));
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
        let files = cgroup.as_ref().map(JobCgroup::procs_files);
        let line = self.line(job, files.as_deref());
        let mut child = Command::new(&line[0])
            .args(&line[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RuntimeError::Start(format!("{}: {e}", line[0])))?;
        let started = Instant::now();
        sink.started();
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let mut readers = Vec::new();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
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
                // bwrap is the direct child; its sandbox dies with it (--die-with-parent
                // on every process it started, and the PID namespace's init going away).
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
