//! `cairn bench load`: signed transfers from many accounts streamed at a node over HTTP at a
//! set rate; prints the sustained finalized tx/s and submit→final latency beside the bars
//! (docs/design.md §6: ≥ 20,000 tx/s, p99 < 1 s on one validator), and beside the rate this
//! machine signs-and-verifies ed25519 on one core, measured in the same run.

use crate::{percentile, progress};
use anyhow::{Context, Result, bail};
use cairn_client::Client;
use cairn_keystore::Keystore;
use cairn_primitives::wire::Encode;
use cairn_primitives::{Amount, Hash, Keypair, SignedTx, Tx, TxBody, namespace, verify_batch};
use clap::Args;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `cairn bench load`.
#[derive(Args)]
pub(crate) struct LoadArgs {
    /// The node's API URL.
    #[arg(
        long = "node",
        env = "CAIRN_NODE",
        default_value = "http://127.0.0.1:7650"
    )]
    url: String,
    /// Transfers per second to submit.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds to submit for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Sending accounts (funded by --key first).
    #[arg(long, default_value_t = 500)]
    accounts: usize,
    /// Transactions per HTTP request.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Concurrent HTTP senders.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// The funding key's name in the key store (devnet: alice).
    #[arg(long, default_value = "alice")]
    key: String,
    /// Key store directory.
    #[arg(long, env = "CAIRN_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Submits `txs` as one JSON batch; retries while the node says it is full (503). Returns how
/// many were refused for another reason.
fn post(client: &Client, txs: &[SignedTx]) -> Result<u64> {
    let body = json!({
        "txs": txs.iter().map(|t| hex::encode(t.encode())).collect::<Vec<_>>()
    })
    .to_string();
    loop {
        let (code, v) = client.post_raw("application/json", body.as_bytes())?;
        match code {
            200..=299 => {
                let refused = v["results"]
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|x| x.get("error").is_some()).count());
                return Ok(refused as u64);
            }
            503 => std::thread::sleep(Duration::from_millis(20)),
            _ => bail!("node refused a batch ({code}): {v}"),
        }
    }
}

