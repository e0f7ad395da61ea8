//! The bubblewrap runtime against the real sandbox: output, exit codes, isolation from the
//! node's port and the worker's keys, and hostile jobs stopped by their limits. The harness
//! installs bubblewrap when it is missing (we are root on CI); it never skips.

use cairn_primitives::{BoundedString, JobSpec};
use cairn_worker::testing::Collect;
use cairn_worker::{Job, Limits, Outcome, ProcessRuntime, Runtime, StopSignal};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn ensure_bwrap() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if ProcessRuntime.unavailable().is_none() {
            return;
        }
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "bubblewrap"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
            install();
        }
        if let Some(why) = ProcessRuntime.unavailable() {
            panic!("the process runtime is needed and could not be installed: {why}");
        }
    });
}

fn job(dir: &Path, script: &str, limits: Limits, hidden: Vec<std::path::PathBuf>) -> Job {
    Job {
        lease: 1,
        spec: JobSpec {
            image: None,
            command: ["sh", "-c", script]
                .iter()
                .map(|s| BoundedString::new(*s).unwrap())
                .collect(),
            env: vec![(
                BoundedString::new("GREETING").unwrap(),
                BoundedString::new("hello").unwrap(),
            )],
            network: false,
        },
        limits,
        work_dir: dir.join("work"),
        hidden,
        gpus: Vec::new(),
    }
}

fn run(j: &Job) -> (Outcome, String, Duration) {
    ensure_bwrap();
    let mut sink = Collect::default();
    let start = Instant::now();
    let r = ProcessRuntime
        .run(j, &mut sink, &StopSignal::default())
        .expect("runs");
    assert!(sink.started);
    (
        r.outcome,
        String::from_utf8_lossy(&sink.out).into_owned(),
        start.elapsed(),
    )
}

fn short() -> Limits {
    Limits {
        time: Duration::from_secs(5),
        ..Limits::default()
    }
}

#[test]
fn a_command_runs_with_its_env_in_a_private_writable_dir() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        dir.path(),
        "echo $GREETING; pwd; echo x > f && cat f; touch /usr/x 2>/dev/null || echo ro; exit 3",
        short(),
        vec![],
    );
    let (outcome, out, _) = run(&j);
    assert_eq!(outcome, Outcome::Exited(3), "{out}");
    assert_eq!(out, "hello\n/work\nx\nro\n");
}

#[test]
fn a_job_cannot_reach_the_node_port_or_read_the_worker_keys() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("device.key"), "secret-key-material").unwrap();
    let script = format!(
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)' \
         >/dev/null 2>&1 && echo reached || echo isolated; \
         cat {k}/device.key 2>/dev/null || echo unreadable",
        k = keys.display()
    );
    let (outcome, out, _) = run(&job(dir.path(), &script, short(), vec![keys.clone()]));
    assert_eq!(outcome, Outcome::Exited(0), "{out}");
    assert_eq!(out, "isolated\nunreadable\n");
    // A job that asked for the network (and a worker that allows it) does reach it.
    let open = Limits {
        network: true,
        ..short()
    };
    let (outcome, out, _) = run(&job(dir.path(), &script, open, vec![keys.clone()]));
    assert_eq!(outcome, Outcome::Exited(0), "{out}");
    assert_eq!(out, "reached\nunreadable\n");
    // The same probe outside the sandbox does reach it: the test measures the sandbox.
    let outside = Command::new("python3")
        .args([
            "-c",
            &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 2)"),
        ])
        .status()
        .unwrap();
    assert!(outside.success());
}

