//! The node through a real process and HTTP: `cairn devnet` on a free loopback port, driven by
//! the client library and the CLI as a user would.

use cairn_client::Client;
use cairn_keystore::Keystore;
use cairn_primitives::wire::Encode;
use cairn_primitives::{Address, Amount, Keypair, SignedTx, Tx, TxBody};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::{Guard, eventually, eventually_or};

/// A devnet process, killed on drop (every path, failures included).
struct Devnet {
    child: Child,
    url: String,
    /// Every line devnet wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Devnet {
    start_with(dir, &[])
}

/// A devnet without its built-in worker (tests that count devices and use alice's nonces).
fn start_with(dir: &Path, extra: &[&str]) -> Devnet {
    let mut args = extra.to_vec();
    args.push("--no-worker");
    spawn_devnet(dir, &args)
}

/// An account's compute credits.
fn credits_of(c: &Client, who: &cairn_primitives::Address) -> u64 {
    c.account(who, false).unwrap()["credits"].as_u64().unwrap()
}

/// Waits until devnet's worker has registered this machine and `who` (alice) has been given
/// credits: the state every deploy test starts from.
fn wait_for_worker_and_credits(c: &Client, who: &cairn_primitives::Address) {
    eventually(
        90,
        "devnet's worker registers and alice gets credits",
        || credits_of(c, who) > 0,
    );
}

fn spawn_devnet(dir: &Path, extra: &[&str]) -> Devnet {
    // These tests are not about checking: their device is verified in its join round, and no
    // regular round runs beside what they time (a round a killed worker misses would jail its
    // device and end its lease as failed, not timed out). The checking tests run rounds.
    let mut extra = extra.to_vec();
    if !extra.contains(&"--min-round-gap-secs") {
        extra.extend(["--min-round-gap-secs", "86400"]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "devnet",
            "--listen",
            "127.0.0.1:0",
            "--p2p",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir)
        .args(&extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn cairn devnet");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.expect("read devnet output");
        if let Some(rest) = line.trim().strip_prefix("API:") {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    // Keep reading so the child never blocks on a full pipe.
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let url = url.expect("devnet printed its API URL");
    Devnet { child, url, log }
}

fn declare_oversized(url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "POST /v1/txs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        64 << 20
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn chain_id(c: &Client) -> String {
    c.status().expect("status")["chain_id"]
        .as_str()
        .expect("chain id")
        .to_string()
}

fn transfer(from: &Keypair, nonce: u64, to: Address, amount: u64, chain: &str) -> SignedTx {
    Tx {
        sender: from.public_key(),
        nonce,
        fee: Amount::from_base(1_000),
        body: TxBody::Transfer {
            to,
            amount: Amount::from_base(amount),
        },
    }
    .sign(from, chain)
}

fn balance(c: &Client, a: &Address) -> (u64, u64) {
    let v = c.account(a, false).expect("account");
    (
        v["balance_base"].as_u64().expect("balance"),
        v["nonce"].as_u64().expect("nonce"),
    )
}

#[test]
fn transfers_become_final_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = start(dir.path());
    let c = Client::new(&net.url);
    let keys = Keystore::at(dir.path().join("keys"));
    let alice = keys.load("alice").expect("alice");
    let bob = keys.load("bob").expect("bob").address();
    let chain = chain_id(&c);
    let (a0, _) = balance(&c, &alice.address());
    let (b0, _) = balance(&c, &bob);

    // A transfer becomes final; balances move by exactly amount and fee.
    let tx = transfer(&alice, 0, bob, 5_000_000, &chain);
    let h = c.submit(&tx).expect("submit");
    let v = c.wait_final(&h, Duration::from_secs(20)).expect("final");
    assert_eq!(v["status"], "final", "{v}");
    assert_eq!(balance(&c, &alice.address()), (a0 - 5_000_000 - 1_000, 1));
    assert_eq!(balance(&c, &bob).0, b0 + 5_000_000);

    // Each bad input: a 4xx with its code, and nothing moves.
    let before = (balance(&c, &alice.address()), balance(&c, &bob));
    let mut forged = transfer(&alice, 1, bob, 1, &chain);
    forged.tx.body = TxBody::Transfer {
        to: bob,
        amount: Amount::from_base(2),
    };
    let stranger = Keypair::from_seed([42; 32]);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed bytes",
            "application/octet-stream",
            b"not a transaction".to_vec(),
            400,
            "malformed_tx",
        ),
        (
            "malformed json",
            "application/json",
            b"{\"tx\": 7}".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "bad signature",
            "application/octet-stream",
            forged.encode().to_vec(),
            400,
            "bad_signature",
        ),
        (
            "wrong chain id",
            "application/octet-stream",
            transfer(&alice, 1, bob, 1, "another-chain")
                .encode()
                .to_vec(),
            400,
            "bad_signature",
        ),
        (
            "replayed transaction",
            "application/octet-stream",
            tx.encode().to_vec(),
            409,
            "duplicate",
        ),
        (
            "replayed nonce",
            "application/octet-stream",
            transfer(&alice, 0, bob, 7, &chain).encode().to_vec(),
            400,
            "stale_nonce",
        ),
        (
            "overflowing amount",
            "application/octet-stream",
            transfer(&alice, 1, bob, u64::MAX, &chain).encode().to_vec(),
            400,
            "insufficient_balance",
        ),
        (
            "unknown account",
            "application/octet-stream",
            transfer(&stranger, 0, bob, 1, &chain).encode().to_vec(),
            400,
            "insufficient_balance",
        ),
    ];
    for (what, ct, body, status, code) in cases {
        let (got, v) = c.post_raw(ct, &body).expect(what);
        assert_eq!(got, status, "{what}: {v}");
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
    }
    // Oversized: refused from its declared length, before the body is read (a raw socket, since
    // an HTTP client would still be writing the body when the node answers and closes).
    let (status, body) = declare_oversized(&net.url);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");
    let bad_address = c
        .get("/v1/accounts/not-an-address")
        .expect_err("bad address");
    assert!(
        matches!(bad_address, cairn_client::Error::Api { status: 400, ref code, .. } if code == "bad_address")
    );
    let unknown_tx = c
        .tx_status(&cairn_primitives::Hash([9; 32]))
        .expect_err("unknown tx");
    assert!(matches!(
        unknown_tx,
        cairn_client::Error::Api { status: 404, .. }
    ));
    // Two more blocks executed (any refused transaction would have been in them): still
    // nothing moved.
    let height = |c: &Client| c.status().expect("status")["height"].as_u64().expect("h");
    let now = height(&c);
    eventually(30, "two more blocks", || height(&c) >= now + 2);
    assert_eq!((balance(&c, &alice.address()), balance(&c, &bob)), before);

    // The OpenAPI document and the operational endpoints answer.
    let doc = c.get("/v1/openapi.json").expect("openapi");
    assert!(doc["paths"]["/v1/txs"]["post"].is_object());
    let status = c.status().expect("status");
    assert!(status["height"].as_u64().expect("height") >= 2);
}

#[test]
fn devnet_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (height, alice_balance) = {
        let net = start(dir.path());
        let c = Client::new(&net.url);
        let keys = Keystore::at(dir.path().join("keys"));
        let alice = keys.load("alice").expect("alice");
        let bob = keys.load("bob").expect("bob").address();
        let h = c
            .submit(&transfer(&alice, 0, bob, 1, &chain_id(&c)))
            .expect("submit");
        let v = c.wait_final(&h, Duration::from_secs(20)).expect("final");
        (
            v["height"].as_u64().expect("height"),
            balance(&c, &alice.address()),
        )
    };
    let net = start(dir.path());
    let c = Client::new(&net.url);
    let alice = Keystore::at(dir.path().join("keys"))
        .load("alice")
        .expect("alice");
    assert!(c.status().expect("status")["height"].as_u64().expect("h") >= height);
    assert_eq!(balance(&c, &alice.address()), alice_balance);
}

