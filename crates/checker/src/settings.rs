//! How an operator configures a checker: defaults, then a TOML file, then `CAIRN_CHECKER_*`
//! variables (the caller applies flags last). Durations are text: `"250ms"`, `"1m"`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A checker's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckerSettings {
    /// The node's API.
    pub node: String,
    /// Where devices connect (its on-chain endpoint must reach this).
    pub listen: SocketAddr,
    /// Where results waiting to be posted and the receipts kept for disputes live.
    pub data_dir: PathBuf,
    /// How often the chain is polled for rounds.
    #[serde(with = "text_duration")]
    pub poll: Duration,
    /// How often the list of assigned devices is refreshed between rounds.
    #[serde(with = "text_duration")]
    pub refresh: Duration,
    /// How often devices must send heartbeats (told to each on connecting).
    #[serde(with = "text_duration")]
    pub heartbeat: Duration,
    /// Where Prometheus metrics are served (none: not served).
    pub metrics: Option<SocketAddr>,
}

impl Default for CheckerSettings {
    fn default() -> Self {
        Self {
            node: "http://127.0.0.1:7650".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7660)),
            data_dir: cairn_keystore::data_home().join("checker"),
            poll: Duration::from_millis(250),
            refresh: Duration::from_secs(5),
            heartbeat: Duration::from_secs(60),
            metrics: None,
        }
    }
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
        /// Why.
        reason: String,
    },
    /// Out of range.
    #[error("{0}")]
    Invalid(String),
}

fn env_with<T>(
    name: &'static str,
    slot: &mut T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<(), SettingsError> {
    if let Ok(value) = std::env::var(name) {
        *slot = parse(&value).map_err(|reason| SettingsError::Env {
            name,
            reason,
            value,
        })?;
    }
    Ok(())
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

impl CheckerSettings {
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
        env_with("CAIRN_CHECKER_NODE", &mut s.node, |v| Ok(v.to_string()))?;
        env_with("CAIRN_CHECKER_LISTEN", &mut s.listen, |v| {
            v.parse()
                .map_err(|e: std::net::AddrParseError| e.to_string())
        })?;
        env_with("CAIRN_CHECKER_DATA_DIR", &mut s.data_dir, |v| Ok(v.into()))?;
        env_with("CAIRN_CHECKER_POLL", &mut s.poll, duration)?;
        env_with("CAIRN_CHECKER_REFRESH", &mut s.refresh, duration)?;
        env_with("CAIRN_CHECKER_HEARTBEAT", &mut s.heartbeat, duration)?;
        env_with("CAIRN_CHECKER_METRICS", &mut s.metrics, |v| {
            v.parse()
                .map(Some)
                .map_err(|e: std::net::AddrParseError| e.to_string())
        })?;
        s.check()?;
        Ok(s)
    }

    /// That the settings can work.
    pub fn check(&self) -> Result<(), SettingsError> {
        if self.poll.is_zero() || self.poll > Duration::from_secs(60) {
            return Err(SettingsError::Invalid("poll must be within (0, 1m]".into()));
        }
        if self.heartbeat < Duration::from_secs(1) || self.heartbeat > Duration::from_secs(3600) {
            return Err(SettingsError::Invalid(
                "heartbeat must be within [1s, 1h]".into(),
            ));
        }
        if self.refresh.is_zero() {
            return Err(SettingsError::Invalid("refresh must be more than 0".into()));
        }
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_what_it_names_and_refuses_what_it_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("checker.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9000\"\nheartbeat = \"5s\"\n").unwrap();
        let s = CheckerSettings::load(Some(&f)).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.heartbeat, Duration::from_secs(5));
        std::fs::write(&f, "heartbeat_ms = 5\n").unwrap();
        let e = CheckerSettings::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        std::fs::write(&f, "heartbeat = \"10ms\"\n").unwrap();
        let e = CheckerSettings::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("heartbeat"), "{e}");
    }
}