fn wait_nonce(client: &Client, who: &Keypair, nonce: u64, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    while client.next_nonce(&who.address())? < nonce {
        if t.elapsed() > timeout {
            bail!("funding transfers not final after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn run(a: LoadArgs) -> Result<()> {
    if a.rate == 0 || a.duration == 0 || a.accounts == 0 || a.batch == 0 {
        bail!("--rate, --duration, --accounts and --batch must be at least 1");
    }
    let client = Client::new(&a.url);
    let status = client
        .status()
        .with_context(|| format!("reaching the node at {}", a.url))?;
    let chain_id = status["chain_id"].as_str().unwrap_or_default().to_string();
    let min_fee = status["min_fee_base"].as_u64().unwrap_or(1_000);
    let funder = a
        .keys_dir
        .clone()
        .map_or_else(Keystore::default_location, Keystore::at)
        .load(&a.key)
        .with_context(|| format!("loading the funding key '{}'", a.key))?;
    let total = (a.rate * a.duration) as usize;
    let per_account = total.div_ceil(a.accounts) as u64;

    // The physical limit beside the figure: ed25519 batch verification on one core.
    let limit = {
        let k = Keypair::from_seed([9; 32]);
        let sample: Vec<SignedTx> = (0..4_000u64)
            .map(|n| transfer(&k, n, &k, 1, min_fee, &chain_id))
            .collect();
        let ns = namespace("tx", &chain_id);
        let msgs: Vec<Vec<u8>> = sample.iter().map(|t| t.tx.encode().to_vec()).collect();
        let t = Instant::now();
        let mut ok = true;
        for (chunk, m) in sample.chunks(512).zip(msgs.chunks(512)) {
            let items: Vec<_> = chunk
                .iter()
                .zip(m)
                .map(|(s, m)| (&s.tx.sender, ns.as_slice(), m.as_slice(), &s.signature))
                .collect();
            ok &= verify_batch(&items);
        }
        let rate = sample.len() as f64 / t.elapsed().as_secs_f64();
        if !ok {
            bail!("self-check: batch verification failed");
        }
        rate
    };

    // Fund the senders.
    progress(
        a.json,
        &format!("funding {} accounts from '{}'", a.accounts, a.key),
    );
    let senders: Vec<Keypair> = (0..a.accounts)
        .map(|_| Keypair::from_seed(rand::random::<[u8; 32]>()))
        .collect();
    let each = per_account * (min_fee + 1) + min_fee;
    let mut nonce = client.next_nonce(&funder.address())?;
    for chunk in senders.chunks(512) {
        let txs: Vec<SignedTx> = chunk
            .iter()
            .map(|s| {
                let t = transfer(&funder, nonce, s, each, min_fee, &chain_id);
                nonce += 1;
                t
            })
            .collect();
        let refused = post(&client, &txs)?;
        if refused > 0 {
            bail!(
                "{refused} funding transfers refused (is '{}' funded?)",
                a.key
            );
        }
        wait_nonce(&client, &funder, nonce, Duration::from_secs(60))?;
    }

    // Sign everything before the clock starts: the generator measures the node, not itself.
    progress(a.json, &format!("signing {total} transfers"));
    let sink = funder.clone();
    let mut txs: Vec<SignedTx> = Vec::with_capacity(total);
    for n in 0..per_account {
        for s in &senders {
            if txs.len() == total {
                break;
            }
            txs.push(transfer(s, n, &sink, 1, min_fee, &chain_id));
        }
    }
    let batches: Vec<Vec<SignedTx>> = txs.chunks(a.batch).map(<[SignedTx]>::to_vec).collect();
    let interval = Duration::from_secs_f64(a.batch as f64 / a.rate as f64);

    progress(
        a.json,
        &format!(
            "submitting {total} transfers at {} tx/s for {} s ({} per request, {} senders)",
            a.rate, a.duration, a.batch, a.senders
        ),
    );
    let sent: Arc<Mutex<HashMap<Hash, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let finals: Arc<Mutex<Vec<(Instant, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let height0 = client.status()?["height"].as_u64().unwrap_or(0);

    // The observer: reads each new block and matches its transactions to their submit times.
    let observer = {
        let (client, sent, finals, done) = (
            Client::new(&a.url),
            sent.clone(),
            finals.clone(),
            done.clone(),
        );
        std::thread::spawn(move || -> Result<()> {
            let mut next = height0 + 1;
            while !done.load(Ordering::Relaxed) {
                let top = client.status()?["height"].as_u64().unwrap_or(0);
                while next <= top {
                    let b = client.get(&format!("/v1/blocks/{next}"))?;
                    let now = Instant::now();
                    let hashes = b["txs"].as_array().cloned().unwrap_or_default();
                    let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
                    let mut f = finals.lock().unwrap_or_else(|e| e.into_inner());
                    for h in hashes {
                        if let Some(t) = h
                            .as_str()
                            .and_then(|s| s.parse::<Hash>().ok())
                            .and_then(|h| sent.remove(&h))
                        {
                            f.push((now, (now - t).as_secs_f64()));
                        }
                    }
                    next += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    };

    let batches = Arc::new(batches);
    let workers: Vec<_> = (0..a.senders.max(1))
        .map(|w| {
            let (client, sent, refused, batches) = (
                Client::new(&a.url),
                sent.clone(),
                refused.clone(),
                batches.clone(),
            );
            let senders = a.senders.max(1);
            std::thread::spawn(move || -> Result<()> {
                let mut i = w;
                while i < batches.len() {
                    let due = start + interval * i as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let now = Instant::now();
                    {
                        let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
                        for t in &batches[i] {
                            s.insert(t.hash(), now);
                        }
                    }
                    refused.fetch_add(post(&client, &batches[i])?, Ordering::Relaxed);
                    i += senders;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    let submitted_in = start.elapsed();
    // Wait for the stragglers to finalize (or give up after 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = sent.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        if left <= refused.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Relaxed);
    observer
        .join()
        .map_err(|_| anyhow::anyhow!("the observer panicked"))??;

    let finals = finals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let finalized = finals.len();
    // Sustained: the finalization rate from the first block that carried load to the last.
    let first = finals.iter().map(|(t, _)| *t).min().unwrap_or(start);
    let last = finals.iter().map(|(t, _)| *t).max().unwrap_or(start);
    let span = (last - first).as_secs_f64().max(1e-3);
    let tps = finalized as f64 / span;
    let mut lat: Vec<f64> = finals.iter().map(|(_, l)| *l).collect();
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let out = json!({
        "node": a.url,
        "offered_tx_per_s": a.rate,
        "submitted": total,
        "submitted_in_s": submitted_in.as_secs_f64(),
        "refused": refused.load(Ordering::Relaxed),
        "finalized": finalized,
        "final_tx_per_s": tps,
        "bar_final_tx_per_s": 20_000,
        "latency_p50_ms": p50 * 1e3,
        "latency_p99_ms": p99 * 1e3,
        "bar_latency_p99_ms": 1_000,
        "limit_ed25519_verify_per_s_1core": limit,
    });
    if a.json {
        println!("{out}");
        return Ok(());
    }
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "load against {} ({} accounts, {} s)",
        a.url, a.accounts, a.duration
    );
    println!(
        "  submitted        {total} transfers in {:.2} s, offered {} tx/s ({} refused)",
        submitted_in.as_secs_f64(),
        a.rate,
        out["refused"]
    );
    println!(
        "  final tx/s       {:>10.0}   bar ≥ 20,000: {}   limit: ed25519 verify {:.0}/s on 1 core",
        tps,
        mark(tps >= 20_000.0),
        limit
    );
    println!(
        "  submit→final     p50 {:.1} ms, p99 {:.1} ms   bar p99 < 1,000 ms: {}",
        p50 * 1e3,
        p99 * 1e3,
        mark(p99 < 1.0)
    );
    if finalized < total {
        println!(
            "  {} transfers were not final within 30 s of the last submit",
            total - finalized
        );
    }
    Ok(())
}

fn transfer(
    from: &Keypair,
    nonce: u64,
    to: &Keypair,
    amount: u64,
    fee: u64,
    chain_id: &str,
) -> SignedTx {
    Tx {
        sender: from.public_key(),
        nonce,
        fee: Amount::from_base(fee),
        body: TxBody::Transfer {
            to: to.address(),
            amount: Amount::from_base(amount),
        },
    }
    .sign(from, chain_id)
}
