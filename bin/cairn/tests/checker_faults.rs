//! Checking when things go wrong: a worker killed mid-round. A node runs in this process; checkers and workers run
//! as the `cairn` processes an operator starts (or, where the test must speak the wire itself,
//! in this process).

use cairn_client::Client;
use cairn_primitives::{Address, Genesis, GenesisAccount, GenesisChecker, Keypair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The timed tests take turns (docs/ARCHITECTURE.md, "Timed tests").
fn timed() -> std::fs::File {
    let path = std::env::temp_dir().join("cairn-timed-tests.lock");
    let file = std::fs::File::create(&path).expect("the timed tests' lock file");
    file.lock().expect("the timed tests' lock");
    file
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed and reaped when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
        let keys = dir.join("keys");
        let store = cairn_keystore::Keystore::at(&keys);
        let validator = Keypair::from_seed([1; 32]);
        let owner = store.load_or_create("owner").unwrap();
        let mut g = Genesis::production("cairn-faults", epoch_secs, cairn_node::now_ms());
        g.validators = vec![cairn_primitives::Validator {
            key: validator.address(),
            p2p: free_port().to_string(),
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
            let addr = free_port();
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
            listen: "127.0.0.1:0".parse().unwrap(),
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
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn cairn checker run"),
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
    let reg = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["worker", "register", "--key", "owner", "--data-dir"])
        .arg(&wdir)
        .env("CAIRN_NODE", &net.url)
        .env("CAIRN_KEYS_DIR", &net.keys)
        .output()
        .unwrap();
    assert!(
        reg.status.success(),
        "{}",
        String::from_utf8_lossy(&reg.stderr)
    );
    let c = Client::new(&net.url);
    let dev: Address = c
        .get(&format!("/v1/devices?owner={}", net.owner.address()))
        .unwrap()["devices"][0]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let worker = || {
        Guard(
            Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args(["worker", "run", "--data-dir"])
                .arg(&wdir)
                .env("CAIRN_NODE", &net.url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut w = worker();
    eventually(90, "the device is verified", || {
        net.verification(&dev)["status"] == "verified"
    });
    // The next round: killed while it computes.
    let last = c.get("/v1/rounds/latest").unwrap()["height"]
        .as_u64()
        .unwrap();
    eventually(60, "a new round starts", || {
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
    eventually(60, "the round is decided: missed", || {
        let v = net.verification(&dev);
        v["round"].as_u64() == Some(killed_round) && v["verdict"] != "pending"
    });
    let v = net.verification(&dev);
    assert_eq!(
        (v["status"].as_str(), v["consecutive_fails"].as_u64()),
        (Some("jailed"), Some(1)),
        "{v}"
    );
    // Restarted: it passes the rounds after, and is verified again once its jail is over.
    let _w = worker();
    eventually(120, "verified again", || {
        net.verification(&dev)["status"] == "verified"
    });
    let v = net.verification(&dev);
    assert_eq!(v["consecutive_fails"], 0, "{v}");
    assert!(v["round"].as_u64().unwrap() > killed_round);
}
