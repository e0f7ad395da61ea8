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
    pub(crate) url: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl NodeOpt {
    pub(crate) fn client(&self) -> Client {
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
        /// Recipient address.
        #[arg(long)]
        to: Address,
        /// Amount in tokens (decimal, e.g. 12.5).
        #[arg(long)]
        amount: String,
        #[command(flatten)]
        signer: Signer,
    },
}

/// Who signs a transaction, its fee, and whether to wait for finality.
#[derive(Args, Clone)]
pub(crate) struct Signer {
    /// The sender's key name in the key store.
    #[arg(long)]
    pub(crate) key: String,
    /// Key store directory.
    #[arg(long, env = "CAIRN_KEYS_DIR")]
    pub(crate) keys_dir: Option<PathBuf>,
    /// Fee in base units (default: the chain's minimum).
    #[arg(long)]
    fee: Option<u64>,
    /// Return once admitted, without waiting for finality.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for finality.
    #[arg(long, default_value = "30")]
    timeout_secs: u64,
}

/// What a signed command needs from the node before it builds its transaction.
pub(crate) struct ChainInfo {
    pub(crate) chain_id: String,
    pub(crate) decimals: u8,
    pub(crate) min_fee: u64,
}

impl ChainInfo {
    pub(crate) fn of(client: &Client) -> Result<Self> {
        let status = client.status()?;
        Ok(Self {
            chain_id: status["chain_id"]
                .as_str()
                .context("node status without chain_id")?
                .to_string(),
            decimals: u8::try_from(status["decimals"].as_u64().unwrap_or(9)).unwrap_or(9),
            min_fee: status["min_fee_base"].as_u64().unwrap_or(0),
        })
    }

    /// Tokens from a decimal string, e.g. `12.5`.
    pub(crate) fn tokens(&self, s: &str, what: &str) -> Result<Amount> {
        Amount::parse_decimal(s, self.decimals).with_context(|| format!("{what} '{s}'"))
    }
}

/// Signs `body` (built once the chain's parameters are known, from them and the sender's
/// address) with `key` at its next nonce and submits it; returns its hash once admitted.
/// Every signed command goes through here, and so does devnet's demo oracle.
pub(crate) fn sign_and_submit(
    client: &Client,
    key: &cairn_primitives::Keypair,
    fee: Option<u64>,
    body: impl FnOnce(&ChainInfo, &Address) -> Result<TxBody>,
) -> Result<Hash> {
    let chain = ChainInfo::of(client)?;
    let body = body(&chain, &key.address())?;
    let tx = Tx {
        sender: key.public_key(),
        nonce: client.next_nonce(&key.address())?,
        fee: Amount::from_base(fee.unwrap_or(chain.min_fee)),
        body,
    }
    .sign(key, &chain.chain_id);
    Ok(client.submit(&tx)?)
}

/// [`sign_and_submit`] with the signer's stored key, then waits for finality unless
/// `--no-wait`. Returns the final status (or the pending one); a transaction the ledger
/// rejected is an error naming its code.
pub(crate) fn send(
    node: &NodeOpt,
    signer: Signer,
    body: impl FnOnce(&ChainInfo, &Address) -> Result<TxBody>,
) -> Result<Value> {
    let client = node.client();
    let k = keys(signer.keys_dir).load(&signer.key)?;
    let hash = sign_and_submit(&client, &k, signer.fee, body)?;
    if signer.no_wait {
        let v = serde_json::json!({"hash": hash.to_string(), "status": "pending"});
        report(node.json, &v);
        return Ok(v);
    }
    if !node.json {
        eprintln!("submitted {hash}; waiting for finality (--no-wait skips this)…");
    }
    let v = client.wait_final(&hash, Duration::from_secs(signer.timeout_secs))?;
    report(node.json, &v);
    if v["status"] == "failed" {
        bail!("transaction failed: {}", v["code"].as_str().unwrap_or("?"));
    }
    Ok(v)
}

pub(crate) fn keys(dir: Option<PathBuf>) -> Keystore {
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
            let (v, verified) = if prove {
                let (v, root) = client.proven_account(&addr)?;
                (v, Some(root))
            } else {
                (client.account(&addr, false)?, None)
            };
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
        AccountCommand::Transfer { to, amount, signer } => {
            send(&a.node, signer, |c, _| {
                Ok(TxBody::Transfer {
                    to,
                    amount: c.tokens(&amount, "--amount")?,
                })
            })?;
            Ok(())
        }
    }
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

