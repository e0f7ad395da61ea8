//! One validator's consensus stack: simplex orders block digests, marshal disseminates the
//! blocks, backfills the ones a replica missed and delivers the finalized ones in order, and
//! the executor applies them to the ledger.
//!
//! ```text
//!  p2p ch 0,1,2 ── simplex ──(Inline: propose/verify)── App ── mempool / ledger roots
//!                     │ certificates
//!  p2p ch 3 (blocks) ─ marshal ── finalized blocks, in order ── executor ── Chain::commit
//!  p2p ch 4 (backfill) ┘
//! ```
//!
//! The same code runs over commonware's authenticated, encrypted p2p (`cairn node`) and over
//! its simulated network under the deterministic runtime (the consensus tests).

use super::app::{App, Scheme, start_executor};
use super::block::ChainBlock;
use crate::node::Node;
use commonware_broadcast::buffered;
use commonware_consensus::marshal::standard::Inline;
use commonware_consensus::marshal::{self, core::Actor, resolver::p2p as marshal_resolver};
use commonware_consensus::simplex::{
    self,
    config::{ForwardPolicy, SkipBudget, SkipPolicy},
    elector::RoundRobin,
};
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::ConstantProvider;
use commonware_cryptography::sha256::Sha256;
use commonware_cryptography::{Digested, ed25519};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize, ordered::Set};
use rand_core::CryptoRng;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

/// p2p channel numbers.
pub mod channel {
    /// Simplex votes.
    pub const VOTES: u64 = 0;
    /// Simplex certificates.
    pub const CERTIFICATES: u64 = 1;
    /// Simplex's fetches of missing certificates.
    pub const RESOLVER: u64 = 2;
    /// Whole blocks, as proposed.
    pub const BLOCKS: u64 = 3;
    /// Marshal's backfill of missing blocks.
    pub const BACKFILL: u64 = 4;
}

/// Consensus timing and sizing.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long to wait for the leader's proposal before voting to skip the view.
    pub leader_timeout: Duration,
    /// How long to wait for a proposal to be notarized and certified.
    pub certification_timeout: Duration,
    /// How often a stuck view's skip vote is sent again.
    pub timeout_retry: Duration,
    /// How long to wait for a peer's answer to a fetch.
    pub fetch_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            leader_timeout: Duration::from_secs(2),
            certification_timeout: Duration::from_secs(3),
            timeout_retry: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(2),
        }
    }
}

/// What a validator needs to join consensus.
pub struct Config {
    /// Signature domain of votes: binds them to one chain.
    pub namespace: Vec<u8>,
    /// The validator set, in genesis order.
    pub participants: Vec<ed25519::PublicKey>,
    /// This validator's identity key.
    pub signer: ed25519::PrivateKey,
    /// Prefix of the storage partitions consensus and marshal journal into.
    pub partition: String,
    /// Timing.
    pub timing: Timing,
}

/// The network channels one validator's consensus uses, as (sender, receiver) pairs.
pub struct Channels<S, R> {
    /// [`channel::VOTES`].
    pub votes: (S, R),
    /// [`channel::CERTIFICATES`].
    pub certificates: (S, R),
    /// [`channel::RESOLVER`].
    pub resolver: (S, R),
    /// [`channel::BLOCKS`].
    pub blocks: (S, R),
    /// [`channel::BACKFILL`].
    pub backfill: (S, R),
}

/// Handles of the running tasks.
pub struct Running {
    /// Simplex.
    pub consensus: Handle<()>,
    /// Marshal.
    pub marshal: Handle<()>,
    /// The executor of finalized blocks.
    pub executor: Handle<()>,
}

impl Running {
    /// Stops every task (as a crash would: everything acknowledged is already durable).
    pub fn abort(self) {
        self.consensus.abort();
        self.marshal.abort();
        self.executor.abort();
    }
}

/// The scheme instance this validator signs with (or verifies with, if it is not in the set).
pub fn scheme(cfg: &Config) -> Scheme {
    let set = Set::from_iter_dedup(cfg.participants.iter().cloned());
    Scheme::signer(&cfg.namespace, set.clone(), cfg.signer.clone())
        .unwrap_or_else(|| Scheme::verifier(&cfg.namespace, set))
}

const PAGE_CACHE: usize = 4096;
const MAILBOX: NonZeroUsize = NZUsize!(16_384);

