//! Checking when things go wrong: a checker killed mid-epoch, a worker killed mid-round, a
//! worker with no inbound route, bad input to a live checker. A node runs in this process;
//! checkers and workers run as the `cairn` processes an operator starts (or, where the test
//! must speak the wire itself, in this process).

use cairn_client::Client;
use cairn_primitives::{Address, Genesis, GenesisAccount, GenesisChecker, Keypair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Guard, free_port_on, timed};

/// Waits for `f`; on time-out fails with `what` and the processes' logs under `logs`.
fn eventually(secs: u64, logs: &Path, what: &str, f: impl FnMut() -> bool) {
    common::eventually_or(secs, what, f, || common::log_tails(logs, 40));
}

/// A file the process writes its log to (appended), shown when the test times out.
fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("a log file")
}

/// A node in this process, with `checkers` staked at genesis (their keys in `keys`), an
/// owner funded, rounds a few times per `epoch_secs`. Stopped when dropped.
struct Net {
    url: String,
    keys: PathBuf,
    checkers: Vec<(String, SocketAddr)>,
    owner: Keypair,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    node: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(n) = self.node.take() {
            let _ = n.join();
        }
    }
}

impl Net {
    fn start(
        dir: &Path,
        checkers: usize,
        epoch_secs: u64,
        edit: impl FnOnce(&mut Genesis),
    ) -> Self {
        Self::start_on(
            dir,
            std::net::Ipv4Addr::LOCALHOST,
            checkers,
            epoch_secs,
            edit,
        )
    }

