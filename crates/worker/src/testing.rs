//! A real container engine for tests: `podman system service` on a private socket, with its
//! own storage, a small image built from Debian's busybox-static (no registry is reachable
//! from CI), and a fake CDI GPU visible only inside the service's private mount namespace.
//!
//! Installs what it needs with apt-get when it is missing (CI runs as root); it panics,
//! never skips, when the engine cannot be had. The service and every container it ran are
//! gone when the [`Podman`] value drops, on every path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image the harness imports.
pub const IMAGE: &str = "localhost/cairn-busybox:test";
/// The fake GPU's CDI name.
pub const FAKE_GPU: &str = "cairn.test/gpu=0";
/// What the fake GPU sets inside a container that gets it.
pub const FAKE_GPU_ENV: &str = "CAIRN_FAKE_GPU=0";
/// The device node the fake GPU adds (a copy of /dev/null).
pub const FAKE_GPU_NODE: &str = "/dev/cairn-gpu0";

const PACKAGES: [&str; 3] = ["podman", "runc", "busybox-static"];

/// A job for lease `lease` that runs `sh -c script` (in `image`, or bare when `None`) with
/// `GREETING=hello` in its environment, `work_dir/work` as its directory, and `limits`.
pub fn sh_job(
    lease: u64,
    work_dir: &Path,
    image: Option<&str>,
    script: &str,
    limits: crate::Limits,
) -> crate::Job {
    fn text<const MAX: usize>(s: &str) -> cairn_primitives::BoundedString<MAX> {
        cairn_primitives::BoundedString::new(s).expect("a short test string")
    }
    crate::Job {
        lease,
        spec: cairn_primitives::JobSpec {
            image: image.map(text),
            command: ["sh", "-c", script].into_iter().map(text).collect(),
            env: vec![(text("GREETING"), text("hello"))],
            network: false,
        },
        limits,
        work_dir: work_dir.join("work"),
        hidden: Vec::new(),
        gpus: Vec::new(),
    }
}

/// Runs `job` on `runtime` to its end; asserts that it started; returns the report and what
/// it printed.
pub fn run_collect(runtime: &dyn crate::Runtime, job: &crate::Job) -> (crate::RunReport, String) {
    let mut sink = Collect::default();
    let report = runtime
        .run(job, &mut sink, &crate::StopSignal::default())
        .expect("the job runs");
    assert!(sink.started, "the runtime never said the job started");
    (report, String::from_utf8_lossy(&sink.out).into_owned())
}

/// A sink that keeps everything a job printed and whether it started (tests, benchmarks).
#[derive(Debug, Default)]
pub struct Collect {
    /// Whether the runtime said the job started.
    pub started: bool,
    /// Its output.
    pub out: Vec<u8>,
}

impl crate::Sink for Collect {
    fn started(&mut self) {
        self.started = true;
    }
    fn output(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
}

/// A running Podman service.
pub struct Podman {
    dir: tempfile::TempDir,
    service: Child,
}

/// Whether `program` is on the PATH.
pub fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Debian `packages` with apt-get (updating the lists once if the first try fails);
/// panics naming `what` needs them if it cannot. Tests call it when something they need is
/// missing (CI runs as root).
pub fn apt_install(packages: &[&str], what: &str) {
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        assert!(
            install(),
            "{} are needed for {what} and apt-get could not install them",
            packages.join(", ")
        );
    }
}

fn ensure_packages() {
    let missing = !installed("podman") || !installed("runc") || !Path::new("/bin/busybox").exists();
    if missing {
        apt_install(&PACKAGES, "the container tests");
    }
}

/// Global flags: private storage under `d` (vfs works inside other containers), runc (crun
/// refuses hybrid cgroup hierarchies), cgroupfs and file events (no systemd needed).
fn flags(d: &Path) -> Vec<String> {
    vec![
        format!("--root={}", d.join("storage").display()),
        format!("--runroot={}", d.join("run").display()),
        "--storage-driver=vfs".into(),
        "--runtime=runc".into(),
        "--cgroup-manager=cgroupfs".into(),
        "--events-backend=file".into(),
    ]
}

fn cli(d: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(flags(d))
        .args(args)
        .output()
        .expect("podman runs")
}

impl Podman {
    /// Runs the podman CLI on this service's storage.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cli(self.dir.path(), args)
    }

    /// Starts the service (installing podman when missing) and imports [`IMAGE`].
    pub fn start() -> Self {
        ensure_packages();
        let dir = tempfile::tempdir().expect("temp dir");
        // The image: busybox-static and a link per applet.
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("rootfs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        let list = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if !applet.is_empty() && applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
            }
        }
        let tar = dir.path().join("image.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tar the image");
        // The fake GPU, and the service inside a private mount namespace where /etc/cdi
        // holds only it (the host's /etc/cdi is untouched; it is created empty if absent).
        let spec = dir.path().join("fake-gpu.yaml");
        std::fs::write(
            &spec,
            format!(
                "cdiVersion: \"0.5.0\"\nkind: \"cairn.test/gpu\"\ndevices:\n- name: \"0\"\n  \
                 containerEdits:\n    env: [\"{FAKE_GPU_ENV}\"]\n    deviceNodes:\n    - path: \
                 \"{FAKE_GPU_NODE}\"\n      hostPath: \"/dev/null\"\n"
            ),
        )
        .expect("cdi spec");
        let socket = dir.path().join("podman.sock");
        let imported = cli(
            dir.path(),
            &[
                "import",
                "--change",
                "ENV=PATH=/bin",
                &tar.display().to_string(),
                IMAGE,
            ],
        );
        assert!(
            imported.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&imported.stderr)
        );
        let script = format!(
            "set -e; mkdir -p /etc/cdi; mount -t tmpfs cairn-cdi /etc/cdi; cp {spec} /etc/cdi/; \
             exec podman {flags} system service --time=0 unix://{socket}",
            spec = spec.display(),
            flags = flags(dir.path()).join(" "),
            socket = socket.display(),
        );
        let log = std::fs::File::create(dir.path().join("service.log")).expect("log");
        let service = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("unshare + podman system service");
        let mut podman = Self { dir, service };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !podman.socket().exists() || !podman.answers() {
            if let Ok(Some(status)) = podman.service.try_wait() {
                panic!(
                    "podman system service exited ({status}): {}",
                    std::fs::read_to_string(podman.dir.path().join("service.log"))
                        .unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "podman service did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        podman
    }

    fn answers(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.socket()).is_ok()
    }

    /// The service's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("podman.sock")
    }

    /// Names of every container on this engine, running or not.
    pub fn containers(&self) -> Vec<String> {
        let out = self.cli(&["ps", "-a", "--format", "{{.Names}}"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cli(&["rm", "-af", "-t", "0"]);
        let _ = self.service.kill();
        let _ = self.service.wait();
    }
}
