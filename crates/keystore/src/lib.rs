//! Key files. Each key is a Solana-compatible keypair file (a JSON array of 64 numbers: the
//! 32-byte seed, then the public key) named `<name>.json`, created with mode 0600 in a 0700
//! directory. The directory is `$CAIRN_HOME/keys`, else `$XDG_CONFIG_HOME/cairn/keys`, else
//! `~/.config/cairn/keys`.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let ks = cairn_keystore::Keystore::at(dir.path());
//! let k = ks.create("alice").unwrap();
//! assert_eq!(ks.load("alice").unwrap().address(), k.address());
//! ```
#![deny(missing_docs)]

use cairn_primitives::Keypair;
use rand::Rng as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Key store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No key by that name.
    #[error(
        "no key named '{0}'; create one with `cairn keys new {0}` or list them with `cairn keys list`"
    )]
    NotFound(String),
    /// A key by that name exists already.
    #[error("a key named '{0}' exists already; choose another name")]
    Exists(String),
    /// The name would escape the directory or is empty.
    #[error("key name '{0}' must be 1-64 characters of letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// The key material is not valid.
    #[error("invalid key: {0}")]
    Invalid(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A directory of key files.
#[derive(Clone, Debug)]
pub struct Keystore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The default key directory (see the crate docs).
pub fn default_dir() -> PathBuf {
    if let Some(h) = env_dir("CAIRN_HOME") {
        return h.join("keys");
    }
    if let Some(x) = env_dir("XDG_CONFIG_HOME") {
        return x.join("cairn").join("keys");
    }
    home().join(".config").join("cairn").join("keys")
}

/// A directory named by an environment variable. Empty or relative values count as unset,
/// as the XDG base directory specification says (an empty `XDG_DATA_HOME=` must not put
/// files under the current directory).
fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// The user's home (`$HOME`), else the current directory.
fn home() -> PathBuf {
    env_dir("HOME").unwrap_or_else(|| PathBuf::from("."))
}

/// Where Cairn keeps data: `$CAIRN_HOME`, else `$XDG_DATA_HOME/cairn`, else
/// `~/.local/share/cairn`.
pub fn data_home() -> PathBuf {
    env_dir("CAIRN_HOME").unwrap_or_else(|| {
        env_dir("XDG_DATA_HOME")
            .unwrap_or_else(|| home().join(".local").join("share"))
            .join("cairn")
    })
}

/// Parses a Solana keypair file's contents (64 numbers) into a keypair, checking that the
/// public half matches the secret.
pub fn parse_solana_json(text: &str) -> Result<Keypair> {
    let bytes: Vec<u8> = serde_json::from_str(text)
        .map_err(|e| Error::Invalid(format!("expected a JSON array of 64 numbers: {e}")))?;
    keypair_from_bytes(&bytes)
}

/// A keypair from 32 bytes (seed) or 64 bytes (seed ‖ public key, checked).
pub fn keypair_from_bytes(bytes: &[u8]) -> Result<Keypair> {
    let seed: [u8; 32] = bytes
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::Invalid(format!("{} bytes; expected 32 or 64", bytes.len())))?;
    let k = Keypair::from_seed(seed);
    match bytes.len() {
        32 => Ok(k),
        64 if bytes[32..] == k.address().0 => Ok(k),
        64 => Err(Error::Invalid(
            "the public key in the file does not match its secret".into(),
        )),
        n => Err(Error::Invalid(format!("{n} bytes; expected 32 or 64"))),
    }
}

/// A keypair from a secret written as base58 (Solana's export) or hex, 32 or 64 bytes.
pub fn parse_secret(s: &str) -> Result<Keypair> {
    let s = s.trim();
    if let Ok(b) = hex::decode(s).map_err(drop).and_then(|b| {
        if b.len() == 32 || b.len() == 64 {
            Ok(b)
        } else {
            Err(())
        }
    }) {
        return keypair_from_bytes(&b);
    }
    let b = bs58::decode(s)
        .into_vec()
        .map_err(|_| Error::Invalid("secret is neither hex nor base58".into()))?;
    keypair_from_bytes(&b)
}

/// The Solana keypair file contents for a key.
pub fn to_solana_json(k: &Keypair) -> String {
    let mut bytes = k.seed().to_vec();
    bytes.extend_from_slice(&k.address().0);
    serde_json::to_string(&bytes).unwrap_or_default()
}

impl Keystore {
    /// The key store in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The key store in [`default_dir`].
    pub fn default_location() -> Self {
        Self::at(default_dir())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a key lives in.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty()
            || name.len() > 64
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::BadName(name.to_string()));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Generates and stores a new key.
    pub fn create(&self, name: &str) -> Result<Keypair> {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let k = Keypair::from_seed(seed);
        self.store(name, &k)?;
        Ok(k)
    }

    /// Stores a key under `name`; refuses to overwrite.
    pub fn store(&self, name: &str, k: &Keypair) -> Result<()> {
        let path = self.path(name)?;
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(io(&self.dir))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Exists(name.to_string())
                } else {
                    Error::Io {
                        path: path.clone(),
                        source: e,
                    }
                }
            })?;
        f.write_all(to_solana_json(k).as_bytes())
            .map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        Ok(())
    }

    /// Loads a key.
    pub fn load(&self, name: &str) -> Result<Keypair> {
        let path = self.path(name)?;
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(name.to_string())
            } else {
                Error::Io {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        parse_solana_json(&text)
    }

    /// Loads `name`, creating it first when missing.
    pub fn load_or_create(&self, name: &str) -> Result<Keypair> {
        match self.load(name) {
            Err(Error::NotFound(_)) => self.create(name),
            r => r,
        }
    }

    /// Names of the stored keys, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_solana_compatible() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::at(dir.path().join("keys"));
        let k = ks.create("a").unwrap();
        let path = ks.path("a").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        let nums: Vec<u8> = serde_json::from_str(&text).unwrap();
        assert_eq!(nums.len(), 64);
        assert_eq!(&nums[32..], &k.address().0);
        assert!(matches!(ks.create("a"), Err(Error::Exists(_))));
        assert!(matches!(ks.load("b"), Err(Error::NotFound(_))));
        assert!(matches!(ks.path("../x"), Err(Error::BadName(_))));
        assert_eq!(ks.list().unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn rejects_mismatched_public_half() {
        let k = Keypair::from_seed([5; 32]);
        let mut bytes = k.seed().to_vec();
        bytes.extend_from_slice(&[0u8; 32]);
        assert!(matches!(keypair_from_bytes(&bytes), Err(Error::Invalid(_))));
        let hex_seed = hex::encode(k.seed());
        assert_eq!(parse_secret(&hex_seed).unwrap().address(), k.address());
        let b58 =
            bs58::encode([k.seed().as_slice(), k.address().0.as_slice()].concat()).into_string();
        assert_eq!(parse_secret(&b58).unwrap().address(), k.address());
    }
}
