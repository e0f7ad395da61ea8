//! The main job as a newcomer meets it: the built binary, a fresh HOME with mode 0700 (as
//! Debian's `/root`), an empty `XDG_DATA_HOME=`, a PATH without `cairn` on it, and no
//! bubblewrap, Podman or Docker (masked in a private mount namespace, since they live in
//! `/usr/bin` beside `sh`). `cairn devnet` starts; the commands it prints are run exactly as
//! printed; `cairn deploy … -- echo hello` runs in the sandbox and `cairn jobs logs` prints
//! `hello`; a job that cannot start is `failed` with its reason and costs nothing.

use cairn_client::Client;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

mod common;
use common::eventually;

/// Programs a newcomer's machine does not have; masked where this one has them.
const MASKED: [&str; 7] = [
    "/usr/bin/bwrap",
    "/usr/bin/podman",
    "/usr/bin/docker",
    "/usr/local/bin/docker",
    "/usr/bin/prlimit",
    "/usr/bin/setpriv",
    "/var/run/docker.sock",
];

/// A plain PATH, without cargo's target directory.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The devnet process, killed and reaped on every path.
struct Devnet(Child);

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `line` as a newcomer would type it: in `sh`, in the fresh home, after the `export`
/// line devnet printed.
fn shell(home: &Path, export: &str, line: &str) -> Output {
    Command::new("sh")
        .args(["-c", &format!("{export}\n{line}")])
        .env_clear()
        .env("HOME", home)
        .env("PATH", PATH)
        .env("XDG_DATA_HOME", "")
        .current_dir(home)
        .output()
        .expect("sh")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn devnet_deploy_and_logs_work_as_printed_on_a_fresh_machine() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cairn = env!("CARGO_BIN_EXE_cairn");
    // In a private mount namespace, each of those programs becomes /dev/null (not runnable).
    let mask = "for f in \"$@\"; do case $f in --) shift; break;; esac; \
                [ -e \"$f\" ] && { mount --bind /dev/null \"$f\" || exit 99; }; shift; done; \
                exec \"$@\"";
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            mask,
            "mask",
        ])
        .args(MASKED)
        .args([
            "--",
            cairn,
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--p2p",
            "127.0.0.1:0",
        ])
        .env_clear()
        .env("HOME", &home)
        .env("PATH", PATH)
        .env("XDG_DATA_HOME", "")
        .current_dir(&home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    let stderr = child.stderr.take().unwrap();
    let _net = Devnet(child);
    let mut lines = BufReader::new(stderr).lines();
    let mut printed = Vec::new();
    let mut next = false;
    for line in lines.by_ref() {
        let line = line.expect("devnet output");
        if line.contains("Ctrl-C stops it") {
            break;
        }
        if next {
            printed.push(line.trim().to_string());
        }
        next |= line.contains("next, in another terminal:");
    }
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = log_tx.send(l);
        }
    });
    let devnet_log = || log_rx.try_iter().collect::<Vec<_>>().join("\n");
    assert!(
        printed.len() >= 4,
        "devnet printed no next steps: {printed:?}"
    );
    let export = printed[0].clone();
    assert!(export.starts_with("export "), "{export}");
    let url = export
        .split_whitespace()
        .find_map(|w| w.strip_prefix("CAIRN_NODE="))
        .expect("CAIRN_NODE in the export line")
        .to_string();
    // Devnet wrote under the fresh home, not under ./cairn (XDG_DATA_HOME is empty).
    assert!(
        home.join(".local/share/cairn/devnet/genesis.toml").exists(),
        "{}",
        devnet_log()
    );
    assert!(!home.join("cairn").exists());
    let c = Client::new(&url);
    // Devnet's worker registers this machine and buys alice credits.
    eventually(120, "devnet's worker and alice's credits", || {
        c.get("/v1/devices")
            .is_ok_and(|d| d["devices"].as_array().is_some_and(|a| !a.is_empty()))
            && alice_credits(&home, &export) > 0
    });
    let log = devnet_log();
    assert!(!log.contains("bare commands cannot run"), "{log}");
    // Every command devnet printed, exactly as printed.
    for line in &printed[1..] {
        if line.starts_with("cairn jobs logs") {
            continue; // below, once the job has run
        }
        let out = shell(&home, &export, line);
        ok(&out, line);
    }
    let logs_line = printed
        .iter()
        .find(|l| l.starts_with("cairn jobs logs"))
        .expect("devnet prints how to read the logs");
    assert!(
        printed
            .iter()
            .any(|l| l == "cairn deploy --key alice --yes -- echo hello"),
        "{printed:?}"
    );
    eventually(60, "the job's lease finishes", || {
        c.get("/v1/deployments/0")
            .is_ok_and(|d| d["status"] == "finished")
    });
    let dep = c.get("/v1/deployments/0").unwrap();
    assert_eq!(dep["leases"][0]["state"], "finished", "{dep}");
    assert_eq!(dep["leases"][0]["exit_code"], 0, "{dep}");
    let out = ok(&shell(&home, &export, logs_line), logs_line);
    assert_eq!(out, "hello\n", "{dep}");

    // A job whose program does not exist never starts: failed, with its reason, free.
    let before = alice_credits(&home, &export);
    ok(
        &shell(
            &home,
            &export,
            "cairn deploy --key alice --yes -- cairn-no-such-program",
        ),
        "deploy a missing program",
    );
    eventually(60, "the failed lease ends", || {
        c.get("/v1/deployments/1")
            .is_ok_and(|d| d["status"] == "finished")
    });
    let dep = c.get("/v1/deployments/1").unwrap();
    let lease = &dep["leases"][0];
    assert_eq!(lease["state"], "failed", "{dep}");
    assert_eq!(lease["started"], false, "{dep}");
    let reason = lease["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot run `cairn-no-such-program`"),
        "{dep}"
    );
    assert_eq!(dep["paid"], 0, "{dep}");
    assert_eq!(alice_credits(&home, &export), before, "{dep}");
    let shown = ok(
        &shell(&home, &export, "cairn jobs show 1"),
        "cairn jobs show 1",
    );
    assert!(shown.contains("failed"), "{shown}");
    assert!(
        shown.contains("cannot run `cairn-no-such-program`"),
        "{shown}"
    );
    let logs = shell(&home, &export, "cairn jobs logs --key alice 1");
    let said = String::from_utf8_lossy(&logs.stderr);
    assert!(logs.status.success(), "{said}");
    assert!(logs.stdout.is_empty());
    assert!(
        said.contains(
            "no output; failed: could not start the job: cannot run `cairn-no-such-program`"
        ),
        "{said}"
    );
}

/// Alice's credits, read with the CLI as printed by devnet.
fn alice_credits(home: &Path, export: &str) -> u64 {
    let out = shell(home, export, "cairn account balance --key alice --json");
    if !out.status.success() {
        return 0;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["credits"].as_u64())
        .unwrap_or(0)
}
