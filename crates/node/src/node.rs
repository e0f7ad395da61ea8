//! The node: the store, the mempool, what a proposer puts in a block, the execution of
//! finalized blocks, and what the API reads.
//!
//! Consensus (see [`crate::consensus`]) orders blocks; this type executes them once final
//! ([`Node::execute_finalized`], one durable redb transaction per block, see `cairn-store`)
//! and tells subscribers ([`Node::subscribe`]).

use crate::mempool::{AdmitError, Limits, Mempool};
use cairn_ledger::{Event, Ledger};
use cairn_primitives::{Address, Block, Genesis, Hash, SignedTx};
use cairn_store::Chain;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Block production settings.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// How long a leader waits for transactions before proposing an empty block (time moves
    /// the ledger too: epochs, leases). Must be below consensus's leader timeout.
    pub idle_interval: Duration,
    /// Most transactions per block.
    pub max_block_txs: usize,
    /// Most encoded bytes per block (also the largest block a peer may send).
    pub max_block_bytes: usize,
    /// Mempool limits.
    pub mempool: Limits,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            idle_interval: Duration::from_secs(1),
            max_block_txs: 20_000,
            max_block_bytes: 8 << 20,
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
    /// Its transactions, in order.
    pub txs: Vec<FinalTx>,
    /// Its events, with the index of the transaction that caused each (None: the block).
    pub events: Vec<(Option<u32>, Event)>,
}

/// One transaction of a finalized block.
#[derive(Debug, Clone)]
pub struct FinalTx {
    /// Its hash.
    pub hash: Hash,
    /// Who signed it.
    pub sender: Address,
    /// The error code when the ledger rejected it (it still took its place in the block).
    pub error: Option<&'static str>,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
}

/// Why a finalized block could not be executed. Consensus stops delivering blocks after one:
/// executing past it would diverge from the other replicas.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The store or the ledger refused the block.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// A block at a height already executed differs from the one executed there.
    #[error("finalized block {height} is {got}, but {stored} was executed at that height")]
    Conflict {
        /// The height.
        height: u64,
        /// The executed block.
        stored: Hash,
        /// The delivered block.
        got: Hash,
    },
    /// A block arrived ahead of its parent.
    #[error("finalized block {got} arrived while {expected} was next")]
    Gap {
        /// The next height to execute.
        expected: u64,
        /// The height that arrived.
        got: u64,
    },
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
    halted: Option<String>,
    /// (timestamp, transactions) of the last [`RECENT_BLOCKS`] blocks executed.
    recent: VecDeque<(u64, u64)>,
}

/// Blocks the transaction rate in `/v1/stats` is measured over.
const RECENT_BLOCKS: usize = 64;

