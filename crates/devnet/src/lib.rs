//! `cairn devnet`: a one-validator network on this machine, ready to use. It writes a genesis
//! (the production defaults, short epochs, funded demo accounts alice, bob and carol, a demo
//! oracle key, three checkers staked at genesis), runs the validator with the API, and beside
//! it the three checkers, a demo price oracle and a worker that registers this machine's CPU
//! and GPUs as carol's devices, answers their checkers' rounds, buys alice credits and serves
//! leases. A device is matched once its checkers verify it (its first round comes in the block
//! after it registers).
//!
//! One shutdown path: at Ctrl-C or SIGTERM the worker drains (running jobs finish or are
//! stopped and reported), then the checkers stop (results they computed and had not posted
//! are journaled and posted at their next start), then the oracle, then the node, which has
//! made every final block durable; running devnet again resumes.
//!
//! ```no_run
//! let opts = cairn_devnet::Options::new(std::env::temp_dir().join("my-devnet"));
//! cairn_devnet::run(opts).expect("devnet ran and stopped cleanly");
//! ```
#![deny(missing_docs)]

mod helpers;
mod shell;

use cairn_keystore::Keystore;
use cairn_node::{NodeSettings, ServeError};
use cairn_primitives::{Genesis, GenesisAccount, Validator};
use helpers::{Stop, spawn_oracle, spawn_worker};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use shell::{path_export, shell_quote};

/// Demo accounts devnet funds.
pub const DEMO: [&str; 3] = ["alice", "bob", "carol"];

/// How to run a devnet.
#[derive(Clone, Debug)]
pub struct Options {
    /// Data directory: the chain, the keys, the genesis and the worker's data.
    pub dir: PathBuf,
    /// Delete the devnet's chain and keys first.
    pub reset: bool,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where consensus's p2p network listens.
    pub p2p: SocketAddr,
    /// Epoch length in seconds.
    pub epoch_secs: u64,
    /// The token price the demo oracle submits, in millionths of a USD.
    pub price_micro_usd: u64,
    /// How long a lease's worker may stay silent before the lease ends.
    pub lease_timeout_secs: u64,
    /// Whether to run the built-in worker.
    pub worker: bool,
    /// The built-in worker's Docker Engine API socket.
    pub docker_socket: PathBuf,
    /// Where the three checkers listen (their endpoints in a fresh devnet's genesis; port 0:
    /// a free port, chosen when the genesis is written).
    pub checkers: [SocketAddr; 3],
    /// How often devices send their checkers heartbeats.
    pub heartbeat: std::time::Duration,
    /// The least time between regular rounds, when not the genesis default (benches set it
    /// long, so that no round runs while they measure).
    pub min_round_gap_secs: Option<u64>,
}

impl Options {
    /// The defaults `cairn devnet` uses, in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            reset: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 7650)),
            p2p: SocketAddr::from(([127, 0, 0, 1], 7651)),
            epoch_secs: 60,
            price_micro_usd: 1_000_000,
            lease_timeout_secs: 30,
            worker: true,
            docker_socket: cairn_worker::default_socket(),
            checkers: [7661, 7662, 7663].map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            heartbeat: std::time::Duration::from_secs(5),
            min_round_gap_secs: None,
        }
    }
}

/// Devnet's data directory by default: `$CAIRN_HOME/devnet`, else
/// `$XDG_DATA_HOME/cairn/devnet`, else `~/.local/share/cairn/devnet`.
pub fn default_dir() -> PathBuf {
    cairn_keystore::data_home().join("devnet")
}

