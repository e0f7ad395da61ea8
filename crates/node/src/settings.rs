//! How an operator configures a node, and running one from that configuration: defaults, then
//! a TOML file, then `CAIRN_*` environment variables (the caller applies flags last).
//! Durations are written as people write them: `"250ms"`, `"2s"`, `"1m 30s"`.

use crate::{ApiSettings, Node, ProducerSettings, RunError, StartError};
use cairn_primitives::{Address, Genesis, Keypair};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A node's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSettings {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where the p2p network listens (default: this validator's address in the genesis).
    pub p2p_listen: Option<SocketAddr>,
    /// How long a leader waits for transactions before proposing an empty block.
    #[serde(with = "text_duration")]
    pub idle_block: Duration,
    /// How long to wait for a leader's proposal before voting to skip it.
    #[serde(with = "text_duration")]
    pub leader_timeout: Duration,
    /// Most encoded bytes per block.
    pub max_block_bytes: usize,
    /// Runtime worker threads.
    pub worker_threads: usize,
    /// Most transactions per block.
    pub max_block_txs: usize,
    /// Most transactions in the mempool.
    pub mempool_capacity: usize,
    /// Most pending transactions per account.
    pub mempool_per_account: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("reading settings {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid settings.
    #[error("in settings {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, where.
        reason: String,
    },
    /// An environment variable's value is not valid.
    #[error("{name}={value}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The settings contradict each other or are out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Default for NodeSettings {
    fn default() -> Self {
        let p = ProducerSettings::default();
        let a = ApiSettings::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7650)),
            p2p_listen: None,
            idle_block: p.idle_interval,
            leader_timeout: crate::consensus::Timing::default().leader_timeout,
            max_block_bytes: p.max_block_bytes,
            worker_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_block_txs: p.max_block_txs,
            mempool_capacity: p.mempool.capacity,
            mempool_per_account: p.mempool.per_account,
            max_body_bytes: a.max_body_bytes,
        }
    }
}

/// A value from the environment variable `name`, if it is set.
fn env<T: std::str::FromStr>(name: &'static str, slot: &mut T) -> Result<(), SettingsError>
where
    T::Err: std::fmt::Display,
{
    if let Ok(value) = std::env::var(name) {
        *slot = value.parse().map_err(|e: T::Err| SettingsError::Env {
            name,
            reason: e.to_string(),
            value,
        })?;
    }
    Ok(())
}

/// A duration from the environment variable `name`, if it is set.
fn env_duration(name: &'static str, slot: &mut Duration) -> Result<(), SettingsError> {
    if let Ok(value) = std::env::var(name) {
        *slot = humantime::parse_duration(&value).map_err(|e| SettingsError::Env {
            name,
            reason: e.to_string(),
            value,
        })?;
    }
    Ok(())
}

impl NodeSettings {
    /// Defaults, then `file`, then the environment, checked.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut s = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| SettingsError::Parse {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?
            }
            None => Self::default(),
        };
        env("CAIRN_LISTEN", &mut s.listen)?;
        if let Ok(value) = std::env::var("CAIRN_P2P_LISTEN") {
            s.p2p_listen =
                Some(
                    value
                        .parse()
                        .map_err(|e: std::net::AddrParseError| SettingsError::Env {
                            name: "CAIRN_P2P_LISTEN",
                            reason: e.to_string(),
                            value,
                        })?,
                );
        }
        env_duration("CAIRN_IDLE_BLOCK", &mut s.idle_block)?;
        env_duration("CAIRN_LEADER_TIMEOUT", &mut s.leader_timeout)?;
        env("CAIRN_MAX_BLOCK_BYTES", &mut s.max_block_bytes)?;
        env("CAIRN_WORKER_THREADS", &mut s.worker_threads)?;
        env("CAIRN_MAX_BLOCK_TXS", &mut s.max_block_txs)?;
        env("CAIRN_MEMPOOL_CAPACITY", &mut s.mempool_capacity)?;
        env("CAIRN_MEMPOOL_PER_ACCOUNT", &mut s.mempool_per_account)?;
        env("CAIRN_MAX_BODY_BYTES", &mut s.max_body_bytes)?;
        s.check()?;
        Ok(s)
    }

    /// That the settings can work together.
    pub fn check(&self) -> Result<(), SettingsError> {
        if self.max_block_txs == 0 || self.mempool_capacity == 0 {
            return Err(SettingsError::Invalid(
                "max_block_txs and mempool_capacity must be at least 1".into(),
            ));
        }
        if self.max_block_bytes < 64 << 10 {
            return Err(SettingsError::Invalid(
                "max_block_bytes must be at least 65536".into(),
            ));
        }
        if self.idle_block >= self.leader_timeout {
            return Err(SettingsError::Invalid(format!(
                "idle_block ({}) must be shorter than leader_timeout ({}): a leader waiting for \
                 transactions would otherwise be skipped",
                humantime::format_duration(self.idle_block),
                humantime::format_duration(self.leader_timeout)
            )));
        }
        Ok(())
    }

    /// What the block producer takes from these settings.
    pub fn producer(&self) -> ProducerSettings {
        ProducerSettings {
            idle_interval: self.idle_block,
            max_block_txs: self.max_block_txs,
            max_block_bytes: self.max_block_bytes,
            mempool: crate::mempool::Limits {
                capacity: self.mempool_capacity,
                per_account: self.mempool_per_account.max(1),
            },
        }
    }

    /// What the API takes from these settings.
    pub fn api(&self) -> ApiSettings {
        ApiSettings {
            max_body_bytes: self.max_body_bytes,
            ..ApiSettings::default()
        }
    }
}