/// Starts one validator's consensus, marshal and executor over `channels`.
pub async fn start<E, S, R, P, B>(
    runtime: E,
    cfg: Config,
    node: Arc<Node>,
    channels: Channels<S, R>,
    peers: P,
    blocker: B,
) -> Running
where
    E: Spawner + Clock + Storage + Metrics + CryptoRng,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
    P: Provider<PublicKey = ed25519::PublicKey> + Clone,
    B: Blocker<PublicKey = ed25519::PublicKey> + Clone,
{
    let me = commonware_cryptography::Signer::public_key(&cfg.signer);
    let scheme = scheme(&cfg);
    let max_block = node.settings().max_block_bytes;
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(PAGE_CACHE));
    let epocher = FixedEpocher::new(NZU64!(u64::MAX));
    let genesis = node.with_chain(|c| {
        let root = c.root_at(0).ok().flatten().map(|(r, _)| r);
        ChainBlock::genesis(root.unwrap_or_default(), c.genesis().genesis_time_ms)
    });

    // Marshal: blocks in, finalized blocks out in order, backfill for what is missing.
    let resolver = marshal_resolver::init(
        runtime.child("marshal_resolver"),
        marshal_resolver::Config {
            public_key: me.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: MAILBOX,
            fetch_timeout: NZDuration!(cfg.timing.fetch_timeout),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );
    let (broadcast, buffer) = buffered::Engine::new(
        runtime.child("blocks"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size: MAILBOX,
            deque_size: 16,
            priority: false,
            codec_config: max_block,
            peer_provider: peers.clone(),
            strategy: Sequential,
        },
    );
    broadcast.start(channels.blocks);

    let prefix = cfg.partition.clone();
    let archive = |name: &str, codec| immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 1024,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 1024,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 64 << 20,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(4096),
        codec_config: codec,
        replay_buffer: NZUsize!(1 << 20),
        freezer_key_write_buffer: NZUsize!(1 << 20),
        freezer_value_write_buffer: NZUsize!(1 << 20),
        ordinal_write_buffer: NZUsize!(1 << 20),
    };
    let finalizations = immutable::Archive::init(
        runtime.child("finalizations"),
        archive(
            "finalizations",
            <Scheme as commonware_cryptography::certificate::Verifier>::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .expect("finalizations archive opens");
    let blocks = immutable::Archive::init(
        runtime.child("finalized_blocks"),
        archive("blocks", max_block),
    )
    .await
    .expect("blocks archive opens");
    let (actor, mailbox, _floor) = Actor::init(
        runtime.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::new(scheme.clone()),
            epocher: epocher.clone(),
            start: marshal::Start::Genesis(Digested::precomputed(
                genesis,
                commonware_cryptography::sha256::Digest([0; 32]),
            )),
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size: MAILBOX,
            view_retention: ViewDelta::new(64),
            prunable_items_per_section: NZU64!(64),
            page_cache: page_cache.clone(),
            replay_buffer: NZUsize!(1 << 20),
            key_write_buffer: NZUsize!(1 << 20),
            value_write_buffer: NZUsize!(1 << 20),
            block_codec_config: max_block,
            max_repair: NZUsize!(256),
            max_pending_acks: NZUsize!(64),
            strategy: Sequential,
        },
    )
    .await;
    let (finalizer, executor) = start_executor(runtime.child("executor"), node.clone());
    let marshal_handle = actor.start(finalizer, buffer, resolver);

    // Simplex over the Inline wrapper: proposals verified before this validator votes.
    let wrapper: Inline<_, Scheme, App<E>, ChainBlock, FixedEpocher> =
        Inline::new(runtime.child("inline"), App::new(node), mailbox, epocher);
    let t = &cfg.timing;
    let engine = simplex::Engine::new(
        runtime.child("simplex"),
        simplex::config::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: wrapper.clone(),
            relay: wrapper.clone(),
            reporter: wrapper,
            track_historical_votes: false,
            strategy: Sequential,
            partition: format!("{prefix}-simplex"),
            mailbox_size: MAILBOX,
            epoch: Epoch::zero(),
            floor: simplex::config::Floor::Genesis(commonware_cryptography::sha256::Digest(
                [0; 32],
            )),
            replay_buffer: NZUsize!(1 << 20),
            write_buffer: NZUsize!(1 << 20),
            page_cache,
            leader_timeout: t.leader_timeout,
            certification_timeout: t.certification_timeout,
            timeout_retry: t.timeout_retry,
            view_retention: ViewDelta::new(64),
            skip: SkipPolicy::Enabled {
                timeout: t.certification_timeout + t.timeout_retry,
                budget: SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(t.fetch_timeout),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::SilentVoters,
        },
    );
    let consensus = engine.start(channels.votes, channels.certificates, channels.resolver);
    Running {
        consensus,
        marshal: marshal_handle,
        executor,
    }
}
