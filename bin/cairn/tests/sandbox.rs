//! The process runtime against the real sandbox, built by this `cairn` binary's helper (no
//! external program): output, exit codes, a job that cannot start, namespaces, identity and
//! capabilities, isolation from the node's port and the worker's keys, a work dir under a
//! 0700 home, and hostile jobs stopped by their limits. The tests run as root, as CI does;
//! one drives the helper as an unprivileged user too.

use cairn_primitives::BoundedString;
use cairn_worker::testing::{Collect, run_collect, sh_job};
use cairn_worker::{Job, Limits, Outcome, ProcessRuntime, Runtime, RuntimeError, StopSignal};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn runtime() -> ProcessRuntime {
    ProcessRuntime::with_helper(env!("CARGO_BIN_EXE_cairn"))
}

fn job(dir: &Path, script: &str, limits: Limits, hidden: Vec<std::path::PathBuf>) -> Job {
    Job {
        hidden,
        ..sh_job(1, dir, None, script, limits)
    }
}

fn run(j: &Job) -> (Outcome, String) {
    let (report, out) = run_collect(&runtime(), j);
    (report.outcome, out)
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
    let (outcome, out) = run(&j);
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
    let (outcome, out) = run(&job(dir.path(), &script, short(), vec![keys.clone()]));
    assert_eq!(outcome, Outcome::Exited(0), "{out}");
    assert_eq!(out, "isolated\nunreadable\n");
    // A job that asked for the network (and a worker that allows it) does reach it.
    let open = Limits {
        network: true,
        ..short()
    };
    let (outcome, out) = run(&job(dir.path(), &script, open, vec![keys.clone()]));
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
    let (outcome, _) = run(&job(dir.path(), "sleep 1000", limits.clone(), vec![]));
    assert!(
        matches!(&outcome, Outcome::Stopped(r) if r.contains("time limit")),
        "{outcome:?}"
    );
    // A log flood: stopped at the output limit, with exactly that much kept.
    let flood = Limits {
        log_bytes: 10_000,
        ..short()
    };
    let (outcome, out) = run(&job(dir.path(), "yes flood", flood, vec![]));
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
    let (outcome, _) = run(&job(
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
    // The run returned after the sandbox's init and its cgroup were gone: nothing is left.
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
    let (outcome, out) = run(&job(
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
    let r = runtime()
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
    let dir = tempfile::tempdir().unwrap();
    let j = job(dir.path(), "sleep 1000", short(), vec![]);
    let stop = StopSignal::default();
    let s = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        s.stop("the customer closed the deployment");
    });
    let r = runtime().run(&j, &mut Collect::default(), &stop).unwrap();
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
    let (outcome, out) = run(&j);
    assert_eq!(outcome, Outcome::Exited(0), "{out}");
    assert_eq!(out, "GPU-1234\n4\n");
    // A CPU lease gets neither.
    let script = format!(
        "echo [$CUDA_VISIBLE_DEVICES]; head -c 4 {} 2>/dev/null | wc -c",
        node.display()
    );
    let (_, out) = run(&job(dir.path(), &script, short(), vec![]));
    assert_eq!(out, "[]\n0\n");
}

/// The runtime can run jobs on this machine, and says so.
#[test]
fn the_sandbox_is_available_without_any_external_program() {
    assert_eq!(runtime().unavailable(), None);
}

/// The work dir sits under a 0700 directory owned by root (as under Debian's `/root`), and
/// the job, running as nobody, still works in it; it is in namespaces of its own, every
/// one, with no capability.
#[test]
fn a_job_runs_as_nobody_in_its_own_namespaces_under_a_private_home() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let names = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"];
    let script = format!(
        "id -u; hostname; echo x > f && cat f; \
         grep -E '^Cap(Eff|Prm|Bnd|Amb):' /proc/self/status | tr -s '\t' ' '; \
         grep NoNewPrivs /proc/self/status | tr -s '\t' ' '; \
         for n in {}; do readlink /proc/self/ns/$n; done",
        names.join(" ")
    );
    let (outcome, out) = run(&job(dir.path(), &script, short(), vec![]));
    assert_eq!(outcome, Outcome::Exited(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["65534", "cairn-job", "x"], "{out}");
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert!(
            lines.contains(&format!("{cap}: 0000000000000000").as_str()),
            "{cap} not empty: {out}"
        );
    }
    assert!(lines.contains(&"NoNewPrivs: 1"), "{out}");
    for (i, n) in names.iter().enumerate() {
        let outside = std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        let inside = lines[8 + i];
        assert!(inside.starts_with(n), "{out}");
        assert_ne!(
            inside,
            outside.to_str().unwrap(),
            "{n} namespace shared: {out}"
        );
    }
}

/// Nothing the customer pays for happens unless the program runs: a program that does not
/// exist is an error with its reason, and the job never counts as started. A shell that
/// cannot find a command is a program that ran: its exit code is the job's.
#[test]
fn a_job_that_cannot_start_is_an_error_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job(dir.path(), "", short(), vec![]);
    j.spec.command = vec![BoundedString::new("cairn-no-such-program").unwrap()];
    let mut sink = Collect::default();
    let r = runtime().run(&j, &mut sink, &StopSignal::default());
    match r {
        Err(RuntimeError::Start(why)) => {
            assert!(why.contains("cannot run `cairn-no-such-program`"), "{why}");
            assert!(why.contains("No such file or directory"), "{why}");
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    assert!(!sink.started);
    assert!(sink.out.is_empty());
    let (outcome, out) = run(&job(dir.path(), "cairn-no-such-program", short(), vec![]));
    assert_eq!(outcome, Outcome::Exited(127), "{out}");
    // A work dir that cannot be bound (a file in its place) fails before anything runs too.
    let blocked = job(dir.path(), "true", short(), vec![]);
    std::fs::remove_dir_all(&blocked.work_dir).ok();
    let parent = dir.path().join("file-not-dir");
    std::fs::write(&parent, "").unwrap();
    let mut blocked = blocked;
    blocked.work_dir = parent.join("work");
    let r = runtime().run(&blocked, &mut Collect::default(), &StopSignal::default());
    assert!(matches!(r, Err(RuntimeError::Start(_))), "{r:?}");
}

/// Runs the sandbox helper through `wrapper` (a command line ending where the helper's own
/// path goes) with `spec`, as the worker speaks to it: the status it wrote, its exit status
/// and output.
fn helper_via(wrapper: &[&str], spec: &serde_json::Value) -> (String, std::process::Output) {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let body = serde_json::to_vec(spec).unwrap();
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .arg("sandbox-exec")
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ours.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
    ours.write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut status = String::new();
    ours.read_to_string(&mut status).unwrap();
    (status, out)
}

/// A job's description as the worker sends it to the helper.
fn spec_for(script: &str, work: &Path, hidden: &[&Path], parent: u32) -> serde_json::Value {
    serde_json::json!({
        "command": ["sh", "-c", script],
        "env": [["PATH", "/usr/bin:/bin"]],
        "work_dir": work,
        "hidden": hidden,
        "devices": [],
        "network": false,
        "cgroup_procs": [],
        "nproc": 64,
        "address_space": 1u64 << 30,
        "cpus": null,
        "parent": parent,
    })
}

/// A work dir (and its parent) that an unprivileged worker running as nobody owns.
fn nobody_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
    (dir, work)
}

const AS_NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// The helper as an unprivileged worker would run it: the job gets a user namespace of its
/// own in which it is root without any capability, and the rest of the sandbox as a root
/// worker's job does.
#[test]
fn an_unprivileged_worker_s_sandbox_works_too() {
    let (dir, work) = nobody_dir();
    let secret = dir.path().join("keys");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("k"), "secret").unwrap();
    std::os::unix::fs::chown(&secret, Some(65534), Some(65534)).unwrap();
    let script = format!(
        "id -u; grep CapEff /proc/self/status | tr -s '\\t' ' '; echo ok > f; cat f; \
         echo $$; cat {}/k || echo hidden",
        secret.display()
    );
    let spec = spec_for(&script, &work, &[&secret], std::process::id());
    let (status, out) = helper_via(&AS_NOBODY, &spec);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status,
        "R\n",
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text, "0\nCapEff: 0000000000000000\nok\n2\nhidden\n",
        "{out:?}"
    );
}

