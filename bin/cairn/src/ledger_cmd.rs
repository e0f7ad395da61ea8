//! `cairn ledger`: replay and inspect a data directory, and a block generator for tests.

use anyhow::{Context, Result};
use cairn_store::Chain;
use clap::{Args, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct LedgerArgs {
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Re-apply every block from genesis and check each state root against the committed one.
    Replay {
        /// The node's data directory.
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the last committed block, state root and supply of a data directory.
    Status {
        /// The node's data directory.
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Commit blocks of random signed transfers between demo accounts (for tests and demos;
    /// resumes where the directory left off). Prints "committed HEIGHT ROOT" after each commit.
    Generate {
        /// The data directory.
        data_dir: PathBuf,
        /// Blocks to commit.
        #[arg(long, default_value_t = 10)]
        blocks: u64,
        /// Transfers per block.
        #[arg(long, default_value_t = 100)]
        txs: usize,
        /// Demo accounts.
        #[arg(long, default_value_t = 256)]
        accounts: usize,
        /// Random seed for the transfers.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub(crate) fn run(a: LedgerArgs) -> Result<()> {
    match a.command {
        LedgerCommand::Replay { data_dir, json } => {
            let started = std::time::Instant::now();
            let mut last = std::time::Instant::now();
            let report = cairn_store::replay(&data_dir, |h, of| {
                if !json && (last.elapsed().as_millis() > 500 || h == of) {
                    eprint!("\rreplayed {h}/{of} blocks");
                    last = std::time::Instant::now();
                }
            })
            .with_context(|| format!("replaying {}", data_dir.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true,
                        "blocks": report.blocks,
                        "txs": report.txs,
                        "state_root": report.state_root.to_string(),
                        "secs": started.elapsed().as_secs_f64(),
                    })
                );
            } else {
                eprintln!();
                println!(
                    "ok: {} blocks and {} transactions replayed from genesis in {:.2}s; every state root matches; final root {}",
                    report.blocks,
                    report.txs,
                    started.elapsed().as_secs_f64(),
                    report.state_root
                );
            }
        }
        LedgerCommand::Status { data_dir, json } => {
            let chain = Chain::open(&data_dir, None)
                .with_context(|| format!("opening {}", data_dir.display()))?;
            let l = chain.ledger();
            let g = l.globals();
            let p = l.params();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "chain_id": p.chain_id,
                        "height": g.height,
                        "state_root": l.state_root().to_string(),
                        "globals": g,
                        "records": l.record_count(),
                    })
                );
            } else {
                println!("chain      {}", p.chain_id);
                println!("height     {}", g.height);
                println!("state root {}", l.state_root());
                println!("epoch      {}", g.epoch);
                println!("supply     {} {}", g.supply.display(p.decimals), p.symbol);
                println!("minted     {} {}", g.minted.display(p.decimals), p.symbol);
                println!("burned     {} {}", g.burned.display(p.decimals), p.symbol);
                println!("records    {}", l.record_count());
            }
        }
        LedgerCommand::Generate {
            data_dir,
            blocks,
            txs,
            accounts,
            seed,
        } => {
            let stdout = std::io::stdout();
            cairn_bench::generate(&data_dir, blocks, txs, accounts, seed, |height, root| {
                let mut out = stdout.lock();
                writeln!(out, "committed {height} {root}")?;
                out.flush()
            })?;
        }
    }
    Ok(())
}
