//! The Cairn node: simplex consensus over authenticated p2p, a mempool, the execution of
//! finalized blocks over the ledger and its store, and the HTTP API. [`serve`] runs a
//! validator from [`NodeSettings`] (what `cairn node` and `cairn devnet` do).
//!
//! ```
//! // Settings as an operator writes them; durations as text.
//! let text = "listen = \"127.0.0.1:7650\"\nidle_block = \"200ms\"\nleader_timeout = \"2s\"\n";
//! let settings: cairn_node::NodeSettings = toml::from_str(text).unwrap();
//! settings.check().unwrap();
//! assert_eq!(settings.idle_block, std::time::Duration::from_millis(200));
//! ```

pub mod api;
pub mod consensus;
pub mod logs;
pub mod mempool;
pub mod node;
mod settings;

pub use api::{ApiSettings, router};
pub use node::{ExecError, FinalTx, Finalized, Node, ProducerSettings, StartError, now_ms};
pub use settings::{NodeSettings, ServeError, SettingsError, serve, termination};

use commonware_cryptography::{Signer as _, ed25519};
use commonware_p2p::{AddressableManager as _, authenticated::lookup};
use commonware_runtime::{Quota, Runner as _, Supervisor as _};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::{NZU32, NZUsize, ordered::Map};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How one validator runs: its identity, where peers reach it and where it keeps consensus's
/// journals.
pub struct Validator {
    /// The identity key (one of the genesis validators).
    pub key: ed25519::PrivateKey,
    /// Where the p2p network listens.
    pub p2p_listen: SocketAddr,
    /// Consensus and marshal journals.
    pub storage_dir: PathBuf,
    /// Consensus timing.
    pub timing: consensus::Timing,
    /// Runtime worker threads.
    pub worker_threads: usize,
}

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The key is not one of the genesis validators.
    #[error("key {0} is not a validator of this genesis (see the genesis file's [[validators]])")]
    NotValidator(cairn_primitives::Address),
    /// A validator's p2p address is not usable.
    #[error("validator {key}: p2p address '{addr}' is not host:port")]
    BadPeer {
        /// The validator.
        key: cairn_primitives::Address,
        /// Its address.
        addr: String,
    },
    /// The API could not be served.
    #[error("serving the API: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs a validator: p2p, consensus, execution and the API on `listener`, until `shutdown`
/// resolves; then stops the API and consensus and returns. Every block acknowledged as final
/// is already durable, so stopping at any point loses nothing.
pub fn run(
    node: Arc<Node>,
    validator: Validator,
    listener: std::net::TcpListener,
    api: ApiSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let genesis = node.with_chain(|c| c.genesis().clone());
    let me = validator.key.public_key();
    let mut peers = Vec::new();
    for v in &genesis.validators {
        let key = v.key.public_key().ok_or_else(|| RunError::BadPeer {
            key: v.key,
            addr: v.p2p.clone(),
        })?;
        let addr: SocketAddr = v.p2p.parse().map_err(|_| RunError::BadPeer {
            key: v.key,
            addr: v.p2p.clone(),
        })?;
        peers.push((key, addr));
    }
    if !peers.iter().any(|(k, _)| *k == me) {
        return Err(RunError::NotValidator(cairn_primitives::Address::of(&me)));
    }
    let namespace = consensus::namespace(&genesis.chain_id);
    let cfg = commonware_runtime::tokio::Config::new()
        .with_worker_threads(validator.worker_threads.max(2))
        .with_storage_directory(validator.storage_dir.clone());
    let runner = commonware_runtime::tokio::Runner::new(cfg);
    runner.start(|runtime| async move {
        let max_message =
            u32::try_from(node.settings().max_block_bytes + (1 << 16)).unwrap_or(u32::MAX);
        let handshake = Cups::<_, commonware_cryptography::ChaCha20Poly1305>::new(
            Sake {
                signer: validator.key.clone(),
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        );
        // Validators that all share loopback (several on one machine) would trip the per-IP
        // handshake limits meant for the open internet: use commonware's local profile then.
        let all_loopback = peers.iter().all(|(_, a)| a.ip().is_loopback());
        let make = if all_loopback {
            lookup::Config::local
        } else {
            lookup::Config::recommended
        };
        let mut p2p_cfg = make(
            handshake,
            &namespace,
            validator.p2p_listen,
            NZUsize!(peers.len().max(1)),
            max_message,
            NZUsize!(16_384),
        );
        // Validators of a private network are on private addresses.
        p2p_cfg.allow_private_ips = true;
        let (mut network, mut oracle) = lookup::Network::new(runtime.child("p2p"), p2p_cfg);
        let book: Map<_, commonware_p2p::Address> = peers
            .iter()
            .map(|(k, a)| (k.clone(), (*a).into()))
            .collect::<Vec<_>>()
            .try_into()
            .expect("genesis validators are distinct");
        oracle.track(0, book);
        // Per peer and channel; also sizes each channel's inbound queue (one burst per peer).
        let quota = Quota::per_second(NZU32!(4_096));
        let channels = consensus::Channels {
            votes: network.register(consensus::engine::channel::VOTES, quota),
            certificates: network.register(consensus::engine::channel::CERTIFICATES, quota),
            resolver: network.register(consensus::engine::channel::RESOLVER, quota),
            blocks: network.register(consensus::engine::channel::BLOCKS, quota),
            backfill: network.register(consensus::engine::channel::BACKFILL, quota),
        };
        let p2p = network.start();
        let running = consensus::start(
            runtime.child("consensus"),
            consensus::Config {
                namespace: namespace.clone(),
                participants: peers.iter().map(|(k, _)| k.clone()).collect(),
                signer: validator.key.clone(),
                partition: "cairn".into(),
                timing: validator.timing.clone(),
            },
            node.clone(),
            channels,
            oracle.clone(),
            oracle,
        )
        .await;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = router(node.clone(), api);
        // Event streams never end by themselves: end them first, or a graceful shutdown would
        // wait on every subscriber.
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                node.close_streams();
            })
            .await;
        running.abort();
        p2p.abort();
        served?;
        Ok(())
    })
}