/// Durations as text in settings files (`"250ms"`), through humantime.
mod text_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The chain in the data directory could not be opened.
    #[error("opening the chain in {dir}: {source}")]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: StartError,
    },
    /// The key is not one of the genesis validators.
    #[error("key {0} is not a validator of this genesis (see its [[validators]])")]
    NotValidator(Address),
    /// This validator's p2p address in the genesis is not host:port.
    #[error("this validator's genesis p2p address '{0}' is not host:port")]
    P2pAddress(String),
    /// The API's address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node stopped with an error.
    #[error("running the node: {0}")]
    Run(#[from] RunError),
}

/// Opens (or creates, from `genesis`) the chain in `data_dir` and runs `key`'s validator with
/// `settings` until `shutdown` resolves. `ready` gets the API's URL once it is bound.
/// Returns the height it stopped at.
pub fn serve(
    data_dir: &Path,
    genesis: Option<&Genesis>,
    key: &Keypair,
    settings: &NodeSettings,
    ready: impl FnOnce(&str),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<u64, ServeError> {
    let node =
        Node::open(data_dir, genesis, key.address(), settings.producer()).map_err(|source| {
            ServeError::Open {
                dir: data_dir.to_path_buf(),
                source,
            }
        })?;
    let p2p_listen = match settings.p2p_listen {
        Some(a) => a,
        None => node.with_chain(|c| {
            let me = key.address();
            let v = c.genesis().validators.iter().find(|v| v.key == me);
            match v.map(|v| (v.p2p.parse::<SocketAddr>(), &v.p2p)) {
                // A loopback address is bound as it is; any other, on every interface.
                Some((Ok(a), _)) if a.ip().is_loopback() => Ok(a),
                Some((Ok(a), _)) => Ok(SocketAddr::from(([0, 0, 0, 0], a.port()))),
                Some((Err(_), text)) => Err(ServeError::P2pAddress(text.clone())),
                None => Err(ServeError::NotValidator(me)),
            }
        })?,
    };
    let listener =
        std::net::TcpListener::bind(settings.listen).map_err(|source| ServeError::Listen {
            addr: settings.listen,
            source,
        })?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|source| ServeError::Listen {
            addr: settings.listen,
            source,
        })?
    );
    ready(&url);
    let validator = crate::Validator {
        key: key.private_key().clone(),
        p2p_listen,
        storage_dir: data_dir.join("consensus"),
        timing: crate::consensus::Timing {
            leader_timeout: settings.leader_timeout,
            certification_timeout: settings.leader_timeout.saturating_mul(3) / 2,
            ..Default::default()
        },
        worker_threads: settings.worker_threads,
    };
    crate::run(node.clone(), validator, listener, settings.api(), shutdown)?;
    Ok(node.height())
}

/// Resolves at the first Ctrl-C (SIGINT) or SIGTERM, saying which on stderr.
pub async fn termination() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("\nstopping…"),
        _ = sigterm => eprintln!("stopping (SIGTERM)…"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_and_written_as_text() {
        let s: NodeSettings =
            toml::from_str("idle_block = \"150ms\"\nleader_timeout = \"1s 500ms\"\n").unwrap();
        assert_eq!(s.idle_block, Duration::from_millis(150));
        assert_eq!(s.leader_timeout, Duration::from_millis(1_500));
        s.check().unwrap();
        let text = toml::to_string(&s).unwrap();
        assert!(text.contains("idle_block = \"150ms\""), "{text}");
        assert_eq!(toml::from_str::<NodeSettings>(&text).unwrap(), s);
        let err = toml::from_str::<NodeSettings>("idle_block = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("idle_block"), "{err}");
        let err = toml::from_str::<NodeSettings>("idle_block_ms = 5\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
