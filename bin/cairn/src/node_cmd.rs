//! `cairn node` and `cairn devnet`.

use anyhow::{Context, Result, bail};
use cairn_keystore::Keystore;
use cairn_node::{ApiSettings, Node, ProducerSettings};
use cairn_primitives::{Genesis, GenesisAccount, Validator};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Node settings: defaults, then a TOML file (`--config`), then `CAIRN_*` environment
/// variables, then flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NodeSettings {
    /// Where the API listens.
    pub(crate) listen: SocketAddr,
    /// Where the p2p network listens (default: this validator's address in the genesis).
    pub(crate) p2p_listen: Option<SocketAddr>,
    /// Milliseconds a leader waits for transactions before proposing an empty block.
    pub(crate) idle_block_ms: u64,
    /// Milliseconds to wait for a leader's proposal before voting to skip it.
    pub(crate) leader_timeout_ms: u64,
    /// Most encoded bytes per block.
    pub(crate) max_block_bytes: usize,
    /// Runtime worker threads.
    pub(crate) worker_threads: usize,
    /// Most transactions per block.
    pub(crate) max_block_txs: usize,
    /// Most transactions in the mempool.
    pub(crate) mempool_capacity: usize,
    /// Most pending transactions per account.
    pub(crate) mempool_per_account: usize,
    /// Largest request body, bytes.
    pub(crate) max_body_bytes: usize,
}

impl Default for NodeSettings {
    fn default() -> Self {
        let p = ProducerSettings::default();
        let a = ApiSettings::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7650)),
            p2p_listen: None,
            idle_block_ms: p.idle_interval.as_millis() as u64,
            leader_timeout_ms: cairn_node::consensus::Timing::default()
                .leader_timeout
                .as_millis() as u64,
            max_block_bytes: p.max_block_bytes,
            worker_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_block_txs: p.max_block_txs,
            mempool_capacity: p.mempool.capacity,
            mempool_per_account: p.mempool.per_account,
            max_body_bytes: a.max_body_bytes,
        }
    }
}

impl NodeSettings {
    /// Defaults, then `file`, then the environment.
    pub(crate) fn load(file: Option<&Path>) -> Result<Self> {
        let mut s = match file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("reading settings {}", f.display()))?;
                toml::from_str(&text).with_context(|| format!("in settings {}", f.display()))?
            }
            None => Self::default(),
        };
        fn env<T: std::str::FromStr>(name: &str, slot: &mut T) -> Result<()>
        where
            T::Err: std::fmt::Display,
        {
            if let Ok(v) = std::env::var(name) {
                *slot = v.parse().map_err(|e| anyhow::anyhow!("{name}={v}: {e}"))?;
            }
            Ok(())
        }
        env("CAIRN_LISTEN", &mut s.listen)?;
        if let Ok(v) = std::env::var("CAIRN_P2P_LISTEN") {
            s.p2p_listen = Some(
                v.parse()
                    .map_err(|e| anyhow::anyhow!("CAIRN_P2P_LISTEN={v}: {e}"))?,
            );
        }
        env("CAIRN_IDLE_BLOCK_MS", &mut s.idle_block_ms)?;
        env("CAIRN_LEADER_TIMEOUT_MS", &mut s.leader_timeout_ms)?;
        env("CAIRN_MAX_BLOCK_BYTES", &mut s.max_block_bytes)?;
        env("CAIRN_WORKER_THREADS", &mut s.worker_threads)?;
        env("CAIRN_MAX_BLOCK_TXS", &mut s.max_block_txs)?;
        env("CAIRN_MEMPOOL_CAPACITY", &mut s.mempool_capacity)?;
        env("CAIRN_MEMPOOL_PER_ACCOUNT", &mut s.mempool_per_account)?;
        env("CAIRN_MAX_BODY_BYTES", &mut s.max_body_bytes)?;
        if s.max_block_txs == 0 || s.mempool_capacity == 0 {
            bail!("max_block_txs and mempool_capacity must be at least 1");
        }
        if s.max_block_bytes < 64 << 10 {
            bail!("max_block_bytes must be at least 65536");
        }
        if s.idle_block_ms >= s.leader_timeout_ms {
            bail!(
                "idle_block_ms ({}) must be below leader_timeout_ms ({}): a leader waiting for \
                 transactions would otherwise be skipped",
                s.idle_block_ms,
                s.leader_timeout_ms
            );
        }
        Ok(s)
    }

    fn producer(&self) -> ProducerSettings {
        ProducerSettings {
            idle_interval: Duration::from_millis(self.idle_block_ms),
            max_block_txs: self.max_block_txs,
            max_block_bytes: self.max_block_bytes,
            mempool: cairn_node::mempool::Limits {
                capacity: self.mempool_capacity,
                per_account: self.mempool_per_account.max(1),
            },
        }
    }

    fn api(&self) -> ApiSettings {
        ApiSettings {
            max_body_bytes: self.max_body_bytes,
            ..ApiSettings::default()
        }
    }
}

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
    /// Settings file (TOML; fields: listen, p2p_listen, idle_block_ms, leader_timeout_ms,
    /// max_block_txs, max_block_bytes, mempool_capacity, mempool_per_account, max_body_bytes,
    /// worker_threads).
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
    serve(&a.data_dir, genesis.as_ref(), &key, &settings, |url| {
        eprintln!("cairn node: API at {url}; Ctrl-C stops it");
    })
}