    /// As [`Net::start`], with the node's API and the checkers on `ip`.
    fn start_on(
        dir: &Path,
        ip: std::net::Ipv4Addr,
        checkers: usize,
        epoch_secs: u64,
        edit: impl FnOnce(&mut Genesis),
    ) -> Self {
        let keys = dir.join("keys");
        let store = cairn_keystore::Keystore::at(&keys);
        let validator = Keypair::from_seed([1; 32]);
        let owner = store.load_or_create("owner").unwrap();
        let mut g = Genesis::production("cairn-faults", epoch_secs, cairn_node::now_ms());
        g.validators = vec![cairn_primitives::Validator {
            key: validator.address(),
            // One validator: nobody dials its p2p port.
            p2p: "127.0.0.1:0".into(),
        }];
        g.checking.join_delay_secs = 2;
        g.checking.min_round_gap_secs = 5;
        g.checking.rounds_per_epoch = 6;
        g.accounts.push(GenesisAccount {
            address: owner.address(),
            balance: "1000000".into(),
        });
        let mut list = Vec::new();
        for i in 0..checkers {
            let name = format!("checker-{i}");
            let k = store.load_or_create(&name).unwrap();
            let addr = free_port_on(ip);
            g.checkers.push(GenesisChecker {
                address: k.address(),
                endpoint: addr.to_string(),
                stake: g.checking.min_stake.clone(),
            });
            g.accounts.push(GenesisAccount {
                address: k.address(),
                balance: "1000".into(),
            });
            list.push((name, addr));
        }
        edit(&mut g);
        let settings = cairn_node::NodeSettings {
            listen: SocketAddr::from((ip, 0)),
            ..cairn_node::NodeSettings::default()
        };
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let chain = dir.join("chain");
        let node = std::thread::spawn(move || {
            cairn_node::serve(
                &chain,
                Some(&g),
                &validator,
                &settings,
                |url| url_tx.send(url.to_string()).unwrap(),
                async move {
                    let _ = stopped.await;
                },
            )
            .expect("the node runs and stops cleanly");
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the node's API");
        Self {
            url,
            keys,
            checkers: list,
            owner,
            stop: Some(stop),
            node: Some(node),
        }
    }

    /// `cairn checker run` for checker `i`, as its operator would start it.
    fn checker_process(&self, i: usize, data: &Path) -> Guard {
        let (name, addr) = &self.checkers[i];
        Guard(
            Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args(["checker", "run", "--key", name, "--node", &self.url])
                .args(["--listen", &addr.to_string(), "--data-dir"])
                .arg(data.join(name))
                .env("CAIRN_KEYS_DIR", &self.keys)
                .env("CAIRN_CHECKER_HEARTBEAT", "2s")
                .stdout(Stdio::null())
                .stderr(log_file(data, name))
                .spawn()
                .expect("spawn cairn checker run"),
        )
    }

    /// Registers a CPU device for the owner and waits for finality.
    fn register(&self, device: &Keypair, cores: u32, ram_mib: u64) {
        let c = Client::new(&self.url);
        let chain = c.chain().unwrap().0;
        let spec = cairn_primitives::DeviceSpec {
            cpu_cores: cores,
            ram_mib,
            ..cairn_primitives::DeviceSpec::default()
        };
        let body = cairn_ledger::testing::register(
            &self.owner.address(),
            device,
            "CPU",
            spec,
            "lab",
            100,
            &chain,
        );
        let h = c.sign_and_submit(&self.owner, None, body).unwrap();
        assert_eq!(
            c.wait_final(&h, Duration::from_secs(30)).unwrap()["status"],
            "final"
        );
    }

    /// `cairn worker register` (run by `cairn`, which may enter a namespace) for the owner,
    /// with its data in `wdir`; the device it registered.
    fn register_worker(&self, mut cairn: Command, wdir: &Path) -> Address {
        let reg = cairn
            .args(["worker", "register", "--key", "owner", "--data-dir"])
            .arg(wdir)
            .env("CAIRN_NODE", &self.url)
            .env("CAIRN_KEYS_DIR", &self.keys)
            .output()
            .unwrap();
        assert!(
            reg.status.success(),
            "{}",
            String::from_utf8_lossy(&reg.stderr)
        );
        Client::new(&self.url)
            .get(&format!("/v1/devices?owner={}", self.owner.address()))
            .unwrap()["devices"][0]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// `cairn worker run` on `wdir`, its log in `logs/worker.log`.
    fn run_worker(&self, mut cairn: Command, wdir: &Path, logs: &Path) -> Guard {
        Guard(
            cairn
                .args(["worker", "run", "--data-dir"])
                .arg(wdir)
                .env("CAIRN_NODE", &self.url)
                .stdout(Stdio::null())
                .stderr(log_file(logs, "worker"))
                .spawn()
                .unwrap(),
        )
    }

    fn verification(&self, device: &Address) -> serde_json::Value {
        Client::new(&self.url)
            .get(&format!("/v1/devices/{device}"))
            .unwrap()["verification"]
            .clone()
    }
}

/// A worker killed in the middle of a round fails that round only: it is jailed for it, and
/// once restarted it passes the next rounds and is freed after its cool-down.
#[test]
fn a_worker_killed_mid_round_fails_that_round_only() {
    let _turn = timed();
    let dir = tempfile::tempdir().unwrap();
    let net = Net::start(dir.path(), 1, 20, |g| g.checking.jail_epochs = 1);
    let _checker = net.checker_process(0, dir.path());
    let wdir = dir.path().join("worker");
    let dev = net.register_worker(Command::new(env!("CARGO_BIN_EXE_cairn")), &wdir);
    let c = Client::new(&net.url);
    let worker = || net.run_worker(Command::new(env!("CARGO_BIN_EXE_cairn")), &wdir, dir.path());
    let mut w = worker();
    eventually(90, dir.path(), "the device is verified", || {
        net.verification(&dev)["status"] == "verified"
    });
    // The next round: killed while it computes.
    let last = c.get("/v1/rounds/latest").unwrap()["height"]
        .as_u64()
        .unwrap();
    eventually(60, dir.path(), "a new round starts", || {
        c.get("/v1/rounds/latest").unwrap()["height"]
            .as_u64()
            .unwrap()
            > last
    });
    let killed_round = c.get("/v1/rounds/latest").unwrap()["height"]
        .as_u64()
        .unwrap();
    w.0.kill().unwrap();
    w.0.wait().unwrap();
    // Jailed for that round (or, had it answered that one before it died, for the next).
    eventually(60, dir.path(), "jailed for a missed round", || {
        let v = net.verification(&dev);
        v["round"].as_u64() >= Some(killed_round)
            && v["verdict"] != "pending"
            && v["status"] == "jailed"
    });
    let v = net.verification(&dev);
    assert_eq!(
        (v["status"].as_str(), v["consecutive_fails"].as_u64()),
        (Some("jailed"), Some(1)),
        "{v}"
    );
    // Restarted: it passes the rounds after, and is verified again once its jail is over.
    let _w = worker();
    eventually(120, dir.path(), "verified again", || {
        net.verification(&dev)["status"] == "verified"
    });
    let v = net.verification(&dev);
    assert_eq!(v["consecutive_fails"], 0, "{v}");
    assert!(v["round"].as_u64().unwrap() > killed_round);
}

/// What a device that skimps on its work would sign: the true product with one wrong entry
/// in every row (its diagonal, plus one).
struct OneWrongEntryPerRow;

impl cairn_solver::Solver for OneWrongEntryPerRow {
    fn name(&self) -> String {
        "a CPU that answers one wrong entry per row".into()
    }

    fn solve(&self, c: &cairn_popw::Challenge) -> Result<Vec<i32>, cairn_solver::SolveError> {
        let mut v = cairn_solver::Solver::solve(&cairn_solver::CpuSolver, c)?;
        let n = c.n as usize;
        for r in 0..n {
            v[r * n + r] = v[r * n + r].wrapping_add(1);
        }
        Ok(v)
    }
}

/// A device that signs a wrong answer fails its round, and its checkers (real `cairn checker`
/// processes) turn the wrong entry their audit found into a fraud proof that lands: the
/// device is slashed, once, whatever else they post; no checker passed it, so none is struck.
#[test]
fn a_wrong_signed_answer_is_convicted_by_its_checkers_fraud_proof() {
    let _turn = timed();
    let dir = tempfile::tempdir().unwrap();
    let net = Net::start(dir.path(), 3, 60, |_| {});
    let _checkers: Vec<Guard> = (0..3).map(|i| net.checker_process(i, dir.path())).collect();
    let device = Keypair::from_seed([0x5c; 32]);
    net.register(&device, 1, 2_048);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let link = cairn_worker::spawn_checking_with(
        &net.url,
        vec![cairn_worker::ProvingDevice {
            key: device.clone(),
            gpu: None,
        }],
        stop.clone(),
        std::sync::Arc::new(OneWrongEntryPerRow),
    );
    let c = Client::new(&net.url);
    let dev = device.address();
    eventually(120, dir.path(), "the device is slashed", || {
        c.get(&format!("/v1/devices/{dev}")).unwrap()["status"] == "slashed"
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = link.join();
    let d = c.get(&format!("/v1/devices/{dev}")).unwrap();
    assert_ne!(d["verification"]["verdict"], "pass", "{d}");
    // Every checker posts what it journaled (its results, its copy of the proof): none of
    // the results is refused for naming a device slashed since the round started.
    eventually(60, dir.path(), "every checker posted its journal", || {
        net.checkers.iter().all(|(name, _)| {
            std::fs::read_dir(dir.path().join(name).join("pending"))
                .map(|d| d.count() == 0)
                .unwrap_or(false)
        })
    });
    let logs = common::log_tails(dir.path(), 40);
    assert!(logs.contains("fraud proof journaled"), "{logs}");
    assert!(!logs.contains("not_due"), "{logs}");
    for (name, _) in &net.checkers {
        let k = cairn_keystore::Keystore::at(&net.keys).load(name).unwrap();
        let v = c.get(&format!("/v1/checkers/{}", k.address())).unwrap();
        assert_eq!(v["strikes"], 0, "{v}");
    }
}

/// A counter from the checker's Prometheus text.
fn counter(m: &cairn_checker::Metrics, name: &str) -> u64 {
    let line = format!("cairn_checker_{name} ");
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix(&line)?.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// A live checker refuses bad input and keeps serving. A key that is not one of its devices
/// is refused at the handshake, and bytes that are no handshake are dropped. After the
/// handshake, a malformed message, a heartbeat bound to another connection, one for a far
/// epoch, a replayed one and a forged one are each refused with the reason, and the
/// connection is closed. A good heartbeat on a new connection after all that is counted.
#[test]
fn a_live_checker_refuses_bad_input_with_a_reason_and_keeps_serving() {
    use cairn_checker::link;
    use cairn_checker::wire::{Heartbeat, ToChecker, ToDevice};
    use commonware_runtime::Runner as _;
    let _turn = timed();
    let dir = tempfile::tempdir().unwrap();
    // No round: nothing but what the test sends crosses the connection.
    let net = Net::start(dir.path(), 1, 3600, |g| {
        g.checking.min_round_gap_secs = 86_400;
        g.checking.join_delay_secs = 86_400;
    });
    let c = Client::new(&net.url);
    let chain = c.chain().unwrap().0;
    let (name, addr) = net.checkers[0].clone();
    let checker_key = cairn_keystore::Keystore::at(&net.keys).load(&name).unwrap();
    let checker = checker_key.address();
    let device = Keypair::from_seed([40; 32]);
    let stranger = Keypair::from_seed([41; 32]);
    let spec = cairn_primitives::DeviceSpec {
        cpu_cores: 1,
        ram_mib: 1024,
        ..cairn_primitives::DeviceSpec::default()
    };
    let body = cairn_ledger::testing::register(
        &net.owner.address(),
        &device,
        "CPU",
        spec,
        "lab",
        100,
        &chain,
    );
    let h = c.sign_and_submit(&net.owner, None, body).unwrap();
    assert_eq!(
        c.wait_final(&h, Duration::from_secs(30)).unwrap()["status"],
        "final"
    );
    let metrics = std::sync::Arc::new(cairn_checker::Metrics::default());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let daemon = {
        let s = cairn_checker::CheckerSettings {
            node: net.url.clone(),
            listen: addr,
            data_dir: dir.path().join("checker"),
            ..cairn_checker::CheckerSettings::default()
        };
        let (stop, metrics) = (stop.clone(), metrics.clone());
        std::thread::spawn(move || cairn_checker::run(&s, checker_key, stop, metrics))
    };
    // Stops the checker on every path out of the test, failure included.
    struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let stopping = Stop(stop.clone());

    // Bytes that are no handshake: dropped within the handshake's time limit.
    {
        use std::io::{Read, Write};
        let mut s = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(&[0xAB; 4096]);
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the checker answered garbage with {n} bytes");
    }

    let cfg = commonware_runtime::tokio::Config::new().with_worker_threads(1);
    let runner = commonware_runtime::tokio::Runner::new(cfg);
    let refusals: Vec<String> = runner.start(|ctx| async move {
        // A key the chain does not assign to this checker.
        assert!(
            link::dial(&ctx, &stranger, &chain, &checker, addr)
                .await
                .is_err(),
            "a stranger's key is refused at the handshake"
        );
        // The device's own key: admitted once the checker has read its list.
        let connect = || async {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok((tx, mut rx)) = link::dial(&ctx, &device, &chain, &checker, addr).await
                    && let Ok(ToDevice::Hello { epoch, nonce, .. }) =
                        link::recv::<ToDevice>(&mut rx).await
                {
                    return (tx, rx, epoch, nonce);
                }
                assert!(Instant::now() < until, "the device is never admitted");
                commonware_runtime::Clock::sleep(&ctx, Duration::from_millis(200)).await;
            }
        };
        // The refusal's reason, after which the connection is closed.
        let refused = |mut rx: link::LinkReceiver| async move {
            let why = match link::recv::<ToDevice>(&mut rx).await {
                Ok(ToDevice::Refused { reason }) => reason.as_str().to_string(),
                other => panic!("expected a refusal, got {other:?}"),
            };
            assert!(
                link::recv::<ToDevice>(&mut rx).await.is_err(),
                "closed after refusing"
            );
            why
        };
        let mut out = Vec::new();
        let (mut tx, rx, _, _) = connect().await;
        tx.send(vec![0xEE; 40]).await.unwrap();
        out.push(refused(rx).await);
        let (mut tx, rx, epoch, _) = connect().await;
        let hb = Heartbeat::sign(&device, &chain, &checker, epoch, 1, [7; 32]);
        link::send(&mut tx, &ToChecker::Heartbeat(hb))
            .await
            .unwrap();
        out.push(refused(rx).await);
        let (mut tx, rx, epoch, nonce) = connect().await;
        let hb = Heartbeat::sign(&device, &chain, &checker, epoch + 5, 1, nonce);
        link::send(&mut tx, &ToChecker::Heartbeat(hb))
            .await
            .unwrap();
        out.push(refused(rx).await);
        let (mut tx, rx, epoch, nonce) = connect().await;
        let hb = Heartbeat::sign(&device, &chain, &checker, epoch, 3, nonce);
        link::send(&mut tx, &ToChecker::Heartbeat(hb.clone()))
            .await
            .unwrap();
        link::send(&mut tx, &ToChecker::Heartbeat(hb))
            .await
            .unwrap();
        out.push(refused(rx).await);
        let (mut tx, rx, epoch, nonce) = connect().await;
        let forged = Heartbeat::sign(&stranger, &chain, &checker, epoch, 1, nonce);
        link::send(&mut tx, &ToChecker::Heartbeat(forged))
            .await
            .unwrap();
        out.push(refused(rx).await);
        let (mut tx, _rx, epoch, nonce) = connect().await;
        let hb = Heartbeat::sign(&device, &chain, &checker, epoch, 1, nonce);
        link::send(&mut tx, &ToChecker::Heartbeat(hb))
            .await
            .unwrap();
        out
    });
    let expect = [
        "malformed message",
        "another connection's nonce",
        "epoch",
        "replayed",
        "signature",
    ];
    for (got, want) in refusals.iter().zip(expect) {
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
    assert_eq!(refusals.len(), expect.len(), "{refusals:?}");
    eventually(10, dir.path(), "the good heartbeats are counted", || {
        counter(&metrics, "heartbeats") == 2
    });
    assert_eq!(counter(&metrics, "refused_messages"), 5);
    drop(stopping);
    daemon
        .join()
        .expect("the checker's thread")
        .expect("the checker stops cleanly");
}

/// `cairn` as a checker's operator runs it against the test's node.
fn cli(net: &Net, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_NODE", &net.url)
        .env("CAIRN_KEYS_DIR", &net.keys)
        .output()
        .expect("cairn runs")
}

/// `cairn checker register`, `status` and `retire` as an operator uses them: bad endpoints and
/// stakes below the minimum are refused with the reason and change nothing; a registered
/// checker shows its endpoint, stake and status; a second registration is refused; retiring
/// starts the unbonding.
#[test]
fn checker_register_status_and_retire_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::start(dir.path(), 1, 3600, |g| {
        g.checking.min_round_gap_secs = 86_400;
    });
    let c = Client::new(&net.url);
    let me = net.owner.address();
    let record = || c.get(&format!("/v1/checkers/{me}"));
    let refused = |args: &[&str], says: &str| {
        let o = cli(&net, args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(says), "{args:?}: {err:?} should say {says:?}");
    };
    let balance = || c.get(&format!("/v1/accounts/{me}")).unwrap()["balance"].clone();
    let before = balance();

    refused(
        &[
            "checker",
            "register",
            "--key",
            "owner",
            "--endpoint",
            "nowhere",
            "--stake",
            "1000",
        ],
        "endpoint",
    );
    refused(
        &[
            "checker",
            "register",
            "--key",
            "owner",
            "--endpoint",
            "127.0.0.1:7999",
            "--stake",
            "1",
        ],
        "stake",
    );
    refused(
        &[
            "checker",
            "register",
            "--key",
            "owner",
            "--endpoint",
            "127.0.0.1:7999",
            "--stake",
            "lots",
        ],
        "--stake",
    );
    assert!(record().is_err(), "nothing registered");
    assert_eq!(balance(), before, "nothing spent");

    let o = cli(
        &net,
        &[
            "checker",
            "register",
            "--key",
            "owner",
            "--endpoint",
            "127.0.0.1:7999",
            "--stake",
            "1000",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = record().expect("registered");
    assert_eq!(
        (&r["endpoint"], &r["status"]),
        (
            &serde_json::json!("127.0.0.1:7999"),
            &serde_json::json!("active")
        ),
        "{r}"
    );
    let o = cli(&net, &["checker", "status", "--key", "owner"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        me.to_string().as_str(),
        "endpoint    127.0.0.1:7999",
        "stake       1000",
        "status      active",
        // It joins the committee of the epoch after the one it registered in.
        "committee   no",
    ] {
        assert!(text.contains(want), "{text:?} should show {want:?}");
    }
    refused(
        &[
            "checker",
            "register",
            "--key",
            "owner",
            "--endpoint",
            "127.0.0.1:7998",
            "--stake",
            "1000",
        ],
        "already",
    );
    refused(&["checker", "status"], "name the checker");
    refused(
        &[
            "checker",
            "status",
            &Keypair::from_seed([77; 32]).address().to_string(),
        ],
        "no checker",
    );

    let o = cli(&net, &["checker", "retire", "--key", "owner"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(record().unwrap()["status"], "retired");
    let o = cli(&net, &["checker", "status", "--key", "owner", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json");
    assert_eq!(v["checker"]["status"], "retired", "{v}");
    let account = c.get(&format!("/v1/accounts/{me}")).unwrap();
    assert_eq!(
        account["unbonding"].as_array().map(Vec::len),
        Some(1),
        "its stake unbonds: {account}"
    );
}

/// A checker killed mid-epoch costs its devices nothing: the two left agree, every round is
/// still decided, the device is never jailed, and the epoch pays it.
#[test]
fn a_checker_killed_mid_epoch_costs_its_devices_nothing() {
    let _turn = timed();
    let dir = tempfile::tempdir().unwrap();
    let net = Net::start(dir.path(), 3, 30, |_| {});
    let mut checkers: Vec<Guard> = (0..3).map(|i| net.checker_process(i, dir.path())).collect();
    let device = Keypair::from_seed([7; 32]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let link = cairn_worker::spawn_checking(
        &net.url,
        vec![cairn_worker::ProvingDevice {
            key: device.clone(),
            gpu: None,
        }],
        stop.clone(),
    );
    net.register(&device, 2, 8192);
    let dev = device.address();
    eventually(90, dir.path(), "the device is verified", || {
        net.verification(&dev)["status"] == "verified"
    });
    let c = Client::new(&net.url);
    let epoch = c.status().unwrap()["epoch"].as_u64().unwrap();
    // Kill one of its three checkers (no shutdown: SIGKILL).
    checkers[0].0.kill().unwrap();
    checkers[0].0.wait().unwrap();
    let after = net.verification(&dev)["round"].as_u64().unwrap();
    let mut decided_view = serde_json::Value::Null;
    eventually(
        90,
        dir.path(),
        "two more rounds are decided without it",
        || {
            let v = net.verification(&dev);
            assert_ne!(v["status"], "jailed", "the device was jailed: {v}");
            let decided = v["verdict"] == "pass" && v["round"].as_u64().unwrap() > after;
            let done = decided && v["results"].as_array().is_some_and(|r| r.len() == 2);
            if done {
                decided_view = v;
            }
            done
        },
    );
    // The API names each result's checker by its address: the two left, among the device's
    // checkers (the ledger keeps a result's checker as its committee position).
    let killed = cairn_keystore::Keystore::at(&net.keys)
        .load(&net.checkers[0].0)
        .unwrap()
        .address()
        .to_string();
    let v = &decided_view;
    let assigned: Vec<&str> = v["checkers"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default();
    for r in v["results"].as_array().unwrap() {
        let by = r["checker"].as_str().unwrap_or_default();
        assert!(by != killed && assigned.contains(&by), "{v}");
        assert_eq!(
            (&r["code"], &r["uptime"].is_u64()),
            (&"pass".into(), &true),
            "{v}"
        );
    }
    eventually(90, dir.path(), "the epoch closes", || {
        c.status().unwrap()["epoch"].as_u64().unwrap() > epoch
    });
    let d = c.get(&format!("/v1/devices/{dev}")).unwrap();
    assert_eq!(d["verification"]["status"], "verified", "{d}");
    // The epoch pays it: owed by the closed epoch, or already paid to its owner.
    let nonzero = |v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|s| !s.trim_matches(['0', '.']).is_empty())
    };
    eventually(60, dir.path(), "the closed epoch pays the device", || {
        let d = c.get(&format!("/v1/devices/{dev}")).unwrap();
        let r = c
            .get(&format!("/v1/accounts/{}/rewards", net.owner.address()))
            .unwrap();
        nonzero(&d["pending_rewards"]["capacity"])
            || r["rewards"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| nonzero(&e["capacity"]))
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    link.join().unwrap();
    drop(checkers);
}

/// A network namespace joined to this host by one veth pair: from inside, only the host's end
/// of the pair is reachable, and no connection can be opened into it (inbound SYNs are
/// dropped). Deleted when dropped.
struct Netns {
    name: String,
    host_if: String,
    host: std::net::Ipv4Addr,
}

/// Installs iproute2 and iptables with apt-get when either is missing.
fn ensure_ip_tools() {
    use cairn_worker::testing::{apt_install, installed};
    if !installed("ip") || !installed("iptables") {
        apt_install(&["iproute2", "iptables"], "the network namespace test");
    }
}

fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's `ip`");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Netns {
    fn create() -> Self {
        ensure_ip_tools();
        let id = std::process::id();
        let name = format!("cairn-w{id}");
        let (host_if, ns_if) = (format!("vh{id}"), format!("vw{id}"));
        let net = 1 + id % 250;
        let host = std::net::Ipv4Addr::new(10, 201, net as u8, 1);
        let inside = format!("10.201.{net}.2/30");
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host,
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let exec = |args: &[&str]| ip(&[&["netns", "exec", &name][..], args].concat());
        exec(&["ip", "addr", "add", &inside, "dev", &ns_if]);
        exec(&["ip", "link", "set", &ns_if, "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        exec(&[
            "iptables", "-A", "INPUT", "-p", "tcp", "--syn", "-j", "DROP",
        ]);
        ns
    }

    /// `cairn args…` run inside the namespace.
    fn cairn(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_cairn")]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

/// A worker with no inbound route (its own network namespace, reaching only the node and its
/// checker through a veth pair, inbound connections dropped) registers and is verified: it
/// dials its checker, nothing dials it.
#[test]
fn a_worker_with_no_inbound_route_is_verified() {
    let _turn = timed();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::create();
    // Regular rounds every few seconds: the first one after the worker connects verifies it.
    let net = Net::start_on(dir.path(), ns.host, 1, 20, |_| {});
    let _checker = net.checker_process(0, dir.path());
    let wdir = dir.path().join("worker");
    let dev = net.register_worker(ns.cairn(), &wdir);
    let _worker = net.run_worker(ns.cairn(), &wdir, dir.path());
    eventually(
        90,
        dir.path(),
        "the device behind no inbound route is verified",
        || net.verification(&dev)["status"] == "verified",
    );
}