/// Ctrl-C stops devnet along its one shutdown path: the worker drains (a running job finishes
/// and its lease is settled on chain), then the oracle stops, then the node; the job's
/// finished lease is there when devnet resumes.
#[test]
fn ctrl_c_drains_devnet_s_worker_then_stops_the_oracle_and_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = spawn_devnet(dir.path(), &[]);
    let keys = dir.path().join("keys");
    let c = Client::new(&net.url);
    let alice = Keystore::at(&keys).load("alice").unwrap().address();
    wait_for_worker_and_credits(&c, &alice);
    deploy_sh(&net, &keys, "sleep 3; echo drained");
    eventually(60, "the job starts", || {
        c.get("/v1/deployments/0").unwrap()["leases"][0]["started"] == true
    });
    let killed = Command::new("kill")
        .args(["-INT", &net.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // The job sleeps 3 s; the worker's drain allows 30.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = net.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "devnet did not stop within 60 s of SIGINT:\n{}",
            net.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit:?}");
    // The reader thread may still hold the last lines: wait for the one devnet ends with.
    eventually(10, "devnet's last line", || {
        net.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("stopped cleanly at height"))
    });
    let log = net.log.lock().unwrap().clone();
    let at = |what: &str| {
        log.iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("devnet never said '{what}':\n{}", log.join("\n")))
    };
    let order = [
        at("devnet: stopping the worker"),
        at("devnet: worker stopped"),
        at("devnet: oracle stopped; stopping the node"),
        at("stopped cleanly at height"),
    ];
    assert!(order.is_sorted(), "{order:?}:\n{}", log.join("\n"));
    drop(net);
    // The drained job's lease was settled before the node stopped.
    let net = start(dir.path());
    let c = Client::new(&net.url);
    let dep = c.get("/v1/deployments/0").unwrap();
    assert_eq!(dep["leases"][0]["state"], "finished", "{dep}");
    assert_eq!(dep["leases"][0]["exit_code"], 0, "{dep}");
    let logs = cli_ok(&net, &keys, &["jobs", "logs", "--key", "alice", "0"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("drained"),
        "{}",
        String::from_utf8_lossy(&logs.stdout)
    );
}

/// Runs the CLI against the devnet, as the README tells a user to.
fn cli(net: &Devnet, keys: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_NODE", &net.url)
        .env("CAIRN_KEYS_DIR", keys)
        .output()
        .expect("run cairn")
}

