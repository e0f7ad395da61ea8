//! The Docker Engine API runtime against a real engine: Podman's Docker-compatible service
//! on a private socket (the harness installs podman when missing and imports an image built
//! from busybox-static). One test, so one service serves every case and is stopped on
//! every path, panics included.

use cairn_worker::testing::{
    Collect, FAKE_GPU, FAKE_GPU_ENV, FAKE_GPU_NODE, IMAGE, Podman, run_collect, sh_job,
};
use cairn_worker::{
    DockerRuntime, GpuAccess, Job, Limits, Outcome, RunReport, Runtime, StopSignal,
};
use std::path::Path;
use std::time::Duration;

fn job(lease: u64, dir: &Path, image: &str, script: &str, limits: Limits) -> Job {
    sh_job(lease, dir, Some(image), script, limits)
}

fn run(rt: &DockerRuntime, j: &Job) -> (RunReport, String) {
    run_collect(rt, j)
}

fn limits(memory_mib: u64, secs: u64) -> Limits {
    Limits {
        memory_mib,
        time: Duration::from_secs(secs),
        ..Limits::default()
    }
}

#[test]
fn the_docker_api_runtime_against_a_real_engine() {
    let podman = Podman::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = DockerRuntime::connect(&podman.socket(), "test-worker").expect("engine answers");
    assert!(rt.engine().starts_with("Podman"), "{}", rt.engine());
    assert_eq!(rt.unavailable(), None);

    // Output, environment, the memory limit as the container's cgroup sees it, no network,
    // the exit code; nothing left behind.
    let (r, out) = run(
        &rt,
        &job(
            1,
            dir.path(),
            IMAGE,
            "echo $GREETING; cat /sys/fs/cgroup/memory/memory.limit_in_bytes \
             /sys/fs/cgroup/memory.max 2>/dev/null; \
             grep -c : /proc/net/dev; exit 3",
            limits(64, 30),
        ),
    );
    assert_eq!(r.outcome, Outcome::Exited(3), "{out}");
    // One interface: the loopback (the header lines have no colon after the name).
    assert_eq!(out, format!("hello\n{}\n1\n", 64u64 << 20), "{out}");
    assert_eq!(r.usage.log_bytes, out.len() as u64);
    assert!(podman.containers().is_empty(), "{:?}", podman.containers());

    // A job that allocates past its memory limit is stopped, and says so.
    let (r, out) = run(
        &rt,
        &job(
            2,
            dir.path(),
            IMAGE,
            "echo filling; exec tail /dev/zero",
            limits(32, 60),
        ),
    );
    assert!(
        matches!(&r.outcome, Outcome::Stopped(why) if why.contains("memory limit of 32 MiB")),
        "{:?} {out}",
        r.outcome
    );
    assert_eq!(out, "filling\n");
    assert!(podman.containers().is_empty(), "{:?}", podman.containers());

    // Sleeps forever: stopped at its time limit. A log flood: stopped at exactly its limit.
    let (r, _) = run(&rt, &job(3, dir.path(), IMAGE, "sleep 1000", limits(64, 2)));
    assert!(
        matches!(&r.outcome, Outcome::Stopped(why) if why.contains("time limit")),
        "{:?}",
        r.outcome
    );
    let flood = Limits {
        log_bytes: 10_000,
        ..limits(64, 30)
    };
    let (r, out) = run(&rt, &job(4, dir.path(), IMAGE, "yes flood", flood));
    assert!(
        matches!(&r.outcome, Outcome::Stopped(why) if why.contains("log limit")),
        "{:?}",
        r.outcome
    );
    assert_eq!(out.len(), 10_000);
    // A fork bomb is held by the pids cgroup, then stopped by its time limit.
    let bomb = Limits {
        pids: 32,
        ..limits(64, 3)
    };
    let (r, _) = run(
        &rt,
        &job(5, dir.path(), IMAGE, "b() { b | b & }; b; sleep 100", bomb),
    );
    assert!(
        matches!(&r.outcome, Outcome::Stopped(why) if why.contains("time limit")),
        "{:?}",
        r.outcome
    );
    assert!(podman.containers().is_empty(), "{:?}", podman.containers());

    // A stop request ends it at once.
    let stop = StopSignal::default();
    let stopper = stop.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        stopper.stop("the customer stopped the deployment");
    });
    let mut sink = Collect::default();
    let r = rt
        .run(
            &job(6, dir.path(), IMAGE, "sleep 1000", limits(64, 60)),
            &mut sink,
            &stop,
        )
        .unwrap();
    timer.join().unwrap();
    assert_eq!(
        r.outcome,
        Outcome::Stopped("the customer stopped the deployment".into())
    );

    // The GPU plumbing: a CDI device request reaches the container (a fake CDI spec the
    // service alone sees), checked from inside.
    let mut gpu = job(
        7,
        dir.path(),
        IMAGE,
        &format!("env | grep CAIRN_FAKE_GPU; test -c {FAKE_GPU_NODE} && echo device-node"),
        limits(64, 30),
    );
    gpu.gpus = vec![GpuAccess {
        cdi: FAKE_GPU.to_string(),
        uuid: "GPU-fake".into(),
        node: None,
    }];
    let (r, out) = run(&rt, &gpu);
    assert_eq!(r.outcome, Outcome::Exited(0), "{out}");
    assert_eq!(out, format!("{FAKE_GPU_ENV}\ndevice-node\n"));
    // Without the request, nothing of it is there.
    let (_, out) = run(
        &rt,
        &job(
            8,
            dir.path(),
            IMAGE,
            &format!("env | grep -c CAIRN_FAKE_GPU; test -e {FAKE_GPU_NODE} || echo absent"),
            limits(64, 30),
        ),
    );
    assert_eq!(out, "0\nabsent\n");

    // An image that is not here and cannot be pulled: a clear error, nothing left.
    let mut sink = Collect::default();
    let e = rt
        .run(
            &job(
                9,
                dir.path(),
                "localhost/cairn-no-such-image:1",
                "true",
                limits(64, 30),
            ),
            &mut sink,
            &StopSignal::default(),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("cairn-no-such-image") && e.to_string().contains("pulled"),
        "{e}"
    );
    assert!(!sink.started);
    assert!(podman.containers().is_empty(), "{:?}", podman.containers());

    // A container a crashed worker left behind is removed when it starts again; another
    // worker's is not touched.
    for (name, worker) in [("cairn-lease-10", "test-worker"), ("other", "other-worker")] {
        let made = podman.cli(&[
            "create",
            "--name",
            name,
            "--label",
            &format!("cairn.worker={worker}"),
            IMAGE,
            "sleep",
            "1000",
        ]);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    assert_eq!(rt.recover(), vec!["cairn-lease-10".to_string()]);
    assert_eq!(podman.containers(), vec!["other".to_string()]);
}
