//! `cairn bench`: measured figures beside the bars of docs/design.md §6 and the limit
//! measured in the same run. Four benches: `ledger` (apply and commit, matching, epoch
//! payout, settlement, on synthetic states), `load` (a running node over HTTP), `jobs` (job
//! start latency through a devnet's worker) and `popw` (the solvers and the checker's audit).
//! Timings are what these benches report, never what tests assert.
//!
//! ```
//! // The percentile the benches report: nearest rank over sorted samples.
//! assert_eq!(cairn_bench::percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
//! ```
#![deny(missing_docs)]

mod checker;
mod jobs;
mod load;
mod popw;

use anyhow::{Context, Result, bail};
use cairn_ledger::Ledger;
use cairn_ledger::synthetic::{SYNTHETIC_TIME_MS, device_record, fleet_records};
use cairn_primitives::wire::Encode;
use cairn_primitives::{
    Address, Amount, BoundedString, ClassKind, Device, DeviceSpec, Genesis, GenesisAccount,
    JobSpec, Keypair, MAX_SETTLE_DEVICES, OpenDeployment, Resources, SignedTx, Tx, TxBody,
    namespace, sha256, verify_batch,
};
use cairn_store::Chain;
use clap::{Args, Subcommand};
use rand::{RngExt as _, SeedableRng};
use std::time::Instant;

/// `cairn bench …`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ledger: signed transfers applied and durably committed per second (beside the ed25519
    /// batch-verify rate), matching among N devices, epoch payout for N devices.
    Ledger {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Transfers to apply and commit.
        #[arg(long, default_value_t = 100_000)]
        txs: usize,
        /// Transfers per block.
        #[arg(long, default_value_t = 10_000)]
        block_txs: usize,
        /// Registered devices for the matching and payout figures.
        #[arg(long, default_value_t = 1_000_000)]
        devices: usize,
        /// Deployments to match.
        #[arg(long, default_value_t = 2_000)]
        matches: usize,
    },
    /// A running node: signed transfers streamed over HTTP at a set rate; sustained final tx/s
    /// and submit→final latency.
    Load(load::LoadArgs),
    /// Job start latency (process runtime): lease final → the job's process running,
    /// p50/p99, beside the same sandbox started directly. Starts its own devnet unless
    /// --node is given.
    Jobs(jobs::JobsBenchArgs),
    /// Proof of physical work: the CPU solver's int8 rate beside its kernel's ceiling, the
    /// checker's audit time for the CPU class's answer and a GPU class's (bar < 50 ms CPU),
    /// and with an NVIDIA GPU the cuBLAS int8 rate against its class's peak (bar ≥ 70 %) and
    /// its class's whole challenge.
    Popw(popw::PopwBenchArgs),
    /// Checking: audits per second per checker core (CPU and GPU class answers, each < 50 ms),
    /// bytes one round moves per device, and one round's results for 1,000,000 devices × 3
    /// checkers on chain (share of an hour's block space, bar < 1 %; apply time, bar < 2 s).
    Checker(checker::CheckerBenchArgs),
}

/// Runs the bench `a` names, printing its figures (a table, or JSON with `--json`).
pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        BenchCommand::Ledger {
            json,
            txs,
            block_txs,
            devices,
            matches,
        } => ledger(json, txs, block_txs.max(1), devices, matches),
        BenchCommand::Load(a) => load::run(a),
        BenchCommand::Jobs(a) => jobs::run(a),
        BenchCommand::Popw(a) => popw::run(a),
        BenchCommand::Checker(a) => checker::run(a),
    }
}

/// The deterministic demo key `i` (`cairn ledger generate`'s accounts, the ledger bench's).
pub fn demo_key(i: usize) -> Keypair {
    Keypair::from_seed(sha256(&[b"cairn/demo", &(i as u64).to_be_bytes()]).0)
}

/// The genesis the benches' synthetic states start from: the production defaults with
/// 60-second epochs, starting at [`SYNTHETIC_TIME_MS`].
pub(crate) fn bench_genesis() -> Genesis {
    Genesis::production("cairn-bench", 60, SYNTHETIC_TIME_MS)
}

/// The genesis `cairn ledger generate` and the ledger bench use: [`bench_genesis`] with
/// `accounts` demo keys holding ten thousand tokens each.
pub fn demo_genesis(accounts: usize) -> Genesis {
    let mut g = bench_genesis();
    g.accounts = (0..accounts)
        .map(|i| GenesisAccount {
            address: demo_key(i).address(),
            balance: "10000".into(),
        })
        .collect();
    g
}

/// The minimum fee of [`bench_genesis`] (0.000001 tokens), in base units.
const BENCH_FEE: u64 = 1_000;

