//! `cairn node` and `cairn devnet` (crate `cairn-devnet`).

use anyhow::{Context, Result};
use cairn_keystore::Keystore;
use cairn_node::NodeSettings;
use cairn_primitives::Genesis;
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `cairn node`: run a validator node with the HTTP API.
#[derive(Args)]
pub(crate) struct NodeArgs {
    /// Data directory (the chain's blocks and state).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: PathBuf,
    /// Genesis file; needed the first time, checked against the stored one after.
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// The validator key's name in the key store.
    #[arg(long, default_value = "validator")]
    key: String,
    /// Key store directory (default: the config directory's `keys`).
    #[arg(long, env = "CAIRN_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// Settings file (TOML; fields: listen, p2p_listen, idle_block ("250ms"), leader_timeout
    /// ("2s"), max_block_txs, max_block_bytes, mempool_capacity, mempool_per_account,
    /// max_body_bytes, worker_threads). Then CAIRN_LISTEN, CAIRN_P2P_LISTEN,
    /// CAIRN_IDLE_BLOCK, CAIRN_LEADER_TIMEOUT, … override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// API address (overrides the settings file and CAIRN_LISTEN).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

fn keystore(dir: Option<PathBuf>) -> Keystore {
    dir.map_or_else(Keystore::default_location, Keystore::at)
}

pub(crate) fn run_node(a: NodeArgs) -> Result<()> {
    let mut settings = NodeSettings::load(a.config.as_deref())?;
    if let Some(l) = a.listen {
        settings.listen = l;
    }
    let genesis = match &a.genesis {
        Some(p) => Some(read_genesis(p)?),
        None => None,
    };
    let key = keystore(a.keys_dir)
        .load(&a.key)
        .with_context(|| format!("loading validator key '{}'", a.key))?;
    let height = cairn_node::serve(
        &a.data_dir,
        genesis.as_ref(),
        &key,
        &settings,
        |url| eprintln!("cairn node: API at {url}; Ctrl-C stops it"),
        cairn_node::termination(),
    )?;
    eprintln!("stopped cleanly at height {height}");
    Ok(())
}

fn read_genesis(p: &Path) -> Result<Genesis> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let g = Genesis::from_toml(&text).with_context(|| format!("in {}", p.display()))?;
    g.validate()
        .with_context(|| format!("in {}", p.display()))?;
    Ok(g)
}

/// `cairn devnet`: a one-validator network on this machine, with funded demo accounts.
#[derive(Args)]
pub(crate) struct DevnetArgs {
    /// Data directory (default: `$CAIRN_HOME/devnet`, else `~/.local/share/cairn/devnet`).
    #[arg(long, env = "CAIRN_DEVNET_DIR")]
    dir: Option<PathBuf>,
    /// Start over: delete the devnet's chain and keys first.
    #[arg(long)]
    reset: bool,
    /// API address.
    #[arg(long, default_value = "127.0.0.1:7650")]
    listen: SocketAddr,
    /// Consensus p2p address (a one-validator devnet has no peers, but consensus still runs
    /// over the network layer it would use with them).
    #[arg(long, default_value = "127.0.0.1:7651")]
    p2p: SocketAddr,
    /// Epoch length in seconds (devnet epochs are short so rewards show up quickly).
    #[arg(long, default_value_t = 60)]
    epoch_secs: u64,
    /// The token price devnet's demo oracle submits, in USD (credits are bought at it).
    #[arg(long, default_value = "1.00")]
    price_usd: String,
    /// A lease whose worker stops reporting for this long ends (paid up to its last report).
    #[arg(long, default_value_t = 30)]
    lease_timeout_secs: u64,
    /// Do not start the built-in worker (this machine's CPU and GPUs as devices owned by
    /// carol).
    #[arg(long)]
    no_worker: bool,
    /// The least time between two regular challenge rounds, in seconds (default: the
    /// genesis default, 10). Benchmarks set it long so that no round runs while they measure.
    #[arg(long)]
    min_round_gap_secs: Option<u64>,
    /// The built-in worker's Docker Engine API socket, for `cairn deploy --image`.
    /// Default: DOCKER_HOST when it is unix://…, else /var/run/docker.sock.
    #[arg(long)]
    docker_socket: Option<PathBuf>,
}

pub(crate) fn run_devnet(a: DevnetArgs) -> Result<()> {
    let micro_usd = crate::client_cmd::micro_usd(&a.price_usd).context("--price-usd")?;
    let mut opts = cairn_devnet::Options::new(a.dir.unwrap_or_else(cairn_devnet::default_dir));
    opts.reset = a.reset;
    opts.listen = a.listen;
    opts.p2p = a.p2p;
    opts.epoch_secs = a.epoch_secs;
    opts.price_micro_usd = micro_usd;
    opts.lease_timeout_secs = a.lease_timeout_secs;
    opts.worker = !a.no_worker;
    opts.min_round_gap_secs = a.min_round_gap_secs;
    // A devnet on a free API port puts its checkers on free ports too.
    if a.listen.port() == 0 {
        opts.checkers = opts.checkers.map(|_| SocketAddr::new(a.listen.ip(), 0));
    }
    if let Some(socket) = a.docker_socket {
        opts.docker_socket = socket;
    }
    Ok(cairn_devnet::run(opts)?)
}