fn read_genesis(p: &Path) -> Result<Genesis> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let g = Genesis::from_toml(&text).with_context(|| format!("in {}", p.display()))?;
    g.validate()
        .with_context(|| format!("in {}", p.display()))?;
    Ok(g)
}

fn serve(
    data_dir: &Path,
    genesis: Option<&Genesis>,
    key: &cairn_primitives::Keypair,
    settings: &NodeSettings,
    ready: impl FnOnce(&str),
) -> Result<()> {
    let node = Node::open(data_dir, genesis, key.address(), settings.producer())
        .with_context(|| format!("opening the chain in {}", data_dir.display()))?;
    let p2p_listen = match settings.p2p_listen {
        Some(a) => a,
        None => node.with_chain(|c| {
            let me = key.address();
            let v = c.genesis().validators.iter().find(|v| v.key == me);
            match v.map(|v| v.p2p.parse::<SocketAddr>()) {
                // A loopback address is bound as it is; any other, on every interface.
                Some(Ok(a)) if a.ip().is_loopback() => Ok(a),
                Some(Ok(a)) => Ok(SocketAddr::from(([0, 0, 0, 0], a.port()))),
                Some(Err(e)) => Err(anyhow::anyhow!("this validator's genesis p2p address: {e}")),
                None => Err(anyhow::anyhow!(
                    "key {me} is not a validator of this genesis (see its [[validators]])"
                )),
            }
        })?,
    };
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("listening on {}", settings.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    ready(&url);
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => eprintln!("\nstopping…"),
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {
                eprintln!("stopping (SIGTERM)…");
            }
        }
    };
    let validator = cairn_node::Validator {
        key: key.private_key().clone(),
        p2p_listen,
        storage_dir: data_dir.join("consensus"),
        timing: cairn_node::consensus::Timing {
            leader_timeout: Duration::from_millis(settings.leader_timeout_ms),
            certification_timeout: Duration::from_millis(settings.leader_timeout_ms * 3 / 2),
            ..Default::default()
        },
        worker_threads: settings.worker_threads,
    };
    cairn_node::run(node.clone(), validator, listener, settings.api(), shutdown)
        .context("running the node")?;
    let h = node.height();
    eprintln!("stopped cleanly at height {h}");
    Ok(())
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
    /// The built-in worker's Docker Engine API socket, for `cairn deploy --image`.
    /// Default: DOCKER_HOST when it is unix://…, else /var/run/docker.sock.
    #[arg(long)]
    docker_socket: Option<PathBuf>,
}

