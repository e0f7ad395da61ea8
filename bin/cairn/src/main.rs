//! `cairn`: one binary for every role. This file parses the command line and dispatches; all
//! behaviour lives in the crates.

mod checker_cmd;
mod client_cmd;
mod genesis_cmd;
mod jobs_cmd;
mod keys;
mod ledger_cmd;
mod node_cmd;
mod worker_cmd;

use clap::{Parser, Subcommand};

/// jemalloc (as reth uses): the ledger frees millions of small records built on other threads
/// (an epoch close, a block's changes); glibc's allocator spent 40% of an epoch close in
/// `free`, and its trimming put 5 ms outliers into matching. mimalloc was tried and cost the
/// apply path 20%.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Cairn: a DePIN for compute. Contribute GPUs and CPUs, rent them, prove the hardware is real,
/// settle everything on a replicated ledger.
#[derive(Parser)]
#[command(name = "cairn", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage keys (stored 0600 in the config directory, Solana-compatible).
    Keys(keys::KeysArgs),
    /// Write a documented default genesis file, or check one.
    Genesis(genesis_cmd::GenesisArgs),
    /// Inspect and verify a node's data directory.
    Ledger(ledger_cmd::LedgerArgs),
    /// Measure performance against the bars in docs/design.md.
    Bench(cairn_bench::BenchArgs),
    /// Run a one-validator network on this machine with funded demo accounts (start here).
    Devnet(node_cmd::DevnetArgs),
    /// Run a validator node with the HTTP API.
    Node(node_cmd::NodeArgs),
    /// The node's chain, height, state root and supply.
    Status(client_cmd::StatusArgs),
    /// Balances and transfers.
    Account(client_cmd::AccountArgs),
    /// Transaction status.
    Tx(client_cmd::TxArgs),
    /// What an account has staked behind devices, and what is unbonding.
    Stake(client_cmd::StakeArgs),
    /// Stake tokens behind a device.
    Delegate(client_cmd::DelegateArgs),
    /// Withdraw stake from a device (it unbonds first).
    Undelegate(client_cmd::UndelegateArgs),
    /// Collect what closed epochs owe your devices (their next transaction also does).
    Settle(client_cmd::SettleArgs),
    /// Compute credits: burn tokens for credits at the oracle price.
    Credits(client_cmd::CreditsArgs),
    /// Price-oracle duties: submit the token's USD price.
    Oracle(client_cmd::OracleArgs),
    /// The provider's agent: `probe` runs the proof-of-physical-work challenge on this machine.
    Worker(worker_cmd::WorkerArgs),
    /// Checkers: run one (challenge devices, post results), register, retire, status.
    Checker(checker_cmd::CheckerArgs),
    /// Rent compute: quote, confirm, deploy a command (sandboxed) or an image on N devices.
    Deploy(jobs_cmd::DeployArgs),
    /// Your deployments: list, show, logs (-f), stop, extend.
    Jobs(jobs_cmd::JobsArgs),
}

fn main() {
    // The sandbox helper runs before anything else (single-threaded: no tracing, no runtime).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == cairn_worker::HELPER_ARG)
    {
        cairn_worker::helper_main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(a) => keys::run(a),
        Command::Genesis(a) => genesis_cmd::run(a),
        Command::Ledger(a) => ledger_cmd::run(a),
        Command::Bench(a) => cairn_bench::run(a),
        Command::Devnet(a) => node_cmd::run_devnet(a),
        Command::Node(a) => node_cmd::run_node(a),
        Command::Status(a) => client_cmd::status(a),
        Command::Account(a) => client_cmd::account(a),
        Command::Tx(a) => client_cmd::tx(a),
        Command::Stake(a) => client_cmd::stake(a),
        Command::Delegate(a) => client_cmd::delegate(a),
        Command::Undelegate(a) => client_cmd::undelegate(a),
        Command::Settle(a) => client_cmd::settle(a),
        Command::Credits(a) => client_cmd::credits(a),
        Command::Oracle(a) => client_cmd::oracle(a),
        Command::Worker(a) => worker_cmd::run(a),
        Command::Checker(a) => checker_cmd::run(a),
        Command::Deploy(a) => jobs_cmd::deploy(a),
        Command::Jobs(a) => jobs_cmd::jobs(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// An error and its causes on one line, each cause once: most of the project's errors name
/// their source in their own message already, which `{:#}` would repeat at every level.
fn describe(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::describe;

    /// An error that names its source in its message, as the project's errors do.
    #[derive(Debug)]
    struct Open(Corrupt);
    impl std::fmt::Display for Open {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "opening the chain: {}", self.0)
        }
    }
    impl std::error::Error for Open {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    #[derive(Debug)]
    struct Corrupt;
    impl std::fmt::Display for Corrupt {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("data directory is corrupt")
        }
    }
    impl std::error::Error for Corrupt {}

    #[test]
    fn each_cause_is_said_once() {
        // A source named in its wrapper's message is not repeated; a context's cause is added.
        let e = anyhow::Error::new(Open(Corrupt));
        assert_eq!(describe(&e), "opening the chain: data directory is corrupt");
        let e = anyhow::Error::new(Corrupt).context("resuming");
        assert_eq!(describe(&e), "resuming: data directory is corrupt");
    }
}
