//! What consensus asks of the application: build a block, check a block, and execute the
//! finalized ones in order.

use super::block::{ChainBlock, digest_of, hash_of};
use crate::node::Node;
use cairn_primitives::{Address, Block, Hash};
use commonware_actor::Feedback;
use commonware_consensus::marshal::{Update, ancestry::Ancestry};
use commonware_consensus::simplex::types::Context;
use commonware_consensus::{Application, Heightable};
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{Digested, Digestible as _, ed25519};
use commonware_runtime::{Clock, Spawner};
use commonware_utils::Acknowledgement as _;
use commonware_utils::acknowledgement::Exact;
use futures::StreamExt;
use futures::channel::mpsc;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// The signing scheme of votes and certificates: ed25519, the validators' identity keys.
pub type Scheme = commonware_consensus::simplex::scheme::ed25519::Scheme;

/// How far ahead of a validator's clock a block's timestamp may be before it waits to vote.
pub const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(5);

/// How often waiting steps look again.
const POLL: Duration = Duration::from_millis(5);

/// Milliseconds since the Unix epoch of a runtime's clock reading.
fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The application: proposes from the mempool and checks proposals against the ledger.
pub struct App<E> {
    node: Arc<Node>,
    _runtime: PhantomData<fn() -> E>,
}

impl<E> Clone for App<E> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            _runtime: PhantomData,
        }
    }
}

impl<E> App<E> {
    /// An application over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            _runtime: PhantomData,
        }
    }
}

/// Why a proposal is refused. Each is permanent for the block: it never becomes valid.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The proposer named in the header is not the view's leader.
    #[error("block names proposer {got}, but the leader is {leader}")]
    Proposer {
        /// The header's proposer.
        got: Address,
        /// The view's leader.
        leader: Address,
    },
    /// Earlier than the parent.
    #[error("timestamp {got} is before the parent's {parent}")]
    Time {
        /// Parent timestamp.
        parent: u64,
        /// Block timestamp.
        got: u64,
    },
    /// The transaction root does not match the transactions.
    #[error("transaction root does not match the transactions")]
    TxRoot,
    /// The anchored height is not at or below the parent.
    #[error("anchors the state at height {state_height}, above its parent {parent}")]
    Anchor {
        /// Anchored height.
        state_height: u64,
        /// Parent height.
        parent: u64,
    },
    /// The anchored root is not the root this replica recorded at that height.
    #[error("anchors root {got} at height {height}, but {expected} is recorded there")]
    Root {
        /// Anchored height.
        height: u64,
        /// Recorded root.
        expected: Hash,
        /// Anchored root.
        got: Hash,
    },
}

/// The checks on a proposal that need no state: who proposed it, its time against its
/// parent's, its transaction root and where it anchors state.
pub fn check_shape(block: &Block, parent: &Block, leader: Address) -> Result<(), Invalid> {
    let h = &block.header;
    if h.proposer != leader {
        return Err(Invalid::Proposer {
            got: h.proposer,
            leader,
        });
    }
    if h.timestamp_ms < parent.header.timestamp_ms {
        return Err(Invalid::Time {
            parent: parent.header.timestamp_ms,
            got: h.timestamp_ms,
        });
    }
    if h.state_height > parent.header.height {
        return Err(Invalid::Anchor {
            state_height: h.state_height,
            parent: parent.header.height,
        });
    }
    if Block::tx_root_of(&block.txs) != h.tx_root {
        return Err(Invalid::TxRoot);
    }
    Ok(())
}