/// Devnet's worker: registers this machine's CPU as a device owned by `owner` (carol), buys
/// alice some credits once the demo oracle's price is in (so that `cairn deploy` works right
/// away), then serves the device's leases with the process runtime.
fn spawn_devnet_worker(
    url: String,
    docker_socket: PathBuf,
    dir: PathBuf,
    keys_dir: PathBuf,
    owner: cairn_primitives::Keypair,
    customer: cairn_primitives::Keypair,
) {
    std::thread::spawn(move || {
        let client = cairn_client::Client::new(&url);
        let offer = match cairn_worker::offer(&dir) {
            Ok(o) => o,
            Err(e) => return eprintln!("worker: {e:#}"),
        };
        let start = std::time::Instant::now();
        loop {
            match cairn_worker::register_offer(&client, &owner, &offer, 36_000, 720_000, "local") {
                Ok(lines) => {
                    eprintln!("worker: this machine's devices, owned by carol:");
                    for line in lines {
                        eprintln!("worker:   {line}");
                    }
                    break;
                }
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    return eprintln!("worker: could not register the devices: {e:#}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        // Credits for alice, once there is a price (the demo oracle submits it at start).
        let has_credits = client
            .account(&customer.address(), false)
            .is_ok_and(|a| a["credits"].as_u64().unwrap_or(0) > 0);
        while !has_credits && start.elapsed() < Duration::from_secs(60) {
            let bought = crate::client_cmd::sign_and_submit(&client, &customer, None, |c, _| {
                Ok(cairn_primitives::TxBody::BuyCredits {
                    amount: cairn_primitives::Amount::parse_decimal("10", c.decimals)
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                })
            })
            .and_then(|h| Ok(client.wait_final(&h, Duration::from_secs(30))?));
            match bought {
                Ok(v) if v["status"] == "final" => {
                    eprintln!("worker: bought alice 10 tokens' worth of credits to deploy with");
                    break;
                }
                _ => std::thread::sleep(Duration::from_secs(1)),
            }
        }
        let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Err(e) = cairn_worker::serve(
            &url,
            &dir,
            Some(&keys_dir),
            &docker_socket,
            |c| {
                c.heartbeat = Duration::from_secs(3);
            },
            never,
        ) {
            eprintln!("worker: stopped: {e:#}");
        }
    });
}

/// How often devnet's demo oracle resubmits its price (the genesis default refuses prices
/// older than ten minutes).
const DEMO_ORACLE_EVERY: Duration = Duration::from_secs(120);

/// Devnet's demo price oracle: submits `micro_usd` over the API, as an oracle operator would,
/// every [`DEMO_ORACLE_EVERY`], so that `cairn credits buy` works. Stops if the chain does not
/// list its key as an oracle (a devnet created before it had one).
fn spawn_demo_oracle(url: String, key: cairn_primitives::Keypair, micro_usd: u64) {
    let submit = move |client: &cairn_client::Client| -> Result<()> {
        let h = crate::client_cmd::sign_and_submit(client, &key, None, |_, _| {
            Ok(cairn_primitives::TxBody::SubmitPrice {
                micro_usd_per_token: micro_usd,
            })
        })?;
        client.wait_final(&h, Duration::from_secs(30))?;
        Ok(())
    };
    std::thread::spawn(move || {
        let client = cairn_client::Client::new(&url);
        let mut announced = false;
        loop {
            match submit(&client) {
                Ok(()) => {
                    if !announced {
                        eprintln!(
                            "demo oracle: token price ${}.{:06} submitted (again every {} s)",
                            micro_usd / 1_000_000,
                            micro_usd % 1_000_000,
                            DEMO_ORACLE_EVERY.as_secs()
                        );
                        announced = true;
                    }
                    std::thread::sleep(DEMO_ORACLE_EVERY);
                }
                Err(e) => match e.downcast_ref::<cairn_client::Error>() {
                    Some(cairn_client::Error::Api { code, .. }) if code == "not_oracle" => {
                        eprintln!(
                            "demo oracle: this devnet's genesis names no oracle key, so credits cannot be bought; `cairn devnet --reset` starts a devnet that has one"
                        );
                        return;
                    }
                    Some(cairn_client::Error::Api { .. }) => {
                        eprintln!(
                            "demo oracle: {e:#}; trying again in {} s",
                            DEMO_ORACLE_EVERY.as_secs()
                        );
                        std::thread::sleep(DEMO_ORACLE_EVERY);
                    }
                    // The API is not up yet: try again shortly.
                    _ => {
                        tracing::debug!("demo oracle: {e:#}; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                },
            }
        }
    });
}

/// `PATH="<dir of this binary>:$PATH" ` when `cairn` on the PATH is not this binary (after
/// `cargo run` it is on no PATH at all), so that the commands devnet prints work as printed.
fn path_export() -> String {
    let Ok(me) = std::env::current_exe() else {
        return String::new();
    };
    let me = std::fs::canonicalize(&me).unwrap_or(me);
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .filter_map(|d| std::fs::canonicalize(d.join("cairn")).ok())
            .next()
            .is_some_and(|found| found == me)
    });
    match me.parent() {
        Some(dir) if !on_path => format!(
            "PATH={}:\"$PATH\" ",
            shell_quote(&dir.display().to_string())
        ),
        _ => String::new(),
    }
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Demo accounts devnet funds.
const DEMO: [&str; 3] = ["alice", "bob", "carol"];

fn devnet_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| cairn_keystore::data_home().join("devnet"))
}

pub(crate) fn run_devnet(a: DevnetArgs) -> Result<()> {
    let dir = devnet_dir(a.dir);
    if a.reset && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        eprintln!("reset: removed {}", dir.display());
    }
    let chain_dir = dir.join("chain");
    let keys = Keystore::at(dir.join("keys"));
    let fresh = !chain_dir.join("chain.redb").exists();
    let validator = keys.load_or_create("validator")?;
    let oracle = keys.load_or_create("oracle")?;
    let micro_usd = crate::client_cmd::micro_usd(&a.price_usd).context("--price-usd")?;
    let alice = keys.load_or_create("alice")?;
    let carol = keys.load_or_create("carol")?;
    let genesis = if fresh {
        let mut g = Genesis::production("cairn-devnet", a.epoch_secs, cairn_node::now_ms());
        for name in DEMO {
            let k = keys.load_or_create(name)?;
            g.accounts.push(GenesisAccount {
                address: k.address(),
                balance: "1000000".into(),
            });
        }
        g.validators = vec![Validator {
            key: validator.address(),
            p2p: a.p2p.to_string(),
        }];
        g.treasury = validator.address();
        g.oracle.keys = vec![oracle.address()];
        g.lease_timeout_secs = a.lease_timeout_secs.max(1);
        // The oracle pays fees for its price submissions.
        g.accounts.push(GenesisAccount {
            address: oracle.address(),
            balance: "1000".into(),
        });
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("genesis.toml"), g.to_documented_toml())
            .context("writing the devnet genesis")?;
        Some(g)
    } else {
        None
    };
    let settings = NodeSettings {
        listen: a.listen,
        p2p_listen: Some(a.p2p),
        ..NodeSettings::load(None)?
    };
    let keys_dir = keys.dir().to_path_buf();
    let served = serve(&chain_dir, genesis.as_ref(), &validator, &settings, |url| {
        let what = if fresh { "started" } else { "resumed" };
        eprintln!("cairn devnet {what}");
        eprintln!("  API:        {url}   (try {url}/v1/status)");
        eprintln!("  data:       {}", dir.display());
        eprintln!(
            "  demo keys:  {}   ({})",
            keys_dir.display(),
            DEMO.join(", ")
        );
        eprintln!("  next, in another terminal:");
        eprintln!(
            "    export {}CAIRN_NODE={url} CAIRN_KEYS_DIR={}",
            path_export(),
            shell_quote(&keys_dir.display().to_string())
        );
        eprintln!("    cairn status");
        eprintln!("    cairn account balance --key alice");
        eprintln!(
            "    cairn account transfer --key alice --to $(cairn keys show bob) --amount 12.5"
        );
        eprintln!("    cairn credits buy --key alice --amount 10");
        eprintln!("    cairn deploy --key alice --yes -- echo hello");
        eprintln!("    cairn jobs logs --key alice 0");
        eprintln!("  Ctrl-C stops it; running it again resumes; --reset starts over.");
        spawn_demo_oracle(url.to_string(), oracle, micro_usd);
        if !a.no_worker {
            spawn_devnet_worker(
                url.to_string(),
                a.docker_socket
                    .clone()
                    .unwrap_or_else(cairn_worker::default_socket),
                dir.join("worker"),
                keys_dir.clone(),
                carol,
                alice,
            );
        }
    });
    // A devnet directory written by a build whose state encoding differs cannot be read back.
    served.map_err(|e| {
        let opening = e
            .chain()
            .any(|c| c.to_string().starts_with("opening the chain"));
        if fresh || !opening {
            return e;
        }
        e.context(format!(
            "could not resume the devnet in {}; if an earlier build of cairn wrote it, \
             `cairn devnet --reset` starts over",
            dir.display()
        ))
    })
}