/// [`cli`], which must succeed.
fn cli_ok(net: &Devnet, keys: &Path, args: &[&str]) -> std::process::Output {
    let out = cli(net, keys, args);
    assert!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits up to 60 s for deployment `id` to finish.
fn wait_finished(c: &Client, id: u64, what: &str) {
    eventually(60, what, || {
        c.get(&format!("/v1/deployments/{id}")).unwrap()["status"] == "finished"
    });
}

#[test]
fn the_cli_transfers_reads_and_explains_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = start(dir.path());
    let keys = dir.path().join("keys");
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let status = cli(&net, &keys, &["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(s["chain_id"], "cairn-devnet");

    let bob = Keystore::at(&keys)
        .load("bob")
        .expect("bob")
        .address()
        .to_string();
    let sent = cli(
        &net,
        &keys,
        &[
            "account", "transfer", "--key", "alice", "--to", &bob, "--amount", "12.5", "--json",
        ],
    );
    assert!(sent.status.success(), "{}", text(&sent));
    let v: serde_json::Value = serde_json::from_slice(&sent.stdout).expect("transfer json");
    assert_eq!(v["status"], "final", "{v}");
    let hash = v["hash"].as_str().expect("hash").to_string();

    let st = cli(&net, &keys, &["tx", "status", &hash]);
    assert!(st.status.success(), "{}", text(&st));
    assert!(text(&st).contains("final at height"), "{}", text(&st));

    let bal = cli(
        &net,
        &keys,
        &["account", "balance", "--key", "bob", "--prove"],
    );
    assert!(bal.status.success(), "{}", text(&bal));
    assert!(text(&bal).contains("balance  1000012.5"), "{}", text(&bal));
    assert!(text(&bal).contains("proof    verified"), "{}", text(&bal));

    // Bad input: a clear message and a failing exit, nothing sent.
    for (args, says) in [
        (
            vec![
                "account", "transfer", "--key", "alice", "--to", &bob, "--amount", "1.2.3",
            ],
            "--amount",
        ),
        (
            vec![
                "account", "transfer", "--key", "nobody", "--to", &bob, "--amount", "1",
            ],
            "nobody",
        ),
        (
            vec![
                "account", "transfer", "--key", "alice", "--to", &bob, "--amount", "5000000",
            ],
            "insufficient_balance",
        ),
        (
            vec![
                "account",
                "transfer",
                "--key",
                "alice",
                "--to",
                &bob,
                "--amount",
                "99999999999",
            ],
            "too large",
        ),
        (vec!["tx", "status", "abc"], "not hex"),
    ] {
        let o = cli(&net, &keys, &args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let alice = Keystore::at(&keys).load("alice").expect("alice").address();
    let c = Client::new(&net.url);
    assert_eq!(
        balance(&c, &alice).1,
        1,
        "only the one good transfer moved alice's nonce"
    );
}

/// Transfers stream over HTTP while the node is killed with SIGKILL and restarted, twice:
/// every transaction the API reported final is still final at the same height and block, and
/// `cairn ledger replay` rebuilds exactly the state root the node reports.
#[test]
fn sigkill_under_load_loses_nothing_reported_final() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keystore::at(dir.path().join("keys"));
    let mut net = start(dir.path());
    let alice = keys.load("alice").expect("alice");
    let bob = keys.load("bob").expect("bob").address();
    let chain = chain_id(&Client::new(&net.url));
    // hash -> (height, block hash) as the API reported it final.
    let reported: Arc<Mutex<HashMap<String, (u64, String)>>> = Arc::default();
    let url = Arc::new(Mutex::new(net.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let (reported, url, stop) = (reported.clone(), url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut nonce = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let c = Client::new(&url.lock().expect("url").clone());
                // The next nonce the node knows (a kill may have dropped pending ones).
                let Ok(next) = c.next_nonce(&alice.address()) else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                nonce = nonce.max(next).min(next + 8);
                let txs: Vec<SignedTx> = (nonce..nonce + 8)
                    .map(|n| transfer(&alice, n, bob, 1, &chain))
                    .collect();
                nonce += 8;
                let hashes: Vec<String> = txs.iter().map(|t| t.hash().to_string()).collect();
                let body = serde_json::json!({
                    "txs": txs.iter().map(|t| hex::encode(t.encode())).collect::<Vec<_>>()
                })
                .to_string();
                if c.post_raw("application/json", body.as_bytes()).is_err() {
                    continue;
                }
                for h in hashes {
                    let Ok(v) = c.get(&format!("/v1/txs/{h}")) else {
                        continue;
                    };
                    if v["status"] == "final" {
                        let height = v["height"].as_u64().expect("height");
                        let block = c
                            .get(&format!("/v1/blocks/{height}"))
                            .map(|b| b["hash"].as_str().unwrap_or_default().to_string())
                            .unwrap_or_default();
                        reported.lock().expect("map").insert(h, (height, block));
                    }
                }
            }
        })
    };
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1_500));
        net.child.kill().expect("SIGKILL");
        net.child.wait().expect("reap");
        let before = reported.lock().expect("map").len();
        assert!(
            before > 0,
            "round {round}: nothing was final before the kill"
        );
        net = start(dir.path());
        *url.lock().expect("url") = net.url.clone();
    }
    std::thread::sleep(Duration::from_millis(1_000));
    stop.store(true, Ordering::Relaxed);
    streamer.join().expect("streamer");

    let c = Client::new(&net.url);
    let reported = reported.lock().expect("map").clone();
    for (h, (height, block)) in &reported {
        let v = c.get(&format!("/v1/txs/{h}")).expect("tx status");
        assert_eq!(v["status"], "final", "{h} was reported final, now {v}");
        assert_eq!(v["height"].as_u64(), Some(*height), "{h} moved");
        if !block.is_empty() {
            let b = c.get(&format!("/v1/blocks/{height}")).expect("block");
            assert_eq!(
                b["hash"].as_str(),
                Some(block.as_str()),
                "block {height} changed"
            );
        }
    }
    drop(net); // SIGKILL once more; replay reads what is on disk.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["ledger", "replay", "--json"])
        .arg(dir.path().join("chain"))
        .output()
        .expect("run replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replay: serde_json::Value = serde_json::from_slice(&out.stdout).expect("replay json");
    let height = replay["blocks"].as_u64().expect("blocks");
    // The node, restarted, reports the same root after that block as the replay rebuilt.
    let net = start(dir.path());
    let b = Client::new(&net.url)
        .get(&format!("/v1/blocks/{height}"))
        .expect("block");
    assert_eq!(
        b["state_root_after"], replay["state_root"],
        "replay disagrees with the node"
    );
    assert!(
        reported.len() >= 8,
        "only {} transfers were reported final",
        reported.len()
    );
}

/// `cairn bench load` against a devnet, as the README runs it (small numbers): it funds its
/// senders, streams, and prints the figures beside the bars.
#[test]
fn bench_load_reports_final_throughput_and_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = start(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "bench",
            "load",
            "--node",
            &net.url,
            "--rate",
            "400",
            "--duration",
            "2",
        ])
        .args(["--accounts", "8", "--batch", "50", "--json"])
        .env("CAIRN_KEYS_DIR", dir.path().join("keys"))
        .output()
        .expect("run bench load");
    assert!(
        out.status.success(),
        "bench load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["submitted"], 800);
    assert_eq!(v["finalized"], 800, "{v}");
    assert_eq!(v["refused"], 0);
    assert!(v["final_tx_per_s"].as_f64().expect("tps") > 0.0);
    assert!(
        v["latency_p99_ms"].as_f64().expect("p99") >= v["latency_p50_ms"].as_f64().expect("p50")
    );
    assert_eq!(v["bar_final_tx_per_s"], 20_000);
    assert!(
        v["limit_ed25519_verify_per_s_1core"]
            .as_f64()
            .expect("limit")
            > 0.0
    );
}

/// Settings that would make consensus skip every idle leader are refused, naming both.
#[test]
fn node_refuses_an_idle_wait_longer_than_the_leader_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["node", "--data-dir"])
        .arg(dir.path())
        .env("CAIRN_IDLE_BLOCK", "5s")
        .env("CAIRN_LEADER_TIMEOUT", "2s")
        .output()
        .expect("run node");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("idle_block (5s)") && err.contains("leader_timeout (2s)"),
        "{err}"
    ); // A duration that is not one is refused, naming the variable and its value.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["node", "--data-dir"])
        .arg(dir.path())
        .env("CAIRN_IDLE_BLOCK", "soon")
        .output()
        .expect("run node");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAIRN_IDLE_BLOCK=soon"), "{err}");
}

/// One GET over a fresh connection: status and body.
fn http_get(url: &str, path: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Asserts that GET `path` answers `status` with the error `code`.
fn assert_error(url: &str, path: &str, status: u16, code: &str) {
    let (st, v) = http_get(url, path);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (status, Some(code)),
        "{path}: {v}"
    );
}

