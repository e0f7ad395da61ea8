//! `cairn keys`.

use anyhow::{Context, Result, bail};
use cairn_keystore::{Keystore, parse_secret, parse_solana_json, to_solana_json};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct KeysArgs {
    /// Key directory (default: $CAIRN_HOME/keys, $XDG_CONFIG_HOME/cairn/keys or ~/.config/cairn/keys).
    #[arg(long, env = "CAIRN_KEYS_DIR", global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a new key and print its address.
    New {
        /// Name to store it under.
        #[arg(default_value = "default")]
        name: String,
    },
    /// Print a key's address (and, only with --secret, its secret).
    Show {
        /// The key's name.
        #[arg(default_value = "default")]
        name: String,
        /// Also print the secret, as a Solana keypair JSON array. Anyone who sees it owns the key.
        #[arg(long)]
        secret: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import a key from a Solana keypair file (64 numbers) or a raw secret (base58 or hex).
    Import {
        /// Name to store it under.
        name: String,
        /// A Solana keypair JSON file, such as ~/.config/solana/id.json.
        #[arg(long, conflicts_with = "secret", required_unless_present = "secret")]
        file: Option<PathBuf>,
        /// A raw secret: 32 or 64 bytes in base58 or hex. Prefer --file: arguments can end up in shell history.
        #[arg(long)]
        secret: Option<String>,
    },
    /// List stored keys with their addresses.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(a: KeysArgs) -> Result<()> {
    let ks = a.dir.map_or_else(Keystore::default_location, Keystore::at);
    match a.command {
        KeysCommand::New { name } => {
            let k = ks.create(&name)?;
            println!("{}", k.address());
            eprintln!("stored as '{name}' in {}", ks.path(&name)?.display());
        }
        KeysCommand::Show { name, secret, json } => {
            let k = ks.load(&name)?;
            if json {
                let mut v = serde_json::json!({ "name": name, "address": k.address().to_string() });
                if secret {
                    v["secret"] = serde_json::from_str(&to_solana_json(&k))?;
                }
                println!("{v}");
            } else {
                println!("{}", k.address());
                if secret {
                    println!("{}", to_solana_json(&k));
                }
            }
        }
        KeysCommand::Import { name, file, secret } => {
            let k = match (file, secret) {
                (Some(f), _) => {
                    let text = std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?;
                    parse_solana_json(&text).with_context(|| format!("in {}", f.display()))?
                }
                (None, Some(s)) => parse_secret(&s)?,
                (None, None) => bail!("give --file or --secret"),
            };
            ks.store(&name, &k)?;
            println!("{}", k.address());
            eprintln!("imported as '{name}' into {}", ks.path(&name)?.display());
        }
        KeysCommand::List { json } => {
            let mut rows = Vec::new();
            for n in ks.list()? {
                let addr = ks.load(&n).map(|k| k.address().to_string());
                rows.push((n, addr));
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(n, a)| match a {
                        Ok(a) => serde_json::json!({"name": n, "address": a}),
                        Err(e) => serde_json::json!({"name": n, "error": e.to_string()}),
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else if rows.is_empty() {
                eprintln!(
                    "no keys in {}; create one with `cairn keys new`",
                    ks.dir().display()
                );
            } else {
                for (n, a) in rows {
                    match a {
                        Ok(a) => println!("{n:20} {a}"),
                        Err(e) => println!("{n:20} unreadable: {e}"),
                    }
                }
            }
        }
    }
    Ok(())
}