/// `body` signed by `key` with `nonce` and the bench genesis's minimum fee.
pub fn sign_tx(key: &Keypair, nonce: u64, body: TxBody, chain_id: &str) -> SignedTx {
    Tx {
        sender: key.public_key(),
        nonce,
        fee: Amount::from_base(BENCH_FEE),
        body,
    }
    .sign(key, chain_id)
}

/// Commits `blocks` blocks of `txs` random signed transfers among `accounts` demo keys to the
/// chain in `data_dir` (created with [`demo_genesis`], or resumed where it left off), calling
/// `committed(height, state_root)` after each commit (`cairn ledger generate`).
pub fn generate(
    data_dir: &std::path::Path,
    blocks: u64,
    txs: usize,
    accounts: usize,
    seed: u64,
    mut committed: impl FnMut(u64, cairn_primitives::Hash) -> std::io::Result<()>,
) -> Result<()> {
    let genesis = demo_genesis(accounts.max(2));
    let mut chain = Chain::open(data_dir, Some(&genesis))
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let keys: Vec<Keypair> = (0..accounts.max(2)).map(demo_key).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ chain.height());
    for _ in 0..blocks {
        let mut nonces: Vec<u64> = keys
            .iter()
            .map(|k| chain.ledger().account(&k.address()).nonce)
            .collect();
        let mut batch: Vec<SignedTx> = Vec::with_capacity(txs);
        for _ in 0..txs {
            let from = rng.random_range(0..keys.len());
            let to = rng.random_range(0..keys.len());
            let body = TxBody::Transfer {
                to: keys[to].address(),
                amount: Amount::from_base(rng.random_range(1..1_000_000)),
            };
            batch.push(sign_tx(&keys[from], nonces[from], body, &genesis.chain_id));
            nonces[from] += 1;
        }
        let ts = chain.ledger().globals().last_timestamp_ms + 1_000;
        let block = chain.ledger().build_block(ts, batch);
        let o = chain.commit(&block)?;
        committed(o.height, o.state_root)?;
    }
    Ok(())
}

fn progress(json: bool, msg: &str) {
    if !json {
        eprintln!("… {msg}");
    }
}