/// Why the devnet stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A file or directory could not be written or removed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A demo key could not be loaded or created.
    #[error("devnet keys: {0}")]
    Keys(#[from] cairn_keystore::Error),
    /// The node settings from the environment are invalid.
    #[error(transparent)]
    Settings(#[from] cairn_node::SettingsError),
    /// The node could not run.
    #[error(transparent)]
    Node(Box<ServeError>),
    /// The devnet on disk could not be resumed.
    #[error(
        "could not resume the devnet in {dir}; if an earlier build of cairn wrote it, \
         `cairn devnet --reset` starts over: {source}"
    )]
    Resume {
        /// The devnet's directory.
        dir: PathBuf,
        /// Why.
        source: Box<ServeError>,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> DevnetError {
    move |source| DevnetError::Io { what, source }
}

/// Runs a devnet until Ctrl-C or SIGTERM, then stops it in order (module docs).
pub fn run(opts: Options) -> Result<(), DevnetError> {
    let dir = opts.dir.clone();
    if opts.reset && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
        eprintln!("reset: removed {}", dir.display());
    }
    let chain_dir = dir.join("chain");
    let keys = Keystore::at(dir.join("keys"));
    let fresh = !chain_dir.join("chain.redb").exists();
    let validator = keys.load_or_create("validator")?;
    let oracle = keys.load_or_create("oracle")?;
    let alice = keys.load_or_create("alice")?;
    let carol = keys.load_or_create("carol")?;
    let checker_keys = (1..=3)
        .map(|i| keys.load_or_create(&format!("checker-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let genesis = if fresh {
        let mut g = Genesis::production("cairn-devnet", opts.epoch_secs, cairn_node::now_ms());
        for name in DEMO {
            let k = keys.load_or_create(name)?;
            g.accounts.push(GenesisAccount {
                address: k.address(),
                balance: "1000000".into(),
            });
        }
        g.validators = vec![Validator {
            key: validator.address(),
            p2p: opts.p2p.to_string(),
        }];
        g.treasury = validator.address();
        g.oracle.keys = vec![oracle.address()];
        g.lease_timeout_secs = opts.lease_timeout_secs.max(1);
        if let Some(gap) = opts.min_round_gap_secs {
            g.checking.min_round_gap_secs = gap;
        }
        // The oracle pays fees for its price submissions.
        g.accounts.push(GenesisAccount {
            address: oracle.address(),
            balance: "1000".into(),
        });
        // Three checkers, staked at genesis, with tokens for the fees of their results.
        for (k, addr) in checker_keys.iter().zip(opts.checkers) {
            let addr = if addr.port() == 0 {
                free_port(addr.ip()).unwrap_or(addr)
            } else {
                addr
            };
            g.checkers.push(cairn_primitives::GenesisChecker {
                address: k.address(),
                endpoint: addr.to_string(),
                stake: g.checking.min_stake.clone(),
            });
            g.accounts.push(GenesisAccount {
                address: k.address(),
                balance: "1000".into(),
            });
        }
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        std::fs::write(dir.join("genesis.toml"), g.to_documented_toml())
            .map_err(io("writing the devnet genesis".into()))?;
        Some(g)
    } else {
        None
    };
    // Where the checkers listen: their endpoints in the genesis (a resumed devnet's may
    // differ from this run's options).
    let checker_endpoints = checker_endpoints(&dir, &checker_keys, &opts);
    let settings = NodeSettings {
        listen: opts.listen,
        p2p_listen: Some(opts.p2p),
        ..NodeSettings::load(None)?
    };
    let keys_dir = keys.dir().to_path_buf();
    let (stop_node, node_stopped) = tokio::sync::oneshot::channel::<()>();
    let served = cairn_node::serve(
        &chain_dir,
        genesis.as_ref(),
        &validator,
        &settings,
        |url| {
            print_welcome(url, fresh, &dir, &keys_dir);
            let oracle_stop = Stop::new();
            let oracle = spawn_oracle(url, oracle, opts.price_micro_usd, oracle_stop.clone());
            let checkers_stop = Arc::new(AtomicBool::new(false));
            let checkers = spawn_checkers(
                url,
                &dir,
                &checker_keys,
                &checker_endpoints,
                opts.heartbeat,
                &checkers_stop,
            );
            let worker_stop = Arc::new(AtomicBool::new(false));
            let worker = opts.worker.then(|| {
                spawn_worker(
                    url,
                    opts.docker_socket.clone(),
                    dir.join("worker"),
                    keys_dir.clone(),
                    carol,
                    alice,
                    worker_stop.clone(),
                )
            });
            // The one shutdown path: the worker drains, then the oracle stops, then the node.
            std::thread::spawn(move || {
                wait_for_termination();
                if let Some(worker) = worker {
                    eprintln!("devnet: stopping the worker; running jobs are drained");
                    worker_stop.store(true, Ordering::SeqCst);
                    let _ = worker.join();
                    eprintln!("devnet: worker stopped");
                }
                checkers_stop.store(true, Ordering::SeqCst);
                for c in checkers {
                    let _ = c.join();
                }
                eprintln!("devnet: checkers stopped");
                oracle_stop.stop();
                let _ = oracle.join();
                eprintln!("devnet: oracle stopped; stopping the node");
                let _ = stop_node.send(());
            });
        },
        async move {
            let _ = node_stopped.await;
        },
    );
    match served {
        Ok(height) => {
            eprintln!("stopped cleanly at height {height}");
            Ok(())
        }
        // A devnet directory written by a build whose state encoding differs cannot be read
        // back.
        Err(source @ ServeError::Open { .. }) if !fresh => Err(DevnetError::Resume {
            dir,
            source: Box::new(source),
        }),
        Err(e) => Err(DevnetError::Node(Box::new(e))),
    }
}

/// A free port on `ip` for a process that binds it later (a checker named in a genesis, a
/// devnet started on port 0), or `None` when none is.
///
/// A port the kernel hands out for `bind(…:0)` is free again once the probe closes, and until
/// the process binds it the kernel may give it to an outgoing connection as its source port:
/// with many HTTP polls in flight that happened in CI (a listener failed with `BindFailed`).
/// So the port comes from below the kernel's ephemeral range, which only an explicit bind
/// takes. Successive calls in one process try successive candidates, from a start that depends
/// on the process id, and return the first that binds now.
pub fn free_port(ip: std::net::IpAddr) -> Option<SocketAddr> {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // The first port of the ephemeral range (32768 where it cannot be read).
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let (first, span): (u32, u32) = if low > 12_000 {
        (10_000, low - 10_000)
    } else {
        (1_025, low.saturating_sub(1_025).max(1))
    };
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..span.min(2_000) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let candidate = first.saturating_add(start.wrapping_add(n.wrapping_mul(13)) % span);
        let Ok(port) = u16::try_from(candidate) else {
            continue;
        };
        if let Ok(l) = std::net::TcpListener::bind((ip, port)) {
            return l.local_addr().ok();
        }
    }
    // Nothing below the range is free: the kernel's pick.
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .ok()
}

/// Each checker's listening address: its endpoint in the devnet's genesis file, else the
/// options'.
fn checker_endpoints(
    dir: &std::path::Path,
    keys: &[cairn_primitives::Keypair],
    opts: &Options,
) -> Vec<SocketAddr> {
    let genesis = std::fs::read_to_string(dir.join("genesis.toml"))
        .ok()
        .and_then(|t| Genesis::from_toml(&t).ok());
    keys.iter()
        .zip(opts.checkers)
        .map(|(k, default)| {
            genesis
                .as_ref()
                .and_then(|g| g.checkers.iter().find(|c| c.address == k.address()))
                .and_then(|c| c.endpoint.parse().ok())
                .unwrap_or(default)
        })
        .collect()
}

/// Starts the devnet's checkers, each on its own thread with its data under the devnet's.
fn spawn_checkers(
    url: &str,
    dir: &std::path::Path,
    keys: &[cairn_primitives::Keypair],
    endpoints: &[SocketAddr],
    heartbeat: std::time::Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    keys.iter()
        .zip(endpoints)
        .enumerate()
        .map(|(i, (key, addr))| {
            let settings = cairn_checker::CheckerSettings {
                node: url.to_string(),
                listen: *addr,
                data_dir: dir.join(format!("checker-{}", i + 1)),
                heartbeat,
                ..cairn_checker::CheckerSettings::default()
            };
            let key = key.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let metrics = Arc::new(cairn_checker::Metrics::default());
                if let Err(e) = cairn_checker::run(&settings, key, stop, metrics) {
                    eprintln!("devnet: checker {}: {e}", i + 1);
                }
            })
        })
        .collect()
}

/// Blocks until the first Ctrl-C or SIGTERM.
fn wait_for_termination() {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(cairn_node::termination()),
        Err(e) => {
            // Without signal handling nothing can stop the devnet but a kill: say so, and
            // keep running.
            eprintln!("devnet: cannot watch for Ctrl-C ({e}); stop it with SIGKILL");
            loop {
                std::thread::park();
            }
        }
    }
}

/// What devnet prints once its API is up: where things are, and what to type next.
fn print_welcome(url: &str, fresh: bool, dir: &std::path::Path, keys_dir: &std::path::Path) {
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
    eprintln!("    cairn account transfer --key alice --to $(cairn keys show bob) --amount 12.5");
    eprintln!("    cairn credits buy --key alice --amount 10");
    eprintln!("    cairn deploy --key alice --yes -- echo hello");
    eprintln!("    cairn jobs logs --key alice 0");
    eprintln!("  Ctrl-C stops it; running it again resumes; --reset starts over.");
}
