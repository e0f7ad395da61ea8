//! `cairn bench checker`: what checking costs. Audits per second per checker core for a CPU
//! class answer and a GPU class's (each audit < 50 ms), the bytes one round moves per device
//! per checker (the messages' encoded sizes at the class's real shapes), and one round's
//! results for N devices × their checkers on chain: bytes beside an hour's block space, and
//! the time the ledger takes to apply them (bar < 2 s; docs/checkers.md).

use crate::popw::audit;
use anyhow::{Context, Result};
use cairn_checker::wire::{ToChecker, ToDevice};
use cairn_ledger::Ledger;
use cairn_ledger::synthetic::{checked_fleet_records, device_record};
use cairn_popw::{Answer, Opening, Params};
use cairn_primitives::wire::{Encode, EncodeSize};
use cairn_primitives::{
    Address, Amount, DeviceClass, DeviceSpec, Hash, Keypair, Receipt, ReceiptFor, ResultCode,
    SignedTx, Tx, TxBody, sha256,
};
use clap::Args;
use serde_json::json;
use std::time::Instant;

/// `cairn bench checker`.
#[derive(Args)]
pub(crate) struct CheckerBenchArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Devices whose round results go on chain.
    #[arg(long, default_value_t = 1_000_000)]
    devices: usize,
    /// Checkers in the committee (each device gets three of them, or all when fewer).
    #[arg(long, default_value_t = 3)]
    checkers: usize,
    /// The GPU class whose answer is audited and sized.
    #[arg(long, default_value = "H200")]
    class: String,
    /// Times each audit is run.
    #[arg(long, default_value_t = 11)]
    runs: usize,
}

/// The bytes of one round between a device and one checker, by message.
fn round_bytes(p: &Params) -> serde_json::Value {
    let k = Keypair::from_seed([1; 32]);
    let tables = p.tables as usize;
    let answer = Answer {
        nonce: [0; 32],
        n: p.n,
        roots: vec![Hash([0; 32]); tables],
        signatures: vec![k.sign(b"x", b"y"); tables],
    };
    let depth = (p.n as f64).log2().ceil() as usize;
    let rows = (p.audit_rows + p.walk_checks * p.walk_rows) as usize;
    let openings = vec![
        Opening {
            table: 0,
            row: 0,
            values: vec![0; p.n as usize],
            path: vec![Hash([0; 32]); depth],
        };
        rows.min(cairn_checker::wire::MAX_OPENED)
    ];
    let receipt = Receipt::sign(
        &k,
        "bench",
        &ReceiptFor {
            checker: Address([0; 32]),
            round: 1,
            nonce: [0; 32],
        },
        Hash([0; 32]),
        Hash([0; 32]),
        Hash([0; 32]),
    );
    let to_device = [
        ToDevice::Round {
            height: 1,
            seed: Hash([0; 32]),
        },
        ToDevice::WalkNonce {
            round: 1,
            nonce: [0; 32],
        },
        ToDevice::Audit {
            round: 1,
            rows: vec![(0, 0); openings.len()],
        },
        ToDevice::Done {
            round: 1,
            code: ResultCode::Pass,
            reason: cairn_checker::wire::reason("passed"),
        },
    ];
    let to_checker = [
        ToChecker::Answer { round: 1, answer },
        ToChecker::Ready { round: 1 },
        ToChecker::Walk {
            round: 1,
            digests: vec![0; p.walk_len()],
        },
        ToChecker::Openings { round: 1, openings },
        ToChecker::Receipt { round: 1, receipt },
    ];
    let down: usize = to_device.iter().map(EncodeSize::encode_size).sum();
    let up: usize = to_checker.iter().map(EncodeSize::encode_size).sum();
    let sizes: Vec<(String, usize)> = to_checker
        .iter()
        .map(|m| {
            let name = match m {
                ToChecker::Answer { .. } => "answer",
                ToChecker::Ready { .. } => "ready",
                ToChecker::Walk { .. } => "walk",
                ToChecker::Openings { .. } => "openings",
                ToChecker::Receipt { .. } => "receipt",
                _ => "other",
            };
            (name.to_string(), m.encode_size())
        })
        .collect();
    json!({"device_to_checker": up, "checker_to_device": down, "total": up + down,
           "by_message": sizes.into_iter().collect::<std::collections::BTreeMap<_, _>>()})
}

