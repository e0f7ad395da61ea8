//! The container runtime: the Docker Engine API through bollard (Docker, or Podman's
//! Docker-compatible service).
//!
//! A job with an image runs as one container named `cairn-lease-<id>` and labelled with the
//! worker that started it:
//! - **limits**: memory with no swap on top, CPUs (`NanoCpus`), processes (`PidsLimit`, a
//!   cgroup, so it holds for root inside the container too), `no-new-privileges`; open files
//!   and processes rlimits no higher than the worker's own (an engine's defaults can exceed
//!   them inside another container, and then nothing starts);
//! - **network**: `none` unless the job asks;
//! - **GPUs**: CDI device names. Docker (25 and later) takes them as a `cdi` device request;
//!   Podman's Docker-compatible endpoint drops such requests silently, so on Podman a GPU
//!   job's container is created through Podman's own endpoint, which resolves CDI names
//!   (everything else goes through the Docker API on both);
//! - **output** streamed to the sink as it comes, up to the log limit;
//! - **time**, the log limit and stop requests end it with SIGKILL; a container the kernel
//!   killed for memory (the engine says `OOMKilled`, or its first process died of SIGKILL
//!   we did not send) is reported as stopped by its memory limit;
//! - **cleanup**: the container is removed on every path; one a crashed worker left behind
//!   is removed by [`Runtime::recover`] when the worker starts again.

use crate::runtime::{Job, Outcome, RunReport, Runtime, RuntimeError, Sink, StopSignal};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, StatsOptions, WaitContainerOptions,
};
use cairn_primitives::Usage;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The label naming the worker a container belongs to.
const WORKER_LABEL: &str = "cairn.worker";
/// The label naming the lease a container serves.
const LEASE_LABEL: &str = "cairn.lease";
/// How often usage is sampled while a job runs.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How often the container's state is checked besides the log stream's end.
const EXIT_CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long output may still arrive after the container is seen stopped.
const LOG_GRACE: Duration = Duration::from_secs(1);

/// The Docker Engine API runtime.
pub struct DockerRuntime {
    docker: Docker,
    socket: PathBuf,
    engine: String,
    podman: bool,
    worker: String,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("socket", &self.socket)
            .field("engine", &self.engine)
            .finish()
    }
}

/// The socket the engine listens on: `DOCKER_HOST` when it names a unix socket, else the
/// usual path.
pub fn default_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

fn err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Start(format!("{what}: {e}"))
}

/// This process's hard limit for `name` (a row of `/proc/self/limits`), `None` if unlimited.
fn own_hard_limit(name: &str) -> Option<i64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let row = limits.lines().find(|l| l.starts_with(name))?;
    let hard = row[name.len()..].split_whitespace().nth(1)?;
    hard.parse().ok()
}

