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

/// A devnet process, killed on drop (every path, failures included).
struct Devnet {
    child: Child,
    url: String,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Devnet {
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
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let url = url.expect("devnet printed its API URL");
    Devnet { child, url }
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
    // Give the producer a block or two: still nothing moved.
    std::thread::sleep(Duration::from_millis(1_500));
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

/// Runs the CLI against the devnet, as the README tells a user to.
fn cli(net: &Devnet, keys: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_NODE", &net.url)
        .env("CAIRN_KEYS_DIR", keys)
        .output()
        .expect("run cairn")
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
        .env("CAIRN_IDLE_BLOCK_MS", "5000")
        .env("CAIRN_LEADER_TIMEOUT_MS", "2000")
        .output()
        .expect("run node");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("idle_block_ms (5000)") && err.contains("leader_timeout_ms (2000)"),
        "{err}"
    );
}