/// The `p` quantile (0–1) of `sorted` samples, by nearest rank; 0 when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ledger(
    json: bool,
    n_txs: usize,
    block_txs: usize,
    n_devices: usize,
    n_matches: usize,
) -> Result<()> {
    if n_txs == 0 || n_devices == 0 {
        bail!("--txs and --devices must be at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // 1. Transfers: sign them all first (that is the clients' work), then apply + commit.
    let n_accounts = 10_000.min(n_txs).max(2);
    progress(
        json,
        &format!("signing {n_txs} transfers from {n_accounts} accounts"),
    );
    let genesis = demo_genesis(n_accounts);
    let keys: Vec<_> = (0..n_accounts).map(demo_key).collect();
    let mut nonces = vec![0u64; n_accounts];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let signed: Vec<SignedTx> = (0..n_txs)
        .map(|i| {
            let from = i % n_accounts;
            let to = rng.random_range(0..n_accounts);
            let tx = sign_tx(
                &keys[from],
                nonces[from],
                TxBody::Transfer {
                    to: keys[to].address(),
                    amount: Amount::from_base(1 + (i as u64 % 1000)),
                },
                &genesis.chain_id,
            );
            nonces[from] += 1;
            tx
        })
        .collect();

    // The physical limit beside it: ed25519 batch verification of the same transactions.
    progress(json, "measuring ed25519 batch verification");
    let ns = namespace("tx", &genesis.chain_id);
    let msgs: Vec<_> = signed.iter().map(|t| t.tx.encode()).collect();
    let sample = signed.len().min(32_768);
    let t = Instant::now();
    for (chunk, m) in signed[..sample].chunks(512).zip(msgs[..sample].chunks(512)) {
        let items: Vec<_> = chunk
            .iter()
            .zip(m)
            .map(|(t, m)| (&t.tx.sender, ns.as_slice(), m.as_ref(), &t.signature))
            .collect();
        if !verify_batch(&items) {
            bail!("benchmark signatures failed to verify");
        }
    }
    let verify_rate_1core = sample as f64 / t.elapsed().as_secs_f64();

    progress(
        json,
        &format!("applying and durably committing {n_txs} transfers in blocks of {block_txs}"),
    );
    let dir = tempfile::tempdir()?;
    let mut chain = Chain::open(dir.path(), Some(&genesis))?;
    let t = Instant::now();
    let mut committed = 0usize;
    let mut failed = 0usize;
    // As a node runs: the next block's signatures are verified (on every core) while this
    // one is applied and written.
    let chain_id = genesis.chain_id.clone();
    std::thread::scope(|s| -> Result<()> {
        let (send, verified) = std::sync::mpsc::sync_channel(1);
        let signed = &signed;
        s.spawn(move || {
            for txs in signed.chunks(block_txs) {
                if send
                    .send((txs, Ledger::verify_txs(txs, &chain_id)))
                    .is_err()
                {
                    return;
                }
            }
        });
        for (txs, v) in verified {
            let ts = chain.ledger().globals().last_timestamp_ms + 1_000;
            let block = chain.ledger().build_block(ts, txs.to_vec());
            let o = chain.commit_verified(&block, v)?;
            failed += o.results.iter().filter(|r| r.error.is_some()).count();
            committed += txs.len();
        }
        Ok(())
    })?;
    let apply_rate = committed as f64 / t.elapsed().as_secs_f64();
    if failed > 0 {
        bail!("{failed} benchmark transfers were rejected");
    }
    drop(chain);

    // 2. Matching and payouts among many devices.
    progress(
        json,
        &format!("building a state with {n_devices} registered devices"),
    );
    let mut ledger = synthetic_fleet(n_devices)?;
    progress(json, &format!("matching {n_matches} deployments"));
    let catalog = ledger.params().classes.clone();
    let mut lat = Vec::with_capacity(n_matches);
    let mut matched = 0usize;
    for _ in 0..n_matches {
        let gpu = rng.random_bool(0.8);
        let classes: Vec<BoundedString<32>> = if gpu {
            (0..rng.random_range(1..4))
                .map(|_| {
                    let c = &catalog[rng.random_range(0..catalog.len() - 1)];
                    BoundedString::new(c.name.clone()).unwrap_or_default()
                })
                .collect()
        } else {
            vec![BoundedString::new("CPU").unwrap_or_default()]
        };
        let o = OpenDeployment {
            resources: Resources {
                classes,
                min_vram_mib: 0,
                gpu_count: u16::from(gpu),
                cpu_cores: 0,
                ram_mib: 0,
            },
            replicas: rng.random_range(1..=8),
            region: rng.random_bool(0.5).then(|| {
                BoundedString::new(REGIONS[rng.random_range(0..REGIONS.len())]).unwrap_or_default()
            }),
            duration_secs: 3600,
            max_price_per_hour: cairn_primitives::PayUnits(rng.random_range(100..2_000)),
            job: JobSpec::default(),
        };
        let seed = Address(sha256(&[&rng.random::<u64>().to_be_bytes()]).0);
        let t = Instant::now();
        let r = ledger.match_deployment(&o, seed);
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if r.is_ok() {
            matched += 1;
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));

    progress(
        json,
        &format!("closing an epoch that pays {n_devices} attested devices"),
    );
    let ts = ledger.params().genesis_time_ms + ledger.params().epoch_ms + 1;
    let block = ledger.build_block(ts, vec![]);
    let t = Instant::now();
    let o = ledger.apply(&block)?;
    let payout_secs = t.elapsed().as_secs_f64();
    let rewarded = o
        .events
        .iter()
        .find_map(|(_, e)| match e {
            cairn_ledger::Event::EpochClosed { record } => Some(record.devices_rewarded),
            _ => None,
        })
        .unwrap_or(0);

    // The close fixes what each device is owed; each is paid when it is next settled. Settle
    // them all through SettleRewards transactions, each owner's devices together (what
    // `cairn settle` sends for a provider).
    progress(
        json,
        &format!(
            "settling the rewards of {n_devices} devices (SettleRewards, {MAX_SETTLE_DEVICES} per transaction)"
        ),
    );
    let settler = fleet_settler();
    let mut addrs: Vec<Address> = (0..n_devices).map(fleet_device).collect();
    addrs.sort_by_key(|a| ledger.device(a).map(|d| d.owner));
    let txs: Vec<SignedTx> = addrs
        .chunks(MAX_SETTLE_DEVICES)
        .enumerate()
        .map(|(i, chunk)| {
            let body = TxBody::SettleRewards {
                devices: chunk.to_vec(),
            };
            sign_tx(&settler, i as u64, body, &ledger.params().chain_id)
        })
        .collect();
    let mut settle_secs = 0.0;
    let mut ts = ts;
    for block_txs in txs.chunks(16) {
        ts += 1;
        let block = ledger.build_block(ts, block_txs.to_vec());
        let t = Instant::now();
        let o = ledger.apply(&block)?;
        settle_secs += t.elapsed().as_secs_f64();
        if let Some(e) = o.results.iter().find_map(|r| r.error.as_ref()) {
            bail!("settling failed: {e}");
        }
    }
    let unsettled = ledger.epoch(0).map_or(0, |r| r.unsettled);
    if unsettled != 0 {
        bail!("{unsettled} devices left unsettled");
    }
    let settle_rate = n_devices as f64 / settle_secs;
    let epoch_secs = ledger.params().epoch_ms as f64 / 1000.0;

    let ok_apply = apply_rate >= 60_000.0 && apply_rate >= 0.5 * verify_rate_1core;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "cores": cores,
                "apply_commit_tx_per_s": apply_rate,
                "ed25519_batch_verify_per_s_one_core": verify_rate_1core,
                "apply_over_verify": apply_rate / verify_rate_1core,
                "apply_bar_met": ok_apply,
                "match_devices": n_devices,
                "match_p50_ms": p50,
                "match_p99_ms": p99,
                "match_filled": matched,
                "match_requests": n_matches,
                "match_bar_met": p99 < 1.0,
                "epoch_payout_devices": rewarded,
                "epoch_payout_s": payout_secs,
                "epoch_bar_met": payout_secs < 1.0,
                "settle_devices": n_devices,
                "settle_s": settle_secs,
                "settle_devices_per_s": settle_rate,
                "settle_share_of_epoch": settle_secs / epoch_secs,
            })
        );
    } else {
        println!("cairn bench ledger ({cores} cores)");
        println!(
            "{:<44} {:>14} {:>22} {:>26}",
            "figure", "measured", "bar (design.md §6)", "limit, same run"
        );
        println!(
            "{:<44} {:>14} {:>22} {:>26}",
            "apply + durable commit, signed transfers",
            format!("{apply_rate:.0} tx/s"),
            "≥ 60000 and ≥ 0.5×limit",
            format!("{verify_rate_1core:.0} verify/s (1 core)")
        );
        println!(
            "{:<44} {:>14} {:>22} {:>26}",
            format!("matching among {n_devices} devices, p50"),
            format!("{p50:.3} ms"),
            "",
            ""
        );
        println!(
            "{:<44} {:>14} {:>22} {:>26}",
            format!("matching among {n_devices} devices, p99"),
            format!("{p99:.3} ms"),
            "< 1 ms",
            format!("{matched}/{n_matches} filled")
        );
        println!(
            "{:<44} {:>14} {:>22} {:>26}",
            format!("epoch close, {rewarded} devices rewarded"),
            format!("{payout_secs:.3} s"),
            "< 1 s",
            ""
        );
        println!(
            "{:<44} {:>14} {:>22} {:>26}",
            format!("settling {n_devices} devices' rewards"),
            format!("{settle_secs:.3} s"),
            "",
            format!(
                "{:.0} devices/s; {:.2}% of a {epoch_secs:.0} s epoch",
                settle_rate,
                100.0 * settle_secs / epoch_secs
            )
        );
        println!(
            "bars met: apply {}, matching {}, epoch {}",
            yes(ok_apply),
            yes(p99 < 1.0),
            yes(payout_secs < 1.0)
        );
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

const REGIONS: [&str; 8] = [
    "us-east",
    "us-west",
    "eu-west",
    "eu-central",
    "ap-south",
    "ap-east",
    "sa-east",
    "af-south",
];

/// The synthetic fleet's `i`th device.
fn fleet_device(i: usize) -> Address {
    Address(sha256(&[b"dev", &(i as u64).to_be_bytes()]).0)
}

/// The funded account that settles the synthetic fleet's rewards.
fn fleet_settler() -> cairn_primitives::Keypair {
    cairn_primitives::Keypair::from_seed([0x5e; 32])
}

/// A state with `n` active, verified devices that passed this epoch (built from records: registering a million
/// devices through signed transactions would measure signing, not matching).
fn synthetic_fleet(n: usize) -> Result<Ledger> {
    let genesis = bench_genesis();
    let params = genesis.validate()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut devices = Vec::with_capacity(n);
    for i in 0..n {
        let addr = fleet_device(i);
        let owner = Address(sha256(&[b"own", &((i % 10_000) as u64).to_be_bytes()]).0);
        let class = rng.random_range(0..params.classes.len());
        let c = &params.classes[class];
        let spec = match c.kind {
            ClassKind::Gpu => DeviceSpec {
                gpu_count: 1,
                vram_mib: c.vram_mib,
                cpu_cores: 16,
                ram_mib: 65_536,
            },
            ClassKind::Cpu => DeviceSpec {
                gpu_count: 0,
                vram_mib: 0,
                cpu_cores: rng.random_range(2..64),
                ram_mib: 32_768,
            },
        };
        let stake = 100_000_000_000u64;
        let region = REGIONS[rng.random_range(0..REGIONS.len())];
        let price = rng.random_range(50..2_000);
        let reputation = rng.random_range(0..1_000_000);
        let d = Device {
            tally_verdict: cairn_primitives::Verdict::Pass,
            tally_uptime: 198,
            ..device_record(owner, class as u16, spec, region, price, reputation, stake)
        };
        devices.push((addr, d));
    }
    let fees = [(fleet_settler().address(), Amount::from_base(1_000_000_000))];
    let records = fleet_records(devices, &fees);
    Ledger::from_records(&genesis, records).map_err(anyhow::Error::msg)
}
