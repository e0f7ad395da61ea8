//! `cairn checker`: run a checker, register or retire one, and see where one stands.

use crate::client_cmd::{NodeOpt, Signer, keys, send};
use anyhow::{Context, Result};
use cairn_checker::{CheckerSettings, Metrics};
use cairn_primitives::{Address, BoundedString, TxBody};
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `cairn checker …`.
#[derive(Args)]
pub(crate) struct CheckerArgs {
    #[command(subcommand)]
    command: CheckerCommand,
}

#[derive(Subcommand)]
enum CheckerCommand {
    /// Run the checker: accept its devices' connections, challenge them in each round, post
    /// the results, back disputed results. Settings: defaults, then --config, then
    /// CAIRN_CHECKER_* variables, then these flags. SIGTERM or Ctrl-C stops it; results it
    /// computed and had not posted are posted at its next start.
    Run {
        /// Settings file (TOML: node, listen, data_dir, poll, refresh, heartbeat, metrics).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The checker's key name in the key store (its address is the checker's id).
        #[arg(long, default_value = "checker")]
        key: String,
        /// Key store directory.
        #[arg(long, env = "CAIRN_KEYS_DIR")]
        keys_dir: Option<PathBuf>,
        /// The node's API URL.
        #[arg(long)]
        node: Option<String>,
        /// Where devices connect (must be what the chain lists as this checker's endpoint).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where pending results and kept receipts live.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve Prometheus metrics here.
        #[arg(long)]
        metrics: Option<SocketAddr>,
    },
    /// Stake this key as a checker with the endpoint its devices will dial; it checks from the
    /// next epoch.
    Register {
        /// `host:port` devices dial (reachable from the internet for a public network).
        #[arg(long)]
        endpoint: String,
        /// Tokens to bond (at least the genesis `checking.min_stake`).
        #[arg(long)]
        stake: String,
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        node: NodeOpt,
    },
    /// Stop checking: the checker leaves later committees and its stake starts unbonding.
    Retire {
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        node: NodeOpt,
    },
    /// A checker's stake, status, strikes, this epoch's results and its devices.
    Status {
        /// The checker's address.
        address: Option<Address>,
        /// A key's name in the key store, instead of an address.
        #[arg(long)]
        key: Option<String>,
        /// Key store directory.
        #[arg(long, env = "CAIRN_KEYS_DIR")]
        keys_dir: Option<PathBuf>,
        #[command(flatten)]
        node: NodeOpt,
    },
}

pub(crate) fn run(a: CheckerArgs) -> Result<()> {
    match a.command {
        CheckerCommand::Run {
            config,
            key,
            keys_dir,
            node,
            listen,
            data_dir,
            metrics,
        } => {
            let mut s = CheckerSettings::load(config.as_deref())?;
            if let Some(n) = node {
                s.node = n;
            }
            if let Some(l) = listen {
                s.listen = l;
            }
            if let Some(d) = data_dir {
                s.data_dir = d;
            }
            if metrics.is_some() {
                s.metrics = metrics;
            }
            let k = keys(keys_dir).load(&key).with_context(|| {
                format!("the checker key '{key}' (create it with `cairn keys new {key}`)")
            })?;
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        rt.block_on(cairn_node::termination());
                        eprintln!("checker: stopping");
                        stop.store(true, Ordering::SeqCst);
                    }
                });
            }
            let m = Arc::new(Metrics::default());
            if let Some(addr) = s.metrics {
                serve_metrics(addr, m.clone())?;
                eprintln!("checker: metrics on http://{addr}/metrics");
            }
            cairn_checker::run(&s, k, stop, m)?;
            eprintln!("checker: stopped");
            Ok(())
        }
        CheckerCommand::Register {
            endpoint,
            stake,
            signer,
            node,
        } => {
            let endpoint = BoundedString::new(&endpoint)
                .map_err(|e| anyhow::anyhow!("--endpoint '{endpoint}': {e}"))?;
            send(&node, signer, |info, _| {
                Ok(TxBody::RegisterChecker {
                    endpoint,
                    stake: info.tokens(&stake, "--stake")?,
                })
            })?;
            Ok(())
        }
        CheckerCommand::Retire { signer, node } => {
            send(&node, signer, |_, _| Ok(TxBody::RetireChecker))?;
            Ok(())
        }
        CheckerCommand::Status {
            address,
            key,
            keys_dir,
            node,
        } => {
            let addr = match (address, key) {
                (Some(a), _) => a,
                (None, Some(k)) => keys(keys_dir).load(&k)?.address(),
                (None, None) => anyhow::bail!("name the checker: an address or --key"),
            };
            let client = node.client();
            let c = client.get(&format!("/v1/checkers/{addr}"))?;
            let devices = client.get(&format!("/v1/checkers/{addr}/devices?limit=1000"))?;
            if node.json {
                println!("{}", serde_json::json!({"checker": c, "devices": devices}));
                return Ok(());
            }
            println!("checker     {addr}");
            println!("endpoint    {}", c["endpoint"].as_str().unwrap_or("?"));
            println!("stake       {}", c["stake"].as_str().unwrap_or("?"));
            println!("status      {}", c["status"].as_str().unwrap_or("?"));
            println!(
                "committee   {}",
                if c["in_committee"] == true {
                    "yes (this epoch)"
                } else {
                    "no"
                }
            );
            println!("strikes     {}", c["strikes"]);
            println!(
                "this epoch  {} results posted, {} agreed with the verdict",
                c["epoch_tally"]["posted"], c["epoch_tally"]["agreed"]
            );
            let list = devices["devices"].as_array().cloned().unwrap_or_default();
            println!(
                "devices     {}{}",
                list.len(),
                if devices["next"].is_null() { "" } else { "+" }
            );
            for d in list.iter().take(20) {
                println!(
                    "  {}  {:<10} {}",
                    d["address"].as_str().unwrap_or("?"),
                    d["verification"]["status"].as_str().unwrap_or("?"),
                    d["class"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
    }
}

/// Serves `/metrics` (Prometheus text) on `addr` from a thread.
fn serve_metrics(addr: SocketAddr, m: Arc<Metrics>) -> Result<()> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("metrics on {addr}"))?;
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let body = m.render();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}
