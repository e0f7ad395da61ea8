//! The node: the store, the mempool, block production and finality, and what the API reads.
//!
//! Ordering, today: the node is the sole validator of its genesis and finalizes the blocks it
//! builds as it commits them (one durable redb transaction per block, see `cairn-store`). The
//! node refuses a genesis that names more than one validator until the commonware simplex
//! engine is wired in (the next step of the Node issue); everything here sits behind
//! [`Node::produce_block`] and [`Node::subscribe`], which simplex will drive the same way.

use crate::mempool::{AdmitError, Limits, Mempool};
use cairn_ledger::{Event, Ledger};
use cairn_primitives::{Address, Block, Genesis, Hash, SignedTx};
use cairn_store::Chain;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Block production settings.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// How often a block is built when transactions are waiting.
    pub block_interval: Duration,
    /// How often a block is built when none are (time moves the ledger: epochs, leases).
    pub idle_interval: Duration,
    /// Most transactions per block.
    pub max_block_txs: usize,
    /// Mempool limits.
    pub mempool: Limits,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            block_interval: Duration::from_millis(200),
            idle_interval: Duration::from_secs(1),
            max_block_txs: 20_000,
            mempool: Limits::default(),
        }
    }
}

/// What one finalized block did, as subscribers see it.
#[derive(Debug, Clone)]
pub struct Finalized {
    /// Height.
    pub height: u64,
    /// Block hash.
    pub block_hash: Hash,
    /// State root after it.
    pub state_root: Hash,
    /// Its transactions' hashes, in order.
    pub txs: Vec<Hash>,
    /// Its events, with the index of the transaction that caused each (None: the block).
    pub events: Vec<(Option<u32>, Event)>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// The genesis names validators this build cannot yet run with.
    #[error(
        "genesis names {0} validators; this build orders blocks as a single validator \
         (multi-validator simplex consensus is not wired in yet)"
    )]
    Validators(usize),
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Transactions admitted to the mempool.
    pub admitted: AtomicU64,
    /// Transactions refused at admission.
    pub refused: AtomicU64,
    /// Blocks finalized since start.
    pub blocks: AtomicU64,
    /// Transactions finalized since start.
    pub finalized_txs: AtomicU64,
}

struct Inner {
    chain: Chain,
    mempool: Mempool,
    last_block: std::time::Instant,
}

/// A running node's state.
pub struct Node {
    inner: Mutex<Inner>,
    settings: ProducerSettings,
    proposer: Address,
    events: broadcast::Sender<Arc<Finalized>>,
    /// Counters.
    pub metrics: Metrics,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Node {
    /// Opens (or creates, from `genesis`) the chain in `data_dir`.
    pub fn open(
        data_dir: &Path,
        genesis: Option<&Genesis>,
        proposer: Address,
        settings: ProducerSettings,
    ) -> Result<Arc<Self>, StartError> {
        let chain = Chain::open(data_dir, genesis)?;
        let validators = chain.genesis().validators.len();
        if validators > 1 {
            return Err(StartError::Validators(validators));
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                mempool: Mempool::new(settings.mempool),
                chain,
                last_block: std::time::Instant::now(),
            }),
            settings,
            proposer,
            events,
            metrics: Metrics::default(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the chain half-written (each commit is
        // one transaction); keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` with the ledger (read-only view of the last finalized state).
    pub fn with_ledger<T>(&self, f: impl FnOnce(&Ledger) -> T) -> T {
        f(self.lock().chain.ledger())
    }

    /// Runs `f` with the chain.
    pub fn with_chain<T>(&self, f: impl FnOnce(&Chain) -> T) -> T {
        f(&self.lock().chain)
    }

    /// Pending transactions.
    pub fn mempool_len(&self) -> usize {
        self.lock().mempool.len()
    }

    /// Whether `hash` is waiting in the mempool.
    pub fn is_pending(&self, hash: &Hash) -> bool {
        self.lock().mempool.contains(hash)
    }

    /// Submits transactions; one verdict each.
    pub fn submit(&self, txs: Vec<SignedTx>) -> Vec<Result<Hash, AdmitError>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let ts = now_ms().max(inner.chain.ledger().globals().last_timestamp_ms);
        // Final transactions are duplicates too: the store's index knows them. A store that
        // cannot be read refuses nothing here; the ledger's nonce check still stops a replay.
        let hashes: Vec<Hash> = txs.iter().map(SignedTx::hash).collect();
        let known = inner.chain.landed(&hashes).unwrap_or_default();
        let out = inner
            .mempool
            .admit(&mut inner.chain, txs, ts, |h| known.contains(h));
        for r in &out {
            let c = if r.is_ok() {
                &self.metrics.admitted
            } else {
                &self.metrics.refused
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// Finalized blocks, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Finalized>> {
        self.events.subscribe()
    }

    /// Builds, applies and durably commits the next block if transactions wait or the idle
    /// interval has passed. Returns the finalized block, if one was made.
    pub fn produce_block(&self) -> Result<Option<Arc<Finalized>>, cairn_store::Error> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.mempool.is_empty() && inner.last_block.elapsed() < self.settings.idle_interval {
            return Ok(None);
        }
        let ledger = inner.chain.ledger();
        let ts = now_ms().max(ledger.globals().last_timestamp_ms);
        let txs = inner
            .mempool
            .take_block(ledger, self.settings.max_block_txs);
        let hashes: Vec<Hash> = txs.iter().map(SignedTx::hash).collect();
        let mut block = ledger.build_block(ts, txs);
        block.header.proposer = self.proposer;
        let outcome = inner.chain.commit(&block)?;
        inner.mempool.prune(inner.chain.ledger(), &hashes);
        inner.last_block = std::time::Instant::now();
        drop(guard);
        self.metrics.blocks.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .finalized_txs
            .fetch_add(hashes.len() as u64, Ordering::Relaxed);
        let fin = Arc::new(Finalized {
            height: outcome.height,
            block_hash: outcome.block_hash,
            state_root: outcome.state_root,
            txs: hashes,
            events: outcome.events,
        });
        // No subscribers is fine.
        let _ = self.events.send(fin.clone());
        Ok(Some(fin))
    }

    /// A committed block.
    pub fn block(&self, height: u64) -> Result<Option<Block>, cairn_store::Error> {
        self.lock().chain.block(height)
    }

    /// How often the producer wakes.
    pub fn block_interval(&self) -> Duration {
        self.settings.block_interval
    }
}
