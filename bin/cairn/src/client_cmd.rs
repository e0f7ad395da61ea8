//! Commands that talk to a node over HTTP: `cairn status`, `cairn account …`, `cairn tx …`.

use anyhow::{Context, Result, bail};
use cairn_client::Client;
use cairn_keystore::Keystore;
use cairn_primitives::{Address, Amount, Hash, Tx, TxBody};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Where the node is.
#[derive(Args, Clone)]
pub(crate) struct NodeOpt {
    /// The node's API URL.
    #[arg(
        long = "node",
        env = "CAIRN_NODE",
        default_value = "http://127.0.0.1:7650",
        global = true
    )]
    url: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

impl NodeOpt {
    fn client(&self) -> Client {
        Client::new(&self.url)
    }
}

/// `cairn status`.
#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    node: NodeOpt,
}

pub(crate) fn status(a: StatusArgs) -> Result<()> {
    let s = a.node.client().status()?;
    if a.node.json {
        println!("{s}");
        return Ok(());
    }
    println!("chain       {}", s["chain_id"].as_str().unwrap_or("?"));
    println!("height      {}", s["height"]);
    println!("state root  {}", s["state_root"].as_str().unwrap_or("?"));
    println!("epoch       {}", s["epoch"]);
    println!(
        "supply      {} {}",
        s["supply"].as_str().unwrap_or("?"),
        s["token"].as_str().unwrap_or("")
    );
    println!("pending txs {}", s["pending_txs"]);
    Ok(())
}

/// `cairn account …`.
#[derive(Args)]
pub(crate) struct AccountArgs {
    #[command(subcommand)]
    command: AccountCommand,
    #[command(flatten)]
    node: NodeOpt,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Balance, nonce and credits of an address (or of a stored key).
    Balance {
        /// The address (base58).
        address: Option<Address>,
        /// A key's name in the key store, instead of an address.
        #[arg(long)]
        key: Option<String>,
        /// Key store directory.
        #[arg(long, env = "CAIRN_KEYS_DIR")]
        keys_dir: Option<PathBuf>,
        /// Also fetch and verify an inclusion proof against the state root.
        #[arg(long)]
        prove: bool,
    },
    /// Send tokens; waits for finality unless --no-wait.
    Transfer {
        /// The sender's key name.
        #[arg(long)]
        key: String,
        /// Key store directory.
        #[arg(long, env = "CAIRN_KEYS_DIR")]
        keys_dir: Option<PathBuf>,
        /// Recipient address.
        #[arg(long)]
        to: Address,
        /// Amount in tokens (decimal, e.g. 12.5).
        #[arg(long)]
        amount: String,
        /// Fee in base units (default: the chain's minimum).
        #[arg(long)]
        fee: Option<u64>,
        /// Return once admitted, without waiting for finality.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for finality.
        #[arg(long, default_value = "30")]
        timeout_secs: u64,
    },
}

fn keys(dir: Option<PathBuf>) -> Keystore {
    dir.map_or_else(Keystore::default_location, Keystore::at)
}

pub(crate) fn account(a: AccountArgs) -> Result<()> {
    let client = a.node.client();
    match a.command {
        AccountCommand::Balance {
            address,
            key,
            keys_dir,
            prove,
        } => {
            let addr = match (address, key) {
                (Some(a), None) => a,
                (None, Some(k)) => keys(keys_dir).load(&k)?.address(),
                _ => bail!("give an address or --key NAME (one of them)"),
            };
            let v = client.account(&addr, prove)?;
            let verified = if prove { Some(verify_proof(&v)?) } else { None };
            if a.node.json {
                println!("{v}");
                return Ok(());
            }
            println!("address  {addr}");
            println!("balance  {}", v["balance"].as_str().unwrap_or("?"));
            println!("nonce    {}", v["nonce"]);
            println!("credits  {}", v["credits"]);
            println!("height   {}", v["height"]);
            if let Some(root) = verified {
                println!("proof    verified against state root {root}");
            }
            Ok(())
        }
        AccountCommand::Transfer {
            key,
            keys_dir,
            to,
            amount,
            fee,
            no_wait,
            timeout_secs,
        } => {
            let k = keys(keys_dir).load(&key)?;
            let status = client.status()?;
            let chain_id = status["chain_id"]
                .as_str()
                .context("node status without chain_id")?
                .to_string();
            let decimals = u8::try_from(status["decimals"].as_u64().unwrap_or(9)).unwrap_or(9);
            let amount = Amount::parse_decimal(&amount, decimals)
                .with_context(|| format!("--amount '{amount}'"))?;
            let nonce = client.next_nonce(&k.address())?;
            let tx = Tx {
                sender: k.public_key(),
                nonce,
                fee: Amount::from_base(fee.unwrap_or(status["min_fee_base"].as_u64().unwrap_or(0))),
                body: TxBody::Transfer { to, amount },
            }
            .sign(&k, &chain_id);
            let hash = client.submit(&tx)?;
            if no_wait {
                report(
                    a.node.json,
                    &serde_json::json!({"hash": hash.to_string(), "status": "pending"}),
                );
                return Ok(());
            }
            if !a.node.json {
                eprintln!("submitted {hash}; waiting for finality (--no-wait skips this)…");
            }
            let v = client.wait_final(&hash, Duration::from_secs(timeout_secs))?;
            report(a.node.json, &v);
            if v["status"] == "failed" {
                bail!("transaction failed: {}", v["code"].as_str().unwrap_or("?"));
            }
            Ok(())
        }
    }
}

fn verify_proof(v: &Value) -> Result<String> {
    let proof: cairn_primitives::StateProof =
        serde_json::from_value(v["proof"].clone()).context("node sent no proof")?;
    let root_hex = v["state_root"]
        .as_str()
        .context("node sent no state root")?;
    let root = parse_hash(root_hex)?;
    proof
        .verify(&root)
        .map_err(|e| anyhow::anyhow!("the node's proof does not verify: {e}"))?;
    Ok(root_hex.to_string())
}

fn parse_hash(s: &str) -> Result<Hash> {
    s.parse().map_err(anyhow::Error::msg)
}

fn report(json: bool, v: &Value) {
    if json {
        println!("{v}");
    } else if v["status"] == "final" {
        println!(
            "{} final at height {}",
            v["hash"].as_str().unwrap_or("?"),
            v["height"]
        );
    } else {
        println!(
            "{} {}{}",
            v["hash"].as_str().unwrap_or("?"),
            v["status"].as_str().unwrap_or("?"),
            v["code"]
                .as_str()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
}

/// `cairn tx …`.
#[derive(Args)]
pub(crate) struct TxArgs {
    #[command(subcommand)]
    command: TxCommand,
    #[command(flatten)]
    node: NodeOpt,
}

#[derive(Subcommand)]
enum TxCommand {
    /// Pending, final (with its height) or failed (with its reason).
    Status {
        /// The transaction hash (hex).
        hash: String,
    },
}

pub(crate) fn tx(a: TxArgs) -> Result<()> {
    match a.command {
        TxCommand::Status { hash } => {
            let h = parse_hash(&hash)?;
            let v = a.node.client().tx_status(&h)?;
            report(a.node.json, &v);
            Ok(())
        }
    }
}