#[test]
fn hostile_jobs_are_stopped_by_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    // Sleeps forever: stopped at the time limit.
    let limits = Limits {
        time: Duration::from_secs(1),
        ..Limits::default()
    };
    let (outcome, _, took) = run(&job(dir.path(), "sleep 1000", limits.clone(), vec![]));
    assert!(
        matches!(&outcome, Outcome::Stopped(r) if r.contains("time limit")),
        "{outcome:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // A log flood: stopped at the output limit, with exactly that much kept.
    let flood = Limits {
        log_bytes: 10_000,
        ..short()
    };
    let (outcome, out, _) = run(&job(dir.path(), "yes flood", flood, vec![]));
    assert!(
        matches!(&outcome, Outcome::Stopped(r) if r.contains("log limit")),
        "{outcome:?}"
    );
    assert_eq!(out.len(), 10_000);
    // A fork bomb: held to its process limit, then stopped at its time limit; nothing of it
    // survives. (`RLIMIT_NPROC` counts every process of the user the sandbox runs as, so
    // when other jobs run at the same moment the bomb's own shell may fail to fork and exit
    // first: either way it ends, by itself or by its limit, and leaves nothing.)
    let bomb = Limits {
        pids: 64,
        time: Duration::from_secs(2),
        ..Limits::default()
    };
    let (outcome, _, took) = run(&job(
        dir.path(),
        "b() { b | b & }; b; sleep 100; : cairn-fork-bomb-marker",
        bomb,
        vec![],
    ));
    assert!(
        matches!(&outcome, Outcome::Stopped(r) if r.contains("time limit"))
            || matches!(outcome, Outcome::Exited(c) if c != 0),
        "{outcome:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    std::thread::sleep(Duration::from_millis(300));
    let left = Command::new("pgrep")
        .args(["-f", "cairn-fork-bomb-marker"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "sandbox processes survived: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    // Memory past the limit, written (so resident, not just reserved): the worker runs as
    // root here, so the job has a cgroup and the kernel kills it at the limit; the runtime
    // says so.
    let small = Limits {
        memory_mib: 64,
        ..short()
    };
    let (outcome, out, _) = run(&job(
        dir.path(),
        "exec python3 -c 'b = b\"x\" * (512 << 20)'",
        small,
        vec![],
    ));
    assert!(
        matches!(&outcome, Outcome::Stopped(r) if r.contains("memory limit of 64 MiB")),
        "{outcome:?} {out}"
    );
}

/// Each job's cgroup accounts its CPU time and peak memory, and is gone afterwards.
#[test]
fn usage_is_measured_and_the_cgroup_removed() {
    ensure_bwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut j = job(
        dir.path(),
        "python3 -c 'b = b\"x\" * (96 << 20)\nn = 0\nwhile n < 3_000_000: n += 1'",
        Limits {
            memory_mib: 512,
            ..short()
        },
        vec![],
    );
    j.lease = 4242;
    let mut sink = Collect::default();
    let r = ProcessRuntime
        .run(&j, &mut sink, &StopSignal::default())
        .unwrap();
    assert_eq!(r.outcome, Outcome::Exited(0));
    assert!(r.usage.cpu_ms >= 50, "{:?}", r.usage);
    assert!((96..512).contains(&r.usage.max_rss_mib), "{:?}", r.usage);
    let left = Command::new("sh")
        .args([
            "-c",
            "find /sys/fs/cgroup -maxdepth 6 -name 'cairn-lease-4242-*' | head -3",
        ])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn a_stop_signal_ends_the_job_with_its_reason() {
    ensure_bwrap();
    let dir = tempfile::tempdir().unwrap();
    let j = job(dir.path(), "sleep 1000", short(), vec![]);
    let stop = StopSignal::default();
    let s = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        s.stop("the customer closed the deployment");
    });
    let r = ProcessRuntime
        .run(&j, &mut Collect::default(), &stop)
        .unwrap();
    assert_eq!(
        r.outcome,
        Outcome::Stopped("the customer closed the deployment".into())
    );
}

#[test]
fn a_gpu_lease_gets_its_gpu_node_and_cuda_visible_devices() {
    let dir = tempfile::tempdir().unwrap();
    // A stand-in GPU node (a copy of /dev/full) under /tmp, which the sandbox replaces with
    // an empty tmpfs: the job can only read it if it is bound in.
    let node = dir.path().join("nvidia9");
    let made = Command::new("mknod")
        .args(["-m", "666"])
        .arg(&node)
        .args(["c", "1", "7"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod (the tests run as root)");
    let mut j = job(
        dir.path(),
        &format!(
            "echo $CUDA_VISIBLE_DEVICES; head -c 4 {} | wc -c",
            node.display()
        ),
        short(),
        vec![],
    );
    j.gpus = vec![cairn_worker::GpuAccess {
        cdi: "nvidia.com/gpu=GPU-1234".into(),
        uuid: "GPU-1234".into(),
        node: Some(node.clone()),
    }];
    let line = ProcessRuntime.command_line(&j);
    let bind = line
        .windows(3)
        .any(|w| w[0] == "--dev-bind" && w[1] == node.display().to_string());
    assert!(bind, "{line:?}");
    let (outcome, out, _) = run(&j);
    assert_eq!(outcome, Outcome::Exited(0), "{out}");
    assert_eq!(out, "GPU-1234\n4\n");
    // A CPU lease gets neither.
    let script = format!(
        "echo [$CUDA_VISIBLE_DEVICES]; head -c 4 {} 2>/dev/null | wc -c",
        node.display()
    );
    let (_, out, _) = run(&job(dir.path(), &script, short(), vec![]));
    assert_eq!(out, "[]\n0\n");
}