/// An unprivileged worker on a system that refuses it user namespaces says exactly why.
/// The refusal is made for this test alone: `user.max_user_namespaces = 0` inside a user
/// namespace of its own (which maps root and nobody, as the machine's does), whose limit
/// binds only what is created within it.
#[test]
fn an_unprivileged_worker_without_user_namespaces_says_why() {
    let (_dir, work) = nobody_dir();
    let mut holder = Command::new("unshare")
        .args(["--user", "sleep", "60"])
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Kill(&mut holder);
    let pid = holder.0.id();
    let ns = format!("/proc/{pid}/ns/user");
    let mine = std::fs::read_link("/proc/self/ns/user").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(&ns).is_ok_and(|n| n == mine) {
        assert!(Instant::now() < deadline, "unshare --user did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{map}"), "0 0 1\n65534 65534 1\n").unwrap();
    }
    let pid = pid.to_string();
    let mut wrapper = vec!["nsenter", "-t", &pid, "-U", "--", "sh", "-c"];
    let script = "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"";
    wrapper.extend([script, "sh"]);
    wrapper.extend(AS_NOBODY);
    // nsenter, sh and setpriv each exec the next, so the helper's parent is this process.
    let spec = spec_for("echo ran", &work, &[], std::process::id());
    let (status, out) = helper_via(&wrapper, &spec);
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        status.starts_with(
            "Ethis worker runs as an unprivileged user and cannot create a user namespace"
        ),
        "{status}"
    );
    assert!(status.contains("user.max_user_namespaces = 0"), "{status}");
}

/// Without the machine's network a job still has a loopback of its own, up: a server it
/// starts on 127.0.0.1 answers it.
#[test]
fn a_job_has_a_working_loopback_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let script = "exec python3 -c 'import socket\n\
s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(1)\n\
c = socket.create_connection(s.getsockname(), 2); a, _ = s.accept()\n\
c.sendall(b\"own loopback\"); print(a.recv(64).decode())'";
    let (outcome, out) = run(&job(dir.path(), script, short(), vec![]));
    assert_eq!(outcome, Outcome::Exited(0), "{out}");
    assert_eq!(out, "own loopback\n");
}
