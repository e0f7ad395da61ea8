//! `cairn genesis`.

use anyhow::{Context, Result, bail};
use cairn_primitives::{
    Address, Genesis, GenesisAccount, PaymentModel, Validator, decay_per_epoch,
};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct GenesisArgs {
    /// Check an existing genesis file instead of writing one.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Where to write the genesis file ("-" for standard output).
    #[arg(long, short, default_value = "genesis.toml")]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
    /// Network name.
    #[arg(long, default_value = "cairn-devnet")]
    chain_id: String,
    /// How customers pay: bme (burn for credits) or direct (tokens to providers).
    #[arg(long, default_value = "bme", value_parser = ["bme", "direct"])]
    payment_model: String,
    /// Epoch length in seconds (an hour in production).
    #[arg(long, default_value_t = 3600)]
    epoch_secs: u64,
    /// Annual emission decay factor (io.net: 0.885).
    #[arg(long, default_value_t = 0.885)]
    annual_decay: f64,
    /// Years the emission schedule runs.
    #[arg(long, default_value_t = 20)]
    years: u64,
    /// Fund an account: ADDRESS=TOKENS (repeatable).
    #[arg(long = "fund", value_name = "ADDRESS=TOKENS")]
    fund: Vec<String>,
    /// Add a validator: KEY@HOST:PORT (repeatable).
    #[arg(long = "validator", value_name = "KEY@HOST:PORT")]
    validators: Vec<String>,
    /// Add a checker staked at genesis: ADDRESS@HOST:PORT=TOKENS, its key's address, the
    /// endpoint workers dial, and its stake, minted into its bond (repeatable).
    #[arg(long = "checker", value_name = "ADDRESS@HOST:PORT=TOKENS")]
    checkers: Vec<String>,
    /// Add a price-oracle key (repeatable).
    #[arg(long = "oracle", value_name = "ADDRESS")]
    oracles: Vec<Address>,
    /// Treasury address (default: all zero bytes, an address nobody holds).
    #[arg(long)]
    treasury: Option<Address>,
}

pub(crate) fn run(a: GenesisArgs) -> Result<()> {
    if let Some(path) = a.check {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let g = Genesis::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
        let p = g
            .validate()
            .with_context(|| format!("in {}", path.display()))?;
        println!(
            "{} is valid: chain {}, {} accounts holding {} {}, {} validators, {} classes, genesis hash {}",
            path.display(),
            p.chain_id,
            p.accounts.len(),
            p.genesis_supply.display(p.decimals),
            p.symbol,
            p.validators.len(),
            p.classes.len(),
            p.genesis_hash
        );
        return Ok(());
    }
    if a.epoch_secs == 0 || a.years == 0 {
        bail!("--epoch-secs and --years must be at least 1");
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let mut g = Genesis::production(&a.chain_id, a.epoch_secs, now_ms);
    g.payment_model = if a.payment_model == "direct" {
        PaymentModel::Direct
    } else {
        PaymentModel::Bme
    };
    g.emission.epochs = a.years * 365 * 24 * 3600 / a.epoch_secs;
    g.emission.decay_per_epoch = decay_per_epoch(a.annual_decay, a.epoch_secs);
    for f in &a.fund {
        let (addr, amount) = f
            .split_once('=')
            .with_context(|| format!("--fund '{f}' is not ADDRESS=TOKENS"))?;
        g.accounts.push(GenesisAccount {
            address: addr.parse().with_context(|| format!("--fund '{f}'"))?,
            balance: amount.to_string(),
        });
    }
    for v in &a.validators {
        let (key, p2p) = v
            .split_once('@')
            .with_context(|| format!("--validator '{v}' is not KEY@HOST:PORT"))?;
        g.validators.push(Validator {
            key: key.parse().with_context(|| format!("--validator '{v}'"))?,
            p2p: p2p.to_string(),
        });
    }
    for c in &a.checkers {
        let bad = || format!("--checker '{c}' is not ADDRESS@HOST:PORT=TOKENS");
        let (addr, rest) = c.split_once('@').with_context(bad)?;
        let (endpoint, stake) = rest.rsplit_once('=').with_context(bad)?;
        g.checkers.push(cairn_primitives::GenesisChecker {
            address: addr.parse().with_context(bad)?,
            endpoint: endpoint.to_string(),
            stake: stake.to_string(),
        });
    }
    g.oracle.keys = a.oracles;
    if let Some(t) = a.treasury {
        g.treasury = t;
    }
    g.validate()
        .context("the genesis these options describe is invalid")?;
    let text = g.to_documented_toml();
    if a.out.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    if a.out.exists() && !a.force {
        bail!("{} exists; pass --force to overwrite it", a.out.display());
    }
    std::fs::write(&a.out, text).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "wrote {} (chain {}); edit it, then check it with `cairn genesis --check {}`",
        a.out.display(),
        g.chain_id,
        a.out.display()
    );
    Ok(())
}