/// Subscribes to `/v1/events?{query}`; every line the stream sends lands in the vector.
fn subscribe(url: &str, query: &str) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::Write;
    let addr = url.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        s,
        "GET /v1/events?{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("write");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

/// Signs and submits `body` from `key` and waits until it is final; panics if it failed.
fn run_tx(c: &Client, key: &Keypair, body: TxBody) -> cairn_primitives::Hash {
    let chain = chain_id(c);
    let nonce = balance(c, &key.address()).1;
    let tx = Tx {
        sender: key.public_key(),
        nonce,
        fee: Amount::from_base(1_000),
        body,
    }
    .sign(key, &chain);
    let h = c.submit(&tx).expect("admitted");
    let v = c.wait_final(&h, Duration::from_secs(20)).expect("final");
    assert_eq!(v["status"], "final", "{v}");
    h
}

/// Devices, deployments, leases, epochs, rewards, stats and the event stream through HTTP;
/// stake, delegate, undelegate and credits through the CLI; every path in the OpenAPI
/// document answers; Ctrl-C ends open event streams and stops the devnet cleanly.
#[test]
fn devices_deployments_epochs_stakes_credits_and_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Epochs of 6 s, and regular rounds (at least 10 s apart): its device is verified by the
    // first round after its link connects, and a round's results land within the next epoch.
    let mut net = start_with(
        dir.path(),
        &["--epoch-secs", "6", "--min-round-gap-secs", "10"],
    );
    let keys = dir.path().join("keys");
    let store = Keystore::at(&keys);
    let (alice, bob) = (store.load("alice").unwrap(), store.load("bob").unwrap());
    let c = Client::new(&net.url);
    let chain = chain_id(&c);
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // Three CPU devices, owned by alice; the stream watches the first and alice.
    let devices: Vec<Keypair> = (0..3u8).map(|i| Keypair::from_seed([40 + i; 32])).collect();
    let watched = devices[0].address();
    let events = subscribe(
        &net.url,
        &format!("device={watched}&account={}", alice.address()),
    );
    // The cheapest device answers its checkers (the worker's link, run here for its key
    // alone, connecting once it is registered): once verified it can be matched; the other
    // two never connect and stay unverified.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let link = cairn_worker::spawn_checking(
        &net.url,
        vec![cairn_worker::ProvingDevice {
            key: devices[0].clone(),
            gpu: None,
        }],
        stop.clone(),
    );
    std::thread::sleep(Duration::from_millis(300));
    for (i, d) in devices.iter().enumerate() {
        let spec = cairn_primitives::DeviceSpec {
            cpu_cores: 1,
            ram_mib: 2048,
            ..Default::default()
        };
        let region = if i == 2 { "us-east" } else { "eu-west" };
        let body = cairn_ledger::testing::register(
            &alice.address(),
            d,
            "CPU",
            spec,
            region,
            1_000 + i as u64,
            &chain,
        );
        run_tx(&c, &alice, body);
    }

    // Devices: filters, pagination by cursor, one device, clear errors.
    let (st, v) = http_get(&net.url, "/v1/devices?class=CPU&status=active");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["devices"].as_array().unwrap().len(), 3, "{v}");
    let (_, v) = http_get(&net.url, "/v1/devices?region=us-east");
    assert_eq!(v["devices"][0]["address"], devices[2].address().to_string());
    let (_, v) = http_get(&net.url, "/v1/devices?class=H100-SXM");
    assert!(v["devices"].as_array().unwrap().is_empty());
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, v) = http_get(&net.url, &format!("/v1/devices?limit=1{cursor}"));
        paged.extend(
            v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["address"].clone()),
        );
        match v["next"].as_str() {
            Some(n) => cursor = format!("&after={n}"),
            None => break,
        }
    }
    let mut want: Vec<_> = devices.iter().map(|d| d.address()).collect();
    want.sort();
    let want: Vec<_> = want
        .iter()
        .map(|a| serde_json::json!(a.to_string()))
        .collect();
    assert_eq!(
        paged, want,
        "pages walk every device once, in address order"
    );
    for (path, code) in [
        ("/v1/devices?class=NOPE", "unknown_class"),
        ("/v1/devices?status=asleep", "bad_query"),
        ("/v1/devices?limit=0", "bad_query"),
        ("/v1/devices?limit=5000", "bad_query"),
        ("/v1/devices?owner=xyz", "bad_address"),
    ] {
        assert_error(&net.url, path, 400, code);
    }
    let (st, v) = http_get(&net.url, &format!("/v1/devices/{watched}"));
    assert_eq!(st, 200);
    assert_eq!(v["owner"], alice.address().to_string());
    assert_eq!(v["class"], "CPU");
    assert_eq!(v["status"], "active");
    assert_error(
        &net.url,
        &format!("/v1/devices/{}", bob.address()),
        404,
        "unknown_device",
    );

    // Credits through the CLI, once the devnet's demo oracle has priced the token ($1.00).
    eventually(30, "the demo oracle's price", || {
        http_get(&net.url, "/v1/stats").1["oracle_price_micro_usd"].as_u64() == Some(1_000_000)
    });
    let bought = cli(
        &net,
        &keys,
        &["credits", "buy", "--key", "bob", "--amount", "10", "--json"],
    );
    assert!(bought.status.success(), "{}", text(&bought));
    assert_eq!(
        c.account(&bob.address(), false).unwrap()["credits"],
        1_000_000,
        "10 tokens at $1 are $10: 1,000,000 credits of $0.00001"
    );

    // The oracle's own command: a new price becomes the median; bad prices and keys that are
    // not oracles get clear errors.
    let o = cli(
        &net,
        &keys,
        &["oracle", "submit", "--key", "oracle", "--usd", "1.25"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        http_get(&net.url, "/v1/stats").1["oracle_price_micro_usd"],
        1_250_000
    );
    for (args, says) in [
        (["--key", "oracle", "--usd", "0"], "above zero"),
        (["--key", "oracle", "--usd", "cheap"], "price 'cheap'"),
        (["--key", "alice", "--usd", "9"], "not_oracle"),
    ] {
        let o = cli(
            &net,
            &keys,
            &[&["oracle", "submit"][..], &args[..]].concat(),
        );
        assert!(!o.status.success());
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let o = cli(
        &net,
        &keys,
        &["oracle", "submit", "--key", "oracle", "--usd", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));

    eventually_or(
        90,
        "the cheapest device is verified",
        || {
            http_get(&net.url, &format!("/v1/devices/{watched}")).1["verification"]["status"]
                == "verified"
        },
        || {
            let (_, d) = http_get(&net.url, &format!("/v1/devices/{watched}"));
            let log = net.log.lock().unwrap();
            let said: Vec<&str> = log
                .iter()
                .filter(|l| !l.contains("not connected"))
                .map(String::as_str)
                .collect();
            format!("{}\ndevnet said:\n{}", d["verification"], said.join("\n"))
        },
    );
    let (_, unverified) = http_get(&net.url, &format!("/v1/devices/{}", devices[1].address()));
    assert_eq!(
        unverified["verification"]["status"], "unverified",
        "{unverified}"
    );

    // A deployment, its lease on the cheapest device, and both through the API.
    let open = TxBody::OpenDeployment(cairn_primitives::OpenDeployment {
        resources: cairn_primitives::Resources {
            classes: vec![cairn_primitives::BoundedString::new("CPU").unwrap()],
            ..Default::default()
        },
        replicas: 1,
        region: None,
        duration_secs: 3_600,
        max_price_per_hour: cairn_primitives::PayUnits(5_000),
        job: cairn_primitives::JobSpec {
            image: None,
            command: vec![cairn_primitives::BoundedString::new("true").unwrap()],
            env: vec![],
            network: false,
        },
    });
    run_tx(&c, &bob, open);
    let (st, v) = http_get(
        &net.url,
        &format!("/v1/deployments?owner={}&status=open", bob.address()),
    );
    assert_eq!(st, 200, "{v}");
    let id = v["deployments"][0]["id"]
        .as_u64()
        .expect("bob's deployment");
    let (_, d) = http_get(&net.url, &format!("/v1/deployments/{id}"));
    assert_eq!(d["owner"], bob.address().to_string());
    let lease = &d["leases"][0];
    assert_eq!(
        lease["device"],
        watched.to_string(),
        "the cheapest device: {d}"
    );
    assert_eq!(lease["state"], "active");
    let lid = lease["id"].as_u64().unwrap();
    let (st, l) = http_get(&net.url, &format!("/v1/leases/{lid}"));
    assert_eq!((st, l["deployment"].as_u64()), (200, Some(id)));
    let (_, dv) = http_get(&net.url, &format!("/v1/devices/{watched}"));
    assert_eq!(dv["lease"]["id"].as_u64(), Some(lid));
    for (path, code) in [
        ("/v1/deployments/999", "unknown_deployment"),
        ("/v1/leases/999", "unknown_lease"),
        ("/v1/epochs/999999", "unknown_epoch"),
    ] {
        assert_error(&net.url, path, 404, code);
    }

    // Stake through the CLI: delegate, see it, undelegate all of it, see it unbonding.
    let dev = watched.to_string();
    let run = |args: &[&str]| {
        let o = cli(&net, &keys, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        o
    };
    run(&[
        "delegate", "--key", "carol", "--device", &dev, "--amount", "50",
    ]);
    let o = run(&["stake", "--key", "carol", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stake json");
    assert_eq!(v["stakes"][0]["device"], dev.as_str(), "{v}");
    assert_eq!(v["stakes"][0]["tokens"], "50", "{v}");
    run(&["undelegate", "--key", "carol", "--device", &dev, "--all"]);
    let o = run(&["stake", "--key", "carol", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stake json");
    assert!(v["stakes"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["unbonding"][0]["amount"], "50", "{v}");
    let o = cli(
        &net,
        &keys,
        &["undelegate", "--key", "carol", "--device", &dev, "--all"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("holds no shares"), "{}", text(&o));

    // Epochs close every 6 s: records, the epoch in progress, rewards (none: nobody attested).
    eventually(20, "a closed epoch", || {
        http_get(&net.url, "/v1/epochs/0").1["status"] == "closed"
    });
    let (st, v) = http_get(&net.url, "/v1/epochs?limit=1");
    assert_eq!(st, 200);
    assert_eq!(v["current"]["status"], "in_progress");
    assert_eq!(v["epochs"].as_array().unwrap().len(), 1);
    assert!(v["epochs"][0]["minted"] != "0", "{v}");
    let (st, v) = http_get(
        &net.url,
        &format!("/v1/accounts/{}/rewards", alice.address()),
    );
    assert_eq!(st, 200, "{v}");
    assert!(
        v["rewards"].as_array().unwrap().is_empty(),
        "nobody attested: {v}"
    );
    // Nothing to settle, then a device that does not exist: a clear error.
    let o = cli(&net, &keys, &["settle", "--key", "alice"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("nothing to settle"), "{}", text(&o));
    let nobody = Keypair::from_seed([99; 32]).address().to_string();
    let o = cli(
        &net,
        &keys,
        &["settle", "--key", "alice", "--device", &nobody],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown_device"), "{}", text(&o));

    // Stats add up with what was done.
    let (_, s) = http_get(&net.url, "/v1/stats");
    assert_eq!(s["devices"]["active"], 3, "{s}");
    assert_eq!(s["devices"]["by_class"]["CPU"]["leased"], 1, "{s}");
    assert_eq!(s["deployments"]["open"], 1, "{s}");
    assert_eq!(s["leases"]["active"], 1, "{s}");

    // The stream saw the watched device's registration, lease and delegation, and alice's
    // transactions, each as it finalized.
    eventually(10, "the filtered event stream", || {
        let l = events.lock().unwrap();
        [
            "event: block",
            "event: device_registered",
            "event: deployment_opened",
            "event: delegated",
            "event: undelegated",
            "event: tx",
        ]
        .iter()
        .all(|k| l.iter().any(|x| x == k))
    });
    {
        let l = events.lock().unwrap();
        let registered = l
            .iter()
            .filter(|x| x.starts_with("data:") && x.contains("device_registered"))
            .count();
        assert_eq!(registered, 3, "alice registered three devices");
        assert!(
            !l.iter().any(|x| x == "event: credits_bought"),
            "bob's purchase concerns neither alice nor the watched device"
        );
        let txs = l.iter().filter(|x| *x == "event: tx").count();
        assert_eq!(txs, 3, "alice signed three transactions");
    }

    // Every path the OpenAPI document names is served.
    let (_, doc) = http_get(&net.url, "/v1/openapi.json");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 17, "{}", paths.len());
    let tx = run_tx(
        &c,
        &alice,
        TxBody::Transfer {
            to: bob.address(),
            amount: Amount::from_base(1),
        },
    );
    let checker = http_get(&net.url, "/v1/committee").1["members"][0]["checker"]
        .as_str()
        .expect("a committee member")
        .to_string();
    let round = http_get(&net.url, "/v1/rounds/latest").1["height"]
        .as_u64()
        .expect("a round");
    for (p, item) in paths {
        // Logs need a signed request: the jobs test reads them as their owner and as another.
        if item.get("get").is_none()
            || p == "/v1/events"
            || p == "/metrics"
            || p == "/healthz"
            || p.ends_with("/logs")
        {
            continue;
        }
        let who = if p.starts_with("/v1/devices/") {
            dev.clone()
        } else if p.starts_with("/v1/checkers/") {
            checker.clone()
        } else {
            alice.address().to_string()
        };
        let height = if p.starts_with("/v1/rounds/") {
            round.to_string()
        } else {
            "1".to_string()
        };
        let path = p
            .replace("{address}", &who)
            .replace("{hash}", &tx.to_string())
            .replace("{height}", &height)
            .replace("{epoch}", "0")
            .replace("{id}", "0");
        let (st, v) = http_get(&net.url, &path);
        assert_eq!(st, 200, "{path}: {v}");
    }

    // A checker reads every round since the last it handled, and its list for a round's
    // epoch: the open one or the one before, no other.
    let (_, rounds) = http_get(&net.url, &format!("/v1/rounds?after={}", round - 1));
    assert_eq!(rounds["rounds"][0]["height"], round, "{rounds}");
    let open = http_get(&net.url, "/v1/status").1["epoch"]
        .as_u64()
        .unwrap();
    let (st, v) = http_get(
        &net.url,
        &format!("/v1/checkers/{checker}/devices?epoch={open}"),
    );
    assert_eq!((st, &v["epoch"]), (200, &serde_json::json!(open)), "{v}");
    let (st, v) = http_get(
        &net.url,
        &format!("/v1/checkers/{checker}/devices?epoch={}", open + 2),
    );
    assert_eq!(
        (st, &v["error"]["code"]),
        (404, &serde_json::json!("unknown_epoch")),
        "{v}"
    );

    // Ctrl-C with a stream still open: the stream ends and the devnet exits cleanly.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    link.join().expect("the checking link stops");
    let killed = Command::new("kill")
        .args(["-INT", &net.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = net.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "devnet did not stop within 15 s of SIGINT with an event stream open"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit:?}");
}

/// The customer's path end to end through real processes: devnet's worker registers this
/// machine; alice deploys a command with the CLI; it runs in the sandbox; she reads its
/// output, bob is refused; the lease finishes, the provider's device is paid for the time
/// served, alice's unused deposit comes back, and every credit adds up.
#[test]
fn deploy_runs_the_job_and_only_its_owner_reads_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let net = spawn_devnet(dir.path(), &["--lease-timeout-secs", "10"]);
    let keys = dir.path().join("keys");
    let c = Client::new(&net.url);
    let alice = Keystore::at(&keys).load("alice").unwrap().address();
    let credits = |c: &Client| credits_of(c, &alice);
    wait_for_worker_and_credits(&c, &alice);
    let before = credits(&c);
    let out = deploy_sh(&net, &keys, "echo hello; sleep 1; echo done");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("deployment 0"), "{stdout}");
    let quote = String::from_utf8_lossy(&out.stderr);
    assert!(quote.contains("quote: 1 device(s) at 36000"), "{quote}");
    wait_finished(&c, 0, "the job runs and its lease finishes");
    let dep = c.get("/v1/deployments/0").unwrap();
    let lease = &dep["leases"][0];
    assert_eq!(lease["state"], "finished", "{dep}");
    assert_eq!(lease["exit_code"], 0, "{dep}");
    assert!(lease["started"].as_bool().unwrap(), "{dep}");
    // At least the second it slept, at 36,000 credits an hour: 10 credits.
    let paid = dep["paid"].as_u64().unwrap();
    assert!(paid >= 10, "{dep}");
    assert_eq!(
        paid + dep["refunded"].as_u64().unwrap(),
        dep["deposit"].as_u64().unwrap()
    );
    assert_eq!(
        credits(&c),
        before - paid,
        "only the time served is consumed"
    );
    let device = lease["device"].as_str().unwrap();
    let d = c.get(&format!("/v1/devices/{device}")).unwrap();
    assert_eq!(d["epoch_tally"]["work"].as_u64().unwrap(), paid, "{d}");
    // When epoch 0 closes (devnet epochs last 60 s), the device is owed a share of the work
    // pool; carol, devnet's provider, collects it with `cairn settle`.
    eventually(90, "epoch 0 closes and the device is owed", || {
        !c.get(&format!("/v1/devices/{device}")).unwrap()["pending_rewards"].is_null()
    });
    let owed = c.get(&format!("/v1/devices/{device}")).unwrap()["pending_rewards"].clone();
    assert_eq!(owed["epoch"], 0, "{owed}");
    assert_ne!(owed["work"], "0", "{owed}");
    let carol = Keystore::at(&keys).load("carol").unwrap().address();
    let rewards = |c: &Client| c.get(&format!("/v1/accounts/{carol}/rewards")).unwrap();
    assert!(rewards(&c)["rewards"].as_array().unwrap().is_empty());
    let settled = cli(&net, &keys, &["settle", "--key", "carol"]);
    assert!(
        settled.status.success(),
        "{}",
        String::from_utf8_lossy(&settled.stderr)
    );
    let r = rewards(&c);
    assert_eq!(r["rewards"][0]["epoch"], 0, "{r}");
    assert_eq!(r["rewards"][0]["work"], owed["work"], "{r}");
    let d = c.get(&format!("/v1/devices/{device}")).unwrap();
    assert!(d["pending_rewards"].is_null(), "{d}");
    assert_eq!(d["epoch_tally"]["work"], 0, "{d}");
    let again = cli(&net, &keys, &["settle", "--key", "carol"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to settle"));
    let logs = cli(&net, &keys, &["jobs", "logs", "--key", "alice", "0"]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "hello\ndone\n");
    let refused = cli(&net, &keys, &["jobs", "logs", "--key", "bob", "0"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("403") && why.contains("owner"), "{why}");
    // Unsigned: 401.
    let (status, v) = http_get(&net.url, "/v1/leases/0/logs");
    assert_eq!(status, 401, "{v}");
    let shown = cli(&net, &keys, &["jobs", "list", "--key", "alice"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("finished"));

    // A quote for what cannot be had, or a malformed one: a clear error, nothing booked.
    let q = |body: serde_json::Value| c.post_json("/v1/quote", &body).unwrap_err().to_string();
    let e =
        q(serde_json::json!({"replicas": 5, "duration_secs": 60, "max_price_per_hour": 1_000_000}));
    assert!(e.contains("not_enough_capacity"), "{e}");
    let e = q(serde_json::json!({"replicas": 0, "duration_secs": 60, "max_price_per_hour": 1}));
    assert!(e.contains("bad_replicas"), "{e}");
    let e = q(serde_json::json!({"replicas": 1}));
    assert!(e.contains("bad_request"), "{e}");

    // Extend, then stop, from the CLI: the deposit grows by the extra hour, and stopping
    // refunds everything not served.
    deploy_sh(&net, &keys, "sleep 1000; : cairn-stopped-job-marker");
    eventually_or(
        30,
        "the second job starts",
        || c.get("/v1/deployments/1").unwrap()["leases"][0]["started"] == true,
        || {
            let d = c.get("/v1/deployments/1").unwrap();
            let dev = d["leases"][0]["device"].as_str().unwrap_or("?").to_string();
            format!(
                "{d}\ndevice account: {}\nstatus: {}\ndevnet said:\n{}",
                http_get(&net.url, &format!("/v1/accounts/{dev}")).1,
                http_get(&net.url, "/v1/status").1,
                net.log.lock().unwrap().join("\n")
            )
        },
    );
    let deposit = |c: &Client| {
        c.get("/v1/deployments/1").unwrap()["deposit"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(deposit(&c), 36_000);
    let ext = cli(
        &net,
        &keys,
        &["jobs", "extend", "--key", "alice", "1", "--hours", "1"],
    );
    assert!(
        ext.status.success(),
        "{}",
        String::from_utf8_lossy(&ext.stderr)
    );
    assert_eq!(deposit(&c), 72_000);
    let bad = cli(
        &net,
        &keys,
        &["jobs", "extend", "--key", "bob", "1", "--hours", "1"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not_deployment_owner"));
    let stop = cli(&net, &keys, &["jobs", "stop", "--key", "alice", "1"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let dep = c.get("/v1/deployments/1").unwrap();
    assert_eq!(dep["status"], "closed", "{dep}");
    eventually(10, "the worker stops the closed deployment's job", || {
        Command::new("pgrep")
            .args(["-f", "cairn-stopped-job-marker"])
            .output()
            .unwrap()
            .stdout
            .is_empty()
    });
    assert_eq!(
        dep["paid"].as_u64().unwrap() + dep["refunded"].as_u64().unwrap(),
        72_000
    );
}

/// `cairn deploy --key alice --yes -- sh -c SCRIPT`, which must succeed.
fn deploy_sh(net: &Devnet, keys: &Path, script: &str) -> std::process::Output {
    cli_ok(
        net,
        keys,
        &[
            "deploy", "--key", "alice", "--yes", "--", "sh", "-c", script,
        ],
    )
}

/// A worker killed with SIGKILL mid-job: the sandbox dies with it, the lease times out after
/// the genesis lease timeout, the provider is paid up to the worker's last report and alice
/// gets the rest back; the restarted worker neither runs the job again nor reports it twice,
/// and stops cleanly on SIGTERM.
#[test]
fn a_killed_worker_s_lease_times_out_and_is_never_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let net = start_with(dir.path(), &["--lease-timeout-secs", "6"]);
    let keys = dir.path().join("keys");
    let wdir = dir.path().join("worker");
    let c = Client::new(&net.url);
    let alice = Keystore::at(&keys).load("alice").unwrap().address();
    let reg = cli(
        &net,
        &keys,
        &[
            "worker",
            "register",
            "--key",
            "carol",
            "--data-dir",
            wdir.to_str().unwrap(),
        ],
    );
    assert!(
        reg.status.success(),
        "{}",
        String::from_utf8_lossy(&reg.stderr)
    );
    eventually(
        60,
        "alice buys credits once the oracle's price is in",
        || {
            cli(
                &net,
                &keys,
                &["credits", "buy", "--key", "alice", "--amount", "10"],
            )
            .status
            .success()
        },
    );
    let worker = || {
        Guard(
            Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args(["worker", "run", "--heartbeat-secs", "1", "--data-dir"])
                .arg(&wdir)
                .env("CAIRN_NODE", &net.url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn cairn worker run"),
        )
    };
    let mut w = worker();
    let carol = Keystore::at(&keys).load("carol").unwrap().address();
    eventually(90, "the worker's device is verified", || {
        c.get(&format!("/v1/devices?owner={carol}"))
            .is_ok_and(|v| v["devices"][0]["verification"]["status"] == "verified")
    });
    deploy_sh(&net, &keys, "sleep 120; : cairn-killed-worker-marker");
    eventually(30, "the job starts", || {
        c.get("/v1/leases/0").unwrap()["started"] == true
    });
    // Killed once a heartbeat past the start has landed (some served time is on record).
    eventually(30, "a heartbeat lands", || {
        let l = c.get("/v1/leases/0").unwrap();
        l["last_seen_ms"].as_u64().unwrap() >= l["start_ms"].as_u64().unwrap() + 1_500
    });
    let killed_pid = w.id();
    w.kill().unwrap();
    w.wait().unwrap();
    // The job's cgroups (named after the worker's pid), which the killed worker could not
    // remove.
    let groups = || {
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("find /sys/fs/cgroup -maxdepth 6 -name 'cairn-lease-0-{killed_pid}-*'"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!groups().is_empty(), "the job ran in a cgroup");
    let running = |marker: &str| {
        !Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .unwrap()
            .stdout
            .is_empty()
    };
    eventually(5, "the sandbox dies with its worker", || {
        !running("cairn-killed-worker-marker")
    });
    let credits_before_end = c.account(&alice, false).unwrap()["credits"]
        .as_u64()
        .unwrap();
    eventually(30, "the lease times out", || {
        c.get("/v1/leases/0").unwrap()["state"] == "timed_out"
    });
    let lease = c.get("/v1/leases/0").unwrap();
    let (paid, deposit) = (
        lease["paid"].as_u64().unwrap(),
        c.get("/v1/deployments/0").unwrap()["deposit"]
            .as_u64()
            .unwrap(),
    );
    // Paid up to the last heartbeat (≥ 1.5 s at 36,000/h = 15 credits), not for the silence.
    let served = lease["last_seen_ms"].as_u64().unwrap() - lease["start_ms"].as_u64().unwrap();
    assert_eq!(paid, 36_000 * served / 3_600_000, "{lease}");
    assert!(paid >= 15 && paid < deposit, "{lease}");
    let dep = c.get("/v1/deployments/0").unwrap();
    assert_eq!(
        dep["paid"].as_u64().unwrap() + dep["refunded"].as_u64().unwrap(),
        deposit
    );
    let credits_after = c.account(&alice, false).unwrap()["credits"]
        .as_u64()
        .unwrap();
    assert_eq!(credits_after, credits_before_end + (deposit - paid));
    // Restarted: it finds the interrupted lease in its journal and does not run it again.
    let mut w = worker();
    // It has dealt with the lease once its journal says so; only then can absence show.
    let journal = wdir.join("leases.json");
    eventually(30, "the restarted worker settles its journal", || {
        std::fs::read_to_string(&journal).is_ok_and(|j| j.contains("\"0\":\"interrupted\""))
    });
    assert!(!running("cairn-killed-worker-marker"), "the job ran twice");
    assert_eq!(
        c.get("/v1/leases/0").unwrap(),
        lease,
        "nothing reported after the end"
    );
    // And it removed the cgroups its dead predecessor left.
    assert_eq!(groups(), "", "stale cgroups");
    // SIGTERM: it drains (nothing running) and exits cleanly.
    Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = w.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = w.kill();
            panic!("the worker did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}

/// `cairn deploy --image` end to end: devnet's worker runs the image on a real engine (the
/// podman service the worker's test harness starts, with an image built from busybox-static),
/// its owner reads the output, the lease finishes and pays, and no container is left.
#[test]
fn deploy_with_an_image_runs_in_a_container() {
    let podman = cairn_worker::testing::Podman::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = podman.socket();
    let net = spawn_devnet(dir.path(), &["--docker-socket", socket.to_str().unwrap()]);
    let keys = dir.path().join("keys");
    let c = Client::new(&net.url);
    let alice = Keystore::at(&keys).load("alice").unwrap().address();
    wait_for_worker_and_credits(&c, &alice);
    cli_ok(
        &net,
        &keys,
        &[
            "deploy",
            "--key",
            "alice",
            "--yes",
            "--image",
            cairn_worker::testing::IMAGE,
            "--env",
            "WHO=container",
            "--",
            "sh",
            "-c",
            "echo hello from the $WHO; grep -c : /proc/net/dev",
        ],
    );
    wait_finished(&c, 0, "the container runs and its lease finishes");
    let dep = c.get("/v1/deployments/0").unwrap();
    assert_eq!(dep["leases"][0]["exit_code"], 0, "{dep}");
    let logs = cli(&net, &keys, &["jobs", "logs", "--key", "alice", "0"]);
    // No network unless asked: the loopback is its only interface.
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "hello from the container\n1\n"
    );
    assert!(podman.containers().is_empty(), "{:?}", podman.containers());
}

/// Hostile jobs against the whole daemon: a log flood is stopped at the worker's output
/// limit, a fork bomb and a job that sleeps forever end with their leases, each lease is
/// reported failed with the reason, and the worker goes on serving the next customer.
#[test]
fn hostile_jobs_are_stopped_and_the_worker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let net = spawn_devnet(dir.path(), &["--lease-timeout-secs", "10"]);
    let keys = dir.path().join("keys");
    let c = Client::new(&net.url);
    let alice = Keystore::at(&keys).load("alice").unwrap().address();
    wait_for_worker_and_credits(&c, &alice);
    let deploy = |hours: &str, script: &str| {
        cli_ok(
            &net,
            &keys,
            &[
                "deploy", "--key", "alice", "--yes", "--hours", hours, "--", "sh", "-c", script,
            ],
        );
    };
    let ended = |id: u64| {
        let d = c.get(&format!("/v1/deployments/{id}")).unwrap();
        d["leases"][0]["state"] != "active" && d["leases"][0]["state"] != "pending"
    };
    // 1. A log flood: stopped at the worker's 1 MiB output limit, long before its lease ends.
    deploy("1", "yes flood");
    eventually(60, "the flood is stopped", || ended(0));
    let d = c.get("/v1/deployments/0").unwrap();
    let lease = &d["leases"][0];
    assert_eq!(lease["state"], "failed", "{d}");
    assert!(
        lease["reason"].as_str().unwrap_or("").contains("log limit"),
        "{d}"
    );
    // The customer reads why from the CLI.
    let shown = cli(&net, &keys, &["jobs", "show", "0"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("failed: its output passed the log limit"),
        "{shown}"
    );
    // 2. A fork bomb, and 3. a job that sleeps forever: both end with their 9-second leases.
    deploy(
        "0.0025",
        "b() { b | b & }; b; sleep 1000; : cairn-hostile-bomb",
    );
    eventually(60, "the fork bomb's lease ends", || ended(1));
    deploy("0.0025", "sleep 100000; : cairn-hostile-sleep");
    eventually(60, "the sleeper's lease ends", || ended(2));
    for id in [1, 2] {
        let d = c.get(&format!("/v1/deployments/{id}")).unwrap();
        let paid = d["paid"].as_u64().unwrap();
        assert_eq!(
            paid + d["refunded"].as_u64().unwrap(),
            d["deposit"].as_u64().unwrap(),
            "{d}"
        );
    }
    // 4. The worker still serves.
    deploy("1", "echo still serving");
    wait_finished(&c, 3, "the next job finishes");
    let logs = cli(&net, &keys, &["jobs", "logs", "--key", "alice", "3"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "still serving\n");
    // Only a deployment that asks gets the network: the flag is on chain and the job sees
    // the host's interfaces (more than the loopback of its own namespace).
    cli_ok(
        &net,
        &keys,
        &[
            "deploy",
            "--key",
            "alice",
            "--yes",
            "--network",
            "--",
            "sh",
            "-c",
            "grep -c : /proc/net/dev",
        ],
    );
    wait_finished(&c, 4, "the network job finishes");
    assert_eq!(c.get("/v1/deployments/4").unwrap()["job"]["network"], true);
    assert_eq!(c.get("/v1/deployments/3").unwrap()["job"]["network"], false);
    let logs = cli(&net, &keys, &["jobs", "logs", "--key", "alice", "4"]);
    let interfaces: u32 = String::from_utf8_lossy(&logs.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(interfaces > 1, "{interfaces}");
    let left = Command::new("pgrep")
        .args(["-f", "cairn-hostile|sleep 100000"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "sandboxed processes survived: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