impl<E: Clock + Spawner> Application<E> for App<E> {
    type SigningScheme = Scheme;
    type Context = Context<Digest, ed25519::PublicKey>;
    type Block = ChainBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (runtime, _cx): (E, Self::Context),
        mut ancestry: impl Ancestry<ChainBlock>,
        _input: (),
    ) -> Option<Digested<ChainBlock>> {
        let parent = ancestry.next().await?;
        let parent_block = parent.inner().0.clone();
        let parent_hash = hash_of(&parent.digest());
        // What blocks ordered but not executed yet will do to nonces: take nothing twice.
        let executed = self.node.height();
        let mut after: HashMap<Address, u64> = HashMap::new();
        let mut cursor = Some(parent);
        while let Some(b) = cursor.take() {
            if b.height().get() <= executed {
                break;
            }
            for tx in &b.inner().0.txs {
                let next = after.entry(tx.tx.sender_address()).or_insert(0);
                *next = (*next).max(tx.tx.nonce.saturating_add(1));
            }
            cursor = ancestry.next().await;
        }
        // Wait for transactions, up to the idle interval.
        let idle_until = runtime.current() + self.node.settings().idle_interval;
        let txs = loop {
            let txs = self.node.take_block(&after);
            if !txs.is_empty() || runtime.current() >= idle_until {
                break txs;
            }
            runtime.sleep(POLL).await;
        };
        let state_height = self.node.height().min(parent_block.header.height);
        let state_root = self.node.root_at(state_height)?;
        let block = Block::build(
            parent_block.header.height + 1,
            parent_hash,
            state_height,
            state_root,
            unix_ms(runtime.current()).max(parent_block.header.timestamp_ms),
            self.node.proposer(),
            txs,
        );
        let digest = digest_of(&block.hash());
        Some(Digested::precomputed(ChainBlock(block), digest))
    }

    async fn verify(
        &mut self,
        (runtime, cx): (E, Self::Context),
        mut ancestry: impl Ancestry<ChainBlock>,
    ) -> bool {
        let Some(block) = ancestry.next().await else {
            return false;
        };
        let Some(parent) = ancestry.next().await else {
            return false;
        };
        let (block, parent) = (&block.inner().0, &parent.inner().0);
        if let Err(e) = check_shape(block, parent, Address::of(&cx.leader)) {
            tracing::warn!(height = block.header.height, "refusing proposal: {e}");
            return false;
        }
        // A block from the future becomes acceptable as time passes: wait, do not refuse.
        let drift_ms = MAX_CLOCK_DRIFT.as_millis() as u64;
        while block.header.timestamp_ms > unix_ms(runtime.current()).saturating_add(drift_ms) {
            runtime.sleep(POLL).await;
        }
        // The anchor is at or below the finalized parent chain: wait until it is executed here.
        let h = block.header.state_height;
        let expected = loop {
            if let Some(root) = self.node.root_at(h) {
                break root;
            }
            runtime.sleep(POLL).await;
        };
        if expected != block.header.state_root {
            let e = Invalid::Root {
                height: h,
                expected,
                got: block.header.state_root,
            };
            tracing::warn!(height = block.header.height, "refusing proposal: {e}");
            return false;
        }
        true
    }
}

/// Receives finalized blocks from marshal, in height order, and hands them to the executor
/// task; marshal counts a block delivered only once the executor acknowledges its commit.
#[derive(Clone)]
pub struct Finalizer {
    tx: mpsc::UnboundedSender<(Digested<ChainBlock>, Exact)>,
}

impl commonware_consensus::Reporter for Finalizer {
    type Activity = Update<ChainBlock>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        if let Update::Block(block, ack) = activity {
            // A closed executor means the node is stopping: marshal sees the ack dropped.
            let _ = self.tx.unbounded_send((block, ack));
        }
        Feedback::Ok
    }
}

/// Starts the task that executes finalized blocks in order; returns the reporter marshal
/// delivers to. A block that cannot be executed stops execution (and so acknowledgements):
/// going on would diverge from the other replicas, and stopping keeps every acknowledged
/// block durable.
pub fn start_executor<E: Spawner>(
    runtime: E,
    node: Arc<Node>,
) -> (Finalizer, commonware_runtime::Handle<()>) {
    let (tx, mut rx) = mpsc::unbounded::<(Digested<ChainBlock>, Exact)>();
    let handle = runtime.shared(true).spawn(move |_| async move {
        while let Some((block, ack)) = rx.next().await {
            match node.execute_finalized(&block.inner().0) {
                Ok(_) => ack.acknowledge(),
                Err(e) => {
                    tracing::error!("cannot execute finalized block: {e}; execution stops");
                    node.set_halted(e.to_string());
                    return;
                }
            }
        }
    });
    (Finalizer { tx }, handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_ledger::testing;
    use cairn_primitives::{Amount, Keypair, TxBody};

    #[test]
    fn each_permanent_fault_is_refused_and_named() {
        let leader = Keypair::from_seed([1; 32]).address();
        let other = Keypair::from_seed([2; 32]).address();
        let k = Keypair::from_seed([3; 32]);
        let tx = testing::tx(
            &k,
            0,
            TxBody::Transfer {
                to: leader,
                amount: Amount::from_base(1),
            },
            "cairn-test",
        );
        let parent = Block::build(4, Hash([1; 32]), 3, Hash([2; 32]), 1_000, leader, vec![]);
        let good = || {
            Block::build(
                5,
                parent.hash(),
                4,
                Hash([3; 32]),
                1_000,
                leader,
                vec![tx.clone()],
            )
        };
        assert_eq!(check_shape(&good(), &parent, leader), Ok(()));

        assert!(matches!(
            check_shape(&good(), &parent, other),
            Err(Invalid::Proposer { .. })
        ));
        let mut b = good();
        b.header.timestamp_ms = 999;
        assert!(matches!(
            check_shape(&b, &parent, leader),
            Err(Invalid::Time { .. })
        ));
        let mut b = good();
        b.header.state_height = 5;
        assert!(matches!(
            check_shape(&b, &parent, leader),
            Err(Invalid::Anchor { .. })
        ));
        let mut b = good();
        b.txs.clear();
        assert_eq!(check_shape(&b, &parent, leader), Err(Invalid::TxRoot));
    }
}