impl DockerRuntime {
    /// Connects to the engine on `socket`; `worker` labels this worker's containers (two
    /// workers on one engine never touch each other's).
    pub fn connect(socket: &Path, worker: &str) -> Result<Self, RuntimeError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            RuntimeError::Unavailable(format!(
                "no container engine on {}: {e} (start Docker or `podman system service`, or \
                 pass --docker-socket)",
                socket.display()
            ))
        };
        if !socket.exists() {
            return Err(unavailable(&"the socket does not exist"));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cairn-docker")
            .enable_all()
            .build()
            .map_err(|e| unavailable(&e))?;
        let path = socket.display().to_string();
        let (docker, version) = rt
            .block_on(async {
                let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)?;
                let docker = docker.negotiate_version().await?;
                let version = docker.version().await?;
                Ok::<_, bollard::errors::Error>((docker, version))
            })
            .map_err(|e| unavailable(&e))?;
        let components: Vec<String> = version
            .components
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let podman = components.iter().any(|c| c.contains("Podman"));
        let engine = format!(
            "{} {} (API {})",
            if podman { "Podman" } else { "Docker" },
            version.version.unwrap_or_default(),
            version.api_version.unwrap_or_default()
        );
        Ok(Self {
            docker,
            socket: socket.to_path_buf(),
            engine,
            podman,
            worker: worker.to_string(),
            rt,
        })
    }

    /// The engine, as it names itself.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    fn container_name(&self, lease: u64) -> String {
        format!("cairn-lease-{lease}")
    }

    /// The Docker API body for `job`.
    fn body(&self, job: &Job) -> ContainerCreateBody {
        let l = &job.limits;
        let memory = i64::try_from(l.memory_mib.max(4) << 20).unwrap_or(i64::MAX);
        let mut ulimits = Vec::new();
        for (name, row, want) in [
            ("nofile", "Max open files", 1024),
            ("nproc", "Max processes", i64::from(l.pids.max(1))),
        ] {
            let value = own_hard_limit(row).map_or(want, |hard| want.min(hard));
            ulimits.push(ResourcesUlimits {
                name: Some(name.into()),
                soft: Some(value),
                hard: Some(value),
            });
        }
        let device_requests = (!job.gpus.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("cdi".into()),
                device_ids: Some(job.gpus.iter().map(|g| g.cdi.clone()).collect()),
                ..DeviceRequest::default()
            }]
        });
        ContainerCreateBody {
            image: job.spec.image.as_ref().map(|i| i.to_string()),
            cmd: (!job.spec.command.is_empty())
                .then(|| job.spec.command.iter().map(|c| c.to_string()).collect()),
            env: Some(
                job.spec
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(HashMap::from([
                (WORKER_LABEL.to_string(), self.worker.clone()),
                (LEASE_LABEL.to_string(), job.lease.to_string()),
            ])),
            host_config: Some(HostConfig {
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some(i64::from(l.cpus.max(1)) * 1_000_000_000),
                pids_limit: Some(i64::from(l.pids.max(1))),
                ulimits: Some(ulimits),
                network_mode: (!l.network).then(|| "none".to_string()),
                security_opt: Some(vec!["no-new-privileges".into()]),
                device_requests,
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }

    /// Creates the container through Podman's own endpoint, which resolves CDI names.
    fn podman_create(&self, name: &str, job: &Job) -> Result<(), RuntimeError> {
        let body = self.body(job);
        let host = body.host_config.clone().unwrap_or_default();
        let rlimits: Vec<serde_json::Value> = host
            .ulimits
            .unwrap_or_default()
            .into_iter()
            .map(|u| serde_json::json!({"type": u.name, "soft": u.soft, "hard": u.hard}))
            .collect();
        let spec = serde_json::json!({
            "name": name,
            "image": body.image,
            "command": body.cmd,
            "env": job.spec.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
            "labels": body.labels,
            "netns": {"nsmode": if job.limits.network { "bridge" } else { "none" }},
            "r_limits": rlimits,
            "no_new_privileges": true,
            "devices": job.gpus.iter().map(|g| serde_json::json!({"path": g.cdi})).collect::<Vec<_>>(),
            "resource_limits": {
                "memory": {"limit": host.memory, "swap": host.memory_swap},
                "pids": {"limit": host.pids_limit},
                "cpu": {"quota": i64::from(job.limits.cpus.max(1)) * 100_000, "period": 100_000},
            },
        });
        let reply = unix_post(&self.socket, "/v4.0.0/libpod/containers/create", &spec)
            .map_err(|e| err("create the container", e))?;
        match reply {
            (201 | 200, _) => Ok(()),
            (status, body) => Err(RuntimeError::Start(format!(
                "create the container: engine answered {status}: {}",
                body["message"].as_str().unwrap_or("no message")
            ))),
        }
    }

    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        tracing::info!(image, "image not on this machine; pulling it");
        let mut pull = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.to_string()),
                ..CreateImageOptions::default()
            }),
            None,
            None,
        );
        while let Some(step) = pull.next().await {
            step.map_err(|e| {
                RuntimeError::Start(format!(
                    "image {image} is not on this machine and could not be pulled: {e}"
                ))
            })?;
        }
        Ok(())
    }

    async fn remove(&self, name: &str) {
        let _ = self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await;
    }

    /// Whether the container still runs; an engine that cannot say counts as "yes" (the
    /// watch goes on, and its limits with it).
    async fn running(&self, name: &str) -> bool {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => true,
        }
    }

    async fn kill(&self, name: &str) {
        let _ = self
            .docker
            .kill_container(
                name,
                Some(KillContainerOptions {
                    signal: "KILL".into(),
                }),
            )
            .await;
    }

    /// Samples CPU time and memory into `usage` (best effort: engines differ in what they
    /// report, and a container that just ended reports nothing).
    async fn sample(&self, name: &str, usage: &mut Usage) {
        let mut stats = self.docker.stats(
            name,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        let Some(Ok(s)) = stats.next().await else {
            return;
        };
        if let Some(ns) = s
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
        {
            usage.cpu_ms = usage.cpu_ms.max(ns / 1_000_000);
        }
        if let Some(m) = s.memory_stats {
            let peak = m.max_usage.unwrap_or(0).max(m.usage.unwrap_or(0));
            usage.max_rss_mib = usage.max_rss_mib.max(peak >> 20);
        }
    }

    async fn drive(
        &self,
        name: &str,
        job: &Job,
        sink: &mut dyn Sink,
        stop: &StopSignal,
    ) -> Result<RunReport, RuntimeError> {
        let image = job
            .spec
            .image
            .as_ref()
            .ok_or_else(|| RuntimeError::Start("the job names no image".into()))?
            .to_string();
        self.ensure_image(&image).await?;
        if self.podman && !job.gpus.is_empty() {
            self.podman_create(name, job)?;
        } else {
            self.docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.to_string()),
                        ..CreateContainerOptions::default()
                    }),
                    self.body(job),
                )
                .await
                .map_err(|e| err("create the container", e))?;
        }
        self.docker
            .start_container(name, None)
            .await
            .map_err(|e| err("start the container", e))?;
        let started = Instant::now();
        sink.started();
        let limits = &job.limits;
        let mut logs = self.docker.logs(
            name,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                ..LogsOptions::default()
            }),
        );
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut usage = Usage::default();
        let mut last_sample = Instant::now();
        let mut stopped: Option<String> = None;
        let mut logged: u64 = 0;
        // A broken log stream must not end the watch: limits still hold until the container
        // is seen to have stopped. Nor may a log stream that stays open past the end keep
        // the watch going: the container's state is checked on its own.
        let mut logs_open = true;
        let mut exited: Option<Instant> = None;
        let mut last_check = Instant::now();
        loop {
            tokio::select! {
                item = logs.next(), if logs_open => match item {
                    Some(Ok(out)) => {
                        let chunk = out.into_bytes();
                        let room = limits.log_bytes.saturating_sub(logged);
                        let keep = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                        if keep > 0 {
                            sink.output(&chunk[..keep]);
                            logged += keep as u64;
                        }
                        if keep < chunk.len() {
                            stopped = Some(format!(
                                "its output passed the log limit of {} bytes",
                                limits.log_bytes
                            ));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(container = name, error = %e, "log stream broke");
                        logs_open = false;
                    }
                    // The stream ends when the container does.
                    None => break,
                },
                _ = tick.tick() => {
                    if started.elapsed() > limits.time {
                        stopped = Some(format!(
                            "it ran past its time limit of {} s",
                            limits.time.as_secs()
                        ));
                    } else if let Some(reason) = stop.stopped() {
                        stopped = Some(reason);
                    } else if exited.is_none()
                        && (!logs_open || last_check.elapsed() >= EXIT_CHECK_EVERY)
                    {
                        last_check = Instant::now();
                        if !self.running(name).await {
                            exited = Some(Instant::now());
                        }
                    } else if last_sample.elapsed() >= STATS_EVERY {
                        last_sample = Instant::now();
                        // An engine may answer slowly for a container that is ending.
                        let sampled = self.sample(name, &mut usage);
                        if tokio::time::timeout(Duration::from_secs(2), sampled).await.is_ok() {
                            sink.usage(&usage);
                        }
                    }
                }
            }
            if stopped.is_some() {
                self.kill(name).await;
                break;
            }
            // Ended, but the log stream has not said so (it broke, or an engine keeps a
            // follow open past the end): take what output is still coming, briefly, then go.
            if exited.is_some_and(|at| !logs_open || at.elapsed() >= LOG_GRACE) {
                break;
            }
        }
        // Its end: the exit code (a non-zero one arrives as an error carrying it).
        let mut wait = self.docker.wait_container(
            name,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        // It should be over by now; if the engine says otherwise for long, it is killed (the
        // watch saw an end that was not one), so no job outlives the watch.
        let first = match tokio::time::timeout(Duration::from_secs(30), wait.next()).await {
            Ok(w) => w,
            Err(_) => {
                tracing::warn!(
                    container = name,
                    "still running after its watch ended; killing it"
                );
                self.kill(name).await;
                wait.next().await
            }
        };
        let code = match first {
            Some(Ok(w)) => w.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(err("wait for the container", e)),
            None => return Err(RuntimeError::Start("the engine lost the container".into())),
        };
        let state = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| err("inspect the container", e))?
            .state
            .unwrap_or_default();
        usage.log_bytes = logged;
        let code = i32::try_from(state.exit_code.unwrap_or(code)).unwrap_or(-1);
        let outcome = match stopped {
            Some(reason) => Outcome::Stopped(reason),
            None if state.oom_killed == Some(true) => Outcome::Stopped(format!(
                "it passed its memory limit of {} MiB and the kernel killed it",
                limits.memory_mib
            )),
            // Only something outside the container can SIGKILL its first process.
            None if code == 128 + 9 => Outcome::Stopped(format!(
                "it was killed (SIGKILL), most likely for passing its memory limit of {} MiB",
                limits.memory_mib
            )),
            None => Outcome::Exited(code),
        };
        Ok(RunReport { outcome, usage })
    }
}

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "container (Docker Engine API)"
    }

    fn unavailable(&self) -> Option<String> {
        self.rt.block_on(self.docker.ping()).err().map(|e| {
            format!(
                "the engine on {} stopped answering: {e}",
                self.socket.display()
            )
        })
    }

    fn recover(&self) -> Vec<String> {
        self.rt.block_on(async {
            let filters = HashMap::from([(
                "label".to_string(),
                vec![format!("{WORKER_LABEL}={}", self.worker)],
            )]);
            let Ok(list) = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..ListContainersOptions::default()
                }))
                .await
            else {
                return Vec::new();
            };
            let mut removed = Vec::new();
            for c in list {
                let name = c
                    .names
                    .and_then(|n| n.first().cloned())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string();
                if let Some(id) = c.id {
                    self.remove(&id).await;
                    removed.push(name);
                }
            }
            removed
        })
    }

    fn run(
        &self,
        job: &Job,
        sink: &mut dyn Sink,
        stop: &StopSignal,
    ) -> Result<RunReport, RuntimeError> {
        let name = self.container_name(job.lease);
        self.rt.block_on(async {
            // A container of this name can only be one a crashed run left behind.
            self.remove(&name).await;
            let result = self.drive(&name, job, sink, stop).await;
            self.remove(&name).await;
            result
        })
    }
}

/// One JSON POST over a unix socket (HTTP/1.1, connection closed after), for the one call
/// the Docker API cannot make; returns the status and the JSON body.
fn unix_post(
    socket: &Path,
    path: &str,
    body: &serde_json::Value,
) -> std::io::Result<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let body = serde_json::to_vec(body)?;
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: engine\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(&body)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut payload = reply[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload).ok_or_else(|| bad("bad chunked body"))?;
    }
    let value = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined_and_truncated_ones_refused() {
        assert_eq!(
            dechunk(b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n").as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(dechunk(b"9\r\nabc"), None);
        assert_eq!(dechunk(b"zz\r\n"), None);
    }

    #[test]
    fn own_limits_are_read_from_proc() {
        // The same hard limit a child shell inherits and reports ("unlimited" is None).
        let shell = std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap();
        let shell = String::from_utf8_lossy(&shell.stdout).trim().to_string();
        assert_eq!(
            own_hard_limit("Max open files").map_or("unlimited".to_string(), |n| n.to_string()),
            shell
        );
    }
}