/// `cairn stake`: what an account has staked and what is unbonding.
#[derive(Args)]
pub(crate) struct StakeArgs {
    /// The address (base58).
    address: Option<Address>,
    /// A key's name in the key store, instead of an address.
    #[arg(long)]
    key: Option<String>,
    /// Key store directory.
    #[arg(long, env = "CAIRN_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    #[command(flatten)]
    node: NodeOpt,
}

pub(crate) fn stake(a: StakeArgs) -> Result<()> {
    let addr = match (a.address, a.key) {
        (Some(x), None) => x,
        (None, Some(k)) => keys(a.keys_dir).load(&k)?.address(),
        _ => bail!("give an address or --key NAME (one of them)"),
    };
    let v = a.node.client().account(&addr, false)?;
    if a.node.json {
        println!(
            "{}",
            serde_json::json!({"address": addr.to_string(), "stakes": v["stakes"],
                               "unbonding": v["unbonding"], "height": v["height"]})
        );
        return Ok(());
    }
    let empty = Vec::new();
    let stakes = v["stakes"].as_array().unwrap_or(&empty);
    let unbonding = v["unbonding"].as_array().unwrap_or(&empty);
    if stakes.is_empty() && unbonding.is_empty() {
        println!(
            "{addr} has nothing staked or unbonding (height {})",
            v["height"]
        );
        return Ok(());
    }
    for s in stakes {
        println!(
            "staked     {} tokens on device {} ({} shares)",
            s["tokens"].as_str().unwrap_or("?"),
            s["device"].as_str().unwrap_or("?"),
            s["shares"]
        );
    }
    for u in unbonding {
        println!(
            "unbonding  {} tokens, released at {} ms (entry {})",
            u["amount"].as_str().unwrap_or("?"),
            u["release_ms"],
            u["id"]
        );
    }
    Ok(())
}

/// `cairn delegate`: stake tokens behind a device (its rewards compound into the pool).
#[derive(Args)]
pub(crate) struct DelegateArgs {
    /// The device's address.
    #[arg(long)]
    device: Address,
    /// Tokens to stake (decimal).
    #[arg(long)]
    amount: String,
    #[command(flatten)]
    signer: Signer,
    #[command(flatten)]
    node: NodeOpt,
}

pub(crate) fn delegate(a: DelegateArgs) -> Result<()> {
    let device = a.device;
    let amount = a.amount;
    send(&a.node, a.signer, |c, _| {
        Ok(TxBody::Delegate {
            device,
            amount: c.tokens(&amount, "--amount")?,
        })
    })?;
    Ok(())
}

/// `cairn settle`: collect what closed epochs owe devices.
#[derive(Args)]
pub(crate) struct SettleArgs {
    /// Devices to settle (any device: settling only pays what the ledger owes its owner and
    /// its stake pool). Default: every device the signer owns that has rewards pending.
    #[arg(long = "device")]
    devices: Vec<Address>,
    #[command(flatten)]
    signer: Signer,
    #[command(flatten)]
    node: NodeOpt,
}

pub(crate) fn settle(a: SettleArgs) -> Result<()> {
    let client = a.node.client();
    let devices = if a.devices.is_empty() {
        let me = keys(a.signer.keys_dir.clone())
            .load(&a.signer.key)?
            .address();
        client.devices_with_pending_rewards(&me)?
    } else {
        a.devices
    };
    if devices.is_empty() {
        if a.node.json {
            println!("{}", serde_json::json!({"settled": 0}));
        } else {
            println!("nothing to settle: no device of this key has rewards pending");
        }
        return Ok(());
    }
    for chunk in devices.chunks(cairn_primitives::MAX_SETTLE_DEVICES) {
        if !a.node.json {
            eprintln!("settling {} device(s)…", chunk.len());
        }
        let devices = chunk.to_vec();
        send(&a.node, a.signer.clone(), |_, _| {
            Ok(TxBody::SettleRewards { devices })
        })?;
    }
    Ok(())
}