/// A running node's state.
pub struct Node {
    inner: Mutex<Inner>,
    chain_id: String,
    logs: crate::logs::LogStore,
    settings: ProducerSettings,
    proposer: Address,
    events: broadcast::Sender<Arc<Finalized>>,
    closing: tokio::sync::watch::Sender<bool>,
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
        let (events, _) = broadcast::channel(1024);
        Ok(Arc::new(Self {
            chain_id: chain.ledger().params().chain_id.clone(),
            logs: crate::logs::LogStore::new(&data_dir.join("logs")),
            inner: Mutex::new(Inner {
                mempool: Mempool::new(settings.mempool),
                chain,
                halted: None,
                recent: VecDeque::new(),
            }),
            closing: tokio::sync::watch::channel(false).0,
            settings,
            proposer,
            events,
            metrics: Metrics::default(),
        }))
    }

    /// The chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// The lease logs workers upload to this node.
    pub fn logs(&self) -> &crate::logs::LogStore {
        &self.logs
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

    /// Submits transactions; one verdict each. Signatures are checked before the node's lock
    /// is taken, so admission does not wait on a block being executed for them.
    pub fn submit(&self, txs: Vec<SignedTx>) -> Vec<Result<Hash, AdmitError>> {
        let verified = Ledger::verify_txs(&txs, &self.chain_id);
        let hashes: Vec<Hash> = txs.iter().map(SignedTx::hash).collect();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let ts = now_ms().max(inner.chain.ledger().globals().last_timestamp_ms);
        // Final transactions are duplicates too: the store's index knows them. A store that
        // cannot be read refuses nothing here; the ledger's nonce check still stops a replay.
        let known = inner.chain.landed(&hashes).unwrap_or_default();
        let out =
            inner
                .mempool
                .admit_verified(&mut inner.chain, txs, verified.verdicts(), ts, |h| {
                    known.contains(h)
                });
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

    /// Finalized transactions per second over the last blocks (by their timestamps).
    pub fn recent_tps(&self) -> f64 {
        let guard = self.lock();
        let r = &guard.recent;
        let (Some(first), Some(last)) = (r.front(), r.back()) else {
            return 0.0;
        };
        let span_ms = last.0.saturating_sub(first.0);
        if span_ms == 0 {
            return 0.0;
        }
        let txs: u64 = r.iter().skip(1).map(|x| x.1).sum();
        txs as f64 * 1000.0 / span_ms as f64
    }

    /// Tells long-lived API streams to end (the server is stopping).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Node::close_streams`] was called.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Finalized blocks, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Finalized>> {
        self.events.subscribe()
    }

    /// Height of the last executed (finalized and committed) block.
    pub fn height(&self) -> u64 {
        self.lock().chain.height()
    }

    /// The state root recorded after block `height`, if it has been executed.
    pub fn root_at(&self, height: u64) -> Option<Hash> {
        let guard = self.lock();
        if height > guard.chain.height() {
            return None;
        }
        guard
            .chain
            .root_at(height)
            .ok()
            .flatten()
            .map(|(root, _)| root)
    }

    /// The proposer's address, put in the blocks this node proposes.
    pub fn proposer(&self) -> Address {
        self.proposer
    }

    /// Production settings.
    pub fn settings(&self) -> &ProducerSettings {
        &self.settings
    }

    /// Transactions for a block that follows blocks ordered but not executed yet, whose next
    /// nonce per account is `after` (see [`Mempool::take_block`]).
    pub fn take_block(&self, after: &HashMap<Address, u64>) -> Vec<SignedTx> {
        let guard = self.lock();
        guard.mempool.take_block(
            guard.chain.ledger(),
            self.settings.max_block_txs,
            self.settings.max_block_bytes.saturating_sub(1024),
            after,
        )
    }

    /// Executes a finalized block and commits it durably; a block at a height already
    /// executed (consensus redelivers after a restart) is checked against what was executed
    /// and skipped. Returns what the block did when it was executed now.
    pub fn execute_finalized(&self, block: &Block) -> Result<Option<Arc<Finalized>>, ExecError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let height = block.header.height;
        let next = inner.chain.height() + 1;
        if height < next {
            let stored = if height == 0 {
                Hash::default()
            } else {
                inner
                    .chain
                    .root_at(height)?
                    .map(|(_, hash)| hash)
                    .unwrap_or_default()
            };
            let got = if height == 0 {
                Hash::default()
            } else {
                block.hash()
            };
            if stored != got {
                return Err(ExecError::Conflict {
                    height,
                    stored,
                    got,
                });
            }
            return Ok(None);
        }
        drop(guard);
        // Signatures are checked outside the lock; the commit then holds it.
        let verified = Ledger::verify_txs(&block.txs, &self.chain_id);
        let hashes: Vec<Hash> = block.txs.iter().map(SignedTx::hash).collect();
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.chain.height() + 1 != height {
            return Err(ExecError::Gap {
                expected: inner.chain.height() + 1,
                got: height,
            });
        }
        let outcome = inner.chain.commit_verified(block, verified)?;
        inner.mempool.prune(inner.chain.ledger(), &hashes);
        if inner.recent.len() == RECENT_BLOCKS {
            inner.recent.pop_front();
        }
        inner
            .recent
            .push_back((block.header.timestamp_ms, hashes.len() as u64));
        drop(guard);
        self.metrics.blocks.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .finalized_txs
            .fetch_add(hashes.len() as u64, Ordering::Relaxed);
        let txs = block
            .txs
            .iter()
            .zip(&outcome.results)
            .map(|(t, r)| FinalTx {
                hash: r.hash,
                sender: t.tx.sender_address(),
                error: r.error.as_ref().map(cairn_ledger::TxError::code),
            })
            .collect();
        let fin = Arc::new(Finalized {
            height: outcome.height,
            block_hash: outcome.block_hash,
            state_root: outcome.state_root,
            txs,
            events: outcome.events,
        });
        // No subscribers is fine.
        let _ = self.events.send(fin.clone());
        Ok(Some(fin))
    }

    /// Marks execution stopped, with why (see [`crate::consensus::app::start_executor`]).
    pub fn set_halted(&self, why: String) {
        self.lock().halted = Some(why);
    }

    /// Why execution stopped, if it did.
    pub fn halted(&self) -> Option<String> {
        self.lock().halted.clone()
    }

    /// A committed block.
    pub fn block(&self, height: u64) -> Result<Option<Block>, cairn_store::Error> {
        self.lock().chain.block(height)
    }
}
