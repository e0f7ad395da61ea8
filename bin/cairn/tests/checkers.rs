//! Checking through real processes: `cairn devnet` (a node and its three checkers) and
//! `cairn worker` processes, as a provider (honest or not) would run them.

use cairn_client::Client;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Guard, eventually, free_port, timed};

/// A devnet without its worker in `dir`; returns it and its API URL.
fn devnet(dir: &Path, extra: &[&str]) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["devnet", "--no-worker", "--listen", "127.0.0.1:0"])
        .args(["--p2p", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn devnet");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.trim()
                .strip_prefix("API:")
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
        })
        .expect("devnet printed its API URL");
    std::thread::spawn(move || for _ in lines {});
    (Guard(child), url)
}

fn cairn(url: &str, keys: &Path, path: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_NODE", url)
        .env("CAIRN_KEYS_DIR", keys)
        .env("PATH", path)
        .output()
        .expect("run cairn")
}

/// The io.net incident of April 2024, replayed: a worker whose `nvidia-smi` lies registers
/// eight H100s on this CPU machine. None is ever verified or matched; a deploy for H100s is
/// refused, taking nothing; none earns; all are jailed after their first round; the honest CPU
/// device beside them is verified and paid.
#[test]
fn eight_fake_h100s_are_jailed_never_matched_nor_paid_and_the_honest_cpu_is() {
    let _turn = timed();
    let dir = tempfile::tempdir().unwrap();
    let (_net, url) = devnet(&dir.path().join("net"), &["--epoch-secs", "20"]);
    let keys = dir.path().join("net/keys");
    // The lying nvidia-smi: eight H100s, as `--query-gpu=…` would print them.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let smi = bin.join("nvidia-smi");
    let rows: String = (0..8)
        .map(|i| format!("{i}, GPU-fake0000-0000-0000-0000-00000000000{i}, NVIDIA H100 80GB HBM3, 81559, 550.54.15\\n"))
        .collect();
    std::fs::write(&smi, format!("#!/bin/sh\nprintf '{rows}'\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let wdir = dir.path().join("worker");
    let w = wdir.to_str().unwrap();
    let reg = cairn(
        &url,
        &keys,
        &path,
        &["worker", "register", "--key", "bob", "--data-dir", w],
    );
    let text = String::from_utf8_lossy(&reg.stdout).to_string();
    assert!(
        reg.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&reg.stderr)
    );
    assert_eq!(text.matches("as class H100-SXM").count(), 8, "{text}");
    let c = Client::new(&url);
    let bob = cairn_keystore::Keystore::at(&keys)
        .load("bob")
        .unwrap()
        .address();
    let devices = c.get(&format!("/v1/devices?owner={bob}")).unwrap();
    let list = devices["devices"].as_array().unwrap().clone();
    let (fakes, cpus): (Vec<_>, Vec<_>) = list.iter().partition(|d| d["class"] == "H100-SXM");
    assert_eq!((fakes.len(), cpus.len()), (8, 1), "{devices}");
    let addr = |d: &serde_json::Value| d["address"].as_str().unwrap().to_string();
    let cpu = addr(cpus[0]);
    let claimed_cores = cpus[0]["spec"]["cpu_cores"].as_u64().unwrap();
    let fakes: Vec<String> = fakes.iter().map(|d| addr(d)).collect();

    let worker = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["worker", "run", "--data-dir", w])
        .env("CAIRN_NODE", &url)
        .env("PATH", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn worker run");
    let _worker = Guard(worker);
    let status = |a: &str| {
        c.get(&format!("/v1/devices/{a}"))
            .map(|d| {
                d["verification"]["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    };
    eventually(
        120,
        "the fake H100s are jailed and the CPU verified",
        || status(&cpu) == "verified" && fakes.iter().all(|f| status(f) == "jailed"),
    );
    // The CPU device counts the cores its answers' times showed, never more than it claims;
    // each passing checker's figure is on record.
    let d = c.get(&format!("/v1/devices/{cpu}")).unwrap();
    let counted = d["verification"]["cores"].as_u64().unwrap_or(0);
    assert!((1..=claimed_cores).contains(&counted), "{d}");
    assert!(
        d["verification"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["code"] == "pass")
            .all(|r| r["cores"].as_u64().is_some_and(|n| n >= 1)),
        "{d}"
    );
    for f in &fakes {
        let d = c.get(&format!("/v1/devices/{f}")).unwrap();
        let v = &d["verification"];
        assert_eq!(v["verdict"], "missed", "{d}");
        assert!(
            v["cores"].is_null(),
            "a GPU class has no counted cores: {d}"
        );
        assert!(v["last_pass_epoch"].is_null(), "never passed: {d}");
    }

    // A customer asks for two H100s: refused, nothing escrowed.
    eventually(30, "the demo oracle's price", || {
        c.get("/v1/stats")
            .is_ok_and(|s| s["oracle_price_micro_usd"].as_u64().is_some())
    });
    let buy = cairn(
        &url,
        &keys,
        &path,
        &["credits", "buy", "--key", "alice", "--amount", "10"],
    );
    assert!(
        buy.status.success(),
        "{}",
        String::from_utf8_lossy(&buy.stderr)
    );
    let alice = cairn_keystore::Keystore::at(&keys)
        .load("alice")
        .unwrap()
        .address();
    let credits = c.account(&alice, false).unwrap()["credits"].clone();
    let deploy = cairn(
        &url,
        &keys,
        &path,
        &[
            "deploy",
            "--key",
            "alice",
            "--yes",
            "--class",
            "H100-SXM",
            "--replicas",
            "2",
            "--",
            "nproc",
        ],
    );
    let err = String::from_utf8_lossy(&deploy.stderr).to_string();
    assert!(!deploy.status.success(), "{err}");
    assert!(err.contains("no verified capacity"), "{err}");
    assert_eq!(c.account(&alice, false).unwrap()["credits"], credits);
    assert!(
        c.get("/v1/deployments/0").is_err(),
        "no deployment was opened"
    );

    // Two epochs close: the CPU device earns, no fake does.
    let epoch = c.status().unwrap()["epoch"].as_u64().unwrap();
    eventually(90, "two more epochs", || {
        c.status().unwrap()["epoch"].as_u64().unwrap() >= epoch + 2
    });
    // What a device earns: staking rewards paid into its pool (by epoch), or capacity and
    // stake a closed epoch still owes it.
    let earned = |a: &str| -> bool {
        let nonzero = |v: &serde_json::Value| {
            v.as_str()
                .is_some_and(|s| !s.trim_matches(['0', '.']).is_empty())
        };
        let r = c.get(&format!("/v1/accounts/{a}/rewards")).unwrap();
        let paid = r["rewards"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| nonzero(&e["staking"]));
        let d = c.get(&format!("/v1/devices/{a}")).unwrap();
        let owed =
            nonzero(&d["pending_rewards"]["capacity"]) || nonzero(&d["pending_rewards"]["stake"]);
        paid || owed
    };
    eventually(60, "the CPU device earns", || earned(&cpu));
    for f in &fakes {
        assert!(!earned(f), "fake device {f} earned");
        assert_eq!(status(f), "jailed");
    }
}

/// One solver answering for two devices misses the deadline in a round where both are due.
/// The CPU class's margin cannot show it on this machine under CI load, so the test calibrates
/// its own class to this machine: its deadline is 1.5 times the time one challenge takes here
/// (plus the network allowance). The node, a checker and the worker's link run in this
/// process, as `cairn node`, `cairn checker run` and `cairn worker run` run them.
#[test]
fn one_solver_answering_for_two_devices_misses_the_deadline() {
    use cairn_popw::Params;
    use cairn_primitives::{ClassKind, DeviceClass, DeviceSpec, Genesis, GenesisAccount, Keypair};
    let _turn = timed();
    let dir = tempfile::tempdir().unwrap();

    // Calibrate: one challenge of 8 tables of 2,048² (one core and 16 GiB claimed), timed on
    // this machine: long enough that the network allowance (0.5 s) does not blur the margins.
    let mut class = DeviceClass {
        name: "TEST-CPU".into(),
        ..DeviceClass::default_catalog()
            .into_iter()
            .find(|c| c.kind == ClassKind::Cpu)
            .unwrap()
    };
    let units = 1;
    let ram = 16_384;
    let probe = Params::for_class(&class, units, ram);
    let solver = cairn_solver::CpuSolver;
    cairn_solver::Solver::prepare(&solver, &probe).unwrap();
    let start = Instant::now();
    cairn_solver::Prover::solve(&solver, [3; 32], probe.clone(), |_, _| {}).unwrap();
    let one = start.elapsed().as_secs_f64();
    // deadline = ops / (tops · 10¹² · units · 0.1) + allowance = 1.5 · one + allowance.
    class.int8_tops = probe.ops() / (1.5 * one * 1e12 * f64::from(units) * 0.1);
    let params = Params::for_class(&class, units, ram);
    let deadline = params.compute_deadline.as_secs_f64();
    assert!(
        one + 0.3 < deadline && 2.0 * one > deadline + 0.3,
        "calibration: one challenge {one:.2} s, deadline {deadline:.2} s"
    );

    // A chain with that class, one checker (so its result decides), no regular round.
    let validator = Keypair::from_seed([1; 32]);
    let checker = Keypair::from_seed([2; 32]);
    let owner = Keypair::from_seed([3; 32]);
    let devices = [Keypair::from_seed([4; 32]), Keypair::from_seed([5; 32])];
    let checker_addr = free_port();
    let mut g = Genesis::production("cairn-two-devices", 3600, cairn_node::now_ms());
    g.classes.push(class.clone());
    g.validators = vec![cairn_primitives::Validator {
        key: validator.address(),
        // One validator: nobody dials its p2p port.
        p2p: "127.0.0.1:0".into(),
    }];
    g.checking.min_round_gap_secs = 86_400;
    g.checking.join_delay_secs = 3;
    g.checkers = vec![cairn_primitives::GenesisChecker {
        address: checker.address(),
        endpoint: checker_addr.to_string(),
        stake: g.checking.min_stake.clone(),
    }];
    for k in [&owner, &checker] {
        g.accounts.push(GenesisAccount {
            address: k.address(),
            balance: "100000".into(),
        });
    }
    let settings = cairn_node::NodeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..cairn_node::NodeSettings::default()
    };
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_node, node_stopped) = tokio::sync::oneshot::channel::<()>();
    let chain_dir = dir.path().join("chain");
    let node = std::thread::spawn(move || {
        cairn_node::serve(
            &chain_dir,
            Some(&g),
            &validator,
            &settings,
            |url| url_tx.send(url.to_string()).unwrap(),
            async move {
                let _ = node_stopped.await;
            },
        )
    });
    let url = url_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the node's API");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker_thread = {
        let s = cairn_checker::CheckerSettings {
            node: url.clone(),
            listen: checker_addr,
            data_dir: dir.path().join("checker"),
            ..cairn_checker::CheckerSettings::default()
        };
        let stop = stop.clone();
        std::thread::spawn(move || {
            cairn_checker::run(&s, checker, stop, Default::default()).expect("the checker runs")
        })
    };

    // The worker's link proves both devices on its one CPU (it connects each once it is
    // registered); both are registered together, so both are due in the same join round.
    let link = cairn_worker::spawn_checking(
        &url,
        devices
            .iter()
            .map(|k| cairn_worker::ProvingDevice {
                key: k.clone(),
                gpu: None,
            })
            .collect(),
        stop.clone(),
    );
    let c = Client::new(&url);
    let chain = c.chain().unwrap().0;
    for d in &devices {
        let spec = DeviceSpec {
            cpu_cores: units,
            ram_mib: ram,
            ..DeviceSpec::default()
        };
        let body = cairn_ledger::testing::register(
            &owner.address(),
            d,
            "TEST-CPU",
            spec,
            "lab",
            100,
            &chain,
        );
        let h = c.sign_and_submit(&owner, None, body).unwrap();
        assert_eq!(
            c.wait_final(&h, Duration::from_secs(30)).unwrap()["status"],
            "final"
        );
    }
    let verdict = |k: &Keypair| {
        c.get(&format!("/v1/devices/{}", k.address())).unwrap()["verification"].clone()
    };
    eventually(120, "both devices' first round is decided", || {
        devices.iter().all(|d| verdict(d)["verdict"] != "pending")
    });
    let v: Vec<serde_json::Value> = devices.iter().map(verdict).collect();
    let passed = v.iter().filter(|x| x["verdict"] == "pass").count();
    // The second answer comes after the deadline: late (or, past the checker's grace, none).
    let late = v
        .iter()
        .filter(|x| (x["verdict"] == "fail" || x["verdict"] == "missed") && x["status"] == "jailed")
        .count();
    assert_eq!((passed, late), (1, 1), "{v:?}");
    assert_eq!(
        v[0]["round"], v[1]["round"],
        "both were due in the same round: {v:?}"
    );

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    link.join().unwrap();
    checker_thread.join().unwrap();
    let _ = stop_node.send(());
    node.join().unwrap().expect("the node stops cleanly");
}