/// `cairn undelegate`: redeem pool shares; the tokens unbond for the genesis's unbonding
/// period, then return to the account.
#[derive(Args)]
pub(crate) struct UndelegateArgs {
    /// The device's address.
    #[arg(long)]
    device: Address,
    /// Pool shares to redeem (see `cairn stake`).
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    shares: Option<u64>,
    /// Redeem every share held in this device's pool.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    signer: Signer,
    #[command(flatten)]
    node: NodeOpt,
}

pub(crate) fn undelegate(a: UndelegateArgs) -> Result<()> {
    let device = a.device;
    let client = a.node.client();
    let shares = a.shares;
    send(&a.node, a.signer, |_, me| {
        let shares = match shares {
            Some(n) => n,
            None => {
                let v = client.account(me, false)?;
                v["stakes"]
                    .as_array()
                    .and_then(|l| {
                        l.iter()
                            .find(|s| s["device"].as_str() == Some(&device.to_string()))
                    })
                    .and_then(|s| s["shares"].as_u64())
                    .with_context(|| format!("{me} holds no shares in device {device}"))?
            }
        };
        Ok(TxBody::Undelegate { device, shares })
    })?;
    Ok(())
}

/// `cairn credits …`.
#[derive(Args)]
pub(crate) struct CreditsArgs {
    #[command(subcommand)]
    command: CreditsCommand,
    #[command(flatten)]
    node: NodeOpt,
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Burn tokens for compute credits at the oracle price (payment model `bme`).
    Buy {
        /// Tokens to burn (decimal).
        #[arg(long)]
        amount: String,
        #[command(flatten)]
        signer: Signer,
    },
}

pub(crate) fn credits(a: CreditsArgs) -> Result<()> {
    match a.command {
        CreditsCommand::Buy { amount, signer } => {
            let client = a.node.client();
            let stats = client.get("/v1/stats")?;
            if stats["payment_model"] == "direct" {
                bail!(
                    "this chain pays providers in tokens directly (payment model `direct`): there are no credits to buy"
                );
            }
            let Some(price) = stats["oracle_price_micro_usd"].as_u64() else {
                bail!(
                    "no fresh oracle price on this chain: credits are priced in USD at the oracle's price, and none of its oracles submitted one recently"
                );
            };
            if !a.node.json {
                eprintln!(
                    "oracle price: ${}.{:06} per token",
                    price / 1_000_000,
                    price % 1_000_000
                );
            }
            let mut before = None;
            let v = send(&a.node, signer, |c, me| {
                before = Some((
                    *me,
                    client.account(me, false)?["credits"].as_u64().unwrap_or(0),
                ));
                Ok(TxBody::BuyCredits {
                    amount: c.tokens(&amount, "--amount")?,
                })
            })?;
            if let Some((me, before)) = before
                && v["status"] == "final"
                && !a.node.json
            {
                let after = client.account(&me, false)?["credits"].as_u64().unwrap_or(0);
                println!(
                    "credits: {before} -> {after} (+{}; 1 credit = $0.00001)",
                    after.saturating_sub(before)
                );
            }
            Ok(())
        }
    }
}

/// `cairn oracle …`: for the price-oracle keys a genesis names.
#[derive(Args)]
pub(crate) struct OracleArgs {
    #[command(subcommand)]
    command: OracleCommand,
    #[command(flatten)]
    node: NodeOpt,
}

#[derive(Subcommand)]
enum OracleCommand {
    /// Submit the token's price in USD (the ledger uses the median of fresh submissions).
    Submit {
        /// Price of one whole token in USD, e.g. 1.25.
        #[arg(long)]
        usd: String,
        #[command(flatten)]
        signer: Signer,
    },
}

/// Micro-USD from a decimal dollar string.
pub(crate) fn micro_usd(s: &str) -> Result<u64> {
    let a = Amount::parse_decimal(s, 6).with_context(|| format!("price '{s}' (USD, e.g. 1.25)"))?;
    if a.base() == 0 {
        bail!("price must be above zero");
    }
    Ok(a.base())
}

pub(crate) fn oracle(a: OracleArgs) -> Result<()> {
    match a.command {
        OracleCommand::Submit { usd, signer } => {
            let micro = micro_usd(&usd)?;
            send(&a.node, signer, |_, _| {
                Ok(TxBody::SubmitPrice {
                    micro_usd_per_token: micro,
                })
            })?;
            Ok(())
        }
    }
}