/// One round's results for `n` devices and `c` checkers: (signed txs' bytes, apply seconds,
/// assignment build seconds, verdicts reached).
fn on_chain(n: usize, c: usize, quiet: bool) -> Result<serde_json::Value> {
    let mut genesis = crate::bench_genesis();
    genesis.checking.join_delay_secs = 0;
    let checkers: Vec<Keypair> = (0..c)
        .map(|i| Keypair::from_seed(sha256(&[b"bench checker", &(i as u64).to_be_bytes()]).0))
        .collect();
    if !quiet {
        eprintln!("… a state with {n} verified devices and {c} checkers");
    }
    let spec = DeviceSpec {
        gpu_count: 0,
        vram_mib: 0,
        cpu_cores: 8,
        ram_mib: 16_384,
    };
    let devices = (0..n).map(|i| {
        let addr = Address(sha256(&[b"dev", &(i as u64).to_be_bytes()]).0);
        let owner = Address(sha256(&[b"own", &((i % 10_000) as u64).to_be_bytes()]).0);
        (
            addr,
            device_record(owner, 11, spec.clone(), "eu", 100, 500_000, 100_000_000_000),
        )
    });
    let funds: Vec<(Address, Amount)> = checkers
        .iter()
        .map(|k| (k.address(), Amount::from_base(1_000_000_000)))
        .collect();
    let stakes: Vec<(Address, Amount)> = checkers
        .iter()
        .map(|k| (k.address(), Amount::from_base(1_000_000_000_000)))
        .collect();
    let round = 1;
    let records = checked_fleet_records(devices, &funds, &stakes, Some(round));
    let mut ledger = Ledger::from_records(&genesis, records).map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    let lists: Vec<Vec<Address>> = checkers
        .iter()
        .map(|k| ledger.devices_of(&k.address(), ledger.globals().epoch, 0, usize::MAX))
        .collect();
    let assign_secs = start.elapsed().as_secs_f64();
    let chain = genesis.chain_id.clone();
    let mut txs: Vec<SignedTx> = Vec::new();
    for (k, list) in checkers.iter().zip(&lists) {
        for (i, chunk) in list.chunks(cairn_primitives::MAX_RESULTS).enumerate() {
            let body = TxBody::PostResults(cairn_primitives::PostResults {
                round,
                first: (i * cairn_primitives::MAX_RESULTS) as u32,
                count: chunk.len() as u32,
                codes: cairn_primitives::pack_codes(&vec![ResultCode::Pass; chunk.len()]),
                uptime: vec![200; chunk.len()],
                // CPU-class passes: each names the cores its answer's time showed.
                cores: vec![8; chunk.len()],
            });
            txs.push(
                Tx {
                    sender: k.public_key(),
                    nonce: i as u64,
                    fee: genesis_fee(&genesis)?,
                    body,
                }
                .sign(k, &chain),
            );
        }
    }
    let bytes: usize = txs.iter().map(|t| t.encode().len()).sum();
    let ts = ledger.globals().last_timestamp_ms + 1_000;
    let block = ledger.build_block(ts, txs);
    if !quiet {
        eprintln!(
            "… applying {} PostResults transactions ({bytes} bytes)",
            block.txs.len()
        );
    }
    let verified = Ledger::verify_txs(&block.txs, &chain);
    let start = Instant::now();
    let outcome = ledger
        .apply_verified(&block, verified)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let apply_secs = start.elapsed().as_secs_f64();
    if let Some(e) = outcome.results.iter().find_map(|r| r.error.clone()) {
        anyhow::bail!("a PostResults was refused: {e}");
    }
    let verdicts = outcome
        .events
        .iter()
        .filter(|(_, e)| matches!(e, cairn_ledger::Event::Verdict { .. }))
        .count();
    // An hour's block space: the default largest block, one block a second (blocks come
    // faster when there is work: this is the low end).
    let hour = 3_600usize * cairn_node::NodeSettings::default().max_block_bytes;
    Ok(json!({
        "devices": n, "checkers": c, "results": lists.iter().map(Vec::len).sum::<usize>(),
        "transactions": outcome.results.len(), "bytes": bytes,
        "hour_of_block_space_bytes": hour, "share_of_hour": bytes as f64 / hour as f64,
        "share_bar": 0.01,
        "apply_secs": apply_secs, "apply_bar_secs": 2.0,
        "assignment_build_secs": assign_secs, "verdicts": verdicts,
    }))
}

fn genesis_fee(g: &cairn_primitives::Genesis) -> Result<Amount> {
    Amount::parse_decimal(&g.fees.min_fee, g.token.decimals).context("the bench genesis' fee")
}

pub(crate) fn run(a: CheckerBenchArgs) -> Result<()> {
    let quiet = a.json;
    let catalog = DeviceClass::default_catalog();
    let find = |name: &str| {
        catalog
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("the catalog has no class {name}"))
    };
    let cpu = find("CPU")?;
    let gpu = find(&a.class)?;
    // A 16-core, 32 GiB CPU device (8 tables of 2,048²) and one GPU of the class.
    let cpu_params = Params::for_class(cpu, 16, 32_768);
    let gpu_params = Params::for_class(gpu, 1, 0);
    let audits = [
        audit(&cpu_params, "CPU × 16 cores", a.runs, quiet)?,
        audit(&gpu_params, &gpu.name, a.runs, quiet)?,
    ];
    let bytes = [round_bytes(&cpu_params), round_bytes(&gpu_params)];
    let chain = on_chain(a.devices, a.checkers, quiet)?;
    if a.json {
        println!(
            "{}",
            json!({"audits": audits, "round_bytes": {"cpu": bytes[0], "gpu": bytes[1]}, "on_chain": chain})
        );
        return Ok(());
    }
    for au in &audits {
        let ms = au["one_core_ms_median"].as_f64().unwrap_or(f64::NAN);
        println!(
            "audit {:<14} {:.1} ms on one core → {:.0} audits/s per checker core — bar < 50 ms: {}",
            au["answer"].as_str().unwrap_or("?"),
            ms,
            1e3 / ms,
            if ms < 50.0 { "met" } else { "NOT met" }
        );
    }
    for (label, b) in [
        ("CPU × 16 cores", &bytes[0]),
        (gpu.name.as_str(), &bytes[1]),
    ] {
        println!(
            "round bytes {:<8} {:.2} MiB per device per checker ({} device→checker: walk {}, openings {}, answer {}; {} checker→device)",
            label,
            b["total"].as_f64().unwrap_or(0.0) / (1u64 << 20) as f64,
            b["device_to_checker"],
            b["by_message"]["walk"],
            b["by_message"]["openings"],
            b["by_message"]["answer"],
            b["checker_to_device"],
        );
    }
    let f = |k: &str| chain[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "on chain         {} results ({} devices × their checkers) in {} transactions: {:.2} MB, {:.4} % of an hour's block space (bar < 1 %: {}); applied in {:.2} s (bar < 2 s: {}); assignment built in {:.2} s; {} verdicts",
        chain["results"],
        chain["devices"],
        chain["transactions"],
        f("bytes") / 1e6,
        100.0 * f("share_of_hour"),
        if f("share_of_hour") < 0.01 {
            "met"
        } else {
            "NOT met"
        },
        f("apply_secs"),
        if f("apply_secs") < 2.0 {
            "met"
        } else {
            "NOT met"
        },
        f("assignment_build_secs"),
        chain["verdicts"],
    );
    Ok(())
}
